//! The raw system calls nix does not wrap (or wraps in a way we cannot use), each in a
//! small function with its own `// SAFETY:` note. Everything else in the stub is safe Rust.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

fn cvt(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// `fork()` into new namespaces: `clone(flags | SIGCHLD)` with no new stack, so the
/// child continues on a copy of the parent's, as after fork. Returns 0 in the child.
///
/// Only call this while the process is single-threaded (the stub always is).
pub fn clone_into_namespaces(flags: libc::c_int) -> io::Result<libc::pid_t> {
    // SAFETY: with a NULL stack the kernel gives the child a copy-on-write copy of the
    // caller's memory, exactly as fork() does; the stub has a single thread, so no lock
    // held by another thread can be copied in a locked state.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            libc::c_long::from(flags | libc::SIGCHLD),
            0 as libc::c_long,
            0 as libc::c_long,
            0 as libc::c_long,
            0 as libc::c_long,
        )
    };
    cvt(ret).map(|pid| pid as libc::pid_t)
}

/// `struct open_how` of openat2(2).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

pub const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
pub const RESOLVE_NO_SYMLINKS: u64 = 0x04;
pub const RESOLVE_IN_ROOT: u64 = 0x10;

/// openat2(2): open `path` below `dir`, resolving every component as if `dir` were `/`
/// (with `RESOLVE_IN_ROOT`), so neither `..` nor a symlink can lead out of it.
pub fn openat2(
    dir: BorrowedFd<'_>,
    path: &CStr,
    flags: libc::c_int,
    mode: libc::mode_t,
    resolve: u64,
) -> io::Result<OwnedFd> {
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: u64::from(mode),
        resolve,
    };
    // SAFETY: `path` is NUL-terminated, `how` is a properly laid out open_how that lives
    // for the call, and its size is passed alongside.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            path.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    let fd = cvt(ret)? as libc::c_int;
    // SAFETY: the kernel just returned this descriptor to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `struct mount_attr` of mount_setattr(2).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

pub const MOUNT_ATTR_RDONLY: u64 = 0x01;
pub const MOUNT_ATTR_NOSUID: u64 = 0x02;
pub const MOUNT_ATTR_NODEV: u64 = 0x04;
pub const MOUNT_ATTR_NOEXEC: u64 = 0x08;

/// mount_setattr(2) with `AT_RECURSIVE`: set `attrs` on the mount at `path` and on every
/// mount below it (a remount only reaches the top one).
pub fn mount_setattr_recursive(path: &CStr, attrs: u64) -> io::Result<()> {
    let attr = MountAttr {
        attr_set: attrs,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: `path` is NUL-terminated and `attr` is a mount_attr that outlives the call;
    // its size is passed alongside.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::AT_RECURSIVE as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    cvt(ret).map(drop)
}

/// The calling process's signal mask, replaced by `set` (SIG_SETMASK).
pub fn set_signal_mask(set: &libc::sigset_t) -> io::Result<()> {
    // SAFETY: both pointers are valid for the call; the old mask is not asked for.
    let ret = unsafe { libc::sigprocmask(libc::SIG_SETMASK, set, std::ptr::null_mut()) };
    cvt(ret.into()).map(drop)
}

/// A signal set holding `signals`.
pub fn sigset_of(signals: &[libc::c_int]) -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset only write into the set we pass; a zeroed sigset_t
    // is a valid argument for sigemptyset to initialise.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &sig in signals {
            libc::sigaddset(&mut set, sig);
        }
        set
    }
}

/// A signal as a signalfd reports it.
pub struct Received {
    pub signal: libc::c_int,
    /// True when the kernel raised it for a whole process group (the terminal's
    /// Ctrl-C, Ctrl-\, hangup): the container's processes in that group got it too.
    pub from_terminal: bool,
}

/// Resets every signal disposition to its default, as a freshly exec'd program expects
/// (Rust's runtime ignores SIGPIPE, and ignored signals survive execve).
pub fn reset_signal_dispositions() {
    for sig in 1..libc::SIGRTMAX() {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: setting SIG_DFL installs no handler code; invalid numbers just fail.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
        }
    }
}

