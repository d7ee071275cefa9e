//! Log compaction and InstallSnapshot (§7, dissertation chapter 5).
//!
//! The driver builds snapshots of its state machine and reports each one durable with
//! [`Raft::snapshot_created`]; [`Raft::compact`] then discards the entries it covers. A leader
//! whose follower needs a discarded entry streams its latest snapshot instead: it asks the
//! driver for one chunk at a time ([`crate::SnapshotRead`]), sends each as an InstallSnapshot
//! message within the follower's flow-control window, and continues from what the follower
//! reports holding. The follower stores the chunks ([`crate::SnapshotWrite`]); once the last is
//! stored the driver restores its state machine and reports [`Raft::snapshot_installed`], and
//! the follower answers as if it had appended up to the snapshot's last entry, so the leader
//! continues with the log.

use super::{Raft, RoleState, leader_message};
use crate::progress::ReplicationState;
use crate::{
    AppendOutcome, EntryData, EntryId, LogIndex, MessageBody, NodeId, ProtocolError, SnapshotMeta,
    SnapshotRead, SnapshotWrite,
};

/// A snapshot this node is receiving from its leader.
#[derive(Clone, Debug)]
pub(super) struct Incoming {
    pub(super) meta: SnapshotMeta,
    /// The term of the leader sending it: a new leader starts over.
    pub(super) term: crate::Term,
    /// How many bytes of the image are stored (or on their way to the store).
    pub(super) next_offset: u64,
    /// The last chunk is stored: the driver is restoring the state machine from the image.
    pub(super) finishing: bool,
}

impl Raft {
    // ----- inputs -------------------------------------------------------------------------------

    /// The metadata of a snapshot of the state after applying `index`, for a driver about to
    /// build one: `None` unless `index` is applied and still in the log (or its start).
    pub fn snapshot_meta(&self, index: LogIndex) -> Option<SnapshotMeta> {
        if index > self.log.applied || index.0 == 0 {
            return None;
        }
        let term = self.log.term_at(index)?;
        let membership = self.log.membership_at(index)?;
        Some(SnapshotMeta::new(
            EntryId { term, index },
            membership.clone(),
        ))
    }

    /// The latest snapshot this node holds durably, as far as the protocol knows.
    pub fn latest_snapshot(&self) -> Option<&SnapshotMeta> {
        self.snapshot.as_ref()
    }

    /// The driver stored a snapshot durably (its own, built from the state machine). A leader
    /// sends the latest one to followers that need entries compacted away. Refused when the
    /// snapshot covers entries not applied here.
    pub fn snapshot_created(&mut self, meta: SnapshotMeta) -> Result<(), ProtocolError> {
        if meta.last.index > self.log.applied {
            return Err(ProtocolError::InvalidArgument(format!(
                "snapshot at {} beyond the applied index {}",
                meta.last.index, self.log.applied
            )));
        }
        if self
            .log
            .membership_at(meta.last.index)
            .is_some_and(|m| **m != *meta.membership)
        {
            return Err(ProtocolError::InvalidArgument(format!(
                "snapshot at {} with another membership than the log's there",
                meta.last.index
            )));
        }
        if self
            .log
            .term_at(meta.last.index)
            .is_some_and(|t| t != meta.last.term)
        {
            return Err(ProtocolError::InvalidArgument(format!(
                "snapshot at {} of term {}, but the log holds another term there",
                meta.last.index, meta.last.term
            )));
        }
        if self
            .snapshot
            .as_ref()
            .is_none_or(|s| s.last.index < meta.last.index)
        {
            self.snapshot = Some(meta);
        }
        Ok(())
    }

    /// Discards the log's entries up to `up_to` (§7), as far as allowed: no further than the
    /// latest snapshot and the applied index, and, on a leader, no further than the snapshot
    /// any follower is being sent (it needs the entries after it next). Returns the log's new
    /// start; the batch's [`crate::Actions::purge`] tells the driver to purge its store too.
    pub fn compact(&mut self, up_to: LogIndex) -> Option<EntryId> {
        let mut limit = up_to
            .min(self.log.applied)
            .min(self.snapshot.as_ref().map_or(LogIndex(0), |s| s.last.index));
        if let RoleState::Leader(leader) = &self.role {
            for pr in leader.progress.values() {
                if let Some(send) = pr.snapshot {
                    limit = limit.min(send.last.index);
                }
            }
        }
        let start = self.log.compact_to(limit)?;
        self.out.purge = Some(start);
        Some(start)
    }

