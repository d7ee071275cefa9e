//! Record framing for the write-ahead log.
//!
//! ```text
//! | length: u32 LE | crc: u32 LE | kind: u8 | body: `length` bytes |
//! ```
//!
//! `crc` is the CRC-32C of the kind byte and the body. Kind 0 is never written, so a header of
//! zero bytes (preallocated space that was never written) is never a record.
//!
//! # Where the records stop: the decision table
//!
//! A scan reads records from the start of a segment until something stops it. What stopped it
//! is a [`Finding`]; where it is, a [`Place`]: at the **tail** (in the last segment, with only
//! zero bytes, or nothing, after the damaged record) or **elsewhere**. The [`Verdict`]:
//!
//! | finding | at the tail of the last segment | elsewhere |
//! |---|---|---|
//! | only zero bytes remain | end of the log | end of the segment (the next one continues it) |
//! | fewer bytes than a header | torn write: cut here | corrupt |
//! | the header declares more bytes than remain | torn write: cut here | corrupt |
//! | a length above [`MAX_BODY_BYTES`] | torn write: cut here | corrupt |
//! | an unknown kind | torn write: cut here | corrupt |
//! | a checksum that does not match | torn write: cut here | corrupt |
//!
//! A torn write can only be the batch that was being written when the process died: it was
//! never made durable, so never acknowledged, and cutting it loses nothing promised. Damage
//! with valid data after it, or in a sealed segment, is corruption: the store refuses to open
//! and names the file and the offset; it never skips a record. (Damage to the very last record
//! after it was made durable looks like a torn write; no framing can tell them apart.)

/// Bytes of a record's header: length, CRC, kind.
pub(crate) const HEADER_BYTES: usize = 9;

/// The largest body a record may have. A length above it is damage, not a record.
pub(crate) const MAX_BODY_BYTES: u32 = 256 << 20;

/// What a record holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Kind {
    /// A log entry.
    Entry = 1,
    /// Every entry at or after the index in the body is removed (a suffix truncation that
    /// survives a crash in the middle of it: entries written after it replace the removed ones).
    Truncate = 2,
}

impl Kind {
    fn from_byte(byte: u8) -> Option<Kind> {
        match byte {
            1 => Some(Kind::Entry),
            2 => Some(Kind::Truncate),
            _ => None,
        }
    }
}

/// Why a record cannot be framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TooLarge(pub(crate) usize);

/// Appends one record to `out` (the tests' way of writing records).
#[cfg(test)]
pub(crate) fn encode(kind: Kind, body: &[u8], out: &mut Vec<u8>) -> Result<(), TooLarge> {
    encode_with(kind, body.len(), out, |out| out.extend_from_slice(body))
}

/// Appends one record of `body_len` bytes of body to `out`, the body written in place by
/// `write_body` (so it is not built elsewhere first and copied).
pub(crate) fn encode_with(
    kind: Kind,
    body_len: usize,
    out: &mut Vec<u8>,
    write_body: impl FnOnce(&mut Vec<u8>),
) -> Result<(), TooLarge> {
    let length = u32::try_from(body_len)
        .ok()
        .filter(|&l| l <= MAX_BODY_BYTES)
        .ok_or(TooLarge(body_len))?;
    let start = out.len();
    out.reserve(HEADER_BYTES + body_len);
    out.extend_from_slice(&length.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.push(kind as u8);
    write_body(out);
    debug_assert_eq!(
        out.len(),
        start + HEADER_BYTES + body_len,
        "the body's length"
    );
    let crc = checksum(kind as u8, &out[start + HEADER_BYTES..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

fn checksum(kind: u8, body: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&[kind]), body)
}

/// What stopped a scan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Finding {
    /// Only zero bytes remain.
    ZeroFill,
    /// Fewer bytes remain than a header, not all zero.
    ShortHeader,
    /// The header declares more bytes than remain.
    ShortBody,
    /// A length above [`MAX_BODY_BYTES`].
    ImpossibleLength,
    /// A kind that is not one of [`Kind`].
    UnknownKind,
    /// The checksum does not match the kind and body.
    BadChecksum,
}

/// Where a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Place {
    /// In the last segment, with only zero bytes (or nothing) after the damaged record.
    Tail,
    /// Anywhere else: a sealed segment, or valid-looking data after the damage.
    Elsewhere,
}

/// What recovery does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The records end here; what follows was never written.
    End,
    /// A torn write: cut the segment here (it was never acknowledged).
    Cut,
    /// Corruption: refuse to open, naming the file and the offset.
    Corrupt,
}

