//! Progress on stderr for long work. indicatif hides the bar when stderr is not a terminal, so
//! CI logs and pipes stay clean.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// A bar over `n` input files that appears only if the work lasts more than about a second.
#[must_use]
pub fn files(n: u64) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(n), indicatif::ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{spinner} reading {pos}/{len} {wide_msg}") {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(1000));
    bar
}
