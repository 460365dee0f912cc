//! The format's fixed numbers: docs/FORMAT.md sections 4, 6 and 8.

/// The first 8 bytes of the footer.
pub const MAGIC_HEAD: [u8; 8] = *b"BINCTR\x00\x01";
/// The last 8 bytes of the footer, and so of the whole packed file.
pub const MAGIC_TAIL: [u8; 8] = *b"\x01\x00RTCNIB";
/// The newest format this code knows: 2, a payload of one lz4 frame per layer (the
/// config's `layers`). The packer writes it by default.
pub const FORMAT_VERSION: u32 = 2;
/// The format of a payload that is one lz4 frame of the flattened root filesystem:
/// what `binctr-pack --flatten` writes, and what every stub reads.
pub const FLAT_FORMAT_VERSION: u32 = 1;
/// The footer is fixed-size: see [`crate::Footer::encode`].
pub const FOOTER_LEN: usize = 8 + 4 + 4 + 8 + 8 + 8 + 32 + 32 + 8;
/// The config JSON schema this code writes with layers, and the newest it understands.
pub const CONFIG_VERSION: u32 = 2;
/// The config JSON schema of a flat (format 1) file, which old stubs read.
pub const FLAT_CONFIG_VERSION: u32 = 1;
/// The most layers a format 2 payload may hold: what one overlay mount stacks with room
/// to spare (the packer squashes the top layers of an image that has more).
pub const MAX_LAYERS: usize = 64;
/// The smallest lz4 frame: magic, descriptor, end mark.
pub const MIN_PAYLOAD_LEN: u64 = 11;
/// A config larger than this is refused before it is read (it is a few KiB in practice).
pub const MAX_CONFIG_LEN: u64 = 16 << 20;
