//! Reading request bodies: declared JSON, small, and checked field by field
//! against the session map's limits, so that a bad request is answered 400
//! with the field at fault rather than reaching the driver.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use baton_protocol::map::{
    MAX_CLIENT_BYTES, MAX_PARAM_KEY_BYTES, MAX_PARAM_VALUE_BYTES, MAX_PARAMS, MAX_SERVICE_CHARS,
};
use serde_json::{Map, Value};

use super::error::quoted;
use super::{ApiError, MAX_BODY_BYTES};
use crate::views::{OpenRequest, Report};

/// The largest jitter or RTT a report may carry, in milliseconds (an hour):
/// anything larger is a client bug, and the driver turns these into
/// `Duration`s.
pub const MAX_REPORT_MS: f64 = 3_600_000.0;

/// The JSON of a request body. The body must be declared JSON: a web page
/// cannot send that header to another origin without the browser asking this
/// API first (CORS preflight), which it does not answer, so a page the
/// operator visits cannot open or close sessions.
pub(super) fn json_body(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Value, ApiError> {
    let declared_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
    if !declared_json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the body as JSON with the header 'Content-Type: application/json' \
             (curl: --json '{...}')",
        ));
    }
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request body is larger than {MAX_BODY_BYTES} bytes"),
            )
        } else {
            ApiError::bad_request(format!("cannot read the request body: {}", e.body_text()))
        }
    })?;
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))
}

/// What a JSON value is, for messages: "a string", "null"...
fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The fields of a JSON object body that may only have the fields `allowed`.
fn object(value: Value, allowed: &[&str], example: &str) -> Result<Map<String, Value>, ApiError> {
    let Value::Object(fields) = value else {
        return Err(ApiError::bad_request(format!(
            "the body must be a JSON object such as {example}, not {}",
            json_kind(&value)
        )));
    };
    if let Some(unknown) = fields.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(ApiError::bad_request(format!(
            "unknown field {}: the fields are {}",
            quoted(unknown),
            allowed.join(", ")
        )));
    }
    Ok(fields)
}

/// A required field: absent is an error, and so is null.
fn required<'a>(
    fields: &'a Map<String, Value>,
    name: &str,
    example: &str,
) -> Result<&'a Value, ApiError> {
    fields.get(name).ok_or_else(|| {
        ApiError::bad_request(format!("missing field \"{name}\", such as {example}"))
    })
}

fn string_field(
    fields: &Map<String, Value>,
    name: &str,
    example: &str,
) -> Result<String, ApiError> {
    match required(fields, name, example)? {
        Value::String(s) => Ok(s.clone()),
        other => Err(ApiError::bad_request(format!(
            "field \"{name}\" must be a string such as {example}, not {}",
            json_kind(other)
        ))),
    }
}

fn number_field(fields: &Map<String, Value>, name: &str, example: &str) -> Result<f64, ApiError> {
    let value = required(fields, name, example)?;
    match value.as_f64() {
        Some(n) => Ok(n),
        None => Err(ApiError::bad_request(format!(
            "field \"{name}\" must be a number such as {example}, not {}",
            json_kind(value)
        ))),
    }
}

/// A duration in milliseconds, from 0 to [`MAX_REPORT_MS`].
fn millis_field(fields: &Map<String, Value>, name: &str, example: &str) -> Result<f64, ApiError> {
    let ms = number_field(fields, name, example)?;
    if (0.0..=MAX_REPORT_MS).contains(&ms) {
        Ok(ms)
    } else {
        // As written: 1e300 rather than its 301 digits.
        Err(ApiError::bad_request(format!(
            "field \"{name}\" is {}: it must be from 0 to {MAX_REPORT_MS} milliseconds",
            fields[name]
        )))
    }
}

const OPEN_EXAMPLE: &str =
    r#"{"service": "rtp-audio", "client": "127.0.0.1:5004", "params": {"source": "tone"}}"#;

/// The body of `POST /v1/sessions`, checked: the fields and the limits of
/// the session map.
pub(super) fn open(body: Value) -> Result<OpenRequest, ApiError> {
    let fields = object(body, &["service", "client", "params"], OPEN_EXAMPLE)?;
    let service = string_field(&fields, "service", "\"rtp-audio\"")?;
    let chars = service.chars().count();
    if chars == 0 || chars > MAX_SERVICE_CHARS {
        return Err(ApiError::bad_request(format!(
            "field \"service\" must be 1 to {MAX_SERVICE_CHARS} characters, such as \"rtp-audio\""
        )));
    }
    let client = string_field(&fields, "client", "\"127.0.0.1:5004\"")?;
    if client.is_empty() || client.len() > MAX_CLIENT_BYTES {
        return Err(ApiError::bad_request(format!(
            "field \"client\" must be 1 to {MAX_CLIENT_BYTES} bytes, such as \"127.0.0.1:5004\""
        )));
    }
    let params = match fields.get("params") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(Value::Object(given)) => params(given)?,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "field \"params\" must be an object of strings such as {{\"source\": \"tone\"}}, \
                     not {}",
                json_kind(other)
            )));
        }
    };
    Ok(OpenRequest {
        service,
        client,
        params,
    })
}

