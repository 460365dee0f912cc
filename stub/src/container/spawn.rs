//! Creating the container (docs/STUB.md step 9): the sync channels, one
//! `clone(NEWUSER|NEWNS|NEWPID|NEWUTS|NEWIPC[|NEWNET])`, the id maps written from
//! outside, the prestart hooks, then "go". The child becomes PID 1 (init.rs).

use super::init::{self, ChildEnds};
use super::launch::Launch;
use super::layer::Upper;
use super::state::State;
use super::{hooks, tty};
use crate::cli::{Stage, Terminal};
use crate::error::{Context, Error, Result};
use crate::log::debug;
use crate::rootfs::Rootfs;
use crate::{sys, userns};
use nix::fcntl::OFlag;
use nix::unistd::{pipe2, Pid};
use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;

/// The monitor's side of a started container.
pub struct Spawned {
    pub pid: Pid,
    /// Read end of the exec-status pipe.
    pub status: File,
    /// Pty mode: where the master arrives.
    pub pty_sock: Option<OwnedFd>,
    /// The container's user namespace (/proc/PID/ns/user), kept to remove what the
    /// container wrote with the namespace's ids once it is gone.
    pub userns: Option<File>,
    /// With state on disk: all of the container's namespaces, opened now, while PID 1
    /// may still be looked at (it makes itself undumpable later), and kept for `--exec`
    /// to join through this process for as long as the container runs.
    pub namespaces: super::state::Namespaces,
}

impl Spawned {
    /// Kills the container (before it ran anything of the user's) and passes `e` on.
    pub fn abort(&self, e: Error) -> Error {
        let _ = nix::sys::signal::kill(self.pid, nix::sys::signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(self.pid, None);
        e
    }
}

/// Clones the container and lets it go. The forwarded signals must already be blocked,
/// so one that arrives while the container starts is kept for the monitor.
pub fn spawn(
    launch: &Launch<'_>,
    rootfs: &Rootfs,
    upper: Option<&Upper>,
    state: &State,
) -> Result<Spawned> {
    let plan = launch.plan;
    let (go_read, go_write) = pipe2(OFlag::O_CLOEXEC).context("cannot create a pipe")?;
    let (status_read, status_write) = pipe2(OFlag::O_CLOEXEC).context("cannot create a pipe")?;
    let (pty_parent, pty_child) = match plan.terminal {
        Terminal::Pty => tty::socket_pair().map(|(a, b)| (Some(a), Some(b)))?,
        _ => (None, None),
    };
    let console = match &plan.terminal {
        Terminal::Console(path) => Some(tty::open_console(path)?),
        _ => None,
    };
    let detached_stdio = if plan.detach {
        Some(OwnedFd::from(detached_output(plan.log.as_deref())?))
    } else {
        None
    };

    let mut flags =
        libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC;
    if plan.net_none {
        flags |= libc::CLONE_NEWNET;
    }
    debug!(
        "namespaces: clone({}mount, pid, uts, ipc{})",
        if launch.userns.is_some() {
            "in the held user namespace: "
        } else {
            "user, "
        },
        if plan.net_none { ", net" } else { "" }
    );
    // Hooks run from the host's namespaces, so then a middle process joins instead.
    let joined_here = launch.userns.is_some() && plan.hooks.is_empty();
    let pid = match launch.userns {
        // No hook: we join the held user namespace ourselves (docs/STUB.md step 9 says
        // why that is safe), one process fewer (0.2 ms of a warm start).
        Some(ns) if joined_here => {
            // Gaining the namespace's capabilities made us non-dumpable: `--exec` (the
            // user's own process, outside) takes the container's namespaces from us, as
            // it did before. The container cannot name us (own pid namespace).
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWUSER)
                .and_then(|()| nix::sys::prctl::set_dumpable(true))
                .map_err(std::io::Error::from)
                .and_then(|()| sys::clone_into_namespaces(flags))
        }
        Some(ns) => clone_joined(&[(ns, nix::sched::CloneFlags::CLONE_NEWUSER)], flags),
        None => sys::clone_into_namespaces(flags | libc::CLONE_NEWUSER),
    }
    .context("cannot create the container's namespaces")
    .map_err(userns::with_blocked_hint)?;
    if pid == 0 {
        drop((go_write, status_read, pty_parent));
        let ends = ChildEnds {
            go: File::from(go_read),
            status: status_write,
            pty_sock: pty_child,
            console,
            detached_stdio,
        };
        init::container_init(ends, launch, rootfs, upper);
    }
    drop((go_read, status_write, pty_child, console, detached_stdio));
    let spawned = Spawned {
        pid: Pid::from_raw(pid),
        status: File::from(status_read),
        pty_sock: pty_parent,
        userns: File::open(format!("/proc/{pid}/ns/user")).ok(),
        namespaces: match state.dir {
            Some(_) => super::state::open_namespaces(pid, joined_here).unwrap_or_default(),
            None => Vec::new(),
        },
    };
    if launch.userns.is_none() {
        userns::write_maps(pid, &launch.mapping).map_err(|e| spawned.abort(e))?;
    }
    hooks::run(
        &plan.hooks,
        Stage::Prestart,
        &state.oci_json("created", pid),
    )
    .map_err(|e| spawned.abort(e))?;
    // "go": the maps are written and the prestart hooks are done.
    let _ = File::from(go_write).write_all(b"1");
    debug!("process: container pid {pid} on the host");
    Ok(spawned)
}

/// Like clone_into_namespaces, from inside `namespaces` (joined in order: a user
/// namespace first, a mount namespace last): a short-lived child joins them and clones
/// with CLONE_PARENT, so the new process is our child (we wait for it, its
/// PR_SET_PDEATHSIG follows us) and belongs to what was joined. Returns its pid here,
/// 0 in the new process. spawn (a held user namespace) and --exec (a running
/// container's namespaces) start processes this way.
pub fn clone_joined(
    namespaces: &[(&File, nix::sched::CloneFlags)],
    flags: libc::c_int,
) -> std::io::Result<libc::pid_t> {
    use std::io::Read;
    let (pid_read, pid_write) = pipe2(OFlag::O_CLOEXEC)?;
    let middle = sys::fork()?;
    if middle == 0 {
        drop(pid_read);
        let cloned = namespaces
            .iter()
            .try_for_each(|(ns, kind)| nix::sched::setns(ns, *kind))
            .map_err(std::io::Error::from)
            .and_then(|()| sys::clone_into_namespaces(flags | libc::CLONE_PARENT));
        let reply: i32 = match cloned {
            Ok(0) => return Ok(0),
            Ok(pid) => pid,
            Err(e) => -e.raw_os_error().unwrap_or(libc::EINVAL),
        };
        let _ = File::from(pid_write).write_all(&reply.to_ne_bytes());
        sys::exit_now(0);
    }
    drop(pid_write);
    let mut bytes = [0u8; 4];
    let got = File::from(pid_read).read_exact(&mut bytes);
    let _ = nix::sys::wait::waitpid(Pid::from_raw(middle), None);
    got?;
    match i32::from_ne_bytes(bytes) {
        pid if pid > 0 => Ok(pid),
        errno => Err(std::io::Error::from_raw_os_error(-errno)),
    }
}

/// -d: the command's stdout and stderr go to the log (appended) or /dev/null.
fn detached_output(log: Option<&std::path::Path>) -> Result<File> {
    match log {
        Some(log) => File::options()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("cannot open the log {}", log.display())),
        None => File::options()
            .read(true)
            .write(true)
            .open("/dev/null")
            .context("cannot open /dev/null"),
    }
}
