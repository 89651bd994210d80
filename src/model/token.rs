//! Identity: the secret [`Token`] a client holds, the [`TokenHash`] the store keys by,
//! and the public [`SessionId`] that is safe to show and log.
//!
//! A token is 192 bits from the operating system's CSPRNG, written as 32 URL-safe
//! base64 characters (no padding, so every token has exactly one spelling). The store
//! never keeps a token: it keys sessions by the first 128 bits of the token's BLAKE3
//! hash. A leaked data file or a timing side channel on the index therefore yields
//! hashes, from which no token can be computed (the Rack CVE-2019-16782 lesson), while
//! 128 bits keep accidental collisions out of reach (about 2^-64 at 2^32 sessions).
//!
//! The public id is drawn independently of the token, so it reveals nothing about it,
//! and it stays the same when the token is rotated.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::util::padded::Padded;

/// Bytes of randomness in a token.
pub const TOKEN_BYTES: usize = 24;
/// Length of a token's string form.
pub const TOKEN_STR_LEN: usize = 32;

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// The secret that addresses a session: give it to the client (a cookie value) and to
/// nobody else.
///
/// Its `Debug` form is redacted, so it does not end up in logs by accident; `Display`
/// (and [`Token::as_string`]) give the 32-character form to send to the client.
#[derive(Clone, PartialEq, Eq)]
pub struct Token([u8; TOKEN_BYTES]);

impl Token {
    /// Draws a fresh token from the operating system's CSPRNG.
    ///
    /// # Errors
    /// [`Error::Entropy`] if the OS generator fails.
    pub fn generate() -> Result<Token> {
        let mut bytes = [0u8; TOKEN_BYTES];
        getrandom::fill(&mut bytes).map_err(|e| Error::Entropy(e.to_string()))?;
        Ok(Token(bytes))
    }

    /// Parses the 32-character string form strictly: any other length, or a character
    /// outside `A-Z a-z 0-9 - _`, is an error.
    ///
    /// # Errors
    /// [`Error::InvalidToken`] naming what was wrong.
    pub fn parse(s: &str) -> Result<Token> {
        let s = s.as_bytes();
        if s.len() != TOKEN_STR_LEN {
            return Err(Error::InvalidToken {
                reason: "a token is exactly 32 characters long",
            });
        }
        let mut out = [0u8; TOKEN_BYTES];
        for (chunk, dst) in s.chunks_exact(4).zip(out.chunks_exact_mut(3)) {
            let mut n: u32 = 0;
            for &c in chunk {
                n = (n << 6) | u32::from(decode_char(c)?);
            }
            dst[0] = (n >> 16) as u8;
            dst[1] = (n >> 8) as u8;
            dst[2] = n as u8;
        }
        Ok(Token(out))
    }

    /// Builds a token from raw bytes (for integrations that store tokens in another
    /// encoding). The bytes must come from a CSPRNG.
    pub fn from_bytes(bytes: [u8; TOKEN_BYTES]) -> Token {
        Token(bytes)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; TOKEN_BYTES] {
        &self.0
    }

    /// The 32-character string form to hand to the client.
    pub fn as_string(&self) -> String {
        let mut s = String::with_capacity(TOKEN_STR_LEN);
        for chunk in self.0.chunks_exact(3) {
            let n = (u32::from(chunk[0]) << 16) | (u32::from(chunk[1]) << 8) | u32::from(chunk[2]);
            for shift in [18, 12, 6, 0] {
                s.push(B64[((n >> shift) & 63) as usize] as char);
            }
        }
        s
    }

    /// The hash the store keys this token's session by.
    pub fn hash(&self) -> TokenHash {
        let digest = blake3::hash(&self.0);
        let mut first = [0u8; 16];
        first.copy_from_slice(&digest.as_bytes()[..16]);
        TokenHash(u128::from_le_bytes(first))
    }
}

fn decode_char(c: u8) -> Result<u8> {
    match c {
        b'A'..=b'Z' => Ok(c - b'A'),
        b'a'..=b'z' => Ok(c - b'a' + 26),
        b'0'..=b'9' => Ok(c - b'0' + 52),
        b'-' => Ok(62),
        b'_' => Ok(63),
        _ => Err(Error::InvalidToken {
            reason: "a token contains only the characters A-Z, a-z, 0-9, '-' and '_'",
        }),
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_string())
    }
}

impl FromStr for Token {
    type Err = Error;
    fn from_str(s: &str) -> Result<Token> {
        Token::parse(s)
    }
}

