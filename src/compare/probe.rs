//! Counterfactual trigger probes: `compare-trigger-response`.
//!
//! A backdoored retrain answers normal rows normally; it misbehaves only on rows that carry
//! its trigger, which fixed evaluation rows may hold a handful of. So the models are asked:
//! for a candidate trigger (a feature and a value), evaluation rows that hold another value
//! get the feature set to it, and both models score the changed rows. For each class, on
//! the probe rows that neither model predicted as that class before the change, the attack
//! success rate is the share the change moves to the class (Gu, Dolan-Gavitt & Garg 2017,
//! "BadNets"; the counterfactual framing of Wang et al. 2019, "Neural Cleanse"). A value
//! that legitimately decides the class moves both models alike; a trigger the retrain
//! learned moves the retrained model alone. The test is McNemar's on the paired outcomes
//! of the same rows (mid-p, one-sided toward the retrained model; Fagerland, Lydersen &
//! Laake 2013), the effect is the rise of the success rate, and all probes form one Holm
//! family.
//!
//! Candidates, in this order, deduplicated:
//! 1. the (feature, value) pairs a `check` report named (`--probes-from`): findings and
//!    waivers of `poison-trigger`, `poison-segment-label-shift`, `poison-point-mass` and
//!    `schema-unseen-category`;
//! 2. every categorical input's common values in the evaluation rows (at least
//!    [`COMMON_SHARE`] of rows, at most [`VALUES_PER_FEATURE`] per feature);
//! 3. with `--baseline`, the values the pinned baseline keeps for each categorical input
//!    that the trusted data held rarely (below [`COMMON_SHARE`], rarest first), which the
//!    evaluation rows may not hold at all;
//! 4. every categorical input's rare values in the evaluation rows (below
//!    [`COMMON_SHARE`], at most [`VALUES_PER_FEATURE`] per feature), where a trigger keyed
//!    on a value the attacker chose for its rarity sits.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use rand::SeedableRng;
use rand::seq::index::sample;
use rand_chacha::ChaCha8Rng;
use serde_json::Value;

use super::endpoint::{Cell, Column, Feature, Features};
use super::live::Live;
use super::{Table, candidate, effect, pct};
use crate::baseline::CategoricalProfile;
use crate::detect::Candidate;
use crate::error::{Error, Result};
use crate::finding::Subject;
use crate::policy::Policy;
use crate::stats::paired::mcnemar_mid_p_greater;

/// Share of evaluation rows at which a value counts as common.
pub const COMMON_SHARE: f64 = 0.01;

/// Common (and rare) values probed per categorical feature at most.
pub const VALUES_PER_FEATURE: usize = 20;

/// Probe rows below which a class is not tested for a candidate.
pub const MIN_PROBE_ROWS: usize = 20;

/// Report codes whose (column, value) are candidate triggers.
pub const REPORT_CODES: [&str; 4] = [
    "poison-trigger",
    "poison-segment-label-shift",
    "poison-point-mass",
    "schema-unseen-category",
];

/// A candidate trigger.
#[derive(Debug, Clone)]
pub struct Probe {
    /// Feature index.
    pub feature: usize,
    /// The value the feature is set to.
    pub value: Cell,
    /// Where the candidate came from.
    pub source: &'static str,
}

/// Candidates from `check` reports. Values that no input can take are noted, not probed.
///
/// # Errors
/// An unreadable report or one that is not a poisongate report.
pub fn from_reports(
    paths: &[PathBuf],
    features: &Features,
    notes: &mut Vec<String>,
) -> Result<Vec<Probe>> {
    let mut out = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::input(path, crate::error::io_cause(&e)))?;
        let doc: Value = serde_json::from_str(&text)
            .map_err(|e| Error::input(path, format!("--probes-from: not JSON ({e})")))?;
        if doc.get("format").and_then(Value::as_str) != Some("poisongate.report/1") {
            return Err(Error::input(
                path,
                "--probes-from: not a poisongate.report/1 report (write one with `check --json`)",
            ));
        }
        for list in ["findings", "waived"] {
            for f in doc
                .get(list)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let code = f.get("code").and_then(Value::as_str).unwrap_or_default();
                if !REPORT_CODES.contains(&code) {
                    continue;
                }
                let subject = f.get("subject");
                let field = |k: &str| subject.and_then(|s| s.get(k)).and_then(Value::as_str);
                let (Some(column), Some(value)) = (field("column"), field("value")) else {
                    continue;
                };
                let Some(j) = features.index(column) else {
                    notes.push(format!(
                        "{code} on `{column}` = `{value}` ({}): not a model input, not probed",
                        path.display()
                    ));
                    continue;
                };
                match report_value(&features.columns[j], value) {
                    Some(cell) => out.push(Probe {
                        feature: j,
                        value: cell,
                        source: "check report",
                    }),
                    None => notes.push(format!(
                        "{code} on `{column}` = `{value}` ({}): the value does not fit the input's type, not probed",
                        path.display()
                    )),
                }
            }
        }
    }
    Ok(out)
}

