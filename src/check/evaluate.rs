//! The decision over every candidate of a batch: the weighted Holm adjustment across all
//! tests, the decision rule, then the policy's levels and exceptions.

use super::*;

/// Decides from a batch summary (possibly merged from shards) and structural candidates.
///
/// # Errors
/// Never at present for valid inputs; kept fallible for summaries that do not fit the baseline.
pub fn evaluate(
    baseline: &Baseline,
    policy: &Policy,
    summary: &BatchSummary,
    mut candidates: Vec<Candidate>,
) -> Result<Evaluation> {
    let mut columns_checked = 0;
    let mut records = Vec::new();
    // Records of count tests without a candidate: (index, null, deny threshold).
    let mut unstated: Vec<(usize, crate::detect::CountNull, f64)> = Vec::new();
    for (index, col) in baseline.columns.iter().enumerate() {
        let Some(cs) = summary.columns.get(&col.name) else {
            continue;
        };
        columns_checked += 1;
        let first = candidates.len();
        let seed = drift::column_seed(baseline.seed, index);
        let is_label = baseline.label.as_deref() == Some(col.name.as_str());
        // A model output drifts under its own code and thresholds (`output-`).
        let output_policy = col.role.map(|role| {
            let mut p = policy.clone();
            match role {
                Role::Score => p.checks.drift_numeric = p.checks.output_score.clone(),
                Role::Prediction => {
                    p.checks.drift_categorical = p.checks.output_prediction.clone();
                }
            }
            (role, p)
        });
        let drift_policy = output_policy.as_ref().map_or(policy, |(_, p)| p);
        let output_code = |mut c: Candidate| {
            match output_policy.as_ref().map(|(r, _)| *r) {
                Some(Role::Score) => c.code = "output-score",
                Some(Role::Prediction) => c.code = "output-prediction",
                None => {}
            }
            c
        };
        match cs {
            ColumnSummary::Numeric(s) => {
                candidates.extend(schema::null_rate(col, s.nulls, s.count + s.nulls, policy));
                candidates.extend(schema::out_of_range(col, s, policy));
                if let Some(d) = policy.domains.get(&col.name) {
                    candidates.extend(schema::out_of_domain_numeric(col, s, d));
                }
                candidates.extend(drift::numeric(col, s, drift_policy, seed).map(output_code));
            }
            ColumnSummary::Categorical(s) => {
                candidates.extend(schema::null_rate(col, s.nulls, s.count + s.nulls, policy));
                candidates.extend(schema::unseen_categories(col, s, policy));
                if let Some(allowed) = policy
                    .domains
                    .get(&col.name)
                    .and_then(|d| d.categories.as_ref())
                {
                    candidates.extend(schema::out_of_domain_categorical(col, s, allowed));
                }
                candidates.extend(
                    drift::categorical(col, s, drift_policy, seed, is_label).map(output_code),
                );
            }
        }
        // The rate checks that found nothing to test still ran: record them as passed.
        let values = match cs {
            ColumnSummary::Numeric(s) => s.count,
            ColumnSummary::Categorical(s) => s.count,
        };
        let (rows, extra): (u64, &[(&str, &str)]) = match cs {
            ColumnSummary::Numeric(s) => (
                s.count + s.nulls,
                &[
                    ("schema-null-rate", "null share not above the baseline's"),
                    (
                        "schema-out-of-range",
                        "no value far outside the pinned range",
                    ),
                ],
            ),
            ColumnSummary::Categorical(s) => (
                s.count + s.nulls,
                &[
                    ("schema-null-rate", "null share not above the baseline's"),
                    (
                        "schema-unseen-category",
                        "no value outside the baseline's domain",
                    ),
                ],
            ),
        };
        for (code, why) in extra {
            // The far-outside test of a range stands apart from the just-outside count (which
            // never denies): it passed when only values just outside were seen.
            let same = |c: &Candidate| {
                c.code == *code
                    && (c.code != "schema-out-of-range"
                        || c.subject.value.as_deref() == Some("far outside"))
            };
            if !candidates[first..].iter().any(same) {
                // The count tests that found nothing above the baseline still state what they
                // could have seen, once the level is known (after every candidate is in).
                let null = match *code {
                    "schema-null-rate" => Some((
                        schema::null_rate_null(col, rows),
                        policy.checks.schema_null_rate.deny,
                    )),
                    "schema-unseen-category" => schema::unseen_null(col, values)
                        .map(|n| (n, policy.checks.schema_unseen_category.deny)),
                    "schema-out-of-range" => schema::out_of_range_null(col, values)
                        .map(|n| (n, policy.checks.schema_out_of_range.deny)),
                    _ => None,
                };
                if let Some((null, deny)) = null {
                    unstated.push((records.len(), null, deny));
                }
                records.push(record::TestRecord::clean(
                    code,
                    Subject::column(&col.name),
                    rows,
                    why,
                ));
            }
        }
    }
    let raw: Vec<f64> = candidates.iter().filter_map(|c| c.p_value).collect();
    let tests = raw.len();
    // Weighted Holm (Holm 1979, §5), each code's weight from the registry: column tests
    // weigh 1 and poisoning tests more, except that a detector emitting many candidates on
    // one batch (a test per segment, per value) shares a capped total among them, so
    // hundreds of segment tests on a wide batch cannot dilute the level of every other test.
    let mut per_code: BTreeMap<&str, usize> = BTreeMap::new();
    for c in candidates.iter().filter(|c| c.p_value.is_some()) {
        *per_code.entry(c.code).or_default() += 1;
    }
    let weights: Vec<f64> = candidates
        .iter()
        .filter(|c| c.p_value.is_some())
        .map(|c| crate::codes::weight(c.code).each(per_code[c.code]))
        .collect();
    let mut adjusted = weighted_holm(&raw, &weights).into_iter();
    let total_weight: f64 = weights.iter().sum();
    for (i, null, deny) in unstated {
        let rec = &mut records[i];
        let w = crate::codes::weight(&rec.code).each(1);
        let level = policy.gate.alpha * w / (total_weight + w);
        let statistic = match rec.code.as_str() {
            "schema-null-rate" => "increase",
            "schema-out-of-range" => "far_share",
            _ => "share",
        };
        rec.detectable = Some(record::Detectable::count(&null, statistic, deny, level));
    }
    // What each test could have seen at the level it faces alone (the first Holm step).
    let detectables: Vec<Option<record::Detectable>> = candidates
        .iter()
        .filter(|c| c.p_value.is_some())
        .zip(&weights)
        .map(|(c, w)| {
            let (null, e) = (c.power.as_ref()?, c.effects.first()?);
            let level = policy.gate.alpha * w / total_weight;
            if e.deny.is_infinite() && e.warn.is_finite() {
                // A test that only warns states what it would warn on.
                let mut d = record::Detectable::of(null, e.name, e.warn, level);
                d.raises = Some("warn".to_owned());
                return Some(d);
            }
            Some(record::Detectable::of(null, e.name, e.deny, level))
        })
        .collect();
    // What each test answers to `evidence-insufficient`: the count tests in the order the
    // report lists them, what each detector answers without a candidate (the trigger test at
    // the level it faces alone), then each candidate's own null, the first of each code.
    let mut reaches: crate::detect::reach::Reaches = candidates
        .iter()
        .filter(|c| c.p_value.is_some())
        .zip(detectables.iter())
        .filter_map(|(c, d)| {
            let d = d.as_ref()?;
            let reach = crate::detect::CountReach {
                null: c.power.as_ref()?.count()?,
                deny: c.effects.first()?.deny,
                level: d.level,
                detectable: d.value,
            };
            Some((c.code, Box::new(reach) as Box<dyn crate::detect::Reach>))
        })
        .collect();
    if let Some(profile) = baseline.poison.as_ref() {
        let level = |code: &'static str| {
            let w = crate::codes::weight(code).each(1);
            policy.gate.alpha * w / (total_weight + w)
        };
        reaches.extend(crate::poison::reaches(
            profile,
            summary.rows,
            baseline.rows,
            &policy.checks.rows,
            &level,
        ));
    }
    let mut own: crate::detect::reach::Reaches = Vec::new();
    for (c, d) in candidates
        .iter()
        .filter(|c| c.p_value.is_some())
        .zip(detectables.iter())
    {
        let (Some(crate::detect::PowerNull::Model(model)), Some(d), Some(e)) =
            (&c.power, d, c.effects.first())
        else {
            continue;
        };
        if own.iter().any(|(code, _)| *code == c.code) {
            continue;
        }
        if let Some(reach) = model.clone().reach(e.deny, d.level, d.value) {
            own.push((c.code, reach));
        }
    }
    reaches.extend(own);
    candidates.extend(evidence::insufficient(
        policy,
        baseline,
        summary.rows,
        &reaches,
    ));
    let mut detectable = detectables.into_iter();
    let mut decided = Vec::new();
    for c in candidates {
        let (adj, d) = if c.p_value.is_some() {
            (adjusted.next(), detectable.next().flatten())
        } else {
            (None, None)
        };
        let mut rec = record::TestRecord::of(&c, adj, None);
        rec.detectable = d;
        let f = decide(c, adj, policy.gate.alpha);
        rec.outcome = match f.as_ref().map(|f| f.severity) {
            Some(Severity::Deny) => record::TestOutcome::Deny,
            Some(Severity::Warn) => record::TestOutcome::Warn,
            None => record::TestOutcome::Pass,
        };
        records.push(rec.with_policy(policy));
        decided.extend(f);
    }
    record::sort(&mut records);
    let (mut findings, waived) = apply_policy(policy, decided);
    for f in &mut findings {
        f.tidy();
    }
    findings.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    let distributions = record::distributions(baseline, summary, &findings);
    Ok(Evaluation {
        findings,
        waived,
        columns_checked,
        tests,
        quarantine: Vec::new(),
        quarantined_rows: 0,
        notes: Vec::new(),
        row_scores: Vec::new(),
        distributions,
        records,
        total_weight,
    })
}

