//! The cluster harness: a [`Simulation`] builder, and the run of one seed.

use crate::SimStateMachine;
use crate::audit::READ_BACK_MS;
use crate::checker::{DEFAULT_STEP_BUDGET, check_with_budget};
use crate::churn::ChurnPlan;
use crate::client::Client;
use crate::director::{Directive, Director};
use crate::invariants::Observer;
use crate::model::{Model, OpOf, RetOf};
use crate::nemesis::{FaultRecord, Injector, Nemesis, NodeEvent, host};
use crate::recording::{Applied, Recording};
use crate::report::Report;
use crate::storage::{LOG_DIR, SNAPSHOT_DIR, Storage};
use crate::transport::{BoxedTransport, NodeStart, TransportSeam, TransportStart};
use crate::world::{SharedWorld, World, now_ms};
use raft_core::node::{Consistency, LogStore, Node, NodeConfig, SnapshotStore, Transport};
use raft_core::{NodeId, Role};
use raft_net::{Spawner, TcpConfig, TcpTransport, TurmoilNet};
use raft_storage::{
    FileLogOptions, FileLogStore, FileSnapshotStore, MemLogStore, MemSnapshotStore,
};
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::time::{Duration, SystemTime};

/// The port every simulated node listens on.
const PORT: u16 = 7000;
/// The cluster id the nodes' transports agree on.
const CLUSTER_ID: u64 = 0x51_u64 << 48 | 0x4D;
/// How long after the faults stop (and the clients are done) a leader must be elected.
const LIVENESS_MS: u64 = 10_000;
/// Simulated time a run may take beyond its workload before it is cut short.
const GRACE: Duration = Duration::from_secs(60);
/// The granularity at which a crash tears a write that was not synced, on the simulated disk.
const TORN_WRITE_BLOCK_BYTES: u64 = 64;
/// The number of seeds [`Simulation::check`] runs unless told otherwise.
pub const DEFAULT_SEEDS: u64 = 4;

type ClientFn<SM> = Rc<dyn Fn(Client<SM>) -> Pin<Box<dyn Future<Output = ()>>>>;
type DirectorFn<SM> = Rc<dyn Fn(Director<SM>) -> Pin<Box<dyn Future<Output = ()>>>>;

/// A simulated cluster of your state machine under a nemesis, with clients you write, checked
/// against a model. A builder; see the crate documentation for a complete example.
///
/// Each run ([`Simulation::run`], or [`Simulation::check`] for the seeds the environment
/// asks for) is decided by its seed: turmoil's network, the nemesis, every node's randomness
/// and the generators the clients get from [`Client::rng`]. The same seed replays the same
/// run.
///
/// # The run
///
/// 1. Every node starts on a host of its own (`n1`, `n2`, ...) with the real node
///    (`raft_core::node::Node`) and the real TCP transport over turmoil's network (or your
///    wrapper around it, [`Simulation::transport`]), on a fresh state machine from your
///    factory, wrapped to record what it applies ([`Recording`]). Spare hosts
///    ([`Simulation::spares`]) start empty and wait to be added.
/// 2. The clients run; the nemesis injects a fault every few hundred milliseconds, each
///    undoing the one before, for [`Simulation::duration`] (or until every client returned).
/// 3. Then every fault is undone and every host brought up; [`Client::running`] turns false, and
///    the clients finish. Within 10 simulated seconds a leader must then hold a committed
///    membership that is not a joint one, and every voter of it (the final voters) must follow
///    that leader.
/// 4. Every host is crashed, and the final voters' hosts started again to read their stores
///    back (as a restart would find them) instead of running their nodes: with
///    [`Storage::Memory`], the stores the harness kept; with [`Storage::SimulatedDisk`], the
///    files the crash left; with [`Storage::custom`], the stores `make(node, start)` returns for
///    one more start. A latest snapshot counts only if its image restores into a fresh state
///    machine from your factory.
/// 5. The checks: the history's linearizability against the model; every answer that names a
///    log index against the model at that index; read-your-writes; every bounded-staleness
///    read against its bound; the invariants observed on every node's status after every step
///    (at most one leader per term, terms and commit indexes that never go back within a
///    start, applied never beyond committed); that replicas applied the same command, with the
///    same response, at every index; and the store audit: every write acknowledged at
///    `Ack::Quorum` or `Ack::All` is on a majority of the final voters' stores, in the log at
///    its index with its term and its command's bytes, or at or below the index a snapshot
///    covers (see the crate documentation, "What is checked").
pub struct Simulation<SM: SimStateMachine, M> {
    state_machine: Rc<dyn Fn(NodeId) -> SM>,
    model: M,
    nodes: u64,
    spares: u64,
    duration: Duration,
    latency: (Duration, Duration),
    nemesis: Nemesis,
    storage: Storage,
    configure: Rc<dyn Fn(&mut NodeConfig)>,
    transport: TransportSeam,
    clients: Vec<(String, ClientFn<SM>)>,
    director: Option<DirectorFn<SM>>,
    tcp_config: Rc<dyn Fn(NodeId, &mut TcpConfig)>,
    step_budget: u64,
    default_seeds: u64,
    test_name: Option<String>,
}

