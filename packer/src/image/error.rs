//! Everything that can be wrong with an input, one variant per reason; each message names
//! the image and, where it helps, what to do.
//!
//! Every text that comes from the image (names, tags, digests, platforms, entry paths)
//! is shown through [`shown`]: control characters escaped, long texts cut. `why` texts
//! are built with their image parts already shown so.
use super::limits::human;
use crate::util::{os_error, printable, shown};
use std::fmt;
use std::io;
use std::os::unix::ffi::OsStrExt;
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
    /// An entry whose path or hard-link target climbs out of the root with `..` (or
    /// that the stub could not make: a NUL in its name, a name of PATH_MAX or more):
    /// refused at pack time, as the stub would refuse it at extraction.
    Unsafe {
        image: String,
        entry: Vec<u8>,
        why: &'static str,
    },
    /// Larger than `--max-size` allows.
    TooLarge {
        image: String,
        what: String,
        limit: u64,
    },
    /// An image that asks for more than any image needs (layers listed again and again,
    /// indexes nested deep, millions of paths), or whose layers cannot all be verified.
    Refused {
        image: String,
        why: String,
    },
    /// A blob or layer of an image directory that is not a regular file inside it.
    NotRegular {
        image: String,
        blob: String,
        what: &'static str,
    },
    /// A file of a directory input replaced while it was packed.
    Changed {
        path: PathBuf,
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
    /// Several different images for the platform wanted.
    AmbiguousPlatform {
        image: String,
        wanted: String,
        names: Vec<String>,
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

/// How many names of a list an error shows.
const SHOWN_NAMES: usize = 10;

fn list(names: &[String]) -> String {
    let mut text: Vec<String> = names.iter().take(SHOWN_NAMES).map(|n| shown(n)).collect();
    if names.len() > SHOWN_NAMES {
        text.push(format!("and {} more", names.len() - SHOWN_NAMES));
    }
    text.join(", ")
}

fn path(path: &std::path::Path) -> String {
    printable(path.as_os_str().as_bytes())
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageError::Open { image, source } => {
                write!(f, "cannot open {}: {}", shown(image), os_error(source))
            }
            ImageError::NotATar { image } => write!(
                f,
                "{} is not a tar archive (plain or gzip) or a directory",
                shown(image)
            ),
            ImageError::Compressed { image, format, tool } => write!(
                f,
                "{} is {format}-compressed: decompress it first ({tool}), binctr-pack reads plain, gzip or zstd tar",
                shown(image)
            ),
            ImageError::Read { image, source } => {
                write!(f, "cannot read {}: {}", shown(image), os_error(source))
            }
            ImageError::Damaged { image, why } => {
                write!(f, "{} is a damaged tar archive: {why}", shown(image))
            }
            ImageError::ReadFile { path: p, source } => {
                write!(f, "cannot read {}: {}", path(p), os_error(source))
            }
            ImageError::Spool(source) => write!(
                f,
                "cannot write the temporary copy of the image in {}: {}: set TMPDIR to a directory with room",
                std::env::temp_dir().display(),
                os_error(source)
            ),
            ImageError::BadImage { image, why } => {
                write!(f, "{}: damaged image: {why}", shown(image))
            }
            ImageError::Digest {
                image,
                blob,
                actual,
            } => write!(
                f,
                "{}: blob {} is damaged: its content hashes to {actual}",
                shown(image),
                shown(blob)
            ),
            ImageError::MissingBlob { image, blob } => write!(
                f,
                "{}: blob {} is missing: the image names it but does not hold it",
                shown(image),
                shown(blob)
            ),
            ImageError::MediaType {
                image,
                blob,
                media_type,
            } if media_type.ends_with("+encrypted") => write!(
                f,
                "{}: layer {} is encrypted (\"{}\"): decrypt the image first (skopeo copy --decryption-key KEY ...)",
                shown(image),
                shown(blob),
                shown(media_type)
            ),
            ImageError::MediaType {
                image,
                blob,
                media_type,
            } => write!(
                f,
                "{}: layer {} has the unknown media type \"{}\" (binctr-pack reads tar layers, plain, gzip or zstd)",
                shown(image),
                shown(blob),
                shown(media_type)
            ),
            ImageError::Layer { image, layer, why } => {
                write!(f, "{}: layer {} is damaged: {why}", shown(image), shown(layer))
            }
            ImageError::Write(source) => write!(f, "{}", os_error(source)),
            ImageError::Unsafe { .. }
            | ImageError::TooLarge { .. }
            | ImageError::Refused { .. }
            | ImageError::NotRegular { .. }
            | ImageError::Changed { .. } => self.fmt_refusal(f),
            ImageError::Ambiguous { .. }
            | ImageError::NoSuchImage { .. }
            | ImageError::NoPlatform { .. }
            | ImageError::AmbiguousPlatform { .. } => self.fmt_choice(f),
        }
    }
}

impl ImageError {
    /// What the packer refuses to do with an image.
    fn fmt_refusal(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageError::Unsafe { image, entry, why } => {
                write!(f, "{}: refused entry '{}': {why}", shown(image), printable(entry))
            }
            ImageError::TooLarge { image, what, limit } => write!(
                f,
                "{}: {what}: more than the {} allowed (raise the limit with --max-size if the image really is that large)",
                shown(image),
                human(*limit)
            ),
            ImageError::Refused { image, why } => write!(f, "{}: refused: {why}", shown(image)),
            ImageError::NotRegular { image, blob, what } => write!(
                f,
                "{}: {} is {what}, not a regular file inside the image directory: refused",
                shown(image),
                shown(blob)
            ),
            ImageError::Changed { path: p } => write!(
                f,
                "{} changed while it was packed (replaced by another file): pack a directory that nobody else is changing",
                path(p)
            ),
            _ => unreachable!("not a refusal"),
        }
    }

    /// Which image of several: none, or more than one, fits.
    fn fmt_choice(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageError::Ambiguous { image, names } => write!(
                f,
                "{} holds {} images ({}): choose one with --image NAME",
                shown(image),
                names.len(),
                list(names)
            ),
            ImageError::NoSuchImage {
                image,
                wanted,
                names,
            } => write!(
                f,
                "{} has no image \"{}\"; it has: {}",
                shown(image),
                shown(wanted),
                list(names)
            ),
            ImageError::NoPlatform {
                image,
                wanted,
                available,
            } => write!(
                f,
                "{} has no image for {}; it has: {} (choose one with --platform)",
                shown(image),
                shown(wanted),
                list(available)
            ),
            ImageError::AmbiguousPlatform {
                image,
                wanted,
                names,
            } => write!(
                f,
                "{} holds {} different images for {} ({}): choose one with --image NAME or a more precise --platform",
                shown(image),
                names.len(),
                shown(wanted),
                list(names)
            ),
            _ => unreachable!("not a choice"),
        }
    }
}

impl std::error::Error for ImageError {}
