//! Directories read by handle: a directory input (a root filesystem, an OCI layout, an
//! unpacked docker-archive) may belong to someone else, who can rename and replace its
//! entries while the packer reads them. So the directory is opened once, and everything
//! below it is reached from its parent's descriptor, one name at a time, never
//! following a symlink (`O_NOFOLLOW`), never blocking on a FIFO (`O_NONBLOCK`); what is
//! opened is fstat()ed, and the caller checks that it is still what it was listed as.
//! No path is ever resolved twice, so swapping a subdirectory for a symlink to someone's
//! home cannot redirect the walk.
use crate::sys;
use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{fstat, fstatat, FileStat, SFlag};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::io::AsRawFd;
#[cfg(test)]
use std::path::Path;

/// The most bytes of names one directory may hold (about a million entries).
const MAX_NAMES: usize = 64 << 20;

/// What a directory entry is, from its mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    Dir,
    File,
    Symlink,
    Fifo,
    Char,
    Block,
    Socket,
}

impl Type {
    pub fn of(st: &FileStat) -> Type {
        match SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT {
            SFlag::S_IFDIR => Type::Dir,
            SFlag::S_IFLNK => Type::Symlink,
            SFlag::S_IFIFO => Type::Fifo,
            SFlag::S_IFCHR => Type::Char,
            SFlag::S_IFBLK => Type::Block,
            SFlag::S_IFSOCK => Type::Socket,
            _ => Type::File,
        }
    }

    /// "a symbolic link", for messages.
    pub fn describe(self) -> &'static str {
        match self {
            Type::Dir => "a directory",
            Type::File => "a regular file",
            Type::Symlink => "a symbolic link",
            Type::Fifo => "a FIFO",
            Type::Char => "a character device",
            Type::Block => "a block device",
            Type::Socket => "a socket",
        }
    }
}

/// Why an entry could not be opened as asked.
#[derive(Debug)]
pub enum OpenError {
    /// It does not exist.
    Missing,
    /// It is not what was asked for (a symlink, a FIFO, a device, a file where a
    /// directory was wanted), or it changed between listing and opening.
    Wrong(&'static str),
    Io(io::Error),
}

impl From<Errno> for OpenError {
    fn from(e: Errno) -> Self {
        match e {
            Errno::ENOENT => OpenError::Missing,
            // O_NOFOLLOW on a symlink; O_DIRECTORY on something else.
            Errno::ELOOP => OpenError::Wrong(Type::Symlink.describe()),
            Errno::ENOTDIR => OpenError::Wrong("not a directory"),
            e => OpenError::Io(e.into()),
        }
    }
}

impl From<io::Error> for OpenError {
    fn from(e: io::Error) -> Self {
        match e.raw_os_error() {
            Some(n) => Errno::from_raw(n).into(),
            None => OpenError::Io(e),
        }
    }
}

/// An open directory.
pub struct DirHandle {
    fd: OwnedFd,
}

/// The same file: what was listed is what was opened.
pub fn same(listed: &FileStat, opened: &FileStat) -> bool {
    listed.st_dev == opened.st_dev
        && listed.st_ino == opened.st_ino
        && Type::of(listed) == Type::of(opened)
}

impl DirHandle {
    /// Opens the directory the user named (its own path may hold symlinks: the user
    /// typed it).
    #[cfg(test)]
    pub fn open_root(path: &Path) -> io::Result<DirHandle> {
        let file = sys::open_nonblocking(path)?;
        if Type::of(&fstat(file.as_raw_fd())?) != Type::Dir {
            return Err(Errno::ENOTDIR.into());
        }
        Ok(DirHandle { fd: file.into() })
    }

    /// The directory opened as `file` (the caller checked that it is one).
    pub fn from_file(file: File) -> DirHandle {
        DirHandle { fd: file.into() }
    }

    /// The names of its entries, `.` and `..` left out, in byte order. A directory whose
    /// names add up to more than [`MAX_NAMES`] bytes is refused, not held.
    pub fn names(&self) -> io::Result<Vec<OsString>> {
        // A descriptor of its own: readdir moves the offset, the handle stays as it was.
        let mut dir = Dir::from(self.fd.try_clone()?)?;
        let mut names = Vec::new();
        let mut bytes = 0usize;
        for entry in dir.iter() {
            let name = entry?.file_name().to_bytes().to_vec();
            if name == b"." || name == b".." {
                continue;
            }
            bytes += name.len() + 32;
            if bytes > MAX_NAMES {
                return Err(io::Error::other(
                    "the directory has more entries than binctr-pack reads",
                ));
            }
            names.push(OsString::from(std::ffi::OsStr::from_bytes(&name)));
        }
        names.sort_unstable();
        Ok(names)
    }

    /// Whether its entries can be read at all.
    pub fn check_readable(&self) -> io::Result<()> {
        let mut dir = Dir::from(self.fd.try_clone()?)?;
        dir.iter().next().transpose()?;
        Ok(())
    }

