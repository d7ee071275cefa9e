//! A synchronous driver for a few [`Raft`] nodes: it carries out every batch of actions at
//! once (durable writes complete immediately) and routes messages through one queue that a
//! test can inspect, filter or deliver.

use crate::contract::ContractChecker;
use crate::{
    Config, Entry, EntryId, HardState, InitialState, LogIndex, Message, MessageBody, NodeId,
    Payload, ProtocolError, Raft, ReadId, Role, SnapshotMeta, Term, Time,
};
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Timeouts small enough to keep tests short, in the proportions of the defaults.
pub(crate) fn test_config(id: u64) -> Config {
    Config {
        election_timeout_min_ms: 100,
        election_timeout_max_ms: 200,
        heartbeat_interval_ms: 10,
        lease_duration_ms: 80,
        clock_drift_bound_ms: 10,
        ..Config::new(NodeId(id))
    }
}

pub(crate) fn ids(n: u64) -> BTreeSet<NodeId> {
    (1..=n).map(NodeId).collect()
}

/// Entries with the given terms at indexes 1.., each carrying its index as a command.
pub(crate) fn entries_with_terms(terms: &[u64]) -> Vec<Entry> {
    terms
        .iter()
        .enumerate()
        .map(|(i, &t)| Entry {
            term: Term(t),
            index: LogIndex(i as u64 + 1),
            payload: Payload::Command((i as u64 + 1).to_be_bytes().to_vec().into()),
        })
        .collect()
}

pub(crate) fn cmd(text: &'static str) -> Bytes {
    Bytes::from_static(text.as_bytes())
}

/// The terms of a node's log, in order.
pub(crate) fn log_terms(raft: &Raft) -> Vec<u64> {
    raft.log().iter().map(|e| e.term.0).collect()
}

pub(crate) struct Network {
    pub(crate) nodes: BTreeMap<NodeId, Raft>,
    pub(crate) now: Time,
    /// Messages sent and not yet delivered, in send order.
    pub(crate) queue: VecDeque<Message>,
    /// Directed links that drop everything: (from, to).
    pub(crate) cut: BTreeSet<(NodeId, NodeId)>,
    /// Every entry each node applied, in order.
    pub(crate) applied: BTreeMap<NodeId, Vec<Entry>>,
    /// Every read outcome each node returned.
    pub(crate) reads: BTreeMap<NodeId, Vec<(ReadId, Result<LogIndex, ProtocolError>)>>,
    /// Every hard state each node persisted, last one last.
    pub(crate) hard_states: BTreeMap<NodeId, HardState>,
    /// Each node's contract checker: `drive` keeps the duties of `Actions`.
    checkers: BTreeMap<NodeId, ContractChecker>,
    /// Each node's latest complete snapshot: its metadata and image (the entries its state
    /// machine had applied, encoded).
    pub(crate) snapshots: BTreeMap<NodeId, (SnapshotMeta, Vec<u8>)>,
    /// The snapshot each node is receiving.
    pub(crate) receiving: BTreeMap<NodeId, (SnapshotMeta, Vec<u8>)>,
    /// Every chunk each node stored, as (snapshot's last index, offset, length).
    pub(crate) chunks_stored: BTreeMap<NodeId, Vec<(LogIndex, u64, usize)>>,
    /// Where each node's stored log starts (its latest purge).
    pub(crate) purged: BTreeMap<NodeId, EntryId>,
}

impl Network {
    /// `n` fresh nodes with [`test_config`], seeds 1..=n.
    pub(crate) fn new(n: u64) -> Network {
        Network::with(n, |_| {})
    }

    /// `n` fresh nodes whose configuration `tweak` may adjust.
    pub(crate) fn with(n: u64, tweak: impl Fn(&mut Config)) -> Network {
        let logs = (1..=n)
            .map(|_| (HardState::default(), Vec::new()))
            .collect();
        Network::with_logs(logs, tweak)
    }

    /// One node per (hard state, log); node `k` (1-based) gets the k-th.
    pub(crate) fn with_logs(
        logs: Vec<(HardState, Vec<Entry>)>,
        tweak: impl Fn(&mut Config),
    ) -> Network {
        let voters = ids(logs.len() as u64);
        let mut nodes = BTreeMap::new();
        let mut checkers = BTreeMap::new();
        for (k, (hard_state, entries)) in logs.into_iter().enumerate() {
            let id = k as u64 + 1;
            let mut config = test_config(id);
            tweak(&mut config);
            let state = InitialState {
                hard_state,
                entries,
                applied: LogIndex(0),
                membership: crate::Membership::new(voters.clone()).ok(),
                ..InitialState::default()
            };
            let durable_through = state.entries.last().map_or(LogIndex(0), |e| e.index);
            let raft = Raft::new(config, state, id, Time(0)).unwrap();
            nodes.insert(NodeId(id), raft);
            checkers.insert(
                NodeId(id),
                ContractChecker::new(durable_through, LogIndex(0)),
            );
        }
        Network {
            nodes,
            now: Time(0),
            queue: VecDeque::new(),
            cut: BTreeSet::new(),
            applied: BTreeMap::new(),
            reads: BTreeMap::new(),
            hard_states: BTreeMap::new(),
            checkers,
            snapshots: BTreeMap::new(),
            receiving: BTreeMap::new(),
            chunks_stored: BTreeMap::new(),
            purged: BTreeMap::new(),
        }
    }

