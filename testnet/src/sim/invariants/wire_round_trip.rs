//! Every message a node sends decodes at its receiver.
//!
//! The codec's contract (`protocol/src/wire.rs`, and the round-trip property
//! tests the conventions ask for): `decode` accepts whatever
//! `encode_message` produced, within the size cap and the limits. A message
//! that a correct peer cannot decode is lost on every attempt, silently, so
//! the simulator decodes every message it delivers and fails the run if one
//! is rejected (a table chunk over the cap, too many updates, ...).

use std::time::Duration;

use baton_protocol::wire::DecodeError;

use super::Violation;
use super::healthy_not_dead::ms;

/// The invariant's name.
pub const NAME: &str = "wire_round_trip";
/// Where it comes from.
pub const SOURCE: &str = "protocol/src/wire.rs codec contract: decode accepts what \
encode_message produced (size cap and limits included)";

/// The violation for a message `from` sent that `to` could not decode.
pub fn violation(from: &str, to: &str, len: usize, err: &DecodeError, at: Duration) -> Violation {
    Violation {
        invariant: NAME,
        source: SOURCE,
        at_ms: ms(at),
        details: format!("a message of {len} bytes from {from} to {to} does not decode: {err}"),
    }
}
