//! `compare-segment`: per segment of a `--segment` column, accuracy lost or predictions
//! shifted toward one class beyond the rest of the rows (Benjamini-Hochberg across segments).

use super::quality::Paired;
use super::*;

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
pub(super) fn segments(
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
                        rule.raised(rule.warn_accuracy, counts.paired.rows),
                        rule.raised(rule.deny_accuracy, counts.paired.rows),
                    )],
                    counts.paired.rows,
                    format!(
                        "Where `{}` is {name} ({} rows), accuracy went from {} to {} while the other rows changed by {} points{}",
                        seg.column,
                        counts.rows,
                        pct(counts.paired.right_before as f64 / m),
                        pct(counts.paired.right_after as f64 / m),
                        num(-100.0 * drop_rest),
                        raised_note(rule, rule.deny_accuracy, counts.paired.rows)
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
                    rule.raised(rule.warn_shift, counts.rows),
                    rule.raised(rule.deny_shift, counts.rows),
                )],
                counts.rows,
                format!(
                    "Where `{}` is {name} ({} rows), predictions of `{}` went from {} to {} ({into} flipped to it, {away} away) while the other rows moved {} points{}",
                    seg.column,
                    counts.rows,
                    table.classes[j],
                    pct(before_share),
                    pct(after_share),
                    num(100.0 * shift_rest),
                    raised_note(rule, rule.deny_shift, counts.rows)
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

/// The message's note on a threshold raised for a small segment, or nothing.
fn raised_note(rule: &crate::policy::SegmentRule, deny: f64, rows: u64) -> String {
    let raised = rule.raised(deny, rows);
    if raised > deny {
        format!(
            "; thresholds raised for a segment of {rows} rows (deny {raised:.2} rather than {deny:.2})"
        )
    } else {
        String::new()
    }
}
