//! `GET /metrics`: the node's [`Status`] and the HTTP API's request counts in the Prometheus
//! text format.
//!
//! Gauges are set from the node's status when they are scraped, so a scrape always shows the
//! status of that instant; counters and the latency histogram are kept as requests finish.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use raft_core::Role;
use raft_core::node::Status;
use raft_net::InboundStats;
use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock};

/// Reads the Raft transport's inbound counters.
type TransportStatsFn = Box<dyn Fn() -> InboundStats + Send + Sync>;

/// Labels of a request count.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    /// `put`, `delete`, `cas`, `get`, `cluster`.
    op: &'static str,
    /// `ok`, or the `error` field of the answer (`not_leader`, `timeout`, ...).
    outcome: &'static str,
}

/// Labels of a refused request's count.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    /// `401` (no token, or an unknown one) or `403` (a token with too little privilege).
    code: &'static str,
}

/// Labels of a failed TLS handshake's count.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandshakeLabels {
    /// `plaintext`, `timeout`, `unknown_ca`, `expired`, ...: see `https.rs`.
    cause: &'static str,
}

/// Labels of a certificate reload's count.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    /// `ok` or `failed`.
    outcome: &'static str,
}

/// Labels of a per-peer gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabels {
    peer: String,
}

/// The node's metrics.
pub struct Metrics {
    registry: Mutex<Registry>,
    requests: Family<RequestLabels, Counter>,
    auth_refusals: Family<RefusalLabels, Counter>,
    handshake_failures: Family<HandshakeLabels, Counter>,
    peer_refusals: Family<HandshakeLabels, Counter>,
    /// The transport's refusal counts by cause as last read, and where to read them.
    peer_refusals_seen: Mutex<BTreeMap<&'static str, u64>>,
    transport: OnceLock<TransportStatsFn>,
    certificate_reloads: Family<ReloadLabels, Counter>,
    proposal_seconds: Histogram,
    role: Family<RoleLabels, Gauge>,
    term: Gauge,
    leader: Gauge,
    commit_index: Gauge,
    applied_index: Gauge,
    last_log_index: Gauge,
    snapshot_index: Gauge,
    lease_remaining_seconds: Gauge<f64, AtomicU64>,
    peer_lag_entries: Family<PeerLabels, Gauge>,
    peer_lag_seconds: Family<PeerLabels, Gauge<f64, AtomicU64>>,
    peer_in_sync: Family<PeerLabels, Gauge>,
    elections: Counter,
    failovers: Counter,
    /// The highest term and the latest failover's term counted so far.
    seen: Mutex<(u64, u64)>,
}

