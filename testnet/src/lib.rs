//! Running many Baton nodes: today the deterministic simulator of the
//! protocol core ([`sim`]); later, launchers of real node processes.

pub mod sim;
