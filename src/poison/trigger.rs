//! `poison-trigger`: a value (or a pair of values on two features), rare or absent in the
//! trusted data, over-represented in the batch and concentrated on one label.
//!
//! **What it detects.** Backdoor poisoning: the attacker stamps a trigger on a few percent of
//! rows and sets their label to a target class, so the model learns "trigger ⇒ target" (Gu,
//! Dolan-Gavitt & Garg 2017, BadNets; Chen et al. 2017 for tabular/physical triggers). Also
//! the clean-label variant, where the trigger is stamped only on rows already of the target
//! class and no label is changed (Turner, Tsipras & Madry 2019): the value is still new, and
//! its rows still all carry one label.
//!
//! **How.** Candidates are categorical values whose batch share is at least three times their
//! trusted share (unseen values count as half a row of the trusted data) and exact numeric
//! values found by [`super::point_mass`]. For each, the labels of its rows are counted; the
//! most common class must hold at least `concentration` of them and be significantly above
//! what the trusted data predicts for those rows (the value's own trusted class mix when it
//! was among the pinned top values or its numeric bin held 30 rows, the class prior
//! otherwise). Both tests must pass (intersection–union test, Berger 1982: the p-value is the
//! larger of the two). Candidates on two features whose rows coincide (80% overlap) are
//! reported as one pair trigger. The effect is the share of batch rows carrying the trigger.
//!
//! **False positives.** A new category that is genuinely predictive (a new product only
//! sold to one segment). The finding names the feature, the value, the label and the rows;
//! confirm where the value comes from before re-pinning.

use std::collections::BTreeMap;

use foldhash::HashMap;

use super::point_mass::{HeavyValue, MIN_RATIO, MIN_SHARE, num_exact};
use super::{PoisonProfile, RowSelector, Scan};
use crate::detect::reach::{WINDOW, first_sufficient};
use crate::detect::registry::{CodeInfo, Family, Weight};
use crate::detect::rules::{Level, RowRule, RowRules, TriggerRule};
use crate::detect::{Candidate, Detectable, Effect, PowerModel, PowerNull, Reach};
use crate::error::{Error, Result};
use crate::finding::{Subject, num, tidy};
use crate::poison::BaselineView;
use crate::poison::RowCode;
use crate::rows::NO_CLASS;
use crate::stats::binned::bin_index;
use crate::stats::proportion::{beta_binomial_upper_tail, binomial_upper_tail};
use crate::summary::{BatchSummary, ColumnSummary, for_each_str_chunk};
use polars::prelude::DataFrame;

/// `poison-trigger`, as the registry describes it, with its policy defaults.
pub const CODE: RowCode = RowCode {
    info: CodeInfo {
        code: "poison-trigger",
        family: Family::Row,
        weight: Weight::Shared,
        joint: false,
        doc: "docs/detectors.md#poison-trigger",
        skip_phrase: "the segment, trigger and class-conditional detectors",
        summary: "A value (or pair of values), rare or absent in the trusted data, is over-represented in the batch and its rows carry almost only one label.",
        why: "This is the shape of a backdoor: the model learns 'trigger means target class' and an attacker can later flip any prediction by stamping the trigger.",
        respond: "Treat as an incident: find where the rows with the named value came from, quarantine them (the quarantine lists them), and do not train on the batch until explained.",
    },
    rule: RowRule::Trigger(RULE),
};

/// `[checks.poison-trigger]` when the policy leaves it out. Thresholds on the share of batch rows carrying a trigger, and how concentrated on one
/// label its rows must be.
pub const RULE: TriggerRule = TriggerRule {
    level: Level::Deny,
    // A trigger's budget at the earlier 0.5 % was its threshold (a 2,000-row batch passed
    // with 8 trigger rows, raising the attack success of a model trained on it by 4-14
    // points; benches/eval/budget.py); no clean or mildly drifted batch of the evaluation
    // reached 0.2 %.
    warn: 0.001,
    deny: 0.002,
    concentration: 0.9,
};

/// The policy's `[checks.poison-trigger]`.
#[must_use]
pub fn rule(rules: &RowRules) -> &TriggerRule {
    rules.trigger(CODE.info.code, &RULE)
}

