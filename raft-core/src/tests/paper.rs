//! The claims of the Raft paper (§5) and of the dissertation's extensions, one test each.
//!
//! Every test names the rule it checks and ends its documentation with the section that states
//! the rule. Each drives real [`Raft`] values, either through the synchronous [`Network`] or by
//! hand (`step`, `take_actions`, `persisted`, `applied`) where the test must hold back a write,
//! an apply or a message. The tests assert outcomes (roles, terms, logs, commit indexes, reads,
//! the messages sent), so that breaking the rule breaks the test.

// A failed unwrap in a test is a failed test, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::harness::{Network, cmd, entries_with_terms, ids, log_terms, msg, test_config};
use crate::{
    Actions, AppendOutcome, Config, ConfigError, ConflictHint, Entry, EntryId, HardState,
    InitialState, LogIndex, Message, MessageBody, NodeId, Payload, ProtocolError, Raft, ReadId,
    ReadMode, Role, Term, Time,
};
use std::collections::{BTreeMap, BTreeSet};

// ----- helpers ---------------------------------------------------------------------------------

/// Long after every node started: no node still defers to the leader it may have known before
/// its start (a restart opens a stickiness window of one minimum election timeout).
const LATER: Time = Time(1_000);

fn eid(term: u64, index: u64) -> EntryId {
    EntryId {
        term: Term(term),
        index: LogIndex(index),
    }
}

fn hs(term: u64, vote: Option<u64>) -> HardState {
    HardState {
        term: Term(term),
        vote: vote.map(NodeId),
    }
}

/// Node `id` of an `n`-node cluster, started at time 0 from the given durable state, driven by
/// hand.
fn node_with(
    id: u64,
    n: u64,
    hard_state: HardState,
    terms: &[u64],
    tweak: impl Fn(&mut Config),
) -> Raft {
    let mut config = test_config(id);
    tweak(&mut config);
    let state = InitialState {
        hard_state,
        entries: entries_with_terms(terms),
        applied: LogIndex(0),
        membership: crate::Membership::new(ids(n)).ok(),
        ..InitialState::default()
    };
    Raft::new(config, state, id, Time(0)).unwrap()
}

fn no_pre_vote(config: &mut Config) {
    config.pre_vote = false;
}

fn vote_request(from: u64, to: u64, term: u64, last_log: EntryId, pre_vote: bool) -> Message {
    msg(
        from,
        to,
        term,
        MessageBody::RequestVote {
            pre_vote,
            last_log,
            transfer: false,
            campaign: 1,
        },
    )
}

fn vote_answer(from: u64, to: u64, term: u64, granted: bool, campaign: u64) -> Message {
    msg(
        from,
        to,
        term,
        MessageBody::RequestVoteResponse {
            pre_vote: false,
            granted,
            campaign,
        },
    )
}

/// An AppendEntries whose entries follow `prev` with the given terms (payloads as in
/// [`entries_with_terms`], so that equal ids mean equal entries).
fn append(from: u64, to: u64, term: u64, prev: EntryId, terms: &[u64], commit: u64) -> Message {
    let entries = terms
        .iter()
        .enumerate()
        .map(|(k, &t)| {
            let index = prev.index.0 + 1 + k as u64;
            Entry {
                term: Term(t),
                index: LogIndex(index),
                payload: Payload::Command(index.to_be_bytes().to_vec().into()),
            }
        })
        .collect();
    msg(
        from,
        to,
        term,
        MessageBody::AppendEntries {
            prev_log: prev,
            entries,
            leader_commit: LogIndex(commit),
            round: 1,
        },
    )
}

fn heartbeat(from: u64, to: u64, term: u64) -> Message {
    msg(
        from,
        to,
        term,
        MessageBody::Heartbeat {
            leader_commit: LogIndex(0),
            round: 1,
            freshness: None,
        },
    )
}

/// Every message of a batch, whatever the step at which the driver may send it.
fn all_sent(actions: &Actions) -> Vec<Message> {
    actions
        .messages
        .iter()
        .chain(&actions.persisted_messages)
        .cloned()
        .collect()
}

/// The (term, granted) of the single vote answer in `actions`.
fn the_vote_answer(actions: &Actions) -> (Term, bool) {
    let answers: Vec<(Term, bool)> = all_sent(actions)
        .into_iter()
        .filter_map(|m| match m.body {
            MessageBody::RequestVoteResponse { granted, .. } => Some((m.term, granted)),
            _ => None,
        })
        .collect();
    assert_eq!(answers.len(), 1, "one vote answer expected: {actions:?}");
    answers[0]
}

/// The outcome of the single AppendEntries answer in `actions`.
fn the_append_answer(actions: &Actions) -> AppendOutcome {
    let answers: Vec<AppendOutcome> = all_sent(actions)
        .into_iter()
        .filter_map(|m| match m.body {
            MessageBody::AppendEntriesResponse { outcome, .. } => Some(outcome),
            _ => None,
        })
        .collect();
    assert_eq!(answers.len(), 1, "one append answer expected: {actions:?}");
    answers[0]
}

fn is_vote(m: &Message) -> bool {
    matches!(
        m.body,
        MessageBody::RequestVote { .. } | MessageBody::RequestVoteResponse { .. }
    )
}

fn is_append(m: &Message) -> bool {
    matches!(m.body, MessageBody::AppendEntries { .. })
}

fn is_heartbeat(m: &Message) -> bool {
    matches!(m.body, MessageBody::Heartbeat { .. })
}

fn is_timeout_now(m: &Message) -> bool {
    matches!(m.body, MessageBody::TimeoutNow)
}

/// Whether an AppendEntries carries the entry `id`.
fn carries(m: &Message, id: EntryId) -> bool {
    match &m.body {
        MessageBody::AppendEntries { entries, .. } => entries.iter().any(|e| e.id() == id),
        _ => false,
    }
}

/// Delivers queued messages round after round until none is left; the ones `keep` refuses are
/// dropped, as if lost.
fn pump(net: &mut Network, mut keep: impl FnMut(&Message) -> bool) {
    let mut delivered = 0usize;
    for _ in 0..1_000 {
        let batch = net.take_messages();
        if batch.is_empty() {
            return;
        }
        delivered += batch.len();
        assert!(delivered < 100_000, "messages kept multiplying");
        for m in batch {
            if keep(&m) {
                net.deliver(m);
            }
        }
    }
    panic!("messages kept flowing");
}

/// Moves the clock to node `id`'s election deadline and ticks that node alone; nothing is
/// delivered.
fn start_election(net: &mut Network, id: u64) {
    let deadline = net.peek(id).next_deadline();
    net.now = net.now.max(deadline);
    let now = net.now;
    net.node(id).tick(now);
}

/// Elects node `id` by delivering only election traffic: the new leader's first AppendEntries
/// stay queued.
fn win_election(net: &mut Network, id: u64) {
    start_election(net, id);
    let mut held = Vec::new();
    pump(net, |m| {
        if is_vote(m) {
            true
        } else {
            held.push(m.clone());
            false
        }
    });
    net.queue.extend(held);
    assert_eq!(net.peek(id).role(), Role::Leader, "n{id} should have won");
}

fn entries_of(raft: &Raft) -> Vec<Entry> {
    raft.log().iter().cloned().collect()
}

/// Everything observable about a node's state, to check that an input changed nothing.
fn fingerprint(raft: &Raft) -> String {
    format!(
        "{:?}",
        (
            raft.role(),
            raft.hard_state(),
            raft.leader(),
            entries_of(raft),
            raft.commit_index(),
            raft.applied_index(),
            raft.next_deadline(),
        )
    )
}

fn reads_of(net: &Network, id: u64) -> Vec<(ReadId, Result<LogIndex, ProtocolError>)> {
    net.reads.get(&NodeId(id)).cloned().unwrap_or_default()
}

// ----- §5.1: terms -----------------------------------------------------------------------------

/// Node 1 of three in `role`, with nothing left in flight.
fn node1_in(role: Role) -> Network {
    match role {
        Role::Follower => {
            let mut net = Network::new(3);
            net.now = LATER;
            net
        }
        Role::PreCandidate => {
            let mut net = Network::new(3);
            start_election(&mut net, 1);
            net.take_messages();
            net
        }
        Role::Candidate => {
            let mut net = Network::with(3, no_pre_vote);
            start_election(&mut net, 1);
            net.take_messages();
            net
        }
        Role::Leader => {
            let mut net = Network::new(3);
            net.elect(1);
            net
        }
    }
}

