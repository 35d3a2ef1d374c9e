//! The `poisongate` binary: parse, run, map the outcome to an exit code. Nothing else.

mod cli;

use std::io::Write;
use std::process::ExitCode;
use std::sync::Mutex;

use clap::Parser;
use poisongate::report::Verdict;

/// The message of the last panic, printed once if it escapes to `main`.
static PANIC_MESSAGE: Mutex<Option<String>> = Mutex::new(None);

fn main() -> ExitCode {
    // Panics are recorded, not printed: decoders that panic on hostile input are caught and
    // reported as input errors, and anything else is reported once below. Either way exit 2.
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".to_owned());
        let at = info
            .location()
            .map_or(String::new(), |l| format!(" at {}:{}", l.file(), l.line()));
        if let Ok(mut slot) = PANIC_MESSAGE.lock() {
            *slot = Some(format!("{msg}{at}"));
        }
    }));
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // clap: 0 for --help/--version, 2 for usage errors, matching our contract.
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    let outcome = std::panic::catch_unwind(|| cli::run(cli));
    let verdict = match outcome {
        Ok(Ok(verdict)) => verdict,
        Ok(Err(e)) => {
            report_error(&e.to_string(), e.hint());
            Verdict::Error
        }
        Err(_) => {
            let msg = PANIC_MESSAGE
                .lock()
                .ok()
                .and_then(|m| m.clone())
                .unwrap_or_default();
            report_error(&format!("internal error: {msg}"), None);
            Verdict::Error
        }
    };
    ExitCode::from(verdict.exit_code())
}

/// The one place errors are printed: one line, plus an optional hint line.
fn report_error(message: &str, hint: Option<&str>) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "error: {message}");
    if let Some(hint) = hint {
        let _ = writeln!(err, "hint: {hint}");
    }
}
