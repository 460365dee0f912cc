//! Finds what the packer appended to this very file: the footer at the end, then the
//! config. Reads /proc/self/exe, never argv[0]. The payload itself is only streamed when
//! the rootfs has to be extracted: read -> sha256 -> lz4 -> tar, in constant memory.

use super::progress::Progress;
use crate::error::{Context, Error, Result};
use binctr_format::{Footer, FormatError, HashingReader, ImageConfig, FLAT_FORMAT_VERSION};
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
    // The layer store (format 2, one frame per layer) is not read yet: refuse it rather
    // than extract the bottom layer alone.
    if footer.version > FLAT_FORMAT_VERSION {
        let newer = FormatError::NewerVersion(footer.version, FLAT_FORMAT_VERSION);
        return Err(binctr_format::TailError::Format(newer).into());
    }
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
    expected: Footer,
}

impl Read for PayloadStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.update(self.inner.bytes_read());
        Ok(n)
    }
}

impl PayloadStream {
    pub fn open(packed: &Packed) -> Result<PayloadStream> {
        let footer = &packed.footer;
        let mut file = packed
            .file
            .try_clone()
            .context("cannot reopen /proc/self/exe")?;
        file.seek(SeekFrom::Start(footer.payload_offset))
            .context("cannot seek to the payload")?;
        let label = format!("binctr: extracting {}", packed.config.name);
        Ok(PayloadStream {
            inner: HashingReader::new(BufReader::with_capacity(
                1 << 20,
                file.take(footer.payload_len),
            )),
            progress: Progress::new(label, footer.payload_len),
            expected: footer.clone(),
        })
    }

    /// Reads what is left and checks length and sha256 against the footer. Called
    /// whatever the extraction did, so a damaged payload is called damaged rather than
    /// reported as the tar error it caused.
    pub fn verify(mut self) -> Result<()> {
        let drained = io::copy(&mut self, &mut io::sink());
        self.progress.done();
        let (digest, read) = self.inner.finish();
        if drained.is_err()
            || read != self.expected.payload_len
            || digest != self.expected.payload_sha256
        {
            return Err(Error::new(
                "damaged packed file: the payload does not match its sha256 (download or pack it again)",
            ));
        }
        Ok(())
    }
}
