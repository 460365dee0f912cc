//! The end-to-end harness: pack a fixture image once, run the packed file as an ordinary
//! non-root user with a clean environment, and assert on exit code and output.
//!
//! Everything comes from `scripts/test.sh`: it builds `dist/`, makes the fixtures and the
//! test users, then exports `BINCTR_DIST`, `BINCTR_FIXTURES` and (when run as root)
//! `BINCTR_TEST_USER` and `BINCTR_NEIGHBOUR_USER` (a second local user, the neighbour or
//! attacker of the hardening tests). A test that cannot run fails loudly; nothing is
//! skipped.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{chown, MetadataExt, PermissionsExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

mod procs;
mod pty;
pub mod rawtar;

pub use procs::{
    all_processes, assert_no_process_left, find_descendant, is_live, live_descendants,
    live_descendants_with_argv, live_with_argv, read_pid_file, send_signal, signal_group, Detached,
    Proc,
};
pub use pty::{find_bytes, PtyRun};

/// How long any one command may run before the test kills it and fails.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// How long anything that should be quick may take before the test fails.
pub const QUICK: Duration = Duration::from_secs(5);

/// The PATH the harness gives the packed binary, as a login shell would.
pub const HOST_PATH: &str = "/usr/bin:/bin";

/// The PATH a container gets when the image sets none (docker's default).
pub const CONTAINER_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The version every binary of the workspace carries.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

const RUN_TEST_SH: &str = "run the tests through scripts/test.sh: it builds dist/, makes the \
                           fixture images and the test users, and sets BINCTR_DIST, \
                           BINCTR_FIXTURES, BINCTR_TEST_USER and BINCTR_NEIGHBOUR_USER";

/// The non-root account the packed binaries run as.
#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// What scripts/test.sh prepared, read once per test binary.
#[derive(Debug)]
pub struct Env {
    /// `dist/`: binctr-pack and binctr-stub.
    pub dist: PathBuf,
    /// `build/`: the fixture image tars (busybox.tar).
    pub fixtures: PathBuf,
    /// The user to run containers as when the tests run as root; `None` when they run as
    /// an ordinary user already.
    pub test_user: Option<User>,
    /// This process's scratch root: `/tmp/binctr-tests-<uid>/<pid>`, mode 0755.
    pub base: PathBuf,
    packed: OnceLock<PathBuf>,
    packed_flat: OnceLock<PathBuf>,
    /// A second local user (not the test user, not root), or why there is none: read
    /// at load, and a test that needs it fails with the reason (see [`Env::neighbour`]).
    neighbour: std::result::Result<User, String>,
}

