//! `poison-segment-label-shift`: the class mix inside one segment (a category, or a numeric
//! decile) moved against the trusted data, beyond what the batch's overall class prior
//! explains.
//!
//! **What it detects.** Labels rewritten for every row that shares a value — a backdoor keyed
//! on a *common* value, which neither the trigger detector (the value is not rare) nor the
//! label prior (the overall shift is small) catches.
//!
//! **How.** Batch rows are tabulated by (segment, class) and compared with a reference mix
//! for the same rows. With a pinned reference model the reference is the model's expected
//! class counts for the segment's own batch rows (the sum of P(class | x) over them), so a
//! covariate shift that moves rows between segments moves the expectation with them; without
//! one it is the trusted segment's class mix. The reference is re-weighted by a class-prior
//! shift (the prior-shift correction of Saerens, Latinne & Decaestecker 2002), so that a
//! legitimate change of class balance passes. The shift is estimated per feature as the
//! median over its segments of each class's observed-to-reference share ratio, not from the
//! overall prior: a relabelled segment moves the overall prior too, and would otherwise drag
//! every other segment's expectation along and be blamed on them. The effect is the total
//! variation distance between the batch's mix and the reference. The model's expectation is
//! first recalibrated per segment by the trusted rows' observed-to-out-of-fold-expected ratio
//! (a segment the model under-fits is not read as relabelled), so the reference carries the
//! trusted segment's sampling error: the test is chi-square homogeneity of the batch counts
//! against the reference mix at the trusted segment's size. Every segment is one test in the
//! batch's Holm family, which also controls the false discovery rate.
//!
//! **False positives.** A real change in how one segment behaves (a new product for one
//! region) looks the same. Check the segment's labelling source before re-pinning.

use std::collections::BTreeMap;

use super::label::segment_codes;
use super::{PoisonProfile, RowSelector, Scan};
use crate::detect::registry::{self, CodeInfo, Weight};
use crate::detect::rules::{RateRule, RowRule, RowRules};
use crate::detect::{Candidate, Detectable, Effect, PowerModel, PowerNull};
use crate::finding::{Subject, num};
use crate::poison::BaselineView;
use crate::poison::RowCode;
use crate::stats::chi2;

/// `poison-segment-label-shift`, as the registry describes it, with its policy defaults.
pub const CODE: RowCode = RowCode {
    info: CodeInfo {
        code: "poison-segment-label-shift",
        family: registry::Family::Row,
        weight: Weight::Shared,
        joint: true,
        doc: "docs/detectors.md#poison-segment-label-shift",
        skip_phrase: "the segment, trigger and class-conditional detectors",
        summary: "Inside one segment (a category or a numeric decile) the class mix moved beyond what the batch's overall class prior explains.",
        why: "Rewriting the labels of every row that shares a common value plants a backdoor keyed on that value while the overall class balance barely moves.",
        respond: "Check who labelled the rows of the named segment; compare with the previous batch's labels for the same segment before training.",
    },
    rule: RowRule::Rate(RULE),
};

/// `[checks.poison-segment-label-shift]` when the policy leaves it out. Thresholds on a segment's class-mix total variation.
pub const RULE: RateRule = RateRule::denying(0.05, 0.1);

/// A testable segment: description, codes, reference class counts, batch class counts, and
/// the trusted rows whose counts the reference mix was measured on.
type Segment = (String, Vec<usize>, Vec<f64>, Vec<f64>, f64);

/// Fewest rows a segment needs on each side to be tested.
pub(crate) const MIN_ROWS: f64 = 30.0;

/// Class totals of a table (`code * classes + class`).
fn class_totals(table: &[u64], classes: usize) -> Vec<f64> {
    let mut out = vec![0f64; classes];
    for (i, &c) in table.iter().enumerate() {
        out[i % classes] += c as f64;
    }
    out
}

