//! `batond`: the Baton node of one service cluster. See `batond --help`.

use baton_node::Node;
use baton_node::config::{Config, Flags};
use clap::Parser;

fn main() -> std::process::ExitCode {
    let flags = Flags::parse();
    let config = match Config::load(flags) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("batond: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    baton_node::logging::init(config.log_format);
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
        let mut node = match Node::start(config).await {
            Ok(n) => n,
            Err(e) => {
                eprintln!("batond: {e}");
                return std::process::ExitCode::FAILURE;
            }
        };
        tokio::select! {
            _ = shutdown_signal() => {
                tracing::info!("shutting down: leaving the overlay");
                node.shutdown().await;
            }
            _ = node.wait() => {
                tracing::error!("the node stopped unexpectedly");
                return std::process::ExitCode::FAILURE;
            }
        }
        std::process::ExitCode::SUCCESS
    })
}

/// Resolves on SIGINT or SIGTERM. SIGHUP (`systemctl reload`) must not kill
/// the node without a leave, as its default action would: until batond can
/// reload its configuration, it says so and runs on.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut hangup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return,
                _ = term.recv() => return,
                _ = hangup.recv() => tracing::warn!(
                    "SIGHUP: this batond reloads nothing yet; restart it to apply a new configuration"
                ),
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
