//! Protocol configuration and the rules that tie its fields together.

use crate::NodeId;
use thiserror::Error;

/// Tunables of one node. Build one with [`Config::new`] and adjust fields; [`Config::validate`]
/// checks the fields against each other and names the rule a bad configuration breaks.
///
/// All durations are in milliseconds of the node's own clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// This node's id; never 0.
    pub id: NodeId,
    /// Lower bound of the randomized election timeout (§5.2). It is also the stickiness window
    /// of followers: a follower that heard from a leader less than this long ago neither starts an
    /// election nor grants a (pre)vote (dissertation §4.2.3, §6.4.1).
    pub election_timeout_min_ms: u64,
    /// Upper bound (exclusive) of the randomized election timeout.
    pub election_timeout_max_ms: u64,
    /// How often a leader sends a heartbeat round to every follower.
    pub heartbeat_interval_ms: u64,
    /// How long a leader's lease lasts, counted from the send time of the latest heartbeat round
    /// acknowledged by a majority (dissertation §6.4.1). `0` disables lease reads.
    pub lease_duration_ms: u64,
    /// The most two nodes' clocks may disagree about the length of one minimum election timeout.
    /// The lease must end at least this much before any follower could vote for someone else.
    pub clock_drift_bound_ms: u64,
    /// Run a pre-vote round before a real election (dissertation §9.6), so that a node that was
    /// partitioned away does not force a term change when it comes back.
    pub pre_vote: bool,
    /// A leader that has not heard from a majority for a minimum election timeout steps down
    /// (dissertation §6.2), so that clients stop waiting on a leader that cannot commit.
    pub check_quorum: bool,
    /// How many AppendEntries messages may be in flight to one follower at once. A small
    /// window is what makes batches: while it is full, new entries wait and leave together in
    /// the next message. The default, 4, keeps a follower on a fast network at about one
    /// message per several dozen writes under load; each follower can still receive
    /// `max_inflight_appends * max_bytes_per_append` (4 MiB by default) per round trip, so a
    /// link with a large bandwidth-delay product may want more.
    pub max_inflight_appends: usize,
    /// The most entries one AppendEntries message carries.
    pub max_entries_per_append: usize,
    /// The most payload bytes one AppendEntries message carries (at least one entry is always
    /// sent, whatever its size).
    pub max_bytes_per_append: usize,
    /// The most payload bytes in flight to one follower at once (unacknowledged AppendEntries),
    /// besides the count `max_inflight_appends`: a few large entries cannot queue megabytes per
    /// follower. A message is sent only if it fits in what is left; an entry larger than the
    /// limit is sent alone, once nothing else is in flight. Default 2 MiB.
    pub max_inflight_bytes: usize,
    /// The most a leader holds of entries proposed in its term and not yet committed, counting
    /// each entry's payload and its size in memory (etcd's `MaxUncommittedEntriesSize`). Past
    /// it, proposals are refused with [`crate::ProtocolError::UncommittedLimit`] until
    /// commits make room, so a leader cut off from its quorum does not grow its log without
    /// bound before it steps down. A proposal to an empty tail is always taken, whatever its
    /// size, and the blank entry of a new term counts nothing. Default 64 MiB.
    pub max_uncommitted_bytes: usize,
}

impl Config {
    /// A configuration with the default tunables for node `id`: elections after 150–300 ms of
    /// silence, a heartbeat every 30 ms, a 120 ms lease under a 15 ms clock-drift bound, PreVote
    /// and CheckQuorum on.
    pub fn new(id: NodeId) -> Config {
        Config {
            id,
            election_timeout_min_ms: 150,
            election_timeout_max_ms: 300,
            heartbeat_interval_ms: 30,
            lease_duration_ms: 120,
            clock_drift_bound_ms: 15,
            pre_vote: true,
            check_quorum: true,
            max_inflight_appends: 4,
            max_entries_per_append: 4096,
            max_bytes_per_append: 1 << 20,
            max_inflight_bytes: 2 << 20,
            max_uncommitted_bytes: 64 << 20,
        }
    }

