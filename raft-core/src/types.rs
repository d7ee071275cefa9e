//! The vocabulary of the protocol: node ids, terms, log indexes, entries and the hard state.

use crate::Membership;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use triomphe::ThinArc;

/// Identifies one member of a cluster. `0` is never a valid id: it is reserved so that
/// "no node" can never be mistaken for a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub u64);

/// A Raft term (§5.1): a logical clock that only moves forward. Term 0 precedes every election.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Term(pub u64);

/// A position in the replicated log. The first entry has index 1; index 0 is the empty prefix.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct LogIndex(pub u64);

/// A point in time on the local node's monotonic clock, in milliseconds from an origin of the
/// driver's choosing. The protocol never reads a clock: every input that depends on time
/// carries one of these.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Time(pub u64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}

/// Displays a node id that may be unknown: `n2`, or `unknown`. Errors and logs print node ids
/// this one way.
pub(crate) struct MaybeNode(pub(crate) Option<NodeId>);

impl fmt::Display for MaybeNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(id) => write!(f, "{id}"),
            None => f.write_str("unknown"),
        }
    }
}

impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t{}", self.0)
    }
}

impl fmt::Display for LogIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "i{}", self.0)
    }
}

impl Term {
    /// The term after this one (saturating; [`crate::Message::validate`] refuses terms near
    /// the end of the range, so a running node never gets there).
    pub fn next(self) -> Term {
        Term(self.0.saturating_add(1))
    }
}

impl LogIndex {
    /// The index after this one (saturating, like [`Term::next`]).
    pub fn next(self) -> LogIndex {
        LogIndex(self.0.saturating_add(1))
    }

    /// The index before this one, or 0 for index 0.
    pub fn prev(self) -> LogIndex {
        LogIndex(self.0.saturating_sub(1))
    }
}

impl Time {
    /// This instant plus `ms` milliseconds (saturating).
    pub fn plus_ms(self, ms: u64) -> Time {
        Time(self.0.saturating_add(ms))
    }

    /// Milliseconds from `earlier` to `self`, or 0 if `earlier` is later.
    pub fn ms_since(self, earlier: Time) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

/// The position of an entry: its term and index. Two entries with the same id are identical
/// (Log Matching, §5.3), which makes this the token a client keeps to recognise its write.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct EntryId {
    /// The term in which the entry was created by a leader.
    pub term: Term,
    /// The entry's position in the log.
    pub index: LogIndex,
}

/// What a snapshot covers (§7): the last entry its image includes, and the membership as of
/// that entry. The image itself (the state machine's state after applying that entry) is opaque
/// bytes kept by a snapshot store.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SnapshotMeta {
    /// The last entry the image includes (the paper's *lastIncludedIndex* and
    /// *lastIncludedTerm*).
    pub last: EntryId,
    /// The membership as of `last` (the paper's *lastConfig*): the latest membership entry at
    /// or before it, committed or not, since a membership takes effect when appended. Shared,
    /// so that the metadata (carried by every InstallSnapshot chunk) stays small and cheap to
    /// copy.
    pub membership: SharedMembership,
}

impl SnapshotMeta {
    /// The metadata of a snapshot whose image includes every entry up to `last`, taken when
    /// `membership` was the cluster's.
    pub fn new(last: EntryId, membership: impl Into<SharedMembership>) -> SnapshotMeta {
        SnapshotMeta {
            last,
            membership: membership.into(),
        }
    }
}

/// A reference-counted [`Membership`], as a log entry holds it: cloning an entry shares it.
pub type SharedMembership = std::sync::Arc<Membership>;

/// What an entry carries.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Payload {
    /// The entry a new leader appends at the start of its term (§5.4.2, dissertation §6.4): once
    /// it commits, everything before it is committed and the leader may serve reads.
    Blank,
    /// A command for the user's state machine, as opaque bytes. Cloning is cheap: the bytes are
    /// shared, not copied.
    Command(EntryData),
    /// A new membership (paper §6, dissertation chapter 4). It takes effect on every node as
    /// soon as the node appends it, committed or not, and is undone if the entry is removed
    /// (dissertation §4.1). The state machine is not given it to apply: the driver skips it.
    Membership(SharedMembership),
}

/// The bytes of a command, shared between the log, the store and messages without copying.
///
/// One allocation holds the reference count, the length and the bytes (an `Arc` without a
/// weak count, reached through a thin pointer), so an entry in memory costs its payload plus at
/// most 72 bytes: 32 for the [`Entry`], 16 for the count and the length, and the allocator's
/// header and rounding (8 to 23 bytes with glibc's malloc). The pointer being thin keeps
/// [`Payload`] at 16 bytes. Serde encodes it as a byte string (one length, then the bytes).
/// Empty data shares one allocation made once per process.
#[derive(Clone)]
pub struct EntryData(ThinArc<(), u8>);

