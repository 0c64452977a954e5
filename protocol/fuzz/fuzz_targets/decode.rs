//! Untrusted bytes from a peer: decoding must never panic, and whatever
//! decodes must encode and decode back to the same envelope.
#![no_main]

use baton_protocol::wire;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(envelope) = wire::decode(data) {
        let again = wire::decode(&wire::encode(&envelope)).expect("re-encoded message decodes");
        assert_eq!(again, envelope);
    }
});
