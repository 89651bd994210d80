//! Log records: the payload of each frame type, the encoding of a [`Change`] into a
//! frame, and the decoding of a frame back into a validated [`Record`].
//!
//! Payloads are bincode (through [`crate::util::codec`], with decoding bounded by the frame's
//! length), except that byte strings use `serde_bytes` so session data is copied, not
//! visited byte by byte. Decoded records are validated (user ids, the data map's
//! structure, end reasons) before recovery applies them: a checksummed but malformed
//! record is corruption, never a panic.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::backend::interner::{NO_USER, UserInterner};
use crate::backend::log::format::{encode_frame, encode_frame_with};
use crate::clock::Timestamp;
use crate::model::change::{Change, Image, ImageRef, Record};
use crate::model::data::SessionData;
use crate::model::details::{Details, device_of, factors_of, label_of};
use crate::model::device::DeviceInfo;
use crate::model::event::EndReason;
use crate::model::session::UserId;
use crate::model::signin::{Factor, check_factors};
use crate::model::token::{SessionId, TokenHash};
use crate::util::codec;

/// Frame types.
pub(crate) mod kind {
    pub(crate) const CREATE: u8 = 1;
    pub(crate) const DATA: u8 = 2;
    pub(crate) const TOUCH: u8 = 3;
    pub(crate) const EXTEND: u8 = 4;
    pub(crate) const BIND: u8 = 5;
    pub(crate) const UNBIND: u8 = 6;
    pub(crate) const LABEL: u8 = 7;
    pub(crate) const ROTATE: u8 = 8;
    pub(crate) const END: u8 = 9;
    pub(crate) const CLEAR: u8 = 10;
    pub(crate) const IMAGE: u8 = 11;
    pub(crate) const ALIAS: u8 = 12;
    /// Opens every write batch: `synced_through` (u64) is the segment offset up to
    /// which the segment was fsynced when the batch was written. Recovery uses it to
    /// tell a torn, unsynced tail from damage to data that was already durable.
    pub(crate) const BATCH: u8 = 13;
    /// A user's not-before time (format 3 on); also in a base, one per such user.
    pub(crate) const NOT_BEFORE: u8 = 14;
    /// A session's sign-in factors (format 4 on).
    pub(crate) const SIGN_IN: u8 = 15;
    /// A session's device (format 4 on).
    pub(crate) const DEVICE: u8 = 16;
    /// A session image with factors or a device (format 4 on); one without keeps
    /// [`IMAGE`], so a visitor's image is as small as before.
    pub(crate) const IMAGE_X: u8 = 17;
}

/// Appends a batch-opening frame to `out`.
pub(crate) fn encode_batch(out: &mut Vec<u8>, synced_through: u64) {
    encode_frame(out, kind::BATCH, &synced_through.to_le_bytes());
}

/// The `synced_through` of a batch frame's payload.
pub(crate) fn decode_batch(payload: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(payload.try_into().ok()?))
}

#[derive(Serialize, Deserialize)]
struct CreateRec<'a> {
    id: u128,
    hash: u128,
    #[serde(borrow)]
    user: Option<&'a str>,
    #[serde(borrow)]
    label: Option<&'a str>,
    created: u64,
    absolute: u64,
    idle_ms: u64,
    #[serde(with = "serde_bytes", borrow)]
    data: &'a [u8],
}

#[derive(Serialize, Deserialize)]
struct DataRec<'a> {
    id: u128,
    version: u64,
    at: u64,
    #[serde(with = "serde_bytes", borrow)]
    data: &'a [u8],
}

#[derive(Serialize, Deserialize)]
struct TouchRec {
    id: u128,
    at: u64,
}

#[derive(Serialize, Deserialize)]
struct ExtendRec {
    id: u128,
    absolute: u64,
    at: u64,
}

#[derive(Serialize, Deserialize)]
struct BindRec<'a> {
    id: u128,
    user: &'a str,
    at: u64,
    version: u64,
}

#[derive(Serialize, Deserialize)]
struct UnbindRec {
    id: u128,
    version: u64,
}

#[derive(Serialize, Deserialize)]
struct LabelRec<'a> {
    id: u128,
    #[serde(borrow)]
    label: Option<&'a str>,
}

