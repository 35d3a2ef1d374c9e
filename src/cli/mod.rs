//! Command-line interface (binary only): flags, and one function per command that calls the
//! library and returns a [`Verdict`]. Errors are returned, never printed here, except by the
//! single `report_error` in `main.rs`.

mod check;
mod compare;
mod explain;
mod policy;
mod profile;
mod shard;
mod verify;

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};
use poisongate::report::Verdict;
use poisongate::source::Format;

/// Blocks poisoned or drifted data before it reaches model training.
///
/// Exit codes: 0 pass, 1 blocked (a deny finding), 2 could not evaluate.
#[derive(Debug, Parser)]
#[command(
    name = "poisongate",
    version,
    propagate_version = true,
    help_expected = true
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Pin a baseline: profile trusted data into baseline.json (+ baseline.json.sha256).
    Profile(ProfileArgs),
    /// Gate a batch against a pinned baseline.
    Check(CheckArgs),
    /// Gate a retrained model against the serving one: prediction diffs on the same rows.
    Compare(CompareArgs),
    /// Print the default policy as a commented template, or the effective policy.
    Policy(PolicyArgs),
    /// Explain a finding code: what it means, why it matters, how to respond.
    Explain(ExplainArgs),
    /// Verify artifacts: digests from a sha256sum file, an ECDSA P-256 blob signature, or
    /// (--scan) what loading a model file would import.
    Verify(VerifyArgs),
    /// Sign a model directory as an OpenSSF model-signing bundle (Sigstore bundle v0.3, DSSE,
    /// in-toto), which `verify --model` and `model_signing verify key` check.
    Sign(SignArgs),
    /// List a batch's units (files, hashed) in a manifest, for a sharded check.
    Plan(PlanArgs),
    /// Summarise one shard of a planned batch into a part (poisongate.summary/2).
    Summarize(SummarizeArgs),
    /// Merge summary parts; refuses parts of another run or a unit covered twice.
    Merge(MergeArgs),
}

/// Options shared by commands that read data.
#[derive(Debug, Args)]
struct InputArgs {
    /// Input files, directories or globs (Parquet, CSV, Arrow IPC, NDJSON). Several inputs form
    /// one batch and must share one schema. (`check --summaries` takes none.)
    #[arg(value_name = "DATA")]
    data: Vec<String>,
    /// Input format (parquet, csv, ipc, ndjson) overriding the file extension; for `check`
    /// also the stdout format (text, json). Repeat to give both: `--format csv --format json`.
    #[arg(long, value_enum, value_name = "FORMAT")]
    format: Vec<FormatArg>,
    /// Endpoint of an S3-compatible store for s3:// inputs, e.g. http://127.0.0.1:9000
    /// (implies path-style addressing). Default: AWS_ENDPOINT_URL_S3, then AWS_ENDPOINT_URL,
    /// then AWS itself.
    #[arg(long, value_name = "URL")]
    s3_endpoint: Option<String>,
}

/// `--require-sse-kms`, shared by `profile`, `check`, `compare` and `verify`.
#[derive(Debug, Args)]
struct SseArgs {
    /// Require every input to be an S3 object encrypted with SSE-KMS; with `=KEY` (a key ARN
    /// or key id), with that key. Any other input is an `integrity-sse-kms-missing` deny.
    #[arg(
        long,
        value_name = "KEY-ARN",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = ""
    )]
    require_sse_kms: Option<String>,
}

impl SseArgs {
    /// `None` when not required; `Some(None)` for any KMS key; `Some(Some(key))` for one key.
    fn requirement(&self) -> Option<Option<&str>> {
        self.require_sse_kms
            .as_deref()
            .map(|k| Some(k.trim()).filter(|k| !k.is_empty()))
    }
}

