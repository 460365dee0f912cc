//! Format 2: an image's layers as overlay will stack them, each normalized into a tar of
//! its own (docs/FORMAT.md section 8), such that stacking them gives the tree that
//! flattening gives, file for file.
//!
//! Pass 1 applies the layers to the one tree of `flatten.rs`, exactly as flattening
//! does, with a journal per output layer: the paths it changed and what they were
//! before. At the end of the output layer the journal and the tree give its tar:
//!
//! - every path whose entry now comes from this output layer: the entry (a directory
//!   made as a parent is 0755 and root's, as flattening makes it);
//! - a path that was there before and is gone: a whiteout (`.wh.NAME`), unless what is
//!   above it hides it anyway;
//! - a directory whose lower content was removed (an opaque whiteout, a directory
//!   deleted or replaced and made again): the opaque marker (`.wh..wh..opq`);
//! - the directories a layer holds something in but does not list: copied from the
//!   layer below that provides them (header and xattrs), since overlay shows the upper
//!   layer's directory;
//! - a hard link to data below the output layer: the data copied up, with the lower
//!   entry's header, under the first (by name) of the other paths linked to it that are
//!   still there (they are all linked to it in the layer, so the link groups stay what
//!   flattening makes them), or under the link's own path; the links follow.
//!
//! Everything else (a layer entry that lost to a later one, a whiteout of nothing) is
//! not written. The bottom output layer has nothing below it: no whiteout, marker or
//! copy. An image of more than [`MAX_LAYERS`] layers keeps its bottom 63 and squashes
//! the rest into the 64th (their entries, in order, are that output layer's). A layer
//! that writes nothing is left out.
//!
//! Pass 2 reads the layers again, bottom first, writing each output layer's tar into a
//! frame of its own, in layer and tar order: the copied directories first (sorted,
//! parents first), then the entries (each with what is copied for it right before it),
//! then the whiteouts (sorted). The entries of lower layers that upper ones copy are
//! kept as pass 2 reads them (headers in memory, data in a temporary file).
use super::*;
use crate::image::types::LayerSink;
use binctr_format::MAX_LAYERS;
use std::ops::Range;

/// An output layer's plan.
struct LayerPlan {
    /// The input layers it holds.
    range: Range<usize>,
    plan: Plan,
    /// Copied directories, written first.
    head: Vec<Extra>,
    /// The whiteouts' paths (`DIR/NAME` for `DIR/.wh.NAME`), written last.
    tail: Vec<Vec<u8>>,
    root_opaque: bool,
}

impl LayerPlan {
    fn is_empty(&self) -> bool {
        self.head.is_empty()
            && self.tail.is_empty()
            && !self.root_opaque
            && self.plan.actions.is_empty()
            && self.plan.parents.is_empty()
            && self.plan.before.is_empty()
    }
}

/// What an output layer's tar holds at a path.
#[derive(Clone, Copy)]
enum Out {
    /// An entry of its own (or a directory made as its parent).
    Own(Node),
    /// A directory of a lower output layer, copied.
    Dir(Node),
    Whiteout,
    /// A path linked to data copied up: written with the copy.
    Mate,
}

/// The input layers of each output layer: one each, the top ones squashed into the
/// last when there are more than `max`.
fn output_layers(count: usize, max: usize) -> Vec<Range<usize>> {
    let mut ranges: Vec<Range<usize>> = (0..count.min(max)).map(|i| i..i + 1).collect();
    if let Some(last) = ranges.last_mut() {
        last.end = count;
    }
    ranges
}

/// Writes the layers of an image as a format 2 payload into `out`: one tar per output
/// layer, each ended with [`LayerSink::end_layer`].
pub fn write_layers<S: LayerSink>(
    layers: &dyn Layers,
    limits: &Limits,
    out: &mut S,
) -> Result<Stats, ImageError> {
    write_at_most(layers, limits, out, MAX_LAYERS)
}

