//! The bytes on a TCP connection: a fixed-size handshake, then length-delimited frames.
//!
//! ```text
//! hello (22 bytes, dialler first):  magic "RAFT" | version u16 BE | cluster id u64 BE | node id u64 BE
//! answer (23 bytes, from listener):  its own hello | verdict u8
//! frame:                             length u32 BE | payload (length bytes)
//! payload:                           one `raft_core::Message` (`raft_core::wire`), or empty (a keepalive)
//! ```
//!
//! The connecting side sends its hello first; the accepting side checks it and answers with its
//! own hello and a [`Verdict`]: accepted, or refused and why (another cluster, a node id it does
//! not know, another version, a live connection from that node already), then closes a refused
//! connection. Bytes that are not a Raft hello at all get no answer. The answer is what lets a
//! misconfigured node see its own mistake. The encoding of a `Message` belongs to raft-core
//! (`raft_core::wire`, with its own `FORMAT_VERSION`); the hello's version combines that format
//! with this transport's own revision (handshake and framing), so a change of either makes peers
//! of different builds refuse each other instead of misreading each other's frames.
//!
//! Everything here is checked before it is trusted: a frame is parsed only once it is complete,
//! its declared length is checked against the maximum before any byte of it is buffered, its
//! header (sender, recipient, number of entries) is read before the body is decoded, and a
//! payload must decode to exactly one message with no bytes left over.

use bytes::{Buf, BytesMut};
use raft_core::wire::WireError;
use raft_core::{Message, MessageBody, NodeId, Payload};
use std::io;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::{Instant, timeout_at};

/// The first bytes of every connection: tells a Raft peer from anything else that connects.
pub(crate) const MAGIC: [u8; 4] = *b"RAFT";

/// This transport's own revision of the handshake and framing. Revision 3 added the verdict to
/// the listener's answer.
const TRANSPORT_REVISION: u16 = 3;

/// The version in the hello: the transport's revision and raft-core's message format
/// (`raft_core::wire::FORMAT_VERSION`); peers of different versions refuse each other.
pub const VERSION: u16 = TRANSPORT_REVISION * 256 + raft_core::wire::FORMAT_VERSION;

/// Bytes of an encoded [`Hello`].
pub(crate) const HELLO_LEN: usize = 4 + 2 + 8 + 8;

/// Bytes of the listener's answer: its hello and a [`Verdict`].
pub(crate) const ANSWER_LEN: usize = HELLO_LEN + 1;

/// How the listener answers a hello.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Accepted,
    OtherCluster,
    UnknownNode,
    UnsupportedVersion,
    /// The listener has a live connection from that node id already; a claim alone does not
    /// displace it (a node that really restarted is let in once the old connection falls
    /// silent).
    AlreadyConnected,
    /// Over TLS: the dialler's certificate does not name the node id its hello claims.
    CertificateMismatch,
}

impl Verdict {
    pub(crate) fn to_byte(self) -> u8 {
        match self {
            Verdict::Accepted => 0,
            Verdict::OtherCluster => 1,
            Verdict::UnknownNode => 2,
            Verdict::UnsupportedVersion => 3,
            Verdict::AlreadyConnected => 4,
            Verdict::CertificateMismatch => 5,
        }
    }

    /// `None` for a byte no version of this protocol sends.
    pub(crate) fn from_byte(byte: u8) -> Option<Verdict> {
        Some(match byte {
            0 => Verdict::Accepted,
            1 => Verdict::OtherCluster,
            2 => Verdict::UnknownNode,
            3 => Verdict::UnsupportedVersion,
            4 => Verdict::AlreadyConnected,
            5 => Verdict::CertificateMismatch,
            _ => return None,
        })
    }
}

/// Bytes of a frame's length prefix.
const LENGTH_PREFIX_LEN: usize = 4;

/// How much the frame buffer grows per read at most, so a peer that announces a large frame
/// and sends it slowly cannot make us reserve all of it up front.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// The handshake each side of a connection sends: who it is and which cluster it belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Hello {
    pub(crate) magic: [u8; 4],
    pub(crate) version: u16,
    pub(crate) cluster_id: u64,
    pub(crate) node_id: NodeId,
}

