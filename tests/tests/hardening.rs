//! Issue 10, end to end: each attack of "Hardening, second round", run by unprivileged
//! users, with a second local user (the neighbour, BINCTR_NEIGHBOUR_USER) playing the
//! attacker on a shared machine. Each test names what it guards; each run is bounded by
//! a timeout that fails the test, so a hang is a failure, never a stuck suite.
//!
//! The hostile images are written here (`binctr_tests::rawtar`): busybox plus the
//! entries an attack needs, packed with dist/binctr-pack when it takes them, else
//! assembled by hand (stub + lz4 frame + config + footer), so the stub is what is tested.
//! The attacks that need a host-side victim aim at a file of the test user in its home
//! (0400 where container root is the writer, 0644 where the user's own binctr on the
//! host is) and check it unchanged: content, mode, inode, mtime.
//!
//! Needs root (to act as two users): run through scripts/test.sh, which creates the
//! neighbour with `scripts/ensure-test-user.sh --neighbour` and exports
//! BINCTR_NEIGHBOUR_USER; without it these tests fail saying so.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{lchown, symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use binctr_tests::rawtar::{assemble, config_with, lz4_frame, lz4_stream, pack_tar, RawTar, BLOCK};
use binctr_tests::{
    cache_entries, is_cache_entry, is_live, read_pid_file, s, wait_until, Detached, Output, Test,
    QUICK,
};

/// How long one run of a packed file may take here before the test fails (a first
/// extraction of busybox takes well under a second).
const RUN: Duration = Duration::from_secs(30);

/// The id mappings: the default (subordinate ids, as /etc/subuid grants the test user
/// a range) and a single mapping (fake root by default).
const MAPPINGS: [&[&str]; 2] = [&[], &["--userns", "single"]];

fn mapping_name(flags: &[&str]) -> String {
    if flags.is_empty() {
        "default mapping".into()
    } else {
        flags.join(" ")
    }
}

// ---- helpers ----------------------------------------------------------------------------

/// A directory under the test's scratch space, owned by the test user, with `mode`.
fn user_dir(t: &Test, name: &str, mode: u32) -> PathBuf {
    let dir = t.dir.join(name);
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    fs::set_permissions(&dir, fs::Permissions::from_mode(mode)).unwrap();
    t.env.give_to_user(&dir);
    dir
}

/// A directory anyone may write, owned by root, as /tmp or a scratch disk is: `mode`
/// 0o1777 (sticky, like /tmp) or 0o777.
fn shared_dir(t: &Test, name: &str, mode: u32) -> PathBuf {
    let dir = t.dir.join(name);
    fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    fs::set_permissions(&dir, fs::Permissions::from_mode(mode)).unwrap();
    dir
}

/// `chown -R` to the neighbour, links themselves (not their targets) included: what
/// the neighbour would own had it made the tree itself.
fn give_tree_to_neighbour(t: &Test, path: &Path) {
    let n = t.env.neighbour();
    let status = Command::new("chown")
        .args(["-R", "--no-dereference", &format!("{}:{}", n.uid, n.gid)])
        .arg(path)
        .status()
        .expect("run chown");
    assert!(
        status.success(),
        "chown -R {} to the neighbour",
        path.display()
    );
}

/// A file of the test user that no run may change: content, mode, inode and mtime
/// recorded at creation.
struct Victim {
    path: PathBuf,
    content: Vec<u8>,
    meta: (u32, u64, i64, i64, u32),
}

impl Victim {
    /// `<home>/<name>` with `mode`: 0400 for what only container root could write (it
    /// has DAC override over files of the ids its namespace maps), 0644 for what the
    /// user's own processes on the host could.
    fn new(t: &Test, name: &str, mode: u32) -> Victim {
        let path = t.home().join(name);
        let content = format!("the test user's own {name}, not to be touched\n").into_bytes();
        fs::write(&path, &content).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        t.env.give_to_user(&path);
        let meta = Victim::meta_of(&path);
        Victim {
            path,
            content,
            meta,
        }
    }

    fn meta_of(path: &Path) -> (u32, u64, i64, i64, u32) {
        let m = fs::symlink_metadata(path)
            .unwrap_or_else(|e| panic!("the victim {} is gone: {e}", path.display()));
        (m.mode(), m.ino(), m.mtime(), m.mtime_nsec(), m.uid())
    }

    #[track_caller]
    fn assert_unchanged(&self, context: &str) {
        let now = fs::read(&self.path).unwrap_or_else(|e| {
            panic!(
                "{context}: the victim {} cannot be read: {e}",
                self.path.display()
            )
        });
        assert!(
            now == self.content,
            "{context}: the victim {} was overwritten: it holds {:?}",
            self.path.display(),
            String::from_utf8_lossy(&now[..now.len().min(200)])
        );
        assert_eq!(
            Victim::meta_of(&self.path),
            self.meta,
            "{context}: the victim {} changed (mode, inode, mtime, owner)",
            self.path.display()
        );
    }
}

/// Exit 125 and exactly one line `binctr: ...` on stderr (shorter than 1000 bytes),
/// nothing on stdout, the line containing `needle`.
#[track_caller]
fn assert_refused(out: &Output, needle: &str, context: &str) {
    let err = out.stderr_text();
    assert!(
        out.code == Some(125)
            && out.stdout.is_empty()
            && err.starts_with("binctr: ")
            && err.ends_with('\n')
            && err.matches('\n').count() == 1
            && out.stderr.len() < 1000,
        "{context}: expected exit 125, nothing on stdout and one short line 'binctr: ...':\n{out:?}"
    );
    assert!(
        err.contains(needle),
        "{context}: the error should mention {needle:?}:\n{out:?}"
    );
}

/// The packed file `name` of busybox plus the entries `add` writes.
fn busybox_with(t: &Test, name: &str, add: impl FnOnce(&mut RawTar)) -> PathBuf {
    let mut tar = RawTar::on_busybox();
    add(&mut tar);
    pack_tar(t, &tar.finish(), name)
}

/// The packed file `name`: busybox (plus `add`) with this config, assembled by hand.
fn busybox_with_config(
    t: &Test,
    name: &str,
    config_name: &str,
    fields: serde_json::Value,
    add: impl FnOnce(&mut RawTar),
) -> PathBuf {
    let mut tar = RawTar::on_busybox();
    add(&mut tar);
    let out = t.dir.join(name);
    assemble(
        t,
        lz4_frame(&tar.finish()),
        config_with(config_name, fields),
        &out,
    );
    out
}

/// The cache entries a run left in `cache`: finished ones and half-made ones.
fn entries_left(cache: &Path) -> Vec<String> {
    cache_entries(cache)
        .into_iter()
        .map(|(name, _)| name)
        .filter(|name| is_cache_entry(name) || name.starts_with(".tmp-"))
        .collect()
}

