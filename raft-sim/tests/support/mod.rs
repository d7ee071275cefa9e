//! A small state machine for the kit's own tests: registers of numbers by key, which writes
//! add to or overwrite, and its model.

#![allow(dead_code)]

use async_trait::async_trait;
use bytes::Bytes;
use raft_core::node::Consistency;
use raft_core::node::{SnapshotReader, SnapshotSource, StateMachine};
use raft_core::{LogIndex, SnapshotMeta};
use raft_sim::{ClusterOp, ClusterRet, Model, OpOf, RetOf, Simulation};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A write to one register.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Write {
    /// Adds to the register; answers the value after.
    Add { key: u8, delta: u64 },
    /// Overwrites the register; answers the value after.
    Put { key: u8, value: u64 },
}

impl Write {
    fn key(&self) -> u8 {
        match self {
            Write::Add { key, .. } | Write::Put { key, .. } => *key,
        }
    }
}

/// The registers, and what writes do to them (shared by the state machine and the model).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Registers(pub BTreeMap<u8, u64>);

impl Registers {
    pub fn apply(&mut self, write: &Write) -> u64 {
        let value = self.0.entry(write.key()).or_insert(0);
        match write {
            Write::Add { delta, .. } => *value = value.wrapping_add(*delta),
            Write::Put { value: new, .. } => *value = *new,
        }
        *value
    }

    pub fn get(&self, key: u8) -> u64 {
        self.0.get(&key).copied().unwrap_or(0)
    }
}

/// The state machine: the registers, plus a value mixed into every write when `noise` is set
/// (a state machine that is not deterministic: each replica draws its own).
#[derive(Default)]
pub struct RegisterMachine {
    pub registers: Registers,
    pub noise: Option<u64>,
}

#[async_trait]
impl StateMachine for RegisterMachine {
    type Command = Write;
    type Response = u64;
    type Query = u8;
    type QueryResponse = u64;

    async fn apply(&mut self, _: LogIndex, write: Write) -> u64 {
        let value = self.registers.apply(&write);
        match &mut self.noise {
            Some(noise) => {
                // A per-replica pseudo-random draw: replicas drift apart.
                *noise = noise
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1);
                let extra = *noise >> 63;
                let value = value.wrapping_add(extra);
                self.registers.0.insert(write.key(), value);
                value
            }
            None => value,
        }
    }

    async fn query(&self, key: u8) -> u64 {
        self.registers.get(key)
    }

    async fn snapshot(&self) -> Result<Box<dyn SnapshotSource>, String> {
        let image = postcard::to_allocvec(&self.registers.0).map_err(|e| e.to_string())?;
        Ok(Box::new(Bytes::from(image)))
    }

    async fn restore(
        &mut self,
        _: &SnapshotMeta,
        image: &mut SnapshotReader<'_>,
    ) -> Result<(), String> {
        let image = image.read_to_end().await?;
        self.registers = Registers(postcard::from_bytes(&image).map_err(|e| e.to_string())?);
        Ok(())
    }
}

/// The model: one copy of the registers. Every operation touches one key, so the checker
/// takes the keys one at a time.
pub struct RegisterModel;

impl Model for RegisterModel {
    type Op = OpOf<RegisterMachine>;
    type Ret = RetOf<RegisterMachine>;
    type State = Registers;

    fn init(&self) -> Registers {
        Registers::default()
    }

    fn step(&self, state: &Registers, op: &Self::Op) -> (Registers, Self::Ret) {
        match op {
            ClusterOp::Write(write) => {
                let mut next = state.clone();
                let value = next.apply(write);
                (next, ClusterRet::Write(value))
            }
            ClusterOp::Read(key) => (state.clone(), ClusterRet::Read(state.get(*key))),
        }
    }

    fn partition(&self, op: &Self::Op) -> Option<u64> {
        Some(u64::from(match op {
            ClusterOp::Write(write) => write.key(),
            ClusterOp::Read(key) => *key,
        }))
    }
}

/// A write to a random one of `keys` registers: mostly adds, sometimes a put.
pub fn random_write(rng: &mut impl rand::Rng, keys: u8) -> Write {
    use rand::RngExt;
    let key = rng.random_range(0..keys);
    if rng.random_ratio(1, 5) {
        Write::Put {
            key,
            value: rng.random_range(0..1000),
        }
    } else {
        Write::Add {
            key,
            delta: rng.random_range(1..10),
        }
    }
}

/// Three clients writing (three times in five) and reading linearizably, on three keys, then
/// reading every key once the faults stop.
pub fn workload(
    simulation: Simulation<RegisterMachine, RegisterModel>,
) -> Simulation<RegisterMachine, RegisterModel> {
    use rand::RngExt;
    simulation.clients(3, |client| async move {
        let mut rng = client.rng();
        while client.running() {
            if rng.random_ratio(3, 5) {
                client.propose(random_write(&mut rng, 3)).await;
            } else {
                client
                    .read(rng.random_range(0..3), Consistency::Linearizable)
                    .await;
            }
        }
        for key in 0..3 {
            client.read(key, Consistency::Linearizable).await;
        }
    })
}

/// Whether `message` is an AppendEntries carrying at least one command.
pub fn carries_commands(message: &raft_core::Message) -> bool {
    matches!(&message.body, raft_core::MessageBody::AppendEntries { entries, .. }
        if entries.iter().any(|e| matches!(e.payload, raft_core::Payload::Command(_))))
}

/// Changes the first command of an AppendEntries (adds one to what a write adds or puts), as a
/// buggy compression or encryption layer might: the message stays well formed, so nothing in
/// the protocol can tell. Whether it changed one.
pub fn corrupt_one_command(message: &mut raft_core::Message) -> bool {
    use raft_core::{MessageBody, Payload};
    let MessageBody::AppendEntries { entries, .. } = &mut message.body else {
        return false;
    };
    for entry in entries.iter_mut() {
        let Payload::Command(data) = &entry.payload else {
            continue;
        };
        let Ok(write) = postcard::from_bytes::<Write>(data) else {
            continue;
        };
        let changed = match write {
            Write::Add { key, delta } => Write::Add {
                key,
                delta: delta + 1,
            },
            Write::Put { key, value } => Write::Put {
                key,
                value: value + 1,
            },
        };
        let Ok(bytes) = postcard::to_allocvec(&changed) else {
            continue;
        };
        entry.payload = Payload::Command(bytes.into());
        return true;
    }
    false
}

/// Runs the default seeds (or the environment's) and prints each run's summary.
pub fn run_seeds<SM, M>(
    simulation: &Simulation<SM, M>,
) -> Vec<raft_sim::Report<OpOf<SM>, RetOf<SM>>>
where
    SM: raft_sim::SimStateMachine,
    M: Model<Op = OpOf<SM>, Ret = RetOf<SM>>,
{
    let reports: Vec<_> = raft_sim::seeds(raft_sim::DEFAULT_SEEDS)
        .into_iter()
        .map(|seed| simulation.run(seed))
        .collect();
    for report in &reports {
        eprintln!("{}", report.summary());
    }
    reports
}
