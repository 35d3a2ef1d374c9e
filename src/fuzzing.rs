//! The parsers a hostile file reaches, each behind one entry point that takes bytes, for the
//! fuzz targets in `fuzz/` and the regression tests that replay their seeds and findings.
//!
//! Every entry point goes through the same public function the command line uses (a file is
//! written to a scratch directory first where that function takes a path), and returns what
//! that function returned, reduced to "read" or "refused". The contract the fuzzers check is
//! the gate's: any bytes give a value or an error, in bounded time and memory, and never a
//! panic that escapes (the decoders' own panics are caught and turned into input errors by
//! [`crate::source`], which is what the command line sees too).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::baseline::{Baseline, ProfileOptions};
use crate::error::Result;
use crate::source::{Format, InputFile};

/// What a parser made of the bytes: read, or refused with the one-line error a user would see.
pub type Outcome = std::result::Result<(), String>;

fn outcome<T>(r: Result<T>) -> Outcome {
    r.map(|_| ()).map_err(|e| e.to_string())
}

/// A scratch directory for the files a target writes, one per process.
fn scratch() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        tempfile::Builder::new()
            .prefix("poisongate-fuzz-")
            .tempdir()
            .expect("a scratch directory for the fuzz target") // setup, not input
    })
    .path()
}

/// Writes `bytes` to `name` in the scratch directory (replacing what was there).
fn put(name: &str, bytes: &[u8]) -> PathBuf {
    let path = scratch().join(name);
    std::fs::write(&path, bytes).expect("writing the scratch file"); // setup, not input
    path
}

/// The repository's bundled testdata, where the targets find the trusted data they profile.
pub fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata")
}

/// The baseline of the bundled trusted data (label `defaulted`, ids `application_id`, seed
/// 7), profiled once per process.
///
/// # Panics
/// When the bundled data cannot be profiled (a broken checkout, not an input).
pub fn bundled_baseline() -> &'static Baseline {
    static BASELINE: OnceLock<Baseline> = OnceLock::new();
    BASELINE.get_or_init(|| {
        let file = InputFile::local(
            testdata().join("trusted/applications.parquet"),
            Format::Parquet,
        );
        let batch = crate::source::read_batch(&[file]).expect("bundled trusted data");
        let opts = ProfileOptions {
            label: Some("defaulted".into()),
            id: Some("application_id".into()),
            ignore: Vec::new(),
            seed: 7,
            predictions: Vec::new(),
            scores: Vec::new(),
            model_rows: None,
        };
        crate::baseline::profile(&batch, &opts).expect("profiling the bundled data")
    })
}

/// A data file in `format`, through both reading entry points: the whole-file read of
/// `compare` ([`crate::source::read_file`]) and the streaming first pass of `check` and
/// `profile` ([`crate::source::stream::first_pass`]).
pub fn read(format: Format, bytes: &[u8]) -> Outcome {
    let path = put(&format!("input.{}", format.name()), bytes);
    let file = InputFile::local(path, format);
    let whole = outcome(crate::source::read_file(&file));
    let streamed = outcome(crate::source::stream::first_pass(
        std::slice::from_ref(&file),
        &mut |_, _, _| Ok(()),
    ));
    whole.and(streamed)
}

/// A CSV batch checked against [`bundled_baseline`] with every detector and the quarantine:
/// hostile values (not only hostile framing) through the whole decision.
pub fn check_csv(bytes: &[u8]) -> Outcome {
    let path = put("batch.csv", bytes);
    let file = InputFile::local(path, Format::Csv);
    let policy = crate::policy::Policy::default();
    let extras = crate::check::Extras {
        row_scores: true,
        quarantine: true,
    };
    outcome(crate::check::check_files(
        bundled_baseline(),
        &policy,
        std::slice::from_ref(&file),
        extras,
    ))
}

/// A baseline file ([`crate::baseline::from_bytes`]: digest, JSON, format, invariants).
pub fn baseline(bytes: &[u8]) -> Outcome {
    outcome(crate::baseline::from_bytes(
        "baseline.json",
        bytes,
        None,
        None,
    ))
}

/// A policy file ([`crate::policy::Policy::load`]: TOML, validation, digest).
pub fn policy(bytes: &[u8]) -> Outcome {
    let path = put("policy.toml", bytes);
    outcome(crate::policy::Policy::load(Some(&path)).and_then(|p| p.policy.digest()))
}

/// A noise file of `compare --noise` ([`crate::compare::noise::Noise::load`]).
pub fn noise(bytes: &[u8]) -> Outcome {
    let path = put("noise.json", bytes);
    outcome(crate::compare::noise::Noise::load(&path))
}

