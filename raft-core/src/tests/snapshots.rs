//! Log compaction and InstallSnapshot (§7): one test per rule. The harness stores images and
//! restores its state machines (the list of applied entries) from them, as a driver would.

use super::harness::*;
use crate::{
    AppendOutcome, EntryId, HardState, LogIndex, Message, MessageBody, NodeId, ProtocolError, Role,
    SnapshotMeta, Term,
};

fn id(term: u64, index: u64) -> EntryId {
    EntryId {
        term: Term(term),
        index: LogIndex(index),
    }
}

/// Runs every clock `ms` milliseconds, one at a time, delivering what is sent unless `drop`
/// picks it.
fn run_dropping(net: &mut Network, ms: u64, mut drop: impl FnMut(&Message) -> bool) {
    for _ in 0..ms {
        net.now = net.now.plus_ms(1);
        for id in 1..=net.nodes.len() as u64 {
            let now = net.now;
            net.node(id).tick(now);
        }
        for _ in 0..100_000 {
            net.drive_all();
            let Some(msg) = net.queue.pop_front() else {
                break;
            };
            if !drop(&msg) {
                net.deliver(msg);
            }
        }
    }
}

fn is_chunk(m: &Message) -> bool {
    matches!(m.body, MessageBody::InstallSnapshot { .. })
}

/// A three-node cluster whose leader, n1, committed `writes` commands while n3 was cut off,
/// then snapshotted and compacted its whole log.
fn leader_compacted_while_n3_was_away(
    writes: usize,
    tweak: impl Fn(&mut crate::Config),
) -> Network {
    let mut net = Network::with(3, tweak);
    net.elect(1);
    net.isolate(3);
    for _ in 0..writes {
        net.propose(1, "w");
    }
    net.advance(20);
    net.take_snapshot(1, 0);
    assert_eq!(net.peek(1).log().start.index, net.peek(1).commit_index());
    net
}

/// A follower that needs entries the leader compacted away receives the snapshot and then
/// the log, and ends with the same state as the leader (§7).
#[test]
fn a_follower_behind_the_compacted_log_catches_up_from_the_snapshot() {
    let mut net = leader_compacted_while_n3_was_away(20, |_| {});
    let snapshot = net.snapshots[&NodeId(1)].0.clone();
    net.heal();
    net.advance(30);
    assert_eq!(
        net.snapshots[&NodeId(3)].0,
        snapshot,
        "n3 stored the snapshot"
    );
    assert_eq!(
        net.purged[&NodeId(3)],
        snapshot.last,
        "and purged its log to it"
    );
    net.propose(1, "after");
    net.advance(20);
    assert_eq!(net.applied_commands(3), net.applied_commands(1));
    assert_eq!(net.peek(3).applied_index(), net.peek(1).applied_index());
    assert_eq!(net.peek(3).log().start, snapshot.last);
}

/// Installing a snapshot whose last entry the follower's log does not hold replaces the whole
/// log (§7: "discard the entire log").
#[test]
fn install_resets_a_log_that_diverged_from_the_snapshot() {
    // n3 holds entries of term 1 that n1 (leader in term 2) replaced.
    let logs = vec![
        (
            HardState {
                term: Term(2),
                vote: Some(NodeId(1)),
            },
            entries_with_terms(&[1, 2, 2, 2]),
        ),
        (
            HardState {
                term: Term(2),
                vote: Some(NodeId(1)),
            },
            entries_with_terms(&[1, 2, 2, 2]),
        ),
        (
            HardState {
                term: Term(1),
                vote: None,
            },
            entries_with_terms(&[1, 1, 1, 1, 1, 1]),
        ),
    ];
    let mut net = Network::with_logs(logs, |_| {});
    net.isolate(3);
    net.elect(1);
    net.advance(20);
    net.take_snapshot(1, 0);
    let snapshot = net.snapshots[&NodeId(1)].0.clone();
    net.heal();
    net.advance(30);
    assert_eq!(net.peek(3).log().start, snapshot.last);
    assert_eq!(
        log_terms(net.peek(3)),
        log_terms(net.peek(1)),
        "no term-1 entry survives"
    );
    assert_eq!(net.applied_commands(3), net.applied_commands(1));
}

