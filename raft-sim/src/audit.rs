//! The store audit at the end of a run. Once the faults have stopped and the cluster has
//! settled, every host is crashed (so that whatever its stores had not made durable is lost, as
//! in a power loss) and started again to read its stores back instead of running its node. Every
//! write acknowledged at `Ack::Quorum` or `Ack::All` must then be on a majority of the final
//! voters' stores: an entry is committed once a majority stores it (§5.3), and a committed entry
//! survives any minority of failures; after a change of membership, the majority of the new
//! voters that stored the change stored every entry before it (Log Matching, §5.3).

use crate::world::{Acknowledged, Capped};
use raft_core::node::{LogStore, SnapshotReader, SnapshotStore, StateMachine};
use raft_core::{Entry, EntryId, LogIndex, NodeId, Payload};
use std::collections::BTreeMap;

/// How long, in simulated milliseconds, the hosts get to read their stores back.
pub(crate) const READ_BACK_MS: u64 = 2_000;

/// The size of the chunks a snapshot's image is read back in.
const IMAGE_CHUNK_BYTES: usize = 4096;

/// What a node's stores held once the run was over.
#[derive(Clone, Debug, Default)]
pub(crate) struct StoreImage {
    /// The entry before the first one the log holds (the last one purged).
    pub(crate) log_start: EntryId,
    /// The log's entries, by index.
    pub(crate) entries: BTreeMap<LogIndex, Entry>,
    /// The last entry the latest snapshot covers, when its image restored into a fresh state
    /// machine.
    pub(crate) snapshot: Option<EntryId>,
    /// Why the latest snapshot did not count: its image could not be read or restored.
    pub(crate) snapshot_error: Option<String>,
}

impl StoreImage {
    /// Whether this store holds `write`: its log has the entry at the write's index, of the
    /// write's term, carrying the write's command byte for byte; or the latest snapshot covers
    /// the index, and its last entry is of a term no earlier than the write's (of the write's
    /// own term when it is the write's entry).
    fn holds(&self, write: &Acknowledged) -> bool {
        let in_log = self.entries.get(&write.index).is_some_and(|entry| {
            entry.term == write.term
                && matches!(&entry.payload, Payload::Command(data)
                    if data.as_ref() == write.encoded.as_slice())
        });
        let in_snapshot = self.snapshot.is_some_and(|last| {
            last.index >= write.index
                && last.term >= write.term
                && (last.index != write.index || last.term == write.term)
        });
        in_log || in_snapshot
    }

    /// What the store holds at `index`, for a report.
    fn at(&self, index: LogIndex) -> String {
        match self.entries.get(&index) {
            Some(entry) => match &entry.payload {
                Payload::Command(_) => format!("another command of term {}", entry.term.0),
                Payload::Blank => format!("a blank entry of term {}", entry.term.0),
                Payload::Membership(_) => format!("a membership of term {}", entry.term.0),
                _ => format!("another entry of term {}", entry.term.0),
            },
            None => format!("nothing ({})", self.describe()),
        }
    }

    /// The extent of the store, for a report.
    fn describe(&self) -> String {
        let log = match (self.entries.keys().next(), self.entries.keys().next_back()) {
            (Some(first), Some(last)) => format!("log {}..={}", first.0, last.0),
            _ => format!("log empty after {}", self.log_start.index.0),
        };
        match self.snapshot {
            Some(last) => format!(
                "{log}, snapshot up to {} (term {})",
                last.index.0, last.term.0
            ),
            None => format!("{log}, no snapshot"),
        }
    }
}

