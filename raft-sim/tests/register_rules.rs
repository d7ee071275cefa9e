//! The register rules of `Model::register` on a map of text registers (put, get, delete,
//! compare-and-swap): the checker with them agrees with the plain search and with a
//! brute-force check by the definition on thousands of small random histories, and decides
//! the long histories that the search alone cannot.
//!
//! `RAFT_SIM_SEEDS=n` runs `n` random histories per differential test instead of 2,000.

use raft_sim::{History, Model, Recorded, Refutation, Register, Verdict, check};
use std::collections::BTreeMap;
use std::time::Instant;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Op {
    Put(u8, String),
    Get(u8),
    Delete(u8),
    /// Sets the key to the second value if it holds the first (`None`: absent).
    Cas(u8, Option<String>, String),
}

impl Op {
    fn key(&self) -> u8 {
        match self {
            Op::Put(key, _) | Op::Get(key) | Op::Delete(key) | Op::Cas(key, ..) => *key,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Ret {
    Done,
    Value(Option<String>),
    /// Whether it swapped, and the value it found.
    Cas {
        swapped: bool,
        current: Option<String>,
    },
}

/// A map of text registers, one part per key; with `rules`, it describes its operations for
/// the register rules.
struct Kv {
    rules: bool,
}

impl Model for Kv {
    type Op = Op;
    type Ret = Ret;
    type State = BTreeMap<u8, String>;

    fn init(&self) -> Self::State {
        BTreeMap::new()
    }

    fn step(&self, state: &Self::State, op: &Op) -> (Self::State, Ret) {
        let mut next = state.clone();
        let ret = match op {
            Op::Put(key, value) => {
                next.insert(*key, value.clone());
                Ret::Done
            }
            Op::Get(key) => Ret::Value(state.get(key).cloned()),
            Op::Delete(key) => {
                next.remove(key);
                Ret::Done
            }
            Op::Cas(key, expect, new) => {
                let current = state.get(key).cloned();
                let swapped = current == *expect;
                if swapped {
                    next.insert(*key, new.clone());
                }
                Ret::Cas { swapped, current }
            }
        };
        (next, ret)
    }

    fn partition(&self, op: &Op) -> Option<u64> {
        Some(u64::from(op.key()))
    }

    fn register(&self, op: &Op, answer: Option<&Ret>) -> Option<Register> {
        if !self.rules {
            return None;
        }
        let bytes = |value: &Option<String>| value.clone().map(String::into_bytes);
        Some(match (op, answer) {
            (Op::Put(_, value), _) => Register::Write(Some(value.clone().into_bytes())),
            (Op::Delete(_), _) => Register::Write(None),
            (Op::Get(_), Some(Ret::Value(seen))) => Register::Read(bytes(seen)),
            (Op::Get(_), _) => Register::Nothing,
            (
                Op::Cas(..),
                Some(Ret::Cas {
                    swapped: false,
                    current,
                }),
            ) => Register::Read(bytes(current)),
            (Op::Cas(_, expect, new), _) => Register::Swap {
                expect: bytes(expect),
                new: Some(new.clone().into_bytes()),
            },
        })
    }
}

/// One operation of a generated history: who, what, when it was invoked, and its answer and
/// return time (`None`: unknown outcome).
#[derive(Clone, Debug)]
struct Timed {
    client: usize,
    op: Op,
    invoked: u64,
    ended: Option<(Ret, u64)>,
}

/// A `History` of `ops`, events in time order (every time is distinct).
fn history(ops: &[Timed]) -> History<Op, Ret> {
    let mut events: Vec<(u64, usize)> = Vec::new();
    for (index, op) in ops.iter().enumerate() {
        events.push((op.invoked, index));
        if let Some((_, returned)) = &op.ended {
            events.push((*returned, index));
        }
    }
    events.sort();
    let mut history = History::new();
    let mut ids = BTreeMap::new();
    for (time, index) in events {
        let op = &ops[index];
        match (ids.get(&index), &op.ended) {
            (None, _) => {
                let id = history.invoke(format!("c{}", op.client), op.op.clone(), time);
                ids.insert(index, id);
            }
            (Some(&id), Some((ret, _))) => history.ok(id, ret.clone(), time),
            (Some(_), None) => {}
        }
    }
    for (index, op) in ops.iter().enumerate() {
        if let (Some(&id), None) = (ids.get(&index), &op.ended) {
            history.unknown(id);
        }
    }
    history
}

/// Linearizability by the definition: some order of the operations, each after every one that
/// returned before it was invoked, with every operation that returned in it and answering what
/// the model answers, and any of unknown outcome in it or not.
fn brute_force(history: &History<Op, Ret>) -> bool {
    fn extend(
        history: &History<Op, Ret>,
        placed: &mut Vec<bool>,
        state: &BTreeMap<u8, String>,
    ) -> bool {
        let operations = history.operations();
        let returned = |index: usize| match &operations[index].outcome {
            Recorded::Ok { return_event, .. } => Some(*return_event),
            _ => None,
        };
        if (0..operations.len()).all(|index| placed[index] || returned(index).is_none()) {
            return true;
        }
        let model = Kv { rules: false };
        for index in 0..operations.len() {
            if placed[index] {
                continue;
            }
            let invoked = operations[index].invoke_event;
            let blocked = (0..operations.len())
                .any(|other| !placed[other] && returned(other).is_some_and(|r| r < invoked));
            if blocked {
                continue;
            }
            let (next, ret) = model.step(state, &operations[index].op);
            if let Recorded::Ok { ret: expected, .. } = &operations[index].outcome
                && *expected != ret
            {
                continue;
            }
            placed[index] = true;
            let found = extend(history, placed, &next);
            placed[index] = false;
            if found {
                return true;
            }
        }
        false
    }
    extend(history, &mut vec![false; history.len()], &BTreeMap::new())
}

/// SplitMix64: the draws of the generators.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound.max(1) as u64) as usize
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
    /// The chance, each tick, that one timed-out request is settled (taking effect or not).
    settle_percent: usize,
}

/// Names the values writes write.
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
            ["a", "b"][random.below(2)].to_string()
        }
    }

    /// A value some write may write, one none writes, or absent.
    fn any(&self, random: &mut Random) -> Option<String> {
        match random.below(6) {
            0 => None,
            1 => Some("never".to_string()),
            _ if self.unique => Some(format!("v{}", 1 + random.below(self.written))),
            _ => Some(["a", "b"][random.below(2)].to_string()),
        }
    }
}

