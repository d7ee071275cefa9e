//! The image file's header: its format, encoding it, and reading it back with every check
//! (magic, version, CRC, lengths) before anything in it is trusted.

use super::{corrupt, io_at};
use crate::wal::fs::File;
use raft_core::node::StorageError;
use raft_core::{EntryId, LogIndex, Membership, SnapshotMeta, Term};
use std::path::Path;

/// The first bytes of an image file.
const MAGIC: &[u8; 8] = b"RAFTSNAP";

/// The version of the image file format this code writes. It reads this one and version 1,
/// which listed the voters only (read as a membership of those voters); any other is refused.
const FORMAT_VERSION: u32 = 2;

/// Version 1's header bytes besides the voter ids: magic, version, header length, last index,
/// last term, image length, image CRC, voter count, header CRC.
const V1_FIXED_HEADER_BYTES: usize = 8 + 4 + 4 + 8 + 8 + 8 + 4 + 4 + 4;

/// The most voters a version 1 header may list.
const V1_MAX_VOTERS: usize = 1 << 16;

/// Header bytes besides the membership: magic, version, header length, last index, last term,
/// image length, image CRC, header CRC.
const FIXED_HEADER_BYTES: usize = 8 + 4 + 4 + 8 + 8 + 8 + 4 + 4;

/// The most bytes a header's membership may take (far more than any cluster needs).
pub(super) const MAX_MEMBERSHIP_BYTES: usize = 1 << 20;

/// What an image file's header says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Header {
    pub(super) meta: SnapshotMeta,
    pub(super) header_len: u64,
    pub(super) image_len: u64,
    pub(super) image_crc: u32,
}

/// The length of the header of a snapshot whose membership encodes to `membership_bytes`.
pub(super) fn header_len_for(membership_bytes: usize) -> u64 {
    (FIXED_HEADER_BYTES + membership_bytes) as u64
}

/// The header of an image of `meta`, whose membership encodes to at most
/// [`MAX_MEMBERSHIP_BYTES`] (checked when the image was created).
pub(super) fn encode_header(meta: &SnapshotMeta, image_len: u64, image_crc: u32) -> Vec<u8> {
    let membership = meta.membership.encode();
    let header_len = FIXED_HEADER_BYTES + membership.len();
    let mut out = Vec::with_capacity(header_len);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    // At most 44 + 2^20 bytes: fits.
    out.extend_from_slice(&(header_len as u32).to_le_bytes());
    out.extend_from_slice(&meta.last.index.0.to_le_bytes());
    out.extend_from_slice(&meta.last.term.0.to_le_bytes());
    out.extend_from_slice(&image_len.to_le_bytes());
    out.extend_from_slice(&image_crc.to_le_bytes());
    out.extend_from_slice(&membership);
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// The length of the header of an image of `meta`.
pub(super) fn header_len_of(meta: &SnapshotMeta) -> u64 {
    header_len_for(meta.membership.encode().len())
}

/// The membership of a version 1 header: a voter count, then that many voter ids.
fn read_v1_voters(bytes: &[u8]) -> Result<Membership, String> {
    let mut reader = Reader { data: bytes, at: 0 };
    let count = reader.u32().ok_or("truncated")? as usize;
    let mut voters = std::collections::BTreeSet::new();
    for _ in 0..count {
        voters.insert(raft_core::NodeId(
            reader.u64().ok_or("the voter count overruns")?,
        ));
    }
    if reader.at != bytes.len() || voters.len() != count {
        return Err(format!(
            "{count} voters listed, some twice or with bytes left over"
        ));
    }
    Membership::new(voters).map_err(|e| e.to_string())
}

/// Reads little-endian integers from a header, in order.
struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let bytes = self.data.get(self.at..self.at.checked_add(N)?)?;
        self.at += N;
        bytes.try_into().ok()
    }

    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_le_bytes)
    }
}

