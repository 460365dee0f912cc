//! Issue 12, packing: binctr-pack accepts the layer tars and image layouts that docker,
//! podman and umoci accept, and flattens them as they do.
//!
//! Each case is an image built here, on top of the busybox root filesystem
//! (build/busybox.tar, itself a layer with `./` names): a layer written byte by byte
//! ([`RawTar`]) or by a real tool (GNU tar with `--format=pax` global headers or base-256
//! numbers, Python's tarfile), put in an OCI image layout (a directory, or a tar of one
//! as `docker save` of docker 25+ writes it). Each is packed with dist/binctr-pack, its
//! payload read back (`binctr-pack extract`) and compared with podman's flattening of the
//! same image (scripts/compare-podman.sh: podman load, create, export); where podman
//! refuses the image (a layer listing a path twice: podman and docker's tar-split
//! refuse it, umoci and containerd apply it, the last entry winning) with umoci's
//! (`umoci unpack`). A few are also run, to see the files from inside.
//!
//! A layer that really is damaged is refused in one line that names the layer, the byte
//! of its tar where it broke and the last entry read.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use binctr_tests::rawtar::{busybox_entries, filter, sha256, RawTar};
use binctr_tests::{random_bytes, s, Output, Test};
use serde_json::{json, Value};

const OCI_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
const COMPARE_TIMEOUT: Duration = Duration::from_secs(300);

fn hex(digest: [u8; 32]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// `sha256:<hex>` of some bytes.
fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(sha256(bytes)))
}

/// The busybox root filesystem, as the image's bottom layer.
fn busybox_layer(t: &Test) -> Layer {
    Layer::plain(fs::read(t.env.fixture("busybox.tar")).expect("read busybox.tar"))
}

/// One layer: its tar, and the blob that holds it (compressed or not) under a media type.
#[derive(Clone)]
struct Layer {
    media_type: String,
    tar: Vec<u8>,
    blob: Vec<u8>,
}

impl Layer {
    fn plain(tar: Vec<u8>) -> Layer {
        Layer {
            media_type: OCI_TAR.into(),
            blob: tar.clone(),
            tar,
        }
    }

    /// The same tar under another media type, the blob made by `compress` (gzip -n,
    /// zstd) or left plain.
    fn as_type(&self, media_type: &str, compress: Option<&str>) -> Layer {
        let blob = match compress {
            Some("gzip") => filter("gzip", &["-n", "-c"], &self.tar),
            Some("zstd") => filter("zstd", &["-q", "-c"], &self.tar),
            Some(other) => panic!("no compressor {other}"),
            None => self.tar.clone(),
        };
        Layer {
            media_type: media_type.into(),
            tar: self.tar.clone(),
            blob,
        }
    }
}

/// An OCI image layout being written.
struct Layout {
    dir: PathBuf,
}

/// An image written into a layout: its manifest's descriptor and its blobs' names.
struct Image {
    manifest: Value,
    config: String,
    layers: Vec<String>,
}

impl Layout {
    fn new(dir: PathBuf) -> Layout {
        fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        Layout { dir }
    }

    /// Writes a blob; its descriptor.
    fn blob(&self, media_type: &str, bytes: &[u8]) -> Value {
        let digest = digest(bytes);
        let path = self.dir.join("blobs/sha256").join(&digest[7..]);
        fs::write(path, bytes).unwrap();
        json!({"mediaType": media_type, "digest": digest, "size": bytes.len()})
    }

    /// Writes an image of these layers (config, manifest, layer blobs) for `arch`.
    fn image(&self, layers: &[Layer], arch: &str) -> Image {
        let descs: Vec<Value> = layers
            .iter()
            .map(|l| self.blob(&l.media_type, &l.blob))
            .collect();
        let diff_ids: Vec<String> = layers.iter().map(|l| digest(&l.tar)).collect();
        let config = json!({
            "architecture": arch,
            "os": "linux",
            "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        });
        let config = self.blob(
            "application/vnd.oci.image.config.v1+json",
            &serde_json::to_vec(&config).unwrap(),
        );
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config,
            "layers": descs,
        });
        let manifest = self.blob(
            "application/vnd.oci.image.manifest.v1+json",
            &serde_json::to_vec(&manifest).unwrap(),
        );
        Image {
            manifest,
            config: config["digest"].as_str().unwrap().to_string(),
            layers: descs
                .iter()
                .map(|d| d["digest"].as_str().unwrap().to_string())
                .collect(),
        }
    }

    fn index(&self, manifests: &[Value]) {
        let index = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests,
        });
        fs::write(
            self.dir.join("index.json"),
            serde_json::to_vec(&index).unwrap(),
        )
        .unwrap();
    }

    /// A plain layout: index.json names the image `name`.
    fn single(self, layers: &[Layer], name: &str) -> PathBuf {
        let image = self.image(layers, "amd64");
        self.index(&[annotated(
            image.manifest,
            json!({"org.opencontainers.image.ref.name": name}),
        )]);
        self.dir
    }

    /// `docker save` of docker 25+ (without the containerd image store): the OCI layout
    /// with containerd's full name and the tag as the OCI ref name, and beside it
    /// docker's manifest.json naming the same blobs, and `repositories`.
    fn docker25(self, images: &[(&[Layer], &str)]) -> PathBuf {
        let mut descs = Vec::new();
        let mut entries = Vec::new();
        for (layers, name) in images {
            let image = self.image(layers, "amd64");
            let tag = name.rsplit_once(':').unwrap().1;
            descs.push(annotated(
                image.manifest.clone(),
                json!({
                    "io.containerd.image.name": format!("docker.io/library/{name}"),
                    "org.opencontainers.image.ref.name": tag,
                }),
            ));
            entries.push(json!({
                "Config": format!("blobs/sha256/{}", &image.config[7..]),
                "RepoTags": [name],
                "Layers": image.layers.iter().map(|d| format!("blobs/sha256/{}", &d[7..])).collect::<Vec<_>>(),
            }));
        }
        self.index(&descs);
        fs::write(
            self.dir.join("manifest.json"),
            serde_json::to_vec(&entries).unwrap(),
        )
        .unwrap();
        fs::write(self.dir.join("repositories"), "{}").unwrap();
        self.dir
    }
}

