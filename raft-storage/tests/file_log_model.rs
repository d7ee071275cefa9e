//! A property test of the durable log store: random sequences of appends (some replacing a
//! suffix, some refused), truncations, purges (as a snapshot makes them: at a held entry, at a
//! diverged one, past the end), saved voters and reopens, checked after every step against
//! the in-memory store as the model (which the conformance suite holds to the contract).
//!
//! `RAFT_WAL_SEEDS=N` runs N seeds (default 8); a failure prints its seed, and
//! `RAFT_WAL_SEED=S` replays one.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use raft_core::node::{LogStore, StorageError};
use raft_core::{Entry, EntryId, HardState, LogIndex, NodeId, Payload, Term};
use raft_storage::{FileLogOptions, FileLogStore, MemLogStore};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::path::Path;

const STEPS: usize = 300;

fn seeds() -> Vec<u64> {
    if let Ok(seed) = std::env::var("RAFT_WAL_SEED") {
        return vec![seed.parse().expect("RAFT_WAL_SEED is a number")];
    }
    let count = std::env::var("RAFT_WAL_SEEDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(8);
    (0..count).collect()
}

/// What the model knows of the log, to draw operations that mostly make sense.
struct Shape {
    start: u64,
    last: u64,
    terms: Vec<(u64, u64)>,
}

async fn shape(model: &mut MemLogStore) -> Shape {
    let recovered = model.recover().await.unwrap();
    let start = recovered.log_start.index.0;
    let terms: Vec<(u64, u64)> = recovered
        .entries
        .iter()
        .map(|e| (e.index.0, e.term.0))
        .collect();
    Shape {
        start,
        last: terms.last().map_or(start, |&(i, _)| i),
        terms,
    }
}

fn payload(rng: &mut StdRng) -> Payload {
    match rng.random_range(0..10) {
        0 => Payload::Blank,
        1 => Payload::Command(vec![rng.random::<u8>(); rng.random_range(1000..3000)].into()),
        _ => {
            let len = rng.random_range(0..200);
            Payload::Command(
                (0..len)
                    .map(|_| rng.random::<u8>())
                    .collect::<Vec<u8>>()
                    .into(),
            )
        }
    }
}

fn same_outcome<T: PartialEq + std::fmt::Debug>(
    seed: u64,
    step: usize,
    what: &str,
    model: Result<T, StorageError>,
    store: Result<T, StorageError>,
) {
    match (&model, &store) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "seed {seed} step {step}: {what}"),
        (Err(a), Err(b)) => assert_eq!(a.kind(), b.kind(), "seed {seed} step {step}: {what}"),
        _ => panic!("seed {seed} step {step}: {what}: model {model:?}, store {store:?}"),
    }
}

async fn run_seed(seed: u64, dir: &Path) {
    let mut rng = StdRng::seed_from_u64(seed);
    let options = FileLogOptions::new().segment_bytes(rng.random_range(4096..32_768));
    let mut model = MemLogStore::new();
    let mut store = FileLogStore::open_with(dir, options).await.unwrap();
    let mut term = 1;
    for step in 0..STEPS {
        let shape = shape(&mut model).await;
        match rng.random_range(0..100) {
            // Append, usually at the end, sometimes replacing a suffix, rarely leaving a gap.
            0..=54 => {
                let from = match rng.random_range(0..10) {
                    0 => shape.last + 2,
                    1..=2 => rng.random_range(shape.start + 1..=shape.last + 1),
                    _ => shape.last + 1,
                };
                if rng.random_bool(0.2) {
                    term += 1;
                }
                let entries: Vec<Entry> = (from..from + rng.random_range(0..12))
                    .map(|index| Entry {
                        term: Term(term),
                        index: LogIndex(index),
                        payload: payload(&mut rng),
                    })
                    .collect();
                let hard_state = rng.random_bool(0.2).then(|| HardState {
                    term: Term(term),
                    vote: rng.random_bool(0.5).then(|| NodeId(rng.random_range(1..4))),
                });
                let a = model.write(hard_state, entries.clone()).await;
                let b = store.write(hard_state, entries).await;
                same_outcome(seed, step, "write", a, b);
            }
            55..=64 => {
                let from = rng.random_range(shape.start..=shape.last + 2).max(1);
                let a = model.truncate_suffix(LogIndex(from)).await;
                let b = store.truncate_suffix(LogIndex(from)).await;
                same_outcome(seed, step, "truncate", a, b);
            }
            // Purge as snapshots do: at a held entry, at one with another term, past the end.
            65..=79 => {
                let index = rng.random_range(shape.start.saturating_sub(1)..=shape.last + 3);
                let held = shape
                    .terms
                    .iter()
                    .find(|&&(i, _)| i == index)
                    .map(|&(_, t)| t);
                let up_to = EntryId {
                    index: LogIndex(index),
                    term: Term(match held {
                        Some(t) if rng.random_bool(0.8) => t,
                        _ => term + rng.random_range(0..2),
                    }),
                };
                let a = model.purge_prefix(up_to).await;
                let b = store.purge_prefix(up_to).await;
                same_outcome(seed, step, "purge", a, b);
            }
            80..=84 => {
                let voters = (1..=rng.random_range(1..6)).map(NodeId).collect();
                let a = model.save_voters(&voters).await;
                let b = store.save_voters(&voters).await;
                same_outcome(seed, step, "save voters", a, b);
            }
            85..=92 => {
                let from = rng.random_range(shape.start.saturating_sub(1)..=shape.last + 1);
                let to = rng.random_range(from..=shape.last + 2);
                let a = model.read(LogIndex(from), LogIndex(to)).await;
                let b = store.read(LogIndex(from), LogIndex(to)).await;
                same_outcome(seed, step, "read", a, b);
            }
            _ => {
                drop(store);
                store = FileLogStore::open_with(dir, options).await.unwrap();
                let a = model.recover().await;
                let b = store.recover().await;
                same_outcome(seed, step, "recover after reopen", a, b);
            }
        }
    }
    drop(store);
    let mut store = FileLogStore::open_with(dir, options).await.unwrap();
    same_outcome(
        seed,
        STEPS,
        "final recover",
        model.recover().await,
        store.recover().await,
    );
}

#[tokio::test]
async fn random_operations_match_the_model() {
    let root = tempfile::tempdir().unwrap();
    for seed in seeds() {
        run_seed(seed, &root.path().join(seed.to_string())).await;
    }
}
