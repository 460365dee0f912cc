//! Unpacks the payload tar into a directory without ever writing outside it.
//!
//! Every parent directory is opened with openat2(RESOLVE_IN_ROOT) below the target, so a
//! symlink in the image (absolute or relative) resolves inside the rootfs, as the
//! container itself will see it; the last component is created with *at() calls that do
//! not follow symlinks. `..` components are refused. This runs outside any namespace,
//! with the user's full rights, so it must hold against a hostile tar.
//!
//! Where a kernel cannot stack a layered image's layers (rootfs/stacking.rs), they are
//! merged into one directory instead ([`unpack_merged`]): each layer read twice, first
//! for its whiteouts (removing what the layers below put there), then for its entries
//! (replacing what is there), with no symlink followed on the way to either.

use super::decode;
use super::inroot::{self, split_parent};
use super::payload::{Packed, PayloadStream};
use super::ring::Ring;
use crate::error::{Context, Error, Result};
use crate::log::printable;
use crate::sys;
use binctr_format::tar_reader::{Header, Kind, Limits, TarReader};
use std::collections::BTreeMap;
use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{self, BufRead, Read, Seek, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
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
    /// A layer's whiteouts and opaque markers, made overlay's.
    pub whiteouts: u64,
    /// A layer whose root is opaque: it hides every layer below it.
    pub opaque_root: bool,
}

/// Who owns an entry, and its extended attributes (PAX `SCHILY.xattr.*`).
#[derive(Clone, Default)]
struct Attrs {
    owner: Option<(u32, u32)>,
    xattrs: Vec<(CString, Vec<u8>)>,
}

/// The most directory metadata an extraction keeps for [`Extractor::finish`]: a Debian
/// image needs well under 1 MiB; a hostile one listing millions of directories is
/// refused rather than allowed to take the machine's memory.
const DIR_META_BYTES: usize = 24 << 20;

/// Directory metadata applied once everything below it is written (a read-only
/// directory would otherwise stop its own children from being created).
struct DirMeta {
    mode: u32,
    mtime: i64,
    attrs: Attrs,
}

/// One tar entry being written: its name as in the tar (for errors), its clean path,
/// and its metadata.
struct Item<'a> {
    raw: &'a [u8],
    path: &'a [u8],
    mode: u32,
    mtime: i64,
    attrs: &'a Attrs,
}

/// What the entries of a tar are to the tree being made.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A whole image (format 1): `.wh.` names are ordinary files.
    Flat,
    /// A layer of the layer store: `.wh.` entries become overlay's whiteouts.
    Layer,
    /// A layer merged onto the layers below it, first pass: only its whiteouts and
    /// opaque markers, which remove what the layers below put there.
    Whiteouts,
    /// A layer merged onto the layers below it, second pass: its entries, each
    /// replacing what is there (no symlink followed: a directory of an upper layer
    /// hides a lower layer's symlink, as overlay shows it); whiteouts skipped.
    Merge,
}

pub struct Extractor {
    root: OwnedFd,
    /// The last parent directory opened, reused while entries stay in one directory.
    parent: Option<(Vec<u8>, OwnedFd)>,
    /// By path: a directory listed again replaces its metadata.
    dirs: BTreeMap<Vec<u8>, DirMeta>,
    /// What `dirs` holds, roughly, in bytes.
    dir_bytes: usize,
    /// Inside a user namespace with subordinate ids: give files the image's owners.
    keep_owners: bool,
    /// The owner everything we create gets (our ids: no directory is setgid before the
    /// end, when the modes are applied): entries the image gives that owner need no
    /// chown, which spares most of a system image's files a syscall.
    own: (u32, u32),
    mode: Mode,
    pub summary: Summary,
}

fn refuse(name: &[u8], why: &str) -> Error {
    Error::new(format!(
        "cannot extract '{}' from the image: {}",
        printable(name),
        crate::error::plain(why)
    ))
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

/// `parent/name`.
fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    let mut path = parent.to_vec();
    if !path.is_empty() {
        path.push(b'/');
    }
    path.extend_from_slice(name);
    path
}

