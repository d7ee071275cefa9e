//! Membership changes, one test per rule (paper §6, dissertation chapter 4): learners, a
//! membership taking effect when appended and undone when truncated, joint majorities for
//! commit and election, one change at a time, the removed leader's hand-over, and removed nodes
//! that cannot disrupt the cluster.

use super::harness::{Network, cmd, ids, msg};
use crate::{
    EntryId, InitialState, LogIndex, Membership, MembershipChange, MembershipError, MessageBody,
    NodeId, Payload, ProtocolError, Role,
};
use std::collections::BTreeSet;

/// Adds node `id` as a learner, without an address.
fn learner(id: u64) -> MembershipChange {
    MembershipChange::AddLearner {
        id: NodeId(id),
        address: None,
    }
}

fn set(list: &[u64]) -> BTreeSet<NodeId> {
    list.iter().copied().map(NodeId).collect()
}

/// Node `leader` proposes `change`; the network settles.
fn change(net: &mut Network, leader: u64, change: MembershipChange) -> EntryId {
    let id = net.node(leader).change_membership(change).unwrap();
    net.settle();
    id
}

/// The voters, outgoing voters and learners node `id` uses, as plain numbers.
fn membership_of(net: &Network, id: u64) -> (Vec<u64>, Vec<u64>, Vec<u64>) {
    let list = |s: &BTreeSet<NodeId>| s.iter().map(|n| n.0).collect::<Vec<_>>();
    let m = net.peek(id).membership().expect("a membership");
    (
        list(m.voters()),
        list(m.outgoing_voters()),
        list(m.learners()),
    )
}

/// Three voters with node 1 leading, and `learners` added as learners that have caught up.
fn three_voters_and_learners(learners: &[u64]) -> Network {
    let mut net = Network::new(3);
    for &id in learners {
        net.add_node(id, InitialState::joining());
    }
    net.elect(1);
    for &id in learners {
        change(&mut net, 1, learner(id));
    }
    net.advance(10);
    net
}

/// Voters that are no membership (none, or the reserved id 0) are refused at start; a node
/// that joins starts from `InitialState::joining` instead.
#[test]
fn first_voters_that_are_no_membership_are_refused() {
    use super::harness::test_config;
    for voters in [vec![], vec![NodeId(0), NodeId(1), NodeId(2)]] {
        let state = InitialState::new(voters.clone());
        let result = crate::Raft::new(test_config(1), state, 1, crate::Time(0));
        assert!(
            matches!(result, Err(ProtocolError::InvalidState(_))),
            "{voters:?}: {result:?}"
        );
    }
    assert!(crate::Raft::new(test_config(1), InitialState::joining(), 1, crate::Time(0)).is_ok());
}

#[test]
fn a_joining_node_knows_no_membership_never_campaigns_and_waits_for_a_leader() {
    let mut net = Network::new(3);
    net.add_node(4, InitialState::joining());
    assert!(net.peek(4).membership().is_none());
    assert!(net.peek(4).voters().is_empty());
    net.advance(1_000);
    assert_eq!(net.peek(4).role(), Role::Follower);
    assert_eq!(net.peek(4).term().0, 0, "it never campaigned");
    // It takes only a leader's messages and vote requests from nodes it does not know.
    let answer = msg(
        2,
        4,
        9,
        MessageBody::RequestVoteResponse {
            pre_vote: false,
            granted: true,
            campaign: 1,
        },
    );
    let now = net.now;
    assert!(matches!(
        net.node(4).step(now, answer),
        Err(ProtocolError::RejectedMessage(_))
    ));
    assert_eq!(net.peek(4).term().0, 0);
    // A candidate whose membership counts it as a voter may need its vote: it answers.
    let vote = msg(
        2,
        4,
        9,
        MessageBody::RequestVote {
            pre_vote: false,
            last_log: EntryId::default(),
            transfer: false,
            campaign: 1,
        },
    );
    net.node(4).step(now, vote).unwrap();
    let answers = net.take_messages();
    assert!(answers.iter().any(|m| m.to == NodeId(2)
        && matches!(
            m.body,
            MessageBody::RequestVoteResponse { granted: true, .. }
        )));
}

