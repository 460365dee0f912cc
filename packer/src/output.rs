//! Writes a file atomically: the content goes to a temporary file in the destination's
//! directory, which is synced and then renamed over the destination. A reader of the
//! destination sees the old file or the whole new one, never a partial one, and after any
//! error nothing is left behind.
//!
//! The temporary file is anonymous (`O_TMPFILE`) where the filesystem allows it, so even
//! SIGKILL leaves nothing; it gets a name only for the instant between `linkat` and
//! `rename`. Elsewhere it is a named `.NAME.tmp-PID` file, removed on every error path
//! and on SIGINT/SIGTERM/SIGHUP.
//!
//! The file is created with the mode asked for less the umask, as cc and tar create
//! theirs: under umask 077 a packed file is 0700, not readable by anyone else.
use crate::sys;
use crate::util::os_error;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub enum OutputError {
    /// The destination is an existing directory.
    IsDirectory(PathBuf),
    /// The temporary file could not be created in the destination's directory.
    Create { dest: PathBuf, source: io::Error },
    /// Writing, syncing or renaming into place failed.
    Write { dest: PathBuf, source: io::Error },
}

impl fmt::Display for OutputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OutputError::IsDirectory(dest) => write!(
                f,
                "cannot write {}: it is a directory: give a file name with -o",
                dest.display()
            ),
            OutputError::Create { dest, source } => write!(
                f,
                "cannot create {}: {}: check that its directory exists and is writable",
                dest.display(),
                os_error(source)
            ),
            OutputError::Write { dest, source } => {
                write!(f, "cannot write {}: {}", dest.display(), os_error(source))
            }
        }
    }
}

impl std::error::Error for OutputError {}

enum Temp {
    /// `O_TMPFILE`: no name yet.
    Anonymous,
    /// A named temporary file that is ours to remove.
    Named(PathBuf),
    /// Renamed into place: nothing to clean up.
    Committed,
}

/// A file being written; it replaces `dest` on [`Output::commit`] and vanishes if
/// dropped before.
pub struct Output {
    file: File,
    dest: PathBuf,
    temp: Temp,
}

impl Output {
    /// Starts writing `dest`, which will get permission bits `mode` less the umask.
    pub fn create(dest: &Path, mode: u32) -> Result<Output, OutputError> {
        Self::create_with(dest, mode, true)
    }

    /// `anonymous: false` forces the named temporary file (for tests of that path).
    pub fn create_with(dest: &Path, mode: u32, anonymous: bool) -> Result<Output, OutputError> {
        if dest.is_dir() {
            return Err(OutputError::IsDirectory(dest.to_path_buf()));
        }
        let create_error = |source| OutputError::Create {
            dest: dest.to_path_buf(),
            source,
        };
        let dir = parent_dir(dest);
        // linkat needs /proc to name the anonymous file later: without it, use a name now.
        if anonymous && Path::new("/proc/self/fd").is_dir() {
            match OpenOptions::new()
                // Read too: a payload may be moved behind another stub (pack.rs).
                .read(true)
                .write(true)
                .custom_flags(libc::O_TMPFILE | libc::O_CLOEXEC)
                .mode(mode)
                .open(dir)
            {
                Ok(file) => {
                    return Ok(Output {
                        file,
                        dest: dest.to_path_buf(),
                        temp: Temp::Anonymous,
                    })
                }
                // The filesystem or kernel has no O_TMPFILE: fall back to a named file.
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL)
                    ) => {}
                Err(e) => return Err(create_error(e)),
            }
        }
        let temp = temp_path(dest).ok_or_else(|| {
            create_error(io::Error::new(io::ErrorKind::InvalidInput, "no file name"))
        })?;
        sys::remove_on_signal(&temp);
        match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_CLOEXEC)
            .mode(mode)
            .open(&temp)
        {
            Ok(file) => Ok(Output {
                file,
                dest: dest.to_path_buf(),
                temp: Temp::Named(temp),
            }),
            Err(e) => {
                sys::forget_on_signal();
                Err(create_error(e))
            }
        }
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    /// The error for a failed write to this output.
    pub fn write_error(&self, source: io::Error) -> OutputError {
        OutputError::Write {
            dest: self.dest.clone(),
            source,
        }
    }

    /// Syncs the file and renames it over the destination. The caller must have flushed
    /// every buffered writer on top of [`Output::file`].
    pub fn commit(mut self) -> Result<(), OutputError> {
        self.finish().map_err(|e| self.write_error(e))
    }

    fn finish(&mut self) -> io::Result<()> {
        // The mode is the one it was created with: `mode` less the umask.
        self.file.sync_all()?;
        if let Temp::Anonymous = self.temp {
            let temp = temp_path(&self.dest)
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
            sys::remove_on_signal(&temp);
            if let Err(e) = sys::link_anonymous(&self.file, &temp) {
                sys::forget_on_signal();
                return Err(e);
            }
            self.temp = Temp::Named(temp);
        }
        if let Temp::Named(temp) = &self.temp {
            fs::rename(temp, &self.dest)?;
            self.temp = Temp::Committed;
            sys::forget_on_signal();
        }
        // The rename itself is durable once the directory is synced; failing to sync
        // it (some filesystems refuse) does not undo a complete, visible file.
        if let Ok(dir) = File::open(parent_dir(&self.dest)) {
            let _ = dir.sync_all();
        }
        Ok(())
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        if let Temp::Named(temp) = &self.temp {
            let _ = fs::remove_file(temp);
            sys::forget_on_signal();
        }
    }
}