#[derive(Serialize, Deserialize)]
struct RotateRec {
    id: u128,
    old: u128,
    new: u128,
    grace_until: u64,
    at: u64,
}

#[derive(Serialize, Deserialize)]
struct EndRec {
    id: u128,
    reason: u8,
}

#[derive(Serialize, Deserialize)]
struct NotBeforeRec<'a> {
    user: &'a str,
    at: u64,
}

#[derive(Serialize, Deserialize)]
struct ImageRec<'a> {
    id: u128,
    hash: u128,
    #[serde(borrow)]
    user: Option<&'a str>,
    #[serde(borrow)]
    label: Option<&'a str>,
    created: u64,
    authenticated: Option<u64>,
    absolute: u64,
    idle_ms: u64,
    last_seen: u64,
    version: u64,
    #[serde(with = "serde_bytes", borrow)]
    data: &'a [u8],
}

#[derive(Serialize, Deserialize)]
struct FactorRec<'a> {
    method: &'a str,
    level: u8,
    at: u64,
}

#[derive(Serialize, Deserialize)]
struct SignInRec<'a> {
    id: u128,
    #[serde(borrow)]
    factors: Vec<FactorRec<'a>>,
}

#[derive(Serialize, Deserialize)]
struct DeviceRec<'a> {
    #[serde(borrow)]
    user_agent: Option<&'a str>,
    /// 0: no address; 4: IPv4 (in the low 32 bits of `addr`); 6: IPv6.
    family: u8,
    addr: u128,
    at: u64,
}

#[derive(Serialize, Deserialize)]
struct DeviceChangeRec<'a> {
    id: u128,
    #[serde(borrow)]
    device: DeviceRec<'a>,
}

/// An image with its factors and device.
#[derive(Serialize, Deserialize)]
struct ImageXRec<'a> {
    #[serde(borrow)]
    image: ImageRec<'a>,
    #[serde(borrow)]
    factors: Vec<FactorRec<'a>>,
    #[serde(borrow)]
    device: Option<DeviceRec<'a>>,
}

/// A session's factors and device, as the sled backend stores them (the same
/// encoding as in an extended image's record).
#[cfg(feature = "sled")]
#[derive(Serialize, Deserialize)]
struct DetailsRec<'a> {
    #[serde(borrow)]
    factors: Vec<FactorRec<'a>>,
    #[serde(borrow)]
    device: Option<DeviceRec<'a>>,
}

/// Encodes a session's factors and device (not its label).
#[cfg(feature = "sled")]
pub(crate) fn encode_details(factors: &[Factor], device: Option<&DeviceInfo>) -> Vec<u8> {
    codec::encode(
        &DetailsRec {
            factors: factor_recs(factors),
            device: device.map(device_rec),
        },
        None,
    )
    .expect("details always encode")
}

/// Decodes what [`encode_details`] wrote, validated.
///
/// # Errors
/// What is malformed.
#[cfg(feature = "sled")]
pub(crate) fn decode_details(bytes: &[u8]) -> Result<(Vec<Factor>, Option<DeviceInfo>), String> {
    let r: DetailsRec<'_> = decode(bytes)?;
    Ok((
        factors(&r.factors)?,
        r.device.as_ref().map(device).transpose()?,
    ))
}

fn factor_recs(factors: &[Factor]) -> Vec<FactorRec<'_>> {
    factors
        .iter()
        .map(|f| FactorRec {
            method: &f.method,
            level: f.level,
            at: f.at.0,
        })
        .collect()
}

fn factors(recs: &[FactorRec<'_>]) -> Result<Vec<Factor>, String> {
    let out: Vec<Factor> = recs
        .iter()
        .map(|r| Factor::new(r.method, r.level, Timestamp(r.at)))
        .collect();
    check_factors(&out).map_err(|e| e.to_string())?;
    Ok(out)
}

fn device_rec(d: &DeviceInfo) -> DeviceRec<'_> {
    let (family, addr) = match d.address {
        None => (0, 0),
        Some(IpAddr::V4(a)) => (4, u128::from(u32::from(a))),
        Some(IpAddr::V6(a)) => (6, u128::from(a)),
    };
    DeviceRec {
        user_agent: d.user_agent.as_deref(),
        family,
        addr,
        at: d.at.0,
    }
}

