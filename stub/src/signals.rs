//! Signals by name, and the set the stub passes on to the container.

use nix::sys::signal::{SigSet, Signal};

/// Signals the monitor passes on to the container (SIGKILL of the monitor reaches it
/// through PR_SET_PDEATHSIG instead). They are also the ones that stop a first-run
/// extraction cleanly.
pub const FORWARDED: [libc::c_int; 6] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// What a monitor (of the container, or of an `--exec`'d command) watches: the
/// [`FORWARDED`] signals and SIGCONT (Slurm sends it before SIGTERM, so a stopped job
/// can act on the SIGTERM) are passed on; SIGCHLD and SIGWINCH are its own.
pub fn watched_by_monitor() -> SigSet {
    let mut all = FORWARDED.to_vec();
    all.extend([libc::SIGCONT, libc::SIGCHLD, libc::SIGWINCH]);
    set_of(&all)
}

/// [`FORWARDED`] as a signal set.
pub fn forwarded() -> SigSet {
    set_of(&FORWARDED)
}

/// A signal set holding `signals` (numbers nix does not know are left out).
pub fn set_of(signals: &[libc::c_int]) -> SigSet {
    let mut set = SigSet::empty();
    for &s in signals {
        if let Ok(signal) = Signal::try_from(s) {
            set.add(signal);
        }
    }
    set
}

/// Takes a signal of `set` that is pending (blocked and waiting), if there is one, so
/// that unblocking `set` afterwards does not act on it.
pub fn take_pending(set: &SigSet) -> Option<libc::c_int> {
    crate::sys::pending_signal(set)?;
    set.wait().ok().map(|s| s as libc::c_int)
}

/// "SIGQUIT", "QUIT", "3" -> 3.
pub fn parse_signal(name: &str) -> Option<libc::c_int> {
    if let Ok(n) = name.parse::<libc::c_int>() {
        return (1..libc::SIGRTMAX()).contains(&n).then_some(n);
    }
    let name = name.to_ascii_uppercase();
    let name = name.strip_prefix("SIG").unwrap_or(&name);
    let signals = [
        ("HUP", libc::SIGHUP),
        ("INT", libc::SIGINT),
        ("QUIT", libc::SIGQUIT),
        ("ILL", libc::SIGILL),
        ("TRAP", libc::SIGTRAP),
        ("ABRT", libc::SIGABRT),
        ("BUS", libc::SIGBUS),
        ("FPE", libc::SIGFPE),
        ("KILL", libc::SIGKILL),
        ("USR1", libc::SIGUSR1),
        ("SEGV", libc::SIGSEGV),
        ("USR2", libc::SIGUSR2),
        ("PIPE", libc::SIGPIPE),
        ("ALRM", libc::SIGALRM),
        ("TERM", libc::SIGTERM),
        ("CHLD", libc::SIGCHLD),
        ("CONT", libc::SIGCONT),
        ("STOP", libc::SIGSTOP),
        ("TSTP", libc::SIGTSTP),
        ("TTIN", libc::SIGTTIN),
        ("TTOU", libc::SIGTTOU),
        ("URG", libc::SIGURG),
        ("XCPU", libc::SIGXCPU),
        ("XFSZ", libc::SIGXFSZ),
        ("VTALRM", libc::SIGVTALRM),
        ("PROF", libc::SIGPROF),
        ("WINCH", libc::SIGWINCH),
        ("IO", libc::SIGIO),
        ("PWR", libc::SIGPWR),
        ("SYS", libc::SIGSYS),
    ];
    signals.iter().find(|(n, _)| *n == name).map(|&(_, s)| s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_by_name_and_number() {
        assert_eq!(parse_signal("SIGQUIT"), Some(libc::SIGQUIT));
        assert_eq!(parse_signal("term"), Some(libc::SIGTERM));
        assert_eq!(parse_signal("9"), Some(9));
        assert_eq!(parse_signal("SIGNOPE"), None);
        assert_eq!(parse_signal("0"), None);
    }
}
