//! `poisongate profile`.

use poisongate::baseline::{self, ProfileOptions};
use poisongate::integrity;
use poisongate::output::write_atomic;
use poisongate::report::Verdict;
use sha2::{Digest, Sha256};

use super::ProfileArgs;

/// What a profile run did, for its signed statement.
struct Outcome {
    verdict: Verdict,
    inputs: Vec<poisongate::source::InputMeta>,
    rows: u64,
    /// The baseline written, and its SHA-256.
    baseline: Option<(String, String)>,
}

pub fn run(args: &ProfileArgs) -> poisongate::Result<Verdict> {
    if args.manifest.is_some() && args.sign.attest.is_some() {
        return Err(poisongate::Error::Usage(
            "--attest signs a baseline; a --manifest run writes a profile part: sign the --summaries run that merges the parts".into(),
        ));
    }
    let signer = args.sign.load()?;
    let result = profile(args);
    if let Some((key, path)) = signer {
        // Written on an error too (FAILED, no subjects), so a stale passing statement is never
        // left behind.
        let statement = match &result {
            Ok(o) => poisongate::attest::profile_statement(
                &o.inputs,
                o.rows,
                o.baseline.as_ref().map(|(p, d)| (p.as_str(), d.as_str())),
                o.verdict,
            ),
            Err(_) => poisongate::attest::profile_statement(&[], 0, None, Verdict::Error),
        };
        let signed = poisongate::attest::sign(&statement, &key)?;
        write_atomic(path, &signed)?;
    }
    result.map(|o| o.verdict)
}

fn profile(args: &ProfileArgs) -> poisongate::Result<Outcome> {
    if args.input.stdout_json()? {
        return Err(poisongate::Error::Usage(
            "`profile` has no JSON stdout; the baseline is the output".into(),
        ));
    }
    let sources = args.input.sources();
    if (args.manifest.is_some() || !args.summaries.is_empty()) && !args.input.data.is_empty() {
        return Err(poisongate::Error::Usage(
            "DATA comes from the manifest with --manifest, and from the parts with --summaries; give no DATA"
                .into(),
        ));
    }
    let opts = ProfileOptions {
        label: args.label.clone(),
        id: args.id.clone(),
        ignore: args.ignore.clone(),
        seed: args.seed,
        predictions: args.prediction.clone(),
        scores: args.score.clone(),
        model_rows: usize::try_from(args.model_rows).ok(),
    };
    if let Some(manifest) = &args.manifest {
        let verdict = shard_part(args, &sources, manifest, &opts)?;
        return Ok(Outcome {
            verdict,
            inputs: Vec::new(),
            rows: 0,
            baseline: None,
        });
    }
    // One streamed read: the inputs are hashed as they are decoded, and the integrity
    // requirement is judged on what was read, before anything is written.
    let baseline = if args.summaries.is_empty() {
        let files = sources.resolve(&args.input.data, args.input.input_format()?)?;
        baseline::profile_files(&files, &opts)?
    } else {
        let paths = super::shard::part_paths(&args.summaries)?;
        let mut parts = Vec::with_capacity(paths.len());
        for p in &paths {
            let bytes = std::fs::read(p)
                .map_err(|e| poisongate::Error::summary(p, poisongate::source::io_cause(&e)))?;
            parts.push(baseline::ProfilePart::from_bytes(p, &bytes)?);
        }
        let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        baseline::profile_parts(parts, &names, &opts)?
    };
    if refuse_unencrypted(args, &baseline.inputs)? {
        return Ok(Outcome {
            verdict: Verdict::Blocked,
            inputs: baseline.inputs,
            rows: baseline.rows,
            baseline: None,
        });
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
    Ok(Outcome {
        verdict: Verdict::Pass,
        rows: baseline.rows,
        inputs: baseline.inputs,
        baseline: Some((args.output.display().to_string(), digest)),
    })
}

/// With `--require-sse-kms`, prints the inputs that fail it and returns true (the run is
/// blocked and nothing is written): pinning trusted data that fails its integrity requirement
/// would launder it.
fn refuse_unencrypted(
    args: &ProfileArgs,
    inputs: &[poisongate::source::InputMeta],
) -> poisongate::Result<bool> {
    let Some(key) = args.sse.requirement() else {
        return Ok(false);
    };
    let stored: Vec<integrity::Stored<'_>> = inputs.iter().map(integrity::Stored::from).collect();
    let refused = integrity::sse_kms_findings(key, &stored);
    if refused.is_empty() {
        return Ok(false);
    }
    let mut out = String::new();
    for f in &refused {
        out.push_str(&format!("deny {}: {}\n", f.code, f.message));
    }
    out.push_str(&format!(
        "poisongate profile: BLOCKED (exit 1): {} input(s) fail --require-sse-kms; nothing written\n",
        refused.len()
    ));
    let _ = super::stdout(&out);
    Ok(true)
}

/// `profile --manifest M --shard I/N -o PART`: folds the shard's units, each checked
/// against the SHA-256 the manifest pins, into one profile part.
fn shard_part(
    args: &ProfileArgs,
    sources: &poisongate::source::Sources,
    manifest: &str,
    opts: &ProfileOptions,
) -> poisongate::Result<Verdict> {
    use poisongate::baseline::part::{PROFILE_PART_FORMAT, ProfilePart, ProfilePartHeader};
    let manifest = super::shard::load_manifest(sources, manifest)?;
    let spec = args.shard.as_deref().unwrap_or_default();
    let units = manifest.shard(spec)?;
    let places = manifest.input_places();
    let mut state: Option<poisongate::baseline::accumulate::ProfileState> = None;
    let mut inputs = Vec::with_capacity(units.len());
    for unit in &units {
        let file = unit.input(sources)?;
        let (unit_state, mut metas) =
            baseline::fold_files(std::slice::from_ref(&file), &[places[unit.index]], opts)?;
        let Some(meta) = metas.pop() else {
            return Err(poisongate::Error::input(
                std::path::Path::new(&unit.path),
                "no rows",
            ));
        };
        unit.check_read(&meta)?;
        inputs.push((unit.index, meta, unit.range));
        match &mut state {
            Some(s) => s.merge(unit_state)?,
            None => state = Some(unit_state),
        }
    }
    let metas: Vec<poisongate::source::InputMeta> = inputs.iter().map(|i| i.1.clone()).collect();
    if refuse_unencrypted(args, &metas)? {
        return Ok(Verdict::Blocked);
    }
    // A shard with no units (more shards than units) writes a part with no state.
    let rows = state.as_ref().map_or(0, |s| s.rows);
    let part = ProfilePart {
        header: ProfilePartHeader {
            format: PROFILE_PART_FORMAT.to_owned(),
            tool: poisongate::shard::tool(),
            manifest_sha256: manifest.sha256.clone(),
            units_total: manifest.units.len(),
            units: units.iter().map(|u| u.index).collect(),
            options: opts.clone(),
            inputs,
        },
        state,
    };
    write_atomic(&args.output, &part.to_bytes()?)?;
    super::stdout(&format!(
        "poisongate profile: shard {spec}: {} units, {rows} rows -> {}\n",
        part.header.units.len(),
        args.output.display()
    ))?;
    Ok(Verdict::Pass)
}
