//! The conformance suites run against the in-memory stores: the log store suite against
//! [`MemLogStore`], the snapshot store suite against [`MemSnapshotStore`].
//!
//! A location is a store kept in a map: the first `open` of a number creates it, and later
//! ones return a clone, which shares its contents, as a restarted node would find its disk.

use async_trait::async_trait;
use bytes::Bytes;
use raft_core::SnapshotMeta;
use raft_core::node::{SnapshotChunk, SnapshotStore, SnapshotWriter, StorageError};
use raft_storage::{MemLogStore, MemSnapshotStore, conformance};
use std::collections::BTreeMap;
use std::future::Ready;
use std::sync::{Mutex, PoisonError};

/// Stores by location, created on first use.
struct Locations<S> {
    stores: Mutex<BTreeMap<u32, S>>,
}

impl<S> Default for Locations<S> {
    fn default() -> Self {
        Locations {
            stores: Mutex::default(),
        }
    }
}

impl<S: Clone + Default> Locations<S> {
    fn open(&self, location: u32) -> Ready<S> {
        // A panic in another check cannot leave the map half-updated, so a poisoned lock is
        // still usable.
        let mut stores = self.stores.lock().unwrap_or_else(PoisonError::into_inner);
        std::future::ready(stores.entry(location).or_default().clone())
    }
}

#[tokio::test]
async fn memory_store_passes_the_whole_suite() {
    let locations = Locations::<MemLogStore>::default();
    conformance::run(|location| locations.open(location)).await;
}

/// The suite is not vacuous: a store that loses everything on restart fails it, in the first
/// check that restarts after writing.
#[tokio::test]
#[should_panic(expected = "check `hard_state_survives_reopen` failed")]
async fn store_that_forgets_on_restart_fails_the_suite() {
    conformance::run(|_location| std::future::ready(MemLogStore::new())).await;
}

/// One check can run on its own, on a location of the caller's choosing.
#[tokio::test]
async fn a_single_check_runs_alone() {
    let locations = Locations::<MemLogStore>::default();
    conformance::overlapping_write_replaces_suffix(|location| locations.open(location), 7).await;
    conformance::purge_at_diverged_entry_discards_the_rest(|location| locations.open(location), 8)
        .await;
}

#[tokio::test]
async fn memory_snapshot_store_passes_the_whole_suite() {
    let locations = Locations::<MemSnapshotStore>::default();
    conformance::snapshots(|location| locations.open(location)).await;
}

/// The snapshot suite is not vacuous either: a store that loses its image on restart fails it,
/// in the first check that restarts after finishing an image.
#[tokio::test]
#[should_panic(expected = "check `empty_image_reads_as_one_last_chunk` failed")]
async fn snapshot_store_that_forgets_on_restart_fails_the_suite() {
    conformance::snapshots(|_location| std::future::ready(MemSnapshotStore::new())).await;
}

/// A snapshot store that breaks one rule of reading, around a correct one.
struct Flawed {
    inner: MemSnapshotStore,
    flaw: Flaw,
}

#[derive(Clone, Copy)]
enum Flaw {
    /// Reads hand out the whole rest of the image, whatever `max_bytes` says.
    IgnoresMaxBytes,
    /// A read past the end of an image returns an empty last chunk instead of failing.
    ReadsPastTheEnd,
}

#[async_trait]
impl SnapshotStore for Flawed {
    async fn create(
        &mut self,
        meta: &SnapshotMeta,
    ) -> Result<Box<dyn SnapshotWriter>, StorageError> {
        self.inner.create(meta).await
    }

    async fn latest(&mut self) -> Result<Option<SnapshotMeta>, StorageError> {
        self.inner.latest().await
    }

    async fn read(&mut self, offset: u64, max_bytes: usize) -> Result<SnapshotChunk, StorageError> {
        match self.flaw {
            Flaw::IgnoresMaxBytes => self.inner.read(offset, usize::MAX).await,
            Flaw::ReadsPastTheEnd => match (
                self.inner.read(offset, max_bytes).await,
                self.inner.latest().await?,
            ) {
                (Err(_), Some(meta)) => Ok(SnapshotChunk::new(meta, offset, Bytes::new(), true)),
                (result, _) => result,
            },
        }
    }
}

fn flawed(flaw: Flaw) -> impl Fn(u32) -> Ready<Flawed> {
    let locations = Locations::<MemSnapshotStore>::default();
    move |location| {
        let inner = locations.open(location).into_inner();
        std::future::ready(Flawed { inner, flaw })
    }
}

#[tokio::test]
#[should_panic(expected = "should hold at most 1 bytes")]
async fn snapshot_store_that_ignores_max_bytes_fails_the_suite() {
    conformance::snapshots(flawed(Flaw::IgnoresMaxBytes)).await;
}

#[tokio::test]
#[should_panic(expected = "read(1, 16) of an empty image should fail with Unavailable")]
async fn snapshot_store_that_reads_past_the_end_fails_the_suite() {
    conformance::snapshots(flawed(Flaw::ReadsPastTheEnd)).await;
}

/// One snapshot check can run on its own too.
#[tokio::test]
async fn a_single_snapshot_check_runs_alone() {
    let locations = Locations::<MemSnapshotStore>::default();
    conformance::older_image_finished_later_is_discarded(|location| locations.open(location), 3)
        .await;
}
