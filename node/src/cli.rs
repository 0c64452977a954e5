//! The `baton` command line: talks to a node's HTTP API (see [`crate::api`])
//! over plain HTTP, shows what it reads as tables for people or passes the
//! API's JSON through unchanged for scripts (`--json`), and opens, closes and
//! reports on sessions. [`run`] is the whole program.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::Deserialize;
use serde_json::{Value, json};

/// Where the node's API listens unless told otherwise (`batond --api`).
pub const DEFAULT_API: &str = "127.0.0.1:7700";

const API_PORT: u16 = 7700;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Three missed keep-alives (the API sends one every 15 s): the stream is dead.
const STREAM_SILENCE: Duration = Duration::from_secs(45);
/// Caps on what a server can make this process buffer.
const MAX_BODY: u64 = 64 << 20;
const MAX_ERROR_BODY: u64 = 64 << 10;
const MAX_EVENT: usize = 1 << 20;

const MAIN_EXAMPLES: &str = "\
Examples:
  baton status                      this node, on the default 127.0.0.1:7700
  baton members                     the members it sees and their state
  baton --api node-b:7700 peers     another node's libp2p peers
  baton members --json | jq '.[] | select(.state != \"alive\")'
  baton open --service rtp-audio --client 127.0.0.1:5004
  baton sessions                    the sessions, their primary and backups
  baton session ID                  one session and its history of moves
  baton close ID
  baton watch                       follow state changes until Ctrl-C

An API that listens beyond loopback needs its token: --token TOKEN or,
better (it stays out of the process list), the environment variable BATON_TOKEN.";

const STATUS_EXAMPLES: &str = "\
Examples:
  baton status
  baton status --json | jq .members.suspect";

const MEMBERS_EXAMPLES: &str = "\
Examples:
  baton members
  baton members --wide              full peer ids and every address
  baton members --json | jq -r '.[] | \"\\(.name) \\(.state)\"'

RTT is measured by probes; DIST is the Vivaldi estimate of the RTT.";

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
incarnation. With --json, one event per line as the API sends it.";

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

Shows the assignment (primary, backups in takeover order, epoch), the client,
the parameters and the changes of primary this node saw.";

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

Only the session's primary can close it: another node answers with an error
that names the primary; pass that node's API with --api.";

const REPORT_EXAMPLES: &str = "\
Examples:
  baton report s1 --loss 0.05 --jitter-ms 20 --rtt-ms 40
  baton report s1 --loss 2% --jitter-ms 4 --rtt-ms 30 --packets 500

Sends what a client measured on a session, as its RTP receiver would: poor
enough service makes the overlay move the session. Handy for demos and tests.";

/// Inspect a Baton node through its HTTP API.
#[derive(Debug, Parser)]
#[command(name = "baton", version, after_help = MAIN_EXAMPLES)]
struct Cli {
    /// Address of the node's API, HOST:PORT [env: BATON_API] [default: 127.0.0.1:7700]
    #[arg(long, global = true, value_name = "ADDR")]
    api: Option<String>,
    /// Bearer token, needed when the API listens beyond loopback [env: BATON_TOKEN]
    #[arg(long, global = true, value_name = "TOKEN")]
    token: Option<String>,
    /// Print the API's JSON instead of a table: one document (or event) per line
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show this node: identity, overlay, uptime and member counts
    #[command(after_help = STATUS_EXAMPLES)]
    Status,
    /// List the members this node knows, with state, RTT and distance
    #[command(after_help = MEMBERS_EXAMPLES)]
    Members(Wide),
    /// List the libp2p peers and whether the peering policy admitted them
    #[command(after_help = PEERS_EXAMPLES)]
    Peers(Wide),
    /// List the sessions this node knows, with primary, backups and client
    #[command(after_help = SESSIONS_EXAMPLES)]
    Sessions(Wide),
    /// Show one session: assignment, client, parameters and history of moves
    #[command(after_help = SESSION_EXAMPLES)]
    Session(SessionId),
    /// Open a session of a service for a client
    #[command(after_help = OPEN_EXAMPLES)]
    Open(OpenArgs),
    /// Close a session (ask its primary)
    #[command(after_help = CLOSE_EXAMPLES)]
    Close(SessionId),
    /// Report a client's loss, jitter and RTT on a session
    #[command(after_help = REPORT_EXAMPLES)]
    Report(ReportArgs),
    /// Follow member state changes as they happen, until Ctrl-C
    #[command(after_help = WATCH_EXAMPLES)]
    Watch(Wide),
}

#[derive(Debug, Args)]
struct SessionId {
    /// Session id, as `baton sessions` shows it
    #[arg(value_name = "ID")]
    id: String,
}

#[derive(Debug, Args)]
struct OpenArgs {
    /// Service to run, such as rtp-audio
    #[arg(long, value_name = "NAME")]
    service: String,
    /// Where the client is: for rtp-audio, the UDP address it receives on
    #[arg(long, value_name = "IP:PORT")]
    client: String,
    /// A service parameter (repeatable)
    #[arg(long = "param", value_name = "KEY=VALUE", value_parser = parse_param)]
    params: Vec<(String, String)>,
}

#[derive(Debug, Args)]
struct ReportArgs {
    /// Session id
    #[arg(value_name = "ID")]
    id: String,
    /// Fraction of packets lost, 0 to 1, or a percentage such as 5%
    #[arg(long, value_name = "FRACTION", value_parser = parse_loss, allow_negative_numbers = true)]
    loss: f64,
    /// Interarrival jitter, in milliseconds
    #[arg(long = "jitter-ms", value_name = "MS", value_parser = parse_millis, allow_negative_numbers = true)]
    jitter_ms: f64,
    /// Round-trip time, in milliseconds
    #[arg(long = "rtt-ms", value_name = "MS", value_parser = parse_millis, allow_negative_numbers = true)]
    rtt_ms: f64,
    /// Packets received since the last report
    #[arg(long, value_name = "N", default_value_t = 0)]
    packets: u64,
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
        Ok(ms) if (0.0..=crate::api::MAX_REPORT_MS).contains(&ms) => Ok(ms),
        _ => Err(format!(
            "{text:?} is not a duration: give milliseconds from 0 to {}",
            crate::api::MAX_REPORT_MS
        )),
    }
}

impl Command {
    /// Checks what clap cannot: a `--param` given twice.
    fn check(&self) -> Result<(), clap::Error> {
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
struct Wide {
    /// Show full peer ids and every address
    #[arg(long)]
    wide: bool,
}

/// Runs `baton` with these arguments (the first is the program name) and
/// returns the process exit code: 0 on success, 1 on error, 2 on bad usage.
pub fn run<I, T>(args: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    run_to(args, &mut io::stdout())
}

/// [`run`], writing the output to `out` (errors still go to stderr, and
/// `watch` to stdout).
fn run_to<I, T>(args: I, out: &mut dyn Write) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args).and_then(|cli| cli.command.check().map(|()| cli)) {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version are "errors" that go to stdout with code 0.
            let _ = e.print();
            return e.exit_code();
        }
    };
    let api = cli
        .api
        .or_else(|| env_var("BATON_API"))
        .unwrap_or_else(|| DEFAULT_API.to_owned());
    let token = cli.token.or_else(|| env_var("BATON_TOKEN"));
    match execute(cli.command, &api, token, cli.json, out) {
        Ok(()) => 0,
        // The reader went away (`baton watch | head`): nothing left to do.
        Err(CliError::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => 0,
        Err(e) => {
            let _ = writeln!(io::stderr(), "error: {e}");
            1
        }
    }
}

