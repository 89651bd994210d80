//! The export format: JSON lines, one object per session, then one per user's
//! not-before time. `v` is per line: the schema version that line needs.
//!
//! ```text
//! {"v":1,"id":"<hyphenated uuid>","token_hash":"<32 hex digits>","user":"alice"|null,
//!  "label":"Firefox"|null,"created_ms":<u64>,"authenticated_ms":<u64>|null,
//!  "absolute_ms":<u64>,"idle_timeout_ms":<u64>|null,"last_seen_ms":<u64>,
//!  "version":<u64>,"data":{"<key>":"<base64 of the raw value bytes>",...}}
//! ```
//!
//! Times are milliseconds since the Unix epoch (`absolute_ms` 18446744073709551615 means
//! no deadline); `idle_timeout_ms` null or 0 means no idle timeout. `token_hash` is the
//! first 128 bits of the BLAKE3 hash of the token, as the store keeps it: the token
//! itself is never stored, so never exported, and an imported session answers to the
//! same cookie as before. Values are the stored bytes (bincode, or whatever the
//! application put with `put_raw`), base64 with padding. Optional fields may be absent;
//! unknown fields are refused, so a typo is an error rather than silently lost. A
//! reader refuses a `v` it does not know.
//!
//! Version 2 adds a user's not-before time (`Store::revoke_user_before`): importing it
//! keeps refusing the sessions it revoked, on the store imported into too.
//!
//! ```text
//! {"v":2,"not_before":{"user":"alice","at_ms":<u64>}}
//! ```
//!
//! Version 3 adds how a session signed in and its device (`Store::login_with`,
//! `Store::seen_from`), on its session line:
//!
//! ```text
//! {"v":3, ...the fields of version 1...,
//!  "factors":[{"method":"password","level":1,"at_ms":<u64>},...],
//!  "user_agent":"Mozilla/5.0 ..."|null,"address":"203.0.113.0"|null,
//!  "device_ms":<u64>|null}
//! ```
//!
//! Each line is written at the lowest version that holds it (a session with neither
//! factors nor a device is a version-1 line), so an export without the newer fields
//! stays readable by an older build, and one with them is refused by it whole (it
//! checks every line before importing any) rather than imported without them.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use sessiondb::{
    Factor, Limits, SessionData, SessionId, SessionRecord, Timestamp, TokenHash, UserId,
};

/// The schema version of a session line (this build reads it on any line).
pub const SCHEMA_VERSION: u64 = 1;
/// The schema version of a not-before line.
pub const NOT_BEFORE_VERSION: u64 = 2;
/// The schema version of a session line with factors or a device; the newest this
/// build reads.
pub const DETAILS_VERSION: u64 = 3;

/// What one line holds.
pub enum Item {
    /// A session.
    Session(Box<SessionRecord>),
    /// A user's not-before time.
    NotBefore(UserId, Timestamp),
}

/// A not-before line.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct NotBeforeLine {
    v: u64,
    not_before: NotBefore,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct NotBefore {
    user: String,
    at_ms: u64,
}

/// The line of `user`'s not-before time `at`, as JSON.
pub fn not_before_line(user: &UserId, at: Timestamp) -> serde_json::Value {
    serde_json::to_value(NotBeforeLine {
        v: NOT_BEFORE_VERSION,
        not_before: NotBefore {
            user: user.as_str().to_owned(),
            at_ms: at.as_millis(),
        },
    })
    .expect("a struct of strings and integers")
}

/// One line of an export, field for field.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Line {
    /// The schema version, [`SCHEMA_VERSION`].
    pub v: u64,
    /// The public session id.
    pub id: String,
    /// The token's hash, 32 lowercase hex digits.
    pub token_hash: String,
    /// The bound user.
    #[serde(default)]
    pub user: Option<String>,
    /// The device label.
    #[serde(default)]
    pub label: Option<String>,
    /// Creation time.
    pub created_ms: u64,
    /// Last authentication (user bind), if any.
    #[serde(default)]
    pub authenticated_ms: Option<u64>,
    /// The absolute deadline.
    pub absolute_ms: u64,
    /// The idle timeout; null (or 0) for none.
    #[serde(default)]
    pub idle_timeout_ms: Option<u64>,
    /// The last recorded activity.
    pub last_seen_ms: u64,
    /// The data version.
    pub version: u64,
    /// Key → base64 of the raw value bytes, in key order.
    pub data: BTreeMap<String, String>,
    /// How the user signed in (version 3).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub factors: Vec<FactorLine>,
    /// The client's user agent (version 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// The client's address as stored (version 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// When the device was recorded (version 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_ms: Option<u64>,
}

