//! The `poison-` detectors: signals of deliberate tampering that per-column drift statistics
//! cannot see (DESIGN §4), and the class-conditional drift check that shares their pass.
//!
//! At `profile` time [`build`] encodes every trusted row ([`crate::rows`]) and pins what the
//! detectors need, without raw rows: a reference model of P(label | features) with its
//! out-of-fold calibration ([`label`]), per-feature class tables ([`segment`],
//! [`class_drift`]), the copula and histogram scores of normal rows ([`anomaly`]), and the
//! duplicate rates and a membership filter of (row, label) pairs ([`duplicates`]). Exact-value
//! frequencies for [`point_mass`] and [`trigger`] live in the column profiles.
//!
//! At `check` time [`scan`] encodes and scores the batch block by block and folds every block
//! into the accumulators of the registry ([`States`]: one line each, below); each detector
//! turns its merged state into [`Candidate`]s that go through the same decision rule and
//! multiplicity adjustment as the drift checks. No state grows with the rows. Two detectors
//! ([`point_mass`], [`trigger`]) need the rows and labels of the few values that can pass
//! their pre-screen; the row pass's exact counts say which, and only when there is one are
//! their columns read again ([`values`], in one read that also scores the few rows of a
//! concentrated value with the reference model for the trigger). [`quarantine`] lists the rows behind the
//! findings that fired in a read that encodes and scores the rows again.
//!
//! **Adding a row-level detector:** a file with its state (an [`Accumulator`] over
//! [`Block`]s) that is a [`Detector`] (its codes, each with its registry entry and its policy
//! section's defaults, and a `finish` that turns the merged state into candidates), and a line
//! in the registry below, which declares the file's module. A detector that pins something
//! new from trusted data adds it to [`PoisonProfile`]; one whose rows the quarantine finds by
//! scoring the batch again adds its selector to [`quarantine`].

pub mod anomaly;
pub mod class_drift;
pub mod flip_lr;
pub mod flip_power;
pub mod gbdt;
pub mod label;
mod quarantine;
pub mod scan;
pub mod segment;
pub mod trigger;
pub mod values;

pub(crate) use quarantine::for_each_block;
pub use quarantine::{
    QuarantineFormat, QuarantineRow, RowSelector, SecondPass, ids_of, quarantine,
    render_quarantine, render_scores, residuals, row_scores, second_pass,
};
pub use scan::{Block, BlockScorer, LR_ROWS, LrRow, Pinned, Scan, ScanFold, ScanState, scan};

use polars::prelude::DataFrame;
use serde::{Deserialize, Serialize};

use crate::detect::registry::CodeInfo;
use crate::detect::rules::{RowRule, RowRules};
use crate::detect::{Accumulator, Candidate};
use crate::error::Result;
use crate::pinned::Trusted;
use crate::rows::{Encoded, Encoder, NO_CLASS};
use crate::source::Rows as BatchRows;
use crate::summary::BatchSummary;

pub use label::DEFAULT_MODEL_ROWS;

/// Most classes the row-level label detectors handle; more suggests an id-like label.
pub const MAX_MODEL_CLASSES: usize = 20;

/// Fewest rows a row-level rate test (outliers, duplicates, label conflict, label
/// inconsistency) tests: below it none of them runs.
pub const MIN_ROWS: u64 = 30;

/// What the detectors read of a baseline: the trusted columns and label ([`Trusted`], which
/// it dereferences to) and the detectors' own pinned profile. The baseline module builds it
/// ([`crate::baseline::Baseline::view`]); nothing here imports the baseline artifact.
#[derive(Debug, Clone, Copy)]
pub struct BaselineView<'a> {
    /// The trusted data's column and label profiles.
    pub trusted: Trusted<'a>,
    /// What the detectors pinned, if the baseline has it.
    pub poison: Option<&'a PoisonProfile>,
}

impl<'a> std::ops::Deref for BaselineView<'a> {
    type Target = Trusted<'a>;

    fn deref(&self) -> &Trusted<'a> {
        &self.trusted
    }
}

