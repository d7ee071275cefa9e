//! The wire encoding of [`Message`]: one format, owned by the crate that owns `Message`, so that
//! a transport only moves bytes and a change of `Message` cannot silently desynchronise it.
//!
//! Messages are encoded with postcard (a compact, specified serde format). Postcard numbers enum
//! variants by position and does not encode field names, so `MessageBody`'s variants are
//! append-only, and any change of a field or variant changes the format: [`FORMAT_VERSION`] then
//! moves with it (a test holds the encoding of one message of every kind and fails until it
//! does). Transports put the version in their handshake and refuse peers of another.
//!
//! [`peek_header`] reads who a payload is from and to, and bounds what decoding it would cost in
//! memory, before the body is decoded, so that a receiver can refuse a message early.

use crate::{
    Entry, EntryId, LogIndex, Membership, Message, MessageBody, NodeId, SnapshotMeta, Term,
};
use std::sync::OnceLock;
use thiserror::Error;

/// The version of the encoding of [`Message`]. Bumped whenever the encoding changes.
pub const FORMAT_VERSION: u16 = 5;

/// The fewest bytes an entry takes on the wire (term, index, payload tag).
const MIN_ENTRY_WIRE_BYTES: usize = 3;
/// What a command payload costs in memory beyond its bytes (its shared allocation's header).
const PAYLOAD_OVERHEAD_BYTES: usize = 24;

/// Why bytes are not a message.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum WireError {
    /// The bytes do not decode as a message.
    #[error("undecodable message: {0}")]
    Undecodable(String),
    /// A whole message decoded, and bytes were left over.
    #[error("{0} bytes left over after the message")]
    TrailingBytes(usize),
    /// An AppendEntries declares more entries than its bytes could hold.
    #[error("{entries} entries declared in {bytes} bytes")]
    ImpossibleCount {
        /// The declared number of entries.
        entries: u64,
        /// The bytes left to hold them.
        bytes: usize,
    },
}

impl From<postcard::Error> for WireError {
    fn from(error: postcard::Error) -> WireError {
        WireError::Undecodable(error.to_string())
    }
}

/// What a payload's first bytes say, read without decoding the body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Header {
    /// The sender.
    pub from: NodeId,
    /// The recipient.
    pub to: NodeId,
    /// An upper bound of the bytes the decoded message occupies in memory (an entry costs far
    /// more decoded than on the wire: an empty one takes 3 bytes there and tens here).
    pub decoded_bytes: usize,
}

/// Appends the encoding of `message` to `out`. On an error `out` is left as it was.
pub fn encode(message: &Message, out: &mut Vec<u8>) -> Result<(), WireError> {
    let start = out.len();
    match postcard::to_extend(message, Appender(out)) {
        Ok(_) => Ok(()),
        Err(error) => {
            out.truncate(start);
            Err(error.into())
        }
    }
}

/// Decodes one message from `bytes`, which must hold nothing else. Checks only the encoding:
/// [`Message::validate`] checks what the message says.
pub fn decode(bytes: &[u8]) -> Result<Message, WireError> {
    let (message, rest) = postcard::take_from_bytes::<Message>(bytes)?;
    if rest.is_empty() {
        Ok(message)
    } else {
        Err(WireError::TrailingBytes(rest.len()))
    }
}

/// Reads an encoded message's [`Header`]. Fails on bytes that cannot start a message, and on an
/// AppendEntries that declares more entries than its bytes can hold.
pub fn peek_header(bytes: &[u8]) -> Result<Header, WireError> {
    let ((from, to, _term), rest) = postcard::take_from_bytes::<(NodeId, NodeId, Term)>(bytes)?;
    let (variant, rest) = postcard::take_from_bytes::<u32>(rest)?;
    let mut entries = 0usize;
    let mut members = 0usize;
    let mut memberships = 0usize;
    if Some(variant) == install_snapshot_variant() {
        let (_last, rest) = postcard::take_from_bytes::<EntryId>(rest)?;
        (members, _) = skip_membership(rest)?;
        memberships = 1;
    }
    if Some(variant) == append_entries_variant() {
        let (_prev_log, rest) = postcard::take_from_bytes::<EntryId>(rest)?;
        let (count, mut rest) = postcard::take_from_bytes::<u64>(rest)?;
        entries = usize::try_from(count)
            .ok()
            .filter(|&n| n <= rest.len() / MIN_ENTRY_WIRE_BYTES)
            .ok_or(WireError::ImpossibleCount {
                entries: count,
                bytes: rest.len(),
            })?;
        // Membership entries decode to more than their bytes: walk the entries to count
        // them, skipping commands without reading them.
        for _ in 0..entries {
            let ((_term, _index, kind), after) =
                postcard::take_from_bytes::<(u64, u64, u32)>(rest)?;
            rest = match kind {
                PAYLOAD_BLANK => after,
                PAYLOAD_COMMAND => {
                    let (len, after) = postcard::take_from_bytes::<u64>(after)?;
                    usize::try_from(len)
                        .ok()
                        .and_then(|len| after.get(len..))
                        .ok_or_else(|| WireError::Undecodable("a command overruns".into()))?
                }
                PAYLOAD_MEMBERSHIP => {
                    let (ids, after) = skip_membership(after)?;
                    members = members.saturating_add(ids);
                    memberships += 1;
                    after
                }
                _ => return Err(WireError::Undecodable(format!("payload kind {kind}"))),
            };
        }
    }
    let per_entry = std::mem::size_of::<Entry>() + PAYLOAD_OVERHEAD_BYTES;
    Ok(Header {
        from,
        to,
        decoded_bytes: std::mem::size_of::<Message>()
            .saturating_add(entries.saturating_mul(per_entry))
            .saturating_add(members.saturating_mul(crate::message::VOTER_DECODED_BYTES))
            .saturating_add(memberships.saturating_mul(crate::message::MEMBERSHIP_DECODED_BYTES))
            .saturating_add(bytes.len()),
    })
}

