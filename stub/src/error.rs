//! The stub's one error type: a message for the user (one line, what failed and what to
//! do) and the chain of causes that `-D` adds.

use std::fmt;

/// Exit code for binctr's own failures (docker's convention).
pub const EXIT_BINCTR: i32 = 125;

#[derive(Debug)]
pub struct Error {
    pub msg: String,
    pub causes: Vec<String>,
    /// The stub's exit code for this error: 125, or 128+N when signal N stopped us.
    pub code: i32,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn new(msg: impl Into<String>) -> Self {
        Error {
            msg: msg.into(),
            causes: Vec::new(),
            code: EXIT_BINCTR,
        }
    }

    /// The user stopped us (Ctrl-C, kill) before the container started.
    pub fn interrupted(signal: libc::c_int, what: &str) -> Self {
        Error {
            code: 128 + signal,
            ..Error::new(format!("interrupted {what}"))
        }
    }

    /// A failure a child process has already reported on stderr: only its code is left.
    pub fn reported(code: i32) -> Self {
        Error {
            code,
            ..Error::new("")
        }
    }

    /// Prints the error as the stub's last word: one line, or the chain with `-D`.
    pub fn report(&self, debug: bool) {
        if self.msg.is_empty() {
            return;
        }
        eprintln!("binctr: {}", self.msg);
        if debug {
            for cause in &self.causes {
                eprintln!("binctr:   caused by: {cause}");
            }
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

/// `.context("what we were doing")` on any result whose error displays: the message
/// becomes "what we were doing: cause".
pub trait Context<T> {
    fn context(self, what: impl fmt::Display) -> Result<T>;
    fn with_context<D: fmt::Display>(self, what: impl FnOnce() -> D) -> Result<T>;
}

impl<T, E: fmt::Display> Context<T> for std::result::Result<T, E> {
    fn context(self, what: impl fmt::Display) -> Result<T> {
        self.map_err(|e| Error::new(format!("{what}: {}", plain(&e))))
    }
    fn with_context<D: fmt::Display>(self, what: impl FnOnce() -> D) -> Result<T> {
        self.map_err(|e| Error::new(format!("{}: {}", what(), plain(&e))))
    }
}

/// An error's text without std's " (os error N)" and nix's "EACCES: " noise.
pub fn plain(e: &dyn fmt::Display) -> String {
    let text = e.to_string();
    let text = match text.find(" (os error ") {
        Some(i) => &text[..i],
        None => &text,
    };
    match text.split_once(": ") {
        Some((errno, rest))
            if errno.starts_with('E')
                && errno
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()) =>
        {
            rest.to_string()
        }
        _ => text.to_string(),
    }
}

impl From<binctr_format::FormatError> for Error {
    fn from(e: binctr_format::FormatError) -> Self {
        Error::new(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn plain_drops_errno_noise() {
        let io = std::io::Error::from_raw_os_error(libc::EACCES);
        assert_eq!(super::plain(&io), "Permission denied");
        assert_eq!(super::plain(&nix::errno::Errno::EINVAL), "Invalid argument");
        assert_eq!(super::plain(&"EOF: x"), "x");
        assert_eq!(super::plain(&"bad: thing"), "bad: thing");
    }
}
