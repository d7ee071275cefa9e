//! The durable snapshot store: one file per image in a directory.
//!
//! # Layout
//!
//! ```text
//! dir/LOCK                                               held while the store is open
//! dir/snapshot-{index:020}-{term:020}.snap               a complete image (normally one)
//! dir/snapshot-{index:020}-{term:020}-{pid}-{n}.partial  an image being written
//! ```
//!
//! An image file is a header followed by the image's bytes:
//!
//! ```text
//! | magic "RAFTSNAP" | version: u32 | header length: u32 | last index: u64 | last term: u64 |
//! | image length: u64 | image crc: u32 | voter count: u32 | voter ids: u64 ... |
//! | header crc: u32 | image: `image length` bytes |
//! ```
//!
//! All integers little-endian. The header CRC is the CRC-32C of every header byte before it; the
//! image CRC is the CRC-32C of the image. The name only finds the files; the header is what is
//! trusted, and a header that disagrees with its name is refused. The header is checked when
//! the store is opened (magic, version, CRC, and the file's length against the lengths it
//! gives); the image CRC when the image is read from its start to its end, so a reader that
//! restores from it sees a damaged image as [`StorageError::Corrupt`] at its last chunk.
//!
//! # Crash safety
//!
//! An image is written to its own `.partial` file, which no reader ever looks at. `finish`
//! writes the header, fsyncs the file, renames it to its `.snap` name and fsyncs the directory:
//! the rename is atomic, and the data was durable before the name appeared, so after a crash
//! the directory holds either the complete new image or no trace of it but a `.partial` file.
//! Opening deletes `.partial` files. Only once the rename is durable is the older image
//! removed; a crash in between leaves two complete images, and opening keeps the one with the
//! highest last index and removes the rest. Opening syncs the directory before it reports or
//! removes anything: after a process restart, the page cache may still show a rename that the
//! dead process never made durable (it died between the rename and the directory's sync), and
//! the image it put in place must not be relied on (restored from, the log purged up to it)
//! while a power loss can still take it back. So a crash never leaves the store without the
//! latest image it acknowledged or reported, nor with a torn one.
//!
//! # Modules
//!
//! This module holds the store and its reads; `header` the image file's header, `names` the
//! names of the files in the directory, `open` opening and recovery, `writer` the writing and
//! finishing of an image.

mod header;
mod names;
mod open;
#[cfg(test)]
mod tests;
mod writer;

use crate::wal::fs::{File, Fs};
use async_trait::async_trait;
use bytes::Bytes;
use header::{Header, MAX_MEMBERSHIP_BYTES};
use raft_core::SnapshotMeta;
use raft_core::node::{SnapshotChunk, SnapshotStore, SnapshotWriter, StorageError};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use writer::FileSnapshotWriter;

/// The most bytes one [`SnapshotStore::read`] returns, whatever `max_bytes` asks for, so that a
/// read of a huge image with a huge `max_bytes` does not allocate the whole image.
const MAX_CHUNK_BYTES: usize = 64 << 20;

/// A [`SnapshotStore`] keeping each image in a file of its own, in one directory, durably:
/// a finished image survives a crash of the process or of the machine.
///
/// Each image is a file `snapshot-{index:020}-{term:020}.snap`: a header (magic bytes, format
/// version, the [`SnapshotMeta`], the image's length and CRC-32C, and the header's own CRC-32C)
/// followed by the image. An image is written to a `.partial` file of its own; finishing it
/// fsyncs the file, renames it into place and fsyncs the directory, and only then removes the
/// older image. So a crash leaves the latest finished image whole, and nothing of an unfinished
/// one but a `.partial` file, which opening deletes (with any older image a crash left).
/// Opening checks every image's header and length, and refuses a damaged file with
/// [`StorageError::Corrupt`] naming it; the image's CRC is checked when a reader reads it from
/// its start to its end, the last chunk failing with `Corrupt` when it does not match.
///
/// The store keeps the latest complete image (the one with the highest last index).
/// [`SnapshotStore::read`] returns at most 64 MiB per chunk; a `max_bytes` of 0 reads as 1.
///
/// Clones share the same state, like [`crate::MemSnapshotStore`]. The directory is locked
/// (`LOCK`, an advisory lock on the real filesystem) while the store, a clone of it or one of
/// its writers is alive: one store per directory at a time, since opening deletes the
/// `.partial` files of writers that were interrupted.
///
/// On the real filesystem every file operation runs on tokio's blocking pool
/// (`spawn_blocking`), so a tokio runtime is needed. A failed fsync of the directory after an
/// image was renamed into place leaves the directory in an unknown state: the store then
/// refuses everything with [`StorageError::Poisoned`] until it is opened again.
///
/// # Example
///
/// ```
/// use raft_core::node::SnapshotStore;
/// use raft_core::{EntryId, LogIndex, Membership, NodeId, SnapshotMeta, Term};
/// use raft_storage::FileSnapshotStore;
///
/// # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
/// let dir = tempfile::tempdir()?;
/// let mut store = FileSnapshotStore::open(dir.path().join("snapshots")).await?;
/// let membership = Membership::new([NodeId(1)])?;
/// let meta = SnapshotMeta::new(EntryId { term: Term(2), index: LogIndex(10) }, membership);
/// let mut writer = store.create(&meta).await?;
/// writer.write(b"hello, ").await?;
/// writer.write(b"world").await?;
/// writer.finish().await?;
/// drop(store);
///
/// // After a restart, the image is there.
/// let mut store = FileSnapshotStore::open(dir.path().join("snapshots")).await?;
/// assert_eq!(store.latest().await?, Some(meta));
/// let chunk = store.read(7, 100).await?;
/// assert_eq!(&chunk.data[..], b"world");
/// assert!(chunk.last);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct FileSnapshotStore {
    shared: Arc<Shared>,
}

