//! A session as `sessions.lua` stores it at `<p>:s:<h>`: one MessagePack array written
//! by Redis's built-in `cmsgpack`, decoded here without copying more than the session's
//! own strings.
//!
//! The array: 1 (the layout), id (32 hex digits), user, label, created, last seen,
//! authenticated, absolute deadline, idle (ms, 0 = none), version, data bytes, then each
//! data entry's key and value; `false` where there is no user, label or
//! authentication. A rotated-away token in its grace period keeps, at the same key, the
//! array 0 (an alias), id: one `GET` tells the two apart. Only the subset of MessagePack `cmsgpack` writes for these values
//! is read (integers, strings, booleans, nil, arrays; a float only if it is a whole
//! number); anything else is an error, never a panic.

use super::read::Stored;
use super::{parse_hex, protocol};
use crate::error::Result;

/// The layouts this module reads (the array's first element): 1, and 2 (with factors
/// and a device, four more scalars).
const LAYOUT: u64 = 1;
const LAYOUT_DETAILS: u64 = 2;

/// The first element of a grace alias's array.
const ALIAS: u64 = 0;

/// What a session's key holds.
#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "returned once per read and matched at once: boxing would allocate per read"
)]
pub(super) enum Packed<'a> {
    Session(Stored<'a>),
    /// A rotated-away token in its grace period: the script resolves it.
    Alias,
}

/// The scalars before the data entries.
const SCALARS: usize = 11;

/// One MessagePack value, borrowed from the input.
#[derive(Debug, PartialEq)]
enum Item<'a> {
    Nil,
    Bool(bool),
    Uint(u64),
    Neg(i64),
    Float(f64),
    Bytes(&'a [u8]),
    Array(usize),
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.rest.len() < n {
            return None;
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Some(head)
    }

    fn be(&mut self, n: usize) -> Option<u64> {
        Some(
            self.take(n)?
                .iter()
                .fold(0u64, |acc, b| (acc << 8) | u64::from(*b)),
        )
    }

    fn bytes(&mut self, len_bytes: usize) -> Option<Item<'a>> {
        let n = usize::try_from(self.be(len_bytes)?).ok()?;
        Some(Item::Bytes(self.take(n)?))
    }

    /// The next value, or `None` at the end or at anything this reader does not know.
    fn next(&mut self) -> Option<Item<'a>> {
        let tag = *self.take(1)?.first()?;
        Some(match tag {
            0x00..=0x7f => Item::Uint(u64::from(tag)),
            0x90..=0x9f => Item::Array(usize::from(tag & 0x0f)),
            0xa0..=0xbf => Item::Bytes(self.take(usize::from(tag & 0x1f))?),
            0xc0 => Item::Nil,
            0xc2 => Item::Bool(false),
            0xc3 => Item::Bool(true),
            0xc4 | 0xd9 => self.bytes(1)?,
            0xc5 | 0xda => self.bytes(2)?,
            0xc6 | 0xdb => self.bytes(4)?,
            0xca => Item::Float(f64::from(f32::from_bits(u32::try_from(self.be(4)?).ok()?))),
            0xcb => Item::Float(f64::from_bits(self.be(8)?)),
            0xcc => Item::Uint(self.be(1)?),
            0xcd => Item::Uint(self.be(2)?),
            0xce => Item::Uint(self.be(4)?),
            0xcf => Item::Uint(self.be(8)?),
            // Signed: sign-extend from the width read.
            0xd0 => Item::Neg(i64::from(self.be(1)? as u8 as i8)),
            0xd1 => Item::Neg(i64::from(self.be(2)? as u16 as i16)),
            0xd2 => Item::Neg(i64::from(self.be(4)? as u32 as i32)),
            0xd3 => Item::Neg(self.be(8)? as i64),
            0xdc => Item::Array(usize::try_from(self.be(2)?).ok()?),
            0xdd => Item::Array(usize::try_from(self.be(4)?).ok()?),
            0xe0..=0xff => Item::Neg(i64::from(tag as i8)),
            _ => return None, // maps, extensions, reserved
        })
    }
}

/// The largest integer a Lua number (a double) holds exactly.
const MAX_EXACT: u64 = (1 << 53) - 1;

