//! Per-code sections of the policy: each code's level and thresholds, their defaults, and the
//! lookups by code that read them through the registry's names.

use serde::{Deserialize, Serialize};

use super::{Level, RateRule, RowRules};

/// A check with only a level.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LevelOnly {
    /// Level of the code.
    pub level: Level,
}

/// `evidence-insufficient`: the attacks a batch's tests must be able to show at its size, each
/// as a share of the batch's rows (0 leaves one out).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct EvidenceRule {
    /// Level of the code (the finding is a warning under the default profile, a deny under
    /// the strict one).
    pub level: Level,
    /// Rows far outside the trusted data (`poison-anomalous-rows`).
    pub outliers: f64,
    /// Rows repeated from others (`poison-duplicate-flood`).
    pub duplicates: f64,
    /// Rows carrying a trigger value new to the trusted data, all of one class
    /// (`poison-trigger`).
    pub trigger: f64,
    /// Labels flipped to another class at random (`poison-label-inconsistency`; absent in
    /// policies written before it was asked about: then 0.05).
    #[serde(default = "default_label_flips")]
    pub label_flips: f64,
}

fn default_label_flips() -> f64 {
    0.05
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

/// `compare-trigger-response`: thresholds on the rise of a probe's attack success rate, raised
/// for a value the models had few rows of to learn from.
///
/// What a model learns about one value it learns from the rows that hold it, and the
/// sampling error of anything estimated from `m` rows shrinks like `1/sqrt(m)` (a share's
/// standard error is at most `1/(2 sqrt(m))`). Two clean retrains therefore disagree about
/// a rare value by more than about a common one: on `benches/eval`'s clean retrains a value
/// held by 22 trusted rows moved 17% of probe rows to a class under one model and 75% under
/// the next, and a random forest's answer for a value held by 154 rows moved 46 points. Each
/// probe's thresholds are `warn + rare_allowance/sqrt(m)` and `deny + rare_allowance/sqrt(m)`,
/// neither above `rare_cap`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ProbeRule {
    /// Level of the code.
    pub level: Level,
    /// Rise of the success rate from which a significant probe warns, for a common value.
    pub warn: f64,
    /// Rise of the success rate from which a significant probe denies, for a common value.
    pub deny: f64,
    /// Added to both thresholds of a text or boolean input's value, divided by the square
    /// root of the value's rows (the baseline's count with `--baseline`, else the evaluation
    /// rows holding it); 0 keeps the thresholds flat. Policies written before it was asked
    /// about: 3.
    #[serde(default = "default_rare_allowance")]
    pub rare_allowance: f64,
    /// The most a rare value's thresholds are raised to: a success rate that rises this much
    /// denies however rare the value. Policies written before it was asked about: 0.75.
    #[serde(default = "default_rare_cap")]
    pub rare_cap: f64,
}

fn default_rare_allowance() -> f64 {
    3.0
}

fn default_rare_cap() -> f64 {
    0.75
}

impl ProbeRule {
    /// The (warn, deny) thresholds for a value held by `rows` rows.
    #[must_use]
    pub fn thresholds(&self, rows: f64) -> (f64, f64) {
        let extra = if rows > 0.0 {
            self.rare_allowance / rows.sqrt()
        } else {
            f64::INFINITY
        };
        let raise = |t: f64| {
            if self.rare_allowance == 0.0 {
                t
            } else {
                (t + extra).min(self.rare_cap.max(t))
            }
        };
        (raise(self.warn), raise(self.deny))
    }
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

/// Segment regression thresholds (`compare-segment`), each beyond the rest of the rows, raised
/// for a small segment.
///
/// A retrain's answers on a segment are learned from the training rows like it, so two clean
/// retrains disagree about a small segment by more than about a large one (the same `1/sqrt(m)`
/// argument as [`ProbeRule`]). The rows of one segment also move together: a tree that moves
/// a split moves every row beside it, so a per-row test of the flips (binomial, rows taken as
/// independent) finds a clean retrain's move significant. On `benches/eval`'s clean retrains a
/// 58-row segment lost 22 points of accuracy and a 140-row one 11 points, with the other rows
/// unchanged. Each statistic's thresholds are `threshold + small_allowance/sqrt(m)`, `m` the
/// segment's rows (its labelled rows for the accuracy drop).
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
    /// Added to every threshold, divided by the square root of the segment's rows; 0 keeps
    /// the thresholds flat. Policies written before it was asked about: 2.
    #[serde(default = "default_small_allowance")]
    pub small_allowance: f64,
}

fn default_small_allowance() -> f64 {
    2.0
}