#[test]
fn a_learner_receives_the_log_but_never_counts_votes_or_campaigns() {
    let mut net = three_voters_and_learners(&[4]);
    assert_eq!(membership_of(&net, 4), (vec![1, 2, 3], vec![], vec![4]));
    net.propose(1, "a");
    net.advance(10);
    assert_eq!(
        net.applied_commands(4),
        ["a"],
        "it receives and applies the log"
    );

    // Its acknowledgement does not count toward a commit.
    net.isolate(2);
    net.isolate(3);
    let committed = net.peek(1).commit_index();
    let b = net.propose(1, "b");
    assert_eq!(net.peek(4).last_log_id(), b, "the learner holds the entry");
    assert_eq!(
        net.peek(1).commit_index(),
        committed,
        "but it is not committed"
    );

    // Its vote does not count: a pre-candidate granted by the learner alone wins nothing.
    net.heal();
    net.advance(10);
    net.isolate(1);
    net.isolate(3);
    net.campaign(2);
    assert_eq!(net.peek(2).role(), Role::PreCandidate);
    let campaign = net.peek(2).campaign();
    let term = net.peek(2).term().next();
    let grant = MessageBody::RequestVoteResponse {
        pre_vote: true,
        granted: true,
        campaign,
    };
    net.deliver(msg(4, 2, term.0, grant));
    assert_eq!(
        net.peek(2).role(),
        Role::PreCandidate,
        "a learner's vote won it"
    );

    // It never campaigns, however long it hears from no leader.
    net.heal();
    net.isolate(4);
    let term = net.peek(4).term();
    net.advance(1_000);
    assert_eq!(net.peek(4).role(), Role::Follower);
    assert_eq!(net.peek(4).term(), term);
}

#[test]
fn a_membership_takes_effect_when_appended_before_it_commits() {
    let mut net = Network::new(3);
    net.add_node(4, InitialState::joining());
    net.elect(1);
    let id = net.node(1).change_membership(learner(4)).unwrap();
    assert!(net.peek(1).membership().unwrap().is_learner(NodeId(4)));
    assert_eq!(net.peek(1).membership_index(), id.index);
    assert!(
        net.peek(1).peers().iter().any(|p| p.id == NodeId(4)),
        "the leader replicates to the learner at once"
    );
    // Node 2 appends the entry; no answer reaches the leader, so nothing commits.
    net.settle_dropping(|m| m.to != NodeId(2));
    assert!(net.peek(1).commit_index() < id.index);
    assert!(net.peek(2).commit_index() < id.index);
    assert!(
        net.peek(2).membership().unwrap().is_learner(NodeId(4)),
        "a follower uses the membership it appended, committed or not"
    );
}

#[test]
fn a_membership_is_undone_when_its_entry_is_truncated() {
    let mut net = Network::new(3);
    net.add_node(4, InitialState::joining());
    net.elect(1);
    // Only the leader appends the change: it is cut off at once.
    net.isolate(1);
    let id = net.node(1).change_membership(learner(4)).unwrap();
    net.settle();
    assert!(net.peek(1).membership().unwrap().is_learner(NodeId(4)));
    // Node 2 is elected without it and overwrites that index.
    net.elect(2);
    net.propose(2, "x");
    net.heal();
    net.advance(30);
    assert_eq!(net.peek(1).role(), Role::Follower);
    let entry = net.peek(1).entry(id.index).unwrap();
    assert!(
        !matches!(entry.payload, Payload::Membership(_)),
        "the change was truncated"
    );
    assert_eq!(
        net.peek(1).membership(),
        Some(&Membership::new(ids(3)).unwrap()),
        "the membership before it is back in force"
    );
    assert!(net.peek(1).membership_index() < id.index);
}

