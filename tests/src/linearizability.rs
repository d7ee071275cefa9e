//! The key-value store's sequential specification and client histories, for raft-sim's
//! linearizability checker.
//!
//! A test records, for every client request, what was asked, when it was called, and what came
//! back when (or that the client gave up, or that the request was refused) in a [`History`].
//! [`check`] then hands it to [`raft_sim::check`] with [`KvModel`]: raft-sim decides whether some
//! total order of the operations both respects real time (an operation that returned before
//! another was called comes first) and is a legal run of a plain single-copy map. That is
//! linearizability (Herlihy and Wing, 1990), the guarantee a Raft-replicated store promises its
//! clients. The search itself (Wing and Gong's, with Lowe's memoisation, one key at a time through
//! [`Model::partition`]) and the counterexample it reports are raft-sim's; this module says what
//! a key-value store is and how a test's records become raft-sim's history:
//!
//! | recorded | raft-sim's history | checked as |
//! |---|---|---|
//! | [`History::complete`] | [`raft_sim::Recorded::Ok`] | took effect within its interval, with that answer |
//! | [`History::fail`] | [`raft_sim::Recorded::Failed`] | left out: it had no effect |
//! | [`History::time_out`], or never ended | [`raft_sim::Recorded::Unknown`] (or `Pending`) | may take effect at any point after its call, or never |
//!
//! [`History`] keeps each event's time, so a test may write the operations of a history in any
//! order ([`History::from_timed`]); events with equal times keep the order they were recorded in.
//! [`brute_force_linearizable`] decides a short list of operations by the definition, for the
//! differential tests of the checker.
//!
//! # Example
//!
//! ```
//! use raft_tests::linearizability::{History, Operation, Response, Verdict, check};
//!
//! let mut history = History::new();
//! let put = history.call(1, Operation::put("x", "1"), 10);
//! history.complete(put, Response::Done, 20);
//! // Called after the put was acknowledged, yet it misses the write: a stale read.
//! let get = history.call(2, Operation::get("x"), 30);
//! history.complete(get, Response::Value(None), 40);
//!
//! let Verdict::NotLinearizable(counterexample) = check(&history) else {
//!     panic!("the stale read is not caught");
//! };
//! // The read is the answer no order gives; the put ran just before it.
//! assert_eq!(counterexample.core[0].op, Operation::get("x"));
//! assert_eq!(counterexample.context[0].op, Operation::put("x", "1"));
//! ```
//!
//! [`History`]: crate::linearizability::History
//! [`History::complete`]: crate::linearizability::History::complete
//! [`History::fail`]: crate::linearizability::History::fail
//! [`History::from_timed`]: crate::linearizability::History::from_timed
//! [`History::time_out`]: crate::linearizability::History::time_out
//! [`History::to_sim`]: crate::linearizability::History::to_sim
//! [`KvModel`]: crate::linearizability::KvModel
//! [`Model::partition`]: raft_sim::Model::partition
//! [`brute_force_linearizable`]: crate::linearizability::brute_force_linearizable
//! [`check`]: crate::linearizability::check

use raft_sim::{DEFAULT_STEP_BUDGET, Model, OpId, Register};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;

/// raft-sim's verdict and counterexample, for the users of [`check`].
pub use raft_sim::{Counterexample, Verdict};

/// The sequential specification histories are checked against: `operation` applied to a plain
/// single-copy map, and the answer it gives there (a compare-and-swap reports the value it
/// found). [`KvModel`] is this function; [`brute_force_linearizable`] replays it too.
pub fn apply_to_map(map: &mut BTreeMap<String, String>, operation: &Operation) -> Response {
    match operation {
        Operation::Put { key, value } => {
            map.insert(key.clone(), value.clone());
            Response::Done
        }
        Operation::Delete { key } => {
            map.remove(key);
            Response::Done
        }
        Operation::Get { key } => Response::Value(map.get(key).cloned()),
        Operation::Cas { key, expect, new } => {
            let current = map.get(key).cloned();
            let swapped = current == *expect;
            if swapped {
                map.insert(key.clone(), new.clone());
            }
            Response::Cas { swapped, current }
        }
    }
}

/// The key-value store as a [`raft_sim::Model`]: [`apply_to_map`] on a map, each key a part of
/// the state of its own.
///
/// Every operation touches exactly one key, and linearizability is local (Herlihy and Wing): a
/// history is linearizable exactly when each key's sub-history is. So [`Model::partition`] names
/// the key, and raft-sim checks each key's operations on their own, many small searches in place
/// of one over the product of every key's states. Keys are numbered as the model meets them
/// (in a history's order, so the same in every build), never by a hash: each part must be
/// exactly one key, since the register rules ([`Model::register`]) take a part for one
/// register, and two keys sharing a part would look like one register written twice.
#[derive(Debug, Default)]
pub struct KvModel {
    /// Every key met, and its part's number.
    keys: RefCell<BTreeMap<String, u64>>,
}

impl Model for KvModel {
    type Op = Operation;
    type Ret = Response;
    type State = BTreeMap<String, String>;

    fn init(&self) -> Self::State {
        BTreeMap::new()
    }

    fn step(&self, state: &Self::State, operation: &Operation) -> (Self::State, Response) {
        let mut next = state.clone();
        let answer = apply_to_map(&mut next, operation);
        (next, answer)
    }

    fn partition(&self, operation: &Operation) -> Option<u64> {
        let mut keys = self.keys.borrow_mut();
        if let Some(&part) = keys.get(operation.key()) {
            return Some(part);
        }
        let next = keys.len() as u64;
        keys.insert(operation.key().to_string(), next);
        Some(next)
    }

    /// Each key is a register of one value (absent or a string), so raft-sim refutes what
    /// needs no search before searching: an answer needing a value nothing wrote by then, and
    /// two values each written once whose stretches real time orders both ways (a stale read).
    fn register(&self, operation: &Operation, answer: Option<&Response>) -> Option<Register> {
        let bytes = |value: &Option<String>| value.as_ref().map(|v| v.as_bytes().to_vec());
        Some(match (operation, answer) {
            (Operation::Put { value, .. }, _) => Register::Write(Some(value.as_bytes().to_vec())),
            (Operation::Delete { .. }, _) => Register::Write(None),
            (Operation::Get { .. }, Some(Response::Value(seen))) => Register::Read(bytes(seen)),
            (Operation::Get { .. }, None) => Register::Nothing,
            // A swap that failed on `current` changed nothing and needed the key to hold it.
            (
                Operation::Cas { .. },
                Some(Response::Cas {
                    swapped: false,
                    current,
                }),
            ) => Register::Read(bytes(current)),
            // A swap that succeeded, whichever value it reports, or one of unknown outcome.
            (Operation::Cas { expect, new, .. }, None | Some(Response::Cas { .. })) => {
                Register::Swap {
                    expect: bytes(expect),
                    new: Some(new.as_bytes().to_vec()),
                }
            }
            // An answer of the wrong kind, which the model never gives: searched as it is.
            (Operation::Get { .. } | Operation::Cas { .. }, Some(_)) => return None,
        })
    }
}

