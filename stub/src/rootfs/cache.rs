//! The rootfs cache (docs/STUB.md step 5): one directory per payload digest and mapping.
//!
//! ```text
//! $CACHE/<key>/rootfs        the extracted image, never written after the rename
//! $CACHE/<key>/mnt           an empty directory the container mounts its scratch tmpfs on
//! $CACHE/<key>/info          what --cache-list shows (name, reference, digest, mapping)
//! $CACHE/<key>.lock          flock'd while extracting; its mtime is the last use
//! $CACHE/.tmp-<key>.<pid>    an extraction in progress (or a crashed one)
//! ```
//! `<key>` is the payload's sha256, plus a `-subid-...` suffix for subordinate ids.
//! A warm start is one stat of `<key>/rootfs`: the payload is neither read nor hashed.
//! A layered image whose layers this machine cannot stack (rootfs/stacking.rs) is such
//! an entry too, `<key>-merged-<chain>`: its layers merged into one `rootfs/`.

use super::payload::{Packed, PayloadStream};
use super::stacking::{choose, merged_key, Stacking};
use crate::error::{Context, Error, Result};
use crate::files::{check_private, open_dir_nofollow, private_dir, remove_tree};
use crate::log::debug;
use crate::sys;
use crate::userns::{self, Mapping};
use std::fs::{self, DirBuilder, File};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// A cache entry that holds a finished extraction, checked to be the caller's.
pub struct Rootfs {
    /// The cache entry: `rootfs/` (format 1) or the image's `base/` (format 2), `mnt/`.
    pub entry: PathBuf,
    /// The directories the container stacks as its lower layers, top first: format 1's
    /// `rootfs/`, or the image's layers then its `base/`. Each opened (O_PATH) when it
    /// was checked: the container's lower layers are these very directories, whatever
    /// happens to the paths afterwards.
    lowers: Vec<(PathBuf, OwnedFd)>,
    /// Shared locks on the layers used: `--cache-rm` never removes a layer in use. The
    /// monitor keeps them for the container's life.
    _locks: Vec<File>,
}

impl Rootfs {
    pub(super) fn new(entry: PathBuf, lowers: Vec<(PathBuf, OwnedFd)>, locks: Vec<File>) -> Self {
        Rootfs {
            entry,
            lowers,
            _locks: locks,
        }
    }

    /// The lower layers, top first, reached through their descriptors (for reading
    /// the image from this process).
    pub fn lowers(&self) -> Vec<PathBuf> {
        self.lowers
            .iter()
            .map(|(_, fd)| PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd())))
            .collect()
    }

    /// The lower layers opened again by path, for a mount in the container's own mount
    /// namespace (a mount cannot take a directory opened in another namespace as its
    /// source): each checked to still be the directory that was checked on the host.
    pub fn lowers_for_mount(&self) -> Result<Vec<OwnedFd>> {
        self.lowers
            .iter()
            .map(|(path, held)| {
                let now = open_dir_nofollow(path)
                    .with_context(|| format!("cannot open {}", path.display()))?;
                let a = nix::sys::stat::fstat(held.as_raw_fd()).context("cannot stat the rootfs")?;
                let b = nix::sys::stat::fstat(now.as_raw_fd()).context("cannot stat the rootfs")?;
                if (a.st_dev, a.st_ino) != (b.st_dev, b.st_ino) {
                    return Err(Error::new(format!(
                        "{} was replaced while the container started: remove the cache entry and run again",
                        path.display()
                    )));
                }
                Ok(now)
            })
            .collect()
    }

    /// The one lower layer of a format 1 image (a read-only bind may stand for it).
    pub fn single_lower(&self) -> Option<&Path> {
        match self.lowers.as_slice() {
            [(path, _)] => Some(path),
            _ => None,
        }
    }

    /// An empty directory the container mounts its scratch tmpfs on.
    pub fn scratch(&self) -> PathBuf {
        self.entry.join("mnt")
    }

    /// The cache key: the payload digest, and the mapping's suffix.
    pub fn key(&self) -> String {
        self.entry
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// Where the runs' writable layers live: beside the entries, on their filesystem.
    pub fn runs_dir(&self) -> PathBuf {
        match cache_root() {
            Ok(root) => root.join(".runs"),
            Err(_) => self.entry.parent().unwrap_or(Path::new(".")).join(".runs"),
        }
    }
}

