//! The transport conformance suite is not vacuous: transports with one planted bug each fail
//! the check meant to catch that bug, with a message that says what went wrong.
//!
//! Each planted transport wraps the channel transport. The ones that must count drops (so that
//! the counting parts of the back-pressure check run) deliver straight into the inboxes
//! instead, counting what an inbox refuses and what goes to a node that is not running; the
//! correct ones pass the whole suite, with and without counting.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use raft_core::node::{Inbox, Transport};
use raft_core::{Message, MessageBody, NodeId, Payload};
use raft_net::conformance::{self, Check, Cluster};
use raft_net::{ChannelNetwork, ChannelTransport};
use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// The one bug a planted transport has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flaw {
    /// None: the transport is correct.
    None,
    /// Sends nothing at all.
    DropsEverything,
    /// Cuts command payloads to their first 64 KiB, like a framing layer with a fixed buffer.
    TruncatesLargePayloads,
    /// Sends what is meant for node 3 to node 2, like a mixed-up address book.
    Misroutes,
    /// Sends a batch last message first, like a queue popped from the wrong end.
    ReversesBatches,
    /// Waits (up to 10 s) for a peer that is not running to come back.
    WaitsForDeadPeers,
    /// Panics on a peer that is not running.
    PanicsOnDeadPeers,
    /// Tries to reach a peer that is not running from inside `send` the first time, taking
    /// 400 ms to give up, like a synchronous connect that times out.
    DialsInSend,
    /// Waits (up to 10 s) for room in a full inbox instead of dropping.
    WaitsForRoom,
    /// Drops what a full inbox refuses without counting it.
    DropsUncounted,
    /// Keeps everything sent to a peer that is not running, to send it later.
    HoardsForDeadPeers,
    /// Keeps delivering to the inbox a peer had when it was first sent to, after its restart.
    KeepsFirstInbox,
}

/// How long the waiting flaws wait at most, so that their threads end.
const WAIT_AT_MOST: Duration = Duration::from_secs(10);

/// The node the misrouting flaw takes messages from, and the one it gives them to.
const MISROUTED_FROM: NodeId = NodeId(3);
const MISROUTED_TO: NodeId = NodeId(2);

/// What the transports of one planted cluster share.
#[derive(Default)]
struct Registry {
    /// The inbox of each running node.
    inboxes: BTreeMap<NodeId, Inbox>,
    /// Messages each node's transport counted as dropped.
    dropped: BTreeMap<NodeId, u64>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A planted panic never holds a lock, so a poisoned one is still whole.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A cluster of planted transports.
struct Planted {
    network: ChannelNetwork,
    registry: Arc<Mutex<Registry>>,
    flaw: Flaw,
    /// Whether the transports deliver straight into the inboxes and count drops.
    counts: bool,
}

fn planted(flaw: Flaw) -> Planted {
    Planted {
        network: ChannelNetwork::new(),
        registry: Arc::default(),
        flaw,
        counts: false,
    }
}

fn counting(flaw: Flaw) -> Planted {
    Planted {
        counts: true,
        ..planted(flaw)
    }
}

impl Cluster for Planted {
    type Transport = Faulty;
    type Error = Infallible;

    async fn start(&mut self, id: NodeId, inbox: Inbox) -> Result<Faulty, Infallible> {
        self.network.register(id, inbox.clone());
        let mut registry = lock(&self.registry);
        registry.inboxes.insert(id, inbox);
        registry.dropped.insert(id, 0);
        Ok(Faulty {
            id,
            inner: self.network.transport(id),
            registry: Arc::clone(&self.registry),
            flaw: self.flaw,
            counts: self.counts,
            first_inboxes: Mutex::default(),
            hoard: Mutex::default(),
            dialled: Mutex::default(),
        })
    }

    async fn stop(&mut self, id: NodeId) {
        self.network.unregister(id);
        lock(&self.registry).inboxes.remove(&id);
    }

