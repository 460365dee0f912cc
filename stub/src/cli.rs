//! Flags in two stages: [`Flags`] mirrors the command line as typed (argh), [`RunSpec`]
//! is the resolved run (image config + flags, precedence applied) the rest of the stub
//! uses. No flag is looked at anywhere else.

use crate::error::{Error, Result};
use crate::payload::Packed;
use argh::FromArgs;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The stub's version, shown by -v and --help.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The PATH a container gets when its image sets none (docker's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(FromArgs, Debug, Default)]
/// Runs the container image packed into this file, as an unprivileged user.
/// Flags come before the command; the command and everything after it go to the
/// container untouched.
pub struct Flags {
    /// print each setup step on stderr
    #[argh(switch, short = 'D')]
    pub debug: bool,

    /// print the version and exit
    #[argh(switch, short = 'v')]
    pub version: bool,

    /// mount the container's root filesystem read-only
    #[argh(switch)]
    pub read_only: bool,

    /// give a writable root even if the image was packed read-only (changes still vanish
    /// when the container exits)
    #[argh(switch)]
    pub read_write: bool,

    /// set an environment variable (KEY=VALUE), or pass KEY on from the host's
    /// environment (repeatable; applied after the image's Env and --env-file)
    #[argh(option, short = 'e', long = "env")]
    pub env: Vec<String>,

    /// read environment variables from a file of KEY=VALUE lines (repeatable)
    #[argh(option)]
    pub env_file: Vec<String>,

    /// working directory inside the container (instead of the image's WorkingDir)
    #[argh(option, short = 'w')]
    pub workdir: Option<String>,

    /// run this program instead of the image's entrypoint, and drop its default command
    #[argh(option)]
    pub entrypoint: Option<String>,

    /// the container's hostname (default: the image name)
    #[argh(option)]
    pub hostname: Option<String>,

    /// detach: return once the container runs; it keeps running without the terminal
    #[argh(switch, short = 'd')]
    pub detach: bool,

    /// with -d, write the container's stdout and stderr to this file (default /dev/null)
    #[argh(option)]
    pub log: Option<String>,

    /// write the host pid of the container's main process to this file
    #[argh(option)]
    pub pid_file: Option<String>,

    /// the container's id (default: the image name and a unique suffix); two running
    /// containers cannot share one
    #[argh(option)]
    pub id: Option<String>,

    /// root directory of container state (default $XDG_RUNTIME_DIR/binctr, else
    /// /tmp/binctr-UID)
    #[argh(option)]
    pub root: Option<String>,

    /// run a host command at a stage of the container's life: prestart, poststart or
    /// poststop, as 'STAGE:CMD ARG...'; it gets the OCI state JSON on stdin (repeatable)
    #[argh(option)]
    pub hook: Vec<String>,

    /// give the command a pseudo-terminal (the default when stdin and stdout are terminals)
    #[argh(switch, short = 't')]
    pub tty: bool,

    /// use this pty slave as the command's terminal instead of allocating one
    #[argh(option)]
    pub console: Option<String>,

    /// bind-mount a host path: HOST:CONTAINER[:ro] (repeatable)
    #[argh(option)]
    pub volume: Vec<String>,

    /// mount a tmpfs: PATH[:OPTIONS], options as mount's (size=64m,mode=755,noexec...)
    #[argh(option)]
    pub tmpfs: Vec<String>,

    /// network: host (default) or none (own network namespace with loopback only)
    #[argh(option, default = "String::from(\"host\")")]
    pub net: String,

    /// run the command itself as PID 1, without binctr's init
    #[argh(switch)]
    pub no_init: bool,

    /// keep the container's writable layer in this directory, so changes survive to the
    /// next run that names it (default: discarded at exit)
    #[argh(option)]
    pub overlay: Option<String>,

    /// remove the container's writable layer at exit (the default; see --overlay)
    #[argh(switch)]
    pub rm: bool,

    /// add a capability to the default set (docker's names, with or without CAP_; ALL)
    #[argh(option)]
    pub cap_add: Vec<String>,

    /// drop a capability from the default set (ALL drops every one)
    #[argh(option)]
    pub cap_drop: Vec<String>,

