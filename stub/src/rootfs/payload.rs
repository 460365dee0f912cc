//! Finds what the packer appended to this very file: the footer at the end, then the
//! config. Reads /proc/self/exe, never argv[0]. The payload itself is only streamed when
//! the rootfs has to be extracted: read -> sha256 -> lz4 -> tar, in constant memory.

use super::progress::Progress;
use crate::error::{Context, Error, Result};
use binctr_format::{Footer, ImageConfig, Layer, Sha256Digest};
use sha2::{Digest, Sha256};
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

/// The payload's compressed bytes, counted and hashed as the decompressor pulls them,
/// with the progress line following.
pub struct PayloadStream {
    inner: BufReader<Take<File>>,
    /// The hash of what was read, and the sha256 the bytes must have: the whole
    /// payload's (format 1) or a layer's frame's (format 2), each its cache key. Taken
    /// by [`Self::verify`].
    hashed: Option<(Sha256, Sha256Digest)>,
    read: u64,
    /// The length the bytes must have.
    len: u64,
    progress: Progress,
}

impl Read for PayloadStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some((hasher, _)) = &mut self.hashed {
            hasher.update(&buf[..n]);
        }
        self.read += n as u64;
        self.progress.update(self.read);
        Ok(n)
    }
}

impl PayloadStream {
    /// The whole payload (format 1), checked against the footer's sha256.
    pub fn open(packed: &Packed) -> Result<PayloadStream> {
        let f = &packed.footer;
        let label = format!("binctr: extracting {}", packed.config.name);
        Self::range(packed, 0, f.payload_len, f.payload_sha256, label)
    }

    /// One layer's frame (format 2): only its bytes are read, checked against its
    /// sha256 (the layer's key in the store: rootfs/layers.rs).
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
            inner: BufReader::with_capacity(1 << 20, file.take(len)),
            hashed: Some((Sha256::new(), sha)),
            read: 0,
            len,
            progress: Progress::new(label, len),
        })
    }

    /// Reads what is left and checks the length and the sha256. Called
    /// whatever the extraction did (by the process that read it: extract.rs).
    pub fn verify(&mut self) -> Result<()> {
        let drained = io::copy(self, &mut io::sink());
        self.progress.done();
        let hash_ok = match self.hashed.take() {
            Some((hasher, expected)) => Sha256Digest(hasher.finalize().into()) == expected,
            None => true,
        };
        if drained.is_err() || self.read != self.len || !hash_ok {
            return Err(Error::new(
                "damaged packed file: the payload does not match its sha256 (download or pack it again)",
            ));
        }
        Ok(())
    }
}
