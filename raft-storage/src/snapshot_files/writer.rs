//! Writing an image: the [`SnapshotWriter`] that fills a `.partial` file of its own, and
//! finishing it (header, fsync, rename into place, directory fsync, removal of the older
//! image).

use super::header::{Header, encode_header, header_len_of};
use super::names::{image_name, partial_name};
use super::{Image, Shared, check_poisoned, io_at, lock, remove_if_present, run};
use crate::wal::fs::{File, Fs, Open};
use async_trait::async_trait;
use raft_core::SnapshotMeta;
use raft_core::node::{SnapshotWriter, StorageError};
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Numbers the `.partial` files of every store in the process (see [`partial_name`]).
static NEXT_PARTIAL: AtomicU64 = AtomicU64::new(0);

/// An image being written to its `.partial` file.
pub(super) struct FileSnapshotWriter {
    shared: Arc<Shared>,
    meta: SnapshotMeta,
    /// The `.partial` file; `None` once `finish` took charge of it.
    path: Option<PathBuf>,
    /// `None` while a write holds it, and for good if that write was cancelled.
    file: Option<File>,
    header_len: u64,
    /// Image bytes written so far.
    written: u64,
    /// Their CRC-32C.
    crc: u32,
}

impl FileSnapshotWriter {
    /// Starts writing an image of `meta` into a new `.partial` file of `shared`'s directory.
    pub(super) async fn create(
        shared: &Arc<Shared>,
        meta: &SnapshotMeta,
    ) -> Result<FileSnapshotWriter, StorageError> {
        let last = meta.last;
        let (path, file) = run(shared.fs, {
            let shared = Arc::clone(shared);
            move || {
                // Names are unique within the process and hold its id, and the directory is the
                // store's alone (leftovers are deleted at open); a clash is retried with the
                // next number anyway.
                let mut attempts = 0;
                loop {
                    let number = NEXT_PARTIAL.fetch_add(1, Ordering::Relaxed);
                    let path = shared.dir.join(partial_name(last, number));
                    match shared.fs.open(&path, Open::CreateNew) {
                        Ok(file) => return Ok((path, file)),
                        Err(error)
                            if error.kind() == io::ErrorKind::AlreadyExists && attempts < 100 =>
                        {
                            attempts += 1;
                        }
                        Err(error) => return Err(io_at("creating", &path)(error)),
                    }
                }
            }
        })
        .await?;
        Ok(FileSnapshotWriter {
            shared: Arc::clone(shared),
            meta: meta.clone(),
            path: Some(path),
            file: Some(file),
            header_len: header_len_of(meta),
            written: 0,
            crc: 0,
        })
    }

    fn take_file(&mut self) -> Result<File, StorageError> {
        self.file.take().ok_or_else(|| {
            StorageError::Poisoned(
                "an earlier write to this snapshot image was cancelled or failed to return".into(),
            )
        })
    }
}

