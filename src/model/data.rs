//! [`SessionData`]: a session's key-value map, typed through serde.
//!
//! Values are kept encoded (bincode through [`crate::util::codec`], or raw bytes of the
//! caller's choosing) in one flat buffer per session — `[key len: u16][key][value len:
//! u32][value]`, sorted by key — so a session costs one allocation for its data (an
//! `Arc<[u8]>`, none when empty), a read shares that buffer instead of copying it (a
//! clone is one reference-count increment), and the log can write it as it is. A change
//! builds a new buffer: session data is small and read far more often than written.

use std::fmt;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::options::{MAX_KEY_BYTES, MAX_VALUE_BYTES};
use crate::util::codec;

/// A session's data: string keys to serde values.
///
/// Read it from a [`crate::Session`]; change it through [`crate::Store::put`],
/// [`crate::Store::update`] or [`crate::Store::save`].
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SessionData {
    buf: Option<Arc<[u8]>>,
}

struct Entry {
    start: usize,
    value: std::ops::Range<usize>,
}

impl SessionData {
    /// An empty map.
    pub fn new() -> SessionData {
        SessionData::default()
    }

    /// Reads `key` as a `T`. `Ok(None)` if absent.
    ///
    /// # Errors
    /// [`Error::Codec`] if the stored bytes are not a `T`.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        match self.get_raw(key) {
            None => Ok(None),
            Some(bytes) => codec::decode(bytes, Some(key)).map(Some),
        }
    }

    /// The stored bytes of `key`.
    pub fn get_raw(&self, key: &str) -> Option<&[u8]> {
        self.find(key).ok().map(|e| &self.bytes()[e.value])
    }

    /// Sets `key` to `value`, replacing any previous value.
    ///
    /// # Errors
    /// [`Error::Codec`] if `value` cannot be serialized; [`Error::TooLarge`] past the
    /// encoding's hard limits (the store applies the tighter configured ones).
    pub fn insert<T: Serialize + ?Sized>(&mut self, key: &str, value: &T) -> Result<()> {
        let len = codec::encoded_len(value, Some(key))?;
        self.replace(key, len, |buf| codec::encode_into(buf, value, Some(key)))
    }

    /// Sets `key` to raw bytes (for values encoded by the caller, e.g. JSON).
    ///
    /// # Errors
    /// [`Error::TooLarge`] past the encoding's hard limits.
    pub fn insert_raw(&mut self, key: &str, value: &[u8]) -> Result<()> {
        self.replace(key, value.len(), |buf| {
            buf.extend_from_slice(value);
            Ok(())
        })
    }

    /// Sets `key` to the value `write` appends (`len` bytes expected, refused before
    /// anything is allocated if the encoding cannot hold them): the new map is written
    /// into one buffer, the entries around the key copied once, and the value encoded
    /// in place rather than in a buffer of its own.
    fn replace(
        &mut self,
        key: &str,
        len: usize,
        write: impl FnOnce(&mut Vec<u8>) -> Result<()>,
    ) -> Result<()> {
        let key_len = u16::try_from(key.len()).map_err(|_| Error::TooLarge {
            what: "key",
            len: key.len(),
            max: MAX_KEY_BYTES,
        })?;
        let too_large = |len| Error::TooLarge {
            what: "value",
            len,
            max: MAX_VALUE_BYTES,
        };
        if len > MAX_VALUE_BYTES {
            return Err(too_large(len));
        }
        let old = self.bytes();
        let (start, end) = match self.find(key) {
            Ok(e) => (e.start, e.value.end),
            Err(at) => (at, at),
        };
        let mut buf = Vec::with_capacity(
            (old.len() - (end - start))
                .saturating_add(6 + key.len())
                .saturating_add(len),
        );
        buf.extend_from_slice(&old[..start]);
        buf.extend_from_slice(&key_len.to_le_bytes());
        buf.extend_from_slice(key.as_bytes());
        let len_at = buf.len();
        buf.extend_from_slice(&[0; 4]);
        write(&mut buf)?;
        let written = buf.len() - len_at - 4;
        let value_len = u32::try_from(written).map_err(|_| too_large(written))?;
        buf[len_at..len_at + 4].copy_from_slice(&value_len.to_le_bytes());
        buf.extend_from_slice(&old[end..]);
        self.set(buf);
        Ok(())
    }

    /// Removes `key`; true if it was there.
    pub fn remove(&mut self, key: &str) -> bool {
        match self.find(key) {
            Ok(e) => {
                let mut buf = self.bytes().to_vec();
                buf.drain(e.start..e.value.end);
                self.set(buf);
                true
            }
            Err(_) => false,
        }
    }

    /// Removes every key.
    pub fn clear(&mut self) {
        self.buf = None;
    }

    /// Whether `key` is present.
    pub fn contains_key(&self, key: &str) -> bool {
        self.find(key).is_ok()
    }

    /// The keys, in sorted order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.iter().map(|(k, _)| k)
    }

    /// `(key, raw value)` pairs, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        Iter {
            buf: self.bytes(),
            pos: 0,
        }
        .map(|e| (e.0, e.1))
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// True when there are no keys.
    pub fn is_empty(&self) -> bool {
        self.buf.is_none()
    }

    /// Size of the encoded map in bytes: what the `max_data_bytes` limit counts.
    pub fn encoded_len(&self) -> usize {
        self.bytes().len()
    }

    /// The flat encoding (for the log).
    pub(crate) fn as_bytes(&self) -> &[u8] {
        self.bytes()
    }

    fn bytes(&self) -> &[u8] {
        self.buf.as_deref().unwrap_or(&[])
    }

    fn set(&mut self, buf: Vec<u8>) {
        self.buf = (!buf.is_empty()).then(|| Arc::from(buf));
    }

    /// Builds a map from entries in any order (a later repeat of a key wins), in one
    /// pass; `None` if a key or value is too long for the encoding.
    #[cfg(feature = "redis")]
    pub(crate) fn from_entries(mut entries: Vec<(&str, &[u8])>) -> Option<SessionData> {
        // Stored entries are most often in key order already, each key once.
        if !entries.is_sorted_by(|a, b| a.0 < b.0) {
            entries.reverse();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            entries.dedup_by(|later, first| later.0 == first.0);
        }
        let mut buf = Vec::with_capacity(entries.iter().map(|(k, v)| 6 + k.len() + v.len()).sum());
        for (k, v) in &entries {
            buf.extend_from_slice(&u16::try_from(k.len()).ok()?.to_le_bytes());
            buf.extend_from_slice(k.as_bytes());
            buf.extend_from_slice(&u32::try_from(v.len()).ok()?.to_le_bytes());
            buf.extend_from_slice(v);
        }
        // Sorted, each key once and UTF-8: well formed by construction.
        let mut data = SessionData::new();
        data.set(buf);
        Some(data)
    }

    /// Rebuilds a map from its flat encoding, checking that it is well formed (one
    /// allocation: the shared buffer).
    pub(crate) fn from_slice(buf: &[u8]) -> Option<SessionData> {
        SessionData::check(buf)?;
        Some(SessionData {
            buf: (!buf.is_empty()).then(|| Arc::from(buf)),
        })
    }

    /// Checks that `buf` is a well-formed, sorted encoding.
    fn check(buf: &[u8]) -> Option<()> {
        let mut pos = 0;
        let mut prev: Option<&[u8]> = None;
        while pos < buf.len() {
            let (next, key, _) = parse_entry(buf, pos)?;
            let key = &buf[key];
            std::str::from_utf8(key).ok()?;
            if prev.is_some_and(|p| p >= key) {
                return None;
            }
            prev = Some(key);
            pos = next;
        }
        Some(())
    }

    /// Finds `key`: its entry, or the offset where it would be inserted.
    fn find(&self, key: &str) -> std::result::Result<Entry, usize> {
        let mut pos = 0;
        let buf = self.bytes();
        while pos < buf.len() {
            let Some((next, k, v)) = parse_entry(buf, pos) else {
                return Err(buf.len());
            };
            match buf[k.clone()].cmp(key.as_bytes()) {
                std::cmp::Ordering::Less => pos = next,
                std::cmp::Ordering::Equal => {
                    return Ok(Entry {
                        start: pos,
                        value: v,
                    });
                }
                std::cmp::Ordering::Greater => return Err(pos),
            }
        }
        Err(pos)
    }
}

