//! Paths inside a root directory, resolved as the container will resolve them:
//! openat2(RESOLVE_IN_ROOT) makes `/`, `..` and every symlink stay below the root, so a
//! hostile image cannot send one of our writes or mounts to a host path. Below that, the
//! `*_at` calls each name one entry of an open directory and never follow a symlink in
//! the last component.

use crate::sys::{self, ResolveFlag};
use nix::sys::stat::{Mode, SFlag};
use nix::sys::time::TimeSpec;
use std::ffi::{CStr, CString};
use std::fs::File;
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
        ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS,
    )
}

/// Opens the file `path` below `root` for reading (never blocking on a FIFO).
pub fn open_file(root: BorrowedFd<'_>, path: &[u8]) -> io::Result<OwnedFd> {
    sys::openat2(
        root,
        &cstr(path)?,
        libc::O_RDONLY | libc::O_NONBLOCK,
        ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS,
    )
}

/// Opens the directory `path` below `root` for reading its attributes and setting
/// them, refusing any symlink on the way (used once the tree is complete).
pub fn open_dir_no_symlinks(root: BorrowedFd<'_>, path: &[u8]) -> io::Result<File> {
    sys::openat2(
        root,
        &cstr(path)?,
        libc::O_RDONLY | libc::O_DIRECTORY,
        ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_SYMLINKS,
    )
    .map(File::from)
}

/// Opens `path` below `root` like [`open`], but only on the root's own filesystem: a
/// path that leads onto another mount (/proc, a volume) is refused (EXDEV).
pub fn open_same_fs(root: BorrowedFd<'_>, path: &[u8], flags: libc::c_int) -> io::Result<OwnedFd> {
    sys::openat2(
        root,
        &cstr(path)?,
        libc::O_PATH | flags,
        ResolveFlag::RESOLVE_IN_ROOT
            | ResolveFlag::RESOLVE_NO_MAGICLINKS
            | ResolveFlag::RESOLVE_NO_XDEV,
    )
}

/// Puts a regular file holding `content` at `dir/name` below `root`, replacing what is
/// there (a file, a symlink, a FIFO: replaced, never written through or opened). The
/// directory is resolved inside the root and must be on the root's own filesystem; the
/// file is written under a random name (O_EXCL|O_NOFOLLOW) and renamed into place.
pub fn replace_file(
    root: BorrowedFd<'_>,
    dir: &[u8],
    name: &[u8],
    content: &[u8],
    mode: u32,
) -> io::Result<()> {
    use std::io::Write;
    let dir = open_same_fs(root, dir, libc::O_DIRECTORY)?;
    let tmp = cstr(format!(".binctr-{}", crate::files::random_hex()).as_bytes())?;
    let name = cstr(name)?;
    let written = create_new_file_at(dir.as_fd(), &tmp, mode)
        .and_then(|mut f| f.write_all(content))
        .and_then(|()| {
            nix::fcntl::renameat(
                Some(dir.as_raw_fd()),
                tmp.as_c_str(),
                Some(dir.as_raw_fd()),
                name.as_c_str(),
            )
            .map_err(io::Error::from)
        });
    if written.is_err() {
        let _ = remove_at(dir.as_fd(), &tmp);
    }
    written
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
    match mkdir_new_at(dir, &cstr(name)?, mode) {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        other => other,
    }
}

