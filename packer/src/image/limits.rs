//! How much any input may make the packer hold or do. An image comes from someone else:
//! a 4 MB archive must not cost gigabytes of memory, hours of work or a full disk.
//!
//! - Tar metadata is read by `binctr_format::tar_reader` with the stub's own caps
//!   ([`tar_limits`]: GNU long names 16 KiB, PAX headers 256 KiB, sparse maps), and a
//!   path must stay under PATH_MAX, as the stub requires.
//! - Sizes: no file may declare more than `max_size` bytes, and neither the bytes read
//!   from the layers (per pass), nor the flattened tar, nor a directory's files, nor a
//!   spooled stream may add up to more (`--max-size`, default 64 GiB).
//! - Images: at most [`MAX_LAYERS`] layers, OCI indexes nested at most
//!   [`MAX_INDEX_DEPTH`] deep, and a layer listed more than [`MAX_REPEATS`] times must be
//!   tiny (the empty layers builders add for `WORKDIR`), so that listing one big layer
//!   20 times is refused after reading 1 MiB, not 80 GiB.
//! - Flattening keeps one record per path, at most [`MAX_TREE_BYTES`] of them.
use binctr_format::tar_reader;
use std::cell::Cell;

/// The caps of the tar reader: the stub's own, so that what the packer writes the stub
/// reads.
pub fn tar_limits() -> tar_reader::Limits {
    tar_reader::Limits::default()
}

/// The longest path the stub extracts (Linux's PATH_MAX, its NUL included).
pub const PATH_MAX: usize = 4096;

/// The default of `--max-size`.
pub const DEFAULT_MAX_SIZE: u64 = 64 << 30;

/// Layers in one manifest.
pub const MAX_LAYERS: usize = 500;

/// Indexes within indexes (OCI), the top index.json counted.
pub const MAX_INDEX_DEPTH: usize = 8;

/// How often a layer may be listed in one manifest before it must be small.
pub const MAX_REPEATS: usize = 3;

/// The largest uncompressed tar of a layer listed more than [`MAX_REPEATS`] times.
pub const SMALL_LAYER: u64 = 1 << 20;

/// Members of an image archive (docker save writes a few per layer).
pub const MAX_MEMBERS: usize = 100_000;

/// What the flatten plan may hold: the bytes of its paths plus [`NODE_COST`] a path.
pub const MAX_TREE_BYTES: usize = 256 << 20;

/// A path's record in the flatten plan, besides the path's own bytes, roughly.
pub const NODE_COST: usize = 96;

/// The caps that can be raised from the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `--max-size`: the most bytes any one file, the layers read in one pass, the
    /// flattened tar or a spooled stream may amount to.
    pub max_size: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_size: DEFAULT_MAX_SIZE,
        }
    }
}

/// Bytes left to read or write, shared by the readers of one pass.
pub struct Budget {
    left: Cell<u64>,
    max: u64,
    exceeded: Cell<bool>,
}

impl Budget {
    pub fn new(max: u64) -> Budget {
        Budget {
            left: Cell::new(max),
            max,
            exceeded: Cell::new(false),
        }
    }

    /// Takes `n` bytes; `false` (and remembered) when that is more than is left.
    pub fn take(&self, n: u64) -> bool {
        match self.left.get().checked_sub(n) {
            Some(left) => {
                self.left.set(left);
                true
            }
            None => {
                self.exceeded.set(true);
                false
            }
        }
    }

    pub fn exceeded(&self) -> bool {
        self.exceeded.get()
    }

    pub fn max(&self) -> u64 {
        self.max
    }
}

/// A size as people read it: "64 GiB", "1.5 MiB", "700 bytes".
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} bytes")
    } else if value.fract() == 0.0 {
        format!("{value} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `--max-size`: bytes, or a number with K, M, G or T (powers of 1024; `KiB`, `GB` and
/// the like are read the same).
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let number: u64 = text[..digits].parse().ok()?;
    let unit = text[digits..].trim().to_ascii_lowercase();
    let unit = unit.trim_end_matches('b').trim_end_matches('i');
    let shift = match unit {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        _ => return None,
    };
    number.checked_mul(1u64 << shift).filter(|&n| n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_print() {
        assert_eq!(parse_size("64G"), Some(64 << 30));
        assert_eq!(parse_size("100GiB"), Some(100 << 30));
        assert_eq!(parse_size("2t"), Some(2 << 40));
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("1.5G"), None);
        assert_eq!(parse_size("0"), None);
        assert_eq!(parse_size("x"), None);
        assert_eq!(parse_size("99999999999T"), None);
        assert_eq!(human(64 << 30), "64 GiB");
        assert_eq!(human(1536 << 10), "1.5 MiB");
        assert_eq!(human(700), "700 bytes");
    }

    #[test]
    fn a_budget_runs_out_once() {
        let b = Budget::new(10);
        assert!(b.take(6) && !b.exceeded());
        assert!(!b.take(5) && b.exceeded());
    }
}