/// What a store, its clones and its writers share.
struct Shared {
    fs: Fs,
    dir: PathBuf,
    /// Held only for short, in-memory steps, never across file operations, so that a reader on
    /// the async runtime never waits for a disk.
    state: Mutex<State>,
    /// Serializes the finishing of images (check, rename, sync, swap). Taken only on the
    /// blocking pool, or inline on the simulation's thread.
    finishing: Mutex<()>,
    /// The locked `LOCK` file; the lock goes when the last holder of `Shared` does.
    _lock: File,
}

#[derive(Default)]
struct State {
    latest: Option<Arc<Image>>,
    /// Why the store refuses everything, after a failure that left the directory unknown.
    poisoned: Option<String>,
}

/// One complete image file, open for reading.
struct Image {
    path: PathBuf,
    header: Header,
    file: File,
    /// How far the image was read from its start (by all its readers together), and the CRC
    /// of those bytes, to check the image CRC when a reader gets to its end.
    checked: Mutex<(u64, u32)>,
}

impl fmt::Debug for FileSnapshotStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let latest = self
            .shared
            .state
            .lock()
            .ok()
            .and_then(|state| state.latest.as_ref().map(|image| image.header.clone()));
        f.debug_struct("FileSnapshotStore")
            .field("fs", &self.shared.fs)
            .field("dir", &self.shared.dir)
            .field("latest", &latest)
            .finish()
    }
}

impl FileSnapshotStore {
    /// Opens the store in `dir` on the real filesystem, creating the directory if it is
    /// missing. Deletes the `.partial` files of images whose writing was interrupted, and
    /// images older than the latest left by a crash.
    ///
    /// # Errors
    ///
    /// [`StorageError::Corrupt`], naming the file, when an image file is damaged (bad magic,
    /// another format version, bad header CRC, wrong length, header disagreeing with its name);
    /// [`StorageError::Io`] when the filesystem fails, or another store has the directory open.
    pub async fn open(dir: impl Into<PathBuf>) -> Result<FileSnapshotStore, StorageError> {
        let dir = dir.into();
        run(Fs::Real, move || open::open_on(Fs::Real, dir)).await
    }

    /// Opens the store in `dir` on the current turmoil host's simulated filesystem, where a
    /// simulated crash loses what was not synced. Must be called from the host's software, in
    /// the simulation. Otherwise as [`FileSnapshotStore::open`].
    ///
    /// # Errors
    ///
    /// As [`FileSnapshotStore::open`].
    #[cfg(feature = "turmoil")]
    pub fn open_simulated(dir: impl Into<PathBuf>) -> Result<FileSnapshotStore, StorageError> {
        open::open_on(Fs::Simulated, dir.into())
    }

    /// The directory holding the images.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }
}

/// Runs file operations off the async runtime: on tokio's blocking pool for the real
/// filesystem, inline for the simulated one (whose calls must stay on the simulation's thread).
async fn run<T: Send + 'static>(
    fs: Fs,
    f: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, StorageError> {
    match fs {
        Fs::Real => tokio::task::spawn_blocking(f).await.map_err(|error| {
            StorageError::Io(io::Error::other(format!(
                "a snapshot file operation did not complete: {error}"
            )))
        })?,
        #[cfg(feature = "turmoil")]
        Fs::Simulated => f(),
    }
}

fn corrupt(path: &Path, what: impl fmt::Display) -> StorageError {
    StorageError::Corrupt(format!("snapshot file {}: {what}", path.display()))
}

