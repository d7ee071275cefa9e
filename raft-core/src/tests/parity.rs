//! Behaviours production users expect from etcd-raft: linearizable and lease reads on
//! followers, flow control by bytes, a cap on the uncommitted tail, and a leadership transfer
//! that catches its target up at once and can be cancelled. Each test names the rule it proves.

use super::harness::*;
use crate::{LogIndex, Message, MessageBody, NodeId, ProtocolError, ReadId, ReadMode, Role, Term};

/// Messages carrying entries or a commit index to `to`: what a lagging follower misses.
fn replication_to(to: u64) -> impl Fn(&Message) -> bool {
    move |m| {
        m.to == NodeId(to)
            && matches!(
                m.body,
                MessageBody::AppendEntries { .. } | MessageBody::Heartbeat { .. }
            )
    }
}

fn read_results(net: &Network, id: u64) -> Vec<(ReadId, Result<LogIndex, ProtocolError>)> {
    net.reads.get(&NodeId(id)).cloned().unwrap_or_default()
}

fn payload_bytes(m: &Message) -> usize {
    match &m.body {
        MessageBody::AppendEntries { entries, .. } => entries.iter().map(|e| e.payload_len()).sum(),
        _ => 0,
    }
}

fn big(bytes: usize) -> bytes::Bytes {
    bytes::Bytes::from(vec![b'x'; bytes])
}

// ----- reads on followers ---------------------------------------------------------------------

/// A follower serves a linearizable read only once it has applied the index its leader
/// confirmed, which may be beyond what it has applied when the answer arrives (dissertation
/// §6.4, as etcd-raft's follower ReadIndex).
#[test]
fn a_followers_linearizable_read_waits_for_its_own_apply() {
    let mut net = Network::new(3);
    net.elect(1);
    net.propose(1, "a");
    // n3 misses "b": it commits on n1 and n2 only.
    net.node(1).propose(cmd("b")).unwrap();
    net.settle_dropping(replication_to(3));
    let committed = net.peek(1).commit_index();
    assert!(net.peek(3).applied_index() < committed);

    let now = net.now;
    net.node(3)
        .read(now, ReadId(1), ReadMode::Linearizable)
        .unwrap();
    net.settle_dropping(replication_to(3));
    assert!(
        read_results(&net, 3).is_empty(),
        "served before applying the leader's commit index"
    );

    net.advance(20);
    assert_eq!(read_results(&net, 3), vec![(ReadId(1), Ok(committed))]);
    assert!(net.peek(3).applied_index() >= committed);
}

/// The leader confirms a follower's linearizable read with a heartbeat round sent after the
/// request arrived: one that a majority has not acknowledged confirms nothing.
#[test]
fn a_forwarded_read_is_confirmed_by_a_round_after_the_request() {
    let mut net = Network::new(3);
    net.elect(1);
    let now = net.now;
    net.node(3)
        .read(now, ReadId(1), ReadMode::Linearizable)
        .unwrap();
    // The round the request starts is lost everywhere: no answer.
    net.settle_dropping(|m| matches!(m.body, MessageBody::Heartbeat { .. }));
    assert!(read_results(&net, 3).is_empty(), "answered without a round");
    net.advance(10);
    assert_eq!(read_results(&net, 3).len(), 1);
    assert!(read_results(&net, 3)[0].1.is_ok());
}

/// A lease read on a follower is answered from the leader's lease: no heartbeat round.
#[test]
fn a_followers_lease_read_is_answered_from_the_leaders_lease() {
    let mut net = Network::new(3);
    net.elect(1);
    net.propose(1, "a");
    assert!(net.peek(1).lease_holds());
    let now = net.now;
    net.node(2).read(now, ReadId(1), ReadMode::Lease).unwrap();
    let mut sent = Vec::new();
    net.drive_all();
    while let Some(m) = net.queue.pop_front() {
        sent.push(m.body.clone());
        net.deliver(m);
    }
    assert!(
        !sent
            .iter()
            .any(|b| matches!(b, MessageBody::Heartbeat { .. })),
        "a round was started for a lease read: {sent:?}"
    );
    assert_eq!(
        read_results(&net, 2),
        vec![(ReadId(1), Ok(net.peek(1).commit_index()))]
    );
}

