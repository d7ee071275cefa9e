//! The sequential specification a history is checked against: the user's [`Model`], and the
//! operations of a simulated cluster's history ([`ClusterOp`], [`ClusterRet`]).

use crate::register::Register;
use raft_core::node::StateMachine;
use std::fmt::Debug;
use std::hash::Hash;

/// A sequential model of the replicated service: what one copy, applying one operation at a
/// time, would answer. The linearizability checker looks for an order of a history's
/// operations, consistent with real time, in which every answer is the one this model gives.
///
/// `step` must be a pure function of the state and the operation. An operation is a read when
/// its step leaves the state as it was; nothing else needs to be said about it.
///
/// # Example: a counter
///
/// ```
/// use raft_sim::Model;
///
/// struct Counter;
///
/// impl Model for Counter {
///     type Op = Option<i64>; // add this much, or read (None)
///     type Ret = i64; // the value after the operation
///     type State = i64;
///     fn init(&self) -> i64 {
///         0
///     }
///     fn step(&self, state: &i64, op: &Option<i64>) -> (i64, i64) {
///         let next = state + op.unwrap_or(0);
///         (next, next)
///     }
/// }
/// ```
pub trait Model {
    /// An operation a client can make.
    type Op: Clone + Debug;
    /// What an operation answers.
    type Ret: Clone + Debug + PartialEq;
    /// The model's state. Equal states must have equal futures: the checker explores each
    /// (operations placed, state) configuration once.
    type State: Clone + Eq + Hash + Debug;

    /// The state before any operation.
    fn init(&self) -> Self::State;

    /// Applies `op` to `state`: the state after it, and what it answers.
    fn step(&self, state: &Self::State, op: &Self::Op) -> (Self::State, Self::Ret);

    /// For P-compositionality: the part of the state `op` touches, when the state is made of
    /// independent parts (the keys of a map) and every operation touches exactly one. Each
    /// part's operations are then checked on their own, from [`Model::init`], which is much
    /// faster on long histories. `None` (the default) for an operation that may touch several
    /// parts; a history with any such operation is checked as a whole.
    fn partition(&self, op: &Self::Op) -> Option<u64> {
        let _ = op;
        None
    }

    /// For the register rules: when each part of the state (each part [`Model::partition`]
    /// names, or the whole state) is one register holding one value, what `op`, with `answer`
    /// (`None`: its outcome is unknown), does to it ([`Register`] states the contract). `None`
    /// (the default) when it cannot be said; a part with any such operation is left to the
    /// search alone.
    ///
    /// When every operation of a part is described, the checker, before searching it, leaves
    /// out the operations of unknown outcome that never change the register or leave a value
    /// no operation of the part needs, and refutes the part outright when an answer needs a
    /// value that no operation invoked before it returned leaves, or when two values, each
    /// left by one operation only, must each have been held before the other. The verdict is
    /// that of the search; only sooner (see [`crate::check`]). Values must be exact: the
    /// value's bytes or a canonical encoding of it, never a hash, which could make two values
    /// equal and a refutation wrong. So must the parts: each part must be exactly one register,
    /// so [`Model::partition`] must give two registers (two keys) different numbers, never a
    /// hash that two keys could share (number the keys as you meet them instead). A part whose
    /// operations [`Model::partition`] numbers differently (the whole history, checked as one
    /// when some operation has no number) gets the search alone.
    ///
    /// # Example: a register of text
    ///
    /// ```
    /// use raft_sim::{Model, Register};
    ///
    /// #[derive(Clone, Debug)]
    /// enum Op {
    ///     Put(String),
    ///     Get,
    ///     /// Compare-and-swap: from the first (`None`: absent) to the second.
    ///     Cas(Option<String>, String),
    /// }
    ///
    /// #[derive(Clone, Debug, PartialEq)]
    /// enum Ret {
    ///     Done,
    ///     Value(Option<String>),
    ///     Swapped(bool),
    /// }
    ///
    /// struct Text;
    ///
    /// impl Model for Text {
    ///     type Op = Op;
    ///     type Ret = Ret;
    ///     type State = Option<String>;
    ///     fn init(&self) -> Option<String> {
    ///         None
    ///     }
    ///     fn step(&self, state: &Option<String>, op: &Op) -> (Option<String>, Ret) {
    ///         match op {
    ///             Op::Put(value) => (Some(value.clone()), Ret::Done),
    ///             Op::Get => (state.clone(), Ret::Value(state.clone())),
    ///             Op::Cas(expect, new) if state == expect => (Some(new.clone()), Ret::Swapped(true)),
    ///             Op::Cas(..) => (state.clone(), Ret::Swapped(false)),
    ///         }
    ///     }
    ///     fn register(&self, op: &Op, answer: Option<&Ret>) -> Option<Register> {
    ///         let bytes = |value: &Option<String>| value.clone().map(String::into_bytes);
    ///         Some(match (op, answer) {
    ///             (Op::Put(value), _) => Register::Write(Some(value.clone().into_bytes())),
    ///             (Op::Get, Some(Ret::Value(seen))) => Register::Read(bytes(seen)),
    ///             (Op::Get, _) => Register::Nothing,
    ///             // A failed swap says the register did not hold `expect`, not what it held.
    ///             (Op::Cas(..), Some(Ret::Swapped(false))) => return None,
    ///             (Op::Cas(expect, new), _) => Register::Swap {
    ///                 expect: bytes(expect),
    ///                 new: Some(new.clone().into_bytes()),
    ///             },
    ///         })
    ///     }
    /// }
    ///
    /// assert_eq!(Text.register(&Op::Get, None), Some(Register::Nothing));
    /// ```
    fn register(&self, op: &Self::Op, answer: Option<&Self::Ret>) -> Option<Register> {
        let _ = (op, answer);
        None
    }
}

