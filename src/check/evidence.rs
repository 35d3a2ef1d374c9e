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
use crate::poison::LR_ROWS;
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
    /// Its detectable excess share at the batch's size (the report's `detectable`), `None`
    /// when nothing would be.
    pub detectable: Option<f64>,
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
    /// `share` (see [`first_sufficient`]).
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
        first_sufficient(rows, 8 * WINDOW, |at| self.reaches_at(rows, at, share))
    }
}

/// The trigger test with the level it faces and its deny threshold.
#[derive(Debug, Clone, Copy)]
pub struct TriggerTest {
    /// Trusted rows, the trusted share of the trigger's class (0 when the model's chances are
    /// tested beside it: then only the conditions on the value's count bound the rows a
    /// trigger needs) and whether its label p-value is doubled
    /// ([`crate::poison::trigger::critical_rows`]).
    pub null: (u64, f64, bool),
    /// Its deny threshold on the share of the batch.
    pub deny: f64,
    /// The level it faces alone.
    pub level: f64,
}

impl TriggerTest {
    /// The fewest trigger rows denied at `at` rows.
    fn critical_at(&self, at: u64) -> Option<u64> {
        let (trusted, prior, doubled) = self.null;
        crate::poison::trigger::critical_rows(at, trusted, prior, doubled, self.deny, self.level)
    }

    /// The detectable share at `at` rows.
    fn detectable_at(&self, at: u64) -> Option<f64> {
        self.critical_at(at).map(|k| k as f64 / at.max(1) as f64)
    }

    /// The smallest batch size, from `rows` up, from which a trigger on `share` of the rows
    /// is denied (see [`first_sufficient`]); `None` when its share is under the deny
    /// threshold or the pre-screen's, which no size overcomes.
    fn sufficient_rows(&self, rows: u64, share: f64) -> Option<u64> {
        if share < self.deny || share < crate::poison::point_mass::MIN_SHARE {
            return None;
        }
        // However large the batch, a new value's share is judged against the never-seen mass
        // `m` trusted rows leave uncertain: its over-representation p-value cannot fall below
        // the level under the Beta(1/2, m + 1/2) quantile of that mass (as for the count
        // tests), and a trigger on a smaller share is out of reach at any size.
        let (trusted, ..) = self.null;
        let limit =
            statrs::distribution::Beta::new(0.5, trusted as f64 + 0.5).map_or(f64::INFINITY, |b| {
                use statrs::distribution::ContinuousCDF;
                b.inverse_cdf(1.0 - self.level)
            });
        if limit >= share {
            return None;
        }
        // The trigger's count saws little (its conditions are a count and shares of one
        // value), and each probe is a search over counts: a short walk.
        first_sufficient(rows, WINDOW / 4, |at| {
            self.critical_at(at)
                .is_some_and(|k| k as f64 <= share * at as f64)
        })
    }
}

/// The label-flip test with the level it faces and its deny threshold.
#[derive(Debug, Clone)]
pub struct FlipTest {
    /// The test's null.
    pub null: FlipCurve,
    /// Its deny threshold on the estimated flipped share.
    pub deny: f64,
    /// The level it faces alone.
    pub level: f64,
    /// Its detectable flipped share at the batch's size (the report's `detectable`).
    pub detectable: Option<f64>,
}

/// The null of the label-flip test, in the form its power is computed from.
#[derive(Debug, Clone)]
pub enum FlipCurve {
    /// The likelihood-ratio sample's rows and the test's null.
    Rows(std::sync::Arc<crate::poison::flip_power::FlipNull>),
    /// The class-stratified tests against the pinned per-class rates (no sample).
    Classes(std::sync::Arc<crate::poison::flip_power::ClassFlipNull>),
}

impl FlipTest {
    /// The smallest batch size, from `rows` up, from which random flips of `share` of the
    /// labels are denied with the stated power: the test runs on the batch's judged rows, up
    /// to the likelihood-ratio sample, so past the size that fills the sample no size helps.
    fn sufficient_rows(&self, rows: u64, share: f64) -> Option<u64> {
        let null = match &self.null {
            FlipCurve::Rows(null) => null,
            FlipCurve::Classes(null) => {
                // Every judged row counts, with the batch's share of judged rows.
                let power_at = null.power_curve(share, self.deny, self.level);
                let per_row = null.judged as f64 / rows.max(1) as f64;
                return first_sufficient(rows, WINDOW / 4, |at| {
                    power_at((at as f64 * per_row).round() as u64) >= POWER
                });
            }
        };
        let power_at = null.power_curve(share, self.deny, self.level);
        let per_row = null.tested as f64 / rows.max(1) as f64;
        let tested = |at: u64| ((at as f64 * per_row).round() as u64).min(LR_ROWS as u64);
        let full = (LR_ROWS as f64 / per_row.max(f64::MIN_POSITIVE)).ceil() as u64;
        if power_at(LR_ROWS as u64) < POWER {
            return None;
        }
        first_sufficient(rows, WINDOW / 4, |at| {
            at >= full || power_at(tested(at)) >= POWER
        })
    }
}

/// The smallest batch size, from `rows` up, from which `ok` holds; `None` past [`MAX_ROWS`].
/// `ok` saws up and down with the size (a critical count is a whole number of rows, a
/// threshold a share), so the first size found by doubling and bisection is walked forward
/// until every size of a window after it holds too (the window spans a few periods of the
/// saw).
fn first_sufficient(rows: u64, walk: u64, ok: impl Fn(u64) -> bool) -> Option<u64> {
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
    let mut budget = walk;
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

/// The `evidence-insufficient` candidate of a batch of `rows` rows, given its count tests;
/// `None` when every named attack that a test states an effect for was within reach.
#[must_use]
pub fn insufficient(
    policy: &Policy,
    baseline: &Baseline,
    rows: u64,
    tests: &[CountTest],
    trigger: Option<&TriggerTest>,
    flip: Option<&FlipTest>,
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
        // The tests that would see the attack: code, detectable share at this size, and the
        // search for the size from which each would see it (run only for a missed attack).
        type Needed<'t> = Box<dyn Fn() -> Option<u64> + 't>;
        let share = attack.share;
        let mut reach: Vec<(&str, Option<f64>, Needed<'_>)> = Vec::new();
        for t in tests.iter().filter(|t| attack.codes.contains(&t.code)) {
            reach.push((
                t.code,
                t.detectable,
                Box::new(move || t.sufficient_rows(rows, share)),
            ));
        }
        if let Some(t) = trigger.filter(|_| attack.codes.contains(&"poison-trigger")) {
            reach.push((
                "poison-trigger",
                t.detectable_at(rows),
                Box::new(move || t.sufficient_rows(rows, share)),
            ));
        }
        if let Some(t) = flip.filter(|_| attack.codes.contains(&"poison-label-inconsistency")) {
            reach.push((
                "poison-label-inconsistency",
                t.detectable,
                Box::new(move || t.sufficient_rows(rows, share)),
            ));
        }
        // The most sensitive test that would see the attack decides whether it was in reach.
        let best = reach.iter().map(|r| (r.0, r.1)).min_by(|a, b| {
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
        let needed = reach.iter().filter_map(|r| (r.2)()).min();
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
                if test == "poison-trigger" {
                    // A bound on the rows, not a power: the trigger's count is the attacker's.
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
