//! The run plan: image config + flags, precedence applied, resolved once into a
//! [`RunPlan`] that is never changed afterwards. Each part comes from a small resolver
//! (env, caps, volumes, hooks, terminal, systemd); what needs the rootfs (the user's
//! ids, the id mapping) is resolved later, into the container's launch plan.

use super::env;
use super::flags::Flags;
use super::hooks::{parse_hook, Hook};
use super::launcher;
use super::ulimit::{parse_ulimit, Ulimit};
use super::volumes::{
    parse_device, parse_mount, parse_tmpfs, parse_volume, Device, Mount, Tmpfs, Volume,
};
use crate::error::{Context, Error, Result};
use crate::signals::parse_signal;
use crate::userns::Mode;
use binctr_format::{Env, ImageConfig};
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The resolved run.
#[derive(Debug)]
pub struct RunPlan {
    pub debug: bool,
    pub read_only: bool,
    pub hostname: String,
    /// argv of the container's command (never empty).
    pub argv: Vec<OsString>,
    pub working_dir: String,
    /// What SIGTERM to the stub becomes (the image's StopSignal).
    pub stop_signal: libc::c_int,
    pub detach: bool,
    pub log: Option<PathBuf>,
    pub pid_file: Option<PathBuf>,
    /// The container's id.
    pub id: String,
    /// The user chose the id (so it must be unique among running containers).
    pub explicit_id: bool,
    pub state_root: PathBuf,
    pub hooks: Vec<Hook>,
    pub terminal: Terminal,
    pub volumes: Vec<Volume>,
    pub tmpfs: Vec<Tmpfs>,
    pub net_none: bool,
    /// binctr's init as PID 1 (else the command is PID 1).
    pub init: bool,
    /// Where the writable layer lives (unused with a read-only root).
    pub layer: Layer,
    /// Descriptors 3..3+N passed on (systemd socket activation).
    pub preserve_fds: i32,
    /// Other descriptors passed on at their numbers (PMI_FD under a launcher).
    pub keep_fds: Vec<i32>,
    /// The id of the container shared with the other runs of a group (--share, srun's
    /// ranks on one node), which this run joins or starts.
    pub share: Option<String>,
    /// The container runs no command of its own: its PID 1 only waits, while the
    /// group's commands are started in it (set for the shared container).
    pub pause: bool,
    /// The command's capabilities (the bounding set).
    pub caps: Vec<caps::Capability>,
    /// The default seccomp filter (off with --security-opt seccomp=unconfined).
    pub seccomp: bool,
    /// -u or the image's User ("" = root), resolved in the image once it is extracted.
    pub user: String,
    pub userns: Mode,
    /// --fake-root / --no-fake-root; None: on with a single mapping.
    pub fake_root: Option<bool>,
    /// docker's masked and read-only paths of /proc and /sys (off with --privileged).
    pub mask_paths: bool,
    pub ulimits: Vec<Ulimit>,
    /// The size of /dev/shm.
    pub shm_size: String,
    /// --add-host: (name, address) lines for /etc/hosts.
    pub hosts: Vec<(String, String)>,
    /// --dns: nameservers for /etc/resolv.conf instead of the host's.
    pub dns: Vec<String>,
    pub devices: Vec<Device>,
    /// --group-add: names (in the image's /etc/group) or numbers.
    pub group_add: Vec<String>,
    /// Seconds between the stop signal and SIGKILL (None: wait).
    pub stop_timeout: Option<u32>,
}

