//! binctr stub: the runtime at the front of every packed file.
//!
//! flags -> locate payload -> ensure rootfs -> container -> exit code (DESIGN.md).

mod cache;
mod check;
mod cli;
mod error;
mod extract;
mod hooks;
mod inroot;
mod log;
mod mounts;
mod payload;
mod process;
mod progress;
mod seccomp;
mod state;
mod sys;
mod tty;
mod userns;
mod users;

use cli::{Parsed, RunSpec, VERSION};
use error::{Result, EXIT_BINCTR};
use log::say;
use state::State;
use std::ffi::OsString;

/// The marker the packer looks for to tell a binctr stub from any other static ELF
/// (`binctr-stub`, NUL, the stub's format version, NUL padding).
#[used]
#[link_section = ".binctr_stub"]
static STUB_MARKER: [u8; 32] =
    *b"binctr-stub\x00v1\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00";

fn main() {
    std::process::exit(run());
}

fn run() -> i32 {
    let args: Vec<OsString> = std::env::args_os().collect();
    let (flags, command) = match cli::parse(&args) {
        Parsed::Run(flags, command) => (flags, command),
        Parsed::Help(text) => {
            print_help(&text);
            return 0;
        }
        Parsed::Usage(text) => {
            let first = text
                .lines()
                .next()
                .unwrap_or("bad usage")
                .trim_end_matches('.');
            eprintln!("binctr: {first}: see --help");
            return EXIT_BINCTR;
        }
    };
    if flags.version {
        say!("binctr {VERSION}");
        return 0;
    }
    log::set_debug(flags.debug);
    match start(&flags, command) {
        Ok(code) => code,
        Err(e) => {
            e.report(flags.debug);
            e.code
        }
    }
}

fn start(flags: &cli::Flags, command: Vec<OsString>) -> Result<i32> {
    if flags.check {
        return Ok(check::run());
    }
    if flags.cache_list || flags.cache_rm.is_some() {
        return cache_command(flags);
    }
    let packed = payload::open_self()?;
    log::debug!(
        "payload: {} ({}), {} bytes at offset {}",
        packed.config.name,
        packed.footer.payload_sha256,
        packed.footer.payload_len,
        packed.footer.payload_offset
    );
    let mut spec = RunSpec::new(flags, command, &packed)?;
    let mapping = userns::choose(spec.userns, |m| cache::is_extracted(&packed, m))?;
    let rootfs = cache::ensure_rootfs(&packed, &mapping)?;
    drop(packed);
    let identity = match spec.user.as_str() {
        "" => users::Identity::root(),
        user => users::resolve(&rootfs.rootfs(), user)?,
    };
    spec.mapping = match mapping {
        // podman's keep-id: the caller is that user inside, so it still runs.
        userns::Mapping::Single { .. } => userns::Mapping::Single {
            uid: identity.uid,
            gid: identity.gid,
        },
        userns::Mapping::Subid { uids, gids } => {
            if identity.uid > uids.count || identity.gid > gids.count {
                return Err(error::Error::new(format!(
                    "user '{}' ({}:{}) is outside your subordinate range (0-{}): run with --userns single",
                    spec.user, identity.uid, identity.gid, uids.count
                )));
            }
            userns::Mapping::Subid { uids, gids }
        }
    };
    spec.set_identity(identity);
    log::debug!(
        "user: {}:{} groups {:?}; {}; chown/setuid {}",
        spec.identity.uid,
        spec.identity.gid,
        spec.identity.groups,
        spec.mapping.describe(),
        if spec.fake_root() {
            "faked (fake root)"
        } else {
            "real"
        }
    );
    let state = State::create(&spec)?;
    if spec.detach {
        return detach(&spec, &rootfs, state);
    }
    let code = process::run(&spec, &rootfs, &state, None);
    state.remove();
    code
}

/// --cache-list, --cache-rm: where subordinate ids exist, inside a namespace that has
/// them, so files they own can be sized and removed.
fn cache_command(flags: &cli::Flags) -> Result<i32> {
    let what = match flags.cache_rm.as_deref() {
        Some("this") => Some(payload::open_self()?.footer.payload_sha256.hex()),
        Some(w) if w == "all" || (!w.is_empty() && w.bytes().all(|b| b.is_ascii_hexdigit())) => {
            Some(w.to_ascii_lowercase())
        }
        Some(w) => {
            return Err(error::Error::new(format!(
                "--cache-rm {w}: give a digest (or its start), 'this' or 'all'"
            )))
        }
        None => None,
    };
    let work = || match &what {
        Some(w) => cache::remove_entries(w).map(drop),
        None => cache::list(),
    };
    match userns::subid_available() {
        Ok((uids, gids)) => userns::run_inside(&userns::Mapping::Subid { uids, gids }, work)?,
        Err(_) => work()?,
    }
    Ok(0)
}

/// -d: a detached monitor (own session, survives the terminal) runs the container; we
/// return once it reports the command started (0), or its failure code.
fn detach(spec: &RunSpec, rootfs: &cache::Rootfs, state: State) -> Result<i32> {
    use std::io::Read;
    let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| error::Error::new(format!("cannot create a pipe: {e}")))?;
    // SAFETY: the stub is single-threaded; the child carries on with its own copy.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(error::Error::new("cannot fork the detached monitor"));
    }
    if pid == 0 {
        drop(read_end);
        let _ = nix::unistd::setsid();
        let mut started = std::fs::File::from(write_end);
        let result = process::run(spec, rootfs, &state, Some(&mut started));
        if let Err(e) = &result {
            e.report(spec.debug);
        }
        drop(started);
        state.remove();
        sys::exit_now(result.unwrap_or(EXIT_BINCTR));
    }
    drop(write_end);
    // The child holds the id's lock now; our copy of the state goes without removal.
    drop(state);
    let mut byte = [0u8; 1];
    match std::fs::File::from(read_end).read(&mut byte) {
        Ok(1) => Ok(i32::from(byte[0])),
        // The monitor failed before the container started, and said why.
        _ => Ok(EXIT_BINCTR),
    }
}

fn print_help(argh_text: &str) {
    let _ = &STUB_MARKER;
    match payload::open_self() {
        Ok(packed) => {
            let c = &packed.config;
            say!(
                "binctr {VERSION}: the container image '{}' in one executable",
                c.name
            );
            if !c.reference.is_empty() {
                say!("  image:  {}", c.reference);
            }
            say!("  digest: {}", packed.footer.payload_sha256);
            if !c.entrypoint.is_empty() || !c.cmd.is_empty() {
                let default: Vec<&str> = c
                    .entrypoint
                    .iter()
                    .chain(&c.cmd)
                    .map(String::as_str)
                    .collect();
                say!("  runs:   {}", default.join(" "));
            }
        }
        Err(e) => say!("binctr {VERSION} (no image: {e})"),
    }
    say!("");
    print!("{argh_text}");
    say!("");
    say!("Exit codes: the command's own; 125 binctr failed; 126 the command cannot be run;");
    say!("127 the command was not found; 128+N the command was killed by signal N.");
    say!("Cache: $BINCTR_CACHE, else $XDG_CACHE_HOME/binctr, else ~/.cache/binctr.");
}
