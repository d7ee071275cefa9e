//! Regression tests for node-level bugs found in review, each on a 3-node in-process cluster
//! with paused tokio time (so the timings are exact and the runs instant).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use async_trait::async_trait;
use raft_core::node::{
    Ack, Consistency, Error, LogStore, Node, NodeConfig, NodeHandle, Recovered, StorageError,
};
use raft_core::{Entry, HardState, LogIndex, NodeId, Role};
use raft_net::ChannelNetwork;
use raft_storage::{MemLogStore, MemSnapshotStore};
use raft_tests::kv::{KvCommand, KvResponse, KvStore};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A store whose next write takes `stall_ms` (then the stall resets): a slow disk; and which
/// refuses every write once `poisoned` is set, as a store does after a failed fsync.
#[derive(Clone)]
struct SlowStore {
    inner: MemLogStore,
    stall_ms: Arc<AtomicU64>,
    poisoned: Arc<std::sync::atomic::AtomicBool>,
}

#[async_trait]
impl LogStore for SlowStore {
    async fn recover(&mut self) -> Result<Recovered, StorageError> {
        self.inner.recover().await
    }
    async fn write(&mut self, h: Option<HardState>, e: Vec<Entry>) -> Result<(), StorageError> {
        if self.poisoned.load(Ordering::SeqCst) {
            return Err(StorageError::Poisoned("fsync failed earlier".into()));
        }
        let ms = self.stall_ms.swap(0, Ordering::SeqCst);
        if ms > 0 {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        self.inner.write(h, e).await
    }
    async fn truncate_suffix(&mut self, from: LogIndex) -> Result<(), StorageError> {
        self.inner.truncate_suffix(from).await
    }
    async fn purge_prefix(&mut self, up_to: raft_core::EntryId) -> Result<(), StorageError> {
        self.inner.purge_prefix(up_to).await
    }
    async fn read(&mut self, from: LogIndex, to: LogIndex) -> Result<Vec<Entry>, StorageError> {
        self.inner.read(from, to).await
    }
    async fn save_voters(&mut self, voters: &BTreeSet<NodeId>) -> Result<(), StorageError> {
        self.inner.save_voters(voters).await
    }
}

struct Cluster {
    network: ChannelNetwork,
    nodes: BTreeMap<NodeId, NodeHandle<KvStore>>,
    stalls: BTreeMap<NodeId, Arc<AtomicU64>>,
}

async fn cluster() -> Cluster {
    cluster_with(|_| {}).await
}

async fn cluster_with(adjust: impl Fn(&mut NodeConfig)) -> Cluster {
    let network = ChannelNetwork::new();
    let voters = [NodeId(1), NodeId(2), NodeId(3)];
    let (mut nodes, mut stalls) = (BTreeMap::new(), BTreeMap::new());
    for id in voters {
        let (inbox, inbound) = raft_core::node::inbox(1024);
        network.register(id, inbox);
        let mut config = NodeConfig::new(id, voters);
        config.seed = id.0;
        config.request_timeout = Duration::from_secs(30);
        adjust(&mut config);
        let stall = Arc::new(AtomicU64::new(0));
        let store = SlowStore {
            inner: MemLogStore::new(),
            stall_ms: stall.clone(),
            poisoned: Arc::default(),
        };
        let transport = network.transport(id);
        let snapshots = MemSnapshotStore::new();
        let handle = Node::start(
            config,
            KvStore::default(),
            store,
            snapshots,
            transport,
            inbound,
        );
        let handle = handle.await;
        nodes.insert(id, handle.unwrap());
        stalls.insert(id, stall);
    }
    Cluster {
        network,
        nodes,
        stalls,
    }
}

impl Cluster {
    async fn leader(&self, except: Option<NodeId>) -> NodeHandle<KvStore> {
        loop {
            let found = self.nodes.values().find(|n| {
                let s = n.status();
                Some(n.id()) != except && s.role == Role::Leader && s.commit_index.0 > 0
            });
            if let Some(node) = found {
                return node.clone();
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

impl Cluster {
    fn follower_of(&self, leader: &NodeHandle<KvStore>) -> NodeHandle<KvStore> {
        let follower = self.nodes.values().find(|n| n.id() != leader.id());
        follower.expect("a follower").clone()
    }
}

type Pending = tokio::task::JoinHandle<Result<raft_core::node::WriteOutcome<KvResponse>, Error>>;

/// Proposes `n` writes on `node`, 1 ms apart, each in its own task.
async fn spawn_writes(node: &NodeHandle<KvStore>, n: usize) -> Vec<Pending> {
    let mut pending = Vec::new();
    for i in 0..n {
        let handle = node.clone();
        let command = put("w", &i.to_string());
        pending.push(tokio::spawn(async move {
            handle.propose(command, Ack::Quorum).await
        }));
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    pending
}

/// Heals the network, lets `first` catch up with `second`, the current leader, and has
/// `second` hand leadership to `first`; returns once `first` leads and has committed.
async fn hand_leadership_back(
    cluster: &Cluster,
    first: &NodeHandle<KvStore>,
    second: &NodeHandle<KvStore>,
) {
    cluster.network.heal();
    loop {
        let s = first.status();
        if s.leader == Some(second.id()) && s.applied_index >= second.status().commit_index {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    second.transfer_leadership(first.id()).await.unwrap();
    loop {
        let s = first.status();
        if s.role == Role::Leader && s.commit_index.0 > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Awaits `call`, which must fail with `Timeout` once the cluster's 30 s request timeout has
/// passed, and not before. (The outer 120 s bound only turns a node that never answers into a
/// failure instead of a hang.)
async fn assert_times_out_after_30_s<T: std::fmt::Debug>(
    call: impl std::future::Future<Output = Result<T, Error>>,
) {
    let started = tokio::time::Instant::now();
    let outcome = tokio::time::timeout(Duration::from_secs(120), call)
        .await
        .expect("the node answers");
    assert!(matches!(outcome, Err(Error::Timeout)), "{outcome:?}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(30) && waited < Duration::from_secs(31),
        "{waited:?}"
    );
}

fn put(key: &str, value: &str) -> KvCommand {
    KvCommand::Put {
        key: key.into(),
        value: value.into(),
    }
}

/// The message or request that wakes the node must be judged at the time it arrives. Here the
/// old leader, cut off and stuck 400 ms in a slow write, gets a lease read after a new leader
/// committed a newer value; it must not serve its old value from a lease long expired.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_lease_read_is_judged_at_the_time_it_arrives() {
    let cluster = cluster().await;
    let old = cluster.leader(None).await;
    old.propose(put("x", "a"), Ack::Quorum).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    cluster.network.isolate(old.id());
    cluster.stalls[&old.id()].store(400, Ordering::SeqCst);
    let writer = old.clone();
    tokio::spawn(async move {
        let _ = writer.propose(put("x", "lost"), Ack::Local).await;
    });
    let new = cluster.leader(Some(old.id())).await;
    new.propose(put("x", "b"), Ack::Quorum).await.unwrap();
    let read = old.query(Consistency::Lease, "x".into()).await;
    assert!(
        !matches!(&read, Ok(r) if r.response.as_deref() == Some("a")),
        "stale lease read: {read:?}"
    );
}

/// A write lost in a change of leader, whose index a later write reuses, fails with
/// `NotLeader` (lost), not `Shutdown`.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_lost_write_whose_index_is_reused_reports_not_leader() {
    let cluster = cluster().await;
    let first = cluster.leader(None).await;
    first.propose(put("x", "1"), Ack::Quorum).await.unwrap();
    cluster.network.isolate(first.id());
    let pending = spawn_writes(&first, 3).await;
    let second = cluster.leader(Some(first.id())).await;
    hand_leadership_back(&cluster, &first, &second).await;
    first.propose(put("y", "new"), Ack::Quorum).await.unwrap();
    for write in pending {
        match write.await.unwrap() {
            Err(Error::NotLeader { .. }) => {}
            other => panic!("a lost write must fail with NotLeader, got {other:?}"),
        }
    }
}

/// A follower whose pre-vote fails (it cannot hear the leader for a while) and then hears the
/// same leader again has seen no change of leader: the failover history gains nothing.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_failed_pre_vote_is_not_a_failover() {
    let cluster = cluster().await;
    let leader = cluster.leader(None).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let follower = cluster.follower_of(&leader);
    let before = follower.status().failovers.len();
    cluster.network.cut(leader.id(), follower.id());
    tokio::time::sleep(Duration::from_millis(1000)).await;
    cluster.network.heal();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = follower.status();
    assert_eq!(after.leader, Some(leader.id()));
    assert_eq!(after.failovers.len(), before, "{:?}", after.failovers);
}

/// Once every inbox is dropped (the transport stopped), the node keeps serving its handles
/// instead of spinning on a closed channel: requests still get answers and time moves on.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_node_whose_transport_stopped_still_answers() {
    let cluster = cluster().await;
    let leader = cluster.leader(None).await;
    let follower = cluster.follower_of(&leader);
    cluster.network.unregister(follower.id());
    // Were the loop spinning, this sleep would never return on a current-thread runtime.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let read = follower
        .query(Consistency::Stale, "x".into())
        .await
        .unwrap();
    assert_eq!(read.response, None);
}

/// Request deadlines are kept by the node itself (no timer per request): a write that cannot
/// commit and a read that cannot be served each fail with `Timeout` once `request_timeout`
/// (30 s here) has passed, not before.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn requests_that_cannot_complete_time_out_at_their_deadline() {
    let cluster = cluster().await;
    let leader = cluster.leader(None).await;
    leader.propose(put("x", "1"), Ack::Quorum).await.unwrap();
    let follower = cluster.follower_of(&leader);
    cluster.network.isolate(leader.id());

    assert_times_out_after_30_s(leader.propose(put("x", "2"), Ack::Quorum)).await;
    let far = LogIndex(1_000_000);
    assert_times_out_after_30_s(follower.query(Consistency::AtLeast(far), "x".into())).await;
    // The node still serves requests that can complete.
    let read = follower
        .query(Consistency::Stale, "x".into())
        .await
        .unwrap();
    assert_eq!(read.response.as_deref(), Some("1"));
}

/// The request timeout counts from when the node takes a request. A node blocked in its
/// storage (here a disk write stalled for 40 s) cannot answer until the call returns, so a
/// caller that needs a hard bound wraps the call in `tokio::time::timeout`; a request whose
/// caller gave up that way while it sat in the queue is never started.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_request_whose_caller_gave_up_in_the_queue_is_not_started() {
    let cluster = cluster().await;
    let leader = cluster.leader(None).await;
    leader.propose(put("x", "1"), Ack::Quorum).await.unwrap();
    let before = leader.status().last_log_index;
    // Cut off, so that nothing but its own queue reaches it when the disk returns.
    cluster.network.isolate(leader.id());
    cluster.stalls[&leader.id()].store(40_000, Ordering::SeqCst);
    let started = tokio::time::Instant::now();
    let stuck = leader.clone();
    let stuck = tokio::spawn(async move { stuck.propose(put("x", "2"), Ack::Quorum).await });
    tokio::time::sleep(Duration::from_millis(1)).await;
    let queued = tokio::time::timeout(
        Duration::from_secs(5),
        leader.propose(put("x", "3"), Ack::Quorum),
    )
    .await;
    assert!(queued.is_err(), "the caller's own bound: {queued:?}");
    // The stalled write is answered once the disk returns, 40 s in (past its 30 s).
    let stuck = stuck.await.unwrap();
    assert!(started.elapsed() >= Duration::from_secs(40));
    assert!(matches!(stuck, Err(Error::Timeout)), "{stuck:?}");
    tokio::time::sleep(Duration::from_millis(10)).await;
    // The stalled write is in its log; the abandoned one was never appended.
    assert_eq!(leader.status().last_log_index, before.next());
}

/// A write proposed at an index whose earlier writes already timed out (they were lost in a
/// change of leader) still gets its own deadline checked.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_write_at_a_reused_index_still_times_out() {
    let cluster = cluster().await;
    let first = cluster.leader(None).await;
    first.propose(put("x", "1"), Ack::Quorum).await.unwrap();
    cluster.network.isolate(first.id());
    for write in spawn_writes(&first, 5).await {
        let outcome = write.await.unwrap();
        assert!(matches!(outcome, Err(Error::Timeout)), "{outcome:?}");
    }
    // Another leader replaces those entries; then the first leads again, at lower indexes.
    let second = cluster.leader(Some(first.id())).await;
    hand_leadership_back(&cluster, &first, &second).await;
    cluster.network.isolate(first.id());
    assert_times_out_after_30_s(first.propose(put("z", "1"), Ack::Quorum)).await;
}

/// A request that waited for room in a full queue has less of its timeout left than requests
/// queued before it; it still times out at its own deadline, not theirs.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_request_that_waited_for_room_times_out_at_its_own_deadline() {
    const QUEUE: usize = 4096; // the node's request queue
    // Without CheckQuorum the cut-off leader stays leader, so its writes wait until they time
    // out (rather than fail when it steps down).
    let cluster = cluster_with(|config| config.raft.check_quorum = false).await;
    let leader = cluster.leader(None).await;
    leader.propose(put("x", "1"), Ack::Quorum).await.unwrap();
    cluster.network.isolate(leader.id());
    // A write stalls the node's disk for 3 s; meanwhile its queue fills up.
    cluster.stalls[&leader.id()].store(3_000, Ordering::SeqCst);
    let spawn_write = |i: usize| {
        let handle = leader.clone();
        tokio::spawn(async move { handle.propose(put("q", &i.to_string()), Ack::Quorum).await })
    };
    let mut queued = vec![spawn_write(0)];
    tokio::time::sleep(Duration::from_millis(1)).await;
    queued.extend((1..=QUEUE).map(spawn_write));
    tokio::time::sleep(Duration::from_millis(10)).await;
    // This one waits about 3 s for room, so it has about 27 s left when the node takes it,
    // while every write queued before it has 30.
    assert_times_out_after_30_s(leader.propose(put("late", "1"), Ack::Quorum)).await;
    for write in queued {
        let outcome = write.await.unwrap();
        assert!(matches!(outcome, Err(Error::Timeout)), "{outcome:?}");
    }
}

/// A failed store stops the node, and every caller, then and later, learns the kind of the
/// failure (here a poisoned store), not just a message.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_storage_failure_reaches_callers_with_its_kind() {
    let poisoned = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (inbox, inbound) = raft_core::node::inbox(16);
    let network = ChannelNetwork::new();
    network.register(NodeId(1), inbox);
    let store = SlowStore {
        inner: MemLogStore::new(),
        stall_ms: Arc::default(),
        poisoned: poisoned.clone(),
    };
    let config = NodeConfig::new(NodeId(1), [NodeId(1)]);
    let node = Node::start(
        config,
        KvStore::default(),
        store,
        MemSnapshotStore::new(),
        network.transport(NodeId(1)),
        inbound,
    )
    .await
    .unwrap();
    while node.status().role != Role::Leader {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    node.propose(put("x", "1"), Ack::Quorum).await.unwrap();
    poisoned.store(true, Ordering::SeqCst);
    for _ in 0..2 {
        match node.propose(put("x", "2"), Ack::Quorum).await {
            Err(Error::Storage { kind, .. }) => {
                assert_eq!(kind, raft_core::node::StorageErrorKind::Poisoned);
            }
            other => panic!("expected a poisoned store, got {other:?}"),
        }
    }
}

/// A state machine whose snapshot image is held back until `gate` opens: a slow build.
struct GatedCounter {
    count: u64,
    gate: Arc<tokio::sync::Semaphore>,
}

/// The image of a [`GatedCounter`], released once its gate opens.
struct GatedImage {
    count: Option<u64>,
    gate: Arc<tokio::sync::Semaphore>,
}

#[async_trait]
impl raft_core::node::SnapshotSource for GatedImage {
    async fn next_chunk(&mut self) -> Result<Option<bytes::Bytes>, String> {
        let _open = self.gate.acquire().await.map_err(|e| e.to_string())?;
        Ok(self
            .count
            .take()
            .map(|c| bytes::Bytes::copy_from_slice(&c.to_be_bytes())))
    }
}

#[async_trait]
impl raft_core::node::StateMachine for GatedCounter {
    type Command = u64;
    type Response = u64;
    type Query = ();
    type QueryResponse = u64;
    async fn apply(&mut self, _: LogIndex, add: u64) -> u64 {
        self.count += add;
        self.count
    }
    async fn query(&self, _: ()) -> u64 {
        self.count
    }
    async fn snapshot(&self) -> Result<Box<dyn raft_core::node::SnapshotSource>, String> {
        Ok(Box::new(GatedImage {
            count: Some(self.count),
            gate: self.gate.clone(),
        }))
    }
    async fn restore(
        &mut self,
        _: &raft_core::SnapshotMeta,
        image: &mut raft_core::node::SnapshotReader<'_>,
    ) -> Result<(), String> {
        let bytes = image.read_to_end().await?;
        self.count = u64::from_be_bytes(bytes.try_into().map_err(|_| "8 bytes")?);
        Ok(())
    }
}

/// A snapshot asked for while a slower one is being built covers every entry applied when it
/// was asked for: the node takes another after the build under way, instead of answering with
/// that build, which ends short.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_asked_during_a_build_covers_what_was_applied_when_asked() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let network = ChannelNetwork::new();
    let (inbox, inbound) = raft_core::node::inbox(64);
    network.register(NodeId(1), inbox);
    let mut config = NodeConfig::new(NodeId(1), [NodeId(1)]);
    config.snapshot_every = 0;
    let machine = GatedCounter {
        count: 0,
        gate: gate.clone(),
    };
    let (log, snapshots) = (MemLogStore::new(), MemSnapshotStore::new());
    let transport = network.transport(NodeId(1));
    let node = Node::start(config, machine, log, snapshots, transport, inbound)
        .await
        .unwrap();
    while node.status().role != Role::Leader {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let first = node.propose(1, Ack::Quorum).await.unwrap().index;
    let early = tokio::spawn({
        let node = node.clone();
        async move { node.snapshot().await }
    });
    // The first build has started (and waits at its gate) before more is applied.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut last = first;
    for _ in 0..5 {
        last = node.propose(1, Ack::Quorum).await.unwrap().index;
    }
    let late = tokio::spawn({
        let node = node.clone();
        async move { node.snapshot().await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    gate.add_permits(1_000);
    let early = early.await.unwrap().unwrap();
    let late = late.await.unwrap().unwrap();
    assert!(
        early.last.index >= first && early.last.index < last,
        "{early:?}"
    );
    assert!(
        late.last.index >= last,
        "asked after index {last} was applied, got a snapshot ending at {}",
        late.last.index
    );
    node.shutdown().await;
}
