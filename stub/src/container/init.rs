//! PID 1 of the container, as catatonit is: it sets the container up (mounts,
//! pivot_root, hostname, the pty), forks the command, then keeps nothing of the host
//! and only forwards signals, reaps orphans and exits with the command's status.

use super::children::{self, Skip};
use super::exec::{self, Stdio};
use super::launch::Launch;
use super::layer::Upper;
use super::{mounts, tty};
use crate::cli::Terminal;
use crate::error::{Context, Error, Result, EXIT_BINCTR};
use crate::rootfs::Rootfs;
use crate::sys;
use nix::sys::signal::{SigSet, Signal};
use nix::unistd::Pid;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

/// What the container side inherits from the monitor across the clone.
pub struct ChildEnds {
    /// "go": one byte once the maps are written and the prestart hooks ran; EOF means
    /// the monitor failed (and said why).
    pub go: File,
    /// Exec status: a failure code is written here; EOF means the exec happened.
    pub status: OwnedFd,
    /// Pty mode: where PID 1 sends the pty master.
    pub pty_sock: Option<OwnedFd>,
    /// --console: the host pty slave the command uses.
    pub console: Option<OwnedFd>,
    /// -d: what the command's stdio becomes (the log or /dev/null).
    pub detached_stdio: Option<OwnedFd>,
}

/// PID 1 of the container. Never returns.
pub fn container_init(
    ends: ChildEnds,
    launch: &Launch<'_>,
    rootfs: &Rootfs,
    upper: Option<&Upper>,
) -> ! {
    let ChildEnds {
        mut go,
        status,
        pty_sock,
        console,
        detached_stdio,
    } = ends;
    let plan = launch.plan;
    // If the stub dies, so does the container (before "go" as after).
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    if !matches!(go.read(&mut [0u8; 1]), Ok(1)) {
        // The monitor failed before "go" and has said why.
        sys::exit_now(EXIT_BINCTR);
    }
    drop(go);
    let pty = match set_up(launch, rootfs, upper, pty_sock.is_some()) {
        Ok(pty) => pty,
        Err(e) => fail(status.as_fd(), &e, plan.debug),
    };
    if let (Some(sock), Some((master, _))) = (&pty_sock, &pty) {
        sys::copy_winsize(sys::stdin(), master.as_fd());
        if let Err(e) = tty::send_fd(sock.as_fd(), master.as_fd()) {
            fail(status.as_fd(), &e, plan.debug);
        }
    }
    let stdio = Stdio {
        pty_slave: pty.as_ref().map(|(_, path)| path.clone()),
        console: console.as_ref().map(|c| c.as_fd()),
        detached: detached_stdio.as_ref().map(|d| d.as_fd()),
    };
    let process = &launch.process;
    if !plan.init && !plan.pause {
        // --no-init: the command itself is PID 1.
        exec::run_command(process, &stdio, status.as_fd());
    }
    // A shared container runs no command of its own (closing `status` says it started).
    let command = match plan.pause {
        true => None,
        false => match sys::fork() {
            Ok(0) => exec::run_command(process, &stdio, status.as_fd()),
            Ok(pid) => Some(Pid::from_raw(pid)),
            Err(e) => fail(
                status.as_fd(),
                &Error::from(e).within("cannot fork the command"),
                plan.debug,
            ),
        },
    };
    // The init keeps nothing of the host: no descriptors beyond stdio (and those on
    // /dev/null when detached), no capabilities, and it is not dumpable, so the
    // container cannot reach the stub file through /proc/1/exe (docs/STUB.md, departures).
    if let Some(null) = &detached_stdio {
        for fd in 0..=2 {
            let _ = nix::unistd::dup2(null.as_raw_fd(), fd);
        }
    }
    drop((pty, pty_sock, console, detached_stdio, status));
    let _ = nix::sys::prctl::set_dumpable(false);
    let _ = sys::close_range_from(3, false);
    let _ = caps::clear(None, caps::CapSet::Effective);
    let _ = caps::clear(None, caps::CapSet::Permitted);
    // The command shares PID 1's process group (and so the terminal's signals) only
    // when it inherits the stub's stdio.
    let skip = if plan.terminal == Terminal::Inherit {
        Skip::TerminalSignals
    } else {
        Skip::Nothing
    };
    // SIGTERM becomes the image's StopSignal here too: a detached container is
    // stopped by a signal to the pid in its pid file, which is this process.
    let stop = children::Stop::of(plan);
    sys::exit_now(match command {
        Some(command) => {
            let code = children::forward_and_wait(command, &all_but_faults(), stop, skip);
            crate::log::debug!("process: the command ended ({code}); init exits");
            code
        }
        None => children::pause(&all_but_faults()),
    });
}

/// Mounts, pivot_root, hostname, loopback; in pty mode, a pty of the new devpts.
fn set_up(
    launch: &Launch<'_>,
    rootfs: &Rootfs,
    upper: Option<&Upper>,
    want_pty: bool,
) -> Result<Option<(std::os::fd::OwnedFd, std::path::PathBuf)>> {
    mounts::setup(launch, rootfs, upper)?;
    nix::unistd::sethostname(&launch.plan.hostname).context("cannot set the hostname")?;
    if launch.plan.net_none {
        sys::loopback_up().context("cannot bring the loopback interface up")?;
    }
    if want_pty {
        return tty::open_pty().map(Some);
    }
    Ok(None)
}

/// Every signal but those the kernel raises to kill a faulting process (catatonit).
fn all_but_faults() -> SigSet {
    let mut set = SigSet::all();
    for fault in [
        Signal::SIGSEGV,
        Signal::SIGBUS,
        Signal::SIGILL,
        Signal::SIGFPE,
        Signal::SIGTRAP,
        Signal::SIGSYS,
    ] {
        set.remove(fault);
    }
    set
}

/// Reports a setup failure on the exec-status pipe and stderr, then exits 125.
fn fail(status: BorrowedFd<'_>, e: &Error, debug: bool) -> ! {
    e.report(debug);
    let _ = nix::unistd::write(status, &[EXIT_BINCTR as u8]);
    sys::exit_now(EXIT_BINCTR);
}
