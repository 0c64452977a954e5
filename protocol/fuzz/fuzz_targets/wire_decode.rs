//! libFuzzer target: see `baton_protocol::fuzz::wire_decode`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| baton_protocol::fuzz::wire_decode(data));
