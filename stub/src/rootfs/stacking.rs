//! Whether a layered image's layers are stacked by overlay (the layer store) or merged
//! into one directory per image, and why (issue 16's fallback).
//!
//! Stacking needs overlayfs in a user namespace with `userxattr` (Linux 5.11+), overlay
//! whiteouts a user may make (0/0 character devices, 5.8+) and user xattrs on the
//! cache's filesystem (opaque directories). A probe tries exactly that, in the cache: two
//! layers, a whiteout and an opaque directory in the upper one, mounted read-only in a
//! new user and mount namespace, and looked at. It runs at an image's first run; later
//! runs follow the entry that run made (`images/<key>/` stacked, `<key>-merged-<chain>/`
//! merged), so a warm start probes nothing. `BINCTR_LAYERS=merged` (or `stacked`)
//! decides instead; `auto` (or nothing) probes.

use super::cache::{cache_root, key_for, CACHE_FIX};
use super::payload::Packed;
use crate::error::{Error, Result};
use crate::files::{open_dir_nofollow, private_dir, remove_tree};
use crate::userns::{self, Mapping};
use binctr_format::Sha256Digest;
use nix::mount::{mount, MsFlags};
use std::fs::{self, DirBuilder, File};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

/// How a layered image's root is made on this machine.
#[derive(Debug, PartialEq, Eq)]
pub enum Stacking {
    /// Its layers, each extracted once into the layer store, stacked by overlay.
    Stacked,
    /// One directory per image, its layers merged (whiteouts applied): why not stacked.
    Merged(String),
}

/// What `BINCTR_LAYERS` asks for; None: `auto`.
pub fn forced() -> Result<Option<Stacking>> {
    let value = std::env::var_os("BINCTR_LAYERS").unwrap_or_default();
    match value.as_encoded_bytes() {
        b"" | b"auto" => Ok(None),
        b"merged" => Ok(Some(Stacking::Merged("BINCTR_LAYERS=merged".into()))),
        b"stacked" => Ok(Some(Stacking::Stacked)),
        other => Err(Error::new(format!(
            "BINCTR_LAYERS={}: use merged, stacked or auto",
            crate::log::printable(other)
        ))),
    }
}

/// How this layered image is to be run: as forced, as its first run chose (an entry in
/// the cache), or as the probe finds now.
pub(super) fn choose(packed: &Packed, mapping: &Mapping) -> Result<Stacking> {
    if let Some(forced) = forced()? {
        return Ok(forced);
    }
    let root = cache_root()?;
    if root
        .join("images")
        .join(key_for(packed, mapping))
        .join("base")
        .is_dir()
    {
        return Ok(Stacking::Stacked);
    }
    let merged = root.join(merged_key(packed, mapping)?);
    if merged.join("rootfs").is_dir() {
        // Only -D says why: the reason its first run recorded.
        let why = match crate::log::debug_enabled() {
            true => fs::read(merged.join("info"))
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .and_then(|v| v["merged"].as_str().map(str::to_string)),
            false => None,
        };
        return Ok(Stacking::Merged(format!(
            "at its first run: {}",
            why.as_deref().unwrap_or("?")
        )));
    }
    private_dir(&root, "cache", CACHE_FIX)?;
    Ok(match probe(&root) {
        Some(found) => {
            if found == Stacking::Stacked {
                crate::log::debug!("rootfs: probed: layers stack");
            }
            found
        }
        None => {
            crate::log::debug!("rootfs: cannot probe stacking: stacking");
            Stacking::Stacked
        }
    })
}

/// The cache key of this image's merged directory: its payload's key, then a digest of
/// its layers' frames' sha256s. The footer's payload digest is not checked for a
/// layered image; each layer's frame is (as it is merged), so a packed file can only
/// leave under this key the merge of these very layers.
pub(super) fn merged_key(packed: &Packed, mapping: &Mapping) -> Result<String> {
    let mut chain = b"merged frames\n".to_vec();
    for layer in &packed.config.layers {
        let sha = layer
            .segment_sha256()
            .ok_or_else(|| Error::new("damaged packed file: a layer has a malformed sha256"))?;
        chain.extend_from_slice(sha.hex().as_bytes());
        chain.push(b'\n');
    }
    Ok(format!(
        "{}-merged-{}",
        key_for(packed, mapping),
        Sha256Digest::of(&chain).hex()
    ))
}

/// The probe's exit codes beside an errno: its set-up failed, the whiteout showed the
/// file below it, the opaque directory showed what was below it.
const PROBE_SETUP: i32 = 200;
const WHITEOUT_SHOWN: i32 = 201;
const OPAQUE_IGNORED: i32 = 202;

