//! Paths inside a root directory, resolved as the container will resolve them:
//! openat2(RESOLVE_IN_ROOT) makes `/`, `..` and every symlink stay below the root, so a
//! hostile image cannot send one of our writes or mounts to a host path.

use crate::sys;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

fn cstr(path: &[u8]) -> io::Result<CString> {
    let path = if path.is_empty() { &b"."[..] } else { path };
    CString::new(path).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// Opens `path` (relative, or absolute meaning relative to the root) below `root`,
/// with O_PATH added to `flags`.
pub fn open(root: BorrowedFd<'_>, path: &[u8], flags: libc::c_int) -> io::Result<OwnedFd> {
    sys::openat2(
        root,
        &cstr(path)?,
        libc::O_PATH | flags,
        0,
        sys::RESOLVE_IN_ROOT | sys::RESOLVE_NO_MAGICLINKS,
    )
}

/// `path` split into its parent and its last component.
pub fn split_parent(path: &[u8]) -> (&[u8], &[u8]) {
    let path = path.strip_suffix(b"/").unwrap_or(path);
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (b"", path),
    }
}

/// mkdirat(2) of one entry of `dir`; an existing entry is not an error.
pub fn mkdir_at(dir: BorrowedFd<'_>, name: &[u8], mode: u32) -> io::Result<()> {
    let name = cstr(name)?;
    // SAFETY: `name` is NUL-terminated and `dir` is an open descriptor.
    let ret = unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) };
    if ret < 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EEXIST) {
            return Err(err);
        }
    }
    Ok(())
}

/// `mkdir -p` below the root; returns the directory, opened O_PATH.
pub fn mkdir_all(root: BorrowedFd<'_>, path: &[u8], mode: u32) -> io::Result<OwnedFd> {
    match open(root, path, libc::O_DIRECTORY) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
        other => return other,
    }
    let (parent, name) = split_parent(path);
    let parent = if parent.is_empty() || parent == b"/" {
        open(root, b".", libc::O_DIRECTORY)?
    } else {
        mkdir_all(root, parent, mode)?
    };
    mkdir_at(parent.as_fd(), name, mode)?;
    open(root, path, libc::O_DIRECTORY)
}

/// Creates an empty regular file `name` in `dir` unless one exists.
pub fn create_file_at(dir: BorrowedFd<'_>, name: &[u8], mode: u32) -> io::Result<()> {
    let name = cstr(name)?;
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: `name` is NUL-terminated and `dir` is an open descriptor.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags, mode as libc::c_uint) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor was just returned by the kernel and is ours to close.
    unsafe { libc::close(fd) };
    Ok(())
}