/// A whiteout hides one name of its directory: `.wh..` and `.wh...` would name the
/// directory itself or its parent (out of the root, at the top), and are refused.
fn hides_a_name(name: &[u8], raw: &[u8]) -> Result<()> {
    match name {
        b"." | b".." => Err(refuse(raw, "a whiteout of '.' or '..'")),
        _ => Ok(()),
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

impl Extractor {
    /// Extracts below `root`, which must be an empty directory.
    pub fn new(root: &Path, keep_owners: bool, mode: Mode) -> Result<Extractor> {
        let root = File::open(root)
            .with_context(|| format!("cannot open {}", root.display()))?
            .into();
        Ok(Extractor {
            root,
            parent: None,
            dirs: BTreeMap::new(),
            dir_bytes: 0,
            keep_owners,
            own: (
                nix::unistd::geteuid().as_raw(),
                nix::unistd::getegid().as_raw(),
            ),
            mode,
            summary: Summary::default(),
        })
    }

    /// The next pass of a merged extraction (its directories opened again: the last
    /// pass may have removed them).
    fn set_mode(&mut self, mode: Mode) {
        self.mode = mode;
        self.parent = None;
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
            let made = match self.mode {
                Mode::Merge => inroot::mkdir_all_replacing(self.root.as_fd(), parent, 0o755),
                _ => inroot::mkdir_all(self.root.as_fd(), parent, 0o755),
            };
            let fd = made
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
    fn attrs_of(&self, header: &Header) -> Attrs {
        let owner = self
            .keep_owners
            .then_some((header.uid as u32, header.gid as u32))
            .filter(|&owner| owner != self.own);
        // Overlay's own attributes (opaque, redirect, origin) come only from whiteouts
        // and markers: an image cannot steer how its layers are stacked.
        let xattrs = header
            .xattrs
            .iter()
            .filter(|(name, _)| {
                !name.starts_with(b"user.overlay.") && !name.starts_with(b"trusted.overlay.")
            })
            .filter_map(|(name, value)| Some((CString::new(name.clone()).ok()?, value.clone())))
            .collect();
        Attrs { owner, xattrs }
    }

    /// Writes one entry of the tar; its data is read from `tar`.
    pub fn entry<R: BufRead>(&mut self, header: &Header, tar: &mut TarReader<R>) -> Result<()> {
        let raw = &header.path;
        let path = clean_path(raw)?;
        let kind = header.kind();
        let (parent, name) = split_parent(&path);
        let whiteout = self.mode != Mode::Flat && name.starts_with(b".wh.");
        match self.mode {
            Mode::Whiteouts if whiteout => return self.remove_lower(parent, &name[4..], raw),
            Mode::Whiteouts => return Ok(()),
            Mode::Layer if whiteout => {
                self.summary.entries += 1;
                return self.whiteout(parent, &name[4..], raw);
            }
            // Applied by the first pass.
            Mode::Merge if whiteout => return Ok(()),
            _ => {}
        }
        let attrs = self.attrs_of(header);
        self.summary.entries += 1;
        if path.is_empty() {
            if kind == Kind::Dir {
                self.remember_dir(path, header.mode, header.mtime, attrs)?;
            }
            return Ok(());
        }
        let item = Item {
            raw,
            path: &path,
            mode: header.mode,
            mtime: header.mtime,
            attrs: &attrs,
        };
        match kind {
            Kind::Dir => {
                self.write_dir(&item)?;
                self.remember_dir(path.clone(), header.mode, header.mtime, attrs.clone())?;
            }
            Kind::File => self.write_file(&item, header, tar)?,
            Kind::Symlink => self.write_symlink(&item, &header.link)?,
            Kind::HardLink => self.write_hard_link(&item, &header.link)?,
            Kind::Fifo => self.write_fifo(&item)?,
            // An unprivileged user cannot create device nodes; /dev is set up at run time.
            Kind::CharDevice | Kind::BlockDevice => self.summary.skipped_devices += 1,
            // GNU volume labels and the like carry no file.
            Kind::Other(_) => self.summary.skipped_other += 1,
        }
        Ok(())
    }

    /// Keeps a directory's metadata for [`Self::finish`]; the same directory listed
    /// again replaces it. Refused past [`DIR_META_BYTES`].
    fn remember_dir(&mut self, path: Vec<u8>, mode: u32, mtime: i64, attrs: Attrs) -> Result<()> {
        let cost = path.len()
            + attrs
                .xattrs
                .iter()
                .map(|(n, v)| n.as_bytes().len() + v.len())
                .sum::<usize>()
            + 64;
        if !self.dirs.contains_key(&path) {
            self.dir_bytes += cost;
            if self.dir_bytes > DIR_META_BYTES {
                return Err(refuse(
                    &path,
                    "the image lists more directory metadata than binctr keeps (over 24 MiB)",
                ));
            }
        }
        self.dirs.insert(path, DirMeta { mode, mtime, attrs });
        Ok(())
    }

    /// Creates `item` with `make`; whatever is in the way (another kind of entry, an
    /// earlier entry of the same name) is replaced.
    fn replace(
        &mut self,
        item: &Item<'_>,
        what: &str,
        make: impl Fn(BorrowedFd<'_>, &CStr) -> io::Result<()>,
    ) -> Result<()> {
        let (parent, name) = split_parent(item.path);
        let name = cstr(name);
        let dir = self.parent_dir(parent, item.raw)?;
        match make(dir, &name) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                inroot::remove_at(dir, &name).and_then(|()| make(dir, &name))
            }
            other => other,
        }
        .map_err(|e| refuse(item.raw, &format!("cannot {what}: {e}")))
    }

    fn write_dir(&mut self, item: &Item<'_>) -> Result<()> {
        let (parent, name) = split_parent(item.path);
        let name = cstr(name);
        let merge = self.mode == Mode::Merge;
        let dir = self.parent_dir(parent, item.raw)?;
        match inroot::mkdir_new_at(dir, &name, 0o700) {
            Ok(()) => Ok(()),
            // Already a directory (or a symlink to one, kept, but not over a lower
            // layer's: merged, the upper directory hides it): only its metadata is due.
            Err(e)
                if e.raw_os_error() == Some(libc::EEXIST)
                    && match merge {
                        true => inroot::is_dir_at(dir, &name),
                        false => self.open_dir(item.path).is_ok(),
                    } =>
            {
                Ok(())
            }
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                // Anything else there is replaced.
                self.replace(item, "create directory", |d, n| {
                    inroot::mkdir_new_at(d, n, 0o700)
                })
            }
            Err(e) => Err(refuse(item.raw, &format!("cannot create directory: {e}"))),
        }
    }

    fn write_file<R: BufRead>(
        &mut self,
        item: &Item<'_>,
        header: &Header,
        tar: &mut TarReader<R>,
    ) -> Result<()> {
        let (parent, name) = split_parent(item.path);
        let name = cstr(name);
        let raw = item.raw;
        let dir = self.parent_dir(parent, raw)?;
        let mut file = match inroot::create_new_file_at(dir, &name, item.mode) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => inroot::remove_at(dir, &name)
                .and_then(|()| inroot::create_new_file_at(dir, &name, item.mode)),
            other => other,
        }
        .map_err(|e| refuse(raw, &format!("cannot create file: {e}")))?;
        let whole = [(0, header.stored)];
        // A sparse file's holes are left unwritten (and take no disk), as tar -S does.
        // Where the file's offset is: a new file's data starts at 0 without a seek (a
        // syscall per file).
        let mut at = 0;
        for &(offset, len) in header.sparse.as_deref().unwrap_or(&whole) {
            if offset != at {
                file.seek(io::SeekFrom::Start(offset))
                    .map_err(|e| refuse(raw, &format!("cannot write: {e}")))?;
            }
            self.copy_data(&mut file, len, raw, tar)?;
            at = offset.saturating_add(len);
        }
        if header.sparse.is_some() {
            file.set_len(header.size)
                .map_err(|e| refuse(raw, &format!("cannot write: {e}")))?;
        }
        let counts = apply_attrs(AttrTarget::File(&file), item.attrs, self.keep_owners);
        // The permission bits came with the create; setuid, setgid and sticky do not
        // survive the write and the chown above, so they are set last.
        if item.mode & 0o7000 != 0 {
            file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(item.mode))
                .map_err(|e| refuse(raw, &format!("cannot set mode: {e}")))?;
        }
        inroot::set_file_mtime(&file, item.mtime)
            .map_err(|e| refuse(raw, &format!("cannot set mtime: {e}")))?;
        self.summary.add(counts);
        Ok(())
    }

    /// Copies `len` stored bytes of the current entry into `file`, straight from the
    /// reader's buffer.
    fn copy_data<R: BufRead>(
        &mut self,
        file: &mut File,
        len: u64,
        raw: &[u8],
        tar: &mut TarReader<R>,
    ) -> Result<()> {
        let mut left = len;
        while left > 0 {
            let ends = |e: String| {
                refuse(
                    raw,
                    &format!(
                        "the payload ends inside it ({} of {len} bytes): the file is damaged{e}",
                        len - left
                    ),
                )
            };
            let data = tar.data().map_err(|e| ends(format!(" ({e})")))?;
            let n = data.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            if n == 0 {
                return Err(ends(String::new()));
            }
            file.write_all(&data[..n])
                .map_err(|e| refuse(raw, &format!("cannot write: {e}")))?;
            tar.consume_data(n);
            left -= n as u64;
        }
        Ok(())
    }

    fn write_symlink(&mut self, item: &Item<'_>, target: &[u8]) -> Result<()> {
        let target = cstr(target);
        self.replace(item, "create symlink", |d, n| {
            inroot::symlink_at(&target, d, n)
        })?;
        let (parent, name) = split_parent(item.path);
        let name = cstr(name);
        let keep_owners = self.keep_owners;
        let dir = self.parent_dir(parent, item.raw)?;
        let counts = apply_attrs(AttrTarget::At(dir, &name), item.attrs, keep_owners);
        inroot::set_mtime_at(dir, &name, item.mtime)
            .map_err(|e| refuse(item.raw, &format!("cannot set mtime: {e}")))?;
        self.summary.add(counts);
        Ok(())
    }

    fn write_hard_link(&mut self, item: &Item<'_>, target: &[u8]) -> Result<()> {
        let target = clean_path(target).map_err(|_| {
            refuse(
                item.raw,
                "its hard link target climbs out of the root with '..'",
            )
        })?;
        let (tparent, tname) = split_parent(&target);
        let from = self
            .open_dir(tparent)
            .map_err(|e| refuse(item.raw, &format!("hard link target missing: {e}")))?;
        let tname = cstr(tname);
        let what = format!("hard link to '{}'", printable(&target));
        self.replace(item, &what, |d, n| {
            inroot::link_at(from.as_fd(), &tname, d, n)
        })
    }

    fn write_fifo(&mut self, item: &Item<'_>) -> Result<()> {
        let mode = item.mode;
        self.replace(item, "create fifo", |d, n| inroot::mkfifo_at(d, n, mode))?;
        let (parent, name) = split_parent(item.path);
        let name = cstr(name);
        let keep_owners = self.keep_owners;
        let dir = self.parent_dir(parent, item.raw)?;
        let counts = apply_attrs(AttrTarget::At(dir, &name), item.attrs, keep_owners);
        self.summary.add(counts);
        Ok(())
    }

    /// A layer's `DIR/.wh.NAME` hides `DIR/NAME` below: a 0/0 character device (which
    /// Linux 5.8+ lets anyone make). `DIR/.wh..wh..opq` hides all of `DIR` below: the
    /// `user.overlay.opaque` xattr on `DIR` (on the layer's root for a top-level one).
    /// Other `.wh..wh.` names are aufs's bookkeeping, ignored.
    fn whiteout(&mut self, parent: &[u8], name: &[u8], raw: &[u8]) -> Result<()> {
        self.summary.whiteouts += 1;
        hides_a_name(name, raw)?;
        if name == b".wh..opq" {
            self.summary.opaque_root |= parent.is_empty();
            let shown = if parent.is_empty() { &b"."[..] } else { parent };
            let dir = match inroot::open_dir_no_symlinks(self.root.as_fd(), shown) {
                Ok(dir) => dir,
                Err(_) => {
                    self.parent_dir(parent, raw)?;
                    inroot::open_dir_no_symlinks(self.root.as_fd(), shown)
                        .map_err(|e| refuse(raw, &format!("cannot open its directory: {e}")))?
                }
            };
            return sys::set_xattr_fd(dir.as_fd(), c"user.overlay.opaque", b"y")
                .map_err(|e| refuse(raw, &format!("cannot mark its directory opaque: {e}")));
        }
        if name.starts_with(b".wh.") || name.is_empty() {
            return Ok(());
        }
        let path = join(parent, name);
        let item = Item {
            raw,
            path: &path,
            mode: 0,
            mtime: 0,
            attrs: &Attrs::default(),
        };
        self.replace(&item, "create whiteout", |d, n| {
            nix::sys::stat::mknodat(
                Some(d.as_raw_fd()),
                n,
                nix::sys::stat::SFlag::S_IFCHR,
                nix::sys::stat::Mode::empty(),
                0,
            )
            .map_err(io::Error::from)
        })
    }

    /// The merged fallback's first pass over a layer: `DIR/.wh.NAME` removes `DIR/NAME`,
    /// `DIR/.wh..wh..opq` everything in `DIR`, of what the layers below put there (the
    /// second pass writes the layer's own entries). `DIR` is opened with no symlink
    /// followed: where the layers below have no such directory (a symlink, a file,
    /// nothing) there is nothing below to hide.
    fn remove_lower(&mut self, parent: &[u8], name: &[u8], raw: &[u8]) -> Result<()> {
        self.summary.whiteouts += 1;
        hides_a_name(name, raw)?;
        let opaque = name == b".wh..opq";
        if name.is_empty() || (name.starts_with(b".wh.") && !opaque) {
            return Ok(());
        }
        let shown = if parent.is_empty() { &b"."[..] } else { parent };
        let Ok(dir) = inroot::open_dir_no_symlinks(self.root.as_fd(), shown) else {
            return Ok(());
        };
        let names = match opaque {
            true => inroot::names_in(&dir),
            false => Ok(vec![cstr(name)]),
        };
        for gone in names.map_err(|e| refuse(raw, &format!("cannot open its directory: {e}")))? {
            match inroot::remove_at(dir.as_fd(), &gone) {
                Err(e) if e.raw_os_error() != Some(libc::ENOENT) => {
                    return Err(refuse(raw, &format!("cannot remove: {e}")))
                }
                _ => {}
            }
        }
        // The metadata kept for directories it removed is left: [`Self::finish`] skips
        // a path that is no longer a directory, and one made again is listed again.
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
        if inroot::mkdir_new_at(dir, &name, 0o700).is_ok() {
            self.remember_dir(path.to_vec(), mode, 0, Attrs::default())?;
        }
        Ok(())
    }

    /// Applies directory modes and mtimes, deepest first: a directory's descendants
    /// have it as a prefix, so they sort after it, and reverse order visits them first.
    pub fn finish(mut self) -> Result<Summary> {
        self.parent = None;
        let dirs = std::mem::take(&mut self.dirs);
        for (path, dir) in dirs.iter().rev() {
            let shown = if path.is_empty() { &b"."[..] } else { path };
            // A directory later replaced by another kind of entry has nothing to apply.
            let Ok(file) = inroot::open_dir_no_symlinks(self.root.as_fd(), shown) else {
                continue;
            };
            let counts = apply_attrs(AttrTarget::File(&file), &dir.attrs, self.keep_owners);
            self.summary.add(counts);
            file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(
                dir.mode | 0o700,
            ))
            .map_err(|e| refuse(path, &format!("cannot set mode: {e}")))?;
            inroot::set_file_mtime(&file, dir.mtime)
                .map_err(|e| refuse(path, &format!("cannot set mtime: {e}")))?;
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

/// Unpacks the lz4-compressed tar `payload` into the empty directory `rootfs`, then adds
/// the mount points the container needs where the image lacks them.
///
/// Ctrl-C, kill and hangup wait, blocked, until the entry being written is complete;
/// then the caller removes the half-made extraction and the stub exits 128+N.
///
/// `layer`: a format 2 layer (its whiteouts become overlay's, and no mount point is
/// added: the image's base layer has them).
pub fn unpack(
    payload: &mut PayloadStream,
    rootfs: &Path,
    keep_owners: bool,
    layer: bool,
) -> Result<Summary> {
    let mode = match layer {
        true => Mode::Layer,
        false => Mode::Flat,
    };
    stop_blocked(|stop| {
        let mut extractor = Extractor::new(rootfs, keep_owners, mode)?;
        unpack_frame(payload, &mut extractor, stop)?;
        complete(extractor, !layer)
    })
}

/// The merged fallback (format 2 where layers cannot be stacked): the layers of `packed`
/// applied, bottom first, in the empty directory `rootfs`, as a runtime applies layers
/// and as `binctr-pack --flatten` flattens them, then the mount points the container
/// needs. Each layer is read twice: its whiteouts and opaque markers first (they apply
/// to the layers below it, wherever they are in its tar), then its entries. Each read
/// is checked against the frame's sha256; the caller renames the directory into place
/// only once all were.
pub fn unpack_merged(packed: &Packed, rootfs: &Path, keep_owners: bool) -> Result<Summary> {
    stop_blocked(|stop| {
        let mut extractor = Extractor::new(rootfs, keep_owners, Mode::Merge)?;
        for (i, layer) in packed.config.layers.iter().enumerate() {
            for &mode in merge_passes(i == 0) {
                extractor.set_mode(mode);
                let mut payload = PayloadStream::layer(packed, layer, i + 1)?;
                unpack_frame(&mut payload, &mut extractor, stop)?;
            }
        }
        complete(extractor, true)
    })
}

/// The passes over a merged layer: its whiteouts, then its entries (the bottom layer's
/// whiteouts hide nothing: nothing is below it).
fn merge_passes(bottom: bool) -> &'static [Mode] {
    match bottom {
        true => &[Mode::Merge],
        false => &[Mode::Whiteouts, Mode::Merge],
    }
}

