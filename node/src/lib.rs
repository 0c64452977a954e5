//! The Baton node: the daemon `batond` drives the protocol core of
//! `baton-protocol` over libp2p and serves an HTTP API; the CLI `baton` talks
//! to that API.

pub mod api;
pub mod api_addr;
pub mod cli;
pub mod config;
pub mod data_dir;
pub mod driver;
pub mod fuzz;
pub mod hooks;
pub mod identity;
pub mod logging;
pub mod memory;
pub mod metrics;
pub mod node;
pub mod reload;
pub mod service;
pub mod state;
pub mod views;

pub use config::Config;
pub use node::Node;
