//! Scenario tests for lease safety under a partial partition: the old leader keeps a lease it
//! earned while a node it can no longer reach campaigns through a node that hears both. These
//! fail when follower stickiness (dissertation §4.2.3, §6.4.1) or its restart rule is broken.

use super::harness::*;
use crate::{Config, HardState, InitialState, NodeId, Raft, Role, Time};

/// Holders of a valid lease, and leaders of any term, right now.
fn lease_holders_and_leaders(net: &Network) -> (Vec<u64>, Vec<(u64, u64)>) {
    let holders = (1..=3).filter(|&i| net.peek(i).lease_holds()).collect();
    let leaders = (1..=3)
        .filter(|&i| net.peek(i).role() == Role::Leader)
        .map(|i| (i, net.peek(i).term().0))
        .collect();
    (holders, leaders)
}

/// Checks after every millisecond that no node is leader of a later term while another holds
/// a lease (the lease's whole point).
fn run_and_check(net: &mut Network, ms: u64) {
    for _ in 0..ms {
        net.advance(1);
        let (holders, leaders) = lease_holders_and_leaders(net);
        for &holder in &holders {
            let term = net.peek(holder).term().0;
            for &(leader, leader_term) in &leaders {
                assert!(
                    leader_term <= term,
                    "n{holder} holds a lease in term {term} while n{leader} leads term {leader_term}"
                );
            }
        }
    }
}

/// n1 leads; the n1–n2 link fails both ways; n3 hears both. n2 times out and campaigns, but n3
/// still hears n1 and ignores it until n1's lease has expired (§4.2.3, §6.4.1).
#[test]
fn candidate_behind_a_partial_partition_cannot_win_while_the_old_lease_holds() {
    let mut net = Network::new(3);
    net.elect(1);
    net.advance(30);
    assert!(net.peek(1).lease_holds());
    net.cut.insert((NodeId(1), NodeId(2)));
    net.cut.insert((NodeId(2), NodeId(1)));
    run_and_check(&mut net, 600);
    // n3 keeps acknowledging n1, so n1 keeps its leadership and n2 never wins.
    assert_eq!(net.peek(1).role(), Role::Leader);
    assert_ne!(net.peek(2).role(), Role::Leader);
}

/// As above, but n3 restarts mid-way. Having forgotten when it last heard from n1, it must act
/// as if it just had (the restart rule) rather than vote for n2 at once.
#[test]
fn restarted_follower_does_not_vote_while_a_lease_it_granted_may_hold() {
    let mut net = Network::new(3);
    net.elect(1);
    net.advance(30);
    net.cut.insert((NodeId(1), NodeId(2)));
    net.cut.insert((NodeId(2), NodeId(1)));
    // Let n2 get close to its election timeout, then restart n3 from its durable state.
    run_and_check(&mut net, 90);
    let n3 = net.peek(3);
    let state = InitialState {
        hard_state: net
            .hard_states
            .get(&NodeId(3))
            .copied()
            .unwrap_or(HardState::default()),
        entries: n3.log().iter().cloned().collect(),
        applied: crate::LogIndex(0),
        membership: crate::Membership::new(ids(3)).ok(),
        ..InitialState::default()
    };
    let config: Config = test_config(3);
    let now: Time = net.now;
    net.restart(3, Raft::new(config, state, 99, now).unwrap());
    // n3 also stops hearing from n1 for a while, so only the restart rule protects the lease.
    net.cut.insert((NodeId(1), NodeId(3)));
    run_and_check(&mut net, 60);
    net.cut.remove(&(NodeId(1), NodeId(3)));
    run_and_check(&mut net, 600);
}

/// A follower that adopts a higher term from some message other than a vote request (here a
/// delayed pre-vote rejection) is still sticky: a vote request in that term, arriving while it
/// still hears from its leader, is not granted (dissertation §4.2.3).
#[test]
fn stickiness_survives_a_term_learned_from_another_message() {
    use crate::{EntryId, LogIndex, MessageBody, Term};
    let mut net = Network::new(5);
    net.elect(1);
    net.advance(20);
    let now = net.now;
    // Node 2 learns of term 2 from a stray pre-vote rejection by node 3.
    let rejection = msg(
        3,
        2,
        2,
        MessageBody::RequestVoteResponse {
            pre_vote: true,
            granted: false,
            campaign: 1,
        },
    );
    net.node(2).step(now, rejection).unwrap();
    assert_eq!(net.peek(2).term(), Term(2));
    let last_log = net.peek(2).last_log_id();
    let request = msg(
        5,
        2,
        2,
        MessageBody::RequestVote {
            pre_vote: false,
            last_log: EntryId {
                term: last_log.term,
                index: LogIndex(last_log.index.0 + 5),
            },
            transfer: false,
            campaign: 1,
        },
    );
    net.node(2).step(now, request).unwrap();
    let actions = net.node(2).take_actions();
    let granted = actions.persisted_messages.iter().any(|m| {
        matches!(
            m.body,
            MessageBody::RequestVoteResponse { granted: true, .. }
        )
    });
    assert!(!granted, "a sticky follower granted a vote");
    assert_eq!(net.peek(2).hard_state().vote, None);
}

