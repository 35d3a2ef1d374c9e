//! `poisongate compare`.

use poisongate::compare::{self, Noise, Spec};
use poisongate::integrity;
use poisongate::output::write_atomic;
use poisongate::policy::Policy;
use poisongate::report::{Report, Verdict};
use poisongate::source;

use super::CompareArgs;

pub fn run(args: &CompareArgs) -> poisongate::Result<Verdict> {
    match evaluate(args) {
        Ok(report) => super::emit(&args.reports, &args.input, &report),
        Err(e) => {
            let report = Report::from_error("compare", &e);
            let _ = super::write_reports(&args.reports, &report);
            Err(e)
        }
    }
}

fn evaluate(args: &CompareArgs) -> poisongate::Result<Report> {
    args.input.stdout_json()?;
    let policy = Policy::load(args.policy.as_deref())?;
    let noise = args.noise.as_deref().map(Noise::load).transpose()?;
    let format = args.input.input_format()?;
    let sources = args.input.sources();
    let files = sources.resolve(&args.input.data, format)?;
    let batch = source::read_batch(&files)?;
    let join = if args.join.is_empty() {
        None
    } else {
        Some(source::read_batch(&sources.resolve(&args.join, format)?)?)
    };
    let spec = Spec {
        before: args.before_col.clone(),
        after: args.after_col.clone(),
        label: args.label.clone(),
        key: args.key.clone(),
        segments: args.segment.clone(),
        before_scores: args.before_score.clone(),
        after_scores: args.after_score.clone(),
        positive_class: args.positive_class.clone(),
        seed: args.seed,
    };
    let table = compare::assemble(&spec, &batch, join.as_ref())?;
    if let (Some(nz), Some(path)) = (&noise, &args.noise)
        && nz.classes != table.classes
    {
        return Err(poisongate::Error::input(
            path,
            format!(
                "noise file: pinned for classes [{}], this comparison has [{}]",
                nz.classes.join(", "),
                table.classes.join(", ")
            ),
        ));
    }
    let mut result = compare::compare(&spec, &table, &policy.policy, noise.as_ref())?;
    let mut inputs = batch.inputs;
    if let Some(j) = join {
        inputs.extend(j.inputs);
    }
    let mut refused = 0;
    if let Some(key) = args.sse.requirement() {
        let stored: Vec<integrity::Stored<'_>> =
            inputs.iter().map(integrity::Stored::from).collect();
        let extra = integrity::sse_kms_findings(key, &stored);
        refused = extra.len();
        poisongate::check::add_findings(&policy.policy, &mut result.eval, extra);
    }
    if refused > 0 && args.pin_noise.is_some() {
        // Pinning noise from inputs that fail their integrity requirement would launder them.
        result.eval.notes.push(format!(
            "--pin-noise wrote nothing: {refused} input(s) fail --require-sse-kms"
        ));
    } else if let Some(path) = &args.pin_noise {
        let mut pin = Noise::new(table.rows() as u64, table.classes.clone(), inputs.clone());
        pin.entries = result.pinned;
        write_atomic(path, &pin.to_json()?)?;
    }
    let mut report = Report::from_evaluation("compare", result.eval, None, inputs, &policy);
    // Joined feature files describe the same rows; the batch size is the compared rows.
    report.rows = table.rows() as u64;
    report.artifacts = super::check::read_artifacts(&[
        ("policy", args.policy.as_deref()),
        ("noise", args.noise.as_deref()),
    ])?;
    Ok(report)
}
