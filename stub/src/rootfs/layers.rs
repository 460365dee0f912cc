//! The layer store (format 2, issue 16): each layer extracted once per mapping and
//! shared by every image that has it; an image is a record of its layers.
//!
//! ```text
//! $CACHE/layers/<sha256><suffix>/root    a layer's tree, whiteouts made overlay's
//! $CACHE/layers/<sha256><suffix>.lock    flock'd: exclusive to extract or remove it,
//!                                        shared by every container that uses it
//! $CACHE/layers/.tmp-<key>.<pid>         an extraction in progress (or a crashed one)
//! $CACHE/images/<payload><suffix>/image.json   the image: its layer keys, bottom first
//! $CACHE/images/<payload><suffix>/base   the mount points the container needs, lowest
//! $CACHE/images/<payload><suffix>/mnt    where the container mounts its scratch tmpfs
//! ```
//! A layer is made as a format 1 entry is (docs/STUB.md step 5): lock, temporary
//! directory, in-root extraction under the mapping, its frame's sha256 checked, syncfs,
//! rename, fsync. The image's entry is renamed into place once all its layers exist; its
//! mtime is its last use.
//!
//! A layer is keyed by the sha256 of its compressed frame, the bytes a run reads and
//! checks, not by its tar's digest: a packed file cannot plant other content under a
//! key, since what is stored under a key is what hashes to it, and a first run hashes
//! half as many bytes (hashing the tar took a sixth of a first run's CPU). Images packed
//! from the same layer share it: the packer compresses a tar the same way every time.

use super::cache::{
    cache_root, extract, key_for, make_durable, open_checked, remove_stale_temps, Part, Rootfs,
    CACHE_FIX,
};
use super::payload::Packed;
use crate::error::{Context, Error, Result};
use crate::files::{private_dir, remove_tree};
use crate::log::debug;
use crate::sys;
use crate::userns::Mapping;
use std::fs::{self, File};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The mount points the container needs, in the image's `base/` below its layers: they
/// show only where no layer has them (format 1 adds them to the rootfs itself).
const MOUNT_POINTS: [(&str, u32); 5] = [
    ("proc", 0o555),
    ("sys", 0o555),
    ("dev", 0o755),
    ("tmp", 0o1777),
    ("etc", 0o755),
];
const ETC_FILES: [&str; 3] = ["etc/resolv.conf", "etc/hosts", "etc/hostname"];

/// Beside a layer's `root/`: its root is opaque (`.wh..wh..opq` at the top), so it hides
/// every layer below it. Overlay ignores the opaque xattr on a lower layer's root, so
/// those layers are left out of the stack.
pub(super) const OPAQUE_ROOT: &str = "opaque-root";

/// The key of layer `i` under `mapping`: its frame's sha256 and the mapping's suffix.
fn layer_key(packed: &Packed, i: usize, mapping: &Mapping) -> Result<String> {
    let sha = packed.config.layers[i]
        .segment_sha256()
        .ok_or_else(|| Error::new("damaged packed file: a layer has a malformed sha256"))?;
    Ok(format!("{}{}", sha.hex(), mapping.cache_suffix()))
}

/// The extracted layers of this packed file, extracting those the cache lacks, held
/// (shared locks) until the returned rootfs is dropped, and the image's entry.
pub fn ensure_image(packed: &Packed, mapping: &Mapping, userns: Option<&File>) -> Result<Rootfs> {
    let root = cache_root()?;
    private_dir(&root, "cache", CACHE_FIX)?;
    let store = root.join("layers");
    let store_fd = private_dir(&store, "cache", CACHE_FIX)?;
    let count = packed.config.layers.len();
    let mut lowers = Vec::with_capacity(count + 1);
    let mut locks = Vec::with_capacity(count);
    let mut keys = Vec::with_capacity(count);
    let mut extracted = 0;
    for i in 0..count {
        let key = layer_key(packed, i, mapping)?;
        let (dir, lock, made) = ensure_layer(packed, i, &key, &store, &store_fd, mapping, userns)?;
        extracted += usize::from(made);
        lowers.push((store.join(&key).join("root"), dir));
        locks.push(lock);
        keys.push(key);
    }
    debug!("rootfs: {count} layers, {extracted} extracted now, the others cached");
    let (entry, base) = ensure_entry(packed, mapping, &root, &keys, extracted > 0)?;
    // Top first, down to the first layer whose root is opaque. A layer listed twice is
    // stacked once, at its top place (overlay refuses a directory twice, and the top
    // copy shows all of it).
    let mut stack = Vec::with_capacity(count + 1);
    let mut seen: Vec<&str> = Vec::with_capacity(count);
    for (n, (key, lower)) in keys.iter().zip(lowers).enumerate().rev() {
        if seen.contains(&key.as_str()) {
            continue;
        }
        seen.push(key);
        stack.push(lower);
        if n > 0 && store.join(key).join(OPAQUE_ROOT).exists() {
            debug!(
                "rootfs: layer {} of {count} hides everything below it",
                n + 1
            );
            break;
        }
    }
    let mut lowers = stack;
    lowers.push((entry.join("base"), base));
    // The entry's mtime is the image's last use (it is never written after its rename).
    let _ = nix::sys::stat::utimensat(
        None,
        &entry,
        &nix::sys::time::TimeSpec::UTIME_OMIT,
        &nix::sys::time::TimeSpec::UTIME_NOW,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    );
    Ok(Rootfs::new(entry, lowers, locks))
}

