//! The manifest: which files make up the log, and where every sealed one ends.
//!
//! Without it, recovery could only infer the log from the files it finds, and a file
//! cut at a record boundary, or a newest segment deleted or emptied, read as a shorter
//! log that was never damaged. The manifest states what must be there:
//!
//! ```text
//! MANIFEST := magic "SESSMAN\0" (8) | format version u32 | base seq u64 | base len u64
//!             | active seq u64 | count u32 | count × (seq u64 | len u64) | crc32 u32
//! ```
//!
//! Little-endian; a sequence of 0 means none (sequences start at 1); the CRC covers
//! every byte before it. `base` is the compacted base in use and its length; the
//! `count` pairs are the sealed segments after it, ascending, with their lengths;
//! `active` is the segment being appended to — the one file whose end is not known,
//! whose tail a crash may tear — or 0 after a clean close, when every file is sealed.
//!
//! It is replaced whole, never edited: written to `MANIFEST.tmp`, fsynced, renamed over
//! `MANIFEST`, and the directory fsynced ([`write`]). Every change to the set of files
//! writes it at the point that keeps every crash recoverable:
//!
//! - **roll**: the next segment is created (header fsynced, directory fsynced) *before*
//!   the manifest names it active and the previous one sealed at its length, so a
//!   segment the manifest names active always has its header, and a segment found
//!   after the active one holds nothing (a roll interrupted before its manifest) and is
//!   removed;
//! - **compaction**: the base is fsynced and renamed into place, then the manifest
//!   names it, then what it replaces is deleted; a base the manifest does not name yet
//!   is an unfinished compaction, and is removed (its inputs are all still listed);
//! - **open**: after recovery, a new active segment is created, then the manifest names
//!   every recovered file sealed at its length (the last one fsynced first);
//! - **close**: the active segment is cut to its records and fsynced, then the manifest
//!   seals it (or drops it, with no record in it) and names no active segment. A store
//!   whose writer failed does not claim that: its last segment stays active.
//!
//! Recovery then refuses, as [`crate::Error::Corrupt`], a listed file that is missing
//! or whose length differs from the one recorded, an active segment shorter than its
//! header, a file after the active one that holds records, and a store of this format
//! whose manifest is gone.

use std::path::Path;

use crate::backend::log::format::FORMAT_VERSION;
use crate::error::{Error, Result};
use crate::util::vfs::{FileSystem, OpenMode, sync_dir};

/// The manifest's file name in the store directory.
pub(crate) const MANIFEST: &str = "MANIFEST";
/// Where a new manifest is written before it is renamed over the old one.
pub(crate) const MANIFEST_TMP: &str = "MANIFEST.tmp";

const MAGIC: [u8; 8] = *b"SESSMAN\0";
/// Magic, version, base seq and length, active seq, count.
const FIXED_LEN: usize = 8 + 4 + 8 + 8 + 8 + 4;
const ENTRY_LEN: usize = 16;
const CRC_LEN: usize = 4;

/// The files that make up a log, as the manifest states them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Manifest {
    /// The compacted base in use: (sequence, length in bytes).
    pub(crate) base: Option<(u64, u64)>,
    /// The sealed segments after the base, ascending: (sequence, length in bytes).
    pub(crate) sealed: Vec<(u64, u64)>,
    /// The segment being appended to; `None` after a clean close.
    pub(crate) active: Option<u64>,
}

/// Why a manifest was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ManifestError {
    /// Not a manifest, or damaged.
    Damaged(String),
    /// Written by a newer format version.
    Newer(u32),
}

impl Manifest {
    /// The highest sequence the manifest names.
    pub(crate) fn last_seq(&self) -> u64 {
        let sealed = self.sealed.last().map_or(0, |s| s.0);
        let base = self.base.map_or(0, |b| b.0);
        self.active.unwrap_or(0).max(sealed).max(base)
    }

