//! The container's writable layer (the overlay's upper and work directories), made and
//! locked on the host before the clone, removed after the container ends:
//!
//! - **on disk** (the default): `$CACHE/.runs/<key>.<random>/{upper,work}`, on the
//!   rootfs's own filesystem, so the overlay has one st_dev story and consistent inode
//!   numbers, and a full disk is ENOSPC inside, never an out-of-memory kill. Private
//!   (0700), one per run, flock'd (the directory itself) for the container's life;
//!   removed when it ends, and by the next run of the image when a run was killed (its
//!   lock is free). `.runs` itself stays, for the next run. A layer its run left as it
//!   found it (nothing in `upper/`) is not removed but kept as the image's spare,
//!   `.runs/.spare-<key>`, which the next run takes (rename, lock, check) instead of
//!   making one: on ext4 the six rmdir of a removal cost more than the rest of the
//!   layer's setup, and a run that writes nothing to its root is the common case.
//! - **kept** (`--overlay DIR`): DIR is private like the cache (0700, the caller's,
//!   checked on every run, and so are `upper/` and `work/`); a lock (flock on DIR/lock)
//!   refuses a second container on the same layer, naming the first.
//! - **in memory** (`--writable-tmpfs`): on the container's scratch tmpfs, of a set size.
//!
//! Under subordinate ids the layer holds files of the namespace's ids: it is removed
//! from inside the container's user namespace (joined through the descriptor the
//! monitor kept), or a new one with the same mapping for a killed run's leftovers.

use crate::cli::{Layer, RunPlan};
use crate::error::{Context, Error, Result};
use crate::files::{open_dir_nofollow, private_dir, random_hex, remove_tree};
use crate::log::debug;
use crate::rootfs::Rootfs;
use crate::userns::{self, Mapping};
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Where the overlay's upper and work directories are, for mounts.rs.
#[derive(Clone, Debug)]
pub enum Upper {
    /// On the scratch tmpfs, of this size.
    Tmpfs(String),
    /// In this directory on disk (`upper/`, `work/`); `kept` when it outlives the run.
    Disk { dir: PathBuf, kept: bool },
}

/// The writable layer of one container, held until [`WritableLayer::finish`].
pub struct WritableLayer {
    pub upper: Option<Upper>,
    /// The per-run directory to remove at the end.
    remove: Option<PathBuf>,
    /// Where it goes instead when the run left it clean (`.runs/.spare-<key>`).
    spare: Option<PathBuf>,
    /// flock'd for the container's life (per-run `lock`, or the kept DIR/lock).
    _lock: Option<File>,
}

impl WritableLayer {
    /// Makes (and locks) the layer the plan asks for; none for a read-only root.
    pub fn prepare(plan: &RunPlan, rootfs: &Rootfs, mapping: &Mapping) -> Result<WritableLayer> {
        let none = |upper| WritableLayer {
            upper,
            remove: None,
            spare: None,
            _lock: None,
        };
        if plan.read_only {
            return Ok(none(None));
        }
        match &plan.layer {
            Layer::Tmpfs(size) => Ok(none(Some(Upper::Tmpfs(size.clone())))),
            Layer::Kept(dir) => kept(dir),
            Layer::Disk => per_run(rootfs, mapping),
        }
    }

    /// Writes this process's pid in the lock (the detached monitor, after its fork:
    /// the one a refused second user of the layer is told about).
    pub fn claim(&self) {
        if let Some(lock) = &self._lock {
            let mut lock: &File = lock;
            let _ = lock
                .set_len(0)
                .and_then(|()| lock.rewind())
                .and_then(|()| write!(lock, "{}", std::process::id()));
        }
    }

