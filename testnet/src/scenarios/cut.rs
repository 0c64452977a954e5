//! `testnet run cut`: one node at a time is cut one way, alternately so
//! that it cannot hear (everything sent to it is dropped) and so that it
//! cannot send (everything it sends is dropped). Each victim is a primary
//! of sessions whose clients are RTP receivers in the client namespace.
//! Self-fencing (docs/protocol.md 7.12) must keep it from double-serving:
//! it fences itself and stops serving within the fence bound, claims
//! nothing and declares nobody dead while cut, no client hears two senders
//! for longer than the bound, and after the heal every session has exactly
//! one owner, agreed by every node.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;

use super::harness::{Harness, Options, sleep};
use super::report::{Report, Target};
use super::run::{Scenario, new_report, ownership_targets, prepare, primaries};
use crate::rtp_receiver::Arrival;
use crate::sim::stats::Summary;
use crate::targets;
use crate::testbed::{TestbedError, node_addr, unix_ms};
use baton_node::views::Session;

/// How long each cut is held: long enough for the others to declare the
/// victim dead and take its sessions over, several fence bounds.
pub const HOLD: Duration = Duration::from_secs(8);

/// How often the nodes' APIs are polled during a cut.
const POLL: Duration = Duration::from_millis(100);

/// Which way a victim is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Everything sent to it is dropped: it sends, but hears nothing.
    CannotHear,
    /// Everything it sends is dropped: it hears, but nobody hears it.
    CannotSend,
}

/// What one one-way cut showed.
#[derive(Debug, Clone, Serialize)]
pub struct CutResult {
    /// Which way.
    pub direction: Direction,
    /// The victim's name.
    pub victim: String,
    /// Sessions it was primary of before the cut.
    pub hosted_before: usize,
    /// Cut until its `baton_fenced` gauge read 1, ms (None: never).
    pub fenced_ms: Option<f64>,
    /// Cut until its API showed it hosting nothing, ms (None: never).
    pub stopped_serving_ms: Option<f64>,
    /// Cut until the last packet a client heard from it, ms (0 when it
    /// cannot send).
    pub last_heard_ms: f64,
    /// The longest a client heard two senders at once during the cut,
    /// ms (100 ms bins).
    pub double_heard_ms: f64,
    /// The longest two nodes' APIs both said they host one session during
    /// the cut, ms (polled every 100 ms).
    pub double_hosted_ms: f64,
    /// Sessions it started or claimed while cut (its events, and the
    /// histories the others hold): must be 0.
    pub claims: usize,
    /// Members it declared dead while cut: must be 0.
    pub deaths_declared: usize,
    /// Its sessions the others took over during the cut.
    pub taken_over: usize,
    /// Heal until every session had exactly one host and every node named
    /// the same primary, ms (None: not within 30 s).
    pub one_owner_after_heal_ms: Option<f64>,
    /// Heal until its gauge read 0 again, ms.
    pub unfenced_ms: Option<f64>,
    /// Sessions lost and doubly owned 10 s after the heal.
    pub sessions_lost: usize,
    /// See `sessions_lost`.
    pub double_owned: usize,
}

/// Whether node `i`'s `baton_fenced` gauge reads 1.
fn fenced(h: &Harness, i: usize) -> Option<bool> {
    let text = h.tb.get_text(i, "/metrics").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("baton_fenced "))
        .map(|v| v.trim() == "1")
}

/// Sessions node `i`'s API says it hosts (active), or None when it does
/// not answer.
fn hosted_by(h: &Harness, i: usize) -> Option<Vec<String>> {
    let list: Vec<Session> = h.tb.get(i, "/v1/sessions").ok()?;
    Some(
        list.into_iter()
            .filter(|s| s.hosted_here && s.state == "active")
            .map(|s| s.id)
            .collect(),
    )
}

/// The longest run of consecutive 100 ms bins (from `from`) in which
/// packets came from two senders or more, ms.
pub fn longest_double_heard(arrivals: &[Arrival], from: Instant) -> f64 {
    let (mut longest, mut run, mut last) = (0u128, 0u128, None::<u128>);
    for bin in super::harness::two_sender_bins(arrivals, from) {
        run = if last == Some(bin.wrapping_sub(1)) {
            run + 1
        } else {
            1
        };
        last = Some(bin);
        longest = longest.max(run);
    }
    (longest * 100) as f64
}

