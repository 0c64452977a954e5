//! Running many Baton nodes: the deterministic simulator of the protocol
//! core ([`sim`]), real node processes on loopback ([`local`]: the demo and
//! the bench), and the testnet of real nodes in network namespaces behind
//! the userspace WAN emulator ([`emu`], [`testbed`], [`scenarios`]); all of
//! them measure what a client hears with [`rtp_receiver`].

pub mod bench;
pub mod control;
pub mod demo;
pub mod emu;
pub mod evaluate;
pub mod http;
pub mod local;
pub mod mapscale;
pub mod netns;
pub mod plot;
pub mod rtp_receiver;
pub mod scenarios;
pub mod sim;
pub mod study;
pub mod sys;
pub mod targets;
pub mod testbed;