/// A candidate value with its rows and the trusted class mix expected for them.
struct Value {
    column: String,
    text: String,
    rows: Vec<u32>,
    /// The rows' labels, read with them.
    labels: Vec<u16>,
    over_p: f64,
    trusted_share: f64,
    expect: Vec<f64>,
}

/// A value's rows in batch order and their labels.
type RowsLabels = (Vec<u32>, Vec<u16>);

/// A column's candidate values: value to (trusted share, top-value code, trusted count).
type Wanted = BTreeMap<String, (f64, Option<usize>, u64)>;

/// The rows of the categorical values over-represented against the trusted data, gathered in
/// the value detectors' one read of the batch (beside the point-mass sketch).
#[derive(Debug, Default)]
pub struct CategoricalRows {
    /// Per column with candidates: (feature index, name, trusted rows, wanted values).
    columns: Vec<(usize, String, u64, Wanted)>,
    /// Per such column, each wanted value's rows and labels.
    rows: Vec<BTreeMap<String, RowsLabels>>,
}

impl CategoricalRows {
    /// The candidate values of every categorical feature, from the first pass's counts: at
    /// least [`MIN_SHARE`] of the batch's `n` rows and [`MIN_RATIO`] times their trusted share.
    #[must_use]
    pub fn new(
        baseline: &BaselineView<'_>,
        profile: &PoisonProfile,
        summary: &BatchSummary,
        n: f64,
    ) -> Self {
        let mut columns: Vec<(usize, String, u64, Wanted)> = Vec::new();
        if profile.classes < 2 || profile.tables.is_empty() {
            return Self::default();
        }
        for (j, name) in profile.features.iter().enumerate() {
            let (Some(col), Some(ColumnSummary::Categorical(s))) =
                (baseline.column(name), summary.columns.get(name))
            else {
                continue;
            };
            let Some(cp) = &col.categorical else {
                continue;
            };
            let trusted = col.count.max(1) as f64;
            let min_top = cp.top.last().map_or(0, |t| t.count);
            let in_top: HashMap<&str, (usize, u64)> = cp
                .top
                .iter()
                .enumerate()
                .map(|(i, t)| (t.value.as_str(), (i, t.count)))
                .collect();
            let mut wanted: Wanted = BTreeMap::new();
            for (value, k) in s.values() {
                let kf = k as f64;
                if kf < 3.0 || kf / n < MIN_SHARE {
                    continue;
                }
                let (tc, code) = match in_top.get(value.as_str()) {
                    Some(&(code, c)) => (c, Some(code)),
                    None if cp.domain_complete && cp.domain.binary_search(value).is_err() => {
                        (0, None)
                    }
                    None => (min_top, None),
                };
                let share = (tc as f64 + 0.5) / (trusted + 1.0);
                if kf / n >= MIN_RATIO * share {
                    wanted.insert(value.clone(), (share, code, tc));
                }
            }
            if !wanted.is_empty() {
                columns.push((j, name.clone(), col.count, wanted));
            }
        }
        let rows = vec![BTreeMap::new(); columns.len()];
        Self { columns, rows }
    }

    /// The columns the read must bring (the label comes with them).
    pub fn columns(&self) -> impl Iterator<Item = &String> {
        self.columns.iter().map(|(_, n, _, _)| n)
    }

