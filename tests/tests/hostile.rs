//! Issue 6, end to end: hostile tars, damaged packed files, faults during the first
//! extraction, and what the container's processes may do.
//!
//! The hostile tars are written block by block (`binctr_tests::rawtar`: the tar crate's
//! Builder refuses `..` and the like). They are packed with dist/binctr-pack when it
//! takes them; when it refuses one (a truncated entry), the packed file is assembled by
//! hand from the stub, an lz4 frame of the tar (the `lz4` command), a config and a
//! footer (docs/FORMAT.md), so the stub's extraction is what is tested either way.
//!
//! Every extraction runs twice: with the default id mapping (subordinate ids when
//! /etc/subuid grants some: extraction inside a user namespace) and with
//! `--userns single` (extraction as the user, outside any namespace).

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use binctr_tests::rawtar::{
    assemble_by_hand, busybox_bytes, lz4_frame, pack_tar, write_runnable, Footer, Parts, RawTar,
    FOOTER_LEN,
};
use binctr_tests::{cache_entries, s, temp_entries, wait_until, Env, Output, Test};

/// build/debian-rootfs.tar (~170 MB) packed once per test binary.
fn debian() -> &'static Path {
    static PACKED: OnceLock<PathBuf> = OnceLock::new();
    PACKED.get_or_init(|| {
        let env = Env::get();
        let dir = env.base.join("shared-debian");
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let out = dir.join("debian");
        let tar = env.fixture("debian-rootfs.tar");
        // Format 1: the faults below are those of its extraction (tests/layers_run.rs
        // runs format 2).
        let status = Command::new(env.packer())
            .arg(&tar)
            .arg("--flatten")
            .arg("-o")
            .arg(&out)
            .stdin(Stdio::null())
            .status()
            .expect("run binctr-pack");
        assert!(status.success(), "packing {} failed", tar.display());
        fs::set_permissions(&out, fs::Permissions::from_mode(0o755)).unwrap();
        env.give_to_user(&out);
        out
    })
}

// ---- what must not change ---------------------------------------------------------------

/// Files and directories the test user can write outside the cache, recorded before a
/// hostile run and compared after it.
struct Watch {
    /// (path, content, inode, mtime, mode, links)
    files: Vec<(PathBuf, Vec<u8>, u64, i64, u32, u64)>,
    /// (dir, mode, mtime)
    dirs: Vec<(PathBuf, u32, i64)>,
    /// Everything below the test dir but the cache.
    tree: BTreeSet<PathBuf>,
    tmp: BTreeSet<String>,
    dir: PathBuf,
    cache: PathBuf,
}

impl Watch {
    /// Makes the canaries: `canary` beside the cache, `canary` and `.bashrc` in $HOME,
    /// and `victim-dir` (0700) beside the cache.
    fn new(t: &Test) -> Watch {
        for (path, content) in [
            (t.dir.join("canary"), &b"canary beside the cache\n"[..]),
            (t.home().join("canary"), b"canary in HOME\n"),
            (t.home().join(".bashrc"), b"# the user's shell setup\n"),
        ] {
            if !path.exists() {
                fs::write(&path, content).unwrap();
                fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
                t.env.give_to_user(&path);
            }
        }
        // The cache exists before the watch starts: its creation by the first run would
        // change the test dir's mtime, which the watch reads as a write outside it.
        if !t.cache().exists() {
            fs::create_dir_all(t.cache()).unwrap();
            fs::set_permissions(t.cache(), fs::Permissions::from_mode(0o700)).unwrap();
            t.env.give_to_user(&t.cache());
        }
        let victim = t.dir.join("victim-dir");
        if !victim.exists() {
            fs::create_dir(&victim).unwrap();
            fs::set_permissions(&victim, fs::Permissions::from_mode(0o700)).unwrap();
            t.env.give_to_user(&victim);
        }
        let files = [
            t.dir.join("canary"),
            t.home().join("canary"),
            t.home().join(".bashrc"),
        ]
        .into_iter()
        .map(|p| {
            let m = fs::metadata(&p).unwrap();
            let content = fs::read(&p).unwrap();
            (p, content, m.ino(), m.mtime(), m.mode(), m.nlink())
        })
        .collect();
        let dirs = [t.dir.clone(), t.home(), victim]
            .into_iter()
            .map(|p| {
                let m = fs::metadata(&p).unwrap();
                (p, m.mode(), m.mtime())
            })
            .collect();
        Watch {
            files,
            dirs,
            tree: tree(&t.dir, &t.cache()),
            tmp: tmp_names(),
            dir: t.dir.clone(),
            cache: t.cache(),
        }
    }

    /// Fails the test when a canary changed or a file appeared outside the cache.
    #[track_caller]
    fn check(&self, context: &str) {
        for (path, content, ino, mtime, mode, nlink) in &self.files {
            let m = fs::metadata(path)
                .unwrap_or_else(|e| panic!("{context}: canary {} is gone: {e}", path.display()));
            assert_eq!(
                (
                    &fs::read(path).unwrap(),
                    m.ino(),
                    m.mtime(),
                    m.mode(),
                    m.nlink()
                ),
                (content, *ino, *mtime, *mode, *nlink),
                "{context}: canary {} changed (content, inode, mtime, mode, links)",
                path.display()
            );
        }
        for (path, mode, mtime) in &self.dirs {
            let m = fs::metadata(path).unwrap();
            assert_eq!(
                (m.mode(), m.mtime()),
                (*mode, *mtime),
                "{context}: {} changed (mode, mtime)",
                path.display()
            );
        }
        let now = tree(&self.dir, &self.cache);
        let new: Vec<_> = now.difference(&self.tree).collect();
        assert!(
            new.is_empty(),
            "{context}: files appeared outside the cache: {new:?}"
        );
        let new: Vec<_> = tmp_names()
            .difference(&self.tmp)
            .filter(|n| !n.starts_with("binctr-"))
            .cloned()
            .collect();
        assert!(new.is_empty(), "{context}: files appeared in /tmp: {new:?}");
    }
}

/// Every path below `dir`, not descending into `skip`.
fn tree(dir: &Path, skip: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if p == skip {
                continue;
            }
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p.clone());
            }
            out.insert(p);
        }
    }
    out
}