/// A node that receives any message carrying a term above its own adopts that term, clears its
/// vote, persists both, and becomes (or stays) a follower, whatever role it had (§5.1)
#[test]
fn higher_term_in_any_message_makes_any_role_adopt_it_and_follow() {
    // (what, body, whether the sender is thereby known as the leader of the new term)
    let bodies = [
        (
            "heartbeat",
            MessageBody::Heartbeat {
                leader_commit: LogIndex(0),
                round: 1,
                freshness: None,
            },
            true,
        ),
        (
            "append",
            MessageBody::AppendEntries {
                prev_log: eid(0, 0),
                entries: Vec::new(),
                leader_commit: LogIndex(0),
                round: 1,
            },
            true,
        ),
        (
            "append answer",
            MessageBody::AppendEntriesResponse {
                round: 1,
                session: 0,
                outcome: AppendOutcome::Success {
                    match_index: LogIndex(0),
                },
            },
            false,
        ),
        (
            "heartbeat answer",
            MessageBody::HeartbeatResponse {
                round: 1,
                session: 0,
            },
            false,
        ),
        (
            "refused vote",
            MessageBody::RequestVoteResponse {
                pre_vote: false,
                granted: false,
                campaign: 1,
            },
            false,
        ),
    ];
    for role in [
        Role::Follower,
        Role::PreCandidate,
        Role::Candidate,
        Role::Leader,
    ] {
        for (what, body, names_leader) in &bodies {
            let mut net = node1_in(role);
            assert_eq!(net.peek(1).role(), role);
            assert!(net.peek(1).term() < Term(7));
            net.deliver(msg(2, 1, 7, body.clone()));
            let n1 = net.peek(1);
            let case = format!("{role:?} receiving a {what}");
            assert_eq!(n1.role(), Role::Follower, "{case}");
            assert_eq!(n1.hard_state(), hs(7, None), "{case}");
            assert_eq!(n1.leader(), names_leader.then_some(NodeId(2)), "{case}");
            assert_eq!(
                net.hard_states[&NodeId(1)],
                hs(7, None),
                "{case}: persisted"
            );
        }
    }
    // A real vote request for a higher term does the same to a node that knows of no leader,
    // which then votes in the new term.
    for role in [Role::Follower, Role::PreCandidate, Role::Candidate] {
        let mut net = node1_in(role);
        net.deliver(vote_request(2, 1, 7, eid(1, 5), false));
        let n1 = net.peek(1);
        assert_eq!(n1.role(), Role::Follower, "{role:?}");
        assert_eq!(n1.hard_state(), hs(7, Some(2)), "{role:?}");
    }
}

/// A message from an older term is stale: it changes nothing on the receiver (not even its
/// election timer), a stale vote request is refused with the newer term, and a stale leader's
/// AppendEntries or heartbeat is answered with the newer term (§5.1)
#[test]
fn stale_term_message_is_rejected_and_answered_with_the_newer_term() {
    let stale = [
        append(1, 2, 3, eid(1, 1), &[3], 1),
        heartbeat(1, 2, 3),
        vote_request(3, 2, 4, eid(4, 9), false),
        vote_request(3, 2, 4, eid(4, 9), true),
    ];
    for message in stale {
        let mut raft = node_with(2, 3, hs(5, None), &[1, 1], |_| {});
        let before = fingerprint(&raft);
        raft.step(LATER, message.clone()).unwrap();
        let actions = raft.take_actions();
        assert_eq!(fingerprint(&raft), before, "{message:?}");
        assert!(actions.hard_state.is_none() && actions.entries.is_empty());
        let replies = all_sent(&actions);
        assert_eq!(replies.len(), 1, "{message:?}: {replies:?}");
        assert_eq!(replies[0].to, message.from);
        assert_eq!(replies[0].term, Term(5), "the reply carries the newer term");
        if let MessageBody::RequestVoteResponse { granted, .. } = replies[0].body {
            assert!(!granted, "a stale candidate gets no vote");
        }
    }

    // Stale answers do not count: grants from term 1 do not elect a candidate of term 2.
    let mut candidate = node_with(1, 5, hs(1, None), &[], no_pre_vote);
    candidate.tick(LATER);
    assert_eq!(candidate.role(), Role::Candidate);
    assert_eq!(candidate.term(), Term(2));
    let campaign = candidate.campaign();
    for voter in 2..=5 {
        candidate
            .step(LATER, vote_answer(voter, 1, 1, true, campaign))
            .unwrap();
    }
    assert_eq!(candidate.role(), Role::Candidate, "stale grants ignored");
    for voter in 2..=3 {
        candidate
            .step(LATER, vote_answer(voter, 1, 2, true, campaign))
            .unwrap();
    }
    assert_eq!(candidate.role(), Role::Leader, "current grants count");
}

/// A leader cut off while the others elect a new one goes on believing it leads; the first
/// follower it reaches answers its heartbeat with the newer term, and it steps down (§5.1)
#[test]
fn deposed_leader_learns_newer_term_from_a_follower_and_steps_down() {
    let mut net = Network::with(3, |c| c.check_quorum = false);
    net.elect(1);
    net.isolate(1);
    let mut new_leader = None;
    for _ in 0..1_000 {
        net.advance(1);
        new_leader = [2, 3]
            .into_iter()
            .find(|&id| net.peek(id).role() == Role::Leader);
        if new_leader.is_some() {
            break;
        }
    }
    let new_leader = new_leader.expect("n2 or n3 takes over");
    let new_term = net.peek(new_leader).term();
    assert!(new_term > Term(1));
    assert_eq!(net.peek(1).role(), Role::Leader, "n1 has not heard yet");
    assert_eq!(net.peek(1).term(), Term(1));

    // n1 may reach both followers again, but the new leader cannot reach n1: n1 can only learn
    // the new term from the followers' answers to its own stale heartbeats.
    net.heal();
    net.cut.insert((NodeId(new_leader), NodeId(1)));
    net.advance(net.peek(1).config().heartbeat_interval_ms);
    assert_eq!(net.peek(1).role(), Role::Follower);
    assert_eq!(net.peek(1).term(), new_term);
    assert_eq!(net.peek(new_leader).role(), Role::Leader, "not disrupted");
}

// ----- §5.2: leader election -------------------------------------------------------------------

/// Without PreVote, a follower that hears nothing for its election timeout becomes a candidate:
/// it increments its term, votes for itself (persisted), and asks every other node for its vote,
/// the requests going out only after the vote is durable (§5.2)
#[test]
fn election_timeout_makes_follower_a_candidate_that_votes_for_itself() {
    let mut net = Network::with(3, no_pre_vote);
    let deadline = net.peek(1).next_deadline();
    assert!((100..200).contains(&deadline.0), "{deadline:?}");

    net.node(1).tick(Time(deadline.0 - 1));
    assert_eq!(net.peek(1).role(), Role::Follower);
    assert!(net.node(1).take_actions().is_empty(), "nothing before time");

    net.node(1).tick(deadline);
    let raft = net.node(1);
    assert_eq!(raft.role(), Role::Candidate);
    let actions = raft.take_actions();
    assert_eq!(actions.hard_state, Some(hs(1, Some(1))));
    assert!(actions.messages.is_empty());
    let mut to = Vec::new();
    for m in &actions.persisted_messages {
        assert_eq!(m.term, Term(1));
        assert_eq!(
            m.body,
            MessageBody::RequestVote {
                pre_vote: false,
                last_log: eid(0, 0),
                transfer: false,
                campaign: raft.campaign(),
            }
        );
        to.push(m.to.0);
    }
    assert_eq!(to, vec![2, 3]);
}

/// With PreVote, a follower that times out first becomes a pre-candidate: its term and vote do
/// not change, and it asks the others whether they would vote for it in the next term
/// (dissertation §9.6)
#[test]
fn election_timeout_with_pre_vote_starts_a_pre_vote_without_changing_term() {
    let mut raft = node_with(1, 3, hs(4, Some(2)), &[1, 4], |_| {});
    raft.tick(LATER);
    assert_eq!(raft.role(), Role::PreCandidate);
    assert_eq!(raft.hard_state(), hs(4, Some(2)));
    let actions = raft.take_actions();
    assert_eq!(actions.hard_state, None, "nothing to persist");
    let requests = all_sent(&actions);
    assert_eq!(requests.len(), 2);
    for m in requests {
        assert_eq!(m.term, Term(5), "the term it would campaign in");
        assert_eq!(
            m.body,
            MessageBody::RequestVote {
                pre_vote: true,
                last_log: eid(4, 2),
                transfer: false,
                campaign: raft.campaign(),
            }
        );
    }
}

/// A candidate becomes leader as soon as a majority of the cluster (itself included) has
/// granted its vote, and not before (§5.2)
#[test]
fn candidate_wins_with_votes_from_a_majority() {
    let mut net = Network::with(5, no_pre_vote);
    start_election(&mut net, 1);
    let requests = net.take_messages();
    assert_eq!(requests.len(), 4);
    for voter in [2, 3] {
        let request = requests.iter().find(|m| m.to == NodeId(voter)).unwrap();
        net.deliver(request.clone());
        let answers = net.take_messages();
        assert_eq!(answers.len(), 1);
        net.deliver(answers[0].clone());
        let expected = if voter == 2 {
            Role::Candidate
        } else {
            Role::Leader
        };
        assert_eq!(net.peek(1).role(), expected, "after the vote of n{voter}");
    }
    assert_eq!(net.peek(1).term(), Term(1));
    assert_eq!(net.peek(1).leader(), Some(NodeId(1)));
}

/// A candidate that a majority refuses loses the election and returns to follower in its
/// term (§5.2)
#[test]
fn candidate_loses_when_a_majority_refuses() {
    // n1's log is behind n2..n4, which refuse it; n5 would grant, too late to matter.
    let mut logs = vec![(hs(1, None), entries_with_terms(&[1]))];
    for _ in 2..=4 {
        logs.push((hs(1, None), entries_with_terms(&[1, 1])));
    }
    logs.push((hs(1, None), entries_with_terms(&[1])));
    let mut net = Network::with_logs(logs, no_pre_vote);
    start_election(&mut net, 1);
    assert_eq!(net.peek(1).role(), Role::Candidate);
    net.settle();
    assert_eq!(net.peek(1).role(), Role::Follower);
    assert_eq!(net.peek(1).term(), Term(2));
    for id in 1..=5 {
        assert_ne!(net.peek(id).role(), Role::Leader, "n{id}");
    }
}

