//! The launch plan: the run plan plus what only the extracted image can tell, resolved
//! once before the clone: the container user (from the image's /etc/passwd and
//! /etc/group), the id mapping that fits them, the final environment, and whether
//! chown/setuid are faked. Nothing changes it afterwards.

use super::process::Process;
use super::users::{self, Identity};
use crate::cli::{env, RunPlan};
use crate::error::{Error, Result};
use crate::rootfs::Rootfs;
use crate::userns::Mapping;
use std::fs::File;

pub struct Launch<'a> {
    pub plan: &'a RunPlan,
    pub mapping: Mapping,
    /// chown/setuid calls succeed without effect (default with a single mapping).
    pub fake_root: bool,
    /// How the command's process starts (its environment: the plan's, with $HOME from
    /// the user's passwd entry unless the image or the flags set one).
    pub process: Process,
    /// The held user namespace (subordinate ids) to create the container in.
    pub userns: Option<&'a File>,
}

impl<'a> Launch<'a> {
    /// `mapping` is the one the rootfs was extracted for; a single mapping becomes
    /// podman's keep-id when the image runs as another user, so it still runs.
    pub fn resolve(
        plan: &'a RunPlan,
        mut env: binctr_format::Env,
        rootfs: &Rootfs,
        mapping: Mapping,
        userns: Option<&'a File>,
    ) -> Result<Launch<'a>> {
        let upper = match &plan.layer {
            crate::cli::Layer::Kept(dir) => Some(dir.join("upper")),
            _ => None,
        };
        let identity = match (plan.user.as_str(), plan.group_add.is_empty()) {
            ("", true) => Identity::root(),
            (user, _) => users::resolve(&rootfs.lowers(), upper.as_deref(), user, &plan.group_add)?,
        };
        if !plan.group_add.is_empty() && !mapping.is_subid() {
            return Err(Error::new(
                "--group-add needs subordinate ids (a single mapping has one group): see /etc/subgid, or drop --group-add",
            ));
        }
        let mapping = match mapping {
            Mapping::Single { .. } => Mapping::Single {
                uid: identity.uid,
                gid: identity.gid,
            },
            Mapping::Subid { uids, gids } => {
                if identity.uid > uids.count || identity.gid > gids.count {
                    return Err(Error::new(format!(
                        "user '{}' ({}:{}) is outside your subordinate range (0-{}): run with --userns single",
                        plan.user, identity.uid, identity.gid, uids.count
                    )));
                }
                Mapping::Subid { uids, gids }
            }
        };
        if !env.has(b"HOME") {
            let home = identity.home.as_deref().unwrap_or("/");
            env.set(b"HOME", home.as_bytes());
        }
        let fake_root = plan.fake_root.unwrap_or(!mapping.is_subid());
        let process = Process {
            argv: plan.argv.clone(),
            env: env::into_os(env),
            working_dir: plan.working_dir.clone(),
            read_only: plan.read_only,
            ulimits: plan.ulimits.clone(),
            caps: plan.caps.clone(),
            seccomp: plan.seccomp,
            fake_root,
            subid: mapping.is_subid(),
            identity,
            preserve_fds: plan.preserve_fds,
            keep_fds: plan.keep_fds.clone(),
            debug: plan.debug,
        };
        Ok(Launch {
            fake_root,
            plan,
            mapping,
            process,
            userns,
        })
    }
}