impl<SM, M> Simulation<SM, M>
where
    SM: SimStateMachine,
    M: Model<Op = OpOf<SM>, Ret = RetOf<SM>>,
{
    /// A simulation of `state_machine` (called for each start of each node: a fresh, empty
    /// state machine) checked against `model`, with the defaults: 3 nodes, 3 seconds of faults
    /// from the default [`Nemesis`], message latencies of 1 to 10 ms, [`Storage::Memory`], and
    /// no clients yet.
    pub fn new(state_machine: impl Fn(NodeId) -> SM + 'static, model: M) -> Self {
        Simulation {
            state_machine: Rc::new(state_machine),
            model,
            nodes: 3,
            spares: 0,
            duration: Duration::from_secs(3),
            latency: (Duration::from_millis(1), Duration::from_millis(10)),
            nemesis: Nemesis::default(),
            storage: Storage::Memory,
            configure: Rc::new(|_: &mut NodeConfig| {}),
            transport: TransportSeam::default(),
            clients: Vec::new(),
            director: None,
            tcp_config: Rc::new(|_: NodeId, _: &mut TcpConfig| {}),
            step_budget: DEFAULT_STEP_BUDGET,
            default_seeds: DEFAULT_SEEDS,
            test_name: None,
        }
    }

    /// The number of voters (default 3; at least 1).
    pub fn nodes(mut self, nodes: u64) -> Self {
        self.nodes = nodes.max(1);
        self
    }

    /// Spare hosts (default 0), `n<nodes + 1>` onwards: each runs a node that starts empty,
    /// forms no cluster of its own and waits to be added (`NodeConfig::joining`), by
    /// [`crate::Fault::MembershipChange`] or by your clients through [`Client::handle`]. Every
    /// node's transport knows every host's address from the start, as a deployment's
    /// configuration would list its hosts. The nemesis acts on spares as on any host.
    pub fn spares(mut self, spares: u64) -> Self {
        self.spares = spares;
        self
    }

    /// How long the faults go on (default 3 s of simulated time); the clients see
    /// [`Client::running`] until then. At least 1 s is used: a shorter run ends before the
    /// first election, and its clients would find no leader.
    pub fn duration(mut self, duration: Duration) -> Self {
        self.duration = duration.max(Duration::from_secs(1));
        self
    }

    /// The least and the most a message takes on a healthy link (default 1 to 10 ms).
    ///
    /// turmoil's own default (up to 100 ms) against the node's default election timeout
    /// (150 to 300 ms) makes leadership flap: a heartbeat round trip can take most of an
    /// election timeout. A run whose maximum latency exceeds a third of the minimum election
    /// timeout gets a warning in its [`Report`] (and a `tracing` warning).
    pub fn latency(mut self, min: Duration, max: Duration) -> Self {
        self.latency = (min, max.max(min));
        self
    }

    /// The faults (default: [`Nemesis::default`]).
    pub fn nemesis(mut self, nemesis: Nemesis) -> Self {
        self.nemesis = nemesis;
        self
    }

    /// Where nodes keep their logs and snapshots (default [`Storage::Memory`]).
    pub fn storage(mut self, storage: Storage) -> Self {
        self.storage = storage;
        self
    }

    /// Adjusts each node's configuration before it starts (timeouts, snapshot policy, the
    /// protocol's `Config`). The harness has set the node's id, voters and seed (leave them),
    /// a 1 s request timeout, and a snapshot policy drawn from the seed (a snapshot every 20 to
    /// 200 entries, 0 to 20 entries kept, chunks of 16 to 160 bytes) so that snapshots are taken,
    /// sent and restored many times in a run.
    pub fn configure(mut self, configure: impl Fn(&mut NodeConfig) + 'static) -> Self {
        self.configure = Rc::new(configure);
        self
    }

    /// Wraps each node's TCP transport in a transport of yours: `wrap` is called at every
    /// start of every node with the node's [`NodeStart`] and its `TcpTransport<TurmoilNet>`
    /// (from `raft-net`, started and listening), and the node sends through what it returns.
    /// This is how a transport decorator (compression, encryption, batching, a fault of its
    /// own) meets the simulated network, partitions and crashes. Inbound messages still arrive
    /// through the TCP transport's listener, which stops when its last clone is dropped: keep
    /// it (or a clone) in your wrapper, and pass `membership_changed` and `peer_connections`
    /// through to it. Draw any randomness from [`NodeStart::seed`], and spawn any task with
    /// `tokio::task::spawn_local`, so that a seed replays the run.
    ///
    /// ```
    /// use raft_core::Message;
    /// use raft_core::node::{PeerConnection, Transport};
    /// use std::sync::atomic::{AtomicU64, Ordering};
    ///
    /// /// Counts what its node sends.
    /// struct Counted<T> { inner: T, sent: AtomicU64 }
    ///
    /// impl<T: Transport> Transport for Counted<T> {
    ///     fn send(&self, message: Message) {
    ///         self.sent.fetch_add(1, Ordering::Relaxed);
    ///         self.inner.send(message);
    ///     }
    ///     fn membership_changed(&self, membership: &raft_core::Membership) {
    ///         self.inner.membership_changed(membership);
    ///     }
    ///     fn peer_connections(&self) -> Vec<(raft_core::NodeId, PeerConnection)> {
    ///         self.inner.peer_connections()
    ///     }
    /// }
    ///
    /// # fn wire<SM: raft_sim::SimStateMachine, M>(simulation: raft_sim::Simulation<SM, M>)
    /// # where M: raft_sim::Model<Op = raft_sim::OpOf<SM>, Ret = raft_sim::RetOf<SM>> {
    /// let simulation = simulation.transport(|_node, tcp| Counted { inner: tcp, sent: AtomicU64::new(0) });
    /// # let _ = simulation;
    /// # }
    /// ```
    pub fn transport<T: Transport>(
        mut self,
        wrap: impl Fn(NodeStart, TcpTransport<TurmoilNet>) -> T + 'static,
    ) -> Self {
        self.transport = TransportSeam::Wrap(Rc::new(move |node, tcp| Box::new(wrap(node, tcp))));
        self
    }

    /// Replaces each node's TCP transport with a transport of yours, on both sides: `start`
    /// is called at every start of every node with a [`TransportStart`] (the node, the address
    /// to listen on, its peers' addresses, and the node's `Inbox`) and returns, once started,
    /// the transport the node sends through; what it receives for the node it hands to the
    /// inbox. It runs on the node's host, so turmoil's `turmoil::net` sockets reach the other
    /// hosts through the simulated network, under its partitions, delays and crashes (a crash
    /// drops every task of the host, yours too). An `Err` is reported as a node that could not
    /// start. Spawn tasks with `tokio::task::spawn_local` and draw randomness from
    /// [`NodeStart::seed`], so that a seed replays the run. `raft_net::conformance` checks a
    /// transport's contract outside a simulation; this checks it under faults, end to end.
    ///
    /// ```
    /// use raft_net::{Spawner, TcpConfig, TcpTransport, TurmoilNet};
    ///
    /// # fn wire<SM: raft_sim::SimStateMachine, M>(simulation: raft_sim::Simulation<SM, M>)
    /// # where M: raft_sim::Model<Op = raft_sim::OpOf<SM>, Ret = raft_sim::RetOf<SM>> {
    /// // raft-net's TCP transport, started by hand: a transport of your own starts the same way.
    /// let simulation = simulation.own_transport(|start| async move {
    ///     let config = TcpConfig::new(start.node.node, 7, start.listen, start.peers);
    ///     TcpTransport::start(TurmoilNet, config, start.inbox, Spawner::local())
    ///         .await
    ///         .map_err(|error| error.to_string())
    /// });
    /// # let _ = simulation;
    /// # }
    /// ```
    pub fn own_transport<T, F, Fut>(mut self, start: F) -> Self
    where
        T: Transport,
        F: Fn(TransportStart) -> Fut + 'static,
        Fut: Future<Output = Result<T, String>> + 'static,
    {
        let start = Rc::new(start);
        self.transport = TransportSeam::Own(Rc::new(move |transport_start| {
            let start = Rc::clone(&start);
            Box::pin(async move {
                let transport = start(transport_start).await?;
                Ok(Box::new(transport) as Box<dyn Transport>)
            })
        }));
        self
    }

    /// Adds a client named `name` running `workload`, which is called once per run with the
    /// run's [`Client`]. The run ends when every client's future has returned, so loop while
    /// [`Client::running`].
    pub fn client<F, Fut>(mut self, name: impl Into<String>, workload: F) -> Self
    where
        F: Fn(Client<SM>) -> Fut + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        self.clients.push((name.into(), boxed(workload)));
        self
    }

    /// Adds `count` clients named `c1`, `c2`, ... running the same `workload` (each gets its
    /// own [`Client`], whose [`Client::index`] and [`Client::rng`] tell them apart).
    pub fn clients<F, Fut>(mut self, count: u64, workload: F) -> Self
    where
        F: Fn(Client<SM>) -> Fut + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let workload = boxed(workload);
        let first = self.clients.len() as u64;
        for i in 0..count {
            self.clients
                .push((format!("c{}", first + i + 1), Rc::clone(&workload)));
        }
        self
    }

    /// Adds a director: `direct` is called once per run with the run's [`Director`], and runs
    /// beside the clients and the nemesis, injecting faults of its choosing when it sees fit
    /// (cut off each new leader with one follower, keep a follower away until the others have
    /// compacted past it, empty a node's stores) and reporting what it finds wrong
    /// ([`Director::problem`]). Loop while [`Director::running`]: the run ends when the
    /// director has returned too. Usually with `Nemesis::none()`, whose faults would undo the
    /// director's partitions (see [`Director`]).
    ///
    /// ```
    /// use raft_sim::Director;
    /// use std::time::Duration;
    ///
    /// # fn wire<SM: raft_sim::SimStateMachine, M>(simulation: raft_sim::Simulation<SM, M>)
    /// # where M: raft_sim::Model<Op = raft_sim::OpOf<SM>, Ret = raft_sim::RetOf<SM>> {
    /// // Every 500 ms, cut the leader off from the others for 300 ms.
    /// let simulation = simulation.nemesis(raft_sim::Nemesis::none()).director(
    ///     |director: Director<SM>| async move {
    ///         while director.running() {
    ///             tokio::time::sleep(Duration::from_millis(200)).await;
    ///             if let Some(leader) = director.leader() {
    ///                 director.isolate(leader).await;
    ///                 tokio::time::sleep(Duration::from_millis(300)).await;
    ///                 director.heal().await;
    ///             }
    ///         }
    ///     },
    /// );
    /// # let _ = simulation;
    /// # }
    /// ```
    pub fn director<F, Fut>(mut self, direct: F) -> Self
    where
        F: Fn(Director<SM>) -> Fut + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        self.director = Some(Rc::new(move |director| Box::pin(direct(director))));
        self
    }

    /// Adjusts each node's TCP transport settings before it starts (the default transport, and
    /// the one [`Simulation::transport`] wraps; not a transport of your own): `tcp_config` is
    /// called at every start of every node, for instance to give the nodes mutual TLS
    /// (`TcpConfig::tls`). The harness has set the node's id, the cluster id, the addresses and
    /// the seed (leave them).
    pub fn tcp_config(mut self, tcp_config: impl Fn(NodeId, &mut TcpConfig) + 'static) -> Self {
        self.tcp_config = Rc::new(tcp_config);
        self
    }

    /// The linearizability checker's step budget per part of the history (default
    /// [`DEFAULT_STEP_BUDGET`]).
    pub fn step_budget(mut self, steps: u64) -> Self {
        self.step_budget = steps;
        self
    }

    /// How many seeds [`Simulation::check`] runs when the environment does not say (default
    /// [`DEFAULT_SEEDS`]: seeds 0 to 3).
    pub fn default_seeds(mut self, seeds: u64) -> Self {
        self.default_seeds = seeds;
        self
    }

    /// The test's name in the replay command (default: the name of the current thread, which
    /// is the test's under `cargo test`).
    pub fn test_name(mut self, name: impl Into<String>) -> Self {
        self.test_name = Some(name.into());
        self
    }

    /// Runs every seed the environment asks for ([`seeds`]) and returns their reports.
    ///
    /// # Panics
    ///
    /// When a run finds a problem: the panic message is that run's [`Report`] (its problems,
    /// the shortest failing part of the history, the faults, and the command that replays
    /// it). This is the test failing.
    pub fn check(&self) -> Vec<Report<OpOf<SM>, RetOf<SM>>> {
        let mut reports: Vec<Report<OpOf<SM>, RetOf<SM>>> = Vec::new();
        for seed in seeds(self.default_seeds) {
            let report = self.run(seed);
            if !report.is_ok() {
                panic!("simulation failed\n{report}");
            }
            if reports.is_empty() {
                for warning in &report.warnings {
                    eprintln!("warning: {warning}");
                }
            }
            eprintln!("{}", report.summary());
            reports.push(report);
        }
        reports
    }

    /// Runs seed `seed` and returns what it found; never panics on a problem it finds.
    pub fn run(&self, seed: u64) -> Report<OpOf<SM>, RetOf<SM>> {
        let started = std::time::Instant::now();
        // Every host: the first voters, then the spares.
        let ids: Vec<NodeId> = (1..=self.nodes + self.spares).map(NodeId).collect();
        let voters: Vec<NodeId> = (1..=self.nodes).map(NodeId).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut builder = turmoil::Builder::new();
        builder
            .rng_seed(seed)
            .epoch(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000))
            .tick_duration(Duration::from_millis(1))
            .min_message_latency(self.latency.0)
            .max_message_latency(self.latency.1)
            .simulation_duration(self.duration + GRACE);
        if let Storage::SimulatedDisk { .. } = self.storage {
            builder.fs().block_size(TORN_WRITE_BLOCK_BYTES);
        }
        let mut sim = builder.build();
        let world: SharedWorld<SM> = Rc::new(RefCell::new(World::new(ids.clone())));
        let applied: Applied<SM::Command> = Applied::default();
        let warnings = self.warnings();
        for warning in &warnings {
            tracing::warn!("{warning}");
        }

        // Clock drift: every node on a clock of its own, kept across its restarts.
        let drift = self
            .nemesis
            .drift(crate::drift::within_bound(&self.node_config()));
        let clocks = drift
            .map(|_| crate::drift::clocks(&ids))
            .unwrap_or_default();
        let setup = Rc::new(Setup {
            seed,
            clocks: clocks.clone(),
            ids: ids.clone(),
            voters: voters.clone(),
            state_machine: Rc::clone(&self.state_machine),
            storage: self.storage.clone(),
            custom: match &self.storage {
                Storage::Custom(stores) => Some(RefCell::new(stores.for_run())),
                _ => None,
            },
            configure: Rc::clone(&self.configure),
            tcp_config: Rc::clone(&self.tcp_config),
            transport: self.transport.clone(),
            policy: SnapshotPolicy::for_seed(seed),
        });
        for &id in &ids {
            let (world, applied, setup) = (Rc::clone(&world), applied.clone(), Rc::clone(&setup));
            sim.host(host(id), move || {
                let (world, applied, setup) =
                    (Rc::clone(&world), applied.clone(), Rc::clone(&setup));
                async move {
                    start_node(id, &setup, &world, applied).await;
                    Ok(())
                }
            });
        }
        for (index, (name, workload)) in self.clients.iter().enumerate() {
            let index = index as u64;
            let client_seed = seed ^ (index + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let client = Client::new(name.clone(), index, client_seed, Rc::clone(&world));
            let future = workload(client);
            let world = Rc::clone(&world);
            sim.client(format!("client-{index}"), async move {
                future.await;
                world.borrow_mut().clients_finished += 1;
                Ok(())
            });
        }
        if let Some(direct) = &self.director {
            let index = self.clients.len() as u64;
            let client_seed = seed ^ (index + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let client = Client::new(
                "director".to_string(),
                index,
                client_seed,
                Rc::clone(&world),
            );
            let future = direct(Director::new(Rc::clone(&world), client, seed));
            sim.client("director", async move {
                future.await;
                Ok(())
            });
        }
        if self.nemesis.churns() {
            let plan = ChurnPlan::new(ids.clone(), voters.len(), self.nemesis.first_ms(), PORT);
            let churn = crate::churn::run(Rc::clone(&world), plan, seed);
            sim.client("membership", async move {
                churn.await;
                Ok(())
            });
        }
        if let Some(max_deviation) = drift {
            let first_ms = self.nemesis.first_ms();
            let drift = crate::drift::run(Rc::clone(&world), clocks, max_deviation, first_ms, seed);
            sim.client("clocks", async move {
                drift.await;
                Ok(())
            });
        }
        if self.nemesis.transfers() {
            let transfers = crate::transfer::run(Rc::clone(&world), self.nemesis.first_ms(), seed);
            sim.client("transfers", async move {
                transfers.await;
                Ok(())
            });
        }

        let mut injector = Injector::new(self.nemesis.clone(), ids.clone(), self.latency.1);
        let mut observer = Observer::default();
        let mut problems = Vec::new();
        let duration_ms = u64::try_from(self.duration.as_millis()).unwrap_or(u64::MAX);
        let mut healed_at: Option<u64> = None;
        let mut final_voters: Option<Vec<NodeId>> = None;
        let mut now = 0;
        let mut events = Vec::new();
        // Whether the run reached its end: every client returned and the cluster settled.
        let mut settled = false;
        loop {
            let all_done = match sim.step() {
                Ok(done) => done,
                Err(error) => {
                    problems.push(format!(
                        "the simulation stopped at {now} ms: {error} (a client that never \
                         returns? loop while Client::running)"
                    ));
                    break;
                }
            };
            now = u64::try_from(sim.elapsed().as_millis()).unwrap_or(u64::MAX);
            // The user's clients, not the harness's own (membership churn), end the faults.
            let clients_done = all_done || world.borrow().clients_finished == self.clients.len();
            {
                let world = world.borrow();
                for (&id, handle) in &world.handles {
                    let start = world.starts.get(&id).map_or(0, |s| s.saturating_sub(1));
                    observer.observe(start, &handle.status(), now);
                }
            }
            match healed_at {
                None if now < duration_ms && !clients_done => {
                    let leader = believed_leader(&world);
                    injector.maybe_act(&mut sim, &mut rng, leader, now, &mut events);
                    let directives = std::mem::take(&mut world.borrow_mut().directives);
                    for directive in &directives {
                        injector.direct(&mut sim, directive, now, &mut events);
                        if let Directive::Crash { node, empty: true } = directive {
                            self.empty_stores(&world, *node);
                        }
                    }
                    for NodeEvent::Down(id) in events.drain(..) {
                        world.borrow_mut().handles.remove(&id);
                    }
                }
                None => {
                    injector.heal(&mut sim, now);
                    world.borrow_mut().finished = true;
                    healed_at = Some(now);
                }
                Some(healed) => {
                    let late = std::mem::take(&mut world.borrow_mut().directives);
                    for directive in late {
                        world.borrow_mut().directed.push(FaultRecord {
                            at_ms: now,
                            fault: None,
                            what: format!("director: {directive:?} ignored: the faults stopped"),
                        });
                    }
                    if final_voters.is_none() {
                        final_voters = settled_voters(&world, &voters);
                    }
                    if all_done && final_voters.is_some() {
                        settled = true;
                        break;
                    }
                    if all_done && now > healed + LIVENESS_MS {
                        problems.push(format!(
                            "liveness: no leader with a committed, settled membership that every \
                             voter of it follows within {LIVENESS_MS} ms after the faults \
                             stopped at {healed} ms"
                        ));
                        break;
                    }
                }
            }
        }
        // The store audit: only once the run settled (otherwise a problem already says why it
        // did not), over the final voters' stores.
        let audit_voters = final_voters.clone().filter(|_| settled);
        if let Some(voters) = &audit_voters {
            read_back_stores(&mut sim, &world, &ids, voters, &mut problems);
        }
        drop(sim);

        let mut world = world.borrow_mut();
        problems.append(&mut world.problems);
        problems.extend(observer.violations.lines("invariant violations"));
        problems.extend(observer.check_lease_reads(&world.lease_reads));
        {
            let log = applied.lock();
            problems.extend(log.disagreements.lines("disagreements between replicas"));
            problems.extend(crate::checks::check_against_model(
                &self.model,
                &log,
                &world.observations,
            ));
        }
        problems.extend(crate::checks::check_bounded_staleness(
            &world.acknowledged,
            &world.bounded_reads,
            drift.unwrap_or(0.0),
        ));
        let audited_writes = audit_voters.map(|voters| {
            problems.extend(crate::audit::audit(
                &world.acknowledged,
                &world.images,
                &voters,
            ));
            world.acknowledged.len() as u64
        });
        let history = std::mem::take(&mut world.history);
        let linearizability = check_with_budget(&self.model, &history, self.step_budget);
        if !linearizability.is_linearizable() {
            problems.push(format!("linearizability: {linearizability}"));
        }
        let counts = world.counts;
        if counts.writes.ok + counts.reads.ok == 0 && !self.clients.is_empty() {
            problems.push("no operation completed".to_string());
        }
        let churn = std::mem::take(&mut world.churn);
        let transfers = std::mem::take(&mut world.transfers);
        let mut faults = injector.log;
        faults.extend(churn.log);
        faults.extend(transfers.log);
        faults.append(&mut world.clock_rates);
        faults.append(&mut world.directed);
        // Stable: the nemesis' records first at equal times, each list in its own order.
        faults.sort_by_key(|fault| fault.at_ms);
        let digest = digest(&history, &faults);
        Report {
            seed,
            simulated_ms: now,
            wall: started.elapsed(),
            writes: counts.writes,
            reads: counts.reads,
            elections: observer.elections(),
            terms: observer.terms.values().copied().collect(),
            node_starts: world.starts.values().sum(),
            membership_changes: churn.counts,
            leader_removals: churn.leader_removals,
            leadership_transfers: transfers.counts,
            transfers_completed: transfers.completed,
            final_voters: final_voters.unwrap_or_default(),
            audited_writes,
            bounded_reads: world.bounded_reads.len() as u64,
            follower_reads: counts.follower_reads,
            faults,
            problems,
            warnings,
            linearizability,
            history,
            digest,
            replay: self.replay(seed),
        }
    }

    /// Empties `node`'s stores before it next starts ([`Director::crash_and_empty`]; its host
    /// has just been crashed).
    fn empty_stores(&self, world: &SharedWorld<SM>, node: NodeId) {
        let mut world = world.borrow_mut();
        match &self.storage {
            Storage::Memory => {
                world
                    .stores
                    .insert(node, (MemLogStore::new(), MemSnapshotStore::new()));
            }
            Storage::SimulatedDisk { .. } => {
                world.emptied.insert(node);
            }
            Storage::Custom(_) => world.problems.push(format!(
                "Director::crash_and_empty(n{}): the harness cannot empty custom stores (your \
                 factory, told the start, can hand out empty ones)",
                node.0
            )),
        }
    }

    /// A node's configuration as the user's `configure` leaves it (for the settings every node
    /// shares: timeouts, the drift bound).
    fn node_config(&self) -> NodeConfig {
        let mut config = NodeConfig::new(NodeId(1), [NodeId(1)]);
        (self.configure)(&mut config);
        config
    }

    /// What makes this configuration less useful than it could be.
    fn warnings(&self) -> Vec<String> {
        let config = self.node_config();
        let max_latency_ms = u64::try_from(self.latency.1.as_millis()).unwrap_or(u64::MAX);
        let election_ms = config.raft.election_timeout_min_ms;
        let mut warnings = Vec::new();
        if max_latency_ms.saturating_mul(3) > election_ms {
            warnings.push(format!(
                "the maximum message latency ({max_latency_ms} ms) is more than a third of the \
                 minimum election timeout ({election_ms} ms): leadership will change often \
                 without any fault; lower the latency (Simulation::latency) or raise the \
                 election timeout"
            ));
        }
        if self.spares > 0 && !self.nemesis.churns() {
            warnings.push(format!(
                "{} spare host(s) but no Fault::MembershipChange in the nemesis: the spares \
                 join only if your clients add them",
                self.spares
            ));
        }
        warnings
    }

    /// The command that runs `seed` of this test again.
    fn replay(&self, seed: u64) -> String {
        let test = self
            .test_name
            .clone()
            .or_else(|| std::thread::current().name().map(str::to_string))
            .filter(|name| name != "main")
            .map(|name| format!(" -- {name} --exact"))
            .unwrap_or_default();
        let package = std::env::var("CARGO_PKG_NAME")
            .map(|name| format!(" -p {name}"))
            .unwrap_or_default();
        format!("RAFT_SIM_SEED={seed} cargo test{package}{test}")
    }
}

