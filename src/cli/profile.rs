//! `poisongate profile`.

use poisongate::baseline::{self, ProfileOptions};
use poisongate::integrity;
use poisongate::output::write_atomic;
use poisongate::report::Verdict;
use sha2::{Digest, Sha256};

use super::ProfileArgs;

pub fn run(args: &ProfileArgs) -> poisongate::Result<Verdict> {
    if args.input.stdout_json()? {
        return Err(poisongate::Error::Usage(
            "`profile` has no JSON stdout; the baseline is the output".into(),
        ));
    }
    let sources = args.input.sources();
    let files = sources.resolve(&args.input.data, args.input.input_format()?)?;
    let opts = ProfileOptions {
        label: args.label.clone(),
        id: args.id.clone(),
        ignore: args.ignore.clone(),
        seed: args.seed,
        predictions: args.prediction.clone(),
        scores: args.score.clone(),
        model_rows: usize::try_from(args.model_rows).ok(),
    };
    // One streamed read: the inputs are hashed as they are decoded, and the integrity
    // requirement is judged on what was read, before anything is written.
    let baseline = baseline::profile_files(&files, &opts)?;
    if let Some(key) = args.sse.requirement() {
        let stored: Vec<integrity::Stored<'_>> = baseline
            .inputs
            .iter()
            .map(integrity::Stored::from)
            .collect();
        let refused = integrity::sse_kms_findings(key, &stored);
        if !refused.is_empty() {
            // Pinning trusted data that fails its integrity requirement would launder it:
            // nothing is written and the run is blocked.
            let mut out = String::new();
            for f in &refused {
                out.push_str(&format!("deny {}: {}\n", f.code, f.message));
            }
            out.push_str(&format!(
                "poisongate profile: BLOCKED (exit 1): {} input(s) fail --require-sse-kms; no baseline written\n",
                refused.len()
            ));
            let _ = super::stdout(&out);
            return Ok(Verdict::Blocked);
        }
    }
    let bytes = baseline::to_json(&baseline)?;
    let digest = hex::encode(Sha256::digest(&bytes));
    let name = args.output.file_name().map_or_else(
        || "baseline.json".to_owned(),
        |n| n.to_string_lossy().into_owned(),
    );
    let mut sidecar = args.output.clone().into_os_string();
    sidecar.push(".sha256");
    write_atomic(&args.output, &bytes)?;
    write_atomic(
        std::path::Path::new(&sidecar),
        format!("{digest}  {name}\n").as_bytes(),
    )?;
    super::stdout(&format!(
        "pinned {} from {} input(s): {} rows, {} columns{}\nsha256 {digest}\n",
        args.output.display(),
        baseline.inputs.len(),
        baseline.rows,
        baseline.columns.len(),
        baseline
            .label
            .as_ref()
            .map_or(String::new(), |l| format!(", label `{l}`")),
    ))?;
    Ok(Verdict::Pass)
}
