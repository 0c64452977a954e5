//! `testnet run degrade`: the path between a session's primary and the
//! client degrades (loss and delay on that pair of hosts only, in the
//! emulator) while every other node still reaches the client well. The
//! client's RTCP receiver reports are all the nodes learn of it; the
//! session must move make-before-break to a node that serves the client's
//! location well, losing nothing by the move itself.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;

use super::harness::{Harness, Options, node_of, sleep};
use super::report::{Report, Target};
use super::run::{Scenario, new_report, ownership_targets, prepare_with, primaries};
use crate::emu::Impairment;
use crate::plot::{Plot, Style, cdf};
use crate::rtp_receiver::Arrival;
use crate::sim::stats::Summary;
use crate::targets;
use crate::testbed::{TestbedError, node_addr, unix_ms};

/// How the path degrades, in each direction: 10% loss and 150 ms more
/// one-way delay (300 ms more RTT).
pub const DEGRADED: Impairment = Impairment {
    loss: 0.10,
    delay: Duration::from_millis(150),
};

/// The nodes' `[sessions] poor_for` in this scenario: poor service for
/// this long moves a session.
pub const POOR_FOR: Duration = Duration::from_secs(2);

/// The nodes' `[sessions]` for the run: moves within the run's time
/// (`min_dwell` shorter than a run, `min_samples` reached in a few seconds
/// of one report a second), the rest as shipped.
fn sessions_config() -> String {
    format!(
        "[sessions]\npoor_for = \"{}\"\nmin_dwell = \"10s\"\nmin_samples = 3\n",
        humantime::format_duration(POOR_FOR)
    )
}

/// What one session's client heard of a move.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Move {
    /// Degradation until the first packet from the new source, ms.
    pub transfer_ms: f64,
    /// The new source's node.
    pub to: String,
    /// Sequence numbers the old source sent over the degraded path that
    /// never arrived (the path's loss, before the move).
    pub path_lost: u64,
    /// Sequence numbers lost by the move: between the old source's last
    /// and the new one's first, or missing from the new one's first on.
    pub move_lost: u64,
    /// Sequence numbers heard from both sources (the overlap of
    /// make-before-break).
    pub overlap: u64,
    /// Copies of one sequence number that differ.
    pub mismatched_duplicates: u64,
    /// From the new source's first packet to the old source's last, ms.
    pub overlap_ms: f64,
    /// SSRCs heard since the degradation.
    pub ssrcs: usize,
}

/// Reads a move off what the client heard since `since` (the
/// degradation): `None` if no source other than `old` was heard.
/// Sequence numbers are extended as RFC 3550 A.1 does.
pub fn measure_move(arrivals: &[Arrival], old: IpAddr, since: Instant) -> Option<Move> {
    let window: Vec<&Arrival> = arrivals.iter().filter(|a| a.at >= since).collect();
    let mut highest: Option<i64> = None;
    // (extended seq, from the old source, hash, arrival)
    let mut seen: Vec<(i64, bool, u64, Instant)> = Vec::with_capacity(window.len());
    for a in &window {
        let ext = match highest {
            None => i64::from(a.seq),
            Some(h) => h + i64::from(a.seq.wrapping_sub(h as u16) as i16),
        };
        highest = Some(highest.map_or(ext, |h| h.max(ext)));
        seen.push((ext, a.from.ip() == old, a.hash, a.at));
    }
    let first_new = seen.iter().find(|s| !s.1)?;
    let new_from = window.iter().find(|a| a.from.ip() != old)?.from;
    let (new_seq, new_at) = (first_new.0, first_new.3);
    let old_seqs: Vec<i64> = seen.iter().filter(|s| s.1).map(|s| s.0).collect();
    let first = seen.iter().map(|s| s.0).min()?;
    let last = seen.iter().map(|s| s.0).max()?;
    let old_last = old_seqs.iter().copied().max().unwrap_or(first - 1);
    let mut received: Vec<i64> = seen.iter().map(|s| s.0).collect();
    received.sort_unstable();
    received.dedup();
    let missing = |from: i64, to: i64| -> u64 {
        if to < from {
            return 0;
        }
        let got = received.iter().filter(|s| (from..=to).contains(*s)).count() as i64;
        (to - from + 1 - got) as u64
    };
    // Before the new source's first packet and up to the old one's last,
    // only the degraded path could lose packets; after that, any missing
    // number is the move's: nobody sent it (the old source stopped before
    // the new one began) or the new path lost it.
    let path_end = old_last.min(new_seq - 1);
    let path_lost = missing(first, path_end);
    let move_lost = missing(path_end + 1, last);
    let mut by_seq: std::collections::HashMap<i64, (bool, bool, u64, bool)> = Default::default();
    for (ext, from_old, hash, _) in &seen {
        let e = by_seq.entry(*ext).or_insert((false, false, *hash, false));
        if *from_old {
            e.0 = true;
        } else {
            e.1 = true;
        }
        if e.2 != *hash {
            e.3 = true;
        }
    }
    let old_last_at = seen.iter().filter(|s| s.1).map(|s| s.3).max();
    let mut ssrcs: Vec<u32> = window.iter().map(|a| a.ssrc).collect();
    ssrcs.sort_unstable();
    ssrcs.dedup();
    Some(Move {
        transfer_ms: ms(new_at.saturating_duration_since(since)),
        to: node_of(&new_from),
        path_lost,
        move_lost,
        overlap: by_seq.values().filter(|v| v.0 && v.1).count() as u64,
        mismatched_duplicates: by_seq.values().filter(|v| v.3).count() as u64,
        overlap_ms: old_last_at.map_or(0.0, |t| ms(t.saturating_duration_since(new_at))),
        ssrcs: ssrcs.len(),
    })
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e4).round() / 10.0
}

