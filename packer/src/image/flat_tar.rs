//! Passes a tar stream through unchanged: every header (GNU long names, PAX
//! extensions, sparse maps included) and every byte of data is copied as it was, so
//! nothing the image's tar says is lost or reinterpreted. Only the end is rewritten: the
//! two zero blocks, without the input's record padding.
//!
//! The stream is parsed by the stub's own tar reader (`binctr_format::tar_reader`, with
//! its caps: a 1 GiB long name is refused after 16 KiB), reading through a tee that
//! writes every byte it consumes to the output. So the packer accepts exactly what the
//! stub will read, and refuses at pack time what the stub would refuse at extraction: a
//! path or hard-link target with `..`, a NUL in a name, a path of PATH_MAX or more, and
//! (`--max-size`) a file or a stream larger than allowed.
use super::elf_platform::{Survey, HEAD_LEN};
use super::error::ImageError;
use super::limits::{tar_limits, Limits, PATH_MAX};
use super::types::Stats;
use binctr_format::tar_reader::{Header, Kind, TarError, TarReader};
use std::cell::{Cell, RefCell};
use std::io::{self, BufRead, Read, Write};

const BLOCK: usize = 512;

/// Writes what it reads to `out`; a failed write is kept aside, to be told from a read
/// error.
struct Tee<'a, R, W> {
    inner: R,
    out: &'a mut W,
    write_error: &'a Cell<Option<io::Error>>,
    /// The first block, to tell a tar with a bad first entry from no tar at all.
    first: &'a RefCell<Vec<u8>>,
}

impl<R: Read, W: Write> Read for Tee<'_, R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut first = self.first.borrow_mut();
        if first.len() < BLOCK {
            let more = n.min(BLOCK - first.len());
            first.extend_from_slice(&buf[..more]);
        }
        if let Err(e) = self.out.write_all(&buf[..n]) {
            let error = io::Error::new(e.kind(), e.to_string());
            self.write_error.set(Some(e));
            return Err(error);
        }
        Ok(n)
    }
}

pub fn copy<R: BufRead, W: Write>(
    input: R,
    image: &str,
    limits: &Limits,
    out: &mut W,
) -> Result<Stats, ImageError> {
    let write_error = Cell::new(None);
    let first = RefCell::new(Vec::with_capacity(BLOCK));
    let tee = Tee {
        inner: input,
        out,
        write_error: &write_error,
        first: &first,
    };
    let mut c = Copier {
        tar: TarReader::new(tee, tar_limits()),
        write_error: &write_error,
        first: &first,
        image,
        entries: 0,
        left: limits.max_size,
        max_size: limits.max_size,
        buf: vec![0u8; 64 * 1024],
        survey: Survey::default(),
    };
    // Bytes consumed by the last look for an entry: the previous entry's padding, and
    // the first zero block when the archive ends with one.
    let ending = loop {
        let before = c.tar.offset();
        match c.next()? {
            Some(h) => c.entry(&h)?,
            None => break c.tar.offset() - before,
        }
    };
    if c.entries == 0 {
        return Err(c.not_a_tar());
    }
    let tee = c.tar.into_inner();
    let out = tee.out;
    // One zero block went through already when the archive had its end; write the rest.
    let zeros = if ending >= BLOCK as u64 { 1 } else { 2 };
    out.write_all(&[0u8; BLOCK].repeat(zeros))
        .map_err(ImageError::Write)?;
    // Read to the end: a pipe's writer (`podman export`) must not get EPIPE for the
    // record padding after the zero blocks, and gzip checks its trailer there.
    io::copy(&mut tee.inner.take(limits.max_size), &mut io::sink())
        .map_err(|e| read_error(image, e))?;
    Ok(Stats {
        entries: c.entries,
        detected: c.survey.finish(),
    })
}

/// A broken gzip stream or an I/O error: name the input, keep the reason.
fn read_error(image: &str, source: io::Error) -> ImageError {
    ImageError::Read {
        image: image.to_string(),
        source,
    }
}

struct Copier<'a, R, W> {
    tar: TarReader<Tee<'a, R, W>>,
    write_error: &'a Cell<Option<io::Error>>,
    first: &'a RefCell<Vec<u8>>,
    image: &'a str,
    entries: u64,
    /// Stored bytes still allowed (`--max-size`).
    left: u64,
    max_size: u64,
    /// Where entry data passes (the tee copies it).
    buf: Vec<u8>,
    /// Which CPU the programs are for (`elf_platform.rs`).
    survey: Survey,
}

