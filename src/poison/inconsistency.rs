//! `poison-label-inconsistency`: more labels disagree with the pinned reference model of
//! P(label | features) than on the trusted data out of fold.
//!
//! The state ([`LabelState`]) is a few counts and exact sums per class, the surprising rows
//! by feature code and (predicted, given) class, and a bounded sample for the
//! likelihood-ratio test: its size does not grow with the batch. The test is described on
//! [`candidates`]; the model and its calibration on [`super::label`].

use serde::{Deserialize, Serialize};

use super::label::{LabelModel, MIN_GAP, P_FLOOR, segment_codes};
use super::scan::{Block, LrRow, Pinned, trim_sample};
use super::{Detector, Found, PoisonProfile, RowSelector, Scan, flip_lr};
use crate::poison::BaselineView;
use crate::detect::registry::{CodeInfo, Family, Weight};
use crate::detect::{Accumulator, Candidate, Effect, PowerNull, TopRows, add_counts, add_tables};
use crate::finding::{Subject, num};
use crate::poison::RowCode;
use crate::detect::rules::{RateRule, RowRule, RowRules};
use crate::stats::exact::ExactSum;

/// `poison-label-inconsistency`, as the registry describes it, with its policy defaults.
pub const CODE: RowCode = RowCode {
    info: CodeInfo {
        code: "poison-label-inconsistency",
        family: Family::Row,
        weight: Weight::Detector,
        joint: true,
        doc: "docs/detectors.md#poison-label-inconsistency",
        skip_phrase: "label-consistency detector",
        summary: "More labels disagree with the pinned reference model of P(label | features) than on the trusted data out of fold: an estimated share of flipped labels.",
        why: "Label flipping (random, targeted, or swaps that keep every marginal) degrades or steers the retrained model and is invisible to per-column drift statistics.",
        respond: "Open the quarantine: the rows are ranked by how surprising their label is, and the message names the dominant predicted -> given class pair and region. Audit the labelling source for those rows; drop them and check again.",
    },
    rule: RowRule::Rate(RULE),
};

/// `[checks.poison-label-inconsistency]` when the policy leaves it out. Thresholds on the estimated share of flipped labels: 5% random flips estimate at about
/// 0.05; clean batches at 0 ± sampling noise.
pub const RULE: RateRule = RateRule::denying(0.015, 0.03);

/// The label test's state over the rows seen so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelState {
    /// Labelled rows.
    pub labelled: u64,
    /// Labelled rows outside the trusted support (not judged).
    pub outside: u64,
    /// Labelled rows judged.
    pub judged: u64,
    /// Judged rows whose label is surprising (probability below the pinned cut).
    pub surprising: u64,
    /// Judged rows the model predicts correctly.
    pub correct: u64,
    /// Sum of every judged row's surprise `-ln P(label | x)`.
    pub surprise: ExactSum,
    /// Surprising rows by (predicted, given) class (`predicted * classes + given`).
    pub transitions: Vec<u64>,
    /// Judged rows per given class.
    pub class_n: Vec<u64>,
    /// Surprising rows per given class.
    pub class_k: Vec<u64>,
    /// Surprise per given class.
    pub class_surprise: Vec<ExactSum>,
    /// Per feature, rows (labelled or not) it put outside the support.
    pub outside_support: Vec<u64>,
    /// Per feature, surprising rows by code and (predicted, given) class
    /// (`(code * classes + predicted) * classes + given`): where a pair concentrates.
    pub surprise_tables: Vec<Vec<u64>>,
    /// The rows with the most surprising labels (score `1 - P(label | x)`), to list them
    /// behind a finding without a second read.
    pub top_surprising: TopRows,
    /// The likelihood-ratio test's bottom-k sample ([`LrRow`]); a part stores it as binary.
    #[serde(skip)]
    pub sample: Vec<LrRow>,
}

/// Salt that keeps the sample's key apart from the duplicate fingerprints it is built on.
const SAMPLE_SALT: u64 = 0x9E37_79B9_7F4A_7C15;

