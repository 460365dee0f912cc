//! The host's processes, read from /proc: what a container left running, its
//! descendants, signals to them, pid files, and detached containers that a failing test
//! must not leave behind.

use std::fs;
use std::path::Path;

use crate::{wait_until, Test, QUICK};

/// One process of the host, from /proc.
#[derive(Debug, Clone)]
pub struct Proc {
    pub pid: u32,
    pub ppid: u32,
    /// The state letter of /proc/PID/stat (R, S, T, Z, ...).
    pub state: char,
    /// The name (comm) of /proc/PID/stat.
    pub comm: String,
    /// Real, effective, saved and filesystem uid (the Uid: line of /proc/PID/status).
    pub uids: Vec<u32>,
    /// Real, effective, saved and filesystem gid (the Gid: line).
    pub gids: Vec<u32>,
    /// The argv (/proc/PID/cmdline), its arguments separated by spaces.
    pub argv: String,
}

impl Proc {
    /// The process `pid`, or `None` when it is gone (or was never there).
    pub fn read(pid: u32) -> Option<Proc> {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        let (open, close) = (stat.find('(')?, stat.rfind(')')?);
        let comm = stat.get(open + 1..close)?.to_string();
        let mut rest = stat[close + 1..].split_whitespace();
        let state = rest.next()?.chars().next()?;
        let ppid = rest.next()?.parse().ok()?;
        let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let ids = |key: &str| -> Vec<u32> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .map(|l| {
                    l.split_whitespace()
                        .filter_map(|u| u.parse().ok())
                        .collect()
                })
                .unwrap_or_default()
        };
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        Some(Proc {
            pid,
            ppid,
            state,
            comm,
            uids: ids("Uid:"),
            gids: ids("Gid:"),
            argv: String::from_utf8_lossy(&cmdline)
                .trim_end_matches('\0')
                .replace('\0', " "),
        })
    }

    /// Running, sleeping or stopped: neither a zombie nor dead.
    pub fn is_live(&self) -> bool {
        !matches!(self.state, 'Z' | 'X' | 'x')
    }

    /// The real uid.
    pub fn uid(&self) -> Option<u32> {
        self.uids.first().copied()
    }
}

/// Every process of the host.
pub fn all_processes() -> Vec<Proc> {
    fs::read_dir("/proc")
        .expect("read /proc")
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter_map(Proc::read)
        .collect()
}

/// Whether `pid` is a live (non-zombie) process.
pub fn is_live(pid: u32) -> bool {
    Proc::read(pid).is_some_and(|p| p.is_live())
}

/// The pids descending from `ancestor` (not itself), given every process's
/// (pid, parent pid).
fn descendant_pids(ancestor: u32, parents: &[(u32, u32)]) -> Vec<u32> {
    let mut family = vec![ancestor];
    loop {
        let before = family.len();
        for &(pid, ppid) in parents {
            if family.contains(&ppid) && !family.contains(&pid) {
                family.push(pid);
            }
        }
        if family.len() == before {
            break;
        }
    }
    family.retain(|&p| p != ancestor);
    family
}

/// The descendants of `ancestor` (not itself), live or not.
fn descendants(ancestor: u32) -> Vec<Proc> {
    let procs = all_processes();
    let parents: Vec<(u32, u32)> = procs.iter().map(|p| (p.pid, p.ppid)).collect();
    let family = descendant_pids(ancestor, &parents);
    procs
        .into_iter()
        .filter(|p| p.pid != ancestor && family.contains(&p.pid))
        .collect()
}

/// The first descendant of `ancestor` named `comm` (zombies included).
pub fn find_descendant(ancestor: u32, comm: &str) -> Option<u32> {
    descendants(ancestor)
        .into_iter()
        .find(|p| p.comm == comm)
        .map(|p| p.pid)
}

/// Live descendants of `ancestor`.
pub fn live_descendants(ancestor: u32) -> Vec<Proc> {
    descendants(ancestor)
        .into_iter()
        .filter(|p| p.is_live())
        .collect()
}

