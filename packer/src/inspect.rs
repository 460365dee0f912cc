//! `inspect` and `extract`: read a packed file back. They use the same checks as the stub
//! (binctr-format), so a file they accept is one the stub accepts, and check that its
//! stub part is a binctr stub (a packed file is something to run). The file is never
//! waited on (a FIFO is refused), and what its config says is shown escaped
//! (`util::printable`); `--json` shows it exactly, as JSON escapes.
use crate::image::{flatten_packed, ImageError, PackedLayers};
use crate::output::{Output, OutputError};
use crate::stub::{self, Cpu, Opened, MAX_STUB_LEN};
use crate::util::{os_error, printable, shown, BUF_SIZE};
use binctr_format::{read_tail, Footer, FormatError, HashingReader, ImageConfig, TailError};
use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub enum InspectError {
    Open {
        path: PathBuf,
        source: io::Error,
    },
    /// A FIFO, a device, a directory.
    NotRegular {
        path: PathBuf,
        what: &'static str,
    },
    /// A valid footer after something that is no binctr stub.
    Stub {
        path: PathBuf,
        len: u64,
        why: String,
    },
    Format {
        path: PathBuf,
        source: FormatError,
    },
    PayloadDigest {
        path: PathBuf,
    },
    Decompress {
        path: PathBuf,
        source: io::Error,
    },
    Output(OutputError),
    Stdout(io::Error),
    /// A format 2 layer that does not read back.
    Layers(ImageError),
}

impl fmt::Display for InspectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InspectError::Open { path, source } => {
                write!(f, "cannot read {}: {}", path.display(), os_error(source))
            }
            InspectError::NotRegular { path, what } => write!(
                f,
                "{} is {what}, not a packed binctr file",
                path.display()
            ),
            InspectError::Stub { path, len, why } => write!(
                f,
                "{} is not a packed binctr file: its first {len} bytes, where the stub goes, are not a binctr stub ({why})",
                path.display()
            ),
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
            InspectError::Layers(e) => e.fmt(f),
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
    /// The stub's CPU.
    pub cpu: Cpu,
}

