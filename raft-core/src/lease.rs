//! The leader's lease clock (dissertation §6.4.1) and the heartbeat rounds behind it.
//!
//! Every heartbeat round gets a number and the local time it was sent. Followers echo the
//! latest round they have seen; once a majority has echoed round `r`, every member of that
//! majority heard from this leader no earlier than `r` was sent, so none of them will grant a vote
//! to anyone else until a minimum election timeout later on its own clock. The lease therefore
//! runs from the send time of the latest majority-acknowledged round for `lease_duration_ms`,
//! which [`crate::Config::validate`] keeps shorter than that timeout minus the clock-drift bound.
//!
//! The same rounds confirm ReadIndex reads: a read that arrived before round `r` was sent is
//! safe to serve once a majority acknowledged `r`.

use crate::Instant;
use std::collections::VecDeque;

/// Rounds kept while waiting for acknowledgements; older ones are forgotten (their
/// acknowledgements then confirm reads but no longer extend the lease).
const MAX_TRACKED_ROUNDS: usize = 4096;

#[derive(Clone, Debug, Default)]
pub(crate) struct LeaseClock {
    /// Rounds sent but not yet known to be acknowledged by a majority: (round, send time).
    unconfirmed: VecDeque<(u64, Instant)>,
    /// The number of the latest round sent; 0 before the first.
    latest_round: u64,
    /// The latest round a majority acknowledged; 0 for none.
    confirmed_round: u64,
    /// When `confirmed_round` was sent: the start of the lease.
    confirmed_sent_at: Option<Instant>,
    /// Set when the leader gave up its lease for the rest of its term (leadership transfer).
    voided: bool,
}

impl LeaseClock {
    pub(crate) fn latest_round(&self) -> u64 {
        self.latest_round
    }

    pub(crate) fn confirmed_round(&self) -> u64 {
        self.confirmed_round
    }

    /// When the latest majority-acknowledged round was sent.
    pub(crate) fn confirmed_sent_at(&self) -> Option<Instant> {
        self.confirmed_sent_at
    }

    /// Opens a new round sent at `now` and returns its number.
    pub(crate) fn start_round(&mut self, now: Instant) -> u64 {
        self.latest_round += 1;
        if self.unconfirmed.len() >= MAX_TRACKED_ROUNDS {
            self.unconfirmed.pop_front();
        }
        self.unconfirmed.push_back((self.latest_round, now));
        self.latest_round
    }

    /// A majority acknowledged `round`. Returns whether that is news.
    pub(crate) fn confirm(&mut self, round: u64) -> bool {
        if round <= self.confirmed_round || round > self.latest_round {
            return false;
        }
        while let Some(&(r, sent_at)) = self.unconfirmed.front() {
            if r > round {
                break;
            }
            self.unconfirmed.pop_front();
            if r == round {
                self.confirmed_sent_at = Some(sent_at);
            }
        }
        self.confirmed_round = round;
        true
    }

    /// Gives the lease up for good (until a new term makes a new clock).
    pub(crate) fn void(&mut self) {
        self.voided = true;
    }

    /// The instant the lease ends, if there is one to speak of.
    pub(crate) fn valid_until(&self, duration_ms: u64) -> Option<Instant> {
        if self.voided || duration_ms == 0 {
            return None;
        }
        self.confirmed_sent_at
            .map(|start| start.plus_ms(duration_ms))
    }

    /// True while the lease holds at `now`.
    pub(crate) fn holds(&self, now: Instant, duration_ms: u64) -> bool {
        self.valid_until(duration_ms).is_some_and(|end| now < end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_runs_from_send_time_of_confirmed_round() {
        let mut clock = LeaseClock::default();
        assert!(
            !clock.holds(Instant(0), 100),
            "no lease before any round is acknowledged"
        );
        let r1 = clock.start_round(Instant(10));
        let r2 = clock.start_round(Instant(40));
        assert!(clock.confirm(r1));
        // (now, holds?)
        for (now, want) in [(10, true), (109, true), (110, false), (500, false)] {
            assert_eq!(clock.holds(Instant(now), 100), want, "now {now}");
        }
        assert!(clock.confirm(r2));
        assert!(clock.holds(Instant(139), 100));
        assert!(!clock.holds(Instant(140), 100));
        assert!(!clock.confirm(r1), "an older round is not news");
        assert!(
            !clock.confirm(r2 + 1),
            "a round never sent cannot be confirmed"
        );
    }

    #[test]
    fn confirming_a_later_round_skips_earlier_ones() {
        let mut clock = LeaseClock::default();
        for t in [0, 10, 20, 30] {
            clock.start_round(Instant(t));
        }
        assert!(clock.confirm(3));
        assert_eq!(clock.confirmed_sent_at(), Some(Instant(20)));
        assert_eq!(clock.confirmed_round(), 3);
    }

    #[test]
    fn voided_lease_never_holds_and_zero_duration_disables() {
        let mut clock = LeaseClock::default();
        let r = clock.start_round(Instant(0));
        clock.confirm(r);
        assert!(clock.holds(Instant(1), 100));
        assert!(!clock.holds(Instant(1), 0));
        clock.void();
        assert!(!clock.holds(Instant(1), 100));
        let r = clock.start_round(Instant(2));
        clock.confirm(r);
        assert!(
            !clock.holds(Instant(3), 100),
            "still void after later rounds"
        );
    }
}
