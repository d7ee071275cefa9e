//! The bounded queue between [`crate::TcpTransport::send`] and one peer's writer task.
//!
//! `send` must never wait (the protocol's driver calls it), so a full queue drops a message
//! instead, by the configured [`Overflow`] policy, and counts it: Raft treats it like a message
//! the network lost. The queue is bounded in messages and in bytes (each message counted at
//! its estimated frame size), so a peer that stops reading holds at most `queue_capacity_bytes`
//! of this node's memory. The writer takes what is queued in batches of about a megabyte,
//! which is what lets it write a batch with one buffered write.

use raft_core::Message;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use tokio::sync::Notify;

/// Which message a full per-peer queue gives up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Overflow {
    /// Drop the oldest queued message to make room: after a long outage the peer receives the
    /// freshest messages (the current term, the latest commit index) rather than stale ones.
    #[default]
    DropOldest,
    /// Refuse the new message, keeping what was queued first (a plain bounded channel).
    DropNewest,
}

/// Messages waiting for one peer's writer.
#[derive(Debug)]
pub(crate) struct OutboundQueue {
    state: Mutex<QueueState>,
    /// Wakes the writer when a message arrives or the queue closes. `notify_one` keeps a permit
    /// when nobody waits, so a message pushed between the writer's emptiness check and its
    /// wait still wakes it.
    ready: Notify,
    capacity: usize,
    capacity_bytes: usize,
    overflow: Overflow,
    /// Messages given up because the queue was full.
    dropped: AtomicU64,
}

#[derive(Debug, Default)]
struct QueueState {
    /// Each message with its estimated frame size. Invariant: `messages.len() <= capacity`
    /// and `bytes <= capacity_bytes`.
    messages: VecDeque<(Message, usize)>,
    /// The sum of the sizes in `messages`.
    bytes: usize,
    /// Set when the peer is removed or the transport stops: pushes are refused and the writer
    /// exits once it sees it.
    closed: bool,
}

