//! A blocking client of one node's HTTP API over ureq: the `--api` address,
//! the bearer token, bounded bodies, answers decoded into [`crate::views`],
//! and errors that say what to do. `baton` and the testnet both use it.

use std::fmt::Write as _;
use std::io::{self, BufReader};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::CliError;
use super::render::sanitize;
use super::sse;
use crate::api_addr::ApiAddr;
use crate::views::ErrorBody;

/// Where the node's API listens unless told otherwise (`batond --api`).
pub const DEFAULT_API: &str = "127.0.0.1:7700";

/// How long a request may take, unless [`ApiClient::with_timeout`] says
/// otherwise.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Three missed keep-alives (the API sends one every 15 s): the stream is dead.
pub const STREAM_SILENCE: Duration = Duration::from_secs(45);

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Caps on what a server can make this process buffer.
const MAX_BODY: u64 = 64 << 20;
const MAX_ERROR_BODY: u64 = 64 << 10;

/// A client of one node's HTTP API.
///
/// Each request connects from the calling thread, so a client used on a
/// thread inside a network namespace reaches that namespace's node.
#[derive(Debug)]
pub struct ApiClient {
    agent: ureq::Agent,
    /// `http://host:port`, without a trailing slash.
    base: String,
    /// The address as the user gave it, for messages.
    api: String,
    token: Option<String>,
    /// How long a request (not an event stream) may take.
    timeout: Duration,
}

/// An HTTP request method, with the JSON body of a POST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verb {
    /// GET.
    Get,
    /// DELETE.
    Delete,
    /// POST, with this JSON body.
    Post(String),
}

impl ApiClient {
    /// A client of the API at `api` (`HOST:PORT`, `HOST` for port 7700, a
    /// bare port on 127.0.0.1, or `http://HOST:PORT`), sending `token` as a
    /// bearer token if given.
    pub fn new(api: &str, token: Option<String>) -> Result<Self, CliError> {
        let base = base_url(api).map_err(|why| CliError::BadAddress {
            api: api.to_owned(),
            why,
        })?;
        if let Some(token) = &token
            && (token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()))
        {
            return Err(CliError::BadToken);
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
        // Messages name the address the CLI talks to (`7710` is
        // `127.0.0.1:7710`), not the form it was given in.
        let shown = base.strip_prefix("http://").unwrap_or(&base).to_owned();
        Ok(ApiClient {
            agent: config.new_agent(),
            base,
            api: shown,
            token,
            timeout: REQUEST_TIMEOUT,
        })
    }

    /// The same client, with requests given `timeout` instead of
    /// [`REQUEST_TIMEOUT`].
    #[must_use]
    pub fn with_timeout(self, timeout: Duration) -> Self {
        ApiClient { timeout, ..self }
    }

    /// The address [`ApiClient::new`] resolved its argument to
    /// (`host:port[/prefix]`, e.g. `127.0.0.1:7710` for `7710`).
    pub fn api(&self) -> &str {
        &self.api
    }

    /// GETs `path` and decodes its JSON.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, CliError> {
        let body = self.send(Verb::Get, path)?;
        self.decode(path, &body)
    }

    /// GETs `path` as text, whatever its type (`/metrics`).
    pub fn get_text(&self, path: &str) -> Result<String, CliError> {
        self.send(Verb::Get, path)
    }

    /// POSTs `body` as JSON to `path` and decodes the JSON answer.
    pub fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T, CliError> {
        let answer = self.send(Verb::Post(encode(path, body)?), path)?;
        self.decode(path, &answer)
    }

    /// DELETEs `path` and decodes the JSON answer.
    pub fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, CliError> {
        let body = self.send(Verb::Delete, path)?;
        self.decode(path, &body)
    }

    /// Sends a request and returns the body of a 2xx answer as sent; any
    /// other status is an error carrying the API's message.
    pub fn send(&self, verb: Verb, path: &str) -> Result<String, CliError> {
        let mut response = self.call(verb, path, Some(self.timeout))?;
        response
            .body_mut()
            .with_config()
            .limit(MAX_BODY)
            .read_to_string()
            .map_err(|e| self.failure(path, e))
    }

    /// `body`, the answer to `path`, decoded; a body of another shape is
    /// [`CliError::BadJson`].
    pub fn decode<T: DeserializeOwned>(&self, path: &str, body: &str) -> Result<T, CliError> {
        serde_json::from_str(body).map_err(|e| self.bad_json(path, &e))
    }

    /// Opens `GET /v1/events`: server-sent events, event by event.
    pub fn events(&self) -> Result<sse::Reader, CliError> {
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
        let body = BufReader::new(response.into_body().into_reader());
        Ok(sse::Reader::new(&self.api, body))
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
                secs: self.timeout.as_secs(),
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

    pub(super) fn bad_json(&self, path: &str, error: &serde_json::Error) -> CliError {
        CliError::BadJson {
            api: self.api.clone(),
            path: path.to_owned(),
            detail: error.to_string(),
        }
    }
}

