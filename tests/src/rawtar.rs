//! Hostile inputs written by hand: a tar stream built header by header ([`RawTar`]:
//! GNU headers, long names, PAX records, any name, size or type, `..` included, which
//! the tar crate's Builder refuses), and packed files assembled from the stub, an lz4
//! frame (the `lz4` command), a config and a footer (docs/FORMAT.md) when the packer
//! refuses the tar ([`pack_tar`], [`assemble`]), so that the stub's reading is what is
//! tested either way.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::thread;

use crate::{Env, Test};

pub const BLOCK: usize = 512;

/// A tar stream built header by header, with whatever names, sizes and types a test
/// wants (GNU headers, GNU long names, PAX records).
#[derive(Default)]
pub struct RawTar {
    pub bytes: Vec<u8>,
}

impl RawTar {
    pub fn new() -> RawTar {
        RawTar { bytes: Vec::new() }
    }

    /// Starts with every entry of the example busybox image (without its end blocks),
    /// so a container can run and show where the hostile entries landed.
    pub fn on_busybox() -> RawTar {
        RawTar {
            bytes: busybox_entries().to_vec(),
        }
    }

    /// One 512-byte GNU header. `name` and `link` must fit their 100-byte fields.
    pub fn header(
        &mut self,
        name: &[u8],
        kind: u8,
        mode: u32,
        size: u64,
        link: &[u8],
        dev: (u32, u32),
    ) {
        assert!(
            name.len() <= 100,
            "name too long for a header: use long_name"
        );
        assert!(
            link.len() <= 100,
            "link too long for a header: use long_link"
        );
        let mut h = [0u8; BLOCK];
        h[..name.len()].copy_from_slice(name);
        octal(&mut h[100..108], u64::from(mode));
        octal(&mut h[108..116], 0);
        octal(&mut h[116..124], 0);
        if size < 0o77777777777 + 1 {
            octal(&mut h[124..136], size);
        } else {
            // GNU base-256: the high bit of the first byte, then the number big-endian.
            h[124] = 0x80;
            h[128..136].copy_from_slice(&size.to_be_bytes());
        }
        octal(&mut h[136..148], 1_700_000_000);
        h[156] = kind;
        h[157..157 + link.len()].copy_from_slice(link);
        h[257..265].copy_from_slice(b"ustar  \0");
        octal(&mut h[329..337], u64::from(dev.0));
        octal(&mut h[337..345], u64::from(dev.1));
        h[148..156].fill(b' ');
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        self.bytes.extend_from_slice(&h);
    }

    /// Data, padded to whole blocks.
    pub fn data(&mut self, data: &[u8]) {
        self.bytes.extend_from_slice(data);
        let pad = (BLOCK - data.len() % BLOCK) % BLOCK;
        self.bytes.extend_from_slice(&vec![0u8; pad]);
    }

    pub fn file(&mut self, name: &[u8], content: &[u8]) -> &mut RawTar {
        self.header(name, b'0', 0o644, content.len() as u64, b"", (0, 0));
        self.data(content);
        self
    }

    pub fn dir(&mut self, name: &[u8], mode: u32) -> &mut RawTar {
        self.header(name, b'5', mode, 0, b"", (0, 0));
        self
    }

    pub fn symlink(&mut self, name: &[u8], target: &[u8]) -> &mut RawTar {
        self.header(name, b'2', 0o777, 0, target, (0, 0));
        self
    }

    pub fn hardlink(&mut self, name: &[u8], target: &[u8]) -> &mut RawTar {
        self.header(name, b'1', 0o644, 0, target, (0, 0));
        self
    }

    pub fn node(&mut self, name: &[u8], kind: u8, dev: (u32, u32)) -> &mut RawTar {
        self.header(name, kind, 0o666, 0, b"", dev);
        self
    }

    /// A GNU `L` entry: the next header's name is `name` (bytes as given, NULs included).
    pub fn long_name(&mut self, name: &[u8]) -> &mut RawTar {
        let mut data = name.to_vec();
        data.push(0);
        self.header(
            b"././@LongLink",
            b'L',
            0o644,
            data.len() as u64,
            b"",
            (0, 0),
        );
        self.data(&data);
        self
    }

    /// A GNU `K` entry: the next header's link target is `target`.
    pub fn long_link(&mut self, target: &[u8]) -> &mut RawTar {
        let mut data = target.to_vec();
        data.push(0);
        self.header(
            b"././@LongLink",
            b'K',
            0o644,
            data.len() as u64,
            b"",
            (0, 0),
        );
        self.data(&data);
        self
    }

    /// A PAX `x` entry with these records, for the next header.
    pub fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut RawTar {
        let mut data = Vec::new();
        for (key, value) in records {
            // "LEN KEY=VALUE\n", LEN counting itself.
            let rest = key.len() + value.len() + 3;
            let mut len = rest + 1;
            while len != rest + len.to_string().len() {
                len = rest + len.to_string().len();
            }
            data.extend_from_slice(format!("{len} {key}=").as_bytes());
            data.extend_from_slice(value);
            data.push(b'\n');
        }
        self.header(b"PaxHeaders/x", b'x', 0o644, data.len() as u64, b"", (0, 0));
        self.data(&data);
        self
    }

