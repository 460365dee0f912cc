//! The packed-file layout, shared by the stub (which reads it) and the packer
//! (which writes it):
//!
//! ```text
//! [ stub ELF ][ payload: one lz4 frame of a tar stream ][ config JSON ][ footer ]
//! ```
//!
//! This crate never touches the OS: it turns bytes into checked values and back.
//! `docs/FORMAT.md` describes the same layout byte by byte.
#![forbid(unsafe_code)]

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;

/// The first 8 bytes of the footer.
pub const MAGIC_HEAD: [u8; 8] = *b"BINCTR\x00\x01";
/// The last 8 bytes of the footer, and so of the whole packed file.
pub const MAGIC_TAIL: [u8; 8] = *b"\x01\x00RTCNIB";
/// The footer layout version this code writes and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;
/// The footer is fixed-size: see [`Footer::encode`].
pub const FOOTER_LEN: usize = 8 + 4 + 4 + 8 + 8 + 8 + 32 + 32 + 8;
/// The config JSON schema this code writes and the newest it understands.
pub const CONFIG_VERSION: u32 = 1;
/// The smallest lz4 frame: magic, descriptor, end mark.
pub const MIN_PAYLOAD_LEN: u64 = 11;
/// A config larger than this is refused before it is read (it is a few KiB in practice).
pub const MAX_CONFIG_LEN: u64 = 16 << 20;

/// A sha256 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Sha256Digest(pub [u8; 32]);

impl Sha256Digest {
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    /// Lower-case hex, 64 characters: the cache directory name.
    pub fn hex(&self) -> String {
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
            s.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
        }
        s
    }
}

impl fmt::Display for Sha256Digest {
    /// `sha256:<64 hex>`, as image tools write digests.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Where the payload and config are, and what they hash to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Footer {
    pub version: u32,
    /// Reserved, written as 0.
    pub flags: u32,
    /// Offset of the payload from the start of the file (= the stub's length).
    pub payload_offset: u64,
    pub payload_len: u64,
    /// The config JSON starts right after the payload.
    pub config_len: u64,
    pub payload_sha256: Sha256Digest,
    pub config_sha256: Sha256Digest,
}

/// Why a file is not a usable packed file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormatError {
    /// No footer magic: not packed, stripped or truncated.
    NoFooter,
    /// The footer is there but written by a newer binctr.
    NewerVersion(u32),
    /// The offsets do not add up to the file's length.
    BadLayout(String),
    /// The config bytes do not hash to what the footer says.
    ConfigDigest,
    /// The config JSON does not parse.
    BadConfig(String),
    /// The config was written by a newer binctr.
    NewerConfig(u32),
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FormatError::NoFooter => {
                write!(f, "payload missing, was this file stripped or truncated?")
            }
            FormatError::NewerVersion(v) => write!(
                f,
                "packed with a newer binctr (format version {v}, this stub reads up to {FORMAT_VERSION}): repack it or use a newer stub"
            ),
            FormatError::BadLayout(why) => {
                write!(f, "damaged packed file ({why}): was it truncated or appended to?")
            }
            FormatError::ConfigDigest => {
                write!(f, "damaged packed file: the config does not match its sha256")
            }
            FormatError::BadConfig(why) => write!(f, "damaged packed file: bad config JSON ({why})"),
            FormatError::NewerConfig(v) => write!(
                f,
                "packed with a newer binctr (config version {v}, this stub reads up to {CONFIG_VERSION}): repack it or use a newer stub"
            ),
        }
    }
}

impl std::error::Error for FormatError {}

impl Footer {
    /// The footer as it is written to the end of the file, little-endian.
    pub fn encode(&self) -> [u8; FOOTER_LEN] {
        let mut out = [0u8; FOOTER_LEN];
        let mut w = Writer {
            buf: &mut out,
            pos: 0,
        };
        w.put(&MAGIC_HEAD);
        w.put(&self.version.to_le_bytes());
        w.put(&self.flags.to_le_bytes());
        w.put(&self.payload_offset.to_le_bytes());
        w.put(&self.payload_len.to_le_bytes());
        w.put(&self.config_len.to_le_bytes());
        w.put(&self.payload_sha256.0);
        w.put(&self.config_sha256.0);
        w.put(&MAGIC_TAIL);
        debug_assert_eq!(w.pos, FOOTER_LEN);
        out
    }

