//! The IO of the node's libp2p streams. The protocol `Node` names each
//! stream and decides what goes on it; here one task per stream opens or
//! accepts it, writes the frames the node queues (a 4-byte big-endian
//! length, then the bytes) and reads the peer's through the caps the node
//! chose before a byte was read, reporting each frame and the end.

use std::collections::HashMap;
use std::time::Duration;

use baton_protocol::node::{Protocol, StreamId};
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::{PeerId, StreamProtocol};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// Time allowed to open a stream (dialling included).
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(5);

/// Frames queued towards one stream before it is reset (the node's
/// exchanges are a few frames each; a stream that cannot drain is stuck).
const WRITE_QUEUE: usize = 64;

/// What stream tasks report to the driver.
#[derive(Debug)]
pub enum StreamEvent {
    /// A peer opened a stream: the node decides whether to read it.
    Incoming {
        /// The peer, as authenticated by Noise/TLS.
        peer: PeerId,
        /// Its protocol.
        protocol: Protocol,
        /// The stream.
        stream: libp2p::Stream,
    },
    /// A frame arrived.
    Frame {
        /// The stream.
        id: StreamId,
        /// Its bytes.
        bytes: Vec<u8>,
    },
    /// The stream ended (`None`: the peer finished it cleanly).
    Closed {
        /// The stream.
        id: StreamId,
        /// Why, when it broke or could not be opened.
        error: Option<String>,
    },
}

#[derive(Debug)]
enum WriteOp {
    Frame(Vec<u8>),
    Finish,
}

/// The stream tasks of one node.
pub struct Streams {
    control: libp2p_stream::Control,
    events: mpsc::Sender<StreamEvent>,
    writers: HashMap<StreamId, mpsc::Sender<WriteOp>>,
    tasks: JoinSet<()>,
}

impl std::fmt::Debug for Streams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streams")
            .field("open", &self.writers.len())
            .finish_non_exhaustive()
    }
}

fn protocol_of(p: Protocol) -> StreamProtocol {
    StreamProtocol::new(p.name())
}

impl Streams {
    /// Starts accepting every protocol of the node.
    pub fn new(mut control: libp2p_stream::Control, events: mpsc::Sender<StreamEvent>) -> Self {
        let mut tasks = JoinSet::new();
        for protocol in Protocol::ALL {
            let Ok(mut incoming) = control.accept(protocol_of(protocol)) else {
                tracing::error!(protocol = protocol.name(), "protocol registered twice");
                continue;
            };
            let events = events.clone();
            tasks.spawn(async move {
                while let Some((peer, stream)) = incoming.next().await {
                    let incoming = StreamEvent::Incoming {
                        peer,
                        protocol,
                        stream,
                    };
                    if events.send(incoming).await.is_err() {
                        return;
                    }
                }
            });
        }
        Streams {
            control,
            events,
            writers: HashMap::new(),
            tasks,
        }
    }

    /// Opens a stream the node asked for.
    pub fn open(&mut self, id: StreamId, peer: PeerId, protocol: Protocol, max_frame: usize) {
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        self.writers.insert(id, tx);
        let mut control = self.control.clone();
        let events = self.events.clone();
        self.tasks.spawn(async move {
            let opened = tokio::time::timeout(
                OPEN_TIMEOUT,
                control.open_stream(peer, protocol_of(protocol)),
            )
            .await;
            let stream = match opened {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    let error = Some(format!("cannot open {}: {e}", protocol.name()));
                    let _ = events.send(StreamEvent::Closed { id, error }).await;
                    return;
                }
                Err(_) => {
                    let error = Some(format!("timed out opening {}", protocol.name()));
                    let _ = events.send(StreamEvent::Closed { id, error }).await;
                    return;
                }
            };
            run(stream, id, max_frame, max_frame, rx, events).await;
        });
    }

    /// Serves a stream a peer opened, which the node accepted.
    pub fn accept(&mut self, id: StreamId, stream: libp2p::Stream, first: usize, rest: usize) {
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        self.writers.insert(id, tx);
        let events = self.events.clone();
        self.tasks.spawn(run(stream, id, first, rest, rx, events));
    }

    /// Queues a frame; a stream that cannot take it is reset.
    pub fn frame(&mut self, id: StreamId, bytes: Vec<u8>) {
        self.send(id, WriteOp::Frame(bytes));
    }

    /// Closes the writing half after the queued frames.
    pub fn finish(&mut self, id: StreamId) {
        self.send(id, WriteOp::Finish);
    }

    /// Aborts a stream: its task drops it.
    pub fn reset(&mut self, id: StreamId) {
        self.writers.remove(&id);
    }

    fn send(&mut self, id: StreamId, op: WriteOp) {
        let Some(tx) = self.writers.get(&id) else {
            return;
        };
        if tx.try_send(op).is_err() {
            // Dropping the sender ends the task, which reports the close.
            self.writers.remove(&id);
        }
    }

    /// Forgets a stream the node is done with.
    pub fn closed(&mut self, id: StreamId) {
        self.writers.remove(&id);
    }

    /// Reaps finished tasks; never resolves when there are none.
    pub async fn reap(&mut self) {
        if self.tasks.join_next().await.is_none() {
            std::future::pending::<()>().await;
        }
    }
}

