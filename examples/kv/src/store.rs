//! The replicated state: a map of strings, the table of requests already applied (so that a
//! retried write takes effect once), and where each node listens.
//!
//! Everything here is deterministic: every replica that applies the same commands in the same
//! order holds the same map, the same request table and the same directory, and writes the same
//! snapshot image.

use async_trait::async_trait;
use bytes::Bytes;
use raft_core::node::{SnapshotReader, SnapshotSource, StateMachine};
use raft_core::{LogIndex, NodeId, SnapshotMeta};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

/// How long a request id is remembered, in log entries: a retry whose original took effect
/// more than this many entries earlier takes effect again. At 40,000 writes per second this is
/// about 25 seconds of writes, at 4,000 more than four minutes. The table holds at most this
/// many ids, each costing its length (at most [`MAX_REQUEST_ID_BYTES`]) twice plus about 100
/// bytes: under 400 MB at the limit, far less with short ids.
pub const REQUEST_WINDOW_ENTRIES: u64 = 1_000_000;

/// The longest request id accepted, in bytes.
pub const MAX_REQUEST_ID_BYTES: usize = 128;

/// A write to the replicated state.
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
    /// `command`, taking effect at most once per `request_id` within
    /// [`REQUEST_WINDOW_ENTRIES`]: once a command with this id has taken effect (a put, a
    /// delete, a compare-and-swap that swapped), a later one with the same content answers
    /// [`KvResponse::Repeated`] and changes nothing. A swap that did not swap had no effect
    /// and is not remembered: a retry of it is a new attempt, within the same client call.
    /// `command` must not be a `Once` or a `Register` (such a command changes nothing).
    Once {
        /// The client's idempotency key.
        request_id: String,
        /// The write.
        command: Box<KvCommand>,
    },
    /// Records where node `id` listens (its Raft and HTTP addresses), so that every node can
    /// send clients to the leader.
    Register {
        /// The node.
        id: NodeId,
        /// Its Raft (TCP transport) address.
        raft: String,
        /// Its HTTP address.
        http: String,
    },
}

/// What a write returns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvResponse {
    /// A put, delete or registration was applied.
    Done,
    /// A compare-and-swap: whether it swapped, and the value it found.
    Cas {
        /// The swap happened.
        swapped: bool,
        /// The value before the operation.
        current: Option<String>,
    },
    /// A command with this request id and this content took effect before, at `index` (a
    /// compare-and-swap: it swapped); nothing changed now.
    Repeated {
        /// Where the first command with this id took effect.
        index: LogIndex,
    },
    /// The request id took effect before, at `index`, for a different command: nothing
    /// changed now.
    IdReused {
        /// Where the first command with this id took effect.
        index: LogIndex,
    },
}

/// Where a node listens, as it registered itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAddresses {
    /// Its Raft (TCP transport) address.
    pub raft: String,
    /// Its HTTP address.
    pub http: String,
}

/// Where each node listens, as the applied commands say; shared with the HTTP server, which
/// reads it to redirect clients to the leader.
#[derive(Clone, Debug, Default)]
pub struct Directory(Arc<RwLock<BTreeMap<NodeId, NodeAddresses>>>);

impl Directory {
    /// Node `id`'s addresses, if it registered.
    pub fn get(&self, id: NodeId) -> Option<NodeAddresses> {
        self.read().get(&id).cloned()
    }

