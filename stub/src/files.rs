//! Files and directories binctr keeps beside the user's own: the private directories it
//! trusts (cache, state root), files replaced atomically, and `rm -rf` of what it made.

use crate::error::{Context, Error, Result};
use std::fs::{self, DirBuilder, File};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::Path;

/// Creates `dir` (0700) or checks that an existing one is ours, and makes it private.
/// The cache holds setuid files of the user's images, the state root the locks of
/// running containers: nobody else may reach either. `what` names it in errors, `fix`
/// says how to choose another.
pub fn private_dir(dir: &Path, what: &str, fix: &str) -> Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| {
            format!(
                "cannot create the {what} directory {} ({fix})",
                dir.display()
            )
        })?;
    let meta = fs::metadata(dir).with_context(|| format!("cannot stat {}", dir.display()))?;
    let uid = nix::unistd::geteuid().as_raw();
    if meta.uid() != uid {
        return Err(Error::new(format!(
            "the {what} directory {} belongs to uid {}, not to you (uid {uid}): {fix}",
            dir.display(),
            meta.uid()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot make {} private (chmod 700)", dir.display()))?;
    }
    Ok(())
}

/// `rm -rf`, making directories writable on the way (images hold read-only ones).
pub fn remove_tree(path: &Path) -> io::Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.is_dir() {
        return fs::remove_file(path);
    }
    if meta.mode() & 0o700 != 0o700 {
        fs::set_permissions(path, fs::Permissions::from_mode(0o700))?;
    }
    for item in fs::read_dir(path)? {
        remove_tree(&item?.path())?;
    }
    fs::remove_dir(path)
}

/// Writes `path` through a temporary file in the same directory and a rename, so a
/// reader never sees it half-written.
pub fn write_atomically(path: &Path, content: &[u8]) -> Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let result = File::create(&tmp)
        .and_then(|mut f| f.write_all(content))
        .and_then(|()| fs::rename(&tmp, path));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.with_context(|| format!("cannot write {}", path.display()))
}
