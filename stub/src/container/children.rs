//! Waiting for a child while passing signals on: what PID 1 does for the command and
//! the monitor does for PID 1. Signals arrive through a signalfd (all of them blocked),
//! SIGCHLD reaps, anything else is forwarded.

use crate::error::EXIT_BINCTR;
use crate::sys;
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::SigSet;
use nix::sys::signalfd::{siginfo, SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

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

/// How a child is stopped: SIGTERM becomes `signal` (the image's StopSignal); with a
/// `timeout`, SIGKILL follows if it is still there that long after.
#[derive(Clone, Copy, Debug)]
pub struct Stop {
    pub signal: libc::c_int,
    pub timeout: Option<Duration>,
}

impl Stop {
    /// The plan's: the image's StopSignal, --stop-timeout.
    pub fn of(plan: &crate::cli::RunPlan) -> Stop {
        Stop {
            signal: plan.stop_signal,
            timeout: plan.stop_timeout.map(|s| Duration::from_secs(s.into())),
        }
    }
}

/// One child watched: signals passed on, the stop timeout kept.
pub struct Watch {
    pub child: Pid,
    stop: Stop,
    skip: Skip,
    deadline: Option<Instant>,
}

impl Watch {
    pub fn new(child: Pid, stop: Stop, skip: Skip) -> Watch {
        Watch {
            child,
            stop,
            skip,
            deadline: None,
        }
    }

    /// One received signal: SIGCHLD reaps (and gives the child's exit code once it is
    /// gone), anything else is forwarded to it.
    pub fn handle(&mut self, info: &siginfo) -> Option<i32> {
        let signal = info.ssi_signo as libc::c_int;
        if signal == libc::SIGCHLD {
            return reap(self.child);
        }
        if self.skip == Skip::TerminalSignals && info.ssi_code == libc::SI_KERNEL {
            return None;
        }
        let signal = if signal == libc::SIGTERM {
            if let (Some(timeout), None) = (self.stop.timeout, self.deadline) {
                self.deadline = Some(Instant::now() + timeout);
            }
            self.stop.signal
        } else {
            signal
        };
        let _ = sys::send_signal(self.child.as_raw(), signal);
        None
    }

    /// How long a poll may wait: until the stop timeout, or for ever.
    pub fn poll_timeout(&self) -> PollTimeout {
        match self.deadline {
            None => PollTimeout::NONE,
            Some(deadline) => {
                let ms = deadline
                    .saturating_duration_since(Instant::now())
                    .as_millis();
                PollTimeout::try_from(ms.min(60_000) as i32).unwrap_or(PollTimeout::NONE)
            }
        }
    }

    /// SIGKILL once the stop timeout has passed.
    pub fn check_deadline(&mut self) {
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            self.deadline = None;
            let _ = sys::send_signal(self.child.as_raw(), libc::SIGKILL);
        }
    }
}

/// Blocks `set`, then forwards its signals to `child` and reaps every child that
/// exits, until `child` does; returns its exit code.
pub fn forward_and_wait(child: Pid, set: &SigSet, stop: Stop, skip: Skip) -> i32 {
    let Some(signals) = signal_fd(set, SfdFlags::SFD_NONBLOCK) else {
        return wait_plain(child);
    };
    let mut watch = Watch::new(child, stop, skip);
    loop {
        let mut fds = [PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, watch.poll_timeout()) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => return wait_plain(child),
        }
        watch.check_deadline();
        while let Ok(Some(info)) = signals.read_signal() {
            if let Some(code) = watch.handle(&info) {
                return code;
            }
        }
    }
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