impl Accumulator<Pinned<'_>, Block> for LabelState {
    fn new(p: &Pinned<'_>) -> Option<Self> {
        let m = p.profile.label_model.as_ref()?;
        let k = m.forest.classes;
        Some(Self {
            labelled: 0,
            outside: 0,
            judged: 0,
            surprising: 0,
            correct: 0,
            surprise: ExactSum::new(),
            transitions: vec![0; k * k],
            class_n: vec![0; k],
            class_k: vec![0; k],
            class_surprise: vec![ExactSum::new(); k],
            outside_support: vec![0; p.profile.features.len()],
            surprise_tables: p
                .profile
                .cardinality
                .iter()
                .map(|&c| vec![0; c * k * k])
                .collect(),
            top_surprising: TopRows::default(),
            sample: Vec::new(),
        })
    }

    fn update(&mut self, p: &Pinned<'_>, b: &Block) {
        let Some(m) = &p.profile.label_model else {
            return;
        };
        let k = m.forest.classes;
        let t = m.temperature.unwrap_or(1.0);
        let e = &b.e;
        // Shapes are fixed by the profile; a block always fits.
        let _ = add_counts(&mut self.outside_support, &b.outside);
        for i in 0..e.n {
            let pi = f64::from(b.p[i]);
            if pi.is_nan() {
                continue;
            }
            self.labelled += 1;
            if !b.inside[i] {
                self.outside += 1;
                continue;
            }
            let y = usize::from(e.label[i]);
            let pred = usize::from(b.pred[i]);
            self.judged += 1;
            let s = -pi.max(P_FLOOR).ln();
            self.surprise.add(s);
            self.class_surprise[y].add(s);
            self.correct += u64::from(pred == y);
            self.class_n[y] += 1;
            // Every judged row is a candidate for the quarantine, most surprising first: a
            // finding keeps as many as the flips it estimates, which can be more than the
            // rows past the cut.
            self.top_surprising
                .offer(super::quarantine::surprise(b.p[i]), b.first + i as u64);
            if pi < m.cut {
                self.surprising += 1;
                self.class_k[y] += 1;
                self.transitions[pred * k + y] += 1;
                let pair = pred * k + y;
                for (t, codes) in self.surprise_tables.iter_mut().zip(&e.codes) {
                    t[usize::from(codes[i]) * k * k + pair] += 1;
                }
            }
            let key = crate::rows::mix(e.fp_exact[i] ^ (y as u64 + 1).wrapping_mul(SAMPLE_SALT));
            // A row above the batch's sample so far can never enter the final bottom k.
            if k <= MAX_LR_CLASSES && key <= b.sample_below {
                let mut row = [0f32; MAX_LR_CLASSES];
                row[..k].copy_from_slice(&b.probs[i * k..(i + 1) * k]);
                flip_lr::apply_temperature(&mut row[..k], t);
                self.sample.push(LrRow {
                    key,
                    label: y as u16,
                    probs: row,
                });
            }
        }
        trim_sample(&mut self.sample, false);
    }

    fn merge(&mut self, p: &Pinned<'_>, other: Self) -> Result<(), String> {
        let k = p.profile.classes;
        if other
            .sample
            .iter()
            .any(|r| usize::from(r.label) >= k.max(1))
            || other.class_surprise.len() != self.class_surprise.len()
        {
            return Err("label-test state of another shape".to_owned());
        }
        self.labelled += other.labelled;
        self.outside += other.outside;
        self.judged += other.judged;
        self.surprising += other.surprising;
        self.correct += other.correct;
        self.surprise.merge(&other.surprise);
        add_counts(&mut self.transitions, &other.transitions)?;
        add_counts(&mut self.class_n, &other.class_n)?;
        add_counts(&mut self.class_k, &other.class_k)?;
        for (a, b) in self.class_surprise.iter_mut().zip(&other.class_surprise) {
            a.merge(b);
        }
        add_counts(&mut self.outside_support, &other.outside_support)?;
        add_tables(&mut self.surprise_tables, &other.surprise_tables)?;
        self.top_surprising.merge(other.top_surprising);
        self.sample.extend(other.sample);
        trim_sample(&mut self.sample, false);
        Ok(())
    }

    fn shift_rows(&mut self, by: u64) {
        self.top_surprising.shift(by);
    }
}

