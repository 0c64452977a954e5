//! The arguments of `baton`, declared with clap: global options, one
//! subcommand per API call, the help texts with their examples, and the
//! checks of values that clap cannot express alone.

use clap::{Args, CommandFactory, Parser, Subcommand};

use crate::api::MAX_REPORT_MS;

const MAIN_EXAMPLES: &str = "\
Examples:
  baton status                      this node, on the default 127.0.0.1:7700
  baton members                     the members it sees (and itself), state and tags
  baton members --tag region=eu --state alive
  baton rtt bravo charlie           estimated RTT between two members
  baton --api node-b:7700 peers     another node's libp2p peers
  baton members --json | jq '.[] | select(.state != \"alive\")'
  baton open --service rtp-audio --client 127.0.0.1:5004
  baton sessions                    the sessions, their primary and backups
  baton session ID                  one session, its instance here and its moves
  baton close ID
  baton watch                       follow member and session events until Ctrl-C

An API that listens beyond loopback needs its token: --token TOKEN or,
better (it stays out of the process list), the environment variable
BATON_API_TOKEN, the same name batond reads (BATON_TOKEN, its older name,
is still read).";

const STATUS_EXAMPLES: &str = "\
Examples:
  baton status
  baton status --json | jq .members.suspect";

const MEMBERS_EXAMPLES: &str = "\
Examples:
  baton members
  baton members --wide              full peer ids and every address
  baton members --tag region=eu --state alive
  baton members --json | jq -r '.[] | \"\\(.name) \\(.state)\"'

This node is listed too, marked (local). RTT is measured by probes; DIST is
the Vivaldi estimate of the RTT. TAGS are those each node announced
(batond --tag). Filters are applied by the node (GET
/v1/members?tag=KEY=VALUE&state=STATE): a member must have every --tag given
and be in one of the --state given.";

const RTT_EXAMPLES: &str = "\
Examples:
  baton rtt bravo                   from this node to bravo
  baton rtt bravo charlie           between two other members
  baton rtt 12D3KooWQx bravo        a peer id, or its first or last characters

A and B are member names, peer ids, or the first or last characters of a peer
id (as `baton members` shows them); B is this node when left out. The
estimate comes from the two members' Vivaldi coordinates as this node last
learnt them (as `consul rtt` does), so no probe is sent between A and B.";

const PEERS_EXAMPLES: &str = "\
Examples:
  baton peers
  baton peers --wide
  baton peers --json | jq '.[] | select(.admission == \"refused\")'";

const WATCH_EXAMPLES: &str = "\
Examples:
  baton watch
  baton watch --json | jq -c 'select(.state == \"dead\")'

Each line: local time, kind, member name, peer id, previous -> new state,
incarnation. A session event (this node started or stopped running a
session) shows this node's name, the session id, the epoch and why. A
reload event (SIGHUP) shows whether the configuration was applied, with
the fields that changed and those that need a restart, or refused, and why.
With --json, one event per line as the API sends it.";

const SESSIONS_EXAMPLES: &str = "\
Examples:
  baton sessions
  baton sessions --wide             full peer ids instead of node names
  baton sessions --json | jq -r '.[] | select(.hosted_here) | .id'

PRIMARY hosts the session; BACKUPS take over in the order shown. HERE marks
the sessions this node hosts now.";

const SESSION_EXAMPLES: &str = "\
Examples:
  baton session s1
  baton session s1 --json | jq .history
  baton session s1 --json | jq -r '.instance.stderr[]'

Shows the assignment (primary, backups in takeover order, epoch), the client,
the parameters, its service instance on this node (running, restarting or
failed; restarts, last exit, error, the last lines of an exec command's
stderr) and the changes of primary this node saw.";

const OPEN_EXAMPLES: &str = "\
Examples:
  baton open --service rtp-audio --client 127.0.0.1:5004
  baton open --service rtp-audio --client 127.0.0.1:5004 --param source=tone --param ssrc=0x1234abcd
  id=$(baton open --service rtp-audio --client 127.0.0.1:5004 --json | jq -r .id)