fn tmp_names() -> BTreeSet<String> {
    fs::read_dir("/tmp")
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The cache holds nothing but lock files: no entry, finished or half-made.
#[track_caller]
fn assert_no_cache_entry(t: &Test, context: &str) {
    let left = leftovers(&t.cache());
    assert!(
        left.is_empty(),
        "{context}: the cache {} holds {left:?} (only lock files may stay)",
        t.cache().display()
    );
}

/// What the cache holds but lock files: its entries, and those of the layer store
/// (`layers/`, `images/`: format 2) by their path below it.
fn leftovers(cache: &Path) -> Vec<String> {
    let mut left = Vec::new();
    for (name, path) in cache_entries(cache) {
        if name.ends_with(".lock") {
            continue;
        }
        if name != "layers" && name != "images" {
            left.push(name);
            continue;
        }
        for (inner, _) in cache_entries(&path) {
            if !inner.ends_with(".lock") {
                left.push(format!("{name}/{inner}"));
            }
        }
    }
    left
}

/// The extracted trees: format 1's `<entry>/rootfs`, format 2's `layers/<key>/root`.
fn extracted_trees(cache: &Path) -> Vec<PathBuf> {
    let layers = finished_entries(&cache.join("layers"))
        .into_iter()
        .map(|key| cache.join("layers").join(key).join("root"));
    finished_entries(cache)
        .into_iter()
        .filter(|name| name != "layers" && name != "images")
        .map(|name| cache.join(name).join("rootfs"))
        .chain(layers)
        .collect()
}

/// The finished entries of the cache (`<digest>[-subid-...]` directories).
fn finished_entries(cache: &Path) -> Vec<String> {
    cache_entries(cache)
        .into_iter()
        .filter(|(name, path)| !name.starts_with('.') && !name.ends_with(".lock") && path.is_dir())
        .map(|(name, _)| name)
        .collect()
}

/// After a successful run: one entry per mapping used, each holding only what the stub
/// puts there, and no temp dir.
#[track_caller]
fn assert_entries_are_clean(t: &Test, context: &str) {
    for dir in [
        t.cache(),
        t.cache().join("layers"),
        t.cache().join("images"),
    ] {
        assert!(
            temp_entries(&dir).is_empty(),
            "{context}: temp dirs left: {:?}",
            cache_entries(&dir)
        );
    }
    let store = cache_entries(&t.cache().join("layers"))
        .into_iter()
        .map(|e| (e, &["root"][..]));
    let images = cache_entries(&t.cache().join("images"))
        .into_iter()
        .map(|e| (e, &["base", "image.json", "mnt"][..]));
    let flat = cache_entries(&t.cache())
        .into_iter()
        .filter(|(name, _)| name != "layers" && name != "images")
        .map(|e| (e, &["info", "mnt", "rootfs"][..]));
    for ((name, path), expected) in flat.chain(store).chain(images) {
        if name.ends_with(".lock") {
            continue;
        }
        let inside: BTreeSet<String> = cache_entries(&path).into_iter().map(|(n, _)| n).collect();
        let expected: BTreeSet<String> = expected.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            inside,
            expected,
            "{context}: the cache entry {} holds other than {expected:?}",
            path.display()
        );
    }
}

/// Exit 125, nothing on stdout, one line on stderr that starts with `binctr: ` and
/// contains `needle`.
#[track_caller]
fn assert_one_line_error(out: &Output, needle: &str) {
    out.assert_code(125);
    assert!(out.stdout.is_empty(), "nothing on stdout:\n{out:?}");
    let err = out.stderr_text();
    assert!(
        err.starts_with("binctr: ") && err.ends_with('\n') && err.matches('\n').count() == 1,
        "expected exactly one line 'binctr: ...' on stderr:\n{out:?}"
    );
    assert!(
        err.contains(needle),
        "the error line should contain {needle:?}:\n{out:?}"
    );
}

/// The id mappings a hostile image is run with: the default (subordinate ids when
/// /etc/subuid has some: extraction inside a user namespace) and a single mapping
/// (extraction outside any namespace).
const MAPPINGS: [&[&str]; 2] = [&[], &["--userns", "single"]];

fn mapping_name(flags: &[&str]) -> &'static str {
    if flags.is_empty() {
        "default mapping"
    } else {
        "--userns single"
    }
}