/// mkdirat(2) of one entry of `dir`; an existing entry is an error (EEXIST).
pub fn mkdir_new_at(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<()> {
    nix::sys::stat::mkdirat(Some(dir.as_raw_fd()), name, Mode::from_bits_truncate(mode))
        .map_err(io::Error::from)
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

/// `mkdir -p` below the root with no symlink followed: a component that is not a
/// directory (a symlink, a file a lower layer left) is replaced by one, as an upper
/// layer's directory hides whatever the layers below had there (the merged fallback).
/// Returns the directory, opened O_PATH.
pub fn mkdir_all_replacing(root: BorrowedFd<'_>, path: &[u8], mode: u32) -> io::Result<OwnedFd> {
    let resolve = ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_SYMLINKS;
    let flags = libc::O_PATH | libc::O_DIRECTORY;
    if let Ok(dir) = sys::openat2(root, &cstr(path)?, flags, resolve) {
        return Ok(dir);
    }
    let mut dir = open(root, b".", libc::O_DIRECTORY)?;
    for part in path.split(|&b| b == b'/').filter(|p| !p.is_empty()) {
        if part == b"." || part == b".." {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let name = cstr(part)?;
        // O_PATH|O_NOFOLLOW opens a symlink itself, which O_DIRECTORY then refuses.
        dir = match sys::openat(dir.as_fd(), &name, flags | libc::O_NOFOLLOW, 0) {
            Ok(next) => next,
            Err(e) => {
                match e.raw_os_error() {
                    Some(libc::ENOENT) => {}
                    Some(libc::ENOTDIR | libc::ELOOP) => remove_at(dir.as_fd(), &name)?,
                    _ => return Err(e),
                }
                mkdir_new_at(dir.as_fd(), &name, mode)?;
                sys::openat(dir.as_fd(), &name, flags | libc::O_NOFOLLOW, 0)?
            }
        };
    }
    Ok(dir)
}

/// Whether `dir/name` is a directory itself (a symlink to one is not).
pub fn is_dir_at(dir: BorrowedFd<'_>, name: &CStr) -> bool {
    nix::sys::stat::fstatat(
        Some(dir.as_raw_fd()),
        name,
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
}

/// The names in the directory `dir` (opened for reading), but `.` and `..`.
pub fn names_in(dir: &File) -> io::Result<Vec<CString>> {
    let mut listing = nix::dir::Dir::from_fd(nix::unistd::dup(dir.as_raw_fd())?)?;
    let mut names = Vec::new();
    for entry in listing.iter() {
        let name = entry?.file_name().to_owned();
        if !matches!(name.to_bytes(), b"." | b"..") {
            names.push(name);
        }
    }
    Ok(names)
}

/// Creates an empty regular file `name` in `dir` unless one exists.
pub fn create_file_at(dir: BorrowedFd<'_>, name: &[u8], mode: u32) -> io::Result<()> {
    // O_NONBLOCK: a FIFO already there must not hang us (ENXIO without a reader).
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_NOFOLLOW | libc::O_NONBLOCK;
    sys::openat(dir, &cstr(name)?, flags, mode).map(drop)
}

/// Creates `name` with its permission bits `mode` (as the umask lets them through); the
/// descriptor is writable whatever the bits say. Fails if anything is there.
pub fn create_new_file_at(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<File> {
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
    sys::openat(dir, name, flags, mode & 0o777).map(File::from)
}

pub fn symlink_at(target: &CStr, dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    nix::unistd::symlinkat(target, Some(dir.as_raw_fd()), name).map_err(io::Error::from)
}

/// A hard link `dir/name` to `from_dir/from` (a symlink is linked itself, not followed).
pub fn link_at(
    from_dir: BorrowedFd<'_>,
    from: &CStr,
    dir: BorrowedFd<'_>,
    name: &CStr,
) -> io::Result<()> {
    nix::unistd::linkat(
        Some(from_dir.as_raw_fd()),
        from,
        Some(dir.as_raw_fd()),
        name,
        nix::fcntl::AtFlags::empty(),
    )
    .map_err(io::Error::from)
}

pub fn mkfifo_at(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<()> {
    nix::sys::stat::mknodat(
        Some(dir.as_raw_fd()),
        name,
        SFlag::S_IFIFO,
        Mode::from_bits_truncate(mode),
        0,
    )
    .map_err(io::Error::from)
}

/// Removes whatever `name` is: a file, or a directory with everything in it (a later
/// entry of a tar replacing a directory by a file, as docker's extraction does).
pub fn remove_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    use nix::unistd::{unlinkat, UnlinkatFlags};
    match unlinkat(Some(dir.as_raw_fd()), name, UnlinkatFlags::NoRemoveDir) {
        Err(nix::errno::Errno::EISDIR) => crate::files::remove_dir_at(dir, name),
        other => other.map_err(io::Error::from),
    }
}

/// Sets the mtime of `name` itself (a symlink is not followed).
pub fn set_mtime_at(dir: BorrowedFd<'_>, name: &CStr, mtime: i64) -> io::Result<()> {
    nix::sys::stat::utimensat(
        Some(dir.as_raw_fd()),
        name,
        &TimeSpec::UTIME_OMIT,
        &TimeSpec::new(mtime, 0),
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .map_err(io::Error::from)
}

/// Sets the mtime of an open file.
pub fn set_file_mtime(file: &File, mtime: i64) -> io::Result<()> {
    nix::sys::stat::futimens(
        file.as_raw_fd(),
        &TimeSpec::UTIME_OMIT,
        &TimeSpec::new(mtime, 0),
    )
    .map_err(io::Error::from)
}
