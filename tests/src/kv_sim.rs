//! raft-kv's state machine ([`KvStore`](raft_kv::store::KvStore)) on the simulation kit: the model it is checked
//! against, and the clients of the cluster simulations in `tests/sim_cluster.rs`.

use crate::linearizability::{KvModel, Operation, Response, apply_to_map};
use raft_core::node::{Ack, Consistency};
use raft_kv::store::{KvCommand, KvResponse, KvStore};
use raft_sim::{Client, ClusterOp, ClusterRet, Model, OpOf, Register, RetOf, Simulation, Target};
use rand::RngExt;
use std::collections::BTreeMap;
use std::time::Duration;

/// [`KvModel`] on the kit's operations: a write is a [`KvCommand`], a read names a key. Only
/// puts, deletes and compare-and-swaps are modelled: the workloads here make no other write,
/// and a history with one (a `Once` or a `Register`) panics the check rather than be judged
/// on a guess.
#[derive(Debug, Default)]
pub struct KvSimModel(KvModel);

/// `op` as the key-value model describes it, if it is one it models.
fn operation(op: &OpOf<KvStore>) -> Option<Operation> {
    Some(match op {
        ClusterOp::Write(KvCommand::Put { key, value }) => Operation::Put {
            key: key.clone(),
            value: value.clone(),
        },
        ClusterOp::Write(KvCommand::Delete { key }) => Operation::Delete { key: key.clone() },
        ClusterOp::Write(KvCommand::Cas { key, expect, new }) => Operation::Cas {
            key: key.clone(),
            expect: expect.clone(),
            new: new.clone(),
        },
        ClusterOp::Write(_) => return None,
        ClusterOp::Read(key) => Operation::Get { key: key.clone() },
    })
}

/// The key-value model's answer as the kit records it.
fn answer(response: Response) -> RetOf<KvStore> {
    match response {
        Response::Done => ClusterRet::Write(KvResponse::Done),
        Response::Cas { swapped, current } => {
            ClusterRet::Write(KvResponse::Cas { swapped, current })
        }
        Response::Value(value) => ClusterRet::Read(value),
    }
}

/// The kit's answer as the key-value model describes it, if it is one the model gives.
fn response(ret: &RetOf<KvStore>) -> Option<Response> {
    Some(match ret {
        ClusterRet::Write(KvResponse::Done) => Response::Done,
        ClusterRet::Write(KvResponse::Cas { swapped, current }) => Response::Cas {
            swapped: *swapped,
            current: current.clone(),
        },
        ClusterRet::Write(_) => return None,
        ClusterRet::Read(value) => Response::Value(value.clone()),
    })
}

impl Model for KvSimModel {
    type Op = OpOf<KvStore>;
    type Ret = RetOf<KvStore>;
    type State = BTreeMap<String, String>;

    fn init(&self) -> Self::State {
        BTreeMap::new()
    }

    fn step(&self, state: &Self::State, op: &Self::Op) -> (Self::State, Self::Ret) {
        let mut next = state.clone();
        match operation(op) {
            Some(operation) => {
                let response = apply_to_map(&mut next, &operation);
                (next, answer(response))
            }
            None => panic!("KvSimModel models puts, deletes and swaps only, not {op:?}"),
        }
    }

    fn partition(&self, op: &Self::Op) -> Option<u64> {
        self.0.partition(&operation(op)?)
    }

    fn register(&self, op: &Self::Op, ret: Option<&Self::Ret>) -> Option<Register> {
        let operation = operation(op)?;
        match ret {
            None => self.0.register(&operation, None),
            Some(ret) => self.0.register(&operation, Some(&response(ret)?)),
        }
    }
}

/// What the clients of a run do, in percent: the rest are read-your-writes probes (a write to
/// the client's own key, then an `AtLeast` read of it from any node).
#[derive(Clone, Copy, Debug)]
pub struct Mix {
    /// Puts of a shared key.
    pub put: u64,
    /// Deletes of a shared key.
    pub delete: u64,
    /// Compare-and-swaps of a shared key, expecting a value some client may have written.
    pub cas: u64,
    /// `Linearizable` reads.
    pub linearizable: u64,
    /// `Lease` reads.
    pub lease: u64,
    /// `BoundedStaleness` reads (100 ms to 1 s) from any node.
    pub bounded: u64,
}

