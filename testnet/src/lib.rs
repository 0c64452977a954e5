//! Running many Baton nodes: today the deterministic simulator of the
//! protocol core ([`sim`]); later, launchers of real node processes.

pub mod bench;
pub mod demo;
pub mod local;
pub mod sim;