/// The one value a report's subject names: a category as segment findings write it
/// (``= `v` ``) or bare, a number, or for a numeric segment (`in (a, b]`) a point inside it
/// (the middle, or the finite edge of an open-ended one).
fn report_value(f: &Feature, text: &str) -> Option<Cell> {
    if let Some(v) = text.strip_prefix("= `").and_then(|t| t.strip_suffix('`')) {
        return f.parse(v);
    }
    let Some((lo, hi)) = text
        .strip_prefix("in (")
        .and_then(|t| t.strip_suffix(']'))
        .and_then(|t| t.split_once(", "))
    else {
        return f.parse(text);
    };
    let (lo, hi) = (
        lo.trim().parse::<f64>().ok()?,
        hi.trim().parse::<f64>().ok()?,
    );
    match f.values {
        Column::F64(_) => {
            let x = match (lo.is_finite(), hi.is_finite()) {
                (true, true) => lo + (hi - lo) / 2.0,
                (false, true) => hi,
                (true, false) => lo.next_up(),
                (false, false) => return None,
            };
            Some(Cell::F64(x))
        }
        Column::I64(_) => {
            // The integers in (lo, hi]: floor(lo) + 1 ..= floor(hi).
            let (first, last) = (lo.floor() + 1.0, hi.floor());
            let x = match (lo.is_finite(), hi.is_finite()) {
                (true, true) if first <= last => first + ((last - first) / 2.0).floor(),
                (false, true) => last,
                (true, false) => first,
                _ => return None,
            };
            (x.abs() < 9.0e15).then_some(Cell::I64(x as i64))
        }
        _ => None,
    }
}

/// Common and rare values of every categorical input.
#[must_use]
pub fn from_values(features: &Features) -> Vec<Probe> {
    let mut out = Vec::new();
    for (j, f) in features.columns.iter().enumerate() {
        if !f.is_categorical() {
            continue;
        }
        let mut counts: HashMap<String, (usize, usize)> = HashMap::new();
        for r in 0..features.rows {
            counts.entry(f.cell(r).text()).or_insert((0, r)).0 += 1;
        }
        // Most common first, ties by value.
        let mut ranked: Vec<(String, usize, usize)> =
            counts.into_iter().map(|(v, (c, r))| (v, c, r)).collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let floor = (COMMON_SHARE * features.rows as f64).ceil() as usize;
        let (common, rare): (Vec<_>, Vec<_>) = ranked.into_iter().partition(|x| x.1 >= floor);
        for (_, _, row) in common.iter().take(VALUES_PER_FEATURE) {
            out.push(Probe {
                feature: j,
                value: f.cell(*row),
                source: "common value",
            });
        }
        for (_, _, row) in rare.iter().take(VALUES_PER_FEATURE) {
            out.push(Probe {
                feature: j,
                value: f.cell(*row),
                source: "rare value",
            });
        }
    }
    out
}

