//! Runs on a healthy network, where the simulator checks stability instead of safety alone.
//!
//! Nothing is lost, nothing is partitioned, nothing crashes, clocks drift within the bound, and
//! every message takes a steady latency (plus a little jitter) of at most a third of the minimum
//! election timeout. Once a leader is established — it has committed an entry of its term and
//! every node follows it in that term — no node may reach a later term and the leader may not
//! step down, whatever the load (dissertation §6.2, §9.6), except through a leadership transfer
//! the simulator asked for. Meanwhile:
//!
//! * clients send linearizable reads to the leader, a batch of actions per read, so that every
//!   read starts a heartbeat round; on the slowest links, a burst in some seeds keeps more than
//!   4,096 rounds in flight at once, which is what a leader under heavy ReadIndex load on a
//!   slow link sees;
//! * pre-vote answers have a heavy tail (100–1,500 ms more), so that a grant given in one
//!   pre-vote round can arrive during a later one, or after the term moved on; a node with
//!   such a grant in flight to it is the favourite target of the cut below, which then lasts
//!   until the grant has arrived;
//! * the leader hands leadership over at random times, sometimes to a node it first cut off
//!   (one way, leader to target) until the target ran a pre-vote. A transfer to a caught-up
//!   voter on a network fast enough for the three hops it needs (TimeoutNow, RequestVote, the
//!   vote) must complete before the leader's timeout; any transfer must end or be abandoned by
//!   then, so a proposal refused with `TransferInProgress` any later is a failure. That one cut
//!   link is the only fault, and with pre-vote on it must not change any term either.
//!
//! A transfer abandoned while its TimeoutNow is in flight may still start an election, one the
//! target can lose if the leader took new writes meanwhile; after such a transfer the run waits
//! for a leader to be established again and holds that one to the same rules.

use super::{Sim, Stats, catch_panic, env_u64, report, run_many};
use crate::{Message, MessageBody, NodeId, ReadId, ReadMode, Role, Term, Time};
use bytes::Bytes;
use std::collections::BTreeMap;

/// The test function that runs healthy clusters, for replay commands.
const HEALTHY_TEST: &str = "healthy_clusters_keep_their_leader";
/// Default number of seeds; `RAFT_SIM_SEEDS=N` runs `N / SEEDS_DIVISOR`.
const DEFAULT_SEEDS: u64 = 40;
const SEEDS_DIVISOR: u64 = 15;
/// A leader must be established within this many milliseconds of the start.
const ESTABLISH_MS: u64 = 5_000;
/// How long stability is checked once a leader is established.
const STABLE_MS: u64 = 1_000;
/// The longest a scripted cut lasts.
const MAX_CUT_MS: u64 = 1_500;
/// After an abandoned transfer, how long a TimeoutNow in flight may still start an election.
const GRACE_MS: u64 = 200;
/// The lease clock remembers this many rounds; a burst aims past it.
const TRACKED_ROUNDS: u64 = 4_096;
/// How many rounds a burst of reads aims to keep in flight.
const BURST_ROUNDS: u64 = 5_000;
/// The most reads a burst sends per millisecond (each one a round).
const MAX_BURST_READS_PER_MS: u64 = 100;

/// The network of a healthy run: steady latency, nothing lost.
pub(super) struct SteadyNetwork {
    latency_ms: u64,
    jitter_ms: u64,
    /// Share of pre-vote answers that take 100–1,500 ms longer.
    pre_vote_tail_percent: u64,
    /// Messages in flight by (delivery time, send order): delivered as they fall due.
    queue: BTreeMap<(u64, u64), Message>,
    sent: u64,
    /// A directed link that is down (leader, target): what is sent on it is lost.
    cut: Option<(NodeId, NodeId)>,
    /// Per leader: its term and the latest heartbeat round it sent in that term.
    latest_round: BTreeMap<NodeId, (Term, u64)>,
}

