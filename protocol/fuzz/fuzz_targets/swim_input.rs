//! Whatever a hostile peer sends, a node's SWIM state machine must not panic:
//! decoded messages from a handful of senders are fed to one node, with time
//! advancing between them.
#![no_main]

use std::time::{Duration, Instant};

use baton_protocol::swim::{Config, Swim};
use baton_protocol::{NodeId, wire};
use libfuzzer_sys::fuzz_target;
use rand::SeedableRng;
use rand::rngs::SmallRng;

fuzz_target!(|data: &[u8]| {
    let mut now = Instant::now();
    let mut swim = Swim::new(NodeId::synthetic(0), Vec::new(), Config::lan(), SmallRng::seed_from_u64(0), now);
    // Frames: [sender, advance ms, len, bytes...]
    let mut rest = data;
    while rest.len() >= 3 {
        let (sender, advance, len) = (rest[0] % 8, rest[1], usize::from(rest[2]));
        rest = &rest[3..];
        let frame = &rest[..len.min(rest.len())];
        rest = &rest[frame.len()..];
        now += Duration::from_millis(u64::from(advance));
        swim.handle_timeout(now);
        if let Ok(envelope) = wire::decode(frame) {
            swim.handle_message(now, NodeId::synthetic(u32::from(sender)), envelope.message);
        }
        while swim.poll_transmit().is_some() {}
        while swim.poll_event().is_some() {}
    }
});