/// One factor of a session line.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FactorLine {
    /// The method's name.
    pub method: String,
    /// The level its step reached.
    pub level: u8,
    /// When.
    pub at_ms: u64,
}

/// The line for `rec`.
pub fn to_line(rec: &SessionRecord) -> Line {
    let details = !rec.factors.is_empty() || rec.device_seen_at.is_some();
    Line {
        v: if details {
            DETAILS_VERSION
        } else {
            SCHEMA_VERSION
        },
        id: rec.id.to_string(),
        token_hash: format!("{:032x}", rec.token_hash.as_u128()),
        user: rec.user.as_ref().map(|u| u.as_str().to_owned()),
        label: rec.label.clone(),
        created_ms: rec.created.as_millis(),
        authenticated_ms: rec.authenticated.map(Timestamp::as_millis),
        absolute_ms: rec.absolute.as_millis(),
        idle_timeout_ms: rec
            .idle_timeout
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        last_seen_ms: rec.last_seen.as_millis(),
        version: rec.version,
        data: rec
            .data
            .iter()
            .map(|(k, v)| (k.to_owned(), BASE64.encode(v)))
            .collect(),
        factors: rec
            .factors
            .iter()
            .map(|f| FactorLine {
                method: f.method().to_owned(),
                level: f.level(),
                at_ms: f.at().as_millis(),
            })
            .collect(),
        user_agent: rec.user_agent.clone(),
        address: rec.address.map(|a| a.to_string()),
        device_ms: rec.device_seen_at.map(Timestamp::as_millis),
    }
}

/// Parses and validates one line of an export into the record it describes. The error
/// says what was wrong, without the line number (the caller adds it).
pub fn parse(text: &str, limits: &Limits) -> Result<Item, String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
    let Some(obj) = value.as_object() else {
        return Err("expected a JSON object, one session per line".into());
    };
    let v = match obj.get("v") {
        None => return Err("missing \"v\", the schema version".into()),
        Some(v) => v.as_u64().filter(|v| (1..=DETAILS_VERSION).contains(v)),
    };
    let Some(v) = v else {
        return Err(format!(
            "schema version {} is not supported; this sessiondb reads versions 1 to \
             {DETAILS_VERSION}",
            obj["v"]
        ));
    };
    if obj.contains_key("not_before") {
        if v < NOT_BEFORE_VERSION {
            return Err(format!(
                "\"not_before\" needs schema version {NOT_BEFORE_VERSION}"
            ));
        }
        let line: NotBeforeLine = serde_json::from_value(value).map_err(|e| e.to_string())?;
        let user = UserId::new(&line.not_before.user, limits)
            .map_err(|e| format!("\"not_before\".\"user\": {e}"))?;
        return Ok(Item::NotBefore(user, Timestamp(line.not_before.at_ms)));
    }
    let line: Line = serde_json::from_value(value).map_err(|e| e.to_string())?;
    let details = !line.factors.is_empty()
        || line.user_agent.is_some()
        || line.address.is_some()
        || line.device_ms.is_some();
    if details && v < DETAILS_VERSION {
        return Err(format!(
            "\"factors\", \"user_agent\", \"address\" and \"device_ms\" need schema \
             version {DETAILS_VERSION}"
        ));
    }
    from_line(line, limits).map(|rec| Item::Session(Box::new(rec)))
}