/// Why a [`Hello`] was refused; each reason is logged by the side that refuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub(crate) enum HelloError {
    #[error("bad magic bytes {0:02x?} (not a Raft peer)")]
    BadMagic([u8; 4]),
    /// The first bytes are a TLS record: the peer uses TLS and this node does not.
    #[error("a TLS handshake, but this node's transport is not configured for TLS")]
    TlsOnPlaintext,
    #[error("its certificate does not name node {0} (raft-node-{id})", id = .0.0)]
    CertificateMismatch(NodeId),
    #[error("protocol version {theirs}, this node speaks {ours}")]
    Version { theirs: u16, ours: u16 },
    #[error("cluster id {theirs}, this node belongs to cluster {ours}")]
    Cluster { theirs: u64, ours: u64 },
    #[error("node id {0} is not a configured peer")]
    UnknownNode(NodeId),
    #[error("expected node {expected}, found node {found}")]
    WrongNode { expected: NodeId, found: NodeId },
    #[error("a live connection from node {0} exists already")]
    AlreadyConnected(NodeId),
}

impl HelloError {
    /// The answer that tells the dialler why; `None` when it gets no answer (not a Raft peer).
    pub(crate) fn verdict(&self) -> Option<Verdict> {
        match self {
            HelloError::BadMagic(_) | HelloError::TlsOnPlaintext => None,
            HelloError::CertificateMismatch(_) => Some(Verdict::CertificateMismatch),
            HelloError::Version { .. } => Some(Verdict::UnsupportedVersion),
            HelloError::Cluster { .. } => Some(Verdict::OtherCluster),
            HelloError::UnknownNode(_) | HelloError::WrongNode { .. } => Some(Verdict::UnknownNode),
            HelloError::AlreadyConnected(_) => Some(Verdict::AlreadyConnected),
        }
    }

    /// A short, fixed name of the cause: what log lines are rate-limited by.
    pub(crate) fn cause(&self) -> &'static str {
        match self {
            HelloError::BadMagic(_) => "bad magic",
            HelloError::TlsOnPlaintext => "TLS on a plaintext port",
            HelloError::CertificateMismatch(_) => "certificate for another node",
            HelloError::Version { .. } => "version",
            HelloError::Cluster { .. } => "cluster",
            HelloError::UnknownNode(_) => "unknown node",
            HelloError::WrongNode { .. } => "wrong node",
            HelloError::AlreadyConnected(_) => "already connected",
        }
    }
}

/// The listener's answer: its hello, then the verdict.
pub(crate) fn encode_answer(hello: &Hello, verdict: Verdict) -> [u8; ANSWER_LEN] {
    let mut out = [0u8; ANSWER_LEN];
    out[..HELLO_LEN].copy_from_slice(&hello.encode());
    out[HELLO_LEN] = verdict.to_byte();
    out
}

impl Hello {
    /// The handshake of node `node_id` of cluster `cluster_id`, at this protocol version.
    pub(crate) fn new(cluster_id: u64, node_id: NodeId) -> Hello {
        Hello {
            magic: MAGIC,
            version: VERSION,
            cluster_id,
            node_id,
        }
    }

    pub(crate) fn encode(&self) -> [u8; HELLO_LEN] {
        let mut out = [0u8; HELLO_LEN];
        out[0..4].copy_from_slice(&self.magic);
        out[4..6].copy_from_slice(&self.version.to_be_bytes());
        out[6..14].copy_from_slice(&self.cluster_id.to_be_bytes());
        out[14..22].copy_from_slice(&self.node_id.0.to_be_bytes());
        out
    }

    /// Any 22 bytes decode; [`Hello::check`] decides whether they are acceptable.
    pub(crate) fn decode(bytes: &[u8; HELLO_LEN]) -> Hello {
        let mut buf = &bytes[..];
        let mut magic = [0u8; 4];
        buf.copy_to_slice(&mut magic);
        Hello {
            magic,
            version: buf.get_u16(),
            cluster_id: buf.get_u64(),
            node_id: NodeId(buf.get_u64()),
        }
    }

