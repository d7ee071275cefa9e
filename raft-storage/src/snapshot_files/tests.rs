//! The tests of the durable snapshot store: the conformance suite, damage refused at open,
//! leftovers of crashes, and crashes under turmoil's simulated filesystem.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use super::header::header_len_of;
use super::names::{Name, PARTIAL_SUFFIX, classify, image_name, partial_name};
use super::*;
use crate::conformance;
use crate::wal::fs::LOCK_FILE;
use raft_core::{EntryId, LogIndex, Membership, NodeId, Term};

mod simulated;

fn meta(term: u64, index: u64, voters: &[u64]) -> SnapshotMeta {
    SnapshotMeta::new(
        EntryId {
            term: Term(term),
            index: LogIndex(index),
        },
        Membership::new(voters.iter().copied().map(NodeId)).unwrap(),
    )
}

async fn write(store: &mut FileSnapshotStore, meta: &SnapshotMeta, image: &[u8]) {
    let mut writer = store.create(meta).await.unwrap();
    for piece in image.chunks(1000) {
        writer.write(piece).await.unwrap();
    }
    writer.finish().await.unwrap();
}

async fn read_all(store: &mut FileSnapshotStore) -> Result<Vec<u8>, StorageError> {
    let mut image = Vec::new();
    loop {
        let chunk = store.read(image.len() as u64, 333).await?;
        image.extend_from_slice(&chunk.data);
        if chunk.last {
            return Ok(image);
        }
    }
}

fn files(dir: &Path) -> Vec<String> {
    Fs::Real.list(dir).unwrap()
}

fn image_path(dir: &Path, meta: &SnapshotMeta) -> PathBuf {
    dir.join(image_name(meta.last))
}

