//! Format 2, the stub's side (issue 16): a packed file's layers extracted once each into
//! the layer store, shared between images, stacked by overlay at run time.
//!
//! What is checked: two images on one base share its layer (the second's first run
//! extracts only its own layer: layer directories counted, time and disk measured); the
//! tree inside the container equals the `--flatten` (format 1) image's, for a large base
//! and for the multi-layer fixtures (file, directory and opaque whiteouts, replaced
//! symlinks, copied-up links); `--cache-rm` of one image keeps the layers the other
//! uses, of both leaves no layer; a running container's layers survive `--cache-rm`; a
//! packed file whose layer claims another layer's digest is refused and stores nothing
//! under that digest.
//!
//! Where layers cannot be stacked (forced here with `BINCTR_LAYERS=merged`), they are
//! merged into one directory per image: the same flattened tree, `-D` and `--check` say
//! so and why, a warm start reuses the directory, and a hostile layer's whiteouts,
//! symlinks and links stay inside it.
use binctr_tests::rawtar::{
    busybox_bytes, config_with, lz4_frame_with, sha256, write_runnable, Footer, Parts, RawTar,
};
use binctr_tests::{is_cache_entry, random_bytes, wait_until, Cmd, Env, Test};
use serde_json::{json, Value};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn fixture(name: &str) -> PathBuf {
    let path = Env::get().fixtures.join(name);
    assert!(path.exists(), "fixture {} is missing", path.display());
    path
}

fn hex(digest: [u8; 32]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Packs `input` with extra flags, ready for the test user to run.
fn pack(t: &Test, input: &Path, name: &str, flags: &[&str]) -> PathBuf {
    let out = t.dir.join(name);
    let output = t.packer().arg(input).arg("-o").arg(&out).args(flags).run();
    assert!(
        output.code == Some(0) && out.is_file(),
        "packing {} failed:\n{output:?}",
        input.display()
    );
    fs::set_permissions(&out, fs::Permissions::from_mode(0o755)).unwrap();
    t.env.give_to_user(&out);
    out
}

/// An unpacked docker-archive of these layers (uncompressed tars), bottom first.
fn docker_archive(dir: &Path, layers: &[&Path]) -> PathBuf {
    fs::create_dir_all(dir).unwrap();
    let mut names = Vec::new();
    let mut diff_ids = Vec::new();
    for (n, layer) in layers.iter().enumerate() {
        let name = format!("layer{n}.tar");
        let tar = fs::read(layer).unwrap();
        diff_ids.push(format!("sha256:{}", hex(sha256(&tar))));
        fs::write(dir.join(&name), tar).unwrap();
        names.push(name);
    }
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let manifest = json!([{"Config": "config.json", "RepoTags": ["test:latest"], "Layers": names}]);
    fs::write(dir.join("manifest.json"), manifest.to_string()).unwrap();
    dir.to_path_buf()
}

/// The layer directories of the store, and the layered images' entries.
fn layer_dirs(t: &Test) -> Vec<String> {
    names(&t.cache().join("layers"))
}

fn image_dirs(t: &Test) -> Vec<String> {
    names(&t.cache().join("images"))
}

fn names(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| is_cache_entry(n))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Bytes on disk below `path`, hard links once.
fn du(path: &Path) -> u64 {
    let mut seen = std::collections::BTreeSet::new();
    let mut total = 0;
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(meta) = fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.nlink() > 1 && !meta.is_dir() && !seen.insert(meta.ino()) {
            continue;
        }
        total += meta.blocks() * 512;
        if meta.is_dir() {
            if let Ok(dir) = fs::read_dir(&p) {
                stack.extend(dir.flatten().map(|e| e.path()));
            }
        }
    }
    total
}

/// The paths the stub itself puts in every container (mount targets, /etc copies):
/// their times are the run's.
fn of_the_run(line: &str) -> bool {
    [
        "/ ",
        "/etc/hosts ",
        "/etc/hostname ",
        "/etc/resolv.conf ",
        "/x ",
    ]
    .iter()
    .any(|p| line.starts_with(p))
}

/// The tree inside the container, as GNU find prints it (a large image: no content).
/// A directory's size is left out: overlay shows the top layer's directory.
fn tree_gnu(t: &Test, packed: &Path) -> Vec<String> {
    tree_gnu_of(t.cmd(packed))
}

