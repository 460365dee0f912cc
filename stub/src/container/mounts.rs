//! The container's filesystem, built inside its new mount namespace (docs/STUB.md
//! step 11): private propagation, a scratch tmpfs, the root (overlay or read-only
//! bind), /proc, /dev, /sys, the /etc files, then pivot_root.
//!
//! Every mount target inside the new root is opened with openat2(RESOLVE_IN_ROOT) and
//! mounted on through /proc/self/fd/N, so a symlink in the image cannot point a mount
//! at a host path.

use super::launch::Launch;
use super::layer::Upper;
use crate::error::{Context, Error, Result};
use crate::log::debug;
use crate::rootfs::{inroot, Rootfs};
use crate::sys;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use std::ffi::CString;
use std::fs;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{symlink, DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

const NONE: Option<&str> = None;

/// Host device nodes bind-mounted into the container's /dev.
const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// Builds the container's root and moves into it.
pub fn setup(launch: &Launch<'_>, rootfs: &Rootfs, upper: Option<&Upper>) -> Result<()> {
    let plan = launch.plan;
    debug!("mounts: making all mounts private");
    mount(NONE, "/", NONE, MsFlags::MS_REC | MsFlags::MS_PRIVATE, NONE)
        .context("cannot make mounts private")?;

    // The scratch tmpfs holds the new root's mount point and the /etc copies; with
    // --writable-tmpfs the writable layer too, and then it has that size.
    let scratch = rootfs.scratch();
    let size = match upper {
        Some(Upper::Tmpfs(size)) => size.as_str(),
        _ => "16m",
    };
    let options = format!("mode=0755,size={size}");
    debug!("mounts: scratch tmpfs on {} ({options})", scratch.display());
    mount(
        Some("tmpfs"),
        &scratch,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(options.as_str()),
    )
    .with_context(|| format!("cannot mount a tmpfs on {}", scratch.display()))?;
    let newroot = scratch.join("root");
    mkdir(&newroot, 0o755)?;
    // The layers by descriptor: short names (64 layers fit in a page of options) for
    // the very directories checked on the host.
    let lowers = rootfs.lowers_for_mount()?;
    let lowerdir = lowers
        .iter()
        .map(|fd| fd_path(fd).to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(":");
    match upper {
        None => mount_read_only_root(&lowerdir, rootfs.single_lower(), &scratch, &newroot)?,
        Some(upper) => mount_overlay_root(&lowerdir, &scratch, upper, &newroot)?,
    }
    drop(lowers);

    let root = open_path(&newroot)?;
    mount_proc(root.as_fd())?;
    setup_dev(root.as_fd(), &plan.shm_size)?;
    mount_sys(root.as_fd(), plan.net_none)?;
    if plan.mask_paths {
        mask_paths(root.as_fd())?;
    }
    setup_etc(root.as_fd(), &scratch, plan)?;
    // Before the volumes: this writes into the root, never into a volume.
    if launch.fake_root && !plan.read_only {
        apt_without_sandbox(root.as_fd());
    }
    for volume in &plan.volumes {
        mount_volume(root.as_fd(), volume, plan.read_only)?;
    }
    for device in &plan.devices {
        debug!(
            "mounts: device {} on {}",
            device.source.display(),
            device.target
        );
        let target = volume_target(root.as_fd(), &device.target, true, false)?;
        mount(
            Some(&device.source),
            &fd_path(&target),
            NONE,
            MsFlags::MS_BIND,
            NONE,
        )
        .with_context(|| format!("cannot bind the device {}", device.source.display()))?;
    }
    for tmpfs in &plan.tmpfs {
        mount_tmpfs(root.as_fd(), tmpfs, plan.read_only)?;
    }
    drop(root);
    pivot_into(&newroot)
}

fn mkdir(path: &Path, mode: u32) -> Result<()> {
    fs::DirBuilder::new()
        .mode(mode)
        .create(path)
        .with_context(|| format!("cannot create {}", path.display()))
}

fn open_path(path: &Path) -> Result<OwnedFd> {
    fs::File::options()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
        .open(path)
        .map(OwnedFd::from)
        .with_context(|| format!("cannot open {}", path.display()))
}

/// Opens `path` inside the new root, as the container will resolve it.
fn open_in_root(root: BorrowedFd<'_>, path: &str, flags: libc::c_int) -> std::io::Result<OwnedFd> {
    inroot::open(root, path.as_bytes(), flags)
}

/// The path through which the kernel reaches an open descriptor.
fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// A directory of the new root to mount on.
fn mount_point(root: BorrowedFd<'_>, path: &str) -> Result<OwnedFd> {
    open_in_root(root, path, libc::O_DIRECTORY).with_context(|| {
        format!("cannot open /{path} in the container (the image needs a /{path} directory)")
    })
}

/// `\`, `,` and `:` would split overlay's option string.
pub fn escape_overlay(path: &Path) -> String {
    let mut out = String::new();
    for c in path.to_string_lossy().chars() {
        if matches!(c, '\\' | ',' | ':') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The root as an overlay: the cached rootfs (or the image's layers, `lowerdir`'s
/// order: top first) below, the writable layer above (on disk beside the cache, kept in
/// --overlay DIR, or on the scratch tmpfs). `--check` mounts it too, to see that it
/// works.
pub fn mount_overlay_root(
    lowerdir: &str,
    scratch: &Path,
    upper: &Upper,
    newroot: &Path,
) -> Result<()> {
    // A layer on disk was made (0700) and locked by the monitor; a kept one survives
    // the run, so no `volatile` (its next mount would refuse a dirty one).
    let (base, volatile, other_fs) = match upper {
        Upper::Tmpfs(_) => {
            for sub in ["upper", "work"] {
                mkdir(&scratch.join(sub), 0o755)?;
            }
            (scratch.to_path_buf(), ",volatile", true)
        }
        Upper::Disk { dir, kept: false } => (dir.clone(), ",volatile", false),
        Upper::Disk { dir, kept: true } => (dir.clone(), "", true),
    };
    // userxattr: the only mode an unprivileged overlay has (5.11+).
    let options = format!(
        "lowerdir={lowerdir},upperdir={},workdir={},userxattr{volatile}",
        escape_overlay(&base.join("upper")),
        escape_overlay(&base.join("work"))
    );
    let kept = matches!(upper, Upper::Disk { kept: true, .. }).then_some(base.as_path());
    // Layers on two filesystems: xino keeps readdir's d_ino equal to stat's st_ino.
    if other_fs {
        let with_xino = format!("{options},xino=on");
        debug!("mounts: overlay root ({with_xino})");
        match mount_overlay(&with_xino, newroot) {
            Ok(()) => return Ok(()),
            Err(e) => debug!(
                "mounts: xino refused ({}): inode numbers of merged directories may differ between readdir and stat",
                e.desc()
            ),
        }
    }
    debug!("mounts: overlay root ({options})");
    mount_overlay(&options, newroot).map_err(|e| overlay_error(e, kept))
}

fn mount_overlay(options: &str, newroot: &Path) -> nix::Result<()> {
    mount(
        Some("overlay"),
        newroot,
        Some("overlay"),
        MsFlags::empty(),
        Some(options),
    )
}

fn overlay_error(e: nix::errno::Errno, kept: Option<&Path>) -> Error {
    match (e, kept) {
        (nix::errno::Errno::EBUSY, Some(dir)) => Error::new(format!(
            "--overlay {}: in use by another running container",
            dir.display()
        )),
        (e, Some(dir)) => Error::new(format!(
            "cannot mount the overlay with the writable layer in {} ({}): it needs a filesystem with user xattrs (ext4, xfs, btrfs, tmpfs)",
            dir.display(),
            e.desc()
        )),
        (e, None) => Error::new(format!(
            "the kernel refused overlayfs in a user namespace ({}; it needs Linux 5.11 or newer): run with --read-only (a layered image with BINCTR_LAYERS=merged)",
            e.desc()
        )),
    }
}

/// `--read-only`: an overlay with two lower layers (the rootfs, an empty directory) and
/// no upper. Without an upper layer overlayfs has nowhere to write, whatever the
/// container does (even with CAP_SYS_ADMIN and seccomp off, a remount cannot make it
/// writable), and it does not inherit the cache filesystem's locked noexec/nosuid.
/// Where the kernel refuses overlayfs, a bind of the rootfs remounted read-only (format
/// 1 and merged layers: `single`; stacked layers cannot do without overlay).
fn mount_read_only_root(
    lowerdir: &str,
    single: Option<&Path>,
    scratch: &Path,
    newroot: &Path,
) -> Result<()> {
    let empty = scratch.join("empty");
    mkdir(&empty, 0o755)?;
    let options = format!("lowerdir={lowerdir}:{},userxattr", escape_overlay(&empty));
    debug!("mounts: read-only overlay root ({options})");
    let refused = match mount(
        Some("overlay"),
        newroot,
        Some("overlay"),
        MsFlags::MS_RDONLY,
        Some(options.as_str()),
    ) {
        Ok(()) => return Ok(()),
        Err(e) => e,
    };
    let Some(lower) = single else {
        return Err(Error::new(format!(
            "the kernel refused overlayfs in a user namespace ({}; it needs Linux 5.11 or newer): run a layered image with BINCTR_LAYERS=merged",
            refused.desc()
        )));
    };
    let locked = locked_flags(lower)?;
    if locked.intersects(MsFlags::MS_NOEXEC | MsFlags::MS_NOSUID) {
        // A bind keeps the cache filesystem's noexec/nosuid (the kernel locks them), so
        // nothing could run.
        return Err(Error::new(format!(
            "the cache is on a noexec or nosuid mount and the kernel refused overlayfs in a user namespace ({}): set BINCTR_CACHE to a directory where programs may run",
            refused.desc()
        )));
    }
    debug!(
        "mounts: overlayfs refused ({}), read-only bind of {} (a container given CAP_SYS_ADMIN could remount it)",
        refused.desc(),
        lower.display()
    );
    mount(
        Some(lower),
        newroot,
        NONE,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        NONE,
    )
    .with_context(|| format!("cannot bind {}", lower.display()))?;
    // A remount must keep the flags the kernel locked on the cache's filesystem.
    mount(
        NONE,
        newroot,
        NONE,
        MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY | locked,
        NONE,
    )
    .context("cannot make the root read-only")
}

fn locked_flags(path: &Path) -> Result<MsFlags> {
    use nix::sys::statvfs::{statvfs, FsFlags};
    let st = statvfs(path).with_context(|| format!("cannot statvfs {}", path.display()))?;
    let mut flags = MsFlags::empty();
    for (fs_flag, ms_flag) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
    ] {
        if st.flags().contains(fs_flag) {
            flags |= ms_flag;
        }
    }
    Ok(flags)
}

fn mount_proc(root: BorrowedFd<'_>) -> Result<()> {
    debug!("mounts: /proc");
    let target = mount_point(root, "proc")?;
    mount(
        Some("proc"),
        &fd_path(&target),
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        NONE,
    )
    .context("cannot mount /proc for the container's pid namespace")
}

fn setup_dev(root: BorrowedFd<'_>, shm_size: &str) -> Result<()> {
    debug!("mounts: /dev");
    let target = mount_point(root, "dev")?;
    mount(
        Some("tmpfs"),
        &fd_path(&target),
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("mode=0755,size=65536k"),
    )
    .context("cannot mount a tmpfs on /dev")?;
    // Reopen: the descriptor above is the directory under the new tmpfs.
    let dev_fd = mount_point(root, "dev")?;
    let dev = fd_path(&dev_fd);
    for name in DEVICES {
        let node = dev.join(name);
        fs::File::create(&node).with_context(|| format!("cannot create /dev/{name}"))?;
        let host = Path::new("/dev").join(name);
        mount(Some(&host), &node, NONE, MsFlags::MS_BIND, NONE)
            .with_context(|| format!("cannot bind {}", host.display()))?;
    }
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        symlink(target, dev.join(link)).with_context(|| format!("cannot create /dev/{link}"))?;
    }
    mkdir(&dev.join("pts"), 0o755)?;
    mount(
        Some("devpts"),
        &dev.join("pts"),
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )
    .context("cannot mount devpts on /dev/pts")?;
    mkdir(&dev.join("shm"), 0o1777)?;
    mount(
        Some("shm"),
        &dev.join("shm"),
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(format!("mode=1777,size={shm_size}").as_str()),
    )
    .context("cannot mount /dev/shm")?;
    mkdir(&dev.join("mqueue"), 0o755)?;
    if let Err(e) = mount(
        Some("mqueue"),
        &dev.join("mqueue"),
        Some("mqueue"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        NONE,
    ) {
        debug!("mounts: no /dev/mqueue ({e})");
    }
    Ok(())
}

fn mount_sys(root: BorrowedFd<'_>, own_net: bool) -> Result<()> {
    let target_fd = mount_point(root, "sys")?;
    let target = fd_path(&target_fd);
    if own_net {
        // A network namespace of our own lets us mount a sysfs that shows only it.
        debug!("mounts: /sys (new, read-only)");
        return mount(
            Some("sysfs"),
            &target,
            Some("sysfs"),
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            NONE,
        )
        .context("cannot mount /sys");
    }
    debug!("mounts: /sys (read-only bind of the host's)");
    mount(
        Some("/sys"),
        &target,
        NONE,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        NONE,
    )
    .context("cannot bind /sys")?;
    // Reopen: the descriptor above is the directory under the new mount.
    let target_fd = mount_point(root, "sys")?;
    let target = fd_path(&target_fd);
    let path = CString::new(target.as_os_str().as_encoded_bytes()).context("bad path")?;
    let attrs = sys::MOUNT_ATTR_RDONLY
        | sys::MOUNT_ATTR_NOSUID
        | sys::MOUNT_ATTR_NODEV
        | sys::MOUNT_ATTR_NOEXEC;
    if let Err(e) = sys::mount_setattr_recursive(&path, attrs) {
        // Before 5.12: a remount reaches the top mount only.
        debug!("mounts: mount_setattr failed ({e}), remounting /sys read-only");
        mount(
            NONE,
            &target,
            NONE,
            MsFlags::MS_REMOUNT
                | MsFlags::MS_BIND
                | MsFlags::MS_RDONLY
                | MsFlags::MS_NOSUID
                | MsFlags::MS_NODEV
                | MsFlags::MS_NOEXEC,
            NONE,
        )
        .context("cannot make /sys read-only")?;
    }
    Ok(())
}

/// /etc/resolv.conf and /etc/hosts from the host, /etc/hostname with our hostname: copies
/// on the scratch tmpfs, so the container may edit them without touching the host's.
/// --add-host lines are appended to the hosts copy; --dns replaces the nameservers.
fn setup_etc(root: BorrowedFd<'_>, scratch: &Path, plan: &crate::cli::RunPlan) -> Result<()> {
    let read_only = plan.read_only;
    let host_resolv = fs::read("/etc/resolv.conf").unwrap_or_default();
    let resolv = match plan.dns.is_empty() {
        true => host_resolv,
        false => with_nameservers(&host_resolv, &plan.dns),
    };
    let mut hosts = fs::read("/etc/hosts").unwrap_or_else(|_| {
        b"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n".to_vec()
    });
    for (name, ip) in &plan.hosts {
        hosts.extend_from_slice(format!("{ip}\t{name}\n").as_bytes());
    }
    let files = [
        ("resolv.conf", resolv),
        ("hosts", hosts),
        ("hostname", format!("{}\n", plan.hostname).into_bytes()),
    ];
    for (name, content) in files {
        let copy = scratch.join(name);
        fs::write(&copy, content).with_context(|| format!("cannot write {}", copy.display()))?;
        let target = match etc_target(root, name, read_only) {
            Ok(fd) => fd,
            Err(e) => {
                debug!("mounts: /etc/{name} left as the image has it ({e})");
                continue;
            }
        };
        debug!("mounts: /etc/{name}");
        mount(Some(&copy), &fd_path(&target), NONE, MsFlags::MS_BIND, NONE)
            .with_context(|| format!("cannot bind /etc/{name}"))?;
    }
    Ok(())
}

/// --dns: the host's resolv.conf with its nameserver lines replaced by these (its
/// `search` and `options` lines stay, as docker keeps them).
fn with_nameservers(host: &[u8], servers: &[String]) -> Vec<u8> {
    let mut out: Vec<u8> = servers
        .iter()
        .flat_map(|ip| format!("nameserver {ip}\n").into_bytes())
        .collect();
    for line in host.split(|&b| b == b'\n') {
        let word = line
            .split(|b| b.is_ascii_whitespace())
            .find(|w| !w.is_empty());
        if matches!(word, Some(b"search" | b"domain" | b"options")) {
            out.extend_from_slice(line);
            out.push(b'\n');
        }
    }
    out
}

/// The file to mount /etc/NAME on; in a writable root, a dangling symlink or missing file
/// is replaced by an empty file (in the ephemeral upper layer).
fn etc_target(root: BorrowedFd<'_>, name: &str, read_only: bool) -> std::io::Result<OwnedFd> {
    let path = format!("etc/{name}");
    match inroot::open_same_fs(root, path.as_bytes(), 0) {
        Ok(fd) => return Ok(fd),
        Err(e) if read_only => return Err(e),
        Err(_) => {}
    }
    inroot::replace_file(root, b"etc", name.as_bytes(), b"", 0o644)?;
    inroot::open_same_fs(root, path.as_bytes(), 0)
}

/// pivot_root(".", ".") then detach the old root under it (bubblewrap's way: no
/// directory for the old root is needed, and nothing of the host stays reachable).
fn pivot_into(newroot: &Path) -> Result<()> {
    debug!("mounts: pivot_root into {}", newroot.display());
    nix::unistd::chdir(newroot)
        .with_context(|| format!("cannot chdir to {}", newroot.display()))?;
    nix::unistd::pivot_root(".", ".").context("pivot_root failed")?;
    umount2(".", MntFlags::MNT_DETACH).context("cannot detach the old root")?;
    nix::unistd::chdir("/").context("cannot chdir to /")?;
    Ok(())
}

/// The mount point for a volume or tmpfs: created (a directory, or an empty file when
/// `file` is set) in a writable root when the image lacks it.
fn volume_target(
    root: BorrowedFd<'_>,
    target: &str,
    file: bool,
    read_only: bool,
) -> Result<OwnedFd> {
    let path = target.trim_start_matches('/').as_bytes();
    match inroot::open(root, path, 0) {
        Ok(fd) => return Ok(fd),
        Err(e) if read_only || e.raw_os_error() != Some(libc::ENOENT) => {
            return Err(Error::new(format!(
                "cannot mount on {target} in the container: {}{}",
                crate::error::plain(&e.to_string()),
                if read_only {
                    " (the root is read-only, so it cannot be created)"
                } else {
                    ""
                }
            )))
        }
        Err(_) => {}
    }
    let (parent, name) = inroot::split_parent(path);
    let made = inroot::mkdir_all(root, parent, 0o755).and_then(|dir| {
        if file {
            inroot::create_file_at(dir.as_fd(), name, 0o644)
        } else {
            inroot::mkdir_at(dir.as_fd(), name, 0o755)
        }
    });
    made.and_then(|()| inroot::open(root, path, 0))
        .with_context(|| format!("cannot create the mount point {target} in the container"))
}

fn mount_volume(
    root: BorrowedFd<'_>,
    volume: &crate::cli::Volume,
    read_only_root: bool,
) -> Result<()> {
    debug!(
        "mounts: volume {} on {}{}",
        volume.source.display(),
        volume.target,
        if volume.read_only { " (read-only)" } else { "" }
    );
    let is_file = !volume.source.is_dir();
    let target = volume_target(root, &volume.target, is_file, read_only_root)?;
    mount(
        Some(&volume.source),
        &fd_path(&target),
        NONE,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        NONE,
    )
    .with_context(|| {
        format!(
            "cannot bind {} on {}",
            volume.source.display(),
            volume.target
        )
    })?;
    if volume.read_only {
        let target = volume_target(root, &volume.target, is_file, true)?;
        make_read_only(&fd_path(&target))
            .with_context(|| format!("cannot make {} read-only", volume.target))?;
    }
    Ok(())
}

fn mount_tmpfs(
    root: BorrowedFd<'_>,
    tmpfs: &crate::cli::Tmpfs,
    read_only_root: bool,
) -> Result<()> {
    debug!("mounts: tmpfs on {} ({})", tmpfs.target, tmpfs.data);
    let target = volume_target(root, &tmpfs.target, false, read_only_root)?;
    mount(
        Some("tmpfs"),
        &fd_path(&target),
        Some("tmpfs"),
        tmpfs.flags,
        Some(tmpfs.data.as_str()),
    )
    .with_context(|| format!("cannot mount a tmpfs on {} ({})", tmpfs.target, tmpfs.data))
}

/// Read-only, recursively (mount_setattr, 5.12+), else by a remount of the top mount
/// keeping the flags the kernel locked.
fn make_read_only(target: &Path) -> Result<()> {
    let path = CString::new(target.as_os_str().as_encoded_bytes()).context("bad path")?;
    if sys::mount_setattr_recursive(&path, sys::MOUNT_ATTR_RDONLY).is_ok() {
        return Ok(());
    }
    let locked = locked_flags(target)?;
    mount(
        NONE,
        target,
        NONE,
        MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY | locked,
        NONE,
    )
    .context("remount failed")
}

/// What docker hides from a container (kernel memory, keys, timers, firmware).
const MASKED_PATHS: [&str; 11] = [
    "proc/asound",
    "proc/acpi",
    "proc/kcore",
    "proc/keys",
    "proc/latency_stats",
    "proc/timer_list",
    "proc/timer_stats",
    "proc/sched_debug",
    "proc/scsi",
    "sys/firmware",
    "sys/devices/virtual/powercap",
];

/// What docker leaves visible but read-only.
const READ_ONLY_PATHS: [&str; 5] = [
    "proc/bus",
    "proc/fs",
    "proc/irq",
    "proc/sys",
    "proc/sysrq-trigger",
];

/// Docker's masked paths (a file gets /dev/null over it, a directory an empty read-only
/// tmpfs) and read-only paths (bound on themselves, remounted read-only).
fn mask_paths(root: BorrowedFd<'_>) -> Result<()> {
    debug!("mounts: masking and read-only paths of /proc and /sys");
    for path in MASKED_PATHS {
        let Ok(target) = inroot::open(root, path.as_bytes(), 0) else {
            continue; // not on this kernel
        };
        let is_dir = fs::metadata(fd_path(&target)).is_ok_and(|m| m.is_dir());
        let result = if is_dir {
            mount(
                Some("tmpfs"),
                &fd_path(&target),
                Some("tmpfs"),
                MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some("size=0,mode=0555"),
            )
        } else {
            mount(
                Some("/dev/null"),
                &fd_path(&target),
                NONE,
                MsFlags::MS_BIND,
                NONE,
            )
        };
        result.with_context(|| format!("cannot mask /{path}"))?;
    }
    for path in READ_ONLY_PATHS {
        let Ok(target) = inroot::open(root, path.as_bytes(), 0) else {
            continue;
        };
        mount(
            Some(&fd_path(&target)),
            &fd_path(&target),
            NONE,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            NONE,
        )
        .with_context(|| format!("cannot bind /{path}"))?;
        let target = inroot::open(root, path.as_bytes(), 0)
            .with_context(|| format!("cannot reopen /{path}"))?;
        make_read_only(&fd_path(&target))
            .with_context(|| format!("cannot make /{path} read-only"))?;
    }
    Ok(())
}

/// Under the fake-root filter setuid() "succeeds" without effect, and apt, which checks
/// that it really became its sandbox user _apt, would stop ("Method http has died").
/// As charliecloud does, tell apt to stay root, in a file of this run's writable layer.
fn apt_without_sandbox(root: BorrowedFd<'_>) {
    let dir = b"etc/apt/apt.conf.d";
    if inroot::open_same_fs(root, dir, libc::O_DIRECTORY).is_err() {
        return; // not a Debian-family image
    }
    let text = "// Written by binctr for this run only: with a single id mapping the fake-root\n\
                // filter makes setuid() a no-op, so apt must not drop to its sandbox user.\n\
                APT::Sandbox::User \"root\";\n";
    // Replaced, never written through: the image (or an earlier run's kept layer) may
    // have put a symlink or a FIFO there.
    match inroot::replace_file(root, dir, b"99binctr-fake-root", text.as_bytes(), 0o644) {
        Ok(()) => debug!("mounts: apt told to keep root (fake root)"),
        Err(e) => debug!("mounts: cannot write /etc/apt/apt.conf.d/99binctr-fake-root: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_replaces_nameservers_and_keeps_search_and_options() {
        let host = b"# generated\nnameserver 10.0.0.1\nsearch corp.example\noptions ndots:2\nnameserver 10.0.0.2\n";
        let out = with_nameservers(host, &["1.1.1.1".to_string()]);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "nameserver 1.1.1.1\nsearch corp.example\noptions ndots:2\n"
        );
    }
}
