//! raft-kv's state machine ([`KvStore`]) in turmoil simulations of 3- and 5-node clusters on
//! the simulation kit (`raft-sim`), one test per scenario. Every run gets the kit's checks:
//! linearizability of the history against the key-value model, every answer against the model
//! at its log index, read-your-writes, bounded staleness, the lease check, the invariants on
//! every node's status after every step, replicas that applied the same commands, liveness
//! after the faults, and the store audit (every acknowledged write on a majority of the final
//! voters' stores). The nodes take snapshots and compact their logs every few dozen to a couple
//! of hundred entries throughout (the kit draws the policy from the seed), and lagging
//! followers catch up from snapshots sent in small chunks. The scenarios the random nemesis
//! cannot aim at are written as directors ([`raft_sim::Director`]): divergent tails, followers
//! catching up from snapshots, crashes right after a snapshot, and a certificate rotation.
//!
//! A failure prints its seed and the command that replays it (`RAFT_SIM_SEED=<seed>`);
//! `RAFT_SIM_SEEDS=<n>` runs more seeds of every scenario.

use raft_core::node::Status;
use raft_core::{LogIndex, NodeId, Term};
use raft_kv::store::{KvCommand, KvStore};
use raft_sim::{Director, Fault, Nemesis, Report, Simulation, Storage, Target, seeds};
use raft_tests::certs::TestCa;
use raft_tests::kv_sim::{KvSimModel, Mix, simulation};
use rand::RngExt;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

type Sim = Simulation<KvStore, KvSimModel>;
type KvReport = Report<raft_sim::OpOf<KvStore>, raft_sim::RetOf<KvStore>>;

/// Runs `simulation`'s seeds (the kit panics with the report of the first that fails), and
/// prints what they did.
fn check(name: &str, simulation: &Sim) -> Vec<KvReport> {
    let started = std::time::Instant::now();
    let reports = simulation.check();
    let sum = |f: &dyn Fn(&KvReport) -> u64| reports.iter().map(f).sum::<u64>();
    eprintln!(
        "{name}: {} seeds in {:.1?}: {} writes and {} reads answered, {} bounded-staleness \
         reads, {} elections, {} node starts, {} faults, {} acknowledged writes audited",
        reports.len(),
        started.elapsed(),
        sum(&|r| r.writes.ok),
        sum(&|r| r.reads.ok),
        sum(&|r| r.bounded_reads),
        sum(&|r| r.elections),
        sum(&|r| r.node_starts),
        sum(&|r| r.faults.iter().filter(|f| f.fault.is_some()).count() as u64),
        sum(&|r| r.audited_writes.unwrap_or(0)),
    );
    for report in &reports {
        assert!(report.writes.ok > 0 && report.elections > 0, "{report}");
    }
    reports
}

/// The random nemesis (every fault kind, one at a time, and clock drift within the bound).
fn faults(nodes: u64) -> Sim {
    simulation(3, 3, Mix::FAULTS)
        .nodes(nodes)
        .duration(Duration::from_secs(4))
        .latency(Duration::from_millis(1), Duration::from_millis(12))
        .default_seeds(10)
}

#[test]
fn clusters_of_three_under_faults_stay_linearizable() {
    let reports = check("faults, 3 nodes", &faults(3));
    assert!(
        reports.iter().all(|r| r.follower_reads > 0),
        "no read reached a follower"
    );
}

#[test]
fn clusters_of_five_under_faults_stay_linearizable() {
    let reports = check("faults, 5 nodes", &faults(5));
    assert!(
        reports.iter().all(|r| r.follower_reads > 0),
        "no read reached a follower"
    );
}

/// Five nodes. Again and again the leader can reach only one follower (or none) while clients
/// keep writing to it, and the others elect a new leader, which gets the same treatment: logs
/// grow divergent uncommitted tails that later leaders truncate or commit. Requests time out
/// after 4 s, so that a write outlives several changes of leader before its node answers it:
/// that answer is what the history check judges.
fn divergent_tails() -> Sim {
    simulation(7, 3, Mix::WRITES)
        .nodes(5)
        .nemesis(Nemesis::none())
        .duration(Duration::from_secs(5))
        .latency(Duration::from_millis(1), Duration::from_millis(8))
        .configure(|config| config.request_timeout = Duration::from_secs(4))
        .director(divide)
        .default_seeds(12)
}