/// Values of `--format`: input formats and stdout formats share the flag (their names differ).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum FormatArg {
    /// Decode inputs as Apache Parquet.
    Parquet,
    /// Decode inputs as CSV with a header row.
    Csv,
    /// Decode inputs as Arrow IPC (Feather v2).
    Ipc,
    /// Decode inputs as newline-delimited JSON.
    Ndjson,
    /// Human summary on stdout (check; the default).
    Text,
    /// The JSON report on stdout (check).
    Json,
}

impl InputArgs {
    /// Where inputs come from: local paths, or S3 through this endpoint.
    fn sources(&self) -> poisongate::source::Sources {
        poisongate::source::Sources::new(poisongate::source::S3Options {
            endpoint: self.s3_endpoint.clone(),
        })
    }

    /// The input format override, if any.
    fn input_format(&self) -> poisongate::Result<Option<Format>> {
        let mut found = None;
        for f in &self.format {
            let this = match f {
                FormatArg::Parquet => Format::Parquet,
                FormatArg::Csv => Format::Csv,
                FormatArg::Ipc => Format::Ipc,
                FormatArg::Ndjson => Format::Ndjson,
                FormatArg::Text | FormatArg::Json => continue,
            };
            if found.is_some_and(|prev| prev != this) {
                return Err(poisongate::Error::Usage(
                    "--format names two different input formats".into(),
                ));
            }
            found = Some(this);
        }
        Ok(found)
    }

    /// The stdout format: JSON when `--format json` was given.
    fn stdout_json(&self) -> poisongate::Result<bool> {
        let json = self.format.contains(&FormatArg::Json);
        if json && self.format.contains(&FormatArg::Text) {
            return Err(poisongate::Error::Usage(
                "--format text and --format json conflict".into(),
            ));
        }
        Ok(json)
    }
}

#[derive(Debug, Args)]
struct ProfileArgs {
    #[command(flatten)]
    input: InputArgs,
    /// Where to write the baseline; `<FILE>.sha256` is written beside it.
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,
    /// Label column (class labels); its distribution and per-class summaries are pinned.
    #[arg(long, value_name = "COL")]
    label: Option<String>,
    /// Row-id column: carried into reports, never profiled as a feature.
    #[arg(long, value_name = "COL")]
    id: Option<String>,
    /// Column to leave out of the baseline (repeatable).
    #[arg(long, value_name = "COL")]
    ignore: Vec<String>,
    /// Column holding the model's predicted class: pinned as an output, so `check` reports
    /// its drift as `output-prediction` (repeatable).
    #[arg(long, value_name = "COL")]
    prediction: Vec<String>,
    /// Column holding a model score: pinned as an output, so `check` reports its drift as
    /// `output-score` (repeatable).
    #[arg(long, value_name = "COL")]
    score: Vec<String>,
    /// Seed for every random choice derived from this baseline.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Most labelled rows the reference model of the label is fitted on (a seeded sample);
    /// the trusted rows beyond it are scored by the model and calibrate the label tests.
    #[arg(long, value_name = "ROWS", default_value_t = poisongate::poison::DEFAULT_MODEL_ROWS as u64,
          value_parser = clap::value_parser!(u64).range(1000..=10_000_000))]
    model_rows: u64,
    /// A sharded profile: fold the units of one shard (`--shard`) of this `plan` manifest (a
    /// file or an s3:// object) into a profile part, written to `-o`, instead of a baseline.
    #[arg(
        long,
        value_name = "FILE",
        requires = "shard",
        conflicts_with = "summaries"
    )]
    manifest: Option<String>,
    /// Which shard of `--manifest`: I/N, 0 <= I < N.
    #[arg(long, value_name = "I/N", requires = "manifest")]
    shard: Option<String>,
    /// Write the baseline from the profile parts of every shard (files, or directories of
    /// them), merged in unit order: the baseline one process writes from the same files.
    #[arg(long, value_name = "PART", num_args = 1.., conflicts_with = "manifest")]
    summaries: Vec<PathBuf>,
    #[command(flatten)]
    sse: SseArgs,
    /// A signed statement of the profile (`--attest KEY --attestation F`): its subjects are the
    /// trusted inputs, and it names the baseline written. Not with --manifest (a part is not a
    /// decision).
    #[command(flatten)]
    sign: AttestArgs,
}

