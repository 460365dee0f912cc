//! Unpacks the payload tar into a directory without ever writing outside it.
//!
//! Every parent directory is opened with openat2(RESOLVE_IN_ROOT) below the target, so a
//! symlink in the image (absolute or relative) resolves inside the rootfs, as the
//! container itself will see it; the last component is created with *at() calls that do
//! not follow symlinks. `..` components are refused. This runs outside any namespace,
//! with the user's full rights, so it must hold against a hostile tar.

use crate::error::{Context, Error, Result};
use crate::inroot::{self, split_parent};
use crate::sys;
use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;

/// What an extraction did, for `-D`.
#[derive(Default, Debug)]
pub struct Summary {
    pub entries: u64,
    pub skipped_devices: u64,
    pub skipped_other: u64,
    /// Owners outside the id mapping (left to the extracting user).
    pub unmapped_owners: u64,
    /// Extended attributes the kernel refused (security.* outside a user namespace...).
    pub refused_xattrs: u64,
}

/// Who owns an entry, and its extended attributes (PAX `SCHILY.xattr.*`).
#[derive(Clone, Default)]
struct Attrs {
    owner: Option<(u32, u32)>,
    xattrs: Vec<(CString, Vec<u8>)>,
}

/// Directory metadata applied once everything below it is written (a read-only
/// directory would otherwise stop its own children from being created).
struct DirMeta {
    path: Vec<u8>,
    mode: u32,
    mtime: i64,
    attrs: Attrs,
}

pub struct Extractor {
    root: OwnedFd,
    /// The last parent directory opened, reused while entries stay in one directory.
    parent: Option<(Vec<u8>, OwnedFd)>,
    dirs: Vec<DirMeta>,
    buf: Vec<u8>,
    /// Inside a user namespace with subordinate ids: give files the image's owners.
    keep_owners: bool,
    pub summary: Summary,
}

fn refuse(name: &[u8], why: &str) -> Error {
    Error::new(format!(
        "cannot extract '{}' from the image: {}",
        printable(name),
        crate::error::plain(&why)
    ))
}

/// A name from the image as one line of plain text: control characters (a newline, a
/// terminal escape) are escaped, so a hostile name cannot forge lines or colours.
pub fn printable(name: &[u8]) -> String {
    String::from_utf8_lossy(name).escape_debug().to_string()
}

/// The entry's path as clean relative components: `./` and leading `/` dropped,
/// `..` refused. An empty result is the root itself.
fn clean_path(raw: &[u8]) -> Result<Vec<u8>> {
    if raw.contains(&0) {
        return Err(refuse(raw, "name contains a NUL byte"));
    }
    if raw.len() >= libc::PATH_MAX as usize {
        return Err(refuse(raw, "name longer than PATH_MAX"));
    }
    let mut out = Vec::with_capacity(raw.len());
    for part in raw.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return Err(refuse(raw, "path climbs out of the root with '..'")),
            _ => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(part);
            }
        }
    }
    Ok(out)
}

fn cstr(bytes: &[u8]) -> CString {
    // clean_path refused NUL bytes already.
    CString::new(bytes).unwrap_or_default()
}

fn last_err<T>(ret: libc::c_int, ok: T) -> io::Result<T> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ok)
    }
}

impl Summary {
    fn add(&mut self, (unmapped, refused): (u64, u64)) {
        self.unmapped_owners += unmapped;
        self.refused_xattrs += refused;
    }
}

enum AttrTarget<'a> {
    File(&'a File),
    /// An entry of a directory, not followed if it is a symlink.
    At(BorrowedFd<'a>, &'a CStr),
}

