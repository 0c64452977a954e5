//! The properties every simulated run must keep, one file each, each citing
//! where the property comes from.
//!
//! The simulator checks them as the run goes (on the event that could break
//! them) and at the end; any violation fails the run, which then prints the
//! command that replays it.

use serde::Serialize;

pub mod converges;
pub mod crashed_declared_dead;
pub mod healthy_not_dead;
pub mod not_doubly_owned;
pub mod not_lost;
pub mod restart_rejoins;
pub mod takeover_by_one_backup;
pub mod transfer_keeps_owner;
pub mod wire_round_trip;

/// A broken invariant: which one, where it comes from, and what happened.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Violation {
    /// The invariant's name (its file name).
    pub invariant: &'static str,
    /// Where the property comes from.
    pub source: &'static str,
    /// Virtual time of the violation, in milliseconds since the start.
    pub at_ms: f64,
    /// Who and what.
    pub details: String,
}
