//! `GET /metrics`: the node's registry ([`crate::metrics::Metrics`]) in the
//! Prometheus text exposition format 0.0.4, after the gauges that come from
//! the API's views (members, sessions, peers) are brought up to date.
//!
//! `prometheus-client` writes OpenMetrics, where a counter family `x` has
//! the samples `x_total`. Prometheus's classic text parser (`promtool check
//! metrics`, and every scraper that does not ask for OpenMetrics) takes
//! such samples for a second, untyped family; so the text is rewritten into
//! the classic format, whose counter families are named like their samples.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState};
use crate::metrics::Counts;
use crate::state::Shared;

pub(super) async fn metrics(State(st): State<AppState>) -> Response {
    match render_metrics(&st.shared) {
        Ok(body) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            )],
            body,
        )
            .into_response(),
        Err(std::fmt::Error) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the metrics could not be encoded; this is a bug of batond, please report it",
        )
        .into_response(),
    }
}

/// The metrics of `shared` in the Prometheus text format 0.0.4.
fn render_metrics(shared: &Shared) -> Result<String, std::fmt::Error> {
    let mut counts = Counts {
        members: shared.members_by_state().map(|(_, n)| n),
        peers: shared.peers.len(),
        ..Counts::default()
    };
    for session in shared.sessions.iter() {
        match session.state.as_str() {
            "active" => counts.sessions[0] += 1,
            "closed" => counts.sessions[1] += 1,
            _ => {}
        }
        counts.hosted += usize::from(session.hosted_here);
        counts.standby += usize::from(session.standby_here);
        counts.paused += usize::from(session.hosted_here && session.paused);
    }
    let m = &shared.metrics;
    m.set_views(&counts);
    let mut openmetrics = String::with_capacity(16 * 1024);
    prometheus_client::encoding::text::encode(&mut openmetrics, m.registry())?;
    Ok(classic_text(&openmetrics))
}

/// OpenMetrics text as `prometheus-client` writes it, in the classic
/// Prometheus text format: counter families take their samples' `_total`
/// name, `# UNIT` and `# EOF` go, `unknown` becomes `untyped`. Nothing else
/// differs for the metric types Baton and libp2p use (no info, stateset or
/// exemplars).
fn classic_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    // A family's HELP comes before its TYPE, which tells whether the name
    // changes: held until then.
    let mut help: Option<(&str, &str)> = None;
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            if let Some((name, text)) = help.take() {
                push_help(&mut out, name, text);
            }
            help = Some(rest.split_once(' ').unwrap_or((rest, "")));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let (name, kind) = match kind {
                "counter" => (format!("{name}_total"), kind),
                "unknown" => (name.to_owned(), "untyped"),
                _ => (name.to_owned(), kind),
            };
            if let Some((_, text)) = help.take() {
                push_help(&mut out, &name, text);
            }
            out.push_str("# TYPE ");
            out.push_str(&name);
            out.push(' ');
            out.push_str(kind);
            out.push('\n');
        } else if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

