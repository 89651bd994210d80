//! The log-structured store: every change appended to checksummed segment files by one
//! writer thread with group commit ([`writer`]), replayed on open ([`recovery`]), and
//! periodically rewritten as a compact base of the live set ([`compaction`]).
//!
//! | file | owns |
//! |---|---|
//! | [`format`] | file names, headers and the format version, the record frame |
//! | [`manifest`] | which files make up the log and where each sealed one ends |
//! | [`record`] | record payloads, encoding changes, decoding and validating records |
//! | [`segment`] | the active segment, appending batches, rolling, the file list |
//! | [`writer`] | the writer thread, durability modes, group commit, touch coalescing |
//! | [`recovery`] | replay, torn-tail truncation, corruption reports, salvage |
//! | [`compaction`] | writing a base from a snapshot and switching to it atomically |

pub(crate) mod compaction;
pub(crate) mod files;
pub(crate) mod format;
pub(crate) mod manifest;
pub(crate) mod record;
pub(crate) mod recovery;
pub(crate) mod segment;
