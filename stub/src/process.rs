//! The container's processes: the host-side monitor, the container's PID 1 (a tiny
//! init) and the command itself (RUNTIME-NOTES steps 5-7 and 12-14, D1-D5).
//!
//! ```text
//! stub (monitor, host)           clone(NEWUSER|NEWNS|NEWPID|NEWUTS|NEWIPC[|NEWNET])
//!   id maps, prestart hooks  ->  PID 1: waits for "go", mounts, pivot_root, hostname
//!   "go"                           [pty: opens one, sends the master back]
//!   waits for the exec           fork -> command: stdio, env, cwd, caps, no_new_privs,
//!   poststart hooks, pid file              exec (a failure code goes back on a pipe)
//!   relays signals (and the pty)   forwards signals, reaps, exits with the command's code
//!   poststop hooks, exit code
//! ```

use crate::cache::Rootfs;
use crate::cli::{RunSpec, Stage, Terminal};
use crate::error::{Context, Error, Result, EXIT_BINCTR};
use crate::log::debug;
use crate::state::State;
use crate::{hooks, mounts, sys, tty, userns};
use nix::unistd::Pid;
use std::ffi::{CString, OsString};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
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

/// What the container side inherits from the monitor across the clone.
struct ChildEnds {
    go: File,
    /// Exec status: a failure code is written here; EOF means the exec happened.
    status: OwnedFd,
    /// Pty mode: where PID 1 sends the pty master.
    pty_sock: Option<OwnedFd>,
    /// --console: the host pty slave the command uses.
    console: Option<OwnedFd>,
    /// -d: what the command's stdio becomes (the log or /dev/null).
    detached_stdio: Option<OwnedFd>,
}

