//! The only place the stub calls the kernel through `libc` directly: what nix does not
//! wrap, or wraps in a way the stub cannot use (said at each function). Every `unsafe`
//! block of the stub is in this file, each with a `// SAFETY:` line; the rest of the
//! stub is safe Rust over nix, std and these functions.

use nix::sys::signal::SigSet;
use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

fn cvt(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Takes ownership of a descriptor that was just created for this process: returned by
/// a nix call as a raw number, received over a socket (SCM_RIGHTS), or given up by a
/// nix type (`PtyMaster::into_raw_fd`).
pub fn take_fd(fd: RawFd) -> OwnedFd {
    // SAFETY: only called on a descriptor that was just created for this process and
    // that nothing else owns or will close.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// `fork()` into new namespaces: `clone(flags | SIGCHLD)` with no new stack, so the
/// child continues on a copy of the parent's, as after fork. Returns 0 in the child.
/// (nix's `clone` insists on a new stack and a callback.)
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

/// fork(2). nix marks it unsafe for the reason below; returns 0 in the child.
pub fn fork() -> io::Result<libc::pid_t> {
    // SAFETY: the stub is single-threaded, so the child's copy of memory holds no lock
    // another thread was holding; the child only execs, exits, or carries on as the
    // parent's sole continuation.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => Ok(0),
        Ok(nix::unistd::ForkResult::Parent { child }) => Ok(child.as_raw()),
        Err(e) => Err(e.into()),
    }
}

pub use nix::fcntl::ResolveFlag;

/// openat2(2) (nix, which returns a raw descriptor): open `path` below `dir`, resolving
/// it as `resolve` says (with `RESOLVE_IN_ROOT`, neither `..` nor a symlink leads out).
pub fn openat2(
    dir: BorrowedFd<'_>,
    path: &CStr,
    flags: libc::c_int,
    resolve: ResolveFlag,
) -> io::Result<OwnedFd> {
    use nix::fcntl::{OFlag, OpenHow};
    let how = OpenHow::new()
        .flags(OFlag::from_bits_retain(flags) | OFlag::O_CLOEXEC)
        .resolve(resolve);
    let fd = nix::fcntl::openat2(dir.as_raw_fd(), path, how)?;
    Ok(take_fd(fd))
}

/// openat(2) (nix, which returns a raw descriptor) of an entry of `dir`, close-on-exec.
pub fn openat(
    dir: BorrowedFd<'_>,
    name: &CStr,
    flags: libc::c_int,
    mode: u32,
) -> io::Result<OwnedFd> {
    use nix::fcntl::OFlag;
    use nix::sys::stat::Mode;
    let fd = nix::fcntl::openat(
        Some(dir.as_raw_fd()),
        name,
        OFlag::from_bits_retain(flags) | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(mode),
    )?;
    Ok(take_fd(fd))
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

/// mount_setattr(2) with `AT_RECURSIVE` (not in nix): set `attrs` on the mount at `path`
/// and on every mount below it (a remount only reaches the top one).
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

/// The first signal of `set` that is pending (blocked and waiting), if any (nix has no
/// sigpending).
pub fn pending_signal(set: &SigSet) -> Option<libc::c_int> {
    // SAFETY: a zeroed sigset_t is a valid buffer for sigpending to fill; sigismember
    // only reads the sets.
    unsafe {
        let mut pending: libc::sigset_t = std::mem::zeroed();
        if libc::sigpending(&mut pending) != 0 {
            return None;
        }
        (1..libc::SIGRTMIN()).find(|&s| {
            libc::sigismember(&pending, s) == 1 && libc::sigismember(set.as_ref(), s) == 1
        })
    }
}

/// Resets every signal disposition to its default, as a freshly exec'd program expects
/// (Rust's runtime ignores SIGPIPE, and ignored signals survive execve). nix's `signal`
/// takes its `Signal` enum, which has no real-time signals.
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

/// Ignores the signals a terminal sends (hangup, Ctrl-C, Ctrl-\\, job control), for a
/// process that must outlive the terminal it was started from.
pub fn ignore_terminal_signals() {
    for sig in [
        libc::SIGHUP,
        libc::SIGINT,
        libc::SIGQUIT,
        libc::SIGTSTP,
        libc::SIGTTIN,
        libc::SIGTTOU,
    ] {
        // SAFETY: SIG_IGN installs no handler code.
        unsafe {
            libc::signal(sig, libc::SIG_IGN);
        }
    }
}

/// The uid that owns a user namespace (ioctl NS_GET_OWNER_UID, not in nix).
pub fn namespace_owner(ns: BorrowedFd<'_>) -> io::Result<u32> {
    let mut uid: libc::uid_t = 0;
    // SAFETY: NS_GET_OWNER_UID writes one uid_t through the pointer, which points at
    // `uid` for the whole call; `ns` is an open namespace descriptor.
    let ret = unsafe { libc::ioctl(ns.as_raw_fd(), libc::NS_GET_OWNER_UID as _, &mut uid) };
    cvt(ret.into()).map(|_| uid)
}

/// kill(2) with any signal number, real-time ones included (nix's `Signal` has none).
pub fn send_signal(pid: libc::pid_t, signal: libc::c_int) -> io::Result<()> {
    // SAFETY: kill(2) takes two integers and touches no memory of ours.
    cvt(unsafe { libc::kill(pid, signal) }.into()).map(drop)
}

/// pidfd_open(2) (Linux 5.3+): a descriptor that names process `pid` for as long as it
/// is open, even once its number is reused.
pub fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes two integers and returns a new descriptor (or -1).
    let fd = cvt(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) })?;
    Ok(take_fd(fd as RawFd))
}

