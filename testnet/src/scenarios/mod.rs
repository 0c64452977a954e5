//! `testnet run SCENARIO`: a fault scenario on a fresh testnet, measured
//! from the outside (RTP receivers in the client namespace, the nodes'
//! `/v1/events`, interface counters, /proc), written up as report.json,
//! report.md and SVG plots in `--out`.

mod cut;
mod degrade;
mod harness;
mod outage;
mod report;
mod run;

pub use cut::{CutResult, Direction, HOLD, longest_double_heard};
pub use degrade::{DEGRADED, Move, POOR_FOR, measure_move};
pub use harness::{Harness, Options, SessionService, Standby, shipped_transcode_template};
pub use outage::{HOLD as OUTAGE_HOLD, OutageResult, choose_region};
pub use report::{Report, Target, fmt_num};
pub use run::{SPRAY_PER_NODE, Scenario, WALK_BYTES_PER_PEER, run, steady_bytes};
