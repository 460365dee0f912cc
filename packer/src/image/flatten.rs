//! Flattens an image's layers into the one tar of the payload, in two passes over the
//! layers, holding one small record per path and never any file data:
//!
//! 1. Plan: read every layer's headers, bottom to top, applying each to a tree of paths
//!    as a container runtime applies layers: a later entry replaces an earlier one (a
//!    directory over a directory keeps its children, anything else drops them),
//!    `.wh.NAME` deletes NAME from the layers below, `.wh..wh..opq` empties its directory
//!    of what the layers below put there. A hard link is resolved, when it is applied, to
//!    the entry that holds its data. What is left in the tree are the winning entries.
//!    As docker and podman apply a layer, an entry (a whiteout too) whose parent
//!    directories do not exist makes them, 0755 and root's: they stay when what is below
//!    them is deleted, and a whiteout of a path that never existed leaves its directories.
//!    Whiteouts apply to the layers below only: what a layer put below a directory it
//!    then deletes or empties stays, in directories made again the same way.
//! 2. Write: read the layers again, bottom to top, and write only the winning entries, in
//!    layer order and, within a layer, in tar order. A hard link's data entry always comes
//!    before the link (same layer earlier, or a lower layer), so links stay links. When
//!    the data entry itself lost (its path was deleted or replaced above), its data is
//!    written, where it stands, under the first of its links' paths (sorted by name), and
//!    the other links point there. A hard link to nothing is dropped. A directory made
//!    as a parent is written right before the entry it was made for.
//!
//! Both passes read the layers with the stub's tar reader and its caps, and each read is
//! checked against the layer's digests (`layer.rs`): the second pass sees the bytes the
//! first one planned with, or the pack fails before anything is committed. A layer with
//! no winning entry is not read again. A layer whose tar breaks is reported with the byte
//! of its tar where it broke and the last entry read before it.
//!
//! Entries are rewritten with their own header (mode, owner, times, device numbers) and
//! their xattrs, under a normalized path (`bin/sh`, directories `bin/`): the same layers
//! always give the same bytes (a symlink's mode is 0777, as Linux shows every symlink).
//! Whiteout files never reach the output. Sparse files are written out in full, so no
//! file may claim more than `--max-size`, nor the flattened tar add up to more.
//!
//! For a format 2 payload (`layered.rs`) pass 1 also keeps a journal of what each
//! output layer changed, and pass 2 writes each output layer's tar of its own.
//!
//! The tree keys paths with `/` stored as NUL (which no name may hold): then a directory's
//! whole subtree sorts right after it, and a file that an entry below it replaces is
//! always the entry's immediate predecessor, found in one lookup whatever the depth.
use super::error::ImageError;
use super::flat_tar::checksum_ok;
use super::limits::{human, tar_limits, Budget, Limits, MAX_TREE_BYTES, NODE_COST, PATH_MAX};
use super::types::Stats;
use crate::util::{os_error, printable};
use binctr_format::tar_reader::{Header, Kind, TarError, TarReader};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use tar::{Builder, EntryType};

mod layered;

pub use layered::write_layers;

/// The layers of an image, bottom first.
pub trait Layers {
    fn count(&self) -> usize;
    /// The image, as errors name it.
    fn image(&self) -> &str;
    /// The error for a layer whose tar cannot be read.
    fn damaged(&self, index: usize, why: String) -> ImageError;
    /// The image's own diff_id of layer `index`, shown in the packed file's config.
    fn diff_id(&self, _index: usize) -> String {
        String::new()
    }
    /// Runs `f` on layer `index` as an uncompressed tar stream, taking what it reads
    /// from `budget`, and checks the layer's digests once `f` is done.
    fn read(
        &self,
        index: usize,
        budget: &Budget,
        f: &mut dyn FnMut(&mut dyn Read) -> Result<(), ImageError>,
    ) -> Result<(), ImageError>;
}

const BLOCK: usize = 512;
const SEP: u8 = 0;
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
    /// For a directory made as a parent: the entry it was made for.
    id: EntryId,
    dir: bool,
    /// A directory no entry lists, made as the parent of entry `id`.
    made: bool,
    /// For a hard link: the entry that holds its data.
    data: Option<EntryId>,
    /// The bytes it writes (a hard link: its data's).
    size: u64,
}

/// What pass 2 does with a winning entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Action {
    /// Write the entry under its own path.
    Write,
    /// Write the entry under this path (the data of links whose entry lost).
    WriteAs(Vec<u8>),
    /// Write a hard link at the entry's own path to this path, written before.
    Link(Vec<u8>),
    /// Write, under the entry's own path, the entry of a lower output layer that holds
    /// its data (a hard link to below its layer, copied up: `layered.rs`).
    Copy(EntryId),
}

/// What pass 2 writes (of one output layer, for a format 2 payload).
#[derive(Default)]
struct Plan {
    /// What to do with each winning entry.
    actions: HashMap<EntryId, Action>,
    /// The directories to write right before an entry (its parents no entry lists),
    /// parents first.
    parents: HashMap<EntryId, Vec<Vec<u8>>>,
    /// Format 2: what to write right before an entry, besides its parents.
    before: HashMap<EntryId, Vec<Extra>>,
    /// Format 2: the directories (entries, or parents by path) to mark opaque.
    opaque: HashSet<EntryId>,
    opaque_dirs: HashSet<Vec<u8>>,
}

/// Format 2: what a layer's tar holds that is no entry of its own, copied from an entry
/// of a lower output layer (kept by [`Keeper`]).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Extra {
    /// A directory the layer holds something in, as the layers below have it.
    Dir {
        path: Vec<u8>,
        from: EntryId,
        /// Made as a parent for `from`: 0755, root's, `from`'s mtime.
        made: bool,
        opaque: bool,
    },
    /// The data of a hard link group copied up, at `path`.
    Data { path: Vec<u8>, data: EntryId },
    /// A member of that group, linked to `target`.
    Link {
        path: Vec<u8>,
        target: Vec<u8>,
        data: EntryId,
    },
}

pub fn flatten<W: Write>(
    layers: &dyn Layers,
    limits: &Limits,
    out: &mut W,
) -> Result<Stats, ImageError> {
    let plan = plan(layers, limits)?;
    write(layers, &plan, limits, out)
}