/// An I/O error, with what was being done to which path.
fn io_at(action: &str, path: &Path) -> impl FnOnce(io::Error) -> StorageError {
    let context = format!("{action} {}", path.display());
    move |error| StorageError::Io(io::Error::new(error.kind(), format!("{context}: {error}")))
}

fn lock<T>(mutex: &Mutex<T>) -> Result<MutexGuard<'_, T>, StorageError> {
    mutex
        .lock()
        .map_err(|_| StorageError::Poisoned("a snapshot store operation panicked".into()))
}

fn check_poisoned(state: &State) -> Result<(), StorageError> {
    match &state.poisoned {
        Some(why) => Err(StorageError::Poisoned(why.clone())),
        None => Ok(()),
    }
}

/// Removes `path`; a file already gone is fine.
fn remove_if_present(fs: Fs, path: &Path) -> Result<(), StorageError> {
    match fs.remove_file(path) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => {
            Err(io_at("removing", path)(error))
        }
        _ => Ok(()),
    }
}

// ----- The store -----------------------------------------------------------------------------

#[async_trait]
impl SnapshotStore for FileSnapshotStore {
    async fn create(
        &mut self,
        meta: &SnapshotMeta,
    ) -> Result<Box<dyn SnapshotWriter>, StorageError> {
        check_poisoned(&*lock(&self.shared.state)?)?;
        let membership_bytes = meta.membership.encode().len();
        if membership_bytes > MAX_MEMBERSHIP_BYTES {
            return Err(StorageError::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a snapshot whose membership takes {membership_bytes} bytes: at most \
                     {MAX_MEMBERSHIP_BYTES} are supported"
                ),
            )));
        }
        let writer = FileSnapshotWriter::create(&self.shared, meta).await?;
        Ok(Box::new(writer))
    }

    async fn latest(&mut self) -> Result<Option<SnapshotMeta>, StorageError> {
        let state = lock(&self.shared.state)?;
        check_poisoned(&state)?;
        Ok(state.latest.as_ref().map(|image| image.header.meta.clone()))
    }

    async fn read(&mut self, offset: u64, max_bytes: usize) -> Result<SnapshotChunk, StorageError> {
        let image = {
            let state = lock(&self.shared.state)?;
            check_poisoned(&state)?;
            state.latest.clone()
        };
        let Some(image) = image else {
            return Err(StorageError::Unavailable("no snapshot is stored".into()));
        };
        let image_len = image.header.image_len;
        if offset > image_len {
            return Err(StorageError::Unavailable(format!(
                "offset {offset} is past the end of the {image_len}-byte snapshot at {}",
                image.header.meta.last.index
            )));
        }
        let remaining = usize::try_from(image_len - offset).unwrap_or(usize::MAX);
        let len = max_bytes.clamp(1, MAX_CHUNK_BYTES).min(remaining);
        let last = offset + len as u64 == image_len;
        let meta = image.header.meta.clone();
        let data = run(self.shared.fs, move || read_chunk(&image, offset, len)).await?;
        Ok(SnapshotChunk::new(meta, offset, Bytes::from(data), last))
    }
}

/// Reads `len` bytes of `image` at `offset` (within the image), and checks the image CRC when
/// the image has been read from its start to its end.
fn read_chunk(image: &Image, offset: u64, len: usize) -> Result<Vec<u8>, StorageError> {
    let header = &image.header;
    let mut data = vec![0; len];
    let read = image
        .file
        .read_at(&mut data, header.header_len + offset)
        .map_err(io_at("reading", &image.path))?;
    if read < len {
        return Err(corrupt(
            &image.path,
            format!(
                "the image ends after {} of its {} bytes",
                offset + read as u64,
                header.image_len
            ),
        ));
    }
    // The CRC of the image's first `through` bytes, extended by every read that reaches past
    // them. The bytes at an offset never change, so reads of any sizes, by any number of
    // readers, in any order, extend the same prefix; and a reader that reads the image from its
    // start to its end has extended it to the end by its last chunk, whatever other readers did
    // in between (another one starting over from offset 0 included).
    let mut checked = lock(&image.checked)?;
    let (through, crc) = &mut *checked;
    let end = offset + len as u64;
    if offset <= *through && *through < end {
        let unchecked = usize::try_from(*through - offset)
            .ok()
            .and_then(|from| data.get(from..))
            .unwrap_or_default();
        *crc = crc32c::crc32c_append(*crc, unchecked);
        *through = end;
    }
    if end == header.image_len && *through == header.image_len && *crc != header.image_crc {
        return Err(corrupt(
            &image.path,
            format!(
                "image checksum mismatch (stored {:#010x}, computed {:#010x})",
                header.image_crc, crc
            ),
        ));
    }
    Ok(data)
}
