//! The model-quality tests on labelled rows: accuracy and class recall (McNemar), score
//! shift, loss (paired t-test) and calibration (ECE with a bootstrap standard error).

use super::*;

/// Paired correctness counts on labelled rows.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Paired {
    /// Labelled rows.
    pub(super) rows: u64,
    /// Right before, wrong after (McNemar's `b`).
    pub(super) newly_wrong: u64,
    /// Wrong before, right after (McNemar's `c`).
    pub(super) newly_right: u64,
    /// Right before.
    pub(super) right_before: u64,
    /// Right after.
    pub(super) right_after: u64,
}

impl Paired {
    pub(super) fn add(&mut self, right_before: bool, right_after: bool) {
        self.rows += 1;
        self.right_before += u64::from(right_before);
        self.right_after += u64::from(right_after);
        self.newly_wrong += u64::from(right_before && !right_after);
        self.newly_right += u64::from(!right_before && right_after);
    }

    pub(super) fn minus(&self, other: &Self) -> Self {
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
pub(super) fn accuracy(
    table: &Table,
    policy: &Policy,
    names: &Names<'_>,
    out: &mut Vec<Candidate>,
) {
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
pub(super) fn score_classes(k: usize) -> Vec<usize> {
    if k == 2 { vec![1] } else { (0..k).collect() }
}

/// Quantiles at 10%, 50% and 90% of sorted values.
pub(super) fn deciles(sorted: &[f64]) -> [f64; 3] {
    let at = |q: f64| {
        let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
        sorted.get(i).copied().unwrap_or(0.0)
    };
    [at(0.1), at(0.5), at(0.9)]
}

/// Score distribution shift (KS and PSI).
pub(super) fn scores(table: &Table, policy: &Policy, names: &Names<'_>, out: &mut Vec<Candidate>) {
    let k = table.classes.len();
    let n = table.rows();
    for j in score_classes(k) {
        let before: Vec<f64> = (0..n).map(|r| table.before_scores[r * k + j]).collect();
        let after: Vec<f64> = (0..n).map(|r| table.after_scores[r * k + j]).collect();
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
        let what = format!("Scores for `{}`", table.classes[j]);
        out.push(shift(before, after, subject, &what, policy));
    }
}

/// Shift of the predicted classes' probabilities (`--before-confidence`, more than two
/// classes): the same KS and PSI on the top-label confidence.
pub(super) fn confidence_shift(
    table: &Table,
    policy: &Policy,
    names: &Names<'_>,
    out: &mut Vec<Candidate>,
) {
    let subject = Subject::column(names.spec.after_confidence.as_deref().unwrap_or_default());
    out.push(shift(
        table.before_confidence.clone(),
        table.after_confidence.clone(),
        subject,
        "Confidence in the predicted class",
        policy,
    ));
}

/// KS and PSI between two score samples.
fn shift(
    before: Vec<f64>,
    after: Vec<f64>,
    subject: Subject,
    what: &str,
    policy: &Policy,
) -> Candidate {
    let rule = &policy.checks.compare_score_shift;
    let n = before.len();
    // Scores are compared at a resolution of 0.01: a saturated model's scores (1e-4 vs
    // 1.2e-4) move under any retrain, and below that resolution no decision changes.
    let at_resolution = |x: f64| (x * SCORE_RESOLUTION).round() / SCORE_RESOLUTION;
    let mut before: Vec<f64> = before.into_iter().map(at_resolution).collect();
    let mut after: Vec<f64> = after.into_iter().map(at_resolution).collect();
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
    candidate(
        "compare-score-shift",
        subject,
        Some(ks.p_value),
        vec![
            effect("ks", ks.statistic, rule.warn_ks, rule.deny_ks),
            effect("psi", psi_v, rule.warn_psi, rule.deny_psi),
        ],
        n as u64,
        format!(
            "{what} moved: median {} to {}, 10th-90th percentile {}-{} to {}-{}",
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
    )
}

/// Per-row log-loss and Brier score of one model on one labelled row. The Brier score of a
/// binary task is scikit-learn's `brier_score_loss` (squared error of the positive-class
/// probability); with more classes it is Brier's (1950) sum over classes. The probability of
/// the true class is clipped to `[floor, 1]` before the log (see [`loss_floor`]).
pub(super) fn row_losses(scores: &[f64], k: usize, r: usize, l: usize, floor: f64) -> (f64, f64) {
    let p = &scores[r * k..(r + 1) * k];
    let ll = -p[l].clamp(floor, 1.0).ln();
    let sq: f64 = p
        .iter()
        .enumerate()
        .map(|(j, &x)| (x - f64::from(u8::from(j == l))).powi(2))
        .sum();
    (ll, if k == 2 { sq / 2.0 } else { sq })
}

/// The smallest probability the log-loss takes from `m` labelled rows: `1/(m+2)`, Laplace's
/// rule of succession (the estimate of a probability after `m` trials without the event).
///
/// `m` rows cannot tell a probability of 1e-15 from one of 1e-6 or from `1/(m+2)`, yet
/// unclipped (scikit-learn clips at machine epsilon) one saturated row adds up to 36/m to a
/// model's mean log-loss: on the compare suite a clean logistic-regression retrain whose scores
/// hit exactly 0 on 6 of 3,000 rows gained 0.065 of log-loss (deny 0.05, paired t 3.2) with
/// its accuracy, Brier score and median row unchanged. Above the floor the log-loss is
/// scikit-learn's.
fn loss_floor(m: usize) -> f64 {
    1.0 / (m as f64 + 2.0)
}

/// Log-loss and Brier changes (paired t-tests).
pub(super) fn loss(table: &Table, policy: &Policy, names: &Names<'_>, out: &mut Vec<Candidate>) {
    let k = table.classes.len();
    let floor = loss_floor(table.label.iter().filter(|&&l| l != NO_LABEL).count());
    let mut d_ll = Vec::new();
    let mut d_br = Vec::new();
    let (mut llb, mut lla, mut brb, mut bra) = (0.0, 0.0, 0.0, 0.0);
    for r in 0..table.rows() {
        let l = table.label[r];
        if l == NO_LABEL {
            continue;
        }
        let (b_ll, b_br) = row_losses(&table.before_scores, k, r, usize::from(l), floor);
        let (a_ll, a_br) = row_losses(&table.after_scores, k, r, usize::from(l), floor);
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
pub(super) fn confidence(
    scores: &[f64],
    k: usize,
    rows: &[usize],
    label: &[u16],
) -> (Vec<f64>, Vec<bool>) {
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
pub(super) fn calibration(
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
    let ((cb, ob), (ca, oa)) = if table.has_scores() {
        (
            confidence(&table.before_scores, k, &rows, &table.label),
            confidence(&table.after_scores, k, &rows, &table.label),
        )
    } else {
        // Only the predicted classes' probabilities: the top-label calibration needs no more.
        let given = |conf: &[f64], pred: &[u16]| -> (Vec<f64>, Vec<bool>) {
            rows.iter()
                .map(|&r| (conf[r], pred[r] == table.label[r]))
                .unzip()
        };
        (
            given(&table.before_confidence, &table.before),
            given(&table.after_confidence, &table.after),
        )
    };
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
