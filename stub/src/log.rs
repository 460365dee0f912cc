//! `-D`: each setup step, one line on stderr.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

static DEBUG: AtomicBool = AtomicBool::new(false);
static START: OnceLock<Instant> = OnceLock::new();

/// `-D` on or off; its lines then say the milliseconds since it was turned on (about
/// the stub's start), so a slow step shows.
pub fn set_debug(on: bool) {
    START.get_or_init(Instant::now);
    DEBUG.store(on, Ordering::Relaxed);
}

/// One `-D` line: the milliseconds since `-D` was turned on, then the step.
#[inline(never)]
pub fn debug_line(step: std::fmt::Arguments) {
    let us = START.get().map_or(0, |start| start.elapsed().as_micros());
    eprintln!("binctr: [debug {:4}.{:03} ms] {step}", us / 1000, us % 1000);
}

pub fn debug_enabled() -> bool {
    DEBUG.load(Ordering::Relaxed)
}

/// Prints a setup step when `-D` is on.
macro_rules! debug {
    ($($arg:tt)*) => {
        if $crate::log::debug_enabled() {
            $crate::log::debug_line(format_args!($($arg)*));
        }
    };
}
pub(crate) use debug;

/// println! that shrugs off a closed stdout (`./img --help | head -1`): a broken pipe is
/// not an error, and must not abort the stub.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}
pub(crate) use say;

pub use binctr_format::printable;
