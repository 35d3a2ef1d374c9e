//! `poisongate compare`: gate a retrained model against the serving one on the same rows.
//!
//! Poisoning shows in model behaviour as well as in data. A backdoor keyed on a common value
//! flips one segment's predictions toward the attacker's class; label flips pull scores toward
//! the prior and cost accuracy. A clean retrain moves predictions too, so every finding is
//! decided as in `check` (DESIGN §5): a test beyond sampling noise (Holm across the global
//! tests, Benjamini–Hochberg across segments) *and* an effect size past the policy threshold,
//! optionally raised to the noise of a pinned clean retrain ([`noise`]).
//!
//! Tests, all on paired rows (the same rows scored by both models):
//! - flip rate, with Bowker's symmetry test of the transition matrix as evidence;
//! - targeted flips: per class, the sign test of flips into the class against flips out of it;
//! - accuracy and per-class recall: McNemar mid-p tests, one-sided toward "worse";
//! - log-loss and Brier score: paired t-tests on per-row differences;
//! - per-segment accuracy drop and shift toward a class, each against the rest of the rows
//!   (conditional binomial test of the segment's discordant rows at the rest's rate, never
//!   below even odds; the effect is the segment's change beyond the rest's, when the rest
//!   moved the same way), so a segment that merely stayed put while the rest moved is not
//!   a regression;
//! - score shift: two-sample KS and PSI over the serving model's score deciles;
//! - calibration: expected calibration error, with a paired bootstrap standard error;
//! - with live models (`--before-endpoint`, `--after-endpoint`), counterfactual trigger
//!   probes ([`probe`]): the rise of the attack success rate when one feature is set to one
//!   value, one Holm family of its own.

pub mod endpoint;
pub mod input;
pub mod live;
pub mod noise;
pub mod probe;
mod quality;
mod segments;

use quality::{accuracy, calibration, confidence_shift, loss, scores};
use segments::segments;

pub use input::{Spec, Table, assemble};
pub use noise::Noise;

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::check::decision::decide;
use crate::check::{Evaluation, apply_policy};
use crate::detect::{Candidate, Effect};
use crate::error::Result;
use crate::finding::{Subject, num};
use crate::policy::Policy;
use crate::stats::divergence::{PSI_EPS, psi};
use crate::stats::multitest::{benjamini_hochberg, holm};
use crate::stats::paired::{
    ECE_BINS, bowker, ece, ece_bin, mcnemar_exact, mcnemar_mid_p, mcnemar_mid_p_greater,
    ttest_paired,
};
use crate::stats::proportion::{binomial_upper_tail, normal_upper_tail};
use input::NO_LABEL;

/// Bootstrap replicates behind the calibration test's standard error.
const ECE_BOOTSTRAP: usize = 200;

/// Rows drawn per bootstrap replicate at most; the standard error is rescaled to all rows.
const ECE_BOOTSTRAP_ROWS: usize = 50_000;

/// Scores are rounded to 1 / SCORE_RESOLUTION before the score-shift statistics.
const SCORE_RESOLUTION: f64 = 100.0;

/// Classes up to which the transition matrix is copied into the evidence.
const MATRIX_EVIDENCE_CLASSES: usize = 10;

/// Whether the counterfactual trigger probes ran.
#[derive(Debug, Clone)]
pub enum Probes {
    /// They ran; their candidates (one per feature, value and class).
    Ran(Vec<Candidate>),
    /// They did not, for this reason.
    Skipped(&'static str),
}

impl Probes {
    /// Why a file-based comparison cannot probe.
    pub const FILES_ONLY: &'static str =
        "counterfactual probes need live models: give --before-endpoint and --after-endpoint";
}

/// What a comparison concluded.
#[derive(Debug, Clone)]
pub struct Comparison {
    /// Findings, waivers and counts, as `check` reports them.
    pub eval: Evaluation,
    /// This comparison's statistics, for `--pin-noise`.
    pub pinned: BTreeMap<String, f64>,
}

/// Names the columns in findings.
struct Names<'a> {
    spec: &'a Spec,
    classes: &'a [String],
}

impl Names<'_> {
    fn model(&self) -> Subject {
        Subject::column(&self.spec.after)
    }

    fn class(&self, j: usize) -> Subject {
        Subject {
            column: Some(self.spec.after.clone()),
            value: None,
            label: Some(self.classes[j].clone()),
        }
    }

    fn label(&self, j: usize) -> Subject {
        Subject {
            column: self.spec.label.clone(),
            value: None,
            label: Some(self.classes[j].clone()),
        }
    }
}

