//! The footer (docs/FORMAT.md section 4): the last 112 bytes of a packed file, saying
//! where the payload and config are and what they hash to.
use crate::config::{ImageConfig, Layer};
use crate::error::FormatError;
use crate::hash::Sha256Digest;
use crate::layout::{
    FLAT_FORMAT_VERSION, FOOTER_LEN, FORMAT_VERSION, MAGIC_HEAD, MAGIC_TAIL, MAX_CONFIG_LEN,
    MAX_LAYERS, MIN_PAYLOAD_LEN,
};

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
            return Err(FormatError::NewerVersion(version, FORMAT_VERSION));
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

    /// Checks the config bytes against the footer and parses them; a format 2 config's
    /// layers must tile the payload exactly (a format 1 config has none).
    pub fn parse_config(&self, bytes: &[u8]) -> Result<ImageConfig, FormatError> {
        if Sha256Digest::of(bytes) != self.config_sha256 {
            return Err(FormatError::ConfigDigest);
        }
        let config = ImageConfig::from_json(bytes)?;
        check_layers(self, &config.layers)?;
        Ok(config)
    }
}

/// A format 1 payload is one frame and lists no layers; a format 2 payload is its
/// layers' frames, back to back from `payload_offset`, 1 to [`MAX_LAYERS`] of them, each
/// at least an lz4 frame long, with well-formed digests.
fn check_layers(footer: &Footer, layers: &[Layer]) -> Result<(), FormatError> {
    let bad = |why: String| Err(FormatError::BadLayers(why));
    if footer.version == FLAT_FORMAT_VERSION {
        return match layers.is_empty() {
            true => Ok(()),
            false => bad("a format 1 file lists layers".into()),
        };
    }
    if layers.is_empty() || layers.len() > MAX_LAYERS {
        return bad(format!(
            "{} layers, a format {} file holds 1 to {MAX_LAYERS}",
            layers.len(),
            footer.version
        ));
    }
    let mut at = 0u64;
    for (i, layer) in layers.iter().enumerate() {
        let n = i + 1;
        if layer.offset != at {
            return bad(format!("layer {n} starts at {}, not {at}", layer.offset));
        }
        if layer.length < MIN_PAYLOAD_LEN {
            return bad(format!("layer {n} is {} bytes long", layer.length));
        }
        if layer.digest().is_none() || layer.segment_sha256().is_none() {
            return bad(format!("layer {n} has a malformed digest"));
        }
        at = match at.checked_add(layer.length) {
            Some(end) => end,
            None => return bad("offsets overflow".into()),
        };
    }
    if at != footer.payload_len {
        return bad(format!(
            "the layers hold {at} bytes, the payload {}",
            footer.payload_len
        ));
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (Footer, Vec<u8>) {
        let config = ImageConfig::new("busybox").to_json();
        let footer = Footer {
            version: FLAT_FORMAT_VERSION,
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
        assert_eq!(
            err,
            FormatError::NewerVersion(FORMAT_VERSION + 1, FORMAT_VERSION)
        );
    }

    #[test]
    fn footer_rejects_overflowing_offsets() {
        let (mut footer, _) = sample();
        footer.payload_len = u64::MAX - 10;
        let err = Footer::decode(&footer.encode(), 4096).unwrap_err();
        assert!(matches!(err, FormatError::BadLayout(_)), "{err:?}");
    }

    /// A format 2 footer and config whose layers are `lengths` long.
    fn layered(lengths: &[u64]) -> (Footer, ImageConfig) {
        let mut config = ImageConfig::new("x");
        let mut offset = 0;
        for &length in lengths {
            config.layers.push(Layer {
                digest: Sha256Digest::of(b"tar").to_string(),
                offset,
                length,
                size: 1024,
                sha256: Sha256Digest::of(b"frame").hex(),
                ..Layer::default()
            });
            offset += length;
        }
        let footer = Footer {
            version: FORMAT_VERSION,
            payload_len: offset.max(MIN_PAYLOAD_LEN),
            ..sample().0
        };
        (footer, config)
    }

    fn parse(footer: &Footer, config: &ImageConfig) -> Result<ImageConfig, FormatError> {
        let json = config.to_json();
        let footer = Footer {
            config_len: json.len() as u64,
            config_sha256: Sha256Digest::of(&json),
            ..footer.clone()
        };
        footer.parse_config(&json)
    }

    #[test]
    fn layers_must_tile_the_payload() {
        let (footer, config) = layered(&[100, 50, 11]);
        assert_eq!(parse(&footer, &config).unwrap().layers.len(), 3);
        let bad = |footer: &Footer, config: &ImageConfig| match parse(footer, config) {
            Err(FormatError::BadLayers(why)) => why,
            other => panic!("{other:?}"),
        };
        // No layers in format 2, layers in format 1.
        let (footer, config) = layered(&[]);
        assert_eq!(
            bad(&footer, &config),
            "0 layers, a format 2 file holds 1 to 64"
        );
        let (mut footer, config) = layered(&[100]);
        footer.version = FLAT_FORMAT_VERSION;
        assert_eq!(bad(&footer, &config), "a format 1 file lists layers");
        // A gap, an overlap, a short frame, a payload longer than its layers.
        let (footer, mut config) = layered(&[100, 50]);
        config.layers[1].offset = 101;
        assert_eq!(bad(&footer, &config), "layer 2 starts at 101, not 100");
        let (footer, config) = layered(&[100, 5]);
        assert_eq!(bad(&footer, &config), "layer 2 is 5 bytes long");
        let (mut footer, config) = layered(&[100]);
        footer.payload_len = 101;
        assert_eq!(
            bad(&footer, &config),
            "the layers hold 100 bytes, the payload 101"
        );
        let (footer, mut config) = layered(&[100]);
        config.layers[0].digest = Sha256Digest::of(b"x").hex();
        assert_eq!(bad(&footer, &config), "layer 1 has a malformed digest");
        let (footer, mut config) = layered(&[100]);
        config.layers[0].length = u64::MAX;
        config.layers.push(config.layers[0].clone());
        config.layers[1].offset = u64::MAX;
        assert_eq!(bad(&footer, &config), "offsets overflow");
        let (footer, config) = layered(&[20; MAX_LAYERS + 1]);
        assert_eq!(
            bad(&footer, &config),
            "65 layers, a format 2 file holds 1 to 64"
        );
        assert!(FormatError::BadLayers("x".into())
            .to_string()
            .starts_with("damaged packed file"));
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
}