/// Layer `i`, opened and checked, with its lock held shared; extracted first when the
/// store lacks it (then `true`). A removal (`--cache-rm`, which locks it exclusive
/// without waiting) can come between our locks, so the entry is looked at again under
/// the shared lock each time.
fn ensure_layer(
    packed: &Packed,
    i: usize,
    key: &str,
    store: &Path,
    store_fd: &OwnedFd,
    mapping: &Mapping,
    userns: Option<&File>,
) -> Result<(OwnedFd, File, bool)> {
    let lock_path = store.join(format!("{key}.lock"));
    let mut made = false;
    for _ in 0..4 {
        let lock = held_lock(&lock_path, libc::LOCK_SH)?;
        if let Some((_, dir)) = open_checked(store, key, "root")? {
            return Ok((dir, lock, made));
        }
        // Extractions of one layer take turns on a lock of their own, never held for a
        // container's life: waiting for the use lock exclusive, a run that came while
        // another extracted the layer waited until that run's container ended (found
        // as four ranks of one srun step running one after another).
        let _extracting = held_lock(&extract_lock_path(store, key), libc::LOCK_EX)?;
        if open_checked(store, key, "root")?.is_some() {
            continue;
        }
        // Our shared lock keeps a removal out while we extract (it never waits).
        remove_stale_temps(store, key, mapping, userns);
        let tmp = store.join(format!(".tmp-{key}.{}", std::process::id()));
        debug!(
            "rootfs: extracting layer {} of {} into {} ({})",
            i + 1,
            packed.config.layers.len(),
            tmp.display(),
            mapping.describe()
        );
        let result = fs::DirBuilder::new()
            .mode(0o700)
            .create(&tmp)
            .and_then(|()| fs::create_dir(tmp.join("root")))
            .with_context(|| format!("cannot create {}", tmp.display()))
            .and_then(|()| extract(packed, &Part::Layer(i), &tmp, mapping, userns))
            .and_then(|()| make_durable(store_fd, &tmp, &store.join(key)));
        if result.is_err() && !mapping.is_subid() {
            let _ = remove_tree(&tmp);
        }
        result?;
        made = true;
        if let Some((_, dir)) = open_checked(store, key, "root")? {
            return Ok((dir, lock, made));
        }
    }
    Err(Error::new(format!(
        "the cached layer {} keeps being removed while it is extracted: run again",
        store.join(key).display()
    )))
}

/// The lock that extractions of layer `key` take turns on (beside its use lock).
pub(super) fn extract_lock_path(store: &Path, key: &str) -> PathBuf {
    store.join(format!("{key}.extract.lock"))
}

/// The lock file at `path`, locked with `op` (waiting), and still the file at `path`: a
/// removal unlinks it under an exclusive lock, and a lock on an unlinked file guards
/// nothing.
pub(super) fn held_lock(path: &Path, op: libc::c_int) -> Result<File> {
    loop {
        let lock = crate::files::open_lock(path)
            .with_context(|| format!("cannot create the cache lock {}", path.display()))?;
        if sys::flock(lock.as_fd(), op, false).is_err() {
            debug!("rootfs: waiting for the cache lock {}", path.display());
            sys::flock(lock.as_fd(), op, true)
                .with_context(|| format!("cannot lock {}", path.display()))?;
        }
        let held = nix::sys::stat::fstat(lock.as_raw_fd());
        let now = nix::sys::stat::lstat(path);
        if let (Ok(a), Ok(b)) = (held, now) {
            if (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino) {
                return Ok(lock);
            }
        }
    }
}

