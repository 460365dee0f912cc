//! The decompressing process of an extraction (extract.rs): a frame's lz4 into the ring
//! of shared slots (ring.rs).
//!
//! binctr-pack writes frames of independent 4 MiB blocks without block or content
//! checksums (format 2: the frame's sha256 covers every byte). Those are read here: each
//! block is read into one buffer and decompressed straight into a slot, or read
//! straight into one when stored uncompressed. Any other frame (format 1 keeps lz4's
//! content checksum; frames of other writers) goes through lz4_flex's frame decoder,
//! which checks what the frame asks for, and is copied into the slots.

use super::ring::{Slots, SLOT};
use binctr_format::read_up_to;
use std::io::{self, BufRead, Read};

const MAGIC: u32 = 0x184D_2204;

/// The frame's tar into `ring`, then the report: 0, or 1 and why the lz4 data is broken.
/// Empty: it stopped because the reader had gone.
pub fn decode(payload: &mut impl Read, ring: &mut impl Slots) -> Vec<u8> {
    let mut head = [0u8; 6];
    let got = match read_up_to(payload, &mut head) {
        Ok(got) => got,
        Err(e) => return broken(&e),
    };
    let result = match block_size(&head[..got]) {
        Some(max) => blocks(payload, head[4], max, ring),
        None => framed(io::Read::chain(&head[..got], payload), ring),
    };
    match result {
        Ok(true) => vec![0],
        Ok(false) => Vec::new(),
        Err(e) => broken(&e),
    }
}

fn broken(e: &io::Error) -> Vec<u8> {
    let mut report = vec![1];
    report.extend_from_slice(e.to_string().as_bytes());
    report
}

fn bad(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

fn read_exact(from: &mut impl Read, buf: &mut [u8]) -> io::Result<()> {
    from.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => bad("the lz4 frame ends early"),
        _ => e,
    })
}

/// The largest block of a frame whose magic, FLG and BD bytes are `head`, when it is
/// one of binctr-pack's kind (version 1, independent blocks, no checksum, no
/// dictionary); None for any other (left to lz4_flex's decoder).
fn block_size(head: &[u8]) -> Option<usize> {
    let [m0, m1, m2, m3, flg, bd] = *head else {
        return None;
    };
    let plain = u32::from_le_bytes([m0, m1, m2, m3]) == MAGIC
        && flg & 0b1100_0000 == 0b0100_0000 // version 01
        && flg & 0b0010_0000 != 0 // independent blocks
        && flg & 0b0001_0111 == 0 // no block checksum, content checksum, reserved bit, dictionary
        && bd & 0b1000_1111 == 0;
    match (plain, (bd >> 4) & 0b111) {
        (true, code @ 4..=7) => Some(1 << (8 + 2 * code)),
        _ => None,
    }
}

/// The blocks of one of binctr-pack's frames (after its first 6 bytes, `flg` the
/// frame's FLG byte): each straight into a slot. Ok(false): the reader has gone.
fn blocks(payload: &mut impl Read, flg: u8, max: usize, ring: &mut impl Slots) -> io::Result<bool> {
    // The content size, if there, then the header checksum: the frame's sha256, checked
    // when it is all read, covers them.
    let mut rest = [0u8; 9];
    let rest_len = if flg & 0b0000_1000 != 0 { 9 } else { 1 };
    read_exact(payload, &mut rest[..rest_len])?;
    let max = max.min(SLOT);
    let mut compressed = vec![0u8; max];
    loop {
        let mut size = [0u8; 4];
        read_exact(payload, &mut size)?;
        let size = u32::from_le_bytes(size);
        if size == 0 {
            return Ok(true);
        }
        let len = (size & 0x7FFF_FFFF) as usize;
        if len > max {
            return Err(bad("a block is larger than its frame allows"));
        }
        if !ring.acquire() {
            return Ok(false);
        }
        let slot = &mut ring.slot()[..max];
        let out = if size & 0x8000_0000 != 0 {
            // Stored as is.
            read_exact(payload, &mut slot[..len])?;
            len
        } else {
            read_exact(payload, &mut compressed[..len])?;
            lz4_flex::block::decompress_into(&compressed[..len], slot)
                .map_err(|e| bad(&e.to_string()))?
        };
        if !ring.send(out) {
            return Ok(false);
        }
    }
}