#[test]
fn commit_in_a_joint_configuration_needs_a_majority_of_both_halves() {
    // Voters {1, 2, 3} → {1, 4, 5}, once with the new half cut off, once with the old.
    for (cut, half) in [([4, 5], "old"), ([2, 3], "new")] {
        let mut net = three_voters_and_learners(&[4, 5]);
        net.isolate(cut[0]);
        net.isolate(cut[1]);
        let joint = net
            .node(1)
            .change_membership(MembershipChange::ChangeVoters(set(&[1, 4, 5])))
            .unwrap();
        net.advance(30);
        let other = if half == "old" { 2 } else { 4 };
        assert_eq!(net.peek(other).last_log_id(), joint, "{half} half");
        for id in [1, other] {
            assert_eq!(
                membership_of(&net, id),
                (vec![1, 4, 5], vec![1, 2, 3], vec![]),
                "n{id} uses the joint membership"
            );
        }
        assert!(
            net.peek(1).commit_index() < joint.index,
            "the {half} majority alone committed the joint membership"
        );
        // Both halves: the joint entry commits, and the leader leaves the joint configuration.
        net.heal();
        net.advance(30);
        assert!(net.peek(1).commit_index() > joint.index);
        for id in [1, 4, 5] {
            assert_eq!(membership_of(&net, id), (vec![1, 4, 5], vec![], vec![]));
        }
        let leave = net.peek(1).membership_index();
        assert!(leave > joint.index && net.peek(1).commit_index() >= leave);
        assert!(net.peek(1).peers().iter().all(|p| p.id.0 >= 4));
        // The promoted learners vote and can be elected.
        net.isolate(1);
        net.elect(4);
        let after = net.propose(4, "after");
        net.advance(10);
        assert!(net.peek(5).commit_index() >= after.index);
    }
}

#[test]
fn an_election_in_a_joint_configuration_needs_a_majority_of_both_halves() {
    // Every node holds the joint membership {1, 2, 3} + {1, 4, 5}.
    let joint = Membership::new(set(&[1, 4, 5]))
        .and_then(|m| m.add_learner(NodeId(2)))
        .and_then(|m| m.add_learner(NodeId(3)))
        .and_then(|m| m.enter_joint(set(&[1, 2, 3])))
        .unwrap();
    let mut net = Network::new(5);
    for id in 1..=5 {
        let state = InitialState {
            membership: Some(joint.clone()),
            ..InitialState::default()
        };
        net.add_node(id, state);
    }
    net.isolate(4);
    net.isolate(5);
    net.campaign(1);
    assert_ne!(
        net.peek(1).role(),
        Role::Leader,
        "votes of the incoming half alone"
    );
    net.heal();
    net.isolate(2);
    net.isolate(3);
    net.campaign(1);
    assert_ne!(
        net.peek(1).role(),
        Role::Leader,
        "votes of the outgoing half alone"
    );
    net.heal();
    net.isolate(3);
    net.isolate(5);
    net.campaign(1);
    assert_eq!(net.peek(1).role(), Role::Leader, "a majority of each half");
}

#[test]
fn a_removed_leader_leads_until_its_removal_commits_then_hands_over_at_once() {
    let mut net = Network::new(3);
    net.elect(1);
    let joint = net
        .node(1)
        .change_membership(MembershipChange::ChangeVoters(set(&[2, 3])))
        .unwrap();
    // Deliver one message at a time, with a proposal after each, so that the commit index
    // moves in small steps: node 1 leads until the membership without it commits.
    let term = net.peek(1).term();
    net.drive_all();
    let mut removal: Option<LogIndex> = None;
    while let Some(m) = net.queue.pop_front() {
        net.deliver(m);
        if net.peek(1).role() == Role::Leader && net.peek(1).last_log_id().index.0 < 30 {
            match net.node(1).propose(cmd("during")) {
                Ok(_) => {}
                // Handing over once its removal committed: no more proposals.
                Err(ProtocolError::TransferInProgress) => {
                    assert!(removal.is_some_and(|r| net.peek(1).commit_index() >= r));
                }
                Err(other) => panic!("{other}"),
            }
            net.drive(NodeId(1));
        }
        let one = net.peek(1);
        if removal.is_none() && !one.membership().unwrap().is_joint() {
            removal = Some(one.membership_index());
        }
        if one.role() != Role::Leader {
            assert_eq!(
                one.term(),
                term,
                "it stepped down on its own, not for a newer term"
            );
            let removal = removal.expect("it appended the new voters first");
            assert!(removal > joint.index);
            assert!(
                one.commit_index() >= removal,
                "it stepped down before its removal committed"
            );
            break;
        }
    }
    assert_eq!(net.peek(1).role(), Role::Follower, "it stepped down");
    // The hand-over starts the next election at once, not after an election timeout.
    let before = net.now;
    net.settle();
    assert_eq!(net.now, before);
    let new_leader = [2, 3]
        .into_iter()
        .find(|&id| net.peek(id).role() == Role::Leader)
        .expect("a new voter leads at once");
    assert!(net.peek(new_leader).elected_by_transfer());
    let term = net.peek(new_leader).term();
    // The old leader is no member: it never campaigns and the new voters commit without it.
    net.propose(new_leader, "after");
    net.advance(1_000);
    assert_eq!(net.peek(new_leader).role(), Role::Leader);
    assert_eq!(net.peek(new_leader).term(), term);
    assert_eq!(net.peek(1).role(), Role::Follower);
    assert!(net.applied_commands(2).contains(&"after".to_string()));
    assert!(net.applied_commands(3).contains(&"after".to_string()));
}

