//! A linearizability checker for histories of any [`Model`] (see [`check`]).

use crate::history::{History, Operation, Recorded};
use crate::model::Model;
use crate::register::{self, Access, Refuted};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;

/// Steps (operations tried) the search may take per part of a history before it gives up.
pub const DEFAULT_STEP_BUDGET: u64 = 2_000_000;

/// Steps the reduction of a counterexample may take in all, and in one search: a search that
/// runs out counts as "still has a legal order", so the reduction stays short and keeps the
/// operation it was trying to relax.
const REDUCE_STEPS: u64 = 3_000_000;
const REDUCE_SEARCH_STEPS: u64 = 100_000;

/// What [`check`] decided.
#[derive(Clone, Debug)]
pub enum Verdict<Op, Ret> {
    /// Some order of the operations respects real time and the model.
    Linearizable,
    /// No order does; a short witness.
    NotLinearizable(Counterexample<Op, Ret>),
    /// The search ran out of its step budget on a part of the history (and found no violation
    /// in the others).
    Undecided {
        /// The part, as [`Model::partition`] names it (`None`: the whole history).
        partition: Option<u64>,
        /// Its operations searched (refused ones left out, and those the register rules of
        /// [`Model::register`] leave out).
        operations: usize,
        /// The steps taken.
        steps: u64,
    },
}

impl<Op, Ret> Verdict<Op, Ret> {
    /// Whether the history was found linearizable.
    pub fn is_linearizable(&self) -> bool {
        matches!(self, Verdict::Linearizable)
    }
}

/// A witness that a history is not linearizable (see the module documentation).
#[derive(Clone, Debug)]
pub struct Counterexample<Op, Ret> {
    /// The part of the history that fails (`None`: the whole history).
    pub partition: Option<u64>,
    /// The operations of that part (refused ones left out).
    pub partition_operations: usize,
    /// The operations of its shortest failing prefix (all of the part's when a register rule
    /// refuted it: no prefix is sought then).
    pub prefix_operations: usize,
    /// What refuted the part: the search, or a register rule of [`Model::register`].
    pub refutation: Refutation,
    /// The operations whose answers cannot all be given, in any order of the prefix consistent
    /// with real time (every other operation of the prefix taking effect within its interval,
    /// answering anything). Ignoring any one of these answers too (when `minimal`) would allow
    /// an order. In invocation order.
    pub core: Vec<Operation<Op, Ret>>,
    /// The operations of the prefix that ran while the core did, or returned just before the
    /// first of it: where to look for what the core's answers missed. In invocation order.
    pub context: Vec<Operation<Op, Ret>>,
    /// False when the reduction ran out of budget: the core may then hold operations whose
    /// answers are not needed.
    pub minimal: bool,
}

/// What refuted a part of a history ([`Counterexample::refutation`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refutation {
    /// The search found no legal order, and the reduction cut the part down to the core.
    Search,
    /// Before any search: an answer in the core needs a value that no other operation invoked
    /// before it returned leaves (rule 1 of [`Model::register`]). Says which, and which value.
    UnwrittenValue(String),
    /// Before any search: two values, each left by one operation only, were each held before
    /// the other (rule 2 of [`Model::register`]); the core holds the operations that show it.
    /// Says which values, and how real time orders those operations.
    ValueHeldTwice(String),
}

impl<Op: fmt::Debug, Ret: fmt::Debug> fmt::Display for Counterexample<Op, Ret> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let part = match self.partition {
            Some(part) => format!("partition {part}"),
            None => "the history".to_string(),
        };
        if let Refutation::UnwrittenValue(why) | Refutation::ValueHeldTwice(why) = &self.refutation
        {
            writeln!(
                f,
                "{part} ({} operations) is not linearizable, as its answers show without a \
                 search: {why}. The operations named:",
                self.partition_operations,
            )?;
            for operation in &self.core {
                writeln!(f, "  {operation}")?;
            }
            if !self.context.is_empty() {
                writeln!(f, "the operations that leave the values named:")?;
                for operation in &self.context {
                    writeln!(f, "  {operation}")?;
                }
            }
            return Ok(());
        }
        writeln!(
            f,
            "{part} ({} operations) is not linearizable; its first {} operations already fail: \
             in no order of them consistent with real time do these {} get the answers they \
             got{}:",
            self.partition_operations,
            self.prefix_operations,
            self.core.len(),
            if self.minimal {
                ""
            } else {
                " (reduction stopped at its budget)"
            }
        )?;
        for operation in &self.core {
            writeln!(f, "  {operation}")?;
        }
        if !self.context.is_empty() {
            writeln!(f, "context (what ran during them, or just before):")?;
            for operation in &self.context {
                writeln!(f, "  {operation}")?;
            }
        }
        Ok(())
    }
}

impl<Op: fmt::Debug, Ret: fmt::Debug> fmt::Display for Verdict<Op, Ret> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Linearizable => write!(f, "linearizable"),
            Verdict::NotLinearizable(counterexample) => write!(f, "{counterexample}"),
            Verdict::Undecided {
                partition,
                operations,
                steps,
            } => write!(
                f,
                "undecided: the search gave up after {steps} steps on {} ({operations} \
                 operations); raise the step budget, or split the state with Model::partition",
                match partition {
                    Some(part) => format!("partition {part}"),
                    None => "the history".to_string(),
                }
            ),
        }
    }
}

