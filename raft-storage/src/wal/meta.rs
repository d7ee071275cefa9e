//! The data directory's metadata file: the format version, the hard state, the voters and
//! where the log starts, replaced as a whole and atomically (see [`super::fs::Fs::replace`]).
//!
//! ```text
//! | magic "RAFTMETA" | version: u32 LE | length: u32 LE | crc: u32 LE | body: `length` bytes |
//! body: term u64 | vote u64 (0: none) | log_start index u64 | log_start term u64 |
//!       voters saved: u8 (0 or 1) | voter count u32 | voter ids u64 ... |
//!       failover count u32 | failovers ...
//! failover: term u64 | old leader u64 (0: none) | new leader u64 | trigger u8 | at_ms u64 |
//!           unapplied saved: u8 (0 or 1) | unapplied u64
//! ```
//!
//! Triggers: 0 election, 1 transfer, 2 observed.
//!
//! All integers little-endian; `crc` is the CRC-32C of the body.

use raft_core::node::{Failover, FailoverTrigger};
use raft_core::{EntryId, HardState, LogIndex, NodeId, Term};
use std::collections::BTreeSet;

/// The first bytes of the metadata file.
pub(crate) const MAGIC: &[u8; 8] = b"RAFTMETA";

/// The version of the on-disk format this code writes and reads: the metadata file, the
/// segments and the records. Any other version is refused.
pub(crate) const FORMAT_VERSION: u32 = 1;

const PREFIX_BYTES: usize = 8 + 4 + 4 + 4;

/// What the metadata file holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Meta {
    pub(crate) hard_state: HardState,
    pub(crate) voters: Option<BTreeSet<NodeId>>,
    /// The last entry purged (index 0 when nothing was).
    pub(crate) log_start: EntryId,
    /// The history of leadership changes last saved.
    pub(crate) failovers: Vec<Failover>,
}

/// Why the metadata file cannot be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum MetaError {
    /// Written by another version of the format.
    Version(u32),
    /// Not a metadata file, or damaged.
    Corrupt(&'static str),
}

impl Meta {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(64);
        body.extend_from_slice(&self.hard_state.term.0.to_le_bytes());
        body.extend_from_slice(&self.hard_state.vote.map_or(0, |n| n.0).to_le_bytes());
        body.extend_from_slice(&self.log_start.index.0.to_le_bytes());
        body.extend_from_slice(&self.log_start.term.0.to_le_bytes());
        match &self.voters {
            None => {
                body.push(0);
                body.extend_from_slice(&0u32.to_le_bytes());
            }
            Some(voters) => {
                body.push(1);
                let count = u32::try_from(voters.len()).unwrap_or(u32::MAX);
                body.extend_from_slice(&count.to_le_bytes());
                for voter in voters.iter().take(count as usize) {
                    body.extend_from_slice(&voter.0.to_le_bytes());
                }
            }
        }
        let count = u32::try_from(self.failovers.len()).unwrap_or(u32::MAX);
        body.extend_from_slice(&count.to_le_bytes());
        for failover in self.failovers.iter().take(count as usize) {
            body.extend_from_slice(&failover.term.0.to_le_bytes());
            body.extend_from_slice(&failover.old_leader.map_or(0, |n| n.0).to_le_bytes());
            body.extend_from_slice(&failover.new_leader.0.to_le_bytes());
            body.push(match failover.trigger {
                FailoverTrigger::Election => 0,
                FailoverTrigger::Transfer => 1,
                FailoverTrigger::MembershipChange => 3,
                // A cause this format does not know yet is kept as the most general one.
                _ => 2,
            });
            body.extend_from_slice(&failover.at_ms.to_le_bytes());
            match failover.new_leader_unapplied_entries {
                None => body.extend_from_slice(&[0; 9]),
                Some(unapplied) => {
                    body.push(1);
                    body.extend_from_slice(&unapplied.to_le_bytes());
                }
            }
        }
        let mut out = Vec::with_capacity(PREFIX_BYTES + body.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        let length = u32::try_from(body.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&length.to_le_bytes());
        out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
        out.extend_from_slice(&body);
        out
    }

