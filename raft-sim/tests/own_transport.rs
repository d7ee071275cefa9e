//! A transport of the user's own, wrapped around the real TCP transport
//! ([`Simulation::transport`]): one that duplicates messages and one that reorders them pass
//! (Raft tolerates both, §5.3 and §5.5), and one that corrupts the commands in AppendEntries
//! is caught. Each wrapper counts what it did, so a test shows its fault happened.

mod support;

use raft_core::node::{PeerConnection, Transport};
use raft_core::{Membership, Message, NodeId};
use raft_sim::{NodeStart, Report, Simulation};
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{
    RegisterMachine, RegisterModel, carries_commands, corrupt_one_command, run_seeds, workload,
};

fn simulation() -> Simulation<RegisterMachine, RegisterModel> {
    workload(Simulation::new(
        |_| RegisterMachine::default(),
        RegisterModel,
    ))
}

/// A generator for one start of one node's wrapper, from the seed the harness gives it.
fn generator(node: NodeStart) -> Mutex<ChaCha8Rng> {
    Mutex::new(ChaCha8Rng::seed_from_u64(node.seed))
}

/// Whether to act on this message: one chance in `one_in`.
fn draw(rng: &Mutex<ChaCha8Rng>, one_in: u32) -> bool {
    rng.lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .random_ratio(1, one_in)
}

/// Sends one message in ten twice.
struct Duplicating<T> {
    inner: T,
    rng: Mutex<ChaCha8Rng>,
    duplicated: Arc<AtomicU64>,
}

impl<T: Transport> Transport for Duplicating<T> {
    fn send(&self, message: Message) {
        self.send_batch(vec![message]);
    }

    fn send_batch(&self, messages: Vec<Message>) {
        let mut out = Vec::with_capacity(messages.len());
        for message in messages {
            if draw(&self.rng, 10) {
                self.duplicated.fetch_add(1, Ordering::Relaxed);
                out.push(message.clone());
            }
            out.push(message);
        }
        self.inner.send_batch(out);
    }

    fn membership_changed(&self, membership: &Membership) {
        self.inner.membership_changed(membership);
    }

    fn peer_connections(&self) -> Vec<(NodeId, PeerConnection)> {
        self.inner.peer_connections()
    }
}

/// Holds one message in eight back for 1 to 20 ms, so that the messages sent after it to the
/// same peer overtake it; counts those overtakings.
struct Reordering<T> {
    inner: T,
    rng: Mutex<ChaCha8Rng>,
    /// Held-back messages not yet sent, by recipient.
    held: Arc<Mutex<BTreeMap<NodeId, u64>>>,
    delayed: Arc<AtomicU64>,
    overtaken: Arc<AtomicU64>,
}

impl<T: Transport + Clone> Transport for Reordering<T> {
    fn send(&self, message: Message) {
        let to = message.to;
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if draw(&self.rng, 8) {
            let delay = self
                .rng
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .random_range(1..=20);
            *held.entry(to).or_insert(0) += 1;
            self.delayed.fetch_add(1, Ordering::Relaxed);
            let (inner, held) = (self.inner.clone(), Arc::clone(&self.held));
            // On the node's host, so that it dies with the host and replays with the seed.
            tokio::task::spawn_local(async move {
                tokio::time::sleep(Duration::from_millis(delay)).await;
                inner.send(message);
                let mut held = held.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(count) = held.get_mut(&to) {
                    *count = count.saturating_sub(1);
                }
            });
        } else {
            if held.get(&to).is_some_and(|&count| count > 0) {
                self.overtaken.fetch_add(1, Ordering::Relaxed);
            }
            self.inner.send(message);
        }
    }

    fn membership_changed(&self, membership: &Membership) {
        self.inner.membership_changed(membership);
    }

    fn peer_connections(&self) -> Vec<(NodeId, PeerConnection)> {
        self.inner.peer_connections()
    }
}

/// Changes the command of one entry in one AppendEntries in twenty that carry commands (adds
/// one to what a write adds or puts), as a buggy compression or encryption layer might: the
/// message stays well formed, so nothing in the protocol can tell.
struct Corrupting<T> {
    inner: T,
    rng: Mutex<ChaCha8Rng>,
    corrupted: Arc<AtomicU64>,
}