/// Decides whether some total order of a history's operations respects real time
/// (an operation that returned before another was invoked comes first) and is a legal run of
/// the model (every answer is the model's). That is linearizability (Herlihy and Wing, 1990).
///
/// # How the decision is made
///
/// * **One part of the state at a time** when the model says which part each operation touches
///   ([`Model::partition`]): a history is linearizable exactly when each part's is (locality,
///   Herlihy and Wing; P-compositionality, Horn and Kroening 2015).
/// * **Wing and Gong's search** (1993) in Lowe's form (2017): depth first, an operation may be
///   placed next when it was invoked before the earliest return among the completed operations
///   not placed yet; a completed operation must answer what the model answers. The search succeeds once every
///   completed operation is placed.
/// * **Memoisation** of (operations placed, model state): two partial orders that reach the same
///   configuration have the same futures, so each is explored once.
/// * **Operations with an unknown outcome** (a timeout, a node that stopped under the request)
///   may take effect at any point after their invocation, or never: they are never required,
///   and their answer is ignored. Two sound prunings keep them cheap. A legal order stays legal
///   when an unknown operation that changes nothing is removed, or one whose effect the next
///   operation cannot tell apart (same state after it, same answer), or one at the very end;
///   so if any legal order exists, one exists without such placements, and the search tries
///   only those: an unknown operation is placed only if it changes the state, and then the
///   next operation placed must tell its effect apart.
/// * **The register rules**, when the model describes every operation of a part as an access
///   to one register ([`Model::register`]): before the search, operations of unknown outcome
///   that never change the register or leave a value nothing needs are left out, and the part
///   is refuted outright when an answer needs a value nothing invoked before it returned
///   leaves ([`Refutation::UnwrittenValue`]), or when two values, each left by one operation
///   only, must each have been held before the other ([`Refutation::ValueHeldTwice`]). The
///   verdict stays that of the search; such a refutation names the operations it rests on.
/// * **Interchangeable operations of unknown outcome**: when [`Model::register`] describes two
///   of them alike, only the earlier invoked of those not placed yet is tried (it can take
///   effect wherever the later one can), so retries of one timed-out command cost no more than
///   one.
/// * **A step budget** per part turns a pathological search into [`Verdict::Undecided`]
///   rather than a test that never ends.
///
/// # The counterexample
///
/// A history that is not linearizable is reduced to a short witness ([`Counterexample`]):
/// 1. the first part (by [`Model::partition`]) that fails;
/// 2. its shortest failing prefix: the operations invoked before some point, where those that
///    had not returned by then count as unknown (if this prefix has no legal order, neither
///    does the history: any legal order of the history, cut after the last operation that
///    returned before the point, is one of the prefix);
/// 3. then the answers of its completed operations are *ignored*, oldest first and in halving
///    chunks (delta debugging), as long as the prefix still has no legal order. Such an
///    operation must still take effect within its interval (it did), so every legal order of
///    the history is still allowed, and what is left proves the history wrong as much as the
///    prefix does. The operations whose answers are kept, the *core*, each matter: no order of
///    the prefix gives them their answers. With them, the report shows their *context*: the
///    operations of the prefix that ran during them or returned just before.
///
/// ```
/// use raft_sim::{History, Model, Verdict, check};
///
/// /// A register of one number.
/// struct Register;
/// impl Model for Register {
///     type Op = Option<u64>; // write this, or read (None)
///     type Ret = u64; // the value after the operation
///     type State = u64;
///     fn init(&self) -> u64 {
///         0
///     }
///     fn step(&self, state: &u64, op: &Option<u64>) -> (u64, u64) {
///         let next = op.unwrap_or(*state);
///         (next, next)
///     }
/// }
///
/// let mut history = History::new();
/// let write = history.invoke("a", Some(1), 0);
/// history.ok(write, 1, 10);
/// // Invoked after the write returned, yet it misses it: a stale read.
/// let read = history.invoke("b", None, 20);
/// history.ok(read, 0, 30);
/// match check(&Register, &history) {
///     Verdict::NotLinearizable(counterexample) => {
///         // The read's answer is the one no order gives; the write ran just before it.
///         assert_eq!(counterexample.core[0].op, None);
///         assert_eq!(counterexample.context[0].op, Some(1));
///     }
///     other => panic!("expected a violation, got {other:?}"),
/// }
/// ```
///
/// This checks with [`DEFAULT_STEP_BUDGET`]; [`check_with_budget`] takes another.
pub fn check<M: Model>(model: &M, history: &History<M::Op, M::Ret>) -> Verdict<M::Op, M::Ret> {
    check_with_budget(model, history, DEFAULT_STEP_BUDGET)
}

