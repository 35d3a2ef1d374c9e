//! What the registry says of every check ([`CodeInfo`]: its finding code, the family it
//! belongs to, how much it weighs in the multiplicity adjustment, and what `explain`, the
//! policy template, the report and the documentation say about it), and the codes that are not
//! a row-level detector's. A row-level detector declares its own codes in its file (its
//! `Detector::CODES`); [`crate::codes`] lists them all.

/// Which part of the gate emits a code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Structure of the batch against the pinned schema (`schema-*`).
    Schema,
    /// Per-column distribution drift (`drift-*` on one column or the label).
    Drift,
    /// A row-level detector that runs in the row pass (`poison-*`, `drift-class-conditional`).
    Row,
    /// Drift of pinned model outputs (`output-*`).
    Output,
    /// `poisongate compare` (`compare-*`).
    Compare,
    /// Provenance of the inputs (`integrity-*`).
    Integrity,
    /// The policy itself (`policy-*`).
    Policy,
    /// What the batch's size let the tests see (`evidence-*`).
    Evidence,
}

/// A test's weight in the weighted Holm adjustment (Holm 1979, §5) of one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weight {
    /// Weight 1: a per-column test, or a test that is not adjusted.
    One,
    /// A poisoning detector's single test: [`DETECTOR_WEIGHT`].
    Detector,
    /// A poisoning detector that emits one test per value or segment: [`DETECTOR_WEIGHT`]
    /// each, but at most [`SHARED_WEIGHT`] in total.
    Shared,
}

/// Holm weight of each test of a poisoning detector; every column test weighs 1.
///
/// The poisoning detectors are the few tests that an attack on a small batch must get past,
/// and each one looks at every row (or at every row of a value or segment): a weight of 10
/// gives their half dozen single tests about the share of 60 column tests, so that on a wide
/// table (hundreds of per-column tests) a conformal row test at 10 of 200 rows, or a new
/// category on 6 rows all of one label, still clears its level.
pub const DETECTOR_WEIGHT: f64 = 10.0;

/// Total Holm weight shared by the tests of one [`Weight::Shared`] code when it emits more
/// than four, so hundreds of segment tests on a wide batch cannot dilute every other test.
pub const SHARED_WEIGHT: f64 = 4.0 * DETECTOR_WEIGHT;

impl Weight {
    /// The weight of each of `k` tests of one code on one batch. It depends on the tests'
    /// kinds and counts, never on their p-values, so the family-wise error rate holds.
    #[must_use]
    pub fn each(self, k: usize) -> f64 {
        let k = k.max(1) as f64;
        match self {
            Self::One => 1.0,
            Self::Detector => DETECTOR_WEIGHT,
            Self::Shared if k * DETECTOR_WEIGHT > SHARED_WEIGHT => SHARED_WEIGHT / k,
            Self::Shared => DETECTOR_WEIGHT,
        }
    }
}

/// One check of the registry.
#[derive(Debug, Clone, Copy)]
pub struct CodeInfo {
    /// The code.
    pub code: &'static str,
    /// Which part of the gate emits it.
    pub family: Family,
    /// Its weight in the multiplicity adjustment.
    pub weight: Weight,
    /// For a row-level detector, whether its pinned null is over every feature together (the
    /// reference model, the anomaly scores, the row fingerprints): a feature that lost its
    /// values in a batch moves it, so it does not run then.
    pub joint: bool,
    /// Where its method and false-positive notes are documented (empty: the README's table).
    pub doc: &'static str,
    /// For a row-level detector, a phrase that the note of the pass contains when the
    /// detector could not run, to tie the note to the code (empty: no such note).
    pub skip_phrase: &'static str,
    /// One line: what it flags.
    pub summary: &'static str,
    /// Why it matters.
    pub why: &'static str,
    /// What to do when it fires.
    pub respond: &'static str,
}