/// Reads a node's stores back as a restart would find them: the log as `recover` returns it,
/// and the latest snapshot, whose image must restore into `fresh` (a new state machine from
/// the user's factory) for the snapshot to count.
pub(crate) async fn read_back<SM, LS, SS>(
    mut log: LS,
    mut snapshots: SS,
    mut fresh: SM,
) -> Result<StoreImage, String>
where
    SM: StateMachine,
    LS: LogStore,
    SS: SnapshotStore,
{
    let recovered = log
        .recover()
        .await
        .map_err(|error| format!("recovering its log: {error}"))?;
    let mut image = StoreImage {
        log_start: recovered.log_start,
        entries: recovered
            .entries
            .into_iter()
            .map(|entry| (entry.index, entry))
            .collect(),
        snapshot: None,
        snapshot_error: None,
    };
    let latest = snapshots
        .latest()
        .await
        .map_err(|error| format!("finding its latest snapshot: {error}"))?;
    if let Some(meta) = latest {
        let last = meta.last;
        let mut reader = SnapshotReader::new(&mut snapshots, meta.clone(), IMAGE_CHUNK_BYTES);
        match fresh.restore(&meta, &mut reader).await {
            Ok(()) => image.snapshot = Some(last),
            Err(error) => {
                image.snapshot_error = Some(format!(
                    "its latest snapshot (up to index {}) does not restore into a fresh state \
                     machine: {error}",
                    last.index.0
                ));
            }
        }
    }
    Ok(image)
}

