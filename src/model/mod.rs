//! What a session is — no locks, threads or I/O: its secret token, public id and their
//! hashes ([`token`]), its typed data ([`data`]), the session and how to create one
//! ([`session`]), how it signed in ([`signin`]) and from what device ([`device`]),
//! kept together with its label ([`details`]), lifecycle events ([`event`]), the changes the engine hands to
//! persistence ([`change`]) and a whole session as public fields ([`portable`]).

pub(crate) mod change;
pub(crate) mod data;
pub(crate) mod details;
pub(crate) mod device;
pub(crate) mod event;
pub(crate) mod portable;
pub(crate) mod session;
pub(crate) mod signin;
pub(crate) mod token;
