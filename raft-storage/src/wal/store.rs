//! [`FileLogStore`]: the [`LogStore`] on the write-ahead log, with its writer thread.

use super::fs::Fs;
use super::log::{Wal, WalOptions};
use async_trait::async_trait;
use raft_core::node::{Failover, LogStore, Recovered, StorageError};
use raft_core::{Entry, EntryId, HardState, LogIndex, NodeId};
use std::collections::BTreeSet;
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::oneshot;

/// The most operations one group commit takes before it syncs.
const MAX_GROUP: usize = 4096;

/// How a [`FileLogStore`] lays out its files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FileLogOptions {
    /// Bytes a segment file holds before the log goes on in a new one (default 64 MiB).
    /// Purging deletes whole segments, so this is also the granularity at which disk space
    /// is given back. A record larger than this has a segment to itself.
    pub segment_bytes: u64,
    /// Fill each segment with zeros before it is used (default `true`), on the writer thread
    /// while it is idle: a sync then overwrites allocated space instead of growing the file,
    /// which about halves its cost on common filesystems. Costs `segment_bytes` of disk for
    /// the segment being prepared.
    pub preallocate: bool,
}

impl Default for FileLogOptions {
    fn default() -> FileLogOptions {
        FileLogOptions {
            segment_bytes: 64 << 20,
            preallocate: true,
        }
    }
}

impl FileLogOptions {
    /// The defaults: 64 MiB segments, preallocated.
    pub fn new() -> FileLogOptions {
        FileLogOptions::default()
    }

    /// Sets [`FileLogOptions::segment_bytes`] (at least 4 KiB).
    pub fn segment_bytes(mut self, bytes: u64) -> FileLogOptions {
        self.segment_bytes = bytes.max(4096);
        self
    }

    /// Sets [`FileLogOptions::preallocate`].
    pub fn preallocate(mut self, preallocate: bool) -> FileLogOptions {
        self.preallocate = preallocate;
        self
    }

    fn wal(self) -> WalOptions {
        WalOptions {
            segment_bytes: self.segment_bytes.max(4096),
            preallocate: self.preallocate,
        }
    }
}

/// A durable [`LogStore`]: a segmented write-ahead log in a data directory, with group commit
/// and crash recovery.
///
/// The layout of the directory, what a write costs and how recovery decides what to keep are
/// described in `docs/storage.md`. In short: entries are appended as checksummed records to
/// preallocated segment files; all the operations waiting when the writer is free are written
/// with one write and made durable with one `fdatasync` (group commit), and none is answered
/// before that; the hard state, the voters and where the log starts live in a small metadata
/// file replaced atomically; purging deletes whole segments. At open, a torn write at the end
/// of the log (never acknowledged) is cut off, and any other damage refuses the open with an
/// error naming the file and the offset. After a failed write or sync the store is poisoned:
/// it answers every later write with [`StorageError::Poisoned`] until it is reopened.
///
/// File I/O runs on a thread of the store's own, never on the async runtime. Clones share the
/// same log and thread; operations take effect in the order they are called, across clones.
/// Dropping the last clone waits for the thread to finish the operation in hand, then releases
/// the directory's lock. A second store (in this process or another) opening the same
/// directory gets an error saying it is in use.
///
/// ```
/// use raft_core::node::LogStore;
/// use raft_core::{Entry, HardState, LogIndex, Payload, Term};
/// use raft_storage::FileLogStore;
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let dir = tempfile::tempdir().unwrap();
/// let mut store = FileLogStore::open(dir.path()).await.unwrap();
/// let entry = Entry { term: Term(1), index: LogIndex(1), payload: Payload::Blank };
/// store.write(Some(HardState { term: Term(1), vote: None }), vec![entry.clone()]).await.unwrap();
/// drop(store);
///
/// let mut store = FileLogStore::open(dir.path()).await.unwrap();
/// let recovered = store.recover().await.unwrap();
/// assert_eq!(recovered.entries, vec![entry]);
/// # });
/// ```
#[derive(Clone, Debug)]
pub struct FileLogStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
enum Inner {
    Thread(WriterThread),
    #[cfg(feature = "turmoil")]
    Inline(std::sync::Mutex<Box<Wal>>),
}

