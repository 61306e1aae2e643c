//! SIGINT/SIGTERM: the first starts a graceful drain, a second one exits at once.

use tracing::{info, warn};

/// Resolves on the first SIGINT or SIGTERM; arms an immediate exit on the second.
pub async fn shutdown() {
    let name = wait_for_signal().await;
    info!(
        signal = %name,
        "[shutdown] signal received; send it again to exit at once"
    );
    tokio::spawn(async {
        let name = wait_for_signal().await;
        warn!(signal = %name, "[shutdown] second signal; exiting now");
        crate::logging::flush();
        std::process::exit(130);
    });
}

#[cfg(unix)]
async fn wait_for_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() -> &'static str {
    let _ = tokio::signal::ctrl_c().await;
    "ctrl-c"
}