/// [`write_layers`], squashing above `max` output layers.
fn write_at_most<S: LayerSink>(
    layers: &dyn Layers,
    limits: &Limits,
    out: &mut S,
    max: usize,
) -> Result<Stats, ImageError> {
    let ranges = output_layers(layers.count(), max);
    let (plans, mut keeper) = plan_layers(layers, limits, &ranges)?;
    let budget = Budget::new(limits.max_size);
    let mut entries = 0u64;
    let mut written = 0;
    let count = plans.len();
    let wanted = wanted_layers(&plans, &keeper);
    for (n, lp) in plans.iter().enumerate() {
        // An empty output layer is left out, unless all are (a payload has one).
        if lp.is_empty() && (written > 0 || n + 1 < count) {
            continue;
        }
        let diff_id = match lp.range.len() {
            1 => layers.diff_id(lp.range.start),
            _ => String::new(),
        };
        let mut builder = Builder::new(&mut *out);
        let pass = Pass2 {
            layers,
            wanted: &wanted,
            budget: &budget,
        };
        pass.write_layer(&mut builder, lp, &mut keeper, &mut entries)?;
        builder.into_inner().map_err(ImageError::Write)?;
        out.end_layer(&diff_id).map_err(ImageError::Write)?;
        written += 1;
    }
    Ok(Stats {
        entries,
        detected: None,
    })
}

/// What pass 2 reads from.
struct Pass2<'a> {
    layers: &'a dyn Layers,
    /// The input layers to read.
    wanted: &'a HashSet<u32>,
    budget: &'a Budget,
}

impl Pass2<'_> {
    /// Writes the tar of output layer `lp`: an opaque root, the copied directories, the
    /// entries of its input layers, the whiteouts.
    fn write_layer<W: Write>(
        &self,
        builder: &mut Builder<W>,
        lp: &LayerPlan,
        keeper: &mut Keeper,
        entries: &mut u64,
    ) -> Result<(), ImageError> {
        let mut writer = LayerWriter {
            builder,
            layers: self.layers,
            layer: lp.range.start,
            plan: &lp.plan,
            entries,
            keeper: Some(keeper),
        };
        if lp.root_opaque {
            writer.marker(b"", OPAQUE).map_err(ImageError::Write)?;
        }
        for extra in &lp.head {
            writer.extra(extra).map_err(ImageError::Write)?;
        }
        for layer in lp.range.clone() {
            if !self.wanted.contains(&(layer as u32)) {
                continue;
            }
            writer.layer = layer;
            self.layers
                .read(layer, self.budget, &mut |stream| writer.write(stream))?;
        }
        for path in &lp.tail {
            writer.marker(path, WHITEOUT).map_err(ImageError::Write)?;
        }
        Ok(())
    }
}

/// The input layers pass 2 must read: those that write something, or hold what an upper
/// layer copies.
fn wanted_layers(plans: &[LayerPlan], keeper: &Keeper) -> HashSet<u32> {
    let mut wanted = HashSet::new();
    for lp in plans {
        let plan = &lp.plan;
        let ids = (plan.actions.keys())
            .chain(plan.parents.keys())
            .chain(plan.before.keys());
        wanted.extend(ids.map(|id| id.layer));
    }
    let kept = keeper.want_header.iter().chain(&keeper.want_data);
    wanted.extend(kept.map(|id| id.layer));
    wanted
}

/// Pass 1: applies the layers, planning each output layer at its end.
fn plan_layers(
    layers: &dyn Layers,
    limits: &Limits,
    ranges: &[Range<usize>],
) -> Result<(Vec<LayerPlan>, Keeper), ImageError> {
    let mut tree = Tree::default();
    let budget = Budget::new(limits.max_size);
    let mut keeper = Keeper::default();
    let mut plans = Vec::with_capacity(ranges.len());
    let mut total = 0u64;
    for (n, range) in ranges.iter().enumerate() {
        tree.journal = Some(Journal::default());
        for layer in range.clone() {
            apply_layer(&mut tree, layers, layer, limits, &budget)?;
        }
        let journal = tree.take_journal();
        let (lp, bytes) = diff(&tree, journal, range.clone(), n == 0, &mut keeper);
        total = total.saturating_add(bytes);
        plans.push(lp);
    }
    if total > limits.max_size {
        return Err(ImageError::TooLarge {
            image: layers.image().to_string(),
            what: format!("the layers' files ({total} bytes)"),
            limit: limits.max_size,
        });
    }
    Ok((plans, keeper))
}