/// The decision table of the module documentation, as the code follows it.
pub(crate) const DECISIONS: &[(Finding, Place, Verdict)] = &[
    (Finding::ZeroFill, Place::Tail, Verdict::End),
    (Finding::ZeroFill, Place::Elsewhere, Verdict::End),
    (Finding::ShortHeader, Place::Tail, Verdict::Cut),
    (Finding::ShortHeader, Place::Elsewhere, Verdict::Corrupt),
    (Finding::ShortBody, Place::Tail, Verdict::Cut),
    (Finding::ShortBody, Place::Elsewhere, Verdict::Corrupt),
    (Finding::ImpossibleLength, Place::Tail, Verdict::Cut),
    (
        Finding::ImpossibleLength,
        Place::Elsewhere,
        Verdict::Corrupt,
    ),
    (Finding::UnknownKind, Place::Tail, Verdict::Cut),
    (Finding::UnknownKind, Place::Elsewhere, Verdict::Corrupt),
    (Finding::BadChecksum, Place::Tail, Verdict::Cut),
    (Finding::BadChecksum, Place::Elsewhere, Verdict::Corrupt),
];

/// The verdict for `finding` at `place`.
pub(crate) fn verdict(finding: Finding, place: Place) -> Verdict {
    DECISIONS
        .iter()
        .find(|&&(f, p, _)| f == finding && p == place)
        .map_or(Verdict::Corrupt, |&(_, _, v)| v)
}

/// One record read back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Record<'a> {
    pub(crate) kind: Kind,
    pub(crate) body: &'a [u8],
    /// Where its header starts in the segment.
    pub(crate) offset: usize,
}

/// What a scan of one segment's bytes found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Scan<'a> {
    /// The records before the scan stopped, in order.
    pub(crate) records: Vec<Record<'a>>,
    /// Where it stopped, why, and what recovery does about it (`None`: at the end of the
    /// bytes, after a whole record).
    pub(crate) stop: Option<(usize, Finding, Verdict)>,
}

/// Reads the records of a segment. `last_segment`: it is the segment being written, where a
/// torn write may end the data.
pub(crate) fn scan(data: &[u8], last_segment: bool) -> Scan<'_> {
    let mut records = Vec::new();
    let mut offset = 0;
    while offset < data.len() {
        let rest = &data[offset..];
        let (finding, extent) = match read_one(rest) {
            Ok((kind, body)) => {
                records.push(Record { kind, body, offset });
                offset += HEADER_BYTES + body.len();
                continue;
            }
            Err(found) => found,
        };
        let after = rest.get(extent..).unwrap_or(&[]);
        let place = if last_segment && after.iter().all(|&b| b == 0) {
            Place::Tail
        } else {
            Place::Elsewhere
        };
        return Scan {
            records,
            stop: Some((offset, finding, verdict(finding, place))),
        };
    }
    Scan {
        records,
        stop: None,
    }
}

