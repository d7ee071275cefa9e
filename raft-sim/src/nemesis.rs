//! The fault injector: which faults a run may see ([`Nemesis`], a builder), and the injector
//! that applies them to turmoil's simulation, one at a time, recording each ([`FaultRecord`]).

use crate::director::Directive;
use raft_core::NodeId;
use rand::RngExt;
use rand::rngs::ChaCha8Rng;
use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

/// A kind of fault the nemesis can inject. Each lasts until the next fault begins (or the
/// faults stop), when it is undone: links repaired, held messages released, latency and loss
/// back to normal, and crashed nodes restarted (each with a probability of 70%, otherwise it
/// stays down through the next fault too).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Fault {
    /// The nodes split at random into two non-empty sides (so a majority and a minority, or
    /// two halves), which cannot reach each other in either direction.
    Partition,
    /// Messages from one node to another are dropped; the other direction still works.
    OneWayPartition,
    /// The node that leads (in the highest term seen) is cut off from every other node.
    IsolateLeader,
    /// The messages between two nodes are held (turmoil's `hold`) and delivered all at once
    /// when the fault ends: long delays, then a burst.
    HoldLink,
    /// Messages from one node (the leader, when there is one) to every other take up to a
    /// few hundred milliseconds ([`Nemesis::latency_spike`]).
    LatencySpike,
    /// Every link drops messages at random ([`Nemesis::message_loss_rate`]; turmoil's
    /// `fail_rate`). Over TCP a lost segment breaks the connection, which the transport
    /// redials.
    MessageLoss,
    /// A node's host crashes (turmoil's `crash`): its tasks die, and with the simulated disk
    /// everything its stores had not synced is lost. It is restarted when a later fault begins
    /// (see above), or when the faults stop.
    Crash,
    /// A node's process restarts (turmoil's `bounce`): the leader, more often than not. Its
    /// tasks die and it starts again at once on its stores; the simulated disk keeps even
    /// unsynced writes, as an operating system's page cache would.
    Restart,
    /// Every host crashes at once and restarts (a power loss): with the simulated disk, every
    /// node loses what it had not synced at the same moment.
    PowerLoss,
    /// Membership churn (paper §6), beside the other faults rather than in turn with them:
    /// every 100 to 500 ms the node that leads is asked to add a learner (a node outside the
    /// membership, such as a spare host of [`crate::Simulation::spares`], with its address),
    /// remove a learner, promote one, remove a voter (itself half the time; never below two
    /// voters) or replace a voter with a learner, through `NodeHandle::add_learner`,
    /// `remove_learner` and `change_membership`. Each request is recorded with the time it was
    /// made and its outcome. Not in [`Nemesis::default`]: add it with [`Nemesis::with`].
    MembershipChange,
    /// Leadership transfer (dissertation §3.10), beside the other faults like
    /// [`Fault::MembershipChange`]: every 300 to 1,500 ms the node that leads is asked, through
    /// `NodeHandle::transfer_leadership`, to hand leadership to another voter of its membership
    /// picked at random, which may be down or cut off (the leader then abandons the transfer
    /// after a minimum election timeout, refusing writes meanwhile). Each request is recorded
    /// with the time it was made, its outcome (started, or refused), and whether its target was
    /// then seen leading a later term within 1 s. Not in [`Nemesis::default`]: add it with
    /// [`Nemesis::with`].
    TransferLeadership,
    /// Clock drift, beside the other faults: every node runs on a clock of its own
    /// (`raft_core::node::NodeClock`), and every 200 to 1,000 ms each clock's rate is drawn
    /// anew from `1 ± d`. By default `d` keeps any two clocks within the nodes'
    /// `clock_drift_bound_ms` over a minimum election timeout (nine tenths of half their
    /// ratio: ±4.5% with the default `Config`), where every check, lease reads included, must
    /// hold; [`Nemesis::clock_drift`] sets `d` (beyond the bound, lease reads are expected to
    /// go stale). Every draw is recorded; when the faults stop, every clock keeps time again.
    ClockDrift,
}

impl Fault {
    /// Every fault, in the order of this enum.
    pub const ALL: [Fault; 12] = [
        Fault::Partition,
        Fault::OneWayPartition,
        Fault::IsolateLeader,
        Fault::HoldLink,
        Fault::LatencySpike,
        Fault::MessageLoss,
        Fault::Crash,
        Fault::Restart,
        Fault::PowerLoss,
        Fault::MembershipChange,
        Fault::TransferLeadership,
        Fault::ClockDrift,
    ];

