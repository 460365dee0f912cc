//! The host side (docs/STUB.md step 13): once the container is spawned, the monitor
//! learns whether the command started, writes the pid file, runs the poststart hooks,
//! tells a waiting `-d` caller, then relays signals and the terminal until PID 1 exits,
//! runs the poststop hooks and returns the exit code.

use super::children::{self, Skip, Watch};
use super::launch::Launch;
use super::spawn::Spawned;
use super::state::State;
use super::{hooks, tty};
use crate::cli::{Stage, Terminal};
use crate::files::write_atomically;
use crate::sys;
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags};
use nix::sys::signal::SigSet;
use nix::sys::signalfd::SfdFlags;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// Watches the spawned container to its end; returns the stub's exit code. `started`,
/// in detached mode, is the pipe to the process the user is waiting on: it gets one
/// byte (0 when the command runs, else the stub's exit code).
pub fn watch(
    launch: &Launch<'_>,
    spawned: Spawned,
    state: &State,
    watched: &SigSet,
    started: Option<&mut File>,
) -> crate::error::Result<i32> {
    let plan = launch.plan;
    let pid = spawned.pid.as_raw();
    let master = spawned
        .pty_sock
        .as_ref()
        .and_then(|sock| tty::recv_fd(sock.as_fd()).ok());
    let mut code = [0u8; 1];
    let exec_failed = matches!((&spawned.status).read(&mut code), Ok(1));
    if !exec_failed {
        let _ = state.record("running", pid, Some((&launch.process, &spawned.namespaces)));
        if let Some(pid_file) = &plan.pid_file {
            write_atomically(pid_file, format!("{pid}\n").as_bytes())
                .map_err(|e| spawned.abort(e))?;
        }
        if let Err(e) = hooks::run(
            &plan.hooks,
            Stage::Poststart,
            &state.oci_json("running", pid),
        ) {
            eprintln!("binctr: warning: {}", e.msg);
        }
    }
    if let Some(started) = started {
        let byte = if exec_failed { code[0] } else { 0 };
        let _ = started.write_all(&[byte]);
        if !exec_failed {
            // The user's terminal is no longer ours to hold.
            let _ = detach_own_stdio();
        }
    }
    let raw = match (&master, plan.terminal == Terminal::Pty) {
        (Some(m), true) => {
            sys::copy_winsize(sys::stdin(), m.as_fd());
            tty::RawMode::enter(sys::stdin())
        }
        _ => None,
    };
    // Only when the command shares our terminal did the kernel give it the terminal's
    // signals too; in a pty of its own it depends on us (a hangup).
    let skip = if plan.terminal == Terminal::Inherit {
        Skip::TerminalSignals
    } else {
        Skip::Nothing
    };
    let stop = children::Stop::of(plan);
    let mut watch = Watch::new(spawned.pid, stop, skip);
    if plan.pause {
        watch = watch.end_when(super::share::group_gone(plan));
    }
    let exit = relay(watch, watched, master);
    drop(raw);
    if let Err(e) = hooks::run(
        &plan.hooks,
        Stage::Poststop,
        &state.oci_json("stopped", pid),
    ) {
        eprintln!("binctr: warning: {}", e.msg);
    }
    Ok(exit)
}

/// Points the monitor's own stdio at /dev/null (detached: the terminal may go away).
fn detach_own_stdio() -> std::io::Result<()> {
    let null = File::options().read(true).write(true).open("/dev/null")?;
    for fd in 0..=2 {
        nix::unistd::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), fd)?;
    }
    Ok(())
}

/// Waits for `child` and returns its exit code, while it forwards the signals of `set`
/// (SIGTERM as `stop_signal`), reaps any other child, and, with a pty `master`, relays
/// the terminal: bytes both ways and window sizes.
pub fn relay(mut watch: Watch, set: &SigSet, mut master: Option<OwnedFd>) -> i32 {
    let child = watch.child;
    let Some(signals) = children::signal_fd(set, SfdFlags::SFD_NONBLOCK) else {
        return children::wait_plain(child);
    };
    let mut stdin_open = master.is_some();
    let mut buf = vec![0u8; 64 * 1024];
    let mut stdout = std::io::stdout();
    loop {
        let (sig_ready, master_ready, stdin_ready) = {
            let mut fds = vec![PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
            if let Some(m) = &master {
                fds.push(PollFd::new(m.as_fd(), PollFlags::POLLIN));
                if stdin_open {
                    fds.push(PollFd::new(sys::stdin(), PollFlags::POLLIN));
                }
            }
            match poll(&mut fds, watch.poll_timeout()) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(_) => return children::wait_plain(child),
            }
            let ready = |i: usize| {
                fds.get(i)
                    .and_then(|f| f.revents())
                    .is_some_and(|r| !r.is_empty())
            };
            (ready(0), ready(1), ready(2))
        };
        watch.check_deadline();
        if sig_ready {
            while let Ok(Some(info)) = signals.read_signal() {
                if info.ssi_signo as libc::c_int == libc::SIGWINCH {
                    if let Some(m) = &master {
                        sys::copy_winsize(sys::stdin(), m.as_fd());
                    }
                } else if let Some(code) = watch.handle(&info) {
                    if let Some(m) = &master {
                        drain(m.as_fd(), &mut buf, &mut stdout);
                    }
                    return code;
                }
            }
        }
        if master_ready && !copy_out(&master, &mut buf, &mut stdout) {
            master = None;
        }
        if stdin_ready && !copy_in(&master, &mut buf) {
            stdin_open = false;
        }
    }
}

/// The pty's output to our stdout; false once every slave is closed (EIO).
fn copy_out(master: &Option<OwnedFd>, buf: &mut [u8], out: &mut std::io::Stdout) -> bool {
    let Some(m) = master else { return false };
    match nix::unistd::read(std::os::fd::AsRawFd::as_raw_fd(m), buf) {
        Ok(n) if n > 0 => {
            let _ = out.write_all(&buf[..n]).and_then(|()| out.flush());
            true
        }
        Err(Errno::EINTR) | Err(Errno::EAGAIN) => true,
        _ => false,
    }
}

/// Our stdin to the pty; false once stdin is at its end.
fn copy_in(master: &Option<OwnedFd>, buf: &mut [u8]) -> bool {
    match nix::unistd::read(0, buf) {
        Ok(n) if n > 0 => {
            if let Some(m) = master {
                write_all_fd(m.as_fd(), &buf[..n]);
            }
            true
        }
        Err(Errno::EINTR) | Err(Errno::EAGAIN) => true,
        _ => false,
    }
}

fn write_all_fd(fd: BorrowedFd<'_>, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        match nix::unistd::write(fd, bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(Errno::EINTR) => {}
            Err(_) => return,
        }
    }
}

/// The pty's last output after the command exited.
fn drain(master: BorrowedFd<'_>, buf: &mut [u8], out: &mut std::io::Stdout) {
    use std::os::fd::AsRawFd;
    let _ = nix::fcntl::fcntl(
        master.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    );
    while let Ok(n) = nix::unistd::read(master.as_raw_fd(), buf) {
        if n == 0 {
            break;
        }
        let _ = out.write_all(&buf[..n]);
    }
    let _ = out.flush();
}