    /// A FIFO (named pipe) entry.
    pub fn fifo(&mut self, name: &[u8]) -> &mut RawTar {
        self.node(name, b'6', (0, 0))
    }

    /// The archive with its two end blocks.
    pub fn finish(&self) -> Vec<u8> {
        let mut out = self.bytes.clone();
        out.extend_from_slice(&[0u8; 2 * BLOCK]);
        out
    }
}

fn octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    assert!(
        text.len() == digits,
        "{value} does not fit {digits} octal digits"
    );
    field[..digits].copy_from_slice(text.as_bytes());
    field[digits] = 0;
}

pub fn header_size(h: &[u8]) -> u64 {
    let field = &h[124..136];
    if field[0] & 0x80 != 0 {
        return field[4..].iter().fold(0, |n, &b| (n << 8) | u64::from(b));
    }
    let text: String = field
        .iter()
        .take_while(|&&b| b != 0)
        .map(|&b| b as char)
        .collect();
    u64::from_str_radix(text.trim(), 8).expect("octal size")
}

/// The entries of build/busybox.tar, without the end-of-archive blocks.
pub fn busybox_entries() -> &'static [u8] {
    static ENTRIES: OnceLock<Vec<u8>> = OnceLock::new();
    ENTRIES.get_or_init(|| {
        let tar = fs::read(Env::get().fixture("busybox.tar")).expect("read busybox.tar");
        let mut pos = 0;
        while pos + BLOCK <= tar.len() && tar[pos..pos + BLOCK].iter().any(|&b| b != 0) {
            let size = header_size(&tar[pos..pos + BLOCK]) as usize;
            pos += BLOCK + size.div_ceil(BLOCK) * BLOCK;
        }
        tar[..pos].to_vec()
    })
}

pub const FOOTER_LEN: usize = 112;

/// Runs a host command with `input` on stdin and returns its stdout; fails the test when
/// it fails.
pub fn filter(program: &str, args: &[&str], input: &[u8]) -> Vec<u8> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    let writer = thread::spawn(move || stdin.write_all(&input));
    let mut out = Vec::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_end(&mut out)
        .expect("read stdout");
    let status = child.wait().expect("wait");
    let mut err = String::new();
    let _ = child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err);
    writer.join().expect("writer").expect("write stdin");
    assert!(status.success(), "{program} {args:?} failed: {err}");
    out
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    let out = String::from_utf8(filter("sha256sum", &[], data)).expect("sha256sum output");
    let hex = out.split_whitespace().next().expect("a digest");
    let mut digest = [0u8; 32];
    for (i, byte) in digest.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex");
    }
    digest
}

/// An LZ4 frame of `data`, as the lz4 command writes it.
pub fn lz4_frame(data: &[u8]) -> Vec<u8> {
    lz4_frame_with(&[], data)
}

/// An LZ4 frame of `data`, as the lz4 command writes it with these options (block
/// size, dependency, checksums).
/// From a file, so that `--content-size` has a size to write.
pub fn lz4_frame_with(options: &[&str], data: &[u8]) -> Vec<u8> {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let input = std::env::temp_dir().join(format!("binctr-lz4-{}-{n}", std::process::id()));
    fs::write(&input, data).expect("write lz4's input");
    let path = input.to_str().expect("a UTF-8 temporary path");
    let mut args = vec!["-q", "-z", "-c"];
    args.extend_from_slice(options);
    args.push(path);
    let frame = filter("lz4", &args, b"");
    let _ = fs::remove_file(&input);
    frame
}

/// The footer fields (docs/FORMAT.md section 4).
#[derive(Clone, Debug)]
pub struct Footer {
    pub version: u32,
    pub payload_offset: u64,
    pub payload_len: u64,
    pub config_len: u64,
    pub payload_sha256: [u8; 32],
    pub config_sha256: [u8; 32],
}

impl Footer {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(FOOTER_LEN);
        out.extend_from_slice(b"BINCTR\x00\x01");
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&self.payload_offset.to_le_bytes());
        out.extend_from_slice(&self.payload_len.to_le_bytes());
        out.extend_from_slice(&self.config_len.to_le_bytes());
        out.extend_from_slice(&self.payload_sha256);
        out.extend_from_slice(&self.config_sha256);
        out.extend_from_slice(b"\x01\x00RTCNIB");
        assert_eq!(out.len(), FOOTER_LEN);
        out
    }

    pub fn decode(file: &[u8]) -> Footer {
        let f = &file[file.len() - FOOTER_LEN..];
        assert_eq!(&f[..8], b"BINCTR\x00\x01", "not a packed file");
        let u64_at = |i: usize| u64::from_le_bytes(f[i..i + 8].try_into().unwrap());
        Footer {
            version: u32::from_le_bytes(f[8..12].try_into().unwrap()),
            payload_offset: u64_at(16),
            payload_len: u64_at(24),
            config_len: u64_at(32),
            payload_sha256: f[40..72].try_into().unwrap(),
            config_sha256: f[72..104].try_into().unwrap(),
        }
    }
}

