//! Configuration of `batond`: a TOML file (`--config`) and command-line flags;
//! a flag wins over the file, the file over the defaults. Every error names
//! the field and what it expects.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use baton_protocol::meta::Tags;
use baton_protocol::swim;
use clap::{Parser, ValueEnum};
use libp2p::{Multiaddr, PeerId};
use serde::Deserialize;

/// Default address of the HTTP API.
pub const DEFAULT_API: &str = "127.0.0.1:7700";

/// Default libp2p port (QUIC on UDP, TCP beside it).
pub const DEFAULT_PORT: u16 = 7701;

/// `batond`: the Baton node of one service cluster.
#[derive(Debug, Clone, Default, Parser)]
#[command(
    name = "batond",
    version,
    about = "The Baton node: joins the overlay of peer clusters, watches their liveness \
             (SWIM + Lifeguard over libp2p) and serves an HTTP API for the `baton` CLI.",
    after_help = "Every option can also be set in the TOML file given with --config \
                  (same names, with underscores: data_dir = \"/var/lib/baton\"); flags win. \
                  Durations use humantime form: 200ms, 1s, 5min.\n\n\
                  Examples:\n  \
                  batond --name berkeley --bootstrap /ip4/198.18.0.1/udp/7701/quic-v1\n  \
                  batond --name berkeley --tag region=us-west --tag tier=media\n  \
                  batond --config /etc/baton/batond.toml\n  \
                  batond --name a --listen /ip4/127.0.0.1/udp/0/quic-v1 --mdns=false --api 127.0.0.1:7710"
)]
pub struct Flags {
    /// TOML configuration file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Name of this node (its cluster), shown to operators. Default: the host name.
    #[arg(long)]
    pub name: Option<String>,
    /// Directory for the node's identity key (kept across restarts).
    /// Default: $HOME/.local/share/baton.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// libp2p address to listen on (repeatable).
    /// Default: /ip4/0.0.0.0/udp/7701/quic-v1 and /ip4/0.0.0.0/tcp/7701.
    #[arg(long, value_name = "MULTIADDR")]
    pub listen: Vec<String>,
    /// UDP address of the datagram socket that SWIM's probes use.
    /// Default: the IP of the first --listen address, the port after its
    /// port (7702 beside 7701; any free port when that one is 0).
    #[arg(long, value_name = "IP:PORT")]
    pub swim_listen: Option<String>,
    /// Address of a node to join through, /ip4/IP/udp/PORT/quic-v1 or
    /// /ip4/IP/tcp/PORT, with or without /p2p/<peer id> (repeatable).
    #[arg(long, value_name = "MULTIADDR")]
    pub bootstrap: Vec<String>,
    /// Discover peers on the LAN with mDNS. BOOL is any of true/false,
    /// on/off, yes/no, 1/0; `--mdns` alone is true. Wins over the file's
    /// `mdns`, in both directions. Default: true.
    #[arg(
        long,
        value_name = "BOOL",
        num_args = 0..=1,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new(),
        hide_possible_values = true,
        overrides_with = "no_mdns"
    )]
    pub mdns: Option<bool>,
    /// The same as --mdns=false (kept for existing scripts). Of --mdns and
    /// --no-mdns, the last given wins.
    #[arg(long, overrides_with = "mdns")]
    pub no_mdns: bool,
    /// Address of the HTTP API: IP:PORT, a port (on 127.0.0.1), or
    /// localhost:PORT. Beyond loopback, requests need the api_token.
    #[arg(long, value_name = "ADDR")]
    pub api: Option<String>,
    /// Timing profile: lan (RTTs below ~5 ms) or wan (RTTs up to ~300 ms).
    #[arg(long, value_enum)]
    pub profile: Option<Profile>,
    /// Sessions this node will host.
    #[arg(long)]
    pub capacity: Option<u32>,
    /// Overlay name: only nodes of the same overlay are admitted. Default: baton.
    #[arg(long)]
    pub overlay: Option<String>,
    /// File holding the overlay's pre-shared network key (any bytes; a
    /// trailing newline is ignored). Peers must prove they hold the same key.
    #[arg(long, value_name = "FILE")]
    pub network_key_file: Option<PathBuf>,
    /// Peer id allowed to join (repeatable). Without any, every peer of the
    /// overlay (and key) is admitted.
    #[arg(long = "allow", value_name = "PEER_ID")]
    pub allow: Vec<String>,
    /// Most members this node admits.
    #[arg(long)]
    pub max_members: Option<usize>,
    /// Bearer token every API request must carry (required when the API
    /// listens beyond loopback; enforced on loopback too when set).
    #[arg(long, env = "BATON_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// A second token that opens GET requests only (views, events,
    /// /metrics): for Prometheus and dashboards. Needs --api-token.
    #[arg(long, env = "BATON_API_READ_TOKEN", hide_env_values = true)]
    pub api_read_token: Option<String>,
    /// A DNS name clients may use in the Host header besides IP addresses
    /// and localhost (repeatable); requests naming another host get 403.
    #[arg(long = "api-host", value_name = "NAME")]
    pub api_hosts: Vec<String>,
    /// A tag announced to the overlay, such as region=eu (repeatable; adds
    /// to or overrides the file's `tags`). Shown and filtered by `baton
    /// members --tag`; the `region` tag places backups in other regions.
    /// At most 8 tags; keys: a letter then letters, digits, _ - . (up to
    /// 32); values: letters, digits, _ - . : / @ + (1 to 64); 256 bytes
    /// in all.
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    pub tags: Vec<String>,
    /// Log format.
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Time between SWIM probe rounds (overrides the profile).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub probe_interval: Option<Duration>,
    // ---- reloading and checking (see `Reload` below) ----
    /// Log filter, such as `info` or `info,baton_node=debug` (RUST_LOG
    /// syntax). Wins over RUST_LOG. In the file, SIGHUP changes it. An
    /// invalid RUST_LOG is ignored with a warning.
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Check the configuration (the file and these flags) as a start would,
    /// print a one-line summary (addresses, whether mDNS is on, the tags...)
    /// and exit: 0 when it is valid, 2 with the
    /// error otherwise. Binds nothing, locks nothing, creates no file.
    #[arg(long)]
    pub check_config: bool,
}

/// Timing profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// RTTs below ~5 ms.
    #[default]
    Lan,
    /// RTTs of 20-300 ms.
    Wan,
}

/// Log format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Lines for people.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// The TOML file: the same options as the flags.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    name: Option<String>,
    data_dir: Option<PathBuf>,
    #[serde(default)]
    listen: Vec<String>,
    #[serde(default)]
    bootstrap: Vec<String>,
    swim_listen: Option<String>,
    mdns: Option<bool>,
    api: Option<String>,
    profile: Option<Profile>,
    capacity: Option<u32>,
    overlay: Option<String>,
    network_key_file: Option<PathBuf>,
    #[serde(default)]
    allow: Vec<String>,
    max_members: Option<usize>,
    api_token: Option<String>,
    api_read_token: Option<String>,
    #[serde(default)]
    api_hosts: Vec<String>,
    log_format: Option<LogFormat>,
    #[serde(default, with = "humantime_serde")]
    probe_interval: Option<Duration>,
    /// `tags = { region = "eu" }`.
    #[serde(default)]
    tags: Tags,
    #[serde(default)]
    services: crate::service::Config,
    #[serde(default)]
    sessions: SessionsFile,
    // ---- reloadable by SIGHUP (see `Reload` below) ----
    log_level: Option<String>,
    #[serde(default)]
    hooks: crate::hooks::File,
}

