//! Reads one layer: its blob from the store, decompressed (plain, gzip or zstd) into a
//! tar stream, with both digests checked as the bytes stream by: the blob's own
//! (`sha256` of the compressed bytes, from the manifest) and, when the image config lists
//! it, the layer's diff_id (`sha256` of the tar). A damaged blob usually breaks the
//! decompressor first; the digest is still what is reported, because it names the cause.
use super::flatten::Layers;
use super::store::Store;
use super::{ImageError, BUF_SIZE};
use crate::progress::{Counting, Progress};
use flate2::bufread::MultiGzDecoder;
use ruzstd::decoding::errors::{FrameDecoderError, ReadFrameHeaderError};
use ruzstd::decoding::{BlockDecodingStrategy, FrameDecoder};
use sha2::{Digest, Sha256};
use std::io::{self, BufRead, BufReader, Read};

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerCompression {
    Plain,
    Gzip,
    Zstd,
    /// Not said (docker-archive): told by the magic bytes.
    Detect,
}

impl LayerCompression {
    /// The compression of a layer media type, `None` when it is not a layer type known.
    pub fn of_media_type(media_type: &str) -> Option<LayerCompression> {
        Some(match media_type {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar" => LayerCompression::Plain,
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => LayerCompression::Gzip,
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => {
                LayerCompression::Zstd
            }
            _ => return None,
        })
    }
}

/// One layer as the manifest describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerDesc {
    /// The member holding the blob (`blobs/sha256/<hex>`, `<id>/layer.tar`).
    pub member: String,
    /// How errors name it: its digest, else its member name.
    pub name: String,
    pub compression: LayerCompression,
    /// `sha256:<hex>` of the blob's bytes, when known.
    pub digest: Option<String>,
    /// `sha256:<hex>` of the uncompressed tar, when the config lists it.
    pub diff_id: Option<String>,
    pub size: u64,
}

/// The layers of a resolved image, for [`super::flatten::flatten`].
pub struct StoreLayers<'a> {
    pub store: &'a Store,
    pub layers: &'a [LayerDesc],
    pub image: &'a str,
    pub progress: &'a Progress,
}

impl Layers for StoreLayers<'_> {
    fn count(&self) -> usize {
        self.layers.len()
    }

    fn damaged(&self, index: usize, why: String) -> ImageError {
        ImageError::Layer {
            image: self.image.to_string(),
            layer: self.layers[index].name.clone(),
            why,
        }
    }

    fn read(
        &self,
        index: usize,
        f: &mut dyn FnMut(&mut dyn Read) -> Result<(), ImageError>,
    ) -> Result<(), ImageError> {
        let desc = &self.layers[index];
        let read_error = |source| ImageError::Read {
            image: self.image.to_string(),
            source,
        };
        let (blob, _) = self
            .store
            .open(&desc.member)
            .map_err(read_error)?
            .ok_or_else(|| ImageError::MissingBlob {
                image: self.image.to_string(),
                blob: desc.name.clone(),
            })?;
        let mut raw = Hashing::new(Counting::new(blob, self.progress));
        let (result, diff_id) = {
            let mut buffered = BufReader::with_capacity(BUF_SIZE, &mut raw);
            let compression = match desc.compression {
                LayerCompression::Detect => {
                    let magic = buffered.fill_buf().map_err(read_error)?;
                    if magic.starts_with(&[0x1f, 0x8b]) {
                        LayerCompression::Gzip
                    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
                        LayerCompression::Zstd
                    } else {
                        LayerCompression::Plain
                    }
                }
                known => known,
            };
            let decoded: Box<dyn Read + '_> = match compression {
                LayerCompression::Gzip => Box::new(MultiGzDecoder::new(buffered)),
                LayerCompression::Zstd => Box::new(ZstdReader::new(buffered)),
                _ => Box::new(buffered),
            };
            let mut tar = Hashing::new(decoded);
            let result = f(&mut tar).and_then(|()| {
                // The zero blocks and padding after the end count for the diff_id.
                io::copy(&mut tar, &mut io::sink())
                    .map(drop)
                    .map_err(|e| self.damaged(index, crate::util::os_error(&e)))
            });
            (result, tar.digest())
        };
        // Whatever the decompressor left unread still counts for the blob's digest.
        let drained = io::copy(&mut raw, &mut io::sink());
        let actual = raw.digest();
        if let Some(expected) = &desc.digest {
            if &actual != expected {
                return Err(ImageError::Digest {
                    image: self.image.to_string(),
                    blob: desc.name.clone(),
                    actual,
                });
            }
        }
        drained.map_err(read_error)?;
        result?;
        if let Some(expected) = &desc.diff_id {
            if &diff_id != expected {
                return Err(ImageError::Digest {
                    image: self.image.to_string(),
                    blob: format!("{} (diff_id {expected})", desc.name),
                    actual: diff_id,
                });
            }
        }
        Ok(())
    }
}

