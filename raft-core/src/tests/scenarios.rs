//! Scenario tests for lease safety under a partial partition: the old leader keeps a lease it
//! earned while a node it can no longer reach campaigns through a node that hears both. These
//! fail when follower stickiness (dissertation §4.2.3, §6.4.1) or its restart rule is broken.

use super::harness::*;
use crate::{Config, HardState, InitialState, Instant, NodeId, Raft, Role};

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
        voters: ids(3),
    };
    let config: Config = test_config(3);
    let now: Instant = net.now;
    net.nodes
        .insert(NodeId(3), Raft::new(config, state, 99, now).unwrap());
    // n3 also stops hearing from n1 for a while, so only the restart rule protects the lease.
    net.cut.insert((NodeId(1), NodeId(3)));
    run_and_check(&mut net, 60);
    net.cut.remove(&(NodeId(1), NodeId(3)));
    run_and_check(&mut net, 600);
}
