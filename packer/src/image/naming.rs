//! The names an input gives the packed file: the default `name` (hostname, help text,
//! container ids) and the `reference` recorded in the config.
use super::types::ImageArg;
use std::fs;
use std::path::Path;

/// The image name derived from IMAGE: the file name less its archive suffixes, the
/// directory's name, or "image" for standard input. Sanitize with [`sanitize_name`].
pub fn default_name(arg: &ImageArg) -> String {
    let ImageArg::Path(path) = arg else {
        return "image".to_string();
    };
    if path.is_dir() {
        let path = fs::canonicalize(path).unwrap_or_else(|_| path.clone());
        return file_name(&path);
    }
    let name = file_name(path);
    for suffix in [".tar.gz", ".tar.zst", ".tgz", ".tar"] {
        if let Some(stem) = name.strip_suffix(suffix) {
            return stem.to_string();
        }
    }
    name
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A name usable as a hostname label: lower case `[a-z0-9._-]`, starting and ending with
/// a letter or digit, at most 63 characters; "image" if nothing is left.
pub fn sanitize_name(name: &str) -> String {
    let mapped: String = name
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let trimmed = mapped.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    let mut name: String = trimmed.chars().take(63).collect();
    while name.ends_with(|c: char| !c.is_ascii_alphanumeric()) {
        name.pop();
    }
    if name.is_empty() {
        "image".to_string()
    } else {
        name
    }
}

/// What the config records as an image file's reference: its name, not where it lies
/// on this machine (packing the same file from elsewhere gives the same bytes). A path
/// without a last name (`.`, `dir/..`, `/`) gives the name of what it leads to, never
/// the path itself.
pub fn reference_of(path: &Path) -> String {
    let name = match path.file_name() {
        Some(name) => Some(name.to_owned()),
        None => fs::canonicalize(path)
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_owned())),
    };
    match name {
        Some(name) => name.to_string_lossy().into_owned(),
        None => "image".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn names_are_derived_and_sanitized() {
        let path = |p: &str| ImageArg::Path(PathBuf::from(p));
        assert_eq!(default_name(&path("/x/alpine.tar")), "alpine");
        assert_eq!(default_name(&path("nginx-1.25.tar.gz")), "nginx-1.25");
        assert_eq!(default_name(&path("a.tgz")), "a");
        assert_eq!(default_name(&path("b.tar.zst")), "b");
        assert_eq!(default_name(&path("rootfs.img")), "rootfs.img");
        assert_eq!(default_name(&ImageArg::Stdin), "image");
        assert_eq!(sanitize_name("My Image:latest"), "my-image-latest");
        assert_eq!(sanitize_name("--x--"), "x");
        assert_eq!(sanitize_name("ünï"), "n");
        assert_eq!(sanitize_name("..."), "image");
        assert_eq!(sanitize_name(&"a".repeat(100)).len(), 63);
        assert_eq!(reference_of(Path::new("/x/alpine.tar")), "alpine.tar");
        assert_eq!(reference_of(Path::new("/")), "image");
        let here = std::env::current_dir().unwrap();
        let parent = here.parent().and_then(|p| p.file_name()).unwrap();
        assert_eq!(
            reference_of(&here.join("..")),
            parent.to_string_lossy().into_owned()
        );
        assert!(!reference_of(Path::new(".")).contains('/'));
    }
}
