//! The write-ahead log itself: synchronous, owned by one thread (the store's writer thread, or
//! the simulation's thread under turmoil), built on the record, segment and metadata layers.
//!
//! # The data directory
//!
//! ```text
//! LOCK                       held (flock) while a store has the directory open
//! meta                       format version, hard state, voters, log start; replaced atomically
//! 00000000000000000001.wal   segments, numbered without gaps from the oldest kept
//! 00000000000000000002.wal   the last one is being written
//! spare.tmp                  the next segment, being preallocated (deleted at open)
//! ```
//!
//! # Writing
//!
//! Operations *stage* records in a buffer; [`Wal::sync`] writes the buffer with one write and
//! makes it durable with one `fdatasync`. The store runs every operation that is waiting and
//! then syncs once (group commit), and answers none of them before that sync. Entries are
//! records of their own; a write that replaces a suffix needs no extra record, because
//! replaying an entry at index `i` removes everything at or after `i` first; a suffix
//! truncation is a `Truncate` record. The metadata file is replaced (temporary file, fsync,
//! rename, fsync of the directory) only when the hard state, the voters or the log start
//! change, after syncing what was staged before it, so the order of operations is the order on
//! disk. A segment is sealed only once everything in it is durable, and the next one is then
//! renamed into place and the directory synced: damage in a sealed segment is therefore never
//! a torn write, and recovery treats it as corruption.
//!
//! # Purging
//!
//! Purging a prefix records the new start in the metadata file, then deletes every segment
//! that holds no entry after it. When the entry at the purge point differs from the one given
//! (a snapshot from the leader replaced a diverged log), a `Truncate` record removing every
//! entry is made durable first. A crash between the two steps leaves segments that the next
//! open deletes.
//!
//! Recovery is in [`super::recovery`], preallocation and rollover in [`super::segment`].

use super::fs::{File, Fs};
use super::meta::Meta;
use super::record::{self, Kind};
use super::segment;
use raft_core::node::{Failover, Recovered, StorageError};
use raft_core::{
    Entry, EntryData, EntryId, HardState, LogIndex, Membership, NodeId, Payload, SharedMembership,
    Term,
};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io;
use std::path::{Path, PathBuf};

/// The name of the metadata file.
pub(crate) const META_FILE: &str = "meta";
/// The name of the segment being preallocated.
pub(crate) const SPARE_FILE: &str = "spare.tmp";

/// How a log is laid out on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct WalOptions {
    /// Bytes a segment may hold before the next record goes to a new one (a record larger
    /// than this has a segment to itself).
    pub(crate) segment_bytes: u64,
    /// Whether segments are filled with zeros before they are used.
    pub(crate) preallocate: bool,
}

/// An open segment.
#[derive(Debug)]
pub(super) struct Segment {
    pub(super) file: File,
    pub(super) path: PathBuf,
}

/// Where a held entry's record is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Position {
    pub(super) sequence: u64,
    pub(super) offset: u64,
    /// Bytes of the whole record, header included.
    pub(super) len: u32,
    pub(super) term: Term,
}

/// The next segment, being prepared while the log is idle.
#[derive(Debug)]
pub(super) struct Spare {
    pub(super) file: File,
    pub(super) sequence: u64,
    /// Bytes written so far (header and zeros).
    pub(super) filled: u64,
    /// Filled to capacity and synced.
    pub(super) ready: bool,
}

/// The write-ahead log of one data directory.
#[derive(Debug)]
pub(crate) struct Wal {
    pub(super) fs: Fs,
    pub(super) dir: PathBuf,
    pub(super) options: WalOptions,
    /// Holds the directory's lock for as long as the log is open.
    pub(super) _lock: File,
    pub(super) meta: Meta,
    /// Every segment kept, by sequence number; the last is being written.
    pub(super) segments: BTreeMap<u64, Segment>,
    pub(super) current: u64,
    /// Bytes of the current segment known to be allocated (written and synced, zeros or
    /// records); preallocation fills it up to the segment's capacity.
    pub(super) current_filled: u64,
    /// Records staged and not written yet; they go at `staged_at` in the current segment.
    pub(super) staged: Vec<u8>,
    pub(super) staged_at: u64,
    /// Something was written to the current segment and not synced.
    pub(super) unsynced: bool,
    /// The records of the entries held, from `meta.log_start.index + 1` on.
    pub(super) positions: VecDeque<Position>,
    /// Why the log refuses writes, after a failed write or sync.
    pub(super) poisoned: Option<String>,
    pub(super) spare: Option<Spare>,
    /// Preparing a spare failed once: segments are then created when needed.
    pub(super) spare_failed: bool,
    /// The entries read at open, handed out by the first [`Wal::recover`].
    pub(super) recovered: Option<Vec<Entry>>,
}