/// A leader deposed after taking a follower's request refuses it, and the follower fails the
/// read at once rather than at its deadline.
#[test]
fn a_forwarded_read_whose_leader_is_deposed_before_answering_fails() {
    let mut net = Network::new(3);
    net.elect(1);
    let term = net.peek(1).term().0;
    let now = net.now;
    net.node(3)
        .read(now, ReadId(1), ReadMode::Linearizable)
        .unwrap();
    net.drive(NodeId(3));
    let request = net.queue.pop_front().unwrap();
    assert!(matches!(request.body, MessageBody::ReadIndex { .. }));
    net.deliver(request);
    // The round confirming it is lost; then n1 learns of a newer term.
    net.queue.clear();
    net.deliver(msg(
        2,
        1,
        term + 1,
        MessageBody::HeartbeatResponse {
            round: 0,
            session: 0,
        },
    ));
    assert_ne!(net.peek(1).role(), Role::Leader);
    let refusal = net
        .queue
        .iter()
        .find(|m| m.to == NodeId(3))
        .cloned()
        .expect("the deposed leader refuses the request");
    assert_eq!(refusal.term, Term(term), "refused in the request's term");
    net.queue.clear();
    net.deliver(refusal);
    assert_eq!(
        read_results(&net, 3),
        vec![(
            ReadId(1),
            Err(ProtocolError::NotLeader { leader_hint: None })
        )]
    );
}

/// A follower that moves to a newer term fails the reads it forwarded to the old leader: that
/// leader's answer could no longer be trusted to be current.
#[test]
fn a_forwarded_read_fails_when_the_follower_moves_to_a_new_term() {
    let mut net = Network::new(3);
    net.elect(1);
    let term = net.peek(1).term().0;
    let now = net.now;
    net.node(3)
        .read(now, ReadId(1), ReadMode::Linearizable)
        .unwrap();
    net.drive(NodeId(3));
    net.queue.clear(); // the request is lost
    let heartbeat = MessageBody::Heartbeat {
        leader_commit: LogIndex(0),
        round: 1,
        freshness: None,
    };
    net.deliver(msg(2, 3, term + 1, heartbeat));
    assert_eq!(
        read_results(&net, 3),
        vec![(
            ReadId(1),
            Err(ProtocolError::NotLeader {
                leader_hint: Some(NodeId(2))
            })
        )]
    );
}

/// A request lost on the way fails with `Timeout` after a maximum election timeout, so a
/// follower holds no read forever.
#[test]
fn a_lost_read_request_fails_after_a_maximum_election_timeout() {
    let mut net = Network::new(3);
    net.elect(1);
    let now = net.now;
    net.node(3)
        .read(now, ReadId(1), ReadMode::Linearizable)
        .unwrap();
    net.settle_dropping(|m| matches!(m.body, MessageBody::ReadIndex { .. }));
    net.advance(net.peek(3).config().election_timeout_max_ms - 1);
    assert!(read_results(&net, 3).is_empty(), "given up too early");
    net.advance(1);
    assert_eq!(
        read_results(&net, 3),
        vec![(ReadId(1), Err(ProtocolError::Timeout))]
    );
    assert_eq!(net.peek(3).role(), Role::Follower);
}

/// A follower that knows no leader, and a candidate, refuse reads at once.
#[test]
fn a_node_without_a_leader_refuses_reads() {
    let mut net = Network::new(3);
    let now = net.now;
    assert_eq!(
        net.node(2).read(now, ReadId(1), ReadMode::Linearizable),
        Err(ProtocolError::NotLeader { leader_hint: None })
    );
}

