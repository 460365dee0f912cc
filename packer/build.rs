//! Embeds the stub into the packer: `BINCTR_STUB=path/to/binctr-stub` copies that file to
//! `$OUT_DIR/stub.bin`, which `src/stub.rs` includes with `include_bytes!`. Without the
//! variable the embedded stub is empty, so `cargo test` and `cargo clippy` work without a
//! musl build; such a packer asks for `--stub PATH` at run time.
use std::env;
use std::fs;
use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    println!("cargo:rerun-if-env-changed=BINCTR_STUB");
    let Some(out_dir) = env::var_os("OUT_DIR") else {
        eprintln!("binctr-pack build: OUT_DIR is not set (not run by cargo?)");
        return ExitCode::FAILURE;
    };
    let dest = PathBuf::from(out_dir).join("stub.bin");
    let result = match env::var_os("BINCTR_STUB").filter(|s| !s.is_empty()) {
        Some(stub) => {
            let stub = PathBuf::from(stub);
            println!("cargo:rerun-if-changed={}", stub.display());
            fs::copy(&stub, &dest).map(drop).map_err(|e| {
                format!(
                    "cannot copy BINCTR_STUB={} to {}: {e}",
                    stub.display(),
                    dest.display()
                )
            })
        }
        None => fs::write(&dest, b"").map_err(|e| format!("cannot write {}: {e}", dest.display())),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("binctr-pack build: {e}");
            ExitCode::FAILURE
        }
    }
}
