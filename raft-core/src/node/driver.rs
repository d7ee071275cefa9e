//! The node's event loop: it owns the protocol, the store and the state machine, and carries
//! out each batch of [`Actions`] in the order the protocol documents.

use super::{
    Ack, Consistency, Error, Failover, FailoverTrigger, LogStore, PeerStatus, ReadOutcome,
    Recovered, Request, Shared, StateMachine, Status, Transport, WriteOutcome,
};
use crate::{
    Actions, Entry, EntryId, InitialState, Instant, LogIndex, Message, NodeId, Payload, Raft,
    ReadId, ReadMode, Role, Term,
};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{Instrument, debug, info, info_span, warn};

/// How many queued requests and messages one batch takes at most, so that a flood of input
/// cannot starve the writes and applies that complete earlier requests.
const MAX_BATCH: usize = 4096;

type WriteReply<R> = oneshot::Sender<Result<WriteOutcome<R>, Error>>;
type ReadReply<Q> = oneshot::Sender<Result<ReadOutcome<Option<Q>>, Error>>;

/// A write waiting for its acknowledgement.
struct PendingWrite<R> {
    index: LogIndex,
    term: Term,
    ack: Ack,
    /// Taken when the write is answered; the record stays until its entry is applied.
    reply: Option<WriteReply<R>>,
    /// `Ack::All` writes keep the response here while they wait for the in-sync followers.
    response: Option<R>,
    deadline: tokio::time::Instant,
}

/// A pending request named in [`Driver::out_of_order`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    Write(LogIndex, Term),
    Read(ReadId),
}

/// A read waiting for its barrier.
struct PendingRead<SM: StateMachine> {
    query: Option<SM::Query>,
    reply: ReadReply<SM::QueryResponse>,
    deadline: tokio::time::Instant,
    /// A bounded-staleness read: the data served must reflect every write acknowledged more
    /// than this many milliseconds before it is answered (checked again when it is).
    max_age_ms: Option<u64>,
}

pub(super) fn initial_status(id: NodeId) -> Status {
    Status {
        id,
        role: Role::Follower,
        term: Term(0),
        leader: None,
        commit_index: LogIndex(0),
        applied_index: LogIndex(0),
        last_log_index: LogIndex(0),
        lease_remaining_ms: None,
        staleness_ms: None,
        peers: Vec::new(),
        failovers: Vec::new(),
        connections: Vec::new(),
    }
}

/// What ended the loop's wait.
enum Wake<R> {
    Message(Option<Message>),
    Request(Option<R>),
    Timer,
}