pub(super) const CACHE_FIX: &str = "set BINCTR_CACHE to a directory of your own";

/// Opens the finished entry `key` and checks, through the descriptors, that nobody but
/// the caller could have made or changed it: the cache root is the caller's (and made
/// 0700 if it is not), the entry and its `rootfs/` are the caller's and closed to
/// writes by others. A warm start trusts
/// nothing else (another user who could create the cache directory, or an entry in it,
/// could otherwise plant a rootfs under the right digest). None: no such entry.
fn open_entry(root: &Path, key: &str) -> Result<Option<Rootfs>> {
    Ok(open_checked(root, key, "rootfs")?
        .map(|(entry, dir)| Rootfs::new(entry.clone(), vec![(entry.join("rootfs"), dir)], vec![])))
}

/// [`open_entry`]'s checks for `root/key/sub`: the entry and the opened `sub`.
pub(super) fn open_checked(
    root: &Path,
    key: &str,
    sub: &str,
) -> Result<Option<(PathBuf, OwnedFd)>> {
    let root_fd = match open_dir_nofollow(root) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
        Err(e) => {
            return Err(e).with_context(|| {
                format!(
                    "the cache directory {} cannot be used ({CACHE_FIX})",
                    root.display()
                )
            })
        }
    };
    check_private(&root_fd, root, "cache", CACHE_FIX, true)?;
    let entry = root.join(key);
    let open = |dir: &OwnedFd, name: &str| {
        crate::sys::openat(
            dir.as_fd(),
            &std::ffi::CString::new(name).unwrap_or_default(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
            0,
        )
    };
    let entry_fd = match open(&root_fd, key) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot open the cache entry {}", entry.display()))
        }
    };
    check_private(&entry_fd, &entry, "cache entry", CACHE_FIX, false)?;
    let rootfs = match open(&entry_fd, sub) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot open {}/{sub}", entry.display())),
    };
    let st = nix::sys::stat::fstat(rootfs.as_raw_fd())
        .with_context(|| format!("cannot stat {}/{sub}", entry.display()))?;
    if st.st_uid != nix::unistd::geteuid().as_raw() || st.st_mode & 0o022 != 0 {
        return Err(Error::new(format!(
            "the cache entry {}/{sub} was not made by you, or others may write it: {CACHE_FIX}, or remove the entry",
            entry.display()
        )));
    }
    Ok(Some((entry, rootfs)))
}

/// Where the extracted images live: $BINCTR_CACHE, else $XDG_CACHE_HOME/binctr or
/// ~/.cache/binctr unless that is on a network filesystem (a cluster's NFS or Lustre
/// home: slow, flock unreliable, every node extracting into one place), where a
/// node-local directory is used instead (see [`node_local`]).
pub fn cache_root() -> Result<PathBuf> {
    static ROOT: std::sync::OnceLock<std::result::Result<PathBuf, String>> =
        std::sync::OnceLock::new();
    ROOT.get_or_init(|| choose_cache_root().map_err(|e| e.msg))
        .clone()
        .map_err(Error::new)
}

fn choose_cache_root() -> Result<PathBuf> {
    let non_empty = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(dir) = non_empty("BINCTR_CACHE") {
        return Ok(PathBuf::from(dir));
    }
    let default = match (non_empty("XDG_CACHE_HOME"), non_empty("HOME")) {
        (Some(dir), _) => PathBuf::from(dir).join("binctr"),
        (None, Some(home)) => PathBuf::from(home).join(".cache/binctr"),
        (None, None) => {
            return Err(Error::new(
                "no cache directory: set HOME, XDG_CACHE_HOME or BINCTR_CACHE",
            ))
        }
    };
    let Some(fs) = network_fs(&default) else {
        return Ok(default);
    };
    let local = node_local();
    debug!(
        "cache: {} is on {fs} (a network filesystem): using {} on this node (set BINCTR_CACHE to choose)",
        default.display(),
        local.display()
    );
    Ok(local)
}

/// The node-local cache: `/var/tmp/binctr-UID` (kept across jobs, the same for every
/// task of a node: Slurm sets TMPDIR for some tasks and not others), or
/// `/tmp/binctr-UID` should /var/tmp be remote too; private like any cache root.
fn node_local() -> PathBuf {
    let uid = nix::unistd::getuid();
    match network_fs(Path::new("/var/tmp")) {
        None => PathBuf::from(format!("/var/tmp/binctr-{uid}")),
        Some(_) => PathBuf::from(format!("/tmp/binctr-{uid}")),
    }
}