/// The plan of the output layer of input layers `range`, from what it changed; the
/// bytes of file data it writes.
fn diff(
    tree: &Tree,
    journal: Journal,
    range: Range<usize>,
    bottom: bool,
    keeper: &mut Keeper,
) -> (LayerPlan, u64) {
    let mut layer = Changes {
        tree,
        range,
        bottom,
        out: BTreeMap::new(),
        opaque: HashSet::new(),
    };
    let root_opaque = layer.read(journal);
    let copies = layer.links_below();
    add_parents(tree, &mut layer.out);
    let (mut lp, mut bytes) = layer.place(keeper);
    lp.root_opaque = root_opaque;
    for copy in copies {
        bytes = bytes.saturating_add(copy_up(tree, copy, &mut lp.plan, keeper));
    }
    (lp, bytes)
}

/// What an output layer's tar holds, by path, while it is planned.
struct Changes<'a> {
    tree: &'a Tree,
    range: Range<usize>,
    bottom: bool,
    out: BTreeMap<Vec<u8>, Out>,
    /// The directories (tree keys) to mark opaque.
    opaque: HashSet<Vec<u8>>,
}

/// The hard links of an output layer to data below it: the data's entry, the links
/// (entry, tree key), and the other paths that share the data below (tree keys, sorted).
struct CopyUp {
    data: EntryId,
    links: Vec<(EntryId, Vec<u8>)>,
    mates: Vec<Vec<u8>>,
}

impl Changes<'_> {
    fn mine(&self, id: EntryId) -> bool {
        self.range.contains(&(id.layer as usize))
    }

    /// The paths the layer changed: its own entries, the directories it emptied of what
    /// was below them (opaque), the paths gone that would show through (whiteouts).
    /// Gives whether the root is opaque.
    fn read(&mut self, journal: Journal) -> bool {
        let mut gone = Vec::new();
        for (key, touched) in journal.touched {
            let lower_dir = touched.before.is_some_and(|b| b.dir) && !self.bottom;
            match self.tree.get(&key) {
                Some(node) if self.mine(node.id) => {
                    if node.dir && touched.emptied && lower_dir {
                        self.opaque.insert(key.clone());
                    }
                    self.out.insert(key, Out::Own(*node));
                }
                // Only what was below it went: an opaque directory.
                Some(node) if node.dir && touched.emptied && lower_dir => {
                    self.opaque.insert(key.clone());
                    self.out.insert(key, Out::Dir(*node));
                }
                Some(_) => {}
                None if touched.before.is_some() && !self.bottom => gone.push(key),
                None => {}
            }
        }
        let root_opaque = journal.root_emptied && !self.bottom;
        for key in gone {
            if shows_through(self.tree, &self.opaque, root_opaque, &key) {
                self.out.insert(key, Out::Whiteout);
            }
        }
        root_opaque
    }

    /// The layer's hard links to data below it, each with the paths below that share
    /// that data (which the layer then holds too, as [`Out::Mate`]).
    fn links_below(&mut self) -> Vec<CopyUp> {
        let mut copies: BTreeMap<EntryId, CopyUp> = BTreeMap::new();
        for (key, what) in &self.out {
            if let Out::Own(Node {
                id,
                data: Some(data),
                ..
            }) = *what
            {
                if !self.mine(data) {
                    let copy = copies.entry(data).or_insert_with(|| CopyUp {
                        data,
                        links: Vec::new(),
                        mates: Vec::new(),
                    });
                    copy.links.push((id, key.clone()));
                }
            }
        }
        if copies.is_empty() {
            return Vec::new();
        }
        for (key, node) in &self.tree.map {
            let data = node.data.unwrap_or(node.id);
            if self.mine(node.id) || node.dir {
                continue;
            }
            if let Some(copy) = copies.get_mut(&data) {
                copy.mates.push(key.clone());
                self.out.insert(key.clone(), Out::Mate);
            }
        }
        copies.into_values().collect()
    }

    /// Where each path goes in the layer's tar: an entry's action, a parent made before
    /// its entry, a copied directory at the head, a whiteout at the tail. Links within
    /// the layer are grouped as flattening groups them.
    fn place(self, keeper: &mut Keeper) -> (LayerPlan, u64) {
        let mut lp = LayerPlan {
            range: self.range.clone(),
            plan: Plan::default(),
            head: Vec::new(),
            tail: Vec::new(),
            root_opaque: false,
        };
        let plan = &mut lp.plan;
        let mut groups: BTreeMap<EntryId, Vec<(Vec<u8>, EntryId, u64)>> = BTreeMap::new();
        let mut target_paths = HashMap::new();
        let mut bytes = 0u64;
        for (key, what) in self.out {
            let opaque = self.opaque.contains(&key);
            let path = slashes(key);
            match what {
                Out::Own(node) if node.made => {
                    if opaque {
                        plan.opaque_dirs.insert(path.clone());
                    }
                    plan.parents.entry(node.id).or_default().push(path);
                }
                Out::Own(node) => match node.data {
                    None => {
                        if opaque {
                            plan.opaque.insert(node.id);
                        }
                        bytes = bytes.saturating_add(node.size);
                        plan.actions.insert(node.id, Action::Write);
                        target_paths.insert(node.id, path);
                    }
                    Some(data) if self.range.contains(&(data.layer as usize)) => {
                        let group = groups.entry(data).or_default();
                        group.push((path, node.id, node.size));
                    }
                    Some(_) => {} // copied up: `copy_up`
                },
                Out::Mate => {}
                Out::Dir(node) => {
                    keeper.want_header.insert(node.id);
                    lp.head.push(Extra::Dir {
                        path,
                        from: node.id,
                        made: node.made,
                        opaque,
                    });
                }
                Out::Whiteout => lp.tail.push(path),
            }
        }
        bytes = bytes.saturating_add(link_groups(groups, &target_paths, &mut plan.actions));
        (lp, bytes)
    }
}

