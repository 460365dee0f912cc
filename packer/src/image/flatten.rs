//! Flattens an image's layers into the one tar of the payload, in two passes over the
//! layers, holding one small record per path and never any file data:
//!
//! 1. Plan: read every layer's headers, bottom to top, applying each to a tree of paths
//!    as a container runtime applies layers: a later entry replaces an earlier one (a
//!    directory over a directory keeps its children, anything else drops them),
//!    `.wh.NAME` deletes NAME from the layers below, `.wh..wh..opq` empties its directory
//!    of what the layers below put there. A hard link is resolved, when it is applied, to
//!    the entry that holds its data. What is left in the tree are the winning entries.
//! 2. Write: read the layers again, bottom to top, and write only the winning entries, in
//!    layer order and, within a layer, in tar order. A hard link's data entry always comes
//!    before the link (same layer earlier, or a lower layer), so links stay links. When
//!    the data entry itself lost (its path was deleted or replaced above), its data is
//!    written, where it stands, under the first of its links' paths (sorted by name), and
//!    the other links point there. A hard link to nothing is dropped.
//!
//! Entries are rewritten with their own header (mode, owner, times, device numbers) and
//! PAX records (xattrs), under a normalized path (`bin/sh`, directories `bin/`): the same
//! layers always give the same bytes. Whiteout files never reach the output.
use super::error::ImageError;
use super::types::Stats;
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use tar::{Builder, Entry, EntryType};

/// The layers of an image, bottom first.
pub trait Layers {
    fn count(&self) -> usize;
    /// The error for a layer whose tar cannot be read.
    fn damaged(&self, index: usize, why: String) -> ImageError;
    /// Runs `f` on layer `index` as an uncompressed tar stream, and checks the layer's
    /// digests once `f` is done.
    fn read(
        &self,
        index: usize,
        f: &mut dyn FnMut(&mut dyn Read) -> Result<(), ImageError>,
    ) -> Result<(), ImageError>;
}

const OPAQUE: &[u8] = b".wh..wh..opq";
const WHITEOUT: &[u8] = b".wh.";

/// An entry of a layer: its layer (bottom = 0) and its position in the layer's tar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct EntryId {
    layer: u32,
    index: u32,
}

/// The entry that currently provides a path.
#[derive(Debug, Clone, Copy)]
struct Node {
    id: EntryId,
    dir: bool,
    /// For a hard link: the entry that holds its data.
    data: Option<EntryId>,
}

/// What pass 2 does with a winning entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Action {
    /// Write the entry under this path.
    Write(Vec<u8>),
    /// Write a hard link at `path` to `target`, written before.
    Link { path: Vec<u8>, target: Vec<u8> },
}

pub fn flatten<W: Write>(layers: &dyn Layers, out: &mut W) -> Result<Stats, ImageError> {
    let actions = plan(layers)?;
    write(layers, &actions, out)
}

/// Pass 1: which entry of which layer ends up at which path.
fn plan(layers: &dyn Layers) -> Result<HashMap<EntryId, Action>, ImageError> {
    let mut tree: BTreeMap<Vec<u8>, Node> = BTreeMap::new();
    for layer in 0..layers.count() {
        let damaged = |e: io::Error| layers.damaged(layer, crate::util::os_error(&e));
        layers.read(layer, &mut |tar| {
            let mut archive = tar::Archive::new(tar);
            for (index, entry) in archive.entries().map_err(damaged)?.enumerate() {
                let entry = entry.map_err(damaged)?;
                let id = EntryId {
                    layer: layer as u32,
                    index: index as u32,
                };
                apply(&mut tree, id, &entry).map_err(|why| layers.damaged(layer, why))?;
            }
            Ok(())
        })?;
    }
    let mut actions = HashMap::new();
    // Links grouped by the entry holding their data, in path order.
    let mut groups: BTreeMap<EntryId, Vec<(Vec<u8>, EntryId)>> = BTreeMap::new();
    for (path, node) in &tree {
        match node.data {
            None => {
                actions.insert(node.id, Action::Write(path.clone()));
            }
            Some(data) => groups
                .entry(data)
                .or_default()
                .push((path.clone(), node.id)),
        }
    }
    for (data, links) in groups {
        let target = match actions.get(&data) {
            Some(Action::Write(path)) => path.clone(),
            // The data's own path went: its first link takes the data.
            _ => {
                let first = links[0].0.clone();
                actions.insert(data, Action::Write(first.clone()));
                first
            }
        };
        for (path, id) in links {
            if path != target {
                actions.insert(
                    id,
                    Action::Link {
                        path,
                        target: target.clone(),
                    },
                );
            }
        }
    }
    Ok(actions)
}

