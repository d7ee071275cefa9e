//! A conformance suite for [`Transport`] implementations: written once, run against every
//! transport ([`ChannelNetwork`]'s and [`TcpTransport`] in this crate's tests, and your own).
//!
//! Raft asks little of its network. A message may be lost, delayed, duplicated or reordered:
//! every RPC is retried until it is answered and "Raft RPCs are idempotent" (§5.5), every
//! message carries its sender's term (§5.1), and a follower checks that appended entries
//! follow its own log instead of trusting the order they came in (§5.3). What the protocol
//! cannot survive is a network that changes what it carries or where it goes, or that stops
//! the node sending through it: an altered entry is stored as it arrives and breaks Log
//! Matching (§5.3), and a `send` that waits for a dead follower stalls the leader that should
//! go on replicating to the majority (§5.3, "the leader retries AppendEntries indefinitely").
//! Each [`Check`] states one expectation and the reason for it:
//!
//! | [`Check`] | What it expects |
//! |---|---|
//! | [`Check::Delivery`] | Messages sent to live peers arrive, unchanged, at their addressee. |
//! | [`Check::DeadPeer`] | Sending to a stopped peer or an unknown id neither panics nor waits, and the other peers are still served. |
//! | [`Check::Ordering`] | If the transport claims it ([`Cluster::fifo_per_link`]), each link delivers in the order sent. |
//! | [`Check::BackPressure`] | A flood at a peer that does not read never makes `send` wait; with a drop counter ([`Cluster::dropped`]), every message is delivered or counted, and a dead peer's backlog stays bounded. |
//! | [`Check::Recovery`] | After a node restarts (same id, same address), even the moment it stopped and again and again, delivery to and from it resumes. |
//!
//! In every check, each message a node receives must be one that was sent to that node,
//! unchanged; and once a node's transport is stopped, nothing sent afterwards may reach the
//! inbox it was started with.
//!
//! # Using it
//!
//! Implement [`Cluster`] for a small type that starts and stops your transport for one node:
//! [`Cluster::start`] gets the node's id and the [`Inbox`] to deliver to, and connects the new
//! transport with the nodes started before (and them with it); [`Cluster::stop`] stops it as
//! if its process died. [`run`] runs every check, each on a fresh cluster from the closure it
//! is given, and panics at the first failure; [`run_check`] runs one check and returns its
//! outcome as a [`Result`].
//!
//! ```
//! use raft_core::NodeId;
//! use raft_core::node::Inbox;
//! use raft_net::conformance::{self, Check, Cluster};
//! use raft_net::{ChannelNetwork, ChannelTransport};
//! use std::convert::Infallible;
//!
//! /// The in-process transport, one network per check.
//! struct InProcess(ChannelNetwork);
//!
//! impl Cluster for InProcess {
//!     type Transport = ChannelTransport;
//!     type Error = Infallible;
//!
//!     async fn start(&mut self, id: NodeId, inbox: Inbox) -> Result<Self::Transport, Infallible> {
//!         self.0.register(id, inbox);
//!         Ok(self.0.transport(id))
//!     }
//!
//!     async fn stop(&mut self, id: NodeId) {
//!         self.0.unregister(id);
//!     }
//!
//!     fn fifo_per_link(&self) -> bool {
//!         true // each send goes straight into the addressee's queue
//!     }
//! }
//!
//! let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build()?;
//! runtime.block_on(conformance::run(|| InProcess(ChannelNetwork::new())));
//!
//! let recovery = conformance::run_check(Check::Recovery, InProcess(ChannelNetwork::new()));
//! assert!(runtime.block_on(recovery).is_ok());
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! The checks run inside a tokio runtime with its timers enabled, on the caller's task (the
//! cluster's futures need not be `Send`). Every call to `send` or `send_batch` is made on a
//! thread of the suite's own (inside the runtime's context), so that a send that never returns
//! fails its check instead of hanging it. A check takes well under a second against a working
//! transport (on loopback TCP too); a failing one may wait up to three seconds for what does
//! not happen.
//!
//! # Panics
//!
//! [`run`] panics at the first failed check, with a message that names the check and says what
//! was expected and what the transport did. [`run_check`] returns that as a [`Failure`]
//! instead; it panics only if the cluster's own code does.
//!
//! [`ChannelNetwork`]: crate::ChannelNetwork
//! [`TcpTransport`]: crate::TcpTransport

use raft_core::node::{DEFAULT_INBOX_BYTES, InboundMessages, Inbox, Transport, inbox_with_limits};
use raft_core::{Entry, EntryId, LogIndex, Message, MessageBody, NodeId, Payload, Term};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use thiserror::Error;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// The transports of one test cluster, which the suite starts and stops node by node.
///
/// A fresh value serves one check: the suite starts the nodes it needs (ids 1 to 3), sends
/// through them, stops and restarts some, and stops every node still running at the end.
pub trait Cluster {
    /// The transport under test.
    type Transport: Transport;
    /// Why a transport could not start.
    type Error: fmt::Display;

    /// Starts node `id`'s transport, delivering what it receives to `inbox`, and connects it
    /// with every node started before: once this returns, messages between it and them are
    /// delivered. When `id` ran before and was stopped, this is its restart: a new transport
    /// for the same node, reachable where the old one was (the same address, for a network
    /// transport), with a new inbox.
    fn start(
        &mut self,
        id: NodeId,
        inbox: Inbox,
    ) -> impl Future<Output = Result<Self::Transport, Self::Error>>;

    /// Stops node `id`'s transport as if its process died: once this returns, nothing more is
    /// delivered to the inbox it was started with, what the other nodes send to it is lost (or
    /// delivered after it starts again), and the transport has let go of what a restart needs
    /// (its listening address), so that [`Cluster::start`] can bring the node back at once.
    /// The suite has dropped its own handle first.
    fn stop(&mut self, id: NodeId) -> impl Future<Output = ()>;