/// What the client load of one seed looks like.
#[derive(Clone, Copy, Debug)]
struct Load {
    reads_per_ms: u64,
    /// A burst of reads: (per ms, first ms, last ms) after the leader is established.
    burst: Option<(u64, u64, u64)>,
    /// Chance per millisecond of a write.
    write_percent: u64,
    /// Share of reads that ask for a lease read (the rest are linearizable).
    lease_percent: u64,
}

/// A transfer the run asked for, watched until it ends.
#[derive(Clone, Copy, Debug)]
struct Watch {
    leader: NodeId,
    term: Term,
    target: NodeId,
    /// The leader's clock: the transfer must end by then.
    deadline: Time,
    /// The target was caught up and the network fast enough: it must win by the deadline.
    must_complete: bool,
    /// The target was running a pre-vote when the transfer began.
    pre_voting: bool,
}

/// What the leader is being made to do.
#[derive(Clone, Copy, Debug)]
enum Scenario {
    /// Nothing scripted; the next scenario starts at this real time.
    Idle { next_ms: u64 },
    /// Writes pause until `target` holds the leader's whole log; then it gets leadership, after
    /// a cut if `cut`.
    Quiet {
        target: NodeId,
        since_ms: u64,
        cut: bool,
    },
    /// The leader's link to `target` is down until the target has been running a pre-vote for
    /// `linger_ms`; then the link heals and the leader hands leadership to it at once.
    Cut {
        target: NodeId,
        since_ms: u64,
        pre_voting_since_ms: Option<u64>,
        linger_ms: u64,
    },
    /// A transfer is under way.
    Transfer(Watch),
    /// A transfer was abandoned; a TimeoutNow still in flight may start an election until
    /// `until_ms`, which `target` may win in `term + 1`. Stability is not checked meanwhile.
    Grace {
        target: NodeId,
        term: Term,
        until_ms: u64,
    },
    /// Something changed after an abandoned transfer: wait for a leader to be established
    /// again, then hold it to the same rules.
    Settling { since_ms: u64 },
}

/// The state of a healthy run beyond the simulator's.
struct Run {
    load: Load,
    /// The established leader and its term.
    leader: NodeId,
    term: Term,
    /// When the leader last had a heartbeat round acknowledged by a majority (its clock), for
    /// the report if it steps down.
    leader_contact: Option<Time>,
    /// Milliseconds since the first leader was established.
    elapsed_ms: u64,
    scenario: Scenario,
    /// When the current leader took over, in milliseconds since the first was established.
    leader_since_ms: u64,
}

impl Sim {
    /// Sends on the steady network: the link's latency and jitter, a heavy tail for pre-vote
    /// answers, nothing on a cut link.
    pub(super) fn send_steady(&mut self, msg: Message) {
        let Some(net) = self.steady.as_ref() else {
            return;
        };
        if net.cut == Some((msg.from, msg.to)) {
            return;
        }
        let (latency_ms, jitter_ms, tail_percent) =
            (net.latency_ms, net.jitter_ms, net.pre_vote_tail_percent);
        let mut delay = latency_ms + self.rng.range(0, jitter_ms + 1);
        if matches!(
            msg.body,
            MessageBody::RequestVoteResponse { pre_vote: true, .. }
        ) && self.percent(tail_percent)
        {
            delay += self.rng.range(100, 1_500);
        }
        let deliver_at_ms = self.real_ms + delay;
        let Some(net) = self.steady.as_mut() else {
            return;
        };
        if let MessageBody::Heartbeat { round, .. } = msg.body {
            let latest = net.latest_round.entry(msg.from).or_insert((msg.term, 0));
            if latest.0 != msg.term {
                *latest = (msg.term, 0);
            }
            latest.1 = latest.1.max(round);
        }
        net.sent += 1;
        net.queue.insert((deliver_at_ms, net.sent), msg);
    }

