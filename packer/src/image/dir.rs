//! A directory as a deterministic tar: entries sorted by name, paths relative to the
//! directory ("bin/sh", "bin/"), mode, numeric uid/gid and mtime kept (never atime or
//! ctime, never user or group names), so the same tree always gives the same bytes.
//! Symlinks stay symlinks, hard links become links to the first path seen, devices keep
//! their numbers; sockets are skipped (they cannot be archived).
use super::error::ImageError;
use super::types::Stats;
use crate::progress::{Counting, Progress};
use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{self, File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use tar::{Builder, EntryType, Header};

struct Walker<'a, W: Write> {
    root: &'a Path,
    builder: Builder<&'a mut W>,
    progress: &'a Progress,
    /// (dev, ino) of files with several links -> the path archived first.
    links: HashMap<(u64, u64), PathBuf>,
    /// A read error of the current file, kept aside because the tar builder's own error
    /// cannot tell reading from writing.
    read_error: Option<io::Error>,
    entries: u64,
}

pub fn write_tar<W: Write>(
    root: &Path,
    progress: &Progress,
    out: &mut W,
) -> Result<Stats, ImageError> {
    let mut walker = Walker {
        root,
        builder: Builder::new(out),
        progress,
        links: HashMap::new(),
        read_error: None,
        entries: 0,
    };
    walker.walk(Path::new(""))?;
    walker.builder.finish().map_err(ImageError::Write)?;
    Ok(Stats {
        entries: walker.entries,
    })
}

impl<W: Write> Walker<'_, W> {
    /// Archives the children of `rel` (relative to the root), depth first, by name.
    fn walk(&mut self, rel: &Path) -> Result<(), ImageError> {
        let dir = self.root.join(rel);
        let read_error = |source| ImageError::ReadFile {
            path: dir.clone(),
            source,
        };
        let mut names: Vec<OsString> = fs::read_dir(&dir)
            .map_err(read_error)?
            .map(|entry| entry.map(|e| e.file_name()))
            .collect::<io::Result<_>>()
            .map_err(read_error)?;
        // Byte order, independent of locale and of the filesystem's own order.
        names.sort_unstable();
        for name in names {
            let rel = rel.join(&name);
            let path = self.root.join(&rel);
            let meta = fs::symlink_metadata(&path).map_err(|source| ImageError::ReadFile {
                path: path.clone(),
                source,
            })?;
            self.entry(&rel, &path, &meta)?;
            if meta.is_dir() {
                self.walk(&rel)?;
            }
        }
        Ok(())
    }

    fn entry(&mut self, rel: &Path, path: &Path, meta: &Metadata) -> Result<(), ImageError> {
        let kind = meta.file_type();
        if kind.is_socket() {
            return Ok(());
        }
        let mut header = Header::new_gnu();
        header.set_mode(meta.mode() & 0o7777);
        header.set_uid(u64::from(meta.uid()));
        header.set_gid(u64::from(meta.gid()));
        header.set_mtime(u64::try_from(meta.mtime()).unwrap_or(0));
        header.set_size(0);
        let read_error = |source| ImageError::ReadFile {
            path: path.to_path_buf(),
            source,
        };
        let result = if kind.is_dir() {
            header.set_entry_type(EntryType::Directory);
            let mut name = rel.as_os_str().to_owned();
            name.push("/");
            self.builder.append_data(&mut header, name, io::empty())
        } else if kind.is_symlink() {
            header.set_entry_type(EntryType::Symlink);
            let target = fs::read_link(path).map_err(read_error)?;
            self.builder.append_link(&mut header, rel, target)
        } else if let Some(first) = self.hard_link(rel, meta) {
            header.set_entry_type(EntryType::Link);
            self.builder.append_link(&mut header, rel, first)
        } else if kind.is_file() {
            header.set_entry_type(EntryType::Regular);
            header.set_size(meta.len());
            let file = File::open(path).map_err(read_error)?;
            self.read_error = None;
            let data = FileData {
                inner: Counting::new(file, self.progress),
                remaining: meta.len(),
                error: &mut self.read_error,
            };
            self.builder.append_data(&mut header, rel, data)
        } else {
            let (entry_type, device) = if kind.is_fifo() {
                (EntryType::Fifo, None)
            } else if kind.is_char_device() {
                (EntryType::Char, Some(meta.rdev()))
            } else {
                (EntryType::Block, Some(meta.rdev()))
            };
            header.set_entry_type(entry_type);
            if let Some(dev) = device {
                header
                    .set_device_major(major(dev))
                    .map_err(ImageError::Write)?;
                header
                    .set_device_minor(minor(dev))
                    .map_err(ImageError::Write)?;
            }
            self.builder.append_data(&mut header, rel, io::empty())
        };
        match (result, self.read_error.take()) {
            (Ok(()), _) => {
                self.entries += 1;
                Ok(())
            }
            (Err(_), Some(source)) => Err(read_error(source)),
            // Long names and link names have GNU extensions, so what is left is the
            // output failing.
            (Err(e), None) => Err(ImageError::Write(e)),
        }
    }

    /// The first path of this file if it has several links and one was archived.
    fn hard_link(&mut self, rel: &Path, meta: &Metadata) -> Option<PathBuf> {
        if meta.nlink() < 2 || meta.is_dir() {
            return None;
        }
        let key = (meta.dev(), meta.ino());
        if let Some(first) = self.links.get(&key) {
            return Some(first.clone());
        }
        self.links.insert(key, rel.to_path_buf());
        None
    }
}

