//! Files and directories binctr keeps beside the user's own: the private directories it
//! trusts (cache, state root, a kept writable layer), files replaced atomically (pid
//! file, state), and `rm -rf` of what it made.
//!
//! Another local user may own or write a directory on the way (a shared scratch disk,
//! /tmp): nothing here follows a symlink in the last component, a temporary name is
//! unpredictable and created exclusively, and a private directory is checked through
//! the descriptor that was opened, never by its name again.

use crate::error::{Context, Error, Result};
use nix::fcntl::{renameat, OFlag};
use nix::sys::stat::{fchmod, fstat, Mode};
use std::ffi::CString;
use std::fs::{self, DirBuilder, File};
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

/// Creates `dir` (0700) or checks that an existing one is ours, and makes it private.
/// The cache holds setuid files of the user's images, the state root the locks of
/// running containers: nobody else may reach either. `what` names it in errors, `fix`
/// says how to choose another. Returns the directory, opened (O_PATH): callers work
/// below this descriptor, so the checked directory is the one they use.
pub fn private_dir(dir: &Path, what: &str, fix: &str) -> Result<OwnedFd> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| {
            format!(
                "cannot create the {what} directory {} ({fix})",
                dir.display()
            )
        })?;
    let fd = open_dir_nofollow(dir).with_context(|| {
        format!(
            "the {what} directory {} cannot be used ({fix})",
            dir.display()
        )
    })?;
    check_private(&fd, dir, what, fix, true)?;
    Ok(fd)
}

/// Opens (creating, 0600) a lock file in a private directory: never through a symlink
/// or onto a FIFO.
pub fn open_lock(path: &Path) -> io::Result<File> {
    File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
}

/// Opens a directory, refusing a symlink as its last component (parents may be links:
/// `~/.cache -> /data/cache` is the user's choice).
pub fn open_dir_nofollow(dir: &Path) -> io::Result<OwnedFd> {
    File::options()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(dir)
        .map(OwnedFd::from)
}

/// The directory behind `fd` belongs to the caller and nobody else may write in it.
/// With `repair`, a directory of ours that others may enter is made 0700 (through the
/// descriptor, never a path); otherwise that is refused too.
pub fn check_private(fd: &OwnedFd, dir: &Path, what: &str, fix: &str, repair: bool) -> Result<()> {
    let st = fstat(fd.as_raw_fd()).with_context(|| format!("cannot stat {}", dir.display()))?;
    let uid = nix::unistd::geteuid().as_raw();
    if st.st_uid != uid {
        return Err(Error::new(format!(
            "the {what} directory {} belongs to uid {}, not to you (uid {uid}): {fix}",
            dir.display(),
            st.st_uid
        )));
    }
    if st.st_mode & 0o077 == 0 {
        return Ok(());
    }
    if !repair {
        return Err(Error::new(format!(
            "the {what} directory {} may be written or entered by others (mode {:o}): {fix}",
            dir.display(),
            st.st_mode & 0o7777
        )));
    }
    // An O_PATH descriptor cannot be fchmod'ed; reopen the very same inode through it.
    let real = File::open(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .with_context(|| format!("cannot open {}", dir.display()))?;
    fchmod(real.as_raw_fd(), Mode::from_bits_truncate(0o700))
        .with_context(|| format!("cannot make {} private (chmod 700)", dir.display()))
}

/// `rm -rf`, making directories writable on the way (images hold read-only ones).
/// Works from directory descriptors, one name at a time, so a tree deeper than
/// PATH_MAX (an image's path near the limit, under the cache's own path) goes too, and
/// a symlink is removed, never followed.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.is_dir() {
        return fs::remove_file(path);
    }
    let parent = path.parent().unwrap_or(Path::new("."));
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
    let parent = File::options()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(parent)?;
    remove_dir_at(parent.as_fd(), &CString::new(name.as_encoded_bytes())?)
}

/// Creates the file `path` (0644, whatever the umask), which must not exist yet: never opens an existing
/// file, a symlink or a FIFO planted there. For files of a directory we just made.
pub fn create_new_file(path: &Path, content: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let mut file = File::options()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)?;
    // 0644 whatever the umask.
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
    file.write_all(content)
}

