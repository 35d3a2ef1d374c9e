//! The policy (`poisongate.toml`): per finding code a level and its thresholds.
//!
//! Defaults live in code ([`Policy::default`]); a file overrides any subset. Unknown keys are
//! an error, so a misspelled threshold can never silently disable a check. Exceptions waive a
//! code for one column and must give a reason; an exception that matches nothing is reported.

mod template;

pub use template::template;

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

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

/// The whole policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Default)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Policy {
    /// Gate-wide settings.
    pub gate: Gate,
    /// Per-code settings.
    pub checks: Checks,
    /// Settings of `poisongate compare`.
    pub compare: CompareSettings,
    /// Waivers; each needs a reason.
    pub exceptions: Vec<Exception>,
    /// Hard domains per column (`[domains.COLUMN]`): values outside one are
    /// `schema-out-of-domain`, whatever the trusted data held.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub domains: BTreeMap<String, Domain>,
}

/// What a column may hold, as the user knows it (not as the trusted data happened to show).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Default)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Domain {
    /// Smallest allowed value of a numeric column.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Largest allowed value of a numeric column.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// Allowed values of a categorical column.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub categories: Option<Vec<String>>,
}

/// Gate-wide statistical settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Gate {
    /// Family-wise error rate across all tests of one batch (Holm).
    pub alpha: f64,
    /// Simulated clean batches per column for the null thresholds (0 turns them off).
    pub null_draws: usize,
    /// Quantile of the simulated null an effect statistic must exceed.
    pub null_level: f64,
}

impl Default for Gate {
    fn default() -> Self {
        Self {
            alpha: 0.01,
            null_draws: 200,
            null_level: 0.995,
        }
    }
}

/// A check with only a level.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LevelOnly {
    /// Level of the code.
    pub level: Level,
}

/// A check on a share of rows: warn and deny thresholds on the share (or its increase).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RateRule {
    /// Level of the code.
    pub level: Level,
    /// Effect size from which a significant finding warns.
    pub warn: f64,
    /// Effect size from which a significant finding denies.
    pub deny: f64,
}

/// Numeric drift thresholds (effect sizes; each must also beat the clean-batch null).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct NumericDrift {
    /// Level of the code.
    pub level: Level,
    /// KS statistic that warns.
    pub warn_ks: f64,
    /// KS statistic that denies.
    pub deny_ks: f64,
    /// Wasserstein distance / baseline standard deviation that warns.
    pub warn_wasserstein: f64,
    /// Wasserstein distance / baseline standard deviation that denies.
    pub deny_wasserstein: f64,
    /// PSI (coarse bins) that warns.
    pub warn_psi: f64,
    /// PSI (coarse bins) that denies.
    pub deny_psi: f64,
}

/// Categorical drift and label prior thresholds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CategoricalDrift {
    /// Level of the code.
    pub level: Level,
    /// PSI that warns.
    pub warn_psi: f64,
    /// PSI that denies.
    pub deny_psi: f64,
    /// Jensen–Shannon distance that warns.
    pub warn_js: f64,
    /// Jensen–Shannon distance that denies.
    pub deny_js: f64,
}

/// Trigger thresholds: the share of batch rows carrying the trigger, and how concentrated on
/// one label its rows must be.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
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

/// Score distribution shift thresholds (`compare-score-shift`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ScoreShift {
    /// Level of the code.
    pub level: Level,
    /// KS statistic between the two models' scores that warns.
    pub warn_ks: f64,
    /// KS statistic that denies.
    pub deny_ks: f64,
    /// PSI over the serving model's score deciles that warns.
    pub warn_psi: f64,
    /// PSI that denies.
    pub deny_psi: f64,
}

/// Loss thresholds (`compare-loss`): increases of the mean per-row loss on labelled rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LossRule {
    /// Level of the code.
    pub level: Level,
    /// Log-loss increase that warns.
    pub warn_log_loss: f64,
    /// Log-loss increase that denies.
    pub deny_log_loss: f64,
    /// Brier score increase that warns.
    pub warn_brier: f64,
    /// Brier score increase that denies.
    pub deny_brier: f64,
}

/// Segment regression thresholds (`compare-segment`), each beyond the rest of the rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SegmentRule {
    /// Level of the code.
    pub level: Level,
    /// Accuracy drop in the segment (beyond the rest's) that warns.
    pub warn_accuracy: f64,
    /// Accuracy drop that denies.
    pub deny_accuracy: f64,
    /// Gain of one class's predicted share in the segment (beyond the rest's) that warns.
    pub warn_shift: f64,
    /// Gain of one class's predicted share that denies.
    pub deny_shift: f64,
}