/// Reads forwarded by a follower are batched: one request for every read of a batch.
#[test]
fn a_followers_reads_of_one_batch_share_one_request() {
    let mut net = Network::new(3);
    net.elect(1);
    let now = net.now;
    for id in 1..=5 {
        net.node(2)
            .read(now, ReadId(id), ReadMode::Linearizable)
            .unwrap();
    }
    net.drive(NodeId(2));
    let requests = net
        .queue
        .iter()
        .filter(|m| matches!(m.body, MessageBody::ReadIndex { .. }))
        .count();
    assert_eq!(requests, 1);
    net.settle();
    assert_eq!(read_results(&net, 2).len(), 5);
    assert!(read_results(&net, 2).iter().all(|(_, r)| r.is_ok()));
}

// ----- flow control by bytes --------------------------------------------------------------------

fn byte_limited(config: &mut crate::Config) {
    config.max_inflight_appends = 100;
    config.max_bytes_per_append = 1000;
    config.max_inflight_bytes = 1000;
}

/// The AppendEntries in flight to one follower carry at most `max_inflight_bytes` of payload:
/// entries that do not fit wait for acknowledgements.
#[test]
fn bytes_in_flight_to_a_follower_stay_within_the_limit() {
    let mut net = Network::with(3, byte_limited);
    net.elect(1);
    for _ in 0..10 {
        net.node(1).propose(big(300)).unwrap();
    }
    let sent = net.take_messages();
    let to_2: Vec<&Message> = sent
        .iter()
        .filter(|m| m.to == NodeId(2) && matches!(m.body, MessageBody::AppendEntries { .. }))
        .collect();
    let bytes: usize = to_2.iter().map(|m| payload_bytes(m)).sum();
    assert_eq!(
        bytes, 900,
        "three 300-byte entries fit in 1,000 bytes, four do not"
    );
    // Acknowledging frees the budget, and the rest follow.
    for m in sent {
        net.deliver(m);
    }
    net.settle();
    net.advance(20);
    assert_eq!(net.peek(2).commit_index(), net.peek(1).last_log_id().index);
}

/// An entry larger than the byte limit is sent alone, once nothing else is in flight, and
/// nothing follows it until it is acknowledged.
#[test]
fn an_entry_larger_than_the_limit_goes_alone() {
    let mut net = Network::with(3, byte_limited);
    net.elect(1);
    net.node(1).propose(big(100)).unwrap();
    net.node(1).propose(big(5000)).unwrap();
    net.node(1).propose(big(10)).unwrap();
    let sent = net.take_messages();
    let to_2: Vec<&Message> = sent
        .iter()
        .filter(|m| m.to == NodeId(2) && matches!(m.body, MessageBody::AppendEntries { .. }))
        .collect();
    assert_eq!(to_2.len(), 1, "the large entry waits for the small one");
    assert_eq!(payload_bytes(to_2[0]), 100);
    for m in sent {
        net.deliver(m);
    }
    // The followers' answers reach the leader, which sends what they freed.
    let answers: Vec<Message> = net.queue.drain(..).collect();
    for m in answers {
        net.deliver(m);
    }
    let sent: Vec<Message> = net.queue.drain(..).collect();
    let to_2: Vec<&Message> = sent
        .iter()
        .filter(|m| m.to == NodeId(2) && matches!(m.body, MessageBody::AppendEntries { .. }))
        .collect();
    assert_eq!(to_2.len(), 1);
    assert_eq!(
        payload_bytes(to_2[0]),
        5000,
        "alone, though above the limit"
    );
    for m in sent {
        net.deliver(m);
    }
    net.settle();
    net.advance(20);
    assert_eq!(net.peek(2).commit_index(), LogIndex(4));
}

// ----- the uncommitted tail ---------------------------------------------------------------------

