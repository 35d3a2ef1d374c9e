//! A finding before the decision: its evidence, raw p-value and effect sizes.

use std::collections::BTreeMap;

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
        }
    }
}
