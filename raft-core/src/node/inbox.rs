//! The queue between a transport and its node: bounded in messages and in the bytes they
//! occupy decoded, so that a flood of small frames that decode into large messages (an empty
//! entry costs a few bytes on the wire and tens in memory) cannot grow the node's memory.

use crate::Message;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::mpsc;

/// The default bound on the bytes of messages waiting in an inbox (see [`inbox_with_limits`]).
pub const DEFAULT_INBOX_BYTES: usize = 64 << 20;

/// Where a transport delivers inbound messages for one node. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Inbox {
    tx: mpsc::Sender<(Message, usize)>,
    /// Bytes (decoded) of the messages waiting, shared with the receiving end.
    queued_bytes: Arc<AtomicUsize>,
    max_bytes: usize,
}

impl Inbox {
    /// Hands a message to the node without waiting. Returns false when the node's queue is full
    /// (in messages, or in bytes: a message that would take the waiting messages past the
    /// byte bound is refused, unless nothing waits) or the node stopped; the message is dropped,
    /// which Raft tolerates like any lost message.
    pub fn deliver(&self, message: Message) -> bool {
        let size = message.decoded_size();
        let before = self.queued_bytes.fetch_add(size, Ordering::AcqRel);
        if before > 0 && before.saturating_add(size) > self.max_bytes {
            self.queued_bytes.fetch_sub(size, Ordering::AcqRel);
            return false;
        }
        if self.tx.try_send((message, size)).is_ok() {
            true
        } else {
            self.queued_bytes.fetch_sub(size, Ordering::AcqRel);
            false
        }
    }

    /// Bytes (decoded) of the messages waiting for the node now.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes.load(Ordering::Acquire)
    }
}

/// The receiving end of an [`Inbox`], given to [`crate::node::Node::start`].
#[derive(Debug)]
pub struct InboundMessages {
    rx: mpsc::Receiver<(Message, usize)>,
    queued_bytes: Arc<AtomicUsize>,
}

impl InboundMessages {
    /// Waits for the next message; `None` once every [`Inbox`] is gone.
    pub async fn recv(&mut self) -> Option<Message> {
        let (message, size) = self.rx.recv().await?;
        self.queued_bytes.fetch_sub(size, Ordering::AcqRel);
        Some(message)
    }

    /// The next message if one is waiting.
    pub fn try_recv(&mut self) -> Option<Message> {
        let (message, size) = self.rx.try_recv().ok()?;
        self.queued_bytes.fetch_sub(size, Ordering::AcqRel);
        Some(message)
    }
}

/// A bounded queue of inbound messages for one node: at most `capacity` messages wait, and at
/// most [`DEFAULT_INBOX_BYTES`] of them decoded.
pub fn inbox(capacity: usize) -> (Inbox, InboundMessages) {
    inbox_with_limits(capacity, DEFAULT_INBOX_BYTES)
}

/// A bounded queue of inbound messages for one node: at most `capacity` messages and
/// `max_bytes` bytes of them decoded ([`Message::decoded_size`]) wait. A single message larger
/// than `max_bytes` is still taken when nothing else waits, so that no message is too large to
/// ever be delivered.
pub fn inbox_with_limits(capacity: usize, max_bytes: usize) -> (Inbox, InboundMessages) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let queued_bytes = Arc::new(AtomicUsize::new(0));
    (
        Inbox {
            tx,
            queued_bytes: Arc::clone(&queued_bytes),
            max_bytes,
        },
        InboundMessages { rx, queued_bytes },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Entry, EntryId, LogIndex, MessageBody, NodeId, Payload, Term};

    fn append(entries: u64, payload_bytes: usize) -> Message {
        let entries = (1..=entries)
            .map(|i| Entry {
                term: Term(1),
                index: LogIndex(i),
                payload: Payload::Command(vec![0; payload_bytes].into()),
            })
            .collect();
        Message {
            from: NodeId(2),
            to: NodeId(1),
            term: Term(1),
            body: MessageBody::AppendEntries {
                prev_log: EntryId {
                    term: Term(0),
                    index: LogIndex(0),
                },
                entries,
                leader_commit: LogIndex(0),
                round: 1,
            },
        }
    }

    #[tokio::test]
    async fn the_inbox_is_bounded_in_decoded_bytes_and_frees_them_as_the_node_takes_messages() {
        let big = append(1000, 0);
        let size = big.decoded_size();
        assert!(
            size >= 1000 * std::mem::size_of::<Entry>(),
            "entries count decoded"
        );
        let (inbox, mut inbound) = inbox_with_limits(1024, size * 2);
        assert!(inbox.deliver(big.clone()));
        assert!(inbox.deliver(big.clone()));
        assert!(
            !inbox.deliver(big.clone()),
            "a third would pass the byte bound"
        );
        assert!(
            !inbox.deliver(append(1, 0)),
            "even a small one, at the bound"
        );
        assert_eq!(inbox.queued_bytes(), size * 2);
        assert!(inbound.recv().await.is_some());
        assert_eq!(inbox.queued_bytes(), size);
        assert!(
            inbox.deliver(big.clone()),
            "room again once the node took one"
        );
        assert!(inbound.try_recv().is_some());
        assert!(inbound.try_recv().is_some());
        assert!(inbound.try_recv().is_none());
        assert_eq!(inbox.queued_bytes(), 0);
    }

    #[tokio::test]
    async fn a_message_larger_than_the_bound_is_taken_when_nothing_waits() {
        let huge = append(100, 1000);
        let (inbox, mut inbound) = inbox_with_limits(16, 1000);
        assert!(inbox.deliver(huge.clone()), "alone, it may pass");
        assert!(!inbox.deliver(huge.clone()), "not beside another");
        assert!(inbound.recv().await.is_some());
        assert!(inbox.deliver(huge));
    }

    #[tokio::test]
    async fn a_full_queue_of_messages_refuses_and_keeps_its_byte_count() {
        let (inbox, mut inbound) = inbox_with_limits(2, usize::MAX);
        let small = append(1, 1);
        assert!(inbox.deliver(small.clone()));
        assert!(inbox.deliver(small.clone()));
        assert!(!inbox.deliver(small.clone()));
        assert_eq!(inbox.queued_bytes(), 2 * small.decoded_size());
        drop(inbound.try_recv());
        drop(inbound.try_recv());
        assert_eq!(inbox.queued_bytes(), 0);
    }
}
