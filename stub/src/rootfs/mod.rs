//! The image's root filesystem on disk: reading the payload from this very file, the
//! cache (one directory per payload digest and id mapping: location, lock, temporary
//! directory, rename), safe extraction, in-root path helpers, and the cache commands.

mod cache;
mod decode;
pub mod extract;
pub mod inroot;
mod layers;
pub mod manage;
pub mod payload;
mod progress;
mod ring;
pub mod stacking;

pub use cache::{cache_root, ensure_rootfs, is_extracted, Rootfs};
