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
//! - calibration: expected calibration error, with a paired bootstrap standard error.

pub mod input;
pub mod noise;

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

/// Probabilities are clipped to `[LOG_EPS, 1]` before the log (as scikit-learn's log_loss).
const LOG_EPS: f64 = 1e-15;

/// Scores are rounded to 1 / SCORE_RESOLUTION before the score-shift statistics.
const SCORE_RESOLUTION: f64 = 100.0;

/// Classes up to which the transition matrix is copied into the evidence.
const MATRIX_EVIDENCE_CLASSES: usize = 10;

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
    } else {
        notes.push(
            "no --before-score/--after-score: score shift, loss and calibration were not tested"
                .to_owned(),
        );
    }
    let mut segment_candidates = Vec::new();
    for seg in &table.segments {
        segments(table, seg, policy, &mut segment_candidates, &mut notes);
    }
    // Pin first (raw effects), then raise thresholds to the pinned noise.
    let mut pinned = BTreeMap::new();
    for c in global.iter().chain(&segment_candidates) {
        for e in &c.effects {
            pinned.insert(
                noise::key(c.code, &c.subject, e.name),
                crate::finding::tidy(e.value.max(0.0)),
            );
        }
    }
    if let Some(nz) = noise {
        let scale = policy.compare.noise_scale;
        for c in global.iter_mut().chain(&mut segment_candidates) {
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
    let tests = global.iter().filter(|c| c.p_value.is_some()).count()
        + segment_candidates
            .iter()
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
    let (mut findings, waived) = apply_policy(policy, decided);
    for f in &mut findings {
        f.tidy();
    }
    findings.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    let columns_checked = 1 + usize::from(table.has_scores()) + table.segments.len();
    Ok(Comparison {
        eval: Evaluation {
            findings,
            waived,
            columns_checked,
            tests,
            quarantine: Vec::new(),
            notes,
            row_scores: Vec::new(),
            records: {
                crate::check::record::sort(&mut records);
                records
            },
            distributions: Vec::new(),
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
        let shift = (into as f64 - away as f64) / nf;
        let p = binomial_upper_tail(into, into + away, 0.5);
        out.push(candidate(
            "compare-targeted-flips",
            names.class(j),
            Some(p),
            vec![effect("share-shift", shift, rule.warn, rule.deny)],
            n,
            format!(
                "{into} predictions flipped to `{}` and {away} away from it: its predicted share went from {} to {}",
                table.classes[j],
                pct(before_share),
                pct(after_share)
            ),
            BTreeMap::from([
                ("flips-into".to_owned(), into as f64),
                ("flips-away".to_owned(), away as f64),
                ("share-before".to_owned(), before_share),
                ("share-after".to_owned(), after_share),
            ]),
        ));
    }
}

/// Paired correctness counts on labelled rows.
#[derive(Debug, Clone, Copy, Default)]
struct Paired {
    /// Labelled rows.
    rows: u64,
    /// Right before, wrong after (McNemar's `b`).
    newly_wrong: u64,
    /// Wrong before, right after (McNemar's `c`).
    newly_right: u64,
    /// Right before.
    right_before: u64,
    /// Right after.
    right_after: u64,
}

impl Paired {
    fn add(&mut self, right_before: bool, right_after: bool) {
        self.rows += 1;
        self.right_before += u64::from(right_before);
        self.right_after += u64::from(right_after);
        self.newly_wrong += u64::from(right_before && !right_after);
        self.newly_right += u64::from(!right_before && right_after);
    }

    fn minus(&self, other: &Self) -> Self {
        Self {
            rows: self.rows - other.rows,
            newly_wrong: self.newly_wrong - other.newly_wrong,
            newly_right: self.newly_right - other.newly_right,
            right_before: self.right_before - other.right_before,
            right_after: self.right_after - other.right_after,
        }
    }
}

/// Accuracy and per-class recall (McNemar).
fn accuracy(table: &Table, policy: &Policy, names: &Names<'_>, out: &mut Vec<Candidate>) {
    let k = table.classes.len();
    let mut all = Paired::default();
    let mut per = vec![Paired::default(); k];
    for r in 0..table.rows() {
        let l = table.label[r];
        if l == NO_LABEL {
            continue;
        }
        let (okb, oka) = (table.before[r] == l, table.after[r] == l);
        all.add(okb, oka);
        per[usize::from(l)].add(okb, oka);
    }
    let Paired {
        rows: m,
        newly_wrong: b,
        newly_right: c,
        right_before: rb,
        right_after: ra,
    } = all;
    if m == 0 {
        return;
    }
    let mf = m as f64;
    let rule = &policy.checks.compare_accuracy;
    let drop = (b as f64 - c as f64) / mf;
    out.push(candidate(
        "compare-accuracy",
        names.model(),
        Some(mcnemar_mid_p_greater(b, c)),
        vec![effect("accuracy-drop", drop, rule.warn, rule.deny)],
        m,
        format!(
            "Accuracy went from {} to {} on {m} labelled rows ({b} rows newly wrong, {c} newly right)",
            pct(rb as f64 / mf),
            pct(ra as f64 / mf)
        ),
        BTreeMap::from([
            ("accuracy-before".to_owned(), rb as f64 / mf),
            ("accuracy-after".to_owned(), ra as f64 / mf),
            ("newly-wrong".to_owned(), b as f64),
            ("newly-right".to_owned(), c as f64),
            ("mcnemar-exact-p".to_owned(), mcnemar_exact(b, c)),
            ("mcnemar-mid-p".to_owned(), mcnemar_mid_p(b, c)),
        ]),
    ));
    let rule = &policy.checks.compare_class_recall;
    if k < 2 {
        return;
    }
    for (j, p) in per.iter().enumerate() {
        let (mj, bj, cj, rbj, raj) = (
            p.rows,
            p.newly_wrong,
            p.newly_right,
            p.right_before,
            p.right_after,
        );
        if mj == 0 || bj + cj == 0 {
            continue;
        }
        let mjf = mj as f64;
        out.push(candidate(
            "compare-class-recall",
            names.label(j),
            Some(mcnemar_mid_p_greater(bj, cj)),
            vec![effect(
                "recall-drop",
                (bj as f64 - cj as f64) / mjf,
                rule.warn,
                rule.deny,
            )],
            mj,
            format!(
                "Recall of class `{}` went from {} to {} on its {mj} labelled rows",
                table.classes[j],
                pct(rbj as f64 / mjf),
                pct(raj as f64 / mjf)
            ),
            BTreeMap::from([
                ("recall-before".to_owned(), rbj as f64 / mjf),
                ("recall-after".to_owned(), raj as f64 / mjf),
                ("newly-wrong".to_owned(), bj as f64),
                ("newly-right".to_owned(), cj as f64),
            ]),
        ));
    }
}

/// Score columns compared: the positive class's for a binary task, every class's otherwise.
fn score_classes(k: usize) -> Vec<usize> {
    if k == 2 { vec![1] } else { (0..k).collect() }
}

/// Quantiles at 10%, 50% and 90% of sorted values.
fn deciles(sorted: &[f64]) -> [f64; 3] {
    let at = |q: f64| {
        let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
        sorted.get(i).copied().unwrap_or(0.0)
    };
    [at(0.1), at(0.5), at(0.9)]
}

/// Score distribution shift (KS and PSI).
fn scores(table: &Table, policy: &Policy, names: &Names<'_>, out: &mut Vec<Candidate>) {
    let k = table.classes.len();
    let n = table.rows();
    let rule = &policy.checks.compare_score_shift;
    for j in score_classes(k) {
        // Scores are compared at a resolution of 0.01: a saturated model's scores (1e-4 vs
        // 1.2e-4) move under any retrain, and below that resolution no decision changes.
        let at_resolution = |x: f64| (x * SCORE_RESOLUTION).round() / SCORE_RESOLUTION;
        let mut before: Vec<f64> = (0..n)
            .map(|r| at_resolution(table.before_scores[r * k + j]))
            .collect();
        let mut after: Vec<f64> = (0..n)
            .map(|r| at_resolution(table.after_scores[r * k + j]))
            .collect();
        // Sorted first: the KS test sorts its own copies, which is linear on sorted input.
        before.sort_unstable_by(f64::total_cmp);
        after.sort_unstable_by(f64::total_cmp);
        let ks = crate::stats::ks::two_sample(&before, &after);
        // PSI over ten equal-width probability bins: quantile bins of saturated scores
        // (most near 0 or 1) turn shifts of 1e-5 into large PSI values.
        let edges: Vec<f64> = (1..10).map(|q| f64::from(q) / 10.0).collect();
        let count = |sorted: &[f64]| -> Vec<u64> {
            let mut counts = vec![0u64; edges.len() + 1];
            let mut prev = 0usize;
            for (b, &e) in edges.iter().enumerate() {
                let upto = sorted.partition_point(|&x| x <= e);
                counts[b] = (upto - prev) as u64;
                prev = upto;
            }
            counts[edges.len()] = (sorted.len() - prev) as u64;
            counts
        };
        let psi_v = psi(&count(&before), &count(&after), PSI_EPS);
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let [b10, b50, b90] = deciles(&before);
        let [a10, a50, a90] = deciles(&after);
        let mut subject = names.class(j);
        subject.column = Some(
            names
                .spec
                .after_scores
                .get(if names.spec.after_scores.len() == 1 {
                    0
                } else {
                    j
                })
                .cloned()
                .unwrap_or_default(),
        );
        out.push(candidate(
            "compare-score-shift",
            subject,
            Some(ks.p_value),
            vec![
                effect("ks", ks.statistic, rule.warn_ks, rule.deny_ks),
                effect("psi", psi_v, rule.warn_psi, rule.deny_psi),
            ],
            n as u64,
            format!(
                "Scores for `{}` moved: median {} to {}, 10th-90th percentile {}-{} to {}-{}",
                table.classes[j],
                num(b50),
                num(a50),
                num(b10),
                num(b90),
                num(a10),
                num(a90)
            ),
            BTreeMap::from([
                ("ks".to_owned(), ks.statistic),
                ("psi".to_owned(), psi_v),
                ("mean-before".to_owned(), mean(&before)),
                ("mean-after".to_owned(), mean(&after)),
                ("p10-before".to_owned(), b10),
                ("p50-before".to_owned(), b50),
                ("p90-before".to_owned(), b90),
                ("p10-after".to_owned(), a10),
                ("p50-after".to_owned(), a50),
                ("p90-after".to_owned(), a90),
            ]),
        ));
    }
}

/// Per-row log-loss and Brier score of one model on one labelled row. The Brier score of a
/// binary task is scikit-learn's `brier_score_loss` (squared error of the positive-class
/// probability); with more classes it is Brier's (1950) sum over classes.
fn row_losses(scores: &[f64], k: usize, r: usize, l: usize) -> (f64, f64) {
    let p = &scores[r * k..(r + 1) * k];
    let ll = -p[l].clamp(LOG_EPS, 1.0).ln();
    let sq: f64 = p
        .iter()
        .enumerate()
        .map(|(j, &x)| (x - f64::from(u8::from(j == l))).powi(2))
        .sum();
    (ll, if k == 2 { sq / 2.0 } else { sq })
}

/// Log-loss and Brier changes (paired t-tests).
fn loss(table: &Table, policy: &Policy, names: &Names<'_>, out: &mut Vec<Candidate>) {
    let k = table.classes.len();
    let mut d_ll = Vec::new();
    let mut d_br = Vec::new();
    let (mut llb, mut lla, mut brb, mut bra) = (0.0, 0.0, 0.0, 0.0);
    for r in 0..table.rows() {
        let l = table.label[r];
        if l == NO_LABEL {
            continue;
        }
        let (b_ll, b_br) = row_losses(&table.before_scores, k, r, usize::from(l));
        let (a_ll, a_br) = row_losses(&table.after_scores, k, r, usize::from(l));
        d_ll.push(a_ll - b_ll);
        d_br.push(a_br - b_br);
        llb += b_ll;
        lla += a_ll;
        brb += b_br;
        bra += a_br;
    }
    let m = d_ll.len() as f64;
    let rule = &policy.checks.compare_loss;
    for (what, d, before, after, warn, deny, stat) in [
        (
            "log-loss",
            &d_ll,
            llb / m,
            lla / m,
            rule.warn_log_loss,
            rule.deny_log_loss,
            "log-loss-increase",
        ),
        (
            "brier",
            &d_br,
            brb / m,
            bra / m,
            rule.warn_brier,
            rule.deny_brier,
            "brier-increase",
        ),
    ] {
        let Some(t) = ttest_paired(d) else { continue };
        let mut subject = names.model();
        subject.value = Some(what.to_owned());
        out.push(candidate(
            "compare-loss",
            subject,
            Some(t.p_greater),
            vec![effect(stat, t.mean, warn, deny)],
            d.len() as u64,
            format!(
                "Mean {what} went from {} to {} on {} labelled rows (paired t {})",
                num(before),
                num(after),
                d.len(),
                num(t.statistic)
            ),
            BTreeMap::from([
                (format!("{what}-before"), before),
                (format!("{what}-after"), after),
                ("t".to_owned(), t.statistic),
                ("df".to_owned(), t.df),
                ("se".to_owned(), t.se),
            ]),
        ));
    }
}

/// Confidence (top score) and correctness of each labelled row under one model's scores.
fn confidence(scores: &[f64], k: usize, rows: &[usize], label: &[u16]) -> (Vec<f64>, Vec<bool>) {
    let mut conf = Vec::with_capacity(rows.len());
    let mut ok = Vec::with_capacity(rows.len());
    for &r in rows {
        let p = &scores[r * k..(r + 1) * k];
        let (arg, top) =
            p.iter().enumerate().fold(
                (0, f64::NEG_INFINITY),
                |acc, (j, &x)| if x > acc.1 { (j, x) } else { acc },
            );
        conf.push(top);
        ok.push(arg == usize::from(label[r]));
    }
    (conf, ok)
}

/// Expected calibration error before and after, with a paired bootstrap standard error of
/// the difference (Efron & Tibshirani 1993, ch. 6).
fn calibration(
    table: &Table,
    policy: &Policy,
    names: &Names<'_>,
    seed: u64,
    out: &mut Vec<Candidate>,
) {
    let k = table.classes.len();
    let rows: Vec<usize> = (0..table.rows())
        .filter(|&r| table.label[r] != NO_LABEL)
        .collect();
    let m = rows.len();
    if m < 2 {
        return;
    }
    let (cb, ob) = confidence(&table.before_scores, k, &rows, &table.label);
    let (ca, oa) = confidence(&table.after_scores, k, &rows, &table.label);
    let (eb, ea) = (ece(&cb, &ob), ece(&ca, &oa));
    let delta = ea - eb;
    let draw = m.min(ECE_BOOTSTRAP_ROWS);
    // One packed record per row, so a bootstrap draw touches one cache line, and per-bin sums
    // accumulated in place instead of resampled vectors.
    let packed: Vec<(f64, f64, u8, u8)> = (0..m)
        .map(|i| {
            let bin = |c: f64, ok: bool| (ece_bin(c) as u8) | (u8::from(ok) << 7);
            (cb[i], ca[i], bin(cb[i], ob[i]), bin(ca[i], oa[i]))
        })
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6563_655f_626f_6f74);
    let mut reps = Vec::with_capacity(ECE_BOOTSTRAP);
    for _ in 0..ECE_BOOTSTRAP {
        // (rows, confidence sum, correct count) per bin, before and after.
        let mut sums = [[(0u32, 0.0f64, 0u32); ECE_BINS]; 2];
        for _ in 0..draw {
            let (c_b, c_a, k_b, k_a) = packed[rng.random_range(0..m)];
            for (side, c, k) in [(0, c_b, k_b), (1, c_a, k_a)] {
                let cell = &mut sums[side][usize::from(k & 0x7f)];
                cell.0 += 1;
                cell.1 += c;
                cell.2 += u32::from(k >> 7);
            }
        }
        let of = |side: &[(u32, f64, u32); ECE_BINS]| -> f64 {
            side.iter()
                .filter(|c| c.0 > 0)
                .map(|c| (f64::from(c.2) - c.1).abs())
                .sum::<f64>()
                / draw as f64
        };
        reps.push(of(&sums[1]) - of(&sums[0]));
    }
    let mean = reps.iter().sum::<f64>() / reps.len() as f64;
    let sd =
        (reps.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (reps.len() as f64 - 1.0)).sqrt();
    // A replicate of `draw` rows has sd ~ 1/sqrt(draw); rescale to all `m` rows.
    let se = sd * (draw as f64 / m as f64).sqrt();
    let p = if se > 0.0 {
        normal_upper_tail(delta / se)
    } else if delta > 0.0 {
        0.0
    } else {
        1.0
    };
    let rule = &policy.checks.compare_calibration;
    out.push(candidate(
        "compare-calibration",
        names.model(),
        Some(p),
        vec![effect("ece-increase", delta, rule.warn, rule.deny)],
        m as u64,
        format!(
            "Expected calibration error went from {} to {} on {m} labelled rows",
            num(eb),
            num(ea)
        ),
        BTreeMap::from([
            ("ece-before".to_owned(), eb),
            ("ece-after".to_owned(), ea),
            ("bootstrap-se".to_owned(), se),
        ]),
    ));
}

/// Per-group counts of one segment column.
#[derive(Clone)]
struct GroupCounts {
    rows: u64,
    /// Transition matrix, row-major `k x k`.
    t: Vec<u64>,
    /// Paired correctness of the labelled rows.
    paired: Paired,
}

impl GroupCounts {
    fn new(k: usize) -> Self {
        Self {
            rows: 0,
            t: vec![0; k * k],
            paired: Paired::default(),
        }
    }

    fn flows(&self, j: usize, k: usize) -> (u64, u64) {
        let into = (0..k).filter(|&i| i != j).map(|i| self.t[i * k + j]).sum();
        let away = (0..k).filter(|&l| l != j).map(|l| self.t[j * k + l]).sum();
        (into, away)
    }

    fn minus(&self, other: &Self) -> Self {
        Self {
            rows: self.rows - other.rows,
            t: self.t.iter().zip(&other.t).map(|(a, b)| a - b).collect(),
            paired: self.paired.minus(&other.paired),
        }
    }
}

/// Per-segment accuracy drop and shift toward each class, each against the rest of the rows.
fn segments(
    table: &Table,
    seg: &input::Segment,
    policy: &Policy,
    out: &mut Vec<Candidate>,
    notes: &mut Vec<String>,
) {
    let k = table.classes.len();
    let mut groups = vec![GroupCounts::new(k); seg.names.len()];
    let mut total = GroupCounts::new(k);
    for r in 0..table.rows() {
        let (b, a) = (usize::from(table.before[r]), usize::from(table.after[r]));
        for g in [&mut groups[seg.codes[r] as usize], &mut total] {
            g.rows += 1;
            g.t[b * k + a] += 1;
            if let Some(&l) = table.label.get(r)
                && l != NO_LABEL
            {
                g.paired.add(b == usize::from(l), a == usize::from(l));
            }
        }
    }
    let min_rows = policy.compare.min_segment_rows;
    let rule = &policy.checks.compare_segment;
    let mut small = 0usize;
    for (g, counts) in groups.iter().enumerate() {
        if counts.rows == 0 {
            continue;
        }
        let rest = total.minus(counts);
        if counts.rows < min_rows || rest.rows < min_rows {
            small += 1;
            continue;
        }
        let name = &seg.names[g];
        let subject = |label: Option<String>| Subject {
            column: Some(seg.column.clone()),
            value: Some(name.clone()),
            label,
        };
        let (n, nr) = (counts.rows as f64, rest.rows as f64);
        // Accuracy drop in the segment beyond the rest's.
        if counts.paired.rows > 0 && rest.paired.rows > 0 {
            let (m, mr) = (counts.paired.rows as f64, rest.paired.rows as f64);
            let (b, c) = (counts.paired.newly_wrong, counts.paired.newly_right);
            let drop = (b as f64 - c as f64) / m;
            let drop_rest = (rest.paired.newly_wrong as f64 - rest.paired.newly_right as f64) / mr;
            if b + c > 0 {
                // A segment regresses when it got worse than no change *and* than the rest:
                // the null rate is the rest's, but never below even odds.
                let q = ((rest.paired.newly_wrong as f64 + 1.0)
                    / ((rest.paired.newly_wrong + rest.paired.newly_right) as f64 + 2.0))
                    .max(0.5);
                out.push(candidate(
                    "compare-segment",
                    subject(None),
                    Some(binomial_upper_tail(b, b + c, q)),
                    vec![effect(
                        "accuracy-drop",
                        drop - drop_rest.max(0.0),
                        rule.warn_accuracy,
                        rule.deny_accuracy,
                    )],
                    counts.paired.rows,
                    format!(
                        "Where `{}` is {name} ({} rows), accuracy went from {} to {} while the other rows changed by {} points",
                        seg.column,
                        counts.rows,
                        pct(counts.paired.right_before as f64 / m),
                        pct(counts.paired.right_after as f64 / m),
                        num(-100.0 * drop_rest)
                    ),
                    BTreeMap::from([
                        ("accuracy-before".to_owned(), counts.paired.right_before as f64 / m),
                        ("accuracy-after".to_owned(), counts.paired.right_after as f64 / m),
                        ("accuracy-drop-rest".to_owned(), drop_rest),
                        ("newly-wrong".to_owned(), b as f64),
                        ("newly-right".to_owned(), c as f64),
                    ]),
                ));
            }
        }
        // Shift toward each class in the segment beyond the rest's.
        for j in 0..k {
            let (into, away) = counts.flows(j, k);
            if into == 0 {
                continue;
            }
            let (ri, ra) = rest.flows(j, k);
            let shift = (into as f64 - away as f64) / n;
            let shift_rest = (ri as f64 - ra as f64) / nr;
            let q = ((ri as f64 + 1.0) / ((ri + ra) as f64 + 2.0)).max(0.5);
            let before_share = (0..k).map(|l| counts.t[j * k + l]).sum::<u64>() as f64 / n;
            let after_share = (0..k).map(|i| counts.t[i * k + j]).sum::<u64>() as f64 / n;
            out.push(candidate(
                "compare-segment",
                subject(Some(table.classes[j].clone())),
                Some(binomial_upper_tail(into, into + away, q)),
                vec![effect(
                    "shift-toward",
                    shift - shift_rest.max(0.0),
                    rule.warn_shift,
                    rule.deny_shift,
                )],
                counts.rows,
                format!(
                    "Where `{}` is {name} ({} rows), predictions of `{}` went from {} to {} ({into} flipped to it, {away} away) while the other rows moved {} points",
                    seg.column,
                    counts.rows,
                    table.classes[j],
                    pct(before_share),
                    pct(after_share),
                    num(100.0 * shift_rest)
                ),
                BTreeMap::from([
                    ("share-before".to_owned(), before_share),
                    ("share-after".to_owned(), after_share),
                    ("shift-rest".to_owned(), shift_rest),
                    ("flips-into".to_owned(), into as f64),
                    ("flips-away".to_owned(), away as f64),
                ]),
            ));
        }
    }
    if small > 0 {
        notes.push(format!(
            "{small} group(s) of segment `{}` have fewer than {min_rows} rows (or leave fewer than that outside) and were not tested",
            seg.column
        ));
    }
}
