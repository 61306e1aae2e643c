//! Device tokens the gateway issued through gatewarden (`hello-ok.auth.deviceToken`), with
//! `auth.device_tokens = "gateway"`. A paired device presents its device token later in
//! place of its gatewarden token (openclaw-node sends it as `auth.token`): gatewarden knows
//! it by its SHA-256 only, as the device of the credential that paired it, and forwards
//! such a connect untouched for the gateway to judge (the gateway alone can tell whether
//! the device token is still good: rotated, revoked). Removing the pairing credential ends
//! its devices' tokens at gatewarden too.
//!
//! In memory, bounded: a gatewarden restart forgets them, and the device is refused once;
//! its client drops the device token and reconnects with its gatewarden token (openclaw-node
//! does), which pairs it again.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use super::{digest, Credential, Credentials, Presented};

/// Device tokens remembered; past it the oldest are forgotten.
pub(super) const MAX_DEVICE_TOKENS: usize = 10_000;

#[derive(Default)]
pub(crate) struct PairedDevices {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Device token digest → the credential that paired its device (no secret kept).
    by_digest: HashMap<[u8; 32], Credential>,
    order: VecDeque<[u8; 32]>,
}

impl PairedDevices {
    /// Remembers `token`, issued to a client `credential` authenticated.
    pub(crate) fn learn(&self, token: &str, credential: &Credential) {
        let d = digest(token.as_bytes());
        let mut paired = credential.clone();
        paired.secret = None;
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.by_digest.insert(d, paired).is_none() {
            inner.order.push_back(d);
        }
        while inner.order.len() > MAX_DEVICE_TOKENS {
            if let Some(old) = inner.order.pop_front() {
                inner.by_digest.remove(&old);
            }
        }
    }

    /// The credential whose device `presented` is a token of, while that credential is
    /// still current in `creds`.
    pub(crate) fn paired(&self, presented: &Presented, creds: &Credentials) -> Option<Credential> {
        let c = {
            let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            inner.by_digest.get(&presented.digest)?.clone()
        };
        creds.entries().iter().any(|e| e.same(&c)).then_some(c)
    }

    pub(crate) fn count(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .order
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_token_stands_for_its_pairing_credential_while_that_is_current() {
        let src: std::sync::Arc<std::path::Path> = std::path::Path::new("/c").into();
        let mut phone = Credential::new(b"phone-token", src.clone());
        phone.client = Some("phone".into());
        let store = PairedDevices::default();
        store.learn("dt-1", &phone);
        let now = Credentials::new(1, vec![phone.clone()]);
        let found = store.paired(&Presented::new(b"dt-1"), &now).unwrap();
        assert_eq!(found.who(), "phone");
        assert!(store.paired(&Presented::new(b"dt-2"), &now).is_none());
        let later = Credentials::new(2, vec![Credential::new(b"other", src)]);
        assert!(store.paired(&Presented::new(b"dt-1"), &later).is_none());
        for i in 0..MAX_DEVICE_TOKENS + 5 {
            store.learn(&format!("t{i}"), &phone);
        }
        assert_eq!(store.count(), MAX_DEVICE_TOKENS);
        assert!(
            store.paired(&Presented::new(b"dt-1"), &now).is_none(),
            "oldest forgotten"
        );
    }
}
