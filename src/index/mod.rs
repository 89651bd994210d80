//! The in-memory index — it knows no disk, journal or store: a session as the index
//! holds it ([`entry`]), the shards mapping token hashes to sessions ([`shard`]), the
//! timing wheel of each shard's deadlines ([`wheel`]), the per-user index
//! ([`users`]), what the sessions cost in memory ([`usage`]) and what each shard
//! counts as they come and go ([`tally`]).

pub(crate) mod entry;
pub(crate) mod shard;
pub(crate) mod tally;
pub(crate) mod usage;
pub(crate) mod users;
pub(crate) mod wheel;