/// A follower keeps the entries after the snapshot's last one if its log holds that entry
/// (§7: "retain log entries following it").
#[test]
fn entries_after_the_snapshot_are_kept_when_the_log_holds_its_last_entry() {
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
    // n1 leads term 1 (it won before the logs were written); n2 has committed nothing.
    net.receiving.clear();
    let meta = SnapshotMeta::new(
        id(1, 6),
        crate::Membership::new([NodeId(1), NodeId(2)]).unwrap(),
    );
    let image = postcard::to_stdvec(&entries_with_terms(&[1; 6])).unwrap();
    net.deliver(msg(
        1,
        2,
        1,
        MessageBody::InstallSnapshot {
            meta: meta.clone(),
            offset: 0,
            data: image.into(),
            done: true,
        },
    ));
    let n2 = net.peek(2);
    assert_eq!(n2.log().start, id(1, 6));
    assert_eq!(n2.last_log_id(), id(1, 10), "entries 7..=10 kept");
    assert_eq!(n2.applied_index(), LogIndex(6));
    let answer = net.queue.iter().find(|m| m.to == NodeId(1)).unwrap();
    assert_eq!(
        answer.body,
        MessageBody::AppendEntriesResponse {
            round: 0,
            session: match answer.body {
                MessageBody::AppendEntriesResponse { session, .. } => session,
                _ => 0,
            },
            outcome: AppendOutcome::Success {
                match_index: LogIndex(6)
            },
        },
        "the follower holds everything up to the snapshot's last entry"
    );
}

/// A snapshot that covers nothing beyond the follower's commit index is not stored: the
/// follower answers where its log matches (§7: "if the snapshot is older, ignore it").
#[test]
fn a_snapshot_not_newer_than_the_commit_index_is_ignored() {
    let mut net = Network::new(3);
    net.elect(1);
    for _ in 0..8 {
        net.propose(1, "w");
    }
    net.advance(20);
    let committed = net.peek(2).commit_index();
    let meta = SnapshotMeta::new(
        id(1, 5),
        crate::Membership::new([NodeId(1), NodeId(2), NodeId(3)]).unwrap(),
    );
    net.queue.clear();
    let term = net.peek(1).term().0;
    net.deliver(msg(
        1,
        2,
        term,
        MessageBody::InstallSnapshot {
            meta,
            offset: 0,
            data: vec![1, 2, 3].into(),
            done: true,
        },
    ));
    assert!(
        !net.chunks_stored.contains_key(&NodeId(2)),
        "nothing stored"
    );
    assert!(net.queue.iter().any(|m| matches!(
        m.body,
        MessageBody::AppendEntriesResponse {
            outcome: AppendOutcome::Success { match_index },
            ..
        } if match_index == committed
    )));
    assert_eq!(net.peek(2).commit_index(), committed);
}