/// A summary part (`summarize`, `merge`, `check --summaries`) and, when it reads, the decision
/// on it against [`bundled_baseline`]; and the same bytes as a shard manifest.
pub fn summary(bytes: &[u8]) -> Outcome {
    let path = Path::new("part");
    let manifest = outcome(crate::shard::Manifest::from_bytes(path, bytes));
    let part = crate::shard::Part::from_bytes(path, bytes).and_then(|part| {
        let (baseline_sha, policy_sha) = (
            part.header.baseline_sha256.clone(),
            part.header.policy_sha256.clone(),
        );
        let (summary, _, _, scans) = part.complete(path, &baseline_sha, &policy_sha)?;
        crate::check::decide_kept(
            bundled_baseline(),
            &crate::policy::Policy::default(),
            bundled_schema(),
            summary,
            scans,
        )
    });
    manifest.and(outcome(part))
}

/// The columns and dtypes of the bundled clean batch.
fn bundled_schema() -> &'static [(String, polars::prelude::DataType)] {
    static SCHEMA: OnceLock<Vec<(String, polars::prelude::DataType)>> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let file = InputFile::local(testdata().join("clean/batch.parquet"), Format::Parquet);
        crate::source::stream::schema_of(&file).expect("bundled clean batch")
    })
}

/// A `sha256sum` file, decoded as `verify` decodes it.
pub fn sha256sum(bytes: &[u8]) -> Outcome {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_owned())?;
    crate::integrity::parse_sha256sum(text).map(|_| ())
}

/// A PEM public key and a detached signature (the first two bytes give the key's length), as
/// `verify --signature` and `check --baseline-signature` read them, over a fixed message.
pub fn signature(bytes: &[u8]) -> Outcome {
    let (key, sig) = match bytes {
        [a, b, rest @ ..] => {
            rest.split_at((usize::from(*a) << 8 | usize::from(*b)).min(rest.len()))
        }
        _ => (bytes, &[][..]),
    };
    let check = crate::digest::SignatureCheck {
        public_key: put("key.pub", key),
        signature: put("blob.sig", sig),
    };
    outcome(check.verify(b"poisongate"))
}

/// A ledger file (`check --ledger`): each entry's chain, digest and part.
pub fn ledger(bytes: &[u8]) -> Outcome {
    let dir = scratch().join("ledger");
    std::fs::create_dir_all(dir.join("parts")).expect("scratch ledger"); // setup, not input
    std::fs::write(dir.join("ledger.jsonl"), bytes).expect("scratch ledger");
    outcome(crate::ledger::Ledger::open(&dir))
}

/// The parent report of `check --after-quarantine`.
pub fn parent_report(bytes: &[u8]) -> Outcome {
    let path = put("parent.json", bytes);
    // The baseline the report names, so that a well-formed report is read to the end.
    let pinned = serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .and_then(|v| v.pointer("/baseline/sha256")?.as_str().map(str::to_owned))
        .unwrap_or_default();
    outcome(crate::check::remedy::read_parent(&path, &pinned))
}

/// A model file, scanned as `verify --scan` scans it, under tighter limits so that one input
/// stays within the fuzzer's time budget (the limits themselves are part of the contract:
/// running out is a refusal, never a pass or a hang).
pub fn model_scan(bytes: &[u8]) -> Outcome {
    let path = put("model.bin", bytes);
    let limits = crate::scan::Limits {
        max_ops: 2_000_000,
        max_values: 2_000_000,
        max_inflated: 64 << 20,
        time: std::time::Duration::from_secs(10),
        ..crate::scan::Limits::default()
    };
    let scanned = crate::scan::scan_file(&path, &limits).map_err(|e| e.to_string())?;
    let _ = scanned.judge(&crate::scan::Allowlist::built_in(), None);
    Ok(())
}

/// Builds what target `name` reads besides its input (the bundled baseline and schema), so
/// that the first input is not charged for it.
pub fn prepare(name: &str) {
    if matches!(name, "check_csv" | "summary") {
        let _ = bundled_baseline();
        let _ = bundled_schema();
    }
}

/// One entry point: bytes in, read or refused out.
pub type Target = fn(&[u8]) -> Outcome;

/// Every target by name, for the replay tests and the `fuzz/` binaries.
pub const TARGETS: &[(&str, Target)] = &[
    ("baseline", baseline),
    ("check_csv", check_csv),
    ("ledger", ledger),
    ("model_scan", model_scan),
    ("noise", noise),
    ("parent_report", parent_report),
    ("policy", policy),
    ("read_csv", |b| read(Format::Csv, b)),
    ("read_ipc", |b| read(Format::Ipc, b)),
    ("read_ndjson", |b| read(Format::Ndjson, b)),
    ("read_parquet", |b| read(Format::Parquet, b)),
    ("sha256sum", sha256sum),
    ("signature", signature),
    ("summary", summary),
];