/// Checks `history` against `model`, giving up on a part after `step_budget` steps.
pub fn check_with_budget<M: Model>(
    model: &M,
    history: &History<M::Op, M::Ret>,
    step_budget: u64,
) -> Verdict<M::Op, M::Ret> {
    let operations = history.operations();
    let mut undecided = None;
    for (partition, members) in partitions(model, operations) {
        let items = match register_rules(model, operations, partition, items(operations, &members))
        {
            Ok(items) => items,
            Err(counterexample) => return Verdict::NotLinearizable(counterexample),
        };
        match search(model, &items, step_budget) {
            (Search::Found, _) => {}
            (Search::NotFound, _) => {
                let counterexample = reduce(model, operations, partition, &items, step_budget);
                return Verdict::NotLinearizable(counterexample);
            }
            (Search::OutOfBudget, steps) => {
                undecided.get_or_insert(Verdict::Undecided {
                    partition,
                    operations: items.len(),
                    steps,
                });
            }
        }
    }
    undecided.unwrap_or(Verdict::Linearizable)
}

/// The register rules of [`Model::register`], when the model describes every operation of the
/// part: the operations left for the search (rule 3), or a refutation (rules 1 and 2). The
/// rules and why they are sound are in the `register` module.
fn register_rules<'h, M: Model>(
    model: &M,
    operations: &'h [Operation<M::Op, M::Ret>],
    partition: Option<u64>,
    items: Vec<Item<'h, M::Op, M::Ret>>,
) -> Result<Vec<Item<'h, M::Op, M::Ret>>, Counterexample<M::Op, M::Ret>> {
    let described: Option<Vec<Access>> = items
        .iter()
        .map(|item| {
            Some(Access {
                register: model.register(item.op, item.ret)?,
                invoke_event: item.invoke_event,
                return_event: item.return_event,
            })
        })
        .collect();
    let Some(accesses) = described else {
        return Ok(items);
    };
    // One register per part: a history checked as a whole because some operation has no part
    // may hold several (the rules would take them for one).
    let mut parts = items.iter().map(|item| model.partition(item.op));
    if let Some(first) = parts.next()
        && parts.any(|part| part != first)
    {
        return Ok(items);
    }
    let partition_operations = items.len();
    let dropped = register::droppable(&accesses);
    let (kept, kept_accesses): (Vec<_>, Vec<_>) = items
        .into_iter()
        .zip(accesses)
        .zip(dropped)
        .filter(|(_, dropped)| !dropped)
        .map(|(pair, _)| pair)
        .unzip();
    let Some(refuted) = register::refute(&kept_accesses) else {
        return Ok(with_twins(kept, &kept_accesses));
    };
    let name = |position: usize| operations[kept[position].index].to_string();
    let why = refuted.explain(name);
    let (refutation, writers) = match &refuted {
        Refuted::Unwritten { value, .. } => {
            let writers = (0..kept.len())
                .filter(|&position| match kept_accesses[position].register {
                    crate::Register::Write(Some(ref left))
                    | crate::Register::Swap {
                        new: Some(ref left),
                        ..
                    } => left == value,
                    _ => false,
                })
                .take(CONTEXT_BEFORE)
                .collect::<Vec<_>>();
            (Refutation::UnwrittenValue(why), writers)
        }
        Refuted::HeldTwice { first, second } => (
            Refutation::ValueHeldTwice(why),
            vec![first.writer, second.writer],
        ),
    };
    let core = refuted.operations();
    let mut context: Vec<usize> = writers
        .into_iter()
        .filter(|position| !core.contains(position))
        .collect();
    context.sort_unstable();
    context.dedup();
    let operation = |position: usize| operations[kept[position].index].clone();
    Err(Counterexample {
        partition,
        partition_operations,
        prefix_operations: partition_operations,
        refutation,
        core: core.into_iter().map(operation).collect(),
        context: context.into_iter().map(operation).collect(),
        minimal: true,
    })
}

/// Puts the operations of unknown outcome that the model describes alike in one class each:
/// they are interchangeable. Of two such operations, the one invoked first may take effect
/// wherever the other may (an operation may be placed once it was invoked before the earliest
/// return still to be placed, and that only moves later as the order grows), so a legal order
/// placing the later one can place the earlier one there instead, and the later one where the
/// earlier one was, or nowhere. Trying only the earliest unplaced of each class therefore loses
/// no legal order, and spares the search every permutation of equal timed-out writes (a
/// client's retries of one command, say).
fn with_twins<'h, Op, Ret>(
    mut items: Vec<Item<'h, Op, Ret>>,
    accesses: &[Access],
) -> Vec<Item<'h, Op, Ret>> {
    let mut classes: BTreeMap<&crate::Register, u32> = BTreeMap::new();
    for (item, access) in items.iter_mut().zip(accesses) {
        if !item.required() {
            let next = u32::try_from(classes.len()).unwrap_or(u32::MAX);
            item.twins = Some(*classes.entry(&access.register).or_insert(next));
        }
    }
    items
}

