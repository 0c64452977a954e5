//! A deterministic simulator of the protocol core: one seed, virtual time.
//!
//! `n` real [`baton_protocol::swim::Swim`] state machines exchange real
//! encoded messages over a simulated [`Network`] with per-link latency,
//! jitter, loss and (asymmetric) cuts, while [`Sim`] crashes, pauses and
//! restarts nodes. The [`invariants`] are checked as the run goes; the
//! [`scenario`]s measure detection latency, false positives, dissemination
//! time and traffic, and a failure names the seed that replays it.

pub mod dissemination;
pub mod engine;
pub mod health;
pub mod invariants;
pub mod network;
pub mod report;
pub mod scenario;
pub mod stats;
pub mod views;

pub use engine::{Counters, Machine, Sim, SimConfig, Status, Traffic, Watch};
pub use invariants::Violation;
pub use network::{Latency, MatrixError, Network, RttMatrix};
pub use report::Report;
pub use scenario::{Scenario, ScenarioConfig, run};
pub use stats::Summary;