impl RunPlan {
    /// The plan, and the environment it resolved (docker's defaults, the image's Env,
    /// --env-file and -e, merged; $HOME is added once the user is known): handed on by
    /// value, as it may hold tens of thousands of entries.
    pub fn new(
        flags: &Flags,
        command: Vec<OsString>,
        config: &ImageConfig,
        digest: &str,
    ) -> Result<(RunPlan, Env)> {
        let cwd = std::env::current_dir().context("cannot read the current directory")?;
        let absolute = |p: &str| cwd.join(p);
        let hostname = hostname(flags, config)?;
        let net_none = net_none(&flags.net)?;
        let launched = launcher::detected();
        // A rank runs as you (podman's keep-id), as under enroot and apptainer: PMIx
        // accepts a client whose uid is the job's, and files it writes are yours.
        let userns = match (launched, flags.userns.as_str(), &flags.user) {
            (true, "auto" | "", None) => "keep-id".to_string(),
            (_, mode, _) => mode.to_string(),
        };
        let mut env = env::resolve(
            &hostname,
            &config.env,
            env::HostVars {
                all: flags.env_host,
                launcher: launched,
            },
            &flags.env_file,
            &flags.env,
        )?;
        let mut volumes = parse_all(&flags.volume, |v| parse_volume(v, &cwd))?;
        let mut tmpfs = parse_all(&flags.tmpfs, parse_tmpfs)?;
        for spec in &flags.mount {
            match parse_mount(spec, &cwd)? {
                Mount::Bind(v) => volumes.push(v),
                Mount::Tmpfs(t) => tmpfs.push(t),
            }
        }
        volumes.extend(notify_socket(&mut env, net_none));
        let preserve_fds = socket_activation(&mut env);
        let keep_fds = match launched {
            true => launcher::kept_fds(),
            false => Vec::new(),
        };
        if launched {
            let binds = launcher::binds();
            crate::log::debug!("{}", launcher::describe(&keep_fds, &binds));
            volumes.extend(binds);
        }
        if flags.log.is_some() && !flags.detach {
            return Err(Error::new(
                "--log only applies to a detached container (-d)",
            ));
        }
        if flags.init && flags.no_init {
            return Err(Error::new("--init and --no-init contradict each other"));
        }
        if flags.rm && flags.overlay.is_some() {
            return Err(Error::new(
                "--rm and --overlay contradict each other: choose one",
            ));
        }
        let plan = RunPlan {
            debug: flags.debug,
            read_only: (flags.read_only || config.read_only) && !flags.read_write,
            argv: argv(flags, command, config),
            working_dir: working_dir(flags, config)?,
            stop_signal: stop_signal(config)?,
            detach: flags.detach,
            log: flags.log.as_deref().map(absolute),
            pid_file: flags.pid_file.as_deref().map(absolute),
            explicit_id: flags.id.is_some(),
            id: container_id(flags, config)?,
            state_root: match &flags.root {
                Some(root) => absolute(root),
                None => default_state_root(),
            },
            hooks: parse_all(&flags.hook, parse_hook)?,
            terminal: terminal(flags, &cwd),
            volumes,
            tmpfs,
            net_none,
            init: !flags.no_init,
            layer: layer(flags, &cwd)?,
            preserve_fds,
            keep_fds,
            share: launcher::share_id(flags, digest)?,
            pause: false,
            caps: match flags.privileged {
                true => caps::all().into_iter().collect(),
                false => super::caps::resolve_caps(&flags.cap_add, &flags.cap_drop)?,
            },
            seccomp: seccomp(&flags.security_opt)? && !flags.privileged,
            user: user(flags, config, &userns)?,
            userns: Mode::parse(&userns)?,
            fake_root: fake_root(flags)?,
            mask_paths: !flags.privileged,
            ulimits: parse_all(&flags.ulimit, parse_ulimit)?,
            shm_size: shm_size(flags)?,
            hosts: parse_all(&flags.add_host, parse_host)?,
            dns: parse_all(&flags.dns, parse_dns)?,
            devices: parse_all(&flags.device, parse_device)?,
            group_add: flags.group_add.clone(),
            stop_timeout: flags.stop_timeout,
            hostname,
        };
        Ok((plan, env))
    }
}

/// Each value of a repeatable flag, parsed.
fn parse_all<T>(values: &[String], parse: impl Fn(&str) -> Result<T>) -> Result<Vec<T>> {
    values.iter().map(|v| parse(v)).collect()
}

