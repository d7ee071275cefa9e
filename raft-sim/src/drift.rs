//! Clock drift ([`crate::Fault::ClockDrift`]): every node runs on a clock of its own
//! ([`NodeClock::adjustable`]), and a task that runs beside the other faults keeps drawing new
//! rates for them, recording each draw.

use crate::SimStateMachine;
use crate::nemesis::{Fault, FaultRecord, host};
use crate::world::{SharedWorld, now_ms};
use raft_core::NodeId;
use raft_core::node::{NodeClock, NodeConfig};
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

/// The time between two draws of every node's rate, drawn at random from this range, in
/// milliseconds.
pub(crate) const DRAW_INTERVAL_MS: (u64, u64) = (200, 1_000);
/// Separates the drift's draws from every other stream of a run, so that turning drift on does
/// not change which other faults a seed injects.
const STREAM: u64 = 0x5D21_F7C0_0000_0003;

/// Every node's clock, kept across its restarts (a host's clock does not reset when its
/// process does).
pub(crate) type Clocks = BTreeMap<NodeId, NodeClock>;

/// A clock for each of `ids`, all keeping time until the drift task changes their rates.
pub(crate) fn clocks(ids: &[NodeId]) -> Clocks {
    ids.iter()
        .map(|&id| (id, NodeClock::adjustable()))
        .collect()
}

/// How far from tokio's rate a node's clock may run while every clock still meets the nodes'
/// drift bound: two clocks may disagree by at most `clock_drift_bound_ms` over one minimum
/// election timeout (`raft_core::Config`), so each may be off by half that ratio; nine tenths
/// of it keep back room for the protocol's millisecond rounding (about 2 ms in all: enough
/// with bounds of 20 ms or more; the default is 15, whose lease leaves ample margin besides).
pub(crate) fn within_bound(config: &NodeConfig) -> f64 {
    let raft = &config.raft;
    let ratio = raft.clock_drift_bound_ms as f64 / raft.election_timeout_min_ms.max(1) as f64;
    0.9 * ratio / 2.0
}

/// Until the faults stop, every 200 to 1,000 ms draws a new rate for every node's clock, at
/// random within `1 ± max_deviation`, and records the rates drawn; then sets every clock back
/// to tokio's rate (so that the liveness check after the faults sees clocks that agree).
pub(crate) async fn run<SM: SimStateMachine>(
    world: SharedWorld<SM>,
    clocks: Clocks,
    max_deviation: f64,
    first_ms: u64,
    seed: u64,
) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ STREAM);
    tokio::time::sleep(Duration::from_millis(first_ms)).await;
    while !world.borrow().finished {
        let mut what = String::from("clock rates");
        for (&id, clock) in &clocks {
            let rate = 1.0 + rng.random_range(-1.0..=1.0) * max_deviation;
            clock.set_rate(rate);
            let _ = write!(what, " {}×{:.4}", host(id), clock.rate());
        }
        record(&world, Some(Fault::ClockDrift), what);
        let pause = rng.random_range(DRAW_INTERVAL_MS.0..=DRAW_INTERVAL_MS.1);
        // In slices, so that the clocks agree again soon after the faults stop.
        let until = tokio::time::Instant::now() + Duration::from_millis(pause);
        while tokio::time::Instant::now() < until && !world.borrow().finished {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    for clock in clocks.values() {
        clock.set_rate(1.0);
    }
    record(&world, None, "clock rates back to 1".to_string());
}

fn record<SM: SimStateMachine>(world: &SharedWorld<SM>, fault: Option<Fault>, what: String) {
    world.borrow_mut().clock_rates.push(FaultRecord {
        at_ms: now_ms(),
        fault,
        what,
    });
}