    /// Delivers every message due by now, in the order they fall due.
    fn deliver_due(&mut self) -> Result<(), String> {
        loop {
            let Some(net) = self.steady.as_mut() else {
                return Ok(());
            };
            let Some(entry) = net.queue.first_entry() else {
                return Ok(());
            };
            if entry.key().0 > self.real_ms {
                return Ok(());
            }
            let msg = entry.remove();
            if let MessageBody::HeartbeatResponse { round, .. } = msg.body
                && let Some(&(term, latest)) = net.latest_round.get(&msg.to)
                && term == msg.term
                && round > 0
            {
                let in_flight = latest.saturating_sub(round);
                self.stats.max_rounds_in_flight = self.stats.max_rounds_in_flight.max(in_flight);
            }
            self.deliver(msg)?;
        }
    }

    /// One millisecond: the disk, the network, the clients, the scenario, the clocks, then the
    /// checks.
    fn healthy_ms(&mut self, run: Option<&mut Run>) -> Result<(), String> {
        self.step += 1;
        for id in self.live() {
            while !self.nodes[&id].pending_writes.is_empty() {
                self.complete_write(id)?;
            }
        }
        self.deliver_due()?;
        let mut run = run;
        if let Some(run) = run.as_deref_mut() {
            self.client_load(run)?;
            self.advance_scenario(run)?;
        }
        self.real_ms += 1;
        for id in self.live() {
            let now = self.local_now(id);
            if let Some(raft) = self.nodes.get_mut(&id).and_then(|n| n.raft.as_mut()) {
                raft.tick(now);
            }
            self.drive(id)?;
        }
        self.check_invariants()?;
        match run {
            Some(run) => {
                run.elapsed_ms += 1;
                self.check_stability(run)
            }
            None => Ok(()),
        }
    }

    /// The established leader and its term: it has committed an entry of its term and every
    /// node follows it in that term.
    fn established(&self) -> Option<(NodeId, Term)> {
        let leader = self.leader()?;
        let raft = self.nodes[&leader].raft.as_ref()?;
        let term = raft.term();
        if raft.entry(raft.commit_index()).map(|e| e.term) != Some(term) {
            return None;
        }
        let all_follow = self.nodes.values().all(|n| {
            n.raft
                .as_ref()
                .is_some_and(|r| r.term() == term && r.leader() == Some(leader))
        });
        all_follow.then_some((leader, term))
    }

    fn client_load(&mut self, run: &mut Run) -> Result<(), String> {
        let leader = run.leader;
        if self.nodes[&leader]
            .raft
            .as_ref()
            .is_none_or(|r| r.role() != Role::Leader)
        {
            return Ok(());
        }
        let reads = match run.load.burst {
            Some((per_ms, first, last)) if (first..=last).contains(&run.elapsed_ms) => per_ms,
            _ => run.load.reads_per_ms,
        };
        for _ in 0..reads {
            let mode = if self.percent(run.load.lease_percent) {
                ReadMode::Lease
            } else {
                ReadMode::Linearizable
            };
            let now = self.local_now(leader);
            let committed_now = self.highest_committed();
            let id = ReadId(self.next_read);
            self.next_read += 1;
            let node = self.nodes.get_mut(&leader).unwrap();
            let raft = node.raft.as_mut().unwrap();
            if raft.read(now, id, mode).is_ok() {
                node.open_reads.insert(id, (mode, committed_now, false));
            }
            // One batch per read: each read that needs one starts its own round.
            self.drive(leader)?;
        }
        let paused = matches!(run.scenario, Scenario::Quiet { .. } | Scenario::Cut { .. });
        if !paused && self.percent(run.load.write_percent) {
            let payload = format!("s{}-p{}", self.seed, self.next_proposal);
            self.next_proposal += 1;
            let raft = self.nodes.get_mut(&leader).unwrap().raft.as_mut().unwrap();
            let result = raft.propose(Bytes::from(payload.into_bytes()));
            self.check_refusal(leader, &result)?;
            self.drive(leader)?;
        }
        Ok(())
    }

    /// True when the leader knows `target` holds its whole log.
    fn caught_up(&self, leader: NodeId, target: NodeId) -> bool {
        let Some(raft) = self.nodes[&leader].raft.as_ref() else {
            return false;
        };
        raft.match_index(target) == Some(raft.last_log_id().index)
    }

