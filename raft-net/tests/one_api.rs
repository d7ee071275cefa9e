//! The TCP transport is one API over both network stacks: the same generic function starts it
//! on the operating system's TCP and on turmoil's simulated TCP, and both deliver.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use raft_core::node::Transport;
use raft_core::{LogIndex, Message, MessageBody, NodeId, Term};
use raft_net::{Network, Spawner, TcpConfig, TcpError, TcpTransport};
use std::time::Duration;
use tokio::sync::mpsc;

/// Starts node `id` on any network; what a cluster harness written once would call.
async fn start_transport<N: Network>(
    network: N,
    id: u64,
    listen: &str,
    peers: &[(u64, String)],
    spawner: Spawner,
) -> Result<(TcpTransport<N>, mpsc::UnboundedReceiver<Message>), TcpError> {
    let peers = peers.iter().map(|(id, addr)| (NodeId(*id), addr.clone()));
    let config = TcpConfig::new(NodeId(id), 42, listen, peers);
    let (tx, rx) = mpsc::unbounded_channel();
    let transport = TcpTransport::start(network, config, tx, spawner).await?;
    Ok((transport, rx))
}

fn heartbeat(from: u64, to: u64) -> Message {
    Message {
        from: NodeId(from),
        to: NodeId(to),
        term: Term(1),
        body: MessageBody::Heartbeat {
            leader_commit: LogIndex(0),
            round: 1,
            freshness: None,
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_generic_starter_runs_on_tokio_tcp() {
    use raft_net::TokioNet;
    let (node2, mut inbox2) = start_transport(TokioNet, 2, "127.0.0.1:0", &[], Spawner::tokio())
        .await
        .unwrap();
    let peers = [(2, node2.local_addr().to_string())];
    let (node1, _inbox1) = start_transport(TokioNet, 1, "127.0.0.1:0", &peers, Spawner::tokio())
        .await
        .unwrap();
    node2
        .add_peer(NodeId(1), node1.local_addr().to_string())
        .unwrap();
    node1.send(heartbeat(1, 2));
    let message = tokio::time::timeout(Duration::from_secs(10), inbox2.recv())
        .await
        .unwrap();
    assert_eq!(message, Some(heartbeat(1, 2)));
}

#[cfg(feature = "turmoil")]
#[test]
fn the_generic_starter_runs_on_turmoil_tcp() -> turmoil::Result {
    use raft_net::TurmoilNet;
    let mut sim = turmoil::Builder::new().rng_seed(1).build();
    sim.client("n2", async {
        let peers = [(1, "n1:7000".to_string())];
        let (_node2, mut inbox2) =
            start_transport(TurmoilNet, 2, "0.0.0.0:7000", &peers, Spawner::local()).await?;
        let message = tokio::time::timeout(Duration::from_secs(5), inbox2.recv()).await?;
        assert_eq!(message, Some(heartbeat(1, 2)));
        Ok(())
    });
    sim.client("n1", async {
        let peers = [(2, "n2:7000".to_string())];
        let (node1, _inbox1) =
            start_transport(TurmoilNet, 1, "0.0.0.0:7000", &peers, Spawner::local()).await?;
        node1.send(heartbeat(1, 2));
        // Give the message time to travel (simulated time; free in wall-clock terms).
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(node1.stats().peers[&NodeId(2)].sent, 1);
        Ok(())
    });
    sim.run()
}
