//! The file-system seam: every file operation the log backend and the directory lock
//! make goes through [`FileSystem`] and [`FileHandle`], so that the same code runs on
//! the real disk ([`OsFs`], the default) and on a simulated one ([`SimFs`]) that fails
//! calls and crashes on demand.
//!
//! The trait is exactly what the log needs — open, positional read and write, set
//! length, fsync / fdatasync, rename, remove, list a directory, sync a directory, a
//! file's length, and an exclusive lock — and nothing else. Writes are positional
//! (`pwrite`): the log always knows where its bytes go, so no call depends on a file
//! position another call left behind.
//!
//! The sled backend cannot sit on this seam (sled does its own I/O): a store opened
//! with [`crate::BackendKind::Sled`] and a file system other than [`OsFs`] is refused.

mod os;
mod sim;

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;

pub use os::OsFs;
pub use sim::{FaultKind, Op, SimFs};

/// How [`FileSystem::open`] opens a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenMode {
    /// An existing file, for reading.
    Read,
    /// An existing file, for reading and writing.
    Write,
    /// A new file (for reading and writing); fails if the name exists.
    CreateNew,
    /// The file, created if missing, kept as it is otherwise.
    Create,
    /// The file, created if missing, emptied otherwise.
    Truncate,
}

/// One entry of a directory listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    /// The entry's name (entries whose name is not UTF-8 are not listed: sessiondb
    /// names none of its files so).
    pub name: String,
    /// Its length in bytes (0 for a directory).
    pub len: u64,
}

/// The operations on a directory tree that a store makes.
///
/// Implementations must be safe to call from several threads at once. Errors are
/// plain `std::io::Error`s; the store adds what it was doing and which file.
pub trait FileSystem: Send + Sync + fmt::Debug + 'static {
    /// Opens `path` as `mode` says. Files created are private to their owner where the
    /// platform has permissions.
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn FileHandle>>;
    /// Renames `from` to `to`, replacing `to` if it exists (atomically, as `rename(2)`).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes the file `path`.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// The entries of the directory `dir`, in no particular order.
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<DirEntry>>;
    /// Makes the entries of `dir` durable: files created, renamed or removed in it
    /// stay so across a crash.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Creates `dir` and its missing parents (private to their owner where the
    /// platform has permissions).
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Whether this is the operating system's own file system ([`OsFs`]): only there
    /// can sled run, and only there are permissions checked.
    fn is_os(&self) -> bool {
        false
    }
}

/// An open file.
pub trait FileHandle: Send + Sync + fmt::Debug {
    /// Reads into `buf` from `offset`; returns how many bytes were read (0 at the end).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Writes `buf` at `offset`; returns how many bytes were written, which may be
    /// fewer than asked (a short write).
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize>;
    /// Cuts or extends the file to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Makes the file's data and metadata durable (`fsync`).
    fn sync_all(&self) -> io::Result<()>;
    /// Makes the file's data durable (`fdatasync`).
    fn sync_data(&self) -> io::Result<()>;
    /// The file's length in bytes.
    fn len(&self) -> io::Result<u64>;
    /// Takes an exclusive lock on the file without waiting: `Ok(false)` if another
    /// holder has it. Released when the handle is dropped.
    fn try_lock(&self) -> io::Result<bool>;

    /// Whether the file is empty.
    fn is_empty(&self) -> io::Result<bool> {
        self.len().map(|l| l == 0)
    }

    /// Fills `buf` from `offset`, retrying interrupted calls and short reads; an
    /// `UnexpectedEof` error if the file ends first.
    fn read_exact_at(&self, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
        while !buf.is_empty() {
            match self.read_at(buf, offset) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the file ends before the bytes asked for",
                    ));
                }
                Ok(n) => {
                    buf = &mut buf[n..];
                    offset += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Writes all of `buf` at `offset`, retrying interrupted calls and short writes.
    /// On an error, some prefix of `buf` may have been written.
    fn write_all_at(&self, mut buf: &[u8], mut offset: u64) -> io::Result<()> {
        while !buf.is_empty() {
            match self.write_at(buf, offset) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "the file system wrote nothing",
                    ));
                }
                Ok(n) => {
                    buf = &buf[n..];
                    offset += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The whole file.
    fn read_all(&self) -> io::Result<Vec<u8>> {
        let len = usize::try_from(self.len()?).map_err(io::Error::other)?;
        let mut buf = vec![0u8; len];
        self.read_exact_at(&mut buf, 0)?;
        Ok(buf)
    }
}

/// A [`FileHandle`] as a `std::io::Write` that appends from a starting offset, for
/// code that writes a file front to back (through a `BufWriter`).
pub(crate) struct Appender {
    pub(crate) file: Arc<dyn FileHandle>,
    pub(crate) at: u64,
}

impl io::Write for Appender {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write_at(buf, self.at)?;
        self.at += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Syncs the directory `dir` on `fs`, so that files created, renamed or removed in it
/// stay so.
pub(crate) fn sync_dir(fs: &dyn FileSystem, dir: &Path) -> crate::error::Result<()> {
    fs.sync_dir(dir)
        .map_err(|e| crate::error::Error::io(format!("syncing directory {}", dir.display()), e))
}

/// Removes the file `path` on `fs`.
pub(crate) fn remove(fs: &dyn FileSystem, path: &Path) -> crate::error::Result<()> {
    fs.remove_file(path)
        .map_err(|e| crate::error::Error::io(format!("removing {}", path.display()), e))
}