/// One candidate per tested segment that moved at all.
#[must_use]
pub fn candidates(
    baseline: &BaselineView<'_>,
    profile: &PoisonProfile,
    scan: &Scan,
    rules: &RowRules,
) -> Vec<(Candidate, Option<RowSelector>)> {
    let rule = rules.rate(CODE.info.code, &RULE);
    let k = profile.classes;
    let mut out = Vec::new();
    let names: Vec<String> = baseline.class_names();
    // Priors from the first feature's table (every labelled row appears once per table).
    let (Some(t0), Some(t1)) = (profile.tables.first(), scan.tables.first()) else {
        return out;
    };
    let prior0 = class_totals(t0, k);
    let prior1 = class_totals(t1, k);
    let (m0, m1): (f64, f64) = (prior0.iter().sum(), prior1.iter().sum());
    if m0 <= 0.0 || m1 <= 0.0 {
        return out;
    }
    for (j, name) in profile.features.iter().enumerate() {
        let Some(col) = baseline.column(name) else {
            continue;
        };
        // (description, codes, reference class counts, batch class counts) of each testable
        // segment. The reference is the model's expectation for the batch's own rows when
        // there is a model (covariate shift then moves it along), else the trusted mix.
        let model = scan.expected_tables.get(j);
        let segments: Vec<Segment> =
            segment_codes(col, profile.cardinality[j])
                .into_iter()
                .filter_map(|(label, codes)| {
                    // Per class, the sum over the segment's codes of a table entry.
                    let per_class = |at: &dyn Fn(usize) -> f64| -> Vec<f64> {
                        (0..k)
                            .map(|c| codes.iter().map(|&code| at(code * k + c)).sum())
                            .collect()
                    };
                    let sum = |t: &[u64]| per_class(&|i| t[i] as f64);
                    let trusted: f64 = sum(&profile.tables[j]).iter().sum();
                    let (base, reference_rows) = match (model, &profile.label_model) {
                        (Some(t), Some(m)) => {
                            // The model's expectation for these rows, recalibrated by the
                            // segment's trusted observed-to-expected ratio per class
                            // (histogram-binning recalibration, Zadrozny & Elkan 2002), so a
                            // segment the model under-fits is not read as relabelled. The ratio
                            // comes from the trusted rows the pinned model never saw when the
                            // segment has enough of them (it then cancels the very bias `check`
                            // meets), else from the out-of-fold scores; either way the
                            // reference carries the sampling error of the rows that measured it.
                            let measured = |o: &[u64], e: &[f64]| (sum(o), per_class(&|i| e[i]));
                            let held = (m.held_rows > 0)
                                .then(|| measured(&m.held_observed[j], &m.held_expected[j]));
                            let (obs, exp) = match held {
                                Some((o, e)) if o.iter().sum::<f64>() >= MIN_ROWS => (o, e),
                                _ => measured(&m.oof_observed[j], &m.oof_expected[j]),
                            };
                            let batch = per_class(&|i| t[i]);
                            let base = (0..k)
                                .map(|c| batch[c] * (obs[c] + 0.5) / (exp[c] + 0.5))
                                .collect();
                            (base, obs.iter().sum())
                        }
                        _ => (sum(&profile.tables[j]), trusted),
                    };
                    let batch = sum(&scan.tables[j]);
                    let na: f64 = batch.iter().sum();
                    (trusted >= MIN_ROWS && reference_rows >= MIN_ROWS && na >= MIN_ROWS)
                        .then_some((label, codes, base, batch, reference_rows))
                })
                .collect();
        let weight = prior_shift(&segments, k, &prior0, &prior1);
        let family = std::sync::Arc::new(Family {
            segments: segments.clone(),
            k,
            prior0: prior0.clone(),
            prior1: prior1.clone(),
        });
        for (index, (label, codes, base, batch, reference_rows)) in segments.into_iter().enumerate()
        {
            let (nb, na): (f64, f64) = (base.iter().sum(), batch.iter().sum());
            if nb <= 0.0 {
                continue;
            }
            // Every tested segment stays in the family, so that the Holm adjustment counts
            // it even when its effect is too small to report.
            let Judged {
                expect, tv, test, ..
            } = family.judge(index, &weight);
            let power =
                SegmentNull::new(&family, index).map(|s| PowerNull::Model(std::sync::Arc::new(s)));
            let (rise, risen) = (0..k)
                .map(|c| (batch[c] / na - expect[c], c))
                .max_by(|a, b| a.0.total_cmp(&b.0))
                .unwrap_or((0.0, 0));
            let class = names
                .get(risen)
                .cloned()
                .unwrap_or_else(|| risen.to_string());
            let mut evidence = BTreeMap::new();
            evidence.insert("segment_rows".into(), na);
            evidence.insert("reference_segment_rows".into(), nb);
            evidence.insert("class_share".into(), batch[risen] / na);
            evidence.insert("expected_class_share".into(), expect[risen]);
            evidence.insert("chi2".into(), test.statistic);
            evidence.insert("calibration_rows".into(), reference_rows);
            let subject = Subject {
                column: Some(name.clone()),
                value: Some(label.clone()),
                label: Some(class.clone()),
            };
            out.push((
                Candidate {
                    code: "poison-segment-label-shift",
                    subject,
                    p_value: Some(test.p_value),
                    effects: vec![Effect {
                        name: "total_variation",
                        value: tv,
                        warn: rule.warn,
                        deny: rule.deny,
                    }],
                    fixed: None,
                    n: na as u64,
                    n_baseline: nb as u64,
                    describe: format!(
                        "Where `{name}` {label}, {}% of {} rows are labelled `{class}` against {}% expected {} (+{} points)",
                        num(100.0 * batch[risen] / na),
                        na,
                        num(100.0 * expect[risen]),
                        if model.is_some() {
                            "by the reference model for these rows"
                        } else {
                            "from the trusted data at this batch's class prior"
                        },
                        num(100.0 * rise)
                    ),
                    evidence,
                    tag: None,
                    power,
                },
                Some(RowSelector::Segment {
                    feature: j,
                    codes: codes.clone(),
                    class: risen as u16,
                    limit: (rise * na).max(0.0).ceil() as usize,
                }),
            ));
        }
    }
    out
}

