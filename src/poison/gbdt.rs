//! A small gradient-boosted ensemble of oblivious trees over binned features: the reference
//! model of P(label | features) that the label-consistency detector scores rows with.
//!
//! Method: gradient boosting with second-order (Newton) leaf values and L2-regularised gains
//! (Friedman 2001, "Greedy function approximation: a gradient boosting machine"; Chen &
//! Guestrin 2016, XGBoost, eq. 6–7), softmax loss for more than two classes (Friedman 2001,
//! §4.6), split search over histograms of pre-binned features (Ke et al. 2017, LightGBM), and
//! oblivious trees — one split per level shared by every node of that level (Prokhorenkova et
//! al. 2018, CatBoost). Oblivious trees were chosen for scoring speed: a row's leaf is a
//! `depth`-bit index computed column by column without branches, so `check` scores ten
//! million rows in a fraction of the time their decoding takes, and a tree serialises as a
//! handful of numbers. Inputs are the codes of [`crate::rows`]: numeric bins split by order
//! (`code > t`), categorical codes split one value against the rest (`code == c`).

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Training settings.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    /// Boosting rounds.
    pub rounds: usize,
    /// Levels per tree.
    pub depth: usize,
    /// Shrinkage of every leaf value.
    pub learning_rate: f64,
    /// L2 penalty on leaf values.
    pub lambda: f64,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            rounds: 40,
            depth: 5,
            learning_rate: 0.2,
            lambda: 2.0,
        }
    }
}

/// One level's split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Split {
    /// Feature index.
    pub feature: u16,
    /// Threshold code.
    pub code: u8,
    /// `true`: right when the code equals `code`; `false`: right when it is greater.
    pub equal: bool,
}

impl Split {
    #[inline]
    fn right(self, c: u8) -> bool {
        if self.equal {
            c == self.code
        } else {
            c > self.code
        }
    }
}

/// An oblivious tree for one output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Tree {
    /// Output (class score) the tree adds to.
    pub output: u16,
    /// Splits from the root level down; a row's leaf index takes one bit per level.
    pub splits: Vec<Split>,
    /// `2^splits.len()` leaf values.
    pub leaves: Vec<f32>,
}

/// The fitted ensemble.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Forest {
    /// Classes.
    pub classes: usize,
    /// Features (codes per row) the model reads.
    pub features: usize,
    /// Initial score per output (log prior odds or log priors).
    pub base: Vec<f64>,
    /// Trees, round by round.
    pub trees: Vec<Tree>,
}

fn outputs(classes: usize) -> usize {
    if classes == 2 { 1 } else { classes }
}

impl Forest {
    /// Checks that the forest fits `features` encoded columns with the given cardinalities.
    ///
    /// # Errors
    /// A description of the mismatch.
    pub fn validate(&self, cardinality: &[usize]) -> Result<(), String> {
        if self.features != cardinality.len() {
            return Err(format!(
                "model reads {} features, {} are encoded",
                self.features,
                cardinality.len()
            ));
        }
        if self.classes < 2 || self.base.len() != outputs(self.classes) {
            return Err("model has a malformed class layout".into());
        }
        for t in &self.trees {
            if usize::from(t.output) >= self.base.len()
                || t.leaves.len() != 1usize << t.splits.len()
                || t.splits.len() > 12
                || t.splits
                    .iter()
                    .any(|s| usize::from(s.feature) >= cardinality.len())
            {
                return Err("model has a malformed tree".into());
            }
        }
        Ok(())
    }

    /// Class probabilities of `n` rows, row-major (`n × classes`).
    #[must_use]
    pub fn predict(&self, codes: &[&[u8]], n: usize) -> Vec<f32> {
        let outs = self.base.len();
        let mut raw: Vec<f64> = Vec::with_capacity(n * outs);
        for _ in 0..n {
            raw.extend_from_slice(&self.base);
        }
        let mut idx = vec![0u32; n];
        for t in &self.trees {
            idx.iter_mut().for_each(|i| *i = 0);
            for s in &t.splits {
                let col = codes[usize::from(s.feature)];
                for (i, &c) in idx.iter_mut().zip(col) {
                    *i = (*i << 1) | u32::from(s.right(c));
                }
            }
            let o = usize::from(t.output);
            for (r, &i) in idx.iter().enumerate() {
                raw[r * outs + o] += f64::from(t.leaves[i as usize]);
            }
        }
        probabilities(&raw, n, self.classes)
    }
}