    fn role_of(&self, id: NodeId) -> Option<Role> {
        self.nodes[&id].raft.as_ref().map(|r| r.role())
    }

    fn advance_scenario(&mut self, run: &mut Run) -> Result<(), String> {
        let leader = run.leader;
        // Whatever changed since the last check is for the check at the end of this
        // millisecond to judge, before a transfer could make it look asked for.
        let changed = self
            .nodes
            .values()
            .any(|n| n.raft.as_ref().is_some_and(|r| r.term() > run.term));
        if changed || self.role_of(leader) != Some(Role::Leader) {
            return Ok(());
        }
        match run.scenario {
            Scenario::Idle { next_ms } if self.real_ms >= next_ms => {
                let followers: Vec<NodeId> = self
                    .voters
                    .iter()
                    .copied()
                    .filter(|&id| id != leader)
                    .collect();
                let pre_vote = self.nodes[&leader].config.pre_vote;
                // A follower with a pre-vote grant of its own term in flight to it is where a
                // stale grant could count if it ran a pre-vote now: cut one off, mostly.
                let stale: Vec<NodeId> = followers
                    .iter()
                    .copied()
                    .filter(|&id| self.stale_grant_in_flight(id))
                    .collect();
                // 0: transfer at once; 1: once the target caught up; 2: cut, then transfer.
                let kind = if pre_vote && !stale.is_empty() && self.percent(70) {
                    2
                } else {
                    self.rng.range(0, if pre_vote { 3 } else { 2 })
                };
                let pool = if kind == 2 && !stale.is_empty() {
                    stale
                } else {
                    followers
                };
                let Some(target) = self.pick(&pool) else {
                    return Ok(());
                };
                run.scenario = match kind {
                    0 => self.begin_transfer(leader, target)?,
                    _ => Scenario::Quiet {
                        target,
                        since_ms: self.real_ms,
                        cut: kind == 2,
                    },
                };
            }
            Scenario::Idle { .. } => {}
            Scenario::Quiet {
                target,
                since_ms,
                cut,
            } => {
                let caught_up = self.caught_up(leader, target);
                if caught_up && cut {
                    if let Some(net) = self.steady.as_mut() {
                        net.cut = Some((leader, target));
                    }
                    self.trace(format_args!("cut {leader} -> {target}"));
                    let linger_ms = self.rng.range(0, 300);
                    run.scenario = Scenario::Cut {
                        target,
                        since_ms: self.real_ms,
                        pre_voting_since_ms: None,
                        linger_ms,
                    };
                } else if caught_up || self.real_ms - since_ms > 500 {
                    run.scenario = self.begin_transfer(leader, target)?;
                }
            }
            Scenario::Cut {
                target,
                since_ms,
                pre_voting_since_ms,
                linger_ms,
            } => {
                let pre_voting_since_ms = pre_voting_since_ms
                    .or((self.role_of(target) == Some(Role::PreCandidate)).then_some(self.real_ms));
                // A grant in flight to the target from an earlier pre-vote must not count in
                // this one: keep the link down until it has arrived.
                let lingered = pre_voting_since_ms.is_some_and(|t| self.real_ms >= t + linger_ms)
                    && !self.stale_grant_in_flight(target);
                if lingered || self.real_ms - since_ms > MAX_CUT_MS {
                    if let Some(net) = self.steady.as_mut() {
                        net.cut = None;
                    }
                    self.trace(format_args!("heal {leader} -> {target}"));
                    run.scenario = self.begin_transfer(leader, target)?;
                } else {
                    run.scenario = Scenario::Cut {
                        target,
                        since_ms,
                        pre_voting_since_ms,
                        linger_ms,
                    };
                }
            }
            Scenario::Transfer(_) | Scenario::Grace { .. } | Scenario::Settling { .. } => {}
        }
        Ok(())
    }