/// One feature's tested segments, with the class priors their prior-shift weights come from.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    segments: Vec<Segment>,
    k: usize,
    prior0: Vec<f64>,
    prior1: Vec<f64>,
}

/// A segment's test: the reference mix, the total variation from it and the homogeneity test.
struct Judged {
    expect: Vec<f64>,
    tv: f64,
    test: chi2::Chi2Test,
}

impl Family {
    /// Segment `index` judged at prior-shift weights `weight`: the reference mix carries the
    /// sampling error of the trusted rows that measured it (the segment's own rows, or those
    /// behind the recalibration ratio), a homogeneity test against the reference mix at that
    /// many rows.
    fn judge(&self, index: usize, weight: &[f64]) -> Judged {
        let (_, _, base, batch, reference_rows) = &self.segments[index];
        let na: f64 = batch.iter().sum();
        let mut expect: Vec<f64> = base.iter().zip(weight).map(|(b, w)| b * w).collect();
        let z: f64 = expect.iter().sum();
        expect.iter_mut().for_each(|e| *e /= z);
        let tv = 0.5
            * batch
                .iter()
                .zip(&expect)
                .map(|(a, e)| (a / na - e).abs())
                .sum::<f64>();
        let reference: Vec<u64> = expect
            .iter()
            .map(|e| (e * reference_rows).round() as u64)
            .collect();
        let observed: Vec<u64> = batch.iter().map(|&a| a as u64).collect();
        let test = chi2::homogeneity(&observed, &reference);
        Judged { expect, tv, test }
    }

    /// The family with `moved` labels of segment `index` relabelled from class `from` to
    /// class `to` (the batch's class totals move with them), judged afresh: the prior-shift
    /// weights are re-estimated from the moved counts, as `check` would.
    fn moved(&self, index: usize, from: usize, to: usize, moved: f64) -> Judged {
        let mut family = self.clone();
        let batch = &mut family.segments[index].3;
        batch[from] -= moved;
        batch[to] += moved;
        family.prior1[from] -= moved;
        family.prior1[to] += moved;
        let weight = prior_shift(&family.segments, family.k, &family.prior0, &family.prior1);
        family.judge(index, &weight)
    }
}

/// What a segment's test could have seen: labels of its most common class (by the reference
/// mix) relabelled as the next most common, on top of the labels the batch has.
///
/// The test denies when the chi-square homogeneity p-value of the segment's class counts
/// against the reference counts is below the level and the total variation from the
/// reference mix reaches the deny threshold. Moving `j` labels from class `a` to class `b`
/// changes both deterministically (with the prior-shift weights, re-estimated from the moved
/// counts), so the decision is evaluated exactly at each `j` (the test's own computation, not
/// an approximation of it), and the critical count is the fewest moved labels that deny,
/// searched upwards from the move that brings `b` to its reference share (past it, the shift
/// only grows). An attacker relabelling each of the `N_a` labels of class `a` with
/// probability `π` moves `Binomial(N_a, π)` of them, so the power is the binomial tail at the
/// critical count (as for the count tests, [`crate::stats::power::count`]), and the
/// detectable effect is the share of the segment's labels, `π N_a / n`, at which it reaches
/// the stated power.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentNull {
    family: std::sync::Arc<Family>,
    index: usize,
    from: usize,
    to: usize,
}

