//! A node's HTTP API for the launchers, through `baton`'s own client
//! ([`ApiClient`]) and event reader, decoded into [`baton_node::views`].
//! Each call makes its client, and so its connection, on the calling
//! thread: a thread inside a network namespace reaches that namespace's node.

use std::sync::mpsc;
use std::time::Duration;

use baton_node::cli::ApiClient;
use baton_node::cli::sse::Received;
use baton_node::views::{Event, Member};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// How long a GET may take: a stopped (paused) node must not hold up a
/// scenario's polling for long.
const GET_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a POST may take: opening a session asks the driver, which may
/// wait on the overlay.
const POST_TIMEOUT: Duration = Duration::from_secs(5);

fn client(api: &str, timeout: Duration) -> Result<ApiClient, String> {
    ApiClient::new(api, None)
        .map(|client| client.with_timeout(timeout))
        .map_err(|e| e.to_string())
}

/// GETs `http://{api}{path}` and decodes the JSON answer.
pub fn get<T: DeserializeOwned>(api: &str, path: &str) -> Result<T, String> {
    client(api, GET_TIMEOUT)?
        .get(path)
        .map_err(|e| format!("GET {path}: {e}"))
}

/// GETs `http://{api}{path}` as text (`/metrics`).
pub fn get_text(api: &str, path: &str) -> Result<String, String> {
    client(api, GET_TIMEOUT)?
        .get_text(path)
        .map_err(|e| format!("GET {path}: {e}"))
}

/// POSTs `body` as JSON to `http://{api}{path}`; answers the decoded JSON
/// reply, or the node's refusal.
pub fn post<T: DeserializeOwned>(
    api: &str,
    path: &str,
    body: &impl Serialize,
) -> Result<T, String> {
    client(api, POST_TIMEOUT)?
        .post(path, body)
        .map_err(|e| format!("POST {path}: {e}"))
}

/// Reads the events of `http://{api}/v1/events` on the calling thread,
/// sending each to `tx`, until the stream or the receiver ends. Notices
/// that this reader fell behind are dropped: nothing waits for them.
pub fn follow_events(api: &str, tx: &mpsc::SyncSender<Event>) {
    let Ok(events) = client(api, GET_TIMEOUT).and_then(|c| c.events().map_err(|e| e.to_string()))
    else {
        return;
    };
    for frame in events {
        let Ok(frame) = frame else { return };
        if let Ok(Received::Event(event)) = Received::decode(&frame)
            && tx.send(event).is_err()
        {
            return;
        }
    }
}

/// SWIM payload bytes sent, from a `/metrics` text (0 when absent).
pub fn bytes_out(metrics: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("baton_bytes_total{direction=\"out\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Member (name, state) pairs from a `/v1/members` answer.
pub fn member_states(members: Vec<Member>) -> Vec<(String, String)> {
    members.into_iter().map(|m| (m.name, m.state)).collect()
}

/// Resident memory (kB) and CPU time (clock ticks) of process `pid`, from
/// /proc.
pub fn proc_usage(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, ticks) = parse_stat(&stat)?;
    Some((rss_kb, ticks))
}

/// The parent pid and CPU time (utime + stime, clock ticks) of a
/// /proc/PID/stat line.
pub fn parse_stat(stat: &str) -> Option<(u32, u64)> {
    // After the parenthesised command name (which may hold spaces and
    // parentheses): state, ppid, ...; utime and stime are the 14th and
    // 15th fields of the whole line.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ppid = fields.get(1)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((ppid, utime + stime))
}