fn shm_size(flags: &Flags) -> Result<String> {
    match &flags.shm_size {
        Some(size) if valid_size(size) => Ok(size.clone()),
        Some(size) => Err(Error::new(format!(
            "--shm-size {size}: give a size such as 64m or 1g"
        ))),
        None => Ok("64m".into()),
    }
}

/// -u, else the image's User; with --userns keep-id and neither, your own uid:gid.
fn user(flags: &Flags, config: &ImageConfig, userns: &str) -> Result<String> {
    let keep_id = userns == "keep-id";
    match (&flags.user, keep_id) {
        (Some(_), true) => Err(Error::new(
            "--userns keep-id runs as your own uid: it does not go with -u",
        )),
        (Some(user), false) => Ok(user.clone()),
        (None, true) => Ok(format!(
            "{}:{}",
            nix::unistd::getuid(),
            nix::unistd::getgid()
        )),
        (None, false) => Ok(config.user.clone()),
    }
}

/// `--add-host NAME:IP` (docker also takes `NAME=IP`; an IPv6 address keeps its colons).
fn parse_host(spec: &str) -> Result<(String, String)> {
    let split = spec.split_once('=').or_else(|| spec.split_once(':'));
    match split {
        Some((name, ip)) if valid_hostname(name) && ip.parse::<std::net::IpAddr>().is_ok() => {
            Ok((name.to_string(), ip.to_string()))
        }
        _ => Err(Error::new(format!(
            "--add-host {}: expected NAME:IP, e.g. db:10.0.0.5",
            crate::log::printable(spec.as_bytes())
        ))),
    }
}

fn parse_dns(ip: &str) -> Result<String> {
    ip.parse::<std::net::IpAddr>()
        .map(|a| a.to_string())
        .map_err(|_| {
            Error::new(format!(
                "--dns {}: give an IP address",
                crate::log::printable(ip.as_bytes())
            ))
        })
}

/// docker run: arguments replace Cmd and are appended to Entrypoint; --entrypoint
/// replaces Entrypoint and drops Cmd; nothing at all runs /bin/sh.
fn argv(flags: &Flags, command: Vec<OsString>, config: &ImageConfig) -> Vec<OsString> {
    let (entrypoint, cmd) = match &flags.entrypoint {
        Some(e) if e.is_empty() => (Vec::new(), Vec::new()),
        Some(e) => (vec![e.clone()], Vec::new()),
        None => (config.entrypoint.clone(), config.cmd.clone()),
    };
    let mut argv: Vec<OsString> = entrypoint.iter().map(OsString::from).collect();
    if command.is_empty() {
        argv.extend(cmd.iter().map(OsString::from));
    } else {
        argv.extend(command);
    }
    if argv.is_empty() {
        argv.push("/bin/sh".into());
    }
    argv
}

fn fake_root(flags: &Flags) -> Result<Option<bool>> {
    match (flags.fake_root, flags.no_fake_root) {
        (true, true) => Err(Error::new(
            "--fake-root and --no-fake-root contradict each other",
        )),
        (true, false) => Ok(Some(true)),
        (false, true) => Ok(Some(false)),
        (false, false) => Ok(None),
    }
}

fn hostname(flags: &Flags, config: &ImageConfig) -> Result<String> {
    match &flags.hostname {
        Some(h) if valid_hostname(h) => Ok(h.clone()),
        Some(h) => Err(Error::new(format!(
            "--hostname '{h}' is not a valid hostname (letters, digits, '-' and '.', at most 64)"
        ))),
        None => Ok(hostname_for(&config.name)),
    }
}

fn working_dir(flags: &Flags, config: &ImageConfig) -> Result<String> {
    match &flags.workdir {
        Some(dir) if dir.starts_with('/') => Ok(dir.clone()),
        Some(dir) => Err(Error::new(format!(
            "-w {dir}: the working directory must be an absolute path"
        ))),
        None if config.working_dir.is_empty() => Ok("/".to_string()),
        None => Ok(config.working_dir.clone()),
    }
}