#[test]
fn a_removed_node_cannot_disrupt_the_cluster() {
    let mut net = Network::new(3);
    net.elect(1);
    // Node 3 is removed while cut off: it never learns of it and still counts itself a voter.
    net.isolate(3);
    change(&mut net, 1, MembershipChange::ChangeVoters(set(&[1, 2])));
    net.advance(30);
    assert_eq!(membership_of(&net, 1), (vec![1, 2], vec![], vec![]));
    assert_eq!(membership_of(&net, 3), (vec![1, 2, 3], vec![], vec![]));
    let term = net.peek(1).term();
    net.heal();
    // It times out and campaigns again and again; its requests are refused, not counted, and
    // its terms never reach the cluster.
    net.advance(2_000);
    assert!(net.peek(3).term() > term || net.peek(3).role() != Role::Leader);
    assert_eq!(net.peek(1).role(), Role::Leader);
    assert_eq!(net.peek(1).term(), term);
    assert_eq!(net.peek(2).term(), term);
    net.propose(1, "still serving");
    assert!(
        net.applied_commands(2)
            .contains(&"still serving".to_string())
    );
}

#[test]
fn unsafe_or_overlapping_changes_are_refused_and_change_nothing() {
    use MembershipChange::*;
    use MembershipError::*;
    let mut net = Network::new(3);
    for id in [4, 5] {
        net.add_node(id, InitialState::joining());
    }
    // A leader whose first entry of its term is not committed yet.
    let deadline = net.peek(1).next_deadline();
    net.now = deadline;
    net.node(1).tick(deadline);
    net.settle_dropping(|m| matches!(m.body, MessageBody::AppendEntriesResponse { .. }));
    assert_eq!(net.peek(1).role(), Role::Leader);
    let refused = |net: &mut Network, leader: u64, change: MembershipChange| {
        let before = (
            net.peek(leader).last_log_id(),
            net.peek(leader).membership().cloned(),
        );
        let result = net.node(leader).change_membership(change.clone());
        let after = (
            net.peek(leader).last_log_id(),
            net.peek(leader).membership().cloned(),
        );
        assert_eq!(before, after, "{change:?} changed something");
        match result {
            Err(ProtocolError::Membership(error)) => error,
            other => panic!("{change:?}: {other:?}"),
        }
    };
    assert_eq!(refused(&mut net, 1, learner(4)), Uncommitted);
    net.advance(20);

    // One change at a time: the next waits until the last commits.
    net.node(1).change_membership(learner(4)).unwrap();
    assert_eq!(refused(&mut net, 1, learner(5)), Uncommitted);
    net.settle();
    assert_eq!(refused(&mut net, 1, learner(4)), AlreadyLearner(NodeId(4)));
    assert_eq!(refused(&mut net, 1, learner(2)), AlreadyVoter(NodeId(2)));
    assert_eq!(refused(&mut net, 1, learner(0)), ReservedId);
    assert_eq!(
        refused(&mut net, 1, RemoveLearner(NodeId(2))),
        NotLearner(NodeId(2))
    );
    assert_eq!(refused(&mut net, 1, ChangeVoters(set(&[]))), NoVoters);
    assert_eq!(
        refused(&mut net, 1, ChangeVoters(set(&[1, 2, 9]))),
        NotALearnerToPromote(NodeId(9))
    );
    assert_eq!(
        refused(&mut net, 1, ChangeVoters(set(&[1, 2, 3]))),
        Unchanged
    );

    // A change of voters is not done until the joint configuration is left.
    net.node(1)
        .change_membership(ChangeVoters(set(&[1, 2, 4])))
        .unwrap();
    assert_eq!(
        refused(&mut net, 1, ChangeVoters(set(&[1, 2]))),
        Uncommitted
    );
    net.settle();
    assert_eq!(membership_of(&net, 1), (vec![1, 2, 4], vec![], vec![]));

    // Only the leader changes the membership, and not while it hands over leadership.
    assert!(matches!(
        net.node(2).change_membership(learner(5)),
        Err(ProtocolError::NotLeader { .. })
    ));
    let now = net.now;
    net.isolate(2);
    net.node(1).transfer_leadership(now, NodeId(2)).unwrap();
    assert_eq!(
        net.node(1).change_membership(learner(5)),
        Err(ProtocolError::TransferInProgress)
    );
    net.heal();
    // Removing the last voter would leave no voter.
    let mut single = Network::new(1);
    single.elect(1);
    assert_eq!(refused(&mut single, 1, ChangeVoters(set(&[]))), NoVoters);
}