    /// Whether the transport promises that messages from one node to another over a healthy
    /// link arrive in the order they were sent (TCP does, per connection; a datagram transport
    /// does not). Raft does not need it (§5.3's consistency check puts entries in place
    /// whatever their order), but reordering costs retransmissions, and a transport that
    /// claims the order is held to it by [`Check::Ordering`]. The default claims nothing.
    fn fifo_per_link(&self) -> bool {
        false
    }

    /// How many messages node `id`'s transport has counted as dropped since it last started,
    /// sending (a full queue, a lost connection) and receiving (a full inbox); `None` if it
    /// does not count them, the default, which skips the counting parts of
    /// [`Check::BackPressure`]. Every message sent to a live peer must in the end be delivered
    /// or counted here once, by its sender or by its receiver.
    fn dropped(&self, id: NodeId) -> Option<u64> {
        let _ = id;
        None
    }
}

/// One check of the suite.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Check {
    /// Messages of every kind, small and large (a 256 KiB entry), sent alone and in batches
    /// addressed to several peers, arrive at their addressee, equal to what was sent.
    ///
    /// Why: a transport that loses everything elects no leader; one that alters an entry
    /// makes a follower store what the leader never wrote, breaking Log Matching (§5.3); one
    /// that delivers to the wrong node has it act on votes and entries meant for another.
    Delivery,
    /// With a peer stopped, a burst of sends and batches to it and to an id that is no node's
    /// returns at once (each call within 250 ms, the burst within 3 s) without panicking, and
    /// the messages to the live peer, in the same batches and after them, arrive.
    ///
    /// Why: `send` must not block and must not fail loudly ([`Transport`]); a leader keeps
    /// sending to a crashed follower, retrying indefinitely (§5.5), while it replicates to the
    /// others. A send that waits for the dead one stalls the whole node.
    DeadPeer,
    /// When [`Cluster::fifo_per_link`] claims it: 200 messages on each of four links, sent
    /// alone and in batches of varying size (some addressed to two peers), arrive in the order
    /// sent on each link; links may interleave. Passes at once when the order is not claimed.
    ///
    /// Why: Raft tolerates reordering, but a leader pipelining AppendEntries and snapshot
    /// chunks relies on a FIFO link to avoid rejections and retransmissions, so a claim of
    /// FIFO must hold.
    Ordering,
    /// A peer that stops reading (its inbox holds 16 messages) is flooded with 10 000 messages,
    /// then a stopped peer with 20 000: every call returns within 250 ms, and afterwards the
    /// reading peer gets new messages again. With a drop counter ([`Cluster::dropped`]): each
    /// message of the first flood is in the end delivered or counted as dropped, exactly once,
    /// and of the 20 000 sent to the stopped peer at least 10 000 are counted dropped within
    /// 3 s (a transport may hold up to 10 000 messages for a peer that takes none).
    ///
    /// Why: a follower that falls behind or dies must cost its leader bounded memory and no
    /// waiting; Raft treats a dropped message as lost and retries (§5.3). Counting the drops
    /// is what lets an operator see the loss, and only a count that adds up can be trusted.
    BackPressure,
    /// A node's receiver restarts (a new transport for the same id at the same address), then
    /// its sender does: each time, messages sent until one gets through arrive within 3 s, and
    /// after that every message arrives, both ways. Then one node restarts 30 times in a row,
    /// each time the moment its stop returned, and each run reaches its peer.
    ///
    /// Why: a crashed server that restarts rejoins the cluster by receiving the RPCs that are
    /// retried at it (§5.5); a transport that keeps a dead connection, or the old incarnation's
    /// inbox, leaves it cut off forever, and one whose stop returns before it has let go of its
    /// address (a listening socket) makes a quick restart fail.
    Recovery,
}

impl Check {
    /// Every check, in the order [`run`] runs them.
    pub const ALL: [Check; 5] = [
        Check::Delivery,
        Check::DeadPeer,
        Check::Ordering,
        Check::BackPressure,
        Check::Recovery,
    ];