Prints the new session's id, its primary and its backups.";

const CLOSE_EXAMPLES: &str = "\
Examples:
  baton close s1
  baton --api node-b:7700 close s1

The session's primary closes it. Any other node sends the request on to the
primary and says so (with --json: {\"session\", \"forwarded_to\",
\"forwarded_to_name\"}); `baton session ID` then shows when it is closed.";

const REPORT_EXAMPLES: &str = "\
Examples:
  baton report s1 --loss 0.05 --jitter-ms 20 --rtt-ms 40
  baton report s1 --loss 2% --jitter-ms 4 --rtt-ms 30 --packets 500
  baton report s1 --loss 10%          jitter and RTT 0 ms

Sends what a client measured on a session, as its RTP receiver would: poor
enough service makes the overlay move the session. Handy for demos and tests.";

const HEALTH_EXAMPLES: &str = "\
Examples:
  baton health                      prints ok, exits 0
  baton --api 127.0.0.1:7700 health || systemctl restart baton

Exits 0 when the node's driver answers, 1 when it does not (stuck, shutting
down) or the API cannot be reached. Needs no token, even beyond loopback:
made for container healthchecks.";

const COMPLETIONS_EXAMPLES: &str = "\
Examples:
  source <(baton completions bash)          in this shell
  baton completions bash > /usr/share/bash-completion/completions/baton
  baton completions bash batond > /usr/share/bash-completion/completions/batond
  baton completions zsh > \"${fpath[1]}/_baton\"
  baton completions fish > ~/.config/fish/completions/baton.fish

Works without a node: nothing is asked of the API.";

const MAN_EXAMPLES: &str = "\
Examples:
  baton man | man -l -                      read baton(1) now
  baton man batond | man -l -
  baton man --out-dir /usr/share/man/man1   baton(1) and baton-<command>(1)
  baton man batond --out-dir /usr/share/man/man1

Works without a node: nothing is asked of the API.";

/// Inspect a Baton node through its HTTP API.
#[derive(Debug, Parser)]
#[command(name = "baton", version, after_help = MAIN_EXAMPLES)]
pub(super) struct Cli {
    /// Address of the node's API: HOST:PORT, or a port on 127.0.0.1 [env: BATON_API] [default: 127.0.0.1:7700]
    #[arg(long, global = true, value_name = "ADDR")]
    pub(super) api: Option<String>,
    /// Bearer token, needed when the API listens beyond loopback [env: BATON_API_TOKEN]
    #[arg(long, global = true, value_name = "TOKEN")]
    pub(super) token: Option<String>,
    /// Print the API's JSON instead of a table: one document (or event) per line
    #[arg(long, global = true)]
    pub(super) json: bool,
    #[command(subcommand)]
    pub(super) command: Command,
}

#[derive(Debug, Subcommand)]
pub(super) enum Command {
    /// Show this node: identity, overlay, uptime and member counts
    #[command(after_help = STATUS_EXAMPLES)]
    Status,
    /// List the members this node knows and itself, with state, RTT, distance and tags
    #[command(after_help = MEMBERS_EXAMPLES)]
    Members(MembersArgs),
    /// Estimate the round-trip time between two members from their coordinates
    #[command(after_help = RTT_EXAMPLES)]
    Rtt(RttArgs),
    /// List the libp2p peers and whether the peering policy admitted them
    #[command(after_help = PEERS_EXAMPLES)]
    Peers(Wide),
    /// List the sessions this node knows, with primary, backups and client
    #[command(after_help = SESSIONS_EXAMPLES)]
    Sessions(Wide),
    /// Show one session: assignment, client, parameters, instance here and history of moves
    #[command(after_help = SESSION_EXAMPLES)]
    Session(SessionId),
    /// Open a session of a service for a client
    #[command(after_help = OPEN_EXAMPLES)]
    Open(OpenArgs),
    /// Close a session (any node sends the request on to its primary)
    #[command(after_help = CLOSE_EXAMPLES)]
    Close(SessionId),
    /// Report a client's loss, jitter and RTT on a session
    #[command(after_help = REPORT_EXAMPLES)]
    Report(ReportArgs),
    /// Follow member changes and this node's session events and reloads, until Ctrl-C
    #[command(after_help = WATCH_EXAMPLES)]
    Watch(Wide),
    /// Check that the node answers: exit 0 when its driver does
    #[command(after_help = HEALTH_EXAMPLES)]
    Health,
    /// Print the shell completion script of baton or batond
    #[command(after_help = COMPLETIONS_EXAMPLES)]
    Completions(CompletionsArgs),
    /// Print the man page of baton or batond, or write every page to a directory
    #[command(after_help = MAN_EXAMPLES)]
    Man(ManArgs),
}

/// A program of this package, for `completions` and `man`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum Program {
    /// The CLI
    Baton,
    /// The daemon
    Batond,
}

