//! Sessions over HTTP: the session cookie (read, set with its security flags, cleared),
//! the extractors the handlers take ([`CurrentSession`], [`SignedIn`]), and the CSRF
//! token every session carries in its data.
//!
//! Everything here is built on sessiondb's own API: the cookie holds the session's
//! [`Token`] (32 URL-safe characters, parsed strictly); the store keeps only its hash.
//!
//! CSRF follows the adam-hanna/sessions example: a random string is stored in the
//! session's data when the session is made (and replaced at login), every page that
//! has a form puts it in a hidden field, and every POST must send it back; it is
//! compared in constant time, and a missing or wrong one gets 403.
//!
//! Every request with a session reports its client to the store
//! ([`sessiondb::Sessions::seen_from_if_changed`]: its `User-Agent` and address, for
//! the devices page), which writes only when they changed, at most once per touch
//! interval, and checks that against the session the request read: an unchanged
//! device costs no lookup and, on Redis or PostgreSQL, no round trip.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts, OptionalFromRequestParts};
use axum::http::header::{COOKIE, USER_AGENT};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};
use sessiondb::{Device, Error, Session, Token, UserId};
use subtle::ConstantTimeEq;

use crate::{AppError, AppState, Config};

/// The session data key the CSRF token is stored under.
pub const CSRF_KEY: &str = "csrf";

/// The value of cookie `name` in the request's `Cookie` headers, if present.
pub fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().trim_matches('"'))
}

/// The request's `User-Agent`, if it is text.
pub fn user_agent(headers: &HeaderMap) -> Option<&str> {
    headers.get(USER_AGENT).and_then(|v| v.to_str().ok())
}

/// The first address of the request's `X-Forwarded-For` (the client, as the first
/// proxy was told), if there is one and it parses.
pub fn forwarded_for(headers: &HeaderMap) -> Option<IpAddr> {
    let first = headers
        .get("x-forwarded-for")?
        .to_str()
        .ok()?
        .split(',')
        .next()?
        .trim();
    first.parse().ok()
}

/// The client of a request, as the store records it: its `User-Agent` and its address
/// — the connection's peer (`axum::serve` with
/// `into_make_service_with_connect_info::<SocketAddr>()`, as `main.rs` does), or with
/// [`Config::trust_forwarded_for`] the first `X-Forwarded-For` address when there is
/// one. Shown on the devices page, never used to decide anything.
pub fn client_device(parts: &Parts, config: &Config) -> Device {
    let mut device = Device::new();
    if let Some(ua) = user_agent(&parts.headers) {
        device = device.user_agent(ua);
    }
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip());
    let forwarded = config
        .trust_forwarded_for
        .then(|| forwarded_for(&parts.headers))
        .flatten();
    if let Some(ip) = forwarded.or(peer) {
        device = device.address(ip);
    }
    device
}

/// The request's client ([`client_device`]), for a handler that makes a session.
#[derive(Debug)]
pub struct ClientDevice(pub Device);

impl FromRequestParts<AppState> for ClientDevice {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(ClientDevice(client_device(parts, &state.config)))
    }
}

/// The `Set-Cookie` value that hands `token` to the browser: `HttpOnly` (no script can
/// read it), `SameSite=Lax` (not sent on cross-site POSTs), `Path=/`, and `Secure`
/// unless the app runs with `--insecure-http`. With `max_age` the cookie outlives the
/// browser until the session's absolute deadline; without, it is a browser-session
/// cookie.
pub fn session_cookie(config: &Config, token: &Token, max_age: Option<Duration>) -> HeaderValue {
    let mut cookie = format!(
        "{}={token}; Path=/; HttpOnly; SameSite=Lax",
        config.cookie_name()
    );
    if config.secure_cookies {
        cookie.push_str("; Secure");
    }
    if let Some(age) = max_age {
        cookie.push_str(&format!("; Max-Age={}", age.as_secs()));
    }
    HeaderValue::from_str(&cookie).expect("a token and a cookie name are valid header text")
}