    /// Whether it runs beside the other faults, on a clock of its own, rather than in turn
    /// with them (an administrator's request, or drift that never stops).
    pub(crate) fn runs_beside(self) -> bool {
        matches!(
            self,
            Fault::MembershipChange | Fault::TransferLeadership | Fault::ClockDrift
        )
    }

    /// Whether [`Nemesis::default`] leaves it out (the administrator's requests).
    fn opt_in(self) -> bool {
        matches!(self, Fault::MembershipChange | Fault::TransferLeadership)
    }
}

/// Which faults a run sees, and how often. A builder:
///
/// ```
/// use raft_sim::{Fault, Nemesis};
/// use std::time::Duration;
///
/// let partitions_only = Nemesis::only([Fault::Partition, Fault::IsolateLeader])
///     .interval(Duration::from_millis(200), Duration::from_millis(800));
/// let everything_but_loss = Nemesis::default().without(Fault::MessageLoss);
/// assert!(everything_but_loss.faults().all(|f| f != Fault::MessageLoss));
/// # let _ = partitions_only;
/// ```
///
/// The default: every [`Fault`] but [`Fault::MembershipChange`] and
/// [`Fault::TransferLeadership`], the first 500 ms into the run, then a new one every 150 to
/// 1,200 ms (each undoing the one before), 5% message loss, latency spikes of 50 to 400 ms;
/// and beside them clock drift within the nodes' bound. Membership churn and leadership
/// transfers, when added, also run beside them, each on its own clock.
#[derive(Clone, Debug)]
pub struct Nemesis {
    faults: BTreeSet<Fault>,
    first_ms: u64,
    interval_ms: (u64, u64),
    loss_rate: f64,
    spike_ms: (u64, u64),
    drift: Option<f64>,
}

impl Default for Nemesis {
    fn default() -> Self {
        Nemesis {
            faults: Fault::ALL.into_iter().filter(|f| !f.opt_in()).collect(),
            first_ms: 500,
            interval_ms: (150, 1_200),
            loss_rate: 0.05,
            spike_ms: (50, 400),
            drift: None,
        }
    }
}

impl Nemesis {
    /// No faults: a healthy network and no crashes.
    pub fn none() -> Nemesis {
        Nemesis {
            faults: BTreeSet::new(),
            ..Nemesis::default()
        }
    }

    /// Only these faults, with the default timing.
    pub fn only(faults: impl IntoIterator<Item = Fault>) -> Nemesis {
        Nemesis {
            faults: faults.into_iter().collect(),
            ..Nemesis::default()
        }
    }

    /// Adds `fault`.
    pub fn with(mut self, fault: Fault) -> Nemesis {
        self.faults.insert(fault);
        self
    }

    /// Removes `fault`.
    pub fn without(mut self, fault: Fault) -> Nemesis {
        self.faults.remove(&fault);
        self
    }

    /// A new fault begins every `min` to `max` (at random), undoing the one before.
    pub fn interval(mut self, min: Duration, max: Duration) -> Nemesis {
        let min = millis(min).max(1);
        self.interval_ms = (min, millis(max).max(min));
        self
    }

    /// The first fault (and the first membership change or leadership transfer) begins this
    /// long into the run (default 500 ms: an election first).
    pub fn first_fault_after(mut self, delay: Duration) -> Nemesis {
        self.first_ms = millis(delay);
        self
    }

    /// The probability that [`Fault::MessageLoss`] drops a message (default 0.05; clamped to
    /// 0..=1).
    pub fn message_loss_rate(mut self, rate: f64) -> Nemesis {
        self.loss_rate = if rate.is_nan() {
            0.0
        } else {
            rate.clamp(0.0, 1.0)
        };
        self
    }

    /// The most a message may take during a [`Fault::LatencySpike`]: a value drawn from
    /// `min..max` each time (default 50 to 400 ms).
    pub fn latency_spike(mut self, min: Duration, max: Duration) -> Nemesis {
        let min = millis(min);
        self.spike_ms = (min, millis(max).max(min));
        self
    }