/// The paths of pass 1, keyed with [`SEP`] between components.
#[derive(Default)]
struct Tree {
    map: BTreeMap<Vec<u8>, Node>,
    /// What the map and the journal hold, roughly, in bytes.
    bytes: usize,
    /// While a layer of a format 2 payload is planned: what changed since it began.
    journal: Option<Journal>,
}

/// The paths one output layer changed (`layered.rs` turns them into the layer's tar).
#[derive(Default)]
struct Journal {
    touched: BTreeMap<Vec<u8>, Touched>,
    /// Everything the layers below put at the root was removed (an opaque root).
    root_emptied: bool,
}

/// A path the output layer changed: what it was before, and whether what the layers
/// below had put under it was removed.
#[derive(Debug, Clone, Copy)]
struct Touched {
    before: Option<Node>,
    emptied: bool,
}

impl Tree {
    fn get(&self, key: &[u8]) -> Option<&Node> {
        self.map.get(key)
    }

    /// Notes, the first time, what `key` was before the output layer changed it.
    fn touch(&mut self, key: &[u8], before: Option<Node>) -> Option<&mut Touched> {
        let journal = self.journal.as_mut()?;
        if !journal.touched.contains_key(key) {
            journal.touched.insert(
                key.to_vec(),
                Touched {
                    before,
                    emptied: false,
                },
            );
            self.bytes += key.len() + NODE_COST;
        }
        journal.touched.get_mut(key)
    }

    /// Adds or replaces `key`; `false` when the tree would grow past its cap.
    fn insert(&mut self, key: Vec<u8>, node: Node) -> bool {
        let cost = key.len() + NODE_COST;
        if self.journal.is_some() {
            let before = self.map.get(&key).copied();
            self.touch(&key, before);
        }
        if self.map.insert(key, node).is_none() {
            self.bytes += cost;
        }
        self.bytes <= MAX_TREE_BYTES
    }

    fn remove(&mut self, key: &[u8]) {
        if let Some(node) = self.map.remove(key) {
            self.bytes -= key.len() + NODE_COST;
            self.touch(key, Some(node));
        }
    }

    /// Removes what is below `dir` (everything for the root): all of it, or with
    /// `Some(layer)` only what layers below `layer` put there. `true` if anything went.
    fn remove_below(&mut self, dir: &[u8], below: Option<u32>) -> bool {
        if dir.is_empty() {
            if let Some(journal) = &mut self.journal {
                journal.root_emptied = true;
            }
        } else {
            let before = self.map.get(dir).copied();
            if let Some(touched) = self.touch(dir, before) {
                touched.emptied = true;
            }
        }
        let prefix = if dir.is_empty() {
            Vec::new()
        } else {
            join(dir, b"")
        };
        let doomed: Vec<Vec<u8>> = self
            .map
            .range(prefix.clone()..)
            .take_while(|(path, _)| path.starts_with(&prefix))
            .filter(|(_, node)| below.is_none_or(|layer| node.id.layer < layer))
            .map(|(path, _)| path.clone())
            .collect();
        for path in &doomed {
            self.remove(path);
        }
        !doomed.is_empty()
    }

    /// The paths below `dir`.
    fn keys_below(&self, dir: &[u8]) -> Vec<Vec<u8>> {
        let prefix = join(dir, b"");
        self.map
            .range(prefix.clone()..)
            .take_while(|(path, _)| path.starts_with(&prefix))
            .map(|(path, _)| path.clone())
            .collect()
    }

    /// Ends the journal of an output layer, giving back what it held.
    fn take_journal(&mut self) -> Journal {
        let journal = self.journal.take().unwrap_or_default();
        for key in journal.touched.keys() {
            self.bytes -= key.len() + NODE_COST;
        }
        journal
    }

    /// The file, symlink or link that `key` lies below, if any. No entry lies below a
    /// non-directory (an entry below one replaces it), and a subtree sorts right after
    /// its directory: so it can only be the entry just before `key`.
    fn non_dir_above(&self, key: &[u8]) -> Option<Vec<u8>> {
        let (above, node) = self.map.range(..key.to_vec()).next_back()?;
        let below = key.len() > above.len() && key.starts_with(above) && key[above.len()] == SEP;
        (below && !node.dir).then(|| above.clone())
    }
}

/// What a layer is refused for, in pass 1.
struct Ctx<'a> {
    layers: &'a dyn Layers,
    layer: usize,
    max_size: u64,
}

impl Ctx<'_> {
    fn damaged(&self, why: String) -> ImageError {
        self.layers.damaged(self.layer, why)
    }
}

/// Pass 1: which entry of which layer ends up at which path.
fn plan(layers: &dyn Layers, limits: &Limits) -> Result<Plan, ImageError> {
    let mut tree = Tree::default();
    let budget = Budget::new(limits.max_size);
    for layer in 0..layers.count() {
        apply_layer(&mut tree, layers, layer, limits, &budget)?;
    }
    actions(tree, layers.image(), limits)
}

/// Reads layer `layer`'s headers and applies them to the tree.
fn apply_layer(
    tree: &mut Tree,
    layers: &dyn Layers,
    layer: usize,
    limits: &Limits,
    budget: &Budget,
) -> Result<(), ImageError> {
    let ctx = Ctx {
        layers,
        layer,
        max_size: limits.max_size,
    };
    layers.read(layer, budget, &mut |stream| {
        let mut tar = TarReader::new(stream, tar_limits());
        let mut index = 0u32;
        let mut last = LastEntry::default();
        loop {
            let h = match tar.next_entry() {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(e) => return Err(ctx.damaged(last.broken(&e, tar.offset()))),
            };
            last.read(&h);
            let id = EntryId {
                layer: layer as u32,
                index,
            };
            apply(tree, id, &h, &ctx)?;
            index = index
                .checked_add(1)
                .ok_or_else(|| ctx.damaged("more than 2^32 entries".into()))?;
        }
        Ok(())
    })
}

/// The last entry a layer's tar gave, for the message when the tar breaks after it.
#[derive(Default)]
struct LastEntry {
    path: Option<Vec<u8>>,
}

impl LastEntry {
    fn read(&mut self, h: &Header) {
        let path = self.path.get_or_insert_with(Vec::new);
        path.clear();
        path.extend_from_slice(&h.path);
    }

    /// How the tar broke, where (the offset in the uncompressed tar) and after what:
    /// one line.
    fn broken(&self, e: &TarError, at: u64) -> String {
        let (why, at) = match e {
            TarError::Bad { offset, why } => (why.clone(), *offset),
            TarError::Io(e) => (os_error(e), at),
        };
        let after = match &self.path {
            Some(path) => format!("the last entry read is '{}'", printable(path)),
            None => "before its first entry".to_string(),
        };
        format!("{why} (at byte {at} of its tar; {after})")
    }
}