    /// security options: seccomp=unconfined switches the default seccomp filter off
    #[argh(option)]
    pub security_opt: Vec<String>,

    /// run as this user: NAME, UID, NAME:GROUP or UID:GID, resolved in the image's
    /// /etc/passwd and /etc/group (default: the image's User, else root)
    #[argh(option, short = 'u')]
    pub user: Option<String>,

    /// id mapping: auto (subordinate ids when /etc/subuid grants some, else single),
    /// single (you are the only id) or subid
    #[argh(option, default = "String::from(\"auto\")")]
    pub userns: String,

    /// make chown and setuid calls succeed without effect (the default with a single
    /// mapping, where they would fail)
    #[argh(switch)]
    pub fake_root: bool,

    /// let chown and setuid calls fail as the kernel says (see --fake-root)
    #[argh(switch)]
    pub no_fake_root: bool,

    /// print what this machine allows and what binctr will use, then exit (0 when a
    /// container can start)
    #[argh(switch)]
    pub check: bool,

    /// list the extracted images in the cache (size, last use) and exit
    #[argh(switch)]
    pub cache_list: bool,

    /// remove extracted images from the cache: a digest (or its start), 'this' for this
    /// file's image, or 'all'; then exit
    #[argh(option)]
    pub cache_rm: Option<String>,

    /// command and arguments to run instead of the image's default
    #[argh(positional, greedy)]
    pub command: Vec<String>,
}

/// What happened on the command line.
pub enum Parsed {
    Run(Box<Flags>, Vec<OsString>),
    /// --help: print this text (argh's) after our banner, exit 0.
    Help(String),
    /// A usage error, already worded by argh.
    Usage(String),
}

/// Parses the flags. Arguments need not be UTF-8: argh sees a lossy copy, and the
/// command (always the tail of argv, `greedy` stops flag parsing at it) is taken back
/// from the original bytes.
pub fn parse(args: &[OsString]) -> Parsed {
    let prog = args
        .first()
        .map(|a| {
            let p = std::path::Path::new(a);
            p.file_name()
                .unwrap_or(a.as_os_str())
                .to_string_lossy()
                .into_owned()
        })
        .unwrap_or_else(|| "binctr".into());
    let mut lossy: Vec<String> = args
        .iter()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    // argh knows --help only; -h among our flags (before the command) means the same.
    if let Some(h) = lossy
        .iter()
        .take_while(|a| a.starts_with('-') && a.as_str() != "--")
        .position(|a| a == "-h")
    {
        lossy[h] = "--help".into();
    }
    let refs: Vec<&str> = lossy.iter().map(String::as_str).collect();
    match Flags::from_args(&[&prog], &refs) {
        Ok(flags) => {
            let n = flags.command.len();
            let command = args[args.len() - n..].to_vec();
            Parsed::Run(Box::new(flags), command)
        }
        Err(exit) if exit.status.is_ok() => Parsed::Help(exit.output),
        Err(exit) => Parsed::Usage(exit.output),
    }
}

/// The resolved run.
#[derive(Debug)]
pub struct RunSpec {
    pub debug: bool,
    pub read_only: bool,
    pub hostname: String,
    /// argv of the container's command (never empty).
    pub argv: Vec<OsString>,
    /// KEY=VALUE, in order, later entries already merged into earlier ones.
    pub env: Vec<OsString>,
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
    /// Where the writable layer lives when it must survive the container.
    pub overlay: Option<PathBuf>,
    /// Descriptors 3..3+N passed on (systemd socket activation).
    pub preserve_fds: i32,
    /// The command's capabilities (the bounding set).
    pub caps: Vec<caps::Capability>,
    /// The default seccomp filter (off with --security-opt seccomp=unconfined).
    pub seccomp: bool,
    /// -u or the image's User ("" = root), resolved into `identity` once the rootfs
    /// is there.
    pub user: String,
    pub userns: crate::userns::Mode,
    /// --fake-root / --no-fake-root; None: on with a single mapping.
    pub fake_root: Option<bool>,
    pub mapping: crate::userns::Mapping,
    pub identity: crate::users::Identity,
}