    /// Whether any value is wanted.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.columns.is_empty()
    }

    /// Collects the wanted values' rows of one block whose first row is batch row `offset`;
    /// `labels` are the block's labels.
    ///
    /// # Errors
    /// A wanted column missing from the block or not readable as text.
    ///
    /// The rows of a value are also pushed to `kept` while the value has at most
    /// [`MAX_MODEL_ROWS`] rows: the rows whose reference-model chances the test may use.
    pub fn update(
        &mut self,
        df: &DataFrame,
        labels: &[u16],
        offset: u32,
        kept: &mut Vec<u32>,
    ) -> Result<()> {
        for ((_, name, _, wanted), rows) in self.columns.iter().zip(self.rows.iter_mut()) {
            let series = df
                .column(name)
                .map_err(|e| Error::Internal(format!("column `{name}`: {e}")))?
                .as_materialized_series();
            let mut at = 0usize;
            for_each_str_chunk(series, |arr| {
                for (i, v) in arr.iter().enumerate() {
                    if let Some(v) = v
                        && wanted.contains_key(v)
                    {
                        let row = offset + (at + i) as u32;
                        let y = labels[at + i];
                        let held = match rows.get_mut(v) {
                            Some(r) => {
                                r.0.push(row);
                                r.1.push(y);
                                r.0.len()
                            }
                            None => {
                                rows.insert(v.to_owned(), (vec![row], vec![y]));
                                1
                            }
                        };
                        if held <= MAX_MODEL_ROWS {
                            kept.push(row);
                        }
                    }
                }
                at += arr.len();
            })?;
        }
        Ok(())
    }

    /// The candidate values with their rows, labels and over-representation p-values.
    fn finish(self, profile: &PoisonProfile, n: f64, prior: &[f64]) -> Vec<Value> {
        let k = profile.classes;
        let mut out = Vec::new();
        for ((j, name, count, wanted), mut rows) in self.columns.into_iter().zip(self.rows) {
            for (value, (share, code, tc)) in &wanted {
                let (r, labels) = rows.remove(value.as_str()).unwrap_or_default();
                let expect = match code {
                    Some(code) if !profile.tables.is_empty() => {
                        smooth(&profile.tables[j][code * k..(code + 1) * k], prior)
                    }
                    _ => prior.to_vec(),
                };
                out.push(Value {
                    column: name.clone(),
                    text: value.clone(),
                    // The value's trusted count came from `count` rows: predictive test.
                    over_p: beta_binomial_upper_tail(r.len() as u64, n as u64, *tc, count),
                    rows: r,
                    labels,
                    trusted_share: *share,
                    expect,
                });
            }
        }
        out
    }
}

/// A concentrated candidate: (value, class, rows of the class, labelled rows, p-value).
type Hit = (Value, usize, u64, u64, f64);

/// Most rows for the exact Poisson-binomial tail of [`model_chances`]; larger candidates
/// have power enough from the class mix alone.
pub const MAX_MODEL_ROWS: usize = 2000;

/// Per labelled row of a candidate, the reference model's probability of class `c`: exact
/// for rows labelled `c` and for two classes, the remaining mass spread evenly otherwise.
/// `facts` holds, per row (sorted), its label, the model's probability of it and whether the
/// row lies inside the trusted support (read by [`super::values`]).
fn model_chances(facts: &RowFacts, rows: &[u32], c: usize, k: usize) -> Option<Vec<f64>> {
    if rows.len() > MAX_MODEL_ROWS {
        return None;
    }
    let mut out = Vec::with_capacity(rows.len());
    for &r in rows {
        let &(y, p, inside) = facts.get(&r)?;
        let p = f64::from(p);
        if y == NO_CLASS || !inside {
            continue;
        }
        if p.is_nan() {
            return None;
        }
        let q = if usize::from(y) == c {
            p
        } else {
            (1.0 - p) / (k as f64 - 1.0)
        };
        out.push(q.clamp(1e-6, 1.0));
    }
    Some(out)
}

/// Per row: label, the model's probability of it, inside the trusted support.
pub type RowFacts = HashMap<u32, (u16, f32, bool)>;

/// `P(X >= k)` for a sum of independent Bernoulli(`p_i`) (the Poisson-binomial
/// distribution), by the exact recursion over rows (Chen & Liu 1997, *Statistica Sinica*
/// 7(4)).
#[must_use]
pub fn poisson_binomial_upper_tail(k: u64, p: &[f64]) -> f64 {
    let k = k as usize;
    if k == 0 {
        return 1.0;
    }
    if k > p.len() {
        return 0.0;
    }
    // dist[j] = P(j successes so far), capped at k (the tail is lumped into dist[k]).
    let mut dist = vec![0f64; k + 1];
    dist[0] = 1.0;
    for &pi in p {
        for j in (0..=k).rev() {
            let stay = if j == k {
                dist[j]
            } else {
                dist[j] * (1.0 - pi)
            };
            let from = if j > 0 { dist[j - 1] * pi } else { 0.0 };
            dist[j] = stay + from;
        }
    }
    dist[k].clamp(0.0, 1.0)
}