/// A leader cut off from its quorum refuses proposals once its uncommitted entries reach
/// `max_uncommitted_bytes`, with an error that says so, and takes them again once commits make
/// room.
#[test]
fn a_flood_of_proposals_against_a_leader_cut_from_its_quorum_is_bounded() {
    let mut net = Network::with(3, |c| c.max_uncommitted_bytes = 10_000);
    net.elect(1);
    net.isolate(1);
    let mut accepted = 0;
    let refusal = loop {
        match net.node(1).propose(big(1000)) {
            Ok(_) => accepted += 1,
            Err(e) => break e,
        }
        assert!(accepted < 100, "the tail grows without bound");
    };
    let cost = std::mem::size_of::<crate::Entry>() + 1000;
    assert_eq!(accepted, 10_000 / cost);
    assert_eq!(
        refusal,
        ProtocolError::UncommittedLimit {
            uncommitted_bytes: accepted * cost,
            limit_bytes: 10_000
        }
    );
    net.settle();
    net.heal();
    net.advance(20);
    assert_eq!(net.peek(1).role(), Role::Leader);
    assert_eq!(net.peek(1).commit_index(), net.peek(1).last_log_id().index);
    net.node(1)
        .propose(big(1000))
        .expect("commits made room again");
}

/// One proposal larger than the limit is taken when nothing is uncommitted, and the blank
/// entry of a new term is never refused.
#[test]
fn an_empty_tail_takes_any_proposal_and_a_new_term_its_blank_entry() {
    let mut net = Network::with(3, |c| c.max_uncommitted_bytes = 1);
    net.elect(1);
    assert!(
        net.peek(1).commit_index() >= LogIndex(1),
        "blank entry committed"
    );
    net.node(1).propose(big(500)).expect("to an empty tail");
    assert!(matches!(
        net.node(1).propose(big(1)),
        Err(ProtocolError::UncommittedLimit { .. })
    ));
    net.settle();
    net.node(1)
        .propose(big(1))
        .expect("committed, so room again");
}

// ----- leadership transfer ----------------------------------------------------------------------

/// A transfer to a follower whose appends were lost sends it the missing entries at once, and
/// TimeoutNow as soon as it holds the whole log: the target leads after one round trip and
/// an election, with no heartbeat in between (the clock does not move).
#[test]
fn a_transfer_to_a_follower_whose_appends_were_lost_completes_within_one_round_trip() {
    let mut net = Network::new(3);
    net.elect(1);
    for text in ["a", "b", "c"] {
        net.node(1).propose(cmd(text)).unwrap();
    }
    net.settle_dropping(replication_to(3));
    assert!(net.peek(3).last_log_id().index < net.peek(1).last_log_id().index);
    let now = net.now;
    net.node(1).transfer_leadership(now, NodeId(3)).unwrap();
    net.settle();
    assert_eq!(net.peek(3).role(), Role::Leader, "no tick was needed");
    assert_eq!(net.now, now);
}

/// A transfer request naming the leader itself abandons a pending transfer: proposals are
/// taken again at once, and the lease stays void for the rest of the term.
#[test]
fn a_transfer_is_cancelled_by_a_request_naming_the_leader() {
    let mut net = Network::new(3);
    net.elect(1);
    net.propose(1, "a");
    net.isolate(3); // the transfer cannot complete
    let now = net.now;
    net.node(1).transfer_leadership(now, NodeId(3)).unwrap();
    assert_eq!(
        net.node(1).propose(cmd("refused")),
        Err(ProtocolError::TransferInProgress)
    );
    net.node(1).transfer_leadership(now, NodeId(1)).unwrap();
    net.node(1).propose(cmd("b")).expect("taken again at once");
    net.settle();
    net.advance(20);
    assert_eq!(net.peek(1).role(), Role::Leader);
    assert!(
        !net.peek(1).lease_holds(),
        "the lease stays void in this term"
    );
    // With no transfer pending, naming the leader changes nothing.
    let now = net.now;
    net.node(1).transfer_leadership(now, NodeId(1)).unwrap();
    net.node(1).propose(cmd("c")).unwrap();
}
