//! A small key-value map as a [`StateMachine`](raft_core::node::StateMachine): the workload of the cluster tests.

use async_trait::async_trait;
use bytes::Bytes;
use raft_core::node::{SnapshotReader, SnapshotSource, StateMachine};
use raft_core::{LogIndex, NodeId, SnapshotMeta};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// A write to the map.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvCommand {
    /// Sets `key` to `value`.
    Put {
        /// The key.
        key: String,
        /// The new value.
        value: String,
    },
    /// Removes `key`.
    Delete {
        /// The key.
        key: String,
    },
    /// Sets `key` to `new` if it currently holds `expect` (`None`: absent).
    Cas {
        /// The key.
        key: String,
        /// The value the key must hold.
        expect: Option<String>,
        /// The value to store.
        new: String,
    },
}

/// What a write returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvResponse {
    /// A put or delete was applied.
    Done,
    /// A compare-and-swap: whether it swapped, and the value it found.
    Cas {
        /// The swap happened.
        swapped: bool,
        /// The value before the operation.
        current: Option<String>,
    },
}

/// The replicated map.
#[derive(Debug, Default)]
pub struct KvStore {
    map: BTreeMap<String, String>,
    /// Where every command this node applies is recorded, if anywhere.
    recorder: Option<(NodeId, Applied)>,
}

/// Every command any node applied, by log index: the committed log as the state machines saw
/// it (blank entries, which reach no state machine, leave gaps). Shared by the nodes of a
/// simulation through clones. Two nodes applying different commands at one index (a breach of
/// state machine safety, §5.4.3) is recorded as a conflict.
#[derive(Clone, Debug, Default)]
pub struct Applied(Arc<Mutex<AppliedLog>>);

/// What [`Applied`] holds.
#[derive(Debug, Default)]
pub struct AppliedLog {
    /// The first command applied at each index, and the node that applied it.
    pub commands: BTreeMap<LogIndex, (KvCommand, NodeId)>,
    /// Every apply that disagreed with the first at its index.
    pub conflicts: Vec<String>,
}

impl Applied {
    /// What was recorded so far.
    pub fn take(&self) -> AppliedLog {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn record(&self, node: NodeId, index: LogIndex, command: &KvCommand) {
        let mut log = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match log.commands.get(&index) {
            None => {
                log.commands.insert(index, (command.clone(), node));
            }
            Some((first, by)) if first != command => {
                let conflict =
                    format!("{node} applied {command:?} at {index}, {by} applied {first:?}");
                log.conflicts.push(conflict);
            }
            Some(_) => {}
        }
    }
}

#[async_trait]
impl StateMachine for KvStore {
    type Command = KvCommand;
    type Response = KvResponse;
    type Query = String;
    type QueryResponse = Option<String>;

    async fn apply(&mut self, index: LogIndex, command: KvCommand) -> KvResponse {
        if let Some((node, applied)) = &self.recorder {
            applied.record(*node, index, &command);
        }
        self.execute(command)
    }

    async fn query(&self, key: String) -> Option<String> {
        self.map.get(&key).cloned()
    }

    /// A copy of the map, serialized in chunks on the node's snapshot task.
    async fn snapshot(&self) -> Result<Box<dyn SnapshotSource>, String> {
        Ok(Box::new(KvImage {
            pairs: self.map.clone().into_iter(),
        }))
    }

    async fn restore(
        &mut self,
        _meta: &SnapshotMeta,
        image: &mut SnapshotReader<'_>,
    ) -> Result<(), String> {
        let image = image.read_to_end().await?;
        self.restore_from(&image)
    }
}

impl KvStore {
    /// An empty map that records every command it applies, as `node`, in `applied`.
    pub fn recording(node: NodeId, applied: Applied) -> KvStore {
        KvStore {
            map: BTreeMap::new(),
            recorder: Some((node, applied)),
        }
    }

    /// The map's contents.
    pub fn pairs(&self) -> &BTreeMap<String, String> {
        &self.map
    }

