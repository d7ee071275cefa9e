//! A linearizability checker for client histories of a replicated key-value store.
//!
//! A simulation records, for every client request, what was asked, when it was called, and what
//! came back when (or that the client gave up). [`check`](crate::linearizability::check) then decides whether some total order of
//! those operations both respects real time — an operation that returned before another was
//! called comes first — and is a legal run of a plain single-copy map. That is linearizability
//! (Herlihy and Wing, 1990), the guarantee a Raft-replicated store promises its clients.
//!
//! # How the decision is made
//!
//! * **One key at a time.** Every operation touches exactly one key, and linearizability is
//!   *local* (Herlihy and Wing): a history is linearizable exactly when each key's sub-history is.
//!   Checking keys separately replaces one search over the product of all keys' states with many
//!   small ones; Horn and Kroening (2015) call this P-compositionality, and Knossos and Porcupine
//!   rely on it too.
//! * **Wing and Gong's search** (1993), in the form Lowe gives in "Testing for linearizability"
//!   (2017): the key's call and return events are kept in one time-ordered doubly linked list.
//!   Walking it from the front, a call is an operation that may take effect now; if the register
//!   accepts it, the operation's two events are unlinked ("lifted") and the walk restarts from the
//!   front. Reaching a return means an operation that has already answered was never placed, so
//!   the last choice is undone: its events are relinked ("unlifted") and the walk moves on to the
//!   next candidate after it. Lifting and unlifting in stack order keeps relinking O(1).
//! * **Memoisation.** Two partial orders that placed the same set of operations and left the
//!   register in the same state (its value, and whether the next operation must read it; see
//!   below) have the same futures, so each configuration is explored once (Lowe). This is what
//!   keeps the search polynomial on histories with bounded concurrency.
//! * **Timed-out operations** (the client gave up, or the run ended first) may have taken effect
//!   at any moment after their call, or never. Their return is placed after every other event, so
//!   nothing is forced to follow them, and the search succeeds as soon as every operation that
//!   *did* return has been placed; any timed-out operation left over simply never happened.
//!
//! A timed-out write left free is a candidate at every point from its call to the end of the
//! history, and the search may try every subset of the pending ones at every point: sixteen of
//! them put a 53-operation history out of reach of the default budget. The rules below cut that
//! down. Each either decides the key outright from a fact every legal order must respect, or skips
//! only orders for which an equivalent or better one is still explored, so the verdict is that of
//! a search of every order; the tests check it against a brute-force search on thousands of small
//! random histories, and give each rule a history that is not decided in budget without it.
//!
//! 1. **An answer nothing could have produced is a violation, found before any search.** A get
//!    that returned a value, or a swap whose answer needs the key to have held one, needs some
//!    other operation that writes that value to have been called before it returned: the register
//!    must hold the value at the moment the reader takes effect, and only such a write puts it
//!    there. When none was, the key is refuted and the explanation names the answer.
//! 2. **A value written by one operation only is held for one unbroken stretch, also found
//!    before any search.** The register holds it from that write to the next change and never
//!    again, and every operation of the order that needs it takes effect in that stretch; the
//!    stretches of two such values are disjoint, so one comes wholly before the other. If an
//!    operation in the stretch of one returned before an operation in the stretch of the other
//!    was called, and the other way round too, the key is refuted. This is how a stale read shows
//!    up when clients write unique values (it took the search 17 million steps in a thousand
//!    operations with hundreds of time-outs); uniqueness is established per key and history,
//!    never assumed, and a value written twice, or an absent key, is left to the search.
//! 3. **A timed-out read is dropped**: it changes nothing, and any answer it might have had is
//!    unknown. **So is a timed-out write (a put or a swap) of a value no operation mentions**
//!    (no get returned it, no swap expected or found it). Take a legal order containing it and
//!    delete the timed-out swaps that failed (they changed nothing). The operation right after
//!    the write cannot need its value, so it needs no value at all: it is a put, a delete, or
//!    nothing, and deleting the write leaves the order legal.
//! 4. **A timed-out operation is placed only right before an operation that reads the register**
//!    (a get, or a swap, which can take effect in only one state). From any legal order, delete
//!    the timed-out swaps that failed and then, while some timed-out operation is followed by a
//!    put, a delete or nothing, delete it too: what follows does not read the register, so the
//!    order stays legal, keeps real time, and still holds every operation that returned. So some
//!    legal order of this shape exists whenever any does; the search looks only for those, with
//!    the debt in the memo key. This is what pins a timed-out write whose value is read: it can
//!    only be placed right before a reader of that value, so it is tried there, before that
//!    reader returned, instead of at every point from its call on; and a timed-out write whose
//!    value is read only after a violation is never placed before it. (Pinning alone, giving
//!    such a write the return of its first reader when no other operation writes that value,
//!    leaves it free anywhere before that return: on top of this rule it adds nothing, and in
//!    place of it the 53-operation history of the tests still takes 22 million steps.)
//! 5. **A timed-out operation that would leave the register as it is is never placed**: deleting
//!    it from a legal order leaves it legal.
//! 6. **Of the unplaced timed-out puts (or deletes) of one value that may take effect now, only
//!    the earliest called is tried.** In any order that places a later-called one here, swapping
//!    the two (or, if the earlier one is never placed, substituting it) gives a legal order: their
//!    effects are the same, and neither has a return that anything must follow.
//!
//! A **step budget** per key turns a pathological search into
//! [`Undecided`](crate::linearizability::CheckResult::Undecided) instead of a test that never
//! ends.
//!
//! # Example
//!
//! ```
//! use raft_tests::linearizability::{check, CheckResult, History, Operation, Response};
//!
//! let mut history = History::new();
//! let put = history.call(1, Operation::put("x", "1"), 10);
//! history.complete(put, Response::Done, 20);
//! // Called after the put was acknowledged, yet it misses the write: a stale read.
//! let get = history.call(2, Operation::get("x"), 30);
//! history.complete(get, Response::Value(None), 40);
//!
//! assert!(matches!(check(&history), CheckResult::Violation { key, .. } if key == "x"));
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

