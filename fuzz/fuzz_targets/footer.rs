//! The end of a packed file, as the stub reads it (docs/FORMAT.md section 5, steps 1-5):
//! footer, layout check, then the config it points at.
//!
//! Input: 8 bytes (little-endian) giving how many bytes of the file come before the
//! rest of the input (the stub and payload, not materialised), then the file's tail. A
//! real packed file's tail (config JSON + footer) with its payload end as the prefix is a
//! valid input, so the fuzzer starts from files that parse.
#![no_main]

use binctr_format::{
    Footer, FormatError, CONFIG_VERSION, FOOTER_LEN, FORMAT_VERSION, MAX_CONFIG_LEN,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let prefix = u64::from_le_bytes(data[..8].try_into().unwrap());
    let tail = &data[8..];
    let Some(file_len) = prefix.checked_add(tail.len() as u64) else {
        return;
    };
    // What the stub does for a file too short for a footer.
    if tail.len() < FOOTER_LEN {
        assert_eq!(
            Footer::decode(tail, file_len).unwrap_err(),
            FormatError::NoFooter
        );
        return;
    }
    let bytes = &tail[tail.len() - FOOTER_LEN..];
    let footer = match Footer::decode(bytes, file_len) {
        Ok(footer) => footer,
        Err(e) => {
            // Every refusal has a message (the stub's one line).
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    // An accepted footer describes exactly this file and re-encodes to the same bytes.
    assert_eq!(&footer.encode()[..], bytes);
    assert!(footer.version >= 1 && footer.version <= FORMAT_VERSION);
    assert!(footer.payload_offset > 0);
    assert!(footer.config_len <= MAX_CONFIG_LEN);
    assert_eq!(footer.file_len(), Some(file_len));
    let config_end = footer.config_offset() + footer.config_len;
    assert_eq!(config_end + FOOTER_LEN as u64, file_len);
    // The config, when it lies in the part of the file we have.
    if footer.config_offset() >= prefix {
        let start = (footer.config_offset() - prefix) as usize;
        let config = &tail[start..start + footer.config_len as usize];
        if let Ok(config) = footer.parse_config(config) {
            assert!(config.version <= CONFIG_VERSION);
        }
    }
});
