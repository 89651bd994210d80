//! Arbitrary strings as tokens and public session ids: parsing never panics, and
//! whatever parses prints back as exactly the input (one spelling per value).
#![no_main]

use sessiondb::{SessionId, Token};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    if let Ok(t) = Token::parse(&s) {
        assert_eq!(t.to_string(), s, "a token has one spelling");
        assert_eq!(Token::from_bytes(*t.as_bytes()), t);
    }
    if let Ok(id) = SessionId::parse(&s) {
        assert_eq!(id.to_string(), s.to_ascii_lowercase(), "an id prints as it parsed");
    }
    // The same through FromStr, and on raw bytes that are not UTF-8 as well.
    let _ = s.parse::<Token>();
    if let Ok(raw) = std::str::from_utf8(data) {
        let _ = raw.parse::<SessionId>();
    }
});