/// What the detectors pinned from trusted data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PoisonProfile {
    /// Encoded features, in order; `check` runs row-level detectors only when the batch has
    /// every one of them.
    pub features: Vec<String>,
    /// Codes per feature (bins or top values, plus other and null).
    pub cardinality: Vec<usize>,
    /// Classes of the label (0 without a label).
    pub classes: usize,
    /// Per feature, trusted row counts by code and class (`code * classes + class`); empty
    /// without a label or with more than [`MAX_MODEL_CLASSES`] classes.
    pub tables: Vec<Vec<u64>>,
    /// The reference model of the label and its calibration.
    pub label_model: Option<label::LabelModel>,
    /// Anomaly scores of trusted rows.
    pub anomaly: Option<anomaly::AnomalyProfile>,
    /// Duplicate rates and the trusted membership filter.
    pub duplicates: duplicates::DuplicateProfile,
    /// Pair tables of the stitched-rows test (absent in baselines pinned before it existed,
    /// or when no pair of features carries information: the test then does not run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stitched: Option<stitched::StitchedProfile>,
    /// Rows of the hash-selected sample everything above was fitted on, when the trusted
    /// data had more rows than [`crate::baseline::accumulate::SAMPLE_ROWS`] (absent when
    /// every trusted row was used).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_rows: Option<u64>,
}

/// Per-feature class tables (`code * classes + class`) of rows given by their codes and
/// labels.
fn class_tables(
    cardinality: &[usize],
    classes: usize,
    codes: &[Vec<u8>],
    labels: &[u16],
) -> Vec<Vec<u64>> {
    cardinality
        .iter()
        .zip(codes)
        .map(|(&card, codes)| {
            let mut t = vec![0u64; card * classes];
            for (&c, &y) in codes.iter().zip(labels) {
                if y != NO_CLASS {
                    t[usize::from(c) * classes + usize::from(y)] += 1;
                }
            }
            t
        })
        .collect()
}

/// Every encoded row of a batch, concatenated in batch order.
#[derive(Debug, Clone, Default)]
pub struct Rows {
    /// Rows.
    pub n: usize,
    /// Codes per feature.
    pub codes: Vec<Vec<u8>>,
    /// Raw values per feature (empty for categorical features).
    pub values: Vec<Vec<f64>>,
    /// Class per row.
    pub label: Vec<u16>,
    /// Exact fingerprints.
    pub fp_exact: Vec<u64>,
    /// Near fingerprints.
    pub fp_near: Vec<u64>,
}

impl Rows {
    fn append(&mut self, e: Encoded) {
        if self.codes.is_empty() {
            self.codes = vec![Vec::new(); e.codes.len()];
            self.values = vec![Vec::new(); e.values.len()];
        }
        self.n += e.n;
        for (a, b) in self.codes.iter_mut().zip(e.codes) {
            a.extend(b);
        }
        for (a, b) in self.values.iter_mut().zip(e.values) {
            if !b.is_empty() {
                a.extend(b);
            }
        }
        self.label.extend(e.label);
        self.fp_exact.extend(e.fp_exact);
        self.fp_near.extend(e.fp_near);
    }
}

/// Pins the detectors' profile from trusted frames; `baseline` already holds the column and
/// label profiles. `None` when no column can be encoded.
///
/// # Errors
/// A failure while encoding.
pub fn build(
    baseline: &BaselineView<'_>,
    frames: &[DataFrame],
    model_rows: usize,
    sample_rows: Option<u64>,
) -> Result<Option<PoisonProfile>> {
    let encoder = Encoder::new(baseline, None);
    if encoder.features.is_empty() {
        return Ok(None);
    }
    let mut rows = Rows::default();
    for e in encoder.for_each_slice(frames, |_, e| Ok(e))? {
        rows.append(e);
    }
    let cardinality: Vec<usize> = encoder
        .features
        .iter()
        .map(|f| f.code.cardinality())
        .collect();
    let classes = encoder.classes.len();
    let labelled = (2..=MAX_MODEL_CLASSES).contains(&classes);
    let tables = if labelled {
        class_tables(&cardinality, classes, &rows.codes, &rows.label)
    } else {
        Vec::new()
    };
    let label_model = if labelled {
        label::fit(&encoder, &rows, baseline.seed, model_rows)
    } else {
        None
    };
    let anomaly = anomaly::fit(baseline, &encoder, &rows, baseline.seed);
    let duplicates = duplicates::fit(&rows, baseline.seed, sample_rows.is_none());
    let stitched = stitched::fit(&encoder, &rows, baseline.seed);
    Ok(Some(PoisonProfile {
        features: encoder.features.iter().map(|f| f.name.clone()).collect(),
        cardinality,
        classes,
        tables,
        label_model,
        anomaly,
        duplicates,
        stitched,
        sample_rows,
    }))
}