/// The parts of a packed file.
pub struct Parts {
    pub stub: Vec<u8>,
    pub payload: Vec<u8>,
    pub config: Vec<u8>,
    pub footer: Footer,
}

impl Parts {
    pub fn of(file: &[u8]) -> Parts {
        let footer = Footer::decode(file);
        let p = footer.payload_offset as usize;
        let c = p + footer.payload_len as usize;
        Parts {
            stub: file[..p].to_vec(),
            payload: file[p..c].to_vec(),
            config: file[c..c + footer.config_len as usize].to_vec(),
            footer,
        }
    }

    /// Stub, payload, config and a footer that describes them (with their digests).
    pub fn assemble(&self, version: u32) -> Vec<u8> {
        let footer = Footer {
            version,
            payload_offset: self.stub.len() as u64,
            payload_len: self.payload.len() as u64,
            config_len: self.config.len() as u64,
            payload_sha256: sha256(&self.payload),
            config_sha256: sha256(&self.config),
        };
        [
            &self.stub[..],
            &self.payload,
            &self.config,
            &footer.encode(),
        ]
        .concat()
    }
}

/// A config (docs/FORMAT.md section 3) with nothing but a name.
pub fn config_json(name: &str) -> Vec<u8> {
    config_with(name, serde_json::json!({}))
}

/// A config with a name and the fields of `fields` (an object: `env`, `stop_signal`,
/// `user`...) set over the empty defaults.
pub fn config_with(name: &str, fields: serde_json::Value) -> Vec<u8> {
    let mut config = serde_json::json!({
        "version": 1,
        "name": name,
        "packer_version": "hostile-test",
        "entrypoint": [],
        "cmd": [],
        "env": [],
        "working_dir": "",
        "user": "",
        "read_only": false,
    });
    let serde_json::Value::Object(fields) = fields else {
        panic!("config fields must be a JSON object, not {fields}");
    };
    for (key, value) in fields {
        config[key] = value;
    }
    serde_json::to_vec(&config).unwrap()
}

/// Writes `bytes` as a packed file the test user can run.
pub fn write_runnable(t: &Test, path: &Path, bytes: &[u8]) {
    fs::write(path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
    t.env.give_to_user(path);
}

/// Packs a tar into `<dir>/<name>`: with binctr-pack when it takes the tar, else by
/// hand (stub + lz4 frame + config + footer). Says which on stderr.
pub fn pack_tar(t: &Test, tar: &[u8], name: &str) -> PathBuf {
    let input = t.dir.join(format!("{name}.tar"));
    fs::write(&input, tar).unwrap();
    let out = t.dir.join(name);
    let packed = t.packer().arg(&input).arg("-o").arg(&out).run();
    if packed.code == Some(0) && out.is_file() {
        fs::set_permissions(&out, fs::Permissions::from_mode(0o755)).unwrap();
        t.env.give_to_user(&out);
    } else {
        eprintln!(
            "{name}: binctr-pack refused the tar ({}); assembling the packed file by hand",
            packed.stderr_text().trim()
        );
        assemble_by_hand(t, tar, name, &out);
    }
    out
}

/// The stub with this tar as its payload, without the packer.
pub fn assemble_by_hand(t: &Test, tar: &[u8], name: &str, out: &Path) {
    let parts = Parts {
        stub: fs::read(t.env.stub()).expect("read the stub"),
        payload: lz4_frame(tar),
        config: config_json(name),
        footer: Footer::decode(&fs::read(t.busybox()).unwrap()),
    };
    write_runnable(t, out, &parts.assemble(1));
}

/// The stub with an already compressed payload and a config, written to `out` for the
/// test user to run (a payload too big to hold uncompressed: [`lz4_stream`]).
pub fn assemble(t: &Test, payload: Vec<u8>, config: Vec<u8>, out: &Path) {
    let parts = Parts {
        stub: fs::read(t.env.stub()).expect("read the stub"),
        payload,
        config,
        footer: Footer::decode(busybox_bytes()),
    };
    write_runnable(t, out, &parts.assemble(1));
}

/// An LZ4 frame (the `lz4` command) of whatever `write` writes, streamed: a tar of
/// gigabytes that compresses to megabytes never sits in memory.
pub fn lz4_stream(
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()> + Send + 'static,
) -> Vec<u8> {
    let mut child = Command::new("lz4")
        .args(["-q", "-z", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run lz4: {e}"));
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = thread::spawn(move || {
        let mut buffered = std::io::BufWriter::with_capacity(1 << 20, &mut stdin);
        write(&mut buffered).and_then(|()| buffered.flush())
    });
    let mut out = Vec::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_end(&mut out)
        .expect("read lz4's output");
    let status = child.wait().expect("wait for lz4");
    writer.join().expect("writer").expect("write to lz4");
    assert!(status.success(), "lz4 failed");
    out
}

/// The busybox image packed as format 1 (`--flatten`: one payload frame), as bytes: what
/// the hand-assembled and damaged files here are made of.
pub fn busybox_bytes() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| fs::read(Env::get().busybox_flat()).expect("read the packed busybox"))
}