/// Settings of `poisongate compare` that are not one code's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct CompareSettings {
    /// With `--noise`, a statistic's thresholds become its pinned clean-retrain value plus
    /// this share of the policy threshold, when that is above the policy threshold.
    pub noise_scale: f64,
    /// Smallest segment (rows) tested by `compare-segment`.
    pub min_segment_rows: u64,
}

impl Default for CompareSettings {
    fn default() -> Self {
        Self {
            noise_scale: 0.5,
            min_segment_rows: 30,
        }
    }
}

/// Per-code settings. Keys are the finding codes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Checks {
    /// `schema-missing-column`.
    pub schema_missing_column: LevelOnly,
    /// `schema-extra-column`.
    pub schema_extra_column: LevelOnly,
    /// `schema-dtype-changed`.
    pub schema_dtype_changed: LevelOnly,
    /// `schema-null-rate`: thresholds on the increase of the null share (absolute points).
    pub schema_null_rate: RateRule,
    /// `schema-out-of-range`: thresholds on the share of values outside the pinned range.
    pub schema_out_of_range: RateRule,
    /// `schema-unseen-category`: thresholds on the share of rows holding unseen values.
    pub schema_unseen_category: RateRule,
    /// `schema-out-of-domain`: values outside a hard domain of `[domains]`.
    pub schema_out_of_domain: LevelOnly,
    /// `drift-numeric`.
    pub drift_numeric: NumericDrift,
    /// `drift-categorical`.
    pub drift_categorical: CategoricalDrift,
    /// `drift-label-prior`.
    pub drift_label_prior: CategoricalDrift,
    /// `drift-class-conditional`: thresholds on one class's distance beyond the other classes'.
    pub drift_class_conditional: RateRule,
    /// `poison-label-inconsistency`: thresholds on the estimated share of flipped labels.
    pub poison_label_inconsistency: RateRule,
    /// `poison-segment-label-shift`: thresholds on a segment's class-mix total variation.
    pub poison_segment_label_shift: RateRule,
    /// `poison-trigger`.
    pub poison_trigger: TriggerRule,
    /// `poison-point-mass`: thresholds on a value's excess share of the batch.
    pub poison_point_mass: RateRule,
    /// `poison-anomalous-rows`: thresholds on the excess share of anomalous rows.
    pub poison_anomalous_rows: RateRule,
    /// `poison-duplicate-flood`: thresholds on the excess share of repeated rows.
    pub poison_duplicate_flood: RateRule,
    /// `poison-label-conflict`: thresholds on the excess share of rows that contradict trusted
    /// rows' labels.
    pub poison_label_conflict: RateRule,
    /// `output-prediction`: drift of a pinned prediction column (as `drift-categorical`).
    pub output_prediction: CategoricalDrift,
    /// `output-score`: drift of a pinned score column (as `drift-numeric`).
    pub output_score: NumericDrift,
    /// `compare-flip-rate`: thresholds on the share of rows whose prediction changed.
    pub compare_flip_rate: RateRule,
    /// `compare-targeted-flips`: thresholds on the net change of one class's predicted share.
    pub compare_targeted_flips: RateRule,
    /// `compare-accuracy`: thresholds on the accuracy drop (points of accuracy, as a share).
    pub compare_accuracy: RateRule,
    /// `compare-loss`.
    pub compare_loss: LossRule,
    /// `compare-class-recall`: thresholds on one class's recall drop.
    pub compare_class_recall: RateRule,
    /// `compare-segment`: thresholds on a segment's accuracy drop or shift toward one class,
    /// beyond the rest of the rows.
    pub compare_segment: SegmentRule,
    /// `compare-score-shift`.
    pub compare_score_shift: ScoreShift,
    /// `compare-calibration`: thresholds on the increase of the expected calibration error.
    pub compare_calibration: RateRule,
    /// `integrity-sse-kms-missing`: an input not SSE-KMS encrypted under
    /// `--require-sse-kms`.
    pub integrity_sse_kms_missing: LevelOnly,
}