/// Bytes read from the operating system's CSPRNG in bulk and handed out once each.
///
/// A `getrandom` call costs a system call and the kernel's per-call generator setup
/// (about 0.4 µs on a VM, a sixth of a session's creation); reading 4 KiB at a time and
/// handing out 40 bytes per session keeps every token's bytes straight from the OS
/// generator while paying that once per hundred sessions. Each byte is used once, then
/// overwritten. A pool belongs to one store ([`Entropy`]) and sits behind a lock; a
/// process forked with a store in it cannot write to that store (its log writer thread
/// does not survive the fork), so forked copies of the pool are never used to mint
/// tokens for a live store.
pub(crate) struct EntropyPool {
    buf: Box<[u8; POOL_BYTES]>,
    pos: usize,
}

const POOL_BYTES: usize = 4096;

impl EntropyPool {
    pub(crate) fn new() -> EntropyPool {
        EntropyPool {
            buf: Box::new([0u8; POOL_BYTES]),
            pos: POOL_BYTES,
        }
    }

    /// Fills `out` with fresh OS randomness.
    pub(crate) fn fill(&mut self, out: &mut [u8]) -> Result<()> {
        if out.len() > POOL_BYTES {
            return getrandom::fill(out).map_err(|e| Error::Entropy(e.to_string()));
        }
        if POOL_BYTES - self.pos < out.len() {
            getrandom::fill(&mut self.buf[..]).map_err(|e| Error::Entropy(e.to_string()))?;
            self.pos = 0;
        }
        let end = self.pos + out.len();
        out.copy_from_slice(&self.buf[self.pos..end]);
        self.buf[self.pos..end].fill(0);
        self.pos = end;
        Ok(())
    }

    /// A fresh public id and token.
    pub(crate) fn session(&mut self) -> Result<(SessionId, Token)> {
        let mut bytes = [0u8; 16 + TOKEN_BYTES];
        self.fill(&mut bytes)?;
        Ok(split_id_token(bytes))
    }

    /// A fresh token.
    pub(crate) fn token(&mut self) -> Result<Token> {
        let mut bytes = [0u8; TOKEN_BYTES];
        self.fill(&mut bytes)?;
        Ok(Token(bytes))
    }
}

/// A store's entropy: one [`EntropyPool`] per stripe, each on its own cache line, and
/// each thread drawing from the stripe it was assigned the first time it drew. With
/// one pool behind one lock, every create on every core took the same lock and read
/// the same 4 KiB, whose cache lines then moved between cores with each session: two
/// threads creating (2-core VM) made 1.07× the sessions per second with stripes
/// (medians of 8 interleaved runs, Memory and Buffered alike); one thread, the same.
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
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get().min(64));
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

    /// A fresh public id and token.
    pub(crate) fn session(&self) -> Result<(SessionId, Token)> {
        self.pool().session()
    }

    /// A fresh token.
    pub(crate) fn token(&self) -> Result<Token> {
        self.pool().token()
    }
}

fn split_id_token(bytes: [u8; 16 + TOKEN_BYTES]) -> (SessionId, Token) {
    let (id, token) = bytes.split_at(16);
    let id: [u8; 16] = id.try_into().expect("16 bytes");
    let token: [u8; TOKEN_BYTES] = token.try_into().expect("24 bytes");
    (
        SessionId(uuid::Builder::from_random_bytes(id).into_uuid().as_u128()),
        Token(token),
    )
}

/// The first 128 bits of a token's BLAKE3 hash: what the store keeps instead of the
/// token. Uniformly distributed, so its low bits pick a shard directly.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TokenHash(pub(crate) u128);

impl TokenHash {
    /// The raw value.
    pub fn as_u128(self) -> u128 {
        self.0
    }

    /// The hash with raw value `v` (the inverse of [`TokenHash::as_u128`]): for
    /// rebuilding a [`crate::SessionRecord`] that was written out as text, such as the
    /// `sessiondb` tool's export. Only a token whose hash this is reaches the session.
    pub fn from_u128(v: u128) -> TokenHash {
        TokenHash(v)
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenHash({:032x})", self.0)
    }
}

/// A session's public identifier: random, independent of the token, and stable across
/// token rotation. Safe to log, to show on a "your devices" page, to put in events and
/// to revoke by. Written as a hyphenated UUID.
///
/// (Stored 8-byte aligned rather than 16, so a session's state fits a smaller
/// allocation.)
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[repr(C, packed(8))]
pub struct SessionId(pub(crate) u128);