/// InstallSnapshot obeys §5.1 like every RPC: one of an older term is refused and its sender
/// told the newer term; one of a newer term makes a candidate (or anyone) follow its sender.
#[test]
fn install_snapshot_term_handling() {
    let mut net = Network::new(3);
    net.elect(1);
    net.elect(2);
    let term = net.peek(2).term().0;
    assert!(term >= 2);
    net.queue.clear();
    let meta = SnapshotMeta::new(
        id(1, 50),
        crate::Membership::new([NodeId(1), NodeId(2), NodeId(3)]).unwrap(),
    );
    let chunk = |meta: SnapshotMeta| MessageBody::InstallSnapshot {
        meta,
        offset: 0,
        data: vec![0].into(),
        done: false,
    };
    let now = net.now;
    net.node(2)
        .step(now, msg(3, 2, term - 1, chunk(meta.clone())))
        .unwrap();
    let answer = net.take_messages().pop().unwrap();
    assert_eq!((answer.to, answer.term), (NodeId(3), Term(term)));
    assert!(!net.chunks_stored.contains_key(&NodeId(2)));

    net.isolate(3);
    net.campaign(3); // n3 campaigns alone: a candidate (or pre-candidate) of a newer term
    assert_ne!(net.peek(3).role(), Role::Leader);
    net.heal();
    let newer = net.peek(3).term().0 + 1;
    let meta = SnapshotMeta::new(
        id(1, 50),
        crate::Membership::new([NodeId(1), NodeId(2), NodeId(3)]).unwrap(),
    );
    let now = net.now;
    net.node(3)
        .step(now, msg(2, 3, newer, chunk(meta)))
        .unwrap();
    assert_eq!(net.peek(3).role(), Role::Follower);
    assert_eq!(net.peek(3).term(), Term(newer));
    assert_eq!(net.peek(3).leader(), Some(NodeId(2)));
}

/// Chunks arrive in order, out of order, duplicated: the follower stores each byte once and in
/// order, and the leader resends from what the follower says it holds.
#[test]
fn chunks_out_of_order_or_duplicated_are_stored_once_in_order() {
    let mut net = leader_compacted_while_n3_was_away(60, |c| {
        c.max_bytes_per_append = 16;
        c.max_inflight_bytes = 64;
    });
    let image_len = net.snapshots[&NodeId(1)].1.len();
    assert!(image_len > 4 * 64, "several windows of chunks: {image_len}");
    net.heal();
    // Deliver in reverse order within each batch, and every chunk twice.
    for _ in 0..2_000 {
        net.drive_all();
        if net.queue.is_empty() {
            let now = net.now;
            net.now = now.plus_ms(1);
            for id in 1..=3 {
                let now = net.now;
                net.node(id).tick(now);
            }
            if net.snapshots.contains_key(&NodeId(3)) && net.receiving.is_empty() {
                break;
            }
            continue;
        }
        let batch: Vec<Message> = net.queue.drain(..).collect();
        for m in batch.into_iter().rev() {
            if is_chunk(&m) {
                net.deliver(m.clone());
            }
            net.deliver(m);
        }
    }
    assert_eq!(net.snapshots[&NodeId(3)], net.snapshots[&NodeId(1)]);
    let stored: u64 = net.chunks_stored[&NodeId(3)]
        .iter()
        .map(|&(_, _, len)| len as u64)
        .sum();
    assert_eq!(stored, image_len as u64, "every byte stored once");
    net.advance(20);
    assert_eq!(net.applied_commands(3), net.applied_commands(1));
}

/// Chunks lost on the way are sent again from where the follower's copy ends, not from the
/// start, once it answers a heartbeat round sent after them.
#[test]
fn a_transfer_whose_chunks_were_lost_resumes_where_the_follower_stopped() {
    let mut net = leader_compacted_while_n3_was_away(30, |c| {
        c.max_bytes_per_append = 64;
        c.max_inflight_bytes = 128;
    });
    net.heal();
    // The third and fourth chunks sent are lost; a heartbeat round after them shows it.
    let mut chunks = 0;
    run_dropping(&mut net, 60, |m| {
        if is_chunk(m) {
            chunks += 1;
            return chunks == 3 || chunks == 4;
        }
        false
    });
    assert!(chunks > 4, "the loss was repaired with more chunks");
    let offsets: Vec<u64> = net.chunks_stored[&NodeId(3)]
        .iter()
        .map(|&(_, offset, _)| offset)
        .collect();
    assert_eq!(offsets[0], 0);
    assert!(
        offsets.windows(2).all(|w| w[1] > w[0]),
        "never started over: {offsets:?}"
    );
    assert_eq!(net.snapshots[&NodeId(3)], net.snapshots[&NodeId(1)]);
}