impl Env {
    /// Reads and checks the environment the first time; panics with what to do when
    /// something is missing.
    pub fn get() -> &'static Env {
        static ENV: OnceLock<Env> = OnceLock::new();
        ENV.get_or_init(Env::load)
    }

    fn load() -> Env {
        let dist = required_dir("BINCTR_DIST");
        let fixtures = required_dir("BINCTR_FIXTURES");
        for file in [
            dist.join("binctr-pack"),
            dist.join("binctr-stub"),
            fixtures.join("busybox.tar"),
        ] {
            if !file.is_file() {
                panic!("{} is missing: {RUN_TEST_SH}", file.display());
            }
        }
        let test_user = match std::env::var("BINCTR_TEST_USER") {
            Ok(name) if !name.is_empty() => {
                if !is_root() {
                    panic!(
                        "BINCTR_TEST_USER={name} is set but the tests do not run as root, so they \
                         cannot switch to it: unset it, or run scripts/test.sh as root"
                    );
                }
                if !Path::new("/usr/bin/setpriv").exists() {
                    panic!("/usr/bin/setpriv is missing (package util-linux): {RUN_TEST_SH}");
                }
                Some(lookup_user(&name))
            }
            _ => {
                if is_root() {
                    panic!(
                        "the tests run as root but BINCTR_TEST_USER is not set: containers must \
                         be run by a non-root user; {RUN_TEST_SH}"
                    );
                }
                None
            }
        };
        let neighbour = load_neighbour(test_user.as_ref());
        let base = make_base_dir();
        Env {
            dist,
            fixtures,
            test_user,
            base,
            packed: OnceLock::new(),
            packed_flat: OnceLock::new(),
            neighbour,
        }
    }

    /// The second local user, who plays the neighbour (attacker) on a shared machine.
    /// Fails the test, saying why, when there is none: the tests must run as root (to
    /// switch users) with BINCTR_NEIGHBOUR_USER set, as scripts/test.sh does.
    #[track_caller]
    pub fn neighbour(&self) -> &User {
        match &self.neighbour {
            Ok(user) => user,
            Err(why) => panic!("this test needs a second local user (the neighbour): {why}"),
        }
    }

    /// Hands a path to the neighbour, as if the neighbour had made it.
    pub fn give_to_neighbour(&self, path: &Path) {
        let user = self.neighbour();
        chown(path, Some(user.uid), Some(user.gid))
            .unwrap_or_else(|e| panic!("chown {} to {}: {e}", path.display(), user.name));
    }

    pub fn packer(&self) -> PathBuf {
        self.dist.join("binctr-pack")
    }

    pub fn stub(&self) -> PathBuf {
        self.dist.join("binctr-stub")
    }

    pub fn fixture(&self, name: &str) -> PathBuf {
        let path = self.fixtures.join(name);
        if !path.is_file() {
            panic!("fixture {} is missing: {RUN_TEST_SH}", path.display());
        }
        path
    }

    /// The example image packed once per test binary (`<base>/shared/busybox`), readable
    /// and executable by the test user. Each test still gets its own cache.
    pub fn busybox(&'static self) -> &'static Path {
        self.busybox_packed(&self.packed, "busybox", false)
    }

    /// The example image packed once per test binary as format 1 (`--flatten`:
    /// `<base>/shared/busybox-flat`), for the tests of that format's bytes and cache.
    pub fn busybox_flat(&'static self) -> &'static Path {
        self.busybox_packed(&self.packed_flat, "busybox-flat", true)
    }

    fn busybox_packed(
        &'static self,
        cell: &'static OnceLock<PathBuf>,
        name: &str,
        flatten: bool,
    ) -> &'static Path {
        cell.get_or_init(|| {
            let dir = self.base.join("shared");
            make_dir(&dir, 0o755);
            let out = dir.join(name);
            pack_into(self, &self.fixture("busybox.tar"), &out, flatten);
            out
        })
    }

    /// Hands a path to the test user (when there is one), as if the user had made it.
    pub fn give_to_user(&self, path: &Path) {
        if let Some(user) = &self.test_user {
            chown(path, Some(user.uid), Some(user.gid))
                .unwrap_or_else(|e| panic!("chown {} to {}: {e}", path.display(), user.name));
        }
    }

    /// The uid the packed binaries run as.
    pub fn run_uid(&self) -> u32 {
        match &self.test_user {
            Some(user) => user.uid,
            // SAFETY: geteuid has no preconditions and cannot fail.
            None => unsafe { libc::geteuid() },
        }
    }
}

fn required_dir(var: &str) -> PathBuf {
    let value = std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| panic!("{var} is not set: {RUN_TEST_SH}"));
    let path = PathBuf::from(value);
    if !path.is_dir() {
        panic!("{var}={} is not a directory: {RUN_TEST_SH}", path.display());
    }
    path.canonicalize()
        .unwrap_or_else(|e| panic!("{var}={}: {e}", path.display()))
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// BINCTR_NEIGHBOUR_USER, checked: a user other than root and the test user, and a
/// root test process that can switch to it.
fn load_neighbour(test_user: Option<&User>) -> std::result::Result<User, String> {
    let name = match std::env::var("BINCTR_NEIGHBOUR_USER") {
        Ok(name) if !name.is_empty() => name,
        _ if is_root() => {
            return Err(format!(
                "the tests run as root but BINCTR_NEIGHBOUR_USER is not set (scripts/test.sh \
                 creates binctr-neighbour with `scripts/ensure-test-user.sh --neighbour` and \
                 exports it); {RUN_TEST_SH}"
            ))
        }
        _ => {
            return Err(format!(
                "the tests do not run as root, so they cannot act as a second user; \
                 {RUN_TEST_SH} as root"
            ))
        }
    };
    if !is_root() {
        return Err(format!(
            "BINCTR_NEIGHBOUR_USER={name} is set but the tests do not run as root, so they \
             cannot switch to it; {RUN_TEST_SH} as root"
        ));
    }
    let user = lookup_user(&name);
    if test_user.is_some_and(|t| t.uid == user.uid) {
        return Err(format!(
            "BINCTR_NEIGHBOUR_USER={name} is the test user itself; it must be another user"
        ));
    }
    Ok(user)
}

