//! [`Padded`]: a value alone on its cache line.

use std::ops::Deref;

/// Keeps a lock (or a flag) on its own cache line (128 bytes: x86 prefetches lines in
/// pairs), so threads on neighbouring shards do not contend through false sharing, and
/// writes to a neighbour do not evict a read-mostly value from its readers' caches.
#[repr(align(128))]
pub(crate) struct Padded<T>(pub(crate) T);

impl<T> Deref for Padded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}