pub(super) struct Driver<SM: StateMachine, LS, T> {
    config: super::NodeConfig,
    raft: Raft,
    state_machine: SM,
    store: LS,
    transport: T,
    requests: mpsc::Receiver<Request<SM>>,
    inbound: mpsc::Receiver<Message>,
    /// False once every inbox has been dropped.
    inbound_open: bool,
    status_tx: watch::Sender<Status>,
    shared: Arc<Shared>,
    /// The origin of the protocol's clock.
    started: tokio::time::Instant,
    /// The time of the current batch, read once every input of the batch had arrived, so that
    /// no input is judged at a time before it arrived (a lease, a staleness bound or the time a
    /// follower heard its leader would otherwise be stretched by the time spent draining).
    clock: Instant,
    /// The same moment on tokio's clock, for request deadlines.
    now: tokio::time::Instant,
    /// `Ack::Local` writes not yet acknowledged, by index.
    local_pending: BTreeSet<LogIndex>,
    /// When the status was last rebuilt, and whether something changed since.
    status_built_at: Instant,
    status_dirty: bool,
    /// Writes waiting for durability or apply, in index order (the order of their deadlines,
    /// since every request gets the same timeout and writes are proposed as they arrive).
    writes: VecDeque<PendingWrite<SM::Response>>,
    /// Writes whose entries this node's log no longer holds (a later leader replaced them) and
    /// whose index a newer write now uses, by (index, term). Their fate is unknown until their
    /// index commits: another node may still hold the entry and win an election with it. With
    /// their own term they took effect; with another, they were lost.
    superseded: BTreeMap<(LogIndex, Term), PendingWrite<SM::Response>>,
    /// Inputs taken for the current batch (kept to reuse their allocations).
    message_batch: Vec<Message>,
    request_batch: Vec<Request<SM>>,
    /// Every write up to this index has had its deadline checked (and is answered).
    expired_through: LogIndex,
    /// Requests whose deadline is earlier than that of a request queued before them (they
    /// waited for room in a full queue, so less of their timeout was left), which the scans in
    /// arrival order would reach late.
    out_of_order: BTreeSet<(tokio::time::Instant, Key)>,
    /// `Ack::All` writes applied and waiting for the in-sync followers, by index.
    all_ready: BTreeMap<LogIndex, PendingWrite<SM::Response>>,
    /// Leader reads by the id given to the protocol (ids, and so deadlines, in arrival order).
    reads: BTreeMap<ReadId, PendingRead<SM>>,
    next_read: u64,
    /// `AtLeast` reads waiting for the state machine to reach their index, by index.
    waiting_for_apply: BTreeMap<LogIndex, Vec<PendingRead<SM>>>,
    /// The earliest deadline among `waiting_for_apply` (or later: it is only lowered on insert).
    waiting_deadline: Option<tokio::time::Instant>,
    /// Leadership changes seen, oldest first.
    failovers: VecDeque<Failover>,
    /// What the last published status said of role, term and leader (to detect changes).
    last_seen: (Role, Term, Option<NodeId>),
    lease_held: bool,
    out_of_sync: BTreeSet<NodeId>,
    /// Set when the loop must end (shutdown or fatal storage error).
    stop: Option<Vec<oneshot::Sender<()>>>,
    /// Checks, in debug builds, that the loop keeps the duties of `Actions`.
    contract: crate::contract::ContractChecker,
}