fn annotated(mut desc: Value, annotations: Value) -> Value {
    desc["annotations"] = annotations;
    desc
}

/// A tar of a layout's directory, its members named as `docker save` names them (no
/// `./`), for `podman load` and binctr-pack.
fn tar_of(dir: &Path) -> PathBuf {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let out = dir.with_extension("tar");
    let status = Command::new("tar")
        .arg("-C")
        .arg(dir)
        .arg("-cf")
        .arg(&out)
        .args(&names)
        .status()
        .expect("run tar");
    assert!(status.success(), "tar of {}", dir.display());
    out
}

/// A layer made by GNU tar from the files `make` writes into a fresh directory, with
/// these options (`--format=...`, `--owner=...`), members named `./...`.
fn gnu_tar_layer(t: &Test, name: &str, opts: &[&str], make: impl FnOnce(&Path)) -> Layer {
    let dir = t.dir.join(format!("{name}.src"));
    fs::create_dir_all(&dir).unwrap();
    make(&dir);
    let out = Command::new("tar")
        .args(opts)
        .arg("-C")
        .arg(&dir)
        .args(["--sort=name", "--mtime=@1700000000", "-cf", "-", "."])
        .output()
        .expect("run tar");
    assert!(
        out.status.success(),
        "tar {opts:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Layer::plain(out.stdout)
}

/// A layer made by Python's tarfile: `script` gets `tarfile`, `io` and an open
/// archive `t` writing to stdout, and `add(name, data)`.
fn python_layer(script: &str) -> Layer {
    let program = format!(
        "import io, sys, tarfile\n\
         buf = io.BytesIO()\n\
         def add(t, name, data, **kw):\n\
         \x20   i = tarfile.TarInfo(name); i.size = len(data); i.mtime = 1700000000; i.mode = 0o644\n\
         \x20   for k, v in kw.items(): setattr(i, k, v)\n\
         \x20   t.addfile(i, io.BytesIO(data))\n\
         {script}\n\
         sys.stdout.buffer.write(buf.getvalue())\n"
    );
    Layer::plain(filter("python3", &["-c", &program], b""))
}

/// `binctr-pack IMAGE -o OUT FLAGS`, as whoever runs the tests.
fn pack(t: &Test, image: &Path, flags: &[&str]) -> (Output, PathBuf) {
    let name = image.file_name().unwrap().to_string_lossy().into_owned();
    let out = t.dir.join(format!("{name}.packed"));
    let output = t.packer().arg(image).arg("-o").arg(&out).args(flags).run();
    (output, out)
}

/// Packs IMAGE (it must pack), ready for the test user to run.
fn pack_ok(t: &Test, image: &Path, flags: &[&str]) -> PathBuf {
    let (output, out) = pack(t, image, flags);
    assert!(
        output.code == Some(0) && out.is_file(),
        "packing {} failed:\n{output:?}",
        image.display()
    );
    t.env.give_to_user(&out);
    fs::set_permissions(&out, fs::Permissions::from_mode(0o755)).unwrap();
    out
}

/// The packed file's root filesystem, as a tar file (`binctr-pack extract`).
fn payload(t: &Test, packed: &Path) -> PathBuf {
    let out = packed.with_extension("payload.tar");
    t.packer()
        .arg("extract")
        .arg(packed)
        .arg("-o")
        .arg(&out)
        .run()
        .assert_success();
    out
}

/// What a tree holds, path by path, as tar or the filesystem shows it: type, mode,
/// owner, size, content hash, link target, hard-link group (`links`, the sorted names
/// sharing the inode). A tar is read as it unpacks: later members win, a member replacing
/// a directory with something else drops what was below it, parents no member lists are
/// 0755 root's directories.
const TREE_PY: &str = r#"
import hashlib, json, os, stat, sys, tarfile
def norm(n):
    while n.startswith("./"): n = n[2:]
    n = n.strip("/")
    return "" if n == "." else n
def from_tar(path):
    tree, ino, n = {}, {}, [0]
    with tarfile.open(path, "r:*") as t:
        for m in t:
            name = norm(m.name)
            if not name: continue
            old = tree.get(name)
            if old is not None and not (old["type"] == "dir" and m.isdir()):
                for k in [k for k in tree if k.startswith(name + "/")]:
                    del tree[k]; ino.pop(k, None)
            ino.pop(name, None)
            e = {"mode": m.mode & 0o7777, "uid": m.uid, "gid": m.gid, "mtime": int(m.mtime)}
            if m.islnk():
                target = norm(m.linkname)
                e = dict(tree[target]); ino[name] = ino[target]
            elif m.isreg():
                data = t.extractfile(m).read()
                e.update(type="file", size=len(data), sha256=hashlib.sha256(data).hexdigest())
                ino[name] = n[0]; n[0] += 1
            elif m.isdir(): e.update(type="dir")
            elif m.issym(): e.update(type="symlink", target=m.linkname, mode=0o777)
            elif m.isfifo(): e.update(type="fifo")
            else: e.update(type="other")
            tree[name] = e
            parts = name.split("/")
            for i in range(1, len(parts)):
                p = "/".join(parts[:i])
                tree.setdefault(p, {"type": "dir", "mode": 0o755, "uid": 0, "gid": 0, "mtime": 0})
    return tree, ino
def from_dir(root):
    tree, ino = {}, {}
    for d, dirs, files in os.walk(root):
        for f in dirs + files:
            p = os.path.join(d, f); st = os.lstat(p); name = os.path.relpath(p, root)
            e = {"mode": stat.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid, "mtime": int(st.st_mtime)}
            if stat.S_ISREG(st.st_mode):
                data = open(p, "rb").read()
                e.update(type="file", size=len(data), sha256=hashlib.sha256(data).hexdigest())
                ino[name] = (st.st_dev, st.st_ino)
            elif stat.S_ISDIR(st.st_mode): e.update(type="dir")
            elif stat.S_ISLNK(st.st_mode): e.update(type="symlink", target=os.readlink(p))
            elif stat.S_ISFIFO(st.st_mode): e.update(type="fifo")
            else: e.update(type="other")
            tree[name] = e
    return tree, ino
path = sys.argv[1]
tree, ino = from_dir(path) if os.path.isdir(path) else from_tar(path)
groups = {}
for name, i in ino.items(): groups.setdefault(i, []).append(name)
for names in groups.values():
    if len(names) > 1:
        for name in names: tree[name]["links"] = sorted(names)
json.dump(tree, sys.stdout, sort_keys=True)
"#;

/// The tree of a tar file or a directory (see [`TREE_PY`]).
fn tree(path: &Path) -> BTreeMap<String, Value> {
    let out = filter("python3", &["-c", TREE_PY, &s(path)], b"");
    serde_json::from_slice(&out).expect("the tree as JSON")
}

/// The differences of two trees, modification times aside.
fn differences(ours: &BTreeMap<String, Value>, theirs: &BTreeMap<String, Value>) -> Vec<String> {
    let strip = |v: &Value| {
        let mut v = v.clone();
        v.as_object_mut().unwrap().remove("mtime");
        v
    };
    let mut diffs = Vec::new();
    for (name, v) in ours {
        match theirs.get(name) {
            None => diffs.push(format!("only in binctr: {name} {v}")),
            Some(w) if strip(v) != strip(w) => diffs.push(format!("{name}: binctr {v}, other {w}")),
            Some(_) => {}
        }
    }
    for (name, w) in theirs {
        if !ours.contains_key(name) {
            diffs.push(format!("only in the other: {name} {w}"));
        }
    }
    diffs
}

/// scripts/compare-podman.sh on these images: binctr's flattening equals podman's.
fn assert_same_as_podman(t: &Test, images: &[PathBuf]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/compare-podman.sh");
    let home = t.dir.join("podman-home");
    fs::create_dir_all(&home).unwrap();
    let out = t
        .cmd(Path::new("/bin/bash"))
        .as_current_user()
        .env("HOME", &home)
        .env("BINCTR_PACK", t.env.packer())
        .arg(script)
        .args(images.iter().map(|p| p.as_os_str().to_owned()))
        .timeout(COMPARE_TIMEOUT)
        .run();
    assert!(
        out.code == Some(0) && out.stdout.is_empty(),
        "binctr's flattened tree differs from podman's export (or the comparison failed):\n{out:?}"
    );
    for image in images {
        let label = format!("{}: ", image.file_name().unwrap().to_string_lossy());
        assert!(
            out.stderr_text().contains(&label),
            "{label}was not compared:\n{out:?}"
        );
    }
}

/// The tree of the packed IMAGE.
fn packed_tree(t: &Test, image: &Path) -> BTreeMap<String, Value> {
    let packed = pack_ok(t, image, &[]);
    tree(&payload(t, &packed))
}

fn field<'a>(tree: &'a BTreeMap<String, Value>, path: &str, key: &str) -> &'a Value {
    let entry = tree
        .get(path)
        .unwrap_or_else(|| panic!("{path} is missing from the tree"));
    &entry[key]
}