/// `[sessions]` in the file: placement and transfer thresholds.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionsFile {
    backups: Option<usize>,
    max_loss: Option<f64>,
    #[serde(default, with = "humantime_serde")]
    max_jitter: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    max_rtt: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    poor_for: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    min_dwell: Option<Duration>,
    min_samples: Option<u32>,
    /// `cold` or `warm`: how sessions' first backups stand by.
    standby: Option<String>,
    /// Whether clients must show they want their stream (RTCP or reports).
    consent: Option<bool>,
    #[serde(default, with = "humantime_serde")]
    consent_first: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    consent_interval: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    consent_grace: Option<Duration>,
    /// Client networks (CIDR) that need no consent.
    #[serde(default)]
    consent_exempt: Vec<String>,
    /// Sessions older than this are closed.
    #[serde(default, with = "humantime_serde")]
    max_lifetime: Option<Duration>,
    /// `spread` or `nearest`: whether backups span regions.
    placement: Option<String>,
    /// The tag that names a node's region.
    region_tag: Option<String>,
    /// Only nodes with these tags host sessions.
    #[serde(default)]
    require_tags: Tags,
}

/// The resolved configuration of a node.
#[derive(Debug, Clone)]
pub struct Config {
    /// Name of the node.
    pub name: String,
    /// Where the identity key lives.
    pub data_dir: PathBuf,
    /// libp2p listen addresses.
    pub listen: Vec<Multiaddr>,
    /// Bootstrap addresses.
    pub bootstrap: Vec<Multiaddr>,
    /// The datagram socket's address.
    pub swim_listen: SocketAddr,
    /// Whether mDNS discovery runs.
    pub mdns: bool,
    /// HTTP API address.
    pub api: SocketAddr,
    /// Timing profile.
    pub profile: Profile,
    /// Sessions this node will host.
    pub capacity: u32,
    /// Overlay name.
    pub overlay: String,
    /// Pre-shared network key.
    pub network_key: Option<Vec<u8>>,
    /// The file it was read from.
    pub network_key_file: Option<PathBuf>,
    /// Peers allowed, when restricted.
    pub allowlist: Option<HashSet<PeerId>>,
    /// Most members admitted.
    pub max_members: usize,
    /// API bearer token (required beyond loopback, enforced everywhere).
    pub api_token: Option<String>,
    /// API token for GET requests only.
    pub api_read_token: Option<String>,
    /// Host names the API answers to besides IP addresses and localhost.
    pub api_hosts: Vec<String>,
    /// Log format.
    pub log_format: LogFormat,
    /// SWIM parameters.
    pub swim: swim::Config,
    /// Session services (`[services]` in the file: exec templates, media).
    pub services: crate::service::Config,
    /// Session engine parameters (`[sessions]` in the file).
    pub sessions: baton_protocol::sessions::Config,
    /// Which clients sessions may stream to (`[services]
    /// allowed_clients`, `max_sessions_per_client`).
    pub clients: baton_protocol::node::ClientPolicy,
    /// The tags announced to the overlay (`tags`, `--tag`), within the
    /// caps of [`baton_protocol::meta::check_tags`].
    pub tags: Tags,
    /// The log filter (`log_level`), when set: wins over RUST_LOG.
    pub log_level: Option<String>,
    /// Commands run on events (`[hooks]`).
    pub hooks: crate::hooks::Config,
}

/// A configuration error, naming the field at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config file is not valid TOML of the expected shape.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and field.
        message: String,
    },
    /// The network key file could not be read.
    #[error(
        "cannot read network key file {path}: {source} (create one with \
         `head -c 32 /dev/urandom > {path}` and give every node of the overlay a copy)"
    )]
    NetworkKey {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A listen or bootstrap address is not one this node can use.
    #[error(
        "invalid {field} address {value:?}: {why}; write it as /ip4/198.18.0.1/udp/7701/quic-v1 \
         (QUIC) or /ip4/198.18.0.1/tcp/7701 (TCP){p2p}"
    )]
    Address {
        /// `listen` or `bootstrap`.
        field: &'static str,
        /// The address as given.
        value: String,
        /// What is wrong with it.
        why: String,
        /// For bootstrap addresses, that a peer id may follow.
        p2p: &'static str,
    },
    /// The API address is not one to listen on.
    #[error("invalid api {value:?}: {why}")]
    Api {
        /// The address as given.
        value: String,
        /// What is wrong, and the forms that work.
        why: String,
    },
    /// A service is configured wrong (an `exec` template or its rules).
    #[error("[services] {0}")]
    Services(#[from] crate::service::Error),
    /// The tags are malformed or beyond the caps.
    #[error("invalid tags: {0}")]
    Tags(String),
    /// `[hooks]` is configured wrong.
    #[error("[hooks] {message}")]
    Hooks {
        /// What is wrong, naming the field.
        message: String,
    },
    /// A value is not what the field expects.
    #[error("invalid {field} {value:?}: expected {expected}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// The offending value.
        value: String,
        /// What would be accepted.
        expected: String,
    },
}

fn invalid(
    field: &'static str,
    value: impl Into<String>,
    expected: impl Into<String>,
) -> ConfigError {
    ConfigError::Invalid {
        field,
        value: value.into(),
        expected: expected.into(),
    }
}

/// Parses a humantime duration for clap.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (use a form such as 200ms, 1s, 5min)"))
}

impl Config {
    /// Resolves flags, the file they name, and defaults.
    pub fn load(flags: Flags) -> Result<Config, ConfigError> {
        let file = match &flags.config {
            Some(path) => read_file(path)?,
            None => File::default(),
        };
        Self::resolve(flags, file)
    }

