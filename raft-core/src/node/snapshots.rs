//! The node's side of snapshots (§7): building its own off the node's task, storing the chunks
//! of one received from the leader and restoring the state machine from it (duty 7 of
//! [`crate::Actions`]), and reading chunks for followers (duty 8).

use super::{Error, SnapshotReader, SnapshotSource, SnapshotStore, SnapshotWriter, StateMachine};
use crate::{LogIndex, Raft, SnapshotMeta, SnapshotRead, SnapshotWrite};
use tokio::sync::oneshot;
use tracing::{info, warn};

/// Who waits for a snapshot to be built (see [`super::NodeHandle::snapshot`]).
pub(super) type SnapshotReply = oneshot::Sender<Result<SnapshotMeta, Error>>;

/// A build running on its own task.
struct Build {
    meta: SnapshotMeta,
    /// The image's size in bytes once it is durable, or why it failed.
    done: oneshot::Receiver<Result<u64, Error>>,
    waiters: Vec<SnapshotReply>,
}

/// The snapshot store and what is under way with it.
pub(super) struct Snapshots<SS> {
    store: SS,
    /// The image being received from the leader.
    receiving: Option<(SnapshotMeta, Box<dyn SnapshotWriter>)>,
    building: Option<Build>,
    /// The latest snapshot this node holds, and its size (what `Status` reports).
    latest: Option<(SnapshotMeta, u64)>,
    chunk_bytes: usize,
}

impl<SS: SnapshotStore> Snapshots<SS> {
    pub(super) fn new(store: SS, latest: Option<SnapshotMeta>, chunk_bytes: usize) -> Self {
        Snapshots {
            store,
            receiving: None,
            building: None,
            latest: latest.map(|meta| (meta, 0)),
            chunk_bytes,
        }
    }

    /// The latest snapshot's last index and size in bytes (0 when not known since a restart).
    pub(super) fn latest(&self) -> Option<(LogIndex, u64)> {
        self.latest.as_ref().map(|(m, size)| (m.last.index, *size))
    }

    pub(super) fn building(&self) -> bool {
        self.building.is_some()
    }

    /// Starts building a snapshot of the state machine at the protocol's applied index, unless
    /// one is being built (then `reply`, if any, waits for that one) or the latest already
    /// covers it (then `reply` gets the latest at once).
    pub(super) async fn start_build<SM: StateMachine>(
        &mut self,
        raft: &Raft,
        // Mutable only to keep the task `Send` with a state machine that is not `Sync`.
        state_machine: &mut SM,
        reply: Option<SnapshotReply>,
    ) {
        if let Some(build) = self.building.as_mut() {
            build.waiters.extend(reply);
            return;
        }
        let applied = raft.applied_index();
        if let Some((latest, _)) = &self.latest
            && latest.last.index >= applied
        {
            if let Some(reply) = reply {
                let _ = reply.send(Ok(latest.clone()));
            }
            return;
        }
        let Some(meta) = raft.snapshot_meta(applied) else {
            if let Some(reply) = reply {
                let _ = reply.send(Err(Error::InvalidArgument(
                    "nothing applied to take a snapshot of, or no membership known yet".into(),
                )));
            }
            return;
        };
        let source = state_machine
            .snapshot()
            .await
            .map_err(|e| Error::InvalidArgument(format!("the state machine: {e}")));
        let started = match source {
            Ok(source) => match self.store.create(&meta).await {
                Ok(writer) => Ok((source, writer)),
                Err(error) => Err(Error::storage(error)),
            },
            Err(error) => Err(error),
        };
        let (source, writer) = match started {
            Ok(parts) => parts,
            Err(error) => {
                warn!(%error, "snapshot not started");
                if let Some(reply) = reply {
                    let _ = reply.send(Err(error));
                }
                return;
            }
        };
        let (done_tx, done) = oneshot::channel();
        tokio::spawn(async move {
            let _ = done_tx.send(write_image(source, writer).await);
        });
        self.building = Some(Build {
            meta,
            done,
            waiters: reply.into_iter().collect(),
        });
    }

    /// Starts a build if one was `asked` for, or if `every` entries (0: never) were applied
    /// since the latest snapshot (the policy of [`super::NodeConfig::snapshot_every`]).
    pub(super) async fn maybe_build<SM: StateMachine>(
        &mut self,
        raft: &Raft,
        state_machine: &mut SM,
        asked: Vec<SnapshotReply>,
        every: u64,
    ) -> Vec<SnapshotReply> {
        if asked.is_empty() && !self.due(raft, every) {
            return asked;
        }
        // A build under way that ends short of what is applied now cannot answer a caller
        // who asked for a snapshot of the state as it is: such callers wait for the next
        // build, which starts once this one is done.
        if let Some(build) = &self.building
            && build.meta.last.index < raft.applied_index()
        {
            return asked;
        }
        let mut asked = asked.into_iter();
        self.start_build(raft, state_machine, asked.next()).await;
        for reply in asked {
            // They wait for the build just started (or get the latest snapshot at once).
            self.start_build(raft, state_machine, Some(reply)).await;
        }
        Vec::new()
    }

    /// Whether the policy asks for a build now: `every` entries (0: never) were applied since
    /// the latest snapshot, and none is being built.
    pub(super) fn due(&self, raft: &Raft, every: u64) -> bool {
        let latest = self.latest.as_ref().map_or(0, |(m, _)| m.last.index.0);
        every > 0 && raft.applied_index().0.saturating_sub(latest) >= every && !self.building()
    }

