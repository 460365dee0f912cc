//! One container for a group of runs (`--share KEY`; under srun, the ranks of one job
//! step on one node): the first to come starts it, detached, with no command of its own
//! (its PID 1 only waits); every run, the first too, starts its own command in it as
//! `--exec` does, so the group shares pid, ipc, uts and mount namespaces (one /dev/shm,
//! one /tmp: MPI's shared-memory transports work); the last to leave ends it.
//!
//! Two files beside the state directory keep the group honest:
//! `.share-ID.lock` (a POSIX record lock, so the detached monitor forked while a run
//! holds it does not hold it too) is held to start, join or leave; `.share-ID.members`
//! is flock'd shared by each member while its command runs. A run that leaves takes
//! the lock, drops its share, and ends the container when nobody else holds one. A
//! member killed outright drops its share with its last descriptor; the container's
//! monitor checks every second and ends the container when the group is gone.

use super::join::{self, Running};
use super::launch::Launch;
use crate::cli::{RunPlan, Terminal};
use crate::error::{Context, Error, Result};
use crate::files::{open_lock, private_dir};
use crate::log::debug;
use crate::rootfs::Rootfs;
use crate::sys;
use crate::userns::Mapping;
use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Runs the plan's command in the group's container `id`; returns its exit code.
pub fn run(
    mut plan: RunPlan,
    env: binctr_format::Env,
    rootfs: &Rootfs,
    mapping: Mapping,
    userns: Option<&File>,
    id: String,
) -> Result<i32> {
    let tty = plan.terminal == Terminal::Pty;
    // The group's container: this plan's settings, detached, without a command.
    plan.id = id;
    plan.explicit_id = true;
    plan.detach = true;
    plan.pause = true;
    plan.terminal = Terminal::Inherit;
    plan.pid_file = None;
    plan.log = None;
    private_dir(&plan.state_root, "state", "choose another with --root")?;
    let group = Group::new(&plan.state_root, &plan.id);
    let dir = plan.state_root.join(&plan.id);
    let launch = Launch::resolve(&plan, env, rootfs, mapping, userns)?;

    let lock = group.lock(true)?;
    wait_until_gone_or_running(&dir);
    if !join::is_running(&dir) {
        debug!("share: starting the group's container {}", plan.id);
        match super::run_launched(&launch, rootfs)? {
            0 => {}
            code => return Err(Error::reported(code)),
        }
    } else {
        debug!("share: joining the group's container {}", plan.id);
    }
    let members = open_lock(group.members())
        .with_context(|| format!("cannot open {}", group.members().display()))?;
    sys::flock(members.as_fd(), libc::LOCK_SH, false)
        .context("cannot join the group's container")?;
    drop(lock);

    let result = Running::open(&dir, &plan.id)
        .and_then(|running| join::run(&running.namespaces, &launch.process, tty));

    // Leaving: the last member ends the container and waits until it is gone.
    let Ok(lock) = group.lock(true) else {
        return result;
    };
    let _ = sys::flock(members.as_fd(), libc::LOCK_UN, true);
    if sys::flock(members.as_fd(), libc::LOCK_EX, false).is_ok() {
        debug!("share: the last member: ending {}", plan.id);
        group.remove_files();
        end(&dir, &plan.id);
    }
    drop(lock);
    result
}

/// The monitor's check (once a second) of a shared container: true once no member is
/// left (each holds the members file shared while its command runs). The group's lock
/// is then kept until the monitor exits, so nobody joins a container on its way out.
pub fn group_gone(plan: &RunPlan) -> Box<dyn FnMut() -> bool> {
    let group = Group::new(&plan.state_root, &plan.id);
    Box::new(move || {
        let Ok(lock) = group.lock(false) else {
            return false;
        };
        let empty = open_lock(group.members())
            .is_ok_and(|m| sys::flock(m.as_fd(), libc::LOCK_EX, false).is_ok());
        if empty {
            debug!("share: no member left: ending the group's container");
            group.remove_files();
            // Held until this process exits.
            std::mem::forget(lock);
        }
        empty
    })
}

/// Kills the container's PID 1 (its pid namespace goes with it) and waits until its
/// monitor has removed the layer and the state and exited: under Slurm, whatever is
/// left of the step once its last task exits is killed at once.
fn end(dir: &Path, id: &str) {
    let monitor = match Running::open(dir, id) {
        Ok(running) => {
            let _ = sys::send_signal(running.pid, libc::SIGKILL);
            running.monitor
        }
        Err(_) => None,
    };
    wait_while(|| join::is_running(dir) || monitor.is_some_and(is_alive));
}

/// While a container of the group is on its way out (its monitor still holds the
/// state, but PID 1 is dead), waits for it to be gone.
fn wait_until_gone_or_running(dir: &Path) {
    wait_while(|| join::is_running(dir) && !join::read_pid(dir).is_some_and(is_alive));
}

/// Polls `cond` every 5 ms while it holds, for at most 30 s.
fn wait_while(cond: impl Fn() -> bool) {
    let until = Instant::now() + Duration::from_secs(30);
    while cond() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The process exists and has not exited (a zombie has).
fn is_alive(pid: libc::pid_t) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit_once(") ")
        .and_then(|(_, rest)| rest.chars().next());
    matches!(state, Some(s) if s != 'Z' && s != 'X')
}

/// The group's two files in the state root.
struct Group {
    lock: PathBuf,
    members: PathBuf,
}

impl Group {
    fn new(root: &Path, id: &str) -> Group {
        Group {
            lock: root.join(format!(".share-{id}.lock")),
            members: root.join(format!(".share-{id}.members")),
        }
    }

    fn members(&self) -> &Path {
        &self.members
    }

    /// The group's lock (held until the file is dropped). A file the last member
    /// removed while we waited is opened again.
    fn lock(&self, wait: bool) -> Result<File> {
        loop {
            let file = open_lock(&self.lock)
                .with_context(|| format!("cannot open {}", self.lock.display()))?;
            sys::record_lock(file.as_fd(), true, wait)
                .with_context(|| format!("cannot lock {}", self.lock.display()))?;
            let same = match (file.metadata(), std::fs::symlink_metadata(&self.lock)) {
                (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
                _ => false,
            };
            if same {
                return Ok(file);
            }
        }
    }

    fn remove_files(&self) {
        let _ = std::fs::remove_file(&self.members);
        let _ = std::fs::remove_file(&self.lock);
    }
}
