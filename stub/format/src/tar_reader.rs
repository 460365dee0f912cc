//! A tar reader with bounded memory, for archives from anywhere.
//!
//! It reads what docker, podman, umoci and GNU tar write: ustar and GNU headers, octal
//! or base-256 numbers, GNU long names and link names (`L`, `K`), PAX records (`x`;
//! global `g` records are read and dropped), GNU sparse files (`S`, with extension
//! headers) and PAX sparse files (formats 0.0, 0.1 and 1.0), and an archive that ends
//! without its two zero blocks. Everything it holds for one entry is capped by
//! [`Limits`]: a 2 GiB long name is refused after 16 KiB, not read.
//!
//! The caller gets each entry's [`Header`] from [`TarReader::next_entry`], then reads
//! its stored bytes with [`TarReader::read_data`]; for a sparse file those are the data
//! chunks of [`Header::sparse`], in order, and the holes are the caller's to make.

use std::fmt;
use std::io::{self, BufRead, Read};

const BLOCK: usize = 512;

/// A PAX record or an xattr: (key, value).
pub type Pair = (Vec<u8>, Vec<u8>);

/// How much one entry may make the reader hold.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// A GNU long name or long link name.
    pub name: u64,
    /// One PAX extended header (all its records).
    pub pax: u64,
    /// Data chunks of one sparse file.
    pub sparse_chunks: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            name: 16 * 1024,
            pax: 256 * 1024,
            sparse_chunks: 65_536,
        }
    }
}

/// What kind of file an entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    HardLink,
    Fifo,
    CharDevice,
    BlockDevice,
    /// Anything else (a volume label, a vendor extension): no file to make.
    Other(u8),
}

/// One entry, with every extension header that preceded it applied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Header {
    pub path: Vec<u8>,
    /// A symlink's target or a hard link's source.
    pub link: Vec<u8>,
    pub kind: Option<Kind>,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: i64,
    /// The file's size (for a sparse file, its apparent size).
    pub size: u64,
    /// Bytes stored in the archive for this entry (for a sparse file, its chunks).
    pub stored: u64,
    /// A sparse file's data chunks: (offset in the file, length), in order.
    pub sparse: Option<Vec<(u64, u64)>>,
    /// `SCHILY.xattr.NAME` records: (NAME, value).
    pub xattrs: Vec<Pair>,
}

impl Header {
    pub fn kind(&self) -> Kind {
        self.kind.unwrap_or(Kind::Other(0))
    }
}

/// Why the archive cannot be read further.
#[derive(Debug)]
pub enum TarError {
    Io(io::Error),
    /// The archive is damaged or hostile; the text says how, `offset` where.
    Bad {
        offset: u64,
        why: String,
    },
}

impl fmt::Display for TarError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TarError::Io(e) => write!(f, "{e}"),
            TarError::Bad { offset, why } => write!(f, "{why} (at byte {offset})"),
        }
    }
}

impl std::error::Error for TarError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TarError::Io(e) => Some(e),
            TarError::Bad { .. } => None,
        }
    }
}

impl From<io::Error> for TarError {
    fn from(e: io::Error) -> Self {
        TarError::Io(e)
    }
}

/// Extension records waiting for the entry they describe.
#[derive(Default)]
struct Pending {
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    pax: Vec<Pair>,
}

pub struct TarReader<R> {
    inner: R,
    limits: Limits,
    /// Bytes consumed from `inner`.
    offset: u64,
    /// Stored bytes of the current entry not read yet, and the padding after them.
    left: u64,
    pad: u64,
    done: bool,
}

impl<R: Read> TarReader<R> {
    pub fn new(inner: R, limits: Limits) -> Self {
        TarReader {
            inner,
            limits,
            offset: 0,
            left: 0,
            pad: 0,
            done: false,
        }
    }

