//! Status publishing: the [`Status`] watchers see, the history of leadership changes, and
//! tracing events for role, lease and follower-lag changes.

use super::{Failover, FailoverTrigger, PeerConnection, PeerStatus, Status};
use crate::{LogIndex, NodeId, Raft, Role, Term, Time};
use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;
use tokio::sync::watch;
use tracing::{debug, info, warn};

pub(super) fn initial_status(id: NodeId) -> Status {
    Status {
        id,
        role: Role::Follower,
        term: Term(0),
        leader: None,
        commit_index: LogIndex(0),
        applied_index: LogIndex(0),
        last_log_index: LogIndex(0),
        log_entries: 0,
        snapshot: None,
        lease_remaining_ms: None,
        staleness_ms: None,
        membership: None,
        membership_index: LogIndex(0),
        peers: Vec::new(),
        failovers: Vec::new(),
        connections: Vec::new(),
    }
}

/// Whether a follower that last acknowledged at `last_ack_at` is in sync at `now`: it answered
/// within `max_replication_lag`.
pub(super) fn in_sync(max_replication_lag: Duration, now: Time, last_ack_at: Option<Time>) -> bool {
    last_ack_at.is_some_and(|at| u128::from(now.ms_since(at)) <= max_replication_lag.as_millis())
}

/// What the node last published, and what it needs to tell what changed since.
pub(super) struct Publisher {
    /// Where watchers read the status.
    status_tx: watch::Sender<Status>,
    /// When the status was last rebuilt: a busy node rebuilds it at most once per millisecond.
    built_at: Time,
    /// Whether something changed since the status was last rebuilt, so that the loop wakes to
    /// publish a withheld status within a millisecond.
    dirty: bool,
    /// Leadership changes seen, oldest first.
    failovers: VecDeque<Failover>,
    /// How many leadership changes `failovers` keeps.
    failover_history: usize,
    /// A change was recorded since the history was last handed to the store.
    failovers_unsaved: bool,
    /// What the last published status said of role, term and leader (to detect changes).
    last_seen: Seen,
    /// Whether the lease held at the last publication (to log when it is gained or lost).
    lease_held: bool,
    /// Followers last seen out of sync (to log when one falls out or comes back).
    out_of_sync: BTreeSet<NodeId>,
    /// How long since its last acknowledgement a follower still counts as in sync.
    max_replication_lag: Duration,
}

impl Publisher {
    pub(super) fn new(
        status_tx: watch::Sender<Status>,
        raft: &Raft,
        failover_history: usize,
        max_replication_lag: Duration,
        recovered: Vec<Failover>,
    ) -> Self {
        // The history of earlier runs, marked as such, the most recent kept.
        let keep = failover_history.max(1);
        let skip = recovered.len().saturating_sub(keep);
        let failovers = recovered
            .into_iter()
            .skip(skip)
            .map(|mut failover| {
                failover.earlier_run = true;
                failover
            })
            .collect();
        Publisher {
            status_tx,
            built_at: Time(0),
            dirty: true,
            failovers,
            failover_history,
            failovers_unsaved: false,
            last_seen: Seen::of(raft),
            lease_held: false,
            out_of_sync: BTreeSet::new(),
            max_replication_lag,
        }
    }

    /// The history to hand to the store, when it changed since it was last handed over.
    pub(super) fn failovers_to_save(&mut self) -> Option<Vec<Failover>> {
        if !std::mem::take(&mut self.failovers_unsaved) {
            return None;
        }
        Some(self.failovers.iter().cloned().collect())
    }

    /// When the loop must wake at the latest, given that the protocol needs it at `wake_at`:
    /// a status withheld to save work while busy is published within a millisecond.
    pub(super) fn wake_at(&self, wake_at: Time) -> Time {
        if self.dirty {
            wake_at.min(self.built_at.plus_ms(1))
        } else {
            wake_at
        }
    }

    /// The term the last published status named.
    pub(super) fn last_term(&self) -> Term {
        self.last_seen.term
    }