fn expect_corrupt(result: Result<FileSnapshotStore, StorageError>, path: &Path, what: &str) {
    match result {
        Err(StorageError::Corrupt(message)) => {
            assert!(
                message.contains(&path.display().to_string()) && message.contains(what),
                "the message should name {} and say {what:?}: {message}",
                path.display()
            );
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[tokio::test]
async fn snapshot_files_pass_the_conformance_suite() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path().to_path_buf();
    let open = |location: u32| {
        let dir = root.join(format!("store-{location}"));
        async move { FileSnapshotStore::open(dir).await.unwrap() }
    };
    conformance::snapshots(open).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshot_files_pass_the_conformance_suite_on_a_multi_threaded_runtime() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path().to_path_buf();
    let open = |location: u32| {
        let dir = root.join(format!("store-{location}"));
        async move { FileSnapshotStore::open(dir).await.unwrap() }
    };
    conformance::snapshots(open).await;
}

#[tokio::test]
async fn an_image_survives_reopen_and_the_directory_is_created() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("a/b/snapshots");
    let meta = meta(3, 17, &[1, 2, 3]);
    let image: Vec<u8> = (0..5_000u32).map(|k| (k % 251) as u8).collect();
    let mut store = FileSnapshotStore::open(&dir).await.unwrap();
    write(&mut store, &meta, &image).await;
    drop(store);

    let mut store = FileSnapshotStore::open(&dir).await.unwrap();
    assert_eq!(store.latest().await.unwrap(), Some(meta.clone()));
    assert_eq!(read_all(&mut store).await.unwrap(), image);
    assert_eq!(files(&dir), [LOCK_FILE.to_string(), image_name(meta.last)]);
}

#[tokio::test]
async fn the_directory_is_locked_while_a_store_has_it_open() {
    let root = tempfile::tempdir().unwrap();
    let store = FileSnapshotStore::open(root.path()).await.unwrap();
    let error = FileSnapshotStore::open(root.path()).await.unwrap_err();
    assert!(
        matches!(&error, StorageError::Io(e) if e.kind() == io::ErrorKind::WouldBlock),
        "{error}"
    );
    drop(store);
    FileSnapshotStore::open(root.path()).await.unwrap();
}

#[tokio::test]
async fn a_flipped_bit_in_the_header_is_refused_at_open() {
    let root = tempfile::tempdir().unwrap();
    let meta = meta(2, 9, &[1, 2]);
    let mut store = FileSnapshotStore::open(root.path()).await.unwrap();
    write(&mut store, &meta, b"the image").await;
    drop(store);

    let path = image_path(root.path(), &meta);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[17] ^= 0x04; // in the last index
    std::fs::write(&path, &bytes).unwrap();
    expect_corrupt(
        FileSnapshotStore::open(root.path()).await,
        &path,
        "header checksum",
    );
}

#[tokio::test]
async fn a_truncated_image_file_is_refused_at_open() {
    let root = tempfile::tempdir().unwrap();
    let meta = meta(2, 9, &[1, 2]);
    let mut store = FileSnapshotStore::open(root.path()).await.unwrap();
    write(&mut store, &meta, &[7; 3_000]).await;
    drop(store);

    let path = image_path(root.path(), &meta);
    let header_len = header_len_of(&meta);
    for (len, what) in [
        (header_len + 2_999, "truncated"),
        (header_len, "truncated"),
        (header_len - 1, "truncated"),
        (12, "too short"),
        (3, "too short"),
        (0, "too short"),
    ] {
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(len).unwrap();
        drop(file);
        expect_corrupt(FileSnapshotStore::open(root.path()).await, &path, what);
    }
}

#[tokio::test]
async fn an_unknown_format_version_is_refused_at_open() {
    let root = tempfile::tempdir().unwrap();
    let meta = meta(2, 9, &[1]);
    let mut store = FileSnapshotStore::open(root.path()).await.unwrap();
    write(&mut store, &meta, b"image").await;
    drop(store);

    let path = image_path(root.path(), &meta);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[8..12].copy_from_slice(&7u32.to_le_bytes());
    // With a valid header CRC: the version alone is the reason.
    let header_len = header_len_of(&meta) as usize;
    let crc = crc32c::crc32c(&bytes[..header_len - 4]);
    bytes[header_len - 4..header_len].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    expect_corrupt(
        FileSnapshotStore::open(root.path()).await,
        &path,
        "format version 7",
    );
}

#[tokio::test]
async fn a_header_disagreeing_with_its_name_is_refused_at_open() {
    let root = tempfile::tempdir().unwrap();
    let meta = meta(2, 9, &[1]);
    let mut store = FileSnapshotStore::open(root.path()).await.unwrap();
    write(&mut store, &meta, b"image").await;
    drop(store);

    let renamed = root.path().join(image_name(self::meta(2, 90, &[1]).last));
    std::fs::rename(image_path(root.path(), &meta), &renamed).unwrap();
    expect_corrupt(
        FileSnapshotStore::open(root.path()).await,
        &renamed,
        "its name says index 90",
    );
}

#[tokio::test]
async fn a_flipped_bit_in_the_image_is_caught_when_it_is_read_to_its_end() {
    let root = tempfile::tempdir().unwrap();
    let meta = meta(2, 9, &[1]);
    let image = vec![42; 2_000];
    let mut store = FileSnapshotStore::open(root.path()).await.unwrap();
    write(&mut store, &meta, &image).await;
    drop(store);

    let path = image_path(root.path(), &meta);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = header_len_of(&meta) as usize + 1_234;
    bytes[at] ^= 0x80;
    std::fs::write(&path, &bytes).unwrap();
    let mut store = FileSnapshotStore::open(root.path()).await.unwrap();
    match read_all(&mut store).await {
        Err(StorageError::Corrupt(message)) => {
            assert!(message.contains("image checksum"), "{message}");
            assert!(message.contains(&path.display().to_string()), "{message}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // The intact image of another store reads back without complaint.
    let mut intact = FileSnapshotStore::open(root.path().join("intact"))
        .await
        .unwrap();
    write(&mut intact, &meta, &image).await;
    assert_eq!(read_all(&mut intact).await.unwrap(), image);
}

#[tokio::test]
async fn a_leftover_partial_file_is_removed_at_open_and_never_visible() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("store");
    let old = meta(1, 5, &[1]);
    let mut store = FileSnapshotStore::open(&dir).await.unwrap();
    write(&mut store, &old, b"old image").await;
    drop(store);

    // A crash just before a newer image was renamed into place: its file is complete,
    // synced, but still under its temporary name.
    let newer = meta(2, 9, &[1]);
    let other = root.path().join("other");
    let mut elsewhere = FileSnapshotStore::open(&other).await.unwrap();
    write(&mut elsewhere, &newer, b"newer image").await;
    let partial = dir.join(partial_name(newer.last, 0));
    std::fs::copy(image_path(&other, &newer), &partial).unwrap();
    std::fs::write(dir.join(partial_name(newer.last, 1)), b"torn").unwrap();

    let mut store = FileSnapshotStore::open(&dir).await.unwrap();
    assert_eq!(store.latest().await.unwrap(), Some(old.clone()));
    assert_eq!(read_all(&mut store).await.unwrap(), b"old image");
    assert_eq!(files(&dir), [LOCK_FILE.to_string(), image_name(old.last)]);
}

#[tokio::test]
async fn an_older_image_is_removed_only_after_the_newer_is_finished() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    let old = meta(1, 5, &[1]);
    let new = meta(2, 9, &[1]);
    let mut store = FileSnapshotStore::open(dir).await.unwrap();
    write(&mut store, &old, b"old image").await;

    let mut writer = store.create(&new).await.unwrap();
    writer.write(b"new image").await.unwrap();
    // The `.partial` file's number is the process's next: only its start is known.
    let unfinished = partial_name(new.last, 0);
    let unfinished = unfinished
        .strip_suffix(&format!("0{PARTIAL_SUFFIX}"))
        .unwrap();
    let names = files(dir);
    assert_eq!(names.len(), 3, "{names:?}");
    assert_eq!(names[..2], [LOCK_FILE.to_string(), image_name(old.last)]);
    assert!(
        names[2].starts_with(unfinished) && names[2].ends_with(PARTIAL_SUFFIX),
        "{names:?}"
    );
    assert_eq!(store.latest().await.unwrap(), Some(old.clone()));
    writer.finish().await.unwrap();
    assert_eq!(files(dir), [LOCK_FILE.to_string(), image_name(new.last)]);
    assert_eq!(read_all(&mut store).await.unwrap(), b"new image");
}

#[tokio::test]
async fn an_older_image_left_by_a_crash_is_removed_at_open() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    let old = meta(1, 5, &[1]);
    let new = meta(2, 9, &[1]);
    let mut store = FileSnapshotStore::open(dir).await.unwrap();
    write(&mut store, &old, b"old image").await;
    let saved = std::fs::read(image_path(dir, &old)).unwrap();
    write(&mut store, &new, b"new image").await;
    drop(store);
    // A crash between the rename of the newer image and the removal of the older.
    std::fs::write(image_path(dir, &old), saved).unwrap();

    let mut store = FileSnapshotStore::open(dir).await.unwrap();
    assert_eq!(store.latest().await.unwrap(), Some(new.clone()));
    assert_eq!(read_all(&mut store).await.unwrap(), b"new image");
    assert_eq!(files(dir), [LOCK_FILE.to_string(), image_name(new.last)]);
}

#[tokio::test]
async fn a_dropped_writer_leaves_no_file_behind() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    let mut store = FileSnapshotStore::open(dir).await.unwrap();
    let mut writer = store.create(&meta(1, 5, &[1])).await.unwrap();
    writer.write(b"half an image").await.unwrap();
    drop(writer);
    // The removal runs on the blocking pool.
    for _ in 0..500 {
        if files(dir) == [LOCK_FILE] {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(files(dir), [LOCK_FILE]);
    assert_eq!(store.latest().await.unwrap(), None);
}

/// Two readers of a damaged image interleave their reads with chunks of different sizes, and
/// a third starts over from the image's start half-way and stops: each of the first two,
/// having read the image from its start to its end, gets `Corrupt` at its last chunk.
///
/// Why: a leader sends its image to several followers at once, each transfer from offset 0
/// with chunks of its own size. A reader whose last chunk goes through unchecked sends the
/// damaged image whole, and the follower stores it under a checksum of its own, as good.
#[tokio::test]
async fn a_damaged_image_is_caught_by_every_reader_however_reads_interleave() {
    let root = tempfile::tempdir().unwrap();
    let meta = meta(2, 9, &[1]);
    let image: Vec<u8> = (0..5_000u32).map(|k| (k % 239) as u8).collect();
    let mut intact = FileSnapshotStore::open(root.path().join("intact"))
        .await
        .unwrap();
    write(&mut intact, &meta, &image).await;
    let mut damaged = FileSnapshotStore::open(root.path().join("damaged"))
        .await
        .unwrap();
    write(&mut damaged, &meta, &image).await;
    drop(damaged);
    let path = image_path(&root.path().join("damaged"), &meta);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[header_len_of(&meta) as usize + 4_321] ^= 0x10;
    std::fs::write(&path, &bytes).unwrap();
    let damaged = FileSnapshotStore::open(root.path().join("damaged"))
        .await
        .unwrap();

    for (mut store, ok) in [(intact, true), (damaged, false)] {
        let mut third = store.clone();
        let mut readers = [(store.clone(), 0u64, 333usize), (store.clone(), 0, 500)];
        let mut outcomes = [None, None];
        let mut round = 0;
        while outcomes.iter().any(Option::is_none) {
            for ((reader, offset, max_bytes), outcome) in readers.iter_mut().zip(&mut outcomes) {
                if outcome.is_some() {
                    continue;
                }
                match reader.read(*offset, *max_bytes).await {
                    Ok(chunk) => {
                        *offset += chunk.data.len() as u64;
                        if chunk.last {
                            *outcome = Some(Ok(()));
                        }
                    }
                    Err(error) => *outcome = Some(Err(error)),
                }
            }
            round += 1;
            if round == 4 {
                third.read(0, 100).await.unwrap();
            }
        }
        for outcome in outcomes {
            match outcome.unwrap() {
                Ok(()) => assert!(ok, "a reader read the damaged image without complaint"),
                Err(StorageError::Corrupt(message)) if !ok => {
                    assert!(message.contains("image checksum"), "{message}");
                }
                Err(error) => panic!("unexpected {error:?}"),
            }
        }
        // A reader from the start to the end gets the verdict again.
        assert_eq!(read_all(&mut store).await.is_ok(), ok);
    }
}

/// A write that failed after putting some of its bytes in the file, followed by a shorter
/// write in its place (or none), leaves bytes past the image's end; finishing cuts them off,
/// so the finished image is what its header says, after a restart too.
///
/// Why: a failed write may be retried, and the caller decides with what. A file longer than
/// its header says is refused at open as damaged: the store would acknowledge an image and
/// then refuse to open at all.
#[tokio::test]
async fn bytes_a_failed_write_left_past_the_image_are_cut_off_at_finish() {
    use std::os::unix::fs::FileExt;

    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    let meta = meta(2, 9, &[1, 2]);
    let mut store = FileSnapshotStore::open(dir).await.unwrap();
    let mut writer = store.create(&meta).await.unwrap();
    writer.write(b"the image").await.unwrap();
    let partial = files(dir)
        .into_iter()
        .find(|name| name.ends_with(PARTIAL_SUFFIX))
        .unwrap();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join(partial))
        .unwrap();
    file.write_all_at(b"half of a failed write", header_len_of(&meta) + 9)
        .unwrap();
    drop(file);
    writer.finish().await.unwrap();
    assert_eq!(read_all(&mut store).await.unwrap(), b"the image");
    drop(store);

    let mut store = FileSnapshotStore::open(dir).await.unwrap();
    assert_eq!(store.latest().await.unwrap(), Some(meta));
    assert_eq!(read_all(&mut store).await.unwrap(), b"the image");
}

/// A writer dropped with its store: the writer's `.partial` file is removed on the blocking
/// pool, perhaps after the directory's lock went with the store. A store opened on the
/// directory in the meantime (a restart in the same process) writes an image of the same
/// snapshot; the late removal must not take that store's `.partial` file.
#[test]
fn a_late_removal_by_a_dropped_writer_spares_the_next_stores_files() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().to_path_buf();
    let meta = meta(2, 9, &[1]);
    // The first store's runtime has one blocking thread, held until the restart is under way.
    let first = tokio::runtime::Builder::new_current_thread()
        .max_blocking_threads(1)
        .build()
        .unwrap();
    let (store, writer) = first.block_on(async {
        let mut store = FileSnapshotStore::open(&dir).await.unwrap();
        let mut writer = store.create(&meta).await.unwrap();
        writer.write(b"an interrupted image").await.unwrap();
        (store, writer)
    });
    let (release, held) = std::sync::mpsc::channel::<()>();
    let hold = first.spawn_blocking(move || {
        let _ = held.recv();
    });
    {
        let _runtime = first.enter();
        drop(writer);
        drop(store);
    }

    let second = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut store = second.block_on(FileSnapshotStore::open(&dir)).unwrap();
    let mut writer = second.block_on(store.create(&meta)).unwrap();
    second.block_on(writer.write(b"the image")).unwrap();
    // The first store's blocking thread is free: the dropped writer's removal runs, and then
    // (one thread, in order) an empty operation that says it has.
    release.send(()).unwrap();
    first.block_on(hold).unwrap();
    first.block_on(first.spawn_blocking(|| ())).unwrap();

    second.block_on(writer.finish()).unwrap();
    assert_eq!(second.block_on(read_all(&mut store)).unwrap(), b"the image");
}