    /// Adds node `id`, started from `state` (a node that joins the cluster, say).
    pub(crate) fn add_node(&mut self, id: u64, state: InitialState) {
        let raft = Raft::new(test_config(id), state, id, self.now).unwrap();
        self.restart(id, raft);
    }

    /// Replaces node `id` with `raft`, restarted from durable state.
    pub(crate) fn restart(&mut self, id: u64, raft: Raft) {
        let durable_through = raft.last_log_id().index;
        self.checkers.insert(
            NodeId(id),
            ContractChecker::new(durable_through, raft.applied_index()),
        );
        self.nodes.insert(NodeId(id), raft);
    }

    pub(crate) fn node(&mut self, id: u64) -> &mut Raft {
        self.nodes.get_mut(&NodeId(id)).unwrap()
    }

    pub(crate) fn peek(&self, id: u64) -> &Raft {
        &self.nodes[&NodeId(id)]
    }

    /// Carries out one node's pending actions: writes complete at once, messages are queued.
    pub(crate) fn drive(&mut self, id: NodeId) {
        // Acknowledging writes, applies, installs and chunk reads may produce more work.
        for _ in 0..10_000 {
            let raft = self.nodes.get_mut(&id).unwrap();
            let actions = raft.take_actions();
            if actions.is_empty() {
                return;
            }
            let checker = self.checkers.entry(id).or_default();
            let batch = checker.took(&actions);
            self.queue.extend(actions.messages);
            if let Some(start) = actions.purge {
                self.purged.insert(id, start);
            }
            if let Some(hs) = actions.hard_state {
                self.hard_states.insert(id, hs);
            }
            let mut installing = None;
            for chunk in &actions.snapshot_writes {
                self.chunks_stored.entry(id).or_default().push((
                    chunk.meta.last.index,
                    chunk.offset,
                    chunk.data.len(),
                ));
                let image = self
                    .receiving
                    .entry(id)
                    .or_insert_with(|| (chunk.meta.clone(), Vec::new()));
                if chunk.offset == 0 {
                    *image = (chunk.meta.clone(), Vec::new());
                }
                assert_eq!(image.0, chunk.meta, "a chunk of another image");
                assert_eq!(image.1.len() as u64, chunk.offset, "a chunk out of order");
                image.1.extend_from_slice(&chunk.data);
                if chunk.last {
                    let finished = self.receiving.remove(&id).unwrap();
                    installing = Some(finished.0.clone());
                    self.snapshots.insert(id, finished);
                }
            }
            checker.wrote(batch);
            if let Some(last) = actions.entries.last() {
                checker.reported_persisted(last.id());
                raft.persisted(last.id());
            }
            if !actions.persisted_messages.is_empty() {
                checker.sending_persisted(batch);
            }
            self.queue.extend(actions.persisted_messages);
            if let Some(range) = actions.committed {
                let entries = raft.committed_entries(range);
                for entry in &entries {
                    checker.applying(entry.index);
                }
                self.applied.entry(id).or_default().extend(entries);
                checker.reported_applied(range.last);
                raft.applied(range.last);
            }
            for (_, result) in &actions.reads {
                if let Ok(index) = result {
                    checker.answering_read(*index);
                }
            }
            self.reads.entry(id).or_default().extend(actions.reads);
            if let Some(meta) = installing {
                // Duty 7: restore the state machine from the image, then report it.
                let image = &self.snapshots[&id].1;
                let restored: Vec<Entry> = postcard::from_bytes(image).unwrap();
                assert_eq!(
                    restored.len() as u64,
                    meta.last.index.0,
                    "image of the wrong state"
                );
                self.applied.insert(id, restored);
                checker.installed(meta.last.index);
                raft.snapshot_installed(&meta).unwrap();
            }
            // Duty 8: read chunks of the latest snapshot for followers.
            for read in actions.snapshot_reads {
                let (meta, image) = self.snapshots[&id].clone();
                let start = usize::try_from(read.offset).unwrap().min(image.len());
                let end = (start + read.max_bytes).min(image.len());
                let data = image[start..end].to_vec();
                raft.snapshot_read(read.to, meta, read.offset, data.into(), end == image.len());
            }
        }
        panic!("n{id}'s actions kept coming");
    }

