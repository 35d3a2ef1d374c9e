//! poisongate: a fail-closed gate that stops poisoned or drifted data before model training.
//!
//! The library holds every decision; the `poisongate` binary only parses arguments, calls it
//! and maps the outcome to an exit code (0 pass, 1 blocked, 2 could not evaluate).
//!
//! - [`source`] reads inputs and records their digests;
//! - [`baseline`] pins a profile of trusted data (`profile`) and loads it back; [`pinned`]
//!   holds the column and label profiles it carries, which the checks read;
//! - [`summary`] summarises a batch chunk by chunk into mergeable counts;
//! - [`check`] turns a summary into calibrated findings;
//! - [`rows`] and [`poison`] encode whole rows and run the poisoning detectors on them;
//! - [`compare`] gates a retrained model against the serving one on the same rows;
//! - [`integrity`] checks `sha256sum` files and ECDSA P-256 blob signatures;
//! - [`modelsign`] signs and verifies model directories (OpenSSF model signing), and
//!   [`attest`] signs verdicts as SLSA verification summaries that training steps check;
//! - [`scan`] judges model artifacts by what loading them would import (`verify --scan`);
//! - [`detect`] holds what every check shares: the accumulator trait, the candidate finding
//!   and what the registry says of a code; [`codes`] lists every code, the row-level
//!   detectors' from their own files;
//! - [`policy`], [`finding`] and [`report`] describe what was decided and why.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod attest;
pub mod baseline;
pub mod check;
pub mod codes;
pub mod compare;
pub mod detect;
pub mod digest;
pub mod error;
#[doc(hidden)]
pub mod fault;
pub mod finding;
#[doc(hidden)]
pub mod fuzzing;
pub mod integrity;
pub mod ledger;
pub mod limits;
pub mod lineage;
pub mod modelsign;
pub mod output;
pub mod pinned;
pub mod poison;
pub mod policy;
pub mod progress;
pub mod report;
pub mod rows;
pub mod scan;
pub mod schemas;
mod sections;
pub mod shard;
pub mod source;
pub mod stats;
pub mod summary;

pub use error::{Error, Result};