fn uint(item: Option<Item<'_>>, what: &str) -> Result<u64> {
    let n = match item {
        Some(Item::Uint(n)) => Some(n),
        Some(Item::Neg(n)) => u64::try_from(n).ok(),
        Some(Item::Float(f)) if f.fract() == 0.0 && (0.0..=MAX_EXACT as f64).contains(&f) => {
            Some(f as u64)
        }
        _ => None,
    };
    n.ok_or_else(|| protocol("read", format!("a stored session's {what}")))
}

fn bytes<'a>(item: Option<Item<'a>>, what: &str) -> Result<&'a [u8]> {
    match item {
        Some(Item::Bytes(b)) => Ok(b),
        _ => Err(protocol("read", format!("a stored session's {what}"))),
    }
}

fn text<'a>(item: Option<Item<'a>>, what: &str) -> Result<&'a str> {
    std::str::from_utf8(bytes(item, what)?)
        .map_err(|_| protocol("read", format!("a stored session's {what} is not UTF-8")))
}

/// A string, or `None` for `false` / nil.
fn optional_text<'a>(item: Option<Item<'a>>, what: &str) -> Result<Option<&'a str>> {
    match item {
        Some(Item::Bool(false) | Item::Nil) => Ok(None),
        other => text(other, what).map(Some),
    }
}