fn device(r: &DeviceRec<'_>) -> Result<DeviceInfo, String> {
    let address = match (r.family, r.addr) {
        (0, 0) => None,
        (4, a) if a <= u128::from(u32::MAX) => Some(IpAddr::V4(Ipv4Addr::from(a as u32))),
        (6, a) => Some(IpAddr::V6(Ipv6Addr::from(a))),
        _ => return Err("a malformed device address".into()),
    };
    let d = DeviceInfo {
        user_agent: r.user_agent.map(Arc::from),
        address,
        at: Timestamp(r.at),
    };
    d.check()?;
    Ok(d)
}

#[derive(Serialize, Deserialize)]
struct AliasRec {
    hash: u128,
    id: u128,
    until: u64,
}

fn reason_byte(r: EndReason) -> u8 {
    match r {
        EndReason::Ended => 0,
        EndReason::Expired => 1,
        EndReason::Revoked => 2,
        EndReason::LimitExceeded => 3,
        EndReason::LastInstanceEnded => 4,
        EndReason::Cleared => 5,
        EndReason::Evicted => 6,
        EndReason::RevokedByOtherSession => 7,
    }
}

fn reason_of(b: u8) -> Option<EndReason> {
    Some(match b {
        0 => EndReason::Ended,
        1 => EndReason::Expired,
        2 => EndReason::Revoked,
        3 => EndReason::LimitExceeded,
        4 => EndReason::LastInstanceEnded,
        5 => EndReason::Cleared,
        6 => EndReason::Evicted,
        7 => EndReason::RevokedByOtherSession,
        _ => return None,
    })
}

fn push<T: Serialize>(out: &mut Vec<u8>, kind: u8, rec: &T) {
    encode_frame_with(out, kind, |out| {
        // Records hold only integers, strings and byte strings: encoding cannot fail.
        codec::encode_into(out, rec, None).expect("log records always encode");
    });
}

fn opt_str(s: &Option<Arc<str>>) -> Option<&str> {
    s.as_deref()
}

fn user_str(u: &Option<UserId>) -> Option<&str> {
    u.as_ref().map(UserId::as_str)
}

/// Appends the frame of `change` to `out`.
pub(crate) fn encode_change(out: &mut Vec<u8>, change: &Change) {
    match change {
        Change::Create {
            id,
            hash,
            user,
            label,
            created,
            absolute,
            idle_ms,
            data,
        } => push(
            out,
            kind::CREATE,
            &CreateRec {
                id: id.0,
                hash: hash.0,
                user: user_str(user),
                label: opt_str(label),
                created: created.0,
                absolute: absolute.0,
                idle_ms: *idle_ms,
                data: data.as_bytes(),
            },
        ),
        Change::Data {
            id,
            version,
            at,
            data,
        } => push(
            out,
            kind::DATA,
            &DataRec {
                id: id.0,
                version: *version,
                at: at.0,
                data: data.as_bytes(),
            },
        ),
        Change::Touch { id, at } => push(out, kind::TOUCH, &TouchRec { id: id.0, at: at.0 }),
        Change::Extend { id, absolute, at } => push(
            out,
            kind::EXTEND,
            &ExtendRec {
                id: id.0,
                absolute: absolute.0,
                at: at.0,
            },
        ),
        Change::Bind {
            id,
            user,
            at,
            version,
        } => push(
            out,
            kind::BIND,
            &BindRec {
                id: id.0,
                user: user.as_str(),
                at: at.0,
                version: *version,
            },
        ),
        Change::Unbind { id, version } => push(
            out,
            kind::UNBIND,
            &UnbindRec {
                id: id.0,
                version: *version,
            },
        ),
        Change::Label { id, label } => push(
            out,
            kind::LABEL,
            &LabelRec {
                id: id.0,
                label: opt_str(label),
            },
        ),
        Change::Rotate {
            id,
            old,
            new,
            grace_until,
            at,
        } => push(
            out,
            kind::ROTATE,
            &RotateRec {
                id: id.0,
                old: old.0,
                new: new.0,
                grace_until: grace_until.0,
                at: at.0,
            },
        ),
        Change::End { id, reason } => push(
            out,
            kind::END,
            &EndRec {
                id: id.0,
                reason: reason_byte(*reason),
            },
        ),
        Change::SignIn { id, factors } => push(
            out,
            kind::SIGN_IN,
            &SignInRec {
                id: id.0,
                factors: factor_recs(factors),
            },
        ),
        Change::Device { id, device } => push(
            out,
            kind::DEVICE,
            &DeviceChangeRec {
                id: id.0,
                device: device_rec(device),
            },
        ),
        Change::Clear => encode_frame(out, kind::CLEAR, &[]),
        Change::NotBefore { user, at } => encode_not_before(out, user, *at),
        Change::Import(img) => encode_image(out, &img.view()),
    }
}