impl Detector for LabelState {
    const CODES: &'static [RowCode] = &[CODE];

    /// The label-consistency candidate, when a reference model was pinned.
    fn finish(&self, p: &Pinned<'_>, scan: &Scan, rules: &RowRules) -> Vec<Found> {
        match &p.profile.label_model {
            Some(m) => candidates(&p.baseline, p.profile, m, scan, rules),
            None => Vec::new(),
        }
    }
}

/// The class-prior reweighting the label test treats as natural (DESIGN §5: "a class prior
/// reweighted by up to 1.2"); the pinned prior's own sampling error widens it.
const PRIOR_TOLERANCE: f64 = 1.2;
/// Most classes for which the likelihood-ratio test fits the prior reweighting.
pub const MAX_LR_CLASSES: usize = 5;

/// Per class, the bound of the prior reweighting the likelihood-ratio test's null allows
/// (relative to class 0): the tolerated reweighting widened by the pinned prior's sampling
/// error.
fn lr_bounds(m: &LabelModel) -> Vec<f64> {
    let x0 = m.class_rows[0].max(1) as f64;
    (0..m.forest.classes)
        .map(|c| {
            let xc = m.class_rows[c].max(1) as f64;
            PRIOR_TOLERANCE * (1.96 * (1.0 / xc + 1.0 / x0).sqrt()).exp()
        })
        .collect()
}

/// The likelihood-ratio test of flips ([`super::flip_lr`]) on the sampled rows of a scan.
/// `transitions` are the batch's surprising rows by (predicted, given), which rank the
/// directed alternatives when there are more than two classes.
fn lr_test(m: &LabelModel, scan: &Scan, transitions: &[u64]) -> Option<super::flip_lr::LrResult> {
    use super::flip_lr::{Alternative, Data, test};
    let k = m.forest.classes;
    if !(2..=MAX_LR_CLASSES).contains(&k) || scan.lr_labels.len() < 30 {
        return None;
    }
    let bounds = lr_bounds(m);
    let mut alts = vec![Alternative::Random];
    if k == 2 {
        alts.push(Alternative::Directed { from: 0, to: 1 });
        alts.push(Alternative::Directed { from: 1, to: 0 });
    } else {
        // The four (source -> target) pairs with the most surprising rows beyond the trusted
        // share; all of them count toward the Bonferroni factor.
        let mut pairs: Vec<(u64, usize, usize)> = (0..k)
            .flat_map(|s| (0..k).filter(move |&t| t != s).map(move |t| (s, t)))
            .map(|(s, t)| (transitions[s * k + t], s, t))
            .collect();
        pairs.sort_by(|a, b| b.0.cmp(&a.0).then((a.1, a.2).cmp(&(b.1, b.2))));
        alts.extend(
            pairs
                .iter()
                .take(4)
                .map(|&(_, from, to)| Alternative::Directed { from, to }),
        );
    }
    test(
        &Data {
            probs: &scan.lr_probs,
            labels: &scan.lr_labels,
            k,
        },
        &bounds,
        &alts,
    )
}

pub(crate) use crate::stats::proportion::normal_upper_tail as normal_sf;

