//! `batond`'s log output: the default filter, the format, and colours
//! (ANSI escapes) only when stderr is a terminal and `NO_COLOR` is not set
//! (<https://no-color.org>), so that files and pipes get plain text.

use std::ffi::OsString;
use std::io::IsTerminal;
use std::sync::OnceLock;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogFormat;

/// The filter without `RUST_LOG`. Kademlia's warnings are about its own
/// bookkeeping (a node alone warns "Failed to trigger bootstrap: No known
/// peers" whenever it starts listening): nothing an operator can act on.
pub const DEFAULT_FILTER: &str = "info,libp2p=warn,libp2p_kad=error,baton_node=info";

type FilterHandle = tracing_subscriber::reload::Handle<EnvFilter, tracing_subscriber::Registry>;

/// The filter of the running subscriber, which SIGHUP replaces.
static FILTER: OnceLock<FilterHandle> = OnceLock::new();

/// The filter to use: `level` (the config's `log_level`), else
/// `RUST_LOG`, else [`DEFAULT_FILTER`].
fn filter(level: Option<&str>) -> EnvFilter {
    level
        .and_then(|l| EnvFilter::builder().parse(l).ok())
        .or_else(|| EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| EnvFilter::new(DEFAULT_FILTER))
}

/// A warning for `RUST_LOG` when it is set but is not a filter: it is then
/// ignored (`log_level` and [`DEFAULT_FILTER`] apply instead), which an
/// operator must hear of rather than find by missing lines. `None` when
/// it is unset or a filter. `level` is the config's `log_level`.
pub fn rust_log_warning(level: Option<&str>) -> Option<String> {
    env_warning(level.is_some(), std::env::var_os("RUST_LOG"))
}

/// [`rust_log_warning`] for `RUST_LOG` set to `value`.
fn env_warning(level_set: bool, value: Option<OsString>) -> Option<String> {
    let value = value?;
    let error = match value.to_str() {
        Some(v) => EnvFilter::builder().parse(v).err()?.to_string(),
        None => "not valid UTF-8".to_string(),
    };
    let instead = if level_set {
        "log_level (--log-level) applies"
    } else {
        "the default filter applies"
    };
    Some(format!(
        "RUST_LOG={:?} is not a log filter ({error}): it is ignored and {instead}; \
         give a filter such as info, debug or info,baton_node=debug",
        value.to_string_lossy()
    ))
}

/// Starts logging to stderr in `format`, filtered by `level` (the config's
/// `log_level`), `RUST_LOG` or [`DEFAULT_FILTER`], in that order.
pub fn init(format: LogFormat, level: Option<&str>) {
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter(level));
    let ansi = colours(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR"),
    );
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let registry = tracing_subscriber::registry().with(filter);
    let set = match format {
        LogFormat::Human => registry.with(fmt).try_init(),
        LogFormat::Json => registry.with(fmt.json()).try_init(),
    };
    if set.is_ok() {
        let _ = FILTER.set(handle);
    }
}

/// Replaces the filter of the logging [`init`] started (SIGHUP): `level`,
/// else `RUST_LOG`, else [`DEFAULT_FILTER`]. Returns the filter now in
/// effect, or `None` when logging was not started by [`init`].
pub fn set_level(level: Option<&str>) -> Option<String> {
    let handle = FILTER.get()?;
    let filter = filter(level);
    let shown = filter.to_string();
    handle.reload(filter).ok()?;
    Some(shown)
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
    fn an_invalid_rust_log_is_named_with_its_error() {
        let w = env_warning(false, Some("bogus[[".into())).expect("a warning");
        assert!(
            w.starts_with("RUST_LOG=\"bogus[[\" is not a log filter ("),
            "{w}"
        );
        let error = EnvFilter::builder()
            .parse("bogus[[")
            .unwrap_err()
            .to_string();
        assert!(w.contains(&error), "{w}");
        assert!(w.contains("the default filter applies"), "{w}");
        let w = env_warning(true, Some("bogus[[".into())).expect("a warning");
        assert!(w.contains("log_level (--log-level) applies"), "{w}");
        // Unset, or a filter: nothing to say.
        assert_eq!(env_warning(false, None), None);
        assert_eq!(
            env_warning(false, Some("info,baton_node=debug".into())),
            None
        );
        assert_eq!(env_warning(false, Some("debug".into())), None);
    }

    #[test]
    fn the_default_filter_parses_and_quiets_kademlia_warnings() {
        let filter = tracing_subscriber::EnvFilter::try_new(DEFAULT_FILTER).unwrap();
        assert!(filter.to_string().contains("libp2p_kad=error"), "{filter}");
    }
}