/// Checks `history` against [`KvModel`] with raft-sim's [`DEFAULT_STEP_BUDGET`] steps per key.
pub fn check(history: &History) -> Verdict<Operation, Response> {
    check_with_budget(history, DEFAULT_STEP_BUDGET)
}

/// Checks `history` against [`KvModel`], allowing each key's search `step_budget` steps
/// ([`raft_sim::check_with_budget`]): the first key (in the order the history meets the keys)
/// with no legal order is reported; if none has a violation but some key ran out of
/// budget, the first such key is reported as undecided.
pub fn check_with_budget(history: &History, step_budget: u64) -> Verdict<Operation, Response> {
    raft_sim::check_with_budget(&KvModel::default(), &history.to_sim(), step_budget)
}

/// An operation as a test describes it before recording it: what, by which client, when it
/// was called, and how it ended (`None`: the client timed out). [`History::from_timed`] records
/// a list of them; [`brute_force_linearizable`] decides the same list by the definition.
#[derive(Clone, Debug)]
pub struct TimedOperation {
    /// The client that called it.
    pub client: u64,
    /// What was asked.
    pub operation: Operation,
    /// When it was called.
    pub called: u64,
    /// The answer and when it came, or `None` when the client timed out.
    pub ended: Option<(Response, u64)>,
}

/// Linearizability by its definition, for differential tests of [`check`] on small histories:
/// some order of the operations that respects real time, includes every completed operation
/// and any subset of the timed-out ones, and replays on [`apply_to_map`] with every completed
/// operation getting the answer it got (a successful swap may report the value it found or the
/// value it left, as [`Response::Cas`] allows). Exhaustive over the whole history, with no memo
/// and no pruning: exponential, for a handful of operations only.
pub fn brute_force_linearizable(generated: &[TimedOperation]) -> bool {
    fn extend(
        generated: &[TimedOperation],
        remaining: &mut Vec<usize>,
        map: &BTreeMap<String, String>,
    ) -> bool {
        if remaining
            .iter()
            .all(|&index| generated[index].ended.is_none())
        {
            return true;
        }
        for position in 0..remaining.len() {
            let candidate = remaining[position];
            // Real time: nothing still unplaced may have returned before this was called.
            let blocked = remaining.iter().any(|&other| {
                generated[other]
                    .ended
                    .as_ref()
                    .is_some_and(|(_, returned)| *returned < generated[candidate].called)
            });
            if blocked {
                continue;
            }
            let mut after = map.clone();
            let operation = &generated[candidate].operation;
            let answer = apply_to_map(&mut after, operation);
            let answer_matches = match (&generated[candidate].ended, &answer) {
                (None, _) => true,
                // A successful swap may report the value it left instead of the value it found.
                (
                    Some((
                        Response::Cas {
                            swapped: true,
                            current,
                        },
                        _,
                    )),
                    Response::Cas { swapped: true, .. },
                ) if current.as_ref() == after.get(operation.key()) => true,
                (Some((response, _)), answer) => response == answer,
            };
            if !answer_matches {
                continue;
            }
            remaining.remove(position);
            let found = extend(generated, remaining, &after);
            remaining.insert(position, candidate);
            if found {
                return true;
            }
        }
        false
    }
    let mut remaining: Vec<usize> = (0..generated.len()).collect();
    extend(generated, &mut remaining, &BTreeMap::new())
}

/// A request a client made to the key-value store. Every operation touches exactly one key.
///
/// `Debug` prints it as `Display` does (`put("x", "1")`): that is how raft-sim's counterexamples
/// show it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Operation {
    /// Set `key` to `value`. Answered with [`Response::Done`].
    Put {
        /// The key written.
        key: String,
        /// The value it now holds.
        value: String,
    },
    /// Remove `key`. Answered with [`Response::Done`].
    Delete {
        /// The key removed.
        key: String,
    },
    /// Read `key`. Answered with [`Response::Value`].
    Get {
        /// The key read.
        key: String,
    },
    /// Set `key` to `new` if and only if it currently holds `expect` (`None`: the key is absent).
    /// Answered with [`Response::Cas`].
    Cas {
        /// The key compared and perhaps written.
        key: String,
        /// The value the key must hold for the swap to happen; `None` means "absent".
        expect: Option<String>,
        /// The value written when the comparison succeeds.
        new: String,
    },
}

impl Operation {
    /// A [`Operation::Put`] of `value` at `key`.
    pub fn put(key: impl Into<String>, value: impl Into<String>) -> Operation {
        Operation::Put {
            key: key.into(),
            value: value.into(),
        }
    }

    /// A [`Operation::Delete`] of `key`.
    pub fn delete(key: impl Into<String>) -> Operation {
        Operation::Delete { key: key.into() }
    }

    /// A [`Operation::Get`] of `key`.
    pub fn get(key: impl Into<String>) -> Operation {
        Operation::Get { key: key.into() }
    }

    /// A [`Operation::Cas`] of `key` from `expect` to `new`.
    pub fn cas(key: impl Into<String>, expect: Option<&str>, new: impl Into<String>) -> Operation {
        Operation::Cas {
            key: key.into(),
            expect: expect.map(str::to_owned),
            new: new.into(),
        }
    }

    /// The one key this operation touches.
    pub fn key(&self) -> &str {
        match self {
            Operation::Put { key, .. }
            | Operation::Delete { key }
            | Operation::Get { key }
            | Operation::Cas { key, .. } => key,
        }
    }

    /// Whether `response` is the kind of answer this operation gets.
    fn is_answered_by(&self, response: &Response) -> bool {
        matches!(
            (self, response),
            (
                Operation::Put { .. } | Operation::Delete { .. },
                Response::Done
            ) | (Operation::Get { .. }, Response::Value(_))
                | (Operation::Cas { .. }, Response::Cas { .. })
        )
    }