/// prctl(2) with integer arguments.
pub fn prctl(option: libc::c_int, arg: libc::c_ulong) -> io::Result<()> {
    // SAFETY: the options we use (PDEATHSIG, DUMPABLE, NO_NEW_PRIVS) take integer
    // arguments only; unused trailing arguments must be zero.
    let ret = unsafe { libc::prctl(option, arg, 0 as libc::c_ulong, 0 as libc::c_ulong, 0) };
    cvt(ret.into()).map(drop)
}

/// Marks every descriptor from `first` up close-on-exec (close_range(2)), so nothing of
/// the stub's reaches the container's command.
pub fn cloexec_from(first: libc::c_int) -> io::Result<()> {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: close_range only changes flags of descriptors of this process.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            CLOSE_RANGE_CLOEXEC,
        )
    };
    cvt(ret).map(drop)
}

/// execve(2); returns only on failure.
pub fn execve(
    path: &CStr,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
) -> io::Error {
    debug_assert!(argv.last().is_some_and(|p| p.is_null()));
    debug_assert!(envp.last().is_some_and(|p| p.is_null()));
    // SAFETY: `path` is NUL-terminated; argv and envp are NULL-terminated arrays of
    // pointers to NUL-terminated strings that the caller keeps alive.
    unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    io::Error::last_os_error()
}

/// _exit(2): leaves without running destructors or atexit handlers, as a forked child
/// must (they belong to the parent's copy of the state).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and touches no memory of ours.
    unsafe { libc::_exit(code) }
}

/// Whether this process's group is the foreground group of the terminal `fd`.
pub fn in_foreground(fd: libc::c_int) -> bool {
    // SAFETY: tcgetpgrp and getpgrp only read process attributes.
    unsafe { libc::tcgetpgrp(fd) == libc::getpgrp() }
}

/// Whether `fd` is a terminal.
pub fn is_terminal(fd: libc::c_int) -> bool {
    // SAFETY: isatty only inspects the descriptor number.
    unsafe { libc::isatty(fd) == 1 }
}

/// Closes every descriptor from 3 up (close_range(2)).
pub fn close_from_3() -> io::Result<()> {
    // SAFETY: closing descriptors of this process; none of ours is used afterwards.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            0 as libc::c_uint,
        )
    };
    cvt(ret).map(drop)
}

/// The first signal of `set` that is pending (blocked and waiting), if any.
pub fn pending_signal(set: &libc::sigset_t) -> Option<libc::c_int> {
    // SAFETY: a zeroed sigset_t is a valid buffer for sigpending to fill; sigismember
    // only reads the sets.
    unsafe {
        let mut pending: libc::sigset_t = std::mem::zeroed();
        if libc::sigpending(&mut pending) != 0 {
            return None;
        }
        (1..libc::SIGRTMIN())
            .find(|&s| libc::sigismember(&pending, s) == 1 && libc::sigismember(set, s) == 1)
    }
}

/// dup2(2): makes `target` a copy of `fd` (used for the standard descriptors).
pub fn dup_onto(fd: libc::c_int, target: libc::c_int) -> io::Result<()> {
    // SAFETY: dup2 only changes this process's descriptor table; the caller means to
    // replace `target`.
    cvt(unsafe { libc::dup2(fd, target) }.into()).map(drop)
}

/// A close-on-exec duplicate of `fd`, numbered above the standard descriptors.
pub fn dup_cloexec(fd: libc::c_int) -> io::Result<std::os::fd::OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor that we then own.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    let new = cvt(new.into())? as libc::c_int;
    // SAFETY: the descriptor was just created for us.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(new) })
}