fn lookup_user(name: &str) -> User {
    let passwd = fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    for line in passwd.lines() {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() >= 4 && fields[0] == name {
            let uid = fields[2].parse().expect("uid in /etc/passwd");
            let gid = fields[3].parse().expect("gid in /etc/passwd");
            if uid == 0 {
                panic!("{name} is root; the test users must be ordinary users");
            }
            return User {
                name: name.to_string(),
                uid,
                gid,
            };
        }
    }
    panic!("user {name}: no such user in /etc/passwd: {RUN_TEST_SH}");
}

/// `/tmp/binctr-tests-<uid>/<pid>`, traversable by the test user. Leftovers of test
/// processes that no longer exist are removed.
fn make_base_dir() -> PathBuf {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    let top = PathBuf::from(format!("/tmp/binctr-tests-{uid}"));
    make_dir(&top, 0o755);
    if let Ok(entries) = fs::read_dir(&top) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Ok(pid) = name.parse::<u32>() {
                if !Path::new(&format!("/proc/{pid}")).exists() {
                    remove_tree(&entry.path());
                }
            }
        }
    }
    let base = top.join(std::process::id().to_string());
    remove_tree(&base);
    make_dir(&base, 0o755);
    base
}

fn make_dir(path: &Path, mode: u32) {
    match fs::create_dir(path) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists && path.is_dir() => {}
        Err(e) => panic!("mkdir {}: {e}", path.display()),
    }
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {:o} {}: {e}", mode, path.display()));
}

/// Removes a tree, making directories writable first when a plain removal is refused
/// (an extracted rootfs may hold read-only directories). Best effort.
pub fn remove_tree(path: &Path) {
    if fs::remove_dir_all(path).is_ok() || !path.exists() {
        return;
    }
    fn make_writable(path: &Path) {
        let Ok(meta) = fs::symlink_metadata(path) else {
            return;
        };
        if meta.is_dir() {
            let _ = fs::set_permissions(path, fs::Permissions::from_mode(meta.mode() | 0o700));
            if let Ok(entries) = fs::read_dir(path) {
                for entry in entries.flatten() {
                    make_writable(&entry.path());
                }
            }
        }
    }
    make_writable(path);
    let _ = fs::remove_dir_all(path);
}

/// Packs `input` as the packer does by default (format 2, the layer store), or as
/// format 1 (`--flatten`) for the tests of the flat payload's cache layout.
fn pack_into(env: &'static Env, input: &Path, out: &Path, flatten: bool) {
    let output = Cmd::new(env, &env.packer())
        .arg(input)
        .args(flatten.then_some("--flatten"))
        .arg("-o")
        .arg(out)
        .as_current_user()
        .run();
    if output.code != Some(0) || !out.is_file() {
        panic!(
            "packing {} into {} failed:\n{output:?}",
            input.display(),
            out.display()
        );
    }
    env.give_to_user(out);
    fs::set_permissions(out, fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("chmod 0755 {}: {e}", out.display()));
}

/// One test's scratch space: `<base>/<name>-<n>/` owned by the test user, with a home and
/// a cache of its own. Removed when the test passes, kept (and printed) when it fails.
pub struct Test {
    pub env: &'static Env,
    pub name: String,
    pub dir: PathBuf,
}

impl Test {
    pub fn new(name: &str) -> Test {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let env = Env::get();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = env.base.join(format!("{name}-{n}"));
        make_dir(&dir, 0o755);
        env.give_to_user(&dir);
        let test = Test {
            env,
            name: name.to_string(),
            dir,
        };
        make_dir(&test.home(), 0o700);
        env.give_to_user(&test.home());
        test
    }

    /// The test user's HOME for this test.
    pub fn home(&self) -> PathBuf {
        self.dir.join("home")
    }

    /// `$BINCTR_CACHE` for this test (not created: the stub creates it).
    pub fn cache(&self) -> PathBuf {
        self.dir.join("cache")
    }

