//! Request deadlines, found and expired without a scan in the common case.
//!
//! Every request gets the same timeout and most arrive in the order they are queued, so the
//! deadlines of a queue of waiters kept in arrival order nearly always rise from front to back.
//! The waiters keep their own deadlines (no per-request entry here); [`Deadlines`] keeps what
//! lets the loop use that order: a cursor past the waiters already checked, and a set of the
//! rare requests whose deadline is earlier than that of one queued before them (a request that
//! waited for room in a full queue has less of its timeout left).

use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;
use tokio::time::Instant;

/// A waiter with a deadline, queued in arrival order under a key that rises with it.
pub(super) trait Timed {
    /// What names the waiter in its queue.
    type Key: Ord + Copy;
    /// Its key; keys rise from the front of the queue to the back.
    fn key(&self) -> Self::Key;
    /// When it times out.
    fn deadline(&self) -> Instant;
}

/// `timeout` from `now`; a timeout too long for the clock means about a century.
pub(super) fn deadline_after(now: Instant, timeout: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    now.checked_add(timeout.min(CENTURY)).unwrap_or(now)
}

/// The deadline bookkeeping of one queue of waiters in arrival order.
///
/// Invariant: every waiter in the queue with a key at or before `checked_through` had its
/// deadline checked in order; every waiter whose deadline is earlier than that of the waiter
/// queued before it (when it was queued) is in `out_of_order` until its deadline passes.
#[derive(Debug)]
pub(super) struct Deadlines<K> {
    /// The last waiter whose deadline was checked in arrival order, so that neither finding the
    /// next deadline nor expiring walks past answered waiters that stay queued (a write that
    /// timed out keeps its record until its entry is applied).
    checked_through: Option<K>,
    /// Waiters whose deadline is earlier than that of a waiter queued before them, which the
    /// walk in arrival order would reach late. Rare: only requests that waited for room in a
    /// full queue get here.
    out_of_order: BTreeSet<(Instant, K)>,
}

impl<K: Ord + Copy> Default for Deadlines<K> {
    fn default() -> Self {
        Deadlines {
            checked_through: None,
            out_of_order: BTreeSet::new(),
        }
    }
}

impl<K: Ord + Copy> Deadlines<K> {
    /// Records the deadline of a waiter about to join the back of its queue, behind
    /// `previous` (the key and deadline of the waiter now at the back, if any). Every waiter
    /// after `previous` has left the queue, so the new one is unchecked, whatever its key held
    /// before. O(1) unless the waiter is out of order.
    pub(super) fn insert(&mut self, key: K, deadline: Instant, previous: Option<(K, Instant)>) {
        self.checked_through = match previous {
            Some((previous_key, _)) => self.checked_through.map(|c| c.min(previous_key)),
            None => None,
        };
        if previous.is_some_and(|(_, previous_deadline)| previous_deadline > deadline) {
            self.out_of_order.insert((deadline, key));
        }
    }

    /// The position in `queue` of the first waiter not yet checked in order.
    fn first_unchecked<T: Timed<Key = K>>(&self, queue: &VecDeque<T>) -> usize {
        match self.checked_through {
            Some(checked) => queue.partition_point(|t| t.key() <= checked),
            None => 0,
        }
    }

