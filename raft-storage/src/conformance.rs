//! A conformance suite for [`LogStore`]: written once, run against every implementation.
//!
//! Raft's safety argument assumes that what a node wrote to stable storage before it answered
//! an RPC is still there, unchanged, after it restarts (Figure 2, "Persistent state on all
//! servers ... updated on stable storage before responding to RPCs"). The protocol cannot see a
//! store that forgets a vote, reorders entries or keeps a conflicting suffix; it just loses
//! safety. Each check below states one thing the protocol relies on, and the reason.
//!
//! # Using it
//!
//! The suite is given a function `open(location)` that returns a store over the data kept at
//! `location`: an empty store the first time a location number is seen, and the same data
//! (a "restart") when the number comes again. The old handle is always dropped before a
//! location is opened again, so a store that locks its files can be tested too. For a file
//! store, a location is a directory under a temporary directory; for [`MemLogStore`], a clone
//! of the store kept for that number.
//!
//! [`run`] runs every check, each on its own location number (0, 1, 2, ...) so that the checks
//! are independent. Each check is also a public function taking `open` and a fresh location,
//! to run one on its own.
//!
//! ```
//! use raft_storage::{MemLogStore, conformance};
//! use std::collections::BTreeMap;
//! use std::sync::{Mutex, PoisonError};
//!
//! let stores: Mutex<BTreeMap<u32, MemLogStore>> = Mutex::default();
//! let open = |location: u32| {
//!     let mut stores = stores.lock().unwrap_or_else(PoisonError::into_inner);
//!     std::future::ready(stores.entry(location).or_default().clone())
//! };
//! let runtime = tokio::runtime::Builder::new_current_thread().build()?;
//! runtime.block_on(conformance::run(open));
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

use raft_core::node::{LogStore, Recovered, StorageError};
use raft_core::{Entry, EntryId, HardState, LogIndex, NodeId, Payload, Term};
use std::collections::BTreeSet;
use std::fmt::Debug;
use std::ops::RangeInclusive;

/// Runs every check of the suite against the store that `open` returns, each check on its own
/// location number, counting from 0.
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

/// Blank entries and commands (empty, every byte value, bytes that look like framing, and one
/// larger than 64 KiB) come back byte for byte, and a blank entry stays distinct from an empty
/// command.
///
/// Why: a blank entry is the no-op a new leader commits at the start of its term (§5.4.2,
/// dissertation §6.4); an empty command is a user's command. Confusing the two would skip a
/// command or apply one nobody proposed, and a changed byte would make replicas' state
/// machines diverge, the failure Raft exists to prevent.
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
    ];

    let (mut store, _) = open_and_recover(&open, location, CHECK).await;
    succeeds(
        CHECK,
        "writing blank and command entries",
        store.write(None, entries.clone()).await,
    );
    let read = succeeds(
        CHECK,
        "read(1, 8)",
        store.read(LogIndex(1), LogIndex(8)).await,
    );
    expect_entries(CHECK, "read(1, 8) of assorted payloads", &read, &entries);

    let (_store, recovered) = restart(store, &open, location, CHECK).await;
    expect_entries(
        CHECK,
        "recovered assorted payloads",
        &recovered.entries,
        &entries,
    );
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
    panic!("log store conformance check `{check}` failed: {expectation}")
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
