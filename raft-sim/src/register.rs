//! The register rules: facts every legal order of a part must respect when the part is one
//! register and the model says so ([`Model::register`](crate::Model::register)). They decide
//! some parts before the search, and leave the search less to do on the others.
//!
//! Every rule below assumes the contract of [`Register`], and reasons about a legal order of
//! the part: a total order of its operations, consistent with real time, in which every
//! operation that returned is placed and answers what the model answers, and an operation of
//! unknown outcome is placed at most once, anywhere after its invocation.
//!
//! 1. **An answer needing a value that no operation invoked before it returned leaves is a
//!    violation.** An operation that returned and needs the register to hold `v` (not absent)
//!    takes effect while it holds `v`; the register starts absent, so some other operation
//!    left `v` before, and that one was invoked before the first returned.
//! 2. **A value left by one operation only is held for one unbroken stretch.** When only `W`
//!    may leave `v`, the register holds `v` in a legal order from `W` to the next change and
//!    never again. `W` takes effect at the start of that stretch and every operation of the
//!    order that needs `v` inside it; the stretches of two such values are disjoint, so one
//!    comes wholly before the other. The operations certainly in every legal order are those
//!    that returned, and the only writer of a value one of them needs. If such an operation of
//!    `u`'s stretch returned before one of `v`'s was invoked, and the other way round too, no
//!    order exists. Such a pair exists whenever a cycle of these constraints does: the value
//!    of the cycle with the earliest first return and the value before it form one.
//! 3. **An operation of unknown outcome that never changes the register, or that leaves a
//!    value no operation of the part needs, may be left out.** Take a legal order; leave out
//!    the operations of unknown outcome that change nothing there (still legal). If `W` of
//!    unknown outcome leaves `v` and nothing needs `v`, look at what follows `W`: operations
//!    that reveal and change nothing ([`Register::Nothing`]), then one that cannot need `v`,
//!    so needs nothing: a [`Register::Write`], or the end of the order. Without `W`, these
//!    take effect as before and the write leaves the same state; the order stays legal, and
//!    leaving out an operation of unknown outcome keeps real time. So the part has a legal
//!    order exactly when it has one without these operations.

use std::collections::{BTreeMap, BTreeSet};

/// What an operation does to the register its part holds, as [`Model::register`] describes
/// it. A value is exact bytes; `None` is *absent*, the value at [`Model::init`].
///
/// "Takes effect" means: for an operation that returned, the model gives its answer; for one
/// of unknown outcome, the model changes the state. The contract, for every state reached by
/// the part's operations:
///
/// * the state is its register's value: two states hold equal values exactly when they are
///   equal, and [`Model::init`] holds `None`;
/// * each variant says in which states the operation takes effect and what it leaves there.
///
/// An operation whose answer the model gives in no state may be described in any way: no
/// legal order holds it.
///
/// [`Model::register`]: crate::Model::register
/// [`Model::init`]: crate::Model::init
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Register {
    /// Takes effect in every state, with the same answer, and leaves this value: a put, or
    /// a delete (`None`), returned or not.
    Write(Option<Vec<u8>>),
    /// Takes effect only while the register holds this value, and leaves it: a read that
    /// returned it, a compare-and-swap that returned having failed on it.
    Read(Option<Vec<u8>>),
    /// Takes effect only while the register holds `expect`, and leaves `new`: a
    /// compare-and-swap that returned having succeeded, or one of unknown outcome (which, when
    /// it fails, changes nothing, so only its successful form matters).
    Swap {
        /// The value it needs.
        expect: Option<Vec<u8>>,
        /// The value it leaves.
        new: Option<Vec<u8>>,
    },
    /// Changes nothing, and its answer, if it has one, is the same in every state: a read of
    /// unknown outcome.
    Nothing,
}

impl Register {
    /// The value the register must hold for the operation to take effect; `None`: any.
    fn needs(&self) -> Option<&Option<Vec<u8>>> {
        match self {
            Register::Read(value) | Register::Swap { expect: value, .. } => Some(value),
            Register::Write(_) | Register::Nothing => None,
        }
    }