/// Labels of the role gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoleLabels {
    role: String,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("raft_kv");
        let metrics = Metrics {
            registry: Mutex::new(Registry::default()),
            requests: Family::default(),
            auth_refusals: Family::default(),
            handshake_failures: Family::default(),
            peer_refusals: Family::default(),
            peer_refusals_seen: Mutex::new(BTreeMap::new()),
            transport: OnceLock::new(),
            certificate_reloads: Family::default(),
            // 50 µs to ~6.6 s, past the default request timeout.
            proposal_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 18)),
            role: Family::default(),
            term: Gauge::default(),
            leader: Gauge::default(),
            commit_index: Gauge::default(),
            applied_index: Gauge::default(),
            last_log_index: Gauge::default(),
            snapshot_index: Gauge::default(),
            lease_remaining_seconds: Gauge::default(),
            peer_lag_entries: Family::default(),
            peer_lag_seconds: Family::default(),
            peer_in_sync: Family::default(),
            elections: Counter::default(),
            failovers: Counter::default(),
            seen: Mutex::new((0, 0)),
        };
        let m = &metrics;
        registry.register(
            "requests",
            "HTTP API requests by operation and outcome",
            m.requests.clone(),
        );
        registry.register(
            "http_auth_refusals",
            "HTTP requests refused for their bearer token: 401 without a known one, 403 with too little privilege",
            m.auth_refusals.clone(),
        );
        registry.register(
            "tls_handshake_failures",
            "TLS handshakes on the HTTP port that failed, by cause",
            m.handshake_failures.clone(),
        );
        registry.register(
            "peer_handshakes_refused",
            "Connections from peers (or anything else) the Raft transport refused at the TLS or Raft handshake, by cause",
            m.peer_refusals.clone(),
        );
        registry.register(
            "tls_certificate_reloads",
            "Reloads of the HTTP API's certificate after its files changed or SIGHUP, by outcome",
            m.certificate_reloads.clone(),
        );
        registry.register(
            "proposal_duration_seconds",
            "Time from proposing an acknowledged write to its acknowledgement",
            m.proposal_seconds.clone(),
        );
        registry.register("role", "1 for this node's role", m.role.clone());
        registry.register("term", "Current Raft term", m.term.clone());
        registry.register("leader_id", "Known leader (0: none)", m.leader.clone());
        registry.register("commit_index", "Commit index", m.commit_index.clone());
        registry.register("applied_index", "Applied index", m.applied_index.clone());
        registry.register("last_log_index", "Last log index", m.last_log_index.clone());
        registry.register(
            "snapshot_index",
            "Last index of the latest snapshot (0: none)",
            m.snapshot_index.clone(),
        );
        registry.register(
            "lease_remaining_seconds",
            "Leader lease left (0 on followers or without a lease)",
            m.lease_remaining_seconds.clone(),
        );
        registry.register(
            "peer_lag_entries",
            "Entries a peer lacks (leader only)",
            m.peer_lag_entries.clone(),
        );
        registry.register(
            "peer_lag_seconds",
            "Time since a peer last answered the leader (leader only)",
            m.peer_lag_seconds.clone(),
        );
        registry.register(
            "peer_in_sync",
            "1 if a voter is in sync with the leader (leader only)",
            m.peer_in_sync.clone(),
        );
        registry.register(
            "elections",
            "Terms this node has seen begin (each is an election somewhere)",
            m.elections.clone(),
        );
        registry.register(
            "failovers",
            "Leadership changes this node has recorded",
            m.failovers.clone(),
        );
        *metrics.registry.lock().unwrap_or_else(|p| p.into_inner()) = registry;
        Arc::new(metrics)
    }

    /// Counts one request of `op` that ended with `outcome`.
    pub fn count(&self, op: &'static str, outcome: &'static str) {
        self.requests
            .get_or_create(&RequestLabels { op, outcome })
            .inc();
    }

    /// Counts one request refused with `code` (`"401"` or `"403"`).
    pub fn count_auth_refusal(&self, code: &'static str) {
        self.auth_refusals
            .get_or_create(&RefusalLabels { code })
            .inc();
    }

    /// Counts one TLS handshake that failed for `cause`.
    pub fn count_handshake_failure(&self, cause: &'static str) {
        self.handshake_failures
            .get_or_create(&HandshakeLabels { cause })
            .inc();
    }

    /// Counts one reload of the certificate that ended with `outcome` (`"ok"` or `"failed"`).
    pub fn count_certificate_reload(&self, outcome: &'static str) {
        self.certificate_reloads
            .get_or_create(&ReloadLabels { outcome })
            .inc();
    }

    /// Records how long an acknowledged write took.
    pub fn observe_proposal(&self, elapsed: std::time::Duration) {
        self.proposal_seconds.observe(elapsed.as_secs_f64());
    }

    /// Starts the counters of terms and failovers from a restarted node's recovered `status`:
    /// what happened in earlier runs is not counted again.
    pub fn start_from(&self, status: &Status) {
        let latest_failover = status.failovers.iter().map(|f| f.term.0).max();
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) =
            (status.term.0, latest_failover.unwrap_or(0));
    }

    /// Brings the counters of terms and failovers up to date with `status` (called every
    /// 100 ms and at every scrape: terms are counted by difference, so none is missed).
    pub fn follow(&self, status: &Status) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if status.term.0 > seen.0 {
            self.elections.inc_by(status.term.0 - seen.0);
            seen.0 = status.term.0;
        }
        for failover in &status.failovers {
            if failover.term.0 > seen.1 && !failover.earlier_run {
                self.failovers.inc();
                seen.1 = failover.term.0;
            }
        }
    }

    /// Where [`Metrics::render`] reads the Raft transport's refusals from (set once).
    pub fn watch_transport(&self, stats: impl Fn() -> InboundStats + Send + Sync + 'static) {
        let _ = self.transport.set(Box::new(stats));
    }

    /// Brings the peer refusal counters up to the transport's own counts.
    fn follow_transport(&self) {
        let Some(stats) = self.transport.get() else {
            return;
        };
        let mut seen = self
            .peer_refusals_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for (cause, count) in stats().handshakes_refused_by_cause {
            let before = seen.insert(cause, count).unwrap_or(0);
            self.peer_refusals
                .get_or_create(&HandshakeLabels { cause })
                .inc_by(count.saturating_sub(before));
        }
    }

    /// The metrics in the Prometheus text format, with the gauges set from `status`.
    pub fn render(&self, status: &Status) -> String {
        self.follow(status);
        self.follow_transport();
        let current = role_name(status);
        for role in ["leader", "candidate", "follower", "learner"] {
            self.role
                .get_or_create(&RoleLabels { role: role.into() })
                .set(i64::from(role == current));
        }
        let gauge = |g: &Gauge, v: u64| {
            g.set(i64::try_from(v).unwrap_or(i64::MAX));
        };
        gauge(&self.term, status.term.0);
        gauge(&self.leader, status.leader.map_or(0, |l| l.0));
        gauge(&self.commit_index, status.commit_index.0);
        gauge(&self.applied_index, status.applied_index.0);
        gauge(&self.last_log_index, status.last_log_index.0);
        gauge(&self.snapshot_index, status.snapshot.map_or(0, |s| s.0.0));
        let lease = status.lease_remaining_ms.unwrap_or(0) as f64 / 1000.0;
        self.lease_remaining_seconds.set(lease);
        self.peer_lag_entries.clear();
        self.peer_lag_seconds.clear();
        self.peer_in_sync.clear();
        for peer in &status.peers {
            let labels = PeerLabels {
                peer: peer.id.0.to_string(),
            };
            gauge(
                &self.peer_lag_entries.get_or_create(&labels),
                peer.lag_entries,
            );
            if let Some(ms) = peer.since_last_ack_ms {
                self.peer_lag_seconds
                    .get_or_create(&labels)
                    .set(ms as f64 / 1000.0);
            }
            if peer.voter {
                gauge(
                    &self.peer_in_sync.get_or_create(&labels),
                    u64::from(peer.in_sync),
                );
            }
        }
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}

/// The node's role as `/status` and the metrics name it: a follower that does not vote is a
/// learner.
pub fn role_name(status: &Status) -> &'static str {
    let learner = status
        .membership
        .as_ref()
        .is_some_and(|m| !m.is_voter(status.id));
    match status.role {
        Role::Leader => "leader",
        Role::Candidate | Role::PreCandidate => "candidate",
        Role::Follower if learner => "learner",
        Role::Follower => "follower",
    }
}