/// Makes the parent directories of `key` that are not in the tree, as a container
/// runtime does before it applies an entry: 0755 and root's, made for entry `id`. Stops
/// at a parent that is not a directory (nothing is made below a file). `false` when the
/// tree would grow past its cap.
fn make_parents(tree: &mut Tree, key: &[u8], id: EntryId) -> bool {
    let mut at = 0;
    while let Some(sep) = key[at..].iter().position(|&b| b == SEP) {
        let parent = &key[..at + sep];
        match tree.get(parent) {
            Some(node) if node.dir => {}
            Some(_) => return true,
            None => {
                let node = Node {
                    id,
                    dir: true,
                    made: true,
                    data: None,
                    size: 0,
                };
                if !tree.insert(parent.to_vec(), node) {
                    return false;
                }
            }
        }
        at += sep + 1;
    }
    true
}

/// Applies one entry of a layer to the tree.
fn apply(tree: &mut Tree, id: EntryId, h: &Header, ctx: &Ctx) -> Result<(), ImageError> {
    if matches!(h.kind(), Kind::Other(_)) {
        return Ok(()); // a volume label, a vendor extension: no file
    }
    let path = key_of(&h.path).map_err(|why| ctx.damaged(why))?;
    if path.is_empty() {
        return Ok(()); // the root directory itself: the stub makes it
    }
    if h.size > ctx.max_size {
        return Err(ImageError::TooLarge {
            image: ctx.layers.image().to_string(),
            what: format!(
                "file '{}' ({} bytes) of layer {}",
                printable(&h.path),
                h.size,
                ctx.layer + 1
            ),
            limit: ctx.max_size,
        });
    }
    let (parent, name) = match path.iter().rposition(|&b| b == SEP) {
        Some(at) => (&path[..at], &path[at + 1..]),
        None => (&path[..0], &path[..]),
    };
    if name.starts_with(b".wh..wh.") && name != OPAQUE {
        return Ok(()); // aufs bookkeeping (.wh..wh.plnk, ...), never content
    }
    let whiteout = name.starts_with(WHITEOUT);
    if !whiteout {
        // A file, symlink or link above this path is no longer a directory: replaced.
        if let Some(above) = tree.non_dir_above(&path) {
            tree.remove(&above);
        }
    }
    if !make_parents(tree, &path, id) {
        return Err(too_many_paths(ctx));
    }
    if name == OPAQUE {
        return remove_lower(tree, parent, id, false, ctx);
    }
    if let Some(hidden) = name.strip_prefix(WHITEOUT) {
        let target = join(parent, hidden);
        let lower = tree.get(&target).is_some_and(|n| n.id.layer < id.layer);
        if lower {
            tree.remove(&target);
        }
        return remove_lower(tree, &target, id, lower, ctx);
    }
    let dir = h.kind() == Kind::Dir;
    if !dir {
        tree.remove_below(&path, None);
    }
    let (data, size) = if h.kind() == Kind::HardLink {
        let target = key_of(&h.link).ok().and_then(|t| tree.get(&t).copied());
        match target {
            Some(node) if !node.dir => (Some(node.data.unwrap_or(node.id)), node.size),
            _ => {
                // A link to nothing (or to a directory) cannot be made: dropped.
                tree.remove(&path);
                return Ok(());
            }
        }
    } else {
        (None, if h.kind() == Kind::File { h.size } else { 0 })
    };
    let node = Node {
        id,
        dir,
        made: false,
        data,
        size,
    };
    if !tree.insert(path, node) {
        return Err(too_many_paths(ctx));
    }
    Ok(())
}

/// Removes what layers below entry `id`'s put below `dir` (`removed`: `dir` itself went).
/// What its own layer put there stays, and the directories it lies in that went are made
/// again, as a runtime makes parents, rather than left for the extractor to make.
fn remove_lower(
    tree: &mut Tree,
    dir: &[u8],
    id: EntryId,
    removed: bool,
    ctx: &Ctx,
) -> Result<(), ImageError> {
    if tree.remove_below(dir, Some(id.layer)) || removed {
        for key in tree.keys_below(dir) {
            if !make_parents(tree, &key, id) {
                return Err(too_many_paths(ctx));
            }
        }
    }
    Ok(())
}

fn too_many_paths(ctx: &Ctx) -> ImageError {
    ImageError::Refused {
        image: ctx.layers.image().to_string(),
        why: format!(
            "more paths than binctr-pack flattens ({} of names)",
            human(MAX_TREE_BYTES as u64)
        ),
    }
}

/// Pass 1's result: the action of every winning entry. Checks that the flattened tar
/// stays within `--max-size`.
fn actions(tree: Tree, image: &str, limits: &Limits) -> Result<Plan, ImageError> {
    let targets: HashSet<EntryId> = tree.map.values().filter_map(|n| n.data).collect();
    let mut target_paths: HashMap<EntryId, Vec<u8>> = HashMap::new();
    let mut actions = HashMap::new();
    let mut parents: HashMap<EntryId, Vec<Vec<u8>>> = HashMap::new();
    // Links grouped by the entry holding their data: (path, link entry, size).
    let mut groups: BTreeMap<EntryId, Vec<(Vec<u8>, EntryId, u64)>> = BTreeMap::new();
    let mut total = 0u64;
    for (key, node) in tree.map {
        if node.made {
            // In key order: a parent before what is below it.
            parents.entry(node.id).or_default().push(slashes(key));
            continue;
        }
        match node.data {
            None => {
                total = total.saturating_add(node.size);
                if targets.contains(&node.id) {
                    target_paths.insert(node.id, slashes(key));
                }
                actions.insert(node.id, Action::Write);
            }
            Some(data) => groups
                .entry(data)
                .or_default()
                .push((slashes(key), node.id, node.size)),
        }
    }
    total = total.saturating_add(link_groups(groups, &target_paths, &mut actions));
    if total > limits.max_size {
        return Err(ImageError::TooLarge {
            image: image.to_string(),
            what: format!("the flattened root filesystem ({total} bytes)"),
            limit: limits.max_size,
        });
    }
    Ok(Plan {
        actions,
        parents,
        ..Plan::default()
    })
}

