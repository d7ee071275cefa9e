//! Segment files: the log is a sequence of them, numbered from 1, each starting with a header
//! and holding records ([`super::record`]) after it.
//!
//! ```text
//! name: {sequence:020}.wal
//! | magic "RAFTWAL\0" | version: u32 LE | 0: u32 | sequence: u64 LE | crc: u32 LE | 0: u32 | records ...
//! ```
//!
//! `crc` is the CRC-32C of the 24 bytes before it. A segment is preallocated (filled with
//! zeros up to its capacity) before it is used, so appending overwrites allocated space and an
//! `fdatasync` has no file size to update; zeros after the records are where they end.

use super::fs::Open;
use super::log::{SPARE_FILE, Segment, Spare, Wal};
use super::meta::{FORMAT_VERSION, Reader};
use raft_core::node::StorageError;
use std::io;

/// Bytes of zeros written per step while preallocating a segment.
const FILL_STEP: u64 = 256 << 10;

/// Bytes of a segment's header; records start after it.
pub(crate) const HEADER_BYTES: u64 = 32;

const MAGIC: &[u8; 8] = b"RAFTWAL\0";

/// The file name of segment `sequence`.
pub(crate) fn name(sequence: u64) -> String {
    format!("{sequence:020}.wal")
}

/// The sequence number in a segment's file name, or `None` for any other name.
pub(crate) fn parse_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".wal")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The header of segment `sequence`.
pub(crate) fn header(sequence: u64) -> [u8; HEADER_BYTES as usize] {
    let mut out = [0u8; HEADER_BYTES as usize];
    out[..8].copy_from_slice(MAGIC);
    out[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    out[16..24].copy_from_slice(&sequence.to_le_bytes());
    let crc = crc32c::crc32c(&out[..24]);
    out[24..28].copy_from_slice(&crc.to_le_bytes());
    out
}

/// What is wrong with a segment's header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum HeaderError {
    /// Written by another version of the format.
    Version(u32),
    /// Not a segment header, or damaged.
    Corrupt(&'static str),
    /// A valid header of another segment than the file name says.
    Sequence(u64),
}

/// Checks the header at the start of `data` for segment `sequence`.
pub(crate) fn check_header(data: &[u8], sequence: u64) -> Result<(), HeaderError> {
    let header = data
        .get(..HEADER_BYTES as usize)
        .ok_or(HeaderError::Corrupt("shorter than a segment header"))?;
    if &header[..8] != MAGIC {
        return Err(HeaderError::Corrupt("not a segment header"));
    }
    let mut reader = Reader {
        data: header,
        at: 8,
    };
    let short = |_| HeaderError::Corrupt("short header");
    let version = reader.u32().map_err(short)?;
    let crc = u32::from_le_bytes([header[24], header[25], header[26], header[27]]);
    if crc32c::crc32c(&header[..24]) != crc {
        return Err(HeaderError::Corrupt("bad header checksum"));
    }
    if version != FORMAT_VERSION {
        return Err(HeaderError::Version(version));
    }
    reader.at = 16;
    let found = reader.u64().map_err(short)?;
    if found != sequence {
        return Err(HeaderError::Sequence(found));
    }
    Ok(())
}

impl Wal {
    /// Seals the current segment (everything in it durable) and starts the next.
    pub(super) fn roll_over(&mut self) -> Result<(), StorageError> {
        self.sync()?;
        self.open_next_segment()
    }

    /// Puts segment `current + 1` in place, from the prepared spare when it is ready, and
    /// makes it the one being written.
    pub(super) fn open_next_segment(&mut self) -> Result<(), StorageError> {
        let fs = self.fs;
        let sequence = self.current + 1;
        let path = self.dir.join(name(sequence));
        let spare_path = self.dir.join(SPARE_FILE);
        let mut filled = HEADER_BYTES;
        let result = (|| {
            let file = match self.spare.take() {
                Some(spare) if spare.ready && spare.sequence == sequence => {
                    filled = spare.filled;
                    spare.file
                }
                unready => {
                    drop(unready);
                    if fs.exists(&spare_path) {
                        fs.remove_file(&spare_path)?;
                    }
                    let file = fs.open(&spare_path, Open::CreateNew)?;
                    file.write_all_at(&header(sequence), 0)?;
                    file.sync_data()?;
                    file
                }
            };
            fs.rename(&spare_path, &path)?;
            fs.sync_dir(&self.dir)?;
            // Opened again under its new name: the simulated filesystem's handles follow
            // names, not files.
            drop(file);
            fs.open(&path, Open::Write)
        })();
        match result {
            Ok(file) => {
                self.segments.insert(sequence, Segment { file, path });
                self.current = sequence;
                self.current_filled = filled;
                self.staged_at = HEADER_BYTES;
                Ok(())
            }
            Err(error) => Err(self.poison(&path, error)),
        }
    }

    /// Whether preallocating has work left: the segment being written (when it was created
    /// without a spare), or the next one.
    pub(crate) fn wants_to_prepare(&self) -> bool {
        self.options.preallocate
            && self.poisoned.is_none()
            && (self.current_filled < self.capacity()
                || (!self.spare_failed && self.spare.as_ref().is_none_or(|s| !s.ready)))
    }

    fn capacity(&self) -> u64 {
        self.options.segment_bytes.max(HEADER_BYTES)
    }

    /// Does one step of preallocating, at most [`FILL_STEP`] bytes of zeros, synced: first the
    /// rest of the segment being written, then the next one. Called while no operation waits
    /// (so nothing is staged, and every record written is synced). A failure to prepare the
    /// next segment only means it is created when needed, without preallocation; a failure to
    /// write to the current one poisons the log like any failed write to it.
    pub(crate) fn prepare_step(&mut self) {
        if !self.wants_to_prepare() {
            return;
        }
        if self.current_filled < self.capacity() && self.staged.is_empty() && !self.unsynced {
            let from = self.current_filled.max(self.end());
            let step = FILL_STEP.min(self.capacity().saturating_sub(from));
            let result = self.current_segment().map(|segment| {
                let zeros = vec![0u8; step as usize];
                let written = segment.file.write_all_at(&zeros, from);
                (
                    written.and_then(|()| segment.file.sync_data()),
                    segment.path.clone(),
                )
            });
            match result {
                Ok((Ok(()), _)) => self.current_filled = from + step,
                Ok((Err(error), path)) => {
                    self.poison(&path, error);
                }
                Err(_) => self.current_filled = self.capacity(),
            }
            return;
        }
        if self.spare_failed {
            return;
        }
        let fs = self.fs;
        let path = self.dir.join(SPARE_FILE);
        let capacity = self.capacity();
        let sequence = self.current + 1;
        let result = (|| {
            let spare = match &mut self.spare {
                Some(spare) => spare,
                empty => {
                    if fs.exists(&path) {
                        fs.remove_file(&path)?;
                    }
                    let file = fs.open(&path, Open::CreateNew)?;
                    file.write_all_at(&header(sequence), 0)?;
                    empty.insert(Spare {
                        file,
                        sequence,
                        filled: HEADER_BYTES,
                        ready: false,
                    })
                }
            };
            if spare.filled < capacity {
                let step = FILL_STEP.min(capacity - spare.filled);
                let zeros = vec![0u8; step as usize];
                spare.file.write_all_at(&zeros, spare.filled)?;
                spare.filled += step;
            }
            if spare.filled >= capacity {
                spare.file.sync_data()?;
                spare.ready = true;
            }
            io::Result::Ok(())
        })();
        if let Err(error) = result {
            tracing::warn!(file = %path.display(), %error, "could not preallocate the next segment");
            self.spare = None;
            self.spare_failed = true;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // test code: a panic is the failure report
mod tests {
    use super::*;

    #[test]
    fn names_sort_by_sequence_and_parse_back() {
        let mut names: Vec<String> = [10, 2, 1, 300].into_iter().map(name).collect();
        names.sort();
        let parsed: Vec<u64> = names.iter().map(|n| parse_name(n).unwrap()).collect();
        assert_eq!(parsed, [1, 2, 10, 300]);
        for other in [
            "meta",
            "LOCK",
            "1.wal",
            "0000000000000000000a.wal",
            "spare.tmp",
        ] {
            assert_eq!(parse_name(other), None, "{other}");
        }
    }

    #[test]
    fn a_header_checks_only_for_its_own_segment_and_version() {
        let data = header(7);
        assert_eq!(check_header(&data, 7), Ok(()));
        assert_eq!(check_header(&data, 8), Err(HeaderError::Sequence(7)));
        assert!(check_header(&data[..20], 7).is_err());
        let mut other = data;
        other[8..12].copy_from_slice(&9u32.to_le_bytes());
        let crc = crc32c::crc32c(&other[..24]);
        other[24..28].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(check_header(&other, 7), Err(HeaderError::Version(9)));
        for byte in 0..28 {
            let mut flipped = data;
            flipped[byte] ^= 0x04;
            assert!(check_header(&flipped, 7).is_err(), "byte {byte}");
        }
    }
}