    /// Applies `command` to the map (what [`StateMachine::apply`] does, without recording).
    pub fn execute(&mut self, command: KvCommand) -> KvResponse {
        match command {
            KvCommand::Put { key, value } => {
                self.map.insert(key, value);
                KvResponse::Done
            }
            KvCommand::Delete { key } => {
                self.map.remove(&key);
                KvResponse::Done
            }
            KvCommand::Cas { key, expect, new } => {
                let current = self.map.get(&key).cloned();
                let swapped = current == expect;
                if swapped {
                    self.map.insert(key, new);
                }
                KvResponse::Cas { swapped, current }
            }
        }
    }
}

/// The image of a [`KvStore`]: every pair as two length-prefixed strings, in key order.
struct KvImage {
    pairs: std::collections::btree_map::IntoIter<String, String>,
}

#[async_trait]
impl SnapshotSource for KvImage {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, String> {
        let mut out = Vec::new();
        while out.len() < 64 * 1024 {
            let Some((key, value)) = self.pairs.next() else {
                break;
            };
            for field in [key, value] {
                out.extend_from_slice(&(field.len() as u32).to_be_bytes());
                out.extend_from_slice(field.as_bytes());
            }
        }
        Ok((!out.is_empty()).then(|| Bytes::from(out)))
    }
}

impl KvStore {
    fn restore_from(&mut self, image: &[u8]) -> Result<(), String> {
        let mut map = BTreeMap::new();
        let mut rest = image;
        let take = |rest: &mut &[u8]| -> Result<String, String> {
            let (len, tail) = rest.split_at_checked(4).ok_or("truncated length")?;
            let len = u32::from_be_bytes(len.try_into().map_err(|_| "bad length")?) as usize;
            let (text, tail) = tail.split_at_checked(len).ok_or("truncated field")?;
            *rest = tail;
            String::from_utf8(text.to_vec()).map_err(|e| e.to_string())
        };
        while !rest.is_empty() {
            let key = take(&mut rest)?;
            let value = take(&mut rest)?;
            map.insert(key, value);
        }
        self.map = map;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn snapshot_round_trips_and_garbage_is_refused() {
        let mut kv = KvStore::default();
        for (i, key) in ["a", "b", "ü"].iter().enumerate() {
            kv.apply(
                LogIndex(i as u64 + 1),
                KvCommand::Put {
                    key: key.to_string(),
                    value: format!("v{i}"),
                },
            )
            .await;
        }
        let mut source = kv.snapshot().await.unwrap();
        let mut image = Vec::new();
        while let Some(chunk) = source.next_chunk().await.unwrap() {
            image.extend_from_slice(&chunk);
        }
        // Through a snapshot store, as the node restores it.
        let mut store = raft_storage::MemSnapshotStore::new();
        let membership = raft_core::Membership::new([raft_core::NodeId(1)]).unwrap();
        let meta = SnapshotMeta::new(raft_core::EntryId::default(), membership);
        let mut writer = raft_core::node::SnapshotStore::create(&mut store, &meta)
            .await
            .unwrap();
        writer.write(&image).await.unwrap();
        writer.finish().await.unwrap();
        let mut copy = KvStore::default();
        let mut reader = SnapshotReader::new(&mut store, meta.clone(), 5);
        copy.restore(&meta, &mut reader).await.unwrap();
        assert_eq!(copy.map, kv.map);
        assert!(copy.restore_from(&image[..image.len() - 1]).is_err());
        assert!(copy.restore_from(&[0, 0, 0, 9, 1]).is_err());
    }

    #[tokio::test]
    async fn cas_swaps_only_from_the_expected_value() {
        let mut kv = KvStore::default();
        let cas = |expect: Option<&str>, new: &str| KvCommand::Cas {
            key: "k".into(),
            expect: expect.map(str::to_string),
            new: new.into(),
        };
        assert_eq!(
            kv.apply(LogIndex(1), cas(None, "a")).await,
            KvResponse::Cas {
                swapped: true,
                current: None
            }
        );
        assert_eq!(
            kv.apply(LogIndex(2), cas(None, "b")).await,
            KvResponse::Cas {
                swapped: false,
                current: Some("a".into())
            }
        );
        assert_eq!(kv.query("k".into()).await, Some("a".into()));
    }
}
