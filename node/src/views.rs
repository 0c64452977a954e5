//! Every JSON shape of the HTTP API, written once: the API serializes these
//! types, `baton` and the testnet deserialize them. Field names and order are
//! the contract scripts rely on (docs/operations.md, "JSON shapes").
//!
//! Reading is lenient where an older node might leave a field out: such
//! fields take their default. The fields that say what a thing is (ids,
//! states, epochs) are required, so that JSON of another shape is refused.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One member as shown by `GET /v1/members` and `baton members` (this
/// node included, with `local` set).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Member {
    /// Peer id, base58.
    pub id: String,
    /// The name it announced.
    #[serde(default)]
    pub name: String,
    /// `alive`, `suspect`, `dead` or `left`.
    pub state: String,
    /// The incarnation last heard from it: of its state, or of the
    /// metadata it re-announced (a new load, new tags) since.
    #[serde(default)]
    pub incarnation: u32,
    /// Smoothed RTT of direct probes, in milliseconds.
    #[serde(default)]
    pub rtt_ms: Option<f64>,
    /// RTT estimated from Vivaldi coordinates, in milliseconds.
    #[serde(default)]
    pub distance_ms: Option<f64>,
    /// Addresses it announced; of a remote member, those beyond loopback
    /// first (it announces its loopback ones too).
    #[serde(default)]
    pub addrs: Vec<String>,
    /// Sessions it will host.
    #[serde(default)]
    pub capacity: u32,
    /// Sessions it hosts.
    #[serde(default)]
    pub load: u32,
    /// Wall-clock time of its last state change, RFC 3339.
    #[serde(default)]
    pub since: String,
    /// The tags it announced (`--tag`), by key.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Its Vivaldi coordinate as last heard, when known (this node's own
    /// for the local member).
    #[serde(default)]
    pub coordinate: Option<Coordinate>,
    /// Whether this member is the node that answers.
    #[serde(default)]
    pub local: bool,
}

/// A Vivaldi network coordinate, in milliseconds, in [`Member::coordinate`]
/// and [`Status::coordinate`]. The estimated RTT between two nodes is the
/// Euclidean distance of their `vec_ms` plus both `height_ms`, plus both
/// `adjustment_ms` unless that makes it non-positive (what `distance_ms`
/// shows).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Coordinate {
    /// The Euclidean part, one component per dimension.
    pub vec_ms: Vec<f64>,
    /// The node's access link, which every path to it crosses.
    #[serde(default)]
    pub height_ms: f64,
    /// Offset learnt from how far off recent estimates were; may be negative.
    #[serde(default)]
    pub adjustment_ms: f64,
    /// Confidence: small means confident (dimensionless, at most 1.5).
    #[serde(default)]
    pub error: f64,
}

impl Coordinate {
    /// The protocol's coordinate (seconds), if every value is finite.
    pub fn to_coordinate(&self) -> Option<baton_protocol::coords::Coordinate> {
        let c = baton_protocol::coords::Coordinate {
            vec: self.vec_ms.iter().map(|v| v / 1e3).collect(),
            error: self.error,
            adjustment: self.adjustment_ms / 1e3,
            height: self.height_ms / 1e3,
        };
        c.is_valid().then_some(c)
    }
}

/// A libp2p peer as shown by `GET /v1/peers` and `baton peers`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Peer {
    /// Peer id, base58.
    pub id: String,
    /// Remote addresses of its open connections (one per connection, so
    /// the same address may appear twice).
    #[serde(default)]
    pub addrs: Vec<String>,
    /// Open connections.
    #[serde(default)]
    pub connections: u32,
    /// `pending` (handshake running), `admitted`, `refused` or `none`.
    pub admission: String,
    /// Why it was refused, when it was.
    #[serde(default)]
    pub reason: Option<String>,
}

