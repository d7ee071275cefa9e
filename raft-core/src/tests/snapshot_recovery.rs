//! Snapshots across restarts and from faulty peers: what a node recovers when a crash came
//! between storing a snapshot and purging its log, what `Raft::new` refuses, and a snapshot
//! of another cluster's voters. Each test names the rule it proves.

use super::harness::*;
use crate::{
    Actions, AppendOutcome, Entry, EntryId, HardState, InitialState, LogIndex, MessageBody, NodeId,
    Payload, Raft, SnapshotMeta, Term, Time,
};

fn id(term: u64, index: u64) -> EntryId {
    EntryId {
        term: Term(term),
        index: LogIndex(index),
    }
}

/// A log store as `LogStore` documents it: where the log starts, and the entries after it.
#[derive(Default)]
struct Disk {
    start: EntryId,
    entries: Vec<Entry>,
}

impl Disk {
    fn write(&mut self, actions: &Actions) {
        if let Some(up_to) = actions.purge
            && up_to.index > self.start.index
        {
            if self.entries.iter().any(|e| e.id() == up_to) {
                self.entries.retain(|e| e.index > up_to.index);
            } else {
                self.entries.clear();
            }
            self.start = up_to;
        }
        if let Some(first) = actions.entries.first() {
            let last = self.entries.last().map_or(self.start.index, |e| e.index);
            assert!(
                first.index <= last.next(),
                "a write that does not join the log"
            );
            self.entries.retain(|e| e.index < first.index);
            self.entries.extend(actions.entries.iter().cloned());
        }
    }
}

/// A follower of term 2 that restarts holding the image of a snapshot at (2, 100), finished,
/// and a log the purge never reached.
fn restart(disk: &Disk, snapshot: &SnapshotMeta) -> Raft {
    let mut state = InitialState::new(ids(3));
    state.hard_state = HardState {
        term: Term(2),
        vote: None,
    };
    state.entries = disk.entries.clone();
    state.log_start = disk.start;
    state.applied = snapshot.last.index; // restored from the image
    state.snapshot = Some(snapshot.clone());
    Raft::new(test_config(3), state, 3, Time(0)).unwrap()
}

/// A crash between storing a received snapshot and purging the log: the restarted node
/// replaces the log by the snapshot and its first batch purges the store too, so entries it
/// acknowledges after the restart survive the next one (a stale entry left on disk at the
/// snapshot's index would make the next restart discard them).
#[test]
fn a_restart_that_replaces_the_log_by_the_snapshot_purges_the_store() {
    let snapshot = SnapshotMeta::new(id(2, 100), crate::Membership::new(ids(3)).unwrap());
    // On disk: 120 entries of term 1, diverging from the snapshot's history at 100.
    let mut disk = Disk {
        entries: entries_with_terms(&[1; 120]),
        ..Disk::default()
    };
    let mut node = restart(&disk, &snapshot);
    assert_eq!(node.last_log_id(), id(2, 100));
    let first = node.take_actions();
    assert_eq!(
        first.purge,
        Some(snapshot.last),
        "the store is purged to the snapshot"
    );
    disk.write(&first);
    // The leader of term 2 appends 101..=103; they are stored and acknowledged.
    let entries: Vec<Entry> = (101..=103)
        .map(|i| Entry {
            term: Term(2),
            index: LogIndex(i),
            payload: Payload::Blank,
        })
        .collect();
    let append = MessageBody::AppendEntries {
        prev_log: id(2, 100),
        entries,
        leader_commit: LogIndex(100),
        round: 1,
    };
    node.step(Time(1), msg(1, 3, 2, append)).unwrap();
    let second = node.take_actions();
    disk.write(&second);
    node.persisted(id(2, 103));
    assert!(
        second.persisted_messages.iter().any(|m| matches!(
            m.body,
            MessageBody::AppendEntriesResponse {
                outcome: AppendOutcome::Success {
                    match_index: LogIndex(103)
                },
                ..
            }
        )),
        "103 acknowledged"
    );
    let node = restart(&disk, &snapshot);
    assert_eq!(
        node.last_log_id(),
        id(2, 103),
        "acknowledged entries survive a restart"
    );
}

