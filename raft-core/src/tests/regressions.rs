//! Rules that a review found broken while every invariant the simulator checks held: a healthy
//! leader deposed by read load, stale pre-vote grants, a transfer target that ignored
//! TimeoutNow, and bounded-staleness data that was older than its bound. Each test is named
//! for the rule it proves and failed before the fix.

use super::harness::*;
use crate::{
    HardState, InitialState, LogIndex, Message, MessageBody, NodeId, Raft, ReadId, ReadMode, Role,
    Term, Time,
};
use std::collections::VecDeque;

/// Runs the network for `ms` milliseconds with every message taking `one_way_ms` to arrive,
/// calling `each_ms` once per millisecond (after the ticks, before the deliveries).
fn run_with_latency(
    net: &mut Network,
    ms: u64,
    one_way_ms: u64,
    mut each_ms: impl FnMut(&mut Network),
) {
    let mut in_flight: VecDeque<(Time, Message)> = VecDeque::new();
    let ids: Vec<NodeId> = net.nodes.keys().copied().collect();
    for _ in 0..ms {
        net.now = net.now.plus_ms(1);
        let now = net.now;
        for &id in &ids {
            net.nodes.get_mut(&id).unwrap().tick(now);
        }
        each_ms(net);
        loop {
            net.drive_all();
            let due = now.plus_ms(one_way_ms);
            in_flight.extend(net.queue.drain(..).map(|m| (due, m)));
            let mut delivered = false;
            while in_flight.front().is_some_and(|(at, _)| *at <= now) {
                let (_, m) = in_flight.pop_front().unwrap();
                if !net.cut.contains(&(m.from, m.to)) {
                    net.node(m.to.0).step(now, m).unwrap();
                    delivered = true;
                }
            }
            if !delivered {
                break;
            }
        }
    }
}

/// The number of heartbeat rounds in flight must not decide whether a leader keeps office
/// (dissertation §6.2, §6.4.1): under 80 read batches per millisecond, each starting a round,
/// with a 60 ms round trip (5,000 rounds in flight), the leader stays leader and serves reads.
#[test]
fn a_leader_under_heavy_read_load_on_a_slow_network_keeps_office() {
    let mut net = Network::new(3);
    net.elect(1);
    let term = net.peek(1).term();
    let mut next = 0;
    run_with_latency(&mut net, 600, 30, |net| {
        for _ in 0..80 {
            next += 1;
            let now = net.now;
            net.node(1)
                .read(now, ReadId(next), ReadMode::Linearizable)
                .unwrap();
            net.drive(NodeId(1));
        }
    });
    assert_eq!(net.peek(1).role(), Role::Leader, "deposed by its own reads");
    assert_eq!(net.peek(1).term(), term);
    let served = net.reads[&NodeId(1)]
        .iter()
        .filter(|(_, r)| r.is_ok())
        .count();
    assert!(served > 40_000, "reads served: {served}");
}

fn follower(id: u64, term: u64) -> Raft {
    let state = InitialState {
        hard_state: HardState {
            term: Term(term),
            vote: None,
        },
        membership: crate::Membership::new(ids(3)).ok(),
        ..InitialState::default()
    };
    Raft::new(test_config(id), state, id, Time(0)).unwrap()
}

fn pre_vote_answer(from: u64, to: u64, term: u64, campaign: u64, granted: bool) -> Message {
    let body = MessageBody::RequestVoteResponse {
        pre_vote: true,
        granted,
        campaign,
    };
    msg(from, to, term, body)
}

fn pre_vote_grant(from: u64, to: u64, term: u64, campaign: u64) -> Message {
    pre_vote_answer(from, to, term, campaign, true)
}

fn pre_vote_refusal(from: u64, to: u64, term: u64, campaign: u64) -> Message {
    pre_vote_answer(from, to, term, campaign, false)
}

/// The campaign number of the vote requests a node just sent.
fn campaign_of(raft: &mut Raft) -> u64 {
    let actions = raft.take_actions();
    let campaigns: Vec<u64> = actions
        .persisted_messages
        .iter()
        .filter_map(|m| match m.body {
            MessageBody::RequestVote { campaign, .. } => Some(campaign),
            _ => None,
        })
        .collect();
    assert!(!campaigns.is_empty(), "no vote request sent");
    campaigns[0]
}