fn push_help(out: &mut String, name: &str, text: &str) {
    out.push_str("# HELP ");
    out.push_str(name);
    out.push(' ');
    out.push_str(text);
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::classic_text;
    use crate::api::testing::{Server, get, shared};

    #[test]
    fn counters_take_their_samples_name_and_openmetrics_lines_go() {
        let openmetrics = "\
# HELP a_bytes Bytes.
# TYPE a_bytes counter
# UNIT a_bytes bytes
a_bytes_total{class=\"probe\"} 3
# HELP b_seconds Times.
# TYPE b_seconds histogram
# UNIT b_seconds seconds
b_seconds_sum 1.5
b_seconds_count 2
b_seconds_bucket{le=\"+Inf\"} 2
# HELP c Things.
# TYPE c unknown
c 1
# HELP d Gauge.
# TYPE d gauge
d 4
# EOF
";
        assert_eq!(
            classic_text(openmetrics),
            "\
# HELP a_bytes_total Bytes.
# TYPE a_bytes_total counter
a_bytes_total{class=\"probe\"} 3
# HELP b_seconds Times.
# TYPE b_seconds histogram
b_seconds_sum 1.5
b_seconds_count 2
b_seconds_bucket{le=\"+Inf\"} 2
# HELP c Things.
# TYPE c untyped
c 1
# HELP d Gauge.
# TYPE d gauge
d 4
"
        );
    }

    #[tokio::test]
    async fn metrics_expose_the_counters_in_prometheus_text() {
        let server = Server::start(shared(), None).await;
        let reply = get(server.addr, "/metrics").await;
        assert_eq!(reply.status, 200);
        assert!(
            reply.content_type.starts_with("text/plain; version=0.0.4"),
            "{}",
            reply.content_type
        );
        let text = reply.body;
        for line in [
            "# TYPE baton_members gauge",
            "baton_members{state=\"alive\"} 1",
            "baton_members{state=\"suspect\"} 1",
            "baton_members{state=\"dead\"} 0",
            "baton_members{state=\"left\"} 0",
            "# TYPE baton_sessions gauge",
            "baton_sessions{state=\"active\"} 1",
            "baton_sessions{state=\"closed\"} 1",
            "# TYPE baton_sessions_hosted gauge",
            "baton_sessions_hosted 0",
            "baton_sessions_standby 0",
            "baton_sessions_paused 0",
            "# TYPE baton_probes_total counter",
            "baton_probes_total 7",
            "baton_failed_probes_total 2",
            "baton_suspicions_total 3",
            "baton_refutations_total 1",
            "baton_declared_dead_total 4",
            "baton_messages_total{direction=\"in\"} 100",
            "baton_messages_total{direction=\"out\"} 101",
            "baton_bytes_total{direction=\"in\"} 5000",
            "baton_bytes_total{direction=\"out\"} 6000",
            "baton_traffic_bytes_total{class=\"probe\",direction=\"in\"} 4000",
            "baton_traffic_bytes_total{class=\"map_sync\",direction=\"in\"} 1000",
            "baton_traffic_bytes_total{class=\"probe\",direction=\"out\"} 6000",
            "baton_traffic_bytes_total{class=\"gossip\",direction=\"out\"} 0",
            "baton_traffic_packets_total{class=\"probe\",direction=\"in\"} 40",
            "baton_traffic_packets_total{class=\"map_sync\",direction=\"in\"} 2",
            "baton_datagram_drops_total{reason=\"bad_tag\"} 3",
            "baton_datagram_drops_total{reason=\"replayed\"} 1",
            "baton_datagram_drops_total{reason=\"send_failed\"} 1",
            "baton_dropped_messages_total 5",
            "baton_refused_peers_total 6",
            "baton_refused_by_peers_total 1",
            "baton_handshakes_total 8",
            "baton_handshake_failures_total 2",
            "# TYPE baton_incarnation gauge",
            "baton_incarnation 9",
            "baton_local_health 2",
            "baton_peers 1",
            "baton_connections 3",
            "# TYPE baton_fenced gauge",
            "baton_fenced 0",
            "baton_duplicate_identity_total 0",
            "baton_rejected_records_total 0",
            "# TYPE baton_start_time_seconds gauge",
            "# TYPE baton_probe_rtt_seconds histogram",
            "baton_probe_rtt_seconds_count 1",
            "baton_probe_rtt_seconds_bucket{le=\"0.004\"} 1",
            "baton_probe_rtt_seconds_bucket{le=\"0.002\"} 0",
            "# TYPE baton_suspicion_to_dead_seconds histogram",
            "# TYPE baton_session_first_packet_seconds histogram",
            "baton_session_first_packet_seconds_count{reason=\"takeover\"} 1",
            "baton_session_first_packet_seconds_bucket{le=\"0.05\",reason=\"takeover\"} 1",
            "baton_session_first_packet_seconds_count{reason=\"open\"} 0",
            "baton_build_info{version=\"0.1.0\",revision=\"unknown\"} 1",
            "# TYPE libp2p_swarm_dial_attempt_total counter",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        // Every family has its HELP and TYPE, and no OpenMetrics line is left.
        let families: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .collect();
        for family in &families {
            assert!(text.contains(&format!("# HELP {family} ")), "{family}");
        }
        assert!(!text.contains("# EOF") && !text.contains("# UNIT"));
        server.stop().await;
    }
}