fn sha_of(text: &str) -> String {
    hex(sha256(text.as_bytes()))
}

#[test]
fn dot_slash_and_absolute_member_names() {
    let t = Test::new("accept-names");
    // Byte by byte: `./` and `/` names, hard-link targets and whiteouts.
    let mut raw = RawTar::new();
    raw.file(b"./etc/dot", b"dot\n")
        .file(b"/etc/abs", b"abs\n")
        .dir(b"/absdir/", 0o750)
        .file(b"//absdir/./f", b"f\n")
        .hardlink(b"./etc/hl", b"/etc/abs")
        .hardlink(b"/etc/hl2", b"./etc/dot")
        .symlink(b"/sym", b"/etc/abs")
        .file(b"/bin/.wh.arch", b"")
        .file(b"./bin/.wh.ar", b"");
    // A symlink whose header says 0644 (Python's tarfile writes that): a symlink is 0777.
    raw.header(b"./sym644", b'2', 0o644, 0, b"etc/dot", (0, 0));
    let raw = Layer::plain(raw.finish());
    // GNU tar, absolute names kept (-P) and a `./` directory.
    let gnu = {
        let dir = t.dir.join("abs-src");
        fs::create_dir_all(dir.join("opt")).unwrap();
        fs::write(dir.join("opt/gnu"), "gnu\n").unwrap();
        let out = Command::new("tar")
            .arg("-P")
            .arg(format!("--transform=s,^{},,", s(&dir)))
            .args(["--format=gnu", "-cf", "-"])
            .arg(dir.join("opt/gnu"))
            .output()
            .unwrap();
        assert!(out.status.success());
        Layer::plain(out.stdout)
    };
    let image = Layout::new(t.dir.join("names")).single(&[busybox_layer(&t), raw, gnu], "names");
    let tree = packed_tree(&t, &image);
    assert_eq!(field(&tree, "etc/dot", "sha256"), &json!(sha_of("dot\n")));
    assert_eq!(
        field(&tree, "etc/abs", "links"),
        &json!(["etc/abs", "etc/hl"])
    );
    assert_eq!(
        field(&tree, "etc/dot", "links"),
        &json!(["etc/dot", "etc/hl2"])
    );
    assert_eq!(field(&tree, "absdir", "mode"), &json!(0o750));
    assert_eq!(field(&tree, "absdir/f", "sha256"), &json!(sha_of("f\n")));
    assert_eq!(field(&tree, "sym", "target"), &json!("/etc/abs"));
    assert_eq!(field(&tree, "sym644", "target"), &json!("etc/dot"));
    assert_eq!(field(&tree, "opt/gnu", "sha256"), &json!(sha_of("gnu\n")));
    assert!(!tree.contains_key("bin/arch") && !tree.contains_key("bin/ar"));
    assert!(tree.keys().all(|k| !k.contains(".wh.")), "{tree:?}");
    assert_same_as_podman(&t, &[tar_of(&image)]);
    // The same names in a flat root filesystem tar, extracted by the stub.
    let mut flat = RawTar::on_busybox();
    flat.file(b"./etc/dot", b"dot\n")
        .file(b"/etc/abs", b"abs\n")
        .file(b"//absdir/./f", b"f\n")
        .hardlink(b"./etc/hl", b"/etc/abs")
        .symlink(b"/sym", b"/etc/abs");
    let script = "cat /etc/dot /etc/hl /absdir/f /sym; stat -c %h /etc/abs";
    run_flat(&t, "flat-names", &flat, script, "dot\nabs\nf\nabs\n2\n");
}