    /// The entry itself (a symlink is not followed).
    pub fn lstat(&self, name: &OsStr) -> io::Result<FileStat> {
        Ok(fstatat(
            Some(self.fd.as_raw_fd()),
            name,
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )?)
    }

    /// The subdirectory `name`, which must be a directory and no symlink.
    pub fn open_dir(&self, name: &OsStr) -> Result<(DirHandle, FileStat), OpenError> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK;
        let fd = sys::open_at(self.fd.as_fd(), name, flags).map_err(|e| self.what(name, e))?;
        let st = fstat(fd.as_raw_fd())?;
        if Type::of(&st) != Type::Dir {
            return Err(OpenError::Wrong(Type::of(&st).describe()));
        }
        Ok((DirHandle { fd }, st))
    }

    /// The regular file `name`: a symlink, FIFO, device or directory is refused, a FIFO
    /// without blocking.
    pub fn open_file(&self, name: &OsStr) -> Result<(File, FileStat), OpenError> {
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_NOCTTY;
        let fd = sys::open_at(self.fd.as_fd(), name, flags)?;
        let st = fstat(fd.as_raw_fd())?;
        if Type::of(&st) != Type::File {
            return Err(OpenError::Wrong(Type::of(&st).describe()));
        }
        Ok((File::from(fd), st))
    }

    /// An error of opening `name`: a wrong type said by what the name is now.
    fn what(&self, name: &OsStr, e: io::Error) -> OpenError {
        match OpenError::from(e) {
            OpenError::Wrong(_) => match self.lstat(name) {
                Ok(st) => OpenError::Wrong(Type::of(&st).describe()),
                Err(e) => OpenError::from(e),
            },
            other => other,
        }
    }

    /// A symlink's target, read from the link itself.
    pub fn read_link(&self, name: &OsStr) -> io::Result<OsString> {
        Ok(nix::fcntl::readlinkat(Some(self.fd.as_raw_fd()), name)?)
    }

    /// Whether `name` is a regular file (not a symlink to one).
    pub fn has_file(&self, name: &str) -> bool {
        self.lstat(OsStr::new(name))
            .is_ok_and(|st| Type::of(&st) == Type::File)
    }

    /// Whether anything is called `name`.
    pub fn has(&self, name: &str) -> bool {
        self.lstat(OsStr::new(name)).is_ok()
    }

    /// The regular file at `rel` ("blobs/sha256/<hex>"), each directory on the way
    /// opened from the one above it without following symlinks. `rel` must be relative,
    /// without `..`.
    pub fn open_below(&self, rel: &str) -> Result<(File, FileStat), OpenError> {
        let parts: Vec<&str> = rel.split('/').filter(|p| !p.is_empty()).collect();
        let Some((last, dirs)) = parts.split_last() else {
            return Err(OpenError::Missing);
        };
        let mut dir: Option<DirHandle> = None;
        for part in dirs {
            let parent = dir.as_ref().unwrap_or(self);
            dir = Some(parent.open_dir(OsStr::new(part))?.0);
        }
        dir.as_ref().unwrap_or(self).open_file(OsStr::new(last))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::tests::TempDir;
    use std::fs;
    use std::os::unix::fs::symlink;

    #[test]
    fn never_follows_symlinks_or_blocks_on_fifos() {
        let dir = TempDir::new();
        let root = dir.path();
        fs::create_dir_all(root.join("blobs/sha256")).unwrap();
        fs::write(root.join("blobs/sha256/real"), b"x").unwrap();
        fs::write(root.join("secret"), b"s").unwrap();
        symlink(root.join("secret"), root.join("blobs/sha256/link")).unwrap();
        symlink("blobs", root.join("via")).unwrap();
        nix::unistd::mkfifo(
            &root.join("blobs/sha256/fifo"),
            nix::sys::stat::Mode::S_IRWXU,
        )
        .unwrap();
        let h = DirHandle::open_root(root).unwrap();
        assert!(h.open_below("blobs/sha256/real").is_ok());
        let wrong = |rel: &str| match h.open_below(rel) {
            Err(OpenError::Wrong(what)) => what,
            other => panic!("{rel}: {other:?}"),
        };
        assert_eq!(wrong("blobs/sha256/link"), "a symbolic link");
        assert_eq!(wrong("via/sha256/real"), "a symbolic link");
        assert_eq!(wrong("blobs/sha256/fifo"), "a FIFO");
        assert_eq!(wrong("blobs/sha256"), "a directory");
        assert!(matches!(
            h.open_below("blobs/sha256/none"),
            Err(OpenError::Missing)
        ));
        assert_eq!(h.names().unwrap(), ["blobs", "secret", "via"]);
        assert!(h.has_file("secret") && !h.has_file("via") && h.has("via"));
    }
}
