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
use crate::payload::Packed;
use crate::progress::Progress;
use crate::sys;
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

/// Creates the cache directory (0700) or checks that an existing one is ours and private:
/// it holds setuid files of the user's images, which nobody else may reach.
fn prepare_root(root: &Path) -> Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(root)
        .with_context(|| {
            format!(
                "cannot create the cache directory {} (set BINCTR_CACHE to a writable directory)",
                root.display()
            )
        })?;
    let meta = fs::metadata(root).with_context(|| format!("cannot stat {}", root.display()))?;
    let uid = nix::unistd::geteuid().as_raw();
    if meta.uid() != uid {
        return Err(Error::new(format!(
            "the cache directory {} belongs to uid {}, not to you (uid {uid}): set BINCTR_CACHE to a directory of your own",
            root.display(),
            meta.uid()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        fs::set_permissions(root, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot make {} private (chmod 700)", root.display()))?;
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

/// Returns the extracted rootfs of this packed file, extracting it on the first run.
pub fn ensure_rootfs(packed: &Packed) -> Result<Rootfs> {
    let root = cache_root()?;
    let digest = packed.footer.payload_sha256.hex();
    let entry = root.join(&digest);
    let rootfs = Rootfs {
        entry: entry.clone(),
    };
    if rootfs.rootfs().is_dir() {
        debug!("rootfs: cached at {}", entry.display());
        return Ok(rootfs);
    }
    prepare_root(&root)?;
    let lock_path = root.join(format!("{digest}.lock"));
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
    remove_stale_temps(&root, &digest);
    let tmp = root.join(format!(".tmp-{digest}-{}", std::process::id()));
    debug!("rootfs: extracting into {}", tmp.display());
    let result = extract_into(packed, &tmp).and_then(|()| {
        fs::rename(&tmp, &entry)
            .with_context(|| format!("cannot rename {} to {}", tmp.display(), entry.display()))
    });
    if result.is_err() {
        let _ = remove_tree(&tmp);
    }
    // The lock goes with `lock` when we return.
    result?;
    Ok(rootfs)
}

/// Extractions of this digest that a crashed run left behind (we hold the lock, so no
/// live run owns them).
fn remove_stale_temps(root: &Path, digest: &str) {
    let prefix = format!(".tmp-{digest}-");
    let Ok(dir) = fs::read_dir(root) else { return };
    for item in dir.flatten() {
        if item.file_name().to_string_lossy().starts_with(&prefix) {
            debug!("rootfs: removing a stale {}", item.path().display());
            let _ = remove_tree(&item.path());
        }
    }
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

fn extract_into(packed: &Packed, tmp: &Path) -> Result<()> {
    let footer = &packed.footer;
    DirBuilder::new()
        .mode(0o700)
        .create(tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    for sub in ["rootfs", "mnt"] {
        fs::create_dir(tmp.join(sub))
            .with_context(|| format!("cannot create {}", tmp.join(sub).display()))?;
    }
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
    let unpacked = unpack(&mut hashing, &tmp.join("rootfs"));
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
        "rootfs: {} entries, {} device nodes skipped (/dev is provided at run time), {} other entries skipped",
        summary.entries, summary.skipped_devices, summary.skipped_other
    );
    Ok(())
}

fn unpack<R: Read>(payload: &mut R, rootfs: &Path) -> Result<crate::extract::Summary> {
    // Ctrl-C, kill and hangup wait, blocked, until the entry being written is complete;
    // then the half-made extraction is removed and the stub exits 128+N.
    let stop = sys::sigset_of(&crate::process::FORWARDED);
    let _ = sys::set_signal_mask(&stop);
    let mut decoder = lz4_flex::frame::FrameDecoder::new(payload);
    let mut extractor = Extractor::new(rootfs)?;
    {
        let mut archive = tar::Archive::new(&mut decoder);
        let entries = archive
            .entries()
            .map_err(|e| Error::new(format!("payload is not a tar: {e}")))?;
        for entry in entries {
            if let Some(signal) = sys::pending_signal(&stop) {
                return Err(Error::interrupted(
                    signal,
                    "while extracting the image; the cache is left as it was",
                ));
            }
            let mut entry = entry.map_err(|e| Error::new(format!("payload tar: {e}")))?;
            extractor.entry(&mut entry)?;
        }
    }
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
    // Read the frame to its end: this checks lz4's content checksum.
    io::copy(&mut decoder, &mut io::sink())
        .map_err(|e| Error::new(format!("payload lz4 frame: {e}")))?;
    extractor.finish()
}