#[derive(Debug, Args)]
pub(super) struct CompletionsArgs {
    /// The shell
    #[arg(value_enum, value_name = "SHELL")]
    pub(super) shell: clap_complete::Shell,
    /// The program to complete
    #[arg(value_enum, default_value = "baton", value_name = "PROGRAM")]
    pub(super) program: Program,
}

#[derive(Debug, Args)]
pub(super) struct ManArgs {
    /// The program whose page to render
    #[arg(value_enum, default_value = "baton", value_name = "PROGRAM")]
    pub(super) program: Program,
    /// Write the pages (the program's and one per baton command) into DIR
    /// instead of printing the program's page
    #[arg(long, value_name = "DIR")]
    pub(super) out_dir: Option<std::path::PathBuf>,
}

#[derive(Debug, Args)]
pub(super) struct SessionId {
    /// Session id, as `baton sessions` shows it
    #[arg(value_name = "ID")]
    pub(super) id: String,
}

#[derive(Debug, Args)]
pub(super) struct OpenArgs {
    /// Service to run, such as rtp-audio
    #[arg(long, value_name = "NAME")]
    pub(super) service: String,
    /// Where the client is: for rtp-audio, the UDP address it receives on
    #[arg(long, value_name = "IP:PORT")]
    pub(super) client: String,
    /// A service parameter (repeatable)
    #[arg(long = "param", value_name = "KEY=VALUE", value_parser = parse_param)]
    pub(super) params: Vec<(String, String)>,
}

#[derive(Debug, Args)]
pub(super) struct ReportArgs {
    /// Session id
    #[arg(value_name = "ID")]
    pub(super) id: String,
    /// Fraction of packets lost, 0 to 1, or a percentage such as 5%
    #[arg(long, value_name = "FRACTION", value_parser = parse_loss, allow_negative_numbers = true)]
    pub(super) loss: f64,
    /// Interarrival jitter, in milliseconds
    #[arg(long = "jitter-ms", value_name = "MS", value_parser = parse_millis, allow_negative_numbers = true, default_value_t = 0.0)]
    pub(super) jitter_ms: f64,
    /// Round-trip time, in milliseconds
    #[arg(long = "rtt-ms", value_name = "MS", value_parser = parse_millis, allow_negative_numbers = true, default_value_t = 0.0)]
    pub(super) rtt_ms: f64,
    /// Packets received since the last report
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub(super) packets: u64,
}

/// `--param KEY=VALUE`: the value may be empty or hold `=`, the key may not.
fn parse_param(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some(("", _)) => Err(format!("{text:?} has no name before '=': write KEY=VALUE")),
        Some((key, value)) => Ok((key.to_owned(), value.to_owned())),
        None => Err(format!(
            "{text:?} has no '=': write KEY=VALUE, such as source=tone"
        )),
    }
}

