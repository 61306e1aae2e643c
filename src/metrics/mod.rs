//! Prometheus metrics. Every label value is bounded: reasons, sources, outcomes and
//! directions are fixed words, and client names come from the operator's own credential
//! files — never a token, never an IP address.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::OnceLock;

mod sessions;
pub(crate) use sessions::Sessions;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub reason: &'static str,
    pub source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SuccessLabels {
    pub source: &'static str,
    pub client: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    pub direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkerLabels {
    pub worker: u64,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct BuildLabels {
    pub version: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub connections_accepted: Counter,
    /// Accepted by one worker thread and handed to a less loaded one.
    pub connections_rebalanced: Counter,
    /// Tunnels that moved to a worker thread's loop (`splice.worker_loop`).
    pub worker_loop_tunnels: Counter,
    /// Open client connections per worker thread (set at scrape time; with workers >= 2).
    pub worker_connections: Family<WorkerLabels, Gauge>,
    /// Open WebSocket tunnels.
    pub connections_active: Gauge,
    pub connections_closed: Family<OutcomeLabels, Counter>,
    pub auth_failures: Family<FailureLabels, Counter>,
    pub auth_success: Family<SuccessLabels, Counter>,
    pub sessions: std::sync::Arc<Sessions>,
    pub stale_accepted: Counter,
    /// Tunnels the upstream closed with 1008 (policy: the gateway refused the session,
    /// e.g. a token it does not hold) — refusals gatewarden did not catch itself.
    pub upstream_refusals: Counter,
    /// Refusals of a token the same address was refused for already (not counted as
    /// guesses): stale clients.
    pub auth_repeated: Family<ReasonLabels, Counter>,
    pub bytes: Family<DirectionLabels, Counter>,
    pub upstream_connect_errors: Counter,
    pub upstream_timeouts: Counter,
    /// HTTP requests gatewarden answered itself as the client's error (400, 405, 414, 431).
    pub requests_refused: Family<ReasonLabels, Counter>,
    pub upstream_connect_seconds: Histogram,
    pub handshake_seconds: Histogram,
    pub reloads: Family<ResultLabels, Counter>,
    pub credentials_generation: Gauge,
    pub seconds_since_reload: Gauge,
    pub tls_not_after: Gauge,
    /// Handles to the series every connection counts, resolved on first use (so the
    /// exposition still lists only series that happened): `Family::get_or_create` takes a
    /// read lock shared by every worker thread and hashes the labels on each call.
    hot: Hot,
    /// Tells registries apart in per-thread caches (an address could be reused).
    id: u64,
}

/// A resolved `auth_success` handle: registry id, source, client.
type Seen = (u64, &'static str, Box<str>, Counter);

#[derive(Default)]
struct Hot {
    bytes_in: OnceLock<Counter>,
    bytes_out: OnceLock<Counter>,
    normal: OnceLock<Counter>,
    abnormal: OnceLock<Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut r = Registry::with_prefix("gatewarden");
        let m = Metrics {
            connections_accepted: Counter::default(),
            connections_rebalanced: Counter::default(),
            worker_loop_tunnels: Counter::default(),
            worker_connections: Family::default(),
            connections_active: Gauge::default(),
            connections_closed: Family::default(),
            auth_failures: Family::default(),
            auth_success: Family::default(),
            sessions: Default::default(),
            stale_accepted: Counter::default(),
            upstream_refusals: Counter::default(),
            auth_repeated: Family::default(),
            bytes: Family::default(),
            upstream_connect_errors: Counter::default(),
            upstream_timeouts: Counter::default(),
            requests_refused: Family::default(),
            // 0.1 ms to ~6.5 s
            upstream_connect_seconds: Histogram::new(exponential_buckets(0.0001, 3.0, 11)),
            handshake_seconds: Histogram::new(exponential_buckets(0.0001, 3.0, 11)),
            reloads: Family::default(),
            credentials_generation: Gauge::default(),
            seconds_since_reload: Gauge::default(),
            tls_not_after: Gauge::default(),
            registry: Registry::default(),
            hot: Hot::default(),
            id: {
                static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            },
        };
        m.register_tunnels(&mut r);
        m.register_auth(&mut r);
        m.register_upstream_and_files(&mut r);
        let build: Family<BuildLabels, Gauge> = Family::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        r.register("build_info", "Build information", build);
        m.sessions.register(&mut r);
        Metrics { registry: r, ..m }
    }

    /// Connections and tunnels.
    fn register_tunnels(&self, r: &mut Registry) {
        r.register(
            "connections_accepted",
            "TCP connections accepted",
            self.connections_accepted.clone(),
        );
        r.register(
            "connections_rebalanced",
            "TCP connections one worker thread accepted and handed to a less loaded one",
            self.connections_rebalanced.clone(),
        );
        r.register(
            "worker_loop_tunnels",
            "WebSocket tunnels that moved to a worker thread's own relay loop (splice.worker_loop)",
            self.worker_loop_tunnels.clone(),
        );
        r.register(
            "worker_connections",
            "Client connections open on each worker thread (with 2 or more workers)",
            self.worker_connections.clone(),
        );
        r.register(
            "connections_active",
            "WebSocket tunnels open now",
            self.connections_active.clone(),
        );
        r.register(
            "connections_closed",
            "WebSocket tunnels closed, by outcome (normal, abnormal, revoked, drained)",
            self.connections_closed.clone(),
        );
    }

    /// Admission: accepted, refused, repeated, stale.
    fn register_auth(&self, r: &mut Registry) {
        r.register(
            "auth_failures",
            "Refused clients, by reason and token source",
            self.auth_failures.clone(),
        );
        r.register(
            "auth_success",
            "Accepted clients, by token source and client name",
            self.auth_success.clone(),
        );
        r.register(
            "auth_stale_accepted",
            "Clients accepted with a rotated-away token inside the grace period",
            self.stale_accepted.clone(),
        );
        r.register(
            "upstream_refusals",
            "Tunnels the upstream closed with 1008 (the gateway refused the session itself)",
            self.upstream_refusals.clone(),
        );
        r.register(
            "auth_repeated",
            "Refusals of a token the same address was refused for already, in the same credential generation (stale clients; not counted as guesses), by reason",
            self.auth_repeated.clone(),
        );
        r.register(
            "spliced_bytes",
            "Bytes relayed through WebSocket tunnels, by direction",
            self.bytes.clone(),
        );
    }

    /// The upstream, requests, logging, credential files and the certificate.
    fn register_upstream_and_files(&self, r: &mut Registry) {
        r.register(
            "upstream_connect_errors",
            "Failed connections or upgrades to the upstream",
            self.upstream_connect_errors.clone(),
        );
        r.register(
            "upstream_timeouts",
            "Proxied HTTP requests the upstream did not answer within timeouts.upstream_response",
            self.upstream_timeouts.clone(),
        );
        r.register(
            "requests_refused",
            "HTTP requests refused as the client's error (malformed, too large, not allowed), by reason",
            self.requests_refused.clone(),
        );
        r.register(
            "log_lines_dropped",
            "Log lines dropped because stderr did not keep up (logging never blocks serving)",
            crate::logging::lines_dropped(),
        );
        r.register(
            "upstream_connect_seconds",
            "Time to connect to the upstream and get its answer to the upgrade",
            self.upstream_connect_seconds.clone(),
        );
        r.register(
            "handshake_seconds",
            "Time from a client's upgrade request to gatewarden's 101",
            self.handshake_seconds.clone(),
        );
        r.register(
            "credential_reloads",
            "Credential file reloads, by result",
            self.reloads.clone(),
        );
        r.register(
            "credentials_generation",
            "Current credential generation",
            self.credentials_generation.clone(),
        );
        r.register(
            "credentials_seconds_since_reload",
            "Seconds since credentials last changed (or since start)",
            self.seconds_since_reload.clone(),
        );
        r.register(
            "tls_cert_not_after_seconds",
            "Expiry of the serving certificate, Unix time (0 without TLS)",
            self.tls_not_after.clone(),
        );
    }

    pub fn auth_failure(&self, reason: &'static str, source: &'static str) {
        self.auth_failures
            .get_or_create(&FailureLabels { reason, source })
            .inc();
    }

    pub fn auth_success(&self, source: &'static str, client: &str) {
        // Resolved handles per thread, keyed by this registry, the source and the client:
        // no lock, no label hashing, no `String` per accepted client.
        thread_local! {
            static SEEN: std::cell::RefCell<Vec<Seen>> =
                const { std::cell::RefCell::new(Vec::new()) };
        }
        /// Client names are the operator's (bounded); past this many, start over.
        const MAX_SEEN: usize = 256;
        let me = self.id;
        SEEN.with(|seen| {
            let Ok(mut seen) = seen.try_borrow_mut() else {
                self.auth_success_slow(source, client).inc();
                return;
            };
            let hit = seen
                .iter()
                .find(|(m, s, c, _)| *m == me && std::ptr::eq(*s, source) && &**c == client);
            if let Some((_, _, _, counter)) = hit {
                counter.inc();
                return;
            }
            let counter = self.auth_success_slow(source, client);
            counter.inc();
            if seen.len() >= MAX_SEEN {
                seen.clear();
            }
            seen.push((me, source, client.into(), counter));
        });
    }

    fn auth_success_slow(&self, source: &'static str, client: &str) -> Counter {
        self.auth_success
            .get_or_create(&SuccessLabels {
                source,
                client: client.to_string(),
            })
            .clone()
    }

    /// A refusal of a token refused before from the same address.
    pub fn auth_repeated(&self, reason: &'static str) {
        self.auth_repeated
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// A request answered as the client's error.
    pub fn refused(&self, reason: &'static str) {
        self.requests_refused
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    pub fn closed(&self, outcome: &'static str) {
        let hot = match outcome {
            "normal" => &self.hot.normal,
            "abnormal" => &self.hot.abnormal,
            _ => {
                self.connections_closed
                    .get_or_create(&OutcomeLabels { outcome })
                    .inc();
                return;
            }
        };
        hot.get_or_init(|| {
            self.connections_closed
                .get_or_create(&OutcomeLabels { outcome })
                .clone()
        })
        .inc();
    }

    pub fn spliced(&self, bytes_in: u64, bytes_out: u64) {
        self.direction(&self.hot.bytes_in, "client_to_upstream")
            .inc_by(bytes_in);
        self.direction(&self.hot.bytes_out, "upstream_to_client")
            .inc_by(bytes_out);
    }

    fn direction<'a>(&self, cell: &'a OnceLock<Counter>, direction: &'static str) -> &'a Counter {
        cell.get_or_init(|| {
            self.bytes
                .get_or_create(&DirectionLabels { direction })
                .clone()
        })
    }

    pub fn reload(&self, result: &'static str) {
        self.reloads.get_or_create(&ResultLabels { result }).inc();
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line<'a>(text: &'a str, series: &str) -> Option<&'a str> {
        text.lines().find(|l| l.starts_with(series))
    }

    /// The per-thread handles count into their own registry, also for a registry made
    /// after another was dropped (same labels, maybe the same address).
    #[test]
    fn cached_handles_count_in_their_own_registry() {
        for _ in 0..3 {
            let m = Metrics::new();
            let other = Metrics::new();
            for _ in 0..3 {
                m.auth_success("header", "alice");
            }
            m.auth_success("query", "alice");
            other.auth_success("header", "alice");
            m.closed("normal");
            m.closed("normal");
            m.closed("revoked");
            m.spliced(10, 20);
            m.spliced(1, 2);
            let text = m.encode();
            assert_eq!(
                line(
                    &text,
                    "gatewarden_auth_success_total{source=\"header\",client=\"alice\"}"
                ),
                Some("gatewarden_auth_success_total{source=\"header\",client=\"alice\"} 3"),
                "{text}"
            );
            assert!(
                text.contains("{source=\"query\",client=\"alice\"} 1"),
                "{text}"
            );
            assert!(
                text.contains("gatewarden_connections_closed_total{outcome=\"normal\"} 2"),
                "{text}"
            );
            assert!(
                text.contains("gatewarden_connections_closed_total{outcome=\"revoked\"} 1"),
                "{text}"
            );
            assert!(
                !text.contains("outcome=\"abnormal\""),
                "unused series stay out: {text}"
            );
            assert!(
                text.contains("{direction=\"client_to_upstream\"} 11"),
                "{text}"
            );
            assert!(
                text.contains("{direction=\"upstream_to_client\"} 22"),
                "{text}"
            );
            let text = other.encode();
            assert!(
                text.contains("{source=\"header\",client=\"alice\"} 1"),
                "{text}"
            );
        }
    }
}