/// Reads and checks the header of the image file `path`, and the file's length against it.
pub(super) fn read_header(file: &File, path: &Path) -> Result<Header, StorageError> {
    let file_len = file.len().map_err(io_at("reading the length of", path))?;
    let mut prefix = [0; 16];
    let read = file
        .read_at(&mut prefix, 0)
        .map_err(io_at("reading", path))?;
    if read < MAGIC.len() || prefix[..MAGIC.len()] != MAGIC[..] {
        if read < MAGIC.len() {
            return Err(corrupt(
                path,
                format!("{read} bytes long, too short for a snapshot header"),
            ));
        }
        return Err(corrupt(path, "not a snapshot file (bad magic bytes)"));
    }
    if read < prefix.len() {
        return Err(corrupt(
            path,
            format!("{read} bytes long, too short for a snapshot header"),
        ));
    }
    let mut reader = Reader {
        data: &prefix,
        at: MAGIC.len(),
    };
    let (Some(version), Some(header_len)) = (reader.u32(), reader.u32()) else {
        return Err(corrupt(path, "truncated header"));
    };
    let header_len = header_len as usize;
    let possible = match version {
        1 => {
            header_len >= V1_FIXED_HEADER_BYTES
                && (header_len - V1_FIXED_HEADER_BYTES).is_multiple_of(8)
                && header_len <= V1_FIXED_HEADER_BYTES + 8 * V1_MAX_VOTERS
        }
        FORMAT_VERSION => {
            header_len > FIXED_HEADER_BYTES
                && header_len <= FIXED_HEADER_BYTES + MAX_MEMBERSHIP_BYTES
        }
        _ => {
            return Err(corrupt(
                path,
                format!(
                    "format version {version}, but this code reads only versions 1 and {FORMAT_VERSION}"
                ),
            ));
        }
    };
    if !possible {
        return Err(corrupt(
            path,
            format!("impossible header length {header_len}"),
        ));
    }
    let mut header = vec![0; header_len];
    let read = file
        .read_at(&mut header, 0)
        .map_err(io_at("reading", path))?;
    if read < header_len {
        return Err(corrupt(
            path,
            format!("{read} bytes long, shorter than its {header_len}-byte header (truncated)"),
        ));
    }
    let (covered, stored_crc) = header.split_at(header_len - 4);
    let computed = crc32c::crc32c(covered);
    let stored = u32::from_le_bytes([stored_crc[0], stored_crc[1], stored_crc[2], stored_crc[3]]);
    if computed != stored {
        return Err(corrupt(
            path,
            format!("header checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"),
        ));
    }
    let mut reader = Reader {
        data: covered,
        at: 16,
    };
    let parsed = (|| {
        let index = reader.u64()?;
        let term = reader.u64()?;
        let image_len = reader.u64()?;
        let image_crc = reader.u32()?;
        Some((index, term, image_len, image_crc))
    })();
    let Some((index, term, image_len, image_crc)) = parsed else {
        return Err(corrupt(path, "truncated header"));
    };
    // The rest of the header, up to its checksum, is the membership (version 1: the voters).
    let rest = covered.get(reader.at..).unwrap_or_default();
    let membership = if version == 1 {
        read_v1_voters(rest)
    } else {
        Membership::decode(rest)
    }
    .map_err(|why| corrupt(path, format!("the header's membership: {why}")))?;
    let meta = SnapshotMeta::new(
        EntryId {
            term: Term(term),
            index: LogIndex(index),
        },
        membership,
    );
    let expected = (header_len as u64).checked_add(image_len);
    if expected != Some(file_len) {
        return Err(corrupt(
            path,
            format!(
                "{file_len} bytes long, but its header says {header_len} + {image_len} \
                 (truncated or damaged)"
            ),
        ));
    }
    Ok(Header {
        meta,
        header_len: header_len as u64,
        image_len,
        image_crc,
    })
}