/// The network filesystem `path` (or its nearest existing parent) is on, by statfs
/// magic, if it is one.
pub fn network_fs(path: &Path) -> Option<&'static str> {
    let st = path
        .ancestors()
        .find_map(|p| nix::sys::statfs::statfs(p).ok())?;
    // The field's type differs between C libraries (glibc i64, musl u64).
    #[allow(clippy::unnecessary_cast)]
    let magic = st.filesystem_type().0 as i64;
    network_name(magic)
}

/// The network filesystem a statfs magic number names (the low 32 bits count: the
/// field is signed on some C libraries).
fn network_name(magic: i64) -> Option<&'static str> {
    const NETWORK: [(i64, &str); 13] = [
        (0x6969, "NFS"),
        (0x0BD0_0BD0, "Lustre"),
        (0x4750_4653, "GPFS"),
        (0x1983_0326, "BeeGFS"),
        (0xFF53_4D42, "CIFS"),
        (0xFE53_4D42, "SMB2"),
        (0x517B, "SMB"),
        (0x00C3_6400, "CephFS"),
        (0x5346_414F, "AFS"),
        (0x0116_1970, "GFS2"),
        (0x7461_636F, "OCFS2"),
        (0xAAD7_AAEA, "PanFS"),
        (0x0102_1997, "9P"),
    ];
    let magic = magic & 0xFFFF_FFFF;
    NETWORK
        .iter()
        .find(|(m, _)| *m == magic)
        .map(|(_, name)| *name)
}

/// The cache key of this image under `mapping`.
pub(super) fn key_for(packed: &Packed, mapping: &Mapping) -> String {
    format!(
        "{}{}",
        packed.footer.payload_sha256.hex(),
        mapping.cache_suffix()
    )
}

/// Whether this image is already extracted for `mapping` (a stat or two).
pub fn is_extracted(packed: &Packed, mapping: &Mapping) -> bool {
    let Ok(root) = cache_root() else {
        return false;
    };
    let key = key_for(packed, mapping);
    if packed.config.layers.is_empty() {
        return root.join(key).join("rootfs").is_dir();
    }
    root.join("images").join(key).join("base").is_dir()
        || merged_key(packed, mapping).is_ok_and(|k| root.join(k).join("rootfs").is_dir())
}

/// Returns the extracted rootfs of this packed file, extracting it on the first run.
/// With subordinate ids the extraction runs inside a user namespace with that mapping,
/// so files keep the image's owners; such an extraction has its own cache entry.
/// `userns`: a user namespace with `mapping` to extract in (the held one), else one is
/// made for the extraction.
pub fn ensure_rootfs(packed: &Packed, mapping: &Mapping, userns: Option<&File>) -> Result<Rootfs> {
    let (key, part) = match packed.config.layers.is_empty() {
        true => (key_for(packed, mapping), Part::Whole),
        false => match choose(packed, mapping)? {
            Stacking::Stacked => return super::layers::ensure_image(packed, mapping, userns),
            Stacking::Merged(why) => {
                debug!("rootfs: layers merged, not stacked: {why}");
                (merged_key(packed, mapping)?, Part::Merged(why))
            }
        },
    };
    let root = cache_root()?;
    if let Some(rootfs) = open_entry(&root, &key)? {
        debug!("rootfs: cached at {}", rootfs.entry.display());
        touch(&root.join(format!("{key}.lock")));
        return Ok(rootfs);
    }
    let root_fd = private_dir(&root, "cache", CACHE_FIX)?;
    let _lock = lock(&root.join(format!("{key}.lock")))?;
    // Another run may have finished the extraction while we waited.
    if let Some(rootfs) = open_entry(&root, &key)? {
        debug!(
            "rootfs: cached at {} (extracted by another run)",
            rootfs.entry.display()
        );
        return Ok(rootfs);
    }
    let entry = root.join(&key);
    remove_stale_temps(&root, &key, mapping, userns);
    let tmp = root.join(format!(".tmp-{key}.{}", std::process::id()));
    debug!(
        "rootfs: extracting into {} ({})",
        tmp.display(),
        mapping.describe()
    );
    let result = prepare_entry(packed, &tmp, mapping, &part)
        .and_then(|()| extract(packed, &part, &tmp, mapping, userns))
        .and_then(|()| make_durable(&root_fd, &tmp, &entry));
    if result.is_err() && !mapping.is_subid() {
        let _ = remove_tree(&tmp);
    }
    result?;
    open_entry(&root, &key)?
        .ok_or_else(|| Error::new(format!("{} vanished after its extraction", entry.display())))
}

