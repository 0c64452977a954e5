//! Unit tests of single SWIM transitions: feed one input, assert the exact
//! output (openraft's style).

use super::*;
use rand::SeedableRng;
use rand::rngs::SmallRng;

fn id(n: u32) -> NodeId {
    NodeId::synthetic(n)
}

fn alive(n: u32, incarnation: u32) -> Update {
    Update::Alive {
        id: id(n),
        incarnation,
        meta: Vec::new(),
    }
}

struct Harness {
    swim: Swim<SmallRng>,
    now: Instant,
}

impl Harness {
    /// Node 0, knowing members `1..=members`, every output drained.
    fn new(members: u32) -> Self {
        Self::with_seed(members, 7)
    }

    /// [`Harness::new`] with node 0's RNG seeded with `seed`, and SWIM's
    /// `k = 3` relays (the numbers of these tests were worked out with it;
    /// `lan()`'s own 5 is tested on its own).
    fn with_seed(members: u32, seed: u64) -> Self {
        Self::with_config(
            members,
            seed,
            Config {
                indirect_probes: 3,
                ..Config::lan()
            },
        )
    }

    /// [`Harness::with_seed`] with node 0 running `config`.
    fn with_config(members: u32, seed: u64, config: Config) -> Self {
        let now = Instant::now();
        let swim = Swim::new(
            id(0),
            Vec::new(),
            config,
            SmallRng::seed_from_u64(seed),
            now,
        );
        let mut h = Harness { swim, now };
        if members > 0 {
            h.recv(
                1,
                Message::Gossip(Gossip {
                    updates: (1..=members).map(|n| alive(n, 0)).collect(),
                }),
            );
        }
        // Let the broadcast queue empty out, so that later piggybacks only
        // carry what each test is about.
        h.swim.broadcasts.clear();
        h.drain();
        h.events();
        h
    }

    fn recv(&mut self, from: u32, message: Message) {
        self.swim.handle_message(self.now, id(from), message);
    }

    /// `from` answers the probe `seq`.
    fn recv_ack(&mut self, from: &NodeId, seq: u16) {
        self.swim.handle_message(
            self.now,
            from.clone(),
            Message::Ack(Ack {
                seq,
                coord: None,
                updates: vec![],
            }),
        );
    }

    /// Lets `by` pass with the node running: every timer fires when due
    /// (a node that was not running is simulated by moving `now` instead).
    fn advance(&mut self, by: Duration) {
        let end = self.now + by;
        while let Some(next) = self.swim.poll_timeout() {
            if next > end {
                break;
            }
            self.now = self.now.max(next);
            self.swim.handle_timeout(self.now);
        }
        self.now = end;
        self.swim.handle_timeout(self.now);
    }

    /// Advances to the next timer and fires it.
    fn fire_next(&mut self) {
        let at = self.swim.poll_timeout().expect("a timer is always armed");
        self.now = self.now.max(at);
        self.swim.handle_timeout(self.now);
    }

    fn drain(&mut self) -> Vec<Transmit> {
        std::iter::from_fn(|| self.swim.poll_transmit()).collect()
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.swim.poll_event()).collect()
    }

    /// Starts a probe round and returns the probe's target and sequence.
    /// Later rounds are cancelled, so that each test watches one probe.
    fn probe(&mut self) -> (NodeId, u16) {
        self.fire_next();
        self.swim.timers.retain(|s| s.timer != Timer::ProbeRound);
        let out = self.drain();
        assert_eq!(out.len(), 1, "one ping per round: {out:?}");
        match &out[0].message {
            Message::Ping(ping) => (out[0].to.clone(), ping.seq),
            other => panic!("expected a ping, got {other:?}"),
        }
    }

    /// Fires the open probe's direct timeout and returns the first relay
    /// asked for a ping-req.
    fn first_relay(&mut self) -> NodeId {
        self.fire_next();
        self.drain()
            .into_iter()
            .find(|t| matches!(t.message, Message::PingReq(_)))
            .expect("a ping-req")
            .to
    }

    /// Runs a probe whose target never answers, up to the suspicion.
    fn failed_probe(&mut self) -> NodeId {
        let (target, _) = self.probe();
        self.fire_next(); // direct timeout: ping-reqs
        self.drain();
        self.fire_next(); // indirect timeout: suspicion
        target
    }

    fn state_of(&self, n: &NodeId) -> State {
        self.swim.member(n).expect("member").state
    }
}

