//! The container's processes: the host-side monitor, the container's PID 1 (a tiny
//! init) and the command itself (RUNTIME-NOTES steps 5-7 and 12-14, D1, D2).
//!
//! ```text
//! stub (monitor, host)      clone(NEWUSER|NEWNS|NEWPID|NEWUTS|NEWIPC)
//!   writes the id maps  ->  PID 1: waits for "go", mounts, pivot_root, hostname
//!   forwards signals            fork -> command: env, cwd, caps, no_new_privs, exec
//!   exits with the code         forwards signals, reaps, exits with the command's code
//! ```

use crate::cache::Rootfs;
use crate::cli::RunSpec;
use crate::error::{Context, Error, Result, EXIT_BINCTR};
use crate::log::debug;
use crate::{mounts, sys, userns};
use std::ffi::{CString, OsString};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;

/// Signals the monitor passes on to the container (SIGKILL of the monitor reaches it
/// through PR_SET_PDEATHSIG instead).
pub const FORWARDED: [libc::c_int; 6] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// docker's default capability set for a container's root.
const DEFAULT_CAPS: [caps::Capability; 14] = {
    use caps::Capability::*;
    [
        CAP_CHOWN,
        CAP_DAC_OVERRIDE,
        CAP_FSETID,
        CAP_FOWNER,
        CAP_MKNOD,
        CAP_NET_RAW,
        CAP_SETGID,
        CAP_SETUID,
        CAP_SETFCAP,
        CAP_SETPCAP,
        CAP_NET_BIND_SERVICE,
        CAP_SYS_CHROOT,
        CAP_KILL,
        CAP_AUDIT_WRITE,
    ]
};

/// Starts the container and waits for it; returns the exit code for the stub.
pub fn run(spec: &RunSpec, rootfs: &Rootfs) -> Result<i32> {
    let (go_read, go_write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("cannot create a pipe")?;
    // Blocked before the clone, so a signal that arrives while the container starts is
    // kept for the forwarding loop instead of killing the stub.
    let mut watched = FORWARDED.to_vec();
    watched.push(libc::SIGCHLD);
    let watched = sys::sigset_of(&watched);
    sys::set_signal_mask(&watched).context("cannot block signals")?;

    let flags = libc::CLONE_NEWUSER
        | libc::CLONE_NEWNS
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWIPC;
    debug!("namespaces: clone(user, mount, pid, uts, ipc)");
    let pid = sys::clone_into_namespaces(flags).map_err(|e| {
        Error::new(format!(
            "cannot create the container's namespaces: {e}{}",
            userns::blocked_hint()
        ))
    })?;
    if pid == 0 {
        drop(go_write);
        container_init(std::fs::File::from(go_read), spec, rootfs);
    }
    drop(go_read);
    if let Err(e) = userns::write_single_maps(pid) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
        return Err(e);
    }
    // "go": the maps are written.
    let _ = std::fs::File::from(go_write).write_all(b"1");
    debug!("process: container pid {pid} on the host");
    Ok(supervise(pid, &watched, spec.stop_signal))
}

/// Waits for `child`, passing on every signal of `set` but SIGCHLD (SIGTERM as
/// `stop_signal`); reaps any other
/// child that exits meanwhile (PID 1 inherits orphans). Returns `child`'s exit code,
/// 128+N if a signal killed it.
fn supervise(child: libc::pid_t, set: &libc::sigset_t, stop_signal: libc::c_int) -> i32 {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    let child = nix::unistd::Pid::from_raw(child);
    loop {
        let received = sys::wait_signal(set);
        if received.signal != libc::SIGCHLD {
            // A terminal's Ctrl-C reaches the whole foreground process group, the
            // container's processes included: passing it on would deliver it twice.
            if !received.from_terminal {
                let signal = match received.signal {
                    libc::SIGTERM => stop_signal,
                    other => other,
                };
                // SAFETY: kill(2) with a valid signal number; the child is ours.
                unsafe { libc::kill(child.as_raw(), signal) };
            }
            continue;
        }
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid == child => return code,
                Ok(WaitStatus::Signaled(pid, sig, _)) if pid == child => return 128 + sig as i32,
                Ok(WaitStatus::StillAlive) => break,
                Ok(_) => continue,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return EXIT_BINCTR,
            }
        }
    }
}

/// PID 1 of the container. Never returns.
fn container_init(mut go: std::fs::File, spec: &RunSpec, rootfs: &Rootfs) -> ! {
    // If the stub dies, so does the container (before "go" as after).
    let _ = sys::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
    let mut byte = [0u8; 1];
    if !matches!(go.read(&mut byte), Ok(1)) {
        // The monitor failed before "go" and has said why.
        sys::exit_now(EXIT_BINCTR);
    }
    drop(go);
    if let Err(e) = mounts::setup(spec, rootfs) {
        e.report(spec.debug);
        sys::exit_now(EXIT_BINCTR);
    }
    if let Err(e) = nix::unistd::sethostname(&spec.hostname) {
        Error::new(format!("cannot set the hostname: {e}")).report(spec.debug);
        sys::exit_now(EXIT_BINCTR);
    }
    // SAFETY: the process is single-threaded; the child only execs or exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        eprintln!(
            "binctr: cannot fork the command: {}",
            std::io::Error::last_os_error()
        );
        sys::exit_now(EXIT_BINCTR);
    }
    if pid == 0 {
        exec_command(spec);
    }
    // The init keeps nothing of the host: no descriptors beyond stdio, no capabilities,
    // and it is not dumpable, so the container cannot reach the stub file through
    // /proc/1/exe (RUNTIME-NOTES G1).
    let _ = sys::prctl(libc::PR_SET_DUMPABLE, 0);
    let _ = sys::close_from_3();
    let _ = caps::clear(None, caps::CapSet::Effective);
    let _ = caps::clear(None, caps::CapSet::Permitted);
    let mut all: Vec<libc::c_int> = (1..libc::SIGRTMAX())
        .filter(|&s| {
            !matches!(
                s,
                libc::SIGKILL
                    | libc::SIGSTOP
                    | libc::SIGSEGV
                    | libc::SIGBUS
                    | libc::SIGILL
                    | libc::SIGFPE
                    | libc::SIGTRAP
                    | libc::SIGSYS
            ) && !(32..libc::SIGRTMIN()).contains(&s)
        })
        .collect();
    all.push(libc::SIGCHLD);
    let set = sys::sigset_of(&all);
    let _ = sys::set_signal_mask(&set);
    sys::exit_now(supervise(pid, &set, libc::SIGTERM));
}

