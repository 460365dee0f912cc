//! Unpacks the payload tar into a directory without ever writing outside it.
//!
//! Every parent directory is opened with openat2(RESOLVE_IN_ROOT) below the target, so a
//! symlink in the image (absolute or relative) resolves inside the rootfs, as the
//! container itself will see it; the last component is created with *at() calls that do
//! not follow symlinks. `..` components are refused. This runs outside any namespace,
//! with the user's full rights, so it must hold against a hostile tar.

use super::inroot::{self, split_parent};
use crate::error::{Context, Error, Result};
use crate::log::printable;
use crate::sys;
use binctr_format::tar_reader::{Header, Kind, Limits, TarReader};
use binctr_format::{HashingReader, Sha256Digest};
use std::collections::BTreeMap;
use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{self, Read, Seek, Write};
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

pub struct Extractor {
    root: OwnedFd,
    /// The last parent directory opened, reused while entries stay in one directory.
    parent: Option<(Vec<u8>, OwnedFd)>,
    /// By path: a directory listed again replaces its metadata.
    dirs: BTreeMap<Vec<u8>, DirMeta>,
    /// What `dirs` holds, roughly, in bytes.
    dir_bytes: usize,
    buf: Vec<u8>,
    /// Inside a user namespace with subordinate ids: give files the image's owners.
    keep_owners: bool,
    /// A layer of a format 2 payload: `.wh.` entries become overlay's whiteouts.
    layer: bool,
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
    pub fn new(root: &Path, keep_owners: bool, layer: bool) -> Result<Extractor> {
        let root = File::open(root)
            .with_context(|| format!("cannot open {}", root.display()))?
            .into();
        Ok(Extractor {
            root,
            parent: None,
            dirs: BTreeMap::new(),
            dir_bytes: 0,
            buf: vec![0u8; 256 * 1024],
            keep_owners,
            layer,
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
    fn attrs_of(&self, header: &Header) -> Attrs {
        let owner = self
            .keep_owners
            .then_some((header.uid as u32, header.gid as u32));
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
    pub fn entry<R: Read>(&mut self, header: &Header, tar: &mut TarReader<R>) -> Result<()> {
        let raw = &header.path;
        let path = clean_path(raw)?;
        let kind = header.kind();
        let attrs = self.attrs_of(header);
        self.summary.entries += 1;
        let (parent, name) = split_parent(&path);
        if self.layer && name.starts_with(b".wh.") {
            return self.whiteout(parent, &name[4..], raw);
        }
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
        let dir = self.parent_dir(parent, item.raw)?;
        match inroot::mkdir_new_at(dir, &name, 0o700) {
            Ok(()) => Ok(()),
            // Already a directory (or a symlink to one, kept): only its metadata is due.
            Err(e)
                if e.raw_os_error() == Some(libc::EEXIST) && self.open_dir(item.path).is_ok() =>
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

    fn write_file<R: Read>(
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
        for &(offset, len) in header.sparse.as_deref().unwrap_or(&whole) {
            file.seek(io::SeekFrom::Start(offset))
                .map_err(|e| refuse(raw, &format!("cannot write: {e}")))?;
            self.copy_data(&mut file, len, raw, tar)?;
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

    /// Copies `len` stored bytes of the current entry into `file`.
    fn copy_data<R: Read>(
        &mut self,
        file: &mut File,
        len: u64,
        raw: &[u8],
        tar: &mut TarReader<R>,
    ) -> Result<()> {
        let mut left = len;
        while left > 0 {
            let want = left.min(self.buf.len() as u64) as usize;
            let n = match tar.read_data(&mut self.buf[..want]) {
                Ok(0) => 0,
                Ok(n) => n,
                Err(e) => {
                    return Err(refuse(
                        raw,
                        &format!(
                        "the payload ends inside it ({} of {len} bytes): the file is damaged ({e})",
                        len - left
                    ),
                    ))
                }
            };
            if n == 0 {
                return Err(refuse(
                    raw,
                    &format!(
                        "the payload ends inside it ({} of {len} bytes): the file is damaged",
                        len - left
                    ),
                ));
            }
            file.write_all(&self.buf[..n])
                .map_err(|e| refuse(raw, &format!("cannot write: {e}")))?;
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
        let mut path = parent.to_vec();
        if !path.is_empty() {
            path.push(b'/');
        }
        path.extend_from_slice(name);
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
/// `layer`: the digest a format 2 layer's tar must have; its whiteouts become
/// overlay's, and no mount point is added (the image's base layer has them).
pub fn unpack<R: Read>(
    payload: &mut R,
    rootfs: &Path,
    keep_owners: bool,
    layer: Option<Sha256Digest>,
) -> Result<Summary> {
    let stop = crate::signals::forwarded();
    let old_mask = stop.thread_swap_mask(nix::sys::signal::SigmaskHow::SIG_BLOCK);
    let mut result = unpack_blocked(payload, rootfs, keep_owners, layer, &stop);
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

fn unpack_blocked<R: Read>(
    payload: &mut R,
    rootfs: &Path,
    keep_owners: bool,
    layer: Option<Sha256Digest>,
    stop: &nix::sys::signal::SigSet,
) -> Result<Summary> {
    let mut decoder = HashingReader::new(lz4_flex::frame::FrameDecoder::new(payload));
    let mut extractor = Extractor::new(rootfs, keep_owners, layer.is_some())?;
    // Files are created with their final permission bits (no chmod per file); the
    // user's umask must not trim them. Only this process extracts, and it restores it.
    let umask = nix::sys::stat::umask(nix::sys::stat::Mode::empty());
    let result = unpack_entries(&mut decoder, &mut extractor, stop);
    nix::sys::stat::umask(umask);
    result?;
    if layer.is_none() {
        add_mount_points(&mut extractor)?;
    }
    if extractor.summary.entries == 0 {
        return Err(Error::new(
            "damaged packed file: the payload holds no files (pack the image again)",
        ));
    }
    // Read the frame to its end: this checks lz4's content checksum.
    io::copy(&mut decoder, &mut io::sink()).context("payload lz4 frame")?;
    if let Some(expected) = layer {
        // Stored under its digest only if it is that very layer: a packed file cannot
        // plant other content under another image's layer.
        if decoder.digest() != expected {
            return Err(Error::new(
                "damaged packed file: a layer's tar does not match its digest (download or pack it again)",
            ));
        }
    }
    extractor.finish()
}

/// Every entry of the payload tar, in order; a pending stop signal ends it between
/// entries.
fn unpack_entries<R: Read>(
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
}
