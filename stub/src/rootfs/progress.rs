//! A one-line progress display for the first run's extraction: only on a terminal, and
//! only once the work has taken more than a second. Quiet otherwise.

use std::io::Write;
use std::time::{Duration, Instant};

pub struct Progress {
    label: String,
    total: u64,
    start: Instant,
    last_draw: Option<Instant>,
    enabled: bool,
}

const DELAY: Duration = Duration::from_secs(1);
const EVERY: Duration = Duration::from_millis(100);

impl Progress {
    pub fn new(label: String, total: u64) -> Progress {
        Progress {
            label,
            total,
            start: Instant::now(),
            last_draw: None,
            enabled: nix::unistd::isatty(libc::STDERR_FILENO).unwrap_or(false),
        }
    }

    pub fn update(&mut self, done: u64) {
        if !self.enabled {
            return;
        }
        let now = Instant::now();
        if now.duration_since(self.start) < DELAY
            || self
                .last_draw
                .is_some_and(|t| now.duration_since(t) < EVERY)
        {
            return;
        }
        self.last_draw = Some(now);
        let pct = (done * 100).checked_div(self.total).unwrap_or(100).min(100);
        let bar_len = 30;
        let filled = (pct as usize * bar_len) / 100;
        let mut bar = "#".repeat(filled);
        bar.push_str(&" ".repeat(bar_len - filled));
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        let _ = write!(
            std::io::stderr(),
            "\r{} [{bar}] {pct:3}% {:.1}/{:.1} MiB ",
            self.label,
            mib(done),
            mib(self.total)
        );
    }

    /// Clears the line if anything was drawn.
    pub fn done(&mut self) {
        if self.last_draw.take().is_some() {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
        }
    }
}
