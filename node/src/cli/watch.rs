//! `baton watch`: follows the node's event stream, printing a line per event
//! (or its JSON), until Ctrl-C or the end of the stream.

use std::io::{self, Write};

use jiff::tz::TimeZone;

use super::render::event_line;
use super::sse::Received;
use super::{ApiClient, CliError};

/// Follows the event stream, printing a line per event, until Ctrl-C or the
/// end of the stream.
pub(super) fn watch(client: ApiClient, json: bool, wide: bool) -> Result<(), CliError> {
    // Looked up once, not per event.
    let tz = TimeZone::system();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CliError::Signals)?;
    let api = client.api().to_owned();
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
pub(super) fn follow(
    client: &ApiClient,
    json: bool,
    wide: bool,
    tz: &TimeZone,
    out: &mut impl Write,
) -> Result<(), CliError> {
    for frame in client.events()? {
        let frame = frame?;
        let text = if json {
            frame.data
        } else {
            let received =
                Received::decode(&frame).map_err(|e| client.bad_json("/v1/events", &e))?;
            event_line(&received, wide, tz)
        };
        writeln!(out, "{text}")
            .and_then(|()| out.flush())
            .map_err(CliError::Output)?;
    }
    let _ = writeln!(io::stderr(), "the node closed the event stream");
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::timeout;

    use super::*;
    use crate::cli::testing::{LIMIT, SharedOut, serve, shared};
    use crate::views::Event;

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
        shared.publish(Event {
            kind: "member".to_owned(),
            at,
            at_ms,
            id: "12D3KooWCharlie000cccccccc".to_owned(),
            name: "charlie".to_owned(),
            state: "dead".to_owned(),
            previous: Some("suspect".to_owned()),
            incarnation: 12,
            reason: None,
            ..Default::default()
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