    fn fifo_per_link(&self) -> bool {
        true
    }

    fn dropped(&self, id: NodeId) -> Option<u64> {
        if !self.counts {
            return None;
        }
        lock(&self.registry).dropped.get(&id).copied()
    }
}

/// A transport with a planted [`Flaw`].
struct Faulty {
    id: NodeId,
    inner: ChannelTransport,
    registry: Arc<Mutex<Registry>>,
    flaw: Flaw,
    counts: bool,
    /// For [`Flaw::KeepsFirstInbox`].
    first_inboxes: Mutex<BTreeMap<NodeId, Inbox>>,
    /// For [`Flaw::HoardsForDeadPeers`].
    hoard: Mutex<Vec<Message>>,
    /// For [`Flaw::DialsInSend`]: the peers it tried to reach.
    dialled: Mutex<BTreeSet<NodeId>>,
}

impl Faulty {
    fn inbox(&self, id: NodeId) -> Option<Inbox> {
        lock(&self.registry).inboxes.get(&id).cloned()
    }

    /// Sends as a correct transport would: through the channel transport, or straight into
    /// the inbox, counting a drop.
    fn deliver(&self, message: Message) {
        if !self.counts {
            self.inner.send(message);
            return;
        }
        let delivered = self
            .inbox(message.to)
            .is_some_and(|inbox| inbox.deliver(message));
        if !delivered && self.flaw != Flaw::DropsUncounted {
            *lock(&self.registry).dropped.entry(self.id).or_default() += 1;
        }
    }

