//! The node's event loop: it owns the protocol, the store and the state machine, and carries
//! out each batch of [`Actions`] in the order the protocol documents. What waits for an answer
//! is kept apart: writes in [`super::writes`], reads in [`super::reads`], their deadlines in
//! [`super::deadlines`], and what the node reports in [`super::publish`].

use super::clock::{ClockClaim, LocalTime, NodeClock};
use super::deadlines::deadline_after;
use super::membership::PendingChanges;
use super::publish::{Publisher, in_sync};
use super::reads::{PendingRead, Reads};
use super::snapshots::{SnapshotReply, Snapshots};
use super::writes::{WriteReply, Writes};
use super::{
    Ack, Error, LogStore, Recovered, Request, Shared, SnapshotStore, StateMachine, Status,
    Transport,
};
use crate::{
    Actions, Entry, InitialState, LogIndex, Message, NodeId, Payload, Raft, Role, SnapshotMeta,
    Time,
};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{Instrument, debug, info, info_span, warn};

/// How many queued requests and messages one batch takes at most, so that a flood of input
/// cannot starve the writes and applies that complete earlier requests.
const MAX_BATCH: usize = 4096;

/// What ended the loop's wait.
enum Wake<R> {
    Message(Option<Message>),
    Request(Option<R>),
    /// A snapshot build finished (its image's size, or why it failed).
    Built(Result<u64, Error>),
    Timer,
}

/// `at` (on tokio's clock) on the protocol's clock of a node whose `clock` read `started` when
/// it started: whole milliseconds since, rounded down.
fn protocol_time(clock: &NodeClock, started: LocalTime, at: tokio::time::Instant) -> Time {
    Time(clock.read(at).millis_since(started))
}

/// Resolves when the clock's rate changes; never for a real clock (or once every clone of an
/// adjustable one is gone, which the node's own configuration prevents).
async fn clock_changed(changes: &mut Option<watch::Receiver<u64>>) {
    if let Some(changes) = changes
        && changes.changed().await.is_ok()
    {
        return;
    }
    std::future::pending().await
}

/// The node's task: what its loop needs to take input, drive the protocol and carry out its
/// actions; everything waiting for an answer is kept in `writes` and `reads`.
pub(super) struct Driver<SM: StateMachine, LS, SS, T> {
    /// The node's settings (the `Ack::All` replica floor, the in-sync lag bound).
    config: super::NodeConfig,
    /// The protocol, which decides everything; the driver only carries out its actions.
    raft: Raft,
    /// The user's state machine, applied to and queried by this task alone.
    state_machine: SM,
    /// Where the log and the hard state are made durable (duty 2).
    store: LS,
    /// Where snapshots are kept, built and received (duties 2, 7 and 8).
    snapshots: Snapshots<SS>,
    /// Callers of `NodeHandle::snapshot` waiting for the next build to start.
    snapshot_requests: Vec<SnapshotReply>,
    /// Where messages go (duties 1 and 4).
    transport: T,
    /// Requests from handles.
    requests: mpsc::Receiver<Request<SM>>,
    /// Messages from other nodes.
    inbound: super::InboundMessages,
    /// False once every inbox has been dropped.
    inbound_open: bool,
    /// Why the node stopped, for handles that ask after it did.
    shared: Arc<Shared>,
    /// The origin of the protocol's clock: what the node's clock
    /// ([`super::NodeConfig::clock`]) read when it started.
    started: LocalTime,
    /// The time of the current batch, read once every input of the batch had arrived, so that
    /// no input is judged at a time before it arrived (a lease, a staleness bound or the time a
    /// follower heard its leader would otherwise be stretched by the time spent draining).
    clock: Time,
    /// The same moment on tokio's clock, for request deadlines (which are not the protocol's
    /// and so keep tokio's time whatever the node's clock does).
    now: tokio::time::Instant,
    /// Rate changes of an adjustable clock (`None` for tokio's).
    clock_changes: Option<watch::Receiver<u64>>,
    /// This node's claim on its adjustable clock, released when the node stops (before it
    /// tells those waiting for it: a node started next on the clock may be theirs).
    clock_claim: Option<ClockClaim>,
    /// Messages taken for the current batch (kept to reuse the allocation).
    message_batch: Vec<Message>,
    /// Requests taken for the current batch (kept to reuse the allocation).
    request_batch: Vec<Request<SM>>,
    /// Writes waiting for their acknowledgement.
    writes: Writes<SM::Response>,
    /// Reads waiting for their barrier.
    reads: Reads<SM>,
    /// Membership changes waiting to be done.
    changes: PendingChanges,
    /// The membership the transport was last told of (the same allocation while it stays in
    /// force).
    membership_seen: Option<crate::SharedMembership>,
    /// The status watchers see, and the history behind it.
    publisher: Publisher,
    /// Set when the loop must end (shutdown or fatal storage error).
    stop: Option<Vec<oneshot::Sender<()>>>,
    /// Checks, in debug builds, that the loop keeps the duties of `Actions`.
    contract: crate::contract::ContractChecker,
}

