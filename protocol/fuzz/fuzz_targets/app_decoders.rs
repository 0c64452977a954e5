//! Every other decoder of untrusted bytes: the admission handshake, node
//! metadata, session deltas, map-sync messages and application payloads.
//! None may panic, whatever the input.
#![no_main]

use baton_protocol::{map, meta, peering, sessions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = peering::decode(data);
    let _ = meta::NodeMeta::decode(data);
    let _ = map::Delta::decode(data);
    let _ = map::SyncMessage::decode(data);
    let _ = sessions::AppMessage::decode(data);
});
