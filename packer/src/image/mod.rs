//! The packer's inputs. Every reader produces the same thing: one flattened tar stream
//! written into the payload. What an input is, is told by its content, never by its name:
//!
//! - a flat root filesystem tar (plain, gzip or zstd): passed through entry by entry
//!   (`tar.rs`);
//! - a directory: an OCI image layout (`oci-layout` + `index.json`), an unpacked
//!   docker-archive (`manifest.json`), or else a root filesystem, walked into a
//!   deterministic tar (`dir.rs`);
//! - a tar holding an OCI image layout or a docker-archive (`docker save`,
//!   `skopeo copy ... oci-archive:`), possibly compressed as a whole: its members are
//!   indexed (`archive.rs`), the image is resolved (`oci.rs`, `docker.rs`) and its layers
//!   flattened (`flatten.rs`), each read and verified by `layer.rs`.
mod archive;
mod dir;
mod docker;
mod flatten;
mod layer;
mod oci;
mod store;
mod tar;

use crate::progress::{Counting, Progress};
use crate::util::os_error;
use binctr_format::ImageConfig;
use flate2::bufread::MultiGzDecoder;
use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, IsTerminal, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use store::Store;

pub use layer::ZstdReader;

/// Large reads keep the per-call overhead out of the way of lz4.
pub const BUF_SIZE: usize = 1 << 20;

/// IMAGE as given on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageArg {
    Stdin,
    Path(PathBuf),
}

impl fmt::Display for ImageArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageArg::Stdin => f.write_str("standard input"),
            ImageArg::Path(path) => write!(f, "{}", path.display()),
        }
    }
}

/// Which image of a multi-image input, for which platform.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// `--image NAME[:TAG]`.
    pub image: Option<String>,
    /// `--platform OS/ARCH[/VARIANT]`; `None`: the stub's.
    pub platform: Option<Platform>,
    /// The stub's platform.
    pub stub_platform: Platform,
}

/// An OCI platform: `linux/amd64`, `linux/arm64/v8`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: String,
}

impl Platform {
    /// The platform a stub of `arch` ("x86_64", "aarch64") runs.
    pub fn of_stub(arch: &str) -> Platform {
        let architecture = match arch {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        };
        Platform {
            os: "linux".into(),
            architecture: architecture.into(),
            variant: String::new(),
        }
    }

    /// `OS/ARCH[/VARIANT]`.
    pub fn parse(text: &str) -> Option<Platform> {
        let parts: Vec<&str> = text.split('/').collect();
        if parts.len() < 2 || parts.len() > 3 || parts.iter().any(|p| p.is_empty()) {
            return None;
        }
        Some(Platform {
            os: parts[0].into(),
            architecture: parts[1].into(),
            variant: parts.get(2).copied().unwrap_or_default().into(),
        })
    }

    /// Whether an image for `self` runs here, wanted `want`: an empty variant matches any
    /// (arm64 is v8 whether it says so or not).
    pub fn matches(&self, want: &Platform) -> bool {
        self.os == want.os
            && self.architecture == want.architecture
            && (want.variant.is_empty() || self.variant.is_empty() || self.variant == want.variant)
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if !self.variant.is_empty() {
            write!(f, "/{}", self.variant)?;
        }
        Ok(())
    }
}

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

/// The image's own config and provenance, before the pack-time overrides.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ImageMeta {
    pub reference: String,
    pub manifest_digest: String,
    pub created: String,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
    pub exposed_ports: Vec<String>,
    pub volumes: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub stop_signal: String,
}

impl ImageMeta {
    /// Writes the image's fields into `config` (a flat rootfs has none but provenance).
    pub fn apply(&self, config: &mut ImageConfig) {
        if !self.reference.is_empty() {
            config.reference = self.reference.clone();
        }
        config.manifest_digest = self.manifest_digest.clone();
        config.created = self.created.clone();
        config.entrypoint = self.entrypoint.clone();
        config.cmd = self.cmd.clone();
        config.env = self.env.clone();
        config.working_dir = self.working_dir.clone();
        config.user = self.user.clone();
        config.exposed_ports = self.exposed_ports.clone();
        config.volumes = self.volumes.clone();
        config.labels = self.labels.clone();
        config.stop_signal = self.stop_signal.clone();
    }
}

/// An image resolved to its layers: what `flatten` needs.
pub struct Image {
    store: Store,
    layers: Vec<layer::LayerDesc>,
    image: String,
}

/// An opened input, not read yet.
pub struct Input<'p> {
    source: Source<'p>,
    /// The input's size when known: a regular file's length.
    pub total: Option<u64>,
    image: String,
    /// The image config, for image inputs.
    pub meta: Option<ImageMeta>,
}

