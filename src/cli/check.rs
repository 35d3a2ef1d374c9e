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
                    check::check_files_kept(&loaded.baseline, &policy.policy, &files, extras)?;
                let dtypes = unit.schema.clone();
                let header = part_header(&loaded.sha256, &policy.sha256);
                kept = Some((
                    poisongate::shard::Part::new(header, vec![(0, unit)]),
                    dtypes,
                ));
                (eval, inputs, files)
            } else {
                let (eval, inputs) =
                    check::check_files(&loaded.baseline, &policy.policy, &files, extras)?;
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
                &policy.policy,
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
    if let Some(key) = args.sse.requirement() {
        // The baseline is held to the requirement when it comes from S3; a local baseline
        // is pinned by its digest or signature instead.
        let mut stored: Vec<integrity::Stored<'_>> = Vec::new();
        if let Some(object) = &loaded.object {
            stored.push(integrity::Stored {
                name: &loaded.path,
                object: Some(object),
            });
        }
        stored.extend(inputs.iter().map(integrity::Stored::from));
        let extra = integrity::sse_kms_findings(key, &stored);
        check::add_findings(&policy.policy, &mut eval, extra);
    } else if strict {
        // The strict profile holds every S3 object it read to SSE-KMS (any key); local files
        // are pinned by digest instead.
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
                .filter(|i| i.object.is_some())
                .map(integrity::Stored::from),
        );
        let extra = integrity::sse_kms_findings(None, &stored);
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
    if let Some(parent) = &args.after_quarantine {
        let remediation = read_parent(parent, &loaded.sha256)?;
        let (set, _) = poisongate::lineage::row_sets(rows, &[])?;
        let name = parent.display().to_string();
        let extra = check::remedy::after_quarantine(&remediation, &name, &set)
            .map_err(|cause| poisongate::Error::input(parent, cause))?;
        eval.notes.push(format!(
            "re-checked as {name} minus its {} quarantined rows ({} of its findings carried forward, {} cleared by the quarantine)",
            remediation.quarantined_rows,
            remediation.findings.len(),
            remediation.findings.iter().filter(|r| r.clears).count()
        ));
        check::add_findings(&policy.policy, &mut eval, extra);
    }
    if let (Some(dir), Some((part, dtypes))) = (&args.ledger, kept) {
        ledger_step(
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
    let remediation = if args.quarantine.is_some() && !quarantine.is_empty() {
        let picked: Vec<u64> = quarantine.iter().map(|q| q.row).collect();
        let (all, held) = poisongate::lineage::row_sets(rows, &picked)?;
        let findings =
            poisongate::poison::residuals(&loaded.baseline, rows, &eval.findings, &quarantine)?;
        Some(poisongate::lineage::Remediation {
            format: poisongate::lineage::QUARANTINE_FORMAT.to_owned(),
            rows: all.rows,
            quarantined_rows: held.rows,
            batch_set: all.digest(),
            quarantined_set: held.encode(),
            findings,
        })
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

/// The quarantine section of the parent's JSON report, checked against this run's baseline.
fn read_parent(
    path: &std::path::Path,
    baseline_sha256: &str,
) -> poisongate::Result<poisongate::lineage::Remediation> {
    let bad = |cause: String| poisongate::Error::input(path, cause);
    let bytes =
        std::fs::read(path).map_err(|e| bad(format!("cannot read the parent report: {e}")))?;
    let parent: Report = serde_json::from_slice(&bytes)
        .map_err(|e| bad(format!("not a poisongate JSON report: {e}")))?;
    if parent.command != "check" {
        return Err(bad(format!(
            "a `{}` report, not a `check` report",
            parent.command
        )));
    }
    let Some(remediation) = parent.quarantine else {
        return Err(bad(
            "the report records no quarantine: the parent check must block with --quarantine and --json"
                .into(),
        ));
    };
    if remediation.format != poisongate::lineage::QUARANTINE_FORMAT {
        return Err(bad(format!(
            "unknown quarantine format `{}`",
            remediation.format
        )));
    }
    let parent_baseline = parent.baseline.map(|b| b.sha256).unwrap_or_default();
    if parent_baseline != baseline_sha256 {
        return Err(bad(format!(
            "the parent was checked against another baseline (sha256 {}), not this one ({})",
            short(&parent_baseline),
            short(baseline_sha256)
        )));
    }
    Ok(remediation)
}

fn short(hex: &str) -> &str {
    hex.get(..12).unwrap_or(hex)
}

/// The header of a one-batch part kept in the ledger.
fn part_header(baseline_sha256: &str, policy_sha256: &str) -> poisongate::shard::PartHeader {
    poisongate::shard::PartHeader {
        format: poisongate::shard::PART_FORMAT.to_owned(),
        tool: tool_name(),
        baseline_sha256: baseline_sha256.to_owned(),
        policy_sha256: policy_sha256.to_owned(),
        manifest_sha256: "ledger entry".to_owned(),
        units_total: 1,
        units: vec![0],
    }
}

fn tool_name() -> String {
    format!("poisongate {}", env!("CARGO_PKG_VERSION"))
}

/// `--ledger`: tests the batch with the window of accepted batches before it, then appends
/// it when the whole run passes.
#[allow(clippy::too_many_arguments)]
fn ledger_step(
    dir: &std::path::Path,
    window: usize,
    (baseline, baseline_sha256): (&poisongate::baseline::Baseline, &str),
    policy: &poisongate::policy::LoadedPolicy,
    inputs: &[source::InputMeta],
    part: poisongate::shard::Part,
    dtypes: &[(String, polars::prelude::DataType)],
    eval: &mut check::Evaluation,
) -> poisongate::Result<()> {
    use poisongate::ledger::{Entry, EntryInput, Ledger};
    let mut ledger = Ledger::open(dir)?;
    let schema = part.schema().map(<[_]>::to_vec).unwrap_or_default();
    let (past, notes) = ledger.window(
        window,
        baseline_sha256,
        &policy.sha256,
        &tool_name(),
        &schema,
    )?;
    eval.notes.extend(notes);
    let rows: u64 = inputs.iter().map(|m| m.rows).sum();
    if !past.is_empty() {
        let entries: Vec<Entry> = past.iter().map(|p| p.0.clone()).collect();
        let parts: Vec<poisongate::shard::Part> = past
            .into_iter()
            .map(|p| p.1)
            .chain(std::iter::once(part.clone()))
            .collect();
        let shown = std::path::Path::new("ledger window");
        let merged = poisongate::shard::Part::window(parts, "ledger window")
            .ok_or_else(|| poisongate::Error::Internal("empty ledger window".into()))?;
        let (summary, _, _, scans) = merged.complete(shown, baseline_sha256, &policy.sha256)?;
        let over = check::decide_kept(baseline, &policy.policy, dtypes, summary, scans)?;
        let total: u64 = rows + entries.iter().map(|e| e.rows).sum::<u64>();
        let listed: Vec<String> = entries.iter().map(Entry::describe).collect();
        let extra: Vec<poisongate::finding::Finding> = over
            .findings
            .into_iter()
            .filter(|f| f.severity == poisongate::finding::Severity::Deny)
            .map(|f| {
                let mut g = f.clone();
                g.code = check::remedy::LEDGER_WINDOW.to_owned();
                g.subject.value = Some(match &f.subject.value {
                    Some(v) => format!("{} {v}", f.code),
                    None => f.code.clone(),
                });
                g.rows.clear();
                // The window's rows are not listed or quarantined: nothing to drop now.
                g.evidence.remove("rows_quarantined");
                g.evidence.remove("rows_flagged");
                g.evidence
                    .insert("window_batches".into(), (entries.len() + 1) as f64);
                g.evidence.insert("window_rows".into(), total as f64);
                g.message = format!(
                    "over this batch and the {} accepted before it in {} ({total} rows: {}): {}",
                    entries.len(),
                    dir.display(),
                    listed.join(", "),
                    f.message
                );
                g
            })
            .collect();
        eval.notes.push(format!(
            "tested with the {} batches accepted before it in the ledger {} ({total} rows in the window)",
            entries.len(),
            dir.display()
        ));
        check::add_findings(&policy.policy, eval, extra);
    }
    let verdict = poisongate::report::Verdict::decide(&eval.findings, eval.columns_checked);
    if verdict == poisongate::report::Verdict::Pass {
        let entry = Entry {
            format: String::new(),
            seq: 0,
            prev: String::new(),
            tool: tool_name(),
            baseline_sha256: baseline_sha256.to_owned(),
            policy_sha256: policy.sha256.clone(),
            inputs: inputs
                .iter()
                .map(|m| EntryInput {
                    path: m.path.clone(),
                    sha256: m.sha256.clone(),
                    rows: m.rows,
                })
                .collect(),
            rows,
            part: String::new(),
            part_sha256: String::new(),
            digest: String::new(),
        };
        let entry = ledger.append(entry, &part)?;
        eval.notes.push(format!(
            "accepted into the ledger {} as batch #{} (entry digest {})",
            dir.display(),
            entry.seq,
            entry.digest
        ));
    }
    Ok(())
}
