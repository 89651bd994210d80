//! [`SimFs`]: a simulated disk in memory, with a page cache that a crash can tear and
//! I/O errors injected on schedule or at random — deterministic from a seed.
//!
//! **What it models.** Every file has *durable* bytes (what a power cut keeps) and
//! *pending* operations (writes and length changes since its last fsync). Every
//! directory has durable entries and pending ones (creations, renames, removals since
//! its last directory sync). Reads see everything, pending or not, as with a page
//! cache. [`SimFs::crash`] is a power cut: each file keeps its durable bytes plus any
//! prefix of its pending operations, the next one possibly torn (a prefix of its bytes);
//! each directory keeps its durable entries plus any prefix of its pending changes —
//! files and directories choosing independently, which covers every order in which the
//! OS may have written them out. A file whose name never became durable is gone.
//!
//! **Faults.** [`SimFs::fail_nth`] makes one chosen call fail; [`SimFs::random_faults`]
//! makes any call fail with some probability. A failed fsync behaves as Linux's does:
//! the pending operations it could not write are dropped — the page cache still shows
//! them, a crash loses them, and a retried fsync "succeeds" (the *fsyncgate* trap a
//! store must not fall into). A short write writes a prefix and says so; `EINTR` does
//! nothing; `ENOSPC` also comes from [`SimFs::set_capacity`] when the files would
//! outgrow it.
//!
//! **Determinism.** All choices come from one generator seeded by [`SimFs::new`], so
//! the same calls in the same order give the same faults and the same crash. (A store's
//! background threads can change the order of calls; a test that wants exact replay
//! keeps them quiet.) Directories are durable when created.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::BuildHasherDefault;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use super::{DirEntry, FileHandle, FileSystem, OpenMode};

/// A kind of call to the simulated file system, to aim a fault at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// Opening or creating a file.
    Open,
    /// A positional read.
    Read,
    /// A positional write.
    Write,
    /// Cutting or extending a file.
    SetLen,
    /// `fsync` / `fdatasync` of a file.
    Sync,
    /// Syncing a directory.
    SyncDir,
    /// A rename.
    Rename,
    /// Removing a file.
    Remove,
    /// Listing a directory.
    List,
    /// Any call at all (for [`SimFs::fail_nth`]).
    Any,
}

/// An injected failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// `EIO`. On a sync, the pending operations are dropped (see the module doc).
    Io,
    /// `ENOSPC`: the call does nothing.
    NoSpace,
    /// A write that writes only a prefix of its bytes (at least one) and says so. On
    /// other calls, no fault.
    ShortWrite,
    /// `EINTR`: the call does nothing and may be retried. Reads and writes only (the
    /// calls that can be interrupted on a local disk); on other calls, no fault.
    Interrupted,
}

impl FaultKind {
    fn error(self) -> io::Error {
        match self {
            FaultKind::Io => io::Error::from_raw_os_error(5),
            FaultKind::NoSpace => io::Error::from_raw_os_error(28),
            FaultKind::Interrupted => io::Error::from_raw_os_error(4),
            FaultKind::ShortWrite => io::Error::other("short write"),
        }
    }
}

/// A simulated disk. Clones share it; a clone taken before a [`SimFs::crash`] belongs
/// to the process that "died" — every call through it, or through a file it opened,
/// fails with `EIO` and changes nothing.
#[derive(Clone)]
pub struct SimFs {
    state: Arc<Mutex<State>>,
    generation: u64,
}

impl std::fmt::Debug for SimFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.state.lock();
        f.debug_struct("SimFs")
            .field("seed", &s.seed)
            .field("calls", &s.calls)
            .field("faults", &s.faults)
            .finish_non_exhaustive()
    }
}

/// SplitMix64: small, fast, and the same everywhere.
#[derive(Clone, Debug)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..=max`.
    fn upto(&mut self, max: u64) -> u64 {
        if max == u64::MAX {
            self.next()
        } else {
            self.next() % (max + 1)
        }
    }
}

#[derive(Clone, Debug)]
enum FileOp {
    Write {
        at: u64,
        bytes: Vec<u8>,
    },
    /// A write of zeros (a log preallocates with them), kept without its bytes.
    Zeros {
        at: u64,
        len: u64,
    },
    SetLen(u64),
}

impl FileOp {
    fn apply(&self, data: &mut Content) {
        match self {
            FileOp::Write { at, bytes } => data.write(*at, bytes),
            FileOp::Zeros { at, len } => data.zero(*at, *len),
            FileOp::SetLen(len) => data.set_len(*len),
        }
    }