fn env_var(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.trim().is_empty())
}

fn execute(
    command: Command,
    api: &str,
    token: Option<String>,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let client = ApiClient::new(api, token)?;
    let text = match command {
        Command::Status => show(&client, "/v1/status", json, status_text)?,
        Command::Members(w) => show(&client, "/v1/members", json, |v| members_table(v, w.wide))?,
        Command::Peers(w) => show(&client, "/v1/peers", json, |v| peers_table(v, w.wide))?,
        Command::Sessions(w) => show(&client, "/v1/sessions", json, |v| {
            sessions_table(v, &node_names(&client), w.wide)
        })?,
        Command::Session(s) => {
            let path = session_path(&s.id, "");
            show(&client, &path, json, |v| {
                session_text(v, &node_names(&client), &TimeZone::system())
            })?
        }
        Command::Open(open) => {
            let params: BTreeMap<String, String> = open.params.into_iter().collect();
            let body = json!({"service": open.service, "client": open.client, "params": params});
            let path = "/v1/sessions";
            let (raw, session) = client.send(Verb::Post(body.to_string()), path)?;
            if json {
                passthrough(&raw)
            } else {
                opened_text(&session, &node_names(&client))
                    .map_err(|e| client.bad_json(path, &e))?
            }
        }
        Command::Close(s) => {
            let path = session_path(&s.id, "");
            let (raw, session) = client.send(Verb::Delete, &path)?;
            if json {
                passthrough(&raw)
            } else {
                closed_text(&session).map_err(|e| client.bad_json(&path, &e))?
            }
        }
        Command::Report(r) => {
            let body = json!({
                "loss": r.loss, "jitter_ms": r.jitter_ms, "rtt_ms": r.rtt_ms, "packets": r.packets,
            });
            client.send(
                Verb::Post(body.to_string()),
                &session_path(&r.id, "/report"),
            )?;
            // The API answers 204 without a body: nothing to pass through.
            if json {
                String::new()
            } else {
                format!(
                    "reported on session {}: loss {:.1}%, jitter {} ms, RTT {} ms, {} packets\n",
                    sanitize(&r.id),
                    r.loss * 100.0,
                    r.jitter_ms,
                    r.rtt_ms,
                    r.packets
                )
            }
        }
        Command::Watch(w) => return watch(client, json, w.wide),
    };
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(CliError::Output)
}

/// Fetches `path` and returns it as received with `--json`, else rendered.
fn show(
    client: &ApiClient,
    path: &str,
    json: bool,
    render: impl Fn(&Value) -> Result<String, serde_json::Error>,
) -> Result<String, CliError> {
    let (body, value) = client.get_json(path)?;
    if json {
        Ok(passthrough(&body))
    } else {
        render(&value).map_err(|e| client.bad_json(path, &e))
    }
}

/// The API's JSON as `--json` prints it: one document per line.
fn passthrough(body: &str) -> String {
    format!("{}\n", body.trim())
}

/// `/v1/sessions/<id><rest>`, the id percent-encoded: whatever the user
/// typed stays one path segment.
fn session_path(id: &str, rest: &str) -> String {
    let mut path = "/v1/sessions/".to_owned();
    for byte in id.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_' {
            path.push(char::from(byte));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(path, "%{byte:02X}");
        }
    }
    path.push_str(rest);
    path
}

/// Node names by peer id, this node's included, to show names rather than
/// ids. Best effort: without them, tables show short ids.
fn node_names(client: &ApiClient) -> Names {
    let mut names = Names::new();
    if let Ok((_, members)) = client.get_json("/v1/members") {
        if let Ok(members) = Vec::<Member>::deserialize(&members) {
            names.extend(members.into_iter().map(|m| (m.id, m.name)));
        }
    }
    if let Ok((_, status)) = client.get_json("/v1/status") {
        if let Ok(status) = Status::deserialize(&status) {
            names.insert(status.id, status.name);
        }
    }
    names.retain(|_, name| !name.is_empty());
    names
}