pub fn open(path: &Path) -> Result<Packed, InspectError> {
    let mut file = stub::open_regular(path).map_err(|e| match e {
        Opened::Io(source) => InspectError::Open {
            path: path.to_path_buf(),
            source,
        },
        Opened::NotRegular(what) => InspectError::NotRegular {
            path: path.to_path_buf(),
            what,
        },
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
    let cpu = check_stub(&file, path, footer.payload_offset)?;
    Ok(Packed {
        file,
        path: path.to_path_buf(),
        footer,
        config,
        cpu,
    })
}

/// Checks the first `len` bytes, where the stub goes: a static ELF with the marker.
fn check_stub(file: &File, path: &Path, len: u64) -> Result<Cpu, InspectError> {
    let mut bytes = Vec::new();
    let mut reader = file;
    reader
        .seek(SeekFrom::Start(0))
        .and_then(|_| {
            reader
                .take(len.min(MAX_STUB_LEN + 1))
                .read_to_end(&mut bytes)
        })
        .map_err(|source| InspectError::Open {
            path: path.to_path_buf(),
            source,
        })?;
    stub::check_part(&bytes).map_err(|why| InspectError::Stub {
        path: path.to_path_buf(),
        len,
        why,
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
            "stub_cpu": packed.cpu.name(),
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
    line("name", shown(&c.name));
    line("reference", shown(&c.reference));
    line("manifest", shown(&c.manifest_digest));
    line("created", shown(&c.created));
    line("packer version", shown(&c.packer_version));
    line("format version", f.version.to_string());
    line(
        "stub",
        format!(
            "{} bytes, {} (runs {} images)",
            f.payload_offset,
            packed.cpu,
            packed.cpu.platform()
        ),
    );
    line(
        "payload",
        format!("{} bytes lz4, {}", f.payload_len, f.payload_sha256),
    );
    line(
        "config",
        format!("{} bytes, {}", f.config_len, f.config_sha256),
    );
    if !c.layers.is_empty() {
        line("layers", c.layers.len().to_string());
    }
    for (n, layer) in c.layers.iter().enumerate() {
        line(
            &format!("  layer {}", n + 1),
            format!(
                "{}, {} bytes lz4, {} bytes tar",
                shown(&layer.digest),
                layer.length,
                layer.size
            ),
        );
        line("    diff_id", shown(&layer.diff_id));
    }
    line("entrypoint", list(&c.entrypoint));
    line("cmd", list(&c.cmd));
    line("env", list(&c.env));
    line("working dir", shown(&c.working_dir));
    line("user", shown(&c.user));
    line("exposed ports", words(c.exposed_ports.iter()));
    line("volumes", words(c.volumes.iter()));
    line(
        "labels",
        words(c.labels.iter().map(|(k, v)| format!("{k}={v}"))),
    );
    line("stop signal", shown(&c.stop_signal));
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

/// `["a","b"]`: each item shown escaped, between quotes (which it escapes).
fn list(items: &[String]) -> String {
    if items.is_empty() {
        return String::new();
    }
    let items: Vec<String> = items.iter().map(|i| format!("\"{}\"", shown(i))).collect();
    format!("[{}]", items.join(","))
}

/// Items shown escaped, separated by spaces.
fn words<S: AsRef<str>>(items: impl Iterator<Item = S>) -> String {
    let items: Vec<String> = items.map(|i| printable(i.as_ref().as_bytes())).collect();
    items.join(" ")
}

/// Reads the payload bytes and checks them against the footer's sha256, and each
/// layer's frame against its own (no decompression), so that `inspect` also tells a
/// damaged payload.
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
    for layer in &packed.config.layers {
        let mut frame = HashingReader::new((&mut hashed).take(layer.length));
        io::copy(&mut frame, &mut io::sink()).map_err(read_error)?;
        if Some(frame.digest()) != layer.segment_sha256() {
            return Err(InspectError::PayloadDigest {
                path: packed.path.clone(),
            });
        }
    }
    io::copy(&mut hashed, &mut io::sink()).map_err(read_error)?;
    let (digest, n) = hashed.finish();
    if n != packed.footer.payload_len || digest != packed.footer.payload_sha256 {
        return Err(InspectError::PayloadDigest {
            path: packed.path.clone(),
        });
    }
    Ok(())
}

/// Writes the root filesystem of a format 2 file, its layers flattened (each checked
/// against its sha256 and digest as it is read), to `out` or standard output.
fn extract_layers(packed: Packed, out: Option<&Path>) -> Result<(), InspectError> {
    verify_payload(&packed)?;
    let layers = PackedLayers {
        file: &packed.file,
        name: packed.path.display().to_string(),
        footer: &packed.footer,
        layers: &packed.config.layers,
    };
    let output = match out {
        // A plain file, as tar makes one: 0666 less the umask.
        Some(dest) => Some(Output::create(dest, 0o666).map_err(InspectError::Output)?),
        None => None,
    };
    let written = match &output {
        Some(output) => {
            let mut w = BufWriter::with_capacity(BUF_SIZE, output.file());
            flatten_packed(&layers, &mut w).and_then(|_| w.flush().map_err(ImageError::Write))
        }
        None => {
            let mut w = BufWriter::with_capacity(BUF_SIZE, io::stdout().lock());
            flatten_packed(&layers, &mut w).and_then(|_| w.flush().map_err(ImageError::Write))
        }
    };
    match (written, &output) {
        (Ok(()), _) => {}
        (Err(ImageError::Write(e)), Some(output)) => {
            return Err(InspectError::Output(output.write_error(e)))
        }
        (Err(ImageError::Write(e)), None) => return Err(InspectError::Stdout(e)),
        (Err(e), _) => return Err(InspectError::Layers(e)),
    }
    if let Some(output) = output {
        output.commit().map_err(InspectError::Output)?;
    }
    Ok(())
}

/// Decompresses the payload (the rootfs tar) to `out`, or to standard output for `-`,
/// checking its sha256 on the way; a file output is committed only if it matches. A
/// format 2 payload's layers are flattened.
pub fn extract(packed: Packed, out: Option<&Path>) -> Result<(), InspectError> {
    if !packed.config.layers.is_empty() {
        return extract_layers(packed, out);
    }
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
        // A plain file, as tar makes one: 0666 less the umask.
        Some(dest) => Some(Output::create(dest, 0o666).map_err(InspectError::Output)?),
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