    fn resolve(flags: Flags, file: File) -> Result<Config, ConfigError> {
        let name = flags
            .name
            .or(file.name)
            .unwrap_or_else(default_name)
            .trim()
            .to_string();
        if name.is_empty() || name.len() > 64 {
            return Err(invalid("name", name, "1 to 64 characters"));
        }
        let data_dir = flags
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(default_data_dir);
        let listen_raw = if flags.listen.is_empty() {
            file.listen
        } else {
            flags.listen
        };
        let listen = if listen_raw.is_empty() {
            vec![
                format!("/ip4/0.0.0.0/udp/{DEFAULT_PORT}/quic-v1")
                    .parse()
                    .expect("valid"),
                format!("/ip4/0.0.0.0/tcp/{DEFAULT_PORT}")
                    .parse()
                    .expect("valid"),
            ]
        } else {
            listen_raw
                .iter()
                .map(|a| parse_address(Use::Listen, a))
                .collect::<Result<_, _>>()?
        };
        let bootstrap_raw = if flags.bootstrap.is_empty() {
            file.bootstrap
        } else {
            flags.bootstrap
        };
        let bootstrap = bootstrap_raw
            .iter()
            .map(|a| parse_address(Use::Bootstrap, a))
            .collect::<Result<_, _>>()?;
        let swim_listen = match flags.swim_listen.or(file.swim_listen) {
            Some(raw) => raw.parse().map_err(|_| {
                invalid(
                    "swim_listen",
                    &raw,
                    "an IP address and UDP port, such as 0.0.0.0:7702",
                )
            })?,
            None => beside(&listen[0]),
        };
        // `--no-mdns` is `--mdns=false`; either wins over the file.
        let mdns_flag = if flags.no_mdns {
            Some(false)
        } else {
            flags.mdns
        };
        let mdns = mdns_flag.or(file.mdns).unwrap_or(true);
        let api_raw = flags
            .api
            .or(file.api)
            .unwrap_or_else(|| DEFAULT_API.to_string());
        let api = parse_api(&api_raw)?;
        let profile = flags.profile.or(file.profile).unwrap_or_default();
        let capacity = flags.capacity.or(file.capacity).unwrap_or(100);
        let overlay = flags
            .overlay
            .or(file.overlay)
            .unwrap_or_else(|| "baton".to_string());
        if overlay.is_empty() || overlay.len() > baton_protocol::peering::MAX_OVERLAY_LEN {
            return Err(invalid("overlay", overlay, "1 to 128 bytes"));
        }
        let network_key_file = flags.network_key_file.or(file.network_key_file);
        let network_key = match &network_key_file {
            Some(path) => Some(read_key(path)?),
            None => None,
        };
        let allow_raw = if flags.allow.is_empty() {
            file.allow
        } else {
            flags.allow
        };
        let allowlist = if allow_raw.is_empty() {
            None
        } else {
            Some(
                allow_raw
                    .iter()
                    .map(|p| {
                        parse_peer_id(p).ok_or_else(|| {
                            invalid("allow", p, "a base58 peer id such as 12D3KooW...")
                        })
                    })
                    .collect::<Result<_, _>>()?,
            )
        };
        let max_members = flags.max_members.or(file.max_members).unwrap_or(1024);
        if max_members == 0 {
            return Err(invalid("max_members", "0", "at least 1"));
        }
        let api_token = flags.api_token.or(file.api_token).filter(|t| !t.is_empty());
        if !api.ip().is_loopback() && api_token.is_none() {
            return Err(invalid(
                "api",
                api_raw,
                "a loopback address, or an api_token (--api-token or BATON_API_TOKEN) \
                 since the API would listen beyond this machine",
            ));
        }
        let api_read_token = flags
            .api_read_token
            .or(file.api_read_token)
            .filter(|t| !t.is_empty());
        if api_read_token.is_some() && api_token.is_none() {
            return Err(invalid(
                "api_read_token",
                "(hidden)",
                "an api_token beside it: without one, reads need no token at all",
            ));
        }
        if api_read_token.is_some() && api_read_token == api_token {
            return Err(invalid(
                "api_read_token",
                "(hidden)",
                "a token different from api_token",
            ));
        }
        let mut api_hosts = flags.api_hosts;
        api_hosts.extend(file.api_hosts);
        for host in &api_hosts {
            let ok = !host.is_empty()
                && host.len() <= 253
                && host.split('.').all(|l| {
                    !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                });
            if !ok {
                return Err(invalid(
                    "api_hosts",
                    host,
                    "a DNS name such as baton-1.example.net (no port, no scheme)",
                ));
            }
        }
        let mut swim = match profile {
            Profile::Lan => swim::Config::lan(),
            Profile::Wan => swim::Config::wan(),
        };
        if let Some(interval) = flags.probe_interval.or(file.probe_interval) {
            if interval < Duration::from_millis(10) || interval > Duration::from_secs(60) {
                return Err(invalid(
                    "probe_interval",
                    humantime::format_duration(interval).to_string(),
                    "between 10ms and 60s",
                ));
            }
            swim.probe_interval = interval;
        }
        let tags = resolve_tags(file.tags, &flags.tags)?;
        Ok(Config {
            tags,
            name,
            data_dir,
            listen,
            bootstrap,
            swim_listen,
            mdns,
            api,
            profile,
            capacity,
            overlay,
            network_key,
            network_key_file,
            allowlist,
            max_members,
            api_token,
            api_read_token,
            api_hosts,
            log_format: flags.log_format.or(file.log_format).unwrap_or_default(),
            swim,
            log_level: log_level_config(flags.log_level.or(file.log_level))?,
            hooks: file
                .hooks
                .check()
                .map_err(|message| ConfigError::Hooks { message })?,
            clients: clients_config(&file.services)?,
            services: services_config(file.services)?,
            sessions: sessions_config(file.sessions)?,
        })
    }
}

/// The file's tags, then the flags' (`KEY=VALUE`, each key once), checked
/// against the caps.
fn resolve_tags(mut tags: Tags, flags: &[String]) -> Result<Tags, ConfigError> {
    let mut given = std::collections::BTreeSet::new();
    for text in flags {
        let (key, value) = baton_protocol::meta::parse_tag(text)
            .map_err(|why| ConfigError::Tags(format!("--tag {text:?}: {why}")))?;
        if !given.insert(key.clone()) {
            return Err(ConfigError::Tags(format!(
                "--tag {key} is given twice: give each key once"
            )));
        }
        tags.insert(key, value);
    }
    baton_protocol::meta::check_tags(&tags).map_err(ConfigError::Tags)?;
    Ok(tags)
}

/// `log_level`: a filter in RUST_LOG syntax, checked now.
fn log_level_config(raw: Option<String>) -> Result<Option<String>, ConfigError> {
    let Some(raw) = raw.map(|r| r.trim().to_string()).filter(|r| !r.is_empty()) else {
        return Ok(None);
    };
    tracing_subscriber::EnvFilter::builder()
        .parse(&raw)
        .map_err(|e| {
            invalid(
                "log_level",
                &raw,
                format!(
                    "a filter such as info, debug or info,baton_node=debug (RUST_LOG syntax): {e}"
                ),
            )
        })?;
    Ok(Some(raw))
}

