//! A node measures its timeouts on the clock its configuration gives it
//! (`NodeConfig::clock`): an adjustable clock's rate changes how soon, on tokio's clock, its
//! deadlines come, even while the node already sleeps until one.

use raft_core::node::{Error, Node, NodeClock, NodeConfig, NodeHandle, inbox};
use raft_core::{NodeId, Role};
use raft_storage::{MemLogStore, MemSnapshotStore};
use raft_tests::kv::KvStore;
use std::time::Duration;

/// A single-voter cluster on `clock`: it elects itself once its election timeout (150 to
/// 300 ms by default, on its own clock) runs out.
async fn single_node(clock: NodeClock) -> Result<NodeHandle<KvStore>, Error> {
    let network = raft_net::ChannelNetwork::new();
    let (own_inbox, inbound) = inbox(64);
    network.register(NodeId(1), own_inbox);
    let mut config = NodeConfig::new(NodeId(1), [NodeId(1)]);
    config.seed = 7;
    config.clock = clock;
    let (log, snapshots) = (MemLogStore::new(), MemSnapshotStore::new());
    Node::start(
        config,
        KvStore::default(),
        log,
        snapshots,
        network.transport(NodeId(1)),
        inbound,
    )
    .await
}

/// How long, on tokio's clock, `node` takes to lead, up to `limit`.
async fn time_to_lead(node: &NodeHandle<KvStore>, limit: Duration) -> Option<Duration> {
    let start = tokio::time::Instant::now();
    while start.elapsed() < limit {
        if node.status().role == Role::Leader {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    None
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_fast_clock_brings_the_election_timeout_sooner() -> Result<(), Error> {
    let real = single_node(NodeClock::real()).await?;
    let took = time_to_lead(&real, Duration::from_secs(1)).await;
    assert!(
        took.is_some_and(|t| t >= Duration::from_millis(150)),
        "tokio's clock: {took:?}"
    );
    let clock = NodeClock::adjustable();
    clock.set_rate(10.0);
    let fast = single_node(clock).await?;
    let took = time_to_lead(&fast, Duration::from_secs(1)).await;
    assert!(
        took.is_some_and(|t| t <= Duration::from_millis(32)),
        "ten times as fast: {took:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_rate_change_wakes_a_node_sleeping_until_its_deadline() -> Result<(), Error> {
    let clock = NodeClock::adjustable();
    let node = single_node(clock.clone()).await?;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_ne!(
        node.status().role,
        Role::Leader,
        "its timeout is 150 ms at least"
    );
    // At 100 times tokio's rate, the rest of its timeout (under 280 ms of its own) takes
    // under 3 ms; without waking it would sleep until its old deadline, 130 ms or more away.
    clock.set_rate(100.0);
    let took = time_to_lead(&node, Duration::from_secs(1)).await;
    assert!(
        took.is_some_and(|t| t <= Duration::from_millis(5)),
        "after the change: {took:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_node_does_not_start_on_a_clock_another_running_node_uses() -> Result<(), Error> {
    let clock = NodeClock::adjustable();
    let first = single_node(clock.clone()).await?;
    match single_node(clock.clone()).await {
        Err(Error::InvalidConfig(why)) => assert!(why.contains("clock"), "{why}"),
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("a second node started on the first one's clock"),
    }
    // Once the first stopped, the clock is free.
    first.shutdown().await;
    single_node(clock).await?;
    Ok(())
}
