//! The settings of a [`crate::TcpTransport`], and the rules they must satisfy.

use crate::tcp::Overflow;
use crate::tcp::tls::PeerTls;
use raft_core::NodeId;
use std::collections::BTreeMap;
use std::time::Duration;
use thiserror::Error;

/// The longest timeout or interval accepted.
const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);

/// Settings of one node's TCP transport. Start from [`TcpConfig::new`] and change fields.
#[derive(Clone, Debug)]
pub struct TcpConfig {
    /// This node. Messages it sends must come from it; messages it receives must go to it.
    pub node_id: NodeId,
    /// Which cluster this node belongs to: connections from or to a node of another cluster
    /// are refused at the handshake, so two clusters sharing hosts never exchange messages.
    pub cluster_id: u64,
    /// Where to listen, `"host:port"` (port 0 picks a free port; see
    /// [`crate::TcpTransport::local_addr`]).
    pub listen_addr: String,
    /// The other members and their addresses, `"host:port"`. Only these may connect (checked at
    /// the handshake) and only to these are messages sent. Changed at runtime with
    /// [`crate::TcpTransport::add_peer`] and [`crate::TcpTransport::remove_peer`].
    pub peers: BTreeMap<NodeId, String>,
    /// The largest frame payload accepted or sent, in bytes. A peer announcing a larger frame
    /// is disconnected; an outbound message that would exceed it is dropped. Must exceed the
    /// largest AppendEntries the protocol builds (`max_bytes_per_append`, or one command of
    /// `max_command_bytes`) with room for the message's envelope.
    pub max_frame_bytes: u32,
    /// How many messages may wait for one peer. Beyond it `send` drops one (see
    /// [`TcpConfig::overflow`]) rather than wait or grow without bound.
    pub queue_capacity: usize,
    /// How many bytes (messages counted at their estimated frame size) may wait for one peer:
    /// what a peer that stops reading can make this node hold. Beyond it `send` drops as for
    /// `queue_capacity`. Must be at least `max_frame_bytes`, or the largest messages could
    /// never be queued.
    pub queue_capacity_bytes: usize,
    /// Decoded bytes the transport hands the node's inbox per 100 ms window, shared equally
    /// between the peers heard from; a message over its sender's share is dropped without
    /// being decoded. Bytes are counted as decoded because an entry costs about ten times
    /// more in memory than on the wire. Must be at least `max_frame_bytes`, and a share
    /// (this divided by the number of peers) must hold the largest AppendEntries the leader
    /// builds, decoded: `max_bytes_per_append` plus about 56 bytes per entry, or such a
    /// message is never delivered.
    pub max_inbound_bytes: usize,
    /// Which message a full queue drops.
    pub overflow: Overflow,
    /// The longest an outbound connection attempt may take, handshake included. Needed
    /// because a connection attempt across a partition (in turmoil, or through a firewall that
    /// drops packets) may never fail by itself.
    pub connect_timeout: Duration,
    /// The longest an accepted connection may take to send its hello. Kept short because an
    /// accepted connection holds an inbound slot until then: a dialler sends its hello as soon
    /// as it is connected, so this only needs to cover one segment's delivery (and a
    /// retransmission). At most `connect_timeout`.
    pub handshake_timeout: Duration,
    /// The longest a write may go without a byte written. A peer that stops reading, or a
    /// simulated link that lost a segment and stalls, is disconnected after it; a large batch
    /// over a slow link that keeps moving is not.
    pub write_timeout: Duration,
    /// An idle side of a connection sends an empty frame this often, so that the other side
    /// can tell a quiet peer from a dead link.
    pub keepalive_interval: Duration,
    /// A connection on which nothing (not even a keepalive) arrived for this long is dropped
    /// and, on the dialling side, dialled again. Must exceed `keepalive_interval`.
    pub idle_timeout: Duration,
    /// The first delay before dialling a peer again after a failure; it doubles per failure.
    pub reconnect_backoff_min: Duration,
    /// The largest delay between two dials of one peer.
    pub reconnect_backoff_max: Duration,
    /// Seeds the jitter of reconnect delays (mixed with the node and peer ids), so a
    /// simulation replays the same delays.
    pub seed: u64,
    /// The most inbound connections open at once; more are closed as soon as accepted. Each
    /// peer needs one. Addresses that are not known peers' may hold at most half of them.
    pub max_inbound_connections: usize,
    /// The most handshakes in progress at once from one address that is not a known peer's;
    /// more connections from it are closed as soon as accepted.
    pub max_handshakes_per_address: usize,
    /// Mutual TLS ([`crate::tls`]): `None` (the default) talks in the clear. With it, every
    /// connection is TLS from its first byte, both sides present certificates from the
    /// configured CA, and each certificate must name its node's id. On the listening side the
    /// TLS handshake, which takes a round trip more than the hello, must end within
    /// `connect_timeout` (the most a dialler waits for it), then the hello within
    /// `handshake_timeout`; the handshake runs within the same admission limits as the hello.
    pub tls: Option<PeerTls>,
}