fn gossip_to(out: &[Transmit]) -> Vec<(NodeId, Vec<Update>)> {
    out.iter()
        .filter_map(|t| match &t.message {
            Message::Gossip(g) => Some((t.to.clone(), g.updates.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn new_members_are_announced_once_each() {
    let now = Instant::now();
    let mut swim = Swim::new(
        id(0),
        Vec::new(),
        Config::lan(),
        SmallRng::seed_from_u64(1),
        now,
    );
    swim.handle_message(
        now,
        id(1),
        Message::Gossip(Gossip {
            updates: vec![alive(1, 2)],
        }),
    );
    let events: Vec<Event> = std::iter::from_fn(|| swim.poll_event()).collect();
    assert_eq!(
        events,
        vec![
            Event::MemberState {
                id: id(1),
                state: State::Alive,
                previous: None,
                incarnation: 2
            },
            Event::MemberMeta {
                id: id(1),
                meta: Vec::new(),
                incarnation: 2
            },
        ]
    );
    // The same news again changes nothing and is not spread again.
    let _ = std::iter::from_fn(|| swim.poll_transmit()).count();
    swim.handle_message(
        now,
        id(1),
        Message::Gossip(Gossip {
            updates: vec![alive(1, 2)],
        }),
    );
    assert_eq!(swim.poll_event(), None);
    assert_eq!(swim.poll_transmit(), None);
}

#[test]
fn new_metadata_is_announced_with_the_incarnation_it_came_at() {
    let mut h = Harness::new(2);
    // Member 1 (alive at 0) re-announces at 1 with a new load: its state
    // does not change, so the metadata event alone says the incarnation.
    h.recv(
        1,
        Message::Gossip(Gossip {
            updates: vec![Update::Alive {
                id: id(1),
                incarnation: 1,
                meta: vec![4],
            }],
        }),
    );
    assert_eq!(
        h.events(),
        vec![Event::MemberMeta {
            id: id(1),
            meta: vec![4],
            incarnation: 1
        }]
    );
}

#[test]
fn probe_and_ack_record_the_rtt() {
    let mut h = Harness::new(1);
    let (target, seq) = h.probe();
    assert_eq!(target, id(1));
    h.now += Duration::from_millis(4);
    h.recv(
        1,
        Message::Ack(Ack {
            seq,
            coord: Some(Coordinate::new(&coords::Config::default())),
            updates: vec![],
        }),
    );
    assert_eq!(
        h.events(),
        vec![Event::ProbeRtt {
            id: id(1),
            rtt: Duration::from_millis(4)
        }]
    );
    let member = h.swim.member(&id(1)).unwrap();
    assert_eq!(member.srtt, Some(Duration::from_millis(4)));
    assert!(member.coord.is_some());
    // The direct timeout that follows is stale: nothing happens.
    h.advance(Duration::from_millis(200));
    let out = h.drain();
    assert!(
        out.iter().all(|t| matches!(t.message, Message::Ping(_))),
        "{out:?}"
    );
    assert_eq!(h.swim.local_health(), 0);
}

/// Node 1 pings node 0 (`want_coord` as given); whether node 0's ack
/// carries its coordinate.
fn ack_carries_coord(h: &mut Harness, seq: u16, want_coord: bool) -> bool {
    ack_to_carries_coord(h, 1, seq, want_coord)
}

/// Whether node 0's ack to a ping from member `from` carries its coordinate.
fn ack_to_carries_coord(h: &mut Harness, from: u32, seq: u16, want_coord: bool) -> bool {
    h.recv(
        from,
        Message::Ping(Ping {
            seq,
            want_coord,
            updates: vec![],
        }),
    );
    let out = h.drain();
    assert_eq!(out.len(), 1, "{out:?}");
    match &out[0].message {
        Message::Ack(ack) => ack.coord.is_some(),
        other => panic!("expected an ack, got {other:?}"),
    }
}

#[test]
fn an_ack_carries_the_coordinate_when_asked_or_when_it_moved_since_last_sent() {
    let mut h = Harness::new(1);
    // Never sent by this process: once, unasked (the member may hold one
    // from before a restart, and then it does not ask).
    assert!(ack_carries_coord(&mut h, 1, false));
    // Asked: always.
    assert!(ack_carries_coord(&mut h, 2, true));
    // Sent and unmoved: not again unasked.
    assert!(!ack_carries_coord(&mut h, 3, false));
    // A 200 ms RTT to node 1, whose coordinate sits at the origin, moves
    // node 0's own coordinate by tens of milliseconds.
    let before = h.swim.coordinate().clone();
    let (target, seq) = h.probe();
    assert_eq!(target, id(1));
    h.now += Duration::from_millis(200);
    h.recv(
        1,
        Message::Ack(Ack {
            seq,
            coord: Some(Coordinate::new(&coords::Config::default())),
            updates: vec![],
        }),
    );
    h.drain();
    let moved = h.swim.coordinate().moved_since(&before);
    let distance = h
        .swim
        .coordinate()
        .distance_to(h.swim.member(&id(1)).unwrap().coord.as_ref().unwrap())
        .as_secs_f64();
    assert!(
        moved > (distance * COORD_RESEND_FRACTION).max(COORD_RESEND_FLOOR.as_secs_f64()),
        "moved {moved} s, distance {distance} s"
    );
    // Moved past the bound: sent unasked, once.
    assert!(ack_carries_coord(&mut h, 4, false));
    assert!(!ack_carries_coord(&mut h, 5, false));
    // Counted by why they went: asked once, unasked twice (never sent,
    // moved); the acks without one count nowhere.
    assert_eq!(
        (h.swim.stats().coords_asked, h.swim.stats().coords_unasked),
        (1, 2)
    );
}

#[test]
fn unasked_coordinates_keep_within_their_budget_and_asked_ones_do_not_count() {
    let mut h = Harness::new(30);
    // Nobody was ever sent node 0's coordinate, so every ack would carry
    // it unasked: the bucket lets COORD_RESEND_BURST through at once.
    let burst = COORD_RESEND_BURST as u32;
    let carried = |h: &mut Harness, members: std::ops::RangeInclusive<u32>, seq: u16| {
        members
            .filter(|m| ack_to_carries_coord(h, *m, seq, false))
            .count() as u32
    };
    assert_eq!(carried(&mut h, 1..=10, 1), burst);
    // Asked for, the coordinate always goes and takes nothing.
    assert!(ack_to_carries_coord(&mut h, 11, 2, true));
    assert!(ack_to_carries_coord(&mut h, 12, 2, true));
    // Then one a second (Config::lan: 1.0), however many probers come.
    h.now += Duration::from_secs(2);
    assert_eq!(carried(&mut h, 13..=20, 3), 2);
    h.now += Duration::from_millis(500);
    assert_eq!(carried(&mut h, 21..=30, 4), 0);
    // A long quiet spell refills the bucket to its burst, not beyond.
    h.now += Duration::from_secs(60);
    assert_eq!(carried(&mut h, 21..=30, 5), burst);
    assert_eq!(h.swim.stats().coords_unasked, u64::from(burst) * 2 + 2);
    assert_eq!(h.swim.stats().coords_asked, 2);
}

#[test]
fn ack_from_a_stranger_does_not_complete_a_probe() {
    let mut h = Harness::new(2);
    let (target, seq) = h.probe();
    let stranger = if target == id(1) { 2 } else { 1 };
    h.recv(
        stranger,
        Message::Ack(Ack {
            seq,
            coord: None,
            updates: vec![],
        }),
    );
    assert_eq!(h.events(), vec![]);
    assert!(h.swim.probes.contains_key(&seq));
}

#[test]
fn probe_timeout_sends_ping_req_through_k_other_members() {
    let mut h = Harness::new(5);
    let (target, seq) = h.probe();
    h.fire_next();
    let out = h.drain();
    assert_eq!(out.len(), 3, "{out:?}");
    for t in &out {
        assert_ne!(t.to, target);
        assert_eq!(
            t.message,
            Message::PingReq(PingReq {
                seq,
                target: target.clone(),
                updates: vec![]
            })
        );
    }
    // The deadline of the indirect stage is three direct timeouts after the ping.
    assert_eq!(h.swim.stats().indirect_probes, 1);
}

#[test]
fn the_lan_profile_asks_five_relays_and_a_silent_five_cost_five_health() {
    let mut h = Harness::with_config(8, 7, Config::lan());
    let (target, _) = h.probe();
    h.fire_next();
    let relays: Vec<NodeId> = h.drain().into_iter().map(|t| t.to).collect();
    assert_eq!(relays.len(), 5, "{relays:?}");
    assert!(!relays.contains(&target));
    h.fire_next();
    assert_eq!(h.state_of(&target), State::Suspect);
    assert_eq!(h.swim.local_health(), 5);
}

#[test]
fn indirect_ack_through_a_relay_saves_the_target() {
    let mut h = Harness::new(5);
    let (target, seq) = h.probe();
    h.fire_next();
    let relay = h.drain()[0].to.clone();
    let relay_n = (1..=5).find(|n| id(*n) == relay).unwrap();
    h.recv(
        relay_n,
        Message::Ack(Ack {
            seq,
            coord: None,
            updates: vec![],
        }),
    );
    h.fire_next(); // indirect deadline: stale now
    assert_eq!(h.state_of(&target), State::Alive);
    assert_eq!(h.events(), vec![]);
}

#[test]
fn a_held_ping_is_timed_from_its_release() {
    let mut h = Harness::new(5);
    let (target, seq) = h.probe();
    // The caller has no keys with the target: the ping waits.
    h.swim.probe_held(h.now, seq);
    // Many direct timeouts pass: no ping-req, no suspicion.
    h.advance(Duration::from_millis(600));
    let out = h.drain();
    assert!(
        out.iter()
            .all(|t| !matches!(t.message, Message::PingReq(_))),
        "{out:?}"
    );
    assert_eq!(h.state_of(&target), State::Alive);
    assert_eq!(h.swim.stats().indirect_probes, 0);
    // Released: the round trip counts from now.
    h.swim.probe_released(h.now, seq);
    h.now += Duration::from_millis(3);
    let from = h.swim.member(&target).unwrap().id.clone();
    h.recv_ack(&from, seq);
    assert_eq!(
        h.events(),
        vec![Event::ProbeRtt {
            id: target.clone(),
            rtt: Duration::from_millis(3)
        }]
    );
    assert_eq!(h.swim.local_health(), 0);
}

#[test]
fn a_ping_held_too_long_runs_its_course_and_the_silent_target_is_suspected() {
    let mut h = Harness::new(5);
    let (target, seq) = h.probe();
    h.swim.probe_held(h.now, seq);
    let hold = Config::lan().max_probe_hold;
    h.advance(hold + Duration::from_millis(60));
    let out = h.drain();
    let reqs = out
        .iter()
        .filter(|t| matches!(t.message, Message::PingReq(_)))
        .count();
    assert_eq!(reqs, 3, "indirect probes once the hold ran out: {out:?}");
    // The indirect phase gets its full time, then the target is suspected.
    h.advance(Duration::from_millis(200));
    assert_eq!(h.state_of(&target), State::Suspect);
    assert_eq!(
        h.swim.stats().indirect_probes,
        1,
        "one indirect phase, not one per timer"
    );
}

#[test]
fn a_released_ping_that_is_not_answered_fails_a_timeout_after_its_release() {
    let mut h = Harness::new(5);
    let (target, seq) = h.probe();
    h.swim.probe_held(h.now, seq);
    h.advance(Duration::from_millis(300));
    h.swim.probe_released(h.now, seq);
    h.drain();
    h.advance(Duration::from_millis(10));
    assert!(
        h.drain()
            .iter()
            .all(|t| !matches!(t.message, Message::PingReq(_)))
    );
    h.advance(Duration::from_millis(60));
    let reqs = h
        .drain()
        .iter()
        .filter(|t| matches!(t.message, Message::PingReq(_)))
        .count();
    assert_eq!(reqs, 3);
    h.advance(Duration::from_millis(200));
    assert_eq!(h.state_of(&target), State::Suspect);
}

#[test]
fn releasing_a_ping_that_was_never_held_changes_neither_its_timeout_nor_its_rtt() {
    // The ping left at once: its probe fails a timeout (50 ms) after it
    // left, not a timeout after a stray release.
    let mut h = Harness::new(5);
    let (_, seq) = h.probe();
    h.advance(Duration::from_millis(40));
    h.swim.probe_released(h.now, seq);
    h.advance(Duration::from_millis(15));
    let reqs = h
        .drain()
        .iter()
        .filter(|t| matches!(t.message, Message::PingReq(_)))
        .count();
    assert_eq!(reqs, 3, "the direct timeout counts from the ping");
    assert_eq!(h.swim.stats().indirect_probes, 1);
    // Its round trip counts from when it left too.
    let mut h = Harness::new(1);
    let (target, seq) = h.probe();
    h.now += Duration::from_millis(20);
    h.swim.probe_released(h.now, seq);
    h.now += Duration::from_millis(10);
    h.recv_ack(&target, seq);
    assert_eq!(
        h.events(),
        vec![Event::ProbeRtt {
            id: target,
            rtt: Duration::from_millis(30)
        }]
    );
}

#[test]
fn failed_probe_makes_the_target_suspect_and_pushes_the_news() {
    let mut h = Harness::new(5);
    let target = h.failed_probe();
    assert_eq!(
        h.events(),
        vec![Event::MemberState {
            id: target.clone(),
            state: State::Suspect,
            previous: Some(State::Alive),
            incarnation: 0
        }]
    );
    let suspect = Update::Suspect {
        id: target.clone(),
        incarnation: 0,
        from: id(0),
    };
    let pushed = gossip_to(&h.drain());
    assert_eq!(pushed.len(), 3, "eager push to gossip_fanout members");
    assert!(pushed.iter().all(|(_, u)| *u == vec![suspect.clone()]));
    // No relay answered, not even with a nack: Lifeguard blames our own links.
    assert_eq!(h.swim.local_health(), 3);
}

#[test]
fn nacks_spare_the_local_health() {
    let mut h = Harness::new(5);
    let (_, seq) = h.probe();
    h.fire_next();
    let relays: Vec<NodeId> = h.drain().into_iter().map(|t| t.to).collect();
    for relay in relays {
        let n = (1..=5).find(|n| id(*n) == relay).unwrap();
        h.recv(n, Message::Nack(Nack { seq }));
    }
    h.fire_next();
    assert_eq!(h.swim.local_health(), 0);
}

#[test]
fn one_relays_nack_spares_the_local_health_the_silent_relays_are_their_own_fault() {
    let mut h = Harness::new(5);
    let (_, seq) = h.probe();
    h.fire_next();
    let relays: Vec<NodeId> = h.drain().into_iter().map(|t| t.to).collect();
    assert!(relays.len() >= 2, "{relays:?}");
    let n = (1..=5).find(|n| id(*n) == relays[0]).unwrap();
    h.recv(n, Message::Nack(Nack { seq }));
    h.fire_next();
    assert_eq!(
        h.swim.local_health(),
        0,
        "the others' silence is not this node's doing"
    );
}

#[test]
fn local_health_stretches_probe_interval_and_timeout() {
    let mut h = Harness::new(5);
    h.failed_probe();
    h.drain();
    h.events();
    assert_eq!(h.swim.local_health(), 3);
    // The next round comes 4 intervals after the last, its timeout is 4x.
    let base = Config::lan();
    let target = id(1);
    assert_eq!(h.swim.probe_timeout_for(&target), base.probe_timeout * 4);
}

#[test]
fn a_wan_probe_waits_at_least_60_ms_however_small_the_measured_rtt() {
    let mut h = Harness::with_config(1, 7, Config::wan());
    // A first probe measures 1 ms: srtt 1 ms, rttvar 0.5 ms, so the
    // estimate (3 ms) is below every minimum.
    let (target, seq) = h.probe();
    h.now += Duration::from_millis(1);
    h.recv_ack(&target, seq);
    assert_eq!(
        h.swim.member(&target).unwrap().srtt,
        Some(Duration::from_millis(1))
    );
    // The next probe of the same member, never answered.
    h.swim.schedule(h.now, Timer::ProbeRound);
    let (again, _) = h.probe();
    assert_eq!(again, target);
    h.advance(Duration::from_millis(59));
    assert_eq!(
        h.swim.stats().indirect_probes,
        0,
        "the WAN minimum is 60 ms, not the LAN's 25"
    );
    h.advance(Duration::from_millis(1));
    assert_eq!(h.swim.stats().indirect_probes, 1);
}

#[test]
fn suspect_without_confirmations_dies_after_the_maximum_timeout() {
    let mut h = Harness::new(5);
    let target = h.failed_probe();
    let suspected_at = h.now;
    // Other probes are answered meanwhile: the node hears the overlay.
    h.swim.heard = suspected_at + Duration::from_millis(1);
    h.drain();
    h.events();
    // n = 6, so the bounds are 2 * 1 * 100 ms = 200 ms and 600 ms.
    let (min, max) = h.swim.config().suspicion_bounds(6);
    assert_eq!(
        (min, max),
        (Duration::from_millis(200), Duration::from_millis(600))
    );
    h.now = suspected_at + max - Duration::from_millis(1);
    h.swim.handle_timeout(h.now);
    assert_eq!(h.state_of(&target), State::Suspect);
    h.now = suspected_at + max;
    h.swim.handle_timeout(h.now);
    let events: Vec<Event> = h
        .events()
        .into_iter()
        .filter(|e| matches!(e, Event::MemberState { .. }))
        .collect();
    assert_eq!(
        events,
        vec![Event::MemberState {
            id: target.clone(),
            state: State::Dead,
            previous: Some(State::Suspect),
            incarnation: 0
        }]
    );
    let dead = Update::Dead {
        id: target,
        incarnation: 0,
        from: id(0),
    };
    assert!(
        gossip_to(&h.drain())
            .iter()
            .any(|(_, u)| *u == vec![dead.clone()])
    );
}

#[test]
fn independent_confirmations_shorten_the_suspicion_to_its_minimum() {
    let mut h = Harness::new(5);
    let target = h.failed_probe();
    let suspected_at = h.now;
    let others: Vec<u32> = (1..=5).filter(|n| id(*n) != target).collect();
    for n in &others[..3] {
        h.recv(
            *n,
            Message::Gossip(Gossip {
                updates: vec![Update::Suspect {
                    id: target.clone(),
                    incarnation: 0,
                    from: id(*n),
                }],
            }),
        );
    }
    // A repeated confirmation from the same member does not count twice.
    h.recv(
        others[0],
        Message::Gossip(Gossip {
            updates: vec![Update::Suspect {
                id: target.clone(),
                incarnation: 0,
                from: id(others[0]),
            }],
        }),
    );
    assert_eq!(h.swim.suspicions[&target].confirmations, 3);
    h.now = suspected_at + Duration::from_millis(199);
    h.swim.handle_timeout(h.now);
    assert_eq!(h.state_of(&target), State::Suspect);
    h.now = suspected_at + Duration::from_millis(200);
    h.swim.handle_timeout(h.now);
    assert_eq!(h.state_of(&target), State::Dead);
}

#[test]
fn suspect_that_refutes_stays_alive() {
    let mut h = Harness::new(5);
    let target = h.failed_probe();
    let n = (1..=5).find(|n| id(*n) == target).unwrap();
    h.recv(
        n,
        Message::Gossip(Gossip {
            updates: vec![alive(n, 1)],
        }),
    );
    assert_eq!(h.state_of(&target), State::Alive);
    h.advance(Duration::from_secs(2));
    assert_eq!(h.state_of(&target), State::Alive);
    assert!(!h.events().iter().any(|e| matches!(
        e,
        Event::MemberState {
            state: State::Dead,
            ..
        }
    )));
}

#[test]
fn node_refutes_a_suspicion_about_itself_and_tells_the_carrier_and_the_accuser_first() {
    let mut h = Harness::new(5);
    h.recv(
        2,
        Message::Gossip(Gossip {
            updates: vec![Update::Suspect {
                id: id(0),
                incarnation: 0,
                from: id(3),
            }],
        }),
    );
    assert_eq!(h.swim.incarnation(), 1);
    assert_eq!(h.events(), vec![Event::Refuted { incarnation: 1 }]);
    let out = gossip_to(&h.drain());
    assert_eq!(out[0], (id(2), vec![alive(0, 1)]));
    assert_eq!(out[1], (id(3), vec![alive(0, 1)]), "then the accuser");
    assert_eq!(
        out.len(),
        5,
        "the carrier, the accuser, then the eager push: {out:?}"
    );
    assert!(
        out[1..]
            .iter()
            .all(|(to, u)| *to != id(2) && *u == vec![alive(0, 1)])
    );
    assert_eq!(
        h.swim.local_health(),
        1,
        "Lifeguard: refuting counts against our health"
    );
}

#[test]
fn stale_suspicion_about_an_older_incarnation_is_ignored() {
    let mut h = Harness::new(2);
    h.recv(
        1,
        Message::Gossip(Gossip {
            updates: vec![alive(1, 5)],
        }),
    );
    h.events();
    h.recv(
        2,
        Message::Gossip(Gossip {
            updates: vec![Update::Suspect {
                id: id(1),
                incarnation: 4,
                from: id(2),
            }],
        }),
    );
    assert_eq!(h.state_of(&id(1)), State::Alive);
    assert_eq!(h.events(), vec![]);
}

#[test]
fn ping_to_a_suspect_carries_the_suspicion() {
    let mut h = Harness::new(1);
    h.recv(
        1,
        Message::Gossip(Gossip {
            updates: vec![Update::Suspect {
                id: id(1),
                incarnation: 0,
                from: id(9),
            }],
        }),
    );
    h.swim.broadcasts.clear();
    h.drain();
    let (_, _) = (h.swim.next_probe_target(None), ());
    let updates = h.swim.piggyback(&id(1));
    assert_eq!(
        updates,
        vec![Update::Suspect {
            id: id(1),
            incarnation: 0,
            from: id(9)
        }]
    );
}

#[test]
fn relay_forwards_the_ack_without_a_coordinate() {
    let mut h = Harness::new(3);
    h.recv(
        1,
        Message::PingReq(PingReq {
            seq: 77,
            target: id(2),
            updates: vec![],
        }),
    );
    let out = h.drain();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].to, id(2));
    let Message::Ping(ping) = &out[0].message else {
        panic!("expected a ping: {out:?}");
    };
    h.recv(
        2,
        Message::Ack(Ack {
            seq: ping.seq,
            coord: Some(Coordinate::new(&coords::Config::default())),
            updates: vec![],
        }),
    );
    assert_eq!(
        h.drain(),
        vec![Transmit {
            to: id(1),
            message: Message::Ack(Ack {
                seq: 77,
                coord: None,
                updates: vec![]
            }),
            app: vec![],
        }]
    );
}

#[test]
fn relay_nacks_when_the_target_stays_silent() {
    let mut h = Harness::new(3);
    h.recv(
        1,
        Message::PingReq(PingReq {
            seq: 78,
            target: id(2),
            updates: vec![],
        }),
    );
    h.drain();
    // 80% of the 50 ms default timeout.
    h.advance(Duration::from_millis(39));
    assert!(h.drain().iter().all(|t| t.to != id(1)));
    h.advance(Duration::from_millis(1));
    let out = h.drain();
    assert!(out.contains(&Transmit {
        to: id(1),
        message: Message::Nack(Nack { seq: 78 }),
        app: vec![],
    }));
}

/// The relay nacks at 80% of its timeout, and an ack that comes after the
/// nack is still forwarded until the entry expires (1.5 timeouts later):
/// with a steady path the timeout is barely above the round trip, and a
/// relay that dropped the late ack made a healthy member a suspect.
#[test]
fn a_relay_forwards_an_ack_that_comes_after_its_nack_until_the_entry_expires() {
    let mut h = Harness::new(3);
    let ping_req = |seq| {
        Message::PingReq(PingReq {
            seq,
            target: id(2),
            updates: vec![],
        })
    };
    let ping_seq = |out: &[Transmit]| match out.iter().find(|t| t.to == id(2)) {
        Some(Transmit {
            message: Message::Ping(ping),
            ..
        }) => ping.seq,
        _ => panic!("expected a ping to the target: {out:?}"),
    };
    let ack_from_target = |h: &mut Harness, seq| {
        h.recv(
            2,
            Message::Ack(Ack {
                seq,
                coord: None,
                updates: vec![],
            }),
        );
    };
    let forwarded = |out: &[Transmit], seq| {
        out.iter()
            .any(|t| t.to == id(1) && matches!(&t.message, Message::Ack(a) if a.seq == seq))
    };
    h.recv(1, ping_req(79));
    let seq = ping_seq(&h.drain());
    h.advance(Duration::from_millis(40));
    assert!(
        h.drain()
            .iter()
            .any(|t| t.to == id(1) && t.message == Message::Nack(Nack { seq: 79 })),
        "the nack goes at 80% of the 50 ms timeout"
    );
    h.advance(Duration::from_millis(30));
    ack_from_target(&mut h, seq);
    assert!(forwarded(&h.drain(), 79), "the late ack is forwarded");
    // Once the entry expired (40 + 75 ms), a late ack is not.
    h.recv(1, ping_req(80));
    let seq = ping_seq(&h.drain());
    h.advance(Duration::from_millis(114));
    assert_eq!(h.swim.relays.len(), 1, "kept until it expires");
    h.advance(Duration::from_millis(1));
    assert!(h.swim.relays.is_empty(), "then gone");
    let nacks = h
        .drain()
        .iter()
        .filter(|t| t.message == Message::Nack(Nack { seq: 80 }))
        .count();
    assert_eq!(nacks, 1, "one nack, none at the expiry");
    ack_from_target(&mut h, seq);
    assert!(!forwarded(&h.drain(), 80));
}

/// A flood of ping-reqs is relayed up to `MAX_RELAYS` at once; the rest are
/// dropped, and the relay's sequence numbers never take one still in use.
#[test]
fn a_flood_of_ping_reqs_is_relayed_up_to_a_bound() {
    let mut h = Harness::new(3);
    for seq in 0..(MAX_RELAYS as u16 + 10) {
        h.recv(
            1,
            Message::PingReq(PingReq {
                seq,
                target: id(2),
                updates: vec![],
            }),
        );
    }
    assert_eq!(h.swim.relays.len(), MAX_RELAYS);
    let pings = h
        .drain()
        .iter()
        .filter(|t| t.to == id(2) && matches!(t.message, Message::Ping(_)))
        .count();
    assert_eq!(pings, MAX_RELAYS);
    // The counter comes round: the numbers still held are skipped.
    let held: Vec<u16> = h.swim.relays.keys().copied().collect();
    h.swim.next_seq = held[0].wrapping_sub(1);
    let next = h.swim.take_seq();
    assert!(!held.contains(&next), "{next} is in use");
    // Expired, they make room again.
    h.advance(Duration::from_millis(200));
    assert!(h.swim.relays.is_empty());
}

/// On the requester's side, a relay's nack then its forwarded ack complete
/// the probe: the target stays alive and the local health is untouched.
#[test]
fn a_nack_then_a_forwarded_ack_from_one_relay_completes_the_probe() {
    let mut h = Harness::new(5);
    let (target, seq) = h.probe();
    let relay = h.first_relay();
    h.swim
        .handle_message(h.now, relay.clone(), Message::Nack(Nack { seq }));
    h.recv_ack(&relay, seq);
    h.advance(Duration::from_secs(1));
    assert_eq!(h.state_of(&target), State::Alive);
    assert_eq!(h.swim.local_health(), 0);
}

/// A probe of a near target through far relays: the indirect stage waits
/// for the relays' estimated round trip (the RTT to the relay plus the
/// coordinates' distance from relay to target, half again, plus a minimum
/// timeout), not only the near target's timeouts; without coordinates it
/// is the target's, as before.
#[test]
fn the_indirect_stage_waits_for_the_far_relays_round_trip() {
    let far = |h: &mut Harness, target: &NodeId| {
        let mut origin = Coordinate::new(&coords::Config::default());
        origin.height = 0.0;
        let mut away = origin.clone();
        away.vec[0] = 0.3;
        for (id, m) in h.swim.members.iter_mut() {
            if id == target {
                m.coord = Some(origin.clone());
            } else {
                m.coord = Some(away.clone());
                m.srtt = Some(Duration::from_millis(300));
            }
        }
    };
    // 300 ms to each relay, 300 ms on to the target: 600 ms, 900 with
    // half again, 925 with lan's 25 ms minimum timeout (under its cap of
    // 2 x 500 ms).
    for (wait, suspected) in [(924, false), (925, true)] {
        let mut h = Harness::new(5);
        let (target, _) = h.probe();
        far(&mut h, &target);
        h.fire_next(); // direct timeout: ping-reqs
        assert!(
            h.drain()
                .iter()
                .any(|t| matches!(t.message, Message::PingReq(_)))
        );
        h.advance(Duration::from_millis(wait));
        assert_eq!(
            h.state_of(&target) == State::Suspect,
            suspected,
            "after {wait} ms"
        );
    }
    // A relay's ack late in that window saves the target.
    let mut h = Harness::new(5);
    let (target, seq) = h.probe();
    far(&mut h, &target);
    let relay = h.first_relay();
    h.advance(Duration::from_millis(700));
    h.recv_ack(&relay, seq);
    h.advance(Duration::from_millis(500));
    assert_eq!(h.state_of(&target), State::Alive);
    // Without coordinates: the target's timeouts (50 ms direct, then two
    // more).
    let mut h = Harness::new(5);
    let (target, _) = h.probe();
    h.fire_next();
    h.advance(Duration::from_millis(99));
    assert_eq!(h.state_of(&target), State::Alive);
    h.advance(Duration::from_millis(1));
    assert_eq!(h.state_of(&target), State::Suspect);
}

/// Places `target` at the origin and every other member `ms(member)`
/// milliseconds from it and from node 0 (measured RTT and coordinates
/// alike): a probe through that member is estimated at twice `ms`.
fn place(h: &mut Harness, target: &NodeId, ms: impl Fn(&NodeId) -> u64) {
    let mut origin = Coordinate::new(&coords::Config::default());
    origin.height = 0.0;
    for (id, m) in h.swim.members.iter_mut() {
        let mut at = origin.clone();
        if id != target {
            at.vec[0] = ms(id) as f64 / 1000.0;
            m.srtt = Some(Duration::from_millis(ms(id)));
        }
        m.coord = Some(at);
    }
}

fn ping_reqs_to(out: &[Transmit]) -> BTreeSet<NodeId> {
    out.iter()
        .filter(|t| matches!(t.message, Message::PingReq(_)))
        .map(|t| t.to.clone())
        .collect()
}

/// The relays asked are, of the members drawn, those on the shortest
/// estimated paths to the target. With 9 members node 0 draws all 8 but
/// the target (3 x 3 relays), so the 3 near ones must be the ones asked,
/// wherever the draw put them.
#[test]
fn relays_are_chosen_on_the_shortest_paths_to_the_target() {
    for seed in 0..8 {
        let mut h = Harness::with_seed(9, seed);
        let (target, _) = h.probe();
        let others: Vec<NodeId> = (1..=9).map(id).filter(|n| *n != target).collect();
        let near: BTreeSet<NodeId> = others[3..6].iter().cloned().collect();
        place(&mut h, &target, |n| if near.contains(n) { 10 } else { 300 });
        h.fire_next(); // direct timeout: ping-reqs
        assert_eq!(ping_reqs_to(&h.drain()), near, "seed {seed}");
    }
    // Without estimates the relays are any 3, varying with the draw.
    let mut seen = BTreeSet::new();
    for seed in 0..8 {
        let mut h = Harness::with_seed(9, seed);
        h.probe();
        h.fire_next();
        let asked = ping_reqs_to(&h.drain());
        assert_eq!(asked.len(), 3);
        seen.extend(asked);
    }
    assert!(seen.len() > 3, "always the same relays: {seen:?}");
}

/// A suspect is a relay only when too few alive members were drawn, however
/// short its path: in a partition the suspects are the cut-off side, whose
/// silence as relays would only delay the verdict.
#[test]
fn suspects_are_asked_to_relay_last() {
    for seed in 0..8 {
        let mut h = Harness::with_seed(9, seed);
        let (target, _) = h.probe();
        let others: Vec<NodeId> = (1..=9).map(id).filter(|n| *n != target).collect();
        let near: BTreeSet<NodeId> = others[3..6].iter().cloned().collect();
        place(&mut h, &target, |n| if near.contains(n) { 10 } else { 300 });
        for n in &near {
            let from = (1..=9).find(|i| id(*i) != *n && id(*i) != target).unwrap();
            h.recv(
                from,
                Message::Gossip(Gossip {
                    updates: vec![Update::Suspect {
                        id: n.clone(),
                        incarnation: 0,
                        from: id(from),
                    }],
                }),
            );
            assert_eq!(h.state_of(n), State::Suspect);
        }
        h.drain();
        // The direct timeout; hearing of a suspect may ask about it too, so
        // only the ping-reqs about this probe's target count.
        let mut asked = BTreeSet::new();
        while asked.is_empty() {
            h.fire_next();
            asked = h
                .drain()
                .into_iter()
                .filter(|t| matches!(&t.message, Message::PingReq(r) if r.target == target))
                .map(|t| t.to)
                .collect();
        }
        assert_eq!(asked.len(), 3, "seed {seed}: {asked:?}");
        assert!(asked.is_disjoint(&near), "seed {seed}: {asked:?}");
    }
}

/// The indirect stage waits for the second quickest relay's estimated
/// round trip, not the slowest's: through relays 100, 200 and 600 ms
/// long, 200 ms, half again, plus lan's 25 ms minimum timeout: 325 ms
/// after the direct timeout (the slowest would make it 925).
#[test]
fn the_indirect_stage_waits_for_the_second_quickest_relay() {
    for (wait, suspected) in [(324, false), (325, true)] {
        let mut h = Harness::new(4);
        let (target, _) = h.probe();
        let others: Vec<NodeId> = (1..=4).map(id).filter(|n| *n != target).collect();
        let ms = |n: &NodeId| [50, 100, 300][others.iter().position(|o| o == n).unwrap()];
        place(&mut h, &target, ms);
        h.fire_next(); // direct timeout: ping-reqs
        assert_eq!(ping_reqs_to(&h.drain()).len(), 3);
        h.advance(Duration::from_millis(wait));
        assert_eq!(
            h.state_of(&target) == State::Suspect,
            suspected,
            "after {wait} ms"
        );
    }
}

#[test]
fn leave_is_announced_and_final_for_its_incarnation() {
    let mut h = Harness::new(8);
    h.swim.leave(h.now);
    let out = gossip_to(&h.drain());
    assert_eq!(out.len(), 6);
    let left = Update::Left {
        id: id(0),
        incarnation: 0,
    };
    assert!(out.iter().all(|(_, u)| *u == vec![left.clone()]));
    // A leaving node neither probes nor refutes.
    h.advance(Duration::from_secs(1));
    assert!(
        h.drain()
            .iter()
            .all(|t| !matches!(t.message, Message::Ping(_)))
    );

    // On a peer: left, then an old alive is ignored, a newer one revives it.
    let mut peer = Harness::new(3);
    peer.recv(
        1,
        Message::Gossip(Gossip {
            updates: vec![Update::Left {
                id: id(1),
                incarnation: 0,
            }],
        }),
    );
    assert_eq!(peer.state_of(&id(1)), State::Left);
    peer.recv(
        2,
        Message::Gossip(Gossip {
            updates: vec![alive(1, 0)],
        }),
    );
    assert_eq!(peer.state_of(&id(1)), State::Left);
    peer.recv(
        1,
        Message::Gossip(Gossip {
            updates: vec![alive(1, 1)],
        }),
    );
    assert_eq!(peer.state_of(&id(1)), State::Alive);
}

#[test]
fn restarted_node_rejoins_with_a_higher_incarnation() {
    // Node 0 holds node 1 dead at incarnation 3.
    let mut seed = Harness::new(2);
    seed.recv(
        2,
        Message::Gossip(Gossip {
            updates: vec![alive(1, 3)],
        }),
    );
    seed.recv(
        2,
        Message::Gossip(Gossip {
            updates: vec![Update::Dead {
                id: id(1),
                incarnation: 3,
                from: id(2),
            }],
        }),
    );
    assert_eq!(seed.state_of(&id(1)), State::Dead);
    seed.drain();
    seed.events();

    // Node 1 restarts with incarnation 0 and joins through node 0.
    let mut restarted = Swim::new(
        id(1),
        Vec::new(),
        Config::lan(),
        SmallRng::seed_from_u64(3),
        seed.now,
    );
    restarted.join(seed.now, [id(0)]);
    let join = restarted.poll_transmit().unwrap();
    assert_eq!(join.to, id(0));
    seed.swim.handle_message(seed.now, id(1), join.message);
    // The seed answers with its table, which holds the death notice.
    let table: Vec<Transmit> = seed.drain();
    assert!(
        table
            .iter()
            .all(|t| t.to == id(1) && matches!(t.message, Message::Sync(_)))
    );
    for t in table {
        restarted.handle_message(seed.now, id(0), t.message);
    }
    assert_eq!(restarted.incarnation(), 4);
    let refutation = std::iter::from_fn(|| restarted.poll_transmit())
        .find(|t| t.to == id(0))
        .expect("refutation goes back to the seed");
    seed.swim
        .handle_message(seed.now, id(1), refutation.message);
    assert_eq!(seed.state_of(&id(1)), State::Alive);
    assert_eq!(seed.swim.member(&id(1)).unwrap().incarnation, 4);
}

#[test]
fn sync_with_an_equal_digest_is_answered_with_nothing() {
    let mut a = Harness::new(2);
    let digest = a.swim.digest();
    a.recv(
        1,
        Message::Sync(Sync {
            digest,
            updates: vec![],
            reply: true,
        }),
    );
    assert_eq!(a.drain(), vec![]);
    a.recv(
        1,
        Message::Sync(Sync {
            digest: digest ^ 1,
            updates: vec![],
            reply: true,
        }),
    );
    let out = a.drain();
    assert_eq!(out.len(), 1);
    let Message::Sync(table) = &out[0].message else {
        panic!("{out:?}")
    };
    assert!(
        table.reply,
        "a digest-only sync is answered with a table and a request for theirs"
    );
    assert_eq!(table.updates.len(), 3);
}

#[test]
fn table_entry_alive_where_we_hold_death_pokes_the_member() {
    let mut h = Harness::new(3);
    h.recv(
        2,
        Message::Gossip(Gossip {
            updates: vec![Update::Dead {
                id: id(3),
                incarnation: 0,
                from: id(2),
            }],
        }),
    );
    h.drain();
    h.recv(
        1,
        Message::Sync(Sync {
            digest: 0,
            updates: vec![alive(3, 0)],
            reply: false,
        }),
    );
    assert_eq!(
        h.drain(),
        vec![Transmit {
            to: id(3),
            message: Message::Gossip(Gossip {
                updates: vec![Update::Dead {
                    id: id(3),
                    incarnation: 0,
                    from: id(2)
                }]
            }),
            app: vec![],
        }]
    );
}

#[test]
fn spurious_timeouts_do_nothing() {
    let mut h = Harness::new(3);
    for _ in 0..5 {
        h.swim.handle_timeout(h.now);
    }
    assert_eq!(h.drain(), vec![]);
    assert_eq!(h.events(), vec![]);
}

#[test]
fn dead_members_are_forgotten_after_the_reclaim_time() {
    let mut h = Harness::new(2);
    h.recv(
        2,
        Message::Gossip(Gossip {
            updates: vec![Update::Dead {
                id: id(1),
                incarnation: 0,
                from: id(2),
            }],
        }),
    );
    h.events();
    let reclaim = h.swim.config().dead_reclaim;
    for _ in 0..6 {
        h.advance(reclaim / 4);
    }
    assert!(h.swim.member(&id(1)).is_none());
    assert!(h.events().contains(&Event::Removed { id: id(1) }));
}

#[test]
fn suspicion_timeout_follows_lifeguard_formula() {
    let start = Instant::now();
    let mut s = Suspicion {
        extended: false,
        start,
        confirmers: BTreeSet::new(),
        confirmations: 0,
        wanted: 3,
        min: Duration::from_millis(200),
        max: Duration::from_millis(600),
    };
    assert_eq!(s.deadline() - start, Duration::from_millis(600));
    s.confirmations = 1;
    // max - (max - min) * ln 2 / ln 4 = 600 - 400 * 0.5 = 400 ms
    assert_eq!(s.deadline() - start, Duration::from_millis(400));
    s.confirmations = 3;
    assert_eq!(s.deadline() - start, Duration::from_millis(200));
}

#[test]
fn death_notice_in_a_sync_table_is_only_a_suspicion() {
    let mut h = Harness::new(3);
    h.recv(
        1,
        Message::Sync(Sync {
            digest: 0,
            updates: vec![Update::Dead {
                id: id(2),
                incarnation: 0,
                from: id(1),
            }],
            reply: false,
        }),
    );
    assert_eq!(h.state_of(&id(2)), State::Suspect);
    // Repairs are not news: nothing is pushed on.
    assert!(gossip_to(&h.drain()).is_empty());
}

#[test]
fn confirmations_beyond_k_are_not_spread() {
    let mut h = Harness::new(8);
    let target = h.failed_probe();
    h.drain();
    let others: Vec<u32> = (1..=8).filter(|n| id(*n) != target).collect();
    let confirm = |n: u32| {
        Message::Gossip(Gossip {
            updates: vec![Update::Suspect {
                id: target.clone(),
                incarnation: 0,
                from: id(n),
            }],
        })
    };
    for n in &others[..3] {
        h.recv(*n, confirm(*n));
        assert_eq!(
            gossip_to(&h.drain()).len(),
            3,
            "a counted confirmation is pushed on"
        );
    }
    h.recv(others[3], confirm(others[3]));
    assert!(
        gossip_to(&h.drain()).is_empty(),
        "the K+1-th changes nothing"
    );
}

#[test]
fn newer_death_notice_updates_a_dead_member() {
    let mut h = Harness::new(2);
    let dead = |n| {
        Message::Gossip(Gossip {
            updates: vec![Update::Dead {
                id: id(1),
                incarnation: n,
                from: id(2),
            }],
        })
    };
    h.recv(2, dead(0));
    h.recv(2, dead(4));
    assert_eq!(h.swim.member(&id(1)).unwrap().incarnation, 4);
    h.recv(
        2,
        Message::Gossip(Gossip {
            updates: vec![alive(1, 3)],
        }),
    );
    assert_eq!(
        h.state_of(&id(1)),
        State::Dead,
        "a stale alive does not revive it"
    );
}

#[test]
fn oversized_metadata_is_refused() {
    let mut h = Harness::new(1);
    let before = h.swim.incarnation();
    assert!(
        !h.swim
            .set_meta(h.now, vec![0; crate::wire::MAX_META_BYTES + 1])
    );
    assert_eq!(h.swim.incarnation(), before);
    assert!(h.swim.set_meta(h.now, vec![1; 10]));
    assert_eq!(h.swim.incarnation(), before + 1);
}

/// Each eager push of an app payload is a message sent, and counted so.
#[test]
fn app_payload_pushes_are_counted_as_messages_out() {
    let mut h = Harness::new(5);
    let before = h.swim.stats().messages_out;
    assert!(h.swim.broadcast_app(b"k".to_vec(), b"delta".to_vec()));
    let pushed = h.drain().len() as u64;
    assert_eq!(pushed, 3);
    assert_eq!(h.swim.stats().messages_out, before + pushed);
}

#[test]
fn app_payloads_are_pushed_then_piggybacked_up_to_the_retransmit_limit() {
    let mut h = Harness::new(5);
    h.swim.broadcast_app(b"k".to_vec(), b"delta-1".to_vec());
    let pushed = h.drain();
    assert_eq!(pushed.len(), 3, "eager push to gossip_fanout members");
    assert!(pushed.iter().all(|t| t.app == vec![b"delta-1".to_vec()]));
    // A newer payload under the same key replaces the queued one.
    h.swim.broadcast_app(b"k".to_vec(), b"delta-2".to_vec());
    h.drain();
    let limit = h.swim.config().app_retransmit_limit(6);
    let mut carried = 0;
    for seq in 0..(limit + 3) as u16 {
        h.recv(
            1,
            Message::Ping(Ping {
                seq,
                want_coord: false,
                updates: vec![],
            }),
        );
        for t in h.drain() {
            assert!(matches!(t.message, Message::Ack(_)));
            if t.app.contains(&b"delta-2".to_vec()) {
                carried += 1;
            }
        }
    }
    // The eager push counted as the first transmission.
    assert_eq!(carried, limit - 1);
    assert!(h.swim.app_broadcasts.is_empty());
}

#[test]
fn running_digest_follows_every_change() {
    let mut h = Harness::new(4);
    // The digest as defined: this node's entry plus every active member's.
    let fresh = |h: &Harness| {
        let s = &h.swim;
        let own = entry_hash(&s.id, s.incarnation, State::Alive, &s.meta);
        s.members
            .values()
            .filter(|m| m.state.is_active())
            .fold(own, |acc, m| {
                acc.wrapping_add(entry_hash(&m.id, m.incarnation, m.state, &m.meta))
            })
    };
    let before = h.swim.digest();
    h.recv(
        1,
        Message::Gossip(Gossip {
            updates: vec![alive(1, 3)],
        }),
    );
    assert_ne!(h.swim.digest(), before);
    assert_eq!(h.swim.digest(), fresh(&h));
    h.recv(
        2,
        Message::Gossip(Gossip {
            updates: vec![Update::Dead {
                id: id(2),
                incarnation: 0,
                from: id(1),
            }],
        }),
    );
    assert_eq!(h.swim.digest(), fresh(&h));
    h.recv(
        3,
        Message::Gossip(Gossip {
            updates: vec![Update::Suspect {
                id: id(0),
                incarnation: 0,
                from: id(3),
            }],
        }),
    );
    assert_eq!(h.swim.digest(), fresh(&h));
    assert!(h.swim.set_meta(h.now, vec![9]));
    assert_eq!(h.swim.digest(), fresh(&h));
    // The dead member is reclaimed: it leaves the table and the sum.
    let reclaim = h.swim.config().dead_reclaim;
    h.advance(reclaim + Duration::from_secs(60));
    assert!(h.swim.member(&id(2)).is_none(), "reclaimed");
    assert_eq!(h.swim.members_digest, {
        let s = &h.swim;
        s.members
            .values()
            .map(|m| m.digest_part)
            .fold(0u64, u64::wrapping_add)
    });
    assert_eq!(h.swim.digest(), fresh(&h));
}

#[test]
fn a_stale_probe_does_not_blame_a_newer_incarnation() {
    let mut h = Harness::new(5);
    let (target, _) = h.probe();
    let n = (1..=5).find(|n| id(*n) == target).unwrap();
    h.fire_next(); // direct timeout
    h.drain();
    // Meanwhile the member refuted something and moved to incarnation 1.
    h.recv(
        n,
        Message::Gossip(Gossip {
            updates: vec![alive(n, 1)],
        }),
    );
    h.events();
    h.fire_next(); // indirect timeout of the probe of incarnation 0
    assert_eq!(h.state_of(&target), State::Alive);
    assert!(h.events().is_empty());
}

#[test]
fn a_stale_rumour_about_itself_is_answered_with_the_current_alive() {
    let mut h = Harness::new(3);
    // This node refuted once already: it is at incarnation 1.
    h.recv(
        2,
        Message::Gossip(Gossip {
            updates: vec![Update::Suspect {
                id: id(0),
                incarnation: 0,
                from: id(2),
            }],
        }),
    );
    assert_eq!(h.swim.incarnation(), 1);
    h.drain();
    // Laggards still carry the old suspicion, or a death or departure
    // notice of that incarnation (a node that holds this one as left never
    // probes it, so nothing else would correct it).
    let stale = [
        Update::Suspect {
            id: id(0),
            incarnation: 0,
            from: id(2),
        },
        Update::Dead {
            id: id(0),
            incarnation: 0,
            from: id(2),
        },
        Update::Left {
            id: id(0),
            incarnation: 0,
        },
    ];
    for update in stale {
        h.recv(
            3,
            Message::Gossip(Gossip {
                updates: vec![update.clone()],
            }),
        );
        assert_eq!(h.swim.incarnation(), 1, "no new refutation: {update:?}");
        assert_eq!(
            gossip_to(&h.drain()),
            vec![(id(3), vec![alive(0, 1)])],
            "{update:?}"
        );
    }
}

#[test]
fn a_late_suspicion_timer_grants_one_more_minimum_timeout_and_asks_the_suspect() {
    let mut h = Harness::new(5);
    let target = h.failed_probe();
    h.drain();
    h.events();
    // The node was not running for two seconds: the timer fires late.
    h.now += Duration::from_secs(2);
    h.swim.handle_timeout(h.now);
    assert_eq!(
        h.state_of(&target),
        State::Suspect,
        "not declared on a late timer"
    );
    let out = h.drain();
    assert!(
        out.iter()
            .any(|t| t.to == target && matches!(t.message, Message::Ping(_))),
        "the suspect is asked directly: {out:?}"
    );
    // Still silent after the extra minimum timeout, while this node hears
    // the overlay again (an answer to one of its probes): now it is
    // declared.
    let (min, _) = h.swim.config().suspicion_bounds(6);
    h.now += min;
    h.swim.heard = h.now;
    h.swim.handle_timeout(h.now);
    assert_eq!(h.state_of(&target), State::Dead);
}

#[test]
fn a_late_timer_does_not_let_a_node_that_hears_nothing_declare_on_its_own_evidence() {
    // Found on the testnet (`testnet run cut`): a node cut one way, slow
    // enough for its suspicion timers to fire late, declared live members
    // dead while it heard nothing. The extension counted as confirmations.
    let mut h = Harness::new(5);
    let target = h.failed_probe();
    h.drain();
    h.events();
    h.now += Duration::from_secs(2);
    h.swim.handle_timeout(h.now);
    assert_eq!(h.state_of(&target), State::Suspect, "extended");
    let (_, max) = h.swim.config().suspicion_bounds(6);
    for _ in 0..3 {
        h.now += max;
        h.swim.handle_timeout(h.now);
        assert_eq!(
            h.state_of(&target),
            State::Suspect,
            "not on its own word, late timer or not"
        );
    }
    assert!(
        !h.events().iter().any(|e| matches!(
            e,
            Event::MemberState {
                state: State::Dead,
                ..
            }
        )),
        "nobody declared dead"
    );
    // Once it hears the overlay again, its verdict stands.
    h.swim.heard = h.now;
    h.now += max;
    h.swim.handle_timeout(h.now);
    assert_eq!(h.state_of(&target), State::Dead);
}

#[test]
fn a_stall_raises_local_health_by_the_periods_missed() {
    // No members: nothing but a stall can change the local health.
    let mut h = Harness::new(0);
    assert_eq!(h.swim.local_health(), 0);
    // Timers that fire on time change nothing.
    for _ in 0..5 {
        let due = h.swim.poll_timeout().unwrap();
        h.now = due;
        h.swim.handle_timeout(h.now);
    }
    assert_eq!(h.swim.local_health(), 0);
    // Up to one period late is scheduling jitter, not a stall.
    let due = h.swim.poll_timeout().unwrap();
    h.now = due + h.swim.config().probe_interval;
    h.swim.handle_timeout(h.now);
    assert_eq!(h.swim.local_health(), 0);
    // Three periods late (a SIGSTOP, a swap-out): three steps.
    let due = h.swim.poll_timeout().unwrap();
    h.now = due + Duration::from_millis(310);
    h.swim.handle_timeout(h.now);
    assert_eq!(h.swim.local_health(), 3);
    // A long stall saturates at the maximum.
    let due = h.swim.poll_timeout().unwrap();
    h.now = due + Duration::from_secs(3);
    h.swim.handle_timeout(h.now);
    assert_eq!(h.swim.local_health(), h.swim.config().max_local_health);
}

#[test]
fn a_node_that_hears_nothing_declares_nobody_dead_on_its_own_evidence() {
    let mut h = Harness::new(5);
    let target = h.failed_probe();
    let suspected_at = h.now;
    h.drain();
    h.events();
    let (_, max) = h.swim.config().suspicion_bounds(6);
    h.now = suspected_at + max * 3;
    h.swim.handle_timeout(h.now);
    assert_eq!(h.state_of(&target), State::Suspect, "not on its own word");
    // Another member confirms: the evidence is no longer its own alone.
    h.recv(
        2,
        Message::Gossip(Gossip {
            updates: vec![Update::Suspect {
                id: target.clone(),
                incarnation: 0,
                from: id(2),
            }],
        }),
    );
    h.now += max;
    h.swim.handle_timeout(h.now);
    assert_eq!(h.state_of(&target), State::Dead);
}

#[test]
fn isolation_needs_two_members_maximal_health_and_silence() {
    let mut h = Harness::new(5);
    let start = h.now;
    assert!(
        !h.swim.is_isolated(start + Duration::from_secs(10)),
        "healthy"
    );
    h.swim.health = h.swim.config().max_local_health;
    let after = h.swim.config().isolation_after;
    assert!(
        !h.swim
            .is_isolated(h.swim.heard + after - Duration::from_millis(1))
    );
    assert!(h.swim.is_isolated(h.swim.heard + after));
    // An answer to a probe ends it.
    h.swim.heard = start + Duration::from_secs(9);
    assert!(
        !h.swim
            .is_isolated(start + Duration::from_secs(9) + after / 2)
    );
    // With a single member, silence and that member's death look alike.
    let mut one = Harness::new(1);
    one.swim.health = one.swim.config().max_local_health;
    assert!(!one.swim.is_isolated(one.now + Duration::from_secs(60)));
}

#[test]
fn acks_and_nacks_to_own_probes_count_as_hearing_the_overlay() {
    let mut h = Harness::new(5);
    let (target, seq) = h.probe();
    h.now += Duration::from_millis(7);
    h.recv_ack(&target, seq);
    assert_eq!(h.swim.heard, h.now);
}

#[test]
fn incarnations_compare_as_serial_numbers() {
    assert!(newer(1, 0));
    assert!(!newer(0, 0));
    assert!(newer(0, u32::MAX), "0 follows u32::MAX");
    assert!(!newer(u32::MAX, 0));
    assert!(newer((1 << 31) - 1, 0));
    assert!(
        !newer(1 << 31, 0) && !newer(0, 1 << 31),
        "the antipode is neither"
    );
    assert_eq!(
        ahead(1 << 31, 0),
        1 << 31,
        "and a liar's antipode counts as ahead"
    );
    assert_eq!(ahead(0, 1), 0);
}

#[test]
fn a_member_at_the_last_incarnation_wraps_and_is_still_believed() {
    let mut h = Harness::new(2);
    // Member 1 has announced u32::MAX (by ones: each step was newer).
    h.swim.members.get_mut(&id(1)).unwrap().incarnation = u32::MAX;
    h.recv(
        1,
        Message::Gossip(Gossip {
            updates: vec![Update::Alive {
                id: id(1),
                incarnation: 0,
                meta: vec![7],
            }],
        }),
    );
    let m = h.swim.member(&id(1)).unwrap();
    assert_eq!((m.incarnation, m.meta.clone()), (0, vec![7]));
}

#[test]
fn a_death_notice_at_the_last_incarnation_is_refuted_by_wrapping() {
    let mut h = Harness::new(3);
    // This node is at u32::MAX - 1 (it announced that often, or restarted
    // below a number it had used): the rumour is one ahead, plausible.
    h.swim.incarnation = u32::MAX - 1;
    h.recv(
        2,
        Message::Gossip(Gossip {
            updates: vec![Update::Dead {
                id: id(0),
                incarnation: u32::MAX,
                from: id(2),
            }],
        }),
    );
    assert_eq!(h.swim.incarnation(), 0, "refuted past u32::MAX, to 0");
    assert_eq!(h.events(), vec![Event::Refuted { incarnation: 0 }]);
}

#[test]
fn a_rumour_far_ahead_of_this_node_is_a_lie_and_is_not_jumped_to() {
    let mut h = Harness::new(3);
    h.recv(
        2,
        Message::Gossip(Gossip {
            updates: vec![Update::Dead {
                id: id(0),
                incarnation: 1 << 30,
                from: id(2),
            }],
        }),
    );
    assert_eq!(h.swim.incarnation(), 0);
    assert_eq!(h.events(), vec![]);
    assert_eq!(h.swim.stats().implausible, 1);
    let out = gossip_to(&h.drain());
    assert_eq!(
        out.first(),
        Some(&(id(2), vec![alive(0, 0)])),
        "the carrier hears the truth"
    );
}

#[test]
fn a_relayed_notice_far_ahead_of_the_member_is_ignored_and_the_member_asked() {
    let mut h = Harness::new(3);
    h.recv(
        2,
        Message::Gossip(Gossip {
            updates: vec![Update::Dead {
                id: id(1),
                incarnation: PLAUSIBLE_LEAD + 1,
                from: id(2),
            }],
        }),
    );
    assert_eq!(h.state_of(&id(1)), State::Alive);
    h.recv(
        2,
        Message::Gossip(Gossip {
            updates: vec![alive(1, 1000)],
        }),
    );
    assert_eq!(h.swim.member(&id(1)).unwrap().incarnation, 0);
    let out = gossip_to(&h.drain());
    assert_eq!(out, vec![(id(1), vec![alive(1, 0)])], "the member is asked");
    // A lead an honest relay could carry is believed.
    h.recv(
        2,
        Message::Gossip(Gossip {
            updates: vec![Update::Dead {
                id: id(1),
                incarnation: PLAUSIBLE_LEAD,
                from: id(2),
            }],
        }),
    );
    assert_eq!(h.state_of(&id(1)), State::Dead);
    // And the member itself is believed first-hand at any lead.
    h.recv(
        1,
        Message::Gossip(Gossip {
            updates: vec![alive(1, 5000)],
        }),
    );
    assert_eq!(h.state_of(&id(1)), State::Alive);
    assert_eq!(h.swim.stats().implausible, 2);
}

#[test]
fn queued_updates_counts_news_once_per_member_until_sent_out() {
    let mut h = Harness::new(3);
    assert_eq!(h.swim.queued_updates(), 0);
    let news = |n: u32, incarnation: u32| {
        Message::Gossip(Gossip {
            updates: vec![alive(n, incarnation)],
        })
    };
    h.recv(1, news(4, 0));
    assert_eq!(h.swim.queued_updates(), 1);
    h.recv(1, news(4, 1));
    assert_eq!(h.swim.queued_updates(), 1, "a newer update replaces it");
    h.recv(1, news(5, 0));
    assert_eq!(h.swim.queued_updates(), 2);
    let limit = h.swim.config.retransmit_limit(h.swim.group_size());
    for _ in 0..limit {
        let _ = h.swim.broadcasts.take(16, 1024, limit, &id(0));
    }
    assert_eq!(h.swim.queued_updates(), 0, "sent out {limit} times each");
}

/// The update queue leaves out the update about the member a message goes
/// to and any update that does not fit the room left; both stay queued.
#[test]
fn update_queue_skips_the_addressee_and_what_does_not_fit() {
    let mut q = Queue::default();
    q.push(alive(1, 0));
    q.push(alive(2, 0));
    assert_eq!(q.take(16, 1024, 3, &id(1)), vec![alive(2, 0)]);
    let len = alive(1, 0).encoded_len();
    assert_eq!(q.take(16, len - 1, 3, &id(9)), vec![]);
    let mut both = q.take(16, 2 * len, 3, &id(9));
    both.sort_by_key(|u| u.id().clone());
    assert_eq!(both, vec![alive(1, 0), alive(2, 0)]);
}

/// The app queue sends a fresh payload in the very next message, and still
/// gives every older payload a turn while fresh ones keep arriving.
#[test]
fn app_queue_serves_fresh_payloads_first_and_starves_none() {
    let mut q = AppQueue::default();
    let limit = 1000;
    // Each payload is ~100 bytes, room for two per message.
    let payload = |i: u32| {
        let mut p = i.to_be_bytes().to_vec();
        p.resize(100, 0);
        p
    };
    let room = 2 * crate::wire::app_len(&payload(0)) + 1;
    // Fifty payloads already sent a few times: in a queue ordered only by
    // send count they would wait until every fresh one had caught up.
    for i in 0..50u32 {
        q.push(i.to_be_bytes().to_vec(), payload(i), 5);
    }
    let mut last_sent = BTreeMap::new();
    for round in 0..400u32 {
        // A fresh payload every message, as after a healed partition.
        let fresh = 1000 + round;
        q.push(fresh.to_be_bytes().to_vec(), payload(fresh), 1);
        let out = q.take(room, 32, limit);
        assert_eq!(out.len(), 2, "the room holds two");
        assert!(
            out.contains(&payload(fresh)),
            "round {round}: the fresh payload goes in the next message"
        );
        for p in out {
            last_sent.insert(p[..4].to_vec(), round);
        }
    }
    // Every one of the 50 old payloads had its turn: none is starved.
    for i in 0..50u32 {
        assert!(
            last_sent.contains_key(i.to_be_bytes().as_slice()),
            "payload {i} was never sent"
        );
    }
}

/// A message carries at most `max` payloads, however much room is left.
#[test]
fn app_queue_takes_at_most_max_payloads() {
    let mut q = AppQueue::default();
    for i in 0..10u8 {
        q.push(vec![i], vec![i; 3], 0);
    }
    assert_eq!(q.take(10_000, 4, 100).len(), 4);
    assert_eq!(q.take(10_000, 1, 100).len(), 1);
    assert_eq!(q.take(10_000, 32, 100).len(), 10);
}

#[test]
fn app_queue_drops_a_payload_at_the_limit_and_a_superseded_one() {
    let mut q = AppQueue::default();
    q.push(b"a".to_vec(), b"one".to_vec(), 0);
    q.push(b"a".to_vec(), b"two".to_vec(), 0);
    assert_eq!(q.take(1000, 32, 3), vec![b"two".to_vec()]);
    assert_eq!(q.take(1000, 32, 3), vec![b"two".to_vec()]);
    assert_eq!(q.take(1000, 32, 3), vec![b"two".to_vec()]);
    assert!(q.is_empty());
    assert!(q.take(1000, 32, 3).is_empty());
    assert!(q.by_sends.is_empty() && q.by_wait.is_empty());
}

/// With room for one payload per message, the two orders take turns: an
/// old payload still goes out every other message while fresh ones keep
/// coming.
#[test]
fn app_queue_with_room_for_one_alternates_the_orders() {
    let mut q = AppQueue::default();
    let payload = |i: u32| {
        let mut p = i.to_be_bytes().to_vec();
        p.resize(100, 0);
        p
    };
    let room = crate::wire::app_len(&payload(0)) + 1;
    for i in 0..10u32 {
        q.push(i.to_be_bytes().to_vec(), payload(i), 5);
    }
    let mut old = 0;
    for round in 0..20u32 {
        let fresh = 1000 + round;
        q.push(fresh.to_be_bytes().to_vec(), payload(fresh), 1);
        let out = q.take(room, 32, 1000);
        assert_eq!(out.len(), 1);
        if u32::from_be_bytes(out[0][..4].try_into().unwrap()) < 10 {
            old += 1;
        }
    }
    assert_eq!(old, 10, "every other message carried an old payload");
}

/// Payloads too large for the room are each passed over once, not once
/// per look: one large payload does not stop the filling early.
#[test]
fn app_queue_counts_a_payload_too_large_once() {
    let mut q = AppQueue::default();
    let mut big = vec![0xff];
    big.resize(900, 0);
    q.push(b"big".to_vec(), big, 1);
    for i in 0..20u32 {
        q.push(i.to_be_bytes().to_vec(), i.to_be_bytes().to_vec(), 1);
    }
    let out = q.take(500, 32, 1000);
    assert_eq!(out.len(), 20, "all the small ones fit beside the misfit");
}

/// A relayed rumour is judged forward from what the member vouched, modulo
/// 2^32, unless it is older than what is held.
#[test]
fn implausible_measures_leads_forward_from_what_was_vouched() {
    // (rumour, held, vouched, implausible)
    let cases = [
        (64, 0, 0, false),
        (65, 0, 0, true),
        (u32::MAX, 0, 0, false), // older than held: stale, not a lie
        (63, 0, u32::MAX, false),
        (64, 0, u32::MAX, true),
        (1 << 31, 0, 0, true),           // neither newer nor older than held
        ((1 << 31) + 3, 3, 0, true),     // exactly 2^31 from held
        ((1 << 31) + 4, 3, 0, false),    // older than held
        (3 + (1 << 31) - 1, 3, 0, true), // newer than held, far past vouched
        (10, 10, 0, false),              // what is held, within the lead
    ];
    for (a, held, vouched, want) in cases {
        assert_eq!(
            implausible(a, held, vouched),
            want,
            "rumour {a}, held {held}, vouched {vouched}"
        );
    }
}

/// Expedited probing is a coin flip per fresh suspicion (about 2K of N
/// members check a suspect at once), not a probe of every suspect.
#[test]
fn a_fresh_suspicion_expedites_a_probe_with_probability_2k_over_n() {
    // 20 seeds x 30 fresh suspicions in a group of 41: p = 2 x 3 / 39.
    let (seeds, suspects) = (20u64, 30u32);
    let mut expedited = 0;
    for seed in 0..seeds {
        let mut h = Harness::with_seed(40, seed);
        for n in 1..=suspects {
            h.recv(
                40,
                Message::Gossip(Gossip {
                    updates: vec![Update::Suspect {
                        id: id(n),
                        incarnation: 0,
                        from: id(40),
                    }],
                }),
            );
        }
        expedited += h.swim.stats().expedited_probes;
    }
    // Expected 92 of 600 (standard deviation 9): within 4 deviations.
    let trials = (seeds * u64::from(suspects)) as f64;
    let expected = trials * 6.0 / 39.0;
    let sd = (trials * 6.0 / 39.0 * 33.0 / 39.0).sqrt();
    assert!(
        (expedited as f64 - expected).abs() <= 4.0 * sd,
        "{expedited} of {trials}, expected {expected:.0}"
    );
}

/// A member that died in the middle of a round-robin pass is not probed
/// for the rest of it.
#[test]
fn the_rest_of_a_pass_skips_members_that_went_down() {
    let mut h = Harness::new(4);
    let (first, seq) = h.probe();
    h.recv_ack(&first, seq);
    let down: Vec<NodeId> = (1..=4).map(id).filter(|m| *m != first).take(2).collect();
    h.recv(
        9,
        Message::Gossip(Gossip {
            updates: down
                .iter()
                .map(|m| Update::Dead {
                    id: m.clone(),
                    incarnation: 0,
                    from: id(9),
                })
                .collect(),
        }),
    );
    h.drain();
    let now = h.now;
    h.swim.schedule(now, Timer::ProbeRound);
    h.advance(h.swim.config().probe_interval * 3);
    let pinged: Vec<NodeId> = h
        .drain()
        .into_iter()
        .filter(|t| matches!(t.message, Message::Ping(_)))
        .map(|t| t.to)
        .collect();
    assert!(!pinged.is_empty());
    assert!(
        pinged.iter().all(|t| !down.contains(t)),
        "{pinged:?} {down:?}"
    );
}

/// Coming back late to a suspicion's deadline, the node grants the suspect
/// the minimum timeout again and counts the lateness against its own
/// health: one step more than the periods it missed.
#[test]
fn a_late_suspicion_deadline_is_extended_and_costs_a_step_of_health() {
    let mut h = Harness::new(3);
    h.swim.timers.retain(|s| s.timer != Timer::ProbeRound);
    // In a group of 4 the suspicion always expedites a probe of node 1; its
    // timers go with the others below, and the probe stays unanswered.
    h.recv(
        2,
        Message::Gossip(Gossip {
            updates: vec![Update::Suspect {
                id: id(1),
                incarnation: 0,
                from: id(2),
            }],
        }),
    );
    h.drain();
    let deadline = h
        .swim
        .timers
        .iter()
        .find(|s| matches!(s.timer, Timer::Suspicion { .. }))
        .map(|s| s.at)
        .unwrap();
    // Not running from before the deadline until well after it.
    h.swim
        .timers
        .retain(|s| matches!(s.timer, Timer::Suspicion { .. }));
    let interval = h.swim.config().probe_interval;
    h.now = deadline + interval * 2 + Duration::from_millis(1);
    let health = h.swim.local_health();
    h.swim.handle_timeout(h.now);
    assert_eq!(h.swim.local_health(), health + 2 + 1);
    assert_eq!(
        h.swim.member(&id(1)).unwrap().state,
        State::Suspect,
        "extended, not dead"
    );
}

#[test]
fn a_coordinate_that_moved_exactly_the_bound_is_not_sent_unasked() {
    // "Moved by more than the bound": at the bound itself it stays unsent.
    let config = coords::Config::default();
    let mut m = Member::new(id(1), 0, Vec::new(), Instant::now());
    let sent = Coordinate::new(&config);
    let floor = COORD_RESEND_FLOOR.as_secs_f64();
    let mut own = sent.clone();
    own.adjustment = sent.adjustment + floor;
    m.coord_sent = Some(sent);
    // No coordinate of the member: the bound is the floor.
    let moved = own.moved_since(m.coord_sent.as_ref().unwrap());
    assert_eq!(moved, floor);
    assert!(!coord_moved(&own, &m));
    own.adjustment += 1e-6;
    assert!(coord_moved(&own, &m));
}

#[test]
fn updates_and_app_payloads_are_piggybacked_mult_times_the_digits_of_the_group_size() {
    let config = Config {
        retransmit_mult: 4,
        app_retransmit_mult: 4,
        ..Config::lan()
    };
    // ceil(log10(n + 1)): 1 up to 9 members, 2 from 10 to 99, 3 from 100.
    for limit in [Config::retransmit_limit, Config::app_retransmit_limit] {
        assert_eq!(limit(&config, 9), 4);
        assert_eq!(limit(&config, 10), 8);
        assert_eq!(limit(&config, 99), 8);
        assert_eq!(limit(&config, 100), 12);
    }
    // A multiplier of zero still sends each payload once per digit.
    let zero = Config {
        app_retransmit_mult: 0,
        ..Config::lan()
    };
    assert_eq!(zero.app_retransmit_limit(10), 2);
}

#[test]
fn timer_entries_are_equal_exactly_when_they_order_equal() {
    // The timer heap's Eq must agree with its Ord (time, then insertion
    // order; the timer itself does not count).
    let now = Instant::now();
    let entry = |order, timer| Scheduled {
        at: now,
        order,
        timer,
    };
    let a = entry(1, Timer::Sync);
    let same_slot = entry(1, Timer::Reclaim);
    let later = entry(2, Timer::Sync);
    assert_eq!(a, same_slot);
    assert_ne!(a, later);
    assert_ne!(
        a,
        Scheduled {
            at: now + Duration::from_millis(1),
            order: 1,
            timer: Timer::Sync,
        }
    );
}

/// Messages from others are counted as they are taken in; this node's
/// own (a relay's loop) are not taken in at all.
#[test]
fn messages_taken_in_are_counted() {
    let mut h = Harness::new(3);
    let before = h.swim.stats().messages_in;
    let empty = || Message::Gossip(Gossip { updates: vec![] });
    h.recv(1, empty());
    h.recv(2, empty());
    assert_eq!(h.swim.stats().messages_in, before + 2);
    h.recv(0, empty());
    assert_eq!(h.swim.stats().messages_in, before + 2, "not its own");
}

/// An indirect phase whose timeout fires late (this node was not running)
/// is inconclusive: the target is not suspected, and the node counts it
/// against its own health, one step beyond the stall's own steps.
#[test]
fn a_late_indirect_timeout_is_inconclusive_and_counts_against_local_health() {
    let mut h = Harness::new(5);
    let (target, _) = h.probe();
    h.fire_next(); // direct timeout: ping-reqs
    h.drain();
    h.events();
    assert_eq!(h.swim.local_health(), 0);
    let interval = h.swim.config().probe_interval;
    let indirect = h
        .swim
        .timers
        .iter()
        .find(|s| matches!(s.timer, Timer::IndirectTimeout(_)))
        .expect("the indirect phase runs")
        .at;
    let first = h.swim.poll_timeout().unwrap();
    h.now = indirect + interval + interval / 2;
    let stalled = ((h.now - first).as_nanos() / interval.as_nanos()) as u32;
    assert!(stalled >= 1);
    h.swim.handle_timeout(h.now);
    assert_eq!(
        h.swim.local_health(),
        (stalled + 1).min(h.swim.config().max_local_health)
    );
    assert_eq!(h.state_of(&target), State::Alive, "not suspected");
}

/// A late suspicion timer asks the suspect directly even while another
/// member's probe is in flight (only a probe of the suspect itself makes
/// a new one unnecessary).
#[test]
fn a_late_suspicion_timer_asks_the_suspect_while_another_member_is_probed() {
    let mut h = Harness::new(5);
    let target = h.failed_probe();
    h.drain();
    h.events();
    assert!(!h.swim.probes.values().any(|p| p.target == target));
    let other = (1..=5).map(id).find(|n| *n != target).unwrap();
    h.swim.start_probe(h.now, other.clone());
    assert!(
        h.drain()
            .iter()
            .any(|t| t.to == other && matches!(t.message, Message::Ping(_)))
    );
    let incarnation = h.swim.member(&target).unwrap().incarnation;
    let late = h.swim.suspicions[&target].deadline() + Duration::from_secs(2);
    h.swim
        .suspicion_timeout(late, target.clone(), incarnation, true);
    assert_eq!(h.state_of(&target), State::Suspect, "extended");
    assert!(
        h.drain()
            .iter()
            .any(|t| t.to == target && matches!(t.message, Message::Ping(_))),
        "the suspect is asked"
    );
}

/// A probe round skips a member whose probe is still in flight.
#[test]
fn a_member_already_probed_is_skipped_by_the_next_round() {
    let mut h = Harness::new(3);
    h.swim.start_probe(h.now, id(1));
    h.drain();
    h.swim.probe_order = vec![id(1), id(2)];
    h.swim.probe_next = 0;
    assert_eq!(h.swim.next_probe_target(None), Some(id(2)));
}

/// Timers due at the same instant fire in the order they were set.
#[test]
fn timers_due_at_the_same_instant_fire_in_the_order_they_were_set() {
    let mut h = Harness::new(0);
    h.swim.timers.clear();
    let at = h.now + Duration::from_secs(1);
    for seq in 0..8 {
        h.swim.schedule(at, Timer::RelayTimeout(seq));
    }
    let fired: Vec<Timer> = std::iter::from_fn(|| h.swim.timers.pop())
        .map(|s| s.timer)
        .collect();
    assert_eq!(fired, (0..8).map(Timer::RelayTimeout).collect::<Vec<_>>());
}

/// A queued update about a third member rides on the next probe.
#[test]
fn a_queued_update_rides_on_the_next_probe() {
    let mut h = Harness::new(5);
    let news = alive(9, 3);
    h.swim.enqueue_broadcast(news.clone());
    let mut out = Vec::new();
    for _ in 0..10 {
        h.fire_next();
        out = h.drain();
        if out.iter().any(|t| matches!(t.message, Message::Ping(_))) {
            break;
        }
    }
    let carried = out.iter().any(|t| match &t.message {
        Message::Ping(p) => p.updates.contains(&news),
        _ => false,
    });
    assert!(carried, "{out:?}");
}

/// A suspect declared dead is counted.
#[test]
fn a_declared_death_is_counted() {
    let mut h = Harness::new(5);
    let target = h.failed_probe();
    assert_eq!(h.swim.stats().declared_dead, 0);
    let (_, max) = h.swim.config().suspicion_bounds(6);
    h.swim.heard = h.now + max;
    h.advance(max + Duration::from_millis(1));
    assert_eq!(h.state_of(&target), State::Dead);
    let dead = (1..=5)
        .filter(|n| h.state_of(&id(*n)) == State::Dead)
        .count();
    assert_eq!(h.swim.stats().declared_dead, dead as u64);
}

/// A membership table of a few members goes in one message (chunks are
/// cut at 32 KiB or 256 members, not sooner).
#[test]
fn a_small_table_goes_in_one_sync_message() {
    let mut h = Harness::new(20);
    h.swim.send_table(&id(1), false);
    let syncs = h
        .drain()
        .into_iter()
        .filter(|t| matches!(t.message, Message::Sync(_)))
        .count();
    assert_eq!(syncs, 1);
}

/// Node `me` of the group `0..n`, knowing every other member, its wall
/// clock at `since_epoch` when `now`.
fn scheduled_node(me: u32, n: u32, now: Instant, since_epoch: Duration) -> Swim<SmallRng> {
    let mut swim = Swim::new(
        id(me),
        Vec::new(),
        Config::lan(),
        SmallRng::seed_from_u64(u64::from(me)),
        now,
    );
    swim.handle_message(
        now,
        id((me + 1) % n),
        Message::Gossip(Gossip {
            updates: (0..n).filter(|m| *m != me).map(|m| alive(m, 0)).collect(),
        }),
    );
    swim.set_wall_clock(now, since_epoch);
    swim
}

/// The shared schedule: in every period each member is the target of
/// exactly one other, and over `n - 1` periods each node probes every
/// other once (SWIM's round-robin bound, kept).
#[test]
fn the_shared_schedule_probes_each_member_once_a_period_and_every_member_in_n_minus_1() {
    let now = Instant::now();
    let n = 7;
    let nodes: Vec<_> = (0..n)
        .map(|m| scheduled_node(m, n, now, Duration::from_secs(1_700_000_000)))
        .collect();
    let mut probed_by: Vec<BTreeSet<NodeId>> = vec![BTreeSet::new(); n as usize];
    for r in 1_000..1_000 + u64::from(n - 1) {
        let targets: BTreeSet<NodeId> = nodes
            .iter()
            .map(|s| s.scheduled_target(r).expect("a target").clone())
            .collect();
        assert_eq!(targets.len(), n as usize, "period {r}: one prober each");
        for (m, node) in nodes.iter().enumerate() {
            let target = node.scheduled_target(r).expect("a target");
            assert_ne!(target, &id(m as u32), "never itself");
            probed_by[m].insert(target.clone());
        }
    }
    for (m, seen) in probed_by.iter().enumerate() {
        assert_eq!(seen.len(), n as usize - 1, "node {m} probed every other");
    }
}

/// With a wall clock, the probe rounds follow the shared periods: one
/// probe a period, at this node's phase, of the period's scheduled target
/// (and the first round, at a random instant, falls into step after it).
#[test]
fn probe_rounds_follow_the_shared_periods_at_the_nodes_phase() {
    let now = Instant::now();
    let interval = Config::lan().probe_interval;
    // The wall clock is 30 ms into a period.
    let epoch = interval * 17_000_000 + Duration::from_millis(30);
    let mut swim = scheduled_node(2, 6, now, epoch);
    let wall = |at: Instant| epoch + (at - now);
    let mut t = now;
    let mut periods = Vec::new();
    for _ in 0..8 {
        let at = swim.poll_timeout().expect("armed");
        // Skip the probe's own timers: answer nothing, fire only rounds.
        swim.timers.retain(|s| s.timer == Timer::ProbeRound);
        let at = swim.poll_timeout().unwrap_or(at);
        t = t.max(at);
        swim.handle_timeout(t);
        let pings: Vec<Transmit> = std::iter::from_fn(|| swim.poll_transmit())
            .filter(|x| matches!(x.message, Message::Ping(_)))
            .collect();
        assert_eq!(pings.len(), 1, "one probe a round");
        // The period whose phase point is nearest.
        let phase = (interval.as_nanos() as f64 * swim.probe_phase) as u128;
        let r =
            ((wall(t).as_nanos() - phase + interval.as_nanos() / 2) / interval.as_nanos()) as u64;
        assert_eq!(Some(&pings[0].to), swim.scheduled_target(r), "period {r}");
        // Let the probe end (answered) so that the target is free again.
        swim.probes.clear();
        periods.push((r, wall(t).as_nanos() % interval.as_nanos()));
    }
    let phase = (interval.as_nanos() as f64 * swim.probe_phase) as u128;
    for pair in periods[1..].windows(2) {
        assert_eq!(pair[1].0, pair[0].0 + 1, "one round a period: {periods:?}");
    }
    for (_, into) in &periods[1..] {
        assert!(into.abs_diff(phase) <= 1, "at the phase: {periods:?}");
    }
}

/// Without a wall clock, or with the schedule off, a node walks its own
/// random permutation (the scheduled target would be another member).
#[test]
fn with_the_shared_schedule_off_the_random_permutation_decides() {
    let now = Instant::now();
    let epoch = Duration::from_secs(1_700_000_000);
    let mut on = scheduled_node(0, 8, now, epoch);
    let mut off = scheduled_node(0, 8, now, epoch);
    off.config.shared_probe_schedule = false;
    let mut unset = scheduled_node(0, 8, now, epoch);
    unset.wall = None;
    let at = now + Duration::from_millis(1_000);
    let r = on.period(at).expect("a period").0;
    assert!(off.period(at).is_none() && unset.period(at).is_none());
    let mut differs = false;
    for k in 0..7 {
        let scheduled = on.scheduled_target(r + k).cloned();
        assert_eq!(on.next_probe_target(Some(r + k)), scheduled);
        differs |= off.next_probe_target(None) != scheduled;
    }
    assert!(differs, "the permutation is not the schedule");
}

/// Fires every probe round `late` after it is due, answering nothing, and
/// returns the targets of `rounds` rounds.
fn targets_of_late_rounds(
    swim: &mut Swim<SmallRng>,
    now: &mut Instant,
    late: Duration,
    rounds: usize,
) -> Vec<NodeId> {
    let mut out = Vec::new();
    for _ in 0..rounds {
        swim.timers.retain(|s| s.timer == Timer::ProbeRound);
        let at = swim.poll_timeout().expect("a round is armed");
        *now = (*now).max(at + late);
        swim.handle_timeout(*now);
        out.extend(
            std::iter::from_fn(|| swim.poll_transmit())
                .filter(|x| matches!(x.message, Message::Ping(_)))
                .map(|x| x.to),
        );
        swim.probes.clear();
    }
    out
}

/// A round due at the very end of a period and fired a little late stays
/// in its period: it neither takes the next period's target nor skips a
/// period (which had left a node probing every second period).
#[test]
fn a_round_fired_late_at_the_end_of_a_period_keeps_its_period() {
    let mut now = Instant::now();
    let epoch = Duration::from_secs(1_700_000_000);
    let mut swim = scheduled_node(0, 8, now, epoch);
    swim.probe_phase = 0.999;
    // Let the first round (at a random instant) put it in step.
    targets_of_late_rounds(&mut swim, &mut now, Duration::ZERO, 1);
    let start = swim
        .period(swim.poll_timeout().expect("armed"))
        .expect("a period")
        .0;
    let got = targets_of_late_rounds(&mut swim, &mut now, Duration::from_millis(2), 14);
    let want: Vec<NodeId> = (0..14)
        .map(|k| swim.scheduled_target(start + k).expect("a target").clone())
        .collect();
    assert_eq!(
        got, want,
        "one round a period, each on its own period's target"
    );
}

/// A node whose local health is raised probes every `LHM + 1` periods,
/// always at the same remainder: on the schedule it would reach only
/// some members (here, `LHM + 1 = 2` and `n - 1 = 6`, half of them), so it
/// walks its permutation and still reaches every member; with `n - 1 = 7`
/// (coprime) it keeps the schedule, which reaches every member too.
#[test]
fn a_node_with_raised_local_health_still_probes_every_member() {
    let mut now = Instant::now();
    let epoch = Duration::from_secs(1_700_000_000);
    let mut swim = scheduled_node(0, 7, now, epoch);
    swim.health = 1;
    let got: BTreeSet<NodeId> = targets_of_late_rounds(&mut swim, &mut now, Duration::ZERO, 12)
        .into_iter()
        .collect();
    assert_eq!(got, (1..7).map(id).collect::<BTreeSet<_>>());
    let mut swim = scheduled_node(0, 8, now, epoch);
    swim.health = 1;
    let got = targets_of_late_rounds(&mut swim, &mut now, Duration::ZERO, 7);
    assert_eq!(
        got.iter().collect::<BTreeSet<_>>().len(),
        7,
        "on the schedule, every member in n - 1 rounds: {got:?}"
    );
}

/// The ring follows the active set as members die and come back.
#[test]
fn the_ring_follows_deaths_and_returns() {
    let now = Instant::now();
    let mut swim = scheduled_node(0, 5, now, Duration::from_secs(1_700_000_000));
    assert_eq!(swim.ring, (1..5).map(id).collect::<Vec<_>>());
    swim.handle_message(
        now,
        id(1),
        Message::Gossip(Gossip {
            updates: vec![Update::Dead {
                id: id(3),
                incarnation: 0,
                from: id(1),
            }],
        }),
    );
    assert_eq!(swim.ring, vec![id(1), id(2), id(4)]);
    swim.handle_message(
        now,
        id(3),
        Message::Gossip(Gossip {
            updates: vec![alive(3, 1)],
        }),
    );
    assert_eq!(swim.ring, (1..5).map(id).collect::<Vec<_>>());
}