/// The actions of hard links grouped by the entry holding their data, given where
/// written data entries stand: links to it, or (when its path went) its data written
/// under the first link's path, the others linked there. Gives the bytes that adds.
fn link_groups(
    groups: BTreeMap<EntryId, Vec<(Vec<u8>, EntryId, u64)>>,
    target_paths: &HashMap<EntryId, Vec<u8>>,
    actions: &mut HashMap<EntryId, Action>,
) -> u64 {
    let mut total = 0u64;
    for (data, mut links) in groups {
        // In path order, as `tar` sorts names (the tree's order puts `/` first).
        links.sort();
        let target = match target_paths.get(&data) {
            Some(path) => path.clone(),
            // The data's own path went: its first link takes the data.
            None => {
                let first = links[0].0.clone();
                total = total.saturating_add(links[0].2);
                actions.insert(data, Action::WriteAs(first.clone()));
                first
            }
        };
        for (path, id, _) in links {
            if path != target {
                actions.insert(id, Action::Link(target.clone()));
            }
        }
    }
    total
}

/// A path as the tree keys it: relative, without `.` or empty components, components
/// separated by [`SEP`]. Refused: `..`, a NUL byte, PATH_MAX bytes or more.
fn key_of(raw: &[u8]) -> Result<Vec<u8>, String> {
    let refuse = |why: &str| format!("entry \"{}\" {why}", printable(raw));
    if raw.contains(&SEP) {
        return Err(refuse("has a NUL byte in its name"));
    }
    if raw.len() >= PATH_MAX {
        return Err(refuse("has a name longer than PATH_MAX"));
    }
    let mut out = Vec::with_capacity(raw.len());
    for part in raw.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return Err(refuse("leaves the root directory")),
            part => {
                if !out.is_empty() {
                    out.push(SEP);
                }
                out.extend_from_slice(part);
            }
        }
    }
    Ok(out)
}

/// A tree key as a path.
fn slashes(mut key: Vec<u8>) -> Vec<u8> {
    for b in &mut key {
        if *b == SEP {
            *b = b'/';
        }
    }
    key
}

fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    let mut path = parent.to_vec();
    if !path.is_empty() {
        path.push(SEP);
    }
    path.extend_from_slice(name);
    path
}

/// Pass 2: the winning entries, bottom layer first, in tar order.
fn write<W: Write>(
    layers: &dyn Layers,
    plan: &Plan,
    limits: &Limits,
    out: &mut W,
) -> Result<Stats, ImageError> {
    let mut builder = Builder::new(out);
    let mut entries = 0u64;
    let budget = Budget::new(limits.max_size);
    let wanted: BTreeSet<u32> = (plan.actions.keys().chain(plan.parents.keys()))
        .map(|id| id.layer)
        .collect();
    for layer in 0..layers.count() {
        if !wanted.contains(&(layer as u32)) {
            continue;
        }
        layers.read(layer, &budget, &mut |stream| {
            let mut writer = LayerWriter {
                builder: &mut builder,
                layers,
                layer,
                plan,
                entries: &mut entries,
                keeper: None,
            };
            writer.write(stream)
        })?;
    }
    builder.finish().map_err(ImageError::Write)?;
    Ok(Stats {
        entries,
        detected: None,
    })
}

/// Format 2: the entries of lower output layers that upper ones copy (a directory's
/// header, a hard link group's data), kept when pass 2 reads them: headers in memory,
/// data in an anonymous temporary file.
#[derive(Default)]
struct Keeper {
    want_header: HashSet<EntryId>,
    want_data: HashSet<EntryId>,
    headers: HashMap<EntryId, (Header, Option<[u8; BLOCK]>)>,
    /// (offset, length) in `file`.
    data: HashMap<EntryId, (u64, u64)>,
    file: Option<std::fs::File>,
    len: u64,
    /// What `headers` holds, roughly, in bytes; past [`MAX_TREE_BYTES`], `full`.
    bytes: usize,
    full: bool,
}

impl Keeper {
    fn wants(&self, id: &EntryId) -> bool {
        self.want_header.contains(id) || self.want_data.contains(id)
    }

    /// Keeps what is wanted of entry `id`; its data, when kept, is read from `tar`
    /// (and must then be read back from here).
    fn keep<R: Read>(
        &mut self,
        id: EntryId,
        h: &Header,
        raw: Option<[u8; BLOCK]>,
        tar: &mut TarReader<R>,
        read_error: &mut Option<TarError>,
    ) -> io::Result<bool> {
        if !self.wants(&id) {
            return Ok(false);
        }
        let xattrs: usize = h.xattrs.iter().map(|(k, v)| k.len() + v.len()).sum();
        self.bytes += h.path.len() + h.link.len() + xattrs + BLOCK + NODE_COST;
        if self.bytes > MAX_TREE_BYTES {
            self.full = true;
            return Err(io::Error::other("too many headers to keep"));
        }
        self.headers.insert(id, (h.clone(), raw));
        if !self.want_data.contains(&id) || h.kind() != Kind::File {
            return Ok(false);
        }
        let file = match &mut self.file {
            Some(file) => file,
            None => self.file.insert(crate::sys::anonymous_temp_file()?),
        };
        let mut data = FileData::new(tar, h, read_error);
        let mut out = io::BufWriter::new(&*file);
        let n = io::copy(&mut data, &mut out)?;
        out.flush()?;
        self.data.insert(id, (self.len, n));
        self.len += n;
        Ok(true)
    }

    fn header(&self, id: &EntryId) -> io::Result<&(Header, Option<[u8; BLOCK]>)> {
        self.headers
            .get(id)
            .ok_or_else(|| io::Error::other("an entry to copy was not kept"))
    }

    /// The kept data of `id` (nothing for what is not a file).
    fn data(&self, id: &EntryId) -> Region<'_> {
        let (at, len) = self.data.get(id).copied().unwrap_or((0, 0));
        Region {
            file: self.file.as_ref(),
            at,
            end: at + len,
        }
    }
}

/// Bytes `at..end` of a file, read by position.
struct Region<'a> {
    file: Option<&'a std::fs::File>,
    at: u64,
    end: u64,
}

impl Read for Region<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let left = usize::try_from(self.end - self.at).unwrap_or(usize::MAX);
        let (Some(file), false) = (self.file, left == 0 || buf.is_empty()) else {
            return Ok(0);
        };
        let n = buf.len().min(left);
        let n = file.read_at(&mut buf[..n], self.at)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.at += n as u64;
        Ok(n)
    }
}