/// Starts the container and waits for it; returns the exit code for the stub.
/// `started`, in detached mode, is the pipe to the process the user is waiting on: it
/// gets one byte (0 when the container runs, else the stub's exit code).
pub fn run(
    spec: &RunSpec,
    rootfs: &Rootfs,
    state: &State,
    started: Option<&mut File>,
) -> Result<i32> {
    use nix::fcntl::OFlag;
    let (go_read, go_write) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).context("cannot create a pipe")?;
    let (status_read, status_write) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).context("cannot create a pipe")?;
    let pty_socks = match spec.terminal {
        Terminal::Pty => Some(
            nix::sys::socket::socketpair(
                nix::sys::socket::AddressFamily::Unix,
                nix::sys::socket::SockType::SeqPacket,
                None,
                nix::sys::socket::SockFlag::SOCK_CLOEXEC,
            )
            .context("cannot create a socket pair")?,
        ),
        _ => None,
    };
    let console = match &spec.terminal {
        Terminal::Console(path) => Some(OwnedFd::from(
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_NOCTTY)
                .open(path)
                .with_context(|| format!("cannot open the console {}", path.display()))?,
        )),
        _ => None,
    };
    let detached_stdio = if spec.detach {
        let file = match &spec.log {
            Some(log) => std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .with_context(|| format!("cannot open the log {}", log.display()))?,
            None => File::options()
                .read(true)
                .write(true)
                .open("/dev/null")
                .context("cannot open /dev/null")?,
        };
        Some(OwnedFd::from(file))
    } else {
        None
    };

    // Blocked before the clone, so a signal that arrives while the container starts is
    // kept for the monitor instead of killing the stub.
    let mut watched = FORWARDED.to_vec();
    watched.extend([libc::SIGCHLD, libc::SIGWINCH]);
    let watched = sys::sigset_of(&watched);
    sys::set_signal_mask(&watched).context("cannot block signals")?;

    let mut flags = libc::CLONE_NEWUSER
        | libc::CLONE_NEWNS
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWIPC;
    if spec.net_none {
        flags |= libc::CLONE_NEWNET;
    }
    debug!(
        "namespaces: clone(user, mount, pid, uts, ipc{})",
        if spec.net_none { ", net" } else { "" }
    );
    let pid = sys::clone_into_namespaces(flags).map_err(|e| {
        Error::new(format!(
            "cannot create the container's namespaces: {}{}",
            crate::error::plain(&e),
            userns::blocked_hint()
        ))
    })?;
    let (pty_parent, pty_child) = match pty_socks {
        Some((a, b)) => (Some(a), Some(b)),
        None => (None, None),
    };
    if pid == 0 {
        drop((go_write, status_read, pty_parent));
        let ends = ChildEnds {
            go: File::from(go_read),
            status: status_write,
            pty_sock: pty_child,
            console,
            detached_stdio,
        };
        container_init(ends, spec, rootfs);
    }
    drop((go_read, status_write, pty_child, console, detached_stdio));
    let container = Pid::from_raw(pid);
    let abort = |e: Error| {
        let _ = nix::sys::signal::kill(container, nix::sys::signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(container, None);
        e
    };
    userns::write_maps(pid, &spec.mapping).map_err(abort)?;
    hooks::run(
        &spec.hooks,
        Stage::Prestart,
        &state.oci_json("created", pid),
    )
    .map_err(abort)?;
    // "go": the maps are written and the prestart hooks are done.
    let _ = File::from(go_write).write_all(b"1");
    debug!("process: container pid {pid} on the host");

    let master = pty_parent.and_then(|sock| tty::recv_fd(sock.as_fd()).ok());
    let mut code = [0u8; 1];
    let exec_failed = matches!(File::from(status_read).read(&mut code), Ok(1));
    if !exec_failed {
        let _ = state.record("running", pid);
        if let Some(pid_file) = &spec.pid_file {
            crate::state::write_atomically(pid_file, format!("{pid}\n").as_bytes())
                .map_err(abort)?;
        }
        if let Err(e) = hooks::run(
            &spec.hooks,
            Stage::Poststart,
            &state.oci_json("running", pid),
        ) {
            eprintln!("binctr: warning: {e}");
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
    let raw = match (&master, spec.terminal == Terminal::Pty) {
        (Some(m), true) => {
            tty::copy_winsize(tty::stdin(), m.as_fd());
            tty::RawMode::enter(tty::stdin())
        }
        _ => None,
    };
    // Only when the command shares our terminal did the kernel give it the
    // terminal's signals too; in a pty of its own it depends on us (a hangup).
    let shares_terminal = spec.terminal == Terminal::Inherit;
    let exit = monitor(
        container,
        &watched,
        spec.stop_signal,
        master,
        shares_terminal,
    );
    drop(raw);
    let _ = hooks::run(
        &spec.hooks,
        Stage::Poststop,
        &state.oci_json("stopped", pid),
    )
    .map_err(|e| eprintln!("binctr: warning: {e}"));
    Ok(exit)
}

/// Points the monitor's own stdio at /dev/null (detached: the terminal may go away).
fn detach_own_stdio() -> std::io::Result<()> {
    let null = File::options().read(true).write(true).open("/dev/null")?;
    for fd in 0..=2 {
        sys::dup_onto(null.as_raw_fd(), fd)?;
    }
    Ok(())
}

/// Waits for `child` and returns its exit code (128+N if signal N killed it), while it:
/// forwards the signals of `set` (SIGTERM as `stop_signal`), reaps any other child that
/// exits (PID 1 inherits orphans), and, with a pty `master`, relays the terminal.
///
/// `skip_terminal_signals`: a terminal's Ctrl-C, Ctrl-\ and hangup are sent by the
/// kernel to a whole process group; when `child` is in ours it already got them, and
/// passing them on would deliver them twice.
fn monitor(
    child: Pid,
    set: &libc::sigset_t,
    stop_signal: libc::c_int,
    mut master: Option<OwnedFd>,
    skip_terminal_signals: bool,
) -> i32 {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let Ok(signals) = sys::signal_fd(set) else {
        return wait_plain(child);
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
                    fds.push(PollFd::new(tty::stdin(), PollFlags::POLLIN));
                }
            }
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return wait_plain(child),
            }
            let ready = |i: usize| {
                fds.get(i)
                    .and_then(|f| f.revents())
                    .is_some_and(|r| !r.is_empty())
            };
            (ready(0), ready(1), ready(2))
        };
        if sig_ready {
            while let Some(received) = sys::read_signal(signals.as_fd()) {
                let signal = received.signal;
                match signal {
                    libc::SIGCHLD => {
                        if let Some(code) = reap(child) {
                            if let Some(m) = &master {
                                drain(m.as_fd(), &mut buf, &mut stdout);
                            }
                            return code;
                        }
                    }
                    libc::SIGWINCH => {
                        if let Some(m) = &master {
                            tty::copy_winsize(tty::stdin(), m.as_fd());
                        }
                    }
                    _ if skip_terminal_signals && received.from_terminal => {}
                    _ => {
                        let signal = if signal == libc::SIGTERM {
                            stop_signal
                        } else {
                            signal
                        };
                        // SAFETY: kill(2) with a valid signal number, to our own child.
                        unsafe { libc::kill(child.as_raw(), signal) };
                    }
                }
            }
        }
        if master_ready {
            let m = master.as_ref().map(|m| m.as_raw_fd()).unwrap_or(-1);
            match nix::unistd::read(m, &mut buf) {
                Ok(n) if n > 0 => {
                    let _ = stdout.write_all(&buf[..n]).and_then(|()| stdout.flush());
                }
                Err(nix::errno::Errno::EINTR) | Err(nix::errno::Errno::EAGAIN) => {}
                // EIO: every slave is closed; the command is gone or going.
                _ => master = None,
            }
        }
        if stdin_ready {
            match nix::unistd::read(0, &mut buf) {
                Ok(n) if n > 0 => {
                    if let Some(m) = &master {
                        write_all_fd(m.as_fd(), &buf[..n]);
                    }
                }
                Err(nix::errno::Errno::EINTR) | Err(nix::errno::Errno::EAGAIN) => {}
                _ => stdin_open = false,
            }
        }
    }
}