/// The divergent-tails director. Whenever a new leader appears (at once, or after a few
/// milliseconds in which some of its entries get out), it is cut off from every node but one
/// follower (often the previous leader; sometimes none), and that follower is, half the time,
/// cut off from the rest too. A cut that lasts long enough for no new leader to appear ends
/// with a heal.
async fn divide(director: Director<KvStore>) {
    let mut rng = director.rng();
    let mut aimed_at: Option<(Term, NodeId)> = None;
    let mut noticed: Option<((Term, NodeId), u64)> = None;
    let mut previous: Option<NodeId> = None;
    let mut cut_ends_at = 0;
    while director.running() {
        tokio::time::sleep(Duration::from_millis(1)).await;
        let now = director.now_ms();
        if aimed_at.is_some() && now >= cut_ends_at {
            director.heal().await;
            aimed_at = None;
        }
        let Some(leader) = director.leader().and_then(|id| director.status(id)) else {
            continue;
        };
        let leader = (leader.term, leader.id);
        if aimed_at == Some(leader) {
            continue;
        }
        match noticed {
            Some((seen, at)) if seen == leader => {
                if now < at {
                    continue;
                }
            }
            _ => {
                let delay = if rng.random_ratio(3, 5) {
                    0
                } else {
                    rng.random_range(5..60)
                };
                noticed = Some((leader, now + delay));
                if delay > 0 {
                    continue;
                }
            }
        }
        director.heal().await;
        let (term, id) = leader;
        let others: Vec<NodeId> = director.nodes().into_iter().filter(|&o| o != id).collect();
        let follower = match previous.filter(|p| others.contains(p)) {
            Some(previous) if rng.random_ratio(2, 5) => Some(previous),
            _ if rng.random_ratio(1, 5) => None,
            _ => Some(others[rng.random_range(0..others.len())]),
        };
        let rest: Vec<NodeId> = others
            .iter()
            .copied()
            .filter(|&o| Some(o) != follower)
            .collect();
        director.partition(&[id], &rest).await;
        let alone = follower.is_some() && rng.random_bool(0.5);
        if let Some(follower) = follower.filter(|_| alone) {
            director.partition(&[follower], &rest).await;
        }
        let reach = match follower {
            Some(f) if alone => format!("only n{}, which reaches no one else", f.0),
            Some(f) => format!("only n{}", f.0),
            None => "no one".to_string(),
        };
        director.note(format!(
            "leader n{} of term {} reaches {reach}",
            id.0, term.0
        ));
        previous = Some(id);
        aimed_at = Some(leader);
        cut_ends_at = now + rng.random_range(300..900);
    }
}

#[test]
fn divergent_tails_stay_linearizable() {
    let reports = check("divergent tails", &divergent_tails());
    for report in &reports {
        let cuts = report
            .faults
            .iter()
            .filter(|f| f.what.contains(" reaches "))
            .count();
        assert!(
            cuts >= 3,
            "the leaders were cut off only {cuts} times\n{report}"
        );
    }
}

/// A healthy network with a steady one-way latency of up to a third of the minimum election
/// timeout (a message takes between two thirds of the maximum and the maximum), and many
/// clients in tight loops of writes and linearizable reads.
fn steady(nodes: u64, max_latency_ms: u64) -> Sim {
    simulation(12, 8, Mix::STEADY)
        .nodes(nodes)
        .nemesis(Nemesis::none())
        .duration(Duration::from_secs(4))
        .latency(
            Duration::from_millis(max_latency_ms * 2 / 3),
            Duration::from_millis(max_latency_ms),
        )
        .default_seeds(4)
}

/// The terms after the first one that had a leader.
fn later_terms(report: &KvReport) -> Vec<raft_sim::TermRecord> {
    let Some(first) = report.terms.iter().find(|t| t.leader.is_some()) else {
        panic!("no leader was ever elected\n{report}");
    };
    report
        .terms
        .iter()
        .filter(|t| t.term > first.term)
        .copied()
        .collect()
}