impl<R: BufRead, W: Write> Copier<'_, R, W> {
    fn not_a_tar(&self) -> ImageError {
        ImageError::NotATar {
            image: self.image.to_string(),
        }
    }

    fn damaged(&self, why: String) -> ImageError {
        ImageError::Damaged {
            image: self.image.to_string(),
            why,
        }
    }

    /// A tar reader's error: the output's, the input's, or the archive's.
    fn error(&self, e: TarError) -> ImageError {
        if let Some(e) = self.write_error.take() {
            return ImageError::Write(e);
        }
        let first = self.first.borrow();
        let a_header = <&[u8; BLOCK]>::try_from(&first[..]).is_ok_and(checksum_ok);
        match e {
            // Not even one sound header: not a tar. A hostile first entry is a tar.
            TarError::Bad { .. } if self.entries == 0 && !a_header => self.not_a_tar(),
            TarError::Bad { .. } => self.damaged(e.to_string()),
            TarError::Io(e) => read_error(self.image, e),
        }
    }

    fn next(&mut self) -> Result<Option<Header>, ImageError> {
        self.tar.next_entry().map_err(|e| self.error(e))
    }

    /// Checks one entry and lets its data through.
    fn entry(&mut self, h: &Header) -> Result<(), ImageError> {
        check_entry(self.image, h)?;
        if h.size > self.max_size {
            return Err(self.too_large(h, h.size));
        }
        self.left = match self.left.checked_sub(h.stored) {
            Some(left) => left,
            None => return Err(self.too_large(h, h.stored)),
        };
        let mut head = Vec::new();
        loop {
            match self.tar.read_data(&mut self.buf) {
                Ok(0) => break,
                Ok(n) if head.len() < HEAD_LEN => {
                    let more = n.min(HEAD_LEN - head.len());
                    head.extend_from_slice(&self.buf[..more]);
                }
                Ok(_) => {}
                Err(e) => return Err(self.error(e)),
            }
        }
        match h.kind() {
            Kind::File => self.survey.file(&h.path, h.mode, &head),
            Kind::Symlink => self.survey.symlink(&h.path, &h.link),
            Kind::HardLink => self.survey.hard_link(&h.path, &h.link),
            _ => {}
        }
        self.entries += 1;
        Ok(())
    }

    fn too_large(&self, h: &Header, size: u64) -> ImageError {
        ImageError::TooLarge {
            image: self.image.to_string(),
            what: format!(
                "the root filesystem (at '{}', {size} bytes)",
                crate::util::printable(&h.path)
            ),
            limit: self.max_size,
        }
    }
}

/// Whether a block is a tar header: its checksum holds (unsigned or signed, as GNU tar
/// accepts), and it is not all zeros.
pub fn checksum_ok(block: &[u8; BLOCK]) -> bool {
    let stored = tar::Header::from_byte_slice(block).cksum().ok();
    let (mut unsigned, mut signed) = (0u32, 0i64);
    for (i, &b) in block.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += u32::from(b);
        signed += i64::from(b as i8);
    }
    block.iter().any(|&b| b != 0) && stored.is_some_and(|s| s == unsigned || i64::from(s) == signed)
}