    /// Bytes of the archive consumed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    pub fn into_inner(self) -> R {
        self.inner
    }

    fn bad<T>(&self, why: impl Into<String>) -> Result<T, TarError> {
        Err(TarError::Bad {
            offset: self.offset,
            why: why.into(),
        })
    }

    /// Reads up to one block; Ok(false) at a clean end of the stream.
    fn read_block(&mut self, block: &mut [u8; BLOCK]) -> Result<bool, TarError> {
        let mut got = 0;
        while got < BLOCK {
            match self.inner.read(&mut block[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.offset += got as u64;
        match got {
            0 => Ok(false),
            BLOCK => Ok(true),
            _ => self.bad("the archive ends inside a header"),
        }
    }

    fn skip(&mut self, mut n: u64) -> Result<(), TarError> {
        let mut buf = [0u8; 8192];
        while n > 0 {
            let want = n.min(buf.len() as u64) as usize;
            let got = self.inner.read(&mut buf[..want])?;
            if got == 0 {
                return self.bad("the archive ends inside an entry's data");
            }
            self.offset += got as u64;
            n -= got as u64;
        }
        Ok(())
    }

    /// Skips the padding of `n` bytes; Ok(false) when the stream ends exactly where it
    /// would start (as Go's archive/tar, which docker and podman use, accepts). A
    /// stream ending inside the padding is damaged.
    fn skip_to_eof_or(&mut self, mut n: u64) -> Result<bool, TarError> {
        let mut buf = [0u8; BLOCK];
        let mut first = true;
        while n > 0 {
            let want = n.min(buf.len() as u64) as usize;
            let got = match self.inner.read(&mut buf[..want]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => other?,
            };
            match (got, first) {
                (0, true) => return Ok(false),
                (0, false) => return self.bad("the archive ends inside an entry's data"),
                _ => {}
            }
            first = false;
            self.offset += got as u64;
            n -= got as u64;
        }
        Ok(true)
    }

    /// The stored bytes of an extension header, at most `cap`.
    fn read_extension(&mut self, size: u64, cap: u64, what: &str) -> Result<Vec<u8>, TarError> {
        if size > cap {
            return self.bad(format!(
                "a {what} of {size} bytes (more than the {cap} allowed)"
            ));
        }
        let mut data = vec![0u8; size as usize];
        self.read_exact_counted(&mut data)?;
        self.skip(padding(size))?;
        Ok(data)
    }

    fn read_exact_counted(&mut self, buf: &mut [u8]) -> Result<(), TarError> {
        match self.inner.read_exact(buf) {
            Ok(()) => {
                self.offset += buf.len() as u64;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                self.bad("the archive ends inside an entry's data")
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The next entry, or None at the end of the archive (two zero blocks, one zero
    /// block followed by the end of the stream, or the end of the stream itself where
    /// a header would start). The previous entry's unread data is skipped.
    pub fn next_entry(&mut self) -> Result<Option<Header>, TarError> {
        if self.done {
            return Ok(None);
        }
        self.skip(self.left)?;
        // An archive may end right after the last file's data, without its padding or
        // the two zero blocks (umoci writes such layers; docker and podman read them).
        if !self.skip_to_eof_or(self.pad)? {
            self.done = true;
            return Ok(None);
        }
        self.left = 0;
        self.pad = 0;
        let mut pending = Pending::default();
        let mut block = [0u8; BLOCK];
        loop {
            if !self.read_block(&mut block)? {
                self.done = true;
                return match pending.any() {
                    true => self.bad("extension headers with no entry after them"),
                    false => Ok(None),
                };
            }
            if block.iter().all(|&b| b == 0) {
                // The end: what follows (a second zero block, padding) is not read.
                self.done = true;
                return Ok(None);
            }
            self.check_sum(&block)?;
            let size = self.number(&block[124..136], "size")?;
            match block[156] {
                b'L' => {
                    let name = self.read_extension(size, self.limits.name, "long name")?;
                    pending.long_name = Some(trim_trailing_nul(name));
                }
                b'K' => {
                    let link = self.read_extension(size, self.limits.name, "long link name")?;
                    pending.long_link = Some(trim_trailing_nul(link));
                }
                b'x' | b'X' => {
                    let data = self.read_extension(size, self.limits.pax, "PAX header")?;
                    let records = self.pax_records(&data)?;
                    pending.pax.extend(records);
                }
                b'g' => {
                    self.read_extension(size, self.limits.pax, "PAX global header")?;
                }
                _ => return self.entry(&block, size, pending).map(Some),
            }
        }
    }

    fn check_sum(&self, block: &[u8; BLOCK]) -> Result<(), TarError> {
        let stored = parse_octal(&block[148..156]);
        let mut unsigned: u64 = 0;
        let mut signed: i64 = 0;
        for (i, &b) in block.iter().enumerate() {
            let b = if (148..156).contains(&i) { b' ' } else { b };
            unsigned += u64::from(b);
            signed += i64::from(b as i8);
        }
        match stored {
            Some(sum) if sum == unsigned || sum as i64 == signed => Ok(()),
            _ => self.bad("a header's checksum does not match (not a tar, or damaged)"),
        }
    }

    fn number(&self, field: &[u8], what: &str) -> Result<u64, TarError> {
        match parse_number(field) {
            Some(n) => Ok(n),
            None => self.bad(format!("a header's {what} field is not a number")),
        }
    }

    fn pax_records(&self, mut data: &[u8]) -> Result<Vec<Pair>, TarError> {
        let mut records = Vec::new();
        while !data.is_empty() {
            if data.iter().all(|&b| b == 0) {
                break;
            }
            let space = data.iter().position(|&b| b == b' ');
            let len = space
                .and_then(|s| std::str::from_utf8(&data[..s]).ok())
                .and_then(|s| s.parse::<usize>().ok());
            let (Some(space), Some(len)) = (space, len) else {
                return self.bad("a PAX record without its length");
            };
            if len <= space + 1 || len > data.len() || data[len - 1] != b'\n' {
                return self.bad("a PAX record of a wrong length");
            }
            let record = &data[space + 1..len - 1];
            let Some(eq) = record.iter().position(|&b| b == b'=') else {
                return self.bad("a PAX record without '='");
            };
            records.push((record[..eq].to_vec(), record[eq + 1..].to_vec()));
            data = &data[len..];
        }
        Ok(records)
    }

    /// Builds the entry of `block`, applies the pending extensions, reads a sparse map.
    fn entry(
        &mut self,
        block: &[u8; BLOCK],
        stored: u64,
        pending: Pending,
    ) -> Result<Header, TarError> {
        let mut h = Header {
            path: ustar_path(block),
            link: trim_nul(block[157..257].to_vec()),
            kind: Some(kind_of(block[156])),
            mode: (parse_number(&block[100..108]).unwrap_or(0) & 0o7777) as u32,
            uid: self.number(&block[108..116], "uid").unwrap_or(0),
            gid: self.number(&block[116..124], "gid").unwrap_or(0),
            // Before 1970 is negative (GNU tar writes it in base-256); an mtime that is
            // not a number is the epoch, as an unreadable one tells nothing.
            mtime: parse_signed(&block[136..148]).unwrap_or(0),
            size: stored,
            stored,
            ..Header::default()
        };
        if let Some(name) = pending.long_name {
            h.path = name;
        }
        if let Some(link) = pending.long_link {
            h.link = link;
        }
        if block[156] == b'S' {
            h.kind = Some(Kind::File);
            h.sparse = Some(self.gnu_sparse_map(block, &mut h)?);
        }
        let mut pax_sparse = PaxSparse::default();
        for (key, value) in pending.pax {
            self.apply_pax(&mut h, &mut pax_sparse, key, value)?;
        }
        self.left = h.stored;
        self.pad = padding(h.stored);
        if pax_sparse.any() {
            self.pax_sparse(&mut h, pax_sparse)?;
        }
        if h.kind() == Kind::Dir || h.kind() == Kind::Symlink || h.kind() == Kind::HardLink {
            // Their stored bytes (if any) are not file content.
            h.size = 0;
        }
        Ok(h)
    }

    fn apply_pax(
        &self,
        h: &mut Header,
        sparse: &mut PaxSparse,
        key: Vec<u8>,
        value: Vec<u8>,
    ) -> Result<(), TarError> {
        let num = |v: &[u8]| {
            std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
        };
        match key.as_slice() {
            b"path" => h.path = value,
            b"linkpath" => h.link = value,
            b"size" => match num(&value) {
                Some(n) => {
                    h.size = n;
                    h.stored = n;
                }
                None => return self.bad("a PAX size that is not a number"),
            },
            b"uid" => h.uid = num(&value).unwrap_or(h.uid),
            b"gid" => h.gid = num(&value).unwrap_or(h.gid),
            b"mtime" => {
                let whole = value.split(|&b| b == b'.').next().unwrap_or_default();
                let text = std::str::from_utf8(whole).unwrap_or_default();
                h.mtime = text.parse::<i64>().unwrap_or(h.mtime);
            }
            b"GNU.sparse.name" => sparse.name = Some(value),
            b"GNU.sparse.size" | b"GNU.sparse.realsize" => sparse.real_size = num(&value),
            b"GNU.sparse.major" => sparse.major = num(&value),
            b"GNU.sparse.map" => sparse.map = Some(value),
            b"GNU.sparse.offset" => sparse.offsets.push(num(&value).unwrap_or(u64::MAX)),
            b"GNU.sparse.numbytes" => sparse.lengths.push(num(&value).unwrap_or(u64::MAX)),
            _ => {
                if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                    h.xattrs.push((name.to_vec(), value));
                }
            }
        }
        Ok(())
    }

    /// An old GNU sparse entry's map: four chunks in the header, more in extension
    /// blocks that follow it.
    fn gnu_sparse_map(
        &mut self,
        block: &[u8; BLOCK],
        h: &mut Header,
    ) -> Result<Vec<(u64, u64)>, TarError> {
        let mut chunks = Vec::new();
        self.add_chunks(&block[386..386 + 4 * 24], &mut chunks)?;
        let mut extended = block[482] != 0;
        h.size = self.number(&block[483..495], "sparse real size")?;
        let mut ext = [0u8; BLOCK];
        while extended {
            if !self.read_block(&mut ext)? {
                return self.bad("the archive ends inside a sparse map");
            }
            self.add_chunks(&ext[..21 * 24], &mut chunks)?;
            extended = ext[504] != 0;
        }
        self.check_chunks(&chunks, h.size, h.stored)?;
        Ok(chunks)
    }

    fn add_chunks(&self, area: &[u8], chunks: &mut Vec<(u64, u64)>) -> Result<(), TarError> {
        for pair in area.chunks(24) {
            if pair.iter().all(|&b| b == 0) {
                continue;
            }
            let offset = self.number(&pair[..12], "sparse offset")?;
            let len = self.number(&pair[12..24], "sparse length")?;
            if chunks.len() >= self.limits.sparse_chunks {
                return self.bad("a sparse file of too many chunks");
            }
            chunks.push((offset, len));
        }
        Ok(())
    }

    /// Chunks in order, not overlapping, inside the file, adding up to what is stored.
    fn check_chunks(&self, chunks: &[(u64, u64)], size: u64, stored: u64) -> Result<(), TarError> {
        let mut end = 0u64;
        let mut total = 0u64;
        for &(offset, len) in chunks {
            let Some(chunk_end) = offset.checked_add(len) else {
                return self.bad("a sparse chunk past the largest file");
            };
            if offset < end || chunk_end > size {
                return self.bad("sparse chunks out of order or past the file's end");
            }
            end = chunk_end;
            total += len;
        }
        if total != stored {
            return self.bad(format!(
                "a sparse map of {total} bytes for {stored} stored bytes"
            ));
        }
        Ok(())
    }

    /// PAX sparse formats: 0.0 (offset/numbytes records), 0.1 (a map record) and 1.0
    /// (the map at the start of the data, in decimal lines padded to a block).
    fn pax_sparse(&mut self, h: &mut Header, sparse: PaxSparse) -> Result<(), TarError> {
        let Some(real_size) = sparse.real_size else {
            return self.bad("a PAX sparse file without its real size");
        };
        if let Some(name) = sparse.name {
            h.path = name;
        }
        let numbers: Vec<u64> = if sparse.major == Some(1) {
            self.sparse_map_from_data()?
        } else if let Some(map) = sparse.map {
            let mut numbers = Vec::new();
            for n in map.split(|&b| b == b',') {
                let n = std::str::from_utf8(n)
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok());
                match n {
                    Some(n) if numbers.len() / 2 < self.limits.sparse_chunks => numbers.push(n),
                    Some(_) => return self.bad("a sparse file of too many chunks"),
                    None => return self.bad("a PAX sparse map that is not numbers"),
                }
            }
            numbers
        } else {
            if sparse.offsets.len() != sparse.lengths.len() {
                return self.bad("a PAX sparse map with unpaired records");
            }
            let pairs = sparse.offsets.iter().zip(&sparse.lengths);
            pairs.flat_map(|(&o, &l)| [o, l]).collect()
        };
        if !numbers.len().is_multiple_of(2) {
            return self.bad("a PAX sparse map with an odd count");
        }
        let chunks: Vec<(u64, u64)> = numbers.chunks(2).map(|p| (p[0], p[1])).collect();
        h.kind = Some(Kind::File);
        h.size = real_size;
        h.stored = self.left;
        self.check_chunks(&chunks, real_size, self.left)?;
        h.sparse = Some(chunks);
        Ok(())
    }

    /// Format 1.0's map: a count, then offset and length pairs, one decimal number a
    /// line, padded to a block; read from the entry's data, which then holds the chunks.
    fn sparse_map_from_data(&mut self) -> Result<Vec<u64>, TarError> {
        let mut numbers = Vec::new();
        let mut count: Option<u64> = None;
        let mut line = Vec::new();
        let mut used = 0u64;
        let mut byte = [0u8; 1];
        while !matches!(count, Some(c) if numbers.len() as u64 >= c * 2) {
            if self.left == 0 || line.len() > 20 {
                return self.bad("a damaged PAX sparse map");
            }
            self.read_exact_counted(&mut byte)?;
            self.left -= 1;
            used += 1;
            if byte[0] != b'\n' {
                line.push(byte[0]);
                continue;
            }
            let n = std::str::from_utf8(&line)
                .ok()
                .and_then(|s| s.parse::<u64>().ok());
            line.clear();
            match (n, count) {
                (Some(n), None) if n <= self.limits.sparse_chunks as u64 => count = Some(n),
                (Some(_), None) => return self.bad("a sparse file of too many chunks"),
                (Some(n), Some(_)) => numbers.push(n),
                (None, _) => return self.bad("a damaged PAX sparse map"),
            }
        }
        let pad = padding(used).min(self.left);
        self.skip(pad)?;
        self.left -= pad;
        Ok(numbers)
    }

    /// Reads the current entry's stored bytes (0 at their end).
    pub fn read_data(&mut self, buf: &mut [u8]) -> Result<usize, TarError> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = (buf.len() as u64).min(self.left) as usize;
        let got = loop {
            match self.inner.read(&mut buf[..want]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => break other?,
            }
        };
        if got == 0 {
            return self.bad("the archive ends inside an entry's data");
        }
        self.offset += got as u64;
        self.left -= got as u64;
        Ok(got)
    }
}

impl<R: BufRead> TarReader<R> {
    /// The current entry's next stored bytes, straight from the reader's buffer (empty
    /// at their end); [`Self::consume_data`] says how many were used.
    pub fn data(&mut self) -> Result<&[u8], TarError> {
        if self.left == 0 {
            return Ok(&[]);
        }
        let available = loop {
            match self.inner.fill_buf() {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => break other?.len(),
            }
        };
        if available == 0 {
            return self.bad("the archive ends inside an entry's data");
        }
        let left = usize::try_from(self.left).unwrap_or(usize::MAX);
        // Buffered: no read this time.
        Ok(&self.inner.fill_buf()?[..available.min(left)])
    }

    /// Marks `n` bytes of [`Self::data`] used.
    pub fn consume_data(&mut self, n: usize) {
        let n = (n as u64).min(self.left);
        self.inner.consume(n as usize);
        self.offset += n;
        self.left -= n;
    }
}

#[derive(Default)]
struct PaxSparse {
    name: Option<Vec<u8>>,
    real_size: Option<u64>,
    major: Option<u64>,
    map: Option<Vec<u8>>,
    offsets: Vec<u64>,
    lengths: Vec<u64>,
}

impl PaxSparse {
    fn any(&self) -> bool {
        self.real_size.is_some() || self.major.is_some() || self.map.is_some()
    }
}

impl Pending {
    fn any(&self) -> bool {
        self.long_name.is_some() || self.long_link.is_some() || !self.pax.is_empty()
    }
}

fn padding(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

/// A long name's data ends with NULs; one inside it is kept (for the caller to refuse).
fn trim_trailing_nul(mut bytes: Vec<u8>) -> Vec<u8> {
    while bytes.last() == Some(&0) {
        bytes.pop();
    }
    bytes
}

/// A fixed-size header field ends at its first NUL.
fn trim_nul(mut bytes: Vec<u8>) -> Vec<u8> {
    if let Some(end) = bytes.iter().position(|&b| b == 0) {
        bytes.truncate(end);
    }
    bytes
}

/// name, with ustar's prefix (POSIX `ustar\0`; GNU's `ustar  \0` has none there).
fn ustar_path(block: &[u8; BLOCK]) -> Vec<u8> {
    let name = trim_nul(block[..100].to_vec());
    if &block[257..263] != b"ustar\0" || block[345] == 0 {
        return name;
    }
    let mut path = trim_nul(block[345..500].to_vec());
    path.push(b'/');
    path.extend_from_slice(&name);
    path
}

fn kind_of(flag: u8) -> Kind {
    match flag {
        b'0' | 0 | b'7' => Kind::File,
        b'1' => Kind::HardLink,
        b'2' => Kind::Symlink,
        b'3' => Kind::CharDevice,
        b'4' => Kind::BlockDevice,
        b'5' => Kind::Dir,
        b'6' => Kind::Fifo,
        other => Kind::Other(other),
    }
}

fn parse_octal(field: &[u8]) -> Option<u64> {
    let text: Vec<u8> = field
        .iter()
        .copied()
        .skip_while(|&b| b == b' ')
        .take_while(|&b| b != 0 && b != b' ')
        .collect();
    if text.is_empty() {
        return Some(0);
    }
    let text = std::str::from_utf8(&text).ok()?;
    u64::from_str_radix(text, 8).ok()
}

/// A field that may be negative (an mtime): octal, or base-256 in two's complement
/// (the high bit of the first byte set, the next one the sign), as Go's archive/tar
/// reads it. `None` past 64 bits.
fn parse_signed(field: &[u8]) -> Option<i64> {
    let Some(&first) = field.first().filter(|&&b| b & 0x80 != 0) else {
        return parse_octal(field).and_then(|n| i64::try_from(n).ok());
    };
    let invert = if first & 0x40 != 0 { 0xff } else { 0 };
    let mut n: u64 = 0;
    for (i, &b) in field.iter().enumerate() {
        let byte = if i == 0 {
            (b ^ invert) & 0x7f
        } else {
            b ^ invert
        };
        if n >> 56 != 0 {
            return None;
        }
        n = (n << 8) | u64::from(byte);
    }
    let n = i64::try_from(n).ok()?;
    Some(if invert != 0 { !n } else { n })
}

/// Octal, or base-256 (the high bit of the first byte set) for large values.
fn parse_number(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|&b| b & 0x80 != 0) {
        if field[0] & 0x40 != 0 {
            return None; // negative
        }
        let mut n: u64 = u64::from(field[0] & 0x3f);
        for &b in &field[1..] {
            n = n.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return Some(n);
    }
    parse_octal(field)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header block with a valid checksum.
    fn header(name: &[u8], flag: u8, size: u64) -> Vec<u8> {
        let mut b = vec![0u8; BLOCK];
        b[..name.len().min(100)].copy_from_slice(&name[..name.len().min(100)]);
        b[100..107].copy_from_slice(b"0000644");
        b[108..115].copy_from_slice(b"0001750");
        b[116..123].copy_from_slice(b"0001750");
        if size < 1 << 33 {
            b[124..135].copy_from_slice(format!("{size:011o}").as_bytes());
        } else {
            b[124] = 0x80;
            b[128..136].copy_from_slice(&size.to_be_bytes());
        }
        b[136..147].copy_from_slice(b"14000000000");
        b[156] = flag;
        b[257..263].copy_from_slice(b"ustar\0");
        b[263..265].copy_from_slice(b"00");
        seal(&mut b);
        b
    }

    fn seal(b: &mut [u8]) {
        b[148..156].copy_from_slice(b"        ");
        let sum: u64 = b.iter().map(|&x| u64::from(x)).sum();
        b[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    }

    fn data(bytes: &[u8]) -> Vec<u8> {
        let mut d = bytes.to_vec();
        d.resize(bytes.len() + padding(bytes.len() as u64) as usize, 0);
        d
    }

    fn pax(records: &[(&str, &[u8])]) -> Vec<u8> {
        let mut body = Vec::new();
        for (k, v) in records {
            let base = k.len() + v.len() + 3;
            let mut len = base + base.to_string().len();
            if len.to_string().len() != base.to_string().len() {
                len += 1;
            }
            body.extend_from_slice(format!("{len} {k}=").as_bytes());
            body.extend_from_slice(v);
            body.push(b'\n');
        }
        let mut out = header(b"pax", b'x', body.len() as u64);
        out.extend(data(&body));
        out
    }

    fn read_all(archive: &[u8]) -> Result<Vec<(Header, Vec<u8>)>, TarError> {
        let mut r = TarReader::new(archive, Limits::default());
        let mut out = Vec::new();
        while let Some(h) = r.next_entry()? {
            let mut bytes = Vec::new();
            let mut buf = [0u8; 100];
            loop {
                let n = r.read_data(&mut buf)?;
                if n == 0 {
                    break;
                }
                bytes.extend_from_slice(&buf[..n]);
            }
            out.push((h, bytes));
        }
        Ok(out)
    }

    #[test]
    fn plain_entries_and_a_missing_end() {
        let mut a = header(b"etc/", b'5', 0);
        a.extend(header(b"etc/hosts", b'0', 5));
        a.extend(data(b"hello"));
        a.extend(header(b"etc/link", b'2', 0));
        // no end-of-archive blocks: ends where a header would start
        let entries = read_all(&a).unwrap();
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[0].0.kind(), Kind::Dir);
        assert_eq!(entries[1].0.path, b"etc/hosts");
        assert_eq!(entries[1].1, b"hello");
        assert_eq!((entries[1].0.mode, entries[1].0.uid), (0o644, 1000));
        assert_eq!(entries[2].0.kind(), Kind::Symlink);
    }

    #[test]
    fn an_archive_may_end_right_after_the_last_files_data() {
        let mut a = header(b"a", b'0', 3);
        a.extend_from_slice(b"abc"); // no padding, no end blocks (umoci insert)
        let entries = read_all(&a).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].1, b"abc");
    }

    #[test]
    fn unread_data_is_skipped_and_zero_blocks_end_it() {
        let mut a = header(b"a", b'0', 700);
        a.extend(data(&[7u8; 700]));
        a.extend(header(b"b", b'0', 0));
        a.extend(vec![0u8; 1024]);
        a.extend(b"trailing garbage after the end");
        let mut r = TarReader::new(&a[..], Limits::default());
        assert_eq!(r.next_entry().unwrap().unwrap().path, b"a");
        assert_eq!(r.next_entry().unwrap().unwrap().path, b"b");
        assert!(r.next_entry().unwrap().is_none());
        assert!(r.next_entry().unwrap().is_none());
    }

    #[test]
    fn long_names_links_and_pax_apply_to_the_next_entry() {
        let long = vec![b'n'; 300];
        let mut a = header(b"././@LongLink", b'L', long.len() as u64 + 1);
        let mut name = long.clone();
        name.push(0);
        a.extend(data(&name));
        a.extend(header(b"././@LongLink", b'K', 6));
        a.extend(data(b"target"));
        a.extend(header(b"short", b'2', 0));
        a.extend(pax(&[
            ("path", b"pax/name"),
            ("uid", b"100000"),
            ("mtime", b"1700000000.5"),
            ("SCHILY.xattr.security.capability", b"\x01\x02"),
        ]));
        a.extend(header(b"ignored", b'0', 0));
        let entries = read_all(&a).unwrap();
        assert_eq!(entries[0].0.path, long);
        assert_eq!(entries[0].0.link, b"target");
        assert_eq!(entries[1].0.path, b"pax/name");
        assert_eq!(entries[1].0.uid, 100000);
        assert_eq!(entries[1].0.mtime, 1_700_000_000);
        assert_eq!(
            entries[1].0.xattrs,
            vec![(b"security.capability".to_vec(), b"\x01\x02".to_vec())]
        );
    }

    #[test]
    fn huge_extension_headers_are_refused_before_they_are_read() {
        // Says 2 GiB, holds nothing: refused from the header alone.
        let a = header(b"././@LongLink", b'L', 2 << 30);
        let err = read_all(&a).unwrap_err();
        assert!(
            err.to_string().contains("long name of 2147483648 bytes"),
            "{err}"
        );
        let a = header(b"pax", b'x', 1 << 40);
        assert!(read_all(&a).is_err());
    }

    #[test]
    fn base256_sizes_and_prefixes() {
        let mut b = header(b"name", b'0', 0);
        b[124..136].copy_from_slice(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3]);
        b[345..351].copy_from_slice(b"prefix");
        seal(&mut b);
        b.extend(data(b"abc"));
        let entries = read_all(&b).unwrap();
        assert_eq!(entries[0].0.path, b"prefix/name");
        assert_eq!(entries[0].1, b"abc");
    }

    #[test]
    fn base256_owners_and_times_before_1970() {
        let mut b = header(b"old", b'0', 0);
        // uid 3000000 and gid 2^40 in base-256; mtime -100 in base-256 two's complement.
        b[108..116].copy_from_slice(&[0x80, 0, 0, 0, 0, 0x2d, 0xc6, 0xc0]);
        b[116..124].copy_from_slice(&[0x80, 0, 1, 0, 0, 0, 0, 0]);
        b[136..148].copy_from_slice(&[0xff; 12]);
        b[147] = 0x9c;
        seal(&mut b);
        b.extend(header(b"future", b'0', 0));
        let at = b.len() - BLOCK;
        b[at + 136..at + 148]
            .copy_from_slice(&[0x80, 0, 0, 0, 0, 0, 0, 0x17, 0x48, 0x76, 0xe7, 0xff]);
        seal(&mut b[at..]);
        let entries = read_all(&b).unwrap();
        assert_eq!(entries[0].0.uid, 3_000_000);
        assert_eq!(entries[0].0.gid, 1 << 40);
        assert_eq!(entries[0].0.mtime, -100);
        assert_eq!(entries[1].0.mtime, 99_999_999_999);
        assert_eq!(
            parse_signed(&[0x80, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            None
        );
        assert_eq!(parse_signed(b"00000000017\0"), Some(15));
    }

    #[test]
    fn a_bad_checksum_names_the_offset() {
        let mut a = header(b"a", b'0', 0);
        a.extend(header(b"b", b'0', 0));
        a[BLOCK + 3] ^= 1;
        let err = read_all(&a).unwrap_err();
        assert!(err.to_string().contains("checksum"), "{err}");
        assert!(err.to_string().contains("at byte 1024"), "{err}");
    }

    #[test]
    fn gnu_sparse_maps_with_extensions() {
        let mut b = header(b"sparse", b'S', 6);
        // chunk (0, 2) and (10, 2) in the header, (20, 2) in an extension block
        b[386..398].copy_from_slice(b"00000000000\0");
        b[398..410].copy_from_slice(b"00000000002\0");
        b[410..422].copy_from_slice(b"00000000012\0");
        b[422..434].copy_from_slice(b"00000000002\0");
        b[482] = 1;
        b[483..495].copy_from_slice(b"00000000030\0");
        seal(&mut b);
        let mut ext = vec![0u8; BLOCK];
        ext[..12].copy_from_slice(b"00000000024\0");
        ext[12..24].copy_from_slice(b"00000000002\0");
        b.extend(ext);
        b.extend(data(b"aabbcc"));
        let entries = read_all(&b).unwrap();
        let (h, bytes) = &entries[0];
        assert_eq!(h.kind(), Kind::File);
        assert_eq!(h.size, 24);
        assert_eq!(h.sparse.as_deref(), Some(&[(0, 2), (10, 2), (20, 2)][..]));
        assert_eq!(bytes, b"aabbcc");
    }

    #[test]
    fn pax_sparse_formats() {
        // 1.0: the map in the data
        let mut map = b"2\n0\n3\n100\n2\n".to_vec();
        map.resize(BLOCK, 0);
        map.extend_from_slice(b"xyzab");
        let mut a = pax(&[
            ("GNU.sparse.major", b"1"),
            ("GNU.sparse.minor", b"0"),
            ("GNU.sparse.name", b"real/name"),
            ("GNU.sparse.realsize", b"4096"),
        ]);
        a.extend(header(b"GNUSparseFile.0/name", b'0', map.len() as u64));
        a.extend(data(&map));
        // 0.1: the map in a record
        a.extend(pax(&[
            ("GNU.sparse.size", b"50"),
            ("GNU.sparse.map", b"0,1,40,2"),
            ("GNU.sparse.name", b"other"),
        ]));
        a.extend(header(b"x", b'0', 3));
        a.extend(data(b"pqr"));
        let entries = read_all(&a).unwrap();
        assert_eq!(entries[0].0.path, b"real/name");
        assert_eq!(entries[0].0.size, 4096);
        assert_eq!(
            entries[0].0.sparse.as_deref(),
            Some(&[(0, 3), (100, 2)][..])
        );
        assert_eq!(entries[0].1, b"xyzab");
        assert_eq!(entries[1].0.path, b"other");
        assert_eq!(entries[1].0.sparse.as_deref(), Some(&[(0, 1), (40, 2)][..]));
        assert_eq!(entries[1].1, b"pqr");
    }

    #[test]
    fn sparse_maps_that_lie_are_refused() {
        let mut a = pax(&[("GNU.sparse.size", b"10"), ("GNU.sparse.map", b"0,5,2,5")]);
        a.extend(header(b"x", b'0', 10));
        a.extend(data(&[0u8; 10]));
        assert!(read_all(&a).is_err(), "overlapping chunks");
        let mut a = pax(&[("GNU.sparse.size", b"4"), ("GNU.sparse.map", b"0,10")]);
        a.extend(header(b"x", b'0', 10));
        a.extend(data(&[0u8; 10]));
        assert!(read_all(&a).is_err(), "a chunk past the end");
    }

    #[test]
    fn truncated_data_is_an_error() {
        let mut a = header(b"a", b'0', 100);
        a.extend_from_slice(&[1u8; 10]);
        assert!(read_all(&a).is_err());
    }
}