/// Hashes what passes through.
pub struct Hashing<R> {
    inner: R,
    hasher: Sha256,
}

impl<R> Hashing<R> {
    pub fn new(inner: R) -> Self {
        Hashing {
            inner,
            hasher: Sha256::new(),
        }
    }

    /// `sha256:<hex>` of everything read so far.
    pub fn digest(&self) -> String {
        binctr_format::Sha256Digest(self.hasher.clone().finalize().into()).to_string()
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// A zstd stream of one or more frames (skippable frames skipped), decoded by ruzstd.
pub struct ZstdReader<R> {
    source: R,
    decoder: FrameDecoder,
    /// A frame is being decoded.
    in_frame: bool,
}

impl<R: BufRead> ZstdReader<R> {
    pub fn new(source: R) -> Self {
        ZstdReader {
            source,
            decoder: FrameDecoder::new(),
            in_frame: false,
        }
    }

    /// Starts the next frame; `false` at the end of the input.
    fn next_frame(&mut self) -> io::Result<bool> {
        loop {
            if self.source.fill_buf()?.is_empty() {
                return Ok(false);
            }
            match self.decoder.reset(&mut self.source) {
                Ok(()) => return Ok(true),
                Err(FrameDecoderError::ReadFrameHeaderError(ReadFrameHeaderError::SkipFrame {
                    length,
                    ..
                })) => {
                    let skipped = io::copy(
                        &mut (&mut self.source).take(u64::from(length)),
                        &mut io::sink(),
                    )?;
                    if skipped != u64::from(length) {
                        return Err(zstd_error("truncated skippable frame"));
                    }
                }
                Err(e) => return Err(zstd_error(e)),
            }
        }
    }
}

fn zstd_error(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("zstd: {e}"))
}

impl<R: BufRead> Read for ZstdReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if !self.in_frame {
                if !self.next_frame()? {
                    return Ok(0);
                }
                self.in_frame = true;
            }
            // decode_blocks may only fill its window: loop until bytes can be collected.
            while self.decoder.can_collect() < buf.len() && !self.decoder.is_finished() {
                let wanted = buf.len() - self.decoder.can_collect();
                self.decoder
                    .decode_blocks(&mut self.source, BlockDecodingStrategy::UptoBytes(wanted))
                    .map_err(zstd_error)?;
            }
            let n = self.decoder.read(buf)?;
            if n > 0 {
                return Ok(n);
            }
            if self.decoder.is_finished() && self.decoder.can_collect() == 0 {
                self.in_frame = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types() {
        use LayerCompression::*;
        let of = LayerCompression::of_media_type;
        assert_eq!(of("application/vnd.oci.image.layer.v1.tar"), Some(Plain));
        assert_eq!(
            of("application/vnd.oci.image.layer.v1.tar+gzip"),
            Some(Gzip)
        );
        assert_eq!(
            of("application/vnd.oci.image.layer.v1.tar+zstd"),
            Some(Zstd)
        );
        assert_eq!(
            of("application/vnd.docker.image.rootfs.diff.tar.gzip"),
            Some(Gzip)
        );
        assert_eq!(of("application/vnd.oci.image.layer.v1.tar+lzma"), None);
    }

    #[test]
    fn zstd_frames_decode() {
        // `printf hello | zstd -c` followed by a skippable frame and `printf ' world' | zstd`.
        let hello: &[u8] = &[
            0x28, 0xb5, 0x2f, 0xfd, 0x04, 0x58, 0x29, 0x00, 0x00, 0x68, 0x65, 0x6c, 0x6c, 0x6f,
            0xa3, 0x6d, 0x9f, 0x88,
        ];
        let skippable: &[u8] = &[0x50, 0x2a, 0x4d, 0x18, 0x03, 0x00, 0x00, 0x00, 1, 2, 3];
        let world: &[u8] = &[
            0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x58, 0x31, 0x00, 0x00, 0x20, 0x77, 0x6f, 0x72, 0x6c,
            0x64,
        ];
        let input = [hello, skippable, world].concat();
        let mut out = String::new();
        ZstdReader::new(&input[..])
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, "hello world");
    }
}
