//! Embeds the stubs into the packer, one per CPU: `BINCTR_STUB=path` (the x86_64 stub)
//! and `BINCTR_STUB_AARCH64=path` are copied to `$OUT_DIR/stub-x86_64.bin` and
//! `$OUT_DIR/stub-aarch64.bin`, which `src/stub.rs` includes with `include_bytes!`. A
//! variable that is not set leaves that stub empty, so `cargo test` and `cargo clippy`
//! work without a musl build; such a packer asks for `--stub PATH` when an image needs
//! the missing CPU. Each file must be an ELF for its CPU: a swapped pair fails the build
//! here rather than making packed files that cannot start.
use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// (variable, file in OUT_DIR, CPU name, ELF e_machine).
const STUBS: &[(&str, &str, &str, u16)] = &[
    ("BINCTR_STUB", "stub-x86_64.bin", "x86_64", 62),
    ("BINCTR_STUB_AARCH64", "stub-aarch64.bin", "aarch64", 183),
];

fn main() -> ExitCode {
    let Some(out_dir) = env::var_os("OUT_DIR") else {
        eprintln!("binctr-pack build: OUT_DIR is not set (not run by cargo?)");
        return ExitCode::FAILURE;
    };
    for &(var, file, cpu, machine) in STUBS {
        println!("cargo:rerun-if-env-changed={var}");
        let dest = PathBuf::from(&out_dir).join(file);
        let result = match env::var_os(var).filter(|s| !s.is_empty()) {
            Some(stub) => embed(var, Path::new(&stub), &dest, cpu, machine),
            None => {
                fs::write(&dest, b"").map_err(|e| format!("cannot write {}: {e}", dest.display()))
            }
        };
        if let Err(e) = result {
            eprintln!("binctr-pack build: {e}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

fn embed(var: &str, stub: &Path, dest: &Path, cpu: &str, machine: u16) -> Result<(), String> {
    println!("cargo:rerun-if-changed={}", stub.display());
    let bytes = fs::read(stub).map_err(|e| format!("cannot read {var}={}: {e}", stub.display()))?;
    // e_machine: bytes 18..20 of a little-endian ELF header.
    let found = bytes
        .get(18..20)
        .filter(|_| bytes.starts_with(b"\x7fELF"))
        .map(|m| u16::from_le_bytes([m[0], m[1]]));
    if found != Some(machine) {
        return Err(format!(
            "{var}={} is not an ELF for {cpu} (e_machine {found:?}, expected {machine})",
            stub.display()
        ));
    }
    fs::write(dest, &bytes).map_err(|e| format!("cannot write {}: {e}", dest.display()))
}