/// The sequential specification histories are checked against: `operation` applied to a plain
/// single-copy map, and the answer it gives there (a compare-and-swap reports the value it
/// found). Tests use it as the reference a brute-force checker replays.
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

impl History {
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
}

/// Linearizability by its definition, for differential tests of [`check`] on small histories:
/// some order of the operations that respects real time, includes every completed operation
/// and any subset of the timed-out ones, and replays on [`apply_to_map`] with every completed
/// operation getting the answer it got (a successful swap may report the value it found or the
/// value it left, as [`check`] allows). Exhaustive over the whole history, with no memo and no
/// pruning: exponential, for a handful of operations only.
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
                // The checker's documented leniency: a successful swap may report the
                // value it left instead of the value it found.
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

/// Search steps [`check`] allows each key before answering [`CheckResult::Undecided`].
///
/// A history from a correct store is usually decided in a few steps per operation, and a
/// violation in it refuted in tens of thousands; the search only grows when it must backtrack
/// through many mutually concurrent operations (a thousand operations on one key, a quarter of
/// them timed out and taking effect late, take under a million steps). A step is cheap (tens of
/// nanoseconds) and at most one in twenty or so stores a memo entry in practice, so exhausting this budget costs a fraction of a second and
/// tens of megabytes (measured on a forty-operation, twenty-time-out key).
pub const DEFAULT_STEP_BUDGET: u64 = 5_000_000;

/// A request a client made to the key-value store. Every operation touches exactly one key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
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

/// What the store answered to a completed [`Operation`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
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
        /// it fail. When it succeeded, the checker accepts either `expect` (the value found) or
        /// `new` (the value left): both are implied by the success itself, so accepting either
        /// loses no power to detect an inconsistent register and spares the store a convention.
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

/// A value as the explanations print it: quoted, or `absent`.
fn show(value: &Option<String>) -> String {
    match value {
        Some(value) => format!("{value:?}"),
        None => "absent".to_owned(),
    }
}

/// Names an operation recorded in a [`History`]; printed as `#n`, the order of its call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OperationId(usize);

impl fmt::Display for OperationId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "#{}", self.0)
    }
}

/// The client-visible record of a run: every call, and how each call ended.
///
/// Times are in whatever unit the caller likes (simulated nanoseconds, milliseconds) as long as
/// one clock is used throughout. Events with equal times are ordered as they were recorded, which
/// is their true order when, as in a turmoil simulation, the recorder sees events as they happen:
/// a read called in the same instant that a write was acknowledged, but recorded after it, must
/// see the write. Record events in the order they happened.
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
    /// Only for explanations: the checker needs no per-client order beyond the times.
    client: u64,
    operation: Operation,
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

/// Where the return of an operation that never returned is placed: after every real event.
const NEVER: EventOrder = (u64::MAX, u64::MAX);

impl History {
    /// An empty history.
    pub fn new() -> History {
        History::default()
    }

    /// Records that `client` called `operation` at `time`. The returned id is passed to
    /// [`History::complete`] or [`History::time_out`] when the call ends.
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

/// The verdict on a [`History`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckResult {
    /// Some order of the operations respects real time and is a legal run of a key-value map.
    Linearizable,
    /// No such order exists for `key`. This is reported in preference to any undecided key.
    Violation {
        /// The first key, in sorted order, whose operations admit no legal order.
        key: String,
        /// Every operation on the key, with times and answers, and the longest legal order the
        /// search found before it got stuck.
        explanation: String,
    },
    /// The search for `key` ran out of its step budget before reaching a verdict; no other key
    /// had a violation.
    Undecided {
        /// The first key, in sorted order, whose search exceeded the budget.
        key: String,
        /// Starts with "undecided: search budget exceeded", then says how large the key's
        /// history was.
        explanation: String,
    },
}

impl CheckResult {
    /// Whether the history was shown to be linearizable.
    pub fn is_linearizable(&self) -> bool {
        matches!(self, CheckResult::Linearizable)
    }
}

