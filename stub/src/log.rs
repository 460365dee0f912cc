//! `-D`: each setup step, one line on stderr.

use std::sync::atomic::{AtomicBool, Ordering};

static DEBUG: AtomicBool = AtomicBool::new(false);

pub fn set_debug(on: bool) {
    DEBUG.store(on, Ordering::Relaxed);
}

pub fn debug_enabled() -> bool {
    DEBUG.load(Ordering::Relaxed)
}

/// Prints a setup step when `-D` is on.
macro_rules! debug {
    ($($arg:tt)*) => {
        if $crate::log::debug_enabled() {
            eprintln!("binctr: [debug] {}", format_args!($($arg)*));
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