    /// `response` as [`KvModel`] gives it: a successful swap that reported the value it left
    /// (its `new`) reports the value it found (its `expect`) instead; the success implies both,
    /// so nothing a store could get wrong is hidden. Every other answer as it is.
    fn as_found(&self, response: Response) -> Response {
        match (self, response) {
            (
                Operation::Cas { expect, new, .. },
                Response::Cas {
                    swapped: true,
                    current: Some(left),
                },
            ) if left == *new => Response::Cas {
                swapped: true,
                current: expect.clone(),
            },
            (_, response) => response,
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Operation::Put { key, value } => write!(formatter, "put({key:?}, {value:?})"),
            Operation::Delete { key } => write!(formatter, "delete({key:?})"),
            Operation::Get { key } => write!(formatter, "get({key:?})"),
            Operation::Cas { key, expect, new } => {
                write!(formatter, "cas({key:?}, {} -> {new:?})", show(expect))
            }
        }
    }
}

impl fmt::Debug for Operation {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, formatter)
    }
}

/// What the store answered to a completed [`Operation`].
///
/// `Debug` prints it as `Display` does (`"1"`, `absent`, `done`).
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Response {
    /// A [`Operation::Put`] or [`Operation::Delete`] was acknowledged.
    Done,
    /// A [`Operation::Get`] read this value; `None` means the key was absent.
    Value(Option<String>),
    /// The outcome of a [`Operation::Cas`].
    Cas {
        /// Whether the key held `expect` and now holds `new`.
        swapped: bool,
        /// The value the operation found. When the swap failed this must be the value that made
        /// it fail. When it succeeded, either `expect` (the value found, as [`apply_to_map`]
        /// answers) or `new` (the value left, as raft-kv's HTTP API answers) is accepted: both
        /// are implied by the success itself, so accepting either loses no power to detect an
        /// inconsistent register and spares the store a convention.
        current: Option<String>,
    },
}

impl fmt::Display for Response {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Response::Done => formatter.write_str("done"),
            Response::Value(value) => formatter.write_str(&show(value)),
            Response::Cas { swapped, current } => {
                let verdict = if *swapped { "swapped" } else { "not swapped" };
                write!(formatter, "{verdict}, found {}", show(current))
            }
        }
    }
}

impl fmt::Debug for Response {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, formatter)
    }
}

/// A value as the explanations print it: quoted, or `absent`.
fn show(value: &Option<String>) -> String {
    match value {
        Some(value) => format!("{value:?}"),
        None => "absent".to_owned(),
    }
}

/// Names an operation recorded in a [`History`]; printed as `#n`, the order of its call's
/// recording.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OperationId(usize);

impl fmt::Display for OperationId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "#{}", self.0)
    }
}

/// The client-visible record of a run: every call, and how each call ended, with the time of
/// each event. [`History::to_sim`] turns it into the history raft-sim checks.
///
/// Times are in milliseconds (raft-sim's counterexamples print them as such), from one clock
/// throughout. Events with equal times are ordered as they were recorded, which is their true
/// order when, as in a turmoil simulation, the recorder sees events as they happen: a read
/// called in the same instant that a write was acknowledged, but recorded after it, must see the
/// write. Record events in the order they happened, or give each its own time.
///
/// An operation that is neither completed nor timed out when the history is checked is treated as
/// timed out: the run ended while it was in flight, so it may or may not have taken effect.
#[derive(Clone, Debug, Default)]
pub struct History {
    /// Indexed by [`OperationId`]; in call-recording order.
    records: Vec<Record>,
    /// Counts recorded events, to order events with equal times as they were recorded.
    next_sequence: u64,
}

/// One operation of a [`History`].
#[derive(Clone, Debug)]
struct Record {
    /// Names the client in raft-sim's counterexamples.
    client: u64,
    operation: Operation,
    /// When it was called: where its invocation goes among the events.
    call: EventOrder,
    ending: Ending,
}

/// How an operation ended, as far as the client knows.
#[derive(Clone, Debug)]
enum Ending {
    /// Still in flight when the history was checked; treated like [`Ending::TimedOut`].
    Pending,
    /// The client received `response`.
    Completed { response: Response, at: EventOrder },
    /// The client gave up waiting. The operation may take effect at any time after its call, or
    /// never.
    TimedOut,
    /// The client learned that the operation took no effect (for example, the node refused it
    /// before proposing it). It is left out of the check.
    Failed,
}

/// Where an event falls in real time: its time, then its recording sequence to break ties.
type EventOrder = (u64, u64);

impl History {
    /// An empty history.
    pub fn new() -> History {
        History::default()
    }

    /// A history of `operations` (every event at its own time, so their order in the list does
    /// not matter).
    pub fn from_timed(operations: &[TimedOperation]) -> History {
        let mut history = History::new();
        let ids: Vec<OperationId> = operations
            .iter()
            .map(|op| history.call(op.client, op.operation.clone(), op.called))
            .collect();
        for (op, id) in operations.iter().zip(ids) {
            match &op.ended {
                Some((response, time)) => history.complete(id, response.clone(), *time),
                None => history.time_out(id),
            }
        }
        history
    }

    /// Records that `client` called `operation` at `time`. The returned id is passed to
    /// [`History::complete`], [`History::time_out`] or [`History::fail`] when the call ends.
    pub fn call(&mut self, client: u64, operation: Operation, time: u64) -> OperationId {
        let id = OperationId(self.records.len());
        let call = (time, self.take_sequence());
        self.records.push(Record {
            client,
            operation,
            call,
            ending: Ending::Pending,
        });
        id
    }

    /// Records that the operation `id` returned `response` at `time`.
    ///
    /// # Panics
    ///
    /// On misuse by the test that records the history: if `id` is not from this history, if the
    /// operation already ended, if `time` is before the call, or if `response` is not the kind of
    /// answer the operation gets (e.g. [`Response::Done`] to a [`Operation::Get`]).
    pub fn complete(&mut self, id: OperationId, response: Response, time: u64) {
        let sequence = self.take_sequence();
        let record = self.pending_record(id);
        assert!(
            time >= record.call.0,
            "operation {id} returned at {time}, before its call at {}",
            record.call.0
        );
        assert!(
            record.operation.is_answered_by(&response),
            "operation {id} ({}) cannot be answered with {response:?}",
            record.operation
        );
        record.ending = Ending::Completed {
            response,
            at: (time, sequence),
        };
    }

    /// Records that the client gave up on the operation `id` without an answer: it may take
    /// effect at any time after its call, or never.
    ///
    /// # Panics
    ///
    /// If `id` is not from this history or the operation already ended.
    pub fn time_out(&mut self, id: OperationId) {
        self.pending_record(id).ending = Ending::TimedOut;
    }

    /// Records that the operation `id` certainly took no effect: it is left out of the check.
    /// Use it only when the store guarantees the operation was never applied; when in doubt, use
    /// [`History::time_out`].
    ///
    /// # Panics
    ///
    /// If `id` is not from this history or the operation already ended.
    pub fn fail(&mut self, id: OperationId) {
        self.pending_record(id).ending = Ending::Failed;
    }