/// pidfd_send_signal(2): `signal` (0: none, a check) to the process of `pidfd`; ESRCH
/// once that process is gone (reaped), whoever has its number since.
pub fn pidfd_send_signal(pidfd: BorrowedFd<'_>, signal: libc::c_int) -> io::Result<()> {
    // SAFETY: the call takes a descriptor, a signal number, a null siginfo (allowed: the
    // kernel fills in a kill()'s) and flags; it touches no memory of ours.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    cvt(ret).map(drop)
}

/// Whether `fd` is an open descriptor of this process (fcntl F_GETFD).
pub fn is_open_fd(fd: libc::c_int) -> bool {
    // SAFETY: F_GETFD only reads the descriptor's flags; an unused number gives EBADF.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
}

/// Clears FD_CLOEXEC on `fd`, so it survives exec.
pub fn keep_on_exec(fd: libc::c_int) -> io::Result<()> {
    // SAFETY: F_SETFD only changes the descriptor's flags.
    cvt(unsafe { libc::fcntl(fd, libc::F_SETFD, 0) }.into()).map(drop)
}

/// close_range(2) (not in nix) from `first` up: close them, or with `cloexec` only mark
/// them close-on-exec, so nothing of the stub's reaches the container's command.
pub fn close_range_from(first: libc::c_int, cloexec: bool) -> io::Result<()> {
    close_range(first as libc::c_uint, libc::c_uint::MAX, cloexec)
}

/// close_range(2) of `first..=last`.
pub fn close_range(first: libc::c_uint, last: libc::c_uint, cloexec: bool) -> io::Result<()> {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    let flags = if cloexec { CLOSE_RANGE_CLOEXEC } else { 0 };
    // SAFETY: close_range only closes or flags descriptors of this process; the callers
    // use none of them afterwards (or only until exec, with `cloexec`).
    let ret = unsafe { libc::syscall(libc::SYS_close_range, first, last, flags) };
    cvt(ret).map(drop)
}

/// A memory file (memfd) named `name` holding `bytes`, close-on-exec, executable (with
/// MFD_EXEC where the kernel knows it: where `vm.memfd_noexec` is 1, memfds are made
/// non-executable unless asked; where it is 2, this fails at exec).
pub fn memfd_with(name: &CStr, bytes: &[u8]) -> io::Result<OwnedFd> {
    const MFD_EXEC: libc::c_uint = 0x10;
    let create = |flags: libc::c_uint| {
        // SAFETY: `name` is NUL-terminated and outlives the call; the descriptor it
        // returns is new and owned by nobody else.
        let fd = unsafe { libc::memfd_create(name.as_ptr(), flags) };
        match fd {
            -1 => Err(io::Error::last_os_error()),
            fd => Ok(take_fd(fd)),
        }
    };
    // Kernels before 6.3 refuse the flag they do not know.
    let fd = create(libc::MFD_CLOEXEC | MFD_EXEC).or_else(|_| create(libc::MFD_CLOEXEC))?;
    let mut file = std::fs::File::from(fd);
    io::Write::write_all(&mut file, bytes)?;
    Ok(file.into())
}

