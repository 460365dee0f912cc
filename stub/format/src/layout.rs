//! The format's fixed numbers: docs/FORMAT.md section 4 and 6.

/// The first 8 bytes of the footer.
pub const MAGIC_HEAD: [u8; 8] = *b"BINCTR\x00\x01";
/// The last 8 bytes of the footer, and so of the whole packed file.
pub const MAGIC_TAIL: [u8; 8] = *b"\x01\x00RTCNIB";
/// The footer layout version this code writes and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;
/// The footer is fixed-size: see [`crate::Footer::encode`].
pub const FOOTER_LEN: usize = 8 + 4 + 4 + 8 + 8 + 8 + 32 + 32 + 8;
/// The config JSON schema this code writes and the newest it understands.
pub const CONFIG_VERSION: u32 = 1;
/// The smallest lz4 frame: magic, descriptor, end mark.
pub const MIN_PAYLOAD_LEN: u64 = 11;
/// A config larger than this is refused before it is read (it is a few KiB in practice).
pub const MAX_CONFIG_LEN: u64 = 16 << 20;
