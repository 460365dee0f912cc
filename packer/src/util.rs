//! Small helpers shared by the modules.
use std::io;

/// Large reads keep the per-call overhead out of the way of lz4.
pub const BUF_SIZE: usize = 1 << 20;

pub use binctr_format::printable;

/// [`printable`] of a string.
pub fn shown(text: &str) -> String {
    printable(text.as_bytes())
}

/// An I/O error as a user reads it: "No such file or directory", without Rust's
/// " (os error 2)" suffix.
pub fn os_error(e: &io::Error) -> String {
    let text = e.to_string();
    match (e.raw_os_error(), text.rfind(" (os error ")) {
        (Some(_), Some(at)) => text[..at].to_string(),
        _ => text,
    }
}

#[cfg(test)]
pub mod tests {
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A directory under the system temp dir, removed when dropped.
    pub struct TempDir(PathBuf);

    impl TempDir {
        pub fn new() -> TempDir {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let path = std::env::temp_dir().join(format!(
                "binctr-pack-test-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::SeqCst)
            ));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).unwrap();
            TempDir(path)
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn printable_escapes_and_cuts() {
        assert_eq!(super::shown("busybox:1.36"), "busybox:1.36");
        assert_eq!(
            super::shown("a\x1b]52;c;eA==\x07"),
            "a\\u{1b}]52;c;eA==\\u{7}"
        );
        assert_eq!(super::shown("two\nlines"), "two\\nlines");
        let long = super::shown(&"x".repeat(1000));
        assert_eq!(long, format!("{}... (1000 bytes)", "x".repeat(200)));
    }

    #[test]
    fn os_error_drops_the_code() {
        let e = std::io::Error::from_raw_os_error(2);
        assert_eq!(super::os_error(&e), "No such file or directory");
        let e = std::io::Error::other("custom");
        assert_eq!(super::os_error(&e), "custom");
    }
}