fn effect(name: &'static str, value: f64, warn: f64, deny: f64) -> Effect {
    Effect {
        name,
        value,
        warn,
        deny,
    }
}

fn candidate(
    code: &'static str,
    subject: Subject,
    p_value: Option<f64>,
    effects: Vec<Effect>,
    n: u64,
    describe: String,
    evidence: BTreeMap<String, f64>,
) -> Candidate {
    Candidate {
        code,
        subject,
        p_value,
        effects,
        fixed: None,
        n,
        n_baseline: n,
        describe,
        evidence,
        tag: None,
        power: None,
    }
}

fn pct(x: f64) -> String {
    format!("{}%", num(100.0 * x))
}

/// Compares the two models' outputs on the table's rows.
///
/// # Errors
/// None at present for an assembled table; kept fallible for consistency with `check`.
pub fn compare(
    spec: &Spec,
    table: &Table,
    policy: &Policy,
    noise: Option<&Noise>,
    probes: Probes,
) -> Result<Comparison> {
    let names = Names {
        spec,
        classes: &table.classes,
    };
    let mut global = Vec::new();
    let mut notes = Vec::new();
    let flip_noise = noise.and_then(|nz| {
        nz.entries
            .get(&noise::key(
                "compare-flip-rate",
                &names.model(),
                "flip-rate",
            ))
            .copied()
    });
    flips(table, policy, &names, flip_noise, &mut global);
    let labelled = table.label.iter().filter(|&&l| l != NO_LABEL).count();
    if spec.label.is_none() {
        notes.push(
            "no --label: accuracy, class recall, loss and calibration were not tested".to_owned(),
        );
    } else if labelled < table.rows() {
        notes.push(format!(
            "{} of {} rows have no label and count only in the label-free tests",
            table.rows() - labelled,
            table.rows()
        ));
    }
    if labelled > 0 {
        accuracy(table, policy, &names, &mut global);
    }
    if table.has_scores() {
        scores(table, policy, &names, &mut global);
        if labelled > 0 {
            loss(table, policy, &names, &mut global);
            calibration(table, policy, &names, spec.seed, &mut global);
        }
    } else if table.has_confidence() {
        confidence_shift(table, policy, &names, &mut global);
        if labelled > 0 {
            calibration(table, policy, &names, spec.seed, &mut global);
        }
        notes.push(format!(
            "--before-confidence/--after-confidence on {} classes: log-loss and Brier need every class's probability and were not tested",
            table.classes.len()
        ));
    } else {
        notes.push(
            "no class probabilities (--before-score/--after-score, --before-confidence/--after-confidence, or an endpoint's --proba-output): score shift, loss and calibration were not tested"
                .to_owned(),
        );
    }
    let mut segment_candidates = Vec::new();
    for seg in &table.segments {
        segments(table, seg, policy, &mut segment_candidates, &mut notes);
    }
    let (mut probe_candidates, skipped) = match probes {
        Probes::Ran(c) => (c, None),
        Probes::Skipped(reason) => (Vec::new(), Some(reason)),
    };
    // Pin first (raw effects), then raise thresholds to the pinned noise.
    let mut pinned = BTreeMap::new();
    for c in global
        .iter()
        .chain(&segment_candidates)
        .chain(&probe_candidates)
    {
        for e in &c.effects {
            pinned.insert(
                noise::key(c.code, &c.subject, e.name),
                crate::finding::tidy(e.value.max(0.0)),
            );
        }
    }
    if let Some(nz) = noise {
        let scale = policy.compare.noise_scale;
        for c in global
            .iter_mut()
            .chain(&mut segment_candidates)
            .chain(&mut probe_candidates)
        {
            for e in &mut c.effects {
                if let Some(&v) = nz.entries.get(&noise::key(c.code, &c.subject, e.name)) {
                    // The pin relaxes thresholds where the clean retrain moved more than
                    // they allow; it never tightens them (one clean retrain is one draw).
                    e.warn = e.warn.max(v + scale * e.warn);
                    e.deny = e.deny.max(v + scale * e.deny);
                    c.evidence.insert(format!("noise-{}", e.name), v);
                }
            }
        }
    }
    let tests = global
        .iter()
        .chain(&segment_candidates)
        .chain(&probe_candidates)
        .filter(|c| c.p_value.is_some())
        .count();
    let mut decided = Vec::new();
    let mut records = Vec::new();
    let alpha = policy.gate.alpha;
    for (family, adjust) in [
        (global, holm as fn(&[f64]) -> Vec<f64>),
        (
            segment_candidates,
            benjamini_hochberg as fn(&[f64]) -> Vec<f64>,
        ),
        // Probes are many and a false block costs a release: Holm, not BH.
        (probe_candidates, holm as fn(&[f64]) -> Vec<f64>),
    ] {
        let raw: Vec<f64> = family.iter().filter_map(|c| c.p_value).collect();
        let mut adjusted = adjust(&raw).into_iter();
        for c in family {
            let adj = if c.p_value.is_some() {
                adjusted.next()
            } else {
                None
            };
            let mut rec = crate::check::record::TestRecord::of(&c, adj, None);
            let f = decide(c, adj, alpha);
            rec.outcome = match f.as_ref().map(|f| f.severity) {
                Some(crate::finding::Severity::Deny) => crate::check::record::TestOutcome::Deny,
                Some(crate::finding::Severity::Warn) => crate::check::record::TestOutcome::Warn,
                None => crate::check::record::TestOutcome::Pass,
            };
            records.push(rec.with_policy(policy));
            decided.extend(f);
        }
    }
    if let Some(reason) = skipped {
        notes.push(format!(
            "counterfactual trigger probes (compare-trigger-response) did not run: {reason}; a trigger the evaluation rows do not carry cannot be seen"
        ));
        records.push(
            crate::check::record::TestRecord::skipped(
                "compare-trigger-response",
                names.model(),
                reason,
            )
            .with_policy(policy),
        );
    }
    let (mut findings, waived) = apply_policy(policy, decided);
    for f in &mut findings {
        f.tidy();
    }
    findings.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    let columns_checked =
        1 + usize::from(table.has_scores() || table.has_confidence()) + table.segments.len();
    Ok(Comparison {
        eval: Evaluation {
            findings,
            waived,
            columns_checked,
            tests,
            quarantine: Vec::new(),
            quarantined_rows: 0,
            notes,
            row_scores: Vec::new(),
            records: {
                crate::check::record::sort(&mut records);
                records
            },
            distributions: Vec::new(),
            total_weight: 0.0,
        },
        pinned,
    })
}

