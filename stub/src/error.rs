//! The stub's one error type: a message for the user (one line, what failed and what to
//! do) and the chain of causes that `-D` adds.
//!
//! Context is added one way: `.context("what we were doing")` (or `with_context`) on a
//! result. The message becomes "what we were doing: cause" in plain words; the causes
//! keep the exact texts (errno names, os error numbers, inner errors) for `-D`.

use std::fmt;

/// Exit code for binctr's own failures (docker's convention).
pub const EXIT_BINCTR: i32 = 125;

#[derive(Debug)]
pub struct Error {
    pub msg: String,
    /// The exact errors behind `msg`, outermost first: printed by `-D` only.
    causes: Vec<String>,
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

    /// This error as the cause of a failure to do `what`.
    pub fn within(mut self, what: impl fmt::Display) -> Self {
        if !self.msg.is_empty() {
            self.msg = format!("{what}: {}", self.msg);
        }
        self
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

/// A foreign error becomes ours: its plain text is the message, its exact text and
/// its sources are the causes.
fn from_std(e: &(dyn std::error::Error + 'static)) -> Error {
    let mut causes = Vec::new();
    let exact = e.to_string();
    let msg = plain(&exact);
    if exact != msg {
        causes.push(exact);
    }
    let mut source = e.source();
    while let Some(inner) = source {
        causes.push(inner.to_string());
        source = inner.source();
    }
    Error {
        msg,
        causes,
        code: EXIT_BINCTR,
    }
}

/// `.context("what we were doing")` on a result: on error the message becomes "what we
/// were doing: cause".
pub trait Context<T> {
    fn context(self, what: impl fmt::Display) -> Result<T>;
    fn with_context<D: fmt::Display>(self, what: impl FnOnce() -> D) -> Result<T>;
}

impl<T, E: std::error::Error + 'static> Context<T> for std::result::Result<T, E> {
    fn context(self, what: impl fmt::Display) -> Result<T> {
        self.map_err(|e| from_std(&e).within(what))
    }
    fn with_context<D: fmt::Display>(self, what: impl FnOnce() -> D) -> Result<T> {
        self.map_err(|e| from_std(&e).within(what()))
    }
}

impl<T> Context<T> for Result<T> {
    fn context(self, what: impl fmt::Display) -> Result<T> {
        self.map_err(|e| e.within(what))
    }
    fn with_context<D: fmt::Display>(self, what: impl FnOnce() -> D) -> Result<T> {
        self.map_err(|e| e.within(what()))
    }
}

/// An error's text without std's " (os error N)" and nix's "EACCES: " noise.
pub fn plain(text: &str) -> String {
    let text = match text.find(" (os error ") {
        Some(i) => &text[..i],
        None => text,
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

impl<E: std::error::Error + 'static> From<E> for Error {
    fn from(e: E) -> Self {
        from_std(&e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_drops_errno_noise() {
        let io = std::io::Error::from_raw_os_error(libc::EACCES);
        assert_eq!(plain(&io.to_string()), "Permission denied");
        assert_eq!(
            plain(&nix::errno::Errno::EINVAL.to_string()),
            "Invalid argument"
        );
        assert_eq!(plain("EOF: x"), "x");
        assert_eq!(plain("bad: thing"), "bad: thing");
    }

    #[test]
    fn context_keeps_the_exact_cause_for_debug() {
        let failed: std::result::Result<(), std::io::Error> =
            Err(std::io::Error::from_raw_os_error(libc::ENOENT));
        let e = failed.context("cannot open /x").unwrap_err();
        assert_eq!(e.msg, "cannot open /x: No such file or directory");
        assert_eq!(e.causes, vec!["No such file or directory (os error 2)"]);
        let outer: Result<()> = Err(e);
        let e = outer.context("cannot start").unwrap_err();
        assert_eq!(
            e.msg,
            "cannot start: cannot open /x: No such file or directory"
        );
        assert_eq!(e.causes.len(), 1);
    }
}
