//! The command's process, from the fork to execve (docs/STUB.md step 12): default
//! signal dispositions, its stdio, umask, working dir, capabilities, user, no fd of the
//! stub's, seccomp last, then exec with a PATH lookup. A failure is reported on stderr
//! and as a code on the exec-status pipe: 127 not found, 126 cannot run, 125 setup.

use super::process::Process;
use super::{seccomp, tty};
use crate::cli::env::{lookup, DEFAULT_PATH};
use crate::error::{Context, Error, Result, EXIT_BINCTR};
use crate::log::debug;
use crate::sys;
use nix::errno::Errno;
use std::convert::Infallible;
use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;

/// Where the command's stdin, stdout and stderr come from.
pub struct Stdio<'a> {
    pub pty_slave: Option<std::path::PathBuf>,
    pub console: Option<BorrowedFd<'a>>,
    pub detached: Option<BorrowedFd<'a>>,
}

/// Finishes the command's environment, then execs. Never returns; on failure writes
/// 126 or 127 (cannot run), or 125 (setup) on the status pipe.
pub fn run_command(process: &Process, stdio: &Stdio<'_>, status: BorrowedFd<'_>) -> ! {
    // Errors go to the user's stderr even after stdio moved to a pty or a log.
    let errors = nix::fcntl::fcntl(2, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(3)).ok();
    let (code, e) = match prepare_and_exec(process, stdio) {
        Ok(never) => match never {},
        Err(failure) => failure,
    };
    match errors {
        Some(fd) => {
            let fd = sys::take_fd(fd);
            let _ = nix::unistd::write(&fd, format!("binctr: {}\n", e.msg).as_bytes());
        }
        None => e.report(process.debug),
    }
    let _ = nix::unistd::write(status, &[code as u8]);
    sys::exit_now(code);
}

fn prepare_and_exec(
    process: &Process,
    stdio: &Stdio<'_>,
) -> std::result::Result<Infallible, (i32, Error)> {
    let plan = process;
    let setup = |e: Error| (EXIT_BINCTR, e);
    sys::reset_signal_dispositions();
    nix::sys::signal::SigSet::empty()
        .thread_set_mask()
        .context("cannot unblock signals")
        .map_err(setup)?;
    set_stdio(stdio).map_err(setup)?;
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    enter_working_dir(&plan.working_dir, plan.read_only).map_err(setup)?;
    set_limits(&plan.ulimits).map_err(setup)?;
    drop_privileges(&plan.caps).map_err(setup)?;
    switch_user(process).map_err(setup)?;
    // Nothing of the stub's reaches the command: only 0, 1, 2, the descriptors
    // systemd passed for socket activation and PMI's socket.
    close_all_but(3 + plan.preserve_fds, &plan.keep_fds)
        .context("cannot close the stub's descriptors")
        .map_err(setup)?;

    let argv: Vec<CString> = plan.argv.iter().map(|a| cstring(a)).collect();
    let mut envp: Vec<CString> = process.env.iter().map(|e| cstring(e)).collect();
    if plan.preserve_fds > 0 {
        envp.push(cstring(OsStr::new(&format!(
            "LISTEN_PID={}",
            std::process::id()
        ))));
    }
    debug!("process: exec {:?}", plan.argv);
    // Last, so the filter need not allow anything of the setup above.
    let want = seccomp::Want {
        default: plan.seccomp,
        sys_admin: plan.caps.contains(&caps::Capability::CAP_SYS_ADMIN),
        fake_root: process.fake_root,
    };
    if let Some(filter) = seccomp::filter(want) {
        seccomp::install(&filter)
            .context("cannot install the seccomp filter")
            .map_err(setup)?;
    }
    Err(exec_in_path(&plan.argv[0], &process.env, &argv, &envp))
}

/// Marks every descriptor from `first` on close-on-exec, except those in `keep`.
fn close_all_but(first: i32, keep: &[i32]) -> std::io::Result<()> {
    let mut keep: Vec<i32> = keep.iter().copied().filter(|&fd| fd >= first).collect();
    keep.sort_unstable();
    keep.dedup();
    let mut from = first as u32;
    for fd in keep {
        if fd as u32 > from {
            sys::close_range(from, fd as u32 - 1, true)?;
        }
        sys::keep_on_exec(fd)?;
        from = fd as u32 + 1;
    }
    sys::close_range(from, u32::MAX, true)
}

