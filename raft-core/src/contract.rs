//! A debug-build checker of the driver's contract: the numbered duties of [`Actions`].
//!
//! Every executor of `Actions` (the node's driver, the test harness and the simulator) tells
//! one of these what it does, in the order it does it, and the checker asserts the duties:
//!
//! * duty 2: writes become durable in the order their batches were taken;
//! * duty 3: a durability report names the last entry of a write that is durable;
//! * duty 4: a batch's `persisted_messages` leave only once its write, and every earlier one, is
//!   durable (what a message promises is on disk before it is sent);
//! * duty 5: only entries handed out as committed are applied, none beyond what is durable
//!   locally, and an applied report never exceeds what was applied;
//! * duty 6: a read is answered at an index already applied;
//! * duty 7: a snapshot is reported installed only once the image its last chunk finished is
//!   durable, only over a state machine that applied less, and then the state machine holds
//!   exactly the state at its last entry.
//!
//! A duty added later is checked here once and so in all three executors. In release builds the
//! checker holds nothing and every call compiles to nothing.

use crate::{Actions, EntryId, LogIndex};
#[cfg(debug_assertions)]
use std::collections::VecDeque;

/// A batch of actions, as the checker numbers them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Batch(#[cfg(debug_assertions)] u64);

/// Watches one executor of one node (a restarted node gets a new checker).
#[derive(Debug, Default)]
pub(crate) struct ContractChecker {
    #[cfg(debug_assertions)]
    state: State,
}

#[cfg(debug_assertions)]
#[derive(Debug, Default)]
struct State {
    next_batch: u64,
    /// Batches whose write (hard state, entries) is not durable yet, oldest first, with the last
    /// entry each writes.
    unwritten: VecDeque<(u64, Option<EntryId>)>,
    /// The last entry of the latest durable write that carried entries.
    last_written: Option<EntryId>,
    /// Entries up to here are durable (a write replaces everything from its first entry on).
    durable_through: LogIndex,
    /// The highest index handed out for apply.
    handed_out: LogIndex,
    /// The highest index applied.
    applied: LogIndex,
    /// The highest index reported applied.
    reported_applied: LogIndex,
    /// The last index of a received snapshot whose last chunk was handed out to store, and
    /// whether that write is durable.
    finishing: Option<(LogIndex, bool, u64)>,
}

impl ContractChecker {
    /// A checker for a node that starts with entries durable up to `durable_through`, of which
    /// its state machine has applied up to `applied`.
    pub(crate) fn new(durable_through: LogIndex, applied: LogIndex) -> ContractChecker {
        #[cfg(not(debug_assertions))]
        let _ = (durable_through, applied);
        ContractChecker {
            #[cfg(debug_assertions)]
            state: State {
                durable_through,
                handed_out: applied,
                applied,
                reported_applied: applied,
                ..State::default()
            },
        }
    }

    /// The executor took `actions` from the protocol.
    pub(crate) fn took(&mut self, actions: &Actions) -> Batch {
        #[cfg(debug_assertions)]
        {
            let state = &mut self.state;
            let id = state.next_batch;
            state.next_batch += 1;
            if actions.hard_state.is_some()
                || !actions.entries.is_empty()
                || actions.purge.is_some()
                || !actions.snapshot_writes.is_empty()
            {
                let last = actions.entries.last().map(|e| e.id());
                state.unwritten.push_back((id, last));
            }
            if let Some(chunk) = actions.snapshot_writes.iter().find(|c| c.last) {
                state.finishing = Some((chunk.meta.last.index, false, id));
            }
            if let Some(range) = actions.committed {
                state.handed_out = state.handed_out.max(range.last);
            }
            Batch(id)
        }
        #[cfg(not(debug_assertions))]
        {
            let _ = actions;
            Batch()
        }
    }

