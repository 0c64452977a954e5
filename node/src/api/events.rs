//! `GET /v1/events`: the event stream of [`Shared`] as server-sent events,
//! one per event, named after its kind; a subscriber that falls behind is
//! told how many it missed, and every stream ends when the server shuts down.
//!
//! [`Shared`]: crate::state::Shared

use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use super::AppState;
use crate::views::Lagged;

/// Interval of the SSE keep-alive comments, so that proxies and clients can
/// tell a quiet stream from a dead one.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

pub(super) async fn events(
    State(st): State<AppState>,
) -> Sse<impl Stream<Item = Result<Event, axum::Error>>> {
    let stream = BroadcastStream::new(st.shared.events.subscribe()).map(|item| match item {
        Ok(event) => Event::default()
            .event(sse_name(&event.kind))
            .json_data(&event),
        Err(BroadcastStreamRecvError::Lagged(missed)) => Event::default()
            .event(Lagged::KIND)
            .json_data(Lagged::new(missed)),
    });
    let closing = st.closing;
    let stream = stream.take_until(async move {
        match closing {
            // An error means the server is gone: closing too.
            Some(mut closing) => drop(closing.wait_for(|closing| *closing).await),
            None => std::future::pending().await,
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}

/// An SSE event name: a line break would end the field (and make axum panic).
fn sse_name(kind: &str) -> String {
    kind.chars().filter(|c| !matches!(c, '\r' | '\n')).collect()
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use serde_json::{Value, json};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio::time::timeout;

    use super::*;
    use crate::api::testing::{LIMIT, Server, shared};
    use crate::state::{Shared, wall_clock};

    fn event(id: &str, state: &str) -> crate::views::Event {
        let (at, at_ms) = wall_clock();
        crate::views::Event {
            kind: "member".to_owned(),
            at,
            at_ms,
            id: id.to_owned(),
            name: "bravo".to_owned(),
            state: state.to_owned(),
            previous: Some("alive".to_owned()),
            incarnation: 1,
            reason: None,
            ..Default::default()
        }
    }

    /// Sends `GET /v1/events` on a raw connection and waits until the
    /// handler has subscribed.
    async fn open_events(addr: SocketAddr, shared: &Shared) -> TcpStream {
        let subscribers = shared.events.receiver_count();
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(
                b"GET /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n",
            )
            .await
            .unwrap();
        timeout(LIMIT, async {
            while shared.events.receiver_count() == subscribers {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the event handler never subscribed");
        stream
    }

    /// Reads until `buf` holds a complete `data:` line; returns the SSE
    /// event name before it and the line's JSON.
    async fn next_event(stream: &mut TcpStream, buf: &mut String) -> (String, Value) {
        timeout(LIMIT, async {
            loop {
                if let Some(start) = buf.find("\ndata: ")
                    && let Some(len) = buf[start + 7..].find('\n')
                {
                    let data = buf[start + 7..start + 7 + len].to_owned();
                    let name = buf[..start]
                        .rsplit_once("event: ")
                        .map(|(_, name)| name.to_owned())
                        .unwrap_or_default();
                    buf.drain(..start + 7 + len);
                    return (name, serde_json::from_str(&data).unwrap());
                }
                let mut chunk = [0u8; 4096];
                let n = stream.read(&mut chunk).await.unwrap();
                assert!(n > 0, "the stream ended; received:\n{buf}");
                buf.push_str(&String::from_utf8_lossy(&chunk[..n]));
            }
        })
        .await
        .expect("no event arrived")
    }

    #[tokio::test]
    async fn events_stream_delivers_published_events_and_ends_at_shutdown() {
        let shared = shared();
        let server = Server::start(shared.clone(), None).await;
        let mut stream = open_events(server.addr, &shared).await;
        let mut buf = String::new();

        let sent = event("12D3KooWBravo", "suspect");
        shared.publish(sent.clone());
        let (name, data) = next_event(&mut stream, &mut buf).await;
        assert_eq!(name, "member");
        assert_eq!(data, serde_json::to_value(&sent).unwrap());

        // Graceful shutdown must not wait forever for the open stream.
        server.stop().await;
        let rest = timeout(LIMIT, async {
            let mut rest = Vec::new();
            let _ = stream.read_to_end(&mut rest).await;
            rest
        })
        .await
        .expect("the event stream stayed open after shutdown");
        assert!(!String::from_utf8_lossy(&rest).contains("data:"));
    }

    #[tokio::test]
    async fn lagging_subscriber_is_told_how_many_events_it_missed() {
        let shared = shared();
        let server = Server::start(shared.clone(), None).await;
        let mut stream = open_events(server.addr, &shared).await;
        let mut buf = String::new();

        // This test runs on one thread: the server cannot drain the channel
        // while the loop runs, so the subscriber falls behind.
        let overflow = 10;
        for i in 0..crate::state::EVENT_BUFFER + overflow {
            let mut e = event("12D3KooWBravo", "suspect");
            e.incarnation = u32::try_from(i).unwrap();
            shared.publish(e);
        }
        let (name, data) = next_event(&mut stream, &mut buf).await;
        assert_eq!(name, "lagged");
        assert_eq!(data, json!({"kind": "lagged", "missed": overflow}));
        // Then it goes on with the oldest event still buffered.
        let (name, data) = next_event(&mut stream, &mut buf).await;
        assert_eq!(name, "member");
        assert_eq!(data["incarnation"], overflow);
        server.stop().await;
    }

    #[test]
    fn sse_names_cannot_break_the_stream() {
        assert_eq!(sse_name("member\r\nevil"), "memberevil");
    }
}