fn sessions_config(file: SessionsFile) -> Result<baton_protocol::sessions::Config, ConfigError> {
    let mut config = baton_protocol::sessions::Config::default();
    let policy = &mut config.policy;
    if let Some(b) = file.backups {
        if !(1..=8).contains(&b) {
            return Err(invalid("sessions.backups", b.to_string(), "1 to 8"));
        }
        policy.backups = b;
    }
    if let Some(loss) = file.max_loss {
        if !(0.0..=1.0).contains(&loss) {
            return Err(invalid(
                "sessions.max_loss",
                loss.to_string(),
                "a fraction between 0 and 1",
            ));
        }
        policy.max_loss = loss;
    }
    policy.max_jitter = file.max_jitter.unwrap_or(policy.max_jitter);
    policy.max_rtt = file.max_rtt.unwrap_or(policy.max_rtt);
    policy.poor_for = file.poor_for.unwrap_or(policy.poor_for);
    policy.min_dwell = file.min_dwell.unwrap_or(policy.min_dwell);
    policy.min_samples = file.min_samples.unwrap_or(policy.min_samples);
    if let Some(standby) = &file.standby {
        config.standby = baton_protocol::sessions::Standby::parse(standby)
            .ok_or_else(|| invalid("sessions.standby", standby, "cold or warm"))?;
    }
    let consent = &mut config.consent;
    consent.required = file.consent.unwrap_or(consent.required);
    consent.first = file.consent_first.unwrap_or(consent.first);
    consent.interval = file.consent_interval.unwrap_or(consent.interval);
    consent.grace = file.consent_grace.unwrap_or(consent.grace);
    for (field, d) in [
        ("sessions.consent_first", consent.first),
        ("sessions.consent_interval", consent.interval),
        ("sessions.consent_grace", consent.grace),
    ] {
        if d < Duration::from_secs(1) || d > Duration::from_secs(24 * 3600) {
            return Err(invalid(
                field,
                humantime::format_duration(d).to_string(),
                "between 1s and 24h",
            ));
        }
    }
    config.max_lifetime = file.max_lifetime;
    let policy = &mut config.policy;
    if let Some(placement) = &file.placement {
        policy.placement = baton_protocol::policy::Placement::parse(placement)
            .ok_or_else(|| invalid("sessions.placement", placement, "spread or nearest"))?;
    }
    if let Some(key) = file.region_tag {
        baton_protocol::meta::check_tag_key(&key)
            .map_err(|why| invalid("sessions.region_tag", &key, why))?;
        policy.region_tag = key;
    }
    baton_protocol::meta::check_tags(&file.require_tags).map_err(|why| {
        invalid(
            "sessions.require_tags",
            format!("{:?}", file.require_tags),
            why,
        )
    })?;
    policy.require_tags = file.require_tags;
    let consent = &mut config.consent;
    consent.exempt = file
        .consent_exempt
        .iter()
        .map(|c| {
            parse_cidr(c).ok_or_else(|| {
                invalid(
                    "sessions.consent_exempt",
                    c,
                    "CIDR networks such as 198.18.2.0/24 or 2001:db8::/32",
                )
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(config)
}

/// The `[services]` table, its `exec` templates and their rules checked
/// now, so that a mistake is a configuration error.
fn services_config(
    services: crate::service::Config,
) -> Result<crate::service::Config, ConfigError> {
    crate::service::exec::Exec::new(&services.exec, services.media_dir.clone())?;
    Ok(services)
}

fn clients_config(
    services: &crate::service::Config,
) -> Result<baton_protocol::node::ClientPolicy, ConfigError> {
    let allowed = services
        .allowed_clients
        .iter()
        .map(|c| {
            parse_cidr(c).ok_or_else(|| {
                invalid(
                    "services.allowed_clients",
                    c,
                    "CIDR networks such as 198.18.0.0/15 or 2001:db8::/32",
                )
            })
        })
        .collect::<Result<_, _>>()?;
    let mut policy = baton_protocol::node::ClientPolicy {
        allowed,
        ..Default::default()
    };
    if services.max_sessions_per_caller == Some(0) {
        return Err(invalid(
            "services.max_sessions_per_caller",
            "0",
            "at least 1 (or leave it out: no cap)",
        ));
    }
    if let Some(max) = services.max_sessions_per_client {
        if max == 0 {
            return Err(invalid(
                "services.max_sessions_per_client",
                "0",
                "at least 1",
            ));
        }
        policy.max_per_ip = max;
    }
    Ok(policy)
}

/// A CIDR network `ip/prefix` (a bare ip is a /32 or /128).
pub fn parse_cidr(text: &str) -> Option<(std::net::IpAddr, u8)> {
    let (ip, prefix) = match text.split_once('/') {
        Some((ip, prefix)) => (ip, Some(prefix)),
        None => (text, None),
    };
    let ip: std::net::IpAddr = ip.trim().parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        Some(p) => p.trim().parse::<u8>().ok().filter(|p| *p <= max)?,
        None => max,
    };
    Some((ip, prefix))
}

fn read_file(path: &Path) -> Result<File, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

fn read_key(path: &Path) -> Result<Vec<u8>, ConfigError> {
    let max = crate::data_dir::MAX_KEY_FILE;
    let wrong = |what: String| invalid("network_key_file", path.display().to_string(), what);
    let mut key = crate::data_dir::read_key_file(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::InvalidData => wrong(format!(
            "a file holding a key of 16 to {max} bytes, not more: is it the right file?"
        )),
        _ => ConfigError::NetworkKey {
            path: path.to_path_buf(),
            source,
        },
    })?;
    while key.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        key.pop();
    }
    if key.len() < 16 {
        return Err(wrong(format!(
            "a file holding a key of 16 to {max} bytes, such as one made with \
             `head -c 32 /dev/urandom > {}`",
            path.display()
        )));
    }
    Ok(key)
}

/// A peer id as a Baton node has one: base58 of the identity multihash of
/// an ed25519 public key. (`PeerId`'s own parser also takes shorter
/// strings that decode to no key, so that a mistyped id would pass.)
pub fn parse_peer_id(text: &str) -> Option<PeerId> {
    let id = text.parse::<PeerId>().ok()?;
    let hash: &libp2p::multihash::Multihash<64> = id.as_ref();
    let key = libp2p::identity::PublicKey::try_decode_protobuf(hash.digest()).ok()?;
    (hash.code() == 0 && key.to_peer_id() == id).then_some(id)
}

/// What an address is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Use {
    /// `--listen`: port 0 picks one; no peer id.
    Listen,
    /// `--bootstrap`: a port to dial, perhaps a peer id.
    Bootstrap,
}