    /// Reads the footer from the last [`FOOTER_LEN`] bytes of a file of `file_len` bytes
    /// and checks that its offsets describe exactly that file.
    pub fn decode(bytes: &[u8], file_len: u64) -> Result<Footer, FormatError> {
        if bytes.len() != FOOTER_LEN
            || bytes[..8] != MAGIC_HEAD
            || bytes[FOOTER_LEN - 8..] != MAGIC_TAIL
        {
            return Err(FormatError::NoFooter);
        }
        let mut r = Reader { buf: bytes, pos: 8 };
        let version = r.u32();
        if version > FORMAT_VERSION {
            return Err(FormatError::NewerVersion(version));
        }
        if version == 0 {
            return Err(FormatError::BadLayout("format version 0".into()));
        }
        let footer = Footer {
            version,
            flags: r.u32(),
            payload_offset: r.u64(),
            payload_len: r.u64(),
            config_len: r.u64(),
            payload_sha256: Sha256Digest(r.array()),
            config_sha256: Sha256Digest(r.array()),
        };
        footer.check_layout(file_len)?;
        Ok(footer)
    }

    /// Where the config JSON starts.
    pub fn config_offset(&self) -> u64 {
        self.payload_offset + self.payload_len
    }

    /// The length of the whole packed file this footer describes.
    pub fn file_len(&self) -> Option<u64> {
        self.payload_offset
            .checked_add(self.payload_len)?
            .checked_add(self.config_len)?
            .checked_add(FOOTER_LEN as u64)
    }

    fn check_layout(&self, file_len: u64) -> Result<(), FormatError> {
        if self.config_len > MAX_CONFIG_LEN {
            return Err(FormatError::BadLayout(format!(
                "config of {} bytes",
                self.config_len
            )));
        }
        if self.payload_offset == 0 {
            return Err(FormatError::BadLayout("no stub before the payload".into()));
        }
        if self.payload_len < MIN_PAYLOAD_LEN {
            return Err(FormatError::BadLayout(format!(
                "a payload of {} bytes, too short for an lz4 frame",
                self.payload_len
            )));
        }
        match self.file_len() {
            Some(len) if len == file_len => Ok(()),
            Some(len) => Err(FormatError::BadLayout(format!(
                "footer describes {len} bytes, file has {file_len}"
            ))),
            None => Err(FormatError::BadLayout("offsets overflow".into())),
        }
    }

    /// Checks the config bytes against the footer and parses them.
    pub fn parse_config(&self, bytes: &[u8]) -> Result<ImageConfig, FormatError> {
        if Sha256Digest::of(bytes) != self.config_sha256 {
            return Err(FormatError::ConfigDigest);
        }
        ImageConfig::from_json(bytes)
    }
}

struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) {
        self.buf[self.pos..self.pos + bytes.len()].copy_from_slice(bytes);
        self.pos += bytes.len();
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        out.copy_from_slice(&self.buf[self.pos..self.pos + N]);
        self.pos += N;
        out
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.array())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.array())
    }
}

/// What the stub needs to know about the image, stored as JSON after the payload.
/// Every field has a default, and unknown fields are ignored, so older stubs read
/// newer configs of the same `version`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ImageConfig {
    /// Schema version, [`CONFIG_VERSION`] when written.
    pub version: u32,
    /// Short name used for the hostname, the help text and container ids.
    pub name: String,
    /// Where the image came from (file name or image reference).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reference: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub manifest_digest: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub created: String,
    pub packer_version: String,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub exposed_ports: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub stop_signal: String,
    /// Pack-time default: run with a read-only root unless the user asks otherwise.
    pub read_only: bool,
}

impl ImageConfig {
    pub fn new(name: &str) -> Self {
        ImageConfig {
            version: CONFIG_VERSION,
            name: name.to_string(),
            packer_version: String::new(),
            ..Default::default()
        }
    }

    pub fn from_json(bytes: &[u8]) -> Result<ImageConfig, FormatError> {
        let config: ImageConfig =
            serde_json::from_slice(bytes).map_err(|e| FormatError::BadConfig(e.to_string()))?;
        if config.version > CONFIG_VERSION {
            return Err(FormatError::NewerConfig(config.version));
        }
        Ok(config)
    }

