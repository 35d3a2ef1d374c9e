//! Fitting the anomaly profile at `profile` time: cross-fitted cuts of both scores, the
//! copula's shrunk correlation, and the leave-one-out extreme-value cut.

use super::*;

/// Folds of the cross-fitted cuts.
const FOLDS: usize = 5;
/// Least out-of-fold rows past each cut: below it the trusted rate is too uncertain to test
/// against, so small baselines cut lower than [`CUT_LEVEL`].
const MIN_EXCEEDANCES: f64 = 5.0;

/// A column profile whose counts are those of a subset of trusted rows (`counts[code]`, the
/// null code last), so that the HBOS heights and normal scores come from those rows only.
fn refit_column(col: &ColumnProfile, code: &FeatureCode, counts: &[u64]) -> ColumnProfile {
    let mut col = col.clone();
    let non_null: u64 = counts[..counts.len().saturating_sub(1)].iter().sum();
    col.count = non_null;
    col.nulls = counts.last().copied().unwrap_or(0);
    match code {
        FeatureCode::Numeric { bins, .. } => {
            if let Some(p) = col.numeric.as_mut()
                && p.counts.len() == *bins
            {
                p.counts.copy_from_slice(&counts[..*bins]);
            }
        }
        FeatureCode::Categorical { other, .. } => {
            if let Some(c) = col.categorical.as_mut() {
                let other = usize::from(*other);
                for (i, t) in c.top.iter_mut().take(other).enumerate() {
                    t.count = counts[i];
                }
                c.other = counts[other];
            }
        }
    }
    col
}

/// The HBOS tables of a baseline's features with the counts of the rows in `keep` only.
fn tables_of(
    baseline: &BaselineView<'_>,
    encoder: &Encoder,
    rows: &Rows,
    keep: &[bool],
) -> Vec<Table> {
    encoder
        .features
        .iter()
        .enumerate()
        .map(|(j, f)| {
            let Some(col) = baseline.column(&f.name) else {
                return Table::Categorical {
                    hbos: vec![0.0; f.code.cardinality()],
                };
            };
            let mut counts = vec![0u64; f.code.cardinality()];
            for (i, &c) in rows.codes[j].iter().enumerate() {
                if keep[i] {
                    counts[usize::from(c)] += 1;
                }
            }
            table(&refit_column(col, &f.code, &counts), &f.code)
        })
        .collect()
}

/// The Schäfer–Strimmer shrinkage intensity of a correlation matrix toward the identity:
/// `λ* = Σ_{i≠j} Var(r_ij) / Σ_{i≠j} r_ij²`, with `Var(r_ij)` estimated from the products of
/// standardised values (Schäfer & Strimmer 2005, *Stat. Appl. Genet. Mol. Biol.* 4(1), art.
/// 32, target D; the Ledoit & Wolf 2004 analytic intensity applied to standardised data).
/// With more columns than rows per fold, the sample correlation is singular and λ* is large;
/// with many rows it tends to 0.
fn shrinkage(z: &[f64], n: usize, p: usize) -> f64 {
    if n < 3 || p < 2 {
        return 1.0;
    }
    let nf = n as f64;
    let mut mean = vec![0f64; p];
    for row in z.chunks_exact(p) {
        for (m, &v) in mean.iter_mut().zip(row) {
            *m += v / nf;
        }
    }
    let mut sd = vec![0f64; p];
    for row in z.chunks_exact(p) {
        for a in 0..p {
            sd[a] += (row[a] - mean[a]).powi(2);
        }
    }
    for v in &mut sd {
        *v = (*v / (nf - 1.0)).sqrt().max(1e-12);
    }
    let (mut num_var, mut den) = (0f64, 0f64);
    let mut w = vec![0f64; p];
    let mut s1 = vec![0f64; p * p];
    let mut s2 = vec![0f64; p * p];
    for row in z.chunks_exact(p) {
        for a in 0..p {
            w[a] = (row[a] - mean[a]) / sd[a];
        }
        for a in 0..p {
            for b in 0..a {
                let x = w[a] * w[b];
                s1[a * p + b] += x;
                s2[a * p + b] += x * x;
            }
        }
    }
    for a in 0..p {
        for b in 0..a {
            let wbar = s1[a * p + b] / nf;
            let r = wbar * nf / (nf - 1.0);
            // Var(r) = n / (n - 1)^3 Σ_k (w_k - w̄)².
            let ss = s2[a * p + b] - nf * wbar * wbar;
            num_var += nf / (nf - 1.0).powi(3) * ss.max(0.0);
            den += r * r;
        }
    }
    if den <= 0.0 {
        return 1.0;
    }
    (num_var / den).clamp(0.0, 1.0)
}