impl fmt::Display for CheckResult {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckResult::Linearizable => formatter.write_str("linearizable"),
            CheckResult::Violation { explanation, .. }
            | CheckResult::Undecided { explanation, .. } => formatter.write_str(explanation),
        }
    }
}

/// Checks `history` with [`DEFAULT_STEP_BUDGET`] steps per key. See [`check_with_budget`].
pub fn check(history: &History) -> CheckResult {
    check_with_budget(history, DEFAULT_STEP_BUDGET)
}

/// Decides whether `history` is linearizable, allowing each key's search `step_budget` steps.
///
/// Keys are checked independently, in sorted order. The first violation found is returned; if
/// there is none but some key ran out of budget, the first such key is reported as undecided.
/// The verdict is deterministic: it does not depend on hash-table iteration order.
pub fn check_with_budget(history: &History, step_budget: u64) -> CheckResult {
    let mut records_by_key: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (index, record) in history.records.iter().enumerate() {
        if matches!(record.ending, Ending::Failed) {
            continue;
        }
        records_by_key
            .entry(record.operation.key())
            .or_default()
            .push(index);
    }
    let mut first_undecided = None;
    for (key, records) in records_by_key {
        match check_key(history, key, &records, step_budget) {
            KeyVerdict::Linearizable => {}
            KeyVerdict::Violation(explanation) => {
                return CheckResult::Violation {
                    key: key.to_owned(),
                    explanation,
                };
            }
            KeyVerdict::Undecided(explanation) => {
                // Keep going: a later key may hold a definite violation, which is more useful.
                first_undecided.get_or_insert(CheckResult::Undecided {
                    key: key.to_owned(),
                    explanation,
                });
            }
        }
    }
    first_undecided.unwrap_or(CheckResult::Linearizable)
}

/// A value as the search sees it: a small number standing for a string, so the memo table hashes
/// machine words rather than strings.
type Value = u32;

/// The register of one key: `None` while the key is absent.
type State = Option<Value>;

/// What an operation does to its key's register, and what its answer demands of it.
#[derive(Clone, Copy, Debug)]
enum Effect {
    /// A put (`Some`) or delete (`None`). The acknowledgement carries no information, so a
    /// completed and a timed-out write have the same effect.
    Write(State),
    /// A completed read: legal only while the register holds exactly this.
    Read(State),
    /// A compare-and-swap; `answer` is `(swapped, current)`, or `None` if the client timed out.
    CompareAndSwap {
        expect: State,
        new: Value,
        answer: Option<(bool, State)>,
    },
}

impl Effect {
    /// The register after this operation takes effect on `state`, or `None` if its answer rules
    /// out taking effect on that state.
    fn apply(self, state: State) -> Option<State> {
        match self {
            Effect::Write(after) => Some(after),
            Effect::Read(seen) => (seen == state).then_some(state),
            // A timed-out swap that failed changed nothing, which is the same as never happening,
            // so only its successful form needs exploring.
            Effect::CompareAndSwap {
                expect,
                new,
                answer: None,
            } => (state == expect).then_some(Some(new)),
            Effect::CompareAndSwap {
                expect,
                new,
                answer: Some((true, current)),
            } => (state == expect && (current == expect || current == Some(new)))
                .then_some(Some(new)),
            Effect::CompareAndSwap {
                expect,
                answer: Some((false, current)),
                ..
            } => (state != expect && current == state).then_some(state),
        }
    }

    /// The one register state in which this operation can take effect, or `None` for a put or
    /// delete, which can take effect in any. (A swap only ever takes effect in its successful form
    /// when it timed out; see [`Effect::apply`].)
    fn needs(self) -> Option<State> {
        match self {
            Effect::Write(_) => None,
            Effect::Read(seen) => Some(seen),
            Effect::CompareAndSwap {
                expect,
                answer: None | Some((true, _)),
                ..
            } => Some(expect),
            Effect::CompareAndSwap {
                answer: Some((false, current)),
                ..
            } => Some(current),
        }
    }

    /// The value this operation leaves in the register whenever it takes effect and changes it:
    /// a put's value, or a swap's new value unless the swap is known to have failed.
    fn writes(self) -> Option<Value> {
        match self {
            Effect::Write(after) => after,
            Effect::CompareAndSwap {
                new,
                answer: None | Some((true, _)),
                ..
            } => Some(new),
            Effect::Read(_)
            | Effect::CompareAndSwap {
                answer: Some((false, _)),
                ..
            } => None,
        }
    }
}

/// One operation of the key being searched.
#[derive(Clone, Copy, Debug)]
struct KeyOperation {
    /// Index of the operation in the history, for explanations.
    record: usize,
    effect: Effect,
    call: EventOrder,
    /// `None` if the operation never returned: it must not block any other operation.
    returned: Option<EventOrder>,
}

enum KeyVerdict {
    Linearizable,
    Violation(String),
    Undecided(String),
}

/// Gives each distinct string of one key a [`Value`] number, and can name it again.
#[derive(Default)]
struct Interner<'history> {
    numbers: HashMap<&'history str, Value>,
    names: Vec<&'history str>,
}

