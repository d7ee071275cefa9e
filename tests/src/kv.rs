//! A small key-value map as a [`StateMachine`](raft_core::node::StateMachine): the workload of the cluster tests.

use async_trait::async_trait;
use bytes::Bytes;
use raft_core::LogIndex;
use raft_core::node::StateMachine;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

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
}

#[async_trait]
impl StateMachine for KvStore {
    type Command = KvCommand;
    type Response = KvResponse;
    type Query = String;
    type QueryResponse = Option<String>;

    async fn apply(&mut self, _index: LogIndex, command: KvCommand) -> KvResponse {
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

    async fn query(&self, key: String) -> Option<String> {
        self.map.get(&key).cloned()
    }

    async fn snapshot(&self) -> Bytes {
        let mut out = Vec::new();
        for (key, value) in &self.map {
            for field in [key, value] {
                out.extend_from_slice(&(field.len() as u32).to_be_bytes());
                out.extend_from_slice(field.as_bytes());
            }
        }
        Bytes::from(out)
    }

    async fn restore(&mut self, image: Bytes) -> Result<(), String> {
        let mut map = BTreeMap::new();
        let mut rest = image.as_ref();
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
        let image = kv.snapshot().await;
        let mut copy = KvStore::default();
        copy.restore(image.clone()).await.unwrap();
        assert_eq!(copy.map, kv.map);
        assert!(copy.restore(image.slice(..image.len() - 1)).await.is_err());
        assert!(
            copy.restore(Bytes::from_static(&[0, 0, 0, 9, 1]))
                .await
                .is_err()
        );
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