    /// Publishes a new status when something a watcher cares about changed, and records
    /// leadership changes, lease changes and lagging followers as tracing events. A node that
    /// is `stopping` publishes at once.
    pub(super) fn publish_status(
        &mut self,
        raft: &Raft,
        now: Time,
        stopping: bool,
        snapshot: Option<(LogIndex, u64)>,
        connections: impl FnOnce() -> Vec<(NodeId, PeerConnection)>,
    ) {
        let (role, term, leader) = (raft.role(), raft.term(), raft.leader());
        let seen = Seen { role, term, leader };
        let changed_hands = seen != self.last_seen;
        // While busy, rebuild the status at most once per millisecond (the clock's resolution);
        // a change of role, term or leader is published at once.
        if !changed_hands && now == self.built_at && !stopping {
            self.dirty = true;
            return;
        }
        self.built_at = now;
        self.dirty = false;
        if changed_hands {
            let Seen {
                role: old_role,
                leader: old_leader,
                ..
            } = self.last_seen;
            if role != old_role {
                info!(?role, term = term.0, "role changed");
            }
            if let Some(new_leader) = leader {
                // A failed pre-vote passes through "no leader" and back to the same leader in the
                // same term: not a change of leader.
                let last = self.failovers.back().map(|f| (f.term, f.new_leader));
                if last != Some((term, new_leader)) {
                    let previous = old_leader.or(last.map(|(_, l)| l));
                    self.record_failover(raft, term, previous, new_leader, now);
                }
            }
            self.last_seen = seen;
        }
        let lease = raft.lease_holds();
        if lease != self.lease_held {
            debug!(lease, "lease {}", if lease { "gained" } else { "lost" });
            self.lease_held = lease;
        }
        let last = raft.last_log_id().index;
        let membership = raft.membership();
        let peers: Vec<PeerStatus> = raft
            .peers()
            .iter()
            .map(|p| PeerStatus {
                id: p.id,
                voter: membership.is_some_and(|m| m.is_voter(p.id)),
                match_index: p.match_index,
                lag_entries: last.0.saturating_sub(p.match_index.0),
                since_last_ack_ms: p.last_ack_at.map(|at| now.ms_since(at)),
                in_sync: in_sync(self.max_replication_lag, now, p.last_ack_at),
                snapshot_bytes_sent: p.snapshot_bytes,
            })
            .collect();
        for peer in &peers {
            let was_out = self.out_of_sync.contains(&peer.id);
            if !peer.in_sync && !was_out {
                warn!(
                    peer = %peer.id,
                    lag = peer.lag_entries,
                    "follower fell out of sync"
                );
                self.out_of_sync.insert(peer.id);
            } else if peer.in_sync && was_out {
                info!(peer = %peer.id, "follower back in sync");
                self.out_of_sync.remove(&peer.id);
            }
        }
        let status = Status {
            id: raft.id(),
            role,
            term,
            leader,
            commit_index: raft.commit_index(),
            applied_index: raft.applied_index(),
            last_log_index: last,
            log_entries: last.0.saturating_sub(raft.log_start().index.0),
            snapshot,
            lease_remaining_ms: raft.lease_valid_until().map(|end| end.ms_since(now)),
            staleness_ms: raft.fresh_commit().map(|f| now.ms_since(f.as_of)),
            membership: membership.cloned(),
            membership_index: raft.membership_index(),
            peers,
            failovers: self.failovers.iter().cloned().collect(),
            connections: connections(),
        };
        self.status_tx.send_if_modified(|current| {
            if *current == status {
                false
            } else {
                *current = status;
                true
            }
        });
    }

    fn record_failover(
        &mut self,
        raft: &Raft,
        term: Term,
        old_leader: Option<NodeId>,
        new_leader: NodeId,
        now: Time,
    ) {
        let me = raft.id();
        let old_leader_removed =
            old_leader.is_some_and(|old| raft.membership().is_some_and(|m| !m.is_voter(old)));
        let trigger = if new_leader != me {
            FailoverTrigger::Observed
        } else if raft.elected_by_transfer() && old_leader_removed {
            FailoverTrigger::MembershipChange
        } else if raft.elected_by_transfer() {
            FailoverTrigger::Transfer
        } else {
            FailoverTrigger::Election
        };
        let unapplied = (new_leader == me).then(|| {
            raft.last_log_id()
                .index
                .0
                .saturating_sub(raft.applied_index().0)
        });
        info!(
            term = term.0,
            old = %crate::types::MaybeNode(old_leader),
            new = %new_leader,
            ?trigger,
            "leader changed"
        );
        if self.failovers.len() >= self.failover_history.max(1) {
            self.failovers.pop_front();
        }
        self.failovers.push_back(Failover {
            term,
            old_leader,
            new_leader,
            trigger,
            at_ms: now.0,
            new_leader_unapplied_entries: unapplied,
            earlier_run: false,
        });
        self.failovers_unsaved = true;
    }
}

/// Who led, as far as a published status said: a change of any of these is published at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Seen {
    role: Role,
    term: Term,
    leader: Option<NodeId>,
}

impl Seen {
    fn of(raft: &Raft) -> Seen {
        Seen {
            role: raft.role(),
            term: raft.term(),
            leader: raft.leader(),
        }
    }
}
