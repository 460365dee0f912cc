//! Tells an image archive (a tar of an OCI layout or a docker-archive) from a flat root
//! filesystem tar, and indexes its members (name -> offset and size) so that layers can
//! be read in any order.
//!
//! The decision is made on the member names: an image archive holds only `manifest.json`,
//! `repositories`, `index.json`, `oci-layout`, `blobs/sha256/<hex>` and docker's
//! `<hex>.json`, `<hex>.tar`, `<hex>/...`. The first other name means a root filesystem,
//! which is usually the very first entry (`./`, `bin/`).
//!
//! A regular file is indexed in place: one pass over the headers, seeking over the data.
//! A pipe or a compressed file cannot seek: what is read while deciding is copied to an
//! anonymous temporary file; an image archive is then read from that copy, and a root
//! filesystem is replayed from it (usually one header) followed by the rest of the stream.
//! Memory stays flat either way.
use super::error::ImageError;
use super::limits::{tar_limits, MAX_MEMBERS};
use super::store::{normalize, Kind, Member};
use crate::sys;
use crate::util::BUF_SIZE;
use binctr_format::tar_reader::{Header, Kind as EntryKind, TarReader};
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;

/// The longest member name (or link target) of an image archive: docker's
/// `<64 hex>/layer.tar`, OCI's `blobs/sha256/<64 hex>` and the like.
const MAX_MEMBER_NAME: usize = 256;

/// Whether a member name can be part of an image archive.
fn image_member(name: &str) -> bool {
    let name = normalize(name);
    if matches!(
        name.as_str(),
        "" | "manifest.json"
            | "repositories"
            | "index.json"
            | "oci-layout"
            | "blobs"
            | "blobs/sha256"
    ) {
        return true;
    }
    if let Some(hex) = name.strip_prefix("blobs/sha256/") {
        return is_hex64(hex);
    }
    let first = name.split('/').next().unwrap_or_default();
    let stem = first
        .strip_suffix(".json")
        .or_else(|| first.strip_suffix(".tar"))
        .unwrap_or(first);
    is_hex64(stem)
}

pub fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The members seen so far; `Err`: an archive that is an image but asks too much.
type Members = HashMap<String, Member>;

/// Adds one entry, whose data starts at byte `data_at`, to the index; `Ok(false)` when it
/// cannot be part of an image archive.
fn record(h: &Header, data_at: u64, members: &mut Members) -> Result<bool, String> {
    let Ok(name) = std::str::from_utf8(&h.path) else {
        return Ok(false);
    };
    if name.len() > MAX_MEMBER_NAME || h.link.len() > MAX_MEMBER_NAME || !image_member(name) {
        return Ok(false);
    }
    if h.sparse.is_some() {
        return Ok(false); // no image tool writes sparse members
    }
    if members.len() >= MAX_MEMBERS {
        return Err(format!("the archive has more than {MAX_MEMBERS} members"));
    }
    let name = normalize(name);
    match h.kind() {
        EntryKind::File => {
            let member = Member::File {
                offset: data_at,
                size: h.stored,
            };
            members.insert(name, member);
        }
        EntryKind::Symlink | EntryKind::HardLink => {
            let Ok(target) = std::str::from_utf8(&h.link) else {
                return Ok(false);
            };
            let target = if h.kind() == EntryKind::Symlink && !target.starts_with('/') {
                // Relative to the link's directory.
                match name.rsplit_once('/') {
                    Some((dir, _)) => normalize(&format!("{dir}/{target}")),
                    None => normalize(target),
                }
            } else {
                normalize(target)
            };
            members.insert(name, Member::Link(target));
        }
        _ => {}
    }
    Ok(true)
}

/// Reads member headers until the names show a root filesystem (`Ok(None)`) or the
/// archive ends as an image archive. A tar that cannot be read is not an image archive
/// either: the flat reader then says what is wrong with it.
fn scan<R: Read>(tar: &mut TarReader<R>) -> Result<Option<Members>, String> {
    let mut members = HashMap::new();
    loop {
        match tar.next_entry() {
            Ok(Some(h)) => {
                if !record(&h, tar.offset(), &mut members)? {
                    return Ok(None);
                }
            }
            Ok(None) => return Ok(Some(members)),
            Err(_) => return Ok(None),
        }
    }
}

/// A file read from `pos` on with pread.
struct At<'a> {
    file: &'a File,
    pos: u64,
}

impl Read for At<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

fn padded(size: u64) -> Option<u64> {
    size.checked_next_multiple_of(512)
}