/// The codes listed before the row-level detectors' (schema and per-column drift).
pub const BEFORE_ROWS: &[CodeInfo] = &[
    CodeInfo {
        code: "schema-missing-column",
        family: Family::Schema,
        weight: Weight::One,
        joint: false,
        doc: "",
        skip_phrase: "",
        summary: "A column pinned in the baseline is absent from the batch.",
        why: "Training code that expects the column fails or silently fills defaults; a dropped feature changes what the model learns.",
        respond: "Fix the producer of the batch, or re-pin the baseline if the column was retired on purpose.",
    },
    CodeInfo {
        code: "schema-extra-column",
        family: Family::Schema,
        weight: Weight::One,
        joint: false,
        doc: "",
        skip_phrase: "",
        summary: "The batch has a column the baseline does not know.",
        why: "An unvetted column can leak the label or carry data nobody reviewed.",
        respond: "Re-pin the baseline with the new column, or drop it before training; `--ignore` at profile time excludes columns on purpose.",
    },
    CodeInfo {
        code: "schema-dtype-changed",
        family: Family::Schema,
        weight: Weight::One,
        joint: false,
        doc: "",
        skip_phrase: "",
        summary: "A column's type changed kind (numeric, categorical) from the baseline.",
        why: "A numeric column read as text (or the reverse) breaks feature pipelines or turns values into categories.",
        respond: "Fix the writer or the parsing of the batch; a width change within a kind (i32 to i64) is only a warning.",
    },
    CodeInfo {
        code: "schema-null-rate",
        family: Family::Schema,
        weight: Weight::One,
        joint: false,
        doc: "",
        skip_phrase: "",
        summary: "A column's share of nulls rose beyond the baseline's, beyond sampling noise.",
        why: "Missing values are imputed at training time; a jump in nulls shifts the imputed feature and often signals a broken join or upstream outage.",
        respond: "Find the upstream cause (join, source outage, schema change) before training on the batch.",
    },
    CodeInfo {
        code: "schema-out-of-range",
        family: Family::Schema,
        weight: Weight::One,
        joint: false,
        doc: "",
        skip_phrase: "",
        summary: "Values lie outside the range observed in the baseline: far outside (beyond a tolerance band scaled to the column's spread and tail) may deny; just past the observed extremes, which fresh data does at a rate that follows from the baseline's size, only warns.",
        why: "Out-of-range values are unit changes, sentinel values (-1, 9999) or injected outliers; trees and scalers extrapolate badly.",
        respond: "Inspect the extreme values; fix units or sentinels upstream, or re-pin if the range legitimately grew.",
    },
    CodeInfo {
        code: "schema-out-of-domain",
        family: Family::Schema,
        weight: Weight::One,
        joint: false,
        doc: "",
        skip_phrase: "",
        summary: "Values fall outside a hard domain the policy pins for the column (`[domains.COLUMN]`: min, max or allowed categories).",
        why: "A hard domain is what the column may hold by definition (an age below 0, a country code not in the list): any value outside it is an error or an injection, however few.",
        respond: "Find the rows (the evidence counts them) and fix the producer; widen the domain in the policy only if the definition changed.",
    },
    CodeInfo {
        code: "schema-unseen-category",
        family: Family::Schema,
        weight: Weight::One,
        joint: false,
        doc: "",
        skip_phrase: "",
        summary: "The batch holds category values the baseline never saw, in a share of rows beyond what its long tail explains.",
        why: "New codes are often a renamed category, a new data source, or a backdoor trigger value.",
        respond: "Check the listed values; map renamed categories upstream, or re-pin if the new category is legitimate.",
    },
    CodeInfo {
        code: "drift-numeric",
        family: Family::Drift,
        weight: Weight::One,
        joint: false,
        doc: "",
        skip_phrase: "",
        summary: "A numeric column's distribution moved: KS, normalised Wasserstein or PSI beyond both the practical threshold and the clean-batch noise at this size.",
        why: "A model trained on a shifted feature learns a different relationship; large shifts are broken pipelines or manipulated data.",
        respond: "Compare the column's summary with the baseline (mean, quantiles in the evidence); fix upstream, or re-pin if the world changed.",
    },
    CodeInfo {
        code: "drift-categorical",
        family: Family::Drift,
        weight: Weight::One,
        joint: false,
        doc: "",
        skip_phrase: "",
        summary: "A categorical column's mix of values moved: PSI or Jensen–Shannon beyond the practical threshold and the clean-batch noise.",
        why: "Category mix changes alter what the model sees most; a large change is a new source, a filter bug or manipulation.",
        respond: "Look at which categories gained or lost share (evidence); fix upstream, or re-pin if the change is real and expected.",
    },
    CodeInfo {
        code: "drift-label-prior",
        family: Family::Drift,
        weight: Weight::One,
        joint: false,
        doc: "",
        skip_phrase: "",
        summary: "The label's class balance moved beyond the practical threshold and sampling noise.",
        why: "A shifted class prior biases the retrained model's decisions; injecting or relabelling rows of one class shows up here first.",
        respond: "Check how the batch was sampled and labelled; rebalance or investigate the labelling source.",
    },
];

