//! The web view: one page at `/ui/` (`/` leads there) that shows the overlay
//! at a glance, from the API's own JSON views and event stream. Its files
//! are in `web/`, built into the binary; the page loads nothing from
//! anywhere else, and its Content-Security-Policy forbids it to.
//!
//! It is served by the API's router, behind the same `Host`/`Origin` guard
//! and the same tokens. A browser cannot be told to add `Authorization` to
//! a page load or to an `EventSource`, so with a token configured the page
//! is opened once with the token (the login form, `POST /ui/login`, or
//! `/ui/?token=...`) and the node answers with a cookie that opens reads
//! (`GET`, `HEAD`) only. The cookie holds a digest of the token, not the
//! token, is `HttpOnly` and `SameSite=Strict`, and lasts until the browser
//! closes; see the `auth` module.

use axum::extract::{Query, Request};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use sha2::{Digest, Sha256};

use super::AppState;

const INDEX: &str = include_str!("web/index.html");
const APP_JS: &str = include_str!("web/app.js");
const APP_CSS: &str = include_str!("web/app.css");
const ICON: &str = include_str!("web/icon.svg");

/// The page's policy: its own scripts, styles, images and API, nothing
/// inline, nothing from elsewhere, no framing.
pub const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                            img-src 'self'; connect-src 'self'; base-uri 'none'; \
                            form-action 'self'; frame-ancestors 'none'";

/// The login page's policy: no script, no style, a form to this node.
const LOGIN_CSP: &str =
    "default-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The web view's routes, to be wrapped by the guard and the tokens.
pub(super) fn routes(app: Router<AppState>) -> Router<AppState> {
    app.route("/", get(page))
        .route("/ui", get(page))
        .route("/ui/", get(page))
        .route(
            "/ui/app.js",
            get(|| asset("text/javascript; charset=utf-8", APP_JS)),
        )
        .route(
            "/ui/app.css",
            get(|| asset("text/css; charset=utf-8", APP_CSS)),
        )
        .route("/ui/icon.svg", get(|| asset("image/svg+xml", ICON)))
}

/// Whether `path` is where a browser lands: the page, or a way to it.
pub(super) fn is_page(path: &str) -> bool {
    matches!(path, "/" | "/ui" | "/ui/")
}

/// Set by the token check on a page request whose `?token=` it accepted:
/// the cookie to give the browser.
#[derive(Debug, Clone)]
pub(super) struct Grant(pub(super) String);

async fn page(uri: Uri, headers: HeaderMap, grant: Option<Extension<Grant>>) -> Response {
    if let Some(Extension(Grant(value))) = grant {
        // The token leaves the address bar; the cookie stays.
        return to_page(Some(set_cookie(&headers, &value)));
    }
    if uri.path() != "/ui/" || query_token(&uri).is_some() {
        return to_page(None);
    }
    let mut response = respond(StatusCode::OK, "text/html; charset=utf-8", INDEX);
    set_page_headers(response.headers_mut(), PAGE_CSP);
    response
}

async fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = respond(StatusCode::OK, content_type, body);
    set_page_headers(response.headers_mut(), PAGE_CSP);
    response
}

fn respond(status: StatusCode, content_type: &'static str, body: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body.into(),
    )
        .into_response()
}

/// The headers of every answer of the web view.
fn set_page_headers(headers: &mut HeaderMap, csp: &'static str) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(csp),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // The files change with the binary; the page asks the views itself.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
}

/// 303 to `/ui/`, setting `cookie` if any.
pub(super) fn to_page(cookie: Option<HeaderValue>) -> Response {
    let mut response = (
        StatusCode::SEE_OTHER,
        [(header::LOCATION, HeaderValue::from_static("/ui/"))],
    )
        .into_response();
    if let Some(cookie) = cookie {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response.headers_mut().insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// The `?token=` of a page address, percent-decoded.
pub(super) fn query_token(uri: &Uri) -> Option<String> {
    let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(uri).ok()?;
    pairs
        .into_iter()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v)
}

/// What the browser keeps for `token`: a digest, so that the cookie cannot
/// be used as the token itself (which may open writes).
pub(super) fn cookie_value(token: &str) -> String {
    let digest = Sha256::new()
        .chain_update(b"baton web view cookie\n")
        .chain_update(token.as_bytes())
        .finalize();
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The cookie's name: cookies are kept per host, not per port, and two
/// nodes on one machine may have different tokens.
fn cookie_name(headers: &HeaderMap) -> String {
    let port = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.rsplit_once(':'))
        .map(|(_, port)| port)
        .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    match port {
        Some(port) => format!("baton_view_{port}"),
        None => "baton_view".to_owned(),
    }
}

/// The `Set-Cookie` that logs a browser in with the cookie `value`.
pub(super) fn set_cookie(headers: &HeaderMap, value: &str) -> HeaderValue {
    let cookie = format!(
        "{}={value}; Path=/; HttpOnly; SameSite=Strict",
        cookie_name(headers)
    );
    // The name is digits and letters, the value hex.
    HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static("baton_view=x"))
}

