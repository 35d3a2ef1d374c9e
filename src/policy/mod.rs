//! The policy (`poisongate.toml`): per finding code a level and its thresholds.
//!
//! Defaults live in code ([`Policy::default`]); a file overrides any subset. Unknown keys are
//! an error, so a misspelled threshold can never silently disable a check. Exceptions waive a
//! code for one column and must give a reason; an exception that matches nothing is reported.

mod checks;
mod rows;
mod template;

pub use crate::detect::rules::{Level, RateRule, RowRule, RowRules, TriggerRule};
pub use checks::*;

pub use template::template;

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

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
    /// `strict` for production pipelines: an unpinned baseline or policy blocks, and S3
    /// inputs must be encrypted with SSE-KMS even without `--require-sse-kms`.
    #[serde(skip_serializing_if = "Profile::is_default")]
    pub profile: Profile,
    /// Set by a re-check after a quarantine (`check --after-quarantine`), never read from a
    /// file: `evidence-insufficient` then denies under any profile, because a re-check must
    /// show the remaining rows clean and a size at which the tests could not have seen the
    /// policy's attacks cannot show that.
    #[serde(skip)]
    #[schemars(skip)]
    pub insufficient_denies: bool,
}

impl Default for Gate {
    fn default() -> Self {
        Self {
            alpha: 0.01,
            null_draws: 200,
            null_level: 0.995,
            profile: Profile::Default,
            insufficient_denies: false,
        }
    }
}

/// How much of the run's own trust the gate demands (`[gate] profile`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// An unpinned baseline is a warning; S3 encryption is checked only when asked.
    #[default]
    Default,
    /// The recommended setting for production: the baseline must be pinned by digest or
    /// signature, the policy by `--expect-policy-sha256`, and S3 inputs must carry SSE-KMS.
    Strict,
}

impl Profile {
    /// Whether this is the default profile (which the policy's digest leaves out, so that
    /// digests pinned before the profile existed still hold).
    #[must_use]
    pub fn is_default(&self) -> bool {
        *self == Self::Default
    }