/// Memory shared with the processes forked after it (MAP_SHARED | MAP_ANONYMOUS), cut
/// in `count` slots of `len` bytes: one process fills a slot while another reads a
/// different one, each handed over through a pipe (rootfs/ring.rs says how). Unmapped
/// when dropped, in each process that has it.
pub struct SharedSlots {
    base: std::ptr::NonNull<u8>,
    len: usize,
    count: usize,
}

impl SharedSlots {
    pub fn new(len: usize, count: usize) -> io::Result<SharedSlots> {
        let total = len
            .checked_mul(count)
            .filter(|&total| total > 0)
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: a new anonymous mapping where the kernel chooses: it replaces nothing
        // of ours; its pages read as zeros until written.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                total,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = std::ptr::NonNull::new(base.cast::<u8>())
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidData))?;
        Ok(SharedSlots { base, len, count })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn count(&self) -> usize {
        self.count
    }

    /// Slot `i` (modulo the count).
    fn start(&self, i: usize) -> *mut u8 {
        // SAFETY: (i % count) * len < count * len, the mapping's size (checked at new).
        unsafe { self.base.as_ptr().add((i % self.count) * self.len) }
    }

    /// Slot `i`, to read. The process sharing it writes a slot only while this one has
    /// handed it over (ring.rs), never while this borrow is alive.
    pub fn slot(&self, i: usize) -> &[u8] {
        // SAFETY: `len` initialised bytes of the mapping, which lives as long as `self`;
        // this process writes them only through `slot_mut`, which needs `&mut self`.
        unsafe { std::slice::from_raw_parts(self.start(i), self.len) }
    }

    /// Slot `i`, to fill (the process sharing it reads it only once handed over).
    pub fn slot_mut(&mut self, i: usize) -> &mut [u8] {
        // SAFETY: as in `slot`; `&mut self` makes this the only borrow of the mapping.
        unsafe { std::slice::from_raw_parts_mut(self.start(i), self.len) }
    }
}

impl Drop for SharedSlots {
    fn drop(&mut self) {
        // SAFETY: the mapping made by `new`, of that size; no borrow of it outlives
        // `self`.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len * self.count) };
    }
}

/// _exit(2): leaves without running destructors or atexit handlers, as a forked child
/// must (they belong to the parent's copy of the state). std has no such call.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and touches no memory of ours.
    unsafe { libc::_exit(code) }
}

/// The stub's stdin, borrowed for the whole life of the process.
pub fn stdin() -> BorrowedFd<'static> {
    // SAFETY: descriptor 0 is never closed by the stub (only replaced with dup2, which
    // keeps the number valid).
    unsafe { BorrowedFd::borrow_raw(0) }
}

/// flock(2) exclusive on `fd`; `wait` false fails at once when someone else holds it.
/// The lock belongs to the open file, so it lasts until every copy of it is closed (a
/// forked monitor keeps it after its parent exits). nix's `Flock` unlocks on drop,
/// which would release it for every copy, so it cannot serve here.
pub fn lock_exclusive(fd: BorrowedFd<'_>, wait: bool) -> io::Result<()> {
    flock(fd, libc::LOCK_EX, wait)
}

/// flock(2) with `op` (LOCK_EX, LOCK_SH or LOCK_UN); `wait` false adds LOCK_NB.
pub fn flock(fd: BorrowedFd<'_>, op: libc::c_int, wait: bool) -> io::Result<()> {
    let op = if wait { op } else { op | libc::LOCK_NB };
    loop {
        // SAFETY: flock only takes or drops a lock on an open descriptor.
        let ret = unsafe { libc::flock(fd.as_raw_fd(), op) };
        match cvt(ret.into()) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other.map(drop),
        }
    }
}

/// A POSIX record lock (fcntl F_SETLK[W]) on the whole of `fd`'s file: write-locked,
/// or unlocked with `lock` false. Unlike flock's, it belongs to this process: a child
/// forked while it is held does not hold it too.
pub fn record_lock(fd: BorrowedFd<'_>, lock: bool, wait: bool) -> io::Result<()> {
    let l_type = if lock { libc::F_WRLCK } else { libc::F_UNLCK };
    let request = libc::flock {
        l_type: l_type as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    loop {
        let arg = match wait {
            true => nix::fcntl::FcntlArg::F_SETLKW(&request),
            false => nix::fcntl::FcntlArg::F_SETLK(&request),
        };
        match nix::fcntl::fcntl(fd.as_raw_fd(), arg) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => return other.map(drop).map_err(io::Error::from),
        }
    }
}

/// Installs a seccomp BPF program for the calling thread (prctl PR_SET_SECCOMP, which
/// nix's prctl module does not offer).
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

