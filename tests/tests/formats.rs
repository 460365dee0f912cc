//! Every exported image format in, the image's own config honoured (issue 3).
//!
//! The fixtures are ONE real two-layer image made by scripts/make-test-images.sh with
//! umoci and skopeo, exported as a docker-archive, an OCI layout directory, an OCI
//! archive, an OCI layout with zstd layers, and the flat root filesystem umoci unpacks;
//! plus damaged copies. Its upper layer deletes etc/deleted-file, replaces opaque/ with an
//! opaque whiteout, adds data/new-b as a hard link to data/new-a and data/link-to-base as
//! a hard link to the base layer's data/base-file. Its config: Entrypoint
//! ["/bin/echo","entry"], Cmd ["default","cmd"], Env PATH, IMAGE_A, IMAGE_B,
//! WorkingDir /work.
use binctr_tests::{Env, Output, Test, VERSION};
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::hash::{Hash, Hasher};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The image forms that hold layers and config, by fixture name.
const IMAGE_FORMS: &[&str] = &["img-docker.tar", "img-oci", "img-oci.tar", "img-oci-zstd"];
/// All forms of the same root filesystem.
const ALL_FORMS: &[&str] = &[
    "img-docker.tar",
    "img-oci",
    "img-oci.tar",
    "img-oci-zstd",
    "img-flat.tar",
];

const MAKE_IMAGES: &str = "run scripts/make-test-images.sh (scripts/test.sh runs it)";

/// A fixture file or directory of build/; panics with what to do when it is missing.
fn fixture(name: &str) -> PathBuf {
    let path = Env::get().fixtures.join(name);
    if !path.exists() {
        panic!("fixture {} is missing: {MAKE_IMAGES}", path.display());
    }
    path
}

/// Packs `input` with extra packer flags into the test's directory, for the test user.
fn pack(t: &Test, input: &Path, out_name: &str, flags: &[&str]) -> PathBuf {
    let out = t.dir.join(out_name);
    let output = t.packer().arg(input).arg("-o").arg(&out).args(flags).run();
    if output.code != Some(0) || !out.is_file() {
        panic!("packing {} failed:\n{output:?}", input.display());
    }
    ready_for_user(t, &out);
    out
}

fn ready_for_user(t: &Test, path: &Path) {
    t.env.give_to_user(path);
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

fn run(t: &Test, packed: &Path, args: &[&str]) -> Output {
    t.cmd(packed).args(args).run()
}

/// `binctr-pack inspect --json FILE`, parsed.
fn inspect(t: &Test, packed: &Path) -> serde_json::Value {
    let output = t.packer().arg("inspect").arg("--json").arg(packed).run();
    output.assert_success();
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("inspect --json is not JSON ({e}):\n{output:?}"))
}

fn payload_digest(t: &Test, packed: &Path) -> String {
    inspect(t, packed)["payload_sha256"]
        .as_str()
        .expect("payload_sha256 in inspect --json")
        .to_string()
}

/// `binctr-pack extract FILE -o -`: the payload tar.
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

/// What a path is in a root filesystem, independent of how the tar was written.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    kind: char,
    mode: u32,
    uid: u64,
    gid: u64,
    /// Symlink target, content hash of a file, device numbers.
    detail: String,
}

/// A root filesystem as compared across forms: every path (but the root) with its record,
/// and the sets of paths that are hard links of each other.
#[derive(Debug, PartialEq, Eq)]
struct Listing {
    paths: BTreeMap<String, Record>,
    links: BTreeSet<BTreeSet<String>>,
}

fn normalize(path: &str) -> String {
    path.split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect::<Vec<_>>()
        .join("/")
}

