//! OS randomness in bulk, for tokens and ids: a pool read from the OS CSPRNG 4 KiB at a
//! time ([`EntropyPool`]), each byte handed out once, and a store's set of pools, one
//! per core ([`Entropy`]).

use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::util::padded::Padded;

/// Bytes read from the operating system's CSPRNG in bulk and handed out once each.
///
/// A `getrandom` call costs a system call and the kernel's per-call generator setup
/// (a sizeable share of a session's creation: `docs/performance.md#measurements-behind-design-decisions`); reading 4 KiB at a time and
/// handing out 40 bytes per session keeps every token's bytes straight from the OS
/// generator while paying that once per hundred sessions. Each byte is used once, then
/// overwritten. A pool belongs to one store ([`Entropy`]) and sits behind a lock; a
/// process forked with a store in it cannot write to that store (its log writer thread
/// does not survive the fork), so forked copies of the pool are never used to mint
/// tokens for a live store.
pub(crate) struct EntropyPool {
    buf: Box<[u8; POOL_BYTES]>,
    pos: usize,
    /// How much the next refill draws: [`FIRST_REFILL`], doubling up to the pool, so a
    /// store that mints a few tokens asks the OS for a few hundred bytes, not 4 KiB.
    next_refill: usize,
}

const POOL_BYTES: usize = 4096;
const FIRST_REFILL: usize = 256;

impl EntropyPool {
    pub(crate) fn new() -> EntropyPool {
        EntropyPool {
            buf: Box::new([0u8; POOL_BYTES]),
            pos: POOL_BYTES,
            next_refill: FIRST_REFILL,
        }
    }

    /// Fills `out` with fresh OS randomness.
    pub(crate) fn fill(&mut self, out: &mut [u8]) -> Result<()> {
        if out.len() > POOL_BYTES {
            return getrandom::fill(out).map_err(|e| Error::Entropy(e.to_string()));
        }
        if POOL_BYTES - self.pos < out.len() {
            let n = self.next_refill.max(out.len());
            let from = POOL_BYTES - n;
            getrandom::fill(&mut self.buf[from..]).map_err(|e| Error::Entropy(e.to_string()))?;
            self.pos = from;
            self.next_refill = (n * 2).min(POOL_BYTES);
        }
        let end = self.pos + out.len();
        out.copy_from_slice(&self.buf[self.pos..end]);
        self.buf[self.pos..end].fill(0);
        self.pos = end;
        Ok(())
    }
}

/// A store's entropy: one [`EntropyPool`] per stripe, each on its own cache line, and
/// each thread drawing from the stripe it was assigned the first time it drew. With
/// one pool behind one lock, every create on every core took the same lock and read
/// the same 4 KiB, whose cache lines then moved between cores with each session;
/// stripes made two threads create faster, and one thread no slower (measured in
/// `docs/performance.md#measurements-behind-design-decisions`).
pub(crate) struct Entropy {
    pools: Box<[Padded<Mutex<EntropyPool>>]>,
}

/// Stripes handed out so far, in thread order.
static STRIPES: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static STRIPE: usize = STRIPES.fetch_add(1, Ordering::Relaxed);
}

impl Entropy {
    /// As many stripes as the machine has cores, rounded up to a power of two (at most
    /// 64), so a thread's stripe is a mask away.
    pub(crate) fn new() -> Entropy {
        let cores = crate::util::cores().min(64);
        let n = cores.next_power_of_two();
        Entropy {
            pools: (0..n)
                .map(|_| Padded(Mutex::new(EntropyPool::new())))
                .collect(),
        }
    }

    fn pool(&self) -> parking_lot::MutexGuard<'_, EntropyPool> {
        self.stripe(STRIPE.try_with(|s| *s).unwrap_or(0)).lock()
    }

    fn stripe(&self, n: usize) -> &Mutex<EntropyPool> {
        &self.pools[n & (self.pools.len() - 1)]
    }

    /// Fills `out` with fresh OS randomness, from this thread's stripe.
    pub(crate) fn fill(&self, out: &mut [u8]) -> Result<()> {
        self.pool().fill(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 40 bytes as a token and an id would take them, as text, to compare.
    fn draw(fill: impl FnOnce(&mut [u8]) -> Result<()>) -> String {
        let mut b = [0u8; 40];
        fill(&mut b).unwrap();
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn a_fresh_pool_asks_the_os_for_a_little_first_then_twice_as_much_each_time() {
        let mut pool = EntropyPool::new();
        let mut drawn = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..400 {
            let before = pool.pos;
            let token = draw(|b| pool.fill(b));
            assert!(seen.insert(token), "a repeated draw");
            if pool.pos < before {
                // Refilled: the draw took 40 of the bytes the OS gave.
                drawn.push(POOL_BYTES - pool.pos + 40);
            }
        }
        assert_eq!(&drawn[..5], &[256, 512, 1024, 2048, 4096], "{drawn:?}");
        assert!(drawn[5..].iter().all(|&n| n == 4096), "{drawn:?}");
    }

    #[test]
    fn entropy_pool_hands_out_each_byte_once_and_refills() {
        let mut pool = EntropyPool::new();
        let mut seen = std::collections::HashSet::new();
        // Several refills' worth: every draw distinct.
        for _ in 0..1000 {
            assert!(seen.insert(draw(|b| pool.fill(b))));
        }
        let mut big = vec![0u8; 10_000];
        pool.fill(&mut big).unwrap();
        assert!(big.iter().any(|&b| b != 0));
    }

    #[test]
    fn threads_draw_from_their_own_stripes_and_no_two_draws_repeat() {
        let entropy = Entropy::new();
        let stripes = entropy.pools.len();
        assert!(stripes.is_power_of_two());
        // Each thread keeps one stripe number; no two threads share one; as many
        // consecutive numbers as there are stripes reach every stripe.
        let mine = STRIPE.with(|s| *s);
        assert_eq!(STRIPE.with(|s| *s), mine);
        let theirs: Vec<usize> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8).map(|_| s.spawn(|| STRIPE.with(|s| *s))).collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let numbers: std::collections::HashSet<_> = theirs.iter().chain([&mine]).collect();
        assert_eq!(numbers.len(), 9);
        let reached: std::collections::HashSet<_> = (mine..mine + stripes)
            .map(|n| std::ptr::from_ref(entropy.stripe(n)) as usize)
            .collect();
        assert_eq!(reached.len(), stripes);
        let drawn: Vec<Vec<String>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|_| s.spawn(|| (0..1500).map(|_| draw(|b| entropy.fill(b))).collect()))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let all: std::collections::HashSet<_> = drawn.iter().flatten().collect();
        assert_eq!(all.len(), 4 * 1500);
    }
}
