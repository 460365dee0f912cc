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
use super::store::{normalize, Kind, Member};
use crate::sys;
use crate::util::BUF_SIZE;
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};

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

/// Reads member headers from `archive` until the names show a root filesystem (`None`)
/// or the archive ends as an image archive.
fn scan<R: Read>(archive: &mut tar::Archive<R>) -> Option<HashMap<String, Member>> {
    let mut members = HashMap::new();
    for entry in archive.entries().ok()? {
        let entry = entry.ok()?;
        if !record(&entry, &mut members)? {
            return None;
        }
    }
    Some(members)
}

/// Adds one entry to the index; `None` when it cannot be part of an image archive.
fn record<R: Read>(entry: &tar::Entry<R>, members: &mut HashMap<String, Member>) -> Option<bool> {
    let path = entry.path().ok()?;
    let name = path.to_str()?.to_string();
    if !image_member(&name) {
        return Some(false);
    }
    let name = normalize(&name);
    let kind = entry.header().entry_type();
    if kind.is_file() {
        members.insert(
            name,
            Member::File {
                offset: entry.raw_file_position(),
                size: entry.size(),
            },
        );
    } else if kind.is_symlink() || kind.is_hard_link() {
        let target = entry.link_name().ok()??;
        let target = target.to_str()?;
        let target = if kind.is_symlink() && !target.starts_with('/') {
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
    Some(true)
}

/// Indexes a regular file that holds a plain tar; `None` for anything but an image archive
/// (the caller then reads it as a root filesystem, from offset 0).
pub fn index_file(file: &File) -> Option<(HashMap<String, Member>, Kind)> {
    let result = (|| {
        let mut archive = tar::Archive::new(file);
        let mut members = HashMap::new();
        for entry in archive.entries_with_seek().ok()? {
            let entry = entry.ok()?;
            if !record(&entry, &mut members)? {
                return None;
            }
        }
        let kind = Kind::of_members(&members)?;
        Some((members, kind))
    })();
    let mut file = file;
    file.seek(SeekFrom::Start(0)).ok()?;
    result
}

pub enum Indexed<'p> {
    /// An image archive, copied to an anonymous file.
    Image(File, HashMap<String, Member>, Kind),
    /// A root filesystem: the whole stream again, from its first byte.
    Flat(Box<dyn BufRead + 'p>),
}

/// Copies what it reads to the spool file.
struct Spooling<R> {
    inner: R,
    spool: BufWriter<File>,
}

impl<R: Read> Read for Spooling<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.spool.write_all(&buf[..n])?;
        Ok(n)
    }
}

/// Indexes a stream that cannot seek. Errors are the spool file's; a stream that is not a
/// tar at all comes back as `Flat`, for the tar reader to say what is wrong with it.
pub fn index_stream<'p>(stream: Box<dyn BufRead + 'p>) -> io::Result<Indexed<'p>> {
    let spool = sys::anonymous_temp_file()?;
    let mut archive = tar::Archive::new(Spooling {
        inner: stream,
        spool: BufWriter::with_capacity(BUF_SIZE, spool),
    });
    let members = scan(&mut archive);
    let Spooling { inner, spool } = archive.into_inner();
    let mut spool = spool.into_inner().map_err(|e| e.into_error())?;
    let kind = members.as_ref().and_then(Kind::of_members);
    match (members, kind) {
        (Some(members), Some(kind)) => {
            // The rest (record padding, a gzip trailer) is read so that the writer of a
            // pipe does not see EPIPE and gzip checks its trailer.
            let mut inner = inner;
            io::copy(&mut inner, &mut io::sink())?;
            Ok(Indexed::Image(spool, members, kind))
        }
        _ => {
            spool.seek(SeekFrom::Start(0))?;
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
