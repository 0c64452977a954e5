//! libFuzzer target: see `baton_protocol::fuzz::swim_input`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| baton_protocol::fuzz::swim_input(data));
