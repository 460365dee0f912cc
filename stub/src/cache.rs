//! The rootfs cache (DESIGN.md step 3): one directory per payload digest.
//!
//! ```text
//! $CACHE/<digest>/rootfs   the extracted image, never written after the rename
//! $CACHE/<digest>/mnt      an empty directory the container mounts its scratch tmpfs on
//! $CACHE/<digest>.lock     flock'd while extracting
//! $CACHE/.tmp-<digest>-<pid>  an extraction in progress (or a crashed one)
//! ```
//! A warm start is one stat of `<digest>/rootfs`: the payload is neither read nor hashed.

use crate::error::{Context, Error, Result};
use crate::extract::Extractor;
use crate::log::debug;
use crate::log::say;
use crate::payload::Packed;
use crate::progress::Progress;
use crate::sys;
use crate::userns::{self, Mapping};
use sha2::{Digest, Sha256};
use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

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

/// Creates `dir` (0700) or checks that an existing one is ours, and makes it private.
/// The cache holds setuid files of the user's images, the state root the locks of
/// running containers: nobody else may reach either. `what` names it in errors, `fix`
/// says how to choose another.
pub fn private_dir(dir: &Path, what: &str, fix: &str) -> Result<()> {
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
    let meta = fs::metadata(dir).with_context(|| format!("cannot stat {}", dir.display()))?;
    let uid = nix::unistd::geteuid().as_raw();
    if meta.uid() != uid {
        return Err(Error::new(format!(
            "the {what} directory {} belongs to uid {}, not to you (uid {uid}): {fix}",
            dir.display(),
            meta.uid()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot make {} private (chmod 700)", dir.display()))?;
    }
    Ok(())
}

pub struct Rootfs {
    /// The cache entry: holds `rootfs/` and `mnt/`.
    pub entry: PathBuf,
}

impl Rootfs {
    pub fn rootfs(&self) -> PathBuf {
        self.entry.join("rootfs")
    }
    pub fn scratch(&self) -> PathBuf {
        self.entry.join("mnt")
    }
}

/// The cache entry of this image under `mapping`.
fn entry_for(packed: &Packed, mapping: &Mapping) -> Result<(PathBuf, String)> {
    let key = format!(
        "{}{}",
        packed.footer.payload_sha256.hex(),
        mapping.cache_suffix()
    );
    Ok((cache_root()?.join(&key), key))
}

/// Whether this image is already extracted for `mapping` (one stat).
pub fn is_extracted(packed: &Packed, mapping: &Mapping) -> bool {
    entry_for(packed, mapping).is_ok_and(|(entry, _)| entry.join("rootfs").is_dir())
}

/// Returns the extracted rootfs of this packed file, extracting it on the first run.
/// With subordinate ids the extraction runs inside a user namespace with that mapping,
/// so files keep the image's owners; such an extraction has its own cache entry.
pub fn ensure_rootfs(packed: &Packed, mapping: &Mapping) -> Result<Rootfs> {
    let root = cache_root()?;
    let key = format!(
        "{}{}",
        packed.footer.payload_sha256.hex(),
        mapping.cache_suffix()
    );
    let entry = root.join(&key);
    let rootfs = Rootfs {
        entry: entry.clone(),
    };
    if rootfs.rootfs().is_dir() {
        debug!("rootfs: cached at {}", entry.display());
        touch(&root.join(format!("{key}.lock")));
        return Ok(rootfs);
    }
    private_dir(
        &root,
        "cache",
        "set BINCTR_CACHE to a directory of your own",
    )?;
    let lock_path = root.join(format!("{key}.lock"));
    let lock = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lock_path)
        .with_context(|| format!("cannot create the cache lock {}", lock_path.display()))?;
    debug!("rootfs: waiting for the cache lock");
    sys::lock_exclusive(lock.as_fd(), true)
        .with_context(|| format!("cannot lock {}", lock_path.display()))?;
    // Another run may have finished the extraction while we waited.
    if rootfs.rootfs().is_dir() {
        debug!(
            "rootfs: cached at {} (extracted by another run)",
            entry.display()
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
        .and_then(|()| {
            if mapping.is_subid() {
                // The child reports its own errors, and cleans up what it made.
                let _ = sys::set_signal_mask(&sys::sigset_of(&crate::process::FORWARDED));
                userns::run_inside(mapping, || {
                    let done = extract_into(packed, &tmp, true);
                    if done.is_err() {
                        let _ = remove_tree(&tmp);
                    }
                    done
                })
            } else {
                extract_into(packed, &tmp, false)
            }
        })
        .and_then(|()| {
            fs::rename(&tmp, &entry)
                .with_context(|| format!("cannot rename {} to {}", tmp.display(), entry.display()))
        });
    if result.is_err() && !mapping.is_subid() {
        let _ = remove_tree(&tmp);
    }
    // The lock goes with `lock` when we return.
    result?;
    Ok(rootfs)
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

/// Extractions of this digest that a crashed run left behind (we hold the lock, so no
/// live run owns them).
fn remove_stale_temps(root: &Path, key: &str, mapping: &Mapping) {
    let prefix = format!(".tmp-{key}.");
    let Ok(dir) = fs::read_dir(root) else { return };
    let stale: Vec<PathBuf> = dir
        .flatten()
        .filter(|item| item.file_name().to_string_lossy().starts_with(&prefix))
        .map(|item| item.path())
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

/// `rm -rf`, making directories writable on the way (images hold read-only ones).
pub fn remove_tree(path: &Path) -> io::Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.is_dir() {
        return fs::remove_file(path);
    }
    if meta.mode() & 0o700 != 0o700 {
        fs::set_permissions(path, fs::Permissions::from_mode(0o700))?;
    }
    for item in fs::read_dir(path)? {
        remove_tree(&item?.path())?;
    }
    fs::remove_dir(path)
}

/// Counts and hashes the payload bytes as the decompressor pulls them.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    read: u64,
    progress: Progress,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.read += n as u64;
        self.progress.update(self.read);
        Ok(n)
    }
}

fn extract_into(packed: &Packed, tmp: &Path, keep_owners: bool) -> Result<()> {
    let footer = &packed.footer;
    let mut file = packed
        .file
        .try_clone()
        .context("cannot reopen /proc/self/exe")?;
    file.seek(SeekFrom::Start(footer.payload_offset))
        .context("cannot seek to the payload")?;
    let label = format!("binctr: extracting {}", packed.config.name);
    let mut hashing = Hashing {
        inner: BufReader::with_capacity(1 << 20, file.take(footer.payload_len)),
        hasher: Sha256::new(),
        read: 0,
        progress: Progress::new(label, footer.payload_len),
    };
    let unpacked = unpack(&mut hashing, &tmp.join("rootfs"), keep_owners);
    // Whatever happened, hash what is left so a damaged payload is called damaged
    // rather than reported as the tar error it caused.
    let drained = io::copy(&mut hashing, &mut io::sink());
    hashing.progress.done();
    let digest: [u8; 32] = hashing.hasher.finalize().into();
    if drained.is_err() || hashing.read != footer.payload_len || digest != footer.payload_sha256.0 {
        return Err(Error::new(
            "damaged packed file: the payload does not match its sha256 (download or pack it again)",
        ));
    }
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

/// Every entry of the payload tar, in order; a pending stop signal ends it between
/// entries.
fn unpack_entries<R: Read>(
    decoder: &mut R,
    extractor: &mut Extractor,
    stop: &libc::sigset_t,
) -> Result<()> {
    let mut archive = tar::Archive::new(decoder);
    let entries = archive
        .entries()
        .map_err(|e| Error::new(format!("payload is not a tar: {e}")))?;
    let mut last = Vec::new();
    for (n, entry) in entries.enumerate() {
        // Checked every few entries: a syscall per entry is measurable on large images.
        if n % 32 == 0 {
            if let Some(signal) = sys::pending_signal(stop) {
                return Err(Error::interrupted(
                    signal,
                    "while extracting the image; the cache is left as it was",
                ));
            }
        }
        let mut entry = entry.map_err(|e| {
            Error::new(format!(
                "damaged packed file: the payload tar breaks after '{}' ({e})",
                crate::extract::printable(&last)
            ))
        })?;
        last = entry.path_bytes().into_owned();
        extractor.entry(&mut entry)?;
    }
    Ok(())
}

fn unpack<R: Read>(
    payload: &mut R,
    rootfs: &Path,
    keep_owners: bool,
) -> Result<crate::extract::Summary> {
    // Ctrl-C, kill and hangup wait, blocked, until the entry being written is complete;
    // then the half-made extraction is removed and the stub exits 128+N.
    let stop = sys::sigset_of(&crate::process::FORWARDED);
    let _ = sys::set_signal_mask(&stop);
    let mut decoder = lz4_flex::frame::FrameDecoder::new(payload);
    let mut extractor = Extractor::new(rootfs, keep_owners)?;
    // Files are created with their final permission bits (no chmod per file); the
    // user's umask must not trim them. Only this process extracts, and it restores it.
    let umask = nix::sys::stat::umask(nix::sys::stat::Mode::empty());
    let result = unpack_entries(&mut decoder, &mut extractor, &stop);
    nix::sys::stat::umask(umask);
    result?;
    // The mount points the container needs, for images that lack them.
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
    if extractor.summary.entries == 0 {
        return Err(Error::new(
            "damaged packed file: the payload holds no files (pack the image again)",
        ));
    }
    // Read the frame to its end: this checks lz4's content checksum.
    io::copy(&mut decoder, &mut io::sink())
        .map_err(|e| Error::new(format!("payload lz4 frame: {e}")))?;
    extractor.finish()
}

/// `--cache-list`: every extracted image, its size and last use.
pub fn list() -> Result<()> {
    let root = cache_root()?;
    let entries = entries(&root);
    say!(
        "{:<14} {:>10} {:<17} {:<6} IMAGE",
        "DIGEST",
        "SIZE",
        "LAST USED",
        "IDS"
    );
    for path in entries {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let info: serde_json::Value = fs::read(path.join("info"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let image = info["reference"]
            .as_str()
            .filter(|r| !r.is_empty())
            .or(info["name"].as_str())
            .unwrap_or("?");
        let ids = if name.contains("-subid-") {
            "subid"
        } else {
            "single"
        };
        let used = fs::metadata(format!("{}.lock", path.display()))
            .or_else(|_| fs::metadata(&path))
            .and_then(|m| m.modified())
            .ok();
        say!(
            "{:<14} {:>10} {:<17} {:<6} {image}",
            &name[..name.len().min(12)],
            human(disk_usage(&path)),
            used.map(ago).unwrap_or_else(|| "?".into()),
            ids
        );
    }
    say!("cache: {}", root.display());
    Ok(())
}

/// `--cache-rm WHAT`: `all`, or the entries whose digest starts with WHAT.
pub fn remove_entries(what: &str) -> Result<Vec<PathBuf>> {
    let root = cache_root()?;
    let chosen: Vec<PathBuf> = entries(&root)
        .into_iter()
        .chain(stale_temps(&root))
        .filter(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            what == "all" || name.trim_start_matches(".tmp-").starts_with(what)
        })
        .collect();
    for path in &chosen {
        remove_tree(path).with_context(|| format!("cannot remove {}", path.display()))?;
        let lock = PathBuf::from(format!("{}.lock", path.display()));
        let _ = fs::remove_file(lock);
        say!("removed {}", path.display());
    }
    Ok(chosen)
}

fn entries(root: &Path) -> Vec<PathBuf> {
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

fn stale_temps(root: &Path) -> Vec<PathBuf> {
    fs::read_dir(root)
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp-"))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// Bytes on disk below `path` (du), hard links counted once.
fn disk_usage(path: &Path) -> u64 {
    let mut seen = std::collections::HashSet::new();
    let mut total = 0;
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(meta) = fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.nlink() > 1 && !meta.is_dir() && !seen.insert((meta.dev(), meta.ino())) {
            continue;
        }
        total += meta.blocks() * 512;
        if meta.is_dir() {
            if let Ok(dir) = fs::read_dir(&p) {
                stack.extend(dir.flatten().map(|e| e.path()));
            }
        }
    }
    total
}

fn human(bytes: u64) -> String {
    let mib = bytes as f64 / (1024.0 * 1024.0);
    if mib >= 1024.0 {
        format!("{:.1} GiB", mib / 1024.0)
    } else {
        format!("{mib:.1} MiB")
    }
}

fn ago(t: std::time::SystemTime) -> String {
    let secs = t.elapsed().map(|d| d.as_secs()).unwrap_or(0);
    match secs {
        s if s < 120 => format!("{s} seconds ago"),
        s if s < 7200 => format!("{} minutes ago", s / 60),
        s if s < 172_800 => format!("{} hours ago", s / 3600),
        s => format!("{} days ago", s / 86400),
    }
}
