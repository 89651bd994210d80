//! Durability of a store opened on a directory: what a reopen restores, the directory
//! lock, expiry across restarts, compaction (alone, racing writers, automatic), and
//! recovery from torn tails, truncation at every byte, bit flips, missing segments,
//! newer format versions and garbage files; sign-in factors and devices.
//!
//! Public API only: the files are damaged with `std::fs`, the way a crash or a bad disk
//! would. What these tests know of the format is what `src/backend/log/format.rs` and
//! `src/backend/log/manifest.rs` document: `seg-%016x.log` / `base-%016x.log` files starting
//! with a 25-byte header (magic | u32 version | kind | u64 seq | crc32 of the first 21
//! bytes) and then frames (u32 length | crc32 | type u8 | payload), and a `MANIFEST`
//! naming them. A crash image is a copy of a store's files taken while it is open.
//!
//! One test binary (`cargo test --test durability`), one module per topic; what more
//! than one topic uses is in [`helpers`].

mod helpers;

mod base;
mod compaction;
mod corruption;
mod expiry;
mod garbage;
mod lock;
mod manifest;
mod memory;
mod not_before;
mod reopen;
mod signin;
mod torn_tail;
