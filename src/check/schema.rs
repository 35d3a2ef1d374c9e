//! `schema-` checks: columns present and typed as pinned, nulls, ranges and categories.
//!
//! Rate checks (nulls, out-of-range, unseen categories) use a one-sided exact binomial test
//! against the baseline's own rate (see [`crate::stats::proportion`]) for "beyond noise" and
//! the share itself as the effect size.

use std::collections::BTreeMap;

use polars::prelude::DataType;

use crate::baseline::{Baseline, ColumnProfile};
use crate::detect::{Candidate, Effect};
use crate::finding::{Severity, Subject, num};
use crate::policy::Policy;
use crate::stats::proportion::{
    beta_binomial_upper_tail, beta_binomial_upper_tail_ab, binomial_upper_tail,
};
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

/// The null of the null-rate test on `rows` rows: the trusted null count of the column's
/// rows, as its p-value uses it.
#[must_use]
pub fn null_rate_null(col: &ColumnProfile, rows: u64) -> crate::detect::CountNull {
    let m = col.count + col.nulls;
    let p = col.nulls as f64 / m.max(1) as f64;
    crate::detect::CountNull::seen(rows, p, col.nulls, m)
}

/// The null of the unseen-category test on `rows` rows: the trusted rows outside the stored
/// domain plus the Good–Turing estimate of the never-seen mass, N1 / m (Good 1953,
/// Biometrika 40(3/4)). `None` for a column without a categorical profile.
#[must_use]
pub fn unseen_null(col: &ColumnProfile, rows: u64) -> Option<crate::detect::CountNull> {
    let profile = col.categorical.as_ref()?;
    let x0 = (col.count - profile.domain_rows + profile.singletons).min(col.count);
    Some(crate::detect::CountNull::seen(rows, 0.0, x0, col.count))
}

/// The null of the far-outside count of `schema-out-of-range` on `values` values, for its
/// detectable effect: of fresh values, the count past either extreme of `m` exchangeable
/// trusted ones is about BetaBinomial(n, 2, m - 1), the larger (binding) of the test's two
/// p-values (a far value is past the extremes; the tail model's rate is below `2 / (m + 1)`).
/// `None` for a column without a numeric profile.
#[must_use]
pub fn out_of_range_null(col: &ColumnProfile, values: u64) -> Option<crate::detect::CountNull> {
    col.numeric.as_ref()?;
    let mf = col.count as f64;
    Some(crate::detect::CountNull {
        trials: values,
        base: 0.0,
        alpha: 2.0,
        beta: (mf - 1.0).max(1.0),
        selection: 1.0,
    })
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
    // The trusted null rate was estimated from m rows: predictive test (see `proportion`).
    let p_value = beta_binomial_upper_tail(nulls, rows, col.nulls, m);
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
        power: Some(null_rate_null(col, rows).into()),
    })
}

/// Shape of the generalised Pareto tail assumed beyond the observed extremes (see
/// [`tolerance`]): heavy enough for lognormal and Student-t tails.
const TAIL_SHAPE: f64 = 0.5;

pub use crate::baseline::tolerance::{Tolerance, tolerance};