/// Once a leader is elected on a healthy network, no other term may begin.
#[test]
fn a_healthy_leader_keeps_its_leadership() {
    for (nodes, max_latency_ms) in [(3, 15), (5, 50)] {
        let name = format!("steady, {nodes} nodes, up to {max_latency_ms} ms a message");
        for report in check(&name, &steady(nodes, max_latency_ms)) {
            let later = later_terms(&report);
            assert!(
                later.is_empty(),
                "terms began after the first leader's on a healthy network: {later:?}\n{report}"
            );
        }
    }
}

/// As above, with the leader asked every 300 to 1,500 ms to hand over to another voter: every
/// transfer must hand over leadership (its target seen leading within 1 s), and no term may
/// begin but the transfers' (one each, each with a leader).
#[test]
fn transfers_in_a_healthy_cluster_complete() {
    for (nodes, max_latency_ms) in [(3, 15), (5, 50)] {
        let simulation = steady(nodes, max_latency_ms)
            .nemesis(Nemesis::only([Fault::TransferLeadership]))
            .duration(Duration::from_secs(5));
        let name = format!("steady transfers, {nodes} nodes");
        for report in check(&name, &simulation) {
            let started = report.leadership_transfers.ok;
            assert!(started > 0, "{report}");
            assert_eq!(report.transfers_completed, started, "{report}");
            let later = later_terms(&report);
            assert_eq!(later.len() as u64, started, "{later:?}\n{report}");
            assert!(later.iter().all(|t| t.leader.is_some()), "{later:?}");
        }
    }
}

/// How long a follower that came back (healed, or restarted with empty stores) may take to
/// serve a read-your-writes read of a write acknowledged after it came back, snapshot included.
const CATCH_UP_MS: u64 = 5_000;

/// Followers catching up from snapshots, in a random order: one follower is cut off from every
/// node until every other node has compacted its log past the follower's last entry (or 4 s
/// passed), then healed; and a follower is shut down, its stores emptied, and restarted. Each
/// is done only while a leader is established and the network is healthy, and nothing else
/// happens until the follower caught up: a write acknowledged after it came back must be
/// readable on it with `Consistency::AtLeast` within [`CATCH_UP_MS`]. A snapshot every 20 to
/// 100 entries, so that a cut lasts several snapshot periods in a couple of seconds.
fn snapshot_catch_up(nodes: u64) -> Sim {
    simulation(6, 3, Mix::WRITES)
        .nodes(nodes)
        .nemesis(Nemesis::none())
        .duration(Duration::from_secs(13))
        .latency(Duration::from_millis(1), Duration::from_millis(8))
        .configure(|config| config.snapshot_every = config.snapshot_every.min(100))
        .director(catch_up_steps)
        .default_seeds(6)
}

/// The last index a node's snapshot covers: its log holds the entries after it.
fn log_start(status: &Status) -> LogIndex {
    LogIndex(status.last_log_index.0.saturating_sub(status.log_entries))
}

/// A leader every node follows in its term, which has heard from every node within 100 ms.
fn established_leader(director: &Director<KvStore>) -> Option<NodeId> {
    let statuses: Vec<Status> = director
        .nodes()
        .into_iter()
        .map(|id| director.status(id))
        .collect::<Option<_>>()?;
    let leader = statuses
        .iter()
        .find(|s| s.role == raft_core::Role::Leader)?;
    let all_follow = statuses
        .iter()
        .all(|s| s.term == leader.term && s.leader == Some(leader.id));
    let heard = leader
        .peers
        .iter()
        .all(|p| p.since_last_ack_ms.is_some_and(|ms| ms <= 100));
    (all_follow && heard).then_some(leader.id)
}

