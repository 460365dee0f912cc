//! The types the readers and the rest of the packer share: what IMAGE is, which image
//! and platform to pick, the image's own config, and what was written.

use super::elf_platform::Detected;
use binctr_format::ImageConfig;
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

/// IMAGE as given on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageArg {
    Stdin,
    Path(PathBuf),
}

impl fmt::Display for ImageArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageArg::Stdin => f.write_str("standard input"),
            ImageArg::Path(path) => write!(f, "{}", path.display()),
        }
    }
}

/// Which image of a multi-image input, for which platform.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// `--image NAME[:TAG]`.
    pub image: Option<String>,
    /// The platform the image must be for: `--platform OS/ARCH[/VARIANT]`, else the
    /// `--stub`'s; `None`: whichever the image is for.
    pub platform: Option<Platform>,
    /// Of several platforms, none asked for: this one (the packer's own machine's).
    pub preferred: Platform,
}

/// An OCI platform: `linux/amd64`, `linux/arm64/v8`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: String,
}

impl Platform {
    /// `linux/ARCH`.
    pub fn linux(architecture: &str) -> Platform {
        Platform {
            os: "linux".into(),
            architecture: architecture.into(),
            variant: String::new(),
        }
    }

    /// `OS/ARCH[/VARIANT]`.
    pub fn parse(text: &str) -> Option<Platform> {
        let parts: Vec<&str> = text.split('/').collect();
        if parts.len() < 2 || parts.len() > 3 || parts.iter().any(|p| p.is_empty()) {
            return None;
        }
        Some(Platform {
            os: parts[0].into(),
            architecture: parts[1].into(),
            variant: parts.get(2).copied().unwrap_or_default().into(),
        })
    }

    /// Whether an image for `self` runs here, wanted `want`: an empty variant matches any
    /// (arm64 is v8 whether it says so or not).
    pub fn matches(&self, want: &Platform) -> bool {
        self.os == want.os
            && self.architecture == want.architecture
            && (want.variant.is_empty() || self.variant.is_empty() || self.variant == want.variant)
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if !self.variant.is_empty() {
            write!(f, "/{}", self.variant)?;
        }
        Ok(())
    }
}

/// The image's own config and provenance, before the pack-time overrides.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ImageMeta {
    pub reference: String,
    pub manifest_digest: String,
    pub created: String,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
    pub exposed_ports: Vec<String>,
    pub volumes: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub stop_signal: String,
    /// The platform the image's config says it is for (None when it says nothing).
    pub platform: Option<Platform>,
}

impl ImageMeta {
    /// Writes the image's fields into `config` (a flat rootfs has none but provenance).
    pub fn apply(&self, config: &mut ImageConfig) {
        if !self.reference.is_empty() {
            config.reference = self.reference.clone();
        }
        config.manifest_digest = self.manifest_digest.clone();
        config.created = self.created.clone();
        config.entrypoint = self.entrypoint.clone();
        config.cmd = self.cmd.clone();
        config.env = self.env.clone();
        config.working_dir = self.working_dir.clone();
        config.user = self.user.clone();
        config.exposed_ports = self.exposed_ports.clone();
        config.volumes = self.volumes.clone();
        config.labels = self.labels.clone();
        config.stop_signal = self.stop_signal.clone();
    }
}

/// Where a format 2 payload goes: tar streams, each ended as a layer of its own.
pub trait LayerSink: std::io::Write {
    /// Ends the tar written since the last layer as the next layer; `diff_id` is the
    /// image's own for it (empty when it has none).
    fn end_layer(&mut self, diff_id: &str) -> std::io::Result<()>;
}

/// What was written.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    pub entries: u64,
    /// A root filesystem's CPU, as its programs tell (`elf_platform.rs`); None for an
    /// image, whose config says it.
    pub detected: Option<Detected>,
}
