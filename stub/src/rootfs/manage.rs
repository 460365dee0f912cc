//! `--cache-list` and `--cache-rm`: what the cache holds, and removing it. Run inside a
//! user namespace with the subordinate ids when there are some (main.rs), so files they
//! own can be sized and removed.

use super::cache::{cache_root, entries, stale_temps};
use crate::error::{Context, Result};
use crate::files::remove_tree;
use crate::log::say;
use std::fs;
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

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
        let used = fs::metadata(format!("{}.lock", path.display()))
            .or_else(|_| fs::metadata(&path))
            .and_then(|m| m.modified())
            .ok();
        let image = image_name(&read_json(&path.join("info")));
        row(&path, disk_usage(&path), used, &image);
    }
    list_images(&root);
    say!("cache: {}", root.display());
    Ok(())
}

/// The layered images (format 2), each with its layers; a layer shared with another
/// image is marked, and a layer no image names is listed last.
fn list_images(root: &Path) {
    let images = images(root);
    let sizes: Vec<(String, u64)> = entries(&root.join("layers"))
        .iter()
        .map(|p| (file_name(p), disk_usage(p)))
        .collect();
    let size_of = |key: &str| sizes.iter().find(|(k, _)| k == key).map(|(_, s)| *s);
    let users = |key: &str| {
        images
            .iter()
            .filter(|(_, r)| layer_keys(r).contains(&key))
            .count()
    };
    for (path, record) in &images {
        let keys = layer_keys(record);
        let size = keys.iter().filter_map(|k| size_of(k)).sum();
        let used = fs::metadata(path).and_then(|m| m.modified()).ok();
        let label = format!("{} ({} layers)", image_name(record), keys.len());
        row(path, size, used, &label);
        for key in keys.iter().rev() {
            let shared = match users(key) {
                0 | 1 => String::new(),
                n => format!(" shared by {n} images"),
            };
            let size = size_of(key).map_or_else(|| "missing".into(), human);
            say!(
                "  layer {:<12} {size:>10}{shared}",
                &key[..key.len().min(12)]
            );
        }
    }
    for (key, size) in &sizes {
        if users(key) == 0 {
            say!(
                "  layer {:<12} {:>10} no image names it",
                &key[..key.len().min(12)],
                human(*size)
            );
        }
    }
}

fn row(path: &Path, size: u64, used: Option<std::time::SystemTime>, image: &str) {
    let name = file_name(path);
    say!(
        "{:<14} {:>10} {:<17} {:<6} {image}",
        &name[..name.len().min(12)],
        human(size),
        used.map(ago).unwrap_or_else(|| "?".into()),
        ids(&name)
    );
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn ids(name: &str) -> &'static str {
    if name.contains("-subid-") {
        "subid"
    } else {
        "single"
    }
}

fn image_name(info: &serde_json::Value) -> String {
    info["reference"]
        .as_str()
        .filter(|r| !r.is_empty())
        .or(info["name"].as_str())
        .map(|i| crate::log::printable(i.as_bytes()))
        .unwrap_or_else(|| "?".into())
}

