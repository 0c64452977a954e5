//! JSON over a node's HTTP API, for the launchers. Each call runs on a
//! use-once agent: its connection is made on the calling thread, so a
//! thread inside a network namespace reaches that namespace's node.

use std::io::{BufRead, BufReader};
use std::sync::mpsc;
use std::time::Duration;

/// GETs `http://{api}{path}` and parses the JSON answer.
pub fn get(api: &str, path: &str) -> Result<serde_json::Value, String> {
    let text = get_text(api, path)?;
    serde_json::from_str(&text).map_err(|e| format!("GET {path}: {e}"))
}

/// GETs `http://{api}{path}` as text (`/metrics`).
pub fn get_text(api: &str, path: &str) -> Result<String, String> {
    let url = format!("http://{api}{path}");
    let mut response = ureq::get(&url)
        .config()
        .timeout_global(Some(Duration::from_secs(3)))
        .build()
        .call()
        .map_err(|e| format!("GET {path}: {e}"))?;
    response
        .body_mut()
        .read_to_string()
        .map_err(|e| format!("GET {path}: {e}"))
}

/// POSTs `body` as JSON to `http://{api}{path}`; answers the JSON reply, or
/// the status and body of a refusal.
pub fn post(api: &str, path: &str, body: &serde_json::Value) -> Result<serde_json::Value, String> {
    let url = format!("http://{api}{path}");
    let mut response = ureq::post(&url)
        .config()
        .timeout_global(Some(Duration::from_secs(5)))
        .http_status_as_error(false)
        .build()
        .header("content-type", "application/json")
        .send(body.to_string())
        .map_err(|e| format!("POST {path}: {e}"))?;
    let status = response.status();
    let text = response
        .body_mut()
        .read_to_string()
        .map_err(|e| format!("POST {path}: {e}"))?;
    if !status.is_success() {
        return Err(format!("POST {path}: {status} {text}"));
    }
    serde_json::from_str(&text).map_err(|e| format!("POST {path}: {e}"))
}

/// Reads the server-sent events of `http://{api}/v1/events` on the calling
/// thread, sending each event's JSON to `tx`, until the stream or the
/// receiver ends.
pub fn follow_events(api: &str, tx: &mpsc::SyncSender<serde_json::Value>) {
    let url = format!("http://{api}/v1/events");
    let Ok(response) = ureq::get(&url).call() else {
        return;
    };
    let reader = BufReader::new(response.into_body().into_reader());
    for line in reader.lines() {
        let Ok(line) = line else { return };
        if let Some(data) = line.strip_prefix("data:")
            && let Ok(event) = serde_json::from_str(data.trim())
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
pub fn member_states(members: &serde_json::Value) -> Vec<(String, String)> {
    members
        .as_array()
        .map(|list| {
            list.iter()
                .map(|m| {
                    (
                        m["name"].as_str().unwrap_or("").to_string(),
                        m["state"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
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
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the whole line.
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((rss_kb, utime + stime))
}