#[derive(Debug, Args)]
struct CheckArgs {
    /// The pinned baseline (from `poisongate profile`): a file or an s3:// object.
    #[arg(long, value_name = "FILE")]
    baseline: String,
    #[command(flatten)]
    input: InputArgs,
    /// Refuse the baseline unless its SHA-256 is this (64 hex digits).
    #[arg(long, value_name = "HEX")]
    expect_baseline_sha256: Option<String>,
    /// Refuse the baseline unless this detached signature (cosign sign-blob: base64 of an
    /// ECDSA P-256 / SHA-256 DER signature) verifies with `--public-key`.
    #[arg(long, value_name = "SIG", requires = "public_key")]
    baseline_signature: Option<PathBuf>,
    /// PEM public key for `--baseline-signature`.
    #[arg(long, value_name = "PEM", requires = "baseline_signature")]
    public_key: Option<PathBuf>,
    /// Policy file (poisongate.toml); built-in defaults otherwise.
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Refuse the policy unless its digest (`policy.sha256` of a report: the SHA-256 of the
    /// effective policy, defaults included) is this; required by the strict profile.
    #[arg(long, value_name = "HEX")]
    expect_policy_sha256: Option<String>,
    #[command(flatten)]
    reports: ReportArgs,
    /// Write the rows flagged by poisoning findings here (.parquet or .csv): row index, id,
    /// finding codes and suspicion score, in batch order.
    #[arg(long, value_name = "FILE")]
    quarantine: Option<PathBuf>,
    /// Write every row's suspicion score here (.parquet or .csv): row index, id and score, in
    /// batch order; for ranking rows and measuring detection quality.
    #[arg(long, value_name = "FILE")]
    row_scores: Option<PathBuf>,
    /// Re-check the rows left once a quarantine was dropped: REPORT is the JSON report
    /// (`--json`) of the check that wrote the quarantine. The batch must be that batch minus
    /// exactly its quarantined rows, and every finding of it that the quarantine does not
    /// clear still blocks.
    #[arg(long, value_name = "REPORT", conflicts_with = "summaries")]
    after_quarantine: Option<PathBuf>,
    /// Test the batch together with the batches accepted before it, kept in this ledger
    /// directory (hash-chained; a tampered ledger is exit 2), and append the batch when it
    /// passes: slow poisoning spread over many small batches.
    #[arg(long, value_name = "DIR")]
    ledger: Option<PathBuf>,
    /// Accepted batches the ledger's window holds besides this one.
    #[arg(long, value_name = "N", default_value_t = poisongate::ledger::DEFAULT_WINDOW, requires = "ledger")]
    ledger_window: usize,
    /// Decide from a merged summary (`poisongate merge`) instead of DATA; the batch's files
    /// are re-read only for the few exact counts and ids a second pass needs.
    #[arg(long, value_name = "PART")]
    summaries: Option<PathBuf>,
    #[command(flatten)]
    sse: SseArgs,
}

#[derive(Debug, Args)]
struct PlanArgs {
    #[command(flatten)]
    input: InputArgs,
    /// Where to write the manifest (JSON).
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,
    /// Cut Parquet files of more rows into units of this many rows (rounded up to a
    /// multiple of 65,536), so that one large file can be summarised by many shards.
    #[arg(long, value_name = "ROWS", value_parser = clap::value_parser!(u64).range(1..))]
    unit_rows: Option<u64>,
}

#[derive(Debug, Args)]
struct SummarizeArgs {
    /// The pinned baseline: a file or an s3:// object.
    #[arg(long, value_name = "FILE")]
    baseline: String,
    /// Refuse the baseline unless its SHA-256 is this (64 hex digits).
    #[arg(long, value_name = "HEX")]
    expect_baseline_sha256: Option<String>,
    /// Policy file (poisongate.toml); every shard and the final check must use the same one.
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// The manifest from `poisongate plan` (a file or an s3:// object).
    #[arg(long, value_name = "FILE")]
    manifest: String,
    /// Which shard: I/N, 0 <= I < N (e.g. `--shard $JOB_COMPLETION_INDEX/8`).
    #[arg(long, value_name = "I/N")]
    shard: String,
    /// Where to write the part.
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,
    /// Endpoint of an S3-compatible store for s3:// inputs.
    #[arg(long, value_name = "URL")]
    s3_endpoint: Option<String>,
}

#[derive(Debug, Args)]
struct MergeArgs {
    /// Parts from `poisongate summarize` (or earlier merges), in any order; a directory
    /// stands for every part file in it.
    #[arg(required = true, value_name = "PART")]
    parts: Vec<PathBuf>,
    /// Where to write the merged part.
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,
}

/// Report files, shared by `check` and `compare`.
#[derive(Debug, Args)]
struct ReportArgs {
    /// Write the JSON report here (also on errors, with verdict "error").
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write a Markdown report here (for PR comments and job summaries).
    #[arg(long, value_name = "FILE")]
    markdown: Option<PathBuf>,
    /// Write a standalone HTML report here.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// Write a JUnit XML report here (one test case per finding plus the gate).
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
    #[command(flatten)]
    sign: AttestArgs,
}

/// `--attest KEY --attestation F` of `check`, `compare` and `profile`.
#[derive(Debug, Args)]
struct AttestArgs {
    /// Sign the verdict with this unencrypted PEM EC private key (P-256, P-384 or P-521) and
    /// write it to --attestation: an in-toto statement (SLSA verification summary) whose
    /// subjects are the digests of every input read. Written on a block and on an error too
    /// (FAILED), so a stale passing attestation is never left behind.
    #[arg(long, value_name = "KEY", requires = "attestation")]
    attest: Option<PathBuf>,
    /// Where --attest writes the signed verdict (a Sigstore bundle); `verify --attestation`
    /// checks it in the training step.
    #[arg(long, value_name = "F", requires = "attest")]
    attestation: Option<PathBuf>,
}

impl AttestArgs {
    /// The key and the path, when asked for; the key is read first, so that a bad key fails
    /// the run before anything is written.
    fn load(&self) -> poisongate::Result<Option<(poisongate::modelsign::keys::PrivateKey, &Path)>> {
        match (&self.attest, &self.attestation) {
            (Some(key), Some(path)) => Ok(Some((
                poisongate::modelsign::keys::PrivateKey::from_pem_file(key)?,
                path.as_path(),
            ))),
            _ => Ok(None),
        }
    }
}

/// `compare` against live models (Open Inference Protocol, KServe V2 REST).
#[derive(Debug, Args)]
struct EndpointArgs {
    /// The serving model: {base}/v2/models/{name}[/versions/{v}]. The evaluation rows, given
    /// as DATA or with --features, are sent to it and its answers compared as --before-col
    /// would be.
    #[arg(long, value_name = "URL", requires = "after_endpoint")]
    before_endpoint: Option<String>,
    /// The retrained model, as --before-endpoint.
    #[arg(long, value_name = "URL", requires = "before_endpoint")]
    after_endpoint: Option<String>,
    /// Evaluation rows for the endpoints (the same as giving them as DATA).
    #[arg(long, value_name = "FILE", requires = "before_endpoint")]
    features: Vec<String>,
    /// Feature column sent to the models (repeatable, in this order). Default: every column
    /// but --key and --label.
    #[arg(long, value_name = "COL", requires = "before_endpoint")]
    input_col: Vec<String>,
    /// How features travel: one input per column with the pandas content type (MLServer's
    /// scikit-learn runtime), or one [rows, features] FP64 tensor (KServe sklearnserver,
    /// Triton FIL, ONNX).
    #[arg(
        long,
        value_enum,
        default_value = "columns",
        requires = "before_endpoint"
    )]
    input_layout: LayoutArg,
    /// Input name of the tensor layout.
    #[arg(long, value_name = "NAME", default_value = "input-0")]
    tensor_name: String,
    /// Output holding the predicted class (MLServer: predict). Default: the output of shape
    /// [rows] or [rows, 1].
    #[arg(long, value_name = "NAME", requires = "before_endpoint")]
    label_output: Option<String>,
    /// Output holding class probabilities (MLServer: predict_proba), in sorted class order.
    /// Default: a floating-point output of shape [rows, classes].
    #[arg(long, value_name = "NAME", requires = "before_endpoint")]
    proba_output: Option<String>,
    /// File holding the bearer token; re-read when it changes (projected service-account
    /// tokens rotate). Never printed.
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with = "token_env",
        requires = "before_endpoint"
    )]
    token_file: Option<PathBuf>,
    /// Environment variable holding the bearer token. Never printed.
    #[arg(long, value_name = "VAR", requires = "before_endpoint")]
    token_env: Option<String>,
    /// PEM bundle of the CAs to trust for https endpoints instead of the system's.
    #[arg(long, value_name = "PEM", requires = "before_endpoint")]
    ca_bundle: Option<PathBuf>,
    /// Seconds to wait for one answer.
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    endpoint_timeout: f64,
    /// Requests in flight per model.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    endpoint_concurrency: u32,
    /// Rows per request.
    #[arg(long, value_name = "N", default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..))]
    batch_rows: u32,
    /// Retries of a request answered 429 or 5xx or that could not connect (exponential
    /// backoff from 0.2 s, honouring Retry-After).
    #[arg(long, value_name = "N", default_value_t = 3)]
    retries: u32,
    /// Candidate triggers from `check --json` reports: the (column, value) of their
    /// poison-trigger, poison-segment-label-shift, poison-point-mass and
    /// schema-unseen-category findings (repeatable). Categorical inputs' common and rare
    /// values are always probed.
    #[arg(long, value_name = "REPORT", requires = "before_endpoint")]
    probes_from: Vec<PathBuf>,
    /// A pinned baseline of the trusted training data: the values it keeps for each text input
    /// that were rare there (below 1 % of rows) are probed too, even when no evaluation row
    /// holds them.
    #[arg(long, value_name = "FILE", requires = "before_endpoint")]
    baseline: Option<PathBuf>,
    /// The baseline's expected SHA-256 (as `check --expect-baseline-sha256`).
    #[arg(long, value_name = "HEX", requires = "baseline")]
    expect_baseline_sha256: Option<String>,
    /// Evaluation rows per probe and class: the first rows, in one seeded random order,
    /// holding another value that neither model predicted as the class.
    #[arg(long, value_name = "N", default_value_t = 200, value_parser = clap::value_parser!(u32).range(20..))]
    probe_rows: u32,
    /// Do not probe; only score the rows.
    #[arg(long, requires = "before_endpoint")]
    no_probes: bool,
    /// Write the evaluation rows with both models' answers (Parquet) here, for a file-based
    /// replay of this comparison.
    #[arg(long, value_name = "FILE", requires = "before_endpoint")]
    save_predictions: Option<PathBuf>,
}