    /// The first `n` bytes of this write (a torn write), if it is one longer than that.
    fn torn(&self, n: u64) -> Option<FileOp> {
        match self {
            FileOp::Write { at, bytes } if (bytes.len() as u64) > n => Some(FileOp::Write {
                at: *at,
                bytes: bytes[..n as usize].to_vec(),
            }),
            FileOp::Zeros { at, len } if *len > n => Some(FileOp::Zeros { at: *at, len: n }),
            _ => None,
        }
    }

    /// The bytes a write writes (0 for a length change).
    fn write_len(&self) -> u64 {
        match self {
            FileOp::Write { bytes, .. } => bytes.len() as u64,
            FileOp::Zeros { len, .. } => *len,
            FileOp::SetLen(_) => 0,
        }
    }
}

/// A file's contents: `bytes`, then zeros up to `len`. A log's zero-filled tail (a
/// megabyte per segment) then costs no memory, and no copy at a crash.
#[derive(Clone, Debug, Default, PartialEq)]
struct Content {
    bytes: Vec<u8>,
    len: u64,
}

impl Content {
    /// `bytes`, its zero tail kept as a length.
    fn of(bytes: &[u8]) -> Content {
        let stored = crate::util::zeros_from(bytes);
        Content {
            bytes: bytes[..stored].to_vec(),
            len: bytes.len() as u64,
        }
    }

    fn set_len(&mut self, len: u64) {
        if len < self.bytes.len() as u64 {
            self.bytes.truncate(len as usize);
        }
        self.len = len;
    }

    fn zero(&mut self, at: u64, len: u64) {
        let end = at.saturating_add(len);
        let stored = self.bytes.len() as u64;
        if at < stored {
            self.bytes[at as usize..end.min(stored) as usize].fill(0);
        }
        self.len = self.len.max(end);
    }

    fn write(&mut self, at: u64, bytes: &[u8]) {
        let at = usize::try_from(at).expect("offsets fit in memory");
        let end = at + bytes.len();
        if self.bytes.len() < end {
            self.bytes.resize(end, 0);
        }
        self.bytes[at..end].copy_from_slice(bytes);
        self.len = self.len.max(end as u64);
    }

    /// Copies what lies at `from` into `buf`; returns how much (0 past the end).
    fn read(&self, from: u64, buf: &mut [u8]) -> usize {
        if from >= self.len {
            return 0;
        }
        let n = buf
            .len()
            .min(usize::try_from(self.len - from).unwrap_or(usize::MAX));
        let stored = self.bytes.len().saturating_sub(from as usize).min(n);
        if stored > 0 {
            let from = from as usize;
            buf[..stored].copy_from_slice(&self.bytes[from..from + stored]);
        }
        buf[stored..n].fill(0);
        n
    }

    fn to_vec(&self) -> Vec<u8> {
        let mut v = self.bytes.clone();
        v.resize(usize::try_from(self.len).expect("files fit in memory"), 0);
        v
    }
}

/// Whether `buf` is all zeros.
fn all_zeros(buf: &[u8]) -> bool {
    crate::util::zeros_from(buf) == 0
}

#[derive(Debug, Default)]
struct Inode {
    /// What reads see.
    data: Content,
    /// What a crash keeps for sure.
    durable: Content,
    /// Applied to `durable`, in order, these give `data` (unless a failed sync dropped
    /// some: then `data` shows bytes that no crash keeps).
    pending: Vec<FileOp>,
    /// Open handles.
    open: usize,
}

/// A directory's entries: name to inode. Hashed with fixed keys, so that a run replays
/// exactly; listings sort. (An ordered map compared names a byte string at a time,
/// several times per lookup — in a fuzzing build every comparison is a hooked
/// `memcmp`, a tenth of what `ops_model` did.)
type Entries = HashMap<String, u64, BuildHasherDefault<DefaultHasher>>;

#[derive(Clone, Debug)]
enum DirOp {
    Link(String, u64),
    Unlink(String),
    Rename(String, String),
}

impl DirOp {
    /// Applies the change; says whether an entry was dropped or replaced (so an inode
    /// may have lost its last name).
    fn apply(&self, entries: &mut Entries) -> bool {
        match self {
            DirOp::Link(name, ino) => entries.insert(name.clone(), *ino).is_some(),
            DirOp::Unlink(name) => entries.remove(name).is_some(),
            DirOp::Rename(from, to) => match entries.remove(from) {
                Some(ino) => entries.insert(to.clone(), ino).is_some(),
                None => false,
            },
        }
    }
}

#[derive(Debug, Default)]
struct Dir {
    live: Entries,
    durable: Entries,
    pending: Vec<DirOp>,
}

#[derive(Debug)]
struct Scheduled {
    op: Op,
    countdown: u64,
    kind: FaultKind,
}