    /// Checks magic, version and cluster against ours; the caller checks the node id, whose
    /// rule differs between the accepting side (a known peer) and the connecting side (the
    /// peer it dialled).
    pub(crate) fn check(&self, cluster_id: u64) -> Result<(), HelloError> {
        if self.magic != MAGIC {
            // A TLS record of type handshake (22), protocol major version 3.
            if self.magic[..2] == [0x16, 0x03] {
                return Err(HelloError::TlsOnPlaintext);
            }
            return Err(HelloError::BadMagic(self.magic));
        }
        if self.version != VERSION {
            return Err(HelloError::Version {
                theirs: self.version,
                ours: VERSION,
            });
        }
        if self.cluster_id != cluster_id {
            return Err(HelloError::Cluster {
                theirs: self.cluster_id,
                ours: cluster_id,
            });
        }
        Ok(())
    }
}

/// Why a connection's byte stream was given up on.
#[derive(Debug, Error)]
pub(crate) enum FrameError {
    #[error("frame of {length} bytes exceeds the maximum of {max} bytes")]
    TooLarge { length: u64, max: u32 },
    #[error("connection closed in the middle of a frame ({buffered} bytes buffered)")]
    Truncated { buffered: usize },
    #[error("no byte arrived for {0:?}")]
    Idle(std::time::Duration),
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
}

/// Why a frame's payload was not a message.
pub(crate) type DecodeError = WireError;

/// What a payload's first bytes say (see `raft_core::wire::peek_header`).
pub(crate) type Header = raft_core::wire::Header;

/// Reads a payload's header without decoding its body.
pub(crate) fn peek_header(payload: &[u8]) -> Result<Header, DecodeError> {
    raft_core::wire::peek_header(payload)
}

/// About how many bytes `message` takes framed, without encoding it: what the outbound queue
/// counts against its byte bound. Exact enough for a bound (payload bytes dominate).
pub(crate) fn estimated_frame_bytes(message: &Message) -> usize {
    const ENVELOPE: usize = 64;
    const PER_ENTRY: usize = 24;
    match &message.body {
        MessageBody::AppendEntries { entries, .. } => entries.iter().fold(ENVELOPE, |sum, e| {
            let data = match &e.payload {
                Payload::Command(data) => data.len(),
                _ => 0,
            };
            sum.saturating_add(PER_ENTRY + data)
        }),
        _ => ENVELOPE,
    }
}

/// Appends one frame carrying `message` to `out`. Fails, leaving `out` as it was, when the
/// message does not encode or its frame would exceed `max_frame_bytes` (the receiver would
/// close the connection over it).
pub(crate) fn encode_frame(
    message: &Message,
    max_frame_bytes: u32,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let start = out.len();
    out.extend_from_slice(&[0; LENGTH_PREFIX_LEN]);
    if let Err(e) = raft_core::wire::encode(message, out) {
        // Encoding fails only on values serde cannot express, which `Message` has none of;
        // the frames already in `out` must survive all the same.
        out.truncate(start);
        return Err(EncodeError::Encoding(e));
    }
    let length = out.len() - start - LENGTH_PREFIX_LEN;
    match u32::try_from(length) {
        Ok(length) if length <= max_frame_bytes => {
            out[start..start + LENGTH_PREFIX_LEN].copy_from_slice(&length.to_be_bytes());
            Ok(())
        }
        _ => {
            out.truncate(start);
            Err(EncodeError::TooLarge {
                length,
                max: max_frame_bytes,
            })
        }
    }
}

/// Why an outbound message was not framed.
#[derive(Debug, Error)]
pub(crate) enum EncodeError {
    #[error("message does not encode: {0}")]
    Encoding(WireError),
    #[error("encoded message of {length} bytes exceeds the maximum frame of {max} bytes")]
    TooLarge { length: usize, max: u32 },
}

/// An empty frame: "still here". Sent by both sides of an idle connection so that each can
/// tell a quiet peer from a dead link (turmoil's TCP, like a cut cable, reports neither).
pub(crate) const KEEPALIVE_FRAME: [u8; LENGTH_PREFIX_LEN] = [0; LENGTH_PREFIX_LEN];

