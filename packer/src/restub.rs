//! `binctr-pack restub FILE --stub NEW -o OUT`: the same payload and config on another
//! stub. Nothing is decompressed or recompressed: the payload and config bytes are
//! copied (the payload's sha256 checked on the way) and only the footer changes, by its
//! `payload_offset`. The payload digest, and so the stub's cache entry, stays the same.
use crate::inspect::{self, InspectError};
use crate::output::{Output, OutputError};
use crate::stub::{self, Cpu, StubError};
use crate::util::{os_error, BUF_SIZE};
use binctr_format::{Footer, HashingReader, Sha256Digest};
use std::fmt;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub enum RestubError {
    Packed(InspectError),
    Stub(StubError),
    Read {
        path: PathBuf,
        source: io::Error,
    },
    PayloadDigest {
        path: PathBuf,
    },
    Output(OutputError),
    /// The new stub is for another CPU than the one the image was packed for.
    OtherCpu {
        file: PathBuf,
        packed: Cpu,
        stub: PathBuf,
        cpu: Cpu,
    },
}

impl fmt::Display for RestubError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestubError::Packed(e) => e.fmt(f),
            RestubError::Stub(e) => e.fmt(f),
            RestubError::Read { path, source } => {
                write!(f, "cannot read {}: {}", path.display(), os_error(source))
            }
            RestubError::PayloadDigest { path } => write!(
                f,
                "{}: damaged packed file: the payload does not match its sha256",
                path.display()
            ),
            RestubError::Output(e) => e.fmt(f),
            RestubError::OtherCpu {
                file,
                packed,
                stub,
                cpu,
            } => write!(
                f,
                "{} holds an image for {} (it was packed onto an {packed} stub), but {} is an {cpu} stub: give an {packed} stub",
                file.display(),
                packed.platform(),
                stub.display()
            ),
        }
    }
}

impl std::error::Error for RestubError {}

pub fn restub(file: &Path, stub_path: &Path, out: &Path) -> Result<Footer, RestubError> {
    let packed = inspect::open(file).map_err(RestubError::Packed)?;
    let stub = stub::load(Some(stub_path)).map_err(RestubError::Stub)?;
    // The packer chose the stub by the image's CPU: another CPU's stub cannot run it.
    if stub.cpu != packed.cpu {
        return Err(RestubError::OtherCpu {
            file: file.to_path_buf(),
            packed: packed.cpu,
            stub: stub_path.to_path_buf(),
            cpu: stub.cpu,
        });
    }
    let old = packed.footer;
    let read_error = |source| RestubError::Read {
        path: file.to_path_buf(),
        source,
    };
    let mut src = packed.file;
    src.seek(SeekFrom::Start(old.payload_offset))
        .map_err(read_error)?;
    let mut src = BufReader::with_capacity(BUF_SIZE, src);

    // An executable, as cc makes one: 0777 less the umask.
    let output = Output::create(out, 0o777).map_err(RestubError::Output)?;
    let write_error = |e| RestubError::Output(output.write_error(e));
    let mut w = BufWriter::with_capacity(BUF_SIZE, output.file());
    w.write_all(&stub.bytes).map_err(write_error)?;
    let mut payload = HashingReader::new((&mut src).take(old.payload_len));
    let mut buf = vec![0u8; BUF_SIZE];
    loop {
        let n = payload.read(&mut buf).map_err(read_error)?;
        if n == 0 {
            break;
        }
        w.write_all(&buf[..n]).map_err(write_error)?;
    }
    let (digest, copied) = payload.finish();
    if copied != old.payload_len {
        return Err(read_error(io::ErrorKind::UnexpectedEof.into()));
    }
    if digest != old.payload_sha256 {
        return Err(RestubError::PayloadDigest {
            path: file.to_path_buf(),
        });
    }
    // The config was checked against its digest by inspect::open; it is copied as is.
    let mut config = vec![0u8; old.config_len as usize];
    src.read_exact(&mut config).map_err(read_error)?;
    if Sha256Digest::of(&config) != old.config_sha256 {
        return Err(RestubError::Packed(InspectError::Format {
            path: file.to_path_buf(),
            source: binctr_format::FormatError::ConfigDigest,
        }));
    }
    w.write_all(&config).map_err(write_error)?;
    let footer = Footer {
        payload_offset: stub.bytes.len() as u64,
        ..old
    };
    w.write_all(&footer.encode()).map_err(write_error)?;
    w.flush().map_err(write_error)?;
    drop(w);
    output.commit().map_err(RestubError::Output)?;
    Ok(footer)
}