/// The copula's Cholesky factor fitted on the rows in `keep`: the correlation of their
/// normal scores, shrunk toward the identity by the larger of [`SHRINK`] and the
/// Schäfer–Strimmer intensity. Returns the factor and the intensity used.
fn fit_copula(
    tables: &[Table],
    copula: &[usize],
    rows: &Rows,
    keep: &[bool],
) -> Option<(Vec<f64>, f64)> {
    let p = copula.len();
    let n = keep.iter().filter(|&&k| k).count();
    let mut z = Vec::with_capacity(n * p);
    for i in (0..rows.n).filter(|&i| keep[i]) {
        for &j in copula {
            z.push(tables[j].score(rows.codes[j][i], rows.values[j][i]).1);
        }
    }
    let lambda = shrinkage(&z, n, p).max(SHRINK);
    let nf = n as f64;
    let mut sum = vec![0f64; p];
    let mut cross = vec![0f64; p * p];
    for row in z.chunks_exact(p) {
        for a in 0..p {
            sum[a] += row[a];
            for b in 0..=a {
                cross[a * p + b] += row[a] * row[b];
            }
        }
    }
    let mut cov = vec![0f64; p * p];
    for a in 0..p {
        for b in 0..=a {
            let c = cross[a * p + b] / nf - sum[a] * sum[b] / (nf * nf);
            cov[a * p + b] = c;
            cov[b * p + a] = c;
        }
    }
    let mut corr = vec![0f64; p * p];
    for a in 0..p {
        for b in 0..p {
            let denom = (cov[a * p + a] * cov[b * p + b]).sqrt();
            let r = if denom > 0.0 {
                cov[a * p + b] / denom
            } else {
                0.0
            };
            corr[a * p + b] = if a == b { 1.0 } else { (1.0 - lambda) * r };
        }
    }
    cholesky(&corr, p).map(|l| (l, lambda))
}

/// Fits the copula and the cuts on trusted rows.
///
/// The cuts are cross-fitted: each of [`FOLDS`] folds is scored by histograms and a copula
/// fitted on the other folds, and the cuts and the trusted rate come from those out-of-fold
/// scores (the split-conformal idea of scoring calibration rows with a model that never saw
/// them; Vovk, Gammerman & Shafer 2005, ch. 4; Lei et al. 2018, JASA 113(523)). Scored
/// in-sample, a row helps build the histogram bin it falls in, so trusted rows look more
/// normal than fresh ones: on 250 rows and 30 columns the in-sample rate is a fraction of
/// what clean batches show. The final scorer uses every trusted row.
#[must_use]
pub fn fit(
    baseline: &BaselineView<'_>,
    encoder: &Encoder,
    rows: &Rows,
    seed: u64,
) -> Option<AnomalyProfile> {
    if rows.n < 100 {
        return None;
    }
    let all = vec![true; rows.n];
    let mut scorer = Scorer::tables_only(baseline, encoder);
    let copula: Vec<usize> = scorer
        .tables
        .iter()
        .enumerate()
        .filter(|(_, t)| matches!(t, Table::Numeric { knots, .. } if knots.len() > 3))
        .map(|(j, _)| j)
        .take(MAX_COPULA)
        .collect();
    let p = copula.len();
    let use_copula = p >= 2;
    // Fold of each row: a seeded shuffle, so that sorted or grouped files split evenly.
    let mut order: Vec<usize> = (0..rows.n).collect();
    {
        use rand::SeedableRng;
        use rand::seq::SliceRandom;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x616e_6f6d_616c_7921);
        order.shuffle(&mut rng);
    }
    let mut fold = vec![0usize; rows.n];
    for (pos, &i) in order.iter().enumerate() {
        fold[i] = pos % FOLDS;
    }
    let mut oof_hbos = vec![0f64; rows.n];
    let mut oof_d2 = vec![0f64; rows.n];
    for k in 0..FOLDS {
        let train: Vec<bool> = fold.iter().map(|&f| f != k).collect();
        let mut fs = Scorer::tables_only(baseline, encoder);
        fs.tables = tables_of(baseline, encoder, rows, &train);
        if use_copula {
            let (chol, _) = fit_copula(&fs.tables, &copula, rows, &train)?;
            fs.copula.clone_from(&copula);
            fs.chol = chol;
        }
        let test: Vec<usize> = (0..rows.n).filter(|&i| fold[i] == k).collect();
        let codes: Vec<Vec<u8>> = rows
            .codes
            .iter()
            .map(|c| test.iter().map(|&i| c[i]).collect())
            .collect();
        let values: Vec<Vec<f64>> = rows
            .values
            .iter()
            .map(|v| {
                if v.is_empty() {
                    Vec::new()
                } else {
                    test.iter().map(|&i| v[i]).collect()
                }
            })
            .collect();
        let (h, d) = fs.raw(&codes, &values, test.len());
        for (t, &i) in test.iter().enumerate() {
            oof_hbos[i] = h[t];
            oof_d2[i] = d[t];
        }
    }
    let shrink = if use_copula {
        let (chol, lambda) = fit_copula(&scorer.tables, &copula, rows, &all)?;
        scorer.copula = copula;
        scorer.chol = chol;
        lambda
    } else {
        0.0
    };
    let level = CUT_LEVEL.min(1.0 - MIN_EXCEEDANCES / rows.n as f64);
    let cut_hbos = quantile_of(oof_hbos.clone(), level);
    let cut_copula = if scorer.copula.is_empty() {
        0.0
    } else {
        quantile_of(oof_d2.clone(), level)
    };
    let (loo, extreme_scales) = loo_extreme(&scorer.tables, &rows.values, rows.n);
    let cut_extreme = loo.into_iter().fold(0.0, f64::max);
    let flagged = oof_hbos
        .iter()
        .zip(&oof_d2)
        .filter(|&(&h, &d)| {
            (cut_hbos > 0.0 && h > cut_hbos) || (cut_copula > 0.0 && d > cut_copula)
        })
        .count();
    Some(AnomalyProfile {
        copula: scorer.copula,
        cholesky: scorer.chol,
        cut_hbos,
        cut_copula,
        rate: flagged as f64 / rows.n as f64,
        rows: rows.n as u64,
        flagged: Some(flagged as u64),
        shrinkage: Some(shrink),
        cut_level: Some(level),
        cut_extreme: Some(cut_extreme),
        extreme_scales: Some(extreme_scales),
    })
}