/// The `Set-Cookie` value that removes the session cookie from the browser.
pub fn clear_cookie(config: &Config) -> HeaderValue {
    let mut cookie = format!(
        "{}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0",
        config.cookie_name()
    );
    if config.secure_cookies {
        cookie.push_str("; Secure");
    }
    HeaderValue::from_str(&cookie).expect("a cookie name is valid header text")
}

/// A fresh CSRF token: 32 bytes from the OS CSPRNG, as 64 hex digits.
///
/// # Errors
/// If the OS random generator fails.
pub fn new_csrf_token() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The CSRF token stored in the session, if it has one.
pub fn csrf_of(session: &Session) -> Option<String> {
    session.get::<String>(CSRF_KEY).ok().flatten()
}

/// Whether `sent` is the session's CSRF token, compared in constant time. A session
/// without one matches nothing.
pub fn csrf_matches(session: &Session, sent: &str) -> bool {
    match csrf_of(session) {
        Some(expected) if !expected.is_empty() => {
            bool::from(expected.as_bytes().ct_eq(sent.as_bytes()))
        }
        _ => false,
    }
}

/// The live session the request's cookie addresses: take `Option<CurrentSession>` in
/// a handler. A missing, malformed, unknown, ended or expired cookie is no session.
#[derive(Debug)]
pub struct CurrentSession {
    /// The token from the cookie.
    pub token: Token,
    /// The session as of this request (the read counts as activity).
    pub session: Session,
}

