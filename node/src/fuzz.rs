//! Fuzzing entry points of the node's parsers of untrusted input: RTCP from
//! clients, API request bodies, and command templates with caller-chosen
//! values. Like `baton_protocol::fuzz`, each takes arbitrary bytes and may
//! panic only when the code breaks a rule it promises; CI runs them with
//! `baton_protocol::fuzz::run_bounded`, `protocol/fuzz` with libFuzzer.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use crate::service::SessionSpec;
use crate::service::exec::{Exec, RuleConfig, Template, TemplateConfig};
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

/// Client values for an `exec` template with a placeholder of each rule
/// (`name`, `number`, a `regex` lax enough to match paths and URLs, none),
/// one value a line: whatever passes is never a way out of a directory, an
/// absolute path, a URL or an option, whichever rule it went through.
pub fn exec_values(data: &[u8]) {
    static EXEC: OnceLock<Exec> = OnceLock::new();
    let exec = EXEC.get_or_init(|| {
        let rule = |kind: &str, pattern: Option<&str>| RuleConfig {
            kind: kind.to_string(),
            pattern: pattern.map(str::to_string),
            ..RuleConfig::default()
        };
        let config = TemplateConfig {
            command: "p {n} {num} {re} {d}".to_string(),
            params: BTreeMap::from([
                ("n".to_string(), rule("name", None)),
                ("num".to_string(), rule("number", None)),
                ("re".to_string(), rule("regex", Some(r"[ -~]+"))),
            ]),
            ..TemplateConfig::default()
        };
        Exec::new(&BTreeMap::from([("t".to_string(), config)]), None).expect("valid template")
    });
    let text = String::from_utf8_lossy(data);
    let mut values = text.split('\n');
    let mut params = BTreeMap::from([("template".to_string(), "t".to_string())]);
    for key in ["n", "num", "re", "d"] {
        params.insert(key.to_string(), values.next().unwrap_or("1").to_string());
    }
    let spec = SessionSpec {
        id: "f".to_string(),
        service: "exec".to_string(),
        params,
        client: "127.0.0.1:5004".to_string(),
        started_ms: 0,
    };
    let Ok(argv) = exec.command(&spec) else {
        return;
    };
    for value in &argv[1..] {
        let scheme = value.split_once(':').is_some_and(|(head, _)| {
            head.starts_with(|c: char| c.is_ascii_alphabetic())
                && head
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        });
        assert!(
            !value.contains("..") && !value.starts_with(['/', '-']) && !scheme,
            "{value:?} passed"
        );
        assert!(!value.chars().any(char::is_control), "{value:?} passed");
    }
}
