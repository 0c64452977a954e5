//! What `baton` shows people: plain-text tables and detail texts of the
//! API's [`crate::views`], with text from the network made safe for a
//! terminal. No IO here: every function returns the text to print.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use jiff::tz::TimeZone;

use super::sse::Received;
use crate::views::{Event, Forwarded, Instance, Member, Peer, Report, Session, Status};

/// Node names by peer id.
pub type Names = BTreeMap<String, String>;

/// Alignment of a table column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Align {
    Left,
    Right,
}

/// A plain-text table: a header line, then one line per row, columns two
/// spaces apart, no trailing spaces.
fn render_table(columns: &[(&str, Align)], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = columns
        .iter()
        .map(|(title, _)| title.chars().count())
        .collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let titles: Vec<String> = columns
        .iter()
        .map(|(title, _)| (*title).to_owned())
        .collect();
    for row in std::iter::once(&titles).chain(rows) {
        let mut line = String::new();
        for (i, ((_, align), cell)) in columns.iter().zip(row).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            let pad = widths[i].saturating_sub(cell.chars().count());
            match align {
                Align::Left => {
                    line.push_str(cell);
                    line.extend(std::iter::repeat_n(' ', pad));
                }
                Align::Right => {
                    line.extend(std::iter::repeat_n(' ', pad));
                    line.push_str(cell);
                }
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Lines of `key value`, keys in a column of 14.
fn detail_lines(lines: Vec<(&str, String)>) -> String {
    let mut out = String::new();
    for (key, value) in lines {
        out.push_str(format!("{key:<14}{value}").trim_end());
        out.push('\n');
    }
    out
}

/// Text from the network made safe for a terminal: control characters
/// (escape sequences) become `?`.
pub fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// A reason (a reload's error, a session's reason) after an event line:
/// its first line on the event's line, each further one on a line of its
/// own, indented under it (a config file's parse error points at the line
/// and column with a few lines of context). Empty lines are left out; each
/// line is sanitized, tabs shown as spaces.
fn reason_text(reason: &str) -> String {
    let mut lines = reason
        .lines()
        .map(|l| sanitize(&l.replace('\t', "    ")).trim_end().to_owned())
        .filter(|l| !l.trim().is_empty());
    let mut out = lines.next().unwrap_or_default();
    for line in lines {
        out.push('\n');
        out.push_str(REASON_INDENT);
        out.push_str(&line);
    }
    out
}

/// How far the further lines of a [`reason_text`] are indented: past the
/// time of the event line.
const REASON_INDENT: &str = "              ";

/// A cell: sanitized, `-` when empty.
fn cell(text: &str) -> String {
    if text.is_empty() {
        "-".to_owned()
    } else {
        sanitize(text)
    }
}

/// A peer id as shown: its last 8 characters (they differ; the first ones
/// are the same for every Ed25519 key), or all of it with `--wide`.
fn short_id(id: &str, wide: bool) -> String {
    let chars = id.chars().count();
    if wide || chars <= 8 {
        return cell(id);
    }
    cell(&id.chars().skip(chars - 8).collect::<String>())
}

fn millis(value: Option<f64>) -> String {
    match value {
        Some(ms) if ms.is_finite() => format!("{ms:.1}"),
        _ => "-".to_owned(),
    }
}

/// Addresses in a cell: the first and a count of the others, or all of
/// them with `--wide`; each once, as a peer's come one per connection.
fn addresses(addrs: &[String], wide: bool) -> String {
    let mut unique: Vec<&str> = Vec::with_capacity(addrs.len());
    for addr in addrs {
        if !unique.contains(&addr.as_str()) {
            unique.push(addr);
        }
    }
    match unique.as_slice() {
        [] => "-".to_owned(),
        _ if wide => sanitize(&unique.join(",")),
        [one] => sanitize(one),
        [first, rest @ ..] => format!("{} (+{})", sanitize(first), rest.len()),
    }
}

/// Tags in a cell: `key=value` by key, comma-separated; `-` when none.
fn tags(tags: &BTreeMap<String, String>) -> String {
    if tags.is_empty() {
        return "-".to_owned();
    }
    let pairs: Vec<String> = tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
    sanitize(&pairs.join(","))
}

/// The table of `baton members`: this node's name followed by `(local)`.
pub fn members_table(members: &[Member], wide: bool) -> String {
    let rows: Vec<Vec<String>> = members
        .iter()
        .map(|m| {
            let name = if m.local {
                format!("{} (local)", cell(&m.name))
            } else {
                cell(&m.name)
            };
            vec![
                name,
                short_id(&m.id, wide),
                cell(&m.state),
                m.incarnation.to_string(),
                millis(m.rtt_ms),
                millis(m.distance_ms),
                tags(&m.tags),
                addresses(&m.addrs, wide),
            ]
        })
        .collect();
    render_table(
        &[
            ("NAME", Align::Left),
            ("PEER ID", Align::Left),
            ("STATE", Align::Left),
            ("INC", Align::Right),
            ("RTT", Align::Right),
            ("DIST", Align::Right),
            ("TAGS", Align::Left),
            ("ADDRESS", Align::Left),
        ],
        &rows,
    )
}

/// The table of `baton peers`.
pub fn peers_table(peers: &[Peer], wide: bool) -> String {
    let rows: Vec<Vec<String>> = peers
        .iter()
        .map(|p| {
            vec![
                short_id(&p.id, wide),
                cell(&p.admission),
                p.connections.to_string(),
                addresses(&p.addrs, wide),
                cell(p.reason.as_deref().unwrap_or("")),
            ]
        })
        .collect();
    render_table(
        &[
            ("PEER ID", Align::Left),
            ("ADMISSION", Align::Left),
            ("CONNS", Align::Right),
            ("ADDRESS", Align::Left),
            ("REASON", Align::Left),
        ],
        &rows,
    )
}

/// The primary's name: the one the node sent, else one from `names`.
fn primary_name<'a>(session: &'a Session, names: &'a Names) -> Option<&'a str> {
    Some(session.primary_name.as_str())
        .filter(|name| !name.is_empty())
        .or_else(|| names.get(&session.primary).map(String::as_str))
}

/// A node in a table cell: its name when known, else its short id; its full
/// id with `--wide`.
fn node_cell(id: &str, name: Option<&str>, wide: bool) -> String {
    match name {
        Some(name) if !wide && !name.is_empty() => sanitize(name),
        _ => short_id(id, wide),
    }
}

/// A node in a detail line: `name (full id)`, or the id alone.
fn node_line(id: &str, name: Option<&str>) -> String {
    match name {
        Some(name) if !name.is_empty() => format!("{} ({})", sanitize(name), cell(id)),
        _ => cell(id),
    }
}

/// The table of `baton sessions`; `names` maps peer ids to node names.
pub fn sessions_table(sessions: &[Session], names: &Names, wide: bool) -> String {
    let rows: Vec<Vec<String>> = sessions
        .iter()
        .map(|s| {
            let backups: Vec<String> = s
                .backups
                .iter()
                .map(|b| node_cell(b, names.get(b).map(String::as_str), wide))
                .collect();
            vec![
                cell(&s.id),
                cell(&s.service),
                node_cell(&s.primary, primary_name(s, names), wide),
                s.epoch.to_string(),
                cell(&backups.join(",")),
                cell(&s.client),
                cell(&s.state),
                if s.hosted_here { "*" } else { "" }.to_owned(),
            ]
        })
        .collect();
    render_table(
        &[
            ("ID", Align::Left),
            ("SERVICE", Align::Left),
            ("PRIMARY", Align::Left),
            ("EPOCH", Align::Right),
            ("BACKUPS", Align::Left),
            ("CLIENT", Align::Left),
            ("STATE", Align::Left),
            ("HERE", Align::Left),
        ],
        &rows,
    )
}

/// The text of `baton session ID`; times are shown in `tz`.
pub fn session_text(s: &Session, names: &Names, tz: &TimeZone) -> String {
    let name = |id: &String| names.get(id).map(String::as_str);
    let mut lines = vec![
        ("session", cell(&s.id)),
        ("service", cell(&s.service)),
        ("state", cell(&s.state)),
        (
            "hosted here",
            if s.hosted_here { "yes" } else { "no" }.to_owned(),
        ),
        ("primary", node_line(&s.primary, primary_name(s, names))),
    ];
    if s.backups.is_empty() {
        lines.push(("backups", "none".to_owned()));
    }
    for (i, backup) in s.backups.iter().enumerate() {
        let key = if i == 0 { "backups" } else { "" };
        lines.push((
            key,
            format!("{}. {}", i + 1, node_line(backup, name(backup))),
        ));
    }
    lines.push(("epoch", format!("{} (version {})", s.epoch, s.version)));
    let client = if s.location.is_empty() {
        cell(&s.client)
    } else {
        format!("{} (location {})", cell(&s.client), sanitize(&s.location))
    };
    lines.push(("client", client));
    if s.params.is_empty() {
        lines.push(("params", "none".to_owned()));
    }
    for (i, (key, value)) in s.params.iter().enumerate() {
        let label = if i == 0 { "params" } else { "" };
        lines.push((label, format!("{}={}", sanitize(key), sanitize(value))));
    }
    lines.push(("started", wall_time(s.started_ms, tz)));
    lines.push(("updated", wall_time(s.updated_ms, tz)));
    lines.push(("reason", cell(&s.reason)));
    instance_lines(s.instance.as_ref(), &mut lines);
    let mut out = detail_lines(lines);
    out.push('\n');
    if s.history.is_empty() {
        out.push_str("moves: none seen by this node\n");
        return out;
    }
    out.push_str("moves seen by this node, oldest first:\n");
    let rows: Vec<Vec<String>> = s
        .history
        .iter()
        .map(|m| {
            let mover = if m.primary == s.primary {
                primary_name(s, names)
            } else {
                name(&m.primary)
            };
            vec![
                m.epoch.to_string(),
                node_cell(&m.primary, mover, false),
                wall_time(m.at_ms, tz),
                cell(&m.reason),
            ]
        })
        .collect();
    out.push_str(&render_table(
        &[
            ("EPOCH", Align::Right),
            ("PRIMARY", Align::Left),
            ("AT", Align::Left),
            ("REASON", Align::Left),
        ],
        &rows,
    ));
    out
}

/// The lines of `baton session ID` about the session's instance on the node.
fn instance_lines(instance: Option<&Instance>, lines: &mut Vec<(&str, String)>) {
    let Some(i) = instance else {
        lines.push(("instance", "none on this node".to_owned()));
        return;
    };
    let state = match i.pid {
        Some(pid) => format!("{} (pid {pid})", cell(&i.state)),
        None => cell(&i.state),
    };
    lines.push(("instance", state));
    lines.push(("restarts", i.restarts.to_string()));
    if let Some(exit) = &i.last_exit {
        lines.push(("last exit", cell(exit)));
    }
    if let Some(error) = &i.error {
        lines.push(("error", cell(error)));
    }
    if i.packets_dropped > 0 {
        lines.push((
            "gate dropped",
            format!(
                "{} packets (not from its command, or not RTP)",
                i.packets_dropped
            ),
        ));
    }
    for (n, line) in i.stderr.iter().enumerate() {
        lines.push((if n == 0 { "stderr" } else { "" }, sanitize(line)));
    }
}

/// What `baton open` prints from the session the API answered with.
pub fn opened_text(s: &Session, names: &Names) -> String {
    let backups: Vec<String> = s
        .backups
        .iter()
        .map(|b| node_cell(b, names.get(b).map(String::as_str), false))
        .collect();
    format!(
        "session  {}\nprimary  {}\nbackups  {}\n",
        cell(&s.id),
        node_line(&s.primary, primary_name(s, names)),
        if backups.is_empty() {
            "none".to_owned()
        } else {
            backups.join(", ")
        }
    )
}

/// What `baton close` prints from the session the API answered with.
pub fn closed_text(s: &Session) -> String {
    format!(
        "closed session {} ({} for {}, epoch {})\n",
        cell(&s.id),
        cell(&s.service),
        cell(&s.client),
        s.epoch
    )
}

/// What `baton close` prints when the node asked is not the session's
/// primary and sent the close on to it.
pub fn close_forwarded_text(id: &str, to: &Forwarded) -> String {
    format!(
        "this node is not the primary of session {id}: the close was sent on to {} ({}); \
         `baton session {id}` shows when it is closed\n",
        sanitize(&to.forwarded_to_name),
        sanitize(&to.forwarded_to),
        id = sanitize(id),
    )
}

/// What `baton report` prints once the node took the report on session `id`.
pub fn reported_text(id: &str, r: &Report, forwarded: Option<&Forwarded>) -> String {
    let mut text = format!(
        "reported on session {}: loss {:.1}%, jitter {} ms, RTT {} ms, {} packets\n",
        sanitize(id),
        r.loss * 100.0,
        r.jitter_ms,
        r.rtt_ms,
        r.packets
    );
    if let Some(f) = forwarded {
        text.push_str(&format!(
            "this node is not the session's primary: the report was sent on to {} ({})\n",
            sanitize(&f.forwarded_to_name),
            sanitize(&f.forwarded_to)
        ));
    }
    text
}

/// Unix milliseconds as a local date and time to the millisecond; `-` for 0.
fn wall_time(ms: u64, tz: &TimeZone) -> String {
    let Some(at) = i64::try_from(ms)
        .ok()
        .filter(|ms| *ms > 0)
        .and_then(|ms| Timestamp::from_millisecond(ms).ok())
    else {
        return "-".to_owned();
    };
    let at = at.to_zoned_datetime(tz.clone());
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:03}",
        at.year(),
        at.month(),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at.millisecond()
    )
}

/// The text of `baton status`.
pub fn status_text(s: &Status) -> String {
    let m = &s.members;
    let mut lines = vec![
        ("name", cell(&s.name)),
        ("peer id", cell(&s.id)),
        ("overlay", cell(&s.overlay)),
        ("profile", cell(&s.profile)),
        ("version", cell(&s.version)),
        ("capacity", format!("{} sessions", s.capacity)),
        (
            "uptime",
            humantime::format_duration(Duration::from_secs(s.uptime_s)).to_string(),
        ),
        ("incarnation", s.incarnation.to_string()),
        ("local health", s.local_health.to_string()),
        (
            "members",
            format!(
                "{} alive, {} suspect, {} dead, {} left",
                m.alive, m.suspect, m.dead, m.left
            ),
        ),
        ("peers", s.peers.to_string()),
    ];
    if s.listen_addrs.is_empty() {
        lines.push(("listening", "-".to_owned()));
    }
    for (i, addr) in s.listen_addrs.iter().enumerate() {
        lines.push((if i == 0 { "listening" } else { "" }, sanitize(addr)));
    }
    detail_lines(lines)
}

/// The line `baton watch` prints for an event; times are shown in `tz`.
pub fn event_line(received: &Received, wide: bool, tz: &TimeZone) -> String {
    let at_ms = match received {
        Received::Event(event) => event.at_ms,
        Received::Lagged(_) => 0,
    };
    let at = i64::try_from(at_ms)
        .ok()
        .filter(|ms| *ms > 0)
        .and_then(|ms| Timestamp::from_millisecond(ms).ok())
        .unwrap_or_else(Timestamp::now)
        .to_zoned_datetime(tz.clone());
    let time = format!(
        "{:02}:{:02}:{:02}.{:03}",
        at.hour(),
        at.minute(),
        at.second(),
        at.millisecond()
    );
    let event = match received {
        Received::Lagged(lagged) => {
            return format!(
                "{time}  lagged    missed {} events: this watch fell behind the node",
                lagged.missed
            );
        }
        Received::Event(event) => event,
    };
    if event.kind == "reload" {
        return reload_line(&time, event, wide);
    }
    // A member event is a transition; a session event is what happened
    // (started, stopped, failed...), with no state before it.
    let transition = if event.kind == "session" {
        cell(&event.state)
    } else {
        format!(
            "{} -> {}",
            cell(event.previous.as_deref().unwrap_or("new")),
            cell(&event.state)
        )
    };
    // A session event carries the session's epoch where a member event
    // carries an incarnation.
    let counter = if event.kind == "session" {
        "epoch"
    } else {
        "inc"
    };
    let mut line = format!(
        "{time}  {:<8}  {:<16}  {:<8}  {transition:<17}  {counter} {}",
        cell(&event.kind),
        cell(&event.name),
        short_id(&event.id, wide),
        event.incarnation,
    );
    if let Some(reason) = event.reason.as_deref().filter(|r| !r.is_empty()) {
        line.push_str("  ");
        line.push_str(&reason_text(reason));
    }
    line
}

/// A `reload` event: applied (what changed, what needs a restart) or
/// refused (why).
fn reload_line(time: &str, event: &Event, wide: bool) -> String {
    let mut line = format!(
        "{time}  {:<8}  {:<16}  {:<8}  {:<17}",
        cell(&event.kind),
        cell(&event.name),
        short_id(&event.id, wide),
        cell(&event.state),
    );
    let list = |fields: &[String]| {
        if fields.is_empty() {
            "nothing".to_owned()
        } else {
            sanitize(&fields.join(","))
        }
    };
    if event.state == "applied" {
        line.push_str("  changed: ");
        line.push_str(&list(&event.applied));
        if !event.restart.is_empty() {
            line.push_str("; needs a restart: ");
            line.push_str(&list(&event.restart));
        }
    }
    if let Some(reason) = event.reason.as_deref().filter(|r| !r.is_empty()) {
        line.push_str("  ");
        line.push_str(&reason_text(reason));
    }
    line.truncate(line.trim_end().len());
    line
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::api::fake;
    use crate::cli::testing::{names, two_members, two_sessions};
    use crate::views::Member;

    /// This node (alpha, local) and [`two_members`], tagged; charlie's
    /// tags carry a terminal escape.
    fn members_and_me() -> Vec<Member> {
        let mut members = two_members();
        let tag = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        members[0].tags = tag(&[("region", "eu"), ("rack", "r1")]);
        members[1].tags = tag(&[("region", "us"), ("x", "\u{1b}[31mred")]);
        let me = Member {
            id: "12D3KooWLocal0000aaaaaaaa".to_owned(),
            name: "alpha".to_owned(),
            state: "alive".to_owned(),
            incarnation: 4,
            tags: tag(&[("region", "eu")]),
            local: true,
            ..Member::default()
        };
        members.insert(0, me);
        members
    }
    use crate::views::{Lagged, Move};

    #[test]
    fn members_table_for_two_members() {
        assert_eq!(
            members_table(&members_and_me(), false),
            "\
NAME           PEER ID   STATE    INC  RTT   DIST  TAGS                  ADDRESS
alpha (local)  aaaaaaaa  alive      4    -      -  region=eu             -
bravo          bbbbbbbb  alive      1  0.4    0.5  rack=r1,region=eu     /ip4/127.0.0.1/udp/4001/quic-v1 (+1)
charlie        cccccccc  suspect   12    -  103.3  region=us,x=?[31mred  -
"
        );
    }

    #[test]
    fn wide_members_table_shows_full_ids_and_every_address() {
        let table = members_table(&two_members(), true);
        assert!(table.contains("12D3KooWBravo0000bbbbbbbb"), "{table}");
        assert!(
            table.contains("/ip4/127.0.0.1/udp/4001/quic-v1,/ip4/127.0.0.1/tcp/4001"),
            "{table}"
        );
    }

    #[test]
    fn empty_members_table_is_just_the_header() {
        assert_eq!(
            members_table(&[], false),
            "NAME  PEER ID  STATE  INC  RTT  DIST  TAGS  ADDRESS\n"
        );
    }

    #[test]
    fn peers_table_shows_admission_and_reason() {
        let peers = json!([
            {"id": "12D3KooWBravo0000bbbbbbbb", "addrs": ["/ip4/127.0.0.1/tcp/4001"],
             "connections": 2, "admission": "admitted", "reason": null},
            {"id": "12D3KooWEvil00000eeeeeeee", "addrs": [], "connections": 0,
             "admission": "refused", "reason": "overlay \u{1b}[31mother"},
        ]);
        let peers: Vec<Peer> = serde_json::from_value(peers).unwrap();
        assert_eq!(
            peers_table(&peers, false),
            "\
PEER ID   ADMISSION  CONNS  ADDRESS                  REASON
bbbbbbbb  admitted       2  /ip4/127.0.0.1/tcp/4001  -
eeeeeeee  refused        0  -                        overlay ?[31mother
"
        );
    }

    #[test]
    fn status_text_lists_identity_counts_and_addresses() {
        let status = json!({
            "id": "12D3KooWLocal", "name": "alpha", "overlay": "prod", "profile": "wan",
            "version": "0.1.0", "capacity": 8, "uptime_s": 3723, "incarnation": 3,
            "local_health": 0, "listen_addrs": ["/ip4/127.0.0.1/tcp/4000", "/ip4/127.0.0.1/udp/4000/quic-v1"],
            "members": {"alive": 3, "suspect": 1, "dead": 0, "left": 2}, "peers": 4,
        });
        let status: Status = serde_json::from_value(status).unwrap();
        assert_eq!(
            status_text(&status),
            "\
name          alpha
peer id       12D3KooWLocal
overlay       prod
profile       wan
version       0.1.0
capacity      8 sessions
uptime        1h 2m 3s
incarnation   3
local health  0
members       3 alive, 1 suspect, 0 dead, 2 left
peers         4
listening     /ip4/127.0.0.1/tcp/4000
              /ip4/127.0.0.1/udp/4000/quic-v1
"
        );
    }

    #[test]
    fn event_line_shows_time_kind_member_and_transition() {
        let event = Event {
            kind: "member".to_owned(),
            at: "2026-03-01T12:34:56.789Z".to_owned(),
            at_ms: 1_772_368_496_789,
            id: "12D3KooWBravo0000bbbbbbbb".to_owned(),
            name: "bravo".to_owned(),
            state: "suspect".to_owned(),
            previous: Some("alive".to_owned()),
            incarnation: 4,
            reason: None,
            ..Default::default()
        };
        assert_eq!(
            event_line(&Received::Event(event.clone()), false, &TimeZone::UTC),
            "12:34:56.789  member    bravo             bbbbbbbb  alive -> suspect   inc 4"
        );
        let first = Event {
            previous: None,
            state: "alive".to_owned(),
            ..event
        };
        let line = event_line(
            &Received::Event(first),
            true,
            &TimeZone::fixed(jiff::tz::offset(2)),
        );
        assert!(line.starts_with("14:34:56.789  member"), "{line}");
        assert!(
            line.contains("12D3KooWBravo0000bbbbbbbb  new -> alive"),
            "{line}"
        );
    }

    #[test]
    fn lagged_event_line_says_how_many_were_missed() {
        let line = event_line(&Received::Lagged(Lagged::new(12)), false, &TimeZone::UTC);
        assert!(
            line.ends_with("lagged    missed 12 events: this watch fell behind the node"),
            "{line}"
        );
    }

    #[test]
    fn terminal_escapes_from_the_network_are_neutralised() {
        assert_eq!(sanitize("a\u{1b}]0;pwned\u{7}b"), "a?]0;pwned?b");
    }

    #[test]
    fn sessions_table_shows_names_backups_in_order_and_here() {
        assert_eq!(
            sessions_table(&two_sessions(), &names(), false),
            "\
ID  SERVICE    PRIMARY  EPOCH  BACKUPS         CLIENT          STATE   HERE
s1  rtp-audio  alpha        2  bravo,dddddddd  127.0.0.1:5004  active  *
s2  rtp-audio  bravo        1  -               10.0.0.7:5004   closed
"
        );
        // Without names, short ids.
        let table = sessions_table(&two_sessions(), &Names::new(), false);
        assert!(
            table.contains("s2  rtp-audio  bbbbbbbb      1  -"),
            "{table}"
        );
    }

    #[test]
    fn wide_sessions_table_shows_full_peer_ids() {
        let table = sessions_table(&two_sessions(), &names(), true);
        assert!(
            table.contains(
                "12D3KooWLocal0000aaaaaaaa      2  \
                 12D3KooWBravo0000bbbbbbbb,12D3KooWDelta00000dddddddd"
            ),
            "{table}"
        );
    }

    #[test]
    fn empty_sessions_table_is_just_the_header() {
        assert_eq!(
            sessions_table(&[], &Names::new(), false),
            "ID  SERVICE  PRIMARY  EPOCH  BACKUPS  CLIENT  STATE  HERE\n"
        );
    }

    #[test]
    fn session_detail_lists_everything_and_the_moves() {
        let mut session = fake::view(
            "s1",
            "12D3KooWBravo0000bbbbbbbb",
            "bravo",
            &["12D3KooWDelta00000dddddddd", "12D3KooWLocal0000aaaaaaaa"],
        );
        session.epoch = 2;
        session.version = 3;
        session.params = [("codec", "pcmu"), ("ptime", "20")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        session.updated_ms += 5_000;
        session.reason = "takeover: alpha is dead".to_owned();
        session.history = vec![
            Move {
                epoch: 1,
                primary: "12D3KooWLocal0000aaaaaaaa".to_owned(),
                reason: "open".to_owned(),
                at_ms: session.started_ms,
            },
            Move {
                epoch: 2,
                primary: "12D3KooWBravo0000bbbbbbbb".to_owned(),
                reason: "takeover: alpha is dead".to_owned(),
                at_ms: session.updated_ms,
            },
        ];
        assert_eq!(
            session_text(&session, &names(), &TimeZone::UTC),
            "\
session       s1
service       rtp-audio
state         active
hosted here   no
primary       bravo (12D3KooWBravo0000bbbbbbbb)
backups       1. 12D3KooWDelta00000dddddddd
              2. alpha (12D3KooWLocal0000aaaaaaaa)
epoch         2 (version 3)
client        127.0.0.1:5004 (location 127.0.0.0/24)
params        codec=pcmu
              ptime=20
started       2026-03-01 12:34:56.789
updated       2026-03-01 12:35:01.789
reason        takeover: alpha is dead
instance      none on this node

moves seen by this node, oldest first:
EPOCH  PRIMARY  AT                       REASON
    1  alpha    2026-03-01 12:34:56.789  open
    2  bravo    2026-03-01 12:35:01.789  takeover: alpha is dead
"
        );
    }

    #[test]
    fn session_detail_shows_the_instance_its_restarts_and_stderr() {
        let mut session = fake::view("s1", "12D3KooWBravo0000bbbbbbbb", "bravo", &[]);
        session.instance = Some(Instance {
            state: "failed".to_owned(),
            restarts: 4,
            pid: None,
            last_exit: Some("exit status: 1".to_owned()),
            error: Some("gave up after 5 quick exits in a row".to_owned()),
            stderr: vec![
                "a.wav: No such file or directory".to_owned(),
                "\u{1b}[31mred".to_owned(),
            ],
            packets_dropped: 0,
        });
        let text = session_text(&session, &names(), &TimeZone::UTC);
        let expected = "\
reason        open
instance      failed
restarts      4
last exit     exit status: 1
error         gave up after 5 quick exits in a row
stderr        a.wav: No such file or directory
              ?[31mred
";
        assert!(text.contains(expected), "{expected}\nmissing from\n{text}");
        session.instance = Some(Instance {
            state: "running".to_owned(),
            pid: Some(4242),
            ..Instance::default()
        });
        let text = session_text(&session, &names(), &TimeZone::UTC);
        assert!(
            text.contains("instance      running (pid 4242)\nrestarts      0\n\n"),
            "{text}"
        );
    }

    #[test]
    fn session_detail_without_backups_params_or_moves() {
        let mut session = fake::view("s9", "12D3KooWZulu", "", &[]);
        session.history.clear();
        session.location.clear();
        session.started_ms = 0;
        let text = session_text(&session, &Names::new(), &TimeZone::UTC);
        for line in [
            "primary       12D3KooWZulu\n",
            "backups       none\n",
            "client        127.0.0.1:5004\n",
            "params        none\n",
            "started       -\n",
            "\nmoves: none seen by this node\n",
        ] {
            assert!(text.contains(line), "{line:?} missing from\n{text}");
        }
    }

    #[test]
    fn open_and_close_print_the_session() {
        let session = fake::view(
            "s1",
            "12D3KooWLocal0000aaaaaaaa",
            "alpha",
            &["12D3KooWBravo0000bbbbbbbb", "12D3KooWDelta00000dddddddd"],
        );
        assert_eq!(
            opened_text(&session, &names()),
            "\
session  s1
primary  alpha (12D3KooWLocal0000aaaaaaaa)
backups  bravo, dddddddd
"
        );
        assert_eq!(
            closed_text(&session),
            "closed session s1 (rtp-audio for 127.0.0.1:5004, epoch 1)\n"
        );
    }

    #[test]
    fn wide_peers_table_lists_each_address_once() {
        // Two connections from one address, as the node reports them.
        let peer = Peer {
            id: "12D3KooWBravo0000bbbbbbbb".to_owned(),
            addrs: vec![
                "/ip4/127.0.0.1/tcp/4001".to_owned(),
                "/ip4/127.0.0.1/tcp/4001".to_owned(),
                "/ip4/127.0.0.1/udp/4001/quic-v1".to_owned(),
            ],
            connections: 3,
            admission: "admitted".to_owned(),
            reason: None,
        };
        let wide = peers_table(std::slice::from_ref(&peer), true);
        assert!(
            wide.contains("  /ip4/127.0.0.1/tcp/4001,/ip4/127.0.0.1/udp/4001/quic-v1  "),
            "{wide}"
        );
        let narrow = peers_table(&[peer], false);
        assert!(
            narrow.contains("  /ip4/127.0.0.1/tcp/4001 (+1)  "),
            "{narrow}"
        );
    }

    #[test]
    fn session_event_line_shows_the_epoch_and_the_reason() {
        let event = Event {
            kind: "session".to_owned(),
            at: "2026-03-01T12:34:56.789Z".to_owned(),
            at_ms: 1_772_368_496_789,
            id: "5f0c00000000000000000000aaaaaaaa".to_owned(),
            name: "alpha".to_owned(),
            state: "started".to_owned(),
            previous: None,
            incarnation: 3,
            reason: Some("takeover: primary \u{1b}[2Jbravo is down".to_owned()),
            ..Default::default()
        };
        assert_eq!(
            event_line(&Received::Event(event), false, &TimeZone::UTC),
            "12:34:56.789  session   alpha             aaaaaaaa  started            epoch 3  \
             takeover: primary ?[2Jbravo is down"
        );
    }

    #[test]
    fn reload_event_lines_show_what_changed_or_why_refused() {
        let applied = Event {
            kind: "reload".to_owned(),
            at_ms: 1_772_368_496_789,
            id: "12D3KooWAlpha000aaaaaaaa".to_owned(),
            name: "alpha".to_owned(),
            state: "applied".to_owned(),
            applied: vec!["log_level".to_owned(), "allow".to_owned()],
            restart: vec!["capacity".to_owned()],
            ..Default::default()
        };
        assert_eq!(
            event_line(&Received::Event(applied.clone()), false, &TimeZone::UTC),
            "12:34:56.789  reload    alpha             aaaaaaaa  applied            \
             changed: log_level,allow; needs a restart: capacity"
        );
        let unchanged = Event {
            applied: Vec::new(),
            restart: Vec::new(),
            ..applied.clone()
        };
        assert!(
            event_line(&Received::Event(unchanged), false, &TimeZone::UTC)
                .ends_with("applied            changed: nothing")
        );
        let refused = Event {
            state: "refused".to_owned(),
            applied: Vec::new(),
            restart: Vec::new(),
            reason: Some("invalid capacity \u{1b}[2J".to_owned()),
            ..applied
        };
        assert_eq!(
            event_line(&Received::Event(refused.clone()), false, &TimeZone::UTC),
            "12:34:56.789  reload    alpha             aaaaaaaa  refused            \
             invalid capacity ?[2J"
        );
        // A parse error over several lines: each on a line of its own,
        // indented under the event, never a `?` for a newline.
        let parse_error = Event {
            reason: Some(
                "TOML parse error at line 1, column 12\n  |\n1 | capacity = \"x\"\n  |       \
                     \u{20}    ^^^\ninvalid type: string \"x\", expected u32\n"
                    .to_owned(),
            ),
            ..refused
        };
        assert_eq!(
            event_line(&Received::Event(parse_error), false, &TimeZone::UTC),
            "12:34:56.789  reload    alpha             aaaaaaaa  refused            \
             TOML parse error at line 1, column 12\n\
             \u{20}               |\n\
             \u{20}             1 | capacity = \"x\"\n\
             \u{20}               |            ^^^\n\
             \u{20}             invalid type: string \"x\", expected u32"
        );
    }
}
