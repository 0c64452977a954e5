//! libFuzzer target: see `baton_protocol::fuzz::map_apply`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| baton_protocol::fuzz::map_apply(data));
