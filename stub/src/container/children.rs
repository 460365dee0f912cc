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
    /// Asked about once a second: true ends the child (SIGKILL).
    idle: Option<(Box<dyn FnMut() -> bool>, Instant)>,
}

/// How often an idle check runs.
const IDLE_EVERY: Duration = Duration::from_secs(1);

impl Watch {
    pub fn new(child: Pid, stop: Stop, skip: Skip) -> Watch {
        Watch {
            child,
            stop,
            skip,
            deadline: None,
            idle: None,
        }
    }

    /// Ends the child once `check` says it has nothing left to do (a shared container
    /// whose group is gone).
    pub fn end_when(mut self, check: Box<dyn FnMut() -> bool>) -> Watch {
        self.idle = Some((check, Instant::now() + IDLE_EVERY));
        self
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

    /// How long a poll may wait: until the stop timeout or the next idle check, or for
    /// ever.
    pub fn poll_timeout(&self) -> PollTimeout {
        let next = match (self.deadline, &self.idle) {
            (Some(d), Some((_, at))) => Some(d.min(*at)),
            (d, idle) => d.or(idle.as_ref().map(|(_, at)| *at)),
        };
        match next {
            None => PollTimeout::NONE,
            Some(deadline) => {
                let ms = deadline
                    .saturating_duration_since(Instant::now())
                    .as_millis();
                PollTimeout::try_from(ms.min(60_000) as i32).unwrap_or(PollTimeout::NONE)
            }
        }
    }

    /// SIGKILL once the stop timeout has passed, or the idle check says so.
    pub fn check_deadline(&mut self) {
        let now = Instant::now();
        if self.deadline.is_some_and(|d| now >= d) {
            self.deadline = None;
            let _ = sys::send_signal(self.child.as_raw(), libc::SIGKILL);
        }
        if let Some((check, at)) = &mut self.idle {
            if now >= *at {
                *at = now + IDLE_EVERY;
                if check() {
                    self.idle = None;
                    let _ = sys::send_signal(self.child.as_raw(), libc::SIGKILL);
                }
            }
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

/// PID 1 of a container with no command of its own (a shared one): reaps whatever is
/// left to it, and ends (0) on SIGTERM, SIGINT, SIGHUP or SIGQUIT.
pub fn pause(set: &SigSet) -> i32 {
    let Some(signals) = signal_fd(set, SfdFlags::empty()) else {
        return EXIT_BINCTR;
    };
    loop {
        match signals.read_signal() {
            Ok(Some(info)) => match info.ssi_signo as libc::c_int {
                libc::SIGCHLD => {
                    while let Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) =
                        waitpid(None, Some(WaitPidFlag::WNOHANG))
                    {}
                }
                libc::SIGTERM | libc::SIGINT | libc::SIGHUP | libc::SIGQUIT => return 0,
                _ => {}
            },
            Ok(None) | Err(Errno::EINTR) => {}
            Err(_) => return EXIT_BINCTR,
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