#[derive(Debug)]
struct State {
    seed: u64,
    generation: u64,
    rng: Rng,
    /// Directories, in the order they were made (a handful: a list is the cheapest
    /// map, and keeps a run's order of random choices fixed).
    dirs: Vec<(PathBuf, Dir)>,
    inodes: BTreeMap<u64, Inode>,
    next_ino: u64,
    next_handle: u64,
    /// Locked inodes, and the handle holding each lock.
    locks: HashMap<u64, u64>,
    capacity: Option<u64>,
    scheduled: Vec<Scheduled>,
    random: Option<(u32, Vec<FaultKind>)>,
    calls: u64,
    faults: u64,
}

fn crashed() -> io::Error {
    io::Error::other("the simulated machine crashed: this handle belongs to the dead process")
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: no such file or directory (simulated)", path.display()),
    )
}

/// A path's directory and name, borrowed (most calls only look them up).
fn split(path: &Path) -> io::Result<(&Path, &str)> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file name"))?;
    Ok((path.parent().unwrap_or(Path::new("")), name))
}

impl State {
    /// Counts a call and decides whether it fails.
    fn fault(&mut self, op: Op) -> Option<FaultKind> {
        self.calls += 1;
        let mut fired = None;
        let mut i = 0;
        while i < self.scheduled.len() {
            let s = &mut self.scheduled[i];
            if s.op == op || s.op == Op::Any {
                s.countdown -= 1;
                if s.countdown == 0 {
                    let s = self.scheduled.remove(i);
                    fired = fired.or(Some(s.kind));
                    continue;
                }
            }
            i += 1;
        }
        if fired.is_none()
            && let Some((one_in, kinds)) = &self.random
            && !kinds.is_empty()
            && self.rng.next().is_multiple_of(u64::from(*one_in))
        {
            let k = kinds[(self.rng.next() % kinds.len() as u64) as usize];
            fired = Some(k);
        }
        let fired = fired.filter(|k| match k {
            FaultKind::ShortWrite => op == Op::Write,
            FaultKind::Interrupted => matches!(op, Op::Read | Op::Write),
            FaultKind::Io | FaultKind::NoSpace => true,
        });
        if fired.is_some() {
            self.faults += 1;
        }
        fired
    }

    /// The bytes the files hold now: those with a name or an open handle (a removed
    /// file's space is free at once, as on a real file system, even while a crash
    /// could still bring its name back).
    fn used(&self) -> u64 {
        let named: HashSet<u64> = self
            .dirs
            .iter()
            .flat_map(|(_, d)| d.live.values().copied())
            .collect();
        self.inodes
            .iter()
            .filter(|(ino, i)| i.open > 0 || named.contains(ino))
            .map(|(_, i)| i.data.len)
            .sum()
    }

    /// Bytes a file may still grow by.
    fn room(&self) -> u64 {
        self.capacity
            .map_or(u64::MAX, |c| c.saturating_sub(self.used()))
    }

    fn dir_mut(&mut self, dir: &Path) -> io::Result<&mut Dir> {
        self.dir_ix(dir)
            .map(|i| &mut self.dirs[i].1)
            .ok_or_else(|| not_found(dir))
    }

    fn dir(&self, dir: &Path) -> Option<&Dir> {
        self.dir_ix(dir).map(|i| &self.dirs[i].1)
    }

    /// Where `dir` is in the list: the same bytes first (what the store always passes),
    /// then the same components (`a/b/` is `a/b`), as a `Path` compares.
    fn dir_ix(&self, dir: &Path) -> Option<usize> {
        let bytes = dir.as_os_str();
        self.dirs
            .iter()
            .position(|(d, _)| d.as_os_str() == bytes)
            .or_else(|| self.dirs.iter().position(|(d, _)| d == dir))
    }

    /// Makes `dir` (not its ancestors) if it is not there.
    fn make_dir(&mut self, dir: &Path) -> &mut Dir {
        let i = self.dir_ix(dir).unwrap_or_else(|| {
            self.dirs.push((dir.to_path_buf(), Dir::default()));
            self.dirs.len() - 1
        });
        &mut self.dirs[i].1
    }

    fn lookup(&self, path: &Path) -> io::Result<u64> {
        let (dir, name) = split(path)?;
        self.dir(dir)
            .and_then(|d| d.live.get(name))
            .copied()
            .ok_or_else(|| not_found(path))
    }

    /// Drops the inodes nothing refers to any more.
    fn collect(&mut self) {
        let mut referenced: Vec<u64> = Vec::new();
        for (_, d) in &self.dirs {
            referenced.extend(d.live.values());
            referenced.extend(d.durable.values());
            for op in &d.pending {
                if let DirOp::Link(_, ino) = op {
                    referenced.push(*ino);
                }
            }
        }
        referenced.sort_unstable();
        self.inodes
            .retain(|ino, i| i.open > 0 || referenced.binary_search(ino).is_ok());
    }
}

