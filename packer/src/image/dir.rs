//! A directory as a deterministic tar: entries sorted by name, paths relative to the
//! directory ("bin/sh", "bin/"), mode, numeric uid/gid and mtime kept (never atime or
//! ctime, never user or group names), so the same tree always gives the same bytes.
//! Symlinks stay symlinks, hard links become links to the first path seen, devices keep
//! their numbers; sockets are skipped (they cannot be archived).
//!
//! The directory may be someone else's, changing under the walk: it is read by handle
//! (`handle.rs`). Every entry is opened from its parent's descriptor without following
//! symlinks and fstat()ed; one that is no longer what it was listed as refuses the pack.
//! A symlink is read, never followed; a FIFO or device is described, never opened.
use super::elf_platform::{Survey, HEAD_LEN};
use super::error::ImageError;
use super::handle::{same, DirHandle, OpenError, Type};
use super::limits::{Limits, MAX_TREE_BYTES, NODE_COST, PATH_MAX};
use super::types::Stats;
use crate::progress::{Counting, Progress};
use nix::sys::stat::FileStat;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use tar::{Builder, EntryType, Header};

struct Walker<'a, W: Write> {
    /// The directory as the user named it, for messages.
    root: &'a Path,
    builder: Builder<&'a mut W>,
    progress: &'a Progress,
    /// (dev, ino) of files with several links -> the path archived first.
    links: HashMap<(u64, u64), PathBuf>,
    /// What `links` holds, roughly, in bytes.
    link_bytes: usize,
    /// A read error of the current file, kept aside because the tar builder's own error
    /// cannot tell reading from writing.
    read_error: Option<io::Error>,
    entries: u64,
    /// File bytes still allowed (`--max-size`).
    size_left: u64,
    max_size: u64,
    /// Which CPU the programs are for (`elf_platform.rs`).
    survey: Survey,
}

pub fn write_tar<W: Write>(
    root_path: &Path,
    root: &DirHandle,
    limits: &Limits,
    progress: &Progress,
    out: &mut W,
) -> Result<Stats, ImageError> {
    let mut walker = Walker {
        root: root_path,
        builder: Builder::new(out),
        progress,
        links: HashMap::new(),
        link_bytes: 0,
        read_error: None,
        entries: 0,
        size_left: limits.max_size,
        max_size: limits.max_size,
        survey: Survey::default(),
    };
    walker.walk(root, Path::new(""))?;
    walker.builder.finish().map_err(ImageError::Write)?;
    Ok(Stats {
        entries: walker.entries,
        detected: walker.survey.finish(),
    })
}

/// What an entry is once opened: the header comes from what was opened.
enum Opened {
    Dir(DirHandle, FileStat),
    File(std::fs::File, FileStat),
    /// A symlink, FIFO or device: described by lstat, never opened.
    Other(FileStat),
}