/// The writer thread and the way to it. Dropping it closes the queue and waits for the
/// thread, so the directory's lock is released when the store is gone.
#[derive(Debug)]
struct WriterThread {
    commands: Option<mpsc::Sender<Command>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for WriterThread {
    fn drop(&mut self) {
        self.commands.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

type Reply<T> = oneshot::Sender<Result<T, StorageError>>;

/// One operation for the writer.
enum Command {
    Write {
        hard_state: Option<HardState>,
        entries: Vec<Entry>,
        reply: Reply<()>,
    },
    Truncate {
        from: LogIndex,
        reply: Reply<()>,
    },
    Purge {
        up_to: EntryId,
        reply: Reply<()>,
    },
    SaveVoters {
        voters: BTreeSet<NodeId>,
        reply: Reply<()>,
    },
    SaveFailovers {
        history: Vec<Failover>,
        reply: Reply<()>,
    },
    Read {
        from: LogIndex,
        to: LogIndex,
        reply: Reply<Vec<Entry>>,
    },
    Recover {
        reply: Reply<Recovered>,
    },
}

/// An operation carried out and not answered yet: a write is answered only after the sync.
enum Done {
    Write(Reply<()>, Result<(), StorageError>),
    Entries(Reply<Vec<Entry>>, Result<Vec<Entry>, StorageError>),
    Recovered(Reply<Recovered>, Result<Recovered, StorageError>),
}

impl Command {
    fn execute(self, wal: &mut Wal) -> Done {
        match self {
            Command::Write {
                hard_state,
                entries,
                reply,
            } => Done::Write(reply, wal.write(hard_state, &entries)),
            Command::Truncate { from, reply } => Done::Write(reply, wal.truncate_suffix(from)),
            Command::Purge { up_to, reply } => Done::Write(reply, wal.purge_prefix(up_to)),
            Command::SaveVoters { voters, reply } => Done::Write(reply, wal.save_voters(&voters)),
            Command::SaveFailovers { history, reply } => {
                Done::Write(reply, wal.save_failovers(&history))
            }
            Command::Read { from, to, reply } => Done::Entries(reply, wal.read(from, to)),
            Command::Recover { reply } => Done::Recovered(reply, wal.recover()),
        }
    }
}

impl Done {
    /// Answers the caller, once `synced` tells whether the group's sync succeeded.
    fn answer(self, synced: &Result<(), StorageError>) {
        match self {
            Done::Write(reply, result) => {
                let result = result.and_then(|()| synced.as_ref().map_err(copy).copied());
                let _ = reply.send(result);
            }
            Done::Entries(reply, result) => {
                let _ = reply.send(result);
            }
            Done::Recovered(reply, result) => {
                let _ = reply.send(result);
            }
        }
    }
}

/// The same error for another caller of the group whose sync failed.
fn copy(error: &StorageError) -> StorageError {
    match error {
        StorageError::Io(e) => StorageError::Io(io::Error::new(e.kind(), e.to_string())),
        StorageError::Corrupt(what) => StorageError::Corrupt(what.clone()),
        StorageError::Unavailable(what) => StorageError::Unavailable(what.clone()),
        other => StorageError::Poisoned(other.to_string()),
    }
}

/// Carries out one group: every operation given, then one sync, then the answers.
fn run_group(wal: &mut Wal, commands: impl IntoIterator<Item = Command>) {
    let done: Vec<Done> = commands.into_iter().map(|c| c.execute(wal)).collect();
    let synced = wal.sync();
    for done in done {
        done.answer(&synced);
    }
}

/// How long a sync takes on the simulated filesystem: longer than the shortest message
/// latency of a simulation, so that an answer sent before the sync would show.
#[cfg(feature = "turmoil")]
const SIMULATED_SYNC: Duration = Duration::from_millis(3);

/// How long the writer must have been idle before it spends time preallocating: under a
/// steady load it never is, and segments are then created when needed.
const IDLE_BEFORE_PREPARING: Duration = Duration::from_millis(1);

/// The writer thread: waits for operations, takes every one already queued as one group,
/// and after a moment with nothing to do prepares the next segment, a step at a time.
fn writer_loop(mut wal: Wal, commands: mpsc::Receiver<Command>) {
    loop {
        let first = if wal.wants_to_prepare() {
            match commands.recv_timeout(IDLE_BEFORE_PREPARING) {
                Ok(command) => command,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    wal.prepare_step();
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        } else {
            match commands.recv() {
                Ok(command) => command,
                Err(mpsc::RecvError) => break,
            }
        };
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match commands.try_recv() {
                Ok(command) => group.push(command),
                Err(_) => break,
            }
        }
        run_group(&mut wal, group);
    }
}

fn stopped() -> StorageError {
    StorageError::Poisoned("the log's writer thread stopped".into())
}

impl FileLogStore {
    /// Opens the log in `dir` with the default options, creating the directory when it does
    /// not exist and recovering what is durable when it does.
    ///
    /// Fails with [`StorageError::Corrupt`] (naming the file and the offset) when the files
    /// are damaged anywhere but in a torn write at the very end, or were written by another
    /// format version; with an [`StorageError::Io`] error of kind
    /// [`io::ErrorKind::WouldBlock`] when another store has the directory open.
    pub async fn open(dir: impl Into<PathBuf>) -> Result<FileLogStore, StorageError> {
        FileLogStore::open_with(dir, FileLogOptions::default()).await
    }

    /// [`FileLogStore::open`] with other options.
    pub async fn open_with(
        dir: impl Into<PathBuf>,
        options: FileLogOptions,
    ) -> Result<FileLogStore, StorageError> {
        let dir = dir.into();
        let (opened_tx, opened) = oneshot::channel();
        let (commands, receiver) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("raft-wal".into())
            .spawn(move || match Wal::open(Fs::Real, &dir, options.wal()) {
                Ok(wal) => {
                    let _ = opened_tx.send(Ok(()));
                    writer_loop(wal, receiver);
                }
                Err(error) => {
                    let _ = opened_tx.send(Err(error));
                }
            })?;
        let writer = WriterThread {
            commands: Some(commands),
            thread: Some(thread),
        };
        opened.await.map_err(|_| stopped())??;
        Ok(FileLogStore {
            inner: Arc::new(Inner::Thread(writer)),
        })
    }

    /// Opens the log in `dir` on turmoil's simulated filesystem of the current host, for
    /// simulations where a host's crash loses what it had not synced. Every operation runs on
    /// the simulation's thread (so a run stays reproducible from its seed): it is carried out
    /// and written at once, and synced and answered 3 ms of simulated time later, so a crash
    /// can fall between a write and its sync (and tear the write, when turmoil's `block_size`
    /// is set). Segments are not preallocated.
    #[cfg(feature = "turmoil")]
    pub fn open_simulated(
        dir: impl Into<PathBuf>,
        options: FileLogOptions,
    ) -> Result<FileLogStore, StorageError> {
        let dir = dir.into();
        let options = options.preallocate(false);
        let wal = Wal::open(Fs::Simulated, &dir, options.wal())?;
        Ok(FileLogStore {
            inner: Arc::new(Inner::Inline(std::sync::Mutex::new(Box::new(wal)))),
        })
    }

    /// Queues an operation and returns what will answer it.
    fn call<T: Send + 'static>(
        &self,
        command: impl FnOnce(Reply<T>) -> Command,
    ) -> impl Future<Output = Result<T, StorageError>> + Send + 'static {
        let (reply, answer) = oneshot::channel();
        let command = command(reply);
        #[cfg(feature = "turmoil")]
        let mut inline = None;
        match &*self.inner {
            Inner::Thread(writer) => {
                if let Some(commands) = &writer.commands {
                    // A send fails only when the thread is gone; the answer then says so.
                    let _ = commands.send(command);
                }
            }
            // Carried out and written now, in the order of the calls; synced and answered
            // after `SIMULATED_SYNC` of simulated time, so that a simulated crash can fall
            // between the write and its sync and tear it, as a power loss would.
            #[cfg(feature = "turmoil")]
            Inner::Inline(wal) => {
                if let Ok(mut wal) = wal.lock() {
                    let done = command.execute(&mut wal);
                    let written = wal.flush();
                    inline = Some((Arc::clone(&self.inner), done, written));
                }
            }
        }
        async move {
            #[cfg(feature = "turmoil")]
            if let Some((inner, done, written)) = inline {
                tokio::time::sleep(SIMULATED_SYNC).await;
                let synced = written.and_then(|()| match &*inner {
                    Inner::Inline(wal) => match wal.lock() {
                        Ok(mut wal) => wal.sync(),
                        Err(_) => Err(stopped()),
                    },
                    Inner::Thread(_) => Ok(()),
                });
                done.answer(&synced);
            }
            answer.await.map_err(|_| stopped())?
        }
    }

    /// Queues a write ([`LogStore::write`]) and returns at once a future that resolves when it
    /// is durable. Writes queued before the writer is free go out together with one sync, so
    /// keeping several in flight (from clones of the store) is how group commit pays off.
    /// Operations take effect in the order they were queued.
    pub fn submit_write(
        &self,
        hard_state: Option<HardState>,
        entries: Vec<Entry>,
    ) -> impl Future<Output = Result<(), StorageError>> + Send + 'static {
        self.call(move |reply| Command::Write {
            hard_state,
            entries,
            reply,
        })
    }
}

