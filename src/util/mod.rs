//! Building blocks with no knowledge of sessions: the bounded bincode codec, OS
//! randomness in bulk, crash points for tests, the directory lock, private files and directory syncs, a cache-line
//! padding, and hashers for keys that are random already.

pub(crate) mod codec;
pub(crate) mod entropy;
pub(crate) mod failpoint;
pub(crate) mod fs;
pub(crate) mod hash;
pub(crate) mod lock;
pub(crate) mod padded;
