//! Reading a packed file's end (docs/FORMAT.md section 5, steps 1 to 5): the footer from
//! the last [`FOOTER_LEN`] bytes, then the config it points at, both checked. The payload
//! is left to the caller, who streams it.
use crate::config::ImageConfig;
use crate::error::FormatError;
use crate::footer::Footer;
use crate::layout::FOOTER_LEN;
use std::fmt;
use std::io::{self, Read, Seek, SeekFrom};

/// Why the end of a file could not be read as a packed file's.
#[derive(Debug)]
pub enum TailError {
    /// Reading failed; `what` says what was being done ("read this file's footer").
    Io {
        what: &'static str,
        source: io::Error,
    },
    /// The bytes were read but are not a usable footer or config.
    Format(FormatError),
}

impl fmt::Display for TailError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TailError::Io { what, source } => write!(f, "cannot {what}: {source}"),
            TailError::Format(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for TailError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TailError::Io { source, .. } => Some(source),
            TailError::Format(_) => None,
        }
    }
}

impl From<FormatError> for TailError {
    fn from(e: FormatError) -> Self {
        TailError::Format(e)
    }
}

/// Reads and checks the footer and config at the end of `file`, whatever its position:
/// the file's length is where `SeekFrom::End(0)` lands. A file shorter than a footer has
/// none ([`FormatError::NoFooter`]).
pub fn read_tail<R: Read + Seek>(file: &mut R) -> Result<(Footer, ImageConfig), TailError> {
    let footer_error = |source| TailError::Io {
        what: "read this file's footer",
        source,
    };
    let config_error = |source| TailError::Io {
        what: "read this file's config",
        source,
    };
    let len = file.seek(SeekFrom::End(0)).map_err(footer_error)?;
    if len < FOOTER_LEN as u64 {
        return Err(FormatError::NoFooter.into());
    }
    let mut tail = [0u8; FOOTER_LEN];
    file.seek(SeekFrom::Start(len - FOOTER_LEN as u64))
        .and_then(|_| file.read_exact(&mut tail))
        .map_err(footer_error)?;
    let footer = Footer::decode(&tail, len)?;
    // decode checked config_len against MAX_CONFIG_LEN: this is at most 16 MiB.
    let mut config = vec![0u8; footer.config_len as usize];
    file.seek(SeekFrom::Start(footer.config_offset()))
        .and_then(|_| file.read_exact(&mut config))
        .map_err(config_error)?;
    let config = footer.parse_config(&config)?;
    Ok((footer, config))
}

/// Reads until `buf` is full or the stream ends (retrying interrupted reads); how much
/// it read.
pub fn read_up_to(from: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match from.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::Sha256Digest;
    use crate::layout::{FLAT_FORMAT_VERSION, MIN_PAYLOAD_LEN};
    use std::error::Error;
    use std::io::Cursor;

    /// A whole packed file: stub, payload, config, footer.
    fn packed(name: &str) -> (Vec<u8>, Footer) {
        let stub = vec![0x7f; 300];
        let payload = vec![0x42; MIN_PAYLOAD_LEN as usize + 20];
        let config = ImageConfig::new(name).to_json();
        let footer = Footer {
            version: FLAT_FORMAT_VERSION,
            flags: 0,
            payload_offset: stub.len() as u64,
            payload_len: payload.len() as u64,
            config_len: config.len() as u64,
            payload_sha256: Sha256Digest::of(&payload),
            config_sha256: Sha256Digest::of(&config),
        };
        let file = [stub, payload, config, footer.encode().to_vec()].concat();
        (file, footer)
    }

    #[test]
    fn reads_footer_and_config_from_the_end() {
        let (file, footer) = packed("busybox");
        let mut cursor = Cursor::new(file);
        cursor.set_position(7);
        let (read, config) = read_tail(&mut cursor).unwrap();
        assert_eq!(read, footer);
        assert_eq!(config.name, "busybox");
    }

    #[test]
    fn a_short_file_has_no_footer() {
        for len in [0, 1, FOOTER_LEN - 1] {
            let err = read_tail(&mut Cursor::new(vec![0u8; len])).unwrap_err();
            assert!(
                matches!(err, TailError::Format(FormatError::NoFooter)),
                "{err:?}"
            );
        }
    }

    #[test]
    fn a_truncated_or_damaged_file_is_refused() {
        let (mut file, _) = packed("x");
        file.remove(0);
        let err = read_tail(&mut Cursor::new(&file)).unwrap_err();
        assert!(
            matches!(err, TailError::Format(FormatError::BadLayout(_))),
            "{err:?}"
        );
        let (mut file, footer) = packed("x");
        file[footer.config_offset() as usize + 2] ^= 0x20;
        let err = read_tail(&mut Cursor::new(&file)).unwrap_err();
        assert!(
            matches!(err, TailError::Format(FormatError::ConfigDigest)),
            "{err:?}"
        );
        assert_eq!(err.to_string(), FormatError::ConfigDigest.to_string());
        assert!(err.source().is_none());
    }

    /// A file whose reads starting at `fail_at` fail.
    struct Failing {
        inner: Cursor<Vec<u8>>,
        fail_at: u64,
    }

    impl Read for Failing {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.inner.position() == self.fail_at {
                return Err(io::Error::other("disk on fire"));
            }
            self.inner.read(buf)
        }
    }

    impl Seek for Failing {
        fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
            self.inner.seek(pos)
        }
    }

    #[test]
    fn read_errors_say_what_was_being_read() {
        let (file, footer) = packed("x");
        let footer_at = (file.len() - FOOTER_LEN) as u64;
        let mut failing = Failing {
            inner: Cursor::new(file.clone()),
            fail_at: footer_at,
        };
        let err = read_tail(&mut failing).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot read this file's footer: disk on fire"
        );
        assert_eq!(err.source().unwrap().to_string(), "disk on fire");
        let mut failing = Failing {
            inner: Cursor::new(file),
            fail_at: footer.config_offset(),
        };
        let err = read_tail(&mut failing).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot read this file's config: disk on fire"
        );
    }
}
