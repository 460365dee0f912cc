//! `-u USER[:GROUP]` and the image's User, resolved through the container's own
//! /etc/passwd and /etc/group (never the host's NSS), as docker does.

use crate::error::{Error, Result};
use crate::rootfs::inroot;
use std::io::Read;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups: /etc/group memberships and the primary group.
    pub groups: Vec<u32>,
    /// The user's home from /etc/passwd, for $HOME.
    pub home: Option<String>,
}

impl Identity {
    pub fn root() -> Identity {
        Identity {
            uid: 0,
            gid: 0,
            groups: Vec::new(),
            home: Some("/root".into()),
        }
    }
}

/// Reads a file of the rootfs, resolved inside it.
/// The biggest /etc/passwd or /etc/group read (a hostile image's could be any size).
const MAX_DB_BYTES: u64 = 16 << 20;

/// Reads a file of a layer, resolved inside it: None when the layer does not have it.
/// Never blocks (a FIFO reads as empty) and reads at most [`MAX_DB_BYTES`].
/// None: `layer` does not have `path`; Some(None): it hides it (an overlay whiteout).
fn read_in_root(layer: &Path, path: &str) -> Option<Option<String>> {
    let root = std::fs::File::open(layer).ok()?;
    let fd = match inroot::open_file(root.as_fd(), path.as_bytes()) {
        Ok(fd) => fd,
        // Not here: unless its directory is opaque here, which hides every layer below.
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
            return opaque_parent(&root, path).then_some(None)
        }
        Err(_) => return Some(None),
    };
    let mut bytes = Vec::new();
    let _ = std::fs::File::from(fd)
        .take(MAX_DB_BYTES)
        .read_to_end(&mut bytes);
    Some(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

/// Whether the directory of `path` in `layer` is opaque (`user.overlay.opaque`: a
/// layer's `.wh..wh..opq`, or overlay's own mark in a kept upper).
fn opaque_parent(layer: &std::fs::File, path: &str) -> bool {
    let (parent, _) = inroot::split_parent(path.as_bytes());
    !parent.is_empty()
        && inroot::open_dir_no_symlinks(layer.as_fd(), parent).is_ok_and(|dir| {
            crate::sys::get_xattr_fd(dir.as_fd(), c"user.overlay.opaque", 8)
                .is_ok_and(|v| v == b"y")
        })
}

/// Resolves `spec` (`name`, `uid`, `name:group`, `uid:gid`) against the image: its
/// /etc/passwd and /etc/group as the container will see them, from the kept writable
/// layer `upper` (--overlay) when that holds them, else from the rootfs.
/// `extra_groups` (--group-add: names or numbers) join the supplementary groups.
pub fn resolve(
    lowers: &[PathBuf],
    upper: Option<&Path>,
    spec: &str,
    extra_groups: &[String],
) -> Result<Identity> {
    // The first layer, from the top, that has the file or hides it (a whiteout).
    let read = |path: &str| {
        upper
            .into_iter()
            .chain(lowers.iter().map(PathBuf::as_path))
            .find_map(|layer| read_in_root(layer, path))
            .flatten()
            .unwrap_or_default()
    };
    let group = read("etc/group");
    let mut identity = match spec {
        "" => Identity::root(),
        spec => resolve_in(&read("etc/passwd"), &group, spec)?,
    };
    for name in extra_groups {
        identity.groups.push(group_id(&group, name)?);
    }
    identity.groups.sort_unstable();
    identity.groups.dedup();
    Ok(identity)
}

/// A group by name in the image's /etc/group, or a number.
fn group_id(group: &str, name: &str) -> Result<u32> {
    let by_name = group
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 3 && f[0] == name)
        .and_then(|f| f[2].parse().ok());
    by_name.or_else(|| name.parse().ok()).ok_or_else(|| {
        Error::new(format!(
            "--group-add {}: no such group in the image's /etc/group",
            crate::log::printable(name.as_bytes())
        ))
    })
}

fn resolve_in(passwd: &str, group: &str, spec: &str) -> Result<Identity> {
    let (user, grp) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    // name:x:uid:gid:gecos:home:shell
    let entry = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 4 && (f[0] == user || (!user.is_empty() && f[2] == user)));
    let (uid, mut gid, name, home) = match (&entry, user.parse::<u32>()) {
        (Some(f), _) => (
            f[2].parse::<u32>()
                .map_err(|_| bad(spec, "bad uid in the image's /etc/passwd"))?,
            f[3].parse::<u32>()
                .map_err(|_| bad(spec, "bad gid in the image's /etc/passwd"))?,
            Some(f[0].to_string()),
            f.get(5).map(|h| h.to_string()),
        ),
        // A number the image does not know: docker runs it with gid 0.
        (None, Ok(uid)) => (uid, 0, None, None),
        (None, Err(_)) => {
            return Err(bad(spec, "no such user in the image's /etc/passwd"));
        }
    };
    // name:x:gid:member,member
    let groups: Vec<Vec<&str>> = group.lines().map(|l| l.split(':').collect()).collect();
    if let Some(g) = grp {
        gid = match groups.iter().find(|f| f.len() >= 3 && f[0] == g) {
            Some(f) => f[2]
                .parse()
                .map_err(|_| bad(spec, "bad gid in the image's /etc/group"))?,
            None => g
                .parse()
                .map_err(|_| bad(spec, "no such group in the image's /etc/group"))?,
        };
    }
    let mut supplementary: Vec<u32> = match &name {
        Some(n) => groups
            .iter()
            .filter(|f| f.len() >= 4 && f[3].split(',').any(|m| m == n))
            .filter_map(|f| f[2].parse().ok())
            .collect(),
        None => Vec::new(),
    };
    // initgroups(3) semantics: the primary group is among the groups too.
    supplementary.push(gid);
    supplementary.sort_unstable();
    supplementary.dedup();
    Ok(Identity {
        uid,
        gid,
        groups: supplementary,
        home,
    })
}

fn bad(spec: &str, why: &str) -> Error {
    Error::new(format!("user '{spec}': {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nwww-data:x:33:33:www:/var/www:/usr/sbin/nologin\napp:x:1000:1000::/home/app:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nwww-data:x:33:\nstaff:x:50:app,other\napp:x:1000:\n";

    #[test]
    fn names_and_numbers_resolve() {
        let app = resolve_in(PASSWD, GROUP, "app").unwrap();
        assert_eq!(
            (app.uid, app.gid, app.groups.clone()),
            (1000, 1000, vec![50, 1000])
        );
        assert_eq!(app.home.as_deref(), Some("/home/app"));
        assert_eq!(resolve_in(PASSWD, GROUP, "33").unwrap().gid, 33);
        let odd = resolve_in(PASSWD, GROUP, "4242").unwrap();
        assert_eq!((odd.uid, odd.gid), (4242, 0));
        assert_eq!(resolve_in(PASSWD, GROUP, "app:www-data").unwrap().gid, 33);
        assert_eq!(resolve_in(PASSWD, GROUP, "app:7").unwrap().gid, 7);
    }

    #[test]
    fn unknown_names_are_errors() {
        assert!(resolve_in(PASSWD, GROUP, "nobody").is_err());
        assert!(resolve_in(PASSWD, GROUP, "app:nogroup").is_err());
    }
}
