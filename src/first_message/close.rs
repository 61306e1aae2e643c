//! The end of a phase that does not proceed: a closing handshake the client started, and a
//! refusal told in the gateway's own shape.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::auth::Reason;
use crate::credentials::Fingerprint;
use crate::net::Stream;
use crate::relay::{self, Side};
use crate::ws::{self, FrameTracker};

use super::client::ClientInfo;

/// How long the gateway gets to answer a client's close before the sockets are dropped.
const CLOSE_LINGER: Duration = Duration::from_secs(5);

/// The client is refused; [`reject`] tells it so in the gateway's own shape.
pub(crate) struct Rejection {
    pub reason: Reason,
    /// What exactly was wrong, for the log (never contains frame content).
    pub detail: &'static str,
    pub id: Option<Value>,
    pub presented: Option<Fingerprint>,
    /// Tells this token from another (`Presented::key`; 0 without one): the throttle's repeats.
    pub key: u64,
    /// For `token_stale`: the last generation in which the token was valid.
    pub generation: Option<u64>,
    /// Who the `connect` says its client is, when it says.
    pub client: Option<ClientInfo>,
    pub down: FrameTracker,
}

/// Completes a closing handshake started before authentication: the client's close frame
/// (and nothing after it) goes to the gateway, the gateway's answer comes back, then both
/// sockets close. A client that has not authenticated gets only the gateway's close frame
/// (its code and reason), none of the data the gateway may send before it.
pub(crate) async fn pass_close(
    client: &mut Stream,
    upstream: &mut Stream,
    frame: &[u8],
    mut down: FrameTracker,
    bytes_out: u64,
    authenticated: bool,
) -> relay::Outcome {
    let mut up = FrameTracker::default();
    up.observe(frame);
    let first = if down.close().is_some() {
        Side::Upstream
    } else {
        Side::Client
    };
    let mut out = bytes_out;
    let mut error = upstream.write_all(frame).await.err();
    if error.is_none() {
        let mut buf = [0u8; 4096];
        let mut unseen = FrameTracker::default();
        let _ = tokio::time::timeout(CLOSE_LINGER, async {
            loop {
                let n = match upstream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let pass = if authenticated {
                    buf[..n].to_vec()
                } else {
                    unseen.observe(&buf[..n]);
                    match unseen.close() {
                        Some(c) if down.close().is_none() => close_frame_of(c),
                        _ => continue,
                    }
                };
                down.observe(&pass);
                if client.write_all(&pass).await.is_err() {
                    break;
                }
                out += pass.len() as u64;
            }
        })
        .await;
    }
    let _ = upstream.shutdown().await;
    if let Err(e) = client.shutdown().await {
        error.get_or_insert(e);
    }
    let tracker = if first == Side::Client { &up } else { &down };
    relay::Outcome {
        bytes_in: frame.len() as u64,
        bytes_out: out,
        close: tracker.close().cloned().map(|c| (first, c)),
        error,
        ended_by: None,
        in_loop: false,
    }
}

/// A close frame with the code and reason of one seen on the wire (server to client).
pub(super) fn close_frame_of(c: &ws::Close) -> Vec<u8> {
    match c.code {
        Some(code) => ws::close_frame(code, &c.reason),
        None => ws::encode_frame(ws::OP_CLOSE, &[], None),
    }
}

/// Tells the client why, the way the gateway would: an error `res` echoing the request id
/// (when there was one), then a close frame; closes the gateway side cleanly.
pub(crate) async fn reject(client: &mut Stream, upstream: &mut Stream, r: &Rejection) {
    let _ = upstream
        .write_all(&ws::close_frame_masked(1000, "", Some(ws::random_mask())))
        .await;
    let _ = upstream.shutdown().await;
    if !r.down.at_boundary() {
        // The gateway was mid-frame: a frame of ours would corrupt the stream. Cut instead.
        let _ = client.shutdown().await;
        return;
    }
    let mut frames = Vec::new();
    if let Some(id) = &r.id {
        let res = serde_json::json!({
            "type": "res",
            "id": id,
            "ok": false,
            "error": {
                "code": "INVALID_REQUEST",
                "message": r.reason.close_text(),
                "details": { "code": r.reason.detail_code(), "authReason": r.reason.as_str() },
            },
        });
        frames.extend(ws::encode_frame(
            ws::OP_TEXT,
            res.to_string().as_bytes(),
            None,
        ));
    }
    frames.extend(ws::close_frame(
        r.reason.close_code(),
        r.reason.close_text(),
    ));
    ws::close_gracefully(client, &frames).await;
}