    /// The check's name, as failures show it.
    pub fn name(self) -> &'static str {
        match self {
            Check::Delivery => "delivery",
            Check::DeadPeer => "dead_peer",
            Check::Ordering => "ordering",
            Check::BackPressure => "back_pressure",
            Check::Recovery => "recovery",
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A failed check: which one, and what the transport did instead of what was expected.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("transport conformance check `{check}` failed: {reason}")]
#[non_exhaustive]
pub struct Failure {
    /// The check that failed.
    pub check: Check,
    /// What was expected, and what happened.
    pub reason: String,
}

/// Runs every check, each on a fresh cluster from `new_cluster`, in the order of
/// [`Check::ALL`].
///
/// # Panics
///
/// At the first failed check, with the [`Failure`]'s message.
pub async fn run<C: Cluster>(mut new_cluster: impl FnMut() -> C) {
    for check in Check::ALL {
        if let Err(failure) = run_check(check, new_cluster()).await {
            panic!("{failure}");
        }
    }
}

/// Runs one check on `cluster`, then stops every node still running.
pub async fn run_check<C: Cluster>(check: Check, cluster: C) -> Result<(), Failure> {
    let mut harness = Harness::new(check, cluster);
    let outcome = match check {
        Check::Delivery => delivery(&mut harness).await,
        Check::DeadPeer => dead_peer(&mut harness).await,
        Check::Ordering => ordering(&mut harness).await,
        Check::BackPressure => back_pressure(&mut harness).await,
        Check::Recovery => recovery(&mut harness).await,
    };
    harness.stop_all().await;
    outcome
}

// ----- Timing and sizes --------------------------------------------------------------------

/// The longest the suite waits for what a working transport does within milliseconds: a
/// message to arrive, a drop to be counted, a batch of sends to return.
const PATIENCE: Duration = Duration::from_secs(3);

/// The longest one call to `send` or `send_batch` may take. Handing messages over takes
/// microseconds; this leaves room for a loaded machine that deschedules the thread.
const SLOW_SEND: Duration = Duration::from_millis(250);

/// How often the suite empties the inboxes while it waits.
const POLL_INTERVAL: Duration = Duration::from_millis(2);

/// How long the suite waits for one probe to a restarted node before it sends another.
const PROBE_INTERVAL: Duration = Duration::from_millis(20);

/// The inbox of a node that reads: larger than anything a check sends one node at once, so
/// that it never refuses a message.
const INBOX_CAPACITY: usize = 8192;

/// The inbox of the node that stops reading in [`Check::BackPressure`]: small, so that a flood
/// overflows it at once.
const SMALL_INBOX_CAPACITY: usize = 16;

/// Messages in one flood. Also the most a transport may hold for a peer that takes none.
const FLOOD: usize = 10_000;

/// Messages per flood sent in one `send_batch` (the first half of a flood is sent one by one).
const FLOOD_BATCH: usize = 100;

/// How many times [`Check::Recovery`] restarts a node in a row at the end.
const RESTARTS: usize = 30;

/// Messages per link in [`Check::Ordering`].
const ORDERED_PER_LINK: usize = 200;

/// The payload of a large message: larger than the buffers a framing layer tends to use.
const LARGE_PAYLOAD_BYTES: usize = 256 << 10;

const N1: NodeId = NodeId(1);
const N2: NodeId = NodeId(2);
const N3: NodeId = NodeId(3);
/// An id that no node of the cluster has.
const UNKNOWN: NodeId = NodeId(99);

// ----- The checks --------------------------------------------------------------------------

async fn delivery<C: Cluster>(h: &mut Harness<C>) -> Result<(), Failure> {
    h.start_all(&[N1, N2, N3]).await?;
    let links = [(N1, N2), (N1, N3), (N2, N1), (N3, N2)];
    let mut ops = Vec::new();
    for kind in 0..KINDS {
        for (from, to) in links {
            ops.push(Op::One(h.message(from, to, kind)));
        }
        // One batch for two peers, in a mixed order, as a leader sends a round of appends.
        let batch = vec![
            h.message(N1, N2, kind),
            h.message(N1, N3, kind + 1),
            h.message(N1, N2, kind + 2),
        ];
        ops.push(Op::Batch(N1, batch));
    }
    ops.push(Op::One(h.large(N1, N2)));
    ops.push(Op::One(h.large(N2, N1)));
    ops.push(Op::Batch(N1, vec![h.large(N1, N3), h.message(N1, N3, 0)]));
    h.send_and_expect(ops).await
}

async fn dead_peer<C: Cluster>(h: &mut Harness<C>) -> Result<(), Failure> {
    h.start_all(&[N1, N2, N3]).await?;
    // Each link used below has carried a message: the stopped peer is one that was reachable.
    let hello = vec![
        Op::One(h.message(N1, N2, 0)),
        Op::One(h.message(N1, N3, 0)),
        Op::One(h.message(N2, N3, 0)),
    ];
    h.send_and_expect(hello).await?;
    h.stop(N3).await;

    let mut ops = Vec::new();
    let mut to_live = Vec::new();
    for kind in 0..50 {
        ops.push(Op::One(h.message(N1, N3, kind)));
        ops.push(Op::One(h.message(N1, UNKNOWN, kind)));
        ops.push(Op::One(h.message(N2, N3, kind)));
        let live = h.message(N1, N2, kind);
        to_live.push(live.term.0);
        let batch = vec![h.message(N1, N3, kind), live, h.message(N1, UNKNOWN, kind)];
        ops.push(Op::Batch(N1, batch));
    }
    h.send(ops).await?;
    h.expect_arrival(&to_live).await?;
    let after = vec![Op::One(h.message(N1, N2, 1)), Op::One(h.message(N2, N1, 2))];
    h.send_and_expect(after).await
}

async fn ordering<C: Cluster>(h: &mut Harness<C>) -> Result<(), Failure> {
    if !h.cluster.fifo_per_link() {
        return Ok(());
    }
    h.start_all(&[N1, N2, N3]).await?;
    let links = [(N1, N2), (N3, N2), (N1, N3), (N2, N1)];
    let mut order: BTreeMap<(NodeId, NodeId), Vec<u64>> = BTreeMap::new();
    let mut ops = Vec::new();
    let mut round = 0;
    while order.values().map(Vec::len).min().unwrap_or(0) < ORDERED_PER_LINK {
        for (position, &(from, to)) in links.iter().enumerate() {
            // Sizes 1 to 6 in turn; a one-message batch is a plain `send`.
            let count = 1 + (round + position) % 6;
            let messages: Vec<Message> =
                (0..count).map(|k| h.ordered(from, to, round + k)).collect();
            order
                .entry((from, to))
                .or_default()
                .extend(messages.iter().map(|m| m.term.0));
            ops.push(Op::new(from, messages));
        }
        // Every fifth round, one batch for two peers: each link keeps its own order within it.
        if round.is_multiple_of(5) {
            let batch = vec![
                h.ordered(N1, N2, round),
                h.ordered(N1, N3, round),
                h.ordered(N1, N2, round + 1),
            ];
            for m in &batch {
                order.entry((m.from, m.to)).or_default().push(m.term.0);
            }
            ops.push(Op::Batch(N1, batch));
        }
        round += 1;
    }
    h.send(ops).await?;
    let last: Vec<u64> = order
        .values()
        .filter_map(|terms| terms.last())
        .copied()
        .collect();
    h.expect_arrival(&last).await?;
    for (&(from, to), sent) in &order {
        let position: BTreeMap<u64, usize> =
            sent.iter().enumerate().map(|(p, &t)| (t, p)).collect();
        let arrived: Vec<(u64, usize)> = h
            .received(to)
            .iter()
            .filter(|&&(sender, _)| sender == from)
            .filter_map(|&(_, term)| Some((term, *position.get(&term)?)))
            .collect();
        if let Some(pair) = arrived.windows(2).find(|pair| pair[1].1 < pair[0].1) {
            let ((later, later_at), (earlier, earlier_at)) = (pair[0], pair[1]);
            return Err(h.fail(format!(
                "{to} received the messages {from} sent it out of order, though the transport \
                 claims FIFO per link: {} (number {} on the link) arrived after {} (number {})",
                h.describe_term(earlier),
                earlier_at + 1,
                h.describe_term(later),
                later_at + 1
            )));
        }
    }
    Ok(())
}

async fn back_pressure<C: Cluster>(h: &mut Harness<C>) -> Result<(), Failure> {
    h.start(N1, INBOX_CAPACITY).await?;
    h.start(N2, SMALL_INBOX_CAPACITY).await?;
    h.start(N3, INBOX_CAPACITY).await?;
    let hello = vec![Op::One(h.message(N1, N2, 0)), Op::One(h.message(N1, N3, 0))];
    h.send_and_expect(hello).await?;

    // A live peer that stops reading: its inbox fills, and everything beyond is dropped
    // somewhere, without `send` waiting for it.
    h.set_reading(N2, false);
    let before = h.dropped(&[N1, N2]);
    let (ops, flood) = h.flood(N1, N2);
    h.send(ops).await?;
    h.set_reading(N2, true);
    if let Some(before) = before {
        let accounted = |h: &Harness<C>| {
            let dropped = h
                .dropped(&[N1, N2])
                .unwrap_or(before)
                .saturating_sub(before);
            (h.arrived_in(N2, &flood), dropped)
        };
        let outcome = h
            .wait_until(
                |h| {
                    let (arrived, dropped) = accounted(h);
                    arrived + dropped >= FLOOD as u64
                },
                |h| {
                    let (arrived, dropped) = accounted(h);
                    format!(
                        "of {FLOOD} messages flooded at {N2} while it did not read, {arrived} \
                         arrived and {dropped} were counted as dropped after {PATIENCE:?}: the \
                         other {} were lost without being counted, or are held",
                        (FLOOD as u64).saturating_sub(arrived + dropped)
                    )
                },
            )
            .await;
        outcome?;
        let (arrived, dropped) = accounted(h);
        if arrived + dropped > FLOOD as u64 {
            return Err(h.fail(format!(
                "of {FLOOD} messages flooded at {N2} while it did not read, {arrived} arrived, \
                 yet {dropped} were counted as dropped: some drops were counted twice, or a \
                 message was both delivered and counted"
            )));
        }
    }
    // The flood did not wedge the link (what is still in flight may fill the small inbox
    // again for a moment, so this resends until a message gets through).
    h.probe(N1, N2, "after the flood at {to}").await?;

    // A dead peer: nothing drains its backlog, so a transport must drop, not hoard.
    h.stop(N3).await;
    let before = h.dropped(&[N1]);
    for _ in 0..2 {
        let (ops, _) = h.flood(N1, N3);
        h.send(ops).await?;
    }
    if let Some(before) = before {
        let dropped = |h: &Harness<C>| h.dropped(&[N1]).unwrap_or(before).saturating_sub(before);
        let outcome = h
            .wait_until(
                |h| dropped(h) >= FLOOD as u64,
                |h| {
                    format!(
                        "of {} messages sent to {N3} after it stopped, only {} were counted as \
                         dropped after {PATIENCE:?}: the transport holds the other {} (at most \
                         {FLOOD} may be held for a peer that takes none), so its memory grows \
                         with what is sent to a dead peer, or it drops without counting",
                        2 * FLOOD,
                        dropped(h),
                        (2 * FLOOD as u64).saturating_sub(dropped(h))
                    )
                },
            )
            .await;
        outcome?;
    }
    h.probe(N1, N2, "after the flood at stopped n3").await
}

async fn recovery<C: Cluster>(h: &mut Harness<C>) -> Result<(), Failure> {
    h.start_all(&[N1, N2]).await?;
    let hello = vec![Op::One(h.message(N1, N2, 0)), Op::One(h.message(N2, N1, 0))];
    h.send_and_expect(hello).await?;

    // The receiver's process dies; what is sent meanwhile is lost, or delivered after it is
    // back.
    h.stop(N2).await;
    let meanwhile = (0..5)
        .map(|kind| Op::One(h.message(N1, N2, kind)))
        .collect();
    h.send(meanwhile).await?;
    h.start(N2, INBOX_CAPACITY).await?;
    h.probe(N1, N2, "after {to} restarted").await?;
    h.probe(N2, N1, "after {from} restarted").await?;
    let burst = h.burst(N1, N2);
    h.send_and_expect(burst).await?;

    // Then the sender's.
    h.stop(N1).await;
    h.start(N1, INBOX_CAPACITY).await?;
    h.probe(N1, N2, "after {from} restarted").await?;
    h.probe(N2, N1, "after {to} restarted").await?;
    let burst = h.burst(N1, N2);
    h.send_and_expect(burst).await?;

    // A node that crash-loops: each run, started the moment the one before stopped, reaches
    // its peer.
    for _ in 0..RESTARTS {
        h.stop(N2).await;
        h.start(N2, INBOX_CAPACITY).await?;
        h.probe(N2, N1, "after {from} restarted").await?;
    }
    Ok(())
}

// ----- The harness -------------------------------------------------------------------------

/// One check's cluster, the nodes running in it, and every message sent.
struct Harness<C: Cluster> {
    check: Check,
    cluster: C,
    nodes: BTreeMap<NodeId, Node<C::Transport>>,
    /// The inboxes of stopped transports, kept to catch a delivery after the stop.
    stopped: Vec<StoppedNode>,
    /// Every message the suite built, by its term: what a received message must equal. Each
    /// message gets a term of its own, so that the term identifies it (a transport must not
    /// read terms).
    sent: BTreeMap<u64, Message>,
    /// The term of the next message built. Invariant: greater than every key of `sent`.
    next_term: u64,
}

/// A running node as the suite sees it.
struct Node<T> {
    transport: Arc<T>,
    inbound: InboundMessages,
    /// Whether the suite empties the inbox; a node that does not read lets it fill.
    reading: bool,
    /// What this run of the node received, in arrival order: (sender, term).
    received: Vec<(NodeId, u64)>,
    /// The terms in `received`.
    arrived: BTreeSet<u64>,
}

/// The inbox of a stopped run of a node.
struct StoppedNode {
    id: NodeId,
    inbound: InboundMessages,
    /// The first term built after the stop returned: no message from then on may arrive.
    after: u64,
}

/// One call to the transport: `send`, or `send_batch` from one node.
enum Op {
    One(Message),
    Batch(NodeId, Vec<Message>),
}

impl Op {
    /// `send` for one message, `send_batch` for more (all from `from`).
    fn new(from: NodeId, mut messages: Vec<Message>) -> Op {
        match messages.len() {
            1 => match messages.pop() {
                Some(message) => Op::One(message),
                None => Op::Batch(from, messages),
            },
            _ => Op::Batch(from, messages),
        }
    }

