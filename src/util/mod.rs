//! Building blocks with no knowledge of sessions: the bounded bincode codec, OS
//! randomness in bulk, crash points for tests, the directory lock, private files and
//! directories, a cache-line padding, hashers for keys that are random already, and
//! the file-system seam (the operating system's, or a simulated disk that fails and
//! crashes on demand).

pub(crate) mod codec;
pub(crate) mod entropy;
pub(crate) mod failpoint;
pub(crate) mod fs;
pub(crate) mod hash;
pub(crate) mod lock;
pub(crate) mod padded;
pub(crate) mod parallel;
pub mod vfs;

/// The cores this process may run on, asked of the OS once (`available_parallelism`
/// reads cgroup files on Linux at every call).
pub(crate) fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}
