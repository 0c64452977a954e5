//! The forms an API address takes: one parser for `batond --api` (where
//! the API listens) and `baton --api` (where the CLI connects), so that the
//! two accept the same text and read it the same way.
//!
//! `IP:PORT`, `[IPv6]:PORT`, `IP` or `[IPv6]` (port 7700), a bare port (on
//! 127.0.0.1: digits are never sent to DNS as a host name), `localhost` and
//! `localhost:PORT` (127.0.0.1, never looked up), each optionally after
//! `http://`. Other host names, and a path after the port, only make sense
//! to the CLI, which looks them up when it connects.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// The API's port when none is given (`batond`'s default API address).
pub const DEFAULT_PORT: u16 = 7700;

/// The forms, for messages.
pub const EXPECTED: &str = "expected HOST:PORT such as 127.0.0.1:7700, a port such as 7700 \
     (on 127.0.0.1), or http://HOST:PORT";

/// The host part of an API address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// An IP address (`localhost` is 127.0.0.1).
    Ip(IpAddr),
    /// A host name, looked up when connecting.
    Name(String),
}

/// An API address as the user wrote it, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiAddr {
    /// The host.
    pub host: Host,
    /// The port, [`DEFAULT_PORT`] when none was given.
    pub port: u16,
    /// A path prefix after the port, without its trailing slash (`""`).
    pub path: String,
}

impl ApiAddr {
    /// Parses an address to connect to: one of the forms of the module
    /// docs, port 1 to 65535. The error says what is wrong and which forms
    /// are accepted.
    pub fn to_connect(text: &str) -> Result<ApiAddr, String> {
        Self::parse(text, 1)
    }

    /// Parses an address to listen on: as [`ApiAddr::to_connect`], and
    /// port 0 asks for any free port.
    pub fn to_listen(text: &str) -> Result<ApiAddr, String> {
        Self::parse(text, 0)
    }

    fn parse(text: &str, min_port: u16) -> Result<ApiAddr, String> {
        let text = text.trim();
        let rest = match text.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
            Some((scheme, _)) => {
                return Err(format!(
                    "{scheme}:// is not supported, the API speaks plain HTTP: give HOST:PORT"
                ));
            }
            None => text,
        };
        let rest = rest.trim_end_matches('/');
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        if authority.is_empty() || authority.contains(|c: char| c.is_whitespace() || c == '@') {
            return Err(EXPECTED.to_owned());
        }
        let path = path.to_owned();
        let all_digits = |text: &str| text.bytes().all(|b| b.is_ascii_digit());
        if all_digits(authority) {
            let port = port_number(authority, min_port)?;
            return Ok(ApiAddr {
                host: Host::Ip(Ipv4Addr::LOCALHOST.into()),
                port,
                path,
            });
        }
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let Some((inside, after)) = bracketed.split_once(']') else {
                return Err(format!("unclosed '[': {EXPECTED}"));
            };
            let ip = inside.parse::<std::net::Ipv6Addr>().map_err(|_| {
                format!("{inside:?} in brackets is not an IPv6 address: {EXPECTED}")
            })?;
            let port = match after.strip_prefix(':') {
                Some(port) => Some(port),
                None if after.is_empty() => None,
                None => return Err(EXPECTED.to_owned()),
            };
            (Host::Ip(ip.into()), port)
        } else {
            let (host, port) = match authority.split_once(':') {
                Some((_, port)) if port.contains(':') => {
                    return Err("write an IPv6 address in brackets, such as [::1]:7700".to_owned());
                }
                Some(("", _)) => return Err(format!("missing host: {EXPECTED}")),
                Some((host, _)) if all_digits(host) => {
                    return Err(format!("{host:?} is not a host name: {EXPECTED}"));
                }
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            };
            let host = if host.eq_ignore_ascii_case("localhost") {
                Host::Ip(Ipv4Addr::LOCALHOST.into())
            } else if let Ok(ip) = host.parse::<IpAddr>() {
                Host::Ip(ip)
            } else {
                Host::Name(host.to_owned())
            };
            (host, port)
        };
        let port = match port {
            Some(port) => port_number(port, min_port)?,
            None => DEFAULT_PORT,
        };
        Ok(ApiAddr { host, port, path })
    }

    /// The socket address, unless the host is a name.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        match self.host {
            Host::Ip(ip) => Some(SocketAddr::new(ip, self.port)),
            Host::Name(_) => None,
        }
    }

    /// `http://host:port[/path]`.
    pub fn url(&self) -> String {
        let authority = match &self.host {
            Host::Ip(ip) => SocketAddr::new(*ip, self.port).to_string(),
            Host::Name(name) => format!("{name}:{}", self.port),
        };
        format!("http://{authority}{}", self.path)
    }
}

/// A TCP port: `min` to 65535.
fn port_number(text: &str, min: u16) -> Result<u16, String> {
    match text.parse::<u16>() {
        Ok(port) if port >= min => Ok(port),
        _ => Err(format!(
            "{text:?} is not a port number ({min} to 65535): {EXPECTED}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn socket(text: &str) -> Option<SocketAddr> {
        let listen = ApiAddr::to_listen(text).unwrap();
        assert_eq!(ApiAddr::to_connect(text).unwrap(), listen, "{text}");
        listen.socket_addr()
    }

    #[test]
    fn localhost_and_bare_ports_are_loopback_without_a_lookup() {
        for (text, addr) in [
            ("7750", "127.0.0.1:7750"),
            ("localhost:7750", "127.0.0.1:7750"),
            ("LocalHost", "127.0.0.1:7700"),
            ("http://localhost:7750/", "127.0.0.1:7750"),
            ("127.0.0.1:7750", "127.0.0.1:7750"),
            ("0.0.0.0:7750", "0.0.0.0:7750"),
            ("[::1]:7750", "[::1]:7750"),
            ("[::1]", "[::1]:7700"),
            ("198.18.0.1", "198.18.0.1:7700"),
        ] {
            assert_eq!(socket(text), Some(addr.parse().unwrap()), "{text}");
        }
        let name = ApiAddr::to_connect("node-b:7750/baton").unwrap();
        assert_eq!(name.host, Host::Name("node-b".into()));
        assert_eq!(name.socket_addr(), None);
        assert_eq!(name.url(), "http://node-b:7750/baton");
    }

    #[test]
    fn malformed_addresses_say_which_forms_work() {
        for (bad, why) in [
            ("", "expected HOST:PORT"),
            ("https://a", "plain HTTP"),
            ("::1", "in brackets"),
            ("[::1", "unclosed '['"),
            ("[nope]:7700", "not an IPv6 address"),
            (":7700", "missing host"),
            ("a:http", "not a port number"),
            ("a:0", "\"0\" is not a port number (1 to 65535)"),
            ("0", "\"0\" is not a port number (1 to 65535)"),
            ("7710:7700", "\"7710\" is not a host name"),
            ("u@h:1", "expected HOST:PORT"),
        ] {
            let err = ApiAddr::to_connect(bad).unwrap_err();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }

    #[test]
    fn a_listener_may_ask_for_any_free_port() {
        for (text, addr) in [
            ("0", "127.0.0.1:0"),
            ("127.0.0.1:0", "127.0.0.1:0"),
            ("localhost:0", "127.0.0.1:0"),
        ] {
            assert_eq!(
                ApiAddr::to_listen(text).unwrap().socket_addr(),
                Some(addr.parse().unwrap())
            );
        }
        let err = ApiAddr::to_listen("127.0.0.1:65536").unwrap_err();
        assert!(err.contains("(0 to 65535)"), "{err}");
    }
}