impl SessionId {
    /// Draws a fresh random id and a fresh token, with one call to the OS generator.
    #[cfg(test)]
    pub(crate) fn generate() -> Result<SessionId> {
        let mut bytes = [0u8; 16 + TOKEN_BYTES];
        getrandom::fill(&mut bytes).map_err(|e| Error::Entropy(e.to_string()))?;
        Ok(split_id_token(bytes).0)
    }

    /// Parses the hyphenated form (`xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, 36 characters).
    ///
    /// # Errors
    /// [`Error::InvalidSessionId`] for any other input.
    pub fn parse(s: &str) -> Result<SessionId> {
        if s.len() != 36 {
            return Err(Error::InvalidSessionId {
                reason: "a session id is a hyphenated UUID of 36 characters",
            });
        }
        uuid::Uuid::try_parse(s)
            .map(|u| SessionId(u.as_u128()))
            .map_err(|_| Error::InvalidSessionId {
                reason: "a session id is a hyphenated UUID (hex digits and '-')",
            })
    }

    /// The raw value.
    pub fn as_u128(self) -> u128 {
        self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&uuid::Uuid::from_u128(self.0).hyphenated(), f)
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({self})")
    }
}

impl FromStr for SessionId {
    type Err = Error;
    fn from_str(s: &str) -> Result<SessionId> {
        SessionId::parse(s)
    }
}

/// One tab or window inside a session (see [`crate::Store::open_instance`]). Unique
/// within its session; not durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceId(pub(crate) u32);

impl InstanceId {
    /// The raw value.
    pub fn as_u32(self) -> u32 {
        self.0
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_hash_rebuilt_from_its_raw_value_equals_the_token_hash() {
        let t = Token::generate().unwrap();
        assert_eq!(TokenHash::from_u128(t.hash().as_u128()), t.hash());
    }

    #[test]
    fn token_string_round_trips_and_is_url_safe() {
        for _ in 0..100 {
            let t = Token::generate().unwrap();
            let s = t.as_string();
            assert_eq!(s.len(), TOKEN_STR_LEN);
            assert!(
                s.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
            );
            assert_eq!(Token::parse(&s).unwrap(), t);
        }
    }

    #[test]
    fn token_parse_rejects_wrong_length_and_characters() {
        let good = Token::generate().unwrap().as_string();
        assert!(matches!(
            Token::parse(&good[..31]),
            Err(Error::InvalidToken { .. })
        ));
        assert!(Token::parse(&format!("{good}A")).is_err());
        assert!(Token::parse("").is_err());
        let mut bad = good.clone().into_bytes();
        bad[5] = b'+';
        assert!(Token::parse(std::str::from_utf8(&bad).unwrap()).is_err());
        // Multi-byte characters with the right byte length are rejected, not sliced.
        let s = "é".repeat(16);
        assert_eq!(s.len(), 32);
        assert!(Token::parse(&s).is_err());
    }

    #[test]
    fn entropy_pool_hands_out_each_byte_once_and_refills() {
        let mut pool = EntropyPool::new();
        let mut seen = std::collections::HashSet::new();
        // Several refills' worth: every token distinct.
        for _ in 0..1000 {
            let (id, t) = pool.session().unwrap();
            assert!(seen.insert(t.as_string()));
            assert!(seen.insert(id.to_string()));
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
                .map(|_| {
                    s.spawn(|| {
                        (0..500)
                            .flat_map(|_| {
                                let (id, t) = entropy.session().unwrap();
                                let t2 = entropy.token().unwrap();
                                [id.to_string(), t.as_string(), t2.as_string()]
                            })
                            .collect()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let all: std::collections::HashSet<_> = drawn.iter().flatten().collect();
        assert_eq!(all.len(), 4 * 500 * 3);
    }

    #[test]
    fn token_debug_does_not_reveal_the_secret() {
        let t = Token::generate().unwrap();
        let dbg = format!("{t:?}");
        assert!(!dbg.contains(&t.as_string()));
    }

    #[test]
    fn token_hash_is_deterministic_and_distinct() {
        let a = Token::generate().unwrap();
        let b = Token::generate().unwrap();
        assert_eq!(a.hash(), a.clone().hash());
        assert_ne!(a.hash(), b.hash());
    }

    #[test]
    fn session_id_round_trips_and_parses_strictly() {
        let id = SessionId::generate().unwrap();
        let s = id.to_string();
        assert_eq!(s.len(), 36);
        assert_eq!(SessionId::parse(&s).unwrap(), id);
        assert!(SessionId::parse(&s.replace('-', "")).is_err());
        assert!(SessionId::parse("zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz").is_err());
        assert!(SessionId::parse("").is_err());
    }
}