/// Sets owner and xattrs; failures are counted, not fatal (an owner outside the mapping
/// stays the extracting user's, as a security.* xattr the kernel refuses is dropped).
/// Returns (owners left unmapped, xattrs refused).
fn apply_attrs(target: AttrTarget<'_>, attrs: &Attrs, keep_owners: bool) -> (u64, u64) {
    let mut unmapped = 0;
    let mut refused = 0;
    if let (true, Some((uid, gid))) = (keep_owners, attrs.owner) {
        let ok = match &target {
            AttrTarget::File(f) => {
                nix::unistd::fchown(f.as_raw_fd(), Some(uid.into()), Some(gid.into())).is_ok()
            }
            AttrTarget::At(dir, name) => nix::unistd::fchownat(
                Some(dir.as_raw_fd()),
                *name,
                Some(uid.into()),
                Some(gid.into()),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .is_ok(),
        };
        unmapped += u64::from(!ok);
    }
    for (name, value) in &attrs.xattrs {
        let ok = match &target {
            AttrTarget::File(f) => sys::set_xattr_fd(f.as_fd(), name, value).is_ok(),
            AttrTarget::At(dir, entry) => sys::set_xattr_at(*dir, entry, name, value).is_ok(),
        };
        refused += u64::from(!ok);
    }
    (unmapped, refused)
}

/// The *at() calls used on one directory; each only names an entry of that directory.
mod at {
    use super::*;

    pub fn mkdir(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<()> {
        // SAFETY: `name` is NUL-terminated and `dir` is an open descriptor.
        last_err(
            unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) },
            (),
        )
    }
    pub fn symlink(target: &CStr, dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
        // SAFETY: both strings are NUL-terminated and `dir` is an open descriptor.
        let ret = unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) };
        last_err(ret, ())
    }
    pub fn link(
        from_dir: BorrowedFd<'_>,
        from: &CStr,
        dir: BorrowedFd<'_>,
        name: &CStr,
    ) -> io::Result<()> {
        // SAFETY: both names are NUL-terminated, both descriptors are open; flags 0 so a
        // symlink is linked itself, never followed.
        let ret = unsafe {
            libc::linkat(
                from_dir.as_raw_fd(),
                from.as_ptr(),
                dir.as_raw_fd(),
                name.as_ptr(),
                0,
            )
        };
        last_err(ret, ())
    }
    pub fn mknod(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<()> {
        // SAFETY: `name` is NUL-terminated and `dir` is an open descriptor.
        let ret = unsafe { libc::mknodat(dir.as_raw_fd(), name.as_ptr(), mode, 0) };
        last_err(ret, ())
    }
    /// Removes whatever `name` is, a file or an empty directory.
    pub fn remove(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
        // SAFETY: `name` is NUL-terminated and `dir` is an open descriptor.
        let ret = unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) };
        if ret == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EISDIR) {
            // SAFETY: as above.
            let ret = unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), libc::AT_REMOVEDIR) };
            return last_err(ret, ());
        }
        Err(err)
    }
    /// Creates `name` with its final permission bits (the extraction runs with umask 0),
    /// so no chmod follows; the descriptor is writable whatever the bits say.
    pub fn create_file(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<File> {
        let flags =
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        // SAFETY: `name` is NUL-terminated and `dir` is an open descriptor.
        let fd = unsafe {
            libc::openat(
                dir.as_raw_fd(),
                name.as_ptr(),
                flags,
                (mode & 0o777) as libc::c_uint,
            )
        };
        let fd = last_err(fd, fd)?;
        // SAFETY: the descriptor was just returned by the kernel and is owned by no one else.
        Ok(unsafe { File::from_raw_fd(fd) })
    }
    /// Sets the mtime of `name` itself (a symlink is not followed).
    pub fn set_mtime(dir: BorrowedFd<'_>, name: &CStr, mtime: i64) -> io::Result<()> {
        let times = [
            libc::timespec {
                tv_sec: 0,
                tv_nsec: libc::UTIME_OMIT,
            },
            libc::timespec {
                tv_sec: mtime as _,
                tv_nsec: 0,
            },
        ];
        // SAFETY: `name` is NUL-terminated, `times` holds two timespecs as required.
        let ret = unsafe {
            libc::utimensat(
                dir.as_raw_fd(),
                name.as_ptr(),
                times.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        last_err(ret, ())
    }
    pub fn set_file_times(file: &File, mtime: i64) -> io::Result<()> {
        let times = [
            libc::timespec {
                tv_sec: 0,
                tv_nsec: libc::UTIME_OMIT,
            },
            libc::timespec {
                tv_sec: mtime as _,
                tv_nsec: 0,
            },
        ];
        // SAFETY: the descriptor is open and `times` holds two timespecs.
        last_err(
            unsafe { libc::futimens(file.as_raw_fd(), times.as_ptr()) },
            (),
        )
    }
}

impl Extractor {
    /// Extracts below `root`, which must be an empty directory.
    pub fn new(root: &Path, keep_owners: bool) -> Result<Extractor> {
        let root = File::open(root)
            .with_context(|| format!("cannot open {}", root.display()))?
            .into();
        Ok(Extractor {
            root,
            parent: None,
            dirs: Vec::new(),
            buf: vec![0u8; 256 * 1024],
            keep_owners,
            summary: Summary::default(),
        })
    }

    /// Opens a directory of the rootfs, resolving it as the container will.
    fn open_dir(&self, path: &[u8]) -> io::Result<OwnedFd> {
        inroot::open(self.root.as_fd(), path, libc::O_DIRECTORY)
    }

    /// The parent directory of an entry, created (0700) when the tar did not list it.
    /// Errors name `entry`, the tar entry being written.
    fn parent_dir(&mut self, parent: &[u8], entry: &[u8]) -> Result<BorrowedFd<'_>> {
        let cached = matches!(&self.parent, Some((p, _)) if p == parent);
        if !cached {
            let fd = inroot::mkdir_all(self.root.as_fd(), parent, 0o755)
                .map_err(|e| refuse(entry, &format!("cannot open or create its directory: {e}")))?;
            self.parent = Some((parent.to_vec(), fd));
        }
        Ok(self
            .parent
            .as_ref()
            .map(|(_, fd)| fd.as_fd())
            .expect("set above"))
    }

    /// The owner (when we keep owners) and xattrs an entry asks for.
    fn attrs_of<R: Read>(&self, entry: &mut tar::Entry<'_, R>) -> Attrs {
        let header = entry.header();
        let owner = self.keep_owners.then(|| {
            (
                header.uid().unwrap_or(0) as u32,
                header.gid().unwrap_or(0) as u32,
            )
        });
        let mut xattrs = Vec::new();
        if let Ok(Some(pax)) = entry.pax_extensions() {
            for ext in pax.flatten() {
                if let Some(name) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.") {
                    if let Ok(name) = CString::new(name) {
                        xattrs.push((name, ext.value_bytes().to_vec()));
                    }
                }
            }
        }
        Attrs { owner, xattrs }
    }

    /// Writes one entry of the tar.
    pub fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<()> {
        let raw = entry.path_bytes().into_owned();
        let path = clean_path(&raw)?;
        let header = entry.header();
        let kind = header.entry_type();
        let mode = header.mode().map_err(|e| refuse(&raw, &e.to_string()))? & 0o7777;
        let mtime = header.mtime().unwrap_or(0) as i64;
        let attrs = self.attrs_of(entry);
        let keep_owners = self.keep_owners;
        self.summary.entries += 1;
        if path.is_empty() {
            if kind.is_dir() {
                self.dirs.push(DirMeta {
                    path,
                    mode,
                    mtime,
                    attrs,
                });
            }
            return Ok(());
        }
        let link_target = match kind {
            tar::EntryType::Symlink | tar::EntryType::Link => Some(
                entry
                    .link_name_bytes()
                    .ok_or_else(|| refuse(&raw, "link without a target"))?
                    .into_owned(),
            ),
            _ => None,
        };
        let (parent, name) = split_parent(&path);
        let name = cstr(name);
        match kind {
            tar::EntryType::Directory => {
                let dir = self.parent_dir(parent, &raw)?;
                if let Err(e) = at::mkdir(dir, &name, 0o700) {
                    if e.raw_os_error() != Some(libc::EEXIST) {
                        return Err(refuse(&raw, &format!("cannot create directory: {e}")));
                    }
                    // Already a directory (or a symlink to one, kept): only its metadata
                    // is due. Anything else there is replaced.
                    if self.open_dir(&path).is_err() {
                        let dir = self.parent_dir(parent, &raw)?;
                        at::remove(dir, &name)
                            .and_then(|()| at::mkdir(dir, &name, 0o700))
                            .map_err(|e| refuse(&raw, &format!("cannot create directory: {e}")))?;
                    }
                }
                self.dirs.push(DirMeta {
                    path,
                    mode,
                    mtime,
                    attrs,
                });
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let dir = self.parent_dir(parent, &raw)?;
                let mut file = match at::create_file(dir, &name, mode) {
                    Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                        at::remove(dir, &name).and_then(|()| at::create_file(dir, &name, mode))
                    }
                    other => other,
                }
                .map_err(|e| refuse(&raw, &format!("cannot create file: {e}")))?;
                let size = entry.header().size().unwrap_or(0);
                let buf = &mut self.buf;
                let mut written = 0u64;
                loop {
                    let n = match entry.read(buf) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(refuse(&raw, &format!("cannot read it: {e}"))),
                    };
                    file.write_all(&buf[..n])
                        .map_err(|e| refuse(&raw, &format!("cannot write: {e}")))?;
                    written += n as u64;
                }
                if written != size {
                    return Err(refuse(
                        &raw,
                        &format!("the payload ends inside it ({written} of {size} bytes): the file is damaged"),
                    ));
                }
                let counts = apply_attrs(AttrTarget::File(&file), &attrs, self.keep_owners);
                // The permission bits came with the create; setuid, setgid and sticky do
                // not survive the write and the chown above, so they are set last.
                if mode & 0o7000 != 0 {
                    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))
                        .map_err(|e| refuse(&raw, &format!("cannot set mode: {e}")))?;
                }
                at::set_file_times(&file, mtime)
                    .map_err(|e| refuse(&raw, &format!("cannot set mtime: {e}")))?;
                self.summary.add(counts);
            }
            tar::EntryType::Symlink => {
                let target = cstr(link_target.as_deref().unwrap_or_default());
                let dir = self.parent_dir(parent, &raw)?;
                match at::symlink(&target, dir, &name) {
                    Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                        at::remove(dir, &name).and_then(|()| at::symlink(&target, dir, &name))
                    }
                    other => other,
                }
                .map_err(|e| refuse(&raw, &format!("cannot create symlink: {e}")))?;
                let counts = apply_attrs(AttrTarget::At(dir, &name), &attrs, keep_owners);
                at::set_mtime(dir, &name, mtime)
                    .map_err(|e| refuse(&raw, &format!("cannot set mtime: {e}")))?;
                self.summary.add(counts);
            }
            tar::EntryType::Link => {
                let target =
                    clean_path(link_target.as_deref().unwrap_or_default()).map_err(|_| {
                        refuse(
                            &raw,
                            "its hard link target climbs out of the root with '..'",
                        )
                    })?;
                let (tparent, tname) = split_parent(&target);
                let from = self
                    .open_dir(tparent)
                    .map_err(|e| refuse(&raw, &format!("hard link target missing: {e}")))?;
                let tname = cstr(tname);
                let dir = self.parent_dir(parent, &raw)?;
                match at::link(from.as_fd(), &tname, dir, &name) {
                    Err(e) if e.raw_os_error() == Some(libc::EEXIST) => at::remove(dir, &name)
                        .and_then(|()| at::link(from.as_fd(), &tname, dir, &name)),
                    other => other,
                }
                .map_err(|e| {
                    refuse(
                        &raw,
                        &format!(
                            "cannot hard link to '{}': {e}",
                            String::from_utf8_lossy(&target)
                        ),
                    )
                })?;
            }
            tar::EntryType::Fifo => {
                let dir = self.parent_dir(parent, &raw)?;
                match at::mknod(dir, &name, libc::S_IFIFO | mode) {
                    Err(e) if e.raw_os_error() == Some(libc::EEXIST) => at::remove(dir, &name)
                        .and_then(|()| at::mknod(dir, &name, libc::S_IFIFO | mode)),
                    other => other,
                }
                .map_err(|e| refuse(&raw, &format!("cannot create fifo: {e}")))?;
                let counts = apply_attrs(AttrTarget::At(dir, &name), &attrs, keep_owners);
                self.summary.add(counts);
            }
            tar::EntryType::Char | tar::EntryType::Block => {
                // An unprivileged user cannot create device nodes; /dev is set up at run time.
                self.summary.skipped_devices += 1;
            }
            _ => {
                // PAX global headers, GNU volume labels and the like carry no file.
                self.summary.skipped_other += 1;
            }
        }
        Ok(())
    }

    /// Makes sure `path` exists as a directory (for mount points the image lacks).
    pub fn ensure_dir(&mut self, path: &[u8], mode: u32) -> Result<()> {
        if self.open_dir(path).is_ok() {
            return Ok(());
        }
        let (parent, name) = split_parent(path);
        let dir = self.parent_dir(parent, path)?;
        let name = cstr(name);
        // A symlink or file in the way is left alone: the container sees the image as is.
        if at::mkdir(dir, &name, 0o700).is_ok() {
            self.dirs.push(DirMeta {
                path: path.to_vec(),
                mode,
                mtime: 0,
                attrs: Attrs::default(),
            });
        }
        Ok(())
    }

    /// Applies directory modes and mtimes, deepest first.
    pub fn finish(mut self) -> Result<Summary> {
        self.parent = None;
        self.dirs.sort_by_key(|d| {
            std::cmp::Reverse(
                d.path.iter().filter(|&&b| b == b'/').count() + usize::from(!d.path.is_empty()),
            )
        });
        for dir in &self.dirs {
            let path = if dir.path.is_empty() {
                &b"."[..]
            } else {
                &dir.path
            };
            let fd = sys::openat2(
                self.root.as_fd(),
                &cstr(path),
                libc::O_RDONLY | libc::O_DIRECTORY,
                0,
                sys::RESOLVE_IN_ROOT | sys::RESOLVE_NO_SYMLINKS,
            );
            // A directory later replaced by another kind of entry has nothing to apply.
            let Ok(fd) = fd else { continue };
            let file = File::from(fd);
            let counts = apply_attrs(AttrTarget::File(&file), &dir.attrs, self.keep_owners);
            self.summary.add(counts);
            file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(
                dir.mode | 0o700,
            ))
            .map_err(|e| refuse(&dir.path, &format!("cannot set mode: {e}")))?;
            at::set_file_times(&file, dir.mtime)
                .map_err(|e| refuse(&dir.path, &format!("cannot set mtime: {e}")))?;
        }
        Ok(self.summary)
    }

    /// Creates an empty regular file unless something is there already.
    pub fn ensure_file(&mut self, path: &[u8]) -> Result<()> {
        let (parent, name) = split_parent(path);
        let Ok(dir) = self.open_dir(parent) else {
            return Ok(());
        };
        // Something there already (a file, a symlink) is left as the image has it.
        let _ = inroot::create_file_at(dir.as_fd(), name, 0o644);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_path_normalises_and_refuses_dotdot() {
        assert_eq!(clean_path(b"./etc/passwd").unwrap(), b"etc/passwd");
        assert_eq!(clean_path(b"/etc//x/./y/").unwrap(), b"etc/x/y");
        assert_eq!(clean_path(b"./").unwrap(), b"");
        assert!(clean_path(b"a/../../b").is_err());
        assert!(clean_path(b"..").is_err());
    }
}