/// `body` as the JSON of a request to `path`.
pub fn encode(path: &str, body: &impl Serialize) -> Result<String, CliError> {
    serde_json::to_string(body).map_err(|e| CliError::Encode {
        path: path.to_owned(),
        detail: e.to_string(),
    })
}

/// `/v1/sessions/<id><rest>`, the id percent-encoded: whatever the user
/// typed stays one path segment.
pub fn session_path(id: &str, rest: &str) -> String {
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

/// `http://host:port[/prefix]` from what the user passed as `--api`
/// (the forms of [`crate::api_addr`], shared with `batond --api`).
fn base_url(api: &str) -> Result<String, String> {
    ApiAddr::to_connect(api).map(|addr| addr.url())
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

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use tokio::time::timeout;

    use super::*;
    use crate::cli::render::members_table;
    use crate::cli::testing::{LIMIT, blocking, closed_port, serve, shared};
    use crate::views::{Member, Status};

    #[test]
    fn api_addresses_become_http_urls() {
        for (api, url) in [
            ("127.0.0.1:7700", "http://127.0.0.1:7700"),
            ("localhost", "http://127.0.0.1:7700"),
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
    fn a_bare_port_means_that_port_on_loopback() {
        for (api, url) in [
            ("7710", "http://127.0.0.1:7710"),
            (" 7710 ", "http://127.0.0.1:7710"),
            ("http://7710", "http://127.0.0.1:7710"),
            ("localhost:7710", "http://127.0.0.1:7710"),
        ] {
            assert_eq!(base_url(api).as_deref(), Ok(url), "{api}");
        }
        // Digits are never sent to DNS as a host name.
        for (bad, why) in [
            ("0", "\"0\" is not a port number (1 to 65535)"),
            ("77100", "\"77100\" is not a port number (1 to 65535)"),
            ("7710:7700", "\"7710\" is not a host name"),
            ("node-b:0", "\"0\" is not a port number"),
        ] {
            let err = base_url(bad).unwrap_err();
            assert!(err.contains(why), "{bad:?}: {err}");
            assert!(err.contains("a port such as 7700 (on 127.0.0.1)"), "{err}");
        }
    }

    #[test]
    fn unreachable_node_message_says_what_to_do() {
        let api = closed_port();
        let err = ApiClient::new(&api, None)
            .unwrap()
            .get::<Status>("/v1/status")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "cannot reach the Baton node API at {api}: connection refused. \
                 Is batond running? Use --api ADDR to point at another node."
            )
        );
        assert_eq!(crate::cli::run(["baton", "--api", &api, "members"]), 1);
    }

    #[test]
    fn a_bare_port_is_named_as_the_loopback_address_it_means() {
        let api = closed_port();
        let port = api.rsplit(':').next().unwrap();
        let client = ApiClient::new(port, None).unwrap();
        assert_eq!(client.api(), format!("127.0.0.1:{port}"));
        let err = client.get::<Status>("/v1/status").unwrap_err();
        assert!(
            err.to_string().starts_with(&format!(
                "cannot reach the Baton node API at 127.0.0.1:{port}:"
            )),
            "{err}"
        );
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
            .get::<Vec<Member>>("/v1/members")
            .unwrap_err();
        server.join().unwrap();
        assert!(matches!(err, CliError::BadJson { .. }), "{err:?}");
        assert!(
            err.to_string()
                .contains("answered /v1/members with bad JSON"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn client_reads_the_api_and_reports_its_errors() {
        let (addr, stop, task) = serve(shared().0, Some("s3cret")).await;
        let api = addr.to_string();

        let (table, err) = blocking(move || {
            let good = ApiClient::new(&api, Some("s3cret".to_owned())).unwrap();
            let members: Vec<Member> = good.get("/v1/members").unwrap();
            let table = members_table(&members, false);
            let err = ApiClient::new(&api, None)
                .unwrap()
                .get::<Vec<Member>>("/v1/members")
                .unwrap_err();
            (table, err)
        })
        .await;
        assert!(
            table
                .lines()
                .any(|l| l.starts_with("charlie ") && l.contains("cccccccc  suspect")),
            "{table}"
        );
        assert!(table.contains("\nalpha (local)  "), "{table}");
        assert!(matches!(err, CliError::Api { status: 401, .. }), "{err:?}");
        assert!(
            err.to_string().contains("Authorization: Bearer <token>"),
            "{err}"
        );

        let _ = stop.send(());
        timeout(LIMIT, task).await.unwrap().unwrap().unwrap();
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
}
