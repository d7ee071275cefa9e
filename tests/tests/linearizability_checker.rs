//! raft-sim's linearizability checker on histories of the key-value store
//! (`raft_tests::linearizability`): against a brute-force check by the definition on small
//! random histories, on long histories with many timed-out writes whose values are read long
//! after the client gave up, and on histories that a search refutes in budget only with its
//! memo and prunings.
//!
//! The differential tests run 3,000 seeds each; `RAFT_SIM_SEEDS=n` runs `n`, and
//! `RAFT_SIM_SEED=s` replays one.

use raft_sim::seeds as seeds_from_env;
use raft_sim::{DEFAULT_STEP_BUDGET, Refutation};
use raft_tests::linearizability::{
    History, Operation, Response, TimedOperation, Verdict, apply_to_map as apply,
    brute_force_linearizable, check, check_with_budget,
};
use raft_tests::rng::SplitMix64;
use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

type Op = TimedOperation;

fn some(value: &str) -> Option<String> {
    Some(value.to_owned())
}

/// Draws for the generators.
struct Random(SplitMix64);

impl Random {
    fn below(&mut self, bound: usize) -> usize {
        self.0.range(0, bound as u64) as usize
    }

    fn percent(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

/// How a random history is drawn.
#[derive(Clone, Copy)]
struct Shape {
    clients: usize,
    operations: usize,
    keys: usize,
    /// Every written value is fresh when true; drawn from two when false.
    unique_values: bool,
    timeout_percent: usize,
    /// The chance, each tick, that one ghost of a timed-out request is settled (taking effect or
    /// not): the lower, the longer timed-out writes stay in doubt.
    settle_percent: usize,
}

/// Names the value a new write writes.
struct Values {
    unique: bool,
    written: usize,
}

impl Values {
    fn next(&mut self, random: &mut Random) -> String {
        self.written += 1;
        if self.unique {
            format!("v{}", self.written)
        } else {
            ["a", "b"][random.below(2)].to_owned()
        }
    }

    /// A value some write may have written, or one no write writes.
    fn any(&self, random: &mut Random) -> Option<String> {
        match random.below(6) {
            0 => None,
            1 => some("never"),
            _ if self.unique => Some(format!("v{}", 1 + random.below(self.written.max(1)))),
            _ => Some(["a", "b"][random.below(2)].to_owned()),
        }
    }
}

fn random_operation(random: &mut Random, values: &mut Values, key: &str) -> Operation {
    match random.below(100) {
        0..35 => Operation::put(key, values.next(random)),
        35..65 => Operation::get(key),
        65..75 => Operation::delete(key),
        _ => {
            let expect = values.any(random);
            Operation::cas(key, expect.as_deref(), values.next(random))
        }
    }
}

/// Random clients against a real map, one event per clock tick: every operation takes effect
/// inside its interval, so the history is linearizable. A timed-out request leaves a ghost that
/// takes effect at some later tick or never, like a request stuck in a Raft log.
fn generate(random: &mut Random, shape: Shape) -> Vec<Op> {
    enum Client {
        Idle,
        Called(usize),
        Applied(usize, Response),
    }
    let keys = ["x", "y", "z"];
    let mut values = Values {
        unique: shape.unique_values,
        written: 0,
    };
    let mut map = BTreeMap::new();
    let mut ops: Vec<Op> = Vec::new();
    let mut clients: Vec<Client> = (0..shape.clients).map(|_| Client::Idle).collect();
    let mut ghosts: Vec<usize> = Vec::new();
    let mut time = 0;
    while ops.len() < shape.operations || clients.iter().any(|c| !matches!(c, Client::Idle)) {
        time += 1;
        if !ghosts.is_empty() && random.percent(shape.settle_percent) {
            let ghost = ghosts.swap_remove(random.below(ghosts.len()));
            if random.percent(60) {
                apply(&mut map, &ops[ghost].operation);
            }
            continue;
        }
        let client = random.below(shape.clients);
        clients[client] = match std::mem::replace(&mut clients[client], Client::Idle) {
            Client::Idle if ops.len() < shape.operations => {
                let key = keys[random.below(shape.keys)];
                ops.push(Op {
                    client: client as u64,
                    operation: random_operation(random, &mut values, key),
                    called: time,
                    ended: None,
                });
                Client::Called(ops.len() - 1)
            }
            Client::Idle => Client::Idle,
            Client::Called(index) if random.percent(shape.timeout_percent) => {
                ghosts.push(index);
                Client::Idle
            }
            Client::Called(index) => Client::Applied(index, apply(&mut map, &ops[index].operation)),
            Client::Applied(_, _) if random.percent(shape.timeout_percent) => Client::Idle,
            Client::Applied(index, response) => {
                ops[index].ended = Some((response, time));
                Client::Idle
            }
        };
    }
    ops
}

/// Replaces one answer with a random one of the right kind, or times one operation out; the
/// history may or may not stay linearizable.
fn mutate(random: &mut Random, ops: &mut [Op], values: &Values) {
    let index = random.below(ops.len());
    let operation = ops[index].operation.clone();
    let Some((response, _)) = &mut ops[index].ended else {
        return;
    };
    if random.percent(15) {
        ops[index].ended = None;
        return;
    }
    *response = match operation {
        Operation::Put { .. } | Operation::Delete { .. } => return,
        Operation::Get { .. } => Response::Value(values.any(random)),
        Operation::Cas { .. } => Response::Cas {
            swapped: random.percent(50),
            current: values.any(random),
        },
    };
}

/// Operations at random, overlapping intervals with random answers: mostly not linearizable,
/// and unlike the generated ones, not shaped by any run of a map.
fn scramble(random: &mut Random, shape: Shape) -> Vec<Op> {
    let keys = ["x", "y", "z"];
    let mut values = Values {
        unique: shape.unique_values,
        written: 0,
    };
    let mut used = HashSet::new();
    let mut time = |random: &mut Random| loop {
        let time = 1 + random.below(40) as u64;
        if used.insert(time) {
            return time;
        }
    };
    let mut ops = Vec::new();
    for client in 0..shape.operations {
        let key = keys[random.below(shape.keys)];
        let operation = random_operation(random, &mut values, key);
        let (mut called, mut returned) = (time(random), time(random));
        if called > returned {
            std::mem::swap(&mut called, &mut returned);
        }
        ops.push(Op {
            client: client as u64,
            operation,
            called,
            ended: Some((Response::Done, returned)),
        });
    }
    for op in &mut ops {
        let answer = match op.operation {
            _ if random.percent(shape.timeout_percent) => None,
            Operation::Put { .. } | Operation::Delete { .. } => Some(Response::Done),
            Operation::Get { .. } => Some(Response::Value(values.any(random))),
            Operation::Cas { .. } => Some(Response::Cas {
                swapped: random.percent(50),
                current: values.any(random),
            }),
        };
        op.ended = answer.map(|answer| (answer, op.ended.as_ref().map_or(0, |ended| ended.1)));
    }
    ops
}

/// How many seeds each differential test runs unless the environment says otherwise.
const SEEDS: u64 = 3000;

/// Records `ops`, leaving about half of those that never returned in flight instead of timed out:
/// the checker must treat the two alike.
fn record_leaving_some_pending(random: &mut Random, ops: &[Op]) -> History {
    let (pending, ended): (Vec<Op>, Vec<Op>) = ops
        .iter()
        .cloned()
        .partition(|op| op.ended.is_none() && random.percent(50));
    let mut history = History::from_timed(&ended);
    // Every event of a drawn history has its own time, so recording these calls last changes no
    // order between events.
    for op in pending {
        history.call(op.client, op.operation, op.called);
    }
    history
}

/// Runs the histories `draw` makes from each seed (see the module documentation) through both
/// checkers and asserts that they agree; `name` labels the tally printed at the end.
fn differential(name: &str, mut draw: impl FnMut(&mut Random) -> Vec<Op>) -> (usize, usize) {
    let (mut accepted, mut rejected) = (0, 0);
    for seed in seeds_from_env(SEEDS) {
        let mut random = Random(SplitMix64::new(seed));
        let ops = draw(&mut random);
        let expected = brute_force_linearizable(&ops);
        let verdict = check(&record_leaving_some_pending(&mut random, &ops));
        assert!(
            !matches!(verdict, Verdict::Undecided { .. }),
            "seed {seed}: {verdict}"
        );
        assert_eq!(
            verdict.is_linearizable(),
            expected,
            "seed {seed}: brute force says {expected}, the checker says:\n{verdict}\n{ops:#?}"
        );
        if expected {
            accepted += 1;
        } else {
            rejected += 1;
        }
    }
    eprintln!(
        "{name}: both checkers agree on {accepted} linearizable and {rejected} other histories"
    );
    (accepted, rejected)
}

/// Asserts that a full run had at least `each` histories of either verdict, so that the
/// agreement means something; a replay of one seed asserts nothing.
#[track_caller]
fn assert_both_verdicts_exercised((accepted, rejected): (usize, usize), each: usize) {
    assert!(
        ((accepted + rejected) as u64) < SEEDS || accepted >= each && rejected >= each,
        "{accepted} accepted, {rejected} rejected"
    );
}

/// One to three keys, one most often: the fewer keys, the more each key's search has to do.
fn some_keys(random: &mut Random) -> usize {
    [1, 1, 2, 3][random.below(4)]
}

const SMALL: Shape = Shape {
    clients: 3,
    operations: 8,
    keys: 1,
    unique_values: true,
    timeout_percent: 30,
    settle_percent: 15,
};

#[test]
fn agrees_with_brute_force_on_generated_histories_with_unique_values() {
    let verdicts = differential("unique values", |random| {
        let shape = Shape {
            keys: some_keys(random),
            ..SMALL
        };
        let mut ops = generate(random, shape);
        // Answers drawn from the values really written make stale reads, not only impossible ones.
        let written = ops
            .iter()
            .filter(|op| matches!(op.operation, Operation::Put { .. } | Operation::Cas { .. }))
            .count();
        let values = Values {
            unique: true,
            written,
        };
        for _ in 0..1 + random.below(3) {
            mutate(random, &mut ops, &values);
        }
        ops
    });
    assert_both_verdicts_exercised(verdicts, 500);
}

/// Makes one completed get return another value that some put or successful swap called before
/// the get returned writes: a stale read (or one from the future) more often than not, but never
/// a value that could not have been written by then.
fn make_a_read_stale(random: &mut Random, ops: &mut [Op]) {
    let reads: Vec<usize> = (0..ops.len())
        .filter(|&index| matches!(ops[index].operation, Operation::Get { .. }))
        .filter(|&index| ops[index].ended.is_some())
        .collect();
    let Some(&read) = reads.get(random.below(reads.len().max(1))) else {
        return;
    };
    let Some((Response::Value(seen), returned)) = ops[read].ended.clone() else {
        return;
    };
    let key = ops[read].operation.key();
    let written: Vec<String> = ops
        .iter()
        .filter(|op| op.operation.key() == key && op.called < returned)
        .filter_map(|op| match (&op.operation, &op.ended) {
            (Operation::Put { value, .. }, _) => Some(value.clone()),
            (Operation::Cas { .. }, Some((Response::Cas { swapped: false, .. }, _))) => None,
            (Operation::Cas { new, .. }, _) => Some(new.clone()),
            (Operation::Get { .. } | Operation::Delete { .. }, _) => None,
        })
        .filter(|value| seen.as_ref() != Some(value))
        .collect();
    if let (Some(value), Some((answer, _))) = (
        written.get(random.below(written.len().max(1))),
        &mut ops[read].ended,
    ) {
        *answer = Response::Value(Some(value.clone()));
    }
}

#[test]
fn agrees_with_brute_force_on_generated_histories_with_a_stale_read() {
    let verdicts = differential("a stale read", |random| {
        let shape = Shape {
            clients: 2,
            timeout_percent: 15,
            ..SMALL
        };
        let mut ops = generate(random, shape);
        make_a_read_stale(random, &mut ops);
        ops
    });
    assert_both_verdicts_exercised(verdicts, 500);
}

#[test]
fn agrees_with_brute_force_on_generated_histories_with_repeated_values() {
    let verdicts = differential("repeated values", |random| {
        let shape = Shape {
            unique_values: false,
            keys: some_keys(random),
            ..SMALL
        };
        let mut ops = generate(random, shape);
        let values = Values {
            unique: false,
            written: 0,
        };
        for _ in 0..1 + random.below(3) {
            mutate(random, &mut ops, &values);
        }
        ops
    });
    assert_both_verdicts_exercised(verdicts, 500);
}

#[test]
fn agrees_with_brute_force_on_scrambled_histories() {
    for (name, unique_values) in [("scrambled, unique values", true), ("scrambled", false)] {
        let verdicts = differential(name, |random| {
            let shape = Shape {
                operations: 7,
                keys: some_keys(random),
                unique_values,
                ..SMALL
            };
            scramble(random, shape)
        });
        assert_both_verdicts_exercised(verdicts, 100);
    }
}

// ---- long histories with many timed-out writes ------------------------------------------------

/// Fifty-three operations on one key. Sixteen writes of distinct values time out or are still in
/// flight at the end; between them, other clients write and read back values of their own; then
/// one read returns a value no operation wrote (or, when `bad_read` is false, the last value
/// written); only after it do the timed-out values show up, each read once. While the timed-out
/// writes are in doubt, every subset of them could have taken effect before the bad read: a
/// search that tries each at every point from its call on runs out of budget on it.
fn sixteen_timeouts_and_a_read_of_nothing(bad_read: bool) -> History {
    let mut history = History::new();
    let mut time = 0;
    let mut tick = || {
        time += 10;
        time
    };
    for round in 0..16 {
        let id = history.call(1, Operation::put("x", format!("late {round}")), tick());
        if round % 3 != 0 {
            history.time_out(id);
        }
        if round % 4 != 3 {
            let id = history.call(2, Operation::put("x", format!("own {round}")), tick());
            history.complete(id, Response::Done, tick());
        }
        if round % 2 == 0 {
            let id = history.call(2, Operation::get("x"), tick());
            history.complete(id, Response::Value(some(&format!("own {round}"))), tick());
        }
    }
    let nothing = if bad_read {
        some("nothing wrote this")
    } else {
        some("own 14")
    };
    let id = history.call(3, Operation::get("x"), tick());
    history.complete(id, Response::Value(nothing), tick());
    for round in 0..16 {
        let id = history.call(3, Operation::get("x"), tick());
        history.complete(id, Response::Value(some(&format!("late {round}"))), tick());
    }
    history
}

/// A thousand operations on one key from five clients, 269 of them timed out; the timed-out
/// writes take effect late (often tens of operations later) or never, and others read them.
/// Linearizable.
fn thousand_operations_with_late_writes() -> History {
    History::from_timed(&thousand_operations())
}

fn thousand_operations() -> Vec<Op> {
    let shape = Shape {
        clients: 5,
        operations: 1000,
        keys: 1,
        unique_values: true,
        timeout_percent: 15,
        settle_percent: 1,
    };
    generate(&mut Random(SplitMix64::new(0)), shape)
}

/// The thousand operations above, with one read three quarters of the way through returning the
/// value read twenty reads earlier instead, as a lagging replica might: a stale read, among
/// hundreds of timed-out writes that a search must place in every way before giving up.
fn thousand_operations_with_a_stale_read() -> History {
    let mut ops = thousand_operations();
    let reads: Vec<usize> = (0..ops.len())
        .filter(|&index| matches!(ops[index].operation, Operation::Get { .. }))
        .filter(|&index| matches!(ops[index].ended, Some((Response::Value(Some(_)), _))))
        .collect();
    let (earlier, stale) = (reads[reads.len() * 3 / 4 - 20], reads[reads.len() * 3 / 4]);
    let old = ops[earlier].ended.clone().map(|(answer, _)| answer);
    if let (Some((answer, _)), Some(old)) = (&mut ops[stale].ended, old) {
        assert_ne!(*answer, old, "the two reads saw the same value");
        *answer = old;
    }
    History::from_timed(&ops)
}

/// The fewest steps in which `history` is decided, and that verdict: the search is deterministic,
/// so being decided within a budget is monotone in the budget.
fn steps_to_decide(history: &History, ceiling: u64) -> Option<(u64, Verdict<Operation, Response>)> {
    let decided = |budget| {
        let verdict = check_with_budget(history, budget);
        (!matches!(verdict, Verdict::Undecided { .. })).then_some(verdict)
    };
    let verdict = decided(ceiling)?;
    if decided(0).is_some() {
        return Some((0, verdict));
    }
    let (mut low, mut high) = (0, ceiling);
    while low + 1 < high {
        let middle = low + (high - low) / 2;
        if decided(middle).is_some() {
            high = middle;
        } else {
            low = middle;
        }
    }
    Some((high, verdict))
}

/// An answer needing a value nothing could have written by then is refuted, with that answer
/// named, however many timed-out writes are in doubt around it (about 2,100 steps).
#[test]
fn a_read_of_a_value_nothing_wrote_among_sixteen_timed_out_writes_is_refuted() {
    let counterexample = refuted_within(&sixteen_timeouts_and_a_read_of_nothing(true), 100_000);
    let names_the_bad_read = counterexample.core.iter().any(|operation| {
        matches!(&operation.outcome, raft_sim::Recorded::Ok { ret, .. }
            if *ret == Response::Value(some("nothing wrote this")))
    });
    assert!(names_the_bad_read, "{counterexample}");

    // A swap from "a" to "a" needs "a" before it takes effect: its own write does not count.
    let mut history = History::new();
    let swap = Operation::cas("x", Some("a"), "a");
    let answer = Response::Cas {
        swapped: true,
        current: some("a"),
    };
    completed(&mut history, 0, swap, (0, 1), answer);
    refuted_within(&history, 100);
}

/// The same history without its bad read: the timed-out writes are placed right before the
/// reads that see them, not tried at every point (under a hundred steps).
#[test]
fn sixteen_timed_out_writes_read_late_are_accepted_quickly() {
    let history = sixteen_timeouts_and_a_read_of_nothing(false);
    let verdict = check_with_budget(&history, DEFAULT_STEP_BUDGET / 100);
    assert!(verdict.is_linearizable(), "{verdict}");
}

/// A stale read among a thousand operations with hundreds of timed-out writes in doubt must be
/// refuted, not left undecided: the model describes each key as a register, so the two values
/// written once that real time orders both ways refute the key before any search (the search
/// alone leaves it undecided even at 400 million steps).
#[test]
fn stale_read_among_a_thousand_operations_is_refuted_without_a_search() {
    let verdict = check(&thousand_operations_with_a_stale_read());
    match verdict {
        Verdict::NotLinearizable(counterexample) => assert!(
            matches!(counterexample.refutation, Refutation::ValueHeldTwice(_)),
            "{counterexample}"
        ),
        other => panic!("expected a violation, got {other}"),
    }
}

/// Timed-out writes placed only right before an operation that tells their effect apart, and
/// those whose value nothing mentions left out: a long history decided within the default
/// budget (about a million steps; over nine million with every timed-out write in the search).
#[test]
fn thousand_operations_with_late_writes_are_decided_within_the_default_budget() {
    let history = thousand_operations_with_late_writes();
    let started = Instant::now();
    let verdict = check(&history);
    let elapsed = started.elapsed();
    assert!(verdict.is_linearizable(), "{verdict}");
    eprintln!("1000 operations with late writes: linearizable in {elapsed:?}");
}

// ---- histories that take a search its memo and prunings to refute ----------------------------

/// Records `operation` by `client`, called and returned at the given times.
fn completed(
    history: &mut History,
    client: u64,
    operation: Operation,
    (called, returned): (u64, u64),
    response: Response,
) {
    let id = history.call(client, operation, called);
    history.complete(id, response, returned);
}

/// Twelve acknowledged puts, all concurrent, six of "a" and six of "b", then reads of "a", "b"
/// and "a" again, which would need a put after the last of them. Refuting it means trying every
/// order of the puts: 12! of them, or 2^12 configurations (which puts are placed, and the value
/// left) when orders that reach the same configuration are explored once. The values repeat, so
/// nothing refutes it before the search.
fn concurrent_puts_then_reads_no_order_allows() -> History {
    let mut history = History::new();
    for client in 0..12 {
        let put = Operation::put("x", if client % 2 == 0 { "a" } else { "b" });
        completed(&mut history, client, put, (client, 100), Response::Done);
    }
    for (offset, seen) in ["a", "b", "a"].into_iter().enumerate() {
        let time = 200 + 2 * offset as u64;
        let read = Response::Value(some(seen));
        completed(
            &mut history,
            12,
            Operation::get("x"),
            (time, time + 1),
            read,
        );
    }
    history
}

/// A put of "a", then sixteen timed-out swaps from "a" to "a", then a read of "a" and a read
/// that finds the key absent, which nothing deleted. A swap that changes nothing may as well not
/// have happened; explored anyway, every subset of the sixteen would be tried.
fn swaps_that_change_nothing_then_a_read_of_absent() -> History {
    let mut history = History::new();
    completed(
        &mut history,
        0,
        Operation::put("x", "a"),
        (0, 1),
        Response::Done,
    );
    for client in 1..=16 {
        let id = history.call(client, Operation::cas("x", Some("a"), "a"), 1 + client);
        history.time_out(id);
    }
    completed(
        &mut history,
        0,
        Operation::get("x"),
        (20, 21),
        Response::Value(some("a")),
    );
    completed(
        &mut history,
        0,
        Operation::get("x"),
        (22, 23),
        Response::Value(None),
    );
    history
}

/// Sixteen timed-out puts of the same value "a", then seventeen reads of "a", each after a
/// delete: each read needs one more of the puts, and there are only sixteen. Which puts are used
/// up does not matter, only how many; raft-sim's search explores them as distinct, every subset.
fn sixteen_equal_timed_out_puts_and_seventeen_reads() -> History {
    let mut history = History::new();
    for client in 0..16 {
        let id = history.call(client, Operation::put("x", "a"), client);
        history.time_out(id);
    }
    for round in 0..17 {
        let time = 100 + 10 * round;
        completed(
            &mut history,
            16,
            Operation::delete("x"),
            (time, time + 1),
            Response::Done,
        );
        let read = Response::Value(some("a"));
        completed(
            &mut history,
            16,
            Operation::get("x"),
            (time + 2, time + 3),
            read,
        );
    }
    history
}

/// The counterexample `history` is refuted with within `budget` steps, all of whose answers no
/// order explains are on key "x".
#[track_caller]
fn refuted_within(history: &History, budget: u64) -> raft_sim::Counterexample<Operation, Response> {
    match check_with_budget(history, budget) {
        Verdict::NotLinearizable(counterexample)
            if counterexample
                .core
                .iter()
                .all(|operation| operation.op.key() == "x") =>
        {
            counterexample
        }
        other => panic!("expected a violation on \"x\" within {budget} steps, got {other}"),
    }
}

/// Memoisation: about 50 thousand steps (12! orders, 2^12 configurations).
#[test]
fn orders_reaching_the_same_configuration_are_explored_once() {
    refuted_within(&concurrent_puts_then_reads_no_order_allows(), 500_000);
}

/// Leaving out timed-out operations that change nothing: under 100 steps (2^16 subsets of the
/// swaps otherwise).
#[test]
fn timed_out_operations_that_change_nothing_are_never_placed() {
    refuted_within(&swaps_that_change_nothing_then_a_read_of_absent(), 100_000);
}

/// Equal timed-out writes are interchangeable, so only the earliest called of those not placed
/// yet is tried: about a hundred steps (1.8 million when every subset of them was).
#[test]
fn sixteen_equal_timed_out_puts_cannot_serve_seventeen_reads() {
    refuted_within(&sixteen_equal_timed_out_puts_and_seventeen_reads(), 10_000);
}

/// Prints how many steps the histories above take; for measuring, with a ceiling of 20 million
/// (a violation found is then reduced with a budget that grows with the ceiling, which takes
/// most of the time).
#[test]
#[ignore = "a measurement, not a check"]
fn measure_steps() {
    const CEILING: u64 = 20_000_000;
    for (name, history) in [
        (
            "53 operations, read of nothing",
            sixteen_timeouts_and_a_read_of_nothing(true),
        ),
        (
            "53 operations, linearizable",
            sixteen_timeouts_and_a_read_of_nothing(false),
        ),
        ("1000 operations", thousand_operations_with_late_writes()),
        (
            "1000 operations, a stale read",
            thousand_operations_with_a_stale_read(),
        ),
        (
            "twelve concurrent puts",
            concurrent_puts_then_reads_no_order_allows(),
        ),
        (
            "swaps that change nothing",
            swaps_that_change_nothing_then_a_read_of_absent(),
        ),
        (
            "equal timed-out puts",
            sixteen_equal_timed_out_puts_and_seventeen_reads(),
        ),
    ] {
        let started = Instant::now();
        let verdict = check(&history);
        let elapsed = started.elapsed();
        let steps = steps_to_decide(&history, CEILING).map(|(steps, _)| steps);
        let verdict = match verdict {
            Verdict::Linearizable => "linearizable",
            Verdict::NotLinearizable(_) => "violation",
            Verdict::Undecided { .. } => "undecided",
        };
        eprintln!(
            "{name}: {verdict} with the default budget in {elapsed:?}; decided in {steps:?} steps"
        );
    }
}
