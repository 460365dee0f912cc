//! How the decompressing process hands the tar to the extracting one (extract.rs): slots
//! of memory both share, a pipe each way to say which slot is full (and how much of it)
//! and which is free again. Each byte of the tar is copied once, decompressed into a
//! slot; the extraction writes files straight from the slot. Through a pipe it was
//! copied twice more (into the pipe, out of it), which on a first run cost more CPU than
//! the sha256 of the frame.
//!
//! The slots are filled and read in turn (0, 1, 2, 0, ...): a "full" message is the
//! length of the next slot's data (4 bytes, little-endian), a "free" message one byte
//! that gives the writer back the oldest slot it handed over. The writer starts with
//! every slot free; the reader holds one slot at a time. The pipes never hold more than
//! a few bytes, so neither side blocks on them but to wait for the other. A side that
//! ends closes its pipes: the other sees the end (EOF, or EPIPE: SIGPIPE is ignored).

use crate::sys::SharedSlots;
use std::fs::File;
use std::io::{self, BufRead, Read, Write};

/// lz4's largest block (4 MiB, what binctr-pack writes): one block decompresses
/// straight into one slot.
pub const SLOT: usize = 4 << 20;
/// One slot being written to files, one being filled, one ready.
const SLOTS: usize = 3;

/// Both ends, made before the fork; each process keeps its own ([`Ring::writer`],
/// [`Ring::reader`]) and drops the other's.
pub struct Ring {
    mem: SharedSlots,
    full: (File, File),
    free: (File, File),
}

impl Ring {
    pub fn new() -> io::Result<Ring> {
        let pipe = || -> io::Result<(File, File)> {
            let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
            Ok((read.into(), write.into()))
        };
        Ok(Ring {
            mem: SharedSlots::new(SLOT, SLOTS)?,
            full: pipe()?,
            free: pipe()?,
        })
    }

    /// The decompressing side.
    pub fn writer(self) -> Writer {
        Writer {
            credits: self.mem.count(),
            mem: self.mem,
            full: self.full.1,
            free: self.free.0,
            next: 0,
        }
    }

    /// The extracting side.
    pub fn reader(self) -> Reader {
        Reader {
            mem: self.mem,
            full: self.full.0,
            free: self.free.1,
            current: None,
            next: 0,
            pos: 0,
            len: 0,
        }
    }
}

pub struct Writer {
    mem: SharedSlots,
    full: File,
    free: File,
    /// Free slots not yet filled.
    credits: usize,
    next: usize,
}

/// Where the decompressed tar goes: the ring's writing end ([`Writer`]), or a buffer in
/// decode.rs's tests.
pub trait Slots {
    /// Waits until the next slot is free; false when the reader has gone.
    fn acquire(&mut self) -> bool;
    /// The slot to fill (after `acquire`), [`SLOT`] bytes.
    fn slot(&mut self) -> &mut [u8];
    /// Hands the slot over with its first `len` bytes (none: nothing to hand over);
    /// false when the reader has gone.
    fn send(&mut self, len: usize) -> bool;
}

impl Slots for Writer {
    fn acquire(&mut self) -> bool {
        while self.credits == 0 {
            let mut token = [0u8; 1];
            match self.free.read(&mut token) {
                Ok(1) => self.credits += 1,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                _ => return false,
            }
        }
        true
    }

    fn slot(&mut self) -> &mut [u8] {
        self.mem.slot_mut(self.next)
    }

    fn send(&mut self, len: usize) -> bool {
        if len == 0 {
            return true;
        }
        // Only a slot `acquire` gave, and no more than it holds.
        debug_assert!(self.credits > 0 && len <= self.mem.len());
        let len = len.min(self.mem.len()) as u32;
        if self.full.write_all(&len.to_le_bytes()).is_err() {
            return false;
        }
        self.credits -= 1;
        self.next = (self.next + 1) % self.mem.count();
        true
    }
}

/// The tar, read from the slots in turn; at its end when the writer has closed its end.
pub struct Reader {
    mem: SharedSlots,
    full: File,
    free: File,
    /// The slot being read, `len` bytes of it; `pos` of them consumed.
    current: Option<usize>,
    next: usize,
    pos: usize,
    len: usize,
}

impl Reader {
    /// The next slot's length; None at the end (a cut message is the end too: the
    /// writer's report says why).
    fn next_message(&mut self) -> io::Result<Option<usize>> {
        let mut message = [0u8; 4];
        let mut got = 0;
        while got < message.len() {
            match self.full.read(&mut message[got..]) {
                Ok(0) => return Ok(None),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        match u32::from_le_bytes(message) as usize {
            len @ 1.. if len <= self.mem.len() => Ok(Some(len)),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the decompressing process sent a bad length",
            )),
        }
    }
}

impl BufRead for Reader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.pos == self.len {
            if self.current.take().is_some() {
                // A writer that has gone takes no more; its end shows below.
                let _ = self.free.write_all(&[0]);
            }
            let Some(len) = self.next_message()? else {
                return Ok(&[]);
            };
            self.current = Some(self.next);
            self.next = (self.next + 1) % self.mem.count();
            self.pos = 0;
            self.len = len;
        }
        match self.current {
            Some(slot) => Ok(&self.mem.slot(slot)[self.pos..self.len]),
            None => Ok(&[]),
        }
    }

    fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.len);
    }
}

impl Read for Reader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let data = self.fill_buf()?;
        let n = data.len().min(buf.len());
        buf[..n].copy_from_slice(&data[..n]);
        self.consume(n);
        Ok(n)
    }
}
