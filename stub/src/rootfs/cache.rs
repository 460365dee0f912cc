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
use crate::files::{private_dir, remove_tree};
use crate::log::debug;
use crate::sys;
use crate::userns::{self, Mapping};
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// A cache entry that holds a finished extraction.
pub struct Rootfs {
    /// The cache entry: holds `rootfs/` and `mnt/`.
    pub entry: PathBuf,
}

impl Rootfs {
    /// The extracted image, never written after its rename into place.
    pub fn rootfs(&self) -> PathBuf {
        self.entry.join("rootfs")
    }
    /// An empty directory the container mounts its scratch tmpfs on.
    pub fn scratch(&self) -> PathBuf {
        self.entry.join("mnt")
    }
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
    cache_root().is_ok_and(|root| {
        Rootfs {
            entry: root.join(key_for(packed, mapping)),
        }
        .rootfs()
        .is_dir()
    })
}

/// Returns the extracted rootfs of this packed file, extracting it on the first run.
/// With subordinate ids the extraction runs inside a user namespace with that mapping,
/// so files keep the image's owners; such an extraction has its own cache entry.
pub fn ensure_rootfs(packed: &Packed, mapping: &Mapping) -> Result<Rootfs> {
    let root = cache_root()?;
    let key = key_for(packed, mapping);
    let rootfs = Rootfs {
        entry: root.join(&key),
    };
    if rootfs.rootfs().is_dir() {
        debug!("rootfs: cached at {}", rootfs.entry.display());
        touch(&root.join(format!("{key}.lock")));
        return Ok(rootfs);
    }
    private_dir(
        &root,
        "cache",
        "set BINCTR_CACHE to a directory of your own",
    )?;
    let _lock = lock(&root.join(format!("{key}.lock")))?;
    // Another run may have finished the extraction while we waited.
    if rootfs.rootfs().is_dir() {
        debug!(
            "rootfs: cached at {} (extracted by another run)",
            rootfs.entry.display()
        );
        return Ok(rootfs);
    }
    remove_stale_temps(&root, &key, mapping);
    let tmp = root.join(format!(".tmp-{key}.{}", std::process::id()));
    debug!(
        "rootfs: extracting into {} ({})",
        tmp.display(),
        mapping.describe()
    );
    let result = prepare_entry(packed, &tmp, mapping)
        .and_then(|()| extract(packed, &tmp, mapping))
        .and_then(|()| {
            fs::rename(&tmp, &rootfs.entry).with_context(|| {
                format!(
                    "cannot rename {} to {}",
                    tmp.display(),
                    rootfs.entry.display()
                )
            })
        });
    if result.is_err() && !mapping.is_subid() {
        let _ = remove_tree(&tmp);
    }
    result?;
    Ok(rootfs)
}

/// The cache lock of one key, held (flock) until the returned file is dropped.
fn lock(path: &Path) -> Result<File> {
    let lock = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create the cache lock {}", path.display()))?;
    debug!("rootfs: waiting for the cache lock");
    sys::lock_exclusive(lock.as_fd(), true)
        .with_context(|| format!("cannot lock {}", path.display()))?;
    Ok(lock)
}

/// Extracts the payload into `tmp/rootfs`: here, or with subordinate ids in a child
/// inside the namespace (which reports its own errors and cleans up what it made).
fn extract(packed: &Packed, tmp: &Path, mapping: &Mapping) -> Result<()> {
    if !mapping.is_subid() {
        return extract_here(packed, tmp, false);
    }
    // The child blocks the stop signals itself; blocked here too, a Ctrl-C waits for it.
    let _ = crate::signals::forwarded().thread_block();
    userns::run_inside(mapping, || {
        let done = extract_here(packed, tmp, true);
        if done.is_err() {
            let _ = remove_tree(tmp);
        }
        done
    })
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
fn remove_stale_temps(root: &Path, key: &str, mapping: &Mapping) {
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
    let _ = if mapping.is_subid() {
        userns::run_inside(mapping, remove)
    } else {
        remove()
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