/// Why `baton` failed; the message tells the user what to do next.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// No TCP connection to the API.
    #[error(
        "cannot reach the Baton node API at {api}: {reason}. Is batond running? \
         Use --api ADDR to point at another node."
    )]
    Unreachable {
        /// `--api` as given.
        api: String,
        /// What the OS said, e.g. `connection refused`.
        reason: String,
    },
    /// Connected, but no complete answer in time.
    #[error(
        "the Baton node API at {api} did not answer {path} within {secs} s: \
         the node may be overloaded or stuck"
    )]
    TimedOut {
        /// `--api` as given.
        api: String,
        /// The request path.
        path: String,
        /// The time allowed.
        secs: u64,
    },
    /// The API answered with an error message.
    #[error("{message} (HTTP {status} from the Baton node API at {api})")]
    Api {
        /// `--api` as given.
        api: String,
        /// HTTP status.
        status: u16,
        /// The API's `error` message.
        message: String,
    },
    /// An HTTP error without a Baton error body: probably not a Baton node.
    #[error(
        "{api} answered {path} with HTTP {status} and no Baton error message: \
         is --api pointing at a Baton node?"
    )]
    NotBaton {
        /// `--api` as given.
        api: String,
        /// The request path.
        path: String,
        /// HTTP status.
        status: u16,
    },
    /// Something that is not the HTTP this client expects.
    #[error(
        "{api} did not answer as a Baton node API ({detail}): is --api pointing at a Baton node?"
    )]
    NotHttp {
        /// `--api` as given.
        api: String,
        /// What was wrong.
        detail: String,
    },
    /// A body that is not JSON, or not of the expected shape.
    #[error(
        "the Baton node API at {api} answered {path} with bad JSON ({detail}): \
         are batond and baton the same version?"
    )]
    BadJson {
        /// `--api` as given.
        api: String,
        /// The request path.
        path: String,
        /// The parser's complaint.
        detail: String,
    },
    /// The event stream failed mid-way.
    #[error("the event stream from the Baton node API at {api} broke: {detail}")]
    StreamBroken {
        /// `--api` as given.
        api: String,
        /// What happened.
        detail: String,
    },
    /// The event stream stopped carrying even keep-alives.
    #[error(
        "the event stream from the Baton node API at {api} went silent for {secs} s \
         (the node sends a keep-alive every 15 s): the node may be stuck or the network down"
    )]
    StreamSilent {
        /// `--api` as given.
        api: String,
        /// The silence allowed.
        secs: u64,
    },
    /// `--api` cannot be turned into a URL.
    #[error("invalid --api address {api:?}: {why}")]
    BadAddress {
        /// `--api` as given.
        api: String,
        /// What is wrong with it.
        why: String,
    },
    /// The token cannot be sent in a header.
    #[error(
        "the token contains characters that cannot go in an HTTP header: \
         only visible ASCII is allowed"
    )]
    BadToken,
    /// Writing to stdout failed.
    #[error("cannot write the output: {0}")]
    Output(#[source] io::Error),
    /// `watch` could not set up its Ctrl-C handling.
    #[error("cannot watch for Ctrl-C: {0}")]
    Signals(#[source] io::Error),
}

/// A client of one node's HTTP API.
#[derive(Debug)]
pub struct ApiClient {
    agent: ureq::Agent,
    /// `http://host:port`, without a trailing slash.
    base: String,
    /// The address as the user gave it, for messages.
    api: String,
    token: Option<String>,
}

impl ApiClient {
    /// A client of the API at `api` (`HOST:PORT`, port 7700 if omitted, or
    /// `http://HOST:PORT`), sending `token` as a bearer token if given.
    pub fn new(api: &str, token: Option<String>) -> Result<Self, CliError> {
        let base = base_url(api).map_err(|why| CliError::BadAddress {
            api: api.to_owned(),
            why,
        })?;
        if let Some(token) = &token {
            if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(CliError::BadToken);
            }
        }
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // The API is reached directly; a proxy from the environment would
            // also see the token.
            .proxy(None)
            // Nor would a redirect take the token elsewhere.
            .max_redirects(0)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_per_read(Some(STREAM_SILENCE))
            .user_agent(concat!("baton/", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(ApiClient {
            agent: config.new_agent(),
            base,
            api: api.to_owned(),
            token,
        })
    }

    /// GETs `path` and returns its body, checked to be JSON, and the parsed
    /// value.
    pub fn get_json(&self, path: &str) -> Result<(String, Value), CliError> {
        self.send(Verb::Get, path)
    }

    /// Sends a request and returns the body of the answer, checked to be
    /// JSON, and the parsed value (null for an empty 204).
    fn send(&self, verb: Verb, path: &str) -> Result<(String, Value), CliError> {
        let mut response = self.call(verb, path, Some(REQUEST_TIMEOUT))?;
        let no_content = response.status() == ureq::http::StatusCode::NO_CONTENT;
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_BODY)
            .read_to_string()
            .map_err(|e| self.failure(path, e))?;
        if no_content && body.is_empty() {
            return Ok((body, Value::Null));
        }
        let value = serde_json::from_str(&body).map_err(|e| self.bad_json(path, &e))?;
        Ok((body, value))
    }

    /// Opens `GET /v1/events`: server-sent events, line by line.
    pub fn events(&self) -> Result<impl BufRead + use<>, CliError> {
        let path = "/v1/events";
        let response = self.call(Verb::Get, path, None)?;
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !content_type.starts_with("text/event-stream") {
            return Err(CliError::NotHttp {
                api: self.api.clone(),
                detail: format!("{path} is {content_type:?}, not text/event-stream"),
            });
        }
        Ok(BufReader::new(response.into_body().into_reader()))
    }

    fn call(
        &self,
        verb: Verb,
        path: &str,
        timeout: Option<Duration>,
    ) -> Result<ureq::http::Response<ureq::Body>, CliError> {
        let url = format!("{}{path}", self.base);
        let auth = self.token.as_ref().map(|token| format!("Bearer {token}"));
        let sent = match verb {
            Verb::Get | Verb::Delete => {
                let mut request = match verb {
                    Verb::Delete => self.agent.delete(&url),
                    _ => self.agent.get(&url),
                };
                if let Some(auth) = &auth {
                    request = request.header("Authorization", auth);
                }
                request.config().timeout_global(timeout).build().call()
            }
            Verb::Post(body) => {
                let mut request = self
                    .agent
                    .post(&url)
                    .header("Content-Type", "application/json");
                if let Some(auth) = &auth {
                    request = request.header("Authorization", auth);
                }
                request.config().timeout_global(timeout).build().send(body)
            }
        };
        let mut response = sent.map_err(|e| self.failure(path, e))?;
        let status = response.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(response);
        }
        #[derive(Deserialize)]
        struct ErrorBody {
            error: String,
        }
        let message = response
            .body_mut()
            .with_config()
            .limit(MAX_ERROR_BODY)
            .read_to_string()
            .ok()
            .and_then(|body| serde_json::from_str::<ErrorBody>(&body).ok());
        Err(match message {
            Some(body) => CliError::Api {
                api: self.api.clone(),
                status,
                message: sanitize(&body.error),
            },
            None => CliError::NotBaton {
                api: self.api.clone(),
                path: path.to_owned(),
                status,
            },
        })
    }

    fn failure(&self, path: &str, error: ureq::Error) -> CliError {
        let api = self.api.clone();
        let unreachable = |reason: &str| CliError::Unreachable {
            api: self.api.clone(),
            reason: reason.to_owned(),
        };
        match error {
            ureq::Error::Io(e) => unreachable(&io_reason(&e)),
            ureq::Error::HostNotFound => unreachable("host not found"),
            ureq::Error::ConnectionFailed => unreachable("connection failed"),
            ureq::Error::Timeout(ureq::Timeout::Connect | ureq::Timeout::Resolve) => {
                unreachable("timed out connecting")
            }
            ureq::Error::Timeout(_) => CliError::TimedOut {
                api,
                path: path.to_owned(),
                secs: REQUEST_TIMEOUT.as_secs(),
            },
            ureq::Error::BodyExceedsLimit(limit) => CliError::NotHttp {
                api,
                detail: format!("the answer to {path} is larger than {limit} bytes"),
            },
            other => CliError::NotHttp {
                api,
                detail: other.to_string(),
            },
        }
    }

    fn bad_json(&self, path: &str, error: &serde_json::Error) -> CliError {
        CliError::BadJson {
            api: self.api.clone(),
            path: path.to_owned(),
            detail: error.to_string(),
        }
    }

    fn stream_error(&self, error: &io::Error) -> CliError {
        let inner = error
            .get_ref()
            .and_then(|e| e.downcast_ref::<ureq::Error>());
        if error.kind() == io::ErrorKind::TimedOut || matches!(inner, Some(ureq::Error::Timeout(_)))
        {
            return CliError::StreamSilent {
                api: self.api.clone(),
                secs: STREAM_SILENCE.as_secs(),
            };
        }
        CliError::StreamBroken {
            api: self.api.clone(),
            detail: error.to_string(),
        }
    }
}

/// An HTTP request method, with the JSON body of a POST.
#[derive(Debug)]
enum Verb {
    Get,
    Delete,
    Post(String),
}

/// `http://host:port[/prefix]` from what the user passed as `--api`.
fn base_url(api: &str) -> Result<String, String> {
    let api = api.trim();
    let rest = match api.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
        Some((scheme, _)) => {
            return Err(format!(
                "{scheme}:// is not supported, the API speaks plain HTTP: give HOST:PORT"
            ));
        }
        None => api,
    };
    let rest = rest.trim_end_matches('/');
    let (authority, prefix) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let expected = "expected HOST:PORT such as 127.0.0.1:7700";
    if authority.is_empty() || authority.contains(|c: char| c.is_whitespace() || c == '@') {
        return Err(expected.to_owned());
    }
    let port = if let Some(bracketed) = authority.strip_prefix('[') {
        let Some((_, after)) = bracketed.split_once(']') else {
            return Err(format!("unclosed '[': {expected}"));
        };
        match after.strip_prefix(':') {
            Some(port) => Some(port),
            None if after.is_empty() => None,
            None => return Err(expected.to_owned()),
        }
    } else {
        match authority.split_once(':') {
            Some((_, port)) if port.contains(':') => {
                return Err("write an IPv6 address in brackets, such as [::1]:7700".to_owned());
            }
            Some(("", _)) => return Err(format!("missing host: {expected}")),
            Some((_, port)) => Some(port),
            None => None,
        }
    };
    match port {
        Some(port) if port.parse::<u16>().is_err() => {
            Err(format!("{port:?} is not a port number: {expected}"))
        }
        Some(_) => Ok(format!("http://{authority}{prefix}")),
        None => Ok(format!("http://{authority}:{API_PORT}{prefix}")),
    }
}

