//! What a failed write promises. `Error::NotLeader` means the write never takes effect, so a
//! client may retry it; a write whose entry a node's log lost in a change of leader is not
//! necessarily lost, since another node may hold the entry and win a later election with it.
//! Five in-process nodes with paused tokio time and a network that drops messages by kind.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use raft_core::node::{Ack, Consistency, Error, NodeHandle, WriteOutcome};
use raft_core::{Message, MessageBody, NodeId, Role, Term};
use raft_tests::filtered::{FilteredNetwork, committed_leader};
use raft_tests::kv::{KvCommand, KvResponse, KvStore};
use std::collections::BTreeMap;
use std::time::Duration;

struct Cluster {
    network: FilteredNetwork,
    nodes: BTreeMap<NodeId, NodeHandle<KvStore>>,
}

impl Cluster {
    async fn start(size: u64) -> Cluster {
        let network = FilteredNetwork::new();
        let nodes = network.start_cluster(size, Duration::from_secs(60)).await;
        Cluster { network, nodes }
    }

    fn only(&self, rule: impl Fn(&Message) -> bool + Send + 'static) {
        self.network.only(rule);
    }

    fn node(&self, id: NodeId) -> &NodeHandle<KvStore> {
        &self.nodes[&id]
    }

    /// Waits until `id` satisfies `condition` (bounded: a stuck scenario fails, not hangs).
    async fn wait(
        &self,
        id: NodeId,
        what: &str,
        condition: impl Fn(&raft_core::node::Status) -> bool,
    ) {
        for _ in 0..20_000 {
            if condition(&self.node(id).status()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!(
            "{id} never reached: {what}; status {:?}",
            self.node(id).status()
        );
    }
}

fn put(key: &str, value: &str) -> KvCommand {
    KvCommand::Put {
        key: key.into(),
        value: value.into(),
    }
}

fn is_append(m: &Message) -> bool {
    matches!(m.body, MessageBody::AppendEntries { .. })
}

type Pending = tokio::task::JoinHandle<Result<WriteOutcome<KvResponse>, Error>>;

fn spawn_put(node: &NodeHandle<KvStore>, key: &str, value: &str) -> Pending {
    let node = node.clone();
    let command = put(key, value);
    tokio::spawn(async move { node.propose(command, Ack::Quorum).await })
}

/// The scenario of a write answered "not leader" that commits: five nodes N, X, A, B, C. N
/// leads; its writes W1..W3 reach only X. A wins the next term with B and C, and its blank
/// entry reaches only N, which truncates W1..W3. N wins again with B and C; its new entries
/// reach no one, and a new write P lands at W3's index. X, which still holds W1..W3, then wins
/// with B and C and commits them. Every write must be answered by what happened to it: W1..W3
/// succeed, P is lost (`NotLeader`), and no write answered `NotLeader` is in the final state.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_write_answered_not_leader_never_takes_effect() {
    let cluster = Cluster::start(5).await;
    let n = committed_leader(&cluster.nodes).await.id();
    cluster
        .node(n)
        .propose(put("x", "0"), Ack::Quorum)
        .await
        .unwrap();
    let others: Vec<NodeId> = cluster
        .nodes
        .keys()
        .copied()
        .filter(|&id| id != n)
        .collect();
    let (x, group) = (others[0], [others[1], others[2], others[3]]);
    let in_group = move |id: NodeId| group.contains(&id);
    let term_n = cluster.node(n).status().term;
    let before = cluster.node(n).status().last_log_index;

    // N reaches only X: W1..W3 are on N and X, uncommitted.
    cluster.only(move |m| !(m.from == n && in_group(m.to) || in_group(m.from) && m.to == n));
    let writes: Vec<Pending> = (1..=3)
        .map(|i| spawn_put(cluster.node(n), &format!("w{i}"), "v"))
        .collect();
    cluster
        .wait(x, "X holds W1..W3", |s| s.last_log_index.0 == before.0 + 3)
        .await;

    // X is cut off. A, B, C elect one of them; appends among them are lost, so its blank entry
    // reaches only N, which truncates W1..W3 (N's messages to the group get through; its vote
    // requests and answers do not).
    cluster.only(move |m| {
        if m.from == x || m.to == x {
            return false;
        }
        if in_group(m.from) && in_group(m.to) {
            return !is_append(m);
        }
        if m.from == n {
            return matches!(
                m.body,
                MessageBody::AppendEntriesResponse { .. } | MessageBody::HeartbeatResponse { .. }
            );
        }
        if m.to == n {
            return is_append(m) || matches!(m.body, MessageBody::Heartbeat { .. });
        }
        true
    });
    cluster
        .wait(
            n,
            "N follows a leader of a later term and lost W1..W3",
            |s| {
                s.role == Role::Follower
                    && s.term > term_n
                    && s.leader.is_some_and(in_group)
                    && s.last_log_index.0 == before.0 + 1
            },
        )
        .await;
    let a = cluster.node(n).status().leader.unwrap();

    // A and X are cut off; N campaigns with B and C (its log is the most up to date among
    // them) and wins; nothing it appends reaches anyone.
    cluster.only(move |m| {
        m.from != a && m.to != a && m.from != x && m.to != x && !(m.from == n && is_append(m))
    });
    cluster
        .wait(n, "N leads again", |s| {
            s.role == Role::Leader && s.term.0 > term_n.0 + 1
        })
        .await;
    // N's blank entry is at W2's index; P lands at W3's.
    cluster
        .wait(n, "N appended its blank entry", |s| {
            s.last_log_index.0 == before.0 + 2
        })
        .await;
    let p = spawn_put(cluster.node(n), "p", "v");
    cluster
        .wait(n, "P is in N's log", |s| s.last_log_index.0 == before.0 + 3)
        .await;
    tokio::time::sleep(Duration::from_millis(5)).await;

    // N is cut off; X, which holds W1..W3, wins with B and C and commits them.
    let term_before_x = cluster.node(n).status().term;
    cluster.only(move |m| m.from != n && m.to != n && m.from != a && m.to != a);
    cluster
        .wait(x, "X leads and committed W1..W3", |s| {
            s.role == Role::Leader && s.term > term_before_x && s.commit_index.0 >= before.0 + 4
        })
        .await;

    // Everyone hears X again; every pending write gets its answer.
    cluster.only(|_| true);
    let mut outcomes = Vec::new();
    for write in writes {
        outcomes.push(write.await.unwrap());
    }
    let p = p.await.unwrap();
    let leader = cluster.node(x);
    for (i, outcome) in outcomes.iter().enumerate() {
        let key = format!("w{}", i + 1);
        let read = leader
            .query(Consistency::Linearizable, key.clone())
            .await
            .unwrap();
        assert_eq!(read.response.as_deref(), Some("v"), "{key} committed");
        assert!(
            matches!(outcome, Ok(written) if written.term == term_n),
            "{key} committed in {term_n}, but its writer was told {outcome:?}"
        );
    }
    assert!(
        matches!(p, Err(Error::NotLeader { .. })),
        "P was lost: {p:?}"
    );
    let read = leader
        .query(Consistency::Linearizable, "p".into())
        .await
        .unwrap();
    assert_eq!(read.response, None, "P never took effect");
    assert!(cluster.node(n).status().term > Term(0));
}
