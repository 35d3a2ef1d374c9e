//! A hidden switch that makes one named point of the code panic, so that tests can prove what
//! the process does when a worker thread fails: exit 2, and no output written. It is set with
//! the environment variable `POISONGATE_FAULT=<point>`; unset, it costs one read of the
//! environment per process. It is not documented for users and changes nothing else.

use std::sync::OnceLock;

static FAULT: OnceLock<Option<String>> = OnceLock::new();

/// Panics when `POISONGATE_FAULT` names this point.
pub fn point(name: &str) {
    let set = FAULT.get_or_init(|| std::env::var("POISONGATE_FAULT").ok());
    if set.as_deref() == Some(name) {
        panic!("injected fault at {name}");
    }
}