/// Applies one entry of a layer to the tree. The error is why the layer is refused.
fn apply<R: Read>(
    tree: &mut BTreeMap<Vec<u8>, Node>,
    id: EntryId,
    entry: &Entry<R>,
) -> Result<(), String> {
    let kind = entry.header().entry_type();
    if kind.is_pax_global_extensions() || kind == EntryType::new(b'V') {
        return Ok(());
    }
    let raw = entry.path_bytes();
    let path = normalize(&raw).ok_or_else(|| unsafe_path(&raw))?;
    if path.is_empty() {
        return Ok(()); // the root directory itself: the stub makes it
    }
    let (parent, name) = match path.iter().rposition(|&b| b == b'/') {
        Some(at) => (&path[..at], &path[at + 1..]),
        None => (&path[..0], &path[..]),
    };
    if name == OPAQUE {
        remove_below(tree, parent, Some(id.layer));
        return Ok(());
    }
    if name.starts_with(b".wh..wh.") {
        return Ok(()); // aufs bookkeeping (.wh..wh.plnk, ...), never content
    }
    if let Some(hidden) = name.strip_prefix(WHITEOUT) {
        let target = join(parent, hidden);
        if tree.get(&target).is_some_and(|n| n.id.layer < id.layer) {
            tree.remove(&target);
        }
        remove_below(tree, &target, Some(id.layer));
        return Ok(());
    }
    // A file, symlink or link below a path that is no longer a directory replaces it.
    for (at, _) in path.iter().enumerate().filter(|(_, &b)| b == b'/') {
        if tree.get(&path[..at]).is_some_and(|n| !n.dir) {
            tree.remove(&path[..at]);
        }
    }
    let dir = kind.is_dir();
    if !dir {
        remove_below(tree, &path, None);
    }
    let data = if kind.is_hard_link() {
        let target = entry
            .link_name_bytes()
            .and_then(|t| normalize(&t))
            .and_then(|t| tree.get(&t).copied());
        match target {
            Some(node) if !node.dir => Some(node.data.unwrap_or(node.id)),
            _ => {
                // A link to nothing (or to a directory) cannot be made: dropped.
                tree.remove(&path);
                return Ok(());
            }
        }
    } else {
        None
    };
    tree.insert(path, Node { id, dir, data });
    Ok(())
}

fn unsafe_path(raw: &[u8]) -> String {
    format!(
        "entry {:?} leaves the root directory",
        String::from_utf8_lossy(raw)
    )
}

/// A relative path without `.` or empty components; `None` when it has `..`.
fn normalize(raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(raw.len());
    for part in raw.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return None,
            part => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(part);
            }
        }
    }
    Some(out)
}

fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    let mut path = parent.to_vec();
    if !path.is_empty() {
        path.push(b'/');
    }
    path.extend_from_slice(name);
    path
}

/// Removes what is below `dir` (everything for the root): all of it, or with
/// `Some(layer)` only what layers below `layer` put there.
fn remove_below(tree: &mut BTreeMap<Vec<u8>, Node>, dir: &[u8], below: Option<u32>) {
    let prefix = if dir.is_empty() {
        Vec::new()
    } else {
        join(dir, b"")
    };
    let doomed: Vec<Vec<u8>> = tree
        .range(prefix.clone()..)
        .take_while(|(path, _)| path.starts_with(&prefix))
        .filter(|(_, node)| below.is_none_or(|layer| node.id.layer < layer))
        .map(|(path, _)| path.clone())
        .collect();
    for path in doomed {
        tree.remove(&path);
    }
}