    pub(crate) fn decode(data: &[u8]) -> Result<Meta, MetaError> {
        if data.get(..8) != Some(&MAGIC[..]) {
            return Err(MetaError::Corrupt("not a metadata file"));
        }
        let mut reader = Reader {
            data,
            at: MAGIC.len(),
        };
        let version = reader.u32()?;
        if version != FORMAT_VERSION {
            return Err(MetaError::Version(version));
        }
        let length = reader.u32()? as usize;
        let crc = reader.u32()?;
        let body = data
            .get(PREFIX_BYTES..)
            .filter(|body| body.len() == length)
            .ok_or(MetaError::Corrupt("the length does not match the file"))?;
        if crc32c::crc32c(body) != crc {
            return Err(MetaError::Corrupt("bad checksum"));
        }
        let mut reader = Reader { data: body, at: 0 };
        let term = Term(reader.u64()?);
        let vote = match reader.u64()? {
            0 => None,
            id => Some(NodeId(id)),
        };
        let log_start = EntryId {
            index: LogIndex(reader.u64()?),
            term: Term(reader.u64()?),
        };
        let saved = reader.u8()?;
        let count = reader.u32()?;
        let voters = match saved {
            0 => None,
            1 => {
                let mut voters = BTreeSet::new();
                for _ in 0..count {
                    voters.insert(NodeId(reader.u64()?));
                }
                Some(voters)
            }
            _ => return Err(MetaError::Corrupt("bad voters flag")),
        };
        let count = reader.u32()?;
        let mut failovers = Vec::new();
        for _ in 0..count {
            let term = Term(reader.u64()?);
            let old_leader = match reader.u64()? {
                0 => None,
                id => Some(NodeId(id)),
            };
            let new_leader = NodeId(reader.u64()?);
            let trigger = match reader.u8()? {
                0 => FailoverTrigger::Election,
                1 => FailoverTrigger::Transfer,
                2 => FailoverTrigger::Observed,
                3 => FailoverTrigger::MembershipChange,
                _ => return Err(MetaError::Corrupt("unknown failover trigger")),
            };
            let at_ms = reader.u64()?;
            let saved = reader.u8()?;
            let unapplied = reader.u64()?;
            let mut failover = Failover::new(term, old_leader, new_leader, trigger, at_ms);
            failover.new_leader_unapplied_entries = match saved {
                0 => None,
                1 => Some(unapplied),
                _ => return Err(MetaError::Corrupt("bad unapplied flag")),
            };
            failovers.push(failover);
        }
        if reader.at != body.len() {
            return Err(MetaError::Corrupt("bytes after the failovers"));
        }
        Ok(Meta {
            hard_state: HardState { term, vote },
            voters,
            log_start,
            failovers,
        })
    }
}

/// Reads little-endian integers from a byte slice, failing at its end.
pub(crate) struct Reader<'a> {
    pub(crate) data: &'a [u8],
    pub(crate) at: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], MetaError> {
        let bytes = self
            .data
            .get(self.at..self.at + N)
            .and_then(|b| <[u8; N]>::try_from(b).ok())
            .ok_or(MetaError::Corrupt("ends early"))?;
        self.at += N;
        Ok(bytes)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, MetaError> {
        Ok(self.take::<1>()?[0])
    }

    pub(crate) fn u32(&mut self) -> Result<u32, MetaError> {
        Ok(u32::from_le_bytes(self.take()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, MetaError> {
        Ok(u64::from_le_bytes(self.take()?))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // test code: a panic is the failure report
mod tests {
    use super::*;

    fn sample() -> Meta {
        Meta {
            hard_state: HardState {
                term: Term(7),
                vote: Some(NodeId(3)),
            },
            voters: Some([NodeId(1), NodeId(2), NodeId(3)].into()),
            log_start: EntryId {
                index: LogIndex(100),
                term: Term(6),
            },
            failovers: vec![
                Failover::new(Term(5), None, NodeId(2), FailoverTrigger::Election, 10),
                {
                    let mut f = Failover::new(
                        Term(7),
                        Some(NodeId(2)),
                        NodeId(3),
                        FailoverTrigger::Transfer,
                        999,
                    );
                    f.new_leader_unapplied_entries = Some(4);
                    f
                },
            ],
        }
    }

    #[test]
    fn metadata_round_trips() {
        for meta in [Meta::default(), sample()] {
            assert_eq!(Meta::decode(&meta.encode()), Ok(meta));
        }
    }

    #[test]
    fn another_version_is_refused_by_number() {
        let mut data = sample().encode();
        data[8..12].copy_from_slice(&2u32.to_le_bytes());
        assert_eq!(Meta::decode(&data), Err(MetaError::Version(2)));
    }

    #[test]
    fn every_flipped_bit_and_every_truncation_is_refused() {
        let clean = sample().encode();
        for byte in 0..clean.len() {
            for bit in 0..8 {
                let mut data = clean.clone();
                data[byte] ^= 1 << bit;
                assert!(Meta::decode(&data).is_err(), "bit {bit} of byte {byte}");
            }
        }
        for len in 0..clean.len() {
            assert!(Meta::decode(&clean[..len]).is_err(), "cut at {len}");
        }
    }
}
