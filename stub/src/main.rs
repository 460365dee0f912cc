//! binctr stub: the runtime at the front of every packed file.
//!
//! flags -> locate payload -> ensure rootfs -> container -> exit code
//! (docs/STUB.md: the steps, the three wings, the processes).

mod check;
mod cli;
mod container;
mod error;
mod files;
mod holder;
mod log;
mod rootfs;
mod signals;
mod sys;
mod userns;

use cli::{Parsed, RunPlan, VERSION};
use error::{Result, EXIT_BINCTR};
use log::{printable, say};
use rootfs::payload;
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
    if args.len() == 1 && args[0].as_encoded_bytes() == holder::HOLDER_NAME.to_bytes() {
        holder::sleep_forever();
    }
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
    if flags.cache_list || flags.cache_rm.is_some() || flags.cache_prune.is_some() {
        return cache_command(flags);
    }
    if let Some(id) = &flags.exec {
        return container::join::exec(flags, id, command);
    }
    let packed = payload::open_self()?;
    log::debug!(
        "payload: {} ({}), {} bytes at offset {}",
        packed.config.name,
        packed.footer.payload_sha256,
        packed.footer.payload_len,
        packed.footer.payload_offset
    );
    // The image and its settings: two packed files of one rootfs with other settings
    // never share a container.
    let digest = format!(
        "{}{}",
        packed.footer.payload_sha256.hex(),
        packed.footer.config_sha256.hex()
    );
    let (plan, env) = RunPlan::new(flags, command, &packed.config, &digest)?;
    // Subordinate ids are known to work once they were used, or once the holder of a
    // namespace with them could be made (which the start needs anyway: the helpers then
    // run once, not once to try and once for the holder).
    let mapping = userns::choose(plan.userns, |m| {
        rootfs::is_extracted(&packed, m) || holder::is_held(m) || holder::get(m).is_ok()
    })?;
    // Subordinate ids: a held user namespace spares the helpers (and is made once).
    let held = match mapping.is_subid() {
        true => holder::get(&mapping)
            .map_err(|e| log::debug!("userns: no holder ({}); the helpers map each run", e.msg))
            .ok(),
        false => None,
    };
    let userns = held.as_ref().map(|h| &h.userns);
    let rootfs = rootfs::ensure_rootfs(&packed, &mapping, userns)?;
    std::mem::forget(packed);
    if let Some(id) = plan.share.clone() {
        return container::share::run(plan, env, &rootfs, mapping, userns, id);
    }
    let code = container::run(&plan, env, &rootfs, mapping, userns);
    // Freeing what an image may have made large (30k variables) costs more than the
    // whole start with musl's allocator; the process ends now anyway.
    std::mem::forget(plan);
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
    let work = || match (&what, flags.cache_prune) {
        (Some(w), _) => rootfs::manage::remove_entries(w).map(drop),
        (None, Some(days)) => rootfs::manage::prune(days).map(drop),
        (None, None) => rootfs::manage::list(),
    };
    match userns::subid_available() {
        Ok((uids, gids)) => userns::run_inside(&userns::Mapping::Subid { uids, gids }, work)?,
        Err(_) => work()?,
    }
    if what.as_deref() == Some("all") {
        holder::stop_all();
    }
    Ok(0)
}

fn print_help(argh_text: &str) {
    let _ = &STUB_MARKER;
    match payload::open_self() {
        Ok(packed) => {
            let c = &packed.config;
            say!(
                "binctr {VERSION}: the container image '{}' in one executable",
                printable(c.name.as_bytes())
            );
            if !c.reference.is_empty() {
                say!("  image:  {}", printable(c.reference.as_bytes()));
            }
            say!("  digest: {}", packed.footer.payload_sha256);
            if !c.entrypoint.is_empty() || !c.cmd.is_empty() {
                let default: Vec<&str> = c
                    .entrypoint
                    .iter()
                    .chain(&c.cmd)
                    .map(String::as_str)
                    .collect();
                say!("  runs:   {}", printable(default.join(" ").as_bytes()));
            }
        }
        Err(e) => say!("binctr {VERSION} (no image: {})", e.msg),
    }
    say!("");
    print!("{argh_text}");
    say!("");
    say!("Exit codes: the command's own; 125 binctr failed; 126 the command cannot be run;");
    say!("127 the command was not found; 128+N the command was killed by signal N.");
    say!("Cache: $BINCTR_CACHE, else $XDG_CACHE_HOME/binctr, else ~/.cache/binctr (on a network");
    say!("filesystem: /var/tmp/binctr-UID instead).");
}