fn random_op(random: &mut Random, values: &mut Values, key: u8) -> Op {
    match random.below(100) {
        0..35 => Op::Put(key, values.next(random)),
        35..65 => Op::Get(key),
        65..75 => Op::Delete(key),
        _ => {
            let expect = values.any(random);
            Op::Cas(key, expect, values.next(random))
        }
    }
}

/// Random clients against a real map, one event per tick: every operation takes effect
/// inside its interval, so the history is linearizable. A timed-out request takes effect at
/// some later tick, or never; some requests are still in flight at the end.
fn generate(random: &mut Random, shape: Shape) -> Vec<Timed> {
    enum Client {
        Idle,
        Invoked(usize),
        Applied(usize, Ret),
    }
    let model = Kv { rules: false };
    let mut values = Values {
        unique: shape.unique_values,
        written: 0,
    };
    let mut state = model.init();
    let mut ops: Vec<Timed> = Vec::new();
    let mut clients: Vec<Client> = (0..shape.clients).map(|_| Client::Idle).collect();
    let mut ghosts: Vec<usize> = Vec::new();
    let mut time = 0;
    while ops.len() < shape.operations || clients.iter().any(|c| !matches!(c, Client::Idle)) {
        time += 1;
        if !ghosts.is_empty() && random.percent(shape.settle_percent) {
            let ghost = ghosts.swap_remove(random.below(ghosts.len()));
            if random.percent(60) {
                state = model.step(&state, &ops[ghost].op).0;
            }
            continue;
        }
        let client = random.below(shape.clients);
        clients[client] = match std::mem::replace(&mut clients[client], Client::Idle) {
            Client::Idle if ops.len() < shape.operations => {
                let key = random.below(shape.keys) as u8;
                ops.push(Timed {
                    client,
                    op: random_op(random, &mut values, key),
                    invoked: time,
                    ended: None,
                });
                Client::Invoked(ops.len() - 1)
            }
            Client::Idle => Client::Idle,
            Client::Invoked(index) if random.percent(shape.timeout_percent) => {
                ghosts.push(index);
                Client::Idle
            }
            Client::Invoked(index) => {
                let (next, ret) = model.step(&state, &ops[index].op);
                state = next;
                Client::Applied(index, ret)
            }
            Client::Applied(_, _) if random.percent(shape.timeout_percent) => Client::Idle,
            Client::Applied(index, ret) => {
                ops[index].ended = Some((ret, time));
                Client::Idle
            }
        };
    }
    ops
}