/// A trusted class mix with half a row of prior per class, or the prior when too thin.
fn smooth(counts: &[u64], prior: &[f64]) -> Vec<f64> {
    let total: f64 = counts.iter().sum::<u64>() as f64;
    if total < 30.0 {
        return prior.to_vec();
    }
    counts
        .iter()
        .zip(prior)
        .map(|(&c, &p)| (c as f64 + 0.5 * p) / (total + 0.5))
        .collect()
}

/// Trigger candidates (single values and merged pairs); `use_model` weighs each row by the
/// reference model (off when a feature lost its values in this batch).
///
/// `categorical` holds the rows of the over-represented categorical values and `facts` the
/// reference model's view of the rows of the candidates small enough for its chances
/// ([`MAX_MODEL_ROWS`]), both from the value read ([`super::values`]); `facts` is empty when
/// the model's chances are not to be used.
#[allow(clippy::too_many_arguments)] // the pinned inputs, the batch's, and one switch
#[must_use]
pub fn candidates(
    baseline: &BaselineView<'_>,
    profile: &PoisonProfile,
    categorical: CategoricalRows,
    heavy: &[HeavyValue],
    scan: &Scan,
    facts: &RowFacts,
    rules: &RowRules,
    use_model: bool,
) -> Vec<(Candidate, RowSelector)> {
    let rule = rule(rules);
    let k = profile.classes;
    if k < 2 || profile.tables.is_empty() {
        return Vec::new();
    }
    let n = scan.n as f64;
    let prior = class_prior(profile);
    let mut values = categorical.finish(profile, n, &prior);
    for h in heavy {
        let expect = baseline
            .column(&h.column)
            .and_then(|c| c.numeric.as_ref())
            .map_or_else(
                || prior.clone(),
                |p| {
                    let b = bin_index(&p.edges, h.value);
                    smooth(&profile.tables[h.feature][b * k..(b + 1) * k], &prior)
                },
            );
        values.push(Value {
            column: h.column.clone(),
            text: num_exact(h.value),
            rows: h.rows.clone(),
            labels: h.labels.clone(),
            over_p: binomial_upper_tail(h.rows.len() as u64, n as u64, h.trusted_share),
            trusted_share: h.trusted_share,
            expect,
        });
    }
    let names: Vec<String> = baseline.class_names();
    // Concentrated candidates first, from the labels read with their rows.
    let mut concentrated: Vec<(Value, usize, u64, u64, f64)> = Vec::new();
    for v in values {
        let mut per_class = vec![0u64; k];
        for &y in &v.labels {
            if y != NO_CLASS {
                per_class[usize::from(y)] += 1;
            }
        }
        let labelled: u64 = per_class.iter().sum();
        let Some((c, &kc)) = per_class.iter().enumerate().max_by_key(|(_, c)| **c) else {
            continue;
        };
        if labelled < 3 || (kc as f64) < rule.concentration * labelled as f64 {
            continue;
        }
        let p_prior = binomial_upper_tail(kc, labelled, v.expect[c].clamp(1e-9, 1.0));
        concentrated.push((v, c, kc, labelled, p_prior));
    }
    let mut hits: Vec<Hit> = Vec::new();
    for (v, c, kc, labelled, p_prior) in concentrated {
        // Under the pinned model each row has its own chance of class `c`: a dirty-label
        // trigger puts `c` on rows whose features say otherwise, which the value's trusted
        // class mix cannot see when the value is new (Bonferroni over the two nulls).
        let p_conc = match model_chances(facts, &v.rows, c, k) {
            Some(pi) => (2.0 * p_prior.min(poisson_binomial_upper_tail(kc, &pi))).min(1.0),
            None => p_prior,
        };
        let p = p_conc.max(v.over_p);
        hits.push((v, c, kc, labelled, p));
    }
    // Merge candidates on different features whose rows coincide into pair triggers.
    hits.sort_by(|a, b| {
        b.0.rows
            .len()
            .cmp(&a.0.rows.len())
            .then(a.0.column.cmp(&b.0.column))
    });
    let mut groups: Vec<Vec<Hit>> = Vec::new();
    for h in hits {
        let joined = groups.iter_mut().find(|g| {
            g.len() == 1
                && g[0].0.column != h.0.column
                && g[0].1 == h.1
                && overlap(&g[0].0.rows, &h.0.rows) >= 0.8
        });
        match joined {
            Some(g) => g.push(h),
            None => groups.push(vec![h]),
        }
    }
    let mut out = Vec::new();
    for mut g in groups {
        g.sort_by(|a, b| a.0.column.cmp(&b.0.column));
        let columns: Vec<&str> = g.iter().map(|h| h.0.column.as_str()).collect();
        let texts: Vec<&str> = g.iter().map(|h| h.0.text.as_str()).collect();
        let (lead, c, kc, labelled, _) = &g[0];
        let p = g.iter().map(|h| h.4).fold(0.0, f64::max);
        let mut rows: Vec<u32> = g.iter().flat_map(|h| h.0.rows.iter().copied()).collect();
        rows.sort_unstable();
        rows.dedup();
        let class = names.get(*c).cloned().unwrap_or_else(|| c.to_string());
        let share = lead.rows.len() as f64 / n;
        let mut evidence = BTreeMap::new();
        evidence.insert("rows".into(), lead.rows.len() as f64);
        evidence.insert("share".into(), share);
        evidence.insert("trusted_share".into(), lead.trusted_share);
        evidence.insert("label_concentration".into(), *kc as f64 / *labelled as f64);
        evidence.insert("expected_label_share".into(), lead.expect[*c]);
        let what = columns
            .iter()
            .zip(&texts)
            .map(|(c, v)| format!("`{c}` = `{v}`"))
            .collect::<Vec<_>>()
            .join(" and ");
        out.push((
            Candidate {
                code: "poison-trigger",
                subject: Subject {
                    column: Some(columns.join(" & ")),
                    value: Some(texts.join(" & ")),
                    label: Some(class.clone()),
                },
                p_value: Some(p),
                effects: vec![Effect {
                    name: "share",
                    value: share,
                    warn: rule.warn,
                    deny: rule.deny,
                }],
                fixed: None,
                n: scan.n as u64,
                n_baseline: baseline.rows,
                describe: format!(
                    "{what} appears in {} rows ({}% of the batch, at most {}% of trusted rows) and {kc} of its {labelled} labelled rows are `{class}` against {}% expected",
                    lead.rows.len(),
                    num(100.0 * share),
                    num(100.0 * lead.trusted_share),
                    num(100.0 * lead.expect[*c])
                ),
                evidence,
                tag: None,
                power: power_null(profile, scan.n as u64, baseline.rows, Some(*c), use_model),
            },
            RowSelector::Listed(rows),
        ));
    }
    out
}