fn write_all_fd(fd: BorrowedFd<'_>, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        match nix::unistd::write(fd, bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return,
        }
    }
}

/// Reaps exited children; returns `child`'s exit code once it is among them.
fn reap(child: Pid) -> Option<i32> {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) if pid == child => return Some(code),
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == child => return Some(128 + sig as i32),
            Ok(WaitStatus::StillAlive) => return None,
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return Some(EXIT_BINCTR),
        }
    }
}

/// Without a signalfd: just wait.
fn wait_plain(child: Pid) -> i32 {
    use nix::sys::wait::{waitpid, WaitStatus};
    loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => return code,
            Ok(WaitStatus::Signaled(_, sig, _)) => return 128 + sig as i32,
            Err(nix::errno::Errno::EINTR) | Ok(_) => continue,
            Err(_) => return EXIT_BINCTR,
        }
    }
}

/// The pty's last output after the command exited.
fn drain(master: BorrowedFd<'_>, buf: &mut [u8], out: &mut std::io::Stdout) {
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

/// Reports a setup failure on the exec-status pipe and stderr, then exits.
fn fail(ends_status: BorrowedFd<'_>, code: i32, e: &Error, debug: bool) -> ! {
    e.report(debug);
    let _ = nix::unistd::write(ends_status, &[code as u8]);
    sys::exit_now(code);
}

/// PID 1 of the container. Never returns.
fn container_init(ends: ChildEnds, spec: &RunSpec, rootfs: &Rootfs) -> ! {
    let ChildEnds {
        mut go,
        status,
        pty_sock,
        console,
        detached_stdio,
    } = ends;
    // If the stub dies, so does the container (before "go" as after).
    let _ = sys::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
    let mut byte = [0u8; 1];
    if !matches!(go.read(&mut byte), Ok(1)) {
        // The monitor failed before "go" and has said why.
        sys::exit_now(EXIT_BINCTR);
    }
    drop(go);
    let setup = || -> Result<Option<(OwnedFd, std::path::PathBuf)>> {
        mounts::setup(spec, rootfs)?;
        nix::unistd::sethostname(&spec.hostname).context("cannot set the hostname")?;
        if spec.net_none {
            sys::loopback_up().context("cannot bring the loopback interface up")?;
        }
        match &pty_sock {
            Some(_) => Ok(Some(tty::open_pty()?)),
            None => Ok(None),
        }
    };
    let pty = match setup() {
        Ok(pty) => pty,
        Err(e) => fail(status.as_fd(), EXIT_BINCTR, &e, spec.debug),
    };
    if let (Some(sock), Some((master, _))) = (&pty_sock, &pty) {
        tty::copy_winsize(tty::stdin(), master.as_fd());
        if let Err(e) = tty::send_fd(sock.as_fd(), master.as_fd()) {
            fail(status.as_fd(), EXIT_BINCTR, &e, spec.debug);
        }
    }
    let stdio = Stdio {
        pty_slave: pty.as_ref().map(|(_, path)| path.clone()),
        console: console.as_ref().map(|c| c.as_fd()),
        detached: detached_stdio.as_ref().map(|d| d.as_fd()),
    };
    if !spec.init {
        // --no-init: the command itself is PID 1.
        exec_command(spec, &stdio, status.as_fd());
    }
    // SAFETY: the process is single-threaded; the child only execs or exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        let e = Error::new(format!(
            "cannot fork the command: {}",
            std::io::Error::last_os_error()
        ));
        fail(status.as_fd(), EXIT_BINCTR, &e, spec.debug);
    }
    if pid == 0 {
        exec_command(spec, &stdio, status.as_fd());
    }
    // The init keeps nothing of the host: no descriptors beyond stdio (and those on
    // /dev/null when detached), no capabilities, and it is not dumpable, so the
    // container cannot reach the stub file through /proc/1/exe (RUNTIME-NOTES G1).
    if let Some(null) = &detached_stdio {
        for fd in 0..=2 {
            let _ = sys::dup_onto(null.as_raw_fd(), fd);
        }
    }
    drop((pty, pty_sock, console, detached_stdio, status));
    let _ = sys::prctl(libc::PR_SET_DUMPABLE, 0);
    let _ = sys::close_from_3();
    let _ = caps::clear(None, caps::CapSet::Effective);
    let _ = caps::clear(None, caps::CapSet::Permitted);
    let all: Vec<libc::c_int> = (1..libc::SIGRTMAX())
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
    let set = sys::sigset_of(&all);
    let _ = sys::set_signal_mask(&set);
    // The command shares PID 1's process group (and so the terminal's signals) only
    // when it inherits the stub's stdio.
    let shares_group = spec.terminal == Terminal::Inherit;
    sys::exit_now(monitor(
        Pid::from_raw(pid),
        &set,
        libc::SIGTERM,
        None,
        shares_group,
    ));
}