impl TcpConfig {
    /// Defaults for node `node_id` of cluster `cluster_id`, listening on `listen_addr`, with
    /// `peers`: 16 MiB frames, 1024 queued messages and 64 MiB per peer dropping the oldest,
    /// 64 MiB decoded handed to the inbox per 100 ms, 1 s to connect and 300 ms for an
    /// accepted connection's hello, 2 s without progress to write a batch, a keepalive every
    /// 250 ms and a 1 s idle timeout, reconnect delays from 10 ms doubling to 1 s, 64 inbound
    /// connections and 4 handshakes at once per unknown address, no TLS.
    pub fn new(
        node_id: NodeId,
        cluster_id: u64,
        listen_addr: impl Into<String>,
        peers: impl IntoIterator<Item = (NodeId, String)>,
    ) -> TcpConfig {
        TcpConfig {
            node_id,
            cluster_id,
            listen_addr: listen_addr.into(),
            peers: peers.into_iter().collect(),
            max_frame_bytes: 16 << 20,
            queue_capacity: 1024,
            queue_capacity_bytes: 64 << 20,
            max_inbound_bytes: 64 << 20,
            overflow: Overflow::DropOldest,
            connect_timeout: Duration::from_secs(1),
            handshake_timeout: Duration::from_millis(300),
            write_timeout: Duration::from_secs(2),
            keepalive_interval: Duration::from_millis(250),
            idle_timeout: Duration::from_secs(1),
            reconnect_backoff_min: Duration::from_millis(10),
            reconnect_backoff_max: Duration::from_secs(1),
            seed: 0,
            max_inbound_connections: 64,
            max_handshakes_per_address: 4,
            tls: None,
        }
    }