/// The index of the policy exception that waives `code` on `column`, if any.
pub(crate) fn exception_for(policy: &Policy, code: &str, column: Option<&str>) -> Option<usize> {
    policy
        .exceptions
        .iter()
        .position(|e| e.code == code && e.column.as_deref().is_none_or(|c| Some(c) == column))
}

/// Adds findings decided outside the batch's statistics (integrity of the inputs) to an
/// evaluation: the policy's level applies to them as to any other, and the order stays
/// deny first.
pub fn add_findings(policy: &Policy, eval: &mut Evaluation, extra: Vec<Finding>) {
    if extra.is_empty() {
        return;
    }
    let mut policy = policy.clone();
    policy
        .exceptions
        .retain(|e| extra.iter().any(|f| f.code == e.code && e.column.is_none()));
    // The evaluation saw none of these findings, so it called their exceptions unused.
    eval.findings.retain(|f| {
        f.code != "policy-unused-exception"
            || !policy.exceptions.iter().any(|e| {
                f.subject.value.as_deref() == Some(e.code.as_str()) && f.subject.column.is_none()
            })
    });
    let (findings, waived) = apply_policy(&policy, extra);
    eval.findings.extend(findings);
    eval.waived.extend(waived);
    eval.findings
        .sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    eval.waived
        .sort_by(|a, b| (&a.code, &a.subject).cmp(&(&b.code, &b.subject)));
}