/// Small, written by us; still never read whole if someone made it huge.
fn read_json(path: &Path) -> serde_json::Value {
    fs::File::open(path)
        .and_then(|f| {
            let mut text = Vec::new();
            std::io::Read::read_to_end(&mut std::io::Read::take(f, 64 * 1024), &mut text)
                .map(|_| text)
        })
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// The layered images' entries and their records.
fn images(root: &Path) -> Vec<(PathBuf, serde_json::Value)> {
    entries(&root.join("images"))
        .into_iter()
        .map(|p| {
            let record = read_json(&p.join("image.json"));
            (p, record)
        })
        .collect()
}

fn layer_keys(record: &serde_json::Value) -> Vec<&str> {
    record["layers"]
        .as_array()
        .map(|a| a.iter().filter_map(|k| k.as_str()).collect())
        .unwrap_or_default()
}

/// `--cache-rm WHAT`: `all`, or the entries whose digest starts with WHAT.
pub fn remove_entries(what: &str) -> Result<Vec<PathBuf>> {
    remove_where(what, |path| {
        what == "all"
            || file_name(path)
                .trim_start_matches(".tmp-")
                .starts_with(what)
    })
}

/// `--cache-prune DAYS`: the images not used for `days` days, then the layers no image
/// left names.
pub fn prune(days: u32) -> Result<Vec<PathBuf>> {
    let limit = std::time::Duration::from_secs(u64::from(days) * 86_400);
    // The last use: the lock's mtime (format 1) or the entry's (a layered image).
    let used = |path: &Path| {
        [
            path.to_path_buf(),
            PathBuf::from(format!("{}.lock", path.display())),
        ]
        .iter()
        .filter_map(|p| fs::symlink_metadata(p).and_then(|m| m.modified()).ok())
        .max()
    };
    remove_where("", |path| {
        used(path).is_some_and(|t| t.elapsed().is_ok_and(|e| e > limit))
    })
}

/// Removes the images (both formats, and extractions left by a crash) `chosen` picks,
/// the dead writable layers whose name starts with `runs` (see [`remove_dead_layers`]),
/// then the layers no image left names.
fn remove_where(runs: &str, chosen: impl Fn(&Path) -> bool) -> Result<Vec<PathBuf>> {
    let root = cache_root()?;
    let images_dir = root.join("images");
    let picked: Vec<PathBuf> = entries(&root)
        .into_iter()
        .chain(stale_temps(&root))
        .chain(entries(&images_dir))
        .chain(stale_temps(&images_dir))
        .filter(|p| chosen(p))
        .collect();
    for path in &picked {
        remove_tree(path).with_context(|| format!("cannot remove {}", path.display()))?;
        let _ = fs::remove_file(format!("{}.lock", path.display()));
        say!("removed {}", path.display());
    }
    remove_dead_layers(&root, runs);
    remove_unused_layers(&root)?;
    Ok(picked)
}

/// Removes every layer no image record names, unless a container uses it or a run is
/// extracting it (either holds its lock; we never wait for it).
pub fn remove_unused_layers(root: &Path) -> Result<()> {
    let store = root.join("layers");
    let images = images(root);
    let named = |key: &str| images.iter().any(|(_, r)| layer_keys(r).contains(&key));
    let layers = entries(&store).into_iter().chain(stale_temps(&store));
    for path in layers {
        let name = file_name(&path);
        let key = name
            .trim_start_matches(".tmp-")
            .rsplit_once('.')
            .filter(|_| name.starts_with(".tmp-"))
            .map_or(name.as_str(), |(k, _)| k);
        if named(key) {
            continue;
        }
        let lock_path = store.join(format!("{key}.lock"));
        let Ok(lock) = crate::files::open_lock(&lock_path) else {
            continue;
        };
        if crate::sys::flock(lock.as_fd(), libc::LOCK_EX, false).is_err() {
            say!(
                "kept {}: in use (by a running container, or being extracted)",
                path.display()
            );
            continue;
        }
        remove_tree(&path).with_context(|| format!("cannot remove {}", path.display()))?;
        if !name.starts_with(".tmp-") {
            let _ = fs::remove_file(&lock_path);
            let _ = fs::remove_file(super::layers::extract_lock_path(&store, key));
        }
        say!("removed {}", path.display());
    }
    Ok(())
}

/// The writable layers in `.runs` of the chosen entries whose run is gone (their
/// directory's lock is free), and `.runs` itself with `all` once it is empty; a running
/// container's layer stays.
fn remove_dead_layers(root: &Path, what: &str) {
    let runs = root.join(".runs");
    let Ok(listing) = fs::read_dir(&runs) else {
        return;
    };
    for entry in listing.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        // A run's layer `<key>.<random>`, one being made, a clean one kept for the next
        // run (`.spare-<key>`, container/layer.rs), or an overlay work directory a
        // cleaner has yet to remove (`.trash-<random>`: any image's, always removed).
        let key = name
            .strip_prefix(".new-")
            .or_else(|| name.strip_prefix(".spare-"))
            .unwrap_or(&name);
        if what != "all" && !key.starts_with(what) && !name.starts_with(".trash-") {
            continue;
        }
        // One being made (`.new-`) is locked only a moment later: left alone while young.
        let young = || {
            entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().map_or(true, |age| age.as_secs() < 60))
        };
        if name.starts_with(".new-") && young() {
            continue;
        }
        let path = entry.path();
        let Ok(dir) = fs::File::options()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
            .open(&path)
        else {
            continue;
        };
        // Held while it is removed.
        if crate::sys::lock_exclusive(dir.as_fd(), false).is_ok() && remove_tree(&path).is_ok() {
            say!("removed {}", path.display());
        }
    }
    if what == "all" {
        let _ = fs::remove_dir(&runs);
    }
}

/// Bytes on disk below `path` (du), hard links counted once.
fn disk_usage(path: &Path) -> u64 {
    let mut seen = std::collections::BTreeSet::new();
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