/// When votes split so that no candidate can yet count a majority, each waits; the first
/// randomized election timeout to expire starts a new term, whose election succeeds (§5.2)
#[test]
fn split_vote_is_resolved_by_a_new_election_after_a_randomized_timeout() {
    let mut net = Network::with(5, no_pre_vote);
    net.isolate(5); // its vote stays missing, so neither candidate has lost either
    let start = net.peek(1).next_deadline().max(net.peek(2).next_deadline());
    net.now = start;
    net.node(1).tick(start);
    net.node(2).tick(start);
    // n3 hears n1 first, n4 hears n2 first.
    let mut requests = net.take_messages();
    requests.sort_by_key(|m| !matches!((m.from.0, m.to.0), (1, 3) | (2, 4)));
    for m in requests {
        net.deliver(m);
    }
    pump(&mut net, |_| true);
    for id in [1, 2] {
        assert_eq!(net.peek(id).role(), Role::Candidate, "n{id} waits");
        assert_eq!(net.peek(id).term(), Term(1));
    }
    assert_eq!(net.peek(3).hard_state(), hs(1, Some(1)));
    assert_eq!(net.peek(4).hard_state(), hs(1, Some(2)));

    let deadlines: BTreeMap<u64, Time> = (1..=4)
        .map(|id| (id, net.peek(id).next_deadline()))
        .collect();
    for deadline in deadlines.values() {
        assert!((start.0 + 100..start.0 + 200).contains(&deadline.0));
    }
    assert_ne!(deadlines[&1], deadlines[&2], "randomized timeouts differ");
    let (&first, &first_deadline) = deadlines.iter().min_by_key(|(_, d)| **d).unwrap();
    assert_eq!(
        deadlines.values().filter(|&&d| d == first_deadline).count(),
        1
    );

    for _ in 0..300 {
        net.advance(1);
        if (1..=4).any(|id| net.peek(id).role() == Role::Leader) {
            break;
        }
    }
    assert_eq!(net.now, first_deadline);
    assert_eq!(net.peek(first).role(), Role::Leader);
    assert_eq!(net.peek(first).term(), Term(2));
}

/// A candidate (or pre-candidate) that receives AppendEntries or a heartbeat from a leader of its
/// own term recognises that leader and returns to follower (§5.2)
#[test]
fn candidate_steps_down_for_a_leader_of_its_term() {
    for pre_vote in [false, true] {
        for leader_message in [append(1, 2, 2, eid(1, 1), &[], 0), heartbeat(1, 2, 2)] {
            let mut raft = node_with(2, 3, hs(2, None), &[1], |c| c.pre_vote = pre_vote);
            raft.tick(LATER);
            let expected = if pre_vote {
                Role::PreCandidate
            } else {
                Role::Candidate
            };
            assert_eq!(raft.role(), expected);
            let term = raft.term();
            // A pre-candidate is still in term 2; a candidate moved to term 3.
            let mut leader_message = leader_message;
            leader_message.term = term;
            raft.step(LATER, leader_message).unwrap();
            assert_eq!(raft.role(), Role::Follower, "pre_vote {pre_vote}");
            assert_eq!(raft.term(), term);
            assert_eq!(raft.leader(), Some(NodeId(1)));
        }
    }
}

/// Each node grants at most one vote per term, to the first candidate that asks (a repeated
/// request from that same candidate is granted again); a new term brings a new vote (§5.2)
#[test]
fn at_most_one_vote_per_term_first_come_first_served() {
    for (first, second) in [(1, 2), (2, 1)] {
        let mut voter = node_with(3, 3, hs(0, None), &[], |_| {});
        let mut ask = |candidate: u64, term: u64| {
            voter
                .step(LATER, vote_request(candidate, 3, term, eid(0, 0), false))
                .unwrap();
            the_vote_answer(&voter.take_actions()).1
        };
        assert!(ask(first, 1), "first come");
        assert!(!ask(second, 1), "one vote per term");
        assert!(ask(first, 1), "the same candidate asking again");
        assert!(ask(second, 2), "a new term");
        assert_eq!(voter.hard_state(), hs(2, Some(second)));
    }
}

/// A vote is made durable before it is announced: the hard state carrying it is in the same
/// batch, and the answer is among the messages sent only after that write (Figure 2, §5.2)
#[test]
fn vote_is_persisted_before_the_answer_is_sent() {
    let mut voter = node_with(2, 3, hs(0, None), &[], |_| {});
    voter
        .step(LATER, vote_request(1, 2, 1, eid(0, 0), false))
        .unwrap();
    let actions = voter.take_actions();
    assert_eq!(actions.hard_state, Some(hs(1, Some(1))));
    assert!(
        actions.messages.is_empty(),
        "nothing may go out before the write"
    );
    assert_eq!(
        actions.persisted_messages,
        vec![vote_answer(2, 1, 1, true, 1)],
        "the grant goes out after the write"
    );
}

/// Election timeouts are drawn at random from [min, max): across nodes, seeds and successive
/// resets they spread over the range instead of colliding (§5.2)
#[test]
fn election_timeouts_are_randomized_within_the_configured_range() {
    let (min, max) = (100, 200);
    let in_range = |ms: u64| (min..max).contains(&ms);

    // Ten nodes of one cluster.
    let net = Network::new(10);
    let firsts: BTreeSet<u64> = (1..=10).map(|id| net.peek(id).next_deadline().0).collect();
    assert!(firsts.iter().all(|&ms| in_range(ms)), "{firsts:?}");
    assert!(firsts.len() >= 8, "ten nodes, few collisions: {firsts:?}");

    // One node under a hundred seeds.
    let by_seed: BTreeSet<u64> = (0..100)
        .map(|seed| {
            let state = InitialState {
                membership: crate::Membership::new(ids(3)).ok(),
                ..InitialState::default()
            };
            Raft::new(test_config(1), state, seed, Time(0))
                .unwrap()
                .next_deadline()
                .0
        })
        .collect();
    assert!(by_seed.iter().all(|&ms| in_range(ms)));
    assert!(by_seed.len() >= 50, "{} distinct", by_seed.len());

    // One node whose timer a leader's heartbeats reset two hundred times.
    let mut raft = node_with(1, 3, hs(1, None), &[], |_| {});
    let mut timeouts = Vec::new();
    for k in 0..200 {
        let now = Time(LATER.0 + k);
        raft.step(now, heartbeat(2, 1, 1)).unwrap();
        let _ = raft.take_actions();
        timeouts.push(raft.next_deadline().ms_since(now));
    }
    assert!(timeouts.iter().all(|&ms| in_range(ms)), "{timeouts:?}");
    let distinct: BTreeSet<u64> = timeouts.iter().copied().collect();
    assert!(distinct.len() >= 50, "{} distinct", distinct.len());
    assert!(*distinct.first().unwrap() < min + 10 && *distinct.last().unwrap() >= max - 10);
}

// ----- §5.3: log replication -------------------------------------------------------------------

/// A new leader's first act is to append a blank entry of its term and send AppendEntries with
/// it to every follower, right after its last entry (§5.3, §5.4.2)
#[test]
fn new_leader_appends_a_blank_entry_and_sends_it_to_every_follower() {
    // (log of the new leader, its term before the election)
    for (terms, term) in [(&[][..], 0), (&[1, 1][..], 1)] {
        let mut raft = node_with(1, 3, hs(term, None), terms, no_pre_vote);
        raft.tick(LATER);
        let _ = raft.take_actions();
        let new_term = term + 1;
        let campaign = raft.campaign();
        raft.step(LATER, vote_answer(2, 1, new_term, true, campaign))
            .unwrap();
        assert_eq!(raft.role(), Role::Leader);
        let actions = raft.take_actions();
        let blank = Entry {
            term: Term(new_term),
            index: LogIndex(terms.len() as u64 + 1),
            payload: Payload::Blank,
        };
        assert_eq!(actions.entries, vec![blank.clone()]);
        let prev_log = terms
            .last()
            .map_or(eid(0, 0), |&t| eid(t, terms.len() as u64));
        let mut to = Vec::new();
        for m in &actions.messages {
            let MessageBody::AppendEntries {
                prev_log: sent_prev,
                entries,
                ..
            } = &m.body
            else {
                panic!("only AppendEntries expected: {m:?}");
            };
            assert_eq!(m.term, Term(new_term));
            assert_eq!(*sent_prev, prev_log);
            assert_eq!(entries, &vec![blank.clone()]);
            to.push(m.to.0);
        }
        assert_eq!(to, vec![2, 3]);
    }
}

/// A proposal is sent to the followers and committed as soon as a majority stores it, even
/// while a minority has not; every node then applies it (§5.3)
#[test]
fn proposal_commits_once_a_majority_stores_it_and_is_applied_everywhere() {
    let mut net = Network::new(3);
    net.elect(1);
    let x = net.node(1).propose(cmd("x")).unwrap();
    let mut held = Vec::new();
    pump(&mut net, |m| {
        if m.to == NodeId(3) {
            held.push(m.clone());
            false
        } else {
            true
        }
    });
    assert!(held.iter().any(|m| carries(m, x)), "x was sent to n3 too");
    assert_eq!(
        net.peek(1).commit_index(),
        x.index,
        "n1 and n2 are a majority"
    );
    assert_eq!(net.peek(2).commit_index(), x.index);
    assert!(net.peek(3).entry(x.index).is_none());
    assert_eq!(net.applied_commands(1), vec!["x"]);
    assert_eq!(net.applied_commands(2), vec!["x"]);
    assert!(net.applied_commands(3).is_empty());

    for m in held {
        net.deliver(m);
    }
    net.settle();
    net.advance(net.peek(1).config().heartbeat_interval_ms);
    for id in 1..=3 {
        assert_eq!(net.applied_commands(id), vec!["x"], "n{id}");
    }
}

