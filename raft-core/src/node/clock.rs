//! The clock a node reads: tokio's, or (for simulations) one that runs at a rate of its own.
//!
//! The protocol measures every timeout, lease and staleness bound on its node's clock, and
//! rests its lease reads on the assumption that two nodes' clocks disagree by at most
//! [`crate::Config::clock_drift_bound_ms`] over one minimum election timeout. Real clocks
//! drift; a simulation needs to make them drift on purpose, within that bound (everything must
//! still hold) and beyond it (lease reads must then be seen to break). A [`NodeClock`] is that
//! seam: [`NodeClock::real`] (the default) is tokio's clock, unchanged;
//! [`NodeClock::adjustable`] runs at a rate that [`NodeClock::set_rate`] changes at any time,
//! taking effect at once, even while the node sleeps until a deadline.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Parts per million: the rate of a clock that keeps time with tokio's.
const EXACT_PPM: u64 = 1_000_000;

/// The slowest and fastest rates [`NodeClock::set_rate`] accepts (1% and 100 times tokio's
/// clock); others are clamped to them, so that the clock always moves forward.
const RATE_BOUNDS: (f64, f64) = (0.01, 100.0);

/// The clock a node measures its timeouts, leases and staleness bounds on
/// ([`crate::node::NodeConfig::clock`]).
///
/// [`NodeClock::real`], the default, is tokio's clock. [`NodeClock::adjustable`] is for
/// simulations: clones share one clock, whose rate [`NodeClock::set_rate`] changes (a node's
/// clock running 2% fast, say, or a leader's running slow past the drift bound to show that
/// its lease reads then go stale). Give each node its own: a node does not start on a clock
/// another running node uses ([`crate::node::Error::InvalidConfig`]).
///
/// ```
/// use raft_core::node::{NodeClock, NodeConfig};
/// use raft_core::NodeId;
///
/// let clock = NodeClock::adjustable();
/// let mut config = NodeConfig::new(NodeId(1), [NodeId(1), NodeId(2), NodeId(3)]);
/// config.clock = clock.clone();
/// clock.set_rate(1.02); // from now on, this node's clock runs 2% fast
/// assert_eq!(clock.rate(), 1.02);
/// assert_eq!(NodeClock::real().rate(), 1.0);
/// ```
#[derive(Clone, Debug, Default)]
pub struct NodeClock {
    /// `None` for tokio's clock.
    adjustable: Option<Arc<Adjustable>>,
}

#[derive(Debug)]
struct Adjustable {
    state: Mutex<Rate>,
    /// Counts rate changes, so that a sleeping node wakes to recompute its deadline.
    changes: watch::Sender<u64>,
    /// A running node reads the clock: a second one would move its origin under it.
    in_use: AtomicBool,
}

/// Where the clock stands: at `real` on tokio's clock it read `local_us`, and it has run at
/// `ppm` since; from its next reading on it runs at `next_ppm`. `anchor` is `None` until the
/// node using the clock starts ([`NodeClock::start`]).
///
/// The clock never reads tokio's clock itself: only the node does, on its own runtime, and
/// hands the instant in. Under a simulator that gives every host a runtime of its own (whose
/// instants cannot be compared with another's, and start again when the host restarts), a rate
/// changed from another host's task then still takes effect at an instant of the node's.
#[derive(Clone, Copy, Debug)]
struct Rate {
    anchor: Option<(Instant, u64)>,
    ppm: u64,
    next_ppm: u64,
}

impl NodeClock {
    /// Tokio's clock.
    pub fn real() -> NodeClock {
        NodeClock::default()
    }

    /// A clock that keeps time with tokio's until [`NodeClock::set_rate`] changes its rate.
    pub fn adjustable() -> NodeClock {
        let (changes, _) = watch::channel(0);
        NodeClock {
            adjustable: Some(Arc::new(Adjustable {
                state: Mutex::new(Rate {
                    anchor: None,
                    ppm: EXACT_PPM,
                    next_ppm: EXACT_PPM,
                }),
                changes,
                in_use: AtomicBool::new(false),
            })),
        }
    }