// README snippet start: the extractor
impl OptionalFromRequestParts<AppState> for CurrentSession {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Option<Self>, Self::Rejection> {
        let Some(cookie) = cookie_value(&parts.headers, state.config.cookie_name()) else {
            return Ok(None);
        };
        // Not a token this store issued (wrong length, wrong alphabet): no session.
        let Ok(token) = Token::parse(cookie) else {
            return Ok(None);
        };
        // `None` once the session is ended, revoked or expired (O(1) in memory, one
        // round trip on Redis or PostgreSQL); an unreachable server is a 500, not a
        // logout.
        let Some(session) = state.store.get(&token).await? else {
            return Ok(None);
        };
        // The device it is on, for the devices page: written only when the browser or
        // the network changed, at most once per touch interval — checked against the
        // session just read, so an unchanged device costs nothing more.
        let device = client_device(parts, &state.config);
        match state
            .store
            .seen_from_if_changed(&token, &session, &device)
            .await
        {
            Ok(_) => Ok(Some(CurrentSession { token, session })),
            // Ended since it was read: no session.
            Err(Error::Ended) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}
// README snippet end

/// A signed-in user's session. Anyone else is sent to the login page.
#[derive(Debug)]
pub struct SignedIn {
    /// The token from the cookie.
    pub token: Token,
    /// The session as of this request.
    pub session: Session,
    /// The user bound to it at login.
    pub user: UserId,
}

impl FromRequestParts<AppState> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let current = <CurrentSession as OptionalFromRequestParts<AppState>>::from_request_parts(
            parts, state,
        )
        .await
        .map_err(IntoResponse::into_response)?;
        let Some(CurrentSession { token, session }) = current else {
            return Err(Redirect::to("/login").into_response());
        };
        match session.user().cloned() {
            Some(user) => Ok(SignedIn {
                token,
                session,
                user,
            }),
            None => Err(Redirect::to("/login").into_response()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(cookies: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for c in cookies {
            h.append(COOKIE, HeaderValue::from_str(c).unwrap());
        }
        h
    }

    #[test]
    fn cookie_value_finds_the_named_cookie_among_others_and_headers() {
        let h = headers(&["a=1; sid=tok; b=2", "c=3"]);
        assert_eq!(cookie_value(&h, "sid"), Some("tok"));
        assert_eq!(cookie_value(&h, "c"), Some("3"));
        assert_eq!(cookie_value(&h, "si"), None, "no prefix matches");
        assert_eq!(cookie_value(&headers(&["sid=\"q\""]), "sid"), Some("q"));
        assert_eq!(cookie_value(&headers(&["garbage"]), "sid"), None);
        assert_eq!(cookie_value(&HeaderMap::new(), "sid"), None);
    }

    #[test]
    fn session_cookie_has_the_security_flags_and_secure_only_when_configured() {
        let token = Token::generate().unwrap();
        let secure = Config::default();
        let v = session_cookie(&secure, &token, Some(Duration::from_secs(60)));
        let v = v.to_str().unwrap();
        assert!(v.starts_with(&format!("__Host-sid={token}; ")), "{v}");
        for flag in ["Path=/", "HttpOnly", "SameSite=Lax", "Secure", "Max-Age=60"] {
            assert!(v.split("; ").any(|a| a == flag), "{flag} missing from {v}");
        }
        let insecure = Config {
            secure_cookies: false,
            ..Config::default()
        };
        let v = session_cookie(&insecure, &token, None);
        let v = v.to_str().unwrap();
        assert!(v.starts_with(&format!("sid={token}; ")), "{v}");
        assert!(!v.contains("Secure") && !v.contains("Max-Age"), "{v}");
        let cleared = clear_cookie(&secure);
        assert!(cleared.to_str().unwrap().contains("Max-Age=0"));
    }

    #[test]
    fn the_client_address_is_the_peers_unless_forwarded_for_is_trusted() {
        let peer: SocketAddr = "198.51.100.9:5555".parse().unwrap();
        let request = |xff: Option<&str>| {
            let mut r = axum::http::Request::builder().header(USER_AGENT, "curl/8.5.0");
            if let Some(v) = xff {
                r = r.header("x-forwarded-for", v);
            }
            let (mut parts, ()) = r.body(()).unwrap().into_parts();
            parts.extensions.insert(ConnectInfo(peer));
            parts
        };
        let trusting = Config {
            trust_forwarded_for: true,
            ..Config::default()
        };
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let xff = request(Some(" 2001:db8::7 , 203.0.113.1"));
        assert_eq!(forwarded_for(&xff.headers), ip("2001:db8::7"));
        assert_eq!(
            client_device(&xff, &Config::default()),
            Device::new().user_agent("curl/8.5.0").address(peer.ip())
        );
        assert_eq!(
            client_device(&xff, &trusting),
            Device::new()
                .user_agent("curl/8.5.0")
                .address("2001:db8::7".parse().unwrap())
        );
        // Missing or not an address: the peer's.
        for bad in [None, Some("unknown"), Some(""), Some("203.0.113.1:80")] {
            let parts = request(bad);
            assert_eq!(forwarded_for(&parts.headers), None, "{bad:?}");
            assert_eq!(
                client_device(&parts, &trusting),
                Device::new().user_agent("curl/8.5.0").address(peer.ip())
            );
        }
        // Served without connect info and no header: no address.
        let (bare, ()) = axum::http::Request::new(()).into_parts();
        assert_eq!(client_device(&bare, &trusting), Device::new());
    }

    #[test]
    fn csrf_tokens_are_fresh_64_hex_digits() {
        let a = new_csrf_token().unwrap();
        let b = new_csrf_token().unwrap();
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn csrf_matches_only_the_stored_token() {
        let store = sessiondb::Store::in_memory().unwrap();
        let (token, bare) = store.create(sessiondb::NewSession::anonymous()).unwrap();
        assert!(
            !csrf_matches(&bare, ""),
            "a session without a token matches nothing"
        );
        store.put(&token, CSRF_KEY, "abc123").unwrap();
        let s = store.get(&token).unwrap();
        assert!(csrf_matches(&s, "abc123"));
        assert!(!csrf_matches(&s, "abc124"));
        assert!(!csrf_matches(&s, "abc12"));
        assert!(!csrf_matches(&s, ""));
    }
}