impl<'history> Interner<'history> {
    fn value(&mut self, name: &'history str) -> Value {
        if let Some(&number) = self.numbers.get(name) {
            return number;
        }
        let number = Value::try_from(self.names.len())
            .unwrap_or_else(|_| panic!("more than {} distinct values on one key", Value::MAX));
        self.numbers.insert(name, number);
        self.names.push(name);
        number
    }

    fn state(&mut self, name: &'history Option<String>) -> State {
        name.as_deref().map(|name| self.value(name))
    }

    fn show(&self, state: State) -> String {
        match state {
            Some(number) => format!("{:?}", self.names[number as usize]),
            None => "absent".to_owned(),
        }
    }
}

fn check_key(history: &History, key: &str, records: &[usize], step_budget: u64) -> KeyVerdict {
    let mut interner = Interner::default();
    let mut operations = Vec::with_capacity(records.len());
    for &index in records {
        let record = &history.records[index];
        let (answer, returned) = match &record.ending {
            Ending::Completed { response, at } => (Some(response), Some(*at)),
            Ending::Pending | Ending::TimedOut | Ending::Failed => (None, None),
        };
        let effect = match (&record.operation, answer) {
            // A read that may never have happened neither changes nor reveals anything.
            (Operation::Get { .. }, None) => continue,
            (Operation::Get { .. }, Some(Response::Value(seen))) => {
                Effect::Read(interner.state(seen))
            }
            (Operation::Put { value, .. }, _) => Effect::Write(Some(interner.value(value))),
            (Operation::Delete { .. }, _) => Effect::Write(None),
            (Operation::Cas { expect, new, .. }, answer) => {
                let answer = match answer {
                    Some(Response::Cas { swapped, current }) => {
                        Some((*swapped, interner.state(current)))
                    }
                    None => None,
                    Some(other) => {
                        unreachable!("History::complete accepted {other:?} as the answer to a cas")
                    }
                };
                Effect::CompareAndSwap {
                    expect: interner.state(expect),
                    new: interner.value(new),
                    answer,
                }
            }
            (operation, Some(response)) => {
                unreachable!("History::complete accepted {response:?} as the answer to {operation}")
            }
        };
        operations.push(KeyOperation {
            record: index,
            effect,
            call: record.call,
            returned,
        });
    }
    let operations = without_unobserved_timed_out_writes(operations);

    // Rules 1 and 2 of the module documentation: violations found without a search.
    let mut refutation = unwritten_values(&operations, key, &interner);
    if refutation.is_empty() {
        refutation = values_held_twice(&operations, key, &interner);
    }
    if !refutation.is_empty() {
        let mut explanation = format!(
            "key {key:?}: no order of its operations both respects real time and is a legal run \
             of a register, as the answers below show without a search.\n"
        );
        explanation.push_str(&describe_operations(history, key, records, &operations));
        explanation.push_str(&refutation);
        return KeyVerdict::Violation(explanation);
    }

    match search(&operations, step_budget) {
        SearchOutcome::Linearizable => KeyVerdict::Linearizable,
        SearchOutcome::Violation {
            longest,
            state_after_longest,
            stuck,
        } => {
            let mut explanation = format!(
                "key {key:?}: no order of its operations both respects real time and is a legal \
                 run of a register.\n"
            );
            explanation.push_str(&describe_operations(history, key, records, &operations));
            let placed: Vec<String> = longest
                .iter()
                .map(|&operation| OperationId(operations[operation].record).to_string())
                .collect();
            if placed.is_empty() {
                explanation.push_str("longest legal order found: none; the key starts absent\n");
            } else {
                explanation.push_str(&format!(
                    "longest legal order found: {} (after which {key:?} is {})\n",
                    placed.join(", "),
                    interner.show(state_after_longest),
                ));
            }
            if let Some(stuck) = stuck {
                let record = &history.records[operations[stuck].record];
                let answer = match &record.ending {
                    Ending::Completed { response, at } => {
                        format!(" -> {response}, returned at {}", at.0)
                    }
                    Ending::Pending | Ending::TimedOut | Ending::Failed => String::new(),
                };
                explanation.push_str(&format!(
                    "it cannot be extended to place {} {}{answer}\n",
                    OperationId(operations[stuck].record),
                    record.operation,
                ));
            }
            KeyVerdict::Violation(explanation)
        }
        SearchOutcome::BudgetExceeded => {
            let timed_out = operations
                .iter()
                .filter(|operation| operation.returned.is_none())
                .count();
            KeyVerdict::Undecided(format!(
                "undecided: search budget exceeded: {step_budget} steps were not enough to decide \
                 key {key:?} ({} operations searched, {timed_out} of them timed out). Raise the \
                 budget with check_with_budget, or record fewer concurrent or timed-out \
                 operations per key.",
                operations.len(),
            ))
        }
    }
}