/// The image's entry (its record, `base/` and `mnt/`), made once all its layers exist.
/// `extracted`: a layer was extracted now, so an entry found may be older than it and
/// name other layers (made by a stub that keyed layers otherwise, or whose layer was
/// removed by hand): its record is made to name these, or pruning would remove them.
fn ensure_entry(
    packed: &Packed,
    mapping: &Mapping,
    root: &Path,
    keys: &[String],
    extracted: bool,
) -> Result<(PathBuf, OwnedFd)> {
    let images = root.join("images");
    let key = key_for(packed, mapping);
    if let Some(found) = open_checked(&images, &key, "base")? {
        if extracted {
            refresh_record(packed, mapping, &found.0, keys)?;
        }
        return Ok(found);
    }
    let images_fd = private_dir(&images, "cache", CACHE_FIX)?;
    let _lock = held_lock(&images.join(format!("{key}.lock")), libc::LOCK_EX)?;
    if let Some(found) = open_checked(&images, &key, "base")? {
        return Ok(found);
    }
    let tmp = images.join(format!(".tmp-{key}.{}", std::process::id()));
    let _ = remove_tree(&tmp);
    let result = make_entry(packed, mapping, &tmp, keys)
        .and_then(|()| make_durable(&images_fd, &tmp, &images.join(&key)));
    if result.is_err() {
        let _ = remove_tree(&tmp);
    }
    result?;
    open_checked(&images, &key, "base")?.ok_or_else(|| {
        Error::new(format!(
            "{} vanished after it was made",
            images.join(&key).display()
        ))
    })
}

/// Rewrites the record of the entry at `entry` when it names other layers than `keys`.
fn refresh_record(packed: &Packed, mapping: &Mapping, entry: &Path, keys: &[String]) -> Result<()> {
    let path = entry.join("image.json");
    let mut text = Vec::new();
    let named: Option<Vec<String>> = File::open(&path)
        .and_then(|f| std::io::Read::read_to_end(&mut std::io::Read::take(f, 1 << 20), &mut text))
        .ok()
        .and_then(|_| serde_json::from_slice::<serde_json::Value>(&text).ok())
        .and_then(|record| serde_json::from_value(record["layers"].clone()).ok());
    if named.as_deref() == Some(keys) {
        return Ok(());
    }
    debug!("rootfs: {} now names this run's layers", path.display());
    crate::files::write_atomically(&path, record(packed, mapping, keys).as_bytes())
}

/// An image's record: what `--cache-list` shows, and the layers `--cache-prune` keeps.
fn record(packed: &Packed, mapping: &Mapping, keys: &[String]) -> String {
    serde_json::json!({
        "name": packed.config.name,
        "reference": packed.config.reference,
        "digest": packed.footer.payload_sha256.to_string(),
        "mapping": mapping.describe(),
        "layers": keys,
    })
    .to_string()
}

fn make_entry(packed: &Packed, mapping: &Mapping, tmp: &Path, keys: &[String]) -> Result<()> {
    let mkdir = |path: &Path, mode: u32| {
        fs::DirBuilder::new()
            .mode(mode)
            .create(path)
            .and_then(|()| fs::set_permissions(path, fs::Permissions::from_mode(mode)))
            .with_context(|| format!("cannot create {}", path.display()))
    };
    mkdir(tmp, 0o700)?;
    mkdir(&tmp.join("mnt"), 0o755)?;
    let base = tmp.join("base");
    mkdir(&base, 0o755)?;
    for (dir, mode) in MOUNT_POINTS {
        mkdir(&base.join(dir), mode)?;
    }
    for file in ETC_FILES {
        let path = base.join(file);
        crate::files::create_new_file(&path, b"")
            .with_context(|| format!("cannot create {}", path.display()))?;
    }
    // As format 1 leaves the mount points it adds: mtime 0.
    for (dir, _) in MOUNT_POINTS {
        let _ = nix::sys::stat::utimensat(
            None,
            &base.join(dir),
            &nix::sys::time::TimeSpec::new(0, 0),
            &nix::sys::time::TimeSpec::new(0, 0),
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        );
    }
    let path = tmp.join("image.json");
    crate::files::create_new_file(&path, record(packed, mapping, keys).as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}