/// Share of trusted values past which each side's extreme-value tail scale is measured.
const EXTREME_TAIL: f64 = 0.05;

/// The extreme-value tail scales of one numeric feature, `[below, above]`: the mean excess
/// of the trusted values beyond the 5th (95th) percentile, floored at a quarter standard
/// deviation (the mean-excess estimate of a generalised Pareto scale; Davison & Smith 1990,
/// JRSS B 52(3)). With `drop`, the extreme value on that side is left out of its own side's
/// mean (see [`loo_extreme`]).
#[cfg(test)]
fn tail_scales(sorted: &[f64], sd: f64, drop: bool) -> [f64; 2] {
    let m = sorted.len();
    let k = tail_count(m);
    tail_scales_of(&sorted[..=k], &sorted[m - k - 1..], sd, drop)
}

/// Values in each side's tail of `m` trusted values (at least 1, at most `m - 2`).
fn tail_count(m: usize) -> usize {
    ((EXTREME_TAIL * m as f64).ceil() as usize).clamp(1, m.saturating_sub(2).max(1))
}

/// [`tail_scales`] from the `k + 1` smallest and the `k + 1` largest values, each sorted
/// ascending: the tail is `k` values, the edge the next value inward.
fn tail_scales_of(low: &[f64], high: &[f64], sd: f64, drop: bool) -> [f64; 2] {
    let floor = (0.25 * sd).max(1e-12);
    let k = low.len() - 1;
    let mean_excess = |tail: &[f64], edge: f64, up: bool| {
        if tail.is_empty() {
            return floor;
        }
        let mean = tail.iter().sum::<f64>() / tail.len() as f64;
        let e = if up { mean - edge } else { edge - mean };
        if e.is_finite() { e.max(floor) } else { floor }
    };
    // Left out: the smallest value of the lower tail, the largest of the upper one.
    let (lo_tail, hi_tail) = if drop {
        (&low[1..k], &high[1..k])
    } else {
        (&low[..k], &high[1..])
    };
    [
        mean_excess(lo_tail, low[k], false),
        mean_excess(hi_tail, high[0], true),
    ]
}