/// Drops timed-out writes of values that no operation ever mentions (rule 3 of the module
/// documentation).
///
/// Such a write can always be taken as never having happened. In a legal order without the
/// timed-out swaps that failed (they changed nothing), the operation right after the write finds
/// the register holding its value, so it cannot be one whose answer needs a value (a get, a
/// completed swap, a timed-out swap that succeeded): that would mention the value. It is a put, a
/// delete or nothing, and removing the write leaves the order legal. Every timed-out write
/// otherwise stays a candidate until the end of the history; a store that writes unique values
/// makes almost all of the never-read ones prunable.
fn without_unobserved_timed_out_writes(operations: Vec<KeyOperation>) -> Vec<KeyOperation> {
    let mut mentioned = HashSet::new();
    for operation in &operations {
        match operation.effect {
            Effect::Read(seen) => mentioned.extend(seen),
            Effect::CompareAndSwap { expect, answer, .. } => {
                mentioned.extend(expect);
                if let Some((_, current)) = answer {
                    mentioned.extend(current);
                }
            }
            Effect::Write(_) => {}
        }
    }
    operations
        .into_iter()
        .filter(|operation| {
            operation.returned.is_some()
                || match operation.effect {
                    Effect::Write(Some(value)) | Effect::CompareAndSwap { new: value, .. } => {
                        mentioned.contains(&value)
                    }
                    Effect::Write(None) | Effect::Read(_) => true,
                }
        })
        .collect()
}

/// Names the operations whose answers need a value that no operation called before they returned
/// could have written (rule 1 of the module documentation): each is a violation on its own,
/// whatever else the history holds, so a non-empty answer refutes the key without a search.
fn unwritten_values(operations: &[KeyOperation], key: &str, interner: &Interner<'_>) -> String {
    let writers = writers_by_value(operations);
    let mut text = String::new();
    for (index, operation) in operations.iter().enumerate() {
        let (Some(returned), Some(Some(needed))) = (operation.returned, operation.effect.needs())
        else {
            continue;
        };
        let written = writers.get(&needed).is_some_and(|writers| {
            writers
                .iter()
                .take_while(|&&writer| operations[writer].call < returned)
                .any(|&writer| writer != index)
        });
        if !written {
            text.push_str(&format!(
                "{} needs {key:?} to hold {}, yet no operation on it called before {} returned \
                 writes that value\n",
                OperationId(operation.record),
                interner.show(Some(needed)),
                OperationId(operation.record),
            ));
        }
    }
    text
}

/// The operations that may leave each value in the register, by call: puts, and swaps not known
/// to have failed.
fn writers_by_value(operations: &[KeyOperation]) -> BTreeMap<Value, Vec<usize>> {
    let mut writers: BTreeMap<Value, Vec<usize>> = BTreeMap::new();
    for (index, operation) in operations.iter().enumerate() {
        if let Some(value) = operation.effect.writes() {
            writers.entry(value).or_default().push(index);
        }
    }
    for indices in writers.values_mut() {
        indices.sort_by_key(|&index| operations[index].call);
    }
    writers
}

/// Where one value written by a single operation is held: the register holds it for one
/// unbroken stretch of any legal order, and these operations take effect inside it.
struct Stretch {
    value: Value,
    /// The earliest return of an operation inside the stretch, and that operation.
    first_return: (EventOrder, usize),
    /// The latest call of an operation inside the stretch, and that operation.
    last_call: (EventOrder, usize),
}