/// Scores to probabilities: logistic for two classes, softmax otherwise.
fn probabilities(raw: &[f64], n: usize, classes: usize) -> Vec<f32> {
    let mut p = Vec::with_capacity(n * classes);
    if classes == 2 {
        for &f in raw.iter().take(n) {
            let p1 = 1.0 / (1.0 + (-f).exp());
            p.push((1.0 - p1) as f32);
            p.push(p1 as f32);
        }
    } else {
        for row in raw.chunks(classes).take(n) {
            let m = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = row.iter().map(|f| (f - m).exp()).sum();
            p.extend(row.iter().map(|f| ((f - m).exp() / z) as f32));
        }
    }
    p
}

/// Fits a forest to column-major `codes` (`cardinality[j]` codes for feature `j`) and class
/// indices `y` (every `y < classes`).
#[must_use]
pub fn fit(
    codes: &[&[u8]],
    cardinality: &[usize],
    categorical: &[bool],
    y: &[u16],
    classes: usize,
    params: Params,
) -> Forest {
    let n = y.len();
    let outs = outputs(classes);
    let mut prior = vec![0f64; classes];
    for &c in y {
        prior[usize::from(c)] += 1.0;
    }
    let nf = n.max(1) as f64;
    let base: Vec<f64> = if classes == 2 {
        let p1 = ((prior[1] + 0.5) / (nf + 1.0)).clamp(1e-6, 1.0 - 1e-6);
        vec![(p1 / (1.0 - p1)).ln()]
    } else {
        prior
            .iter()
            .map(|&c| ((c + 0.5) / (nf + classes as f64 * 0.5)).ln())
            .collect()
    };
    let mut raw: Vec<f64> = Vec::with_capacity(n * outs);
    for _ in 0..n {
        raw.extend_from_slice(&base);
    }
    let mut trees = Vec::new();
    let mut g = vec![0f64; n];
    let mut h = vec![0f64; n];
    let mut leaf = vec![0u32; n];
    for _ in 0..params.rounds {
        let p = probabilities(&raw, n, classes);
        for o in 0..outs {
            let class = if classes == 2 { 1 } else { o };
            for i in 0..n {
                let pi = f64::from(p[i * classes + class]);
                let yi = f64::from(u8::from(usize::from(y[i]) == class));
                g[i] = pi - yi;
                h[i] = (pi * (1.0 - pi)).max(1e-6);
            }
            let tree = grow(
                codes,
                cardinality,
                categorical,
                &g,
                &h,
                &mut leaf,
                o,
                params,
            );
            for (i, &l) in leaf.iter().enumerate() {
                raw[i * outs + o] += f64::from(tree.leaves[l as usize]);
            }
            trees.push(tree);
        }
    }
    Forest {
        classes,
        features: codes.len(),
        base,
        trees,
    }
}