/// `degrade`: repeatedly, the path from the primary of a session to the
/// client degrades; every session of that primary must move to another
/// node within `poor_for` + 3 s, losing nothing by the move.
pub(super) fn degrade(opts: &Options) -> Result<Report, TestbedError> {
    let n = opts.nodes;
    // Every node hosts sessions of the client's location, so that every
    // node has numbers for it to share.
    let mut opts = opts.clone();
    opts.sessions = opts.sessions.max(n);
    let opts = &opts;
    let mut report = new_report(Scenario::Degrade, opts, opts.loss);
    std::fs::create_dir_all(&opts.out)?;
    let config = opts.out.join("degrade.toml");
    std::fs::write(&config, sessions_config())?;
    let flags = vec!["--config".to_owned(), config.display().to_string()];
    let h = prepare_with(opts, &mut report, flags)?;
    let switch = h.tb.switch();
    let client = h.tb.client_port();
    let limit_ms = POOR_FOR.as_secs_f64() * 1e3 + targets::DEGRADE_TRANSFER_SLACK_MS;
    let mut degraded: Vec<usize> = Vec::new();
    let (mut transfers, mut rows, mut moves) = (Vec::new(), Vec::new(), Vec::new());
    // Transfer = decision (poor service seen for poor_for) + the move.
    let (mut decisions, mut handovers) = (Vec::new(), Vec::new());
    let (mut unmoved, mut move_lost, mut mismatched) = (0u64, 0u64, 0u64);
    let (mut lost, mut double) = (0, 0);
    for k in 0..opts.faults.max(1) {
        let before = primaries(&h, 0);
        // The primary of a session whose path has not degraded before
        // (such a node's own numbers for the location stay poor).
        let count = before.len().max(1);
        let victim = (0..count)
            .filter_map(|s| before.get((s + k) % count).copied().flatten())
            .find(|p| !degraded.contains(p));
        let Some(victim) = victim else {
            report
                .timeline
                .push(format!("degradation {}: no primary left to degrade", k + 1));
            break;
        };
        degraded.push(victim);
        let affected: Vec<usize> = (0..before.len())
            .filter(|s| before[*s] == Some(victim))
            .collect();
        let old_ip = IpAddr::V4(node_addr(victim));
        let at = Instant::now();
        let at_ms = unix_ms();
        switch.impair(victim, client, DEGRADED);
        switch.impair(client, victim, DEGRADED);
        let heard_from_another = |s: usize| {
            h.sessions[s]
                .receiver
                .arrivals()
                .iter()
                .any(|a| a.at >= at && a.from.ip() != old_ip)
        };
        let deadline = at + POOR_FOR + Duration::from_secs(15);
        while !affected.iter().all(|s| heard_from_another(*s)) && Instant::now() < deadline {
            sleep(Duration::from_millis(100))?;
        }
        // Let the old source stop (at the new one's confirmation) and the
        // new one stream alone for the ownership check's window.
        sleep(Duration::from_secs(4))?;
        let mut fault_moves = Vec::new();
        let decided_ms = decision_delays(&h, &affected, at_ms);
        for (&s, decided) in affected.iter().zip(&decided_ms) {
            let arrivals = h.sessions[s].receiver.arrivals();
            match measure_move(&arrivals, old_ip, at) {
                Some(m) => {
                    transfers.push(m.transfer_ms);
                    if let Some(d) = decided {
                        decisions.push(*d);
                        handovers.push(m.transfer_ms - d);
                    }
                    move_lost += m.move_lost;
                    mismatched += m.mismatched_duplicates;
                    fault_moves.push(m.clone());
                    moves.push(json!({"degradation": k + 1, "session": h.sessions[s].id,
                        "from": h.tb.nodes[victim].name, "move": m}));
                }
                None => {
                    unmoved += 1;
                    moves.push(json!({"degradation": k + 1, "session": h.sessions[s].id,
                        "from": h.tb.nodes[victim].name, "move": null}));
                }
            }
        }
        let (l, d, notes) = h.ownership();
        lost += l;
        double += d;
        switch.restore(victim, client);
        switch.restore(client, victim);
        let line = format!(
            "degradation {}: path {} <-> client ({} session(s)); moved: {}; transfers {:?} ms (decided after {:?} ms); lost by the move {}, on the degraded path {}; then {l} lost, {d} doubly owned {}",
            k + 1,
            h.tb.nodes[victim].name,
            affected.len(),
            fault_moves
                .iter()
                .map(|m| m.to.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            fault_moves
                .iter()
                .map(|m| m.transfer_ms.round())
                .collect::<Vec<_>>(),
            decided_ms
                .iter()
                .map(|d| d.map(f64::round))
                .collect::<Vec<_>>(),
            fault_moves.iter().map(|m| m.move_lost).sum::<u64>(),
            fault_moves.iter().map(|m| m.path_lost).sum::<u64>(),
            notes.join("; ")
        );
        eprintln!("{line}");
        report.timeline.push(line);
        rows.push(
            json!({"victim": h.tb.nodes[victim].name, "at_s": h.t(at_ms),
            "sessions": affected.len(), "moved": fault_moves.len(),
            "decided_ms": decided_ms, "sessions_lost": l, "double_owned": d}),
        );
        sleep(Duration::from_secs(2))?;
    }
    let summary = Summary::of(&transfers);
    report.transfer_ms = Some(summary);
    report.sessions_lost = Some(lost);
    report.double_owned = Some(double);
    report.details = json!({"degradations": rows, "moves": moves,
        "impairment": {"loss": DEGRADED.loss, "extra_one_way_ms": DEGRADED.delay.as_millis(),
            "directions": "both"},
        "poor_for_ms": POOR_FOR.as_millis(), "transfer_limit_ms": limit_ms,
        "decision_ms": Summary::of(&decisions), "handover_ms": Summary::of(&handovers),
        "sessions_not_moved": unmoved, "lost_by_moves": move_lost,
        "mismatched_duplicates": mismatched});
    report.targets.push(Target::at_most(
        &format!(
            "degradation until the client hears the new primary, max (poor_for {} s + 3 s)",
            POOR_FOR.as_secs()
        ),
        summary.max,
        limit_ms,
        "ms",
    ));
    report.targets.push(Target::at_most(
        "sessions of a degraded path not moved",
        Some(unmoved as f64),
        0.0,
        "",
    ));
    report.targets.push(Target::at_most(
        "packets lost by the moves",
        Some(move_lost as f64),
        targets::MOVE_LOST_PACKETS,
        "",
    ));
    report.targets.push(Target::at_most(
        "mismatched duplicates at the moves",
        Some(mismatched as f64),
        0.0,
        "",
    ));
    ownership_targets(&mut report);
    report.plots.push((
        "transfer.svg".into(),
        Plot::new(
            "Path degraded until the client hears the new primary (CDF)",
            "ms",
            "fraction",
        )
        .series("sessions moved", Style::Step, cdf(&transfers))
        .reference("limit", limit_ms),
    ));
    report.clients = h.clients();
    Ok(report)
}

/// For each session, when (ms after `since_ms`) the node that degraded
/// wrote the handover, from the map's history as any node holds it.
fn decision_delays(h: &Harness, sessions: &[usize], since_ms: f64) -> Vec<Option<f64>> {
    let list: Vec<baton_node::views::Session> = (0..h.tb.nodes.len())
        .find_map(|i| h.tb.get(i, "/v1/sessions").ok())
        .unwrap_or_default();
    sessions
        .iter()
        .map(|&s| {
            let record = list.iter().find(|r| r.id == h.sessions[s].id)?;
            record
                .history
                .iter()
                .filter(|m| m.reason.starts_with("transfer") && m.at_ms as f64 >= since_ms)
                .map(|m| m.at_ms as f64 - since_ms)
                .reduce(f64::min)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn arrival(at: Instant, from: SocketAddr, seq: u16, hash: u64) -> Arrival {
        Arrival {
            at,
            unix_us: 0,
            from,
            seq,
            ts: 0,
            ssrc: 1,
            marker: false,
            payload_type: 0,
            len: 172,
            hash,
            payload: Vec::new(),
        }
    }

    /// The old source sends `old` (seq, ms), the new one `new`.
    fn heard(old: &[(u16, u64)], new: &[(u16, u64)]) -> (Vec<Arrival>, Instant) {
        let t0 = Instant::now();
        let a: SocketAddr = "198.18.1.2:5000".parse().unwrap();
        let b: SocketAddr = "198.18.1.3:6000".parse().unwrap();
        let mut v: Vec<Arrival> = old
            .iter()
            .map(|(s, m)| arrival(t0 + Duration::from_millis(*m), a, *s, u64::from(*s)))
            .chain(
                new.iter()
                    .map(|(s, m)| arrival(t0 + Duration::from_millis(*m), b, *s, u64::from(*s))),
            )
            .collect();
        v.sort_by_key(|a| a.at);
        (v, t0)
    }

    fn old_ip() -> IpAddr {
        "198.18.1.2".parse().unwrap()
    }

    #[test]
    fn make_before_break_with_path_loss_loses_nothing_by_the_move() {
        // Old: 65530..=65535, 0..=4 over a lossy, slow path (65533 and 1
        // lost), the new source from 2 on, 150 ms earlier: 2, 3, 4 twice.
        let old: Vec<(u16, u64)> = [65530, 65531, 65532, 65534, 65535, 0, 2, 3, 4]
            .iter()
            .enumerate()
            .map(|(i, s)| (*s, 20 * i as u64 + 200))
            .collect();
        let new: Vec<(u16, u64)> = (2u16..10).map(|s| (s, 200 + 20 * u64::from(s))).collect();
        let (arrivals, t0) = heard(&old, &new);
        let m = measure_move(&arrivals, old_ip(), t0).unwrap();
        assert_eq!(
            (m.path_lost, m.move_lost, m.overlap, m.mismatched_duplicates),
            (2, 0, 3, 0),
            "{m:?}"
        );
        assert_eq!((m.to.as_str(), m.ssrcs), ("n3", 1));
        assert!((m.transfer_ms - 240.0).abs() < 1.0, "{m:?}");
        assert!((m.overlap_ms - 120.0).abs() < 1.0, "{m:?}");
    }

    #[test]
    fn a_break_before_make_counts_what_nobody_sent() {
        // The old source stops at 10, the new one begins at 14: 11..=13 lost
        // by the move; 16 lost after it.
        let old: Vec<(u16, u64)> = (5u16..=10).map(|s| (s, u64::from(s) * 20)).collect();
        let new: Vec<(u16, u64)> = [14u16, 15, 17, 18]
            .iter()
            .map(|s| (*s, u64::from(*s) * 20))
            .collect();
        let (mut arrivals, t0) = heard(&old, &new);
        // A copy that differs.
        let mut bad = arrivals.last().unwrap().clone();
        bad.hash ^= 1;
        arrivals.push(bad);
        let m = measure_move(&arrivals, old_ip(), t0).unwrap();
        assert_eq!((m.path_lost, m.move_lost), (0, 4), "{m:?}");
        assert_eq!((m.overlap, m.mismatched_duplicates), (0, 1));
        assert_eq!(m.overlap_ms, 0.0);
        // Nothing from another source: no move.
        let (only_old, t0) = heard(&old, &[]);
        assert_eq!(measure_move(&only_old, old_ip(), t0), None);
    }
}
