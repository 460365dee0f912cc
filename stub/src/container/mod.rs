//! The container: the launch plan (user and mapping resolved), the processes and their
//! steps. Three processes, one file each:
//!
//! ```text
//! stub = monitor (host)          spawn.rs: clone(NEWUSER|NEWNS|NEWPID|NEWUTS|NEWIPC[|NEWNET])
//!   id maps, prestart hooks  ->  PID 1 (init.rs): waits for "go", mounts.rs, pivot_root,
//!   "go"                           hostname; [pty: opens one, sends the master back]
//!   monitor.rs: waits for the    fork -> command (exec.rs): stdio, env, cwd, caps, user,
//!   exec, pid file, poststart,             no_new_privs, seccomp, exec (a failure code
//!   relays signals and the pty,            goes back on a pipe)
//!   poststop, exit code            forwards signals, reaps, exits with the command's code
//! ```

mod children;
mod exec;
mod hooks;
mod init;
pub mod join;
pub mod launch;
mod layer;
mod monitor;
pub mod mounts;
mod process;
mod seccomp;
pub mod share;
pub(crate) mod spawn;
mod state;
mod tty;
pub mod users;

use crate::cli::RunPlan;
use crate::error::{Context, Result, EXIT_BINCTR};
use crate::log::debug;
use crate::rootfs::Rootfs;
use crate::userns::Mapping;
use crate::{signals, sys};
use launch::Launch;
pub use layer::Upper;
use layer::WritableLayer;
use state::State;
use std::fs::File;
use std::io::Read;

/// Runs the container to its end (or, with -d, until its command started) and returns
/// the stub's exit code.
/// `userns`: the held user namespace to start the container in (no helper runs), or
/// None to make one.
pub fn run(
    plan: &RunPlan,
    env: binctr_format::Env,
    rootfs: &Rootfs,
    mapping: Mapping,
    userns: Option<&File>,
) -> Result<i32> {
    let launch = Launch::resolve(plan, env, rootfs, mapping, userns)?;
    let code = run_launched(&launch, rootfs);
    // As main does with the plan: not worth freeing on the way out.
    std::mem::forget(launch);
    code
}

fn run_launched(launch: &Launch<'_>, rootfs: &Rootfs) -> Result<i32> {
    let plan = launch.plan;
    debug!(
        "user: {}:{} groups {:?}; {}; chown/setuid {}",
        launch.process.identity.uid,
        launch.process.identity.gid,
        launch.process.identity.groups,
        launch.mapping.describe(),
        if launch.fake_root {
            "faked (fake root)"
        } else {
            "real"
        }
    );
    // Locked (as the state is) until the container ends; a detached monitor keeps its
    // own copy of both locks after the caller returns.
    let layer = WritableLayer::prepare(plan, rootfs, &launch.mapping)?;
    let state = match State::create(plan) {
        Ok(state) => state,
        Err(e) => {
            layer.finish(&launch.mapping, None);
            return Err(e);
        }
    };
    if plan.detach {
        return detach(launch, rootfs, layer, state);
    }
    let code = start_and_watch(launch, rootfs, layer, &state, None);
    state.remove();
    code
}

/// Spawns the container and watches it. The signals the monitor forwards (and SIGCHLD,
/// SIGWINCH) are blocked before the clone, so one that arrives while the container
/// starts is kept for the monitor instead of killing the stub.
#[inline(never)] // called twice (foreground, detached): one copy keeps the stub small
fn start_and_watch(
    launch: &Launch<'_>,
    rootfs: &Rootfs,
    layer: WritableLayer,
    state: &State,
    started: Option<&mut File>,
) -> Result<i32> {
    let watched = signals::watched_by_monitor();
    let spawned = watched
        .thread_set_mask()
        .context("cannot block signals")
        .and_then(|()| spawn::spawn(launch, rootfs, layer.upper.as_ref(), state));
    let mut spawned = match spawned {
        Ok(spawned) => spawned,
        Err(e) => {
            layer.finish(&launch.mapping, None);
            return Err(e);
        }
    };
    let userns = spawned.userns.take();
    let code = monitor::watch(launch, spawned, state, &watched, started);
    debug!("process: the container ended");
    layer.finish(&launch.mapping, userns.as_ref());
    code
}

/// -d: a detached monitor (own session, survives the terminal) runs the container; we
/// return once it reports the command started (0), or its failure code.
fn detach(launch: &Launch<'_>, rootfs: &Rootfs, layer: WritableLayer, state: State) -> Result<i32> {
    let (read_end, write_end) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("cannot create a pipe")?;
    let pid = sys::fork().context("cannot fork the detached monitor")?;
    if pid == 0 {
        drop(read_end);
        let _ = nix::unistd::setsid();
        // A launcher's socket (PMI_FD) is the command's, not the monitor's to keep open.
        for fd in &launch.plan.keep_fds {
            let _ = nix::unistd::close(*fd);
        }
        layer.claim();
        let mut started = File::from(write_end);
        let result = start_and_watch(launch, rootfs, layer, &state, Some(&mut started));
        if let Err(e) = &result {
            e.report(launch.plan.debug);
        }
        drop(started);
        state.remove();
        sys::exit_now(result.unwrap_or(EXIT_BINCTR));
    }
    drop(write_end);
    // The child holds the locks now; our copies go without removal.
    drop((state, layer));
    let mut byte = [0u8; 1];
    match File::from(read_end).read(&mut byte) {
        Ok(1) => Ok(i32::from(byte[0])),
        // The monitor failed before the container started, and said why.
        _ => Ok(EXIT_BINCTR),
    }
}