/// Pass 2 over one layer.
struct LayerWriter<'a, W: Write> {
    builder: &'a mut Builder<W>,
    layers: &'a dyn Layers,
    layer: usize,
    plan: &'a Plan,
    entries: &'a mut u64,
    /// Format 2: what lower output layers keep for upper ones.
    keeper: Option<&'a mut Keeper>,
}

impl<W: Write> LayerWriter<'_, W> {
    fn damaged(&self, e: impl ToString) -> ImageError {
        self.layers.damaged(self.layer, e.to_string())
    }

    fn write(&mut self, stream: &mut dyn Read) -> Result<(), ImageError> {
        let last = RefCell::new([0u8; BLOCK]);
        let mut tar = TarReader::new(
            LastBlock {
                inner: stream,
                last: &last,
            },
            tar_limits(),
        );
        let mut index = 0u32;
        let mut seen = LastEntry::default();
        loop {
            let h = match tar.next_entry() {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(e) => return Err(self.damaged(seen.broken(&e, tar.offset()))),
            };
            seen.read(&h);
            let id = EntryId {
                layer: self.layer as u32,
                index,
            };
            index = index.saturating_add(1);
            // Of an entry that is not sparse, the last block read is its own header.
            let raw = h.sparse.is_none().then(|| *last.borrow());
            let mut read_error = None;
            let kept = match self.keeper.as_deref_mut() {
                Some(keeper) => keeper.keep(id, &h, raw, &mut tar, &mut read_error),
                None => Ok(false),
            };
            match (kept, read_error.take()) {
                (Ok(kept), _) => kept,
                (Err(_), Some(e)) => return Err(self.damaged(seen.broken(&e, tar.offset()))),
                (Err(_), None) if self.keeper.as_ref().is_some_and(|k| k.full) => {
                    return Err(ImageError::Refused {
                        image: self.layers.image().to_string(),
                        why: format!(
                            "its layers copy more from each other (directories, hard-linked files) than binctr-pack holds ({} of headers): pack it with --flatten",
                            human(MAX_TREE_BYTES as u64)
                        ),
                    });
                }
                (Err(e), None) => return Err(ImageError::Spool(e)),
            };
            self.before(id, h.mtime).map_err(ImageError::Write)?;
            let Some(action) = self.plan.actions.get(&id) else {
                continue;
            };
            let own = slashes(key_of(&h.path).unwrap_or_default());
            let result = match action {
                Action::Copy(data) => self.copy(&own, *data),
                Action::Link(target) => {
                    self.write_entry(&h, raw.as_ref(), &own, Some(target), &mut io::empty())
                }
                Action::Write | Action::WriteAs(_) => {
                    let path = match action {
                        Action::WriteAs(path) => path,
                        _ => &own,
                    };
                    match self.keeper.as_deref() {
                        Some(keeper) if keeper.data.contains_key(&id) => {
                            let mut data = keeper.data(&id);
                            write_entry(self.builder, &h, raw.as_ref(), path, None, &mut data)
                        }
                        _ => {
                            let mut data = FileData::new(&mut tar, &h, &mut read_error);
                            write_entry(self.builder, &h, raw.as_ref(), path, None, &mut data)
                        }
                    }
                }
            };
            match (result, read_error) {
                (Ok(()), _) => *self.entries += 1,
                (Err(_), Some(e)) => return Err(self.damaged(seen.broken(&e, tar.offset()))),
                (Err(e), None) => return Err(ImageError::Write(e)),
            }
            if self.plan.opaque.contains(&id) {
                let path = match action {
                    Action::WriteAs(path) => path,
                    _ => &own,
                };
                self.marker(path, OPAQUE).map_err(ImageError::Write)?;
            }
        }
        Ok(())
    }

    /// What goes right before entry `id`: the parents made for it, then (format 2)
    /// what it needs copied from below.
    fn before(&mut self, id: EntryId, mtime: i64) -> io::Result<()> {
        for dir in self.plan.parents.get(&id).into_iter().flatten() {
            self.parent_dir(dir, mtime)?;
            *self.entries += 1;
            if self.plan.opaque_dirs.contains(dir) {
                self.marker(dir, OPAQUE)?;
            }
        }
        for extra in self.plan.before.get(&id).into_iter().flatten() {
            self.extra(extra)?;
        }
        Ok(())
    }

    /// Writes what an output layer copies from a lower one.
    fn extra(&mut self, extra: &Extra) -> io::Result<()> {
        match extra {
            Extra::Dir {
                path,
                from,
                made,
                opaque,
            } => {
                let keeper = self.keeper.as_deref().ok_or_else(no_keeper)?;
                let (h, raw) = keeper.header(from)?;
                if *made {
                    let mtime = h.mtime;
                    self.parent_dir(path, mtime)?;
                } else {
                    let (h, raw) = (h.clone(), *raw);
                    write_entry(self.builder, &h, raw.as_ref(), path, None, &mut io::empty())?;
                }
                if *opaque {
                    self.marker(path, OPAQUE)?;
                }
            }
            Extra::Data { path, data } => self.copy(path, *data)?,
            Extra::Link { path, target, data } => {
                let keeper = self.keeper.as_deref().ok_or_else(no_keeper)?;
                let (h, raw) = keeper.header(data)?;
                write_entry(
                    self.builder,
                    h,
                    raw.as_ref(),
                    path,
                    Some(target),
                    &mut io::empty(),
                )?;
            }
        }
        *self.entries += 1;
        Ok(())
    }

    /// Writes the kept entry `data` of a lower output layer, with its data, at `path`.
    fn copy(&mut self, path: &[u8], data: EntryId) -> io::Result<()> {
        let keeper = self.keeper.as_deref().ok_or_else(no_keeper)?;
        let (h, raw) = keeper.header(&data)?;
        write_entry(
            self.builder,
            h,
            raw.as_ref(),
            path,
            None,
            &mut keeper.data(&data),
        )
    }

    /// A whiteout (`.wh.NAME`) or opaque marker (`DIR/.wh..wh..opq`, `name` being
    /// [`OPAQUE`]) at `path`: an empty file, root's, mode 0, time 0.
    fn marker(&mut self, path: &[u8], name: &[u8]) -> io::Result<()> {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(EntryType::Regular);
        header.set_mode(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_size(0);
        let marker = if name == OPAQUE {
            let mut dir = path.to_vec();
            if !dir.is_empty() {
                dir.push(b'/');
            }
            dir.extend_from_slice(OPAQUE);
            dir
        } else {
            whiteout_of(path)
        };
        *self.entries += 1;
        self.builder
            .append_data(&mut header, os(&marker), io::empty())
    }

    /// A directory no entry lists, made as a parent: 0755, root's.
    fn parent_dir(&mut self, path: &[u8], mtime: i64) -> io::Result<()> {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(EntryType::Directory);
        header.set_mode(0o755);
        header.set_uid(0);
        header.set_gid(0);
        set_mtime(&mut header, mtime);
        header.set_size(0);
        let mut dir = path.to_vec();
        dir.push(b'/');
        self.builder.append_data(&mut header, os(&dir), io::empty())
    }

    fn write_entry(
        &mut self,
        h: &Header,
        raw: Option<&[u8; BLOCK]>,
        path: &[u8],
        link_to: Option<&[u8]>,
        data: &mut dyn Read,
    ) -> io::Result<()> {
        write_entry(self.builder, h, raw, path, link_to, data)
    }
}

