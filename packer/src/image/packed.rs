//! The layers of a format 2 packed file, read back (`binctr-pack extract`): each layer's
//! frame read from the file and checked as the stub checks it, the frame's sha256 and
//! the tar's digest, so that flattening them gives the root filesystem tar.
use super::error::ImageError;
use super::flatten::{self, Layers};
use super::limits::{Budget, Limits};
use super::types::Stats;
use crate::util::{os_error, BUF_SIZE};
use binctr_format::{Footer, HashingReader, Layer};
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};

/// The layers of a packed file whose footer and config were read and checked.
pub struct PackedLayers<'a> {
    pub file: &'a File,
    /// The file, as errors name it.
    pub name: String,
    pub footer: &'a Footer,
    pub layers: &'a [Layer],
}

impl Layers for PackedLayers<'_> {
    fn count(&self) -> usize {
        self.layers.len()
    }

    fn image(&self) -> &str {
        &self.name
    }

    fn damaged(&self, index: usize, why: String) -> ImageError {
        ImageError::Layer {
            image: self.name.clone(),
            layer: format!("{} ({})", index + 1, self.layers[index].digest),
            why,
        }
    }

    fn read(
        &self,
        index: usize,
        _budget: &Budget,
        f: &mut dyn FnMut(&mut dyn Read) -> Result<(), ImageError>,
    ) -> Result<(), ImageError> {
        let layer = &self.layers[index];
        let read_error = |e: io::Error| self.damaged(index, os_error(&e));
        let mut file = self.file;
        file.seek(SeekFrom::Start(self.footer.payload_offset + layer.offset))
            .map_err(read_error)?;
        let mut frame =
            HashingReader::new(BufReader::with_capacity(BUF_SIZE, file.take(layer.length)));
        let (result, drained, digest, size) = {
            let mut tar = HashingReader::new(lz4_flex::frame::FrameDecoder::new(&mut frame));
            let result = f(&mut tar);
            let drained = io::copy(&mut tar, &mut io::sink());
            let (digest, size) = tar.finish();
            (result, drained, digest, size)
        };
        io::copy(&mut frame, &mut io::sink()).map_err(read_error)?;
        let (sha256, length) = frame.finish();
        // The frame's own digest first: it says whether anything read from it is sound.
        if length != layer.length || Some(sha256) != layer.segment_sha256() {
            return Err(self.damaged(index, "its frame does not match its sha256".into()));
        }
        drained
            .map_err(|e| self.damaged(index, format!("cannot decompress it ({})", os_error(&e))))?;
        result?;
        if Some(digest) != layer.digest() || size != layer.size {
            return Err(self.damaged(index, "its tar does not match its digest".into()));
        }
        Ok(())
    }
}

/// Writes the root filesystem of a format 2 packed file, its layers flattened, to `out`.
pub fn flatten_packed<W: Write>(layers: &PackedLayers, out: &mut W) -> Result<Stats, ImageError> {
    flatten::flatten(layers, &Limits::default(), out)
}

#[cfg(test)]
mod tests {
    use super::super::flatten::tests::{layer, listing, MemLayers};
    use super::*;
    use crate::payload::PayloadWriter;
    use crate::util::tests::TempDir;
    use binctr_format::Sha256Digest;

    /// A payload of these layers split as format 2, in a file, and its footer.
    fn packed(dir: &TempDir, layers: Vec<Vec<u8>>) -> (File, Footer, Vec<Layer>) {
        let mut w = PayloadWriter::layered(Vec::new(), false);
        flatten::write_layers(&MemLayers(layers), &Limits::default(), &mut w).unwrap();
        let (payload, info) = w.finish().unwrap();
        let path = dir.path().join("packed");
        let stub = vec![0x7f; 100];
        std::fs::write(&path, [stub, payload.clone()].concat()).unwrap();
        let footer = Footer {
            version: binctr_format::FORMAT_VERSION,
            flags: 0,
            payload_offset: 100,
            payload_len: payload.len() as u64,
            config_len: 0,
            payload_sha256: Sha256Digest::of(&payload),
            config_sha256: Sha256Digest::of(b""),
        };
        (File::open(&path).unwrap(), footer, info.layers)
    }

    fn extract(file: &File, footer: &Footer, layers: &[Layer]) -> Result<Vec<u8>, String> {
        let layers = PackedLayers {
            file,
            name: "packed".into(),
            footer,
            layers,
        };
        let mut out = Vec::new();
        flatten_packed(&layers, &mut out).map_err(|e| e.to_string())?;
        Ok(out)
    }

    #[test]
    fn layers_read_back_flattened_and_checked() {
        let dir = TempDir::new();
        let image = vec![
            layer(&[("a/", 'd', ""), ("a/x", 'f', "x"), ("a/y", 'f', "y")]),
            layer(&[("a/.wh.x", 'f', ""), ("b", 'h', "a/y")]),
        ];
        let (file, footer, layers) = packed(&dir, image.clone());
        let mut flat = Vec::new();
        flatten::flatten(&MemLayers(image), &Limits::default(), &mut flat).unwrap();
        assert_eq!(
            listing(&extract(&file, &footer, &layers).unwrap()),
            listing(&flat)
        );
        // A digest the tar does not have: refused, named.
        let mut wrong = layers.clone();
        wrong[1].digest = Sha256Digest::of(b"other").to_string();
        let err = extract(&file, &footer, &wrong).unwrap_err();
        assert_eq!(
            err,
            format!(
                "packed: layer 2 ({}) is damaged: its tar does not match its digest",
                wrong[1].digest
            )
        );
        // A frame that is not the one listed.
        let mut wrong = layers.clone();
        wrong[0].sha256 = Sha256Digest::of(b"other").hex();
        let err = extract(&file, &footer, &wrong).unwrap_err();
        assert!(
            err.ends_with("its frame does not match its sha256"),
            "{err}"
        );
    }
}