/// The operations (refused ones left out) of each part, in invocation order.
fn partitions<M: Model>(
    model: &M,
    operations: &[Operation<M::Op, M::Ret>],
) -> BTreeMap<Option<u64>, Vec<usize>> {
    let mut parts: BTreeMap<Option<u64>, Vec<usize>> = BTreeMap::new();
    let mut whole = Vec::new();
    let mut split = true;
    for (index, operation) in operations.iter().enumerate() {
        if matches!(operation.outcome, Recorded::Failed) {
            continue;
        }
        whole.push(index);
        match model.partition(&operation.op) {
            Some(part) if split => parts.entry(Some(part)).or_default().push(index),
            Some(_) => {}
            None => split = false,
        }
    }
    if !split {
        parts.clear();
        parts.insert(None, whole);
    }
    parts
}

/// One operation as the search sees it.
struct Item<'h, Op, Ret> {
    /// Its place in the history.
    index: usize,
    op: &'h Op,
    invoke_event: u64,
    /// When it returned; `None` for an operation of unknown outcome, which may take effect at
    /// any point after its invocation, or never.
    return_event: Option<u64>,
    /// The answer it must give; `None` when it is not checked (unknown outcome, or ignored by
    /// the reduction).
    ret: Option<&'h Ret>,
    /// For an operation of unknown outcome, a class it shares with the others of unknown
    /// outcome that do exactly what it does ([`Model::register`] describes them alike): of
    /// those not placed yet, only the earliest invoked is a candidate (see [`candidates`]).
    twins: Option<u32>,
}

impl<Op, Ret> Item<'_, Op, Ret> {
    /// It must take effect (it returned).
    fn required(&self) -> bool {
        self.return_event.is_some()
    }
}

// Copied by hand: the derives would ask `Op` and `Ret` to be `Copy`, and only references to
// them are held.
impl<Op, Ret> Clone for Item<'_, Op, Ret> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<Op, Ret> Copy for Item<'_, Op, Ret> {}

fn items<'h, Op, Ret>(
    operations: &'h [Operation<Op, Ret>],
    members: &[usize],
) -> Vec<Item<'h, Op, Ret>> {
    members
        .iter()
        .map(|&index| {
            let operation = &operations[index];
            let (ret, return_event) = match &operation.outcome {
                Recorded::Ok {
                    ret, return_event, ..
                } => (Some(ret), Some(*return_event)),
                _ => (None, None),
            };
            Item {
                index,
                op: &operation.op,
                invoke_event: operation.invoke_event,
                return_event,
                ret,
                twins: None,
            }
        })
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Search {
    Found,
    NotFound,
    OutOfBudget,
}

/// A point of the depth-first search: what is placed, the state it leaves, and the candidates
/// for the next place.
struct Frame<S> {
    placed: Vec<u64>,
    state: S,
    /// When the operation placed last had an unknown outcome: the state before it. The next
    /// operation must tell the two states apart.
    debt: Option<S>,
    /// Required operations placed.
    done: usize,
    candidates: Vec<usize>,
    next: usize,
}