    /// The earliest deadline of a waiter in `queue` not yet checked (the deadline of the
    /// first one in order, or of an out-of-order one).
    pub(super) fn next<T: Timed<Key = K>>(&self, queue: &VecDeque<T>) -> Option<Instant> {
        let in_order = queue.get(self.first_unchecked(queue)).map(T::deadline);
        let out_of_order = self.next_out_of_order();
        match (in_order, out_of_order) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The earliest deadline among the out-of-order waiters (for a queue whose waiters leave
    /// when they expire, whose front is its next deadline in order).
    pub(super) fn next_out_of_order(&self) -> Option<Instant> {
        self.out_of_order.first().map(|&(deadline, _)| deadline)
    }

    /// Calls `expire` on every waiter in `queue`, in arrival order, whose deadline is at or
    /// before `now`, stopping at the first that is not; the waiters stay queued.
    pub(super) fn expire_in_order<T: Timed<Key = K>>(
        &mut self,
        now: Instant,
        queue: &mut VecDeque<T>,
        mut expire: impl FnMut(&mut T),
    ) {
        let first = self.first_unchecked(queue);
        for waiter in queue.range_mut(first..) {
            if waiter.deadline() > now {
                break;
            }
            self.checked_through = Some(waiter.key());
            expire(waiter);
        }
    }

    /// Takes the earliest out-of-order waiter whose deadline is at or before `now`, with that
    /// deadline. The waiter may have been answered, or its key reused, since: the caller
    /// expires only the one with this very deadline.
    pub(super) fn pop_out_of_order(&mut self, now: Instant) -> Option<(Instant, K)> {
        let &(deadline, _) = self.out_of_order.first()?;
        if deadline > now {
            return None;
        }
        self.out_of_order.pop_first()
    }

    /// Forgets every out-of-order waiter (their queue was emptied).
    pub(super) fn clear(&mut self) {
        self.out_of_order.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Waiter {
        key: u64,
        deadline: Instant,
        expired: bool,
    }

    impl Timed for Waiter {
        type Key = u64;
        fn key(&self) -> u64 {
            self.key
        }
        fn deadline(&self) -> Instant {
            self.deadline
        }
    }

    /// One step of a table: what happens to the queue, and what the table must say after it.
    enum Step {
        /// A waiter with this key and deadline (ms) joins the back, after every waiter at or
        /// after its key left the queue.
        Insert(u64, u64),
        /// The waiter at the front leaves (answered).
        PopFront,
        /// Expire up to this time (ms); these keys are expired, in this order.
        Expire(u64, &'static [u64]),
        /// The next deadline (ms), if any.
        Next(Option<u64>),
    }
    use Step::*;

    fn run(steps: &[Step]) {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut queue: VecDeque<Waiter> = VecDeque::new();
        let mut deadlines = Deadlines::default();
        for (n, step) in steps.iter().enumerate() {
            match *step {
                Insert(key, ms) => {
                    while queue.back().is_some_and(|w| w.key >= key) {
                        queue.pop_back();
                    }
                    let previous = queue.back().map(|w| (w.key, w.deadline));
                    deadlines.insert(key, at(ms), previous);
                    queue.push_back(Waiter {
                        key,
                        deadline: at(ms),
                        expired: false,
                    });
                }
                PopFront => {
                    queue.pop_front();
                }
                Expire(ms, want) => {
                    let now = at(ms);
                    let mut got = Vec::new();
                    deadlines.expire_in_order(now, &mut queue, |w| {
                        if !w.expired {
                            w.expired = true;
                            got.push(w.key);
                        }
                    });
                    while let Some((deadline, key)) = deadlines.pop_out_of_order(now) {
                        if let Some(w) = queue.iter_mut().find(|w| w.key == key)
                            && w.deadline == deadline
                            && !w.expired
                        {
                            w.expired = true;
                            got.push(key);
                        }
                    }
                    assert_eq!(got, want, "step {n}: expired at {ms} ms");
                }
                Next(want) => {
                    assert_eq!(deadlines.next(&queue), want.map(at), "step {n}: next");
                }
            }
        }
    }

    #[test]
    fn in_order_deadlines_are_found_and_expired_front_first() {
        run(&[
            Next(None),
            Insert(1, 100),
            Insert(2, 110),
            Insert(3, 120),
            Next(Some(100)),
            Expire(99, &[]),
            Expire(110, &[1, 2]),
            // Expired waiters stay queued, but the cursor is past them.
            Next(Some(120)),
            Expire(200, &[3]),
            Next(None),
            Insert(4, 300),
            Next(Some(300)),
        ]);
    }

    #[test]
    fn answered_fronts_leave_without_disturbing_the_cursor() {
        run(&[
            Insert(1, 100),
            Insert(2, 110),
            Expire(100, &[1]),
            PopFront,
            PopFront,
            Next(None),
            Insert(3, 150),
            Next(Some(150)),
            Expire(150, &[3]),
        ]);
    }

    #[test]
    fn an_out_of_order_deadline_is_found_before_the_queue_reaches_it() {
        run(&[
            Insert(1, 100),
            // Waited for room in a full queue: less of its timeout is left.
            Insert(2, 50),
            Insert(3, 120),
            Next(Some(50)),
            Expire(60, &[2]),
            Next(Some(100)),
            Expire(100, &[1]),
            // Waiter 2 was expired already; the walk in order passes it.
            Next(Some(120)),
            Expire(130, &[3]),
            Next(None),
        ]);
    }

    #[test]
    fn a_reused_key_is_unchecked_again_and_a_stale_out_of_order_entry_is_ignored() {
        run(&[
            Insert(1, 100),
            Insert(2, 50),
            Insert(3, 120),
            // The walk in order reaches 2 before the out-of-order set does.
            Expire(100, &[1, 2]),
            // Keys 2 and 3 leave (replaced) and 2 is reused with a later deadline: the stale
            // out-of-order entry (2 at 50 ms) was taken, and the new waiter is unchecked.
            Insert(2, 200),
            Next(Some(200)),
            Expire(199, &[]),
            Expire(200, &[2]),
        ]);
    }

    #[test]
    fn a_stale_out_of_order_entry_does_not_expire_the_waiter_that_reused_its_key() {
        run(&[
            Insert(1, 100),
            Insert(2, 50),
            // Key 2 reused before its first deadline passed.
            Insert(2, 300),
            Next(Some(50)),
            Expire(60, &[]),
            Next(Some(100)),
            Expire(100, &[1]),
            Next(Some(300)),
            Expire(300, &[2]),
        ]);
    }

    #[test]
    fn deadline_after_saturates_at_about_a_century() {
        let now = Instant::now();
        assert_eq!(
            deadline_after(now, Duration::from_millis(5)),
            now + Duration::from_millis(5)
        );
        assert!(deadline_after(now, Duration::MAX) > now + Duration::from_secs(3600));
    }
}
