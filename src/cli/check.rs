//! `poisongate check`.

use poisongate::baseline;
use poisongate::check;
use poisongate::integrity;
use poisongate::output::write_atomic;
use poisongate::policy::Policy;
use poisongate::report::{ArtifactRef, Report, Verdict};
use poisongate::source;

use super::CheckArgs;

pub fn run(args: &CheckArgs) -> poisongate::Result<Verdict> {
    match evaluate(args) {
        Ok(report) => super::emit(&args.reports, &args.input, &report),
        Err(e) => {
            // The JSON report records the failure too, so a pipeline can parse why; the error
            // itself still goes to stderr and the exit code stays 2.
            let report = Report::from_error("check", &e);
            let _ = super::write_reports(&args.reports, &report);
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
    let extras = check::Extras {
        row_scores: args.row_scores.is_some(),
        quarantine: args.quarantine.is_some(),
    };
    let policy = Policy::load(args.policy.as_deref())?;
    if let Some(want) = &args.expect_policy_sha256 {
        let want = want.trim().to_ascii_lowercase();
        if want != policy.sha256 {
            let path = args
                .policy
                .clone()
                .unwrap_or_else(|| std::path::PathBuf::from("(built-in defaults)"));
            return Err(poisongate::Error::policy(
                &path,
                format!(
                    "its digest is {}, not the --expect-policy-sha256 {want}",
                    policy.sha256
                ),
            ));
        }
    }
    let signature = match (&args.baseline_signature, &args.public_key) {
        (Some(signature), Some(public_key)) => Some(poisongate::integrity::SignatureCheck {
            signature: signature.clone(),
            public_key: public_key.clone(),
        }),
        _ => None,
    };
    let sources = args.input.sources();
    let (bytes, object) = sources.read_bytes(&args.baseline, |p, cause| {
        poisongate::Error::baseline(p, cause)
    })?;
    let mut loaded = baseline::from_bytes(
        &args.baseline,
        &bytes,
        args.expect_baseline_sha256.as_deref(),
        signature.as_ref(),
    )?;
    loaded.object = object;
    // A re-check after a quarantine reads its parent first: the parent's findings decide the
    // thresholds of the label tests (`remedy::recheck_policy`).
    let parent = args
        .after_quarantine
        .as_deref()
        .map(|p| check::remedy::read_parent(p, &loaded.sha256))
        .transpose()?;
    let tightened = parent
        .as_ref()
        .and_then(|r| check::remedy::recheck_policy(&policy.policy, r));
    let decide_with = tightened.as_ref().unwrap_or(&policy.policy);
    // With --ledger, the batch's own summary as a part, and its columns' dtypes.
    let mut kept: Option<(
        poisongate::shard::Part,
        Vec<(String, polars::prelude::DataType)>,
    )> = None;
    let (mut eval, inputs, files) = match &args.summaries {
        None => {
            let files = sources.resolve(&args.input.data, args.input.input_format()?)?;
            if args.ledger.is_some() {
                let (eval, inputs, unit) =
                    check::check_files_kept(&loaded.baseline, decide_with, &files, extras)?;
                let dtypes = unit.schema.clone();
                let header = poisongate::ledger::part_header(&loaded.sha256, &policy.sha256);
                kept = Some((
                    poisongate::shard::Part::new(header, vec![(0, unit)]),
                    dtypes,
                ));
                (eval, inputs, files)
            } else {
                let (eval, inputs) =
                    check::check_files(&loaded.baseline, decide_with, &files, extras)?;
                (eval, inputs, files)
            }
        }
        Some(path) => {
            if !args.input.data.is_empty() {
                return Err(poisongate::Error::Usage(
                    "--summaries decides from a merged summary: give no DATA".into(),
                ));
            }
            let part = super::shard::read_part(path)?;
            let whole = args.ledger.as_ref().map(|_| part.clone());
            let (summary, schema, metas, scans) =
                part.complete(path, &loaded.sha256, &policy.sha256)?;
            // The units, as the shards read them, for the second passes.
            let mut files = Vec::with_capacity(metas.len());
            for m in &metas {
                files.extend(sources.resolve(std::slice::from_ref(&m.path), Some(m.format))?);
            }
            let Some(first) = files.first() else {
                return Err(poisongate::Error::summary(path, "it covers no units"));
            };
            let dtypes = source::stream::schema_of(first)?;
            if poisongate::shard::schema_text(&dtypes) != schema {
                return Err(poisongate::Error::summary(
                    path,
                    format!(
                        "the columns of {} differ from the summarised ones",
                        first.name()
                    ),
                ));
            }
            let eval = check::decide_summaries(
                &loaded.baseline,
                decide_with,
                &dtypes,
                summary,
                scans,
                (&files, &metas),
                extras,
            )?;
            kept = whole.map(|p| (p, dtypes));
            (eval, metas, files)
        }
    };
    let strict = policy.policy.gate.profile.is_strict();
    let required = args.sse.requirement();
    if required.is_some() || strict {
        // The baseline is held to the requirement when it comes from S3; a local baseline
        // is pinned by its digest or signature instead. The strict profile alone holds only
        // S3 objects to SSE-KMS (any key): local inputs are pinned by digest there too.
        let mut stored: Vec<integrity::Stored<'_>> = Vec::new();
        if let Some(object) = &loaded.object {
            stored.push(integrity::Stored {
                name: &loaded.path,
                object: Some(object),
            });
        }
        stored.extend(
            inputs
                .iter()
                .filter(|i| required.is_some() || i.object.is_some())
                .map(integrity::Stored::from),
        );
        let extra = integrity::sse_kms_findings(required.flatten(), &stored);
        check::add_findings(&policy.policy, &mut eval, extra);
    }
    let trust = integrity::trust_findings(
        &loaded.path,
        args.expect_baseline_sha256.is_some() || args.baseline_signature.is_some(),
        args.policy
            .as_deref()
            .map_or_else(
                || "built-in defaults".to_owned(),
                |p| p.display().to_string(),
            )
            .as_str(),
        args.expect_policy_sha256.is_some(),
        strict,
    );
    check::add_findings(&policy.policy, &mut eval, trust);
    let rows = source::Rows::Files(&files, &inputs);
    if let (Some(path), Some(remediation)) = (&args.after_quarantine, &parent) {
        check::remedy::recheck(&policy.policy, &mut eval, path, remediation, rows)?;
        if tightened.is_some() {
            eval.notes.push(format!(
                "the parent blocked on a row-level finding: here {} block on significance alone (thresholds 0), since a quarantine that removed only what one test saw, or a decoy, can leave flips below every threshold",
                check::remedy::FLIP_CODES.join(", ")
            ));
        }
    }
    if let (Some(dir), Some((part, dtypes))) = (&args.ledger, kept) {
        poisongate::ledger::gate(
            dir,
            args.ledger_window,
            (&loaded.baseline, &loaded.sha256),
            &policy,
            &inputs,
            part,
            &dtypes,
            &mut eval,
        )?;
    }
    let quarantine = std::mem::take(&mut eval.quarantine);
    let quarantined = eval.quarantined_rows;
    let scores = std::mem::take(&mut eval.row_scores);
    // What a re-check of the remaining rows needs: the row sets and each finding's residual.
    let remediation = if args.quarantine.is_some() {
        check::remedy::remediation(
            &loaded.baseline,
            &policy.policy,
            rows,
            &eval.findings,
            &quarantine,
        )?
    } else {
        None
    };
    let base = ArtifactRef {
        path: loaded.path,
        sha256: loaded.sha256,
        rows: loaded.baseline.rows,
        object: loaded.object,
    };
    let mut report = Report::from_evaluation("check", eval, Some(base), inputs.clone(), &policy);
    report.counts.quarantined_rows = quarantined;
    report.quarantine = remediation;
    report.artifacts = read_artifacts(&[
        ("policy", args.policy.as_deref()),
        ("baseline-signature", args.baseline_signature.as_deref()),
        ("public-key", args.public_key.as_deref()),
    ])?;
    if let (Some(path), Some(format)) = (&args.quarantine, quarantine_format) {
        let bytes = poisongate::poison::render_quarantine(&quarantine, format)?;
        write_atomic(path, &bytes)?;
    }
    if let (Some(path), Some(format)) = (&args.row_scores, scores_format) {
        let ids = match &loaded.baseline.id {
            Some(id) => Some(poisongate::poison::ids_of(
                rows,
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

/// Digests of the side files a run read, in the order given; absent ones are skipped.
pub(super) fn read_artifacts(
    files: &[(&str, Option<&std::path::Path>)],
) -> poisongate::Result<Vec<poisongate::report::Artifact>> {
    files
        .iter()
        .filter_map(|(role, path)| path.map(|p| poisongate::report::Artifact::of(role, p)))
        .collect()
}