/// The leader counts its own copy toward a majority only once the driver reports it durable;
/// a majority of followers can commit without it, but nothing is applied on the leader before
/// its own write completes (§5.3, dissertation §10.2.1)
#[test]
fn leader_counts_itself_only_after_its_entries_are_persisted() {
    let new_leader = || {
        let mut raft = node_with(1, 3, hs(0, None), &[], no_pre_vote);
        raft.tick(LATER);
        let _ = raft.take_actions();
        let campaign = raft.campaign();
        raft.step(LATER, vote_answer(2, 1, 1, true, campaign))
            .unwrap();
        assert_eq!(raft.role(), Role::Leader);
        let actions = raft.take_actions();
        assert_eq!(actions.entries.len(), 1);
        (raft, actions.entries[0].id())
    };
    let stored = |from: u64| {
        msg(
            from,
            1,
            1,
            MessageBody::AppendEntriesResponse {
                round: 1,
                session: 0,
                outcome: AppendOutcome::Success {
                    match_index: LogIndex(1),
                },
            },
        )
    };

    // One follower plus an unwritten leader copy is not a majority.
    let (mut raft, blank) = new_leader();
    raft.step(LATER, stored(2)).unwrap();
    assert_eq!(raft.commit_index(), LogIndex(0));
    assert!(raft.take_actions().committed.is_none());
    raft.persisted(blank);
    assert_eq!(raft.commit_index(), LogIndex(1));
    assert_eq!(raft.take_actions().committed.map(|c| c.len()), Some(1));

    // Two followers are a majority on their own, but the leader applies only what it stored.
    let (mut raft, blank) = new_leader();
    raft.step(LATER, stored(2)).unwrap();
    raft.step(LATER, stored(3)).unwrap();
    assert_eq!(raft.commit_index(), LogIndex(1));
    assert!(raft.take_actions().committed.is_none());
    raft.persisted(blank);
    assert_eq!(raft.take_actions().committed.map(|c| c.len()), Some(1));
}

/// A follower refuses AppendEntries whose previous entry it does not hold with that term,
/// keeps its log, and tells the leader where its log diverges (§5.3)
#[test]
fn follower_rejects_append_entries_whose_previous_entry_does_not_match() {
    let follower_terms = [1, 1, 2, 2];
    // (previous entry the leader claims, expected answer)
    let cases = [
        (
            eid(3, 4),
            AppendOutcome::Reject {
                rejected: LogIndex(4),
                hint: ConflictHint {
                    term: Some(Term(2)),
                    first_index: LogIndex(3),
                },
            },
        ),
        (
            eid(1, 3),
            AppendOutcome::Reject {
                rejected: LogIndex(3),
                hint: ConflictHint {
                    term: Some(Term(2)),
                    first_index: LogIndex(3),
                },
            },
        ),
        (
            eid(3, 6),
            AppendOutcome::Reject {
                rejected: LogIndex(6),
                hint: ConflictHint {
                    term: None,
                    first_index: LogIndex(5),
                },
            },
        ),
        (
            eid(2, 4),
            AppendOutcome::Success {
                match_index: LogIndex(5),
            },
        ),
    ];
    for (prev, expected) in cases {
        let mut raft = node_with(2, 3, hs(2, None), &follower_terms, |_| {});
        raft.step(LATER, append(1, 2, 3, prev, &[3], 0)).unwrap();
        let actions = raft.take_actions();
        assert_eq!(the_append_answer(&actions), expected, "prev {prev:?}");
        if matches!(expected, AppendOutcome::Reject { .. }) {
            assert_eq!(log_terms(&raft), follower_terms, "prev {prev:?}");
            assert!(actions.entries.is_empty());
        } else {
            assert_eq!(log_terms(&raft), [1, 1, 2, 2, 3]);
        }
    }
}

/// After the consistency check passes, a follower keeps the entries that match the leader's,
/// deletes the first conflicting entry and all that follow, appends the leader's new entries, and
/// answers only after storing them (§5.3)
#[test]
fn follower_truncates_conflicting_entries_and_appends_the_leaders() {
    let follower_terms = [1, 1, 2, 2, 2];
    // (prev, leader's entries after it, resulting log, first index to write, match index)
    type Case = (EntryId, &'static [u64], &'static [u64], Option<u64>, u64);
    let cases: [Case; 4] = [
        (eid(1, 2), &[3, 3], &[1, 1, 3, 3], Some(3), 4),
        (eid(1, 1), &[1, 2], &[1, 1, 2, 2, 2], None, 3),
        (eid(2, 3), &[2, 3], &[1, 1, 2, 2, 3], Some(5), 5),
        (eid(2, 5), &[3], &[1, 1, 2, 2, 2, 3], Some(6), 6),
    ];
    for (prev, terms, want, first_written, match_index) in cases {
        let mut raft = node_with(2, 3, hs(2, None), &follower_terms, |_| {});
        raft.step(LATER, append(1, 2, 3, prev, terms, 0)).unwrap();
        let actions = raft.take_actions();
        let case = format!("prev {prev:?} entries {terms:?}");
        assert_eq!(log_terms(&raft), want, "{case}");
        assert_eq!(
            actions.entries.first().map(|e| e.index.0),
            first_written,
            "{case}"
        );
        assert!(
            actions.messages.is_empty(),
            "{case}: answer only after the write"
        );
        assert_eq!(
            the_append_answer(&actions),
            AppendOutcome::Success {
                match_index: LogIndex(match_index)
            },
            "{case}"
        );
    }
}

/// A follower advances its commit index to the leader's, but never past the last entry the
/// message proved it shares with the leader, and never backwards (Figure 2, §5.3)
#[test]
fn follower_commits_up_to_the_last_new_entry_it_shares_with_the_leader() {
    let mut raft = node_with(2, 3, hs(2, None), &[1, 1, 2, 2, 2], |_| {});
    // Entries 3..5 may differ from the leader's: only 2 is known to match.
    raft.step(LATER, append(1, 2, 3, eid(1, 1), &[1], 5))
        .unwrap();
    assert_eq!(raft.commit_index(), LogIndex(2));
    raft.step(LATER, append(1, 2, 3, eid(1, 1), &[], 1))
        .unwrap();
    assert_eq!(raft.commit_index(), LogIndex(2), "never backwards");
    raft.step(LATER, append(1, 2, 3, eid(2, 4), &[], 5))
        .unwrap();
    assert_eq!(raft.commit_index(), LogIndex(4));
}

/// If an AppendEntries is lost, the leader retries until the follower stores the entry, even
/// when no other proposal or commit would prompt a new message: "the leader retries
/// AppendEntries RPCs indefinitely" (§5.3)
#[test]
fn leader_retries_lost_append_entries_until_the_follower_stores_them() {
    let mut net = Network::new(3);
    net.elect(1);
    net.isolate(2); // x cannot commit without n3, so no commit advance comes to the rescue
    let x = net.node(1).propose(cmd("x")).unwrap();
    let lost = net.take_messages();
    assert!(lost.iter().any(|m| m.to == NodeId(3) && carries(m, x)));
    drop(lost);
    net.advance(200);
    assert_eq!(
        net.peek(3).entry(x.index).map(Entry::id),
        Some(x),
        "n3 never received x again"
    );
    assert_eq!(net.peek(1).commit_index(), x.index);
}

/// Figure 7: a leader of term 8 meets six followers whose logs miss entries, hold extra
/// uncommitted entries, or both. Each follower's log ends up equal to the leader's, the leader
/// changes none of its own entries, and thanks to the conflict hint the leader needs about one
/// AppendEntries per term on which a follower differs, not one per entry (§5.3)
#[test]
fn figure_7_leader_brings_every_follower_in_line_in_few_round_trips() {
    let leader_terms = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6];
    // (follower, its log, most AppendEntries needed, what one-entry-at-a-time back-off needs)
    let followers: [(&str, &[u64], usize, usize); 6] = [
        ("a", &[1, 1, 1, 4, 4, 5, 5, 6, 6], 2, 2),
        ("b", &[1, 1, 1, 4], 2, 7),
        ("c", &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6], 1, 1),
        ("d", &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7], 1, 1),
        ("e", &[1, 1, 1, 4, 4, 4, 4], 3, 6),
        ("f", &[1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3], 3, 8),
    ];
    let mut logs = vec![(hs(7, None), entries_with_terms(&leader_terms))];
    for (_, terms, _, _) in &followers {
        logs.push((hs(7, None), entries_with_terms(terms)));
    }
    let mut net = Network::with_logs(logs, |c| {
        c.pre_vote = false;
        c.check_quorum = false;
    });
    let original = entries_of(net.peek(1));

    // n1 is elected in term 8 by a, b, e and f; c and d refuse (their logs are more up to date).
    start_election(&mut net, 1);
    let mut appends: BTreeMap<u64, usize> = BTreeMap::new();
    let mut in_line: BTreeSet<u64> = BTreeSet::new();
    for _ in 0..100 {
        let batch = net.take_messages();
        if batch.is_empty() {
            break;
        }
        for m in batch {
            let to = m.to.0;
            let counted = m.from == NodeId(1) && is_append(&m) && !in_line.contains(&to);
            net.deliver(m);
            if counted {
                *appends.entry(to).or_default() += 1;
                if entries_of(net.peek(to)) == entries_of(net.peek(1)) {
                    in_line.insert(to);
                }
            }
        }
    }
    let leader = net.peek(1);
    assert_eq!(leader.role(), Role::Leader);
    assert_eq!(leader.term(), Term(8));
    assert_eq!(log_terms(leader), [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 8]);
    assert_eq!(entries_of(leader)[..10], original[..], "leader append-only");
    assert_eq!(leader.commit_index(), LogIndex(11));
    for (k, (name, _, most, naive)) in followers.iter().enumerate() {
        let id = k as u64 + 2;
        assert_eq!(
            entries_of(net.peek(id)),
            entries_of(net.peek(1)),
            "follower ({name})"
        );
        let used = appends[&id];
        assert!(
            used <= *most,
            "follower ({name}) needed {used} AppendEntries, at most {most} expected"
        );
        assert!(used <= *naive);
    }
    let total: usize = appends.values().sum();
    let naive_total: usize = followers.iter().map(|f| f.3).sum();
    assert!(total < naive_total, "{total} vs {naive_total}");
}

