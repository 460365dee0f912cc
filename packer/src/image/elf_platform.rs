//! Which CPU a root filesystem is for, when nothing says it (a flat tar, a directory):
//! the ELF machine of its `/bin/sh`, followed through the image's own symlinks
//! (`/bin -> usr/bin`, `sh -> busybox`), else the machine most of its executables are
//! for. The readers report every entry as it streams past ([`Survey::file`], `symlink`,
//! `hard_link`): only ELF files and links are kept, as paths, so the look costs no
//! second pass over the image.
use super::types::Platform;
use std::collections::{BTreeMap, HashMap};

/// Bytes of a file's start that [`Survey::file`] needs: the ELF header up to e_machine.
pub const HEAD_LEN: usize = 20;

/// How many symlinks a path may go through (Linux's MAXSYMLINKS).
const MAX_HOPS: usize = 40;

/// What the look found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Detected {
    pub platform: Platform,
    /// How it was found, for messages: "/bin/sh", "12 of 12 executables".
    pub from: String,
}

#[derive(Default)]
pub struct Survey {
    /// ELF regular files: path (no leading `/` or `./`) -> e_machine.
    elves: HashMap<Vec<u8>, u16>,
    symlinks: HashMap<Vec<u8>, Vec<u8>>,
    hard_links: HashMap<Vec<u8>, Vec<u8>>,
    /// Executable ELF files per e_machine.
    executables: BTreeMap<u16, u64>,
}

impl Survey {
    /// A regular file: its mode and its first bytes (at least [`HEAD_LEN`] when it has
    /// them).
    pub fn file(&mut self, path: &[u8], mode: u32, head: &[u8]) {
        let Some(machine) = elf_machine(head) else {
            return;
        };
        if mode & 0o111 != 0 {
            *self.executables.entry(machine).or_default() += 1;
        }
        self.elves.insert(normalize(path), machine);
    }

    pub fn symlink(&mut self, path: &[u8], target: &[u8]) {
        self.symlinks.insert(normalize(path), target.to_vec());
    }

    /// A hard link to `target`, a path in the image.
    pub fn hard_link(&mut self, path: &[u8], target: &[u8]) {
        self.hard_links.insert(normalize(path), normalize(target));
    }

    pub fn finish(&self) -> Option<Detected> {
        if let Some(machine) = self.machine_of(b"bin/sh") {
            return Some(Detected {
                platform: platform_of(machine),
                from: "/bin/sh".into(),
            });
        }
        let total: u64 = self.executables.values().sum();
        let (&machine, &count) = self.executables.iter().max_by_key(|(_, &n)| n)?;
        Some(Detected {
            platform: platform_of(machine),
            from: format!("{count} of {total} executables"),
        })
    }

    /// The machine of the ELF file `path` leads to, links followed.
    fn machine_of(&self, path: &[u8]) -> Option<u16> {
        let mut path = self.resolve(path)?;
        for _ in 0..MAX_HOPS {
            match self.hard_links.get(&path) {
                Some(target) => path = self.resolve(target)?,
                None => return self.elves.get(&path).copied(),
            }
        }
        None
    }

    /// `path` with every symlink on the way replaced, as the kernel would inside the
    /// image's root: `..` stops at the root, an absolute target starts from it.
    fn resolve(&self, path: &[u8]) -> Option<Vec<u8>> {
        let mut todo: Vec<Vec<u8>> = components(path).rev().collect();
        let mut done: Vec<Vec<u8>> = Vec::new();
        let mut hops = 0;
        while let Some(name) = todo.pop() {
            if name == b".." {
                done.pop();
                continue;
            }
            done.push(name);
            if let Some(target) = self.symlinks.get(&done.join(&b'/')) {
                hops += 1;
                if hops > MAX_HOPS {
                    return None;
                }
                done.pop();
                if target.starts_with(b"/") {
                    done.clear();
                }
                todo.extend(components(target).rev());
            }
        }
        Some(done.join(&b'/'))
    }
}

/// The path's names, without empty ones and `.`.
fn components(path: &[u8]) -> impl DoubleEndedIterator<Item = Vec<u8>> + '_ {
    path.split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .map(<[u8]>::to_vec)
}