/// The web view's cookie in a request, if it carries one.
pub(super) fn cookie(request: &Request) -> Option<&str> {
    let name = cookie_name(request.headers());
    request
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// 401 (or `status`) with a form that asks for the token; `why` says what
/// went wrong.
pub(super) fn login_page(status: StatusCode, why: &str) -> Response {
    let body = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <title>Baton: token needed</title></head>\n<body>\n\
         <h1>Baton</h1>\n<p id=\"why\">{}</p>\n\
         <form method=\"post\" action=\"/ui/login\">\n\
         <label>API token (api_token or api_read_token): \
         <input type=\"password\" name=\"token\" autocomplete=\"current-password\" autofocus></label>\n\
         <button type=\"submit\">Open the web view</button>\n</form>\n\
         <p>The node answers with a cookie that opens the read-only views until the browser \
         closes. See docs/operations.md, \"The web view\".</p>\n</body></html>\n",
        escape(why)
    );
    let mut response = respond(status, "text/html; charset=utf-8", body);
    set_page_headers(response.headers_mut(), LOGIN_CSP);
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn escape(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '<' => "&lt;".to_owned(),
            '>' => "&gt;".to_owned(),
            '&' => "&amp;".to_owned(),
            '"' => "&quot;".to_owned(),
            c => c.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::api::Access;
    use crate::api::testing::{Server, raw, shared};

    /// The status, headers (lowercase names) and body of a raw answer.
    struct Answer {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    }

    impl Answer {
        fn header(&self, name: &str) -> &str {
            self.headers
                .iter()
                .find(|(k, _)| k == name)
                .map_or("", |(_, v)| v.as_str())
        }
    }

    /// `method path` with `headers` (Host is added unless given) and
    /// `body`, on a connection of its own.
    async fn call(
        addr: SocketAddr,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Answer {
        let mut text = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            text.push_str(&format!("Host: {addr}\r\n"));
        }
        for (k, v) in headers {
            text.push_str(&format!("{k}: {v}\r\n"));
        }
        if !body.is_empty() {
            text.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        text.push_str("\r\n");
        text.push_str(body);
        let answer = raw(addr, &text).await;
        let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status line in {answer:?}"));
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        Answer {
            status,
            headers,
            body: body.to_owned(),
        }
    }

    async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Answer {
        call(addr, "GET", path, headers, "").await
    }

    /// The `name=value` of a `Set-Cookie` answer.
    fn cookie_of(answer: &Answer) -> String {
        let set = answer.header("set-cookie");
        assert!(
            set.contains("; Path=/; HttpOnly; SameSite=Strict"),
            "{set:?}"
        );
        set.split(';').next().unwrap().to_owned()
    }

    #[tokio::test]
    async fn the_page_and_its_files_are_served_with_their_types_and_the_csp() {
        let server = Server::start(shared(), None).await;
        let addr = server.addr;
        let page = get(addr, "/ui/", &[]).await;
        assert_eq!(page.status, 200);
        assert_eq!(page.header("content-type"), "text/html; charset=utf-8");
        assert_eq!(page.header("content-security-policy"), PAGE_CSP);
        assert_eq!(page.header("x-content-type-options"), "nosniff");
        assert_eq!(page.header("x-frame-options"), "DENY");
        assert!(
            page.body
                .contains(r#"<script src="/ui/app.js" defer></script>"#),
            "{}",
            page.body
        );
        for (path, content_type, text) in [
            (
                "/ui/app.js",
                "text/javascript; charset=utf-8",
                "EventSource",
            ),
            ("/ui/app.css", "text/css; charset=utf-8", "#map"),
            ("/ui/icon.svg", "image/svg+xml", "<svg"),
        ] {
            let file = get(addr, path, &[]).await;
            assert_eq!(file.status, 200, "{path}");
            assert_eq!(file.header("content-type"), content_type, "{path}");
            assert_eq!(file.header("content-security-policy"), PAGE_CSP, "{path}");
            assert!(file.body.contains(text), "{path}");
        }
        for path in ["/", "/ui", "/ui/?token=anything"] {
            let there = get(addr, path, &[]).await;
            assert_eq!(there.status, 303, "{path}");
            assert_eq!(there.header("location"), "/ui/", "{path}");
            assert_eq!(there.header("set-cookie"), "", "no token, no cookie");
        }
        server.stop().await;
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere_and_runs_no_inline_code() {
        // The CSP would block them; this says so before a browser does.
        for (file, text) in [
            ("index.html", INDEX),
            ("app.js", APP_JS),
            ("app.css", APP_CSS),
        ] {
            let without_svg_namespace = text.replace("http://www.w3.org/2000/svg", "");
            for external in ["http://", "https://", "//cdn", "@import", "url("] {
                assert!(
                    !without_svg_namespace.contains(external),
                    "{file} refers to {external}"
                );
            }
        }
        for inline in [
            "<script>",
            "<style",
            " style=",
            " onclick=",
            " onload=",
            "javascript:",
        ] {
            assert!(!INDEX.contains(inline), "index.html has {inline}");
        }
        // Data from other nodes (names) goes in as text, never as HTML.
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            assert!(!APP_JS.contains(sink), "app.js uses {sink}");
        }
    }

    #[test]
    fn the_page_listens_to_and_shows_every_event_kind() {
        // EventSource hears only the names it listens to: a kind left out
        // of the list would never reach the page's event log.
        let listened = APP_JS
            .lines()
            .find(|l| l.contains("for (const kind of ["))
            .expect("the list of event names the page listens to");
        for kind in ["member", "session", "refuted", "reload", "lagged"] {
            assert!(
                listened.contains(&format!("\"{kind}\"")),
                "{kind}: {listened}"
            );
            assert!(
                APP_JS.contains(&format!("kind === \"{kind}\"")),
                "the page does not render {kind} events"
            );
        }
    }

    #[tokio::test]
    async fn the_page_needs_the_token_and_gives_a_read_only_cookie() {
        let access = Access {
            token: Some("s3cret".into()),
            read_token: Some("look".into()),
            ..Access::default()
        };
        let server = Server::start_access(shared(), access).await;
        let addr = server.addr;

        // Without a token: the login form, as a page, and JSON elsewhere.
        for path in ["/", "/ui", "/ui/"] {
            let login = get(addr, path, &[]).await;
            assert_eq!(login.status, 401, "{path}");
            assert_eq!(login.header("content-type"), "text/html; charset=utf-8");
            assert_eq!(
                login.header("content-security-policy"),
                "default-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
            );
            assert!(
                login
                    .body
                    .contains(r#"<form method="post" action="/ui/login">"#),
                "{}",
                login.body
            );
            assert!(!login.body.contains("app.js"), "no page before the token");
        }
        for path in ["/ui/app.js", "/ui/app.css", "/v1/members", "/v1/events"] {
            let refused = get(addr, path, &[]).await;
            assert_eq!(refused.status, 401, "{path}");
            assert!(
                refused
                    .header("content-type")
                    .starts_with("application/json")
            );
        }
        let wrong = get(addr, "/ui/?token=s3cre", &[]).await;
        assert_eq!(wrong.status, 401);
        assert!(wrong.body.contains("not valid"), "{}", wrong.body);

        // ?token= gives the cookie and leaves the address bar.
        let opened = get(addr, "/ui/?token=s3cret", &[]).await;
        assert_eq!(opened.status, 303);
        assert_eq!(opened.header("location"), "/ui/");
        let cookie = cookie_of(&opened);
        let port = addr.port();
        assert!(
            cookie.starts_with(&format!("baton_view_{port}=")),
            "{cookie}"
        );
        let value = cookie.split_once('=').unwrap().1.to_owned();
        assert!(!value.contains("s3cret"), "the cookie is not the token");
        for path in [
            "/ui/",
            "/ui/app.js",
            "/v1/members",
            "/v1/sessions",
            "/metrics",
        ] {
            let read = get(addr, path, &[("Cookie", &format!("other=1; {cookie}"))]).await;
            assert_eq!(read.status, 200, "{path} with the cookie");
        }
        // The cookie opens reads only, and is no token.
        let open = r#"{"service":"rtp-audio","client":"127.0.0.1:5004"}"#;
        let write = call(
            addr,
            "POST",
            "/v1/sessions",
            &[("Cookie", &cookie), ("Content-Type", "application/json")],
            open,
        )
        .await;
        assert_eq!(write.status, 401);
        let bearer = format!("Bearer {value}");
        let as_token = get(addr, "/v1/members", &[("Authorization", &bearer)]).await;
        assert_eq!(as_token.status, 401);
        // Another node's cookie (another port) or a stale one opens nothing.
        let other_port = format!("baton_view_1={value}");
        assert_eq!(
            get(addr, "/v1/members", &[("Cookie", &other_port)])
                .await
                .status,
            401
        );
        let stale = format!("baton_view_{port}=00{}", &value[2..]);
        let refused = get(addr, "/v1/members", &[("Cookie", &stale)]).await;
        assert_eq!(refused.status, 401);
        assert!(
            refused.body.contains("log in again at /ui/"),
            "{}",
            refused.body
        );
        let page = get(addr, "/ui/", &[("Cookie", &stale)]).await;
        assert_eq!(page.status, 401);
        assert!(page.body.contains("no longer valid"), "{}", page.body);

        // The login form: the read token logs in too, to a cookie of its own.
        let form = [("Content-Type", "application/x-www-form-urlencoded")];
        let login = call(addr, "POST", "/ui/login", &form, "token=look").await;
        assert_eq!(login.status, 303, "{}", login.body);
        assert_eq!(login.header("location"), "/ui/");
        let read_cookie = cookie_of(&login);
        assert_ne!(read_cookie, cookie);
        let read = get(addr, "/v1/status", &[("Cookie", &read_cookie)]).await;
        assert_eq!(read.status, 200);
        let bad = call(addr, "POST", "/ui/login", &form, "token=nope").await;
        assert_eq!(bad.status, 401);
        assert!(bad.body.contains("not valid"), "{}", bad.body);
        assert_eq!(bad.header("set-cookie"), "");
        let garbled = call(addr, "POST", "/ui/login", &[], "token=look").await;
        assert_eq!(garbled.status, 400);
        // The page with the full token as a header, as curl would.
        let curl = get(addr, "/ui/", &[("Authorization", "Bearer s3cret")]).await;
        assert_eq!(curl.status, 200);
        server.stop().await;
    }

    #[tokio::test]
    async fn the_host_and_origin_checks_guard_the_page_and_the_login() {
        let server = Server::start(shared(), Some("s3cret")).await;
        let addr = server.addr;
        let own = format!("http://{addr}");
        let cookie = cookie_of(&get(addr, "/ui/?token=s3cret", &[]).await);
        // A page that rebinds its name to this address gets nothing.
        for path in ["/ui/", "/ui/?token=s3cret", "/ui/app.js", "/"] {
            let rebound = get(
                addr,
                path,
                &[("Host", "evil.example:7700"), ("Cookie", &cookie)],
            )
            .await;
            assert_eq!(rebound.status, 403, "{path}");
            assert!(rebound.body.contains("not this node's name"), "{path}");
        }
        let form = ("Content-Type", "application/x-www-form-urlencoded");
        let rebound = call(
            addr,
            "POST",
            "/ui/login",
            &[("Host", "evil.example"), form],
            "token=s3cret",
        )
        .await;
        assert_eq!(rebound.status, 403);
        // Another site may not log a browser in, nor read with its cookie.
        let cross = call(
            addr,
            "POST",
            "/ui/login",
            &[("Origin", "http://evil.example"), form],
            "token=s3cret",
        )
        .await;
        assert_eq!(cross.status, 403);
        assert_eq!(cross.header("set-cookie"), "");
        let cross = get(
            addr,
            "/v1/members",
            &[("Origin", "http://127.0.0.1:9"), ("Cookie", &cookie)],
        )
        .await;
        assert_eq!(cross.status, 403);
        // The page's own requests carry its origin, and pass.
        let own_login = call(
            addr,
            "POST",
            "/ui/login",
            &[("Origin", &own), form],
            "token=s3cret",
        )
        .await;
        assert_eq!(own_login.status, 303);
        let own_read = get(
            addr,
            "/v1/members",
            &[("Origin", &own), ("Cookie", &cookie)],
        )
        .await;
        assert_eq!(own_read.status, 200);
        server.stop().await;
    }
}
