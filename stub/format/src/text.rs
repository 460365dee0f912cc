//! The one rule for showing text that came from an image (a name, a tag, a label, an
//! entry's path) or a user, used by the packer's errors and `inspect` and by the stub's
//! errors, `--help` and `--cache-list`.

/// How much of such a text an error line or a listing shows.
const SHOWN_BYTES: usize = 200;

/// The text as one short line of plain text: control characters (a newline, a
/// terminal escape) are escaped, so it cannot forge lines, colours, titles or clipboard
/// writes, and a long one is cut, so a 2 GiB name is not a 2 GiB "line".
pub fn printable(bytes: &[u8]) -> String {
    if bytes.len() <= SHOWN_BYTES {
        return String::from_utf8_lossy(bytes).escape_debug().to_string();
    }
    format!(
        "{}... ({} bytes)",
        String::from_utf8_lossy(&bytes[..SHOWN_BYTES]).escape_debug(),
        bytes.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_control_characters_and_cuts_long_texts() {
        assert_eq!(printable(b"a\x1b[2Jb\n"), "a\\u{1b}[2Jb\\n");
        let long = printable(&[b'x'; 1000]);
        assert!(
            long.ends_with("... (1000 bytes)") && long.len() < 300,
            "{long}"
        );
    }
}
