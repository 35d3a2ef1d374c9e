//! `schema-` checks: columns present and typed as pinned, nulls, ranges and categories.
//!
//! Rate checks (nulls, out-of-range, unseen categories) use a one-sided exact binomial test
//! against the baseline's own rate (see [`crate::stats::proportion`]) for "beyond noise" and
//! the share itself as the effect size.

use std::collections::BTreeMap;

use polars::prelude::DataType;

use super::candidate::{Candidate, Effect};
use crate::baseline::{Baseline, ColumnProfile};
use crate::finding::{Severity, Subject, num};
use crate::policy::Policy;
use crate::stats::proportion::{binomial_upper_tail, smoothed_rate};
use crate::summary::{CategoricalSummary, Kind, NumericSummary, kind_of};

/// Missing, extra and retyped columns. Returns the columns that can be summarised.
pub fn structure(
    baseline: &Baseline,
    schema: &[(String, DataType)],
    out: &mut Vec<Candidate>,
) -> Vec<String> {
    let mut usable = Vec::new();
    for col in &baseline.columns {
        let Some((_, dtype)) = schema.iter().find(|(n, _)| n == &col.name) else {
            out.push(Candidate::structural(
                "schema-missing-column",
                Subject::column(&col.name),
                Severity::Deny,
                format!(
                    "column `{}` ({}) pinned in the baseline is missing from the batch",
                    col.name, col.dtype
                ),
            ));
            continue;
        };
        // The label and prediction columns are class columns whatever their type.
        let is_label = baseline.label.as_deref() == Some(col.name.as_str())
            || col.role == Some(crate::baseline::Role::Prediction);
        let kind = if is_label {
            Kind::Categorical
        } else {
            kind_of(dtype)
        };
        let dtype_name = dtype.to_string();
        if kind != col.kind {
            out.push(Candidate::structural(
                "schema-dtype-changed",
                Subject::column(&col.name),
                Severity::Deny,
                format!(
                    "column `{}` changed from {} ({:?}) to {} ({:?})",
                    col.name, col.dtype, col.kind, dtype_name, kind
                ),
            ));
            continue;
        }
        if dtype_name != col.dtype && !is_label {
            out.push(Candidate::structural(
                "schema-dtype-changed",
                Subject::column(&col.name),
                Severity::Warn,
                format!(
                    "column `{}` changed from {} to {} (same kind)",
                    col.name, col.dtype, dtype_name
                ),
            ));
        }
        if kind != Kind::Unsupported {
            usable.push(col.name.clone());
        }
    }
    for (name, dtype) in schema {
        let known = baseline.column(name).is_some()
            || baseline.id.as_deref() == Some(name.as_str())
            || baseline.ignored.contains(name);
        if !known {
            out.push(Candidate::structural(
                "schema-extra-column",
                Subject::column(name),
                Severity::Deny,
                format!("column `{name}` ({dtype}) is not in the baseline"),
            ));
        }
    }
    usable
}

fn rate_evidence(share: f64, base: f64, k: u64, n: u64) -> BTreeMap<String, f64> {
    BTreeMap::from([
        ("share".to_owned(), share),
        ("baseline_share".to_owned(), base),
        ("rows_flagged".to_owned(), k as f64),
        ("rows".to_owned(), n as f64),
    ])
}

/// Null share above the baseline's.
pub fn null_rate(col: &ColumnProfile, nulls: u64, rows: u64, policy: &Policy) -> Option<Candidate> {
    if rows == 0 {
        return None;
    }
    let m = col.count + col.nulls;
    let (q, p) = (nulls as f64 / rows as f64, col.nulls as f64 / m as f64);
    if q <= p {
        return None;
    }
    let rule = &policy.checks.schema_null_rate;
    let p_value = binomial_upper_tail(nulls, rows, smoothed_rate(col.nulls, m));
    let mut evidence = rate_evidence(q, p, nulls, rows);
    evidence.insert("increase".into(), q - p);
    Some(Candidate {
        code: "schema-null-rate",
        subject: Subject::column(&col.name),
        p_value: Some(p_value),
        effects: vec![Effect {
            name: "increase",
            value: q - p,
            warn: rule.warn,
            deny: rule.deny,
        }],
        fixed: None,
        n: rows,
        n_baseline: m,
        describe: format!(
            "`{}` nulls rose from {:.2}% to {:.2}% of rows",
            col.name,
            100.0 * p,
            100.0 * q
        ),
        evidence,
        tag: None,
    })
}

