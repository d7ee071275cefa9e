//! The durable snapshot store under turmoil's simulated filesystem, crashed while writing.

use super::super::names::{PARTIAL_SUFFIX, image_name};
use super::{meta, read_all};
use crate::FileSnapshotStore;
use crate::wal::fs::Fs;
use crate::wal::fs::LOCK_FILE;
use raft_core::node::SnapshotStore;
use std::path::Path;

/// Under turmoil's simulated filesystem: an image finished before a crash is there, intact,
/// after the restart; a second image being written at the crash leaves nothing visible,
/// although its `.partial` file survived the crash (its directory entry was synced when
/// the first image was finished). Without unsynced data reaching the disk (which catches a
/// missing fsync every time), and with it at random (as a page cache may), over seeds.
#[test]
fn a_crash_keeps_the_finished_image_and_loses_the_unfinished_one() {
    crash_while_writing(0, 0.0);
    for seed in 1..=16 {
        crash_while_writing(seed, 0.5);
    }
}

fn crash_while_writing(seed: u64, sync_probability: f64) {
    use std::cell::Cell;
    use std::rc::Rc;

    const DIR: &str = "/data/snap";
    let finished = meta(2, 10, &[1, 2, 3]);
    let finished_image: Vec<u8> = (0..20_000u32).map(|k| (k % 241) as u8).collect();
    let unfinished = meta(3, 20, &[1, 2, 3]);

    let mut builder = turmoil::Builder::new();
    builder.rng_seed(seed);
    builder.fs().sync_probability(sync_probability);
    let mut sim = builder.build();
    let boots = Rc::new(Cell::new(0));
    let done = Rc::new(Cell::new(0));
    {
        let (boots, done) = (Rc::clone(&boots), Rc::clone(&done));
        let (finished, unfinished) = (finished.clone(), unfinished.clone());
        let finished_image = finished_image.clone();
        sim.host("a", move || {
            let (boots, done) = (Rc::clone(&boots), Rc::clone(&done));
            let (finished, unfinished) = (finished.clone(), unfinished.clone());
            let finished_image = finished_image.clone();
            async move {
                boots.set(boots.get() + 1);
                if boots.get() == 1 {
                    let mut store = FileSnapshotStore::open_simulated(DIR)?;
                    let mut first = store.create(&finished).await?;
                    let mut second = store.create(&unfinished).await?;
                    for piece in finished_image.chunks(3_000) {
                        first.write(piece).await?;
                        second.write(&[9; 2_500]).await?;
                    }
                    first.finish().await?;
                    second.write(&[9; 10_000]).await?;
                    done.set(1);
                    // The crash comes here, with the second image unfinished.
                    let _alive = (store, second);
                    std::future::pending::<()>().await;
                } else {
                    let names = Fs::Simulated.list(Path::new(DIR))?;
                    assert!(
                        names.iter().any(|name| name.ends_with(PARTIAL_SUFFIX)),
                        "seed {seed}: the unfinished image's file should survive the \
                         crash: {names:?}"
                    );
                    let mut store = FileSnapshotStore::open_simulated(DIR)?;
                    assert_eq!(store.latest().await?, Some(finished.clone()), "seed {seed}");
                    assert_eq!(read_all(&mut store).await?, finished_image, "seed {seed}");
                    assert_eq!(
                        Fs::Simulated.list(Path::new(DIR))?,
                        [LOCK_FILE.to_string(), image_name(finished.last)],
                        "seed {seed}"
                    );
                    done.set(2);
                }
                Ok(())
            }
        });
    }
    for _ in 0..1_000 {
        if done.get() == 1 {
            break;
        }
        sim.step().unwrap();
    }
    assert_eq!(
        done.get(),
        1,
        "seed {seed}: the first boot did not get to the crash"
    );
    sim.crash("a");
    sim.bounce("a");
    for _ in 0..1_000 {
        if done.get() == 2 {
            break;
        }
        sim.step().unwrap();
    }
    assert_eq!(done.get(), 2, "seed {seed}: the second boot did not finish");
    assert_eq!(boots.get(), 2);
}