/// A transfer interrupted by a change of leader starts over cleanly with the new leader's
/// snapshot; the follower never mixes chunks of two transfers.
#[test]
fn a_snapshot_transfer_interrupted_by_a_leader_change_restarts_cleanly() {
    let mut net = leader_compacted_while_n3_was_away(30, |c| {
        c.max_bytes_per_append = 64;
        c.max_inflight_bytes = 128;
    });
    // n2 compacts too, so that it must send a snapshot as well.
    net.take_snapshot(2, 0);
    net.heal();
    // n3 receives the first chunk from n1, then n1 is cut off and n2 takes over.
    let mut chunks = 0;
    run_dropping(&mut net, 15, |m| {
        if is_chunk(m) {
            chunks += 1;
            return chunks > 1;
        }
        false
    });
    assert!(
        net.receiving.contains_key(&NodeId(3)),
        "a transfer under way"
    );
    net.isolate(1);
    net.campaign(2);
    assert_eq!(net.peek(2).role(), Role::Leader);
    net.advance(50);
    assert_eq!(net.snapshots[&NodeId(3)].0, net.snapshots[&NodeId(2)].0);
    net.propose(2, "after");
    net.advance(20);
    assert_eq!(net.applied_commands(3), net.applied_commands(2));
}

/// A leader never compacts entries that a follower being sent a snapshot needs next: the
/// entries right after that snapshot.
#[test]
fn the_leader_keeps_the_entries_a_follower_receiving_a_snapshot_needs_next() {
    let mut net = leader_compacted_while_n3_was_away(10, |c| {
        c.max_bytes_per_append = 16;
        c.max_inflight_bytes = 16;
    });
    let first = net.snapshots[&NodeId(1)].0.last;
    net.heal();
    // The transfer to n3 begins, its chunks lost; then more writes and a newer snapshot on
    // the leader.
    run_dropping(&mut net, 15, is_chunk);
    assert!(
        net.peek(1).peers()[1].snapshot_bytes.is_some(),
        "a transfer under way"
    );
    for _ in 0..10 {
        net.node(1).propose(cmd("later")).unwrap();
    }
    net.settle_dropping(|m| m.to == NodeId(3) || m.from == NodeId(3));
    net.take_snapshot(1, 0);
    assert_eq!(
        net.peek(1).log().start,
        first,
        "compaction stopped at the snapshot being sent"
    );
    net.advance(50);
    assert_eq!(net.applied_commands(3), net.applied_commands(1));
}

/// A snapshot of entries not applied, or of another term than the log holds, is refused.
#[test]
fn a_snapshot_beyond_the_applied_index_is_refused() {
    let mut net = Network::new(3);
    net.elect(1);
    let applied = net.peek(1).applied_index();
    let meta = SnapshotMeta::new(
        id(1, applied.0 + 1),
        crate::Membership::new([NodeId(1), NodeId(2), NodeId(3)]).unwrap(),
    );
    assert!(matches!(
        net.node(1).snapshot_created(meta),
        Err(ProtocolError::InvalidArgument(_))
    ));
    let wrong_term = SnapshotMeta::new(
        id(9, applied.0),
        crate::Membership::new([NodeId(1), NodeId(2), NodeId(3)]).unwrap(),
    );
    assert!(net.node(1).snapshot_created(wrong_term).is_err());
    assert!(
        net.node(1).compact(applied).is_none(),
        "no snapshot, no compaction"
    );
}

/// A follower that lost its whole state (a new, empty node in its place) catches up from the
/// leader's snapshot.
#[test]
fn a_follower_that_lost_its_state_catches_up_from_the_snapshot() {
    let mut net = Network::new(3);
    net.elect(1);
    for _ in 0..20 {
        net.propose(1, "w");
    }
    net.advance(20);
    net.take_snapshot(1, 0);
    let state = crate::InitialState::new(ids(3));
    let fresh = crate::Raft::new(test_config(3), state, 99, net.now).unwrap();
    net.restart(3, fresh);
    net.applied.remove(&NodeId(3));
    net.advance(30);
    assert_eq!(net.applied_commands(3), net.applied_commands(1));
}