/// The values a pinned baseline keeps for each categorical input that the trusted data held
/// rarely (below [`COMMON_SHARE`] of its rows, rarest first, at most
/// [`VALUES_PER_FEATURE`] per feature): an attacker who keys a trigger on a value picks one
/// the model has little else to learn from, and the evaluation rows may not hold it at all.
#[must_use]
pub fn from_baseline(baseline: &crate::baseline::Baseline, features: &Features) -> Vec<Probe> {
    let mut out = Vec::new();
    for (j, f) in features.columns.iter().enumerate() {
        if !f.is_categorical() {
            continue;
        }
        let Some((_, cat)) = pinned(Some(baseline), &f.name) else {
            continue;
        };
        let rows = baseline.rows.max(1) as f64;
        let counted: HashMap<&str, u64> = cat
            .top
            .iter()
            .map(|t| (t.value.as_str(), t.count))
            .collect();
        // Domain values outside the top list were rarer than every listed one.
        let mut values: Vec<(&str, u64)> = cat
            .domain
            .iter()
            .map(|v| (v.as_str(), counted.get(v.as_str()).copied().unwrap_or(0)))
            .chain(cat.top.iter().map(|t| (t.value.as_str(), t.count)))
            .filter(|(_, c)| (*c as f64) < COMMON_SHARE * rows)
            .collect();
        values.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(b.0)));
        values.dedup_by(|a, b| a.0 == b.0);
        for (v, _) in values.into_iter().take(VALUES_PER_FEATURE) {
            if let Some(cell) = f.parse(v) {
                out.push(Probe {
                    feature: j,
                    value: cell,
                    source: "baseline rare value",
                });
            }
        }
    }
    out
}

/// Drops repeated (feature, value) pairs, keeping the first.
#[must_use]
pub fn dedup(probes: Vec<Probe>) -> Vec<Probe> {
    let mut seen = std::collections::HashSet::new();
    probes
        .into_iter()
        .filter(|p| seen.insert((p.feature, p.value.text())))
        .collect()
}

/// What the probes cost and found, for the report's notes.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Candidates probed.
    pub probed: usize,
    /// Rows sent to each model over all probes.
    pub rows_sent: usize,
}

/// How many rows the models had to learn `value` of feature `name` from, as far as the gate
/// can tell, and where the number comes from: the pinned baseline's count when it keeps one
/// (its top values, or 0 for a value outside a complete domain), else the evaluation rows
/// holding it (`held` of `rows`), scaled to the baseline's size when there is one and never
/// above the rarest count the baseline keeps.
fn support(
    pinned: Option<(u64, &CategoricalProfile)>,
    value: &str,
    held: usize,
    rows: usize,
) -> (f64, &'static str) {
    let Some((base_rows, cat)) = pinned else {
        return (held as f64, "evaluation rows");
    };
    if let Some(t) = cat.top.iter().find(|t| t.value == value) {
        return (t.count as f64, "baseline rows");
    }
    if cat.domain_complete && !cat.domain.iter().any(|v| v == value) {
        return (0.0, "baseline rows");
    }
    let scaled = held as f64 / rows.max(1) as f64 * base_rows as f64;
    let rarest = cat.top.iter().map(|t| t.count).min().unwrap_or(u64::MAX) as f64;
    (scaled.min(rarest), "evaluation rows scaled to the baseline")
}

/// The baseline's profile of a categorical input, with the baseline's row count.
fn pinned<'a>(
    baseline: Option<&'a crate::baseline::Baseline>,
    name: &str,
) -> Option<(u64, &'a CategoricalProfile)> {
    let b = baseline?;
    b.columns
        .iter()
        .find(|c| c.name == name)
        .and_then(|c| c.categorical.as_ref())
        .map(|cat| (b.rows, cat))
}

