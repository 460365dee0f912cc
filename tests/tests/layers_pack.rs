//! Format 2, the packer's side (issue 16): an image packed as its layers, each an lz4
//! frame of its own whose tar is the layer normalized, against the same image packed
//! `--flatten` (format 1, what every stub runs).
//!
//! What is checked: the layers flattened back (`binctr-pack extract`) give the format 1
//! tree file for file (names, types, modes, owners, times, sizes, link targets, content,
//! hard-link groups), for every multi-layer fixture; each layer's frame and tar match the
//! sha256 and digest the config gives them; a base layer shared by two images is the same
//! layer, byte for byte; an image of more than 64 layers is squashed to 64; a hard link
//! to a lower layer's file is copied up with its link group. The stub runs both formats
//! (tests/layers_run.rs runs format 2 through the layer store).
use binctr_tests::rawtar::{filter, sha256, Footer, RawTar};
use binctr_tests::{Env, Test};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

const MAKE_IMAGES: &str = "run scripts/make-test-images.sh and scripts/make-umoci-insert-image.sh (scripts/test.sh runs them)";

/// The multi-layer fixtures, and a flat one, by file name in build/.
const FIXTURES: &[(&str, usize)] = &[
    ("img-docker.tar", 2),
    ("img-oci", 2),
    ("img-oci.tar", 2),
    ("img-oci-zstd", 2),
    ("img-umoci-insert.tar", 5),
    ("img-umoci-insert-docker.tar", 5),
    ("img-flat.tar", 1),
];

fn fixture(name: &str) -> PathBuf {
    let path = Env::get().fixtures.join(name);
    assert!(
        path.exists(),
        "fixture {} is missing: {MAKE_IMAGES}",
        path.display()
    );
    path
}

/// Packs `input` into the test's directory with extra flags; gives the file and the
/// packer's stderr.
fn pack(t: &Test, input: &Path, name: &str, flags: &[&str]) -> (PathBuf, String) {
    let out = t.dir.join(name);
    let output = t.packer().arg(input).arg("-o").arg(&out).args(flags).run();
    assert!(
        output.code == Some(0) && out.is_file(),
        "packing {} failed:\n{output:?}",
        input.display()
    );
    (out, output.stderr_text())
}

/// `binctr-pack extract FILE -o -`.
fn extract(t: &Test, packed: &Path) -> Vec<u8> {
    let output = t
        .packer()
        .arg("extract")
        .arg(packed)
        .args(["-o", "-"])
        .run();
    output.assert_success();
    output.stdout
}

/// A packed file read by hand (docs/FORMAT.md): its footer, config and payload.
struct Packed {
    footer: Footer,
    config: Value,
    payload: Vec<u8>,
}

impl Packed {
    fn read(path: &Path) -> Packed {
        let bytes = fs::read(path).unwrap();
        let footer = Footer::decode(&bytes);
        let p = footer.payload_offset as usize;
        let c = p + footer.payload_len as usize;
        let config = serde_json::from_slice(&bytes[c..c + footer.config_len as usize]).unwrap();
        Packed {
            footer,
            config,
            payload: bytes[p..c].to_vec(),
        }
    }

