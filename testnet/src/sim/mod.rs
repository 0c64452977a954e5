//! A deterministic simulator of the protocol core: one seed, virtual time.
//!
//! `n` real [`baton_protocol::node::Node`]s (SWIM, the session engine and
//! its map, admission, sealed datagrams, stream exchanges) run over a
//! simulated [`Network`] of datagrams with per-link latency, jitter, loss
//! and (asymmetric) cuts, and a simulated libp2p [`transport`] of
//! connections and reliable streams, while [`Sim`] crashes, pauses and
//! restarts nodes and opens sessions through the nodes' own API command.
//! The [`invariants`] are checked as the run goes; the [`scenario`]s
//! measure detection latency, false positives, dissemination, takeovers,
//! lost and doubly owned sessions and traffic, and a failure names the
//! seed that replays it.

pub mod cut_detection;
pub mod dissemination;
pub mod engine;
pub mod health;
pub mod identity;
pub mod invariants;
pub mod network;
pub mod ownership;
pub mod report;
pub mod scenario;
pub mod stats;
pub mod takeovers;
pub mod traffic;
pub mod transport;
pub mod verifier;
pub mod views;

pub use engine::{Counters, Sim, SimConfig, SimNode, Status, Watch};
pub use invariants::Violation;
pub use network::{Latency, MatrixError, Network, RttMatrix};
pub use report::Report;
pub use scenario::{Scenario, ScenarioConfig, run};
pub use stats::Summary;