/// Names two values, each written by one operation only, whose stretches real time puts each
/// before the other (rule 2 of the module documentation); empty if there are none.
///
/// When one operation W alone writes V, the register holds V in a legal order from W to the
/// next operation that changes it, and never again: one unbroken stretch, disjoint from the
/// stretch of any other such value. W takes effect in it, and so does every operation in the
/// order that needs V (a completed get of V, a completed swap whose answer needs V, and a
/// timed-out swap that alone writes a value some completed operation needs, since it must have
/// taken effect and succeeded). Of two disjoint stretches one comes wholly first, so if an
/// operation in V's stretch returned before one in U's was called, V's stretch comes first; both
/// ways round is impossible. Such a pair exists whenever any cycle of these constraints does:
/// the value of the cycle with the earliest first return and the value before it in the cycle
/// form one.
fn values_held_twice(operations: &[KeyOperation], key: &str, interner: &Interner<'_>) -> String {
    let writers = writers_by_value(operations);
    let only_writer = |value: Value| match writers.get(&value).map(Vec::as_slice) {
        Some(&[writer]) => Some(writer),
        _ => None,
    };
    let completed = |index: usize| operations[index].returned.is_some();
    let needed = |index: usize| match operations[index].effect.needs() {
        Some(Some(value)) => Some(value),
        Some(None) | None => None,
    };
    // The operations in every legal order: the completed ones, and the only writer of a value a
    // completed one needs.
    let mut certain: Vec<bool> = (0..operations.len()).map(completed).collect();
    for index in 0..operations.len() {
        if let Some(writer) = needed(index)
            .filter(|_| completed(index))
            .and_then(only_writer)
        {
            certain[writer] = true;
        }
    }
    let mut members: BTreeMap<Value, Vec<usize>> = BTreeMap::new();
    for index in (0..operations.len()).filter(|&index| certain[index]) {
        let read = needed(index).filter(|&value| only_writer(value).is_some());
        let written = operations[index]
            .effect
            .writes()
            .filter(|&value| only_writer(value) == Some(index));
        for value in read.into_iter().chain(written) {
            members.entry(value).or_default().push(index);
        }
    }
    let mut stretches: Vec<Stretch> = members
        .into_iter()
        .filter_map(|(value, members)| {
            let first_return = members
                .iter()
                .filter_map(|&index| Some((operations[index].returned?, index)))
                .min()?;
            let last_call = members
                .iter()
                .map(|&index| (operations[index].call, index))
                .max()?;
            Some(Stretch {
                value,
                first_return,
                last_call,
            })
        })
        .collect();

    // Some U other than V with U's first return before V's last call, and V's first return
    // before U's last call. Sorted by first return, the values that may play U for a given V are
    // a prefix; of each prefix, keep the two with the latest last calls (one may be V itself).
    stretches.sort_by_key(|stretch| stretch.first_return);
    let mut latest_two: Vec<[Option<usize>; 2]> = Vec::with_capacity(stretches.len());
    let mut top: [Option<usize>; 2] = [None, None];
    for (position, stretch) in stretches.iter().enumerate() {
        let later = |other: Option<usize>| {
            other.is_none_or(|other| stretch.last_call > stretches[other].last_call)
        };
        if later(top[0]) {
            top = [Some(position), top[0]];
        } else if later(top[1]) {
            top[1] = Some(position);
        }
        latest_two.push(top);
    }
    for (position, v) in stretches.iter().enumerate() {
        let prefix = stretches.partition_point(|u| u.first_return.0 < v.last_call.0);
        let Some(candidates) = prefix.checked_sub(1).map(|last| latest_two[last]) else {
            continue;
        };
        let Some(u) = candidates
            .into_iter()
            .flatten()
            .find(|&other| other != position)
            .map(|other| &stretches[other])
        else {
            continue;
        };
        if v.first_return.0 < u.last_call.0 {
            let name = |index: usize| OperationId(operations[index].record);
            let (u_value, v_value) = (interner.show(Some(u.value)), interner.show(Some(v.value)));
            return format!(
                "{u_value} and {v_value} are each written by one operation only, so {key:?} held \
                 each for one unbroken stretch, one wholly before the other; yet {} (in the \
                 stretch of {u_value}) returned before {} (in that of {v_value}) was called, and \
                 {} (in that of {v_value}) returned before {} (in that of {u_value}) was called\n",
                name(u.first_return.1),
                name(v.last_call.1),
                name(v.first_return.1),
                name(u.last_call.1),
            );
        }
    }
    String::new()
}

/// Lists every operation on `key` by call time, marking those the search left out.
fn describe_operations(
    history: &History,
    key: &str,
    records: &[usize],
    searched: &[KeyOperation],
) -> String {
    let searched: HashSet<usize> = searched.iter().map(|operation| operation.record).collect();
    let mut sorted = records.to_vec();
    sorted.sort_by_key(|&index| history.records[index].call);
    let mut text = format!("operations on {key:?}, by call time:\n");
    for index in sorted {
        let record = &history.records[index];
        let ending = match &record.ending {
            Ending::Completed { response, at } => format!("returned at {} -> {response}", at.0),
            Ending::TimedOut => "timed out".to_owned(),
            Ending::Pending => "never returned".to_owned(),
            Ending::Failed => "failed without effect".to_owned(),
        };
        let ignored = if searched.contains(&index) {
            ""
        } else if matches!(record.operation, Operation::Get { .. }) {
            " (ignored: a read that may not have happened)"
        } else {
            " (ignored: its value was never observed, so it can be taken as never applied)"
        };
        text.push_str(&format!(
            "  {} client {}: {} called at {}, {ending}{ignored}\n",
            OperationId(index),
            record.client,
            record.operation,
            record.call.0,
        ));
    }
    text
}

enum SearchOutcome {
    Linearizable,
    Violation {
        /// The longest legal order the search built (indices into the key's operations).
        longest: Vec<usize>,
        /// The register after `longest`.
        state_after_longest: State,
        /// The returned operation that `longest` could not be extended to place.
        stuck: Option<usize>,
    },
    BudgetExceeded,
}

/// The list node before the first event.
const HEAD: usize = 0;