/// Decodes one message from a frame's payload, which must hold nothing else.
pub(crate) fn decode_message(payload: &[u8]) -> Result<Message, DecodeError> {
    raft_core::wire::decode(payload)
}

/// Reads whole frames from a byte stream.
///
/// Cancel-safe: every byte read is kept in the reader's own buffer, so `next_frame` may lose a
/// `select!` race and be called again without losing or misaligning data (unlike `read_exact`,
/// which loses what it read when dropped).
///
/// Idleness is measured in bytes, not frames: [`FrameReader::next_frame`] fails once no byte
/// has arrived for the idle limit, so a large frame arriving slowly over a thin link is not
/// cut off while it keeps moving.
#[derive(Debug)]
pub(crate) struct FrameReader<R> {
    reader: R,
    buffer: BytesMut,
    max_frame_bytes: u32,
    /// When the last byte arrived (or the reader was made).
    last_byte_at: Instant,
}

/// Read buffers larger than this are given back once empty, so that one large frame does
/// not pin its memory for the rest of the connection.
pub(crate) const RETAINED_BUFFER_BYTES: usize = 256 * 1024;

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub(crate) fn new(reader: R, max_frame_bytes: u32) -> FrameReader<R> {
        FrameReader {
            reader,
            buffer: BytesMut::with_capacity(4096),
            max_frame_bytes,
            last_byte_at: Instant::now(),
        }
    }

    /// When the last byte arrived.
    pub(crate) fn last_byte_at(&self) -> Instant {
        self.last_byte_at
    }

    /// The next frame's payload (empty for a keepalive), or `None` at a clean end of stream.
    /// Fails with [`FrameError::Idle`] once no byte has arrived for `idle`.
    pub(crate) async fn next_frame(
        &mut self,
        idle: std::time::Duration,
    ) -> Result<Option<BytesMut>, FrameError> {
        loop {
            let wanted = match self.parse()? {
                Parsed::Frame(payload) => return Ok(Some(payload)),
                Parsed::NeedBytes(wanted) => wanted,
            };
            if self.buffer.is_empty() && self.buffer.capacity() > RETAINED_BUFFER_BYTES {
                self.buffer = BytesMut::with_capacity(4096);
            }
            self.buffer.reserve(wanted.min(READ_CHUNK_BYTES));
            // `read_buf` is cancel-safe: if this future is dropped, no byte has been consumed.
            // The deadline hangs on the last byte, not on this call, so a caller that drops
            // and remakes this future (losing a `select!`) does not extend it. Data already
            // waiting is read even past the deadline: `timeout_at` polls the read first.
            let read = timeout_at(
                self.last_byte_at + idle,
                self.reader.read_buf(&mut self.buffer),
            )
            .await
            .map_err(|_| FrameError::Idle(idle))?;
            // Over TLS, a peer that closes its socket without a close_notify (as every
            // process that exits or drops a connection does) reads as an unexpected end of
            // stream. Frames delimit themselves, so at a frame boundary that is a clean end,
            // and inside a frame it is the truncation it would be in the clear.
            let read = match read {
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
                read => read,
            };
            if read? == 0 {
                return if self.buffer.is_empty() {
                    Ok(None)
                } else {
                    Err(FrameError::Truncated {
                        buffered: self.buffer.len(),
                    })
                };
            }
            self.last_byte_at = Instant::now();
        }
    }

    /// Takes a complete frame off the buffer, or says how many more bytes one needs.
    fn parse(&mut self) -> Result<Parsed, FrameError> {
        let Some(prefix) = self.buffer.get(..LENGTH_PREFIX_LEN) else {
            return Ok(Parsed::NeedBytes(LENGTH_PREFIX_LEN - self.buffer.len()));
        };
        let mut length_bytes = [0u8; LENGTH_PREFIX_LEN];
        length_bytes.copy_from_slice(prefix);
        let length = u32::from_be_bytes(length_bytes);
        if length > self.max_frame_bytes {
            return Err(FrameError::TooLarge {
                length: u64::from(length),
                max: self.max_frame_bytes,
            });
        }
        // u32 always fits in usize on the 32- and 64-bit targets tokio supports.
        let total = LENGTH_PREFIX_LEN + length as usize;
        if self.buffer.len() < total {
            return Ok(Parsed::NeedBytes(total - self.buffer.len()));
        }
        self.buffer.advance(LENGTH_PREFIX_LEN);
        Ok(Parsed::Frame(
            self.buffer.split_to(total - LENGTH_PREFIX_LEN),
        ))
    }

    /// The underlying reader, for the handshake that precedes the frames.
    pub(crate) fn get_mut(&mut self) -> &mut R {
        &mut self.reader
    }
}