fn io_reason(error: &io::Error) -> String {
    use io::ErrorKind as K;
    match error.kind() {
        K::ConnectionRefused => "connection refused".to_owned(),
        K::TimedOut => "connection timed out".to_owned(),
        K::HostUnreachable => "host unreachable".to_owned(),
        K::NetworkUnreachable => "network unreachable".to_owned(),
        K::ConnectionReset | K::ConnectionAborted => "connection reset".to_owned(),
        K::AddrNotAvailable => "address not available".to_owned(),
        _ => error.to_string(),
    }
}

/// Follows the event stream, printing a line per event, until Ctrl-C or the
/// end of the stream.
fn watch(client: ApiClient, json: bool, wide: bool) -> Result<(), CliError> {
    // Looked up once, not per event.
    let tz = TimeZone::system();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CliError::Signals)?;
    let api = client.api.clone();
    let result = runtime.block_on(async move {
        // ureq blocks, so the stream is read on a blocking thread while this
        // one waits for Ctrl-C.
        let follower = tokio::task::spawn_blocking(move || {
            follow(&client, json, wide, &tz, &mut io::stdout().lock())
        });
        let interrupted = async {
            if tokio::signal::ctrl_c().await.is_err() {
                // No handler: Ctrl-C keeps its default effect.
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            joined = follower => joined.unwrap_or_else(|e| Err(CliError::StreamBroken {
                api,
                detail: format!("the reader thread failed: {e}"),
            })),
            () = interrupted => Ok(()),
        }
    });
    // The reader may still be blocked in a read; the process exits anyway.
    runtime.shutdown_background();
    result
}

/// Reads the event stream of `client` to its end, writing a line per event.
fn follow(
    client: &ApiClient,
    json: bool,
    wide: bool,
    tz: &TimeZone,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let mut stream = client.events()?;
    let mut parser = SseParser::default();
    let mut line = String::new();
    loop {
        line.clear();
        let read = (&mut stream)
            .take(MAX_EVENT as u64)
            .read_line(&mut line)
            .map_err(|e| client.stream_error(&e))?;
        if read == 0 {
            break;
        }
        if (read == MAX_EVENT && !line.ends_with('\n')) || parser.pending() > MAX_EVENT {
            return Err(CliError::StreamBroken {
                api: client.api.clone(),
                detail: format!("an event is larger than {MAX_EVENT} bytes"),
            });
        }
        let Some(event) = parser.push(&line) else {
            continue;
        };
        let text = if json {
            event.data
        } else {
            event_line(&event.name, &event.data, wide, tz)
                .map_err(|e| client.bad_json("/v1/events", &e))?
        };
        writeln!(out, "{text}")
            .and_then(|()| out.flush())
            .map_err(CliError::Output)?;
    }
    let _ = writeln!(io::stderr(), "the node closed the event stream");
    Ok(())
}

/// One server-sent event.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SseEvent {
    /// The `event:` field, `message` if none.
    name: String,
    /// The `data:` lines, joined by newlines.
    data: String,
}

/// The `text/event-stream` format, fed line by line.
#[derive(Debug, Default)]
struct SseParser {
    name: String,
    data: String,
    has_data: bool,
}

impl SseParser {
    /// Takes one line (with or without its line break); returns the event
    /// that a blank line completes.
    fn push(&mut self, line: &str) -> Option<SseEvent> {
        let line = line.strip_suffix('\n').unwrap_or(line);
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            let name = std::mem::take(&mut self.name);
            let data = std::mem::take(&mut self.data);
            if !std::mem::take(&mut self.has_data) {
                return None;
            }
            let name = if name.is_empty() {
                "message".to_owned()
            } else {
                name
            };
            return Some(SseEvent { name, data });
        }
        let (field, value) = match line.split_once(':') {
            // A comment: the API's keep-alives.
            Some(("", _)) => return None,
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => value.clone_into(&mut self.name),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            _ => {}
        }
        None
    }

    /// Bytes of the event being assembled.
    fn pending(&self) -> usize {
        self.data.len() + self.name.len()
    }
}

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

/// Text from the network made safe for a terminal: control characters
/// (escape sequences) become `?`.
fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

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

fn addresses(addrs: &[String], wide: bool) -> String {
    match addrs {
        [] => "-".to_owned(),
        _ if wide => sanitize(&addrs.join(",")),
        [one] => sanitize(one),
        [first, rest @ ..] => format!("{} (+{})", sanitize(first), rest.len()),
    }
}

/// A member as `baton` reads it: only what it shows, so a newer node's extra
/// fields are fine.
#[derive(Debug, Deserialize)]
struct Member {
    id: String,
    #[serde(default)]
    name: String,
    state: String,
    #[serde(default)]
    incarnation: u64,
    #[serde(default)]
    rtt_ms: Option<f64>,
    #[serde(default)]
    distance_ms: Option<f64>,
    #[serde(default)]
    addrs: Vec<String>,
}

/// The table of `baton members` from the JSON of `GET /v1/members`.
pub fn members_table(members: &Value, wide: bool) -> Result<String, serde_json::Error> {
    let members = Vec::<Member>::deserialize(members)?;
    let rows: Vec<Vec<String>> = members
        .iter()
        .map(|m| {
            vec![
                cell(&m.name),
                short_id(&m.id, wide),
                cell(&m.state),
                m.incarnation.to_string(),
                millis(m.rtt_ms),
                millis(m.distance_ms),
                addresses(&m.addrs, wide),
            ]
        })
        .collect();
    Ok(render_table(
        &[
            ("NAME", Align::Left),
            ("PEER ID", Align::Left),
            ("STATE", Align::Left),
            ("INC", Align::Right),
            ("RTT", Align::Right),
            ("DIST", Align::Right),
            ("ADDRESS", Align::Left),
        ],
        &rows,
    ))
}

#[derive(Debug, Deserialize)]
struct Peer {
    id: String,
    #[serde(default)]
    addrs: Vec<String>,
    #[serde(default)]
    connections: u64,
    admission: String,
    #[serde(default)]
    reason: Option<String>,
}

/// The table of `baton peers` from the JSON of `GET /v1/peers`.
pub fn peers_table(peers: &Value, wide: bool) -> Result<String, serde_json::Error> {
    let peers = Vec::<Peer>::deserialize(peers)?;
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
    Ok(render_table(
        &[
            ("PEER ID", Align::Left),
            ("ADMISSION", Align::Left),
            ("CONNS", Align::Right),
            ("ADDRESS", Align::Left),
            ("REASON", Align::Left),
        ],
        &rows,
    ))
}

/// Node names by peer id.
pub type Names = BTreeMap<String, String>;

/// A session as `baton` reads it: only what it shows, so a newer node's extra
/// fields are fine.
#[derive(Debug, Deserialize)]
struct Session {
    id: String,
    #[serde(default)]
    service: String,
    primary: String,
    #[serde(default)]
    primary_name: String,
    #[serde(default)]
    backups: Vec<String>,
    epoch: u64,
    #[serde(default)]
    version: u64,
    #[serde(default)]
    state: String,
    #[serde(default)]
    client: String,
    #[serde(default)]
    location: String,
    #[serde(default)]
    params: BTreeMap<String, String>,
    #[serde(default)]
    started_ms: u64,
    #[serde(default)]
    updated_ms: u64,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    history: Vec<Move>,
    #[serde(default)]
    hosted_here: bool,
}

#[derive(Debug, Deserialize)]
struct Move {
    epoch: u64,
    primary: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    at_ms: u64,
}