/// `cut`: see the module.
pub fn cut(opts: &Options) -> Result<Report, TestbedError> {
    let mut report = new_report(Scenario::Cut, opts, opts.loss);
    let h = prepare(opts, &mut report)?;
    let n = h.tb.nodes.len();
    let bound = targets::FENCE_MS.on(opts.wan.is_some());
    let mut results = Vec::new();
    let mut victims_so_far: Vec<usize> = Vec::new();
    for k in 0..opts.faults.max(1) {
        let direction = if k % 2 == 0 {
            Direction::CannotHear
        } else {
            Direction::CannotSend
        };
        let before = primaries(&h, 0);
        // The node that is primary of the most sessions, preferring one not
        // cut yet.
        let mut per_node = vec![0usize; n];
        for p in before.iter().flatten() {
            per_node[*p] += 1;
        }
        let victim = (0..n)
            .max_by_key(|i| (per_node[*i], !victims_so_far.contains(i), n - i))
            .unwrap_or(0);
        victims_so_far.push(victim);
        let affected: Vec<usize> = (0..before.len())
            .filter(|s| before[*s] == Some(victim))
            .collect();
        let others: Vec<usize> = (0..n).filter(|i| *i != victim).collect();
        let name = h.tb.nodes[victim].name.clone();
        let victim_id = h.ids[victim].clone();
        let cut_at = Instant::now();
        let cut_ms = unix_ms();
        match direction {
            Direction::CannotHear => h.tb.cut_inbound(&[victim]),
            Direction::CannotSend => h.tb.cut(&[victim], true),
        }
        let (mut fenced_ms, mut stopped_ms) = (None, None);
        let mut doubles: HashMap<String, (Option<Instant>, Duration)> = HashMap::new();
        while cut_at.elapsed() < HOLD {
            let t = cut_at.elapsed().as_secs_f64() * 1e3;
            if fenced_ms.is_none() && fenced(&h, victim) == Some(true) {
                fenced_ms = Some(t);
            }
            match hosted_by(&h, victim) {
                Some(v) if v.is_empty() => {
                    stopped_ms.get_or_insert(t);
                }
                Some(_) => stopped_ms = None,
                None => {}
            }
            let hosts = h.hosts();
            let now = Instant::now();
            for s in &h.sessions {
                let two = hosts.get(&s.id).is_some_and(|v| v.len() > 1);
                let d = doubles.entry(s.id.clone()).or_default();
                match (two, d.0) {
                    (true, None) => d.0 = Some(now),
                    (true, Some(since)) => d.1 = d.1.max(now - since),
                    (false, _) => d.0 = None,
                }
            }
            sleep(POLL)?;
        }
        // What the others made of the victim's sessions, and what the
        // clients heard during the cut.
        let taken_over = affected
            .iter()
            .filter(|s| h.primary_of(**s, others[0]).is_some_and(|p| p != victim))
            .count();
        let victim_addr = node_addr(victim);
        let mut double_heard: f64 = 0.0;
        let mut last_heard: f64 = 0.0;
        for s in &h.sessions {
            let arrivals: Vec<Arrival> = s
                .receiver
                .arrivals()
                .into_iter()
                .filter(|a| a.at >= cut_at)
                .collect();
            double_heard = double_heard.max(longest_double_heard(&arrivals, cut_at));
            if let Some(a) = arrivals.iter().rev().find(|a| a.from.ip() == victim_addr) {
                last_heard = last_heard.max(a.at.duration_since(cut_at).as_secs_f64() * 1e3);
            }
        }
        let double_hosted = doubles
            .values()
            .map(|d| d.1.as_secs_f64() * 1e3)
            .fold(0.0, f64::max);
        let heal_ms = unix_ms();
        let in_cut = |at: f64| at >= cut_ms && at <= heal_ms;
        let started = h
            .events_where(|e| {
                e.observer == victim
                    && e.kind == "session"
                    && e.state == "started"
                    && in_cut(e.at_ms)
            })
            .len();
        let deaths_declared = h
            .events_where(|e| {
                e.observer == victim && e.kind == "member" && e.state == "dead" && in_cut(e.at_ms)
            })
            .len();
        let heal_at = Instant::now();
        h.tb.heal_all();
        // Until every session has one host and one primary everywhere.
        let mut one_owner = None;
        let mut unfenced = None;
        while heal_at.elapsed() < Duration::from_secs(30) {
            let t = heal_at.elapsed().as_secs_f64() * 1e3;
            if unfenced.is_none() && fenced(&h, victim) == Some(false) {
                unfenced = Some(t);
            }
            if one_owner.is_none() {
                let hosts = h.hosts();
                let single = h
                    .sessions
                    .iter()
                    .all(|s| hosts.get(&s.id).map_or(0, Vec::len) == 1);
                let first = primaries(&h, 0);
                let agreed = single
                    && first.iter().all(Option::is_some)
                    && (1..n).all(|i| primaries(&h, i) == first);
                if agreed {
                    one_owner = Some(t);
                }
            }
            if one_owner.is_some() && unfenced.is_some() {
                break;
            }
            sleep(POLL)?;
        }
        sleep((heal_at + Duration::from_secs(10)).saturating_duration_since(Instant::now()))?;
        let (lost, double, notes) = h.ownership();
        // Claims the others recorded: a change of primary to the victim
        // written while it was cut.
        let recorded_claims =
            h.tb.get::<Vec<Session>>(others[0], "/v1/sessions")
                .map(|list| {
                    list.iter()
                        .flat_map(|s| s.history.iter())
                        .filter(|m| m.primary == victim_id && in_cut(m.at_ms as f64))
                        .count()
                })
                .unwrap_or(0);
        let result = CutResult {
            direction,
            victim: name.clone(),
            hosted_before: affected.len(),
            fenced_ms,
            stopped_serving_ms: stopped_ms,
            last_heard_ms: last_heard,
            double_heard_ms: double_heard,
            double_hosted_ms: double_hosted,
            claims: started + recorded_claims,
            deaths_declared,
            taken_over,
            one_owner_after_heal_ms: one_owner,
            unfenced_ms: unfenced,
            sessions_lost: lost,
            double_owned: double,
        };
        let ms = |v: Option<f64>| v.map_or_else(|| "never".to_string(), |v| format!("{v:.0} ms"));
        let line = format!(
            "cut {} ({:?}): {name}, primary of {} session(s), fenced after {}, hosting nothing after {}, last heard by a client {:.0} ms after the cut; two senders heard for {:.0} ms, hosted twice for {:.0} ms; {} claim(s), {} death(s) declared by it; {} of its sessions taken over; one owner {} after the heal, unfenced after {}; 10 s later {lost} lost, {double} doubly owned {}",
            k + 1,
            direction,
            affected.len(),
            ms(fenced_ms),
            ms(stopped_ms),
            last_heard,
            double_heard,
            double_hosted,
            result.claims,
            deaths_declared,
            taken_over,
            ms(one_owner),
            ms(unfenced),
            notes.join("; ")
        );
        eprintln!("{line}");
        report.timeline.push(line);
        results.push(result);
        h.tb.wait_converged(Duration::from_secs(60))?;
        sleep(Duration::from_secs(2))?;
    }
    let worst = |f: &dyn Fn(&CutResult) -> Option<f64>| -> Option<f64> {
        results
            .iter()
            .map(f)
            .try_fold(0.0f64, |acc, v| v.map(|v| acc.max(v)))
    };
    let fence = worst(&|r| r.fenced_ms);
    let stop = worst(&|r| r.stopped_serving_ms);
    let heard = worst(&|r| Some(r.last_heard_ms));
    let double_heard = worst(&|r| Some(r.double_heard_ms));
    let double_hosted = worst(&|r| Some(r.double_hosted_ms));
    let heal = worst(&|r| r.one_owner_after_heal_ms);
    let claims: usize = results.iter().map(|r| r.claims).sum();
    let deaths: usize = results.iter().map(|r| r.deaths_declared).sum();
    report.sessions_lost = Some(results.iter().map(|r| r.sessions_lost).sum());
    report.double_owned = Some(results.iter().map(|r| r.double_owned).sum());
    let net = if opts.wan.is_some() { "WAN" } else { "LAN" };
    for (what, value) in [
        ("cut until the victim is fenced", fence),
        ("cut until the victim hosts nothing", stop),
        ("cut until a client last hears the victim", heard),
        ("two senders heard by one client", double_heard),
        ("one session hosted by two nodes", double_hosted),
    ] {
        report.targets.push(Target::at_most(
            &format!("{what}, worst cut ({net})"),
            value,
            bound,
            "ms",
        ));
    }
    report.targets.push(Target::at_most(
        "sessions the cut victim claimed",
        Some(claims as f64),
        0.0,
        "",
    ));
    report.targets.push(Target::at_most(
        "members the cut victim declared dead",
        Some(deaths as f64),
        0.0,
        "",
    ));
    report.targets.push(Target::at_most(
        "heal until one owner per session, agreed by every node, worst",
        heal,
        20_000.0,
        "ms",
    ));
    ownership_targets(&mut report);
    let fences: Vec<f64> = results.iter().filter_map(|r| r.fenced_ms).collect();
    report.details = json!({
        "cuts": results,
        "fence_bound_ms": bound,
        "hold_ms": HOLD.as_millis() as u64,
        "fenced_ms": Summary::of(&fences),
    });
    report.clients = h.clients();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn arrival(at: Instant, from: SocketAddr) -> Arrival {
        Arrival {
            at,
            unix_us: 0,
            from,
            seq: 0,
            ts: 0,
            ssrc: 1,
            marker: false,
            payload_type: 0,
            len: 12,
            hash: 0,
            payload: Vec::new(),
        }
    }

    #[test]
    fn the_longest_run_of_bins_with_two_senders_is_measured() {
        let t0 = Instant::now();
        let a: SocketAddr = "198.18.1.2:9".parse().unwrap();
        let b: SocketAddr = "198.18.1.3:9".parse().unwrap();
        let ms = |m| t0 + Duration::from_millis(m);
        // Both from 0 to 300 ms (bins 0-2), b alone, both again in bin 9.
        let mut v: Vec<Arrival> = (0..15)
            .map(|k| arrival(ms(k * 20), if k % 2 == 0 { a } else { b }))
            .collect();
        v.extend((0..5).map(|k| arrival(ms(400 + k * 100), b)));
        v.push(arrival(ms(910), a));
        v.push(arrival(ms(950), b));
        assert_eq!(longest_double_heard(&v, t0), 300.0);
        assert_eq!(longest_double_heard(&v[15..], t0), 100.0);
        assert_eq!(longest_double_heard(&[], t0), 0.0);
    }
}