/// The trusted class prior, smoothed by half a row a class (Jeffreys), as the label test of a
/// value the trusted data did not hold expects it.
fn class_prior(profile: &PoisonProfile) -> Vec<f64> {
    let k = profile.classes;
    let Some(table) = profile.tables.first() else {
        return Vec::new();
    };
    let counts: Vec<u64> = (0..k)
        .map(|c| table.iter().skip(c).step_by(k).sum())
        .collect();
    let total: f64 = counts.iter().sum::<u64>() as f64;
    counts
        .iter()
        .map(|&c| (c as f64 + 0.5) / (total + 0.5 * k as f64))
        .collect()
}

/// The null of the trigger test for its detectable effect: a value the trusted data never
/// held, on rows all labelled with the class whose trusted share is `prior` (by default the
/// most common class: the hardest trigger to tell from chance, a clean-label one on the
/// majority class). `None` when the detector cannot run on this baseline.
#[must_use]
pub fn power_null(
    profile: &PoisonProfile,
    rows: u64,
    trusted: u64,
    class: Option<usize>,
    use_model: bool,
) -> Option<PowerNull> {
    if profile.classes < 2 || profile.tables.is_empty() {
        return None;
    }
    let prior = class_prior(profile);
    let share = match class {
        Some(c) => *prior.get(c)?,
        None => prior.iter().copied().fold(0.0, f64::max),
    };
    Some(PowerNull::Model(std::sync::Arc::new(TriggerNull {
        rows,
        trusted,
        prior: share,
        doubled: use_model && profile.label_model.is_some(),
    })))
}