impl SimFs {
    /// A new, empty simulated disk whose every random choice derives from `seed`.
    pub fn new(seed: u64) -> SimFs {
        SimFs {
            state: Arc::new(Mutex::new(State {
                seed,
                generation: 0,
                rng: Rng(seed),
                dirs: Vec::new(),
                inodes: BTreeMap::new(),
                next_ino: 1,
                next_handle: 1,
                locks: HashMap::new(),
                capacity: None,
                scheduled: Vec::new(),
                random: None,
                calls: 0,
                faults: 0,
            })),
            generation: 0,
        }
    }

    /// The seed it was made with.
    pub fn seed(&self) -> u64 {
        self.state.lock().seed
    }

    /// A power cut (see the module doc). Returns the disk as the next boot sees it;
    /// every earlier clone, and every file opened through one, is dead from here on.
    /// Locks are released; scheduled faults stay armed.
    pub fn crash(&self) -> SimFs {
        let mut s = self.state.lock();
        let State {
            rng, dirs, inodes, ..
        } = &mut *s;
        for inode in inodes.values_mut() {
            let keep = rng.upto(inode.pending.len() as u64) as usize;
            let mut data = std::mem::take(&mut inode.durable);
            for op in &inode.pending[..keep] {
                op.apply(&mut data);
            }
            if let Some(op) = inode.pending.get(keep)
                && op.write_len() > 1
                && rng.next().is_multiple_of(2)
            {
                let n = 1 + rng.upto(op.write_len() - 2);
                if let Some(torn) = op.torn(n) {
                    torn.apply(&mut data);
                }
            }
            inode.pending.clear();
            inode.durable = data.clone();
            inode.data = data;
            inode.open = 0;
        }
        for (_, dir) in dirs.iter_mut() {
            let keep = rng.upto(dir.pending.len() as u64) as usize;
            for op in &dir.pending[..keep] {
                let _ = op.apply(&mut dir.durable);
            }
            dir.pending.clear();
            dir.live = dir.durable.clone();
        }
        s.locks.clear();
        s.generation += 1;
        s.collect();
        SimFs {
            state: Arc::clone(&self.state),
            generation: s.generation,
        }
    }

    /// Makes the `n`th next call of kind `op` (1: the very next) fail with `kind`.
    pub fn fail_nth(&self, op: Op, n: u64, kind: FaultKind) {
        self.state.lock().scheduled.push(Scheduled {
            op,
            countdown: n.max(1),
            kind,
        });
    }

    /// Makes every call fail with probability `1 / one_in`, with one of `kinds`
    /// (chosen at random); `one_in` 0 turns random faults off.
    pub fn random_faults(&self, one_in: u32, kinds: &[FaultKind]) {
        self.state.lock().random = (one_in > 0).then(|| (one_in, kinds.to_vec()));
    }

    /// Turns every fault off: scheduled and random.
    pub fn heal(&self) {
        let mut s = self.state.lock();
        s.scheduled.clear();
        s.random = None;
    }

    /// Limits the bytes all files together may hold (`None`: no limit). A write or a
    /// length change that would pass it writes what fits and then fails with `ENOSPC`.
    pub fn set_capacity(&self, bytes: Option<u64>) {
        self.state.lock().capacity = bytes;
    }

    /// The bytes all files hold now.
    pub fn used_bytes(&self) -> u64 {
        self.state.lock().used()
    }

    /// How many calls were made, and how many of them were made to fail.
    pub fn calls(&self) -> (u64, u64) {
        let s = self.state.lock();
        (s.calls, s.faults)
    }

    /// Writes a whole file, durably (name and bytes), creating its directory: for
    /// laying out a store's files before opening it.
    pub fn put_file(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let (dir, name) = split(path)?;
        let mut s = self.state.lock();
        let ino = s.next_ino;
        s.next_ino += 1;
        s.inodes.insert(
            ino,
            Inode {
                data: Content::of(bytes),
                durable: Content::of(bytes),
                ..Inode::default()
            },
        );
        let d = s.make_dir(dir);
        let replaced = d.live.insert(name.to_owned(), ino).is_some();
        let replaced = d.durable.insert(name.to_owned(), ino).is_some() || replaced;
        // Only a file put in place of another can leave an inode nothing refers to.
        if replaced {
            s.collect();
        }
        Ok(())
    }

    /// The bytes a read of `path` sees now (`None` if there is no such file).
    pub fn file(&self, path: &Path) -> Option<Vec<u8>> {
        let s = self.state.lock();
        let ino = s.lookup(path).ok()?;
        s.inodes.get(&ino).map(|i| i.data.to_vec())
    }