/// Runs packed hostile images with each mapping; expects each to be refused with one
/// line naming its entry, no cache entry left, and nothing written outside the cache.
/// An escape fails the test at once; the other problems are collected over all the
/// images, so that one wrong message does not hide the next image's result.
fn expect_refused(t: &Test, cases: &[(String, PathBuf)]) {
    let mut problems = Vec::new();
    for (entry, packed) in cases {
        let watch = Watch::new(t);
        for flags in MAPPINGS {
            let context = format!("{} ({})", packed.display(), mapping_name(flags));
            let out = t.cmd(packed).args(flags).args(["echo", "ran"]).run();
            watch.check(&context);
            let err = out.stderr_text();
            let mut wrong = Vec::new();
            if out.code != Some(125) {
                wrong.push("exit code is not 125".to_string());
            }
            if !out.stdout.is_empty() {
                wrong.push("output on stdout".to_string());
            }
            if !(err.starts_with("binctr: ")
                && err.ends_with('\n')
                && err.matches('\n').count() == 1)
            {
                wrong.push("not exactly one line 'binctr: ...' on stderr".to_string());
            }
            if !err.contains(entry.as_str()) {
                wrong.push(format!("the error does not name the entry {entry:?}"));
            }
            if !err.contains("cannot extract") {
                wrong.push("the error does not say 'cannot extract'".to_string());
            }
            let left = leftovers(&t.cache());
            if !left.is_empty() {
                wrong.push(format!("the cache holds {left:?}"));
            }
            if !wrong.is_empty() {
                problems.push(format!("{context}: {}\n{out:?}", wrong.join("; ")));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} of {} runs went wrong:\n{}",
        problems.len(),
        cases.len() * MAPPINGS.len(),
        problems.join("\n")
    );
}

/// Runs a packed hostile image with each mapping; expects it to run `script` (which
/// checks, inside, where the entries landed) and print `expected`, with nothing written
/// outside the cache.
fn expect_harmless(t: &Test, packed: &Path, script: &str, expected: &str) {
    let watch = Watch::new(t);
    for flags in MAPPINGS {
        let context = format!("{} ({})", packed.display(), mapping_name(flags));
        let out = t.cmd(packed).args(flags).args(["sh", "-c", script]).run();
        watch.check(&context);
        assert!(
            out.code == Some(0) && out.stdout_text() == expected,
            "{context}: expected exit 0 and stdout {expected:?}:\n{out:?}"
        );
        assert_entries_are_clean(t, &context);
    }
}

/// `../` n times.
fn ups(n: usize) -> String {
    "../".repeat(n)
}

// ---- hostile tars -----------------------------------------------------------------------

#[test]
fn dotdot_entries_are_refused_and_write_nothing_outside() {
    let t = Test::new("dotdot");
    let deep = format!("{}tmp/hostile-pwned-{}", ups(24), std::process::id());
    let cases: Vec<(String, RawTar)> = vec![
        ("../pwned-dotdot".into(), {
            let mut tar = RawTar::on_busybox();
            tar.file(b"../pwned-dotdot", b"pwned\n");
            tar
        }),
        ("../../pwned-dotdot".into(), {
            let mut tar = RawTar::on_busybox();
            tar.file(b"../../pwned-dotdot", b"pwned\n");
            tar
        }),
        ("etc/../../pwned-dotdot".into(), {
            let mut tar = RawTar::on_busybox();
            tar.file(b"etc/../../pwned-dotdot", b"pwned\n");
            tar
        }),
        (deep.clone(), {
            let mut tar = RawTar::on_busybox();
            tar.file(deep.as_bytes(), b"pwned\n");
            tar
        }),
        ("../pwned-dir/".into(), {
            let mut tar = RawTar::on_busybox();
            tar.dir(b"../pwned-dir/", 0o777);
            tar
        }),
        ("../pwned-symlink".into(), {
            let mut tar = RawTar::on_busybox();
            tar.symlink(b"../pwned-symlink", b"/etc/passwd");
            tar
        }),
        ("./../pwned-first".into(), {
            // Before any other entry: nothing of the image is written yet.
            let mut tar = RawTar::new();
            tar.file(b"./../pwned-first", b"pwned\n");
            tar
        }),
    ];
    let packed: Vec<(String, PathBuf)> = cases
        .iter()
        .enumerate()
        .map(|(i, (entry, tar))| {
            (
                entry.clone(),
                pack_tar(&t, &tar.finish(), &format!("dotdot-{i}")),
            )
        })
        .collect();
    expect_refused(&t, &packed);
    assert!(
        !Path::new(&format!("/tmp/hostile-pwned-{}", std::process::id())).exists(),
        "an entry escaped to /tmp"
    );
}

#[test]
fn absolute_entries_land_inside_the_rootfs() {
    let t = Test::new("absolute");
    let host_target = t.dir.join("pwned-absolute");
    let mut tar = RawTar::on_busybox();
    tar.dir(b"/abs/", 0o755)
        .file(b"/abs/pwned-abs", b"abs\n")
        // An absolute path naming a host directory the user can write.
        .file(s(&host_target).as_bytes(), b"host path\n")
        .file(
            format!("/{}", s(&t.home().join(".profile"))).as_bytes(),
            b"home\n",
        );
    let packed = pack_tar(&t, &tar.finish(), "absolute");
    let script = format!(
        "cat /abs/pwned-abs {} {}",
        s(&host_target),
        s(&t.home().join(".profile"))
    );
    expect_harmless(&t, &packed, &script, "abs\nhost path\nhome\n");
    assert!(!Path::new("/abs").exists(), "/abs was created on the host");
    assert!(
        !host_target.exists(),
        "{} was written",
        host_target.display()
    );
    assert!(
        !t.home().join(".profile").exists(),
        "$HOME/.profile was written"
    );
}

/// Directory entries that recreate the host path `dir` inside the rootfs.
fn mirror(tar: &mut RawTar, dir: &Path) {
    let mut path = String::new();
    for part in dir.iter().skip(1) {
        path.push_str(part.to_str().unwrap());
        path.push('/');
        tar.dir(path.as_bytes(), 0o755);
    }
}

#[test]
fn symlinks_out_of_the_root_are_resolved_inside_it() {
    let t = Test::new("symlink_escape");
    let dir = s(&t.dir);
    let home = s(&t.home());
    let mut tar = RawTar::on_busybox();
    // The host paths the links name also exist inside the image, so that writes through
    // the links succeed, inside.
    mirror(&mut tar, &t.home());
    tar.symlink(b"esc-abs", dir.as_bytes())
        .file(b"esc-abs/pwned-sym-abs", b"1\n")
        .symlink(b"esc-rel", ups(12).trim_end_matches('/').as_bytes())
        .file(b"esc-rel/pwned-sym-rel", b"2\n")
        .symlink(b"esc-home", b"/home/..")
        .file(b"esc-home/pwned-sym-home", b"3\n")
        .symlink(
            b"esc-climb",
            format!("{}{}", ups(12).trim_end_matches('/'), dir).as_bytes(),
        )
        .file(b"esc-climb/pwned-sym-climb", b"4\n")
        .dir(b"d/", 0o755)
        .symlink(b"d/up", b"../../..")
        .file(format!("d/up{home}/pwned-sym-nested").as_bytes(), b"5\n")
        // A directory and a file created below a link to $HOME.
        .symlink(b"esc-dir", home.as_bytes())
        .dir(b"esc-dir/.ssh/", 0o777)
        .file(b"esc-dir/.ssh/authorized_keys", b"6\n")
        // A file entry over a link to a host file replaces the link.
        .symlink(b"over", format!("{dir}/canary").as_bytes())
        .file(b"over", b"7\n")
        // A directory entry over a link to a host directory: its mode and mtime must not
        // reach the host directory (tar crate RUSTSEC-2026-0067).
        .symlink(b"victim", format!("{dir}/victim-dir").as_bytes())
        .dir(b"victim/", 0o777);
    let packed = pack_tar(&t, &tar.finish(), "symlinks");
    let script = format!(
        "cat {dir}/pwned-sym-abs /pwned-sym-rel /pwned-sym-home {dir}/pwned-sym-climb \
         {home}/pwned-sym-nested {home}/.ssh/authorized_keys /over; \
         [ -d /victim ] && [ ! -L /victim ] && echo victim-is-a-dir"
    );
    expect_harmless(
        &t,
        &packed,
        &script,
        "1\n2\n3\n4\n5\n6\n7\nvictim-is-a-dir\n",
    );
    for name in ["pwned-sym-abs", "pwned-sym-climb"] {
        assert!(!t.dir.join(name).exists(), "{name} reached the host");
    }
    assert!(!t.home().join(".ssh").exists(), "$HOME/.ssh was created");
}

#[test]
fn writes_through_a_link_to_a_path_missing_inside_are_refused() {
    // The link's target exists on the host but not in the image: resolved inside, the
    // parent is missing, so the entry cannot be written; it must not go to the host.
    let t = Test::new("symlink_missing");
    let dir = s(&t.dir);
    let cases: Vec<(&str, RawTar)> = vec![
        ("esc-abs/pwned-missing-abs", {
            let mut tar = RawTar::on_busybox();
            tar.symlink(b"esc-abs", dir.as_bytes())
                .file(b"esc-abs/pwned-missing-abs", b"x\n");
            tar
        }),
        ("esc-rel/pwned-missing-rel", {
            let mut tar = RawTar::on_busybox();
            tar.symlink(
                b"esc-rel",
                format!("{}{}", ups(16).trim_end_matches('/'), dir).as_bytes(),
            )
            .file(b"esc-rel/pwned-missing-rel", b"x\n");
            tar
        }),
    ];
    let packed: Vec<(String, PathBuf)> = cases
        .iter()
        .enumerate()
        .map(|(i, (entry, tar))| {
            (
                entry.to_string(),
                pack_tar(&t, &tar.finish(), &format!("missing-{i}")),
            )
        })
        .collect();
    expect_refused(&t, &packed);
}

#[test]
fn hard_links_out_of_the_root_are_refused() {
    let t = Test::new("hardlink_escape");
    let canary = s(&t.dir.join("canary"));
    let cases: Vec<(&str, RawTar)> = vec![
        ("hl-dotdot", {
            let mut tar = RawTar::on_busybox();
            tar.hardlink(b"hl-dotdot", b"../../etc/passwd");
            tar
        }),
        ("hl-climb", {
            let mut tar = RawTar::on_busybox();
            let target = format!("{}{}", ups(12).trim_end_matches('/'), canary);
            tar.long_link(target.as_bytes()).hardlink(b"hl-climb", b"x");
            tar
        }),
        // An absolute target that exists on the host (and may be on the cache's file
        // system) but not in the image.
        ("hl-abs", {
            let mut tar = RawTar::on_busybox();
            tar.hardlink(b"hl-abs", canary.as_bytes());
            tar
        }),
        // Through a symlink to the host directory.
        ("hl-via-link", {
            let mut tar = RawTar::on_busybox();
            tar.symlink(b"sl", s(&t.dir).as_bytes())
                .hardlink(b"hl-via-link", b"sl/canary");
            tar
        }),
        // To an entry that comes later in the archive.
        ("hl-early", {
            let mut tar = RawTar::on_busybox();
            tar.hardlink(b"hl-early", b"later")
                .file(b"later", b"later\n");
            tar
        }),
        // To a directory.
        ("hl-dir", {
            let mut tar = RawTar::on_busybox();
            tar.hardlink(b"hl-dir", b"etc");
            tar
        }),
    ];
    let packed: Vec<(String, PathBuf)> = cases
        .iter()
        .enumerate()
        .map(|(i, (entry, tar))| {
            (
                entry.to_string(),
                pack_tar(&t, &tar.finish(), &format!("hardlink-{i}")),
            )
        })
        .collect();
    expect_refused(&t, &packed);
}

#[test]
fn hard_link_with_an_absolute_target_links_inside_the_rootfs() {
    let t = Test::new("hardlink_abs_inside");
    let mut tar = RawTar::on_busybox();
    tar.hardlink(b"hl-passwd", b"/etc/passwd")
        .symlink(b"sl", b"/etc")
        .hardlink(b"hl-via-inside-link", b"sl/group");
    let packed = pack_tar(&t, &tar.finish(), "hardlink-inside");
    expect_harmless(
        &t,
        &packed,
        "cmp /hl-passwd /etc/passwd && cmp /hl-via-inside-link /etc/group && echo same",
        "same\n",
    );
    let host = fs::metadata("/etc/passwd").unwrap();
    for tree in extracted_trees(&t.cache()) {
        let linked = tree.join("hl-passwd");
        let m = fs::symlink_metadata(&linked).unwrap();
        assert_ne!(
            (m.dev(), m.ino()),
            (host.dev(), host.ino()),
            "{} is the host's /etc/passwd",
            linked.display()
        );
    }
}

#[test]
fn device_nodes_are_skipped() {
    let t = Test::new("devices");
    let mut tar = RawTar::on_busybox();
    tar.node(b"evil-mem", b'3', (1, 1))
        .node(b"etc/evil-null", b'3', (1, 3))
        .node(b"evil-sda", b'4', (8, 0))
        .node(b"a-fifo", b'6', (0, 0));
    let packed = pack_tar(&t, &tar.finish(), "devices");
    expect_harmless(
        &t,
        &packed,
        "for f in /evil-mem /etc/evil-null /evil-sda; do [ -e $f ] && echo \"$f exists\"; done; \
         [ -p /a-fifo ] && echo fifo",
        "fifo\n",
    );
    for rootfs in extracted_trees(&t.cache()) {
        for name in ["evil-mem", "etc/evil-null", "evil-sda"] {
            assert!(
                fs::symlink_metadata(rootfs.join(name)).is_err(),
                "{} was created in the cache",
                rootfs.join(name).display()
            );
        }
    }
}

#[test]
fn names_with_nul_or_over_path_max_are_refused() {
    let t = Test::new("bad_names");
    let long: String = "a234567890/".repeat(400) + "pwned-long";
    assert!(long.len() > 4096);
    let long_target = "b234567890/".repeat(400) + "target";
    let cases: Vec<(&str, RawTar)> = vec![
        // What comes before the NUL is enough to name it.
        ("pwned-gnu", {
            let mut tar = RawTar::on_busybox();
            tar.long_name(b"pwned-gnu\0/../../../tmp/x")
                .file(b"ignored", b"x\n");
            tar
        }),
        ("pwned-pax", {
            let mut tar = RawTar::on_busybox();
            tar.pax(&[("path", b"pwned-pax\0/../../x")])
                .file(b"ignored", b"x\n");
            tar
        }),
        ("a234567890/a234567890/", {
            let mut tar = RawTar::on_busybox();
            tar.long_name(long.as_bytes()).file(b"ignored", b"x\n");
            tar
        }),
        ("long-target", {
            let mut tar = RawTar::on_busybox();
            tar.long_link(long_target.as_bytes())
                .symlink(b"long-target", b"ignored");
            tar
        }),
    ];
    let packed: Vec<(String, PathBuf)> = cases
        .iter()
        .enumerate()
        .map(|(i, (entry, tar))| {
            (
                entry.to_string(),
                pack_tar(&t, &tar.finish(), &format!("names-{i}")),
            )
        })
        .collect();
    expect_refused(&t, &packed);
}

#[test]
fn an_entry_name_cannot_add_lines_to_the_error() {
    // The refused name is printed in the error: a newline or a terminal escape in it
    // must not give a second line (or a forged one) on the user's terminal.
    let t = Test::new("name_newline");
    let mut tar = RawTar::on_busybox();
    tar.file(b"../pwned\nbinctr: all good\x1b[2K", b"x\n");
    let packed = pack_tar(&t, &tar.finish(), "newline");
    let watch = Watch::new(&t);
    let out = t.cmd(&packed).args(["echo", "ran"]).run();
    watch.check("newline in a name");
    assert_one_line_error(&out, "pwned");
    assert!(
        !out.stderr.contains(&0x1b),
        "a terminal escape from the image reached stderr:\n{out:?}"
    );
    assert_no_cache_entry(&t, "newline in a name");
}

#[test]
fn huge_size_with_short_data_is_refused() {
    let t = Test::new("huge_size");
    let cases: Vec<(&str, u64)> = vec![("huge-octal", 0o77777777777), ("huge-base256", 1 << 62)];
    let mut packed = Vec::new();
    for (i, (entry, size)) in cases.iter().enumerate() {
        let mut tar = RawTar::on_busybox();
        tar.header(entry.as_bytes(), b'0', 0o644, *size, b"", (0, 0));
        tar.data(&[b'x'; 1000]);
        // No more data, no end blocks: the stream ends inside the entry. The packer
        // refuses such a tar, so it is assembled by hand.
        packed.push((
            entry.to_string(),
            pack_tar(&t, &tar.bytes, &format!("huge-{i}")),
        ));
    }
    expect_refused(&t, &packed);
}

// ---- damaged packed files ---------------------------------------------------------------

/// Runs a damaged copy of the packed busybox and expects 125, one line containing
/// `needle`, and no cache entry.
fn expect_damaged(t: &Test, name: &str, bytes: &[u8], needle: &str) {
    let path = t.dir.join(name);
    write_runnable(t, &path, bytes);
    let out = t.cmd(&path).args(["echo", "ran"]).run();
    assert_one_line_error(&out, needle);
    assert_no_cache_entry(t, name);
    // Still refused the second time, and still nothing cached.
    let again = t.cmd(&path).args(["echo", "ran"]).run();
    assert_one_line_error(&again, needle);
    assert_no_cache_entry(t, name);
}

#[test]
fn stripped_packed_file_says_the_payload_is_missing() {
    let t = Test::new("stripped");
    let copy = t.dir.join("to-strip");
    fs::write(&copy, busybox_bytes()).unwrap();
    let stripped = t.dir.join("stripped");
    let status = Command::new("strip")
        .arg("-o")
        .arg(&stripped)
        .arg(&copy)
        .status()
        .expect("run strip (binutils)");
    assert!(status.success(), "strip failed");
    let bytes = fs::read(&stripped).unwrap();
    assert!(
        bytes.len() < busybox_bytes().len(),
        "strip kept the payload"
    );
    expect_damaged(
        &t,
        "stripped-run",
        &bytes,
        "payload missing, was this file stripped or truncated?",
    );
}

#[test]
fn truncated_payload_is_refused() {
    let t = Test::new("truncated_payload");
    let packed = busybox_bytes();
    let parts = Parts::of(packed);
    // A partial download: the file ends in the middle of the payload.
    let cut = (parts.footer.payload_offset + parts.footer.payload_len / 2) as usize;
    expect_damaged(
        &t,
        "cut-in-payload",
        &packed[..cut],
        "payload missing, was this file stripped or truncated?",
    );
    // The payload cut short but a footer that describes it (digest included): the lz4
    // frame or the tar ends early.
    let short = Parts {
        payload: parts.payload[..parts.payload.len() / 2].to_vec(),
        ..Parts::of(packed)
    };
    expect_damaged(&t, "short-payload", &short.assemble(1), "payload");
}

#[test]
fn flipped_byte_in_the_payload_is_refused() {
    let t = Test::new("flipped_payload");
    let footer = Footer::decode(busybox_bytes());
    for (name, at) in [
        ("flip-payload-start", footer.payload_offset + 20),
        (
            "flip-payload-middle",
            footer.payload_offset + footer.payload_len / 2,
        ),
        (
            "flip-payload-end",
            footer.payload_offset + footer.payload_len - 1,
        ),
    ] {
        let mut bytes = busybox_bytes().to_vec();
        bytes[at as usize] ^= 0x01;
        expect_damaged(&t, name, &bytes, "does not match its sha256");
    }
}

#[test]
fn flipped_byte_in_the_config_is_refused() {
    let t = Test::new("flipped_config");
    let footer = Footer::decode(busybox_bytes());
    let mut bytes = busybox_bytes().to_vec();
    let at = footer.payload_offset + footer.payload_len + footer.config_len / 2;
    bytes[at as usize] ^= 0x01;
    expect_damaged(
        &t,
        "flip-config",
        &bytes,
        "config does not match its sha256",
    );
}

#[test]
fn flipped_bytes_in_the_footer_are_refused() {
    let t = Test::new("flipped_footer");
    let len = busybox_bytes().len();
    for (name, at, needle) in [
        ("flip-magic", len - 1, "payload missing"),
        ("flip-offset", len - FOOTER_LEN + 16, "damaged packed file"),
        (
            "flip-config-len",
            len - FOOTER_LEN + 32,
            "damaged packed file",
        ),
        ("flip-payload-digest", len - FOOTER_LEN + 40, "sha256"),
        ("flip-config-digest", len - FOOTER_LEN + 72, "sha256"),
    ] {
        let mut bytes = busybox_bytes().to_vec();
        bytes[at] ^= 0x01;
        expect_damaged(&t, name, &bytes, needle);
    }
}

#[test]
fn newer_config_and_format_versions_are_refused() {
    let t = Test::new("newer_versions");
    let parts = Parts::of(busybox_bytes());
    let mut config: serde_json::Value = serde_json::from_slice(&parts.config).unwrap();
    config["version"] = serde_json::json!(99);
    let newer_config = Parts {
        config: serde_json::to_vec(&config).unwrap(),
        ..Parts::of(busybox_bytes())
    };
    expect_damaged(
        &t,
        "config-v99",
        &newer_config.assemble(1),
        "newer binctr (config version 99",
    );
    expect_damaged(
        &t,
        "format-v3",
        &parts.assemble(3),
        "newer binctr (format version 3",
    );
}

#[test]
fn zero_length_payload_or_config_is_refused() {
    let t = Test::new("zero_length");
    // A zero-length config first: a failure of the payload case must not hide it.
    let empty_config = Parts {
        config: Vec::new(),
        ..Parts::of(busybox_bytes())
    };
    expect_damaged(&t, "empty-config", &empty_config.assemble(1), "config");
    let empty_payload = Parts {
        payload: Vec::new(),
        ..Parts::of(busybox_bytes())
    };
    expect_damaged(&t, "empty-payload", &empty_payload.assemble(1), "payload");
}

#[test]
fn hand_assembled_file_runs() {
    // The control for the hand-assembled files above: the same assembly of an intact
    // payload runs (an lz4 CLI frame is read as well as the packer's).
    let t = Test::new("hand_assembled");
    assert_eq!(
        &lz4_frame(b"x")[..4],
        &[0x04, 0x22, 0x4d, 0x18],
        "an LZ4 frame"
    );
    let tar = RawTar::on_busybox().finish();
    let out = t.dir.join("by-hand");
    assemble_by_hand(&t, &tar, "by-hand", &out);
    t.cmd(&out)
        .args(["echo", "assembled"])
        .run()
        .assert_success()
        .assert_stdout("assembled\n");
    let parts = Parts::of(busybox_bytes());
    let again = t.dir.join("reassembled");
    write_runnable(&t, &again, &parts.assemble(1));
    t.cmd(&again)
        .args(["echo", "reassembled"])
        .run()
        .assert_success()
        .assert_stdout("reassembled\n");
}

// ---- faults during the first extraction -------------------------------------------------

#[test]
fn sigkill_during_the_first_extraction_then_a_normal_run_works() {
    let t = Test::new("sigkill_extract");
    let image = debian();
    // Two kill points: as soon as the extraction directory appears, and once it has
    // got as far as usr/share (about half of a Debian rootfs). The time an extraction
    // takes varies tenfold with how busy the disk is, so the points are events, not
    // delays.
    for midway in [None, Some("rootfs/usr/share")] {
        let running = t
            .cmd(image)
            .args(["true"])
            .timeout(Duration::from_secs(300))
            .spawn();
        assert!(
            wait_until(Duration::from_secs(60), || !temp_entries(&t.cache())
                .is_empty()),
            "no .tmp-* extraction dir appeared in {}",
            t.cache().display()
        );
        if let Some(path) = midway {
            wait_until(Duration::from_secs(60), || {
                temp_entries(&t.cache())
                    .iter()
                    .any(|tmp| t.cache().join(tmp).join(path).exists())
                    || !finished_entries(&t.cache()).is_empty()
            });
        }
        assert!(
            finished_entries(&t.cache()).is_empty(),
            "the extraction finished before the kill ({midway:?}): the kill came too late to test anything"
        );
        running.signal(libc::SIGKILL);
        let out = running.wait();
        assert_eq!(out.signal, Some(libc::SIGKILL), "{out:?}");
        assert!(
            finished_entries(&t.cache()).is_empty(),
            "a run killed during extraction left an entry that looks finished: {:?}",
            cache_entries(&t.cache())
        );
    }
    let out = t
        .cmd(image)
        .args(["cat", "/etc/debian_version"])
        .timeout(Duration::from_secs(300))
        .run();
    out.assert_success();
    assert!(!out.stdout.is_empty(), "{out:?}");
    assert_eq!(finished_entries(&t.cache()).len(), 1);
    assert_entries_are_clean(&t, "after the recovering run");
    // And the result is whole: a second run is a warm start that works.
    t.cmd(image)
        .args(["sh", "-c", "ls /usr/bin | wc -l"])
        .run()
        .assert_success();
}

/// A tmpfs mounted by the tests (which run as root) for the test user; unmounted when
/// dropped.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(t: &Test, path: &Path, options: &str) -> Tmpfs {
        assert!(
            t.env.test_user.is_some(),
            "this test mounts a tmpfs: run it as root through scripts/test.sh"
        );
        fs::create_dir_all(path).unwrap();
        run_root("mount", &["-t", "tmpfs", "-o", options, "tmpfs", &s(path)]);
        let tmpfs = Tmpfs {
            path: path.to_path_buf(),
        };
        t.env.give_to_user(path);
        fs::set_permissions(path, fs::Permissions::from_mode(0o700)).unwrap();
        tmpfs
    }

    fn remount(&self, options: &str) {
        run_root(
            "mount",
            &["-o", &format!("remount,{options}"), &s(&self.path)],
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .stdin(Stdio::null())
            .status();
    }
}