    /// The shared packed busybox image.
    pub fn busybox(&self) -> &'static Path {
        self.env.busybox()
    }

    /// Packs a fixture into this test's directory, ready for the test user to run.
    pub fn pack(&self, fixture: &Path, out_name: &str) -> PathBuf {
        let out = self.dir.join(out_name);
        pack_into(self.env, fixture, &out, false);
        out
    }

    /// Packs a fixture as format 1 (`--flatten`: one flattened layer, the cache entry
    /// `<key>/rootfs`), for the tests of that layout.
    pub fn pack_flat(&self, fixture: &Path, out_name: &str) -> PathBuf {
        let out = self.dir.join(out_name);
        pack_into(self.env, fixture, &out, true);
        out
    }

    /// `binctr-pack ARGS` as the current user (the packer never needs the test user).
    pub fn packer(&self) -> Cmd {
        self.cmd(&self.env.packer()).as_current_user()
    }

    /// A command run as the test user with a clean environment: HOME, PATH, USER,
    /// LOGNAME and BINCTR_CACHE, as a real user would run it.
    pub fn cmd(&self, program: &Path) -> Cmd {
        Cmd::new(self.env, program)
            .env("HOME", self.home())
            .env("BINCTR_CACHE", self.cache())
    }

    /// A command run as the neighbour (the second local user) with a clean environment:
    /// HOME (its own home), PATH, USER and LOGNAME. Fails the test when there is no
    /// neighbour (see [`Env::neighbour`]).
    pub fn neighbour_cmd(&self, program: &Path) -> Cmd {
        let user = self.env.neighbour().clone();
        Cmd::new(self.env, program)
            .env("HOME", format!("/home/{}", user.name))
            .env("USER", &user.name)
            .env("LOGNAME", &user.name)
            .run_as(Who::Neighbour)
    }

    /// `/bin/sh -c SCRIPT sh ARGS...` on the host, as the neighbour.
    pub fn neighbour_sh(&self, script: &str, args: &[&str]) -> Cmd {
        self.neighbour_cmd(Path::new("/bin/sh"))
            .args(["-c", script, "sh"])
            .args(args.iter().copied())
    }

    /// `/bin/sh -c SCRIPT sh ARGS...` on the host, as the test user.
    pub fn user_sh(&self, script: &str, args: &[&str]) -> Cmd {
        self.cmd(Path::new("/bin/sh"))
            .args(["-c", script, "sh"])
            .args(args.iter().copied())
    }

    /// Shorthand: the packed busybox with ARGS, run as the test user.
    pub fn busybox_cmd<I, S>(&self, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.cmd(self.busybox()).args(args)
    }

    /// The format 1 packed busybox (see [`Env::busybox_flat`]).
    pub fn busybox_flat(&self) -> &'static Path {
        self.env.busybox_flat()
    }

    /// Shorthand: run the packed busybox with ARGS and no stdin.
    pub fn run<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.busybox_cmd(args).run()
    }

    /// The extracted rootfs directories (`<64 hex>[-subid-...]`) in this test's cache.
    pub fn cache_digest_dirs(&self) -> Vec<PathBuf> {
        extracted_images(&self.cache())
            .into_iter()
            .map(|name| self.cache().join(name))
            .collect()
    }

    /// The extracted tree of the cache's one image: format 1's `<entry>/rootfs`, or the
    /// one layer of a single-layer format 2 image (`layers/<key>/root`). Fails the test
    /// unless there is exactly one.
    pub fn only_rootfs(&self) -> PathBuf {
        let entry = self.only_digest_dir();
        if !entry.parent().is_some_and(|p| p.ends_with("images")) {
            return entry.join("rootfs");
        }
        let layers: Vec<PathBuf> = cache_entries(&self.cache().join("layers"))
            .into_iter()
            .filter(|(name, path)| is_cache_entry(name) && path.is_dir())
            .map(|(_, path)| path.join("root"))
            .collect();
        assert_eq!(
            layers.len(),
            1,
            "expected one extracted layer in {}/layers: {layers:?}",
            self.cache().display()
        );
        layers.into_iter().next().unwrap()
    }

    /// Fails the test unless the cache holds only what finished extractions leave: format
    /// 1 entries and their locks, or format 2's `images/` and `layers/` (entries, their
    /// use and extraction locks) and `.runs/` (writable layers kept for the next run); no
    /// temporary directory anywhere.
    #[track_caller]
    pub fn assert_cache_clean(&self) {
        let cache = self.cache();
        let is_lock_of_entry = |name: &str| {
            [".lock", ".extract.lock"]
                .iter()
                .any(|end| name.strip_suffix(end).is_some_and(is_cache_entry))
        };
        for (name, _) in cache_entries(&cache) {
            assert!(
                is_cache_entry(&name)
                    || is_lock_of_entry(&name)
                    || ["images", "layers", ".runs"].contains(&name.as_str()),
                "unexpected entry {name:?} in the cache {} (a leftover temp dir?): {:?}",
                cache.display(),
                cache_entries(&cache)
            );
        }
        for sub in ["images", "layers"] {
            for (name, _) in cache_entries(&cache.join(sub)) {
                assert!(
                    is_cache_entry(&name) || is_lock_of_entry(&name),
                    "unexpected entry {sub}/{name:?} in the cache {} (a leftover temp dir?)",
                    cache.display()
                );
            }
        }
        assert!(
            temp_entries(&cache).is_empty(),
            "temp dirs left: {:?}",
            temp_entries(&cache)
        );
    }

    /// The one extracted image entry (format 1 `<key>`, format 2 `images/<key>`); fails
    /// the test unless there is exactly one.
    pub fn only_digest_dir(&self) -> PathBuf {
        let dirs = self.cache_digest_dirs();
        assert_eq!(
            dirs.len(),
            1,
            "expected exactly one <sha256> dir in {}, found {:?} (all entries: {:?})",
            self.cache().display(),
            dirs,
            cache_entries(&self.cache())
        );
        dirs.into_iter().next().unwrap()
    }
}