    /// The driver read a chunk of the latest snapshot for `to` (duty 8 of [`crate::Actions`]):
    /// `data` starts at `offset` of the image `meta` describes, and `last` when it ends it.
    pub fn snapshot_read(
        &mut self,
        to: NodeId,
        meta: SnapshotMeta,
        offset: u64,
        data: EntryData,
        last: bool,
    ) {
        let round = match &self.role {
            RoleState::Leader(leader) => leader.lease.latest_round(),
            _ => return,
        };
        if self
            .snapshot
            .as_ref()
            .is_none_or(|s| s.last.index < meta.last.index)
        {
            // The store holds a snapshot the protocol was not told of yet.
            self.snapshot = Some(meta.clone());
        }
        let RoleState::Leader(leader) = &mut self.role else {
            return;
        };
        let Some(pr) = leader.progress.get_mut(&to) else {
            return;
        };
        let Some(send) = pr.snapshot.as_mut().filter(|s| s.reading) else {
            return;
        };
        send.reading = false;
        if meta.last != send.last {
            if meta.last.index > send.last.index {
                // A newer snapshot replaced the one being sent: start over with it.
                pr.become_snapshot(meta.last, round);
            }
            return;
        }
        if offset != send.next_read {
            return; // asked before a rewind
        }
        let len = data.len() as u64;
        send.next_read = offset + len;
        send.all_read = last;
        send.sent_round = round;
        pr.inflights.add(
            LogIndex(offset + len),
            usize::try_from(len).unwrap_or(usize::MAX),
        );
        let body = MessageBody::InstallSnapshot {
            meta,
            offset,
            data,
            done: last,
        };
        leader_message(&mut self.out, self.config.id, self.term, to, body);
    }

    /// The driver could not read the chunk it was asked for `to` (duty 8): the transfer starts
    /// over once the follower is probed again (at its next answer), rather than wait forever.
    pub fn snapshot_read_failed(&mut self, to: NodeId) {
        let RoleState::Leader(leader) = &mut self.role else {
            return;
        };
        if let Some(pr) = leader.progress.get_mut(&to)
            && pr.snapshot.is_some_and(|s| s.reading)
        {
            pr.become_probe();
        }
    }

    /// The driver finished storing the snapshot this node was receiving and restored its state
    /// machine from it (duty 7 of [`crate::Actions`]). The log now starts after the snapshot:
    /// entries after its last one are kept if the log held that entry, and the follower tells
    /// its leader it holds everything up to it.
    pub fn snapshot_installed(&mut self, meta: &SnapshotMeta) -> Result<(), ProtocolError> {
        let Some(incoming) = self
            .incoming
            .take_if(|i| i.finishing && i.meta.last == meta.last)
        else {
            return Err(ProtocolError::InvalidArgument(format!(
                "no snapshot ending at {} was being installed",
                meta.last.index
            )));
        };
        let membership = incoming.meta.membership.clone();
        self.log.install(incoming.meta.last, membership);
        self.out.purge = Some(incoming.meta.last);
        if self
            .snapshot
            .as_ref()
            .is_none_or(|s| s.last.index < incoming.meta.last.index)
        {
            self.snapshot = Some(incoming.meta.clone());
        }
        self.resolve_reads();
        if let RoleState::Follower {
            leader: Some(leader),
            ..
        } = self.role
            && incoming.term == self.term
        {
            let session = self.session;
            let body = MessageBody::AppendEntriesResponse {
                round: 0,
                session,
                outcome: AppendOutcome::Success {
                    match_index: incoming.meta.last.index,
                },
            };
            self.send(leader, body);
        }
        Ok(())
    }

    /// True while the last chunk of a received snapshot is stored and the state machine not yet
    /// restored from it: nothing more is handed out to apply.
    pub(super) fn installing(&self) -> bool {
        self.incoming.as_ref().is_some_and(|i| i.finishing)
    }

    // ----- followers ----------------------------------------------------------------------------