async fn catch_up_steps(director: Director<KvStore>) {
    let mut rng = director.rng();
    let cut_first = rng.random_bool(0.5);
    tokio::time::sleep(Duration::from_millis(rng.random_range(400..1_200))).await;
    for step in 0..2 {
        if step > 0 {
            // Time for the leader to hear that the last follower caught up: a snapshot it
            // still believes it is sending bounds its compaction.
            tokio::time::sleep(Duration::from_millis(rng.random_range(200..800))).await;
        }
        let cut = (step == 0) == cut_first;
        let leader = loop {
            if !director.running() {
                return director.problem("the faults stopped before every step was taken");
            }
            if let Some(leader) = established_leader(&director) {
                break leader;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let followers: Vec<NodeId> = director
            .nodes()
            .into_iter()
            .filter(|&n| n != leader)
            .collect();
        let follower = followers[rng.random_range(0..followers.len())];
        let Some(last) = director.status(follower).map(|s| s.last_log_index) else {
            return director.problem(format!("n{} is down", follower.0));
        };
        let others: Vec<NodeId> = director
            .nodes()
            .into_iter()
            .filter(|&n| n != follower)
            .collect();
        if cut {
            director.isolate(follower).await;
            let since = director.now_ms();
            // Until every other node compacted past the follower's last entry.
            while director.now_ms() < since + 4_000 {
                let compacted = others
                    .iter()
                    .all(|&o| director.status(o).is_some_and(|s| log_start(&s) > last));
                if compacted && director.now_ms() >= since + 400 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            director.heal().await;
        } else {
            director.crash_and_empty(follower).await;
            tokio::time::sleep(Duration::from_millis(rng.random_range(50..500))).await;
            director.restart(follower).await;
        }
        // A snapshot is needed when the leader's log no longer holds the entry after the last
        // one the follower kept (it kept nothing, when emptied).
        let kept = if cut { last } else { LogIndex(0) };
        let needed = director
            .leader()
            .and_then(|l| director.status(l))
            .is_some_and(|s| log_start(&s) > kept);
        let kind = if cut { "cut-off" } else { "emptied" };
        if !needed {
            // Else the run did not test what it is for.
            director.problem(format!(
                "the {kind} n{} came back when the leader's log still held what it lacked: \
                 no snapshot was needed",
                follower.0
            ));
        }
        match catch_up(&director, follower).await {
            Ok(took) => director.note(format!(
                "catch-up: the {kind} n{} caught up in {took} ms (snapshot needed: {needed})",
                follower.0
            )),
            Err(why) => director.problem(format!(
                "the {kind} n{} did not catch up within {CATCH_UP_MS} ms: {why}",
                follower.0
            )),
        }
    }
}

/// Writes a value no one else writes through the leader, then reads it on `follower` with
/// `AtLeast`; how long that took, or why it failed.
async fn catch_up(director: &Director<KvStore>, follower: NodeId) -> Result<u64, String> {
    let since = director.now_ms();
    let client = director.client();
    let key = format!("catch-up-{since}");
    let mut why = "no write was acknowledged".to_string();
    while director.now_ms() <= since + CATCH_UP_MS {
        let command = KvCommand::Put {
            key: key.clone(),
            value: format!("n{} at {since}", follower.0),
        };
        let Some(written) = client.propose(command).await.ok() else {
            continue;
        };
        while director.now_ms() <= since + CATCH_UP_MS {
            let consistency = raft_core::node::Consistency::AtLeast(written.index);
            let read = client
                .read_on(Target::Node(follower), key.clone(), consistency)
                .await;
            match read.ok() {
                Some(read) if read.response.is_some() => return Ok(director.now_ms() - since),
                Some(read) => return Err(format!("read {:?}", read.response)),
                None => why = format!("not read at {} on n{}", written.index, follower.0),
            }
        }
    }
    Err(why)
}

#[test]
fn lagging_and_emptied_followers_catch_up_from_snapshots() {
    let mut caught_up: BTreeMap<&str, u64> = BTreeMap::new();
    for nodes in [3, 5] {
        for report in check("snapshot catch-up", &snapshot_catch_up(nodes)) {
            for kind in ["cut-off", "emptied"] {
                let needed = format!("catch-up: the {kind} ");
                let found = report
                    .faults
                    .iter()
                    .filter(|f| f.what.starts_with(&needed))
                    .collect::<Vec<_>>();
                assert_eq!(found.len(), 1, "{kind}\n{report}");
                if found[0].what.ends_with("(snapshot needed: true)") {
                    *caught_up.entry(kind).or_default() += 1;
                }
            }
        }
    }
    eprintln!("caught up when only a snapshot could help: {caught_up:?}");
    assert!(
        caught_up.get("cut-off").is_some_and(|&n| n > 0)
            && caught_up.get("emptied").is_some_and(|&n| n > 0),
        "no follower needed a snapshot to catch up: {caught_up:?}"
    );
}

/// The durable stores on turmoil's simulated disk, with small log segments and a snapshot every
/// 32 entries (so that snapshots are written and segments purged all the time), under
/// write-heavy clients, while hosts are crashed (losing what they had not synced) and restarted
/// every 50 to 300 ms, now and then all at once (a power loss); and besides, a director that
/// crashes a node the moment its snapshot moves forward, and brings it back 20 to 150 ms later.
fn disk_crashes(nodes: u64) -> Sim {
    simulation(6, 3, Mix::DISK)
        .nodes(nodes)
        .storage(Storage::SimulatedDisk {
            segment_bytes: 8 * 1024,
        })
        .nemesis(
            Nemesis::only([Fault::Crash, Fault::Restart, Fault::PowerLoss])
                .interval(Duration::from_millis(50), Duration::from_millis(300)),
        )
        .duration(Duration::from_secs(4))
        .configure(|config| config.snapshot_every = 32)
        .director(crash_after_snapshots)
        .default_seeds(DISK_CRASH_SEEDS)
}

/// Seeds of [`disk_crashes`] run by default, for each cluster size.
const DISK_CRASH_SEEDS: u64 = 50;

async fn crash_after_snapshots(director: Director<KvStore>) {
    let mut rng = director.rng();
    let mut seen: BTreeMap<NodeId, LogIndex> = BTreeMap::new();
    while director.running() {
        tokio::time::sleep(Duration::from_millis(1)).await;
        for node in director.nodes() {
            let Some(snapshot) = director.status(node).and_then(|s| s.snapshot) else {
                continue;
            };
            let before = seen.insert(node, snapshot.0);
            if before.is_some_and(|b| b < snapshot.0) && rng.random_ratio(1, 3) {
                director.note(format!("n{}'s snapshot reached {}", node.0, snapshot.0));
                director.crash(node).await;
                let down = rng.random_range(20..150);
                let director = director.clone();
                tokio::task::spawn_local(async move {
                    tokio::time::sleep(Duration::from_millis(down)).await;
                    if director.running() {
                        director.restart(node).await;
                    }
                });
            }
        }
    }
}

#[test]
fn crashed_hosts_keep_every_acknowledged_write() {
    for nodes in [3, 5] {
        let reports = check("disk crashes", &disk_crashes(nodes));
        let after_snapshot: usize = reports
            .iter()
            .map(|r| {
                r.faults
                    .iter()
                    .filter(|f| f.what.contains("snapshot reached"))
                    .count()
            })
            .sum();
        let power_losses: usize = reports
            .iter()
            .map(|r| {
                r.faults
                    .iter()
                    .filter(|f| f.fault == Some(Fault::PowerLoss))
                    .count()
            })
            .sum();
        eprintln!("{after_snapshot} crashes right after a snapshot, {power_losses} power losses");
        assert!(after_snapshot > 0 && power_losses > 0);
        for report in &reports {
            assert!(report.audited_writes.is_some_and(|n| n > 0), "{report}");
        }
    }
}

/// Three voters and two spare hosts that start empty, to join (paper §6): the leader is asked
/// again and again to add a learner, remove one, promote one, remove a voter (itself, often)
/// or replace a voter with a learner, while the random nemesis partitions, slows and crashes.
fn membership_churn() -> Sim {
    simulation(4, 3, Mix::FAULTS)
        .spares(2)
        .nemesis(Nemesis::default().with(Fault::MembershipChange))
        .duration(Duration::from_secs(5))
        .default_seeds(10)
}

#[test]
fn membership_churn_stays_linearizable() {
    let reports = check("membership churn", &membership_churn());
    let changes: u64 = reports.iter().map(|r| r.membership_changes.ok).sum();
    let removals: u64 = reports.iter().map(|r| r.leader_removals).sum();
    eprintln!("{changes} membership changes, {removals} of them removing the leader");
    assert!(changes > 0 && removals > 0);
}

/// The random nemesis with every connection in mutual TLS: each node presents a certificate
/// naming `raft-node-<id>` from a throw-away CA and verifies its peers'. Halfway through, every
/// node's certificate is replaced by one from a second CA (which the bundle trusts from the
/// start) while the nemesis acts, so connections made after it present the new certificates.
fn mutual_tls() -> Sim {
    let (first, next) = (TestCa::new(1), TestCa::new(2));
    let bundle = format!("{}{}", first.pem, next.pem);
    let tls: Rc<BTreeMap<NodeId, raft_net::PeerTls>> = Rc::new(
        (1..=3)
            .map(|id| (NodeId(id), first.node(id).tls(&bundle)))
            .collect(),
    );
    let next = Rc::new((next, bundle));
    let tls_for_nodes = Rc::clone(&tls);
    faults(3)
        .tcp_config(move |id, config| config.tls = tls_for_nodes.get(&id).cloned())
        .director(move |director: Director<KvStore>| {
            let (tls, next) = (Rc::clone(&tls), Rc::clone(&next));
            async move {
                tokio::time::sleep(Duration::from_millis(ROTATION_MS)).await;
                let (ca, bundle) = &*next;
                for (id, tls) in tls.iter() {
                    let signed = ca.node(id.0);
                    let reloaded = tls.reload_pem(
                        signed.cert.as_bytes(),
                        signed.key.as_bytes(),
                        bundle.as_bytes(),
                    );
                    if let Err(error) = reloaded {
                        director.problem(format!("n{}'s certificate: {error}", id.0));
                    }
                }
                director.note("every certificate replaced by one from the second CA");
            }
        })
}

/// When the certificates are replaced, in milliseconds into the run.
const ROTATION_MS: u64 = 2_000;

#[test]
fn mutual_tls_clusters_under_faults_stay_linearizable() {
    // A cluster of its own for every seed: the certificates are replaced halfway through.
    for seed in seeds(6) {
        let report = mutual_tls().run(seed);
        assert!(report.is_ok(), "{report}");
        assert!(report.writes.ok > 0, "{report}");
        assert!(
            report.faults.iter().any(|f| f.what.contains("second CA")),
            "{report}"
        );
        // The cluster worked on the first certificates and on the second: writes were
        // acknowledged before the rotation and after it.
        let acknowledged_at: Vec<u64> = report
            .history
            .operations()
            .iter()
            .filter(|o| matches!(o.op, raft_sim::ClusterOp::Write(_)))
            .filter_map(|o| match o.outcome {
                raft_sim::Recorded::Ok { returned_ms, .. } => Some(returned_ms),
                _ => None,
            })
            .collect();
        assert!(
            acknowledged_at.iter().any(|&at| at < ROTATION_MS)
                && acknowledged_at.iter().any(|&at| at > ROTATION_MS),
            "no write acknowledged before or after the rotation\n{report}"
        );
        eprintln!("mutual TLS: {}", report.summary());
    }
}

/// The same seed gives the same run, in every scenario.
#[test]
fn a_seed_replays_the_same_run() {
    let scenarios: [(&str, fn() -> Sim); 7] = [
        ("faults", || faults(3)),
        ("divergent tails", divergent_tails),
        ("snapshot catch-up", || snapshot_catch_up(3)),
        ("disk crashes", || disk_crashes(3)),
        ("steady transfers", || {
            steady(3, 15).nemesis(Nemesis::only([Fault::TransferLeadership]))
        }),
        ("mutual TLS", mutual_tls),
        ("membership churn", membership_churn),
    ];
    for (name, make) in scenarios {
        let (first, second) = (make().run(7), make().run(7));
        assert_eq!(
            (first.digest, first.writes, first.reads, first.elections),
            (second.digest, second.writes, second.reads, second.elections),
            "{name}"
        );
    }
}