    /// Whether this is the strict profile.
    #[must_use]
    pub fn is_strict(self) -> bool {
        self == Self::Strict
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
        let trigger = crate::poison::trigger::rule(&self.checks.rows);
        if !(trigger.concentration > 0.0 && trigger.concentration <= 1.0) {
            return Err(format!(
                "checks.poison-trigger.concentration must be in (0, 1], got {}",
                trigger.concentration
            ));
        }
        let seg = &c.compare_segment;
        if !(seg.small_allowance.is_finite() && seg.small_allowance >= 0.0) {
            return Err(format!(
                "checks.compare-segment.small-allowance must be finite and non-negative, got {}",
                seg.small_allowance
            ));
        }
        let probe = &c.compare_trigger_response;
        if !(probe.rare_allowance.is_finite() && probe.rare_allowance >= 0.0) {
            return Err(format!(
                "checks.compare-trigger-response.rare-allowance must be finite and non-negative, got {}",
                probe.rare_allowance
            ));
        }
        if !(probe.rare_cap >= probe.deny && probe.rare_cap <= 1.0) {
            return Err(format!(
                "checks.compare-trigger-response.rare-cap must be between its deny threshold ({}) and 1, got {}",
                probe.deny, probe.rare_cap
            ));
        }
        let ev = &c.evidence_insufficient;
        for (name, share) in [
            ("outliers", ev.outliers),
            ("duplicates", ev.duplicates),
            ("trigger", ev.trigger),
            ("label-flips", ev.label_flips),
        ] {
            if !(0.0..1.0).contains(&share) {
                return Err(format!(
                    "checks.evidence-insufficient.{name} must be a share in [0, 1), got {share}"
                ));
            }
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
        // `verify --scan` takes no policy: its findings always block.
        let unconfigurable = [
            "policy-unused-exception",
            crate::scan::UNSAFE,
            crate::scan::NEW_IMPORT,
        ];
        for info in crate::codes::all() {
            if !unconfigurable.contains(&info.code) {
                assert!(sections.contains_key(info.code), "{}", info.code);
            }
        }
        // Every threshold pair is found, and an inverted one is refused by its name.
        assert_eq!(c.threshold_pairs().len(), 36);
        let mut p = Policy::default();
        p.checks.drift_numeric.warn_psi = 9.0;
        let e = p.validate().unwrap_err();
        assert!(
            e.contains("checks.drift-numeric psi: warn threshold 9"),
            "{e}"
        );
        p = Policy::default();
        *p.checks.rows.level_mut("poison-trigger").unwrap() = Level::Warn;
        assert_eq!(p.level("poison-trigger"), Level::Warn);
        assert_eq!(p.level("policy-unused-exception"), Level::Deny);
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = Policy::from_toml("[checks.drift-numeric]\nlevel = \"deny\"\ndeny-kss = 0.2\n");
        assert!(err.unwrap_err().contains("deny-kss"));
        assert!(Policy::from_toml("[gate]\nalfa = 0.05\n").is_err());
        assert!(Policy::from_toml("[checks.drift-nope]\nlevel = \"deny\"\n").is_err());
        // A row-level detector's section is refused by its own kind, named by its code.
        let err = Policy::from_toml("[checks.poison-trigger]\nconcentraton = 0.5\n").unwrap_err();
        assert!(
            err.contains("checks.poison-trigger") && err.contains("concentraton"),
            "{err}"
        );
        let err = Policy::from_toml("[checks.poison-stitched-rows]\nlevel = \"maybe\"\n");
        assert!(err.unwrap_err().contains("checks.poison-stitched-rows"));
    }

    #[test]
    fn a_detector_section_reaches_the_detector_and_the_rest_keep_their_defaults() {
        use crate::poison::{ROW_CODES, stitched, trigger};
        let p = Policy::from_toml(
            "[checks.poison-stitched-rows]\nwarn = 0.03\ndeny = 0.4\n[checks.poison-trigger]\nlevel = \"warn\"\n",
        )
        .unwrap();
        let r = p
            .checks
            .rows
            .rate(stitched::CODE.info.code, &stitched::RULE);
        assert_eq!((r.level, r.warn, r.deny), (Level::Deny, 0.03, 0.4));
        assert_eq!(p.level("poison-stitched-rows"), Level::Deny);
        assert_eq!(p.level("poison-trigger"), Level::Warn);
        assert_eq!(trigger::rule(&p.checks.rows).deny, trigger::RULE.deny);
        // Every detector's code has its section, with its detector's defaults.
        let d = Policy::default();
        for code in ROW_CODES.iter().flat_map(|c| c.iter()) {
            assert_eq!(d.checks.rows.get(code.info.code), Some(&code.rule));
            let left = p.checks.rows.get(code.info.code).unwrap();
            if !["poison-stitched-rows", "poison-trigger"].contains(&code.info.code) {
                assert_eq!(left, &code.rule, "{}", code.info.code);
            }
        }
        // The sections round-trip through the policy's own TOML.
        let text = toml::to_string(&p).unwrap();
        assert_eq!(Policy::from_toml(&text).unwrap(), p);
    }

    #[test]
    fn a_section_may_set_one_key_and_keep_the_other_defaults() {
        let p = Policy::from_toml("[checks.drift-label-prior]\ndeny-psi = 0.3\n").unwrap();
        let mut want = Policy::default();
        want.checks.drift_label_prior.deny_psi = 0.3;
        assert_eq!(p, want);
    }

    #[test]
    fn rarity_allowance_keys_are_checked() {
        let load = |text: &str| {
            let p = Policy::from_toml(text)?;
            p.validate().map(|()| p)
        };
        let p = load("[checks.compare-trigger-response]\nrare-allowance = 0.0\n").unwrap();
        assert_eq!(p.checks.compare_trigger_response.rare_allowance, 0.0);
        let err = load("[checks.compare-trigger-response]\nrare-cap = 0.2\n").unwrap_err();
        assert!(err.contains("rare-cap"), "{err}");
        let err = load("[checks.compare-trigger-response]\nrare-allowance = -1.0\n").unwrap_err();
        assert!(err.contains("rare-allowance"), "{err}");
        let p = load("[checks.compare-segment]\nsmall-allowance = 0.0\n").unwrap();
        assert_eq!(p.checks.compare_segment.small_allowance, 0.0);
        let err = load("[checks.compare-segment]\nsmall-allowance = nan\n").unwrap_err();
        assert!(err.contains("small-allowance"), "{err}");
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