/// Parses the entry at `pos`: (offset after it, key range, value range).
fn parse_entry(
    buf: &[u8],
    pos: usize,
) -> Option<(usize, std::ops::Range<usize>, std::ops::Range<usize>)> {
    let klen = u16::from_le_bytes(buf.get(pos..pos + 2)?.try_into().ok()?) as usize;
    let kstart = pos + 2;
    let kend = kstart.checked_add(klen)?;
    let vlen = u32::from_le_bytes(buf.get(kend..kend + 4)?.try_into().ok()?) as usize;
    let vstart = kend + 4;
    let vend = vstart.checked_add(vlen)?;
    if vend > buf.len() {
        return None;
    }
    Some((vend, kstart..kend, vstart..vend))
}

struct Iter<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a str, &'a [u8]);
    fn next(&mut self) -> Option<Self::Item> {
        let (next, k, v) = parse_entry(self.buf, self.pos)?;
        self.pos = next;
        // Keys are validated UTF-8 on every path that builds a buffer.
        let key = std::str::from_utf8(&self.buf[k]).ok()?;
        Some((key, &self.buf[v]))
    }
}

impl fmt::Debug for SessionData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.iter().map(|(k, v)| (k, v.len())))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "redis")]
    #[test]
    fn from_entries_keeps_the_last_repeat_of_each_key_in_key_order() {
        let mut by_insert = SessionData::new();
        let entries: Vec<(&str, &[u8])> = vec![
            ("b", b"1"),
            ("a", b"2"),
            ("c", b""),
            ("b", b"3"),
            ("\u{e9}", b"4"),
            ("a", b"5"),
        ];
        for (k, v) in &entries {
            by_insert.insert_raw(k, v).unwrap();
        }
        let built = SessionData::from_entries(entries).unwrap();
        assert_eq!(built, by_insert);
        assert_eq!(
            built.iter().collect::<Vec<_>>(),
            vec![("a", &b"5"[..]), ("b", b"3"), ("c", b""), ("\u{e9}", b"4")]
        );
        // Already in key order, each key once: the same map without sorting.
        let sorted = SessionData::from_entries(built.iter().collect()).unwrap();
        assert_eq!(sorted, built);
        assert_eq!(
            SessionData::from_entries(Vec::new()),
            Some(SessionData::new())
        );
        let long_key = "k".repeat(usize::from(u16::MAX) + 1);
        assert_eq!(SessionData::from_entries(vec![(&long_key, b"v")]), None);
    }

    #[test]
    fn insert_get_remove_typed_values() {
        let mut d = SessionData::new();
        d.insert("cart", &vec![1u32, 2, 3]).unwrap();
        d.insert("name", "alice").unwrap();
        d.insert("a", &true).unwrap();
        assert_eq!(d.get::<Vec<u32>>("cart").unwrap(), Some(vec![1, 2, 3]));
        assert_eq!(d.get::<String>("name").unwrap().as_deref(), Some("alice"));
        assert_eq!(d.keys().collect::<Vec<_>>(), ["a", "cart", "name"]);
        d.insert("name", "bob").unwrap();
        assert_eq!(d.get::<String>("name").unwrap().as_deref(), Some("bob"));
        assert_eq!(d.len(), 3);
        assert!(d.remove("cart"));
        assert!(!d.remove("cart"));
        assert_eq!(d.get::<Vec<u32>>("cart").unwrap(), None);
        assert_eq!(d.len(), 2);
    }

    #[test]
    fn wrong_type_is_a_codec_error_naming_the_key() {
        let mut d = SessionData::new();
        d.insert("n", &1u8).unwrap();
        match d.get::<String>("n") {
            Err(Error::Codec { key, .. }) => assert_eq!(key.as_deref(), Some("n")),
            other => panic!("expected a codec error, got {other:?}"),
        }
    }

    #[test]
    fn from_slice_accepts_only_well_formed_sorted_maps() {
        let mut d = SessionData::new();
        d.insert_raw("b", b"2").unwrap();
        d.insert_raw("a", b"1").unwrap();
        let bytes = d.as_bytes().to_vec();
        assert_eq!(SessionData::from_slice(&bytes), Some(d));
        let first_entry = 2 + 1 + 4 + 1;
        for cut in 1..bytes.len() {
            let parsed = SessionData::from_slice(&bytes[..cut]);
            // Cutting between entries leaves a valid, shorter map; anywhere else, none.
            assert_eq!(parsed.is_some(), cut == first_entry, "cut at {cut}");
        }
        // Swap the two entries: unsorted is rejected.
        let mut swapped = bytes[bytes.len() / 2..].to_vec();
        swapped.extend_from_slice(&bytes[..bytes.len() / 2]);
        assert!(SessionData::from_slice(&swapped).is_none());
    }

    /// A value whose encoding always fails.
    struct Unencodable;

    impl Serialize for Unencodable {
        fn serialize<S: serde::Serializer>(&self, _: S) -> std::result::Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("no encoding"))
        }
    }

    #[test]
    fn a_value_that_fails_to_encode_leaves_the_map_as_it_was() {
        let mut d = SessionData::new();
        d.insert("a", "kept").unwrap();
        let before = d.clone();
        match d.insert("a", &Unencodable) {
            Err(Error::Codec { key, reason }) => {
                assert_eq!(key.as_deref(), Some("a"));
                assert!(reason.contains("no encoding"), "{reason}");
            }
            other => panic!("expected a codec error, got {other:?}"),
        }
        assert!(d.insert("b", &Unencodable).is_err());
        assert_eq!(d, before);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(String, String),
        InsertRaw(String, Vec<u8>),
        Remove(String),
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        // Few keys, so inserts often replace and removes often hit.
        let key = "[a-e]{1,3}";
        prop_oneof![
            (key, ".{0,40}").prop_map(|(k, v)| Op::Insert(k, v)),
            (key, proptest::collection::vec(any::<u8>(), 0..300))
                .prop_map(|(k, v)| Op::InsertRaw(k, v)),
            key.prop_map(Op::Remove),
        ]
    }

    proptest::proptest! {
        /// Every change leaves exactly the model's entries, sorted by key, in a buffer
        /// that checks as well formed.
        #[test]
        fn changes_keep_the_same_entries_as_a_sorted_map(
            ops in proptest::collection::vec(op(), 1..60)
        ) {
            let mut d = SessionData::new();
            let mut model = std::collections::BTreeMap::<String, Vec<u8>>::new();
            for op in ops {
                match op {
                    Op::Insert(k, v) => {
                        d.insert(&k, v.as_str()).unwrap();
                        model.insert(k, codec::encode(v.as_str(), None).unwrap());
                    }
                    Op::InsertRaw(k, v) => {
                        d.insert_raw(&k, &v).unwrap();
                        model.insert(k, v);
                    }
                    Op::Remove(k) => {
                        proptest::prop_assert_eq!(d.remove(&k), model.remove(&k).is_some());
                    }
                }
                let entries: Vec<(String, Vec<u8>)> =
                    d.iter().map(|(k, v)| (k.to_owned(), v.to_vec())).collect();
                let expected: Vec<(String, Vec<u8>)> = model.clone().into_iter().collect();
                proptest::prop_assert_eq!(entries, expected);
                proptest::prop_assert_eq!(SessionData::from_slice(d.as_bytes()), Some(d.clone()));
                proptest::prop_assert_eq!(d.is_empty(), model.is_empty());
            }
        }
    }
}