/// The image's StopSignal. One whose default action does not end a process (SIGSTOP,
/// SIGCONT, SIGCHLD...) would never stop the container: SIGTERM is used instead, with
/// a warning.
fn stop_signal(config: &ImageConfig) -> Result<libc::c_int> {
    let name = config.stop_signal.as_str();
    if name.is_empty() {
        return Ok(libc::SIGTERM);
    }
    let signal = parse_signal(name).ok_or_else(|| {
        Error::new(format!(
            "the image's StopSignal '{}' is not a signal this stub knows",
            crate::log::printable(name.as_bytes())
        ))
    })?;
    if matches!(
        signal,
        libc::SIGSTOP
            | libc::SIGTSTP
            | libc::SIGTTIN
            | libc::SIGTTOU
            | libc::SIGCONT
            | libc::SIGCHLD
            | libc::SIGWINCH
            | libc::SIGURG
    ) {
        eprintln!(
            "binctr: warning: the image's StopSignal {name} does not end a process; SIGTERM stops this container"
        );
        return Ok(libc::SIGTERM);
    }
    Ok(signal)
}

fn net_none(net: &str) -> Result<bool> {
    match net {
        "host" => Ok(false),
        "none" => Ok(true),
        other => Err(Error::new(format!(
            "--net {other}: only 'host' and 'none' are available rootless here"
        ))),
    }
}

/// Where the container's writable layer lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layer {
    /// On disk beside the cache, one per run, removed at exit (the default).
    Disk,
    /// In memory, a tmpfs of this size (`--writable-tmpfs`).
    Tmpfs(String),
    /// In this directory, kept for later runs (`--overlay DIR`).
    Kept(PathBuf),
}

fn layer(flags: &Flags, cwd: &Path) -> Result<Layer> {
    let size = match &flags.tmpfs_size {
        Some(size) if valid_size(size) => size.clone(),
        Some(size) => {
            return Err(Error::new(format!(
                "--tmpfs-size {size}: give a size such as 512m or 2g"
            )))
        }
        None => "1g".into(),
    };
    match (
        &flags.overlay,
        flags.writable_tmpfs,
        flags.tmpfs_size.is_some(),
    ) {
        (Some(_), true, _) => Err(Error::new(
            "--overlay and --writable-tmpfs contradict each other: choose one",
        )),
        (Some(dir), false, _) => Ok(Layer::Kept(cwd.join(dir))),
        (None, false, true) => Err(Error::new("--tmpfs-size goes with --writable-tmpfs")),
        (None, true, _) => Ok(Layer::Tmpfs(size)),
        (None, false, false) => Ok(Layer::Disk),
    }
}

/// `512m`, `2g`, `1048576`: digits and one of k, m, g (either case).
fn valid_size(size: &str) -> bool {
    let digits = size.trim_end_matches(['k', 'm', 'g', 'K', 'M', 'G']);
    !digits.is_empty()
        && digits.len() + 1 >= size.len()
        && digits.bytes().all(|b| b.is_ascii_digit())
}

/// The command's stdio.
#[derive(Debug, PartialEq, Eq)]
pub enum Terminal {
    /// The stub's own stdin, stdout and stderr, as they are.
    Inherit,
    /// A pseudo-terminal of the container's devpts, relayed to the stub's terminal.
    Pty,
    /// This pty slave on the host (binctr's --console).
    Console(PathBuf),
}

fn terminal(flags: &Flags, cwd: &Path) -> Terminal {
    let is_terminal = |fd| nix::unistd::isatty(fd).unwrap_or(false);
    // Only in the terminal's foreground: a background job (`./img cmd &`) taking the
    // terminal into raw mode would be stopped by SIGTTOU.
    let in_foreground =
        || nix::unistd::tcgetpgrp(crate::sys::stdin()).is_ok_and(|g| g == nix::unistd::getpgrp());
    match &flags.console {
        Some(path) => Terminal::Console(cwd.join(path)),
        None if flags.detach => Terminal::Inherit,
        None if flags.tty => Terminal::Pty,
        // docker's -i alone: stdin kept, no terminal
        None if flags.interactive => Terminal::Inherit,
        None if is_terminal(0) && is_terminal(1) && in_foreground() => Terminal::Pty,
        None => Terminal::Inherit,
    }
}