/// The same crash with a log shorter than the snapshot: the store is purged to the snapshot,
/// so the next append joins it (a store refuses a write that leaves a gap).
#[test]
fn a_restart_that_replaces_a_short_log_purges_the_store() {
    let snapshot = SnapshotMeta::new(id(2, 100), crate::Membership::new(ids(3)).unwrap());
    let mut disk = Disk {
        entries: entries_with_terms(&[1; 50]),
        ..Disk::default()
    };
    let mut node = restart(&disk, &snapshot);
    let first = node.take_actions();
    assert_eq!(first.purge, Some(snapshot.last));
    disk.write(&first);
    assert_eq!((disk.start, disk.entries.len()), (snapshot.last, 0));
}

/// `Raft::new` refuses a log that starts after a purge no snapshot covers (the node could
/// never bring a follower that lacks those entries up to date), and a state machine that holds
/// less than the snapshot that replaced the log.
#[test]
fn raft_new_refuses_a_purged_log_without_its_snapshot_and_a_state_machine_behind_it() {
    let mut purged = InitialState::new(ids(3));
    purged.hard_state.term = Term(1);
    purged.log_start = id(1, 10);
    purged.applied = LogIndex(10);
    assert!(Raft::new(test_config(1), purged.clone(), 1, Time(0)).is_err());
    purged.snapshot = Some(SnapshotMeta::new(
        id(1, 5),
        crate::Membership::new(ids(3)).unwrap(),
    ));
    assert!(
        Raft::new(test_config(1), purged, 1, Time(0)).is_err(),
        "a snapshot older than the purge does not cover it"
    );

    let mut behind = InitialState::new(ids(3));
    behind.hard_state.term = Term(2);
    behind.entries = entries_with_terms(&[1, 1, 1]);
    behind.applied = LogIndex(2);
    behind.snapshot = Some(SnapshotMeta::new(
        id(2, 5),
        crate::Membership::new(ids(3)).unwrap(),
    ));
    assert!(
        Raft::new(test_config(1), behind, 1, Time(0)).is_err(),
        "the state machine must hold the snapshot that replaced the log"
    );
}

/// A node's own snapshot carries the membership its log holds at the snapshot's last entry:
/// one with another membership is refused (a follower would adopt it on install).
#[test]
fn a_snapshot_with_another_membership_than_the_logs_is_refused() {
    let mut net = Network::new(3);
    net.elect(1);
    net.propose(1, "a");
    net.advance(20);
    let applied = net.peek(1).applied_index();
    let term = net.peek(1).term();
    let wrong = SnapshotMeta::new(
        id(term.0, applied.0),
        crate::Membership::new([NodeId(1)]).unwrap(),
    );
    assert!(net.node(1).snapshot_created(wrong).is_err());
    let right = net.peek(1).snapshot_meta(applied).unwrap();
    assert_eq!(*right.membership, crate::Membership::new(ids(3)).unwrap());
    assert!(net.node(1).snapshot_created(right).is_ok());
}

/// While a received snapshot is being installed, nothing more is handed out to apply, even if
/// the commit index moves meanwhile: the restore would otherwise land on a state machine that
/// applied entries after the snapshot's last one, and take it back.
#[test]
fn nothing_is_applied_while_a_received_snapshot_is_installed() {
    let logs = vec![
        (
            HardState {
                term: Term(1),
                vote: Some(NodeId(1)),
            },
            entries_with_terms(&[1; 10]),
        ),
        (
            HardState {
                term: Term(1),
                vote: Some(NodeId(1)),
            },
            entries_with_terms(&[1; 10]),
        ),
    ];
    let mut net = Network::with_logs(logs, |_| {});
    let meta = SnapshotMeta::new(
        id(1, 6),
        crate::Membership::new([NodeId(1), NodeId(2)]).unwrap(),
    );
    let image = postcard::to_stdvec(&entries_with_terms(&[1; 6])).unwrap();
    let now = net.now;
    let chunk = MessageBody::InstallSnapshot {
        meta,
        offset: 0,
        data: image.into(),
        done: true,
    };
    net.node(2).step(now, msg(1, 2, 1, chunk)).unwrap();
    // Before the driver stores and installs it, the leader's commit index reaches 10.
    let heartbeat = MessageBody::Heartbeat {
        leader_commit: LogIndex(10),
        round: 1,
        freshness: None,
    };
    net.node(2).step(now, msg(1, 2, 1, heartbeat)).unwrap();
    net.drive(NodeId(2)); // the contract checker refuses an install over entries 7..=10
    assert_eq!(net.peek(2).applied_index(), LogIndex(10));
    assert_eq!(
        net.applied[&NodeId(2)].len(),
        10,
        "each entry applied once, in order"
    );
}
