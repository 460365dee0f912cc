//! `--cap-add` / `--cap-drop` resolved against docker's default set.

use crate::error::{Error, Result};

/// docker's default capability set for a container's root.
pub const DEFAULT_CAPS: [caps::Capability; 14] = {
    use caps::Capability::*;
    [
        CAP_CHOWN,
        CAP_DAC_OVERRIDE,
        CAP_FSETID,
        CAP_FOWNER,
        CAP_MKNOD,
        CAP_NET_RAW,
        CAP_SETGID,
        CAP_SETUID,
        CAP_SETFCAP,
        CAP_SETPCAP,
        CAP_NET_BIND_SERVICE,
        CAP_SYS_CHROOT,
        CAP_KILL,
        CAP_AUDIT_WRITE,
    ]
};

/// docker's rules: the default set, or every capability with --cap-add ALL; then the
/// drops (ALL: none left but the added ones); then the adds.
pub fn resolve_caps(add: &[String], drop: &[String]) -> Result<Vec<caps::Capability>> {
    let parse = |flag: &str, names: &[String]| -> Result<(bool, Vec<caps::Capability>)> {
        let mut all = false;
        let mut list = Vec::new();
        for name in names {
            let upper = name.to_ascii_uppercase();
            if upper == "ALL" {
                all = true;
                continue;
            }
            let full = if upper.starts_with("CAP_") {
                upper
            } else {
                format!("CAP_{upper}")
            };
            let cap = full.parse::<caps::Capability>().map_err(|_| {
                Error::new(format!(
                    "{flag} {name}: not a capability name (e.g. NET_ADMIN)"
                ))
            })?;
            list.push(cap);
        }
        Ok((all, list))
    };
    let (add_all, added) = parse("--cap-add", add)?;
    let (drop_all, dropped) = parse("--cap-drop", drop)?;
    let mut set: Vec<caps::Capability> = if add_all {
        caps::all().into_iter().collect()
    } else {
        DEFAULT_CAPS.to_vec()
    };
    if drop_all {
        set.clear();
    }
    set.retain(|c| !dropped.contains(c));
    for cap in added {
        if !set.contains(&cap) {
            set.push(cap);
        }
    }
    set.sort_by_key(|c| c.index());
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_follow_docker() {
        use caps::Capability::*;
        let default = resolve_caps(&[], &[]).unwrap();
        assert_eq!(default.len(), 14);
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let set = resolve_caps(&s(&["net_admin"]), &s(&["CAP_CHOWN", "MKNOD"])).unwrap();
        assert!(
            set.contains(&CAP_NET_ADMIN) && !set.contains(&CAP_CHOWN) && !set.contains(&CAP_MKNOD)
        );
        assert_eq!(
            resolve_caps(&s(&["KILL"]), &s(&["ALL"])).unwrap(),
            vec![CAP_KILL]
        );
        assert!(resolve_caps(&s(&["ALL"]), &[])
            .unwrap()
            .contains(&CAP_SYS_ADMIN));
        assert!(resolve_caps(&s(&["BOGUS"]), &[]).is_err());
    }
}