    /// The history as raft-sim's checker takes it: every call and return replayed in real-time
    /// order (by time, then by recording), each client named by its number, an answer recorded
    /// as [`KvModel`] gives it (a successful swap reporting the value it found: see
    /// [`Response::Cas`]), and the outcomes mapped as the module documentation's table says.
    /// (Operations of unknown outcome that make no difference, a get or a write of a value
    /// nothing mentions, are left out by raft-sim itself, through [`KvModel`]'s
    /// [`Model::register`].)
    pub fn to_sim(&self) -> raft_sim::History<Operation, Response> {
        enum Event {
            Call(usize),
            Return(usize),
        }
        let mut events: Vec<(EventOrder, Event)> = Vec::with_capacity(2 * self.records.len());
        for (index, record) in self.records.iter().enumerate() {
            events.push((record.call, Event::Call(index)));
            if let Ending::Completed { at, .. } = record.ending {
                events.push((at, Event::Return(index)));
            }
        }
        // Sequences are unique, so this is a total order of the events.
        events.sort_unstable_by_key(|&(order, _)| order);
        let mut history = raft_sim::History::new();
        let mut ids: Vec<Option<OpId>> = vec![None; self.records.len()];
        for ((time, _), event) in events {
            match event {
                Event::Call(index) => {
                    let record = &self.records[index];
                    let client = record.client.to_string();
                    ids[index] = Some(history.invoke(client, record.operation.clone(), time));
                }
                Event::Return(index) => {
                    let record = &self.records[index];
                    let (Some(id), Ending::Completed { response, .. }) =
                        (ids[index], &record.ending)
                    else {
                        unreachable!("a return is sorted after its call, which `complete` checked")
                    };
                    let answer = record.operation.as_found(response.clone());
                    history.ok(id, answer, time);
                }
            }
        }
        for (record, id) in self.records.iter().zip(ids) {
            let Some(id) = id else {
                continue;
            };
            match record.ending {
                Ending::Failed => history.failed(id),
                Ending::TimedOut => history.unknown(id),
                // raft-sim checks an operation that never ended as an unknown one.
                Ending::Pending | Ending::Completed { .. } => {}
            }
        }
        history
    }

    fn take_sequence(&mut self) -> u64 {
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        sequence
    }

