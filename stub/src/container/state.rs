//! Per-container state under the state root (docs/STUB.md step 8): `<root>/<id>/` holds a lock
//! (flock'd by the running container, so a second container cannot take the id and a
//! stale directory is recognised) and the OCI state JSON that hooks get.

use crate::cli::RunPlan;
use crate::error::{Context, Error, Result};
use crate::files::{private_dir, write_atomically};
use crate::log::debug;
use std::fs::{self, DirBuilder, File};
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;

/// A container's namespaces, in the order they are joined (a user namespace first, the
/// mount namespace last), with their kinds.
pub type Namespaces = Vec<(File, nix::sched::CloneFlags)>;

pub struct State {
    pub id: String,
    /// None: a plain foreground run with a generated id keeps no state on disk (nothing
    /// needs it, and a start should not wait on a filesystem).
    pub dir: Option<PathBuf>,
    /// flock'd for the container's whole life (the lock lives while any copy of this
    /// open file does: the detached monitor's, PID 1's).
    _lock: Option<File>,
}

impl State {
    /// Takes the container id: refused while another container holds it. State is kept
    /// on disk only when something uses it: -d, --id, hooks.
    pub fn create(spec: &RunPlan) -> Result<State> {
        if !(spec.detach || spec.explicit_id || !spec.hooks.is_empty()) {
            return Ok(State {
                id: spec.id.clone(),
                dir: None,
                _lock: None,
            });
        }
        private_dir(&spec.state_root, "state", "choose another with --root")?;
        let dir = spec.state_root.join(&spec.id);
        match DirBuilder::new().mode(0o700).create(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                return Err(e).with_context(|| format!("cannot create {}", dir.display()))
            }
            _ => {}
        }
        let lock_path = dir.join("lock");
        let lock = crate::files::open_lock(&lock_path)
            .with_context(|| format!("cannot create {}", lock_path.display()))?;
        crate::sys::lock_exclusive(std::os::fd::AsFd::as_fd(&lock), false).map_err(|_| {
            Error::new(format!(
                "a container with id '{}' is already running: choose another --id",
                spec.id
            ))
        })?;
        debug!("state: {}", dir.display());
        Ok(State {
            id: spec.id.clone(),
            dir: Some(dir),
            _lock: Some(lock),
        })
    }

    /// The OCI runtime state, as hooks read it on stdin.
    pub fn oci_json(&self, status: &str, pid: libc::pid_t) -> String {
        serde_json::json!({
            "ociVersion": "1.0.2",
            "id": self.id,
            "status": status,
            "pid": pid,
            "bundle": self.dir.as_deref().unwrap_or(std::path::Path::new("")),
            "annotations": {},
        })
        .to_string()
    }

    /// Records the state for other tools (`state.json`, replaced atomically) and, when
    /// running, how `--exec` starts a command in it (`exec.json`: the process, and the
    /// container's namespaces as descriptors this monitor keeps open).
    pub fn record(
        &self,
        status: &str,
        pid: libc::pid_t,
        process: Option<(&super::process::Process, &Namespaces)>,
    ) -> Result<()> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        if let Some((process, namespaces)) = process {
            let mut json = process.to_json();
            json["monitor"] = std::process::id().into();
            json["namespaces"] = namespaces
                .iter()
                .map(|(file, kind)| {
                    serde_json::json!([std::os::fd::AsRawFd::as_raw_fd(file), kind.bits()])
                })
                .collect();
            write_atomically(&dir.join("exec.json"), json.to_string().as_bytes())?;
        }
        write_atomically(
            &dir.join("state.json"),
            self.oci_json(status, pid).as_bytes(),
        )
    }

    /// Removes the state directory (the container has exited).
    pub fn remove(self) {
        if let Some(dir) = &self.dir {
            let _ = fs::remove_dir_all(dir);
        }
    }
}

/// A container process's namespaces, in the order they are joined (user first, mount
/// last). `joined_user`: we are in its user namespace because we joined it (the held
/// one), not because it is the host's: it is listed for a joiner from outside.
pub fn open_namespaces(pid: libc::pid_t, joined_user: bool) -> std::io::Result<Namespaces> {
    let id = |f: &File| {
        nix::sys::stat::fstat(std::os::fd::AsRawFd::as_raw_fd(f)).map(|s| (s.st_dev, s.st_ino))
    };
    let mut out = Vec::new();
    for (name, kind) in [
        ("user", nix::sched::CloneFlags::CLONE_NEWUSER),
        ("ipc", nix::sched::CloneFlags::CLONE_NEWIPC),
        ("uts", nix::sched::CloneFlags::CLONE_NEWUTS),
        ("net", nix::sched::CloneFlags::CLONE_NEWNET),
        ("pid", nix::sched::CloneFlags::CLONE_NEWPID),
        ("mnt", nix::sched::CloneFlags::CLONE_NEWNS),
    ] {
        let theirs = File::open(format!("/proc/{pid}/ns/{name}"))?;
        // One the container shares with us (the host's network, our own user
        // namespace) is not joined: it is ours already, and joining could be refused.
        let ours = File::open(format!("/proc/self/ns/{name}"))?;
        if id(&theirs)? != id(&ours)? || (joined_user && name == "user") {
            out.push((theirs, kind));
        }
    }
    Ok(out)
}