    /// The length recorded for sealed segment `seq`.
    pub(crate) fn sealed_len(&self, seq: u64) -> Option<u64> {
        self.sealed
            .binary_search_by_key(&seq, |s| s.0)
            .ok()
            .map(|i| self.sealed[i].1)
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(FIXED_LEN + self.sealed.len() * ENTRY_LEN + CRC_LEN);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        let (base_seq, base_len) = self.base.unwrap_or((0, 0));
        out.extend_from_slice(&base_seq.to_le_bytes());
        out.extend_from_slice(&base_len.to_le_bytes());
        out.extend_from_slice(&self.active.unwrap_or(0).to_le_bytes());
        let count = u32::try_from(self.sealed.len()).expect("fewer than 2^32 segments");
        out.extend_from_slice(&count.to_le_bytes());
        for &(seq, len) in &self.sealed {
            out.extend_from_slice(&seq.to_le_bytes());
            out.extend_from_slice(&len.to_le_bytes());
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes and checks a manifest: its checksum, its version, and that what it
    /// says is possible (sequences ascending, the base before every segment).
    pub(crate) fn decode(bytes: &[u8]) -> std::result::Result<Manifest, ManifestError> {
        let damaged = |why: &str| Err(ManifestError::Damaged(why.to_owned()));
        if bytes.len() < FIXED_LEN + CRC_LEN {
            return damaged("shorter than a manifest");
        }
        if bytes[..8] != MAGIC {
            return damaged("bad magic number");
        }
        let (body, crc) = bytes.split_at(bytes.len() - CRC_LEN);
        if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
            return damaged("checksum mismatch");
        }
        let u64_at = |at: usize| u64::from_le_bytes(body[at..at + 8].try_into().expect("8 bytes"));
        let version = u32::from_le_bytes(body[8..12].try_into().expect("4 bytes"));
        if version > FORMAT_VERSION {
            return Err(ManifestError::Newer(version));
        }
        if version < crate::backend::log::format::MANIFEST_SINCE {
            return damaged("a format version that keeps no manifest");
        }
        let (base_seq, base_len, active) = (u64_at(12), u64_at(20), u64_at(28));
        let count = u32::from_le_bytes(body[36..40].try_into().expect("4 bytes")) as usize;
        if count.checked_mul(ENTRY_LEN) != Some(body.len() - FIXED_LEN) {
            return damaged("its segment count does not match its length");
        }
        let sealed: Vec<(u64, u64)> = (0..count)
            .map(|i| {
                (
                    u64_at(FIXED_LEN + i * ENTRY_LEN),
                    u64_at(FIXED_LEN + i * ENTRY_LEN + 8),
                )
            })
            .collect();
        let m = Manifest {
            base: (base_seq != 0).then_some((base_seq, base_len)),
            sealed,
            active: (active != 0).then_some(active),
        };
        let mut floor = base_seq;
        for &(seq, _) in &m.sealed {
            if seq <= floor {
                return damaged("its segments are not in ascending order after the base");
            }
            floor = seq;
        }
        if m.active.is_some_and(|a| a <= floor) {
            return damaged("its active segment is not after every sealed one");
        }
        Ok(m)
    }
}

fn corrupt(dir: &Path, reason: String) -> Error {
    Error::Corrupt {
        segment: dir.join(MANIFEST),
        offset: 0,
        reason,
    }
}

/// Reads the manifest of `dir`; `None` if there is none.
///
/// # Errors
/// [`Error::Corrupt`] if it is damaged, [`Error::UnsupportedFormat`] if a newer
/// sessiondb wrote it, [`Error::Io`].
pub(crate) fn read(fs: &dyn FileSystem, dir: &Path) -> Result<Option<Manifest>> {
    let path = dir.join(MANIFEST);
    let bytes = match fs.open(&path, OpenMode::Read).and_then(|f| f.read_all()) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
    };
    match Manifest::decode(&bytes) {
        Ok(m) => Ok(Some(m)),
        Err(ManifestError::Damaged(why)) => Err(corrupt(dir, format!("manifest: {why}"))),
        Err(ManifestError::Newer(found)) => Err(Error::UnsupportedFormat {
            file: path,
            found,
            supported: FORMAT_VERSION,
        }),
    }
}