/// fsetxattr(2) on an open file (nix has no xattr calls).
pub fn set_xattr_fd(fd: BorrowedFd<'_>, name: &CStr, value: &[u8]) -> io::Result<()> {
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
    dir: BorrowedFd<'_>,
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

/// renameat2(2) with RENAME_NOREPLACE: `to` is never replaced (EEXIST). A raw syscall:
/// nix offers it only for glibc.
pub fn rename_noreplace(from: &CStr, to: &CStr) -> io::Result<()> {
    // SAFETY: both paths are NUL-terminated and outlive the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    cvt(ret).map(drop)
}

/// fgetxattr(2) of `name` on the open file `fd`: its value, at most `max` bytes.
pub fn get_xattr_fd(fd: BorrowedFd<'_>, name: &CStr, max: usize) -> io::Result<Vec<u8>> {
    let mut value = vec![0u8; max];
    // SAFETY: `name` is NUL-terminated; `value` is valid for writes of its length.
    let ret = unsafe {
        libc::fgetxattr(
            fd.as_raw_fd(),
            name.as_ptr(),
            value.as_mut_ptr().cast(),
            value.len(),
        )
    };
    let len = cvt(ret as libc::c_long)?;
    value.truncate(len as usize);
    Ok(value)
}

/// The names of the extended attributes of the open file `fd` (flistxattr(2)), each
/// NUL-terminated, as the kernel lists them.
pub fn xattr_names_fd(fd: BorrowedFd<'_>) -> io::Result<Vec<u8>> {
    let mut names = vec![0u8; 256];
    loop {
        // SAFETY: `names` is valid for writes of its length.
        let ret =
            unsafe { libc::flistxattr(fd.as_raw_fd(), names.as_mut_ptr().cast(), names.len()) };
        match cvt(ret as libc::c_long) {
            Ok(n) => {
                names.truncate(n as usize);
                return Ok(names);
            }
            Err(e) if e.raw_os_error() == Some(libc::ERANGE) && names.len() < 65536 => {
                names.resize(names.len() * 4, 0);
            }
            Err(e) => return Err(e),
        }
    }
}

nix::ioctl_read_bad!(ioctl_get_winsize, libc::TIOCGWINSZ, libc::winsize);
nix::ioctl_write_ptr_bad!(ioctl_set_winsize, libc::TIOCSWINSZ, libc::winsize);
nix::ioctl_write_int_bad!(ioctl_set_controlling_tty, libc::TIOCSCTTY);
nix::ioctl_readwrite_bad!(ioctl_get_if_flags, libc::SIOCGIFFLAGS, libc::ifreq);
nix::ioctl_write_ptr_bad!(ioctl_set_if_flags, libc::SIOCSIFFLAGS, libc::ifreq);

/// Copies the window size of the terminal `from` to the pty `to` (TIOCGWINSZ and
/// TIOCSWINSZ: nix generates these ioctls as unsafe functions).
pub fn copy_winsize(from: BorrowedFd<'_>, to: BorrowedFd<'_>) {
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ fills the winsize we pass; TIOCSWINSZ reads it. Both fds are open.
    unsafe {
        if ioctl_get_winsize(from.as_raw_fd(), &mut size).is_ok() {
            let _ = ioctl_set_winsize(to.as_raw_fd(), &size);
        }
    }
}

/// TIOCSCTTY: makes `terminal` the controlling terminal of the calling session leader.
pub fn set_controlling_tty(terminal: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: TIOCSCTTY takes an integer (0: do not steal) and changes only our session.
    unsafe { ioctl_set_controlling_tty(terminal.as_raw_fd(), 0) }
        .map(drop)
        .map_err(io::Error::from)
}

/// Brings the loopback interface up in the current network namespace (a new one starts
/// with `lo` down; the kernel adds 127.0.0.1 and ::1 when it comes up).
pub fn loopback_up() -> io::Result<()> {
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
    let sock = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    // SAFETY: an all-zero ifreq is a valid value (a name of NULs, a zero union).
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (i, b) in b"lo".iter().enumerate() {
        req.ifr_name[i] = *b as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS fills the flags member of the ifreq we own; SIOCSIFFLAGS reads
    // it back; the socket is open for both calls.
    unsafe {
        ioctl_get_if_flags(sock.as_raw_fd(), &mut req)?;
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        ioctl_set_if_flags(sock.as_raw_fd(), &req)?;
    }
    Ok(())
}