/// Any other frame, through lz4_flex's decoder, copied into the slots.
fn framed(payload: impl Read, ring: &mut impl Slots) -> io::Result<bool> {
    let mut decoder = lz4_flex::frame::FrameDecoder::new(payload);
    let mut used = 0;
    loop {
        let block = match decoder.fill_buf() {
            Ok([]) => break,
            Ok(block) => block,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if used == 0 && !ring.acquire() {
            return Ok(false);
        }
        let n = block.len().min(SLOT - used);
        ring.slot()[used..used + n].copy_from_slice(&block[..n]);
        used += n;
        decoder.consume(n);
        if used == SLOT {
            if !ring.send(used) {
                return Ok(false);
            }
            used = 0;
        }
    }
    Ok(used == 0 || ring.send(used))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lz4_flex::frame::{BlockMode, BlockSize, FrameEncoder, FrameInfo};
    use std::io::Write;

    /// Collects what is sent; `gone_after`: the reader goes after that many slots.
    struct Collect {
        slot: Vec<u8>,
        out: Vec<u8>,
        sent: usize,
        gone_after: usize,
    }

    impl Collect {
        fn new() -> Collect {
            Collect {
                slot: vec![0; SLOT],
                out: Vec::new(),
                sent: 0,
                gone_after: usize::MAX,
            }
        }
    }

    impl Slots for Collect {
        fn acquire(&mut self) -> bool {
            self.sent < self.gone_after
        }
        fn slot(&mut self) -> &mut [u8] {
            &mut self.slot
        }
        fn send(&mut self, len: usize) -> bool {
            assert!(len <= SLOT && self.sent < self.gone_after);
            self.out.extend_from_slice(&self.slot[..len]);
            self.sent += 1;
            true
        }
    }

    fn frame(info: FrameInfo, data: &[u8]) -> Vec<u8> {
        let mut encoder = FrameEncoder::with_frame_info(info, Vec::new());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    /// 9 MiB: random bytes (stored blocks) then text (compressed), across 4 MiB blocks.
    fn sample() -> Vec<u8> {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut data: Vec<u8> = (0..(5 << 20))
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let mut n = 0;
        while data.len() < 9 << 20 {
            data.extend_from_slice(format!("line {n} of a text\n").as_bytes());
            n += 1;
        }
        data
    }

    fn plain() -> FrameInfo {
        FrameInfo::new()
            .block_mode(BlockMode::Independent)
            .block_checksums(false)
            .content_checksum(false)
    }

    #[test]
    fn every_kind_of_frame_decodes_to_its_data() {
        let data = sample();
        for info in [
            plain().block_size(BlockSize::Max4MB),
            plain().block_size(BlockSize::Max64KB),
            plain()
                .block_size(BlockSize::Max4MB)
                .content_size(Some(data.len() as u64)),
            plain().block_size(BlockSize::Max4MB).content_checksum(true),
            plain()
                .block_size(BlockSize::Max256KB)
                .block_mode(BlockMode::Linked),
            plain().block_size(BlockSize::Max1MB).block_checksums(true),
        ] {
            let mut out = Collect::new();
            let report = decode(&mut &frame(info.clone(), &data)[..], &mut out);
            assert_eq!(
                report,
                vec![0],
                "{info:?}: {}",
                String::from_utf8_lossy(&report)
            );
            assert!(out.out == data, "{info:?}: the data differs");
        }
    }

    #[test]
    fn a_broken_frame_is_reported_broken_never_a_panic() {
        let data = sample();
        let good = frame(plain().block_size(BlockSize::Max4MB), &data);
        let checked = frame(plain().content_checksum(true), &data);
        let mut broken = Vec::new();
        // Cut anywhere: in the header, a block's size, a block, before the end mark.
        for at in [
            5,
            6,
            8,
            9,
            12,
            1000,
            good.len() / 2,
            good.len() - 4,
            good.len() - 1,
        ] {
            broken.push(good[..at].to_vec());
        }
        broken.push(checked[..checked.len() - 1].to_vec());
        // A block larger than the frame allows (raw and compressed).
        for size in [(4u32 << 20) + 1, 0x8000_0000 | ((4 << 20) + 1), 0x7FFF_FFFF] {
            let mut bad = good[..7].to_vec();
            bad.extend_from_slice(&size.to_le_bytes());
            bad.extend_from_slice(&[0; 64]);
            broken.push(bad);
        }
        // A compressed block that is not lz4: a match before the start.
        let mut bad = good[..7].to_vec();
        bad.extend_from_slice(&4u32.to_le_bytes());
        bad.extend_from_slice(&[0x0f, 0xff, 0xff, 0x00, 0, 0, 0, 0]);
        broken.push(bad);
        for (n, bytes) in broken.iter().enumerate() {
            let mut out = Collect::new();
            let report = decode(&mut &bytes[..], &mut out);
            assert_eq!(report.first(), Some(&1), "case {n}: {report:?}");
        }
    }

    #[test]
    fn it_stops_when_the_reader_goes() {
        let data = sample();
        for info in [
            plain().block_size(BlockSize::Max4MB),
            plain().content_checksum(true),
        ] {
            let mut out = Collect::new();
            out.gone_after = 1;
            let report = decode(&mut &frame(info, &data)[..], &mut out);
            assert!(report.is_empty() && out.sent == 1, "{report:?}");
        }
    }

    fn head(info: FrameInfo) -> Vec<u8> {
        let mut encoder = FrameEncoder::with_frame_info(info, Vec::new());
        encoder.write_all(b"some tar").unwrap();
        encoder.finish().unwrap()[..6].to_vec()
    }

    #[test]
    fn only_frames_of_binctr_packs_kind_are_read_block_by_block() {
        let plain = || {
            FrameInfo::new()
                .block_mode(BlockMode::Independent)
                .block_checksums(false)
                .content_checksum(false)
        };
        // What binctr-pack writes for format 2 (packer/src/payload.rs), and other sizes.
        assert_eq!(
            block_size(&head(plain().block_size(BlockSize::Max4MB))),
            Some(SLOT)
        );
        assert_eq!(
            block_size(&head(plain().block_size(BlockSize::Max64KB))),
            Some(64 << 10)
        );
        assert_eq!(
            block_size(&head(plain().block_size(BlockSize::Max1MB))),
            Some(1 << 20)
        );
        assert_eq!(
            block_size(&head(plain().content_size(Some(8)))),
            Some(64 << 10)
        );
        // Anything lz4_flex's decoder must check or link: format 1's content checksum,
        // block checksums, linked blocks; not a frame at all.
        assert_eq!(block_size(&head(plain().content_checksum(true))), None);
        assert_eq!(block_size(&head(plain().block_checksums(true))), None);
        assert_eq!(
            block_size(&head(plain().block_mode(BlockMode::Linked))),
            None
        );
        assert_eq!(block_size(b"\x04\x22\x4d\x18"), None);
        assert_eq!(block_size(b"not lz4 at all"), None);
    }
}