impl EntryData {
    fn copy_of(bytes: &[u8]) -> EntryData {
        if bytes.is_empty() {
            static EMPTY: std::sync::OnceLock<ThinArc<(), u8>> = std::sync::OnceLock::new();
            return EntryData(
                EMPTY
                    .get_or_init(|| ThinArc::from_header_and_slice((), bytes))
                    .clone(),
            );
        }
        EntryData(ThinArc::from_header_and_slice((), bytes))
    }
}

impl std::ops::Deref for EntryData {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0.slice
    }
}

impl PartialEq for EntryData {
    fn eq(&self, other: &EntryData) -> bool {
        **self == **other
    }
}

impl Eq for EntryData {}

impl std::hash::Hash for EntryData {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (**self).hash(state);
    }
}

impl PartialOrd for EntryData {
    fn partial_cmp(&self, other: &EntryData) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for EntryData {
    fn cmp(&self, other: &EntryData) -> std::cmp::Ordering {
        (**self).cmp(&**other)
    }
}

impl AsRef<[u8]> for EntryData {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl From<Vec<u8>> for EntryData {
    fn from(bytes: Vec<u8>) -> EntryData {
        EntryData::copy_of(&bytes)
    }
}

impl From<&[u8]> for EntryData {
    fn from(bytes: &[u8]) -> EntryData {
        EntryData::copy_of(bytes)
    }
}

impl<const N: usize> From<&[u8; N]> for EntryData {
    fn from(bytes: &[u8; N]) -> EntryData {
        EntryData::copy_of(bytes)
    }
}

impl From<bytes::Bytes> for EntryData {
    fn from(bytes: bytes::Bytes) -> EntryData {
        EntryData::copy_of(&bytes)
    }
}

impl fmt::Debug for EntryData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "b\"{}\"", self.escape_ascii())
    }
}

impl Serialize for EntryData {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self)
    }
}

impl<'de> Deserialize<'de> for EntryData {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<EntryData, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = EntryData;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<EntryData, E> {
                Ok(EntryData::from(bytes))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, bytes: Vec<u8>) -> Result<EntryData, E> {
                Ok(EntryData::from(bytes))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<EntryData, A::Error> {
                let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
                while let Some(byte) = seq.next_element::<u8>()? {
                    bytes.push(byte);
                }
                Ok(EntryData::from(bytes))
            }
        }
        deserializer.deserialize_bytes(Visitor)
    }
}

/// One entry of the replicated log.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Entry {
    /// The term of the leader that created the entry.
    pub term: Term,
    /// The entry's position in the log.
    pub index: LogIndex,
    /// What the entry carries.
    pub payload: Payload,
}

impl Entry {
    /// The entry's term and index.
    pub fn id(&self) -> EntryId {
        EntryId {
            term: self.term,
            index: self.index,
        }
    }

    /// Bytes of payload this entry carries: a command's length; 0 for a blank entry; for a
    /// membership, an estimate of its size (8 bytes a member, and its addresses), so that
    /// flow control counts it.
    pub fn payload_len(&self) -> usize {
        match &self.payload {
            Payload::Blank => 0,
            Payload::Command(bytes) => bytes.len(),
            Payload::Membership(membership) => {
                let members = membership.all_voters().len() + membership.learners().len();
                let addresses: usize = membership.addresses().values().map(String::len).sum();
                members.saturating_mul(8).saturating_add(addresses)
            }
        }
    }
}

/// The state a node must keep on stable storage before it answers any RPC (Figure 2,
/// "Persistent state on all servers"): the latest term it has seen and whom it voted for in it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardState {
    /// The latest term this node has seen.
    pub term: Term,
    /// The candidate this node voted for in `term`, if any.
    pub vote: Option<NodeId>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_32_bytes_and_its_data_one_shared_allocation() {
        assert_eq!(std::mem::size_of::<Entry>(), 32);
        let data = EntryData::from(b"abc");
        let copy = data.clone();
        assert_eq!(&*copy, b"abc");
        // A clone shares the bytes.
        assert_eq!(data.as_ptr(), copy.as_ptr());
    }

    #[test]
    fn empty_data_is_empty_from_every_constructor() {
        let empty = [
            EntryData::from(Vec::new()),
            EntryData::from(&[][..]),
            EntryData::from(&[]),
            EntryData::from(bytes::Bytes::new()),
        ];
        for data in &empty {
            assert!(data.is_empty());
            assert_eq!(data, &empty[0]);
        }
        assert_ne!(EntryData::from(b"a"), empty[0]);
    }

    #[cfg(feature = "runtime")]
    #[test]
    fn data_round_trips_through_serde_as_one_length_then_the_bytes() {
        for bytes in [&b""[..], b"x", &[7u8; 300]] {
            let data = EntryData::from(bytes);
            let encoded = postcard::to_stdvec(&data).unwrap();
            let length = postcard::to_stdvec(&(bytes.len() as u64)).unwrap();
            assert_eq!(encoded, [&length[..], bytes].concat());
            let decoded: EntryData = postcard::from_bytes(&encoded).unwrap();
            assert_eq!(decoded, data);
        }
    }
}
