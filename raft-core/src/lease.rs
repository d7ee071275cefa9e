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
//!
//! How many rounds are in flight must never decide whether a leader keeps office. The clock
//! keeps one record per millisecond (the first round sent in it), not one per round, so any
//! number of rounds per millisecond costs nothing, and every acknowledgement finds the exact
//! send time of its round (to the clock's resolution) unless more than [`MAX_TRACKED_MS`]
//! milliseconds of rounds are unanswered; then it falls back to the send time of an earlier
//! round, which can only make the lease start earlier (the safe side).

use crate::Time;
use std::collections::VecDeque;

/// Milliseconds of unacknowledged rounds whose send times are kept; the send time of older
/// rounds is replaced by that of the newest one forgotten (an earlier time: a shorter lease,
/// never a longer one).
pub(crate) const MAX_TRACKED_MS: usize = 4096;

#[derive(Clone, Debug, Default)]
pub(crate) struct LeaseClock {
    /// Rounds sent but not yet known to be acknowledged by a majority, as (the first round sent
    /// in a millisecond, that millisecond): a round's send time is that of the newest record
    /// whose round is not after it.
    unconfirmed: VecDeque<(u64, Time)>,
    /// The newest record dropped from `unconfirmed` to bound it.
    forgotten: Option<(u64, Time)>,
    /// The number of the latest round sent; 0 before the first.
    latest_round: u64,
    /// The latest round a majority acknowledged; 0 for none.
    confirmed_round: u64,
    /// When `confirmed_round` was sent: the start of the lease.
    confirmed_sent_at: Option<Time>,
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
    pub(crate) fn confirmed_sent_at(&self) -> Option<Time> {
        self.confirmed_sent_at
    }

    /// Opens a new round sent at `now` and returns its number.
    pub(crate) fn start_round(&mut self, now: Time) -> u64 {
        self.latest_round += 1;
        if self.unconfirmed.back().is_some_and(|&(_, at)| at >= now) {
            // Sent in the same millisecond as the record's round: same send time.
            return self.latest_round;
        }
        if self.unconfirmed.len() >= MAX_TRACKED_MS {
            self.forgotten = self.unconfirmed.pop_front().or(self.forgotten);
        }
        self.unconfirmed.push_back((self.latest_round, now));
        self.latest_round
    }

    /// A majority acknowledged `round`. Returns whether that is news.
    ///
    /// The lease then runs from `round`'s send time, or, if that was forgotten, from the send
    /// time of the newest round before it that is still known (sent no later, so safe).
    pub(crate) fn confirm(&mut self, round: u64) -> bool {
        if round <= self.confirmed_round || round > self.latest_round {
            return false;
        }
        let mut newest_known = self.forgotten.filter(|&(r, _)| r <= round);
        while let Some(&(r, sent_at)) = self.unconfirmed.front() {
            if r > round {
                break;
            }
            newest_known = Some((r, sent_at));
            if self
                .unconfirmed
                .get(1)
                .is_some_and(|&(next, _)| next <= round + 1)
            {
                // Every round up to the next record's first is confirmed: this record is done.
                self.unconfirmed.pop_front();
            } else {
                // Rounds after `round` sent in this record's millisecond are still unconfirmed:
                // keep the record, now starting at the first of them.
                if let Some(front) = self.unconfirmed.front_mut() {
                    front.0 = round + 1;
                }
                break;
            }
        }
        if let Some((_, sent_at)) = newest_known {
            // Rounds are sent in order, so a later round was never sent earlier.
            self.confirmed_sent_at =
                Some(self.confirmed_sent_at.map_or(sent_at, |t| t.max(sent_at)));
        }
        self.confirmed_round = round;
        true
    }

    /// True while some round sent has not been acknowledged by a majority yet.
    #[cfg(test)]
    pub(crate) fn round_in_flight(&self) -> bool {
        self.confirmed_round < self.latest_round
    }

    /// Gives the lease up for good (until a new term makes a new clock).
    pub(crate) fn void(&mut self) {
        self.voided = true;
    }

