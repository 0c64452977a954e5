//! libFuzzer target: see `baton_protocol::fuzz::engine_app`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| baton_protocol::fuzz::engine_app(data));