/// [`tree_gnu`] of a command set up by the caller.
fn tree_gnu_of(cmd: Cmd) -> Vec<String> {
    let out = cmd
        .args([
            "--entrypoint",
            "find",
            "/",
            "-xdev",
            "(",
            "-path",
            "/proc",
            "-o",
            "-path",
            "/sys",
            "-o",
            "-path",
            "/dev",
            ")",
            "-prune",
            "-o",
            "-printf",
            "%p %y %m %U %G %T@ %l\\n",
            "-a",
            "-type",
            "f",
            "-printf",
            "%p size %s\\n",
        ])
        .timeout(Duration::from_secs(300))
        .run();
    out.assert_success();
    let mut lines: Vec<String> = out
        .stdout_text()
        .lines()
        .filter(|l| !of_the_run(l))
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

/// The tree inside a busybox-based container: type, mode, owner, size of files, mtime,
/// link target and content digest, one line a path.
const TREE_SH: &str = r#"find / -xdev \( -path /proc -o -path /sys -o -path /dev \) -prune -o -print | sort | while read -r f; do
  if [ -d "$f" ] && [ ! -L "$f" ]; then stat -c '%n %F %a %u %g %Y' "$f"
  else stat -c '%n %F %a %u %g %s %Y %N' "$f"; fi
  if [ -f "$f" ] && [ ! -L "$f" ]; then md5sum < "$f"; fi
done"#;

fn tree_busybox(t: &Test, packed: &Path) -> Vec<String> {
    tree_of(t.cmd(packed))
}

/// [`tree_busybox`] of a command set up by the caller (flags, variables).
fn tree_of(cmd: Cmd) -> Vec<String> {
    let out = cmd
        .args(["--entrypoint", "/bin/sh", "--", "-c", TREE_SH])
        .run();
    out.assert_success();
    out.stdout_text()
        .lines()
        .filter(|l| !of_the_run(l))
        .map(str::to_string)
        .collect()
}

fn assert_same_tree(what: &str, layered: &[String], flat: &[String]) {
    assert!(flat.len() > 50, "{what}: only {} paths", flat.len());
    if layered != flat {
        let only_l: Vec<_> = layered.iter().filter(|l| !flat.contains(l)).collect();
        let only_f: Vec<_> = flat.iter().filter(|l| !layered.contains(l)).collect();
        panic!("{what}: the layered tree differs from the flattened one\nlayered only: {only_l:#?}\nflattened only: {only_f:#?}");
    }
}

/// `true` in the image, timed.
fn first_run(t: &Test, packed: &Path) -> (Duration, String) {
    let start = Instant::now();
    let out = t
        .cmd(packed)
        .args(["-D", "--entrypoint", "true"])
        .timeout(Duration::from_secs(300))
        .run();
    let took = start.elapsed();
    out.assert_success();
    (took, out.stderr_text())
}

#[test]
fn two_images_on_one_base_extract_it_once_and_give_their_flattened_trees() {
    let t = Test::new("layers-run-shared");
    let top_a = t.dir.join("top-a.tar");
    fs::write(&top_a, RawTar::new().file(b"app-a", b"a\n").finish()).unwrap();
    let top_b = t.dir.join("top-b.tar");
    let tar_b = RawTar::new()
        .dir(b"srv/", 0o755)
        .file(b"srv/b", b"b\n")
        .finish();
    fs::write(&top_b, tar_b).unwrap();
    let base = fixture("debian-rootfs.tar");
    let a = docker_archive(&t.dir.join("a"), &[&base, &top_a]);
    let b = docker_archive(&t.dir.join("b"), &[&base, &top_b]);
    let (a_v2, b_v2) = (pack(&t, &a, "a.v2", &[]), pack(&t, &b, "b.v2", &[]));

    let (took_a, said) = first_run(&t, &a_v2);
    assert!(said.contains("2 layers, 2 extracted now"), "{said}");
    assert_eq!(layer_dirs(&t).len(), 2);
    let du_a = du(&t.cache());
    let (took_b, said) = first_run(&t, &b_v2);
    assert!(said.contains("2 layers, 1 extracted now"), "{said}");
    assert_eq!(layer_dirs(&t).len(), 3);
    let grown = du(&t.cache()) - du_a;
    let ratio = took_b.as_secs_f64() / took_a.as_secs_f64();
    eprintln!(
        "first runs: image A {:.3} s on an empty cache, image B {:.3} s on A's base ({ratio:.3}x); cache {} KiB after A, grew {} KiB with B",
        took_a.as_secs_f64(),
        took_b.as_secs_f64(),
        du_a / 1024,
        grown / 1024
    );
    assert!(ratio <= 0.35, "B's first run took {ratio:.3}x A's");
    assert!(grown < du_a / 50, "B added {grown} bytes to {du_a}");

    // Each tree equals its flattened one (format 1 still runs, beside the layers).
    let a_v1 = pack(&t, &a, "a.v1", &["--flatten"]);
    let b_v1 = pack(&t, &b, "b.v1", &["--flatten"]);
    let (tree_a, tree_b) = (tree_gnu(&t, &a_v2), tree_gnu(&t, &b_v2));
    assert!(tree_a.iter().any(|l| l.starts_with("/app-a ")));
    assert!(tree_b.iter().any(|l| l.starts_with("/srv/b ")));
    let flat_a = tree_gnu(&t, &a_v1);
    assert_same_tree("image A", &tree_a, &flat_a);
    // Merged (where layers cannot be stacked): the same tree.
    let merged_a = tree_gnu_of(merged(t.cmd(&a_v2)));
    assert_same_tree("image A, merged", &merged_a, &flat_a);
    assert_same_tree("image B", &tree_b, &tree_gnu(&t, &b_v1));

    // --cache-rm of A keeps the base for B; B then extracts nothing.
    let a_digest = hex(Parts::of(&fs::read(&a_v2).unwrap()).footer.payload_sha256);
    t.cmd(&a_v2)
        .args(["--cache-rm", "this"])
        .run()
        .assert_success();
    assert_eq!(layer_dirs(&t).len(), 2, "{:?}", layer_dirs(&t));
    assert!(image_dirs(&t).iter().all(|n| !n.starts_with(&a_digest)));
    let (_, said) = first_run(&t, &b_v2);
    assert!(said.contains("2 layers, 0 extracted now"), "{said}");
    let listed = t.cmd(&b_v2).arg("--cache-list").run();
    listed.assert_success();
    assert!(listed.stdout_text().contains("(2 layers)"), "{listed:?}");
    // Removing both leaves no layer and no image.
    t.cmd(&b_v2)
        .args(["--cache-rm", "all"])
        .run()
        .assert_success();
    assert_eq!(layer_dirs(&t), Vec::<String>::new());
    assert_eq!(image_dirs(&t), Vec::<String>::new());
    assert_eq!(names(&t.cache()), Vec::<String>::new());
}

#[test]
fn multi_layer_fixtures_give_the_flattened_tree_through_the_layer_store() {
    let t = Test::new("layers-run-fixtures");
    for name in ["img-docker.tar", "img-umoci-insert.tar"] {
        let input = fixture(name);
        let v2 = pack(&t, &input, &format!("{name}.v2"), &[]);
        let v1 = pack(&t, &input, &format!("{name}.v1"), &["--flatten"]);
        let layered = tree_busybox(&t, &v2);
        assert_same_tree(name, &layered, &tree_busybox(&t, &v1));
        // Read-only: the layers stacked with no upper.
        let ro = t
            .cmd(&v2)
            .args([
                "--read-only",
                "--entrypoint",
                "/bin/sh",
                "--",
                "-c",
                TREE_SH,
            ])
            .run();
        ro.assert_success();
        let ro: Vec<String> = ro
            .stdout_text()
            .lines()
            .filter(|l| !of_the_run(l))
            .map(str::to_string)
            .collect();
        assert_same_tree(&format!("{name} --read-only"), &ro, &layered);
    }
    // The whiteouts of img-docker's upper layer hide what they name.
    let v2 = t.dir.join("img-docker.tar.v2");
    let out = t
        .cmd(&v2)
        .args([
            "--entrypoint",
            "/bin/sh",
            "--",
            "-c",
            "ls -a /etc /opaque; cat /etc/kept-file /data/link-to-base",
        ])
        .run();
    out.assert_success();
    let text = out.stdout_text();
    assert!(!text.contains("deleted-file"), "{text}");
    assert!(text.contains("kept\nbase file\n"), "{text}");
}

#[test]
fn a_running_containers_layers_survive_cache_rm() {
    let t = Test::new("layers-run-in-use");
    let v2 = pack(&t, &fixture("img-docker.tar"), "img.v2", &[]);
    let mut running = t
        .cmd(&v2)
        .args(["--entrypoint", "/bin/sleep", "60"])
        .spawn();
    running.wait_for_descendant("sleep", Duration::from_secs(60));
    let before = layer_dirs(&t);
    assert_eq!(before.len(), 2);
    let rm = t.cmd(&v2).args(["--cache-rm", "all"]).run();
    rm.assert_success();
    assert!(rm.stdout_text().contains("in use"), "{rm:?}");
    assert_eq!(layer_dirs(&t), before);
    assert_eq!(image_dirs(&t), Vec::<String>::new());
    // Still running from those layers.
    running.signal(libc::SIGKILL);
    let _ = running.wait();
    assert!(wait_until(Duration::from_secs(10), || {
        t.cmd(&v2).args(["--cache-rm", "all"]).run();
        layer_dirs(&t).is_empty()
    }));
}

/// A packed file whose upper layer is `other`'s upper layer. `lie`: its config keeps
/// the genuine layer's frame sha256 (the layer store's key); else it describes the
/// frame honestly and lies only in its tar's digest (the genuine's).
fn impostor(genuine: &Path, other: &Path, out: &Path, lie_in_sha256: bool) {
    let mut parts = Parts::of(&fs::read(genuine).unwrap());
    let theirs = Parts::of(&fs::read(other).unwrap());
    let mut config: Value = serde_json::from_slice(&parts.config).unwrap();
    let their_config: Value = serde_json::from_slice(&theirs.config).unwrap();
    let top = &their_config["layers"][1];
    let (at, len) = (
        top["offset"].as_u64().unwrap() as usize,
        top["length"].as_u64().unwrap() as usize,
    );
    let frame = &theirs.payload[at..at + len];
    let layers = config["layers"].as_array_mut().unwrap();
    let mine = layers[1]["offset"].as_u64().unwrap() as usize;
    parts.payload.truncate(mine);
    parts.payload.extend_from_slice(frame);
    layers[1]["length"] = json!(len);
    layers[1]["size"] = top["size"].clone();
    if !lie_in_sha256 {
        layers[1]["sha256"] = json!(hex(sha256(frame)));
    }
    parts.config = serde_json::to_vec(&config).unwrap();
    fs::write(out, parts.assemble(2)).unwrap();
}

#[test]
fn a_flipped_byte_in_a_layers_frame_is_refused_and_nothing_is_stored() {
    // A run hashes a layer's compressed frame, not its tar as well (the frame's sha256
    // covers every byte of it): damage anywhere in the frame is refused, by lz4's checks
    // or by the sha256, with one line, before anything is renamed into the store.
    let t = Test::new("layers-run-flipped");
    let packed = pack(&t, &fixture("busybox.tar"), "bb", &[]);
    let bytes = fs::read(&packed).unwrap();
    let len = Parts::of(&bytes).payload.len();
    for at in [7, len / 3, len / 2, len - 6] {
        let mut damaged = Parts::of(&bytes);
        damaged.payload[at] ^= 0x5a;
        let path = t.dir.join(format!("flipped-{at}"));
        write_runnable(&t, &path, &damaged.assemble(2));
        let out = t.cmd(&path).args(["echo", "ran"]).run();
        binctr_tests::assert_fails_with_one_line(&out, 125, "damaged packed file");
        let stored: Vec<String> = [layer_dirs(&t), image_dirs(&t)]
            .concat()
            .into_iter()
            .filter(|n| is_cache_entry(n) || n.starts_with(".tmp-"))
            .collect();
        assert!(
            stored.is_empty(),
            "byte {at} of {len} flipped: left in the cache: {stored:?}"
        );
    }
    // The intact file then runs.
    t.cmd(&packed)
        .args(["echo", "intact"])
        .run()
        .assert_success()
        .assert_stdout("intact\n");
}

#[test]
fn a_layer_that_claims_another_layers_key_is_refused_and_its_tar_digest_steers_nothing() {
    // The layer store keys a layer by its frame's sha256, the bytes a run reads and
    // checks: what is stored under a key is what hashes to it.
    let t = Test::new("layers-run-impostor");
    let genuine = pack(&t, &fixture("img-docker.tar"), "genuine", &[]);
    let top = t.dir.join("top.tar");
    fs::write(
        &top,
        RawTar::new().file(b"etc/kept-file", b"poisoned\n").finish(),
    )
    .unwrap();
    let other = docker_archive(&t.dir.join("other"), &[&fixture("busybox.tar"), &top]);
    let other = pack(&t, &other, "other.v2", &[]);
    let [hostile, liar] = ["hostile", "liar"].map(|name| t.dir.join(name));
    impostor(&genuine, &other, &hostile, true);
    impostor(&genuine, &other, &liar, false);
    for path in [&hostile, &liar] {
        fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
        t.env.give_to_user(path);
    }
    let cat = |path: &Path| {
        t.cmd(path)
            .args(["--entrypoint", "/bin/cat", "/etc/kept-file"])
            .run()
    };
    // Another frame under the genuine layer's sha256: refused, nothing stored under it.
    binctr_tests::assert_fails_with_one_line(&cat(&hostile), 125, "does not match its sha256");
    let config: Value =
        serde_json::from_slice(&Parts::of(&fs::read(&genuine).unwrap()).config).unwrap();
    let claimed = config["layers"][1]["sha256"].as_str().unwrap().to_string();
    assert!(
        layer_dirs(&t).iter().all(|n| !n.starts_with(&claimed)),
        "{:?}",
        layer_dirs(&t)
    );
    // An honest frame under the genuine tar's digest: its own content, under its own key.
    cat(&liar).assert_success().assert_stdout("poisoned\n");
    // The genuine image then extracts and runs its own layer, the lie notwithstanding.
    cat(&genuine).assert_success().assert_stdout("kept\n");
    assert!(
        layer_dirs(&t).iter().any(|n| n.starts_with(&claimed)),
        "{:?}",
        layer_dirs(&t)
    );
    // And the impostor, finding the genuine layer under that key, gets it, not its own.
    cat(&hostile).assert_success().assert_stdout("kept\n");
    cat(&liar).assert_success().assert_stdout("poisoned\n");
}

#[test]
fn an_entry_naming_other_layers_is_made_to_name_its_own_so_pruning_keeps_them() {
    // The cache as a stub that keyed layers otherwise (by their tars' digests) left it:
    // the layers under other names, the image's record naming those. The run that
    // extracts this stub's layers makes the record name them, so --cache-prune (which
    // keeps the layers a record names) keeps them and removes the old ones.
    let t = Test::new("layers-run-old-record");
    let v2 = pack(&t, &fixture("img-docker.tar"), "img.v2", &[]);
    let run = || {
        t.cmd(&v2)
            .args(["--entrypoint", "true"])
            .run()
            .assert_success();
    };
    run();
    let layers = layer_dirs(&t);
    assert_eq!(layers.len(), 2, "{layers:?}");
    let [image] = &image_dirs(&t)[..] else {
        panic!("one image entry expected: {:?}", image_dirs(&t));
    };
    let store = t.cache().join("layers");
    let old: Vec<String> = layers
        .iter()
        .enumerate()
        .map(|(i, key)| format!("{}{}", i.to_string().repeat(64), &key[64..]))
        .collect();
    for (key, old) in layers.iter().zip(&old) {
        fs::rename(store.join(key), store.join(old)).unwrap();
    }
    let record_path = t.cache().join("images").join(image).join("image.json");
    let mut record: Value = serde_json::from_slice(&fs::read(&record_path).unwrap()).unwrap();
    record["layers"] = json!(old);
    fs::write(&record_path, record.to_string()).unwrap();

    run();
    let record: Value = serde_json::from_slice(&fs::read(&record_path).unwrap()).unwrap();
    let mut named: Vec<String> = serde_json::from_value(record["layers"].clone()).unwrap();
    named.sort();
    assert_eq!(
        named, layers,
        "the record was not made to name this run's layers"
    );
    t.cmd(&v2).arg("--cache-prune").run().assert_success();
    assert_eq!(layer_dirs(&t), layers, "pruning kept the wrong layers");
    run();
}

#[test]
fn cache_prune_removes_images_unused_for_days_and_their_layers() {
    let t = Test::new("layers-run-prune");
    let v2 = pack(&t, &fixture("img-docker.tar"), "img.v2", &[]);
    t.cmd(&v2)
        .args(["--entrypoint", "true"])
        .run()
        .assert_success();
    assert_eq!(layer_dirs(&t).len(), 2);
    // Used just now: kept.
    let out = t.cmd(&v2).arg("--cache-prune").run();
    out.assert_success();
    assert_eq!((layer_dirs(&t).len(), image_dirs(&t).len()), (2, 1));
    // Last used 40 days ago: kept by --cache-prune 50, removed by the default (30).
    let old = std::time::SystemTime::now() - Duration::from_secs(40 * 86_400);
    for name in image_dirs(&t) {
        let entry = t.cache().join("images").join(&name);
        fs::File::open(&entry).unwrap().set_modified(old).unwrap();
        let lock = t.cache().join("images").join(format!("{name}.lock"));
        if let Ok(f) = fs::File::options().append(true).open(lock) {
            f.set_modified(old).unwrap();
        }
    }
    t.cmd(&v2)
        .args(["--cache-prune", "50"])
        .run()
        .assert_success();
    assert_eq!((layer_dirs(&t).len(), image_dirs(&t).len()), (2, 1));
    let out = t.cmd(&v2).arg("--cache-prune").run();
    out.assert_success();
    assert_eq!(layer_dirs(&t), Vec::<String>::new(), "{out:?}");
    assert_eq!(image_dirs(&t), Vec::<String>::new());
}

#[test]
fn a_layer_whose_root_is_opaque_hides_the_layers_below() {
    let t = Test::new("layers-run-opaque-root");
    let bottom = t.dir.join("bottom.tar");
    let mut tar = RawTar::on_busybox();
    tar.file(b"only-bottom", b"bottom\n");
    fs::write(&bottom, tar.finish()).unwrap();
    let top = t.dir.join("top.tar");
    let mut tar = RawTar::on_busybox();
    tar.file(b".wh..wh..opq", b"").file(b"only-top", b"top\n");
    fs::write(&top, tar.finish()).unwrap();
    let image = docker_archive(&t.dir.join("img"), &[&bottom, &top]);
    let v2 = pack(&t, &image, "img.v2", &[]);
    let v1 = pack(&t, &image, "img.v1", &["--flatten"]);
    let script = "ls /only-bottom /only-top 2>&1";
    for packed in [&v2, &v1] {
        let out = t
            .cmd(packed)
            .args(["--entrypoint", "/bin/sh", "--", "-c", script])
            .run();
        let text = out.stdout_text();
        assert!(
            text.contains("/only-top") && text.contains("only-bottom: No such file"),
            "{}: {out:?}",
            packed.display()
        );
    }
    let flat = tree_busybox(&t, &v1);
    assert_same_tree("opaque root", &tree_busybox(&t, &v2), &flat);
    assert_same_tree("opaque root, merged", &tree_of(merged(t.cmd(&v2))), &flat);
}

#[test]
fn eight_simultaneous_first_runs_extract_each_layer_once() {
    let t = Test::new("layers-run-concurrent");
    let v2 = pack(&t, &fixture("img-docker.tar"), "img.v2", &[]);
    let runs: Vec<_> = (0..8)
        .map(|_| {
            t.cmd(&v2)
                .args(["-D", "--entrypoint", "/bin/cat", "/etc/kept-file"])
                .timeout(Duration::from_secs(120))
                .spawn()
        })
        .collect();
    let mut extracted = 0;
    for run in runs {
        let out = run.wait();
        out.assert_success().assert_stdout("kept\n");
        extracted += out
            .stderr_text()
            .matches("rootfs: extracting layer")
            .count();
    }
    assert_eq!(extracted, 2, "each of the 2 layers extracted once");
    assert_eq!(layer_dirs(&t).len(), 2);
    assert_eq!(image_dirs(&t).len(), 1);
    for dir in ["layers", "images"] {
        let temps = binctr_tests::temp_entries(&t.cache().join(dir));
        assert!(temps.is_empty(), "{dir}: {temps:?}");
    }
}

#[test]
fn sigkill_during_a_layers_extraction_then_a_normal_run_works() {
    let t = Test::new("layers-run-sigkill");
    let top = t.dir.join("top.tar");
    fs::write(&top, RawTar::new().file(b"app", b"app\n").finish()).unwrap();
    let image = docker_archive(&t.dir.join("img"), &[&fixture("debian-rootfs.tar"), &top]);
    let v2 = pack(&t, &image, "img.v2", &[]);
    let running = t
        .cmd(&v2)
        .args(["--entrypoint", "true"])
        .timeout(Duration::from_secs(300))
        .spawn();
    let store = t.cache().join("layers");
    assert!(
        wait_until(Duration::from_secs(60), || {
            binctr_tests::temp_entries(&store)
                .iter()
                .any(|tmp| store.join(tmp).join("root/usr").exists())
        }),
        "no extraction reached usr/ in {}",
        store.display()
    );
    assert_eq!(
        layer_dirs(&t),
        Vec::<String>::new(),
        "finished before the kill"
    );
    running.signal(libc::SIGKILL);
    let out = running.wait();
    assert_eq!(out.signal, Some(libc::SIGKILL), "{out:?}");
    assert_eq!(
        layer_dirs(&t),
        Vec::<String>::new(),
        "a killed extraction left a layer"
    );
    let out = t
        .cmd(&v2)
        .args(["--entrypoint", "/bin/cat", "/app", "/etc/debian_version"])
        .timeout(Duration::from_secs(300))
        .run();
    out.assert_success();
    assert!(out.stdout_text().starts_with("app\n"), "{out:?}");
    assert_eq!(layer_dirs(&t).len(), 2);
    for dir in ["layers", "images"] {
        let temps = binctr_tests::temp_entries(&t.cache().join(dir));
        assert!(temps.is_empty(), "{dir}: {temps:?}");
    }
}

#[test]
fn a_layer_listed_twice_is_stacked_once() {
    let t = Test::new("layers-run-twice");
    let top = t.dir.join("top.tar");
    fs::write(&top, RawTar::new().file(b"app", b"app\n").finish()).unwrap();
    let image = docker_archive(&t.dir.join("img"), &[&fixture("busybox.tar"), &top, &top]);
    let v2 = pack(&t, &image, "img.v2", &[]);
    let config: Value = serde_json::from_slice(&Parts::of(&fs::read(&v2).unwrap()).config).unwrap();
    let layers = config["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 3);
    assert_eq!(
        layers[1]["digest"], layers[2]["digest"],
        "the packer changed"
    );
    for flags in [&[][..], &["--read-only"][..]] {
        let out = t
            .cmd(&v2)
            .args(flags)
            .args(["--entrypoint", "/bin/cat", "/app"])
            .run();
        out.assert_success().assert_stdout("app\n");
    }
    assert_eq!(layer_dirs(&t).len(), 2);
}

#[test]
fn sixty_four_layers_stack_and_give_the_flattened_tree() {
    let t = Test::new("layers-run-deep");
    let mut layers = vec![fixture("busybox.tar")];
    for n in 1..70 {
        let mut tar = RawTar::new();
        tar.dir(b"stack/", 0o755).file(
            format!("stack/f{n}").as_bytes(),
            format!("{n}\n").as_bytes(),
        );
        match n {
            66 => tar.file(b"stack/.wh.f3", b"").file(b"stack/.wh.f65", b""),
            68 => tar.hardlink(b"stack/link", b"stack/f10"),
            _ => &mut tar,
        };
        let path = t.dir.join(format!("layer{n}.tar"));
        fs::write(&path, tar.finish()).unwrap();
        layers.push(path);
    }
    let refs: Vec<&Path> = layers.iter().map(PathBuf::as_path).collect();
    let image = docker_archive(&t.dir.join("image"), &refs);
    let v2 = pack(&t, &image, "deep.v2", &[]);
    let v1 = pack(&t, &image, "deep.v1", &["--flatten"]);
    let out = t
        .cmd(&v2)
        .args(["-D", "--entrypoint", "/bin/ls", "/stack"])
        .run();
    out.assert_success();
    assert!(
        out.stderr_text().contains("64 layers, 64 extracted now"),
        "{out:?}"
    );
    let listed = out.stdout_text();
    assert!(listed.contains("f69") && !listed.contains("f65\n") && !listed.contains("f3\n"));
    let flat = tree_busybox(&t, &v1);
    assert_same_tree("64 layers", &tree_busybox(&t, &v2), &flat);
    assert_same_tree("64 layers, merged", &tree_of(merged(t.cmd(&v2))), &flat);
}

/// The merged directories of the cache (`<key>-merged-<layers>`), by name.
fn merged_dirs(t: &Test) -> Vec<String> {
    let mut out: Vec<String> = fs::read_dir(t.cache())
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.contains("-merged-") && !n.ends_with(".lock"))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// `cmd` with the layers merged rather than stacked.
fn merged(cmd: Cmd) -> Cmd {
    cmd.env("BINCTR_LAYERS", "merged")
}

#[test]
fn merged_layers_give_the_flattened_tree_say_so_and_are_reused() {
    let t = Test::new("layers-run-merged");
    for name in ["img-docker.tar", "img-umoci-insert.tar"] {
        let input = fixture(name);
        let v2 = pack(&t, &input, &format!("{name}.v2"), &[]);
        let v1 = pack(&t, &input, &format!("{name}.v1"), &["--flatten"]);
        let out = merged(t.cmd(&v2))
            .args(["-D", "--entrypoint", "true"])
            .run();
        out.assert_success();
        let said = out.stderr_text();
        assert!(
            said.contains("rootfs: layers merged, not stacked: BINCTR_LAYERS=merged"),
            "{said}"
        );
        assert!(said.contains("rootfs: extracting into"), "{said}");
        assert_eq!(layer_dirs(&t), Vec::<String>::new(), "no layer is stored");
        let flat = tree_busybox(&t, &v1);
        assert_same_tree(name, &tree_of(merged(t.cmd(&v2))), &flat);
        let ro = tree_of(merged(t.cmd(&v2)).arg("--read-only"));
        assert_same_tree(&format!("{name} --read-only"), &ro, &flat);
    }
    let dirs = merged_dirs(&t);
    assert_eq!(dirs.len(), 2, "{dirs:?}");
    assert_eq!(image_dirs(&t), Vec::<String>::new());
    assert!(binctr_tests::temp_entries(&t.cache()).is_empty());

    // A warm start uses the merged directory as it is: nothing extracted, still said.
    let v2 = t.dir.join("img-docker.tar.v2");
    let digest = hex(Parts::of(&fs::read(&v2).unwrap()).footer.payload_sha256);
    let entry = t
        .cache()
        .join(dirs.iter().find(|d| d.starts_with(&digest)).unwrap());
    let before = fs::metadata(entry.join("rootfs")).unwrap().ino();
    for forced in [true, false] {
        let cmd = t.cmd(&v2);
        let cmd = if forced { merged(cmd) } else { cmd };
        let out = cmd
            .args(["-D", "--entrypoint", "/bin/cat", "/etc/kept-file"])
            .run();
        out.assert_success().assert_stdout("kept\n");
        let said = out.stderr_text();
        let why = match forced {
            true => "layers merged, not stacked: BINCTR_LAYERS=merged",
            // Without the variable, as its first run chose (no probe).
            false => "layers merged, not stacked: at its first run: BINCTR_LAYERS=merged",
        };
        assert!(said.contains(why), "{said}");
        assert!(said.contains("rootfs: cached at"), "{said}");
        assert!(
            !said.contains("extracting") && !said.contains("probed"),
            "{said}"
        );
    }
    assert_eq!(fs::metadata(entry.join("rootfs")).unwrap().ino(), before);
    assert_eq!(layer_dirs(&t), Vec::<String>::new());

    // --check says how layers run here: merged when asked, stacked on this machine.
    let out = merged(t.cmd(&v2)).arg("--check").run();
    let text = out.stdout_text();
    assert!(
        text.lines().any(
            |l| l.contains("layers") && l.contains("merged, not stacked: BINCTR_LAYERS=merged")
        ),
        "{out:?}"
    );
    let out = t.cmd(&v2).arg("--check").run();
    let text = out.stdout_text();
    assert!(
        text.lines()
            .any(|l| l.contains("layers") && l.contains("ok") && l.contains("stacked by overlay")),
        "{out:?}"
    );
    let out = t
        .cmd(&v2)
        .env("BINCTR_LAYERS", "sideways")
        .args(["--entrypoint", "true"])
        .run();
    binctr_tests::assert_fails_with_one_line(&out, 125, "BINCTR_LAYERS=sideways");

    // The listing shows it, --cache-rm this removes it (and only it).
    let listed = t.cmd(&v2).arg("--cache-list").run();
    listed.assert_success();
    assert!(listed.stdout_text().contains(&digest[..12]), "{listed:?}");
    t.cmd(&v2)
        .args(["--cache-rm", "this"])
        .run()
        .assert_success();
    assert_eq!(merged_dirs(&t).len(), 1, "{:?}", merged_dirs(&t));
    assert!(merged_dirs(&t).iter().all(|d| !d.starts_with(&digest)));
}

/// A format 2 packed file of these layer tars (bottom first), assembled by hand: the
/// packer would never write such layers.
fn layered_by_hand(t: &Test, tars: &[Vec<u8>], out: &Path) {
    layered_by_hand_with(t, tars, &[], out);
}

/// As [`layered_by_hand`], each frame written by `lz4` with these options.
fn layered_by_hand_with(t: &Test, tars: &[Vec<u8>], lz4_options: &[&str], out: &Path) {
    let frames: Vec<(Vec<u8>, Vec<u8>)> = tars
        .iter()
        .map(|tar| (tar.clone(), lz4_frame_with(lz4_options, tar)))
        .collect();
    layered_frames(t, &frames, out);
}

/// A format 2 packed file of these (tar, frame) layers: each frame's sha256 is right,
/// whatever the frame holds.
fn layered_frames(t: &Test, frames: &[(Vec<u8>, Vec<u8>)], out: &Path) {
    let mut payload = Vec::new();
    let mut layers = Vec::new();
    for (tar, frame) in frames {
        layers.push(json!({
            "digest": format!("sha256:{}", hex(sha256(tar))),
            "offset": payload.len(),
            "length": frame.len(),
            "size": tar.len(),
            "sha256": hex(sha256(frame)),
        }));
        payload.extend_from_slice(frame);
    }
    let parts = Parts {
        stub: fs::read(t.env.stub()).expect("read the stub"),
        payload,
        config: config_with("hostile-layers", json!({ "layers": layers })),
        footer: Footer::decode(busybox_bytes()),
    };
    write_runnable(t, out, &parts.assemble(2));
}

#[test]
fn layers_framed_by_any_lz4_writer_extract_to_the_same_files() {
    // binctr-pack's frames (independent 4 MiB blocks, no checksum) are decompressed
    // block by block straight into the memory the extraction writes files from; any
    // other frame goes through lz4_flex's frame decoder. Both must give the same files:
    // blocks stored uncompressed (random bytes), several blocks per file and files
    // across blocks, small blocks, linked blocks, block and content checksums, a content
    // size in the header.
    let t = Test::new("layers-run-lz4-writers");
    let random = random_bytes(9 << 20, 0x1a2b);
    let text: Vec<u8> = (0..300_000u32)
        .flat_map(|i| format!("line {i} of a compressible file\n").into_bytes())
        .collect();
    let mut files = RawTar::new();
    files
        .dir(b"data", 0o755)
        .file(b"data/random", &random)
        .file(b"data/small", b"small\n")
        .file(b"data/text", &text)
        .file(b"data/empty", b"");
    let tars = [RawTar::on_busybox().finish(), files.finish()];
    let expected = format!(
        "{}  /data/random\n{}  /data/text\n{}  /data/small\n",
        hex(sha256(&random)),
        hex(sha256(&text)),
        hex(sha256(b"small\n"))
    );
    for (name, options) in [
        ("as-binctr-pack", &["-B7", "--no-frame-crc"][..]),
        ("content-size", &["-B7", "--no-frame-crc", "--content-size"]),
        ("small-blocks", &["-B4", "--no-frame-crc"]),
        ("content-checksum", &["-B7"]),
        ("linked-blocks", &["-B5", "-BD", "--no-frame-crc"]),
        ("block-checksums", &["-B6", "-BX", "--no-frame-crc"]),
    ] {
        let image = t.dir.join(name);
        layered_by_hand_with(&t, &tars, options, &image);
        let out = t
            .cmd(&image)
            .args(["sha256sum", "/data/random", "/data/text", "/data/small"])
            .run();
        assert!(
            out.code == Some(0) && out.stdout_text() == expected,
            "lz4 {options:?}:\n{out:?}"
        );
        let out = t
            .cmd(&image)
            .args(["stat", "-c", "%s", "/data/empty"])
            .run();
        assert_eq!(out.stdout_text(), "0\n", "lz4 {options:?}:\n{out:?}");
    }
}

#[test]
fn a_layer_whose_lz4_is_broken_under_a_right_sha256_is_refused_and_nothing_is_stored() {
    // The frame's sha256 matches (the packer of a hostile file computes it), so only the
    // lz4 decoding can find the damage: blocks larger than the frame allows, stored or
    // compressed, a compressed block that reaches before its start, a frame that ends
    // before its end mark. Each is refused with one line; nothing is stored.
    let t = Test::new("layers-run-broken-lz4");
    let base = RawTar::on_busybox().finish();
    let mut top = RawTar::new();
    top.file(b"etc/top", b"top\n");
    let top = top.finish();
    let good = lz4_frame_with(&["-B7", "--no-frame-crc"], &top);
    let header = &good[..7];
    let block = |size: u32, bytes: &[u8]| {
        let mut frame = header.to_vec();
        frame.extend_from_slice(&size.to_le_bytes());
        frame.extend_from_slice(bytes);
        frame.extend_from_slice(&0u32.to_le_bytes());
        frame
    };
    let cases = [
        (
            "stored-too-large",
            block(0x8000_0000 | ((4 << 20) + 1), &[0; 64]),
        ),
        ("compressed-too-large", block((4 << 20) + 1, &[0; 64])),
        ("match-before-start", block(4, &[0x0f, 0xff, 0xff, 0x00])),
        ("no-end-mark", good[..good.len() - 4].to_vec()),
    ];
    let base_frame = lz4_frame_with(&["-B7", "--no-frame-crc"], &base);
    for (name, frame) in cases {
        let image = t.dir.join(name);
        layered_frames(
            &t,
            &[(base.clone(), base_frame.clone()), (top.clone(), frame)],
            &image,
        );
        let out = t.cmd(&image).args(["echo", "ran"]).run();
        binctr_tests::assert_fails_with_one_line(&out, 125, "damaged packed file");
        assert!(
            out.stderr_text().contains("lz4"),
            "{name}: the error should name the lz4 data:\n{out:?}"
        );
        assert!(image_dirs(&t).is_empty(), "{name}: {:?}", image_dirs(&t));
    }
    // The base layer, whole, may be kept for the next image on it; never the top.
    assert!(layer_dirs(&t).len() <= 1, "{:?}", layer_dirs(&t));
}

#[test]
fn a_hostile_layers_whiteouts_symlinks_and_links_stay_in_the_root_merged_or_stacked() {
    let t = Test::new("layers-run-hostile");
    // A directory of the test user's, which a write through a symlink could reach.
    let canary = t.dir.join("canary");
    fs::create_dir(&canary).unwrap();
    fs::write(canary.join("victim"), "host\n").unwrap();
    t.env.give_to_user(&canary);
    t.env.give_to_user(&canary.join("victim"));
    let abs = canary.to_str().unwrap().as_bytes().to_vec();
    let mut rel = b"../../../../../../../../../..".to_vec();
    rel.extend_from_slice(&abs);
    let base = RawTar::on_busybox().finish();
    let mut links = RawTar::new();
    links.symlink(b"esc", &abs).symlink(b"rel", &rel);
    let links = links.finish();
    // Whiteouts through the symlinks, a file below one.
    let mut top = RawTar::new();
    top.file(b"esc/.wh.victim", b"")
        .file(b"rel/.wh..wh..opq", b"")
        .file(b"esc/planted", b"planted\n");
    let image = t.dir.join("through-links");
    layered_by_hand(&t, &[base.clone(), links.clone(), top.finish()], &image);
    // A hard link through a symlink to the host's file.
    let mut top = RawTar::new();
    top.hardlink(b"hl", b"esc/victim");
    let hard = t.dir.join("hard-link");
    layered_by_hand(&t, &[base.clone(), links.clone(), top.finish()], &hard);
    // A whiteout of the layer's parent, at its top and below it.
    let mut dotdot = Vec::new();
    for name in [&b".wh..."[..], b"bin/.wh...", b"bin/.wh.."] {
        let mut top = RawTar::new();
        top.file(name, b"");
        let out = t.dir.join(format!("dotdot-{}", dotdot.len()));
        layered_by_hand(&t, &[base.clone(), links.clone(), top.finish()], &out);
        dotdot.push(out);
    }
    let untouched = || {
        let names: Vec<_> = fs::read_dir(&canary).unwrap().flatten().collect();
        let victim = fs::symlink_metadata(canary.join("victim")).unwrap();
        assert_eq!(names.len(), 1, "the host directory changed: {names:?}");
        assert_eq!(victim.nlink(), 1, "the host file was linked to");
        assert_eq!(fs::read(canary.join("victim")).unwrap(), b"host\n");
    };
    for forced in [true, false] {
        let cmd = |packed: &Path| match forced {
            true => merged(t.cmd(packed)),
            false => t.cmd(packed),
        };
        let out = cmd(&image)
            .args(["--entrypoint", "/bin/cat", "/esc/planted"])
            .run();
        out.assert_success().assert_stdout("planted\n");
        untouched();
        let out = cmd(&hard).args(["--entrypoint", "true"]).run();
        binctr_tests::assert_fails_with_one_line(&out, 125, "hard link target missing");
        untouched();
        for packed in &dotdot {
            let out = cmd(packed).args(["--entrypoint", "true"]).run();
            binctr_tests::assert_fails_with_one_line(&out, 125, "a whiteout of '.' or '..'");
            untouched();
        }
    }
    // Neither the refused images nor a half-merged directory were kept.
    assert_eq!(merged_dirs(&t).len(), 1, "{:?}", merged_dirs(&t));
    assert!(binctr_tests::temp_entries(&t.cache()).is_empty());
}

/// A ramfs (no user xattrs, so no opaque directories: layers cannot be stacked on it)
/// mounted by the tests, which run as root, for the test user; unmounted when dropped.
struct Ramfs(PathBuf);

impl Ramfs {
    fn mount(t: &Test, path: &Path) -> Ramfs {
        assert!(
            t.env.test_user.is_some(),
            "this test mounts a ramfs: run it as root through scripts/test.sh"
        );
        fs::create_dir_all(path).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "ramfs", "ramfs"])
            .arg(path)
            .output()
            .unwrap();
        assert!(out.status.success(), "mount ramfs: {out:?}");
        let ramfs = Ramfs(path.to_path_buf());
        t.env.give_to_user(path);
        fs::set_permissions(path, fs::Permissions::from_mode(0o700)).unwrap();
        ramfs
    }
}

