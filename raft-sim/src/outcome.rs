//! How a client's request ended, as the history records it.

use raft_core::NodeId;
use raft_core::node::Error;

/// How a request ended: it took effect, it was refused with no effect, or nobody can tell.
///
/// Errors are classified as [`raft_core::node::Error`] documents them:
///
/// | error | outcome |
/// |---|---|
/// | `NotLeader`, `NotEnoughReplicas`, `TransferInProgress`, `UncommittedLimit`, `TooStale`, `Membership`, `InvalidArgument`, `InvalidConfig` | [`Outcome::Failed`]: no effect |
/// | `Timeout`, `Shutdown`, `Storage`, and any variant added later | [`Outcome::Unknown`]: may take effect, or not |
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome<R> {
    /// It took effect; the answer.
    Ok(R),
    /// It was refused and had no effect (and never will).
    Failed(Error),
    /// It may have taken effect, may still, or may never.
    Unknown(Error),
}

impl<R> Outcome<R> {
    /// The outcome an error stands for (see the table above).
    pub fn from_error(error: Error) -> Outcome<R> {
        match error {
            Error::NotLeader { .. }
            | Error::NotEnoughReplicas { .. }
            | Error::TransferInProgress
            | Error::UncommittedLimit { .. }
            | Error::TooStale { .. }
            | Error::Membership(_)
            | Error::InvalidArgument(_)
            | Error::InvalidConfig(_) => Outcome::Failed(error),
            // `Timeout`, `Shutdown`, `Storage`; a variant added later counts as unknown until
            // its documentation says otherwise.
            _ => Outcome::Unknown(error),
        }
    }

    /// The outcome of a node's answer.
    pub fn from_result(result: Result<R, Error>) -> Outcome<R> {
        match result {
            Ok(answer) => Outcome::Ok(answer),
            Err(error) => Outcome::from_error(error),
        }
    }

    /// Whether it took effect.
    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok(_))
    }

    /// The answer, if it took effect.
    pub fn ok(self) -> Option<R> {
        match self {
            Outcome::Ok(answer) => Some(answer),
            _ => None,
        }
    }

    /// The error, if it did not surely take effect.
    pub fn error(&self) -> Option<&Error> {
        match self {
            Outcome::Ok(_) => None,
            Outcome::Failed(error) | Outcome::Unknown(error) => Some(error),
        }
    }

    /// The leader a `NotLeader` refusal named, if any.
    pub fn leader_hint(&self) -> Option<NodeId> {
        match self {
            Outcome::Failed(Error::NotLeader { leader_hint }) => *leader_hint,
            _ => None,
        }
    }

    /// Maps the answer.
    pub fn map<T>(self, f: impl FnOnce(R) -> T) -> Outcome<T> {
        match self {
            Outcome::Ok(answer) => Outcome::Ok(f(answer)),
            Outcome::Failed(error) => Outcome::Failed(error),
            Outcome::Unknown(error) => Outcome::Unknown(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_have_no_effect_and_the_rest_is_unknown() {
        let failed: Outcome<()> = Outcome::from_error(Error::NotLeader { leader_hint: None });
        assert!(matches!(failed, Outcome::Failed(_)));
        assert!(matches!(
            Outcome::<()>::from_error(Error::TooStale { leader_hint: None }),
            Outcome::Failed(_)
        ));
        for error in [Error::Timeout, Error::Shutdown] {
            assert!(matches!(
                Outcome::<()>::from_error(error),
                Outcome::Unknown(_)
            ));
        }
    }
}
