//! `poisongate policy --init | --dump`.

use poisongate::policy::{self, Policy};
use poisongate::report::Verdict;

use super::PolicyArgs;

pub fn run(args: &PolicyArgs) -> poisongate::Result<Verdict> {
    if args.dump {
        let loaded = Policy::load(args.policy.as_deref())?;
        let text = toml::to_string(&loaded.policy)
            .map_err(|e| poisongate::Error::Internal(format!("policy dump: {e}")))?;
        super::stdout(&format!(
            "# effective policy, sha256 {}\n{text}",
            loaded.sha256
        ))?;
    } else if args.init {
        super::stdout(&policy::template()?)?;
    } else {
        return Err(poisongate::Error::Usage(
            "`policy` needs --init or --dump".into(),
        ));
    }
    Ok(Verdict::Pass)
}