/// Values of `--input-layout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LayoutArg {
    /// One input per column (`content_type: pd`).
    Columns,
    /// One FP64 tensor of all features.
    Tensor,
}

#[derive(Debug, Args)]
struct CompareArgs {
    #[command(flatten)]
    input: InputArgs,
    /// Column holding the serving model's predicted class (not with --before-endpoint).
    #[arg(
        long,
        value_name = "COL",
        required_unless_present = "before_endpoint",
        conflicts_with = "before_endpoint"
    )]
    before_col: Option<String>,
    /// Column holding the retrained model's predicted class (not with --after-endpoint).
    #[arg(
        long,
        value_name = "COL",
        required_unless_present = "after_endpoint",
        conflicts_with = "after_endpoint"
    )]
    after_col: Option<String>,
    #[command(flatten)]
    endpoints: Box<EndpointArgs>,
    /// Column holding the true class (enables accuracy, recall, loss and calibration tests).
    #[arg(long, value_name = "COL")]
    label: Option<String>,
    /// Row key: unique per row; joins `--join` files.
    #[arg(long, value_name = "COL")]
    key: Option<String>,
    /// Column to test per segment: each category, or each decile of a numeric column
    /// (repeatable; from DATA or the `--join` file).
    #[arg(long, value_name = "COL")]
    segment: Vec<String>,
    /// The serving model's score column(s): one = probability of the positive class (binary
    /// tasks), or one per class in sorted class order (repeatable).
    #[arg(long, value_name = "COL")]
    before_score: Vec<String>,
    /// The retrained model's score column(s), as `--before-score`.
    #[arg(long, value_name = "COL")]
    after_score: Vec<String>,
    /// Column holding the serving model's probability of its own predicted class (what many
    /// serving logs keep). Binary tasks get every score test; with more classes, score shift
    /// and top-label calibration. Not with --before-score.
    #[arg(long, value_name = "COL", requires = "after_confidence", conflicts_with_all = ["before_score", "before_endpoint"])]
    before_confidence: Option<String>,
    /// The retrained model's probability of its own predicted class, as --before-confidence.
    #[arg(
        long,
        value_name = "COL",
        requires = "before_confidence",
        conflicts_with = "after_score"
    )]
    after_confidence: Option<String>,
    /// The class a single score column is the probability of (default: the second of the two
    /// classes in sorted order).
    #[arg(long, value_name = "CLASS")]
    positive_class: Option<String>,
    /// Evaluation features in other files, joined on `--key` (every key once in each).
    #[arg(long, value_name = "FILE", requires = "key")]
    join: Vec<String>,
    /// Policy file (poisongate.toml); built-in defaults otherwise.
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    #[command(flatten)]
    reports: ReportArgs,
    /// Write this comparison's statistics as the retraining noise of a known-clean retrain.
    #[arg(long, value_name = "FILE")]
    pin_noise: Option<PathBuf>,
    /// Gate against the retraining noise pinned with `--pin-noise`.
    #[arg(long, value_name = "FILE")]
    noise: Option<PathBuf>,
    /// Seed of the calibration test's bootstrap.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    sse: SseArgs,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("mode").required(true).args(["sha256_file", "signature", "scan", "model", "attestation"])))]
