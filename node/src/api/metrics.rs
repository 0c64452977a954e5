//! `GET /metrics`: the counters of [`Shared`] and the member and session
//! gauges in the Prometheus text exposition format 0.0.4.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::overlay::uptime;
use crate::state::Shared;

pub(super) async fn metrics(State(st): State<AppState>) -> Response {
    let body = render_metrics(&st.shared);
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

/// `shared` in the Prometheus text exposition format 0.0.4.
fn render_metrics(shared: &Shared) -> String {
    let m = &shared.metrics;
    let c = |counter: &AtomicU64| counter.load(Ordering::Relaxed).to_string();
    let mut out = String::with_capacity(2048);
    let by_state = shared
        .members_by_state()
        .map(|(state, n)| (state, n.to_string()));
    family(
        &mut out,
        ("baton_members", "gauge"),
        "Members known to this node by state, this node excluded.",
        Some("state"),
        &by_state,
    );
    let (mut active, mut closed, mut hosted) = (0usize, 0usize, 0usize);
    for session in shared.sessions.iter() {
        match session.state.as_str() {
            "active" => active += 1,
            "closed" => closed += 1,
            _ => {}
        }
        hosted += usize::from(session.hosted_here);
    }
    family(
        &mut out,
        ("baton_sessions", "gauge"),
        "Sessions in this node's copy of the session map by state (closed: tombstones \
         not yet collected).",
        Some("state"),
        &[
            ("active", active.to_string()),
            ("closed", closed.to_string()),
        ],
    );
    family(
        &mut out,
        ("baton_sessions_hosted", "gauge"),
        "Sessions this node hosts now.",
        None,
        &[("", hosted.to_string())],
    );
    let counters = [
        ("baton_probes_total", "SWIM probes started.", &m.probes),
        (
            "baton_failed_probes_total",
            "SWIM probes that failed, direct and indirect.",
            &m.failed_probes,
        ),
        (
            "baton_suspicions_total",
            "Suspicions this node raised.",
            &m.suspicions,
        ),
        (
            "baton_refutations_total",
            "Suspicions about this node that it refuted.",
            &m.refutations,
        ),
        (
            "baton_declared_dead_total",
            "Members this node declared dead.",
            &m.declared_dead,
        ),
    ];
    for (name, help, counter) in counters {
        family(&mut out, (name, "counter"), help, None, &[("", c(counter))]);
    }
    let by_direction = [
        (
            "baton_messages_total",
            "SWIM messages by direction.",
            &m.messages_in,
            &m.messages_out,
        ),
        (
            "baton_bytes_total",
            "SWIM payload bytes by direction, without libp2p framing.",
            &m.bytes_in,
            &m.bytes_out,
        ),
    ];
    for (name, help, inbound, outbound) in by_direction {
        family(
            &mut out,
            (name, "counter"),
            help,
            Some("direction"),
            &[("in", c(inbound)), ("out", c(outbound))],
        );
    }
    family(
        &mut out,
        ("baton_dropped_messages_total", "counter"),
        "Messages dropped: undecodable, from refused peers, or queues full.",
        None,
        &[("", c(&m.dropped))],
    );
    family(
        &mut out,
        ("baton_refused_peers_total", "counter"),
        "Peers refused by the peering policy.",
        None,
        &[("", c(&m.refused))],
    );
    let gauges = [
        (
            "baton_incarnation",
            "This node's SWIM incarnation.",
            m.incarnation.load(Ordering::Relaxed).to_string(),
        ),
        (
            "baton_local_health",
            "Lifeguard local health multiplier (0 is healthy).",
            m.local_health.load(Ordering::Relaxed).to_string(),
        ),
        (
            "baton_peers",
            "libp2p peers connected or recently refused.",
            shared.peers.len().to_string(),
        ),
        (
            "baton_uptime_seconds",
            "Seconds since this node started.",
            format!("{:.3}", uptime(shared).as_secs_f64()),
        ),
    ];
    for (name, help, value) in gauges {
        family(&mut out, (name, "gauge"), help, None, &[("", value)]);
    }
    out
}

/// One metric family: HELP, TYPE and a sample per `(label value, value)`.
fn family(
    out: &mut String,
    (name, kind): (&str, &str),
    help: &str,
    label: Option<&str>,
    samples: &[(&str, String)],
) {
    // Writing to a String cannot fail.
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (label_value, value) in samples {
        match label {
            Some(label) => {
                let _ = writeln!(out, "{name}{{{label}=\"{label_value}\"}} {value}");
            }
            None => {
                let _ = writeln!(out, "{name} {value}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::api::testing::{Server, get, shared};

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
            "baton_dropped_messages_total 5",
            "baton_refused_peers_total 6",
            "# TYPE baton_incarnation gauge",
            "baton_incarnation 9",
            "baton_local_health 2",
            "baton_peers 1",
            "# TYPE baton_uptime_seconds gauge",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        // Every family has its HELP and TYPE before its samples.
        let families: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .collect();
        assert_eq!(families.len(), 16);
        for family in families {
            assert!(text.contains(&format!("# HELP {family} ")), "{family}");
        }
        server.stop().await;
    }
}