impl PoisonProfile {
    /// Checks invariants a corrupted file could break.
    ///
    /// # Errors
    /// A description of the first broken invariant.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.features.len() != self.cardinality.len() {
            return Err("poison profile: features and cardinalities differ in length".into());
        }
        if !self.tables.is_empty()
            && (self.tables.len() != self.features.len()
                || self
                    .tables
                    .iter()
                    .zip(&self.cardinality)
                    .any(|(t, &c)| t.len() != c * self.classes))
        {
            return Err("poison profile: class tables do not fit the features".into());
        }
        if let Some(m) = &self.label_model {
            m.forest.validate(&self.cardinality)?;
            if m.forest.classes != self.classes {
                return Err("poison profile: model classes differ from the label's".into());
            }
            // The segment test indexes these tables by feature and code.
            let fits = |n: usize| n == self.features.len();
            let shaped = |lens: Vec<usize>| {
                lens.iter()
                    .zip(&self.cardinality)
                    .all(|(&l, &c)| l == c * self.classes)
            };
            if !fits(m.oof_expected.len())
                || m.oof_observed.len() != m.oof_expected.len()
                || !shaped(m.oof_expected.iter().map(Vec::len).collect())
                || !shaped(m.oof_observed.iter().map(Vec::len).collect())
            {
                return Err("poison profile: out-of-fold tables do not fit the features".into());
            }
            if (m.held_rows > 0) != (!m.held_expected.is_empty() || !m.held_observed.is_empty())
                || (m.held_rows > 0
                    && (!fits(m.held_expected.len())
                        || m.held_observed.len() != m.held_expected.len()
                        || !shaped(m.held_expected.iter().map(Vec::len).collect())
                        || !shaped(m.held_observed.iter().map(Vec::len).collect())))
            {
                return Err("poison profile: held-out tables do not fit the features".into());
            }
        }
        if let Some(a) = &self.anomaly {
            a.validate(self.features.len())?;
        }
        if let Some(s) = &self.stitched {
            s.validate(&self.cardinality)?;
        }
        self.duplicates.validate()
    }
}

/// Candidates of every detector, with the rows each one points at.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Candidates, in detector order.
    pub candidates: Vec<Candidate>,
    /// Per candidate index, its rows.
    pub selectors: Vec<Option<RowSelector>>,
    /// Detectors that could not run, and why.
    pub notes: Vec<String>,
    /// Codes left out for this batch, with the reason (see [`Broken`]).
    pub skipped: Vec<(&'static str, String)>,
}

/// A pinned feature whose values this batch lost (a schema finding): the row-level
/// detectors that read every feature together leave the batch alone, since whatever they
/// found would be the schema finding again, and the rest leave that feature out.
#[derive(Debug, Clone, PartialEq)]
pub struct Broken {
    /// The column.
    pub column: String,
    /// What happened to it, for the note.
    pub why: String,
}

/// The codes whose pinned null is over every feature together (the reference model, the
/// anomaly scores, the row fingerprints): a feature that lost its values moves them all
/// ([`CodeInfo::joint`]).
fn joint_codes() -> impl Iterator<Item = &'static str> {
    ROW_CODES
        .iter()
        .flat_map(|c| c.iter())
        .filter(|c| c.info.joint)
        .map(|c| c.info.code)
}

impl Outcome {
    fn push(&mut self, c: Candidate, rows: Option<RowSelector>) {
        self.candidates.push(c);
        self.selectors.push(rows);
    }
}

/// The features with the largest nonzero counts, most first (ties by name), at most
/// `take` of them, as "`name` in COUNT{unit}"; and how many features had a nonzero count.
pub(crate) fn top_features(
    counts: &[u64],
    features: &[String],
    take: usize,
    unit: &str,
) -> (Vec<String>, usize) {
    let mut worst: Vec<(u64, &String)> = counts
        .iter()
        .zip(features)
        .filter(|(c, _)| **c > 0)
        .map(|(&c, f)| (c, f))
        .collect();
    worst.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
    let list = worst
        .iter()
        .take(take)
        .map(|(c, f)| format!("`{f}` in {c}{unit}"))
        .collect();
    (list, worst.len())
}

/// A candidate of a row-level detector with the rows it points at.
pub type Found = (Candidate, Option<RowSelector>);