impl RunSpec {
    /// Sets the container user (and $HOME from its passwd entry unless the image or
    /// the flags set one).
    pub fn set_identity(&mut self, identity: crate::users::Identity) {
        let home = identity.home.clone().unwrap_or_else(|| "/".into());
        let mut env = Env(std::mem::take(&mut self.env));
        if !env.has("HOME") {
            env.set("HOME", &home);
        }
        self.env = env.0;
        self.identity = identity;
    }

    /// Whether chown/setuid calls are faked.
    pub fn fake_root(&self) -> bool {
        self.fake_root.unwrap_or(!self.mapping.is_subid())
    }
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Prestart,
    Poststart,
    Poststop,
}

#[derive(Debug)]
pub struct Hook {
    pub stage: Stage,
    pub argv: Vec<String>,
}

impl RunSpec {
    pub fn new(flags: &Flags, command: Vec<OsString>, packed: &Packed) -> Result<RunSpec> {
        let config = &packed.config;
        // docker run: arguments replace Cmd and are appended to Entrypoint;
        // --entrypoint replaces Entrypoint and drops Cmd.
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
        let user = flags.user.clone().unwrap_or_else(|| config.user.clone());
        let userns = crate::userns::Mode::parse(&flags.userns)?;
        if flags.fake_root && flags.no_fake_root {
            return Err(Error::new(
                "--fake-root and --no-fake-root contradict each other",
            ));
        }
        let fake_root = match (flags.fake_root, flags.no_fake_root) {
            (true, _) => Some(true),
            (_, true) => Some(false),
            _ => None,
        };
        let hostname = match &flags.hostname {
            Some(h) if valid_hostname(h) => h.clone(),
            Some(h) => {
                return Err(Error::new(format!(
                    "--hostname '{h}' is not a valid hostname (letters, digits, '-' and '.', at most 64)"
                )))
            }
            None => hostname_for(&config.name),
        };
        let mut env = Env::default();
        env.set("PATH", DEFAULT_PATH);
        env.set("HOSTNAME", &hostname);
        if let Some(term) = std::env::var_os("TERM") {
            env.set_os("TERM", &term);
        }
        for entry in &config.env {
            env.push_entry(OsStr::new(entry));
        }
        for file in &flags.env_file {
            let text = std::fs::read_to_string(file).map_err(|e| {
                Error::new(format!(
                    "cannot read --env-file {file}: {}",
                    crate::error::plain(&e)
                ))
            })?;
            for line in text.lines() {
                let line = line.trim_start();
                if !line.is_empty() && !line.starts_with('#') {
                    env.set_from_flag(line)?;
                }
            }
        }
        for entry in &flags.env {
            env.set_from_flag(entry)?;
        }
        let working_dir = match &flags.workdir {
            Some(dir) if dir.starts_with('/') => dir.clone(),
            Some(dir) => {
                return Err(Error::new(format!(
                    "-w {dir}: the working directory must be an absolute path"
                )))
            }
            None if config.working_dir.is_empty() => "/".to_string(),
            None => config.working_dir.clone(),
        };
        let stop_signal = match config.stop_signal.as_str() {
            "" => libc::SIGTERM,
            name => parse_signal(name).ok_or_else(|| {
                Error::new(format!(
                    "the image's StopSignal '{name}' is not a signal this stub knows"
                ))
            })?,
        };
        let cwd = std::env::current_dir().map_err(|e| {
            Error::new(format!(
                "cannot read the current directory: {}",
                crate::error::plain(&e)
            ))
        })?;
        let absolute = |p: &str| cwd.join(p);
        let mut volumes = flags
            .volume
            .iter()
            .map(|v| parse_volume(v, &cwd))
            .collect::<Result<Vec<_>>>()?;
        // systemd: a Type=notify unit's socket is reachable inside; socket activation's
        // descriptors stay open.
        if let Some(sock) = std::env::var_os("NOTIFY_SOCKET") {
            if sock.as_bytes().starts_with(b"/") {
                volumes.push(Volume {
                    source: PathBuf::from(&sock),
                    target: NOTIFY_SOCKET_PATH.into(),
                    read_only: false,
                });
                env.set("NOTIFY_SOCKET", NOTIFY_SOCKET_PATH);
            } else if !flags.net.eq("none") {
                // An abstract socket is reachable from the host's network namespace.
                env.set_os("NOTIFY_SOCKET", &sock);
            }
        }
        let preserve_fds = listen_fds();
        if preserve_fds > 0 {
            for key in ["LISTEN_FDS", "LISTEN_FDNAMES"] {
                if let Some(v) = std::env::var_os(key) {
                    env.set_os(key, &v);
                }
            }
        }
        let tmpfs = flags
            .tmpfs
            .iter()
            .map(|t| parse_tmpfs(t))
            .collect::<Result<Vec<_>>>()?;
        let hooks = flags
            .hook
            .iter()
            .map(|h| parse_hook(h))
            .collect::<Result<Vec<_>>>()?;
        let net_none = match flags.net.as_str() {
            "host" => false,
            "none" => true,
            other => {
                return Err(Error::new(format!(
                    "--net {other}: only 'host' and 'none' are available rootless here"
                )))
            }
        };
        let terminal = match &flags.console {
            Some(path) => Terminal::Console(absolute(path)),
            None if flags.detach => Terminal::Inherit,
            None if flags.tty => Terminal::Pty,
            // Only in the terminal's foreground: a background job (`./img cmd &`) taking
            // the terminal into raw mode would be stopped by SIGTTOU.
            None if crate::sys::is_terminal(0)
                && crate::sys::is_terminal(1)
                && crate::sys::in_foreground(0) =>
            {
                Terminal::Pty
            }
            None => Terminal::Inherit,
        };
        if flags.log.is_some() && !flags.detach {
            return Err(Error::new(
                "--log only applies to a detached container (-d)",
            ));
        }
        if flags.rm && flags.overlay.is_some() {
            return Err(Error::new(
                "--rm and --overlay contradict each other: choose one",
            ));
        }
        let id = match &flags.id {
            Some(id) if valid_id(id) => id.clone(),
            Some(id) => {
                return Err(Error::new(format!(
                    "--id '{id}': use letters, digits, '.', '_' and '-' (at most 64)"
                )))
            }
            None => format!("{}-{}", hostname_for(&config.name), unique_suffix()),
        };
        let caps = resolve_caps(&flags.cap_add, &flags.cap_drop)?;
        let mut seccomp = true;
        for opt in &flags.security_opt {
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
        let state_root = match &flags.root {
            Some(root) => absolute(root),
            None => default_state_root(),
        };
        Ok(RunSpec {
            debug: flags.debug,
            read_only: (flags.read_only || config.read_only) && !flags.read_write,
            hostname,
            argv,
            env: env.0,
            working_dir,
            stop_signal,
            detach: flags.detach,
            log: flags.log.as_deref().map(absolute),
            pid_file: flags.pid_file.as_deref().map(absolute),
            explicit_id: flags.id.is_some(),
            id,
            state_root,
            hooks,
            terminal,
            volumes,
            tmpfs,
            net_none,
            init: !flags.no_init,
            overlay: flags.overlay.as_deref().map(absolute),
            preserve_fds,
            caps,
            seccomp,
            user,
            userns,
            fake_root,
            mapping: crate::userns::Mapping::Single { uid: 0, gid: 0 },
            identity: crate::users::Identity::root(),
        })
    }
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
fn resolve_caps(add: &[String], drop: &[String]) -> Result<Vec<caps::Capability>> {
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

/// Where a path NOTIFY_SOCKET is bind-mounted inside the container.
const NOTIFY_SOCKET_PATH: &str = "/run/binctr/notify.sock";

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

/// $XDG_RUNTIME_DIR/binctr, else /tmp/binctr-UID (DESIGN.md).
pub fn default_state_root() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(dir) if Path::new(&dir).is_dir() => PathBuf::from(dir).join("binctr"),
        _ => PathBuf::from(format!("/tmp/binctr-{}", nix::unistd::getuid())),
    }
}

/// HOST:CONTAINER[:ro|rw]; HOST relative to the current directory and required to exist.
fn parse_volume(spec: &str, cwd: &Path) -> Result<Volume> {
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
    let source = std::fs::canonicalize(&source).map_err(|e| {
        Error::new(format!(
            "--volume {spec}: {}: {}",
            source.display(),
            crate::error::plain(&e)
        ))
    })?;
    Ok(Volume {
        source,
        target: target.to_string(),
        read_only,
    })
}

/// PATH[:OPTIONS]; mount flags among the options become flags, the rest tmpfs data.
fn parse_tmpfs(spec: &str) -> Result<Tmpfs> {
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

/// 'STAGE:CMD ARG...', words split as a shell would (quotes, no expansions).
fn parse_hook(spec: &str) -> Result<Hook> {
    let bad = |why: &str| {
        Error::new(format!("--hook '{spec}': {why} (expected 'STAGE:CMD ARG...', STAGE prestart, poststart or poststop)"))
    };
    let (stage, command) = spec.split_once(':').ok_or_else(|| bad("no stage"))?;
    let stage = match stage {
        "prestart" => Stage::Prestart,
        "poststart" => Stage::Poststart,
        "poststop" => Stage::Poststop,
        _ => return Err(bad("unknown stage")),
    };
    let argv = split_words(command).ok_or_else(|| bad("unbalanced quotes"))?;
    if argv.is_empty() {
        return Err(bad("no command"));
    }
    Ok(Hook { stage, argv })
}

fn split_words(s: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => words.extend(word.take()),
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next()? {
                        '\'' => break,
                        c => w.push(c),
                    }
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next()? {
                        '"' => break,
                        '\\' => w.push(chars.next()?),
                        c => w.push(c),
                    }
                }
            }
            '\\' => word.get_or_insert_with(String::new).push(chars.next()?),
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    Some(words)
}

