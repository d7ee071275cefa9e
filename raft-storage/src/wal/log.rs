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
//! # Recovery
//!
//! Segments are read in order and their records replayed; where the records of a segment stop
//! is decided by the table in [`super::record`]. A missing segment between two present ones, a
//! segment with a damaged header, or entries missing between the log start and the first
//! entry replayed are corruption: the store refuses to open and names the file. A torn write
//! at the tail of the last segment is cut off and zeroed before anything else is written.
//! After a failed write or sync the store is *poisoned*: what the operating system kept is
//! unknown, so it refuses every later write until it is reopened from what is durable.

use super::fs::{File, Fs, Open, temporary_of};
use super::meta::{FORMAT_VERSION, Meta, MetaError};
use super::record::{self, Kind, Verdict};
use super::segment::{self, HeaderError};
use raft_core::node::{Recovered, StorageError};
use raft_core::{Entry, EntryData, EntryId, HardState, LogIndex, NodeId, Payload, Term};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io;
use std::path::{Path, PathBuf};

/// The name of the lock file.
pub(crate) const LOCK_FILE: &str = "LOCK";
/// The name of the metadata file.
pub(crate) const META_FILE: &str = "meta";
/// The name of the segment being preallocated.
pub(crate) const SPARE_FILE: &str = "spare.tmp";

/// Bytes of zeros written per step while preallocating a segment.
const FILL_STEP: u64 = 1 << 20;

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
struct Segment {
    file: File,
    path: PathBuf,
}

/// Where a held entry's record is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Position {
    sequence: u64,
    offset: u64,
    /// Bytes of the whole record, header included.
    len: u32,
    term: Term,
}

/// The next segment, being prepared while the log is idle.
#[derive(Debug)]
struct Spare {
    file: File,
    sequence: u64,
    /// Bytes written so far (header and zeros).
    filled: u64,
    /// Filled to capacity and synced.
    ready: bool,
}

/// The write-ahead log of one data directory.
#[derive(Debug)]
pub(crate) struct Wal {
    fs: Fs,
    dir: PathBuf,
    options: WalOptions,
    /// Holds the directory's lock for as long as the log is open.
    _lock: File,
    meta: Meta,
    /// Every segment kept, by sequence number; the last is being written.
    segments: BTreeMap<u64, Segment>,
    current: u64,
    /// Where the next staged record goes in the current segment.
    end: u64,
    /// Records staged and not written yet; they go at `staged_at` in the current segment.
    staged: Vec<u8>,
    staged_at: u64,
    /// Something was written to the current segment and not synced.
    unsynced: bool,
    /// The records of the entries held, from `meta.log_start.index + 1` on.
    positions: VecDeque<Position>,
    /// Why the log refuses writes, after a failed write or sync.
    poisoned: Option<String>,
    spare: Option<Spare>,
    /// Preparing a spare failed once: segments are then created when needed.
    spare_failed: bool,
    /// The entries read at open, handed out by the first [`Wal::recover`].
    recovered: Option<Vec<Entry>>,
    /// A reusable buffer for an entry's record body.
    body: Vec<u8>,
}

fn corrupt(path: &Path, offset: u64, what: impl std::fmt::Display) -> StorageError {
    StorageError::Corrupt(format!("{}, offset {offset}: {what}", path.display()))
}

fn io_at(path: &Path, error: io::Error) -> StorageError {
    StorageError::Io(io::Error::new(
        error.kind(),
        format!("{}: {error}", path.display()),
    ))
}

/// The body of an entry's record: index, term, payload kind, payload bytes.
fn encode_entry(entry: &Entry, out: &mut Vec<u8>) -> Result<(), StorageError> {
    out.clear();
    out.extend_from_slice(&entry.index.0.to_le_bytes());
    out.extend_from_slice(&entry.term.0.to_le_bytes());
    match &entry.payload {
        Payload::Blank => out.push(0),
        Payload::Command(data) => {
            out.push(1);
            out.extend_from_slice(data);
        }
        #[allow(unreachable_patterns)] // `Payload` may gain kinds this format does not have
        _ => {
            return Err(StorageError::Unavailable(format!(
                "entry {}: a payload kind this store cannot write",
                entry.index
            )));
        }
    }
    Ok(())
}

fn decode_entry(body: &[u8]) -> Option<Entry> {
    let index = LogIndex(u64::from_le_bytes(body.get(..8)?.try_into().ok()?));
    let term = Term(u64::from_le_bytes(body.get(8..16)?.try_into().ok()?));
    let payload = match *body.get(16)? {
        0 if body.len() == 17 => Payload::Blank,
        1 => Payload::Command(EntryData::from(&body[17..])),
        _ => return None,
    };
    Some(Entry {
        term,
        index,
        payload,
    })
}

