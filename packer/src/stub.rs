//! The stub: the static ELF that every packed file starts with. The packer embeds one at
//! build time (`build.rs`) or takes one with `--stub`, and refuses anything that is not a
//! binctr stub, because a packed file built on a wrong binary only fails later, on
//! another machine.
use binctr_format::{Footer, FOOTER_LEN};
use goblin::elf::header::{EI_CLASS, ELFCLASS64, EM_AARCH64, EM_X86_64, ET_DYN, ET_EXEC};
use goblin::elf::section_header::SHT_NOBITS;
use goblin::elf::Elf;
use std::borrow::Cow;
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use crate::image::Platform;
use crate::util::os_error;

/// The stubs built into this packer, one per CPU (empty when built without
/// `BINCTR_STUB`, `BINCTR_STUB_AARCH64`).
static EMBEDDED_X86_64: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/stub-x86_64.bin"));
static EMBEDDED_AARCH64: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/stub-aarch64.bin"));

/// A CPU binctr has a stub for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cpu {
    X86_64,
    Aarch64,
}

impl Cpu {
    pub const ALL: [Cpu; 2] = [Cpu::X86_64, Cpu::Aarch64];

    /// The machine this packer runs on, where it has a stub for it; else x86_64.
    pub fn native() -> Cpu {
        if cfg!(target_arch = "aarch64") {
            Cpu::Aarch64
        } else {
            Cpu::X86_64
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Cpu::X86_64 => "x86_64",
            Cpu::Aarch64 => "aarch64",
        }
    }

    /// The OCI platform of the images it runs: `linux/amd64`, `linux/arm64`.
    pub fn platform(self) -> Platform {
        Platform::linux(match self {
            Cpu::X86_64 => "amd64",
            Cpu::Aarch64 => "arm64",
        })
    }

    /// The CPU for images of `platform`; None for one binctr has no stub for. The
    /// kernel's names (x86_64, aarch64) are taken too.
    pub fn of_platform(platform: &Platform) -> Option<Cpu> {
        if platform.os != "linux" {
            return None;
        }
        match platform.architecture.as_str() {
            "amd64" | "x86_64" => Some(Cpu::X86_64),
            // arm64 is v8 (or later, which runs v8 code) whether it says so or not.
            "arm64" | "aarch64" => Some(Cpu::Aarch64),
            _ => None,
        }
    }

    fn embedded(self) -> &'static [u8] {
        match self {
            Cpu::X86_64 => EMBEDDED_X86_64,
            Cpu::Aarch64 => EMBEDDED_AARCH64,
        }
    }
}

impl fmt::Display for Cpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The section every stub carries, and how its content starts (see stub/src/main.rs).
pub const MARKER_SECTION: &str = ".binctr_stub";
pub const MARKER_MAGIC: &[u8] = b"binctr-stub\0";
/// The marker versions this packer can pack onto.
const MARKER_VERSIONS: &[&str] = &["v1"];
/// A file this large without a footer is no stub (ours are a few MiB).
pub const MAX_STUB_LEN: u64 = 256 << 20;

#[derive(Debug)]
pub enum StubError {
    /// Built without the stub for this CPU, and no `--stub` given.
    NoneEmbedded(Cpu),
    Read {
        path: PathBuf,
        source: io::Error,
    },
    NotAStub {
        origin: String,
        why: String,
    },
    /// A FIFO, a device, a directory: never read (a FIFO would block).
    NotRegular {
        path: PathBuf,
        what: &'static str,
    },
}

impl fmt::Display for StubError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StubError::NoneEmbedded(cpu) => write!(
                f,
                "this binctr-pack has no {cpu} stub embedded: build it with scripts/build.sh, or pass --stub PATH"
            ),
            StubError::Read { path, source } => {
                write!(f, "cannot read stub {}: {}", path.display(), os_error(source))
            }
            StubError::NotAStub { origin, why } => {
                write!(f, "{origin} is not a binctr stub ({why})")
            }
            StubError::NotRegular { path, what } => write!(
                f,
                "cannot use {} as the stub: it is {what}, not a regular file",
                path.display()
            ),
        }
    }
}

impl std::error::Error for StubError {}

/// A validated stub: exactly the ELF's bytes, nothing appended.
pub struct Stub {
    pub bytes: Cow<'static, [u8]>,
    pub cpu: Cpu,
}