    /// Makes the clock run at `rate` times tokio's: 1.0 keeps time, 1.001 runs 0.1% fast, 0.5
    /// runs at half speed. Clamped to 0.01–100 (a NaN is taken as 1.0). The node using the
    /// clock is woken, and the new rate counts from its next reading of the clock, which it
    /// takes at once, before it recomputes its deadlines. Does nothing on [`NodeClock::real`].
    pub fn set_rate(&self, rate: f64) {
        let Some(adjustable) = &self.adjustable else {
            return;
        };
        let rate = if rate.is_nan() { 1.0 } else { rate };
        let clamped = rate.clamp(RATE_BOUNDS.0, RATE_BOUNDS.1);
        // In range (at most 1e8) and positive, so the conversion cannot overflow or go wrong.
        let ppm = (clamped * EXACT_PPM as f64).round() as u64;
        adjustable.lock().next_ppm = ppm.max(1);
        adjustable.changes.send_modify(|changes| *changes += 1);
    }

    /// The clock's rate relative to tokio's (1.0 for [`NodeClock::real`]).
    pub fn rate(&self) -> f64 {
        match &self.adjustable {
            None => 1.0,
            Some(adjustable) => adjustable.lock().next_ppm as f64 / EXACT_PPM as f64,
        }
    }

    /// Whether [`NodeClock::set_rate`] can change this clock.
    pub fn is_adjustable(&self) -> bool {
        self.adjustable.is_some()
    }

    /// Starts the clock's readings for a node starting at `now` (on the node's runtime): the
    /// reading at `now`, from which the node measures its protocol's time, and the claim the
    /// node holds while it runs. A node restarted on the same clock starts it again (its
    /// protocol's time starts from zero anyway); `None` while another node runs on it (its
    /// readings would jump back).
    pub(super) fn start(&self, now: Instant) -> Option<(LocalTime, ClockClaim)> {
        match &self.adjustable {
            None => Some((LocalTime::Real(now), ClockClaim(None))),
            Some(adjustable) => {
                if adjustable.in_use.swap(true, Ordering::AcqRel) {
                    return None;
                }
                let mut state = adjustable.lock();
                state.anchor = Some((now, 0));
                state.ppm = state.next_ppm;
                Some((
                    LocalTime::Scaled(0),
                    ClockClaim(Some(Arc::clone(adjustable))),
                ))
            }
        }
    }

    /// The clock's reading at `at` on tokio's clock (an instant of the runtime the clock was
    /// started on, no earlier than the instant of any earlier reading); later instants never
    /// read less.
    pub(super) fn read(&self, at: Instant) -> LocalTime {
        match &self.adjustable {
            None => LocalTime::Real(at),
            Some(adjustable) => LocalTime::Scaled(adjustable.lock().local_us(at)),
        }
    }

    /// The instant on tokio's clock at which this clock will read `local`, at its present
    /// rate (an instant already past if it read `local` before its last rate change).
    /// `now` is the node's latest reading of tokio's clock: the answer when there is no
    /// instant to compute (a clock not started, which a running node's never is), so that the
    /// node wakes at once and reads again. The clock itself never reads tokio's clock.
    pub(super) fn instant_at(&self, local: LocalTime, now: Instant) -> Instant {
        match (local, &self.adjustable) {
            (LocalTime::Real(at), _) => at,
            (LocalTime::Scaled(local_us), Some(adjustable)) => {
                let state = *adjustable.lock();
                let Some((real, anchor_us)) = state.anchor else {
                    return now;
                };
                // Rounded up: at the instant returned the clock reads `local` or more, so a
                // node that sleeps until a deadline finds it reached when it wakes (rounded
                // down, it could wake a microsecond early, again and again, without time
                // moving on).
                let to_real = |us: u64| {
                    let micros =
                        (u128::from(us) * u128::from(EXACT_PPM)).div_ceil(u128::from(state.ppm));
                    Duration::from_micros(u64::try_from(micros).unwrap_or(u64::MAX))
                };
                if local_us >= anchor_us {
                    later(real, to_real(local_us - anchor_us))
                } else {
                    real.checked_sub(to_real(anchor_us - local_us))
                        .unwrap_or(real)
                }
            }
            // A real clock makes no scaled readings.
            (LocalTime::Scaled(_), None) => now,
        }
    }

