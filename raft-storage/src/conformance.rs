//! Conformance suites for [`LogStore`] and [`SnapshotStore`]: written once, run against every
//! implementation.
//!
//! Raft's safety argument assumes that what a node wrote to stable storage before it answered
//! an RPC is still there, unchanged, after it restarts (Figure 2, "Persistent state on all
//! servers ... updated on stable storage before responding to RPCs"). The protocol cannot see a
//! store that forgets a vote, reorders entries or keeps a conflicting suffix; it just loses
//! safety. A snapshot stands in for the log prefix it covers (§7), so a snapshot store that
//! loses an image, hands out a half-written one or lets an older one win loses the same
//! entries. Each check below states one thing the protocol relies on, and the reason.
//!
//! # Using it
//!
//! A suite is given a function `open(location)` that returns a store over the data kept at
//! `location`: an empty store the first time a location number is seen, and the same data
//! (a "restart") when the number comes again. The old handle is always dropped before a
//! location is opened again, so a store that locks its files can be tested too. For a file
//! store, a location is a directory under a temporary directory; for [`MemLogStore`] and
//! [`MemSnapshotStore`], a clone of the store kept for that number.
//!
//! [`run`] runs every check of the log store suite, and [`snapshots`] every check of the
//! snapshot store suite, each check on its own location number (0, 1, 2, ...) so that the
//! checks are independent. The two suites number their locations independently: give each its
//! own `open` over its own places (two temporary directories, two maps). Each check is also a
//! public function taking `open` and a fresh location, to run one on its own.
//!
//! ```
//! use raft_storage::{MemLogStore, MemSnapshotStore, conformance};
//! use std::collections::BTreeMap;
//! use std::sync::{Mutex, PoisonError};
//!
//! let logs: Mutex<BTreeMap<u32, MemLogStore>> = Mutex::default();
//! let open_log = |location: u32| {
//!     let mut logs = logs.lock().unwrap_or_else(PoisonError::into_inner);
//!     std::future::ready(logs.entry(location).or_default().clone())
//! };
//! let images: Mutex<BTreeMap<u32, MemSnapshotStore>> = Mutex::default();
//! let open_images = |location: u32| {
//!     let mut images = images.lock().unwrap_or_else(PoisonError::into_inner);
//!     std::future::ready(images.entry(location).or_default().clone())
//! };
//! let runtime = tokio::runtime::Builder::new_current_thread().build()?;
//! runtime.block_on(conformance::run(open_log));
//! runtime.block_on(conformance::snapshots(open_images));
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # Panics
//!
//! This module is test support: a check reports a broken expectation by panicking, with a
//! message that names the check and says what was expected and what the store did. It uses
//! explicit panics with messages rather than `unwrap`, so that the message is useful.
//!
//! [`MemLogStore`]: crate::MemLogStore
//! [`MemSnapshotStore`]: crate::MemSnapshotStore

use raft_core::node::{
    Failover, FailoverTrigger, LogStore, Recovered, SnapshotChunk, SnapshotStore, SnapshotWriter,
    StorageError, StorageErrorKind,
};
use raft_core::{
    Entry, EntryId, HardState, LogIndex, Membership, NodeId, Payload, SnapshotMeta, Term,
};
use std::collections::BTreeSet;
use std::fmt::Debug;
use std::ops::RangeInclusive;

/// Runs every check of the log store suite against the store that `open` returns, each check
/// on its own location number, counting from 0.
///
/// # Panics
///
/// On the first broken expectation, naming the check and the expectation.
pub async fn run<S, F, Fut>(open: F)
where
    S: LogStore,
    F: Fn(u32) -> Fut,
    Fut: Future<Output = S>,
{
    empty_store_recovers_nothing(&open, 0).await;
    hard_state_survives_reopen(&open, 1).await;
    entries_survive_reopen_in_order(&open, 2).await;
    overlapping_write_replaces_suffix(&open, 3).await;
    hard_state_only_write_keeps_entries(&open, 4).await;
    entries_only_write_keeps_hard_state(&open, 5).await;
    truncate_suffix_removes_tail(&open, 6).await;
    purge_prefix_discards_prefix(&open, 7).await;
    read_returns_range_held(&open, 8).await;
    gap_write_is_refused(&open, 9).await;
    non_contiguous_write_is_refused(&open, 10).await;
    write_before_log_start_is_refused(&open, 11).await;
    voters_survive_reopen(&open, 12).await;
    large_batch_round_trips(&open, 13).await;
    payloads_round_trip_byte_exact(&open, 14).await;
    purge_at_held_entry_keeps_later_entries(&open, 15).await;
    purge_at_diverged_entry_discards_the_rest(&open, 16).await;
    purge_beyond_last_entry_empties_the_log(&open, 17).await;
    purge_at_or_before_start_changes_nothing(&open, 18).await;
    failovers_survive_reopen(&open, 19).await;
}

/// A store never written to recovers the default hard state (term 0, no vote), no entries and
/// no voters, and still does after a restart.
///
/// Why: a new node must start at term 0 without a vote and with an empty log (Figure 2:
/// `currentTerm` "initialized to 0", `votedFor` null, log index starting at 1). A store that
/// invents a vote could make the node refuse the vote it owes a candidate; one that writes a
/// header on creation must not read that header back as data.
///
/// # Panics
///
/// If the store recovers anything, or fails.
pub async fn empty_store_recovers_nothing<S, F, Fut>(open: F, location: u32)
where
    S: LogStore,
    F: Fn(u32) -> Fut,
    Fut: Future<Output = S>,
{
    const CHECK: &str = "empty_store_recovers_nothing";
    let (store, recovered) = open_and_recover(&open, location, CHECK).await;
    expect_eq(
        CHECK,
        "a new store recovers nothing",
        &recovered,
        &Recovered::default(),
    );

    let (_store, recovered) = restart(store, &open, location, CHECK).await;
    expect_eq(
        CHECK,
        "a new store recovers nothing after a restart",
        &recovered,
        &Recovered::default(),
    );
}

/// The hard state written with a batch of entries is the one recovered after a restart, and a
/// later write replaces it whole, including a vote cleared to `None` in a new term.
///
/// Why: `currentTerm` and `votedFor` are persistent state (Figure 2). A node that forgot its
/// vote could vote twice in one term and let two leaders be elected (§5.2, "each server will
/// vote for at most one candidate in a given term"); one that forgot its term could go back in
/// time (§5.1). A store that kept the old vote when the new hard state has none would have the
/// node believe it voted in a term in which it did not.
///
/// # Panics
///
/// If the recovered hard state is not the last one written, or the store fails.
pub async fn hard_state_survives_reopen<S, F, Fut>(open: F, location: u32)
where
    S: LogStore,
    F: Fn(u32) -> Fut,
    Fut: Future<Output = S>,
{
    const CHECK: &str = "hard_state_survives_reopen";
    let first = hard_state(3, Some(2));
    let later = hard_state(4, None);

    let (mut store, _) = open_and_recover(&open, location, CHECK).await;
    succeeds(
        CHECK,
        "writing a hard state with entries 1..=2",
        store.write(Some(first), commands(3, 1..=2)).await,
    );
    let (mut store, recovered) = restart(store, &open, location, CHECK).await;
    expect_eq(
        CHECK,
        "the hard state written is recovered",
        &recovered.hard_state,
        &first,
    );

    succeeds(
        CHECK,
        "writing a later hard state with entry 3",
        store.write(Some(later), commands(4, 3..=3)).await,
    );
    let (_store, recovered) = restart(store, &open, location, CHECK).await;
    expect_eq(
        CHECK,
        "the latest hard state is recovered whole (its vote is None)",
        &recovered.hard_state,
        &later,
    );
}

/// Entries appended in several writes are all recovered after a restart, in index order, and a
/// second restart recovers the same log.
///
/// Why: the log is persistent state (Figure 2). A leader counts a follower's acknowledged
/// entries toward commitment (§5.3); if the follower lost them on restart, a committed entry
/// could be held by less than a majority and be overwritten (§5.4). Recovery must also not
/// change what it reads, or each restart would drift further.
///
/// # Panics
///
/// If the recovered log is not what was written, or the store fails.
pub async fn entries_survive_reopen_in_order<S, F, Fut>(open: F, location: u32)
where
    S: LogStore,
    F: Fn(u32) -> Fut,
    Fut: Future<Output = S>,
{
    const CHECK: &str = "entries_survive_reopen_in_order";
    let (mut store, _) = open_and_recover(&open, location, CHECK).await;
    succeeds(
        CHECK,
        "writing entries 1..=3",
        store.write(None, commands(1, 1..=3)).await,
    );
    succeeds(
        CHECK,
        "appending entries 4..=6",
        store.write(None, commands(2, 4..=6)).await,
    );
    let expected = [commands(1, 1..=3), commands(2, 4..=6)].concat();

    let (mut store, recovered) = restart(store, &open, location, CHECK).await;
    expect_entries(
        CHECK,
        "recovered after a restart",
        &recovered.entries,
        &expected,
    );
    let read = succeeds(
        CHECK,
        "read(1, 6) after a restart",
        store.read(LogIndex(1), LogIndex(6)).await,
    );
    expect_entries(CHECK, "read(1, 6) after a restart", &read, &expected);

    let (_store, recovered) = restart(store, &open, location, CHECK).await;
    expect_entries(
        CHECK,
        "recovered after a second restart",
        &recovered.entries,
        &expected,
    );
}