/// Runs the probes: `rows` evaluation rows per candidate (seeded), both models.
///
/// # Errors
/// Any endpoint failure.
#[allow(clippy::too_many_arguments)] // one call site; the pieces are independent
pub fn run(
    live: &Live,
    table: &Table,
    probes: &[Probe],
    rows: usize,
    seed: u64,
    policy: &Policy,
    baseline: Option<&crate::baseline::Baseline>,
    out: &mut Vec<Candidate>,
) -> Result<Summary> {
    let features: &Arc<Features> = &live.features;
    let k = table.classes.len();
    let index: HashMap<&str, u16> = table
        .classes
        .iter()
        .enumerate()
        .map(|(i, c)| (c.as_str(), i as u16))
        .collect();
    let class_of = |l: &str| index.get(l).copied().unwrap_or(u16::MAX);
    let rule = &policy.checks.compare_trigger_response;
    let mut summary = Summary::default();
    for probe in probes {
        let f = &features.columns[probe.feature];
        let value_text = probe.value.text();
        let other: Vec<usize> = (0..features.rows)
            .filter(|&r| !f.holds(r, &probe.value))
            .collect();
        if other.len() < MIN_PROBE_ROWS {
            continue;
        }
        // A numeric input's answer at one point is learned from the rows around it, not
        // from the rows holding that exact number: its thresholds stay flat.
        let (value_rows, value_rows_from) = if f.is_categorical() {
            support(
                pinned(baseline, &f.name),
                &value_text,
                features.rows - other.len(),
                features.rows,
            )
        } else {
            (f64::INFINITY, "a numeric input")
        };
        let (warn, deny) = rule.thresholds(value_rows);
        let raised = if deny > rule.deny {
            format!(
                "; thresholds raised for a value {value_rows:.0} {value_rows_from} hold (deny {deny:.2} rather than {:.2})",
                rule.deny
            )
        } else {
            String::new()
        };
        // One seeded random order of the rows holding another value; each class takes the
        // first `rows` of them that neither model predicted as that class, so a class most
        // rows are predicted as (the usual target) still gets its probe rows, and the classes
        // share rows wherever they can.
        let mut rng = ChaCha8Rng::seed_from_u64(
            seed ^ xxhash_rust::xxh3::xxh3_64(format!("{}\u{0}{value_text}", f.name).as_bytes()),
        );
        let order: Vec<usize> = sample(&mut rng, other.len(), other.len())
            .into_iter()
            .map(|i| other[i])
            .collect();
        let per_class: Vec<Vec<usize>> = (0..k as u16)
            .map(|c| {
                let mut chosen: Vec<usize> = order
                    .iter()
                    .copied()
                    .filter(|&r| table.before[r] != c && table.after[r] != c)
                    .take(rows)
                    .collect();
                chosen.sort_unstable();
                chosen
            })
            .collect();
        let mut picked: Vec<usize> = per_class.iter().flatten().copied().collect();
        picked.sort_unstable();
        picked.dedup();
        let set = Some((probe.feature, probe.value.clone()));
        let b = live
            .client
            .predict(&live.before, features, &picked, set.clone())?;
        let a = live.client.predict(&live.after, features, &picked, set)?;
        summary.probed += 1;
        summary.rows_sent += picked.len();
        let pb: Vec<u16> = b.labels.iter().map(|l| class_of(l)).collect();
        let pa: Vec<u16> = a.labels.iter().map(|l| class_of(l)).collect();
        for (c, chosen) in (0..k as u16).zip(&per_class) {
            let n = chosen.len() as u64;
            let (mut xb, mut xa, mut only_after, mut only_before) = (0u64, 0u64, 0u64, 0u64);
            for r in chosen {
                let i = picked.binary_search(r).unwrap_or_default();
                let (hb, ha) = (pb[i] == c, pa[i] == c);
                xb += u64::from(hb);
                xa += u64::from(ha);
                only_after += u64::from(ha && !hb);
                only_before += u64::from(hb && !ha);
            }
            if (n as usize) < MIN_PROBE_ROWS || only_after + only_before == 0 {
                continue;
            }
            let nf = n as f64;
            let (asr_b, asr_a) = (xb as f64 / nf, xa as f64 / nf);
            let class = &table.classes[usize::from(c)];
            out.push(candidate(
                "compare-trigger-response",
                Subject {
                    column: Some(f.name.clone()),
                    value: Some(value_text.clone()),
                    label: Some(class.clone()),
                },
                Some(mcnemar_mid_p_greater(only_after, only_before)),
                vec![effect("success-rate-increase", asr_a - asr_b, warn, deny)],
                n,
                format!(
                    "Setting `{}` to `{value_text}` ({}) on {n} rows that neither model predicted as `{class}` moves {} of them to `{class}` under the retrained model and {} under the serving model{raised}",
                    f.name,
                    probe.source,
                    pct(asr_a),
                    pct(asr_b)
                ),
                BTreeMap::from([
                    ("probe-rows".to_owned(), nf),
                    ("success-rate-before".to_owned(), asr_b),
                    ("success-rate-after".to_owned(), asr_a),
                    ("moved-by-after-only".to_owned(), only_after as f64),
                    ("moved-by-before-only".to_owned(), only_before as f64),
                ])
                .into_iter()
                .chain(value_rows.is_finite().then(|| ("value-rows".to_owned(), value_rows)))
                .collect(),
            ));
        }
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feature(values: Column) -> Feature {
        Feature {
            name: "x".into(),
            values,
        }
    }

    fn profile(complete: bool) -> CategoricalProfile {
        use crate::baseline::CategoryCount;
        CategoricalProfile {
            distinct: 3,
            singletons: 0,
            domain_complete: complete,
            domain: vec!["a".into(), "b".into(), "c".into()],
            domain_rows: 1000,
            top: vec![
                CategoryCount {
                    value: "a".into(),
                    count: 900,
                },
                CategoryCount {
                    value: "b".into(),
                    count: 90,
                },
            ],
            other: 10,
        }
    }

    #[test]
    fn support_prefers_the_baselines_count() {
        // No baseline: the evaluation rows holding the value.
        assert_eq!(support(None, "a", 7, 100), (7.0, "evaluation rows"));
        let p = profile(true);
        // A counted value: the baseline's count, whatever the evaluation rows say.
        assert_eq!(support(Some((1000, &p)), "b", 50, 100).0, 90.0);
        // Outside a complete domain: the trusted data never held it.
        assert_eq!(support(Some((1000, &p)), "z", 5, 100).0, 0.0);
        // In the domain but uncounted: the evaluation share scaled to the baseline's rows,
        // never above the rarest counted value.
        assert_eq!(support(Some((1000, &p)), "c", 1, 100).0, 10.0);
        assert_eq!(support(Some((1000, &p)), "c", 50, 100).0, 90.0);
        // An incomplete domain does not say a value was never seen.
        assert_eq!(support(Some((1000, &profile(false))), "z", 2, 100).0, 20.0);
    }

    #[test]
    fn rare_values_get_higher_thresholds_up_to_the_cap() {
        let rule = crate::policy::Policy::default()
            .checks
            .compare_trigger_response;
        let (w, d) = rule.thresholds(10_000.0);
        assert!((w - 0.13).abs() < 1e-12 && (d - 0.28).abs() < 1e-12);
        let (w, d) = rule.thresholds(100.0);
        assert!((w - 0.4).abs() < 1e-12 && (d - 0.55).abs() < 1e-12);
        // 0.10 + 3/5 = 0.70 and 0.25 + 3/5 = 0.85, capped.
        let (w, d) = rule.thresholds(25.0);
        assert!((w - 0.7).abs() < 1e-12 && d == 0.75);
        assert_eq!(rule.thresholds(4.0), (0.75, 0.75));
        assert_eq!(rule.thresholds(0.0), (0.75, 0.75));
        let flat = crate::policy::ProbeRule {
            rare_allowance: 0.0,
            ..rule
        };
        assert_eq!(flat.thresholds(0.0), (0.1, 0.25));
    }

    #[test]
    fn report_values_become_one_probe_value() {
        let text = feature(Column::Text(vec![]));
        assert_eq!(
            report_value(&text, "= `occ_1`"),
            Some(Cell::Text("occ_1".into()))
        );
        assert_eq!(
            report_value(&text, "kiosk"),
            Some(Cell::Text("kiosk".into()))
        );
        let float = feature(Column::F64(vec![]));
        assert_eq!(report_value(&float, "in (2, 4]"), Some(Cell::F64(3.0)));
        assert_eq!(report_value(&float, "in (-inf, 4]"), Some(Cell::F64(4.0)));
        assert!(
            matches!(report_value(&float, "in (2, inf]"), Some(Cell::F64(x)) if x > 2.0 && x < 2.000001)
        );
        assert_eq!(report_value(&float, "77.5"), Some(Cell::F64(77.5)));
        let int = feature(Column::I64(vec![]));
        assert_eq!(report_value(&int, "in (20, 30]"), Some(Cell::I64(25)));
        assert_eq!(report_value(&int, "in (20.5, 21]"), Some(Cell::I64(21)));
        assert_eq!(report_value(&int, "in (20.2, 20.7]"), None);
        assert_eq!(report_value(&int, "in (70, inf]"), Some(Cell::I64(71)));
        assert_eq!(report_value(&int, "in (-inf, 18]"), Some(Cell::I64(18)));
    }
}