impl Drop for Ramfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn a_cache_that_cannot_stack_layers_merges_them_by_itself() {
    let t = Test::new("layers-run-no-xattrs");
    let cache = t.dir.join("ramfs");
    let _ramfs = Ramfs::mount(&t, &cache);
    let input = fixture("img-docker.tar");
    let v2 = pack(&t, &input, "img.v2", &[]);
    let v1 = pack(&t, &input, "img.v1", &["--flatten"]);
    let on_ramfs = |packed: &Path| t.cmd(packed).env("BINCTR_CACHE", &cache);
    let out = on_ramfs(&v2)
        .args(["-D", "--entrypoint", "/bin/cat", "/etc/kept-file"])
        .run();
    out.assert_success().assert_stdout("kept\n");
    let said = out.stderr_text();
    let why = "layers merged, not stacked: no user xattrs on the cache's filesystem";
    assert!(said.contains(why), "{said}");
    let out = on_ramfs(&v2).arg("--check").run();
    assert!(
        out.stdout_text()
            .contains("merged, not stacked: no user xattrs"),
        "{out:?}"
    );
    assert_same_tree(
        "merged on a ramfs",
        &tree_of(on_ramfs(&v2)),
        &tree_of(on_ramfs(&v1)),
    );
    let probes = fs::read_dir(&cache)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("probe"))
        .count();
    assert_eq!(probes, 0, "the probe left its directory");
}