impl Drop for Test {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!(
                "test {} failed; its files are kept in {}",
                self.name,
                self.dir.display()
            );
        } else {
            remove_tree(&self.dir);
        }
    }
}

/// (name, path) of every entry of a cache dir, sorted (an empty `.runs` left out); empty
/// when it does not exist.
pub fn cache_entries(cache: &Path) -> Vec<(String, PathBuf)> {
    let mut entries: Vec<(String, PathBuf)> = match fs::read_dir(cache) {
        Ok(rd) => rd
            .flatten()
            .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
            // The stub keeps `.runs` (where each run's writable layer lives) once made,
            // and in it a clean layer per image for the next run (`.spare-<key>`): with
            // nothing else, it holds nothing of any run. A layer left in it shows it here.
            .filter(|(name, path)| !(name == ".runs" && run_layers(path).is_empty()))
            .collect(),
        Err(_) => Vec::new(),
    };
    entries.sort();
    entries
}

/// The entries of a cache's `.runs` but its clean spare layers (`.spare-<key>` whose
/// `upper/` and `work/` are empty: what the stub keeps for the next run) and the work
/// directories being removed (`.trash-*`), sorted; a spare holding anything is listed.
pub fn run_layers(runs: &Path) -> Vec<(String, PathBuf)> {
    let mut layers: Vec<(String, PathBuf)> = match fs::read_dir(runs) {
        Ok(rd) => rd
            .flatten()
            .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
            .filter(|(name, path)| {
                let clean_spare = name.starts_with(".spare-")
                    && is_empty_dir(&path.join("upper"))
                    && is_empty_dir(&path.join("work"));
                // The overlay's work directory of a clean run, which a child of the stub
                // removes a moment after it exits (posix.rs checks that it does).
                !(clean_spare || name.starts_with(".trash-"))
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    layers.sort();
    layers
}

/// A directory with nothing in it.
pub fn is_empty_dir(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.is_dir())
        && fs::read_dir(path).is_ok_and(|mut rd| rd.next().is_none())
}

/// The names of the extractions in progress (or left by a crashed run) in a cache dir:
/// `.tmp-<digest>[-<mapping>].<pid>`.
pub fn temp_entries(cache: &Path) -> Vec<String> {
    let mut found: Vec<String> = cache_entries(cache)
        .into_iter()
        .map(|(name, _)| name)
        .filter(|name| name.starts_with(".tmp-"))
        .collect();
    // Format 2: the layer store and the image entries have their own.
    for sub in ["images", "layers"] {
        found.extend(
            cache_entries(&cache.join(sub))
                .into_iter()
                .filter(|(name, _)| name.starts_with(".tmp-"))
                .map(|(name, _)| format!("{sub}/{name}")),
        );
    }
    found
}

/// The extracted images of a cache, either format: a format 1 entry (`<key>`) or a
/// format 2 image entry (`images/<key>`), sorted.
pub fn extracted_images(cache: &Path) -> Vec<String> {
    let mut found: Vec<String> = cache_entries(cache)
        .into_iter()
        .map(|(name, _)| name)
        .filter(|name| is_cache_entry(name))
        .collect();
    found.extend(
        cache_entries(&cache.join("images"))
            .into_iter()
            .map(|(name, _)| name)
            .filter(|name| is_cache_entry(name))
            .map(|name| format!("images/{name}")),
    );
    found.sort();
    found
}

/// A cache entry's name: the payload digest, and a suffix naming the id mapping when
/// it is not the single one (`-subid-START-COUNT-START-COUNT`).
pub fn is_cache_entry(name: &str) -> bool {
    name.get(..64).is_some_and(is_digest)
        && (name.len() == 64 || name[64..].starts_with("-subid-"))
        && !name.ends_with(".lock")
}

/// 64 lowercase hex characters: a sha256 written out.
pub fn is_digest(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Finds `sha256:<64 hex>` in a text.
pub fn find_sha256(text: &str) -> Option<&str> {
    text.match_indices("sha256:").find_map(|(i, _)| {
        let hex = text.get(i + 7..i + 7 + 64)?;
        is_digest(hex).then_some(hex)
    })
}

/// A command to run with a timeout, as the test user by default.
pub struct Cmd {
    env: &'static Env,
    program: PathBuf,
    args: Vec<OsString>,
    vars: BTreeMap<String, Option<OsString>>,
    stdin: Vec<u8>,
    who: Who,
    timeout: Duration,
}

/// Whom a [`Cmd`] runs as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    /// The test user (whoever runs the tests when there is none).
    TestUser,
    /// Whoever runs the tests (root in CI).
    Current,
    /// The second local user.
    Neighbour,
}

impl Cmd {
    fn new(env: &'static Env, program: &Path) -> Cmd {
        let mut vars = BTreeMap::new();
        vars.insert("PATH".to_string(), Some(OsString::from(HOST_PATH)));
        let user = match &env.test_user {
            Some(user) => user.name.clone(),
            None => std::env::var("USER").unwrap_or_else(|_| "user".into()),
        };
        vars.insert("USER".to_string(), Some(OsString::from(&user)));
        vars.insert("LOGNAME".to_string(), Some(OsString::from(&user)));
        Cmd {
            env,
            program: program.to_path_buf(),
            args: Vec::new(),
            vars,
            stdin: Vec::new(),
            who: Who::TestUser,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> Cmd {
        self.args.push(arg.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets a variable in the (otherwise clean) environment.
    pub fn env(mut self, key: &str, value: impl Into<OsString>) -> Cmd {
        self.vars.insert(key.to_string(), Some(value.into()));
        self
    }

    /// Leaves a variable of the default environment out (e.g. BINCTR_CACHE).
    pub fn env_remove(mut self, key: &str) -> Cmd {
        self.vars.insert(key.to_string(), None);
        self
    }

    /// The bytes written to stdin, which is then closed.
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Cmd {
        self.stdin = bytes.into();
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Cmd {
        self.timeout = timeout;
        self
    }

    /// Runs as whoever runs the tests (root in CI), not as the test user.
    pub fn as_current_user(mut self) -> Cmd {
        self.who = Who::Current;
        self
    }

    fn run_as(mut self, who: Who) -> Cmd {
        self.who = who;
        self
    }

    /// The account the command runs as, if it switches to one.
    fn user(&self) -> Option<&User> {
        match self.who {
            Who::TestUser => self.env.test_user.as_ref(),
            Who::Current => None,
            Who::Neighbour => Some(self.env.neighbour()),
        }
    }

    /// The environment the command gets.
    pub fn vars(&self) -> HashMap<String, OsString> {
        self.vars
            .iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| (k.clone(), v.clone())))
            .collect()
    }

    fn describe(&self) -> String {
        let mut s = self.program.display().to_string();
        for arg in &self.args {
            s.push(' ');
            s.push_str(&format!("{:?}", arg.to_string_lossy()));
        }
        if let Some(user) = self.user() {
            s.push_str(&format!(" (as {})", user.name));
        }
        s
    }

    fn command(&self) -> Command {
        let mut command = command_as(self.user(), &self.program);
        command.args(&self.args).env_clear();
        for (key, value) in &self.vars {
            if let Some(value) = value {
                command.env(key, value);
            }
        }
        // Its own process group, so a timeout can kill whatever it started on the host.
        command
            .process_group(0)
            .current_dir(&self.env.base)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }

    /// Starts the command; stdin gets the bytes set by `stdin()` and is then closed.
    pub fn spawn(self) -> Running {
        let what = self.describe();
        let mut child = self
            .command()
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        let mut stdin = child.stdin.take().expect("piped stdin");
        let input = self.stdin;
        thread::spawn(move || {
            // The command may exit without reading it all: a broken pipe is fine.
            let _ = stdin.write_all(&input);
        });
        let (tx, rx) = mpsc::channel();
        let mut stdout = child.stdout.take().expect("piped stdout");
        let mut stderr = child.stderr.take().expect("piped stderr");
        let tx2 = tx.clone();
        thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = stdout.read_to_end(&mut buf);
            let _ = tx.send((1, buf));
        });
        thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = stderr.read_to_end(&mut buf);
            let _ = tx2.send((2, buf));
        });
        Running {
            pid: child.id(),
            child: Some(child),
            what,
            output: rx,
            deadline: Instant::now() + self.timeout,
        }
    }

    /// Runs to the end; fails the test when it outlives its timeout.
    pub fn run(self) -> Output {
        self.spawn().wait()
    }
}

/// PROGRAM as `user` (through setpriv, which execs it in place), or as whoever runs the
/// tests when there is none.
fn command_as(user: Option<&User>, program: &Path) -> Command {
    match user {
        Some(user) => {
            let mut c = Command::new("/usr/bin/setpriv");
            c.arg(format!("--reuid={}", user.uid))
                .arg(format!("--regid={}", user.gid))
                .arg("--init-groups")
                .arg("--")
                .arg(program);
            c
        }
        None => Command::new(program),
    }
}

/// A started command: signal it, look at its processes, wait for it.
pub struct Running {
    pid: u32,
    child: Option<Child>,
    what: String,
    output: mpsc::Receiver<(u8, Vec<u8>)>,
    deadline: Instant,
}

impl Running {
    /// The host pid of the started program (setpriv execs it in place).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill has no memory-safety preconditions; the pid is our own unreaped
        // child, so it cannot have been reused.
        let rc = unsafe { libc::kill(self.pid as libc::pid_t, signal) };
        assert_eq!(
            rc,
            0,
            "kill({}, {signal}): {}",
            self.pid,
            std::io::Error::last_os_error()
        );
    }

    /// Waits until a process named `comm` runs among the descendants of the started
    /// program (for a container: the command inside it). Fails the test after `timeout`.
    pub fn wait_for_descendant(&mut self, comm: &str, timeout: Duration) -> u32 {
        let until = Instant::now() + timeout;
        loop {
            if let Some(pid) = find_descendant(self.pid, comm) {
                return pid;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                let output = self.finish(status);
                panic!(
                    "{} exited before a '{comm}' process appeared:\n{output:?}",
                    self.what
                );
            }
            if Instant::now() > until {
                let what = self.what.clone();
                let output = self.kill_and_collect();
                panic!("no '{comm}' process under {what} after {timeout:?}:\n{output:?}");
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the end; past the deadline kills the process group and fails the test.
    pub fn wait(mut self) -> Output {
        let mut pause = Duration::from_millis(1);
        loop {
            let child = self.child.as_mut().expect("child not yet reaped");
            match child.try_wait() {
                Ok(Some(status)) => return self.finish(status),
                Ok(None) => {}
                Err(e) => panic!("waiting for {}: {e}", self.what),
            }
            if Instant::now() > self.deadline {
                let what = self.what.clone();
                let output = self.kill_and_collect();
                panic!("{what} did not finish in time; killed it:\n{output:?}");
            }
            thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    fn kill_and_collect(&mut self) -> Output {
        // SAFETY: kill has no memory-safety preconditions; the group is the one we made
        // for our own unreaped child.
        unsafe { libc::kill(-(self.pid as libc::pid_t), libc::SIGKILL) };
        let status = self
            .child
            .as_mut()
            .expect("child")
            .wait()
            .expect("wait after kill");
        self.finish(status)
    }

    fn finish(&mut self, status: ExitStatus) -> Output {
        self.child = None;
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        // Pipes close when every process holding them is gone; a process that escaped the
        // container would keep them open, so do not wait forever.
        let until = Instant::now() + Duration::from_secs(10);
        let mut truncated = false;
        for _ in 0..2 {
            match self
                .output
                .recv_timeout(until.saturating_duration_since(Instant::now()))
            {
                Ok((1, buf)) => stdout = buf,
                Ok((_, buf)) => stderr = buf,
                Err(_) => truncated = true,
            }
        }
        let mut what = self.what.clone();
        if truncated {
            what.push_str(" [stdout/stderr still open 10 s after exit: something outlived it]");
        }
        Output {
            what,
            code: status.code(),
            signal: status.signal(),
            stdout,
            stderr,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.kill_and_collect();
        }
    }
}

/// How a command ended and what it wrote.
pub struct Output {
    pub what: String,
    /// The exit code, when it exited.
    pub code: Option<i32>,
    /// The signal that killed it, when one did.
    pub signal: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Output {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// Fails the test (showing everything) unless it exited with `code`.
    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Output {
        assert!(
            self.code == Some(code),
            "expected exit code {code}:\n{self:?}"
        );
        self
    }

    #[track_caller]
    pub fn assert_success(&self) -> &Output {
        self.assert_code(0)
    }

    /// Fails the test unless stderr is exactly one line (a final newline aside) that
    /// starts with `prefix` (`"binctr: "`, `"binctr-pack:"`).
    #[track_caller]
    pub fn assert_one_error_line(&self, prefix: &str) -> &Output {
        let err = self.stderr_text();
        assert!(
            err.starts_with(prefix),
            "the error starts with '{prefix}':\n{self:?}"
        );
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "exactly one error line:\n{self:?}"
        );
        self
    }

    #[track_caller]
    pub fn assert_stdout(&self, expected: &str) -> &Output {
        assert!(
            self.stdout == expected.as_bytes(),
            "expected stdout {expected:?}:\n{self:?}"
        );
        self
    }
}

impl fmt::Debug for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn show(bytes: &[u8]) -> String {
            const MAX: usize = 4000;
            let text = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX)]).into_owned();
            if bytes.len() > MAX {
                format!("{text}... [{} bytes in all]", bytes.len())
            } else {
                text
            }
        }
        writeln!(f, "  command: {}", self.what)?;
        match (self.code, self.signal) {
            (Some(code), _) => writeln!(f, "  exit code: {code}")?,
            (None, Some(sig)) => writeln!(f, "  killed by signal {sig}")?,
            _ => writeln!(f, "  ended somehow")?,
        }
        writeln!(f, "  stdout: {:?}", show(&self.stdout))?;
        write!(f, "  stderr: {:?}", show(&self.stderr))
    }
}

/// Deterministic pseudo-random bytes (xorshift64*), for binary round trips.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The host's value of a /proc file, for comparisons with the container's.
pub fn host_file(path: &str) -> Vec<u8> {
    fs::read(path).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// Inode number and mtime of a path: enough to tell whether it was replaced or touched.
pub fn identity(path: &Path) -> (u64, i64, i64) {
    let meta = fs::metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
    (meta.ino(), meta.mtime(), meta.mtime_nsec())
}

/// Polls `cond` every 20 ms until it holds (true) or `timeout` passes (false).
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Exit code `code` and one error line `binctr: ...` that mentions `mentions`.
#[track_caller]
pub fn assert_fails_with_one_line(out: &Output, code: i32, mentions: &str) {
    out.assert_code(code).assert_one_error_line("binctr: ");
    assert!(
        out.stderr_text().contains(mentions),
        "the error names {mentions}:\n{out:?}"
    );
}

/// A path as a `&str` argument for a command line; fails the test on a non-UTF-8 path.
pub fn s(path: &Path) -> String {
    path.to_str()
        .unwrap_or_else(|| panic!("non-UTF-8 path {}", path.display()))
        .to_string()
}