/// The extraction reaches the disk before it becomes visible: syncfs of the cache's
/// filesystem, the rename, then an fsync of the cache directory for the rename itself.
/// A power loss never leaves a renamed but incomplete entry.
pub(super) fn make_durable(root: &OwnedFd, tmp: &Path, entry: &Path) -> Result<()> {
    let dir = File::open(format!("/proc/self/fd/{}", root.as_raw_fd()))
        .context("cannot open the cache directory")?;
    nix::unistd::syncfs(dir.as_raw_fd()).context("cannot sync the extracted image to disk")?;
    fs::rename(tmp, entry)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), entry.display()))?;
    nix::unistd::fsync(dir.as_raw_fd()).context("cannot sync the cache directory")
}

/// The cache lock of one key, held (flock) until the returned file is dropped.
fn lock(path: &Path) -> Result<File> {
    let lock = crate::files::open_lock(path)
        .with_context(|| format!("cannot create the cache lock {}", path.display()))?;
    debug!("rootfs: waiting for the cache lock");
    sys::lock_exclusive(lock.as_fd(), true)
        .with_context(|| format!("cannot lock {}", path.display()))?;
    Ok(lock)
}

/// What an extraction makes of the payload.
pub(super) enum Part {
    /// Format 1: the payload, into `rootfs/`.
    Whole,
    /// Format 2: one layer, into `root/` (the layer store).
    Layer(usize),
    /// Format 2, layers not stacked: all its layers merged into `rootfs/`; why.
    Merged(String),
}

/// Extracts what `part` says into `tmp`: here, or with subordinate ids in a child inside
/// the namespace (which reports its own errors and cleans up what it made).
pub(super) fn extract(
    packed: &Packed,
    part: &Part,
    tmp: &Path,
    mapping: &Mapping,
    userns: Option<&File>,
) -> Result<()> {
    if !mapping.is_subid() {
        return extract_here(packed, part, tmp, false);
    }
    // The child blocks the stop signals itself; blocked here too, a Ctrl-C waits for it
    // (and then acts, once the mask is back).
    let old_mask =
        crate::signals::forwarded().thread_swap_mask(nix::sys::signal::SigmaskHow::SIG_BLOCK);
    let work = || {
        let done = extract_here(packed, part, tmp, true);
        if done.is_err() {
            let _ = remove_tree(tmp);
        }
        done
    };
    let done = match userns {
        Some(ns) => userns::run_joined(ns, work),
        None => userns::run_inside(mapping, work),
    };
    // A stop signal sent to us alone (kill, not the terminal) waited for the child.
    let done = match crate::signals::take_pending(&crate::signals::forwarded()) {
        Some(signal) if done.is_ok() => Err(Error::interrupted(
            signal,
            "while extracting the image; the cache is left as it was",
        )),
        Some(signal) => Err(Error::reported(128 + signal)),
        None => done,
    };
    if let Ok(mask) = old_mask {
        let _ = mask.thread_set_mask();
    }
    done
}

fn extract_here(packed: &Packed, part: &Part, tmp: &Path, keep_owners: bool) -> Result<()> {
    let (mut payload, dir) = match *part {
        Part::Whole => (PayloadStream::open(packed)?, "rootfs"),
        Part::Layer(i) => (
            PayloadStream::layer(packed, &packed.config.layers[i], i + 1)?,
            "root",
        ),
        Part::Merged(_) => {
            let summary = super::extract::unpack_merged(packed, &tmp.join("rootfs"), keep_owners)?;
            report(&summary);
            return Ok(());
        }
    };
    let layer = matches!(part, Part::Layer(_));
    let summary = super::extract::unpack(&mut payload, &tmp.join(dir), keep_owners, layer)?;
    // Overlay ignores the opaque xattr on a lower layer's root: the stack leaves out the
    // layers below such a layer instead (rootfs/layers.rs).
    if summary.opaque_root {
        crate::files::create_new_file(&tmp.join(super::layers::OPAQUE_ROOT), b"")
            .with_context(|| format!("cannot write {}", tmp.display()))?;
    }
    report(&summary);
    Ok(())
}