fn run_root(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn full_cache_file_system_is_a_clear_error_and_recovers() {
    let t = Test::new("cache_full");
    let image = debian();
    let tmpfs = Tmpfs::mount(&t, &t.cache(), "size=4m,mode=0700");
    let out = t
        .cmd(image)
        .args(["true"])
        .timeout(Duration::from_secs(300))
        .run();
    assert_one_line_error(&out, "No space left on device");
    assert_no_cache_entry(&t, "after running out of space");
    // Space is made: the next run works and leaves a whole entry.
    tmpfs.remount("size=1g");
    let out = t
        .cmd(image)
        .args(["cat", "/etc/debian_version"])
        .timeout(Duration::from_secs(300))
        .run();
    out.assert_success();
    assert_eq!(finished_entries(&t.cache()).len(), 1);
    assert_entries_are_clean(&t, "after the run with space");
    drop(tmpfs);
}

#[test]
fn unwritable_cache_dir_is_a_clear_error() {
    let t = Test::new("cache_unwritable");
    // The user's own directory, but read-only.
    let ro = t.dir.join("ro-cache");
    fs::create_dir(&ro).unwrap();
    t.env.give_to_user(&ro);
    fs::set_permissions(&ro, fs::Permissions::from_mode(0o500)).unwrap();
    let out = t
        .busybox_cmd(["echo", "ran"])
        .env("BINCTR_CACHE", &ro)
        .run();
    assert_one_line_error(&out, &s(&ro));
    assert!(cache_entries(&ro).is_empty(), "{:?}", cache_entries(&ro));
    // A cache that cannot be created: its parent belongs to root.
    let root_dir = t.dir.join("root-owned");
    fs::create_dir(&root_dir).unwrap();
    fs::set_permissions(&root_dir, fs::Permissions::from_mode(0o755)).unwrap();
    let below = root_dir.join("cache");
    let out = t
        .busybox_cmd(["echo", "ran"])
        .env("BINCTR_CACHE", &below)
        .run();
    assert_one_line_error(&out, &s(&below));
    assert!(!below.exists());
    // Someone else's cache directory is not used, even when writable.
    let theirs = t.dir.join("theirs");
    fs::create_dir(&theirs).unwrap();
    fs::set_permissions(&theirs, fs::Permissions::from_mode(0o777)).unwrap();
    let out = t
        .busybox_cmd(["echo", "ran"])
        .env("BINCTR_CACHE", &theirs)
        .run();
    assert_one_line_error(&out, &s(&theirs));
    assert!(
        cache_entries(&theirs).is_empty(),
        "{:?}",
        cache_entries(&theirs)
    );
    // A file where the cache should be.
    let file = t.dir.join("a-file");
    fs::write(&file, b"not a directory").unwrap();
    let out = t
        .busybox_cmd(["echo", "ran"])
        .env("BINCTR_CACHE", &file)
        .run();
    assert_one_line_error(&out, &s(&file));
    // Then a writable cache works.
    t.run(["echo", "ran"])
        .assert_success()
        .assert_stdout("ran\n");
}

#[test]
fn noexec_nosuid_cache_mount_works() {
    let t = Test::new("cache_noexec");
    let tmpfs = Tmpfs::mount(&t, &t.cache(), "size=64m,mode=0700,noexec,nosuid,nodev");
    t.run(["echo", "ran"])
        .assert_success()
        .assert_stdout("ran\n");
    t.run(["--read-only", "echo", "ro"])
        .assert_success()
        .assert_stdout("ro\n");
    assert_entries_are_clean(&t, "noexec cache");
    drop(tmpfs);
}

// ---- inside the container ---------------------------------------------------------------

/// The `Cap*` lines of /proc/self/status inside, as (name, hex).
fn caps(t: &Test, flags: &[&str]) -> Vec<(String, String)> {
    let out = t
        .cmd(t.busybox())
        .args(flags)
        .args(["grep", "^Cap", "/proc/self/status"])
        .run();
    out.assert_success();
    out.stdout_text()
        .lines()
        .map(|l| {
            let (k, v) = l.split_once(':').expect("Key:\tvalue");
            (k.to_string(), v.trim().to_string())
        })
        .collect()
}

fn cap(caps: &[(String, String)], name: &str) -> String {
    caps.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("no {name} in {caps:?}"))
}