/// Runs `work` with the stop signals blocked (see [`unpack`]); one that came meanwhile
/// ends it as 128+N.
fn stop_blocked(
    work: impl FnOnce(&nix::sys::signal::SigSet) -> Result<Summary>,
) -> Result<Summary> {
    let stop = crate::signals::forwarded();
    let old_mask = stop.thread_swap_mask(nix::sys::signal::SigmaskHow::SIG_BLOCK);
    let mut result = work(&stop);
    // A stop signal that came after the last check still stops us, as 128+N.
    if let Some(signal) = crate::signals::take_pending(&stop) {
        result = Err(Error::interrupted(
            signal,
            "while extracting the image; the cache is left as it was",
        ));
    }
    // The mask the caller had.
    if let Ok(mask) = old_mask {
        let _ = mask.thread_set_mask();
    }
    result
}

/// One lz4 frame of a tar through `extractor`. The payload's bytes are checked
/// ([`PayloadStream::verify`]: a layer's frame against its sha256, a format 1 payload
/// against the footer's); a damaged payload is called damaged rather than reported as
/// the tar error it caused.
///
/// A child process reads, hashes and decompresses while this one writes the files: on a
/// first run the two take about as long, so the extraction costs the longer of them
/// rather than their sum. The child hands the tar over in memory both share (ring.rs:
/// memory stays constant, no byte is copied through the kernel) and reports success,
/// or why it failed, on a pipe; it ends when this side stops early. A third process
/// writes the extracted files back to disk meanwhile ([`Flusher`]).
fn unpack_frame(
    payload: &mut PayloadStream,
    extractor: &mut Extractor,
    stop: &nix::sys::signal::SigSet,
) -> Result<()> {
    // First: it must hold no end of the pipes below (their ends are how either side
    // sees the other stop).
    let flusher = Flusher::start(extractor.root.as_fd());
    let ring = Ring::new().context("cannot set up the extraction's shared memory")?;
    let (report_read, report_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .context("cannot create a pipe for the extraction")?;
    let decoder = sys::fork().context("cannot fork the decompressing process")?;
    if decoder == 0 {
        drop(report_read);
        let mut ring = ring.writer();
        let mut report = decode::decode(payload, &mut ring);
        // The end of the tar, for the extraction, before the check below.
        drop(ring);
        // Read to its end and checked whatever the decoding did.
        if let Err(e) = payload.verify() {
            report = vec![2];
            report.extend_from_slice(e.msg.as_bytes());
        }
        let _ = File::from(report_write).write_all(&report);
        sys::exit_now(0);
    }
    drop(report_write);
    let mut tar = ring.reader();
    // Files are created with their final permission bits (no chmod per file); the
    // user's umask must not trim them. Only this process extracts, and it restores it.
    let umask = nix::sys::stat::umask(nix::sys::stat::Mode::empty());
    let unpacked = unpack_entries(&mut tar, extractor, stop).and_then(|()| {
        io::copy(&mut tar, &mut io::sink())
            .map(drop)
            .context("cannot read the decompressed payload")
    });
    nix::sys::stat::umask(umask);
    // An early stop closes our ends: the decoder ends when it next waits for a slot.
    drop(tar);
    drop(flusher);
    let mut report = Vec::new();
    let _ = File::from(report_read).read_to_end(&mut report);
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(decoder), None);
    match report.split_first() {
        // A damaged payload, then a damaged frame: the cause of any tar error.
        Some((2, why)) => Err(Error::new(String::from_utf8_lossy(why).into_owned())),
        Some((1, why)) => Err(Error::new(format!(
            "damaged packed file: the payload's lz4 data is broken ({}): download or pack it again",
            printable(why)
        ))),
        Some((0, _)) => unpacked,
        // Killed, or it stopped when we did: our own error says why.
        _ => unpacked.and_then(|()| {
            Err(Error::new(
                "the decompressing process of the extraction ended early",
            ))
        }),
    }
}