/// Values outside the pinned `[min, max]`: far outside (may deny) and just past the extremes
/// (warns at most), as two candidates. See [`tolerance`] for the two null rates.
pub fn out_of_range(col: &ColumnProfile, s: &NumericSummary, policy: &Policy) -> Vec<Candidate> {
    let mut out = Vec::new();
    let Some(profile) = col.numeric.as_ref() else {
        return out;
    };
    let k = s.below_range + s.above_range;
    if k == 0 || s.count == 0 || col.count == 0 {
        return out;
    }
    let rule = &policy.checks.schema_out_of_range;
    let tol = tolerance(profile);
    let m = col.count;
    let mf = m as f64;
    let far = s.far_below + s.far_above;
    let base_evidence = |share: f64, p0: f64, k: u64| {
        let mut e = rate_evidence(share, p0, k, s.count);
        e.insert("below_min".into(), s.below_range as f64);
        e.insert("above_max".into(), s.above_range as f64);
        e.insert("far_below".into(), s.far_below as f64);
        e.insert("far_above".into(), s.far_above as f64);
        e.insert("batch_min".into(), s.min);
        e.insert("batch_max".into(), s.max);
        e.insert("baseline_min".into(), profile.min);
        e.insert("baseline_max".into(), profile.max);
        e.insert("tolerance_min".into(), tol.far_min);
        e.insert("tolerance_max".into(), tol.far_max);
        e
    };
    if far > 0 {
        // P(X > max + t) = P(X > max) (1 + ξ t / σ)^(-1/ξ) with P(X > max) = 1 / (m + 1),
        // a generalised Pareto tail of shape ξ = 1/2 (see `tolerance`).
        let gpd = |t: f64, sigma: f64| (1.0 + TAIL_SHAPE * t / sigma).powf(-1.0 / TAIL_SHAPE);
        let p0 = (gpd(tol.margin_lo, tol.scale_lo) + gpd(tol.margin_hi, tol.scale_hi)) / (mf + 1.0);
        let share = far as f64 / s.count as f64;
        out.push(Candidate {
            code: "schema-out-of-range",
            subject: Subject {
                value: Some("far outside".to_owned()),
                ..Subject::column(&col.name)
            },
            // Intersection-union with the distribution-free bound: a far value is also past
            // the extreme, and the count past the extremes of m exchangeable trusted values
            // is about BetaBinomial(n, 2, m - 1) whatever the tail. On a small baseline the
            // observed extremes are weak evidence, and no tail model fitted on a handful of
            // trusted rows may overrule that (Berger 1982: the p-value is the larger one).
            p_value: Some(binomial_upper_tail(far, s.count, p0).max(
                beta_binomial_upper_tail_ab(far, s.count, 2.0, (mf - 1.0).max(1.0)),
            )),
            effects: vec![Effect {
                name: "far_share",
                value: share,
                warn: rule.warn,
                deny: rule.deny,
            }],
            fixed: None,
            n: s.count,
            n_baseline: m,
            describe: format!(
                "{far} values of `{}` ({:.2}%) fall far outside the pinned range [{}, {}]: beyond [{}, {}], the range widened by twice the tail's scale (batch range [{}, {}])",
                col.name,
                100.0 * share,
                num(profile.min),
                num(profile.max),
                num(tol.far_min),
                num(tol.far_max),
                num(s.min),
                num(s.max)
            ),
            evidence: base_evidence(share, p0, far),
            tag: None,
            power: out_of_range_null(col, s.count).map(Into::into),
        });
    }
    let near = k - far;
    if near > 0 {
        // Of n fresh values, the count beyond either extreme of m trusted ones is about
        // BetaBinomial(n, 2, m - 1) (mean 2n / (m + 1)); see `tolerance`.
        let p_value = beta_binomial_upper_tail_ab(near, s.count, 2.0, (mf - 1.0).max(1.0));
        let share = near as f64 / s.count as f64;
        out.push(Candidate {
            code: "schema-out-of-range",
            subject: Subject {
                value: Some("just outside".to_owned()),
                ..Subject::column(&col.name)
            },
            p_value: Some(p_value),
            effects: vec![Effect {
                name: "share",
                value: share,
                warn: rule.warn.max(4.0 / (mf + 1.0)),
                // Values a hair past the extremes of m trusted rows are what fresh data does;
                // they never block on their own (values far outside do).
                deny: f64::INFINITY,
            }],
            fixed: None,
            n: s.count,
            n_baseline: m,
            describe: format!(
                "{near} values of `{}` ({:.2}%) fall just outside the pinned range [{}, {}], within the tolerance band [{}, {}]; fresh data from {m} trusted rows lands there about {}% of the time",
                col.name,
                100.0 * share,
                num(profile.min),
                num(profile.max),
                num(tol.far_min),
                num(tol.far_max),
                num(200.0 / (mf + 1.0))
            ),
            evidence: base_evidence(share, 2.0 / (mf + 1.0), near),
            tag: None,
            power: out_of_range_null(col, s.count).map(Into::into),
        });
    }
    out
}

/// Numeric values outside the policy's hard domain of the column (counted by the summary).
pub fn out_of_domain_numeric(
    col: &ColumnProfile,
    s: &NumericSummary,
    domain: &crate::policy::Domain,
) -> Option<Candidate> {
    if s.outside_domain == 0 {
        return None;
    }
    let lo = domain.min.map_or("-inf".to_owned(), num);
    let hi = domain.max.map_or("inf".to_owned(), num);
    let mut c = Candidate::structural(
        "schema-out-of-domain",
        Subject::column(&col.name),
        Severity::Deny,
        format!(
            "{} values of `{}` fall outside its hard domain [{lo}, {hi}] (batch range [{}, {}])",
            s.outside_domain,
            col.name,
            num(s.min),
            num(s.max)
        ),
    );
    c.n = s.count;
    c.evidence
        .insert("rows_flagged".into(), s.outside_domain as f64);
    c.evidence.insert("rows".into(), s.count as f64);
    Some(c)
}

/// Categorical values outside the policy's allowed categories. Values past the summary's
/// distinct cap are counted as outside (they are unseen, and cannot be told apart).
pub fn out_of_domain_categorical(
    col: &ColumnProfile,
    s: &CategoricalSummary,
    allowed: &[String],
) -> Option<Candidate> {
    let allowed: std::collections::HashSet<&str> = allowed.iter().map(String::as_str).collect();
    let mut bad: Vec<(&String, u64)> = s
        .values()
        .filter(|(v, _)| !allowed.contains(v.as_str()))
        .collect();
    let k = bad.iter().map(|(_, c)| c).sum::<u64>() + s.overflow;
    if k == 0 {
        return None;
    }
    bad.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    let names: Vec<String> = bad
        .iter()
        .take(5)
        .map(|(v, c)| format!("\"{}\" ({c})", v.escape_debug()))
        .collect();
    let mut subject = Subject::column(&col.name);
    subject.value = bad.first().map(|(v, _)| (*v).clone());
    let mut c = Candidate::structural(
        "schema-out-of-domain",
        subject,
        Severity::Deny,
        format!(
            "{k} rows of `{}` hold values outside its allowed categories: {}{}",
            col.name,
            names.join(", "),
            if s.overflow > 0 {
                format!(" and {} rows of further unseen values", s.overflow)
            } else {
                String::new()
            }
        ),
    );
    c.n = s.count;
    c.evidence.insert("rows_flagged".into(), k as f64);
    c.evidence.insert("rows".into(), s.count as f64);
    Some(c)
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
        .values()
        .filter(|(v, _)| !domain.contains(v.as_str()))
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
    let x0 = (outside + profile.singletons).min(col.count);
    let p0 = (x0 as f64 + 0.5) / (col.count as f64 + 1.0);
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
        // Predictive test: the unseen mass was itself estimated from the trusted rows.
        p_value: Some(beta_binomial_upper_tail(k, s.count, x0, col.count)),
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
        power: unseen_null(col, s.count).map(Into::into),
    })
}