/// The null of the trigger test ([`power_null`]): a value new to the trusted data on rows of
/// one class.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TriggerNull {
    /// Rows of the batch.
    pub rows: u64,
    /// Trusted rows.
    pub trusted: u64,
    /// The trusted share of the rows' class.
    pub prior: f64,
    /// Whether the label p-value is doubled (tested beside the model's chances).
    pub doubled: bool,
}

impl PowerModel for TriggerNull {
    fn detectable(&self, statistic: &str, deny: f64, level: f64) -> Detectable {
        let k = critical_rows(
            self.rows,
            self.trusted,
            self.prior,
            self.doubled,
            deny,
            level,
        );
        let n = self.rows.max(1) as f64;
        let mut d = Detectable::threshold(statistic, None, level);
        d.value = k.map(|k| tidy(k as f64 / n));
        d.rows = k.map(|k| k as f64);
        d.critical_rows = k;
        d.critical = None;
        // The count is the attacker's, not drawn: from it the test always denies.
        d.power = 1.0;
        d
    }
}

/// The trigger test's answer to `evidence-insufficient`, whether or not a value was a
/// candidate: the fewest rows a trigger on the most common class needs at the batch's `rows`
/// rows (a bound: the count is the attacker's), at deny threshold `deny` and `level`. `None`
/// when the baseline pins no label tables.
#[must_use]
pub fn reach(
    profile: &PoisonProfile,
    rows: u64,
    trusted: u64,
    deny: f64,
    level: f64,
) -> Option<Box<dyn Reach>> {
    let PowerNull::Model(model) = power_null(profile, rows, trusted, None, true)? else {
        return None;
    };
    let any: &dyn std::any::Any = model.as_ref();
    let &TriggerNull {
        trusted,
        prior,
        doubled,
        ..
    } = any.downcast_ref()?;
    // With the model's chances beside the prior, a dirty-label trigger's label p-value can be
    // as small as the model makes it: only the conditions that do not depend on the labels
    // bound the rows it needs (a count below which it is surely out of reach).
    let prior = if doubled { 0.0 } else { prior };
    Some(Box::new(TriggerReach {
        trusted,
        prior,
        doubled,
        deny,
        level,
    }))
}

/// See [`reach`].
#[derive(Debug, Clone, Copy)]
struct TriggerReach {
    /// Trusted rows.
    trusted: u64,
    /// The trusted share of the trigger's class; 0 when the model's chances are tested beside
    /// it (see [`critical_rows`]).
    prior: f64,
    /// Whether the label p-value is doubled.
    doubled: bool,
    /// The deny threshold on the share of the batch.
    deny: f64,
    /// The level the test faces alone.
    level: f64,
}

impl TriggerReach {
    /// The fewest trigger rows denied at `at` rows.
    fn critical_at(&self, at: u64) -> Option<u64> {
        critical_rows(
            at,
            self.trusted,
            self.prior,
            self.doubled,
            self.deny,
            self.level,
        )
    }
}

impl Reach for TriggerReach {
    fn detectable(&self, rows: u64) -> Option<f64> {
        self.critical_at(rows)
            .map(|k| k as f64 / rows.max(1) as f64)
    }