struct VerifyArgs {
    /// Files or s3:// objects to verify. With --sha256-file and no FILE, every listed file is
    /// checked (names relative to the checksum file's directory or S3 prefix).
    #[arg(value_name = "FILE")]
    files: Vec<String>,
    /// A sha256sum-format file (`HEX  NAME` or `HEX *NAME` per line); a file or s3:// object.
    #[arg(long, value_name = "F")]
    sha256_file: Option<String>,
    /// A detached signature of FILE: base64 of an ECDSA P-256 / SHA-256 DER signature, as
    /// `cosign sign-blob` or `openssl dgst -sha256 -sign` (base64-encoded) write it.
    #[arg(
        long,
        value_name = "SIG",
        requires = "public_key",
        conflicts_with = "sha256_file"
    )]
    signature: Option<PathBuf>,
    /// PEM public key (`-----BEGIN PUBLIC KEY-----`): an ECDSA P-256 key with a signature, a
    /// P-256, P-384 or P-521 key with a model directory.
    #[arg(long, value_name = "PEM")]
    public_key: Option<PathBuf>,
    /// With --model, certificate mode: PEM CA certificates (repeatable) that the bundle's
    /// signing certificate must chain to, at its notBefore; it must allow signing (key usage
    /// digitalSignature or extended key usage codeSigning).
    #[arg(
        long,
        value_name = "PEM",
        requires = "model",
        conflicts_with = "public_key"
    )]
    certificate_chain: Vec<PathBuf>,
    /// A model directory to verify against an OpenSSF model-signing bundle (--bundle) with
    /// --public-key or --certificate-chain: every file under DIR must be signed and unchanged,
    /// as the signed policy (ignore paths, symbolic links, shards) says.
    #[arg(
        long,
        value_name = "DIR",
        requires = "bundle",
        conflicts_with_all = ["sha256_file", "signature", "scan"]
    )]
    model: Option<PathBuf>,
    /// The model's signature: a Sigstore bundle as `model_signing sign key` or `poisongate
    /// sign` write it (usually DIR/model.sig, which is then not itself verified).
    #[arg(long, value_name = "SIG", requires = "model")]
    bundle: Option<PathBuf>,
    /// With --model: files under DIR that the bundle does not list are not a failure (every
    /// signed file must still be present and unchanged).
    #[arg(long, requires = "model")]
    ignore_unsigned_files: bool,
    /// A signed verdict (an attestation that check, compare or profile wrote): exit 0 only when it
    /// verifies with --public-key, is a verdict of --verdict-of, says PASSED, and the FILEs'
    /// SHA-256 digests are exactly its subjects (a local directory: every file in it).
    #[arg(
        long,
        value_name = "F",
        requires = "public_key",
        conflicts_with_all = ["sha256_file", "signature", "scan", "model"]
    )]
    attestation: Option<PathBuf>,
    /// With --attestation: the command whose verdict lets the files through (a `profile`
    /// verdict judges nothing, so it must never stand in for a `check`).
    #[arg(long, value_name = "COMMAND", requires = "attestation", default_value = "check",
          value_parser = ["check", "compare", "profile"])]
    verdict_of: String,
    /// Scan each FILE (pickle, joblib, PyTorch zip, NumPy .npy/.npz, safetensors, Keras
    /// .keras) for what loading it would import, without loading it: anything outside the
    /// allowlist of globals models need is unsafe (exit 1); a file that cannot be judged is
    /// exit 2.
    #[arg(long, conflicts_with_all = ["sha256_file", "signature"])]
    scan: bool,
    /// With --scan: also allow this global (`module.name`, repeatable), e.g. your own
    /// transformer class.
    #[arg(long, value_name = "MODULE.NAME", requires = "scan")]
    allow: Vec<String>,
    /// With --scan: write the exact set of globals the (trusted) FILEs import to F, if they
    /// are safe.
    #[arg(long, value_name = "F", requires = "scan", conflicts_with = "imports")]
    pin_imports: Option<PathBuf>,
    /// With --scan: block any import the pin F (from --pin-imports) does not hold
    /// (integrity-model-imports), even an allowlisted one.
    #[arg(long, value_name = "F", requires = "scan")]
    imports: Option<PathBuf>,
    /// With --scan: also write the scan as JSON to F.
    #[arg(long, value_name = "F", requires = "scan")]
    json: Option<PathBuf>,
    /// Endpoint of an S3-compatible store for s3:// files (implies path-style addressing).
    #[arg(long, value_name = "URL")]
    s3_endpoint: Option<String>,
    #[command(flatten)]
    sse: SseArgs,
}

