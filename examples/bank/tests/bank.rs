//! The ledger under faults, against its own logic on one copy: linearizable, and the total kept.

use raft_core::node::Consistency::{Lease, Linearizable};
use raft_example_bank::{Bank, Query, Transfer};
use raft_sim::{ClusterOp, ClusterRet, Simulation, sequential};
use rand::RngExt;

#[test]
fn transfers_are_linearizable_and_keep_the_total() {
    let model = sequential(Bank(vec![100; 4]), Bank::transfer, Bank::answer);
    let simulation =
        Simulation::new(|_| Bank(vec![100; 4]), model).clients(3, |client| async move {
            let mut rng = client.rng();
            while client.running() {
                let [from, to] = [(); 2].map(|_| rng.random_range(0..4));
                let amount = rng.random_range(1..80);
                match rng.random_range(0..4) {
                    0 | 1 => drop(client.propose(Transfer(from, to, amount)).await),
                    2 => drop(client.read(Query::Balance(from), Linearizable).await),
                    _ => drop(client.read(Query::Total, Lease).await),
                }
            }
        });
    for report in simulation.check() {
        for (op, answer) in report.history.completed() {
            if let ClusterOp::Read(Query::Total) = op {
                assert_eq!(answer, &ClusterRet::Read(400), "the total changed");
            }
        }
    }
}