/// Stacks two small layers as a run would, in the cache directory `root` (on its
/// filesystem). None: the probe itself could not run (no user namespace, a full disk):
/// it tells nothing about stacking.
pub fn probe(root: &Path) -> Option<Stacking> {
    let dir = root.join(format!(".tmp-probe.{}", std::process::id()));
    let _ = remove_tree(&dir);
    let found = probe_in(&dir);
    let _ = remove_tree(&dir);
    match found {
        Ok(()) => Some(Stacking::Stacked),
        Err(Some(why)) => Some(Stacking::Merged(why)),
        Err(None) => None,
    }
}

fn probe_in(dir: &Path) -> std::result::Result<(), Option<String>> {
    for sub in ["", "lower", "lower/dir", "layer", "layer/dir", "root"] {
        DirBuilder::new()
            .mode(0o700)
            .create(dir.join(sub))
            .map_err(|_| None)?;
    }
    for file in ["lower/gone", "lower/dir/hidden"] {
        crate::files::create_new_file(&dir.join(file), b"").map_err(|_| None)?;
    }
    nix::sys::stat::mknod(
        &dir.join("layer/gone"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::empty(),
        0,
    )
    .map_err(|e| {
        Some(format!(
            "users cannot make overlay whiteouts ({}; Linux 5.8+ needed)",
            e.desc()
        ))
    })?;
    let opaque = File::open(dir.join("layer/dir")).map_err(|_| None)?;
    crate::sys::set_xattr_fd(opaque.as_fd(), c"user.overlay.opaque", b"y")
        .map_err(|e| Some(format!("no user xattrs on the cache's filesystem ({e})")))?;
    let single = Mapping::Single { uid: 0, gid: 0 };
    match userns::run_inside_with(libc::CLONE_NEWNS, &single, || mount_and_look(dir)) {
        Ok(()) => Ok(()),
        // The child's own code (it reports nothing): what the mount or the look found.
        Err(e) if e.msg.is_empty() => Err(refusal(e.code)),
        Err(_) => Err(None),
    }
}

/// In the probe's namespaces: the two layers as a run stacks them (by descriptor,
/// `userxattr`), read-only, then whether the whiteout and the opaque directory hide
/// what is below them. Fails with an errno or one of the probe's codes.
fn mount_and_look(dir: &Path) -> Result<()> {
    let code = Error::reported;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|_| code(PROBE_SETUP))?;
    let layer = open_dir_nofollow(&dir.join("layer")).map_err(|_| code(PROBE_SETUP))?;
    let lower = open_dir_nofollow(&dir.join("lower")).map_err(|_| code(PROBE_SETUP))?;
    let options = format!(
        "lowerdir=/proc/self/fd/{}:/proc/self/fd/{},userxattr",
        layer.as_raw_fd(),
        lower.as_raw_fd()
    );
    let root = dir.join("root");
    mount(
        Some("overlay"),
        &root,
        Some("overlay"),
        MsFlags::MS_RDONLY,
        Some(options.as_str()),
    )
    .map_err(|e| code(e as i32))?;
    let shows = |path: &str| fs::symlink_metadata(root.join(path)).is_ok();
    match (shows("gone"), shows("dir"), shows("dir/hidden")) {
        (true, _, _) => Err(code(WHITEOUT_SHOWN)),
        (false, true, false) => Ok(()),
        _ => Err(code(OPAQUE_IGNORED)),
    }
}

/// Why the probe's child failed, from its exit code; None when it says nothing about
/// stacking (its set-up, a signal).
fn refusal(code: i32) -> Option<String> {
    match code {
        WHITEOUT_SHOWN => Some("the overlay ignored a whiteout".into()),
        OPAQUE_IGNORED => Some("the overlay ignored an opaque directory".into()),
        1..=124 | 126..=127 => Some(format!(
            "overlayfs refused in a user namespace ({}; Linux 5.11+ needed)",
            nix::errno::Errno::from_raw(code).desc()
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probes_codes_name_their_reason() {
        assert!(refusal(libc::EINVAL).is_some_and(|w| w.contains("refused")));
        assert!(refusal(WHITEOUT_SHOWN).is_some_and(|w| w.contains("whiteout")));
        assert!(refusal(OPAQUE_IGNORED).is_some_and(|w| w.contains("opaque")));
        // Its set-up, the go pipe (125), a signal: nothing about stacking.
        assert_eq!(refusal(PROBE_SETUP), None);
        assert_eq!(refusal(125), None);
        assert_eq!(refusal(128 + libc::SIGKILL), None);
    }
}