impl<SM: StateMachine, LS: LogStore, SS: SnapshotStore, T: Transport> Driver<SM, LS, SS, T> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        config: super::NodeConfig,
        membership: Option<crate::Membership>,
        recovered: Recovered,
        snapshot: Option<SnapshotMeta>,
        applied: LogIndex,
        state_machine: SM,
        store: LS,
        snapshots: Snapshots<SS>,
        transport: T,
        requests: mpsc::Receiver<Request<SM>>,
        inbound: super::InboundMessages,
        status_tx: watch::Sender<Status>,
        shared: Arc<Shared>,
    ) -> Result<Self, Error> {
        let state = InitialState {
            hard_state: recovered.hard_state,
            entries: recovered.entries,
            // Restored from the snapshot (or its own durable state); the rest is applied again.
            applied,
            membership,
            log_start: recovered.log_start,
            snapshot,
            invalid_voters: None,
        };
        let durable_through = state
            .entries
            .last()
            .map_or(state.log_start.index, |e| e.index)
            .max(applied);
        let raft = Raft::new(config.raft.clone(), state, config.seed, Time(0))?;
        let now = tokio::time::Instant::now();
        // Subscribed before the start, so that a rate changed in between is not taken as seen.
        let clock_changes = config.clock.changes();
        let Some((started, clock_claim)) = config.clock.start(now) else {
            return Err(Error::InvalidConfig(
                "its NodeConfig::clock is in use by another running node: give each node a \
                 clock of its own"
                    .into(),
            ));
        };
        Ok(Driver {
            publisher: Publisher::new(
                status_tx,
                &raft,
                config.failover_history,
                config.max_replication_lag,
                recovered.failovers,
            ),
            raft,
            state_machine,
            store,
            snapshots,
            snapshot_requests: Vec::new(),
            transport,
            requests,
            inbound,
            inbound_open: true,
            shared,
            started,
            clock: Time(0),
            now,
            clock_changes,
            clock_claim: Some(clock_claim),
            message_batch: Vec::new(),
            request_batch: Vec::new(),
            writes: Writes::default(),
            reads: Reads::default(),
            changes: PendingChanges::default(),
            membership_seen: None,
            stop: None,
            contract: crate::contract::ContractChecker::new(durable_through, applied),
            config,
        })
    }

    pub(super) async fn run(self) {
        let span = info_span!("raft", node = %self.raft.id());
        self.run_loop().instrument(span).await;
    }

    /// Reads the clock once for the batch about to be handled.
    fn read_clock(&mut self) {
        self.now = tokio::time::Instant::now();
        self.clock = protocol_time(&self.config.clock, self.started, self.now);
    }

    /// `at` on tokio's clock, to sleep until a deadline of the protocol.
    fn instant_of(&self, at: Time) -> tokio::time::Instant {
        let deadline = self.started.plus_millis(at.0);
        self.config.clock.instant_at(deadline, self.now)
    }

    async fn run_loop(mut self) {
        info!(voters = ?self.raft.voters(), term = self.raft.term().0, "node started");
        loop {
            let wake_at = self.publisher.wake_at(self.raft.next_deadline());
            let mut deadline = self.instant_of(wake_at);
            if let Some(request_deadline) = self.earliest_request_deadline() {
                deadline = deadline.min(request_deadline);
            }
            let woken_by = tokio::select! {
                biased;
                message = self.inbound.recv(), if self.inbound_open => Wake::Message(message),
                request = self.requests.recv() => Wake::Request(request),
                built = self.snapshots.build_done(), if self.snapshots.building() => {
                    Wake::Built(built)
                }
                _ = tokio::time::sleep_until(deadline) => Wake::Timer,
                // The clock's rate changed (a simulation's drift): recompute the deadline.
                _ = clock_changed(&mut self.clock_changes) => Wake::Timer,
            };
            let mut messages = std::mem::take(&mut self.message_batch);
            let mut requests = std::mem::take(&mut self.request_batch);
            match woken_by {
                Wake::Message(Some(message)) => messages.push(message),
                // Every inbox is gone (the transport stopped): stop listening for messages
                // rather than wake on a closed channel forever.
                Wake::Message(None) => self.inbound_open = false,
                Wake::Request(Some(request)) => requests.push(request),
                // Every handle is gone: nobody can use this node any more.
                Wake::Request(None) => {
                    self.stop.get_or_insert_with(Vec::new);
                }
                Wake::Built(result) => {
                    let keep = self.config.snapshot_keep_entries;
                    self.snapshots.built(&mut self.raft, result, keep);
                }
                Wake::Timer => {}
            }
            // Take everything else that is already waiting: one batch, one write.
            while self.inbound_open && messages.len() < MAX_BATCH {
                match self.inbound.try_recv() {
                    Some(message) => messages.push(message),
                    None => break,
                }
            }
            while requests.len() < MAX_BATCH {
                match self.requests.try_recv() {
                    Ok(request) => requests.push(request),
                    Err(_) => break,
                }
            }
            // Only now read the clock: every input of the batch arrived before it, so none is
            // judged at a time before it arrived (a lease, a staleness bound or the time a
            // follower heard its leader, judged against an earlier clock, would hold too long).
            self.read_clock();
            for message in messages.drain(..) {
                self.step(message);
            }
            // Requests that arrive while the batch is handled join it (up to `MAX_BATCH` in
            // all), each group judged at a clock read after it arrived: clients answered by the
            // previous batch send their next requests a few at a time, and taking them now
            // replicates them in this batch's write instead of waking the loop for each.
            let mut taken = 0;
            loop {
                taken += requests.len();
                for request in requests.drain(..) {
                    self.handle(request);
                }
                while taken + requests.len() < MAX_BATCH {
                    match self.requests.try_recv() {
                        Ok(request) => requests.push(request),
                        Err(_) => break,
                    }
                }
                if requests.is_empty() {
                    break;
                }
                self.read_clock();
            }
            self.message_batch = messages;
            self.request_batch = requests;
            self.raft.tick(self.clock);
            // Before the batch's messages go out (a learner just added is sent its first
            // entries in this batch), and again after (a change the batch's writes made).
            self.tell_transport_of_membership();
            if let Err(error) = self.carry_out_actions().await {
                self.fail_storage(error);
            }
            self.tell_transport_of_membership();
            let every = self.config.snapshot_every;
            if !self.snapshot_requests.is_empty() || self.snapshots.due(&self.raft, every) {
                let asked = std::mem::take(&mut self.snapshot_requests);
                self.snapshot_requests = self
                    .snapshots
                    .maybe_build(&self.raft, &mut self.state_machine, asked, every)
                    .await;
            }
            self.expire_requests();
            let transport = &self.transport;
            let (stopping, snapshot) = (self.stop.is_some(), self.snapshots.latest());
            self.publisher
                .publish_status(&self.raft, self.clock, stopping, snapshot, || {
                    transport.peer_connections()
                });
            if let Some(history) = self.publisher.failovers_to_save()
                && let Err(error) = self.store.save_failovers(&history).await
            {
                self.fail_storage(Error::storage(error));
            }
            if let Some(waiters) = self.stop.take() {
                self.fail_everything(Error::Shutdown);
                self.clock_claim = None;
                info!("node stopped");
                for waiter in waiters {
                    let _ = waiter.send(());
                }
                return;
            }
        }
    }

    fn step(&mut self, message: Message) {
        if let Err(error) = self.raft.step(self.clock, message) {
            debug!(%error, "dropped a message");
        }
    }

    fn handle(&mut self, request: Request<SM>) {
        match request {
            // A request whose caller stopped waiting (it was cancelled while the request sat
            // in the queue) is not started.
            Request::Propose { reply, .. } if reply.is_closed() => {}
            Request::Read { reply, .. } if reply.is_closed() => {}
            Request::Propose {
                command,
                ack,
                reply,
                timeout,
            } => self.propose(command, ack, reply, deadline_after(self.now, timeout)),
            Request::Read {
                consistency,
                query,
                reply,
                timeout,
            } => self.reads.read(
                &mut self.raft,
                self.clock,
                consistency,
                PendingRead {
                    query,
                    reply,
                    deadline: deadline_after(self.now, timeout),
                    max_age_ms: None,
                },
            ),
            Request::Transfer { to, reply } => {
                let result = self
                    .raft
                    .transfer_leadership(self.clock, to)
                    .map_err(Error::from);
                if result.is_ok() {
                    info!(%to, "leadership transfer started");
                }
                let _ = reply.send(result);
            }
            Request::ChangeMembership { reply, .. } if reply.is_closed() => {}
            Request::ChangeMembership {
                change,
                catch_up_within,
                reply,
                timeout,
            } => self.changes.propose(
                &mut self.raft,
                change,
                catch_up_within,
                reply,
                deadline_after(self.now, timeout),
            ),
            Request::Snapshot { reply } => self.snapshot_requests.push(reply),
            Request::Shutdown { reply } => self.stop.get_or_insert_with(Vec::new).push(reply),
        }
    }

    fn propose(
        &mut self,
        command: crate::EntryData,
        ack: Ack,
        reply: WriteReply<SM::Response>,
        deadline: tokio::time::Instant,
    ) {
        if ack == Ack::All {
            let in_sync = self.in_sync_voters().len();
            if self.raft.role() == Role::Leader && in_sync < self.config.min_in_sync {
                let _ = reply.send(Err(Error::NotEnoughReplicas {
                    in_sync,
                    required: self.config.min_in_sync,
                }));
                return;
            }
        }
        match self.raft.propose(command) {
            Ok(id) => self.writes.proposed(id, ack, reply, deadline),
            Err(error) => {
                let _ = reply.send(Err(error.into()));
            }
        }
    }

    /// Carries out the protocol's actions until it has none left (acknowledging a write or an
    /// apply can produce more).
    async fn carry_out_actions(&mut self) -> Result<(), Error> {
        let (clock, started) = (self.config.clock.clone(), self.started);
        let fresh_clock = move || protocol_time(&clock, started, tokio::time::Instant::now());
        loop {
            let actions = self.raft.take_actions();
            if actions.is_empty() {
                break;
            }
            let batch = self.contract.took(&actions);
            let Actions {
                messages,
                hard_state,
                entries,
                persisted_messages,
                committed,
                reads,
                purge,
                snapshot_writes,
                snapshot_reads,
                ..
            } = actions;
            // Duty 1: a leader's replication goes out while its own write runs.
            if !messages.is_empty() {
                self.transport.send_batch(messages);
            }
            // Duties 2 and 3: the purge, the hard state and entries, the snapshot chunks.
            if let Some(start) = purge {
                self.store
                    .purge_prefix(start)
                    .await
                    .map_err(Error::storage)?;
            }
            let mut persisted = None;
            if hard_state.is_some() || !entries.is_empty() {
                if let Some(term) = hard_state.map(|h| h.term)
                    && term != self.publisher.last_term()
                {
                    debug!(term = term.0, "term changed");
                }
                persisted = entries.last().map(Entry::id);
                self.store
                    .write(hard_state, entries)
                    .await
                    .map_err(Error::storage)?;
            }
            let installing = if snapshot_writes.is_empty() {
                None
            } else {
                self.snapshots.store_chunks(snapshot_writes).await?
            };
            self.contract.wrote(batch);
            if let Some(last) = persisted {
                self.contract.reported_persisted(last);
                self.raft.persisted(last);
                let raft = &self.raft;
                self.writes
                    .durable(last, |index| raft.entry(index).map(|e| e.term));
            }
            // Duty 4.
            if !persisted_messages.is_empty() {
                self.contract.sending_persisted(batch);
                self.transport.send_batch(persisted_messages);
            }
            // Duty 5.
            if let Some(range) = committed {
                for index in range.indexes() {
                    self.contract.applying(index);
                    self.apply(index).await?;
                }
                self.contract.reported_applied(range.last);
                self.raft.applied(range.last);
            }
            // Duty 6.
            for (id, result) in reads {
                if let Ok(index) = result {
                    self.contract.answering_read(index);
                }
                self.reads
                    .complete(
                        &self.raft,
                        &mut self.state_machine,
                        &fresh_clock,
                        id,
                        result,
                    )
                    .await;
            }
            // Duty 7: a received snapshot replaces the state machine's state.
            if let Some(meta) = installing {
                self.snapshots
                    .restore(&mut self.state_machine, &meta)
                    .await?;
                self.contract.installed(meta.last.index);
                self.raft
                    .snapshot_installed(&meta)
                    .map_err(|e| Error::InvalidArgument(e.to_string()))?;
                self.writes.skipped_to(meta.last.index);
            }
            // Duty 8: chunks of the latest snapshot for followers.
            if !snapshot_reads.is_empty() {
                self.snapshots
                    .read_chunks(&mut self.raft, snapshot_reads)
                    .await?;
            }
        }
        self.reads
            .answer_waiting(&self.raft, &mut self.state_machine, &fresh_clock)
            .await;
        let (max_lag, now) = (self.config.max_replication_lag, self.clock);
        self.writes
            .complete_all_acks(&self.raft, |last_ack_at| in_sync(max_lag, now, last_ack_at));
        Ok(())
    }

    /// Applies the committed entry at `index`, read in place from the protocol's log, and
    /// answers the write that waited for it.
    async fn apply(&mut self, index: LogIndex) -> Result<(), Error> {
        let entry = self.raft.entry(index).ok_or_else(|| {
            // The protocol keeps committed entries until they are applied (duty 5): only
            // a bug gets here, and the node stops rather than apply out of order.
            Error::storage(super::StorageError::Unavailable(format!(
                "committed entry {index} is not in the log"
            )))
        })?;
        let term = entry.term;
        let command = match &entry.payload {
            // A membership took effect when appended; the state machine never sees it.
            Payload::Blank | Payload::Membership(_) => None,
            Payload::Command(bytes) => Some(postcard::from_bytes::<SM::Command>(bytes)),
        };
        let response = match command {
            None => None,
            Some(Ok(command)) => Some(Ok(self.state_machine.apply(index, command).await)),
            // Every node fails the same way on the same bytes, so skipping keeps replicas
            // identical; only the proposer learns why.
            Some(Err(error)) => Some(Err(Error::InvalidArgument(format!(
                "command at {index} does not decode: {error}"
            )))),
        };
        self.writes
            .applied(index, term, response, self.raft.leader());
        Ok(())
    }

    /// Tells the transport of the membership in force when it changed (appended, truncated
    /// away, or brought by a snapshot), so that it can reach new members.
    fn tell_transport_of_membership(&mut self) {
        let Some(membership) = self.raft.shared_membership() else {
            return;
        };
        if self
            .membership_seen
            .as_ref()
            .is_some_and(|seen| std::sync::Arc::ptr_eq(seen, membership))
        {
            return;
        }
        let index = self.raft.membership_index();
        info!(
            index = index.0,
            voters = ?membership.voters(),
            outgoing = ?membership.outgoing_voters(),
            learners = ?membership.learners(),
            "membership in force"
        );
        self.transport.membership_changed(membership);
        self.membership_seen = Some(membership.clone());
    }

    /// The voters in sync with this leader, itself included if it votes (learners never
    /// count).
    fn in_sync_voters(&self) -> Vec<NodeId> {
        let voters = self.raft.voters();
        let mut ids: Vec<NodeId> = voters
            .contains(&self.raft.id())
            .then_some(self.raft.id())
            .into_iter()
            .collect();
        ids.extend(
            self.raft
                .peers()
                .iter()
                .filter(|p| voters.contains(&p.id))
                .filter(|p| in_sync(self.config.max_replication_lag, self.clock, p.last_ack_at))
                .map(|p| p.id),
        );
        ids
    }

    /// The earliest deadline of a request not yet answered (or, for reads waiting on apply,
    /// possibly an earlier one that has been answered since).
    fn earliest_request_deadline(&self) -> Option<tokio::time::Instant> {
        [
            self.writes.next_deadline(),
            self.reads.next_deadline(),
            self.changes.next_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Answers [`Error::Timeout`] to every request whose deadline has passed.
    fn expire_requests(&mut self) {
        self.writes.expire(self.now);
        self.reads.expire(self.now);
        self.changes.progress(&self.raft, self.now);
    }

    fn fail_storage(&mut self, error: Error) {
        warn!(%error, "storage failed; stopping the node");
        if let Ok(mut fatal) = self.shared.fatal.lock() {
            *fatal = Some(error.clone());
        }
        self.fail_everything(error);
        self.stop.get_or_insert_with(Vec::new);
    }

    fn fail_everything(&mut self, error: Error) {
        self.writes.fail_all(&error);
        self.reads.fail_all(&error);
        self.changes.fail_all(&error);
        self.snapshots.fail_all(&error);
        for reply in self.snapshot_requests.drain(..) {
            let _ = reply.send(Err(error.clone()));
        }
    }
}