#[test]
fn capability_bounding_set_is_dockers_default() {
    let t = Test::new("capbnd");
    let default = caps(&t, &[]);
    assert_eq!(cap(&default, "CapBnd"), "00000000a80425fb", "{default:?}");
    assert_eq!(cap(&default, "CapEff"), "00000000a80425fb", "{default:?}");
    assert_eq!(cap(&default, "CapPrm"), "00000000a80425fb", "{default:?}");
    assert_eq!(cap(&default, "CapInh"), "0000000000000000", "{default:?}");
    assert_eq!(cap(&default, "CapAmb"), "0000000000000000", "{default:?}");
    let added = caps(&t, &["--cap-add", "SYS_ADMIN"]);
    assert_eq!(cap(&added, "CapBnd"), "00000000a82425fb", "{added:?}");
    let dropped = caps(&t, &["--cap-drop", "NET_RAW"]);
    assert_eq!(cap(&dropped, "CapBnd"), "00000000a80405fb", "{dropped:?}");
    let none = caps(&t, &["--cap-drop", "ALL"]);
    assert_eq!(cap(&none, "CapBnd"), "0000000000000000", "{none:?}");
    assert_eq!(cap(&none, "CapEff"), "0000000000000000", "{none:?}");
    let one = caps(&t, &["--cap-drop", "ALL", "--cap-add", "CAP_CHOWN"]);
    assert_eq!(cap(&one, "CapBnd"), "0000000000000001", "{one:?}");
}