    /// With [`Fault::ClockDrift`], every clock's rate is drawn from `1 ± max_deviation`
    /// (clamped to 0..=0.99; a NaN is taken as 0) rather than within the nodes' drift bound:
    /// 0.5 lets one node's clock run at half speed while another's runs half as fast again.
    pub fn clock_drift(mut self, max_deviation: f64) -> Nemesis {
        let max_deviation = if max_deviation.is_nan() {
            0.0
        } else {
            max_deviation
        };
        self.drift = Some(max_deviation.clamp(0.0, 0.99));
        self
    }

    /// The faults it may inject.
    pub fn faults(&self) -> impl Iterator<Item = Fault> + '_ {
        self.faults.iter().copied()
    }

    /// Whether it asks for membership changes ([`Fault::MembershipChange`]).
    pub(crate) fn churns(&self) -> bool {
        self.faults.contains(&Fault::MembershipChange)
    }

    /// Whether it asks for leadership transfers ([`Fault::TransferLeadership`]).
    pub(crate) fn transfers(&self) -> bool {
        self.faults.contains(&Fault::TransferLeadership)
    }

    /// How far clocks drift ([`Fault::ClockDrift`]): `None` when they do not, else the
    /// largest deviation from tokio's rate, `within_bound` unless [`Nemesis::clock_drift`]
    /// said otherwise.
    pub(crate) fn drift(&self, within_bound: f64) -> Option<f64> {
        self.faults
            .contains(&Fault::ClockDrift)
            .then(|| self.drift.unwrap_or(within_bound))
    }

    /// When the first fault begins, in milliseconds into the run.
    pub(crate) fn first_ms(&self) -> u64 {
        self.first_ms
    }
}

/// A fault injected (or undone) during a run, or a membership change or leadership transfer
/// asked for (with its outcome in `what`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultRecord {
    /// When, in milliseconds of simulated time.
    pub at_ms: u64,
    /// The fault; `None` for the end of one (undone, or every fault healed).
    pub fault: Option<Fault>,
    /// What exactly was done.
    pub what: String,
}

impl fmt::Display for FaultRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:>6} ms: {}", self.at_ms, self.what)
    }
}

