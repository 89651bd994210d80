//! sessiondb: an embedded, durable session store that knows which sessions belong to
//! which user.
//!
//! Sessions live in the process, in a sharded in-memory index with O(1) lookup; a
//! hierarchical timing wheel expires them without scanning; a per-user index lists and
//! revokes a user's sessions in O(their count). No Redis, no database.
//!
//! Cargo features: `sled` (the sled backend), `tower-sessions` (the `tower_sessions`
//! module: a store for tower-sessions and axum, with login / devices / "log out
//! everywhere" helpers), `conformance` (the `conformance` module: a behaviour suite any
//! tower-sessions store can run against itself), `actix-session` (the `actix_session`
//! module: a store for actix-session, with the same helpers), `cli` (the `sessiondb`
//! command line), `redis` (`RedisStore`: the same sessions on Redis or Valkey for an
//! app on several nodes, and `Sessions`, one async handle over any backend),
//! `postgres` (`PostgresStore`: the same on PostgreSQL), `postgres-tls` (the same over
//! TLS, rustls with the platform's roots, whenever the URL's `sslmode` asks for it).
//!
//! ```
//! use sessiondb::{NewSession, Store, Token};
//!
//! # fn main() -> Result<(), sessiondb::Error> {
//! let store = Store::in_memory()?;
//!
//! // A visitor arrives: give them a session and its token as a cookie.
//! let (token, _) = store.create(NewSession::anonymous().label("Firefox on Linux"))?;
//! let cookie = token.to_string();
//!
//! // Next request: parse the cookie strictly, find the session, keep some data.
//! let token = Token::parse(&cookie)?;
//! store.put(&token, "cart", &vec![42u32])?;
//!
//! // Login: new token (fixation defence), user bound.
//! let token = store.login(&token, "alice")?;
//! let session = store.get(&token).expect("live");
//! assert_eq!(session.user().map(|u| u.as_str()), Some("alice"));
//! assert_eq!(session.get::<Vec<u32>>("cart")?, Some(vec![42]));
//!
//! // "Sign out everywhere".
//! assert_eq!(store.revoke_user("alice")?, 1);
//! assert!(store.get(&token).is_none());
//! # Ok(()) }
//! ```
// The lint decision: every public item is documented, and there is no unsafe code.
// Clippy runs in CI with `-D warnings` (its default set); pedantic lints are not
// enforced crate-wide.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

// The modules in layer order, lowest first; imports only go down (tests/layering.rs
// holds the rule, ARCHITECTURE.md draws it).
//
// Used by every layer: errors, time, options, and building blocks without domain
// knowledge.
mod clock;
mod error;
mod options;
mod util;
// What a session is: no locks, threads or I/O.
mod model;
// The in-memory index, and persistence: neither knows the other.
mod index;
// (persistence)
mod backend;
// Between the engine and a backend: the writer thread, durability, commits.
mod journal;
// The embedded engine and its public API; and the same API on Redis.
#[cfg(feature = "redis")]
mod redis;
// The same API on PostgreSQL.
#[cfg(feature = "postgres")]
mod postgres;
mod store;
// One async handle over any of them.
#[cfg(any(feature = "redis", feature = "postgres", feature = "tower-sessions"))]
mod sessions;
// The web-framework stores on top.
#[cfg(any(feature = "tower-sessions", feature = "actix-session"))]
mod integrations;

pub use backend::{CompactionStats, RecoveryReport, SkippedRange};
pub use clock::{Clock, ManualClock, SystemClock, Timestamp};
pub use error::{Error, Result};
#[cfg(feature = "actix-session")]
pub use integrations::actix_session;
#[cfg(feature = "conformance")]
pub use integrations::conformance;
#[cfg(feature = "tower-sessions")]
pub use integrations::tower_sessions;
pub use journal::commit::Commit;
pub use model::data::SessionData;
pub use model::device::Device;
pub use model::event::{EndReason, Event};
pub use model::portable::SessionRecord;
pub use model::session::{NewSession, Session, UserId};
pub use model::signin::{Criterion, Factor, SignIn};
pub use model::token::{InstanceId, SessionId, TOKEN_STR_LEN, Token, TokenHash};
pub use options::{
    AddressPrivacy, BackendKind, Budget, BudgetPolicy, Durability, LimitPolicy, Limits, Options,
};
#[cfg(feature = "postgres")]
pub use postgres::{PostgresOptions, PostgresStore};
#[cfg(feature = "redis")]
pub use redis::{RedisOptions, RedisStore};
#[cfg(any(feature = "redis", feature = "postgres", feature = "tower-sessions"))]
pub use sessions::Sessions;
pub use store::{EndCounts, Stats, Store};
pub use util::failpoint::FAILPOINT_ENV;
pub use util::vfs;

/// The README's code blocks, compiled and run as doctests so the quickstart cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

// The pages under docs/ and the example app's README, compiled and run as doctests the
// same way: every Rust block in them is a doctest or a `rust,ignore` snippet that
// tests/readme_snippets.rs holds to its compiled file.

/// docs/guarantees.md as doctests.
#[cfg(doctest)]
#[doc = include_str!("../docs/guarantees.md")]
struct GuaranteesDoctests;

/// docs/durability.md as doctests.
#[cfg(doctest)]
#[doc = include_str!("../docs/durability.md")]
struct DurabilityDoctests;

/// docs/open-internet.md as doctests.
#[cfg(doctest)]
#[doc = include_str!("../docs/open-internet.md")]
struct OpenInternetDoctests;

/// docs/format.md as doctests: they write a store and check its bytes.
#[cfg(doctest)]
#[doc = include_str!("../docs/format.md")]
struct FormatDoctests;

/// docs/integrations.md as doctests.
#[cfg(doctest)]
#[doc = include_str!("../docs/integrations.md")]
struct IntegrationsDoctests;

/// docs/redis.md as doctests.
#[cfg(doctest)]
#[doc = include_str!("../docs/redis.md")]
struct RedisDoctests;

/// docs/several-nodes.md as doctests.
#[cfg(doctest)]
#[doc = include_str!("../docs/several-nodes.md")]
struct SeveralNodesDoctests;

/// docs/cli.md as doctests.
#[cfg(doctest)]
#[doc = include_str!("../docs/cli.md")]
struct CliDoctests;

/// docs/performance.md as doctests.
#[cfg(doctest)]
#[doc = include_str!("../docs/performance.md")]
struct PerformanceDoctests;

/// docs/devices.md as doctests.
#[cfg(doctest)]
#[doc = include_str!("../docs/devices.md")]
struct DevicesDoctests;

/// docs/observability.md as doctests.
#[cfg(doctest)]
#[doc = include_str!("../docs/observability.md")]
struct ObservabilityDoctests;

/// examples/axum-app/README.md as doctests.
#[cfg(doctest)]
#[doc = include_str!("../examples/axum-app/README.md")]
struct AxumAppReadmeDoctests;
