//! A transport that replaces TCP on both sides ([`Simulation::own_transport`]): a small one of
//! the tests' own (length-prefixed postcard frames over turmoil's TCP, one connection per peer)
//! passes every check under the default nemesis, and one whose receiving side changes commands
//! is caught.

mod support;

use raft_core::node::{Inbox, PeerConnection, Transport};
use raft_core::{Membership, Message, NodeId};
use raft_sim::{Simulation, TransportStart};
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use support::{
    RegisterMachine, RegisterModel, carries_commands, corrupt_one_command, run_seeds, workload,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// The largest frame read: anything longer drops the connection.
const MAX_FRAME: usize = 1 << 20;

/// What the receiving side does with a message before the node gets it.
type Receive = Rc<dyn Fn(&mut Message)>;

/// Sends each message as one frame (its length, then postcard) on a connection per peer,
/// dialled on demand; a failed dial or write drops the messages of the moment (Raft resends).
/// Receives on a listener of its own and hands every frame to the node's inbox.
struct Framed {
    peers: BTreeMap<NodeId, mpsc::UnboundedSender<Message>>,
}

impl Framed {
    async fn start(start: TransportStart, receive: Receive) -> Result<Framed, String> {
        let listener = turmoil::net::TcpListener::bind(start.listen.as_str())
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", start.listen))?;
        tokio::task::spawn_local(accept(listener, start.inbox, receive));
        let mut peers = BTreeMap::new();
        for (peer, address) in start.peers {
            let (sender, receiver) = mpsc::unbounded_channel();
            tokio::task::spawn_local(send_to(address, receiver));
            peers.insert(peer, sender);
        }
        Ok(Framed { peers })
    }
}

impl Transport for Framed {
    fn send(&self, message: Message) {
        if let Some(peer) = self.peers.get(&message.to) {
            let _ = peer.send(message);
        }
    }

    fn membership_changed(&self, _: &Membership) {}

    fn peer_connections(&self) -> Vec<(NodeId, PeerConnection)> {
        Vec::new()
    }
}

async fn accept(listener: turmoil::net::TcpListener, inbox: Inbox, receive: Receive) {
    while let Ok((stream, _)) = listener.accept().await {
        let (inbox, receive) = (inbox.clone(), Rc::clone(&receive));
        tokio::task::spawn_local(async move {
            let mut stream = stream;
            loop {
                let Ok(length) = stream.read_u32().await else {
                    return;
                };
                let length = length as usize;
                if length > MAX_FRAME {
                    return;
                }
                let mut frame = vec![0; length];
                if stream.read_exact(&mut frame).await.is_err() {
                    return;
                }
                let Ok(mut message) = postcard::from_bytes::<Message>(&frame) else {
                    return;
                };
                receive(&mut message);
                inbox.deliver(message);
            }
        });
    }
}

async fn send_to(address: String, mut messages: mpsc::UnboundedReceiver<Message>) {
    let mut connection: Option<turmoil::net::TcpStream> = None;
    while let Some(message) = messages.recv().await {
        if connection.is_none() {
            let dial = turmoil::net::TcpStream::connect(address.as_str());
            connection = tokio::time::timeout(Duration::from_millis(50), dial)
                .await
                .ok()
                .and_then(Result::ok);
        }
        let (Some(stream), Ok(frame)) = (connection.as_mut(), postcard::to_allocvec(&message))
        else {
            continue;
        };
        let Ok(length) = u32::try_from(frame.len()) else {
            continue;
        };
        let written = async {
            stream.write_u32(length).await?;
            stream.write_all(&frame).await
        };
        let written = tokio::time::timeout(Duration::from_millis(50), written).await;
        if !matches!(written, Ok(Ok(()))) {
            connection = None;
        }
    }
}

fn simulation() -> Simulation<RegisterMachine, RegisterModel> {
    workload(Simulation::new(
        |_| RegisterMachine::default(),
        RegisterModel,
    ))
}

#[test]
fn a_transport_of_ones_own_passes_under_the_default_nemesis() {
    let delivered = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&delivered);
    let simulation = simulation().own_transport(move |start| {
        let counter = Arc::clone(&counter);
        let count: Receive = Rc::new(move |_| {
            counter.fetch_add(1, Ordering::Relaxed);
        });
        Framed::start(start, count)
    });
    simulation.check();
    assert!(
        delivered.load(Ordering::Relaxed) > 1_000,
        "the nodes' messages went through the transport's own listener"
    );
    // A seed replays the same run through it.
    let (first, second) = (simulation.run(7), simulation.run(7));
    assert_eq!(first.digest, second.digest);
    assert_eq!(first.faults, second.faults);
}

#[test]
fn a_receiving_side_that_changes_commands_is_caught() {
    let corrupted = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&corrupted);
    let simulation = simulation().own_transport(move |start| {
        let counter = Arc::clone(&counter);
        let rng = RefCell::new(ChaCha8Rng::seed_from_u64(start.node.seed));
        let corrupt: Receive = Rc::new(move |message| {
            if carries_commands(message)
                && rng.borrow_mut().random_ratio(1, 20)
                && corrupt_one_command(message)
            {
                counter.fetch_add(1, Ordering::Relaxed);
            }
        });
        Framed::start(start, corrupt)
    });
    let reports = run_seeds(&simulation);
    let corrupted = corrupted.load(Ordering::Relaxed);
    assert!(corrupted > 0, "the receiving side corrupted nothing");
    let failed: Vec<u64> = reports
        .iter()
        .filter(|r| !r.is_ok())
        .map(|r| r.seed)
        .collect();
    assert!(
        !failed.is_empty(),
        "{corrupted} corrupted commands went unnoticed in every seed"
    );
    eprintln!("{corrupted} commands corrupted on receipt; caught by seeds {failed:?}");
}

#[test]
fn a_transport_that_cannot_start_is_reported() {
    let simulation = simulation()
        .duration(Duration::from_millis(500))
        .own_transport(|start| async move {
            let refused: Result<Framed, String> =
                Err(format!("n{} has no network card", start.node.node.0));
            refused
        });
    let report = simulation.run(0);
    assert!(!report.is_ok());
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("its transport could not start: n1 has no network card")),
        "{report}"
    );
}
