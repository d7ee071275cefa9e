//! Where simulated nodes keep their logs and snapshots.

use async_trait::async_trait;
use raft_core::node::{
    Failover, LogStore, Recovered, SnapshotChunk, SnapshotStore, SnapshotWriter, StorageError,
};
use raft_core::{Entry, EntryId, HardState, LogIndex, NodeId, SnapshotMeta};
use std::collections::BTreeSet;
use std::fmt;
use std::rc::Rc;

/// Where a node keeps its log and snapshots across the crashes the nemesis causes.
#[derive(Clone, Default)]
pub enum Storage {
    /// `raft_storage::MemLogStore` and `MemSnapshotStore`, kept by the harness across crashes:
    /// a disk that never loses anything. The default.
    #[default]
    Memory,
    /// `raft_storage::FileLogStore` in [`LOG_DIR`] and `FileSnapshotStore` in [`SNAPSHOT_DIR`]
    /// on the host's simulated disk (turmoil's `unstable-fs`), opened by the host each time it
    /// starts: a crash loses what the stores had not synced, and tears a write that was under
    /// way (in 64-byte blocks). Each segment of the log holds `segment_bytes` at most.
    SimulatedDisk {
        /// `raft_storage::FileLogOptions::segment_bytes`: small, so that purges after
        /// snapshots delete segments often.
        segment_bytes: u64,
    },
    /// Stores of your own, from [`Storage::custom`].
    Custom(CustomStores),
}

/// What [`Storage::custom`] was given (opaque).
#[derive(Clone)]
pub struct CustomStores(Rc<StoreFactory>);

impl CustomStores {
    /// The stores of a new run.
    pub(crate) fn for_run(&self) -> Box<NodeStores> {
        (self.0)()
    }
}

/// Makes the stores of one run: called once at the start of every run, it returns what makes
/// a node's stores for each of its starts.
type StoreFactory = dyn Fn() -> Box<NodeStores>;

/// Makes a node's stores for one of its starts: given the node and the number of the start (0
/// for the first), the log store and the snapshot store it runs on.
pub(crate) type NodeStores = dyn FnMut(NodeId, u64) -> (BoxedLogStore, BoxedSnapshotStore);

/// Where [`Storage::SimulatedDisk`] keeps a node's log.
pub const LOG_DIR: &str = "/raft/log";
/// Where [`Storage::SimulatedDisk`] keeps a node's snapshots.
pub const SNAPSHOT_DIR: &str = "/raft/snapshots";

/// Empties the current host's simulated disk under the parent of [`LOG_DIR`] and
/// [`SNAPSHOT_DIR`] for good: every file and directory is removed, deepest first, and each
/// removal made durable by syncing the directory it was in.
pub(crate) fn empty_disk() -> std::io::Result<()> {
    use turmoil::fs::shim::std::fs;
    fn remove_under(dir: &std::path::Path) -> std::io::Result<()> {
        let mut paths: Vec<std::path::PathBuf> = fs::read_dir(dir)?
            .map(|entry| entry.map(|e| e.path()))
            .collect::<std::io::Result<_>>()?;
        paths.sort();
        for path in paths {
            if fs::metadata(&path)?.is_dir() {
                remove_under(&path)?;
                fs::remove_dir(&path)?;
            } else {
                fs::remove_file(&path)?;
            }
        }
        fs::sync_dir(dir)
    }
    let root = std::path::Path::new("/raft");
    if !fs::exists(root) {
        return Ok(());
    }
    remove_under(root)
}

impl Storage {
    /// The file stores on the simulated disk, with segments of 16 KiB.
    pub fn simulated_disk() -> Storage {
        Storage::SimulatedDisk {
            segment_bytes: 16 * 1024,
        }
    }