pub(super) fn corrupt(path: &Path, offset: u64, what: impl std::fmt::Display) -> StorageError {
    StorageError::Corrupt(format!("{}, offset {offset}: {what}", path.display()))
}

pub(super) fn io_at(path: &Path, error: io::Error) -> StorageError {
    StorageError::Io(io::Error::new(
        error.kind(),
        format!("{}: {error}", path.display()),
    ))
}

/// Bytes of an entry record's body before its payload: index, term, payload kind.
const ENTRY_PREFIX_BYTES: usize = 17;

/// The payload kind byte and payload bytes of an entry's record (body: index, term, payload
/// kind, payload bytes), or why this format cannot hold it.
fn payload_of(entry: &Entry) -> Result<(u8, Cow<'_, [u8]>), StorageError> {
    match &entry.payload {
        Payload::Blank => Ok((0, Cow::Borrowed(&[]))),
        Payload::Command(data) => Ok((1, Cow::Borrowed(data))),
        Payload::Membership(membership) => Ok((2, Cow::Owned(membership.encode()))),
        #[allow(unreachable_patterns)] // `Payload` may gain kinds this format does not have
        _ => Err(StorageError::Unavailable(format!(
            "entry {}: a payload kind this store cannot write",
            entry.index
        ))),
    }
}

/// The entry an entry record's body holds (laid out as [`payload_of`] says), or `None` when
/// the body does not decode.
pub(super) fn decode_entry(body: &[u8]) -> Option<Entry> {
    let index = LogIndex(u64::from_le_bytes(body.get(..8)?.try_into().ok()?));
    let term = Term(u64::from_le_bytes(body.get(8..16)?.try_into().ok()?));
    let payload = match *body.get(16)? {
        0 if body.len() == 17 => Payload::Blank,
        1 => Payload::Command(EntryData::from(&body[17..])),
        2 => Payload::Membership(SharedMembership::new(Membership::decode(&body[17..]).ok()?)),
        _ => return None,
    };
    Some(Entry {
        term,
        index,
        payload,
    })
}

pub(super) fn decode_truncate(body: &[u8]) -> Option<LogIndex> {
    Some(LogIndex(u64::from_le_bytes(body.try_into().ok()?)))
}

impl Wal {
    pub(super) fn first(&self) -> LogIndex {
        self.meta.log_start.index.next()
    }

    pub(super) fn last(&self) -> LogIndex {
        LogIndex(self.meta.log_start.index.0 + self.positions.len() as u64)
    }

    /// Where the next staged record goes in the current segment: after what is written and
    /// what is staged.
    pub(super) fn end(&self) -> u64 {
        self.staged_at + self.staged.len() as u64
    }

    pub(super) fn check_poisoned(&self) -> Result<(), StorageError> {
        match &self.poisoned {
            Some(reason) => Err(StorageError::Poisoned(reason.clone())),
            None => Ok(()),
        }
    }

    /// Poisons the log after a failed write or sync and returns the error.
    pub(super) fn poison(&mut self, path: &Path, error: io::Error) -> StorageError {
        let error = io_at(path, error);
        tracing::error!(%error, "write-ahead log poisoned: it refuses writes until reopened");
        self.poisoned = Some(error.to_string());
        error
    }

    pub(super) fn current_segment(&self) -> Result<&Segment, StorageError> {
        self.segments
            .get(&self.current)
            .ok_or_else(|| StorageError::Poisoned(format!("segment {} is not open", self.current)))
    }

    /// Writes what is staged (not yet durable).
    pub(crate) fn flush(&mut self) -> Result<(), StorageError> {
        if self.staged.is_empty() {
            return Ok(());
        }
        let segment = self.current_segment()?;
        let result = segment.file.write_all_at(&self.staged, self.staged_at);
        let path = segment.path.clone();
        match result {
            Ok(()) => {
                self.staged_at += self.staged.len() as u64;
                self.staged.clear();
                self.unsynced = true;
                Ok(())
            }
            Err(error) => Err(self.poison(&path, error)),
        }
    }

