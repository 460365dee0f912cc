//! Waiting for a child while passing signals on: what PID 1 does for the command and
//! the monitor does for PID 1. Signals arrive through a signalfd (all of them blocked),
//! SIGCHLD reaps, anything else is forwarded.

use crate::error::EXIT_BINCTR;
use crate::sys;
use nix::errno::Errno;
use nix::sys::signal::SigSet;
use nix::sys::signalfd::{siginfo, SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// Signals not to pass on.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    Nothing,
    /// A terminal's Ctrl-C, Ctrl-\ and hangup are sent by the kernel to a whole process
    /// group; when the child is in ours it already got them, and passing them on would
    /// deliver them twice.
    TerminalSignals,
}

/// A signalfd for `set`, whose signals are blocked first (so they queue there).
pub fn signal_fd(set: &SigSet, flags: SfdFlags) -> Option<SignalFd> {
    set.thread_set_mask().ok()?;
    SignalFd::with_flags(set, flags | SfdFlags::SFD_CLOEXEC).ok()
}

/// Blocks `set`, then forwards its signals to `child` (SIGTERM as `stop_signal`) and
/// reaps every child that exits, until `child` does; returns its exit code.
pub fn forward_and_wait(child: Pid, set: &SigSet, stop_signal: libc::c_int, skip: Skip) -> i32 {
    let Some(signals) = signal_fd(set, SfdFlags::empty()) else {
        return wait_plain(child);
    };
    loop {
        match signals.read_signal() {
            Ok(Some(info)) => {
                if let Some(code) = handle(&info, child, stop_signal, skip) {
                    return code;
                }
            }
            Ok(None) | Err(Errno::EINTR) => {}
            Err(_) => return wait_plain(child),
        }
    }
}

/// One received signal: SIGCHLD reaps (and gives `child`'s exit code once it is gone),
/// anything else is forwarded to `child`.
pub fn handle(info: &siginfo, child: Pid, stop_signal: libc::c_int, skip: Skip) -> Option<i32> {
    let signal = info.ssi_signo as libc::c_int;
    if signal == libc::SIGCHLD {
        return reap(child);
    }
    if skip == Skip::TerminalSignals && info.ssi_code == libc::SI_KERNEL {
        return None;
    }
    let signal = if signal == libc::SIGTERM {
        stop_signal
    } else {
        signal
    };
    let _ = sys::send_signal(child.as_raw(), signal);
    None
}

/// Reaps exited children; returns `child`'s exit code (128+N if signal N killed it)
/// once it is among them.
pub fn reap(child: Pid) -> Option<i32> {
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) if pid == child => return Some(code),
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == child => return Some(128 + sig as i32),
            Ok(WaitStatus::StillAlive) => return None,
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(_) => return Some(EXIT_BINCTR),
        }
    }
}

/// Without a signalfd: just wait.
pub fn wait_plain(child: Pid) -> i32 {
    loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => return code,
            Ok(WaitStatus::Signaled(_, sig, _)) => return 128 + sig as i32,
            Err(Errno::EINTR) | Ok(_) => continue,
            Err(_) => return EXIT_BINCTR,
        }
    }
}
