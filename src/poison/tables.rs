//! The batch's per-feature class tables, the state that `poison-segment-label-shift` and
//! `drift-class-conditional` decide from (and whose totals place the label test's region).
//!
//! Per feature, labelled rows by code and class (`code * classes + class`), and the reference
//! model's expected class counts for the same rows, summed exactly ([`ExactSum`]) so that any
//! split of the batch gives the same sums. Size: the features' codes times the classes,
//! whatever the rows.

use serde::{Deserialize, Serialize};

use super::scan::{Block, Pinned};
use super::{Detector, Found, Scan, class_drift, class_tables, segment};
use crate::detect::rules::RowRules;
use crate::detect::{Accumulator, add_tables};
use crate::poison::RowCode;
use crate::stats::exact::ExactSum;

/// Class tables of the rows seen so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassTables {
    /// Per feature, labelled rows by code and class.
    pub tables: Vec<Vec<u64>>,
    /// Per feature, the model's expected class counts by code (empty without a model).
    pub expected: Vec<Vec<ExactSum>>,
}

impl ClassTables {
    /// The expected counts, rounded once.
    #[must_use]
    pub fn expected_values(&self) -> Vec<Vec<f64>> {
        self.expected
            .iter()
            .map(|t| t.iter().map(ExactSum::value).collect())
            .collect()
    }
}

impl Accumulator<Pinned<'_>, Block> for ClassTables {
    fn new(p: &Pinned<'_>) -> Option<Self> {
        let profile = p.profile;
        if profile.tables.is_empty() {
            return None;
        }
        let shape =
            |k: usize| -> Vec<usize> { profile.cardinality.iter().map(|c| c * k).collect() };
        Some(Self {
            tables: shape(profile.classes)
                .into_iter()
                .map(|n| vec![0; n])
                .collect(),
            expected: if profile.label_model.is_some() {
                shape(profile.classes)
                    .into_iter()
                    .map(|n| vec![ExactSum::new(); n])
                    .collect()
            } else {
                Vec::new()
            },
        })
    }

    fn update(&mut self, p: &Pinned<'_>, b: &Block) {
        let profile = p.profile;
        let t = class_tables(
            &profile.cardinality,
            profile.classes,
            &b.e.codes,
            &b.e.label,
        );
        // Shapes are fixed by the profile; a block always fits.
        let _ = add_tables(&mut self.tables, &t);
        for (all, part) in self.expected.iter_mut().zip(&b.expected) {
            all.iter_mut().zip(part).for_each(|(s, &x)| s.add(x));
        }
    }

    fn merge(&mut self, _: &Pinned<'_>, other: Self) -> Result<(), String> {
        add_tables(&mut self.tables, &other.tables)?;
        if self.expected.len() != other.expected.len()
            || self
                .expected
                .iter()
                .zip(&other.expected)
                .any(|(a, b)| a.len() != b.len())
        {
            return Err("expected tables of different shapes".to_owned());
        }
        for (all, part) in self.expected.iter_mut().zip(&other.expected) {
            all.iter_mut().zip(part).for_each(|(s, x)| s.merge(x));
        }
        Ok(())
    }
}

impl Detector for ClassTables {
    const CODES: &'static [RowCode] = &[segment::CODE, class_drift::CODE];

    /// The segment and class-conditional candidates.
    fn finish(&self, p: &Pinned<'_>, scan: &Scan, rules: &RowRules) -> Vec<Found> {
        let mut v = segment::candidates(&p.baseline, p.profile, scan, rules);
        v.extend(
            class_drift::candidates(&p.baseline, p.profile, scan, rules)
                .into_iter()
                .map(|c| (c, None)),
        );
        v
    }
}
