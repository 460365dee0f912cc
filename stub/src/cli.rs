//! Flags in two stages: [`Flags`] mirrors the command line as typed (argh), [`RunSpec`]
//! is the resolved run (image config + flags, precedence applied) the rest of the stub
//! uses. No flag is looked at anywhere else.

use crate::error::{Error, Result};
use crate::payload::Packed;
use argh::FromArgs;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;

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

    /// command and arguments to run instead of the image's default
    #[argh(positional, greedy)]
    pub command: Vec<String>,
}

/// What happened on the command line.
pub enum Parsed {
    Run(Flags, Vec<OsString>),
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
    let lossy: Vec<String> = args
        .iter()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let refs: Vec<&str> = lossy.iter().map(String::as_str).collect();
    match Flags::from_args(&[&prog], &refs) {
        Ok(flags) => {
            let n = flags.command.len();
            let command = args[args.len() - n..].to_vec();
            Parsed::Run(flags, command)
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
        if !config.user.is_empty() && !matches!(config.user.as_str(), "0" | "root" | "0:0") {
            return Err(Error::new(format!(
                "the image runs as user '{}', and this binctr runs containers as root only: repack with --user root",
                config.user
            )));
        }
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
        env.set("HOME", "/root");
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
        Ok(RunSpec {
            debug: flags.debug,
            read_only: (flags.read_only || config.read_only) && !flags.read_write,
            hostname,
            argv,
            env: env.0,
            working_dir,
            stop_signal,
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
    fn hostname_is_a_valid_label() {
        assert_eq!(hostname_for("busybox"), "busybox");
        assert_eq!(hostname_for("My_Image.v2"), "my-image-v2");
        assert_eq!(hostname_for("..."), "binctr");
    }
}
