//! How a command ends: what it prints on stdout (text, or pretty JSON), and [`Fail`],
//! the failure it returns instead (printed on stderr, exit status 1).

use std::io::{self, Write};
use std::time::Duration;

use sessiondb::Error;

/// A failed operation: its message, printed after "sessiondb: error: ", exit status 1.
pub struct Fail(pub String);

impl From<Error> for Fail {
    fn from(e: Error) -> Fail {
        Fail(match &e {
            Error::Locked { dir, pid } => format!(
                "{} is in use{}: this tool works only on a store that no process has \
                 open. Stop the application (or close its store) and run the command again",
                dir.display(),
                pid.map(|p| format!(" by process {p}")).unwrap_or_default()
            ),
            _ => e.to_string(),
        })
    }
}

pub fn io_fail(what: String) -> impl FnOnce(io::Error) -> Fail {
    move |e| Fail(format!("{what}: {e}"))
}

/// Prints `text` and a newline on stdout.
pub fn say(text: &str) -> Result<(), Fail> {
    let mut out = io::stdout().lock();
    writeln!(out, "{text}")
        .and_then(|()| out.flush())
        .map_err(io_fail("writing to stdout".into()))
}

pub fn say_json(v: &serde_json::Value) -> Result<(), Fail> {
    let text = serde_json::to_string_pretty(v).map_err(|e| Fail(e.to_string()))?;
    say(&text)
}

/// A duration in whole milliseconds, as the JSON output gives durations.
pub fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
