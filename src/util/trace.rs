//! Events for an operator, through the `tracing` crate (cargo feature `tracing`): what
//! is slow or rare — an open and what its recovery found, a compaction, a journal that
//! failed for good, a full disk and its end — never one per read or write. Every event
//! has the target `sessiondb`. Without the feature the macros expand to nothing, so
//! they cost nothing and their arguments are not evaluated.

/// `event!(level, fields..., "message")`: a `tracing` event at `level` (`info`, `warn`,
/// `error`, ...), target `sessiondb`.
macro_rules! event {
    ($level:ident, $($rest:tt)+) => {
        #[cfg(feature = "tracing")]
        {
            ::tracing::$level!(target: "sessiondb", $($rest)+);
        }
    };
}

/// `let _span = span!("name", fields...);`: a `tracing` span at info level, entered
/// until the guard drops ([`NoSpan`] without the feature).
macro_rules! span {
    ($name:literal $(, $($fields:tt)+)?) => {{
        #[cfg(feature = "tracing")]
        let guard = ::tracing::info_span!(target: "sessiondb", $name $(, $($fields)+)?).entered();
        #[cfg(not(feature = "tracing"))]
        let guard = $crate::util::trace::NoSpan;
        guard
    }};
}

pub(crate) use {event, span};

/// What [`span!`] gives without the feature: nothing to enter or leave.
#[cfg(not(feature = "tracing"))]
pub(crate) struct NoSpan;