/// The variant indexes postcard writes for the kinds of [`crate::Payload`], in declaration
/// order (the golden encoding test fails if they move).
const PAYLOAD_BLANK: u32 = 0;
const PAYLOAD_COMMAND: u32 = 1;
const PAYLOAD_MEMBERSHIP: u32 = 2;

/// Skips an encoded membership (three sets of ids: voters, outgoing voters, learners, each a
/// count and then that many ids of at least one byte each; then the addresses, a count and
/// that many ids each followed by a string), returning how many ids it holds (an address
/// counts as one more, plus its bytes, in [`crate::message::VOTER_DECODED_BYTES`] units) and
/// the bytes after it.
fn skip_membership(mut rest: &[u8]) -> Result<(usize, &[u8]), WireError> {
    let mut ids = 0usize;
    for set in 0..4 {
        let (count, after) = postcard::take_from_bytes::<u64>(rest)?;
        let count = usize::try_from(count)
            .ok()
            .filter(|&n| n <= after.len())
            .ok_or(WireError::ImpossibleCount {
                entries: count,
                bytes: after.len(),
            })?;
        rest = after;
        for _ in 0..count {
            let (_id, after) = postcard::take_from_bytes::<u64>(rest)?;
            rest = after;
            if set == 3 {
                let (len, after) = postcard::take_from_bytes::<u64>(rest)?;
                let len = usize::try_from(len)
                    .ok()
                    .filter(|&len| len <= after.len())
                    .ok_or_else(|| WireError::Undecodable("an address overruns".into()))?;
                rest = &after[len..];
                ids = ids.saturating_add(1 + len / crate::message::VOTER_DECODED_BYTES);
            }
        }
        ids = ids.saturating_add(count);
    }
    Ok((ids, rest))
}

/// The variant index postcard writes for `MessageBody::AppendEntries`, found by encoding one
/// (so that reordering the enum cannot silently break [`peek_header`]).
fn append_entries_variant() -> Option<u32> {
    static VARIANT: OnceLock<Option<u32>> = OnceLock::new();
    *VARIANT.get_or_init(|| {
        variant_of(&MessageBody::AppendEntries {
            prev_log: EntryId::default(),
            entries: Vec::new(),
            leader_commit: LogIndex(0),
            round: 0,
        })
    })
}

/// The variant index postcard writes for `MessageBody::InstallSnapshot`.
fn install_snapshot_variant() -> Option<u32> {
    static VARIANT: OnceLock<Option<u32>> = OnceLock::new();
    *VARIANT.get_or_init(|| {
        variant_of(&MessageBody::InstallSnapshot {
            meta: SnapshotMeta::new(EntryId::default(), Membership::new([NodeId(1)]).ok()?),
            offset: 0,
            data: crate::EntryData::from(&[][..]),
            done: false,
        })
    })
}

fn variant_of(body: &MessageBody) -> Option<u32> {
    let bytes = postcard::to_stdvec(body).ok()?;
    postcard::take_from_bytes::<u32>(&bytes)
        .ok()
        .map(|(variant, _)| variant)
}

/// Lets postcard append to a buffer it does not own.
struct Appender<'a>(&'a mut Vec<u8>);

