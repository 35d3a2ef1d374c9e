//! What the fuzz binary runs: the target of [`poisongate::fuzzing::TARGETS`] that the
//! environment variable `FUZZ_TARGET` names, on each input.
//!
//! A panic that a parser catches and turns into an input error (the decoders' own) is the
//! gate working as designed, so the abort-on-any-panic hook of `libfuzzer-sys` is replaced by
//! a silent one, and only a panic that escapes the entry point aborts (a crash for libFuzzer
//! to keep). Running out of time or memory is caught by libFuzzer's own `-timeout` and
//! `-rss_limit_mb`.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::OnceLock;

use poisongate::fuzzing::{TARGETS, Target};

/// The target `FUZZ_TARGET` names; exits with a message when it names none.
fn target() -> &'static (&'static str, Target) {
    static TARGET: OnceLock<&'static (&'static str, Target)> = OnceLock::new();
    TARGET.get_or_init(|| {
        let name = std::env::var("FUZZ_TARGET").unwrap_or_default();
        TARGETS.iter().find(|(n, _)| *n == name).unwrap_or_else(|| {
            let names: Vec<&str> = TARGETS.iter().map(|(n, _)| *n).collect();
            eprintln!(
                "set FUZZ_TARGET to one of: {} (got `{name}`)",
                names.join(", ")
            );
            std::process::exit(2);
        })
    })
}

/// Picks the target and builds what it reads besides its input (the bundled baseline takes
/// seconds to profile), before libFuzzer starts timing inputs.
pub fn prepare() {
    let (name, _) = target();
    poisongate::fuzzing::prepare(name);
}

/// Runs the target on `data`; aborts when its entry point panics.
pub fn run(data: &[u8]) {
    let (name, f) = target();
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| std::panic::set_hook(Box::new(|_| {})));
    if catch_unwind(AssertUnwindSafe(|| f(data))).is_err() {
        eprintln!("fuzz target `{name}`: a panic escaped the entry point");
        std::process::abort();
    }
}
