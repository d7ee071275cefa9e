//! The log store conformance suite, run against [`MemLogStore`].
//!
//! A location is a store kept in a map: the first `open` of a number creates it, and later
//! ones return a clone, which shares its contents, as a restarted node would find its disk.

use raft_storage::{MemLogStore, conformance};
use std::collections::BTreeMap;
use std::future::Ready;
use std::sync::{Mutex, PoisonError};

/// Stores by location, created on first use.
#[derive(Default)]
struct Locations {
    stores: Mutex<BTreeMap<u32, MemLogStore>>,
}

impl Locations {
    fn open(&self, location: u32) -> Ready<MemLogStore> {
        // A panic in another check cannot leave the map half-updated, so a poisoned lock is
        // still usable.
        let mut stores = self.stores.lock().unwrap_or_else(PoisonError::into_inner);
        std::future::ready(stores.entry(location).or_default().clone())
    }
}

#[tokio::test]
async fn memory_store_passes_the_whole_suite() {
    let locations = Locations::default();
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
    let locations = Locations::default();
    conformance::overlapping_write_replaces_suffix(|location| locations.open(location), 7).await;
}