fn decode_truncate(body: &[u8]) -> Option<LogIndex> {
    Some(LogIndex(u64::from_le_bytes(body.try_into().ok()?)))
}

/// The log being rebuilt from the records, in the order they were written.
#[derive(Default)]
struct Replay {
    positions: VecDeque<Position>,
    entries: VecDeque<Entry>,
}

impl Replay {
    fn first(&self) -> Option<LogIndex> {
        self.entries.front().map(|e| e.index)
    }

    /// Removes every entry at or after `from`.
    fn truncate(&mut self, from: LogIndex) {
        if let Some(first) = self.first() {
            let keep = usize::try_from(from.0.saturating_sub(first.0)).unwrap_or(usize::MAX);
            self.entries.truncate(keep);
            self.positions.truncate(keep);
        }
    }

    /// An entry record: it replaces everything at or after its index. An entry after a gap
    /// starts the log over (the prefix before it was purged; whether the gap is allowed is
    /// checked against the log start once every record is read).
    fn entry(&mut self, entry: Entry, position: Position) {
        let joins = self
            .entries
            .back()
            .is_some_and(|last| entry.index <= last.index.next());
        if joins {
            self.truncate(entry.index);
        } else {
            self.entries.clear();
            self.positions.clear();
        }
        self.entries.push_back(entry);
        self.positions.push_back(position);
    }
}

impl Wal {
    /// Opens (creating when empty) the log in `dir`, recovering what is durable.
    pub(crate) fn open(fs: Fs, dir: &Path, options: WalOptions) -> Result<Wal, StorageError> {
        fs.create_dir_all(dir).map_err(|e| io_at(dir, e))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = fs
            .open(&lock_path, Open::CreateOrKeep)
            .map_err(|e| io_at(&lock_path, e))?;
        fs.try_lock(&lock).map_err(|e| io_at(dir, e))?;

        let names = fs.list(dir).map_err(|e| io_at(dir, e))?;
        let meta_path = dir.join(META_FILE);
        for leftover in [temporary_of(&meta_path), dir.join(SPARE_FILE)] {
            if fs.exists(&leftover) {
                fs.remove_file(&leftover).map_err(|e| io_at(&leftover, e))?;
            }
        }
        let sequences: Vec<u64> = names
            .iter()
            .filter_map(|n| segment::parse_name(n))
            .collect();
        let meta = if fs.exists(&meta_path) {
            let data = fs.read(&meta_path).map_err(|e| io_at(&meta_path, e))?;
            Meta::decode(&data).map_err(|error| match error {
                MetaError::Version(version) => corrupt(
                    &meta_path,
                    8,
                    format_args!(
                        "format version {version}; this build reads version {FORMAT_VERSION}"
                    ),
                ),
                MetaError::Corrupt(what) => corrupt(&meta_path, 0, what),
            })?
        } else if let Some(&first) = sequences.first() {
            return Err(corrupt(
                &dir.join(segment::name(first)),
                0,
                "segments without the metadata file",
            ));
        } else {
            let meta = Meta::default();
            fs.replace(&meta_path, &meta.encode())
                .map_err(|e| io_at(&meta_path, e))?;
            meta
        };
        for pair in sequences.windows(2) {
            if pair[1] != pair[0] + 1 {
                return Err(corrupt(
                    &dir.join(segment::name(pair[0] + 1)),
                    0,
                    format_args!(
                        "segment missing between {} and {}",
                        segment::name(pair[0]),
                        segment::name(pair[1])
                    ),
                ));
            }
        }

        let mut wal = Wal {
            fs,
            dir: dir.to_path_buf(),
            options,
            _lock: lock,
            meta,
            segments: BTreeMap::new(),
            current: 0,
            end: segment::HEADER_BYTES,
            staged: Vec::new(),
            staged_at: segment::HEADER_BYTES,
            unsynced: false,
            positions: VecDeque::new(),
            poisoned: None,
            spare: None,
            spare_failed: false,
            recovered: None,
            body: Vec::new(),
        };
        let mut replay = Replay::default();
        for (i, &sequence) in sequences.iter().enumerate() {
            let last = i + 1 == sequences.len();
            wal.replay_segment(sequence, last, &mut replay)?;
        }
        if sequences.is_empty() {
            wal.current = 0;
            wal.open_next_segment()?;
        }
        wal.finish_recovery(replay)?;
        wal.collect_garbage();
        Ok(wal)
    }

