//! `batond`: the Baton node of one service cluster. See `batond --help`.

use baton_node::Node;
use baton_node::config::{Config, Flags};
use clap::Parser;

fn main() -> std::process::ExitCode {
    let flags = Flags::parse();
    let config = match Config::load(flags.clone()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("batond: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    if flags.check_config {
        return check_config(&config);
    }
    baton_node::logging::init(config.log_format, config.log_level.as_deref());
    if let Some(warning) = baton_node::logging::rust_log_warning(config.log_level.as_deref()) {
        tracing::warn!("{warning}");
    }
    // Clients, peers and sessions each hold descriptors: the API's
    // connection cap, not the soft limit (often 1024), must run out first.
    match baton_node::api::raise_open_files() {
        Ok(limit) if limit < 4096 => tracing::warn!(
            limit,
            "the open-file limit is low for a node; raise the hard limit (LimitNOFILE= under systemd)"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("batond: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        // Before the start, which can take a moment: a SIGHUP meanwhile
        // must not kill the node (its default action).
        let mut signals = match Signals::new() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM and SIGHUP; only Ctrl-C stops the node");
                Signals::default()
            }
        };
        let mut node = match Node::start(config).await {
            Ok(n) => n,
            Err(e) => {
                eprintln!("batond: {e}");
                return std::process::ExitCode::FAILURE;
            }
        };
        // Freed heap back to the kernel, or admissions' connection buffers
        // stay in RSS for good (node/src/memory.rs).
        tokio::spawn(baton_node::memory::trim_periodically());
        loop {
            tokio::select! {
                signal = signals.next() => match signal {
                    Signal::Stop => {
                        tracing::info!("shutting down: leaving the overlay");
                        node.shutdown().await;
                        return std::process::ExitCode::SUCCESS;
                    }
                    Signal::Reload => {
                        // The same flags as at start: a flag still wins
                        // over the file.
                        tracing::info!("SIGHUP: reloading the configuration");
                        match Config::load(flags.clone()) {
                            Ok(config) => {
                                let _ = node.reload(config).await;
                            }
                            Err(e) => {
                                node.reload_failed(e);
                            }
                        }
                    }
                },
                _ = node.wait() => {
                    tracing::error!("the node stopped unexpectedly");
                    return std::process::ExitCode::FAILURE;
                }
            }
        }
    })
}

/// `--check-config`: the configuration was loaded and checked as a start
/// does; the rest of a start's checks that have no side effect follow.
fn check_config(config: &Config) -> std::process::ExitCode {
    match baton_node::node::check(config) {
        Ok(summary) => {
            if let Some(warning) =
                baton_node::logging::rust_log_warning(config.log_level.as_deref())
            {
                eprintln!("batond: warning: {warning}");
            }
            for program in config.hooks.missing_programs() {
                eprintln!(
                    "batond: warning: [hooks] command {program:?} is not found (not executable, \
                     not in PATH)"
                );
            }
            println!("batond: {summary}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("batond: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

/// What a signal asks of the node.
enum Signal {
    /// SIGINT or SIGTERM: leave and stop.
    Stop,
    /// SIGHUP (`systemctl reload`): reload the configuration, never exit.
    Reload,
}

/// SIGINT, SIGTERM and SIGHUP. SIGHUP's default action would kill the
/// node without a leave: it is caught from the start.
#[derive(Default)]
struct Signals {
    #[cfg(unix)]
    unix: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    fn new() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Signals {
                unix: Some((
                    signal(SignalKind::terminate())?,
                    signal(SignalKind::hangup())?,
                )),
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    async fn next(&mut self) -> Signal {
        #[cfg(unix)]
        if let Some((term, hangup)) = &mut self.unix {
            return tokio::select! {
                _ = tokio::signal::ctrl_c() => Signal::Stop,
                _ = term.recv() => Signal::Stop,
                _ = hangup.recv() => Signal::Reload,
            };
        }
        let _ = tokio::signal::ctrl_c().await;
        Signal::Stop
    }
}