    /// Removes a per-run layer. `userns`: the container's user namespace, whose ids
    /// own what the container wrote (subordinate ids); joined to remove them.
    pub fn finish(self, mapping: &Mapping, userns: Option<&File>) {
        let Some(dir) = self.remove else { return };
        if let Some(spare) = &self.spare {
            // Still locked: no run takes it for a killed run's before it has its name.
            let runs = spare.parent().unwrap_or(Path::new("."));
            if set_work_aside(&dir, runs) && is_clean(&dir) && rename_noreplace(&dir, spare).is_ok()
            {
                debug!("layer: clean, kept as {}", spare.display());
                drop(self._lock);
                remove_trash_detached(runs);
                return;
            }
        }
        debug!("layer: removing {}", dir.display());
        // From here first: what the container's root wrote is ours (subordinate ids map
        // it to us), and most runs write nothing else. Files of the namespace's other
        // ids need its user namespace (the container's, or a new one with the mapping).
        let removed = match (mapping.is_subid(), remove_tree(&dir)) {
            (_, Ok(())) => Ok(()),
            (false, Err(e)) => Err(Error::from(e)),
            (true, Err(_)) => match userns {
                Some(ns) => userns::run_joined(ns, || remove_tree(&dir).map_err(Error::from)),
                None => userns::run_inside(mapping, || remove_tree(&dir).map_err(Error::from)),
            },
        };
        if let Err(e) = removed {
            debug!("layer: cannot remove {}: {}", dir.display(), e.msg);
        }
    }
}

/// The kept layer `--overlay DIR`, checked and locked.
fn kept(dir: &Path) -> Result<WritableLayer> {
    let fix = "choose a directory of your own for --overlay";
    private_dir(dir, "--overlay", fix)?;
    for sub in ["upper", "work"] {
        let path = dir.join(sub);
        make_layer_subdir(&path, fix)?;
    }
    let lock = lock(&dir.join("lock")).map_err(|holder| {
        Error::new(format!(
            "--overlay {}: in use by a running container (binctr pid {holder}): stop it first or choose another directory",
            dir.display(),
        ))
    })?;
    Ok(WritableLayer {
        upper: Some(Upper::Disk {
            dir: dir.to_path_buf(),
            kept: true,
        }),
        remove: None,
        spare: None,
        _lock: Some(lock),
    })
}

/// `upper/` or `work/` of a layer: the caller's, and nobody else may write it. Mode
/// 0755: the upper directory's mode is the container root's (a user other than root
/// inside must be able to enter `/`); the layer's own directory, 0700, keeps everyone
/// else out.
fn make_layer_subdir(path: &Path, fix: &str) -> Result<()> {
    match std::fs::DirBuilder::new().mode(0o755).create(path) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
            return Err(e).with_context(|| format!("cannot create {}", path.display()))
        }
        _ => {}
    }
    let fd = open_dir_nofollow(path).with_context(|| format!("cannot use {}", path.display()))?;
    let st = nix::sys::stat::fstat(std::os::fd::AsRawFd::as_raw_fd(&fd))
        .with_context(|| format!("cannot stat {}", path.display()))?;
    if st.st_uid != nix::unistd::geteuid().as_raw() || st.st_mode & 0o022 != 0 {
        return Err(Error::new(format!(
            "{} is not yours, or others may write it: {fix}",
            path.display()
        )));
    }
    Ok(())
}

/// A fresh layer on disk for this run, after removing the leftovers of killed runs.
fn per_run(rootfs: &Rootfs, mapping: &Mapping) -> Result<WritableLayer> {
    let runs = rootfs.runs_dir();
    let fix = "set BINCTR_CACHE to a directory of your own";
    let name = format!("{}.{}", rootfs.key(), random_hex());
    let dir = runs.join(&name);
    // Made under a name no cleaner looks at, locked, then renamed: a run of the same
    // image starting at this moment never takes this one for a killed run's.
    let new = runs.join(format!(".new-{name}"));
    private_dir(&runs, "run", fix)?;
    remove_dead_runs(&runs, &rootfs.key(), mapping);
    let spare = runs.join(format!(".spare-{}", rootfs.key()));
    let made = match take_spare(&spare, &new) {
        Some(lock) => {
            debug!("layer: took the spare {}", spare.display());
            Ok(lock)
        }
        None => make_new(&runs, &new, fix),
    }
    .and_then(|lock| {
        std::fs::rename(&new, &dir)
            .with_context(|| format!("cannot rename {} to {}", new.display(), dir.display()))?;
        Ok(lock)
    });
    let lock = match made {
        Ok(lock) => lock,
        Err(e) => {
            let _ = remove_tree(&new);
            return Err(e);
        }
    };
    debug!("layer: on disk in {}", dir.display());
    Ok(WritableLayer {
        upper: Some(Upper::Disk {
            dir: dir.clone(),
            kept: false,
        }),
        remove: Some(dir),
        spare: Some(spare),
        _lock: Some(lock),
    })
}