impl<W: Write> Walker<'_, W> {
    fn path(&self, rel: &Path) -> PathBuf {
        self.root.join(rel)
    }

    fn read_error(&self, rel: &Path, source: io::Error) -> ImageError {
        ImageError::ReadFile {
            path: self.path(rel),
            source,
        }
    }

    /// Archives the children of `dir` (at `rel` below the root), depth first, by name.
    fn walk(&mut self, dir: &DirHandle, rel: &Path) -> Result<(), ImageError> {
        let names = dir.names().map_err(|e| self.read_error(rel, e))?;
        for name in names {
            let rel = rel.join(&name);
            if rel.as_os_str().len() + 1 >= PATH_MAX {
                return Err(ImageError::Unsafe {
                    image: self.root.display().to_string(),
                    entry: rel.as_os_str().as_bytes().to_vec(),
                    why: "its path is longer than PATH_MAX",
                });
            }
            match self.open(dir, &name, &rel)? {
                Opened::Dir(child, st) => {
                    self.entry(&rel, &st, None)?;
                    self.walk(&child, &rel)?;
                }
                Opened::File(file, st) => self.entry(&rel, &st, Some(file))?,
                Opened::Other(st) => {
                    let target = match Type::of(&st) {
                        Type::Symlink => {
                            Some(dir.read_link(&name).map_err(|e| self.changed_or(&rel, e))?)
                        }
                        _ => None,
                    };
                    self.special(&rel, &st, target.as_deref())?;
                }
            }
        }
        Ok(())
    }

    /// Opens `name` by handle and checks that it is what lstat listed.
    fn open(&self, dir: &DirHandle, name: &OsStr, rel: &Path) -> Result<Opened, ImageError> {
        let listed = dir.lstat(name).map_err(|e| self.changed_or(rel, e))?;
        let opened = match Type::of(&listed) {
            Type::Dir => dir.open_dir(name).map(|(d, st)| Opened::Dir(d, st)),
            Type::File => dir.open_file(name).map(|(f, st)| Opened::File(f, st)),
            _ => return Ok(Opened::Other(listed)),
        };
        let opened = opened.map_err(|e| match e {
            OpenError::Io(e) => self.read_error(rel, e),
            // Gone, or something else now: it changed since it was listed.
            _ => ImageError::Changed {
                path: self.path(rel),
            },
        })?;
        let (Opened::Dir(_, st) | Opened::File(_, st) | Opened::Other(st)) = &opened;
        if !same(&listed, st) {
            return Err(ImageError::Changed {
                path: self.path(rel),
            });
        }
        Ok(opened)
    }

    /// A listed entry that vanished (or is no longer a symlink) changed under the walk.
    fn changed_or(&self, rel: &Path, e: io::Error) -> ImageError {
        match e.raw_os_error() {
            Some(libc::ENOENT | libc::EINVAL) => ImageError::Changed {
                path: self.path(rel),
            },
            _ => self.read_error(rel, e),
        }
    }

    fn header(st: &FileStat) -> Header {
        let mut header = Header::new_gnu();
        header.set_mode(st.st_mode & 0o7777);
        header.set_uid(u64::from(st.st_uid));
        header.set_gid(u64::from(st.st_gid));
        header.set_mtime(u64::try_from(st.st_mtime).unwrap_or(0));
        header.set_size(0);
        header
    }

    /// A directory or a regular file, from what was opened.
    fn entry(
        &mut self,
        rel: &Path,
        st: &FileStat,
        file: Option<std::fs::File>,
    ) -> Result<(), ImageError> {
        let mut header = Self::header(st);
        let result = match file {
            None => {
                header.set_entry_type(EntryType::Directory);
                let mut name = rel.as_os_str().to_owned();
                name.push("/");
                self.builder.append_data(&mut header, name, io::empty())
            }
            Some(file) => match self.hard_link(rel, st)? {
                Some(first) => {
                    header.set_entry_type(EntryType::Link);
                    let source = first.as_os_str().as_bytes();
                    self.survey.hard_link(rel.as_os_str().as_bytes(), source);
                    self.builder.append_link(&mut header, rel, first)
                }
                None => {
                    let len = u64::try_from(st.st_size).unwrap_or(0);
                    self.take_size(rel, len)?;
                    header.set_entry_type(EntryType::Regular);
                    header.set_size(len);
                    self.read_error = None;
                    let mut head = Vec::new();
                    let data = FileData {
                        inner: Counting::new(file, self.progress),
                        remaining: len,
                        error: &mut self.read_error,
                        head: &mut head,
                    };
                    let result = self.builder.append_data(&mut header, rel, data);
                    self.survey
                        .file(rel.as_os_str().as_bytes(), st.st_mode, &head);
                    result
                }
            },
        };
        self.finish_entry(rel, result)
    }

    /// A symlink (with its target), a FIFO or a device; a socket is skipped.
    fn special(
        &mut self,
        rel: &Path,
        st: &FileStat,
        target: Option<&OsStr>,
    ) -> Result<(), ImageError> {
        let kind = Type::of(st);
        let mut header = Self::header(st);
        let result = match (kind, target) {
            (Type::Socket, _) => return Ok(()),
            (_, Some(target)) => {
                self.survey
                    .symlink(rel.as_os_str().as_bytes(), target.as_bytes());
                header.set_entry_type(EntryType::Symlink);
                self.builder.append_link(&mut header, rel, target)
            }
            _ => {
                header.set_entry_type(match kind {
                    Type::Fifo => EntryType::Fifo,
                    Type::Char => EntryType::Char,
                    _ => EntryType::Block,
                });
                if kind != Type::Fifo {
                    header
                        .set_device_major(major(st.st_rdev))
                        .map_err(ImageError::Write)?;
                    header
                        .set_device_minor(minor(st.st_rdev))
                        .map_err(ImageError::Write)?;
                }
                self.builder.append_data(&mut header, rel, io::empty())
            }
        };
        self.finish_entry(rel, result)
    }

    fn finish_entry(&mut self, rel: &Path, result: io::Result<()>) -> Result<(), ImageError> {
        match (result, self.read_error.take()) {
            (Ok(()), _) => {
                self.entries += 1;
                Ok(())
            }
            (Err(_), Some(source)) => Err(self.read_error(rel, source)),
            // Long names and link names have GNU extensions, so what is left is the
            // output failing.
            (Err(e), None) => Err(ImageError::Write(e)),
        }
    }

    /// Counts a file's bytes against `--max-size`.
    fn take_size(&mut self, rel: &Path, len: u64) -> Result<(), ImageError> {
        match self.size_left.checked_sub(len) {
            Some(left) => {
                self.size_left = left;
                Ok(())
            }
            None => Err(ImageError::TooLarge {
                image: self.root.display().to_string(),
                what: format!(
                    "the directory's files (at '{}', {len} bytes)",
                    crate::util::printable(rel.as_os_str().as_bytes())
                ),
                limit: self.max_size,
            }),
        }
    }

    /// The first path of this file if it has several links and one was archived.
    fn hard_link(&mut self, rel: &Path, st: &FileStat) -> Result<Option<PathBuf>, ImageError> {
        if st.st_nlink < 2 {
            return Ok(None);
        }
        let key = (st.st_dev, st.st_ino);
        if let Some(first) = self.links.get(&key) {
            return Ok(Some(first.clone()));
        }
        self.link_bytes += rel.as_os_str().len() + NODE_COST;
        if self.link_bytes > MAX_TREE_BYTES {
            return Err(ImageError::Refused {
                image: self.root.display().to_string(),
                why: format!(
                    "more hard-linked files than binctr-pack keeps track of ({} of names)",
                    super::limits::human(MAX_TREE_BYTES as u64)
                ),
            });
        }
        self.links.insert(key, rel.to_path_buf());
        Ok(None)
    }
}