    /// Makes everything staged or written durable: one write, one `fdatasync`.
    pub(crate) fn sync(&mut self) -> Result<(), StorageError> {
        self.check_poisoned()?;
        self.flush()?;
        if self.unsynced {
            let segment = self.current_segment()?;
            let result = segment.file.sync_data();
            let path = segment.path.clone();
            if let Err(error) = result {
                return Err(self.poison(&path, error));
            }
            self.unsynced = false;
        }
        Ok(())
    }

    /// Stages one record, rolling over to a new segment when it does not fit; returns where
    /// it goes.
    pub(super) fn stage(&mut self, kind: Kind, body: &[u8]) -> Result<(u64, u32), StorageError> {
        self.stage_with(kind, body.len(), |out| out.extend_from_slice(body))
    }

    /// [`Wal::stage`] for a body of `body_len` bytes that `write_body` writes in place.
    fn stage_with(
        &mut self,
        kind: Kind,
        body_len: usize,
        write_body: impl FnOnce(&mut Vec<u8>),
    ) -> Result<(u64, u32), StorageError> {
        let len = (record::HEADER_BYTES + body_len) as u64;
        let end = self.end();
        if end + len > self.options.segment_bytes && end > segment::HEADER_BYTES {
            self.roll_over()?;
        }
        let offset = self.end();
        record::encode_with(kind, body_len, &mut self.staged, write_body).map_err(
            |record::TooLarge(bytes)| {
                StorageError::Unavailable(format!(
                    "a record of {bytes} bytes is larger than a record may be"
                ))
            },
        )?;
        Ok((offset, len as u32))
    }

    /// Replaces the metadata file, after making durable everything staged before it.
    pub(super) fn write_meta(&mut self, meta: Meta) -> Result<(), StorageError> {
        self.sync()?;
        let path = self.dir.join(META_FILE);
        if let Err(error) = self.fs.replace(&path, &meta.encode()) {
            return Err(self.poison(&path, error));
        }
        self.meta = meta;
        Ok(())
    }

    /// Stages `entries` after storing `hard_state` (see [`raft_core::node::LogStore::write`]).
    /// Durable once [`Wal::sync`] returns.
    pub(crate) fn write(
        &mut self,
        hard_state: Option<HardState>,
        entries: &[Entry],
    ) -> Result<(), StorageError> {
        self.check_poisoned()?;
        if let Some(first) = entries.first() {
            if first.index > self.last().next() || first.index < self.first() {
                return Err(StorageError::Unavailable(format!(
                    "write at {} does not join the log {}..={}",
                    first.index,
                    self.first(),
                    self.last()
                )));
            }
            if entries.windows(2).any(|w| w[1].index != w[0].index.next()) {
                return Err(StorageError::Corrupt("entries are not contiguous".into()));
            }
            for entry in entries {
                payload_of(entry)?;
            }
        }
        if let Some(hard_state) = hard_state
            && hard_state != self.meta.hard_state
        {
            let meta = Meta {
                hard_state,
                ..self.meta.clone()
            };
            self.write_meta(meta)?;
        }
        let Some(first) = entries.first() else {
            return Ok(());
        };
        self.truncate_positions(first.index);
        for entry in entries {
            let (kind, payload) = payload_of(entry)?;
            let (offset, len) =
                self.stage_with(Kind::Entry, ENTRY_PREFIX_BYTES + payload.len(), |out| {
                    out.extend_from_slice(&entry.index.0.to_le_bytes());
                    out.extend_from_slice(&entry.term.0.to_le_bytes());
                    out.push(kind);
                    out.extend_from_slice(&payload);
                })?;
            self.positions.push_back(Position {
                sequence: self.current,
                offset,
                len,
                term: entry.term,
            });
        }
        Ok(())
    }

    pub(super) fn truncate_positions(&mut self, from: LogIndex) {
        let keep = usize::try_from(from.0.saturating_sub(self.first().0)).unwrap_or(usize::MAX);
        self.positions.truncate(keep);
    }

    /// Removes every entry at or after `from`. Durable once [`Wal::sync`] returns.
    pub(crate) fn truncate_suffix(&mut self, from: LogIndex) -> Result<(), StorageError> {
        self.check_poisoned()?;
        if from > self.last() {
            return Ok(());
        }
        let from = from.max(self.first());
        self.stage(Kind::Truncate, &from.0.to_le_bytes())?;
        self.truncate_positions(from);
        Ok(())
    }