    fn summary(&self) -> OpSummary {
        match self {
            Op::One(message) => OpSummary {
                from: message.from,
                to: message.to,
                batch: None,
            },
            Op::Batch(from, messages) => OpSummary {
                from: *from,
                to: messages.first().map_or(*from, |m| m.to),
                batch: Some(messages.len()),
            },
        }
    }

    fn terms(&self) -> impl Iterator<Item = u64> + '_ {
        let messages = match self {
            Op::One(message) => std::slice::from_ref(message),
            Op::Batch(_, messages) => messages.as_slice(),
        };
        messages.iter().map(|m| m.term.0)
    }
}

/// What a failure report says about an [`Op`] after it was handed to the sending thread.
#[derive(Clone, Copy)]
struct OpSummary {
    from: NodeId,
    to: NodeId,
    batch: Option<usize>,
}

impl fmt::Display for OpSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.batch {
            None => write!(f, "send from {} to {}", self.from, self.to),
            Some(count) => write!(
                f,
                "send_batch of {count} messages from {} (the first to {})",
                self.from, self.to
            ),
        }
    }
}

/// How the sending thread ended: the slowest call and its position, or a panic's message and
/// the position of the call that panicked.
type SendOutcome = Result<(Duration, usize), String>;

impl<C: Cluster> Harness<C> {
    fn new(check: Check, cluster: C) -> Harness<C> {
        Harness {
            check,
            cluster,
            nodes: BTreeMap::new(),
            stopped: Vec::new(),
            sent: BTreeMap::new(),
            next_term: 1,
        }
    }

