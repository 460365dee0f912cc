//! The payload: the tar stream compressed as ONE lz4 frame (format 1), or each layer's
//! tar as a frame of its own (format 2), hashed as it is written (the whole payload, each
//! frame, each tar), so neither the tar nor the compressed bytes are ever held in memory.
use crate::image::LayerSink;
use binctr_format::{Layer, Sha256Digest};
use lz4_flex::frame::{BlockMode, BlockSize, FrameEncoder, FrameInfo};
use sha2::{Digest, Sha256};
use std::io::{self, Write};
use std::sync::mpsc;

/// Independent 4 MiB blocks, block checksums off. (4 MiB blocks measured a little
/// faster than 1 MiB ones and compress slightly better; the stub's memory for one block
/// stays small.) The sha256 of the compressed bytes catches a damaged file before the
/// stub decompresses anything; the decompressed bytes are checked by the frame's own
/// xxhash32 in format 1, and in format 2 by the sha256 of each layer's tar, which the
/// stub checks anyway (the layer store's key) and which makes the xxhash32 redundant:
/// without it a first run's decompression takes a tenth less CPU.
pub fn frame_info(layered: bool) -> FrameInfo {
    FrameInfo::new()
        .block_size(BlockSize::Max4MB)
        .block_mode(BlockMode::Independent)
        .block_checksums(false)
        .content_checksum(!layered)
}

/// Takes the uncompressed tar streams, writes the compressed frames to `W`: one frame
/// for a format 1 payload, one per layer for format 2 ([`PayloadWriter::end_layer`]).
pub struct PayloadWriter<W: Write> {
    state: State<W>,
    /// The uncompressed tar of the current frame (format 2 only: hashing it costs, and
    /// is done on a thread of its own, beside the compression, as is each frame's).
    tar: Option<ThreadHasher>,
    tar_len: u64,
    layers: Vec<Layer>,
}

enum State<W: Write> {
    /// Between frames.
    Idle(Hashing<W>),
    Frame(FrameEncoder<Hashing<W>>),
    /// A frame failed to end: nothing more is written.
    Broken,
}

/// What [`PayloadWriter::finish`] reports for the footer.
pub struct Payload {
    pub len: u64,
    pub sha256: Sha256Digest,
    /// The frames ended by [`PayloadWriter::end_layer`], in order.
    pub layers: Vec<Layer>,
}

impl<W: Write> PayloadWriter<W> {
    /// A format 1 payload: one frame.
    pub fn new(out: W) -> Self {
        PayloadWriter {
            state: State::Idle(Hashing::new(out, false)),
            tar: None,
            tar_len: 0,
            layers: Vec::new(),
        }
    }

    /// A format 2 payload: a frame per layer, each frame and tar hashed. With
    /// `one_layer`, the one frame is the whole payload and is hashed once.
    pub fn layered(out: W, one_layer: bool) -> Self {
        PayloadWriter {
            state: State::Idle(Hashing::new(out, !one_layer)),
            tar: Some(ThreadHasher::new()),
            tar_len: 0,
            layers: Vec::new(),
        }
    }

    fn encoder(&mut self) -> io::Result<&mut FrameEncoder<Hashing<W>>> {
        if matches!(self.state, State::Idle(_)) {
            if let State::Idle(out) = std::mem::replace(&mut self.state, State::Broken) {
                self.state = State::Frame(FrameEncoder::with_frame_info(
                    frame_info(self.tar.is_some()),
                    out,
                ));
            }
        }
        match &mut self.state {
            State::Frame(encoder) => Ok(encoder),
            _ => Err(broken()),
        }
    }

    /// Ends the current frame (an empty one if nothing was written into it).
    fn end_frame(&mut self) -> io::Result<Hashing<W>> {
        self.encoder()?;
        match std::mem::replace(&mut self.state, State::Broken) {
            State::Frame(encoder) => encoder.finish().map_err(io::Error::from),
            _ => Err(broken()),
        }
    }