/// Plans the copy up of data below the layer that its hard links share: written right
/// before the first link (in tar order) under the first of the paths below that share it,
/// those others linked to it, or, when none is left, by the first link itself; the links
/// link there. Gives the bytes it writes.
fn copy_up(tree: &Tree, copy: CopyUp, plan: &mut Plan, keeper: &mut Keeper) -> u64 {
    let CopyUp {
        data,
        mut links,
        mates,
    } = copy;
    links.sort();
    let (first, first_key) = links[0].clone();
    keeper.want_header.insert(data);
    keeper.want_data.insert(data);
    let holder = match mates.split_first() {
        None => {
            plan.actions.insert(first, Action::Copy(data));
            slashes(first_key.clone())
        }
        Some((holder, others)) => {
            let holder = slashes(holder.clone());
            let before = plan.before.entry(first).or_default();
            before.push(Extra::Data {
                path: holder.clone(),
                data,
            });
            for mate in others {
                before.push(Extra::Link {
                    path: slashes(mate.clone()),
                    target: holder.clone(),
                    data,
                });
            }
            plan.actions.insert(first, Action::Link(holder.clone()));
            holder
        }
    };
    for (id, _) in &links[1..] {
        plan.actions.insert(*id, Action::Link(holder.clone()));
    }
    tree.get(&first_key).map_or(0, |n| n.size)
}

/// Whether a path that went would still show through from below without a whiteout:
/// every directory above it is there, none opaque.
fn shows_through(tree: &Tree, opaque: &HashSet<Vec<u8>>, root_opaque: bool, key: &[u8]) -> bool {
    if root_opaque {
        return false;
    }
    let mut at = 0;
    while let Some(sep) = key[at..].iter().position(|&b| b == SEP) {
        let parent = &key[..at + sep];
        match tree.get(parent) {
            Some(node) if node.dir && !opaque.contains(parent) => {}
            _ => return false,
        }
        at += sep + 1;
    }
    true
}