/// Makes the layer `new` (the layer's directory, locked, and its `upper/` and `work/`).
fn make_new(runs: &Path, new: &Path, fix: &str) -> Result<File> {
    let mut tries = 0;
    loop {
        match std::fs::DirBuilder::new().mode(0o700).create(new) {
            Ok(()) => break,
            // The last run of another container removed the (empty) parent just now.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && tries < 3 => {
                tries += 1;
                private_dir(runs, "run", fix)?;
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot create the writable layer {}", new.display()))
            }
        }
    }
    let lock = lock_dir(new)
        .map_err(|_| Error::new(format!("cannot lock the writable layer {}", new.display())))?;
    for sub in ["upper", "work"] {
        make_layer_subdir(&new.join(sub), fix)?;
    }
    Ok(lock)
}

/// Takes the image's spare layer as `new`: renamed (only one run can), locked, and
/// checked clean again (a `--cache-rm` may have been removing it). None: make one.
fn take_spare(spare: &Path, new: &Path) -> Option<File> {
    std::fs::rename(spare, new).ok()?;
    match lock_dir(new) {
        Ok(lock) if is_clean(new) => Some(lock),
        _ => {
            let _ = remove_tree(new);
            None
        }
    }
}

/// Moves the overlay's `work/work` out of the layer `dir`, to `runs/.trash-<random>`:
/// with `volatile` it holds `incompat/volatile`, which makes the overlay refuse the
/// directory (and the overlay makes `work/work` again at every mount anyway). Removing
/// it is the slow part of a layer's end (ext4 frees each directory's inode as it goes:
/// ~0.3 ms apiece here), so it is removed after we exit. Whether `work/` is empty now.
fn set_work_aside(dir: &Path, runs: &Path) -> bool {
    let (work, trash) = (
        dir.join("work/work"),
        runs.join(format!(".trash-{}", random_hex())),
    );
    // The overlay makes it 000: moving a directory to another parent rewrites its `..`.
    if let Err(e) = nix::sys::stat::fchmodat(
        None,
        &work,
        nix::sys::stat::Mode::S_IRWXU,
        nix::sys::stat::FchmodatFlags::NoFollowSymlink,
    ) {
        return e == nix::errno::Errno::ENOENT;
    }
    match std::fs::rename(&work, trash) {
        Ok(()) => true,
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    }
}

/// Removes every `runs/.trash-*` (the overlay's work directories of clean layers, this
/// run's and any a killed cleaner left) in a child of its own session that outlives
/// us: the caller returns its exit code without waiting for ext4. Inline if fork fails.
fn remove_trash_detached(runs: &Path) {
    let remove = || {
        let Ok(listing) = std::fs::read_dir(runs) else {
            return;
        };
        for entry in listing.flatten() {
            if entry.file_name().as_encoded_bytes().starts_with(b".trash-") {
                let _ = remove_tree(&entry.path());
            }
        }
    };
    match crate::sys::fork() {
        Ok(0) => {
            // Nothing of ours kept open (a pipe's reader waits for our stdout's end,
            // a lock must be free once we exit), no terminal, no signal of our group.
            let _ = crate::sys::close_range_from(0, false);
            let _ = nix::unistd::setsid();
            remove();
            crate::sys::exit_now(0);
        }
        Ok(_) => {}
        Err(_) => remove(),
    }
}