    /// True when a granted pre-vote answer addressed to `id` is in flight and carries `id`'s
    /// current term: if `id` ran a pre-vote now, that grant would arrive during it.
    fn stale_grant_in_flight(&self, id: NodeId) -> bool {
        let Some(term) = self.nodes[&id].raft.as_ref().map(|r| r.term()) else {
            return false;
        };
        self.steady.as_ref().is_some_and(|net| {
            net.queue.values().any(|m| {
                m.to == id
                    && m.term == term
                    && matches!(
                        m.body,
                        MessageBody::RequestVoteResponse {
                            pre_vote: true,
                            granted: true,
                            ..
                        }
                    )
            })
        })
    }

    fn begin_transfer(&mut self, leader: NodeId, target: NodeId) -> Result<Scenario, String> {
        let Some(net) = self.steady.as_ref() else {
            return Ok(Scenario::Idle { next_ms: 0 });
        };
        let slowest_hop_ms = net.latency_ms + net.jitter_ms;
        let config = &self.nodes[&leader].config;
        let timeout_ms = config.election_timeout_min_ms;
        // Three hops, each up to the slowest latency plus a millisecond for the disk and one
        // for the clock step, must fit in the timeout as the leader's clock may measure it
        // (running fast by up to half the drift bound).
        let fast_enough = 3 * (slowest_hop_ms + 2) + config.clock_drift_bound_ms < timeout_ms;
        let caught_up = self.caught_up(leader, target);
        let pre_voting = self.role_of(target) == Some(Role::PreCandidate);
        let term = self.nodes[&leader]
            .raft
            .as_ref()
            .map_or(Term(0), |r| r.term());
        let now = self.local_now(leader);
        if !self.transfer(leader, target)? {
            return Err(format!(
                "{leader}, leader of {term}, refused to hand leadership to {target}"
            ));
        }
        self.trace(format_args!(
            "watch transfer {leader} -> {target}: caught up {caught_up}, pre-voting {pre_voting}"
        ));
        Ok(Scenario::Transfer(Watch {
            leader,
            term,
            target,
            deadline: now.plus_ms(timeout_ms),
            must_complete: caught_up && fast_enough,
            pre_voting,
        }))
    }

    /// No leader change without a transfer; transfers end in time.
    fn check_stability(&mut self, run: &mut Run) -> Result<(), String> {
        match run.scenario {
            Scenario::Transfer(w) => {
                if self.leads(w.target, w.term.next()) {
                    self.stats.transfers_completed += 1;
                    if w.pre_voting {
                        self.stats.transfers_to_pre_voting += 1;
                    }
                    self.take_over(run, w.target, w.term.next());
                } else if self.local_now(w.leader) >= w.deadline {
                    if w.must_complete {
                        return Err(self.describe_stalled_transfer(&w));
                    }
                    // Abandoned; a TimeoutNow still in flight may yet start an election.
                    let until_ms = self.real_ms + GRACE_MS;
                    run.scenario = Scenario::Grace {
                        target: w.target,
                        term: w.term,
                        until_ms,
                    };
                }
                return Ok(());
            }
            Scenario::Grace {
                target,
                term,
                until_ms,
            } => {
                if self.leads(target, term.next()) {
                    self.take_over(run, target, term.next());
                } else if self.real_ms >= until_ms {
                    run.scenario = if self.leads(run.leader, run.term)
                        && self
                            .nodes
                            .values()
                            .all(|n| n.raft.as_ref().is_none_or(|r| r.term() == run.term))
                    {
                        Scenario::Idle {
                            next_ms: self.real_ms,
                        }
                    } else {
                        Scenario::Settling {
                            since_ms: self.real_ms,
                        }
                    };
                }
                return Ok(());
            }
            Scenario::Settling { since_ms } => {
                if let Some((leader, term)) = self.established() {
                    self.stats.transfers_disrupted += 1;
                    self.take_over(run, leader, term);
                } else if self.real_ms - since_ms > ESTABLISH_MS {
                    return Err(format!(
                        "no leader established within {ESTABLISH_MS} ms after a transfer from {} in {} was abandoned",
                        run.leader, run.term
                    ));
                }
                return Ok(());
            }
            Scenario::Idle { .. } | Scenario::Quiet { .. } | Scenario::Cut { .. } => {}
        }
        for (&id, node) in &self.nodes {
            let Some(raft) = node.raft.as_ref() else {
                continue;
            };
            if raft.term() > run.term {
                return Err(format!(
                    "leader change on a healthy network: {id} reached {} as {:?} while {} led {} (for {} ms)",
                    raft.term(),
                    raft.role(),
                    run.leader,
                    run.term,
                    run.elapsed_ms - run.leader_since_ms
                ));
            }
        }
        let leader = self.nodes[&run.leader].raft.as_ref();
        match leader {
            Some(raft) if raft.role() == Role::Leader => {
                run.leader_contact = raft.fresh_commit().map(|f| f.as_of).or(run.leader_contact);
            }
            _ => {
                let now = self.local_now(run.leader);
                let contact = match run.leader_contact {
                    Some(t) => format!(
                        "a majority last acknowledged a round it sent at {}, {} ms before on its clock",
                        t.0,
                        now.ms_since(t)
                    ),
                    None => {
                        "no round it sent was ever known acknowledged by a majority".to_string()
                    }
                };
                return Err(format!(
                    "leader change on a healthy network: {} stepped down in {} after leading for {} ms; {contact}",
                    run.leader,
                    run.term,
                    run.elapsed_ms - run.leader_since_ms,
                ));
            }
        }
        Ok(())
    }