fn valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 64
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// "SIGQUIT", "QUIT", "3" -> 3.
pub fn parse_signal(name: &str) -> Option<libc::c_int> {
    if let Ok(n) = name.parse::<libc::c_int>() {
        return (1..libc::SIGRTMAX()).contains(&n).then_some(n);
    }
    let name = name.to_ascii_uppercase();
    let name = name.strip_prefix("SIG").unwrap_or(&name);
    let signals = [
        ("HUP", libc::SIGHUP),
        ("INT", libc::SIGINT),
        ("QUIT", libc::SIGQUIT),
        ("ILL", libc::SIGILL),
        ("TRAP", libc::SIGTRAP),
        ("ABRT", libc::SIGABRT),
        ("BUS", libc::SIGBUS),
        ("FPE", libc::SIGFPE),
        ("KILL", libc::SIGKILL),
        ("USR1", libc::SIGUSR1),
        ("SEGV", libc::SIGSEGV),
        ("USR2", libc::SIGUSR2),
        ("PIPE", libc::SIGPIPE),
        ("ALRM", libc::SIGALRM),
        ("TERM", libc::SIGTERM),
        ("CHLD", libc::SIGCHLD),
        ("CONT", libc::SIGCONT),
        ("STOP", libc::SIGSTOP),
        ("TSTP", libc::SIGTSTP),
        ("TTIN", libc::SIGTTIN),
        ("TTOU", libc::SIGTTOU),
        ("URG", libc::SIGURG),
        ("XCPU", libc::SIGXCPU),
        ("XFSZ", libc::SIGXFSZ),
        ("VTALRM", libc::SIGVTALRM),
        ("PROF", libc::SIGPROF),
        ("WINCH", libc::SIGWINCH),
        ("IO", libc::SIGIO),
        ("PWR", libc::SIGPWR),
        ("SYS", libc::SIGSYS),
    ];
    signals.iter().find(|(n, _)| *n == name).map(|&(_, s)| s)
}