/// An operation of a simulated cluster's history: a command written through the log, or a
/// query read from a state machine.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ClusterOp<C, Q> {
    /// A [`StateMachine::Command`] proposed to the cluster.
    Write(C),
    /// A [`StateMachine::Query`] answered by a node.
    Read(Q),
}

/// What an operation of a simulated cluster's history answered.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ClusterRet<R, A> {
    /// The [`StateMachine::Response`] to a command.
    Write(R),
    /// The [`StateMachine::QueryResponse`] to a query.
    Read(A),
}

/// The operations of a history of state machine `SM`.
pub type OpOf<SM> = ClusterOp<<SM as StateMachine>::Command, <SM as StateMachine>::Query>;

/// The answers of a history of state machine `SM`.
pub type RetOf<SM> =
    ClusterRet<<SM as StateMachine>::Response, <SM as StateMachine>::QueryResponse>;

/// A [`Model`] made of the pure logic a state machine is built on: `write` applies a command to
/// one copy of the state and answers, `read` answers a query. From [`sequential`].
///
/// Linearizability then means: the replicated service behaves like that logic run one
/// operation at a time on one copy. That tests the replication (and the state machine's
/// wrapping of its logic), not the logic itself: check the logic's own invariants separately
/// (for example on the answers in [`crate::History::completed`]).
pub struct Sequential<S, C, Q, W, F> {
    init: S,
    write: W,
    read: F,
    partition: Option<Partition<C, Q>>,
}

/// What [`Sequential::partition_by`] keeps.
type Partition<C, Q> = Box<dyn Fn(&ClusterOp<C, Q>) -> Option<u64>>;

/// A [`Sequential`] model: `init` is the state before any operation.
///
/// ```
/// use raft_sim::{ClusterOp, ClusterRet, Model, sequential};
///
/// // A counter: commands add, the query reads.
/// let model = sequential(0i64, |n: &mut i64, add: &i64| { *n += add; *n }, |n: &i64, _: &()| *n);
/// let (state, answer) = model.step(&0, &ClusterOp::Write(5));
/// assert_eq!((state, answer), (5, ClusterRet::Write(5)));
/// ```
pub fn sequential<S, C, Q, R, A, W, F>(init: S, write: W, read: F) -> Sequential<S, C, Q, W, F>
where
    W: Fn(&mut S, &C) -> R,
    F: Fn(&S, &Q) -> A,
{
    Sequential {
        init,
        write,
        read,
        partition: None,
    }
}

