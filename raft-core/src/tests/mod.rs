//! In-crate tests that exercise whole nodes: the paper's claims one by one (`paper`), and the
//! deterministic cluster simulator (`sim`). Both drive real [`crate::Raft`] values through the
//! public inputs; `harness` is the small synchronous driver they share.

mod harness;
mod membership;
mod paper;
mod parity;
mod regressions;
mod scenarios;
mod sim;
mod snapshot_recovery;
mod snapshots;

#[cfg(test)]
mod smoke {
    use super::harness::*;
    use crate::{NodeId, ReadId, ReadMode, Role};

    #[test]
    fn three_nodes_elect_replicate_and_read() {
        let mut net = Network::new(3);
        net.elect(1);
        assert_eq!(net.peek(2).leader(), Some(NodeId(1)));
        net.propose(1, "a");
        net.propose(1, "b");
        net.advance(20);
        for id in 1..=3 {
            assert_eq!(net.applied_commands(id), vec!["a", "b"], "n{id}");
        }
        let now = net.now;
        net.node(1)
            .read(now, ReadId(7), ReadMode::Linearizable)
            .unwrap();
        net.settle();
        let reads = &net.reads[&NodeId(1)];
        assert_eq!(reads.len(), 1);
        assert!(reads[0].1.is_ok());
        assert!(net.peek(1).lease_holds());
        net.isolate(1);
        net.advance(400);
        assert_ne!(net.peek(1).role(), Role::Leader, "check quorum");
        assert!(net.peek(2).role() == Role::Leader || net.peek(3).role() == Role::Leader);
    }
}