/// A pre-vote grant counts only in the pre-vote it answers (dissertation §9.6): a grant
/// delayed from an earlier round of the same term, or from a round whose term the node has
/// since reached, must not start an election (which would depose a healthy leader).
#[test]
fn a_pre_vote_grant_counts_only_in_the_round_it_answers() {
    // An earlier round of the same term.
    let mut node = follower(3, 1);
    let now = node.next_deadline();
    node.tick(now);
    assert_eq!(node.role(), Role::PreCandidate);
    let first = campaign_of(&mut node);
    node.step(now, pre_vote_refusal(1, 3, 1, first)).unwrap();
    node.step(now, pre_vote_refusal(2, 3, 1, first)).unwrap();
    assert_eq!(node.role(), Role::Follower, "the first round lost");
    let now = node.next_deadline();
    node.tick(now);
    assert_eq!(node.role(), Role::PreCandidate);
    let second = campaign_of(&mut node);
    assert_ne!(first, second);
    node.step(now, pre_vote_grant(2, 3, 2, first)).unwrap();
    assert_eq!(
        node.role(),
        Role::PreCandidate,
        "a grant from round one counted in round two"
    );
    node.step(now, pre_vote_grant(2, 3, 2, second)).unwrap();
    assert_eq!(node.role(), Role::Candidate, "its own round's grant counts");

    // A round whose proposed term the node has reached since.
    let mut node = follower(3, 1);
    let now = node.next_deadline();
    node.tick(now);
    let early = campaign_of(&mut node);
    // A leader of term 2 appears, then goes silent; the node pre-votes for term 3.
    node.step(now, msg(1, 3, 2, heartbeat_body())).unwrap();
    assert_eq!((node.role(), node.term()), (Role::Follower, Term(2)));
    let now = node.next_deadline();
    node.tick(now);
    assert_eq!(node.role(), Role::PreCandidate);
    let late = campaign_of(&mut node);
    node.step(now, pre_vote_grant(2, 3, 2, early)).unwrap();
    node.step(now, pre_vote_grant(2, 3, 2, late)).unwrap();
    assert_eq!(
        node.role(),
        Role::PreCandidate,
        "a grant for term 2 counted in the pre-vote for term 3"
    );
}

fn heartbeat_body() -> MessageBody {
    heartbeat_with(LogIndex(0), 1)
}

fn heartbeat_with(commit: LogIndex, round: u64) -> MessageBody {
    MessageBody::Heartbeat {
        leader_commit: commit,
        round,
        freshness: None,
    }
}

/// A transfer's target honours TimeoutNow even while it is running a pre-vote of its own
/// (dissertation §3.10), and the leader sends TimeoutNow again if the first was lost: the
/// transfer completes instead of stalling until it is abandoned.
#[test]
fn a_transfer_target_that_is_pre_voting_takes_over() {
    let mut net = Network::new(3);
    net.elect(1);
    // n3 stops hearing n1 and starts a pre-vote, which n2 (hearing n1) refuses.
    net.cut.insert((NodeId(1), NodeId(3)));
    for _ in 0..400 {
        if net.peek(3).role() == Role::PreCandidate {
            break;
        }
        net.advance(1);
    }
    assert_eq!(net.peek(3).role(), Role::PreCandidate);
    assert_eq!(net.peek(1).role(), Role::Leader);
    net.cut.clear();
    let now = net.now;
    net.node(1).transfer_leadership(now, NodeId(3)).unwrap();
    net.settle();
    assert_eq!(net.peek(3).role(), Role::Leader, "n3 took over at once");
    assert_eq!(net.peek(1).leader(), Some(NodeId(3)));
}

/// As above, with the first TimeoutNow lost: the leader sends it again once the target has
/// answered a later heartbeat round, well within the transfer's timeout.
#[test]
fn a_lost_timeout_now_is_sent_again() {
    let mut net = Network::new(3);
    net.elect(1);
    let now = net.now;
    net.node(1).transfer_leadership(now, NodeId(3)).unwrap();
    let sent = net.take_messages();
    let timeout_now = sent
        .iter()
        .filter(|m| matches!(m.body, MessageBody::TimeoutNow))
        .count();
    assert_eq!(timeout_now, 1);
    // Lost: drop every message taken above; heartbeats continue.
    let timeout_ms = net.peek(1).config().election_timeout_min_ms;
    let started = net.now;
    for _ in 0..timeout_ms {
        net.advance(1);
        if net.peek(3).role() == Role::Leader {
            break;
        }
    }
    assert_eq!(net.peek(3).role(), Role::Leader, "the transfer stalled");
    assert!(net.now.ms_since(started) < timeout_ms);
}

