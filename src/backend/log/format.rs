//! The on-disk format: file names, the file header with its format version, and the
//! record frame.
//!
//! ```text
//! file   := header frame* zeros*
//! header := magic "SESSNDB\0" (8) | format version u32 | kind u8 | sequence u64 | crc32 u32
//! frame  := length u32 | crc32 u32 | type u8 | payload (length bytes, bincode)
//! ```
//!
//! All integers are little-endian. A frame's CRC covers its length, type and payload,
//! so a damaged length is caught too. The active segment is zero-filled ahead of its
//! records (see [`crate::backend::log::segment`]); all-zero bytes never checksum as a frame, so
//! they end the log. `kind` is 0 for a segment (appended to) and 1 for
//! a base (the compacted live set covering every segment up to its sequence).
//!
//! Format versions: 1, the files alone (which files make up the log, and where each
//! ends, inferred from what is there); 2, the same files plus a `MANIFEST` naming them
//! and the length of every sealed one ([`crate::backend::log::manifest`]). A store written by
//! version 1 opens as before and is upgraded: its next files are written as version 2,
//! and a manifest names them all; 3, the same as 2 with one more record type (a user's
//! not-before time), so that a build that would not understand it refuses the store
//! instead of calling it damaged; 4, three more (a session's sign-in factors, its
//! device, and the image of a session that has either), for the same reason.

use std::path::{Path, PathBuf};

/// The newest format version this build writes and reads.
pub(crate) const FORMAT_VERSION: u32 = 4;
/// The first format version whose store keeps a manifest: a file of this version or
/// later in a directory without one means the manifest was lost.
pub(crate) const MANIFEST_SINCE: u32 = 2;
pub(crate) const MAGIC: [u8; 8] = *b"SESSNDB\0";
pub(crate) const HEADER_LEN: usize = 8 + 4 + 1 + 8 + 4;
pub(crate) const FRAME_HEADER_LEN: usize = 4 + 4 + 1;

/// What a log file is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FileKind {
    Segment,
    Base,
}

impl FileKind {
    fn byte(self) -> u8 {
        match self {
            FileKind::Segment => 0,
            FileKind::Base => 1,
        }
    }
}

pub(crate) fn segment_name(seq: u64) -> String {
    file_name("seg-", seq)
}

pub(crate) fn base_name(seq: u64) -> String {
    file_name("base-", seq)
}

/// `{prefix}{seq:016x}.log`, without the formatting machinery: names are made at every
/// open, roll and compaction (and, in the fuzzers, thousands of times a second).
fn file_name(prefix: &str, seq: u64) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut name = String::with_capacity(prefix.len() + 20);
    name.push_str(prefix);
    for shift in (0..16).rev() {
        name.push(char::from(HEX[((seq >> (shift * 4)) & 0xf) as usize]));
    }
    name.push_str(".log");
    name
}

/// Parses a file name into its kind and sequence; `None` for anything else.
pub(crate) fn parse_name(name: &str) -> Option<(FileKind, u64)> {
    let (kind, rest) = if let Some(r) = name.strip_prefix("seg-") {
        (FileKind::Segment, r)
    } else if let Some(r) = name.strip_prefix("base-") {
        (FileKind::Base, r)
    } else {
        return None;
    };
    let hex = rest.strip_suffix(".log")?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok().map(|seq| (kind, seq))
}

pub(crate) fn path_of(dir: &Path, kind: FileKind, seq: u64) -> PathBuf {
    dir.join(match kind {
        FileKind::Segment => segment_name(seq),
        FileKind::Base => base_name(seq),
    })
}

pub(crate) fn encode_header(kind: FileKind, seq: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[12] = kind.byte();
    h[13..21].copy_from_slice(&seq.to_le_bytes());
    let crc = crc32fast::hash(&h[..21]);
    h[21..25].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Why a header was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum HeaderError {
    /// Shorter than a header (a file created just before a crash).
    Short,
    /// Not a sessiondb log file, or damaged.
    Damaged(&'static str),
    /// Written by a newer format version.
    Newer(u32),
}

/// What a valid header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    /// The format version the file was written by.
    pub(crate) version: u32,
    /// The file's sequence number.
    pub(crate) seq: u64,
}

/// Checks a header and returns what it says.
pub(crate) fn decode_header(bytes: &[u8], kind: FileKind) -> Result<Header, HeaderError> {
    if bytes.len() < HEADER_LEN {
        return Err(HeaderError::Short);
    }
    let h = &bytes[..HEADER_LEN];
    if h[..8] != MAGIC {
        return Err(HeaderError::Damaged("bad magic number"));
    }
    let crc = u32::from_le_bytes(h[21..25].try_into().expect("4 bytes"));
    if crc != crc32fast::hash(&h[..21]) {
        return Err(HeaderError::Damaged("header checksum mismatch"));
    }
    let version = u32::from_le_bytes(h[8..12].try_into().expect("4 bytes"));
    if version > FORMAT_VERSION {
        return Err(HeaderError::Newer(version));
    }
    if version == 0 {
        return Err(HeaderError::Damaged("format version 0"));
    }
    if h[12] != kind.byte() {
        return Err(HeaderError::Damaged("file kind does not match its name"));
    }
    Ok(Header {
        version,
        seq: u64::from_le_bytes(h[13..21].try_into().expect("8 bytes")),
    })
}

/// Appends one frame to `out`.
pub(crate) fn encode_frame(out: &mut Vec<u8>, kind: u8, payload: &[u8]) {
    encode_frame_with(out, kind, |out| out.extend_from_slice(payload));
}

/// Appends one frame to `out` whose payload `payload` writes onto `out` itself (no
/// buffer of its own to copy from): the header is reserved, then filled in.
pub(crate) fn encode_frame_with(out: &mut Vec<u8>, kind: u8, payload: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER_LEN]);
    payload(out);
    let len = u32::try_from(out.len() - start - FRAME_HEADER_LEN)
        .expect("record payloads are bounded by limits");
    let mut hasher = frame_hasher();
    hasher.update(&len.to_le_bytes());
    hasher.update(&[kind]);
    hasher.update(&out[start + FRAME_HEADER_LEN..]);
    let crc = hasher.finalize();
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    out[start + 8] = kind;
}