impl<S, C, Q, W, F> Sequential<S, C, Q, W, F> {
    /// Says which part of the state each operation touches ([`Model::partition`]).
    pub fn partition_by(
        mut self,
        partition: impl Fn(&ClusterOp<C, Q>) -> Option<u64> + 'static,
    ) -> Self {
        self.partition = Some(Box::new(partition));
        self
    }
}

impl<S, C, Q, R, A, W, F> Sequential<S, C, Q, W, F>
where
    W: Fn(&mut S, &C) -> R,
    F: Fn(&S, &Q) -> A,
{
    /// Says what each operation does to its part's register ([`Model::register`], whose
    /// contract `register` must keep: exact values, one register per part), so that the
    /// checker's register rules apply to this model. Call it last: it returns the model
    /// wrapped.
    ///
    /// ```
    /// use raft_sim::{ClusterOp, ClusterRet, Model, Register, sequential};
    ///
    /// // One register of text: commands overwrite it, the query reads it.
    /// let model = sequential(
    ///     String::new(),
    ///     |text: &mut String, new: &String| *text = new.clone(),
    ///     |text: &String, _: &()| text.clone(),
    /// )
    /// .register_by(|op, answer| match (op, answer) {
    ///     (ClusterOp::Write(new), _) => Some(Register::Write(Some(new.clone().into_bytes()))),
    ///     (ClusterOp::Read(()), Some(ClusterRet::Read(seen))) => {
    ///         Some(Register::Read(Some(seen.clone().into_bytes())))
    ///     }
    ///     (ClusterOp::Read(()), _) => Some(Register::Nothing),
    /// });
    /// assert_eq!(model.register(&ClusterOp::Read(()), None), Some(Register::Nothing));
    /// ```
    pub fn register_by<G>(self, register: G) -> Registered<Self, G>
    where
        G: Fn(&ClusterOp<C, Q>, Option<&ClusterRet<R, A>>) -> Option<Register>,
    {
        Registered {
            model: self,
            register,
        }
    }
}

/// A model whose [`Model::register`] is a function of the user's: from
/// [`Sequential::register_by`]. Everything else is the wrapped model's.
pub struct Registered<M, G> {
    model: M,
    register: G,
}

impl<M, G> Model for Registered<M, G>
where
    M: Model,
    G: Fn(&M::Op, Option<&M::Ret>) -> Option<Register>,
{
    type Op = M::Op;
    type Ret = M::Ret;
    type State = M::State;

    fn init(&self) -> M::State {
        self.model.init()
    }

    fn step(&self, state: &M::State, op: &M::Op) -> (M::State, M::Ret) {
        self.model.step(state, op)
    }

    fn partition(&self, op: &M::Op) -> Option<u64> {
        self.model.partition(op)
    }

    fn register(&self, op: &M::Op, answer: Option<&M::Ret>) -> Option<Register> {
        (self.register)(op, answer)
    }
}

impl<S, C, Q, R, A, W, F> Model for Sequential<S, C, Q, W, F>
where
    S: Clone + Eq + Hash + Debug,
    C: Clone + Debug,
    Q: Clone + Debug,
    R: Clone + Debug + PartialEq,
    A: Clone + Debug + PartialEq,
    W: Fn(&mut S, &C) -> R,
    F: Fn(&S, &Q) -> A,
{
    type Op = ClusterOp<C, Q>;
    type Ret = ClusterRet<R, A>;
    type State = S;

    fn init(&self) -> S {
        self.init.clone()
    }

    fn step(&self, state: &S, op: &ClusterOp<C, Q>) -> (S, ClusterRet<R, A>) {
        match op {
            ClusterOp::Write(command) => {
                let mut next = state.clone();
                let answer = (self.write)(&mut next, command);
                (next, ClusterRet::Write(answer))
            }
            ClusterOp::Read(query) => (state.clone(), ClusterRet::Read((self.read)(state, query))),
        }
    }

    fn partition(&self, op: &ClusterOp<C, Q>) -> Option<u64> {
        self.partition.as_ref().and_then(|partition| partition(op))
    }
}