#[test]
fn no_new_privs_is_set_and_seccomp_is_on_unless_unconfined() {
    let t = Test::new("nnp");
    let out = t.run(["grep", "-E", "^(NoNewPrivs|Seccomp):", "/proc/self/status"]);
    out.assert_success()
        .assert_stdout("NoNewPrivs:\t1\nSeccomp:\t2\n");
    let out = t.run([
        "--security-opt",
        "seccomp=unconfined",
        "grep",
        "-E",
        "^(NoNewPrivs|Seccomp):",
        "/proc/self/status",
    ]);
    out.assert_success()
        .assert_stdout("NoNewPrivs:\t1\nSeccomp:\t0\n");
}

/// Mount points and their options inside the container (from /proc/self/mountinfo).
fn mounts_inside(t: &Test) -> Vec<(String, String)> {
    let out = t.run(["cat", "/proc/self/mountinfo"]);
    out.assert_success();
    out.stdout_text()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f[4].to_string(), f[5].to_string())
        })
        .collect()
}

#[test]
fn masked_paths_are_empty_and_read_only_paths_refuse_writes() {
    let t = Test::new("masked");
    let mounts = mounts_inside(&t);
    let masked = [
        "/proc/kcore",
        "/proc/keys",
        "/proc/timer_list",
        "/proc/sched_debug",
        "/proc/timer_stats",
        "/proc/latency_stats",
        "/proc/acpi",
        "/proc/scsi",
        "/proc/asound",
        "/sys/firmware",
    ];
    let present: Vec<&str> = masked
        .iter()
        .copied()
        .filter(|p| Path::new(p).exists())
        .collect();
    assert!(
        !present.is_empty(),
        "none of the masked paths exists on this host: nothing to test"
    );
    for path in &present {
        assert!(
            mounts.iter().any(|(m, _)| m == path),
            "{path} (present on the host) is not masked by a mount inside: {mounts:?}"
        );
        let out = t.run([
            "sh",
            "-c",
            &format!("if [ -d {path} ]; then ls -A {path}; else cat {path}; fi"),
        ]);
        assert!(
            out.stdout.is_empty(),
            "{path} shows content inside:\n{out:?}"
        );
        if Path::new(path).is_dir() {
            let out = t.run(["sh", "-c", &format!("touch {path}/x")]);
            assert_ne!(out.code, Some(0), "{path} could be written:\n{out:?}");
        }
    }
    // /proc/kcore is absent on this kernel when it is not in `present`; a read of it
    // must fail or be empty either way.
    let out = t.run(["sh", "-c", "cat /proc/kcore | head -c 16 | wc -c"]);
    assert_eq!(out.stdout_text().trim(), "0", "{out:?}");
    for path in [
        "/proc/sys",
        "/proc/sysrq-trigger",
        "/proc/irq",
        "/proc/bus",
        "/proc/fs",
    ] {
        if !Path::new(path).exists() {
            continue;
        }
        let (_, options) = mounts
            .iter()
            .find(|(m, _)| m == path)
            .unwrap_or_else(|| panic!("{path} is not a read-only mount inside: {mounts:?}"));
        assert!(
            options.split(',').any(|o| o == "ro"),
            "{path} is mounted {options}, not ro"
        );
    }
    // The UTS namespace is the container's own, so only the read-only mount stops this.
    let out = t.run([
        "sh",
        "-c",
        "echo pwned > /proc/sys/kernel/hostname; echo rc=$?; hostname",
    ]);
    let text = out.stdout_text();
    assert!(
        !text.contains("rc=0") && !text.contains("pwned"),
        "/proc/sys/kernel/hostname was written:\n{out:?}"
    );
    let out = t.run(["sh", "-c", "echo h > /proc/sysrq-trigger"]);
    assert_ne!(
        out.code,
        Some(0),
        "/proc/sysrq-trigger was written:\n{out:?}"
    );
    // Nor can the masks be taken off.
    let out = t.run([
        "sh",
        "-c",
        "umount /proc/keys || umount -l /proc/keys; cat /proc/keys | wc -c",
    ]);
    assert_eq!(
        out.stdout_text().trim(),
        "0",
        "a mask was removed:\n{out:?}"
    );
}