/// One stream's life: frames written as the node queues them, frames read
/// through the caps, until both directions are done (or the node drops its
/// sender, which aborts the stream).
async fn run(
    stream: libp2p::Stream,
    id: StreamId,
    first: usize,
    rest: usize,
    mut ops: mpsc::Receiver<WriteOp>,
    events: mpsc::Sender<StreamEvent>,
) {
    let (mut reader, mut writer) = stream.split();
    let read = async {
        let mut cap = first;
        loop {
            match read_frame(&mut reader, cap).await {
                Ok(Some(bytes)) => {
                    cap = rest;
                    if events.send(StreamEvent::Frame { id, bytes }).await.is_err() {
                        return None;
                    }
                }
                Ok(None) => return Some(None),
                Err(e) => return Some(Some(e.to_string())),
            }
        }
    };
    let write = async {
        while let Some(op) = ops.recv().await {
            match op {
                WriteOp::Frame(bytes) => {
                    if write_frame(&mut writer, &bytes).await.is_err() {
                        return false;
                    }
                }
                WriteOp::Finish => {
                    let _ = writer.close().await;
                    return true;
                }
            }
        }
        // The node dropped the stream: abort it.
        false
    };
    tokio::pin!(read, write);
    let mut written = false;
    let ended = loop {
        tokio::select! {
            end = &mut read => break end,
            done = &mut write, if !written => {
                if !done {
                    return;
                }
                written = true;
            }
        }
    };
    if let Some(error) = ended {
        let _ = events.send(StreamEvent::Closed { id, error }).await;
    }
    // The peer is done; finish what this side still has to write.
    if !written {
        let _ = tokio::time::timeout(OPEN_TIMEOUT, write).await;
    }
}

/// Writes one frame: a 4-byte big-endian length, then the bytes.
pub async fn write_frame<W: futures::AsyncWrite + Unpin>(
    w: &mut W,
    bytes: &[u8],
) -> std::io::Result<()> {
    let len = u32::try_from(bytes.len())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "frame too large"))?;
    w.write_all(&len.to_be_bytes()).await?;
    w.write_all(bytes).await?;
    w.flush().await
}

/// Reads one frame of at most `max` bytes; a longer one is an error before
/// anything is allocated for it. `Ok(None)` at a clean end of stream.
pub async fn read_frame<R: futures::AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
) -> std::io::Result<Option<Vec<u8>>> {
    // The end of the stream is clean only between frames: a length prefix
    // cut short is a broken stream, not an end.
    let mut len = [0u8; 4];
    if r.read(&mut len[..1]).await? == 0 {
        return Ok(None);
    }
    r.read_exact(&mut len[1..]).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds the limit of {max}"),
        ));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).await?;
    Ok(Some(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_only_a_clean_end_is_an_end() {
        let mut buf = Vec::new();
        write_frame(&mut buf, b"hello").await.unwrap();
        let mut r = &buf[..];
        assert_eq!(
            read_frame(&mut r, 16).await.unwrap(),
            Some(b"hello".to_vec())
        );
        assert_eq!(read_frame(&mut r, 16).await.unwrap(), None);
        // Cut inside the length prefix, or inside the frame: an error.
        for cut in [2, 6] {
            let mut r = &buf[..cut];
            assert!(read_frame(&mut r, 16).await.is_err(), "cut at {cut}");
        }
        // Longer than the cap: refused before anything is allocated.
        let mut r = &buf[..];
        assert!(read_frame(&mut r, 4).await.is_err());
    }
}