// ----- §5.4.1: election restriction ------------------------------------------------------------

/// A voter grants its vote (or pre-vote) only to a candidate whose log is at least as up to
/// date as its own: a later last term, or the same last term and at least the same length
/// (§5.4.1)
#[test]
fn voter_refuses_a_candidate_whose_log_is_less_up_to_date() {
    // The voter's log ends at (term 2, index 3).
    // (candidate's last term, last index, granted)
    let cases = [
        (2, 3, true),
        (2, 4, true),
        (3, 1, true),
        (3, 5, true),
        (2, 2, false),
        (1, 3, false),
        (1, 9, false),
        (0, 0, false),
    ];
    for pre_vote in [false, true] {
        for (last_term, last_index, granted) in cases {
            let mut voter = node_with(2, 3, hs(2, None), &[1, 1, 2], |_| {});
            let request = vote_request(1, 2, 3, eid(last_term, last_index), pre_vote);
            voter.step(LATER, request).unwrap();
            let case = format!("pre_vote {pre_vote}, candidate last ({last_term}, {last_index})");
            let (_, answer) = the_vote_answer(&voter.take_actions());
            assert_eq!(answer, granted, "{case}");
            let vote = (granted && !pre_vote).then_some(NodeId(1));
            assert_eq!(voter.hard_state().vote, vote, "{case}");
        }
    }
}

/// A node whose log is shorter, or ends in an older term, than the logs of a majority can never
/// become leader, with or without PreVote; a node with an up-to-date log can (§5.4.1)
#[test]
fn node_with_a_shorter_or_older_log_cannot_become_leader() {
    for (what, behind) in [("shorter", &[1][..]), ("older", &[1, 1, 1][..])] {
        for pre_vote in [false, true] {
            let logs = vec![
                (hs(2, None), entries_with_terms(behind)),
                (hs(2, None), entries_with_terms(&[1, 2])),
                (hs(2, None), entries_with_terms(&[1, 2])),
            ];
            let mut net = Network::with_logs(logs, |c| {
                c.pre_vote = pre_vote;
                c.check_quorum = false;
            });
            let case = format!("{what} log, pre_vote {pre_vote}");
            for _ in 0..3 {
                start_election(&mut net, 1);
                net.settle();
                for id in 1..=3 {
                    assert_ne!(net.peek(id).role(), Role::Leader, "{case}: n{id}");
                }
            }
            if pre_vote {
                assert_eq!(net.peek(1).term(), Term(2), "{case}: failed pre-votes");
            }
            net.now = net.now.plus_ms(200);
            net.campaign(2);
            assert_eq!(net.peek(2).role(), Role::Leader, "{case}: n2 can win");
        }
    }
}

// ----- §5.4.2: committing entries from previous terms (Figure 8) --------------------------------

/// Figure 8 up to (c): S1, leader of term 4, has copied its term-2 entry at index 2 onto S2 and
/// S3, a majority, but not yet its own term-4 entry; S5 (down) holds a term-3 entry at index 2.
fn figure_8_at_c() -> Network {
    let logs = vec![
        (hs(3, None), entries_with_terms(&[1, 2])),
        (hs(2, Some(1)), entries_with_terms(&[1, 2])),
        (hs(3, Some(5)), entries_with_terms(&[1])),
        (hs(3, Some(5)), entries_with_terms(&[1])),
        (hs(3, Some(5)), entries_with_terms(&[1, 3])),
    ];
    let mut net = Network::with_logs(logs, |c| {
        c.pre_vote = false;
        c.check_quorum = false;
        c.max_entries_per_append = 1;
    });
    net.isolate(5);
    start_election(&mut net, 1);
    // Deliver everything except S1's entries of term 4, and no entries to S4.
    for _ in 0..100 {
        let batch = net.take_messages();
        if batch.is_empty() {
            break;
        }
        for mut m in batch {
            if let MessageBody::AppendEntries { entries, .. } = &mut m.body {
                if m.to == NodeId(4) {
                    continue;
                }
                entries.retain(|e| e.term < Term(4));
            }
            net.deliver(m);
        }
    }
    assert_eq!(net.peek(1).role(), Role::Leader);
    assert_eq!(net.peek(1).term(), Term(4));
    assert_eq!(log_terms(net.peek(1)), [1, 2, 4]);
    net
}

/// Figure 8: a leader does not commit an entry of an earlier term by counting its replicas, even
/// once a majority stores it, because a later leader may still overwrite it (d); the entry is
/// committed only when an entry of the leader's own term is committed after it (e) (§5.4.2)
#[test]
fn figure_8_entry_of_an_earlier_term_commits_only_under_one_of_the_current_term() {
    let term2_entry = eid(2, 2);
    let never_applied = |net: &Network| {
        net.applied
            .values()
            .flatten()
            .all(|e| e.id() != term2_entry)
    };

    // (c) The term-2 entry is on S1, S2 and S3, yet nothing is committed.
    let net = figure_8_at_c();
    for id in 1..=3 {
        assert_eq!(
            net.peek(id).entry(LogIndex(2)).map(Entry::id),
            Some(term2_entry)
        );
    }
    for id in 1..=5 {
        assert!(net.peek(id).commit_index() < LogIndex(2), "n{id}");
    }

    // (d) S1 crashes; S5 is elected (term 4 is refused: S2-S4 voted for S1; term 5 is won)
    // and replaces the term-2 entry everywhere with its own term-3 entry. Had S1 committed it
    // in (c), a committed entry would now be lost.
    let mut net = figure_8_at_c();
    net.heal();
    net.isolate(1);
    net.now = net.now.plus_ms(200);
    for _ in 0..3 {
        if net.peek(5).role() == Role::Leader {
            break;
        }
        start_election(&mut net, 5);
        net.settle();
    }
    assert_eq!(net.peek(5).role(), Role::Leader);
    assert_eq!(net.peek(5).term(), Term(5));
    net.advance(net.peek(5).config().heartbeat_interval_ms);
    for id in 2..=5 {
        assert_eq!(log_terms(net.peek(id)), [1, 3, 5], "n{id}");
        assert_eq!(net.peek(id).commit_index(), LogIndex(3), "n{id}");
    }
    assert!(
        never_applied(&net),
        "the overwritten entry was never applied"
    );

    // (e) Instead, S1 gets an entry of term 4 onto a majority: that commits it and, with it,
    // the term-2 entry; S5 can no longer be elected.
    let mut net = figure_8_at_c();
    let y = net.node(1).propose(cmd("y")).unwrap();
    net.settle();
    assert_eq!(log_terms(net.peek(1)), [1, 2, 4, 4]);
    assert_eq!(net.peek(1).commit_index(), y.index);
    for id in 2..=3 {
        assert_eq!(log_terms(net.peek(id)), [1, 2, 4, 4], "n{id}");
    }
    assert!(!never_applied(&net), "the term-2 entry is applied on S1");
    net.heal();
    net.isolate(1);
    net.now = net.now.plus_ms(200);
    for _ in 0..3 {
        start_election(&mut net, 5);
        net.settle();
        assert_ne!(net.peek(5).role(), Role::Leader);
    }
    for id in 2..=3 {
        assert_eq!(
            net.peek(id).entry(LogIndex(2)).map(Entry::id),
            Some(term2_entry)
        );
    }
}

// ----- duplicated and reordered messages -------------------------------------------------------

/// AppendEntries are idempotent: a duplicate changes nothing and writes nothing, and a delayed
/// shorter copy does not truncate entries that a later message appended (§5.5)
#[test]
fn duplicated_or_delayed_append_entries_are_harmless() {
    let mut raft = node_with(2, 3, hs(1, None), &[1], |_| {});
    let m = append(1, 2, 2, eid(1, 1), &[2, 2], 1);
    raft.step(LATER, m.clone()).unwrap();
    let first = raft.take_actions();
    assert_eq!(first.entries.len(), 2);
    raft.persisted(first.entries[1].id());
    let stored = AppendOutcome::Success {
        match_index: LogIndex(3),
    };
    assert_eq!(the_append_answer(&first), stored);

    raft.step(LATER, m).unwrap();
    let again = raft.take_actions();
    assert!(again.entries.is_empty() && again.hard_state.is_none());
    assert_eq!(the_append_answer(&again), stored);
    assert_eq!(log_terms(&raft), [1, 2, 2]);

    raft.step(LATER, append(1, 2, 2, eid(1, 1), &[2], 1))
        .unwrap();
    let delayed = raft.take_actions();
    assert!(delayed.entries.is_empty());
    assert_eq!(log_terms(&raft), [1, 2, 2], "nothing truncated");
}

