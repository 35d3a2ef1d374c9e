//! The decision with the row-level detectors' candidates: their candidates beside the column
//! checks', a record for every row-level code that did not run (and why) or ran clean, and
//! the power of the value tests that had nothing to test; and the pinned features whose
//! values a batch lost, which the detectors that read every feature together leave alone.

use std::collections::{BTreeMap, HashSet};

use super::{Evaluation, Extras, evaluate, record, schema};
use crate::baseline::Baseline;
use crate::detect::Candidate;
use crate::error::Result;
use crate::finding::Subject;
use crate::policy::Policy;
use crate::source::Rows;
use crate::summary::{BatchSummary, ColumnSummary};

/// The decision with the row-level detectors' candidates.
pub(super) fn decide_rows(
    baseline: &Baseline,
    policy: &Policy,
    summary: &BatchSummary,
    mut candidates: Vec<Candidate>,
    scan: &crate::poison::Scan,
    rows: Rows<'_>,
    extras: Extras,
) -> Result<Evaluation> {
    let broken = broken_features(baseline, policy, summary);
    let mut outcome = crate::poison::detect(
        &baseline.view(),
        &policy.checks.rows,
        summary,
        scan,
        rows,
        &broken,
    )?;
    for (i, mut c) in std::mem::take(&mut outcome.candidates)
        .into_iter()
        .enumerate()
    {
        c.tag = Some(i);
        candidates.push(c);
    }
    let ran: HashSet<&str> = candidates.iter().map(|c| c.code).collect();
    let mut missing: Vec<record::TestRecord> = outcome
        .skipped
        .iter()
        .filter(|(code, _)| !ran.contains(code))
        .map(|(code, why)| record::TestRecord::skipped(code, Subject::default(), why))
        .collect();
    let skipped: HashSet<&str> = outcome.skipped.iter().map(|s| s.0).collect();
    missing.extend(
        crate::codes::row_codes()
            .filter(|code| !ran.contains(*code) && !skipped.contains(*code))
            .map(|code| {
                let why = outcome
                    .notes
                    .iter()
                    .find(|n| {
                        let phrase =
                            crate::codes::lookup(code).map_or("", |c| c.skip_phrase);
                        !phrase.is_empty() && n.contains(phrase)
                    })
                    .cloned();
                match why {
                    Some(why) => record::TestRecord::skipped(code, Subject::default(), &why),
                    // The baseline keeps no pair table when no two features depend on each
                    // other beyond noise: stitched rows are then indistinguishable.
                    None if code == "poison-stitched-rows"
                        && baseline.poison.as_ref().is_some_and(|p| p.stitched.is_none()) =>
                    {
                        record::TestRecord::skipped(
                            code,
                            Subject::default(),
                            "not pinned: no two features of the trusted data depend on each other beyond noise, so a row stitched from others' values looks like any other",
                        )
                    }
                    // The row-level tests need a few rows: below them none of them tests
                    // anything (`evidence-insufficient` says what that leaves unseen).
                    None if (scan.n as u64) < crate::poison::MIN_ROWS => {
                        record::TestRecord::skipped(
                            code,
                            Subject::default(),
                            &format!(
                                "too few rows: the row-level tests need at least {}",
                                crate::poison::MIN_ROWS
                            ),
                        )
                    }
                    None => record::TestRecord::clean(
                        code,
                        Subject::default(),
                        scan.n as u64,
                        "ran; no candidate to test (no value, segment or rate past its pre-screen)",
                    ),
                }
            }),
    );
    let mut eval = evaluate(baseline, policy, summary, candidates)?;
    // The trigger test without a candidate still states the rows a trigger would need.
    if let Some(profile) = baseline.poison.as_ref() {
        for rec in missing
            .iter_mut()
            .filter(|r| r.code == "poison-trigger" && r.outcome == record::TestOutcome::Pass)
        {
            let use_model = broken.is_empty();
            let null =
                crate::poison::trigger::power_null(profile, rec.n, baseline.rows, None, use_model);
            let w = crate::codes::weight(&rec.code).each(1);
            let level = policy.gate.alpha * w / (eval.total_weight + w);
            let deny = crate::poison::trigger::rule(&policy.checks.rows).deny;
            rec.detectable = null.map(|n| record::Detectable::of(&n, "share", deny, level));
        }
        // Likewise the point-mass test: a new value stamped on rows of the numeric feature
        // where a value the trusted rows do not list is most common.
        for rec in missing
            .iter_mut()
            .filter(|r| r.code == "poison-point-mass" && r.outcome == record::TestOutcome::Pass)
        {
            let w = crate::codes::weight(&rec.code).each(1);
            let level = policy.gate.alpha * w / (eval.total_weight + w);
            let deny = crate::poison::point_mass::rule(&policy.checks.rows).deny;
            rec.detectable =
                crate::poison::point_mass::unlisted_null(&baseline.view(), rec.n).map(|n| {
                    // A value is tested only past the pre-screen (three rows, a share of the
                    // batch, three times its trusted share): a floor on the excess share.
                    let floor = crate::poison::point_mass::prescreen_excess(n.base, rec.n);
                    record::Detectable::count(&n, "excess_share", deny.max(floor), level)
                });
        }
    }
    // The segment and class-conditional tests test every segment or class with enough rows of
    // the batch and the trusted data: with no candidate, none had enough at this size.
    for rec in missing
        .iter_mut()
        .filter(|r| r.outcome == record::TestOutcome::Pass)
    {
        let (statistic, why) = match rec.code.as_str() {
            "poison-segment-label-shift" => (
                "relabelled_share",
                format!(
                    "ran; no segment holds {} labelled rows of both the batch and the trusted data, so no segment could be tested at this size",
                    crate::poison::segment::MIN_ROWS
                ),
            ),
            "drift-class-conditional" => (
                "class_specific_distance",
                format!(
                    "ran; for no feature do two classes hold {} rows of both the batch and the trusted data, so no class could be compared at this size",
                    crate::poison::class_drift::MIN_ROWS
                ),
            ),
            _ => continue,
        };
        let w = crate::codes::weight(&rec.code).each(1);
        let level = policy.gate.alpha * w / (eval.total_weight + w);
        rec.reason = Some(why);
        rec.detectable = Some(record::Detectable::none(statistic, level));
    }
    eval.records.append(&mut missing);
    record::sort(&mut eval.records);
    eval.notes.extend(std::mem::take(&mut outcome.notes));
    let fired: BTreeMap<usize, usize> = eval
        .findings
        .iter()
        .enumerate()
        .filter_map(|(i, f)| f.tag.map(|t| (t, i)))
        .collect();
    let wanted: Vec<(usize, &crate::poison::RowSelector)> = fired
        .keys()
        .filter_map(|&c| outcome.selectors.get(c)?.as_ref().map(|s| (c, s)))
        .collect();
    let second = crate::poison::second_pass(
        &baseline.view(),
        scan,
        &wanted,
        extras.row_scores,
        extras.quarantine || extras.row_scores,
        baseline.id.as_deref(),
        rows,
    )?;
    for (&cand, &all) in &second.partial {
        if let Some(&i) = fired.get(&cand) {
            let f = &eval.findings[i];
            eval.notes.push(format!(
                "`{}` flags {all} rows; the row pass kept the {} most suspicious, which the report and the quarantine count use: write the quarantine with --quarantine to list every row",
                f.code,
                crate::detect::TOP_ROWS
            ));
        }
    }
    let materialize = extras.quarantine || extras.row_scores;
    (eval.quarantined_rows, eval.quarantine) = crate::poison::quarantine(
        &baseline.view(),
        &outcome,
        &fired,
        &mut eval.findings,
        &second,
        materialize,
    );
    if extras.row_scores {
        let base = second.base.as_deref().unwrap_or_default();
        eval.row_scores = crate::poison::row_scores(base, &eval.quarantine);
    }
    if baseline.id.is_some() {
        // Read in the second pass with the rows they belong to.
        let ids = &second.ids;
        for q in &mut eval.quarantine {
            q.id = ids.get(&q.row).cloned();
        }
        for f in &mut eval.findings {
            for r in &mut f.rows {
                r.id = ids.get(&r.row).cloned();
            }
        }
    }
    Ok(eval)
}

/// The pinned features whose values this batch lost: the `schema-null-rate` test's increase
/// reaches its deny threshold (whatever the policy's level for it: the values are gone
/// either way).
fn broken_features(
    baseline: &Baseline,
    policy: &Policy,
    summary: &BatchSummary,
) -> Vec<crate::poison::Broken> {
    let Some(profile) = &baseline.poison else {
        return Vec::new();
    };
    profile
        .features
        .iter()
        .filter_map(|name| {
            let col = baseline.column(name)?;
            let (nulls, count) = match summary.columns.get(name)? {
                ColumnSummary::Numeric(s) => (s.nulls, s.count),
                ColumnSummary::Categorical(s) => (s.nulls, s.count),
            };
            let c = schema::null_rate(col, nulls, count + nulls, policy)?;
            let e = c.effects.first()?;
            (e.value >= e.deny).then(|| crate::poison::Broken {
                column: name.clone(),
                why: format!(
                    "its null share rose by {} points, schema-null-rate",
                    crate::finding::num(100.0 * e.value)
                ),
            })
        })
        .collect()
}