#[test]
fn pax_global_headers_are_skipped_as_docker_skips_them() {
    let t = Test::new("accept-pax-global");
    // GNU tar: a global header (comment) before the first member.
    let gnu = gnu_tar_layer(
        &t,
        "gnu-pax",
        &["--format=pax", "--pax-option=comment=made by GNU tar"],
        |dir| {
            fs::create_dir_all(dir.join("etc")).unwrap();
            fs::write(dir.join("etc/gnu-pax"), "gnu pax\n").unwrap();
        },
    );
    assert_eq!(&gnu.tar[156..157], b"g", "GNU tar wrote a global header");
    // Python's tarfile: global records that would rename and re-own everything, were
    // they applied (Go's archive/tar gives them to docker, which ignores them).
    let python = python_layer(
        "t = tarfile.open(fileobj=buf, mode='w', format=tarfile.PAX_FORMAT, \
         pax_headers={'comment': 'x', 'path': 'WRONG', 'uid': '4242', 'gid': '4243'})\n\
         add(t, 'etc/py-pax', b'python pax\\n')\n\
         add(t, 'etc/py-owned', b'owned\\n', uid=7, gid=8)\n\
         t.close()",
    );
    assert_eq!(&python.tar[156..157], b"g", "tarfile wrote a global header");
    let image = Layout::new(t.dir.join("pax-global"))
        .single(&[busybox_layer(&t), gnu, python], "pax-global");
    let tree = packed_tree(&t, &image);
    assert_eq!(
        field(&tree, "etc/gnu-pax", "sha256"),
        &json!(sha_of("gnu pax\n"))
    );
    assert_eq!(field(&tree, "etc/py-pax", "uid"), &json!(0));
    assert_eq!(field(&tree, "etc/py-owned", "uid"), &json!(7));
    assert!(!tree.contains_key("WRONG") && !tree.contains_key("pax_global_header"));
    assert_same_as_podman(&t, &[tar_of(&image)]);
    // A flat root filesystem tar with a global header packs and runs.
    let flat = busybox_entries().to_vec();
    let mut with_global = gnu_tar_layer(&t, "flat-pax", &["--format=pax"], |dir| {
        fs::write(dir.join("flat-file"), "flat\n").unwrap();
    })
    .tar;
    with_global.splice(0..0, flat);
    let input = t.dir.join("flat-pax.tar");
    fs::write(&input, &with_global).unwrap();
    let packed = pack_ok(&t, &input, &[]);
    t.cmd(&packed)
        .args(["cat", "/flat-file"])
        .run()
        .assert_success()
        .assert_stdout("flat\n");
}

