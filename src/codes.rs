//! The registry of every code this build can emit, in one list: the schema and drift codes,
//! then each row-level detector's codes in the order of the detector registry
//! ([`crate::poison::ROW_CODES`], declared in the detectors' own files), then the rest.
//! Everything else (the policy's levels, the list of row-level codes, `explain`, the tests
//! that walk every code) reads this list.
//!
//! Codes are stable; a test holds every code of earlier builds to it, so that a rename or a
//! removal shows in review.

use std::sync::LazyLock;

pub use crate::detect::registry::{
    AFTER_ROWS, BEFORE_ROWS, CodeInfo, DETECTOR_WEIGHT, Family, SHARED_WEIGHT, Weight,
};

static ALL: LazyLock<Vec<CodeInfo>> = LazyLock::new(|| {
    let rows = crate::poison::ROW_CODES
        .iter()
        .flat_map(|c| c.iter().map(|r| &r.info));
    BEFORE_ROWS
        .iter()
        .chain(rows)
        .chain(AFTER_ROWS)
        .copied()
        .collect()
});

/// Every code, in registry order.
#[must_use]
pub fn all() -> &'static [CodeInfo] {
    &ALL
}

/// Looks a code up.
#[must_use]
pub fn lookup(code: &str) -> Option<&'static CodeInfo> {
    all().iter().find(|c| c.code == code)
}

/// The codes of one family, in registry order.
pub fn of_family(family: Family) -> impl Iterator<Item = &'static str> {
    all()
        .iter()
        .filter(move |c| c.family == family)
        .map(|c| c.code)
}

/// The codes of the row-level detectors; when the policy allows all of them, `check` skips
/// the row pass.
pub fn row_codes() -> impl Iterator<Item = &'static str> {
    of_family(Family::Row)
}

/// The row-level codes whose pinned null is over every feature together
/// ([`CodeInfo::joint`]).
pub fn joint_codes() -> impl Iterator<Item = &'static str> {
    all()
        .iter()
        .filter(|c| c.family == Family::Row && c.joint)
        .map(|c| c.code)
}

/// The weight of a code's tests (weight 1 for a code the registry does not know).
#[must_use]
pub fn weight(code: &str) -> Weight {
    lookup(code).map_or(Weight::One, |c| c.weight)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_code_and_doc_anchor_is_consistent() {
        for c in all() {
            if c.family == Family::Row {
                assert_ne!(
                    c.weight == Weight::One,
                    c.code.starts_with("poison-"),
                    "{}",
                    c.code
                );
            } else {
                assert_eq!(c.weight, Weight::One, "{}", c.code);
                assert!(c.skip_phrase.is_empty(), "{}", c.code);
            }
            if !c.doc.is_empty() {
                let (file, anchor) = c.doc.split_once('#').unwrap();
                let text = std::fs::read_to_string(
                    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file),
                )
                .unwrap();
                assert!(text.contains(&format!("## `{anchor}`")), "{}", c.doc);
            }
        }
        // Row-level codes come from the detectors' files, and only from there.
        for c in BEFORE_ROWS.iter().chain(AFTER_ROWS) {
            assert_ne!(c.family, Family::Row, "{}", c.code);
            assert!(!c.joint, "{}", c.code);
        }
        for c in crate::poison::ROW_CODES.iter().flat_map(|c| c.iter()) {
            assert_eq!(c.info.family, Family::Row, "{}", c.info.code);
        }
        assert!(row_codes().count() >= 9);
    }

    #[test]
    fn codes_are_unique_kebab_case_and_stable() {
        let names: Vec<&str> = all().iter().map(|c| c.code).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len(), "duplicate code");
        for n in &names {
            assert!(
                n.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'),
                "{n}"
            );
        }
        // Renaming or removing a code breaks every pipeline that allow-lists it: every code
        // of earlier builds is still here (a new code joins the list once it has shipped).
        for stable in [
            "schema-missing-column",
            "schema-extra-column",
            "schema-dtype-changed",
            "schema-null-rate",
            "schema-out-of-range",
            "schema-out-of-domain",
            "schema-unseen-category",
            "drift-numeric",
            "drift-categorical",
            "drift-label-prior",
            "drift-class-conditional",
            "poison-label-inconsistency",
            "poison-segment-label-shift",
            "poison-trigger",
            "poison-point-mass",
            "poison-anomalous-rows",
            "poison-stitched-rows",
            "poison-duplicate-flood",
            "poison-label-conflict",
            "output-prediction",
            "output-score",
            "compare-flip-rate",
            "compare-targeted-flips",
            "compare-accuracy",
            "compare-loss",
            "compare-class-recall",
            "compare-segment",
            "compare-score-shift",
            "compare-calibration",
            "compare-trigger-response",
            "integrity-sse-kms-missing",
            "integrity-baseline-unpinned",
            "integrity-policy-unpinned",
            "integrity-ledger-window",
            "integrity-quarantine-lineage",
            "integrity-quarantine-residual",
            "integrity-model-unsafe",
            "integrity-model-imports",
            "evidence-insufficient",
            "policy-unused-exception",
        ] {
            assert!(
                names.contains(&stable),
                "code `{stable}` was renamed or removed"
            );
        }
    }
}
