//! Finds what the packer appended to this very file: the footer at the end, then the
//! config. Reads /proc/self/exe, never argv[0]. The payload itself is only read when the
//! rootfs has to be extracted (cache.rs).

use crate::error::{Context, Result};
use binctr_format::{Footer, ImageConfig, FOOTER_LEN};
use std::fs::File;
use std::os::unix::fs::FileExt;

pub struct Packed {
    /// /proc/self/exe, open close-on-exec.
    pub file: File,
    pub footer: Footer,
    pub config: ImageConfig,
}

pub fn open_self() -> Result<Packed> {
    let file = File::open("/proc/self/exe").context("cannot open /proc/self/exe")?;
    let len = file.metadata().context("cannot stat /proc/self/exe")?.len();
    let mut tail = [0u8; FOOTER_LEN];
    if len < FOOTER_LEN as u64 {
        return Err(binctr_format::FormatError::NoFooter.into());
    }
    file.read_exact_at(&mut tail, len - FOOTER_LEN as u64)
        .context("cannot read this file's footer")?;
    let footer = Footer::decode(&tail, len)?;
    let mut config = vec![0u8; footer.config_len as usize];
    file.read_exact_at(&mut config, footer.config_offset())
        .context("cannot read this file's config")?;
    let config = footer.parse_config(&config)?;
    Ok(Packed {
        file,
        footer,
        config,
    })
}
