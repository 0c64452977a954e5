//! `Host` and `Origin` checks, against DNS rebinding and cross-site
//! requests.
//!
//! A web page cannot read the API's answers cross-origin, but it can send
//! requests to it, and with DNS rebinding (its own name re-resolved to
//! 127.0.0.1) it can even read them: the browser then believes the API is
//! the page's own origin. Both leave a trace the API can check. A rebound
//! request carries the page's name in `Host`; a cross-site one carries the
//! page's origin in `Origin`. So every request (but `GET /v1/health`) must
//! name this node in `Host`: an IP address, `localhost`, or a name the
//! operator listed in `api_hosts`; and a request with an `Origin` must come
//! from this very origin (the node's own pages), never from another site,
//! another port of this machine, or `null`. `baton`, curl and Prometheus
//! send no `Origin` and an IP or a listed name in `Host`.

use std::net::IpAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState};

/// The names besides IP addresses and `localhost` that requests may give
/// in `Host` (lowercase, without port).
#[derive(Debug, Default, Clone)]
pub(super) struct Hosts(Vec<String>);

impl Hosts {
    pub(super) fn new(names: &[String]) -> Self {
        Hosts(names.iter().map(|n| n.to_ascii_lowercase()).collect())
    }

    fn allows(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        host == "localhost" || bare_ip(&host).is_some() || self.0.contains(&host)
    }
}

/// `app`, answering 403 to requests whose `Host` or `Origin` is not this
/// node's.
pub(super) fn check(app: Router<AppState>, hosts: Hosts) -> Router<AppState> {
    app.layer(middleware::from_fn_with_state(Arc::new(hosts), guard))
}

async fn guard(State(hosts): State<Arc<Hosts>>, request: Request, next: Next) -> Response {
    match judge(&hosts, request.headers()) {
        Ok(()) => next.run(request).await,
        Err(message) => ApiError::new(StatusCode::FORBIDDEN, message).into_response(),
    }
}

/// Why the headers do not name this node, if they do not.
fn judge(hosts: &Hosts, headers: &HeaderMap) -> Result<(), String> {
    const HINT: &str = "address the node by IP or localhost, or list the name in api_hosts";
    // HTTP/1.1 requires Host; an HTTP/1.0 client without it is no browser.
    let host = match headers.get(header::HOST) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| "the Host header is not text".to_string())?,
        ),
    };
    if let Some(host) = host {
        let name = host_name(host).ok_or_else(|| format!("malformed Host header {host:?}"))?;
        if !hosts.allows(name) {
            return Err(format!(
                "Host {:?} is not this node's name ({HINT}): a web page that \
                 rebinds its DNS name to this address may not use the API",
                clip(host)
            ));
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin
            .to_str()
            .map_err(|_| "the Origin header is not text".to_string())?;
        let own = host.is_some_and(|h| {
            origin
                .strip_prefix("http://")
                .is_some_and(|rest| rest.eq_ignore_ascii_case(h))
        });
        if !own {
            return Err(format!(
                "requests from web pages of another origin ({:?}) are refused: \
                 only the node's own pages may use the API from a browser",
                clip(origin)
            ));
        }
    }
    Ok(())
}

/// The host part of a `Host` value (`name`, `name:port`, `[v6]:port`).
fn host_name(host: &str) -> Option<&str> {
    if let Some(rest) = host.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(is_port)) {
            return None;
        }
        return Some(inside);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if is_port(port) && !name.contains(':') => Some(name),
        Some(_) => None,
        None => Some(host),
    }
}

fn is_port(p: &str) -> bool {
    !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
}

fn bare_ip(host: &str) -> Option<IpAddr> {
    host.parse().ok()
}

fn clip(s: &str) -> String {
    s.chars().take(100).collect()
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;
    use crate::api::Access;
    use crate::api::testing::{Server, raw, shared};

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn hosts_that_name_this_node_pass_and_others_do_not() {
        let hosts = Hosts::new(&["Baton-1.example.net".to_string()]);
        for ok in [
            "127.0.0.1:7700",
            "127.0.0.1",
            "localhost:7700",
            "LOCALHOST",
            "[::1]:7700",
            "[::1]",
            "198.18.0.1:7700",
            "baton-1.example.net:443",
        ] {
            assert_eq!(judge(&hosts, &headers(&[("host", ok)])), Ok(()), "{ok}");
        }
        for bad in [
            "evil.example:7700",
            "127.0.0.1.nip.io:7700",
            "localhost.evil.example",
            "attacker.localhost:7700",
            "127.0.0.1:7700:1",
            "[::1",
            "::1:7700",
            "baton-1.example.net.evil:80",
        ] {
            assert!(judge(&hosts, &headers(&[("host", bad)])).is_err(), "{bad}");
        }
        assert_eq!(
            judge(&hosts, &HeaderMap::new()),
            Ok(()),
            "no Host: no browser"
        );
    }

    #[test]
    fn only_the_nodes_own_origin_passes() {
        let hosts = Hosts::default();
        let with = |origin: &str| {
            judge(
                &hosts,
                &headers(&[("host", "127.0.0.1:7700"), ("origin", origin)]),
            )
        };
        assert_eq!(with("http://127.0.0.1:7700"), Ok(()));
        for bad in [
            "http://evil.example",
            "http://127.0.0.1:8080",
            "https://127.0.0.1:7700",
            "null",
            "http://localhost:7700",
        ] {
            let err = with(bad).unwrap_err();
            assert!(err.contains("another origin"), "{bad}: {err}");
        }
    }

    #[tokio::test]
    async fn a_rebound_page_and_a_cross_site_post_get_403_and_baton_gets_through() {
        let server = Server::start_access(shared(), Access::default()).await;
        let addr = server.addr;
        let rebound = raw(
            addr,
            "GET /v1/sessions HTTP/1.1\r\nHost: evil.example:7700\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(rebound.starts_with("HTTP/1.1 403"), "{rebound}");
        assert!(rebound.contains("not this node's name"), "{rebound}");
        let body = r#"{"service":"rtp-audio","client":"127.0.0.1:5004"}"#;
        let cross = raw(
            addr,
            &format!(
                "POST /v1/sessions HTTP/1.1\r\nHost: {addr}\r\nOrigin: http://evil.example\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ),
        )
        .await;
        assert!(cross.starts_with("HTTP/1.1 403"), "{cross}");
        let plain = raw(
            addr,
            &format!("GET /v1/status HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert!(plain.starts_with("HTTP/1.1 200"), "{plain}");
        server.stop().await;
    }
}