    /// Waits for the build under way (call only while [`Snapshots::building`]).
    pub(super) async fn build_done(&mut self) -> Result<u64, Error> {
        match self.building.as_mut() {
            Some(build) => (&mut build.done).await.unwrap_or(Err(Error::Shutdown)),
            None => std::future::pending().await,
        }
    }

    /// The build finished with `result`: a durable snapshot is reported to the protocol, which
    /// may then discard the log before it (keeping `keep` entries).
    pub(super) fn built(&mut self, raft: &mut Raft, result: Result<u64, Error>, keep: u64) {
        let Some(build) = self.building.take() else {
            return;
        };
        let outcome = result.and_then(|size| {
            raft.snapshot_created(build.meta.clone())
                .map_err(|e| Error::InvalidArgument(e.to_string()))?;
            info!(index = build.meta.last.index.0, size, "snapshot taken");
            if self
                .latest
                .as_ref()
                .is_none_or(|(m, _)| m.last.index < build.meta.last.index)
            {
                self.latest = Some((build.meta.clone(), size));
            }
            raft.compact(LogIndex(build.meta.last.index.0.saturating_sub(keep)));
            Ok(build.meta.clone())
        });
        if let Err(error) = &outcome {
            warn!(%error, "snapshot failed");
        }
        for waiter in build.waiters {
            let _ = waiter.send(outcome.clone());
        }
    }

    /// Duty 2: stores the chunks of a snapshot received from the leader. Returns the snapshot
    /// whose last chunk was stored, to install (duty 7).
    pub(super) async fn store_chunks(
        &mut self,
        chunks: Vec<SnapshotWrite>,
    ) -> Result<Option<SnapshotMeta>, Error> {
        let mut finished = None;
        for chunk in chunks {
            if chunk.offset == 0 {
                let writer = self
                    .store
                    .create(&chunk.meta)
                    .await
                    .map_err(Error::storage)?;
                self.receiving = Some((chunk.meta.clone(), writer));
            }
            let Some((meta, writer)) = self.receiving.as_mut().filter(|(m, _)| *m == chunk.meta)
            else {
                return Err(Error::storage(super::StorageError::Unavailable(format!(
                    "a chunk at {} of a snapshot not being received",
                    chunk.offset
                ))));
            };
            writer.write(&chunk.data).await.map_err(Error::storage)?;
            if chunk.last {
                let meta = meta.clone();
                if let Some((_, writer)) = self.receiving.take() {
                    writer.finish().await.map_err(Error::storage)?;
                }
                finished = Some(meta);
            }
        }
        Ok(finished)
    }

    /// Duty 7: restores the state machine from the stored image of `meta`.
    pub(super) async fn restore<SM: StateMachine>(
        &mut self,
        state_machine: &mut SM,
        meta: &SnapshotMeta,
    ) -> Result<(), Error> {
        let mut reader = SnapshotReader::new(&mut self.store, meta.clone(), self.chunk_bytes);
        state_machine
            .restore(meta, &mut reader)
            .await
            .map_err(|e| {
                Error::storage(super::StorageError::Corrupt(format!(
                    "restoring the snapshot at {}: {e}",
                    meta.last.index
                )))
            })?;
        info!(index = meta.last.index.0, "snapshot installed");
        if self
            .latest
            .as_ref()
            .is_none_or(|(m, _)| m.last.index < meta.last.index)
        {
            self.latest = Some((meta.clone(), reader.bytes_read()));
        }
        Ok(())
    }

    /// Duty 8: reads the chunks the protocol asked for and hands them to it.
    pub(super) async fn read_chunks(
        &mut self,
        raft: &mut Raft,
        reads: Vec<SnapshotRead>,
    ) -> Result<(), Error> {
        for read in reads {
            let max_bytes = read.max_bytes.min(self.chunk_bytes);
            // A newer image may have replaced the one being sent (a build finished): a chunk of
            // it makes the protocol start the transfer over with it, and an offset past its end
            // fails the read, which starts the transfer over too.
            match self.store.read(read.offset, max_bytes).await {
                Ok(chunk) => raft.snapshot_read(
                    read.to,
                    chunk.meta,
                    chunk.offset,
                    chunk.data.into(),
                    chunk.last,
                ),
                // Not fatal: this node's log and state are intact, only this transfer stops.
                Err(error) => {
                    warn!(%error, peer = %read.to, "a snapshot chunk could not be read");
                    raft.snapshot_read_failed(read.to);
                }
            }
        }
        Ok(())
    }

    /// Answers every waiter with `error` (the node is stopping).
    pub(super) fn fail_all(&mut self, error: &Error) {
        if let Some(build) = self.building.take() {
            for waiter in build.waiters {
                let _ = waiter.send(Err(error.clone()));
            }
        }
    }
}

/// Writes the image from `source` into `writer` and finishes it; returns its size.
async fn write_image(
    mut source: Box<dyn SnapshotSource>,
    mut writer: Box<dyn SnapshotWriter>,
) -> Result<u64, Error> {
    let mut size = 0u64;
    while let Some(chunk) = source
        .next_chunk()
        .await
        .map_err(|e| Error::InvalidArgument(format!("the state machine's image: {e}")))?
    {
        writer.write(&chunk).await.map_err(Error::storage)?;
        size += chunk.len() as u64;
    }
    writer.finish().await.map_err(Error::storage)?;
    Ok(size)
}
