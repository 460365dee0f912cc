//! `--volume` and `--tmpfs` as mount requests: host paths made absolute and checked,
//! tmpfs options split into mount flags and data.

use crate::error::{Context, Error, Result};
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub struct Volume {
    pub source: PathBuf,
    /// Absolute path inside the container.
    pub target: String,
    pub read_only: bool,
}

#[derive(Debug)]
pub struct Tmpfs {
    pub target: String,
    pub flags: nix::mount::MsFlags,
    pub data: String,
}

/// HOST:CONTAINER[:ro|rw]; HOST relative to the current directory and required to exist.
pub fn parse_volume(spec: &str, cwd: &Path) -> Result<Volume> {
    let bad = || Error::new(format!("--volume {spec}: expected HOST:CONTAINER[:ro]"));
    let mut parts = spec.split(':');
    let (host, target) = (parts.next().ok_or_else(bad)?, parts.next().ok_or_else(bad)?);
    let read_only = match parts.next() {
        None | Some("rw") => false,
        Some("ro") => true,
        Some(_) => return Err(bad()),
    };
    if host.is_empty() || parts.next().is_some() {
        return Err(bad());
    }
    if !target.starts_with('/') {
        return Err(Error::new(format!(
            "--volume {spec}: the container path must be absolute"
        )));
    }
    let source = cwd.join(host);
    let source = std::fs::canonicalize(&source)
        .with_context(|| format!("--volume {spec}: {}", source.display()))?;
    Ok(Volume {
        source,
        target: target.to_string(),
        read_only,
    })
}

/// PATH[:OPTIONS]; mount flags among the options become flags, the rest tmpfs data.
pub fn parse_tmpfs(spec: &str) -> Result<Tmpfs> {
    use nix::mount::MsFlags;
    let (target, options) = spec.split_once(':').unwrap_or((spec, ""));
    if !target.starts_with('/') {
        return Err(Error::new(format!(
            "--tmpfs {spec}: the path must be absolute"
        )));
    }
    let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    let mut data = vec!["mode=1777".to_string()];
    for opt in options.split(',').filter(|o| !o.is_empty()) {
        match opt {
            "ro" => flags |= MsFlags::MS_RDONLY,
            "rw" => flags.remove(MsFlags::MS_RDONLY),
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            "exec" => flags.remove(MsFlags::MS_NOEXEC),
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "suid" => flags.remove(MsFlags::MS_NOSUID),
            "nodev" => flags |= MsFlags::MS_NODEV,
            "dev" => flags.remove(MsFlags::MS_NODEV),
            other if other.starts_with("mode=") => {
                data.retain(|d| !d.starts_with("mode="));
                data.push(other.to_string());
            }
            other => data.push(other.to_string()),
        }
    }
    Ok(Tmpfs {
        target: target.to_string(),
        flags,
        data: data.join(","),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_and_tmpfs_parse() {
        let cwd = std::env::temp_dir();
        let v = parse_volume(".:/data:ro", &cwd).unwrap();
        assert!(v.read_only && v.target == "/data" && v.source.is_absolute());
        assert!(parse_volume("/nonexistent-binctr-path:/x", &cwd).is_err());
        assert!(parse_volume("/tmp:relative", &cwd).is_err());
        assert!(parse_volume("/tmp:/x:maybe", &cwd).is_err());
        let t = parse_tmpfs("/run:size=1m,noexec").unwrap();
        assert_eq!(t.data, "mode=1777,size=1m");
        assert!(t.flags.contains(nix::mount::MsFlags::MS_NOEXEC));
    }
}
