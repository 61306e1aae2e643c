//! SIGINT/SIGTERM: the first starts a graceful drain, a second one exits at once.

use tracing::{info, warn};

/// Resolves on the first SIGINT or SIGTERM; arms an immediate exit on the second. The
/// handlers are installed on the call (before the server says it listens), not when the
/// future is first polled: a signal in between would meet the default action and end the
/// process without a drain.
pub(crate) fn shutdown() -> impl std::future::Future<Output = ()> {
    let first = wait_for_signal();
    async move { announce(first.await) }
}

fn announce(name: &'static str) {
    info!(
        signal = %name,
        "[shutdown] signal received; send it again to exit at once"
    );
    let second = wait_for_signal();
    tokio::spawn(async move {
        let name = second.await;
        warn!(signal = %name, "[shutdown] second signal; exiting now");
        crate::logging::flush();
        std::process::exit(130);
    });
}

/// Installs the handlers now; the future resolves on the next SIGTERM or SIGINT.
#[cfg(unix)]
fn wait_for_signal() -> impl std::future::Future<Output = &'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    async move {
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    }
}

#[cfg(not(unix))]
fn wait_for_signal() -> impl std::future::Future<Output = &'static str> {
    async {
        let _ = tokio::signal::ctrl_c().await;
        "ctrl-c"
    }
}
