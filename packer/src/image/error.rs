//! Everything that can be wrong with an input, one variant per reason; each message names
//! the image and, where it helps, what to do.
use crate::util::os_error;
use std::fmt;
use std::io;
use std::path::PathBuf;

/// Why an input cannot be packed.
#[derive(Debug)]
pub enum ImageError {
    Open {
        image: String,
        source: io::Error,
    },
    NotATar {
        image: String,
    },
    /// Compressed with something binctr-pack does not read.
    Compressed {
        image: String,
        format: &'static str,
        tool: &'static str,
    },
    Read {
        image: String,
        source: io::Error,
    },
    Damaged {
        image: String,
        why: String,
    },
    /// A file of a directory input.
    ReadFile {
        path: PathBuf,
        source: io::Error,
    },
    /// The temporary copy of a non-seekable image archive.
    Spool(io::Error),
    /// An index, manifest or config that is not what the image format says.
    BadImage {
        image: String,
        why: String,
    },
    /// A blob whose bytes do not hash to its digest.
    Digest {
        image: String,
        blob: String,
        actual: String,
    },
    /// An entry whose path or hard-link target climbs out of the root with `..`:
    /// refused at pack time, as the stub would refuse it at extraction.
    Unsafe {
        image: String,
        entry: String,
        why: &'static str,
    },
    MissingBlob {
        image: String,
        blob: String,
    },
    MediaType {
        image: String,
        blob: String,
        media_type: String,
    },
    /// Several images and nothing says which.
    Ambiguous {
        image: String,
        names: Vec<String>,
    },
    NoSuchImage {
        image: String,
        wanted: String,
        names: Vec<String>,
    },
    NoPlatform {
        image: String,
        wanted: String,
        available: Vec<String>,
    },
    /// A layer whose tar cannot be read.
    Layer {
        image: String,
        layer: String,
        why: String,
    },
    /// Writing the tar stream to the payload failed: an output error.
    Write(io::Error),
}

fn list(names: &[String]) -> String {
    names.join(", ")
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageError::Open { image, source } => {
                write!(f, "cannot open {image}: {}", os_error(source))
            }
            ImageError::NotATar { image } => write!(
                f,
                "{image} is not a tar archive (plain or gzip) or a directory"
            ),
            ImageError::Compressed { image, format, tool } => write!(
                f,
                "{image} is {format}-compressed: decompress it first ({tool}), binctr-pack reads plain, gzip or zstd tar"
            ),
            ImageError::Read { image, source } => {
                write!(f, "cannot read {image}: {}", os_error(source))
            }
            ImageError::Damaged { image, why } => {
                write!(f, "{image} is a damaged tar archive ({why})")
            }
            ImageError::Unsafe { image, entry, why } => {
                write!(f, "{image}: refused entry '{entry}': {why}")
            }
            ImageError::ReadFile { path, source } => {
                write!(f, "cannot read {}: {}", path.display(), os_error(source))
            }
            ImageError::Spool(source) => write!(
                f,
                "cannot write the temporary copy of the image in {}: {}: set TMPDIR to a directory with room",
                std::env::temp_dir().display(),
                os_error(source)
            ),
            ImageError::BadImage { image, why } => write!(f, "{image}: damaged image: {why}"),
            ImageError::Digest {
                image,
                blob,
                actual,
            } => write!(
                f,
                "{image}: blob {blob} is damaged: its content hashes to {actual}"
            ),
            ImageError::MissingBlob { image, blob } => write!(
                f,
                "{image}: blob {blob} is missing: the image names it but does not hold it"
            ),
            ImageError::MediaType {
                image,
                blob,
                media_type,
            } => write!(
                f,
                "{image}: layer {blob} has the unknown media type {media_type:?} (binctr-pack reads tar layers, plain, gzip or zstd)"
            ),
            ImageError::Ambiguous { image, names } => write!(
                f,
                "{image} holds {} images ({}): choose one with --image NAME",
                names.len(),
                list(names)
            ),
            ImageError::NoSuchImage {
                image,
                wanted,
                names,
            } => write!(
                f,
                "{image} has no image {wanted:?}; it has: {}",
                list(names)
            ),
            ImageError::NoPlatform {
                image,
                wanted,
                available,
            } => write!(
                f,
                "{image} has no image for {wanted}; it has: {} (choose one with --platform, and a stub for it with --stub)",
                list(available)
            ),
            ImageError::Layer { image, layer, why } => {
                write!(f, "{image}: layer {layer} is damaged ({why})")
            }
            ImageError::Write(source) => write!(f, "{}", os_error(source)),
        }
    }
}

impl std::error::Error for ImageError {}