/// Decodes what a session's key holds.
pub(super) fn unpack(input: &[u8]) -> Result<Packed<'_>> {
    let mut r = Reader { rest: input };
    let len = match r.next() {
        Some(Item::Array(n)) => n,
        _ => return Err(protocol("read", "a stored session that is not an array")),
    };
    let layout = uint(r.next(), "layout")?;
    if layout == ALIAS && len == 2 {
        bytes(r.next(), "alias's id")?;
        if !r.rest.is_empty() {
            return Err(protocol("read", "an alias with bytes after its array"));
        }
        return Ok(Packed::Alias);
    }
    let scalars = if layout == LAYOUT_DETAILS {
        SCALARS + 4
    } else {
        SCALARS
    };
    if len < scalars || !(len - scalars).is_multiple_of(2) {
        return Err(protocol(
            "read",
            format!("a stored session of {len} fields"),
        ));
    }
    if layout != LAYOUT && layout != LAYOUT_DETAILS {
        return Err(protocol(
            "read",
            format!("a stored session of layout {layout}: written by a newer sessiondb?"),
        ));
    }
    let id = parse_hex(bytes(r.next(), "id")?)
        .ok_or_else(|| protocol("read", "a stored session's id"))?;
    let user = optional_text(r.next(), "user")?;
    let label = optional_text(r.next(), "label")?;
    let created = uint(r.next(), "creation time")?;
    let last_seen = uint(r.next(), "last-seen time")?;
    let authenticated = match r.next() {
        Some(Item::Bool(false) | Item::Nil) => None,
        other => Some(uint(other, "authentication time")?),
    };
    let absolute = uint(r.next(), "absolute deadline")?;
    let idle = uint(r.next(), "idle timeout")?;
    let version = uint(r.next(), "version")?;
    let _data_bytes = uint(r.next(), "data size")?;
    let (mut factors, mut user_agent, mut address, mut device_at) = (None, None, None, None);
    if layout == LAYOUT_DETAILS {
        factors = optional_text(r.next(), "factors")?;
        user_agent = optional_text(r.next(), "user agent")?;
        address = optional_text(r.next(), "address")?;
        device_at = match r.next() {
            Some(Item::Bool(false) | Item::Nil) => None,
            other => Some(uint(other, "device time")?),
        };
    }
    let entries = (len - scalars) / 2;
    // Each entry takes at least two bytes of input: a corrupt length cannot reserve more.
    let mut data = Vec::with_capacity(entries.min(r.rest.len() / 2));
    for _ in 0..entries {
        let key = text(r.next(), "data key")?;
        let value = bytes(r.next(), "data value")?;
        data.push((key, value));
    }
    if !r.rest.is_empty() {
        return Err(protocol(
            "read",
            "a stored session with bytes after its array",
        ));
    }
    Ok(Packed::Session(Stored {
        id,
        user,
        label,
        created,
        last_seen,
        authenticated,
        absolute,
        idle,
        version,
        data,
        factors,
        user_agent,
        address,
        device_at,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A MessagePack writer for the tests, the widths `cmsgpack` chooses.
    enum V<'a> {
        U(u64),
        S(&'a [u8]),
        F,
        Nil,
    }

    fn pack(items: &[V<'_>]) -> Vec<u8> {
        let mut out = Vec::new();
        let n = items.len();
        if n < 16 {
            out.push(0x90 | n as u8);
        } else {
            out.push(0xdc);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        for item in items {
            match item {
                V::U(n) if *n < 128 => out.push(*n as u8),
                V::U(n) if *n <= u64::from(u32::MAX) => {
                    out.push(0xce);
                    out.extend_from_slice(&(*n as u32).to_be_bytes());
                }
                V::U(n) => {
                    out.push(0xcf);
                    out.extend_from_slice(&n.to_be_bytes());
                }
                V::S(s) if s.len() < 32 => {
                    out.push(0xa0 | s.len() as u8);
                    out.extend_from_slice(s);
                }
                V::S(s) => {
                    out.push(0xda);
                    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
                    out.extend_from_slice(s);
                }
                V::F => out.push(0xc2),
                V::Nil => out.push(0xc0),
            }
        }
        out
    }

    const ID: &[u8] = b"000000000000000000000000000000ff";

    fn session<'a>(user: V<'a>, auth: V<'a>, data: &[V<'a>]) -> Vec<u8> {
        let mut items = vec![
            V::U(1),
            V::S(ID),
            user,
            V::F,
            V::U(1_765_000_000_000),
            V::U(1_765_000_000_500),
            auth,
            V::U(1_765_003_600_000),
            V::U(0),
            V::U(7),
            V::U(12),
        ];
        for d in data {
            items.push(match d {
                V::U(n) => V::U(*n),
                V::S(s) => V::S(s),
                V::F => V::F,
                V::Nil => V::Nil,
            });
        }
        pack(&items)
    }

    fn unpack_session(input: &[u8]) -> Result<Stored<'_>> {
        match unpack(input)? {
            Packed::Session(s) => Ok(s),
            Packed::Alias => panic!("an alias"),
        }
    }

    #[test]
    fn a_grace_alias_is_told_from_a_session() {
        assert!(matches!(
            unpack(&pack(&[V::U(0), V::S(ID)])).unwrap(),
            Packed::Alias
        ));
        assert!(
            unpack(&pack(&[V::U(0), V::U(5)])).is_err(),
            "an id that is a number"
        );
        assert!(
            unpack(&pack(&[V::U(0), V::S(ID), V::U(1)])).is_err(),
            "three fields"
        );
        assert!(
            unpack(&pack(&[V::U(1), V::S(ID)])).is_err(),
            "a session of two fields"
        );
    }

    #[test]
    fn a_stored_session_decodes_with_its_data_in_order() {
        let long = vec![b'x'; 300];
        let packed = session(
            V::S(b"alice"),
            V::U(1_765_000_000_100),
            &[V::S(b"cart"), V::S(&long), V::S(b"k"), V::S(b"")],
        );
        let s = unpack_session(&packed).unwrap();
        assert_eq!(s.id, 0xff);
        assert_eq!(s.user, Some("alice"));
        assert_eq!(s.label, None);
        assert_eq!(
            (s.created, s.last_seen, s.authenticated),
            (
                1_765_000_000_000,
                1_765_000_000_500,
                Some(1_765_000_000_100)
            )
        );
        assert_eq!((s.absolute, s.idle, s.version), (1_765_003_600_000, 0, 7));
        assert_eq!(s.data, vec![("cart", long.as_slice()), ("k", &[][..])]);
        let packed = session(V::F, V::Nil, &[]);
        let anon = unpack_session(&packed).unwrap();
        assert_eq!((anon.user, anon.authenticated), (None, None));
    }

    #[test]
    fn a_layout_2_session_reads_its_factors_and_device() {
        let mut items = vec![
            V::U(2),
            V::S(ID),
            V::S(b"alice"),
            V::F,
            V::U(1_765_000_000_000),
            V::U(1_765_000_000_500),
            V::U(1_765_000_000_000),
            V::U(1_765_003_600_000),
            V::U(0),
            V::U(7),
            V::U(12),
            V::S(b"password 1 1765000000000"),
            V::S(b"Firefox"),
            V::S(b"203.0.113.0"),
            V::U(1_765_000_000_100),
        ];
        items.push(V::S(b"k"));
        items.push(V::S(b"v"));
        let packed = pack(&items);
        let s = unpack_session(&packed).unwrap();
        assert_eq!(s.factors, Some("password 1 1765000000000"));
        assert_eq!(s.user_agent, Some("Firefox"));
        assert_eq!(s.address, Some("203.0.113.0"));
        assert_eq!(s.device_at, Some(1_765_000_000_100));
        assert_eq!(s.data, vec![("k", &b"v"[..])]);
        // None of the four: `false` each.
        for item in &mut items[11..15] {
            *item = V::F;
        }
        let packed = pack(&items);
        let s = unpack_session(&packed).unwrap();
        assert_eq!((s.factors, s.user_agent, s.device_at), (None, None, None));
        // A device time that is not a number is an error.
        items[14] = V::S(b"soon");
        assert!(unpack(&pack(&items)).is_err());
    }

    #[test]
    fn anything_but_a_whole_stored_session_is_an_error_not_a_panic() {
        let good = session(V::S(b"alice"), V::F, &[V::S(b"k"), V::S(b"v")]);
        for cut in 0..good.len() {
            assert!(unpack(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = good.clone();
        longer.push(0);
        assert!(unpack(&longer).is_err(), "trailing bytes");
        let odd = session(V::S(b"alice"), V::F, &[V::S(b"k")]);
        assert!(unpack(&odd).is_err(), "a key without a value");
        let mut newer = good.clone();
        newer[1] = 3;
        let e = unpack(&newer).unwrap_err().to_string();
        assert!(e.contains("layout 3"), "{e}");
        // Layout 2 has four more scalars: a layout-1 body under its number is short.
        let mut relabelled = good.clone();
        relabelled[1] = 2;
        assert!(unpack(&relabelled).is_err(), "layout 2 without its fields");
        let bad_id = pack(&[V::U(1), V::S(b"zz"), V::F, V::F]);
        assert!(unpack(&bad_id).is_err());
        assert!(
            unpack(&[0xdd, 0xff, 0xff, 0xff, 0xff]).is_err(),
            "a huge count"
        );
        assert!(unpack(&[0x81, 0x01, 0x01]).is_err(), "a map");
        assert!(unpack(b"").is_err());
        // Every byte string of length 3 or less: no panic.
        for a in 0..=255u8 {
            for b in [0u8, 1, 0x7f, 0x80, 0xff] {
                let _ = unpack(&[a, b]);
                let _ = unpack(&[0x9b, a, b]);
            }
        }
    }

    #[test]
    fn numbers_come_in_every_width_cmsgpack_may_write() {
        let mut r = Reader {
            rest: &[
                0x05, 0xcc, 0xff, 0xcd, 0x01, 0x00, 0xd0, 0xfb, 0xe0, 0xcb, 0x40, 0x59, 0, 0, 0, 0,
                0, 0,
            ],
        };
        assert_eq!(r.next(), Some(Item::Uint(5)));
        assert_eq!(r.next(), Some(Item::Uint(255)));
        assert_eq!(r.next(), Some(Item::Uint(256)));
        assert_eq!(r.next(), Some(Item::Neg(-5)));
        assert_eq!(r.next(), Some(Item::Neg(-32)));
        let f = r.next();
        assert_eq!(f, Some(Item::Float(100.0)));
        assert_eq!(uint(f, "x").unwrap(), 100);
        assert!(uint(Some(Item::Float(0.5)), "x").is_err());
        assert!(uint(Some(Item::Neg(-1)), "x").is_err());
        assert!(uint(Some(Item::Float(f64::NAN)), "x").is_err());
        assert_eq!(r.next(), None);
    }

    proptest::proptest! {
        /// Any bytes, and any change to a well-formed session: an answer or an error,
        /// never a panic or an allocation the input cannot back.
        #[test]
        fn any_bytes_decode_or_fail_cleanly(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
            at in 0usize..64,
            with in proptest::num::u8::ANY,
        ) {
            let _ = unpack(&bytes);
            let mut good = session(V::S(b"alice"), V::U(5), &[V::S(b"k"), V::S(b"v")]);
            let i = at % good.len();
            good[i] = with;
            let _ = unpack(&good);
        }
    }
}