fn container_id(flags: &Flags, config: &ImageConfig) -> Result<String> {
    match &flags.id {
        Some(id) if valid_id(id) => Ok(id.clone()),
        Some(id) => Err(Error::new(format!(
            "--id '{id}': use letters, digits, '.', '_' and '-' (at most 64)"
        ))),
        None => Ok(format!(
            "{}-{}",
            hostname_for(&config.name),
            unique_suffix()
        )),
    }
}

fn seccomp(options: &[String]) -> Result<bool> {
    let mut seccomp = true;
    for opt in options {
        match opt.as_str() {
            "seccomp=unconfined" => seccomp = false,
            "seccomp=default" | "no-new-privileges" | "no-new-privileges=true" => {}
            other => {
                return Err(Error::new(format!(
                    "--security-opt {other}: known options are seccomp=unconfined, seccomp=default, no-new-privileges"
                )))
            }
        }
    }
    Ok(seccomp)
}

/// Where a path NOTIFY_SOCKET is bind-mounted inside the container.
const NOTIFY_SOCKET_PATH: &str = "/run/binctr/notify.sock";

/// systemd's Type=notify: a path socket is bound into the container, an abstract one is
/// reachable through the host's network namespace.
fn notify_socket(env: &mut Env, net_none: bool) -> Option<Volume> {
    let sock = std::env::var_os("NOTIFY_SOCKET")?;
    if sock.as_bytes().starts_with(b"/") {
        env.set(b"NOTIFY_SOCKET", NOTIFY_SOCKET_PATH.as_bytes());
        return Some(Volume {
            source: PathBuf::from(&sock),
            target: NOTIFY_SOCKET_PATH.into(),
            read_only: false,
        });
    }
    if !net_none {
        env.set(b"NOTIFY_SOCKET", sock.as_bytes());
    }
    None
}

/// systemd's socket activation: how many descriptors from 3 on stay open.
fn socket_activation(env: &mut Env) -> i32 {
    let n = listen_fds();
    if n > 0 {
        env::pass_from_host(env, "LISTEN_FDS");
        env::pass_from_host(env, "LISTEN_FDNAMES");
    }
    n
}

/// A hostname from the image name: letters, digits and '-', at most 63 bytes.
fn hostname_for(name: &str) -> String {
    let mut host: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    host = host.trim_matches('-').to_string();
    host.truncate(63);
    if host.is_empty() {
        host = "binctr".into();
    }
    host
}

/// The descriptors systemd passed for socket activation, when they are meant for us.
fn listen_fds() -> i32 {
    let ours = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        .is_some_and(|p| p == std::process::id());
    let n = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse::<i32>().ok())
        .unwrap_or(0);
    if ours {
        n.clamp(0, 1024)
    } else {
        0
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// 8 hex digits from the kernel's random pool (the pid and time if that fails).
fn unique_suffix() -> String {
    let mut bytes = [0u8; 4];
    let filled = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .is_ok();
    let n = if filled {
        u32::from_ne_bytes(bytes)
    } else {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        t ^ std::process::id().rotate_left(16)
    };
    format!("{n:08x}")
}

/// $XDG_RUNTIME_DIR/binctr, else /tmp/binctr-UID.
pub fn default_state_root() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(dir) if Path::new(&dir).is_dir() => PathBuf::from(dir).join("binctr"),
        _ => PathBuf::from(format!("/tmp/binctr-{}", nix::unistd::getuid())),
    }
}

fn valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 64
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked() {
        assert!(valid_id("web-1.a_b"));
        assert!(!valid_id("../x"));
        assert!(!valid_id(".hidden"));
        assert!(!valid_id(""));
    }

    #[test]
    fn hostname_is_a_valid_label() {
        assert_eq!(hostname_for("busybox"), "busybox");
        assert_eq!(hostname_for("My_Image.v2"), "my-image-v2");
        assert_eq!(hostname_for("..."), "binctr");
    }
}
