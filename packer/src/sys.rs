//! The few raw system calls the packer needs, each behind a small safe function.
//! Everything else uses `std` or nix's safe wrappers.
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::stat::Mode;
use std::ffi::{CString, OsStr};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::Once;

/// Gives the anonymous file `file` (opened with `O_TMPFILE`) the name `dest`, which must
/// be on the same filesystem and must not exist yet.
///
/// `linkat` of `/proc/self/fd/N` with `AT_SYMLINK_FOLLOW` is the unprivileged form;
/// `AT_EMPTY_PATH` would need `CAP_DAC_READ_SEARCH`.
pub fn link_anonymous(file: &File, dest: &Path) -> io::Result<()> {
    let src = CString::new(format!("/proc/self/fd/{}", file.as_raw_fd()))?;
    let dest = path_cstring(dest)?;
    // SAFETY: both pointers come from live `CString`s, which are NUL-terminated and
    // outlive the call; linkat does not keep them.
    let rc = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            src.as_ptr(),
            libc::AT_FDCWD,
            dest.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Opens `name` inside the directory `dir` (never a path: one name, resolved from the
/// descriptor), with `flags` and `O_CLOEXEC`.
pub fn open_at(dir: BorrowedFd<'_>, name: &OsStr, flags: OFlag) -> io::Result<OwnedFd> {
    let raw = nix::fcntl::openat(
        Some(dir.as_raw_fd()),
        name,
        flags | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    // SAFETY: openat just returned this descriptor; nothing else owns or closes it.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Opens `path` for reading without ever blocking in open(2): a FIFO with no writer
/// opens at once instead of waiting. The caller fstat()s the result and decides.
pub fn open_nonblocking(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
}

/// Makes reads of `file` block again (a pipe the user named as IMAGE).
pub fn set_blocking(file: &impl AsFd) -> io::Result<()> {
    let fd = file.as_fd().as_raw_fd();
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags - OFlag::O_NONBLOCK))?;
    Ok(())
}

pub fn path_cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(io::Error::from)
}

/// The named temporary file to remove if SIGINT, SIGTERM or SIGHUP ends the process:
/// null when there is none. The strings are leaked on purpose, so that a handler that is
/// running while another thread replaces the pointer never reads freed memory.
static CLEANUP_PATH: AtomicPtr<libc::c_char> = AtomicPtr::new(ptr::null_mut());
static INSTALL_HANDLERS: Once = Once::new();

/// Removes `path` if the process is interrupted before [`forget_on_signal`] is called.
/// Only named temporary files need this: an `O_TMPFILE` file vanishes by itself.
pub fn remove_on_signal(path: &Path) {
    let Ok(path) = path_cstring(path) else {
        return;
    };
    CLEANUP_PATH.store(path.into_raw(), Ordering::SeqCst);
    INSTALL_HANDLERS.call_once(|| {
        for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            // SAFETY: `on_signal` only calls async-signal-safe functions (unlink, signal,
            // raise) and reads an atomic; replacing the default disposition of these
            // signals does not break any invariant of the Rust runtime.
            unsafe {
                libc::signal(
                    signal,
                    on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
                );
            }
        }
    });
}

/// The temporary file has been renamed or removed: a signal now only ends the process.
pub fn forget_on_signal() {
    CLEANUP_PATH.store(ptr::null_mut(), Ordering::SeqCst);
}

extern "C" fn on_signal(signal: libc::c_int) {
    let path = CLEANUP_PATH.swap(ptr::null_mut(), Ordering::SeqCst);
    // SAFETY: a non-null `path` is a leaked, never freed, NUL-terminated `CString`;
    // unlink, signal and raise are async-signal-safe. Restoring the default disposition
    // and raising again makes the process die of the signal, as the caller expects.
    unsafe {
        if !path.is_null() {
            libc::unlink(path);
        }
        libc::signal(signal, libc::SIG_DFL);
        libc::raise(signal);
    }
}

/// An anonymous temporary file in the system's temp directory (`$TMPDIR`, else /tmp):
/// `O_TMPFILE` where the filesystem has it, else a file removed right after creation.
/// Either way nothing is left behind, whatever ends the process.
pub fn anonymous_temp_file() -> io::Result<File> {
    use std::fs::OpenOptions;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = std::env::temp_dir();
    match OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_TMPFILE | libc::O_CLOEXEC)
        .mode(0o600)
        .open(&dir)
    {
        Ok(file) => return Ok(file),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL)
            ) => {}
        Err(e) => return Err(e),
    }
    for n in 0..100u32 {
        let path = dir.join(format!(".binctr-pack-{}-{n}", std::process::id()));
        match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_CLOEXEC)
            .mode(0o600)
            .open(&path)
        {
            Ok(file) => {
                std::fs::remove_file(&path)?;
                return Ok(file);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other("no free temporary file name"))
}