/// A workload as the simulation keeps it.
fn boxed<SM, F, Fut>(workload: F) -> ClientFn<SM>
where
    SM: SimStateMachine,
    F: Fn(Client<SM>) -> Fut + 'static,
    Fut: Future<Output = ()> + 'static,
{
    Rc::new(move |client| Box::pin(workload(client)))
}

/// The seeds to run: `RAFT_SIM_SEED=<s>` alone if set (to replay one run), else seeds 0 to
/// `RAFT_SIM_SEEDS` (for long runs), else 0 to `default`.
pub fn seeds(default: u64) -> Vec<u64> {
    let parse = |name: &str| {
        std::env::var(name)
            .ok()
            .and_then(|value| value.trim().parse::<u64>().ok())
    };
    match parse("RAFT_SIM_SEED") {
        Some(seed) => vec![seed],
        None => (0..parse("RAFT_SIM_SEEDS").unwrap_or(default)).collect(),
    }
}

/// What a host needs to start its node, shared by every start.
struct Setup<SM> {
    seed: u64,
    /// Every node's clock, when clocks drift ([`crate::Fault::ClockDrift`]); else empty, and
    /// every node keeps tokio's time.
    clocks: crate::drift::Clocks,
    /// Every host.
    ids: Vec<NodeId>,
    /// The first voters; the other hosts are spares, which start empty.
    voters: Vec<NodeId>,
    state_machine: Rc<dyn Fn(NodeId) -> SM>,
    storage: Storage,
    /// This run's maker of custom stores ([`Storage::Custom`]).
    custom: Option<RefCell<Box<crate::storage::NodeStores>>>,
    configure: Rc<dyn Fn(&mut NodeConfig)>,
    tcp_config: Rc<dyn Fn(NodeId, &mut TcpConfig)>,
    transport: TransportSeam,
    policy: SnapshotPolicy,
}

