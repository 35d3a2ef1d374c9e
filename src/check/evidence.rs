//! `evidence-insufficient`: the attacks the policy names (outliers at 2 % of the rows,
//! duplicates at 2 %, ...) that this batch's tests could not have shown at its size.
//!
//! A pass means nothing was found. On a small batch, the tests may not have been able to find
//! the attacks a reviewer cares about; this finding says which, with the detectable effect of
//! the test that would see each (see [`crate::stats::power`]) and the batch size from which it
//! would have. Warn by default, deny under the strict profile.

use crate::baseline::Baseline;
use crate::detect::{Candidate, CountNull};
use crate::finding::{Severity, Subject, num};
use crate::policy::{Level, Policy};
use crate::stats::power::{self, POWER};

/// The code.
pub const INSUFFICIENT: &str = "evidence-insufficient";

/// Largest batch size the search for a sufficient size looks at.
const MAX_ROWS: u64 = 1 << 30;
/// Most sizes after a sufficient size that must hold too (see `sufficient_rows`).
const WINDOW: u64 = 256;

/// A count test with the level it faces alone and its deny threshold.
#[derive(Debug, Clone, Copy)]
pub struct CountTest {
    /// Its code.
    pub code: &'static str,
    /// Its null.
    pub null: CountNull,
    /// Its deny threshold on the excess share.
    pub deny: f64,
    /// The level it faces when it carries the batch's only effect.
    pub level: f64,
}

impl CountTest {
    /// The test's null with its rows scaled from `rows` to `at` (the batch's rows).
    fn null_at(&self, rows: u64, at: u64) -> CountNull {
        let trials = if rows == 0 {
            at
        } else {
            ((self.null.trials as f64) * at as f64 / rows as f64).round() as u64
        };
        CountNull {
            trials,
            ..self.null
        }
    }

    /// The detectable excess share at `at` rows, `None` when nothing would be.
    fn detectable_at(&self, rows: u64, at: u64) -> Option<f64> {
        let null = self.null_at(rows, at);
        power::count(null.trials, null.base, self.deny, self.level, POWER, |k| {
            null.tail(k)
        })
        .map(|p| p.excess_share)
    }

    /// Whether `share` is detected at `at` rows with the stated power.
    fn reaches_at(&self, rows: u64, at: u64, share: f64) -> bool {
        let null = self.null_at(rows, at);
        power::count_reaches(
            null.trials,
            null.base,
            self.deny,
            self.level,
            POWER,
            share,
            |k| null.tail(k),
        )
    }

    /// The smallest batch size, from `rows` up, from which the detectable share stays at most
    /// `share`; `None` past [`MAX_ROWS`]. The detectable share saws up and down with the
    /// size (the critical count is a whole number of rows, and the deny threshold a share),
    /// so the first size found by doubling and bisection is walked forward until every size
    /// of a window after it holds too (the window spans a few periods of the saw).
    fn sufficient_rows(&self, rows: u64, share: f64) -> Option<u64> {
        // However large the batch, the test cannot deny below its limit: the share past which
        // the null's count is rarer than the level is the Beta(alpha, beta) quantile of the
        // predictive rate (the batch's share converges on the rate, which stays uncertain by
        // what `m` trusted rows showed). An attack under that limit is out of reach at any size.
        let limit = statrs::distribution::Beta::new(self.null.alpha, self.null.beta).map_or(
            f64::INFINITY,
            |b| {
                use statrs::distribution::ContinuousCDF;
                b.inverse_cdf(1.0 - self.level)
            },
        );
        if (limit - self.null.base).max(self.deny) > share {
            return None;
        }
        let ok = |at: u64| self.reaches_at(rows, at, share);
        let mut hi = rows.max(1);
        while !ok(hi) {
            if hi >= MAX_ROWS {
                return None;
            }
            hi = hi.saturating_mul(2);
        }
        let mut lo = hi / 2;
        while lo + 1 < hi {
            let mid = lo + (hi - lo) / 2;
            if ok(mid) {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        let mut from = hi;
        // Bounds the walk's cost (each probe is a few dozen tail evaluations); past it the
        // size found so far is given, as the message's "about" says.
        let mut budget = 8 * WINDOW;
        loop {
            let window = from.clamp(64, WINDOW);
            let bad = (from..from.saturating_add(window)).find(|&at| {
                budget = budget.saturating_sub(1);
                budget > 0 && !ok(at)
            });
            match bad {
                Some(at) if at + 1 < MAX_ROWS => from = at + 1,
                Some(_) => return None,
                None => return Some(from),
            }
        }
    }
}

/// One attack the policy names: its name, its share of the batch, the codes whose count
/// tests would see it, and whether the baseline pins the detector that runs them.
struct Attack {
    name: &'static str,
    share: f64,
    codes: &'static [&'static str],
    pinned: bool,
}

fn attacks(policy: &Policy, baseline: &Baseline) -> [Attack; 2] {
    let rule = &policy.checks.evidence_insufficient;
    let poison = baseline.poison.as_ref();
    [
        Attack {
            name: "outliers",
            share: rule.outliers,
            codes: &["poison-anomalous-rows"],
            pinned: poison.is_some_and(|p| p.anomaly.is_some()),
        },
        Attack {
            name: "duplicates",
            share: rule.duplicates,
            codes: &["poison-duplicate-flood"],
            pinned: poison.is_some(),
        },
    ]
}

/// The `evidence-insufficient` candidate of a batch of `rows` rows, given its count tests;
/// `None` when every named attack that a test states an effect for was within reach.
#[must_use]
pub fn insufficient(
    policy: &Policy,
    baseline: &Baseline,
    rows: u64,
    tests: &[CountTest],
) -> Option<Candidate> {
    let severity = if policy.gate.profile.is_strict() {
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
        // The most sensitive test that would see the attack decides whether it was in reach.
        let best = tests
            .iter()
            .filter(|t| attack.codes.contains(&t.code))
            .map(|t| (t, t.detectable_at(rows, rows)))
            .min_by(|a, b| {
                let key = |d: Option<f64>| d.unwrap_or(f64::INFINITY);
                key(a.1).total_cmp(&key(b.1))
            });
        let Some((test, detectable)) = best else {
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
                    attack.name,
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
        let needed = tests
            .iter()
            .filter(|t| attack.codes.contains(&t.code))
            .filter_map(|t| t.sufficient_rows(rows, attack.share))
            .min();
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
                format!(
                    "denies from {}% at {:.0}% power",
                    num(100.0 * d),
                    100.0 * POWER
                )
            },
        );
        let need = needed.map_or_else(
            || "no batch size would suffice".to_owned(),
            |n| format!("from about {n} rows it would"),
        );
        missed.push(format!(
            "{} at {}% of rows ({} {seen}; {need})",
            attack.name,
            num(100.0 * attack.share),
            test.code
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
            "at {rows} row{} the tests could not have shown {} (attacks the policy names under `evidence-insufficient`): a pass here is limited evidence; accumulate small batches with `check --ledger`",
            if rows == 1 { "" } else { "s" },
            missed.join("; ")
        ),
    );
    c.n = rows;
    c.evidence = evidence;
    Some(c)
}