impl<T> Corrupting<T> {
    fn corrupt(&self, message: &mut Message) {
        if carries_commands(message) && draw(&self.rng, 20) && corrupt_one_command(message) {
            self.corrupted.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl<T: Transport> Transport for Corrupting<T> {
    fn send(&self, mut message: Message) {
        self.corrupt(&mut message);
        self.inner.send(message);
    }

    fn send_batch(&self, mut messages: Vec<Message>) {
        for message in &mut messages {
            self.corrupt(message);
        }
        self.inner.send_batch(messages);
    }

    fn membership_changed(&self, membership: &Membership) {
        self.inner.membership_changed(membership);
    }

    fn peer_connections(&self) -> Vec<(NodeId, PeerConnection)> {
        self.inner.peer_connections()
    }
}

#[test]
fn a_transport_that_duplicates_messages_passes() {
    let duplicated = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&duplicated);
    let reports = simulation()
        .transport(move |node, tcp| Duplicating {
            inner: tcp,
            rng: generator(node),
            duplicated: Arc::clone(&counter),
        })
        .check();
    let duplicated = duplicated.load(Ordering::Relaxed);
    eprintln!(
        "{} seeds passed; {duplicated} messages duplicated",
        reports.len()
    );
    assert!(duplicated > 0, "the wrapper duplicated nothing");
}

#[test]
fn a_transport_that_reorders_messages_passes() {
    let delayed = Arc::new(AtomicU64::new(0));
    let overtaken = Arc::new(AtomicU64::new(0));
    let (delays, overtakings) = (Arc::clone(&delayed), Arc::clone(&overtaken));
    let reports = simulation()
        .transport(move |node, tcp| Reordering {
            inner: tcp,
            rng: generator(node),
            held: Arc::default(),
            delayed: Arc::clone(&delays),
            overtaken: Arc::clone(&overtakings),
        })
        .check();
    let (delayed, overtaken) = (
        delayed.load(Ordering::Relaxed),
        overtaken.load(Ordering::Relaxed),
    );
    eprintln!(
        "{} seeds passed; {delayed} messages held back, overtaken {overtaken} times",
        reports.len()
    );
    assert!(overtaken > 0, "no message was overtaken");
}

#[test]
fn a_seed_replays_the_same_run_through_a_wrapper() {
    // The wrapper draws from its `NodeStart::seed` and spawns on its host: replayable.
    let simulation = simulation().transport(|node, tcp| Reordering {
        inner: tcp,
        rng: generator(node),
        held: Arc::default(),
        delayed: Arc::default(),
        overtaken: Arc::default(),
    });
    let first = simulation.run(5);
    let second = simulation.run(5);
    assert!(first.is_ok(), "{first}");
    assert_eq!(first.digest, second.digest);
    assert_eq!(first.faults, second.faults);
}

#[test]
fn a_transport_that_corrupts_commands_is_caught() {
    let corrupted = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&corrupted);
    let simulation = simulation().transport(move |node, tcp| Corrupting {
        inner: tcp,
        rng: generator(node),
        corrupted: Arc::clone(&counter),
    });
    let reports = run_seeds(&simulation);
    let corrupted = corrupted.load(Ordering::Relaxed);
    assert!(corrupted > 0, "the wrapper corrupted nothing");
    let failed: Vec<&Report<_, _>> = reports.iter().filter(|r| !r.is_ok()).collect();
    let Some(first) = failed.first() else {
        panic!("{corrupted} corrupted commands went unnoticed in every seed");
    };
    eprintln!(
        "{corrupted} commands corrupted; caught by seeds {:?}; the first failing run:\n{first}",
        failed.iter().map(|r| r.seed).collect::<Vec<_>>()
    );
    let mut caught_by: Vec<&str> = failed
        .iter()
        .flat_map(|r| &r.problems)
        .filter_map(|p| p.split(':').next())
        .filter(|kind| !kind.starts_with("..."))
        .collect();
    caught_by.sort_unstable();
    caught_by.dedup();
    eprintln!("problems found, by kind: {caught_by:?}");
    // The replicas' applied commands are compared index by index: a follower that stored the
    // changed command applied it where the others applied the original.
    assert!(
        failed
            .iter()
            .flat_map(|r| &r.problems)
            .any(|p| p.contains("state machine safety")),
        "caught, but not by the comparison of replicas"
    );
}