#[test]
fn a_snapshot_carries_the_membership_to_a_new_node() {
    let mut net = three_voters_and_learners(&[5]);
    net.add_node(4, InitialState::joining());
    for text in ["a", "b", "c"] {
        net.propose(1, text);
    }
    net.advance(10);
    // The snapshot covers the entry that added learner 5; the log before it is gone.
    let meta = net.take_snapshot(1, 0);
    assert!(meta.membership.is_learner(NodeId(5)));
    change(&mut net, 1, learner(4));
    net.advance(30);
    let installed = &net.snapshots[&NodeId(4)].0;
    assert_eq!(installed.membership, meta.membership);
    assert_eq!(membership_of(&net, 4), (vec![1, 2, 3], vec![], vec![4, 5]));
    assert_eq!(net.applied_commands(4), ["a", "b", "c"]);
}

#[test]
fn a_removed_leader_that_cannot_hand_over_steps_down_at_the_transfer_deadline() {
    // Without CheckQuorum, so that only the hand-over's deadline can make it step down.
    let mut net = Network::with(3, |config| config.check_quorum = false);
    net.elect(1);
    net.node(1)
        .change_membership(MembershipChange::ChangeVoters(set(&[2, 3])))
        .unwrap();
    // Proposals keep the leader's log ahead of its followers; it is cut off the moment its
    // removal commits, before any follower holds the whole log.
    net.drive_all();
    while let Some(m) = net.queue.pop_front() {
        net.deliver(m);
        let one = net.peek(1);
        if one.removal_committed() {
            break;
        }
        if !one.membership().unwrap().is_joint() || one.last_log_id().index.0 < 30 {
            let _ = net.node(1).propose(cmd("during"));
            net.drive(NodeId(1));
        }
    }
    assert!(net.peek(1).removal_committed(), "its removal committed");
    net.isolate(1);
    net.queue.clear();
    assert_eq!(net.peek(1).role(), Role::Leader, "handing over");
    assert!(matches!(
        net.node(1).propose(cmd("refused")),
        Err(ProtocolError::TransferInProgress)
    ));
    let timeout = net.peek(1).config().election_timeout_min_ms;
    net.advance(timeout);
    assert_eq!(
        net.peek(1).role(),
        Role::Follower,
        "stepped down at the deadline"
    );
    net.advance(500);
    assert!([2, 3].iter().any(|&id| net.peek(id).role() == Role::Leader));
}

