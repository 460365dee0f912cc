//! The image's root filesystem on disk: reading the payload from this very file, the
//! cache (one directory per payload digest and id mapping: location, lock, temporary
//! directory, rename), safe extraction, in-root path helpers, and the cache commands.

mod cache;
pub mod extract;
pub mod inroot;
pub mod manage;
pub mod payload;
mod progress;

pub use cache::{cache_root, ensure_rootfs, is_extracted};

use std::path::PathBuf;

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