    /// The names in `dir` now, sorted.
    pub fn names(&self, dir: &Path) -> Vec<String> {
        let s = self.state.lock();
        s.dir(dir)
            .map(|d| {
                let mut names: Vec<String> = d.live.keys().cloned().collect();
                names.sort_unstable();
                names
            })
            .unwrap_or_default()
    }

    fn live(&self) -> io::Result<parking_lot::MutexGuard<'_, State>> {
        let s = self.state.lock();
        if s.generation != self.generation {
            return Err(crashed());
        }
        Ok(s)
    }
}

impl FileSystem for SimFs {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn FileHandle>> {
        let mut s = self.live()?;
        if let Some(k) = s.fault(Op::Open) {
            return Err(k.error());
        }
        let (dir, name) = split(path)?;
        let existing = s
            .dir(dir)
            .ok_or_else(|| not_found(dir))?
            .live
            .get(name)
            .copied();
        let ino = match (existing, mode) {
            (Some(_), OpenMode::CreateNew) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{}: exists (simulated)", path.display()),
                ));
            }
            (Some(ino), OpenMode::Truncate) => {
                let inode = s.inodes.get_mut(&ino).expect("linked inodes exist");
                inode.data.set_len(0);
                inode.pending.push(FileOp::SetLen(0));
                ino
            }
            (Some(ino), _) => ino,
            (None, OpenMode::Read | OpenMode::Write) => return Err(not_found(path)),
            (None, _) => {
                let ino = s.next_ino;
                s.next_ino += 1;
                s.inodes.insert(ino, Inode::default());
                let d = s.dir_mut(dir)?;
                d.live.insert(name.to_owned(), ino);
                d.pending.push(DirOp::Link(name.to_owned(), ino));
                ino
            }
        };
        s.inodes.get_mut(&ino).expect("linked inodes exist").open += 1;
        let handle = s.next_handle;
        s.next_handle += 1;
        Ok(Arc::new(SimFile {
            fs: self.clone(),
            ino,
            handle,
            writable: mode != OpenMode::Read,
        }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.live()?;
        if let Some(k) = s.fault(Op::Rename) {
            return Err(k.error());
        }
        let (dir, from_name) = split(from)?;
        let (to_dir, to_name) = split(to)?;
        if dir != to_dir {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "the simulated file system renames within one directory only",
            ));
        }
        let d = s.dir_mut(dir)?;
        let ino = d.live.remove(from_name).ok_or_else(|| not_found(from))?;
        d.live.insert(to_name.to_owned(), ino);
        d.pending
            .push(DirOp::Rename(from_name.to_owned(), to_name.to_owned()));
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut s = self.live()?;
        if let Some(k) = s.fault(Op::Remove) {
            return Err(k.error());
        }
        let (dir, name) = split(path)?;
        let d = s.dir_mut(dir)?;
        d.live.remove(name).ok_or_else(|| not_found(path))?;
        d.pending.push(DirOp::Unlink(name.to_owned()));
        Ok(())
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<DirEntry>> {
        let mut s = self.live()?;
        if let Some(k) = s.fault(Op::List) {
            return Err(k.error());
        }
        let d = s.dir(dir).ok_or_else(|| not_found(dir))?;
        let mut entries: Vec<DirEntry> = d
            .live
            .iter()
            .map(|(name, ino)| DirEntry {
                name: name.clone(),
                len: s.inodes.get(ino).map_or(0, |i| i.data.len),
            })
            .collect();
        entries.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.live()?;
        match s.fault(Op::SyncDir) {
            Some(FaultKind::Io) => {
                // As a failed fsync: what it could not write is lost to a crash.
                s.dir_mut(dir)?.pending.clear();
                return Err(FaultKind::Io.error());
            }
            Some(k) => return Err(k.error()),
            None => {}
        }
        let d = s.dir_mut(dir)?;
        let mut dropped = false;
        for op in std::mem::take(&mut d.pending) {
            dropped |= op.apply(&mut d.durable);
        }
        // Only a durable name going away can leave an inode nothing refers to.
        if dropped {
            s.collect();
        }
        Ok(())
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.live()?;
        for d in dir.ancestors() {
            s.make_dir(d);
        }
        Ok(())
    }
}

/// An open file of a [`SimFs`].
struct SimFile {
    fs: SimFs,
    ino: u64,
    handle: u64,
    writable: bool,
}

impl std::fmt::Debug for SimFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimFile").field("ino", &self.ino).finish()
    }
}

impl SimFile {
    fn read_only() -> io::Error {
        io::Error::from_raw_os_error(9)
    }
}

