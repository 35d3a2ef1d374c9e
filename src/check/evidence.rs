//! `evidence-insufficient`: the attacks the policy names (outliers at 2 % of the rows,
//! duplicates at 2 %, ...) that this batch's tests could not have shown at its size.
//!
//! A pass means nothing was found. On a small batch, the tests may not have been able to find
//! the attacks a reviewer cares about; this finding says which, with the detectable effect of
//! the test that would see each (see [`crate::stats::power`]) and the batch size from which it
//! would have. Warn by default, deny under the strict profile.

use crate::baseline::Baseline;
use crate::detect::{Candidate, Reach};
use crate::finding::{Severity, Subject, num};
use crate::policy::{Level, Policy};
use crate::stats::power::POWER;

/// The code.
pub const INSUFFICIENT: &str = "evidence-insufficient";

/// One attack the policy names: its name, its share of the batch, the codes whose count
/// tests would see it, and whether the baseline pins the detector that runs them.
struct Attack {
    name: &'static str,
    /// The attack in the finding's words.
    what: &'static str,
    share: f64,
    codes: &'static [&'static str],
    pinned: bool,
}

fn attacks(policy: &Policy, baseline: &Baseline) -> [Attack; 4] {
    let rule = &policy.checks.evidence_insufficient;
    let poison = baseline.poison.as_ref();
    [
        Attack {
            name: "outliers",
            what: "outliers",
            share: rule.outliers,
            codes: &["poison-anomalous-rows"],
            pinned: poison.is_some_and(|p| p.anomaly.is_some()),
        },
        Attack {
            name: "duplicates",
            what: "duplicates",
            share: rule.duplicates,
            codes: &["poison-duplicate-flood"],
            pinned: poison.is_some(),
        },
        Attack {
            // Out of reach when even a trigger whose labels the test finds as unlikely as it can
            // is not denied; without a pinned model, a clean-label trigger on the most common
            // class (the slowest for the class prior to tell from chance).
            name: "trigger",
            what: "a trigger",
            share: rule.trigger,
            codes: &["poison-trigger"],
            pinned: poison.is_some_and(|p| p.classes >= 2 && !p.tables.is_empty()),
        },
        Attack {
            name: "label_flips",
            what: "labels flipped at random",
            share: rule.label_flips,
            codes: &["poison-label-inconsistency"],
            pinned: poison.is_some_and(|p| p.label_model.is_some()),
        },
    ]
}

/// The `evidence-insufficient` candidate of a batch of `rows` rows, given what each test
/// that ran answers (its code and [`Reach`], in the report's order of tests); `None` when
/// every named attack that a test states an effect for was within reach.
#[must_use]
pub fn insufficient(
    policy: &Policy,
    baseline: &Baseline,
    rows: u64,
    tests: &[(&'static str, Box<dyn Reach>)],
) -> Option<Candidate> {
    let severity = if policy.gate.profile.is_strict() || policy.gate.insufficient_denies {
        Severity::Deny
    } else {
        Severity::Warn
    };
    let mut missed = Vec::new();
    let mut evidence = std::collections::BTreeMap::new();
    for attack in attacks(policy, baseline)
        .iter()
        .filter(|a| a.share > 0.0 && a.codes.iter().all(|c| policy.level(c) != Level::Allow))
    {
        // The tests that would see the attack: code, detectable share at this size, whether
        // that share bounds the attacker's rows, and the search for the size from which each
        // would see it (run only for a missed attack).
        type Needed<'t> = Box<dyn Fn() -> Option<u64> + 't>;
        let share = attack.share;
        let mut reach: Vec<(&str, Option<f64>, bool, Needed<'_>)> = Vec::new();
        for (code, t) in tests.iter().filter(|(c, _)| attack.codes.contains(c)) {
            reach.push((
                code,
                t.detectable(rows),
                t.is_bound(),
                Box::new(move || t.sufficient_rows(rows, share)),
            ));
        }
        // The most sensitive test that would see the attack decides whether it was in reach.
        let best = reach.iter().map(|r| (r.0, r.1, r.2)).min_by(|a, b| {
            let key = |d: Option<f64>| d.unwrap_or(f64::INFINITY);
            key(a.1).total_cmp(&key(b.1))
        });
        let Some((test, detectable, bound)) = best else {
            // No test of it ran: out of reach when the batch was too small for the detector
            // the baseline pins (otherwise the report says why it did not run).
            if attack.pinned && rows < crate::poison::MIN_ROWS {
                evidence.insert(format!("{}_share", attack.name), attack.share);
                evidence.insert(
                    format!("{}_rows_needed", attack.name),
                    crate::poison::MIN_ROWS as f64,
                );
                missed.push(format!(
                    "{} at {}% of rows ({} tests no batch under {} rows)",
                    attack.what,
                    num(100.0 * attack.share),
                    attack.codes.join(", "),
                    crate::poison::MIN_ROWS
                ));
            }
            continue;
        };
        if detectable.is_some_and(|d| d <= attack.share) {
            continue;
        }
        let needed = reach.iter().filter_map(|r| (r.3)()).min();
        evidence.insert(format!("{}_share", attack.name), attack.share);
        if let Some(d) = detectable {
            evidence.insert(format!("{}_detectable", attack.name), d);
        }
        if let Some(n) = needed {
            evidence.insert(format!("{}_rows_needed", attack.name), n as f64);
        }
        let seen = detectable.map_or_else(
            || "denies nothing at this size".to_owned(),
            |d| {
                if bound {
                    // A bound on the rows, not a power: a trigger's count is the attacker's.
                    format!(
                        "needs at least {}% of rows to deny a trigger",
                        num(100.0 * d)
                    )
                } else {
                    format!(
                        "denies from {}% at {:.0}% power",
                        num(100.0 * d),
                        100.0 * POWER
                    )
                }
            },
        );
        let need = needed.map_or_else(
            || "no batch size would suffice".to_owned(),
            |n| format!("from about {n} rows it would"),
        );
        missed.push(format!(
            "{} at {}% of rows ({} {seen}; {need})",
            attack.what,
            num(100.0 * attack.share),
            test
        ));
    }
    if missed.is_empty() {
        return None;
    }
    let mut c = Candidate::structural(
        INSUFFICIENT,
        Subject::default(),
        severity,
        format!(
            "at {rows} row{} the tests could not have shown {} (attacks the policy names under `evidence-insufficient`): {}",
            if rows == 1 { "" } else { "s" },
            missed.join("; "),
            if policy.gate.insufficient_denies {
                "in a re-check after a quarantine this blocks, since the remaining rows cannot be shown clean at this size (a decoy can fill the quarantine while the attack stays); re-check a larger batch or accumulate with `check --ledger`"
            } else {
                "a pass here is limited evidence; accumulate small batches with `check --ledger`"
            }
        ),
    );
    c.n = rows;
    c.evidence = evidence;
    Some(c)
}
