//! `batond`'s log output: the default filter, the format, and colours
//! (ANSI escapes) only when stderr is a terminal and `NO_COLOR` is not set
//! (<https://no-color.org>), so that files and pipes get plain text.

use std::ffi::OsString;
use std::io::IsTerminal;

use crate::config::LogFormat;

/// The filter without `RUST_LOG`. Kademlia's warnings are about its own
/// bookkeeping (a node alone warns "Failed to trigger bootstrap: No known
/// peers" whenever it starts listening): nothing an operator can act on.
pub const DEFAULT_FILTER: &str = "info,libp2p=warn,libp2p_kad=error,baton_node=info";

/// Starts logging to stderr in `format`, filtered by `RUST_LOG` or
/// [`DEFAULT_FILTER`].
pub fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_FILTER));
    let ansi = colours(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR"),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Whether to colour: on a terminal, unless `NO_COLOR` is set to anything
/// but the empty string.
fn colours(terminal: bool, no_color: Option<OsString>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_only_on_a_terminal_without_no_color() {
        assert!(colours(true, None));
        assert!(colours(true, Some("".into())));
        assert!(!colours(true, Some("1".into())));
        assert!(!colours(false, None));
        assert!(!colours(false, Some("".into())));
    }

    #[test]
    fn the_default_filter_parses_and_quiets_kademlia_warnings() {
        let filter = tracing_subscriber::EnvFilter::try_new(DEFAULT_FILTER).unwrap();
        assert!(filter.to_string().contains("libp2p_kad=error"), "{filter}");
    }
}