/// Looks for a legal order of `items` (in invocation order); returns the verdict and the steps
/// taken.
fn search<M: Model>(model: &M, items: &[Item<'_, M::Op, M::Ret>], budget: u64) -> (Search, u64) {
    let required = items.iter().filter(|item| item.required()).count();
    if required == 0 {
        return (Search::Found, 0);
    }
    let placed = vec![0u64; items.len().div_ceil(64)];
    let mut stack = vec![Frame {
        candidates: candidates(items, &placed),
        placed,
        state: model.init(),
        debt: None,
        done: 0,
        next: 0,
    }];
    let mut memo: HashSet<(Vec<u64>, M::State, Option<M::State>)> = HashSet::new();
    let mut steps = 0u64;
    while let Some(frame) = stack.last_mut() {
        let Some(&candidate) = frame.candidates.get(frame.next) else {
            stack.pop();
            continue;
        };
        frame.next += 1;
        steps += 1;
        if steps > budget {
            return (Search::OutOfBudget, steps);
        }
        let item = &items[candidate];
        let (state, ret) = model.step(&frame.state, item.op);
        if item.ret.is_some_and(|expected| *expected != ret) {
            continue;
        }
        let debt = if item.required() {
            None
        } else if state == frame.state {
            // An unknown operation that changes nothing is never needed.
            continue;
        } else {
            Some(frame.state.clone())
        };
        if let Some(before) = &frame.debt {
            let (other_state, other_ret) = model.step(before, item.op);
            if other_state == state && item.ret.is_none_or(|_| other_ret == ret) {
                // The unknown operation placed just before makes no difference here.
                continue;
            }
        }
        let done = frame.done + usize::from(item.required());
        if done == required {
            return (Search::Found, steps);
        }
        let mut placed = frame.placed.clone();
        placed[candidate / 64] |= 1 << (candidate % 64);
        if !memo.insert((placed.clone(), state.clone(), debt.clone())) {
            continue;
        }
        let candidates = candidates(items, &placed);
        stack.push(Frame {
            placed,
            state,
            debt,
            done,
            candidates,
            next: 0,
        });
    }
    (Search::NotFound, steps)
}

/// The unplaced operations that may be placed next: those invoked before the earliest return
/// of an unplaced operation that returned. Those that returned first (a legal order is usually
/// found sooner), each group in invocation order.
fn candidates<Op, Ret>(items: &[Item<'_, Op, Ret>], placed: &[u64]) -> Vec<usize> {
    let unplaced = |i: usize| placed[i / 64] & (1 << (i % 64)) == 0;
    let first_return = (0..items.len())
        .filter(|&i| unplaced(i))
        .filter_map(|i| items[i].return_event)
        .min()
        .unwrap_or(u64::MAX);
    // Items are in invocation order, so the first eligible of a class is its earliest
    // unplaced (an earlier unplaced one would be eligible too).
    let mut classes_seen = BTreeSet::new();
    let eligible = (0..items.len())
        .filter(|&i| unplaced(i) && items[i].invoke_event < first_return)
        .filter(|&i| {
            items[i]
                .twins
                .is_none_or(|class| classes_seen.insert(class))
        })
        .collect::<Vec<_>>();
    let (mut returned, unknown): (Vec<usize>, Vec<usize>) =
        eligible.into_iter().partition(|&i| items[i].required());
    returned.extend(unknown);
    returned
}

/// Operations of the context shown before the core (those during it are all shown).
const CONTEXT_BEFORE: usize = 6;

/// Reduces a failing part to a short witness (see [`check`]).
fn reduce<M: Model>(
    model: &M,
    operations: &[Operation<M::Op, M::Ret>],
    partition: Option<u64>,
    items: &[Item<'_, M::Op, M::Ret>],
    step_budget: u64,
) -> Counterexample<M::Op, M::Ret> {
    let mut left = REDUCE_STEPS.max(step_budget);
    let per_search = REDUCE_SEARCH_STEPS.max(step_budget / 20);
    let mut fails = |candidate: &[Item<'_, M::Op, M::Ret>]| {
        if left == 0 {
            return None;
        }
        let (verdict, steps) = search(model, candidate, per_search.min(left));
        left = left.saturating_sub(steps);
        match verdict {
            Search::NotFound => Some(true),
            Search::Found => Some(false),
            Search::OutOfBudget => None,
        }
    };
    // The shortest failing prefix, by bisection (a failing prefix stays failing when extended).
    let (mut good, mut bad) = (0, items.len());
    let mut minimal = true;
    while bad - good > 1 {
        let middle = good + (bad - good) / 2;
        match fails(&prefix(items, middle)) {
            Some(true) => bad = middle,
            Some(false) => good = middle,
            None => {
                minimal = false;
                good = middle;
            }
        }
    }
    let mut witness = prefix(items, bad);
    // Ignore the answers that are not needed: chunks of halving size, oldest first, then single
    // operations until no more can be ignored.
    let mut chunk = witness.len().div_ceil(2).max(1);
    loop {
        let checked: Vec<usize> = (0..witness.len())
            .filter(|&i| witness[i].ret.is_some())
            .collect();
        let mut ignored_any = false;
        for group in checked.chunks(chunk) {
            let mut candidate = witness.clone();
            for &i in group {
                candidate[i].ret = None;
            }
            match fails(&candidate) {
                Some(true) => {
                    witness = candidate;
                    ignored_any = true;
                }
                Some(false) => {}
                None => minimal = false,
            }
        }
        if chunk == 1 && !ignored_any {
            break;
        }
        chunk = chunk.div_ceil(2).max(1);
    }
    let core: Vec<&Item<'_, M::Op, M::Ret>> =
        witness.iter().filter(|item| item.ret.is_some()).collect();
    let core_start = core.iter().map(|item| item.invoke_event).min().unwrap_or(0);
    let core_end = core
        .iter()
        .filter_map(|item| item.return_event)
        .max()
        .unwrap_or(u64::MAX);
    let is_core = |item: &Item<'_, M::Op, M::Ret>| item.ret.is_some();
    // During the core: invoked before its last return, and not returned before its start.
    let during: Vec<usize> = witness
        .iter()
        .filter(|item| !is_core(item))
        .filter(|item| {
            item.invoke_event < core_end && item.return_event.is_none_or(|r| r > core_start)
        })
        .map(|item| item.index)
        .collect();
    let mut before: Vec<&Item<'_, M::Op, M::Ret>> = witness
        .iter()
        .filter(|item| !is_core(item) && item.return_event.is_some_and(|r| r < core_start))
        .collect();
    before.sort_by_key(|item| std::cmp::Reverse(item.return_event));
    let mut context: Vec<usize> = before
        .iter()
        .take(CONTEXT_BEFORE)
        .map(|item| item.index)
        .chain(during)
        .collect();
    context.sort_unstable();
    context.dedup();
    Counterexample {
        partition,
        partition_operations: items.len(),
        prefix_operations: witness.len(),
        refutation: Refutation::Search,
        core: core
            .iter()
            .map(|item| operations[item.index].clone())
            .collect(),
        context: context
            .into_iter()
            .map(|index| operations[index].clone())
            .collect(),
        minimal,
    }
}

/// The first `length` operations, with those that had not returned by the invocation of the
/// next one made unknown.
fn prefix<'h, Op, Ret>(items: &[Item<'h, Op, Ret>], length: usize) -> Vec<Item<'h, Op, Ret>> {
    let cut = items.get(length).map_or(u64::MAX, |next| next.invoke_event);
    items[..length.min(items.len())]
        .iter()
        .map(|item| match item.return_event {
            Some(returned) if returned < cut => *item,
            _ => Item {
                return_event: None,
                ret: None,
                ..*item
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Register;

    /// A register of one number per key: `(key, Some(v))` writes, `(key, None)` reads. With
    /// `rules`, it describes its operations for the register rules (0 is absent).
    struct Registers {
        partitioned: bool,
        rules: bool,
    }

    impl Model for Registers {
        type Op = (u64, Option<u64>);
        type Ret = u64;
        type State = BTreeMap<u64, u64>;
        fn init(&self) -> Self::State {
            BTreeMap::new()
        }
        fn step(&self, state: &Self::State, &(key, write): &Self::Op) -> (Self::State, u64) {
            let mut next = state.clone();
            if let Some(value) = write {
                next.insert(key, value);
            }
            let value = next.get(&key).copied().unwrap_or(0);
            (next, value)
        }
        fn partition(&self, op: &Self::Op) -> Option<u64> {
            self.partitioned.then_some(op.0)
        }
        fn register(&self, &(_, write): &Self::Op, answer: Option<&u64>) -> Option<Register> {
            let value = |v: u64| (v != 0).then(|| v.to_be_bytes().to_vec());
            if !self.rules || !self.partitioned {
                // Unpartitioned, the state holds every key: not one register.
                return None;
            }
            Some(match (write, answer) {
                (Some(v), _) => Register::Write(value(v)),
                (None, Some(&seen)) => Register::Read(value(seen)),
                (None, None) => Register::Nothing,
            })
        }
    }

    /// [`Registers`], split by key, except that key 99 has no part: a history with an operation
    /// on it is checked as a whole, which holds several registers, so the register rules must
    /// stay out of it even though every operation is described.
    struct OneKeyUnnumbered;

    impl Model for OneKeyUnnumbered {
        type Op = (u64, Option<u64>);
        type Ret = u64;
        type State = BTreeMap<u64, u64>;
        fn init(&self) -> Self::State {
            BTreeMap::new()
        }
        fn step(&self, state: &Self::State, op: &Self::Op) -> (Self::State, u64) {
            let registers = Registers {
                partitioned: true,
                rules: true,
            };
            registers.step(state, op)
        }
        fn partition(&self, op: &Self::Op) -> Option<u64> {
            (op.0 != 99).then_some(op.0)
        }
        fn register(&self, &(_, write): &Self::Op, answer: Option<&u64>) -> Option<Register> {
            let value = |v: u64| (v != 0).then(|| v.to_be_bytes().to_vec());
            Some(match (write, answer) {
                (Some(v), _) => Register::Write(value(v)),
                (None, Some(&seen)) => Register::Read(value(seen)),
                (None, None) => Register::Nothing,
            })
        }
    }

    #[test]
    fn the_register_rules_stay_out_of_a_part_holding_several_registers() {
        // Sequential, and right: each key reads back its own write. Taken for one register,
        // "5" and "6" are each written once and read in both orders.
        let ops: Ops = vec![
            ("a", (1, Some(5)), 0, Some((5, 1))),
            ("b", (2, Some(6)), 2, Some((6, 3))),
            ("c", (1, None), 4, Some((5, 5))),
            ("d", (2, None), 6, Some((6, 7))),
            ("e", (99, None), 8, Some((0, 9))),
        ];
        let verdict = check(&OneKeyUnnumbered, &history(ops));
        assert!(verdict.is_linearizable(), "{verdict}");
    }

    type Ops = Vec<(&'static str, (u64, Option<u64>), u64, Option<(u64, u64)>)>;

    /// A history from (client, op, invoked, Some((answer, returned)) or None for unknown).
    /// Events are ordered by time, invocations before returns at equal times.
    fn history(ops: Ops) -> History<(u64, Option<u64>), u64> {
        let mut events: Vec<(u64, u8, usize)> = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            events.push((op.2, 0, i));
            if let Some((_, returned)) = op.3 {
                events.push((returned, 1, i));
            }
        }
        events.sort();
        let mut history = History::new();
        let mut ids = BTreeMap::new();
        for (time, kind, i) in events {
            let (client, op, _, ended) = ops[i];
            if kind == 0 {
                ids.insert(i, history.invoke(client, op, time));
            } else if let Some((answer, _)) = ended {
                history.ok(ids[&i], answer, time);
            }
        }
        for (i, op) in ops.iter().enumerate() {
            if op.3.is_none() {
                history.unknown(ids[&i]);
            }
        }
        history
    }

    fn verdict(ops: Ops, partitioned: bool) -> Verdict<(u64, Option<u64>), u64> {
        check(
            &Registers {
                partitioned,
                rules: partitioned,
            },
            &history(ops),
        )
    }

    #[test]
    fn sequential_and_concurrent_histories_are_accepted() {
        let ops: Ops = vec![
            ("a", (1, Some(1)), 0, Some((1, 10))),
            ("b", (1, None), 20, Some((1, 30))),
            // Concurrent with the write of 2: may see either.
            ("a", (1, Some(2)), 40, Some((2, 60))),
            ("b", (1, None), 45, Some((1, 50))),
            ("c", (1, None), 46, Some((2, 55))),
        ];
        assert!(verdict(ops.clone(), false).is_linearizable());
        assert!(verdict(ops, true).is_linearizable());
    }

    #[test]
    fn a_stale_read_is_caught_and_reduced_to_its_core() {
        let ops: Ops = vec![
            ("x", (2, Some(5)), 0, Some((5, 5))),
            ("a", (1, Some(1)), 10, Some((1, 20))),
            ("x", (2, None), 12, Some((5, 13))),
            ("b", (1, None), 30, Some((0, 40))),
            ("x", (2, None), 50, Some((5, 60))),
        ];
        for partitioned in [false, true] {
            let Verdict::NotLinearizable(c) = verdict(ops.clone(), partitioned) else {
                panic!("not caught");
            };
            let core: Vec<_> = c.core.iter().map(|o| o.op).collect();
            assert_eq!(core, vec![(1, None)], "{c}");
            let context: Vec<_> = c.context.iter().map(|o| o.op).collect();
            assert!(context.contains(&(1, Some(1))), "{c}");
            assert_eq!(c.partition, partitioned.then_some(1));
            if partitioned {
                assert!(context.iter().all(|op| op.0 == 1), "{c}");
            }
            assert!(c.minimal);
        }
    }

    #[test]
    fn an_unknown_write_may_take_effect_late_or_never() {
        // Seen by a read long after it was invoked.
        let late: Ops = vec![
            ("a", (1, Some(1)), 0, None),
            ("b", (1, None), 10, Some((0, 20))),
            ("b", (1, None), 100, Some((1, 110))),
        ];
        assert!(verdict(late, false).is_linearizable());
        // Never seen.
        let never: Ops = vec![
            ("a", (1, Some(1)), 0, None),
            ("b", (1, None), 100, Some((0, 110))),
        ];
        assert!(verdict(never, false).is_linearizable());
        // Seen, then unseen with nothing to undo it.
        let flicker: Ops = vec![
            ("a", (1, Some(1)), 0, None),
            ("b", (1, None), 10, Some((1, 20))),
            ("b", (1, None), 30, Some((0, 40))),
        ];
        assert!(!verdict(flicker, false).is_linearizable());
    }

    #[test]
    fn an_unknown_write_is_not_forced_to_undo_a_later_one() {
        // Write 1 (unknown) may land after write 2, and a later read sees 1.
        let ops: Ops = vec![
            ("a", (1, Some(1)), 0, None),
            ("b", (1, Some(2)), 10, Some((2, 20))),
            ("c", (1, None), 30, Some((1, 40))),
        ];
        assert!(verdict(ops, false).is_linearizable());
        // But not before it was invoked.
        let early: Ops = vec![
            ("b", (1, Some(2)), 10, Some((2, 20))),
            ("c", (1, None), 30, Some((1, 40))),
            ("a", (1, Some(1)), 50, None),
        ];
        assert!(!verdict(early, false).is_linearizable());
    }

    #[test]
    fn refused_operations_are_left_out() {
        let mut history = history(vec![("b", (1, None), 30, Some((0, 40)))]);
        let refused = history.invoke("a", (1, Some(1)), 0);
        history.failed(refused);
        assert!(
            check(
                &Registers {
                    partitioned: false,
                    rules: false
                },
                &history
            )
            .is_linearizable()
        );
    }

    #[test]
    fn the_core_is_the_stale_read_and_its_context_the_write_it_missed() {
        // Read 1 sees write 1, write 2 overwrites, read 2 sees 1 again: read 2's answer is the
        // one no order gives; write 2 returned just before it.
        let ops: Ops = vec![
            ("a", (1, Some(1)), 0, Some((1, 10))),
            ("b", (1, None), 20, Some((1, 30))),
            ("a", (1, Some(2)), 40, Some((2, 50))),
            ("b", (1, None), 60, Some((1, 70))),
        ];
        let Verdict::NotLinearizable(c) = verdict(ops, false) else {
            panic!("not caught");
        };
        let core: Vec<_> = c.core.iter().map(|o| (o.op, o.invoked_ms)).collect();
        assert_eq!(core, vec![((1, None), 60)], "{c}");
        let context: Vec<_> = c.context.iter().map(|o| (o.op, o.invoked_ms)).collect();
        assert_eq!(context.last(), Some(&((1, Some(2)), 40)), "{c}");
    }

    #[test]
    fn a_small_budget_gives_undecided_not_a_verdict() {
        let mut ops: Ops = Vec::new();
        for i in 0..12 {
            ops.push(("w", (1, Some(i + 1)), i * 10, None));
        }
        ops.push(("r", (1, None), 500, Some((99, 510))));
        let history = history(ops);
        let verdict = check_with_budget(
            &Registers {
                partitioned: false,
                rules: false,
            },
            &history,
            50,
        );
        assert!(matches!(verdict, Verdict::Undecided { .. }), "{verdict}");
    }

    /// Every permutation of the completed operations and every subset of the unknown ones, by
    /// the definition.
    fn brute_force(history: &History<(u64, Option<u64>), u64>) -> bool {
        let operations = history.operations();
        let members: Vec<usize> = (0..operations.len())
            .filter(|&i| !matches!(operations[i].outcome, Recorded::Failed))
            .collect();
        brute_force_items(&items(operations, &members))
    }

    /// Every order of `items` by the definition: an unknown operation may be left out; one
    /// whose answer is ignored must still be placed.
    fn brute_force_items(items: &[Item<'_, (u64, Option<u64>), u64>]) -> bool {
        fn extend(
            items: &[Item<'_, (u64, Option<u64>), u64>],
            order: &mut Vec<usize>,
            state: BTreeMap<u64, u64>,
        ) -> bool {
            let model = Registers {
                partitioned: false,
                rules: false,
            };
            if (0..items.len()).all(|i| !items[i].required() || order.contains(&i)) {
                return true;
            }
            for i in 0..items.len() {
                if order.contains(&i) {
                    continue;
                }
                let blocked = (0..items.len()).any(|j| {
                    !order.contains(&j)
                        && items[j]
                            .return_event
                            .is_some_and(|r| r < items[i].invoke_event)
                });
                if blocked {
                    continue;
                }
                let (next, ret) = model.step(&state, items[i].op);
                if items[i].ret.is_some_and(|expected| *expected != ret) {
                    continue;
                }
                order.push(i);
                let ok = extend(items, order, next);
                order.pop();
                if ok {
                    return true;
                }
            }
            false
        }
        extend(items, &mut Vec::new(), BTreeMap::new())
    }

    #[test]
    fn the_search_agrees_with_brute_force_with_ignored_answers() {
        let mut seed = 0xABCD_u64;
        let mut next = |bound: u64| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) % bound
        };
        let model = Registers {
            partitioned: false,
            rules: false,
        };
        let (mut yes, mut no) = (0, 0);
        for case in 0..1500 {
            let count = 2 + next(5) as usize;
            // (op, answer, invoke event, return event, kind: 0 checked, 1 unknown, 2 ignored)
            let mut specs = Vec::new();
            for _ in 0..count {
                let op = if next(2) == 0 {
                    (1, Some(1 + next(3)))
                } else {
                    (1, None)
                };
                let answer = op.1.unwrap_or_else(|| next(4));
                let invoked = next(40) * 2;
                let returned = invoked + 1 + 2 * next(20);
                specs.push((op, answer, invoked, returned, next(4).min(2)));
            }
            let items: Vec<Item<'_, (u64, Option<u64>), u64>> = specs
                .iter()
                .enumerate()
                .map(|(index, (op, answer, invoked, returned, kind))| Item {
                    index,
                    op,
                    invoke_event: *invoked,
                    return_event: (*kind != 1).then_some(*returned),
                    ret: (*kind == 0).then_some(answer),
                    twins: None,
                })
                .collect();
            let expected = brute_force_items(&items);
            let (got, _) = search(&model, &items, u64::MAX);
            assert_eq!(got == Search::Found, expected, "case {case}: {specs:?}");
            if expected { yes += 1 } else { no += 1 }
        }
        assert!(yes > 100 && no > 100, "{yes} / {no}");
    }

    #[test]
    fn the_search_agrees_with_brute_force_on_small_random_histories() {
        let mut seed = 0x1234_5678_u64;
        let mut next = |bound: u64| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) % bound
        };
        let mut disagreements = Vec::new();
        let (mut linearizable, mut not) = (0, 0);
        for case in 0..1500 {
            let count = 2 + next(5);
            let mut ops: Ops = Vec::new();
            for _ in 0..count {
                let key = 1 + next(2);
                let op = if next(2) == 0 {
                    (key, Some(1 + next(3)))
                } else {
                    (key, None)
                };
                let invoked = next(40);
                // A write answers the value it wrote; a read, a guess.
                let answer = op.1.unwrap_or_else(|| next(4));
                let ended = match next(5) {
                    0 => None,
                    _ => Some((answer, invoked + 1 + next(20))),
                };
                ops.push(("c", op, invoked, ended));
            }
            let history = history(ops);
            let expected = brute_force(&history);
            for (partitioned, rules) in [(false, false), (true, false), (true, true)] {
                let got = check(&Registers { partitioned, rules }, &history).is_linearizable();
                if got != expected {
                    disagreements.push((case, partitioned, rules, history.clone()));
                }
            }
            if expected {
                linearizable += 1;
            } else {
                not += 1;
            }
        }
        assert!(disagreements.is_empty(), "{:#?}", disagreements.first());
        assert!(linearizable > 100 && not > 100, "{linearizable} / {not}");
    }
}