    /// A receiver that sees every rate change, for a node to wake on (`None` for a real
    /// clock, whose rate never changes).
    pub(super) fn changes(&self) -> Option<watch::Receiver<u64>> {
        self.adjustable.as_ref().map(|a| a.changes.subscribe())
    }
}

/// A running node's claim on its adjustable clock, released when the node stops.
#[derive(Debug)]
pub(super) struct ClockClaim(Option<Arc<Adjustable>>);

impl Drop for ClockClaim {
    fn drop(&mut self) {
        if let Some(adjustable) = &self.0 {
            adjustable.in_use.store(false, Ordering::Release);
        }
    }
}

/// A reading of a [`NodeClock`]: tokio's instant itself for a real clock, microseconds for a
/// scaled one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum LocalTime {
    Real(Instant),
    Scaled(u64),
}

impl LocalTime {
    /// How far `self` is past `earlier` (zero if it is not), in whole milliseconds.
    pub(super) fn millis_since(self, earlier: LocalTime) -> u64 {
        let micros = match (self, earlier) {
            (LocalTime::Real(at), LocalTime::Real(from)) => {
                u64::try_from(at.saturating_duration_since(from).as_micros()).unwrap_or(u64::MAX)
            }
            (LocalTime::Scaled(at), LocalTime::Scaled(from)) => at.saturating_sub(from),
            // Readings of two different clocks: never made by one node.
            _ => 0,
        };
        micros / 1_000
    }

    /// `self` plus `ms` milliseconds.
    pub(super) fn plus_millis(self, ms: u64) -> LocalTime {
        match self {
            LocalTime::Real(at) => LocalTime::Real(later(at, Duration::from_millis(ms))),
            LocalTime::Scaled(us) => LocalTime::Scaled(us.saturating_add(ms.saturating_mul(1_000))),
        }
    }
}

/// `at` plus `duration`, or as far as the instant can go: a year on, if that fits (a deadline
/// that far away is never reached), else `at` itself.
fn later(at: Instant, duration: Duration) -> Instant {
    at.checked_add(duration)
        .or_else(|| at.checked_add(Duration::from_secs(86_400 * 365)))
        .unwrap_or(at)
}

impl Adjustable {
    fn lock(&self) -> std::sync::MutexGuard<'_, Rate> {
        // The state is two plain numbers, each update complete before the lock is released:
        // a panic elsewhere cannot leave it half-written.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Rate {
    fn local_us(&mut self, at: Instant) -> u64 {
        let (real, anchor_us) = *self.anchor.get_or_insert((at, 0));
        if self.next_ppm != self.ppm {
            // A rate change: it counts from this reading on.
            let local_us = self.at_present_rate(real, anchor_us, at);
            self.anchor = Some((at, local_us));
            self.ppm = self.next_ppm;
            return local_us;
        }
        self.at_present_rate(real, anchor_us, at)
    }

    fn at_present_rate(&self, real: Instant, anchor_us: u64, at: Instant) -> u64 {
        let scale = |elapsed: Duration| {
            let micros = elapsed.as_micros() * u128::from(self.ppm) / u128::from(EXACT_PPM);
            u64::try_from(micros).unwrap_or(u64::MAX)
        };
        if at >= real {
            anchor_us.saturating_add(scale(at - real))
        } else {
            anchor_us.saturating_sub(scale(real - at))
        }
    }
}

#[cfg(test)]
#[path = "clock/tests.rs"]
mod tests;