fn from_line(line: Line, limits: &Limits) -> Result<SessionRecord, String> {
    let id = SessionId::parse(&line.id).map_err(|e| format!("\"id\": {e}"))?;
    let token_hash = parse_hash(&line.token_hash)?;
    let user = line
        .user
        .as_deref()
        .map(|u| UserId::new(u, limits))
        .transpose()
        .map_err(|e| format!("\"user\": {e}"))?;
    if let Some(label) = &line.label
        && label.len() > limits.max_label_bytes
    {
        return Err(format!(
            "\"label\" is {} bytes, over the limit of {}",
            label.len(),
            limits.max_label_bytes
        ));
    }
    if line.last_seen_ms < line.created_ms {
        return Err("\"last_seen_ms\" is earlier than \"created_ms\"".into());
    }
    let mut data = SessionData::new();
    for (key, b64) in &line.data {
        let bytes = BASE64
            .decode(b64)
            .map_err(|e| format!("\"data\".{key:?}: not valid base64: {e}"))?;
        if key.len() > limits.max_key_bytes {
            return Err(format!(
                "\"data\".{key:?}: the key is {} bytes, over the limit of {}",
                key.len(),
                limits.max_key_bytes
            ));
        }
        if bytes.len() > limits.max_value_bytes {
            return Err(format!(
                "\"data\".{key:?}: the value is {} bytes, over the limit of {}",
                bytes.len(),
                limits.max_value_bytes
            ));
        }
        data.insert_raw(key, &bytes)
            .map_err(|e| format!("\"data\".{key:?}: {e}"))?;
    }
    if data.encoded_len() > limits.max_data_bytes {
        return Err(format!(
            "\"data\" is {} bytes encoded, over the limit of {}",
            data.encoded_len(),
            limits.max_data_bytes
        ));
    }
    let address = line
        .address
        .as_deref()
        .map(|a| {
            a.parse::<IpAddr>()
                .map_err(|_| format!("\"address\": {a:?} is not an IP address"))
        })
        .transpose()?;
    let rec = SessionRecord {
        id,
        token_hash,
        user,
        label: line.label,
        created: Timestamp(line.created_ms),
        authenticated: line.authenticated_ms.map(Timestamp),
        absolute: Timestamp(line.absolute_ms),
        idle_timeout: line
            .idle_timeout_ms
            .filter(|&ms| ms != 0)
            .map(Duration::from_millis),
        last_seen: Timestamp(line.last_seen_ms),
        version: line.version,
        data,
        factors: line
            .factors
            .iter()
            .map(|f| Factor::new(&f.method, f.level, Timestamp(f.at_ms)))
            .collect(),
        user_agent: line.user_agent,
        address,
        device_seen_at: line.device_ms.map(Timestamp),
    };
    rec.check(limits).map_err(|e| e.to_string())?;
    Ok(rec)
}