    /// Duty 2: the write of `batch` (its hard state, then its entries) is durable.
    pub(crate) fn wrote(&mut self, batch: Batch) {
        #[cfg(debug_assertions)]
        {
            let state = &mut self.state;
            let Some(position) = state.unwritten.iter().position(|&(id, _)| id == batch.0) else {
                return; // a batch with nothing to write
            };
            assert_eq!(
                position, 0,
                "duty 2: batch {} made durable before an earlier batch's write",
                batch.0
            );
            if let Some((_, Some(last))) = state.unwritten.pop_front() {
                state.last_written = Some(last);
                state.durable_through = last.index;
            }
            if let Some((_, durable, of)) = state.finishing.as_mut()
                && *of == batch.0
            {
                *durable = true;
            }
        }
        #[cfg(not(debug_assertions))]
        let _ = batch;
    }

    /// Duty 3: the executor reports `last` durable.
    pub(crate) fn reported_persisted(&self, last: EntryId) {
        #[cfg(debug_assertions)]
        assert_eq!(
            self.state.last_written,
            Some(last),
            "duty 3: {last:?} reported durable, but the latest durable write ended at {:?}",
            self.state.last_written
        );
        #[cfg(not(debug_assertions))]
        let _ = last;
    }

    /// Duty 4: the executor is about to send `batch`'s persisted messages.
    pub(crate) fn sending_persisted(&self, batch: Batch) {
        #[cfg(debug_assertions)]
        if let Some(&(unwritten, _)) = self.state.unwritten.front() {
            assert!(
                unwritten > batch.0,
                "duty 4: batch {}'s messages sent before batch {unwritten}'s write is durable",
                batch.0
            );
        }
        #[cfg(not(debug_assertions))]
        let _ = batch;
    }

    /// Duty 5: the executor applies the entry at `index`.
    pub(crate) fn applying(&mut self, index: LogIndex) {
        #[cfg(debug_assertions)]
        {
            let state = &mut self.state;
            assert!(
                index <= state.handed_out,
                "duty 5: applying {index}, beyond what was handed out ({})",
                state.handed_out
            );
            assert!(
                index <= state.durable_through,
                "duty 5: applying {index}, beyond what is durable locally ({})",
                state.durable_through
            );
            state.applied = state.applied.max(index);
        }
        #[cfg(not(debug_assertions))]
        let _ = index;
    }

    /// Duty 5: the executor reports everything up to `index` applied.
    pub(crate) fn reported_applied(&mut self, index: LogIndex) {
        #[cfg(debug_assertions)]
        {
            let state = &mut self.state;
            assert!(
                index <= state.applied,
                "duty 5: {index} reported applied, but only {} was applied",
                state.applied
            );
            state.reported_applied = state.reported_applied.max(index);
        }
        #[cfg(not(debug_assertions))]
        let _ = index;
    }

    /// Duty 7: the executor restored its state machine from the received snapshot ending at
    /// `index` and reports it installed.
    pub(crate) fn installed(&mut self, index: LogIndex) {
        #[cfg(debug_assertions)]
        {
            let state = &mut self.state;
            assert_eq!(
                state.finishing.map(|(i, durable, _)| (i, durable)),
                Some((index, true)),
                "duty 7: a snapshot ending at {index} reported installed, but the image finished was {:?}",
                state.finishing
            );
            assert!(
                index > state.applied,
                "duty 7: a snapshot ending at {index} installed over a state machine that applied {}: it would go back",
                state.applied
            );
            state.finishing = None;
            state.handed_out = index;
            state.applied = index;
            state.reported_applied = index;
            state.durable_through = state.durable_through.max(index);
        }
        #[cfg(not(debug_assertions))]
        let _ = index;
    }

    /// Duty 6: the executor answers a read at `index`.
    pub(crate) fn answering_read(&self, index: LogIndex) {
        #[cfg(debug_assertions)]
        assert!(
            index <= self.state.reported_applied,
            "duty 6: a read answered at {index}, beyond what was applied and reported ({})",
            self.state.reported_applied
        );
        #[cfg(not(debug_assertions))]
        let _ = index;
    }
}

