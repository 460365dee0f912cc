//! `--overlay DIR`: a writable layer kept on disk between runs. It holds whatever the
//! container wrote, setuid files included, so DIR is private like the cache: created
//! 0700 or checked to be the caller's and closed to others, on every run, and so are
//! `upper/` and `work/`. A lock (flock on DIR/lock, held by the monitor for the
//! container's life) refuses a second container on the same layer, naming the first.

use crate::error::{Context, Error, Result};
use crate::files::private_dir;
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

/// The kept layer, locked for this container.
pub struct KeptLayer {
    _lock: File,
}

impl KeptLayer {
    pub fn take(dir: &Path) -> Result<KeptLayer> {
        let fix = "choose a directory of your own for --overlay";
        private_dir(dir, "--overlay", fix)?;
        for sub in ["upper", "work"] {
            let path = dir.join(sub);
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                    return Err(e).with_context(|| format!("cannot create {}", path.display()))
                }
                _ => {}
            }
            let fd = crate::files::open_dir_nofollow(&path)
                .with_context(|| format!("--overlay {}: cannot use {sub}/", dir.display()))?;
            crate::files::check_private(&fd, &path, "--overlay", fix, true)?;
        }
        let lock_path = dir.join("lock");
        let mut lock = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&lock_path)
            .with_context(|| format!("cannot open {}", lock_path.display()))?;
        if crate::sys::lock_exclusive(lock.as_fd(), false).is_err() {
            let mut holder = String::new();
            let _ = lock.read_to_string(&mut holder);
            return Err(Error::new(format!(
                "--overlay {}: in use by a running container (binctr pid {}): stop it first or choose another directory",
                dir.display(),
                holder.trim()
            )));
        }
        let _ = lock
            .set_len(0)
            .and_then(|()| lock.rewind())
            .and_then(|()| write!(lock, "{}", std::process::id()));
        Ok(KeptLayer { _lock: lock })
    }
}