/// The label-consistency candidate of a scanned batch.
#[must_use]
pub fn candidates(
    baseline: &BaselineView<'_>,
    profile: &PoisonProfile,
    m: &LabelModel,
    scan: &Scan,
    rules: &RowRules,
) -> Vec<(Candidate, Option<RowSelector>)> {
    let rule = rules.rate(CODE.info.code, &RULE);
    let classes = m.forest.classes;
    let Some(st) = &scan.states.label else {
        return Vec::new();
    };
    let (n, k, correct, outside) = (st.judged, st.surprising, st.correct, st.outside);
    let transitions = &st.transitions;
    let (class_n, class_k) = (&st.class_n, &st.class_k);
    let class_s: Vec<f64> = st.class_surprise.iter().map(ExactSum::value).collect();
    let surprise = st.surprise.value();
    if n < super::MIN_ROWS {
        return Vec::new();
    }
    let (nf, mf) = (n as f64, m.rows as f64);
    let r0 = m.clean_rate;
    let r = k as f64 / nf;
    // Stratified by given label: a flip into a class is judged against that class's own
    // clean rate, so a changed class balance does not read as flipping, and flips into the
    // class where they are visible are not diluted by the others. The variance carries the
    // trusted estimate's sampling error too (two-sample z-test).
    //
    // A second, continuous statistic uses every row's surprise `-ln P(label | x)`: its excess
    // over each class's trusted mean. It has more power when the model is weak and few flipped
    // labels pass the cut. The p-value is the Bonferroni combination of the two.
    //
    // Each excess divided by how visible a flip into its class is estimates the flips into
    // that class; classes where flips are nearly invisible are left out, and the sum is
    // scaled by the share of random flips that land in the visible classes, so the effect
    // reads as "the random-flip rate that explains what is visible".
    let (mut excess, mut var, mut rate_flips, mut rate_visible) = (0f64, 0f64, 0f64, 0f64);
    let (mut s_excess, mut s_var, mut mean_flips, mut mean_visible) = (0f64, 0f64, 0f64, 0f64);
    let k_f = classes as f64;
    for c in 0..classes {
        let (nc, mc) = (class_n[c] as f64, m.class_rows[c] as f64);
        if nc == 0.0 || mc == 0.0 {
            continue;
        }
        // Share of random flips that land in class `c`.
        let landing = (1.0 - nc / nf) / (k_f - 1.0);
        let rc = m.class_clean_rate[c].clamp(0.5 / mc, 1.0 - 0.5 / mc);
        let e = class_k[c] as f64 - nc * rc;
        excess += e;
        var += nc * rc * (1.0 - rc) * (1.0 + nc / mc);
        let gap = m.class_flipped_rate[c] - rc;
        if gap >= MIN_GAP {
            rate_flips += e / gap;
            rate_visible += landing;
        }
        let mu = m.class_mean_surprise[c];
        let sd = m.class_sd_surprise[c];
        let es = class_s[c] - nc * mu;
        s_excess += es;
        s_var += nc * sd * sd * (1.0 + nc / mc);
        let delta = m.class_flipped_surprise[c] - mu;
        if delta >= super::flip_power::MIN_SURPRISE_GAP {
            mean_flips += es / delta;
            mean_visible += landing;
        }
    }
    let mut z = excess / var.max(f64::MIN_POSITIVE).sqrt();
    let mut surprise_z = s_excess / s_var.max(f64::MIN_POSITIVE).sqrt();
    let lr = lr_test(m, scan, transitions);
    // With the likelihood-ratio test's probabilities at hand, the rate and surprise tests
    // condition on each row's features (and on the null's fitted label shift) instead of
    // comparing with the trusted class rates: a covariate shift then moves their
    // expectation, not their verdict.
    let conditional = lr.as_ref().map(|r| {
        let d = super::flip_lr::Data {
            probs: &scan.lr_probs,
            labels: &scan.lr_labels,
            k: classes,
        };
        super::flip_lr::conditional_z(&d, &r.null_weights, m.cut)
    });
    if let Some((cz, cs, _)) = conditional {
        z = cz;
        surprise_z = cs;
    }
    // Bonferroni over the class-stratified rate and surprise tests (robust to any change of
    // the class balance) and the likelihood-ratio test (which also uses the prior's move
    // beyond the tolerated reweighting).
    let tests = if lr.is_some() { 3.0 } else { 2.0 };
    let p_min = normal_sf(z)
        .min(normal_sf(surprise_z))
        .min(lr.as_ref().map_or(1.0, |r| r.p_value));
    let p_value = (tests * p_min).min(1.0);
    let estimate = |flips: f64, visible: f64| {
        if visible > 0.0 {
            flips / visible / nf
        } else {
            0.0
        }
    };
    let flip_share = if surprise_z > z {
        estimate(mean_flips, mean_visible)
    } else {
        estimate(rate_flips, rate_visible)
    };
    // Conditional tests: the maximum-likelihood share is the effect (the class-rate
    // estimates above assume the trusted mix of easy and hard rows).
    let flip_share = match &lr {
        Some(r) => r.epsilon.max(if conditional.is_some() {
            0.0
        } else {
            flip_share
        }),
        None => flip_share,
    };
    let mean_surprise = surprise / nf;
    let names = &baseline.class_names();
    // The (predicted, given) pair with the most surprising rows beyond the trusted rate.
    let mut top: Option<(f64, usize, usize)> = None;
    for pred in 0..classes {
        for given in 0..classes {
            let j = pred * classes + given;
            let excess = transitions[j] as f64 - m.transitions[j] as f64 / mf * nf;
            if excess > 0.0 && top.is_none_or(|t| excess > t.0) {
                top = Some((excess, pred, given));
            }
        }
    }
    let mut describe = format!(
        "{k} of {n} labels ({}%) are surprising to the reference model against {}% of trusted labels out of fold; estimated flipped share {}",
        num(100.0 * r),
        num(100.0 * r0),
        num(flip_share)
    );
    if let Some(r) = &lr {
        let name = |c: usize| names.get(c).cloned().unwrap_or_else(|| c.to_string());
        let alt = match r.alternative {
            super::flip_lr::Alternative::Random => "random flips".to_owned(),
            super::flip_lr::Alternative::Directed { from, to } => {
                format!("`{}` relabelled `{}`", name(from), name(to))
            }
        };
        describe.push_str(&format!(
            "; the likelihood-ratio test fits {} of labels flipped (95% interval {} to {}) as {alt}",
            num(r.epsilon),
            num(r.ci.0),
            num(r.ci.1)
        ));
    }
    if outside > 0 {
        describe.push_str(&format!(
            "; {outside} labelled rows lie outside the trusted support and were not judged"
        ));
    }
    let mut subject = Subject::column(baseline.label.as_deref().unwrap_or("label"));
    if let Some((excess, pred, given)) = top {
        let name = |c: usize| names.get(c).cloned().unwrap_or_else(|| c.to_string());
        describe.push_str(&format!(
            "; most of the excess ({} rows) looks like `{}` but is labelled `{}`",
            num(excess),
            name(pred),
            name(given)
        ));
        subject.value = Some(format!("{} -> {}", name(pred), name(given)));
        subject.label = Some(name(given));
        if let Some(region) = region(baseline, profile, scan, pred, given) {
            describe.push_str(&format!(", concentrated where {region}"));
        }
    }
    let mut evidence = std::collections::BTreeMap::new();
    evidence.insert("surprising_share".into(), r);
    evidence.insert("trusted_surprising_share".into(), r0);
    evidence.insert("flipped_surprising_share".into(), m.flipped_rate);
    evidence.insert("probability_cut".into(), m.cut);
    evidence.insert("z".into(), z);
    evidence.insert(
        "conditional_tests".into(),
        f64::from(u8::from(conditional.is_some())),
    );
    evidence.insert("mean_surprise".into(), mean_surprise);
    evidence.insert("trusted_mean_surprise".into(), m.mean_surprise);
    evidence.insert("mean_surprise_z".into(), surprise_z);
    evidence.insert("accuracy".into(), correct as f64 / nf);
    evidence.insert("trusted_accuracy".into(), m.accuracy);
    evidence.insert("rows_judged".into(), nf);
    evidence.insert("rows_outside_support".into(), outside as f64);
    evidence.insert("temperature".into(), m.temperature.unwrap_or(1.0));
    if let Some(r) = &lr {
        evidence.insert("lr".into(), r.lr);
        evidence.insert("lr_p".into(), r.p_value);
        evidence.insert("lr_rows".into(), scan.lr_labels.len() as f64);
        evidence.insert("flip_share_ml".into(), r.epsilon);
        evidence.insert("flip_share_low".into(), r.ci.0);
        evidence.insert("flip_share_high".into(), r.ci.1);
        if let super::flip_lr::Alternative::Directed { to, .. } = r.alternative {
            // The class the directed alternative relabels into (its flips are labelled so).
            evidence.insert("flipped_to".into(), to as f64);
        }
    }
    // What the test could have seen: random flips on these rows under the same null.
    let power = lr.as_ref().and_then(|r| {
        super::flip_power::FlipNull::new(
            classes,
            &scan.lr_probs,
            &scan.lr_labels,
            n,
            &lr_bounds(m),
            m.cut,
            r.tried,
            if conditional.is_some() { 3 } else { 2 },
        )
        .map(|f| PowerNull::Model(std::sync::Arc::new(f)))
    });
    // Without the sample (more classes than it fits), the class-stratified tests decide.
    let power = power.or_else(|| {
        lr.is_none()
            .then(|| super::flip_power::ClassFlipNull::new(m, class_n, class_k, &class_s, 2))
            .flatten()
            .map(|f| PowerNull::Model(std::sync::Arc::new(f)))
    });
    let c = Candidate {
        code: "poison-label-inconsistency",
        subject,
        p_value: Some(p_value),
        effects: vec![Effect {
            name: "flip_share",
            value: flip_share,
            warn: rule.warn,
            deny: rule.deny,
        }],
        fixed: None,
        n,
        n_baseline: m.rows,
        describe,
        evidence,
        tag: None,
        power,
    };
    let excess = match conditional {
        // The class-rate excess still bounds how many surprising rows the quarantine keeps
        // when the finding fires; the conditional excess can be the larger of the two.
        Some((_, _, e)) => (e * nf / scan.lr_labels.len().max(1) as f64).max(excess),
        None => excess,
    };
    // The quarantine holds as many rows as the flips the likelihood-ratio test estimates
    // when that is more: the rows past the cut are only the clearest of them.
    let excess = match &lr {
        Some(r) => excess.max(r.epsilon * nf),
        None => excess,
    };
    let limit = excess.max(0.0).ceil() as usize;
    let to = lr.as_ref().and_then(|r| match r.alternative {
        super::flip_lr::Alternative::Directed { to, .. } => u16::try_from(to).ok(),
        super::flip_lr::Alternative::Random => None,
    });
    vec![(c, Some(RowSelector::Surprising { limit, to }))]
}

