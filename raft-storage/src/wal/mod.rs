//! The write-ahead log's building blocks, below the file store that will use them.
//!
//! * [`record`] — how one record is framed on disk (length, CRC-32C, kind, body), and what a
//!   scan of a segment's bytes concludes where the records stop: the end of the log, a torn
//!   write to cut off, or corruption to refuse. The conclusions are a decision table, written
//!   as data ([`record::DECISIONS`]) that the code follows and the tests walk.

// The file store built on these layers comes next; until it does, only the tests use them.
#![allow(dead_code)]

pub(crate) mod record;