impl FileHandle for SimFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let mut s = self.fs.live()?;
        if let Some(k) = s.fault(Op::Read) {
            return Err(k.error());
        }
        let data = &s.inodes.get(&self.ino).ok_or_else(crashed)?.data;
        Ok(data.read(offset, buf))
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize> {
        if !self.writable {
            return Err(Self::read_only());
        }
        let mut s = self.fs.live()?;
        let fault = s.fault(Op::Write);
        let mut n = buf.len();
        match fault {
            Some(FaultKind::ShortWrite) if n > 1 => n = 1 + s.rng.upto(n as u64 - 2) as usize,
            Some(FaultKind::ShortWrite) | None => {}
            Some(k) => return Err(k.error()),
        }
        let len = s.inodes.get(&self.ino).ok_or_else(crashed)?.data.len;
        let growth = (offset + n as u64).saturating_sub(len);
        let room = s.room();
        if growth > room {
            let fits = (len + room).saturating_sub(offset);
            if fits == 0 {
                return Err(FaultKind::NoSpace.error());
            }
            n = n.min(usize::try_from(fits).unwrap_or(usize::MAX));
        }
        if n == 0 {
            return Ok(0);
        }
        let inode = s.inodes.get_mut(&self.ino).ok_or_else(crashed)?;
        let op = if all_zeros(&buf[..n]) {
            FileOp::Zeros {
                at: offset,
                len: n as u64,
            }
        } else {
            FileOp::Write {
                at: offset,
                bytes: buf[..n].to_vec(),
            }
        };
        op.apply(&mut inode.data);
        inode.pending.push(op);
        Ok(n)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        if !self.writable {
            return Err(Self::read_only());
        }
        let mut s = self.fs.live()?;
        if let Some(k) = s.fault(Op::SetLen) {
            return Err(k.error());
        }
        let now = s.inodes.get(&self.ino).ok_or_else(crashed)?.data.len;
        if len.saturating_sub(now) > s.room() {
            return Err(FaultKind::NoSpace.error());
        }
        let inode = s.inodes.get_mut(&self.ino).ok_or_else(crashed)?;
        let op = FileOp::SetLen(len);
        op.apply(&mut inode.data);
        inode.pending.push(op);
        Ok(())
    }

    fn sync_all(&self) -> io::Result<()> {
        let mut s = self.fs.live()?;
        let fault = s.fault(Op::Sync);
        let inode = s.inodes.get_mut(&self.ino).ok_or_else(crashed)?;
        match fault {
            Some(FaultKind::Io) => {
                // fsyncgate: the pages that failed to write are marked clean; reads
                // still see them, a crash loses them, the next fsync reports success.
                inode.pending.clear();
                return Err(FaultKind::Io.error());
            }
            Some(FaultKind::ShortWrite) | None => {}
            Some(k) => return Err(k.error()),
        }
        let Inode {
            durable, pending, ..
        } = inode;
        for op in pending.drain(..) {
            op.apply(durable);
        }
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.sync_all()
    }

    fn len(&self) -> io::Result<u64> {
        let s = self.fs.live()?;
        Ok(s.inodes.get(&self.ino).ok_or_else(crashed)?.data.len)
    }

    fn try_lock(&self) -> io::Result<bool> {
        let mut s = self.fs.live()?;
        match s.locks.get(&self.ino) {
            Some(&holder) if holder != self.handle => Ok(false),
            _ => {
                s.locks.insert(self.ino, self.handle);
                Ok(true)
            }
        }
    }
}

