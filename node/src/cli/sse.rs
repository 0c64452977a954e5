//! Reading `GET /v1/events`: a parser of the `text/event-stream` format, a
//! blocking reader that yields whole events with a cap on their size, and
//! the decoding of their data into [`crate::views`] types.

use std::io::{self, BufRead, Read};

use super::client::STREAM_SILENCE;
use super::error::CliError;
use crate::views::{Event, Lagged};

/// The largest event a server may make this process buffer.
pub const MAX_EVENT: usize = 1 << 20;

/// One server-sent event as framed on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The `event:` field, `message` if none.
    pub name: String,
    /// The `data:` lines, joined by newlines.
    pub data: String,
}

/// The `text/event-stream` format, fed line by line.
#[derive(Debug, Default)]
pub struct Parser {
    name: String,
    data: String,
    has_data: bool,
}

impl Parser {
    /// Takes one line (with or without its line break); returns the event
    /// that a blank line completes.
    pub fn push(&mut self, line: &str) -> Option<Frame> {
        let line = line.strip_suffix('\n').unwrap_or(line);
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            let name = std::mem::take(&mut self.name);
            let data = std::mem::take(&mut self.data);
            if !std::mem::take(&mut self.has_data) {
                return None;
            }
            let name = if name.is_empty() {
                "message".to_owned()
            } else {
                name
            };
            return Some(Frame { name, data });
        }
        let (field, value) = match line.split_once(':') {
            // A comment: the API's keep-alives.
            Some(("", _)) => return None,
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => value.clone_into(&mut self.name),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            _ => {}
        }
        None
    }

    /// Bytes of the event being assembled.
    pub fn pending(&self) -> usize {
        self.data.len() + self.name.len()
    }
}

/// The events of a stream, read as they arrive (blocking), until it ends or
/// fails. After an error it yields nothing more.
pub struct Reader {
    stream: Box<dyn BufRead + Send>,
    parser: Parser,
    line: String,
    /// The API's address, for messages.
    api: String,
    done: bool,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("api", &self.api)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl Reader {
    /// Events of `stream`, the event stream of the API at `api`.
    pub fn new(api: &str, stream: impl BufRead + Send + 'static) -> Self {
        Reader {
            stream: Box::new(stream),
            parser: Parser::default(),
            line: String::new(),
            api: api.to_owned(),
            done: false,
        }
    }

    fn next_frame(&mut self) -> Result<Option<Frame>, CliError> {
        loop {
            self.line.clear();
            let read = (&mut self.stream)
                .take(MAX_EVENT as u64)
                .read_line(&mut self.line)
                .map_err(|e| self.stream_error(&e))?;
            if read == 0 {
                return Ok(None);
            }
            let cut = read == MAX_EVENT && !self.line.ends_with('\n');
            if cut || self.parser.pending() > MAX_EVENT {
                return Err(CliError::StreamBroken {
                    api: self.api.clone(),
                    detail: format!("an event is larger than {MAX_EVENT} bytes"),
                });
            }
            if let Some(frame) = self.parser.push(&self.line) {
                return Ok(Some(frame));
            }
        }
    }

    fn stream_error(&self, error: &io::Error) -> CliError {
        let inner = error
            .get_ref()
            .and_then(|e| e.downcast_ref::<ureq::Error>());
        if error.kind() == io::ErrorKind::TimedOut || matches!(inner, Some(ureq::Error::Timeout(_)))
        {
            return CliError::StreamSilent {
                api: self.api.clone(),
                secs: STREAM_SILENCE.as_secs(),
            };
        }
        CliError::StreamBroken {
            api: self.api.clone(),
            detail: error.to_string(),
        }
    }
}

impl Iterator for Reader {
    type Item = Result<Frame, CliError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let next = self.next_frame().transpose();
        self.done = !matches!(next, Some(Ok(_)));
        next
    }
}

/// What an event of `GET /v1/events` carries.
#[derive(Debug, Clone, PartialEq)]
pub enum Received {
    /// A member, refutation or session event.
    Event(Event),
    /// This subscriber fell behind.
    Lagged(Lagged),
}

impl Received {
    /// The data of `frame`, by its name; an event without a `kind` takes
    /// the frame's name.
    pub fn decode(frame: &Frame) -> Result<Self, serde_json::Error> {
        if frame.name == Lagged::KIND {
            return serde_json::from_str(&frame.data).map(Received::Lagged);
        }
        let mut event: Event = serde_json::from_str(&frame.data)?;
        if event.kind.is_empty() {
            event.kind.clone_from(&frame.name);
        }
        Ok(Received::Event(event))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_parser_assembles_events_and_skips_comments() {
        let mut parser = Parser::default();
        let mut events = Vec::new();
        for line in [
            ":\n",
            "\n",
            "event: member\r\n",
            "data: {\"a\":1}\n",
            "\n",
            "data:x\n",
            "data: y\n",
            "id: 3\n",
            "\n",
        ] {
            events.extend(parser.push(line));
        }
        assert_eq!(
            events,
            [
                Frame {
                    name: "member".to_owned(),
                    data: "{\"a\":1}".to_owned()
                },
                Frame {
                    name: "message".to_owned(),
                    data: "x\ny".to_owned()
                },
            ]
        );
    }

    #[test]
    fn reader_yields_events_until_the_stream_ends() {
        let stream = ": keep-alive\n\nevent: member\ndata: {\"kind\":\"member\",\"id\":\"p\",\
                      \"state\":\"dead\"}\n\nevent: lagged\ndata: {\"kind\":\"lagged\",\
                      \"missed\":3}\n\n";
        let frames: Vec<Frame> = Reader::new("a", stream.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
        let received: Vec<Received> = frames
            .iter()
            .map(|f| Received::decode(f).unwrap())
            .collect();
        let Received::Event(event) = &received[0] else {
            panic!("{received:?}");
        };
        assert_eq!((event.id.as_str(), event.state.as_str()), ("p", "dead"));
        assert_eq!(received[1], Received::Lagged(Lagged::new(3)));
    }

    #[test]
    fn an_event_larger_than_the_cap_breaks_the_stream() {
        let huge = format!("data: {}\n\n", "x".repeat(MAX_EVENT));
        let mut reader = Reader::new("a", std::io::Cursor::new(huge.into_bytes()));
        let err = reader.next().unwrap().unwrap_err();
        assert!(err.to_string().contains("larger than"), "{err}");
        assert!(reader.next().is_none());
    }

    #[test]
    fn an_event_without_a_kind_takes_the_frames_name() {
        let frame = Frame {
            name: "refuted".to_owned(),
            data: "{}".to_owned(),
        };
        let Ok(Received::Event(event)) = Received::decode(&frame) else {
            panic!();
        };
        assert_eq!(event.kind, "refuted");
    }
}
