//! Progress bars on stderr (indicatif), drawn only when stderr is a terminal and
//! `--quiet` is off, so scripts and pipes see nothing but the output they asked for.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Makes bars, or hidden ones when progress is off.
pub struct Progress {
    on: bool,
}

impl Progress {
    /// Progress on stderr unless `quiet` or stderr is not a terminal.
    pub fn new(quiet: bool) -> Progress {
        Progress {
            on: !quiet && std::io::stderr().is_terminal(),
        }
    }

    fn make(&self, len: Option<u64>, template: &str, msg: String) -> ProgressBar {
        if !self.on {
            return ProgressBar::hidden();
        }
        let style = ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        let bar = ProgressBar::with_draw_target(len, ProgressDrawTarget::stderr())
            .with_style(style)
            .with_message(msg);
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    }

    /// A spinner with the elapsed time, for work with no honest measure of progress.
    pub fn spinner(&self, msg: String) -> ProgressBar {
        self.make(None, "{spinner} {msg} [{elapsed}]", msg)
    }

    /// A bar counting sessions up to `len`.
    pub fn sessions(&self, len: u64, msg: String) -> ProgressBar {
        self.make(
            Some(len),
            "{msg} [{bar:30}] {human_pos}/{human_len} sessions [{elapsed}, ~{eta} left]",
            msg,
        )
    }

    /// A bar counting bytes up to `len`, or a byte counter when the size is unknown.
    pub fn bytes(&self, len: Option<u64>, msg: String) -> ProgressBar {
        match len {
            Some(len) => self.make(
                Some(len),
                "{msg} [{bar:30}] {bytes}/{total_bytes} [{elapsed}, ~{eta} left]",
                msg,
            ),
            None => self.make(None, "{spinner} {msg} {bytes} [{elapsed}]", msg),
        }
    }
}