/// Parses a listen or bootstrap address, and checks that it names a
/// transport this node speaks: `/ip4|ip6/IP` then `/udp/PORT/quic-v1` or
/// `/tcp/PORT`, then for bootstrap addresses an optional `/p2p/ID`.
fn parse_address(what: Use, raw: &str) -> Result<Multiaddr, ConfigError> {
    use libp2p::multiaddr::Protocol;
    let (field, p2p) = match what {
        Use::Listen => ("listen", ""),
        Use::Bootstrap => ("bootstrap", ", optionally followed by /p2p/<peer id>"),
    };
    let bad = |why: String| ConfigError::Address {
        field,
        value: raw.to_string(),
        why,
        p2p,
    };
    let addr: Multiaddr = match raw.trim().parse() {
        Ok(addr) => addr,
        Err(_) => {
            // The parser's own message does not say which part failed; a
            // peer id is the part most often mistyped.
            let mut parts = raw.split('/').skip_while(|p| *p != "p2p").skip(1);
            return Err(bad(match parts.next() {
                Some(id) if parse_peer_id(id).is_none() => malformed_peer_id(id),
                _ => "not a multiaddr".to_string(),
            }));
        }
    };
    if let Some(Protocol::P2p(id)) = addr.iter().last()
        && parse_peer_id(&id.to_base58()).is_none()
    {
        return Err(bad(malformed_peer_id(&id.to_base58())));
    }
    let mut parts = addr.iter();
    match parts.next() {
        Some(Protocol::Ip4(_) | Protocol::Ip6(_)) => {}
        Some(Protocol::Dns(_) | Protocol::Dns4(_) | Protocol::Dns6(_) | Protocol::Dnsaddr(_)) => {
            return Err(bad(
                "host names are not looked up: give the node's IP address".to_string(),
            ));
        }
        _ => return Err(bad("it must begin with /ip4/IP or /ip6/IP".to_string())),
    }
    let port = match (parts.next(), parts.next()) {
        (Some(Protocol::Tcp(port)), next) => {
            let mut rest = next.into_iter().chain(parts);
            check_tail(what, rest.next(), rest.next()).map_err(bad)?;
            port
        }
        (Some(Protocol::Udp(port)), Some(Protocol::QuicV1)) => {
            check_tail(what, parts.next(), parts.next()).map_err(bad)?;
            port
        }
        (Some(Protocol::Udp(port)), None) => {
            return Err(bad(format!(
                "it ends at /udp/{port}: QUIC needs /quic-v1 after the port ({})",
                with_quic_v1(&addr)
            )));
        }
        (Some(Protocol::Udp(_)), Some(Protocol::Quic)) => {
            return Err(bad(format!(
                "/quic is the old QUIC draft, which this node does not speak ({})",
                with_quic_v1(&addr)
            )));
        }
        (Some(Protocol::Udp(port)), Some(other)) => {
            return Err(bad(format!(
                "/udp/{port} is followed by /{}, not /quic-v1",
                other.tag()
            )));
        }
        (None, _) => return Err(bad("it has no port".to_string())),
        (Some(other), _) => {
            return Err(bad(format!(
                "/{} is not a transport this node speaks",
                other.tag()
            )));
        }
    };
    if port == 0 && what == Use::Bootstrap {
        return Err(bad("port 0 cannot be dialled".to_string()));
    }
    Ok(addr)
}

/// `addr` with `/quic-v1` after its UDP port, in place of `/quic` if any.
fn with_quic_v1(addr: &Multiaddr) -> Multiaddr {
    use libp2p::multiaddr::Protocol;
    let mut out = Multiaddr::empty();
    for part in addr.iter() {
        match part {
            Protocol::Quic | Protocol::QuicV1 => {}
            Protocol::Udp(port) => {
                out.push(Protocol::Udp(port));
                out.push(Protocol::QuicV1);
            }
            other => out.push(other),
        }
    }
    out
}

fn malformed_peer_id(id: &str) -> String {
    format!(
        "malformed peer id {id:?} after /p2p/ (peer ids are base58, such as 12D3KooW...: \
         `baton status` on that node shows its own)"
    )
}

/// Checks what follows the transport: nothing, or for bootstrap a peer id.
fn check_tail(
    what: Use,
    next: Option<libp2p::multiaddr::Protocol<'_>>,
    after: Option<libp2p::multiaddr::Protocol<'_>>,
) -> Result<(), String> {
    use libp2p::multiaddr::Protocol;
    match (next, what) {
        (None, _) => Ok(()),
        (Some(Protocol::P2p(_)), Use::Bootstrap) => match after {
            None => Ok(()),
            Some(p) => Err(format!("/{} after the peer id is not understood", p.tag())),
        },
        (Some(Protocol::P2p(_)), Use::Listen) => {
            Err("a listen address has no /p2p/ part: this node's peer id is its own".to_string())
        }
        (Some(p), _) => Err(format!("/{} after the port is not understood", p.tag())),
    }
}

/// Parses `--api`: the forms of [`crate::api_addr`], without host names
/// (nothing is looked up where the API listens) or a path.
fn parse_api(raw: &str) -> Result<SocketAddr, ConfigError> {
    let bad = |why: &str| ConfigError::Api {
        value: raw.to_string(),
        why: why.to_string(),
    };
    let addr = crate::api_addr::ApiAddr::to_listen(raw).map_err(|why| bad(&why))?;
    match addr.socket_addr() {
        Some(socket) if addr.path.is_empty() => Ok(socket),
        Some(_) => Err(bad(
            "the API serves no path prefix: give IP:PORT such as 127.0.0.1:7700",
        )),
        None => Err(bad(
            "host names are not looked up where the API listens: give IP:PORT such as \
             127.0.0.1:7700, a port such as 7700 (on 127.0.0.1), or localhost:7700",
        )),
    }
}

/// The bootstrap addresses that are not this node (`me`) itself: one
/// list can then serve every node, the seeds included. An address is this
/// node when its `/p2p/` is `me`, or when it is one of `listen` (or the
/// loopback address of one listening on every address).
pub fn others(bootstrap: &[Multiaddr], listen: &[Multiaddr], me: &PeerId) -> Vec<Multiaddr> {
    use libp2p::multiaddr::Protocol;
    let transport = |addr: &Multiaddr| -> Vec<Protocol<'static>> {
        addr.iter()
            .filter(|p| !matches!(p, Protocol::P2p(_)))
            .map(|p| p.acquire())
            .collect()
    };
    let is_me = |addr: &Multiaddr| {
        if addr.iter().any(|p| p == Protocol::P2p(*me)) {
            return true;
        }
        let dial = transport(addr);
        listen.iter().any(|l| {
            let mut own = transport(l);
            if own.len() != dial.len() {
                return false;
            }
            // A wildcard listener answers on loopback too.
            match (own.first(), dial.first()) {
                (Some(Protocol::Ip4(a)), Some(Protocol::Ip4(b)))
                    if a.is_unspecified() && b.is_loopback() =>
                {
                    own[0] = Protocol::Ip4(*b);
                }
                (Some(Protocol::Ip6(a)), Some(Protocol::Ip6(b)))
                    if a.is_unspecified() && b.is_loopback() =>
                {
                    own[0] = Protocol::Ip6(*b);
                }
                _ => {}
            }
            own == dial
        })
    };
    bootstrap.iter().filter(|a| !is_me(a)).cloned().collect()
}

/// The datagram socket's default address: the libp2p listen address's IP,
/// the next port (any free one when libp2p's is chosen by the system).
fn beside(listen: &Multiaddr) -> SocketAddr {
    use libp2p::multiaddr::Protocol;
    let mut ip = std::net::IpAddr::from([0, 0, 0, 0]);
    let mut port = 0u16;
    for part in listen.iter() {
        match part {
            Protocol::Ip4(v4) => ip = v4.into(),
            Protocol::Ip6(v6) => ip = v6.into(),
            Protocol::Udp(p) | Protocol::Tcp(p) => port = p,
            _ => {}
        }
    }
    let port = if port == 0 { 0 } else { port.wrapping_add(1) };
    SocketAddr::new(ip, port)
}

fn default_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "baton".to_string())
}