/// A write whose first entry is at an index the log already holds replaces every entry from
/// that index on, the old suffix beyond the new entries included, in one call; the result
/// survives a restart, and so does the hard state written with it.
///
/// Why: this is the AppendEntries conflict case (Figure 2, receiver step 3: "If an existing
/// entry conflicts with a new one ..., delete the existing entry and all that follow it").
/// An entry left behind from the old suffix would break Log Matching (§5.3): the follower
/// would hold, after the leader's entries, an entry that the leader does not have. The
/// protocol writes the truncation and the new entries as one call so that no restart can
/// observe the log truncated but not yet rewritten.
///
/// # Panics
///
/// If any of the old suffix survives, or the new entries or hard state are not recovered.
pub async fn overlapping_write_replaces_suffix<S, F, Fut>(open: F, location: u32)
where
    S: LogStore,
    F: Fn(u32) -> Fut,
    Fut: Future<Output = S>,
{
    const CHECK: &str = "overlapping_write_replaces_suffix";
    let (mut store, _) = open_and_recover(&open, location, CHECK).await;
    succeeds(
        CHECK,
        "writing entries 1..=5 in term 1",
        store
            .write(Some(hard_state(1, None)), commands(1, 1..=5))
            .await,
    );

    // A leader of term 2 sends entries 3..=4: they conflict with 3 and 4, and 5 must go too.
    let term_two = hard_state(2, Some(3));
    succeeds(
        CHECK,
        "writing entries 3..=4 of term 2 over 1..=5",
        store.write(Some(term_two), commands(2, 3..=4)).await,
    );
    let expected = [commands(1, 1..=2), commands(2, 3..=4)].concat();
    let read = succeeds(
        CHECK,
        "read(1, 10) after the overlapping write",
        store.read(LogIndex(1), LogIndex(10)).await,
    );
    expect_entries(
        CHECK,
        "read(1, 10) after writing 3..=4 over 1..=5 (entry 5 removed)",
        &read,
        &expected,
    );

    let (mut store, recovered) = restart(store, &open, location, CHECK).await;
    expect_entries(
        CHECK,
        "recovered after writing 3..=4 over 1..=5 (entry 5 removed)",
        &recovered.entries,
        &expected,
    );
    expect_eq(
        CHECK,
        "the hard state written with the overlapping entries is recovered",
        &recovered.hard_state,
        &term_two,
    );

    // The conflict can reach back to the very first entry.
    succeeds(
        CHECK,
        "writing entries 1..=2 of term 3 over the whole log",
        store.write(None, commands(3, 1..=2)).await,
    );
    let (_store, recovered) = restart(store, &open, location, CHECK).await;
    expect_entries(
        CHECK,
        "recovered after rewriting the log from index 1",
        &recovered.entries,
        &commands(3, 1..=2),
    );
}

/// A write that carries a hard state and no entries stores the hard state and leaves the log as
/// it was.
///
/// Why: a node persists a new term or a vote on its own, without entries, when it answers a
/// RequestVote or sees a higher term (Figure 2: persisted "before responding to RPCs"). A
/// store that treated an empty batch as "truncate everything" would destroy the log on every
/// vote.
///
/// # Panics
///
/// If the hard state is not stored, the log changes, or the store fails.
pub async fn hard_state_only_write_keeps_entries<S, F, Fut>(open: F, location: u32)
where
    S: LogStore,
    F: Fn(u32) -> Fut,
    Fut: Future<Output = S>,
{
    const CHECK: &str = "hard_state_only_write_keeps_entries";
    let entries = commands(1, 1..=4);
    let (mut store, _) = open_and_recover(&open, location, CHECK).await;
    succeeds(
        CHECK,
        "writing entries 1..=4 with a hard state",
        store
            .write(Some(hard_state(1, Some(1))), entries.clone())
            .await,
    );
    let vote = hard_state(2, Some(5));
    succeeds(
        CHECK,
        "writing a hard state with no entries",
        store.write(Some(vote), Vec::new()).await,
    );
    let read = succeeds(
        CHECK,
        "read(1, 4) after a hard-state-only write",
        store.read(LogIndex(1), LogIndex(4)).await,
    );
    expect_entries(
        CHECK,
        "read(1, 4) after a hard-state-only write",
        &read,
        &entries,
    );

    let (_store, recovered) = restart(store, &open, location, CHECK).await;
    expect_eq(
        CHECK,
        "the hard state of a write without entries is recovered",
        &recovered.hard_state,
        &vote,
    );
    expect_entries(
        CHECK,
        "recovered after a hard-state-only write",
        &recovered.entries,
        &entries,
    );
}

/// A write that carries entries and no hard state (`None`) keeps the hard state stored before.
///
/// Why: `None` means "unchanged", not "reset". A store that reset the hard state to its
/// default would send the node back to term 0 with no vote after a restart, free to vote again
/// in a term in which it already voted (§5.2) — the very loss Figure 2's persistent state
/// exists to prevent.
///
/// # Panics
///
/// If the hard state changes, the entries are not stored, or the store fails.
pub async fn entries_only_write_keeps_hard_state<S, F, Fut>(open: F, location: u32)
where
    S: LogStore,
    F: Fn(u32) -> Fut,
    Fut: Future<Output = S>,
{
    const CHECK: &str = "entries_only_write_keeps_hard_state";
    let vote = hard_state(5, Some(2));
    let (mut store, _) = open_and_recover(&open, location, CHECK).await;
    succeeds(
        CHECK,
        "writing a hard state with no entries",
        store.write(Some(vote), Vec::new()).await,
    );
    succeeds(
        CHECK,
        "writing entries 1..=3 with no hard state",
        store.write(None, commands(5, 1..=3)).await,
    );

    let (_store, recovered) = restart(store, &open, location, CHECK).await;
    expect_eq(
        CHECK,
        "a write without a hard state keeps the one stored before",
        &recovered.hard_state,
        &vote,
    );
    expect_entries(
        CHECK,
        "recovered after an entries-only write",
        &recovered.entries,
        &commands(5, 1..=3),
    );
}

/// `truncate_suffix(from)` removes every entry at or after `from` and keeps the ones before it;
/// an index past the end removes nothing; the log continues from the truncation point; and all
/// of it survives a restart.
///
/// Why: a follower drops a conflicting suffix (Figure 2, AppendEntries receiver step 3). An
/// entry that came back after a restart would be one the leader does not have, breaking Log
/// Matching (§5.3).
///
/// # Panics
///
/// If the log after truncation is not the prefix before `from`, or the store fails.
pub async fn truncate_suffix_removes_tail<S, F, Fut>(open: F, location: u32)
where
    S: LogStore,
    F: Fn(u32) -> Fut,
    Fut: Future<Output = S>,
{
    const CHECK: &str = "truncate_suffix_removes_tail";
    let (mut store, _) = open_and_recover(&open, location, CHECK).await;
    succeeds(
        CHECK,
        "writing entries 1..=10",
        store.write(None, commands(1, 1..=10)).await,
    );
    succeeds(
        CHECK,
        "truncate_suffix(7)",
        store.truncate_suffix(LogIndex(7)).await,
    );
    let read = succeeds(
        CHECK,
        "read(1, 10) after truncate_suffix(7)",
        store.read(LogIndex(1), LogIndex(10)).await,
    );
    expect_entries(
        CHECK,
        "read(1, 10) after truncate_suffix(7)",
        &read,
        &commands(1, 1..=6),
    );
    succeeds(
        CHECK,
        "truncate_suffix(20), past the end",
        store.truncate_suffix(LogIndex(20)).await,
    );

    let (mut store, recovered) = restart(store, &open, location, CHECK).await;
    expect_entries(
        CHECK,
        "recovered after truncate_suffix(7) and truncate_suffix(20)",
        &recovered.entries,
        &commands(1, 1..=6),
    );

    succeeds(
        CHECK,
        "appending entries 7..=8 at the truncation point",
        store.write(None, commands(2, 7..=8)).await,
    );
    let (_store, recovered) = restart(store, &open, location, CHECK).await;
    expect_entries(
        CHECK,
        "recovered after appending at the truncation point",
        &recovered.entries,
        &[commands(1, 1..=6), commands(2, 7..=8)].concat(),
    );
}

/// `purge_prefix(up_to)` discards every entry at or before `up_to`: reading a purged index is
/// an error (any `Err`, typically [`StorageError::Unavailable`]), the later entries stay
/// readable, the log still grows at its end, and after a restart the purged entries stay gone.
///
/// Why: entries covered by a snapshot are discarded (§7). A read that quietly returned fewer
/// entries than asked for would let a leader send a follower a log with a hole in it; the
/// error is what tells the leader to send the snapshot instead. Purging is a write, so like
/// every write it is durable when it returns.
///
/// # Panics
///
/// If a purged entry can still be read or is recovered, a later one is lost, or the store
/// fails where it should succeed.
pub async fn purge_prefix_discards_prefix<S, F, Fut>(open: F, location: u32)
where
    S: LogStore,
    F: Fn(u32) -> Fut,
    Fut: Future<Output = S>,
{
    const CHECK: &str = "purge_prefix_discards_prefix";
    let (mut store, _) = open_and_recover(&open, location, CHECK).await;
    succeeds(
        CHECK,
        "writing entries 1..=10",
        store.write(None, commands(1, 1..=10)).await,
    );
    succeeds(
        CHECK,
        "purge_prefix(4)",
        store
            .purge_prefix(EntryId {
                term: Term(1),
                index: LogIndex(4),
            })
            .await,
    );
    refused(
        CHECK,
        "read(4, 4) of a purged index",
        store.read(LogIndex(4), LogIndex(4)).await,
    );
    refused(
        CHECK,
        "read(1, 10), which starts at a purged index",
        store.read(LogIndex(1), LogIndex(10)).await,
    );
    let read = succeeds(
        CHECK,
        "read(5, 10) after purge_prefix(4)",
        store.read(LogIndex(5), LogIndex(10)).await,
    );
    expect_entries(
        CHECK,
        "read(5, 10) after purge_prefix(4)",
        &read,
        &commands(1, 5..=10),
    );

    let (mut store, recovered) = restart(store, &open, location, CHECK).await;
    expect_entries(
        CHECK,
        "recovered after purge_prefix(4)",
        &recovered.entries,
        &commands(1, 5..=10),
    );
    refused(
        CHECK,
        "read(4, 4) of a purged index after a restart",
        store.read(LogIndex(4), LogIndex(4)).await,
    );

    succeeds(
        CHECK,
        "appending entry 11 after purge_prefix(4)",
        store.write(None, commands(2, 11..=11)).await,
    );
    let (_store, recovered) = restart(store, &open, location, CHECK).await;
    expect_entries(
        CHECK,
        "recovered after appending to a purged log",
        &recovered.entries,
        &[commands(1, 5..=10), commands(2, 11..=11)].concat(),
    );
}

