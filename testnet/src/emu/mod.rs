//! The userspace WAN emulator: an Ethernet switch between TAP devices that
//! delivers every frame after the one-way delay of its pair of ports (half
//! the RTT between their regions, plus jitter), drops frames at random with
//! the configured loss, drops everything on links cut on demand, and adds
//! loss and delay to links impaired on demand (a path that degraded), one
//! direction at a time. Broadcast and multicast frames (ARP, mDNS) are
//! flooded; unicast frames go to the port their destination MAC was learned
//! on. The kernel here has no netem, so this is how latency exists on the
//! testnet.

mod switch;
mod topology;

pub use switch::{Class, Impairment, PortCounters, Switch, SwitchHandle};
pub use topology::{Delays, WAN_RTT_CSV, builtin_matrix, first_regions, round_robin};