/// Grows one oblivious tree on gradients `g` and hessians `h`; leaves `leaf` holding each
/// row's leaf index.
#[allow(clippy::too_many_arguments)]
fn grow(
    codes: &[&[u8]],
    cardinality: &[usize],
    categorical: &[bool],
    g: &[f64],
    h: &[f64],
    leaf: &mut [u32],
    output: usize,
    params: Params,
) -> Tree {
    let lambda = params.lambda;
    leaf.iter_mut().for_each(|l| *l = 0);
    let mut splits = Vec::new();
    let score = |gs: f64, hs: f64| gs * gs / (hs + lambda);
    for depth in 0..params.depth {
        let leaves = 1usize << depth;
        // Best split per feature: (gain, code, equal).
        let best: Vec<Option<(f64, u8, bool)>> = (0..codes.len())
            .into_par_iter()
            .map(|j| {
                let card = cardinality[j];
                if card < 2 {
                    return None;
                }
                let mut hist = vec![(0f64, 0f64); leaves * card];
                for ((&c, &l), (&gi, &hi)) in codes[j].iter().zip(leaf.iter()).zip(g.iter().zip(h))
                {
                    let cell = &mut hist[l as usize * card + usize::from(c)];
                    cell.0 += gi;
                    cell.1 += hi;
                }
                let totals: Vec<(f64, f64)> = (0..leaves)
                    .map(|l| {
                        hist[l * card..(l + 1) * card]
                            .iter()
                            .fold((0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1))
                    })
                    .collect();
                let parent: f64 = totals.iter().map(|&(gs, hs)| score(gs, hs)).sum();
                let mut best: Option<(f64, u8, bool)> = None;
                let mut consider = |gain: f64, code: usize, equal: bool| {
                    if gain > 1e-9 && best.is_none_or(|b| gain > b.0) {
                        best = Some((gain, code as u8, equal));
                    }
                };
                if categorical[j] {
                    for code in 0..card {
                        let mut s = 0.0;
                        for (l, &(gt, ht)) in totals.iter().enumerate() {
                            let (gr, hr) = hist[l * card + code];
                            s += score(gr, hr) + score(gt - gr, ht - hr);
                        }
                        consider(s - parent, code, true);
                    }
                } else {
                    let mut left = vec![(0f64, 0f64); leaves];
                    for code in 0..card - 1 {
                        let mut s = 0.0;
                        for (l, &(gt, ht)) in totals.iter().enumerate() {
                            let cell = hist[l * card + code];
                            left[l].0 += cell.0;
                            left[l].1 += cell.1;
                            s +=
                                score(left[l].0, left[l].1) + score(gt - left[l].0, ht - left[l].1);
                        }
                        consider(s - parent, code, false);
                    }
                }
                best
            })
            .collect();
        let chosen = best
            .iter()
            .enumerate()
            .filter_map(|(j, b)| b.map(|b| (j, b)))
            .max_by(|a, b| a.1.0.total_cmp(&b.1.0).then(b.0.cmp(&a.0)));
        let Some((j, (_, code, equal))) = chosen else {
            break;
        };
        let split = Split {
            feature: j as u16,
            code,
            equal,
        };
        for (l, &c) in leaf.iter_mut().zip(codes[j]) {
            *l = (*l << 1) | u32::from(split.right(c));
        }
        splits.push(split);
    }
    let mut sums = vec![(0f64, 0f64); 1 << splits.len()];
    for ((&l, &gi), &hi) in leaf.iter().zip(g).zip(h) {
        sums[l as usize].0 += gi;
        sums[l as usize].1 += hi;
    }
    let leaves = sums
        .iter()
        .map(|&(gs, hs)| (-gs / (hs + lambda) * params.learning_rate) as f32)
        .collect();
    Tree {
        output: output as u16,
        splits,
        leaves,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A label that is an interaction of two features (XOR), with 5% noise: no single split
    /// predicts it, a depth-2 tree does.
    #[test]
    fn learns_an_interaction_and_predicts_probabilities() {
        let n = 4000;
        let mut a = Vec::new();
        let mut b = Vec::new();
        let mut y = Vec::new();
        let mut state = 1u64;
        for i in 0..n {
            state = crate::rows::mix(state);
            let x1 = (state % 10) as u8;
            let x2 = ((state >> 8) % 3) as u8;
            let clean = (x1 >= 5) ^ (x2 == 1);
            let noisy = if i % 20 == 0 { !clean } else { clean };
            a.push(x1);
            b.push(x2);
            y.push(u16::from(noisy));
        }
        let codes = [a.as_slice(), b.as_slice()];
        let f = fit(&codes, &[10, 3], &[false, true], &y, 2, Params::default());
        f.validate(&[10, 3]).unwrap();
        let p = f.predict(&codes, n);
        let correct = (0..n)
            .filter(|&i| (p[2 * i + 1] > 0.5) == ((a[i] >= 5) ^ (b[i] == 1)))
            .count();
        assert!(correct as f64 / n as f64 > 0.99, "{correct}");
        assert!((0..n).all(|i| (p[2 * i] + p[2 * i + 1] - 1.0).abs() < 1e-5));
    }

    #[test]
    fn multiclass_softmax_recovers_the_class() {
        let n = 3000;
        let x: Vec<u8> = (0..n).map(|i| (i % 30) as u8).collect();
        let y: Vec<u16> = x.iter().map(|&c| u16::from(c / 10)).collect();
        let f = fit(&[&x], &[30], &[false], &y, 3, Params::default());
        let p = f.predict(&[&x], n);
        for i in 0..n {
            let best = (0..3)
                .max_by(|&a, &b| p[i * 3 + a].total_cmp(&p[i * 3 + b]))
                .unwrap();
            assert_eq!(best, usize::from(y[i]));
        }
    }
}