    /// Stores of your own. `run` is called at the start of every run (so that each run starts
    /// from empty disks) and returns `make`; `make(node, start)` is then called each time a
    /// node starts (`start` is 0 the first time, then 1, 2, ... after each crash or restart),
    /// on the host's own thread, so it may open files on the simulated disk. Whatever should
    /// survive a crash is `make`'s to keep between calls (for example a `MemLogStore` it
    /// clones for each start, or files on the simulated disk); what the returned stores hold
    /// only in themselves is lost with the host.
    ///
    /// Once the run is over, every host is crashed and `make` is called once more for each
    /// final voter (with the number of the start that would come next), and the store audit
    /// reads back what the stores it returns recover (see the crate documentation, "What is
    /// checked"): the node is not started on them.
    ///
    /// ```
    /// use raft_sim::Storage;
    /// use raft_storage::{MemLogStore, MemSnapshotStore};
    /// use std::collections::BTreeMap;
    ///
    /// // The same as `Storage::Memory`, written out.
    /// let storage = Storage::custom(|| {
    ///     let mut disks = BTreeMap::new();
    ///     move |node, _start| {
    ///         let (log, snapshots): &mut (MemLogStore, MemSnapshotStore) =
    ///             disks.entry(node).or_default();
    ///         (log.clone(), snapshots.clone())
    ///     }
    /// });
    /// # let _ = storage;
    /// ```
    pub fn custom<F, G, L, S>(run: F) -> Storage
    where
        F: Fn() -> G + 'static,
        G: FnMut(NodeId, u64) -> (L, S) + 'static,
        L: LogStore,
        S: SnapshotStore,
    {
        Storage::Custom(CustomStores(Rc::new(move || {
            let mut make = run();
            Box::new(move |node, start| {
                let (log, snapshots) = make(node, start);
                (
                    BoxedLogStore(Box::new(log)),
                    BoxedSnapshotStore(Box::new(snapshots)),
                )
            })
        })))
    }
}

impl fmt::Debug for Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Storage::Memory => write!(f, "Memory"),
            Storage::SimulatedDisk { segment_bytes } => {
                write!(f, "SimulatedDisk {{ segment_bytes: {segment_bytes} }}")
            }
            Storage::Custom(_) => write!(f, "Custom"),
        }
    }
}

/// A log store of any type, as [`Storage::custom`] hands it to a node.
pub(crate) struct BoxedLogStore(Box<dyn LogStore>);

#[async_trait]
impl LogStore for BoxedLogStore {
    async fn recover(&mut self) -> Result<Recovered, StorageError> {
        self.0.recover().await
    }
    async fn write(
        &mut self,
        hard_state: Option<HardState>,
        entries: Vec<Entry>,
    ) -> Result<(), StorageError> {
        self.0.write(hard_state, entries).await
    }
    async fn truncate_suffix(&mut self, from: LogIndex) -> Result<(), StorageError> {
        self.0.truncate_suffix(from).await
    }
    async fn purge_prefix(&mut self, up_to: EntryId) -> Result<(), StorageError> {
        self.0.purge_prefix(up_to).await
    }
    async fn read(&mut self, from: LogIndex, to: LogIndex) -> Result<Vec<Entry>, StorageError> {
        self.0.read(from, to).await
    }
    async fn save_voters(&mut self, voters: &BTreeSet<NodeId>) -> Result<(), StorageError> {
        self.0.save_voters(voters).await
    }
    async fn save_failovers(&mut self, history: &[Failover]) -> Result<(), StorageError> {
        self.0.save_failovers(history).await
    }
}

/// A snapshot store of any type, as [`Storage::custom`] hands it to a node.
pub(crate) struct BoxedSnapshotStore(Box<dyn SnapshotStore>);

#[async_trait]
impl SnapshotStore for BoxedSnapshotStore {
    async fn create(
        &mut self,
        meta: &SnapshotMeta,
    ) -> Result<Box<dyn SnapshotWriter>, StorageError> {
        self.0.create(meta).await
    }
    async fn latest(&mut self) -> Result<Option<SnapshotMeta>, StorageError> {
        self.0.latest().await
    }
    async fn read(&mut self, offset: u64, max_bytes: usize) -> Result<SnapshotChunk, StorageError> {
        self.0.read(offset, max_bytes).await
    }
}