impl Default for Checks {
    fn default() -> Self {
        let level = |level| LevelOnly { level };
        let rate = |warn, deny| RateRule {
            level: Level::Deny,
            warn,
            deny,
        };
        Self {
            schema_missing_column: level(Level::Deny),
            schema_extra_column: level(Level::Warn),
            schema_dtype_changed: level(Level::Deny),
            schema_null_rate: RateRule {
                level: Level::Deny,
                warn: 0.02,
                deny: 0.10,
            },
            schema_out_of_range: RateRule {
                level: Level::Deny,
                warn: 0.001,
                deny: 0.01,
            },
            schema_unseen_category: RateRule {
                level: Level::Deny,
                warn: 0.005,
                deny: 0.05,
            },
            schema_out_of_domain: level(Level::Deny),
            // 0.25 sd shift: KS 0.10, W1/sd 0.25 (warn); 0.5 sd: KS 0.20, W1/sd 0.5 (deny).
            drift_numeric: NumericDrift {
                level: Level::Deny,
                warn_ks: 0.05,
                deny_ks: 0.15,
                warn_wasserstein: 0.1,
                deny_wasserstein: 0.4,
                warn_psi: 0.1,
                deny_psi: 0.25,
            },
            drift_categorical: CategoricalDrift {
                level: Level::Deny,
                warn_psi: 0.1,
                deny_psi: 0.25,
                warn_js: 0.1,
                deny_js: 0.25,
            },
            drift_label_prior: CategoricalDrift {
                level: Level::Deny,
                warn_psi: 0.02,
                deny_psi: 0.1,
                warn_js: 0.05,
                deny_js: 0.15,
            },
            drift_class_conditional: rate(0.1, 0.2),
            // 5% random flips estimate at about 0.05; clean batches at 0 ± sampling noise.
            poison_label_inconsistency: rate(0.015, 0.03),
            poison_segment_label_shift: rate(0.05, 0.1),
            poison_trigger: TriggerRule {
                level: Level::Deny,
                warn: 0.002,
                deny: 0.005,
                concentration: 0.9,
            },
            poison_point_mass: rate(0.002, 0.005),
            poison_anomalous_rows: rate(0.005, 0.01),
            poison_duplicate_flood: rate(0.005, 0.01),
            poison_label_conflict: rate(0.005, 0.01),
            output_prediction: CategoricalDrift {
                level: Level::Deny,
                warn_psi: 0.1,
                deny_psi: 0.25,
                warn_js: 0.1,
                deny_js: 0.25,
            },
            output_score: NumericDrift {
                level: Level::Deny,
                warn_ks: 0.05,
                deny_ks: 0.15,
                warn_wasserstein: 0.1,
                deny_wasserstein: 0.4,
                warn_psi: 0.1,
                deny_psi: 0.25,
            },
            // A clean retrain on a noisy task flips 5-20% of predictions: the flip rate alone
            // denies only far beyond that; --noise makes it relative to a pinned clean retrain.
            compare_flip_rate: RateRule {
                level: Level::Deny,
                warn: 0.15,
                deny: 0.3,
            },
            compare_targeted_flips: rate(0.02, 0.05),
            compare_accuracy: rate(0.01, 0.02),
            compare_loss: LossRule {
                level: Level::Deny,
                warn_log_loss: 0.02,
                deny_log_loss: 0.05,
                warn_brier: 0.01,
                deny_brier: 0.02,
            },
            compare_class_recall: rate(0.03, 0.06),
            // A clean retrain of a weak model can move a segment whose rows sit near the
            // decision boundary by 10-20 points; a backdoor moves its segment by far more.
            compare_segment: SegmentRule {
                level: Level::Deny,
                warn_accuracy: 0.05,
                deny_accuracy: 0.1,
                warn_shift: 0.1,
                deny_shift: 0.25,
            },
            compare_score_shift: ScoreShift {
                level: Level::Deny,
                warn_ks: 0.1,
                deny_ks: 0.2,
                warn_psi: 0.1,
                deny_psi: 0.25,
            },
            compare_calibration: rate(0.02, 0.05),
            integrity_sse_kms_missing: level(Level::Deny),
        }
    }
}

/// A waiver of one code, optionally for one column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Exception {
    /// The code waived.
    pub code: String,
    /// The column it is waived for (all columns when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    /// Why: required, shown in reports.
    pub reason: String,
}

/// Where the policy came from, for reports.
#[derive(Debug, Clone)]
pub struct LoadedPolicy {
    /// The validated policy.
    pub policy: Policy,
    /// The file, or `None` for the built-in defaults.
    pub path: Option<String>,
    /// SHA-256 of the effective policy's canonical JSON.
    pub sha256: String,
}