    /// The instant the lease ends, if there is one to speak of.
    pub(crate) fn valid_until(&self, duration_ms: u64) -> Option<Time> {
        if self.voided || duration_ms == 0 {
            return None;
        }
        self.confirmed_sent_at
            .map(|start| start.plus_ms(duration_ms))
    }

    /// True while the lease holds at `now`.
    pub(crate) fn holds(&self, now: Time, duration_ms: u64) -> bool {
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
            !clock.holds(Time(0), 100),
            "no lease before any round is acknowledged"
        );
        let r1 = clock.start_round(Time(10));
        let r2 = clock.start_round(Time(40));
        assert!(clock.confirm(r1));
        // (now, holds?)
        for (now, want) in [(10, true), (109, true), (110, false), (500, false)] {
            assert_eq!(clock.holds(Time(now), 100), want, "now {now}");
        }
        assert!(clock.confirm(r2));
        assert!(clock.holds(Time(139), 100));
        assert!(!clock.holds(Time(140), 100));
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
            clock.start_round(Time(t));
        }
        assert!(clock.confirm(3));
        assert_eq!(clock.confirmed_sent_at(), Some(Time(20)));
        assert_eq!(clock.confirmed_round(), 3);
    }

    #[test]
    fn any_number_of_rounds_per_millisecond_keeps_exact_send_times() {
        let mut clock = LeaseClock::default();
        // 50 rounds per millisecond for 200 ms: 10,000 rounds, more than the records kept.
        let rounds_per_ms = 50;
        let total = 200 * rounds_per_ms;
        for r in 1..=total {
            clock.start_round(Time((r - 1) / rounds_per_ms));
        }
        assert!(total as usize > MAX_TRACKED_MS);
        // (round acknowledged by a majority, lease start expected)
        for (round, sent_ms) in [(40, 0), (51, 1), (75, 1), (4_000, 79), (9_999, 199)] {
            assert!(clock.confirm(round), "round {round}");
            assert_eq!(
                clock.confirmed_sent_at(),
                Some(Time(sent_ms)),
                "round {round}"
            );
            assert!(clock.round_in_flight());
        }
        assert!(clock.confirm(total));
        assert!(!clock.round_in_flight());
    }

    #[test]
    fn a_round_whose_record_was_dropped_still_finds_its_send_time() {
        let mut clock = LeaseClock::default();
        let ms = MAX_TRACKED_MS as u64 + 100;
        // Two rounds per millisecond: round 2k+1 and 2k+2 are sent at k ms; the records of the
        // first 100 milliseconds are dropped, the newest of them being round 199's (at 99 ms).
        for r in 1..=2 * ms {
            clock.start_round(Time((r - 1) / 2));
        }
        assert!(
            clock.confirm(200),
            "round 200 was sent at 99 ms, in the dropped record"
        );
        assert_eq!(clock.confirmed_sent_at(), Some(Time(99)));
        assert!(clock.confirm(202));
        assert_eq!(clock.confirmed_sent_at(), Some(Time(100)));
        let mut older = LeaseClock::default();
        for r in 1..=2 * ms {
            older.start_round(Time((r - 1) / 2));
        }
        assert!(
            older.confirm(50),
            "an older round is news for the reads it confirms"
        );
        assert_eq!(
            older.confirmed_sent_at(),
            None,
            "no send time is known to be no later than round 50's"
        );
    }

    #[test]
    fn voided_lease_never_holds_and_zero_duration_disables() {
        let mut clock = LeaseClock::default();
        let r = clock.start_round(Time(0));
        clock.confirm(r);
        assert!(clock.holds(Time(1), 100));
        assert!(!clock.holds(Time(1), 0));
        clock.void();
        assert!(!clock.holds(Time(1), 100));
        let r = clock.start_round(Time(2));
        clock.confirm(r);
        assert!(!clock.holds(Time(3), 100), "still void after later rounds");
    }
}