/// `read(from, to)` returns exactly the entries `from..=to` the log holds, in order: no entry
/// outside the range, none missing inside it, and a range that runs past the end is clamped
/// to the end. A range that holds nothing (past the end, or `from > to`) returns no entries;
/// the store may answer it with an empty list or an error, but never with entries.
///
/// Why: a leader builds AppendEntries from `read` and names the entry before them as
/// `prevLogIndex` (Figure 2); one entry too many or too few at either end would make the
/// follower store entries at the wrong indexes.
///
/// # Panics
///
/// If a read returns other entries than those of the range, or fails on a range it holds.
pub async fn read_returns_range_held<S, F, Fut>(open: F, location: u32)
where
    S: LogStore,
    F: Fn(u32) -> Fut,
    Fut: Future<Output = S>,
{
    const CHECK: &str = "read_returns_range_held";
    let (mut store, _) = open_and_recover(&open, location, CHECK).await;
    succeeds(
        CHECK,
        "writing entries 1..=10",
        store.write(None, commands(1, 1..=10)).await,
    );

    let held: [(u64, u64, RangeInclusive<u64>); 6] = [
        (3, 6, 3..=6),
        (1, 1, 1..=1),
        (10, 10, 10..=10),
        (1, 10, 1..=10),
        (8, 100, 8..=10),
        (1, u64::MAX, 1..=10),
    ];
    for (from, to, expected) in held {
        let action = format!("read({from}, {to}) of a log holding 1..=10");
        let read = succeeds(
            CHECK,
            &action,
            store.read(LogIndex(from), LogIndex(to)).await,
        );
        expect_entries(CHECK, &action, &read, &commands(1, expected));
    }

    for (from, to) in [(6, 5), (11, 20)] {
        let action = format!("read({from}, {to}) of a log holding 1..=10");
        if let Ok(read) = store.read(LogIndex(from), LogIndex(to)).await {
            expect_entries(CHECK, &action, &read, &[]);
        }
    }
}

/// A write whose first entry would leave a gap after the last entry held is refused with an
/// error and changes nothing: not the log, and not the hard state written with it. The store
/// stays usable afterwards.
///
/// Why: entry `i` of the log must sit at index `i`, or Log Matching (§5.3) means nothing. The
/// protocol never asks for such a write, so one means a bug upstream; refusing it where it
/// enters (rather than storing a log with a hole, found only at the next restart) keeps the
/// damage out of stable storage. The refusal must be whole: the caller treats the write as
/// failed, so a hard state that landed anyway would be persistent state the node does not
/// know it has. A refused write lost nothing, so it is no reason to refuse later writes.
///
/// # Panics
///
/// If the write is accepted, changes anything, or a valid write after it fails.
pub async fn gap_write_is_refused<S, F, Fut>(open: F, location: u32)
where
    S: LogStore,
    F: Fn(u32) -> Fut,
    Fut: Future<Output = S>,
{
    const CHECK: &str = "gap_write_is_refused";
    let (mut store, _) = open_and_recover(&open, location, CHECK).await;
    refused(
        CHECK,
        "writing entry 2 to an empty log",
        store.write(None, commands(1, 2..=2)).await,
    );

    let before = hard_state(1, Some(1));
    succeeds(
        CHECK,
        "writing entries 1..=3",
        store.write(Some(before), commands(1, 1..=3)).await,
    );
    refused(
        CHECK,
        "writing entries 5..=6 after a log ending at 3",
        store
            .write(Some(hard_state(2, Some(2))), commands(2, 5..=6))
            .await,
    );
    let read = succeeds(
        CHECK,
        "read(1, 10) after a refused write",
        store.read(LogIndex(1), LogIndex(10)).await,
    );
    expect_entries(
        CHECK,
        "read(1, 10) after a refused write",
        &read,
        &commands(1, 1..=3),
    );
    succeeds(
        CHECK,
        "appending entry 4 after a refused write",
        store.write(None, commands(1, 4..=4)).await,
    );

    let (_store, recovered) = restart(store, &open, location, CHECK).await;
    expect_eq(
        CHECK,
        "the hard state of a refused write is not stored",
        &recovered.hard_state,
        &before,
    );
    expect_entries(
        CHECK,
        "recovered after a refused write",
        &recovered.entries,
        &commands(1, 1..=4),
    );
}

/// A batch whose entries are not contiguous (an index skipped or repeated) is refused with an
/// error and changes nothing.
///
/// Why: `write` takes its batch to be contiguous; a store that took a batch with a hole or a
/// repeat would hold two entries at one index, or none at another, breaking Log Matching
/// (§5.3) where no check would see it until the next restart. Validate where data enters.
///
/// # Panics
///
/// If such a batch is accepted or changes the log, or the store fails on a valid write.
pub async fn non_contiguous_write_is_refused<S, F, Fut>(open: F, location: u32)
where
    S: LogStore,
    F: Fn(u32) -> Fut,
    Fut: Future<Output = S>,
{
    const CHECK: &str = "non_contiguous_write_is_refused";
    let (mut store, _) = open_and_recover(&open, location, CHECK).await;
    succeeds(
        CHECK,
        "writing entries 1..=2",
        store.write(None, commands(1, 1..=2)).await,
    );
    let skipping = vec![
        command(1, 3, b"three".to_vec()),
        command(1, 5, b"five".to_vec()),
    ];
    refused(
        CHECK,
        "writing entries 3 and 5 in one batch",
        store.write(None, skipping).await,
    );
    let repeating = vec![
        command(1, 3, b"three".to_vec()),
        command(1, 3, b"three again".to_vec()),
    ];
    refused(
        CHECK,
        "writing entry 3 twice in one batch",
        store.write(None, repeating).await,
    );

    let (_store, recovered) = restart(store, &open, location, CHECK).await;
    expect_entries(
        CHECK,
        "recovered after refused non-contiguous writes",
        &recovered.entries,
        &commands(1, 1..=2),
    );
}

/// A write that starts before the log does is refused with an error and changes nothing:
/// index 0 on any log, and an index already purged.
///
/// Why: index 0 is the empty prefix, never an entry (Figure 2: the first index is 1). A
/// purged index is covered by a snapshot (§7); writing there would bring back, as if it were
/// still in the log, an entry that [`LogStore::read`] says is gone.
///
/// # Panics
///
/// If such a write is accepted or changes the log, or the store fails on a valid call.
pub async fn write_before_log_start_is_refused<S, F, Fut>(open: F, location: u32)
where
    S: LogStore,
    F: Fn(u32) -> Fut,
    Fut: Future<Output = S>,
{
    const CHECK: &str = "write_before_log_start_is_refused";
    let (mut store, _) = open_and_recover(&open, location, CHECK).await;
    refused(
        CHECK,
        "writing an entry at index 0 to an empty log",
        store.write(None, commands(1, 0..=1)).await,
    );
    succeeds(
        CHECK,
        "writing entries 1..=6",
        store.write(None, commands(1, 1..=6)).await,
    );
    succeeds(
        CHECK,
        "purge_prefix(3)",
        store
            .purge_prefix(EntryId {
                term: Term(1),
                index: LogIndex(3),
            })
            .await,
    );
    refused(
        CHECK,
        "writing entries 2..=7 after purge_prefix(3)",
        store.write(None, commands(2, 2..=7)).await,
    );

    let (_store, recovered) = restart(store, &open, location, CHECK).await;
    expect_entries(
        CHECK,
        "recovered after refused writes before the log's start",
        &recovered.entries,
        &commands(1, 4..=6),
    );
}

/// The voter set saved last is recovered after a restart, and writes of entries and hard state
/// around it do not disturb it (nor it them).
///
/// Why: the voters decide what a majority is, for elections and for commitment (§5.2, §5.3;
/// dissertation §4.1). A node that restarted with a stale voter set could count votes or
/// acknowledgements against the wrong majority.
///
/// # Panics
///
/// If the recovered voters are not the last saved, other state changes, or the store fails.
pub async fn voters_survive_reopen<S, F, Fut>(open: F, location: u32)
where
    S: LogStore,
    F: Fn(u32) -> Fut,
    Fut: Future<Output = S>,
{
    const CHECK: &str = "voters_survive_reopen";
    let three = voters(&[1, 2, 3]);
    let four = voters(&[1, 2, 3, 4]);

    let (mut store, _) = open_and_recover(&open, location, CHECK).await;
    succeeds(
        CHECK,
        "save_voters({1, 2, 3})",
        store.save_voters(&three).await,
    );
    let (mut store, recovered) = restart(store, &open, location, CHECK).await;
    expect_eq(
        CHECK,
        "the voters saved are recovered",
        &recovered.voters,
        &Some(three),
    );

    let vote = hard_state(2, Some(1));
    succeeds(
        CHECK,
        "writing entries 1..=2 with a hard state",
        store.write(Some(vote), commands(2, 1..=2)).await,
    );
    succeeds(
        CHECK,
        "save_voters({1, 2, 3, 4})",
        store.save_voters(&four).await,
    );
    succeeds(
        CHECK,
        "appending entry 3 after save_voters",
        store.write(None, commands(2, 3..=3)).await,
    );

    let (_store, recovered) = restart(store, &open, location, CHECK).await;
    expect_eq(
        CHECK,
        "the voters saved last are recovered, after later writes",
        &recovered.voters,
        &Some(four),
    );
    expect_eq(
        CHECK,
        "save_voters keeps the hard state",
        &recovered.hard_state,
        &vote,
    );
    expect_entries(
        CHECK,
        "recovered around save_voters",
        &recovered.entries,
        &commands(2, 1..=3),
    );
}

/// The history of leadership changes saved last is recovered after a restart, whole and in
/// order, and saving it changes nothing else.
///
/// Why: operators read the failover history (`Status::failovers`) to learn when and why
/// leadership moved; a node that forgets it on restart hides the failovers that caused the
/// restart. (A store that keeps the trait's default, which saves nothing, fails this check;
/// run the others one by one.)
///
/// # Panics
///
/// If the recovered history is not the last saved, other state changes, or the store fails.
pub async fn failovers_survive_reopen<S, F, Fut>(open: F, location: u32)
where
    S: LogStore,
    F: Fn(u32) -> Fut,
    Fut: Future<Output = S>,
{
    const CHECK: &str = "failovers_survive_reopen";
    let first = Failover::new(Term(1), None, NodeId(1), FailoverTrigger::Election, 150);
    let mut second = Failover::new(
        Term(3),
        Some(NodeId(1)),
        NodeId(2),
        FailoverTrigger::Observed,
        4_000,
    );
    second.new_leader_unapplied_entries = Some(7);
    let third = Failover::new(
        Term(4),
        Some(NodeId(2)),
        NodeId(3),
        FailoverTrigger::Transfer,
        9_000,
    );

    let (mut store, _) = open_and_recover(&open, location, CHECK).await;
    let vote = hard_state(4, Some(3));
    succeeds(
        CHECK,
        "writing entries 1..=2 with a hard state",
        store.write(Some(vote), commands(4, 1..=2)).await,
    );
    succeeds(
        CHECK,
        "save_failovers(two changes)",
        store.save_failovers(&[first.clone(), second.clone()]).await,
    );
    let (mut store, recovered) = restart(store, &open, location, CHECK).await;
    expect_eq(
        CHECK,
        "the history saved is recovered",
        &recovered.failovers,
        &vec![first, second.clone()],
    );
    succeeds(
        CHECK,
        "save_failovers(a later history, replacing the first)",
        store.save_failovers(&[second.clone(), third.clone()]).await,
    );
    let (_store, recovered) = restart(store, &open, location, CHECK).await;
    expect_eq(
        CHECK,
        "the history saved last is recovered",
        &recovered.failovers,
        &vec![second, third],
    );
    expect_eq(
        CHECK,
        "save_failovers keeps the hard state",
        &recovered.hard_state,
        &vote,
    );
    expect_entries(
        CHECK,
        "recovered around save_failovers",
        &recovered.entries,
        &commands(4, 1..=2),
    );
}