/// Where the command's stdin, stdout and stderr come from.
struct Stdio<'a> {
    pty_slave: Option<std::path::PathBuf>,
    console: Option<BorrowedFd<'a>>,
    detached: Option<BorrowedFd<'a>>,
}

/// The command's process: finish its environment, then exec. Never returns; on
/// failure writes 126 or 127 (cannot run), or 125 (setup) on the status pipe.
fn exec_command(spec: &RunSpec, stdio: &Stdio<'_>, status: BorrowedFd<'_>) -> ! {
    // Errors go to the user's stderr even after stdio moved to a pty or a log.
    let errors = sys::dup_cloexec(2).ok();
    let (code, e) = match prepare_and_exec(spec, stdio) {
        Ok(never) => match never {},
        Err(failure) => failure,
    };
    let line = format!("binctr: {}\n", e.msg);
    match &errors {
        Some(fd) => {
            let _ = nix::unistd::write(fd, line.as_bytes());
        }
        None => e.report(spec.debug),
    }
    let _ = nix::unistd::write(status, &[code as u8]);
    sys::exit_now(code);
}

enum Never {}

fn cstring(s: &std::ffi::OsStr) -> CString {
    CString::new(s.as_bytes()).unwrap_or_default()
}

fn set_stdio(stdio: &Stdio<'_>) -> Result<()> {
    if let Some(path) = &stdio.pty_slave {
        // O_NOCTTY: TIOCSCTTY below makes it ours after setsid.
        let slave = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        tty::become_session_leader_on(slave.as_fd())?;
    } else if let Some(console) = stdio.console {
        tty::become_session_leader_on(console)?;
    } else if let Some(out) = stdio.detached {
        let null = File::open("/dev/null").context("cannot open /dev/null")?;
        sys::dup_onto(null.as_raw_fd(), 0).context("cannot redirect stdin")?;
        for fd in 1..=2 {
            sys::dup_onto(out.as_raw_fd(), fd).context("cannot redirect stdout")?;
        }
    }
    Ok(())
}

