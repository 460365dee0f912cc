//! The config JSON (docs/FORMAT.md section 3): whatever bytes, `from_json` returns a
//! config or an error, never panics; an accepted config is not from the future and
//! survives a round trip through `to_json` unchanged (the packer's determinism).
#![no_main]

use binctr_format::{ImageConfig, CONFIG_VERSION};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(config) = ImageConfig::from_json(data) else {
        return;
    };
    assert!(config.version <= CONFIG_VERSION);
    let json = config.to_json();
    let again = ImageConfig::from_json(&json).expect("a config written by to_json parses");
    assert_eq!(again, config);
    assert_eq!(again.to_json(), json, "to_json is deterministic");
    // Compact, as FORMAT.md says the packer writes it.
    let value: serde_json::Value = serde_json::from_slice(&json).expect("valid JSON");
    assert_eq!(serde_json::to_vec(&value).unwrap().len(), json.len());
});