    /// Checks every rule below and returns the first one broken.
    ///
    /// 1. The node id is not 0 (reserved by raft-core), and no peer has id 0 or this node's id.
    /// 2. `max_frame_bytes >= 64`, enough for any message without entries.
    /// 3. `queue_capacity`, `max_inbound_connections` and `max_handshakes_per_address` are at
    ///    least 1; `queue_capacity_bytes` and `max_inbound_bytes` at least `max_frame_bytes`.
    /// 4. Every timeout and interval is non-zero and at most a day (deadlines are computed by
    ///    adding them to the clock, which must not overflow).
    /// 5. `keepalive_interval < idle_timeout`, or healthy idle connections would be dropped.
    /// 6. `reconnect_backoff_min <= reconnect_backoff_max`.
    /// 7. `handshake_timeout <= connect_timeout`: the listener must not wait longer for a hello
    ///    than a dialler waits for the answer.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.node_id.0 == 0 {
            return Err(ConfigError("node id 0 is reserved".into()));
        }
        if let Some(id) = self
            .peers
            .keys()
            .find(|&&id| id.0 == 0 || id == self.node_id)
        {
            return Err(ConfigError(format!(
                "peer id {id} is 0 or this node's own id"
            )));
        }
        if self.max_frame_bytes < 64 {
            return Err(ConfigError(format!(
                "max_frame_bytes {} is below the minimum of 64",
                self.max_frame_bytes
            )));
        }
        if self.queue_capacity == 0
            || self.max_inbound_connections == 0
            || self.max_handshakes_per_address == 0
        {
            return Err(ConfigError(
                "queue_capacity, max_inbound_connections and max_handshakes_per_address must be at least 1".into(),
            ));
        }
        let frame = usize::try_from(self.max_frame_bytes).unwrap_or(usize::MAX);
        if let Some((name, _)) = [
            ("queue_capacity_bytes", self.queue_capacity_bytes),
            ("max_inbound_bytes", self.max_inbound_bytes),
        ]
        .into_iter()
        .find(|&(_, bytes)| bytes < frame)
        {
            return Err(ConfigError(format!(
                "{name} must be at least max_frame_bytes ({frame})"
            )));
        }
        let durations = [
            ("connect_timeout", self.connect_timeout),
            ("handshake_timeout", self.handshake_timeout),
            ("write_timeout", self.write_timeout),
            ("keepalive_interval", self.keepalive_interval),
            ("idle_timeout", self.idle_timeout),
            ("reconnect_backoff_min", self.reconnect_backoff_min),
            ("reconnect_backoff_max", self.reconnect_backoff_max),
        ];
        if let Some((name, _)) = durations
            .iter()
            .find(|(_, d)| d.is_zero() || *d > MAX_DURATION)
        {
            return Err(ConfigError(format!(
                "{name} must be non-zero and at most {MAX_DURATION:?}"
            )));
        }
        if self.keepalive_interval >= self.idle_timeout {
            return Err(ConfigError(format!(
                "keepalive_interval {:?} must be shorter than idle_timeout {:?}",
                self.keepalive_interval, self.idle_timeout
            )));
        }
        if self.reconnect_backoff_min > self.reconnect_backoff_max {
            return Err(ConfigError(format!(
                "reconnect_backoff_min {:?} exceeds reconnect_backoff_max {:?}",
                self.reconnect_backoff_min, self.reconnect_backoff_max
            )));
        }
        if self.handshake_timeout > self.connect_timeout {
            return Err(ConfigError(format!(
                "handshake_timeout {:?} exceeds connect_timeout {:?}",
                self.handshake_timeout, self.connect_timeout
            )));
        }
        Ok(())
    }
}

/// A [`TcpConfig`] rule that does not hold; the text names it.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> TcpConfig {
        TcpConfig::new(
            NodeId(1),
            7,
            "127.0.0.1:0",
            [(NodeId(2), "127.0.0.1:1".to_string())],
        )
    }

    #[test]
    fn the_defaults_are_valid() {
        assert_eq!(valid().validate(), Ok(()));
    }

    /// Table: one broken rule per row, and a word the error must name.
    #[test]
    fn each_rule_is_enforced() {
        let cases: Vec<(fn(&mut TcpConfig), &str)> = vec![
            (|c| c.node_id = NodeId(0), "reserved"),
            (
                |c| {
                    c.peers.insert(NodeId(1), "x:1".into());
                },
                "own id",
            ),
            (|c| c.max_frame_bytes = 10, "max_frame_bytes"),
            (|c| c.queue_capacity = 0, "queue_capacity"),
            (
                |c| c.max_handshakes_per_address = 0,
                "max_handshakes_per_address",
            ),
            (|c| c.queue_capacity_bytes = 1000, "queue_capacity_bytes"),
            (|c| c.max_inbound_bytes = 1000, "max_inbound_bytes"),
            (
                |c| c.handshake_timeout = Duration::from_secs(2),
                "handshake_timeout",
            ),
            (|c| c.write_timeout = Duration::ZERO, "write_timeout"),
            (|c| c.idle_timeout = Duration::MAX, "idle_timeout"),
            (
                |c| c.keepalive_interval = c.idle_timeout,
                "keepalive_interval",
            ),
            (
                |c| c.reconnect_backoff_min = Duration::from_secs(5),
                "reconnect_backoff_min",
            ),
        ];
        for (breaks, word) in cases {
            let mut config = valid();
            breaks(&mut config);
            let err = config.validate().unwrap_err();
            assert!(err.0.contains(word), "{err} should mention {word}");
        }
    }
}
