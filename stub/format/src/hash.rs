//! sha256: the digest type the footer and image formats use, and a reader that hashes
//! what passes through it, so a payload or a blob is checked while it streams.
use sha2::{Digest, Sha256};
use std::fmt;
use std::io::{self, Read};

/// A sha256 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Sha256Digest(pub [u8; 32]);

impl Sha256Digest {
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    /// 64 lower-case hex digits, as [`Sha256Digest::hex`] writes them.
    pub fn from_hex(hex: &str) -> Option<Self> {
        let hex = hex.as_bytes();
        if hex.len() != 64 {
            return None;
        }
        let digit = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        let mut out = [0u8; 32];
        for (i, pair) in hex.chunks(2).enumerate() {
            out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
        }
        Some(Self(out))
    }

    /// Lower-case hex, 64 characters: the cache directory name.
    pub fn hex(&self) -> String {
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
            s.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
        }
        s
    }
}

impl fmt::Display for Sha256Digest {
    /// `sha256:<64 hex>`, as image tools write digests.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Hashes and counts every byte read through it.
///
/// Only what [`Read::read`] returns is hashed: bytes read through [`Self::get_mut`]
/// bypass the hash.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    len: u64,
}

impl<R> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            len: 0,
        }
    }

    /// How many bytes were read so far.
    pub fn bytes_read(&self) -> u64 {
        self.len
    }

    /// The sha256 of what was read so far; reading may go on.
    pub fn digest(&self) -> Sha256Digest {
        Sha256Digest(self.hasher.clone().finalize().into())
    }

    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    pub fn into_inner(self) -> R {
        self.inner
    }

    /// The sha256 of everything read, and how many bytes that was.
    pub fn finish(self) -> (Sha256Digest, u64) {
        (Sha256Digest(self.hasher.finalize().into()), self.len)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_formats_as_image_tools_do() {
        let d = Sha256Digest::of(b"");
        assert_eq!(
            d.to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(format!("{d:?}"), d.to_string());
        assert_eq!(d.hex().len(), 64);
        assert_eq!(Sha256Digest::from_hex(&d.hex()), Some(d));
        assert_eq!(Sha256Digest::from_hex(&d.hex().to_uppercase()), None);
        assert_eq!(Sha256Digest::from_hex(&d.hex()[1..]), None);
        assert_eq!(Sha256Digest::from_hex(&"g".repeat(64)), None);
    }

    #[test]
    fn hashing_reader_hashes_and_counts_what_is_read() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
        let mut r = HashingReader::new(&data[..]);
        let mut head = [0u8; 1000];
        r.read_exact(&mut head).unwrap();
        assert_eq!(r.bytes_read(), 1000);
        assert_eq!(r.digest(), Sha256Digest::of(&data[..1000]));
        // digest() does not consume: reading goes on.
        io::copy(&mut r, &mut io::sink()).unwrap();
        assert_eq!(r.digest(), Sha256Digest::of(&data));
        assert_eq!(r.finish(), (Sha256Digest::of(&data), data.len() as u64));
    }

    #[test]
    fn hashing_reader_skips_what_is_read_around_it() {
        let mut r = HashingReader::new(&b"abcdef"[..]);
        let mut two = [0u8; 2];
        r.get_mut().read_exact(&mut two).unwrap();
        assert_eq!(r.get_ref(), b"cdef");
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).unwrap();
        assert_eq!(r.finish(), (Sha256Digest::of(b"cdef"), 4));
        let r = HashingReader::new(&b"x"[..]);
        assert_eq!(r.into_inner(), b"x");
    }

    #[test]
    fn hashing_reader_passes_errors_on() {
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("boom"))
            }
        }
        let mut r = HashingReader::new(Failing);
        let err = r.read(&mut [0u8; 8]).unwrap_err();
        assert_eq!(err.to_string(), "boom");
        assert_eq!(r.finish(), (Sha256Digest::of(b""), 0));
    }
}