impl SegmentNull {
    /// The null of segment `index` of `family`; `None` with fewer than two classes in its
    /// reference mix.
    #[must_use]
    pub fn new(family: &std::sync::Arc<Family>, index: usize) -> Option<Self> {
        let weight = prior_shift(&family.segments, family.k, &family.prior0, &family.prior1);
        let expect = family.judge(index, &weight).expect;
        let mut order: Vec<usize> = (0..expect.len()).filter(|&c| expect[c] > 0.0).collect();
        order.sort_by(|&a, &b| expect[b].total_cmp(&expect[a]).then(a.cmp(&b)));
        let (&from, &to) = (order.first()?, order.get(1)?);
        Some(Self {
            family: family.clone(),
            index,
            from,
            to,
        })
    }

    fn batch(&self) -> &[f64] {
        &self.family.segments[self.index].3
    }

    /// The segment's batch rows.
    #[must_use]
    pub fn rows(&self) -> u64 {
        self.batch().iter().sum::<f64>() as u64
    }

    /// Whether the test denies once `moved` labels of the most common class are relabelled.
    fn denies(&self, moved: u64, deny: f64, level: f64) -> bool {
        let j = self
            .family
            .moved(self.index, self.from, self.to, moved as f64);
        // As `decide` applies them: the effect at the threshold, the p-value under the level.
        j.tv >= deny && j.test.p_value < level
    }

    /// The fewest relabelled labels that deny and the share of the segment's labels
    /// relabelled at random from the most common class that is denied with probability
    /// `power`; `None` when relabelling all of them would not be.
    #[must_use]
    pub fn detectable(&self, deny: f64, level: f64, power: f64) -> Option<(u64, f64)> {
        let available = self.batch()[self.from] as u64;
        let n = self.rows();
        if n == 0 || available == 0 {
            return None;
        }
        let weight = prior_shift(
            &self.family.segments,
            self.family.k,
            &self.family.prior0,
            &self.family.prior1,
        );
        let expect = self.family.judge(self.index, &weight).expect;
        let start = move_start(self.batch(), &expect, self.from, self.to);
        let (critical, pi) =
            crate::stats::power::moved(available, start, power, |j| self.denies(j, deny, level))?;
        Some((critical, pi * available as f64 / n as f64))
    }
}

/// The count of rows to move from `from` to `to` before the move only adds to the shift of
/// counts `batch` from the mix `expect`: until `from` is down to its expected share and `to`
/// up to its, a move undoes the batch's own lean.
pub(crate) fn move_start(batch: &[f64], expect: &[f64], from: usize, to: usize) -> u64 {
    let n: f64 = batch.iter().sum();
    let down = batch[from] - expect[from] * n;
    let up = expect[to] * n - batch[to];
    down.max(up).ceil().clamp(0.0, batch[from].max(0.0)) as u64
}

/// Per-class prior-shift weights: the median over segments of the batch-to-trusted share
/// ratio of each class (smoothed by half a row), or the overall ratio with fewer than three
/// segments.
fn prior_shift(segments: &[Segment], k: usize, prior0: &[f64], prior1: &[f64]) -> Vec<f64> {
    let ratio = |a: &[f64], b: &[f64], c: usize| {
        let (ta, tb): (f64, f64) = (a.iter().sum(), b.iter().sum());
        ((a[c] + 0.5) / (ta + 0.5 * k as f64)) / ((b[c] + 0.5) / (tb + 0.5 * k as f64))
    };
    (0..k)
        .map(|c| {
            if segments.len() < 3 {
                return ratio(prior1, prior0, c);
            }
            let mut r: Vec<f64> = segments.iter().map(|s| ratio(&s.3, &s.2, c)).collect();
            r.sort_by(f64::total_cmp);
            let m = r.len();
            if m % 2 == 1 {
                r[m / 2]
            } else {
                0.5 * (r[m / 2 - 1] + r[m / 2])
            }
        })
        .collect()
}

impl PowerModel for SegmentNull {
    // Stated as the share of the segment's rows relabelled from its most common class to the
    // next, not as the total variation the test measures.
    fn detectable(&self, _: &str, deny: f64, level: f64) -> Detectable {
        Detectable::moved(
            "relabelled_share",
            SegmentNull::detectable(self, deny, level, crate::stats::power::POWER),
            self.rows(),
            level,
        )
    }
}
