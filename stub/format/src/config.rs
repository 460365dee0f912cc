//! The config JSON (docs/FORMAT.md section 3): what the stub needs to know about the
//! image, written after the payload.
use crate::error::FormatError;
use crate::hash::Sha256Digest;
use crate::layout::CONFIG_VERSION;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What the stub needs to know about the image, stored as JSON after the payload.
/// Every field has a default, and unknown fields are ignored, so older stubs read
/// newer configs of the same `version`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ImageConfig {
    /// Schema version, [`CONFIG_VERSION`] when written.
    pub version: u32,
    /// Short name used for the hostname, the help text and container ids.
    pub name: String,
    /// Where the image came from (file name or image reference).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reference: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub manifest_digest: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub created: String,
    pub packer_version: String,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub exposed_ports: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub stop_signal: String,
    /// Pack-time default: run with a read-only root unless the user asks otherwise.
    pub read_only: bool,
    /// Format 2: the payload's layers, bottom first; empty in format 1.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<Layer>,
}

/// One layer of a format 2 payload: an lz4 frame of its own, whose decompressed tar is
/// the layer as the packer normalized it (whiteouts kept as `.wh.` entries).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Layer {
    /// `sha256:<hex>` of the uncompressed tar, as the packer wrote it: shown, and checked
    /// by the packer's `inspect` and `extract` (the stub keys a layer by `sha256`).
    pub digest: String,
    /// The image's own diff_id of the layer, shown only; empty for a flat tar, a
    /// directory or squashed layers.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub diff_id: String,
    /// Where its frame starts, from `payload_offset`.
    pub offset: u64,
    /// Its frame's length, in bytes.
    pub length: u64,
    /// The uncompressed tar's length.
    pub size: u64,
    /// `<hex>` sha256 of its frame's bytes: the key the layer is cached under, checked
    /// while they are read, before the layer is committed.
    pub sha256: String,
}

impl Layer {
    /// `digest` as a digest, if well-formed.
    pub fn digest(&self) -> Option<Sha256Digest> {
        Sha256Digest::from_hex(self.digest.strip_prefix("sha256:")?)
    }

    /// `sha256` as a digest, if well-formed.
    pub fn segment_sha256(&self) -> Option<Sha256Digest> {
        Sha256Digest::from_hex(&self.sha256)
    }
}

impl ImageConfig {
    pub fn new(name: &str) -> Self {
        ImageConfig {
            version: CONFIG_VERSION,
            name: name.to_string(),
            packer_version: String::new(),
            ..Default::default()
        }
    }

    pub fn from_json(bytes: &[u8]) -> Result<ImageConfig, FormatError> {
        let config: ImageConfig =
            serde_json::from_slice(bytes).map_err(|e| FormatError::BadConfig(e.to_string()))?;
        if config.version > CONFIG_VERSION {
            return Err(FormatError::NewerConfig(config.version));
        }
        Ok(config)
    }

    /// Compact JSON; field order is fixed by the struct, maps are sorted, so the same
    /// config always gives the same bytes.
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing a struct of strings, vectors and a BTreeMap cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_round_trips_and_ignores_unknown_fields() {
        let mut config = ImageConfig::new("nginx");
        config.cmd = vec!["nginx".into(), "-g".into(), "daemon off;".into()];
        config.env = vec!["PATH=/bin".into()];
        config.labels.insert("a".into(), "b".into());
        config.read_only = true;
        let json = config.to_json();
        assert_eq!(ImageConfig::from_json(&json).unwrap(), config);
        let mut value: serde_json::Value = serde_json::from_slice(&json).unwrap();
        value["from_the_future"] = serde_json::json!(1);
        let json = serde_json::to_vec(&value).unwrap();
        assert_eq!(ImageConfig::from_json(&json).unwrap(), config);
    }

    #[test]
    fn layers_round_trip_and_absent_means_none() {
        let mut config = ImageConfig::new("x");
        config.layers.push(Layer {
            digest: format!("sha256:{}", "ab".repeat(32)),
            diff_id: String::new(),
            offset: 0,
            length: 40,
            size: 1024,
            sha256: "cd".repeat(32),
        });
        let json = config.to_json();
        let text = String::from_utf8(json.clone()).unwrap();
        assert!(text.ends_with(&format!(
            r#""layers":[{{"digest":"sha256:{}","offset":0,"length":40,"size":1024,"sha256":"{}"}}]}}"#,
            "ab".repeat(32),
            "cd".repeat(32)
        )));
        let back = ImageConfig::from_json(&json).unwrap();
        assert_eq!(back, config);
        assert_eq!(back.layers[0].digest().unwrap().0, [0xab; 32]);
        assert_eq!(back.layers[0].segment_sha256().unwrap().0, [0xcd; 32]);
        // A version 1 config: no layers, none written.
        let flat = ImageConfig::new("x");
        assert!(!String::from_utf8(flat.to_json())
            .unwrap()
            .contains("layers"));
        let old = br#"{"version": 1, "name": "x"}"#;
        assert!(ImageConfig::from_json(old).unwrap().layers.is_empty());
    }

    #[test]
    fn config_rejects_newer_version() {
        let json = br#"{"version": 99, "name": "x"}"#;
        assert_eq!(
            ImageConfig::from_json(json).unwrap_err(),
            FormatError::NewerConfig(99)
        );
    }
}