/// The result of reading a frame at some offset.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Frame<'a> {
    /// A whole, checksummed frame, and the offset after it.
    Ok {
        kind: u8,
        payload: &'a [u8],
        next: usize,
    },
    /// The input ends inside the frame.
    Truncated,
    /// The frame is complete but its checksum does not match.
    BadChecksum,
}

/// A fresh checksum state for a frame. `Hasher::new` looks up the CPU's features on
/// every call; a frame is checksummed per record on recovery and per candidate offset
/// when salvage searches damage, so the looked-up state is made once and copied.
fn frame_hasher() -> crc32fast::Hasher {
    static FRESH: std::sync::OnceLock<crc32fast::Hasher> = std::sync::OnceLock::new();
    FRESH.get_or_init(crc32fast::Hasher::new).clone()
}

/// Reads the frame at `pos` of `buf` (never allocates, never reads past `buf`).
pub(crate) fn read_frame(buf: &[u8], pos: usize) -> Frame<'_> {
    let Some(head) = buf.get(pos..pos.saturating_add(FRAME_HEADER_LEN)) else {
        return Frame::Truncated;
    };
    let len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(head[4..8].try_into().expect("4 bytes"));
    let kind = head[8];
    let start = pos + FRAME_HEADER_LEN;
    let Some(payload) = start.checked_add(len).and_then(|end| buf.get(start..end)) else {
        return Frame::Truncated;
    };
    let mut hasher = frame_hasher();
    hasher.update(&head[..4]);
    hasher.update(&[kind]);
    hasher.update(payload);
    if hasher.finalize() != crc {
        return Frame::BadChecksum;
    }
    Frame::Ok {
        kind,
        payload,
        next: start + len,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_rejects_damage_and_newer_versions() {
        let h = encode_header(FileKind::Segment, 42);
        assert_eq!(
            decode_header(&h, FileKind::Segment),
            Ok(Header {
                version: FORMAT_VERSION,
                seq: 42
            })
        );
        assert!(matches!(
            decode_header(&h, FileKind::Base),
            Err(HeaderError::Damaged(_))
        ));
        assert_eq!(
            decode_header(&h[..10], FileKind::Segment),
            Err(HeaderError::Short)
        );
        let mut bad = h;
        bad[3] ^= 1;
        assert!(matches!(
            decode_header(&bad, FileKind::Segment),
            Err(HeaderError::Damaged(_))
        ));
        let mut newer = h;
        newer[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
        let crc = crc32fast::hash(&newer[..21]);
        newer[21..25].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            decode_header(&newer, FileKind::Segment),
            Err(HeaderError::Newer(FORMAT_VERSION + 1))
        );
    }

    #[test]
    fn frames_detect_truncation_and_bit_flips_everywhere() {
        let mut buf = Vec::new();
        encode_frame(&mut buf, 3, b"hello world");
        let mut with = Vec::new();
        encode_frame_with(&mut with, 3, |out| out.extend_from_slice(b"hello world"));
        assert_eq!(with, buf, "the same frame written in place");
        assert!(
            matches!(read_frame(&buf, 0), Frame::Ok { kind: 3, next, .. } if next == buf.len())
        );
        for cut in 0..buf.len() {
            assert_eq!(read_frame(&buf[..cut], 0), Frame::Truncated, "cut at {cut}");
        }
        for i in 0..buf.len() {
            for bit in 0..8 {
                let mut b = buf.clone();
                b[i] ^= 1 << bit;
                assert!(
                    !matches!(read_frame(&b, 0), Frame::Ok { .. }),
                    "flip of bit {bit} in byte {i} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn zeros_never_read_as_a_frame() {
        // Recovery relies on it: the preallocated, zero-filled space after the last
        // record of the active segment must end the log, not replay as records.
        let zeros = [0u8; 64];
        for pos in 0..zeros.len() {
            assert_ne!(
                std::mem::discriminant(&read_frame(&zeros, pos)),
                std::mem::discriminant(&Frame::Ok {
                    kind: 0,
                    payload: &[],
                    next: 0
                }),
                "zeros at {pos}"
            );
        }
        assert_eq!(read_frame(&zeros, 0), Frame::BadChecksum);
    }

    #[test]
    fn names_parse_strictly() {
        assert_eq!(parse_name(&segment_name(7)), Some((FileKind::Segment, 7)));
        for seq in [0, 1, 0xabc, 1 << 40, u64::MAX - 1, u64::MAX] {
            assert_eq!(segment_name(seq), format!("seg-{seq:016x}.log"));
            assert_eq!(base_name(seq), format!("base-{seq:016x}.log"));
        }
        assert_eq!(parse_name(&base_name(9)), Some((FileKind::Base, 9)));
        assert_eq!(parse_name("seg-7.log"), None);
        assert_eq!(parse_name("LOCK"), None);
        assert_eq!(parse_name("base-000000000000000g.log"), None);
    }
}