/// Writes the extraction back to disk while it goes on: a child process calls syncfs
/// every 100 ms until dropped. The kernel's writeback then runs beside the extraction,
/// on the core the decompression leaves free, instead of all at once in the syncfs that
/// makes the entry durable (which then has little left to do). Best effort: without it
/// (no fork) that last syncfs does it all.
struct Flusher {
    pid: libc::pid_t,
    stop: Option<OwnedFd>,
}

impl Flusher {
    fn start(fs: BorrowedFd<'_>) -> Option<Flusher> {
        let (stop_read, stop_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).ok()?;
        let pid = sys::fork().ok()?;
        if pid == 0 {
            drop(stop_write);
            loop {
                // Until the extraction closes its end (or ends: the same).
                let mut fds = [nix::poll::PollFd::new(
                    stop_read.as_fd(),
                    nix::poll::PollFlags::POLLIN,
                )];
                match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(100u8)) {
                    Ok(0) => {
                        let _ = nix::unistd::syncfs(fs.as_raw_fd());
                    }
                    Err(nix::errno::Errno::EINTR) => {}
                    _ => sys::exit_now(0),
                }
            }
        }
        Some(Flusher {
            pid,
            stop: Some(stop_write),
        })
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        drop(self.stop.take());
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(self.pid), None);
    }
}

