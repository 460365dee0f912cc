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

use super::payload::{Packed, PayloadStream};
use crate::error::{Context, Error, Result};
use crate::files::{check_private, open_dir_nofollow, private_dir, remove_tree};
use crate::log::debug;
use crate::sys;
use crate::userns::{self, Mapping};
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// A cache entry that holds a finished extraction, checked to be the caller's.
pub struct Rootfs {
    /// The cache entry: holds `rootfs/` and `mnt/`.
    pub entry: PathBuf,
    /// `rootfs/`, opened (O_PATH) when it was checked: the container's lower layer is
    /// this very directory, whatever happens to the path afterwards.
    rootfs: OwnedFd,
}

impl Rootfs {
    /// The extracted image, never written after its rename into place: the checked
    /// directory, reached through its descriptor (for reading it from this process).
    pub fn rootfs(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.rootfs.as_raw_fd()))
    }

    /// The extracted image by its path, for a mount in the container's own mount
    /// namespace (a mount cannot take a directory opened in another namespace as its
    /// source): checked to still be the directory that was checked on the host.
    pub fn rootfs_for_mount(&self) -> Result<PathBuf> {
        let path = self.entry.join("rootfs");
        let held =
            nix::sys::stat::fstat(self.rootfs.as_raw_fd()).context("cannot stat the rootfs")?;
        let now = nix::sys::stat::lstat(&path)
            .with_context(|| format!("cannot stat {}", path.display()))?;
        if (held.st_dev, held.st_ino) != (now.st_dev, now.st_ino) {
            return Err(Error::new(format!(
                "{} was replaced while the container started: remove the cache entry and run again",
                path.display()
            )));
        }
        Ok(path)
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
        self.entry.parent().unwrap_or(Path::new(".")).join(".runs")
    }
}

const CACHE_FIX: &str = "set BINCTR_CACHE to a directory of your own";

/// Opens the finished entry `key` and checks, through the descriptors, that nobody but
/// the caller could have made or changed it: the cache root is the caller's (and made
/// 0700 if it is not), the entry and its `rootfs/` are the caller's and closed to
/// writes by others. A warm start trusts
/// nothing else (another user who could create the cache directory, or an entry in it,
/// could otherwise plant a rootfs under the right digest). None: no such entry.
fn open_entry(root: &Path, key: &str) -> Result<Option<Rootfs>> {
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
    let rootfs = match open(&entry_fd, "rootfs") {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot open {}/rootfs", entry.display())),
    };
    let st = nix::sys::stat::fstat(rootfs.as_raw_fd())
        .with_context(|| format!("cannot stat {}/rootfs", entry.display()))?;
    if st.st_uid != nix::unistd::geteuid().as_raw() || st.st_mode & 0o022 != 0 {
        return Err(Error::new(format!(
            "the cache entry {}/rootfs was not made by you, or others may write it: {CACHE_FIX}, or remove the entry",
            entry.display()
        )));
    }
    Ok(Some(Rootfs { entry, rootfs }))
}

/// Where the extracted images live: $BINCTR_CACHE, $XDG_CACHE_HOME/binctr, ~/.cache/binctr.
pub fn cache_root() -> Result<PathBuf> {
    let non_empty = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(dir) = non_empty("BINCTR_CACHE") {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = non_empty("XDG_CACHE_HOME") {
        return Ok(PathBuf::from(dir).join("binctr"));
    }
    if let Some(home) = non_empty("HOME") {
        return Ok(PathBuf::from(home).join(".cache/binctr"));
    }
    Err(Error::new(
        "no cache directory: set HOME, XDG_CACHE_HOME or BINCTR_CACHE",
    ))
}

/// The cache key of this image under `mapping`.
fn key_for(packed: &Packed, mapping: &Mapping) -> String {
    format!(
        "{}{}",
        packed.footer.payload_sha256.hex(),
        mapping.cache_suffix()
    )
}

/// Whether this image is already extracted for `mapping` (one stat).
pub fn is_extracted(packed: &Packed, mapping: &Mapping) -> bool {
    cache_root().is_ok_and(|root| root.join(key_for(packed, mapping)).join("rootfs").is_dir())
}

/// Returns the extracted rootfs of this packed file, extracting it on the first run.
/// With subordinate ids the extraction runs inside a user namespace with that mapping,
/// so files keep the image's owners; such an extraction has its own cache entry.
/// `userns`: a user namespace with `mapping` to extract in (the held one), else one is
/// made for the extraction.
pub fn ensure_rootfs(packed: &Packed, mapping: &Mapping, userns: Option<&File>) -> Result<Rootfs> {
    let root = cache_root()?;
    let key = key_for(packed, mapping);
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
    let result = prepare_entry(packed, &tmp, mapping)
        .and_then(|()| extract(packed, &tmp, mapping, userns))
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
fn make_durable(root: &OwnedFd, tmp: &Path, entry: &Path) -> Result<()> {
    let dir = File::open(format!("/proc/self/fd/{}", root.as_raw_fd()))
        .context("cannot open the cache directory")?;
    nix::unistd::syncfs(dir.as_raw_fd()).context("cannot sync the extracted image to disk")?;
    fs::rename(tmp, entry)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), entry.display()))?;
    nix::unistd::fsync(dir.as_raw_fd()).context("cannot sync the cache directory")
}