impl OutboundQueue {
    /// A queue holding at most `capacity` (at least 1) messages and `capacity_bytes` bytes.
    pub(crate) fn new(capacity: usize, capacity_bytes: usize, overflow: Overflow) -> OutboundQueue {
        OutboundQueue {
            state: Mutex::new(QueueState::default()),
            ready: Notify::new(),
            capacity: capacity.max(1),
            capacity_bytes,
            overflow,
            dropped: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, QueueState> {
        // A panic while holding this lock cannot leave the queue inconsistent (every update is
        // one VecDeque operation), so a poisoned lock is used as is.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `message` without waiting. Returns false if a message was dropped to do so (this
    /// one or the oldest), or the queue is closed.
    pub(crate) fn push(&self, message: Message) -> bool {
        let size = crate::tcp::wire::estimated_frame_bytes(&message);
        let accepted = {
            let mut state = self.lock();
            if state.closed {
                return false;
            }
            let fits = |state: &QueueState| {
                state.messages.len() < self.capacity
                    && state.bytes.saturating_add(size) <= self.capacity_bytes
            };
            if fits(&state) {
                state.messages.push_back((message, size));
                state.bytes += size;
                true
            } else {
                if self.overflow == Overflow::DropOldest && size <= self.capacity_bytes {
                    while !fits(&state) {
                        let Some((_, dropped)) = state.messages.pop_front() else {
                            break;
                        };
                        state.bytes -= dropped;
                        self.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    state.messages.push_back((message, size));
                    state.bytes += size;
                } else {
                    // The new message, or one larger than the whole queue, is the one dropped.
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                }
                false
            }
        };
        self.ready.notify_one();
        accepted
    }

    /// Moves queued messages, oldest first, to the end of `batch`: at least one, and then as
    /// long as the batch stays within about `max_bytes`. Returns false once the queue is
    /// closed.
    pub(crate) fn drain_into(&self, batch: &mut Vec<Message>, max_bytes: usize) -> bool {
        let mut state = self.lock();
        let mut taken = 0usize;
        while let Some((_, size)) = state.messages.front() {
            if taken > 0 && taken.saturating_add(*size) > max_bytes {
                break;
            }
            taken = taken.saturating_add(*size);
            let Some((message, size)) = state.messages.pop_front() else {
                break;
            };
            state.bytes -= size;
            batch.push(message);
        }
        if state.messages.is_empty() && state.messages.capacity() > 4096 {
            state.messages = VecDeque::new();
        }
        !state.closed
    }

    /// Whether a message waits or the queue closed: the writer has something to do.
    pub(crate) fn has_work(&self) -> bool {
        let state = self.lock();
        !state.messages.is_empty() || state.closed
    }

    /// Whether the queue was closed: the writer must exit.
    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Resolves when [`OutboundQueue::has_work`] may have become true. Cancel-safe; callers
    /// check `has_work` again after it, as a wake-up may be spurious.
    pub(crate) async fn wait(&self) {
        if !self.has_work() {
            self.ready.notified().await;
        }
    }

    /// Refuses further messages, discards the queued ones, and wakes the writer so it exits.
    pub(crate) fn close(&self) {
        {
            let mut state = self.lock();
            state.closed = true;
            state.messages = VecDeque::new();
            state.bytes = 0;
        }
        self.ready.notify_one();
    }

    /// Messages dropped because the queue was full.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Messages waiting now.
    pub(crate) fn len(&self) -> usize {
        self.lock().messages.len()
    }

    /// Estimated bytes waiting now.
    pub(crate) fn bytes(&self) -> usize {
        self.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft_core::{MessageBody, NodeId, Term};

    fn message(round: u64) -> Message {
        Message {
            from: NodeId(1),
            to: NodeId(2),
            term: Term(1),
            body: MessageBody::HeartbeatResponse { round, session: 0 },
        }
    }

    fn rounds(batch: &[Message]) -> Vec<u64> {
        batch
            .iter()
            .map(|m| match m.body {
                MessageBody::HeartbeatResponse { round, .. } => round,
                _ => u64::MAX,
            })
            .collect()
    }

    /// Table: policy, messages pushed into a queue of 3, what the writer then finds, drops.
    #[test]
    fn a_full_queue_drops_by_policy_and_counts() {
        let cases = [
            (Overflow::DropOldest, 5, vec![2, 3, 4], 2),
            (Overflow::DropNewest, 5, vec![0, 1, 2], 2),
            (Overflow::DropOldest, 3, vec![0, 1, 2], 0),
            (Overflow::DropNewest, 1, vec![0], 0),
        ];
        for (overflow, pushed, expected, dropped) in cases {
            let queue = OutboundQueue::new(3, usize::MAX, overflow);
            for round in 0..pushed {
                queue.push(message(round));
            }
            let mut batch = Vec::new();
            assert!(queue.drain_into(&mut batch, usize::MAX));
            assert_eq!(rounds(&batch), expected, "{overflow:?} after {pushed}");
            assert_eq!(queue.dropped(), dropped, "{overflow:?} after {pushed}");
            assert_eq!(queue.len(), 0);
        }
    }

    /// Table: policy, a byte bound of 3 heartbeats' estimate, what is left after 5 pushes.
    #[test]
    fn the_byte_bound_drops_by_policy_too() {
        let size = crate::tcp::wire::estimated_frame_bytes(&message(0));
        for (overflow, expected) in [
            (Overflow::DropOldest, vec![2, 3, 4]),
            (Overflow::DropNewest, vec![0, 1, 2]),
        ] {
            let queue = OutboundQueue::new(100, 3 * size, overflow);
            for round in 0..5 {
                queue.push(message(round));
            }
            assert_eq!(queue.bytes(), 3 * size);
            let mut batch = Vec::new();
            assert!(queue.drain_into(&mut batch, 2 * size));
            assert_eq!(rounds(&batch), expected[..2].to_vec(), "{overflow:?}");
            assert_eq!(queue.dropped(), 2);
            assert_eq!(queue.bytes(), size);
        }
    }

    #[test]
    fn a_closed_queue_refuses_and_reports_closed() {
        let queue = OutboundQueue::new(3, usize::MAX, Overflow::DropOldest);
        queue.push(message(0));
        queue.close();
        assert!(!queue.push(message(1)));
        let mut batch = Vec::new();
        assert!(!queue.drain_into(&mut batch, usize::MAX));
        assert!(batch.is_empty());
        assert!(queue.has_work());
    }

    #[tokio::test]
    async fn a_push_before_the_wait_is_not_missed() {
        let queue = OutboundQueue::new(3, usize::MAX, Overflow::DropOldest);
        queue.push(message(0));
        // Resolves at once: the message is there (and the permit is stored besides).
        queue.wait().await;
        assert!(queue.has_work());
    }
}