#[test]
fn base256_numbers_are_read() {
    let t = Test::new("accept-base256");
    // GNU tar writes base-256 for ids past 2097151 and times before 1970 or past 2242.
    let gnu = gnu_tar_layer(
        &t,
        "gnu-b256",
        &["--format=gnu", "--owner=3000000", "--group=3000001"],
        |dir| {
            fs::create_dir_all(dir.join("big")).unwrap();
            fs::write(dir.join("big/ids"), "big ids\n").unwrap();
        },
    );
    assert!(
        gnu.tar.chunks(512).any(|h| h[108] == 0x80),
        "GNU tar wrote a base-256 uid"
    );
    let times = python_layer(
        "t = tarfile.open(fileobj=buf, mode='w', format=tarfile.GNU_FORMAT)\n\
         add(t, 'big/old', b'1969\\n', mtime=-100)\n\
         add(t, 'big/future', b'future\\n', mtime=10000000000)\n\
         t.close()",
    );
    // A small file whose size is written base-256 (legal for any number).
    let mut raw = RawTar::new();
    raw.header(b"big/size", b'0', 0o644, 5, b"", (0, 0));
    let at = raw.bytes.len() - 512;
    let h = &mut raw.bytes[at..at + 512];
    h[124..136].copy_from_slice(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5]);
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    raw.data(b"five\n");
    let raw = Layer::plain(raw.finish());
    let image = Layout::new(t.dir.join("base256")).single(
        &[busybox_layer(&t), gnu.clone(), times.clone(), raw.clone()],
        "base256",
    );
    let tree = packed_tree(&t, &image);
    assert_eq!(field(&tree, "big/ids", "uid"), &json!(3_000_000));
    assert_eq!(field(&tree, "big/ids", "gid"), &json!(3_000_001));
    assert_eq!(field(&tree, "big/old", "mtime"), &json!(-100));
    assert_eq!(
        field(&tree, "big/future", "mtime"),
        &json!(10_000_000_000u64)
    );
    assert_eq!(field(&tree, "big/size", "sha256"), &json!(sha_of("five\n")));
    assert_same_as_podman(&t, &[tar_of(&image)]);
    // In a flat root filesystem tar, extracted by the stub.
    let mut flat = RawTar::on_busybox();
    flat.bytes.extend_from_slice(&layers_tar_body(&gnu.tar));
    flat.bytes.extend_from_slice(&layers_tar_body(&times.tar));
    flat.bytes.extend_from_slice(&layers_tar_body(&raw.tar));
    let script = "cat /big/ids /big/size; stat -c %Y /big/old /big/future";
    let expected = "big ids\nfive\n-100\n10000000000\n";
    run_flat(&t, "flat-base256", &flat, script, expected);
}

/// A tar's members without its end: the blocks up to the first zero block.
fn layers_tar_body(tar: &[u8]) -> Vec<u8> {
    let mut at = 0;
    while at + 512 <= tar.len() && tar[at..at + 512].iter().any(|&b| b != 0) {
        let h = &tar[at..at + 512];
        let size = if h[124] & 0x80 != 0 {
            h[128..136]
                .iter()
                .fold(0u64, |n, &b| (n << 8) | u64::from(b))
        } else {
            let text: String = h[124..136]
                .iter()
                .take_while(|&&b| b != 0 && b != b' ')
                .map(|&b| b as char)
                .collect();
            u64::from_str_radix(text.trim(), 8).unwrap_or(0)
        };
        // Extension headers' data (L, x) is skipped as a file's is.
        at += 512 + size.div_ceil(512) as usize * 512;
    }
    tar[..at].to_vec()
}

#[test]
fn hard_links_whose_target_a_later_whiteout_deletes() {
    let t = Test::new("accept-links");
    let mut l1 = RawTar::new();
    l1.dir(b"data/", 0o755)
        .file(b"data/f", b"f data\n")
        .file(b"data/g", b"g data\n")
        .file(b"data/k", b"k data\n");
    let mut l2 = RawTar::new();
    l2.hardlink(b"data/l", b"data/f")
        .hardlink(b"data/m", b"data/f")
        .dir(b"x/", 0o755)
        // The link, then a whiteout of its target in the same layer.
        .hardlink(b"x/lg", b"data/g")
        .file(b"data/.wh.g", b"")
        .hardlink(b"data/lk", b"data/k");
    let mut l3 = RawTar::new();
    l3.file(b"data/.wh.f", b"").file(b"data/.wh.k", b"");
    let mut l4 = RawTar::new();
    l4.file(b"data/k", b"new k\n");
    let layers = [
        busybox_layer(&t),
        Layer::plain(l1.finish()),
        Layer::plain(l2.finish()),
        Layer::plain(l3.finish()),
        Layer::plain(l4.finish()),
    ];
    let image = Layout::new(t.dir.join("links")).single(&layers, "links");
    let tree = packed_tree(&t, &image);
    assert!(!tree.contains_key("data/f") && !tree.contains_key("data/g"));
    assert_eq!(field(&tree, "data/l", "sha256"), &json!(sha_of("f data\n")));
    assert_eq!(
        field(&tree, "data/l", "links"),
        &json!(["data/l", "data/m"])
    );
    assert_eq!(field(&tree, "x/lg", "sha256"), &json!(sha_of("g data\n")));
    assert_eq!(
        field(&tree, "data/lk", "sha256"),
        &json!(sha_of("k data\n"))
    );
    assert_eq!(field(&tree, "data/k", "sha256"), &json!(sha_of("new k\n")));
    assert_eq!(field(&tree, "data/k", "links"), &Value::Null);
    assert_same_as_podman(&t, &[tar_of(&image)]);
}

