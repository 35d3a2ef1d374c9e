//! What a test could have seen at its batch's size: the smallest true effect it denies with
//! 80 % probability ([`Detectable`]), from the null it decides with ([`PowerNull`]). The
//! statistical tests' nulls are computed here; a detector's own null is a [`PowerModel`] in
//! the detector's file.

use serde::{Deserialize, Serialize};

use super::{CountNull, PowerNull};
use crate::finding::{num, tidy};
use crate::stats::power;

/// A detector's own null for the power of its test (a segment's class mix, a class's
/// categories, the flipped-label likelihood ratio, a trigger's count): the effect the test
/// denies with probability [`power::POWER`] at this batch's size. `Any`, so that the decision
/// layer can read the null of a test it states more about (`evidence-insufficient`).
pub trait PowerModel: std::any::Any + std::fmt::Debug + Send + Sync {
    /// The detectable effect of the test, stated in `statistic`, with deny threshold `deny`,
    /// at `level`.
    fn detectable(&self, statistic: &str, deny: f64, level: f64) -> Detectable;

    /// The test's answer to `evidence-insufficient` ([`super::Reach`]), with its deny
    /// threshold, the level it faces alone and its detectable share at the batch's size (the
    /// report's); `None`, the default, for a test that no attack the policy names asks about.
    fn reach(
        self: std::sync::Arc<Self>,
        _deny: f64,
        _level: f64,
        _detectable: Option<f64>,
    ) -> Option<Box<dyn super::Reach>> {
        None
    }
}

/// What a test could have seen: the smallest true effect it denies with probability `power`,
/// from the same null it decides with (`stats::power`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Detectable {
    /// The statistic the effect is stated in (the test's first).
    pub statistic: String,
    /// The smallest true value of the statistic denied with probability `power`; absent when
    /// no value is (too few rows to reach the level or the threshold even if all were flagged).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub value: Option<f64>,
    /// The same effect in rows of the batch (`value` times the rows the test counts).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub rows: Option<f64>,
    /// The fewest flagged rows that deny.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub critical_rows: Option<u64>,
    /// The smallest observed value of the statistic that denies (tests on a continuous
    /// statistic; a count test states `critical_rows`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub critical: Option<f64>,
    /// For `drift-numeric`: the shift of the mean, in standard deviations, of a normal column
    /// that the test denies with probability `power`; `value` is its KS distance,
    /// `2 Phi(shift / 2) - 1` ([`crate::stats::power::location_shift`]).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub normal_shift_sd: Option<f64>,
    /// For `drift-class-conditional`: the largest distance of the other classes in this
    /// batch, which the class's own distance must exceed by the effect (its distance is
    /// `value` plus this).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub other_classes_distance: Option<f64>,
    /// `warn` for a test that never denies (values just outside a pinned range): the effect
    /// is then the smallest that warns with probability `power`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub raises: Option<String>,
    /// The detection probability the effect is stated at.
    pub power: f64,
    /// The level the test faces when the effect is the batch's only one: the first step of
    /// the weighted Holm adjustment, `gate.alpha` times its share of the weights.
    pub level: f64,
}

impl Detectable {
    /// The effect in words: `excess_share 0.0118 (59 rows)`, or that none is detectable.
    #[must_use]
    pub fn display(&self) -> String {
        let effect = self.effect();
        match &self.raises {
            Some(level) => format!("{effect} to {level} (it never denies)"),
            None => effect,
        }
    }

    fn effect(&self) -> String {
        match (self.value, self.rows, self.normal_shift_sd) {
            (Some(v), Some(r), _) if self.power >= 1.0 => format!(
                "{} {} ({} rows, every time)",
                self.statistic,
                num(v),
                r.ceil()
            ),
            (Some(v), Some(r), _) => format!("{} {} ({} rows)", self.statistic, num(v), r.ceil()),
            (Some(v), None, Some(sd)) => format!(
                "{} {} (a normal column's mean moved {} sd)",
                self.statistic,
                num(v),
                num(sd)
            ),
            (Some(v), None, None) => format!("{} {}", self.statistic, num(v)),
            _ => "none at this size".to_owned(),
        }
    }