/// How many entries [`large_batch_round_trips`] writes in one call.
const LARGE_BATCH_ENTRIES: u64 = 10_000;

/// One write of 10,000 entries, with payloads of every length from 0 to 255
/// bytes and a blank entry now and then, reads back and recovers exactly.
///
/// Why: the driver hands the store everything that queued while the previous write was
/// becoming durable, as one batch (group commit), so batches can be large. A store must not
/// drop, reorder or corrupt entries at its buffer, page or record boundaries.
///
/// # Panics
///
/// If the batch does not read back or recover exactly, or the store fails.
pub async fn large_batch_round_trips<S, F, Fut>(open: F, location: u32)
where
    S: LogStore,
    F: Fn(u32) -> Fut,
    Fut: Future<Output = S>,
{
    const CHECK: &str = "large_batch_round_trips";
    let entries: Vec<Entry> = (1..=LARGE_BATCH_ENTRIES)
        .map(|index| {
            let term = 1 + index / 1_000;
            if index % 100 == 0 {
                blank(term, index)
            } else {
                // Lengths 0..=255 and bytes that depend on the index, so that a shifted or
                // swapped payload cannot compare equal.
                let length = index % 256;
                let payload: Vec<u8> = (0..length)
                    .map(|k| (index.wrapping_mul(31).wrapping_add(k) % 256) as u8)
                    .collect();
                command(term, index, payload)
            }
        })
        .collect();

    let (mut store, _) = open_and_recover(&open, location, CHECK).await;
    succeeds(
        CHECK,
        "writing 10,000 entries in one batch",
        store
            .write(Some(hard_state(11, None)), entries.clone())
            .await,
    );
    let read = succeeds(
        CHECK,
        "read(1, 10000)",
        store.read(LogIndex(1), LogIndex(LARGE_BATCH_ENTRIES)).await,
    );
    expect_entries(CHECK, "read(1, 10000) of a large batch", &read, &entries);

    let (mut store, recovered) = restart(store, &open, location, CHECK).await;
    expect_entries(
        CHECK,
        "recovered after a large batch",
        &recovered.entries,
        &entries,
    );
    let window = succeeds(
        CHECK,
        "read(4990, 5010) after a restart",
        store.read(LogIndex(4_990), LogIndex(5_010)).await,
    );
    expect_entries(
        CHECK,
        "read(4990, 5010) after a restart",
        &window,
        &entries[4_989..5_010],
    );
}

/// Blank entries, commands (empty, every byte value, bytes that look like framing, and one
/// larger than 64 KiB) and a membership (joint, with a learner) come back exactly, and a blank
/// entry stays distinct from an empty command.
///
/// Why: a blank entry is the no-op a new leader commits at the start of its term (§5.4.2,
/// dissertation §6.4); an empty command is a user's command. Confusing the two would skip a
/// command or apply one nobody proposed, and a changed byte would make replicas' state
/// machines diverge, the failure Raft exists to prevent. A membership entry that came back
/// different would change who decides after a restart (§6).
///
/// # Panics
///
/// If any entry does not come back exactly, or the store fails.
pub async fn payloads_round_trip_byte_exact<S, F, Fut>(open: F, location: u32)
where
    S: LogStore,
    F: Fn(u32) -> Fut,
    Fut: Future<Output = S>,
{
    const CHECK: &str = "payloads_round_trip_byte_exact";
    let every_byte: Vec<u8> = (0..=u8::MAX).collect();
    let large: Vec<u8> = (0..65_537_u32).map(|k| (k % 251) as u8).collect();
    let entries = vec![
        blank(1, 1),
        command(1, 2, Vec::new()),
        command(1, 3, vec![0]),
        command(1, 4, every_byte),
        command(1, 5, b"\n\r\0\xff\xfe{\"len\":0}\0".to_vec()),
        blank(2, 6),
        command(2, 7, large),
        command(2, 8, vec![u8::MAX; 7]),
        Entry {
            term: Term(2),
            index: LogIndex(9),
            payload: Payload::Membership(snapshot_meta(2, 9, &[1, 2, 3]).membership),
        },
    ];

    let (mut store, _) = open_and_recover(&open, location, CHECK).await;
    succeeds(
        CHECK,
        "writing blank, command and membership entries",
        store.write(None, entries.clone()).await,
    );
    let read = succeeds(
        CHECK,
        "read(1, 9)",
        store.read(LogIndex(1), LogIndex(9)).await,
    );
    expect_entries(CHECK, "read(1, 9) of assorted payloads", &read, &entries);

    let (_store, recovered) = restart(store, &open, location, CHECK).await;
    expect_entries(
        CHECK,
        "recovered assorted payloads",
        &recovered.entries,
        &entries,
    );
}

/// `purge_prefix(up_to)` at an entry the log holds with `up_to`'s term keeps every entry after
/// it, leaves the hard state alone, and makes the log start after `up_to`: `recover` returns
/// `up_to` as [`Recovered::log_start`], after a restart too, reading `up_to.index` or before is
/// [`StorageError::Unavailable`], and the log still grows at its end.
///
/// Why: a node compacts its log up to its own snapshot (§7), and the entries after the
/// snapshot are not in it: they may be committed, or acknowledged to a leader that counted
/// them toward a commit (§5.3), so losing them loses data. `log_start` names the entry the
/// snapshot ends with; its term is what the node checks an AppendEntries against when the
/// leader's `prevLogIndex` is that entry (Figure 2, receiver step 2), and no entry is left in
/// the log to tell it. `Unavailable` is what tells a leader to send its snapshot instead.
///
/// # Panics
///
/// If an entry after `up_to` is lost, a purged one survives or reads as anything but
/// `Unavailable`, `log_start` is not `up_to`, or the store fails.
pub async fn purge_at_held_entry_keeps_later_entries<S, F, Fut>(open: F, location: u32)
where
    S: LogStore,
    F: Fn(u32) -> Fut,
    Fut: Future<Output = S>,
{
    const CHECK: &str = "purge_at_held_entry_keeps_later_entries";
    let vote = hard_state(2, Some(1));
    let up_to = entry_id(2, 7);
    let (mut store, _) = open_and_recover(&open, location, CHECK).await;
    succeeds(
        CHECK,
        "writing entries 1..=5 of term 1 and 6..=10 of term 2",
        store
            .write(
                Some(vote),
                [commands(1, 1..=5), commands(2, 6..=10)].concat(),
            )
            .await,
    );
    succeeds(
        CHECK,
        "purge_prefix({t2 i7}), an entry the log holds",
        store.purge_prefix(up_to).await,
    );
    let read = succeeds(
        CHECK,
        "read(8, 10) after purge_prefix({t2 i7})",
        store.read(LogIndex(8), LogIndex(10)).await,
    );
    expect_entries(
        CHECK,
        "read(8, 10) after purge_prefix({t2 i7})",
        &read,
        &commands(2, 8..=10),
    );
    for (from, to) in [(7, 7), (1, 10), (3, 4)] {
        unavailable(
            CHECK,
            &format!("read({from}, {to}) after purge_prefix({{t2 i7}})"),
            store.read(LogIndex(from), LogIndex(to)).await,
            |entries| describe_span(entries),
        );
    }

    let (mut store, recovered) = restart(store, &open, location, CHECK).await;
    expect_eq(
        CHECK,
        "log_start after purge_prefix({t2 i7}) and a restart",
        &recovered.log_start,
        &up_to,
    );
    expect_entries(
        CHECK,
        "recovered after purge_prefix({t2 i7})",
        &recovered.entries,
        &commands(2, 8..=10),
    );
    expect_eq(
        CHECK,
        "purging keeps the hard state",
        &recovered.hard_state,
        &vote,
    );
    unavailable(
        CHECK,
        "read(7, 7) after purge_prefix({t2 i7}) and a restart",
        store.read(LogIndex(7), LogIndex(7)).await,
        |entries| describe_span(entries),
    );

    succeeds(
        CHECK,
        "appending entry 11 after purge_prefix({t2 i7})",
        store.write(None, commands(3, 11..=11)).await,
    );
    let (_store, recovered) = restart(store, &open, location, CHECK).await;
    expect_eq(
        CHECK,
        "log_start after appending to a purged log and a restart",
        &recovered.log_start,
        &up_to,
    );
    expect_entries(
        CHECK,
        "recovered after appending to a purged log",
        &recovered.entries,
        &[commands(2, 8..=10), commands(3, 11..=11)].concat(),
    );
}

