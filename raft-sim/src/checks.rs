//! The checks made once a run is over, besides linearizability and the store audit: every
//! answer that names a log index against the model replayed over the commands the replicas
//! applied, read-your-writes, and the bound of every bounded-staleness read.

use crate::SimStateMachine;
use crate::model::{ClusterOp, Model, OpOf, RetOf};
use crate::recording::AppliedLog;
use crate::world::{Acknowledged, BoundedRead, Capped, Observation};

/// Replays `model` over the commands applied, in index order (the one log every replica must
/// have applied), and checks each observation against it:
///
/// * a write acknowledged at index `i` must be the command applied at `i`, and its response the
///   model's answer after the commands before `i`;
/// * a read served at applied index `k` must answer what the model answers after the commands up
///   to `k` (whatever its consistency: a stale read is stale as of `k`, never wrong);
/// * an `AtLeast(token)` read must have been served at an applied index of at least `token`.
pub(crate) fn check_against_model<SM, M>(
    model: &M,
    applied: &AppliedLog<SM::Command>,
    observations: &[Observation<SM>],
) -> Vec<String>
where
    SM: SimStateMachine,
    M: Model<Op = OpOf<SM>, Ret = RetOf<SM>>,
{
    let mut problems = Capped::default();
    let mut report = |problem: String| problems.push(problem);
    for observation in observations {
        if let Some(token) = observation.at_least
            && observation.index < token
        {
            report(format!(
                "read-your-writes: {}'s AtLeast({}) read at {} ms was served at applied index \
                 {}, before its token",
                observation.client, token.0, observation.at_ms, observation.index.0
            ));
        }
    }
    // Writes are checked before their index is applied, reads after theirs.
    let mut ordered: Vec<&Observation<SM>> = observations.iter().collect();
    ordered.sort_by_key(|o| (o.index, !o.write));
    let mut pending = ordered.into_iter().peekable();
    let mut state = model.init();
    let check = |state: &M::State,
                 observation: &Observation<SM>,
                 report: &mut dyn FnMut(String)| {
        let (_, expected) = model.step(state, &observation.op);
        if expected != observation.ret {
            let what = if observation.write {
                format!("the write at index {}", observation.index.0)
            } else {
                format!("the read served at applied index {}", observation.index.0)
            };
            report(format!(
                "the state machine disagrees with the model: {}'s {:?} ({what}, answered at {} \
                 ms) got {:?}; the model answers {:?} after the commands before it",
                observation.client, observation.op, observation.at_ms, observation.ret, expected
            ));
        }
    };
    for (&index, entry) in &applied.first {
        while let Some(observation) =
            pending.next_if(|o| o.index < index || (o.write && o.index == index))
        {
            if observation.write && observation.index < index {
                report(format!(
                    "{}'s write {:?} was acknowledged at index {} at {} ms, but no replica \
                     applied a command there",
                    observation.client, observation.op, observation.index.0, observation.at_ms
                ));
                continue;
            }
            if observation.write
                && let ClusterOp::Write(command) = &observation.op
                && postcard::to_allocvec(command).ok().as_deref() != Some(entry.encoded.as_slice())
            {
                report(format!(
                    "{}'s write {command:?} was acknowledged at index {} at {} ms, but the \
                     replicas applied {:?} there: an acknowledged write was lost",
                    observation.client, index.0, observation.at_ms, entry.command
                ));
                continue;
            }
            check(&state, observation, &mut report);
        }
        state = model
            .step(&state, &ClusterOp::Write(entry.command.clone()))
            .0;
    }
    for observation in pending {
        if observation.write {
            report(format!(
                "{}'s write {:?} was acknowledged at index {} at {} ms, but no replica applied a \
                 command there",
                observation.client, observation.op, observation.index.0, observation.at_ms
            ));
        } else {
            check(&state, observation, &mut report);
        }
    }
    problems.lines("answers that disagree with the model")
}

/// How much later than the node's answer its client may see it, in milliseconds: the node and
/// the client are different hosts of the simulation, and an answer sent in one step of 1 ms may
/// reach its client in the next.
const DELIVERY_MS: u64 = 1;

/// The longest real time a node whose clock runs slow by `drift` (0 to 0.99) can count as
/// `bound_ms`, rounded up: `bound_ms` itself when clocks keep time.
fn real_bound_ms(bound_ms: u64, drift: f64) -> u64 {
    if drift <= 0.0 {
        return bound_ms;
    }
    let stretched = (bound_ms.saturating_add(1)) as f64 / (1.0 - drift.min(0.99));
    // Finite and positive: the conversion saturates at worst.
    stretched.ceil() as u64
}

