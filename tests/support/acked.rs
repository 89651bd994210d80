//! Checking a reopened store against the writes it acknowledged: each a token and the
//! `u32` it last put under "v" (`tests/disk_full.rs`, `tests/io_faults.rs`).

#![allow(dead_code)]

use sessiondb::{Store, Token};

/// Every acknowledged session is there with its value, and the indexes agree.
pub fn check_all(store: &Store, acked: &[(Token, u32)]) {
    for (t, v) in acked {
        let s = store.get(t).expect("acknowledged, so there");
        assert_eq!(s.get::<u32>("v").unwrap(), Some(*v));
    }
    store.verify().unwrap();
}
