//! A persistent user namespace per user and subordinate-id mapping, as rootless
//! podman's pause process keeps one: the helpers newuidmap and newgidmap (two setuid
//! programs, the most expensive part of a start) run once, when the holder is made;
//! later starts join its namespace.
//!
//! The holder is a tiny process (the stub, forked: no open files, cwd `/`, a session
//! of its own, terminal signals ignored, sleeping) whose user namespace carries the
//! mapping. Its record, `binctr-userns/userns-<mapping>.json` in $XDG_RUNTIME_DIR (else
//! /tmp/binctr-userns-UID), says which process and
//! which namespace (pid, inode of /proc/PID/ns/user). A start trusts the record only
//! after checking, through a descriptor of that namespace, that its inode is the
//! recorded one, that the caller owns it, and that its uid_map and gid_map are the
//! mapping's: a recycled pid can never make us join another namespace.
//!
//! Killing the holder is harmless: the next start makes a new one. `--cache-rm all`
//! stops it.

use crate::error::{Context, Error, Result};
use crate::files::{private_dir, write_atomically};
use crate::log::debug;
use crate::sys;
use crate::userns::{self, Mapping, Range};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The holder's namespace, opened and checked.
pub struct Holder {
    /// /proc/PID/ns/user of the holder.
    pub userns: File,
}

/// Where the holders' records are: one place per user, whatever --root says
/// ($XDG_RUNTIME_DIR/binctr-userns, else /tmp/binctr-userns-UID).
pub fn records_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(dir) if Path::new(&dir).is_dir() => PathBuf::from(dir).join("binctr-userns"),
        _ => PathBuf::from(format!("/tmp/binctr-userns-{}", nix::unistd::getuid())),
    }
}

/// The holder of `mapping` (subordinate ids only), made if there is none that checks.
pub fn get(mapping: &Mapping) -> Result<Holder> {
    let Mapping::Subid { uids, gids } = mapping else {
        return Err(Error::new("only subordinate-id mappings have a holder"));
    };
    let dir = records_dir();
    private_dir(
        &dir,
        "userns",
        "set XDG_RUNTIME_DIR to a directory of your own",
    )?;
    let record = record_path(&dir, *uids, *gids);
    if let Some(holder) = join_recorded(&record, *uids, *gids) {
        debug!(
            "userns: {} (the held namespace of {})",
            mapping.describe(),
            record.display()
        );
        return Ok(holder);
    }
    let holder = make(mapping)?;
    let st =
        nix::sys::stat::fstat(holder.1.userns.as_raw_fd()).context("cannot stat a namespace")?;
    let text = format!(
        "{{\"pid\":{},\"ns_dev\":{},\"ns_ino\":{}}}\n",
        holder.0, st.st_dev, st.st_ino
    );
    write_atomically(&record, text.as_bytes())?;
    debug!("userns: a holder (pid {}) keeps the namespace", holder.0);
    Ok(holder.1)
}

/// Whether a holder of `mapping` is there and checks (its mapping then works here).
pub fn is_held(mapping: &Mapping) -> bool {
    match mapping {
        Mapping::Subid { uids, gids } => {
            join_recorded(&record_path(&records_dir(), *uids, *gids), *uids, *gids).is_some()
        }
        Mapping::Single { .. } => false,
    }
}

/// Stops the holders this user has (`--cache-rm all`).
pub fn stop_all() {
    let Ok(listing) = std::fs::read_dir(records_dir()) else {
        return;
    };
    for entry in listing.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !(name.starts_with("userns-") && name.ends_with(".json")) {
            continue;
        }
        if let Some((pid, _, _)) = read_record(&entry.path()) {
            // Only a process of ours whose namespace is the recorded one.
            if verified(&entry.path(), pid).is_some() {
                let _ = sys::send_signal(pid, libc::SIGKILL);
            }
        }
        let _ = std::fs::remove_file(entry.path());
    }
}

fn record_path(root: &Path, uids: Range, gids: Range) -> PathBuf {
    root.join(format!(
        "userns-{}-{}-{}-{}.json",
        uids.start, uids.count, gids.start, gids.count
    ))
}

fn read_record(path: &Path) -> Option<(libc::pid_t, u64, u64)> {
    let mut text = String::new();
    File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .ok()?
        .take(4096)
        .read_to_string(&mut text)
        .ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    Some((
        i32::try_from(value["pid"].as_i64()?).ok()?,
        value["ns_dev"].as_u64()?,
        value["ns_ino"].as_u64()?,
    ))
}

/// The recorded holder's namespace, if the record's pid still has it.
fn verified(record: &Path, pid: libc::pid_t) -> Option<File> {
    let (_, dev, ino) = read_record(record)?;
    // A killed holder not yet reaped (a zombie) still shows its namespace: gone.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let state = stat.rsplit_once(") ")?.1.chars().next()?;
    if matches!(state, 'Z' | 'X' | 'x') {
        return None;
    }
    let ns = File::open(format!("/proc/{pid}/ns/user")).ok()?;
    let st = nix::sys::stat::fstat(ns.as_raw_fd()).ok()?;
    (st.st_dev as u64 == dev && st.st_ino == ino).then_some(ns)
}

