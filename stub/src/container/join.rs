//! `--exec ID [CMD...]`: a command in a running container (docker exec). The container
//! is found by its state (`<state root>/<ID>/`: its lock is held while it runs, its
//! state.json names PID 1, exec.json how its command was started). A short-lived child
//! joins PID 1's namespaces (user, ipc, uts, net, pid, mount: the mount namespace last,
//! which moves it to the container's root) and clones the command with CLONE_PARENT, so
//! the command is ours to wait for and its pid belongs to the container's pid namespace;
//! should we die first, the container's init reaps it. The command starts as the
//! container's did (exec.rs): its environment (plus -e), working dir (or -w), user (or
//! -u), capabilities, no_new_privs and seccomp filter; a pty on a terminal.

use super::children::{Skip, Stop, Watch};
use super::exec::{self, Stdio};
use super::process::Process;
use super::state::{open_namespaces, Namespaces};
use super::{monitor, tty, users};
use crate::cli::Flags;
use crate::error::{Context, Error, Result, EXIT_BINCTR};
use crate::log::debug;
use crate::{signals, sys};
use nix::sched::CloneFlags;
use nix::unistd::Pid;
use std::ffi::OsString;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Runs `command` in the running container `id`; returns its exit code.
pub fn exec(flags: &Flags, id: &str, command: Vec<OsString>) -> Result<i32> {
    let root = match &flags.root {
        Some(root) => std::path::PathBuf::from(root),
        None => crate::cli::default_state_root(),
    };
    let running = Running::open(&root.join(id), id)?;
    let process = process_for(flags, running.pid, command, running.saved)?;
    let tty = flags.tty
        || (!flags.detach
            && nix::unistd::isatty(0).unwrap_or(false)
            && nix::unistd::isatty(1).unwrap_or(false));
    debug!(
        "exec: into container {id} (pid {}), {:?}",
        running.pid, process.argv
    );
    run(&running.namespaces, &process, tty)
}

/// A running container, ready to be joined.
pub struct Running {
    /// PID 1 (on the host).
    pub pid: libc::pid_t,
    /// Its namespaces, in the order they are joined.
    pub namespaces: Namespaces,
    /// How its command was started (exec.json).
    pub saved: Process,
    /// Its monitor (on the host), when exec.json names it.
    pub monitor: Option<libc::pid_t>,
}

impl Running {
    /// The container whose state is in `dir`, if it runs.
    pub fn open(dir: &Path, id: &str) -> Result<Running> {
        let not_running = || {
            Error::new(format!(
                "no running container named '{}' (start one with --id or --name, then --exec it)",
                crate::log::printable(id.as_bytes())
            ))
        };
        if !is_running(dir) {
            return Err(not_running());
        }
        let pid = read_pid(dir).ok_or_else(not_running)?;
        let saved = std::fs::read(dir.join("exec.json")).map_err(|_| not_running())?;
        let json: serde_json::Value = serde_json::from_slice(&saved).map_err(|_| not_running())?;
        // The monitor keeps the namespaces open; else (PID 1 is not dumpable, so the
        // container cannot reach the stub file through /proc/1/exe) they are reached
        // through PID 1's first child, the command.
        let namespaces = from_monitor(&json)
            .or_else(|_| open_namespaces(pid, false))
            .or_else(|_| {
                let child =
                    first_child(pid).ok_or(std::io::Error::from_raw_os_error(libc::ESRCH))?;
                open_namespaces(child, false)
            })
            .map_err(|_| not_running())?;
        // They were opened by pid: that pid was still the container's monitor or PID 1.
        let same = std::fs::read(dir.join("exec.json")).is_ok_and(|now| now == saved);
        if !is_running(dir) || read_pid(dir) != Some(pid) || !same {
            return Err(not_running());
        }
        Ok(Running {
            pid,
            namespaces,
            saved: Process::from_json(&saved)?,
            monitor: json["monitor"]
                .as_u64()
                .and_then(|p| libc::pid_t::try_from(p).ok()),
        })
    }
}

/// The namespaces the container's monitor keeps open for us (exec.json names it and
/// the descriptors), opened through /proc/MONITOR/fd.
fn from_monitor(json: &serde_json::Value) -> std::io::Result<Namespaces> {
    let bad = || std::io::Error::from_raw_os_error(libc::ENOENT);
    let monitor = json["monitor"].as_u64().ok_or_else(bad)?;
    let mut out = Vec::new();
    for entry in json["namespaces"].as_array().ok_or_else(bad)? {
        let fd = entry[0].as_u64().ok_or_else(bad)?;
        let kind = entry[1]
            .as_i64()
            .and_then(|k| libc::c_int::try_from(k).ok())
            .and_then(CloneFlags::from_bits)
            .ok_or_else(bad)?;
        // setns with `kind` refuses a descriptor that is not such a namespace.
        out.push((File::open(format!("/proc/{monitor}/fd/{fd}"))?, kind));
    }
    match out.is_empty() {
        true => Err(bad()),
        false => Ok(out),
    }
}

pub fn is_running(dir: &Path) -> bool {
    let Ok(lock) = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(dir.join("lock"))
    else {
        return false;
    };
    // The container holds it; we must not be able to take it.
    sys::lock_exclusive(lock.as_fd(), false).is_err()
}

