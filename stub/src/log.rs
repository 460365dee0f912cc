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

/// How much of a name from an image an error line or a listing shows.
const SHOWN_BYTES: usize = 200;

/// A name or text that came from an image (or the user) as one short line of plain
/// text: control characters (a newline, a terminal escape) are escaped, so it cannot
/// forge lines, colours or titles, and a long one is cut, so a 2 GiB name is not a
/// 2 GiB "line".
pub fn printable(bytes: &[u8]) -> String {
    if bytes.len() <= SHOWN_BYTES {
        return String::from_utf8_lossy(bytes).escape_debug().to_string();
    }
    format!(
        "{}... ({} bytes)",
        String::from_utf8_lossy(&bytes[..SHOWN_BYTES]).escape_debug(),
        bytes.len()
    )
}
