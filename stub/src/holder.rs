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
use std::ffi::CStr;
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
        if let Some((pid, dev, ino)) = read_record(&entry.path()) {
            // Only a process of ours whose namespace is the recorded one: the pidfd,
            // taken first, names that very process when the signal goes.
            let pinned = sys::pidfd_open(pid).ok();
            if verified(pid, dev, ino).is_some() {
                let _ = match &pinned {
                    Some(pidfd) => sys::pidfd_send_signal(pidfd.as_fd(), libc::SIGKILL),
                    None => sys::send_signal(pid, libc::SIGKILL),
                };
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

/// The recorded holder's namespace (device `dev`, inode `ino`), if process `pid` has it.
fn verified(pid: libc::pid_t, dev: u64, ino: u64) -> Option<File> {
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
    let (pid, dev, ino) = read_record(record)?;
    // The checks read /proc/PID: a pidfd taken first pins the process, and if it is
    // still there after them, they all read it (a pid is reused only once its process
    // is reaped). Without pidfds (Linux before 5.3) the namespace is looked up again.
    let pinned = sys::pidfd_open(pid).ok();
    let userns = verified(pid, dev, ino)?;
    let owner = sys::namespace_owner(userns.as_fd()).ok()?;
    if owner != nix::unistd::getuid().as_raw() {
        return None;
    }
    let me = (
        nix::unistd::getuid().as_raw(),
        nix::unistd::getgid().as_raw(),
    );
    let maps_ok = map_is(pid, "uid_map", me.0, uids) && map_is(pid, "gid_map", me.1, gids);
    let same = match &pinned {
        Some(pidfd) => sys::pidfd_send_signal(pidfd.as_fd(), 0).is_ok(),
        None => verified(pid, dev, ino).is_some(),
    };
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
    // not stay on show in `ps` for as long as the holder lives. And not as the packed
    // file: a process running it keeps it mapped, so its filesystem could not be
    // unmounted, nor its blocks freed when it is deleted, while the holder lives. The
    // holder runs a program of a few dozen bytes from memory instead (where memfd
    // execution is forbidden, the packed file again).
    if let Ok(program) = sys::memfd_with(HOLDER_NAME, &sleeper_elf()) {
        let _ = nix::unistd::fexecve(program.as_raw_fd(), &[HOLDER_NAME], &[] as &[&CStr]);
    }
    let _ = nix::unistd::execve(c"/proc/self/exe", &[HOLDER_NAME], &[] as &[&CStr]);
    sleep_forever()
}

/// The holder's program: a static ELF executable for this CPU that names itself
/// `binctr-userns` (prctl PR_SET_NAME) and then sleeps for ever (x86_64: pause;
/// aarch64, which has no pause: ppoll of nothing, without a timeout), one PT_LOAD
/// segment at 0x400000, read and execute.
fn sleeper_elf() -> Vec<u8> {
    #[cfg(target_arch = "x86_64")]
    let (machine, code): (u16, &[u8]) = (
        62,
        &[
            0xbf, 0x0f, 0x00, 0x00, 0x00, // mov edi, 15 (PR_SET_NAME)
            0x48, 0x8d, 0x35, 0x10, 0x00, 0x00, 0x00, // lea rsi, [rip + 16]: the name
            0xb8, 0x9d, 0x00, 0x00, 0x00, // mov eax, 157 (prctl)
            0x0f, 0x05, // syscall
            0xb8, 0x22, 0x00, 0x00, 0x00, // again: mov eax, 34 (pause)
            0x0f, 0x05, // syscall
            0xeb, 0xf7, // jmp again
        ],
    );
    #[cfg(target_arch = "aarch64")]
    let (machine, code): (u16, &[u8]) = (
        183,
        &[
            0xe0, 0x01, 0x80, 0xd2, // mov x0, #15 (PR_SET_NAME)
            0x41, 0x01, 0x00, 0x10, // adr x1, .+40: the name
            0xe8, 0x14, 0x80, 0xd2, // mov x8, #167 (prctl)
            0x01, 0x00, 0x00, 0xd4, // svc #0
            0x00, 0x00, 0x80, 0xd2, // again: mov x0, #0
            0x01, 0x00, 0x80, 0xd2, // mov x1, #0
            0x02, 0x00, 0x80, 0xd2, // mov x2, #0
            0x03, 0x00, 0x80, 0xd2, // mov x3, #0
            0x28, 0x09, 0x80, 0xd2, // mov x8, #73 (ppoll)
            0x01, 0x00, 0x00, 0xd4, // svc #0
            0xfa, 0xff, 0xff, 0x17, // b again
        ],
    );
    const BASE: u64 = 0x40_0000;
    const HEADERS: u64 = 64 + 56;
    let name = HOLDER_NAME.to_bytes_with_nul();
    let size = HEADERS + (code.len() + name.len()) as u64;
    let mut elf = Vec::with_capacity(size as usize);
    // ELF header: 64-bit, little-endian, version 1, System V; an executable.
    elf.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    elf.extend_from_slice(&2u16.to_le_bytes());
    elf.extend_from_slice(&machine.to_le_bytes());
    elf.extend_from_slice(&1u32.to_le_bytes());
    elf.extend_from_slice(&(BASE + HEADERS).to_le_bytes()); // entry: the code
    elf.extend_from_slice(&64u64.to_le_bytes()); // program headers
    elf.extend_from_slice(&0u64.to_le_bytes()); // no section headers
    elf.extend_from_slice(&0u32.to_le_bytes());
    for half in [64u16, 56, 1, 0, 0, 0] {
        elf.extend_from_slice(&half.to_le_bytes());
    }
    // The one segment: the whole file, read and execute.
    elf.extend_from_slice(&1u32.to_le_bytes());
    elf.extend_from_slice(&5u32.to_le_bytes());
    for word in [0, BASE, BASE, size, size, 0x1_0000] {
        elf.extend_from_slice(&word.to_le_bytes());
    }
    elf.extend_from_slice(code);
    elf.extend_from_slice(name);
    elf
}

/// The holder's argv[0]; a stub started with it alone sleeps for ever (main.rs).
pub const HOLDER_NAME: &CStr = c"binctr-userns";

/// The holder's life after its exec: nothing but sleep.
pub fn sleep_forever() -> ! {
    let _ = nix::sys::prctl::set_name(HOLDER_NAME);
    // Rust's start-up reopened 0, 1 and 2 on /dev/null: the holder keeps nothing open.
    let _ = sys::close_range_from(0, false);
    loop {
        nix::unistd::pause();
    }
}