/// `purge_prefix(up_to)` at an index the log holds with another term than `up_to`'s discards
/// the whole log, the entries after `up_to` included; the log then starts after `up_to`
/// (`log_start` is `up_to`, after a restart too) and accepts a write at `up_to.index + 1`,
/// and only there or later.
///
/// Why: this is a snapshot installed from the leader over a log that diverged from it (§7,
/// InstallSnapshot receiver steps 6 and 7: keep the entries after the snapshot only "if
/// existing log entry has same index and term as snapshot's last included entry", else
/// "discard the entire log"). An entry kept after the diverged one would be one the leader
/// does not have, breaking Log Matching (§5.3); the leader's next AppendEntries names
/// `up_to` as its `prevLogIndex` and sends entries from `up_to.index + 1`, which the store
/// must take.
///
/// # Panics
///
/// If an entry survives the purge, `log_start` is not `up_to`, a write at `up_to.index + 1`
/// is refused or one before it accepted, or the store fails.
pub async fn purge_at_diverged_entry_discards_the_rest<S, F, Fut>(open: F, location: u32)
where
    S: LogStore,
    F: Fn(u32) -> Fut,
    Fut: Future<Output = S>,
{
    const CHECK: &str = "purge_at_diverged_entry_discards_the_rest";
    let up_to = entry_id(3, 6);
    let (mut store, _) = open_and_recover(&open, location, CHECK).await;
    succeeds(
        CHECK,
        "writing entries 1..=10 of term 1",
        store.write(None, commands(1, 1..=10)).await,
    );
    succeeds(
        CHECK,
        "purge_prefix({t3 i6}) over a log holding {t1 i6}",
        store.purge_prefix(up_to).await,
    );
    if let Ok(read) = store.read(LogIndex(7), LogIndex(10)).await {
        expect_entries(
            CHECK,
            "read(7, 10) after purge_prefix({t3 i6}) over {t1 i6} (the diverged tail is gone)",
            &read,
            &[],
        );
    }
    unavailable(
        CHECK,
        "read(6, 6) after purge_prefix({t3 i6})",
        store.read(LogIndex(6), LogIndex(6)).await,
        |entries| describe_span(entries),
    );

    let (mut store, recovered) = restart(store, &open, location, CHECK).await;
    expect_entries(
        CHECK,
        "recovered after purge_prefix({t3 i6}) over {t1 i6}",
        &recovered.entries,
        &[],
    );
    expect_eq(
        CHECK,
        "log_start after purge_prefix({t3 i6}) and a restart",
        &recovered.log_start,
        &up_to,
    );

    refused(
        CHECK,
        "writing entries 6..=8 of term 3 at the purged index 6",
        store.write(None, commands(3, 6..=8)).await,
    );
    succeeds(
        CHECK,
        "writing entries 7..=9 of term 3, right after the purged index",
        store.write(None, commands(3, 7..=9)).await,
    );
    let (_store, recovered) = restart(store, &open, location, CHECK).await;
    expect_entries(
        CHECK,
        "recovered after writing 7..=9 after purge_prefix({t3 i6})",
        &recovered.entries,
        &commands(3, 7..=9),
    );
    expect_eq(
        CHECK,
        "log_start after writing after the purge and a restart",
        &recovered.log_start,
        &up_to,
    );
}

/// `purge_prefix(up_to)` beyond the last entry held discards the whole log; the log then
/// starts after `up_to` (`log_start` is `up_to`, after a restart too), refuses a write where
/// the old log ended, and accepts one at `up_to.index + 1`.
///
/// Why: a follower far behind the leader receives a snapshot past the end of its log (§7:
/// "discard the entire log"). Its log must continue right after the snapshot, where the
/// leader's next AppendEntries starts; a store that still appended after its old last entry
/// would hold entries at the wrong indexes, or refuse the leader's forever.
///
/// # Panics
///
/// If an entry survives the purge, `log_start` is not `up_to`, the write at
/// `up_to.index + 1` is refused or the one at the old end accepted, or the store fails.
pub async fn purge_beyond_last_entry_empties_the_log<S, F, Fut>(open: F, location: u32)
where
    S: LogStore,
    F: Fn(u32) -> Fut,
    Fut: Future<Output = S>,
{
    const CHECK: &str = "purge_beyond_last_entry_empties_the_log";
    let up_to = entry_id(2, 9);
    let (mut store, _) = open_and_recover(&open, location, CHECK).await;
    succeeds(
        CHECK,
        "writing entries 1..=4",
        store.write(None, commands(1, 1..=4)).await,
    );
    succeeds(
        CHECK,
        "purge_prefix({t2 i9}) over a log ending at 4",
        store.purge_prefix(up_to).await,
    );
    for index in [4, 9] {
        unavailable(
            CHECK,
            &format!("read({index}, {index}) after purge_prefix({{t2 i9}})"),
            store.read(LogIndex(index), LogIndex(index)).await,
            |entries| describe_span(entries),
        );
    }

    let (mut store, recovered) = restart(store, &open, location, CHECK).await;
    expect_entries(
        CHECK,
        "recovered after purge_prefix({t2 i9}) beyond the end",
        &recovered.entries,
        &[],
    );
    expect_eq(
        CHECK,
        "log_start after purge_prefix({t2 i9}) beyond the end and a restart",
        &recovered.log_start,
        &up_to,
    );

    refused(
        CHECK,
        "writing entry 5, where the log ended before the purge",
        store.write(None, commands(2, 5..=5)).await,
    );
    succeeds(
        CHECK,
        "writing entries 10..=11 right after the purged index",
        store.write(None, commands(2, 10..=11)).await,
    );
    let (_store, recovered) = restart(store, &open, location, CHECK).await;
    expect_entries(
        CHECK,
        "recovered after writing 10..=11 after purge_prefix({t2 i9})",
        &recovered.entries,
        &commands(2, 10..=11),
    );
    expect_eq(
        CHECK,
        "log_start after writing after the purge and a restart",
        &recovered.log_start,
        &up_to,
    );
}

/// `purge_prefix(up_to)` at or before where the log starts changes nothing: not the entries
/// and not `log_start`, whatever `up_to`'s term. That holds for index 0 on a new store, for
/// the very entry the log starts after, and for an earlier one.
///
/// Why: purges can arrive out of order (a node's own compaction at an older snapshot finishes
/// after a newer snapshot from the leader was installed). Moving the start back would have
/// `read` and `recover` claim a prefix the store no longer holds; treating the start with
/// another term as a divergence would throw away the log kept after the snapshot.
///
/// # Panics
///
/// If such a purge changes the entries or `log_start`, or the store fails.
pub async fn purge_at_or_before_start_changes_nothing<S, F, Fut>(open: F, location: u32)
where
    S: LogStore,
    F: Fn(u32) -> Fut,
    Fut: Future<Output = S>,
{
    const CHECK: &str = "purge_at_or_before_start_changes_nothing";
    let (mut store, _) = open_and_recover(&open, location, CHECK).await;
    succeeds(
        CHECK,
        "purge_prefix({t0 i0}) on a new store",
        store.purge_prefix(EntryId::default()).await,
    );
    let (mut store, recovered) = restart(store, &open, location, CHECK).await;
    expect_eq(
        CHECK,
        "a new store after purge_prefix({t0 i0}) recovers nothing",
        &recovered,
        &Recovered::default(),
    );

    let start = entry_id(1, 5);
    succeeds(
        CHECK,
        "writing entries 1..=10",
        store.write(None, commands(1, 1..=10)).await,
    );
    succeeds(
        CHECK,
        "purge_prefix({t1 i5})",
        store.purge_prefix(start).await,
    );
    for (up_to, what) in [
        (start, "purge_prefix({t1 i5}) again"),
        (entry_id(1, 3), "purge_prefix({t1 i3}), before the start"),
        (
            entry_id(7, 5),
            "purge_prefix({t7 i5}), at the start with another term",
        ),
        (EntryId::default(), "purge_prefix({t0 i0})"),
    ] {
        succeeds(CHECK, what, store.purge_prefix(up_to).await);
        let read = succeeds(
            CHECK,
            &format!("read(6, 10) after {what}"),
            store.read(LogIndex(6), LogIndex(10)).await,
        );
        expect_entries(
            CHECK,
            &format!("read(6, 10) after {what}"),
            &read,
            &commands(1, 6..=10),
        );
        unavailable(
            CHECK,
            &format!("read(5, 5) after {what}"),
            store.read(LogIndex(5), LogIndex(5)).await,
            |entries| describe_span(entries),
        );
    }

    let (_store, recovered) = restart(store, &open, location, CHECK).await;
    expect_entries(
        CHECK,
        "recovered after purges at or before the start",
        &recovered.entries,
        &commands(1, 6..=10),
    );
    expect_eq(
        CHECK,
        "log_start after purges at or before the start",
        &recovered.log_start,
        &start,
    );
}

// ----- The snapshot store suite --------------------------------------------------------------

/// Runs every check of the snapshot store suite against the store that `open` returns, each
/// check on its own location number, counting from 0.
///
/// # Panics
///
/// On the first broken expectation, naming the check and the expectation.
pub async fn snapshots<S, F, Fut>(open: F)
where
    S: SnapshotStore,
    F: Fn(u32) -> Fut,
    Fut: Future<Output = S>,
{
    empty_snapshot_store_has_no_image(&open, 0).await;
    chunked_image_reads_back_byte_exact(&open, 1).await;
    empty_image_reads_as_one_last_chunk(&open, 2).await;
    unfinished_image_is_invisible(&open, 3).await;
    newer_image_replaces_older(&open, 4).await;
    older_image_finished_later_is_discarded(&open, 5).await;
    concurrent_writers_are_independent(&open, 6).await;
    latest_image_survives_reopen(&open, 7).await;
    read_past_end_is_unavailable(&open, 8).await;
    large_image_round_trips(&open, 9).await;
}

/// A store never written to has no latest image, and reading fails with
/// [`StorageError::Unavailable`]; after a restart too.
///
/// Why: a new node has no snapshot, and its log starts at index 1 (Figure 2). A store that
/// reported an image, or read back an empty one, would have the node restore its state machine
/// from nothing and believe a log prefix covered that no snapshot holds.
///
/// # Panics
///
/// If the store reports or reads an image, or fails otherwise.
pub async fn empty_snapshot_store_has_no_image<S, F, Fut>(open: F, location: u32)
where
    S: SnapshotStore,
    F: Fn(u32) -> Fut,
    Fut: Future<Output = S>,
{
    const CHECK: &str = "empty_snapshot_store_has_no_image";
    let mut store = open(location).await;
    expect_no_image(CHECK, "a new store", &mut store).await;
    let mut store = reopen(store, &open, location).await;
    expect_no_image(CHECK, "a new store after a restart", &mut store).await;
}