/// A file's data, exactly as many bytes as the header announced: a file that grows while
/// it is read is cut, one that shrinks is an error (the tar would be corrupt otherwise).
struct FileData<'a, R> {
    inner: R,
    remaining: u64,
    error: &'a mut Option<io::Error>,
}

impl<R: Read> Read for FileData<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let max = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = match self.inner.read(&mut buf[..max]) {
            Ok(0) => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file shrank while it was packed",
            )),
            other => other,
        }
        .inspect_err(|e| *self.error = Some(io::Error::new(e.kind(), e.to_string())))?;
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// Linux's encoding of device numbers (glibc's gnu_dev_major/minor).
fn major(dev: u64) -> u32 {
    (((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0x0fff)) as u32
}

fn minor(dev: u64) -> u32 {
    (((dev >> 12) & 0xffff_ff00) | (dev & 0xff)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::tests::TempDir;
    use std::os::unix::fs::symlink;

    fn pack(dir: &Path) -> Vec<u8> {
        let mut out = Vec::new();
        write_tar(dir, &Progress::hidden(), &mut out).unwrap();
        out
    }

    fn tree() -> TempDir {
        let dir = TempDir::new();
        let root = dir.path();
        fs::create_dir_all(root.join("bin")).unwrap();
        fs::create_dir_all(root.join("etc/deep")).unwrap();
        fs::write(root.join("bin/busybox"), b"#!busybox").unwrap();
        fs::hard_link(root.join("bin/busybox"), root.join("bin/sh")).unwrap();
        symlink("busybox", root.join("bin/ls")).unwrap();
        fs::write(root.join("etc/hostname"), b"x\n").unwrap();
        let long = "n".repeat(120);
        fs::write(root.join("etc/deep").join(&long), b"long").unwrap();
        dir
    }

    #[test]
    fn keeps_links_and_sorts_entries() {
        let dir = tree();
        let tar = pack(dir.path());
        let mut archive = tar::Archive::new(&tar[..]);
        let mut seen = Vec::new();
        for entry in archive.entries().unwrap() {
            let entry = entry.unwrap();
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            let link = entry
                .link_name()
                .unwrap()
                .map(|l| l.to_string_lossy().into_owned());
            seen.push((path, entry.header().entry_type(), link));
        }
        let long = format!("etc/deep/{}", "n".repeat(120));
        let expected = vec![
            ("bin/".to_string(), EntryType::Directory, None),
            ("bin/busybox".to_string(), EntryType::Regular, None),
            (
                "bin/ls".to_string(),
                EntryType::Symlink,
                Some("busybox".to_string()),
            ),
            (
                "bin/sh".to_string(),
                EntryType::Link,
                Some("bin/busybox".to_string()),
            ),
            ("etc/".to_string(), EntryType::Directory, None),
            ("etc/deep/".to_string(), EntryType::Directory, None),
            (long, EntryType::Regular, None),
            ("etc/hostname".to_string(), EntryType::Regular, None),
        ];
        assert_eq!(seen, expected);
    }

    #[test]
    fn same_tree_same_bytes() {
        let dir = tree();
        let first = pack(dir.path());
        // Reading the files changes their atime, which must not matter.
        assert_eq!(pack(dir.path()), first);
    }

    #[test]
    fn unreadable_file_is_named() {
        let dir = tree();
        let secret = dir.path().join("etc/secret");
        fs::write(&secret, b"x").unwrap();
        fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
        if File::open(&secret).is_ok() {
            return; // root reads anything
        }
        let err = write_tar(dir.path(), &Progress::hidden(), &mut Vec::new()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("cannot read {}: Permission denied", secret.display())
        );
    }

    #[test]
    fn device_numbers_decode() {
        // makedev(8, 1) and makedev(259, 70000).
        assert_eq!((major(0x801), minor(0x801)), (8, 1));
        let dev = (259u64 << 8) | (70000 & 0xff) | ((70000u64 & !0xff) << 12);
        assert_eq!((major(dev), minor(dev)), (259, 70000));
    }
}
