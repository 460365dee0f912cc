//! Passes a tar stream through block by block: every header (GNU long names, PAX
//! extensions, sparse maps included) and every byte of data is copied unchanged, so
//! nothing the image's tar says is lost or reinterpreted. Only the end is rewritten: the
//! two zero blocks, without the input's record padding.
//!
//! The tar crate parses each header; the walk is done here rather than with
//! `Archive::entries().raw(true)` because raw mode does not apply a PAX `size` (files of
//! 8 GiB and more written by PAX tools) and does not skip the extension blocks of a GNU
//! sparse file; both would desynchronize the stream.
use super::error::ImageError;
use super::types::Stats;
use std::io::{self, BufRead, Write};
use tar::Header;

const BLOCK: usize = 512;
/// A PAX extended header is metadata (names, xattrs): refuse absurd sizes rather than
/// hold them in memory.
const MAX_PAX_LEN: u64 = 64 << 20;

struct Copier<'a, R, W> {
    input: R,
    out: &'a mut W,
    image: &'a str,
    /// Input bytes consumed, for error messages.
    offset: u64,
}

/// What extension entries (PAX headers, GNU long names) say about the next real entry.
#[derive(Default)]
struct Pending {
    /// The size a PAX header gives the next entry, which overrides the header's own.
    size: Option<u64>,
    /// The name and hard-link target a GNU long-name/long-link entry or a PAX header
    /// gives the next entry (checked, not changed: the bytes pass through as they are).
    name: Option<Vec<u8>>,
    link: Option<Vec<u8>>,
}

pub fn copy<R: BufRead, W: Write>(input: R, image: &str, out: &mut W) -> Result<Stats, ImageError> {
    let mut c = Copier {
        input,
        out,
        image,
        offset: 0,
    };
    let mut entries = 0u64;
    let mut pending = Pending::default();
    let mut block = [0u8; BLOCK];
    loop {
        let at = c.offset;
        if !c.read_block(&mut block, entries == 0)? {
            break; // end of input without the zero blocks: accepted, as tar does
        }
        if block.iter().all(|&b| b == 0) {
            break;
        }
        let header = Header::from_byte_slice(&block);
        if !checksum_ok(header) {
            return Err(if entries == 0 {
                c.not_a_tar()
            } else {
                c.damaged(format!("bad header checksum at byte {at}"))
            });
        }
        if c.copy_entry(header, at, &mut pending)? {
            entries += 1;
        }
    }
    if entries == 0 {
        return Err(c.not_a_tar());
    }
    // Read to the end: a pipe's writer (`podman export`) must not get EPIPE for the
    // record padding after the zero blocks, and gzip checks its trailer there.
    c.drain()?;
    c.write(&[0u8; 2 * BLOCK])?;
    Ok(Stats { entries })
}

/// Refuses an entry whose path, or hard-link target, has a `..` component: unpacked,
/// it would land outside the rootfs (the stub refuses it too; better said here, once).
fn check_entry<R: BufRead, W: Write>(
    c: &Copier<'_, R, W>,
    name: &[u8],
    hard_link: Option<Vec<u8>>,
) -> Result<(), ImageError> {
    let climbs = |p: &[u8]| p.split(|&b| b == b'/').any(|part| part == b"..");
    let why = if climbs(name) {
        "its path climbs out of the root with '..'"
    } else if hard_link.as_deref().is_some_and(climbs) {
        "its hard link target climbs out of the root with '..'"
    } else {
        return Ok(());
    };
    Err(ImageError::Unsafe {
        image: c.image.to_string(),
        entry: String::from_utf8_lossy(name).escape_debug().to_string(),
        why,
    })
}

fn padded(size: u64) -> u64 {
    size.div_ceil(BLOCK as u64) * BLOCK as u64
}

/// The header checksum: the sum of all bytes with the checksum field read as spaces.
/// Accepts the historic signed-char sum too, as GNU tar does.
fn checksum_ok(header: &Header) -> bool {
    let Ok(expected) = header.cksum() else {
        return false;
    };
    let bytes = header.as_bytes();
    let field = 148..156;
    let (mut unsigned, mut signed) = (0u32, 0i64);
    for (i, &b) in bytes.iter().enumerate() {
        let b = if field.contains(&i) { b' ' } else { b };
        unsigned += u32::from(b);
        signed += i64::from(b as i8);
    }
    expected == unsigned || i64::from(expected) == signed
}

