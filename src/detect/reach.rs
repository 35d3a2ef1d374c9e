//! What `evidence-insufficient` asks of a test ([`Reach`]): the share of rows it detects at
//! the batch's size, and the smallest batch size from which an attack on a given share would
//! be in its reach. Count tests answer through [`CountReach`]; a detector with a null of its
//! own answers through [`super::PowerModel::reach`], in its file, so that the decision layer
//! names no detector's type.

use super::CountNull;
use crate::stats::power::{self, POWER};

/// Largest batch size the search for a sufficient size looks at.
pub const MAX_ROWS: u64 = 1 << 30;
/// Most sizes after a sufficient size that must hold too (see [`first_sufficient`]).
pub const WINDOW: u64 = 256;

/// The tests' answers to `evidence-insufficient`, each with its code.
pub type Reaches = Vec<(&'static str, Box<dyn Reach>)>;

/// A test's answer to `evidence-insufficient`.
pub trait Reach: std::fmt::Debug {
    /// The share of the batch's `rows` rows from which the test denies with the stated power
    /// (for a bound, the fewest rows' share that it denies); `None` when it denies nothing at
    /// this size.
    fn detectable(&self, rows: u64) -> Option<f64>;

    /// The smallest batch size, from `rows` up, from which an attack on `share` of the rows
    /// is in reach; `None` when no size is.
    fn sufficient_rows(&self, rows: u64, share: f64) -> Option<u64>;

    /// Whether [`Reach::detectable`] bounds the rows the attacker sets (a count that always
    /// denies) rather than stating a power over drawn rows.
    fn is_bound(&self) -> bool {
        false
    }
}

/// A count test with the level it faces alone and its deny threshold.
#[derive(Debug, Clone, Copy)]
pub struct CountReach {
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

impl CountReach {
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
}

impl Reach for CountReach {
    fn detectable(&self, _rows: u64) -> Option<f64> {
        self.detectable
    }

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

/// The smallest batch size, from `rows` up, from which `ok` holds; `None` past [`MAX_ROWS`].
/// `ok` saws up and down with the size (a critical count is a whole number of rows, a
/// threshold a share), so the first size found by doubling and bisection is walked forward
/// until every size of a window after it holds too (the window spans a few periods of the
/// saw). `walk` bounds the probes of that walk.
pub fn first_sufficient(rows: u64, walk: u64, ok: impl Fn(u64) -> bool) -> Option<u64> {
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