/// `--loss`: a fraction from 0 to 1, or a percentage.
fn parse_loss(text: &str) -> Result<f64, String> {
    let (number, scale) = match text.trim().strip_suffix('%') {
        Some(percent) => (percent, 100.0),
        None => (text.trim(), 1.0),
    };
    match number.parse::<f64>().map(|n| n / scale) {
        Ok(loss) if (0.0..=1.0).contains(&loss) => Ok(loss),
        _ => Err(format!(
            "{text:?} is not a loss: give a fraction from 0 to 1 (0.05) or a percentage (5%)"
        )),
    }
}

/// `--jitter-ms` and `--rtt-ms`: milliseconds, within what the API takes.
fn parse_millis(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(ms) if (0.0..=MAX_REPORT_MS).contains(&ms) => Ok(ms),
        _ => Err(format!(
            "{text:?} is not a duration: give milliseconds from 0 to {MAX_REPORT_MS}"
        )),
    }
}

impl Command {
    /// Checks what clap cannot: a `--param` given twice.
    pub(super) fn check(&self) -> Result<(), clap::Error> {
        if let Command::Open(open) = self {
            let mut seen = std::collections::BTreeSet::new();
            if let Some((key, _)) = open.params.iter().find(|(key, _)| !seen.insert(key)) {
                return Err(Cli::command().error(
                    clap::error::ErrorKind::ArgumentConflict,
                    format!("--param {key} is given twice: give each parameter once"),
                ));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Args)]
pub(super) struct MembersArgs {
    /// Show full peer ids and every address
    #[arg(long)]
    pub(super) wide: bool,
    /// Only members with this tag (repeatable: all of them)
    #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = baton_protocol::meta::parse_tag)]
    pub(super) tags: Vec<(String, String)>,
    /// Only members in this state (repeatable: any of them)
    #[arg(long = "state", value_name = "STATE", value_parser = ["alive", "suspect", "dead", "left"])]
    pub(super) states: Vec<String>,
}

impl MembersArgs {
    /// `/v1/members` with the filters as query parameters.
    pub(super) fn path(&self) -> String {
        let mut query: Vec<String> = self
            .tags
            .iter()
            .map(|(k, v)| format!("tag={}", percent(&format!("{k}={v}"))))
            .collect();
        query.extend(self.states.iter().map(|s| format!("state={}", percent(s))));
        if query.is_empty() {
            "/v1/members".to_owned()
        } else {
            format!("/v1/members?{}", query.join("&"))
        }
    }
}

/// `text` percent-encoded for a query value: only letters, digits, `-`,
/// `_` and `.` are left as they are (`+` would read as a space).
fn percent(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[derive(Debug, Args)]
pub(super) struct RttArgs {
    /// A member: its name, its peer id, or the first or last characters of its peer id
    #[arg(value_name = "A")]
    pub(super) a: String,
    /// Another member, as A; this node when left out
    #[arg(value_name = "B")]
    pub(super) b: Option<String>,
}

#[derive(Debug, Args)]
pub(super) struct Wide {
    /// Show full peer ids and every address
    #[arg(long)]
    pub(super) wide: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_is_consistent() {
        Cli::command().debug_assert();
        let help = Cli::try_parse_from(["baton", "--help"]).unwrap_err();
        assert_eq!(help.exit_code(), 0);
        let help = help.render().to_string();
        for text in [
            "status",
            "members",
            "peers",
            "sessions",
            "session",
            "open",
            "close",
            "report",
            "watch",
            "Examples:",
            "BATON_API_TOKEN",
        ] {
            assert!(help.contains(text), "{text} missing from\n{help}");
        }
        let help = Cli::try_parse_from(["baton", "members", "--help"]).unwrap_err();
        let help = help.render().to_string();
        for text in ["--wide", "--tag <KEY=VALUE>", "--state <STATE>", "(local)"] {
            assert!(help.contains(text), "{text} missing from\n{help}");
        }
        let help = Cli::try_parse_from(["baton", "rtt", "--help"]).unwrap_err();
        assert!(help.render().to_string().contains("consul rtt"));
        for (command, text) in [
            ("sessions", "--wide"),
            ("session", "baton session s1"),
            ("open", "--param <KEY=VALUE>"),
            ("close", "sends the request on to the"),
            ("report", "--jitter-ms <MS>"),
        ] {
            let help = Cli::try_parse_from(["baton", command, "--help"]).unwrap_err();
            assert_eq!(help.exit_code(), 0);
            let help = help.render().to_string();
            assert!(help.contains("Examples:"), "{command}:\n{help}");
            assert!(help.contains(text), "{text} missing from\n{help}");
        }
        // Global flags go anywhere, as in `baton members --json`.
        let cli = Cli::try_parse_from(["baton", "members", "--json", "--api", "h:1"]).unwrap();
        assert!(cli.json);
        assert_eq!(cli.api.as_deref(), Some("h:1"));
        let usage = Cli::try_parse_from(["baton", "frobnicate"]).unwrap_err();
        assert_eq!(usage.exit_code(), 2);
    }

    #[test]
    fn watch_help_says_it_shows_session_events_too() {
        let help = Cli::try_parse_from(["baton", "--help"])
            .unwrap_err()
            .render()
            .to_string();
        let line = help
            .lines()
            .find(|l| l.trim_start().starts_with("watch "))
            .unwrap_or_default();
        assert!(line.contains("session events"), "{line:?} in\n{help}");
        let help = Cli::try_parse_from(["baton", "watch", "--help"])
            .unwrap_err()
            .render()
            .to_string();
        assert!(help.contains("A session event"), "{help}");
    }

    #[test]
    fn member_filters_become_query_parameters() {
        let members = |args: &[&str]| {
            let cli = Cli::try_parse_from(["baton", "members"].iter().chain(args)).unwrap();
            match cli.command {
                Command::Members(m) => m.path(),
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(members(&[]), "/v1/members");
        assert_eq!(
            members(&["--tag", "region=eu", "--state", "alive", "--tag", "k=a+b:c"]),
            "/v1/members?tag=region%3Deu&tag=k%3Da%2Bb%3Ac&state=alive"
        );
        for bad in [
            &["--tag", "region"][..],
            &["--tag", "region=e u"],
            &["--state", "zombie"],
        ] {
            let err = Cli::try_parse_from(["baton", "members"].iter().chain(bad)).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad:?}");
        }
    }

    #[test]
    fn params_are_key_equals_value() {
        assert_eq!(
            parse_param("codec=pcmu"),
            Ok(("codec".to_owned(), "pcmu".to_owned()))
        );
        assert_eq!(
            parse_param("cmd=a=b c"),
            Ok(("cmd".to_owned(), "a=b c".to_owned()))
        );
        assert_eq!(
            parse_param("empty="),
            Ok(("empty".to_owned(), String::new()))
        );
        let err = parse_param("codec").unwrap_err();
        assert!(err.contains("has no '='"), "{err}");
        let err = parse_param("=pcmu").unwrap_err();
        assert!(err.contains("no name before '='"), "{err}");
    }

    #[test]
    fn report_values_are_checked() {
        assert_eq!(parse_loss("0.05"), Ok(0.05));
        assert_eq!(parse_loss("5%"), Ok(0.05));
        assert_eq!(parse_loss("1"), Ok(1.0));
        for bad in ["1.5", "-0.1", "150%", "NaN", "inf", "x", ""] {
            assert!(parse_loss(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(parse_millis("20"), Ok(20.0));
        assert_eq!(parse_millis("0.5"), Ok(0.5));
        for bad in ["-1", "NaN", "inf", "1e300", "20ms"] {
            assert!(parse_millis(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn a_report_of_loss_alone_takes_jitter_and_rtt_as_zero() {
        let cli = Cli::try_parse_from(["baton", "report", "s1", "--loss", "10%"]).unwrap();
        let Command::Report(r) = cli.command else {
            panic!("not a report: {cli:?}");
        };
        assert_eq!(
            (r.loss, r.jitter_ms, r.rtt_ms, r.packets),
            (0.1, 0.0, 0.0, 0)
        );
    }
}