/// Whether the layer `dir` holds nothing of a container: private and ours, `upper/`
/// empty, ours, 0755, with no extended attribute but the overlay's own (a container
/// cannot set `user.overlay.*` through the overlay), and `work/` ours and empty.
/// Nothing here follows a symlink, and only this user can write in `.runs` (0700).
fn is_clean(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let me = nix::unistd::geteuid().as_raw();
    let ours = |path: &Path, mode: u32| {
        std::fs::symlink_metadata(path)
            .is_ok_and(|m| m.is_dir() && m.uid() == me && m.mode() & 0o7777 == mode)
    };
    let entries = |path: &Path| -> Option<Vec<std::ffi::OsString>> {
        let listing = std::fs::read_dir(path).ok()?;
        listing.map(|e| e.ok().map(|e| e.file_name())).collect()
    };
    let (upper, work) = (dir.join("upper"), dir.join("work"));
    let upper_xattrs_overlay_only = || {
        File::options()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
            .open(&upper)
            .and_then(|upper| crate::sys::xattr_names_fd(upper.as_fd()))
            .is_ok_and(|names| {
                names
                    .split(|&b| b == 0)
                    .filter(|n| !n.is_empty())
                    .all(|n| n.starts_with(b"user.overlay."))
            })
    };
    ours(dir, 0o700)
        && ours(&upper, 0o755)
        && ours(&work, 0o755)
        && entries(&upper).is_some_and(|e| e.is_empty())
        && upper_xattrs_overlay_only()
        && entries(&work).is_some_and(|e| e.is_empty())
}

/// rename(2) that never replaces an existing `to`.
fn rename_noreplace(from: &Path, to: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))
    };
    crate::sys::rename_noreplace(&c(from)?, &c(to)?)
}

/// Removes the layers of this image's runs that were killed (their lock is free).
fn remove_dead_runs(runs: &Path, key: &str, mapping: &Mapping) {
    let prefix = format!("{key}.");
    let unfinished = format!(".new-{key}.");
    let Ok(listing) = std::fs::read_dir(runs) else {
        return;
    };
    // One still being made (`.new-`) is left alone unless it is a minute old.
    let old = |e: &std::fs::DirEntry| {
        e.metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|age| age.as_secs() > 60))
    };
    let dead: Vec<(PathBuf, File)> = listing
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with(&prefix) || (name.starts_with(&unfinished) && old(e))
        })
        .filter_map(|e| Some((e.path(), lock_dir(&e.path()).ok()?)))
        .collect();
    if dead.is_empty() {
        return;
    }
    let remove = || {
        for (dir, _lock) in &dead {
            debug!("layer: removing a killed run's {}", dir.display());
            let _ = remove_tree(dir);
        }
        Ok(())
    };
    let _ = if mapping.is_subid() {
        userns::run_inside(mapping, remove)
    } else {
        remove()
    };
}

/// Locks a per-run layer's directory itself (flock on the directory: no lock file to
/// create and remove at every run); fails at once when its run still holds it.
fn lock_dir(dir: &Path) -> std::io::Result<File> {
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(dir)?;
    crate::sys::lock_exclusive(file.as_fd(), false)?;
    Ok(file)
}

/// Takes the lock file `path` (created 0600 if missing) and writes our pid in it; when
/// another process holds it, Err carries the pid it wrote.
fn lock(path: &Path) -> std::result::Result<File, String> {
    let mut lock = crate::files::open_lock(path).map_err(|e| e.to_string())?;
    if crate::sys::lock_exclusive(lock.as_fd(), false).is_err() {
        let mut holder = String::new();
        let _ = (&lock).take(32).read_to_string(&mut holder);
        return Err(crate::log::printable(holder.trim().as_bytes()));
    }
    let _ = lock
        .set_len(0)
        .and_then(|()| lock.rewind())
        .and_then(|()| write!(lock, "{}", std::process::id()));
    Ok(lock)
}