    /// Checks every rule below and returns the first one broken.
    ///
    /// 1. The id is not 0.
    /// 2. `0 < election_timeout_min_ms < election_timeout_max_ms`: a range, so that randomized
    ///    timeouts can differ and split votes resolve (§5.2).
    /// 3. `0 < heartbeat_interval_ms` and at least three heartbeats fit in a minimum election
    ///    timeout, so one lost heartbeat does not start an election.
    /// 4. `clock_drift_bound_ms < election_timeout_min_ms`.
    /// 5. With leases on, `lease_duration_ms + clock_drift_bound_ms < election_timeout_min_ms`:
    ///    the lease ends before any follower that acknowledged it can vote for someone else.
    /// 6. With leases on, `heartbeat_interval_ms < lease_duration_ms`, or the lease would lapse
    ///    between heartbeats.
    /// 7. Batching and flow-control limits are at least 1.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.id.0 == 0 {
            return Err(ConfigError::ZeroId);
        }
        if self.election_timeout_min_ms == 0
            || self.election_timeout_min_ms >= self.election_timeout_max_ms
        {
            return Err(ConfigError::ElectionTimeoutRange {
                min_ms: self.election_timeout_min_ms,
                max_ms: self.election_timeout_max_ms,
            });
        }
        if self.heartbeat_interval_ms == 0
            || self.heartbeat_interval_ms.saturating_mul(3) > self.election_timeout_min_ms
        {
            return Err(ConfigError::HeartbeatTooSlow {
                heartbeat_ms: self.heartbeat_interval_ms,
                election_min_ms: self.election_timeout_min_ms,
            });
        }
        if self.clock_drift_bound_ms >= self.election_timeout_min_ms {
            return Err(ConfigError::DriftTooLarge {
                drift_ms: self.clock_drift_bound_ms,
                election_min_ms: self.election_timeout_min_ms,
            });
        }
        if self.lease_duration_ms > 0 {
            if self.lease_duration_ms + self.clock_drift_bound_ms >= self.election_timeout_min_ms {
                return Err(ConfigError::LeaseTooLong {
                    lease_ms: self.lease_duration_ms,
                    drift_ms: self.clock_drift_bound_ms,
                    election_min_ms: self.election_timeout_min_ms,
                });
            }
            if self.heartbeat_interval_ms >= self.lease_duration_ms {
                return Err(ConfigError::LeaseShorterThanHeartbeat {
                    lease_ms: self.lease_duration_ms,
                    heartbeat_ms: self.heartbeat_interval_ms,
                });
            }
        }
        if self.max_inflight_appends == 0
            || self.max_entries_per_append == 0
            || self.max_bytes_per_append == 0
            || self.max_inflight_bytes == 0
            || self.max_uncommitted_bytes == 0
        {
            return Err(ConfigError::ZeroBatchLimit);
        }
        Ok(())
    }
}

/// The rule of [`Config::validate`] that a configuration breaks.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Rule 1.
    #[error("node id 0 is reserved; ids start at 1")]
    ZeroId,
    /// Rule 2.
    #[error(
        "election timeout must be a range 0 < min < max (got min {min_ms} ms, max {max_ms} ms)"
    )]
    ElectionTimeoutRange {
        /// The configured minimum.
        min_ms: u64,
        /// The configured maximum.
        max_ms: u64,
    },
    /// Rule 3.
    #[error(
        "heartbeat interval {heartbeat_ms} ms must be non-zero and at most a third of the minimum election timeout ({election_min_ms} ms)"
    )]
    HeartbeatTooSlow {
        /// The configured heartbeat interval.
        heartbeat_ms: u64,
        /// The configured minimum election timeout.
        election_min_ms: u64,
    },
    /// Rule 4.
    #[error(
        "clock drift bound {drift_ms} ms must be below the minimum election timeout ({election_min_ms} ms)"
    )]
    DriftTooLarge {
        /// The configured drift bound.
        drift_ms: u64,
        /// The configured minimum election timeout.
        election_min_ms: u64,
    },
    /// Rule 5.
    #[error(
        "lease {lease_ms} ms plus clock drift bound {drift_ms} ms must be below the minimum election timeout ({election_min_ms} ms), or two leaders could both hold a lease"
    )]
    LeaseTooLong {
        /// The configured lease.
        lease_ms: u64,
        /// The configured drift bound.
        drift_ms: u64,
        /// The configured minimum election timeout.
        election_min_ms: u64,
    },
    /// Rule 6.
    #[error("lease {lease_ms} ms must be longer than the heartbeat interval ({heartbeat_ms} ms)")]
    LeaseShorterThanHeartbeat {
        /// The configured lease.
        lease_ms: u64,
        /// The configured heartbeat interval.
        heartbeat_ms: u64,
    },
    /// Rule 7.
    #[error(
        "max_inflight_appends, max_entries_per_append, max_bytes_per_append, max_inflight_bytes and max_uncommitted_bytes must be >= 1"
    )]
    ZeroBatchLimit,
}
