//! Why `baton` (or another user of [`ApiClient`](super::client::ApiClient))
//! failed, each message telling the user what to do next.

use std::io;

/// Why `baton` failed; the message tells the user what to do next.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// No TCP connection to the API.
    #[error(
        "cannot reach the Baton node API at {api}: {reason}. Is batond running? \
         Use --api ADDR to point at another node."
    )]
    Unreachable {
        /// `--api` as given.
        api: String,
        /// What the OS said, e.g. `connection refused`.
        reason: String,
    },
    /// Connected, but no complete answer in time.
    #[error(
        "the Baton node API at {api} did not answer {path} within {secs} s: \
         the node may be overloaded or stuck"
    )]
    TimedOut {
        /// `--api` as given.
        api: String,
        /// The request path.
        path: String,
        /// The time allowed.
        secs: u64,
    },
    /// The API answered with an error message.
    #[error("{message} (HTTP {status} from the Baton node API at {api})")]
    Api {
        /// `--api` as given.
        api: String,
        /// HTTP status.
        status: u16,
        /// The API's `error` message.
        message: String,
    },
    /// An HTTP error without a Baton error body: probably not a Baton node.
    #[error(
        "{api} answered {path} with HTTP {status} and no Baton error message: \
         is --api pointing at a Baton node?"
    )]
    NotBaton {
        /// `--api` as given.
        api: String,
        /// The request path.
        path: String,
        /// HTTP status.
        status: u16,
    },
    /// Something that is not the HTTP this client expects.
    #[error(
        "{api} did not answer as a Baton node API ({detail}): is --api pointing at a Baton node?"
    )]
    NotHttp {
        /// `--api` as given.
        api: String,
        /// What was wrong.
        detail: String,
    },
    /// A body that is not JSON, or not of the expected shape.
    #[error(
        "the Baton node API at {api} answered {path} with bad JSON ({detail}): \
         are batond and baton the same version?"
    )]
    BadJson {
        /// `--api` as given.
        api: String,
        /// The request path.
        path: String,
        /// The parser's complaint.
        detail: String,
    },
    /// The event stream failed mid-way.
    #[error("the event stream from the Baton node API at {api} broke: {detail}")]
    StreamBroken {
        /// `--api` as given.
        api: String,
        /// What happened.
        detail: String,
    },
    /// The event stream stopped carrying even keep-alives.
    #[error(
        "the event stream from the Baton node API at {api} went silent for {secs} s \
         (the node sends a keep-alive every 15 s): the node may be stuck or the network down"
    )]
    StreamSilent {
        /// `--api` as given.
        api: String,
        /// The silence allowed.
        secs: u64,
    },
    /// `--api` cannot be turned into a URL.
    #[error("invalid --api address {api:?}: {why}")]
    BadAddress {
        /// `--api` as given.
        api: String,
        /// What is wrong with it.
        why: String,
    },
    /// The token cannot be sent in a header.
    #[error(
        "the token contains characters that cannot go in an HTTP header: \
         only visible ASCII is allowed"
    )]
    BadToken,
    /// A request body that cannot be written as JSON.
    #[error("cannot write the request to {path} as JSON: {detail}")]
    Encode {
        /// The request path.
        path: String,
        /// The serializer's complaint.
        detail: String,
    },
    /// A file could not be written (`baton man --out-dir`).
    #[error("cannot write {}: {source}", path.display())]
    WriteFile {
        /// The file or directory.
        path: std::path::PathBuf,
        /// Why.
        source: io::Error,
    },
    /// `baton rtt` could not name or place a member.
    #[error("{0}")]
    Rtt(String),
    /// Writing to stdout failed.
    #[error("cannot write the output: {0}")]
    Output(#[source] io::Error),
    /// `watch` could not set up its Ctrl-C handling.
    #[error("cannot watch for Ctrl-C: {0}")]
    Signals(#[source] io::Error),
}