    fn fail(&self, reason: String) -> Failure {
        Failure {
            check: self.check,
            reason,
        }
    }

    /// Starts node `id` with an inbox of `capacity` messages.
    async fn start(&mut self, id: NodeId, capacity: usize) -> Result<(), Failure> {
        let (inbox, inbound) = inbox_with_limits(capacity, DEFAULT_INBOX_BYTES);
        let transport = match self.cluster.start(id, inbox).await {
            Ok(transport) => transport,
            Err(error) if self.stopped.iter().any(|old| old.id == id) => {
                return Err(self.fail(format!(
                    "restarting {id}'s transport right after its stop returned failed: {error} \
                     (a stopped transport must have released what a restart needs)"
                )));
            }
            Err(error) => {
                return Err(self.fail(format!("starting {id}'s transport failed: {error}")));
            }
        };
        self.nodes.insert(
            id,
            Node {
                transport: Arc::new(transport),
                inbound,
                reading: true,
                received: Vec::new(),
                arrived: BTreeSet::new(),
            },
        );
        Ok(())
    }

    async fn start_all(&mut self, ids: &[NodeId]) -> Result<(), Failure> {
        for &id in ids {
            self.start(id, INBOX_CAPACITY).await?;
        }
        Ok(())
    }

    /// Stops node `id`, keeping its inbox to check that nothing arrives there any more.
    async fn stop(&mut self, id: NodeId) {
        if let Some(node) = self.nodes.remove(&id) {
            let Node {
                transport, inbound, ..
            } = node;
            drop(transport);
            self.cluster.stop(id).await;
            self.stopped.push(StoppedNode {
                id,
                inbound,
                after: self.next_term,
            });
        }
    }

    async fn stop_all(&mut self) {
        let running: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in running {
            self.stop(id).await;
        }
    }

    fn set_reading(&mut self, id: NodeId, reading: bool) {
        if let Some(node) = self.nodes.get_mut(&id) {
            node.reading = reading;
        }
    }

    /// The sum of the drop counters of `ids`, if each counts.
    fn dropped(&self, ids: &[NodeId]) -> Option<u64> {
        ids.iter().map(|&id| self.cluster.dropped(id)).sum()
    }

    /// What the current run of node `id` received, in arrival order: (sender, term).
    fn received(&self, id: NodeId) -> &[(NodeId, u64)] {
        self.nodes.get(&id).map_or(&[], |node| &node.received)
    }

    /// How many of `terms` the current run of node `id` received.
    fn arrived_in(&self, id: NodeId, terms: &BTreeSet<u64>) -> u64 {
        self.nodes
            .get(&id)
            .map_or(0, |node| node.arrived.intersection(terms).count() as u64)
    }

