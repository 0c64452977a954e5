//! Fuzzing entry points of the node's parsers of untrusted input: RTCP from
//! clients, API request bodies, and command templates with caller-chosen
//! values. Like `baton_protocol::fuzz`, each takes arbitrary bytes and may
//! panic only when the code breaks a rule it promises; CI runs them with
//! `baton_protocol::fuzz::run_bounded`, `protocol/fuzz` with libFuzzer.

use crate::service::exec::Template;
use crate::service::rtcp;

/// RTCP from a client's address: report blocks and the reports made of
/// them, whatever the datagram.
pub fn rtcp(data: &[u8]) {
    let blocks = rtcp::report_blocks(data);
    let ssrc = blocks.first().map_or(0, |b| b.ssrc);
    let mut reporter = rtcp::Reporter::new(ssrc);
    for at in [0, 1_700_000_000_000_000, u64::MAX] {
        for report in reporter.reports(data, at) {
            assert!((0.0..=1.0).contains(&report.loss), "loss {}", report.loss);
            assert!(report.jitter_ms >= 0.0 && report.rtt_ms >= 0.0);
        }
    }
}

/// A request body as `POST /v1/sessions` and `POST .../report` check it:
/// any bytes, any JSON, answered with a request or a 4xx error.
pub fn api_request(data: &[u8]) {
    crate::api::check_bodies(data);
}

/// A command template parsed from the first line of `data` and rendered
/// with values from the rest: parsing either succeeds or says why, and a
/// rendered argv never has an empty program.
pub fn template(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (template, values) = text.split_once('\n').unwrap_or((&text, ""));
    let Ok(template) = Template::parse(template) else {
        return;
    };
    let mut values = values.split('\n').cycle();
    if let Ok(argv) = template.render(|_| Ok(values.next().unwrap_or_default().to_string())) {
        assert!(!argv.is_empty() && !argv[0].is_empty(), "{argv:?}");
    }
}