#[derive(Debug, Args)]
struct SignArgs {
    /// The model directory to sign.
    #[arg(long, value_name = "DIR")]
    model: PathBuf,
    /// Unencrypted PEM EC private key on P-256, P-384 or P-521 (PKCS#8 or SEC1, as `openssl
    /// ecparam -genkey` writes it).
    #[arg(long, value_name = "PEM")]
    key: PathBuf,
    /// Where to write the bundle (default DIR/model.sig, which the signature then leaves out).
    #[arg(long, value_name = "SIG")]
    signature: Option<PathBuf>,
    /// A path relative to DIR to leave unsigned (repeatable); recorded in the signed policy.
    /// The git paths (.git, .gitattributes, .github, .gitignore) are always left out.
    #[arg(long, value_name = "PATH")]
    ignore_paths: Vec<String>,
    /// Follow symbolic links to files (recorded in the signed policy); without it a link
    /// under DIR is an error.
    #[arg(long)]
    allow_symlinks: bool,
    /// Certificate mode: the PEM certificate of --key, written into the bundle; a verifier
    /// then trusts the CA certificates it is given instead of this key.
    #[arg(long, value_name = "PEM")]
    signing_certificate: Option<PathBuf>,
    /// With --signing-certificate: PEM certificates (repeatable) that link it to the CA,
    /// written into the bundle after it.
    #[arg(long, value_name = "PEM", requires = "signing_certificate")]
    certificate_chain: Vec<PathBuf>,
}

