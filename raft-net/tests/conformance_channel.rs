//! The transport conformance suite run against the in-process channel transport.
//!
//! A cluster is one [`ChannelNetwork`]: starting a node registers its inbox, stopping it
//! unregisters it (as when its process dies), and a restart registers the new inbox under the
//! same id. Each send goes straight into the addressee's bounded queue, so the order on a link
//! is the order of the sends; a full queue drops the message without counting it, so the
//! counting parts of the back-pressure check are skipped.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use raft_core::NodeId;
use raft_core::node::Inbox;
use raft_net::conformance::{self, Check, Cluster};
use raft_net::{ChannelNetwork, ChannelTransport};
use std::convert::Infallible;

struct Channels {
    network: ChannelNetwork,
}

impl Cluster for Channels {
    type Transport = ChannelTransport;
    type Error = Infallible;

    async fn start(&mut self, id: NodeId, inbox: Inbox) -> Result<ChannelTransport, Infallible> {
        self.network.register(id, inbox);
        Ok(self.network.transport(id))
    }

    async fn stop(&mut self, id: NodeId) {
        self.network.unregister(id);
    }

    fn fifo_per_link(&self) -> bool {
        true
    }
}

fn channels() -> Channels {
    Channels {
        network: ChannelNetwork::new(),
    }
}

#[tokio::test]
async fn channel_transport_passes_the_whole_suite() {
    conformance::run(channels).await;
}

/// A link cut with [`ChannelNetwork::cut`] loses what is sent over it, and the suite says
/// which messages did not arrive: the check's failure is a report, not a hang.
#[tokio::test]
async fn a_cut_link_fails_delivery_and_names_the_link() {
    let cluster = channels();
    cluster.network.cut(NodeId(1), NodeId(3));
    let failure = conformance::run_check(Check::Delivery, cluster)
        .await
        .expect_err("a cut link loses messages");
    assert_eq!(failure.check, Check::Delivery);
    assert!(
        failure.reason.contains("from n1 to n3") && !failure.reason.contains("from n1 to n2"),
        "{failure}"
    );
}