#[test]
fn only_stdio_descriptors_reach_the_command() {
    let t = Test::new("fds");
    t.run(["ls", "/proc/self/fd"])
        .assert_success()
        .assert_stdout("0\n1\n2\n3\n");
    // Descriptors the stub inherits from its caller do not reach the command either.
    let out = t
        .cmd(Path::new("/bin/sh"))
        .args([
            "-c",
            "exec 7</etc/hostname 8>/dev/null 9<&0; exec \"$0\" ls /proc/self/fd",
        ])
        .arg(t.busybox())
        .run();
    out.assert_success().assert_stdout("0\n1\n2\n3\n");
    // Nor are the init's (binctr's PID 1) reachable: it holds no host descriptor, and
    // is not dumpable.
    let out = t.run(["sh", "-c", "ls /proc/1/fd 2>/dev/null"]);
    for fd in out.stdout_text().lines() {
        let n: u32 = fd.parse().expect("a descriptor number");
        assert!(n <= 2, "PID 1 holds descriptor {n}:\n{out:?}");
    }
}

#[test]
fn new_user_namespaces_fail_by_default_and_work_unconfined() {
    let t = Test::new("unshare");
    let out = t.run(["unshare", "-U", "true"]);
    assert!(
        out.code.is_some_and(|c| c != 0),
        "unshare -U worked under the default seccomp profile:\n{out:?}"
    );
    t.run([
        "--security-opt",
        "seccomp=unconfined",
        "unshare",
        "-U",
        "true",
    ])
    .assert_success();
}

/// The perl script run in the debian image: each syscall and its errno ("ok" on success).
const SYSCALLS_PL: &str = r#"
sub try { my ($name, $nr, @args) = @_; $! = 0; my $r = syscall($nr, @args); print "$name ", ($r == -1 ? $! + 0 : "ok"), "\n"; }
try("keyctl", 250, 0, -3, 1);
try("add_key", 248, "user", "binctr", "x", 1, -3);
try("request_key", 249, "user", "binctr-none", 0, 0);
try("bpf", 321, 0, 0, 0);
try("perf_event_open", 298, 0, 0, -1, -1, 0);
try("kexec_load", 246, 0, 0, 0, 0);
try("open_by_handle_at", 304, -1, 0, 0);
try("setns", 308, -1, 0);
try("clone3", 435, 0, 0);
try("tiocsti", 16, 0, 0x5412, "x");
"#;

fn syscall_results(t: &Test, flags: &[&str]) -> Vec<(String, String)> {
    let out = t
        .cmd(debian())
        .args(flags)
        .args(["perl", "-e", SYSCALLS_PL])
        .timeout(Duration::from_secs(300))
        .run();
    out.assert_success();
    out.stdout_text()
        .lines()
        .map(|l| {
            let (k, v) = l.split_once(' ').expect("name result");
            (k.to_string(), v.to_string())
        })
        .collect()
}