/// The snapshot settings of a run, drawn from its seed.
#[derive(Clone, Copy)]
struct SnapshotPolicy {
    every: u64,
    keep: u64,
    chunk_bytes: usize,
}

impl SnapshotPolicy {
    fn for_seed(seed: u64) -> SnapshotPolicy {
        // A stream of its own, so that the rest of a run does not depend on these draws.
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5A4B_5407);
        SnapshotPolicy {
            every: rng.random_range(20..200),
            keep: rng.random_range(0..20),
            chunk_bytes: rng.random_range(16..160),
        }
    }
}

/// A host's software: opens the node's stores, starts its node, and runs it until the host is
/// crashed (which drops this future). A node that cannot start or stops by itself is a problem
/// of the run.
async fn start_node<SM: SimStateMachine>(
    id: NodeId,
    setup: &Setup<SM>,
    world: &SharedWorld<SM>,
    applied: Applied<SM::Command>,
) {
    // Once the run is over, a start reads the stores back for the audit, as the next start
    // would find them, and is not counted as one.
    let auditing = world.borrow().auditing;
    let start = {
        let mut world = world.borrow_mut();
        let starts = world.starts.entry(id).or_insert(0);
        let start = *starts;
        if !auditing {
            *starts += 1;
        }
        start
    };
    let fail = |what: String| {
        let mut world = world.borrow_mut();
        if auditing {
            world.images.insert(id, Err(what));
        } else {
            let problem = format!("n{} (start {start}) at {} ms: {what}", id.0, now_ms());
            world.problems.push(problem);
        }
    };
    match &setup.storage {
        Storage::Memory => {
            let stores = world.borrow().stores.get(&id).cloned();
            if let Some((log, snapshots)) = stores {
                run_node(id, start, setup, world, applied, log, snapshots, fail).await;
            }
        }
        Storage::SimulatedDisk { segment_bytes } => {
            let empty = !auditing && world.borrow_mut().emptied.remove(&id);
            if empty && let Err(error) = crate::storage::empty_disk() {
                return fail(format!("could not empty its disk: {error}"));
            }
            let options = FileLogOptions::new().segment_bytes(*segment_bytes);
            let log = match FileLogStore::open_simulated(LOG_DIR, options) {
                Ok(log) => log,
                Err(error) => return fail(format!("could not open its log: {error}")),
            };
            let snapshots = match FileSnapshotStore::open_simulated(SNAPSHOT_DIR) {
                Ok(snapshots) => snapshots,
                Err(error) => return fail(format!("could not open its snapshots: {error}")),
            };
            run_node(id, start, setup, world, applied, log, snapshots, fail).await;
        }
        Storage::Custom(_) => {
            let Some(make) = &setup.custom else { return };
            let (log, snapshots) = (make.borrow_mut())(id, start);
            run_node(id, start, setup, world, applied, log, snapshots, fail).await;
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_node<SM: SimStateMachine, LS: LogStore, SS: SnapshotStore>(
    id: NodeId,
    start: u64,
    setup: &Setup<SM>,
    world: &SharedWorld<SM>,
    applied: Applied<SM::Command>,
    log: LS,
    snapshots: SS,
    fail: impl Fn(String),
) {
    if world.borrow().auditing {
        let fresh = (setup.state_machine)(id);
        let image = crate::audit::read_back(log, snapshots, fresh).await;
        world.borrow_mut().images.insert(id, image);
        return;
    }
    let (inbox, inbound) = raft_core::node::inbox(4096);
    let peers: BTreeMap<NodeId, String> = setup
        .ids
        .iter()
        .filter(|&&peer| peer != id)
        .map(|&peer| (peer, format!("{}:{PORT}", host(peer))))
        .collect();
    let listen = format!("0.0.0.0:{PORT}");
    // Different at every start, so that a restarted node does not repeat its earlier choices.
    let node_seed = setup.seed.rotate_left(17) ^ id.0 ^ start.rotate_left(32);
    let node_start = NodeStart {
        node: id,
        start,
        seed: node_seed ^ 0x5EED_7A95,
    };
    let transport = match &setup.transport {
        TransportSeam::Wrap(wrap) => {
            let mut tcp = TcpConfig::new(id, CLUSTER_ID, listen, peers);
            tcp.seed = node_seed ^ 0x7C9;
            (setup.tcp_config)(id, &mut tcp);
            match TcpTransport::start(TurmoilNet, tcp, inbox, Spawner::local()).await {
                Ok(tcp) => wrap(node_start, tcp),
                Err(error) => return fail(format!("its transport could not start: {error}")),
            }
        }
        TransportSeam::Own(own) => {
            let transport_start = TransportStart {
                node: node_start,
                listen,
                peers,
                inbox,
            };
            match own(transport_start).await {
                Ok(transport) => transport,
                Err(error) => return fail(format!("its transport could not start: {error}")),
            }
        }
    };
    let transport = BoxedTransport(transport);
    // A spare starts empty and waits to be added: it forms no cluster of its own.
    let first_voters = if setup.voters.contains(&id) {
        setup.voters.clone()
    } else {
        Vec::new()
    };
    let mut config = NodeConfig::new(id, first_voters);
    config.seed = node_seed;
    config.request_timeout = Duration::from_secs(1);
    config.snapshot_every = setup.policy.every;
    config.snapshot_keep_entries = setup.policy.keep;
    config.snapshot_chunk_bytes = setup.policy.chunk_bytes;
    if let Some(clock) = setup.clocks.get(&id) {
        config.clock = clock.clone();
    }
    (setup.configure)(&mut config);
    let state_machine = Recording::new((setup.state_machine)(id), id, start, applied);
    let created = Node::create(config, state_machine, log, snapshots, transport, inbound).await;
    let (handle, task) = match created {
        Ok(created) => created,
        Err(error) => return fail(format!("the node could not start: {error}")),
    };
    world.borrow_mut().handles.insert(id, handle.clone());
    task.await;
    // The host was not crashed (that drops this future): the node stopped on its own, after a
    // storage failure.
    let why = handle.read(Consistency::Stale).await.err();
    world.borrow_mut().handles.remove(&id);
    fail(format!(
        "the node stopped by itself: {}",
        why.map_or_else(|| "no reason given".to_string(), |e| e.to_string())
    ));
}

/// Once the run is over, crashes every host (so that whatever its stores had not made durable
/// is lost, as in a power loss) and starts the final voters' hosts again to read their stores
/// back into `World::images` instead of running their nodes (see [`crate::audit`]).
fn read_back_stores<SM: SimStateMachine>(
    sim: &mut turmoil::Sim<'_>,
    world: &SharedWorld<SM>,
    hosts: &[NodeId],
    voters: &[NodeId],
    problems: &mut Vec<String>,
) {
    {
        let mut world = world.borrow_mut();
        world.auditing = true;
        world.handles.clear();
    }
    for &id in hosts {
        sim.crash(host(id));
    }
    let voters: Vec<NodeId> = voters
        .iter()
        .copied()
        .filter(|id| hosts.contains(id))
        .collect();
    for &id in &voters {
        sim.bounce(host(id));
    }
    let started = sim.elapsed();
    let read = |world: &SharedWorld<SM>| {
        let world = world.borrow();
        voters.iter().all(|id| world.images.contains_key(id))
    };
    while !read(world)
        && sim.elapsed().saturating_sub(started) < Duration::from_millis(READ_BACK_MS)
    {
        if let Err(error) = sim.step() {
            problems.push(format!(
                "the simulation stopped while the stores were read back for the audit: {error}"
            ));
            return;
        }
    }
}

/// The node that leads in the highest term, by the nodes' own statuses.
fn believed_leader<SM: SimStateMachine>(world: &SharedWorld<SM>) -> Option<NodeId> {
    world.borrow().leader().map(|handle| handle.id())
}

/// The final voters, once the cluster has settled: the node that leads in the highest term
/// holds a committed membership that is not joint, and every voter of it is up and follows
/// that leader in its term. Nodes outside the membership (removed, or spares never added) are
/// not asked. A leader that reports no membership is judged over `first_voters`.
fn settled_voters<SM: SimStateMachine>(
    world: &SharedWorld<SM>,
    first_voters: &[NodeId],
) -> Option<Vec<NodeId>> {
    let world = world.borrow();
    let statuses: std::collections::BTreeMap<NodeId, _> = world
        .handles
        .iter()
        .map(|(&id, handle)| (id, handle.status()))
        .collect();
    let leader = statuses
        .values()
        .filter(|status| status.role == Role::Leader)
        .max_by_key(|status| status.term)?;
    let voters: Vec<NodeId> = match &leader.membership {
        Some(membership)
            if membership.is_joint() || leader.membership_index > leader.commit_index =>
        {
            return None;
        }
        Some(membership) => membership.voters().iter().copied().collect(),
        None => first_voters.to_vec(),
    };
    let follows = |id: &NodeId| {
        statuses
            .get(id)
            .is_some_and(|s| s.leader == Some(leader.id) && s.term == leader.term)
    };
    voters.iter().all(follows).then_some(voters)
}

/// FNV-1a over the history and the faults, as displayed.
fn digest<Op: std::fmt::Debug, Ret: std::fmt::Debug>(
    history: &crate::history::History<Op, Ret>,
    faults: &[crate::nemesis::FaultRecord],
) -> u64 {
    let mut digest = 0xcbf2_9ce4_8422_2325_u64;
    let mut mix = |text: &str| {
        for byte in text.bytes() {
            digest = (digest ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3);
        }
    };
    for operation in history.operations() {
        mix(&operation.to_string());
    }
    for fault in faults {
        mix(&fault.to_string());
    }
    digest
}