    /// Compact JSON; field order is fixed by the struct, maps are sorted, so the same
    /// config always gives the same bytes.
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing a struct of strings, vectors and a BTreeMap cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (Footer, Vec<u8>) {
        let config = ImageConfig::new("busybox").to_json();
        let footer = Footer {
            version: FORMAT_VERSION,
            flags: 0,
            payload_offset: 1000,
            payload_len: 500,
            config_len: config.len() as u64,
            payload_sha256: Sha256Digest::of(b"payload"),
            config_sha256: Sha256Digest::of(&config),
        };
        (footer, config)
    }

    #[test]
    fn footer_round_trips() {
        let (footer, _) = sample();
        let bytes = footer.encode();
        assert_eq!(bytes.len(), FOOTER_LEN);
        let len = footer.file_len().unwrap();
        assert_eq!(Footer::decode(&bytes, len).unwrap(), footer);
    }

    #[test]
    fn footer_rejects_wrong_length_file() {
        let (footer, _) = sample();
        let len = footer.file_len().unwrap();
        let err = Footer::decode(&footer.encode(), len + 1).unwrap_err();
        assert!(matches!(err, FormatError::BadLayout(_)), "{err:?}");
        let err = Footer::decode(&footer.encode(), len - 1).unwrap_err();
        assert!(matches!(err, FormatError::BadLayout(_)), "{err:?}");
    }

    #[test]
    fn footer_rejects_missing_magic() {
        let (footer, _) = sample();
        let mut bytes = footer.encode();
        bytes[FOOTER_LEN - 1] ^= 1;
        let err = Footer::decode(&bytes, footer.file_len().unwrap()).unwrap_err();
        assert_eq!(err, FormatError::NoFooter);
        assert!(err.to_string().contains("stripped or truncated"));
        assert_eq!(Footer::decode(&[], 0).unwrap_err(), FormatError::NoFooter);
    }

    #[test]
    fn footer_rejects_an_empty_payload() {
        let (mut footer, _) = sample();
        footer.payload_len = 0;
        let err = Footer::decode(&footer.encode(), footer.file_len().unwrap()).unwrap_err();
        assert!(matches!(err, FormatError::BadLayout(_)), "{err:?}");
    }

    #[test]
    fn footer_rejects_newer_version() {
        let (mut footer, _) = sample();
        footer.version = FORMAT_VERSION + 1;
        let err = Footer::decode(&footer.encode(), footer.file_len().unwrap()).unwrap_err();
        assert_eq!(err, FormatError::NewerVersion(FORMAT_VERSION + 1));
    }

    #[test]
    fn footer_rejects_overflowing_offsets() {
        let (mut footer, _) = sample();
        footer.payload_len = u64::MAX - 10;
        let err = Footer::decode(&footer.encode(), 4096).unwrap_err();
        assert!(matches!(err, FormatError::BadLayout(_)), "{err:?}");
    }

    #[test]
    fn config_is_checked_against_its_digest() {
        let (footer, mut config) = sample();
        assert_eq!(footer.parse_config(&config).unwrap().name, "busybox");
        config[2] ^= 0x20;
        assert_eq!(
            footer.parse_config(&config).unwrap_err(),
            FormatError::ConfigDigest
        );
    }

    #[test]
    fn config_round_trips_and_ignores_unknown_fields() {
        let mut config = ImageConfig::new("nginx");
        config.cmd = vec!["nginx".into(), "-g".into(), "daemon off;".into()];
        config.env = vec!["PATH=/bin".into()];
        config.labels.insert("a".into(), "b".into());
        config.read_only = true;
        let json = config.to_json();
        assert_eq!(ImageConfig::from_json(&json).unwrap(), config);
        let mut value: serde_json::Value = serde_json::from_slice(&json).unwrap();
        value["from_the_future"] = serde_json::json!(1);
        let json = serde_json::to_vec(&value).unwrap();
        assert_eq!(ImageConfig::from_json(&json).unwrap(), config);
    }

    #[test]
    fn config_rejects_newer_version() {
        let json = br#"{"version": 99, "name": "x"}"#;
        assert_eq!(
            ImageConfig::from_json(json).unwrap_err(),
            FormatError::NewerConfig(99)
        );
    }

    #[test]
    fn digest_formats_as_image_tools_do() {
        let d = Sha256Digest::of(b"");
        assert_eq!(
            d.to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
