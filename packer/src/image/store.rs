//! Where an image's files are: a directory (an OCI layout or an unpacked docker-archive)
//! or the members of a tar, read in place by offset. Both are addressed by the member
//! names the image's own JSON uses (`blobs/sha256/<hex>`, `<id>/layer.tar`).
use super::error::ImageError;
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};

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
    /// docker 25+ has both files: the OCI side is read, it carries digests.
    pub fn of_dir(dir: &Path) -> Option<Kind> {
        if dir.join("oci-layout").is_file() && dir.join("index.json").is_file() {
            Some(Kind::Oci)
        } else if dir.join("manifest.json").is_file() && !dir.join("bin").exists() {
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
    Dir(PathBuf),
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

impl Store {
    /// Opens a member: `Ok(None)` when there is no such member.
    pub fn open(&self, name: &str) -> io::Result<Option<(Box<dyn Read + '_>, u64)>> {
        match self {
            Store::Dir(dir) => {
                let Some(path) = safe_join(dir, name) else {
                    return Ok(None);
                };
                match File::open(&path) {
                    Ok(file) => {
                        let meta = file.metadata()?;
                        if !meta.is_file() {
                            return Ok(None);
                        }
                        Ok(Some((Box::new(file), meta.len())))
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(e),
                }
            }
            Store::Archive { file, members } => {
                let mut name = normalize(name);
                // A few links deep at most: a loop is a damaged archive, not an image.
                for _ in 0..8 {
                    match members.get(&name) {
                        None => return Ok(None),
                        Some(Member::File { offset, size }) => {
                            return Ok(Some((
                                Box::new(MemberReader {
                                    file,
                                    pos: *offset,
                                    end: offset + size,
                                }),
                                *size,
                            )))
                        }
                        Some(Member::Link(target)) => name = target.clone(),
                    }
                }
                Ok(None)
            }
        }
    }

    /// A member's size, `None` when it is missing.
    /// The size of member `name`, a blob the image names as `blob`: missing is an
    /// error naming the blob.
    pub fn blob_size(&self, name: &str, image: &str, blob: &str) -> Result<u64, ImageError> {
        self.open(name)
            .map_err(|source| ImageError::Read {
                image: image.to_string(),
                source,
            })?
            .map(|(_, size)| size)
            .ok_or_else(|| ImageError::MissingBlob {
                image: image.to_string(),
                blob: blob.to_string(),
            })
    }
}

/// `dir/name` for a relative name that stays inside `dir`.
fn safe_join(dir: &Path, name: &str) -> Option<PathBuf> {
    let rel = Path::new(name);
    if rel
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return None;
    }
    Some(dir.join(rel))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_normalize() {
        assert_eq!(normalize("./a/b"), "a/b");
        assert_eq!(normalize("a//b/"), "a/b");
        assert_eq!(normalize("x/../y.tar"), "y.tar");
        assert!(safe_join(Path::new("/d"), "../etc/passwd").is_none());
        assert!(safe_join(Path::new("/d"), "/etc/passwd").is_none());
        assert_eq!(
            safe_join(Path::new("/d"), "blobs/sha256/ab"),
            Some(PathBuf::from("/d/blobs/sha256/ab"))
        );
    }
}
