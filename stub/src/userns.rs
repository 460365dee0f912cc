//! The user namespace's id maps (docs/STUB.md steps 4 and 9).
//!
//! Two mappings: *single* (the caller becomes one id inside, root by default) written by
//! ourselves, and *subid* (the caller becomes root, 1..N the caller's subordinate range
//! from /etc/subuid and /etc/subgid) written by the setuid helpers newuidmap/newgidmap,
//! as rootless podman does. Only subid lets an image keep its files' owners and switch
//! users at run time.

use crate::error::{Context, Error, Result};
use crate::log::debug;
use std::fs;
use std::path::Path;
use std::process::Command;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mapping {
    /// The caller's uid and gid appear inside as `uid` and `gid` (0 unless the image
    /// runs as another user: podman's keep-id).
    Single { uid: u32, gid: u32 },
    /// Container 0 is the caller, 1..=count the subordinate ranges.
    Subid { uids: Range, gids: Range },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    pub start: u32,
    pub count: u32,
}

/// `--userns`: which mapping to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Auto,
    Single,
    Subid,
    /// podman's keep-id: a single mapping in which you keep your own uid and gid.
    KeepId,
}

impl Mode {
    pub fn parse(s: &str) -> Result<Mode> {
        match s {
            "auto" | "" => Ok(Mode::Auto),
            "single" => Ok(Mode::Single),
            "subid" => Ok(Mode::Subid),
            "keep-id" => Ok(Mode::KeepId),
            "host" => Err(Error::new(
                "--userns host: binctr always makes a user namespace (it is what lets it run without root): choose auto, single, subid or keep-id",
            )),
            other => Err(Error::new(format!(
                "--userns {}: choose auto, single, subid or keep-id",
                crate::log::printable(other.as_bytes())
            ))),
        }
    }
}

impl Mapping {
    pub fn is_subid(&self) -> bool {
        matches!(self, Mapping::Subid { .. })
    }

    /// The cache keeps one extraction per mapping: files extracted with subordinate
    /// owners mean nothing under a single mapping, and the reverse.
    pub fn cache_suffix(&self) -> String {
        match self {
            Mapping::Single { .. } => String::new(),
            Mapping::Subid { uids, gids } => format!(
                "-subid-{}-{}-{}-{}",
                uids.start, uids.count, gids.start, gids.count
            ),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Mapping::Single { uid, gid } => format!(
                "single mapping: container {uid}:{gid} is you ({}:{})",
                nix::unistd::getuid(),
                nix::unistd::getgid()
            ),
            Mapping::Subid { uids, gids } => format!(
                "subordinate ids: container 0 is you, 1-{} are uids {}-{} and gids {}-{}",
                uids.count,
                uids.start,
                uids.start + uids.count - 1,
                gids.start,
                gids.start + gids.count - 1
            ),
        }
    }
}

/// The subordinate range `/etc/subuid` (or subgid) grants the caller: lines
/// `name-or-id:start:count`; the first matching line.
pub fn subordinate_range(file: &Path, name: &str, id: u32) -> Option<Range> {
    let text = fs::read_to_string(file).ok()?;
    text.lines().find_map(|line| {
        let mut parts = line.trim().split(':');
        let who = parts.next()?;
        let start = parts.next()?.parse().ok()?;
        let count: u32 = parts.next()?.parse().ok()?;
        ((who == name || who == id.to_string()) && count > 0).then_some(Range { start, count })
    })
}

fn user_name(uid: u32) -> Option<String> {
    let text = fs::read_to_string("/etc/passwd").ok()?;
    text.lines().find_map(|line| {
        let mut parts = line.split(':');
        let name = parts.next()?;
        let id: u32 = parts.nth(1)?.parse().ok()?;
        (id == uid).then(|| name.to_string())
    })
}