impl<SM: StateMachine, LS: LogStore, T: Transport> Driver<SM, LS, T> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        config: super::NodeConfig,
        voters: BTreeSet<NodeId>,
        recovered: Recovered,
        state_machine: SM,
        store: LS,
        transport: T,
        requests: mpsc::Receiver<Request<SM>>,
        inbound: mpsc::Receiver<Message>,
        status_tx: watch::Sender<Status>,
        shared: Arc<Shared>,
    ) -> Result<Self, Error> {
        let state = InitialState {
            hard_state: recovered.hard_state,
            entries: recovered.entries,
            // The state machine starts empty and is rebuilt from the log.
            applied: LogIndex(0),
            voters,
        };
        let durable_through = state.entries.last().map_or(LogIndex(0), |e| e.index);
        let raft = Raft::new(config.raft.clone(), state, config.seed, Instant(0))?;
        let started = tokio::time::Instant::now();
        Ok(Driver {
            last_seen: (raft.role(), raft.term(), raft.leader()),
            raft,
            state_machine,
            store,
            transport,
            requests,
            inbound,
            inbound_open: true,
            status_tx,
            shared,
            started,
            clock: Instant(0),
            now: started,
            local_pending: BTreeSet::new(),
            status_built_at: Instant(0),
            status_dirty: true,
            writes: VecDeque::new(),
            superseded: BTreeMap::new(),
            message_batch: Vec::new(),
            request_batch: Vec::new(),
            expired_through: LogIndex(0),
            out_of_order: BTreeSet::new(),
            all_ready: BTreeMap::new(),
            reads: BTreeMap::new(),
            next_read: 1,
            waiting_for_apply: BTreeMap::new(),
            waiting_deadline: None,
            failovers: VecDeque::new(),
            lease_held: false,
            out_of_sync: BTreeSet::new(),
            stop: None,
            contract: crate::contract::ContractChecker::new(durable_through, LogIndex(0)),
            config,
        })
    }

    pub(super) async fn run(self) {
        let span = info_span!("raft", node = self.raft.id().0);
        self.run_loop().instrument(span).await;
    }

    /// Reads the clock once for the batch about to be handled.
    fn read_clock(&mut self) {
        self.now = tokio::time::Instant::now();
        self.clock = self.protocol_time(self.now);
    }

    /// `at` on the protocol's clock (whole milliseconds since the node started, rounded down).
    fn protocol_time(&self, at: tokio::time::Instant) -> Instant {
        let elapsed = at.saturating_duration_since(self.started);
        Instant(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
    }

    /// `timeout` from now; a timeout too long for the clock means about a century.
    fn deadline_after(&self, timeout: Duration) -> tokio::time::Instant {
        const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
        self.now
            .checked_add(timeout.min(CENTURY))
            .unwrap_or(self.now)
    }

    fn instant_of(&self, at: Instant) -> tokio::time::Instant {
        self.started + Duration::from_millis(at.0)
    }

    async fn run_loop(mut self) {
        info!(voters = ?self.raft.voters(), term = self.raft.term().0, "node started");
        loop {
            let mut wake_at = self.raft.next_deadline();
            if self.status_dirty {
                // A status withheld to save work while busy is published within a millisecond.
                wake_at = wake_at.min(self.status_built_at.plus_ms(1));
            }
            let mut deadline = self.instant_of(wake_at);
            if let Some(request_deadline) = self.earliest_request_deadline() {
                deadline = deadline.min(request_deadline);
            }
            let woken_by = tokio::select! {
                biased;
                message = self.inbound.recv(), if self.inbound_open => Wake::Message(message),
                request = self.requests.recv() => Wake::Request(request),
                _ = tokio::time::sleep_until(deadline) => Wake::Timer,
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
                Wake::Timer => {}
            }
            // Take everything else that is already waiting: one batch, one write.
            while self.inbound_open && messages.len() < MAX_BATCH {
                match self.inbound.try_recv() {
                    Ok(message) => messages.push(message),
                    Err(_) => break,
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
            for request in requests.drain(..) {
                self.handle(request);
            }
            self.message_batch = messages;
            self.request_batch = requests;
            self.raft.tick(self.clock);
            if let Err(error) = self.carry_out_actions().await {
                self.fail_storage(error);
            }
            self.expire_requests();
            self.publish_status();
            if let Some(waiters) = self.stop.take() {
                self.fail_everything(Error::Shutdown);
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
            } => self.propose(command, ack, reply, self.deadline_after(timeout)),
            Request::Read {
                consistency,
                query,
                reply,
                timeout,
            } => self.read(
                consistency,
                PendingRead {
                    query,
                    reply,
                    deadline: self.deadline_after(timeout),
                    max_age_ms: None,
                },
            ),
            Request::Transfer { to, reply } => {
                let result = self
                    .raft
                    .transfer_leadership(self.clock, to)
                    .map_err(Error::from);
                if result.is_ok() {
                    info!(to = to.0, "leadership transfer started");
                }
                let _ = reply.send(result);
            }
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
            Ok(id) => {
                // Writes still waiting at or after this index were proposed in an earlier term
                // and this log no longer holds their entries. They are not necessarily lost:
                // another node may hold them and win a later election. They wait, apart, for
                // their index to commit (or for their deadline).
                while self.writes.back().is_some_and(|w| w.index >= id.index) {
                    let Some(replaced) = self.writes.pop_back() else {
                        break;
                    };
                    self.local_pending.remove(&replaced.index);
                    self.superseded
                        .insert((replaced.index, replaced.term), replaced);
                }
                // The new write has not been checked, whatever its index held before.
                self.expired_through = self.expired_through.min(id.index.prev());
                if ack == Ack::Local {
                    self.local_pending.insert(id.index);
                }
                if self.writes.back().is_some_and(|w| w.deadline > deadline) {
                    self.out_of_order
                        .insert((deadline, Key::Write(id.index, id.term)));
                }
                self.writes.push_back(PendingWrite {
                    index: id.index,
                    term: id.term,
                    ack,
                    reply: Some(reply),
                    response: None,
                    deadline,
                });
            }
            Err(error) => {
                let _ = reply.send(Err(error.into()));
            }
        }
    }

    fn read(&mut self, consistency: Consistency, pending: PendingRead<SM>) {
        let now = self.clock;
        match consistency {
            Consistency::Linearizable | Consistency::Lease => {
                let mode = if consistency == Consistency::Lease {
                    ReadMode::Lease
                } else {
                    ReadMode::Linearizable
                };
                let id = ReadId(self.next_read);
                self.next_read += 1;
                match self.raft.read(now, id, mode) {
                    Ok(()) => {
                        let deadline = pending.deadline;
                        if self
                            .reads
                            .last_key_value()
                            .is_some_and(|(_, r)| r.deadline > deadline)
                        {
                            self.out_of_order.insert((deadline, Key::Read(id)));
                        }
                        self.reads.insert(id, pending);
                    }
                    Err(error) => {
                        let _ = pending.reply.send(Err(error.into()));
                    }
                }
            }
            Consistency::AtLeast(index) => self.wait_for_apply(index, pending),
            Consistency::BoundedStaleness(bound) => {
                let max_age_ms = u64::try_from(bound.as_millis()).unwrap_or(u64::MAX);
                match self.fresh_index(now, max_age_ms) {
                    Some(index) => self.wait_for_apply(
                        index,
                        PendingRead {
                            max_age_ms: Some(max_age_ms),
                            ..pending
                        },
                    ),
                    None => {
                        let _ = pending.reply.send(Err(Error::TooStale {
                            leader_hint: self.raft.leader(),
                        }));
                    }
                }
            }
            Consistency::Stale => self.wait_for_apply(LogIndex(0), pending),
        }
    }

    /// The committed index a bounded-staleness read may be served at, at `now`: one this node
    /// can vouch covers every write acknowledged more than `max_age_ms` ago. The age is
    /// compared strictly in whole milliseconds, which keeps the true age under the bound
    /// whatever the rounding of either instant.
    fn fresh_index(&self, now: Instant, max_age_ms: u64) -> Option<LogIndex> {
        self.raft
            .fresh_commit()
            .filter(|fresh| now.ms_since(fresh.as_of) < max_age_ms)
            .map(|fresh| fresh.index)
    }

    fn wait_for_apply(&mut self, index: LogIndex, read: PendingRead<SM>) {
        let deadline = self
            .waiting_deadline
            .map_or(read.deadline, |d| d.min(read.deadline));
        self.waiting_deadline = Some(deadline);
        self.waiting_for_apply.entry(index).or_default().push(read);
    }

    /// Carries out the protocol's actions until it has none left (acknowledging a write or an
    /// apply can produce more).
    async fn carry_out_actions(&mut self) -> Result<(), String> {
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
            } = actions;
            // Duty 1: a leader's replication goes out while its own write runs.
            if !messages.is_empty() {
                self.transport.send_batch(messages);
            }
            // Duties 2 and 3.
            if hard_state.is_some() || !entries.is_empty() {
                if let Some(term) = hard_state.map(|h| h.term) {
                    if term != self.last_seen.1 {
                        debug!(term = term.0, "term changed");
                    }
                }
                let last = entries.last().map(Entry::id);
                self.store
                    .write(hard_state, entries)
                    .await
                    .map_err(|e| e.to_string())?;
                self.contract.wrote(batch);
                if let Some(last) = last {
                    self.contract.reported_persisted(last);
                    self.raft.persisted(last);
                    self.complete_local_writes(last);
                }
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
                self.complete_read(id, result).await;
            }
        }
        self.answer_waiting_reads().await;
        self.complete_all_acks();
        Ok(())
    }

    /// Applies the committed entry at `index`, read in place from the protocol's log.
    async fn apply(&mut self, index: LogIndex) -> Result<(), String> {
        let entry = self
            .raft
            .entry(index)
            .ok_or_else(|| format!("committed entry {index} is not in the log"))?;
        let term = entry.term;
        let command = match &entry.payload {
            Payload::Blank => None,
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
        // Entries are applied in order and writes are kept in order, so a write waiting for
        // this entry is at the front (or among the superseded ones, rarely).
        if self.writes.front().is_none_or(|w| w.index > index)
            && self
                .superseded
                .first_key_value()
                .is_none_or(|(k, _)| k.0 > index)
        {
            return Ok(());
        }
        // Every write waiting for this index: at most one has the committed entry's term.
        let mut waiting = Vec::new();
        if self.writes.front().is_some_and(|w| w.index <= index)
            && let Some(write) = self.writes.pop_front()
        {
            debug_assert_eq!(write.index, index, "a write was skipped by apply");
            self.local_pending.remove(&write.index);
            waiting.push(write);
        }
        while let Some(entry) = self.superseded.first_entry()
            && entry.key().0 <= index
        {
            waiting.push(entry.remove());
        }
        let mut committed = None;
        for mut write in waiting {
            if write.index == index && write.term == term {
                committed = Some(write);
            } else if let Some(reply) = write.reply.take() {
                // Another entry committed at this index: this write can never take effect.
                let _ = reply.send(Err(Error::NotLeader {
                    leader_hint: self.raft.leader(),
                }));
            }
        }
        let Some(mut write) = committed else {
            return Ok(());
        };
        match response {
            // (One whose reply was taken timed out; it needs no more tracking.)
            Some(Ok(response)) if write.ack == Ack::All && write.reply.is_some() => {
                write.response = Some(response);
                self.all_ready.insert(index, write);
            }
            Some(Ok(_)) if write.ack == Ack::All => {}
            Some(Ok(response)) => {
                if let Some(reply) = write.reply.take() {
                    let _ = reply.send(Ok(WriteOutcome {
                        index,
                        term,
                        response: Some(response),
                    }));
                }
            }
            Some(Err(error)) => {
                if let Some(reply) = write.reply.take() {
                    let _ = reply.send(Err(error));
                }
            }
            None => {}
        }
        Ok(())
    }

    /// `Ack::Local` writes are acknowledged once the leader's own log holds them durably.
    fn complete_local_writes(&mut self, last: EntryId) {
        if self.local_pending.is_empty() {
            return;
        }
        let durable: Vec<LogIndex> = self.local_pending.range(..=last.index).copied().collect();
        for index in durable {
            self.local_pending.remove(&index);
            // The write at `index` is durable if the log still holds it with its own term; the
            // batch ending at `last` wrote every entry up to it.
            let stored_term = self.raft.entry(index).map(|e| e.term);
            let Some(write) = self.write_at(index) else {
                continue;
            };
            if stored_term == Some(write.term)
                && let Some(reply) = write.reply.take()
            {
                let _ = reply.send(Ok(WriteOutcome {
                    index,
                    term: write.term,
                    response: None,
                }));
            }
        }
        // The write stays in `writes` (its reply taken) so that its apply is still matched.
    }

    /// `Ack::All` writes that are applied complete once every in-sync voter holds them.
    fn complete_all_acks(&mut self) {
        if self.all_ready.is_empty() {
            return;
        }
        if self.raft.role() != Role::Leader {
            // Committed, but this node can no longer see which replicas hold it, so the
            // `Ack::All` promise cannot be confirmed: the caller learns it timed out (the write
            // may or may not be on every in-sync voter; it is committed).
            for (_, mut write) in std::mem::take(&mut self.all_ready) {
                if let Some(reply) = write.reply.take() {
                    let _ = reply.send(Err(Error::Timeout));
                }
            }
            return;
        }
        let holders: Vec<(NodeId, LogIndex)> = self
            .raft
            .peers()
            .iter()
            .filter(|p| self.is_in_sync(p.last_ack_at))
            .map(|p| (p.id, p.match_index))
            .collect();
        let ready: Vec<LogIndex> = self
            .all_ready
            .keys()
            .copied()
            .filter(|index| holders.iter().all(|(_, matched)| matched >= index))
            .collect();
        for index in ready {
            if let Some(mut write) = self.all_ready.remove(&index)
                && let Some(reply) = write.reply.take()
            {
                let _ = reply.send(Ok(WriteOutcome {
                    index,
                    term: write.term,
                    response: write.response.take(),
                }));
            }
        }
    }

    fn is_in_sync(&self, last_ack_at: Option<Instant>) -> bool {
        let now = self.clock;
        last_ack_at.is_some_and(|at| {
            u128::from(now.ms_since(at)) <= self.config.max_replication_lag.as_millis()
        })
    }

    /// The voters in sync with this leader, itself included.
    fn in_sync_voters(&self) -> Vec<NodeId> {
        let mut ids = vec![self.raft.id()];
        ids.extend(
            self.raft
                .peers()
                .iter()
                .filter(|p| self.is_in_sync(p.last_ack_at))
                .map(|p| p.id),
        );
        ids
    }

    /// The pending write at `index`, if any.
    fn write_at(&mut self, index: LogIndex) -> Option<&mut PendingWrite<SM::Response>> {
        let position = self.writes.binary_search_by_key(&index, |w| w.index).ok()?;
        self.writes.get_mut(position)
    }

    /// The earliest deadline of a request not yet answered (or, for reads waiting on apply,
    /// possibly an earlier one that has been answered since).
    fn earliest_request_deadline(&self) -> Option<tokio::time::Instant> {
        let first_unchecked = self
            .writes
            .partition_point(|w| w.index <= self.expired_through);
        [
            self.writes.get(first_unchecked).map(|w| w.deadline),
            self.reads.first_key_value().map(|(_, r)| r.deadline),
            self.all_ready.values().map(|w| w.deadline).min(),
            self.waiting_deadline,
            self.out_of_order.first().map(|&(deadline, _)| deadline),
            self.superseded
                .values()
                .filter(|w| w.reply.is_some())
                .map(|w| w.deadline)
                .min(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Answers [`Error::Timeout`] to every request whose deadline has passed. A write that
    /// timed out keeps its record, so that its entry is still recognised when applied.
    fn expire_requests(&mut self) {
        let now = self.now;
        let first_unchecked = self
            .writes
            .partition_point(|w| w.index <= self.expired_through);
        for write in self.writes.range_mut(first_unchecked..) {
            if write.deadline > now {
                break;
            }
            self.expired_through = write.index;
            if let Some(reply) = write.reply.take() {
                let _ = reply.send(Err(Error::Timeout));
            }
        }
        self.all_ready.retain(|_, write| {
            if write.deadline > now {
                return true;
            }
            if let Some(reply) = write.reply.take() {
                let _ = reply.send(Err(Error::Timeout));
            }
            false
        });
        // A superseded write keeps its record (its fate is decided when its index commits).
        for write in self.superseded.values_mut() {
            if write.deadline <= now
                && let Some(reply) = write.reply.take()
            {
                let _ = reply.send(Err(Error::Timeout));
            }
        }
        while let Some(entry) = self.reads.first_entry()
            && entry.get().deadline <= now
        {
            let _ = entry.remove().reply.send(Err(Error::Timeout));
        }
        while let Some(&(deadline, key)) = self.out_of_order.first()
            && deadline <= now
        {
            self.out_of_order.pop_first();
            // The request may have been answered, or its index reused, since: only the one
            // with this very deadline is timed out.
            match key {
                Key::Write(index, term) => {
                    if let Some(write) = self.write_at(index)
                        && write.term == term
                        && write.deadline == deadline
                        && let Some(reply) = write.reply.take()
                    {
                        let _ = reply.send(Err(Error::Timeout));
                    }
                }
                Key::Read(id) => {
                    if self.reads.get(&id).is_some_and(|r| r.deadline == deadline)
                        && let Some(read) = self.reads.remove(&id)
                    {
                        let _ = read.reply.send(Err(Error::Timeout));
                    }
                }
            }
        }
        if self.waiting_deadline.is_some_and(|d| d <= now) {
            let mut earliest = None::<tokio::time::Instant>;
            self.waiting_for_apply.retain(|_, reads| {
                for read in std::mem::take(reads) {
                    if read.deadline <= now {
                        let _ = read.reply.send(Err(Error::Timeout));
                    } else {
                        earliest = Some(earliest.map_or(read.deadline, |e| e.min(read.deadline)));
                        reads.push(read);
                    }
                }
                !reads.is_empty()
            });
            self.waiting_deadline = earliest;
        }
    }

    async fn complete_read(&mut self, id: ReadId, result: Result<LogIndex, crate::Error>) {
        let Some(read) = self.reads.remove(&id) else {
            return;
        };
        match result {
            Ok(_) => self.answer(read).await,
            Err(error) => {
                let _ = read.reply.send(Err(error.into()));
            }
        }
    }

    async fn answer_waiting_reads(&mut self) {
        let applied = self.raft.applied_index();
        let ready: Vec<LogIndex> = self
            .waiting_for_apply
            .range(..=applied)
            .map(|(&index, _)| index)
            .collect();
        for index in ready {
            for read in self.waiting_for_apply.remove(&index).unwrap_or_default() {
                self.answer(read).await;
            }
        }
        // Forget reads whose callers gave up.
        self.waiting_for_apply.retain(|_, reads| {
            reads.retain(|r| !r.reply.is_closed());
            !reads.is_empty()
        });
    }

    async fn answer(&mut self, read: PendingRead<SM>) {
        if let Some(max_age_ms) = read.max_age_ms {
            // Judged again now that it is about to be answered (applying took time), on a
            // fresh clock: the bound is on the data's age when the read is answered.
            let now = self.protocol_time(tokio::time::Instant::now());
            match self.fresh_index(now, max_age_ms) {
                Some(index) if index <= self.raft.applied_index() => {}
                Some(index) => {
                    self.wait_for_apply(index, read);
                    return;
                }
                None => {
                    let _ = read.reply.send(Err(Error::TooStale {
                        leader_hint: self.raft.leader(),
                    }));
                    return;
                }
            }
        }
        let response = match read.query {
            Some(query) => Some(self.state_machine.query(query).await),
            None => None,
        };
        let _ = read.reply.send(Ok(ReadOutcome {
            applied_index: self.raft.applied_index(),
            response,
        }));
    }

    fn fail_storage(&mut self, error: String) {
        warn!(%error, "storage failed; stopping the node");
        if let Ok(mut fatal) = self.shared.fatal.lock() {
            *fatal = Some(error.clone());
        }
        self.fail_everything(Error::Storage(error));
        self.stop.get_or_insert_with(Vec::new);
    }

    fn fail_everything(&mut self, error: Error) {
        self.local_pending.clear();
        self.out_of_order.clear();
        let writes = std::mem::take(&mut self.writes);
        let all_ready = std::mem::take(&mut self.all_ready);
        let superseded = std::mem::take(&mut self.superseded);
        for mut write in writes
            .into_iter()
            .chain(all_ready.into_values())
            .chain(superseded.into_values())
        {
            if let Some(reply) = write.reply.take() {
                let _ = reply.send(Err(error.clone()));
            }
        }
        for (_, read) in std::mem::take(&mut self.reads) {
            let _ = read.reply.send(Err(error.clone()));
        }
        for (_, reads) in std::mem::take(&mut self.waiting_for_apply) {
            for read in reads {
                let _ = read.reply.send(Err(error.clone()));
            }
        }
    }

    /// Publishes a new status when something a watcher cares about changed, and records
    /// leadership changes, lease changes and lagging followers as tracing events.
    fn publish_status(&mut self) {
        let now = self.clock;
        let (role, term, leader) = (self.raft.role(), self.raft.term(), self.raft.leader());
        let changed_hands = (role, term, leader) != self.last_seen;
        // While busy, rebuild the status at most once per millisecond (the clock's resolution);
        // a change of role, term or leader is published at once.
        if !changed_hands && now == self.status_built_at && self.stop.is_none() {
            self.status_dirty = true;
            return;
        }
        self.status_built_at = now;
        self.status_dirty = false;
        if changed_hands {
            let (old_role, _, old_leader) = self.last_seen;
            if role != old_role {
                info!(?role, term = term.0, "role changed");
            }
            if let Some(new_leader) = leader {
                // A failed pre-vote passes through "no leader" and back to the same leader in the
                // same term: not a change of leader.
                let last = self.failovers.back().map(|f| (f.term, f.new_leader));
                if last != Some((term, new_leader)) {
                    let previous = old_leader.or(last.map(|(_, l)| l));
                    self.record_failover(term, previous, new_leader, now);
                }
            }
            self.last_seen = (role, term, leader);
        }
        let lease = self.raft.lease_holds();
        if lease != self.lease_held {
            debug!(lease, "lease {}", if lease { "gained" } else { "lost" });
            self.lease_held = lease;
        }
        let last = self.raft.last_log_id().index;
        let peers: Vec<PeerStatus> = self
            .raft
            .peers()
            .iter()
            .map(|p| PeerStatus {
                id: p.id,
                match_index: p.match_index,
                lag_entries: last.0.saturating_sub(p.match_index.0),
                since_last_ack_ms: p.last_ack_at.map(|at| now.ms_since(at)),
                in_sync: self.is_in_sync(p.last_ack_at),
            })
            .collect();
        for peer in &peers {
            let was_out = self.out_of_sync.contains(&peer.id);
            if !peer.in_sync && !was_out {
                warn!(
                    peer = peer.id.0,
                    lag = peer.lag_entries,
                    "follower fell out of sync"
                );
                self.out_of_sync.insert(peer.id);
            } else if peer.in_sync && was_out {
                info!(peer = peer.id.0, "follower back in sync");
                self.out_of_sync.remove(&peer.id);
            }
        }
        let status = Status {
            id: self.raft.id(),
            role,
            term,
            leader,
            commit_index: self.raft.commit_index(),
            applied_index: self.raft.applied_index(),
            last_log_index: last,
            lease_remaining_ms: self.raft.lease_valid_until().map(|end| end.ms_since(now)),
            staleness_ms: self.raft.fresh_commit().map(|f| now.ms_since(f.as_of)),
            peers,
            failovers: self.failovers.iter().cloned().collect(),
            connections: self.transport.peer_connections(),
        };
        self.status_tx.send_if_modified(|current| {
            if *current == status {
                false
            } else {
                *current = status;
                true
            }
        });
    }

    fn record_failover(
        &mut self,
        term: Term,
        old_leader: Option<NodeId>,
        new_leader: NodeId,
        now: Instant,
    ) {
        let me = self.raft.id();
        let trigger = if new_leader != me {
            FailoverTrigger::Observed
        } else if self.raft.elected_by_transfer() {
            FailoverTrigger::Transfer
        } else {
            FailoverTrigger::Election
        };
        let unapplied = (new_leader == me).then(|| {
            self.raft
                .last_log_id()
                .index
                .0
                .saturating_sub(self.raft.applied_index().0)
        });
        info!(
            term = term.0,
            old = ?old_leader.map(|n| n.0),
            new = new_leader.0,
            ?trigger,
            "leader changed"
        );
        if self.failovers.len() >= self.config.failover_history.max(1) {
            self.failovers.pop_front();
        }
        self.failovers.push_back(Failover {
            term,
            old_leader,
            new_leader,
            trigger,
            at_ms: now.0,
            new_leader_unapplied_entries: unapplied,
        });
    }
}