#[async_trait]
impl SnapshotWriter for FileSnapshotWriter {
    async fn write(&mut self, data: &[u8]) -> Result<(), StorageError> {
        if data.is_empty() {
            return Ok(());
        }
        let file = self.take_file()?;
        let data = data.to_vec();
        let at = self.header_len + self.written;
        let crc = self.crc;
        let path = self.path.clone().unwrap_or_default();
        // The file goes into the operation and comes back with it: a write cancelled half-way
        // leaves the writer without a file rather than with one a stray write may still change.
        let (file, result) = run(self.shared.fs, move || {
            let result = file
                .write_all_at(&data, at)
                .map(|()| (data.len() as u64, crc32c::crc32c_append(crc, &data)))
                .map_err(io_at("writing", &path));
            Ok((file, result))
        })
        .await?;
        self.file = Some(file);
        // A failed write may be retried: the next one writes at the same place.
        let (len, crc) = result?;
        self.written += len;
        self.crc = crc;
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<(), StorageError> {
        let file = self.take_file()?;
        let Some(path) = self.path.take() else {
            return Err(StorageError::Poisoned(
                "the image was already finished".into(),
            ));
        };
        let finishing = Finishing {
            shared: Arc::clone(&self.shared),
            header: encode_header(&self.meta, self.written, self.crc),
            meta: self.meta.clone(),
            image_len: self.written,
            image_crc: self.crc,
            partial: path,
            file,
        };
        // The operation runs to its end even if this future is dropped, cleaning up after
        // itself on failure.
        run(self.shared.fs, move || finishing.run()).await
    }
}

impl Drop for FileSnapshotWriter {
    /// Removes the `.partial` file of an image that was not finished (best effort: a file left
    /// behind is deleted when the store is next opened). On the blocking pool this may run after
    /// the store and the directory's lock are gone; no other file ever has this one's name (see
    /// [`partial_name`]), so it removes nothing else.
    fn drop(&mut self) {
        let Some(path) = self.path.take() else {
            return;
        };
        let file = self.file.take();
        let fs = self.shared.fs;
        let remove = move || {
            drop(file);
            if let Err(error) = remove_if_present(fs, &path) {
                tracing::warn!(%error, "could not remove an unfinished snapshot image");
            }
        };
        match fs {
            Fs::Real => match tokio::runtime::Handle::try_current() {
                Ok(runtime) => drop(runtime.spawn_blocking(remove)),
                Err(_) => remove(),
            },
            #[cfg(feature = "turmoil")]
            Fs::Simulated => {
                // Outside the simulation (the simulation itself being dropped) there is no
                // filesystem to call.
                if turmoil::in_simulation() {
                    remove();
                }
            }
        }
    }
}

/// Cuts `file` off (or extends it) to `len` bytes.
fn set_len(file: &File, len: u64) -> io::Result<()> {
    match file {
        File::Real(file) => file.set_len(len),
        #[cfg(feature = "turmoil")]
        File::Simulated(file) => file.set_len(len),
    }
}

/// The blocking part of [`SnapshotWriter::finish`].
struct Finishing {
    shared: Arc<Shared>,
    header: Vec<u8>,
    meta: SnapshotMeta,
    image_len: u64,
    image_crc: u32,
    partial: PathBuf,
    file: File,
}

impl Finishing {
    fn run(self) -> Result<(), StorageError> {
        let Finishing {
            shared,
            header,
            meta,
            image_len,
            image_crc,
            partial,
            file,
        } = self;
        let fs = shared.fs;
        let remove_partial = || {
            if let Err(error) = remove_if_present(fs, &partial) {
                tracing::warn!(%error, "could not remove a discarded snapshot image");
            }
        };
        let discard = |error: StorageError| {
            remove_partial();
            error
        };

        // 1. The image, then its header, durable under the temporary name. A write that failed
        // half-way may have left bytes past the image's end: cut them off, or the file would
        // be longer than its header says, and refused at open.
        let synced = file
            .write_all_at(&header, 0)
            .and_then(|()| set_len(&file, header.len() as u64 + image_len))
            .and_then(|()| file.sync_all())
            .map_err(io_at("writing and syncing", &partial));
        drop(file);
        synced.map_err(discard)?;

        let _finishing = lock(&shared.finishing).map_err(discard)?;
        let newer = {
            let state = lock(&shared.state).map_err(discard)?;
            check_poisoned(&state).map_err(discard)?;
            state
                .latest
                .as_ref()
                .is_some_and(|image| image.header.meta.last.index > meta.last.index)
        };
        if newer {
            // A newer image is already complete: this one is of no use.
            remove_partial();
            return Ok(());
        }

        // 2. Into place, atomically, and durably.
        let path = shared.dir.join(image_name(meta.last));
        fs.rename(&partial, &path)
            .map_err(io_at("renaming", &partial))
            .map_err(discard)?;
        let poison = |error: StorageError| {
            if let Ok(mut state) = shared.state.lock() {
                state.poisoned = Some(format!(
                    "finishing the snapshot {} failed after it was renamed into place: {error}",
                    path.display()
                ));
            }
            error
        };
        fs.sync_dir(&shared.dir)
            .map_err(io_at("syncing the directory", &shared.dir))
            .map_err(poison)?;
        let file = fs
            .open(&path, Open::Read)
            .map_err(io_at("opening", &path))
            .map_err(poison)?;
        let image = Arc::new(Image {
            path: path.clone(),
            header: Header {
                meta,
                header_len: header.len() as u64,
                image_len,
                image_crc,
            },
            file,
            checked: Mutex::new((0, 0)),
        });

        // 3. The new image is the latest; only now does the older go.
        let older = lock(&shared.state)?.latest.replace(image);
        if let Some(older) = older
            && older.path != path
        {
            let older_path = older.path.clone();
            drop(older);
            if let Err(error) = remove_if_present(fs, &older_path) {
                // Opening removes it.
                tracing::warn!(%error, "could not remove an older snapshot image");
            }
        }
        Ok(())
    }
}
