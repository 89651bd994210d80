//! The actix-session store (`sessiondb::actix_session`), on a real store in a tempdir:
//!
//! - the behaviour actix-session's own acceptance suite asks of every backend (basic
//!   workflow, TTL refreshed on changes / on every request, the login-logout workflow
//!   with invalidation, a session-reading guard), under both cookie content-security
//!   policies, in-process and over HTTP with a real bound server and client
//!   ([`acceptance`]);
//! - the store methods themselves, as actix-session's Redis and cookie stores test
//!   theirs (missing keys, bad state, updates of gone sessions), plus what sessiondb adds:
//!   ending is final, TTLs are exact, data is durable ([`store_methods`]);
//! - the helpers over HTTP: login with rotation, devices, ending one device, "log out
//!   everywhere", labels, and the failure modes around `renew` ([`store_helpers`]).
//!
//! One test binary (`cargo test --features actix-session --test actix_session`); what
//! more than one of those modules uses is in [`helpers`].

mod helpers;

mod acceptance;
mod store_helpers;
mod store_methods;