/// Brings the loopback interface up in the current network namespace (a new one starts
/// with `lo` down; the kernel adds 127.0.0.1 and ::1 when it comes up).
pub fn loopback_up() -> io::Result<()> {
    // SAFETY: a plain socket(2) call; the descriptor is owned right below.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    let sock = cvt(sock.into())? as libc::c_int;
    // SAFETY: the descriptor was just created for us.
    let sock = unsafe { std::os::fd::OwnedFd::from_raw_fd(sock) };
    // SAFETY: a zeroed ifreq is valid; we fill in the name and read or write the flags
    // member of the union, as SIOCGIFFLAGS/SIOCSIFFLAGS expect.
    unsafe {
        let mut req: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo".iter().enumerate() {
            req.ifr_name[i] = *b as libc::c_char;
        }
        cvt(libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut req).into())?;
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        cvt(libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS as _, &req).into())?;
    }
    Ok(())
}

/// signalfd(2) for the (blocked) signals of `set`, non-blocking.
pub fn signal_fd(set: &libc::sigset_t) -> io::Result<std::os::fd::OwnedFd> {
    // SAFETY: `set` is valid for the call; -1 asks for a new descriptor.
    let fd = unsafe { libc::signalfd(-1, set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) };
    let fd = cvt(fd.into())? as libc::c_int;
    // SAFETY: the descriptor was just created for us.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// The next signal queued on a signalfd, if any.
pub fn read_signal(fd: std::os::fd::BorrowedFd<'_>) -> Option<Received> {
    // SAFETY: a zeroed signalfd_siginfo is a valid buffer of the size the kernel writes.
    let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::signalfd_siginfo>();
    // SAFETY: `info` is a writable buffer of `size` bytes.
    let n = unsafe {
        libc::read(
            fd.as_raw_fd(),
            &mut info as *mut _ as *mut libc::c_void,
            size,
        )
    };
    (n as usize == size).then_some(Received {
        signal: info.ssi_signo as libc::c_int,
        from_terminal: info.ssi_code == libc::SI_KERNEL,
    })
}

/// flock(2) exclusive on `fd`; `wait` false fails at once when someone else holds it.
/// The lock belongs to the open file, so it lasts until every copy of it is closed
/// (a forked monitor keeps it after its parent exits).
pub fn lock_exclusive(fd: std::os::fd::BorrowedFd<'_>, wait: bool) -> io::Result<()> {
    let op = if wait {
        libc::LOCK_EX
    } else {
        libc::LOCK_EX | libc::LOCK_NB
    };
    loop {
        // SAFETY: flock only takes a lock on an open descriptor.
        let ret = unsafe { libc::flock(fd.as_raw_fd(), op) };
        match cvt(ret.into()) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other.map(drop),
        }
    }
}

/// Installs a seccomp BPF program for the calling thread (prctl PR_SET_SECCOMP).
pub fn seccomp_filter(filters: &[libc::sock_filter]) -> io::Result<()> {
    let prog = libc::sock_fprog {
        len: filters.len() as libc::c_ushort,
        filter: filters.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `prog` points at `filters`, which outlive the call; the kernel copies the
    // program and does not write through the pointer.
    let ret = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER as libc::c_ulong,
            &prog as *const libc::sock_fprog,
        )
    };
    cvt(ret.into()).map(drop)
}

/// fsetxattr(2) on an open file.
pub fn set_xattr_fd(fd: std::os::fd::BorrowedFd<'_>, name: &CStr, value: &[u8]) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated; `value` is valid for its length.
    let ret = unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    cvt(ret.into()).map(drop)
}

/// lsetxattr(2) on the entry `entry` of directory `dir` (a symlink itself, not followed).
pub fn set_xattr_at(
    dir: std::os::fd::BorrowedFd<'_>,
    entry: &CStr,
    name: &CStr,
    value: &[u8],
) -> io::Result<()> {
    let mut path = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    path.extend_from_slice(entry.to_bytes());
    let path =
        std::ffi::CString::new(path).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: both strings are NUL-terminated; `value` is valid for its length.
    let ret = unsafe {
        libc::lsetxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    cvt(ret.into()).map(drop)
}