/// A candidate whose own election started just before the leader's TimeoutNow arrived campaigns
/// again as the transfer asked (dissertation §3.10), so that voters who still hear the leader
/// grant it; once only.
#[test]
fn a_candidate_takes_up_a_timeout_now_from_the_previous_term() {
    let mut config = test_config(3);
    config.pre_vote = false;
    let state = InitialState {
        hard_state: HardState {
            term: Term(1),
            vote: None,
        },
        membership: crate::Membership::new(ids(3)).ok(),
        ..InitialState::default()
    };
    let mut node = Raft::new(config, state, 3, Time(0)).unwrap();
    let now = node.next_deadline();
    node.tick(now);
    assert_eq!((node.role(), node.term()), (Role::Candidate, Term(2)));
    assert!(!node.elected_by_transfer());
    let _ = node.take_actions();
    node.step(now, msg(1, 3, 1, MessageBody::TimeoutNow))
        .unwrap();
    assert_eq!((node.role(), node.term()), (Role::Candidate, Term(3)));
    assert!(node.elected_by_transfer());
    let requests = node.take_actions().persisted_messages;
    assert!(
        requests
            .iter()
            .all(|m| matches!(m.body, MessageBody::RequestVote { transfer: true, .. }))
    );
    node.step(now, msg(1, 3, 1, MessageBody::TimeoutNow))
        .unwrap();
    assert_eq!(node.term(), Term(3), "a duplicate starts nothing");
}

/// A follower vouches for its data's freshness only up to what it holds (bounded-staleness
/// reads): one whose appends are lost while heartbeats arrive cannot claim to reflect writes
/// the leader committed without it.
#[test]
fn a_follower_vouches_only_for_entries_it_holds() {
    let mut net = Network::new(3);
    net.elect(1);
    net.advance(50);
    let fresh = net
        .peek(3)
        .fresh_commit()
        .expect("a caught-up follower vouches");
    assert!(
        net.now.ms_since(fresh.as_of) <= 30,
        "{fresh:?} at {:?}",
        net.now
    );
    // Appends to n3 are lost from now on; heartbeats still arrive.
    let written = net.node(1).propose(cmd("w")).unwrap();
    let committed_at = net.now;
    for _ in 0..500 {
        net.now = net.now.plus_ms(1);
        let now = net.now;
        for id in 1..=3 {
            net.node(id).tick(now);
        }
        net.drive_all();
        for _ in 0..1000 {
            let Some(m) = net.queue.pop_front() else {
                break;
            };
            let to_n3_append =
                m.to == NodeId(3) && matches!(m.body, MessageBody::AppendEntries { .. });
            if !to_n3_append {
                net.deliver(m);
            }
        }
    }
    assert!(net.peek(1).commit_index() >= written.index);
    assert!(net.peek(3).commit_index() < written.index);
    assert_eq!(net.peek(3).leader(), Some(NodeId(1)), "n3 hears the leader");
    if let Some(fresh) = net.peek(3).fresh_commit() {
        assert!(fresh.index < written.index);
        assert!(
            fresh.as_of <= committed_at,
            "n3 claims to reflect every write acknowledged before {:?}, but lacks one \
             committed at {committed_at:?}",
            fresh.as_of
        );
    }
    // The leader itself vouches for its commit index, recently.
    let fresh = net.peek(1).fresh_commit().expect("the leader vouches");
    assert!(fresh.index >= written.index);
    assert!(net.now.ms_since(fresh.as_of) <= 30);
}

/// A heartbeat's commit index is at most the follower's match index. One beyond the
/// follower's last entry breaks that promise, and the follower commits nothing on its word
/// (rather than commit entries it cannot know are the leader's).
#[test]
fn a_heartbeat_commit_beyond_the_last_entry_commits_nothing() {
    let mut node = follower(2, 1);
    let now = Time(10);
    node.step(
        now,
        msg(
            1,
            2,
            1,
            MessageBody::AppendEntries {
                prev_log: crate::EntryId {
                    term: Term(0),
                    index: LogIndex(0),
                },
                entries: entries_with_terms(&[1, 1]),
                leader_commit: LogIndex(0),
                round: 1,
            },
        ),
    )
    .unwrap();
    assert_eq!(node.last_log_id().index, LogIndex(2));
    let beyond = heartbeat_with(LogIndex(5), 2);
    node.step(now, msg(1, 2, 1, beyond)).unwrap();
    assert_eq!(node.commit_index(), LogIndex(0));
    node.step(now, msg(1, 2, 1, heartbeat_with(LogIndex(2), 3)))
        .unwrap();
    assert_eq!(node.commit_index(), LogIndex(2));
}

/// Runs one millisecond: every node ticks, and messages go through `deliver_or_hold`, which
/// delivers a message (returning true) or keeps it back.
fn step_ms(net: &mut Network, mut deliver_or_hold: impl FnMut(&mut Network, Message) -> bool) {
    net.now = net.now.plus_ms(1);
    let now = net.now;
    for id in 1..=3 {
        net.node(id).tick(now);
    }
    for _ in 0..100 {
        net.drive_all();
        let batch: Vec<Message> = net.queue.drain(..).collect();
        if batch.is_empty() {
            break;
        }
        for m in batch {
            if deliver_or_hold(net, m.clone()) {
                net.deliver(m);
            }
        }
    }
}