    /// Every registered node.
    pub fn all(&self) -> BTreeMap<NodeId, NodeAddresses> {
        self.read().clone()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<NodeId, NodeAddresses>> {
        self.0.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<NodeId, NodeAddresses>> {
        self.0.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// A request id the table remembers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Remembered {
    index: LogIndex,
    /// A 64-bit fingerprint of the command's encoding: a retry must carry the same command.
    fingerprint: u64,
}

/// The request ids applied within the window, and the order in which they expire.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Requests {
    by_id: BTreeMap<String, Remembered>,
    by_index: BTreeMap<LogIndex, String>,
}

impl Requests {
    /// Forgets the ids applied at or before `index - REQUEST_WINDOW_ENTRIES`.
    fn expire(&mut self, index: LogIndex) {
        let Some(horizon) = index.0.checked_sub(REQUEST_WINDOW_ENTRIES) else {
            return;
        };
        while let Some(entry) = self.by_index.first_entry() {
            if entry.key().0 > horizon {
                break;
            }
            let id = entry.remove();
            self.by_id.remove(&id);
        }
    }
}

/// Called with every command a node applies, and its index (for tests that audit what every
/// replica applied).
pub type ApplyHook = Arc<dyn Fn(LogIndex, &KvCommand) + Send + Sync>;

/// The replicated key-value state machine.
#[derive(Default)]
pub struct KvStore {
    map: BTreeMap<String, String>,
    requests: Requests,
    directory: Directory,
    hook: Option<ApplyHook>,
}

impl std::fmt::Debug for KvStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvStore")
            .field("keys", &self.map.len())
            .field("requests", &self.requests.by_id.len())
            .field("directory", &self.directory)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl StateMachine for KvStore {
    type Command = KvCommand;
    type Response = KvResponse;
    type Query = String;
    type QueryResponse = Option<String>;

    async fn apply(&mut self, index: LogIndex, command: KvCommand) -> KvResponse {
        if let Some(hook) = &self.hook {
            hook(index, &command);
        }
        self.execute(index, command)
    }

    async fn query(&self, key: String) -> Option<String> {
        self.map.get(&key).cloned()
    }

    /// A copy of the state, serialized in chunks on the node's snapshot task.
    async fn snapshot(&self) -> Result<Box<dyn SnapshotSource>, String> {
        let tail = Tail {
            requests: self.requests.clone(),
            directory: self.directory.all(),
        };
        let tail = postcard::to_stdvec(&tail).map_err(|e| e.to_string())?;
        Ok(Box::new(KvImage {
            header: true,
            pairs: self.map.clone().into_iter(),
            tail: Some(tail),
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
    /// An empty store whose directory is shared with `directory` (the HTTP server's view).
    pub fn new(directory: Directory) -> KvStore {
        KvStore {
            directory,
            ..KvStore::default()
        }
    }

    /// An empty store that calls `hook` with every command before applying it.
    pub fn with_hook(hook: ApplyHook) -> KvStore {
        KvStore {
            hook: Some(hook),
            ..KvStore::default()
        }
    }

    /// The map's contents.
    pub fn pairs(&self) -> &BTreeMap<String, String> {
        &self.map
    }

    /// The directory of node addresses this store keeps.
    pub fn directory(&self) -> &Directory {
        &self.directory
    }

    /// Applies `command` at `index` (what [`StateMachine::apply`] does, without the hook).
    pub fn execute(&mut self, index: LogIndex, command: KvCommand) -> KvResponse {
        self.requests.expire(index);
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
            KvCommand::Once {
                request_id,
                command,
            } => {
                if matches!(
                    *command,
                    KvCommand::Once { .. } | KvCommand::Register { .. }
                ) {
                    return KvResponse::Done;
                }
                let fingerprint = fingerprint(&command);
                if let Some(first) = self.requests.by_id.get(&request_id) {
                    return if first.fingerprint == fingerprint {
                        KvResponse::Repeated { index: first.index }
                    } else {
                        KvResponse::IdReused { index: first.index }
                    };
                }
                let response = self.execute(index, *command);
                let took_effect = !matches!(response, KvResponse::Cas { swapped: false, .. });
                if took_effect {
                    let remembered = Remembered { index, fingerprint };
                    self.requests.by_index.insert(index, request_id.clone());
                    self.requests.by_id.insert(request_id, remembered);
                }
                response
            }
            KvCommand::Register { id, raft, http } => {
                self.directory
                    .write()
                    .insert(id, NodeAddresses { raft, http });
                KvResponse::Done
            }
        }
    }
}

/// A command's fingerprint: two CRC-32Cs of its encoding, from different seeds (64 bits, so
/// that two different commands under one request id match by chance with odds of 2^-64; a
/// CRC is no defence against a client that crafts a collision for its own request id, and
/// needs none). The same on every replica and every build, unlike std's hashers.
fn fingerprint(command: &KvCommand) -> u64 {
    let encoded = postcard::to_stdvec(command).unwrap_or_default();
    let high = crc32c::crc32c(&encoded);
    let low = crc32c::crc32c_append(0x9E37_79B9, &encoded);
    (u64::from(high) << 32) | u64::from(low)
}

/// The first bytes of an image: its format.
const IMAGE_MAGIC: &[u8; 4] = b"RKV1";

/// Record tags in an image.
const PAIR: u8 = 0;
const TAIL: u8 = 1;

/// The part of the state that is not the map, encoded at the end of an image.
#[derive(Serialize, Deserialize)]
struct Tail {
    requests: Requests,
    directory: BTreeMap<NodeId, NodeAddresses>,
}

/// The image of a [`KvStore`]: the magic, then each pair as a tag and two length-prefixed
/// strings, in key order, then the request table and directory as one length-prefixed record.
struct KvImage {
    header: bool,
    pairs: std::collections::btree_map::IntoIter<String, String>,
    tail: Option<Vec<u8>>,
}

fn put_field(out: &mut Vec<u8>, field: &[u8]) -> Result<(), String> {
    let len = u32::try_from(field.len())
        .map_err(|_| format!("a field of {} bytes is too long for an image", field.len()))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(field);
    Ok(())
}

#[async_trait]
impl SnapshotSource for KvImage {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, String> {
        let mut out = Vec::new();
        if std::mem::take(&mut self.header) {
            out.extend_from_slice(IMAGE_MAGIC);
        }
        while out.len() < 64 * 1024 {
            match self.pairs.next() {
                Some((key, value)) => {
                    out.push(PAIR);
                    put_field(&mut out, key.as_bytes())?;
                    put_field(&mut out, value.as_bytes())?;
                }
                None => {
                    if let Some(tail) = self.tail.take() {
                        out.push(TAIL);
                        put_field(&mut out, &tail)?;
                    }
                    break;
                }
            }
        }
        Ok((!out.is_empty()).then(|| Bytes::from(out)))
    }
}

impl KvStore {
    fn restore_from(&mut self, image: &[u8]) -> Result<(), String> {
        let mut rest = image
            .strip_prefix(IMAGE_MAGIC)
            .ok_or("not a raft-kv snapshot image")?;
        let take = |rest: &mut &[u8]| -> Result<Vec<u8>, String> {
            let (len, tail) = rest.split_at_checked(4).ok_or("truncated length")?;
            let len = u32::from_be_bytes(len.try_into().map_err(|_| "bad length")?) as usize;
            let (field, tail) = tail.split_at_checked(len).ok_or("truncated field")?;
            *rest = tail;
            Ok(field.to_vec())
        };
        let text = |bytes: Vec<u8>| String::from_utf8(bytes).map_err(|e| e.to_string());
        let mut map = BTreeMap::new();
        let mut tail = None;
        while let Some((&tag, after)) = rest.split_first() {
            rest = after;
            match tag {
                PAIR if tail.is_none() => {
                    let key = text(take(&mut rest)?)?;
                    let value = text(take(&mut rest)?)?;
                    map.insert(key, value);
                }
                TAIL if tail.is_none() => {
                    let bytes = take(&mut rest)?;
                    let decoded: Tail = postcard::from_bytes(&bytes).map_err(|e| e.to_string())?;
                    tail = Some(decoded);
                }
                _ => return Err(format!("unexpected record tag {tag}")),
            }
        }
        let tail = tail.ok_or("image lacks its request table")?;
        self.map = map;
        self.requests = tail.requests;
        *self.directory.write() = tail.directory;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, value: &str) -> KvCommand {
        KvCommand::Put {
            key: key.into(),
            value: value.into(),
        }
    }

    fn once(id: &str, command: KvCommand) -> KvCommand {
        KvCommand::Once {
            request_id: id.into(),
            command: Box::new(command),
        }
    }

    async fn image_of(kv: &KvStore) -> Vec<u8> {
        let mut source = kv.snapshot().await.unwrap();
        let mut image = Vec::new();
        while let Some(chunk) = source.next_chunk().await.unwrap() {
            image.extend_from_slice(&chunk);
        }
        image
    }

    #[tokio::test]
    async fn snapshot_round_trips_and_garbage_is_refused() {
        let mut kv = KvStore::default();
        for (i, key) in ["a", "b", "ü"].iter().enumerate() {
            kv.apply(LogIndex(i as u64 + 1), put(key, &format!("v{i}")))
                .await;
        }
        kv.apply(LogIndex(4), once("r1", put("c", "x"))).await;
        let register = KvCommand::Register {
            id: NodeId(2),
            raft: "127.0.0.1:1".into(),
            http: "127.0.0.1:2".into(),
        };
        kv.apply(LogIndex(5), register).await;
        let image = image_of(&kv).await;
        // Through a snapshot store, as the node restores it.
        let mut store = raft_storage::MemSnapshotStore::new();
        let membership = raft_core::Membership::new([NodeId(1)]).unwrap();
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
        assert_eq!(copy.requests, kv.requests);
        assert_eq!(copy.directory.all(), kv.directory.all());
        // The copy remembers the request: a retry repeats, not re-applies.
        let retried = copy.execute(LogIndex(6), once("r1", put("c", "x")));
        assert_eq!(retried, KvResponse::Repeated { index: LogIndex(4) });
        for broken in [
            &image[..image.len() - 1],
            &image[4..],
            &[b'R', b'K', b'V', b'1', 0, 0, 0, 0, 9, 1][..],
            &[b'R', b'K', b'V', b'1', 7][..],
            IMAGE_MAGIC,
        ] {
            assert!(copy.restore_from(broken).is_err(), "accepted {broken:?}");
        }
    }

    #[test]
    fn cas_swaps_only_from_the_expected_value() {
        let mut kv = KvStore::default();
        let cas = |expect: Option<&str>, new: &str| KvCommand::Cas {
            key: "k".into(),
            expect: expect.map(str::to_string),
            new: new.into(),
        };
        assert_eq!(
            kv.execute(LogIndex(1), cas(None, "a")),
            KvResponse::Cas {
                swapped: true,
                current: None
            }
        );
        assert_eq!(
            kv.execute(LogIndex(2), cas(None, "b")),
            KvResponse::Cas {
                swapped: false,
                current: Some("a".into())
            }
        );
        assert_eq!(kv.map.get("k"), Some(&"a".to_string()));
    }

    #[test]
    fn a_request_id_takes_effect_once_within_its_window() {
        let mut kv = KvStore::default();
        let cas = KvCommand::Cas {
            key: "k".into(),
            expect: None,
            new: "1".into(),
        };
        let first = kv.execute(LogIndex(1), once("a", cas.clone()));
        let swapped = KvResponse::Cas {
            swapped: true,
            current: None,
        };
        assert_eq!(first, swapped);
        kv.execute(LogIndex(2), put("k", "2"));
        // The retry answers where the first took effect and does not swap again.
        let retry = kv.execute(LogIndex(3), once("a", cas.clone()));
        assert_eq!(retry, KvResponse::Repeated { index: LogIndex(1) });
        assert_eq!(kv.map["k"], "2");
        // A swap that did not swap had no effect: not remembered, its retry is a new attempt.
        let failed = kv.execute(LogIndex(4), once("b", cas.clone()));
        assert!(matches!(failed, KvResponse::Cas { swapped: false, .. }));
        kv.execute(LogIndex(5), KvCommand::Delete { key: "k".into() });
        assert_eq!(kv.execute(LogIndex(6), once("b", cas.clone())), swapped);
        assert_eq!(kv.map["k"], "1");
        // Nested commands change nothing.
        let nested = once("c", once("d", put("k", "n")));
        assert_eq!(kv.execute(LogIndex(7), nested), KvResponse::Done);
        assert_eq!(kv.map["k"], "1");
        // The same id on another command changes nothing.
        let reused = kv.execute(LogIndex(8), once("a", put("k", "3")));
        assert_eq!(reused, KvResponse::IdReused { index: LogIndex(1) });
        assert_eq!(kv.map["k"], "1");
        // Past the window the id is forgotten, and the table shrinks.
        let later = LogIndex(1 + REQUEST_WINDOW_ENTRIES);
        let again = kv.execute(later, once("a", put("k", "4")));
        assert_eq!(again, KvResponse::Done);
        assert_eq!(kv.map["k"], "4");
        assert_eq!(kv.requests.by_id.len(), 2, "b (index 6) and a (again)");
        assert_eq!(kv.requests.by_index.len(), 2);
    }

    #[test]
    fn registrations_fill_the_shared_directory() {
        let directory = Directory::default();
        let mut kv = KvStore::new(directory.clone());
        let register = |http: &str| KvCommand::Register {
            id: NodeId(3),
            raft: "r".into(),
            http: http.into(),
        };
        kv.execute(LogIndex(1), register("h1"));
        kv.execute(LogIndex(2), register("h2"));
        assert_eq!(directory.get(NodeId(3)).map(|a| a.http), Some("h2".into()));
        assert_eq!(directory.get(NodeId(4)), None);
    }
}