/// A code of a row-level detector: what the registry says of it and its policy section's
/// defaults.
#[derive(Debug, Clone, Copy)]
pub struct RowCode {
    /// The code's entry in the registry of codes.
    pub info: CodeInfo,
    /// Its section of the policy (`[checks.CODE]`) when the policy file leaves it out.
    pub rule: RowRule,
}

/// A row-level detector: an [`Accumulator`] over [`Block`]s of the row pass that declares the
/// codes it emits and turns its merged state into candidates. The registry below lists each
/// one once; its codes, documentation, weights and policy defaults come from here.
pub trait Detector {
    /// The codes it emits, with what the registry says of each and its policy defaults.
    const CODES: &'static [RowCode];

    /// The candidates of the merged state over the whole batch.
    fn finish(&self, p: &Pinned<'_>, scan: &Scan, rules: &RowRules) -> Vec<Found>;

    /// What its tests answer to `evidence-insufficient` whether or not they ran or found a
    /// candidate (a candidate's own null answers through [`crate::detect::PowerModel::reach`]):
    /// for a batch of `rows` rows against `profile`, pinned on `trusted` rows, each test at
    /// the level it would face alone, `level(code)`. None by default.
    fn reach(
        _profile: &PoisonProfile,
        _rows: u64,
        _trusted: u64,
        _rules: &RowRules,
        _level: &dyn Fn(&'static str) -> f64,
    ) -> crate::detect::reach::Reaches {
        Vec::new()
    }
}

/// The registry of row-level detectors: the state each keeps while the pass runs (a
/// [`Detector`], which also turns the merged state into candidates), in the order their
/// candidates are reported. One line per detector, `field: module::State`; the line declares
/// the detector's module too.
macro_rules! registry {
    ($($(#[$doc:meta])* $field:ident: $module:ident::$state:ident,)*) => {
        $(pub mod $module;)*

        /// Every row-level detector's codes, in registry order ([`Detector::CODES`]);
        /// [`crate::codes`] lists them with every other code.
        pub const ROW_CODES: &[&[RowCode]] = &[$(<$module::$state as Detector>::CODES,)*];

        /// What every detector answers to `evidence-insufficient` without a candidate
        /// ([`Detector::reach`]), in registry order.
        pub fn reaches(
            profile: &PoisonProfile,
            rows: u64,
            trusted: u64,
            rules: &RowRules,
            level: &dyn Fn(&'static str) -> f64,
        ) -> crate::detect::reach::Reaches {
            let mut all = Vec::new();
            $(all.extend(<$module::$state as Detector>::reach(profile, rows, trusted, rules, level));)*
            all
        }

        /// Every row-level accumulator's state (`None`: the detector cannot run on this
        /// baseline). Serialised into the parts of a sharded check.
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct States {
            $($(#[$doc])* #[serde(default, skip_serializing_if = "Option::is_none")]
            pub $field: Option<$module::$state>,)*
        }

        impl States {
            /// The states over no rows.
            #[must_use]
            pub fn new(p: &Pinned<'_>) -> Self {
                Self { $($field: <$module::$state as Accumulator<Pinned<'_>, Block>>::new(p),)* }
            }

            /// Folds one block into every state.
            pub fn update(&mut self, p: &Pinned<'_>, b: &Block) {
                $(if let Some(s) = &mut self.$field {
                    s.update(p, b);
                })*
            }

            /// Renumbers the batch rows the states name: they follow `by` earlier rows.
            pub fn shift_rows(&mut self, by: u64) {
                $(if let Some(s) = &mut self.$field {
                    <$module::$state as Accumulator<Pinned<'_>, Block>>::shift_rows(s, by);
                })*
            }

            /// Merges states over other rows.
            ///
            /// # Errors
            /// A state missing on one side, or of another shape.
            pub fn merge(&mut self, p: &Pinned<'_>, other: Self) -> std::result::Result<(), String> {
                $(match (&mut self.$field, other.$field) {
                    (Some(a), Some(b)) => a
                        .merge(p, b)
                        .map_err(|e| format!("{}: {e}", stringify!($field)))?,
                    (None, None) => {}
                    _ => return Err(format!("{}: a state on one side only", stringify!($field))),
                })*
                Ok(())
            }

            /// Every detector's candidates, computed side by side, in registry order.
            pub fn candidates(&self, p: &Pinned<'_>, scan: &Scan, rules: &RowRules) -> Vec<Found> {
                use rayon::prelude::*;
                type Finisher<'f> = Box<dyn Fn() -> Vec<Found> + Send + Sync + 'f>;
                let mut all: Vec<Finisher<'_>> = Vec::new();
                $(if let Some(s) = &self.$field {
                    all.push(Box::new(move || s.finish(p, scan, rules)));
                })*
                all.par_iter().flat_map_iter(|f| f()).collect()
            }
        }
    };
}

registry! {
    /// `poison-label-inconsistency`.
    label: inconsistency::LabelState,
    /// `poison-segment-label-shift` and `drift-class-conditional`.
    tables: tables::ClassTables,
    /// `poison-anomalous-rows`.
    anomaly: outliers::AnomalyState,
    /// `poison-duplicate-flood` and `poison-label-conflict`.
    duplicates: duplicates::DuplicateState,
    /// `poison-stitched-rows`.
    stitched: stitched::StitchedState,
    /// `poison-point-mass` and the numeric values of `poison-trigger` (their candidates come
    /// from the value read that these counts call for: [`values`]).
    values: point_mass::ValueCounts,
}

/// Runs every detector on a scanned batch.
///
/// # Errors
/// A failure while re-reading a column for value detectors.
pub fn detect(
    baseline: &BaselineView<'_>,
    rules: &RowRules,
    summary: &BatchSummary,
    scan: &Scan,
    rows: BatchRows<'_>,
    broken: &[Broken],
) -> Result<Outcome> {
    let mut out = Outcome::default();
    let Some(profile) = &baseline.poison else {
        return Ok(out);
    };
    if !broken.is_empty() {
        let what: Vec<String> = broken
            .iter()
            .map(|b| format!("`{}` ({})", b.column, b.why))
            .collect();
        let why = format!(
            "{} lost its values in this batch: the detectors that read every feature together (the reference model, the anomaly scores, the row fingerprints) would only find that again, so they did not run; the others left the column out",
            what.join(", ")
        );
        out.skipped = joint_codes().map(|c| (c, why.clone())).collect();
        out.notes.push(why);
    }
    let is_broken = |c: &Candidate| {
        !broken.is_empty() && joint_codes().any(|j| j == c.code)
            || c.subject.column.as_deref().is_some_and(|col| {
                col.split(" & ")
                    .any(|one| broken.iter().any(|b| b.column == one))
            })
    };
    if baseline.label.is_some() && profile.label_model.is_none() {
        out.notes.push(
            "no reference model of the label was pinned (fewer than 200 labelled trusted rows, fewer than two classes with 10 rows, or more than 20 classes): the label-consistency detector did not run".to_owned(),
        );
    }
    if baseline.label.is_some() && profile.tables.is_empty() {
        out.notes.push(
            "the label has more than 20 classes: the segment, trigger and class-conditional detectors did not run".to_owned(),
        );
    }
    if let Some(l) = &scan.states.label
        && l.outside > 0
    {
        let (list, _) = top_features(&l.outside_support, &profile.features, 3, " rows");
        out.notes.push(format!(
            "the label test judged {} of {} labelled rows: {} hold a value outside the trusted support (a null, an unseen category or a number far outside the range: {}), where the reference model says nothing about the label",
            l.labelled - l.outside,
            l.labelled,
            l.outside,
            list.join(", ")
        ));
    }
    let filter = profile.duplicates.unsealed_filter();
    let pinned = Pinned {
        baseline: *baseline,
        profile,
        filter: filter.as_ref(),
    };
    // The accumulators' detectors and the two that may read values again run side by side;
    // candidates are appended in a fixed order, so the outcome does not depend on scheduling.
    let rereads = !matches!(rows, BatchRows::Absent);
    if !rereads {
        let why = "they count exact values in a second read of the batch's rows, and a window of past batches keeps only their summaries".to_owned();
        out.notes.push(format!(
            "poison-point-mass and poison-trigger did not run: {why}"
        ));
        out.skipped
            .extend(["poison-point-mass", "poison-trigger"].map(|c| (c, why.clone())));
    }
    let values = || -> Result<Vec<Found>> {
        if !rereads {
            return Ok(Vec::new());
        }
        values::candidates(
            baseline,
            profile,
            summary,
            scan,
            rows,
            rules,
            broken.is_empty(),
        )
    };
    let (a, b) = rayon::join(|| scan.states.candidates(&pinned, scan, rules), values);
    for (cand, sel) in a.into_iter().chain(b?) {
        if !is_broken(&cand) {
            out.push(cand, sel);
        }
    }
    Ok(out)
}