/// The value of `key` in PAX extended header records ("<len> <key>=<value>\n").
fn pax_record<'d>(mut data: &'d [u8], key: &[u8]) -> Option<&'d [u8]> {
    while !data.is_empty() {
        let space = data.iter().position(|&b| b == b' ')?;
        let len: usize = std::str::from_utf8(&data[..space]).ok()?.parse().ok()?;
        if len <= space || len > data.len() {
            return None;
        }
        let record = &data[space + 1..len];
        let record = record.strip_suffix(b"\n").unwrap_or(record);
        if let Some(value) = record.strip_prefix(key).and_then(|r| r.strip_prefix(b"=")) {
            return Some(value);
        }
        data = &data[len..];
    }
    None
}

/// A broken gzip stream or an I/O error: name the input, keep the reason.
fn read_error(image: &str, source: io::Error) -> ImageError {
    ImageError::Read {
        image: image.to_string(),
        source,
    }
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

    /// Copies one entry whose header (at input byte `at`) was read and checked: the
    /// header, its extension blocks and its data. `true` for a real entry, `false` for an
    /// extension entry, whose content is kept in `pending` for the next one.
    fn copy_entry(
        &mut self,
        header: &Header,
        at: u64,
        pending: &mut Pending,
    ) -> Result<bool, ImageError> {
        let kind = header.entry_type();
        let is_extension = kind.is_pax_local_extensions()
            || kind.is_pax_global_extensions()
            || kind.is_gnu_longname()
            || kind.is_gnu_longlink();
        let header_size = header
            .entry_size()
            .map_err(|e| self.damaged(format!("bad size field at byte {at}: {e}")))?;
        let size = match pending.size.take() {
            Some(size) if !is_extension => size,
            keep => {
                pending.size = keep;
                header_size
            }
        };
        self.write(header.as_bytes())?;
        if kind.is_gnu_sparse() && header.as_gnu().is_some_and(|gnu| gnu.is_extended()) {
            self.copy_sparse_extensions()?;
        }
        if kind.is_pax_local_extensions() {
            self.copy_pax_header(size, at, pending)?;
        } else if kind.is_gnu_longname() || kind.is_gnu_longlink() {
            let name = self.copy_long_name(size, at)?;
            if kind.is_gnu_longname() {
                pending.name = Some(name);
            } else {
                pending.link = Some(name);
            }
        } else {
            self.copy_data(padded(size))?;
        }
        if is_extension {
            return Ok(false);
        }
        let name = pending
            .name
            .take()
            .unwrap_or_else(|| header.path_bytes().into_owned());
        let link = pending
            .link
            .take()
            .or_else(|| header.link_name_bytes().map(|l| l.into_owned()));
        check_entry(self, &name, kind.is_hard_link().then_some(link).flatten())?;
        Ok(true)
    }

    /// A PAX extended header's records, copied; its `size`, `path` and `linkpath` apply
    /// to the next entry.
    fn copy_pax_header(
        &mut self,
        size: u64,
        at: u64,
        pending: &mut Pending,
    ) -> Result<(), ImageError> {
        if size > MAX_PAX_LEN {
            return Err(self.damaged(format!("PAX header of {size} bytes at byte {at}")));
        }
        let mut data = vec![0u8; padded(size) as usize];
        self.read_exact(&mut data)?;
        self.write(&data)?;
        let records = &data[..size as usize];
        if let Some(size) = pax_record(records, b"size") {
            let size = std::str::from_utf8(size)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| self.damaged(format!("bad PAX size at byte {at}")))?;
            pending.size = Some(size);
        }
        if let Some(path) = pax_record(records, b"path") {
            pending.name = Some(path.to_vec());
        }
        if let Some(link) = pax_record(records, b"linkpath") {
            pending.link = Some(link.to_vec());
        }
        Ok(())
    }

    /// A GNU long name or long link entry's data, copied; the name, without its NULs.
    fn copy_long_name(&mut self, size: u64, at: u64) -> Result<Vec<u8>, ImageError> {
        if size > MAX_PAX_LEN {
            return Err(self.damaged(format!("long name of {size} bytes at byte {at}")));
        }
        let mut data = vec![0u8; padded(size) as usize];
        self.read_exact(&mut data)?;
        self.write(&data)?;
        let mut name = data[..size as usize].to_vec();
        while name.last() == Some(&0) {
            name.pop();
        }
        Ok(name)
    }

    /// Reads one block; `false` at a clean end of input. `first`: a short input is then
    /// "not a tar" rather than "truncated".
    fn read_block(&mut self, block: &mut [u8; BLOCK], first: bool) -> Result<bool, ImageError> {
        let mut filled = 0;
        while filled < BLOCK {
            let buf = self
                .input
                .fill_buf()
                .map_err(|e| read_error(self.image, e))?;
            if buf.is_empty() {
                break;
            }
            let n = buf.len().min(BLOCK - filled);
            block[filled..filled + n].copy_from_slice(&buf[..n]);
            self.input.consume(n);
            filled += n;
        }
        self.offset += filled as u64;
        match filled {
            0 if !first => Ok(false),
            BLOCK => Ok(true),
            _ if first => Err(self.not_a_tar()),
            _ => Err(self.damaged(format!("truncated at byte {}", self.offset))),
        }
    }

    fn read_exact(&mut self, data: &mut [u8]) -> Result<(), ImageError> {
        let mut filled = 0;
        while filled < data.len() {
            let buf = self
                .input
                .fill_buf()
                .map_err(|e| read_error(self.image, e))?;
            if buf.is_empty() {
                return Err(self.damaged(format!("truncated at byte {}", self.offset)));
            }
            let n = buf.len().min(data.len() - filled);
            data[filled..filled + n].copy_from_slice(&buf[..n]);
            self.input.consume(n);
            filled += n;
            self.offset += n as u64;
        }
        Ok(())
    }

    /// Copies `len` bytes straight from the input's buffer to the output.
    fn copy_data(&mut self, mut len: u64) -> Result<(), ImageError> {
        while len > 0 {
            let buf = self
                .input
                .fill_buf()
                .map_err(|e| read_error(self.image, e))?;
            if buf.is_empty() {
                return Err(self.damaged(format!("truncated at byte {}", self.offset)));
            }
            let n = buf.len().min(usize::try_from(len).unwrap_or(usize::MAX));
            self.out.write_all(&buf[..n]).map_err(ImageError::Write)?;
            self.input.consume(n);
            self.offset += n as u64;
            len -= n as u64;
        }
        Ok(())
    }

    /// The blocks of a GNU sparse map that follow the header, each ending with an
    /// "is extended" flag.
    fn copy_sparse_extensions(&mut self) -> Result<(), ImageError> {
        let mut block = [0u8; BLOCK];
        loop {
            self.read_exact(&mut block)?;
            self.write(&block)?;
            if block[504] == 0 {
                return Ok(());
            }
        }
    }

    fn drain(&mut self) -> Result<(), ImageError> {
        loop {
            let n = self
                .input
                .fill_buf()
                .map_err(|e| read_error(self.image, e))?
                .len();
            if n == 0 {
                return Ok(());
            }
            self.input.consume(n);
        }
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), ImageError> {
        self.out.write_all(bytes).map_err(ImageError::Write)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let stats = copy(&input[..], "t", &mut out).unwrap();
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
        copy(&input[..], "t", &mut out).unwrap();
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
        assert_eq!(copy(&raw[..], "t", &mut out).unwrap().entries, 2);
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
        match copy(raw, "IMG", &mut Vec::new()) {
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
        assert_eq!(copy(&raw[..], "IMG", &mut Vec::new()).unwrap().entries, 1);
    }

    #[test]
    fn refuses_what_is_not_a_tar() {
        for input in [&b""[..], b"hello world", &[0u8; 1024], &[b'x'; 4096]] {
            let err = copy(input, "IMG", &mut Vec::new()).unwrap_err();
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
        let err = copy(&input[..700], "IMG", &mut Vec::new()).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("IMG is a damaged tar archive (truncated"),
            "{err}"
        );
    }

    #[test]
    fn reads_pax_records() {
        let data = b"20 path=a/b/c/d/e/f\n11 size=42\n";
        assert_eq!(pax_record(data, b"size"), Some(&b"42"[..]));
        assert_eq!(pax_record(data, b"path"), Some(&b"a/b/c/d/e/f"[..]));
        assert_eq!(pax_record(data, b"mtime"), None);
    }
}