/// A leader ignores stale answers: a duplicated or reordered success does not lower what it knows
/// of a follower or its commit index, a stale rejection does not make it resend entries the
/// follower already holds, and a duplicated vote is counted once (§5.5)
#[test]
fn duplicated_or_reordered_answers_are_harmless() {
    let mut net = Network::new(3);
    net.elect(1);
    let x = net.propose(1, "x");
    assert_eq!(net.peek(1).match_index(NodeId(2)), Some(x.index));
    let commit = net.peek(1).commit_index();
    let session = net.peek(2).session();
    let old_success = msg(
        2,
        1,
        1,
        MessageBody::AppendEntriesResponse {
            round: 1,
            session,
            outcome: AppendOutcome::Success {
                match_index: LogIndex(1),
            },
        },
    );
    let old_reject = msg(
        2,
        1,
        1,
        MessageBody::AppendEntriesResponse {
            round: 1,
            session,
            outcome: AppendOutcome::Reject {
                rejected: LogIndex(1),
                hint: ConflictHint {
                    term: None,
                    first_index: LogIndex(1),
                },
            },
        },
    );
    for m in [old_success.clone(), old_reject, old_success] {
        net.deliver(m);
        assert_eq!(net.peek(1).match_index(NodeId(2)), Some(x.index));
        assert_eq!(net.peek(1).commit_index(), commit);
        let sent = net.take_messages();
        assert!(!sent.iter().any(is_append), "nothing resent: {sent:?}");
    }
    // The next entry goes to n2 on its own, right after x.
    let y = net.node(1).propose(cmd("y")).unwrap();
    let sent = net.take_messages();
    let to_n2: Vec<&Message> = sent.iter().filter(|m| m.to == NodeId(2)).collect();
    assert_eq!(to_n2.len(), 1);
    match &to_n2[0].body {
        MessageBody::AppendEntries {
            prev_log, entries, ..
        } => {
            assert_eq!(*prev_log, x);
            assert_eq!(entries.iter().map(Entry::id).collect::<Vec<_>>(), vec![y]);
        }
        other => panic!("{other:?}"),
    }

    // A vote delivered three times is one vote.
    let mut candidate = node_with(1, 5, hs(0, None), &[], no_pre_vote);
    candidate.tick(LATER);
    let campaign = candidate.campaign();
    for _ in 0..3 {
        candidate
            .step(LATER, vote_answer(2, 1, 1, true, campaign))
            .unwrap();
    }
    assert_eq!(candidate.role(), Role::Candidate);
    candidate
        .step(LATER, vote_answer(3, 1, 1, true, campaign))
        .unwrap();
    assert_eq!(candidate.role(), Role::Leader);
}

// ----- PreVote (dissertation §9.6) -------------------------------------------------------------

/// With PreVote, a node cut off from the cluster fails its pre-votes and so never raises its
/// term; when it returns, the leader keeps its office and no term moves. Without PreVote the same
/// node comes back with a higher term and deposes the leader (dissertation §9.6)
#[test]
fn pre_vote_keeps_a_rejoining_node_from_disrupting_the_leader() {
    for pre_vote in [true, false] {
        let mut net = Network::with(3, |c| c.pre_vote = pre_vote);
        net.elect(1);
        net.isolate(3);
        net.advance(1_000);
        let isolated_term = net.peek(3).term();
        net.heal();
        net.advance(300);
        if pre_vote {
            assert_eq!(isolated_term, Term(1), "pre-votes do not raise the term");
            assert_eq!(net.peek(1).role(), Role::Leader);
            for id in 1..=3 {
                assert_eq!(net.peek(id).term(), Term(1), "n{id}");
                assert_eq!(net.peek(id).leader(), Some(NodeId(1)), "n{id}");
            }
        } else {
            assert!(isolated_term > Term(1));
            assert!(net.peek(1).term() > Term(1), "the leader was deposed");
        }
    }
}

/// Granting or refusing a pre-vote changes nothing on the voter (no term, no vote, nothing to
/// persist), so it can still vote for anyone in the real election; the pre-candidate moves to the
/// new term only once it has won the pre-vote (dissertation §9.6)
#[test]
fn pre_vote_changes_no_term_on_voters_or_pre_candidate() {
    // (candidate's last log entry, granted)
    for (last, granted) in [(eid(1, 1), true), (eid(0, 0), false)] {
        let mut voter = node_with(2, 3, hs(1, None), &[1], |_| {});
        voter
            .step(LATER, vote_request(1, 2, 2, last, true))
            .unwrap();
        let actions = voter.take_actions();
        let (term, answer) = the_vote_answer(&actions);
        assert_eq!(answer, granted);
        // A grant carries the term it was asked for; a refusal carries the voter's term.
        assert_eq!(term, if granted { Term(2) } else { Term(1) });
        assert_eq!(actions.hard_state, None);
        assert_eq!(voter.hard_state(), hs(1, None));
        // The real election of term 2 may still go to another candidate.
        voter
            .step(LATER, vote_request(3, 2, 2, eid(1, 1), false))
            .unwrap();
        assert!(the_vote_answer(&voter.take_actions()).1);
        assert_eq!(voter.hard_state(), hs(2, Some(3)));
    }

    let mut pre_candidate = node_with(1, 3, hs(1, None), &[1], |_| {});
    pre_candidate.tick(LATER);
    assert_eq!(pre_candidate.role(), Role::PreCandidate);
    assert_eq!(pre_candidate.term(), Term(1));
    let granted = msg(
        2,
        1,
        2,
        MessageBody::RequestVoteResponse {
            pre_vote: true,
            granted: true,
            campaign: pre_candidate.campaign(),
        },
    );
    pre_candidate.step(LATER, granted).unwrap();
    assert_eq!(pre_candidate.role(), Role::Candidate);
    assert_eq!(pre_candidate.hard_state(), hs(2, Some(1)));
}

// ----- CheckQuorum (dissertation §6.2) ---------------------------------------------------------

/// A leader that has not heard from a majority for a minimum election timeout steps down; a
/// leader without CheckQuorum would stay in office indefinitely (dissertation §6.2)
#[test]
fn leader_cut_off_from_a_majority_steps_down_after_an_election_timeout() {
    let mut net = Network::new(3);
    net.elect(1);
    net.isolate(1);
    // Its last acknowledged round was sent at most one heartbeat interval ago.
    net.advance(90);
    assert_eq!(net.peek(1).role(), Role::Leader, "not yet");
    net.advance(10);
    assert_eq!(net.peek(1).role(), Role::Follower);

    let mut net = Network::with(3, |c| c.check_quorum = false);
    net.elect(1);
    net.isolate(1);
    net.advance(1_000);
    assert_eq!(net.peek(1).role(), Role::Leader, "without CheckQuorum");
}

// ----- stickiness (dissertation §4.2.3, §6.4.1) ------------------------------------------------

/// A follower that heard from a leader less than a minimum election timeout ago ignores a vote
/// or pre-vote request for a higher term: no answer, no new term, no new vote; so does the
/// leader. Once that time has passed without word from the leader, it grants the same request
/// (dissertation §4.2.3)
#[test]
fn follower_in_touch_with_its_leader_ignores_higher_term_vote_requests() {
    let mut net = Network::new(3);
    net.elect(1);
    let last = net.peek(1).last_log_id();
    for pre_vote in [false, true] {
        net.deliver(vote_request(3, 2, 5, last, pre_vote));
        assert!(net.queue.is_empty(), "no answer");
        assert_eq!(net.peek(2).hard_state(), hs(1, Some(1)));
        assert_eq!(net.peek(2).leader(), Some(NodeId(1)));
        net.deliver(vote_request(3, 1, 5, last, pre_vote));
        assert!(net.queue.is_empty(), "no answer");
        assert_eq!(net.peek(1).role(), Role::Leader);
        assert_eq!(net.peek(1).term(), Term(1));
    }
    // A minimum election timeout later, with no ticks in between (so no heartbeat).
    net.now = net
        .now
        .plus_ms(net.peek(2).config().election_timeout_min_ms);
    net.deliver(vote_request(3, 2, 5, last, false));
    assert_eq!(net.peek(2).hard_state(), hs(5, Some(3)));
}

/// A node that restarts cannot know whether it acknowledged a leader's lease just before it
/// crashed, so for a minimum election timeout after its start it grants no vote or pre-vote for
/// a higher term (dissertation §6.4.1)
#[test]
fn restarted_node_grants_no_vote_within_a_minimum_election_timeout_of_its_start() {
    let start = Time(5_000);
    let state = InitialState {
        hard_state: hs(1, Some(1)),
        entries: entries_with_terms(&[1]),
        applied: LogIndex(0),
        membership: crate::Membership::new(ids(3)).ok(),
        ..InitialState::default()
    };
    let mut raft = Raft::new(test_config(2), state, 2, start).unwrap();
    for pre_vote in [true, false] {
        raft.step(
            start.plus_ms(99),
            vote_request(3, 2, 2, eid(1, 1), pre_vote),
        )
        .unwrap();
        assert!(raft.take_actions().is_empty(), "pre_vote {pre_vote}");
        assert_eq!(raft.hard_state(), hs(1, Some(1)));
    }
    raft.step(start.plus_ms(100), vote_request(3, 2, 2, eid(1, 1), false))
        .unwrap();
    assert!(the_vote_answer(&raft.take_actions()).1);
    assert_eq!(raft.hard_state(), hs(2, Some(3)));
}

// ----- leader lease (dissertation §6.4.1) ------------------------------------------------------

/// A new leader holds no lease until both its blank entry is committed and a majority has
/// acknowledged one of its heartbeat rounds: an acknowledged round alone is not enough
/// (dissertation §6.4.1)
#[test]
fn lease_needs_the_blank_entry_committed_and_a_round_acknowledged() {
    // The followers lack index 2, so they first reject the blank entry (echoing round 1).
    let logs = vec![
        (hs(1, None), entries_with_terms(&[1, 1])),
        (hs(1, None), entries_with_terms(&[1])),
        (hs(1, None), entries_with_terms(&[1])),
    ];
    let mut net = Network::with_logs(logs, no_pre_vote);
    win_election(&mut net, 1);
    assert!(!net.peek(1).lease_holds(), "nothing acknowledged yet");

    let first = net.take_messages();
    assert!(first.iter().all(is_append) && first.len() == 2);
    for m in first {
        net.deliver(m);
    }
    let answers: Vec<Message> = net.queue.drain(..).collect();
    for m in &answers {
        assert!(matches!(
            m.body,
            MessageBody::AppendEntriesResponse {
                round: 1,
                outcome: AppendOutcome::Reject { .. },
                ..
            }
        ));
    }
    for m in answers {
        net.deliver(m);
    }
    assert_eq!(net.peek(1).commit_index(), LogIndex(0));
    assert!(
        !net.peek(1).lease_holds(),
        "round acknowledged, blank not committed"
    );

    net.settle();
    assert_eq!(net.peek(1).commit_index(), LogIndex(3));
    assert!(net.peek(1).lease_holds());
}