/// One session as shown by `GET /v1/sessions`, `GET`/`DELETE
/// /v1/sessions/{id}`, `POST /v1/sessions` and `baton sessions`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Session {
    /// Session id.
    pub id: String,
    /// Service name.
    #[serde(default)]
    pub service: String,
    /// Primary's peer id.
    pub primary: String,
    /// Primary's name, when known.
    #[serde(default)]
    pub primary_name: String,
    /// Backups' peer ids, in takeover order.
    #[serde(default)]
    pub backups: Vec<String>,
    /// Epoch: raised by every change of primary.
    pub epoch: u64,
    /// Version within the epoch.
    #[serde(default)]
    pub version: u64,
    /// `active` or `closed`.
    #[serde(default)]
    pub state: String,
    /// The client's locator.
    #[serde(default)]
    pub client: String,
    /// The client's location key.
    #[serde(default)]
    pub location: String,
    /// Service parameters.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// Session start, Unix ms.
    #[serde(default)]
    pub started_ms: u64,
    /// Last write, Unix ms.
    #[serde(default)]
    pub updated_ms: u64,
    /// Why the last version was written.
    #[serde(default)]
    pub reason: String,
    /// Changes of primary this node saw, oldest first.
    #[serde(default)]
    pub history: Vec<Move>,
    /// Whether this node hosts it now.
    #[serde(default)]
    pub hosted_here: bool,
    /// Whether this node stands by for it warm (its first backup, with
    /// `standby=warm`).
    #[serde(default)]
    pub standby_here: bool,
    /// Whether its stream is paused here for want of the client's consent.
    #[serde(default)]
    pub paused: bool,
    /// Its service instance on this node: the one running here, or the
    /// one that failed here (kept while the session is in the map); `null`
    /// when none runs or failed here.
    #[serde(default)]
    pub instance: Option<Instance>,
}

/// A session's service instance on one node, in [`Session::instance`]. As
/// of the last change the node saw: start, restart, failure, or any change
/// of the session.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Instance {
    /// `running`, `restarting` (an `exec` command ended and waits out its
    /// backoff) or `failed` (it would not start, or its command kept
    /// ending: the session moved to a backup, or closed without one).
    pub state: String,
    /// `exec`: how many times its command was started again.
    #[serde(default)]
    pub restarts: u32,
    /// `exec`: the process id of its command, while one runs.
    #[serde(default)]
    pub pid: Option<u32>,
    /// `exec`: how its command last ended (`exit status: 1`, `signal: 9
    /// (SIGKILL)`).
    #[serde(default)]
    pub last_exit: Option<String>,
    /// Why it failed, or the last error it met.
    #[serde(default)]
    pub error: Option<String>,
    /// `exec`: the last lines its commands wrote to stderr, oldest first
    /// (at most 10, each cut at 256 bytes).
    #[serde(default)]
    pub stderr: Vec<String>,
    /// `exec` with a `{gate}`: packets its gate dropped (not from its
    /// command, or not RTP).
    #[serde(default)]
    pub packets_dropped: u64,
}

/// One change of primary, in [`Session::history`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Move {
    /// The epoch that began.
    pub epoch: u64,
    /// The new primary's peer id.
    pub primary: String,
    /// Why.
    #[serde(default)]
    pub reason: String,
    /// When, Unix ms (writer's clock).
    #[serde(default)]
    pub at_ms: u64,
}

/// An event of `GET /v1/events`, the `data` of an SSE event named after its
/// `kind`.
///
/// Every field may be missing when read: `baton watch` shows what there is
/// of an event kind it does not know rather than stop.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Event {
    /// `member` (a member changed state), `refuted` (this node refuted a
    /// suspicion about itself), `session` (a session changed on this
    /// node: `id` is the session, `state` `started` or `stopped` (hosting
    /// it), `failed` (its service failed here), `restarted` (its `exec`
    /// command ended and was started again), `paused` or `resumed`) or
    /// `reload` (this node reloaded its configuration on SIGHUP: `state`
    /// `applied`, with [`Event::applied`] and [`Event::restart`], or
    /// `refused`, with the error in `reason`).
    #[serde(default)]
    pub kind: String,
    /// Wall-clock time, RFC 3339 with milliseconds.
    #[serde(default)]
    pub at: String,
    /// Wall-clock time, milliseconds since the Unix epoch (0: unknown).
    #[serde(default)]
    pub at_ms: u64,
    /// The member concerned (this node for `refuted`), or the session.
    #[serde(default)]
    pub id: String,
    /// Its name, when known (this node's, for `session`).
    #[serde(default)]
    pub name: String,
    /// Its new state.
    #[serde(default)]
    pub state: String,
    /// Its previous state, if it had one.
    #[serde(default)]
    pub previous: Option<String>,
    /// The incarnation of the new state (the epoch, for `session` events).
    #[serde(default)]
    pub incarnation: u32,
    /// Why, for `session` events (`takeover: ...`, `transfer: ...`, ...);
    /// for a refused `reload`, the error.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<String>,
    /// `reload` events: the reloadable fields that changed and are in
    /// effect now, by their names in the config file (`log_level`,
    /// `allow`, `services.exec`, ...). Left out when empty.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub applied: Vec<String>,
    /// `reload` events: the fields that changed but take effect only at a
    /// restart (`capacity`, `listen`, ...). Left out when empty.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub restart: Vec<String>,
}