fn params(params: &Map<String, Value>) -> Result<BTreeMap<String, String>, ApiError> {
    if params.len() > MAX_PARAMS {
        return Err(ApiError::bad_request(format!(
            "field \"params\" has {} parameters, at most {MAX_PARAMS} are allowed",
            params.len()
        )));
    }
    let mut out = BTreeMap::new();
    for (key, value) in params {
        if key.is_empty() || key.len() > MAX_PARAM_KEY_BYTES {
            return Err(ApiError::bad_request(format!(
                "parameter name {} in \"params\" must be 1 to {MAX_PARAM_KEY_BYTES} bytes",
                quoted(key)
            )));
        }
        let Value::String(value) = value else {
            return Err(ApiError::bad_request(format!(
                "parameter {} in \"params\" must be a string, not {}: write numbers \
                     and booleans in quotes, such as \"20\"",
                quoted(key),
                json_kind(value)
            )));
        };
        if value.len() > MAX_PARAM_VALUE_BYTES {
            return Err(ApiError::bad_request(format!(
                "parameter {} in \"params\" is {} bytes, at most {MAX_PARAM_VALUE_BYTES} \
                     are allowed",
                quoted(key),
                value.len()
            )));
        }
        out.insert(key.clone(), value.clone());
    }
    Ok(out)
}

/// The body of `POST /v1/sessions/{id}/report`, checked.
pub(super) fn report(body: Value) -> Result<Report, ApiError> {
    const EXAMPLE: &str = r#"{"loss": 0.02, "jitter_ms": 4.0, "rtt_ms": 30.0, "packets": 500}"#;
    let fields = object(body, &["loss", "jitter_ms", "rtt_ms", "packets"], EXAMPLE)?;
    let loss = number_field(&fields, "loss", "0.02")?;
    if !(0.0..=1.0).contains(&loss) {
        return Err(ApiError::bad_request(format!(
            "field \"loss\" is {}: it is the fraction of packets lost, from 0 to 1 \
             (0.02 is 2%)",
            fields["loss"]
        )));
    }
    let jitter_ms = millis_field(&fields, "jitter_ms", "4.0")?;
    let rtt_ms = millis_field(&fields, "rtt_ms", "30.0")?;
    let packets = match fields.get("packets") {
        None | Some(Value::Null) => 0,
        Some(value) => value.as_u64().ok_or_else(|| {
            ApiError::bad_request(format!(
                "field \"packets\" must be a whole number of packets, 0 or more, not {}",
                match value {
                    Value::Number(n) => n.to_string(),
                    other => json_kind(other).to_owned(),
                }
            ))
        })?,
    };
    Ok(Report {
        loss,
        jitter_ms,
        rtt_ms,
        packets,
    })
}