/// `-u NAME` reads /etc/passwd as the container will see it: a layer whose /etc is
/// opaque (and has no passwd) hides the users of the layers below, as it hides their
/// files, stacked or flattened alike.
#[test]
fn users_of_a_layer_below_an_opaque_etc_are_not_found() {
    let t = Test::new("layers-run-opaque-etc");
    let bottom = t.dir.join("bottom.tar");
    let mut tar = RawTar::on_busybox();
    tar.dir(b"etc", 0o755)
        .file(
            b"etc/passwd",
            b"root:x:0:0::/root:/bin/sh\nalice:x:1234:1234::/:/bin/sh\n",
        )
        .file(b"etc/group", b"root:x:0:\nalice:x:1234:\n");
    fs::write(&bottom, tar.finish()).unwrap();
    let top = t.dir.join("top.tar");
    let mut tar = RawTar::new();
    tar.dir(b"etc", 0o755)
        .file(b"etc/.wh..wh..opq", b"")
        .file(b"etc/motd", b"no users here\n");
    fs::write(&top, tar.finish()).unwrap();
    let image = docker_archive(&t.dir.join("img"), &[&bottom, &top]);
    let v2 = pack(&t, &image, "img.v2", &[]);
    let v1 = pack(&t, &image, "img.v1", &["--flatten"]);
    for packed in [&v2, &v1] {
        let by_id = t.cmd(packed).args(["-u", "1234", "id", "-u"]).run();
        assert_eq!(
            by_id.stdout_text().trim(),
            "1234",
            "{}: {by_id:?}",
            packed.display()
        );
        let alice = t.cmd(packed).args(["-u", "alice", "id", "-u"]).run();
        assert_eq!(alice.code, Some(125), "{}: {alice:?}", packed.display());
        assert!(
            alice.stderr_text().contains("alice"),
            "{}: the error names the user: {alice:?}",
            packed.display()
        );
    }
}