/// Live descendants of `ancestor` whose argv is exactly `argv`.
pub fn live_descendants_with_argv(ancestor: u32, argv: &str) -> Vec<Proc> {
    live_descendants(ancestor)
        .into_iter()
        .filter(|p| p.argv == argv)
        .collect()
}

/// Live processes of the test user whose argv is exactly `argv` (e.g. `sleep 4321`).
pub fn live_with_argv(t: &Test, argv: &str) -> Vec<Proc> {
    let uid = t.env.run_uid();
    all_processes()
        .into_iter()
        .filter(|p| p.uid() == Some(uid) && p.is_live() && p.argv == argv)
        .collect()
}

/// Fails the test unless no live process of the test user runs `argv` within `QUICK`.
#[track_caller]
pub fn assert_no_process_left(t: &Test, argv: &str, context: &str) {
    let mut left = Vec::new();
    let gone = wait_until(QUICK, || {
        left = live_with_argv(t, argv);
        left.is_empty()
    });
    assert!(
        gone,
        "{context}: '{argv}' still runs on the host {QUICK:?} later: {left:?}"
    );
}

/// kill(2): `signal` to the process `pid`.
pub fn send_signal(pid: u32, signal: i32) -> std::io::Result<()> {
    kill(pid as libc::pid_t, signal)
}

/// kill(2): `signal` to every process of the process group `pgid`.
pub fn signal_group(pgid: u32, signal: i32) -> std::io::Result<()> {
    // 0 and 1 would be the caller's own group and every process it may signal.
    assert!(pgid > 1, "no process group {pgid}");
    kill(-(pgid as libc::pid_t), signal)
}

fn kill(pid: libc::pid_t, signal: i32) -> std::io::Result<()> {
    // SAFETY: kill(2) has no memory-safety preconditions.
    if unsafe { libc::kill(pid, signal) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Reads a pid file: one decimal pid and a newline.
#[track_caller]
pub fn read_pid_file(path: &Path) -> u32 {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert!(
        text.ends_with('\n') && text.trim().bytes().all(|b| b.is_ascii_digit()),
        "{} holds {text:?}, not a pid and a newline",
        path.display()
    );
    let pid: u32 = text.trim().parse().expect("a pid");
    assert!(pid > 1, "{} holds the pid {pid}", path.display());
    pid
}

/// A detached container: SIGKILLed (with its whole pid namespace) if the test ends while
/// it still runs, and waited for, so a failing test leaves nothing behind (no process,
/// no port held).
pub struct Detached {
    pub pid: u32,
}

impl Drop for Detached {
    fn drop(&mut self) {
        if is_live(self.pid) {
            let _ = send_signal(self.pid, libc::SIGKILL);
            wait_until(QUICK, || !is_live(self.pid));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn a_child_is_found_among_the_descendants_and_signalled() {
        let mut child = Command::new("sleep")
            .arg("1234.5")
            .spawn()
            .expect("run sleep");
        let me = std::process::id();
        let pid = child.id();
        assert!(wait_until(QUICK, || find_descendant(me, "sleep") == Some(pid)));
        let found = live_descendants_with_argv(me, "sleep 1234.5");
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!((found[0].pid, found[0].ppid), (pid, me));
        // SAFETY: getuid has no preconditions and cannot fail.
        let uid = unsafe { libc::getuid() };
        assert_eq!(found[0].uid(), Some(uid));
        assert!(is_live(pid));
        send_signal(pid, libc::SIGKILL).unwrap();
        child.wait().unwrap();
        assert!(!is_live(pid));
        assert!(live_descendants_with_argv(me, "sleep 1234.5").is_empty());
    }

    #[test]
    fn descendants_are_found_through_every_generation() {
        let parents = [(10, 1), (11, 10), (12, 11), (13, 1), (14, 12)];
        let mut family = descendant_pids(10, &parents);
        family.sort();
        assert_eq!(family, [11, 12, 14]);
    }
}