/// Values outside the pinned `[min, max]`.
pub fn out_of_range(col: &ColumnProfile, s: &NumericSummary, policy: &Policy) -> Option<Candidate> {
    let k = s.below_range + s.above_range;
    let profile = col.numeric.as_ref()?;
    if k == 0 || s.count == 0 || col.count == 0 {
        return None;
    }
    let share = k as f64 / s.count as f64;
    // For exchangeable draws, a new value exceeds the maximum (or falls below the minimum) of
    // m trusted values with probability 1/(m+1) each.
    let p0 = 2.0 / (col.count as f64 + 1.0);
    let rule = &policy.checks.schema_out_of_range;
    let mut evidence = rate_evidence(share, p0, k, s.count);
    evidence.insert("below_min".into(), s.below_range as f64);
    evidence.insert("above_max".into(), s.above_range as f64);
    evidence.insert("batch_min".into(), s.min);
    evidence.insert("batch_max".into(), s.max);
    evidence.insert("baseline_min".into(), profile.min);
    evidence.insert("baseline_max".into(), profile.max);
    Some(Candidate {
        code: "schema-out-of-range",
        subject: Subject::column(&col.name),
        p_value: Some(binomial_upper_tail(k, s.count, p0)),
        effects: vec![Effect {
            name: "share",
            value: share,
            warn: rule.warn,
            deny: rule.deny,
        }],
        fixed: None,
        n: s.count,
        n_baseline: col.count,
        describe: format!(
            "{} values of `{}` ({:.2}%) fall outside the pinned range [{}, {}] (batch range [{}, {}])",
            k,
            col.name,
            100.0 * share,
            num(profile.min),
            num(profile.max),
            num(s.min),
            num(s.max)
        ),
        evidence,
        tag: None,
    })
}

/// Category values the baseline never saw.
pub fn unseen_categories(
    col: &ColumnProfile,
    s: &CategoricalSummary,
    policy: &Policy,
) -> Option<Candidate> {
    let profile = col.categorical.as_ref()?;
    let domain: std::collections::HashSet<&str> =
        profile.domain.iter().map(String::as_str).collect();
    let mut unseen: Vec<(&String, u64)> = s
        .counts
        .iter()
        .filter(|(v, _)| !domain.contains(v.as_str()))
        .map(|(v, &c)| (v, c))
        .collect();
    let k = unseen.iter().map(|(_, c)| c).sum::<u64>() + s.overflow;
    if k == 0 || s.count == 0 {
        return None;
    }
    unseen.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    let share = k as f64 / s.count as f64;
    // Rows the baseline holds outside its stored domain, plus the Good–Turing estimate of the
    // mass of never-seen values, N1 / m (Good 1953, Biometrika 40(3/4)).
    let outside = col.count - profile.domain_rows;
    let p0 = smoothed_rate(outside + profile.singletons, col.count);
    let rule = &policy.checks.schema_unseen_category;
    let mut evidence = rate_evidence(share, p0, k, s.count);
    evidence.insert(
        "distinct_unseen".into(),
        unseen.len() as f64 + if s.overflow > 0 { 1.0 } else { 0.0 },
    );
    let names: Vec<String> = unseen
        .iter()
        .take(5)
        .map(|(v, c)| format!("\"{}\" ({c})", v.escape_debug()))
        .collect();
    let mut subject = Subject::column(&col.name);
    subject.value = unseen.first().map(|(v, _)| (*v).clone());
    Some(Candidate {
        code: "schema-unseen-category",
        subject,
        p_value: Some(binomial_upper_tail(k, s.count, p0)),
        effects: vec![Effect {
            name: "share",
            value: share,
            warn: rule.warn,
            deny: rule.deny,
        }],
        fixed: None,
        n: s.count,
        n_baseline: col.count,
        describe: format!(
            "{:.2}% of `{}` rows hold values never seen in the baseline: {}",
            100.0 * share,
            col.name,
            names.join(", ")
        ),
        evidence,
        tag: None,
    })
}
