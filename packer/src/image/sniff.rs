//! What an input is, told by its content and never by its name: its compression by the
//! magic bytes (gzip and zstd are undone, xz and bzip2 refused with the command that
//! undoes them), and its size when it is a regular file.
use super::error::ImageError;
use super::types::ImageArg;
use super::zstd::ZstdReader;
use crate::util::BUF_SIZE;
use flate2::bufread::MultiGzDecoder;
use std::fs;
use std::io::{self, BufRead, BufReader};

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

pub use binctr_format::read_up_to;

/// A compression told by its magic bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Zstd,
    Xz,
    Bzip2,
}

impl Compression {
    /// The compression of a stream that starts with `magic`; `None` for anything else.
    pub fn of_magic(magic: &[u8]) -> Option<Compression> {
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
}

/// The stream decompressed when it is gzip or zstd (recognized by magic, never by name).
pub fn decompress<'p, R: BufRead + 'p>(
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
    Ok(match Compression::of_magic(&magic) {
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

/// The first bytes of the input, without consuming them (a pipe may deliver them in
/// small pieces).
fn peek<R: BufRead>(input: &mut R) -> io::Result<Vec<u8>> {
    let buf = input.fill_buf()?;
    Ok(buf[..buf.len().min(8)].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn compression_is_told_by_magic() {
        use Compression::*;
        assert_eq!(Compression::of_magic(&[0x1f, 0x8b, 8, 0]), Some(Gzip));
        assert_eq!(Compression::of_magic(&[0x28, 0xb5, 0x2f, 0xfd]), Some(Zstd));
        assert_eq!(Compression::of_magic(b"\xfd7zXZ\0"), Some(Xz));
        assert_eq!(Compression::of_magic(b"BZh91AY"), Some(Bzip2));
        assert_eq!(Compression::of_magic(b"bin/\0\0\0\0"), None);
        assert_eq!(Compression::of_magic(&[0x1f]), None);
    }

    #[test]
    fn gzip_is_undone_and_xz_refused() {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(b"tar bytes").unwrap();
        let gz = enc.finish().unwrap();
        let mut out = String::new();
        decompress(&gz[..], "img")
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, "tar bytes");
        let err = decompress(&b"\xfd7zXZ\0rest"[..], "img").err().unwrap();
        assert_eq!(
            err.to_string(),
            "img is xz-compressed: decompress it first (xz -d), binctr-pack reads plain, gzip or zstd tar"
        );
    }
}
