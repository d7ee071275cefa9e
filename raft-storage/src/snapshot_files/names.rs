//! The names of the files in the store's directory, and what a name says a file is.

use raft_core::{EntryId, LogIndex, Term};

pub(super) const PREFIX: &str = "snapshot-";
pub(super) const IMAGE_SUFFIX: &str = ".snap";
pub(super) const PARTIAL_SUFFIX: &str = ".partial";

pub(super) fn image_name(last: EntryId) -> String {
    format!(
        "{PREFIX}{:020}-{:020}{IMAGE_SUFFIX}",
        last.index.0, last.term.0
    )
}

/// The `.partial` file of an image being written: `number` is unique within the process, and
/// the name holds the process's id. A dropped writer's file is removed on the blocking pool,
/// which may be after the store (and with it the directory's lock) is gone; a name no other
/// store will ever use again means that late removal can only take the writer's own file, never
/// one of a store opened on the directory since, in this process or another.
pub(super) fn partial_name(last: EntryId, number: u64) -> String {
    format!(
        "{PREFIX}{:020}-{:020}-{}-{number}{PARTIAL_SUFFIX}",
        last.index.0,
        last.term.0,
        std::process::id()
    )
}

/// What a file in the directory is, by its name.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Name {
    Image(EntryId),
    Partial,
    /// Named like an image, but the name does not parse.
    Malformed,
    /// Not the store's (the lock file, or anything else).
    Other,
}

pub(super) fn classify(name: &str) -> Name {
    let Some(rest) = name.strip_prefix(PREFIX) else {
        return Name::Other;
    };
    if rest.ends_with(PARTIAL_SUFFIX) {
        return Name::Partial;
    }
    let Some(numbers) = rest.strip_suffix(IMAGE_SUFFIX) else {
        return Name::Other;
    };
    let parse = |digits: &str| {
        (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
            .then(|| digits.parse::<u64>().ok())
            .flatten()
    };
    match numbers.split_once('-') {
        Some((index, term)) => match (parse(index), parse(term)) {
            (Some(index), Some(term)) => Name::Image(EntryId {
                term: Term(term),
                index: LogIndex(index),
            }),
            _ => Name::Malformed,
        },
        None => Name::Malformed,
    }
}