enum Parsed {
    Frame(BytesMut),
    NeedBytes(usize),
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft_core::{Entry, EntryId, LogIndex, MessageBody, Term};

    fn heartbeat(round: u64) -> Message {
        Message {
            from: NodeId(1),
            to: NodeId(2),
            term: Term(3),
            body: MessageBody::Heartbeat {
                leader_commit: LogIndex(4),
                round,
                freshness: None,
            },
        }
    }

    async fn read_all(bytes: Vec<u8>, max: u32) -> (Vec<BytesMut>, Result<(), FrameError>) {
        let mut reader = FrameReader::new(&bytes[..], max);
        let mut frames = Vec::new();
        loop {
            match reader.next_frame(std::time::Duration::from_secs(60)).await {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => return (frames, Ok(())),
                Err(e) => return (frames, Err(e)),
            }
        }
    }

    #[test]
    fn hello_round_trips_and_is_checked_field_by_field() {
        let hello = Hello::new(7, NodeId(3));
        assert_eq!(Hello::decode(&hello.encode()), hello);
        assert_eq!(hello.check(7), Ok(()));
        assert_eq!(
            hello.check(8),
            Err(HelloError::Cluster { theirs: 7, ours: 8 })
        );
        let mut bytes = hello.encode();
        bytes[0] = b'X';
        assert!(matches!(
            Hello::decode(&bytes).check(7),
            Err(HelloError::BadMagic(_))
        ));
        let mut bytes = hello.encode();
        bytes[5] = 99;
        assert!(matches!(
            Hello::decode(&bytes).check(7),
            Err(HelloError::Version { .. })
        ));
    }

    #[tokio::test]
    async fn frames_round_trip_in_order_with_keepalives_between() {
        let mut bytes = Vec::new();
        for round in 0..3 {
            encode_frame(&heartbeat(round), 1024, &mut bytes).unwrap();
            bytes.extend_from_slice(&KEEPALIVE_FRAME);
        }
        let (frames, end) = read_all(bytes, 1024).await;
        assert!(end.is_ok());
        let messages: Vec<Message> = frames
            .iter()
            .filter(|f| !f.is_empty())
            .map(|f| decode_message(f).unwrap())
            .collect();
        assert_eq!(messages, (0..3).map(heartbeat).collect::<Vec<_>>());
        assert_eq!(frames.len(), 6);
    }

    #[test]
    fn a_message_larger_than_the_maximum_is_not_framed_and_earlier_frames_survive() {
        let mut bytes = Vec::new();
        encode_frame(&heartbeat(1), 1024, &mut bytes).unwrap();
        let before = bytes.clone();
        let err = encode_frame(&heartbeat(2), 2, &mut bytes).unwrap_err();
        assert!(matches!(err, EncodeError::TooLarge { max: 2, .. }));
        assert_eq!(bytes, before);
    }

