//! What every check shares, below the decision layer: the accumulator trait, the candidate
//! finding each check hands to the decision rule with the null of its power (a detector's own
//! null is a [`PowerModel`] in its file), what the registry says of a code and the policy
//! sections a detector reads ([`rules`]).
//!
//! Nothing here imports the detectors, the baseline, the decision layer or the CLI; they all
//! import this.

pub mod candidate;
pub mod detectable;
pub mod reach;
pub mod registry;
pub mod rules;
pub mod top;

pub use candidate::{Candidate, CountNull, Effect, PowerNull};
pub use detectable::{Detectable, PowerModel};
pub use reach::{CountReach, Reach};
pub use top::{TOP_ROWS, TopRows};

/// A check's state as a mergeable accumulator over blocks of rows, after DataFusion's
/// `Accumulator`, Beam's `CombineFn` (as TFDV's statistics generators use it) and Deequ's
/// analyzer states: a batch is folded block by block, states over disjoint rows merge
/// exactly, and the decision is taken once from the merged state. Whatever the split of the
/// batch into blocks, windows, units or shards, and whatever the merge tree, the merged state
/// (and so the report) is the same.
///
/// `P` is what the check reads of the pinned baseline, `B` one block of rows.
pub trait Accumulator<P: ?Sized, B: ?Sized>: Sized + Send {
    /// A state over no rows, or `None` when the check cannot run on what was pinned.
    fn new(pinned: &P) -> Option<Self>;

    /// Folds one block in.
    fn update(&mut self, pinned: &P, block: &B);

    /// Adds a state over other rows. Exact, commutative and associative.
    ///
    /// # Errors
    /// A state whose shape does not fit `pinned` (a corrupt or foreign part).
    fn merge(&mut self, pinned: &P, other: Self) -> Result<(), String>;

    /// Renumbers the batch rows the state names (a [`TopRows`]): its rows follow `by` earlier
    /// rows. States that name no rows keep the default.
    fn shift_rows(&mut self, _by: u64) {}
}

/// Adds `b` into `a` element by element, after checking that the shapes agree.
///
/// # Errors
/// Tables of different shapes.
pub fn add_tables(a: &mut [Vec<u64>], b: &[Vec<u64>]) -> Result<(), String> {
    if a.len() != b.len() || a.iter().zip(b).any(|(x, y)| x.len() != y.len()) {
        return Err("tables of different shapes".to_owned());
    }
    for (all, part) in a.iter_mut().zip(b) {
        all.iter_mut().zip(part).for_each(|(x, y)| *x += y);
    }
    Ok(())
}

/// Adds `b` into `a` element by element, after checking that the lengths agree.
///
/// # Errors
/// Counts of different lengths.
pub fn add_counts(a: &mut [u64], b: &[u64]) -> Result<(), String> {
    if a.len() != b.len() {
        return Err("counts of different lengths".to_owned());
    }
    a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
    Ok(())
}