#[test]
fn names_parse_back() {
    let last = meta(u64::MAX, 42, &[1]).last;
    assert_eq!(classify(&image_name(last)), Name::Image(last));
    assert_eq!(classify(&partial_name(last, 3)), Name::Partial);
    assert_eq!(classify("snapshot-12-34.snap"), Name::Malformed);
    assert_eq!(classify("LOCK"), Name::Other);
    assert_eq!(classify("notes.txt"), Name::Other);
}

/// An image written by the previous format (version 1, whose header listed the voters only)
/// is still read after an upgrade, as a membership of those voters.
#[tokio::test]
async fn an_image_of_the_previous_format_is_read_as_its_voters() {
    let root = tempfile::tempdir().unwrap();
    let meta = meta(3, 12, &[1, 2, 3]);
    let image = b"an image of format 1";
    let mut header = Vec::new();
    header.extend_from_slice(b"RAFTSNAP");
    header.extend_from_slice(&1u32.to_le_bytes());
    header.extend_from_slice(&(52u32 + 3 * 8).to_le_bytes());
    header.extend_from_slice(&12u64.to_le_bytes());
    header.extend_from_slice(&3u64.to_le_bytes());
    header.extend_from_slice(&(image.len() as u64).to_le_bytes());
    header.extend_from_slice(&crc32c::crc32c(image).to_le_bytes());
    header.extend_from_slice(&3u32.to_le_bytes());
    for voter in [1u64, 2, 3] {
        header.extend_from_slice(&voter.to_le_bytes());
    }
    let crc = crc32c::crc32c(&header);
    header.extend_from_slice(&crc.to_le_bytes());
    std::fs::create_dir_all(root.path()).unwrap();
    std::fs::write(
        image_path(root.path(), &meta),
        [&header[..], image].concat(),
    )
    .unwrap();

    let mut store = FileSnapshotStore::open(root.path()).await.unwrap();
    assert_eq!(store.latest().await.unwrap(), Some(meta));
    assert_eq!(read_all(&mut store).await.unwrap(), image);
}
