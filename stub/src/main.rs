//! binctr stub (work in progress).

/// The marker the packer looks for to tell a binctr stub from any other static ELF.
#[used]
#[link_section = ".binctr_stub"]
static STUB_MARKER: [u8; 32] =
    *b"binctr-stub\x00v1\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00";

fn main() {
    let _ = &STUB_MARKER;
}