/// Runs of one image starting together on an empty cache: one extracts each layer, the
/// others wait for that extraction only, never for the extracting run's container to
/// end (the first run's command here waits for the others' files, so a run held behind
/// its container fails the test: it happened, as four srun ranks running one after
/// another). Several rounds, since which waiter the kernel wakes first varies.
#[test]
fn runs_starting_together_wait_for_an_extraction_not_for_a_container() {
    let t = Test::new("layers-run-together");
    let image = pack(&t, &fixture("img-docker.tar"), "img.v2", &[]);
    let vol = t.dir.join("vol");
    fs::create_dir_all(&vol).unwrap();
    fs::set_permissions(&vol, fs::Permissions::from_mode(0o777)).unwrap();
    t.env.give_to_user(&vol);
    let volume = format!("{}:/v", vol.display());
    for round in 0..3 {
        bb_cache_rm(&t, &image);
        let first = t
            .cmd(&image)
            .args(["-v", &volume, "--entrypoint", "/bin/sh", "--", "-c"])
            .arg(format!(
                "i=0; while [ $(ls /v | grep -c '^{round}-') -lt 3 ] && [ $i -lt 200 ]; \
                 do sleep 0.1; i=$((i+1)); done; ls /v | grep -c '^{round}-'"
            ))
            .spawn();
        let others: Vec<_> = (0..3)
            .map(|n| {
                t.cmd(&image)
                    .args(["-v", &volume, "--entrypoint", "/bin/sh", "--", "-c"])
                    .arg(format!("touch /v/{round}-{n}"))
                    .spawn()
            })
            .collect();
        for other in others {
            other.wait().assert_success();
        }
        let out = first.wait();
        out.assert_success();
        assert_eq!(
            out.stdout_text().trim(),
            "3",
            "round {round}: the other runs did not start while the first ran: {out:?}"
        );
    }
}

/// `--cache-rm all` as the test user: an empty cache for the next round.
fn bb_cache_rm(t: &Test, image: &Path) {
    t.cmd(image)
        .args(["--cache-rm", "all"])
        .run()
        .assert_success();
}