/// Without PreVote and CheckQuorum, a follower cut off long enough to run its term up must
/// still rejoin once the partition heals: the leader learns the higher term from its answer to
/// a heartbeat and steps down, and an election brings everyone back to one term (§5.1).
#[test]
fn a_node_whose_term_ran_ahead_rejoins_without_pre_vote_or_check_quorum() {
    let mut net = Network::with(3, |c| {
        c.pre_vote = false;
        c.check_quorum = false;
    });
    net.elect(1);
    net.isolate(3);
    net.advance(1000);
    assert!(
        net.peek(3).term() > net.peek(1).term(),
        "node 3 campaigned alone"
    );
    net.heal();
    net.advance(2000);
    let terms: Vec<u64> = (1..=3).map(|i| net.peek(i).term().0).collect();
    let leaders: Vec<u64> = (1..=3)
        .filter(|&i| net.peek(i).role() == Role::Leader)
        .collect();
    assert_eq!(leaders.len(), 1, "terms {terms:?}");
    assert!(terms.iter().all(|&t| t == terms[0]), "terms {terms:?}");
    let leader = NodeId(leaders[0]);
    assert!((1..=3).all(|i| net.peek(i).leader() == Some(leader)));
}

/// A node that is not a voter never campaigns, and its next deadline stays ahead of its clock
/// (a driver sleeping until that deadline would otherwise spin).
#[test]
fn a_non_voter_keeps_its_deadline_ahead_of_the_clock() {
    let state = InitialState {
        membership: crate::Membership::new([NodeId(1), NodeId(2), NodeId(3)]).ok(),
        ..InitialState::default()
    };
    let mut raft = Raft::new(test_config(9), state, 1, Time(0)).unwrap();
    for _ in 0..5 {
        let deadline = raft.next_deadline();
        raft.tick(deadline);
        assert_eq!(raft.role(), Role::Follower);
        assert!(raft.next_deadline() > deadline);
    }
}

/// A peer cannot push terms or indexes to the end of their range: such a message is refused
/// before it changes anything.
#[test]
fn terms_and_indexes_near_the_end_of_the_range_are_refused() {
    use crate::{EntryId, LogIndex, MessageBody, Term};
    let mut net = Network::new(3);
    net.elect(1);
    let now = net.now;
    let huge_term = msg(
        2,
        3,
        u64::MAX,
        MessageBody::Heartbeat {
            leader_commit: LogIndex(0),
            round: 1,
            freshness: None,
        },
    );
    assert!(net.node(3).step(now, huge_term).is_err());
    let huge_index = msg(
        1,
        3,
        1,
        MessageBody::AppendEntries {
            prev_log: EntryId {
                term: Term(1),
                index: LogIndex(u64::MAX),
            },
            entries: Vec::new(),
            leader_commit: LogIndex(0),
            round: 1,
        },
    );
    assert!(net.node(3).step(now, huge_index).is_err());
    assert_eq!(net.peek(3).term(), Term(1));
    assert_eq!(Term(u64::MAX).next(), Term(u64::MAX));
}

/// A lease read needs no round trip, but it still waits until the state machine has applied
/// the commit index it was given (dissertation §6.4.1): served earlier, it could miss a write
/// that completed before it was asked.
#[test]
fn a_lease_read_waits_for_the_state_machine_to_reach_the_commit_index() {
    use crate::{ReadId, ReadMode};
    let mut net = Network::new(3);
    net.elect(1);
    net.advance(20);
    assert!(net.peek(1).lease_holds());
    let now = net.now;
    let entry = net.node(1).propose(cmd("x")).unwrap();
    // Replicate by hand: the leader's write completes and both followers answer, but the
    // leader's state machine is not told to apply anything yet.
    let actions = net.node(1).take_actions();
    net.node(1).persisted(actions.entries.last().unwrap().id());
    for message in actions.messages {
        net.deliver(message);
    }
    let answers: Vec<_> = net.queue.drain(..).filter(|m| m.to == NodeId(1)).collect();
    for answer in answers {
        net.node(1).step(now, answer).unwrap();
    }
    assert!(net.peek(1).commit_index() >= entry.index);
    assert!(net.peek(1).applied_index() < entry.index);
    net.node(1).read(now, ReadId(1), ReadMode::Lease).unwrap();
    let actions = net.node(1).take_actions();
    assert!(
        actions.reads.is_empty(),
        "served before applying: {:?}",
        actions.reads
    );
    let last = actions.committed.unwrap().last;
    net.node(1).applied(last);
    let actions = net.node(1).take_actions();
    assert_eq!(actions.reads, vec![(ReadId(1), Ok(entry.index))]);
}