/// Removes the directory `name` of `dir` with everything below it, through
/// descriptors (never following a symlink).
pub fn remove_dir_at(dir: std::os::fd::BorrowedFd<'_>, name: &std::ffi::CStr) -> io::Result<()> {
    use nix::unistd::{unlinkat, UnlinkatFlags};
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;
    let sub = match crate::sys::openat(dir, name, flags, 0) {
        // A directory of mode 000 (overlay's work/work): open it to ourselves first.
        Err(e) if e.raw_os_error() == Some(libc::EACCES) => {
            nix::sys::stat::fchmodat(
                Some(dir.as_raw_fd()),
                name,
                Mode::from_bits_truncate(0o700),
                nix::sys::stat::FchmodatFlags::FollowSymlink,
            )?;
            crate::sys::openat(dir, name, flags, 0)
        }
        other => other,
    }
    .map(File::from)?;
    if fstat(sub.as_raw_fd())?.st_mode & 0o700 != 0o700 {
        fchmod(sub.as_raw_fd(), Mode::from_bits_truncate(0o700))?;
    }
    let names: Vec<(CString, bool)> = nix::dir::Dir::from_fd(nix::unistd::dup(sub.as_raw_fd())?)?
        .iter()
        .filter_map(|e| e.ok())
        .filter(|e| !matches!(e.file_name().to_bytes(), b"." | b".."))
        .map(|e| {
            let is_dir = e.file_type() == Some(nix::dir::Type::Directory);
            (e.file_name().to_owned(), is_dir)
        })
        .collect();
    for (child, is_dir) in names {
        let removed = match is_dir {
            false => unlinkat(
                Some(sub.as_raw_fd()),
                child.as_c_str(),
                UnlinkatFlags::NoRemoveDir,
            ),
            true => Err(nix::errno::Errno::EISDIR),
        };
        match removed {
            Ok(()) => {}
            Err(nix::errno::Errno::EISDIR) => remove_dir_at(sub.as_fd(), &child)?,
            Err(e) => return Err(e.into()),
        }
    }
    unlinkat(Some(dir.as_raw_fd()), name, UnlinkatFlags::RemoveDir).map_err(io::Error::from)
}

/// Writes `path` through a temporary file in the same directory and a rename, so a
/// reader never sees it half-written. The parent is opened once and everything
/// happens relative to it; the temporary name is random and created with
/// O_EXCL|O_NOFOLLOW, so whoever else can write that directory can neither predict it
/// nor plant a link there; the rename replaces whatever `path` was (a symlink is
/// replaced, not followed). The file gets 0666 less the umask, as `>` in a shell.
pub fn write_atomically(path: &Path, content: &[u8]) -> Result<()> {
    let fail =
        |e: io::Error| Err::<(), _>(e).with_context(|| format!("cannot write {}", path.display()));
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return fail(io::Error::from_raw_os_error(libc::EISDIR));
    };
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    let dir = match File::options()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(parent)
    {
        Ok(dir) => dir,
        Err(e) => return fail(e),
    };
    let mut tmp_name = b".".to_vec();
    tmp_name.extend_from_slice(name.as_bytes());
    tmp_name.extend_from_slice(format!(".tmp-{}", random_hex()).as_bytes());
    let tmp = CString::new(tmp_name).map_err(|_| Error::new("a path with a NUL byte"))?;
    let name = CString::new(name.as_bytes()).map_err(|_| Error::new("a path with a NUL byte"))?;
    let result = create_exclusive(&dir, &tmp)
        .and_then(|mut f| f.write_all(content))
        .and_then(|()| {
            renameat(
                Some(dir.as_raw_fd()),
                tmp.as_c_str(),
                Some(dir.as_raw_fd()),
                name.as_c_str(),
            )
            .map_err(io::Error::from)
        });
    if let Err(e) = result {
        let _ = nix::unistd::unlinkat(
            Some(dir.as_raw_fd()),
            tmp.as_c_str(),
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        );
        return fail(e);
    }
    Ok(())
}

fn create_exclusive(dir: &File, name: &CString) -> io::Result<File> {
    let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW;
    crate::sys::openat(dir.as_fd(), name, flags.bits(), 0o666).map(File::from)
}

/// 16 hex digits from the kernel's random pool (the pid and time if that fails).
pub fn random_hex() -> String {
    let mut bytes = [0u8; 8];
    let filled = File::open("/dev/urandom")
        .and_then(|mut f| io::Read::read_exact(&mut f, &mut bytes))
        .is_ok();
    let n = if filled {
        u64::from_ne_bytes(bytes)
    } else {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        t ^ u64::from(std::process::id()).rotate_left(32)
    };
    format!("{n:016x}")
}