    /// Reads segment `sequence`, replays its records, and when it is the last one makes it
    /// the segment being written (cutting off a torn write at its tail).
    fn replay_segment(
        &mut self,
        sequence: u64,
        last: bool,
        replay: &mut Replay,
    ) -> Result<(), StorageError> {
        let fs = self.fs;
        let path = self.dir.join(segment::name(sequence));
        let file = fs.open(&path, Open::Write).map_err(|e| io_at(&path, e))?;
        let data = file.read_all().map_err(|e| io_at(&path, e))?;
        segment::check_header(&data, sequence).map_err(|error| match error {
            HeaderError::Version(version) => corrupt(
                &path,
                8,
                format_args!("format version {version}; this build reads version {FORMAT_VERSION}"),
            ),
            HeaderError::Corrupt(what) => corrupt(&path, 0, what),
            HeaderError::Sequence(found) => {
                corrupt(&path, 16, format_args!("the header of segment {found}"))
            }
        })?;
        let start = segment::HEADER_BYTES as usize;
        let records = &data[start..];
        let scan = record::scan(records, last);
        for record in &scan.records {
            let offset = (start + record.offset) as u64;
            let len = (record::HEADER_BYTES + record.body.len()) as u32;
            match record.kind {
                Kind::Entry => {
                    let entry = decode_entry(record.body).ok_or_else(|| {
                        corrupt(&path, offset, "an entry record that does not decode")
                    })?;
                    let position = Position {
                        sequence,
                        offset,
                        len,
                        term: entry.term,
                    };
                    replay.entry(entry, position);
                }
                Kind::Truncate => {
                    let from = decode_truncate(record.body).ok_or_else(|| {
                        corrupt(&path, offset, "a truncation record that does not decode")
                    })?;
                    replay.truncate(from);
                }
            }
        }
        let end = match scan.stop {
            None => data.len(),
            Some((at, _, Verdict::End)) => start + at,
            Some((at, finding, Verdict::Cut)) => {
                let cut = start + at;
                tracing::warn!(
                    file = %path.display(),
                    offset = cut,
                    ?finding,
                    "cutting off a torn write at the end of the log"
                );
                // Zero what the torn write left, so nothing of it can be read as a record
                // once new records are written over the start of it.
                let dirty_end = data.iter().rposition(|&b| b != 0).map_or(cut, |p| p + 1);
                if dirty_end > cut {
                    let zeros = vec![0u8; dirty_end - cut];
                    file.write_all_at(&zeros, cut as u64)
                        .and_then(|()| file.sync_data())
                        .map_err(|e| io_at(&path, e))?;
                }
                cut
            }
            Some((at, finding, Verdict::Corrupt)) => {
                return Err(corrupt(
                    &path,
                    (start + at) as u64,
                    format_args!("{finding:?}"),
                ));
            }
        };
        if last {
            self.current = sequence;
            self.end = end as u64;
            self.staged_at = end as u64;
        }
        self.segments.insert(sequence, Segment { file, path });
        Ok(())
    }

    /// Applies the log start to what was replayed and keeps the result.
    fn finish_recovery(&mut self, mut replay: Replay) -> Result<(), StorageError> {
        let start = self.meta.log_start.index;
        while replay.first().is_some_and(|first| first <= start) {
            replay.entries.pop_front();
            replay.positions.pop_front();
        }
        if let Some(first) = replay.first()
            && first != start.next()
        {
            let sequence = replay.positions.front().map_or(0, |p| p.sequence);
            return Err(corrupt(
                &self.dir.join(segment::name(sequence)),
                0,
                format_args!(
                    "the log starts after {start} but the first entry found is {first}: entries are missing"
                ),
            ));
        }
        self.positions = replay.positions;
        self.recovered = Some(replay.entries.into());
        Ok(())
    }

    fn first(&self) -> LogIndex {
        self.meta.log_start.index.next()
    }

    fn last(&self) -> LogIndex {
        LogIndex(self.meta.log_start.index.0 + self.positions.len() as u64)
    }

    fn check_poisoned(&self) -> Result<(), StorageError> {
        match &self.poisoned {
            Some(reason) => Err(StorageError::Poisoned(reason.clone())),
            None => Ok(()),
        }
    }

    /// Poisons the log after a failed write or sync and returns the error.
    fn poison(&mut self, path: &Path, error: io::Error) -> StorageError {
        let error = io_at(path, error);
        tracing::error!(%error, "write-ahead log poisoned: it refuses writes until reopened");
        self.poisoned = Some(error.to_string());
        error
    }