/// Replaces the manifest of `dir` with `m`, durably: written to [`MANIFEST_TMP`],
/// fsynced, renamed over [`MANIFEST`], the directory fsynced. A crash leaves either
/// the old manifest or the new one, whole.
pub(crate) fn write(fs: &dyn FileSystem, dir: &Path, m: &Manifest) -> Result<()> {
    let tmp = dir.join(MANIFEST_TMP);
    let io = |what: &str, e| Error::io(format!("{what} {}", tmp.display()), e);
    let bytes = m.encode();
    // Up to the rename, a full disk leaves the manifest as it was: Error::DiskFull,
    // which the caller may try again. After it, any failure is the caller's to fail on.
    let full = |e: Error| e.or_disk_full(dir, bytes.len() as u64);
    let f = fs
        .open(&tmp, OpenMode::Truncate)
        .map_err(|e| full(io("creating", e)))?;
    f.write_all_at(&bytes, 0)
        .and_then(|()| f.sync_all())
        .map_err(|e| full(io("writing", e)))?;
    drop(f);
    crate::util::failpoint::hit("manifest:before_rename");
    fs.rename(&tmp, &dir.join(MANIFEST))
        .map_err(|e| full(io("renaming", e)))?;
    sync_dir(fs, dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::vfs::OsFs;

    fn sample() -> Manifest {
        Manifest {
            base: Some((3, 41_266)),
            sealed: vec![(4, 4096), (5, 4100), (7, 25)],
            active: Some(8),
        }
    }

    #[test]
    fn a_manifest_round_trips_with_and_without_base_sealed_and_active() {
        for m in [
            sample(),
            Manifest::default(),
            Manifest {
                base: None,
                sealed: vec![(1, 25)],
                active: None,
            },
            Manifest {
                base: Some((9, 100)),
                sealed: Vec::new(),
                active: Some(10),
            },
        ] {
            assert_eq!(Manifest::decode(&m.encode()), Ok(m.clone()), "{m:?}");
        }
        assert_eq!(sample().last_seq(), 8);
        assert_eq!(sample().sealed_len(5), Some(4100));
        assert_eq!(sample().sealed_len(6), None);
    }

    #[test]
    fn any_damage_to_a_manifest_is_refused() {
        let bytes = sample().encode();
        for cut in 0..bytes.len() {
            assert!(
                Manifest::decode(&bytes[..cut]).is_err(),
                "a manifest cut at {cut} was accepted"
            );
        }
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut b = bytes.clone();
                b[i] ^= 1 << bit;
                assert!(
                    Manifest::decode(&b).is_err(),
                    "flip of bit {bit} in byte {i} went unnoticed"
                );
            }
        }
    }

    /// Re-encodes `m`'s bytes with a valid checksum after `edit`.
    fn resealed(m: &Manifest, edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut b = m.encode();
        b.truncate(b.len() - CRC_LEN);
        edit(&mut b);
        let crc = crc32fast::hash(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    #[test]
    fn a_manifest_stating_the_impossible_or_a_newer_version_is_refused() {
        let newer = resealed(&sample(), |b| {
            b[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
        });
        assert_eq!(
            Manifest::decode(&newer),
            Err(ManifestError::Newer(FORMAT_VERSION + 1))
        );
        let unordered = Manifest {
            sealed: vec![(5, 1), (4, 1)],
            ..sample()
        };
        assert!(matches!(
            Manifest::decode(&unordered.encode()),
            Err(ManifestError::Damaged(_))
        ));
        let before_base = Manifest {
            base: Some((6, 1)),
            ..sample()
        };
        assert!(Manifest::decode(&before_base.encode()).is_err());
        let active_behind = Manifest {
            active: Some(7),
            ..sample()
        };
        assert!(Manifest::decode(&active_behind.encode()).is_err());
        // A count claiming more entries than the file holds allocates nothing.
        let huge = resealed(&sample(), |b| {
            b[36..40].copy_from_slice(&u32::MAX.to_le_bytes());
        });
        assert!(matches!(
            Manifest::decode(&huge),
            Err(ManifestError::Damaged(_))
        ));
    }

    #[test]
    fn write_replaces_the_manifest_whole_and_read_finds_it() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(&OsFs, dir.path()).unwrap(), None);
        write(&OsFs, dir.path(), &sample()).unwrap();
        assert_eq!(read(&OsFs, dir.path()).unwrap(), Some(sample()));
        let next = Manifest {
            active: Some(9),
            ..sample()
        };
        write(&OsFs, dir.path(), &next).unwrap();
        assert_eq!(read(&OsFs, dir.path()).unwrap(), Some(next));
        assert!(!dir.path().join(MANIFEST_TMP).exists());
        std::fs::write(dir.path().join(MANIFEST), b"garbage").unwrap();
        assert!(matches!(
            read(&OsFs, dir.path()),
            Err(Error::Corrupt { .. })
        ));
    }
}