    /// Makes the log start after `up_to` (see [`raft_core::node::LogStore::purge_prefix`]),
    /// and deletes the segments that no longer hold an entry.
    pub(crate) fn purge_prefix(&mut self, up_to: EntryId) -> Result<(), StorageError> {
        self.check_poisoned()?;
        if up_to.index < self.first() {
            return Ok(());
        }
        let held = self.position(up_to.index).map(|p| p.term);
        if held != Some(up_to.term) {
            if !self.positions.is_empty() {
                let first = self.first();
                self.stage(Kind::Truncate, &first.0.to_le_bytes())?;
                self.positions.clear();
            }
        } else {
            let drop =
                usize::try_from(up_to.index.0 - self.meta.log_start.index.0).unwrap_or(usize::MAX);
            self.positions.drain(..drop.min(self.positions.len()));
        }
        let meta = Meta {
            log_start: up_to,
            ..self.meta.clone()
        };
        self.write_meta(meta)?;
        self.collect_garbage();
        Ok(())
    }

    /// Durably records the voters.
    pub(crate) fn save_voters(&mut self, voters: &BTreeSet<NodeId>) -> Result<(), StorageError> {
        self.check_poisoned()?;
        let meta = Meta {
            voters: Some(voters.clone()),
            ..self.meta.clone()
        };
        self.write_meta(meta)
    }

    /// Durably records the history of leadership changes.
    pub(crate) fn save_failovers(&mut self, history: &[Failover]) -> Result<(), StorageError> {
        self.check_poisoned()?;
        let meta = Meta {
            failovers: history.to_vec(),
            ..self.meta.clone()
        };
        self.write_meta(meta)
    }

    pub(super) fn position(&self, index: LogIndex) -> Option<Position> {
        let at = index.0.checked_sub(self.first().0)?;
        self.positions.get(usize::try_from(at).ok()?).copied()
    }

    /// Entries `from..=to` that are held.
    pub(crate) fn read(
        &mut self,
        from: LogIndex,
        to: LogIndex,
    ) -> Result<Vec<Entry>, StorageError> {
        if from < self.first() {
            return Err(StorageError::Unavailable(format!(
                "{from} was purged; the log starts at {}",
                self.first()
            )));
        }
        // What is staged must be in the file to be read back.
        if !self.staged.is_empty() {
            self.check_poisoned()?;
            self.flush()?;
        }
        let mut entries = Vec::new();
        let mut index = from;
        let mut buffer = Vec::new();
        while index <= to.min(self.last()) {
            let Some(position) = self.position(index) else {
                break;
            };
            let segment = self.segments.get(&position.sequence).ok_or_else(|| {
                StorageError::Unavailable(format!("segment {} is not open", position.sequence))
            })?;
            buffer.resize(position.len as usize, 0);
            let read = segment
                .file
                .read_at(&mut buffer, position.offset)
                .map_err(|e| io_at(&segment.path, e))?;
            let scan = record::scan(&buffer[..read], false);
            let entry = match (scan.records.first(), scan.stop) {
                (Some(record), None) if record.kind == Kind::Entry => decode_entry(record.body),
                _ => None,
            }
            .filter(|entry| entry.index == index)
            .ok_or_else(|| {
                corrupt(
                    &segment.path,
                    position.offset,
                    "the record of entry no longer reads back",
                )
            })?;
            entries.push(entry);
            index = index.next();
        }
        Ok(entries)
    }

    /// Everything held, for a restart of the node.
    pub(crate) fn recover(&mut self) -> Result<Recovered, StorageError> {
        let entries = match self.recovered.take() {
            Some(entries) => entries,
            None => self.read(self.first(), self.last())?,
        };
        let mut recovered = Recovered::new(self.meta.hard_state, entries, self.meta.voters.clone());
        recovered.log_start = self.meta.log_start;
        recovered.failovers = self.meta.failovers.clone();
        Ok(recovered)
    }

    /// Deletes the segments before the one holding the first entry (never the current one).
    /// A segment that cannot be deleted now is tried again at the next purge or open.
    pub(super) fn collect_garbage(&mut self) {
        let keep_from = self
            .positions
            .front()
            .map_or(self.current, |p| p.sequence)
            .min(self.current);
        let old: Vec<u64> = self.segments.range(..keep_from).map(|(&s, _)| s).collect();
        for sequence in old {
            let Some(segment) = self.segments.remove(&sequence) else {
                continue;
            };
            if let Err(error) = self.fs.remove_file(&segment.path) {
                tracing::warn!(file = %segment.path.display(), %error, "could not delete a purged segment");
                self.segments.insert(sequence, segment);
                break;
            }
        }
    }
}
