//! The environment as `KEY=VALUE` entries, merged in order: the image's, then each
//! override (pack-time `--env`, run-time `-e`) replacing its key in place or appended.
//! The entries are bytes, so the stub keeps what the host gives it (`OsString`) and the
//! packer its `String`s.
//!
//! A key is what comes before the first `=` of an entry, or the whole entry when it has
//! none: `X=1=2` sets `X` to `1=2`.
//!
//! Each entry's key is indexed (a BTreeMap: no hashing code in the stub, which stays one
//! page smaller), so a merge costs O(n log n): an image with tens of thousands of
//! variables merges in no time.
use std::collections::BTreeMap;

/// The key of an entry: what comes before the first `=`, or the whole entry.
pub fn key_of(entry: &[u8]) -> &[u8] {
    match entry.iter().position(|&b| b == b'=') {
        Some(at) => &entry[..at],
        None => entry,
    }
}

/// An ordered list of `KEY=VALUE` entries in which setting a key again replaces its
/// entry where it stands.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Env {
    entries: Vec<Vec<u8>>,
    /// Each key's entry (the first of its entries, if the list came with duplicates),
    /// by a 64-bit hash of the key: no copy of the key, one allocation less per entry
    /// (the stub's allocator, musl's, is slow; 30k entries are a start's budget).
    index: BTreeMap<u64, usize>,
    /// Entries whose key's hash another key had already (practically never).
    collided: Vec<usize>,
}

impl Env {
    pub fn new() -> Self {
        Env::default()
    }

    /// Takes a list as it is, duplicate keys included (an image may have them): a later
    /// [`Self::set`] or [`Self::push_entry`] replaces the first entry of its key, as if
    /// the list had been searched from the start.
    pub fn from_entries(entries: Vec<Vec<u8>>) -> Self {
        let mut env = Env {
            entries,
            ..Env::default()
        };
        for at in 0..env.entries.len() {
            if env.find(key_of(&env.entries[at])).is_none() {
                env.remember(at);
            }
        }
        env
    }

    /// Where the entry of `key` is.
    fn find(&self, key: &[u8]) -> Option<usize> {
        let is_key = |&at: &usize| key_of(&self.entries[at]) == key;
        match self.index.get(&hash(key)) {
            Some(at) if is_key(at) => Some(*at),
            _ => self.collided.iter().copied().find(is_key),
        }
    }

    fn remember(&mut self, at: usize) {
        let h = hash(key_of(&self.entries[at]));
        match self.index.entry(h) {
            std::collections::btree_map::Entry::Occupied(_) => self.collided.push(at),
            std::collections::btree_map::Entry::Vacant(slot) => {
                slot.insert(at);
            }
        }
    }

    /// Sets `key` to `value`: the entry `key=value`, put as [`Self::push_entry`] does.
    pub fn set(&mut self, key: &[u8], value: &[u8]) {
        let mut entry = Vec::with_capacity(key.len() + 1 + value.len());
        entry.extend_from_slice(key);
        entry.push(b'=');
        entry.extend_from_slice(value);
        self.put(entry);
    }

    /// `KEY=VALUE` (or `KEY`): replaces the entry of KEY where it stands, or is appended.
    pub fn push_entry(&mut self, entry: &[u8]) {
        self.put(entry.to_vec());
    }

    fn put(&mut self, entry: Vec<u8>) {
        match self.find(key_of(&entry)) {
            Some(at) => self.entries[at] = entry,
            None => {
                self.entries.push(entry);
                self.remember(self.entries.len() - 1);
            }
        }
    }

    pub fn has(&self, key: &[u8]) -> bool {
        self.find(key).is_some()
    }

