//! What a session is — no locks, threads or I/O: its secret token, public id and their
//! hashes ([`token`]), its typed data ([`data`]), the session and how to create one
//! ([`session`]), lifecycle events ([`event`]), the changes the engine hands to
//! persistence ([`change`]) and a whole session as public fields ([`portable`]).

pub(crate) mod change;
pub(crate) mod data;
pub(crate) mod event;
pub(crate) mod portable;
pub(crate) mod session;
pub(crate) mod token;
