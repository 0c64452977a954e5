//! Configuration of `batond`: a TOML file (`--config`) and command-line flags;
//! a flag wins over the file, the file over the defaults. Every error names
//! the field and what it expects.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

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
                  batond --config /etc/baton/batond.toml\n  \
                  batond --name a --listen /ip4/127.0.0.1/udp/0/quic-v1 --no-mdns --api 127.0.0.1:7710"
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
    /// Address of a node to join through, with or without /p2p/<peer id> (repeatable).
    #[arg(long, value_name = "MULTIADDR")]
    pub bootstrap: Vec<String>,
    /// Do not discover peers on the LAN with mDNS.
    #[arg(long)]
    pub no_mdns: bool,
    /// Address of the HTTP API. Beyond loopback, requests need the api_token.
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
    /// Bearer token the API requires when it listens beyond loopback.
    #[arg(long, env = "BATON_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// Log format.
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Time between SWIM probe rounds (overrides the profile).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub probe_interval: Option<Duration>,
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
    log_format: Option<LogFormat>,
    #[serde(default, with = "humantime_serde")]
    probe_interval: Option<Duration>,
    #[serde(default)]
    services: crate::service::Config,
    #[serde(default)]
    sessions: SessionsFile,
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
    /// Peers allowed, when restricted.
    pub allowlist: Option<HashSet<PeerId>>,
    /// Most members admitted.
    pub max_members: usize,
    /// API bearer token (required beyond loopback).
    pub api_token: Option<String>,
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
                .map(|a| parse_multiaddr("listen", a))
                .collect::<Result<_, _>>()?
        };
        let bootstrap_raw = if flags.bootstrap.is_empty() {
            file.bootstrap
        } else {
            flags.bootstrap
        };
        let bootstrap = bootstrap_raw
            .iter()
            .map(|a| parse_multiaddr("bootstrap", a))
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
        let mdns = !flags.no_mdns && file.mdns.unwrap_or(true);
        let api_raw = flags
            .api
            .or(file.api)
            .unwrap_or_else(|| DEFAULT_API.to_string());
        let api: SocketAddr = api_raw.parse().map_err(|_| {
            invalid(
                "api",
                &api_raw,
                "an IP address and port, such as 127.0.0.1:7700",
            )
        })?;
        let profile = flags.profile.or(file.profile).unwrap_or_default();
        let capacity = flags.capacity.or(file.capacity).unwrap_or(100);
        let overlay = flags
            .overlay
            .or(file.overlay)
            .unwrap_or_else(|| "baton".to_string());
        if overlay.is_empty() || overlay.len() > baton_protocol::peering::MAX_OVERLAY_LEN {
            return Err(invalid("overlay", overlay, "1 to 128 bytes"));
        }
        let network_key = match flags.network_key_file.or(file.network_key_file) {
            Some(path) => Some(read_key(&path)?),
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
                        p.parse::<PeerId>().map_err(|_| {
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
        Ok(Config {
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
            allowlist,
            max_members,
            api_token,
            log_format: flags.log_format.or(file.log_format).unwrap_or_default(),
            swim,
            clients: clients_config(&file.services)?,
            services: file.services,
            sessions: sessions_config(file.sessions)?,
        })
    }
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
    let mut key = std::fs::read(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    while key.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        key.pop();
    }
    if key.len() < 16 {
        return Err(invalid(
            "network_key_file",
            path.display().to_string(),
            "a file holding a key of at least 16 bytes",
        ));
    }
    Ok(key)
}

fn parse_multiaddr(field: &'static str, raw: &str) -> Result<Multiaddr, ConfigError> {
    raw.parse().map_err(|_| {
        invalid(
            field,
            raw,
            "a multiaddr such as /ip4/198.18.0.1/udp/7701/quic-v1 or /ip4/198.18.0.1/tcp/7701",
        )
    })
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
}
