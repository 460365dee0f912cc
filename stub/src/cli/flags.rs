//! The command line as typed (argh): [`Flags`] mirrors it, [`parse`] reads it. The
//! resolved run is [`super::RunPlan`]; no flag is looked at anywhere but here and there.

use argh::FromArgs;
use std::ffi::OsString;

#[derive(FromArgs, Debug, Default)]
/// Runs the container image packed into this file, as an unprivileged user.
/// Flags come before the command; the command and everything after it go to the
/// container untouched.
pub struct Flags {
    /// print each setup step on stderr
    #[argh(switch, short = 'D')]
    pub debug: bool,

    /// print the version and exit
    #[argh(switch)]
    pub version: bool,

    /// keep stdin open (accepted for docker's -i: stdin is always passed)
    #[argh(switch, short = 'i')]
    pub interactive: bool,

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

    /// run the command in the running container ID (started with --id or --name),
    /// as docker exec does
    #[argh(option)]
    pub exec: Option<String>,

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

    /// bind-mount a host path: HOST:CONTAINER[:ro] (repeatable; -v as in docker)
    #[argh(option, short = 'v')]
    pub volume: Vec<String>,

    /// a mount as docker writes it: type=bind,src=HOST,dst=PATH[,readonly] or
    /// type=tmpfs,dst=PATH[,tmpfs-size=SIZE] (repeatable)
    #[argh(option)]
    pub mount: Vec<String>,

    /// a resource limit for the command: NAME=SOFT[:HARD], e.g. nofile=1024:2048
    /// (within your own hard limits; repeatable)
    #[argh(option)]
    pub ulimit: Vec<String>,

    /// run binctr's init as PID 1 (the default; accepted for docker's --init)
    #[argh(switch)]
    pub init: bool,

    /// every capability in the bounding set, no seccomp filter, no masked paths; still
    /// rootless: only what your user namespace allows
    #[argh(switch)]
    pub privileged: bool,

    /// the size of /dev/shm (default 64m)
    #[argh(option)]
    pub shm_size: Option<String>,

    /// add a line to the container's /etc/hosts: HOST:IP (repeatable)
    #[argh(option)]
    pub add_host: Vec<String>,

    /// a nameserver for the container's /etc/resolv.conf instead of the host's
    /// (repeatable)
    #[argh(option)]
    pub dns: Vec<String>,

    /// give the container a host device you may open: /dev/X[:/dev/Y] (repeatable)
    #[argh(option)]
    pub device: Vec<String>,

    /// an additional group for the command (a name in the image or a number; needs
    /// subordinate ids; repeatable)
    #[argh(option)]
    pub group_add: Vec<String>,

    /// seconds to wait after the stop signal before SIGKILL (default: wait)
    #[argh(option)]
    pub stop_timeout: Option<u32>,

    /// pass the whole host environment (then the image's Env, --env-file, -e)
    #[argh(switch)]
    pub env_host: bool,

    /// run in one container shared by every run given the same KEY (the first starts
    /// it, the last to exit ends it); under srun this is the default, per job step and node
    #[argh(option)]
    pub share: Option<String>,

    /// under srun, run in a container of this run's own (not the one the step's ranks
    /// on this node share)
    #[argh(switch)]
    pub no_share: bool,

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
    /// next run that names it (default: on disk beside the cache, removed at exit)
    #[argh(option)]
    pub overlay: Option<String>,

    /// keep the container's writable layer in memory (a tmpfs) instead of on disk
    #[argh(switch)]
    pub writable_tmpfs: bool,

    /// the size of --writable-tmpfs (default 1g; k, m, g suffixes)
    #[argh(option)]
    pub tmpfs_size: Option<String>,

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

    /// id mapping: auto (subordinate ids when /etc/subuid grants some, else single;
    /// keep-id under srun or mpirun), single (you are the only id), subid, or keep-id
    /// (single, running as your own uid)
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

    /// remove the images not used for DAYS days (30 when no number follows), then the
    /// layers no image left uses; then exit
    #[argh(option, arg_name = "DAYS")]
    pub cache_prune: Option<u32>,

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
    let args = match super::argv::normalize(args) {
        Ok(args) => args,
        Err(usage) => return Parsed::Usage(usage),
    };
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
            Parsed::Run(Box::new(flags), command)
        }
        Err(exit) if exit.status.is_ok() => Parsed::Help(exit.output),
        Err(exit) => Parsed::Usage(exit.output),
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
    fn flag_values_must_be_utf8_but_the_command_need_not() {
        use std::os::unix::ffi::OsStringExt;
        let odd = OsString::from_vec(vec![b'A', b'=', 0xff]);
        let args = vec!["x".into(), "-e".into(), odd.clone(), "true".into()];
        assert!(matches!(parse(&args), Parsed::Usage(_)));
        let args = vec!["x".into(), "-e".into(), "A=1".into(), "echo".into(), odd];
        assert!(matches!(parse(&args), Parsed::Run(..)));
    }

    #[test]
    fn help_and_unknown_flags() {
        assert!(matches!(parse(&os(&["x", "--help"])), Parsed::Help(_)));
        assert!(matches!(parse(&os(&["x", "-D", "-h"])), Parsed::Help(_)));
        assert!(matches!(parse(&os(&["x", "ls", "-h"])), Parsed::Run(..)));
        assert!(matches!(parse(&os(&["x", "--bogus"])), Parsed::Usage(_)));
    }
}