/// Pass 2: the winning entries, bottom layer first, in tar order.
fn write<W: Write>(
    layers: &dyn Layers,
    actions: &HashMap<EntryId, Action>,
    out: &mut W,
) -> Result<Stats, ImageError> {
    let mut builder = Builder::new(out);
    let mut entries = 0u64;
    for layer in 0..layers.count() {
        let damaged = |e: io::Error| layers.damaged(layer, crate::util::os_error(&e));
        layers.read(layer, &mut |tar| {
            let mut archive = tar::Archive::new(tar);
            for (index, entry) in archive.entries().map_err(damaged)?.enumerate() {
                let mut entry = entry.map_err(damaged)?;
                let id = EntryId {
                    layer: layer as u32,
                    index: index as u32,
                };
                let Some(action) = actions.get(&id) else {
                    continue;
                };
                let mut read_error = None;
                match write_entry(&mut builder, &mut entry, action, &mut read_error) {
                    Ok(()) => entries += 1,
                    Err(e) => {
                        return Err(match read_error {
                            Some(e) => damaged(e),
                            None => ImageError::Write(e),
                        })
                    }
                }
            }
            Ok(())
        })?;
    }
    builder.finish().map_err(ImageError::Write)?;
    Ok(Stats { entries })
}

fn os(path: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(path))
}

/// Writes one entry with its header and PAX records, under the action's path. Errors of
/// reading the entry's data are also stored in `read_error`.
fn write_entry<W: Write, R: Read>(
    builder: &mut Builder<W>,
    entry: &mut Entry<R>,
    action: &Action,
    read_error: &mut Option<io::Error>,
) -> io::Result<()> {
    let mut header = entry.header().clone();
    // Names, link names and sizes are written by the builder; the rest (xattrs, times,
    // large ids) is kept.
    let mut records: Vec<(String, Vec<u8>)> = Vec::new();
    let pax = entry.pax_extensions().inspect_err(|e| {
        *read_error = Some(io::Error::new(e.kind(), e.to_string()));
    })?;
    if let Some(pax) = pax {
        for record in pax {
            let record = record?;
            let Ok(key) = record.key() else { continue };
            if !matches!(key, "path" | "linkpath" | "size") && !key.starts_with("GNU.sparse.") {
                records.push((key.to_string(), record.value_bytes().to_vec()));
            }
        }
    }
    if !records.is_empty() {
        builder.append_pax_extensions(records.iter().map(|(k, v)| (k.as_str(), v.as_slice())))?;
    }
    match action {
        Action::Link { path, target } => {
            header.set_entry_type(EntryType::Link);
            header.set_size(0);
            builder.append_link(&mut header, os(path), os(target))
        }
        Action::Write(path) => {
            let kind = header.entry_type();
            if kind.is_dir() {
                header.set_size(0);
                builder.append_data(&mut header, os(&join(path, b"")), io::empty())
            } else if kind.is_symlink() {
                let target = entry.link_name_bytes().unwrap_or_default().into_owned();
                header.set_size(0);
                builder.append_link(&mut header, os(path), os(&target))
            } else {
                let size = if kind.is_gnu_sparse() {
                    // Written out in full: the holes become zeros.
                    header.set_entry_type(EntryType::Regular);
                    header
                        .as_gnu()
                        .and_then(|gnu| gnu.real_size().ok())
                        .unwrap_or(entry.size())
                } else {
                    entry.size()
                };
                header.set_size(size);
                let data = TrackedRead {
                    inner: entry,
                    error: read_error,
                };
                builder.append_data(&mut header, os(path), data)
            }
        }
    }
}

/// Keeps aside the error of reading an entry, which the builder cannot tell from its own.
struct TrackedRead<'a, R> {
    inner: R,
    error: &'a mut Option<io::Error>,
}

