//! Reconnect delays: exponential, bounded, with jitter drawn from a seeded generator.
//!
//! The jitter keeps the nodes of a cluster that lost a peer at the same moment from all
//! redialling in lockstep. It comes from a seed, not from the OS, so a simulation replays it.

use std::time::Duration;

/// The delays before successive reconnection attempts to one peer.
#[derive(Clone, Debug)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    /// The ceiling of the next delay. Invariant: `min <= ceiling <= max`.
    ceiling: Duration,
    /// splitmix64 state.
    rng: u64,
}

impl Backoff {
    /// Delays from `min` doubling up to `max` (`min` is raised to at least 1 ms and `max` to at
    /// least `min`), with jitter seeded by `seed`.
    pub(crate) fn new(min: Duration, max: Duration, seed: u64) -> Backoff {
        let min = min.max(Duration::from_millis(1));
        Backoff {
            min,
            max: max.max(min),
            ceiling: min,
            rng: seed,
        }
    }

    /// The delay before the next attempt: uniformly in `[ceiling / 2, ceiling]` ("equal
    /// jitter"), after which the ceiling doubles up to `max`.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling;
        self.ceiling = ceiling.saturating_mul(2).min(self.max);
        let half = ceiling / 2;
        let span_micros = u64::try_from((ceiling - half).as_micros()).unwrap_or(u64::MAX);
        let jitter = self.next_u64() % span_micros.saturating_add(1);
        half + Duration::from_micros(jitter)
    }

    /// A connection succeeded: the next failure starts from `min` again.
    pub(crate) fn reset(&mut self) {
        self.ceiling = self.min;
    }

    /// splitmix64 (Steele, Lea and Flood 2014): tiny, and its output is fixed forever by its
    /// definition, unlike a library generator whose algorithm may change between versions.
    fn next_u64(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Table: the ceiling of attempt n, from 10 ms doubling to 1 s.
    #[test]
    fn delays_double_from_min_to_max_within_the_jitter_band() {
        let mut backoff = Backoff::new(10 * MS, 1000 * MS, 42);
        let ceilings = [10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000];
        for (attempt, ceiling) in ceilings.into_iter().enumerate() {
            let delay = backoff.next_delay();
            let ceiling = ceiling * MS;
            assert!(
                delay >= ceiling / 2 && delay <= ceiling,
                "attempt {attempt}: {delay:?} outside [{:?}, {ceiling:?}]",
                ceiling / 2
            );
        }
    }

    #[test]
    fn reset_starts_over_from_min() {
        let mut backoff = Backoff::new(10 * MS, 1000 * MS, 1);
        for _ in 0..20 {
            backoff.next_delay();
        }
        backoff.reset();
        assert!(backoff.next_delay() <= 10 * MS);
    }

    #[test]
    fn the_same_seed_gives_the_same_delays_and_another_seed_differs() {
        let delays = |seed| {
            let mut backoff = Backoff::new(10 * MS, 1000 * MS, seed);
            (0..10).map(|_| backoff.next_delay()).collect::<Vec<_>>()
        };
        assert_eq!(delays(7), delays(7));
        assert_ne!(delays(7), delays(8));
    }

    #[test]
    fn degenerate_bounds_are_repaired() {
        let mut backoff = Backoff::new(Duration::ZERO, Duration::ZERO, 0);
        let delay = backoff.next_delay();
        assert!(delay <= MS && delay >= MS / 2);
    }
}