    /// The record of `id`, which must not have ended yet: ending an operation twice means the
    /// recorder lost track of its requests.
    fn pending_record(&mut self, id: OperationId) -> &mut Record {
        let count = self.records.len();
        let record = self
            .records
            .get_mut(id.0)
            .unwrap_or_else(|| panic!("operation {id} is not in this history of {count}"));
        assert!(
            matches!(record.ending, Ending::Pending),
            "operation {id} ({}) already ended as {:?}",
            record.operation,
            record.ending
        );
        record
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // ---- helpers -------------------------------------------------------------------------------

    /// Records an operation that returned `response` at `returned`.
    fn completed(
        history: &mut History,
        client: u64,
        operation: Operation,
        called: u64,
        returned: u64,
        response: Response,
    ) -> OperationId {
        let id = history.call(client, operation, called);
        history.complete(id, response, returned);
        id
    }

    /// Records an operation whose client gave up on it.
    fn timed_out(history: &mut History, client: u64, operation: Operation, called: u64) {
        let id = history.call(client, operation, called);
        history.time_out(id);
    }

    fn value(value: &str) -> Response {
        Response::Value(Some(value.to_owned()))
    }

    const ABSENT: Response = Response::Value(None);

    fn swapped(current: Option<&str>) -> Response {
        Response::Cas {
            swapped: true,
            current: current.map(str::to_owned),
        }
    }

    fn not_swapped(current: Option<&str>) -> Response {
        Response::Cas {
            swapped: false,
            current: current.map(str::to_owned),
        }
    }

    #[track_caller]
    fn assert_linearizable(history: &History) {
        let verdict = check(history);
        assert!(
            verdict.is_linearizable(),
            "expected linearizable, got:\n{verdict}"
        );
    }

    /// Asserts a violation whose unexplained answers are all on `key`, and returns it.
    #[track_caller]
    fn assert_violation(history: &History, key: &str) -> Counterexample<Operation, Response> {
        match check(history) {
            Verdict::NotLinearizable(counterexample)
                if !counterexample.core.is_empty()
                    && counterexample.core.iter().all(|op| op.op.key() == key) =>
            {
                counterexample
            }
            other => panic!("expected a violation on {key:?}, got {other}"),
        }
    }

    /// The operations of a counterexample's core or context, as (call time, operation).
    fn ops(operations: &[raft_sim::Operation<Operation, Response>]) -> Vec<(u64, Operation)> {
        operations
            .iter()
            .map(|operation| (operation.invoked_ms, operation.op.clone()))
            .collect()
    }

    // ---- the model -----------------------------------------------------------------------------

    #[test]
    fn every_key_is_a_part_of_its_own() {
        let model = KvModel::default();
        let part = |operation: &Operation| model.partition(operation);
        assert_eq!(part(&Operation::put("x", "1")), part(&Operation::get("x")));
        assert_eq!(
            part(&Operation::delete("x")),
            part(&Operation::cas("x", None, "2"))
        );
        assert_ne!(part(&Operation::get("x")), part(&Operation::get("y")));
        // Numbered as met, so two keys never share a part.
        assert_eq!(part(&Operation::get("x")), Some(0));
        assert_eq!(part(&Operation::get("y")), Some(1));
    }

    /// Two keys whose FNV-1a hashes are equal: numbered by that hash, they shared a part, and
    /// the register rules took this plain sequential history for one register written twice.
    #[test]
    fn keys_whose_hashes_collide_are_checked_apart() {
        let (x, y) = ("k49a2fca89c12ced4", "k213cf6072fab0471");
        let mut history = History::new();
        completed(
            &mut history,
            1,
            Operation::put(x, "a"),
            1,
            2,
            Response::Done,
        );
        completed(
            &mut history,
            2,
            Operation::put(y, "b"),
            3,
            4,
            Response::Done,
        );
        completed(&mut history, 3, Operation::get(x), 5, 6, value("a"));
        completed(&mut history, 4, Operation::get(y), 7, 8, value("b"));
        assert_linearizable(&history);
    }

    #[test]
    fn a_successful_swap_reporting_the_value_left_is_checked_as_reporting_the_value_found() {
        let cas = Operation::cas("x", Some("a"), "b");
        assert_eq!(cas.as_found(swapped(Some("b"))), swapped(Some("a")));
        assert_eq!(cas.as_found(swapped(Some("a"))), swapped(Some("a")));
        // Anything else is left as it is, to be caught.
        assert_eq!(cas.as_found(swapped(Some("c"))), swapped(Some("c")));
        assert_eq!(cas.as_found(not_swapped(Some("b"))), not_swapped(Some("b")));
    }

    // ---- accepted histories --------------------------------------------------------------------

    #[test]
    fn empty_history_is_linearizable() {
        assert_linearizable(&History::new());
    }

    #[test]
    fn sequential_history_is_accepted() {
        let mut history = History::new();
        completed(&mut history, 1, Operation::get("x"), 0, 1, ABSENT);
        completed(
            &mut history,
            1,
            Operation::put("x", "1"),
            2,
            3,
            Response::Done,
        );
        completed(&mut history, 2, Operation::get("x"), 4, 5, value("1"));
        let cas = Operation::cas("x", Some("1"), "2");
        completed(&mut history, 2, cas, 6, 7, swapped(Some("1")));
        let cas = Operation::cas("x", Some("1"), "3");
        completed(&mut history, 1, cas, 8, 9, not_swapped(Some("2")));
        completed(
            &mut history,
            1,
            Operation::delete("x"),
            10,
            11,
            Response::Done,
        );
        completed(&mut history, 3, Operation::get("x"), 12, 13, ABSENT);
        let cas = Operation::cas("x", None, "4");
        completed(&mut history, 3, cas, 14, 15, swapped(None));
        completed(&mut history, 3, Operation::get("x"), 16, 17, value("4"));
        assert_linearizable(&history);
    }

    #[test]
    fn read_overlapping_a_put_may_return_the_old_or_the_new_value() {
        for (seen, client_order_reversed) in [(value("0"), false), (value("1"), false)]
            .into_iter()
            .chain([(value("0"), true), (value("1"), true)])
        {
            let mut history = History::new();
            completed(
                &mut history,
                1,
                Operation::put("x", "0"),
                0,
                1,
                Response::Done,
            );
            // The put and the get overlap; which one is called first must not matter, nor that
            // the put's return is recorded before the get's call.
            let (put_call, get_call) = if client_order_reversed {
                (12, 10)
            } else {
                (10, 12)
            };
            completed(
                &mut history,
                1,
                Operation::put("x", "1"),
                put_call,
                20,
                Response::Done,
            );
            completed(&mut history, 2, Operation::get("x"), get_call, 22, seen);
            assert_linearizable(&history);
        }
    }

    #[test]
    fn successful_cas_may_report_either_the_value_found_or_the_value_left() {
        for current in [None, Some("a")] {
            let mut history = History::new();
            let cas = Operation::cas("x", None, "a");
            completed(&mut history, 1, cas, 0, 1, swapped(current));
            assert_linearizable(&history);
        }
        let mut history = History::new();
        let cas = Operation::cas("x", None, "a");
        completed(&mut history, 1, cas, 0, 1, swapped(Some("b")));
        assert_violation(&history, "x");
    }

    #[test]
    fn two_cas_from_absent_both_succeed_when_a_delete_falls_between_them() {
        let mut history = History::new();
        let cas = Operation::cas("x", None, "a");
        completed(&mut history, 1, cas, 0, 1, swapped(None));
        completed(
            &mut history,
            3,
            Operation::delete("x"),
            2,
            3,
            Response::Done,
        );
        let cas = Operation::cas("x", None, "b");
        completed(&mut history, 2, cas, 4, 5, swapped(None));
        assert_linearizable(&history);
    }

    // ---- rejected histories --------------------------------------------------------------------

    #[test]
    fn stale_read_after_an_acknowledged_put_is_rejected() {
        // The read misses the write entirely (key still absent) ...
        let mut history = History::new();
        completed(
            &mut history,
            1,
            Operation::put("x", "1"),
            0,
            10,
            Response::Done,
        );
        completed(&mut history, 2, Operation::get("x"), 11, 12, ABSENT);
        let counterexample = assert_violation(&history, "x");
        // The read's answer is the one no order gives; the put it missed ran just before it.
        assert_eq!(ops(&counterexample.core), [(11, Operation::get("x"))]);
        assert_eq!(
            ops(&counterexample.context),
            [(0, Operation::put("x", "1"))]
        );
        let shown = counterexample.to_string();
        assert!(
            shown.contains(r#"2: get("x") -> absent"#),
            "the core is shown as the store's operations:\n{shown}"
        );

        // ... or returns the value the write replaced.
        let mut history = History::new();
        completed(
            &mut history,
            1,
            Operation::put("x", "0"),
            0,
            5,
            Response::Done,
        );
        completed(
            &mut history,
            1,
            Operation::put("x", "1"),
            6,
            10,
            Response::Done,
        );
        completed(&mut history, 2, Operation::get("x"), 11, 12, value("0"));
        let counterexample = assert_violation(&history, "x");
        // Found before any search: "0" and "1" are each written once, and real time orders
        // their stretches both ways (the put of "1" returned before the read of "0" was called,
        // the put of "0" before the put of "1"); the core is those operations.
        assert!(
            matches!(
                counterexample.refutation,
                raft_sim::Refutation::ValueHeldTwice(_)
            ),
            "{counterexample}"
        );
        let core = ops(&counterexample.core);
        assert!(
            core.contains(&(11, Operation::get("x"))),
            "{counterexample}"
        );
        assert!(
            core.contains(&(6, Operation::put("x", "1"))),
            "{counterexample}"
        );
    }

    #[test]
    fn two_successful_cas_from_the_same_expected_value_are_rejected() {
        let mut history = History::new();
        // Even fully concurrent, the second swap to run finds the first one's value.
        let cas = Operation::cas("x", None, "a");
        completed(&mut history, 1, cas, 0, 10, swapped(None));
        let cas = Operation::cas("x", None, "b");
        completed(&mut history, 2, cas, 1, 11, swapped(None));
        assert_violation(&history, "x");
    }

    #[test]
    fn failed_cas_must_report_the_value_that_made_it_fail() {
        let mut base = History::new();
        completed(&mut base, 1, Operation::put("x", "a"), 0, 1, Response::Done);

        let mut history = base.clone();
        let cas = Operation::cas("x", Some("b"), "c");
        completed(&mut history, 2, cas, 2, 3, not_swapped(Some("a")));
        assert_linearizable(&history);

        // Wrong current value.
        let mut history = base.clone();
        let cas = Operation::cas("x", Some("b"), "c");
        completed(&mut history, 2, cas, 2, 3, not_swapped(None));
        assert_violation(&history, "x");

        // Failing although the key held the expected value.
        let mut history = base;
        let cas = Operation::cas("x", Some("a"), "c");
        completed(&mut history, 2, cas, 2, 3, not_swapped(Some("a")));
        assert_violation(&history, "x");
    }

    #[test]
    fn read_of_a_value_never_written_is_rejected() {
        let mut history = History::new();
        completed(
            &mut history,
            1,
            Operation::put("x", "1"),
            0,
            10,
            Response::Done,
        );
        completed(&mut history, 2, Operation::get("x"), 5, 15, value("2"));
        assert_violation(&history, "x");
    }

    #[test]
    fn read_of_a_deleted_value_after_the_delete_returned_is_rejected() {
        let mut history = History::new();
        completed(
            &mut history,
            1,
            Operation::put("x", "1"),
            0,
            1,
            Response::Done,
        );
        completed(
            &mut history,
            1,
            Operation::delete("x"),
            2,
            3,
            Response::Done,
        );
        completed(&mut history, 2, Operation::get("x"), 4, 5, value("1"));
        assert_violation(&history, "x");
    }

    // ---- timed-out and refused operations ------------------------------------------------------

    #[test]
    fn timed_out_put_seen_by_a_later_read_is_accepted() {
        let mut history = History::new();
        timed_out(&mut history, 1, Operation::put("x", "1"), 0);
        // Long after the client gave up, the write shows up.
        completed(&mut history, 2, Operation::get("x"), 100, 101, value("1"));
        completed(&mut history, 2, Operation::get("x"), 102, 103, value("1"));
        assert_linearizable(&history);
    }

    #[test]
    fn failed_operations_are_left_out() {
        let mut history = History::new();
        let put = history.call(1, Operation::put("x", "1"), 10);
        history.fail(put);
        // Had the failed put counted, this read of "1" would be fine; without it, "1" was never
        // written and the read is impossible.
        let get = history.call(2, Operation::get("x"), 30);
        history.complete(get, Response::Value(Some("1".into())), 40);
        assert_violation(&history, "x");
        let mut history = History::new();
        let put = history.call(1, Operation::put("x", "1"), 10);
        history.fail(put);
        let get = history.call(2, Operation::get("x"), 30);
        history.complete(get, Response::Value(None), 40);
        assert_linearizable(&history);
    }

    #[test]
    fn timed_out_put_never_seen_is_accepted() {
        let mut history = History::new();
        completed(
            &mut history,
            1,
            Operation::put("x", "0"),
            0,
            1,
            Response::Done,
        );
        timed_out(&mut history, 1, Operation::put("x", "1"), 2);
        completed(&mut history, 2, Operation::get("x"), 100, 101, value("0"));
        // Also when the put's value is one readers do see, so that it is really searched.
        completed(
            &mut history,
            3,
            Operation::put("x", "1"),
            200,
            201,
            Response::Done,
        );
        completed(&mut history, 3, Operation::get("x"), 202, 203, value("1"));
        assert_linearizable(&history);
    }

    #[test]
    fn timed_out_put_seen_then_unseen_without_an_overwrite_is_rejected() {
        let mut history = History::new();
        completed(
            &mut history,
            1,
            Operation::put("x", "0"),
            0,
            1,
            Response::Done,
        );
        timed_out(&mut history, 1, Operation::put("x", "1"), 2);
        completed(&mut history, 2, Operation::get("x"), 10, 11, value("1"));
        completed(&mut history, 2, Operation::get("x"), 12, 13, value("0"));
        assert_violation(&history, "x");
    }

    #[test]
    fn timed_out_delete_and_cas_may_take_effect_late_or_never() {
        let mut history = History::new();
        completed(
            &mut history,
            1,
            Operation::put("x", "a"),
            0,
            1,
            Response::Done,
        );
        timed_out(&mut history, 1, Operation::cas("x", Some("a"), "b"), 2);
        timed_out(&mut history, 2, Operation::delete("x"), 3);
        completed(&mut history, 3, Operation::get("x"), 10, 11, value("a"));
        completed(&mut history, 3, Operation::get("x"), 12, 13, value("b"));
        completed(&mut history, 3, Operation::get("x"), 14, 15, ABSENT);
        assert_linearizable(&history);

        // But each takes effect at most once: "b" cannot come back after the delete.
        completed(&mut history, 3, Operation::get("x"), 16, 17, value("b"));
        assert_violation(&history, "x");
    }

    #[test]
    fn timed_out_and_unfinished_reads_are_ignored() {
        let mut history = History::new();
        completed(
            &mut history,
            1,
            Operation::put("x", "1"),
            0,
            1,
            Response::Done,
        );
        timed_out(&mut history, 2, Operation::get("x"), 2);
        // Still in flight when the run ended: treated as timed out.
        history.call(3, Operation::get("x"), 3);
        assert_linearizable(&history);
    }

    #[test]
    fn unfinished_put_is_treated_as_timed_out() {
        let mut history = History::new();
        history.call(1, Operation::put("x", "1"), 0);
        completed(&mut history, 2, Operation::get("x"), 5, 6, value("1"));
        assert_linearizable(&history);
        completed(&mut history, 2, Operation::get("x"), 7, 8, ABSENT);
        assert_violation(&history, "x");
    }

    #[test]
    fn outcomes_reach_raft_sim_as_recorded() {
        let mut history = History::new();
        completed(
            &mut history,
            1,
            Operation::put("x", "1"),
            0,
            5,
            Response::Done,
        );
        let refused = history.call(2, Operation::put("x", "2"), 1);
        history.fail(refused);
        timed_out(&mut history, 3, Operation::delete("x"), 2);
        history.call(4, Operation::delete("x"), 3);
        let sim = history.to_sim();
        let outcomes: Vec<_> = sim
            .operations()
            .iter()
            .map(|operation| (operation.client.as_str(), operation.outcome.clone()))
            .collect();
        assert_eq!(
            outcomes,
            [
                (
                    "1",
                    raft_sim::Recorded::Ok {
                        ret: Response::Done,
                        returned_ms: 5,
                        // Calls at 0, 1, 2 and 3 come before the return at 5.
                        return_event: 4,
                    }
                ),
                ("2", raft_sim::Recorded::Failed),
                ("3", raft_sim::Recorded::Unknown),
                ("4", raft_sim::Recorded::Pending),
            ]
        );
    }

    // ---- real time and keys --------------------------------------------------------------------

    #[test]
    fn events_at_equal_times_are_ordered_as_recorded() {
        // The read is called in the instant the put returns, but recorded after the return: it
        // started after the put finished and must see it.
        let mut history = History::new();
        let put = history.call(1, Operation::put("x", "1"), 0);
        history.complete(put, Response::Done, 10);
        let get = history.call(2, Operation::get("x"), 10);
        history.complete(get, ABSENT, 11);
        assert_violation(&history, "x");

        // Recorded before the return, the two overlap and the read may miss the put.
        let mut history = History::new();
        let put = history.call(1, Operation::put("x", "1"), 0);
        let get = history.call(2, Operation::get("x"), 10);
        history.complete(put, Response::Done, 10);
        history.complete(get, ABSENT, 11);
        assert_linearizable(&history);
    }

    #[test]
    fn violation_is_reported_with_its_own_key() {
        let mut history = History::new();
        // Interleaved in time with the bad key, "a" and "c" are fine on their own ...
        completed(
            &mut history,
            1,
            Operation::put("a", "1"),
            0,
            1,
            Response::Done,
        );
        completed(
            &mut history,
            2,
            Operation::put("b", "1"),
            0,
            1,
            Response::Done,
        );
        completed(&mut history, 3, Operation::get("c"), 0, 1, ABSENT);
        completed(&mut history, 1, Operation::get("a"), 2, 3, value("1"));
        // ... while "b" has a stale read. A read of "a"'s value on "b" must not be excused by
        // the put on "a": keys are independent registers.
        completed(&mut history, 2, Operation::get("b"), 2, 3, ABSENT);
        completed(&mut history, 3, Operation::get("c"), 2, 3, ABSENT);
        let counterexample = assert_violation(&history, "b");
        assert!(
            counterexample
                .context
                .iter()
                .all(|operation| operation.op.key() == "b"),
            "other keys leak in:\n{counterexample}"
        );

        // A value written on one key does not make it readable on another.
        let mut history = History::new();
        completed(
            &mut history,
            1,
            Operation::put("a", "1"),
            0,
            10,
            Response::Done,
        );
        completed(&mut history, 2, Operation::get("b"), 5, 15, value("1"));
        assert_violation(&history, "b");
    }

    /// Twenty acknowledged puts, all concurrent, ten of "a" and ten of "b"; after them, reads of
    /// "a", "b" and "a" again, which would need a put after the last of them: a search that
    /// must try the subsets of the puts.
    fn pathological_history() -> History {
        let mut history = History::new();
        for client in 0..20 {
            let put = Operation::put("x", if client % 2 == 0 { "a" } else { "b" });
            completed(&mut history, client, put, client, 100, Response::Done);
        }
        for (offset, seen) in ["a", "b", "a"].into_iter().enumerate() {
            let time = 200 + 2 * offset as u64;
            completed(
                &mut history,
                99,
                Operation::get("x"),
                time,
                time + 1,
                value(seen),
            );
        }
        history
    }

    #[test]
    fn violation_on_another_key_wins_over_undecided() {
        let mut history = pathological_history();
        assert!(
            matches!(
                check_with_budget(&history, 1_000),
                Verdict::Undecided { .. }
            ),
            "the key \"x\" needs more than 1,000 steps"
        );
        completed(
            &mut history,
            7,
            Operation::get("y"),
            0,
            1,
            value("never written"),
        );
        let verdict = check_with_budget(&history, 1_000);
        assert!(
            matches!(&verdict, Verdict::NotLinearizable(counterexample)
                if counterexample.core[0].op.key() == "y"),
            "{verdict}"
        );
    }

    // ---- misuse --------------------------------------------------------------------------------

    #[test]
    #[should_panic(expected = "already ended")]
    fn completing_twice_panics() {
        let mut history = History::new();
        let id = completed(&mut history, 1, Operation::get("x"), 0, 1, ABSENT);
        history.complete(id, ABSENT, 2);
    }

    #[test]
    #[should_panic(expected = "cannot be answered")]
    fn mismatched_response_panics() {
        let mut history = History::new();
        completed(&mut history, 1, Operation::get("x"), 0, 1, Response::Done);
    }

    #[test]
    #[should_panic(expected = "before its call")]
    fn returning_before_the_call_panics() {
        let mut history = History::new();
        completed(&mut history, 1, Operation::get("x"), 5, 4, ABSENT);
    }

    // ---- randomized ----------------------------------------------------------------------------

    /// The crate's seeded generator ([`crate::rng::SplitMix64`]), with the draws these tests
    /// use; a failing seed replays exactly.
    struct SplitMix64(crate::rng::SplitMix64);

    impl SplitMix64 {
        fn seeded(seed: u64) -> SplitMix64 {
            SplitMix64(crate::rng::SplitMix64::new(seed))
        }

        /// A number in `0..bound`.
        fn below(&mut self, bound: usize) -> usize {
            self.0.range(0, bound as u64) as usize
        }

        fn percent(&mut self, percent: usize) -> bool {
            self.below(100) < percent
        }

        fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
            &items[self.below(items.len())]
        }
    }

    use super::{TimedOperation as Generated, brute_force_linearizable};

    struct Shape {
        clients: usize,
        operations: usize,
        keys: &'static [&'static str],
        values: &'static [&'static str],
        timeout_percent: usize,
    }

    /// What a client is doing in the generator.
    enum ClientState {
        Idle,
        /// Called, not yet applied to the register.
        Called(usize),
        /// Applied, with the answer it will return.
        Applied(usize, Response),
    }

    /// Runs random clients against a real single-copy map. Each step of the clock is one event:
    /// a call, the moment an operation takes effect, a return, or a time-out, so every operation
    /// takes effect strictly inside its interval and the history is linearizable by construction.
    /// A client that times out leaves behind a "ghost" that may take effect at any later step, or
    /// never, like a request stuck in a Raft log.
    fn generate(random: &mut SplitMix64, shape: &Shape) -> Vec<Generated> {
        let mut map: BTreeMap<String, String> = BTreeMap::new();
        let mut generated: Vec<Generated> = Vec::new();
        let mut clients: Vec<ClientState> = (0..shape.clients).map(|_| ClientState::Idle).collect();
        let mut ghosts: Vec<usize> = Vec::new();
        let mut time = 0;
        while generated.len() < shape.operations
            || clients
                .iter()
                .any(|client| !matches!(client, ClientState::Idle))
        {
            time += 1;
            if !ghosts.is_empty() && random.percent(10) {
                let ghost = ghosts.swap_remove(random.below(ghosts.len()));
                if random.percent(50) {
                    apply(&mut map, &generated[ghost].operation);
                }
            }
            let client = random.below(shape.clients);
            clients[client] = match std::mem::replace(&mut clients[client], ClientState::Idle) {
                ClientState::Idle if generated.len() < shape.operations => {
                    generated.push(Generated {
                        client: client as u64,
                        operation: random_operation(random, shape),
                        called: time,
                        ended: None,
                    });
                    ClientState::Called(generated.len() - 1)
                }
                ClientState::Idle => ClientState::Idle,
                ClientState::Called(index) if random.percent(shape.timeout_percent) => {
                    ghosts.push(index);
                    ClientState::Idle
                }
                ClientState::Called(index) => {
                    ClientState::Applied(index, apply(&mut map, &generated[index].operation))
                }
                ClientState::Applied(_, _) if random.percent(shape.timeout_percent) => {
                    ClientState::Idle
                }
                ClientState::Applied(index, response) => {
                    generated[index].ended = Some((response, time));
                    ClientState::Idle
                }
            };
        }
        generated
    }

    fn random_operation(random: &mut SplitMix64, shape: &Shape) -> Operation {
        let key = *random.pick(shape.keys);
        let value = *random.pick(shape.values);
        match random.below(100) {
            0..35 => Operation::put(key, value),
            35..70 => Operation::get(key),
            70..80 => Operation::delete(key),
            _ => {
                let expect = random.percent(70).then(|| *random.pick(shape.values));
                Operation::cas(key, expect, value)
            }
        }
    }

    use super::apply_to_map as apply;

    fn record(generated: &[Generated]) -> History {
        History::from_timed(generated)
    }

    const RANDOM_SHAPE: Shape = Shape {
        clients: 4,
        operations: 30,
        keys: &["x", "y"],
        values: &["a", "b", "c"],
        timeout_percent: 5,
    };

    #[test]
    fn random_linearizable_histories_are_accepted() {
        for seed in 0..400 {
            let mut random = SplitMix64::seeded(seed);
            let shape = Shape {
                clients: 3 + seed as usize % 3,
                ..RANDOM_SHAPE
            };
            let history = record(&generate(&mut random, &shape));
            let verdict = check(&history);
            assert!(verdict.is_linearizable(), "seed {seed}:\n{verdict}");
        }
    }

    #[test]
    fn random_histories_with_a_read_of_a_never_written_value_are_rejected() {
        let mut rejected = 0;
        for seed in 0..400 {
            let mut random = SplitMix64::seeded(seed);
            let shape = Shape {
                clients: 3 + seed as usize % 3,
                ..RANDOM_SHAPE
            };
            let mut generated = generate(&mut random, &shape);
            let reads: Vec<usize> = (0..generated.len())
                .filter(|&index| {
                    matches!(generated[index].operation, Operation::Get { .. })
                        && generated[index].ended.is_some()
                })
                .collect();
            if reads.is_empty() {
                continue;
            }
            let read = *random.pick(&reads);
            let key = generated[read].operation.key().to_owned();
            if let Some((response, _)) = &mut generated[read].ended {
                // No operation writes this value, so no point of any interval can return it.
                *response = value("never written");
            }
            match check(&record(&generated)) {
                Verdict::NotLinearizable(counterexample) => {
                    assert_eq!(counterexample.core[0].op.key(), key, "seed {seed}")
                }
                other => panic!("seed {seed}: mutated read #{read} accepted: {other}"),
            }
            rejected += 1;
        }
        assert!(
            rejected > 350,
            "only {rejected} histories had a read to mutate"
        );
    }

    /// Replaces one answer with a random one of the same kind, or turns one operation into a
    /// time-out; the result may or may not still be linearizable.
    fn mutate(random: &mut SplitMix64, generated: &mut [Generated]) {
        let index = random.below(generated.len());
        let values = [None, Some("a"), Some("b"), Some("z")];
        let operation = generated[index].operation.clone();
        let Some((response, _)) = &mut generated[index].ended else {
            return;
        };
        let current = random.pick(&values).map(str::to_owned);
        *response = match operation {
            _ if random.percent(15) => {
                generated[index].ended = None;
                return;
            }
            Operation::Put { .. } | Operation::Delete { .. } => return,
            Operation::Get { .. } => Response::Value(current),
            Operation::Cas { .. } => Response::Cas {
                swapped: random.percent(50),
                current,
            },
        };
    }

    #[test]
    fn agrees_with_brute_force_on_small_random_histories() {
        let shape = Shape {
            clients: 3,
            operations: 7,
            keys: &["x", "y"],
            values: &["a", "b"],
            timeout_percent: 15,
        };
        let (mut accepted, mut rejected) = (0, 0);
        for seed in 0..3000 {
            let mut random = SplitMix64::seeded(seed);
            let mut generated = generate(&mut random, &shape);
            if random.percent(70) {
                mutate(&mut random, &mut generated);
            }
            let expected = brute_force_linearizable(&generated);
            let verdict = check(&record(&generated));
            assert!(
                !matches!(verdict, Verdict::Undecided { .. }),
                "seed {seed}: {verdict}"
            );
            assert_eq!(
                verdict.is_linearizable(),
                expected,
                "seed {seed}: brute force says {expected}, checker says:\n{verdict}\n{generated:#?}"
            );
            if expected {
                accepted += 1;
            } else {
                rejected += 1;
            }
        }
        // Both verdicts must be well exercised for the agreement to mean anything.
        assert!(
            accepted > 500 && rejected > 500,
            "{accepted} accepted, {rejected} rejected"
        );
    }

    #[test]
    fn large_history_is_decided_well_within_the_budget() {
        const KEYS: &[&str] = &["k0", "k1", "k2", "k3", "k4", "k5", "k6", "k7", "k8", "k9"];
        let shape = Shape {
            clients: 5,
            operations: 2000,
            keys: KEYS,
            values: &["a", "b", "c", "d"],
            timeout_percent: 2,
        };
        let mut random = SplitMix64::seeded(2024);
        let mut generated = generate(&mut random, &shape);
        // A fiftieth of the default budget is plenty.
        let budget = DEFAULT_STEP_BUDGET / 50;
        let verdict = check_with_budget(&record(&generated), budget);
        assert!(verdict.is_linearizable(), "{verdict}");

        // Refuting is the expensive direction: the search must exhaust every order before the bad
        // read. Break the last completed read of one key.
        let read = (0..generated.len())
            .rev()
            .find(|&index| {
                matches!(generated[index].operation, Operation::Get { .. })
                    && generated[index].ended.is_some()
            })
            .unwrap_or_else(|| panic!("no completed read in 2000 operations"));
        let key = generated[read].operation.key().to_owned();
        if let Some((response, _)) = &mut generated[read].ended {
            *response = value("never written");
        }
        match check_with_budget(&record(&generated), budget) {
            Verdict::NotLinearizable(counterexample) => {
                assert_eq!(counterexample.core[0].op.key(), key)
            }
            other => panic!("expected a violation on {key}, got {other}"),
        }
    }
}