#[cfg(all(test, debug_assertions))]
#[allow(clippy::expect_used)] // test code: a panic is the failure report
mod tests {
    use super::*;
    use crate::{Config, InitialState, NodeId, Raft, Time};

    /// The first batch of a single-node cluster that has just elected itself: a hard state and
    /// the leader's blank entry to write.
    fn single_node_actions() -> Actions {
        let id = NodeId(1);
        let state = InitialState {
            membership: crate::Membership::new([id]).ok(),
            ..InitialState::default()
        };
        let mut raft = Raft::new(Config::new(id), state, 1, Time(0)).expect("a valid node");
        raft.tick(raft.next_deadline());
        raft.take_actions()
    }

    /// A batch with a write, a committed range and persisted messages, as a new single-node
    /// leader's would be: (checker, batch, its actions).
    fn taken() -> (ContractChecker, Batch, Actions) {
        let actions = single_node_actions();
        let mut checker = ContractChecker::new(LogIndex(0), LogIndex(0));
        let batch = checker.took(&actions);
        (checker, batch, actions)
    }

    #[test]
    fn an_executor_that_keeps_every_duty_passes() {
        let mut checker = ContractChecker::new(LogIndex(0), LogIndex(0));
        let first = single_node_actions();
        let batch = checker.took(&first);
        checker.wrote(batch);
        let last = first.entries.last().map(|e| e.id()).expect("an entry");
        checker.reported_persisted(last);
        checker.sending_persisted(batch);
        checker.answering_read(LogIndex(0));
    }

    #[test]
    #[should_panic(expected = "duty 4")]
    fn sending_before_the_write_is_caught() {
        let (checker, batch, _) = taken();
        checker.sending_persisted(batch);
    }

    #[test]
    #[should_panic(expected = "duty 2")]
    fn writes_out_of_order_are_caught() {
        let (mut checker, _, actions) = taken();
        let second = checker.took(&actions);
        checker.wrote(second);
    }

    #[test]
    #[should_panic(expected = "duty 3")]
    fn reporting_an_unwritten_entry_durable_is_caught() {
        let (checker, _, actions) = taken();
        let last = actions.entries.last().map(|e| e.id()).expect("an entry");
        checker.reported_persisted(last);
    }

    #[test]
    #[should_panic(expected = "beyond what is durable locally")]
    fn applying_beyond_what_is_durable_is_caught() {
        let mut checker = ContractChecker::new(LogIndex(0), LogIndex(0));
        let mut actions = single_node_actions();
        actions.committed = Some(crate::Committed {
            first: LogIndex(1),
            last: LogIndex(1),
        });
        checker.took(&actions);
        checker.applying(LogIndex(1));
    }

    #[test]
    #[should_panic(expected = "beyond what was handed out")]
    fn applying_what_was_not_handed_out_is_caught() {
        let mut checker = ContractChecker::new(LogIndex(5), LogIndex(0));
        checker.applying(LogIndex(1));
    }

    #[test]
    #[should_panic(expected = "only i0 was applied")]
    fn reporting_more_applied_than_applied_is_caught() {
        let mut checker = ContractChecker::new(LogIndex(5), LogIndex(0));
        checker.reported_applied(LogIndex(1));
    }

    #[test]
    #[should_panic(expected = "duty 7")]
    fn installing_a_snapshot_never_finished_is_caught() {
        let mut checker = ContractChecker::new(LogIndex(5), LogIndex(0));
        checker.installed(LogIndex(3));
    }

    #[test]
    #[should_panic(expected = "duty 6")]
    fn answering_a_read_before_its_apply_is_caught() {
        let checker = ContractChecker::new(LogIndex(5), LogIndex(0));
        checker.answering_read(LogIndex(1));
    }
}