impl Session {
    /// The primary's name: the one the node sent, else one from `names`.
    fn primary_name<'a>(&'a self, names: &'a Names) -> Option<&'a str> {
        Some(self.primary_name.as_str())
            .filter(|name| !name.is_empty())
            .or_else(|| names.get(&self.primary).map(String::as_str))
    }
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

/// The table of `baton sessions` from the JSON of `GET /v1/sessions`;
/// `names` maps peer ids to node names.
pub fn sessions_table(
    sessions: &Value,
    names: &Names,
    wide: bool,
) -> Result<String, serde_json::Error> {
    let sessions = Vec::<Session>::deserialize(sessions)?;
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
                node_cell(&s.primary, s.primary_name(names), wide),
                s.epoch.to_string(),
                cell(&backups.join(",")),
                cell(&s.client),
                cell(&s.state),
                if s.hosted_here { "*" } else { "" }.to_owned(),
            ]
        })
        .collect();
    Ok(render_table(
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
    ))
}

/// The text of `baton session ID` from the JSON of `GET /v1/sessions/{id}`;
/// times are shown in `tz`.
pub fn session_text(
    session: &Value,
    names: &Names,
    tz: &TimeZone,
) -> Result<String, serde_json::Error> {
    let s = Session::deserialize(session)?;
    let name = |id: &String| names.get(id).map(String::as_str);
    let mut lines = vec![
        ("session", cell(&s.id)),
        ("service", cell(&s.service)),
        ("state", cell(&s.state)),
        (
            "hosted here",
            if s.hosted_here { "yes" } else { "no" }.to_owned(),
        ),
        ("primary", node_line(&s.primary, s.primary_name(names))),
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
    let mut out = String::new();
    for (key, value) in lines {
        out.push_str(format!("{key:<14}{value}").trim_end());
        out.push('\n');
    }
    out.push('\n');
    if s.history.is_empty() {
        out.push_str("moves: none seen by this node\n");
        return Ok(out);
    }
    out.push_str("moves seen by this node, oldest first:\n");
    let rows: Vec<Vec<String>> = s
        .history
        .iter()
        .map(|m| {
            let primary_name = if m.primary == s.primary {
                s.primary_name(names)
            } else {
                name(&m.primary)
            };
            vec![
                m.epoch.to_string(),
                node_cell(&m.primary, primary_name, false),
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
    Ok(out)
}

/// What `baton open` prints from the session the API answered with.
pub fn opened_text(session: &Value, names: &Names) -> Result<String, serde_json::Error> {
    let s = Session::deserialize(session)?;
    let backups: Vec<String> = s
        .backups
        .iter()
        .map(|b| node_cell(b, names.get(b).map(String::as_str), false))
        .collect();
    Ok(format!(
        "session  {}\nprimary  {}\nbackups  {}\n",
        cell(&s.id),
        node_line(&s.primary, s.primary_name(names)),
        if backups.is_empty() {
            "none".to_owned()
        } else {
            backups.join(", ")
        }
    ))
}

/// What `baton close` prints from the session the API answered with.
pub fn closed_text(session: &Value) -> Result<String, serde_json::Error> {
    let s = Session::deserialize(session)?;
    Ok(format!(
        "closed session {} ({} for {}, epoch {})\n",
        cell(&s.id),
        cell(&s.service),
        cell(&s.client),
        s.epoch
    ))
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

#[derive(Debug, Deserialize)]
struct Status {
    id: String,
    name: String,
    #[serde(default)]
    overlay: String,
    #[serde(default)]
    profile: String,
    #[serde(default)]
    version: String,
    #[serde(default)]
    capacity: u64,
    #[serde(default)]
    uptime_s: u64,
    #[serde(default)]
    incarnation: u64,
    #[serde(default)]
    local_health: u64,
    #[serde(default)]
    listen_addrs: Vec<String>,
    #[serde(default)]
    members: Counts,
    #[serde(default)]
    peers: u64,
}

#[derive(Debug, Default, Deserialize)]
struct Counts {
    #[serde(default)]
    alive: u64,
    #[serde(default)]
    suspect: u64,
    #[serde(default)]
    dead: u64,
    #[serde(default)]
    left: u64,
}

/// The text of `baton status` from the JSON of `GET /v1/status`.
pub fn status_text(status: &Value) -> Result<String, serde_json::Error> {
    let s = Status::deserialize(status)?;
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
    let mut out = String::new();
    for (key, value) in lines {
        out.push_str(format!("{key:<14}{value}").trim_end());
        out.push('\n');
    }
    Ok(out)
}

/// An event of `GET /v1/events` as `baton watch` reads it.
#[derive(Debug, Deserialize)]
struct WatchedEvent {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    at_ms: Option<u64>,
    #[serde(default)]
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    previous: Option<String>,
    #[serde(default)]
    incarnation: Option<u64>,
    /// Only in `lagged` events.
    #[serde(default)]
    missed: Option<u64>,
}

/// The line `baton watch` prints for an SSE event named `name` carrying the
/// JSON `data`; times are shown in `tz`.
pub fn event_line(
    name: &str,
    data: &str,
    wide: bool,
    tz: &TimeZone,
) -> Result<String, serde_json::Error> {
    let event: WatchedEvent = serde_json::from_str(data)?;
    let kind = if event.kind.is_empty() {
        name
    } else {
        &event.kind
    };
    let at = event
        .at_ms
        .and_then(|ms| i64::try_from(ms).ok())
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
    if kind == "lagged" {
        let missed = event.missed.unwrap_or(0);
        return Ok(format!(
            "{time}  lagged    missed {missed} events: this watch fell behind the node"
        ));
    }
    let transition = format!(
        "{} -> {}",
        cell(event.previous.as_deref().unwrap_or("new")),
        cell(&event.state)
    );
    let incarnation = event
        .incarnation
        .map_or_else(|| "-".to_owned(), |i| i.to_string());
    Ok(format!(
        "{time}  {:<8}  {:<16}  {:<8}  {transition:<17}  inc {incarnation}",
        cell(kind),
        cell(&event.name),
        short_id(&event.id, wide),
    ))
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};

    use tokio::sync::oneshot;
    use tokio::time::timeout;

    use super::*;
    use crate::state::{ApiEvent, LocalInfo, MemberView, Shared};

    const LIMIT: Duration = Duration::from_secs(20);

    fn member(id: &str, name: &str, state: &str) -> MemberView {
        MemberView {
            id: id.to_owned(),
            name: name.to_owned(),
            state: state.to_owned(),
            incarnation: 1,
            rtt_ms: None,
            distance_ms: None,
            addrs: Vec::new(),
            capacity: 4,
            load: 0,
            since: "2026-01-01T00:00:00.000Z".to_owned(),
        }
    }

    fn two_members() -> Vec<MemberView> {
        vec![
            MemberView {
                incarnation: 1,
                rtt_ms: Some(0.4),
                distance_ms: Some(0.52),
                addrs: vec![
                    "/ip4/127.0.0.1/udp/4001/quic-v1".to_owned(),
                    "/ip4/127.0.0.1/tcp/4001".to_owned(),
                ],
                ..member("12D3KooWBravo0000bbbbbbbb", "bravo", "alive")
            },
            MemberView {
                incarnation: 12,
                distance_ms: Some(103.26),
                ..member("12D3KooWCharlie000cccccccc", "charlie", "suspect")
            },
        ]
    }

    #[test]
    fn members_table_for_two_members() {
        let json = serde_json::to_value(two_members()).unwrap();
        assert_eq!(
            members_table(&json, false).unwrap(),
            "\
NAME     PEER ID   STATE    INC  RTT   DIST  ADDRESS
bravo    bbbbbbbb  alive      1  0.4    0.5  /ip4/127.0.0.1/udp/4001/quic-v1 (+1)
charlie  cccccccc  suspect   12    -  103.3  -
"
        );
    }

    #[test]
    fn wide_members_table_shows_full_ids_and_every_address() {
        let json = serde_json::to_value(two_members()).unwrap();
        let table = members_table(&json, true).unwrap();
        assert!(table.contains("12D3KooWBravo0000bbbbbbbb"), "{table}");
        assert!(
            table.contains("/ip4/127.0.0.1/udp/4001/quic-v1,/ip4/127.0.0.1/tcp/4001"),
            "{table}"
        );
    }

    #[test]
    fn empty_members_table_is_just_the_header() {
        assert_eq!(
            members_table(&json!([]), false).unwrap(),
            "NAME  PEER ID  STATE  INC  RTT  DIST  ADDRESS\n"
        );
    }

    #[test]
    fn members_table_refuses_json_of_another_shape() {
        let err = members_table(&json!({"members": []}), false).unwrap_err();
        assert!(err.to_string().contains("sequence"), "{err}");
        let err = members_table(&json!([{"name": "x", "state": "alive"}]), false).unwrap_err();
        assert!(err.to_string().contains("`id`"), "{err}");
    }

    #[test]
    fn peers_table_shows_admission_and_reason() {
        let peers = json!([
            {"id": "12D3KooWBravo0000bbbbbbbb", "addrs": ["/ip4/127.0.0.1/tcp/4001"],
             "connections": 2, "admission": "admitted", "reason": null},
            {"id": "12D3KooWEvil00000eeeeeeee", "addrs": [], "connections": 0,
             "admission": "refused", "reason": "overlay \u{1b}[31mother"},
        ]);
        assert_eq!(
            peers_table(&peers, false).unwrap(),
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
        assert_eq!(
            status_text(&status).unwrap(),
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
        let event = ApiEvent {
            kind: "member".to_owned(),
            at: "2026-03-01T12:34:56.789Z".to_owned(),
            at_ms: 1_772_368_496_789,
            id: "12D3KooWBravo0000bbbbbbbb".to_owned(),
            name: "bravo".to_owned(),
            state: "suspect".to_owned(),
            previous: Some("alive".to_owned()),
            incarnation: 4,
            reason: None,
        };
        let data = serde_json::to_string(&event).unwrap();
        assert_eq!(
            event_line("member", &data, false, &TimeZone::UTC).unwrap(),
            "12:34:56.789  member    bravo             bbbbbbbb  alive -> suspect   inc 4"
        );
        let first = ApiEvent {
            previous: None,
            state: "alive".to_owned(),
            ..event
        };
        let line = event_line(
            "member",
            &serde_json::to_string(&first).unwrap(),
            true,
            &TimeZone::fixed(jiff::tz::offset(2)),
        )
        .unwrap();
        assert!(line.starts_with("14:34:56.789  member"), "{line}");
        assert!(
            line.contains("12D3KooWBravo0000bbbbbbbb  new -> alive"),
            "{line}"
        );
    }

    #[test]
    fn lagged_event_line_says_how_many_were_missed() {
        let line = event_line(
            "lagged",
            r#"{"kind":"lagged","missed":12}"#,
            false,
            &TimeZone::UTC,
        )
        .unwrap();
        assert!(
            line.ends_with("lagged    missed 12 events: this watch fell behind the node"),
            "{line}"
        );
    }

    #[test]
    fn sse_parser_assembles_events_and_skips_comments() {
        let mut parser = SseParser::default();
        let mut events = Vec::new();
        for line in [
            ":\n",
            "\n",
            "event: member\r\n",
            "data: {\"a\":1}\n",
            "\n",
            "data:x\n",
            "data: y\n",
            "id: 3\n",
            "\n",
        ] {
            events.extend(parser.push(line));
        }
        assert_eq!(
            events,
            [
                SseEvent {
                    name: "member".to_owned(),
                    data: "{\"a\":1}".to_owned()
                },
                SseEvent {
                    name: "message".to_owned(),
                    data: "x\ny".to_owned()
                },
            ]
        );
    }

    #[test]
    fn api_addresses_become_http_urls() {
        for (api, url) in [
            ("127.0.0.1:7700", "http://127.0.0.1:7700"),
            ("localhost", "http://localhost:7700"),
            ("http://node-b:8080/", "http://node-b:8080"),
            ("HTTP://node-b", "http://node-b:7700"),
            ("[::1]:7701", "http://[::1]:7701"),
            ("[::1]", "http://[::1]:7700"),
            ("node-b:7700/baton", "http://node-b:7700/baton"),
        ] {
            assert_eq!(base_url(api).as_deref(), Ok(url), "{api}");
        }
        for bad in [
            "",
            "https://node-b",
            "::1",
            ":7700",
            "node-b:http",
            "a b:1",
            "[::1",
            "u@h:1",
        ] {
            assert!(base_url(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn tokens_must_fit_in_a_header() {
        assert!(matches!(
            ApiClient::new(DEFAULT_API, Some("a\nb".to_owned())),
            Err(CliError::BadToken)
        ));
        assert!(ApiClient::new(DEFAULT_API, Some("s3cret-+/=".to_owned())).is_ok());
    }

    #[test]
    fn terminal_escapes_from_the_network_are_neutralised() {
        assert_eq!(sanitize("a\u{1b}]0;pwned\u{7}b"), "a?]0;pwned?b");
    }

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
            "BATON_TOKEN",
        ] {
            assert!(help.contains(text), "{text} missing from\n{help}");
        }
        let help = Cli::try_parse_from(["baton", "members", "--help"]).unwrap_err();
        assert!(help.render().to_string().contains("--wide"));
        for (command, text) in [
            ("sessions", "--wide"),
            ("session", "baton session s1"),
            ("open", "--param <KEY=VALUE>"),
            ("close", "names the primary"),
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

    /// A port on 127.0.0.1 that nobody listens on (bound, then released).
    fn closed_port() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    }

    #[test]
    fn unreachable_node_message_says_what_to_do() {
        let api = closed_port();
        let err = ApiClient::new(&api, None)
            .unwrap()
            .get_json("/v1/status")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "cannot reach the Baton node API at {api}: connection refused. \
                 Is batond running? Use --api ADDR to point at another node."
            )
        );
        assert_eq!(run(["baton", "--api", &api, "members"]), 1);
    }

    #[test]
    fn non_json_answer_is_reported_as_bad_json() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let api = listener.local_addr().unwrap().to_string();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut byte = [0u8; 1];
            while !request.ends_with(b"\r\n\r\n") && conn.read(&mut byte).unwrap() == 1 {
                request.push(byte[0]);
            }
            conn.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
            )
            .unwrap();
        });
        let err = ApiClient::new(&api, None)
            .unwrap()
            .get_json("/v1/members")
            .unwrap_err();
        server.join().unwrap();
        assert!(matches!(err, CliError::BadJson { .. }), "{err:?}");
        assert!(
            err.to_string()
                .contains("answered /v1/members with bad JSON"),
            "{err}"
        );
    }

    /// A node with two members, whose session driver is the fake one.
    fn shared() -> (Arc<Shared>, crate::api::fake::Reports) {
        let (commands, receiver) = tokio::sync::mpsc::channel(8);
        let shared = Shared::new(
            LocalInfo {
                id: "12D3KooWLocal0000aaaaaaaa".to_owned(),
                name: "alpha".to_owned(),
                overlay: "test".to_owned(),
                profile: "lan".to_owned(),
                capacity: 8,
                version: "0.1.0".to_owned(),
                started: std::time::SystemTime::now(),
            },
            commands,
        );
        for m in two_members() {
            shared.members.insert(m.id.clone(), m);
        }
        let shared = Arc::new(shared);
        let reports = crate::api::fake::spawn(shared.clone(), receiver);
        (shared, reports)
    }

    async fn serve(
        shared: Arc<Shared>,
        token: Option<&str>,
    ) -> (
        SocketAddr,
        oneshot::Sender<()>,
        tokio::task::JoinHandle<io::Result<()>>,
    ) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(crate::api::serve(
            listener,
            shared,
            token.map(str::to_owned),
            async move {
                let _ = stopped.await;
            },
        ));
        (addr, stop, task)
    }

    async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        timeout(LIMIT, tokio::task::spawn_blocking(f))
            .await
            .expect("timed out")
            .unwrap()
    }

    #[tokio::test]
    async fn client_reads_the_api_and_reports_its_errors() {
        let (addr, stop, task) = serve(shared().0, Some("s3cret")).await;
        let api = addr.to_string();

        let (table, err) = blocking(move || {
            let good = ApiClient::new(&api, Some("s3cret".to_owned())).unwrap();
            let (_, members) = good.get_json("/v1/members").unwrap();
            let table = members_table(&members, false).unwrap();
            let err = ApiClient::new(&api, None)
                .unwrap()
                .get_json("/v1/members")
                .unwrap_err();
            (table, err)
        })
        .await;
        assert!(table.contains("charlie  cccccccc  suspect"), "{table}");
        assert!(matches!(err, CliError::Api { status: 401, .. }), "{err:?}");
        assert!(
            err.to_string().contains("Authorization: Bearer <token>"),
            "{err}"
        );

        let _ = stop.send(());
        timeout(LIMIT, task).await.unwrap().unwrap().unwrap();
    }

    fn names() -> Names {
        [
            ("12D3KooWLocal0000aaaaaaaa", "alpha"),
            ("12D3KooWBravo0000bbbbbbbb", "bravo"),
        ]
        .into_iter()
        .map(|(id, name)| (id.to_owned(), name.to_owned()))
        .collect()
    }

    /// Two sessions: `s1` hosted here with a named backup and an unknown one,
    /// `s2` closed, on a node whose name the API did not send.
    fn two_sessions() -> Value {
        let mut s1 = crate::api::fake::view(
            "s1",
            "12D3KooWLocal0000aaaaaaaa",
            "alpha",
            &["12D3KooWBravo0000bbbbbbbb", "12D3KooWDelta00000dddddddd"],
        );
        s1.hosted_here = true;
        s1.epoch = 2;
        let mut s2 = crate::api::fake::view("s2", "12D3KooWBravo0000bbbbbbbb", "", &[]);
        s2.state = "closed".to_owned();
        s2.client = "10.0.0.7:5004".to_owned();
        serde_json::to_value([s1, s2]).unwrap()
    }

    #[test]
    fn sessions_table_shows_names_backups_in_order_and_here() {
        assert_eq!(
            sessions_table(&two_sessions(), &names(), false).unwrap(),
            "\
ID  SERVICE    PRIMARY  EPOCH  BACKUPS         CLIENT          STATE   HERE
s1  rtp-audio  alpha        2  bravo,dddddddd  127.0.0.1:5004  active  *
s2  rtp-audio  bravo        1  -               10.0.0.7:5004   closed
"
        );
        // Without names, short ids.
        let table = sessions_table(&two_sessions(), &Names::new(), false).unwrap();
        assert!(
            table.contains("s2  rtp-audio  bbbbbbbb      1  -"),
            "{table}"
        );
    }

    #[test]
    fn wide_sessions_table_shows_full_peer_ids() {
        let table = sessions_table(&two_sessions(), &names(), true).unwrap();
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
            sessions_table(&json!([]), &Names::new(), false).unwrap(),
            "ID  SERVICE  PRIMARY  EPOCH  BACKUPS  CLIENT  STATE  HERE\n"
        );
        let err = sessions_table(&json!([{"id": "s1"}]), &Names::new(), false).unwrap_err();
        assert!(err.to_string().contains("`primary`"), "{err}");
    }

    #[test]
    fn session_detail_lists_everything_and_the_moves() {
        let mut session = crate::api::fake::view(
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
            crate::state::MoveView {
                epoch: 1,
                primary: "12D3KooWLocal0000aaaaaaaa".to_owned(),
                reason: "open".to_owned(),
                at_ms: session.started_ms,
            },
            crate::state::MoveView {
                epoch: 2,
                primary: "12D3KooWBravo0000bbbbbbbb".to_owned(),
                reason: "takeover: alpha is dead".to_owned(),
                at_ms: session.updated_ms,
            },
        ];
        let json = serde_json::to_value(&session).unwrap();
        assert_eq!(
            session_text(&json, &names(), &TimeZone::UTC).unwrap(),
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

moves seen by this node, oldest first:
EPOCH  PRIMARY  AT                       REASON
    1  alpha    2026-03-01 12:34:56.789  open
    2  bravo    2026-03-01 12:35:01.789  takeover: alpha is dead
"
        );
    }

    #[test]
    fn session_detail_without_backups_params_or_moves() {
        let mut session = crate::api::fake::view("s9", "12D3KooWZulu", "", &[]);
        session.history.clear();
        session.location.clear();
        session.started_ms = 0;
        let text = session_text(
            &serde_json::to_value(&session).unwrap(),
            &Names::new(),
            &TimeZone::UTC,
        )
        .unwrap();
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
        let session = serde_json::to_value(crate::api::fake::view(
            "s1",
            "12D3KooWLocal0000aaaaaaaa",
            "alpha",
            &["12D3KooWBravo0000bbbbbbbb", "12D3KooWDelta00000dddddddd"],
        ))
        .unwrap();
        assert_eq!(
            opened_text(&session, &names()).unwrap(),
            "\
session  s1
primary  alpha (12D3KooWLocal0000aaaaaaaa)
backups  bravo, dddddddd
"
        );
        assert_eq!(
            closed_text(&session).unwrap(),
            "closed session s1 (rtp-audio for 127.0.0.1:5004, epoch 1)\n"
        );
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
    fn bad_session_flags_are_usage_errors() {
        let api = closed_port();
        for args in [
            &["open", "--service", "rtp-audio"][..],
            &[
                "open",
                "--service",
                "rtp-audio",
                "--client",
                "c",
                "--param",
                "codec",
            ],
            &[
                "open",
                "--service",
                "rtp-audio",
                "--client",
                "c",
                "--param",
                "a=1",
                "--param",
                "a=2",
            ],
            &["session"],
            &["close"],
            &[
                "report",
                "s1",
                "--loss",
                "2",
                "--jitter-ms",
                "1",
                "--rtt-ms",
                "1",
            ],
            &[
                "report",
                "s1",
                "--loss",
                "0",
                "--jitter-ms",
                "-1",
                "--rtt-ms",
                "1",
            ],
            &["report", "s1", "--loss", "0", "--jitter-ms", "1"],
            &[
                "report",
                "s1",
                "--loss",
                "0",
                "--jitter-ms",
                "1",
                "--rtt-ms",
                "1",
                "--packets",
                "-1",
            ],
        ] {
            let argv = ["baton", "--api", &api]
                .into_iter()
                .chain(args.iter().copied());
            assert_eq!(run_to(argv, &mut Vec::new()), 2, "{args:?}");
        }
    }

    #[test]
    fn session_ids_stay_one_path_segment() {
        assert_eq!(session_path("s-1_a", ""), "/v1/sessions/s-1_a");
        assert_eq!(
            session_path("../status", "/report"),
            "/v1/sessions/%2E%2E%2Fstatus/report"
        );
        assert_eq!(session_path("a b?c#", ""), "/v1/sessions/a%20b%3Fc%23");
    }

    /// Runs `baton --api <api> <args>` on a blocking thread; returns the exit
    /// code and the output.
    async fn baton(api: &str, args: &[&str]) -> (i32, String) {
        let argv: Vec<String> = ["baton", "--api", api]
            .iter()
            .chain(args)
            .map(|a| (*a).to_owned())
            .collect();
        blocking(move || {
            let mut out = Vec::new();
            let code = run_to(argv, &mut out);
            (code, String::from_utf8(out).unwrap())
        })
        .await
    }

    #[tokio::test]
    async fn sessions_are_opened_listed_reported_and_closed_through_the_api() {
        let (shared, reports) = shared();
        // A session whose primary is another node.
        let mut theirs =
            crate::api::fake::view("s-bravo", "12D3KooWBravo0000bbbbbbbb", "bravo", &[]);
        theirs.epoch = 4;
        shared.sessions.insert(theirs.id.clone(), theirs);
        let (addr, stop, task) = serve(shared.clone(), None).await;
        let api = addr.to_string();

        let (code, out) = baton(
            &api,
            &[
                "open",
                "--service",
                "rtp-audio",
                "--client",
                "127.0.0.1:5004",
                "--param",
                "codec=pcmu",
            ],
        )
        .await;
        assert_eq!(code, 0);
        assert_eq!(
            out,
            "\
session  s1
primary  alpha (12D3KooWLocal0000aaaaaaaa)
backups  bravo
"
        );
        assert_eq!(
            shared
                .sessions
                .get("s1")
                .unwrap()
                .params
                .get("codec")
                .map(String::as_str),
            Some("pcmu")
        );
        let (code, out) = baton(
            &api,
            &[
                "open",
                "--json",
                "--service",
                "rtp-audio",
                "--client",
                "127.0.0.1:5006",
            ],
        )
        .await;
        assert_eq!(code, 0);
        let opened: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(opened["id"], "s2");
        assert!(out.ends_with("}\n") && out.lines().count() == 1, "{out:?}");

        let (code, out) = baton(&api, &["sessions"]).await;
        assert_eq!(code, 0);
        assert_eq!(
            out,
            "\
ID       SERVICE    PRIMARY  EPOCH  BACKUPS  CLIENT          STATE   HERE
s-bravo  rtp-audio  bravo        4  -        127.0.0.1:5004  active
s1       rtp-audio  alpha        1  bravo    127.0.0.1:5004  active  *
s2       rtp-audio  alpha        1  bravo    127.0.0.1:5006  active  *
"
        );
        let (code, out) = baton(&api, &["sessions", "--json"]).await;
        assert_eq!(code, 0);
        let listed: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            listed,
            serde_json::to_value(shared.sessions_sorted()).unwrap()
        );

        let (code, out) = baton(&api, &["session", "s1"]).await;
        assert_eq!(code, 0);
        assert!(out.starts_with("session       s1\n"), "{out}");
        assert!(
            out.contains("backups       1. bravo (12D3KooWBravo0000bbbbbbbb)\n"),
            "{out}"
        );
        assert!(out.contains("params        codec=pcmu\n"), "{out}");
        assert_eq!(baton(&api, &["session", "nope"]).await.0, 1);

        let (code, out) = baton(
            &api,
            &[
                "report",
                "s1",
                "--loss",
                "5%",
                "--jitter-ms",
                "20",
                "--rtt-ms",
                "40",
                "--packets",
                "500",
            ],
        )
        .await;
        assert_eq!(code, 0);
        assert_eq!(
            out,
            "reported on session s1: loss 5.0%, jitter 20 ms, RTT 40 ms, 500 packets\n"
        );
        let (code, out) = baton(
            &api,
            &[
                "report",
                "s1",
                "--json",
                "--loss",
                "0",
                "--jitter-ms",
                "1",
                "--rtt-ms",
                "2",
            ],
        )
        .await;
        assert_eq!((code, out.as_str()), (0, ""));
        assert_eq!(
            *reports.lock().unwrap(),
            [
                (
                    "s1".to_owned(),
                    crate::state::ReportBody {
                        loss: 0.05,
                        jitter_ms: 20.0,
                        rtt_ms: 40.0,
                        packets: 500
                    }
                ),
                (
                    "s1".to_owned(),
                    crate::state::ReportBody {
                        loss: 0.0,
                        jitter_ms: 1.0,
                        rtt_ms: 2.0,
                        packets: 0
                    }
                ),
            ]
        );

        let (code, out) = baton(&api, &["close", "s1"]).await;
        assert_eq!(code, 0);
        assert_eq!(
            out,
            "closed session s1 (rtp-audio for 127.0.0.1:5004, epoch 1)\n"
        );
        assert_eq!(shared.sessions.get("s1").unwrap().state, "closed");
        // Not the primary: the API's 409, exit 1, nothing on stdout.
        assert_eq!(baton(&api, &["close", "s-bravo"]).await, (1, String::new()));
        let err = blocking({
            let api = api.clone();
            move || {
                ApiClient::new(&api, None)
                    .unwrap()
                    .send(Verb::Delete, "/v1/sessions/s-bravo")
            }
        })
        .await
        .unwrap_err();
        assert!(matches!(err, CliError::Api { status: 409, .. }), "{err:?}");
        assert!(
            err.to_string()
                .contains("bravo (12D3KooWBravo0000bbbbbbbb)"),
            "{err}"
        );

        let _ = stop.send(());
        timeout(LIMIT, task).await.unwrap().unwrap().unwrap();
    }

    /// Output that the test can read while `follow` writes it.
    #[derive(Clone, Default)]
    struct SharedOut(Arc<Mutex<Vec<u8>>>);

    impl Write for SharedOut {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl SharedOut {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
        }
    }

    #[tokio::test]
    async fn watch_prints_events_until_the_stream_ends() {
        let (shared, _) = shared();
        let (addr, stop, task) = serve(shared.clone(), None).await;
        let out = SharedOut::default();
        let follower = {
            let mut out = out.clone();
            let api = addr.to_string();
            tokio::task::spawn_blocking(move || {
                let client = ApiClient::new(&api, None).unwrap();
                follow(&client, false, false, &TimeZone::UTC, &mut out)
            })
        };
        timeout(LIMIT, async {
            while shared.events.receiver_count() == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("watch never subscribed");

        let (at, at_ms) = crate::state::wall_clock();
        shared.publish(ApiEvent {
            kind: "member".to_owned(),
            at,
            at_ms,
            id: "12D3KooWCharlie000cccccccc".to_owned(),
            name: "charlie".to_owned(),
            state: "dead".to_owned(),
            previous: Some("suspect".to_owned()),
            incarnation: 12,
            reason: None,
        });
        timeout(LIMIT, async {
            while !out.text().contains('\n') {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("no line printed");
        let text = out.text();
        assert!(
            text.contains("member    charlie           cccccccc  suspect -> dead    inc 12"),
            "{text}"
        );

        // The node shuts down: the stream ends and watch returns cleanly.
        let _ = stop.send(());
        timeout(LIMIT, task).await.unwrap().unwrap().unwrap();
        let followed = timeout(LIMIT, follower).await.unwrap().unwrap();
        assert!(followed.is_ok(), "{followed:?}");
    }
}