    /// Ends the current frame as the next layer of a format 2 payload, `diff_id` being
    /// the image's own for it (empty when it has none).
    pub fn end_layer(&mut self, diff_id: &str) -> io::Result<()> {
        let mut out = self.end_frame()?;
        let Some(tar) = &mut self.tar else {
            return Err(io::Error::other("layers in a format 1 payload"));
        };
        let frame = match &mut out.frame {
            Some(frame) => frame.digest()?,
            // The one layer's frame is the whole payload.
            None if self.layers.is_empty() => Sha256Digest(out.hasher.clone().finalize().into()),
            None => return Err(io::Error::other("a second layer in a one-layer payload")),
        };
        self.layers.push(Layer {
            digest: tar.digest()?.to_string(),
            diff_id: diff_id.to_string(),
            offset: out.frame_start,
            length: out.len - out.frame_start,
            size: std::mem::take(&mut self.tar_len),
            sha256: frame.hex(),
        });
        out.frame_start = out.len;
        self.state = State::Idle(out);
        Ok(())
    }

    /// Ends the frame (format 1; none is left open after [`Self::end_layer`]) and gives
    /// back the writer positioned right after the payload.
    pub fn finish(mut self) -> io::Result<(W, Payload)> {
        let out = match std::mem::replace(&mut self.state, State::Broken) {
            State::Idle(out) if !self.layers.is_empty() => out,
            state => {
                self.state = state;
                self.end_frame()?
            }
        };
        let payload = Payload {
            len: out.len,
            sha256: Sha256Digest(out.hasher.finalize().into()),
            layers: self.layers,
        };
        Ok((out.inner, payload))
    }
}

impl<W: Write> LayerSink for PayloadWriter<W> {
    fn end_layer(&mut self, diff_id: &str) -> io::Result<()> {
        PayloadWriter::end_layer(self, diff_id)
    }
}

impl<W: Write> Write for PayloadWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.encoder()?.write(buf)?;
        if let Some(tar) = &mut self.tar {
            tar.update(&buf[..n])?;
        }
        self.tar_len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Flushing the encoder would end a block early and make the output depend on
        // how the input was chunked; a frame is completed by `end_layer` or `finish` only.
        Ok(())
    }
}

fn broken() -> io::Error {
    io::Error::other("the payload writer failed before")
}

/// Hashes streams on a thread of its own: the bytes are copied into 256 KiB buffers that
/// go to the thread and come back to be filled again.
struct ThreadHasher {
    /// The buffer being filled.
    buf: Vec<u8>,
    /// To the thread: a full buffer, or an empty one to say the stream ended.
    to: Option<mpsc::SyncSender<Vec<u8>>>,
    /// From the thread: emptied buffers, and each stream's digest.
    back: mpsc::Receiver<Vec<u8>>,
    digests: mpsc::Receiver<Sha256Digest>,
    thread: Option<std::thread::JoinHandle<()>>,
}

const HASH_CHUNK: usize = 256 << 10;