enum Source<'p> {
    /// A flat tar stream, decompressed.
    Stream(Box<dyn BufRead + 'p>),
    Dir(PathBuf),
    Image(Image),
}

/// What was written.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub entries: u64,
}

/// The size of IMAGE when it is a regular file, for the progress bar.
pub fn input_size(arg: &ImageArg) -> Option<u64> {
    match arg {
        ImageArg::Path(path) => fs::metadata(path)
            .ok()
            .filter(|m| m.is_file())
            .map(|m| m.len()),
        ImageArg::Stdin => None,
    }
}

/// Opens IMAGE (a directory, a file, or standard input), tells what it is and, for an
/// image, resolves it to its layers: every error an image can have short of a damaged
/// blob is reported here, before any output exists.
pub fn open<'p>(
    arg: &ImageArg,
    selection: &Selection,
    progress: &'p Progress,
) -> Result<Input<'p>, ImageError> {
    let image = arg.to_string();
    let open_error = |source| ImageError::Open {
        image: image.clone(),
        source,
    };
    let read_error = |source| ImageError::Read {
        image: image.clone(),
        source,
    };
    let resolved = |store: Store, kind: store::Kind| -> Result<Input<'p>, ImageError> {
        let (meta, layers) = match kind {
            store::Kind::Oci => oci::resolve(&store, &image, selection)?,
            store::Kind::Docker => docker::resolve(&store, &image, selection)?,
        };
        let mut meta = meta;
        if meta.reference.is_empty() {
            meta.reference = match arg {
                ImageArg::Stdin => "-".into(),
                ImageArg::Path(p) => reference_of(p),
            };
        }
        let total = layers.iter().map(|l| l.size).sum::<u64>() * 2;
        Ok(Input {
            source: Source::Image(Image {
                store,
                layers,
                image: image.clone(),
            }),
            total: Some(total),
            image: image.clone(),
            meta: Some(meta),
        })
    };
    let file = match arg {
        // A tar typed at a terminal is a mistake, not an input: say so instead of waiting.
        ImageArg::Stdin if io::stdin().is_terminal() => {
            return Err(open_error(io::Error::other(
                "it is a terminal: pipe a tar into binctr-pack, e.g. podman export C | binctr-pack - -o C",
            )))
        }
        ImageArg::Stdin => None,
        ImageArg::Path(path) => {
            let meta = fs::metadata(path).map_err(open_error)?;
            if meta.is_dir() {
                // Fail now, not halfway through the walk, when the top is unreadable.
                fs::read_dir(path).map_err(open_error)?;
                if let Some(kind) = store::Kind::of_dir(path) {
                    return resolved(Store::Dir(path.clone()), kind);
                }
                return Ok(Input {
                    source: Source::Dir(path.clone()),
                    total: None,
                    image,
                    meta: None,
                });
            }
            let file = File::open(path).map_err(open_error)?;
            Some((file, meta.is_file().then_some(meta.len())))
        }
    };
    let (raw, total): (Box<dyn Read + 'p>, Option<u64>) = match file {
        None => (Box::new(io::stdin().lock()), None),
        Some((mut file, Some(len))) => {
            // A plain tar in a regular file: index it in place, by seeking.
            let mut magic = [0u8; 8];
            let n = read_up_to(&mut file, &mut magic).map_err(read_error)?;
            file.seek(SeekFrom::Start(0)).map_err(read_error)?;
            if compression(&magic[..n]).is_none() {
                return match archive::index_file(&file) {
                    Some((members, kind)) => resolved(Store::Archive { file, members }, kind),
                    None => Ok(Input {
                        source: Source::Stream(Box::new(BufReader::with_capacity(
                            BUF_SIZE,
                            Counting::new(file, progress),
                        ))),
                        total: Some(len),
                        image,
                        meta: None,
                    }),
                };
            }
            (Box::new(file), Some(len))
        }
        Some((file, None)) => (Box::new(file), None),
    };
    // A pipe or a compressed file: read it once, spooling what may be an image archive.
    let stream = decompress(
        BufReader::with_capacity(BUF_SIZE, Counting::new(raw, progress)),
        &image,
    )?;
    match archive::index_stream(stream).map_err(ImageError::Spool)? {
        archive::Indexed::Image(file, members, kind) => {
            resolved(Store::Archive { file, members }, kind)
        }
        archive::Indexed::Flat(stream) => Ok(Input {
            source: Source::Stream(stream),
            total,
            image,
            meta: None,
        }),
    }
}

fn read_up_to(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    Gzip,
    Zstd,
    Xz,
    Bzip2,
}