/// The event of `GET /v1/events` (SSE name `lagged`) that tells a
/// subscriber it fell behind and missed events.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Lagged {
    /// Always `lagged`.
    pub kind: String,
    /// Events this subscriber missed.
    pub missed: u64,
}

impl Lagged {
    /// The SSE event name and `kind` of this event.
    pub const KIND: &str = "lagged";

    /// `missed` events were lost.
    pub fn new(missed: u64) -> Self {
        Lagged {
            kind: Self::KIND.to_owned(),
            missed,
        }
    }
}

/// Body of `GET /v1/status`: this node and what it sees.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Status {
    /// Peer id, base58.
    pub id: String,
    /// Human name (`--name`).
    pub name: String,
    /// Overlay name: only nodes of the same overlay are admitted.
    #[serde(default)]
    pub overlay: String,
    /// `lan` or `wan`.
    #[serde(default)]
    pub profile: String,
    /// Software version.
    #[serde(default)]
    pub version: String,
    /// Sessions this node will host.
    #[serde(default)]
    pub capacity: u32,
    /// Seconds since the node started.
    #[serde(default)]
    pub uptime_s: u64,
    /// This node's SWIM incarnation.
    #[serde(default)]
    pub incarnation: u32,
    /// Lifeguard's local health multiplier (0 is healthy).
    #[serde(default)]
    pub local_health: u32,
    /// Addresses this node listens on.
    #[serde(default)]
    pub listen_addrs: Vec<String>,
    /// Members by state, this node excluded.
    #[serde(default)]
    pub members: MemberCounts,
    /// libp2p peers connected or recently refused.
    #[serde(default)]
    pub peers: u64,
    /// This node's Vivaldi coordinate (`null` until its first RTT sample).
    #[serde(default)]
    pub coordinate: Option<Coordinate>,
}

/// Members by state, in [`Status::members`].
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct MemberCounts {
    /// Alive members.
    #[serde(default)]
    pub alive: u64,
    /// Suspected members.
    #[serde(default)]
    pub suspect: u64,
    /// Members declared dead.
    #[serde(default)]
    pub dead: u64,
    /// Members that left.
    #[serde(default)]
    pub left: u64,
}

/// Body of `POST /v1/sessions`. The API checks it field by field (see
/// `api::request`) to name the field at fault; this type is how clients
/// write it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct OpenRequest {
    /// Service name, such as `rtp-audio`.
    pub service: String,
    /// Client locator (`ip:port` for RTP).
    pub client: String,
    /// Service parameters.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
}

/// A client's performance report, the body of `POST
/// /v1/sessions/{id}/report`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Report {
    /// Fraction of packets lost, 0 to 1.
    pub loss: f64,
    /// Interarrival jitter, ms.
    pub jitter_ms: f64,
    /// Round-trip time, ms.
    pub rtt_ms: f64,
    /// Packets received since the last report.
    #[serde(default)]
    pub packets: u64,
}

/// Body of the `202 Accepted` answer to `POST /v1/sessions/{id}/report`
/// when the node asked is not the session's primary: the report was sent on
/// to the primary, whose engine is the one that weighs it. (A primary that
/// takes the report itself answers `204 No Content`.)
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Forwarded {
    /// Peer id of the primary the report went to.
    pub forwarded_to: String,
    /// Its node name.
    pub forwarded_to_name: String,
}