    /// Node `id` snapshots its state machine at its applied index, then compacts its log up to
    /// `keep` entries before that index. Returns the snapshot's metadata.
    pub(crate) fn take_snapshot(&mut self, id: u64, keep: u64) -> SnapshotMeta {
        let raft = self.nodes.get_mut(&NodeId(id)).unwrap();
        let applied = raft.applied_index();
        let meta = raft.snapshot_meta(applied).unwrap();
        let state = self.applied.get(&NodeId(id)).cloned().unwrap_or_default();
        assert_eq!(state.len() as u64, applied.0);
        let image = postcard::to_stdvec(&state).unwrap();
        self.snapshots.insert(NodeId(id), (meta.clone(), image));
        raft.snapshot_created(meta.clone()).unwrap();
        raft.compact(LogIndex(applied.0.saturating_sub(keep)));
        self.drive(NodeId(id));
        meta
    }

    pub(crate) fn drive_all(&mut self) {
        let all: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in all {
            self.drive(id);
        }
    }

    /// Takes every queued message (for tests that inspect what was sent).
    pub(crate) fn take_messages(&mut self) -> Vec<Message> {
        self.drive_all();
        self.queue.drain(..).collect()
    }

    /// Delivers one message now (unless its link is cut) and carries out the recipient's actions.
    pub(crate) fn deliver(&mut self, msg: Message) {
        if self.cut.contains(&(msg.from, msg.to)) {
            return;
        }
        let to = msg.to;
        let now = self.now;
        if let Some(raft) = self.nodes.get_mut(&to) {
            let from = msg.from;
            if let Err(error) = raft.step(now, msg) {
                // Only a node outside the recipient's membership is refused (a node removed
                // while messages to or from it were in flight).
                let member = raft.membership().is_some_and(|m| m.contains(from));
                assert!(
                    matches!(error, ProtocolError::RejectedMessage(_)) && !member,
                    "{to} refused a message from {from}: {error}"
                );
            }
            self.drive(to);
        }
    }

    /// Delivers messages until none is left (bounded, to catch livelock).
    pub(crate) fn settle(&mut self) {
        self.drive_all();
        for _ in 0..100_000 {
            let Some(msg) = self.queue.pop_front() else {
                return;
            };
            self.deliver(msg);
        }
        panic!("messages kept flowing: livelock");
    }

    /// Delivers messages until none is left, dropping those `drop` picks.
    pub(crate) fn settle_dropping(&mut self, drop: impl Fn(&Message) -> bool) {
        self.drive_all();
        for _ in 0..100_000 {
            let Some(msg) = self.queue.pop_front() else {
                return;
            };
            if !drop(&msg) {
                self.deliver(msg);
            }
        }
        panic!("messages kept flowing: livelock");
    }

    /// Moves every clock forward by `ms`, one millisecond at a time, ticking and settling.
    pub(crate) fn advance(&mut self, ms: u64) {
        for _ in 0..ms {
            self.now = self.now.plus_ms(1);
            let all: Vec<NodeId> = self.nodes.keys().copied().collect();
            for id in all {
                let now = self.now;
                self.nodes.get_mut(&id).unwrap().tick(now);
            }
            self.settle();
        }
    }

    /// Makes node `id` time out at once and campaign; settles the network.
    pub(crate) fn campaign(&mut self, id: u64) {
        let raft = self.node(id);
        let deadline = raft.next_deadline();
        self.now = self.now.max(deadline);
        let now = self.now;
        self.node(id).tick(now);
        self.settle();
    }

    /// Elects node `id` and lets its blank entry commit everywhere reachable.
    pub(crate) fn elect(&mut self, id: u64) {
        self.campaign(id);
        assert_eq!(self.peek(id).role(), Role::Leader, "n{id} should have won");
        // A heartbeat round carries the commit index to followers.
        self.advance(self.peek(id).config().heartbeat_interval_ms);
    }

    pub(crate) fn propose(&mut self, id: u64, data: &'static str) -> EntryId {
        let entry = self.node(id).propose(cmd(data)).unwrap();
        self.settle();
        entry
    }

    /// Cuts every link to and from `id`.
    pub(crate) fn isolate(&mut self, id: u64) {
        for &other in self.nodes.keys() {
            if other != NodeId(id) {
                self.cut.insert((NodeId(id), other));
                self.cut.insert((other, NodeId(id)));
            }
        }
    }

    pub(crate) fn heal(&mut self) {
        self.cut.clear();
    }

    /// The payloads a node applied, as text (blank entries skipped).
    pub(crate) fn applied_commands(&self, id: u64) -> Vec<String> {
        self.applied
            .get(&NodeId(id))
            .map(|entries| {
                entries
                    .iter()
                    .filter_map(|e| match &e.payload {
                        Payload::Command(b) => Some(String::from_utf8_lossy(b).into_owned()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A message of the given body from `from` to `to` at `term`.
pub(crate) fn msg(from: u64, to: u64, term: u64, body: MessageBody) -> Message {
    Message {
        from: NodeId(from),
        to: NodeId(to),
        term: Term(term),
        body,
    }
}
