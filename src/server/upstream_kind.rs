//! An OpenClaw gateway behind a token gatewarden generated itself: the gateway will refuse
//! every client gatewarden lets through, so that is said at once, not found out per client.
//! The upstream is asked in the background (it may start after gatewarden), until it answers.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::gateway_probe::{probe, Probe};
use crate::upstream::UpstreamClient;

const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(30);
const WAIT: Duration = Duration::from_secs(5);

/// Probes `upstream` until it answers; warns when it is an OpenClaw gateway.
pub(super) async fn watch(
    upstream: Arc<UpstreamClient>,
    generated: PathBuf,
    stop: CancellationToken,
) {
    let mut retry = FIRST_RETRY;
    loop {
        let found = tokio::select! {
            found = probe(&upstream, None, WAIT) => found,
            _ = stop.cancelled() => return,
        };
        match found {
            Probe::OpenClaw(_) => {
                warn!(
                    upstream = %upstream.authority(),
                    path = %generated.display(),
                    "[auth] the upstream is an OpenClaw gateway (it sent connect.challenge), but gatewarden checks clients against a token it generated itself: the gateway will refuse the clients gatewarden lets through; point gatewarden at the gateway's config (OPENCLAW_STATE_DIR, OPENCLAW_CONFIG_PATH, or a [[credentials]] with format = \"json5\"), or set upstream_auth.inject to present the gateway's own token; `gatewarden doctor` asks the gateway"
                );
                return;
            }
            Probe::Unreachable(_) => {}
            _ => {
                info!(upstream = %upstream.authority(), "[auth] the upstream is not an OpenClaw gateway (it did not send connect.challenge): the generated token is gatewarden's alone");
                return;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(retry) => {}
            _ = stop.cancelled() => return,
        }
        retry = (retry * 2).min(MAX_RETRY);
    }
}