    /// The value of `key`: what follows the first `=` of its entry, empty for an entry
    /// without one.
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        let entry = &self.entries[self.find(key)?];
        Some(entry.get(key.len() + 1..).unwrap_or_default())
    }

    pub fn entries(&self) -> &[Vec<u8>] {
        &self.entries
    }

    pub fn into_entries(self) -> Vec<Vec<u8>> {
        self.entries
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// FNV-1a, 64 bits.
fn hash(key: &[u8]) -> u64 {
    key.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Each entry as [`Env::push_entry`] puts it.
impl<E: AsRef<[u8]>> Extend<E> for Env {
    fn extend<I: IntoIterator<Item = E>>(&mut self, entries: I) {
        for entry in entries {
            self.push_entry(entry.as_ref());
        }
    }
}

/// Each entry as [`Env::push_entry`] puts it, so duplicate keys collapse into the first
/// entry's place; [`Env::from_entries`] keeps a list as it is.
impl<E: AsRef<[u8]>> FromIterator<E> for Env {
    fn from_iter<I: IntoIterator<Item = E>>(entries: I) -> Self {
        let mut env = Env::new();
        env.extend(entries);
        env
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(env: &Env) -> Vec<&str> {
        env.entries()
            .iter()
            .map(|e| std::str::from_utf8(e).unwrap())
            .collect()
    }

    #[test]
    fn keeps_order_and_replaces_in_place() {
        let mut env = Env::new();
        env.set(b"PATH", b"/a");
        env.set(b"HOME", b"/root");
        env.push_entry(b"PATH=/b");
        env.push_entry(b"X=1=2");
        assert_eq!(list(&env), ["PATH=/b", "HOME=/root", "X=1=2"]);
        assert_eq!(env.len(), 3);
        assert!(!env.is_empty());
        assert_eq!(env.get(b"X"), Some(&b"1=2"[..]));
        assert_eq!(env.get(b"PATH"), Some(&b"/b"[..]));
        assert_eq!(env.get(b"X=1"), None);
        assert!(env.has(b"HOME") && !env.has(b"HOM") && !env.has(b"X=1"));
        assert_eq!(
            env.into_entries(),
            [
                b"PATH=/b".to_vec(),
                b"HOME=/root".to_vec(),
                b"X=1=2".to_vec()
            ]
        );
    }

    #[test]
    fn keys_stop_at_the_first_equals_sign() {
        assert_eq!(key_of(b"X=1=2"), b"X");
        assert_eq!(key_of(b"BARE"), b"BARE");
        assert_eq!(key_of(b"=x"), b"");
        assert_eq!(key_of(b""), b"");
        let mut env: Env = ["BARE", "A=1"].into_iter().collect();
        assert!(env.has(b"BARE"));
        assert_eq!(env.get(b"BARE"), Some(&b""[..]));
        env.push_entry(b"BARE=now");
        env.push_entry(b"A");
        assert_eq!(list(&env), ["BARE=now", "A"]);
    }

    #[test]
    fn bytes_need_not_be_utf8() {
        let mut env = Env::new();
        env.set(b"K", &[0xff, 0xfe]);
        env.push_entry(&[0xc0, b'=', 1]);
        assert_eq!(env.get(b"K"), Some(&[0xff, 0xfe][..]));
        assert_eq!(env.get(&[0xc0]), Some(&[1][..]));
    }

    #[test]
    fn a_list_is_taken_as_it_is_and_its_first_entry_replaced() {
        let mut env = Env::from_entries(vec![b"A=1".to_vec(), b"B=2".to_vec(), b"A=3".to_vec()]);
        assert_eq!(env.get(b"A"), Some(&b"1"[..]));
        env.extend(["A=4", "C=5"]);
        assert_eq!(list(&env), ["A=4", "B=2", "A=3", "C=5"]);
        // Collected, the duplicates collapse into the first place.
        let env: Env = ["A=1", "B=2", "A=3"].into_iter().collect();
        assert_eq!(list(&env), ["A=3", "B=2"]);
    }

    #[test]
    fn a_key_whose_hash_collides_is_still_found() {
        // As if B's hash were A's: B is then only in the collided list.
        let mut env = Env::from_entries(vec![b"A=1".to_vec()]);
        env.entries.push(b"B=2".to_vec());
        env.collided.push(1);
        assert_eq!(env.get(b"B"), Some(&b"2"[..]));
        env.set(b"B", b"3");
        assert_eq!(list(&env), ["A=1", "B=3"]);
        assert!(!env.has(b"C"));
    }

    #[test]
    fn large_merges_are_linear() {
        // 30_000 overrides onto 30_000 others, half of them replacing: quadratic, this
        // took seconds; indexed, it takes milliseconds.
        let image: Vec<Vec<u8>> = (0..30_000)
            .map(|i| format!("IMAGE_{i}=x").into_bytes())
            .collect();
        let mut env = Env::from_entries(image);
        env.extend((0..30_000).map(|i| {
            let key = if i % 2 == 0 { "IMAGE" } else { "FLAG" };
            format!("{key}_{i}=y")
        }));
        assert_eq!(env.len(), 45_000);
        assert_eq!(env.get(b"IMAGE_0"), Some(&b"y"[..]));
        assert_eq!(env.get(b"IMAGE_1"), Some(&b"x"[..]));
        assert_eq!(env.entries()[30_000], b"FLAG_1=y");
    }
}
