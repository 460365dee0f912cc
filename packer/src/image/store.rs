//! Where an image's files are: a directory (an OCI layout or an unpacked docker-archive)
//! or the members of a tar, read in place by offset. Both are addressed by the member
//! names the image's own JSON uses (`blobs/sha256/<hex>`, `<id>/layer.tar`).
//!
//! A directory is read by handle (`handle.rs`): a member is opened component by component
//! from the directory's descriptor, never following a symlink, and must be a regular
//! file. A blob that is a symlink (to someone's private tar), a FIFO, a device, or a name
//! that leaves the directory is refused, not read.
use super::error::ImageError;
use super::handle::{DirHandle, OpenError};
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Component, Path};

/// The two image formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// OCI image layout: `oci-layout`, `index.json`, `blobs/`.
    Oci,
    /// docker-archive: `manifest.json` and the files it names.
    Docker,
}

impl Kind {
    /// The format of a directory, `None` for a plain root filesystem. A layout written by
    /// docker 25+ has both files: the OCI side is read, it carries digests. Only regular
    /// files count (a symlink named index.json makes a root filesystem, whose symlinks
    /// are archived as symlinks).
    pub fn of_dir(dir: &DirHandle) -> Option<Kind> {
        if dir.has_file("oci-layout") && dir.has_file("index.json") {
            Some(Kind::Oci)
        } else if dir.has_file("manifest.json") && !dir.has("bin") {
            Some(Kind::Docker)
        } else {
            None
        }
    }

    /// The format of an archive from the names of its members.
    pub fn of_members(members: &HashMap<String, Member>) -> Option<Kind> {
        if members.contains_key("oci-layout") && members.contains_key("index.json") {
            Some(Kind::Oci)
        } else if members.contains_key("manifest.json") {
            Some(Kind::Docker)
        } else {
            None
        }
    }
}

/// A member of an archive: where its data is, or what it links to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Member {
    File {
        offset: u64,
        size: u64,
    },
    /// A symlink or hard link to another member (docker save links identical layers).
    Link(String),
}

pub enum Store {
    Dir(DirHandle),
    Archive {
        file: File,
        members: HashMap<String, Member>,
    },
}

/// A member's bytes, read with `pread` so that several readers never share an offset.
pub struct MemberReader<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl Read for MemberReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.end - self.pos;
        if left == 0 {
            return Ok(0);
        }
        let max = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = self.file.read_at(&mut buf[..max], self.pos)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the archive ends inside this member",
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

/// A member name as archives write it: `./a/b` and `a/b` are the same member.
pub fn normalize(name: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

/// Why a member cannot be read.
pub enum StoreError {
    Io(io::Error),
    /// Not a regular file inside the directory: what it is.
    NotRegular(&'static str),
}

/// A member's bytes and size; `None` when there is no such member.
pub type Opened<'a> = Option<(Box<dyn Read + 'a>, u64)>;

impl Store {
    /// Opens a member: `Ok(None)` when there is no such member.
    pub fn open(&self, name: &str) -> Result<Opened<'_>, StoreError> {
        match self {
            Store::Dir(dir) => {
                if !is_relative_inside(name) {
                    return Err(StoreError::NotRegular("a name outside the directory"));
                }
                match dir.open_below(name) {
                    Ok((file, st)) => {
                        let len = u64::try_from(st.st_size).unwrap_or(0);
                        Ok(Some((Box::new(file), len)))
                    }
                    Err(OpenError::Missing) => Ok(None),
                    Err(OpenError::Wrong(what)) => Err(StoreError::NotRegular(what)),
                    Err(OpenError::Io(e)) => Err(StoreError::Io(e)),
                }
            }
            Store::Archive { file, members } => Ok(archive_member(file, members, name)),
        }
    }

    /// Opens member `name`, a blob the image names as `blob`: missing, refused or
    /// unreadable is an error naming the blob.
    pub fn open_blob(
        &self,
        name: &str,
        image: &str,
        blob: &str,
    ) -> Result<(Box<dyn Read + '_>, u64), ImageError> {
        match self.open(name) {
            Ok(Some(opened)) => Ok(opened),
            Ok(None) => Err(ImageError::MissingBlob {
                image: image.to_string(),
                blob: blob.to_string(),
            }),
            Err(StoreError::NotRegular(what)) => Err(ImageError::NotRegular {
                image: image.to_string(),
                blob: blob.to_string(),
                what,
            }),
            Err(StoreError::Io(source)) => Err(ImageError::Read {
                image: image.to_string(),
                source,
            }),
        }
    }

    /// The size of member `name`, a blob the image names as `blob`.
    pub fn blob_size(&self, name: &str, image: &str, blob: &str) -> Result<u64, ImageError> {
        self.open_blob(name, image, blob).map(|(_, size)| size)
    }
}

/// A member of an archive, following links a few deep at most: a loop is a damaged
/// archive, not an image.
fn archive_member<'a>(file: &'a File, members: &HashMap<String, Member>, name: &str) -> Opened<'a> {
    let mut name = normalize(name);
    for _ in 0..8 {
        match members.get(&name)? {
            Member::File { offset, size } => {
                let reader = MemberReader {
                    file,
                    pos: *offset,
                    end: offset.saturating_add(*size),
                };
                return Some((Box::new(reader), *size));
            }
            Member::Link(target) => name = target.clone(),
        }
    }
    None
}

/// A relative name that stays inside the directory: no `..`, not absolute.
fn is_relative_inside(name: &str) -> bool {
    !name.is_empty()
        && Path::new(name)
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_normalize() {
        assert_eq!(normalize("./a/b"), "a/b");
        assert_eq!(normalize("a//b/"), "a/b");
        assert_eq!(normalize("x/../y.tar"), "y.tar");
        assert!(!is_relative_inside("../etc/passwd"));
        assert!(!is_relative_inside("blobs/../../x"));
        assert!(!is_relative_inside("/etc/passwd"));
        assert!(is_relative_inside("blobs/sha256/ab"));
    }
}