/// Body of `GET /v1/health` when the node's driver answers: `{"status": "ok"}`
/// (when it does not, the answer is a 503 with an [`ErrorBody`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Health {
    /// `ok`.
    pub status: String,
}

/// Body of every 4xx/5xx answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    /// What went wrong and what to do about it.
    pub error: String,
}

#[cfg(test)]
mod tests {
    use serde::de::DeserializeOwned;

    use super::*;

    /// `value` serializes to exactly `json` and reads back unchanged.
    fn round_trip<T>(value: &T, json: &str)
    where
        T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        assert_eq!(serde_json::to_string(value).unwrap(), json);
        assert_eq!(&serde_json::from_str::<T>(json).unwrap(), value);
    }

    fn member() -> Member {
        Member {
            id: "12D3KooWBravo".to_owned(),
            name: "bravo".to_owned(),
            state: "alive".to_owned(),
            incarnation: 3,
            rtt_ms: Some(0.4),
            distance_ms: None,
            addrs: vec!["/ip4/127.0.0.1/udp/4001/quic-v1".to_owned()],
            capacity: 10,
            load: 2,
            since: "2026-01-01T00:00:00.000Z".to_owned(),
            tags: [("region".to_owned(), "eu".to_owned())].into(),
            coordinate: Some(Coordinate {
                vec_ms: vec![1.5, -0.25],
                height_ms: 0.01,
                adjustment_ms: -0.125,
                error: 0.5,
            }),
            local: false,
        }
    }

    fn session() -> Session {
        Session {
            id: "s1".to_owned(),
            service: "rtp-audio".to_owned(),
            primary: "12D3KooWBravo".to_owned(),
            primary_name: "bravo".to_owned(),
            backups: vec!["12D3KooWLocal".to_owned()],
            epoch: 2,
            version: 1,
            state: "active".to_owned(),
            client: "127.0.0.1:5004".to_owned(),
            location: "127.0.0.0/24".to_owned(),
            params: [("codec".to_owned(), "pcmu".to_owned())].into(),
            started_ms: 1_000,
            updated_ms: 2_000,
            reason: "takeover: alpha is dead".to_owned(),
            history: vec![Move {
                epoch: 2,
                primary: "12D3KooWBravo".to_owned(),
                reason: "takeover: alpha is dead".to_owned(),
                at_ms: 2_000,
            }],
            hosted_here: false,
            standby_here: false,
            paused: false,
            instance: None,
        }
    }

    #[test]
    fn member_round_trips_with_the_documented_fields() {
        round_trip(
            &member(),
            r#"{"id":"12D3KooWBravo","name":"bravo","state":"alive","incarnation":3,"rtt_ms":0.4,"distance_ms":null,"addrs":["/ip4/127.0.0.1/udp/4001/quic-v1"],"capacity":10,"load":2,"since":"2026-01-01T00:00:00.000Z","tags":{"region":"eu"},"coordinate":{"vec_ms":[1.5,-0.25],"height_ms":0.01,"adjustment_ms":-0.125,"error":0.5},"local":false}"#,
        );
    }

    #[test]
    fn member_lists_of_another_shape_are_refused() {
        let err = serde_json::from_str::<Vec<Member>>(r#"{"members": []}"#).unwrap_err();
        assert!(err.to_string().contains("sequence"), "{err}");
        let err = serde_json::from_str::<Vec<Member>>(r#"[{"name": "x", "state": "alive"}]"#)
            .unwrap_err();
        assert!(err.to_string().contains("`id`"), "{err}");
    }

    #[test]
    fn a_member_from_an_older_node_reads_with_defaults() {
        let m: Member = serde_json::from_str(r#"{"id": "p", "state": "left"}"#).unwrap();
        assert_eq!((m.name.as_str(), m.incarnation, m.rtt_ms), ("", 0, None));
        assert!(m.tags.is_empty() && m.coordinate.is_none() && !m.local);
    }

    #[test]
    fn peer_round_trips_with_a_null_reason() {
        round_trip(
            &Peer {
                id: "12D3KooWBravo".to_owned(),
                addrs: vec!["/ip4/127.0.0.1/tcp/4001".to_owned()],
                connections: 1,
                admission: "admitted".to_owned(),
                reason: None,
            },
            r#"{"id":"12D3KooWBravo","addrs":["/ip4/127.0.0.1/tcp/4001"],"connections":1,"admission":"admitted","reason":null}"#,
        );
    }

    #[test]
    fn session_round_trips_with_its_history() {
        round_trip(
            &session(),
            r#"{"id":"s1","service":"rtp-audio","primary":"12D3KooWBravo","primary_name":"bravo","backups":["12D3KooWLocal"],"epoch":2,"version":1,"state":"active","client":"127.0.0.1:5004","location":"127.0.0.0/24","params":{"codec":"pcmu"},"started_ms":1000,"updated_ms":2000,"reason":"takeover: alpha is dead","history":[{"epoch":2,"primary":"12D3KooWBravo","reason":"takeover: alpha is dead","at_ms":2000}],"hosted_here":false,"standby_here":false,"paused":false,"instance":null}"#,
        );
    }

    #[test]
    fn a_failed_instance_round_trips_with_its_stderr() {
        let session = Session {
            instance: Some(Instance {
                state: "failed".to_owned(),
                restarts: 4,
                pid: None,
                last_exit: Some("exit status: 1".to_owned()),
                error: Some("gave up after 5 quick exits".to_owned()),
                stderr: vec!["a.wav: No such file".to_owned()],
                packets_dropped: 0,
            }),
            ..session()
        };
        let json = serde_json::to_string(&session).unwrap();
        assert!(
            json.ends_with(
                r#""paused":false,"instance":{"state":"failed","restarts":4,"pid":null,"last_exit":"exit status: 1","error":"gave up after 5 quick exits","stderr":["a.wav: No such file"],"packets_dropped":0}}"#
            ),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<Session>(&json).unwrap(), session);
        // From an older node: no instance.
        let old: Session =
            serde_json::from_str(r#"{"id": "s1", "primary": "p", "epoch": 1}"#).unwrap();
        assert_eq!(old.instance, None);
    }

    #[test]
    fn a_session_needs_its_id_primary_and_epoch() {
        for (json, field) in [
            (r#"{"primary": "p", "epoch": 1}"#, "`id`"),
            (r#"{"id": "s1", "epoch": 1}"#, "`primary`"),
            (r#"{"id": "s1", "primary": "p"}"#, "`epoch`"),
        ] {
            let err = serde_json::from_str::<Session>(json).unwrap_err();
            assert!(err.to_string().contains(field), "{json}: {err}");
        }
    }

    #[test]
    fn member_event_round_trips_without_a_reason() {
        round_trip(
            &Event {
                kind: "member".to_owned(),
                at: "2026-03-01T12:34:56.789Z".to_owned(),
                at_ms: 1_772_368_496_789,
                id: "12D3KooWBravo".to_owned(),
                name: "bravo".to_owned(),
                state: "dead".to_owned(),
                previous: Some("suspect".to_owned()),
                incarnation: 3,
                reason: None,
                ..Default::default()
            },
            r#"{"kind":"member","at":"2026-03-01T12:34:56.789Z","at_ms":1772368496789,"id":"12D3KooWBravo","name":"bravo","state":"dead","previous":"suspect","incarnation":3}"#,
        );
    }

    #[test]
    fn session_event_round_trips_with_its_reason() {
        round_trip(
            &Event {
                kind: "session".to_owned(),
                at: "2026-03-01T12:34:56.789Z".to_owned(),
                at_ms: 1_772_368_496_789,
                id: "s1".to_owned(),
                name: "alpha".to_owned(),
                state: "started".to_owned(),
                previous: None,
                incarnation: 2,
                reason: Some("open".to_owned()),
                ..Default::default()
            },
            r#"{"kind":"session","at":"2026-03-01T12:34:56.789Z","at_ms":1772368496789,"id":"s1","name":"alpha","state":"started","previous":null,"incarnation":2,"reason":"open"}"#,
        );
    }

    #[test]
    fn reload_events_round_trip_with_their_fields() {
        round_trip(
            &Event {
                kind: "reload".to_owned(),
                at: "2026-03-01T12:34:56.789Z".to_owned(),
                at_ms: 1_772_368_496_789,
                id: "12D3KooWLocal".to_owned(),
                name: "alpha".to_owned(),
                state: "applied".to_owned(),
                applied: vec!["log_level".to_owned(), "allow".to_owned()],
                restart: vec!["capacity".to_owned()],
                ..Event::default()
            },
            r#"{"kind":"reload","at":"2026-03-01T12:34:56.789Z","at_ms":1772368496789,"id":"12D3KooWLocal","name":"alpha","state":"applied","previous":null,"incarnation":0,"applied":["log_level","allow"],"restart":["capacity"]}"#,
        );
        round_trip(
            &Event {
                kind: "reload".to_owned(),
                state: "refused".to_owned(),
                reason: Some("invalid capacity".to_owned()),
                ..Event::default()
            },
            r#"{"kind":"reload","at":"","at_ms":0,"id":"","name":"","state":"refused","previous":null,"incarnation":0,"reason":"invalid capacity"}"#,
        );
    }

    #[test]
    fn lagged_round_trips() {
        round_trip(&Lagged::new(12), r#"{"kind":"lagged","missed":12}"#);
    }

    #[test]
    fn status_round_trips_with_its_counts() {
        round_trip(
            &Status {
                id: "12D3KooWLocal".to_owned(),
                name: "alpha".to_owned(),
                overlay: "test".to_owned(),
                profile: "lan".to_owned(),
                version: "0.1.0".to_owned(),
                capacity: 8,
                uptime_s: 90,
                incarnation: 9,
                local_health: 2,
                listen_addrs: vec!["/ip4/127.0.0.1/tcp/4000".to_owned()],
                members: MemberCounts {
                    alive: 1,
                    suspect: 1,
                    dead: 0,
                    left: 0,
                },
                peers: 1,
                coordinate: None,
            },
            r#"{"id":"12D3KooWLocal","name":"alpha","overlay":"test","profile":"lan","version":"0.1.0","capacity":8,"uptime_s":90,"incarnation":9,"local_health":2,"listen_addrs":["/ip4/127.0.0.1/tcp/4000"],"members":{"alive":1,"suspect":1,"dead":0,"left":0},"peers":1,"coordinate":null}"#,
        );
    }

    #[test]
    fn open_request_round_trips_and_params_may_be_left_out() {
        round_trip(
            &OpenRequest {
                service: "rtp-audio".to_owned(),
                client: "127.0.0.1:5004".to_owned(),
                params: [("source".to_owned(), "tone".to_owned())].into(),
            },
            r#"{"service":"rtp-audio","client":"127.0.0.1:5004","params":{"source":"tone"}}"#,
        );
        let open: OpenRequest =
            serde_json::from_str(r#"{"service": "rtp-audio", "client": "c"}"#).unwrap();
        assert!(open.params.is_empty());
    }

    #[test]
    fn report_round_trips_and_packets_may_be_left_out() {
        round_trip(
            &Report {
                loss: 0.02,
                jitter_ms: 4.0,
                rtt_ms: 30.0,
                packets: 500,
            },
            r#"{"loss":0.02,"jitter_ms":4.0,"rtt_ms":30.0,"packets":500}"#,
        );
        let report: Report =
            serde_json::from_str(r#"{"loss": 0, "jitter_ms": 1, "rtt_ms": 2}"#).unwrap();
        assert_eq!(report.packets, 0);
        let err =
            serde_json::from_str::<Report>(r#"{"loss": 0, "jitter_ms": 1, "rtt_ms": 2, "mos": 4}"#)
                .unwrap_err();
        assert!(err.to_string().contains("unknown field `mos`"), "{err}");
    }

    #[test]
    fn error_body_round_trips() {
        round_trip(
            &ErrorBody {
                error: "no session \"s9\" on this node".to_owned(),
            },
            r#"{"error":"no session \"s9\" on this node"}"#,
        );
    }
}