impl Policy {
    /// Reads and validates a policy file; `None` gives the defaults.
    ///
    /// # Errors
    /// Unreadable file, TOML syntax, unknown keys, values out of range, exceptions without a
    /// reason or naming an unknown code.
    pub fn load(path: Option<&Path>) -> Result<LoadedPolicy> {
        let policy = match path {
            None => Self::default(),
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| Error::policy(p, crate::source::io_cause(&e)))?;
                let policy = Self::from_toml(&text).map_err(|e| Error::policy(p, e))?;
                policy.validate().map_err(|cause| Error::policy(p, cause))?;
                policy
            }
        };
        let sha256 = policy.digest()?;
        Ok(LoadedPolicy {
            policy,
            path: path.map(|p| p.display().to_string()),
            sha256,
        })
    }

    /// Parses a policy: the file's keys are laid over the defaults key by key, so a section
    /// may set one threshold and keep the others; keys the defaults do not have are errors.
    ///
    /// # Errors
    /// TOML syntax, unknown keys, wrong types.
    pub fn from_toml(text: &str) -> std::result::Result<Self, String> {
        let user: toml::Table = toml::from_str(text).map_err(|e| toml_error(text, &e))?;
        let toml::Value::Table(mut merged) =
            toml::Value::try_from(Self::default()).map_err(|e| e.to_string())?
        else {
            return Err("default policy is not a table".to_owned());
        };
        overlay(&mut merged, user);
        toml::Value::Table(merged)
            .try_into()
            .map_err(|e: toml::de::Error| e.message().to_owned())
    }

    /// SHA-256 of the canonical JSON of this policy.
    ///
    /// # Errors
    /// Serialisation failure (a bug).
    pub fn digest(&self) -> Result<String> {
        let json = serde_json::to_vec(self).map_err(|e| Error::Internal(e.to_string()))?;
        Ok(hex::encode(Sha256::digest(&json)))
    }

    /// Checks ranges and exceptions.
    ///
    /// # Errors
    /// A description of the first problem.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let g = &self.gate;
        if !(g.alpha > 0.0 && g.alpha <= 0.5) {
            return Err(format!("gate.alpha must be in (0, 0.5], got {}", g.alpha));
        }
        if g.null_draws > 100_000 {
            return Err(format!(
                "gate.null-draws must be at most 100000, got {}",
                g.null_draws
            ));
        }
        if !(g.null_level > 0.5 && g.null_level < 1.0) {
            return Err(format!(
                "gate.null-level must be in (0.5, 1), got {}",
                g.null_level
            ));
        }
        let c = &self.checks;
        let pairs = c.threshold_pairs();
        let cs = &self.compare;
        if !(cs.noise_scale.is_finite() && cs.noise_scale >= 0.0) {
            return Err(format!(
                "compare.noise-scale must be finite and non-negative, got {}",
                cs.noise_scale
            ));
        }
        if cs.min_segment_rows == 0 {
            return Err("compare.min-segment-rows must be at least 1".to_owned());
        }
        if !(c.poison_trigger.concentration > 0.0 && c.poison_trigger.concentration <= 1.0) {
            return Err(format!(
                "checks.poison-trigger.concentration must be in (0, 1], got {}",
                c.poison_trigger.concentration
            ));
        }
        for (name, warn, deny) in &pairs {
            let (warn, deny) = (*warn, *deny);
            if !(warn.is_finite() && deny.is_finite() && warn >= 0.0 && deny >= 0.0) {
                return Err(format!(
                    "checks.{name}: thresholds must be finite and non-negative"
                ));
            }
            if warn > deny {
                return Err(format!(
                    "checks.{name}: warn threshold {warn} exceeds deny threshold {deny}"
                ));
            }
        }
        for (col, d) in &self.domains {
            if d.min.is_none() && d.max.is_none() && d.categories.is_none() {
                return Err(format!("domains.{col}: give min, max or categories"));
            }
            if d.categories.is_some() && (d.min.is_some() || d.max.is_some()) {
                return Err(format!(
                    "domains.{col}: categories cannot be combined with min or max"
                ));
            }
            let lo = d.min.unwrap_or(f64::NEG_INFINITY);
            let hi = d.max.unwrap_or(f64::INFINITY);
            if lo.is_nan() || hi.is_nan() || lo > hi {
                return Err(format!("domains.{col}: min must not exceed max"));
            }
        }
        for e in &self.exceptions {
            if crate::codes::lookup(&e.code).is_none() {
                return Err(format!(
                    "exception names unknown code `{}` (see `poisongate explain --list`)",
                    e.code
                ));
            }
            if e.reason.trim().is_empty() {
                return Err(format!(
                    "exception for `{}` needs a non-empty reason",
                    e.code
                ));
            }
        }
        Ok(())
    }

    /// The level configured for a code (deny for a code without a section, such as
    /// `policy-unused-exception`).
    #[must_use]
    pub fn level(&self, code: &str) -> Level {
        self.checks
            .sections()
            .get(code)
            .and_then(|s| s.get("level"))
            .and_then(|l| serde_json::from_value(l.clone()).ok())
            .unwrap_or(Level::Deny)
    }
}

