//! Opening a store: creating its directory durably, locking it, and recovering from a crash
//! (deleting `.partial` files, checking every image, keeping only the latest).

use super::header::read_header;
use super::names::{Name, classify};
use super::{FileSnapshotStore, Image, Shared, State, corrupt, io_at, remove_if_present};
use crate::wal::fs::{Fs, Open};
use raft_core::node::StorageError;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

fn open_image(fs: Fs, path: PathBuf) -> Result<Image, StorageError> {
    let file = fs
        .open(&path, Open::Read)
        .map_err(io_at("opening", &path))?;
    let header = read_header(&file, &path)?;
    Ok(Image {
        path,
        header,
        file,
        checked: Mutex::new((0, 0)),
    })
}

pub(super) fn open_on(fs: Fs, dir: PathBuf) -> Result<FileSnapshotStore, StorageError> {
    fs.create_dir_durably(&dir)
        .map_err(io_at("creating the directory", &dir))?;
    let lock_file = fs.lock_dir(&dir).map_err(io_at("locking", &dir))?;

    let mut images = Vec::new();
    for name in fs.list(&dir).map_err(io_at("listing", &dir))? {
        let path = dir.join(&name);
        match classify(&name) {
            Name::Partial => {
                // An image whose writing a crash interrupted: never finished, never visible.
                remove_if_present(fs, &path)?;
            }
            Name::Image(named) => {
                let image = open_image(fs, path)?;
                if image.header.meta.last != named {
                    let last = image.header.meta.last;
                    return Err(corrupt(
                        &image.path,
                        format!(
                            "its name says index {} term {}, its header index {} term {}",
                            named.index.0, named.term.0, last.index.0, last.term.0
                        ),
                    ));
                }
                images.push(image);
            }
            Name::Malformed => {
                return Err(corrupt(
                    &path,
                    "named like a snapshot, but the name does not parse",
                ));
            }
            Name::Other => {}
        }
    }
    // What was listed may be renames (and removals) of a process that died inside `finish`
    // before its directory sync: after a process restart the page cache still shows them, a
    // power loss need not keep them. The latest image is reported to the node, which restores
    // from it and purges its log up to it, and the older ones are removed because of it: make
    // the directory durable before any of that (and with it the `.partial` removals above).
    // The image files' data needs no sync: `finish` synced it before the rename.
    fs.sync_dir(&dir)
        .map_err(io_at("syncing the directory", &dir))?;
    images.sort_by_key(|image| (image.header.meta.last.index, image.header.meta.last.term));
    let latest = images.pop();
    let changed = !images.is_empty();
    for older in images {
        // A crash came between a newer image's rename and the removal of the older.
        let Image { path, file, .. } = older;
        drop(file);
        remove_if_present(fs, &path)?;
    }
    if changed {
        fs.sync_dir(&dir)
            .map_err(io_at("syncing the directory", &dir))?;
    }
    Ok(FileSnapshotStore {
        shared: Arc::new(Shared {
            fs,
            dir,
            state: Mutex::new(State {
                latest: latest.map(Arc::new),
                poisoned: None,
            }),
            finishing: Mutex::new(()),
            _lock: lock_file,
        }),
    })
}