/// `./bin/sh`, `/bin/sh`, `bin/sh/`: `bin/sh`.
fn normalize(path: &[u8]) -> Vec<u8> {
    components(path).collect::<Vec<_>>().join(&b'/')
}

/// e_machine of a 64- or 32-bit ELF header of either byte order.
fn elf_machine(head: &[u8]) -> Option<u16> {
    if head.len() < HEAD_LEN || !head.starts_with(b"\x7fELF") {
        return None;
    }
    let bytes = [head[18], head[19]];
    match head[5] {
        1 => Some(u16::from_le_bytes(bytes)),
        2 => Some(u16::from_be_bytes(bytes)),
        _ => None,
    }
}

/// The OCI platform of an ELF machine (image-spec's GOARCH names).
fn platform_of(machine: u16) -> Platform {
    let architecture = match machine {
        62 => "amd64".to_string(),
        183 => "arm64".to_string(),
        3 => "386".to_string(),
        40 => "arm".to_string(),
        243 => "riscv64".to_string(),
        22 => "s390x".to_string(),
        21 => "ppc64le".to_string(),
        other => format!("ELF machine {other}"),
    };
    Platform {
        os: "linux".into(),
        architecture,
        variant: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn elf(machine: u16) -> Vec<u8> {
        let mut head = b"\x7fELF\x02\x01\x01".to_vec();
        head.resize(18, 0);
        head.extend_from_slice(&machine.to_le_bytes());
        head.extend_from_slice(&[1, 0, 0, 0]);
        head
    }

    fn arch(survey: &Survey) -> Option<(String, String)> {
        survey.finish().map(|d| (d.platform.architecture, d.from))
    }

    #[test]
    fn bin_sh_is_followed_through_the_images_own_links() {
        // Debian: /bin -> usr/bin, sh -> dash; a busybox image: sh -> /bin/busybox.
        let mut s = Survey::default();
        s.symlink(b"./bin", b"usr/bin");
        s.symlink(b"usr/bin/sh", b"dash");
        s.file(b"./usr/bin/dash", 0o755, &elf(183));
        // More x86_64 programs elsewhere do not outvote /bin/sh.
        for i in 0..5 {
            s.file(format!("opt/x/{i}").as_bytes(), 0o755, &elf(62));
        }
        assert_eq!(arch(&s), Some(("arm64".into(), "/bin/sh".into())));

        let mut s = Survey::default();
        s.file(b"bin/busybox", 0o755, &elf(62));
        s.symlink(b"bin/sh", b"/bin/busybox");
        assert_eq!(arch(&s).unwrap().0, "amd64");

        // A hard link, and `..` that would climb above the root.
        let mut s = Survey::default();
        s.file(b"bin/busybox", 0o755, &elf(183));
        s.hard_link(b"sbin/sh", b"bin/busybox");
        s.symlink(b"bin/sh", b"../../../sbin/sh");
        assert_eq!(arch(&s).unwrap().0, "arm64");
    }

    #[test]
    fn without_bin_sh_most_executables_decide() {
        let mut s = Survey::default();
        s.file(b"app", 0o755, &elf(183));
        s.file(b"lib/a.so", 0o644, &elf(62));
        s.file(b"lib/b.so", 0o644, &elf(62));
        s.file(b"tool", 0o755, &elf(183));
        s.file(b"other", 0o755, &elf(62));
        s.file(b"bin/sh", 0o755, b"#!/not/an/elf\n................");
        assert_eq!(
            arch(&s),
            Some(("arm64".into(), "2 of 3 executables".into()))
        );
    }

    #[test]
    fn loops_text_and_nothing_give_no_answer() {
        let mut s = Survey::default();
        s.symlink(b"bin/sh", b"sh2");
        s.symlink(b"bin/sh2", b"sh");
        s.file(b"etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\n");
        s.file(b"short", 0o755, b"\x7fELF");
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn big_endian_and_unknown_machines_are_named() {
        let mut head = elf(0);
        head[5] = 2;
        head[18..20].copy_from_slice(&22u16.to_be_bytes());
        let mut s = Survey::default();
        s.file(b"bin/sh", 0o755, &head);
        assert_eq!(arch(&s).unwrap().0, "s390x");
        let mut s = Survey::default();
        s.file(b"bin/sh", 0o755, &elf(9999));
        assert_eq!(arch(&s).unwrap().0, "ELF machine 9999");
    }
}
