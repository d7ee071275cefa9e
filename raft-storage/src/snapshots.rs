//! The in-memory snapshot store.

use async_trait::async_trait;
use bytes::Bytes;
use raft_core::SnapshotMeta;
use raft_core::node::{SnapshotChunk, SnapshotStore, SnapshotWriter, StorageError};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

/// One complete image and what it covers.
struct Image {
    meta: SnapshotMeta,
    /// Kept as `Bytes` so that a read hands out a slice of it without copying.
    data: Bytes,
}

impl fmt::Debug for Image {
    /// The metadata and the length: an image can be megabytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Image")
            .field("meta", &self.meta)
            .field("len", &self.data.len())
            .finish()
    }
}

/// The store's contents: the latest complete image, if any.
type Latest = Arc<Mutex<Option<Image>>>;

/// A [`SnapshotStore`] in memory. Clones share the same contents, so a test can "restart" a
/// node on the very store it used before, as with [`crate::MemLogStore`].
///
/// It keeps only the latest complete image. Each [`SnapshotStore::create`] returns a writer
/// that buffers its image on its own; [`SnapshotWriter::finish`] makes it the latest, in one
/// step under the store's lock, unless the store already holds an image with a higher last
/// index (then the finished one is dropped). A writer dropped unfinished leaves nothing behind.
/// A read hands out a slice of the stored image without copying it, and a finish that replaces
/// the image does not disturb slices handed out before.
///
/// [`SnapshotStore::read`] expects `max_bytes` of at least 1; this store reads 0 as 1, so a
/// reader that advances by the length of each chunk always makes progress.
///
/// # Example
///
/// ```
/// use raft_core::node::SnapshotStore;
/// use raft_core::{EntryId, LogIndex, Membership, NodeId, SnapshotMeta, Term};
/// use raft_storage::MemSnapshotStore;
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let mut store = MemSnapshotStore::new();
/// let membership = Membership::new([NodeId(1)]).unwrap();
/// let meta = SnapshotMeta::new(EntryId { term: Term(2), index: LogIndex(10) }, membership);
/// let mut writer = store.create(&meta).await.unwrap();
/// writer.write(b"hello, ").await.unwrap();
/// writer.write(b"world").await.unwrap();
/// writer.finish().await.unwrap();
///
/// // A restarted node finds the image in a clone of the store.
/// let mut restarted = store.clone();
/// assert_eq!(restarted.latest().await.unwrap(), Some(meta));
/// let chunk = restarted.read(7, 100).await.unwrap();
/// assert_eq!(&chunk.data[..], b"world");
/// assert!(chunk.last);
/// # });
/// ```
#[derive(Clone, Debug, Default)]
pub struct MemSnapshotStore {
    latest: Latest,
}

impl MemSnapshotStore {
    /// An empty store.
    pub fn new() -> MemSnapshotStore {
        MemSnapshotStore::default()
    }
}

fn lock(latest: &Latest) -> Result<MutexGuard<'_, Option<Image>>, StorageError> {
    latest
        .lock()
        .map_err(|_| StorageError::Poisoned("a writer panicked".into()))
}

fn unavailable(what: String) -> StorageError {
    StorageError::Unavailable(what)
}

#[async_trait]
impl SnapshotStore for MemSnapshotStore {
    async fn create(
        &mut self,
        meta: &SnapshotMeta,
    ) -> Result<Box<dyn SnapshotWriter>, StorageError> {
        // Fail now rather than after the whole image was written.
        drop(lock(&self.latest)?);
        Ok(Box::new(MemSnapshotWriter {
            latest: Arc::clone(&self.latest),
            meta: meta.clone(),
            buffer: Vec::new(),
        }))
    }

    async fn latest(&mut self) -> Result<Option<SnapshotMeta>, StorageError> {
        Ok(lock(&self.latest)?.as_ref().map(|image| image.meta.clone()))
    }

