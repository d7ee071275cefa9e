//! The linearizability checker against a brute-force one on small random histories, and on the
//! shapes of history that used to exhaust its step budget: many timed-out writes whose values
//! are read long after the client gave up.

use raft_tests::linearizability::{
    CheckResult, DEFAULT_STEP_BUDGET, History, Operation, Response, TimedOperation,
    apply_to_map as apply, brute_force_linearizable, check, check_with_budget,
};
use raft_tests::rng::SplitMix64;
use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

type Op = TimedOperation;

fn record(ops: &[Op]) -> History {
    History::from_timed(ops)
}

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

/// Runs `count` histories from `draw` through both checkers and returns how many each verdict got.
fn differential(count: u64, mut draw: impl FnMut(&mut Random) -> Vec<Op>) -> (usize, usize) {
    let (mut accepted, mut rejected) = (0, 0);
    for seed in 0..count {
        let mut random = Random(SplitMix64::new(seed));
        let ops = draw(&mut random);
        let expected = brute_force_linearizable(&ops);
        let verdict = check(&record(&ops));
        assert!(
            !matches!(verdict, CheckResult::Undecided { .. }),
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
    (accepted, rejected)
}

#[track_caller]
fn assert_both_verdicts_exercised((accepted, rejected): (usize, usize), each: usize) {
    assert!(
        accepted >= each && rejected >= each,
        "{accepted} accepted, {rejected} rejected"
    );
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
    let verdicts = differential(3000, |random| {
        let mut ops = generate(random, SMALL);
        let values = Values {
            unique: true,
            written: ops.len(),
        };
        for _ in 0..1 + random.below(3) {
            mutate(random, &mut ops, &values);
        }
        ops
    });
    assert_both_verdicts_exercised(verdicts, 500);
}

#[test]
fn agrees_with_brute_force_on_generated_histories_with_repeated_values() {
    let shape = Shape {
        unique_values: false,
        keys: 2,
        ..SMALL
    };
    let verdicts = differential(3000, |random| {
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
    for unique_values in [true, false] {
        let shape = Shape {
            operations: 7,
            unique_values,
            ..SMALL
        };
        let verdicts = differential(3000, |random| scramble(random, shape));
        assert_both_verdicts_exercised(verdicts, 100);
    }
}

// ---- the histories that used to exhaust the budget ---------------------------------------------

/// Fifty-three operations on one key (before: undecided within the default budget; refuting it
/// took 12.5 million steps). Sixteen writes of distinct values time out; between them,
/// other clients write and read back values of their own; then one read returns a value no
/// operation wrote; only after it do the timed-out values show up, each read once. While the
/// timed-out writes are in doubt, every subset of them could have taken effect before the bad read.
fn sixteen_timeouts_and_a_read_of_nothing(bad_read: bool) -> History {
    let mut history = History::new();
    let mut time = 0;
    let mut tick = || {
        time += 10;
        time
    };
    for round in 0..16 {
        let id = history.call(1, Operation::put("x", format!("late {round}")), tick());
        history.time_out(id);
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
/// Linearizable. Before timed-out operations were only placed right before a read of what they
/// leave, deciding it took more than 200 million steps.
fn thousand_operations_with_late_writes() -> History {
    let shape = Shape {
        clients: 5,
        operations: 1000,
        keys: 1,
        unique_values: true,
        timeout_percent: 15,
        settle_percent: 1,
    };
    record(&generate(&mut Random(SplitMix64::new(0)), shape))
}

/// The fewest steps in which `history` is decided, and that verdict: the search is deterministic,
/// so being decided within a budget is monotone in the budget.
fn steps_to_decide(history: &History, ceiling: u64) -> Option<(u64, CheckResult)> {
    let decided = |budget| {
        let verdict = check_with_budget(history, budget);
        (!matches!(verdict, CheckResult::Undecided { .. })).then_some(verdict)
    };
    let verdict = decided(ceiling)?;
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

#[test]
fn read_of_an_unwritten_value_among_sixteen_timed_out_writes_is_refuted_quickly() {
    let history = sixteen_timeouts_and_a_read_of_nothing(true);
    let started = Instant::now();
    let verdict = check(&history);
    let elapsed = started.elapsed();
    match &verdict {
        CheckResult::Violation { key, explanation } => {
            assert_eq!(key, "x");
            assert!(
                explanation.contains(
                    "needs \"x\" to hold \"nothing wrote this\", yet no operation on it called \
                     before #36 returned writes that value"
                ),
                "{explanation}"
            );
        }
        other => panic!("expected a violation, got {other:?}"),
    }
    let (steps, _) = steps_to_decide(&history, DEFAULT_STEP_BUDGET).expect("decided");
    eprintln!("53 operations, 16 timed out, a read of nothing: {steps} steps, {elapsed:?}");
    assert!(steps < DEFAULT_STEP_BUDGET / 100, "{steps} steps");

    // Without the bad read it is linearizable, and as cheap.
    let history = sixteen_timeouts_and_a_read_of_nothing(false);
    let (steps, verdict) = steps_to_decide(&history, DEFAULT_STEP_BUDGET).expect("decided");
    assert!(verdict.is_linearizable(), "{verdict}");
    assert!(steps < DEFAULT_STEP_BUDGET / 100, "{steps} steps");
}

#[test]
fn thousand_operations_with_late_writes_are_decided_within_the_default_budget() {
    let history = thousand_operations_with_late_writes();
    let started = Instant::now();
    let verdict = check(&history);
    let elapsed = started.elapsed();
    assert!(verdict.is_linearizable(), "{verdict}");
    let (steps, _) = steps_to_decide(&history, DEFAULT_STEP_BUDGET).expect("decided");
    eprintln!("1000 operations with late writes: {steps} steps, {elapsed:?}");
    assert!(steps < DEFAULT_STEP_BUDGET / 5, "{steps} steps");
}

/// Prints how many steps the two histories above take; for measuring, with a large ceiling.
#[test]
#[ignore = "a measurement, not a check"]
fn measure_steps() {
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
    ] {
        let started = Instant::now();
        let verdict = check_with_budget(&history, 400_000_000);
        let elapsed = started.elapsed();
        let steps = steps_to_decide(&history, 400_000_000).map(|(steps, _)| steps);
        let verdict = match verdict {
            CheckResult::Linearizable => "linearizable",
            CheckResult::Violation { .. } => "violation",
            CheckResult::Undecided { .. } => "undecided",
        };
        eprintln!("{name}: {verdict}, {steps:?} steps, {elapsed:?}");
    }
}
