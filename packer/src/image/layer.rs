//! Reads one layer: its blob from the store, decompressed (plain, gzip or zstd) into a
//! tar stream, with both digests checked as the bytes stream by: the blob's own
//! (`sha256` of the compressed bytes, from the manifest) and the layer's diff_id
//! (`sha256` of the tar, from the config), whichever the image has (a docker-archive
//! layer has only its diff_id, which must be there). A damaged blob usually breaks the
//! decompressor first; the digest is still what is reported, because it names the cause.
//!
//! What the blob is compressed with is told by its magic bytes, as docker and podman
//! tell it: a layer whose media type says plain tar but holds gzip (docker's own
//! `rootfs.diff.tar` types may, containerd says) is read as gzip. The media type only
//! says it is a layer, and what to expect when the bytes show no compression.
//!
//! Every read is checked, the second pass's too: flattening reads each layer twice, and
//! a blob changed between the passes fails the pack before anything is committed. The
//! uncompressed bytes are taken from the pass's budget (`--max-size`), and a layer listed
//! more than [`MAX_REPEATS`] times may not exceed [`SMALL_LAYER`].
use super::error::ImageError;
use super::flatten::Layers;
use super::limits::{human, Budget, MAX_REPEATS, SMALL_LAYER};
use super::sniff::Compression;
use super::store::Store;
use super::zstd::ZstdReader;
use crate::progress::{Counting, Progress};
use crate::util::{os_error, shown, BUF_SIZE};
use binctr_format::HashingReader;
use flate2::bufread::MultiGzDecoder;
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
    /// The compression of a layer media type, `None` when it is not a layer type known:
    /// the OCI types (nondistributable ones included), docker's (foreign ones included),
    /// as containerd reads them.
    pub fn of_media_type(media_type: &str) -> Option<LayerCompression> {
        Some(match media_type {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar" => LayerCompression::Plain,
            // containerd: "may have been compressed but failed to use the correct media
            // type".
            "application/vnd.docker.image.rootfs.diff.tar"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar" => LayerCompression::Detect,
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => LayerCompression::Gzip,
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
            | "application/vnd.docker.image.rootfs.diff.tar.zstd" => LayerCompression::Zstd,
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
    /// How often the manifest lists this layer.
    pub repeats: usize,
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

    fn image(&self) -> &str {
        self.image
    }

    fn damaged(&self, index: usize, why: String) -> ImageError {
        ImageError::Layer {
            image: self.image.to_string(),
            layer: self.layers[index].name.clone(),
            why,
        }
    }

    fn diff_id(&self, index: usize) -> String {
        self.layers[index].diff_id.clone().unwrap_or_default()
    }

    fn read(
        &self,
        index: usize,
        budget: &Budget,
        f: &mut dyn FnMut(&mut dyn Read) -> Result<(), ImageError>,
    ) -> Result<(), ImageError> {
        let desc = &self.layers[index];
        let (blob, size) = self.store.open_blob(&desc.member, self.image, &desc.name)?;
        // What the blob was when it was listed, no more, even if it grows.
        let mut raw = HashingReader::new(Counting::new(blob.take(size), self.progress));
        let repeated = Budget::new(if desc.repeats > MAX_REPEATS {
            SMALL_LAYER
        } else {
            u64::MAX
        });
        let (result, diff_id) = {
            let buffered = BufReader::with_capacity(BUF_SIZE, &mut raw);
            let capped = Capped {
                inner: self.decoder(desc, buffered)?,
                budgets: [budget, &repeated],
            };
            let mut tar = HashingReader::new(capped);
            let result = f(&mut tar).and_then(|()| {
                // The zero blocks and padding after the end count for the diff_id.
                io::copy(&mut tar, &mut io::sink()).map(drop).map_err(|e| {
                    let why = format!("{} (after the end of its tar)", os_error(&e));
                    self.damaged(index, why)
                })
            });
            (result, tar.digest().to_string())
        };
        // Whatever the decompressor left unread still counts for the blob's digest.
        let drained = io::copy(&mut raw, &mut io::sink());
        let actual = raw.digest().to_string();
        if let Some(expected) = &desc.digest {
            if &actual != expected {
                return Err(ImageError::Digest {
                    image: self.image.to_string(),
                    blob: desc.name.clone(),
                    actual,
                });
            }
        }
        drained.map_err(|e| self.read_error(e))?;
        self.over_budget(desc, budget, &repeated)?;
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

/// Takes what passes through from every budget; fails once one runs out (the budget
/// remembers it, for the caller to say which).
struct Capped<'a, R> {
    inner: R,
    budgets: [&'a Budget; 2],
}

impl<R: Read> Read for Capped<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if self.budgets.iter().all(|b| b.take(n as u64)) {
            Ok(n)
        } else {
            Err(io::Error::other("more than allowed"))
        }
    }
}

impl StoreLayers<'_> {
    fn read_error(&self, source: io::Error) -> ImageError {
        ImageError::Read {
            image: self.image.to_string(),
            source,
        }
    }

    /// The error for a layer that made a pass read more than allowed.
    fn over_budget(
        &self,
        desc: &LayerDesc,
        budget: &Budget,
        repeated: &Budget,
    ) -> Result<(), ImageError> {
        if repeated.exceeded() {
            return Err(ImageError::Refused {
                image: self.image.to_string(),
                why: format!(
                    "layer {} is listed {} times in the manifest: a layer listed more than {MAX_REPEATS} times may hold at most {} (as the empty layers image builders repeat), this one holds more",
                    shown(&desc.name),
                    desc.repeats,
                    human(SMALL_LAYER)
                ),
            });
        }
        if budget.exceeded() {
            return Err(ImageError::TooLarge {
                image: self.image.to_string(),
                what: "the uncompressed layers".into(),
                limit: budget.max(),
            });
        }
        Ok(())
    }

    /// The layer's tar: the blob decompressed as its magic bytes say (as docker and
    /// podman decompress a layer, whatever its media type says), else as the media type
    /// says (a blob that should be gzip and is not fails as a damaged gzip stream).
    fn decoder<'r, R: BufRead + 'r>(
        &self,
        desc: &LayerDesc,
        mut blob: R,
    ) -> Result<Box<dyn Read + 'r>, ImageError> {
        let magic = blob.fill_buf().map_err(|e| self.read_error(e))?;
        let compression = match (Compression::of_magic(magic), desc.compression) {
            (Some(Compression::Gzip), _) => LayerCompression::Gzip,
            (Some(Compression::Zstd), _) => LayerCompression::Zstd,
            (Some(other @ (Compression::Xz | Compression::Bzip2)), _) => {
                return Err(ImageError::Layer {
                    image: self.image.to_string(),
                    layer: desc.name.clone(),
                    why: format!(
                        "it is {}-compressed, which binctr-pack does not read (docker and podman do): recompress the image with gzip or zstd (skopeo copy --dest-compress-format gzip)",
                        if other == Compression::Xz { "xz" } else { "bzip2" }
                    ),
                });
            }
            // Anything else is read as a tar, whose reader says what is wrong.
            (None, LayerCompression::Detect) => LayerCompression::Plain,
            (None, declared) => declared,
        };
        Ok(match compression {
            LayerCompression::Gzip => Box::new(MultiGzDecoder::new(blob)),
            LayerCompression::Zstd => Box::new(ZstdReader::new(blob)),
            _ => Box::new(blob),
        })
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
        assert_eq!(
            of("application/vnd.docker.image.rootfs.foreign.diff.tar"),
            Some(Detect)
        );
        assert_eq!(
            of("application/vnd.docker.image.rootfs.diff.tar.zstd"),
            Some(Zstd)
        );
        assert_eq!(
            of("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"),
            Some(Gzip)
        );
        assert_eq!(of("application/vnd.oci.image.layer.v1.tar+lzma"), None);
        assert_eq!(
            of("application/vnd.oci.image.layer.v1.tar+gzip+encrypted"),
            None
        );
    }
}