/// Appends the frame of a session image (for a compacted base) to `out`.
pub(crate) fn encode_image(out: &mut Vec<u8>, img: &ImageRef<'_>) {
    let rec = ImageRec {
        id: img.id.0,
        hash: img.hash.0,
        user: user_str(img.user),
        label: label_of(img.details).map(|l| &**l),
        created: img.created.0,
        authenticated: img.authenticated.map(|t| t.0),
        absolute: img.absolute.0,
        idle_ms: img.idle_ms,
        last_seen: img.last_seen.0,
        version: img.version,
        data: img.data.as_bytes(),
    };
    let (factors, device) = (factors_of(img.details), device_of(img.details));
    if factors.is_empty() && device.is_none() {
        push(out, kind::IMAGE, &rec);
    } else {
        push(
            out,
            kind::IMAGE_X,
            &ImageXRec {
                image: rec,
                factors: factor_recs(factors),
                device: device.map(device_rec),
            },
        );
    }
}

/// Appends the frame of a user's not-before time (a change, or a base's entry).
pub(crate) fn encode_not_before(out: &mut Vec<u8>, user: &UserId, at: Timestamp) {
    push(
        out,
        kind::NOT_BEFORE,
        &NotBeforeRec {
            user: user.as_str(),
            at: at.0,
        },
    );
}

/// Appends the frame of a rotation alias (for a compacted base) to `out`.
pub(crate) fn encode_alias(out: &mut Vec<u8>, hash: TokenHash, id: SessionId, until: Timestamp) {
    push(
        out,
        kind::ALIAS,
        &AliasRec {
            hash: hash.0,
            id: id.0,
            until: until.0,
        },
    );
}

fn label(s: Option<&str>) -> Option<Arc<str>> {
    s.map(Arc::from)
}

fn data(bytes: &[u8]) -> Result<SessionData, String> {
    SessionData::from_slice(bytes).ok_or_else(|| "malformed session data".to_owned())
}

/// Decodes a payload, borrowing its strings and byte strings from it (no allocation
/// until a value is kept).
fn decode<'a, T: serde::Deserialize<'a>>(payload: &'a [u8]) -> Result<T, String> {
    codec::decode_borrowed(payload).map_err(|e| e.to_string())
}

