//! Why a file is not a usable packed file: one message per reason, each the stub's one
//! line to the user.
use crate::layout::CONFIG_VERSION;
use std::fmt;

/// Why a file is not a usable packed file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormatError {
    /// No footer magic: not packed, stripped or truncated.
    NoFooter,
    /// The footer is there but written by a newer binctr: (its version, the newest the
    /// reader reads).
    NewerVersion(u32, u32),
    /// The offsets do not add up to the file's length.
    BadLayout(String),
    /// The config bytes do not hash to what the footer says.
    ConfigDigest,
    /// The config JSON does not parse.
    BadConfig(String),
    /// The config was written by a newer binctr.
    NewerConfig(u32),
    /// The config's `layers` do not describe the payload (format 2).
    BadLayers(String),
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FormatError::NoFooter => {
                write!(f, "payload missing, was this file stripped or truncated?")
            }
            FormatError::NewerVersion(v, reads) => write!(
                f,
                "packed with a newer binctr (format version {v}, this stub reads up to {reads}): repack it (binctr-pack --flatten for older stubs) or use a newer stub"
            ),
            FormatError::BadLayout(why) => {
                write!(f, "damaged packed file ({why}): was it truncated or appended to?")
            }
            FormatError::ConfigDigest => {
                write!(f, "damaged packed file: the config does not match its sha256")
            }
            FormatError::BadConfig(why) => write!(f, "damaged packed file: bad config JSON ({why})"),
            FormatError::BadLayers(why) => write!(f, "damaged packed file: bad layer list ({why})"),
            FormatError::NewerConfig(v) => write!(
                f,
                "packed with a newer binctr (config version {v}, this stub reads up to {CONFIG_VERSION}): repack it or use a newer stub"
            ),
        }
    }
}

impl std::error::Error for FormatError {}