    /// The value the operation leaves whenever it takes effect; `None`: it changes nothing.
    fn leaves(&self) -> Option<&Option<Vec<u8>>> {
        match self {
            Register::Write(value) | Register::Swap { new: value, .. } => Some(value),
            Register::Read(_) | Register::Nothing => None,
        }
    }
}

/// A register value as a report prints it: quoted text, bytes, or `absent`.
pub(crate) fn show(value: Option<&[u8]>) -> String {
    match value {
        None => "absent".to_string(),
        Some(bytes) => match std::str::from_utf8(bytes) {
            Ok(text) => format!("{text:?}"),
            Err(_) => format!("{bytes:?}"),
        },
    }
}

/// One operation of a part, as the rules see it.
#[derive(Clone, Debug)]
pub(crate) struct Access {
    pub(crate) register: Register,
    pub(crate) invoke_event: u64,
    /// `None` for an operation of unknown outcome.
    pub(crate) return_event: Option<u64>,
}

/// Rule 3: whether each operation may be left out before the search.
pub(crate) fn droppable(accesses: &[Access]) -> Vec<bool> {
    let needed: BTreeSet<&Option<Vec<u8>>> = accesses
        .iter()
        .filter_map(|access| access.register.needs())
        .collect();
    accesses
        .iter()
        .map(|access| {
            access.return_event.is_none()
                && access
                    .register
                    .leaves()
                    .is_none_or(|value| !needed.contains(value))
        })
        .collect()
}

/// What refutes a part before the search; indices are into the accesses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Refuted {
    /// Rule 1: `reader` returned needing `value`, and no other operation invoked before it
    /// returned leaves it.
    Unwritten { reader: usize, value: Vec<u8> },
    /// Rule 2: `first` and `second` are each left by one operation only, and real time puts
    /// each stretch before the other.
    HeldTwice { first: Stretch, second: Stretch },
}

/// Where a value left by one operation only is held: an unbroken stretch of any legal order,
/// in which these operations take effect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Stretch {
    pub(crate) value: Vec<u8>,
    /// The one operation that may leave it.
    pub(crate) writer: usize,
    /// The earliest return of an operation in the stretch, and that operation.
    pub(crate) first_return: (u64, usize),
    /// The latest invocation of an operation in the stretch, and that operation.
    pub(crate) last_call: (u64, usize),
}

/// Rules 1, then 2.
pub(crate) fn refute(accesses: &[Access]) -> Option<Refuted> {
    unwritten_value(accesses).or_else(|| value_held_twice(accesses))
}

/// The operations that may leave each value other than absent, by invocation.
fn writers_by_value(accesses: &[Access]) -> BTreeMap<&[u8], Vec<usize>> {
    let mut writers: BTreeMap<&[u8], Vec<usize>> = BTreeMap::new();
    for (index, access) in accesses.iter().enumerate() {
        if let Some(Some(value)) = access.register.leaves() {
            writers.entry(value.as_slice()).or_default().push(index);
        }
    }
    for indices in writers.values_mut() {
        indices.sort_by_key(|&index| accesses[index].invoke_event);
    }
    writers
}

/// Rule 1: the first operation (by invocation) whose answer needs a value that no other
/// operation invoked before it returned leaves.
pub(crate) fn unwritten_value(accesses: &[Access]) -> Option<Refuted> {
    let writers = writers_by_value(accesses);
    let mut readers: Vec<usize> = (0..accesses.len()).collect();
    readers.sort_by_key(|&index| accesses[index].invoke_event);
    readers.into_iter().find_map(|index| {
        let access = &accesses[index];
        let (Some(returned), Some(Some(needed))) = (access.return_event, access.register.needs())
        else {
            return None;
        };
        let written = writers.get(needed.as_slice()).is_some_and(|writers| {
            writers
                .iter()
                .take_while(|&&writer| accesses[writer].invoke_event < returned)
                .any(|&writer| writer != index)
        });
        (!written).then(|| Refuted::Unwritten {
            reader: index,
            value: needed.clone(),
        })
    })
}