/// Indexes a regular file that holds a plain tar, header by header, seeking over the
/// data; `Ok(None)` for anything but an image archive (the caller then reads it as a
/// root filesystem, from offset 0).
pub fn index_file(file: &File, image: &str) -> Result<Option<(Members, Kind)>, ImageError> {
    let len = file
        .metadata()
        .map_err(|source| ImageError::Read {
            image: image.to_string(),
            source,
        })?
        .len();
    let mut members = HashMap::new();
    let mut pos = 0u64;
    loop {
        let mut tar = TarReader::new(At { file, pos }, tar_limits());
        let h = match tar.next_entry() {
            Ok(Some(h)) => h,
            Ok(None) => break,
            Err(_) => return Ok(None),
        };
        let data_at = pos + tar.offset();
        if !record(&h, data_at, &mut members).map_err(|why| refused(image, why))? {
            return Ok(None);
        }
        match padded(h.stored).and_then(|n| data_at.checked_add(n)) {
            Some(next) if next <= len => pos = next,
            // Data past the end: the flat reader reports the truncated tar.
            _ => return Ok(None),
        }
    }
    Ok(Kind::of_members(&members).map(|kind| (members, kind)))
}

fn refused(image: &str, why: String) -> ImageError {
    ImageError::Refused {
        image: image.to_string(),
        why,
    }
}

pub enum Indexed<'p> {
    /// An image archive, copied to an anonymous file.
    Image(File, HashMap<String, Member>, Kind),
    /// A root filesystem: the whole stream again, from its first byte.
    Flat(Box<dyn BufRead + 'p>),
}

/// Copies what it reads to the spool file, at most `left` bytes.
struct Spooling<R> {
    inner: R,
    spool: BufWriter<File>,
    left: u64,
    too_large: bool,
    write_error: Option<io::Error>,
}

impl<R: Read> Read for Spooling<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        match self.left.checked_sub(n as u64) {
            Some(left) => self.left = left,
            None => {
                self.too_large = true;
                return Err(io::Error::other("the stream is too large"));
            }
        }
        if let Err(e) = self.spool.write_all(&buf[..n]) {
            let error = io::Error::new(e.kind(), e.to_string());
            self.write_error = Some(e);
            return Err(error);
        }
        Ok(n)
    }
}

/// Indexes a stream that cannot seek, spooling at most `max_size` bytes. A stream that
/// is not a tar at all comes back as `Flat`, for the tar reader to say what is wrong
/// with it.
pub fn index_stream<'p>(
    stream: Box<dyn BufRead + 'p>,
    image: &str,
    max_size: u64,
) -> Result<Indexed<'p>, ImageError> {
    let spool = sys::anonymous_temp_file().map_err(ImageError::Spool)?;
    let mut tar = TarReader::new(
        Spooling {
            inner: stream,
            spool: BufWriter::with_capacity(BUF_SIZE, spool),
            left: max_size,
            too_large: false,
            write_error: None,
        },
        tar_limits(),
    );
    let members = scan(&mut tar);
    let spooling = tar.into_inner();
    if let Some(e) = spooling.write_error {
        return Err(ImageError::Spool(e));
    }
    if spooling.too_large {
        return Err(ImageError::TooLarge {
            image: image.to_string(),
            what: "the image archive".into(),
            limit: max_size,
        });
    }
    let members = members.map_err(|why| refused(image, why))?;
    let inner = spooling.inner;
    let mut spool = spooling
        .spool
        .into_inner()
        .map_err(|e| ImageError::Spool(e.into_error()))?;
    match members.and_then(|m| Kind::of_members(&m).map(|kind| (m, kind))) {
        Some((members, kind)) => {
            // The rest (record padding, a gzip trailer) is read so that the writer of a
            // pipe does not see EPIPE and gzip checks its trailer; within reason.
            io::copy(&mut inner.take(max_size), &mut io::sink()).map_err(|source| {
                ImageError::Read {
                    image: image.to_string(),
                    source,
                }
            })?;
            Ok(Indexed::Image(spool, members, kind))
        }
        None => {
            spool.seek(SeekFrom::Start(0)).map_err(ImageError::Spool)?;
            Ok(Indexed::Flat(Box::new(BufReader::with_capacity(
                BUF_SIZE,
                spool.chain(inner),
            ))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_member_names() {
        for name in [
            "manifest.json",
            "./index.json",
            "oci-layout",
            "blobs/",
            "blobs/sha256/",
            &format!("blobs/sha256/{}", "a".repeat(64)),
            &format!("{}.json", "b".repeat(64)),
            &format!("{}.tar", "c".repeat(64)),
            &format!("{}/layer.tar", "d".repeat(64)),
            "repositories",
        ] {
            assert!(image_member(name), "{name}");
        }
        for name in [
            "./bin/",
            "bin/sh",
            "etc/",
            "blobs/sha512/x",
            "pax_global_header",
        ] {
            assert!(!image_member(name), "{name}");
        }
    }
}
