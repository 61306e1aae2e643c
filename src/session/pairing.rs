//! Paired devices behind gatewarden (`auth.device_tokens = "gateway"`): a connect left for
//! the gateway to judge (a device token, never a token of gatewarden's), and the gateway's
//! answer watched for the device token it hands a device gatewarden authenticated.

use tracing::{info, warn};

use crate::config::TokenSource;
use crate::credentials::{Credential, Fingerprint};
use crate::first_message::{self, Proceed};
use crate::net::Stream;

use crate::gate::audit::Who;
use crate::gate::log::log_closed;
use crate::gate::Proxy;

use super::start::{Opened, Tunnel};

impl Proxy {
    /// A connect forwarded untouched for the gateway to judge: named after the credential
    /// that paired the device where gatewarden saw the pairing, counted, logged.
    pub(super) fn for_the_gateway(&self, t: &Tunnel, p: &Proceed, who: &mut Who) {
        who.by_gateway = true;
        who.device_token = p.connect.device_token;
        if let Some(c) = &p.credential {
            who.client = Some(c.who().to_string());
        }
        self.metrics.sessions.accepted(who.client(), "gateway");
        info!(
            conn = %t.conn,
            remote = %t.remote,
            source = %TokenSource::FirstMessage,
            client = %who.client(),
            client_id = %who.client_id(),
            client_version = %who.client_version(),
            scopes = %who.scopes(),
            authenticated_by = %"gateway",
            "[ws] connected"
        );
        if let Some(stream) = &t.stream {
            stream.admitted();
        }
    }

    /// Sends the connect and passes the gateway's frames on until its answer has passed; a
    /// `hello-ok` carrying a device token makes that token stand for `credential`'s device.
    /// `None` when the tunnel ended here (logged).
    pub(super) async fn learn_device_token(
        &self,
        client: &mut Stream,
        upstream: &mut Stream,
        mut opened: Opened,
        credential: &Credential,
        t: &Tunnel,
    ) -> Option<Opened> {
        if !opened.down.at_boundary() {
            return Some(opened);
        }
        let held = std::mem::take(&mut opened.from_upstream).to_vec();
        let watched = first_message::watch_answer(
            client,
            upstream,
            &opened.to_upstream,
            held,
            &mut opened.down,
            self.auth.first_message_timeout.0,
        )
        .await;
        match watched {
            Ok(answered) => {
                if let Some(token) = answered.device_token {
                    self.paired.learn(&token, credential);
                    info!(
                        conn = %t.conn,
                        client = %credential.who(),
                        device_token = %format!("fp:{}", Fingerprint::of(token.as_bytes())),
                        paired = self.paired.count(),
                        "[auth] the gateway gave this client's device a device token: it stands for the client's credential from now on"
                    );
                }
                opened.to_upstream.clear();
                opened.prior_out += answered.bytes_out;
                Some(opened)
            }
            Err(side) => {
                warn!(conn = %t.conn, by = %side.as_str(), "[ws] went away before the gateway answered the connect");
                let outcome = crate::relay::Outcome {
                    bytes_out: opened.prior_out,
                    ..Default::default()
                };
                log_closed(
                    t.conn,
                    t.remote,
                    t.started,
                    &outcome,
                    &Who::of_credential(Some(credential)),
                );
                None
            }
        }
    }
}