/// Keeps back a message to `to` (returning false), lets any other through.
fn hold_for(to: NodeId, held: &mut Vec<Message>, m: Message) -> bool {
    if m.to == to {
        held.push(m);
        return false;
    }
    true
}

/// A follower vouches for its data as of its answer to a round only if that answer is the one
/// its leader heard: here its link from the leader stalls for longer than an election timeout
/// (it pre-votes meanwhile), then the stalled stream arrives, and it answers the old rounds
/// again. A leader's statement about the first answers must not be dated by the late ones.
#[test]
fn a_follower_dates_freshness_by_the_answer_its_leader_heard() {
    let mut net = Network::new(3);
    net.elect(1);
    net.advance(50);
    let mut held: Vec<Message> = Vec::new();
    let _w1 = net.node(1).propose(cmd("w1")).unwrap();
    for _ in 0..50 {
        step_ms(&mut net, |_, m| hold_for(NodeId(3), &mut held, m));
    }
    let w2 = net.node(1).propose(cmd("w2")).unwrap();
    let mut w2_committed_at = None;
    for _ in 0..250 {
        step_ms(&mut net, |_, m| hold_for(NodeId(3), &mut held, m));
        if w2_committed_at.is_none() && net.peek(1).commit_index() >= w2.index {
            w2_committed_at = Some(net.now);
        }
    }
    let w2_committed_at = w2_committed_at.expect("w2 commits through n2");
    assert_ne!(
        net.peek(3).role(),
        Role::Follower,
        "n3 campaigned meanwhile"
    );
    // The stall ends; appends carrying w2 to n3 keep getting lost.
    let carries_w2 = move |m: &Message| {
        matches!(&m.body, MessageBody::AppendEntries { entries, .. }
            if entries.iter().any(|e| e.index >= w2.index))
    };
    for m in held.drain(..) {
        if !carries_w2(&m) {
            net.deliver(m);
        }
    }
    for _ in 0..20 {
        step_ms(&mut net, |_, m| !(m.to == NodeId(3) && carries_w2(&m)));
    }
    assert!(net.peek(3).commit_index() < w2.index);
    if let Some(fresh) = net.peek(3).fresh_commit() {
        assert!(
            fresh.as_of <= w2_committed_at,
            "n3 vouches that every write acknowledged before {:?} is at or below {:?}, but \
             lacks {:?}, committed at {w2_committed_at:?}",
            fresh.as_of,
            fresh.index,
            w2.index
        );
    }
}

/// A restarted follower's session differs from its previous run's, so statements its leader
/// makes about the previous run's answers (still queued in the network) are ignored.
#[test]
fn a_restarted_follower_ignores_statements_about_its_previous_run() {
    let state = || InitialState {
        hard_state: HardState {
            term: Term(1),
            vote: None,
        },
        membership: crate::Membership::new(ids(3)).ok(),
        ..InitialState::default()
    };
    let mut first = Raft::new(test_config(2), state(), 7, Time(0)).unwrap();
    let mut second = Raft::new(test_config(2), state(), 8, Time(0)).unwrap();
    let session_of = |raft: &mut Raft| {
        raft.step(Time(1), msg(1, 2, 1, heartbeat_body())).unwrap();
        match raft.take_actions().persisted_messages[0].body {
            MessageBody::HeartbeatResponse { session, .. } => session,
            ref other => panic!("{other:?}"),
        }
    };
    let old = session_of(&mut first);
    assert_ne!(
        old,
        session_of(&mut second),
        "each run draws its own session"
    );
    // The restarted node answered round 1 too; a statement about the old run's answer to it
    // (with a commit index the new run holds) vouches for nothing.
    let statement = MessageBody::Heartbeat {
        leader_commit: LogIndex(0),
        round: 2,
        freshness: Some(crate::Freshness {
            answered_round: 1,
            session: old,
            commit: LogIndex(0),
        }),
    };
    second.step(Time(500), msg(1, 2, 1, statement)).unwrap();
    assert_eq!(second.fresh_commit(), None);
}

/// A follower's bounded-staleness freshness rests on its leader's lease: with leases disabled
/// the leader sends no freshness statements, so followers vouch for nothing (only the leader,
/// from its majority-acknowledged rounds, serves such reads).
#[test]
fn without_leases_only_the_leader_vouches_for_its_data() {
    let mut net = Network::with(3, |c| c.lease_duration_ms = 0);
    net.elect(1);
    net.advance(100);
    assert_eq!(net.peek(2).leader(), Some(NodeId(1)));
    assert_eq!(net.peek(2).fresh_commit(), None);
    assert_eq!(net.peek(3).fresh_commit(), None);
    assert!(net.peek(1).fresh_commit().is_some());
    // With leases on, the same cluster's followers do vouch.
    let mut net = Network::new(3);
    net.elect(1);
    net.advance(100);
    assert!(net.peek(2).fresh_commit().is_some());
}
