//! `poisongate check`.

use poisongate::baseline;
use poisongate::check;
use poisongate::output::write_atomic;
use poisongate::policy::Policy;
use poisongate::report::{self, ArtifactRef, Report, Verdict};
use poisongate::source;

use super::CheckArgs;

pub fn run(args: &CheckArgs) -> poisongate::Result<Verdict> {
    match evaluate(args) {
        Ok(report) => emit(args, &report),
        Err(e) => {
            // The JSON report records the failure too, so a pipeline can parse why; the error
            // itself still goes to stderr and the exit code stays 2.
            let report = Report::from_error("check", &e);
            let _ = write_reports(args, &report);
            Err(e)
        }
    }
}

fn evaluate(args: &CheckArgs) -> poisongate::Result<Report> {
    args.input.stdout_json()?;
    let quarantine_format = args
        .quarantine
        .as_deref()
        .map(|p| poisongate::poison::QuarantineFormat::from_path("--quarantine", p))
        .transpose()?;
    let scores_format = args
        .row_scores
        .as_deref()
        .map(|p| poisongate::poison::QuarantineFormat::from_path("--row-scores", p))
        .transpose()?;
    let policy = Policy::load(args.policy.as_deref())?;
    let loaded = baseline::load(&args.baseline, args.expect_baseline_sha256.as_deref())?;
    let files = source::resolve(&args.input.data, args.input.input_format()?)?;
    let batch = source::read_batch(&files)?;
    let mut eval = check::check(&loaded.baseline, &policy.policy, &batch)?;
    let quarantine = std::mem::take(&mut eval.quarantine);
    let quarantined = quarantine.len();
    let scores = std::mem::take(&mut eval.row_scores);
    let base = ArtifactRef {
        path: loaded.path,
        sha256: loaded.sha256,
        rows: loaded.baseline.rows,
    };
    let mut report = Report::from_evaluation(eval, base, batch.inputs, &policy);
    report.counts.quarantined_rows = quarantined;
    if let (Some(path), Some(format)) = (&args.quarantine, quarantine_format) {
        let bytes = poisongate::poison::render_quarantine(&quarantine, format)?;
        write_atomic(path, &bytes)?;
    }
    if let (Some(path), Some(format)) = (&args.row_scores, scores_format) {
        let ids = match &loaded.baseline.id {
            Some(id) => Some(poisongate::poison::ids_of(
                &batch.frames,
                id,
                (0..scores.len() as u64).collect(),
            )?),
            None => None,
        };
        let bytes = poisongate::poison::render_scores(&scores, ids.as_ref(), format)?;
        write_atomic(path, &bytes)?;
    }
    Ok(report)
}

/// Writes every requested report file; returns the JSON rendering.
fn write_reports(args: &CheckArgs, report: &Report) -> poisongate::Result<Vec<u8>> {
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
    Ok(json)
}

fn emit(args: &CheckArgs, report: &Report) -> poisongate::Result<Verdict> {
    let json = write_reports(args, report)?;
    if args.input.stdout_json()? {
        super::stdout(&String::from_utf8_lossy(&json));
    } else {
        super::stdout(&report::text::render(report));
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