/// When acknowledgements stop, the lease ends exactly `lease_duration_ms` after the send time of
/// the latest round a majority acknowledged, however many rounds go unanswered since
/// (dissertation §6.4.1)
#[test]
fn lease_expires_lease_duration_after_the_latest_acknowledged_round_was_sent() {
    let mut net = Network::new(3);
    net.elect(1);
    let sent_at = net.peek(1).next_deadline();
    net.now = sent_at;
    net.node(1).tick(sent_at);
    net.settle();
    let lease_ms = net.peek(1).config().lease_duration_ms;
    let end = sent_at.plus_ms(lease_ms);
    assert_eq!(net.peek(1).lease_valid_until(), Some(end));

    net.cut.insert((NodeId(2), NodeId(1)));
    net.cut.insert((NodeId(3), NodeId(1)));
    net.advance(lease_ms - 1);
    assert!(net.peek(1).lease_holds());
    assert_eq!(net.peek(1).lease_valid_until(), Some(end), "not extended");
    net.advance(1);
    assert_eq!(net.now, end);
    assert!(!net.peek(1).lease_holds());
    assert_eq!(net.peek(1).lease_valid_until(), None);
    assert_eq!(
        net.peek(1).role(),
        Role::Leader,
        "still leader, without lease"
    );
}

/// A lease read is answered at once, without any message, while the lease holds; once it has
/// lapsed, the same read waits for a heartbeat round like a ReadIndex read (dissertation
/// §6.4.1)
#[test]
fn lease_read_sends_nothing_while_the_lease_holds_and_falls_back_otherwise() {
    let mut net = Network::new(3);
    net.elect(1);
    assert!(net.peek(1).lease_holds());
    let lease_ms = net.peek(1).config().lease_duration_ms;
    let commit = net.peek(1).commit_index();
    let now = net.now;
    net.node(1).read(now, ReadId(1), ReadMode::Lease).unwrap();
    let actions = net.node(1).take_actions();
    assert!(actions.messages.is_empty() && actions.persisted_messages.is_empty());
    assert_eq!(actions.reads, vec![(ReadId(1), Ok(commit))]);

    net.cut.insert((NodeId(2), NodeId(1)));
    net.cut.insert((NodeId(3), NodeId(1)));
    for _ in 0..lease_ms {
        if !net.peek(1).lease_holds() {
            break;
        }
        net.advance(1);
    }
    assert!(
        !net.peek(1).lease_holds(),
        "the lease lapses without acknowledgements"
    );
    assert_eq!(net.peek(1).role(), Role::Leader);
    let now = net.now;
    net.node(1).read(now, ReadId(2), ReadMode::Lease).unwrap();
    let actions = net.node(1).take_actions();
    assert!(actions.reads.is_empty(), "not served from a lapsed lease");
    let beats: Vec<Message> = actions.messages.into_iter().filter(is_heartbeat).collect();
    assert_eq!(beats.len(), 2);
    net.heal();
    for m in beats {
        net.deliver(m);
    }
    net.settle();
    assert_eq!(reads_of(&net, 1), vec![(ReadId(2), Ok(commit))]);
}

// ----- ReadIndex (dissertation §6.4) -----------------------------------------------------------

/// A linearizable read is answered only after a majority has acknowledged a heartbeat round
/// sent after the read arrived (acknowledgements of an earlier round do not count, nor does the
/// lease), and only once the state machine has applied up to the read index (dissertation §6.4)
#[test]
fn read_index_waits_for_a_later_round_acknowledged_by_a_majority_and_for_apply() {
    let mut net = Network::new(3);
    net.elect(1);
    assert!(net.peek(1).lease_holds());

    // A round goes out just before the read arrives.
    let now = net.peek(1).next_deadline();
    net.now = now;
    net.node(1).tick(now);
    let earlier_round = net.node(1).take_actions().messages;
    assert!(!earlier_round.is_empty() && earlier_round.iter().all(is_heartbeat));

    net.node(1)
        .read(now, ReadId(1), ReadMode::Linearizable)
        .unwrap();
    let actions = net.node(1).take_actions();
    assert!(actions.reads.is_empty());
    let read_round: Vec<Message> = actions.messages.into_iter().filter(is_heartbeat).collect();
    assert_eq!(read_round.len(), 2);

    for m in earlier_round {
        net.deliver(m);
    }
    net.settle();
    assert!(
        reads_of(&net, 1).is_empty(),
        "an earlier round confirms nothing"
    );

    // Only n2 acknowledges the read's round: with the leader, a majority.
    let to_n2 = read_round.into_iter().find(|m| m.to == NodeId(2)).unwrap();
    net.deliver(to_n2);
    assert!(
        reads_of(&net, 1).is_empty(),
        "not before the answer arrives"
    );
    net.settle();
    let commit = net.peek(1).commit_index();
    assert_eq!(reads_of(&net, 1), vec![(ReadId(1), Ok(commit))]);

    // Apply: drive the leader by hand and hold back its report of applying x.
    let x = net.node(1).propose(cmd("x")).unwrap();
    let actions = net.node(1).take_actions();
    net.node(1).persisted(x);
    for m in actions.messages {
        net.deliver(m);
    }
    let answers: Vec<Message> = net.queue.drain(..).collect();
    for m in answers {
        net.node(1).step(now, m).unwrap();
    }
    let actions = net.node(1).take_actions();
    let last = actions.committed.map(|c| c.last);
    assert_eq!(
        last.and_then(|i| net.node(1).entry(i)).map(Entry::id),
        Some(x)
    );
    net.node(1)
        .read(now, ReadId(2), ReadMode::Linearizable)
        .unwrap();
    let actions = net.node(1).take_actions();
    for m in actions.messages {
        net.deliver(m);
    }
    let answers: Vec<Message> = net.queue.drain(..).collect();
    assert!(!answers.is_empty());
    for m in answers {
        net.node(1).step(now, m).unwrap();
    }
    let actions = net.node(1).take_actions();
    assert!(actions.reads.is_empty(), "confirmed, but x is not applied");
    net.node(1).applied(x.index);
    let actions = net.node(1).take_actions();
    assert_eq!(actions.reads, vec![(ReadId(2), Ok(x.index))]);
}

/// Reads that arrive together are confirmed by a single heartbeat round: one heartbeat per
/// follower however many reads wait (dissertation §6.4)
#[test]
fn concurrent_reads_are_confirmed_by_one_heartbeat_round() {
    let mut net = Network::new(3);
    net.elect(1);
    let now = net.now;
    for id in 1..=10 {
        net.node(1)
            .read(now, ReadId(id), ReadMode::Linearizable)
            .unwrap();
    }
    let sent = net.take_messages();
    assert_eq!(sent.iter().filter(|m| is_heartbeat(m)).count(), 2);
    assert_eq!(sent.len(), 2, "{sent:?}");
    for m in sent {
        net.deliver(m);
    }
    net.settle();
    let commit = net.peek(1).commit_index();
    let expected: Vec<(ReadId, Result<LogIndex, ProtocolError>)> =
        (1..=10).map(|id| (ReadId(id), Ok(commit))).collect();
    assert_eq!(reads_of(&net, 1), expected);
}

/// A leader that steps down before confirming its pending reads fails them with NotLeader,
/// naming the leader it now knows (dissertation §6.4)
#[test]
fn leader_that_steps_down_fails_its_pending_reads() {
    let mut net = Network::new(3);
    net.elect(1);
    let now = net.now;
    net.node(1)
        .read(now, ReadId(1), ReadMode::Linearizable)
        .unwrap();
    let lost = net.take_messages();
    assert!(!lost.is_empty());
    net.deliver(heartbeat(2, 1, 5));
    assert_eq!(net.peek(1).role(), Role::Follower);
    assert_eq!(
        reads_of(&net, 1),
        vec![(
            ReadId(1),
            Err(ProtocolError::NotLeader {
                leader_hint: Some(NodeId(2))
            })
        )]
    );
}

/// A read that reaches a new leader before its blank entry is committed waits for that commit,
/// even once its heartbeat round is acknowledged and whether or not it asked for a lease read:
/// until then the leader's commit index may lag what earlier leaders committed (dissertation
/// §6.4)
#[test]
fn read_before_the_blank_entry_commits_waits_for_it() {
    let mut net = Network::with(3, no_pre_vote);
    win_election(&mut net, 1);
    let now = net.now;
    net.node(1)
        .read(now, ReadId(1), ReadMode::Linearizable)
        .unwrap();
    net.node(1).read(now, ReadId(2), ReadMode::Lease).unwrap();
    // Heartbeats get through; the blank entry does not.
    let mut heartbeats = 0;
    pump(&mut net, |m| {
        heartbeats += usize::from(is_heartbeat(m));
        !is_append(m)
    });
    assert!(heartbeats >= 2, "the reads' round was sent");
    assert_eq!(net.peek(1).commit_index(), LogIndex(0));
    assert!(reads_of(&net, 1).is_empty());

    net.advance(net.peek(1).config().heartbeat_interval_ms);
    assert_eq!(net.peek(1).commit_index(), LogIndex(1));
    assert_eq!(
        reads_of(&net, 1),
        vec![(ReadId(1), Ok(LogIndex(1))), (ReadId(2), Ok(LogIndex(1)))]
    );
}

// ----- leadership transfer (dissertation §3.10) ------------------------------------------------

