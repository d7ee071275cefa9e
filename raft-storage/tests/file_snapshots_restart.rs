//! The durable snapshot store after a process restart: what the reopened store reports as the
//! latest image (a rename the dead process never made durable, still in the page cache) must
//! survive a later power loss, since the node relies on it (restores from it, purges its log
//! up to it).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use raft_core::node::{LogStore, SnapshotStore, StorageError};
use raft_core::{Entry, EntryId, LogIndex, Membership, NodeId, Payload, SnapshotMeta, Term};
use raft_storage::{FileLogOptions, FileLogStore, FileSnapshotStore};
use turmoil::fs::shim::std::fs;

mod support;

use support::restart_then_power_loss;

const SNAPSHOTS: &str = "/data/snap";
const LOG: &str = "/data/log";

fn meta(index: u64, term: u64) -> SnapshotMeta {
    SnapshotMeta::new(
        EntryId {
            term: Term(term),
            index: LogIndex(index),
        },
        Membership::new([NodeId(1), NodeId(2), NodeId(3)]).unwrap(),
    )
}

fn image() -> Vec<u8> {
    (0..20_000u32).map(|k| (k % 251) as u8).collect()
}

async fn read_all(store: &mut FileSnapshotStore) -> Result<Vec<u8>, StorageError> {
    let mut image = Vec::new();
    loop {
        let chunk = store.read(image.len() as u64, 4096).await?;
        image.extend_from_slice(&chunk.data);
        if chunk.last {
            return Ok(image);
        }
    }
}

/// Leaves in `SNAPSHOTS` what a process leaves when it dies inside `finish`, between the rename
/// of the image into place and the directory's sync (done by hand, since `finish` makes both in
/// one step): the image file complete and synced under its `.partial` name, then renamed to its
/// `.snap` name, and the directory never synced. The store's directory is created (durably) by
/// opening the store first, as the dead process did.
async fn renamed_but_not_synced(meta: &SnapshotMeta, image: &[u8]) -> Result<(), StorageError> {
    drop(FileSnapshotStore::open_simulated(SNAPSHOTS)?);
    // The bytes `finish` would have written: those of the same image finished elsewhere.
    let mut other = FileSnapshotStore::open_simulated("/other")?;
    let mut writer = other.create(meta).await?;
    writer.write(image).await?;
    writer.finish().await?;
    drop(other);
    let name = fs::read_dir("/other")
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .find(|name| name.ends_with(".snap"))
        .unwrap();
    let bytes = fs::read(format!("/other/{name}")).unwrap();
    let partial = format!(
        "{SNAPSHOTS}/{}-1-0.partial",
        name.strip_suffix(".snap").unwrap()
    );
    fs::write(&partial, bytes).unwrap();
    fs::File::open(&partial).unwrap().sync_all().unwrap();
    fs::rename(&partial, format!("{SNAPSHOTS}/{name}")).unwrap();
    Ok(())
}

/// The image a dead process renamed into place without syncing the directory is what the
/// store opened after the restart reports as its latest: a power loss afterwards must not take
/// it back.
#[test]
fn an_image_recovered_after_a_restart_survives_a_power_loss() {
    restart_then_power_loss(0, None, |boot| {
        Box::pin(async move {
            if boot == 1 {
                return renamed_but_not_synced(&meta(10, 2), &image()).await;
            }
            let mut store = FileSnapshotStore::open_simulated(SNAPSHOTS)?;
            assert_eq!(store.latest().await?, Some(meta(10, 2)), "boot {boot}");
            assert_eq!(read_all(&mut store).await?, image(), "boot {boot}");
            Ok(())
        })
    });
}

fn entries(from: u64, to: u64) -> Vec<Entry> {
    (from..=to)
        .map(|i| Entry {
            term: Term(2),
            index: LogIndex(i),
            payload: Payload::Command(format!("entry {i}").into_bytes().into()),
        })
        .collect()
}

/// What the image is relied on for: the node restarted on it purges its log up to it. A power
/// loss must then leave the image that covers what the log no longer holds, or entries 1..=10
/// are gone from the node for good.
#[test]
fn a_log_purged_up_to_a_recovered_image_still_has_it_after_a_power_loss() {
    restart_then_power_loss(0, None, |boot| {
        Box::pin(async move {
            let mut log = FileLogStore::open_simulated(LOG, FileLogOptions::new())?;
            let recovered = log.recover().await?;
            if boot == 1 {
                log.write(None, entries(1, 12)).await?;
                drop(log);
                return renamed_but_not_synced(&meta(10, 2), &image()).await;
            }
            let mut snapshots = FileSnapshotStore::open_simulated(SNAPSHOTS)?;
            let latest = snapshots.latest().await?;
            if boot == 2 {
                assert_eq!(latest, Some(meta(10, 2)));
                // What the node does once its state machine holds the image: compact the log.
                log.purge_prefix(meta(10, 2).last).await?;
            } else {
                assert_eq!(recovered.log_start, meta(10, 2).last);
                assert_eq!(recovered.entries, entries(11, 12));
                assert!(
                    latest
                        .as_ref()
                        .is_some_and(|latest| latest.last.index >= recovered.log_start.index),
                    "the log starts after index {}, and the snapshot that covers what it purged \
                     is gone: the latest snapshot is {latest:?}",
                    recovered.log_start.index.0,
                );
                assert_eq!(read_all(&mut snapshots).await?, image());
            }
            Ok(())
        })
    });
}