/// Wing and Gong's search with Lowe's memoisation over one key's operations, placing an operation
/// whose client timed out only where the next operation placed must read what it leaves (see the
/// module documentation for why no linearization is lost).
fn search(operations: &[KeyOperation], step_budget: u64) -> SearchOutcome {
    let count = operations.len();

    // Events in real-time order. Only operations that never returned share an order (NEVER);
    // they are all last, and their relative order does not matter.
    let mut events: Vec<(EventOrder, usize, bool)> = Vec::with_capacity(2 * count);
    for (operation, record) in operations.iter().enumerate() {
        events.push((record.call, operation, true));
        events.push((record.returned.unwrap_or(NEVER), operation, false));
    }
    events.sort_unstable();

    // A doubly linked list over nodes: HEAD, one node per event, then a tail node that is never
    // unlinked. Unlinking keeps a node's own links, so relinking in reverse order restores it.
    let tail = 2 * count + 1;
    let mut next: Vec<usize> = (1..=tail).chain([tail]).collect();
    let mut previous: Vec<usize> = [HEAD].into_iter().chain(0..tail).collect();
    let mut node_operation = vec![usize::MAX; tail + 1];
    let mut node_is_call = vec![false; tail + 1];
    let mut return_node = vec![tail; count];
    for (position, &(_, operation, is_call)) in events.iter().enumerate() {
        let node = position + 1;
        node_operation[node] = operation;
        node_is_call[node] = is_call;
        if !is_call {
            return_node[operation] = node;
        }
    }
    let unlink = |next: &mut Vec<usize>, previous: &mut Vec<usize>, node: usize| {
        next[previous[node]] = next[node];
        previous[next[node]] = previous[node];
    };
    let relink = |next: &mut Vec<usize>, previous: &mut Vec<usize>, node: usize| {
        next[previous[node]] = node;
        previous[next[node]] = node;
    };

    // The timed-out puts and deletes of each state, by call: of those still unplaced, only the
    // earliest called is ever tried, as the others would lead to the same futures.
    let mut blind_timed_out: HashMap<State, Vec<usize>> = HashMap::new();
    for (index, operation) in operations.iter().enumerate() {
        if let (None, Effect::Write(after)) = (operation.returned, operation.effect) {
            blind_timed_out.entry(after).or_default().push(index);
        }
    }
    for writes in blind_timed_out.values_mut() {
        writes.sort_unstable_by_key(|&write| operations[write].call);
    }

    // The memo key: one bit per placed operation, then one word for the register (0 for absent,
    // value + 1 otherwise) and whether the next operation must read it (the low bit). Keeping them
    // in one slice lets the table be probed without allocating.
    let words = count.div_ceil(64);
    let mut configuration = vec![0u64; words + 1];
    let encode = |state: State, owed: bool| {
        state.map_or(0, |value| u64::from(value) + 1) << 1 | u64::from(owed)
    };
    let is_placed = |configuration: &[u64], operation: usize| {
        configuration[operation / 64] >> (operation % 64) & 1 == 1
    };
    let mut seen: HashSet<Box<[u64]>> = HashSet::new();

    let must_place = operations
        .iter()
        .filter(|operation| operation.returned.is_some())
        .count();
    let mut placed_returned = 0;
    let mut state: State = None;
    // Whether the last operation placed timed out, so that the next one must read the register.
    let mut owed = false;
    // The call node of each placed operation, with the register and debt before it: the choices
    // to undo.
    let mut placed: Vec<(usize, State, bool)> = Vec::new();
    // For the explanation: the deepest point at which the search had to back up.
    let mut deepest: Option<(Vec<usize>, State, Option<usize>)> = None;

    let mut node = next[HEAD];
    let mut steps = 0u64;
    loop {
        // Whatever timed-out operations remain unplaced are taken never to have happened.
        if placed_returned == must_place {
            return SearchOutcome::Linearizable;
        }
        steps += 1;
        if steps > step_budget {
            return SearchOutcome::BudgetExceeded;
        }

        if node_is_call[node] {
            let operation = node_operation[node];
            let effect = operations[operation].effect;
            let timed_out = operations[operation].returned.is_none();
            let tried = effect.apply(state).filter(|&after| {
                // Right after a timed-out operation, only one that reads the register.
                (!owed || effect.needs().is_some())
                    // A timed-out operation that changes nothing is as well left out, and of
                    // equivalent timed-out writes only the earliest called is tried.
                    && !(timed_out
                        && (after == state
                            || matches!(effect, Effect::Write(_))
                                && blind_timed_out[&after]
                                    .iter()
                                    .find(|&&other| !is_placed(&configuration, other))
                                    != Some(&operation)))
            });
            if let Some(after) = tried {
                configuration[operation / 64] |= 1 << (operation % 64);
                configuration[words] = encode(after, timed_out);
                if !seen.contains(&configuration[..]) {
                    seen.insert(configuration.clone().into_boxed_slice());
                    placed.push((node, state, owed));
                    state = after;
                    owed = timed_out;
                    if operations[operation].returned.is_some() {
                        placed_returned += 1;
                    }
                    unlink(&mut next, &mut previous, node);
                    unlink(&mut next, &mut previous, return_node[operation]);
                    node = next[HEAD];
                    continue;
                }
                configuration[operation / 64] &= !(1 << (operation % 64));
            }
            node = next[node];
        } else {
            // A return (or, defensively, the tail): this operation answered its client, yet no
            // order tried so far places it. Undo the latest choice and try the next candidate.
            if deepest
                .as_ref()
                .is_none_or(|(longest, _, _)| placed.len() > longest.len())
            {
                let longest = placed.iter().map(|&(call, _, _)| node_operation[call]);
                let stuck = (node != tail).then(|| node_operation[node]);
                deepest = Some((longest.collect(), state, stuck));
            }
            let Some((call, before, owed_before)) = placed.pop() else {
                let (longest, state_after_longest, stuck) = deepest.unwrap_or_default();
                return SearchOutcome::Violation {
                    longest,
                    state_after_longest,
                    stuck,
                };
            };
            let operation = node_operation[call];
            configuration[operation / 64] &= !(1 << (operation % 64));
            state = before;
            owed = owed_before;
            if operations[operation].returned.is_some() {
                placed_returned -= 1;
            }
            relink(&mut next, &mut previous, return_node[operation]);
            relink(&mut next, &mut previous, call);
            node = next[call];
        }
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

    /// Asserts a violation on `key` and returns its explanation.
    #[track_caller]
    fn assert_violation(history: &History, expected_key: &str) -> String {
        match check(history) {
            CheckResult::Violation { key, explanation } if key == expected_key => explanation,
            other => panic!("expected a violation on {expected_key:?}, got {other:?}"),
        }
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
            // The put and the get overlap; which one is called first must not matter.
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
        let explanation = assert_violation(&history, "x");
        // The explanation lists every operation of the key with its times and answer, and how
        // far the search got.
        assert!(explanation.contains("#0 client 1: put(\"x\", \"1\") called at 0"));
        assert!(
            explanation.contains("#1 client 2: get(\"x\") called at 11, returned at 12 -> absent")
        );
        assert!(
            explanation.contains("longest legal order found: #0 (after which \"x\" is \"1\")"),
            "{explanation}"
        );
        assert!(
            explanation
                .contains("cannot be extended to place #1 get(\"x\") -> absent, returned at 12"),
            "{explanation}"
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
        let explanation = assert_violation(&history, "x");
        // Each value is written once, so this is refuted without a search, by real time alone.
        assert!(
            explanation.contains(
                "yet #1 (in the stretch of \"1\") returned before #2 (in that of \"0\") was \
                 called, and #0 (in that of \"0\") returned before #1 (in that of \"1\") was called"
            ),
            "{explanation}"
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

    // ---- timed-out operations ------------------------------------------------------------------

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
        assert!(matches!(check(&history), CheckResult::Violation { .. }));
        let mut history = History::new();
        let put = history.call(1, Operation::put("x", "1"), 10);
        history.fail(put);
        let get = history.call(2, Operation::get("x"), 30);
        history.complete(get, Response::Value(None), 40);
        assert!(check(&history).is_linearizable());
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
    fn timed_out_write_of_an_unobserved_value_is_listed_as_ignored() {
        let mut history = History::new();
        timed_out(&mut history, 1, Operation::put("x", "never read"), 0);
        completed(&mut history, 2, Operation::get("x"), 1, 2, value("ghost"));
        let explanation = assert_violation(&history, "x");
        assert!(
            explanation.contains("(ignored: its value was never observed"),
            "{explanation}"
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
        let explanation = assert_violation(&history, "b");
        assert!(explanation.starts_with("key \"b\""), "{explanation}");
        assert!(
            !explanation.contains("\"a\""),
            "other keys leak in:\n{explanation}"
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

    #[test]
    fn first_violating_key_in_sorted_order_is_reported() {
        let mut history = History::new();
        completed(&mut history, 1, Operation::get("z"), 0, 1, value("nope"));
        completed(&mut history, 1, Operation::get("m"), 2, 3, value("nope"));
        assert_violation(&history, "m");
    }

    // ---- budget --------------------------------------------------------------------------------

    /// Twenty acknowledged puts, all concurrent, ten of "a" and ten of "b"; after them, reads of
    /// "a", "b" and "a" again, which would need a put after the last of them. The values repeat,
    /// so only the search can refute it, and it visits every subset of the puts to do so.
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
    fn exhausted_budget_gives_undecided_not_a_hang() {
        let history = pathological_history();
        match check_with_budget(&history, 100_000) {
            CheckResult::Undecided { key, explanation } => {
                assert_eq!(key, "x");
                assert!(
                    explanation.starts_with("undecided: search budget exceeded"),
                    "{explanation}"
                );
            }
            other => panic!("expected undecided, got {other:?}"),
        }
    }

    #[test]
    fn violation_on_another_key_wins_over_undecided() {
        let mut history = pathological_history();
        completed(
            &mut history,
            7,
            Operation::get("y"),
            0,
            1,
            value("never written"),
        );
        let verdict = check_with_budget(&history, 100_000);
        assert!(
            matches!(&verdict, CheckResult::Violation { key, .. } if key == "y"),
            "{verdict:?}"
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
                CheckResult::Violation { key: reported, .. } => assert_eq!(reported, key),
                other => panic!("seed {seed}: mutated read #{read} accepted: {other:?}"),
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
                !matches!(verdict, CheckResult::Undecided { .. }),
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
            CheckResult::Violation { key: reported, .. } => assert_eq!(reported, key),
            other => panic!("expected a violation on {key}, got {other:?}"),
        }
    }
}