fn compression(magic: &[u8]) -> Option<Compression> {
    if magic.starts_with(&[0x1f, 0x8b]) {
        Some(Compression::Gzip)
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some(Compression::Zstd)
    } else if magic.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Some(Compression::Xz)
    } else if magic.starts_with(b"BZh") {
        Some(Compression::Bzip2)
    } else {
        None
    }
}

/// The stream decompressed when it is gzip or zstd (recognized by magic, never by name).
fn decompress<'p, R: BufRead + 'p>(
    mut input: R,
    image: &str,
) -> Result<Box<dyn BufRead + 'p>, ImageError> {
    let magic = peek(&mut input).map_err(|source| ImageError::Read {
        image: image.to_string(),
        source,
    })?;
    let compressed = |format, tool| ImageError::Compressed {
        image: image.to_string(),
        format,
        tool,
    };
    Ok(match compression(&magic) {
        None => Box::new(input),
        Some(Compression::Gzip) => Box::new(BufReader::with_capacity(
            BUF_SIZE,
            MultiGzDecoder::new(input),
        )),
        Some(Compression::Zstd) => {
            Box::new(BufReader::with_capacity(BUF_SIZE, ZstdReader::new(input)))
        }
        Some(Compression::Xz) => return Err(compressed("xz", "xz -d")),
        Some(Compression::Bzip2) => return Err(compressed("bzip2", "bzip2 -d")),
    })
}

impl Input<'_> {
    /// Writes the image as one tar stream into `out`.
    pub fn write_tar<W: Write>(
        self,
        progress: &Progress,
        out: &mut W,
    ) -> Result<Stats, ImageError> {
        match self.source {
            Source::Dir(dir) => dir::write_tar(&dir, progress, out),
            Source::Stream(stream) => tar::copy(stream, &self.image, out),
            Source::Image(image) => {
                let layers = layer::StoreLayers {
                    store: &image.store,
                    layers: &image.layers,
                    image: &image.image,
                    progress,
                };
                flatten::flatten(&layers, out)
            }
        }
    }
}

/// The first bytes of the input, without consuming them (a pipe may deliver them in
/// small pieces).
fn peek<R: BufRead>(input: &mut R) -> io::Result<Vec<u8>> {
    let buf = input.fill_buf()?;
    Ok(buf[..buf.len().min(8)].to_vec())
}

/// The image name derived from IMAGE: the file name less its archive suffixes, the
/// directory's name, or "image" for standard input. Sanitize with [`sanitize_name`].
pub fn default_name(arg: &ImageArg) -> String {
    let ImageArg::Path(path) = arg else {
        return "image".to_string();
    };
    if path.is_dir() {
        let path = fs::canonicalize(path).unwrap_or_else(|_| path.clone());
        return file_name(&path);
    }
    let name = file_name(path);
    for suffix in [".tar.gz", ".tar.zst", ".tgz", ".tar"] {
        if let Some(stem) = name.strip_suffix(suffix) {
            return stem.to_string();
        }
    }
    name
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A name usable as a hostname label: lower case `[a-z0-9._-]`, starting and ending with
/// a letter or digit, at most 63 characters; "image" if nothing is left.
pub fn sanitize_name(name: &str) -> String {
    let mapped: String = name
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let trimmed = mapped.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    let mut name: String = trimmed.chars().take(63).collect();
    while name.ends_with(|c: char| !c.is_ascii_alphanumeric()) {
        name.pop();
    }
    if name.is_empty() {
        "image".to_string()
    } else {
        name
    }
}

/// What the config records as an image file's reference: its name, not where it lies
/// on this machine (packing the same file from elsewhere gives the same bytes).
pub fn reference_of(path: &std::path::Path) -> String {
    match path.file_name() {
        Some(name) => name.to_string_lossy().into_owned(),
        None => path.display().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_derived_and_sanitized() {
        let path = |p: &str| ImageArg::Path(PathBuf::from(p));
        assert_eq!(default_name(&path("/x/alpine.tar")), "alpine");
        assert_eq!(default_name(&path("nginx-1.25.tar.gz")), "nginx-1.25");
        assert_eq!(default_name(&path("a.tgz")), "a");
        assert_eq!(default_name(&path("b.tar.zst")), "b");
        assert_eq!(default_name(&path("rootfs.img")), "rootfs.img");
        assert_eq!(default_name(&ImageArg::Stdin), "image");
        assert_eq!(sanitize_name("My Image:latest"), "my-image-latest");
        assert_eq!(sanitize_name("--x--"), "x");
        assert_eq!(sanitize_name("ünï"), "n");
        assert_eq!(sanitize_name("..."), "image");
        assert_eq!(sanitize_name(&"a".repeat(100)).len(), 63);
    }
}
