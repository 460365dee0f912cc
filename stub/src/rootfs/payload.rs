//! Finds what the packer appended to this very file: the footer at the end, then the
//! config. Reads /proc/self/exe, never argv[0]. The payload itself is only streamed when
//! the rootfs has to be extracted: read -> sha256 -> lz4 -> tar, in constant memory.

use super::progress::Progress;
use crate::error::{Context, Error, Result};
use binctr_format::{Footer, HashingReader, ImageConfig, Layer, Sha256Digest};
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Take};

pub struct Packed {
    /// /proc/self/exe, open close-on-exec.
    pub file: File,
    pub footer: Footer,
    pub config: ImageConfig,
}

pub fn open_self() -> Result<Packed> {
    let mut file = File::open("/proc/self/exe").context("cannot open /proc/self/exe")?;
    let (footer, config) = binctr_format::read_tail(&mut file)?;
    Ok(Packed {
        file,
        footer,
        config,
    })
}

/// The payload's compressed bytes, hashed and counted as the decompressor pulls them,
/// with the progress line following.
pub struct PayloadStream {
    inner: HashingReader<BufReader<Take<File>>>,
    progress: Progress,
    /// The length and sha256 the bytes must have.
    expected: (u64, Sha256Digest),
}

impl Read for PayloadStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.update(self.inner.bytes_read());
        Ok(n)
    }
}

impl PayloadStream {
    /// The whole payload (format 1).
    pub fn open(packed: &Packed) -> Result<PayloadStream> {
        let f = &packed.footer;
        let label = format!("binctr: extracting {}", packed.config.name);
        Self::range(packed, 0, f.payload_len, f.payload_sha256, label)
    }

    /// One layer's frame (format 2): only its bytes are read, checked against its sha256.
    pub fn layer(packed: &Packed, layer: &Layer, n: usize) -> Result<PayloadStream> {
        let sha = layer
            .segment_sha256()
            .ok_or_else(|| Error::new("damaged packed file: a layer has a malformed sha256"))?;
        let label = format!(
            "binctr: extracting {} (layer {n} of {})",
            packed.config.name,
            packed.config.layers.len()
        );
        Self::range(packed, layer.offset, layer.length, sha, label)
    }

    fn range(
        packed: &Packed,
        offset: u64,
        len: u64,
        sha: Sha256Digest,
        label: String,
    ) -> Result<PayloadStream> {
        let footer = &packed.footer;
        let mut file = packed
            .file
            .try_clone()
            .context("cannot reopen /proc/self/exe")?;
        // The config's layers were checked to tile the payload (binctr_format).
        file.seek(SeekFrom::Start(footer.payload_offset + offset))
            .context("cannot seek to the payload")?;
        Ok(PayloadStream {
            inner: HashingReader::new(BufReader::with_capacity(1 << 20, file.take(len))),
            progress: Progress::new(label, len),
            expected: (len, sha),
        })
    }

    /// Reads what is left and checks length and sha256 against the footer. Called
    /// whatever the extraction did, so a damaged payload is called damaged rather than
    /// reported as the tar error it caused.
    pub fn verify(mut self) -> Result<()> {
        let drained = io::copy(&mut self, &mut io::sink());
        self.progress.done();
        let (digest, read) = self.inner.finish();
        if drained.is_err() || read != self.expected.0 || digest != self.expected.1 {
            return Err(Error::new(
                "damaged packed file: the payload does not match its sha256 (download or pack it again)",
            ));
        }
        Ok(())
    }
}
