//! Fault points for the crash tests. With `PAYLEDGER_FAULT=<point>` in its environment, the
//! process aborts (no unwinding, no flushing: what `kill -9` does) the first time it reaches
//! `<point>`, so a test can cut it exactly between two steps, e.g. between a channel call and
//! the append that records its answer. Without the variable, a point costs one comparison.
//!
//! Points: [`AFTER_CHANNEL_CREATE`].

use std::sync::LazyLock;

/// The environment variable naming the point to abort at.
pub const FAULT_ENV: &str = "PAYLEDGER_FAULT";

/// In [`crate::flows::Flows::place_order`]: the channel has opened the order, nothing is
/// recorded yet.
pub const AFTER_CHANNEL_CREATE: &str = "after_channel_create";

/// Aborts the process if `PAYLEDGER_FAULT` names `point`.
pub fn point(point: &'static str) {
    static ARMED: LazyLock<Option<String>> = LazyLock::new(|| std::env::var(FAULT_ENV).ok());
    if ARMED.as_deref() == Some(point) {
        eprintln!("{FAULT_ENV}={point}: aborting here");
        std::process::abort();
    }
}