/// An image written in pieces of assorted sizes (an empty one among them) reads back byte for
/// byte in chunks of every size tried: 1 byte, sizes that cut across the pieces written, the
/// image's length, and more than its length. Each chunk carries the image's metadata and the
/// offset asked for, holds at most `max_bytes`, and has `last` set exactly when it reaches the
/// end. A read from the middle returns the bytes from there.
///
/// Why: a leader sends its image in chunks of its own size (InstallSnapshot's `offset` and
/// `done`, §7), which have nothing to do with how the image was written; a chunk cut or
/// joined wrongly gives the follower a corrupt state machine. `last` is `done`: set early, the
/// follower restores a truncated image; never set, the transfer never ends.
///
/// # Panics
///
/// If any chunk is not the right slice of the image with the right metadata, offset and `last`,
/// or the store fails.
pub async fn chunked_image_reads_back_byte_exact<S, F, Fut>(open: F, location: u32)
where
    S: SnapshotStore,
    F: Fn(u32) -> Fut,
    Fut: Future<Output = S>,
{
    const CHECK: &str = "chunked_image_reads_back_byte_exact";
    let meta = snapshot_meta(2, 40, &[1, 2, 3]);
    let image = image_bytes(1, 10_007);
    let mut store = open(location).await;
    write_image(
        CHECK,
        &mut store,
        &meta,
        &image,
        &[1, 0, 7, 4_096, 3, 1_000],
    )
    .await;
    expect_latest(CHECK, "after finishing the image", &mut store, Some(&meta)).await;
    for max_bytes in [1, 7, 1_000, 4_096, 10_006, 10_007, 10_008, 1 << 20] {
        read_image(CHECK, &mut store, max_bytes, &meta, &image).await;
    }
    for (offset, max_bytes) in [(4_097, 1_000), (9_999, 3), (10_000, 100), (10_006, 1)] {
        let action = format!(
            "read({offset}, {max_bytes}) of a {}-byte image",
            image.len()
        );
        let chunk = succeeds(CHECK, &action, store.read(offset, max_bytes).await);
        expect_chunk(CHECK, &action, &chunk, &meta, offset, max_bytes, &image);
    }
}

/// An image with no bytes at all is still an image: it is the latest once finished, and reads
/// as one empty chunk at offset 0 with `last` set; reading past it is
/// [`StorageError::Unavailable`]; after a restart too.
///
/// Why: a state machine with nothing in it may have an empty image, and the snapshot still
/// covers the log up to its last entry. A store that took "no bytes" for "no image" would lose
/// that snapshot, and the node the log prefix it purged.
///
/// # Panics
///
/// If the empty image is not the latest or does not read as one empty, last chunk, or the store
/// fails.
pub async fn empty_image_reads_as_one_last_chunk<S, F, Fut>(open: F, location: u32)
where
    S: SnapshotStore,
    F: Fn(u32) -> Fut,
    Fut: Future<Output = S>,
{
    const CHECK: &str = "empty_image_reads_as_one_last_chunk";
    let meta = snapshot_meta(1, 3, &[1]);
    let mut store = open(location).await;
    let writer = start_image(CHECK, &mut store, &meta).await;
    succeeds(
        CHECK,
        "finishing an image with no bytes",
        writer.finish().await,
    );
    for context in ["", " after a restart"] {
        if !context.is_empty() {
            store = reopen(store, &open, location).await;
        }
        expect_latest(
            CHECK,
            &format!("after finishing an empty image{context}"),
            &mut store,
            Some(&meta),
        )
        .await;
        let action = format!("read(0, 16) of an empty image{context}");
        let chunk = succeeds(CHECK, &action, store.read(0, 16).await);
        expect_chunk(CHECK, &action, &chunk, &meta, 0, 16, &[]);
        unavailable(
            CHECK,
            &format!("read(1, 16) of an empty image{context}"),
            store.read(1, 16).await,
            describe_chunk,
        );
    }
}

/// An image being written is invisible until finished: `latest` and `read` go on answering
/// with what the store held before (nothing, or the previous image), and a writer dropped
/// without finishing, even across a restart, leaves the store as it was.
///
/// Why: an image is only usable whole. A reader that saw one being written, or a node that
/// found a half-written one after a crash, would restore a state machine missing part of its
/// state and trust it to cover a log prefix that has been purged (§7). Hence the contract of
/// [`SnapshotWriter::finish`]: "A crash before this returns leaves the store as it was."
///
/// # Panics
///
/// If an unfinished image is visible, or the store fails.
pub async fn unfinished_image_is_invisible<S, F, Fut>(open: F, location: u32)
where
    S: SnapshotStore,
    F: Fn(u32) -> Fut,
    Fut: Future<Output = S>,
{
    const CHECK: &str = "unfinished_image_is_invisible";
    let mut store = open(location).await;

    // On an empty store: nothing shows while writing, nothing after the writer is dropped.
    let mut writer = start_image(CHECK, &mut store, &snapshot_meta(1, 5, &[1])).await;
    succeeds(
        CHECK,
        "writing 100 bytes of an image",
        writer.write(&image_bytes(2, 100)).await,
    );
    expect_no_image(CHECK, "while the first image is being written", &mut store).await;
    drop(writer);
    expect_no_image(CHECK, "after dropping an unfinished writer", &mut store).await;
    let mut store = reopen(store, &open, location).await;
    expect_no_image(
        CHECK,
        "after dropping an unfinished writer and a restart",
        &mut store,
    )
    .await;

    // Over a finished image: that image stays the latest while a newer one is written.
    let old_meta = snapshot_meta(1, 5, &[1, 2, 3]);
    let old = image_bytes(3, 3_000);
    write_image(CHECK, &mut store, &old_meta, &old, &[1_000]).await;
    let mut writer = start_image(CHECK, &mut store, &snapshot_meta(2, 9, &[1, 2, 3])).await;
    succeeds(
        CHECK,
        "writing half of a newer image",
        writer.write(&image_bytes(4, 1_500)).await,
    );
    expect_latest(
        CHECK,
        "while a newer image is being written",
        &mut store,
        Some(&old_meta),
    )
    .await;
    read_image(CHECK, &mut store, 1_024, &old_meta, &old).await;

    // A crash in the middle: the writer goes, then the store restarts.
    drop(writer);
    let mut store = reopen(store, &open, location).await;
    expect_latest(
        CHECK,
        "after a restart that interrupted a newer image",
        &mut store,
        Some(&old_meta),
    )
    .await;
    read_image(CHECK, &mut store, 1_024, &old_meta, &old).await;
}

/// Finishing an image with a higher last index makes it the latest: `latest` and `read` answer
/// with it (and nothing of the older one, which was longer), after a restart too.
///
/// Why: a node takes a newer snapshot and then purges its log up to it (§7). A store that went
/// on serving the older image would leave the entries between the two snapshots nowhere: not
/// in the log, and not in the image a restart or a lagging follower gets.
///
/// # Panics
///
/// If the newer image is not the latest or does not read back exactly, or the store fails.
pub async fn newer_image_replaces_older<S, F, Fut>(open: F, location: u32)
where
    S: SnapshotStore,
    F: Fn(u32) -> Fut,
    Fut: Future<Output = S>,
{
    const CHECK: &str = "newer_image_replaces_older";
    let old_meta = snapshot_meta(1, 5, &[1, 2, 3]);
    let new_meta = snapshot_meta(2, 9, &[1, 2, 3]);
    let new = image_bytes(6, 2_000);
    let mut store = open(location).await;
    write_image(CHECK, &mut store, &old_meta, &image_bytes(5, 3_000), &[700]).await;
    write_image(CHECK, &mut store, &new_meta, &new, &[300]).await;
    expect_latest(
        CHECK,
        "after finishing a newer image",
        &mut store,
        Some(&new_meta),
    )
    .await;
    read_image(CHECK, &mut store, 512, &new_meta, &new).await;
    read_image(CHECK, &mut store, 1 << 16, &new_meta, &new).await;

    let mut store = reopen(store, &open, location).await;
    expect_latest(
        CHECK,
        "after finishing a newer image and a restart",
        &mut store,
        Some(&new_meta),
    )
    .await;
    read_image(CHECK, &mut store, 512, &new_meta, &new).await;
}

/// An image with a lower last index, started before a newer one and finished after it,
/// finishes without an error and is discarded: the newer image stays the latest, after a
/// restart too.
///
/// Why: a node may start its own snapshot at index 5 while a snapshot at index 9 arrives from
/// its leader and is installed, its log purged up to 9. If the slower, older image then became
/// the latest, a restart would restore the state as of 5 with a log that starts after 9:
/// entries 6 to 9 would be in neither. The older image is not an error, only of no use.
///
/// # Panics
///
/// If the older image replaces the newer, its `finish` fails, or the store fails.
pub async fn older_image_finished_later_is_discarded<S, F, Fut>(open: F, location: u32)
where
    S: SnapshotStore,
    F: Fn(u32) -> Fut,
    Fut: Future<Output = S>,
{
    const CHECK: &str = "older_image_finished_later_is_discarded";
    let old_meta = snapshot_meta(2, 5, &[1, 2, 3]);
    let new_meta = snapshot_meta(3, 9, &[1, 2, 3]);
    let old = image_bytes(7, 4_000);
    let new = image_bytes(8, 2_500);
    let mut store = open(location).await;

    let mut older = start_image(CHECK, &mut store, &old_meta).await;
    succeeds(
        CHECK,
        "writing the first half of the older image",
        older.write(&old[..2_000]).await,
    );
    write_image(CHECK, &mut store, &new_meta, &new, &[1_000]).await;
    succeeds(
        CHECK,
        "writing the second half of the older image",
        older.write(&old[2_000..]).await,
    );
    succeeds(
        CHECK,
        "finishing the older image after the newer one",
        older.finish().await,
    );
    expect_latest(
        CHECK,
        "after finishing an older image after a newer one",
        &mut store,
        Some(&new_meta),
    )
    .await;
    read_image(CHECK, &mut store, 999, &new_meta, &new).await;

    let mut store = reopen(store, &open, location).await;
    expect_latest(
        CHECK,
        "after finishing an older image after a newer one and a restart",
        &mut store,
        Some(&new_meta),
    )
    .await;
    read_image(CHECK, &mut store, 999, &new_meta, &new).await;
}