    /// `None` when the share is under the deny threshold or the pre-screen's, which no size
    /// overcomes.
    fn sufficient_rows(&self, rows: u64, share: f64) -> Option<u64> {
        if share < self.deny || share < MIN_SHARE {
            return None;
        }
        // However large the batch, a new value's share is judged against the never-seen mass
        // `m` trusted rows leave uncertain: its over-representation p-value cannot fall below
        // the level under the Beta(1/2, m + 1/2) quantile of that mass (as for the count
        // tests), and a trigger on a smaller share is out of reach at any size.
        let limit = statrs::distribution::Beta::new(0.5, self.trusted as f64 + 0.5).map_or(
            f64::INFINITY,
            |b| {
                use statrs::distribution::ContinuousCDF;
                b.inverse_cdf(1.0 - self.level)
            },
        );
        if limit >= share {
            return None;
        }
        // The trigger's count saws little (its conditions are a count and shares of one
        // value), and each probe is a search over counts: a short walk.
        first_sufficient(rows, WINDOW / 4, |at| {
            self.critical_at(at)
                .is_some_and(|k| k as f64 <= share * at as f64)
        })
    }

    fn is_bound(&self) -> bool {
        true
    }
}

/// The fewest rows of a batch of `n` rows that a trigger needs to be denied: a value the
/// `trusted` rows never held, stamped on rows all labelled with one class of trusted share
/// `prior`. Every condition of the detector holds from there on, each growing with the rows:
/// the pre-screen (three rows, [`MIN_SHARE`] of the batch, [`MIN_RATIO`] times the half row
/// an unseen value is credited with), the over-representation p-value, the label p-value
/// (`prior^k`, doubled when the model's chances are tested beside it: the Bonferroni of
/// [`candidates`]; the model can only lower it, so this count suffices for a clean-label
/// trigger and a dirty-label one alike), both below `level`, and the share at `deny`.
/// `None` when no count up to `n` would be denied. A `prior` of 0 leaves the label p-value
/// out: the count is then the least any trigger needs, whatever its labels.
#[must_use]
pub fn critical_rows(
    n: u64,
    trusted: u64,
    prior: f64,
    doubled: bool,
    deny: f64,
    level: f64,
) -> Option<u64> {
    // Below `MIN_ROWS` the row-level detectors do not run.
    if n < super::MIN_ROWS.max(3) || level.is_nan() || level <= 0.0 {
        return None;
    }
    let (nf, unseen) = (n as f64, 0.5 / (trusted as f64 + 1.0));
    crate::stats::power::first_count(n, |k: u64| {
        let share = k as f64 / nf;
        // A prior of 0 leaves the label test out (the count the other conditions need).
        let label = if prior <= 0.0 {
            0.0
        } else {
            prior.clamp(1e-9, 1.0).powf(k as f64) * if doubled { 2.0 } else { 1.0 }
        };
        let over = beta_binomial_upper_tail(k, n, 0, trusted);
        k >= 3
            && share >= MIN_SHARE
            && share >= MIN_RATIO * unseen
            && label.min(1.0).max(over) < level
            && share >= deny
            && share > 0.0
    })
}

/// |A ∩ B| / max(|A|, |B|) of two sorted row lists.
fn overlap(a: &[u32], b: &[u32]) -> f64 {
    let (mut i, mut j, mut both) = (0, 0, 0usize);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                both += 1;
                i += 1;
                j += 1;
            }
        }
    }
    both as f64 / a.len().max(b.len()).max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poisson_binomial_with_equal_chances_is_the_binomial() {
        for (k, n, p) in [(1u64, 10usize, 0.1), (5, 20, 0.3), (3, 3, 0.2), (0, 5, 0.5)] {
            let got = poisson_binomial_upper_tail(k, &vec![p; n]);
            let want = binomial_upper_tail(k, n as u64, p);
            assert!((got - want).abs() < 1e-12, "{k} {n} {p}: {got} vs {want}");
        }
        // Unequal chances: brute force over all 2^4 outcomes.
        let p = [0.1, 0.5, 0.9, 0.3];
        let mut want = 0.0;
        for mask in 0u32..16 {
            let prob: f64 = (0..4)
                .map(|i| if mask >> i & 1 == 1 { p[i] } else { 1.0 - p[i] })
                .product();
            if mask.count_ones() >= 2 {
                want += prob;
            }
        }
        assert!((poisson_binomial_upper_tail(2, &p) - want).abs() < 1e-12);
    }
}