/// The codes listed after the row-level detectors' (model outputs, `compare`, integrity,
/// evidence, the policy).
pub const AFTER_ROWS: &[CodeInfo] = &[
    CodeInfo {
        code: "output-prediction",
        family: Family::Output,
        weight: Weight::One,
        joint: false,
        doc: "",
        skip_phrase: "",
        summary: "The distribution of a pinned prediction column moved: PSI or Jensen-Shannon beyond the practical threshold and the clean-batch noise.",
        why: "The model's outputs on this data differ from the trusted ones: either the inputs moved, or the model that produced them changed.",
        respond: "Check which classes gained share in the evidence; if the inputs did not drift, investigate the model version that scored the batch.",
    },
    CodeInfo {
        code: "output-score",
        family: Family::Output,
        weight: Weight::One,
        joint: false,
        doc: "",
        skip_phrase: "",
        summary: "The distribution of a pinned score column moved: KS, normalised Wasserstein or PSI beyond the practical threshold and the clean-batch noise.",
        why: "Scores that shift without a matching input drift point to a changed or tampered model, or to a population the model was not validated on.",
        respond: "Compare the score quantiles in the evidence with the baseline, and the model version that scored the batch with the pinned one.",
    },
    CodeInfo {
        code: "compare-flip-rate",
        family: Family::Compare,
        weight: Weight::One,
        joint: false,
        doc: "",
        skip_phrase: "",
        summary: "The retrained model changed the prediction of a larger share of rows than the policy (or the pinned clean-retrain noise) allows.",
        why: "A clean retrain moves some predictions; many more flips mean a different model, not retraining noise.",
        respond: "Read the transition matrix in the evidence; pin a known-clean retrain with --pin-noise if this task is noisier than the defaults assume.",
    },
    CodeInfo {
        code: "compare-targeted-flips",
        family: Family::Compare,
        weight: Weight::One,
        joint: false,
        doc: "",
        skip_phrase: "",
        summary: "Predictions flipped toward one class more than away from it: that class's predicted share (with labels, its share of wrong predictions) grew beyond the threshold (sign test on the discordant rows).",
        why: "Targeted label flips and backdoors pull rows of other classes to the attacker's class, nearly all wrongly; retraining noise flips both ways, and a moved decision threshold moves rows about as often rightly as wrongly.",
        respond: "Look for the training rows that moved toward the named class (poisongate check on the training batch) before promoting the model.",
    },
    CodeInfo {
        code: "compare-accuracy",
        family: Family::Compare,
        weight: Weight::One,
        joint: false,
        doc: "",
        skip_phrase: "",
        summary: "The retrained model is less accurate on the labelled rows (McNemar mid-p test on the paired outcomes).",
        why: "Label flipping and other poisoning cost accuracy; promoting a worse model is a regression whatever its cause.",
        respond: "Keep the serving model; check the training batch for label problems.",
    },
    CodeInfo {
        code: "compare-loss",
        family: Family::Compare,
        weight: Weight::One,
        joint: false,
        doc: "",
        skip_phrase: "",
        summary: "The retrained model's log-loss or Brier score on the labelled rows rose (paired t-test on per-row differences).",
        why: "Random label flips pull scores toward the prior: loss rises even when accuracy barely moves.",
        respond: "Keep the serving model; check the training labels (poisongate check reports label inconsistency).",
    },
    CodeInfo {
        code: "compare-class-recall",
        family: Family::Compare,
        weight: Weight::One,
        joint: false,
        doc: "",
        skip_phrase: "",
        summary: "The retrained model finds fewer rows of one class (recall drop, McNemar mid-p test within the class).",
        why: "Targeted flips sacrifice one class; overall accuracy can hide it when the class is small.",
        respond: "Check the training rows of the named class for relabelling.",
    },
    CodeInfo {
        code: "compare-segment",
        family: Family::Compare,
        weight: Weight::One,
        joint: false,
        doc: "",
        skip_phrase: "",
        summary: "In one segment (a category or a numeric decile of a --segment column) the retrained model lost accuracy or shifted toward one class, beyond the rest of the rows (Benjamini-Hochberg across segments).",
        why: "A backdoor keyed on a common value changes the model only where the value occurs: the segment shows it, the totals do not.",
        respond: "Inspect the training rows of the named segment for labels that changed; do not promote the model.",
    },
    CodeInfo {
        code: "compare-score-shift",
        family: Family::Compare,
        weight: Weight::One,
        joint: false,
        doc: "",
        skip_phrase: "",
        summary: "The distribution of the retrained model's scores differs from the serving model's (KS, PSI over the serving scores' deciles).",
        why: "Label noise compresses scores toward the prior and a changed model spreads them differently, even when predictions agree.",
        respond: "Read the score quantiles in the evidence; if the scores feed a threshold, re-validate it before promotion.",
    },
    CodeInfo {
        code: "compare-calibration",
        family: Family::Compare,
        weight: Weight::One,
        joint: false,
        doc: "",
        skip_phrase: "",
        summary: "The retrained model's expected calibration error rose (10 equal-width confidence bins; bootstrap standard error).",
        why: "Downstream decisions read scores as probabilities; a miscalibrated model makes them wrong even at equal accuracy.",
        respond: "Recalibrate on trusted data, or keep the serving model and check the training labels.",
    },
    CodeInfo {
        code: "compare-trigger-response",
        family: Family::Compare,
        weight: Weight::One,
        joint: false,
        doc: "",
        skip_phrase: "",
        summary: "Setting one feature to one value moves many more rows to one class under the retrained model than under the serving one (counterfactual probes through live endpoints; McNemar mid-p on the paired rows).",
        why: "A backdoored retrain answers normal rows normally and obeys its trigger: only rows that carry the trigger show it, and fixed evaluation rows may hold a handful.",
        respond: "Do not promote the model. Run `poisongate check` on its training batch and look for rows holding the named value with the named label; retrain without them.",
    },
    CodeInfo {
        code: "integrity-sse-kms-missing",
        family: Family::Integrity,
        weight: Weight::One,
        joint: false,
        doc: "",
        skip_phrase: "",
        summary: "With --require-sse-kms, an input is not an S3 object encrypted with SSE-KMS (or not with the required key).",
        why: "Objects outside the KMS key's access policy can be written by anyone with bucket access; a batch swapped in by such a writer is exactly what the gate exists to stop. A local file cannot prove its encryption at rest, so it fails the requirement too.",
        respond: "Re-upload the object with SSE-KMS under the required key (or set the bucket's default encryption), and find out who wrote the unencrypted copy.",
    },
    CodeInfo {
        code: "integrity-baseline-unpinned",
        family: Family::Integrity,
        weight: Weight::One,
        joint: false,
        doc: "",
        skip_phrase: "",
        summary: "The baseline is pinned by neither --expect-baseline-sha256 nor --baseline-signature (a warning; a deny under the strict policy profile).",
        why: "An attacker who can write the training data can often write next to it: an unpinned baseline is whatever file sits at that path, and a baseline profiled from poisoned data passes that poison.",
        respond: "Pass --expect-baseline-sha256 with the digest `profile` printed (also in baseline.json.sha256), or sign the baseline and pass --baseline-signature and --public-key.",
    },
    CodeInfo {
        code: "integrity-policy-unpinned",
        family: Family::Integrity,
        weight: Weight::One,
        joint: false,
        doc: "",
        skip_phrase: "",
        summary: "Under the strict policy profile, the policy is not pinned by --expect-policy-sha256.",
        why: "The policy sets every level and threshold: whoever can edit it can turn any check off, including the strict profile itself.",
        respond: "Pass --expect-policy-sha256 with the policy digest a report shows (`policy.sha256` in the JSON report, the `policy` line of the text summary).",
    },
    CodeInfo {
        code: "integrity-ledger-window",
        family: Family::Integrity,
        weight: Weight::One,
        joint: false,
        doc: "",
        skip_phrase: "",
        summary: "With --ledger, a check over this batch and the batches accepted before it (the ledger's window) blocks, though the batch alone may pass: its subject names the detector and what it found.",
        why: "Poison spread over many small retrains stays under each batch's power to detect it; the model trains on all of them, so the accepted batches are tested together.",
        respond: "Do not train on this batch; review the batches the message lists (their inputs and digests are in the ledger), and re-pin the baseline only if the shift is real.",
    },
    CodeInfo {
        code: "integrity-quarantine-lineage",
        family: Family::Integrity,
        weight: Weight::One,
        joint: false,
        doc: "",
        skip_phrase: "",
        summary: "With --after-quarantine, the batch is not the parent batch minus its quarantined rows (by a hash of the set of rows).",
        why: "The re-check carries the parent's findings forward only for the batch it was computed on; a batch with changed, swapped or added rows is another batch that claims a remediation it did not get.",
        respond: "Drop exactly the rows of the parent's quarantine file from the parent batch (by `row` or `id`) and check again; if the pipeline rewrote values, find out why.",
    },
    CodeInfo {
        code: "integrity-quarantine-residual",
        family: Family::Integrity,
        weight: Weight::One,
        joint: false,
        doc: "",
        skip_phrase: "",
        summary: "With --after-quarantine, a finding of the parent batch is not cleared by dropping its quarantine: the rows dropped are not expected to hold enough of the finding's excess rows.",
        why: "Dropping the rows a detector found most suspicious also drops the evidence, so the remaining rows pass a fresh check while most of the poison may still be in them; the parent's evidence, less what the quarantine is expected to hold, is what is left.",
        respond: "Do not train on the batch: the quarantine cannot separate this poison from genuine rows (a weak reference model, or a spread-out attack). Fix the data at its source, or review the rows of the finding by hand.",
    },
    CodeInfo {
        code: "integrity-model-unsafe",
        family: Family::Integrity,
        weight: Weight::One,
        joint: false,
        doc: "",
        skip_phrase: "",
        summary: "`verify --scan`: loading the model file would import a callable outside the allowlist of globals that models need, or make a call the scan cannot name (a Lambda layer or custom object in a Keras archive).",
        why: "A pickle, a joblib dump or a PyTorch checkpoint runs the callables it names the moment it is loaded: a swapped or poisoned model file is code execution on the serving host. A blocklist of known-bad names is bypassed by the next callable nobody listed; an allowlist is not.",
        respond: "Do not load the file. Find out how it was produced (the callable, member and offset are in the output); if the callable is your own class, pass --allow MODULE.NAME after reviewing it, and re-pin the imports of the trusted model.",
    },
    CodeInfo {
        code: "integrity-model-imports",
        family: Family::Integrity,
        weight: Weight::One,
        joint: false,
        doc: "",
        skip_phrase: "",
        summary: "`verify --scan --imports PIN`: the model file imports a callable that the pinned trusted model did not import, even one on the allowlist.",
        why: "A model swapped for one that adds a single callable (allowlisted elsewhere, or harmless-looking) changes what loading it does; only a pin of the trusted artifact's exact imports catches that.",
        respond: "Review why the new model imports it; if the change is intended (a new model type or step), pin the imports of the reviewed model with --pin-imports.",
    },
    CodeInfo {
        code: "evidence-insufficient",
        family: Family::Evidence,
        weight: Weight::One,
        joint: false,
        doc: "",
        skip_phrase: "",
        summary: "At this batch's size, the tests could not have shown an attack the policy names (by default outliers or duplicates at 2 % of the rows, a trigger at 1 %): a pass is limited evidence (a warning; a deny under the strict profile).",
        why: "A pass means nothing was found, not that nothing was there: on a small batch a few poisoned rows are within the noise of every test. The finding names each attack out of reach, the test that would see it, the effect that test detects at 80 % power and the batch size from which it would detect the attack.",
        respond: "Check larger batches, or accumulate small ones with `check --ledger` so that the window is tested together; set an attack's share to 0 under `[checks.evidence-insufficient]` to stop asking about it.",
    },
    CodeInfo {
        code: "policy-unused-exception",
        family: Family::Policy,
        weight: Weight::One,
        joint: false,
        doc: "",
        skip_phrase: "",
        summary: "An exception in the policy matched no finding of this batch.",
        why: "Stale waivers hide future problems and make audits harder; a typo in a column name waives nothing.",
        respond: "Remove the exception, or fix its code or column name.",
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_cap_a_code_that_emits_many_tests() {
        assert_eq!(Weight::Shared.each(4), DETECTOR_WEIGHT);
        assert_eq!(Weight::Shared.each(8), SHARED_WEIGHT / 8.0);
        assert_eq!(Weight::Detector.each(8), DETECTOR_WEIGHT);
        assert_eq!(Weight::One.each(100), 1.0);
    }
}