impl Extend<u8> for Appender<'_> {
    fn extend<I: IntoIterator<Item = u8>>(&mut self, bytes: I) {
        self.0.extend(bytes);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // test code: a panic is the failure report
mod tests {
    use super::*;
    use crate::{AppendOutcome, ConflictHint, Freshness, Payload};

    /// One message of every kind, with every field set.
    fn every_kind() -> Vec<Message> {
        let id = |term, index| EntryId {
            term: Term(term),
            index: LogIndex(index),
        };
        let bodies = vec![
            MessageBody::RequestVote {
                pre_vote: true,
                last_log: id(2, 7),
                transfer: false,
                campaign: 9,
            },
            MessageBody::RequestVoteResponse {
                pre_vote: false,
                granted: true,
                campaign: 9,
            },
            MessageBody::AppendEntries {
                prev_log: id(2, 7),
                entries: vec![
                    Entry {
                        term: Term(3),
                        index: LogIndex(8),
                        payload: Payload::Blank,
                    },
                    Entry {
                        term: Term(3),
                        index: LogIndex(9),
                        payload: Payload::Command(b"ab".as_slice().into()),
                    },
                    Entry {
                        term: Term(3),
                        index: LogIndex(10),
                        payload: Payload::Membership(std::sync::Arc::new(
                            crate::Membership::new([NodeId(1), NodeId(2)])
                                .unwrap()
                                .enter_joint([NodeId(1)])
                                .unwrap(),
                        )),
                    },
                ],
                leader_commit: LogIndex(7),
                round: 4,
            },
            MessageBody::AppendEntriesResponse {
                round: 4,
                session: 5,
                outcome: AppendOutcome::Reject {
                    rejected: LogIndex(7),
                    hint: ConflictHint {
                        term: Some(Term(1)),
                        first_index: LogIndex(3),
                    },
                },
            },
            MessageBody::Heartbeat {
                leader_commit: LogIndex(6),
                round: 5,
                freshness: Some(Freshness {
                    answered_round: 4,
                    session: 5,
                    commit: LogIndex(7),
                }),
            },
            MessageBody::HeartbeatResponse {
                round: 5,
                session: 5,
            },
            MessageBody::TimeoutNow,
            MessageBody::ReadIndex {
                request: 6,
                lease: true,
            },
            MessageBody::ReadIndexResponse {
                request: 6,
                index: Some(LogIndex(7)),
            },
            MessageBody::InstallSnapshot {
                meta: crate::SnapshotMeta::new(
                    id(2, 7),
                    crate::Membership::new([NodeId(1), NodeId(2), NodeId(3)])
                        .unwrap()
                        .add_learner(NodeId(4))
                        .unwrap()
                        .with_address(NodeId(4), "h:1")
                        .unwrap(),
                ),
                offset: 5,
                data: b"ab".as_slice().into(),
                done: true,
            },
            MessageBody::InstallSnapshotResponse {
                snapshot: id(2, 7),
                offset: 3,
                next_offset: 5,
            },
        ];
        bodies
            .into_iter()
            .map(|body| Message {
                from: NodeId(1),
                to: NodeId(2),
                term: Term(3),
                body,
            })
            .collect()
    }

    /// The encoding of `every_kind()`, as of [`FORMAT_VERSION`]. If this test fails, the
    /// encoding of `Message` changed: bump `FORMAT_VERSION` (peers of the old version must
    /// refuse this one) and update the bytes here.
    const GOLDEN: &str = "0102030001020700090102030100010901020302020703030800030901026162030a02010102010200000704010203030405010701010301020304060501040507010203050505010203060102030706010102030806010701020309020703010203000104010403683a3105026162010102030a02070305";

    #[test]
    fn the_encoding_is_the_one_of_this_format_version() {
        let mut bytes = Vec::new();
        for message in every_kind() {
            encode(&message, &mut bytes).unwrap();
        }
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            (FORMAT_VERSION, hex.as_str()),
            (5, GOLDEN),
            "the encoding of Message changed: bump FORMAT_VERSION and update GOLDEN"
        );
    }

    #[test]
    fn every_kind_of_message_round_trips_and_its_header_is_read_first() {
        for message in every_kind() {
            let mut bytes = Vec::new();
            encode(&message, &mut bytes).unwrap();
            assert_eq!(decode(&bytes).unwrap(), message);
            let header = peek_header(&bytes).unwrap();
            assert_eq!((header.from, header.to), (message.from, message.to));
            assert!(header.decoded_bytes >= message.decoded_size() / 2);
            bytes.push(0);
            assert!(matches!(decode(&bytes), Err(WireError::TrailingBytes(1))));
        }
    }

    #[test]
    fn an_impossible_entry_count_is_refused_from_the_header() {
        let mut bytes = Vec::new();
        let mut message = every_kind().remove(2);
        if let MessageBody::AppendEntries { entries, .. } = &mut message.body {
            entries.clear();
        }
        encode(&message, &mut bytes).unwrap();
        // The entry count (0, one byte) follows from, to, term, the variant and prev_log.
        let count_at = bytes.len() - 3; // then leader_commit (1 byte) and round (1 byte)
        bytes[count_at] = 100;
        assert!(matches!(
            peek_header(&bytes),
            Err(WireError::ImpossibleCount { entries: 100, .. })
        ));
    }
}