/// The cache lock of one key, held (flock) until the returned file is dropped.
fn lock(path: &Path) -> Result<File> {
    let lock = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        // In a private directory; still, never through a link or onto a FIFO.
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .with_context(|| format!("cannot create the cache lock {}", path.display()))?;
    debug!("rootfs: waiting for the cache lock");
    sys::lock_exclusive(lock.as_fd(), true)
        .with_context(|| format!("cannot lock {}", path.display()))?;
    Ok(lock)
}

/// Extracts the payload into `tmp/rootfs`: here, or with subordinate ids in a child
/// inside the namespace (which reports its own errors and cleans up what it made).
fn extract(packed: &Packed, tmp: &Path, mapping: &Mapping, userns: Option<&File>) -> Result<()> {
    if !mapping.is_subid() {
        return extract_here(packed, tmp, false);
    }
    // The child blocks the stop signals itself; blocked here too, a Ctrl-C waits for it
    // (and then acts, once the mask is back).
    let old_mask =
        crate::signals::forwarded().thread_swap_mask(nix::sys::signal::SigmaskHow::SIG_BLOCK);
    let work = || {
        let done = extract_here(packed, tmp, true);
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

fn extract_here(packed: &Packed, tmp: &Path, keep_owners: bool) -> Result<()> {
    let mut payload = PayloadStream::open(packed)?;
    let unpacked = super::extract::unpack(&mut payload, &tmp.join("rootfs"), keep_owners);
    payload.verify()?;
    let summary = unpacked?;
    debug!(
        "rootfs: {} entries; {} device nodes skipped (/dev is provided at run time); {} other entries skipped; {} owners outside the mapping; {} xattrs refused",
        summary.entries,
        summary.skipped_devices,
        summary.skipped_other,
        summary.unmapped_owners,
        summary.refused_xattrs
    );
    Ok(())
}

/// The last use of a cache entry is its lock file's mtime (the entry itself is never
/// written after its rename).
fn touch(lock: &Path) {
    let _ = nix::sys::stat::utimensat(
        None,
        lock,
        &nix::sys::time::TimeSpec::UTIME_OMIT,
        &nix::sys::time::TimeSpec::UTIME_NOW,
        nix::sys::stat::UtimensatFlags::FollowSymlink,
    );
}

/// The entry's skeleton, made by the user: `rootfs/`, `mnt/` and `info` (what the
/// listing shows).
fn prepare_entry(packed: &Packed, tmp: &Path, mapping: &Mapping) -> Result<()> {
    DirBuilder::new()
        .mode(0o700)
        .create(tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    for sub in ["rootfs", "mnt"] {
        fs::create_dir(tmp.join(sub))
            .with_context(|| format!("cannot create {}", tmp.join(sub).display()))?;
    }
    let info = serde_json::json!({
        "name": packed.config.name,
        "reference": packed.config.reference,
        "digest": packed.footer.payload_sha256.to_string(),
        "mapping": mapping.describe(),
    });
    fs::write(tmp.join("info"), info.to_string())
        .with_context(|| format!("cannot write {}", tmp.join("info").display()))
}

/// Extractions of this key that a crashed run left behind (we hold the lock, so no
/// live run owns them).
fn remove_stale_temps(root: &Path, key: &str, mapping: &Mapping, userns: Option<&File>) {
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