#[test]
fn keyctl_bpf_and_friends_are_refused_by_the_default_profile() {
    let t = Test::new("seccomp_syscalls");
    let eperm = libc::EPERM.to_string();
    let enosys = libc::ENOSYS.to_string();
    let default = syscall_results(&t, &[]);
    for (name, result) in &default {
        let expected = if name == "clone3" { &enosys } else { &eperm };
        assert_eq!(
            result, expected,
            "{name} under the default profile: {default:?}"
        );
    }
    assert_eq!(default.len(), 10, "{default:?}");
    let unconfined = syscall_results(&t, &["--security-opt", "seccomp=unconfined"]);
    let get = |name: &str| {
        unconfined
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    assert_eq!(get("keyctl"), "ok", "keyctl unconfined: {unconfined:?}");
    // Without the filter the kernel answers: clone3 with no arguments is EINVAL or
    // EFAULT, TIOCSTI on a pipe is ENOTTY.
    assert_ne!(get("clone3"), enosys, "{unconfined:?}");
    assert_eq!(get("tiocsti"), libc::ENOTTY.to_string(), "{unconfined:?}");
}

#[test]
fn the_stub_cannot_be_opened_or_written_from_inside() {
    let t = Test::new("proc_1_exe");
    let packed = t.dir.join("packed");
    write_runnable(&t, &packed, busybox_bytes());
    let before = fs::read(&packed).unwrap();
    let meta = fs::metadata(&packed).unwrap();
    let script = r#"
        echo x >> /proc/1/exe && echo appended-exe
        echo x > /proc/1/exe && echo wrote-exe
        head -c 4 /proc/1/exe > /dev/null 2>&1 && echo read-exe
        for f in /proc/1/map_files/*; do [ -e "$f" ] && echo x >> "$f" 2>/dev/null && echo "wrote $f"; done
        for f in /proc/1/fd/*; do [ -e "$f" ] && echo "fd $f"; done
        cat /proc/1/environ > /dev/null 2>&1 && echo read-environ
        ls /proc/1/root/ > /dev/null 2>&1 && echo reached-root
        echo done
    "#;
    for flags in [
        &[][..],
        &["--security-opt", "seccomp=unconfined"][..],
        &["--cap-add", "ALL"][..],
        &["--cap-add", "ALL", "--security-opt", "seccomp=unconfined"][..],
    ] {
        let out = t.cmd(&packed).args(flags).args(["sh", "-c", script]).run();
        assert_eq!(
            out.stdout_text(),
            "done\n",
            "PID 1 was reachable ({flags:?}):\n{out:?}"
        );
        let after = fs::metadata(&packed).unwrap();
        assert!(
            fs::read(&packed).unwrap() == before
                && (after.ino(), after.mtime(), after.mtime_nsec())
                    == (meta.ino(), meta.mtime(), meta.mtime_nsec()),
            "the packed file changed ({flags:?})"
        );
    }
}

// ---- run-time mounts onto links in the image --------------------------------------------

#[test]
fn mount_targets_that_are_links_to_host_paths_stay_inside() {
    // The stub writes /etc/resolv.conf, /etc/hosts and /etc/hostname and mounts /proc,
    // /dev and /sys at run time: links in the image to host paths must resolve inside.
    let t = Test::new("mount_links");
    let dir = s(&t.dir);
    let home = s(&t.home());
    // The files first, alone (so the mounts before them do not stop the run early),
    // then the mount points.
    let mut files = RawTar::on_busybox();
    mirror(&mut files, &t.home());
    files
        .symlink(b"etc/resolv.conf", format!("{dir}/canary").as_bytes())
        .symlink(b"etc/hosts", format!("{home}/.bashrc").as_bytes())
        .symlink(
            b"etc/hostname",
            format!("{}{home}/canary", ups(10).trim_end_matches('/')).as_bytes(),
        );
    let mut dirs = RawTar::on_busybox();
    mirror(&mut dirs, &t.home());
    dirs.symlink(b"dev", format!("{dir}/victim-dir").as_bytes())
        .symlink(b"sys", home.as_bytes())
        .symlink(
            b"proc",
            format!("{}{dir}", ups(10).trim_end_matches('/')).as_bytes(),
        );
    let images = [
        pack_tar(&t, &files.finish(), "etc-links"),
        pack_tar(&t, &dirs.finish(), "mount-point-links"),
    ];
    let watch = Watch::new(&t);
    for packed in &images {
        for flags in MAPPINGS {
            let context = format!("{} ({})", packed.display(), mapping_name(flags));
            let out = t
                .cmd(packed)
                .args(flags)
                .args([
                    "sh",
                    "-c",
                    "cat /etc/resolv.conf /etc/hosts > /dev/null; echo ran",
                ])
                .run();
            watch.check(&context);
            eprintln!(
                "{context}: exit {:?}, stderr {:?}",
                out.code,
                out.stderr_text()
            );
            assert!(
                out.code == Some(0) || out.code == Some(125),
                "{context}: expected to run or to be refused:\n{out:?}"
            );
            if out.code == Some(125) {
                assert_one_line_error(&out, "");
            }
        }
    }
}

#[test]
fn the_cache_dir_is_made_private() {
    // It holds the image's setuid files: nobody else may reach them.
    let t = Test::new("cache_private");
    fs::create_dir(t.cache()).unwrap();
    fs::set_permissions(t.cache(), fs::Permissions::from_mode(0o755)).unwrap();
    t.env.give_to_user(&t.cache());
    let mut tar = RawTar::on_busybox();
    tar.header(b"bin/suid-copy", b'0', 0o4755, 5, b"", (0, 0));
    tar.data(b"#!x\n\n");
    let packed = pack_tar(&t, &tar.finish(), "suid");
    t.cmd(&packed).args(["true"]).run().assert_success();
    let mode = fs::metadata(t.cache()).unwrap().mode() & 0o7777;
    assert_eq!(mode, 0o700, "the cache dir is {mode:o}");
}

#[test]
fn the_packer_refuses_entries_that_climb_out_naming_them() {
    // The stub refuses these at extraction (the tests above assemble such files by
    // hand); the packer says so earlier, at pack time, and writes nothing.
    let t = Test::new("packer_dotdot");
    for (entry, link) in [
        ("../pack-escape", None),
        ("etc/../../pack-escape", None),
        ("hl-out", Some("../../etc/passwd")),
    ] {
        let mut tar = RawTar::on_busybox();
        match link {
            None => {
                tar.file(entry.as_bytes(), b"pwned\n");
            }
            Some(target) => tar.header(entry.as_bytes(), b'1', 0o644, 0, target.as_bytes(), (0, 0)),
        }
        let input = t.dir.join("hostile.tar");
        fs::write(&input, tar.finish()).unwrap();
        let out = t.dir.join("packed");
        let packed = t.packer().arg(&input).arg("-o").arg(&out).run();
        assert_ne!(packed.code, Some(0), "{packed:?}");
        let err = packed.stderr_text();
        assert!(
            err.lines().count() == 1 && err.contains(&format!("refused entry '{entry}'")),
            "one line naming the entry:\n{packed:?}"
        );
        assert!(!out.exists(), "an output was left: {}", out.display());
        let leftovers: Vec<_> = fs::read_dir(&t.dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".packed"))
            .collect();
        assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
    }
}