/// Decodes and validates one frame's payload.
///
/// # Errors
/// A description of what is malformed.
pub(crate) fn decode_record(
    kind: u8,
    payload: &[u8],
    users: &mut UserInterner,
) -> Result<Record, String> {
    let change = match kind {
        kind::CREATE => {
            let r: CreateRec<'_> = decode(payload)?;
            Change::Create {
                id: SessionId(r.id),
                hash: TokenHash(r.hash),
                user: r.user.map(|u| users.intern(u)).transpose()?,
                label: label(r.label),
                created: Timestamp(r.created),
                absolute: Timestamp(r.absolute),
                idle_ms: r.idle_ms,
                data: data(r.data)?,
            }
        }
        kind::DATA => {
            let r: DataRec<'_> = decode(payload)?;
            Change::Data {
                id: SessionId(r.id),
                version: r.version,
                at: Timestamp(r.at),
                data: data(r.data)?,
            }
        }
        kind::TOUCH => {
            let r: TouchRec = decode(payload)?;
            Change::Touch {
                id: SessionId(r.id),
                at: Timestamp(r.at),
            }
        }
        kind::EXTEND => {
            let r: ExtendRec = decode(payload)?;
            Change::Extend {
                id: SessionId(r.id),
                absolute: Timestamp(r.absolute),
                at: Timestamp(r.at),
            }
        }
        kind::BIND => {
            let r: BindRec<'_> = decode(payload)?;
            Change::Bind {
                id: SessionId(r.id),
                user: users.intern(r.user)?,
                at: Timestamp(r.at),
                version: r.version,
            }
        }
        kind::UNBIND => {
            let r: UnbindRec = decode(payload)?;
            Change::Unbind {
                id: SessionId(r.id),
                version: r.version,
            }
        }
        kind::LABEL => {
            let r: LabelRec<'_> = decode(payload)?;
            Change::Label {
                id: SessionId(r.id),
                label: label(r.label),
            }
        }
        kind::ROTATE => {
            let r: RotateRec = decode(payload)?;
            Change::Rotate {
                id: SessionId(r.id),
                old: TokenHash(r.old),
                new: TokenHash(r.new),
                grace_until: Timestamp(r.grace_until),
                at: Timestamp(r.at),
            }
        }
        kind::END => {
            let r: EndRec = decode(payload)?;
            Change::End {
                id: SessionId(r.id),
                reason: reason_of(r.reason).ok_or("unknown end reason")?,
            }
        }
        kind::CLEAR => {
            if !payload.is_empty() {
                return Err("clear record with a payload".into());
            }
            Change::Clear
        }
        kind::NOT_BEFORE => {
            let r: NotBeforeRec<'_> = decode(payload)?;
            Change::NotBefore {
                user: users.intern(r.user)?,
                at: Timestamp(r.at),
            }
        }
        kind::SIGN_IN => {
            let r: SignInRec<'_> = decode(payload)?;
            Change::SignIn {
                id: SessionId(r.id),
                factors: factors(&r.factors)?,
            }
        }
        kind::DEVICE => {
            let r: DeviceChangeRec<'_> = decode(payload)?;
            Change::Device {
                id: SessionId(r.id),
                device: device(&r.device)?,
            }
        }
        kind::IMAGE => {
            let r: ImageRec<'_> = decode(payload)?;
            let user = r.user.map(|u| users.intern(u)).transpose()?;
            return Ok(Record::Image(image(&r, user)?));
        }
        kind::IMAGE_X => {
            let r: ImageXRec<'_> = decode(payload)?;
            let user = r.image.user.map(|u| users.intern(u)).transpose()?;
            return Ok(Record::Image(image_x(&r, user)?));
        }
        kind::ALIAS => {
            let r: AliasRec = decode(payload)?;
            return Ok(Record::Alias {
                hash: TokenHash(r.hash),
                id: SessionId(r.id),
                until: Timestamp(r.until),
            });
        }
        other => return Err(format!("unknown record type {other}")),
    };
    Ok(Record::Change(change))
}

/// An image with factors or a device.
fn image_x(r: &ImageXRec<'_>, user: Option<UserId>) -> Result<Image, String> {
    let mut img = image(&r.image, user)?;
    let details = Details {
        label: label(r.image.label),
        factors: factors(&r.factors)?.into(),
        device: r.device.as_ref().map(device).transpose()?.map(Box::new),
    };
    if details.factors.is_empty() && details.device.is_none() {
        return Err("an extended image with neither factors nor device".into());
    }
    img.details = details.shared();
    Ok(img)
}

#[inline]
fn image(r: &ImageRec<'_>, user: Option<UserId>) -> Result<Image, String> {
    Ok(Image {
        id: SessionId(r.id),
        hash: TokenHash(r.hash),
        user,
        details: Details::labelled(label(r.label)),
        created: Timestamp(r.created),
        authenticated: r.authenticated.map(Timestamp),
        absolute: Timestamp(r.absolute),
        idle_ms: r.idle_ms,
        last_seen: Timestamp(r.last_seen),
        version: r.version,
        data: data(r.data)?,
    })
}

/// A record of a compacted base, decoded for the bulk load.
#[derive(Debug, PartialEq)]
pub(crate) enum BaseRecord {
    /// An image without its user, and the index of that user in the interner
    /// ([`NO_USER`] for none): the loader fills the user in, grouped by user.
    Image(Image, u32),
    Alias {
        hash: TokenHash,
        id: SessionId,
        until: Timestamp,
    },
    /// A user's not-before time.
    NotBefore(UserId, Timestamp),
}