/// Two images written at once through two writers of the same store, their pieces
/// interleaved, stay apart: neither shows before it is finished, each reads back exactly once
/// finished (the older first, then the newer replacing it), and the newer survives a restart.
///
/// Why: a node can write its own snapshot while it receives one from its leader (the
/// [`SnapshotStore`] contract: "each [`SnapshotWriter`] is independent"). A store that shared a
/// buffer or a file between writers would mix the two images' bytes into a state no node ever
/// had.
///
/// # Panics
///
/// If an image shows before it is finished or does not read back exactly, or the store fails.
pub async fn concurrent_writers_are_independent<S, F, Fut>(open: F, location: u32)
where
    S: SnapshotStore,
    F: Fn(u32) -> Fut,
    Fut: Future<Output = S>,
{
    const CHECK: &str = "concurrent_writers_are_independent";
    let first_meta = snapshot_meta(1, 5, &[1, 2]);
    let second_meta = snapshot_meta(1, 8, &[1, 2, 3]);
    let first = image_bytes(9, 5_000);
    let second = image_bytes(10, 6_001);
    let mut store = open(location).await;
    let mut first_writer = start_image(CHECK, &mut store, &first_meta).await;
    let mut second_writer = start_image(CHECK, &mut store, &second_meta).await;
    for (first_piece, second_piece) in first.chunks(1_000).zip(second.chunks(777)) {
        succeeds(
            CHECK,
            "writing a piece of the first image",
            first_writer.write(first_piece).await,
        );
        succeeds(
            CHECK,
            "writing a piece of the second image",
            second_writer.write(second_piece).await,
        );
    }
    succeeds(
        CHECK,
        "writing the rest of the second image",
        second_writer.write(&second[5 * 777..]).await,
    );
    expect_no_image(CHECK, "while two images are being written", &mut store).await;

    succeeds(
        CHECK,
        "finishing the first image",
        first_writer.finish().await,
    );
    expect_latest(
        CHECK,
        "after finishing the first of two images",
        &mut store,
        Some(&first_meta),
    )
    .await;
    read_image(CHECK, &mut store, 1_500, &first_meta, &first).await;

    succeeds(
        CHECK,
        "finishing the second image",
        second_writer.finish().await,
    );
    expect_latest(
        CHECK,
        "after finishing the second of two images",
        &mut store,
        Some(&second_meta),
    )
    .await;
    read_image(CHECK, &mut store, 1_500, &second_meta, &second).await;

    let mut store = reopen(store, &open, location).await;
    read_image(CHECK, &mut store, 4_096, &second_meta, &second).await;
}

/// The latest image and its metadata (last entry and voters) survive a restart, and a second
/// one; an image finished after the restart then replaces it as usual.
///
/// Why: once a node has purged its log up to a snapshot, the snapshot is the only copy of that
/// prefix (§7): it is persistent state like the log. The voters in its metadata are the
/// configuration as of the snapshot's last entry (the paper's *lastConfig*), which the node
/// needs to know what a majority is when no entry in the log says.
///
/// # Panics
///
/// If the image or its metadata is not recovered exactly, or the store fails.
pub async fn latest_image_survives_reopen<S, F, Fut>(open: F, location: u32)
where
    S: SnapshotStore,
    F: Fn(u32) -> Fut,
    Fut: Future<Output = S>,
{
    const CHECK: &str = "latest_image_survives_reopen";
    let meta = snapshot_meta(3, 20, &[1, 2, 3, 4, 5]);
    let image = image_bytes(11, 70_000);
    let mut store = open(location).await;
    write_image(CHECK, &mut store, &meta, &image, &[16_384]).await;

    for context in ["after a restart", "after a second restart"] {
        store = reopen(store, &open, location).await;
        expect_latest(CHECK, context, &mut store, Some(&meta)).await;
        read_image(CHECK, &mut store, 8_192, &meta, &image).await;
    }

    let newer_meta = snapshot_meta(4, 30, &[1, 2, 3]);
    let newer = image_bytes(12, 1_234);
    write_image(CHECK, &mut store, &newer_meta, &newer, &[100]).await;
    let mut store = reopen(store, &open, location).await;
    expect_latest(
        CHECK,
        "after finishing a newer image after a restart, and another restart",
        &mut store,
        Some(&newer_meta),
    )
    .await;
    read_image(CHECK, &mut store, 8_192, &newer_meta, &newer).await;
}

/// A read at exactly the end of the image returns an empty chunk with `last` set; a read past
/// the end (by one byte, or at offsets near `u64::MAX`) fails with
/// [`StorageError::Unavailable`]. When a shorter image replaces a longer one, an offset that
/// was inside the old image and is past the end of the new one is `Unavailable` too.
///
/// Why: a reader resumes at its offset, and starts over when the metadata changes. A store
/// that answered past the end with an empty chunk not marked `last` would keep the reader
/// looping; one that answered with zeros or stale bytes would hand it a corrupt image. An
/// overflowing offset must not wrap around to the start.
///
/// # Panics
///
/// If such a read succeeds, fails otherwise, or the read at the end is not an empty last chunk.
pub async fn read_past_end_is_unavailable<S, F, Fut>(open: F, location: u32)
where
    S: SnapshotStore,
    F: Fn(u32) -> Fut,
    Fut: Future<Output = S>,
{
    const CHECK: &str = "read_past_end_is_unavailable";
    let meta = snapshot_meta(1, 10, &[1]);
    let image = image_bytes(13, 100);
    let mut store = open(location).await;
    write_image(CHECK, &mut store, &meta, &image, &[]).await;
    let chunk = succeeds(
        CHECK,
        "read(100, 10) of a 100-byte image",
        store.read(100, 10).await,
    );
    expect_chunk(
        CHECK,
        "read(100, 10) of a 100-byte image",
        &chunk,
        &meta,
        100,
        10,
        &image,
    );
    for offset in [101, 1 << 40, u64::MAX - 5, u64::MAX] {
        unavailable(
            CHECK,
            &format!("read({offset}, 10) of a 100-byte image"),
            store.read(offset, 10).await,
            describe_chunk,
        );
    }

    let shorter_meta = snapshot_meta(2, 20, &[1]);
    let shorter = image_bytes(14, 40);
    write_image(CHECK, &mut store, &shorter_meta, &shorter, &[]).await;
    unavailable(
        CHECK,
        "read(50, 10) after a 40-byte image replaced a 100-byte one",
        store.read(50, 10).await,
        describe_chunk,
    );
    let chunk = succeeds(
        CHECK,
        "read(40, 10) of a 40-byte image",
        store.read(40, 10).await,
    );
    expect_chunk(
        CHECK,
        "read(40, 10) of a 40-byte image",
        &chunk,
        &shorter_meta,
        40,
        10,
        &shorter,
    );
}

/// How many bytes [`large_image_round_trips`] writes: 8 MiB.
const LARGE_IMAGE_BYTES: usize = 8 << 20;

/// An 8 MiB image, written in pieces of 65,537 bytes, reads back exactly in 1 MiB chunks and in
/// one read larger than the image, and after a restart in chunks of 1,000,003 bytes.
///
/// Why: an image is the whole state machine, far larger than any log entry or message. A
/// store must not cap it or corrupt it at its buffer, page or file boundaries, which small
/// images never reach.
///
/// # Panics
///
/// If the image does not read back exactly, or the store fails.
pub async fn large_image_round_trips<S, F, Fut>(open: F, location: u32)
where
    S: SnapshotStore,
    F: Fn(u32) -> Fut,
    Fut: Future<Output = S>,
{
    const CHECK: &str = "large_image_round_trips";
    let meta = snapshot_meta(5, 1_000_000, &[1, 2, 3]);
    let image = image_bytes(15, LARGE_IMAGE_BYTES);
    let mut store = open(location).await;
    write_image(CHECK, &mut store, &meta, &image, &[65_537]).await;
    read_image(CHECK, &mut store, 1 << 20, &meta, &image).await;
    read_image(CHECK, &mut store, LARGE_IMAGE_BYTES + 1, &meta, &image).await;

    let mut store = reopen(store, &open, location).await;
    expect_latest(CHECK, "after a restart", &mut store, Some(&meta)).await;
    read_image(CHECK, &mut store, 1_000_003, &meta, &image).await;
}

// ----- Helpers -------------------------------------------------------------------------------

/// Opens the store at `location` and reads back what it holds, as a starting node does.
async fn open_and_recover<S, F, Fut>(open: &F, location: u32, check: &str) -> (S, Recovered)
where
    S: LogStore,
    F: Fn(u32) -> Fut,
    Fut: Future<Output = S>,
{
    let mut store = open(location).await;
    let recovered = succeeds(check, "recover", store.recover().await);
    (store, recovered)
}

/// Simulates a restart: drops the running store first (releasing any file locks), then opens
/// `location` again and recovers.
async fn restart<S, F, Fut>(store: S, open: &F, location: u32, check: &str) -> (S, Recovered)
where
    S: LogStore,
    F: Fn(u32) -> Fut,
    Fut: Future<Output = S>,
{
    drop(store);
    open_and_recover(open, location, check).await
}

#[track_caller]
fn fail(check: &str, expectation: &str) -> ! {
    panic!("store conformance check `{check}` failed: {expectation}")
}

/// The value of a call that must succeed.
#[track_caller]
fn succeeds<T>(check: &str, action: &str, result: Result<T, StorageError>) -> T {
    match result {
        Ok(value) => value,
        Err(error) => fail(
            check,
            &format!("{action} should succeed, but returned an error: {error}"),
        ),
    }
}

/// A call that must be refused with an error.
#[track_caller]
fn refused<T: Debug>(check: &str, action: &str, result: Result<T, StorageError>) {
    if let Ok(value) = result {
        fail(
            check,
            &format!("{action} should be refused with an error, but returned Ok({value:?})"),
        );
    }
}

#[track_caller]
fn expect_eq<T: PartialEq + Debug>(check: &str, expectation: &str, actual: &T, expected: &T) {
    if actual != expected {
        fail(
            check,
            &format!("{expectation}: expected {expected:?}, got {actual:?}"),
        );
    }
}

/// Compares two lists of entries and names the first difference, without printing thousands of
/// entries or megabytes of payload.
#[track_caller]
fn expect_entries(check: &str, context: &str, actual: &[Entry], expected: &[Entry]) {
    let first_difference = actual
        .iter()
        .zip(expected)
        .position(|(actual, expected)| actual != expected);
    if let Some(position) = first_difference {
        let (got, wanted) = (&actual[position], &expected[position]);
        fail(
            check,
            &format!(
                "{context}: entry #{position} of the list should be {}, got {}",
                describe(wanted),
                describe(got)
            ),
        );
    }
    if actual.len() != expected.len() {
        fail(
            check,
            &format!(
                "{context}: expected {} entries ({}), got {} ({})",
                expected.len(),
                describe_span(expected),
                actual.len(),
                describe_span(actual)
            ),
        );
    }
}

/// An entry in a few words: term, index, and payload kind and size (payload bytes only when
/// short).
fn describe(entry: &Entry) -> String {
    let payload = match &entry.payload {
        Payload::Blank => "blank".to_string(),
        Payload::Command(bytes) if bytes.len() <= 16 => format!("command {bytes:?}"),
        Payload::Command(bytes) => format!(
            "command of {} bytes starting {:?}",
            bytes.len(),
            bytes[..16].escape_ascii().to_string()
        ),
        other => format!("{other:?}"),
    };
    format!("{{{} {} {payload}}}", entry.term, entry.index)
}

