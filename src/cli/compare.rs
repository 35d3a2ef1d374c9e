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
    let ep = &args.endpoints;
    let mut data = args.input.data.clone();
    data.extend(ep.features.iter().cloned());
    if data.is_empty() {
        return Err(poisongate::Error::Usage(
            "no evaluation rows: give DATA (or --features with endpoints)".into(),
        ));
    }
    let files = sources.resolve(&data, format)?;
    let mut batch = source::read_batch(&files)?;
    let join = if args.join.is_empty() {
        None
    } else {
        Some(source::read_batch(&sources.resolve(&args.join, format)?)?)
    };
    let live = live(args, &batch)?;
    let mut notes = Vec::new();
    let scored = match &live {
        Some(l) => {
            let scored = l.score(&mut batch, args.label.as_deref())?;
            if let Some(path) = &ep.save_predictions {
                write_atomic(path, &compare::live::parquet(&batch)?)?;
            }
            notes.extend(scored.notes.iter().cloned());
            Some(scored)
        }
        None => None,
    };
    let (before_scores, after_scores) = match &scored {
        Some(s) => (s.before_scores.clone(), s.after_scores.clone()),
        None => (args.before_score.clone(), args.after_score.clone()),
    };
    let spec = Spec {
        before: args
            .before_col
            .clone()
            .unwrap_or_else(|| compare::live::BEFORE_COL.to_owned()),
        after: args
            .after_col
            .clone()
            .unwrap_or_else(|| compare::live::AFTER_COL.to_owned()),
        label: args.label.clone(),
        key: args.key.clone(),
        segments: args.segment.clone(),
        before_scores,
        after_scores,
        positive_class: args.positive_class.clone(),
        before_confidence: args.before_confidence.clone(),
        after_confidence: args.after_confidence.clone(),
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
    let probes = match &live {
        Some(l) if !ep.no_probes => {
            let mut candidates =
                compare::probe::from_reports(&ep.probes_from, &l.features, &mut notes)?;
            let baseline = ep
                .baseline
                .as_ref()
                .map(|path| poisongate::baseline::load(path, ep.expect_baseline_sha256.as_deref()))
                .transpose()?;
            if let Some(b) = &baseline {
                let common = compare::probe::from_values(&l.features);
                let (common, rare): (Vec<_>, Vec<_>) =
                    common.into_iter().partition(|p| p.source == "common value");
                candidates.extend(common);
                candidates.extend(compare::probe::from_baseline(&b.baseline, &l.features));
                candidates.extend(rare);
            } else {
                candidates.extend(compare::probe::from_values(&l.features));
            }
            let candidates = compare::probe::dedup(candidates);
            let mut found = Vec::new();
            let summary = compare::probe::run(
                l,
                &table,
                &candidates,
                ep.probe_rows as usize,
                args.seed,
                &policy.policy,
                baseline.as_ref().map(|b| &b.baseline),
                &mut found,
            )?;
            notes.push(format!(
                "counterfactual probes: {} candidate triggers, {} rows sent to each model",
                summary.probed, summary.rows_sent
            ));
            compare::Probes::Ran(found)
        }
        Some(_) => compare::Probes::Skipped("--no-probes was given"),
        None => compare::Probes::Skipped(compare::Probes::FILES_ONLY),
    };
    let mut result = compare::compare(&spec, &table, &policy.policy, noise.as_ref(), probes)?;
    result.eval.notes.extend(notes);
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
        ("baseline", ep.baseline.as_deref()),
    ])?;
    Ok(report)
}

/// The live models, when endpoints are given.
fn live(
    args: &CompareArgs,
    batch: &poisongate::source::Batch,
) -> poisongate::Result<Option<compare::live::Live>> {
    use compare::endpoint::{Client, Endpoint, Features, Layout, Options, TokenSource};
    let ep = &args.endpoints;
    let (Some(before), Some(after)) = (&ep.before_endpoint, &ep.after_endpoint) else {
        return Ok(None);
    };
    if !(ep.endpoint_timeout.is_finite() && ep.endpoint_timeout > 0.0) {
        return Err(poisongate::Error::Usage(
            "--endpoint-timeout must be a positive number of seconds".into(),
        ));
    }
    let token = match (&ep.token_file, &ep.token_env) {
        (Some(f), _) => Some(TokenSource::File(f.clone())),
        (None, Some(v)) => Some(TokenSource::Env(v.clone())),
        (None, None) => None,
    };
    let options = Options {
        layout: match ep.input_layout {
            super::LayoutArg::Columns => Layout::Columns,
            super::LayoutArg::Tensor => Layout::Tensor(ep.tensor_name.clone()),
        },
        label_output: ep.label_output.clone(),
        proba_output: ep.proba_output.clone(),
        token,
        ca_bundle: ep.ca_bundle.clone(),
        timeout: std::time::Duration::from_secs_f64(ep.endpoint_timeout.min(3600.0)),
        concurrency: ep.endpoint_concurrency as usize,
        batch_rows: ep.batch_rows as usize,
        retries: ep.retries,
    };
    let mut exclude: Vec<&str> = Vec::new();
    exclude.extend(args.key.as_deref());
    exclude.extend(args.label.as_deref());
    let features = Features::from_batch(batch, &ep.input_col, &exclude)?;
    if let Layout::Tensor(_) = options.layout
        && let Some(f) = features
            .columns
            .iter()
            .find(|f| matches!(f.values, compare::endpoint::Column::Text(_)))
    {
        return Err(poisongate::Error::Usage(format!(
            "--input-layout tensor sends one FP64 tensor, but feature `{}` is text; use --input-layout columns or leave it out with --input-col",
            f.name
        )));
    }
    Ok(Some(compare::live::Live {
        client: Client::new(options)?,
        before: Endpoint::parse(before, "--before-endpoint")?,
        after: Endpoint::parse(after, "--after-endpoint")?,
        features: std::sync::Arc::new(features),
    }))
}
