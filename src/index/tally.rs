//! What a shard counts as sessions come and go ([`Tally`]): plain integers, changed
//! under the shard's write lock by the operation that holds it anyway, summed over the
//! shards when read (`Store::stats`, a metrics publish) — so counting costs a request
//! no atomic and no shared cache line.

use crate::model::event::EndReason;

/// Sessions created, imported, rotated, logged in and ended (by reason) in one shard
/// since the store opened. Recovery counts none of them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    pub(crate) created: u64,
    pub(crate) imported: u64,
    pub(crate) rotated: u64,
    pub(crate) logins: u64,
    /// By [`EndReason::index`].
    pub(crate) ended: [u64; EndReason::ALL.len()],
}

impl Tally {
    /// Counts one session ended for `reason`.
    #[inline]
    pub(crate) fn end(&mut self, reason: EndReason) {
        self.ended[reason.index()] += 1;
    }

    /// Adds `other` (another shard's) to this one.
    pub(crate) fn add(&mut self, other: &Tally) {
        self.created += other.created;
        self.imported += other.imported;
        self.rotated += other.rotated;
        self.logins += other.logins;
        for (a, b) in self.ended.iter_mut().zip(other.ended) {
            *a += b;
        }
    }
}