/// The extreme-value tail scales of every feature (`[0, 0]` for categorical ones) and the
/// leave-one-out extreme-value scores of the trusted rows: per row, the largest excess of one
/// of its values past the extreme of the *other* trusted rows in that column, in tail scales
/// measured without it (0 for a row that holds no column's sole extreme).
///
/// The largest of these scores is the cut of the extreme-value test, which makes it a
/// conformal test (Vovk, Gammerman & Shafer 2005, ch. 2; Lei et al. 2018, JASA 113(523)):
/// treat a fresh row and the `m` trusted ones as exchangeable and score each against the
/// others. The fresh row's score is what `check` computes; a trusted row's score against the
/// other trusted rows *and* the fresh one can only be smaller than its leave-one-out score
/// here (one more row can only widen the others' range). So a fresh row beats the cut with
/// probability at most about `1 / (m + 1)`, whatever the columns' distributions, and the
/// count of `n` fresh rows past it is at most about `BetaBinomial(n, 1, m)` (the top order
/// statistic of `m` exchangeable scores sits at `F = U`, `U ~ Beta(m, 1)`; David & Nagaraja
/// 2003, *Order Statistics*, §2.1). The extreme must be left out of its own tail scale: it
/// drags its side's scale up, and scored with it, it looks closer to the rest than a fresh
/// value past it does (simulated with 40 normal, Student-t and lognormal columns, 300
/// trusted and 200 fresh rows: 7 times the beta-binomial's count past the cut with the
/// extreme kept in, and the beta-binomial's tail with it left out). The scales are measured
/// on the outer 5% so that one heavy-tailed column's top gap, in its own units, does not set
/// the cut of every column.
fn loo_extreme(tables: &[Table], values: &[Vec<f64>], n: usize) -> (Vec<f64>, Vec<[f64; 2]>) {
    use rayon::prelude::*;
    // Per feature, only the k + 1 values at each end matter: a partial selection, O(m), and
    // a sort of those few, not a sort of the column (10M rows x 14 columns would take as
    // long as the rest of `profile`).
    struct Ends {
        low: Vec<f64>,
        high: Vec<f64>,
    }
    let ends: Vec<Option<Ends>> = tables
        .par_iter()
        .zip(values.par_iter())
        .map(|(t, vals)| {
            if !matches!(t, Table::Numeric { .. }) || vals.len() != n {
                return None;
            }
            let mut v: Vec<f64> = vals.iter().copied().filter(|x| !x.is_nan()).collect();
            let m = v.len();
            if m < 3 {
                return None;
            }
            let t = tail_count(m) + 1;
            if 2 * t >= m {
                v.sort_by(f64::total_cmp);
                return Some(Ends {
                    low: v[..t].to_vec(),
                    high: v[m - t..].to_vec(),
                });
            }
            v.select_nth_unstable_by(t - 1, f64::total_cmp);
            let mut low = v[..t].to_vec();
            low.sort_by(f64::total_cmp);
            let rest = &mut v[t..];
            let r = rest.len();
            rest.select_nth_unstable_by(r - t, f64::total_cmp);
            let mut high = rest[r - t..].to_vec();
            high.sort_by(f64::total_cmp);
            Some(Ends { low, high })
        })
        .collect();
    let mut out = vec![0f64; n];
    let mut scales = vec![[0.0; 2]; tables.len()];
    for (j, ((t, vals), e)) in tables.iter().zip(values).zip(&ends).enumerate() {
        let (Table::Numeric { sd, .. }, Some(e)) = (t, e) else {
            continue;
        };
        scales[j] = tail_scales_of(&e.low, &e.high, *sd, false);
        let without = tail_scales_of(&e.low, &e.high, *sd, true);
        let h = e.high.len();
        let (top, second) = (e.high[h - 1], e.high[h - 2]);
        let (bottom, next) = (e.low[0], e.low[1]);
        for (o, &x) in out.iter_mut().zip(vals) {
            if x == top && top > second {
                *o = o.max((x - second) / without[1]);
            }
            if x == bottom && bottom < next {
                *o = o.max((next - x) / without[0]);
            }
        }
    }
    (out, scales)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_distr::{Distribution, LogNormal, StandardNormal, StudentT};

    fn numeric(sd: f64) -> Table {
        Table::Numeric {
            hbos: vec![0.0; 2],
            z: vec![0.0; 2],
            knots: vec![0.0, 1.0],
            slope: vec![0.0],
            sd,
            bins: 1,
            lo: 0.0,
            hi: 0.0,
            scale_lo: 0.0,
            scale_hi: 0.0,
        }
    }

    /// Columns 0-9 normal, 10-19 Student-t(3), 20-29 lognormal (all normal when `normal`):
    /// `rows` × 30, column-major.
    fn draw(rng: &mut rand_chacha::ChaCha8Rng, rows: usize, normal: bool) -> Vec<Vec<f64>> {
        let t3 = StudentT::new(3.0).unwrap();
        let ln = LogNormal::new(0.0, 1.0).unwrap();
        (0..30)
            .map(|j| {
                (0..rows)
                    .map(|_| match if normal { 0 } else { j / 10 } {
                        0 => StandardNormal.sample(rng),
                        1 => t3.sample(rng),
                        _ => ln.sample(rng),
                    })
                    .collect()
            })
            .collect()
    }

    /// Rows past the cut per fresh batch, and the share of trials in which a normal
    /// column's value at `sd` sd is past it.
    fn trial(normal: bool, sd: f64) -> (f64, f64) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let (m, n, reps) = (300, 200, 60);
        let mut past = 0usize;
        let mut caught = 0usize;
        for _ in 0..reps {
            let trusted = draw(&mut rng, m, normal);
            let fresh = draw(&mut rng, n, normal);
            let mut tables: Vec<Table> = trusted
                .iter()
                .map(|v| {
                    let mean = v.iter().sum::<f64>() / m as f64;
                    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / m as f64;
                    numeric(var.sqrt())
                })
                .collect();
            let (loo, scales) = loo_extreme(&tables, &trusted, m);
            let cut = loo.iter().copied().fold(0.0, f64::max);
            for ((t, v), sc) in tables.iter_mut().zip(&trusted).zip(&scales) {
                if let Table::Numeric {
                    lo,
                    hi,
                    scale_lo,
                    scale_hi,
                    ..
                } = t
                {
                    *lo = v.iter().copied().fold(f64::INFINITY, f64::min);
                    *hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    *scale_lo = sc[0];
                    *scale_hi = sc[1];
                }
            }
            past += (0..n)
                .filter(|&i| {
                    tables
                        .iter()
                        .zip(&fresh)
                        .map(|(t, v)| t.excess(v[i]))
                        .fold(0.0, f64::max)
                        > cut
                })
                .count();
            caught += usize::from(tables[0].excess(sd) > cut);
        }
        (past as f64 / reps as f64, caught as f64 / reps as f64)
    }

    /// The conformal claim of `loo_extreme`: fresh rows from the trusted distribution pass
    /// the cut at about the beta-binomial rate `n / (m + 1)` or less, on normal, heavy and
    /// skewed columns alike. Its price: heavy-tailed columns' top gaps set the cut of every
    /// column, so a value 8 sd out on a normal column is past it about half the time beside
    /// ten Student-t(3) and ten lognormal columns, and 6 sd out nine times in ten among normal ones.
    #[test]
    fn the_extreme_value_cut_is_calibrated_on_fresh_rows() {
        let bound = 200.0 / 301.0;
        let (mixed, at8) = trial(false, 8.0);
        assert!(
            mixed <= 1.5 * bound,
            "{mixed} rows past the cut per batch, bound {bound}"
        );
        assert!(at8 >= 0.35, "8 sd caught in {at8} of trials");
        let (normal, at6) = trial(true, 6.0);
        assert!(
            normal <= 1.5 * bound,
            "{normal} rows past the cut, bound {bound}"
        );
        assert!(at6 >= 0.85, "6 sd caught in {at6} of trials");
    }

    #[test]
    fn tail_scales_leave_the_extreme_out_on_request() {
        // 100 values 1..=100 with the top one at 1000: the top 5 are 96..99 and 1000.
        let mut v: Vec<f64> = (1..=99).map(f64::from).collect();
        v.push(1000.0);
        let with = tail_scales(&v, 1.0, false);
        let without = tail_scales(&v, 1.0, true);
        // Edge 95 (the sixth largest); tail mean (96+97+98+99+1000)/5 = 278.
        assert!((with[1] - 183.0).abs() < 1e-9, "{with:?}");
        // Without 1000: (96+97+98+99)/4 - 95 = 2.5.
        assert!((without[1] - 2.5).abs() < 1e-9, "{without:?}");
        // Bottom: values 1..5 past edge 6: 6 - 3 = 3; without 1: 6 - 3.5 = 2.5.
        assert!((with[0] - 3.0).abs() < 1e-9 && (without[0] - 2.5).abs() < 1e-9);
    }
}