fn prepare_and_exec(spec: &RunSpec, stdio: &Stdio<'_>) -> std::result::Result<Never, (i32, Error)> {
    let setup = |e: Error| (EXIT_BINCTR, e);
    sys::reset_signal_dispositions();
    sys::set_signal_mask(&sys::sigset_of(&[]))
        .context("cannot unblock signals")
        .map_err(setup)?;
    set_stdio(stdio).map_err(setup)?;
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    enter_working_dir(&spec.working_dir, spec.read_only).map_err(setup)?;
    drop_privileges(&spec.caps).map_err(setup)?;
    switch_user(spec).map_err(setup)?;
    // Nothing of the stub's reaches the command: only 0, 1, 2 and the descriptors
    // systemd passed for socket activation.
    sys::cloexec_from(3 + spec.preserve_fds)
        .context("cannot close the stub's descriptors")
        .map_err(setup)?;

    let argv: Vec<CString> = spec.argv.iter().map(|a| cstring(a)).collect();
    let mut envp: Vec<CString> = spec.env.iter().map(|e| cstring(e)).collect();
    if spec.preserve_fds > 0 {
        envp.push(cstring(std::ffi::OsStr::new(&format!(
            "LISTEN_PID={}",
            std::process::id()
        ))));
    }
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut envp_ptrs: Vec<*const libc::c_char> = envp.iter().map(|e| e.as_ptr()).collect();
    envp_ptrs.push(std::ptr::null());

    let command = &spec.argv[0];
    let name = command.to_string_lossy();
    debug!("process: exec {:?}", spec.argv);
    // Last, so the filter need not allow anything of the setup above (RUNTIME-NOTES C3).
    if let Some(filter) = crate::seccomp::filter(spec.seccomp, spec.fake_root()) {
        crate::seccomp::install(&filter)
            .context("cannot install the seccomp filter")
            .map_err(setup)?;
    }
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

/// Becomes the container user. With subordinate ids the command starts as root in the
/// namespace and switches (groups first, then gid, then uid); with a single mapping the
/// caller already is that user inside, and setgroups is denied.
fn switch_user(spec: &RunSpec) -> Result<()> {
    if !spec.mapping.is_subid() {
        return Ok(());
    }
    let id = &spec.identity;
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
/// no_new_privs (RUNTIME-NOTES C1, C2).
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
    sys::prctl(libc::PR_SET_NO_NEW_PRIVS, 1).context("cannot set no_new_privs")
}

use std::os::unix::fs::OpenOptionsExt;
