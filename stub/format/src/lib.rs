//! The packed-file layout, shared by the stub (which reads it) and the packer
//! (which writes it):
//!
//! ```text
//! [ stub ELF ][ payload: lz4 frames of tar streams ][ config JSON ][ footer ]
//! ```
//!
//! This crate never touches the OS: it turns bytes into checked values and back, and
//! reads through the `std::io` traits it is given. `docs/FORMAT.md` describes the same
//! layout byte by byte.
//!
//! - `layout.rs`: the fixed numbers (magics, versions, sizes, limits);
//! - `footer.rs`: the 112-byte footer, encoded and decoded, its layout checked;
//! - `config.rs`: the config JSON;
//! - `read.rs`: footer and config read from the end of a file;
//! - `hash.rs`: sha256 digests, and a reader that hashes what passes through;
//! - `env.rs`: the `KEY=VALUE` environment, merged in order;
//! - `tar_reader.rs`: a tar reader with bounded memory, for archives from anywhere;
//! - `error.rs`: why a file is not a usable packed file;
//! - `text.rs`: the one rule for showing text that came from an image.
#![forbid(unsafe_code)]

mod config;
mod env;
mod error;
mod footer;
mod hash;
mod layout;
mod read;
pub mod tar_reader;
mod text;

pub use config::{ImageConfig, Layer};
pub use env::{key_of, Env};
pub use error::FormatError;
pub use footer::Footer;
pub use hash::{HashingReader, Sha256Digest};
pub use layout::{
    CONFIG_VERSION, FLAT_CONFIG_VERSION, FLAT_FORMAT_VERSION, FOOTER_LEN, FORMAT_VERSION,
    MAGIC_HEAD, MAGIC_TAIL, MAX_CONFIG_LEN, MAX_LAYERS, MIN_PAYLOAD_LEN,
};
pub use read::{read_tail, read_up_to, TailError};
pub use text::printable;
