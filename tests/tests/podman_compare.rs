//! Issue 12: binctr flattens an image as podman does. scripts/compare-podman.sh packs an
//! image archive with binctr-pack, extracts the packed root filesystem, exports the same
//! image with podman (load, create, export) and compares the two trees: names, types,
//! modes, numeric owners, sizes, link targets, hard links, content hashes. Run on every
//! test image of build/ that podman reads, and on the `umoci insert` image
//! (scripts/make-umoci-insert-image.sh), whose layer tars have no end-of-archive blocks.

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use binctr_tests::{s, Output, Test};

/// Several images, each packed, loaded into podman and compared.
const COMPARE_TIMEOUT: Duration = Duration::from_secs(600);

/// The umoci-insert fixtures (scripts/make-umoci-insert-image.sh): an OCI archive and a
/// docker-archive of the same image.
const UMOCI_INSERT: [&str; 2] = ["img-umoci-insert.tar", "img-umoci-insert-docker.tar"];

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/compare-podman.sh")
}

/// scripts/compare-podman.sh IMAGES, as whoever runs the tests (podman needs root here),
/// with the packer under test.
fn compare(t: &Test, packer: &Path, images: &[PathBuf]) -> Output {
    let home = t.dir.join("podman-home");
    fs::create_dir_all(&home).unwrap();
    t.cmd(Path::new("/bin/bash"))
        .as_current_user()
        .env("HOME", &home)
        .env("BINCTR_PACK", packer)
        .arg(script())
        .args(images.iter().map(|p| p.as_os_str().to_owned()))
        .timeout(COMPARE_TIMEOUT)
        .run()
}

/// The top-level member names of a tar file (headers only, data skipped).
fn tar_names(path: &Path) -> Vec<String> {
    let mut file = fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut names = Vec::new();
    let mut header = [0u8; 512];
    while file.read_exact(&mut header).is_ok() && header.iter().any(|&b| b != 0) {
        let name_len = header[..100].iter().position(|&b| b == 0).unwrap_or(100);
        let name = String::from_utf8_lossy(&header[..name_len]).into_owned();
        let size_field = String::from_utf8_lossy(&header[124..136]).into_owned();
        let size_field = size_field.trim_matches(|c: char| c == '\0' || c == ' ');
        let size = u64::from_str_radix(size_field, 8).unwrap_or(0);
        names.push(name.trim_start_matches("./").to_string());
        if file
            .seek(SeekFrom::Current(size.div_ceil(512) as i64 * 512))
            .is_err()
        {
            break;
        }
    }
    names
}

/// What podman loads: a docker-archive or an OCI archive (a tar holding manifest.json or
/// oci-layout at its top), or an OCI image layout directory.
fn podman_reads(path: &Path) -> bool {
    if path.is_dir() {
        return path.join("oci-layout").is_file() && path.join("index.json").is_file();
    }
    path.extension().is_some_and(|e| e == "tar")
        && tar_names(path)
            .iter()
            .any(|n| n == "manifest.json" || n == "oci-layout")
}

/// Every image of build/ podman reads, but the damaged ones (bad-*: refused on purpose)
/// and the umoci-insert ones (their own test below).
fn test_images(t: &Test) -> Vec<PathBuf> {
    let mut images: Vec<PathBuf> = fs::read_dir(&t.env.fixtures)
        .expect("read the fixtures directory")
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            !name.starts_with("bad-")
                && !name.starts_with('.')
                && !UMOCI_INSERT.contains(&name.as_str())
        })
        .map(|e| e.path())
        .filter(|p| podman_reads(p))
        .collect();
    images.sort();
    images
}

#[track_caller]
fn assert_no_difference(out: &Output) {
    assert_eq!(
        out.code,
        Some(0),
        "binctr's flattened tree differs from podman's export (or the comparison failed):\n{out:?}"
    );
    assert!(out.stdout.is_empty(), "a difference was printed:\n{out:?}");
}

#[test]
fn binctr_flattens_every_test_image_as_podman_exports_it() {
    let t = Test::new("podman_every_image");
    let images = test_images(&t);
    let names: Vec<String> = images
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    // The comparison must not pass by finding nothing to compare.
    for expected in ["img-docker.tar", "img-oci.tar", "img-oci"] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} is not among the images compared: {names:?} (scripts/test.sh makes it \
             with scripts/make-test-images.sh)"
        );
    }
    let out = compare(&t, &t.env.packer(), &images);
    assert_no_difference(&out);
    for name in &names {
        assert!(
            out.stderr_text().contains(&format!("{name}: ")),
            "{name} was not compared:\n{out:?}"
        );
    }
}

#[test]
fn umoci_insert_image_packs_runs_and_equals_podmans_export() {
    let t = Test::new("podman_umoci_insert");
    for name in UMOCI_INSERT {
        let fixture = t.env.fixture(name);
        let packed = t.pack(&fixture, &format!("{name}.packed"));
        // Each `umoci insert` layer, seen inside the container.
        let script = "cat /etc/inserted-file /data/base-file; \
                      ls /opaque; \
                      stat -c '%a %n' /srv/inserted-dir/a /srv/inserted-dir/sub; \
                      cat /srv/inserted-dir/a /srv/inserted-dir/sub/b; \
                      [ -e /etc/deleted-file ] && echo deleted-file-is-back; true";
        let out = t.cmd(&packed).args(["sh", "-c", script]).run();
        out.assert_success().assert_stdout(
            "inserted file\nbase file\n\
             new-only\n\
             640 /srv/inserted-dir/a\n750 /srv/inserted-dir/sub\n\
             a\nb\n",
        );
    }
    let images: Vec<PathBuf> = UMOCI_INSERT.iter().map(|n| t.env.fixture(n)).collect();
    let out = compare(&t, &t.env.packer(), &images);
    assert_no_difference(&out);
}

#[test]
fn compare_script_reports_a_difference_and_exits_1() {
    let t = Test::new("podman_difference");
    // A packer whose extracted tree has one file more than the image: the script must say
    // so, and fail.
    let wrapper = t.dir.join("doctored-pack");
    let extra = t.dir.join("extra");
    fs::create_dir_all(&extra).unwrap();
    fs::write(extra.join("not-in-the-image"), "x\n").unwrap();
    fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nset -e\n\"{packer}\" \"$@\"\n\
             if [ \"$1\" = extract ]; then tar -rf \"$4\" -C \"{extra}\" not-in-the-image; fi\n",
            packer = s(&t.env.packer()),
            extra = s(&extra),
        ),
    )
    .unwrap();
    fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).unwrap();
    let out = compare(&t, &wrapper, &[t.env.fixture("img-docker.tar")]);
    out.assert_code(1);
    assert!(
        out.stdout_text()
            .contains("img-docker.tar: only in binctr: /not-in-the-image (file 0644"),
        "the extra file is reported:\n{out:?}"
    );
    assert_eq!(out.stdout_text().lines().count(), 1, "{out:?}");
}
