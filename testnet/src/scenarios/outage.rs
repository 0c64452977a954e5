//! `testnet run outage`: a whole region fails at once, on the WAN matrix.
//! Every node of the region is killed with SIGKILL together (or, with
//! `--cut`, cut off both ways from every other node and the client), held
//! down for [`HOLD`], restarted (healed), and again `--faults` times. The
//! nodes carry a `region` tag, so the default placement (`spread`) keeps a
//! backup of each session outside its primary's region: a session whose
//! primary was in the failed region must be taken over by a node elsewhere
//! and heard again by its client. Only a session whose primary and every
//! backup were all in the region may be lost; those are counted apart.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;

use super::harness::{Harness, Options, sleep};
use super::report::{Report, Target};
use super::run::{Scenario, new_report, prepare};
use crate::plot::{Plot, Style, cdf};
use crate::sim::stats::Summary;
use crate::targets;
use crate::testbed::{TestbedError, region_tag_value};
use baton_node::views::{Member, Session};

/// How long the region stays down (cut) before it is restarted (healed);
/// the sessions are counted at its end: lost if no surviving node hosts
/// them or their client heard nothing in its last 2 s.
pub const HOLD: Duration = Duration::from_secs(10);

/// How often the nodes' APIs are polled during the outage.
const POLL: Duration = Duration::from_millis(100);

/// What one region outage showed.
#[derive(Debug, Clone, Serialize)]
pub struct OutageResult {
    /// The failed region.
    pub region: String,
    /// `kill` or `cut`.
    pub variant: &'static str,
    /// Its nodes.
    pub nodes: Vec<String>,
    /// Sessions hosted before the outage whose primary was in the region.
    pub primary_in_region: usize,
    /// Of those, the ones with a backup outside the region: they must
    /// survive.
    pub with_backup_outside: usize,
    /// Sessions whose primary and every backup were in the region: they may
    /// be lost.
    pub all_replicas_in_region: usize,
    /// Sessions no node hosted before the outage (lost earlier), left out.
    pub already_lost: usize,
    /// Client gap of each session with its primary in the region and a
    /// backup outside it that its client heard again within the hold, ms.
    pub gaps_ms: Vec<f64>,
    /// Outage until a node outside the region hosted it, ms, per session
    /// with its primary in the region and a backup outside (None: not
    /// within the hold).
    pub new_owner_ms: Vec<Option<f64>>,
    /// Sessions with a backup outside the region lost at the end of the
    /// hold (no surviving node hosts it, or its client heard nothing in
    /// the last 2 s): must be 0.
    pub sessions_lost: usize,
    /// Sessions with every replica in the region lost at the end of the
    /// hold (allowed).
    pub lost_all_in_region: usize,
    /// Sessions hosted by two surviving nodes, or heard from two senders
    /// in the last 2 s, at the end of the hold.
    pub double_owned: usize,
    /// Restart (heal) until every session not lost had exactly one host,
    /// ms (None: not within 30 s).
    pub one_owner_after_restore_ms: Option<f64>,
    /// 10 s after the restart (heal): sessions with a backup outside the
    /// region lost, and doubly owned sessions.
    pub lost_after_restore: usize,
    /// See `lost_after_restore`.
    pub double_owned_after_restore: usize,
    /// Sessions with every replica in the region that are hosted again
    /// 10 s after the restart (heal).
    pub all_in_region_back: usize,
}

/// A session's replicas as indices of nodes: (primary, backups).
type Replicas = (Option<usize>, Vec<usize>);