#[test]
fn whiteouts_for_paths_that_never_existed() {
    let t = Test::new("accept-whiteouts");
    let mut l2 = RawTar::new();
    l2.dir(b"nothere/", 0o700)
        .file(b"nothere/.wh.x", b"")
        .file(b".wh.ghost", b"")
        .file(b"etc/.wh.nope", b"")
        .file(b"newdir/.wh..wh..opq", b"")
        .file(b"newdir/a", b"a\n")
        // Its directories never existed either: made, as docker and podman make them.
        .file(b"no/such/.wh.dir", b"");
    // A layer without directory entries, then its only file deleted: the directory stays.
    let mut l3 = RawTar::new();
    l3.file(b"implicit/only", b"only\n");
    let mut l4 = RawTar::new();
    l4.file(b"implicit/.wh.only", b"");
    let layers = [
        busybox_layer(&t),
        Layer::plain(l2.finish()),
        Layer::plain(l3.finish()),
        Layer::plain(l4.finish()),
    ];
    let image = Layout::new(t.dir.join("whiteouts")).single(&layers, "whiteouts");
    let tree = packed_tree(&t, &image);
    assert_eq!(field(&tree, "nothere", "mode"), &json!(0o700));
    assert_eq!(field(&tree, "newdir/a", "sha256"), &json!(sha_of("a\n")));
    assert_eq!(field(&tree, "no/such", "type"), &json!("dir"));
    assert_eq!(field(&tree, "implicit", "type"), &json!("dir"));
    assert!(!tree.contains_key("implicit/only"));
    assert!(tree.contains_key("etc/passwd"), "etc/ untouched");
    assert_same_as_podman(&t, &[tar_of(&image)]);
}

#[test]
fn duplicate_entries_the_last_wins_as_umoci_applies_them() {
    let t = Test::new("accept-duplicates");
    let mut l2 = RawTar::new();
    l2.file(b"dup", b"one\n")
        .hardlink(b"duplink", b"dup")
        .file(b"dup", b"two\n")
        .dir(b"dd/", 0o700)
        .file(b"dd/in", b"in\n")
        .dir(b"dd/", 0o750)
        .file(b"fd", b"file\n")
        .dir(b"fd/", 0o755)
        .file(b"fd/x", b"x\n")
        .dir(b"df/", 0o755)
        .file(b"df/y", b"y\n")
        .file(b"df", b"now a file\n")
        .symlink(b"s", b"a")
        .symlink(b"s", b"b")
        .file(b"bin/sh", b"not a shell\n")
        .hardlink(b"bin/sh", b"bin/busybox");
    let layers = [busybox_layer(&t), Layer::plain(l2.finish())];
    let image = Layout::new(t.dir.join("dups")).single(&layers, "dups");
    let tree = packed_tree(&t, &image);
    assert_eq!(field(&tree, "dup", "sha256"), &json!(sha_of("two\n")));
    assert_eq!(field(&tree, "duplink", "sha256"), &json!(sha_of("one\n")));
    assert_eq!(field(&tree, "dd", "mode"), &json!(0o750));
    assert_eq!(field(&tree, "df", "type"), &json!("file"));
    assert!(!tree.contains_key("df/y"));
    assert_eq!(field(&tree, "s", "target"), &json!("b"));
    assert!(field(&tree, "bin/sh", "links")
        .as_array()
        .unwrap()
        .contains(&json!("bin/busybox")));
    // podman (and docker) refuse a layer naming a path twice (tar-split's "duplicates of
    // file paths not supported"); umoci applies it: compare with umoci's unpacked tree.
    let bundle = t.dir.join("dups-bundle");
    let out = Command::new("umoci")
        .arg("unpack")
        .arg("--image")
        .arg(format!("{}:dups", s(&image)))
        .arg(&bundle)
        .output()
        .expect("run umoci");
    assert!(
        out.status.success(),
        "umoci unpack: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let umoci = self::tree(&bundle.join("rootfs"));
    let diffs = differences(&tree, &umoci);
    assert!(
        diffs.is_empty(),
        "binctr and umoci differ:\n{}",
        diffs.join("\n")
    );
    // Duplicates in a flat root filesystem tar (passed through to the stub), which
    // applies them alike.
    let mut flat = RawTar::on_busybox();
    flat.file(b"dup", b"one\n")
        .hardlink(b"duplink", b"dup")
        .file(b"dup", b"two\n")
        .dir(b"dd/", 0o700)
        .file(b"dd/in", b"in\n")
        .dir(b"dd/", 0o750)
        .file(b"fd", b"file\n")
        .dir(b"fd/", 0o755)
        .file(b"fd/x", b"x\n")
        .symlink(b"s", b"a")
        .symlink(b"s", b"b");
    let script = "cat /dup /duplink /fd/x; stat -c %a /dd; readlink /s";
    run_flat(&t, "flat-dups", &flat, script, "two\none\nx\n750\nb\n");
}

/// Packs a flat root filesystem tar and runs SCRIPT in it (busybox sh).
fn run_flat(t: &Test, name: &str, tar: &RawTar, script: &str, expected: &str) {
    let input = t.dir.join(format!("{name}.tar"));
    fs::write(&input, tar.finish()).unwrap();
    let packed = pack_ok(t, &input, &[]);
    t.cmd(&packed)
        .args(["/bin/busybox", "sh", "-c", script])
        .run()
        .assert_success()
        .assert_stdout(expected);
}

/// A flat tar whose later entry replaces a directory holding files with a file: the
/// packer passes it through, and the stub's extraction removes the directory with all
/// it holds (it once removed it with rmdir alone: "Directory not empty"), as layers
/// flattened by the packer do (above).
#[test]
fn flat_tar_entry_replacing_a_directory_that_holds_files() {
    let t = Test::new("accept-flat-dir-to-file");
    let mut flat = RawTar::on_busybox();
    flat.dir(b"df/", 0o755)
        .file(b"df/y", b"y\n")
        .file(b"df", b"now a file\n");
    run_flat(&t, "flat-df", &flat, "cat /df", "now a file\n");
}

#[test]
fn docker_25_save_output_packs_by_its_names() {
    let t = Test::new("accept-docker25");
    let mut l2 = RawTar::new();
    l2.file(b"etc/d25", b"docker 25\n");
    let mut other = RawTar::new();
    other.file(b"etc/other", b"other\n");
    let base = busybox_layer(&t);
    let one = [base.clone(), Layer::plain(l2.finish())];
    let image = Layout::new(t.dir.join("docker25")).docker25(&[(&one, "acc:latest")]);
    let archive = tar_of(&image);
    let packed = pack_ok(&t, &archive, &[]);
    let inspect = t.packer().arg("inspect").arg(&packed).run();
    assert!(
        inspect
            .stdout_text()
            .contains("docker.io/library/acc:latest"),
        "the reference is containerd's full name, not the tag alone:\n{inspect:?}"
    );
    t.cmd(&packed)
        .args(["cat", "/etc/d25"])
        .run()
        .assert_success()
        .assert_stdout("docker 25\n");
    assert_same_as_podman(&t, &[archive.clone(), image.clone()]);
    // Two images saved together: chosen as `docker run` names them.
    let two = [base.clone(), Layer::plain(other.finish())];
    let both = Layout::new(t.dir.join("docker25-two"))
        .docker25(&[(&one, "acc:latest"), (&two, "other:1.0")]);
    let both = tar_of(&both);
    let (out, _) = pack(&t, &both, &[]);
    out.assert_code(1).assert_one_error_line("binctr-pack: ");
    assert!(
        out.stderr_text().contains("docker.io/library/acc:latest")
            && out.stderr_text().contains("--image"),
        "{out:?}"
    );
    for name in [
        "other:1.0",
        "library/other:1.0",
        "docker.io/library/other:1.0",
        "1.0",
    ] {
        let packed = pack_ok(&t, &both, &["--image", name]);
        t.cmd(&packed)
            .args(["cat", "/etc/other"])
            .run()
            .assert_success()
            .assert_stdout("other\n");
    }
}

#[test]
fn docker_save_with_the_containerd_store_packs_the_platform_it_holds() {
    let t = Test::new("accept-containerd-save");
    let mut l2 = RawTar::new();
    l2.file(b"etc/ctr", b"containerd store\n");
    let gz = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    let layers = [
        busybox_layer(&t).as_type(gz, Some("gzip")),
        Layer::plain(l2.finish()).as_type(gz, Some("gzip")),
    ];
    let layout = Layout::new(t.dir.join("ctr-save"));
    let image = layout.image(&layers, "amd64");
    let platform = |desc: Value, arch: &str| {
        let mut desc = desc;
        desc["platform"] = json!({"architecture": arch, "os": "linux"});
        desc
    };
    // The image index names every platform; only amd64's blobs were saved. An
    // attestation manifest (unknown/unknown) is listed too.
    let missing = |n: u8| {
        json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{}", format!("{n:02x}").repeat(32)),
            "size": 1234,
        })
    };
    let attestation = annotated(
        platform(missing(2), "unknown"),
        json!({"vnd.docker.reference.type": "attestation-manifest"}),
    );
    let mut attestation = attestation;
    attestation["platform"]["os"] = json!("unknown");
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [platform(missing(1), "arm64"), platform(image.manifest.clone(), "amd64"), attestation],
    });
    let index = layout.blob(
        "application/vnd.oci.image.index.v1+json",
        &serde_json::to_vec(&index).unwrap(),
    );
    layout.index(&[annotated(
        index,
        json!({
            "io.containerd.image.name": "docker.io/library/ctr:latest",
            "org.opencontainers.image.ref.name": "latest",
        }),
    )]);
    let manifest = json!([{
        "Config": format!("blobs/sha256/{}", &image.config[7..]),
        "RepoTags": ["ctr:latest"],
        "Layers": image.layers.iter().map(|d| format!("blobs/sha256/{}", &d[7..])).collect::<Vec<_>>(),
    }]);
    fs::write(
        layout.dir.join("manifest.json"),
        serde_json::to_vec(&manifest).unwrap(),
    )
    .unwrap();
    let archive = tar_of(&layout.dir);
    let packed = pack_ok(&t, &archive, &["--image", "ctr"]);
    t.cmd(&packed)
        .args(["cat", "/etc/ctr"])
        .run()
        .assert_success()
        .assert_stdout("containerd store\n");
    // Asked for arm64, whose blobs are not there: said so.
    assert_same_as_podman(&t, std::slice::from_ref(&archive));
    let (out, _) = pack(&t, &archive, &["--platform", "linux/arm64"]);
    out.assert_code(1).assert_one_error_line("binctr-pack: ");
    assert!(out.stderr_text().contains("missing"), "{out:?}");
}