/// The command's process: finish its environment, then exec. Never returns; exits 126
/// or 127 when the command cannot be run, 125 when setup fails.
fn exec_command(spec: &RunSpec) -> ! {
    let code = match prepare_and_exec(spec) {
        Ok(never) => match never {},
        Err((code, e)) => {
            e.report(spec.debug);
            code
        }
    };
    sys::exit_now(code);
}

enum Never {}

fn cstring(s: &std::ffi::OsStr) -> CString {
    CString::new(s.as_bytes()).unwrap_or_default()
}

fn prepare_and_exec(spec: &RunSpec) -> std::result::Result<Never, (i32, Error)> {
    let setup = |e: Error| (EXIT_BINCTR, e);
    sys::reset_signal_dispositions();
    sys::set_signal_mask(&sys::sigset_of(&[]))
        .context("cannot unblock signals")
        .map_err(setup)?;
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    enter_working_dir(&spec.working_dir, spec.read_only).map_err(setup)?;
    drop_privileges().map_err(setup)?;
    sys::cloexec_from_3()
        .context("cannot close the stub's descriptors")
        .map_err(setup)?;

    let argv: Vec<CString> = spec.argv.iter().map(|a| cstring(a)).collect();
    let envp: Vec<CString> = spec.env.iter().map(|e| cstring(e)).collect();
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut envp_ptrs: Vec<*const libc::c_char> = envp.iter().map(|e| e.as_ptr()).collect();
    envp_ptrs.push(std::ptr::null());

    let command = &spec.argv[0];
    let name = command.to_string_lossy();
    debug!("process: exec {:?}", spec.argv);
    if command.as_bytes().contains(&b'/') {
        let err = sys::execve(&cstring(command), &argv_ptrs, &envp_ptrs);
        return Err(exec_error(&name, err));
    }
    // Look the command up in the container's PATH, as docker does.
    let path = spec
        .env
        .iter()
        .find_map(|e| e.as_bytes().strip_prefix(b"PATH="))
        .unwrap_or(crate::cli::DEFAULT_PATH.as_bytes());
    let mut denied = None;
    for dir in path.split(|&b| b == b':') {
        let dir = if dir.is_empty() { &b"."[..] } else { dir };
        let mut full = OsString::from(std::ffi::OsStr::from_bytes(dir));
        full.push("/");
        full.push(command);
        let err = sys::execve(&cstring(&full), &argv_ptrs, &envp_ptrs);
        match err.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::ENOTDIR) => {}
            _ => {
                denied.get_or_insert(err);
            }
        }
    }
    Err(match denied {
        Some(err) => exec_error(&name, err),
        None => (
            127,
            Error::new(format!(
                "{name}: command not found in the container's PATH ({})",
                String::from_utf8_lossy(path)
            )),
        ),
    })
}

fn exec_error(name: &str, err: std::io::Error) -> (i32, Error) {
    match err.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ENOTDIR) => (
            127,
            Error::new(format!(
                "{name}: no such file in the container (or its interpreter is missing)"
            )),
        ),
        _ => (
            126,
            Error::new(format!(
                "{name}: cannot run it: {}",
                crate::error::plain(&err)
            )),
        ),
    }
}

/// docker creates a missing working directory; so do we when the root is writable.
fn enter_working_dir(dir: &str, read_only: bool) -> Result<()> {
    if nix::unistd::chdir(dir).is_ok() {
        return Ok(());
    }
    if !read_only {
        let _ = std::fs::create_dir_all(dir);
    }
    nix::unistd::chdir(dir).with_context(|| format!("cannot enter the working directory {dir}"))
}

/// docker's default capabilities and no_new_privs (RUNTIME-NOTES C1, C2).
fn drop_privileges() -> Result<()> {
    use caps::CapSet;
    for cap in caps::all() {
        if !DEFAULT_CAPS.contains(&cap) {
            // EINVAL: a capability this kernel does not know; nothing to drop.
            let _ = caps::drop(None, CapSet::Bounding, cap);
        }
    }
    caps::clear(None, CapSet::Inheritable).context("cannot clear inheritable capabilities")?;
    caps::clear(None, CapSet::Ambient).context("cannot clear ambient capabilities")?;
    sys::prctl(libc::PR_SET_NO_NEW_PRIVS, 1).context("cannot set no_new_privs")
}