/// The recorded holder, when its namespace is the recorded one, ours, and mapped as
/// asked.
fn join_recorded(record: &Path, uids: Range, gids: Range) -> Option<Holder> {
    let (pid, _, _) = read_record(record)?;
    let userns = verified(record, pid)?;
    let owner = sys::namespace_owner(userns.as_fd()).ok()?;
    if owner != nix::unistd::getuid().as_raw() {
        return None;
    }
    let me = (
        nix::unistd::getuid().as_raw(),
        nix::unistd::getgid().as_raw(),
    );
    let maps_ok = map_is(pid, "uid_map", me.0, uids) && map_is(pid, "gid_map", me.1, gids);
    // The maps were read by pid: check that pid still holds the same namespace.
    let still = verified(record, pid)?;
    let same = nix::sys::stat::fstat(still.as_raw_fd()).ok()?.st_ino
        == nix::sys::stat::fstat(userns.as_raw_fd()).ok()?.st_ino;
    (maps_ok && same).then_some(Holder { userns })
}

/// /proc/PID/uid_map (or gid_map) is exactly "0 OWN 1" and "1 START COUNT".
fn map_is(pid: libc::pid_t, file: &str, own: u32, range: Range) -> bool {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/{file}")) else {
        return false;
    };
    let lines: Vec<Vec<u64>> = text
        .lines()
        .map(|l| {
            l.split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect()
        })
        .collect();
    lines
        == vec![
            vec![0, u64::from(own), 1],
            vec![1, u64::from(range.start), u64::from(range.count)],
        ]
}

/// Makes a holder: an intermediate process clones it into a new user namespace and
/// exits (so the holder belongs to no one's session and outlives this run); we map
/// it with the helpers, then let it go to sleep.
fn make(mapping: &Mapping) -> Result<(libc::pid_t, Holder)> {
    let (pid_read, pid_write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("cannot create a pipe")?;
    let (go_read, go_write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("cannot create a pipe")?;
    let middle = sys::fork().context("cannot fork")?;
    if middle == 0 {
        drop((pid_read, go_write));
        let holder = sys::clone_into_namespaces(libc::CLONE_NEWUSER);
        match holder {
            Ok(0) => hold(File::from(go_read)),
            Ok(pid) => {
                let _ = File::from(pid_write).write_all(&pid.to_ne_bytes());
                sys::exit_now(0)
            }
            Err(_) => sys::exit_now(crate::error::EXIT_BINCTR),
        }
    }
    drop((pid_write, go_read));
    let mut bytes = [0u8; 4];
    let got = File::from(pid_read).read_exact(&mut bytes);
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(middle), None);
    got.context("cannot create a user namespace")
        .map_err(userns::with_blocked_hint)?;
    let pid = libc::pid_t::from_ne_bytes(bytes);
    let mapped = userns::write_maps(pid, mapping).and_then(|()| {
        File::open(format!("/proc/{pid}/ns/user")).context("cannot open the holder's namespace")
    });
    match mapped {
        Ok(userns) => {
            let _ = File::from(go_write).write_all(b"1");
            Ok((pid, Holder { userns }))
        }
        Err(e) => {
            let _ = sys::send_signal(pid, libc::SIGKILL);
            Err(e)
        }
    }
}

/// The holder's life: wait for its maps, then sleep, holding nothing else.
fn hold(go: File) -> ! {
    let mut byte = [0u8; 1];
    if !matches!((&go).read(&mut byte), Ok(1)) {
        sys::exit_now(crate::error::EXIT_BINCTR);
    }
    drop(go);
    let _ = nix::unistd::setsid();
    let _ = nix::unistd::chdir("/");
    let _ = sys::close_range_from(0, false);
    sys::ignore_terminal_signals();
    let _ = nix::sys::signal::SigSet::empty().thread_set_mask();
    // Start afresh with an argv of its own: the first run's (its -e values, say) must
    // not stay on show in `ps` for as long as the holder lives.
    let _ = nix::unistd::execve(c"/proc/self/exe", &[HOLDER_NAME], &[] as &[&std::ffi::CStr]);
    sleep_forever()
}

/// The holder's argv[0]; a stub started with it alone sleeps for ever (main.rs).
pub const HOLDER_NAME: &std::ffi::CStr = c"binctr-userns";

/// The holder's life after its exec: nothing but sleep.
pub fn sleep_forever() -> ! {
    let _ = nix::sys::prctl::set_name(HOLDER_NAME);
    // Rust's start-up reopened 0, 1 and 2 on /dev/null: the holder keeps nothing open.
    let _ = sys::close_range_from(0, false);
    loop {
        nix::unistd::pause();
    }
}