/// The before → after transition matrix.
fn transitions(before: &[u16], after: &[u16], k: usize) -> Vec<Vec<u64>> {
    let mut t = vec![vec![0u64; k]; k];
    for (&b, &a) in before.iter().zip(after) {
        t[usize::from(b)][usize::from(a)] += 1;
    }
    t
}

/// Flip rate and targeted flips.
fn flips(
    table: &Table,
    policy: &Policy,
    names: &Names<'_>,
    noise: Option<f64>,
    out: &mut Vec<Candidate>,
) {
    let k = table.classes.len();
    let n = table.rows() as u64;
    let nf = n as f64;
    let t = transitions(&table.before, &table.after, k);
    let flips: u64 = (0..k)
        .flat_map(|i| (0..k).filter(move |&j| j != i).map(move |j| (i, j)))
        .map(|(i, j)| t[i][j])
        .sum();
    let rate = flips as f64 / nf;
    let (stat, df, p_sym) = bowker(&t);
    let mut ev = BTreeMap::from([
        ("flips".to_owned(), flips as f64),
        ("flip-rate".to_owned(), rate),
        ("bowker-statistic".to_owned(), stat),
        ("bowker-df".to_owned(), df),
        ("bowker-p".to_owned(), p_sym),
    ]);
    if k <= MATRIX_EVIDENCE_CLASSES {
        for (i, row) in t.iter().enumerate() {
            for (j, &c) in row.iter().enumerate() {
                if i != j && c > 0 {
                    ev.insert(
                        format!("transition:{}->{}", table.classes[i], table.classes[j]),
                        c as f64,
                    );
                }
            }
        }
    }
    let rule = &policy.checks.compare_flip_rate;
    // Without a pinned noise rate there is nothing to test the rate against: the effect
    // threshold alone decides. With one, the binomial tail at the pinned rate.
    let p = noise.map(|r| binomial_upper_tail(flips, n, r.clamp(1.0 / (nf + 1.0), 1.0)));
    out.push(candidate(
        "compare-flip-rate",
        names.model(),
        p,
        vec![effect("flip-rate", rate, rule.warn, rule.deny)],
        n,
        format!(
            "The retrained model changed {} of {n} predictions ({})",
            flips,
            pct(rate)
        ),
        ev,
    ));
    targeted_flips(table, &t, policy, names, out);
}