#[test]
fn layers_of_every_media_type_docker_reads() {
    let t = Test::new("accept-media-types");
    let file_layer = |name: &str| {
        let mut l = RawTar::new();
        l.file(
            format!("etc/{name}").as_bytes(),
            format!("{name}\n").as_bytes(),
        );
        Layer::plain(l.finish())
    };
    let cases: [(&str, &str, Option<&str>); 7] = [
        (
            "nd",
            "application/vnd.oci.image.layer.nondistributable.v1.tar",
            None,
        ),
        (
            "nd-gzip",
            "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
            Some("gzip"),
        ),
        (
            "nd-zstd",
            "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
            Some("zstd"),
        ),
        (
            "foreign-gzip",
            "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
            Some("gzip"),
        ),
        // docker's plain types may hold gzip (containerd: "may have been compressed but
        // failed to use the correct media type"): the bytes tell.
        (
            "foreign",
            "application/vnd.docker.image.rootfs.foreign.diff.tar",
            Some("gzip"),
        ),
        (
            "diff-gz-bytes",
            "application/vnd.docker.image.rootfs.diff.tar",
            Some("gzip"),
        ),
        (
            "diff-zstd",
            "application/vnd.docker.image.rootfs.diff.tar.zstd",
            Some("zstd"),
        ),
    ];
    let mut layers = vec![busybox_layer(&t)];
    for (name, media_type, compress) in cases {
        layers.push(file_layer(name).as_type(media_type, compress));
    }
    let image = Layout::new(t.dir.join("media")).single(&layers, "media");
    let packed = pack_ok(&t, &image, &[]);
    let script = cases
        .iter()
        .map(|(name, _, _)| format!("cat /etc/{name}"))
        .collect::<Vec<_>>()
        .join("; ");
    let expected: String = cases
        .iter()
        .map(|(name, _, _)| format!("{name}\n"))
        .collect();
    t.cmd(&packed)
        .args(["sh", "-c", &script])
        .run()
        .assert_success()
        .assert_stdout(&expected);
    // podman reads the OCI ones (and the foreign gzip one) as binctr does.
    let oci: Vec<Layer> = layers[..5].to_vec();
    let podman = Layout::new(t.dir.join("media-podman")).single(&oci, "media-podman");
    assert_same_as_podman(&t, &[tar_of(&podman)]);
    // An encrypted layer is refused, saying what to do.
    let encrypted = [
        busybox_layer(&t),
        file_layer("enc").as_type(
            "application/vnd.oci.image.layer.v1.tar+gzip+encrypted",
            Some("gzip"),
        ),
    ];
    let image = Layout::new(t.dir.join("encrypted")).single(&encrypted, "encrypted");
    let (out, dest) = pack(&t, &image, &[]);
    out.assert_code(1).assert_one_error_line("binctr-pack: ");
    assert!(
        out.stderr_text().contains("is encrypted") && out.stderr_text().contains("decrypt"),
        "{out:?}"
    );
    assert!(!dest.exists());
}