pub fn read_pid(dir: &Path) -> Option<libc::pid_t> {
    let text = std::fs::read(dir.join("state.json")).ok()?;
    let value: serde_json::Value = serde_json::from_slice(&text).ok()?;
    (value["status"] == "running")
        .then(|| value["pid"].as_i64())
        .flatten()
        .and_then(|p| libc::pid_t::try_from(p).ok())
}

/// The oldest child of `parent` (from /proc/*/stat, which everyone may read).
fn first_child(parent: libc::pid_t) -> Option<libc::pid_t> {
    let mut children: Vec<libc::pid_t> = std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<libc::pid_t>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // pid (comm) state ppid ...: comm may hold spaces and parentheses.
            let after = stat.rsplit_once(") ").map_or("", |(_, rest)| rest);
            after.split(' ').nth(1).and_then(|p| p.parse().ok()) == Some(parent)
        })
        .collect();
    children.sort_unstable();
    children.first().copied()
}

/// The container's saved process with this command and the flags' -e, -w, -u.
fn process_for(
    flags: &Flags,
    pid: libc::pid_t,
    command: Vec<OsString>,
    mut process: Process,
) -> Result<Process> {
    process.argv = if command.is_empty() {
        vec!["/bin/sh".into()]
    } else {
        command
    };
    let mut env = binctr_format::Env::from_entries(
        process
            .env
            .iter()
            .map(|e| std::os::unix::ffi::OsStrExt::as_bytes(e.as_os_str()).to_vec())
            .collect(),
    );
    for entry in &flags.env {
        match entry.split_once('=') {
            Some(("", _)) => {
                return Err(Error::new(format!(
                    "-e '{entry}': the variable has no name"
                )))
            }
            Some(_) => env.push_entry(entry.as_bytes()),
            None => crate::cli::env::pass_from_host(&mut env, entry),
        }
    }
    process.env = crate::cli::env::into_os(env);
    if let Some(dir) = &flags.workdir {
        process.working_dir = dir.clone();
    }
    if let Some(user) = &flags.user {
        let root = Path::new("/proc").join(pid.to_string()).join("root");
        let identity = users::resolve(std::slice::from_ref(&root), None, user, &[])?;
        if !process.subid && identity.uid != process.identity.uid {
            return Err(Error::new(
                "-u: with a single mapping the container has one user; start it with --userns subid to exec as another",
            ));
        }
        process.identity = identity;
    }
    Ok(process)
}

/// Starts the command in the namespaces and watches it to its end.
pub fn run(namespaces: &[(File, CloneFlags)], process: &Process, tty: bool) -> Result<i32> {
    use nix::fcntl::OFlag;
    let (status_read, status_write) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).context("cannot create a pipe")?;
    let socks = match tty {
        true => Some(tty::socket_pair()?),
        false => None,
    };
    let watched = signals::watched_by_monitor();
    watched.thread_set_mask().context("cannot block signals")?;
    let joined: Vec<(&File, CloneFlags)> = namespaces.iter().map(|(f, k)| (f, *k)).collect();
    let pid = super::spawn::clone_joined(&joined, 0).context("cannot join the container")?;
    if pid == 0 {
        drop(status_read);
        command(process, socks.map(|(_, child)| child), status_write);
    }
    drop(status_write);
    let master = socks.and_then(|(parent, _)| tty::recv_fd(parent.as_fd()).ok());
    let mut code = [0u8; 1];
    if matches!(File::from(status_read).read(&mut code), Ok(1)) {
        let _ = nix::sys::wait::waitpid(Pid::from_raw(pid), None);
        return Err(Error::reported(i32::from(code[0])));
    }
    let raw = master.as_ref().and_then(|m| {
        sys::copy_winsize(sys::stdin(), m.as_fd());
        tty::RawMode::enter(sys::stdin())
    });
    let skip = if master.is_some() {
        Skip::Nothing
    } else {
        Skip::TerminalSignals
    };
    let stop = Stop {
        signal: libc::SIGTERM,
        timeout: None,
    };
    let exit = monitor::relay(Watch::new(Pid::from_raw(pid), stop, skip), &watched, master);
    drop(raw);
    Ok(exit)
}

/// The command's process: in pty mode a pty of the container's devpts (the master goes
/// to us), then exec.rs's steps. Never returns.
fn command(process: &Process, sock: Option<OwnedFd>, status: OwnedFd) -> ! {
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
    let pty = match &sock {
        Some(sock) => match tty::open_pty().and_then(|(master, slave)| {
            sys::copy_winsize(sys::stdin(), master.as_fd());
            tty::send_fd(sock.as_fd(), master.as_fd()).map(|()| slave)
        }) {
            Ok(slave) => Some(slave),
            Err(e) => {
                e.report(process.debug);
                let _ = nix::unistd::write(&status, &[EXIT_BINCTR as u8]);
                sys::exit_now(EXIT_BINCTR);
            }
        },
        None => None,
    };
    let stdio = Stdio {
        pty_slave: pty,
        console: None,
        detached: None,
    };
    exec::run_command(process, &stdio, status.as_fd())
}