/// A file's data, exactly as many bytes as the header announced: a file that grows while
/// it is read is cut, one that shrinks is an error (the tar would be corrupt otherwise).
struct FileData<'a, R> {
    inner: R,
    remaining: u64,
    error: &'a mut Option<io::Error>,
    /// The file's first bytes, for the survey.
    head: &'a mut Vec<u8>,
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
        if self.head.len() < HEAD_LEN {
            let more = n.min(HEAD_LEN - self.head.len());
            self.head.extend_from_slice(&buf[..more]);
        }
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
    use std::fs::{self, File};
    use std::os::unix::fs::symlink;

    fn write(dir: &Path, out: &mut Vec<u8>) -> Result<Stats, ImageError> {
        let handle = DirHandle::open_root(dir).unwrap();
        write_tar(dir, &handle, &Limits::default(), &Progress::hidden(), out)
    }

    fn pack(dir: &Path) -> Vec<u8> {
        let mut out = Vec::new();
        write(dir, &mut out).unwrap();
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

    fn listing(tar: &[u8]) -> Vec<(String, EntryType, Option<String>)> {
        let mut archive = tar::Archive::new(tar);
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
        seen
    }

    #[test]
    fn keeps_links_and_sorts_entries() {
        let dir = tree();
        let tar = pack(dir.path());
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
        assert_eq!(listing(&tar), expected);
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
        let err = write(dir.path(), &mut Vec::new()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("cannot read {}: Permission denied", secret.display())
        );
    }

    #[test]
    fn symlinks_and_fifos_are_described_never_opened() {
        let dir = tree();
        let root = dir.path();
        let outside = TempDir::new();
        fs::write(outside.path().join("id_rsa"), b"SECRET KEY").unwrap();
        symlink(outside.path(), root.join("home")).unwrap();
        symlink(outside.path().join("id_rsa"), root.join("key")).unwrap();
        nix::unistd::mkfifo(&root.join("fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        let tar = pack(root);
        assert!(!tar.windows(10).any(|w| w == b"SECRET KEY"));
        let seen = listing(&tar);
        assert!(seen.contains(&("fifo".into(), EntryType::Fifo, None)));
        assert!(seen
            .iter()
            .any(|(p, k, _)| p == "home" && *k == EntryType::Symlink));
    }

    #[test]
    fn files_larger_than_allowed_are_refused() {
        let dir = tree();
        let handle = DirHandle::open_root(dir.path()).unwrap();
        let limits = Limits { max_size: 10 };
        let err = write_tar(
            dir.path(),
            &handle,
            &limits,
            &Progress::hidden(),
            &mut Vec::new(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("more than the 10 bytes allowed"), "{err}");
    }

    #[test]
    fn device_numbers_decode() {
        // makedev(8, 1) and makedev(259, 70000).
        assert_eq!((major(0x801), minor(0x801)), (8, 1));
        let dev = (259u64 << 8) | (70000 & 0xff) | ((70000u64 & !0xff) << 12);
        assert_eq!((major(dev), minor(dev)), (259, 70000));
    }
}
