//! `poisongate explain CODE`.

use std::fmt::Write as _;

use poisongate::codes::{all, lookup};
use poisongate::report::Verdict;

use super::ExplainArgs;

pub fn run(args: &ExplainArgs) -> poisongate::Result<Verdict> {
    let mut s = String::new();
    if args.list {
        for c in all() {
            let _ = writeln!(s, "{:<26} {}", c.code, c.summary);
        }
        super::stdout(&s)?;
        return Ok(Verdict::Pass);
    }
    let code = args.code.as_deref().unwrap_or_default();
    let info = lookup(code).ok_or_else(|| {
        poisongate::Error::Usage(format!(
            "unknown code `{code}`; `poisongate explain --list` lists them"
        ))
    })?;
    let _ = writeln!(
        s,
        "{}\n\n{}\n\nWhy it matters: {}\n\nWhat to do: {}",
        info.code, info.summary, info.why, info.respond
    );
    let _ = writeln!(
        s,
        "\nDefault level: {}. Thresholds: `poisongate policy --init`; waive with a [[exceptions]] entry and a reason.",
        poisongate::policy::Policy::default()
            .level(info.code)
            .name()
    );
    super::stdout(&s)?;
    Ok(Verdict::Pass)
}