/// Checks every bounded-staleness read against the guarantee of
/// `raft_core::node::Consistency::BoundedStaleness(bound)`: the data served reflects every
/// write acknowledged more than `bound` before the read is answered. Measured from the
/// clients, with every doubt on the node's side:
///
/// a read answered (as its client saw it) at `answered_ms` must have been served at an applied
/// index at least the index of every write whose acknowledgement reached its client at
/// `at_ms < answered_ms - bound_ms - 1`.
///
/// A write's acknowledgement reaches its client no earlier than the node acknowledged it, and
/// a read's answer reaches its client at most 1 ms (one step) after the node answered it, so
/// every such write was acknowledged more than `bound` before the node answered.
///
/// The node measures the age on its own clock. When clocks drift (`drift`, the largest
/// deviation of any clock's rate from real time, 0 without [`crate::Fault::ClockDrift`]), a
/// clock running slow by `drift` lets data `bound / (1 - drift)` old in real time pass as
/// `bound` old, so that longer bound (one more millisecond of the node's, for its rounding)
/// is what is checked.
pub(crate) fn check_bounded_staleness(
    acknowledged: &[Acknowledged],
    reads: &[BoundedRead],
    drift: f64,
) -> Vec<String> {
    // The acknowledgements in the order they arrived, each with the highest index acknowledged
    // up to it (and which write that was).
    let mut arrived: Vec<&Acknowledged> = acknowledged.iter().collect();
    arrived.sort_by_key(|write| write.at_ms);
    let mut highest: Vec<(u64, &Acknowledged)> = Vec::with_capacity(arrived.len());
    for write in arrived {
        let best = match highest.last() {
            Some(&(_, best)) if best.index >= write.index => best,
            _ => write,
        };
        highest.push((write.at_ms, best));
    }
    let mut problems = Capped::default();
    for read in reads {
        let cutoff = read
            .answered_ms
            .saturating_sub(real_bound_ms(read.bound_ms, drift))
            .saturating_sub(DELIVERY_MS);
        let before = highest.partition_point(|&(at_ms, _)| at_ms < cutoff);
        let Some(&(_, required)) = before.checked_sub(1).and_then(|i| highest.get(i)) else {
            continue;
        };
        if read.applied_index < required.index {
            problems.push(format!(
                "bounded staleness: n{} answered {}'s read with a bound of {} ms (invoked at {} \
                 ms, answered at {} ms) from applied index {}, but {}'s write {} at index {} was \
                 acknowledged at {} ms, {} ms before the answer",
                read.node.0,
                read.client,
                read.bound_ms,
                read.invoked_ms,
                read.answered_ms,
                read.applied_index.0,
                required.client,
                required.command,
                required.index.0,
                required.at_ms,
                read.answered_ms.saturating_sub(required.at_ms)
            ));
        }
    }
    problems.lines("bounded-staleness reads staler than their bound")
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft_core::{LogIndex, NodeId, Term};

    fn acknowledged(at_ms: u64, index: u64) -> Acknowledged {
        Acknowledged {
            client: "c1".to_string(),
            at_ms,
            index: LogIndex(index),
            term: Term(1),
            encoded: Vec::new(),
            command: format!("write {index}"),
        }
    }

    fn read(answered_ms: u64, bound_ms: u64, applied: u64) -> BoundedRead {
        BoundedRead {
            client: "c2".to_string(),
            node: NodeId(2),
            bound_ms,
            invoked_ms: answered_ms.saturating_sub(5),
            answered_ms,
            applied_index: LogIndex(applied),
        }
    }

    /// Writes acknowledged at 100 ms (index 10), 300 ms (index 30) and 200 ms (index 20,
    /// acknowledged after the higher one), then reads of each kind: what each may miss, and
    /// what it may not.
    #[test]
    fn a_read_must_reflect_every_write_acknowledged_more_than_its_bound_before() {
        let writes = [
            acknowledged(100, 10),
            acknowledged(300, 30),
            acknowledged(200, 20),
        ];
        let fine = [
            // Nothing acknowledged more than 500 ms + 1 ms before 600 ms.
            read(600, 500, 0),
            // The write at 100 ms is exactly 501 ms old: within the bound and the step.
            read(601, 500, 0),
            // 502 ms old: index 10 is needed, and there.
            read(602, 500, 10),
            // Every write is older than 100 ms + 1 ms at 500 ms: index 30 reflects all three.
            read(500, 100, 30),
            // A bound of zero: a read reflecting everything is fine.
            read(1000, 0, 30),
        ];
        assert_eq!(
            check_bounded_staleness(&writes, &fine, 0.0),
            Vec::<String>::new()
        );
        let stale = [
            (read(602, 500, 9), "write 10 at index 10"),
            // The write at 200 ms (index 20) came after the one at index 30: 30 is needed.
            (read(500, 100, 29), "write 30 at index 30"),
            (read(1000, 0, 20), "write 30 at index 30"),
        ];
        for (read, needed) in stale {
            let found = check_bounded_staleness(&writes, std::slice::from_ref(&read), 0.0);
            assert_eq!(found.len(), 1, "{read:?}: {found:?}");
            assert!(found[0].contains("bounded staleness"), "{found:?}");
            assert!(
                found[0].contains(needed),
                "{read:?} needs {needed}: {found:?}"
            );
        }
    }

    /// A node whose clock runs 5% slow counts 1,000 ms of its own in up to 1,054 ms of real
    /// time: a read of data that old in real time is within its bound when clocks drift by
    /// 5%, not when they keep time.
    #[test]
    fn drifting_clocks_stretch_the_bound_by_the_slowest_rate() {
        assert_eq!(real_bound_ms(1_000, 0.0), 1_000);
        assert_eq!(real_bound_ms(1_000, 0.05), 1_054);
        let writes = [acknowledged(100, 10)];
        // The write is 1,040 ms old (plus the step) when the read is answered.
        let late = [read(1_141, 1_000, 0)];
        assert_eq!(
            check_bounded_staleness(&writes, &late, 0.05),
            Vec::<String>::new()
        );
        assert_eq!(check_bounded_staleness(&writes, &late, 0.0).len(), 1);
        // Beyond even the stretched bound.
        let too_late = [read(1_200, 1_000, 0)];
        assert_eq!(check_bounded_staleness(&writes, &too_late, 0.05).len(), 1);
    }
}
