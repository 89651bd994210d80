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

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

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

/// A fresh public id and token from 40 bytes of `fill` (which must be a CSPRNG's).
///
/// # Errors
/// What `fill` returns ([`Error::Entropy`] if the OS generator fails).
pub(crate) fn fresh_session(
    fill: impl FnOnce(&mut [u8]) -> Result<()>,
) -> Result<(SessionId, Token)> {
    let mut bytes = [0u8; 16 + TOKEN_BYTES];
    fill(&mut bytes)?;
    Ok(split_id_token(bytes))
}

/// A fresh token from `fill` (which must be a CSPRNG's).
///
/// # Errors
/// What `fill` returns.
pub(crate) fn fresh_token(fill: impl FnOnce(&mut [u8]) -> Result<()>) -> Result<Token> {
    let mut bytes = [0u8; TOKEN_BYTES];
    fill(&mut bytes)?;
    Ok(Token(bytes))
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
