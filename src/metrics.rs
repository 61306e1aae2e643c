//! Prometheus metrics. Every label value is bounded: reasons, sources, outcomes and
//! directions are fixed words, and client names come from the operator's own credential
//! files — never a token, never an IP address.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

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
pub struct DirectionLabels {
    pub direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub connections_accepted: Counter,
    /// Open WebSocket tunnels.
    pub connections_active: Gauge,
    pub connections_closed: Family<OutcomeLabels, Counter>,
    pub auth_failures: Family<FailureLabels, Counter>,
    pub auth_success: Family<SuccessLabels, Counter>,
    pub stale_accepted: Counter,
    pub bytes: Family<DirectionLabels, Counter>,
    pub upstream_connect_errors: Counter,
    pub upstream_connect_seconds: Histogram,
    pub handshake_seconds: Histogram,
    pub reloads: Family<ResultLabels, Counter>,
    pub credentials_generation: Gauge,
    pub seconds_since_reload: Gauge,
    pub tls_not_after: Gauge,
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
            connections_active: Gauge::default(),
            connections_closed: Family::default(),
            auth_failures: Family::default(),
            auth_success: Family::default(),
            stale_accepted: Counter::default(),
            bytes: Family::default(),
            upstream_connect_errors: Counter::default(),
            // 0.1 ms to ~6.5 s
            upstream_connect_seconds: Histogram::new(exponential_buckets(0.0001, 3.0, 11)),
            handshake_seconds: Histogram::new(exponential_buckets(0.0001, 3.0, 11)),
            reloads: Family::default(),
            credentials_generation: Gauge::default(),
            seconds_since_reload: Gauge::default(),
            tls_not_after: Gauge::default(),
            registry: Registry::default(),
        };
        r.register(
            "connections_accepted",
            "TCP connections accepted",
            m.connections_accepted.clone(),
        );
        r.register(
            "connections_active",
            "WebSocket tunnels open now",
            m.connections_active.clone(),
        );
        r.register(
            "connections_closed",
            "WebSocket tunnels closed, by outcome (normal, abnormal, revoked, drained)",
            m.connections_closed.clone(),
        );
        r.register(
            "auth_failures",
            "Refused clients, by reason and token source",
            m.auth_failures.clone(),
        );
        r.register(
            "auth_success",
            "Accepted clients, by token source and client name",
            m.auth_success.clone(),
        );
        r.register(
            "auth_stale_accepted",
            "Clients accepted with a rotated-away token inside the grace period",
            m.stale_accepted.clone(),
        );
        r.register(
            "spliced_bytes",
            "Bytes relayed through WebSocket tunnels, by direction",
            m.bytes.clone(),
        );
        r.register(
            "upstream_connect_errors",
            "Failed connections or upgrades to the upstream",
            m.upstream_connect_errors.clone(),
        );
        r.register(
            "upstream_connect_seconds",
            "Time to connect to the upstream and get its answer to the upgrade",
            m.upstream_connect_seconds.clone(),
        );
        r.register(
            "handshake_seconds",
            "Time from a client's upgrade request to gatewarden's 101",
            m.handshake_seconds.clone(),
        );
        r.register(
            "credential_reloads",
            "Credential file reloads, by result",
            m.reloads.clone(),
        );
        r.register(
            "credentials_generation",
            "Current credential generation",
            m.credentials_generation.clone(),
        );
        r.register(
            "credentials_seconds_since_reload",
            "Seconds since credentials last changed (or since start)",
            m.seconds_since_reload.clone(),
        );
        r.register(
            "tls_cert_not_after_seconds",
            "Expiry of the serving certificate, Unix time (0 without TLS)",
            m.tls_not_after.clone(),
        );
        let build: Family<BuildLabels, Gauge> = Family::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        r.register("build_info", "Build information", build);
        Metrics { registry: r, ..m }
    }

    pub fn auth_failure(&self, reason: &'static str, source: &'static str) {
        self.auth_failures
            .get_or_create(&FailureLabels { reason, source })
            .inc();
    }

    pub fn auth_success(&self, source: &'static str, client: &str) {
        self.auth_success
            .get_or_create(&SuccessLabels {
                source,
                client: client.to_string(),
            })
            .inc();
    }

    pub fn closed(&self, outcome: &'static str) {
        self.connections_closed
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    pub fn spliced(&self, bytes_in: u64, bytes_out: u64) {
        self.bytes
            .get_or_create(&DirectionLabels {
                direction: "client_to_upstream",
            })
            .inc_by(bytes_in);
        self.bytes
            .get_or_create(&DirectionLabels {
                direction: "upstream_to_client",
            })
            .inc_by(bytes_out);
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