/// Finds newuidmap/newgidmap in the usual places (PATH may be minimal under systemd).
pub fn helper_path(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin".into(), "/bin".into(), "/usr/sbin".into()])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// What this machine grants the caller for a subid mapping, or why it does not.
pub fn subid_available() -> std::result::Result<(Range, Range), String> {
    let uid = nix::unistd::getuid().as_raw();
    let gid = nix::unistd::getgid().as_raw();
    if helper_path("newuidmap").is_none() || helper_path("newgidmap").is_none() {
        return Err("newuidmap/newgidmap are not installed (Debian: apt install uidmap)".into());
    }
    let name = user_name(uid).unwrap_or_default();
    let uids = subordinate_range(Path::new("/etc/subuid"), &name, uid)
        .ok_or_else(|| format!("/etc/subuid grants no range to {name} (uid {uid})"))?;
    let group = group_name(gid).unwrap_or_else(|| name.clone());
    let gids = subordinate_range(Path::new("/etc/subgid"), &name, uid)
        .or_else(|| subordinate_range(Path::new("/etc/subgid"), &group, gid))
        .ok_or_else(|| format!("/etc/subgid grants no range to {name} (uid {uid})"))?;
    Ok((uids, gids))
}

fn group_name(gid: u32) -> Option<String> {
    let text = fs::read_to_string("/etc/group").ok()?;
    text.lines().find_map(|line| {
        let mut parts = line.split(':');
        let name = parts.next()?;
        let id: u32 = parts.nth(1)?.parse().ok()?;
        (id == gid).then(|| name.to_string())
    })
}

/// Chooses the mapping (a single one maps the caller to root; container/launch.rs
/// moves it to the container user later). `known_good` tells whether a mapping already served this
/// image (its cache entry exists); otherwise `auto` first tries the helpers once and
/// falls back to a single mapping, with a warning, when they fail.
pub fn choose(mode: Mode, known_good: impl Fn(&Mapping) -> bool) -> Result<Mapping> {
    let single = Mapping::Single { uid: 0, gid: 0 };
    match mode {
        Mode::Single | Mode::KeepId => Ok(single),
        Mode::Subid => subid_available()
            .map(|(uids, gids)| Mapping::Subid { uids, gids })
            .map_err(|why| Error::new(format!("--userns subid: {why}"))),
        Mode::Auto => match subid_available() {
            Ok((uids, gids)) => {
                let subid = Mapping::Subid { uids, gids };
                if known_good(&subid) {
                    return Ok(subid);
                }
                match run_inside(&subid, || Ok(())) {
                    Ok(()) => Ok(subid),
                    // No user namespace at all: a single mapping would fail the same way.
                    Err(e) if blocked_reason().is_some() => Err(e),
                    Err(e) => {
                        eprintln!(
                            "binctr: warning: subordinate ids do not work here ({}); using a single mapping (--userns single says so quietly)",
                            e.msg
                        );
                        Ok(single)
                    }
                }
            }
            Err(why) => {
                debug!("userns: no subordinate ids ({why}), single mapping");
                Ok(single)
            }
        },
    }
}

/// Writes the maps of process `pid` (which waits for them).
pub fn write_maps(pid: libc::pid_t, mapping: &Mapping) -> Result<()> {
    debug!("userns: {}", mapping.describe());
    match mapping {
        Mapping::Single { uid, gid } => write_single_maps(pid, *uid, *gid),
        Mapping::Subid { uids, gids } => {
            // No setgroups=deny here: setgroups() must keep working inside (su, apt).
            // Both helpers at once: each is a setuid program's whole start-up.
            let uid_helper =
                spawn_map_helper("newuidmap", pid, nix::unistd::getuid().as_raw(), *uids)?;
            let gid_helper =
                spawn_map_helper("newgidmap", pid, nix::unistd::getgid().as_raw(), *gids);
            let uid_done = finish_map_helper(uid_helper);
            let gid_done = gid_helper.and_then(finish_map_helper);
            uid_done.and(gid_done)
        }
    }
}

struct MapHelper {
    name: &'static str,
    args: Vec<String>,
    child: std::process::Child,
}

fn spawn_map_helper(
    name: &'static str,
    pid: libc::pid_t,
    own: u32,
    range: Range,
) -> Result<MapHelper> {
    let helper = helper_path(name).ok_or_else(|| {
        Error::new(format!(
            "{name} is not installed (Debian: apt install uidmap)"
        ))
    })?;
    let args = vec![
        pid.to_string(),
        "0".into(),
        own.to_string(),
        "1".into(),
        "1".into(),
        range.start.to_string(),
        range.count.to_string(),
    ];
    let child = Command::new(&helper)
        .args(&args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {}", helper.display()))?;
    Ok(MapHelper { name, args, child })
}

/// Waits for a helper; youki ignores this status, but a failed helper means no mapping.
fn finish_map_helper(helper: MapHelper) -> Result<()> {
    let MapHelper { name, args, child } = helper;
    let out = child.wait_with_output().context(name)?;
    if !out.status.success() {
        let why = String::from_utf8_lossy(&out.stderr);
        return Err(Error::new(format!(
            "{name} {} failed: {} (check /etc/sub{}id, or run with --userns single)",
            args.join(" "),
            why.trim(),
            if name == "newuidmap" { "u" } else { "g" }
        )));
    }
    Ok(())
}

/// The single mapping: uid_map, then setgroups=deny (required before an unprivileged
/// gid_map write, CVE-2014-8989), then gid_map.
fn write_single_maps(pid: libc::pid_t, inside_uid: u32, inside_gid: u32) -> Result<()> {
    let uid = nix::unistd::getuid().as_raw();
    let gid = nix::unistd::getgid().as_raw();
    let write = |file: &str, content: String| {
        fs::write(format!("/proc/{pid}/{file}"), content)
            .with_context(|| format!("cannot write the user namespace's {file}"))
            .map_err(with_blocked_hint)
    };
    write("uid_map", format!("{inside_uid} {uid} 1\n"))?;
    write("setgroups", "deny".into())?;
    write("gid_map", format!("{inside_gid} {gid} 1\n"))
}

fn read_sysctl(path: &str) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

/// `e`, with the reason this machine refuses unprivileged user namespaces, if one does.
pub fn with_blocked_hint(mut e: Error) -> Error {
    if let Some(why) = blocked_reason() {
        e.msg = format!("{} ({why})", e.msg);
    }
    e
}

/// The sysctl or AppArmor rule that blocks unprivileged user namespaces, if one does.
pub fn blocked_reason() -> Option<String> {
    if read_sysctl("/proc/sys/user/max_user_namespaces").as_deref() == Some("0") {
        return Some("user namespaces are switched off: sysctl user.max_user_namespaces=0; an administrator can raise it".into());
    }
    if read_sysctl("/proc/sys/kernel/unprivileged_userns_clone").as_deref() == Some("0") {
        return Some("unprivileged user namespaces are switched off: sysctl kernel.unprivileged_userns_clone=0; an administrator can set it to 1".into());
    }
    if read_sysctl("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").as_deref() == Some("1")
    {
        return Some("AppArmor restricts unprivileged user namespaces: sysctl kernel.apparmor_restrict_unprivileged_userns=1; an administrator can add an AppArmor profile with 'userns,' for this file".into());
    }
    None
}

/// Runs `work` in a child process inside a new user namespace with `mapping` (as its
/// root), and waits for it: extraction and removal of files owned by subordinate ids
/// must happen where those ids exist. The child reports its own errors.
pub fn run_inside(mapping: &Mapping, work: impl FnOnce() -> Result<()>) -> Result<()> {
    run_inside_with(0, mapping, work)
}

/// [`run_inside`], with more namespaces (`CLONE_NEW*` flags) for the child.
pub fn run_inside_with(
    extra: libc::c_int,
    mapping: &Mapping,
    work: impl FnOnce() -> Result<()>,
) -> Result<()> {
    use std::io::{Read, Write};
    let (go_read, go_write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("cannot create a pipe")?;
    let pid = crate::sys::clone_into_namespaces(libc::CLONE_NEWUSER | extra)
        .context("cannot create a user namespace")
        .map_err(with_blocked_hint)?;
    if pid == 0 {
        drop(go_write);
        let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
        let mut byte = [0u8; 1];
        if !matches!(fs::File::from(go_read).read(&mut byte), Ok(1)) {
            crate::sys::exit_now(crate::error::EXIT_BINCTR);
        }
        crate::sys::exit_now(exit_code_of(work()));
    }
    drop(go_read);
    let child = nix::unistd::Pid::from_raw(pid);
    if let Err(e) = write_maps(pid, mapping) {
        let _ = nix::sys::signal::kill(child, nix::sys::signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(child, None);
        return Err(e);
    }
    let _ = fs::File::from(go_write).write_all(b"1");
    wait_for(child)
}

/// Runs `work` in a child process that joins the user namespace `ns` (a descriptor
/// of /proc/PID/ns/user of a namespace the caller owns): its root there, with its
/// capabilities over the namespace's ids. No helper runs: the maps exist already.
pub fn run_joined(ns: &fs::File, work: impl FnOnce() -> Result<()>) -> Result<()> {
    let pid = crate::sys::fork().context("cannot fork")?;
    if pid == 0 {
        // A monitor has joined it already (spawn.rs): setns to one's own user namespace
        // is refused (EINVAL), and not needed.
        let joined = match is_current(ns) {
            true => Ok(()),
            false => nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWUSER)
                .context("cannot join the container's user namespace"),
        };
        crate::sys::exit_now(exit_code_of(joined.and_then(|()| work())));
    }
    wait_for(nix::unistd::Pid::from_raw(pid))
}

/// Whether `ns` is the user namespace this process is in.
fn is_current(ns: &fs::File) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (fs::metadata("/proc/self/ns/user"), ns.metadata()) {
        (Ok(c), Ok(g)) => (c.dev(), c.ino()) == (g.dev(), g.ino()),
        _ => false,
    }
}

/// A child's result as its exit code (it reports its own error).
fn exit_code_of(result: Result<()>) -> i32 {
    match result {
        Ok(()) => 0,
        Err(e) => {
            e.report(crate::log::debug_enabled());
            e.code
        }
    }
}

/// Waits for a child of [`run_inside`] or [`run_joined`]: Ok when it exited 0.
fn wait_for(child: nix::unistd::Pid) -> Result<()> {
    use nix::sys::wait::{waitpid, WaitStatus};
    loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, 0)) => return Ok(()),
            Ok(WaitStatus::Exited(_, code)) => return Err(Error::reported(code)),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Err(Error::reported(128 + sig as i32)),
            Err(nix::errno::Errno::EINTR) | Ok(_) => continue,
            Err(e) => return Err(e).context("waitpid"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subordinate_ranges_match_by_name_or_id() {
        // A new directory of our own (create_dir refuses one that is there already, and
        // the name is unpredictable): nobody else's link can be written through.
        let dir = std::env::temp_dir().join(format!(
            "binctr-subid-{}-{}",
            std::process::id(),
            crate::files::random_hex()
        ));
        fs::create_dir(&dir).unwrap();
        let file = dir.join("subuid");
        fs::write(
            &file,
            "alice:100000:65536\n# comment\n1001:200000:1000\nbob:bad:1\n",
        )
        .unwrap();
        assert_eq!(
            subordinate_range(&file, "alice", 5),
            Some(Range {
                start: 100000,
                count: 65536
            })
        );
        assert_eq!(
            subordinate_range(&file, "carol", 1001),
            Some(Range {
                start: 200000,
                count: 1000
            })
        );
        assert_eq!(subordinate_range(&file, "bob", 7), None);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn cache_keys_differ_by_mapping() {
        let single = Mapping::Single { uid: 0, gid: 0 };
        let keep_id = Mapping::Single {
            uid: 1000,
            gid: 1000,
        };
        let r = Range {
            start: 100000,
            count: 65536,
        };
        let subid = Mapping::Subid { uids: r, gids: r };
        assert_eq!(single.cache_suffix(), keep_id.cache_suffix());
        assert_ne!(single.cache_suffix(), subid.cache_suffix());
    }
}