/// What an extraction did, for -D.
fn report(summary: &super::extract::Summary) {
    debug!(
        "rootfs: {} entries; {} whiteouts; {} device nodes skipped (/dev is provided at run time); {} other entries skipped; {} owners outside the mapping; {} xattrs refused",
        summary.entries,
        summary.whiteouts,
        summary.skipped_devices,
        summary.skipped_other,
        summary.unmapped_owners,
        summary.refused_xattrs
    );
}

/// The last use of a cache entry is its lock file's mtime (the entry itself is never
/// written after its rename).
pub(super) fn touch(lock: &Path) {
    let _ = nix::sys::stat::utimensat(
        None,
        lock,
        &nix::sys::time::TimeSpec::UTIME_OMIT,
        &nix::sys::time::TimeSpec::UTIME_NOW,
        nix::sys::stat::UtimensatFlags::FollowSymlink,
    );
}

/// The entry's skeleton, made by the user: `rootfs/`, `mnt/` and `info` (what the
/// listing shows; for merged layers, how many and why they are not stacked).
fn prepare_entry(packed: &Packed, tmp: &Path, mapping: &Mapping, part: &Part) -> Result<()> {
    DirBuilder::new()
        .mode(0o700)
        .create(tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    for sub in ["rootfs", "mnt"] {
        fs::create_dir(tmp.join(sub))
            .with_context(|| format!("cannot create {}", tmp.join(sub).display()))?;
    }
    let mut info = serde_json::json!({
        "name": packed.config.name,
        "reference": packed.config.reference,
        "digest": packed.footer.payload_sha256.to_string(),
        "mapping": mapping.describe(),
    });
    if let Part::Merged(why) = part {
        info["layers"] = packed.config.layers.len().into();
        info["merged"] = why.as_str().into();
    }
    crate::files::create_new_file(&tmp.join("info"), info.to_string().as_bytes())
        .with_context(|| format!("cannot write {}", tmp.join("info").display()))
}

/// Extractions of this key that a crashed run left behind (we hold the lock, so no
/// live run owns them).
pub(super) fn remove_stale_temps(root: &Path, key: &str, mapping: &Mapping, userns: Option<&File>) {
    let prefix = format!(".tmp-{key}.");
    let stale: Vec<PathBuf> = stale_temps(root)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
        })
        .collect();
    if stale.is_empty() {
        return;
    }
    let remove = || {
        for path in &stale {
            debug!("rootfs: removing a stale {}", path.display());
            let _ = remove_tree(path);
        }
        Ok(())
    };
    // Files with subordinate owners can only be removed where those ids exist.
    let _ = match (mapping.is_subid(), userns) {
        (false, _) => remove(),
        (true, Some(ns)) => userns::run_joined(ns, remove),
        (true, None) => userns::run_inside(mapping, remove),
    };
}

/// The finished entries of the cache (named by a digest), sorted.
pub(super) fn entries(root: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(root)
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    n.len() >= 64
                        && n[..64].bytes().all(|b| b.is_ascii_hexdigit())
                        && e.path().is_dir()
                })
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Extractions in progress or left by a crash.
pub(super) fn stale_temps(root: &Path) -> Vec<PathBuf> {
    fs::read_dir(root)
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp-"))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_filesystems_by_magic() {
        assert_eq!(network_name(0x6969), Some("NFS"));
        assert_eq!(network_name(0x0BD0_0BD0), Some("Lustre"));
        // CIFS's magic as a signed 64-bit field holds (sign-extended on some libcs).
        assert_eq!(network_name(0xFF53_4D42_u32 as i32 as i64), Some("CIFS"));
        assert_eq!(network_name(0xEF53), None, "ext4");
        assert_eq!(network_name(0x0102_1994), None, "tmpfs");
        assert_eq!(network_name(0x5846_5342), None, "xfs");
        // procfs, and a path below a missing directory (its nearest parent counts).
        assert_eq!(network_fs(Path::new("/proc")), None);
        assert_eq!(network_fs(Path::new("/proc/binctr-no-such-dir/x")), None);
    }
}
