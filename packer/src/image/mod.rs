//! The packer's inputs. Every reader produces the same thing: one flattened tar stream
//! written into the payload. A tar (plain or gzip, told apart by content) is passed
//! through entry by entry; a directory is walked into a deterministic tar.
mod dir;
mod tar;

use crate::progress::{Counting, Progress};
use crate::util::os_error;
use flate2::bufread::MultiGzDecoder;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

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

#[derive(Debug)]
pub enum ImageError {
    Open {
        image: String,
        source: io::Error,
    },
    NotATar {
        image: String,
    },
    /// Compressed with something other than gzip.
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
    /// Writing the tar stream to the payload failed: an output error.
    Write(io::Error),
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
                "{image} is {format}-compressed: decompress it first ({tool}), binctr-pack reads plain or gzip tar"
            ),
            ImageError::Read { image, source } => {
                write!(f, "cannot read {image}: {}", os_error(source))
            }
            ImageError::Damaged { image, why } => {
                write!(f, "{image} is a damaged tar archive ({why})")
            }
            ImageError::ReadFile { path, source } => {
                write!(f, "cannot read {}: {}", path.display(), os_error(source))
            }
            ImageError::Write(source) => write!(f, "{}", os_error(source)),
        }
    }
}

impl std::error::Error for ImageError {}

/// An opened input, not read yet.
pub struct Input {
    source: Source,
    /// The input's size when known: a regular file's length.
    pub total: Option<u64>,
    image: String,
}

enum Source {
    Stdin,
    File(File),
    Dir(PathBuf),
}

/// What was written.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub entries: u64,
}

/// Opens IMAGE: a directory, a file, or standard input.
pub fn open(arg: &ImageArg) -> Result<Input, ImageError> {
    let image = arg.to_string();
    let open_error = |source| ImageError::Open {
        image: image.clone(),
        source,
    };
    let (source, total) = match arg {
        // A tar typed at a terminal is a mistake, not an input: say so instead of waiting.
        ImageArg::Stdin if io::stdin().is_terminal() => {
            return Err(open_error(io::Error::other(
                "it is a terminal: pipe a tar into binctr-pack, e.g. podman export C | binctr-pack - -o C",
            )))
        }
        ImageArg::Stdin => (Source::Stdin, None),
        ImageArg::Path(path) => {
            let meta = fs::metadata(path).map_err(open_error)?;
            if meta.is_dir() {
                // Fail now, not halfway through the walk, when the top is unreadable.
                fs::read_dir(path).map_err(open_error)?;
                (Source::Dir(path.clone()), None)
            } else {
                let file = File::open(path).map_err(open_error)?;
                (Source::File(file), meta.is_file().then_some(meta.len()))
            }
        }
    };
    Ok(Input {
        source,
        total,
        image,
    })
}

impl Input {
    /// Writes the image as one tar stream into `out`.
    pub fn write_tar<W: Write>(
        self,
        progress: &Progress,
        out: &mut W,
    ) -> Result<Stats, ImageError> {
        match self.source {
            Source::Dir(dir) => dir::write_tar(&dir, progress, out),
            Source::Stdin => copy_stream(io::stdin().lock(), &self.image, progress, out),
            Source::File(file) => copy_stream(file, &self.image, progress, out),
        }
    }
}

/// A tar stream from a file or a pipe: gzip is recognized by its magic, never by name.
fn copy_stream<R: Read, W: Write>(
    raw: R,
    image: &str,
    progress: &Progress,
    out: &mut W,
) -> Result<Stats, ImageError> {
    let mut input = BufReader::with_capacity(BUF_SIZE, Counting::new(raw, progress));
    let magic = peek(&mut input).map_err(|source| ImageError::Read {
        image: image.to_string(),
        source,
    })?;
    if magic.starts_with(&[0x1f, 0x8b]) {
        let gz = BufReader::with_capacity(BUF_SIZE, MultiGzDecoder::new(input));
        return tar::copy(gz, image, out);
    }
    let compressed = |format, tool| ImageError::Compressed {
        image: image.to_string(),
        format,
        tool,
    };
    if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        return Err(compressed("zstd", "zstd -d"));
    }
    if magic.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        return Err(compressed("xz", "xz -d"));
    }
    if magic.starts_with(b"BZh") {
        return Err(compressed("bzip2", "bzip2 -d"));
    }
    tar::copy(input, image, out)
}

/// The first bytes of the input, without consuming them (a pipe may deliver them in
/// small pieces).
fn peek<R: Read>(input: &mut BufReader<R>) -> io::Result<Vec<u8>> {
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