/// `compare-targeted-flips`, per class `j`: flips into `j` against flips away from it.
///
/// Without labels the effect is the net gain of `j`'s predicted share. With labels it is the
/// net gain of `j`'s *false* share on the labelled rows: rows newly and wrongly predicted `j`
/// minus wrong `j` predictions that left it. A clean retrain that moves a decision threshold
/// moves the rows near it, about as often rightly as wrongly, so half its share gain is
/// harmless; a targeted flip or a backdoor moves rows of other classes, nearly all wrongly.
/// On the compare suite the largest clean retrain moved its predicted share 5.5 points but its
/// false share 3.0 (benches/eval/README.md). The sign test is Dixon & Mood's (1946), on the
/// discordant rows of the statistic.
fn targeted_flips(
    table: &Table,
    t: &[Vec<u64>],
    policy: &Policy,
    names: &Names<'_>,
    out: &mut Vec<Candidate>,
) {
    let k = table.classes.len();
    let nf = table.rows() as f64;
    let labelled = table.label.iter().filter(|&&l| l != NO_LABEL).count() as u64;
    // Per class: labelled rows newly and wrongly predicted it, and wrong predictions of it
    // that the retrain dropped.
    let mut false_into = vec![0u64; k];
    let mut false_away = vec![0u64; k];
    if labelled > 0 {
        for ((&b, &a), &y) in table.before.iter().zip(&table.after).zip(&table.label) {
            if y == NO_LABEL || a == b {
                continue;
            }
            if y != a {
                false_into[usize::from(a)] += 1;
            }
            if y != b {
                false_away[usize::from(b)] += 1;
            }
        }
    }
    let rule = &policy.checks.compare_targeted_flips;
    #[allow(clippy::needless_range_loop)] // j indexes rows and columns of the matrix
    for j in 0..k {
        let into: u64 = (0..k).filter(|&i| i != j).map(|i| t[i][j]).sum();
        let away: u64 = (0..k).filter(|&l| l != j).map(|l| t[j][l]).sum();
        if into + away == 0 {
            continue;
        }
        let before_share = t[j].iter().sum::<u64>() as f64 / nf;
        let after_share = (0..k).map(|i| t[i][j]).sum::<u64>() as f64 / nf;
        let mut evidence = BTreeMap::from([
            ("flips-into".to_owned(), into as f64),
            ("flips-away".to_owned(), away as f64),
            ("share-before".to_owned(), before_share),
            ("share-after".to_owned(), after_share),
        ]);
        let moved = format!(
            "{into} predictions flipped to `{}` and {away} away from it: its predicted share went from {} to {}",
            table.classes[j],
            pct(before_share),
            pct(after_share)
        );
        let (statistic, value, p, n, message) = if labelled > 0 {
            let (fi, fa) = (false_into[j], false_away[j]);
            let lf = labelled as f64;
            evidence.insert("false-flips-into".to_owned(), fi as f64);
            evidence.insert("false-flips-away".to_owned(), fa as f64);
            let p = if fi + fa == 0 {
                1.0
            } else {
                binomial_upper_tail(fi, fi + fa, 0.5)
            };
            (
                "false-share-shift",
                (fi as f64 - fa as f64) / lf,
                p,
                labelled,
                format!(
                    "{moved}; on the {labelled} labelled rows {fi} became wrong predictions of `{}` and {fa} wrong ones left it",
                    table.classes[j]
                ),
            )
        } else {
            (
                "share-shift",
                (into as f64 - away as f64) / nf,
                binomial_upper_tail(into, into + away, 0.5),
                table.rows() as u64,
                moved,
            )
        };
        out.push(candidate(
            "compare-targeted-flips",
            names.class(j),
            Some(p),
            vec![effect(statistic, value, rule.warn, rule.deny)],
            n,
            message,
            evidence,
        ));
    }
}
