//! `inspect` and `extract`: read a packed file back. They use the same checks as the stub
//! (binctr-format), so a file they accept is one the stub accepts.
use crate::output::{Output, OutputError};
use crate::util::{os_error, BUF_SIZE};
use binctr_format::{read_tail, Footer, FormatError, HashingReader, ImageConfig, TailError};
use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub enum InspectError {
    Open { path: PathBuf, source: io::Error },
    Format { path: PathBuf, source: FormatError },
    PayloadDigest { path: PathBuf },
    Decompress { path: PathBuf, source: io::Error },
    Output(OutputError),
    Stdout(io::Error),
}

impl fmt::Display for InspectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InspectError::Open { path, source } => {
                write!(f, "cannot read {}: {}", path.display(), os_error(source))
            }
            InspectError::Format {
                path,
                source: FormatError::NoFooter,
            } => write!(
                f,
                "{} is not a packed binctr file (no footer: stripped, truncated or never packed)",
                path.display()
            ),
            InspectError::Format { path, source } => write!(f, "{}: {source}", path.display()),
            InspectError::PayloadDigest { path } => write!(
                f,
                "{}: damaged packed file: the payload does not match its sha256",
                path.display()
            ),
            InspectError::Decompress { path, source } => write!(
                f,
                "{}: damaged packed file: cannot decompress the payload ({})",
                path.display(),
                os_error(source)
            ),
            InspectError::Output(e) => e.fmt(f),
            InspectError::Stdout(e) => {
                write!(f, "cannot write to standard output: {}", os_error(e))
            }
        }
    }
}

impl std::error::Error for InspectError {}

/// A packed file whose footer and config have been checked.
pub struct Packed {
    pub file: File,
    pub path: PathBuf,
    pub footer: Footer,
    pub config: ImageConfig,
}

pub fn open(path: &Path) -> Result<Packed, InspectError> {
    let mut file = File::open(path).map_err(|source| InspectError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let (footer, config) = read_tail(&mut file).map_err(|e| match e {
        TailError::Io { source, .. } => InspectError::Open {
            path: path.to_path_buf(),
            source,
        },
        TailError::Format(source) => InspectError::Format {
            path: path.to_path_buf(),
            source,
        },
    })?;
    Ok(Packed {
        file,
        path: path.to_path_buf(),
        footer,
        config,
    })
}

/// The footer and config, for people (`inspect`) or programs (`inspect --json`).
pub fn describe(packed: &Packed, json: bool) -> String {
    let f = &packed.footer;
    if json {
        let value = serde_json::json!({
            "file": packed.path.display().to_string(),
            "format_version": f.version,
            "stub_len": f.payload_offset,
            "payload_offset": f.payload_offset,
            "payload_len": f.payload_len,
            "payload_sha256": f.payload_sha256.to_string(),
            "config_len": f.config_len,
            "config_sha256": f.config_sha256.to_string(),
            "config": packed.config,
        });
        return format!("{value:#}\n");
    }
    let c = &packed.config;
    let mut out = String::new();
    let mut line = |key: &str, value: String| {
        if !value.is_empty() {
            out.push_str(&format!("{key:<16}{value}\n"));
        }
    };
    line("name", c.name.clone());
    line("reference", c.reference.clone());
    line("manifest", c.manifest_digest.clone());
    line("created", c.created.clone());
    line("packer version", c.packer_version.clone());
    line("format version", f.version.to_string());
    line("stub", format!("{} bytes", f.payload_offset));
    line(
        "payload",
        format!("{} bytes lz4, {}", f.payload_len, f.payload_sha256),
    );
    line(
        "config",
        format!("{} bytes, {}", f.config_len, f.config_sha256),
    );
    line("entrypoint", join(&c.entrypoint));
    line("cmd", join(&c.cmd));
    line("env", join(&c.env));
    line("working dir", c.working_dir.clone());
    line("user", c.user.clone());
    line("exposed ports", c.exposed_ports.join(" "));
    line("volumes", c.volumes.join(" "));
    line(
        "labels",
        c.labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" "),
    );
    line("stop signal", c.stop_signal.clone());
    line(
        "read-only",
        if c.read_only {
            "yes".into()
        } else {
            String::new()
        },
    );
    out
}

fn join(items: &[String]) -> String {
    serde_json::to_string(items)
        .ok()
        .filter(|_| !items.is_empty())
        .unwrap_or_default()
}

/// Reads the payload bytes and checks them against the footer's sha256 (no
/// decompression), so that `inspect` also tells a damaged payload.
pub fn verify_payload(packed: &Packed) -> Result<(), InspectError> {
    let read_error = |source| InspectError::Open {
        path: packed.path.clone(),
        source,
    };
    let mut file = &packed.file;
    file.seek(SeekFrom::Start(packed.footer.payload_offset))
        .map_err(read_error)?;
    let mut hashed = HashingReader::new(BufReader::with_capacity(
        BUF_SIZE,
        file.take(packed.footer.payload_len),
    ));
    io::copy(&mut hashed, &mut io::sink()).map_err(read_error)?;
    let (digest, n) = hashed.finish();
    if n != packed.footer.payload_len || digest != packed.footer.payload_sha256 {
        return Err(InspectError::PayloadDigest {
            path: packed.path.clone(),
        });
    }
    Ok(())
}

/// Decompresses the payload (the rootfs tar) to `out`, or to standard output for `-`,
/// checking its sha256 on the way; a file output is committed only if it matches.
pub fn extract(packed: Packed, out: Option<&Path>) -> Result<(), InspectError> {
    let Packed {
        mut file,
        path,
        footer,
        ..
    } = packed;
    file.seek(SeekFrom::Start(footer.payload_offset))
        .map_err(|source| InspectError::Open {
            path: path.clone(),
            source,
        })?;
    let mut hashed = HashingReader::new(BufReader::with_capacity(
        BUF_SIZE,
        file.take(footer.payload_len),
    ));
    let mut decoder = lz4_flex::frame::FrameDecoder::new(&mut hashed);
    let output = match out {
        Some(dest) => Some(Output::create(dest, 0o644).map_err(InspectError::Output)?),
        None => None,
    };
    let copied = match &output {
        Some(output) => {
            let mut w = BufWriter::with_capacity(BUF_SIZE, output.file());
            copy(&mut decoder, &mut w).and_then(|()| w.flush().map_err(Side::Write))
        }
        None => copy(&mut decoder, &mut io::stdout().lock()),
    };
    let write_error = |e: io::Error| match &output {
        Some(output) => InspectError::Output(output.write_error(e)),
        None => InspectError::Stdout(e),
    };
    match copied {
        Ok(()) => {}
        Err(Side::Read(source)) => {
            return Err(InspectError::Decompress { path, source });
        }
        Err(Side::Write(e)) => return Err(write_error(e)),
    }
    // Whatever lz4 left unread of the payload still counts for the digest.
    io::copy(&mut hashed, &mut io::sink()).map_err(|source| InspectError::Open {
        path: path.clone(),
        source,
    })?;
    if hashed.digest() != footer.payload_sha256 {
        return Err(InspectError::PayloadDigest { path });
    }
    if let Some(output) = output {
        output.commit().map_err(InspectError::Output)?;
    }
    Ok(())
}

enum Side {
    Read(io::Error),
    Write(io::Error),
}

fn copy<R: Read, W: Write>(input: &mut R, out: &mut W) -> Result<(), Side> {
    let mut buf = vec![0u8; BUF_SIZE];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Side::Read(e)),
        };
        out.write_all(&buf[..n]).map_err(Side::Write)?;
    }
}