/// Replaces one answer with a random one of the right kind, or makes one operation's outcome
/// unknown, or leaves it in flight: the history may or may not stay linearizable.
fn mutate(random: &mut Random, ops: &mut [Timed], values: &Values) {
    let index = random.below(ops.len());
    let Some((ret, _)) = &mut ops[index].ended else {
        return;
    };
    match random.below(4) {
        0 => ops[index].ended = None,
        _ => match ret {
            Ret::Done => {}
            Ret::Value(seen) => *seen = values.any(random),
            Ret::Cas { swapped, current } => {
                *swapped = random.percent(50);
                *current = values.any(random);
            }
        },
    }
}

/// Makes one completed get return a value that a put or swap invoked before the get returned
/// writes: a stale read (or one from the future) more often than not.
fn make_a_read_stale(random: &mut Random, ops: &mut [Timed]) {
    let reads: Vec<usize> = (0..ops.len())
        .filter(|&index| matches!(ops[index].op, Op::Get(_)) && ops[index].ended.is_some())
        .collect();
    let Some(&read) = reads.get(random.below(reads.len())) else {
        return;
    };
    let (key, returned) = match &ops[read].ended {
        Some((_, returned)) => (ops[read].op.key(), *returned),
        None => return,
    };
    let written: Vec<String> = ops
        .iter()
        .filter(|op| op.op.key() == key && op.invoked < returned)
        .filter_map(|op| match &op.op {
            Op::Put(_, value) | Op::Cas(_, _, value) => Some(value.clone()),
            Op::Get(_) | Op::Delete(_) => None,
        })
        .collect();
    if let (Some(value), Some((ret, _))) = (
        written.get(random.below(written.len())).cloned(),
        &mut ops[read].ended,
    ) {
        *ret = Ret::Value(Some(value));
    }
}

fn seeds() -> u64 {
    std::env::var("RAFT_SIM_SEEDS")
        .ok()
        .and_then(|seeds| seeds.parse().ok())
        .unwrap_or(2_000)
}

/// Checks `draw`'s histories with the rules, without them, and by brute force; returns how
/// many were linearizable and how many not.
fn differential(name: &str, mut draw: impl FnMut(&mut Random) -> Vec<Timed>) -> (usize, usize) {
    let (mut yes, mut no) = (0, 0);
    for seed in 0..seeds() {
        let mut random = Random(seed);
        let ops = draw(&mut random);
        let history = history(&ops);
        let expected = brute_force(&history);
        let with_rules = check(&Kv { rules: true }, &history);
        let without = check(&Kv { rules: false }, &history);
        assert_eq!(
            with_rules.is_linearizable(),
            expected,
            "{name}, seed {seed}: with the rules {with_rules}\n{ops:#?}"
        );
        assert_eq!(
            without.is_linearizable(),
            expected,
            "{name}, seed {seed}: without the rules {without}\n{ops:#?}"
        );
        assert!(
            !matches!(with_rules, Verdict::Undecided { .. }),
            "{name}, seed {seed}"
        );
        if expected { yes += 1 } else { no += 1 }
    }
    (yes, no)
}

const SMALL: Shape = Shape {
    clients: 3,
    operations: 7,
    keys: 1,
    unique_values: true,
    timeout_percent: 20,
    settle_percent: 20,
};

