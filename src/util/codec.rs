//! The one place bincode is used: encoding session values and log payloads.
//!
//! bincode 1.3.3 is pinned exactly (RUSTSEC-2025-0141 marks it unmaintained; its authors
//! call 1.3.3 complete, and 3.0.0 is a `compile_error!` placeholder — see `deny.toml`).
//! Keeping it behind these functions means a future codec change touches one file, and
//! the format version in every segment header says which codec wrote it.
//!
//! Decoding always runs with a byte limit, so a hostile length prefix cannot make the
//! decoder allocate more than the input could possibly describe.

use bincode::Options as _;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

fn options(limit: u64) -> impl bincode::Options {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_little_endian()
        .reject_trailing_bytes()
        .with_limit(limit)
}

/// Encodes `value`; `key` names it in the error.
pub(crate) fn encode<T: Serialize + ?Sized>(value: &T, key: Option<&str>) -> Result<Vec<u8>> {
    options(u64::MAX)
        .serialize(value)
        .map_err(|e| codec_error(e, key))
}

/// The length of `value`'s encoding; `key` names it in the error.
pub(crate) fn encoded_len<T: Serialize + ?Sized>(value: &T, key: Option<&str>) -> Result<usize> {
    options(u64::MAX)
        .serialized_size(value)
        .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
        .map_err(|e| codec_error(e, key))
}

/// Encodes `value` onto the end of `out` (the same bytes as [`encode`], with no
/// buffer of their own); `key` names it in the error. On an error `out` may hold part
/// of the encoding.
pub(crate) fn encode_into<T: Serialize + ?Sized>(
    out: &mut Vec<u8>,
    value: &T,
    key: Option<&str>,
) -> Result<()> {
    options(u64::MAX)
        .with_no_limit()
        .serialize_into(out, value)
        .map_err(|e| codec_error(e, key))
}

fn codec_error(e: bincode::Error, key: Option<&str>) -> Error {
    Error::Codec {
        key: key.map(str::to_owned),
        reason: e.to_string(),
    }
}

/// Decodes a `T` that must use all of `bytes`; allocations are bounded by `bytes.len()`.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8], key: Option<&str>) -> Result<T> {
    options(bytes.len() as u64)
        .deserialize(bytes)
        .map_err(|e| Error::Codec {
            key: key.map(str::to_owned),
            reason: e.to_string(),
        })
}

/// Decodes a `T` that may borrow from `bytes` and must use all of them.
pub(crate) fn decode_borrowed<'a, T: serde::Deserialize<'a>>(bytes: &'a [u8]) -> Result<T> {
    options(bytes.len() as u64)
        .deserialize(bytes)
        .map_err(|e| Error::Codec {
            key: None,
            reason: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_bounds_allocation_by_input_length() {
        // A Vec<u8> claiming 2^60 elements in 8 bytes of input must fail, not allocate.
        let hostile = (1u64 << 60).to_le_bytes();
        assert!(decode::<Vec<u8>>(&hostile, None).is_err());
    }

    #[test]
    fn decode_rejects_trailing_bytes() {
        let mut b = encode(&7u32, None).unwrap();
        b.push(0);
        assert!(decode::<u32>(&b, Some("k")).is_err());
    }

    #[test]
    fn round_trip() {
        let v = (String::from("a"), 5u64, vec![1u8, 2]);
        let b = encode(&v, None).unwrap();
        assert_eq!(decode::<(String, u64, Vec<u8>)>(&b, None).unwrap(), v);
    }
}