    /// Whether the message with `term` reached the current run of its addressee.
    fn arrived(&self, term: u64) -> bool {
        self.sent
            .get(&term)
            .and_then(|message| self.nodes.get(&message.to))
            .is_some_and(|node| node.arrived.contains(&term))
    }

    // ----- Building messages -------------------------------------------------------------

    /// Registers `body` as the next message from `from` to `to`.
    fn build(
        &mut self,
        from: NodeId,
        to: NodeId,
        body: impl FnOnce(u64) -> MessageBody,
    ) -> Message {
        let term = self.next_term;
        self.next_term += 1;
        let message = Message {
            from,
            to,
            term: Term(term),
            body: body(term),
        };
        self.sent.insert(term, message.clone());
        message
    }

    /// A small message of one of [`KINDS`] kinds.
    fn message(&mut self, from: NodeId, to: NodeId, kind: usize) -> Message {
        self.build(from, to, |term| small_body(kind, term))
    }

    /// An AppendEntries carrying one entry of [`LARGE_PAYLOAD_BYTES`].
    fn large(&mut self, from: NodeId, to: NodeId) -> Message {
        self.build(from, to, |term| append(term, &[LARGE_PAYLOAD_BYTES]))
    }

    /// A message for [`Check::Ordering`]: mostly small, one in fifty large.
    fn ordered(&mut self, from: NodeId, to: NodeId, kind: usize) -> Message {
        if self.next_term.is_multiple_of(50) {
            self.large(from, to)
        } else {
            self.message(from, to, kind)
        }
    }

    /// [`FLOOD`] heartbeats from `from` to `to`: the first half sent one by one, the rest in
    /// batches; and their terms.
    fn flood(&mut self, from: NodeId, to: NodeId) -> (Vec<Op>, BTreeSet<u64>) {
        let mut messages: Vec<Message> = (0..FLOOD)
            .map(|_| self.build(from, to, heartbeat))
            .collect();
        let terms = messages.iter().map(|m| m.term.0).collect();
        let batched = messages.split_off(FLOOD / 2);
        let mut ops: Vec<Op> = messages.into_iter().map(Op::One).collect();
        let mut batched = batched.into_iter().peekable();
        while batched.peek().is_some() {
            ops.push(Op::Batch(
                from,
                batched.by_ref().take(FLOOD_BATCH).collect(),
            ));
        }
        (ops, terms)
    }

    /// Ten messages each way between `a` and `b`, alone and in a batch.
    fn burst(&mut self, a: NodeId, b: NodeId) -> Vec<Op> {
        let mut ops = Vec::new();
        for (from, to) in [(a, b), (b, a)] {
            ops.extend((0..5).map(|kind| Op::One(self.message(from, to, kind))));
            ops.push(Op::Batch(
                from,
                (5..10).map(|kind| self.message(from, to, kind)).collect(),
            ));
        }
        ops
    }

    // ----- Sending and receiving ---------------------------------------------------------