    fn layers(&self) -> Vec<Value> {
        self.config["layers"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Layer `n`'s frame, as the config places it.
    fn frame(&self, layer: &Value) -> &[u8] {
        let at = layer["offset"].as_u64().unwrap() as usize;
        let len = layer["length"].as_u64().unwrap() as usize;
        &self.payload[at..at + len]
    }

    /// Layer `n`'s tar, decompressed by the lz4 command.
    fn tar(&self, layer: &Value) -> Vec<u8> {
        filter("lz4", &["-d", "-c"], self.frame(layer))
    }
}

fn hex(digest: [u8; 32]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// What a path is, independent of how the tar was written.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    kind: char,
    mode: u64,
    uid: u64,
    gid: u64,
    mtime: u64,
    /// Symlink target, content digest and size, device numbers; the xattrs.
    detail: String,
}

/// A tree: every path with its record, and the hard-link groups.
#[derive(Debug, PartialEq, Eq)]
struct Listing {
    paths: BTreeMap<String, Record>,
    links: BTreeSet<BTreeSet<String>>,
}

fn octal(field: &[u8]) -> u64 {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        return field[1..]
            .iter()
            .fold(u64::from(field[0] & 0x7f), |n, &b| (n << 8) | u64::from(b));
    }
    let text: String = field
        .iter()
        .take_while(|&&b| b != 0)
        .map(|&b| b as char)
        .collect();
    u64::from_str_radix(text.trim(), 8).unwrap_or(0)
}

fn cstr(field: &[u8]) -> String {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

fn normalize(path: &str) -> String {
    path.split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect::<Vec<_>>()
        .join("/")
}

/// The entries of a tar (ustar, GNU long names, PAX): (path, kind byte, link, header,
/// data, PAX records), in order.
type Entry = (
    String,
    u8,
    String,
    Vec<u8>,
    Vec<u8>,
    BTreeMap<String, String>,
);

fn entries(tar: &[u8]) -> Vec<Entry> {
    let mut out = Vec::new();
    let (mut long_name, mut long_link) = (None, None);
    let mut pax: BTreeMap<String, String> = BTreeMap::new();
    let mut at = 0;
    while at + 512 <= tar.len() {
        let h = &tar[at..at + 512];
        if h.iter().all(|&b| b == 0) {
            break;
        }
        let mut size = octal(&h[124..136]);
        if let Some(s) = pax.get("size") {
            size = s.parse().unwrap();
        }
        let data = tar[at + 512..at + 512 + size as usize].to_vec();
        at += 512 + (size as usize).div_ceil(512) * 512;
        match h[156] {
            b'L' => long_name = Some(cstr(&data)),
            b'K' => long_link = Some(cstr(&data)),
            b'x' => {
                let mut rest = &data[..];
                while let Some(space) = rest.iter().position(|&b| b == b' ') {
                    let len: usize = std::str::from_utf8(&rest[..space])
                        .unwrap()
                        .parse()
                        .unwrap();
                    let record = String::from_utf8_lossy(&rest[space + 1..len - 1]).into_owned();
                    if let Some((k, v)) = record.split_once('=') {
                        pax.insert(k.to_string(), v.to_string());
                    }
                    rest = &rest[len..];
                }
            }
            b'g' => {}
            kind => {
                let mut name = cstr(&h[0..100]);
                if &h[257..263] == b"ustar\0" && h[345] != 0 {
                    name = format!("{}/{}", cstr(&h[345..500]), name);
                }
                let name = normalize(&pax.remove("path").or(long_name.take()).unwrap_or(name));
                let link = pax
                    .remove("linkpath")
                    .or(long_link.take())
                    .unwrap_or_else(|| cstr(&h[157..257]));
                let records = std::mem::take(&mut pax);
                out.push((name, kind, link, h.to_vec(), data, records));
            }
        }
    }
    out
}

/// The tree a tar extracts to (later entries replace earlier ones).
fn listing(tar: &[u8]) -> Listing {
    let mut paths = BTreeMap::new();
    let mut inode: BTreeMap<String, usize> = BTreeMap::new();
    for (n, (name, kind, link, h, data, pax)) in entries(tar).into_iter().enumerate() {
        if name.is_empty() {
            continue;
        }
        let field = |key: &str, range: std::ops::Range<usize>| {
            pax.get(key)
                .map_or_else(|| octal(&h[range.clone()]), |v| v.parse().unwrap())
        };
        let xattrs: Vec<String> = pax
            .iter()
            .filter(|(k, _)| k.starts_with("SCHILY.xattr."))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let record = |kind: char, detail: String| Record {
            kind,
            mode: octal(&h[100..108]) & 0o7777,
            uid: field("uid", 108..116),
            gid: field("gid", 116..124),
            mtime: field("mtime", 136..148),
            detail: format!("{detail} {}", xattrs.join(",")),
        };
        let record = match kind {
            b'1' => {
                let target = normalize(&link);
                let shared = paths
                    .get(&target)
                    .cloned()
                    .unwrap_or_else(|| panic!("hard link {name} to {target}, not before it"));
                inode.insert(name.clone(), inode[&target]);
                paths.insert(name, shared);
                continue;
            }
            b'2' => record('l', link),
            b'5' => record('d', String::new()),
            b'3' | b'4' => record(
                kind as char,
                format!("{},{}", octal(&h[329..337]), octal(&h[337..345])),
            ),
            b'6' => record('p', String::new()),
            _ => record('f', format!("{}/{}", hex(sha256(&data)), data.len())),
        };
        inode.insert(name.clone(), n);
        paths.insert(name, record);
    }
    let mut groups: BTreeMap<usize, BTreeSet<String>> = BTreeMap::new();
    for (path, n) in &inode {
        if paths.contains_key(path) {
            groups.entry(*n).or_default().insert(path.clone());
        }
    }
    let links = groups.into_values().filter(|g| g.len() > 1).collect();
    Listing { paths, links }
}

/// Checks what the config says of each layer against its frame and tar.
fn check_layers(packed: &Packed) {
    let layers = packed.layers();
    assert!(!layers.is_empty(), "no layers in {}", packed.config);
    let mut offset = 0;
    for (n, layer) in layers.iter().enumerate() {
        assert_eq!(layer["offset"].as_u64(), Some(offset), "layer {n} offset");
        let frame = packed.frame(layer);
        assert_eq!(layer["sha256"].as_str(), Some(hex(sha256(frame)).as_str()));
        let tar = packed.tar(layer);
        let digest = format!("sha256:{}", hex(sha256(&tar)));
        assert_eq!(layer["digest"].as_str(), Some(digest.as_str()), "layer {n}");
        assert_eq!(layer["size"].as_u64(), Some(tar.len() as u64));
        offset += layer["length"].as_u64().unwrap();
    }
    assert_eq!(offset, packed.footer.payload_len);
    assert_eq!(
        hex(sha256(&packed.payload)),
        hex(packed.footer.payload_sha256)
    );
}

#[test]
fn layers_flattened_give_the_flattened_tree_of_every_fixture() {
    let t = Test::new("layers-equal-flat");
    let mut base_digests = BTreeMap::new();
    for &(name, count) in FIXTURES {
        let input = fixture(name);
        let (v2, _) = pack(&t, &input, &format!("{name}.v2"), &[]);
        let (v1, _) = pack(&t, &input, &format!("{name}.v1"), &["--flatten"]);
        let (v1_packed, v2_packed) = (Packed::read(&v1), Packed::read(&v2));
        assert_eq!(v1_packed.footer.version, 1, "{name}");
        assert_eq!(v1_packed.config["version"], 1, "{name}");
        assert!(v1_packed.config.get("layers").is_none(), "{name}");
        assert_eq!(v2_packed.footer.version, 2, "{name}");
        assert_eq!(v2_packed.config["version"], 2, "{name}");
        assert_eq!(v2_packed.layers().len(), count, "{name}");
        check_layers(&v2_packed);
        // The format 1 payload is one frame of the flattened tar.
        let flat = filter("lz4", &["-d", "-c"], &v1_packed.payload);
        assert_eq!(extract(&t, &v1), flat, "{name}");
        let flat = listing(&flat);
        assert!(flat.paths.len() > 100, "{name}: {} paths", flat.paths.len());
        assert_eq!(listing(&extract(&t, &v2)), flat, "{name}");
        // The image's diff_ids are shown; a flat tar has none.
        for layer in v2_packed.layers() {
            let diff_id = layer["diff_id"].as_str().unwrap_or_default();
            assert_eq!(diff_id.len(), if count > 1 { 71 } else { 0 }, "{name}");
        }
        // Packing is deterministic.
        let (again, _) = pack(&t, &input, &format!("{name}.again"), &[]);
        assert!(
            fs::read(&again).unwrap() == fs::read(&v2).unwrap(),
            "{name}"
        );
        let layers = v2_packed.layers();
        base_digests.insert(name, layers[0]["digest"].as_str().unwrap().to_string());
    }
    // The same image in every form: the same layers.
    for form in ["img-oci", "img-oci.tar", "img-oci-zstd"] {
        assert_eq!(base_digests[form], base_digests["img-docker.tar"], "{form}");
    }
    assert_eq!(
        base_digests["img-umoci-insert.tar"],
        base_digests["img-umoci-insert-docker.tar"]
    );
}

#[test]
fn upper_layers_hold_whiteouts_opaque_markers_and_copied_up_links() {
    let t = Test::new("layers-upper");
    let (v2, _) = pack(&t, &fixture("img-docker.tar"), "img.v2", &[]);
    let packed = Packed::read(&v2);
    let upper = packed.tar(&packed.layers()[1]);
    let entries = entries(&upper);
    let find = |path: &str| {
        entries.iter().find(|e| e.0 == path).unwrap_or_else(|| {
            panic!(
                "{path} not in the upper layer: {:?}",
                entries.iter().map(|e| &e.0).collect::<Vec<_>>()
            )
        })
    };
    assert_eq!(find("etc/.wh.deleted-file").1, b'0');
    assert_eq!(find("opaque/.wh..wh..opq").1, b'0');
    // data/link-to-base links to the base layer's data/base-file: the file is copied up
    // (regular, its content), then the link to it.
    let base_file = find("data/base-file");
    assert_eq!((base_file.1, &base_file.4[..]), (b'0', &b"base file\n"[..]));
    let link = find("data/link-to-base");
    assert_eq!((link.1, link.2.as_str()), (b'1', "data/base-file"));
    let at = |path: &str| entries.iter().position(|e| e.0 == path).unwrap();
    assert!(at("data/base-file") < at("data/link-to-base"));
    // Nothing of the base layer but its directories and the copy.
    assert!(at("etc") < at("etc/.wh.deleted-file"));
    assert!(
        entries.iter().all(|e| !e.0.starts_with("bin/")),
        "{entries:?}"
    );
}

/// An unpacked docker-archive of these layers, bottom first: (blob, uncompressed tar).
fn docker_archive(dir: &Path, layers: &[(Vec<u8>, Vec<u8>)]) -> PathBuf {
    fs::create_dir_all(dir).unwrap();
    let mut names = Vec::new();
    let mut diff_ids = Vec::new();
    for (n, (blob, tar)) in layers.iter().enumerate() {
        let name = format!("layer{n}.tar");
        fs::write(dir.join(&name), blob).unwrap();
        names.push(name);
        diff_ids.push(format!("sha256:{}", hex(sha256(tar))));
    }
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    fs::write(
        dir.join("config.json"),
        serde_json::to_vec(&config).unwrap(),
    )
    .unwrap();
    let manifest = json!([{"Config": "config.json", "RepoTags": ["test:latest"], "Layers": names}]);
    fs::write(
        dir.join("manifest.json"),
        serde_json::to_vec(&manifest).unwrap(),
    )
    .unwrap();
    dir.to_path_buf()
}

#[test]
fn two_images_on_one_base_share_its_layer() {
    let t = Test::new("layers-shared-base");
    let busybox = fs::read(fixture("busybox.tar")).unwrap();
    // The same base, once as busybox.tar has it, once gzip-compressed.
    let top_a = RawTar::new().file(b"app-a", b"a\n").finish();
    let top_b = RawTar::new()
        .dir(b"srv/", 0o755)
        .file(b"srv/b", b"b\n")
        .finish();
    let gz = filter("gzip", &["-c", "-n"], &busybox);
    let plain = |tar: Vec<u8>| (tar.clone(), tar);
    let a = docker_archive(&t.dir.join("a"), &[plain(busybox.clone()), plain(top_a)]);
    let b = docker_archive(&t.dir.join("b"), &[(gz, busybox), plain(top_b)]);
    let (a, _) = pack(&t, &a, "a.v2", &[]);
    let (b, _) = pack(&t, &b, "b.v2", &[]);
    let (a, b) = (Packed::read(&a), Packed::read(&b));
    check_layers(&a);
    check_layers(&b);
    assert_eq!(a.layers()[0]["digest"], b.layers()[0]["digest"]);
    assert_eq!(a.frame(&a.layers()[0]), b.frame(&b.layers()[0]));
    assert_ne!(a.layers()[1]["digest"], b.layers()[1]["digest"]);
}

#[test]
fn more_than_64_layers_are_squashed_to_64() {
    let t = Test::new("layers-squash");
    let mut layers = vec![fs::read(fixture("busybox.tar")).unwrap()];
    for n in 1..70 {
        let mut tar = RawTar::new();
        tar.dir(b"stack/", 0o755).file(
            format!("stack/f{n}").as_bytes(),
            format!("{n}\n").as_bytes(),
        );
        match n {
            // Deletions, of a layer kept and of one squashed, and a link across.
            66 => tar.file(b"stack/.wh.f3", b"").file(b"stack/.wh.f65", b""),
            68 => tar.hardlink(b"stack/link", b"stack/f10"),
            _ => &mut tar,
        };
        layers.push(tar.finish());
    }
    let layers: Vec<_> = layers.into_iter().map(|tar| (tar.clone(), tar)).collect();
    let image = docker_archive(&t.dir.join("image"), &layers);
    let (v2, stderr) = pack(&t, &image, "deep.v2", &[]);
    assert!(
        stderr.contains("has 70 layers, more than the 64 a packed file stacks: layers 64 to 70 are squashed into one"),
        "{stderr}"
    );
    let (v1, _) = pack(&t, &image, "deep.v1", &["--flatten"]);
    let packed = Packed::read(&v2);
    assert_eq!(packed.layers().len(), 64);
    check_layers(&packed);
    let flat = listing(&extract(&t, &v1));
    assert!(!flat.paths.contains_key("stack/f65") && flat.paths.contains_key("stack/f69"));
    assert_eq!(listing(&extract(&t, &v2)), flat);
    // The squashed layer holds layers 64 to 70, without what they deleted of themselves.
    let top = entries(&packed.tar(&packed.layers()[63]));
    let names: Vec<&str> = top.iter().map(|e| e.0.as_str()).collect();
    for name in [
        "stack/f63",
        "stack/f69",
        "stack/.wh.f3",
        "stack/f10",
        "stack/link",
    ] {
        assert!(names.contains(&name), "{name} not in {names:?}");
    }
    assert!(!names.iter().any(|n| n.contains("f65")), "{names:?}");
}

#[test]
fn a_flat_tar_or_a_directory_is_one_layer() {
    let t = Test::new("layers-flat");
    let tar = RawTar::on_busybox()
        .dir(b"./etc/app/", 0o750)
        .file(b"./etc/app/conf", b"x=1\n")
        .finish();
    let input = t.dir.join("rootfs.tar");
    fs::write(&input, &tar).unwrap();
    let (v2, _) = pack(&t, &input, "flat.v2", &[]);
    let packed = Packed::read(&v2);
    check_layers(&packed);
    assert_eq!(packed.layers().len(), 1);
    // Passed through as format 1 passes it, so its digest is the tar's own.
    assert_eq!(
        packed.layers()[0]["digest"].as_str().unwrap(),
        format!("sha256:{}", hex(sha256(&tar)))
    );
    assert!(packed.layers()[0].get("diff_id").is_none());
    let root = t.dir.join("rootfs");
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::write(root.join("etc/hostname"), "box\n").unwrap();
    let (dir, _) = pack(&t, &root, "dir.v2", &[]);
    let packed = Packed::read(&dir);
    check_layers(&packed);
    assert_eq!(packed.layers().len(), 1);
}

#[test]
fn restub_keeps_the_layers() {
    let t = Test::new("layers-restub");
    let (v2, _) = pack(&t, &fixture("img-umoci-insert.tar"), "img.v2", &[]);
    let out = t.dir.join("restubbed");
    t.packer()
        .arg("restub")
        .arg(&v2)
        .arg("--stub")
        .arg(t.env.stub())
        .arg("-o")
        .arg(&out)
        .run()
        .assert_success();
    let (before, after) = (Packed::read(&v2), Packed::read(&out));
    assert_eq!(before.config, after.config);
    assert_eq!(before.payload, after.payload);
    assert_eq!(extract(&t, &v2), extract(&t, &out));
    let inspect = t.packer().arg("inspect").arg(&out).run();
    inspect.assert_success();
    let text = inspect.stdout_text();
    assert!(text.contains("layers          5"), "{inspect:?}");
    let first = &before.layers()[0];
    let line = format!(
        "  layer 1       {}, {} bytes lz4, {} bytes tar",
        first["digest"].as_str().unwrap(),
        first["length"],
        first["size"]
    );
    assert!(text.contains(&line), "{line} not in {text}");
    let diff_id = format!("    diff_id     {}", first["diff_id"].as_str().unwrap());
    assert!(text.contains(&diff_id), "{diff_id} not in {text}");
    let json = t.packer().arg("inspect").arg("--json").arg(&out).run();
    json.assert_success();
    let json: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(json["format_version"], 2);
    assert_eq!(json["config"]["layers"], before.config["layers"]);
}

#[test]
fn this_stub_runs_format_2_and_format_1() {
    let t = Test::new("layers-stub");
    let input = fixture("img-docker.tar");
    let (v2, _) = pack(&t, &input, "img.v2", &[]);
    let (v1, _) = pack(&t, &input, "img.v1", &["--flatten"]);
    for path in [&v1, &v2] {
        fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
        t.env.give_to_user(path);
        let ran = t
            .cmd(path)
            .args([
                "--entrypoint",
                "/bin/cat",
                "/etc/kept-file",
                "/data/link-to-base",
            ])
            .run();
        ran.assert_success().assert_stdout("kept\nbase file\n");
    }
}

#[test]
fn damaged_layers_are_refused_by_inspect_and_extract() {
    let t = Test::new("layers-damaged");
    let (v2, _) = pack(&t, &fixture("img-docker.tar"), "img.v2", &[]);
    let mut bytes = fs::read(&v2).unwrap();
    let packed = Packed::read(&v2);
    // One byte of the upper layer's frame: its sha256, and the payload's, no longer match.
    let upper = &packed.layers()[1];
    let at =
        packed.footer.payload_offset as usize + upper["offset"].as_u64().unwrap() as usize + 20;
    bytes[at] ^= 0x40;
    let damaged = t.dir.join("damaged");
    fs::write(&damaged, &bytes).unwrap();
    for command in ["inspect", "extract"] {
        let out = t
            .packer()
            .arg(command)
            .arg(&damaged)
            .args(if command == "extract" {
                &["-o", "-"][..]
            } else {
                &[][..]
            })
            .run();
        assert_eq!(out.code, Some(1), "{out:?}");
        assert!(
            out.stderr_text().contains("does not match its sha256"),
            "{out:?}"
        );
        assert_eq!(out.stderr_text().lines().count(), 1, "{out:?}");
    }
}