    /// True when `id` is up and leads `term`.
    fn leads(&self, id: NodeId, term: Term) -> bool {
        self.nodes[&id]
            .raft
            .as_ref()
            .is_some_and(|r| r.role() == Role::Leader && r.term() == term)
    }

    /// `leader` is now the established leader of `term`; the next scenario comes a little later.
    fn take_over(&mut self, run: &mut Run, leader: NodeId, term: Term) {
        self.trace(format_args!("{leader} leads {term}"));
        run.leader = leader;
        run.term = term;
        run.leader_since_ms = run.elapsed_ms;
        run.leader_contact = None;
        let next_ms = self.real_ms + self.rng.range(20, 250);
        run.scenario = Scenario::Idle { next_ms };
    }

    fn describe_stalled_transfer(&self, w: &Watch) -> String {
        let target_state = self.nodes[&w.target]
            .raft
            .as_ref()
            .map_or("down".to_string(), |r| {
                format!("{:?} in {}", r.role(), r.term())
            });
        let timeout_ms = self.nodes[&w.leader].config.election_timeout_min_ms;
        format!(
            "transfer did not complete: {} began handing {} to {}{} (caught up, links of at most {} ms) at {} on its clock, and at its deadline {} the target is {target_state}",
            w.leader,
            w.term,
            w.target,
            if w.pre_voting {
                ", which was running a pre-vote,"
            } else {
                ""
            },
            self.steady
                .as_ref()
                .map_or(0, |n| n.latency_ms + n.jitter_ms),
            w.deadline.0 - timeout_ms,
            w.deadline.0,
        )
    }

