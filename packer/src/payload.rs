//! The payload: the tar stream compressed as ONE lz4 frame, hashed as it is written, so
//! neither the tar nor the compressed bytes are ever held in memory.
use binctr_format::Sha256Digest;
use lz4_flex::frame::{BlockMode, BlockSize, FrameEncoder, FrameInfo};
use sha2::{Digest, Sha256};
use std::io::{self, Write};

/// Independent 4 MiB blocks, content checksum on, block checksums off: the frame's own
/// xxhash32 catches a bad decompression, and the sha256 of the compressed bytes catches a
/// damaged file before the stub decompresses anything. (4 MiB blocks measured a little
/// faster than 1 MiB ones and compress slightly better; the stub's memory for one block
/// stays small.)
pub fn frame_info() -> FrameInfo {
    FrameInfo::new()
        .block_size(BlockSize::Max4MB)
        .block_mode(BlockMode::Independent)
        .block_checksums(false)
        .content_checksum(true)
}

/// Takes the uncompressed tar stream, writes the compressed frame to `W`.
pub struct PayloadWriter<W: Write> {
    encoder: FrameEncoder<Hashing<W>>,
}

/// What [`PayloadWriter::finish`] reports for the footer.
pub struct Payload {
    pub len: u64,
    pub sha256: Sha256Digest,
}

impl<W: Write> PayloadWriter<W> {
    pub fn new(out: W) -> Self {
        PayloadWriter {
            encoder: FrameEncoder::with_frame_info(frame_info(), Hashing::new(out)),
        }
    }

    /// Ends the frame and gives back the writer positioned right after the payload.
    pub fn finish(self) -> io::Result<(W, Payload)> {
        let hashing = self.encoder.finish().map_err(io::Error::from)?;
        let payload = Payload {
            len: hashing.len,
            sha256: Sha256Digest(hashing.hasher.finalize().into()),
        };
        Ok((hashing.inner, payload))
    }
}

impl<W: Write> Write for PayloadWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.encoder.write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.encoder.write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Flushing the encoder would end a block early and make the output depend on
        // how the input was chunked; the frame is completed by `finish` only.
        Ok(())
    }
}

/// Counts and hashes what passes through.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    len: u64,
}

impl<W: Write> Hashing<W> {
    fn new(inner: W) -> Self {
        Hashing {
            inner,
            hasher: Sha256::new(),
            len: 0,
        }
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn round_trips_and_hashes_the_compressed_bytes() {
        let data: Vec<u8> = (0..3_000_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let mut w = PayloadWriter::new(Vec::new());
        for chunk in data.chunks(7777) {
            w.write_all(chunk).unwrap();
        }
        let (compressed, payload) = w.finish().unwrap();
        assert_eq!(payload.len, compressed.len() as u64);
        assert_eq!(payload.sha256, Sha256Digest::of(&compressed));
        let mut back = Vec::new();
        lz4_flex::frame::FrameDecoder::new(&compressed[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn output_does_not_depend_on_write_sizes() {
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 % 13) as u8).collect();
        let pack = |chunk: usize| {
            let mut w = PayloadWriter::new(Vec::new());
            for c in data.chunks(chunk) {
                w.write_all(c).unwrap();
                w.flush().unwrap();
            }
            w.finish().unwrap().0
        };
        assert_eq!(pack(512), pack(1 << 20));
    }
}
