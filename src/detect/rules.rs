//! The policy sections of the row-level detectors' codes, as the detectors read them: the
//! level of a code, the kinds of threshold section ([`RateRule`], [`TriggerRule`]) and the
//! sections of every row-level code ([`RowRules`]). Each detector declares its sections'
//! defaults in its file; [`crate::policy`] embeds [`RowRules`] in `[checks]` and reads,
//! defaults, validates, writes and describes it from those declarations. Defined here, below
//! the detectors, so that a detector reads its thresholds without importing the policy.

use serde::{Deserialize, Serialize};

/// What a code's findings may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Findings may block (the severity the check computed is kept).
    Deny,
    /// Findings are reported but never block.
    Warn,
    /// Findings are dropped (counted as waived).
    Allow,
}

impl Level {
    /// Lowercase name, as written in the policy file.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Deny => "deny",
            Self::Warn => "warn",
            Self::Allow => "allow",
        }
    }
}

/// A check on a share of rows: warn and deny thresholds on the share (or its increase).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RateRule {
    /// Level of the code.
    pub level: Level,
    /// Effect size from which a significant finding warns.
    pub warn: f64,
    /// Effect size from which a significant finding denies.
    pub deny: f64,
}

impl RateRule {
    /// A rule at level deny with these thresholds.
    #[must_use]
    pub const fn denying(warn: f64, deny: f64) -> Self {
        Self {
            level: Level::Deny,
            warn,
            deny,
        }
    }
}

/// Trigger thresholds: the share of batch rows carrying the trigger, and how concentrated on
/// one label its rows must be.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TriggerRule {
    /// Level of the code.
    pub level: Level,
    /// Share of batch rows from which a significant trigger warns.
    pub warn: f64,
    /// Share of batch rows from which a significant trigger denies.
    pub deny: f64,
    /// Least share of the trigger's labelled rows in its most common class.
    pub concentration: f64,
}

/// The policy section of a row-level detector's code, by kind.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(untagged)]
pub enum RowRule {
    /// Warn and deny thresholds on a share of rows.
    Rate(RateRule),
    /// `poison-trigger`'s thresholds.
    Trigger(TriggerRule),
}

/// The sections of the row-level detectors' codes, in the detector registry's order: each
/// code and its defaults come from its detector ([`crate::poison::Detector::CODES`]), so a new
/// detector adds its section here without an edit to the policy. Deserialised from the keys
/// of `[checks]` that are not a field of [`Checks`](crate::policy::Checks): a key that is not a
/// row-level code either is refused, as every unknown key of the policy is.
#[derive(Debug, Clone, PartialEq)]
pub struct RowRules(pub(crate) Vec<(&'static str, RowRule)>);

impl RowRules {
    /// The section of `code`.
    #[must_use]
    pub fn get(&self, code: &str) -> Option<&RowRule> {
        self.0.iter().find(|(c, _)| *c == code).map(|(_, r)| r)
    }

    /// The rate section of `code`: the policy's, or `default` (the detector's, which a policy
    /// that left the code out holds anyway).
    #[must_use]
    pub fn rate<'a>(&'a self, code: &str, default: &'a RateRule) -> &'a RateRule {
        match self.get(code) {
            Some(RowRule::Rate(r)) => r,
            _ => default,
        }
    }

    /// The rate section of `code`, to change it.
    pub fn rate_mut(&mut self, code: &str) -> Option<&mut RateRule> {
        self.0.iter_mut().find_map(|(c, r)| match r {
            RowRule::Rate(r) if *c == code => Some(r),
            _ => None,
        })
    }

    /// The trigger section of `code`: the policy's, or `default`.
    #[must_use]
    pub fn trigger<'a>(&'a self, code: &str, default: &'a TriggerRule) -> &'a TriggerRule {
        match self.get(code) {
            Some(RowRule::Trigger(r)) => r,
            _ => default,
        }
    }

    /// The level of `code`, to change it.
    pub fn level_mut(&mut self, code: &str) -> Option<&mut Level> {
        self.0
            .iter_mut()
            .find(|(c, _)| *c == code)
            .map(|(_, r)| match r {
                RowRule::Rate(r) => &mut r.level,
                RowRule::Trigger(r) => &mut r.level,
            })
    }
}
