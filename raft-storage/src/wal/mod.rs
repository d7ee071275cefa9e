//! The durable log store and the layers it is built from.
//!
//! * [`fs`] — the filesystem seam: the real filesystem or turmoil's simulated one.
//! * [`record`] — how one record is framed on disk (length, CRC-32C, kind, body), and what a
//!   scan of a segment's bytes concludes where the records stop: the end of the log, a torn
//!   write to cut off, or corruption to refuse. The conclusions are a decision table, written
//!   as data ([`record::DECISIONS`]) that the code follows and the tests walk.
//! * [`segment`] — segment files: names, headers.
//! * [`meta`] — the metadata file: format version, hard state, voters, log start.
//! * [`log`] — the log itself: staging, group commit, purging, recovery, poisoning.
//! * [`store`] — [`FileLogStore`], the `LogStore` over it, with its writer thread.

pub(crate) mod fs;
pub(crate) mod log;
pub(crate) mod meta;
pub(crate) mod record;
pub(crate) mod recovery;
pub(crate) mod segment;
pub(crate) mod store;

pub use store::{FileLogOptions, FileLogStore};