impl Checks {
    /// Each code's section, keyed by its code: the sections' kebab-case names are the
    /// registry's codes (a test holds them to it), so levels and thresholds are looked up
    /// by code without a second list of codes.
    fn sections(&self) -> serde_json::Map<String, serde_json::Value> {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        }
    }

    /// Every warn/deny threshold pair: `warn` with `deny`, and `warn-X` with `deny-X` (named
    /// `CODE X`).
    fn threshold_pairs(&self) -> Vec<(String, f64, f64)> {
        let mut out = Vec::new();
        for (code, section) in self.sections() {
            let serde_json::Value::Object(keys) = section else {
                continue;
            };
            for (key, warn) in &keys {
                let Some(rest) = key.strip_prefix("warn") else {
                    continue;
                };
                let deny = keys
                    .get(&format!("deny{rest}"))
                    .and_then(serde_json::Value::as_f64);
                let name = match rest.strip_prefix('-') {
                    Some(stat) => format!("{code} {stat}"),
                    None => code.clone(),
                };
                out.push((
                    name,
                    warn.as_f64().unwrap_or(f64::NAN),
                    deny.unwrap_or(f64::NAN),
                ));
            }
        }
        out
    }
}

/// A TOML error as one line with its line number.
fn toml_error(text: &str, e: &toml::de::Error) -> String {
    match e.span() {
        Some(span) => {
            let line = text
                .get(..span.start)
                .map_or(0, |t| t.matches('\n').count())
                + 1;
            format!("line {line}: {}", e.message())
        }
        None => e.message().to_owned(),
    }
}

/// Lays `top` over `base`: tables merge recursively, anything else replaces.
fn overlay(base: &mut toml::Table, top: toml::Table) {
    for (key, value) in top {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(t)) => overlay(b, t),
            (_, v) => {
                base.insert(key, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_round_trip_through_toml() {
        let p = Policy::default();
        p.validate().unwrap();
        let text = toml::to_string(&p).unwrap();
        let back: Policy = toml::from_str(&text).unwrap();
        assert_eq!(back, p);
    }

    #[test]
    fn every_section_is_a_registry_code_and_every_configurable_code_has_one() {
        let c = Checks::default();
        let sections = c.sections();
        for (code, section) in &sections {
            assert!(crate::codes::lookup(code).is_some(), "{code}");
            assert!(section.get("level").is_some(), "{code}");
        }
        for info in crate::codes::CODES {
            if info.code != "policy-unused-exception" {
                assert!(sections.contains_key(info.code), "{}", info.code);
            }
        }
        // Every threshold pair is found, and an inverted one is refused by its name.
        assert_eq!(c.threshold_pairs().len(), 34);
        let mut p = Policy::default();
        p.checks.drift_numeric.warn_psi = 9.0;
        let e = p.validate().unwrap_err();
        assert!(
            e.contains("checks.drift-numeric psi: warn threshold 9"),
            "{e}"
        );
        p = Policy::default();
        p.checks.poison_trigger.level = Level::Warn;
        assert_eq!(p.level("poison-trigger"), Level::Warn);
        assert_eq!(p.level("policy-unused-exception"), Level::Deny);
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = Policy::from_toml("[checks.drift-numeric]\nlevel = \"deny\"\ndeny-kss = 0.2\n");
        assert!(err.unwrap_err().contains("deny-kss"));
        assert!(Policy::from_toml("[gate]\nalfa = 0.05\n").is_err());
        assert!(Policy::from_toml("[checks.drift-nope]\nlevel = \"deny\"\n").is_err());
    }

    #[test]
    fn a_section_may_set_one_key_and_keep_the_other_defaults() {
        let p = Policy::from_toml("[checks.drift-label-prior]\ndeny-psi = 0.3\n").unwrap();
        let mut want = Policy::default();
        want.checks.drift_label_prior.deny_psi = 0.3;
        assert_eq!(p, want);
    }

    #[test]
    fn exceptions_need_a_reason_and_a_known_code() {
        let mut p = Policy::default();
        p.exceptions.push(Exception {
            code: "drift-numeric".into(),
            column: None,
            reason: " ".into(),
        });
        assert!(p.validate().is_err());
        p.exceptions[0] = Exception {
            code: "drift-nope".into(),
            column: None,
            reason: "x".into(),
        };
        assert!(p.validate().is_err());
    }
}
