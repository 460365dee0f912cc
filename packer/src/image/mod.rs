//! The packer's inputs. Every reader produces the same thing: one flattened tar stream
//! written into the payload (format 1), or the image's layers, each a tar of its own
//! (format 2: a flat tar or a directory is one layer). What an input is, is told by its content, never by its name
//! (`sniff.rs`):
//!
//! - a flat root filesystem tar (plain, gzip or zstd): passed through entry by entry
//!   (`flat_tar.rs`);
//! - a directory: an OCI image layout (`oci-layout` + `index.json`), an unpacked
//!   docker-archive (`manifest.json`), or else a root filesystem, walked into a
//!   deterministic tar (`dir.rs`);
//! - a tar holding an OCI image layout or a docker-archive (`docker save`,
//!   `skopeo copy ... oci-archive:`), possibly compressed as a whole: its members are
//!   indexed (`archive.rs`), the image is resolved (`oci.rs`, `docker.rs`) and its layers
//!   flattened (`flatten.rs`), each read and verified by `layer.rs`.
//!
//! An image comes from someone else: every input is read with bounded memory and work
//! (`limits.rs`), a directory by handle (`handle.rs`), every layer verified, and what it
//! says is shown escaped (`crate::util::printable`).
//!
//! This file is the module's face: the types the rest of the packer sees, and [`open`].
//! The types shared with the readers are in `types.rs`, errors in `error.rs`, the
//! names an input gives the packed file in `naming.rs`.
mod archive;
mod dir;
mod docker;
mod elf_platform;
mod error;
mod flat_tar;
mod flatten;
mod handle;
mod layer;
mod limits;
mod naming;
mod oci;
mod packed;
mod sniff;
mod store;
mod types;
mod zstd;

use crate::progress::{Counting, Progress};
use crate::sys;
use crate::util::BUF_SIZE;
use handle::{DirHandle, Type};
use sniff::{decompress, read_up_to, Compression};
use std::fs::File;
use std::io::{self, BufRead, BufReader, IsTerminal, Read, Seek, SeekFrom, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use store::{Kind, Store};

pub use error::ImageError;
pub use limits::{parse_size, Limits};
pub use naming::{default_name, reference_of, sanitize_name};
pub use packed::{flatten_packed, PackedLayers};
pub use sniff::input_size;
pub use types::{ImageArg, ImageMeta, LayerSink, Platform, Selection, Stats};

/// An image resolved to its layers: what `flatten` needs.
pub struct Image {
    store: Store,
    layers: Vec<layer::LayerDesc>,
    image: String,
}

/// An opened input, not read yet.
pub struct Input<'p> {
    source: Source<'p>,
    /// The input's size when known: a regular file's length.
    pub total: Option<u64>,
    image: String,
    /// The image config, for image inputs.
    pub meta: Option<ImageMeta>,
    limits: Limits,
}

enum Source<'p> {
    /// A flat tar stream, decompressed.
    Stream(Box<dyn BufRead + 'p>),
    /// A root filesystem directory: as the user named it, and its handle.
    Dir(PathBuf, DirHandle),
    Image(Image),
}

/// Opens IMAGE (a directory, a file, or standard input), tells what it is and, for an
/// image, resolves it to its layers: every error an image can have short of a damaged
/// blob is reported here, before any output exists.
pub fn open<'p>(
    arg: &ImageArg,
    selection: &Selection,
    limits: &Limits,
    progress: &'p Progress,
) -> Result<Input<'p>, ImageError> {
    let opener = Opener {
        arg,
        image: arg.to_string(),
        selection,
        limits: *limits,
        progress,
    };
    match arg {
        // A tar typed at a terminal is a mistake, not an input: say so instead of waiting.
        ImageArg::Stdin if io::stdin().is_terminal() => Err(opener.open_error(io::Error::other(
            "it is a terminal: pipe a tar into binctr-pack, e.g. podman export C | binctr-pack - -o C",
        ))),
        ImageArg::Stdin => opener.stream(Box::new(io::stdin().lock()), None),
        ImageArg::Path(path) => opener.path(path),
    }
}

/// What [`open`] needs at each step.
struct Opener<'a, 'p> {
    arg: &'a ImageArg,
    /// IMAGE as error messages name it.
    image: String,
    selection: &'a Selection,
    limits: Limits,
    progress: &'p Progress,
}