fn describe_span(entries: &[Entry]) -> String {
    match (entries.first(), entries.last()) {
        (Some(first), Some(last)) => format!("{}..={}", first.index, last.index),
        _ => "none".to_string(),
    }
}

fn hard_state(term: u64, vote: Option<u64>) -> HardState {
    HardState {
        term: Term(term),
        vote: vote.map(NodeId),
    }
}

fn voters(ids: &[u64]) -> BTreeSet<NodeId> {
    ids.iter().copied().map(NodeId).collect()
}

fn blank(term: u64, index: u64) -> Entry {
    Entry {
        term: Term(term),
        index: LogIndex(index),
        payload: Payload::Blank,
    }
}

fn command(term: u64, index: u64, payload: impl Into<raft_core::EntryData>) -> Entry {
    Entry {
        term: Term(term),
        index: LogIndex(index),
        payload: Payload::Command(payload.into()),
    }
}

/// Commands for `indexes` in `term`, each payload naming its term and index, so that an entry
/// from another term or at another index never compares equal.
fn commands(term: u64, indexes: RangeInclusive<u64>) -> Vec<Entry> {
    indexes
        .map(|index| command(term, index, format!("t{term} i{index}").into_bytes()))
        .collect()
}

fn entry_id(term: u64, index: u64) -> EntryId {
    EntryId {
        term: Term(term),
        index: LogIndex(index),
    }
}

/// A call that must fail with [`StorageError::Unavailable`]; `describe` says what it returned
/// instead, in a few words.
#[track_caller]
fn unavailable<T>(
    check: &str,
    action: &str,
    result: Result<T, StorageError>,
    describe: impl FnOnce(&T) -> String,
) {
    match result {
        Err(error) if error.kind() == StorageErrorKind::Unavailable => {}
        Err(error) => fail(
            check,
            &format!("{action} should fail with Unavailable, but failed with: {error}"),
        ),
        Ok(value) => fail(
            check,
            &format!(
                "{action} should fail with Unavailable, but returned {}",
                describe(&value)
            ),
        ),
    }
}

// ----- Writing and reading images in the snapshot store suite ------------------------------

/// Simulates a restart of a snapshot store: drops the running store first (releasing any file
/// locks), then opens `location` again.
async fn reopen<S, F, Fut>(store: S, open: &F, location: u32) -> S
where
    S: SnapshotStore,
    F: Fn(u32) -> Fut,
    Fut: Future<Output = S>,
{
    drop(store);
    open(location).await
}

/// The metadata of a snapshot at `index` of `term` whose voters are `ids`, with learner 99 and
/// (for more than one voter) a change of voters in progress to drop the last of them, so that
/// a store must keep every part of a membership.
fn snapshot_meta(term: u64, index: u64, ids: &[u64]) -> SnapshotMeta {
    let membership = Membership::new(voters(ids))
        .and_then(|m| m.add_learner(NodeId(99)))
        .and_then(|m| match ids.split_last() {
            Some((_, rest)) if !rest.is_empty() => m.enter_joint(voters(rest)),
            _ => Ok(m),
        });
    let membership =
        membership.unwrap_or_else(|error| panic!("the checks name valid memberships: {error}"));
    SnapshotMeta::new(entry_id(term, index), membership)
}

/// `len` bytes that depend on `seed` and on their position (with a period that is no power of
/// two), so that two images, or a shifted or repeated piece of one, never compare equal.
fn image_bytes(seed: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|k| {
            (k.wrapping_mul(7)
                .wrapping_add(k >> 9)
                .wrapping_add(seed.wrapping_mul(101))
                % 251) as u8
        })
        .collect()
}

/// Starts writing an image.
async fn start_image<S: SnapshotStore>(
    check: &str,
    store: &mut S,
    meta: &SnapshotMeta,
) -> Box<dyn SnapshotWriter> {
    succeeds(
        check,
        &format!("create({})", describe_meta(meta)),
        store.create(meta).await,
    )
}

/// Writes `image` in pieces of the sizes in `pieces`, in turn (the last size, or 1 if it is 0,
/// repeating until the image is written; all of it at once when `pieces` is empty), then
/// finishes it.
async fn write_image<S: SnapshotStore>(
    check: &str,
    store: &mut S,
    meta: &SnapshotMeta,
    image: &[u8],
    pieces: &[usize],
) {
    let mut writer = start_image(check, store, meta).await;
    let mut written = 0;
    let mut sizes = pieces.iter().copied();
    let mut size = image.len();
    while written < image.len() {
        // A size of 0 writes an empty piece; it never repeats, so the loop ends.
        size = sizes.next().unwrap_or(size.max(1));
        let end = image.len().min(written + size);
        succeeds(
            check,
            &format!(
                "writing bytes {written}..{end} of the image {}",
                describe_meta(meta)
            ),
            writer.write(&image[written..end]).await,
        );
        written = end;
    }
    succeeds(
        check,
        &format!(
            "finishing the {}-byte image {}",
            image.len(),
            describe_meta(meta)
        ),
        writer.finish().await,
    );
}

/// Reads the latest image from the start in chunks of `max_bytes`, checking each chunk, and
/// compares what it read with `image`.
async fn read_image<S: SnapshotStore>(
    check: &str,
    store: &mut S,
    max_bytes: usize,
    meta: &SnapshotMeta,
    image: &[u8],
) {
    let mut read = Vec::with_capacity(image.len());
    let mut offset = 0_u64;
    // Each chunk but the last holds at least one byte, so this many reads always suffice.
    for _ in 0..=image.len() {
        let action = format!(
            "read({offset}, {max_bytes}) of the {}-byte image {}",
            image.len(),
            describe_meta(meta)
        );
        let chunk = succeeds(check, &action, store.read(offset, max_bytes).await);
        expect_chunk(check, &action, &chunk, meta, offset, max_bytes, image);
        read.extend_from_slice(&chunk.data);
        if chunk.last {
            break;
        }
        offset += chunk.data.len() as u64;
    }
    expect_bytes(
        check,
        &format!(
            "the image {} read in chunks of {max_bytes} bytes",
            describe_meta(meta)
        ),
        &read,
        image,
    );
}

/// Checks one chunk read at `offset` with `max_bytes` from `image`: its metadata and offset,
/// its size, its bytes, and that `last` is set exactly when it reaches the end. A chunk that is
/// not the last must hold at least one byte, or a reader would never get to the end.
#[track_caller]
fn expect_chunk(
    check: &str,
    action: &str,
    chunk: &SnapshotChunk,
    meta: &SnapshotMeta,
    offset: u64,
    max_bytes: usize,
    image: &[u8],
) {
    expect_eq(
        check,
        &format!("{action}: the chunk's metadata"),
        &chunk.meta,
        meta,
    );
    expect_eq(
        check,
        &format!("{action}: the chunk's offset"),
        &chunk.offset,
        &offset,
    );
    if chunk.data.len() > max_bytes {
        fail(
            check,
            &format!(
                "{action}: the chunk should hold at most {max_bytes} bytes, got {}",
                chunk.data.len()
            ),
        );
    }
    let start = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(image.len());
    let end = start.saturating_add(chunk.data.len());
    if end > image.len() {
        fail(
            check,
            &format!(
                "{action}: the chunk runs {} bytes past the end of the {}-byte image",
                end - image.len(),
                image.len()
            ),
        );
    }
    expect_bytes(
        check,
        &format!("{action}: the chunk's bytes"),
        &chunk.data,
        &image[start..end],
    );
    let reaches_end = end == image.len();
    if chunk.last != reaches_end {
        fail(
            check,
            &format!(
                "{action}: the chunk ends at byte {end} of {}, so `last` should be \
                 {reaches_end}, got {}",
                image.len(),
                chunk.last
            ),
        );
    }
    if !chunk.last && chunk.data.is_empty() {
        fail(
            check,
            &format!("{action}: an empty chunk that is not the last makes no progress"),
        );
    }
}

/// Compares two byte strings and names the first difference, without printing megabytes.
#[track_caller]
fn expect_bytes(check: &str, context: &str, actual: &[u8], expected: &[u8]) {
    if let Some(position) = actual.iter().zip(expected).position(|(a, e)| a != e) {
        fail(
            check,
            &format!(
                "{context}: byte {position} should be {}, got {} ({} bytes expected, {} got)",
                expected[position],
                actual[position],
                expected.len(),
                actual.len()
            ),
        );
    }
    if actual.len() != expected.len() {
        fail(
            check,
            &format!(
                "{context}: expected {} bytes, got {}",
                expected.len(),
                actual.len()
            ),
        );
    }
}

/// Checks that the store reports `expected` as its latest image.
async fn expect_latest<S: SnapshotStore>(
    check: &str,
    context: &str,
    store: &mut S,
    expected: Option<&SnapshotMeta>,
) {
    let latest = succeeds(check, &format!("latest() {context}"), store.latest().await);
    expect_eq(
        check,
        &format!("latest() {context}"),
        &latest.as_ref(),
        &expected,
    );
}

/// Checks that the store has no image: `latest` is `None`, and a read is `Unavailable`.
async fn expect_no_image<S: SnapshotStore>(check: &str, context: &str, store: &mut S) {
    expect_latest(check, context, store, None).await;
    unavailable(
        check,
        &format!("read(0, 16) {context}"),
        store.read(0, 16).await,
        describe_chunk,
    );
}

/// Snapshot metadata in a few words: `{t2 i40 voters [1] outgoing [1, 2] learners [99]}`.
fn describe_meta(meta: &SnapshotMeta) -> String {
    let ids = |set: &BTreeSet<NodeId>| set.iter().map(|id| id.0).collect::<Vec<u64>>();
    let m = &meta.membership;
    format!(
        "{{{} {} voters {:?} outgoing {:?} learners {:?}}}",
        meta.last.term,
        meta.last.index,
        ids(m.voters()),
        ids(m.outgoing_voters()),
        ids(m.learners())
    )
}

/// A chunk in a few words, without its bytes.
fn describe_chunk(chunk: &SnapshotChunk) -> String {
    format!(
        "a chunk of {} bytes at offset {} of the image {} (last: {})",
        chunk.data.len(),
        chunk.offset,
        describe_meta(&chunk.meta),
        chunk.last
    )
}