    /// Makes the calls in `ops`, in order, on a thread of their own, while emptying the
    /// inboxes: each must return within [`SLOW_SEND`], all of them within [`PATIENCE`], and
    /// none may panic.
    async fn send(&mut self, ops: Vec<Op>) -> Result<(), Failure> {
        // Room in the inboxes of the nodes that read, before anything is sent.
        self.poll()?;
        let mut calls = Vec::with_capacity(ops.len());
        let mut summaries = Vec::with_capacity(ops.len());
        for op in ops {
            let summary = op.summary();
            let Some(node) = self.nodes.get(&summary.from) else {
                return Err(self.fail(format!(
                    "the suite sends from {}, which is not running (a bug in the suite)",
                    summary.from
                )));
            };
            calls.push((Arc::clone(&node.transport), op));
            summaries.push(summary);
        }
        let progress = Arc::new(AtomicUsize::new(0));
        let (done, mut outcome) = oneshot::channel::<SendOutcome>();
        let runtime = tokio::runtime::Handle::try_current().ok();
        let thread_progress = Arc::clone(&progress);
        let spawned = std::thread::Builder::new()
            .name(format!("conformance-{}-send", self.check))
            .spawn(move || {
                let _context = runtime.as_ref().map(tokio::runtime::Handle::enter);
                let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    make_calls(calls, &thread_progress)
                }));
                let _ = done.send(result.map_err(|panic| panic_message(panic.as_ref())));
            });
        if let Err(error) = spawned {
            return Err(self.fail(format!("cannot start a thread to send from: {error}")));
        }
        let describe = |position: usize| {
            summaries
                .get(position)
                .map_or_else(|| "a call".to_string(), ToString::to_string)
        };
        let deadline = Instant::now() + PATIENCE;
        loop {
            self.poll()?;
            match tokio::time::timeout(POLL_INTERVAL, &mut outcome).await {
                Ok(Ok(Ok((slowest, position)))) => {
                    self.poll()?;
                    if slowest > SLOW_SEND {
                        return Err(self.fail(format!(
                            "{} took {slowest:?}: send must hand messages over without \
                             waiting for the peer or the network (at most {SLOW_SEND:?} here)",
                            describe(position)
                        )));
                    }
                    return Ok(());
                }
                Ok(Ok(Err(panic))) => {
                    let position = progress.load(Ordering::Acquire);
                    return Err(self.fail(format!(
                        "{} panicked: {panic}; a transport drops what it cannot deliver",
                        describe(position)
                    )));
                }
                Ok(Err(_)) => {
                    return Err(self.fail(
                        "the thread making the calls to the transport ended without a word"
                            .to_string(),
                    ));
                }
                Err(_) if Instant::now() >= deadline => {
                    let position = progress.load(Ordering::Acquire);
                    return Err(self.fail(format!(
                        "{} (call {} of {}) has not returned after {PATIENCE:?}: send must \
                         never wait for the peer or the network",
                        describe(position),
                        position + 1,
                        summaries.len()
                    )));
                }
                Err(_) => {}
            }
        }
    }

    /// Sends `ops`, then waits until every message they carry has arrived.
    async fn send_and_expect(&mut self, ops: Vec<Op>) -> Result<(), Failure> {
        let terms: Vec<u64> = ops.iter().flat_map(Op::terms).collect();
        self.send(ops).await?;
        self.expect_arrival(&terms).await
    }

    /// Waits until each message of `terms` has arrived at its addressee.
    async fn expect_arrival(&mut self, terms: &[u64]) -> Result<(), Failure> {
        self.wait_until(
            |h| terms.iter().all(|&term| h.arrived(term)),
            |h| h.describe_missing(terms),
        )
        .await
    }

    /// Sends one message at a time from `from` to `to` until one arrives, within [`PATIENCE`].
    /// `context` says when, with `{from}` and `{to}` standing for the nodes.
    async fn probe(&mut self, from: NodeId, to: NodeId, context: &str) -> Result<(), Failure> {
        let first = self.next_term;
        let deadline = Instant::now() + PATIENCE;
        let mut probes = 0;
        loop {
            let probe = self.message(from, to, probes);
            probes += 1;
            self.send(vec![Op::One(probe)]).await?;
            let wait_until = Instant::now() + PROBE_INTERVAL;
            loop {
                self.poll()?;
                let through = self
                    .received(to)
                    .iter()
                    .any(|&(sender, term)| sender == from && term >= first);
                if through {
                    return Ok(());
                }
                if Instant::now() >= wait_until {
                    break;
                }
                tokio::time::sleep(POLL_INTERVAL).await;
            }
            if Instant::now() >= deadline {
                let context = context
                    .replace("{from}", &from.to_string())
                    .replace("{to}", &to.to_string());
                return Err(self.fail(format!(
                    "{context}, none of the {probes} messages {from} sent {to} over \
                     {PATIENCE:?} arrived: a link must carry messages again once both ends are \
                     up and reading"
                )));
            }
        }
    }

    /// Empties the inboxes until `done` holds, or fails with `timed_out`'s words after
    /// [`PATIENCE`].
    async fn wait_until(
        &mut self,
        mut done: impl FnMut(&Self) -> bool,
        timed_out: impl FnOnce(&Self) -> String,
    ) -> Result<(), Failure> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            self.poll()?;
            if done(self) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(self.fail(timed_out(self)));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Takes what arrived in the inboxes of the nodes that read, and in those of stopped
    /// nodes, and checks each message: one that was sent, to the node it reached, unchanged,
    /// and not to a stopped node after its stop.
    fn poll(&mut self) -> Result<(), Failure> {
        let Harness {
            check,
            nodes,
            stopped,
            sent,
            ..
        } = self;
        let check = *check;
        let fail = move |reason| Failure { check, reason };
        for (&id, node) in nodes.iter_mut().filter(|(_, node)| node.reading) {
            while let Some(message) = node.inbound.try_recv() {
                verify(sent, id, &message).map_err(fail)?;
                node.received.push((message.from, message.term.0));
                node.arrived.insert(message.term.0);
            }
        }
        for old in stopped.iter_mut() {
            while let Some(message) = old.inbound.try_recv() {
                verify(sent, old.id, &message).map_err(fail)?;
                if message.term.0 >= old.after {
                    return Err(fail(format!(
                        "{} reached the inbox of {}'s stopped transport, though it was sent \
                         after the stop returned",
                        describe(&message),
                        old.id
                    )));
                }
            }
        }
        Ok(())
    }

    fn describe_term(&self, term: u64) -> String {
        self.sent
            .get(&term)
            .map_or_else(|| format!("message #{term}"), describe)
    }

    /// Which of `terms` have not arrived, per link, in a few words.
    fn describe_missing(&self, terms: &[u64]) -> String {
        let mut per_link: BTreeMap<(NodeId, NodeId), (usize, u64)> = BTreeMap::new();
        let mut missing = 0;
        for &term in terms.iter().filter(|&&term| !self.arrived(term)) {
            if let Some(message) = self.sent.get(&term) {
                per_link
                    .entry((message.from, message.to))
                    .or_insert((0, term))
                    .0 += 1;
                missing += 1;
            }
        }
        let links: Vec<String> = per_link
            .iter()
            .map(|(&(from, to), &(count, first))| {
                format!(
                    "{count} from {from} to {to} (the first: {})",
                    self.describe_term(first)
                )
            })
            .collect();
        format!(
            "{missing} of {} messages sent to live peers had not arrived after {PATIENCE:?}: {}",
            terms.len(),
            links.join("; ")
        )
    }
}

/// Makes `calls` in order, noting in `progress` the position of the call under way; returns
/// the slowest call's duration and position.
fn make_calls<T: Transport>(calls: Vec<(Arc<T>, Op)>, progress: &AtomicUsize) -> (Duration, usize) {
    let mut slowest = (Duration::ZERO, 0);
    for (position, (transport, op)) in calls.into_iter().enumerate() {
        progress.store(position, Ordering::Release);
        let started = std::time::Instant::now();
        match op {
            Op::One(message) => transport.send(message),
            Op::Batch(_, messages) => transport.send_batch(messages),
        }
        let took = started.elapsed();
        if took > slowest.0 {
            slowest = (took, position);
        }
    }
    slowest
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_string()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic without a message".to_string()
    }
}

/// Checks a message that arrived at node `at` against what was sent; the error says how it
/// differs.
fn verify(sent: &BTreeMap<u64, Message>, at: NodeId, got: &Message) -> Result<(), String> {
    let Some(original) = sent.get(&got.term.0) else {
        return Err(format!(
            "{at} received {}, which no node sent",
            describe(got)
        ));
    };
    if original.to != at {
        return Err(format!(
            "{at} received {}, which was sent to {}: a message must reach its addressee only",
            describe(original),
            original.to
        ));
    }
    if got != original {
        return Err(format!(
            "{at} received {} altered: {}",
            describe(original),
            difference(original, got)
        ));
    }
    Ok(())
}