    fn current_segment(&self) -> Result<&Segment, StorageError> {
        self.segments
            .get(&self.current)
            .ok_or_else(|| StorageError::Poisoned(format!("segment {} is not open", self.current)))
    }

    /// Writes what is staged (not yet durable).
    fn flush(&mut self) -> Result<(), StorageError> {
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

    /// Seals the current segment (everything in it durable) and starts the next.
    fn roll_over(&mut self) -> Result<(), StorageError> {
        self.sync()?;
        self.open_next_segment()
    }

    /// Puts segment `current + 1` in place, from the prepared spare when it is ready, and
    /// makes it the one being written.
    fn open_next_segment(&mut self) -> Result<(), StorageError> {
        let fs = self.fs;
        let sequence = self.current + 1;
        let path = self.dir.join(segment::name(sequence));
        let spare_path = self.dir.join(SPARE_FILE);
        let result = (|| {
            let file = match self.spare.take() {
                Some(spare) if spare.ready && spare.sequence == sequence => spare.file,
                unready => {
                    drop(unready);
                    if fs.exists(&spare_path) {
                        fs.remove_file(&spare_path)?;
                    }
                    let file = fs.open(&spare_path, Open::CreateNew)?;
                    file.write_all_at(&segment::header(sequence), 0)?;
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
                self.end = segment::HEADER_BYTES;
                self.staged_at = segment::HEADER_BYTES;
                Ok(())
            }
            Err(error) => Err(self.poison(&path, error)),
        }
    }

    /// Stages one record, rolling over to a new segment when it does not fit; returns where
    /// it goes.
    fn stage(&mut self, kind: Kind, body: &[u8]) -> Result<(u64, u32), StorageError> {
        let len = (record::HEADER_BYTES + body.len()) as u64;
        if self.end + len > self.options.segment_bytes && self.end > segment::HEADER_BYTES {
            self.roll_over()?;
        }
        let offset = self.end;
        record::encode(kind, body, &mut self.staged).map_err(|record::TooLarge(bytes)| {
            StorageError::Unavailable(format!(
                "a record of {bytes} bytes is larger than a record may be"
            ))
        })?;
        self.end += len;
        Ok((offset, len as u32))
    }

    /// Replaces the metadata file, after making durable everything staged before it.
    fn write_meta(&mut self, meta: Meta) -> Result<(), StorageError> {
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
        let mut body = std::mem::take(&mut self.body);
        let result = (|| {
            for entry in entries {
                encode_entry(entry, &mut body)?;
                let (offset, len) = self.stage(Kind::Entry, &body)?;
                self.positions.push_back(Position {
                    sequence: self.current,
                    offset,
                    len,
                    term: entry.term,
                });
            }
            Ok(())
        })();
        self.body = body;
        result
    }

    fn truncate_positions(&mut self, from: LogIndex) {
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

    fn position(&self, index: LogIndex) -> Option<Position> {
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
        Ok(recovered)
    }

    /// Deletes the segments before the one holding the first entry (never the current one).
    /// A segment that cannot be deleted now is tried again at the next purge or open.
    fn collect_garbage(&mut self) {
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

    /// Whether preallocating the next segment has work left.
    pub(crate) fn wants_to_prepare(&self) -> bool {
        self.options.preallocate
            && !self.spare_failed
            && self.poisoned.is_none()
            && self.spare.as_ref().is_none_or(|s| !s.ready)
    }

    /// Does one step of preallocating the next segment: at most [`FILL_STEP`] bytes of zeros.
    /// Called while no operation waits. A failure only means the next segment is created
    /// when it is needed, without preallocation.
    pub(crate) fn prepare_step(&mut self) {
        if !self.wants_to_prepare() {
            return;
        }
        let fs = self.fs;
        let path = self.dir.join(SPARE_FILE);
        let capacity = self.options.segment_bytes.max(segment::HEADER_BYTES);
        let sequence = self.current + 1;
        let result = (|| {
            let spare = match &mut self.spare {
                Some(spare) => spare,
                empty => {
                    if fs.exists(&path) {
                        fs.remove_file(&path)?;
                    }
                    let file = fs.open(&path, Open::CreateNew)?;
                    file.write_all_at(&segment::header(sequence), 0)?;
                    empty.insert(Spare {
                        file,
                        sequence,
                        filled: segment::HEADER_BYTES,
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

    /// The files this log has open, for tests: the segments' sequence numbers.
    #[cfg(test)]
    pub(crate) fn segment_numbers(&self) -> Vec<u64> {
        self.segments.keys().copied().collect()
    }
}
