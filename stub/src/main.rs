//! binctr stub: the runtime at the front of every packed file.
//!
//! flags -> locate payload -> ensure rootfs -> container -> exit code (DESIGN.md).

mod cache;
mod cli;
mod error;
mod extract;
mod log;
mod mounts;
mod payload;
mod process;
mod progress;
mod sys;
mod userns;

use cli::{Parsed, RunSpec, VERSION};
use error::{Result, EXIT_BINCTR};
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
        println!("binctr {VERSION}");
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
    let packed = payload::open_self()?;
    log::debug!(
        "payload: {} ({}), {} bytes at offset {}",
        packed.config.name,
        packed.footer.payload_sha256,
        packed.footer.payload_len,
        packed.footer.payload_offset
    );
    let spec = RunSpec::new(flags, command, &packed)?;
    let rootfs = cache::ensure_rootfs(&packed)?;
    drop(packed);
    process::run(&spec, &rootfs)
}

fn print_help(argh_text: &str) {
    let _ = &STUB_MARKER;
    match payload::open_self() {
        Ok(packed) => {
            let c = &packed.config;
            println!(
                "binctr {VERSION}: the container image '{}' in one executable",
                c.name
            );
            if !c.reference.is_empty() {
                println!("  image:  {}", c.reference);
            }
            println!("  digest: {}", packed.footer.payload_sha256);
            if !c.entrypoint.is_empty() || !c.cmd.is_empty() {
                let default: Vec<&str> = c
                    .entrypoint
                    .iter()
                    .chain(&c.cmd)
                    .map(String::as_str)
                    .collect();
                println!("  runs:   {}", default.join(" "));
            }
        }
        Err(e) => println!("binctr {VERSION} (no image: {e})"),
    }
    println!();
    print!("{argh_text}");
    println!();
    println!("Exit codes: the command's own; 125 binctr failed; 126 the command cannot be run;");
    println!("127 the command was not found; 128+N the command was killed by signal N.");
    println!("Cache: $BINCTR_CACHE, else $XDG_CACHE_HOME/binctr, else ~/.cache/binctr.");
}
