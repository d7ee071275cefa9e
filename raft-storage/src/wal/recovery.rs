//! Opening a log: reading the segments in order and replaying their records.
//!
//! Segments are read in order and their records replayed; where the records of a segment stop
//! is decided by the table in [`super::record`]. A missing segment between two present ones, a
//! segment with a damaged header, or entries missing between the log start and the first
//! entry replayed are corruption: the store refuses to open and names the file. A torn write
//! at the tail of the last segment is cut off and zeroed before anything else is written.
//! What was read is then made durable (the directory, and the last segment with its cut):
//! after a process restart, the page cache may still hold writes of the dead process that
//! were never synced, and they must not be trusted, nor written after, while a power loss
//! can still take them back.
//! After a failed write or sync the store is *poisoned*: what the operating system kept is
//! unknown, so it refuses every later write until it is reopened from what is durable.

use super::fs::{Fs, Open, temporary_of};
use super::log::{
    META_FILE, Position, SPARE_FILE, Segment, Wal, WalOptions, corrupt, decode_entry,
    decode_truncate, io_at,
};
use super::meta::{FORMAT_VERSION, Meta, MetaError};
use super::record::{self, Kind, Verdict};
use super::segment::{self, HeaderError};
use raft_core::node::StorageError;
use raft_core::{Entry, LogIndex};
use std::collections::{BTreeMap, VecDeque};
use std::path::Path;

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
        fs.create_dir_durably(dir).map_err(|e| io_at(dir, e))?;
        let lock = fs.lock_dir(dir).map_err(|e| io_at(dir, e))?;

        let names = fs.list(dir).map_err(|e| io_at(dir, e))?;
        let meta_path = dir.join(META_FILE);
        for leftover in [temporary_of(&meta_path), dir.join(SPARE_FILE)] {
            if fs.exists(&leftover) {
                fs.remove_file(&leftover).map_err(|e| io_at(&leftover, e))?;
            }
        }
        // The entries listed (segments, the metadata file) may be renames or removals of a
        // process that died before syncing the directory: make them durable before they
        // are relied on, as the segment being written is below.
        fs.sync_dir(dir).map_err(|e| io_at(dir, e))?;
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
            current_filled: 0,
            staged: Vec::new(),
            staged_at: segment::HEADER_BYTES,
            unsynced: false,
            positions: VecDeque::new(),
            poisoned: None,
            spare: None,
            spare_failed: false,
            recovered: None,
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
                // (Synced below with the rest of the segment.)
                let dirty_end = data.iter().rposition(|&b| b != 0).map_or(cut, |p| p + 1);
                if dirty_end > cut {
                    let zeros = vec![0u8; dirty_end - cut];
                    file.write_all_at(&zeros, cut as u64)
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
            // What was read may be only in the page cache: written by a process that died
            // before its sync (a process restart keeps it, a power loss need not). It is the
            // log from now on, so it must be durable before it is used: otherwise a power
            // loss could take it back after entries written behind it are kept, leaving a
            // hole before valid records, and entries already reported as recovered.
            file.sync_data().map_err(|e| io_at(&path, e))?;
            self.current = sequence;
            self.current_filled = data.len() as u64;
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
}