/// Fuzzing entry point: `bytes` as the body of each request that has one,
/// through the same checks as the handlers (JSON, then the fields). Every
/// refusal is a 4xx naming what is wrong.
pub fn check_bodies(bytes: &[u8]) {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    let body = Ok(Bytes::copy_from_slice(bytes));
    let Ok(value) = json_body(&headers, body) else {
        return;
    };
    for result in [open(value.clone()).map(|_| ()), report(value).map(|_| ())] {
        if let Err(e) = result {
            assert!(e.status.is_client_error(), "{}: {}", e.status, e.message);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Map, Value, json};

    use super::*;
    use crate::api::testing::{Server, post_json, send, shared_with_driver};
    use baton_protocol::map::MAX_CLIENT_BYTES;

    #[tokio::test]
    async fn bad_open_bodies_are_refused_before_the_driver_naming_the_field() {
        let (shared, _) = shared_with_driver();
        let server = Server::start(shared.clone(), None).await;
        let long = "x".repeat(MAX_CLIENT_BYTES + 1);
        let many: Map<String, Value> = (0..=MAX_PARAMS)
            .map(|i| (format!("k{i}"), json!("v")))
            .collect();
        let cases = [
            (r#"{"service": "rtp-audio","#.to_owned(), "not valid JSON"),
            ("[1, 2]".to_owned(), "must be a JSON object such as"),
            (
                r#"{"client": "127.0.0.1:5004"}"#.to_owned(),
                "missing field \"service\"",
            ),
            (
                r#"{"service": "rtp-audio"}"#.to_owned(),
                "missing field \"client\"",
            ),
            (
                r#"{"service": "rtp-audio", "client": "c", "codec": "pcmu"}"#.to_owned(),
                "unknown field \"codec\": the fields are service, client, params",
            ),
            (
                r#"{"service": 7, "client": "c"}"#.to_owned(),
                "field \"service\" must be a string such as \"rtp-audio\", not a number",
            ),
            (
                r#"{"service": "", "client": "c"}"#.to_owned(),
                "field \"service\" must be 1 to 32 characters",
            ),
            (
                format!(r#"{{"service": "rtp-audio", "client": "{long}"}}"#),
                "field \"client\" must be 1 to 128 bytes",
            ),
            (
                r#"{"service": "rtp-audio", "client": null}"#.to_owned(),
                "field \"client\" must be a string such as \"127.0.0.1:5004\", not null",
            ),
            (
                r#"{"service": "rtp-audio", "client": "c", "params": ["a"]}"#.to_owned(),
                "field \"params\" must be an object of strings",
            ),
            (
                r#"{"service": "rtp-audio", "client": "c", "params": {"ptime": 20}}"#.to_owned(),
                "parameter \"ptime\" in \"params\" must be a string, not a number",
            ),
            (
                r#"{"service": "rtp-audio", "client": "c", "params": {"": "x"}}"#.to_owned(),
                "parameter name \"\" in \"params\" must be 1 to 64 bytes",
            ),
            (
                json!({"service": "rtp-audio", "client": "c", "params": many}).to_string(),
                "field \"params\" has 33 parameters, at most 32",
            ),
        ];
        for (body, expected) in cases {
            let reply = post_json(server.addr, "/v1/sessions", &body).await;
            assert_eq!(reply.status, 400, "{body}");
            let message = reply.error();
            assert!(message.contains(expected), "{body}: {message}");
        }
        assert_eq!(shared.sessions.len(), 2, "the driver opened a session");
        server.stop().await;
    }

    #[tokio::test]
    async fn bodies_must_be_declared_json_and_small() {
        let (shared, _) = shared_with_driver();
        let server = Server::start(shared.clone(), None).await;
        let body = br#"{"service": "rtp-audio", "client": "127.0.0.1:5004"}"#.to_vec();
        // What a web page can send to another origin without asking first.
        for content_type in [
            None,
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
        ] {
            let reply = send(
                server.addr,
                "POST",
                "/v1/sessions",
                None,
                content_type.map(|c| (c, body.clone())),
            )
            .await;
            assert_eq!(reply.status, 415, "{content_type:?}");
            assert!(
                reply.error().contains("Content-Type: application/json"),
                "{}",
                reply.error()
            );
        }
        let huge = format!(
            r#"{{"service": "rtp-audio", "client": "c", "params": {{"pad": "{}"}}}}"#,
            "x".repeat(MAX_BODY_BYTES)
        );
        let reply = post_json(server.addr, "/v1/sessions", &huge).await;
        assert_eq!(reply.status, 413);
        assert!(
            reply.error().contains("larger than 65536 bytes"),
            "{}",
            reply.error()
        );
        let reply = post_json(server.addr, "/v1/sessions/s-bravo/report", &huge).await;
        assert_eq!(reply.status, 413);
        assert_eq!(shared.sessions.len(), 2, "the driver opened a session");
        server.stop().await;
    }

    #[tokio::test]
    async fn bad_reports_are_400_naming_the_field() {
        let (shared, reports) = shared_with_driver();
        let server = Server::start(shared, None).await;
        for (body, expected) in [
            (r#"{"jitter_ms": 1, "rtt_ms": 1}"#, "missing field \"loss\""),
            (
                r#"{"loss": 1.5, "jitter_ms": 1, "rtt_ms": 1}"#,
                "field \"loss\" is 1.5: it is the fraction of packets lost, from 0 to 1",
            ),
            (
                r#"{"loss": -0.1, "jitter_ms": 1, "rtt_ms": 1}"#,
                "field \"loss\" is -0.1",
            ),
            (
                r#"{"loss": "5%", "jitter_ms": 1, "rtt_ms": 1}"#,
                "field \"loss\" must be a number such as 0.02, not a string",
            ),
            (
                r#"{"loss": 0, "jitter_ms": -1, "rtt_ms": 1}"#,
                "field \"jitter_ms\" is -1: it must be from 0 to 3600000 milliseconds",
            ),
            (
                r#"{"loss": 0, "jitter_ms": 1, "rtt_ms": 1e300}"#,
                "field \"rtt_ms\" is 1e+300: it must be",
            ),
            (r#"{"loss": 0, "jitter_ms": 1}"#, "missing field \"rtt_ms\""),
            (
                r#"{"loss": 0, "jitter_ms": 1, "rtt_ms": 1, "packets": -3}"#,
                "field \"packets\" must be a whole number of packets, 0 or more, not -3",
            ),
            (
                r#"{"loss": 0, "jitter_ms": 1, "rtt_ms": 1, "packets": 1.5}"#,
                "not 1.5",
            ),
            (
                r#"{"loss": 0, "jitter_ms": 1, "rtt_ms": 1, "mos": 4}"#,
                "unknown field \"mos\": the fields are loss, jitter_ms, rtt_ms, packets",
            ),
            (
                r#"{"loss": 0, "jitter_ms": 1, "rtt_ms": 1e999}"#,
                "not valid JSON",
            ),
        ] {
            let reply = post_json(server.addr, "/v1/sessions/s-bravo/report", body).await;
            assert_eq!(reply.status, 400, "{body}");
            let message = reply.error();
            assert!(message.contains(expected), "{body}: {message}");
        }
        assert!(reports.lock().unwrap().is_empty());
        server.stop().await;
    }
}
