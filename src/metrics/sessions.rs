//! Sessions per credential name: accepted, and closed by the gateway (with its close code).
//! Names come from the operator's credential files, but a `lines` file can hold thousands:
//! past [`MAX_NAMES`] distinct names, further ones are counted as `other`.

use std::collections::HashSet;
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// Distinct `credential` label values kept; the rest are `other`.
pub(super) const MAX_NAMES: usize = 100;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SessionLabels {
    credential: String,
    authenticated_by: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClosedLabels {
    credential: String,
    code: &'static str,
}

#[derive(Default)]
pub struct Sessions {
    accepted: Family<SessionLabels, Counter>,
    gateway_closed: Family<ClosedLabels, Counter>,
    /// Only touched once per session (not per byte), never by the credential watcher.
    names: Mutex<HashSet<String>>,
}

impl Sessions {
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "sessions",
            "WebSocket sessions accepted, by credential name (at most 100, then `other`) and by who judged the credential (gatewarden, or the gateway for a paired device's token)",
            self.accepted.clone(),
        );
        r.register(
            "sessions_gateway_closed",
            "Accepted sessions the gateway closed, by credential name and the gateway's close code (1008 policy, 4001 rotated secret, 1011, 1012, other)",
            self.gateway_closed.clone(),
        );
    }

    fn label(&self, name: &str) -> String {
        let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        if names.contains(name) {
            return name.to_string();
        }
        if names.len() >= MAX_NAMES {
            return "other".into();
        }
        names.insert(name.to_string());
        name.to_string()
    }

    /// Counted through handles resolved once per thread (as `auth_success` is): no lock,
    /// no label hashing, no `String` per session.
    pub fn accepted(&self, credential: &str, authenticated_by: &'static str) {
        type Handle = (usize, &'static str, Box<str>, Counter);
        thread_local! {
            static SEEN: std::cell::RefCell<Vec<Handle>> =
                const { std::cell::RefCell::new(Vec::new()) };
        }
        let me = self as *const Sessions as usize;
        let slow = || {
            self.accepted
                .get_or_create(&SessionLabels {
                    credential: self.label(credential),
                    authenticated_by,
                })
                .clone()
        };
        SEEN.with(|seen| {
            let Ok(mut seen) = seen.try_borrow_mut() else {
                slow().inc();
                return;
            };
            let hit = seen.iter().find(|(m, by, c, _)| {
                *m == me && std::ptr::eq(*by, authenticated_by) && &**c == credential
            });
            if let Some((.., counter)) = hit {
                counter.inc();
                return;
            }
            let counter = slow();
            counter.inc();
            if seen.len() >= 2 * MAX_NAMES {
                seen.clear();
            }
            seen.push((me, authenticated_by, credential.into(), counter));
        });
    }

    pub fn gateway_closed(&self, credential: &str, code: u16) {
        let code = match code {
            1008 => "1008",
            4001 => "4001",
            1011 => "1011",
            1012 => "1012",
            _ => "other",
        };
        let credential = self.label(credential);
        self.gateway_closed
            .get_or_create(&ClosedLabels { credential, code })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_past_the_cap_are_other() {
        let s = Sessions::default();
        for i in 0..MAX_NAMES + 50 {
            s.accepted(&format!("device-{i}"), "gatewarden");
        }
        s.accepted("device-0", "gatewarden");
        s.gateway_closed("device-149", 4001);
        let mut r = Registry::default();
        s.register(&mut r);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &r).unwrap();
        let series = out
            .lines()
            .filter(|l| l.starts_with("sessions_total{"))
            .count();
        assert_eq!(series, MAX_NAMES + 1, "{out}");
        assert!(
            out.contains(r#"sessions_total{credential="other",authenticated_by="gatewarden"} 50"#)
        );
        assert!(out
            .contains(r#"sessions_total{credential="device-0",authenticated_by="gatewarden"} 2"#));
        assert!(out.contains(r#"sessions_gateway_closed_total{credential="other",code="4001"} 1"#));
    }
}