/// Checks that every write in `acknowledged` is on a majority of `voters`' stores (`images`,
/// as [`read_back`] found them). A store that could not be read back, or is missing, holds
/// nothing; a snapshot that does not restore covers nothing. Returns the problems found.
pub(crate) fn audit(
    acknowledged: &[Acknowledged],
    images: &BTreeMap<NodeId, Result<StoreImage, String>>,
    voters: &[NodeId],
) -> Vec<String> {
    let mut problems = Vec::new();
    let mut readable: BTreeMap<NodeId, &StoreImage> = BTreeMap::new();
    for &id in voters {
        match images.get(&id) {
            Some(Ok(image)) => {
                if let Some(why) = &image.snapshot_error {
                    problems.push(format!("store audit: n{}: {why}", id.0));
                }
                readable.insert(id, image);
            }
            Some(Err(why)) => problems.push(format!(
                "store audit: n{}'s stores could not be read back: {why}",
                id.0
            )),
            None => problems.push(format!(
                "store audit: n{}'s stores were not read back within {READ_BACK_MS} ms",
                id.0
            )),
        }
    }
    let majority = voters.len() / 2 + 1;
    let mut missing = Capped::default();
    let mut missing_count = 0_u64;
    for write in acknowledged {
        let (holders, others): (Vec<_>, Vec<_>) =
            readable.iter().partition(|(_, image)| image.holds(write));
        if holders.len() >= majority {
            continue;
        }
        missing_count += 1;
        let holders: Vec<u64> = holders.iter().map(|(id, _)| id.0).collect();
        let others: Vec<String> = others
            .iter()
            .map(|(id, image)| format!("n{} has {}", id.0, image.at(write.index)))
            .collect();
        missing.push(format!(
            "store audit: {}'s write {} was acknowledged at {} ms at index {} in term {}, but \
             only {} of the final voters' stores hold it ({holders:?}), not a majority of \
             {voters:?}: {}",
            write.client,
            write.command,
            write.at_ms,
            write.index.0,
            write.term.0,
            holders.len(),
            others.join("; "),
            voters = voters.iter().map(|id| id.0).collect::<Vec<_>>(),
        ));
    }
    if missing_count > 0 {
        problems.push(format!(
            "store audit: {missing_count} of {} acknowledged writes are not on a majority of the \
             final voters' stores (an acknowledged write was lost, or is one failure from being \
             lost)",
            acknowledged.len()
        ));
        problems.extend(missing.lines("acknowledged writes missing from a majority"));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft_core::Term;

    fn write(index: u64, term: u64, command: &[u8]) -> Acknowledged {
        Acknowledged {
            client: "c1".to_string(),
            at_ms: 100,
            index: LogIndex(index),
            term: Term(term),
            encoded: command.to_vec(),
            command: format!("{command:?}"),
        }
    }

    /// A store whose log holds `entries` (index, term, command) and whose snapshot covers up
    /// to `snapshot` (index, term).
    fn store(entries: &[(u64, u64, &[u8])], snapshot: Option<(u64, u64)>) -> StoreImage {
        StoreImage {
            log_start: EntryId::default(),
            entries: entries
                .iter()
                .map(|&(index, term, command)| {
                    let entry = Entry {
                        term: Term(term),
                        index: LogIndex(index),
                        payload: Payload::Command(command.to_vec().into()),
                    };
                    (LogIndex(index), entry)
                })
                .collect(),
            snapshot: snapshot.map(|(index, term)| EntryId {
                term: Term(term),
                index: LogIndex(index),
            }),
            snapshot_error: None,
        }
    }

    fn problems(
        writes: &[Acknowledged],
        stores: Vec<(u64, Result<StoreImage, String>)>,
    ) -> Vec<String> {
        let images = stores.into_iter().map(|(id, s)| (NodeId(id), s)).collect();
        audit(writes, &images, &[NodeId(1), NodeId(2), NodeId(3)])
    }

    #[test]
    fn a_write_on_a_majority_in_the_log_or_under_a_snapshot_passes() {
        let writes = [write(5, 2, b"a")];
        let in_logs = vec![
            (1, Ok(store(&[(5, 2, b"a")], None))),
            (2, Ok(store(&[(5, 2, b"a")], None))),
            (3, Ok(store(&[], None))),
        ];
        assert_eq!(problems(&writes, in_logs), Vec::<String>::new());
        let under_snapshots = vec![
            (1, Ok(store(&[], Some((9, 3))))),
            (2, Ok(store(&[(5, 2, b"a")], None))),
            (3, Err("gone".to_string())),
        ];
        let found = problems(&writes, under_snapshots);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("could not be read back"), "{found:?}");
    }

    #[test]
    fn a_write_missing_from_a_majority_is_reported() {
        let writes = [write(5, 2, b"a")];
        // Each row: stores that do not make a majority between them.
        let cases: [Vec<(u64, Result<StoreImage, String>)>; 4] = [
            // Only one log holds it.
            vec![
                (1, Ok(store(&[(5, 2, b"a")], None))),
                (2, Ok(store(&[(4, 2, b"x")], None))),
                (3, Ok(store(&[], None))),
            ],
            // Another command, or another term, at its index.
            vec![
                (1, Ok(store(&[(5, 2, b"a")], None))),
                (2, Ok(store(&[(5, 2, b"b")], None))),
                (3, Ok(store(&[(5, 3, b"a")], None))),
            ],
            // Snapshots that stop before it, or end in an earlier term (another history).
            vec![
                (1, Ok(store(&[(5, 2, b"a")], None))),
                (2, Ok(store(&[], Some((4, 2))))),
                (3, Ok(store(&[], Some((7, 1))))),
            ],
            // A store not read back counts as holding nothing.
            vec![
                (1, Ok(store(&[(5, 2, b"a")], None))),
                (2, Err("torn".into())),
            ],
        ];
        for stores in cases {
            let found = problems(&writes, stores);
            assert!(
                found.iter().any(|p| p.contains("not on a majority")),
                "{found:?}"
            );
            assert!(
                found.iter().any(|p| p.contains("index 5 in term 2")),
                "{found:?}"
            );
        }
    }

    #[test]
    fn a_snapshot_that_does_not_restore_covers_nothing() {
        let writes = [write(5, 2, b"a")];
        let mut broken = store(&[], Some((9, 3)));
        broken.snapshot = None;
        broken.snapshot_error = Some("its latest snapshot does not restore".to_string());
        let found = problems(
            &writes,
            vec![
                (1, Ok(store(&[(5, 2, b"a")], None))),
                (2, Ok(broken)),
                (3, Ok(store(&[], None))),
            ],
        );
        assert!(
            found.iter().any(|p| p.contains("does not restore")),
            "{found:?}"
        );
        assert!(
            found.iter().any(|p| p.contains("not on a majority")),
            "{found:?}"
        );
    }
}