fn octal(field: &[u8]) -> u64 {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        // GNU base-256.
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

/// A small tar reader (ustar, GNU long names, PAX path/linkpath/size): the tests crate
/// has no tar dependency, and this one shows exactly what is compared.
fn listing(tar: &[u8]) -> Listing {
    let mut paths = BTreeMap::new();
    let mut link_of: BTreeMap<String, String> = BTreeMap::new();
    let (mut long_name, mut long_link, mut pax): (
        Option<String>,
        Option<String>,
        BTreeMap<String, String>,
    ) = (None, None, BTreeMap::new());
    let mut at = 0;
    while at + 512 <= tar.len() {
        let h = &tar[at..at + 512];
        if h.iter().all(|&b| b == 0) {
            break;
        }
        let mut size = octal(&h[124..136]);
        if let Some(s) = pax.get("size") {
            size = s.parse().expect("PAX size");
        }
        let data = &tar[at + 512..at + 512 + size as usize];
        at += 512 + (size as usize).div_ceil(512) * 512;
        let kind = h[156];
        match kind {
            b'L' => {
                long_name = Some(cstr(data));
                continue;
            }
            b'K' => {
                long_link = Some(cstr(data));
                continue;
            }
            b'x' => {
                let mut rest = data;
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
                continue;
            }
            b'g' => continue,
            _ => {}
        }
        let mut name = cstr(&h[0..100]);
        if &h[257..262] == b"ustar" && h[345] != 0 && &h[257..263] == b"ustar\0" {
            name = format!("{}/{}", cstr(&h[345..500]), name);
        }
        let name = normalize(&pax.remove("path").or(long_name.take()).unwrap_or(name));
        let link = pax
            .remove("linkpath")
            .or(long_link.take())
            .unwrap_or_else(|| cstr(&h[157..257]));
        pax.clear();
        if name.is_empty() {
            continue;
        }
        let record = |kind: char, detail: String| Record {
            kind,
            mode: octal(&h[100..108]) as u32 & 0o7777,
            uid: octal(&h[108..116]),
            gid: octal(&h[116..124]),
            detail,
        };
        let record = match kind {
            b'1' => {
                let target = normalize(&link);
                let target = link_of.get(&target).cloned().unwrap_or(target);
                let shared = paths
                    .get(&target)
                    .cloned()
                    .unwrap_or_else(|| panic!("hard link {name} to {target}, not before it"));
                link_of.insert(name.clone(), target);
                shared
            }
            b'2' => record('l', link),
            b'5' => record('d', String::new()),
            b'3' | b'4' => record(
                kind as char,
                format!("{},{}", octal(&h[329..337]), octal(&h[337..345])),
            ),
            b'6' => record('p', String::new()),
            _ => {
                let mut hasher = DefaultHasher::new();
                data.hash(&mut hasher);
                record('f', format!("{:016x}/{}", hasher.finish(), data.len()))
            }
        };
        paths.insert(name, record);
    }
    let mut groups: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (link, target) in &link_of {
        let group = groups.entry(target.clone()).or_default();
        group.insert(link.clone());
        group.insert(target.clone());
    }
    Listing {
        paths,
        links: groups.into_values().collect(),
    }
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[test]
fn every_form_gives_the_same_rootfs() {
    let t = Test::new("every-form-same-rootfs");
    let mut listings = Vec::new();
    for form in ALL_FORMS {
        let packed = pack(&t, &fixture(form), form, &[]);
        listings.push((form, listing(&extract(&t, &packed))));
    }
    let (first, reference) = &listings[0];
    for (form, other) in &listings[1..] {
        if other != reference {
            let only = |a: &Listing, b: &Listing| -> Vec<String> {
                a.paths
                    .iter()
                    .filter(|(p, r)| b.paths.get(*p) != Some(r))
                    .map(|(p, r)| format!("{p} {r:?}"))
                    .collect()
            };
            panic!(
                "{form} and {first} differ:\n only in {form}: {:?}\n only in {first}: {:?}\n links {:?} vs {:?}",
                only(other, reference),
                only(reference, other),
                other.links,
                reference.links
            );
        }
    }
    let paths = &reference.paths;
    assert!(
        paths.len() > 200,
        "busybox and its applets: {}",
        paths.len()
    );
    assert!(
        !paths.contains_key("etc/deleted-file"),
        "the whiteout deletes it"
    );
    assert!(paths.contains_key("etc/kept-file"));
    let opaque: Vec<&String> = paths.keys().filter(|p| p.starts_with("opaque/")).collect();
    assert_eq!(
        opaque,
        ["opaque/new"],
        "opaque/ holds only the upper layer's file"
    );
    assert_eq!(
        paths["opaque"].mode, 0o700,
        "the upper layer's opaque/ directory"
    );
    assert!(
        paths
            .keys()
            .all(|p| !p.split('/').any(|c| c.starts_with(".wh."))),
        "a whiteout file reached the payload"
    );
    assert!(reference
        .links
        .contains(&set(&["data/base-file", "data/link-to-base"])));
    assert!(reference
        .links
        .contains(&set(&["data/new-a", "data/new-b"])));
}

#[test]
fn image_forms_give_the_same_payload_and_are_deterministic() {
    let t = Test::new("same-payload");
    let mut digests = BTreeSet::new();
    for form in IMAGE_FORMS {
        let one = pack(&t, &fixture(form), &format!("{form}-1"), &[]);
        let two = pack(&t, &fixture(form), &format!("{form}-2"), &[]);
        assert!(
            fs::read(&one).unwrap() == fs::read(&two).unwrap(),
            "packing {form} twice gave different bytes"
        );
        digests.insert(payload_digest(&t, &one));
    }
    assert_eq!(digests.len(), 1, "payload digests differ: {digests:?}");
    // An image archive on standard input, spooled.
    let out = t.dir.join("from-stdin");
    t.packer()
        .args(["-", "-o"])
        .arg(&out)
        .stdin(fs::read(fixture("img-oci.tar")).unwrap())
        .run()
        .assert_success();
    assert_eq!(digests.first().unwrap(), &payload_digest(&t, &out));
}

#[test]
fn entrypoint_cmd_and_working_dir_as_docker_run() {
    let t = Test::new("entrypoint-cmd");
    for form in ALL_FORMS {
        let packed = pack(&t, &fixture(form), form, &[]);
        if *form == "img-flat.tar" {
            // A flat rootfs has no config: the command is given.
            run(&t, &packed, &["/bin/echo", "flat"])
                .assert_success()
                .assert_stdout("flat\n");
            continue;
        }
        run(&t, &packed, &[])
            .assert_success()
            .assert_stdout("entry default cmd\n");
        run(&t, &packed, &["x", "y"])
            .assert_success()
            .assert_stdout("entry x y\n");
        run(&t, &packed, &["--entrypoint", "/bin/echo", "hi"])
            .assert_success()
            .assert_stdout("hi\n");
        run(&t, &packed, &["--entrypoint", "/bin/pwd"])
            .assert_success()
            .assert_stdout("/work\n");
        run(&t, &packed, &["-w", "/data", "--entrypoint", "/bin/pwd"])
            .assert_success()
            .assert_stdout("/data\n");
    }
}

#[test]
fn env_is_the_image_env_then_the_overrides() {
    let t = Test::new("env-order");
    let packed = pack(&t, &fixture("img-oci"), "img", &[]);
    let env_file = t.dir.join("env-file");
    fs::write(&env_file, "IMAGE_B=from-file\nFILE_ONLY=1\n").unwrap();
    ready_for_user(&t, &env_file);
    let output = t
        .cmd(&packed)
        .env("HOSTVAR", "from-host")
        .args(["--entrypoint", "/bin/env", "--env-file"])
        .arg(&env_file)
        .args(["-e", "IMAGE_A=from-flag", "-e", "HOSTVAR"])
        .run();
    output.assert_success();
    let keys = ["PATH", "IMAGE_A", "IMAGE_B", "FILE_ONLY", "HOSTVAR"];
    let lines: Vec<String> = output
        .stdout_text()
        .lines()
        .filter(|l| keys.iter().any(|k| l.starts_with(&format!("{k}="))))
        .map(str::to_string)
        .collect();
    assert_eq!(
        lines,
        [
            "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
            "IMAGE_A=from-flag",
            "IMAGE_B=from-file",
            "FILE_ONLY=1",
            "HOSTVAR=from-host",
        ],
        "{output:?}"
    );
}

#[test]
fn layers_apply_inside_the_container() {
    let t = Test::new("layers-inside");
    let packed = pack(&t, &fixture("img-docker.tar"), "img", &[]);
    run(&t, &packed, &["--entrypoint", "/bin/ls", "/opaque"])
        .assert_success()
        .assert_stdout("new\n");
    run(
        &t,
        &packed,
        &[
            "--entrypoint",
            "/bin/cat",
            "/etc/kept-file",
            "/data/link-to-base",
        ],
    )
    .assert_success()
    .assert_stdout("kept\nbase file\n");
    let gone = run(
        &t,
        &packed,
        &["--entrypoint", "/bin/cat", "/etc/deleted-file"],
    );
    assert_ne!(gone.code, Some(0), "{gone:?}");
    let inodes = run(
        &t,
        &packed,
        &[
            "--entrypoint",
            "/bin/stat",
            "--",
            "-c",
            "%i %h",
            "/data/base-file",
            "/data/link-to-base",
            "/data/new-a",
            "/data/new-b",
        ],
    );
    inodes.assert_success();
    let lines: Vec<String> = inodes.stdout_text().lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 4, "{inodes:?}");
    assert_eq!(
        lines[0], lines[1],
        "base-file and link-to-base: one inode\n{inodes:?}"
    );
    assert_eq!(lines[2], lines[3], "new-a and new-b: one inode\n{inodes:?}");
    assert_ne!(lines[0], lines[2]);
    assert!(lines[0].ends_with(" 2"), "two links: {inodes:?}");
}

#[test]
fn inspect_shows_config_and_provenance() {
    let t = Test::new("inspect-provenance");
    let oci = inspect(&t, &pack(&t, &fixture("img-oci"), "oci", &[]));
    let c = &oci["config"];
    assert_eq!(c["reference"], "test");
    let digest = c["manifest_digest"].as_str().expect("manifest_digest");
    assert!(
        binctr_tests::find_sha256(digest).is_some(),
        "manifest_digest {digest}"
    );
    let index = fs::read_to_string(fixture("img-oci").join("index.json")).unwrap();
    assert!(index.contains(digest), "{digest} not in index.json {index}");
    assert_eq!(c["created"], "2024-01-02T03:04:05Z");
    assert_eq!(c["packer_version"], VERSION);
    assert_eq!(c["entrypoint"], serde_json::json!(["/bin/echo", "entry"]));
    assert_eq!(c["cmd"], serde_json::json!(["default", "cmd"]));
    assert_eq!(
        c["env"],
        serde_json::json!([
            "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
            "IMAGE_A=from-image",
            "IMAGE_B=also-from-image"
        ])
    );
    assert_eq!(c["working_dir"], "/work");
    assert_eq!(c["exposed_ports"], serde_json::json!(["8080/tcp"]));
    assert_eq!(c["volumes"], serde_json::json!(["/data"]));
    assert_eq!(
        c["labels"],
        serde_json::json!({"org.example.test": "formats"})
    );
    assert_eq!(c["stop_signal"], "SIGQUIT");
    assert_eq!(c["read_only"], false);
    let docker = inspect(&t, &pack(&t, &fixture("img-docker.tar"), "docker", &[]));
    assert_eq!(
        docker["config"]["reference"],
        "docker.io/binctr/test:latest"
    );
    assert_eq!(docker["config"]["cmd"], c["cmd"]);
    let flat = fixture("img-flat.tar");
    let flat_config = inspect(&t, &pack(&t, &flat, "flat", &[]));
    // The file's name, not where it lies on this machine.
    assert_eq!(flat_config["config"]["reference"], "img-flat.tar");
    // The human form, and files that are not packed.
    let text = t.packer().arg("inspect").arg(t.dir.join("oci")).run();
    text.assert_success();
    assert!(text.stdout_text().contains("SIGQUIT"), "{text:?}");
    let not_packed = t.packer().arg("inspect").arg(fixture("img-flat.tar")).run();
    assert_eq!(not_packed.code, Some(1), "{not_packed:?}");
    assert!(
        not_packed
            .stderr_text()
            .contains("is not a packed binctr file"),
        "{not_packed:?}"
    );
}

/// Of a flattened (format 1) payload: a format 2 one holds the layers, which the
/// extracted tar no longer has (tests/tests/layers_pack.rs compares their trees).
#[test]
fn extract_then_repack_gives_the_same_payload() {
    let t = Test::new("extract-repack");
    let packed = pack(&t, &fixture("img-oci.tar"), "img", &["--flatten"]);
    let rootfs = t.dir.join("rootfs.tar");
    t.packer()
        .arg("extract")
        .arg(&packed)
        .arg("-o")
        .arg(&rootfs)
        .run()
        .assert_success();
    let again = pack(&t, &rootfs, "again", &["--flatten"]);
    assert_eq!(payload_digest(&t, &packed), payload_digest(&t, &again));
}

#[test]
fn restub_keeps_the_digest_and_the_behaviour() {
    let t = Test::new("restub");
    let packed = pack(&t, &fixture("img-docker.tar"), "img", &["--read-only"]);
    let out = t.dir.join("restubbed");
    t.packer()
        .arg("restub")
        .arg(&packed)
        .arg("--stub")
        .arg(t.env.stub())
        .arg("-o")
        .arg(&out)
        .run()
        .assert_success();
    ready_for_user(&t, &out);
    let before = inspect(&t, &packed);
    let after = inspect(&t, &out);
    assert_eq!(before["payload_sha256"], after["payload_sha256"]);
    assert_eq!(before["config_sha256"], after["config_sha256"]);
    let stub_len = fs::metadata(t.env.stub()).unwrap().len();
    assert_eq!(after["payload_offset"], stub_len);
    assert!(fs::read(&out)
        .unwrap()
        .starts_with(&fs::read(t.env.stub()).unwrap()));
    run(&t, &out, &[])
        .assert_success()
        .assert_stdout("entry default cmd\n");
}

#[test]
fn pack_time_overrides_are_the_new_defaults() {
    let t = Test::new("pack-overrides");
    let packed = pack(
        &t,
        &fixture("img-oci"),
        "img",
        &[
            "--entrypoint",
            r#"["/bin/sh","-c"]"#,
            "--cmd",
            r#"["echo $IMAGE_A-$NEW in $(pwd)"]"#,
            "--env",
            "IMAGE_A=packed",
            "--env",
            "NEW=1",
            "--workdir",
            "/data",
            "--read-only",
            "--name",
            "Custom",
        ],
    );
    let c = &inspect(&t, &packed)["config"];
    assert_eq!(c["name"], "custom");
    assert_eq!(c["read_only"], true);
    run(&t, &packed, &[])
        .assert_success()
        .assert_stdout("packed-1 in /data\n");
    // One program as --entrypoint clears the image's cmd.
    let echo = pack(
        &t,
        &fixture("img-oci"),
        "echo",
        &["--entrypoint", "/bin/echo"],
    );
    run(&t, &echo, &[]).assert_success().assert_stdout("\n");
    // Read-only unless --read-write.
    let touch = ["--entrypoint", "/bin/touch", "/new-file"];
    let refused = run(&t, &packed, &touch);
    assert_ne!(refused.code, Some(0), "{refused:?}");
    let mut args = vec!["--read-write"];
    args.extend(touch);
    run(&t, &packed, &args).assert_success();
}

#[test]
fn image_picks_one_of_several() {
    let t = Test::new("pick-image");
    let other = pack(
        &t,
        &fixture("bad-two-images"),
        "other",
        &["--image", "other"],
    );
    run(&t, &other, &[])
        .assert_success()
        .assert_stdout("entry other-image\n");
    let test = pack(&t, &fixture("bad-two-images"), "test", &["--image", "test"]);
    run(&t, &test, &[])
        .assert_success()
        .assert_stdout("entry default cmd\n");
    let docker = pack(
        &t,
        &fixture("img-docker.tar"),
        "docker",
        &["--image", "binctr/test:latest"],
    );
    run(&t, &docker, &[])
        .assert_success()
        .assert_stdout("entry default cmd\n");
}

/// Packs what must fail: exit 1, one line "binctr-pack: ..." with `expected`, no output.
fn assert_refused(t: &Test, input: &Path, flags: &[&str], expected: &str) {
    let out = t.dir.join("refused");
    let output = t.packer().arg(input).arg("-o").arg(&out).args(flags).run();
    let stderr = output.stderr_text();
    assert_eq!(output.code, Some(1), "{output:?}");
    assert!(
        stderr.starts_with("binctr-pack: ") && stderr.lines().count() == 1,
        "not one line: {output:?}"
    );
    assert!(
        stderr.contains(expected),
        "expected {expected:?}: {output:?}"
    );
    assert!(!out.exists(), "{} was written", out.display());
    let leftovers: Vec<_> = fs::read_dir(&t.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn damaged_and_ambiguous_images_are_refused() {
    let t = Test::new("refused");
    assert_refused(
        &t,
        &fixture("bad-corrupt-blob"),
        &[],
        "is damaged: its content hashes to sha256:",
    );
    assert_refused(&t, &fixture("bad-missing-blob"), &[], "is missing");
    assert_refused(
        &t,
        &fixture("bad-media-type"),
        &[],
        "has the unknown media type \"application/vnd.example.layer.v1.tar+lzma\"",
    );
    assert_refused(
        &t,
        &fixture("bad-two-images"),
        &[],
        "holds 2 images (other, test): choose one with --image NAME",
    );
    assert_refused(
        &t,
        &fixture("bad-two-images"),
        &["--image", "nope"],
        "has no image \"nope\"; it has: other, test",
    );
    assert_refused(
        &t,
        &fixture("img-oci"),
        &["--platform", "linux/arm64"],
        "has no image for linux/arm64; it has: linux/amd64",
    );
}