/// Rule 2: two values left by one operation only each, whose stretches real time puts each
/// before the other.
pub(crate) fn value_held_twice(accesses: &[Access]) -> Option<Refuted> {
    let writers = writers_by_value(accesses);
    let only_writer = |value: &[u8]| match writers.get(value).map(Vec::as_slice) {
        Some(&[writer]) => Some(writer),
        _ => None,
    };
    let returned = |index: usize| accesses[index].return_event.is_some();
    let needed = |index: usize| match accesses[index].register.needs() {
        Some(Some(value)) => Some(value.as_slice()),
        Some(None) | None => None,
    };
    // The operations in every legal order: those that returned, and the only writer of a value
    // one of them needs.
    let mut certain: Vec<bool> = (0..accesses.len()).map(returned).collect();
    for index in 0..accesses.len() {
        if let Some(writer) = needed(index)
            .filter(|_| returned(index))
            .and_then(only_writer)
        {
            certain[writer] = true;
        }
    }
    let mut members: BTreeMap<&[u8], Vec<usize>> = BTreeMap::new();
    for index in (0..accesses.len()).filter(|&index| certain[index]) {
        let read = needed(index).filter(|&value| only_writer(value).is_some());
        let written = match accesses[index].register.leaves() {
            Some(Some(value)) if only_writer(value) == Some(index) => Some(value.as_slice()),
            _ => None,
        };
        for value in read.into_iter().chain(written) {
            members.entry(value).or_default().push(index);
        }
    }
    let mut stretches: Vec<Stretch> = members
        .into_iter()
        .filter_map(|(value, members)| {
            let first_return = members
                .iter()
                .filter_map(|&index| Some((accesses[index].return_event?, index)))
                .min()?;
            let last_call = members
                .iter()
                .map(|&index| (accesses[index].invoke_event, index))
                .max()?;
            Some(Stretch {
                value: value.to_vec(),
                writer: only_writer(value)?,
                first_return,
                last_call,
            })
        })
        .collect();

    // Some U other than V with U's first return before V's last call, and V's first return
    // before U's last call. Sorted by first return, the values that may play U for a given V
    // are a prefix; of each prefix, keep the two with the latest last calls (one may be V).
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
            return Some(Refuted::HeldTwice {
                first: u.clone(),
                second: v.clone(),
            });
        }
    }
    None
}

impl Refuted {
    /// The operations the refutation names.
    pub(crate) fn operations(&self) -> Vec<usize> {
        let mut named = match self {
            Refuted::Unwritten { reader, .. } => vec![*reader],
            Refuted::HeldTwice { first, second } => vec![
                first.first_return.1,
                second.last_call.1,
                second.first_return.1,
                first.last_call.1,
            ],
        };
        named.sort_unstable();
        named.dedup();
        named
    }

    /// What the refutation says, with `name` printing an operation.
    pub(crate) fn explain(&self, name: impl Fn(usize) -> String) -> String {
        match self {
            Refuted::Unwritten { reader, value } => format!(
                "{} needs the register to hold {}, yet no other operation of this part invoked \
                 before it returned leaves that value",
                name(*reader),
                show(Some(value)),
            ),
            Refuted::HeldTwice { first, second } => {
                let (u, v) = (show(Some(&first.value)), show(Some(&second.value)));
                format!(
                    "{u} and {v} are each left by one operation only ({} and {}), so the \
                     register held each for one unbroken stretch, one wholly before the other; \
                     yet {} (in the stretch of {u}) returned before {} (in that of {v}) was \
                     invoked, and {} (in that of {v}) returned before {} (in that of {u}) was \
                     invoked",
                    name(first.writer),
                    name(second.writer),
                    name(first.first_return.1),
                    name(second.last_call.1),
                    name(second.first_return.1),
                    name(first.last_call.1),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests;