#[derive(Debug, Args)]
struct PolicyArgs {
    /// Print the defaults as a commented template.
    #[arg(long, conflicts_with = "dump")]
    init: bool,
    /// Print the effective policy (defaults merged with --policy).
    #[arg(long)]
    dump: bool,
    /// Policy file to merge with the defaults (with --dump).
    #[arg(long, value_name = "FILE", requires = "dump")]
    policy: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct ExplainArgs {
    /// The finding code, e.g. drift-numeric.
    #[arg(required_unless_present = "list")]
    code: Option<String>,
    /// List every code.
    #[arg(long)]
    list: bool,
}

/// Runs a parsed command.
pub fn run(cli: Cli) -> poisongate::Result<Verdict> {
    match cli.command {
        Command::Profile(args) => profile::run(&args),
        Command::Check(args) => check::run(&args),
        Command::Compare(args) => compare::run(&args),
        Command::Policy(args) => policy::run(&args),
        Command::Explain(args) => explain::run(&args),
        Command::Verify(args) => verify::run(&args),
        Command::Sign(args) => verify::sign(&args),
        Command::Plan(args) => shard::plan(&args),
        Command::Summarize(args) => shard::summarize(&args),
        Command::Merge(args) => shard::merge(&args),
    }
}

/// Writes every requested report file; returns the JSON rendering.
fn write_reports(
    args: &ReportArgs,
    report: &poisongate::report::Report,
) -> poisongate::Result<Vec<u8>> {
    use poisongate::output::write_atomic;
    use poisongate::report;
    let json = report::json::render(report)?;
    if let Some(path) = &args.json {
        write_atomic(path, &json)?;
    }
    if let Some(path) = &args.markdown {
        write_atomic(path, report::markdown::render(report).as_bytes())?;
    }
    if let Some(path) = &args.html {
        write_atomic(path, report::html::render(report).as_bytes())?;
    }
    if let Some(path) = &args.junit {
        write_atomic(path, report::junit::render(report).as_bytes())?;
    }
    if let Some((key, path)) = args.sign.load()? {
        let statement = poisongate::attest::statement(report);
        write_atomic(path, &poisongate::attest::sign(&statement, &key)?)?;
    }
    Ok(json)
}

/// Writes the reports and the stdout summary; returns the verdict (an error report is still
/// an error).
fn emit(
    args: &ReportArgs,
    input: &InputArgs,
    report: &poisongate::report::Report,
) -> poisongate::Result<Verdict> {
    let json = write_reports(args, report)?;
    let printed = if input.stdout_json()? {
        stdout(&String::from_utf8_lossy(&json))
    } else {
        stdout(&poisongate::report::text::render(report))
    };
    // A pass whose summary could not be written (a closed pipe, a full disk) is not a pass
    // the caller saw: exit 2. A block stays a block.
    if report.verdict == Verdict::Pass {
        printed?;
    }
    if report.verdict == Verdict::Error {
        return Err(poisongate::Error::Usage(
            report
                .error
                .clone()
                .unwrap_or_else(|| "could not evaluate".to_owned()),
        ));
    }
    Ok(report.verdict)
}

/// Writes to stdout. A failed write (a reader that closed the pipe, a full disk) is an
/// error: a run whose result nobody could read must not exit 0.
fn stdout(text: &str) -> poisongate::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| poisongate::Error::output(std::path::Path::new("(standard output)"), e))
}
