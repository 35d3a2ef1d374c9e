//! What every check shares, below the decision layer: the candidate finding each check
//! hands to the decision rule, and the registry of codes.
//!
//! Nothing here imports the detectors, the baseline, the decision layer or the CLI; they all
//! import this.

pub mod candidate;
pub mod registry;

pub use candidate::{Candidate, Effect};