/// Adds the directories that what the layer holds lies in and that it does not list:
/// copied from below, as overlay shows the upper layer's directory.
fn add_parents(tree: &Tree, out: &mut BTreeMap<Vec<u8>, Out>) {
    let keys: Vec<Vec<u8>> = out.keys().cloned().collect();
    for key in keys {
        let mut at = 0;
        while let Some(sep) = key[at..].iter().position(|&b| b == SEP) {
            let parent = &key[..at + sep];
            if !out.contains_key(parent) {
                if let Some(node) = tree.get(parent).filter(|n| n.dir) {
                    out.insert(parent.to_vec(), Out::Dir(*node));
                }
            }
            at += sep + 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{layer, MemLayers};
    use super::*;
    use std::collections::BTreeMap;

    /// Output layers in memory.
    #[derive(Default)]
    struct Tars {
        current: Vec<u8>,
        done: Vec<(Vec<u8>, String)>,
    }

    impl Write for Tars {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.current.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl LayerSink for Tars {
        fn end_layer(&mut self, diff_id: &str) -> io::Result<()> {
            let tar = std::mem::take(&mut self.current);
            self.done.push((tar, diff_id.to_string()));
            Ok(())
        }
    }

    fn split(layers: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
        split_at_most(layers, MAX_LAYERS)
    }

    fn split_at_most(layers: Vec<Vec<u8>>, max: usize) -> Vec<Vec<u8>> {
        let mut tars = Tars::default();
        write_at_most(&MemLayers(layers), &Limits::default(), &mut tars, max).unwrap();
        assert!(tars.current.is_empty());
        tars.done.into_iter().map(|(tar, _)| tar).collect()
    }

    /// What a path holds in a tree: kind, content or link target, mode, and the
    /// hard-link group (the sorted paths sharing its data).
    type View = BTreeMap<String, (char, String, u32, Vec<String>)>;

    /// An entry of a tar: (path, kind, content or link target, mode).
    fn entries(tar: &[u8]) -> Vec<(String, char, String, u32)> {
        let mut archive = tar::Archive::new(tar);
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let path = e.path().unwrap().to_string_lossy().into_owned();
                let path = path.trim_end_matches('/').to_string();
                let mode = e.header().mode().unwrap();
                let kind = e.header().entry_type();
                let (kind, text) = if kind.is_dir() {
                    ('d', String::new())
                } else if kind.is_symlink() || kind.is_hard_link() {
                    let link = e.link_name().unwrap().unwrap();
                    let link = link.to_string_lossy().into_owned();
                    (if kind.is_symlink() { 'l' } else { 'h' }, link)
                } else {
                    let mut text = String::new();
                    e.read_to_string(&mut text).unwrap();
                    ('f', text)
                };
                (path, kind, text, mode)
            })
            .collect()
    }

    /// The tree a flattened tar extracts to.
    fn view_of_flat(tar: &[u8]) -> View {
        let mut view = View::new();
        let mut inodes: HashMap<String, usize> = HashMap::new();
        for (n, (path, kind, text, mode)) in entries(tar).into_iter().enumerate() {
            // The stub makes the directories a tar does not list, 0755.
            let mut at = 0;
            while let Some(sep) = path[at..].find('/') {
                let parent = path[..at + sep].to_string();
                inodes.entry(parent.clone()).or_insert(usize::MAX - n - at);
                view.entry(parent)
                    .or_insert(('d', String::new(), 0o755, Vec::new()));
                at += sep + 1;
            }
            if kind == 'h' {
                let (k, content, m, _) = view[&text].clone();
                inodes.insert(path.clone(), inodes[&text]);
                view.insert(path, (k, content, m, Vec::new()));
            } else {
                inodes.insert(path.clone(), n);
                view.insert(path, (kind, text, mode, Vec::new()));
            }
        }
        with_groups(view, &inodes)
    }

    /// Fills in each path's hard-link group: the paths of the same inode.
    fn with_groups(mut view: View, inodes: &HashMap<String, usize>) -> View {
        let mut groups: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        for path in view.keys() {
            groups.entry(inodes[path]).or_default().push(path.clone());
        }
        for members in groups.into_values().filter(|m| m.len() > 1) {
            for m in &members {
                view.get_mut(m).unwrap().3 = members.clone();
            }
        }
        view
    }

    /// The tree overlay shows of layer tars stacked bottom first: a layer's whiteouts
    /// and opaque markers hide what is below it, whatever their order in its tar; a
    /// directory over a directory merges; anything else hides what is below. Checks
    /// that each layer is one overlay can stack.
    fn view_of_overlay(tars: &[Vec<u8>]) -> View {
        let mut view = View::new();
        let mut inodes: HashMap<String, usize> = HashMap::new();
        let below = |view: &View, dir: &str| -> Vec<String> {
            let prefix = if dir.is_empty() {
                String::new()
            } else {
                format!("{dir}/")
            };
            view.keys()
                .filter(|k| k.starts_with(&prefix) && k.as_str() != dir)
                .cloned()
                .collect()
        };
        let mut inode = 0;
        for (n, tar) in tars.iter().enumerate() {
            let all = entries(tar);
            let mut upper = View::new();
            let mut upper_inodes: HashMap<String, usize> = HashMap::new();
            for (path, kind, text, mode) in &all {
                inode += 1;
                let (dir, name) = match path.rsplit_once('/') {
                    Some((d, n)) => (d.to_string(), n),
                    None => (String::new(), path.as_str()),
                };
                if name == ".wh..wh..opq" {
                    assert!(n > 0, "an opaque marker in the bottom layer");
                    for k in below(&view, &dir) {
                        view.remove(&k);
                    }
                } else if let Some(hidden) = name.strip_prefix(".wh.") {
                    assert!(n > 0, "a whiteout in the bottom layer");
                    let target = if dir.is_empty() {
                        hidden.to_string()
                    } else {
                        format!("{dir}/{hidden}")
                    };
                    assert!(view.contains_key(&target), "whiteout of nothing {target}");
                    assert!(
                        !all.iter().any(|e| e.0 == target),
                        "{target} and its whiteout in one layer"
                    );
                    for k in below(&view, &target) {
                        view.remove(&k);
                    }
                    view.remove(&target);
                } else {
                    if let Some((parent, _)) = path.rsplit_once('/') {
                        assert!(
                            all.iter().any(|e| e.0 == parent && e.1 == 'd'),
                            "{path} without its parent in layer {n}"
                        );
                    }
                    if *kind == 'h' {
                        let (k, content, m, _) = upper
                            .get(text)
                            .unwrap_or_else(|| panic!("link {path} to {text}, not in layer {n}"))
                            .clone();
                        upper_inodes.insert(path.clone(), upper_inodes[text]);
                        upper.insert(path.clone(), (k, content, m, Vec::new()));
                    } else {
                        upper_inodes.insert(path.clone(), inode);
                        upper.insert(path.clone(), (*kind, text.clone(), *mode, Vec::new()));
                    }
                }
            }
            for (path, what) in upper {
                if what.0 != 'd' {
                    for k in below(&view, &path) {
                        view.remove(&k);
                    }
                }
                inodes.insert(path.clone(), upper_inodes[&path]);
                view.insert(path, what);
            }
        }
        with_groups(view, &inodes)
    }

    fn flat_view(layers: &[Vec<u8>]) -> View {
        let mut out = Vec::new();
        flatten(&MemLayers(layers.to_vec()), &Limits::default(), &mut out).unwrap();
        view_of_flat(&out)
    }

    /// Splits `layers`, checks that overlay shows what flattening gives, and that
    /// flattening the split layers gives it too; gives the split layers' entries.
    fn check(layers: Vec<Vec<u8>>) -> Vec<Vec<(String, char, String, u32)>> {
        let tars = split(layers.clone());
        let flat = flat_view(&layers);
        assert_eq!(view_of_overlay(&tars), flat, "overlay");
        assert_eq!(flat_view(&tars), flat, "flattened again");
        tars.iter().map(|t| entries(t)).collect()
    }

    fn names(entries: &[(String, char, String, u32)]) -> Vec<String> {
        entries
            .iter()
            .map(|(p, k, t, _)| match k {
                'h' | 'l' => format!("{p} {k} {t}"),
                _ => format!("{p} {k}"),
            })
            .collect()
    }

    #[test]
    fn a_layer_holds_its_changes_and_whiteouts() {
        let out = check(vec![
            layer(&[
                ("./", 'd', ""),
                ("./etc/", 'd', ""),
                ("./etc/a", 'f', "a"),
                ("./etc/gone", 'f', "x"),
                ("bin/", 'd', ""),
                ("bin//sh", 'f', "sh"),
            ]),
            layer(&[
                ("etc/new", 'f', "n"),
                ("etc/.wh.gone", 'f', ""),
                ("bin/sh", 'f', "v2"),
            ]),
        ]);
        assert_eq!(
            names(&out[0]),
            ["etc d", "etc/a f", "etc/gone f", "bin d", "bin/sh f"]
        );
        // etc/ and bin/ copied from below, the whiteout last.
        assert_eq!(
            names(&out[1]),
            ["bin d", "etc d", "etc/new f", "bin/sh f", "etc/.wh.gone f"]
        );
    }

    #[test]
    fn opaque_directories_and_replaced_directories() {
        let out = check(vec![
            layer(&[
                ("o/", 'd', ""),
                ("o/old", 'f', "old"),
                ("r/", 'd', ""),
                ("r/x", 'f', "x"),
                ("w/", 'd', ""),
                ("w/y", 'f', "y"),
            ]),
            layer(&[
                ("o/.wh..wh..opq", 'f', ""),
                ("o/new", 'f', "new"),
                // A directory replaced by a file and made again.
                ("r", 'f', "file"),
                ("r/", 'd', ""),
                ("r/z", 'f', "z"),
                // Deleted and made again in one layer.
                (".wh.w", 'f', ""),
                ("w/", 'd', ""),
            ]),
        ]);
        assert_eq!(
            names(&out[1]),
            [
                "o d",
                "o/.wh..wh..opq f",
                "o/new f",
                "r d",
                "r/.wh..wh..opq f",
                "r/z f",
                "w d",
                "w/.wh..wh..opq f",
            ]
        );
    }

    #[test]
    fn whiteouts_of_nothing_and_parents_made() {
        let out = check(vec![
            layer(&[("a/b/f", 'f', "f")]),
            layer(&[
                ("no/such/.wh.x", 'f', ""),
                ("a/b/.wh.f", 'f', ""),
                (".wh.ghost", 'f', ""),
            ]),
            layer(&[("a/b/g", 'f', "g")]),
        ]);
        assert_eq!(names(&out[0]), ["a d", "a/b d", "a/b/f f"]);
        assert_eq!(
            names(&out[1]),
            ["a d", "a/b d", "no d", "no/such d", "a/b/.wh.f f"]
        );
        // The made directories, copied as made (0755).
        assert_eq!(names(&out[2]), ["a d", "a/b d", "a/b/g f"]);
        assert!(out[2].iter().all(|e| e.1 != 'd' || e.3 == 0o755));
    }

    #[test]
    fn hard_links_to_lower_layers_copy_the_data_up() {
        let out = check(vec![
            layer(&[
                ("d/", 'd', ""),
                ("d/base", 'f', "base"),
                ("d/mate", 'h', "d/base"),
                ("d/alone", 'f', "alone"),
            ]),
            layer(&[
                ("d/l1", 'h', "d/base"),
                ("d/l2", 'h', "d/l1"),
                ("d/l3", 'h', "d/alone"),
            ]),
        ]);
        assert_eq!(
            names(&out[1]),
            [
                "d d",
                "d/base f",
                "d/mate h d/base",
                "d/l1 h d/base",
                "d/l2 h d/base",
                "d/alone f",
                "d/l3 h d/alone",
            ]
        );
        // A link whose lower data lost its every other path: the link holds the copy.
        let out = check(vec![
            layer(&[("f", 'f', "old")]),
            layer(&[("l", 'h', "f"), ("f", 'f', "new")]),
        ]);
        assert_eq!(names(&out[1]), ["l f", "f f"]);
    }

    #[test]
    fn links_within_a_layer_and_replaced_targets() {
        check(vec![
            layer(&[("f", 'f', "old"), ("keep", 'f', "k")]),
            layer(&[
                ("l1", 'h', "f"),
                ("l2", 'h', "f"),
                ("a", 'f', "a"),
                ("b", 'h', "a"),
            ]),
            layer(&[("f", 'f', "new"), ("a", 'f', "a2"), ("c", 'h', "b")]),
            layer(&[(".wh.keep", 'f', ""), ("l1", 'f', "l1 now")]),
        ]);
    }

    #[test]
    fn files_and_directories_replace_each_other() {
        check(vec![
            layer(&[
                ("d/", 'd', ""),
                ("d/x", 'f', "x"),
                ("s", 'l', "d"),
                ("f", 'f', "f"),
            ]),
            layer(&[
                ("d", 'l', "elsewhere"),
                ("s/", 'd', ""),
                ("s/y", 'f', "y"),
                ("f/g", 'f', "g"),
            ]),
            layer(&[("d/", 'd', ""), ("s", 'f', "s")]),
        ]);
    }

    #[test]
    fn copies_count_toward_the_size_limit() {
        let layers = MemLayers(vec![layer(&[("a", 'f', "abc")]), layer(&[("l", 'h', "a")])]);
        let limits = Limits { max_size: 5 };
        let err = write_layers(&layers, &limits, &mut Tars::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("the layers' files (6 bytes)"), "{err}");
        let limits = Limits { max_size: 6 };
        write_layers(&layers, &limits, &mut Tars::default()).unwrap();
    }

    #[test]
    fn same_base_same_bytes() {
        let base = layer(&[("etc/", 'd', ""), ("etc/os", 'f', "debian")]);
        let one = split(vec![base.clone(), layer(&[("etc/a", 'f', "a")])]);
        let two = split(vec![
            base.clone(),
            layer(&[("b", 'f', "b"), ("etc/.wh.os", 'f', "")]),
        ]);
        assert_eq!(one[0], two[0]);
        assert_ne!(one[1], two[1]);
        // Deterministic.
        assert_eq!(one, split(vec![base, layer(&[("etc/a", 'f', "a")])]));
    }

    #[test]
    fn empty_layers_are_left_out_but_one() {
        let empty = layer(&[]);
        let tars = split(vec![
            empty.clone(),
            layer(&[("a", 'f', "a")]),
            empty.clone(),
        ]);
        assert_eq!(tars.len(), 1);
        let tars = split(vec![empty.clone(), empty]);
        assert_eq!(tars.len(), 1);
        assert_eq!(tars[0], vec![0u8; 1024]);
    }

    #[test]
    fn more_than_64_layers_are_squashed_into_the_64th() {
        assert_eq!(output_layers(3, 64), [0..1, 1..2, 2..3]);
        assert_eq!(output_layers(70, 64).len(), 64);
        assert_eq!(output_layers(70, 64)[63], 63..70);
        assert!(output_layers(0, 64).is_empty());
        let mut layers: Vec<Vec<u8>> = (0..70)
            .map(|i| {
                let name = format!("d/f{i}");
                layer(&[("d/", 'd', ""), (name.as_str(), 'f', "x")])
            })
            .collect();
        // In the squashed part: deletions of lower and squashed files, links across.
        layers.push(layer(&[
            ("d/.wh.f2", 'f', ""),
            ("d/.wh.f65", 'f', ""),
            ("d/l", 'h', "d/f66"),
        ]));
        layers.push(layer(&[("d/m", 'h', "d/f1"), ("d/f66", 'f', "new")]));
        let out = check(layers);
        assert_eq!(out.len(), 64);
        let top = names(&out[63]);
        assert!(top.contains(&"d/.wh.f2 f".to_string()), "{top:?}");
        assert!(!top.iter().any(|n| n.contains("f65")), "{top:?}");
        assert!(top.contains(&"d/f63 f".to_string()), "{top:?}");
    }

    /// Random small images: overlay of the split layers shows what flattening gives.
    #[test]
    fn random_images_stack_as_they_flatten() {
        let paths = ["a", "b", "a/b", "a/c", "b/a", "a/b/c", "c"];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        for round in 0..2000 {
            let count = 1 + next(6);
            let mut layers = Vec::new();
            for _ in 0..count {
                let mut entries: Vec<(String, char, String)> = Vec::new();
                for _ in 0..next(6) {
                    let path = paths[next(paths.len())].to_string();
                    let other = paths[next(paths.len())].to_string();
                    let (dir, name) = match path.rsplit_once('/') {
                        Some((d, n)) => (format!("{d}/"), n.to_string()),
                        None => (String::new(), path.clone()),
                    };
                    entries.push(match next(7) {
                        0 | 1 => (format!("{path}/"), 'd', String::new()),
                        2 => (path, 'f', format!("{round}")),
                        3 => (path, 'l', other),
                        4 => (path, 'h', other),
                        5 => (format!("{dir}.wh.{name}"), 'f', String::new()),
                        _ => (format!("{path}/.wh..wh..opq"), 'f', String::new()),
                    });
                }
                let refs: Vec<(&str, char, &str)> = entries
                    .iter()
                    .map(|(p, k, t)| (p.as_str(), *k, t.as_str()))
                    .collect();
                layers.push(layer(&refs));
            }
            // Now and then squashed into fewer output layers.
            let max = if next(3) == 0 {
                1 + next(3)
            } else {
                MAX_LAYERS
            };
            let tars = split_at_most(layers.clone(), max);
            assert!(tars.len() <= max);
            let flat = flat_view(&layers);
            let shown = std::panic::catch_unwind(|| view_of_overlay(&tars));
            match shown {
                Ok(view) if view == flat => {}
                other => {
                    let listing: Vec<_> = layers
                        .iter()
                        .map(|l| super::super::tests::listing(l))
                        .collect();
                    let split: Vec<_> = tars.iter().map(|t| names(&entries(t))).collect();
                    panic!("round {round}: layers {listing:?}\nsplit {split:?}\nflat {flat:?}\noverlay {:?}", other.ok());
                }
            }
        }
    }
}