/// Every session's replicas as node `observer` records them.
fn replicas(h: &Harness, observer: usize) -> HashMap<String, Replicas> {
    let index = |id: &str| h.ids.iter().position(|i| i == id);
    h.tb.get::<Vec<Session>>(observer, "/v1/sessions")
        .map(|list| {
            list.into_iter()
                .map(|s| {
                    let backups = s.backups.iter().filter_map(|b| index(b)).collect();
                    (s.id, (index(&s.primary), backups))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The region an outage takes: `wanted` when given (checked against the
/// nodes' regions), else, among the regions not `taken` yet (all of them
/// once every one was), the one holding the primaries of the most
/// sessions, the first on a tie.
pub fn choose_region(
    regions: &[String],
    primaries: &[Option<usize>],
    wanted: Option<&str>,
    taken: &[String],
) -> Result<String, String> {
    let mut names: Vec<&String> = Vec::new();
    for r in regions {
        if !names.contains(&r) {
            names.push(r);
        }
    }
    if names.len() < 2 {
        return Err(format!(
            "the nodes are all in one region ({}): an outage needs nodes in at least two (more --nodes, or --regions)",
            names.first().map_or("none", |r| r.as_str())
        ));
    }
    if let Some(w) = wanted {
        return names
            .iter()
            .find(|r| r.as_str() == w)
            .map(|r| (*r).clone())
            .ok_or_else(|| {
                format!(
                    "--region {w}: no node is in it; the nodes are in {}",
                    names
                        .iter()
                        .map(|r| r.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            });
    }
    let count = |r: &str| {
        primaries
            .iter()
            .flatten()
            .filter(|p| regions.get(**p).is_some_and(|x| x == r))
            .count()
    };
    // Rotating: the regions not taken yet in this round (all of them
    // again once every one was).
    let mut fresh: Vec<&String> = names
        .iter()
        .copied()
        .filter(|r| !taken.contains(r))
        .collect();
    if fresh.is_empty() {
        fresh = names;
    }
    let best = fresh
        .iter()
        .enumerate()
        .max_by_key(|(k, r)| (count(r), fresh.len() - k))
        .map(|(_, r)| (*r).clone());
    best.ok_or_else(|| "no region".into())
}

/// Sessions lost and doubly owned now, counting only hosts in `alive`: (ids
/// lost, ids doubly owned).
fn census(h: &Harness, alive: &[usize]) -> (Vec<String>, Vec<String>) {
    let hosts = h.hosts();
    let since = Instant::now() - Duration::from_secs(2);
    let (mut lost, mut double) = (Vec::new(), Vec::new());
    for s in &h.sessions {
        let owners = hosts
            .get(&s.id)
            .map_or(0, |v| v.iter().filter(|i| alive.contains(i)).count());
        let recent = s.receiver.report(since..);
        if owners == 0 || recent.packets == 0 {
            lost.push(s.id.clone());
        } else if owners > 1 || recent.sources.len() > 1 {
            double.push(s.id.clone());
        }
    }
    (lost, double)
}

/// `outage`: see the module.
pub fn outage(opts: &Options) -> Result<Report, TestbedError> {
    if opts.wan.is_none() {
        return Err(TestbedError::Invalid(
            "outage runs on the WAN matrix: add --wan (with --regions K for several nodes per region)"
                .into(),
        ));
    }
    let mut report = new_report(Scenario::Outage, opts, opts.loss);
    let mut h = prepare(opts, &mut report)?;
    let n = h.tb.nodes.len();
    let regions: Vec<String> = h.tb.nodes.iter().map(|x| x.region.clone()).collect();
    let first =
        choose_region(&regions, &[], opts.region.as_deref(), &[]).map_err(TestbedError::Invalid)?;
    // Some sessions must have their primary in the region asked for: the
    // node asked to open a session is nearest to itself, so it usually
    // becomes the primary.
    if opts.region.is_some() {
        let all = replicas(&h, 0);
        let held = all
            .values()
            .filter(|(p, _)| p.is_some_and(|p| regions[p] == first))
            .count();
        if held == 0 {
            let on: Vec<usize> = (0..n).filter(|i| regions[*i] == first).collect();
            eprintln!(
                "no session has its primary in {first}: opening {} more there",
                on.len()
            );
            h.open_sessions_on(&on)?;
            sleep(Duration::from_secs(3))?;
        }
    }
    report.sessions = h.sessions.len();
    // Each node's region as n1 hears it announced (its `region` tag):
    // placement spreads backups over these.
    let announced: BTreeMap<String, Option<String>> =
        h.tb.get::<Vec<Member>>(0, "/v1/members")
            .unwrap_or_default()
            .into_iter()
            .map(|m| (m.name, m.tags.get("region").cloned()))
            .collect();
    let untagged =
        h.tb.nodes
            .iter()
            .filter(|x| {
                announced.get(&x.name).cloned().flatten().as_deref()
                    != Some(&*region_tag_value(&x.region))
            })
            .count();
    report.targets.push(Target::at_most(
        "nodes not announcing their region (the `region` tag, as n1 hears it)",
        Some(untagged as f64),
        0.0,
        "",
    ));
    let variant = if opts.cut { "cut" } else { "kill" };
    let mut results: Vec<OutageResult> = Vec::new();
    let mut taken: Vec<String> = Vec::new();
    for k in 0..opts.faults.max(1) {
        // The records as a node that is up sees them.
        let observer = (0..n).find(|i| h.tb.nodes[*i].is_running()).unwrap_or(0);
        let records = replicas(&h, observer);
        let primaries: Vec<Option<usize>> = h
            .sessions
            .iter()
            .map(|s| records.get(&s.id).and_then(|r| r.0))
            .collect();
        let region = choose_region(&regions, &primaries, opts.region.as_deref(), &taken)
            .map_err(TestbedError::Invalid)?;
        taken.push(region.clone());
        let group: Vec<usize> = (0..n).filter(|i| regions[*i] == region).collect();
        let others: Vec<usize> = (0..n).filter(|i| regions[*i] != region).collect();
        let names: Vec<String> = group.iter().map(|i| h.tb.nodes[*i].name.clone()).collect();
        let hosted_before = h.hosts();
        let in_group = |i: &usize| group.contains(i);
        let (mut affected, mut all_in, mut already_lost) = (Vec::new(), Vec::new(), 0);
        for (s, sess) in h.sessions.iter().enumerate() {
            if !hosted_before.contains_key(&sess.id) {
                already_lost += 1;
                continue;
            }
            let Some((primary, backups)) = records.get(&sess.id) else {
                continue;
            };
            let primary_in = primary.as_ref().is_some_and(in_group);
            if primary_in && backups.iter().all(in_group) {
                all_in.push(s);
            } else if primary_in {
                affected.push(s);
            }
        }
        let counts: Vec<usize> = h.sessions.iter().map(|s| s.receiver.len()).collect();
        let at = Instant::now();
        if opts.cut {
            h.tb.cut(&group, false);
        } else {
            h.tb.kill_many(&group);
        }
        // Until a node outside the region hosts each affected session.
        let mut new_owner: Vec<Option<f64>> = vec![None; affected.len()];
        while at.elapsed() < HOLD {
            let hosts = h.hosts();
            let t = at.elapsed().as_secs_f64() * 1e3;
            for (j, &s) in affected.iter().enumerate() {
                let outside = hosts
                    .get(&h.sessions[s].id)
                    .is_some_and(|v| v.iter().any(|i| others.contains(i)));
                if new_owner[j].is_none() && outside {
                    new_owner[j] = Some(t);
                }
            }
            sleep(POLL)?;
        }
        // What the clients of the affected sessions heard.
        let now = Instant::now();
        let gaps: Vec<f64> = affected
            .iter()
            .filter(|s| h.sessions[**s].receiver.len() >= counts[**s] + 10)
            .map(|s| h.gap(*s, at - Duration::from_secs(1), now).longest_gap_ms)
            .collect();
        let all_in_ids: Vec<&str> = all_in.iter().map(|s| h.sessions[*s].id.as_str()).collect();
        let (lost_ids, double_ids) = census(&h, &others);
        let lost_all_in = lost_ids
            .iter()
            .filter(|id| all_in_ids.contains(&id.as_str()))
            .count();
        let lost = lost_ids.len() - lost_all_in;
        // Restore: restart the region's nodes (n1 first: the others join
        // through it), or heal the cut.
        let restore_at = Instant::now();
        if opts.cut {
            h.tb.heal_all();
        } else {
            for &i in &group {
                h.tb.start(i)?;
                h.tb.wait_api(i, Duration::from_secs(15))?;
                h.follow(i)?;
            }
        }
        let mut one_owner = None;
        while restore_at.elapsed() < Duration::from_secs(30) {
            let hosts = h.hosts();
            let single = h.sessions.iter().all(|s| {
                let c = hosts.get(&s.id).map_or(0, Vec::len);
                c == 1 || (c == 0 && lost_ids.contains(&s.id))
            });
            if single {
                one_owner = Some(restore_at.elapsed().as_secs_f64() * 1e3);
                break;
            }
            sleep(POLL)?;
        }
        sleep((restore_at + Duration::from_secs(10)).saturating_duration_since(Instant::now()))?;
        let everyone: Vec<usize> = (0..n).collect();
        let (lost_after, double_after) = census(&h, &everyone);
        let lost_after_counted = lost_after
            .iter()
            .filter(|id| !all_in_ids.contains(&id.as_str()) && !lost_ids.contains(id))
            .count();
        let all_in_back = all_in_ids
            .iter()
            .filter(|id| !lost_after.iter().any(|l| l == *id))
            .count();
        let result = OutageResult {
            region: region.clone(),
            variant,
            nodes: names.clone(),
            primary_in_region: affected.len() + all_in.len(),
            with_backup_outside: affected.len(),
            all_replicas_in_region: all_in.len(),
            already_lost,
            gaps_ms: gaps.clone(),
            new_owner_ms: new_owner.clone(),
            sessions_lost: lost,
            lost_all_in_region: lost_all_in,
            double_owned: double_ids.len(),
            one_owner_after_restore_ms: one_owner,
            lost_after_restore: lost_after_counted,
            double_owned_after_restore: double_after.len(),
            all_in_region_back: all_in_back,
        };
        let line = format!(
            "outage {} ({variant}): region {region} ({}) down for {} s; primary of {} session(s) in it, {} with a backup outside, {} with every replica in it; new owner outside after {:?} ms; client gaps {:?} ms; at the end {lost} lost with a backup outside, {lost_all_in} lost with every replica in the region, {} doubly owned {}; one owner per session {} after the {}; 10 s later {lost_after_counted} more lost, {} doubly owned",
            k + 1,
            names.join(","),
            HOLD.as_secs(),
            result.primary_in_region,
            affected.len(),
            all_in.len(),
            new_owner
                .iter()
                .map(|v| v.map(f64::round))
                .collect::<Vec<_>>(),
            gaps.iter().map(|g| g.round()).collect::<Vec<_>>(),
            double_ids.len(),
            if lost_ids.is_empty() {
                String::new()
            } else {
                format!("(lost: {})", lost_ids.join(", "))
            },
            one_owner
                .map(|v| format!("{v:.0} ms"))
                .unwrap_or_else(|| "never (30 s)".into()),
            if opts.cut { "heal" } else { "restart" },
            double_after.len(),
        );
        eprintln!("{line}");
        report.timeline.push(line);
        results.push(result);
        h.tb.wait_converged(Duration::from_secs(60))?;
        sleep(Duration::from_secs(2))?;
    }
    let gaps: Vec<f64> = results.iter().flat_map(|r| r.gaps_ms.clone()).collect();
    let owners: Vec<f64> = results
        .iter()
        .flat_map(|r| r.new_owner_ms.iter().flatten().copied())
        .collect();
    let sum = |f: &dyn Fn(&OutageResult) -> usize| -> usize { results.iter().map(f).sum() };
    let covered = sum(&|r| r.with_backup_outside);
    let resumed = gaps.len();
    let all_in = sum(&|r| r.all_replicas_in_region);
    let lost_all_in = sum(&|r| r.lost_all_in_region);
    report.gap_ms = Some(Summary::of(&gaps));
    report.sessions_lost = Some(sum(&|r| r.sessions_lost + r.lost_after_restore));
    report.double_owned = Some(sum(&|r| r.double_owned + r.double_owned_after_restore));
    report.targets.push(Target::at_least(
        "sessions with their primary in the failed region and a backup outside it, over the outages",
        Some(covered as f64),
        1.0,
        "",
    ));
    report.targets.push(Target::at_most(
        "of those, not heard by their client again within the hold",
        Some((covered - resumed) as f64),
        0.0,
        "",
    ));
    report.targets.push(Target::at_most(
        "client gap p99, primary in the failed region (WAN kill target)",
        report.gap_ms.and_then(|s| s.p99),
        targets::GAP_P99_MS.wan,
        "ms",
    ));
    report.targets.push(Target::at_most(
        &format!(
            "sessions with a backup outside the failed region lost {} s into the outage or 10 s after the restore",
            HOLD.as_secs()
        ),
        report.sessions_lost.map(|v| v as f64),
        targets::OUTAGE_SESSIONS_LOST,
        "",
    ));
    report.targets.push(Target::at_most(
        "sessions doubly owned at the end of the outage or 10 s after the restore",
        report.double_owned.map(|v| v as f64),
        targets::SESSIONS_DOUBLY_OWNED,
        "",
    ));
    report.targets.push(Target::at_most(
        "restores after which some session never had exactly one owner within 30 s",
        Some(
            results
                .iter()
                .filter(|r| r.one_owner_after_restore_ms.is_none())
                .count() as f64,
        ),
        0.0,
        "",
    ));
    report.timeline.push(format!(
        "over {} outage(s): {covered} session(s) with a backup outside the region, {resumed} heard again; {all_in} with every replica in the region (allowed to be lost), {lost_all_in} of them lost",
        results.len()
    ));
    report.details = json!({
        "outages": results,
        "variant": variant,
        "hold_ms": HOLD.as_millis() as u64,
        "with_backup_outside": covered,
        "resumed": resumed,
        "all_replicas_in_region": all_in,
        "lost_all_in_region": lost_all_in,
        "new_owner_ms": Summary::of(&owners),
        "gap_limit_ms": targets::GAP_P99_MS.wan,
        "announced_regions": announced,
    });
    report.plots.push((
        "gap.svg".into(),
        Plot::new(
            "Client gap when the primary's region fails (CDF)",
            "ms",
            "fraction",
        )
        .series("sessions of the failed region", Style::Step, cdf(&gaps)),
    ));
    report.plots.push((
        "new-owner.svg".into(),
        Plot::new(
            "Outage until a node outside the region hosts the session (CDF)",
            "ms",
            "fraction",
        )
        .series("sessions of the failed region", Style::Step, cdf(&owners)),
    ));
    report.clients = h.clients();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regions() -> Vec<String> {
        ["a", "b", "c", "a", "b", "c"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    #[test]
    fn the_region_with_the_most_primaries_fails_first_then_a_fresh_one() {
        let r = regions();
        // Primaries on n2, n5 (region b) and n3 (c).
        let p = [Some(1), Some(4), Some(2), None];
        assert_eq!(choose_region(&r, &p, None, &[]).unwrap(), "b");
        // b taken already: c holds more primaries than a.
        assert_eq!(choose_region(&r, &p, None, &["b".into()]).unwrap(), "c");
        // With no primaries anywhere, the first not taken.
        assert_eq!(choose_region(&r, &[], None, &[]).unwrap(), "a");
        assert_eq!(choose_region(&r, &[], None, &["a".into()]).unwrap(), "b");
        // Every region taken: a new round, by primaries again.
        let all: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        assert_eq!(choose_region(&r, &p, None, &all).unwrap(), "b");
        // A region asked for is taken every time.
        assert_eq!(choose_region(&r, &p, Some("a"), &all).unwrap(), "a");
    }

    #[test]
    fn a_region_asked_for_must_hold_nodes_and_there_must_be_two() {
        let r = regions();
        assert_eq!(choose_region(&r, &[], Some("c"), &[]).unwrap(), "c");
        let e = choose_region(&r, &[], Some("zz"), &[]).unwrap_err();
        assert!(e.contains("a, b, c"), "{e}");
        let lone = vec!["a".to_string(); 3];
        let e = choose_region(&lone, &[], None, &[]).unwrap_err();
        assert!(e.contains("at least two"), "{e}");
    }
}