/// The finished entries of a cache (`<digest>[-subid-...]`), by name.
fn finished_entries(cache: &Path) -> Vec<(String, PathBuf)> {
    cache_entries(cache)
        .into_iter()
        .filter(|(name, path)| is_cache_entry(name) && path.is_dir())
        .collect()
}

/// The mode bits of a path (not following a last symlink).
fn mode_of(path: &Path) -> u32 {
    fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .mode()
        & 0o7777
}

/// The names in a directory, sorted.
fn names_in(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

// ---- 1. apt's fake-root file ------------------------------------------------------------

/// Where the stub writes apt's setting under fake root (docs/STUB.md, seccomp).
const APT_FILE: &[u8] = b"etc/apt/apt.conf.d/99binctr-fake-root";

/// The line binctr's apt file holds.
const APT_LINE: &str = "APT::Sandbox::User \"root\";";

/// Busybox with an `etc/apt/apt.conf.d/` (apt's fake-root file is only written where
/// apt could read it).
fn with_apt_dir(tar: &mut RawTar) {
    tar.dir(b"etc/apt/", 0o755)
        .dir(b"etc/apt/apt.conf.d/", 0o755);
}

/// Fake root: the default of a single mapping, asked for with the default mapping.
const FAKE_ROOT: [&[&str]; 2] = [&["--userns", "single"], &["--fake-root"]];

#[test]
fn apt_file_symlinked_by_the_image_to_a_host_file_leaves_it_unchanged() {
    // Old code: fs::write("<root>/etc/apt/apt.conf.d/99binctr-fake-root") before
    // pivot_root followed the image's absolute symlink to the host, and container root
    // (the user, with DAC override in its namespace) truncated the user's 0400 file.
    let t = Test::new("apt_symlink");
    let victim = Victim::new(&t, "victim", 0o400);
    let packed = busybox_with(&t, "apt-symlink", |tar| {
        with_apt_dir(tar);
        tar.symlink(APT_FILE, s(&victim.path).as_bytes());
    });
    for flags in FAKE_ROOT {
        let context = mapping_name(flags);
        let out = t
            .cmd(&packed)
            .args(flags)
            .args(["cat", "/etc/apt/apt.conf.d/99binctr-fake-root"])
            .timeout(RUN)
            .run();
        victim.assert_unchanged(&context);
        out.assert_success();
        assert!(
            out.stdout_text().contains(APT_LINE),
            "{context}: the container does not see binctr's apt file (so this test proves nothing):\n{out:?}"
        );
    }
}

#[test]
fn apt_file_that_is_a_fifo_does_not_hang_the_run() {
    // Old code: fs::write opened the image's FIFO for writing and waited for a reader
    // forever, every run.
    let t = Test::new("apt_fifo");
    let packed = busybox_with(&t, "apt-fifo", |tar| {
        with_apt_dir(tar);
        tar.fifo(APT_FILE);
    });
    for flags in FAKE_ROOT {
        let context = mapping_name(flags);
        let out = t
            .cmd(&packed)
            .args(flags)
            .args(["cat", "/etc/apt/apt.conf.d/99binctr-fake-root"])
            .timeout(Duration::from_secs(20))
            .run();
        assert!(
            out.code == Some(0) && out.stdout_text().contains(APT_LINE),
            "{context}: expected exit 0 and binctr's apt file in place of the FIFO:\n{out:?}"
        );
    }
}

#[test]
fn apt_file_symlinked_in_a_kept_layer_leaves_the_host_file_unchanged() {
    // The link comes from an earlier run's kept layer, not from the image: it is planted
    // in DIR/upper on the host (a container cannot name a host path that resolves
    // there, but whatever wrote the layer before could have).
    let t = Test::new("apt_kept");
    let victim = Victim::new(&t, "victim", 0o400);
    let packed = busybox_with(&t, "apt-dir", with_apt_dir);
    for (i, flags) in FAKE_ROOT.iter().enumerate() {
        let context = mapping_name(flags);
        let layer = t.dir.join(format!("layer-{i}"));
        t.cmd(&packed)
            .args(*flags)
            .args(["--overlay", &s(&layer), "true"])
            .timeout(RUN)
            .run()
            .assert_success();
        t.user_sh(
            r#"rm -f "$1/upper/etc/apt/apt.conf.d/99binctr-fake-root" &&
               mkdir -p "$1/upper/etc/apt/apt.conf.d" &&
               ln -s "$2" "$1/upper/etc/apt/apt.conf.d/99binctr-fake-root""#,
            &[&s(&layer), &s(&victim.path)],
        )
        .run()
        .assert_success();
        let out = t
            .cmd(&packed)
            .args(*flags)
            .args(["--overlay", &s(&layer)])
            .args(["cat", "/etc/apt/apt.conf.d/99binctr-fake-root"])
            .timeout(RUN)
            .run();
        victim.assert_unchanged(&context);
        out.assert_success();
        assert!(
            out.stdout_text().contains(APT_LINE),
            "{context}: the container does not see binctr's apt file:\n{out:?}"
        );
    }
}

// ---- 2. kept layers ---------------------------------------------------------------------

#[test]
fn kept_layer_is_private_and_its_setuid_files_out_of_the_neighbours_reach() {
    // Old code: DIR and DIR/upper 0755, so a setuid file made in the container was a
    // setuid program of the user that any local user could run.
    let t = Test::new("kept_private");
    let neighbour = t.env.neighbour().name.clone();
    for (i, flags) in MAPPINGS.iter().enumerate() {
        let context = mapping_name(flags);
        let layer = t.dir.join(format!("layer-{i}"));
        t.busybox_cmd(*flags)
            .args(["--overlay", &s(&layer)])
            .args([
                "sh",
                "-c",
                "cp /bin/busybox /suid-busybox && chmod 4755 /suid-busybox",
            ])
            .timeout(RUN)
            .run()
            .assert_success();
        let suid = layer.join("upper/suid-busybox");
        let meta = fs::metadata(&suid).unwrap_or_else(|e| {
            panic!("{context}: the setuid file is not in the kept layer ({e}): this test proves nothing")
        });
        assert!(
            meta.mode() & 0o4000 != 0 && meta.uid() == t.env.run_uid(),
            "{context}: expected a setuid file of the test user in {} (mode {:o}, uid {})",
            suid.display(),
            meta.mode(),
            meta.uid()
        );
        // DIR keeps everyone out; upper/ (the container's `/`, so it has a root
        // directory's mode) and work/ are the user's and closed to writes by others.
        assert_eq!(
            mode_of(&layer),
            0o700,
            "{context}: {} is not private",
            layer.display()
        );
        for dir in [layer.join("upper"), layer.join("work")] {
            let meta = fs::metadata(&dir).unwrap();
            assert!(
                meta.uid() == t.env.run_uid() && meta.mode() & 0o022 == 0,
                "{context}: {} is not the user's or others may write it (mode {:o})",
                dir.display(),
                meta.mode() & 0o7777
            );
        }
        for script in [r#"stat "$1""#, r#""$1" id -u"#, r#"ls "$2""#] {
            let out = t
                .neighbour_sh(script, &[&s(&suid), &s(&layer)])
                .timeout(QUICK)
                .run();
            assert!(
                out.code != Some(0) && out.stderr_text().contains("Permission denied"),
                "{context}: {neighbour} ran `{script}` on the kept layer; expected 'Permission denied':\n{out:?}"
            );
        }
    }
}

#[test]
fn kept_layer_dir_owned_by_the_neighbour_is_refused() {
    // Old code took any existing DIR: the neighbour, who made it, could read and plant
    // files in the layer the user's container runs on.
    let t = Test::new("kept_neighbour_dir");
    let shared = shared_dir(&t, "shared", 0o1777);
    let layer = shared.join("layer");
    t.neighbour_sh(r#"mkdir -m 777 "$1""#, &[&s(&layer)])
        .timeout(QUICK)
        .run()
        .assert_success();
    for flags in MAPPINGS {
        let context = mapping_name(flags);
        let out = t
            .busybox_cmd(flags)
            .args(["--overlay", &s(&layer), "true"])
            .timeout(RUN)
            .run();
        assert_refused(&out, "--overlay", &context);
        assert!(
            names_in(&layer).is_empty(),
            "{context}: the run wrote into the neighbour's directory: {:?}",
            names_in(&layer)
        );
    }
}

#[test]
fn kept_layer_dir_open_to_others_is_made_private() {
    // Old code kept whatever mode DIR had.
    let t = Test::new("kept_open_dir");
    for (i, flags) in MAPPINGS.iter().enumerate() {
        let context = mapping_name(flags);
        let layer = user_dir(&t, &format!("layer-{i}"), 0o777);
        t.busybox_cmd(*flags)
            .args(["--overlay", &s(&layer), "true"])
            .timeout(RUN)
            .run()
            .assert_success();
        assert_eq!(
            mode_of(&layer),
            0o700,
            "{context}: {} was left open to others",
            layer.display()
        );
    }
}

#[test]
fn kept_layer_upper_dir_writable_by_others_is_never_used_as_is() {
    // Old code mounted whatever DIR/upper was: here one that anybody may write in (so
    // the neighbour, had it reached it, could plant files in the container's root).
    let t = Test::new("kept_open_upper");
    for (i, flags) in MAPPINGS.iter().enumerate() {
        let context = mapping_name(flags);
        let layer = user_dir(&t, &format!("layer-{i}"), 0o700);
        let upper = user_dir(&t, &format!("layer-{i}/upper"), 0o777);
        let out = t
            .busybox_cmd(*flags)
            .args(["--overlay", &s(&layer), "true"])
            .timeout(RUN)
            .run();
        match out.code {
            Some(125) => assert_refused(&out, "upper", &context),
            _ => {
                out.assert_success();
                assert!(
                    mode_of(&upper) & 0o022 == 0,
                    "{context}: the run used {} while others may write it (mode {:o})",
                    upper.display(),
                    mode_of(&upper)
                );
            }
        }
    }
}

#[test]
fn kept_layer_root_dir_has_the_images_mode_so_other_users_can_run() {
    // The kept layer's upper directory is the container's `/` as overlayfs shows it:
    // DIR is private, but `/` must keep the image's mode (0755), or no user but
    // container root can reach anything.
    let t = Test::new("kept_root_mode");
    for (i, flags) in MAPPINGS.iter().enumerate() {
        let context = mapping_name(flags);
        let layer = s(&t.dir.join(format!("layer-{i}")));
        let out = t
            .busybox_cmd(*flags)
            .args(["--overlay", &layer, "stat", "-c", "%a", "/"])
            .timeout(RUN)
            .run();
        out.assert_success();
        assert_eq!(
            out.stdout_text(),
            "755\n",
            "{context}: the container's / under --overlay:\n{out:?}"
        );
        let out = t
            .busybox_cmd(*flags)
            .args(["--overlay", &layer, "-u", "1234", "ls", "/etc/passwd"])
            .timeout(RUN)
            .run();
        assert!(
            out.code == Some(0) && out.stdout_text() == "/etc/passwd\n",
            "{context}: uid 1234 cannot reach /etc/passwd under --overlay:\n{out:?}"
        );
    }
}

/// The pid a "in use by a running container (binctr pid N)" error names.
fn named_pid(out: &Output) -> u32 {
    let err = out.stderr_text();
    let digits: String = err
        .split("pid ")
        .nth(1)
        .unwrap_or_default()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("the error names no pid:\n{out:?}"))
}

#[test]
fn kept_layer_in_use_by_a_foreground_container_is_refused_naming_it() {
    // Old code: both containers mounted an overlay on the same upper and work dirs.
    let t = Test::new("kept_in_use_fg");
    let layer = t.dir.join("layer");
    let mut first = t
        .busybox_cmd(["--overlay", &s(&layer), "sleep", "1001"])
        .timeout(RUN)
        .spawn();
    first.wait_for_descendant("sleep", QUICK * 2);
    let second = t
        .busybox_cmd(["--overlay", &s(&layer), "echo", "second"])
        .timeout(RUN)
        .run();
    assert_refused(&second, "in use", "a second container on the same layer");
    assert_eq!(
        named_pid(&second),
        first.pid(),
        "the error should name the binctr that holds the layer:\n{second:?}"
    );
    first.signal(libc::SIGTERM);
    first.wait();
    // Free again once the first has ended.
    t.busybox_cmd(["--overlay", &s(&layer), "echo", "third"])
        .timeout(RUN)
        .run()
        .assert_success()
        .assert_stdout("third\n");
}

#[test]
fn kept_layer_in_use_by_a_detached_container_is_refused_naming_a_live_holder() {
    let t = Test::new("kept_in_use_detached");
    let layer = t.dir.join("layer");
    let pid_file = t.dir.join("first.pid");
    t.busybox_cmd(["-d", "--pid-file", &s(&pid_file), "--overlay", &s(&layer)])
        .args(["sleep", "1002"])
        .timeout(RUN)
        .run()
        .assert_success();
    let pid = read_pid_file(&pid_file);
    let _guard = Detached { pid };
    let second = t
        .busybox_cmd(["--overlay", &s(&layer), "echo", "second"])
        .timeout(RUN)
        .run();
    assert_refused(&second, "in use", "a second container on the same layer");
    let holder = named_pid(&second);
    assert!(
        is_live(holder),
        "the error names pid {holder}, which is not running (the container's pid is {pid}): \
         the user cannot find the holder:\n{second:?}"
    );
}

// ---- 3. a cache planted by the neighbour ------------------------------------------------

/// The packed busybox in both formats: the default (format 2, the layer store) and
/// `--flatten` (format 1, one entry per image).
fn both_formats(t: &Test) -> [(&'static str, &'static Path); 2] {
    [("format 2", t.busybox()), ("format 1", t.busybox_flat())]
}

/// A cache of the test user's own with the packed busybox extracted in both formats and
/// both mappings: two format 1 entries, two format 2 images and their layers.
fn reference_cache(t: &Test) -> PathBuf {
    let cache = t.dir.join("reference-cache");
    for (_, packed) in both_formats(t) {
        for flags in MAPPINGS {
            t.cmd(packed)
                .args(flags)
                .env("BINCTR_CACHE", &cache)
                .arg("true")
                .timeout(RUN)
                .run()
                .assert_success();
        }
    }
    let entries = finished_entries(&cache);
    let images = finished_entries(&cache.join("images"));
    let layers = finished_entries(&cache.join("layers"));
    assert!(
        entries.len() == 2 && images.len() == 2 && layers.len() == 2,
        "expected one format 1 entry, one format 2 image and one layer per mapping in {}: \
         {entries:?} {images:?} {layers:?}",
        cache.display()
    );
    cache
}

/// Copies the reference cache's contents into `dest` as the neighbour's trojans: every
/// extracted tree's /bin/sh writes `/out/marker` and says so; each of them belongs to
/// the neighbour, who planted it, and is open to the victim (a private entry would not
/// even be seen).
fn plant_trojans(t: &Test, reference: &Path, dest: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(reference.join("."))
        .arg(dest)
        .status()
        .expect("run cp");
    assert!(
        status.success(),
        "cp -a {}/. {}",
        reference.display(),
        dest.display()
    );
    let mut trees = Vec::new();
    for (_, entry) in finished_entries(dest) {
        trees.push(entry.join("rootfs"));
        fs::set_permissions(entry.join("mnt"), fs::Permissions::from_mode(0o755)).unwrap();
    }
    for (_, layer) in finished_entries(&dest.join("layers")) {
        trees.push(layer.join("root"));
    }
    for tree in &trees {
        let sh = tree.join("bin/sh");
        fs::remove_file(&sh).unwrap();
        fs::write(
            &sh,
            "#!/bin/busybox sh\necho trojan; echo pwned > /out/marker\n",
        )
        .unwrap();
        fs::set_permissions(&sh, fs::Permissions::from_mode(0o755)).unwrap();
    }
    // Every directory open to the victim, as the neighbour would leave them.
    let status = Command::new("find")
        .arg(dest)
        .args([
            "-mindepth",
            "1",
            "-type",
            "d",
            "-exec",
            "chmod",
            "go+rx",
            "{}",
            "+",
        ])
        .status()
        .expect("run find");
    assert!(status.success(), "chmod the planted trees");
    for (_, path) in cache_entries(dest) {
        give_tree_to_neighbour(t, &path);
    }
}

/// Runs the busybox in both formats with `cache` as BINCTR_CACHE and each mapping,
/// `sh -c` with a volume on /out; expects every run refused and the trojans never run.
fn expect_trojan_refused(t: &Test, cache: &Path) {
    let out_dir = user_dir(t, "out", 0o755);
    for (format, packed) in both_formats(t) {
        for flags in MAPPINGS {
            let context = format!(
                "{format}, {} with BINCTR_CACHE={}",
                mapping_name(flags),
                cache.display()
            );
            let out = t
                .cmd(packed)
                .args(flags)
                .env("BINCTR_CACHE", cache)
                .args(["--volume", &format!("{}:/out", s(&out_dir))])
                .args(["sh", "-c", "echo victim-ran"])
                .timeout(RUN)
                .run();
            assert!(
                !out_dir.join("marker").exists() && !out.stdout_text().contains("trojan"),
                "{context}: the neighbour's trojan ran:\n{out:?}"
            );
            assert_refused(&out, "BINCTR_CACHE", &context);
        }
    }
}

#[test]
fn cache_dir_made_by_the_neighbour_is_refused_and_its_planted_entry_never_runs() {
    // Old code: a warm start was one stat of $CACHE/<key>/rootfs; the owner check ran
    // only before a first extraction, so the planted rootfs ran as the user.
    let t = Test::new("cache_neighbour_root");
    let reference = reference_cache(&t);
    let shared = shared_dir(&t, "shared", 0o1777);
    let cache = shared.join("cache");
    t.neighbour_sh(r#"mkdir -m 1777 "$1""#, &[&s(&cache)])
        .timeout(QUICK)
        .run()
        .assert_success();
    plant_trojans(&t, &reference, &cache);
    expect_trojan_refused(&t, &cache);
}

#[test]
fn cache_entry_planted_by_the_neighbour_in_an_open_cache_dir_is_refused() {
    // The cache dir is the user's but was left open (0777): the neighbour made the
    // entries in it.
    let t = Test::new("cache_neighbour_entry");
    let reference = reference_cache(&t);
    let cache = user_dir(&t, "open-cache", 0o777);
    plant_trojans(&t, &reference, &cache);
    expect_trojan_refused(&t, &cache);
}

// ---- 4. pid file and state root ---------------------------------------------------------

/// The kernel's last pid given out and its pid_max.
fn last_pid() -> (u32, u32) {
    let read = |p: &str| -> u32 {
        fs::read_to_string(p)
            .unwrap_or_else(|e| panic!("read {p}: {e}"))
            .trim()
            .parse()
            .unwrap()
    };
    (
        read("/proc/sys/kernel/ns_last_pid"),
        read("/proc/sys/kernel/pid_max"),
    )
}

#[test]
fn pid_file_in_a_shared_dir_never_writes_through_the_neighbours_links() {
    // Old code wrote the pid file through `.NAME.tmp-<pid>` (File::create, following a
    // link), then renamed it: the neighbour, who can write the directory, planted links
    // at the next pids' temp names and the pid landed in the user's file.
    let t = Test::new("pid_file_links");
    let victim = Victim::new(&t, "victim", 0o644);
    // 0777, not sticky: in a sticky directory fs.protected_symlinks (where it is on)
    // would stop even the old code from following the neighbour's links.
    let dir = shared_dir(&t, "shared", 0o777);
    let pid_file = dir.join("c.pid");
    let n = t.env.neighbour();
    let plant = |name: &str| {
        let link = dir.join(name);
        symlink(&victim.path, &link).unwrap();
        lchown(&link, Some(n.uid), Some(n.gid)).unwrap();
    };
    // The next pids' temp names (10000 of them, wrapping at pid_max), and the pid file's
    // own name.
    const PLANTED: u32 = 10_000;
    let (last, pid_max) = last_pid();
    let planted: BTreeSet<u32> = (1..=PLANTED)
        .map(|i| (last + i) % pid_max)
        .filter(|&p| p > 1)
        .collect();
    for pid in &planted {
        plant(&format!(".c.pid.tmp-{pid}"));
    }
    plant("c.pid");
    let run = t
        .busybox_cmd(["--pid-file", &s(&pid_file), "true"])
        .timeout(RUN)
        .spawn();
    let stub_pid = run.pid();
    let out = run.wait();
    victim.assert_unchanged("--pid-file in a directory the neighbour writes");
    out.assert_success();
    assert!(
        planted.contains(&stub_pid),
        "the stub's pid {stub_pid} is outside the planted range after {last}: this run \
         proves nothing (too many processes started meanwhile); run it again"
    );
    let meta = fs::symlink_metadata(&pid_file).unwrap();
    assert!(
        meta.file_type().is_file() && meta.uid() == t.env.run_uid(),
        "the pid file is not a regular file of the test user: {meta:?}"
    );
    read_pid_file(&pid_file);
}

#[test]
fn state_root_that_is_a_symlink_is_not_chmoded_through() {
    // Old code: private_dir() stat'ed and chmod'ed the path, following a symlink: the
    // neighbour's link in a shared directory made binctr chmod 700 (and fill) whatever
    // directory of the user it pointed to.
    let t = Test::new("state_root_link");
    let target = user_dir(&t, "public", 0o755);
    let shared = shared_dir(&t, "shared", 0o1777);
    let root = shared.join("state");
    t.neighbour_sh(r#"ln -s "$1" "$2""#, &[&s(&target), &s(&root)])
        .timeout(QUICK)
        .run()
        .assert_success();
    let out = t
        .busybox_cmd(["--root", &s(&root), "--id", "linked", "true"])
        .timeout(RUN)
        .run();
    assert_eq!(
        mode_of(&target),
        0o755,
        "the state root's link was chmod'ed through:\n{out:?}"
    );
    assert!(
        names_in(&target).is_empty(),
        "state was written through the link: {:?}\n{out:?}",
        names_in(&target)
    );
    assert_refused(&out, "state", "--root through a symlink");
}

// ---- 5. memory bombs --------------------------------------------------------------------

/// Peak RSS the stub may reach on a hostile input (the README's promise).
const MAX_RSS_KIB: u64 = 64 * 1024;

/// Runs `packed ARGS` under GNU time as the test user; returns the output and the peak
/// RSS in KiB of the stub and every child it waited for (the subid extraction's child).
fn run_measured(t: &Test, packed: &Path, args: &[&str], timeout: Duration) -> (Output, u64) {
    let report = t.dir.join("time.out");
    let _ = fs::remove_file(&report);
    let started = Instant::now();
    let out = t
        .cmd(Path::new("/usr/bin/time"))
        .args(["-f", "%M", "-o", &s(&report)])
        .arg(packed)
        .args(args)
        .timeout(timeout)
        .run();
    let text = fs::read_to_string(&report)
        .unwrap_or_else(|e| panic!("GNU time wrote no report ({e}; package `time`):\n{out:?}"));
    let kib = text
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("GNU time's report {text:?} has no peak RSS"));
    eprintln!(
        "{}: {kib} KiB peak RSS, {:?}",
        packed.display(),
        started.elapsed()
    );
    (out, kib)
}

/// Each mapping: refused with one short line, peak RSS under 64 MiB, no cache entry.
fn expect_bomb_refused(t: &Test, packed: &Path, needle: &str) {
    for flags in MAPPINGS {
        let context = format!("{} ({})", packed.display(), mapping_name(flags));
        let mut args = flags.to_vec();
        args.extend(["echo", "ran"]);
        let (out, kib) = run_measured(t, packed, &args, Duration::from_secs(20));
        assert!(
            kib < MAX_RSS_KIB,
            "{context}: peak RSS {kib} KiB, over {MAX_RSS_KIB} KiB:\n{out:?}"
        );
        assert_refused(&out, needle, &context);
        assert!(
            entries_left(&t.cache()).is_empty(),
            "{context}: the cache holds {:?}",
            cache_entries(&t.cache())
        );
    }
}

/// A tar header as bytes.
fn header(name: &[u8], kind: u8, mode: u32, size: u64) -> Vec<u8> {
    let mut tar = RawTar::new();
    tar.header(name, kind, mode, size, b"", (0, 0));
    tar.bytes
}

/// Writes `len` bytes of `byte`, a MiB at a time.
fn write_filler(w: &mut dyn Write, byte: u8, mut len: u64) -> std::io::Result<()> {
    let chunk = vec![byte; 1 << 20];
    while len > 0 {
        let n = len.min(chunk.len() as u64) as usize;
        w.write_all(&chunk[..n])?;
        len -= n as u64;
    }
    Ok(())
}

/// 2 GiB: the size of the issue's long name (a 10 MB packed file).
const BOMB: u64 = 2 << 30;

#[test]
fn gnu_long_name_of_2_gib_is_refused_in_bounded_memory() {
    // Old code (the tar crate) read the whole long name: 10.5 GB RSS and a 2 GiB "line".
    let t = Test::new("bomb_long_name");
    let payload = lz4_stream(|w| {
        w.write_all(&header(b"././@LongLink", b'L', 0o644, BOMB))?;
        write_filler(w, b'a', BOMB)?;
        w.write_all(&header(b"bomb", b'0', 0o644, 0))?;
        w.write_all(&[0u8; 2 * BLOCK])
    });
    eprintln!("long-name bomb: {} bytes packed", payload.len());
    let packed = t.dir.join("long-name-bomb");
    assemble(
        &t,
        payload,
        config_with("bomb", serde_json::json!({})),
        &packed,
    );
    expect_bomb_refused(&t, &packed, "long name");
}

#[test]
fn pax_record_of_2_gib_is_refused_in_bounded_memory() {
    let t = Test::new("bomb_pax");
    let payload = lz4_stream(|w| {
        w.write_all(&header(b"PaxHeaders/bomb", b'x', 0o644, BOMB))?;
        // One record "LEN path=aaaa...\n" of exactly BOMB bytes.
        let prefix = format!("{BOMB} path=");
        w.write_all(prefix.as_bytes())?;
        write_filler(w, b'a', BOMB - prefix.len() as u64 - 1)?;
        w.write_all(b"\n")?;
        w.write_all(&header(b"bomb", b'0', 0o644, 0))?;
        w.write_all(&[0u8; 2 * BLOCK])
    });
    eprintln!("PAX bomb: {} bytes packed", payload.len());
    let packed = t.dir.join("pax-bomb");
    assemble(
        &t,
        payload,
        config_with("bomb", serde_json::json!({})),
        &packed,
    );
    expect_bomb_refused(&t, &packed, "PAX");
}

/// A component of 250 bytes, `nn` then filler.
fn component(n: usize, fill: u8) -> Vec<u8> {
    let mut c = format!("{n:05}").into_bytes();
    c.resize(250, fill);
    c
}

/// A path 15 components deep (3764 bytes), under PATH_MAX.
fn deep_dir() -> Vec<u8> {
    (0..15)
        .map(|i| component(i, b'd'))
        .collect::<Vec<_>>()
        .join(&b'/')
}

/// GNU long-name directory entries for every ancestor of `deep` and `deep` itself.
fn write_dir_entry(w: &mut dyn Write, path: &[u8]) -> std::io::Result<()> {
    let mut data = path.to_vec();
    data.push(b'/');
    data.push(0);
    w.write_all(&header(b"././@LongLink", b'L', 0o644, data.len() as u64))?;
    data.resize(data.len().div_ceil(BLOCK) * BLOCK, 0);
    w.write_all(&data)?;
    w.write_all(&header(b"dir", b'5', 0o755, 0))
}

fn write_ancestors(w: &mut dyn Write, deep: &[u8]) -> std::io::Result<()> {
    for (i, _) in deep.iter().enumerate().filter(|(_, &b)| b == b'/') {
        write_dir_entry(w, &deep[..i])?;
    }
    Ok(())
}

#[test]
fn duplicate_directory_entries_take_bounded_memory() {
    // Old code kept every directory entry's metadata (path included) for the end: the
    // issue's 250k entries of a long path took 1 GB. 30k entries of a 3.7 KB path
    // (~115 MB kept by the old code; 250k take 30-40 s to extract here, a disk's pace)
    // show it. A directory listed again now replaces its metadata, so the image extracts.
    let t = Test::new("bomb_dup_dirs");
    let payload = lz4_stream(|w| {
        w.write_all(busybox_tar_entries())?;
        let deep = deep_dir();
        write_ancestors(w, &deep)?;
        for _ in 0..30_000 {
            write_dir_entry(w, &deep)?;
        }
        w.write_all(&[0u8; 2 * BLOCK])
    });
    eprintln!("duplicate dirs: {} bytes packed", payload.len());
    let packed = t.dir.join("dup-dirs");
    assemble(
        &t,
        payload,
        config_with("dups", serde_json::json!({})),
        &packed,
    );
    for flags in MAPPINGS {
        let context = mapping_name(flags);
        let mut args = flags.to_vec();
        args.extend(["sh", "-c", "ls -d /0*/0*/0*/0* | wc -l"]);
        let (out, kib) = run_measured(&t, &packed, &args, Duration::from_secs(20));
        out.assert_success().assert_stdout("1\n");
        assert!(
            kib < MAX_RSS_KIB,
            "{context}: peak RSS {kib} KiB, over {MAX_RSS_KIB} KiB"
        );
    }
}

#[test]
fn directory_metadata_beyond_the_cap_is_refused_in_bounded_memory() {
    // 400 distinct directories, each with a 200 KB xattr (a PAX record under the PAX
    // cap): 80 MB of metadata to keep until the end. Old code kept it all; the cap
    // (24 MiB) refuses the image instead.
    let t = Test::new("bomb_many_dirs");
    let payload = lz4_stream(|w| {
        w.write_all(busybox_tar_entries())?;
        w.write_all(&header(b"many/", b'5', 0o755, 0))?;
        let value = vec![b'x'; 200 * 1024];
        for i in 0..400 {
            let mut pax = RawTar::new();
            pax.pax(&[("SCHILY.xattr.user.binctr", &value)]);
            w.write_all(&pax.bytes)?;
            w.write_all(&header(format!("many/{i:05}/").as_bytes(), b'5', 0o755, 0))?;
        }
        w.write_all(&[0u8; 2 * BLOCK])
    });
    let packed = t.dir.join("many-dirs");
    assemble(
        &t,
        payload,
        config_with("dirs", serde_json::json!({})),
        &packed,
    );
    expect_bomb_refused(&t, &packed, "directory metadata");
}

#[test]
fn refused_extraction_with_paths_near_path_max_leaves_no_temp_dir() {
    // An image's paths may be as long as PATH_MAX relative to its root; under the
    // cache directory they are longer, and a removal that goes by full paths cannot
    // reach them (ENAMETOOLONG): the half-made extraction would stay, and another at
    // every run.
    let t = Test::new("long_paths_cleanup");
    let mut tar = RawTar::on_busybox();
    let deep = deep_dir();
    let mut buf: Vec<u8> = Vec::new();
    write_ancestors(&mut buf, &deep).unwrap();
    write_dir_entry(&mut buf, &deep).unwrap();
    let mut deeper = deep.clone();
    deeper.push(b'/');
    deeper.extend(component(15, b'e'));
    write_dir_entry(&mut buf, &deeper).unwrap();
    deeper.push(b'/');
    deeper.extend(&component(16, b'f')[..70]);
    assert!(deeper.len() < 4090, "{} bytes", deeper.len());
    write_dir_entry(&mut buf, &deeper).unwrap();
    tar.bytes.extend(buf);
    tar.file(b"../escape", b"refused\n");
    let packed = pack_tar(&t, &tar.finish(), "long-paths");
    let mut left = Vec::new();
    for flags in MAPPINGS {
        for attempt in ["first run", "second run"] {
            let context = format!("{} ({attempt})", mapping_name(flags));
            let out = t.cmd(&packed).args(flags).arg("true").timeout(RUN).run();
            assert_refused(&out, "escape", &context);
            if !entries_left(&t.cache()).is_empty() {
                left.push(format!("{context}: {:?}", entries_left(&t.cache())));
            }
        }
    }
    assert!(
        left.is_empty(),
        "refused extractions were left in the cache:\n{}",
        left.join("\n")
    );
}

/// The busybox tar's entries without end blocks.
fn busybox_tar_entries() -> &'static [u8] {
    binctr_tests::rawtar::busybox_entries()
}

// ---- 6. FIFOs ---------------------------------------------------------------------------

#[test]
fn fifos_at_etc_files_do_not_hang_the_first_run() {
    // Old code opened etc/hosts, etc/resolv.conf and etc/hostname for writing while
    // extracting (mount points the container needs) and etc/passwd for reading (-u):
    // a FIFO there blocked for ever, stop signals blocked and the cache lock held.
    // The command's signal mask is checked too; it guards the command only (the
    // command empties its mask itself, and the stub's own mask after the extraction
    // cannot be told from outside: its monitor blocks those signals for its signalfd).
    let t = Test::new("fifos");
    let cases: [(&str, &[&str]); 4] = [
        ("etc/hosts", &[]),
        ("etc/resolv.conf", &[]),
        ("etc/hostname", &[]),
        ("etc/passwd", &["-u", "someuser"]),
    ];
    for (i, (fifo, flags)) in cases.iter().enumerate() {
        let packed = busybox_with(&t, &format!("fifo-{i}"), |tar| {
            tar.fifo(fifo.as_bytes());
        });
        for mapping in MAPPINGS {
            let context = format!("a FIFO at {fifo} ({})", mapping_name(mapping));
            let out = t
                .cmd(&packed)
                .args(mapping)
                .args(*flags)
                .args(["grep", "^SigBlk:", "/proc/self/status"])
                .timeout(Duration::from_secs(20))
                .run();
            match out.code {
                Some(0) => assert_eq!(
                    out.stdout_text(),
                    "SigBlk:\t0000000000000000\n",
                    "{context}: the command starts with signals blocked:\n{out:?}"
                ),
                Some(125) => assert_refused(&out, "", &context),
                _ => panic!("{context}: expected exit 0 or a clean 125:\n{out:?}"),
            }
        }
    }
}

// ---- 7. a read-only root stays read-only -------------------------------------------------

#[test]
fn read_only_root_cannot_be_remounted_writable_to_change_the_cache() {
    // Old code: a read-only bind of the cached rootfs, which container root with
    // SYS_ADMIN and seccomp off could remount read-write, changing every later run.
    let t = Test::new("read_only_remount");
    let script = "mount -o remount,rw / 2>/dev/null; mount -o remount,bind,rw / 2>/dev/null; \
                  if echo pwned > /bin/marker 2>/dev/null; then echo wrote; else echo refused; fi";
    for flags in MAPPINGS {
        let context = mapping_name(flags);
        let out = t
            .busybox_cmd(flags)
            .args(["--read-only", "--cap-add", "SYS_ADMIN"])
            .args(["--security-opt", "seccomp=unconfined"])
            .args(["sh", "-c", script])
            .timeout(RUN)
            .run();
        out.assert_success();
        for (name, entry) in finished_entries(&t.cache()) {
            assert!(
                !entry.join("rootfs/bin/marker").exists(),
                "{context}: the container wrote into the cache entry {name}:\n{out:?}"
            );
        }
        assert_eq!(
            out.stdout_text(),
            "refused\n",
            "{context}: the read-only root took a write"
        );
    }
}

// ---- 8. the smaller items ---------------------------------------------------------------

/// The median of `n` wall-clock times of `run`.
fn median_time(n: usize, mut run: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..n)
        .map(|_| {
            let start = Instant::now();
            run();
            start.elapsed()
        })
        .collect();
    times.sort();
    times[n / 2]
}