    async fn read(&mut self, offset: u64, max_bytes: usize) -> Result<SnapshotChunk, StorageError> {
        let latest = lock(&self.latest)?;
        let Some(image) = latest.as_ref() else {
            return Err(unavailable("no snapshot is stored".into()));
        };
        let len = image.data.len();
        let start = usize::try_from(offset)
            .ok()
            .filter(|&start| start <= len)
            .ok_or_else(|| {
                unavailable(format!(
                    "offset {offset} is past the end of the {len}-byte snapshot at {}",
                    image.meta.last.index
                ))
            })?;
        let end = start + max_bytes.max(1).min(len - start);
        Ok(SnapshotChunk::new(
            image.meta.clone(),
            offset,
            image.data.slice(start..end),
            end == len,
        ))
    }
}

/// An image being written into a [`MemSnapshotStore`]: its bytes, buffered until `finish`.
struct MemSnapshotWriter {
    latest: Latest,
    meta: SnapshotMeta,
    buffer: Vec<u8>,
}

#[async_trait]
impl SnapshotWriter for MemSnapshotWriter {
    async fn write(&mut self, data: &[u8]) -> Result<(), StorageError> {
        // The image's size is the caller's: running out of memory is an error, not an abort.
        self.buffer.try_reserve(data.len()).map_err(|error| {
            StorageError::Io(std::io::Error::new(std::io::ErrorKind::OutOfMemory, error))
        })?;
        self.buffer.extend_from_slice(data);
        Ok(())
    }

    async fn finish(self: Box<Self>) -> Result<(), StorageError> {
        let MemSnapshotWriter {
            latest,
            meta,
            buffer,
        } = *self;
        let mut latest = lock(&latest)?;
        if latest
            .as_ref()
            .is_some_and(|image| image.meta.last.index > meta.last.index)
        {
            // A newer image is already complete: this one is of no use.
            return Ok(());
        }
        *latest = Some(Image {
            meta,
            data: Bytes::from(buffer),
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft_core::{EntryId, LogIndex, Term};

    fn meta(index: u64) -> SnapshotMeta {
        SnapshotMeta::new(
            EntryId {
                term: Term(1),
                index: LogIndex(index),
            },
            raft_core::Membership::new([raft_core::NodeId(1)]).unwrap(),
        )
    }

    async fn store_with(image: &[u8]) -> MemSnapshotStore {
        let mut store = MemSnapshotStore::new();
        let mut writer = store.create(&meta(3)).await.unwrap();
        writer.write(image).await.unwrap();
        writer.finish().await.unwrap();
        store
    }

    #[tokio::test]
    async fn max_bytes_of_zero_reads_one_byte() {
        let mut store = store_with(b"abc").await;
        let mut read = Vec::new();
        let mut offset = 0;
        loop {
            let chunk = store.read(offset, 0).await.unwrap();
            assert_eq!(chunk.data.len(), 1);
            read.extend_from_slice(&chunk.data);
            offset += 1;
            if chunk.last {
                break;
            }
        }
        assert_eq!(read, b"abc");

        let mut empty = store_with(b"").await;
        let chunk = empty.read(0, 0).await.unwrap();
        assert!(chunk.data.is_empty() && chunk.last);
    }

    #[tokio::test]
    async fn a_read_shares_the_stored_bytes() {
        let mut store = store_with(b"0123456789").await;
        let first = store.read(2, 3).await.unwrap();
        let again = store.read(2, 3).await.unwrap();
        assert_eq!(&first.data[..], b"234");
        assert_eq!(first.data.as_ptr(), again.data.as_ptr());
    }

    #[tokio::test]
    async fn a_poisoned_store_reports_it() {
        let store = store_with(b"abc").await;
        let latest = Arc::clone(&store.latest);
        let _ = std::thread::spawn(move || {
            let _guard = latest.lock();
            panic!("poisoning the lock");
        })
        .join();
        let mut store = store;
        assert!(matches!(
            store.latest().await,
            Err(StorageError::Poisoned(_))
        ));
        assert!(matches!(
            store.read(0, 1).await,
            Err(StorageError::Poisoned(_))
        ));
        assert!(store.create(&meta(4)).await.is_err());
    }
}
