//! `--volume`, `--mount`, `--tmpfs` and `--device` as mount requests: host paths made
//! absolute and checked, tmpfs options split into mount flags and data.

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

/// docker's `--mount`: `type=bind,src=HOST,dst=PATH[,readonly]` (also `source`,
/// `target`, `destination`, `ro`) or `type=tmpfs,dst=PATH[,tmpfs-size=SIZE,tmpfs-mode=M]`.
pub enum Mount {
    Bind(Volume),
    Tmpfs(Tmpfs),
}

pub fn parse_mount(spec: &str, cwd: &Path) -> Result<Mount> {
    let bad = |why: &str| Error::new(format!("--mount {spec}: {why}"));
    let (mut kind, mut src, mut dst, mut read_only, mut tmpfs_opts) =
        ("", None, None, false, Vec::new());
    for field in spec.split(',') {
        let (key, value) = field.split_once('=').unwrap_or((field, ""));
        match key {
            "type" => kind = value,
            "src" | "source" => src = Some(value),
            "dst" | "destination" | "target" => dst = Some(value),
            "readonly" | "ro" => read_only = value.is_empty() || value == "true" || value == "1",
            "tmpfs-size" => tmpfs_opts.push(format!("size={value}")),
            "tmpfs-mode" => tmpfs_opts.push(format!("mode={value}")),
            _ => return Err(bad(&format!("unknown field '{key}'"))),
        }
    }
    let dst = dst.ok_or_else(|| bad("no dst= (the path in the container)"))?;
    match kind {
        "bind" => {
            let src = src.ok_or_else(|| bad("no src= (the host path)"))?;
            let mode = if read_only { ":ro" } else { "" };
            parse_volume(&format!("{src}:{dst}{mode}"), cwd).map(Mount::Bind)
        }
        "tmpfs" if src.is_none() => {
            let opts = tmpfs_opts.join(",");
            let spec = if opts.is_empty() {
                dst.to_string()
            } else {
                format!("{dst}:{opts}")
            };
            parse_tmpfs(&spec).map(Mount::Tmpfs)
        }
        "tmpfs" => Err(bad("a tmpfs has no src=")),
        "volume" => Err(bad(
            "named volumes need a daemon to keep them: use type=bind with a directory of yours",
        )),
        _ => Err(bad("type= must be bind or tmpfs")),
    }
}

/// `--device /dev/X[:/dev/Y]`: a host device node bound into the container's /dev.
#[derive(Debug)]
pub struct Device {
    pub source: PathBuf,
    /// Absolute path inside the container.
    pub target: String,
}

/// The node must be a device the caller may open (read or write): binding it cannot
/// give more than the user has.
pub fn parse_device(spec: &str) -> Result<Device> {
    let (source, target) = spec.split_once(':').unwrap_or((spec, spec));
    let target = target.split(':').next().unwrap_or(target);
    if !source.starts_with("/dev/") || !target.starts_with('/') {
        return Err(Error::new(format!(
            "--device {spec}: give a host device as /dev/NAME[:/dev/NAME]"
        )));
    }
    let meta = std::fs::metadata(source).with_context(|| format!("--device {spec}"))?;
    use std::os::unix::fs::FileTypeExt;
    if !(meta.file_type().is_char_device() || meta.file_type().is_block_device()) {
        return Err(Error::new(format!(
            "--device {spec}: {source} is not a device"
        )));
    }
    let may = |flags| nix::unistd::access(source, flags).is_ok();
    if !may(nix::unistd::AccessFlags::R_OK) && !may(nix::unistd::AccessFlags::W_OK) {
        return Err(Error::new(format!(
            "--device {spec}: you may not open {source} (ask for its group, e.g. video or kvm)"
        )));
    }
    Ok(Device {
        source: PathBuf::from(source),
        target: target.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_mounts_parse() {
        let cwd = std::env::temp_dir();
        let Mount::Bind(v) = parse_mount("type=bind,src=.,dst=/data,readonly", &cwd).unwrap()
        else {
            panic!("a bind");
        };
        assert!(v.read_only && v.target == "/data");
        let Mount::Tmpfs(t) = parse_mount("type=tmpfs,dst=/scratch,tmpfs-size=1m", &cwd).unwrap()
        else {
            panic!("a tmpfs");
        };
        assert_eq!(
            (t.target.as_str(), t.data.as_str()),
            ("/scratch", "mode=1777,size=1m")
        );
        assert!(parse_mount("type=volume,src=x,dst=/x", &cwd).is_err());
        assert!(parse_mount("type=bind,dst=/x", &cwd).is_err());
        assert!(parse_device("/dev/null").is_ok());
        assert!(parse_device("/etc/passwd").is_err());
    }

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