#[test]
fn thirty_thousand_env_entries_start_in_well_under_100_ms_more() {
    // Old code (before issue 9) merged the environment in quadratic time: 2.3 s per
    // start with 30k entries.
    let t = Test::new("env_30k");
    let env: Vec<String> = (0..30_000).map(|i| format!("VAR_{i}=value-{i}")).collect();
    let big = busybox_with_config(
        &t,
        "env-30k",
        "env30k",
        serde_json::json!({ "env": env }),
        |_| {},
    );
    let empty = busybox_with_config(&t, "env-0", "env0", serde_json::json!({}), |_| {});
    // Same payload, one cache entry: the first run extracts, the rest are warm.
    t.cmd(&big)
        .args(["sh", "-c", "echo $VAR_0 $VAR_29999"])
        .timeout(RUN)
        .run()
        .assert_success()
        .assert_stdout("value-0 value-29999\n");
    let start = |packed: &Path| {
        t.cmd(packed)
            .arg("true")
            .timeout(RUN)
            .run()
            .assert_success();
    };
    start(&empty);
    let with_env = median_time(5, || start(&big));
    let without = median_time(5, || start(&empty));
    eprintln!("start with 30k env entries: {with_env:?}, without: {without:?}");
    assert!(
        with_env < without + Duration::from_millis(100),
        "30k env entries: median start {with_env:?}, without {without:?}"
    );
}