/// Refuses an entry the stub would refuse: a path, or hard-link target, with a `..`
/// component (unpacked, it would land outside the rootfs), a NUL byte, or PATH_MAX
/// bytes or more.
pub fn check_entry(image: &str, h: &Header) -> Result<(), ImageError> {
    let climbs = |p: &[u8]| p.split(|&b| b == b'/').any(|part| part == b"..");
    let hard_link = (h.kind() == Kind::HardLink).then_some(&h.link[..]);
    let why = if climbs(&h.path) {
        "its path climbs out of the root with '..'"
    } else if hard_link.is_some_and(climbs) {
        "its hard link target climbs out of the root with '..'"
    } else if h.path.contains(&0) || hard_link.is_some_and(|l| l.contains(&0)) {
        "its name holds a NUL byte"
    } else if h.path.len() >= PATH_MAX || hard_link.is_some_and(|l| l.len() >= PATH_MAX) {
        "its name is longer than PATH_MAX"
    } else {
        return Ok(());
    };
    Err(ImageError::Unsafe {
        image: image.to_string(),
        entry: h.path.clone(),
        why,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::tar::Header;

    fn cp(input: &[u8], image: &str, out: &mut Vec<u8>) -> Result<Stats, ImageError> {
        copy(input, image, &Limits::default(), out)
    }

    fn padded(size: u64) -> u64 {
        size.div_ceil(BLOCK as u64) * BLOCK as u64
    }

    fn entries(tar: &[u8]) -> Vec<(String, Vec<u8>)> {
        let mut archive = ::tar::Archive::new(tar);
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let path = e.path().unwrap().to_string_lossy().into_owned();
                let mut data = Vec::new();
                io::Read::read_to_end(&mut e, &mut data).unwrap();
                (path, data)
            })
            .collect()
    }

    fn sample() -> Vec<u8> {
        let mut b = ::tar::Builder::new(Vec::new());
        let mut h = Header::new_gnu();
        h.set_size(5);
        h.set_mode(0o644);
        b.append_data(&mut h, "a/short", &b"hello"[..]).unwrap();
        let long = format!("{}/file", "d".repeat(150));
        let mut h = Header::new_gnu();
        h.set_size(3);
        b.append_data(&mut h, &long, &b"abc"[..]).unwrap();
        // A PAX entry with an xattr.
        b.append_pax_extensions([("SCHILY.xattr.user.x", &b"1"[..])])
            .unwrap();
        let mut h = Header::new_ustar();
        h.set_size(0);
        b.append_data(&mut h, "with-xattr", &b""[..]).unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn passes_entries_through_unchanged() {
        let input = sample();
        let mut out = Vec::new();
        let stats = cp(&input[..], "t", &mut out).unwrap();
        assert_eq!(stats.entries, 3);
        // Same bytes up to the end-of-archive blocks.
        assert_eq!(out, input);
        let names: Vec<_> = entries(&out).into_iter().map(|(p, _)| p).collect();
        assert_eq!(names[0], "a/short");
        assert!(names[1].ends_with("ddd/file") && names[1].len() > 100);
        assert_eq!(names[2], "with-xattr");
    }

    #[test]
    fn record_padding_after_the_end_is_dropped() {
        let mut input = sample();
        input.resize(input.len() + 10240, 0);
        let mut out = Vec::new();
        cp(&input[..], "t", &mut out).unwrap();
        assert_eq!(out, sample());
    }

    #[test]
    fn pax_size_overrides_the_header_size() {
        // As PAX writers do for files of 8 GiB and more: the ustar size field says 0.
        let mut b = ::tar::Builder::new(Vec::new());
        b.append_pax_extensions([("size", &b"700"[..])]).unwrap();
        let mut h = Header::new_ustar();
        h.set_path("big").unwrap();
        h.set_size(0);
        h.set_cksum();
        let mut raw = b.into_inner().unwrap();
        raw.truncate(raw.len() - 1024);
        raw.extend_from_slice(h.as_bytes());
        raw.extend_from_slice(&[7u8; 700]);
        raw.resize(raw.len() + 324, 0);
        let mut h = Header::new_ustar();
        h.set_path("after").unwrap();
        h.set_size(0);
        h.set_cksum();
        raw.extend_from_slice(h.as_bytes());
        raw.extend_from_slice(&[0u8; 1024]);
        let mut out = Vec::new();
        assert_eq!(cp(&raw[..], "t", &mut out).unwrap().entries, 2);
        let e = entries(&out);
        assert_eq!(e[0].0, "big");
        assert_eq!(e[0].1, vec![7u8; 700]);
        assert_eq!(e[1].0, "after");
    }

    /// One header block, with `name` and `link` written as raw bytes (tar::Header
    /// refuses `..`, which is what these tests need).
    fn raw_header(name: &[u8], kind: ::tar::EntryType, link: &[u8], size: u64) -> Vec<u8> {
        let mut h = Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(0o644);
        let gnu = h.as_gnu_mut().unwrap();
        gnu.name[..name.len()].copy_from_slice(name);
        gnu.linkname[..link.len()].copy_from_slice(link);
        h.set_cksum();
        h.as_bytes().to_vec()
    }

    fn refusal(raw: &[u8]) -> String {
        match cp(raw, "IMG", &mut Vec::new()) {
            Err(e @ ImageError::Unsafe { .. }) => e.to_string(),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn refuses_entries_that_climb_out_of_the_root() {
        use ::tar::EntryType;
        let end = [0u8; 1024];
        // A plain name.
        let raw = [
            raw_header(b"a/../../x", EntryType::Regular, b"", 0),
            end.to_vec(),
        ]
        .concat();
        assert!(refusal(&raw).contains("'a/../../x'"), "{}", refusal(&raw));
        // A GNU long name.
        let long = format!("{}/../../../escape", "d".repeat(120));
        let mut data = long.clone().into_bytes();
        data.push(0);
        let size = data.len() as u64;
        data.resize(padded(size) as usize, 0);
        let raw = [
            raw_header(b"././@LongLink", EntryType::GNULongName, b"", size),
            data,
            raw_header(b"short", EntryType::Regular, b"", 0),
            end.to_vec(),
        ]
        .concat();
        assert!(refusal(&raw).contains("escape"));
        // A PAX path.
        let mut b = ::tar::Builder::new(Vec::new());
        b.append_pax_extensions([("path", &b"../pax-escape"[..])])
            .unwrap();
        let mut raw = b.into_inner().unwrap();
        raw.truncate(raw.len() - 1024);
        raw.extend(raw_header(b"benign", EntryType::Regular, b"", 0));
        raw.extend(end);
        assert!(refusal(&raw).contains("pax-escape"));
        // A hard link out; a symlink may point anywhere (the stub resolves it inside).
        let raw = [
            raw_header(b"hl", EntryType::Link, b"../../etc/passwd", 0),
            end.to_vec(),
        ]
        .concat();
        assert!(refusal(&raw).contains("hard link target"));
        let raw = [
            raw_header(b"sl", EntryType::Symlink, b"../../etc/passwd", 0),
            end.to_vec(),
        ]
        .concat();
        assert_eq!(cp(&raw[..], "IMG", &mut Vec::new()).unwrap().entries, 1);
    }

    #[test]
    fn refuses_what_is_not_a_tar() {
        for input in [&b""[..], b"hello world", &[0u8; 1024], &[b'x'; 4096]] {
            let err = cp(input, "IMG", &mut Vec::new()).unwrap_err();
            assert_eq!(
                err.to_string(),
                "IMG is not a tar archive (plain or gzip) or a directory",
                "{input:?}"
            );
        }
    }

    #[test]
    fn reports_a_truncated_tar() {
        let input = sample();
        let err = cp(&input[..700], "IMG", &mut Vec::new()).unwrap_err();
        assert!(
            err.to_string().starts_with(
                "IMG is a damaged tar archive: the archive ends inside an entry's data"
            ),
            "{err}"
        );
    }

    #[test]
    fn a_huge_long_name_is_refused_unread_as_a_damaged_tar() {
        let raw = raw_header(
            b"././@LongLink",
            ::tar::EntryType::GNULongName,
            b"",
            1 << 30,
        );
        let err = cp(&raw, "IMG", &mut Vec::new()).unwrap_err().to_string();
        assert_eq!(
            err,
            "IMG is a damaged tar archive: a long name of 1073741824 bytes (more than the 16384 allowed) (at byte 512)"
        );
    }

    #[test]
    fn sizes_beyond_the_limit_and_nul_names_are_refused() {
        use ::tar::EntryType;
        let mut raw = raw_header(b"big", EntryType::Regular, b"", 100);
        raw.extend([1u8; 512]);
        raw.extend([0u8; 1024]);
        let limits = Limits { max_size: 99 };
        let err = copy(&raw[..], "IMG", &limits, &mut Vec::new())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(
                "the root filesystem (at 'big', 100 bytes): more than the 99 bytes allowed"
            ),
            "{err}"
        );
        let mut long = raw_header(b"././@LongLink", EntryType::GNULongName, b"", 4);
        long.extend(b"a\0b\0");
        long.resize(1024, 0);
        long.extend(raw_header(b"x", EntryType::Regular, b"", 0));
        long.extend([0u8; 1024]);
        assert!(
            refusal(&long).contains("its name holds a NUL byte"),
            "{}",
            refusal(&long)
        );
    }
}
