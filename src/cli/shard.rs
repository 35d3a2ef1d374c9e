//! `poisongate plan`, `summarize` and `merge`: a sharded check (see `poisongate::shard`).

use std::path::Path;

use poisongate::baseline;
use poisongate::check;
use poisongate::output::write_atomic;
use poisongate::policy::Policy;
use poisongate::report::Verdict;
use poisongate::shard::{Manifest, Part, PartHeader};
use poisongate::source::{S3Options, Sources};

use super::{MergeArgs, PlanArgs, SummarizeArgs};

pub fn plan(args: &PlanArgs) -> poisongate::Result<Verdict> {
    if args.input.stdout_json()? {
        return Err(poisongate::Error::Usage(
            "`plan` has no JSON stdout; the manifest is the output".into(),
        ));
    }
    let sources = args.input.sources();
    let files = sources.resolve(&args.input.data, args.input.input_format()?)?;
    let unit_rows = args
        .unit_rows
        .map(|r| usize::try_from(r).unwrap_or(usize::MAX));
    let manifest = poisongate::shard::plan(&files, unit_rows)?;
    let mut bytes = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| poisongate::Error::Internal(e.to_string()))?;
    bytes.push(b'\n');
    write_atomic(&args.output, &bytes)?;
    let rows: Option<u64> = manifest.units.iter().map(|u| u.rows).sum();
    super::stdout(&format!(
        "poisongate plan: {} units{}, manifest {} -> {}\n",
        manifest.units.len(),
        rows.map_or(String::new(), |r| format!(", {r} rows")),
        &manifest.sha256[..12],
        args.output.display()
    ))?;
    Ok(Verdict::Pass)
}

/// Reads and checks a manifest (a file or an s3:// object).
pub(super) fn load_manifest(sources: &Sources, arg: &str) -> poisongate::Result<Manifest> {
    let (bytes, _) = sources.read_bytes(arg, poisongate::Error::summary)?;
    Manifest::from_bytes(Path::new(arg), &bytes)
}

pub fn summarize(args: &SummarizeArgs) -> poisongate::Result<Verdict> {
    let sources = Sources::new(S3Options {
        endpoint: args.s3_endpoint.clone(),
    });
    let policy = Policy::load(args.policy.as_deref())?;
    let (bytes, _) = sources.read_bytes(&args.baseline, |p, cause| {
        poisongate::Error::baseline(p, cause)
    })?;
    let loaded = baseline::from_bytes(
        &args.baseline,
        &bytes,
        args.expect_baseline_sha256.as_deref(),
        None,
    )?;
    let manifest = load_manifest(&sources, &args.manifest)?;
    let units = manifest.shard(&args.shard)?;
    let mut summaries = Vec::with_capacity(units.len());
    for unit in units {
        let file = unit.input(&sources)?;
        let summary = check::summarize_file(&loaded.baseline, &policy.policy, &file)?;
        unit.check_read(&summary.meta)?;
        summaries.push((unit.index, summary));
    }
    let header = PartHeader {
        format: poisongate::shard::PART_FORMAT.to_owned(),
        tool: poisongate::shard::tool(),
        baseline_sha256: loaded.sha256.clone(),
        policy_sha256: policy.sha256.clone(),
        manifest_sha256: manifest.sha256.clone(),
        units_total: manifest.units.len(),
        units: summaries.iter().map(|(i, _)| *i).collect(),
    };
    let rows: u64 = summaries.iter().map(|(_, s)| s.meta.rows).sum();
    let part = Part::new(header, summaries);
    write_atomic(&args.output, &part.to_bytes()?)?;
    super::stdout(&format!(
        "poisongate summarize: shard {}: {} units, {rows} rows -> {}\n",
        args.shard,
        part.header.units.len(),
        args.output.display()
    ))?;
    Ok(Verdict::Pass)
}

/// Reads one part file.
pub(super) fn read_part(path: &Path) -> poisongate::Result<Part> {
    let bytes = std::fs::read(path)
        .map_err(|e| poisongate::Error::summary(path, poisongate::source::io_cause(&e)))?;
    Part::from_bytes(path, &bytes)
}

/// The part files named: a file as it is, a directory as its regular files in name order
/// (hidden and `_`-prefixed names skipped, as for data directories). A directory lets a
/// step with no shell (a `FROM scratch` image in an Argo fan-in) merge every part it was
/// handed without a glob.
pub(super) fn part_paths(
    args: &[std::path::PathBuf],
) -> poisongate::Result<Vec<std::path::PathBuf>> {
    let mut out = Vec::new();
    for arg in args {
        if !arg.is_dir() {
            out.push(arg.clone());
            continue;
        }
        let unreadable =
            |e: std::io::Error| poisongate::Error::summary(arg, poisongate::source::io_cause(&e));
        let mut found = Vec::new();
        for entry in std::fs::read_dir(arg).map_err(unreadable)? {
            let entry = entry.map_err(unreadable)?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || name.starts_with('_') {
                continue;
            }
            if entry.path().is_file() {
                found.push(entry.path());
            }
        }
        if found.is_empty() {
            return Err(poisongate::Error::summary(
                arg,
                "the directory holds no parts",
            ));
        }
        found.sort();
        out.extend(found);
    }
    Ok(out)
}

pub fn merge(args: &MergeArgs) -> poisongate::Result<Verdict> {
    let paths = part_paths(&args.parts)?;
    let parts = paths
        .iter()
        .map(|p| read_part(p))
        .collect::<poisongate::Result<Vec<_>>>()?;
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    let merged = Part::merge(parts, &names)?;
    write_atomic(&args.output, &merged.to_bytes()?)?;
    super::stdout(&format!(
        "poisongate merge: {} parts, {} of {} units -> {}\n",
        paths.len(),
        merged.header.units.len(),
        merged.header.units_total,
        args.output.display()
    ))?;
    Ok(Verdict::Pass)
}
