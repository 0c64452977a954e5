//! libFuzzer target: see `baton_protocol::fuzz::datagram_open`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| baton_protocol::fuzz::datagram_open(data));