fn no_keeper() -> io::Error {
    io::Error::other("an entry to copy was not kept")
}

/// `DIR/.wh.NAME` for the path `DIR/NAME`.
fn whiteout_of(path: &[u8]) -> Vec<u8> {
    let (parent, name) = match path.iter().rposition(|&b| b == b'/') {
        Some(at) => (&path[..=at], &path[at + 1..]),
        None => (&path[..0], path),
    };
    [parent, WHITEOUT, name].concat()
}

/// Writes one entry at `path`: a hard link to `link_to`, or the entry itself with its
/// data from `data` (a file's content; nothing is read for other kinds).
fn write_entry<W: Write>(
    builder: &mut Builder<W>,
    h: &Header,
    raw: Option<&[u8; BLOCK]>,
    path: &[u8],
    link_to: Option<&[u8]>,
    data: &mut dyn Read,
) -> io::Result<()> {
    let mut header = out_header(h, raw);
    // The xattrs (names that are not UTF-8 cannot be PAX keys: dropped).
    let records: Vec<(String, &[u8])> = h
        .xattrs
        .iter()
        .filter_map(|(name, value)| {
            let name = std::str::from_utf8(name).ok()?;
            Some((format!("SCHILY.xattr.{name}"), value.as_slice()))
        })
        .collect();
    if !records.is_empty() {
        builder.append_pax_extensions(records.iter().map(|(k, v)| (k.as_str(), *v)))?;
    }
    if let Some(target) = link_to {
        header.set_entry_type(EntryType::Link);
        header.set_size(0);
        return builder.append_link(&mut header, os(path), os(target));
    }
    header.set_size(0);
    match h.kind() {
        Kind::Dir => {
            header.set_entry_type(EntryType::Directory);
            let mut dir = path.to_vec();
            dir.push(b'/');
            builder.append_data(&mut header, os(&dir), io::empty())
        }
        Kind::Symlink => {
            header.set_mode(0o777);
            builder.append_link(&mut header, os(path), os(&h.link))
        }
        Kind::File => {
            header.set_entry_type(EntryType::Regular);
            header.set_size(h.size);
            builder.append_data(&mut header, os(path), data)
        }
        _ => builder.append_data(&mut header, os(path), io::empty()),
    }
}

/// The header an entry is written with: its own header block (type, mode, owner, user
/// and group names, times, device numbers) when it has one that is sound, else a fresh
/// one; either way with what its extension headers said (owner, mtime).
fn out_header(h: &Header, raw: Option<&[u8; BLOCK]>) -> tar::Header {
    let mut header = match raw.filter(|raw| checksum_ok(raw)) {
        Some(raw) => tar::Header::from_byte_slice(raw).clone(),
        None => tar::Header::new_gnu(),
    };
    header.set_mode(h.mode);
    header.set_uid(h.uid);
    header.set_gid(h.gid);
    set_mtime(&mut header, h.mtime);
    header
}

/// An mtime, one before 1970 too: negative, in base-256 two's complement (as GNU tar
/// writes it and Go's archive/tar reads it).
fn set_mtime(header: &mut tar::Header, mtime: i64) {
    match u64::try_from(mtime) {
        Ok(mtime) => header.set_mtime(mtime),
        Err(_) => {
            let field = &mut header.as_old_mut().mtime;
            field.fill(0xff);
            field[4..].copy_from_slice(&mtime.to_be_bytes());
        }
    }
}

fn os(path: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(path))
}

/// Keeps the last block it passed on: the tar reader has just read an entry's header.
struct LastBlock<'a, R> {
    inner: R,
    last: &'a RefCell<[u8; BLOCK]>,
}

impl<R: Read> Read for LastBlock<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut last = self.last.borrow_mut();
        if n >= BLOCK {
            last.copy_from_slice(&buf[n - BLOCK..n]);
        } else {
            last.copy_within(n.., 0);
            last[BLOCK - n..].copy_from_slice(&buf[..n]);
        }
        Ok(n)
    }
}

/// A file's content: its stored bytes, with a sparse file's holes as zeros. A read
/// error is kept aside, for the builder cannot tell it from its own.
struct FileData<'a, R> {
    tar: &'a mut TarReader<R>,
    /// (offset, length) of the stored chunks; one chunk for a plain file.
    chunks: Vec<(u64, u64)>,
    chunk: usize,
    pos: u64,
    size: u64,
    error: &'a mut Option<TarError>,
}

impl<'a, R: Read> FileData<'a, R> {
    fn new(tar: &'a mut TarReader<R>, h: &Header, error: &'a mut Option<TarError>) -> Self {
        FileData {
            tar,
            chunks: h.sparse.clone().unwrap_or_else(|| vec![(0, h.size)]),
            chunk: 0,
            pos: 0,
            size: h.size,
            error,
        }
    }

    /// Keeps the reader's error aside and gives the builder one of its own.
    fn fail(&mut self, e: TarError) -> io::Error {
        let for_builder = io::Error::new(io::ErrorKind::InvalidData, e.to_string());
        *self.error = Some(e);
        for_builder
    }
}