/// The mount points (a whole image), then the directories' metadata.
fn complete(mut extractor: Extractor, mount_points: bool) -> Result<Summary> {
    if mount_points {
        add_mount_points(&mut extractor)?;
    }
    if extractor.summary.entries == 0 {
        return Err(Error::new(
            "damaged packed file: the payload holds no files (pack the image again)",
        ));
    }
    extractor.finish()
}

/// Every entry of the payload tar, in order; a pending stop signal ends it between
/// entries.
fn unpack_entries<R: BufRead>(
    decoder: &mut R,
    extractor: &mut Extractor,
    stop: &nix::sys::signal::SigSet,
) -> Result<()> {
    let mut tar = TarReader::new(decoder, Limits::default());
    let mut last = Vec::new();
    for n in 0.. {
        // Checked every few entries: a syscall per entry is measurable on large images.
        if n % 32 == 0 {
            if let Some(signal) = sys::pending_signal(stop) {
                return Err(Error::interrupted(
                    signal,
                    "while extracting the image; the cache is left as it was",
                ));
            }
        }
        let header = tar.next_entry().with_context(|| {
            format!(
                "damaged packed file: the payload tar breaks after '{}'",
                printable(&last)
            )
        })?;
        let Some(header) = header else {
            return Ok(());
        };
        extractor.entry(&header, &mut tar)?;
        last = header.path;
    }
    Ok(())
}