/// Decodes and validates one frame of a base (images, aliases and not-before times only; anything else is
/// malformed there).
///
/// # Errors
/// A description of what is malformed.
#[inline]
pub(crate) fn decode_base_record(
    kind: u8,
    payload: &[u8],
    users: &mut UserInterner,
) -> Result<BaseRecord, String> {
    match kind {
        kind::IMAGE => {
            let r: ImageRec<'_> = decode(payload)?;
            let user = match r.user {
                Some(u) => users.index(u)?,
                None => NO_USER,
            };
            Ok(BaseRecord::Image(image(&r, None)?, user))
        }
        kind::IMAGE_X => {
            let r: ImageXRec<'_> = decode(payload)?;
            let user = match r.image.user {
                Some(u) => users.index(u)?,
                None => NO_USER,
            };
            Ok(BaseRecord::Image(image_x(&r, None)?, user))
        }
        kind::ALIAS => {
            let r: AliasRec = decode(payload)?;
            Ok(BaseRecord::Alias {
                hash: TokenHash(r.hash),
                id: SessionId(r.id),
                until: Timestamp(r.until),
            })
        }
        kind::NOT_BEFORE => {
            let r: NotBeforeRec<'_> = decode(payload)?;
            Ok(BaseRecord::NotBefore(
                UserId::stored(r.user)?,
                Timestamp(r.at),
            ))
        }
        other => Err(format!("record type {other} in a base")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::log::format::{Frame, read_frame};

    #[test]
    fn every_end_reason_has_its_own_byte_and_reads_back() {
        let all = [
            EndReason::Ended,
            EndReason::Expired,
            EndReason::Revoked,
            EndReason::LimitExceeded,
            EndReason::LastInstanceEnded,
            EndReason::Cleared,
            EndReason::Evicted,
            EndReason::RevokedByOtherSession,
        ];
        for (i, r) in all.into_iter().enumerate() {
            assert_eq!(
                usize::from(reason_byte(r)),
                i,
                "{r:?}: the bytes are stable"
            );
            assert_eq!(reason_of(reason_byte(r)), Some(r));
        }
        assert_eq!(reason_of(8), None, "an unknown byte is damage");
    }

    fn round_trip(change: Change) {
        let mut buf = Vec::new();
        encode_change(&mut buf, &change);
        let Frame::Ok {
            kind,
            payload,
            next,
        } = read_frame(&buf, 0)
        else {
            panic!("frame did not read back");
        };
        assert_eq!(next, buf.len());
        assert_eq!(
            decode_record(kind, payload, &mut UserInterner::default()).unwrap(),
            Record::Change(change)
        );
    }

    #[test]
    fn every_change_round_trips() {
        let id = SessionId(7);
        let user = UserId::new("alice", &crate::options::Limits::default()).unwrap();
        let mut d = SessionData::new();
        d.insert("k", &vec![1u8, 2, 3]).unwrap();
        round_trip(Change::Create {
            id,
            hash: TokenHash(u128::MAX),
            user: Some(user.clone()),
            label: Some(Arc::from("Firefox")),
            created: Timestamp(1),
            absolute: Timestamp(2),
            idle_ms: 3,
            data: SessionData::new(),
        });
        round_trip(Change::Data {
            id,
            version: 4,
            at: Timestamp(9),
            data: d,
        });
        round_trip(Change::Touch {
            id,
            at: Timestamp(5),
        });
        round_trip(Change::Extend {
            id,
            absolute: Timestamp(6),
            at: Timestamp(1),
        });
        round_trip(Change::Bind {
            id,
            user,
            at: Timestamp(7),
            version: 8,
        });
        round_trip(Change::Unbind { id, version: 9 });
        round_trip(Change::Label { id, label: None });
        round_trip(Change::Rotate {
            id,
            old: TokenHash(1),
            new: TokenHash(2),
            grace_until: Timestamp(10),
            at: Timestamp(3),
        });
        round_trip(Change::End {
            id,
            reason: EndReason::Revoked,
        });
        round_trip(Change::Clear);
        round_trip(Change::NotBefore {
            user: UserId::new("bob", &crate::options::Limits::default()).unwrap(),
            at: Timestamp(11),
        });
        let factors = vec![
            Factor::new("password", 1, Timestamp(12)),
            Factor::new("oidc:google", 2, Timestamp(13)),
        ];
        round_trip(Change::SignIn {
            id,
            factors: factors.clone(),
        });
        round_trip(Change::SignIn {
            id,
            factors: Vec::new(),
        });
        for address in [None, Some("203.0.113.0"), Some("2001:db8::")] {
            round_trip(Change::Device {
                id,
                device: DeviceInfo {
                    user_agent: address.is_none().then(|| Arc::from("Firefox")),
                    address: address.map(|a| a.parse().unwrap()),
                    at: Timestamp(14),
                },
            });
        }
        // An image with factors and a device is an extended image, read back whole
        // from a segment and from a base.
        let img = Image {
            id,
            hash: TokenHash(3),
            user: Some(UserId::new("carol", &crate::options::Limits::default()).unwrap()),
            details: Details {
                label: Some(Arc::from("phone")),
                factors: factors.into(),
                device: Some(Box::new(DeviceInfo {
                    user_agent: None,
                    address: Some("10.0.0.0".parse().unwrap()),
                    at: Timestamp(15),
                })),
            }
            .shared(),
            created: Timestamp(1),
            authenticated: Some(Timestamp(2)),
            absolute: Timestamp(99),
            idle_ms: 0,
            last_seen: Timestamp(3),
            version: 4,
            data: SessionData::new(),
        };
        let mut buf = Vec::new();
        encode_image(&mut buf, &img.view());
        let Frame::Ok { kind, payload, .. } = read_frame(&buf, 0) else {
            panic!("frame did not read back");
        };
        assert_eq!(kind, kind::IMAGE_X);
        let mut users = UserInterner::default();
        assert_eq!(
            decode_record(kind, payload, &mut users).unwrap(),
            Record::Image(img.clone())
        );
        let BaseRecord::Image(mut from_base, ix) =
            decode_base_record(kind, payload, &mut users).unwrap()
        else {
            panic!("not an image");
        };
        from_base.user = img.user.clone();
        assert_ne!(ix, NO_USER);
        assert_eq!(from_base, img);
    }

    #[test]
    fn sign_in_and_device_records_that_break_the_rules_are_damage() {
        let id = SessionId(1);
        let too_many: Vec<Factor> = (0..9)
            .map(|i| Factor::new(&format!("m{i}"), 1, Timestamp(1)))
            .collect();
        let twice = vec![
            Factor::new("otp", 1, Timestamp(1)),
            Factor::new("otp", 2, Timestamp(2)),
        ];
        let bad_name = vec![Factor::new("pass word", 1, Timestamp(1))];
        for factors in [too_many, twice, bad_name] {
            let mut buf = Vec::new();
            encode_change(&mut buf, &Change::SignIn { id, factors });
            let Frame::Ok { kind, payload, .. } = read_frame(&buf, 0) else {
                panic!("frame did not read back");
            };
            assert!(decode_record(kind, payload, &mut UserInterner::default()).is_err());
        }
        let empty = DeviceInfo {
            user_agent: None,
            address: None,
            at: Timestamp(1),
        };
        let unclean = DeviceInfo {
            user_agent: Some(Arc::from("a\nb")),
            ..empty.clone()
        };
        for device in [empty, unclean] {
            let mut buf = Vec::new();
            encode_change(&mut buf, &Change::Device { id, device });
            let Frame::Ok { kind, payload, .. } = read_frame(&buf, 0) else {
                panic!("frame did not read back");
            };
            assert!(decode_record(kind, payload, &mut UserInterner::default()).is_err());
        }
    }

    #[test]
    fn malformed_payloads_are_errors_not_panics() {
        for kind in 0..=20u8 {
            for payload in [&[][..], &[0xff; 3][..], &[0u8; 64][..], &[0xff; 200][..]] {
                let _ = decode_record(kind, payload, &mut UserInterner::default());
            }
        }
        // A bind with an empty user id is refused.
        let rec = BindRec {
            id: 1,
            user: "",
            at: 0,
            version: 0,
        };
        let payload = codec::encode(&rec, None).unwrap();
        assert!(decode_record(kind::BIND, &payload, &mut UserInterner::default()).is_err());
    }
}