/// Where the surprising rows of one (predicted, given) pair concentrate: the feature segment
/// (numeric decile or category) with the largest excess over an even spread, if it holds at
/// least a third of them and the excess is clear.
fn region(
    baseline: &BaselineView<'_>,
    profile: &PoisonProfile,
    scan: &Scan,
    pred: usize,
    given: usize,
) -> Option<String> {
    let k = profile.classes;
    let pair = pred * k + given;
    let st_tables = &scan.states.label.as_ref()?.surprise_tables;
    // Per feature, this pair's surprising rows by code (every feature counts the same rows).
    let hits_of = |j: usize| -> Option<Vec<f64>> {
        let t = st_tables.get(j)?;
        Some(
            (0..profile.cardinality[j])
                .map(|code| t.get(code * k * k + pair).copied().unwrap_or(0) as f64)
                .collect(),
        )
    };
    let m_hits: f64 = hits_of(0)?.iter().sum();
    if m_hits < 10.0 {
        return None;
    }
    let mut best: Option<(f64, String)> = None;
    for (j, name) in profile.features.iter().enumerate() {
        let col = baseline.column(name)?;
        let card = profile.cardinality[j];
        // Labelled rows per code, from the batch's class table.
        let table = scan.tables.get(j)?;
        let total: Vec<f64> = (0..card)
            .map(|code| table[code * k..(code + 1) * k].iter().sum::<u64>() as f64)
            .collect();
        let n: f64 = total.iter().sum();
        let hit = hits_of(j)?;
        let segments = segment_codes(col, card);
        for (label, codes) in segments {
            let h: f64 = codes.iter().map(|&c| hit[c]).sum();
            let t: f64 = codes.iter().map(|&c| total[c]).sum();
            // Excess of this pair's surprising rows over an even spread across the batch; a
            // region must hold a third of them, half again its share of rows, and be four
            // binomial standard deviations past an even spread (random flips have no region).
            let m = m_hits;
            let even = m * t / n;
            let excess = h - even;
            let z = excess / (even * (1.0 - t / n)).max(1e-9).sqrt();
            if h >= m / 3.0
                && h >= 1.5 * even
                && z >= 4.0
                && best.as_ref().is_none_or(|b| excess > b.0)
            {
                best = Some((excess, format!("`{name}` {label}")));
            }
        }
    }
    best.map(|b| b.1)
}
