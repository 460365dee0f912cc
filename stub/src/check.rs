//! `--check`: what this machine allows and what binctr will use, one line each; exit 0
//! when a container can start.

use crate::log::say;
use crate::userns::{self, Mapping};
use nix::mount::{mount, MsFlags};
use std::fs;
use std::path::Path;

fn line(what: &str, ok: bool, text: &str) {
    say!("  {:<18}{} {text}", what, if ok { "ok  " } else { "NO  " });
}

/// Runs every check; returns the exit code.
pub fn run() -> i32 {
    say!("binctr {} check", crate::cli::VERSION);
    check_kernel();
    let single = Mapping::Single { uid: 0, gid: 0 };
    let userns_ok = check_userns(&single);
    let overlay_ok = userns_ok && overlay_works(&single);
    line(
        "overlayfs",
        overlay_ok,
        if overlay_ok {
            "mounts in a user namespace (writable root)"
        } else {
            "not in a user namespace (Linux 5.11+ needed): run with --read-only"
        },
    );
    check_layers();
    let mapping = check_subid(userns_ok).unwrap_or(single);
    let cache_ok = match crate::rootfs::cache_root() {
        Ok(dir) => dir_check("cache", &dir),
        Err(e) => {
            line("cache", false, &e.msg);
            false
        }
    };
    let state_ok = dir_check("state", &crate::cli::default_state_root());
    let openat2 = check_openat2();
    let can_start = userns_ok && cache_ok && state_ok && openat2;
    say!(
        "{}: {}{}",
        if can_start { "ready" } else { "not ready" },
        mapping.describe(),
        if overlay_ok {
            ", overlay root"
        } else {
            ", read-only root only"
        }
    );
    if can_start {
        0
    } else {
        crate::error::EXIT_BINCTR
    }
}

fn check_kernel() {
    let release = nix::sys::utsname::uname()
        .map(|u| {
            format!(
                "{} ({})",
                u.release().to_string_lossy(),
                u.machine().to_string_lossy()
            )
        })
        .unwrap_or_else(|_| "?".into());
    line("kernel", true, &release);
}

/// How a layered image's layers are run here: stacked, or merged and why.
fn check_layers() {
    use crate::rootfs::stacking::{self, Stacking};
    let found = stacking::forced().and_then(|forced| match forced {
        Some(forced) => Ok(Some(forced)),
        None => {
            let root = crate::rootfs::cache_root()?;
            crate::files::private_dir(&root, "cache", "set BINCTR_CACHE")?;
            Ok(stacking::probe(&root))
        }
    });
    match found {
        Ok(Some(Stacking::Stacked)) => line("layers", true, "stacked by overlay"),
        Ok(Some(Stacking::Merged(why))) => {
            line("layers", true, &format!("merged, not stacked: {why}"))
        }
        Ok(None) => line("layers", false, "cannot probe (no user namespace)"),
        Err(e) => line("layers", false, &e.msg),
    }
}

fn check_userns(single: &Mapping) -> bool {
    match userns::run_inside(single, || Ok(())) {
        Ok(()) => {
            let max = fs::read_to_string("/proc/sys/user/max_user_namespaces").unwrap_or_default();
            line(
                "user namespaces",
                true,
                &format!("unprivileged (user.max_user_namespaces={})", max.trim()),
            );
            true
        }
        Err(_) => {
            let why = userns::blocked_reason()
                .unwrap_or_else(|| "the kernel refused to create one".into());
            line("user namespaces", false, &why);
            false
        }
    }
}

/// The subordinate-id mapping, when this machine grants one and its helpers work.
fn check_subid(userns_ok: bool) -> Option<Mapping> {
    let (uids, gids) = match userns::subid_available() {
        Ok(ranges) => ranges,
        Err(why) => {
            line(
                "subordinate ids",
                false,
                &format!("{why}: single mapping, chown/setuid faked"),
            );
            return None;
        }
    };
    let m = Mapping::Subid { uids, gids };
    let works = userns_ok && userns::run_inside(&m, || Ok(())).is_ok();
    line(
        "subordinate ids",
        works,
        &format!(
            "uids {}-{}, gids {}-{} via newuidmap/newgidmap{}",
            uids.start,
            uids.start + uids.count - 1,
            gids.start,
            gids.start + gids.count - 1,
            if works {
                ""
            } else {
                ", but the helpers failed (see above)"
            }
        ),
    );
    works.then_some(m)
}

fn check_openat2() -> bool {
    let openat2 = std::fs::File::open("/")
        .ok()
        .map(|root| {
            crate::rootfs::inroot::open(std::os::fd::AsFd::as_fd(&root), b".", libc::O_DIRECTORY)
                .is_ok()
        })
        .unwrap_or(false);
    line(
        "openat2",
        openat2,
        if openat2 {
            "safe extraction"
        } else {
            "missing (Linux 5.6+ needed)"
        },
    );
    openat2
}

/// A directory binctr must create files in (and, for the cache, run programs from).
fn dir_check(what: &str, dir: &Path) -> bool {
    let existing = dir
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    let writable = nix::unistd::access(existing, nix::unistd::AccessFlags::W_OK).is_ok();
    let noexec = nix::sys::statvfs::statvfs(existing)
        .map(|s| s.flags().contains(nix::sys::statvfs::FsFlags::ST_NOEXEC))
        .unwrap_or(false);
    let (ok, why) = match (writable, noexec) {
        (false, _) => (
            false,
            "not writable: set BINCTR_CACHE (cache) or use --root (state)",
        ),
        (true, true) if what == "cache" => (true, "on a noexec mount: works, through an overlay"),
        _ => (true, "writable"),
    };
    line(what, ok, &format!("{} {why}", dir.display()));
    ok
}

/// Mounts the overlay root as a run would (container/mounts.rs), on a scratch tmpfs
/// inside a new user and mount namespace.
fn overlay_works(mapping: &Mapping) -> bool {
    let dir = std::env::temp_dir().join(format!("binctr-check-{}", std::process::id()));
    if fs::create_dir(&dir).is_err() {
        return false;
    }
    let result = userns::run_inside_with(libc::CLONE_NEWNS, mapping, || {
        let quiet = |_| crate::error::Error::reported(1);
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .map_err(quiet)?;
        mount(
            Some("tmpfs"),
            &dir,
            Some("tmpfs"),
            MsFlags::empty(),
            None::<&str>,
        )
        .map_err(quiet)?;
        for sub in ["lower", "layer", "root", "upper", "work"] {
            fs::create_dir(dir.join(sub)).map_err(|_| crate::error::Error::reported(1))?;
        }
        // Layers stacked as a layered image's are: a whiteout (a 0/0 character device)
        // in the upper one.
        nix::sys::stat::mknod(
            &dir.join("layer/gone"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::empty(),
            0,
        )
        .map_err(quiet)?;
        let upper = crate::container::Upper::Disk {
            dir: dir.clone(),
            kept: false,
        };
        crate::container::mounts::mount_overlay_root(
            &format!(
                "{}:{}",
                crate::container::mounts::escape_overlay(&dir.join("layer")),
                crate::container::mounts::escape_overlay(&dir.join("lower"))
            ),
            &dir,
            &upper,
            &dir.join("root"),
        )
        .map_err(|_| crate::error::Error::reported(1))
    });
    let _ = fs::remove_dir(&dir);
    result.is_ok()
}