/// The mount points the container needs, for images that lack them.
fn add_mount_points(extractor: &mut Extractor) -> Result<()> {
    for (dir, mode) in [
        (&b"proc"[..], 0o555),
        (b"sys", 0o555),
        (b"dev", 0o755),
        (b"tmp", 0o1777),
        (b"etc", 0o755),
    ] {
        extractor.ensure_dir(dir, mode)?;
    }
    for file in [&b"etc/resolv.conf"[..], b"etc/hosts", b"etc/hostname"] {
        extractor.ensure_file(file)?;
    }
    Ok(())
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

    /// A ustar stream of (name, type flag, file content or link target) entries.
    fn tar(entries: &[(&str, u8, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        for &(name, flag, text) in entries {
            let mut h = [0u8; 512];
            h[..name.len()].copy_from_slice(name.as_bytes());
            let mode: &[u8] = if flag == b'5' { b"0000755" } else { b"0000644" };
            h[100..107].copy_from_slice(mode);
            h[108..115].copy_from_slice(b"0000000");
            h[116..123].copy_from_slice(b"0000000");
            let size = if flag == b'0' { text.len() } else { 0 };
            h[124..135].copy_from_slice(format!("{size:011o}").as_bytes());
            h[136..147].copy_from_slice(b"14000000000");
            h[156] = flag;
            if flag == b'1' || flag == b'2' {
                h[157..157 + text.len()].copy_from_slice(text.as_bytes());
            }
            h[257..263].copy_from_slice(b"ustar\0");
            h[263..265].copy_from_slice(b"00");
            h[148..156].fill(b' ');
            let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
            h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
            out.extend_from_slice(&h);
            if size > 0 {
                out.extend_from_slice(text.as_bytes());
                out.resize(out.len() + (512 - size % 512) % 512, 0);
            }
        }
        out.resize(out.len() + 1024, 0);
        out
    }

    /// Merges `layers` (bottom first) into `root` as [`unpack_merged`] does.
    fn merge(root: &Path, layers: &[Vec<u8>]) -> Result<Summary> {
        let stop = nix::sys::signal::SigSet::empty();
        let mut extractor = Extractor::new(root, false, Mode::Merge)?;
        for (i, layer) in layers.iter().enumerate() {
            for &mode in merge_passes(i == 0) {
                extractor.set_mode(mode);
                unpack_entries(&mut &layer[..], &mut extractor, &stop)?;
            }
        }
        extractor.finish()
    }

    /// A new directory below the temporary directory, with `root/` and `outside/victim`
    /// in it (what a hostile layer must not reach).
    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "binctr-{name}-{}-{}",
            std::process::id(),
            crate::files::random_hex()
        ));
        std::fs::create_dir_all(dir.join("root")).unwrap();
        std::fs::create_dir_all(dir.join("outside")).unwrap();
        std::fs::write(dir.join("outside/victim"), "host\n").unwrap();
        dir
    }

    fn exists(path: &Path) -> bool {
        std::fs::symlink_metadata(path).is_ok()
    }

    #[test]
    fn merged_layers_apply_whiteouts_to_the_layers_below_and_stay_in_the_root() {
        let dir = scratch("merge");
        let outside = dir.join("outside");
        let abs = outside.to_str().unwrap().to_string();
        let rel = format!("../../../../../../../..{abs}");
        let lower = tar(&[
            ("a/", b'5', ""),
            ("a/x", b'0', "x"),
            ("a/y", b'0', "y"),
            ("o/", b'0', ""),
            ("o/", b'5', ""),
            ("o/old", b'0', "old"),
            ("esc", b'2', &abs),
            ("rel", b'2', &rel),
            ("s", b'2', "a"),
        ]);
        let upper = tar(&[
            // The layer's own entry, before its opaque marker: it stays.
            ("o/new", b'0', "new"),
            ("o/", b'5', ""),
            ("o/.wh..wh..opq", b'0', ""),
            ("a/.wh.x", b'0', ""),
            // Through lower symlinks to the host: nothing below to hide.
            ("esc/.wh.victim", b'0', ""),
            ("rel/.wh..wh..opq", b'0', ""),
            // A directory over a lower symlink replaces it.
            ("s/", b'5', ""),
            ("s/f", b'0', "f"),
            ("rel/planted", b'0', "planted"),
            ("h", b'1', "a/y"),
        ]);
        let summary = merge(&dir.join("root"), &[lower, upper]).unwrap();
        assert_eq!(summary.whiteouts, 4);
        let root = dir.join("root");
        assert!(!exists(&root.join("a/x")) && exists(&root.join("a/y")));
        assert!(!exists(&root.join("o/old")) && exists(&root.join("o/new")));
        use std::os::unix::fs::MetadataExt;
        let ino = |p: &str| std::fs::metadata(root.join(p)).unwrap().ino();
        assert_eq!(ino("h"), ino("a/y"), "a link to a lower file");
        for replaced in ["s", "rel"] {
            let meta = std::fs::symlink_metadata(root.join(replaced)).unwrap();
            assert!(meta.is_dir(), "{replaced} is a directory now");
        }
        assert!(exists(&root.join("s/f")) && !exists(&root.join("a/f")));
        assert!(exists(&root.join("rel/planted")));
        assert!(std::fs::symlink_metadata(root.join("esc"))
            .unwrap()
            .is_symlink());
        let left: Vec<_> = std::fs::read_dir(&outside).unwrap().flatten().collect();
        assert_eq!(left.len(), 1, "the host directory is as it was");
        assert_eq!(std::fs::read(outside.join("victim")).unwrap(), b"host\n");
        crate::files::remove_tree(&dir).unwrap();
    }

    #[test]
    fn whiteouts_of_dot_and_dotdot_are_refused_merged_and_stacked() {
        let dir = scratch("dotdot");
        let root = dir.join("root");
        let lower = tar(&[("a/", b'5', ""), ("a/x", b'0', "x")]);
        for name in [".wh...", "a/.wh...", "a/.wh.."] {
            let upper = tar(&[("a/", b'5', ""), (name, b'0', "")]);
            let merged = merge(&root, &[lower.clone(), upper.clone()]);
            assert!(
                merged.is_err_and(|e| e.msg.contains("'..'")),
                "{name} merged"
            );
            let stop = nix::sys::signal::SigSet::empty();
            let layer = dir.join(format!("layer-{}", name.len()));
            std::fs::create_dir(&layer).unwrap();
            let mut extractor = Extractor::new(&layer, false, Mode::Layer).unwrap();
            let stacked = unpack_entries(&mut &upper[..], &mut extractor, &stop);
            assert!(
                stacked.is_err_and(|e| e.msg.contains("'..'")),
                "{name} in a layer"
            );
            assert!(exists(&root.join("a/x")) && exists(&layer.join("a")));
        }
        assert_eq!(
            std::fs::read(dir.join("outside/victim")).unwrap(),
            b"host\n"
        );
        crate::files::remove_tree(&dir).unwrap();
    }
}