#[test]
fn control_characters_in_image_names_are_escaped_in_help_and_cache_list() {
    let t = Test::new("name_escapes");
    let evil = "evil\x1b]0;pwned\x07\x1b[31m\nforged line";
    let packed = busybox_with_config(
        &t,
        "evil-name",
        evil,
        serde_json::json!({ "reference": evil, "cmd": ["echo", evil] }),
        |_| {},
    );
    let check = |out: &Output, what: &str| {
        out.assert_success();
        assert!(
            !out.stdout.contains(&0x1b) && !out.stdout.contains(&0x07),
            "{what} printed raw control characters:\n{out:?}"
        );
        assert!(
            !out.stdout_text().lines().any(|l| l.starts_with("forged")),
            "{what} let the image name start a line of its own:\n{out:?}"
        );
    };
    let help = t.cmd(&packed).arg("--help").timeout(RUN).run();
    check(&help, "--help");
    assert!(
        help.stdout_text().contains("evil"),
        "--help does not show the name:\n{help:?}"
    );
    t.cmd(&packed)
        .arg("true")
        .timeout(RUN)
        .run()
        .assert_success();
    let list = t.cmd(&packed).arg("--cache-list").timeout(RUN).run();
    check(&list, "--cache-list");
    assert!(
        list.stdout_text().contains("evil"),
        "--cache-list does not list the image:\n{list:?}"
    );
}