fn default_data_dir() -> PathBuf {
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".local/share/baton"),
        None => PathBuf::from("/var/lib/baton"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(args: &[&str]) -> Flags {
        Flags::try_parse_from(std::iter::once("batond").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn defaults_are_sane() {
        let c = Config::resolve(flags(&["--name", "a"]), File::default()).unwrap();
        assert_eq!(c.api, DEFAULT_API.parse().unwrap());
        assert!(c.mdns);
        assert_eq!(c.listen.len(), 2);
        assert_eq!(c.profile, Profile::Lan);
        assert_eq!(c.overlay, "baton");
        assert_eq!(c.swim_listen, "0.0.0.0:7702".parse().unwrap());
    }

    #[test]
    fn the_datagram_socket_sits_beside_the_first_listen_address() {
        let c = Config::resolve(
            flags(&["--name", "a", "--listen", "/ip4/127.0.0.1/udp/0/quic-v1"]),
            File::default(),
        )
        .unwrap();
        assert_eq!(c.swim_listen, "127.0.0.1:0".parse().unwrap());
        let c = Config::resolve(
            flags(&[
                "--name",
                "a",
                "--listen",
                "/ip4/198.18.1.3/tcp/9000",
                "--swim-listen",
                "198.18.1.3:9100",
            ]),
            File::default(),
        )
        .unwrap();
        assert_eq!(c.swim_listen, "198.18.1.3:9100".parse().unwrap());
        let err = Config::resolve(
            flags(&["--name", "a", "--swim-listen", "7702"]),
            File::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("swim_listen"), "{err}");
    }

    #[test]
    fn flags_win_over_the_file() {
        let file: File = toml::from_str(
            "name = \"file\"\ncapacity = 5\nprobe_interval = \"250ms\"\nmdns = false\n",
        )
        .unwrap();
        let c = Config::resolve(flags(&["--name", "flag"]), file).unwrap();
        assert_eq!(c.name, "flag");
        assert_eq!(c.capacity, 5);
        assert_eq!(c.swim.probe_interval, Duration::from_millis(250));
        assert!(!c.mdns);
    }

    #[test]
    fn the_mdns_help_names_every_value_it_accepts() {
        use clap::CommandFactory;
        let help = Flags::command().render_long_help().to_string();
        let start = help.find("--mdns").expect("--mdns in the help");
        let end = help[start..].find("--no-mdns").expect("--no-mdns after it") + start;
        let mdns = &help[start..end];
        assert!(mdns.contains("true/false, on/off, yes/no, 1/0"), "{mdns}");
        // clap's own list would say only true and false.
        assert!(!mdns.contains("possible values"), "{mdns}");
        for value in ["on", "off", "yes", "no", "1", "0", "true", "false"] {
            assert!(
                Flags::try_parse_from(["batond", &format!("--mdns={value}")]).is_ok(),
                "{value}"
            );
        }
    }

    #[test]
    fn the_mdns_flag_wins_over_the_file_in_both_directions() {
        let resolve = |args: &[&str], text: &str| {
            let mut all = vec!["--name", "a"];
            all.extend_from_slice(args);
            Config::resolve(flags(&all), toml::from_str::<File>(text).unwrap())
                .unwrap()
                .mdns
        };
        // The flag turns it on over a file that turns it off...
        for on in [
            "--mdns",
            "--mdns=true",
            "--mdns=on",
            "--mdns=yes",
            "--mdns=1",
        ] {
            assert!(resolve(&[on], "mdns = false\n"), "{on}");
        }
        assert!(resolve(&["--mdns", "true"], "mdns = false\n"));
        // ...and off over a file that turns it on; --no-mdns is --mdns=false.
        for off in [
            "--mdns=false",
            "--mdns=off",
            "--mdns=no",
            "--mdns=0",
            "--no-mdns",
        ] {
            assert!(!resolve(&[off], "mdns = true\n"), "{off}");
            assert!(!resolve(&[off], ""), "{off}");
        }
        assert!(!resolve(&["--mdns", "false"], "mdns = true\n"));
        // Without the flag, the file decides; without either, it is on.
        assert!(!resolve(&[], "mdns = false\n"));
        assert!(resolve(&[], "mdns = true\n"));
        assert!(resolve(&[], ""));
        // Of the two spellings, the last one given wins.
        assert!(resolve(&["--no-mdns", "--mdns"], "mdns = false\n"));
        assert!(!resolve(&["--mdns", "--no-mdns"], "mdns = true\n"));
        // A value that is not a boolean is refused, naming the flag.
        let err = Flags::try_parse_from(["batond", "--mdns=maybe"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--mdns"), "{err}");
    }

    #[test]
    fn errors_name_the_field() {
        let err = Config::resolve(
            flags(&["--name", "a", "--listen", "tcp:7701"]),
            File::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("listen") && err.contains("multiaddr"), "{err}");
        let err = Config::resolve(flags(&["--name", "a", "--api", "nope"]), File::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("api"), "{err}");
        let err = toml::from_str::<File>("probe_interval = \"fast\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("probe_interval"), "{err}");
        let err = toml::from_str::<File>("colour = 1")
            .unwrap_err()
            .to_string();
        assert!(err.contains("colour"), "{err}");
    }

    #[test]
    fn sessions_standby_and_consent_are_read_and_checked() {
        let file: File = toml::from_str(
            "[sessions]\nstandby = \"warm\"\nconsent_interval = \"20s\"\nconsent_exempt = [\"198.18.2.0/24\", \"::1\"]\n",
        )
        .unwrap();
        let c = Config::resolve(flags(&["--name", "a"]), file).unwrap();
        assert_eq!(c.sessions.standby, baton_protocol::sessions::Standby::Warm);
        assert_eq!(c.sessions.consent.interval, Duration::from_secs(20));
        assert_eq!(c.sessions.consent.exempt.len(), 2);
        assert!(!c.sessions.consent.applies_to("198.18.2.7:5004"));
        for bad in [
            "[sessions]\nstandby = \"tepid\"\n",
            "[sessions]\nconsent_exempt = [\"198.18.2.0/33\"]\n",
            "[sessions]\nconsent_grace = \"10ms\"\n",
        ] {
            let file: File = toml::from_str(bad).unwrap();
            let err = Config::resolve(flags(&["--name", "a"]), file)
                .unwrap_err()
                .to_string();
            assert!(err.contains("sessions."), "{err}");
        }
    }

    #[test]
    fn tags_come_from_the_file_and_the_flags_and_are_checked() {
        let file: File = toml::from_str("tags = { region = \"eu\", rack = \"r1\" }\n").unwrap();
        let c = Config::resolve(
            flags(&["--name", "a", "--tag", "region=us", "--tag", "tier=media"]),
            file,
        )
        .unwrap();
        let want: Tags = [("rack", "r1"), ("region", "us"), ("tier", "media")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        assert_eq!(c.tags, want);
        assert!(
            Config::resolve(flags(&["--name", "a"]), File::default())
                .unwrap()
                .tags
                .is_empty()
        );
        let nine: Vec<String> = (0..9).map(|i| format!("k{i}=v")).collect();
        let mut args = vec!["--name", "a"];
        for t in &nine {
            args.extend(["--tag", t]);
        }
        for (args, want) in [
            (vec!["--name", "a", "--tag", "region"], "no '='"),
            (vec!["--name", "a", "--tag", "region=e u"], "only letters"),
            (vec!["--name", "a", "--tag", "9=x"], "a letter"),
            (
                vec!["--name", "a", "--tag", "region=eu", "--tag", "region=us"],
                "given twice",
            ),
            (args, "at most 8"),
        ] {
            let err = Config::resolve(flags(&args), File::default())
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with("invalid tags: ") && err.contains(want),
                "{args:?}: {err}"
            );
        }
        let file: File = toml::from_str("tags = { \"bad key\" = \"x\" }\n").unwrap();
        let err = Config::resolve(flags(&["--name", "a"]), file)
            .unwrap_err()
            .to_string();
        assert!(err.contains("bad key"), "{err}");
        let err = toml::from_str::<File>("tags = { region = 1 }\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("tags"), "{err}");
    }

    #[test]
    fn placement_settings_are_read_and_checked() {
        use baton_protocol::policy::Placement;
        let c = Config::resolve(flags(&["--name", "a"]), File::default()).unwrap();
        assert_eq!(c.sessions.policy.placement, Placement::Spread);
        assert_eq!(c.sessions.policy.region_tag, "region");
        assert!(c.sessions.policy.require_tags.is_empty());
        let file: File = toml::from_str(
            "[sessions]\nplacement = \"nearest\"\nregion_tag = \"zone\"\nrequire_tags = { tier = \"media\" }\n",
        )
        .unwrap();
        let c = Config::resolve(flags(&["--name", "a"]), file).unwrap();
        assert_eq!(c.sessions.policy.placement, Placement::Nearest);
        assert_eq!(c.sessions.policy.region_tag, "zone");
        assert_eq!(c.sessions.policy.require_tags["tier"], "media");
        for (bad, field) in [
            ("placement = \"closest\"", "sessions.placement"),
            ("region_tag = \"\"", "sessions.region_tag"),
            ("require_tags = { tier = \"a b\" }", "sessions.require_tags"),
        ] {
            let file: File = toml::from_str(&format!("[sessions]\n{bad}\n")).unwrap();
            let err = Config::resolve(flags(&["--name", "a"]), file)
                .unwrap_err()
                .to_string();
            assert!(err.contains(field), "{bad}: {err}");
        }
    }

    #[test]
    fn exec_template_mistakes_are_configuration_errors_naming_the_field() {
        let ok: File = toml::from_str(
            "[services]\nmedia_dir = \"/srv/media\"\n[services.exec.t]\ncommand = \"p {input} {n}\"\n\
             params = { input = \"media\", n = { kind = \"number\", max = 9 } }\n",
        )
        .unwrap();
        let c = Config::resolve(flags(&["--name", "a"]), ok).unwrap();
        assert_eq!(c.services.exec["t"].params.len(), 2);
        for (bad, expected) in [
            (
                "[services.exec.t]\ncommand = \"p {n}\"\nparams = { n = \"nuber\" }\n",
                "[services] exec template \"t\": params.n: unknown kind \"nuber\"",
            ),
            (
                "[services.exec.t]\ncommand = \"p {n}\"\nparams = { m = \"name\" }\n",
                "params.m: the command has no placeholder {m}",
            ),
            (
                "[services.exec.t]\ncommand = \"p {n}\"\nparams = { n = { kind = \"regex\", pattern = \"[\" } }\n",
                "params.n: pattern \"[\"",
            ),
            (
                "[services.exec.t]\ncommand = \"p {n}\"\nparams = { n = \"media\" }\n",
                "params.n: kind media reads files from media_dir",
            ),
            (
                "[services.exec]\nt = \"p '{n}\"\n",
                "exec template \"t\": unterminated",
            ),
        ] {
            let file: File = toml::from_str(bad).unwrap();
            let err = Config::resolve(flags(&["--name", "a"]), file)
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{bad}: {err} lacks {expected}");
        }
    }

    #[test]
    fn api_beyond_loopback_needs_a_token() {
        let err = Config::resolve(
            flags(&["--name", "a", "--api", "0.0.0.0:7700"]),
            File::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("api_token"), "{err}");
        let ok = Config::resolve(
            flags(&[
                "--name",
                "a",
                "--api",
                "0.0.0.0:7700",
                "--api-token",
                "s3cret",
            ]),
            File::default(),
        );
        assert!(ok.is_ok());
    }

    #[test]
    fn a_read_token_needs_a_full_token_and_hosts_are_dns_names() {
        let err = error(&["--api-read-token", "look"]);
        assert!(
            err.contains("api_read_token") && err.contains("api_token"),
            "{err}"
        );
        assert!(!err.contains("look"), "tokens are not echoed: {err}");
        let err = error(&["--api-token", "same", "--api-read-token", "same"]);
        assert!(err.contains("different"), "{err}");
        let ok = Config::resolve(
            flags(&[
                "--name",
                "a",
                "--api-token",
                "s3cret",
                "--api-read-token",
                "look",
                "--api-host",
                "baton-1.example.net",
            ]),
            File::default(),
        )
        .unwrap();
        assert_eq!(ok.api_read_token.as_deref(), Some("look"));
        assert_eq!(ok.api_hosts, ["baton-1.example.net"]);
        for bad in ["http://x", "x:7700", "", "a..b", "x/y"] {
            let err = error(&["--api-host", bad]);
            assert!(err.contains("api_hosts"), "{bad}: {err}");
        }
    }

    fn error(args: &[&str]) -> String {
        let mut all = vec!["--name", "a"];
        all.extend_from_slice(args);
        Config::resolve(flags(&all), File::default())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn broken_bootstrap_addresses_are_refused_with_what_to_write() {
        let id = "12D3KooWRvdjFHrAEJcXqfvz7HP2tqjkZhrSMhrAgP9RhyGZZbYL";
        for (raw, why) in [
            (
                "/ip4/198.18.0.1/udp/7701",
                "it ends at /udp/7701: QUIC needs /quic-v1",
            ),
            (
                "/ip4/198.18.0.1/udp/7701/quic",
                "/quic is the old QUIC draft",
            ),
            ("/ip4/198.18.0.1", "it has no port"),
            ("/ip4/198.18.0.1/udp/0/quic-v1", "port 0 cannot be dialled"),
            (
                "/ip4/198.18.0.1/tcp/7701/p2p/12D3KooWnotanid",
                "malformed peer id \"12D3KooWnotanid\"",
            ),
            (
                "/ip4/198.18.0.1/udp/7701/quic-v1/p2p/xyz",
                "malformed peer id \"xyz\"",
            ),
            (
                "/dns4/seed.example/udp/7701/quic-v1",
                "host names are not looked up",
            ),
            (
                "/ip4/198.18.0.1/udp/7701/webrtc-direct",
                "followed by /webrtc-direct, not /quic-v1",
            ),
            ("/ip4/198.18.0.1/tcp/7701/ws", "/ws after the port"),
            ("198.18.0.1:7701", "not a multiaddr"),
        ] {
            let err = error(&["--bootstrap", raw]);
            assert!(err.contains(why), "{raw}: {err}");
            assert!(
                err.contains(&format!("invalid bootstrap address {raw:?}"))
                    && err.contains(
                        "write it as /ip4/198.18.0.1/udp/7701/quic-v1 (QUIC) or \
                         /ip4/198.18.0.1/tcp/7701 (TCP), optionally followed by /p2p/<peer id>"
                    ),
                "{raw}: {err}"
            );
        }
        for good in [
            "/ip4/198.18.0.1/udp/7701/quic-v1".to_string(),
            format!("/ip4/198.18.0.1/udp/7701/quic-v1/p2p/{id}"),
            "/ip6/::1/tcp/7701".to_string(),
            format!("/ip4/198.18.0.1/tcp/7701/p2p/{id}"),
        ] {
            let c = Config::resolve(
                flags(&["--name", "a", "--bootstrap", &good]),
                File::default(),
            );
            assert!(c.is_ok(), "{good}: {:?}", c.err());
        }
    }

    #[test]
    fn listen_addresses_are_checked_the_same_way() {
        let err = error(&["--listen", "/ip4/127.0.0.1/udp/7701"]);
        assert!(
            err.contains("invalid listen address") && err.contains("/quic-v1"),
            "{err}"
        );
        assert!(!err.contains("/p2p/<peer id>"), "{err}");
        let err = error(&[
            "--listen",
            "/ip4/127.0.0.1/tcp/7701/p2p/12D3KooWRvdjFHrAEJcXqfvz7HP2tqjkZhrSMhrAgP9RhyGZZbYL",
        ]);
        assert!(err.contains("a listen address has no /p2p/ part"), "{err}");
        let c = Config::resolve(
            flags(&["--name", "a", "--listen", "/ip4/127.0.0.1/udp/0/quic-v1"]),
            File::default(),
        );
        assert!(c.is_ok());
    }

    #[test]
    fn bootstrap_entries_of_the_node_itself_are_left_out() {
        let me = PeerId::random();
        let other = PeerId::random();
        let addr = |s: &str| -> Multiaddr { s.parse().unwrap() };
        let listen = [
            addr("/ip4/127.0.0.1/udp/7701/quic-v1"),
            addr("/ip4/0.0.0.0/tcp/7701"),
        ];
        let bootstrap = [
            addr(&format!("/ip4/198.18.0.1/udp/7701/quic-v1/p2p/{me}")),
            addr("/ip4/127.0.0.1/udp/7701/quic-v1"),
            addr("/ip4/127.0.0.1/tcp/7701"),
            addr("/ip4/127.0.0.1/udp/7711/quic-v1"),
            addr(&format!("/ip4/198.18.0.2/udp/7701/quic-v1/p2p/{other}")),
            addr("/ip4/198.18.0.3/tcp/7701"),
        ];
        assert_eq!(others(&bootstrap, &listen, &me), bootstrap[3..].to_vec());
    }

    #[test]
    fn the_api_takes_the_forms_the_cli_takes() {
        for (raw, addr) in [
            ("localhost:7750", "127.0.0.1:7750"),
            ("7750", "127.0.0.1:7750"),
            ("localhost", "127.0.0.1:7700"),
            ("127.0.0.1:7750", "127.0.0.1:7750"),
            ("[::1]:7750", "[::1]:7750"),
        ] {
            let c =
                Config::resolve(flags(&["--name", "a", "--api", raw]), File::default()).unwrap();
            assert_eq!(c.api, addr.parse().unwrap(), "{raw}");
        }
        let err = error(&["--api", "node-b:7750"]);
        assert!(
            err.contains("invalid api \"node-b:7750\"")
                && err.contains("host names are not looked up"),
            "{err}"
        );
        let err = error(&["--api", "127.0.0.1:77000"]);
        assert!(
            err.contains("\"77000\" is not a port number (0 to 65535)"),
            "{err}"
        );
        let c = Config::resolve(
            flags(&["--name", "a", "--api", "127.0.0.1:0"]),
            File::default(),
        );
        assert_eq!(c.unwrap().api, "127.0.0.1:0".parse().unwrap());
    }

    #[test]
    fn network_key_files_say_what_is_wrong_with_them() {
        let dir = std::env::temp_dir().join(format!("baton-config-key-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("network.key");
        let m = missing.display().to_string();
        let err = error(&["--network-key-file", &m]);
        assert!(
            err.starts_with(&format!("cannot read network key file {m}: "))
                && err.contains(&format!("head -c 32 /dev/urandom > {m}")),
            "{err}"
        );
        assert!(!err.contains("config file"), "{err}");
        let err = error(&["--network-key-file", "/dev/zero"]);
        assert_eq!(
            err,
            "invalid network_key_file \"/dev/zero\": expected a file holding a key of 16 to \
             4096 bytes, not more: is it the right file?"
        );
        std::fs::write(&missing, "short\n").unwrap();
        let err = error(&["--network-key-file", &m]);
        assert!(
            err.contains("a key of 16 to 4096 bytes, such as one made with `head -c 32"),
            "{err}"
        );
        std::fs::write(&missing, "0123456789abcdef0123\n").unwrap();
        let c = Config::resolve(
            flags(&["--name", "a", "--network-key-file", &m]),
            File::default(),
        )
        .unwrap();
        assert_eq!(c.network_key.as_deref(), Some(&b"0123456789abcdef0123"[..]));
        assert_eq!(c.network_key_file, Some(missing));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn allow_entries_must_be_peer_ids_and_the_bad_one_is_named() {
        let good = libp2p::identity::Keypair::generate_ed25519()
            .public()
            .to_peer_id()
            .to_base58();
        for typo in ["12D3KooWtypo", "hello", &good[..good.len() - 1]] {
            let err = error(&["--allow", &good, "--allow", typo]);
            assert_eq!(
                err,
                format!("invalid allow {typo:?}: expected a base58 peer id such as 12D3KooW...")
            );
        }
        let c =
            Config::resolve(flags(&["--name", "a", "--allow", &good]), File::default()).unwrap();
        assert_eq!(c.allowlist.unwrap().len(), 1);
    }

    #[test]
    fn log_level_and_hooks_are_read_and_checked() {
        let file: File = toml::from_str(
            "log_level = \"info,baton_node=debug\"\n[hooks]\nconcurrency = 2\n\
             [[hooks.handler]]\nevents = [\"member-dead\"]\ncommand = [\"/bin/true\"]\ntimeout = \"3s\"\n",
        )
        .unwrap();
        let c = Config::resolve(flags(&["--name", "a"]), file).unwrap();
        assert_eq!(c.log_level.as_deref(), Some("info,baton_node=debug"));
        assert_eq!(c.hooks.concurrency, 2);
        assert_eq!(c.hooks.handlers[0].timeout, Duration::from_secs(3));
        let c = Config::resolve(
            flags(&["--name", "a", "--log-level", "warn"]),
            toml::from_str("log_level = \"debug\"").unwrap(),
        )
        .unwrap();
        assert_eq!(c.log_level.as_deref(), Some("warn"), "the flag wins");
        let err = error(&["--log-level", "info,baton_node=loud"]);
        assert!(
            err.starts_with("invalid log_level \"info,baton_node=loud\""),
            "{err}"
        );
        let file: File =
            toml::from_str("[[hooks.handler]]\nevents = [\"member-gone\"]\ncommand = [\"x\"]\n")
                .unwrap();
        let err = Config::resolve(flags(&["--name", "a"]), file)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("[hooks] hooks.handler[0].events: unknown event \"member-gone\""),
            "{err}"
        );
    }
}