/// The stub built into this packer for `cpu`, validated.
pub fn embedded(cpu: Cpu) -> Result<Stub, StubError> {
    match cpu.embedded() {
        [] => Err(StubError::NoneEmbedded(cpu)),
        bytes => validate(Cow::Borrowed(bytes), &format!("the embedded {cpu} stub")),
    }
}

/// Loads and validates the stub from `--stub PATH` or, without it, the embedded one for
/// this machine's CPU.
pub fn load(path: Option<&Path>) -> Result<Stub, StubError> {
    match path {
        None => embedded(Cpu::native()),
        Some(path) => {
            let file = open_regular(path).map_err(|e| match e {
                Opened::Io(source) => StubError::Read {
                    path: path.to_path_buf(),
                    source,
                },
                Opened::NotRegular(what) => StubError::NotRegular {
                    path: path.to_path_buf(),
                    what,
                },
            })?;
            let bytes = read_stub_part(file).map_err(|source| StubError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            validate(Cow::Owned(bytes), &path.display().to_string())
        }
    }
}

/// Why a file cannot be read as a stub or a packed file.
pub enum Opened {
    Io(io::Error),
    /// What it is instead: "a FIFO".
    NotRegular(&'static str),
}

/// Opens a file that must be a regular file, without ever blocking (a FIFO opens at
/// once, and is refused).
pub fn open_regular(path: &Path) -> Result<File, Opened> {
    let file = crate::sys::open_nonblocking(path).map_err(Opened::Io)?;
    let kind = file.metadata().map_err(Opened::Io)?.file_type();
    let what = if kind.is_file() {
        return Ok(file);
    } else if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else {
        "a socket"
    };
    Err(Opened::NotRegular(what))
}

/// Reads a stub file; of a packed file (valid footer at the end) only the stub before
/// its payload, so that any packed file can serve as the stub for another.
fn read_stub_part(mut file: File) -> io::Result<Vec<u8>> {
    let len = file.metadata()?.len();
    let mut stub_len = len;
    if len >= FOOTER_LEN as u64 {
        let mut tail = [0u8; FOOTER_LEN];
        file.seek(SeekFrom::Start(len - FOOTER_LEN as u64))?;
        file.read_exact(&mut tail)?;
        if let Ok(footer) = Footer::decode(&tail, len) {
            stub_len = footer.payload_offset;
        }
        file.seek(SeekFrom::Start(0))?;
    }
    // Larger than any stub: let validation say why without reading it all.
    let stub_len = stub_len.min(MAX_STUB_LEN + 1);
    let mut bytes = Vec::with_capacity(stub_len as usize);
    file.take(stub_len).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// What the stub part of a packed file is when it is no binctr stub: why, and for a file
/// that is not even an ELF, what it starts with (a script, text, data).
pub fn check_part(bytes: &[u8]) -> Result<Cpu, String> {
    check(bytes).map_err(|why| {
        if bytes.starts_with(b"\x7fELF") {
            return why;
        }
        let head = &bytes[..bytes.len().min(40)];
        let head = head.split(|&b| b == b'\n').next().unwrap_or_default();
        let shown = crate::util::printable(head);
        if bytes.is_empty() {
            "it is empty".into()
        } else if bytes.starts_with(b"#!") {
            format!("not an ELF file but a script: '{shown}'")
        } else {
            format!("not an ELF file: it starts with '{shown}'")
        }
    })
}

/// Checks that `bytes` are a binctr stub: a static 64-bit executable ELF for x86_64 or
/// aarch64 with the `.binctr_stub` marker, and nothing after the ELF's last byte.
pub fn validate(bytes: Cow<'static, [u8]>, origin: &str) -> Result<Stub, StubError> {
    let cpu = check(&bytes).map_err(|why| StubError::NotAStub {
        origin: origin.to_string(),
        why,
    })?;
    Ok(Stub { bytes, cpu })
}

fn check(bytes: &[u8]) -> Result<Cpu, String> {
    if bytes.len() as u64 > MAX_STUB_LEN {
        return Err("larger than any stub".into());
    }
    if !bytes.starts_with(b"\x7fELF") || bytes.len() <= EI_CLASS {
        return Err("not an ELF file".into());
    }
    if bytes[EI_CLASS] != ELFCLASS64 {
        return Err("a 32-bit ELF".into());
    }
    let elf = Elf::parse(bytes).map_err(|e| format!("a damaged ELF: {e}"))?;
    let cpu = match elf.header.e_machine {
        EM_X86_64 => Cpu::X86_64,
        EM_AARCH64 => Cpu::Aarch64,
        other => return Err(format!("an ELF for machine {other}, not x86_64 or aarch64")),
    };
    if !matches!(elf.header.e_type, ET_EXEC | ET_DYN) {
        return Err("not an executable ELF".into());
    }
    if elf.interpreter.is_some() || !elf.libraries.is_empty() {
        return Err("a dynamically linked ELF".into());
    }
    let marker = elf
        .section_headers
        .iter()
        .find(|sh| elf.shdr_strtab.get_at(sh.sh_name) == Some(MARKER_SECTION))
        .ok_or_else(|| format!("no {MARKER_SECTION} section"))?;
    let content = usize::try_from(marker.sh_offset)
        .ok()
        .zip(usize::try_from(marker.sh_size).ok())
        .and_then(|(start, len)| bytes.get(start..start.checked_add(len)?))
        .filter(|_| marker.sh_type != SHT_NOBITS)
        .ok_or_else(|| format!("{MARKER_SECTION} section outside the file"))?;
    let version = content
        .strip_prefix(MARKER_MAGIC)
        .ok_or_else(|| format!("no binctr-stub marker in the {MARKER_SECTION} section"))?;
    let version = version.split(|&b| b == 0).next().unwrap_or_default();
    let version = String::from_utf8_lossy(version).into_owned();
    if !MARKER_VERSIONS.contains(&version.as_str()) {
        return Err(format!(
            "stub marker version {version:?}, this packer knows {}: use a matching binctr-pack",
            MARKER_VERSIONS.join(", ")
        ));
    }
    let end = elf_end(&elf);
    let len = bytes.len() as u64;
    if end < len {
        return Err(format!(
            "{} bytes after the end of the ELF that are not a binctr footer",
            len - end
        ));
    }
    if end > len {
        return Err(format!(
            "truncated: the ELF needs {end} bytes, the file has {len}"
        ));
    }
    Ok(cpu)
}

/// Where the ELF's last byte is: the furthest of the header tables, the section contents
/// and the segment contents. Anything after it was appended.
pub fn elf_end(elf: &Elf) -> u64 {
    let h = &elf.header;
    let mut end = u64::from(h.e_ehsize);
    end = end.max(h.e_phoff + u64::from(h.e_phnum) * u64::from(h.e_phentsize));
    if h.e_shnum > 0 {
        end = end.max(h.e_shoff + u64::from(h.e_shnum) * u64::from(h.e_shentsize));
    }
    for sh in &elf.section_headers {
        if sh.sh_type != SHT_NOBITS {
            end = end.max(sh.sh_offset.saturating_add(sh.sh_size));
        }
    }
    for ph in &elf.program_headers {
        end = end.max(ph.p_offset.saturating_add(ph.p_filesz));
    }
    end
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use crate::util::tests::TempDir;

    /// A minimal static ELF that passes validation: no program interpreter, no libraries,
    /// the marker section. Built by hand so the tests need no musl toolchain.
    pub fn fake_stub() -> Vec<u8> {
        fake_stub_for(Cpu::X86_64)
    }

    /// [`fake_stub`] for another CPU: only e_machine differs.
    pub fn fake_stub_for(cpu: Cpu) -> Vec<u8> {
        let mut b = fake_elf(Some(b"binctr-stub\0v1\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0"));
        let machine = match cpu {
            Cpu::X86_64 => EM_X86_64,
            Cpu::Aarch64 => EM_AARCH64,
        };
        b[18..20].copy_from_slice(&machine.to_le_bytes());
        b
    }

    /// ELF header, one PT_LOAD, sections: null, .binctr_stub, .shstrtab.
    pub fn fake_elf(marker: Option<&[u8]>) -> Vec<u8> {
        let shstrtab: &[u8] = b"\0.binctr_stub\0.shstrtab\0";
        let content = marker.unwrap_or(b"nothing here at all, 32 bytes..");
        let content_off = 64 + 56;
        let strtab_off = content_off + content.len();
        let shoff = (strtab_off + shstrtab.len()).next_multiple_of(8);
        let mut b = vec![0u8; shoff + 3 * 64];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2; // 64-bit
        b[5] = 1; // little-endian
        b[6] = 1; // EV_CURRENT
        let put16 =
            |b: &mut Vec<u8>, at: usize, v: u16| b[at..at + 2].copy_from_slice(&v.to_le_bytes());
        let put32 =
            |b: &mut Vec<u8>, at: usize, v: u32| b[at..at + 4].copy_from_slice(&v.to_le_bytes());
        let put64 =
            |b: &mut Vec<u8>, at: usize, v: u64| b[at..at + 8].copy_from_slice(&v.to_le_bytes());
        put16(&mut b, 16, ET_EXEC);
        put16(&mut b, 18, EM_X86_64);
        put32(&mut b, 20, 1);
        put64(&mut b, 24, 0x400000); // entry
        put64(&mut b, 32, 64); // phoff
        put64(&mut b, 40, shoff as u64);
        put16(&mut b, 52, 64); // ehsize
        put16(&mut b, 54, 56); // phentsize
        put16(&mut b, 56, 1); // phnum
        put16(&mut b, 58, 64); // shentsize
        put16(&mut b, 60, 3); // shnum
        put16(&mut b, 62, 2); // shstrndx
                              // PT_LOAD covering the start of the file.
        put32(&mut b, 64, 1);
        put32(&mut b, 68, 5);
        put64(&mut b, 64 + 16, 0x400000);
        put64(&mut b, 64 + 24, 0x400000);
        put64(&mut b, 64 + 32, content_off as u64);
        put64(&mut b, 64 + 40, content_off as u64);
        put64(&mut b, 64 + 48, 0x1000);
        b[content_off..content_off + content.len()].copy_from_slice(content);
        b[strtab_off..strtab_off + shstrtab.len()].copy_from_slice(shstrtab);
        let sh = |i: usize| shoff + i * 64;
        // [1] .binctr_stub, PROGBITS
        put32(&mut b, sh(1), 1);
        put32(&mut b, sh(1) + 4, 1);
        put64(&mut b, sh(1) + 24, content_off as u64);
        put64(&mut b, sh(1) + 32, content.len() as u64);
        // [2] .shstrtab, STRTAB
        put32(&mut b, sh(2), 14);
        put32(&mut b, sh(2) + 4, 3);
        put64(&mut b, sh(2) + 24, strtab_off as u64);
        put64(&mut b, sh(2) + 32, shstrtab.len() as u64);
        b
    }

    fn why(bytes: Vec<u8>) -> String {
        match validate(Cow::Owned(bytes), "X") {
            Ok(_) => "ok".into(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn accepts_the_fake_stub() {
        let stub = validate(Cow::Owned(fake_stub()), "X").unwrap();
        assert_eq!(stub.cpu, Cpu::X86_64);
        let stub = validate(Cow::Owned(fake_stub_for(Cpu::Aarch64)), "X").unwrap();
        assert_eq!(stub.cpu, Cpu::Aarch64);
    }

    #[test]
    fn refuses_a_file_that_is_not_an_elf() {
        assert_eq!(
            why(b"#!/bin/sh\necho hi\n".to_vec()),
            "X is not a binctr stub (not an ELF file)"
        );
        assert_eq!(why(Vec::new()), "X is not a binctr stub (not an ELF file)");
    }

    #[test]
    fn refuses_a_dynamically_linked_elf() {
        let ls = Path::new("/bin/ls");
        if !ls.exists() {
            return;
        }
        let err = load(Some(ls)).err().unwrap().to_string();
        assert_eq!(
            err,
            "/bin/ls is not a binctr stub (a dynamically linked ELF)"
        );
    }

    #[test]
    fn refuses_an_elf_without_the_marker() {
        assert_eq!(
            why(fake_elf(Some(b"something-else\0v1\0"))),
            "X is not a binctr stub (no binctr-stub marker in the .binctr_stub section)"
        );
        let mut renamed = fake_stub();
        let at = renamed
            .windows(12)
            .rposition(|w| w == b".binctr_stub")
            .unwrap();
        renamed[at + 11] = b'X';
        assert_eq!(
            why(renamed),
            "X is not a binctr stub (no .binctr_stub section)"
        );
        // A real static binary without the section, when the system has one.
        for path in ["/bin/busybox", "/usr/bin/busybox", "/sbin/ldconfig"] {
            let path = Path::new(path);
            let Ok(Some(bytes)) = std::fs::read(path).map(Some) else {
                continue;
            };
            if Elf::parse(&bytes)
                .map(|e| e.interpreter.is_none() && e.libraries.is_empty())
                .unwrap_or(false)
            {
                let err = load(Some(path)).err().unwrap().to_string();
                assert!(err.ends_with("(no .binctr_stub section)"), "{err}");
            }
        }
    }

    #[test]
    fn refuses_unknown_marker_versions_and_trailing_bytes() {
        let err = why(fake_elf(Some(b"binctr-stub\0v9\0\0")));
        assert!(err.contains("stub marker version \"v9\""), "{err}");
        let mut bytes = fake_stub();
        bytes.extend_from_slice(b"appended");
        assert_eq!(
            why(bytes),
            "X is not a binctr stub (8 bytes after the end of the ELF that are not a binctr footer)"
        );
    }

    #[test]
    fn a_packed_file_serves_as_a_stub() {
        let dir = TempDir::new();
        let stub = fake_stub();
        let mut packed = stub.clone();
        packed.extend_from_slice(b"PAYLOAD-BYTESCONFIG");
        let footer = Footer {
            version: binctr_format::FORMAT_VERSION,
            flags: 0,
            payload_offset: stub.len() as u64,
            payload_len: 13,
            config_len: 6,
            payload_sha256: binctr_format::Sha256Digest::of(b"PAYLOAD-BYTES"),
            config_sha256: binctr_format::Sha256Digest::of(b"CONFIG"),
        };
        packed.extend_from_slice(&footer.encode());
        let path = dir.path().join("packed");
        std::fs::write(&path, &packed).unwrap();
        assert_eq!(load(Some(&path)).unwrap().bytes.as_ref(), stub.as_slice());
    }

    #[test]
    fn a_stub_part_that_is_no_elf_is_described() {
        assert_eq!(
            check_part(b"#!/bin/sh\necho packed OK\n").unwrap_err(),
            "not an ELF file but a script: '#!/bin/sh'"
        );
        assert_eq!(
            check_part(b"\x1b]0;title\x07").unwrap_err(),
            "not an ELF file: it starts with '\\u{1b}]0;title\\u{7}'"
        );
        assert_eq!(check_part(&fake_stub()).unwrap(), Cpu::X86_64);
    }

    #[test]
    fn a_fifo_is_never_opened_as_a_stub() {
        let dir = TempDir::new();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let err = load(Some(&fifo)).err().unwrap().to_string();
        assert!(err.ends_with("it is a FIFO, not a regular file"), "{err}");
    }

    #[test]
    fn missing_stub_file_is_reported() {
        let err = load(Some(Path::new("/nonexistent/stub")))
            .err()
            .unwrap()
            .to_string();
        assert_eq!(
            err,
            "cannot read stub /nonexistent/stub: No such file or directory"
        );
    }

    #[test]
    fn the_real_stubs_pass_when_built() {
        // target/<triple>/stub/binctr-stub, if a build left them.
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        for cpu in Cpu::ALL {
            let path = root.join(format!("target/{cpu}-unknown-linux-musl/stub/binctr-stub"));
            if path.exists() {
                assert_eq!(load(Some(&path)).unwrap().cpu, cpu);
            }
        }
    }

    #[test]
    fn platforms_map_to_cpus() {
        let cpu = |p: &str| Cpu::of_platform(&Platform::parse(p).unwrap());
        assert_eq!(cpu("linux/amd64"), Some(Cpu::X86_64));
        assert_eq!(cpu("linux/arm64/v8"), Some(Cpu::Aarch64));
        assert_eq!(cpu("linux/aarch64"), Some(Cpu::Aarch64));
        assert_eq!(cpu("linux/arm/v7"), None);
        assert_eq!(cpu("windows/amd64"), None);
        for c in Cpu::ALL {
            assert_eq!(Cpu::of_platform(&c.platform()), Some(c));
        }
    }
}