    /// Waits until `done` holds, at most [`WAIT_AT_MOST`].
    fn wait(&self, mut done: impl FnMut() -> bool) {
        let started = Instant::now();
        while !done() && started.elapsed() < WAIT_AT_MOST {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Transport for Faulty {
    fn send(&self, mut message: Message) {
        let to = message.to;
        match self.flaw {
            Flaw::None | Flaw::ReversesBatches | Flaw::DropsUncounted => self.deliver(message),
            Flaw::DropsEverything => {}
            Flaw::TruncatesLargePayloads => {
                if let MessageBody::AppendEntries { entries, .. } = &mut message.body {
                    for entry in entries {
                        if let Payload::Command(data) = &entry.payload
                            && data.len() > 64 << 10
                        {
                            entry.payload = Payload::Command(data[..64 << 10].into());
                        }
                    }
                }
                self.deliver(message);
            }
            Flaw::Misroutes => {
                if to == MISROUTED_FROM {
                    message.to = MISROUTED_TO;
                }
                self.deliver(message);
            }
            Flaw::WaitsForDeadPeers => {
                self.wait(|| self.inbox(to).is_some());
                self.deliver(message);
            }
            Flaw::PanicsOnDeadPeers => {
                assert!(self.inbox(to).is_some(), "no route to {to}");
                self.deliver(message);
            }
            Flaw::DialsInSend => {
                if self.inbox(to).is_none() && lock(&self.dialled).insert(to) {
                    std::thread::sleep(Duration::from_millis(400));
                }
                self.deliver(message);
            }
            Flaw::WaitsForRoom => {
                if let Some(inbox) = self.inbox(to) {
                    self.wait(|| inbox.deliver(message.clone()));
                }
            }
            Flaw::HoardsForDeadPeers => {
                if self.inbox(to).is_some() {
                    self.deliver(message);
                } else {
                    lock(&self.hoard).push(message);
                }
            }
            Flaw::KeepsFirstInbox => {
                let inbox = {
                    let mut first = lock(&self.first_inboxes);
                    match first.get(&to) {
                        Some(inbox) => Some(inbox.clone()),
                        None => self.inbox(to).inspect(|inbox| {
                            first.insert(to, inbox.clone());
                        }),
                    }
                };
                if let Some(inbox) = inbox {
                    inbox.deliver(message);
                }
            }
        }
    }

    fn send_batch(&self, messages: Vec<Message>) {
        if self.flaw == Flaw::ReversesBatches {
            messages.into_iter().rev().for_each(|m| self.send(m));
        } else {
            messages.into_iter().for_each(|m| self.send(m));
        }
    }
}

#[tokio::test]
async fn the_correct_transport_passes_the_whole_suite() {
    conformance::run(|| planted(Flaw::None)).await;
}

/// With drops counted, the counting parts of the back-pressure check run, and pass.
#[tokio::test]
async fn the_correct_counting_transport_passes_the_whole_suite() {
    conformance::run(|| counting(Flaw::None)).await;
}

/// Each planted bug, whether its cluster counts drops, the check that must catch it, and words
/// the failure must contain.
const CAUGHT: [(Flaw, bool, Check, &str); 11] = [
    (
        Flaw::DropsEverything,
        false,
        Check::Delivery,
        "had not arrived",
    ),
    (
        Flaw::TruncatesLargePayloads,
        false,
        Check::Delivery,
        "payload has 65536 bytes instead of 262144",
    ),
    (
        Flaw::Misroutes,
        false,
        Check::Delivery,
        "n2 received heartbeat #2 from n1 to n3, which was sent to n3",
    ),
    (
        Flaw::ReversesBatches,
        false,
        Check::Ordering,
        "out of order, though the transport claims FIFO per link",
    ),
    (
        Flaw::WaitsForDeadPeers,
        false,
        Check::DeadPeer,
        "send from n1 to n3 (call 1 of 200) has not returned",
    ),
    (
        Flaw::PanicsOnDeadPeers,
        false,
        Check::DeadPeer,
        "send from n1 to n3 panicked: no route to n3",
    ),
    (
        Flaw::DialsInSend,
        false,
        Check::DeadPeer,
        "ms: send must hand messages over without waiting",
    ),
    (
        Flaw::WaitsForRoom,
        false,
        Check::BackPressure,
        "has not returned",
    ),
    (
        Flaw::DropsUncounted,
        true,
        Check::BackPressure,
        "16 arrived and 0 were counted as dropped",
    ),
    (
        Flaw::HoardsForDeadPeers,
        true,
        Check::BackPressure,
        "the transport holds the other 20000",
    ),
    (
        Flaw::KeepsFirstInbox,
        false,
        Check::Recovery,
        "reached the inbox of n2's stopped transport",
    ),
];

/// Planted bugs and checks they must pass: the suite blames the check meant for the bug, not
/// every check. Reordering loses nothing, so delivery passes; waiting for room in a full
/// inbox costs nothing while the peers read.
const NOT_CAUGHT: [(Flaw, Check); 2] = [
    (Flaw::ReversesBatches, Check::Delivery),
    (Flaw::WaitsForRoom, Check::DeadPeer),
];

/// Runs every case of [`CAUGHT`] and [`NOT_CAUGHT`] at once (several wait out the suite's
/// patience) and reports every case that went otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_planted_bug_fails_the_check_meant_for_it() {
    let mut runs = JoinSet::new();
    for (flaw, counts, check, words) in CAUGHT {
        runs.spawn(async move {
            let cluster = if counts {
                counting(flaw)
            } else {
                planted(flaw)
            };
            let outcome = conformance::run_check(check, cluster).await;
            match outcome {
                Ok(()) => Some(format!("{flaw:?} passed `{check}`")),
                Err(failure) if failure.check == check && failure.reason.contains(words) => None,
                Err(failure) => Some(format!(
                    "{flaw:?}: expected `{check}` to fail, mentioning {words:?}: {failure}"
                )),
            }
        });
    }
    for (flaw, check) in NOT_CAUGHT {
        runs.spawn(async move {
            let outcome = conformance::run_check(check, planted(flaw)).await;
            outcome.err().map(|failure| format!("{flaw:?}: {failure}"))
        });
    }
    let mut wrong = Vec::new();
    while let Some(run) = runs.join_next().await {
        wrong.extend(run.expect("a case panicked"));
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