    /// A healthy run: elect a leader, then hold it steady under load for [`STABLE_MS`].
    fn run_healthy(&mut self) -> Result<(), String> {
        let election_min_ms = self.nodes[&NodeId(1)].config.election_timeout_min_ms;
        let max_hop_ms = election_min_ms / 3;
        let latency_ms = [1, 4, 10, 18, 25, 30][self.rng.range(0, 6) as usize].min(max_hop_ms);
        let jitter_ms = [0, 1, 3][self.rng.range(0, 3) as usize].min(max_hop_ms - latency_ms);
        let pre_vote_tail_percent = [0, 30, 60][self.rng.range(0, 3) as usize];
        self.steady = Some(SteadyNetwork {
            latency_ms,
            jitter_ms,
            pre_vote_tail_percent,
            queue: BTreeMap::new(),
            sent: 0,
            cut: None,
            latest_round: BTreeMap::new(),
        });
        // On links slow enough for MAX_BURST_READS_PER_MS reads per ms to keep more rounds in
        // flight than the lease clock tracks, a third of the seeds send a burst of reads aimed
        // at BURST_ROUNDS rounds in flight. Bursts are what make a run expensive, so faster
        // links, where no burst could outrun the lease clock, get none.
        let round_trip_ms = 2 * latency_ms + jitter_ms + 1;
        let bursty = MAX_BURST_READS_PER_MS * round_trip_ms > BURST_ROUNDS;
        let burst = if bursty && self.rng.range(0, 3) == 0 {
            let per_ms = (BURST_ROUNDS / round_trip_ms).clamp(1, MAX_BURST_READS_PER_MS);
            let first = self.rng.range(50, 300);
            // Long enough for a leader that loses track of its rounds to step down.
            let last = first + round_trip_ms + election_min_ms + 30;
            Some((per_ms, first, last))
        } else {
            None
        };
        let load = Load {
            reads_per_ms: [1, 2, 4][self.rng.range(0, 3) as usize],
            burst,
            write_percent: [0, 10, 30][self.rng.range(0, 3) as usize],
            lease_percent: [0, 10][self.rng.range(0, 2) as usize],
        };
        self.trace(format_args!(
            "healthy: {latency_ms}+{jitter_ms} ms links, pre-vote tail {pre_vote_tail_percent}%, {load:?}, {} rounds tracked",
            TRACKED_ROUNDS
        ));
        let mut established = None;
        for _ in 0..ESTABLISH_MS {
            self.healthy_ms(None)?;
            established = self.established();
            if established.is_some() {
                break;
            }
        }
        let Some((leader, term)) = established else {
            return Err(format!(
                "no leader established within {ESTABLISH_MS} ms on a healthy network"
            ));
        };
        self.trace(format_args!("established {leader} in {term}"));
        let next_ms = self.real_ms + self.rng.range(0, 150);
        let mut run = Run {
            load,
            leader,
            term,
            leader_contact: None,
            elapsed_ms: 0,
            scenario: Scenario::Idle { next_ms },
            leader_since_ms: 0,
        };
        for _ in 0..STABLE_MS {
            self.healthy_ms(Some(&mut run))?;
        }
        Ok(())
    }
}

/// Runs one healthy seed; returns the failure description if it fails.
fn run_healthy_seed(seed: u64) -> Result<(u64, Stats), String> {
    catch_panic(seed, HEALTHY_TEST, || {
        let mut sim = Sim::build(seed, false);
        match sim.run_healthy() {
            Ok(()) => Ok((sim.trace_hash, sim.stats)),
            Err(e) => Err(sim.describe_failure(&e, HEALTHY_TEST)),
        }
    })
}

#[test]
fn healthy_clusters_keep_their_leader() {
    if let Some(seed) = env_u64("RAFT_SIM_SEED") {
        match run_healthy_seed(seed) {
            Ok((hash, stats)) => eprintln!("seed {seed}: ok, trace hash {hash:016x}, {stats:?}"),
            Err(e) => panic!("{e}"),
        }
        return;
    }
    let seeds = env_u64("RAFT_SIM_SEEDS").map_or(DEFAULT_SEEDS, |n| (n / SEEDS_DIVISOR).max(1));
    let started = std::time::Instant::now();
    let (failures, stats) = run_many(0, seeds, run_healthy_seed);
    eprintln!(
        "simulated {seeds} healthy seeds x {STABLE_MS} ms in {:.1?}: {} failures; {stats:?}",
        started.elapsed(),
        failures.len()
    );
    report(&failures, seeds);
    // The runs must exercise what they claim to check.
    assert!(
        stats.reads_served > 0 && stats.transfers_completed > 0,
        "{stats:?}"
    );
    if seeds >= DEFAULT_SEEDS {
        assert!(stats.transfers_to_pre_voting > 0, "{stats:?}");
        assert!(
            stats.max_rounds_in_flight > TRACKED_ROUNDS,
            "no burst outran the lease clock's memory: {stats:?}"
        );
    }
}

#[test]
fn a_healthy_run_replays_from_its_seed() {
    for seed in [4, 9] {
        assert_eq!(
            run_healthy_seed(seed),
            run_healthy_seed(seed),
            "seed {seed}"
        );
    }
}
