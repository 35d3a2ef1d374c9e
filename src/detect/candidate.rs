//! A finding before the decision: its evidence, raw p-value and effect sizes.

use std::collections::BTreeMap;

use super::PowerModel;
use crate::finding::{Severity, Subject};

/// An effect size and the thresholds it is compared with.
#[derive(Debug, Clone)]
pub struct Effect {
    /// Statistic name (`ks`, `psi`, `share`, ...).
    pub name: &'static str,
    /// Its value.
    pub value: f64,
    /// Threshold from which it warns.
    pub warn: f64,
    /// Threshold from which it denies.
    pub deny: f64,
}

/// The null a count test decides from (`k` of `trials` rows flagged, the statistic
/// `k / trials - base`), for its detectable effect ([`crate::stats::power`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CountNull {
    /// Rows the count is over.
    pub trials: u64,
    /// The null's share, subtracted from the flagged share to give the statistic.
    pub base: f64,
    /// The beta-binomial predictive parameters of the null count, as the p-value uses them
    /// ([`crate::stats::proportion::beta_binomial_upper_tail_ab`]).
    pub alpha: f64,
    /// See `alpha`.
    pub beta: f64,
    /// The factor the tail is multiplied by for the selection of the tested value among
    /// others (1 for a test of a fixed count).
    pub selection: f64,
}

impl CountNull {
    /// The null of [`crate::stats::proportion::beta_binomial_upper_tail`]: `x` events seen
    /// in `m` trusted rows.
    #[must_use]
    pub fn seen(trials: u64, base: f64, x: u64, m: u64) -> Self {
        Self {
            trials,
            base,
            alpha: x as f64 + 0.5,
            beta: m.saturating_sub(x) as f64 + 0.5,
            selection: 1.0,
        }
    }

    /// The null of [`crate::stats::proportion::predictive_upper_tail`]: a trusted rate `rate`
    /// measured on `m` rows.
    #[must_use]
    pub fn predictive(trials: u64, base: f64, rate: f64, m: u64) -> Self {
        let x = (rate.clamp(0.0, 1.0) * m as f64).round() as u64;
        Self::seen(trials, base, x.min(m), m)
    }

    /// The p-value at `k` flagged rows.
    #[must_use]
    pub fn tail(&self, k: u64) -> f64 {
        (self.selection
            * crate::stats::proportion::beta_binomial_upper_tail_ab(
                k,
                self.trials,
                self.alpha,
                self.beta,
            ))
        .min(1.0)
    }
}

/// The null a test decides from, in the form its detectable effect is computed from
/// ([`crate::stats::power`]).
#[derive(Debug, Clone)]
pub enum PowerNull {
    /// A count of flagged rows against a null rate.
    Count(CountNull),
    /// The two-sample Kolmogorov-Smirnov test of a numeric column: values of the batch and
    /// of the baseline.
    Ks {
        /// Batch values.
        batch: u64,
        /// Baseline values.
        baseline: u64,
        /// The deny threshold of its Wasserstein effect (the second way it denies a shift).
        deny_wasserstein: f64,
    },
    /// A detector's own null ([`PowerModel`], in the detector's file).
    Model(std::sync::Arc<dyn PowerModel>),
    /// The class-conditional drift test of a numeric feature (`drift-class-conditional`, KS
    /// over the pinned bins): one class's distance beyond the largest of the other classes',
    /// `others`.
    ClassDrift {
        /// The class's batch values.
        batch: u64,
        /// Its trusted values.
        baseline: u64,
        /// The other classes' largest distance, which the class's must exceed by the effect.
        others: f64,
    },
    /// The stitched-rows test ([`crate::stats::power::stitched`]).
    Stitched(crate::stats::power::StitchedNull),
    /// The chi-square homogeneity test of a category mix.
    Chi2 {
        /// Its degrees of freedom.
        dof: f64,
        /// Batch values.
        batch: u64,
        /// Baseline values.
        baseline: u64,
    },
}

impl From<CountNull> for PowerNull {
    fn from(null: CountNull) -> Self {
        Self::Count(null)
    }
}

impl PowerNull {
    /// The count null, for a count test.
    #[must_use]
    pub fn count(&self) -> Option<CountNull> {
        match self {
            Self::Count(null) => Some(*null),
            _ => None,
        }
    }
}

/// A finding in the making.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// Finding code.
    pub code: &'static str,
    /// Subject.
    pub subject: Subject,
    /// Raw p-value; `None` for structural findings that need no test.
    pub p_value: Option<f64>,
    /// Effect sizes, in order of preference for reporting.
    pub effects: Vec<Effect>,
    /// Severity of a structural finding (used when `effects` is empty).
    pub fixed: Option<Severity>,
    /// Batch sample size.
    pub n: u64,
    /// Baseline sample size.
    pub n_baseline: u64,
    /// Start of the message: what changed, in words and numbers.
    pub describe: String,
    /// Everything else computed.
    pub evidence: BTreeMap<String, f64>,
    /// Index of the detector outcome that produced it (rows for the quarantine).
    pub tag: Option<usize>,
    /// The null its first effect is decided from: the report states the effect it would have
    /// detected.
    pub power: Option<PowerNull>,
}

impl Candidate {
    /// A structural candidate (missing column and the like).
    #[must_use]
    pub fn structural(
        code: &'static str,
        subject: Subject,
        severity: Severity,
        describe: String,
    ) -> Self {
        Self {
            code,
            subject,
            p_value: None,
            effects: Vec::new(),
            fixed: Some(severity),
            n: 0,
            n_baseline: 0,
            describe,
            evidence: BTreeMap::new(),
            tag: None,
            power: None,
        }
    }
}