    /// A chunk of the leader's snapshot (§7 receiver rules, in chunks). Chunks are taken in
    /// order; one out of order is answered with what this node holds, so the leader resends
    /// from there. A snapshot that covers nothing newer than this node's commit index is not
    /// stored: the answer says where the log matches instead.
    pub(super) fn handle_install_snapshot(
        &mut self,
        from: NodeId,
        meta: SnapshotMeta,
        offset: u64,
        data: EntryData,
        done: bool,
    ) {
        self.heard_from_leader(from);
        let session = self.session;
        let term = self.term;
        if meta.last.index <= self.log.committed && !self.installing() {
            let body = MessageBody::AppendEntriesResponse {
                round: 0,
                session,
                outcome: AppendOutcome::Success {
                    match_index: self.log.committed,
                },
            };
            self.send(from, body);
            return;
        }
        let current = self
            .incoming
            .as_ref()
            .filter(|i| i.meta == meta && i.term == term);
        let next_offset = match current {
            Some(incoming) if incoming.finishing => return, // a duplicate of a stored image
            Some(incoming) if incoming.next_offset != offset => incoming.next_offset,
            None if offset != 0 || self.installing() => 0,
            // In order (or the first chunk of a new image): store it.
            _ => {
                let next_offset = offset + data.len() as u64;
                self.incoming = Some(Incoming {
                    meta: meta.clone(),
                    term,
                    next_offset,
                    finishing: done,
                });
                let last = meta.last;
                self.out.snapshot_writes.push(SnapshotWrite {
                    meta,
                    offset,
                    data,
                    last: done,
                });
                if done {
                    return; // answered once installed
                }
                let body = MessageBody::InstallSnapshotResponse {
                    snapshot: last,
                    offset,
                    next_offset,
                };
                self.send(from, body);
                return;
            }
        };
        // Out of order, a duplicate, or a chunk of an image this node does not hold the start
        // of: say what it holds.
        let body = MessageBody::InstallSnapshotResponse {
            snapshot: meta.last,
            offset,
            next_offset,
        };
        self.send(from, body);
    }

    // ----- leaders ------------------------------------------------------------------------------

    /// Asks the driver for the next chunk of the snapshot `peer` is being sent, if its window
    /// has room. Returns whether it asked.
    pub(super) fn maybe_request_chunk(&mut self, peer: NodeId) -> bool {
        let max_bytes = self.config.max_bytes_per_append;
        let RoleState::Leader(leader) = &mut self.role else {
            return false;
        };
        let Some(pr) = leader.progress.get_mut(&peer) else {
            return false;
        };
        if pr.paused() {
            return false;
        }
        let Some(send) = pr.snapshot.as_mut() else {
            return false;
        };
        let max_bytes = max_bytes.min(pr.inflights.bytes_left()).max(1);
        send.reading = true;
        self.out.snapshot_reads.push(SnapshotRead {
            to: peer,
            snapshot: send.last,
            offset: send.next_read,
            max_bytes,
        });
        true
    }

    /// Starts sending the latest snapshot to `peer`, which needs entries the log no longer
    /// holds. Returns false when there is no snapshot to send.
    pub(super) fn start_snapshot(&mut self, peer: NodeId) -> bool {
        let Some(last) = self.snapshot.as_ref().map(|s| s.last) else {
            return false;
        };
        let RoleState::Leader(leader) = &mut self.role else {
            return false;
        };
        let round = leader.lease.latest_round();
        let Some(pr) = leader.progress.get_mut(&peer) else {
            return false;
        };
        pr.become_snapshot(last, round);
        true
    }

    /// A follower answered a chunk that did not end the image.
    pub(super) fn handle_install_snapshot_response(
        &mut self,
        from: NodeId,
        snapshot: EntryId,
        offset: u64,
        next_offset: u64,
    ) {
        let now = self.now;
        let RoleState::Leader(leader) = &mut self.role else {
            return;
        };
        let Some(pr) = leader.progress.get_mut(&from) else {
            return;
        };
        pr.last_ack_at = Some(now);
        if pr.state != ReplicationState::Snapshot {
            return;
        }
        let Some(send) = pr.snapshot.as_mut().filter(|s| s.last == snapshot) else {
            return;
        };
        // The follower cannot hold more than was sent.
        let next_offset = next_offset.min(send.next_read);
        if offset > next_offset {
            // A chunk before the one answered is missing: continue from what it holds.
            pr.rewind_snapshot(next_offset);
        } else {
            send.acked = send.acked.max(next_offset);
            pr.inflights.free_to(LogIndex(next_offset));
        }
        self.maybe_request_chunk(from);
    }

    /// A heartbeat answer from a follower being sent a snapshot: if it answers a round started
    /// after the last chunk went out and chunks are still unacknowledged, they were lost;
    /// continue from what it holds.
    pub(super) fn snapshot_heartbeat_answered(&mut self, peer: NodeId, round: u64) {
        let RoleState::Leader(leader) = &mut self.role else {
            return;
        };
        let Some(pr) = leader.progress.get_mut(&peer) else {
            return;
        };
        if let Some(send) = pr.snapshot
            && round > send.sent_round
            && !pr.inflights.is_empty()
        {
            pr.rewind_snapshot(send.acked);
        }
        self.maybe_request_chunk(peer);
    }
}