/// An ordered environment where setting a key again replaces it in place.
#[derive(Default)]
struct Env(Vec<OsString>);

impl Env {
    fn set(&mut self, key: &str, value: &str) {
        self.set_os(key, OsStr::new(value));
    }
    fn set_os(&mut self, key: &str, value: &OsStr) {
        let mut entry = OsString::from(key);
        entry.push("=");
        entry.push(value);
        self.push_entry(&entry);
    }
    /// `KEY=VALUE`, or `KEY` alone: the host's value, and nothing when the host has none
    /// (as docker does).
    fn set_from_flag(&mut self, entry: &str) -> Result<()> {
        match entry.split_once('=') {
            Some(("", _)) => Err(Error::new(format!(
                "-e '{entry}': the variable has no name"
            ))),
            Some(_) => {
                self.push_entry(OsStr::new(entry));
                Ok(())
            }
            None => {
                if let Some(value) = std::env::var_os(entry) {
                    self.set_os(entry, &value);
                }
                Ok(())
            }
        }
    }

    fn has(&self, key: &str) -> bool {
        self.0
            .iter()
            .any(|e| e.as_bytes().split(|&b| b == b'=').next() == Some(key.as_bytes()))
    }

    fn push_entry(&mut self, entry: &OsStr) {
        let key = entry
            .as_bytes()
            .split(|&b| b == b'=')
            .next()
            .unwrap_or_default();
        let same_key = |e: &OsString| e.as_bytes().split(|&b| b == b'=').next() == Some(key);
        match self.0.iter_mut().find(|e| same_key(e)) {
            Some(slot) => *slot = entry.to_os_string(),
            None => self.0.push(entry.to_os_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn flags_stop_at_the_command() {
        let Parsed::Run(flags, command) = parse(&os(&["x", "-D", "nginx", "-g", "daemon off;"]))
        else {
            panic!("expected a run");
        };
        assert!(flags.debug);
        assert_eq!(command, os(&["nginx", "-g", "daemon off;"]));
        let Parsed::Run(flags, command) = parse(&os(&["x", "echo", "-D", "--read-only"])) else {
            panic!("expected a run");
        };
        assert!(!flags.debug && !flags.read_only);
        assert_eq!(command, os(&["echo", "-D", "--read-only"]));
    }

    #[test]
    fn non_utf8_command_arguments_pass_through() {
        use std::os::unix::ffi::OsStringExt;
        let odd = OsString::from_vec(vec![b'a', 0xff, b'b']);
        let args = vec!["x".into(), "--read-only".into(), "cat".into(), odd.clone()];
        let Parsed::Run(flags, command) = parse(&args) else {
            panic!("expected a run");
        };
        assert!(flags.read_only);
        assert_eq!(command, vec![OsString::from("cat"), odd]);
    }

    #[test]
    fn help_and_unknown_flags() {
        assert!(matches!(parse(&os(&["x", "--help"])), Parsed::Help(_)));
        assert!(matches!(parse(&os(&["x", "-D", "-h"])), Parsed::Help(_)));
        assert!(matches!(parse(&os(&["x", "ls", "-h"])), Parsed::Run(..)));
        assert!(matches!(parse(&os(&["x", "--bogus"])), Parsed::Usage(_)));
    }

    #[test]
    fn env_keeps_order_and_replaces_in_place() {
        let mut env = Env::default();
        env.set("PATH", "/a");
        env.set("HOME", "/root");
        env.push_entry(OsStr::new("PATH=/b"));
        env.push_entry(OsStr::new("X=1=2"));
        assert_eq!(env.0, os(&["PATH=/b", "HOME=/root", "X=1=2"]));
    }

    #[test]
    fn signals_parse_by_name_and_number() {
        assert_eq!(parse_signal("SIGQUIT"), Some(libc::SIGQUIT));
        assert_eq!(parse_signal("term"), Some(libc::SIGTERM));
        assert_eq!(parse_signal("9"), Some(9));
        assert_eq!(parse_signal("SIGNOPE"), None);
        assert_eq!(parse_signal("0"), None);
    }

    #[test]
    fn env_flags_take_host_values_and_refuse_empty_names() {
        let mut env = Env::default();
        env.set("A", "image");
        env.set_from_flag("A=flag").unwrap();
        env.set_from_flag("BINCTR_SURELY_UNSET_VAR").unwrap();
        assert!(env.set_from_flag("=x").is_err());
        assert_eq!(env.0, os(&["A=flag"]));
    }

    #[test]
    fn hook_words_split_like_a_shell() {
        let hook = parse_hook(r#"prestart:/bin/sh -c 'echo "$1" > x' arg\ 1"#).unwrap();
        assert_eq!(hook.stage, Stage::Prestart);
        assert_eq!(hook.argv, vec!["/bin/sh", "-c", "echo \"$1\" > x", "arg 1"]);
        assert!(parse_hook("later:/bin/true").is_err());
        assert!(parse_hook("poststop:").is_err());
        assert!(parse_hook("poststop:'open").is_err());
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