impl ThreadHasher {
    fn new() -> ThreadHasher {
        let (to, from) = mpsc::sync_channel::<Vec<u8>>(2);
        let (give_back, back) = mpsc::channel();
        let (send_digest, digests) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            let mut hasher = Sha256::new();
            for mut buf in from {
                if buf.is_empty() {
                    let digest = std::mem::take(&mut hasher).finalize();
                    let _ = send_digest.send(Sha256Digest(digest.into()));
                    continue;
                }
                hasher.update(&buf);
                buf.clear();
                let _ = give_back.send(buf);
            }
        });
        ThreadHasher {
            buf: Vec::with_capacity(HASH_CHUNK),
            to: Some(to),
            back,
            digests,
            thread: Some(thread),
        }
    }

    fn send(&mut self, buf: Vec<u8>) -> io::Result<()> {
        let to = self.to.as_ref().ok_or_else(hasher_gone)?;
        to.send(buf).map_err(|_| hasher_gone())
    }

    fn update(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let n = data.len().min(HASH_CHUNK - self.buf.len());
            self.buf.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.buf.len() == HASH_CHUNK {
                let next = self
                    .back
                    .try_recv()
                    .unwrap_or_else(|_| Vec::with_capacity(HASH_CHUNK));
                let full = std::mem::replace(&mut self.buf, next);
                self.send(full)?;
            }
        }
        Ok(())
    }

    /// The digest of what was given since the last one.
    fn digest(&mut self) -> io::Result<Sha256Digest> {
        if !self.buf.is_empty() {
            let rest = std::mem::replace(&mut self.buf, Vec::with_capacity(HASH_CHUNK));
            self.send(rest)?;
        }
        self.send(Vec::new())?;
        self.digests.recv().map_err(|_| hasher_gone())
    }
}

impl Drop for ThreadHasher {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop.
        self.to = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn hasher_gone() -> io::Error {
    io::Error::other("the tar hashing thread ended")
}

/// Counts and hashes what passes through: the whole payload, and the current frame.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    /// Format 2 only, on a thread of its own.
    frame: Option<ThreadHasher>,
    len: u64,
    frame_start: u64,
}

impl<W: Write> Hashing<W> {
    fn new(inner: W, frames: bool) -> Self {
        Hashing {
            inner,
            hasher: Sha256::new(),
            frame: frames.then(ThreadHasher::new),
            len: 0,
            frame_start: 0,
        }
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        if let Some(frame) = &mut self.frame {
            frame.update(&buf[..n])?;
        }
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

    #[test]
    fn one_layer_is_the_whole_payload() {
        let mut w = PayloadWriter::layered(Vec::new(), true);
        w.write_all(b"tar").unwrap();
        w.end_layer("").unwrap();
        let (payload, info) = w.finish().unwrap();
        assert_eq!(info.layers[0].sha256, Sha256Digest::of(&payload).hex());
        assert_eq!(info.layers[0].digest, Sha256Digest::of(b"tar").to_string());
        let mut w = PayloadWriter::layered(Vec::new(), true);
        w.end_layer("").unwrap();
        assert!(w.end_layer("").is_err());
    }

    #[test]
    fn layers_are_frames_of_their_own() {
        // The first over two of the hashing thread's buffers.
        let big: Vec<u8> = (0..2_600_000u32).map(|i| (i % 249) as u8).collect();
        let mut w = PayloadWriter::layered(Vec::new(), false);
        for chunk in big.chunks(70_001) {
            w.write_all(chunk).unwrap();
        }
        w.end_layer("sha256:x").unwrap();
        w.end_layer("").unwrap();
        w.write_all(b"top").unwrap();
        w.end_layer("").unwrap();
        let (payload, info) = w.finish().unwrap();
        assert_eq!(info.len, payload.len() as u64);
        assert_eq!(info.sha256, Sha256Digest::of(&payload));
        let layers = info.layers;
        assert_eq!(layers.len(), 3);
        let tars: [&[u8]; 3] = [&big, b"", b"top"];
        let mut at = 0;
        for (layer, tar) in layers.iter().zip(tars) {
            assert_eq!(layer.offset, at);
            let frame = &payload[at as usize..(at + layer.length) as usize];
            assert_eq!(layer.sha256, Sha256Digest::of(frame).hex());
            assert_eq!(layer.digest, Sha256Digest::of(tar).to_string());
            assert_eq!(layer.size, tar.len() as u64);
            let mut back = Vec::new();
            lz4_flex::frame::FrameDecoder::new(frame)
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, tar);
            at += layer.length;
        }
        assert_eq!(layers[0].diff_id, "sha256:x");
        assert_eq!(at, payload.len() as u64);
    }
}