/// The process's umask, read from /proc (reading it with umask(2) would change it for
/// a moment); 022 when /proc does not say.
#[cfg(test)]
pub fn umask() -> u32 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("Umask:"))?;
            u32::from_str_radix(line["Umask:".len()..].trim(), 8).ok()
        })
        .unwrap_or(0o022)
}

fn parent_dir(dest: &Path) -> &Path {
    match dest.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// `<dir>/.<name>.tmp-<pid>`: hidden, and recognizably ours if ever seen.
fn temp_path(dest: &Path) -> Option<PathBuf> {
    let name = dest.file_name()?;
    let mut temp = std::ffi::OsString::from(".");
    temp.push(name);
    temp.push(format!(".tmp-{}", std::process::id()));
    Some(parent_dir(dest).join(temp))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::tests::TempDir;
    use std::io::Write;
    use std::os::unix::fs::MetadataExt;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn commit_replaces_the_destination_with_the_mode_less_the_umask() {
        for anonymous in [true, false] {
            let dir = TempDir::new();
            let dest = dir.path().join("out");
            fs::write(&dest, b"old").unwrap();
            let out = Output::create_with(&dest, 0o777, anonymous).unwrap();
            out.file().write_all(b"new").unwrap();
            out.commit().unwrap();
            assert_eq!(fs::read(&dest).unwrap(), b"new");
            let mode = 0o777 & !umask();
            assert_eq!(fs::metadata(&dest).unwrap().mode() & 0o7777, mode);
            assert_eq!(names(dir.path()), ["out"], "anonymous={anonymous}");
        }
    }

    #[test]
    fn dropping_leaves_nothing_and_keeps_the_old_file() {
        for anonymous in [true, false] {
            let dir = TempDir::new();
            let dest = dir.path().join("out");
            fs::write(&dest, b"old").unwrap();
            let out = Output::create_with(&dest, 0o755, anonymous).unwrap();
            out.file().write_all(b"partial").unwrap();
            drop(out);
            assert_eq!(fs::read(&dest).unwrap(), b"old");
            assert_eq!(names(dir.path()), ["out"], "anonymous={anonymous}");
        }
    }

    #[test]
    fn missing_directory_is_one_clear_error() {
        let dir = TempDir::new();
        let dest = dir.path().join("no/such/dir/out");
        let err = Output::create(&dest, 0o755).err().unwrap().to_string();
        assert!(err.starts_with("cannot create "), "{err}");
        assert!(err.contains("No such file or directory"), "{err}");
        assert!(!err.contains("os error"), "{err}");
    }

    #[test]
    fn directory_destination_is_refused() {
        let dir = TempDir::new();
        let err = Output::create(dir.path(), 0o755).err().unwrap();
        assert!(matches!(err, OutputError::IsDirectory(_)), "{err}");
    }
}