impl SegmentRule {
    /// A threshold raised for a segment of `rows` rows (at least one).
    #[must_use]
    pub fn raised(&self, threshold: f64, rows: u64) -> f64 {
        threshold + self.small_allowance / (rows.max(1) as f64).sqrt()
    }
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

/// Per-code settings. Keys are the finding codes; an unknown key is an error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, rename_all = "kebab-case")]
#[schemars(extend("additionalProperties" = false))]
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
    /// Each row-level detector's code (`drift-class-conditional` and the `poison-*` codes),
    /// as its detector declares it ([`crate::poison::Detector::CODES`]).
    // Every key that is not a field above or below reaches `RowRules`, which refuses the ones
    // that are not a row-level code either: serde's `deny_unknown_fields` does not combine
    // with `flatten`.
    #[serde(flatten)]
    pub rows: RowRules,
    /// `output-prediction`: drift of a pinned prediction column (as `drift-categorical`).
    pub output_prediction: CategoricalDrift,
    /// `output-score`: drift of a pinned score column (as `drift-numeric`).
    pub output_score: NumericDrift,
    /// `compare-flip-rate`: thresholds on the share of rows whose prediction changed.
    pub compare_flip_rate: RateRule,
    /// `compare-targeted-flips`: thresholds on the net change of one class's predicted share
    /// (with labels, of its share of wrong predictions on the labelled rows).
    pub compare_targeted_flips: RateRule,
    /// `compare-accuracy`: thresholds on the accuracy drop (points of accuracy, as a share).
    pub compare_accuracy: RateRule,
    /// `compare-loss`.
    pub compare_loss: LossRule,
    /// `compare-class-recall`: thresholds on one class's recall drop.
    pub compare_class_recall: RateRule,
    /// `compare-segment`: thresholds on a segment's accuracy drop or shift toward one class,
    /// beyond the rest of the rows, raised for a small segment.
    pub compare_segment: SegmentRule,
    /// `compare-score-shift`.
    pub compare_score_shift: ScoreShift,
    /// `compare-calibration`: thresholds on the increase of the expected calibration error.
    pub compare_calibration: RateRule,
    /// `compare-trigger-response`: thresholds on the rise of a counterfactual probe's attack
    /// success rate, retrained model over serving model.
    pub compare_trigger_response: ProbeRule,
    /// `integrity-sse-kms-missing`: an input not SSE-KMS encrypted under
    /// `--require-sse-kms`.
    pub integrity_sse_kms_missing: LevelOnly,
    /// `integrity-quarantine-lineage`: with `--after-quarantine`, a batch that is not the
    /// parent minus its quarantine.
    pub integrity_quarantine_lineage: LevelOnly,
    /// `integrity-quarantine-residual`: with `--after-quarantine`, a parent finding that
    /// dropping the quarantine does not clear.
    pub integrity_quarantine_residual: LevelOnly,
    /// `integrity-baseline-unpinned`: a baseline pinned by neither digest nor signature (a
    /// warning, a deny under the strict profile).
    pub integrity_baseline_unpinned: LevelOnly,
    /// `integrity-policy-unpinned`: under the strict profile, a policy not pinned by
    /// `--expect-policy-sha256`.
    pub integrity_policy_unpinned: LevelOnly,
    /// `integrity-ledger-window`: with `--ledger`, a deny over the window of accepted
    /// batches.
    pub integrity_ledger_window: LevelOnly,
    /// `evidence-insufficient`: the named attacks this batch's size puts out of reach.
    pub evidence_insufficient: EvidenceRule,
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
            rows: RowRules::default(),
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
            // decision boundary by 10-20 points (more in a small one, hence the allowance);
            // a backdoor moves its segment by far more.
            compare_segment: SegmentRule {
                level: Level::Deny,
                warn_accuracy: 0.05,
                deny_accuracy: 0.1,
                warn_shift: 0.1,
                deny_shift: 0.25,
                small_allowance: default_small_allowance(),
            },
            compare_score_shift: ScoreShift {
                level: Level::Deny,
                warn_ks: 0.1,
                deny_ks: 0.2,
                warn_psi: 0.1,
                deny_psi: 0.25,
            },
            compare_calibration: rate(0.02, 0.05),
            // Two clean retrains answer a changed value alike up to retraining noise; a
            // backdoor moves most probe rows to its class under the retrained model alone.
            compare_trigger_response: ProbeRule {
                level: Level::Deny,
                warn: 0.1,
                deny: 0.25,
                rare_allowance: default_rare_allowance(),
                rare_cap: default_rare_cap(),
            },
            integrity_sse_kms_missing: level(Level::Deny),
            integrity_quarantine_lineage: level(Level::Deny),
            integrity_quarantine_residual: level(Level::Deny),
            integrity_baseline_unpinned: level(Level::Deny),
            integrity_policy_unpinned: level(Level::Deny),
            integrity_ledger_window: level(Level::Deny),
            evidence_insufficient: EvidenceRule {
                level: Level::Deny,
                outliers: 0.02,
                duplicates: 0.02,
                trigger: 0.01,
                label_flips: default_label_flips(),
            },
        }
    }
}

impl Checks {
    /// Each code's section, keyed by its code: the sections' kebab-case names are the
    /// registry's codes (a test holds them to it), so levels and thresholds are looked up
    /// by code without a second list of codes.
    pub(super) fn sections(&self) -> serde_json::Map<String, serde_json::Value> {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        }
    }

    /// Every warn/deny threshold pair: `warn` with `deny`, and `warn-X` with `deny-X` (named
    /// `CODE X`).
    pub(super) fn threshold_pairs(&self) -> Vec<(String, f64, f64)> {
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