/// A static program that calls io_uring_setup and prints the errno (or "ok").
const URING_C: &str = r#"
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
int main(void) {
    unsigned char params[120];
    memset(params, 0, sizeof params);
    long fd = syscall(SYS_io_uring_setup, 1, params);
    if (fd < 0) printf("%d\n", errno); else printf("ok\n");
    return 0;
}
"#;

#[test]
fn io_uring_is_refused_by_the_default_seccomp_filter() {
    let t = Test::new("io_uring");
    let helper = t.dir.join("helper");
    fs::create_dir(&helper).unwrap();
    fs::set_permissions(&helper, fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(helper.join("uring.c"), URING_C).unwrap();
    let cc = Command::new("cc")
        .args(["-static", "-O", "-o"])
        .arg(helper.join("uring"))
        .arg(helper.join("uring.c"))
        .output()
        .expect("run cc (package gcc)");
    assert!(
        cc.status.success(),
        "cc -static failed (packages gcc, libc6-dev): {}",
        String::from_utf8_lossy(&cc.stderr)
    );
    fs::set_permissions(helper.join("uring"), fs::Permissions::from_mode(0o755)).unwrap();
    let volume = format!("{}:/h:ro", s(&helper));
    for flags in MAPPINGS {
        let context = mapping_name(flags);
        let run = |extra: &[&str]| {
            t.busybox_cmd(flags)
                .args(["--volume", &volume])
                .args(extra)
                .arg("/h/uring")
                .timeout(RUN)
                .run()
        };
        let confined = run(&[]);
        confined.assert_success();
        assert_eq!(
            confined.stdout_text().trim(),
            libc::EPERM.to_string(),
            "{context}: io_uring_setup under the default filter:\n{confined:?}"
        );
        // The control: without the filter the kernel answers.
        let unconfined = run(&["--security-opt", "seccomp=unconfined"]);
        unconfined.assert_success();
        assert_ne!(
            unconfined.stdout_text().trim(),
            libc::EPERM.to_string(),
            "{context}: io_uring_setup is refused even without the filter (kernel.io_uring_disabled?), \
             so the test cannot tell:\n{unconfined:?}"
        );
    }
}

#[test]
fn detached_container_gets_the_images_stop_signal_from_kill_term() {
    // Old code: PID 1 passed SIGTERM on as SIGTERM; only the foreground monitor mapped
    // it to the image's StopSignal.
    let t = Test::new("stop_signal_detached");
    let packed = busybox_with_config(
        &t,
        "usr1-stops",
        "usr1-stops",
        serde_json::json!({ "stop_signal": "SIGUSR1" }),
        |_| {},
    );
    let out_dir = user_dir(&t, "out", 0o755);
    let pid_file = t.dir.join("c.pid");
    let script =
        "trap 'echo USR1 > /out/got; exit 0' USR1; trap 'echo TERM > /out/got; exit 0' TERM; \
                  echo ready > /out/ready; while :; do sleep 0.1; done";
    t.cmd(&packed)
        .args(["-d", "--pid-file", &s(&pid_file)])
        .args(["--volume", &format!("{}:/out", s(&out_dir))])
        .args(["sh", "-c", script])
        .timeout(RUN)
        .run()
        .assert_success();
    let pid = read_pid_file(&pid_file);
    let _guard = Detached { pid };
    assert!(
        wait_until(QUICK, || out_dir.join("ready").exists()),
        "the detached command did not start"
    );
    t.user_sh(r#"kill -TERM "$(cat "$1")""#, &[&s(&pid_file)])
        .timeout(QUICK)
        .run()
        .assert_success();
    assert!(
        wait_until(QUICK * 2, || !is_live(pid)),
        "the detached container did not stop on kill -TERM"
    );
    let got = fs::read_to_string(out_dir.join("got")).unwrap_or_default();
    assert_eq!(
        got, "USR1\n",
        "the command got another signal than the image's StopSignal"
    );
}

#[test]
fn stop_signal_sigstop_warns_once_and_sigterm_still_stops_the_container() {
    // Old code forwarded SIGSTOP as the stop signal: the container stopped (not ended)
    // and the stub waited for ever.
    let t = Test::new("stop_signal_sigstop");
    let packed = busybox_with_config(
        &t,
        "stop-stops",
        "stop-stops",
        serde_json::json!({ "stop_signal": "SIGSTOP" }),
        |_| {},
    );
    let mut run = t
        .cmd(&packed)
        .args(["sleep", "1003"])
        .timeout(Duration::from_secs(20))
        .spawn();
    run.wait_for_descendant("sleep", QUICK * 2);
    run.signal(libc::SIGTERM);
    let out = run.wait();
    assert_eq!(
        out.code,
        Some(128 + libc::SIGTERM),
        "the container should end on SIGTERM:\n{out:?}"
    );
    let err = out.stderr_text();
    assert!(
        err.lines().count() == 1 && err.contains("warning") && err.contains("StopSignal"),
        "expected one warning line about the StopSignal:\n{out:?}"
    );
}

#[test]
fn dash_h_after_an_option_value_prints_help() {
    // Old code turned -h into --help only in the run of arguments starting with '-',
    // which an option's value ends: "Unrecognized argument: -h".
    let t = Test::new("dash_h");
    for args in [
        &["-e", "A=1", "-h"][..],
        &["--hostname", "box", "-h", "echo", "x"],
    ] {
        let out = t.busybox_cmd(args).timeout(RUN).run();
        out.assert_success();
        assert!(
            out.stdout_text().contains("Usage:"),
            "{args:?} did not print the help:\n{out:?}"
        );
    }
}

#[test]
fn non_utf8_flag_values_are_refused_not_changed() {
    // Old code passed a lossy copy to the parser: `-e A=\xff` became A=\u{fffd}.
    let t = Test::new("non_utf8_flags");
    let odd = |prefix: &[u8]| {
        let mut bytes = prefix.to_vec();
        bytes.extend_from_slice(b"\xff\xfe");
        OsString::from_vec(bytes)
    };
    for (flag, value) in [
        ("-e", odd(b"A=")),
        ("-w", odd(b"/tmp/")),
        ("--volume", odd(b"/tmp:/mnt/")),
    ] {
        let out = t
            .busybox_cmd([OsString::from(flag), value, OsString::from("true")])
            .timeout(RUN)
            .run();
        assert_refused(&out, "UTF-8", &format!("{flag} with a non-UTF-8 value"));
    }
    // The command itself passes through untouched.
    let out = t
        .busybox_cmd([OsString::from("echo"), odd(b"x")])
        .timeout(RUN)
        .run();
    out.assert_success();
    assert_eq!(
        out.stdout, b"x\xff\xfe\n",
        "the command's bytes changed:\n{out:?}"
    );
}

#[test]
fn user_added_in_a_kept_layer_can_be_named_with_u() {
    // Old code resolved -u in the cached rootfs only, never in the kept layer the
    // container sees.
    let t = Test::new("kept_layer_user");
    for (i, flags) in MAPPINGS.iter().enumerate() {
        let context = mapping_name(flags);
        let layer = s(&t.dir.join(format!("layer-{i}")));
        t.busybox_cmd(*flags)
            .args(["--overlay", &layer, "sh", "-c"])
            .arg("echo 'newuser:x:1234:1234:new:/home/newuser:/bin/sh' >> /etc/passwd")
            .timeout(RUN)
            .run()
            .assert_success();
        let out = t
            .busybox_cmd(*flags)
            .args(["--overlay", &layer, "-u", "newuser", "id", "-u"])
            .timeout(RUN)
            .run();
        assert!(
            out.code == Some(0) && out.stdout_text() == "1234\n",
            "{context}: -u newuser, added to /etc/passwd in the kept layer:\n{out:?}"
        );
    }
}