impl<'p> Opener<'_, 'p> {
    fn open_error(&self, source: io::Error) -> ImageError {
        ImageError::Open {
            image: self.image.clone(),
            source,
        }
    }

    fn read_error(&self, source: io::Error) -> ImageError {
        ImageError::Read {
            image: self.image.clone(),
            source,
        }
    }

    /// Opens IMAGE once, without blocking, and reads it as what it turns out to be.
    fn path(&self, path: &Path) -> Result<Input<'p>, ImageError> {
        let file = sys::open_nonblocking(path).map_err(|e| self.open_error(e))?;
        let st = nix::sys::stat::fstat(file.as_raw_fd()).map_err(|e| self.open_error(e.into()))?;
        match Type::of(&st) {
            Type::Dir => self.dir(path, DirHandle::from_file(file)),
            Type::File => {
                let len = u64::try_from(st.st_size).unwrap_or(0);
                self.regular_file(file, len)
            }
            // A named pipe waits for its writer, as `cat` would.
            Type::Fifo => {
                drop(file);
                let file = File::open(path).map_err(|e| self.open_error(e))?;
                self.stream(Box::new(file), None)
            }
            _ => {
                sys::set_blocking(&file).map_err(|e| self.open_error(e))?;
                self.stream(Box::new(file), None)
            }
        }
    }

    /// An image layout, or else a root filesystem, read through the one handle.
    fn dir(&self, path: &Path, root: DirHandle) -> Result<Input<'p>, ImageError> {
        // Fail now, not halfway through the walk, when the top is unreadable.
        root.check_readable().map_err(|e| self.open_error(e))?;
        if let Some(kind) = Kind::of_dir(&root) {
            return self.resolve(Store::Dir(root), kind);
        }
        Ok(Input {
            source: Source::Dir(path.to_path_buf(), root),
            total: None,
            image: self.image.clone(),
            meta: None,
            limits: self.limits,
        })
    }

    /// A plain tar in a regular file is indexed in place, by seeking; a compressed one is
    /// read as a stream.
    fn regular_file(&self, mut file: File, len: u64) -> Result<Input<'p>, ImageError> {
        let mut magic = [0u8; 8];
        let n = read_up_to(&mut file, &mut magic).map_err(|e| self.read_error(e))?;
        file.seek(SeekFrom::Start(0))
            .map_err(|e| self.read_error(e))?;
        if Compression::of_magic(&magic[..n]).is_some() {
            return self.stream(Box::new(file), Some(len));
        }
        match archive::index_file(&file, &self.image)? {
            Some((members, kind)) => self.resolve(Store::Archive { file, members }, kind),
            None => {
                let stream = BufReader::with_capacity(BUF_SIZE, Counting::new(file, self.progress));
                Ok(self.flat(Box::new(stream), Some(len)))
            }
        }
    }

    /// A pipe or a compressed file: read once, spooling what may be an image archive.
    fn stream(&self, raw: Box<dyn Read + 'p>, total: Option<u64>) -> Result<Input<'p>, ImageError> {
        let stream = decompress(
            BufReader::with_capacity(BUF_SIZE, Counting::new(raw, self.progress)),
            &self.image,
        )?;
        match archive::index_stream(stream, &self.image, self.limits.max_size)? {
            archive::Indexed::Image(file, members, kind) => {
                self.resolve(Store::Archive { file, members }, kind)
            }
            archive::Indexed::Flat(stream) => Ok(self.flat(stream, total)),
        }
    }

    fn flat(&self, stream: Box<dyn BufRead + 'p>, total: Option<u64>) -> Input<'p> {
        Input {
            source: Source::Stream(stream),
            total,
            image: self.image.clone(),
            meta: None,
            limits: self.limits,
        }
    }

    /// An image: its config and layers, as its index and manifest say.
    fn resolve(&self, store: Store, kind: Kind) -> Result<Input<'p>, ImageError> {
        let (mut meta, layers) = match kind {
            Kind::Oci => oci::resolve(&store, &self.image, self.selection)?,
            Kind::Docker => docker::resolve(&store, &self.image, self.selection)?,
        };
        if meta.reference.is_empty() {
            meta.reference = match self.arg {
                ImageArg::Stdin => "-".into(),
                ImageArg::Path(p) => reference_of(p),
            };
        }
        // Each layer is read twice: once to plan, once to write.
        let total = layers
            .iter()
            .fold(0u64, |sum, l| sum.saturating_add(l.size))
            .saturating_mul(2);
        Ok(Input {
            source: Source::Image(Image {
                store,
                layers,
                image: self.image.clone(),
            }),
            total: Some(total),
            image: self.image.clone(),
            meta: Some(meta),
            limits: self.limits,
        })
    }
}

impl Input<'_> {
    /// How many layers the image has: 1 for a flat tar or a directory.
    pub fn layer_count(&self) -> usize {
        match &self.source {
            Source::Image(image) => image.layers.len(),
            _ => 1,
        }
    }

    /// Writes the image as format 2 layers into `out`, each ended with
    /// [`LayerSink::end_layer`]: a flat tar or a directory as one layer, an image's
    /// layers normalized (`flatten/layered.rs`).
    pub fn write_layers<S: LayerSink>(
        self,
        progress: &Progress,
        out: &mut S,
    ) -> Result<Stats, ImageError> {
        match self.source {
            Source::Image(image) => {
                let layers = layer::StoreLayers {
                    store: &image.store,
                    layers: &image.layers,
                    image: &image.image,
                    progress,
                };
                flatten::write_layers(&layers, &self.limits, out)
            }
            _ => {
                let stats = self.write_tar(progress, out)?;
                out.end_layer("").map_err(ImageError::Write)?;
                Ok(stats)
            }
        }
    }

    /// Writes the image as one tar stream into `out`.
    pub fn write_tar<W: Write>(
        self,
        progress: &Progress,
        out: &mut W,
    ) -> Result<Stats, ImageError> {
        match self.source {
            Source::Dir(path, root) => dir::write_tar(&path, &root, &self.limits, progress, out),
            Source::Stream(stream) => flat_tar::copy(stream, &self.image, &self.limits, out),
            Source::Image(image) => {
                let layers = layer::StoreLayers {
                    store: &image.store,
                    layers: &image.layers,
                    image: &image.image,
                    progress,
                };
                flatten::flatten(&layers, &self.limits, out)
            }
        }
    }
}
