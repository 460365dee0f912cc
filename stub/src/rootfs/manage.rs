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
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // Small, written by us; still never read whole if someone made it huge.
        let info: serde_json::Value = fs::File::open(path.join("info"))
            .and_then(|f| {
                let mut text = Vec::new();
                std::io::Read::read_to_end(&mut std::io::Read::take(f, 64 * 1024), &mut text)
                    .map(|_| text)
            })
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let image = info["reference"]
            .as_str()
            .filter(|r| !r.is_empty())
            .or(info["name"].as_str())
            .map(|i| crate::log::printable(i.as_bytes()))
            .unwrap_or_else(|| "?".into());
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
    remove_dead_layers(&root, what);
    Ok(chosen)
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
        // A run's layer `<key>.<random>`, one being made, or a clean one kept for the
        // next run (`.spare-<key>`, container/layer.rs).
        let key = name
            .strip_prefix(".new-")
            .or_else(|| name.strip_prefix(".spare-"))
            .unwrap_or(&name);
        if what != "all" && !key.starts_with(what) {
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