/// execve of `command`, looked up in the container's PATH (as docker does) unless it
/// holds a '/'. Returns only on failure, with its exit code.
fn exec_in_path(
    command: &OsStr,
    env: &[OsString],
    argv: &[CString],
    envp: &[CString],
) -> (i32, Error) {
    let name = command.to_string_lossy();
    if command.as_bytes().contains(&b'/') {
        let Err(err) = nix::unistd::execve(&cstring(command), argv, envp);
        return exec_error(&name, err);
    }
    let path = lookup(env, "PATH").map_or(DEFAULT_PATH.as_bytes(), |p| p.as_bytes());
    let mut denied = None;
    for dir in path.split(|&b| b == b':') {
        let dir = if dir.is_empty() { &b"."[..] } else { dir };
        let mut full = OsString::from(OsStr::from_bytes(dir));
        full.push("/");
        full.push(command);
        let full = cstring(&full);
        // Only where it exists: a failed execve still copies the whole environment
        // into the kernel first (tens of thousands of variables cost a millisecond).
        if let Err(Errno::ENOENT | Errno::ENOTDIR) =
            nix::unistd::access(full.as_c_str(), nix::unistd::AccessFlags::F_OK)
        {
            continue;
        }
        let Err(err) = nix::unistd::execve(&full, argv, envp);
        if !matches!(err, Errno::ENOENT | Errno::ENOTDIR) {
            denied.get_or_insert(err);
        }
    }
    match denied {
        Some(err) => exec_error(&name, err),
        None => (
            127,
            Error::new(format!(
                "{name}: command not found in the container's PATH ({})",
                String::from_utf8_lossy(path)
            )),
        ),
    }
}

fn exec_error(name: &str, err: Errno) -> (i32, Error) {
    match err {
        Errno::ENOENT | Errno::ENOTDIR => (
            127,
            Error::new(format!(
                "{name}: no such file in the container (or its interpreter is missing)"
            )),
        ),
        _ => (
            126,
            Err::<(), _>(err)
                .with_context(|| format!("{name}: cannot run it"))
                .unwrap_err(),
        ),
    }
}

fn cstring(s: &OsStr) -> CString {
    CString::new(s.as_bytes()).unwrap_or_default()
}

fn set_stdio(stdio: &Stdio<'_>) -> Result<()> {
    if let Some(path) = &stdio.pty_slave {
        // O_NOCTTY: TIOCSCTTY makes it ours after setsid.
        let slave = File::options()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        tty::become_session_leader_on(std::os::fd::AsFd::as_fd(&slave))?;
    } else if let Some(console) = stdio.console {
        tty::become_session_leader_on(console)?;
    } else if let Some(out) = stdio.detached {
        let null = File::open("/dev/null").context("cannot open /dev/null")?;
        nix::unistd::dup2(null.as_raw_fd(), 0).context("cannot redirect stdin")?;
        for fd in 1..=2 {
            nix::unistd::dup2(out.as_raw_fd(), fd).context("cannot redirect stdout")?;
        }
    }
    Ok(())
}

/// --ulimit: lowered, or raised up to the hard limit the user already has.
fn set_limits(limits: &[crate::cli::Ulimit]) -> Result<()> {
    use nix::sys::resource::{getrlimit, setrlimit};
    for limit in limits {
        let (_, hard) = getrlimit(limit.resource).context("getrlimit")?;
        let show = |n: u64| match n {
            libc::RLIM_INFINITY => "unlimited".to_string(),
            n => n.to_string(),
        };
        setrlimit(limit.resource, limit.soft, limit.hard).map_err(|e| {
            Error::new(format!(
                "--ulimit {}={}:{}: {} (your hard limit is {}; only root outside can raise it)",
                limit.name,
                show(limit.soft),
                show(limit.hard),
                e.desc(),
                show(hard)
            ))
        })?;
    }
    Ok(())
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

/// Becomes the container user. With subordinate ids the command starts as root in the
/// namespace and switches (groups first, then gid, then uid); with a single mapping the
/// caller already is that user inside, and setgroups is denied.
fn switch_user(process: &Process) -> Result<()> {
    if !process.subid {
        return Ok(());
    }
    let id = &process.identity;
    let groups: Vec<nix::unistd::Gid> = id.groups.iter().map(|&g| g.into()).collect();
    nix::unistd::setgroups(&groups).context("setgroups failed")?;
    nix::unistd::setgid(id.gid.into()).with_context(|| {
        format!(
            "cannot switch to gid {} (outside the subordinate range?)",
            id.gid
        )
    })?;
    nix::unistd::setuid(id.uid.into()).with_context(|| {
        format!(
            "cannot switch to uid {} (outside the subordinate range?)",
            id.uid
        )
    })?;
    Ok(())
}

/// The bounding set cut to `keep` (docker's default unless --cap-add/--cap-drop), and
/// no_new_privs.
fn drop_privileges(keep: &[caps::Capability]) -> Result<()> {
    use caps::CapSet;
    for cap in caps::all() {
        if !keep.contains(&cap) {
            // EINVAL: a capability this kernel does not know; nothing to drop.
            let _ = caps::drop(None, CapSet::Bounding, cap);
        }
    }
    caps::clear(None, CapSet::Inheritable).context("cannot clear inheritable capabilities")?;
    caps::clear(None, CapSet::Ambient).context("cannot clear ambient capabilities")?;
    nix::sys::prctl::set_no_new_privs().context("cannot set no_new_privs")
}
