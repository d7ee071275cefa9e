//! The checks made once a run is over, besides linearizability: every answer that names a log
//! index against the model replayed over the commands the replicas applied, and read-your-writes.

use crate::SimStateMachine;
use crate::model::{ClusterOp, Model, OpOf, RetOf};
use crate::recording::AppliedLog;
use crate::world::{Capped, Observation};

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