impl<R: Read> Read for TrackedRead<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner
            .read(buf)
            .inspect_err(|e| *self.error = Some(io::Error::new(e.kind(), e.to_string())))
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use tar::Header;

    /// Layers held in memory, for tests.
    pub struct MemLayers(pub Vec<Vec<u8>>);

    impl Layers for MemLayers {
        fn count(&self) -> usize {
            self.0.len()
        }
        fn damaged(&self, index: usize, why: String) -> ImageError {
            ImageError::Layer {
                image: "test".into(),
                layer: index.to_string(),
                why,
            }
        }
        fn read(
            &self,
            index: usize,
            f: &mut dyn FnMut(&mut dyn Read) -> Result<(), ImageError>,
        ) -> Result<(), ImageError> {
            f(&mut &self.0[index][..])
        }
    }

    /// A layer tar: (path, kind, content or link target).
    pub fn layer(entries: &[(&str, char, &str)]) -> Vec<u8> {
        let mut b = Builder::new(Vec::new());
        for &(path, kind, text) in entries {
            let mut h = Header::new_gnu();
            h.set_mtime(1_700_000_000);
            h.set_mode(if kind == 'd' { 0o755 } else { 0o644 });
            h.set_size(0);
            match kind {
                'd' => {
                    h.set_entry_type(EntryType::Directory);
                    b.append_data(&mut h, path, io::empty()).unwrap();
                }
                'f' => {
                    h.set_entry_type(EntryType::Regular);
                    h.set_size(text.len() as u64);
                    b.append_data(&mut h, path, text.as_bytes()).unwrap();
                }
                'l' | 'h' => {
                    h.set_entry_type(if kind == 'l' {
                        EntryType::Symlink
                    } else {
                        EntryType::Link
                    });
                    b.append_link(&mut h, path, text).unwrap();
                }
                _ => unreachable!(),
            }
        }
        b.into_inner().unwrap()
    }

    /// (path, kind, content or link target) of every entry of a tar, in order.
    pub fn listing(tar: &[u8]) -> Vec<(String, char, String)> {
        let mut archive = tar::Archive::new(tar);
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let path = e.path().unwrap().to_string_lossy().into_owned();
                let kind = e.header().entry_type();
                let (kind, text) = if kind.is_dir() {
                    ('d', String::new())
                } else if kind.is_symlink() || kind.is_hard_link() {
                    let link = e.link_name().unwrap().unwrap();
                    (
                        if kind.is_symlink() { 'l' } else { 'h' },
                        link.to_string_lossy().into_owned(),
                    )
                } else {
                    let mut text = String::new();
                    e.read_to_string(&mut text).unwrap();
                    ('f', text)
                };
                (path, kind, text)
            })
            .collect()
    }

    fn flat(layers: Vec<Vec<u8>>) -> Vec<(String, char, String)> {
        let mut out = Vec::new();
        flatten(&MemLayers(layers), &mut out).unwrap();
        listing(&out)
    }

    fn e(path: &str, kind: char, text: &str) -> (String, char, String) {
        (path.to_string(), kind, text.to_string())
    }

    #[test]
    fn later_layers_win() {
        let out = flat(vec![
            layer(&[("./", 'd', ""), ("./a", 'f', "one"), ("./b", 'f', "b")]),
            layer(&[("a", 'f', "two")]),
        ]);
        assert_eq!(out, [e("b", 'f', "b"), e("a", 'f', "two")]);
    }

    #[test]
    fn whiteouts_delete_and_never_reach_the_output() {
        let out = flat(vec![
            layer(&[
                ("d/", 'd', ""),
                ("d/x", 'f', "x"),
                ("d/y", 'f', "y"),
                ("gone/", 'd', ""),
                ("gone/deep", 'f', "z"),
            ]),
            layer(&[("d/.wh.x", 'f', ""), (".wh.gone", 'f', "")]),
        ]);
        assert_eq!(out, [e("d/", 'd', ""), e("d/y", 'f', "y")]);
    }

    #[test]
    fn opaque_directories_hold_only_the_upper_layer() {
        let out = flat(vec![
            layer(&[
                ("o/", 'd', ""),
                ("o/old", 'f', "old"),
                ("o/sub/", 'd', ""),
                ("o/sub/older", 'f', "older"),
                ("other", 'f', "kept"),
            ]),
            // The marker after a file of its own layer: that file stays.
            layer(&[
                ("o/", 'd', ""),
                ("o/new", 'f', "new"),
                ("o/.wh..wh..opq", 'f', ""),
            ]),
        ]);
        assert_eq!(
            out,
            [
                e("other", 'f', "kept"),
                e("o/", 'd', ""),
                e("o/new", 'f', "new")
            ]
        );
    }

    #[test]
    fn hard_links_stay_links_within_and_across_layers() {
        let out = flat(vec![
            layer(&[("data/", 'd', ""), ("data/base", 'f', "base")]),
            layer(&[
                ("./data/to-base", 'h', "./data/base"),
                ("data/a", 'f', "a"),
                ("data/b", 'h', "data/a"),
                // A link to a link resolves to the data.
                ("data/c", 'h', "data/b"),
            ]),
        ]);
        assert_eq!(
            out,
            [
                e("data/", 'd', ""),
                e("data/base", 'f', "base"),
                e("data/to-base", 'h', "data/base"),
                e("data/a", 'f', "a"),
                e("data/b", 'h', "data/a"),
                e("data/c", 'h', "data/a"),
            ]
        );
    }

    #[test]
    fn a_link_whose_target_was_replaced_keeps_the_old_data() {
        let out = flat(vec![
            layer(&[("f", 'f', "old")]),
            layer(&[("l1", 'h', "f"), ("l2", 'h', "f")]),
            layer(&[("f", 'f', "new")]),
        ]);
        // The old data goes to l1, written where f stood; l2 links to it.
        assert_eq!(
            out,
            [e("l1", 'f', "old"), e("l2", 'h', "l1"), e("f", 'f', "new")]
        );
        let out = flat(vec![
            layer(&[("f", 'f', "old")]),
            layer(&[("z", 'h', "f")]),
            layer(&[(".wh.f", 'f', "")]),
        ]);
        assert_eq!(out, [e("z", 'f', "old")]);
    }

    #[test]
    fn a_link_to_nothing_is_dropped() {
        let out = flat(vec![layer(&[("a", 'f', "a"), ("l", 'h', "missing")])]);
        assert_eq!(out, [e("a", 'f', "a")]);
    }

    #[test]
    fn files_replace_directories_and_the_reverse() {
        let out = flat(vec![
            layer(&[("d/", 'd', ""), ("d/x", 'f', "x"), ("s", 'l', "d")]),
            layer(&[("d", 'l', "elsewhere"), ("s/", 'd', ""), ("s/y", 'f', "y")]),
        ]);
        assert_eq!(
            out,
            [
                e("d", 'l', "elsewhere"),
                e("s/", 'd', ""),
                e("s/y", 'f', "y")
            ]
        );
    }

    #[test]
    fn same_layers_same_bytes() {
        let layers = || {
            MemLayers(vec![
                layer(&[("a/", 'd', ""), ("a/b", 'f', "b"), ("c", 'f', "c")]),
                layer(&[("a/.wh.b", 'f', ""), ("c2", 'h', "c")]),
            ])
        };
        let (mut one, mut two) = (Vec::new(), Vec::new());
        flatten(&layers(), &mut one).unwrap();
        flatten(&layers(), &mut two).unwrap();
        assert_eq!(one, two);
        assert!(one.len() % 512 == 0 && one.ends_with(&[0u8; 1024]));
    }

    #[test]
    fn paths_out_of_the_root_are_refused() {
        let mut h = Header::new_gnu();
        h.set_size(0);
        h.set_entry_type(EntryType::Regular);
        // tar::Builder refuses "..": write the name by hand.
        h.as_old_mut().name[..9].copy_from_slice(b"../escape");
        h.set_cksum();
        let mut tar = h.as_bytes().to_vec();
        tar.extend_from_slice(&[0u8; 1024]);
        let err = flatten(&MemLayers(vec![tar]), &mut Vec::new()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "test: layer 0 is damaged (entry \"../escape\" leaves the root directory)"
        );
    }

    #[test]
    fn xattrs_are_kept() {
        let mut b = Builder::new(Vec::new());
        b.append_pax_extensions([("SCHILY.xattr.user.k", &b"v"[..])])
            .unwrap();
        let mut h = Header::new_ustar();
        h.set_size(1);
        h.set_mode(0o600);
        b.append_data(&mut h, "x", &b"1"[..]).unwrap();
        let mut out = Vec::new();
        flatten(&MemLayers(vec![b.into_inner().unwrap()]), &mut out).unwrap();
        let mut archive = tar::Archive::new(&out[..]);
        let mut entry = archive.entries().unwrap().next().unwrap().unwrap();
        let pax: Vec<_> = entry
            .pax_extensions()
            .unwrap()
            .unwrap()
            .map(|r| r.unwrap().key().unwrap().to_string())
            .collect();
        assert_eq!(pax, ["SCHILY.xattr.user.k"]);
        assert_eq!(entry.header().mode().unwrap(), 0o600);
    }
}
