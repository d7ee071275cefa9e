//! The image file's header: its format, encoding it, and reading it back with every check
//! (magic, version, CRC, lengths) before anything in it is trusted.

use super::{corrupt, io_at};
use crate::wal::fs::File;
use raft_core::node::StorageError;
use raft_core::{EntryId, LogIndex, Membership, SnapshotMeta, Term};
use std::path::Path;

/// The first bytes of an image file.
const MAGIC: &[u8; 8] = b"RAFTSNAP";

/// The version of the image file format this code writes and reads; any other is refused.
/// (Version 1 listed the voters only; version 2 holds the whole membership.)
const FORMAT_VERSION: u32 = 2;

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
    if version != FORMAT_VERSION {
        return Err(corrupt(
            path,
            format!("format version {version}, but this code reads only version {FORMAT_VERSION}"),
        ));
    }
    let header_len = header_len as usize;
    if header_len <= FIXED_HEADER_BYTES || header_len > FIXED_HEADER_BYTES + MAX_MEMBERSHIP_BYTES {
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
    // The rest of the header, up to its checksum, is the membership.
    let membership = covered
        .get(reader.at..)
        .map(Membership::decode)
        .unwrap_or_else(|| Err("missing".to_string()))
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