    /// The detectable effect of a test deciding from `null` on its first statistic, named
    /// `statistic`, with deny threshold `deny`, at `level`.
    #[must_use]
    pub fn of(null: &PowerNull, statistic: &str, deny: f64, level: f64) -> Self {
        match *null {
            PowerNull::Count(null) => Self::count(&null, statistic, deny, level),
            PowerNull::Model(ref model) => model.detectable(statistic, deny, level),
            PowerNull::ClassDrift {
                batch,
                baseline,
                others,
            } => {
                // The class's distance must reach the threshold plus the other classes'.
                let found = power::ks(batch, baseline, deny + others, level, power::POWER);
                let found = found.map(|f| power::ThresholdPower {
                    critical: f.critical - others,
                    effect: f.effect - others,
                });
                let mut d = Self::threshold(statistic, found, level);
                d.other_classes_distance = Some(tidy(others));
                d
            }
            PowerNull::Stitched(ref null) => {
                let share = power::stitched(null, deny, level, power::POWER);
                let mut d = Self::threshold(statistic, None, level);
                d.value = share.map(tidy);
                d.rows = share.map(|e| tidy(e * null.rows as f64));
                d
            }
            PowerNull::Ks {
                batch,
                baseline,
                deny_wasserstein,
            } => {
                let found = power::location_shift(
                    batch,
                    baseline,
                    deny,
                    deny_wasserstein,
                    level,
                    power::POWER,
                );
                let mut d = Self::threshold(statistic, found.map(|f| f.0), level);
                d.normal_shift_sd = found.map(|f| tidy(f.1));
                d
            }
            PowerNull::Chi2 {
                dof,
                batch,
                baseline,
            } => Self::threshold(
                statistic,
                power::chi2(dof, batch, baseline, deny, level, power::POWER),
                level,
            ),
        }
    }

    /// A test that had nothing large enough to test at this size: no effect is detectable.
    #[must_use]
    pub fn none(statistic: &str, level: f64) -> Self {
        Self::threshold(statistic, None, level)
    }

    /// A share `eps` of the `judged` labels flipped.
    #[must_use]
    pub fn flipped(statistic: &str, eps: Option<f64>, judged: u64, level: f64) -> Self {
        let mut d = Self::threshold(statistic, None, level);
        d.value = eps.map(tidy);
        d.rows = eps.map(|e| tidy(e * judged as f64));
        d
    }

    /// A share of `rows` moved, from the critical count and share found.
    #[must_use]
    pub fn moved(statistic: &str, found: Option<(u64, f64)>, rows: u64, level: f64) -> Self {
        let mut d = Self::threshold(statistic, None, level);
        d.value = found.map(|f| tidy(f.1));
        d.rows = found.map(|f| tidy(f.1 * rows as f64));
        d.critical_rows = found.map(|f| f.0);
        d
    }

    /// A test on a continuous statistic, from the critical value and effect found (none: no
    /// effect is detectable at this size).
    #[must_use]
    pub fn threshold(statistic: &str, found: Option<power::ThresholdPower>, level: f64) -> Self {
        Self {
            statistic: statistic.to_owned(),
            value: found.map(|f| tidy(f.effect)),
            rows: None,
            critical_rows: None,
            critical: found.map(|f| tidy(f.critical)),
            normal_shift_sd: None,
            other_classes_distance: None,
            raises: None,
            power: power::POWER,
            level: tidy(level),
        }
    }

    /// The detectable effect of a count test at `level`, deny threshold `deny`.
    #[must_use]
    pub fn count(null: &CountNull, statistic: &str, deny: f64, level: f64) -> Self {
        let found = power::count(null.trials, null.base, deny, level, power::POWER, |k| {
            null.tail(k)
        });
        Self {
            statistic: statistic.to_owned(),
            value: found.map(|f| tidy(f.excess_share)),
            rows: found.map(|f| tidy(f.excess_share * null.trials as f64)),
            critical_rows: found.map(|f| f.critical),
            critical: None,
            normal_shift_sd: None,
            other_classes_distance: None,
            raises: None,
            power: power::POWER,
            level: tidy(level),
        }
    }
}
