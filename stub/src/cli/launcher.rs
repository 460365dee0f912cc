//! Under a parallel launcher (Slurm's srun or sbatch, a PMIx or PMI server, mpirun) the
//! container is one rank of a job. What it gets from the host then (README, "Under
//! Slurm and MPI"): the launcher's variables, PMI's inherited socket, the PMIx server's
//! directory at the same path; and, under Slurm, the ranks of one job step on one node
//! share one container (container/share.rs).

use super::flags::Flags;
use super::volumes::Volume;
use crate::error::{Error, Result};
use binctr_format::Env;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Variables that say a launcher started us.
const MARKERS: [&str; 7] = [
    "SLURM_JOB_ID",
    "SLURM_STEP_ID",
    "SLURM_STEPID",
    "PMIX_RANK",
    "PMI_RANK",
    "PMI_FD",
    "OMPI_COMM_WORLD_RANK",
];

/// The host variables a rank gets, by prefix: Slurm's (SLURM_*, SLURMD_NODENAME,
/// SRUN_*), the process managers' (PMIX_*, PMI_*), and the MPI libraries' own settings
/// a user may have exported (Open MPI and PRRTE's MCA parameters, MPICH's CVARs and
/// Hydra's, Intel MPI's).
pub const PASSED: [&str; 12] = [
    "SLURM_",
    "SLURMD_",
    "SRUN_",
    "PMIX_",
    "PMI_",
    "OMPI_",
    "PRTE_",
    "PRRTE_",
    "MPIR_CVAR_",
    "MPICH_",
    "HYDRA_",
    "I_MPI_",
];

/// Whether a launcher started us.
pub fn detected() -> bool {
    MARKERS.iter().any(|k| std::env::var_os(k).is_some())
}

/// Whether `name` is a variable a rank gets from the host.
pub fn is_passed(name: &[u8]) -> bool {
    PASSED.iter().any(|p| name.starts_with(p.as_bytes()))
}

/// The launcher's variables, over the image's.
pub fn pass_env(env: &mut Env) {
    for (key, value) in std::env::vars_os() {
        if is_passed(key.as_bytes()) {
            env.set(key.as_bytes(), value.as_bytes());
        }
    }
}

/// PMI-1/PMI-2's socket to the process manager (PMI_FD): kept open, at its number,
/// for the command.
pub fn kept_fds() -> Vec<i32> {
    let fd = std::env::var("PMI_FD")
        .ok()
        .and_then(|v| v.trim().parse::<i32>().ok());
    match fd {
        Some(fd) if fd > 2 && crate::sys::is_open_fd(fd) => vec![fd],
        _ => Vec::new(),
    }
}

/// The PMIx server's directories (its rendezvous socket and shared-memory files), bound
/// at the same path so the client library in the container finds them.
pub fn binds() -> Vec<Volume> {
    let mut out: Vec<Volume> = Vec::new();
    for key in ["PMIX_SERVER_TMPDIR", "PMIX_SYSTEM_TMPDIR"] {
        let Some(dir) = std::env::var_os(key) else {
            continue;
        };
        let dir = PathBuf::from(dir);
        let fits = dir.is_absolute() && dir.is_dir() && dir != Path::new("/");
        if fits && !out.iter().any(|v| v.source == dir) {
            out.push(Volume {
                target: dir.to_string_lossy().into_owned(),
                source: dir,
                read_only: false,
            });
        }
    }
    out
}

/// The id of the container this run shares with the other ranks of its group, or None
/// to run one of its own. `--share KEY` asks for it anywhere, `--no-share` never; under
/// Slurm the group is the job step on this node. `digest` (of the payload and the
/// config) keeps two images, or one image packed with other settings, apart.
pub fn share_id(flags: &Flags, digest: &str) -> Result<Option<String>> {
    let own = flags.detach || flags.id.is_some() || flags.overlay.is_some();
    let key = match (&flags.share, flags.no_share) {
        (Some(_), true) => {
            return Err(Error::new(
                "--share and --no-share contradict each other: choose one",
            ))
        }
        (Some(_), false) if own => {
            return Err(Error::new(
                "--share makes a container of the group's: it goes with none of -d, --id (--name), --overlay",
            ))
        }
        (Some(key), false) if key.is_empty() => {
            return Err(Error::new("--share needs a key, e.g. --share job42"))
        }
        (Some(key), false) => key.clone(),
        (None, true) => return Ok(None),
        (None, false) if own => return Ok(None),
        (None, false) => match slurm_step() {
            Some(step) => step,
            None => return Ok(None),
        },
    };
    Ok(Some(id_for(&key, digest)))
}

/// `slurm-JOB.STEP-NODE` when srun started us (a job step: the batch script itself is
/// not one).
fn slurm_step() -> Option<String> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let job = var("SLURM_JOB_ID")?;
    let step = var("SLURM_STEP_ID").or_else(|| var("SLURM_STEPID"))?;
    let node = var("SLURMD_NODENAME").or_else(|| {
        nix::sys::utsname::uname()
            .ok()
            .map(|u| u.nodename().to_string_lossy().into_owned())
    })?;
    Some(format!("slurm-{job}.{step}-{node}"))
}

/// A container id (letters, digits, '.', '_', '-'; at most 64) for a share key: the key
/// made readable, and a hash of the whole key and the image.
fn id_for(key: &str, digest: &str) -> String {
    let readable: String = key
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '_' | '-' => c,
            _ => '_',
        })
        .take(32)
        .collect();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes().chain([0]).chain(digest.bytes()) {
        hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("share-{readable}-{hash:016x}")
}

/// What `-D` says about the launcher.
pub fn describe(fds: &[i32], binds: &[Volume]) -> String {
    let passed = std::env::vars_os()
        .filter(|(k, _)| is_passed(k.as_bytes()))
        .count();
    let dirs: Vec<&OsStr> = binds.iter().map(|v| v.source.as_os_str()).collect();
    format!("launcher: {passed} variables passed, descriptors kept {fds:?}, bound {dirs:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn launcher_variables_by_prefix() {
        assert!(is_passed(b"SLURM_PROCID"));
        assert!(is_passed(b"PMIX_SERVER_URI41"));
        assert!(is_passed(b"OMPI_MCA_btl"));
        assert!(is_passed(b"MPIR_CVAR_CH3_NOLOCAL"));
        assert!(!is_passed(b"HOME"));
        assert!(!is_passed(b"SLURMX"));
        assert!(!is_passed(b"LD_PRELOAD"));
    }

    #[test]
    fn share_ids_are_valid_and_keep_images_apart() {
        let a = id_for("slurm-12.0-n1", "aa");
        let b = id_for("slurm-12.0-n1", "bb");
        assert_ne!(a, b);
        assert!(a.starts_with("share-slurm-12.0-n1-"));
        let odd = id_for("../x y/\u{e9}", "aa");
        assert!(odd.len() <= 64);
        assert!(odd
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')));
        assert!(!odd.contains('/'), "{odd}");
    }
}
