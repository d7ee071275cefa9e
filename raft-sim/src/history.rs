//! What clients did: every operation with its invocation, its completion and its outcome.

use std::fmt;

/// A client history: every operation, when it was invoked, and how and when it ended.
///
/// Events are numbered in the order they are recorded, which is their real-time order (a
/// simulation runs on one thread); operation `a` precedes `b` when `a` returned before `b` was
/// invoked. Times in milliseconds are kept for the reader.
///
/// ```
/// use raft_sim::History;
///
/// let mut history: History<&str, u64> = History::new();
/// let write = history.invoke("alice", "add 1", 10);
/// history.ok(write, 1, 20);
/// let lost = history.invoke("bob", "add 2", 15);
/// history.unknown(lost); // timed out: may or may not have taken effect
/// assert_eq!(history.operations().len(), 2);
/// ```
#[derive(Clone, Debug)]
pub struct History<Op, Ret> {
    operations: Vec<Operation<Op, Ret>>,
    /// The number of the next event (an invocation or a return).
    next_event: u64,
}

impl<Op, Ret> Default for History<Op, Ret> {
    fn default() -> Self {
        History {
            operations: Vec::new(),
            next_event: 0,
        }
    }
}

/// Names an operation of a [`History`], from [`History::invoke`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpId(pub usize);

/// One operation of a [`History`].
#[derive(Clone, Debug, PartialEq)]
pub struct Operation<Op, Ret> {
    /// The client that made it.
    pub client: String,
    /// What was asked.
    pub op: Op,
    /// When it was invoked, in milliseconds of simulated time.
    pub invoked_ms: u64,
    /// The number of its invocation event: the real-time order of events.
    pub invoke_event: u64,
    /// How it ended.
    pub outcome: Recorded<Ret>,
}

/// How an operation of a [`History`] ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Recorded<Ret> {
    /// Not ended yet; checked as [`Recorded::Unknown`].
    Pending,
    /// It took effect and answered `ret`.
    Ok {
        /// The answer.
        ret: Ret,
        /// When it returned, in milliseconds of simulated time.
        returned_ms: u64,
        /// The number of its return event.
        return_event: u64,
    },
    /// It was refused and had no effect; the checker leaves it out.
    Failed,
    /// It may have taken effect at any point after its invocation, or never (a timeout, a node
    /// that stopped under it).
    Unknown,
}

impl<Op, Ret> History<Op, Ret> {
    /// An empty history.
    pub fn new() -> Self {
        History::default()
    }

    /// Records that `client` invoked `op` at `now_ms`.
    pub fn invoke(&mut self, client: impl Into<String>, op: Op, now_ms: u64) -> OpId {
        let event = self.take_event();
        self.operations.push(Operation {
            client: client.into(),
            op,
            invoked_ms: now_ms,
            invoke_event: event,
            outcome: Recorded::Pending,
        });
        OpId(self.operations.len() - 1)
    }

    /// Records that operation `id` took effect and answered `ret` at `now_ms`.
    pub fn ok(&mut self, id: OpId, ret: Ret, now_ms: u64) {
        let event = self.take_event();
        self.end(
            id,
            Recorded::Ok {
                ret,
                returned_ms: now_ms,
                return_event: event,
            },
        );
    }

    /// Records that operation `id` was refused with no effect.
    pub fn failed(&mut self, id: OpId) {
        self.end(id, Recorded::Failed);
    }

    /// Records that operation `id` ended without telling whether it took effect.
    pub fn unknown(&mut self, id: OpId) {
        self.end(id, Recorded::Unknown);
    }

    /// Every operation, in the order of their invocations.
    pub fn operations(&self) -> &[Operation<Op, Ret>] {
        &self.operations
    }

    /// The operations that took effect, with their answers, in the order of their invocations.
    pub fn completed(&self) -> impl Iterator<Item = (&Op, &Ret)> {
        self.operations
            .iter()
            .filter_map(|operation| match &operation.outcome {
                Recorded::Ok { ret, .. } => Some((&operation.op, ret)),
                _ => None,
            })
    }

    /// The number of operations.
    pub fn len(&self) -> usize {
        self.operations.len()
    }

    /// Whether no operation was recorded.
    pub fn is_empty(&self) -> bool {
        self.operations.is_empty()
    }

    fn end(&mut self, id: OpId, outcome: Recorded<Ret>) {
        // An unknown id, or one that already ended, is ignored: recording never panics.
        if let Some(operation) = self.operations.get_mut(id.0)
            && matches!(operation.outcome, Recorded::Pending)
        {
            operation.outcome = outcome;
        }
    }

    fn take_event(&mut self) -> u64 {
        let event = self.next_event;
        self.next_event += 1;
        event
    }
}

impl<Op: fmt::Debug, Ret: fmt::Debug> fmt::Display for Operation<Op, Ret> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.outcome {
            Recorded::Ok {
                ret, returned_ms, ..
            } => write!(
                f,
                "[{:>6} .. {:>6} ms] {}: {:?} -> {:?}",
                self.invoked_ms, returned_ms, self.client, self.op, ret
            ),
            Recorded::Failed => write!(
                f,
                "[{:>6} ..        ms] {}: {:?} -> refused (no effect)",
                self.invoked_ms, self.client, self.op
            ),
            Recorded::Unknown | Recorded::Pending => write!(
                f,
                "[{:>6} ..        ms] {}: {:?} -> unknown (may take effect later, or never)",
                self.invoked_ms, self.client, self.op
            ),
        }
    }
}
