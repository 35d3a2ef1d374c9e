//! `poisongate verify`.

use std::fmt::Write;

use poisongate::integrity::{self, SignatureCheck};
use poisongate::report::Verdict;

use super::VerifyArgs;

pub fn run(args: &VerifyArgs) -> poisongate::Result<Verdict> {
    let checked = match (&args.sha256_file, &args.signature, &args.public_key) {
        (Some(sums), _, _) => integrity::check_sha256sum(sums, &args.files)?,
        (None, Some(signature), Some(public_key)) => {
            let [file] = args.files.as_slice() else {
                return Err(poisongate::Error::Usage(format!(
                    "--signature verifies exactly one FILE, got {}",
                    args.files.len()
                )));
            };
            let bytes = integrity::read(file)?;
            let check = SignatureCheck {
                signature: signature.clone(),
                public_key: public_key.clone(),
            };
            let ok = check.verify(&bytes)?;
            vec![integrity::Checked {
                path: file.clone(),
                sha256: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes)),
                expected: None,
                ok,
            }]
        }
        _ => {
            return Err(poisongate::Error::Usage(
                "give --sha256-file F, or --signature SIG with --public-key PEM".into(),
            ));
        }
    };
    let mut out = String::new();
    for c in &checked {
        let what = match (&c.expected, c.ok) {
            (Some(_), true) => "OK".to_owned(),
            (Some(e), false) => format!("FAILED: sha256 {} differs from the pinned {e}", c.sha256),
            (None, true) => format!("OK: signature verified (sha256 {})", c.sha256),
            (None, false) => format!(
                "FAILED: the signature does not verify with this public key (sha256 {})",
                c.sha256
            ),
        };
        let _ = writeln!(out, "{}: {what}", c.path.display());
    }
    let failed = checked.iter().filter(|c| !c.ok).count();
    let _ = writeln!(
        out,
        "poisongate verify: {} ({} of {} file(s) failed)",
        if failed == 0 {
            "PASS (exit 0)"
        } else {
            "BLOCKED (exit 1)"
        },
        failed,
        checked.len()
    );
    super::stdout(&out);
    Ok(if failed == 0 {
        Verdict::Pass
    } else {
        Verdict::Blocked
    })
}
