//! What the turmoil tests of a store reopened after a process restart share: a host booted
//! three times, with a process restart between the first two boots and a power loss between
//! the last two.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use raft_core::node::StorageError;

/// What a simulated host does on each boot (1, 2, 3): the first two end by parking, holding
/// the store, until the test restarts or crashes the host.
pub type Boot = fn(u32) -> std::pin::Pin<Box<dyn Future<Output = Result<(), StorageError>>>>;

/// Runs `boot` on host "a" of a simulation with `seed` (torn writes in blocks of
/// `block_size` bytes, if any): boot 1, then a process restart (the simulated disk keeps
/// what was written and not synced, as the page cache does), boot 2, then a power loss
/// (what was not synced is lost or torn) and boot 3, which must finish.
pub fn restart_then_power_loss(seed: u64, block_size: Option<u64>, boot: Boot) {
    use std::cell::Cell;
    use std::rc::Rc;

    let mut builder = turmoil::Builder::new();
    builder.rng_seed(seed);
    if let Some(block_size) = block_size {
        builder.fs().block_size(block_size);
    }
    let mut sim = builder.build();
    let boots = Rc::new(Cell::new(0u32));
    let parked = Rc::new(Cell::new(0u32));
    {
        let (boots, parked) = (Rc::clone(&boots), Rc::clone(&parked));
        sim.host("a", move || {
            let (boots, parked) = (Rc::clone(&boots), Rc::clone(&parked));
            async move {
                boots.set(boots.get() + 1);
                let n = boots.get();
                boot(n)
                    .await
                    .map_err(|e| format!("seed {seed}, boot {n}: {e}"))?;
                parked.set(n);
                if n < 3 {
                    std::future::pending::<()>().await;
                }
                Ok(())
            }
        });
    }
    let run_until = |sim: &mut turmoil::Sim<'_>, n: u32| {
        for _ in 0..1_000 {
            if parked.get() == n {
                return;
            }
            sim.step().unwrap();
        }
        panic!("seed {seed}: boot {n} did not finish");
    };
    run_until(&mut sim, 1);
    sim.bounce("a");
    run_until(&mut sim, 2);
    sim.crash("a");
    sim.bounce("a");
    run_until(&mut sim, 3);
}