impl<R: Read> Read for FileData<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self
            .chunks
            .get(self.chunk)
            .is_some_and(|&(at, len)| at + len <= self.pos)
        {
            self.chunk += 1;
        }
        let left = self.size - self.pos;
        if left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = |end: u64| buf.len().min(usize::try_from(end).unwrap_or(usize::MAX));
        let n = match self.chunks.get(self.chunk) {
            Some(&(at, len)) if at <= self.pos => {
                let n = want(at + len - self.pos);
                match self.tar.read_data(&mut buf[..n]) {
                    Ok(0) => {
                        let early = TarError::Bad {
                            offset: self.tar.offset(),
                            why: "the entry's data ends early".into(),
                        };
                        return Err(self.fail(early));
                    }
                    Ok(n) => n,
                    Err(e) => return Err(self.fail(e)),
                }
            }
            next => {
                // A hole, up to the next chunk or the end.
                let end = next.map_or(self.size, |&(at, _)| at.min(self.size));
                let n = want(end - self.pos);
                buf[..n].fill(0);
                n
            }
        };
        self.pos += n as u64;
        Ok(n)
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
        fn image(&self) -> &str {
            "test"
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
            _budget: &Budget,
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
        flatten(&MemLayers(layers), &Limits::default(), &mut out).unwrap();
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
        flatten(&layers(), &Limits::default(), &mut one).unwrap();
        flatten(&layers(), &Limits::default(), &mut two).unwrap();
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
        let err = flatten(&MemLayers(vec![tar]), &Limits::default(), &mut Vec::new()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "test: layer 0 is damaged: entry \"../escape\" leaves the root directory"
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
        flatten(
            &MemLayers(vec![b.into_inner().unwrap()]),
            &Limits::default(),
            &mut out,
        )
        .unwrap();
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

    /// A GNU header block with a checksum: name, type flag, size.
    fn raw_header(name: &[u8], flag: u8, size: u64) -> Vec<u8> {
        let mut h = Header::new_gnu();
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_mode(0o644);
        h.set_size(size);
        h.set_mtime(1_700_000_000);
        h.as_old_mut().linkflag[0] = flag;
        h.set_cksum();
        h.as_bytes().to_vec()
    }

    fn seal(block: &mut [u8]) {
        let mut h = Header::from_byte_slice(block).clone();
        h.set_cksum();
        block[..512].copy_from_slice(h.as_bytes());
    }

    /// A GNU sparse file of `real` bytes holding "ab" at 0 and "cd" at 1 MiB.
    fn sparse(real: u64) -> Vec<u8> {
        let mut b = raw_header(b"holes", b'S', 4);
        let octal = |n: u64| format!("{n:011o}\0").into_bytes();
        b[386..398].copy_from_slice(&octal(0));
        b[398..410].copy_from_slice(&octal(2));
        b[410..422].copy_from_slice(&octal(1 << 20));
        b[422..434].copy_from_slice(&octal(2));
        if real < 1 << 33 {
            b[483..495].copy_from_slice(&octal(real));
        } else {
            b[483..495].fill(0);
            b[483] = 0x80;
            b[487..495].copy_from_slice(&real.to_be_bytes());
        }
        seal(&mut b);
        let mut data = b"abcd".to_vec();
        data.resize(512, 0);
        b.extend(data);
        b.extend([0u8; 1024]);
        b
    }

    #[test]
    fn sparse_files_are_written_out_within_the_limit() {
        let mut out = Vec::new();
        flatten(
            &MemLayers(vec![sparse((1 << 20) + 10)]),
            &Limits::default(),
            &mut out,
        )
        .unwrap();
        let files = listing(&out);
        assert_eq!(files.len(), 1);
        let data = files[0].2.as_bytes();
        assert_eq!(data.len(), (1 << 20) + 10);
        assert_eq!(&data[..2], b"ab");
        assert!(data[2..1 << 20].iter().all(|&b| b == 0));
        assert_eq!(&data[1 << 20..(1 << 20) + 2], b"cd");
        // 2^60 bytes of holes: refused from the header, nothing written.
        let err = flatten(
            &MemLayers(vec![sparse(1 << 60)]),
            &Limits::default(),
            &mut Vec::new(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains(
                "file 'holes' (1152921504606846976 bytes) of layer 1: more than the 64 GiB allowed"
            ),
            "{err}"
        );
    }

    #[test]
    fn the_flattened_tar_is_bounded_in_total() {
        let limits = Limits { max_size: 5 };
        let layers = MemLayers(vec![layer(&[("a", 'f', "abc"), ("b", 'f', "def")])]);
        let err = flatten(&layers, &limits, &mut Vec::new())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("the flattened root filesystem (6 bytes)"),
            "{err}"
        );
    }

    #[test]
    fn an_entry_below_a_file_replaces_it_whatever_sorts_between() {
        // "a/b-x" sorts between "a/b" and "a/b/c" byte-wise: the tree's order does not.
        let out = flat(vec![
            layer(&[("a/", 'd', ""), ("a/b", 'f', "file"), ("a/b-x", 'f', "x")]),
            layer(&[("a/b/c", 'f', "c")]),
        ]);
        // a/b is now a directory: made as a/b/c's parent, as docker makes it.
        assert_eq!(
            out,
            [
                e("a/", 'd', ""),
                e("a/b-x", 'f', "x"),
                e("a/b/", 'd', ""),
                e("a/b/c", 'f', "c")
            ]
        );
    }

    #[test]
    fn parents_no_entry_lists_are_made_as_docker_makes_them() {
        let out = flat(vec![
            // No directory entries at all: a/b/ is made for a/b/f.
            layer(&[("a/b/f", 'f', "f")]),
            layer(&[
                // Deleting the only file leaves its directories.
                ("a/b/.wh.f", 'f', ""),
                // Whiteouts of paths that never existed: nothing deleted, their
                // directories made.
                ("no/such/.wh.dir", 'f', ""),
                (".wh.ghost", 'f', ""),
                ("new/.wh..wh..opq", 'f', ""),
            ]),
        ]);
        assert_eq!(
            out,
            [
                e("a/", 'd', ""),
                e("a/b/", 'd', ""),
                e("no/", 'd', ""),
                e("no/such/", 'd', ""),
                e("new/", 'd', ""),
            ]
        );
        // A directory listed later replaces the one made, keeping what is below it.
        let out = flat(vec![
            layer(&[("d/x", 'f', "x")]),
            layer(&[("d/", 'd', ""), ("d/y", 'f', "y")]),
        ]);
        assert_eq!(
            out,
            [e("d/x", 'f', "x"), e("d/", 'd', ""), e("d/y", 'f', "y")]
        );
    }

    #[test]
    fn duplicate_entries_the_last_wins() {
        let out = flat(vec![layer(&[
            ("dup", 'f', "one"),
            ("link", 'h', "dup"),
            ("dup", 'f', "two"),
            ("s", 'l', "a"),
            ("s", 'l', "b"),
            ("df/", 'd', ""),
            ("df/y", 'f', "y"),
            ("df", 'f', "now a file"),
        ])]);
        // The link keeps the data it was made with, as link(2) would.
        assert_eq!(
            out,
            [
                e("link", 'f', "one"),
                e("dup", 'f', "two"),
                e("s", 'l', "b"),
                e("df", 'f', "now a file"),
            ]
        );
    }

    #[test]
    fn times_before_1970_are_kept() {
        let mut tar = raw_header(b"old", b'0', 0);
        tar[136..148].copy_from_slice(&[
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x9c,
        ]);
        seal(&mut tar);
        tar.extend([0u8; 1024]);
        let mut out = Vec::new();
        flatten(&MemLayers(vec![tar]), &Limits::default(), &mut out).unwrap();
        let mut reader = TarReader::new(&out[..], tar_limits());
        assert_eq!(reader.next_entry().unwrap().unwrap().mtime, -100);
    }

    #[test]
    fn symlinks_are_0777() {
        let mut out = Vec::new();
        let layers = MemLayers(vec![layer(&[("s", 'l', "target")])]);
        flatten(&layers, &Limits::default(), &mut out).unwrap();
        let mut archive = tar::Archive::new(&out[..]);
        let entry = archive.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(entry.header().mode().unwrap(), 0o777);
    }

    #[test]
    fn a_broken_layer_names_the_byte_and_the_last_entry() {
        let whole = layer(&[("etc/", 'd', ""), ("etc/ok", 'f', &"x".repeat(3000))]);
        // Cut inside etc/ok's data.
        let cut = whole[..512 * 2 + 1000].to_vec();
        let err = flatten(&MemLayers(vec![cut]), &Limits::default(), &mut Vec::new())
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "test: layer 0 is damaged: the archive ends inside an entry's data (at byte 2024 of its tar; the last entry read is 'etc/ok')"
        );
        assert_eq!(err.lines().count(), 1);
        // A damaged first header.
        let mut bad = whole.clone();
        bad[10] ^= 0xff;
        let err = flatten(&MemLayers(vec![bad]), &Limits::default(), &mut Vec::new())
            .unwrap_err()
            .to_string();
        assert!(
            err.ends_with("(at byte 512 of its tar; before its first entry)"),
            "{err}"
        );
    }

    #[test]
    fn names_the_stub_cannot_make_are_refused() {
        let long = format!("{}/x", "d".repeat(PATH_MAX));
        let err = flatten(
            &MemLayers(vec![layer(&[(long.as_str(), 'f', "x")])]),
            &Limits::default(),
            &mut Vec::new(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("has a name longer than PATH_MAX"), "{err}");
        let mut tar = raw_header(b"nul", b'0', 0);
        tar.extend([0u8; 1024]);
        // A GNU long name with a NUL inside.
        let mut long = raw_header(b"././@LongLink", b'L', 6);
        long.extend(b"a\0b\0\0\0");
        long.resize(1024, 0);
        long.extend(tar);
        let err = flatten(&MemLayers(vec![long]), &Limits::default(), &mut Vec::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("has a NUL byte in its name"), "{err}");
    }

    #[test]
    fn devices_owners_and_huge_ids_are_kept() {
        let mut b = Builder::new(Vec::new());
        let mut h = Header::new_gnu();
        h.set_entry_type(EntryType::Char);
        h.set_device_major(1).unwrap();
        h.set_device_minor(3).unwrap();
        h.set_size(0);
        b.append_data(&mut h, "dev/null", io::empty()).unwrap();
        b.append_pax_extensions([("uid", &b"100000000"[..])])
            .unwrap();
        let mut h = Header::new_ustar();
        h.set_size(1);
        b.append_data(&mut h, "owned", &b"x"[..]).unwrap();
        let mut out = Vec::new();
        flatten(
            &MemLayers(vec![b.into_inner().unwrap()]),
            &Limits::default(),
            &mut out,
        )
        .unwrap();
        let mut archive = tar::Archive::new(&out[..]);
        let entries: Vec<_> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().header().clone())
            .collect();
        // dev/ first: the parent no entry lists, made 0755 and root's.
        assert_eq!(entries[0].entry_type(), EntryType::Directory);
        assert_eq!(entries[0].mode().unwrap(), 0o755);
        assert_eq!(entries[1].device_major().unwrap(), Some(1));
        assert_eq!(entries[1].device_minor().unwrap(), Some(3));
        assert_eq!(entries[2].uid().unwrap(), 100_000_000);
    }

    #[test]
    fn huge_long_names_are_refused_unread() {
        // A 1 GiB long name: refused from its header, with the stub's cap.
        let tar = raw_header(b"././@LongLink", b'L', 1 << 30);
        let err = flatten(&MemLayers(vec![tar]), &Limits::default(), &mut Vec::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("long name of 1073741824 bytes"), "{err}");
    }

    #[test]
    fn a_layer_deleting_a_directory_keeps_its_own_entries_below_it() {
        // The entries the layer put below a directory before deleting (or emptying) it
        // from the layers below stay, in directories made again (0755, root's).
        let out = flat(vec![
            layer(&[("a/", 'd', ""), ("a/b/", 'd', ""), ("a/old", 'f', "old")]),
            layer(&[("a/b/c", 'f', "c"), (".wh.a", 'f', "")]),
        ]);
        // Made where the whiteout is: after the entry (the extractor makes them first,
        // then sets them as listed).
        assert_eq!(
            out,
            [e("a/b/c", 'f', "c"), e("a/", 'd', ""), e("a/b/", 'd', "")]
        );
        let out = flat(vec![
            layer(&[("o/", 'd', ""), ("o/p/", 'd', ""), ("o/p/old", 'f', "old")]),
            layer(&[("o/p/q/new", 'f', "new"), ("o/.wh..wh..opq", 'f', "")]),
        ]);
        assert_eq!(
            out,
            [
                e("o/", 'd', ""),
                e("o/p/q/", 'd', ""),
                e("o/p/q/new", 'f', "new"),
                e("o/p/", 'd', "")
            ]
        );
    }
}
