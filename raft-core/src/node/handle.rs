//! The client API: a cloneable [`NodeHandle`] that queues requests for the node's task and
//! waits for their answers, and the request it queues.

use super::{Ack, Consistency, Error, ReadOutcome, StateMachine, Status, WriteOutcome};
use crate::{LogIndex, NodeId};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// State the driver shares with handles: why it stopped, if it did.
#[derive(Debug, Default)]
pub(super) struct Shared {
    /// The storage error that stopped the node, if one did (else it was shut down).
    pub(super) fatal: std::sync::Mutex<Option<Error>>,
}

impl Shared {
    fn stopped_error(&self) -> Error {
        match self.fatal.lock().ok().and_then(|g| g.clone()) {
            Some(error) => error,
            None => Error::Shutdown,
        }
    }
}

/// A request from a handle to the driver.
pub(super) enum Request<SM: StateMachine> {
    Propose {
        command: crate::EntryData,
        ack: Ack,
        reply: oneshot::Sender<Result<WriteOutcome<SM::Response>, Error>>,
        /// How long the node may take, from when it takes the request from its queue; it
        /// answers `Error::Timeout` then. (A duration, not an instant: a handle may run on
        /// another runtime, whose clock is not the node's, as in a simulation.)
        timeout: Duration,
    },
    Read {
        consistency: Consistency,
        query: Option<SM::Query>,
        reply: oneshot::Sender<Result<ReadOutcome<Option<SM::QueryResponse>>, Error>>,
        timeout: Duration,
    },
    Transfer {
        to: NodeId,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    ChangeMembership {
        change: crate::MembershipChange,
        catch_up_within: Option<u64>,
        reply: super::membership::ChangeReply,
        timeout: Duration,
    },
    Snapshot {
        reply: super::snapshots::SnapshotReply,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

impl<SM: StateMachine> Request<SM> {
    fn with_timeout(mut self, left: Duration) -> Self {
        if let Request::Propose { timeout, .. }
        | Request::Read { timeout, .. }
        | Request::ChangeMembership { timeout, .. } = &mut self
        {
            *timeout = left;
        }
        self
    }
}

/// The client API of one node. Cheap to clone; every clone talks to the same node.
pub struct NodeHandle<SM: StateMachine> {
    /// The node it talks to.
    id: NodeId,
    /// The node's request queue.
    requests: mpsc::Sender<Request<SM>>,
    /// The node's published status.
    status: watch::Receiver<Status>,
    /// How long a request may take, from when it is sent (including any wait for room in a
    /// full queue).
    request_timeout: Duration,
    /// The largest encoded command the node accepts, checked here before it is queued.
    max_command_bytes: usize,
    /// Why the node stopped, for requests that find it gone.
    shared: Arc<Shared>,
}

impl<SM: StateMachine> Clone for NodeHandle<SM> {
    fn clone(&self) -> Self {
        NodeHandle {
            id: self.id,
            requests: self.requests.clone(),
            status: self.status.clone(),
            request_timeout: self.request_timeout,
            max_command_bytes: self.max_command_bytes,
            shared: self.shared.clone(),
        }
    }
}

impl<SM: StateMachine> NodeHandle<SM> {
    pub(super) fn new(
        id: NodeId,
        requests: mpsc::Sender<Request<SM>>,
        status: watch::Receiver<Status>,
        request_timeout: Duration,
        max_command_bytes: usize,
        shared: Arc<Shared>,
    ) -> Self {
        NodeHandle {
            id,
            requests,
            status,
            request_timeout,
            max_command_bytes,
            shared,
        }
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Proposes a command on the leader and waits for the acknowledgement `ack` asks for.
    /// Returns the state machine's response (except for [`Ack::Local`]) and the write's index.
    pub async fn propose(
        &self,
        command: SM::Command,
        ack: Ack,
    ) -> Result<WriteOutcome<SM::Response>, Error> {
        let command = encode_command(&command, self.max_command_bytes)?;
        self.call(|reply, timeout| Request::Propose {
            command,
            ack,
            reply,
            timeout,
        })
        .await
    }

    /// Waits for the read barrier `consistency` asks for, then answers `query` from the state
    /// machine.
    pub async fn query(
        &self,
        consistency: Consistency,
        query: SM::Query,
    ) -> Result<ReadOutcome<SM::QueryResponse>, Error> {
        let outcome = self
            .call(|reply, timeout| Request::Read {
                consistency,
                query: Some(query),
                reply,
                timeout,
            })
            .await?;
        match outcome.response {
            Some(response) => Ok(ReadOutcome {
                applied_index: outcome.applied_index,
                response,
            }),
            None => Err(Error::InvalidArgument("query produced no answer".into())),
        }
    }

    /// Waits for the read barrier `consistency` asks for and returns the applied index at which
    /// a read would now be served (for callers that read the state machine themselves).
    pub async fn read(&self, consistency: Consistency) -> Result<LogIndex, Error> {
        let outcome = self
            .call(|reply, timeout| Request::Read {
                consistency,
                query: None,
                reply,
                timeout,
            })
            .await?;
        Ok(outcome.applied_index)
    }

    /// Asks the leader to hand leadership to `to` (dissertation §3.10). Returns once the
    /// transfer has started; watch [`NodeHandle::watch_status`] for the new leader.
    pub async fn transfer_leadership(&self, to: NodeId) -> Result<(), Error> {
        self.call(|reply, _| Request::Transfer { to, reply }).await
    }

    /// Adds `id` as a learner (dissertation §4.2.1): it receives the log and snapshots but
    /// does not vote, so it can catch up before it is made a voter with
    /// [`NodeHandle::change_membership`] (or stay a read replica). `address`, if given, goes
    /// into the membership, so that every node's transport learns where `id` is (see
    /// [`super::Transport::membership_changed`]).
    ///
    /// Returns the index of the change once it is committed; with `catch_up_within: Some(n)`,
    /// only once the learner also holds every entry of the leader's log but the last `n` (the
    /// point at which promoting it will not stall commits). If the request times out while
    /// waiting for that, or this node stops leading meanwhile, the answer is
    /// [`Error::Timeout`]: the learner is added, its catch-up unconfirmed. Refusals
    /// ([`Error::Membership`], [`Error::NotLeader`]) have no effect.
    pub async fn add_learner(
        &self,
        id: NodeId,
        address: Option<String>,
        catch_up_within: Option<u64>,
    ) -> Result<LogIndex, Error> {
        let change = crate::MembershipChange::AddLearner { id, address };
        self.change(change, catch_up_within).await
    }

    /// Removes the learner `id`. Returns the index of the change once it is committed.
    pub async fn remove_learner(&self, id: NodeId) -> Result<LogIndex, Error> {
        self.change(crate::MembershipChange::RemoveLearner(id), None)
            .await
    }

    /// Makes `voters` the voters, by joint consensus (paper §6): any mix of promoting learners
    /// and removing voters, this leader included (it hands leadership to a new voter once its
    /// removal commits). Returns the index of the entry that completes the change once it is
    /// committed.
    ///
    /// Refused with no effect ([`Error::Membership`]) when unsafe or when it would change
    /// nothing: no voters, a new voter that is not a learner, a change already in progress.
    /// [`Error::Timeout`] means the outcome is unknown: read [`Status::membership`] to see
    /// where the change stands (a leader completes a change of voters it has started on its
    /// own, even after a change of leader).
    pub async fn change_membership(
        &self,
        voters: impl IntoIterator<Item = NodeId>,
    ) -> Result<LogIndex, Error> {
        let voters = voters.into_iter().collect();
        self.change(crate::MembershipChange::ChangeVoters(voters), None)
            .await
    }

    async fn change(
        &self,
        change: crate::MembershipChange,
        catch_up_within: Option<u64>,
    ) -> Result<LogIndex, Error> {
        self.call(|reply, timeout| Request::ChangeMembership {
            change,
            catch_up_within,
            reply,
            timeout,
        })
        .await
    }

    /// The latest status.
    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    /// A channel that sees every new status.
    pub fn watch_status(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }

    /// Takes a snapshot of the state machine now (beside the automatic ones every
    /// [`super::NodeConfig::snapshot_every`] entries) and compacts the log before it. Returns
    /// what the snapshot covers once it is durable: at least every entry applied when it was
    /// asked for. If the latest snapshot already covers them, returns it at once; if one being
    /// taken covers them, waits for it; if one being taken ends short, takes another after it.
    pub async fn snapshot(&self) -> Result<crate::SnapshotMeta, Error> {
        self.call(|reply, _| Request::Snapshot { reply }).await
    }

    /// Stops the node: pending requests fail with [`Error::Shutdown`]. Returns once the task
    /// has ended (at once if it already had).
    pub async fn shutdown(&self) {
        let (reply, done) = oneshot::channel();
        if self
            .requests
            .send(Request::Shutdown { reply })
            .await
            .is_ok()
        {
            let _ = done.await;
        }
    }

    /// Sends a request and waits for its answer. The node itself answers [`Error::Timeout`]
    /// when the request's time is up, so the common case needs neither a timer nor a clock read
    /// here (a timer per request cost about a tenth of a write); only the wait for room in a
    /// full queue is timed here, and it counts against the same timeout.
    async fn call<R>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<R, Error>>, Duration) -> Request<SM>,
    ) -> Result<R, Error> {
        let (reply, response) = oneshot::channel();
        match self.requests.try_send(make(reply, self.request_timeout)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(self.shared.stopped_error()),
            // Boxed: the wait's state (a timer among it) would otherwise make every request's
            // future larger, and futures are moved when they are first awaited.
            Err(mpsc::error::TrySendError::Full(request)) => {
                Box::pin(self.send_when_there_is_room(request)).await?;
            }
        }
        match response.await {
            Ok(result) => result,
            Err(_) => Err(self.shared.stopped_error()),
        }
    }
}

impl<SM: StateMachine> NodeHandle<SM> {
    /// Waits for room in the node's full queue, against the request's timeout, and sends the
    /// request with what is left of it.
    async fn send_when_there_is_room(&self, request: Request<SM>) -> Result<(), Error> {
        let started = tokio::time::Instant::now();
        let permit = match tokio::time::timeout(self.request_timeout, self.requests.reserve()).await
        {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) => return Err(self.shared.stopped_error()),
            Err(_) => return Err(Error::Timeout),
        };
        let left = self.request_timeout.saturating_sub(started.elapsed());
        permit.send(request.with_timeout(left));
        Ok(())
    }
}

/// Encodes a command for the log: into a buffer reused by the thread, then copied once into
/// the entry's own allocation (encoding straight into a new `Vec` grows it several times).
fn encode_command<C: serde::Serialize>(
    command: &C,
    max_bytes: usize,
) -> Result<crate::EntryData, Error> {
    thread_local! {
        static BUFFER: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
    }
    /// A buffer grown past this by one large command is not kept.
    const KEEP_AT_MOST: usize = 64 * 1024;
    let mut buffer = BUFFER.take();
    buffer.clear();
    // On an encoding error the buffer is dropped; the next command starts a new one.
    let buffer = postcard::to_extend(command, buffer)
        .map_err(|e| Error::InvalidArgument(format!("command does not encode: {e}")))?;
    let result = if buffer.len() > max_bytes {
        Err(Error::InvalidArgument(format!(
            "command of {} bytes exceeds the maximum of {max_bytes}",
            buffer.len()
        )))
    } else {
        Ok(crate::EntryData::from(buffer.as_slice()))
    };
    if buffer.capacity() <= KEEP_AT_MOST {
        BUFFER.set(buffer);
    }
    result
}