/// One record at the start of `rest`, or what is wrong there and how many bytes the damaged
/// record claims (the extent after which the rest of the segment is looked at).
fn read_one(rest: &[u8]) -> Result<(Kind, &[u8]), (Finding, usize)> {
    if rest.iter().all(|&b| b == 0) {
        return Err((Finding::ZeroFill, rest.len()));
    }
    let Some(header) = rest.get(..HEADER_BYTES) else {
        return Err((Finding::ShortHeader, rest.len()));
    };
    let word = |at: usize| {
        u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    let (length, crc, kind) = (word(0), word(4), header[8]);
    if length > MAX_BODY_BYTES {
        return Err((Finding::ImpossibleLength, HEADER_BYTES));
    }
    let end = HEADER_BYTES + length as usize;
    let Some(body) = rest.get(HEADER_BYTES..end) else {
        return Err((Finding::ShortBody, rest.len()));
    };
    let Some(kind_of) = Kind::from_byte(kind) else {
        return Err((Finding::UnknownKind, end));
    };
    if checksum(kind, body) != crc {
        return Err((Finding::BadChecksum, end));
    }
    Ok((kind_of, body))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // test code: a panic is the failure report
mod tests {
    use super::*;

    fn segment(bodies: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for body in bodies {
            encode(Kind::Entry, body, &mut out).unwrap();
        }
        out
    }

    #[test]
    fn records_round_trip_with_their_offsets() {
        let mut data = segment(&[b"one", b"", b"three"]);
        encode(Kind::Truncate, &7u64.to_le_bytes(), &mut data).unwrap();
        let scan = scan(&data, true);
        assert_eq!(scan.stop, None);
        let bodies: Vec<&[u8]> = scan.records.iter().map(|r| r.body).collect();
        assert_eq!(bodies, [&b"one"[..], b"", b"three", &7u64.to_le_bytes()]);
        assert_eq!(scan.records[3].kind, Kind::Truncate);
        assert_eq!(scan.records[1].offset, HEADER_BYTES + 3);
    }

    /// Scans a segment whose third record shows `finding`, followed by a valid record
    /// (`trailing_data`) or by zeros, in the last segment or a sealed one.
    fn damaged(finding: Finding, trailing_data: bool, last_segment: bool) -> Scan<'static> {
        let mut data = segment(&[b"alpha", b"beta"]);
        let at = data.len();
        match finding {
            Finding::ZeroFill => data.extend_from_slice(&[0; 64]),
            Finding::ShortHeader => data.extend_from_slice(&[5, 0, 0]),
            Finding::ShortBody => {
                encode(Kind::Entry, b"gamma", &mut data).unwrap();
                data.truncate(data.len() - 2);
            }
            Finding::ImpossibleLength => {
                // A header whose length was torn: no body can be found.
                data.extend_from_slice(&(MAX_BODY_BYTES + 1).to_le_bytes());
                data.extend_from_slice(&[0xab; 4]);
                data.push(Kind::Entry as u8);
            }
            Finding::UnknownKind => {
                encode(Kind::Entry, b"gamma", &mut data).unwrap();
                data[at + 8] = 9;
            }
            Finding::BadChecksum => {
                encode(Kind::Entry, b"gamma", &mut data).unwrap();
                let last = data.len() - 1;
                data[last] ^= 0x10;
            }
        }
        // A short record is where the bytes end; the others are followed by a valid record
        // or by zeros.
        let short = matches!(finding, Finding::ShortHeader | Finding::ShortBody);
        if trailing_data && !short && finding != Finding::ZeroFill {
            encode(Kind::Entry, b"delta", &mut data).unwrap();
        } else if !short {
            data.extend_from_slice(&[0; 16]);
        }
        let leaked: &'static [u8] = Box::leak(data.into_boxed_slice());
        let scan = scan(leaked, last_segment);
        assert_eq!(
            scan.records.len(),
            2,
            "{finding:?}: the records before it are read"
        );
        assert_eq!(scan.stop.map(|(o, f, _)| (o, f)), Some((at, finding)));
        scan
    }

    /// Every row of the decision table, reproduced on bytes: the scan stops at the damaged
    /// record with that finding, and the verdict is the row's.
    #[test]
    fn every_row_of_the_decision_table_holds_on_real_bytes() {
        for &(finding, place, expected) in DECISIONS {
            let scans = match place {
                // In the last segment with only zeros after it.
                Place::Tail => vec![damaged(finding, false, true)],
                // In a sealed segment; and, where the finding allows it, in the last segment
                // with a valid record after it.
                Place::Elsewhere => {
                    let mut scans = vec![damaged(finding, false, false)];
                    if !matches!(
                        finding,
                        Finding::ZeroFill | Finding::ShortHeader | Finding::ShortBody
                    ) {
                        scans.push(damaged(finding, true, true));
                    }
                    scans
                }
            };
            for scan in scans {
                assert_eq!(
                    scan.stop.map(|(_, _, v)| v),
                    Some(expected),
                    "{finding:?} {place:?}"
                );
            }
        }
        assert_eq!(DECISIONS.len(), 12, "every finding in both places");
    }

    /// The rule the table encodes: damage is cut off only at the tail of the last segment, and
    /// anywhere else refuses the open; only zero fill ends records quietly.
    #[test]
    fn the_table_never_skips_damage() {
        for &(finding, place, verdict) in DECISIONS {
            let expected = match (finding, place) {
                (Finding::ZeroFill, _) => Verdict::End,
                (_, Place::Tail) => Verdict::Cut,
                (_, Place::Elsewhere) => Verdict::Corrupt,
            };
            assert_eq!(verdict, expected, "{finding:?} {place:?}");
        }
    }

    /// No single flipped bit in a sealed segment goes unnoticed: the scan either stops with
    /// corruption or reads every record back unchanged (a flip in preallocated zeros after the
    /// last record is corruption too, since it is not zero fill).
    #[test]
    fn a_flipped_bit_in_a_sealed_segment_is_always_caught() {
        let clean = segment(&[b"first record", b"second", b"third and last"]);
        for byte in 0..clean.len() {
            for bit in 0..8 {
                let mut data = clean.clone();
                data[byte] ^= 1 << bit;
                let scan = scan(&data, false);
                assert_eq!(
                    scan.stop.map(|(_, _, v)| v),
                    Some(Verdict::Corrupt),
                    "bit {bit} of byte {byte}"
                );
            }
        }
    }

    #[test]
    fn a_body_too_large_is_refused() {
        let mut out = Vec::new();
        let big = vec![0u8; MAX_BODY_BYTES as usize + 1];
        assert_eq!(
            encode(Kind::Entry, &big, &mut out),
            Err(TooLarge(big.len()))
        );
        assert!(out.is_empty());
    }
}