#[test]
fn agrees_with_brute_force_with_unique_values_and_wrong_answers() {
    let (yes, no) = differential("unique values", |random| {
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
    assert!(
        yes > seeds() as usize / 10 && no > seeds() as usize / 10,
        "{yes} / {no}"
    );
}

#[test]
fn agrees_with_brute_force_with_a_stale_read() {
    let (yes, no) = differential("a stale read", |random| {
        let shape = Shape {
            clients: 2,
            timeout_percent: 15,
            ..SMALL
        };
        let mut ops = generate(random, shape);
        make_a_read_stale(random, &mut ops);
        ops
    });
    assert!(
        yes > seeds() as usize / 10 && no > seeds() as usize / 10,
        "{yes} / {no}"
    );
}

#[test]
fn agrees_with_brute_force_with_repeated_values_on_two_keys() {
    let (yes, no) = differential("repeated values", |random| {
        let shape = Shape {
            unique_values: false,
            keys: 2,
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
    assert!(
        yes > seeds() as usize / 10 && no > seeds() as usize / 10,
        "{yes} / {no}"
    );
}

// ---- the histories the search alone cannot decide ------------------------------------------

/// Fifty-three operations on one key. Sixteen puts of distinct values time out; between them,
/// other clients put and read back values of their own; then one read returns a value no
/// operation wrote (or, when `bad_read` is false, the last value written); only after it are
/// the timed-out values read, each once. Every subset of the timed-out puts could have taken
/// effect before the bad read.
fn sixteen_timeouts_and_a_read_of_nothing(bad_read: bool) -> Vec<Timed> {
    let mut ops = Vec::new();
    let mut time = 0;
    let mut tick = || {
        time += 10;
        time
    };
    let done =
        |ops: &mut Vec<Timed>, client: usize, op: Op, ret: Ret, tick: &mut dyn FnMut() -> u64| {
            let invoked = tick();
            ops.push(Timed {
                client,
                op,
                invoked,
                ended: Some((ret, tick())),
            });
        };
    for round in 0..16 {
        // Timed out, or (one in three) still in flight at the end.
        let invoked = tick();
        ops.push(Timed {
            client: 1,
            op: Op::Put(0, format!("late {round}")),
            invoked,
            ended: None,
        });
        if round % 4 != 3 {
            done(
                &mut ops,
                2,
                Op::Put(0, format!("own {round}")),
                Ret::Done,
                &mut tick,
            );
        }
        if round % 2 == 0 {
            let seen = Ret::Value(Some(format!("own {round}")));
            done(&mut ops, 2, Op::Get(0), seen, &mut tick);
        }
    }
    let nothing = if bad_read {
        "nothing wrote this"
    } else {
        "own 14"
    };
    let seen = Ret::Value(Some(nothing.to_string()));
    done(&mut ops, 3, Op::Get(0), seen, &mut tick);
    for round in 0..16 {
        let seen = Ret::Value(Some(format!("late {round}")));
        done(&mut ops, 3, Op::Get(0), seen, &mut tick);
    }
    ops
}

/// A thousand operations on one key from five clients, about a quarter of them of unknown
/// outcome, their writes taking effect late (often tens of operations later) or never, and
/// read by others; unique values. Linearizable.
fn thousand_operations() -> Vec<Timed> {
    let shape = Shape {
        clients: 5,
        operations: 1000,
        keys: 1,
        unique_values: true,
        timeout_percent: 15,
        settle_percent: 1,
    };
    generate(&mut Random(0), shape)
}

/// The thousand operations, with one read three quarters of the way through returning the
/// value read twenty reads earlier instead, as a lagging replica might.
fn thousand_operations_with_a_stale_read() -> Vec<Timed> {
    let mut ops = thousand_operations();
    let reads: Vec<usize> = (0..ops.len())
        .filter(|&index| matches!(ops[index].ended, Some((Ret::Value(Some(_)), _))))
        .collect();
    let (earlier, stale) = (reads[reads.len() * 3 / 4 - 20], reads[reads.len() * 3 / 4]);
    let old = ops[earlier].ended.clone().map(|(ret, _)| ret);
    if let (Some((ret, _)), Some(old)) = (&mut ops[stale].ended, old) {
        assert_ne!(*ret, old, "the two reads saw the same value");
        *ret = old;
    }
    ops
}

/// Rule 1 (an answer needing a value nothing invoked before it returned leaves), and the same
/// history with a good read accepted.
#[test]
fn an_answer_needing_a_value_nothing_wrote_is_refuted_before_the_search() {
    let history = history(&sixteen_timeouts_and_a_read_of_nothing(true));
    let started = Instant::now();
    let verdict = check(&Kv { rules: true }, &history);
    eprintln!("53 operations, a read of nothing: {:?}", started.elapsed());
    match verdict {
        Verdict::NotLinearizable(counterexample) => {
            assert!(
                matches!(
                    &counterexample.refutation,
                    Refutation::UnwrittenValue(why) if why.contains("\"nothing wrote this\"")
                ),
                "{counterexample}"
            );
            assert_eq!(counterexample.core.len(), 1, "{counterexample}");
        }
        other => panic!("expected a violation, got {other}"),
    }
    let verdict = check(
        &Kv { rules: true },
        &self::history(&sixteen_timeouts_and_a_read_of_nothing(false)),
    );
    assert!(verdict.is_linearizable(), "{verdict}");
}

/// Rule 2 (a value left by one operation only is held for one unbroken stretch): the search
/// alone stays undecided on it.
#[test]
fn a_stale_read_among_a_thousand_operations_is_refuted_before_the_search() {
    let ops = thousand_operations_with_a_stale_read();
    let unknown = ops.iter().filter(|op| op.ended.is_none()).count();
    assert!(unknown > 200, "{unknown} operations of unknown outcome");
    let history = history(&ops);
    let started = Instant::now();
    let verdict = check(&Kv { rules: true }, &history);
    eprintln!("1000 operations, a stale read: {:?}", started.elapsed());
    match verdict {
        Verdict::NotLinearizable(counterexample) => {
            assert!(
                matches!(counterexample.refutation, Refutation::ValueHeldTwice(_)),
                "{counterexample}"
            );
            eprintln!("{counterexample}");
        }
        other => panic!("expected a violation, got {other}"),
    }
}

/// A long history with many late writes, accepted within the default budget: rule 3 (leaving
/// out the operations of unknown outcome that leave a value nothing needs) decided it alone
/// before equal unknown operations were tried in call order only; with both, either suffices
/// (rule 3 on its own is tested in `register::tests`).
#[test]
fn a_thousand_operations_with_late_writes_are_accepted() {
    let history = history(&thousand_operations());
    let started = Instant::now();
    let verdict = check(&Kv { rules: true }, &history);
    eprintln!("1000 operations, linearizable: {:?}", started.elapsed());
    assert!(verdict.is_linearizable(), "{verdict}");
}

/// A model made with `sequential` gets the register rules through `register_by`: sixteen
/// timed-out writes and a read of a value none of them wrote are refuted by rule 1 before any
/// search, where the same model without it leaves the history to the search.
#[test]
fn a_sequential_model_gets_the_rules_through_register_by() {
    use raft_sim::{ClusterOp, ClusterRet, sequential};
    type Op = ClusterOp<String, ()>;
    type Ret = ClusterRet<(), String>;
    let text = || {
        sequential(
            String::new(),
            |text: &mut String, new: &String| *text = new.clone(),
            |text: &String, _: &()| text.clone(),
        )
    };
    let mut history: History<Op, Ret> = History::new();
    for i in 0..16 {
        let id = history.invoke(format!("c{i}"), ClusterOp::Write(format!("v{i}")), i);
        history.unknown(id);
    }
    let read = history.invoke("reader", ClusterOp::Read(()), 20);
    history.ok(read, ClusterRet::Read("nothing wrote this".to_string()), 21);

    let registered = text().register_by(|op: &Op, answer: Option<&Ret>| match (op, answer) {
        (ClusterOp::Write(new), _) => Some(Register::Write(Some(new.clone().into_bytes()))),
        (ClusterOp::Read(()), Some(ClusterRet::Read(seen))) => {
            Some(Register::Read(Some(seen.clone().into_bytes())))
        }
        (ClusterOp::Read(()), _) => Some(Register::Nothing),
    });
    match check(&registered, &history) {
        Verdict::NotLinearizable(counterexample) => assert!(
            matches!(counterexample.refutation, Refutation::UnwrittenValue(_)),
            "{counterexample}"
        ),
        other => panic!("expected a violation, got {other}"),
    }
    match check(&text(), &history) {
        Verdict::NotLinearizable(counterexample) => assert!(
            matches!(counterexample.refutation, Refutation::Search),
            "{counterexample}"
        ),
        other => panic!("expected a violation, got {other}"),
    }
}