#[test]
fn a_damaged_layer_names_the_layer_the_byte_and_the_last_entry() {
    let t = Test::new("accept-damaged");
    let mut l2 = RawTar::new();
    l2.file(b"etc/ok1", b"ok1\n")
        .file(b"etc/ok2", &random_bytes(3000, 12));
    let whole = l2.finish();
    // Cut inside etc/ok2's data, the digests made for the cut bytes: the tar is what is
    // wrong, not the transfer.
    let cut = Layer::plain(whole[..512 * 3 + 1000].to_vec());
    let image = Layout::new(t.dir.join("cut")).single(&[busybox_layer(&t), cut.clone()], "cut");
    let (out, dest) = pack(&t, &image, &[]);
    out.assert_code(1).assert_one_error_line("binctr-pack: ");
    let layer = digest(&cut.blob);
    let expected = format!(
        "layer {layer} is damaged: the archive ends inside an entry's data (at byte 2536 of its tar; the last entry read is 'etc/ok2')"
    );
    assert!(out.stderr_text().contains(&expected), "{expected}\n{out:?}");
    assert!(!dest.exists());
    // The same layer gzip-compressed, the gzip stream cut: where the tar stopped.
    let gz = filter("gzip", &["-n", "-c"], &whole);
    let cut_gz = Layer {
        media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
        tar: whole.clone(),
        blob: gz[..gz.len() - 1500].to_vec(),
    };
    let image =
        Layout::new(t.dir.join("cut-gz")).single(&[busybox_layer(&t), cut_gz.clone()], "cut-gz");
    let (out, _) = pack(&t, &image, &[]);
    out.assert_code(1).assert_one_error_line("binctr-pack: ");
    let err = out.stderr_text();
    assert!(
        err.contains(&format!("layer {} is damaged: ", digest(&cut_gz.blob)))
            && err.contains(" of its tar; the last entry read is 'etc/ok2')")
            && err.contains("(at byte "),
        "{out:?}"
    );
    // A damaged header in a docker-archive layer (checked by its diff_id only).
    let mut bad = whole.clone();
    bad[1024 + 20] ^= 0x55; // etc/ok2's header, after etc/ok1's header and data
    let bad_layer = Layer::plain(bad);
    let dir = t.dir.join("docker-archive");
    fs::create_dir_all(&dir).unwrap();
    let base = busybox_layer(&t);
    // docker save's names: <id>/layer.tar.
    let base_member = format!("{}/layer.tar", &digest(&base.tar)[7..]);
    let bad_member = format!("{}/layer.tar", &digest(&bad_layer.tar)[7..]);
    for (member, tar) in [(&base_member, &base.tar), (&bad_member, &bad_layer.tar)] {
        fs::create_dir_all(dir.join(member).parent().unwrap()).unwrap();
        fs::write(dir.join(member), tar).unwrap();
    }
    let config = json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [digest(&base.tar), digest(&bad_layer.tar)]},
    });
    let config = serde_json::to_vec(&config).unwrap();
    let config_name = format!("{}.json", &digest(&config)[7..]);
    fs::write(dir.join(&config_name), &config).unwrap();
    fs::write(
        dir.join("manifest.json"),
        serde_json::to_vec(&json!([{"Config": config_name, "RepoTags": ["bad:latest"], "Layers": [base_member, bad_member]}])).unwrap(),
    )
    .unwrap();
    let archive = tar_of(&dir);
    let (out, _) = pack(&t, &archive, &[]);
    out.assert_code(1).assert_one_error_line("binctr-pack: ");
    let expected = format!(
        "layer {bad_member} is damaged: a header's checksum does not match (not a tar, or damaged) (at byte 1536 of its tar; the last entry read is 'etc/ok1')"
    );
    assert!(out.stderr_text().contains(&expected), "{expected}\n{out:?}");
}