    /// Table: byte sequences a peer may send, and how the reader must end.
    #[tokio::test]
    async fn hostile_byte_sequences_end_the_stream_with_an_error_not_a_panic() {
        let mut valid = Vec::new();
        encode_frame(&heartbeat(1), 1024, &mut valid).unwrap();
        type Expectation = fn(&Result<(), FrameError>) -> bool;
        let cases: Vec<(&str, Vec<u8>, Expectation)> = vec![
            ("empty stream", vec![], |r| r.is_ok()),
            ("half a length prefix", vec![0, 0], |r| {
                matches!(r, Err(FrameError::Truncated { buffered: 2 }))
            }),
            ("length 0xFFFFFFFF", vec![0xFF; 8], |r| {
                matches!(
                    r,
                    Err(FrameError::TooLarge {
                        length: 0xFFFF_FFFF,
                        ..
                    })
                )
            }),
            (
                "truncated payload",
                valid[..valid.len() - 1].to_vec(),
                |r| matches!(r, Err(FrameError::Truncated { .. })),
            ),
            (
                "one byte over the maximum",
                1025u32.to_be_bytes().to_vec(),
                |r| matches!(r, Err(FrameError::TooLarge { length: 1025, .. })),
            ),
        ];
        for (name, bytes, expected) in cases {
            let (_, end) = read_all(bytes, 1024).await;
            assert!(expected(&end), "{name}: {end:?}");
        }
    }

    #[test]
    fn undecodable_or_padded_payloads_are_refused() {
        assert!(decode_message(&[0xFF; 16]).is_err());
        assert!(decode_message(&[]).is_err());
        let mut frame = Vec::new();
        encode_frame(&heartbeat(1), 1024, &mut frame).unwrap();
        let mut padded = frame[LENGTH_PREFIX_LEN..].to_vec();
        padded.push(0);
        assert!(matches!(
            decode_message(&padded),
            Err(DecodeError::TrailingBytes(1))
        ));
    }

    /// Table: payloads whose header must be refused before the body is decoded, and a valid
    /// AppendEntries whose decoded size must be counted per entry.
    #[test]
    fn headers_are_read_and_checked_before_the_body() {
        let append = |entries: u64| Message {
            from: NodeId(2),
            to: NodeId(1),
            term: Term(1),
            body: MessageBody::AppendEntries {
                prev_log: EntryId {
                    term: Term(1),
                    index: LogIndex(1),
                },
                entries: (0..entries)
                    .map(|i| raft_core::Entry {
                        term: Term(1),
                        index: LogIndex(2 + i),
                        payload: Payload::Blank,
                    })
                    .collect(),
                leader_commit: LogIndex(0),
                round: 0,
            },
        };
        let encoded = postcard::to_stdvec(&append(1000)).unwrap();
        let header = peek_header(&encoded).unwrap();
        assert_eq!((header.from, header.to), (NodeId(2), NodeId(1)));
        assert!(header.decoded_bytes >= 1000 * std::mem::size_of::<Entry>());
        assert!(
            encoded.len() < 1000 * 6,
            "an empty entry is a few bytes on the wire"
        );

        // The entry count of `append(1)` is the byte after from, to, term, variant and
        // prev_log (one byte each here).
        let mut impossible = postcard::to_stdvec(&append(1)).unwrap();
        assert_eq!(impossible[6], 1);
        impossible.splice(6..7, [0x80, 0x94, 0xEB, 0xDC, 0x03]); // 10^9 entries
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty", vec![]),
            ("garbage", vec![0xFF; 16]),
            ("cut in the header", encoded[..2].to_vec()),
            ("more entries than bytes", impossible),
        ];
        for (name, payload) in cases {
            assert!(peek_header(&payload).is_err(), "{name}");
        }
        let heartbeat = postcard::to_stdvec(&heartbeat(1)).unwrap();
        assert!(peek_header(&heartbeat).unwrap().decoded_bytes < 256);
    }

    #[test]
    fn an_append_entries_survives_the_round_trip() {
        let message = Message {
            from: NodeId(1),
            to: NodeId(2),
            term: Term(2),
            body: MessageBody::AppendEntries {
                prev_log: EntryId {
                    term: Term(1),
                    index: LogIndex(1),
                },
                entries: vec![raft_core::Entry {
                    term: Term(2),
                    index: LogIndex(2),
                    payload: raft_core::Payload::Command(b"x".into()),
                }],
                leader_commit: LogIndex(1),
                round: 9,
            },
        };
        let mut frame = Vec::new();
        encode_frame(&message, 1024, &mut frame).unwrap();
        assert_eq!(
            decode_message(&frame[LENGTH_PREFIX_LEN..]).unwrap(),
            message
        );
    }
}