/// The host name of node `id` in the simulation.
pub(crate) fn host(id: NodeId) -> String {
    format!("n{}", id.0)
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Applies a [`Nemesis`] to a running simulation.
pub(crate) struct Injector {
    nemesis: Nemesis,
    faults: Vec<Fault>,
    ids: Vec<NodeId>,
    next_at: u64,
    /// The links' usual maximum latency, restored after a spike.
    max_latency: Duration,
    partitioned: BTreeSet<(String, String)>,
    held: BTreeSet<(String, String)>,
    slowed: BTreeSet<(String, String)>,
    lossy: bool,
    crashed: BTreeSet<NodeId>,
    pub(crate) log: Vec<FaultRecord>,
}

/// What an action did to the nodes, for the harness to follow.
pub(crate) enum NodeEvent {
    /// The node's host was crashed or restarted: its handle is dead.
    Down(NodeId),
}

impl Injector {
    pub(crate) fn new(nemesis: Nemesis, ids: Vec<NodeId>, max_latency: Duration) -> Injector {
        Injector {
            // Membership churn and leadership transfers run on their own clocks, in their own
            // tasks (`crate::churn`, `crate::transfer`).
            faults: nemesis.faults().filter(|f| !f.runs_beside()).collect(),
            next_at: nemesis.first_ms,
            nemesis,
            ids,
            max_latency,
            partitioned: BTreeSet::new(),
            held: BTreeSet::new(),
            slowed: BTreeSet::new(),
            lossy: false,
            crashed: BTreeSet::new(),
            log: Vec::new(),
        }
    }

    /// When it is time, undoes the current fault and injects the next.
    pub(crate) fn maybe_act(
        &mut self,
        sim: &mut turmoil::Sim<'_>,
        rng: &mut ChaCha8Rng,
        leader: Option<NodeId>,
        now: u64,
        events: &mut Vec<NodeEvent>,
    ) {
        if self.faults.is_empty() || now < self.next_at {
            return;
        }
        let (min, max) = self.nemesis.interval_ms;
        self.next_at = now + rng.random_range(min..=max);
        let restart = rng.random_ratio(7, 10);
        self.undo(sim, now, restart);
        let fault = self.faults[rng.random_range(0..self.faults.len())];
        if let Some(what) = self.inject(sim, rng, fault, leader, events) {
            self.log.push(FaultRecord {
                at_ms: now,
                fault: Some(fault),
                what,
            });
        }
    }

    /// Injects `fault`; returns what was done, or `None` when it does not apply now.
    fn inject(
        &mut self,
        sim: &mut turmoil::Sim<'_>,
        rng: &mut ChaCha8Rng,
        fault: Fault,
        leader: Option<NodeId>,
        events: &mut Vec<NodeEvent>,
    ) -> Option<String> {
        let names: Vec<String> = self.ids.iter().map(|&id| host(id)).collect();
        let pick = |rng: &mut ChaCha8Rng| names[rng.random_range(0..names.len())].clone();
        // Two nodes at random; none when the draw gives one node twice (the fault is skipped).
        let two = |rng: &mut ChaCha8Rng| Some((pick(rng), pick(rng))).filter(|(a, b)| a != b);
        match fault {
            Fault::Partition => {
                if names.len() < 2 {
                    return None;
                }
                let mut side: Vec<bool> = names.iter().map(|_| rng.random_bool(0.5)).collect();
                if side.iter().all(|&s| s) || side.iter().all(|&s| !s) {
                    side[0] = !side[0];
                }
                for (i, a) in names.iter().enumerate() {
                    for (j, b) in names.iter().enumerate() {
                        if i < j && side[i] != side[j] {
                            sim.partition(a.as_str(), b.as_str());
                            self.partitioned.insert((a.clone(), b.clone()));
                        }
                    }
                }
                let group = |which: bool| -> Vec<&str> {
                    names
                        .iter()
                        .zip(&side)
                        .filter(|(_, s)| **s == which)
                        .map(|(n, _)| n.as_str())
                        .collect()
                };
                Some(format!("partition {:?} | {:?}", group(true), group(false)))
            }
            Fault::OneWayPartition => {
                let (a, b) = two(rng)?;
                sim.partition_oneway(a.as_str(), b.as_str());
                self.partitioned.insert((a.clone(), b.clone()));
                Some(format!("one-way partition: {a} -> {b} dropped"))
            }
            Fault::IsolateLeader => {
                let a = host(leader?);
                for b in names.iter().filter(|b| **b != a) {
                    sim.partition(a.as_str(), b.as_str());
                    self.partitioned.insert((a.clone(), b.clone()));
                }
                Some(format!("isolate the leader {a}"))
            }
            Fault::HoldLink => {
                let (a, b) = two(rng)?;
                sim.hold(a.as_str(), b.as_str());
                self.held.insert((a.clone(), b.clone()));
                Some(format!("hold messages between {a} and {b}"))
            }
            Fault::LatencySpike => {
                let a = match leader {
                    Some(leader) => host(leader),
                    None => pick(rng),
                };
                let (min, max) = self.nemesis.spike_ms;
                // Never below the links' own maximum: a spike slows links down, and turmoil
                // panics on a maximum below a link's minimum latency.
                let spike =
                    Duration::from_millis(rng.random_range(min..=max)).max(self.max_latency);
                for b in names.iter().filter(|b| **b != a) {
                    sim.set_link_max_message_latency(a.as_str(), b.as_str(), spike);
                    self.slowed.insert((a.clone(), b.clone()));
                }
                Some(format!(
                    "latency spike: up to {spike:?} on every link of {a}"
                ))
            }
            Fault::MessageLoss => {
                sim.set_fail_rate(self.nemesis.loss_rate);
                self.lossy = true;
                Some(format!(
                    "message loss: {}% on every link",
                    self.nemesis.loss_rate * 100.0
                ))
            }
            Fault::Crash => {
                let up: Vec<NodeId> = self
                    .ids
                    .iter()
                    .copied()
                    .filter(|id| !self.crashed.contains(id))
                    .collect();
                if up.is_empty() {
                    return None;
                }
                let id = up[rng.random_range(0..up.len())];
                self.crashed.insert(id);
                sim.crash(host(id));
                events.push(NodeEvent::Down(id));
                Some(format!("crash {}", host(id)))
            }
            Fault::Restart => {
                let id = match leader {
                    Some(leader) if rng.random_ratio(7, 10) => leader,
                    _ => self.ids[rng.random_range(0..self.ids.len())],
                };
                self.crashed.remove(&id);
                sim.bounce(host(id));
                events.push(NodeEvent::Down(id));
                Some(format!("restart {}", host(id)))
            }
            Fault::PowerLoss => {
                for &id in &self.ids {
                    sim.crash(host(id));
                    events.push(NodeEvent::Down(id));
                }
                for &id in &self.ids {
                    sim.bounce(host(id));
                }
                self.crashed.clear();
                Some("power loss: every host crashes and restarts".to_string())
            }
            // Never drawn here (see `Injector::new`).
            Fault::MembershipChange | Fault::TransferLeadership | Fault::ClockDrift => None,
        }
    }

    /// Carries out a fault the director asked for ([`crate::Director`]), and records it.
    pub(crate) fn direct(
        &mut self,
        sim: &mut turmoil::Sim<'_>,
        directive: &Directive,
        now: u64,
        events: &mut Vec<NodeEvent>,
    ) {
        let (fault, what) = match directive {
            Directive::Partition { a, b } => {
                let mut cut = Vec::new();
                for &x in a {
                    for &y in b.iter().filter(|&&y| y != x) {
                        let (x, y) = (host(x), host(y));
                        sim.partition(x.as_str(), y.as_str());
                        cut.push(format!("{x}-{y}"));
                        self.partitioned.insert((x, y));
                    }
                }
                (
                    Fault::Partition,
                    format!("director: partition {a:?} | {b:?} ({})", cut.join(" ")),
                )
            }
            Directive::OneWay { from, to } => {
                let (a, b) = (host(*from), host(*to));
                sim.partition_oneway(a.as_str(), b.as_str());
                let what = format!("director: one-way partition: {a} -> {b} dropped");
                self.partitioned.insert((a, b));
                (Fault::OneWayPartition, what)
            }
            Directive::Heal => {
                self.undo(sim, now, false);
                self.log.push(FaultRecord {
                    at_ms: now,
                    fault: None,
                    what: "director: heal".to_string(),
                });
                return;
            }
            Directive::Crash { node, empty } => {
                self.crashed.insert(*node);
                sim.crash(host(*node));
                events.push(NodeEvent::Down(*node));
                let emptied = if *empty { ", its stores emptied" } else { "" };
                (
                    Fault::Crash,
                    format!("director: crash {}{emptied}", host(*node)),
                )
            }
            Directive::Restart { node } => {
                let was = if self.crashed.remove(node) {
                    "start"
                } else {
                    "restart"
                };
                sim.bounce(host(*node));
                events.push(NodeEvent::Down(*node));
                (Fault::Restart, format!("director: {was} {}", host(*node)))
            }
        };
        self.log.push(FaultRecord {
            at_ms: now,
            fault: Some(fault),
            what,
        });
    }

    /// Undoes the current fault; crashed hosts are restarted when `restart`.
    fn undo(&mut self, sim: &mut turmoil::Sim<'_>, now: u64, restart: bool) {
        let mut undone = Vec::new();
        for (a, b) in std::mem::take(&mut self.partitioned) {
            sim.repair(a.as_str(), b.as_str());
            undone.push("partition");
        }
        for (a, b) in std::mem::take(&mut self.held) {
            sim.release(a.as_str(), b.as_str());
            undone.push("held link");
        }
        for (a, b) in std::mem::take(&mut self.slowed) {
            sim.set_link_max_message_latency(a.as_str(), b.as_str(), self.max_latency);
            undone.push("latency spike");
        }
        if std::mem::take(&mut self.lossy) {
            sim.set_fail_rate(0.0);
            undone.push("message loss");
        }
        let mut restarted = Vec::new();
        if restart {
            for id in std::mem::take(&mut self.crashed) {
                sim.bounce(host(id));
                restarted.push(host(id));
            }
        }
        undone.dedup();
        if !undone.is_empty() || !restarted.is_empty() {
            let mut what = Vec::new();
            if !undone.is_empty() {
                what.push(format!("end of {}", undone.join(", ")));
            }
            if !restarted.is_empty() {
                what.push(format!("restart {}", restarted.join(", ")));
            }
            self.log.push(FaultRecord {
                at_ms: now,
                fault: None,
                what: what.join("; "),
            });
        }
    }

    /// Undoes every fault and restarts every crashed host: the faults are over.
    pub(crate) fn heal(&mut self, sim: &mut turmoil::Sim<'_>, now: u64) {
        self.undo(sim, now, true);
        self.log.push(FaultRecord {
            at_ms: now,
            fault: None,
            what: "faults stop; every host up".to_string(),
        });
    }
}