/// To hand over leadership the leader first brings the target's log up to date, then sends it
/// TimeoutNow; the target campaigns at once and wins even though the other followers still
/// hear from the old leader (dissertation §3.10)
#[test]
fn transfer_brings_the_target_up_to_date_then_it_wins_despite_sticky_followers() {
    let mut net = Network::new(3);
    net.elect(1);
    let x = net.node(1).propose(cmd("x")).unwrap();
    let mut held = Vec::new();
    pump(&mut net, |m| {
        if m.to == NodeId(3) {
            held.push(m.clone());
            false
        } else {
            true
        }
    });
    assert_eq!(net.peek(1).commit_index(), x.index);
    assert!(net.peek(3).entry(x.index).is_none(), "n3 lags");

    let now = net.now;
    net.node(1).transfer_leadership(now, NodeId(3)).unwrap();
    let sent = net.take_messages();
    assert!(!sent.iter().any(is_timeout_now), "n3 is not up to date yet");

    let mut timeout_nows = 0;
    let mut batch: Vec<Message> = held.into_iter().chain(sent).collect();
    for _ in 0..100 {
        if batch.is_empty() {
            break;
        }
        for m in batch {
            if is_timeout_now(&m) {
                timeout_nows += 1;
                assert_eq!(m.to, NodeId(3));
                assert_eq!(
                    net.peek(3).last_log_id(),
                    net.peek(1).last_log_id(),
                    "TimeoutNow only once the target holds the leader's whole log"
                );
            }
            net.deliver(m);
        }
        batch = net.take_messages();
    }
    assert_eq!(timeout_nows, 1);
    // No time passed: n2 heard from n1 within its stickiness window, yet voted for n3.
    assert_eq!(net.now, now);
    assert_eq!(net.peek(3).role(), Role::Leader);
    assert_eq!(net.peek(3).term(), Term(2));
    for id in [1, 2] {
        assert_eq!(net.peek(id).role(), Role::Follower, "n{id}");
        assert_eq!(net.peek(id).leader(), Some(NodeId(3)), "n{id}");
    }
    assert_eq!(net.peek(3).entry(x.index).map(Entry::id), Some(x));
}

/// During a transfer the old leader gives up its lease at once and refuses proposals with
/// TransferInProgress; a transfer that has not completed after a minimum election timeout is
/// abandoned and proposals are accepted again (dissertation §3.10)
#[test]
fn transfer_voids_the_lease_blocks_proposals_and_is_abandoned_after_a_timeout() {
    let mut net = Network::new(3);
    net.elect(1);
    assert!(net.peek(1).lease_holds());
    // The target never hears of it.
    net.cut.insert((NodeId(1), NodeId(2)));
    net.cut.insert((NodeId(2), NodeId(1)));
    let now = net.now;
    net.node(1).transfer_leadership(now, NodeId(2)).unwrap();
    assert!(!net.peek(1).lease_holds(), "lease void at once");
    assert_eq!(net.peek(1).lease_valid_until(), None);
    assert_eq!(
        net.node(1).propose(cmd("x")),
        Err(ProtocolError::TransferInProgress)
    );

    let timeout_ms = net.peek(1).config().election_timeout_min_ms;
    net.advance(timeout_ms - 1);
    assert_eq!(
        net.node(1).propose(cmd("x")),
        Err(ProtocolError::TransferInProgress)
    );
    net.advance(1);
    assert_eq!(net.peek(1).role(), Role::Leader);
    assert!(net.node(1).propose(cmd("x")).is_ok(), "transfer abandoned");
}

// ----- bad input -------------------------------------------------------------------------------

/// A message from outside the cluster, addressed to another node or to its sender, or whose
/// entries do not follow its previous entry with terms no higher than the message's, is refused
/// with RejectedMessage before it changes anything: the arguments of Figure 2 are checked where
/// they enter (Figure 2). (What only a leader sends is taken from any node: a node whose log
/// is behind may not know its leader is a member yet; see `membership.rs`.)
#[test]
fn malformed_or_misaddressed_messages_are_rejected_without_effect() {
    let non_contiguous = {
        let mut m = append(1, 2, 5, eid(1, 1), &[5, 5], 0);
        if let MessageBody::AppendEntries { entries, .. } = &mut m.body {
            entries[1].index = LogIndex(4);
        }
        m
    };
    let not_after_prev = {
        let mut m = append(1, 2, 5, eid(1, 1), &[5], 0);
        if let MessageBody::AppendEntries { entries, .. } = &mut m.body {
            entries[0].index = LogIndex(3);
        }
        m
    };
    let cases = [
        ("unknown sender", vote_answer(9, 2, 5, true, 1)),
        ("sender 0", heartbeat(0, 2, 5)),
        ("addressed to n3", heartbeat(1, 3, 5)),
        ("from itself", heartbeat(2, 2, 5)),
        (
            "read request from a stranger",
            msg(
                7,
                2,
                5,
                MessageBody::ReadIndex {
                    request: 1,
                    lease: false,
                },
            ),
        ),
        ("entries not contiguous", non_contiguous),
        ("first entry not after prev", not_after_prev),
        (
            "entry term above message term",
            append(1, 2, 5, eid(1, 1), &[6], 0),
        ),
        (
            "prev term above message term",
            append(1, 2, 5, eid(6, 1), &[], 0),
        ),
        (
            "entry terms decreasing",
            append(1, 2, 5, eid(1, 1), &[4, 3], 0),
        ),
    ];
    for (what, m) in cases {
        let mut raft = node_with(2, 3, hs(1, Some(1)), &[1, 1], |_| {});
        let before = fingerprint(&raft);
        let result = raft.step(LATER, m);
        assert!(
            matches!(result, Err(ProtocolError::RejectedMessage(_))),
            "{what}: {result:?}"
        );
        assert_eq!(fingerprint(&raft), before, "{what}");
        assert!(raft.take_actions().is_empty(), "{what}");
    }
}

/// `Config::validate` accepts sound configurations and names the rule a broken one breaks
/// (randomized election timeouts, heartbeats well under the election timeout, a lease that ends
/// before any follower may vote again); `Raft::new` refuses to start with a broken one (§5.2,
/// §5.6, dissertation §6.4.1)
#[test]
fn config_validate_names_each_broken_rule() {
    type Tweak = fn(&mut Config);
    let broken: [(&str, Tweak, ConfigError); 13] = [
        ("id 0", |c| c.id = NodeId(0), ConfigError::ZeroId),
        (
            "min 0",
            |c| c.election_timeout_min_ms = 0,
            ConfigError::ElectionTimeoutRange {
                min_ms: 0,
                max_ms: 200,
            },
        ),
        (
            "min = max",
            |c| c.election_timeout_max_ms = 100,
            ConfigError::ElectionTimeoutRange {
                min_ms: 100,
                max_ms: 100,
            },
        ),
        (
            "min > max",
            |c| c.election_timeout_min_ms = 250,
            ConfigError::ElectionTimeoutRange {
                min_ms: 250,
                max_ms: 200,
            },
        ),
        (
            "heartbeat 0",
            |c| c.heartbeat_interval_ms = 0,
            ConfigError::HeartbeatTooSlow {
                heartbeat_ms: 0,
                election_min_ms: 100,
            },
        ),
        (
            "heartbeat above a third of min",
            |c| c.heartbeat_interval_ms = 34,
            ConfigError::HeartbeatTooSlow {
                heartbeat_ms: 34,
                election_min_ms: 100,
            },
        ),
        (
            "drift reaches min",
            |c| c.clock_drift_bound_ms = 100,
            ConfigError::DriftTooLarge {
                drift_ms: 100,
                election_min_ms: 100,
            },
        ),
        (
            "lease plus drift reaches min",
            |c| c.lease_duration_ms = 90,
            ConfigError::LeaseTooLong {
                lease_ms: 90,
                drift_ms: 10,
                election_min_ms: 100,
            },
        ),
        (
            "lease not above heartbeat",
            |c| c.lease_duration_ms = 10,
            ConfigError::LeaseShorterThanHeartbeat {
                lease_ms: 10,
                heartbeat_ms: 10,
            },
        ),
        (
            "inflight 0",
            |c| c.max_inflight_appends = 0,
            ConfigError::ZeroBatchLimit,
        ),
        (
            "entries per append 0",
            |c| c.max_entries_per_append = 0,
            ConfigError::ZeroBatchLimit,
        ),
        (
            "bytes per append 0",
            |c| c.max_bytes_per_append = 0,
            ConfigError::ZeroBatchLimit,
        ),
        (
            "lease as long as min",
            |c| c.lease_duration_ms = 100,
            ConfigError::LeaseTooLong {
                lease_ms: 100,
                drift_ms: 10,
                election_min_ms: 100,
            },
        ),
    ];
    for (what, tweak, expected) in broken {
        let mut config = test_config(1);
        tweak(&mut config);
        assert_eq!(config.validate(), Err(expected.clone()), "{what}");
        let state = InitialState {
            membership: crate::Membership::new(ids(3)).ok(),
            ..InitialState::default()
        };
        assert_eq!(
            Raft::new(config, state, 1, Time(0)).err(),
            Some(ProtocolError::InvalidConfig(expected)),
            "{what}"
        );
    }

    let sound: [(&str, Tweak); 4] = [
        ("defaults", |c| *c = Config::new(NodeId(1))),
        ("test config", |_| {}),
        ("heartbeat exactly a third of min", |c| {
            c.election_timeout_min_ms = 99;
            c.heartbeat_interval_ms = 33;
            c.lease_duration_ms = 80;
        }),
        ("leases off lifts the lease rules", |c| {
            c.lease_duration_ms = 0;
            c.heartbeat_interval_ms = 30;
        }),
    ];
    for (what, tweak) in sound {
        let mut config = test_config(1);
        tweak(&mut config);
        assert_eq!(config.validate(), Ok(()), "{what}");
    }
}