/// Applies levels and exceptions; reports exceptions that matched nothing.
pub(crate) fn apply_policy(policy: &Policy, decided: Vec<Finding>) -> (Vec<Finding>, Vec<Waived>) {
    let mut used = vec![false; policy.exceptions.len()];
    let mut findings = Vec::new();
    let mut waived = Vec::new();
    for mut f in decided {
        let matched = exception_for(policy, &f.code, f.subject.column.as_deref());
        if let Some(i) = matched {
            used[i] = true;
            waived.push(Waived {
                code: f.code,
                subject: f.subject,
                severity: f.severity,
                reason: policy.exceptions[i].reason.clone(),
            });
            continue;
        }
        match policy.level(&f.code) {
            Level::Allow => waived.push(Waived {
                code: f.code,
                subject: f.subject,
                severity: f.severity,
                reason: "policy level allow".to_owned(),
            }),
            Level::Warn => {
                f.severity = f.severity.min(Severity::Warn);
                findings.push(f);
            }
            Level::Deny => findings.push(f),
        }
    }
    for (e, used) in policy.exceptions.iter().zip(used) {
        if !used {
            let mut subject = Subject::default();
            subject.column.clone_from(&e.column);
            subject.value = Some(e.code.clone());
            findings.push(Finding {
                code: "policy-unused-exception".to_owned(),
                severity: Severity::Warn,
                subject,
                statistic: "matches".to_owned(),
                value: 0.0,
                threshold: 1.0,
                p_value: None,
                n: 0,
                n_baseline: 0,
                message: format!(
                    "The exception for `{}`{} matched no finding; remove it or fix its code or column.",
                    e.code,
                    e.column.as_ref().map_or(String::new(), |c| format!(" on `{c}`"))
                ),
                evidence: BTreeMap::new(),
                rows: Vec::new(),
                tag: None,
            });
        }
    }
    waived.sort_by(|a, b| (&a.code, &a.subject).cmp(&(&b.code, &b.subject)));
    (findings, waived)
}