impl Drop for SimFile {
    fn drop(&mut self) {
        let mut s = self.fs.state.lock();
        if s.generation != self.fs.generation {
            return;
        }
        if s.locks.get(&self.ino) == Some(&self.handle) {
            s.locks.remove(&self.ino);
        }
        if let Some(i) = s.inodes.get_mut(&self.ino) {
            i.open = i.open.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    fn setup(seed: u64) -> SimFs {
        let fs = SimFs::new(seed);
        fs.create_dir_all(&p("/d")).unwrap();
        fs
    }

    /// Against a plain byte vector: a zero tail kept as a length reads, grows, shrinks
    /// and is overwritten exactly as stored zeros would be.
    #[test]
    fn contents_with_a_zero_tail_behave_as_plain_bytes() {
        let (mut c, mut plain) = (Content::default(), Vec::<u8>::new());
        let mut rng = Rng(7);
        for _ in 0..2_000 {
            let at = rng.upto(300);
            let len = rng.upto(100);
            match rng.upto(3) {
                0 => {
                    let bytes: Vec<u8> = (0..len).map(|_| 1 + rng.upto(254) as u8).collect();
                    c.write(at, &bytes);
                    let end = (at + len) as usize;
                    if plain.len() < end {
                        plain.resize(end, 0);
                    }
                    plain[at as usize..end].copy_from_slice(&bytes);
                }
                1 => {
                    c.zero(at, len);
                    let end = (at + len) as usize;
                    if plain.len() < end {
                        plain.resize(end, 0);
                    }
                    plain[at as usize..end].fill(0);
                }
                _ => {
                    c.set_len(at);
                    plain.resize(at as usize, 0);
                }
            }
            assert_eq!(c.to_vec(), plain);
            assert!(c.bytes.len() as u64 <= c.len);
            let mut buf = [9u8; 64];
            let from = rng.upto(400);
            let n = c.read(from, &mut buf);
            let want = plain.get(from as usize..).unwrap_or(&[]);
            assert_eq!(&buf[..n], &want[..n.min(want.len())]);
            assert_eq!(n, want.len().min(64));
        }
        assert!(all_zeros(&[0; 10_000]) && !all_zeros(&[0, 0, 1]) && all_zeros(&[]));
    }

    #[test]
    fn synced_bytes_and_synced_names_survive_every_crash() {
        for seed in 0..200 {
            let fs = setup(seed);
            let f = fs.open(&p("/d/a"), OpenMode::CreateNew).unwrap();
            f.write_all_at(b"hello", 0).unwrap();
            f.sync_all().unwrap();
            fs.sync_dir(&p("/d")).unwrap();
            f.write_all_at(b" world", 5).unwrap();
            let after = fs.crash();
            let got = after.file(&p("/d/a")).expect("the name was synced");
            assert!(got.starts_with(b"hello"), "seed {seed}: {got:?}");
            assert!(b"hello world".starts_with(&got), "seed {seed}: {got:?}");
        }
    }

    #[test]
    fn a_crash_keeps_some_prefix_of_pending_writes_sometimes_torn_never_reordered() {
        let mut outcomes = HashSet::new();
        for seed in 0..500 {
            let fs = setup(seed);
            let f = fs.open(&p("/d/a"), OpenMode::CreateNew).unwrap();
            fs.sync_dir(&p("/d")).unwrap();
            f.write_all_at(b"aaaa", 0).unwrap();
            f.write_all_at(b"bbbb", 4).unwrap();
            let got = fs.crash().file(&p("/d/a")).unwrap();
            assert!(b"aaaabbbb".starts_with(&got), "seed {seed}: {got:?}");
            outcomes.insert(got.len());
        }
        // Nothing, a torn first write, the first, a torn second, both.
        assert_eq!(outcomes, (0..=8).collect(), "every cut is reachable");
    }

    #[test]
    fn an_unsynced_name_may_vanish_and_a_rename_is_all_or_nothing() {
        let (mut vanished, mut kept, mut renamed, mut old) = (0, 0, 0, 0);
        for seed in 0..300 {
            let fs = setup(seed);
            fs.put_file(&p("/d/M"), b"old").unwrap();
            let f = fs.open(&p("/d/M.tmp"), OpenMode::CreateNew).unwrap();
            f.write_all_at(b"new", 0).unwrap();
            f.sync_all().unwrap();
            fs.rename(&p("/d/M.tmp"), &p("/d/M")).unwrap();
            let after = fs.crash();
            match after.file(&p("/d/M")).as_deref() {
                Some(b"new") => renamed += 1,
                Some(b"old") => old += 1,
                other => panic!("seed {seed}: {other:?}"),
            }
            match after.file(&p("/d/M.tmp")) {
                None => vanished += 1,
                Some(b) => {
                    assert_eq!(b, b"new");
                    kept += 1
                }
            }
        }
        assert!(vanished > 0 && kept > 0 && renamed > 0 && old > 0);
    }

    #[test]
    fn a_failed_fsync_drops_its_pages_and_the_retry_succeeds_over_the_loss() {
        for seed in 0..50 {
            let fs = setup(seed);
            let f = fs.open(&p("/d/a"), OpenMode::CreateNew).unwrap();
            fs.sync_dir(&p("/d")).unwrap();
            f.write_all_at(b"lost", 0).unwrap();
            fs.fail_nth(Op::Sync, 1, FaultKind::Io);
            assert_eq!(f.sync_data().unwrap_err().raw_os_error(), Some(5));
            assert_eq!(
                fs.file(&p("/d/a")).unwrap(),
                b"lost",
                "the cache still shows it"
            );
            f.sync_data().unwrap();
            assert_eq!(fs.crash().file(&p("/d/a")).unwrap(), b"", "seed {seed}");
        }
    }

    #[test]
    fn a_full_disk_writes_what_fits_then_refuses_until_space_is_freed() {
        let fs = setup(1);
        fs.set_capacity(Some(10));
        let f = fs.open(&p("/d/a"), OpenMode::CreateNew).unwrap();
        assert_eq!(f.write_at(b"0123456789abc", 0).unwrap(), 10);
        let e = f.write_at(b"x", 10).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(28));
        assert_eq!(e.kind(), io::ErrorKind::StorageFull);
        f.write_all_at(b"AB", 0).unwrap(); // overwriting needs no space
        f.set_len(4).unwrap();
        f.write_all_at(b"xyz", 4).unwrap();
        assert_eq!(fs.file(&p("/d/a")).unwrap(), b"AB23xyz");
    }

    #[test]
    fn a_directory_is_found_by_its_components_and_lists_its_names_sorted() {
        let fs = setup(3);
        for name in ["c", "a", "b"] {
            fs.open(&p(&format!("/d/{name}")), OpenMode::CreateNew)
                .unwrap();
        }
        let names = |dir: &str| -> Vec<String> {
            let listed = fs.list_dir(&p(dir)).unwrap();
            listed.into_iter().map(|e| e.name).collect()
        };
        assert_eq!(names("/d"), ["a", "b", "c"]);
        assert_eq!(names("/d/"), ["a", "b", "c"]);
        assert_eq!(names("//d/."), ["a", "b", "c"]);
        assert_eq!(fs.names(&p("/d/")), ["a", "b", "c"]);
        fs.create_dir_all(&p("/d/")).unwrap();
        assert_eq!(names("/d"), ["a", "b", "c"], "made again, still the same");
        assert!(fs.list_dir(&p("/e")).is_err());
    }

    #[test]
    fn a_removed_file_frees_its_space_and_a_replaced_one_is_dropped() {
        let fs = setup(4);
        fs.set_capacity(Some(10));
        let f = fs.open(&p("/d/a"), OpenMode::CreateNew).unwrap();
        f.write_all_at(b"0123456789", 0).unwrap();
        drop(f);
        fs.remove_file(&p("/d/a")).unwrap();
        fs.sync_dir(&p("/d")).unwrap();
        let g = fs.open(&p("/d/b"), OpenMode::CreateNew).unwrap();
        g.write_all_at(b"0123456789", 0).unwrap();
        drop(g);
        fs.sync_dir(&p("/d")).unwrap();
        fs.put_file(&p("/d/b"), b"xy").unwrap();
        assert_eq!(fs.file(&p("/d/b")).unwrap(), b"xy");
        assert_eq!(
            fs.state.lock().inodes.len(),
            1,
            "the replaced inode is gone"
        );
    }

    #[test]
    fn scheduled_faults_hit_exactly_the_nth_call_and_short_writes_are_retried() {
        let fs = setup(7);
        let f = fs.open(&p("/d/a"), OpenMode::CreateNew).unwrap();
        fs.fail_nth(Op::Write, 2, FaultKind::NoSpace);
        f.write_at(b"a", 0).unwrap();
        assert_eq!(f.write_at(b"b", 1).unwrap_err().raw_os_error(), Some(28));
        f.write_at(b"b", 1).unwrap();
        fs.fail_nth(Op::Write, 1, FaultKind::ShortWrite);
        fs.fail_nth(Op::Write, 2, FaultKind::Interrupted);
        f.write_all_at(b"cdefgh", 2).unwrap();
        assert_eq!(fs.file(&p("/d/a")).unwrap(), b"abcdefgh");
        assert_eq!(fs.calls().1, 3);
    }

    #[test]
    fn a_dead_process_can_neither_read_nor_write_nor_hold_its_lock() {
        let fs = setup(3);
        let f = fs.open(&p("/d/LOCK"), OpenMode::Create).unwrap();
        assert!(f.try_lock().unwrap());
        let other = fs.open(&p("/d/LOCK"), OpenMode::Create).unwrap();
        assert!(!other.try_lock().unwrap(), "held by the first handle");
        let after = fs.crash();
        assert!(f.write_at(b"x", 0).is_err());
        assert!(fs.open(&p("/d/x"), OpenMode::Create).is_err());
        let g = after.open(&p("/d/LOCK"), OpenMode::Create).unwrap();
        assert!(g.try_lock().unwrap(), "a crash releases locks");
        drop(f);
        let h = after.open(&p("/d/LOCK"), OpenMode::Create).unwrap();
        assert!(
            !h.try_lock().unwrap(),
            "the dead handle's drop released nothing"
        );
    }

    #[test]
    fn the_same_seed_gives_the_same_crash() {
        let run = |seed| {
            let fs = setup(seed);
            let f = fs.open(&p("/d/a"), OpenMode::CreateNew).unwrap();
            fs.random_faults(5, &[FaultKind::ShortWrite, FaultKind::Interrupted]);
            for i in 0..50u64 {
                let _ = f.write_all_at(&[i as u8; 7], i * 7);
            }
            (fs.crash().file(&p("/d/a")), fs.calls())
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
    }
}