#[async_trait]
impl LogStore for FileLogStore {
    async fn recover(&mut self) -> Result<Recovered, StorageError> {
        self.call(move |reply| Command::Recover { reply }).await
    }

    async fn write(
        &mut self,
        hard_state: Option<HardState>,
        entries: Vec<Entry>,
    ) -> Result<(), StorageError> {
        self.submit_write(hard_state, entries).await
    }

    async fn truncate_suffix(&mut self, from: LogIndex) -> Result<(), StorageError> {
        self.call(move |reply| Command::Truncate { from, reply })
            .await
    }

    async fn purge_prefix(&mut self, up_to: EntryId) -> Result<(), StorageError> {
        self.call(move |reply| Command::Purge { up_to, reply })
            .await
    }

    async fn read(&mut self, from: LogIndex, to: LogIndex) -> Result<Vec<Entry>, StorageError> {
        self.call(move |reply| Command::Read { from, to, reply })
            .await
    }

    async fn save_voters(&mut self, voters: &BTreeSet<NodeId>) -> Result<(), StorageError> {
        let voters = voters.clone();
        self.call(move |reply| Command::SaveVoters { voters, reply })
            .await
    }

    async fn save_failovers(&mut self, history: &[Failover]) -> Result<(), StorageError> {
        let history = history.to_vec();
        self.call(move |reply| Command::SaveFailovers { history, reply })
            .await
    }
}
