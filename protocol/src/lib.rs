//! Baton's protocol core: everything that decides, nothing that waits.
//!
//! Like quinn-proto and foca, this crate holds no sockets, reads no clock and
//! uses no global random number generator: callers pass `now` and an RNG in,
//! and drain what the state machines want done with `poll_*` methods. The node
//! daemon drives these state machines over libp2p; the testnet simulator drives
//! the very same code in virtual time.

pub mod coords;
pub mod datagram;
pub mod fuzz;
pub mod id;
pub mod map;
pub mod meta;
pub mod node;
pub mod peering;
pub mod policy;
pub mod session;
pub mod sessions;
pub mod stream;
pub mod swim;
pub mod wire;

pub use id::NodeId;