// ----- Messages ----------------------------------------------------------------------------

/// How many kinds of small message [`small_body`] builds.
const KINDS: usize = 7;

/// A small message body of kind `kind` (modulo [`KINDS`]); `term`, the message's number, goes
/// into its fields too, so that no two bodies are alike.
fn small_body(kind: usize, term: u64) -> MessageBody {
    let at = |index| EntryId {
        term: Term(1),
        index: LogIndex(index),
    };
    match kind % KINDS {
        0 => heartbeat(term),
        1 => append(term, &[0, 7, 100]),
        2 => MessageBody::RequestVote {
            pre_vote: term.is_multiple_of(2),
            last_log: at(term),
            transfer: false,
            campaign: term,
        },
        3 => MessageBody::AppendEntriesResponse {
            round: term,
            session: term.rotate_left(17),
            outcome: raft_core::AppendOutcome::Success {
                match_index: LogIndex(term),
            },
        },
        4 => MessageBody::HeartbeatResponse {
            round: term,
            session: term.rotate_left(29),
        },
        5 => MessageBody::ReadIndex {
            request: term,
            lease: !term.is_multiple_of(2),
        },
        _ => MessageBody::TimeoutNow,
    }
}

fn heartbeat(term: u64) -> MessageBody {
    MessageBody::Heartbeat {
        leader_commit: LogIndex(term),
        round: term,
        freshness: None,
    }
}

/// An AppendEntries from the start of the log, with one command entry per size in `sizes`
/// whose bytes depend on `term` and their position.
fn append(term: u64, sizes: &[usize]) -> MessageBody {
    let entries = sizes
        .iter()
        .zip(1u64..)
        .map(|(&size, index)| Entry {
            term: Term(1),
            index: LogIndex(index),
            payload: Payload::Command(payload_bytes(term ^ index, size).into()),
        })
        .collect();
    MessageBody::AppendEntries {
        prev_log: EntryId::default(),
        entries,
        leader_commit: LogIndex(0),
        round: term,
    }
}

/// `len` bytes that depend on `seed` and on their position, with a period that is no power of
/// two, so that a shifted, truncated or repeated piece never compares equal.
fn payload_bytes(seed: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|k| (k.wrapping_mul(7).wrapping_add(seed.wrapping_mul(101)) % 251) as u8)
        .collect()
}

/// A message in a few words, without its payload: `heartbeat #12 from n1 to n2`.
fn describe(message: &Message) -> String {
    let kind = match &message.body {
        MessageBody::AppendEntries { entries, .. } => {
            let bytes: usize = entries
                .iter()
                .map(|entry| match &entry.payload {
                    Payload::Command(data) => data.len(),
                    _ => 0,
                })
                .sum();
            let count = match entries.len() {
                1 => "1 entry".to_string(),
                n => format!("{n} entries"),
            };
            format!("AppendEntries ({count}, {bytes} payload bytes)")
        }
        body => kind(body).to_string(),
    };
    format!(
        "{kind} #{} from {} to {}",
        message.term.0, message.from, message.to
    )
}

fn kind(body: &MessageBody) -> &'static str {
    match body {
        MessageBody::RequestVote { .. } => "RequestVote",
        MessageBody::RequestVoteResponse { .. } => "RequestVoteResponse",
        MessageBody::AppendEntries { .. } => "AppendEntries",
        MessageBody::AppendEntriesResponse { .. } => "AppendEntriesResponse",
        MessageBody::Heartbeat { .. } => "heartbeat",
        MessageBody::HeartbeatResponse { .. } => "HeartbeatResponse",
        MessageBody::TimeoutNow => "TimeoutNow",
        MessageBody::ReadIndex { .. } => "ReadIndex",
        MessageBody::ReadIndexResponse { .. } => "ReadIndexResponse",
        MessageBody::InstallSnapshot { .. } => "InstallSnapshot",
        MessageBody::InstallSnapshotResponse { .. } => "InstallSnapshotResponse",
        _ => "message",
    }
}

/// How `got` differs from `sent`, which share a term, in a few words.
fn difference(sent: &Message, got: &Message) -> String {
    if got.from != sent.from {
        return format!("its sender reads {} instead of {}", got.from, sent.from);
    }
    if got.to != sent.to {
        return format!("it is addressed to {} instead of {}", got.to, sent.to);
    }
    match (&sent.body, &got.body) {
        (
            MessageBody::AppendEntries { entries: a, .. },
            MessageBody::AppendEntries { entries: b, .. },
        ) => {
            if a.len() != b.len() {
                return format!("it carries {} entries instead of {}", b.len(), a.len());
            }
            match a.iter().zip(b).position(|(x, y)| x != y) {
                Some(position) => entry_difference(position, &a[position], &b[position]),
                None => "a field other than its entries differs".to_string(),
            }
        }
        (a, b) if kind(a) != kind(b) => {
            format!("it arrived as a {} instead of a {}", kind(b), kind(a))
        }
        (a, b) => format!("its body reads {b:?} instead of {a:?}"),
    }
}

fn entry_difference(position: usize, sent: &Entry, got: &Entry) -> String {
    if let (Payload::Command(a), Payload::Command(b)) = (&sent.payload, &got.payload) {
        let (a, b) = (&a[..], &b[..]);
        if a.len() != b.len() {
            return format!(
                "entry #{position}'s payload has {} bytes instead of {}",
                b.len(),
                a.len()
            );
        }
        if let Some(byte) = a.iter().zip(b).position(|(x, y)| x != y) {
            return format!("entry #{position}'s payload differs from byte {byte} on");
        }
    }
    format!("entry #{position} differs (its term, index or kind of payload)")
}