fn parse_hash(s: &str) -> Result<TokenHash, String> {
    if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("\"token_hash\" must be 32 hex digits".into());
    }
    u128::from_str_radix(s, 16)
        .map(TokenHash::from_u128)
        .map_err(|e| format!("\"token_hash\": {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits::default()
    }

    const GOOD: &str = r#"{"v":1,"id":"0b6c1f3e-9a58-4c1e-8d53-1f0f8a3b2c11","token_hash":"00112233445566778899aabbccddeeff","user":"alice","label":null,"created_ms":1000,"authenticated_ms":1000,"absolute_ms":9000,"idle_timeout_ms":null,"last_seen_ms":2000,"version":3,"data":{"cart":"KgAAAA=="}}"#;

    fn session(text: &str) -> Result<SessionRecord, String> {
        match parse(text, &limits())? {
            Item::Session(rec) => Ok(*rec),
            Item::NotBefore(..) => Err("a not-before line".into()),
        }
    }

    #[test]
    fn a_not_before_line_round_trips_and_needs_version_2() {
        let user = UserId::new("alice", &limits()).unwrap();
        let line = not_before_line(&user, Timestamp(1234)).to_string();
        assert_eq!(
            line,
            r#"{"not_before":{"at_ms":1234,"user":"alice"},"v":2}"#
        );
        match parse(&line, &limits()).unwrap() {
            Item::NotBefore(u, t) => assert_eq!((u.as_str(), t), ("alice", Timestamp(1234))),
            Item::Session(_) => panic!("read as a session"),
        }
        for (bad, want) in [
            (line.replace("\"v\":2", "\"v\":1"), "needs schema version 2"),
            (line.replace("\"v\":2", "\"v\":4"), "not supported"),
            (line.replace("alice", ""), "\"user\""),
            (line.replace("1234", "-1"), "invalid value"),
            (line.replace("\"at_ms\":1234,", ""), "missing field `at_ms`"),
            (
                line.replace("\"v\":2", "\"v\":2,\"id\":\"x\""),
                "unknown field",
            ),
        ] {
            let err = parse(&bad, &limits()).err().unwrap_or_default();
            assert!(err.contains(want), "{bad}: {err:?} should say {want:?}");
        }
        // A session line of version 2 reads as version 1's.
        assert!(session(&GOOD.replace("\"v\":1", "\"v\":2")).is_ok());
    }

    #[test]
    fn a_good_line_round_trips_to_the_same_json() {
        let rec = session(GOOD).unwrap();
        assert_eq!(rec.user.as_ref().unwrap().as_str(), "alice");
        assert_eq!(rec.data.get_raw("cart"), Some(&[42u8, 0, 0, 0][..]));
        assert_eq!(serde_json::to_string(&to_line(&rec)).unwrap(), GOOD);
    }

    #[test]
    fn a_session_with_factors_and_a_device_is_a_version_3_line_that_round_trips() {
        let line = GOOD.replace("\"v\":1", "\"v\":3").replace(
            "}}",
            "},\"factors\":[{\"method\":\"password\",\"level\":1,\"at_ms\":1500}],\
             \"user_agent\":\"Firefox\",\"address\":\"203.0.113.0\",\"device_ms\":1600}",
        );
        let rec = session(&line).unwrap();
        assert_eq!(rec.factors[0].method(), "password");
        assert_eq!(rec.address, Some("203.0.113.0".parse().unwrap()));
        assert_eq!(serde_json::to_string(&to_line(&rec)).unwrap(), line);
        for (bad, want) in [
            (line.replace("\"v\":3", "\"v\":2"), "need schema version 3"),
            (line.replace("password", "pass word"), "invalid sign-in"),
            (
                line.replace("203.0.113.0", "203.0.113"),
                "not an IP address",
            ),
            (line.replace(",\"device_ms\":1600", ""), "device_seen_at"),
            (
                line.replace("\"user\":\"alice\"", "\"user\":null"),
                "no user",
            ),
            (
                line.replace("\"level\":1", "\"level\":256"),
                "invalid value",
            ),
        ] {
            let err = session(&bad).err().unwrap_or_default();
            assert!(err.contains(want), "{bad}: {err:?} should say {want:?}");
        }
    }

    #[test]
    fn each_kind_of_bad_line_is_refused_with_what_was_wrong() {
        let cases = [
            ("{", "not valid JSON"),
            ("[1]", "expected a JSON object"),
            (r#"{"id":"x"}"#, "missing \"v\""),
            (r#"{"v":4}"#, "schema version 4 is not supported"),
            (
                &GOOD.replace("\"version\":3", "\"version\":3,\"x\":1"),
                "unknown field",
            ),
            (
                &GOOD.replace(",\"version\":3", ""),
                "missing field `version`",
            ),
            (&GOOD.replace("0b6c1f3e-", "zz6c1f3e-"), "\"id\""),
            (&GOOD.replace("00112233", "0011223"), "\"token_hash\""),
            (&GOOD.replace("\"alice\"", "\"\""), "\"user\""),
            (&GOOD.replace("KgAAAA==", "!!"), "not valid base64"),
            (
                &GOOD.replace("\"last_seen_ms\":2000", "\"last_seen_ms\":10"),
                "earlier than",
            ),
            (
                &GOOD.replace("\"created_ms\":1000", "\"created_ms\":-1"),
                "invalid value",
            ),
        ];
        for (line, want) in cases {
            let err = session(line).err().unwrap_or_default();
            assert!(err.contains(want), "{line}: {err:?} should say {want:?}");
        }
    }
}