/// Dissertation §4.2.2: a node that its own latest membership leaves out still campaigns
/// while that membership is uncommitted, for it may be the only one that can bring it to a
/// commit. Here the old leader alone holds the entry that removes it; the remaining voter
/// cannot win without its vote (the joint membership it holds needs both), and it refuses
/// that voter (whose log is behind), so only its own campaign ends the standstill.
#[test]
fn a_node_left_out_by_an_uncommitted_membership_still_campaigns() {
    let mut net = Network::with(2, |config| config.pre_vote = false);
    net.elect(1);
    net.node(1)
        .change_membership(MembershipChange::ChangeVoters(set(&[2])))
        .unwrap();
    net.drive_all();
    // Deliver until node 1 has appended the new voters alone, then cut it off.
    while let Some(m) = net.queue.pop_front() {
        net.deliver(m);
        if !net.peek(1).membership().unwrap().is_joint() {
            break;
        }
    }
    assert_eq!(membership_of(&net, 1), (vec![2], vec![], vec![]));
    assert_eq!(membership_of(&net, 2), (vec![2], vec![1, 2], vec![]));
    net.queue.clear();
    net.isolate(1);
    net.advance(1_000);
    assert_ne!(
        net.peek(1).role(),
        Role::Leader,
        "CheckQuorum stepped it down"
    );
    assert_ne!(net.peek(2).role(), Role::Leader, "it needs node 1's vote");
    net.heal();
    net.advance(2_000);
    assert_eq!(net.peek(2).role(), Role::Leader);
    assert_eq!(membership_of(&net, 2), (vec![2], vec![], vec![]));
    assert!(net.peek(2).commit_index() >= net.peek(2).membership_index());
}

/// Leadership in a joint configuration rests on a majority of both halves: a leader that
/// hears only from the incoming half steps down by CheckQuorum (dissertation §6.2 applied to
/// §6's joint majorities; the lease is counted by the same rule).
#[test]
fn a_joint_leader_heard_by_one_half_only_steps_down() {
    let joint = Membership::new(set(&[1, 4, 5]))
        .and_then(|m| m.add_learner(NodeId(2)))
        .and_then(|m| m.add_learner(NodeId(3)))
        .and_then(|m| m.enter_joint(set(&[1, 2, 3])))
        .unwrap();
    let mut net = Network::new(5);
    for id in 1..=5 {
        let state = InitialState {
            membership: Some(joint.clone()),
            ..InitialState::default()
        };
        net.add_node(id, state);
    }
    // Node 1 is elected by both halves; the moment it leads, 4 and 5 are cut off, so the
    // joint membership never commits and only the incoming half hears it.
    let deadline = net.peek(1).next_deadline();
    net.now = deadline;
    net.node(1).tick(deadline);
    net.drive_all();
    while let Some(m) = net.queue.pop_front() {
        net.deliver(m);
        if net.peek(1).role() == Role::Leader {
            break;
        }
    }
    assert_eq!(net.peek(1).role(), Role::Leader);
    net.isolate(4);
    net.isolate(5);
    net.queue.clear();
    let timeout = net.peek(1).config().election_timeout_min_ms;
    net.advance(timeout / 2);
    assert_eq!(
        net.peek(1).role(),
        Role::Leader,
        "within an election timeout"
    );
    assert!(net.peek(1).membership().unwrap().is_joint());
    net.advance(timeout);
    assert_ne!(
        net.peek(1).role(),
        Role::Leader,
        "CheckQuorum with one half only"
    );
}

/// A snapshot records the membership in force at its last entry, not a later one: a change
/// appended (and not applied) after that entry is not in the snapshot (§7's lastConfig).
#[test]
fn a_snapshot_records_the_membership_at_its_last_entry() {
    let mut net = Network::new(3);
    net.add_node(4, InitialState::joining());
    net.elect(1);
    let applied = net.peek(1).applied_index();
    net.isolate(1);
    net.node(1).change_membership(learner(4)).unwrap();
    net.settle();
    assert!(net.peek(1).membership().unwrap().is_learner(NodeId(4)));
    let meta = net.peek(1).snapshot_meta(applied).unwrap();
    assert_eq!(*meta.membership, Membership::new(ids(3)).unwrap());
}
