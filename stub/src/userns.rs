//! The user namespace's id maps (RUNTIME-NOTES A1, A5): the caller becomes root inside.

use crate::error::{Error, Result};
use crate::log::debug;
use std::fs;

/// Maps the caller's uid and gid to 0 in the child's user namespace: uid_map, then
/// setgroups=deny (required before an unprivileged gid_map write, CVE-2014-8989), then
/// gid_map. The child waits on the sync pipe until this is done.
pub fn write_single_maps(pid: libc::pid_t) -> Result<()> {
    let uid = nix::unistd::getuid().as_raw();
    let gid = nix::unistd::getgid().as_raw();
    debug!("userns: single mapping, container 0 -> uid {uid} gid {gid}");
    let write = |file: &str, content: String| {
        fs::write(format!("/proc/{pid}/{file}"), content).map_err(|e| {
            Error::new(format!(
                "cannot write the user namespace's {file}: {e}{}",
                blocked_hint()
            ))
        })
    };
    write("uid_map", format!("0 {uid} 1\n"))?;
    write("setgroups", "deny".into())?;
    write("gid_map", format!("0 {gid} 1\n"))
}

fn read_sysctl(path: &str) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

/// Why this machine may refuse unprivileged user namespaces, as a suffix for an error.
pub fn blocked_hint() -> String {
    if read_sysctl("/proc/sys/user/max_user_namespaces").as_deref() == Some("0") {
        return " (user namespaces are switched off: sysctl user.max_user_namespaces=0; an administrator can raise it)".into();
    }
    if read_sysctl("/proc/sys/kernel/unprivileged_userns_clone").as_deref() == Some("0") {
        return " (unprivileged user namespaces are switched off: sysctl kernel.unprivileged_userns_clone=0; an administrator can set it to 1)".into();
    }
    if read_sysctl("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").as_deref() == Some("1")
    {
        return " (AppArmor restricts unprivileged user namespaces: sysctl kernel.apparmor_restrict_unprivileged_userns=1; an administrator can add an AppArmor profile with 'userns,' for this file)".into();
    }
    String::new()
}