impl Mix {
    /// Under the random nemesis.
    pub const FAULTS: Mix = Mix {
        put: 28,
        delete: 5,
        cas: 14,
        linearizable: 14,
        lease: 17,
        bounded: 10,
    };
    /// Mostly writes: tails to diverge, and a log that grows and is compacted quickly.
    pub const WRITES: Mix = Mix {
        put: 40,
        delete: 5,
        cas: 15,
        linearizable: 15,
        lease: 10,
        bounded: 10,
    };
    /// Heavier still on writes, for crashes to land in.
    pub const DISK: Mix = Mix {
        put: 45,
        delete: 5,
        cas: 15,
        linearizable: 10,
        lease: 5,
        bounded: 5,
    };
    /// Heavy ReadIndex load beside the writes.
    pub const STEADY: Mix = Mix {
        put: 35,
        delete: 0,
        cas: 5,
        linearizable: 40,
        lease: 5,
        bounded: 10,
    };
}

/// A simulation of raft-kv's state machine against [`KvSimModel`], with `clients` clients
/// making the `mix` of requests on `keys` shared keys (few keys, many conflicts), then a final
/// linearizable read of every key once the faults stop (which pins down every key's last value,
/// so that a lost acknowledged write shows up).
pub fn simulation(clients: u64, keys: u64, mix: Mix) -> Simulation<KvStore, KvSimModel> {
    Simulation::new(|_| KvStore::default(), KvSimModel::default())
        .clients(clients, move |client| run_client(client, keys, mix))
}

async fn run_client(client: Client<KvStore>, keys: u64, mix: Mix) {
    let mut rng = client.rng();
    let mut counter = 0u64;
    let own_key = format!("own-{}", client.index());
    while client.running() {
        // Mostly the leader, sometimes any node: stale leaders get requests too, which is where
        // a wrong answer would come from.
        let target = if rng.random_ratio(1, 4) {
            Target::Any
        } else {
            Target::Leader
        };
        let key = format!("k{}", rng.random_range(0..keys));
        counter += 1;
        let value = format!("c{}-{counter}", client.index());
        let mut roll = rng.random_range(0..100);
        let mut next = |weight: u64| {
            let hit = roll < weight;
            roll = roll.saturating_sub(weight);
            hit
        };
        if next(mix.put) {
            let command = KvCommand::Put { key, value };
            client.propose_on(target, command, Ack::Quorum).await;
        } else if next(mix.delete) {
            let command = KvCommand::Delete { key };
            client.propose_on(target, command, Ack::Quorum).await;
        } else if next(mix.cas) {
            let expect = if rng.random_ratio(3, 10) {
                None
            } else {
                let writer = rng.random_range(0..4);
                Some(format!("c{writer}-{}", rng.random_range(1..=counter)))
            };
            let command = KvCommand::Cas {
                key,
                expect,
                new: value,
            };
            client.propose_on(target, command, Ack::Quorum).await;
        } else if next(mix.linearizable) {
            client.read_on(target, key, Consistency::Linearizable).await;
        } else if next(mix.lease) {
            client.read_on(target, key, Consistency::Lease).await;
        } else if next(mix.bounded) {
            let bound = Duration::from_millis(rng.random_range(100..1_000));
            let consistency = Consistency::BoundedStaleness(bound);
            client.read_on(Target::Any, key, consistency).await;
        } else {
            let command = KvCommand::Put {
                key: own_key.clone(),
                value,
            };
            if let Some(written) = client.propose(command).await.ok() {
                let consistency = Consistency::AtLeast(written.index);
                client
                    .read_on(Target::Any, own_key.clone(), consistency)
                    .await;
            }
        }
    }
    for k in 0..keys {
        for _ in 0..200 {
            let read = client
                .read(format!("k{k}"), Consistency::Linearizable)
                .await;
            if read.is_ok() {
                break;
            }
        }
    }
}
