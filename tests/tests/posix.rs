//! Issue 11, end to end: the writable layer on disk, files that behave as on the host.
//!
//! - `dd` of 2 GiB to `/` lands on disk in the run's layer (`$CACHE/.runs/<key>.<random>`),
//!   not in the host's shared memory, and nothing is left after the run; the memory layer
//!   (`--writable-tmpfs`) is memory indeed, and its size limit is ENOSPC inside.
//! - A run killed with SIGKILL leaves its layer; the next run of the image removes it,
//!   never the layer of a run still alive (both mappings; subid-owned files included).
//! - `os.scandir`'s d_ino equals `os.stat`'s st_ino (the overlay has one st_dev story)
//!   for the image's files and for new ones, in every kind of writable layer.
//! - CPython's own regression suite (Debian's libpython3.11-testsuite) for the modules
//!   that touch the OS, inside the packed Debian image (build/python.tar, made by
//!   scripts/make-python-image.sh): pass/fail per module in the log, and no failure but
//!   the allow-listed ones, each a limit of every user namespace.
//! - A file capability (ping's cap_net_raw) survives packing and extraction under
//!   subordinate ids; a single mapping cannot set it (documented below).
//!
//! The tests that measure the host's Shmem, and the CPython suite (timing-sensitive), take
//! one lock so that they never run at the same time.

use std::collections::BTreeSet;
use std::fs;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use binctr_tests::{
    assert_no_process_left, cache_entries, extracted_images, is_cache_entry, is_live,
    live_descendants, run_layers, s, wait_until, Cmd, Env, Output, Running, Test, QUICK,
};

/// How long one ordinary container run of these tests may take (a first run extracts).
const RUN_TIMEOUT: Duration = Duration::from_secs(180);

/// The size `dd` writes to the container's root.
const BIG: u64 = 2 << 30;

/// How much the host's Shmem may grow while 2 GiB are written to a disk layer: other
/// processes of the machine come and go; a layer in memory would add 2 GiB.
const SHMEM_SLACK: u64 = 64 << 20;

// ---- helpers ----------------------------------------------------------------------------

/// Held by the tests that measure the host's Shmem and by the CPython suite.
fn heavy_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Writes a line to the test log even when the test passes (libtest captures only the
/// print macros).
fn log(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// A directory under the test's scratch space, owned by the test user.
fn user_dir(t: &Test, name: &str) -> PathBuf {
    let dir = t.dir.join(name);
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    t.env.give_to_user(&dir);
    dir
}

/// The packed busybox with ARGS, as the test user.
fn bb(t: &Test, args: &[&str]) -> Cmd {
    t.busybox_cmd(args.iter().copied()).timeout(RUN_TIMEOUT)
}

/// build/python.tar packed once per test binary, with a cache of its own shared by the
/// tests of this file that need no fresh cache (a first run of it extracts 8000 files).
struct Python {
    packed: PathBuf,
    cache: PathBuf,
}

fn python() -> &'static Python {
    static PYTHON: OnceLock<Python> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let env = Env::get();
        let fixture = env.fixtures.join("python.tar");
        if !fixture.is_file() {
            panic!(
                "{} is missing: make it with `bash scripts/make-python-image.sh build` (as root; \
                 scripts/test.sh does it)",
                fixture.display()
            );
        }
        let dir = env.base.join("shared-python");
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        env.give_to_user(&dir);
        let packed = dir.join("python");
        // Format 1: these tests look at its cache entry (tests/layers_run.rs: format 2).
        let out = Command::new(env.packer())
            .arg(&fixture)
            .arg("--flatten")
            .arg("-o")
            .arg(&packed)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", env.packer().display()));
        assert!(
            out.status.success() && packed.is_file(),
            "packing {} failed: {}",
            fixture.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        env.give_to_user(&packed);
        fs::set_permissions(&packed, fs::Permissions::from_mode(0o755)).unwrap();
        Python {
            packed,
            cache: dir.join("cache"),
        }
    })
}

/// The packed python image with ARGS, as the test user, with the shared python cache.
fn py(t: &Test, args: &[&str]) -> Cmd {
    let p = python();
    t.cmd(&p.packed)
        .env("BINCTR_CACHE", &p.cache)
        .args(args.iter().copied())
        .timeout(RUN_TIMEOUT)
}

/// The host's Shmem (/proc/meminfo), in bytes.
fn host_shmem() -> u64 {
    let meminfo = fs::read_to_string("/proc/meminfo").expect("read /proc/meminfo");
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("Shmem:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .unwrap_or_else(|| panic!("no Shmem line in /proc/meminfo:\n{meminfo}"))
}

/// Free bytes on the filesystem of `path`, for an unprivileged user (df's Avail).
fn free_bytes(path: &Path) -> u64 {
    let out = Command::new("df")
        .args(["-B1", "--output=avail"])
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("cannot run df: {e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "df {} said: {text}{}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

/// The per-run layers in a cache (`.runs/<key>.<random>`), sorted: not the clean spare
/// the stub keeps for the next run (`.runs/.spare-<key>`, empty), but a spare holding
/// anything.
fn run_dirs(cache: &Path) -> Vec<PathBuf> {
    let runs = cache.join(".runs");
    if let Err(e) = fs::symlink_metadata(&runs) {
        assert_eq!(e.kind(), ErrorKind::NotFound, "{}: {e}", runs.display());
    }
    run_layers(&runs)
        .into_iter()
        .map(|(_, path)| path)
        .collect()
}

/// Fails the test unless the cache holds its image's entry (and the entry's lock) and
/// nothing else: no run layer (`.runs` may stay, empty), no temporary directory.
#[track_caller]
fn assert_only_the_entry_left(t: &Test, context: &str) {
    let layers = run_dirs(&t.cache());
    assert!(
        layers.is_empty(),
        "{context}: run layers left in {}/.runs: {layers:?}",
        t.cache().display()
    );
    let entries = extracted_images(&t.cache());
    assert_eq!(
        entries.len(),
        1,
        "{context}: one image entry expected in {}: {:?}",
        t.cache().display(),
        cache_entries(&t.cache())
    );
    t.assert_cache_clean();
}

/// The only per-run layer of the test's cache; checks it is private and named after the
/// image's entry.
#[track_caller]
fn the_run_dir(t: &Test) -> PathBuf {
    let dirs = run_dirs(&t.cache());
    assert_eq!(
        dirs.len(),
        1,
        "one run layer expected in {}/.runs: {dirs:?}",
        t.cache().display()
    );
    let dir = dirs.into_iter().next().unwrap();
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    let key = name.rsplit_once('.').map(|(k, _)| k).unwrap_or("");
    assert!(
        is_cache_entry(key)
            && (t.cache().join(key).is_dir() || t.cache().join("images").join(key).is_dir()),
        "the run layer {name} is not named <entry>.<random> after an entry of the cache: {:?}",
        cache_entries(&t.cache())
    );
    let meta = fs::symlink_metadata(&dir).unwrap();
    assert!(
        meta.is_dir() && meta.mode() & 0o777 == 0o700 && meta.uid() == t.env.run_uid(),
        "the run layer {} is not a private directory of the user (mode {:o}, uid {})",
        dir.display(),
        meta.mode() & 0o7777,
        meta.uid()
    );
    dir
}

/// The test user's first subordinate uid (/etc/subuid): container uid N >= 1 is host
/// uid start + N - 1 under the default mapping.
fn subuid_start(t: &Test) -> u32 {
    let name = match &t.env.test_user {
        Some(user) => user.name.clone(),
        None => std::env::var("USER").expect("USER"),
    };
    let uid = t.env.run_uid().to_string();
    let text = fs::read_to_string("/etc/subuid").expect("read /etc/subuid");
    text.lines()
        .find_map(|line| {
            let mut parts = line.trim().split(':');
            let who = parts.next()?;
            let start = parts.next()?.parse().ok()?;
            (who == name || who == uid).then_some(start)
        })
        .unwrap_or_else(|| {
            panic!(
                "/etc/subuid grants {name} no range: the default mapping of these tests is \
                 subordinate ids (scripts/ensure-test-user.sh adds a range)"
            )
        })
}

/// Fails the test unless the cache holds an entry extracted with subordinate ids (the
/// mapping `auto` must have chosen).
#[track_caller]
fn assert_subid_entry(cache: &Path) {
    let names = extracted_images(cache);
    assert!(
        names.iter().any(|n| n.contains("-subid-")),
        "the default mapping should be subordinate ids (an entry <digest>-subid-... in {}), \
         found {names:?}: does /etc/subuid grant the test user a range, and are newuidmap and \
         newgidmap installed?",
        cache.display()
    );
}

/// Waits until `path` exists, failing the test (with the run's output) when the run ends
/// first or `timeout` passes. `tick` runs on every poll.
fn wait_for_file(
    running: Running,
    path: &Path,
    timeout: Duration,
    mut tick: impl FnMut(),
) -> Running {
    let until = Instant::now() + timeout;
    loop {
        tick();
        if path.exists() {
            return running;
        }
        // The started program is our unreaped child: a zombie once it has exited.
        let ended = !is_live(running.pid());
        if ended || Instant::now() > until {
            let out = running.wait_killed();
            let why = if ended {
                "the run ended first".to_string()
            } else {
                format!("not within {timeout:?}")
            };
            panic!("{} did not appear ({why}):\n{out:?}", path.display());
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// What `Running` lacks here: end it now (the whole process group) and show what it wrote.
trait KillAndShow {
    fn wait_killed(self) -> Output;
}

impl KillAndShow for Running {
    fn wait_killed(self) -> Output {
        // SAFETY: kill has no memory-safety preconditions; the group is the one the
        // harness made for this unreaped child.
        unsafe { libc::kill(-(self.pid() as libc::pid_t), libc::SIGKILL) };
        self.wait()
    }
}

// ---- a. the writable layer is on disk -----------------------------------------------------

#[test]
fn two_gib_written_to_root_go_to_disk_not_to_shared_memory_and_leave_nothing() {
    let t = Test::new("dd_disk");
    let free = free_bytes(&t.dir);
    assert!(
        free > 3 << 30,
        "this test writes 2 GiB into the container's root, on the filesystem of {} \
         (the cache's): it needs more than 3 GiB free there, and df says {} MiB",
        t.dir.display(),
        free >> 20
    );
    let _heavy = heavy_lock();
    // Extract first, so the measurement covers the write only.
    bb(&t, &["true"]).run().assert_success();
    assert_only_the_entry_left(&t, "after a first run");
    let vol = user_dir(&t, "vol");
    let script = format!(
        "dd if=/dev/zero of=/big bs=1M count={} 2>/v/dd.log && ls -ln /big > /v/written && \
         while [ ! -e /v/go ]; do sleep 0.05; done",
        BIG >> 20
    );
    let before = host_shmem();
    let mut peak = before;
    let running = bb(&t, &["-v", &format!("{}:/v", s(&vol)), "sh", "-c", &script])
        .timeout(Duration::from_secs(600))
        .spawn();
    let running = wait_for_file(
        running,
        &vol.join("written"),
        Duration::from_secs(540),
        || {
            peak = peak.max(host_shmem());
        },
    );
    peak = peak.max(host_shmem());
    // While the container still runs: the file is in the run's layer, on disk.
    let layer = the_run_dir(&t);
    let big = layer.join("upper/big");
    let meta = fs::symlink_metadata(&big).unwrap_or_else(|e| {
        panic!(
            "{} (the container's /big in its layer): {e}; the layer holds {:?}",
            big.display(),
            fs::read_dir(layer.join("upper"))
                .map(|rd| rd.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
        )
    });
    assert_eq!(meta.len(), BIG, "size of {}", big.display());
    assert!(
        meta.blocks() * 512 >= BIG,
        "{} has {} bytes allocated on disk, less than its {BIG} bytes of data",
        big.display(),
        meta.blocks() * 512
    );
    fs::write(vol.join("go"), "").unwrap();
    let out = running.wait();
    out.assert_success();
    let grew = peak.saturating_sub(before);
    log(&format!(
        "dd of 2 GiB to / (disk layer): host Shmem {} MiB before, {} MiB at most during the write (+{} MiB)",
        before >> 20,
        peak >> 20,
        grew >> 20
    ));
    assert!(
        grew <= SHMEM_SLACK,
        "the host's Shmem grew by {} MiB while the container wrote 2 GiB to / (allowed: {} MiB): \
         the writable layer is in memory\n{out:?}",
        grew >> 20,
        SHMEM_SLACK >> 20
    );
    assert_only_the_entry_left(&t, "after the run ended");
}

/// What the container wrote as another of its ids (a directory of a subordinate id, 0755,
/// holding files: the host user cannot empty it) is removed at exit too, from inside the
/// container's user namespace; what its root wrote (ours on the host) from here.
#[test]
fn files_of_other_container_ids_are_removed_with_the_layer() {
    let t = Test::new("layer_other_ids");
    subuid_start(&t);
    let script = "mkdir -p /srv/a/b && echo x > /srv/a/b/f && chown -R 1000:1000 /srv/a && \
                  chmod 0755 /srv/a /srv/a/b && echo made";
    let out = bb(&t, &["sh", "-c", script]).run();
    out.assert_success();
    assert_eq!(out.stdout_text().trim(), "made", "{out:?}");
    assert_subid_entry(&t.cache());
    assert_only_the_entry_left(&t, "after a run that wrote files of uid 1000");
}

#[test]
fn writable_tmpfs_is_memory_and_its_size_is_enospc_inside() {
    let t = Test::new("writable_tmpfs");
    let _heavy = heavy_lock();
    bb(&t, &["true"]).run().assert_success();
    // The probe works: 128 MiB in a memory layer show in the host's Shmem.
    let vol = user_dir(&t, "vol");
    let script = "dd if=/dev/zero of=/mem bs=1M count=128 2>/v/dd.log && touch /v/written && \
                  while [ ! -e /v/go ]; do sleep 0.05; done";
    let before = host_shmem();
    let running = bb(
        &t,
        &[
            "--writable-tmpfs",
            "--tmpfs-size",
            "256m",
            "-v",
            &format!("{}:/v", s(&vol)),
            "sh",
            "-c",
            script,
        ],
    )
    .spawn();
    let running = wait_for_file(
        running,
        &vol.join("written"),
        Duration::from_secs(120),
        || {},
    );
    let during = host_shmem();
    assert!(
        run_dirs(&t.cache()).is_empty(),
        "--writable-tmpfs made a layer on disk: {:?}",
        run_dirs(&t.cache())
    );
    fs::write(vol.join("go"), "").unwrap();
    running.wait().assert_success();
    let grew = during.saturating_sub(before);
    log(&format!(
        "dd of 128 MiB to / (--writable-tmpfs): host Shmem +{} MiB",
        grew >> 20
    ));
    assert!(
        grew >= 100 << 20,
        "128 MiB written to a --writable-tmpfs root grew the host's Shmem by {} MiB only: \
         either the layer is not in memory, or Shmem cannot tell (and the disk test proves \
         nothing)",
        grew >> 20
    );
    // A full memory layer is ENOSPC for the writer; the container lives on.
    let out = bb(
        &t,
        &[
            "--writable-tmpfs",
            "--tmpfs-size",
            "16m",
            "sh",
            "-c",
            "dd if=/dev/zero of=/big bs=1M count=32; echo dd=$?; \
             rm /big && echo small > /after-enospc && echo alive",
        ],
    )
    .run();
    let stdout = out.stdout_text();
    assert!(
        out.code == Some(0) && stdout.contains("dd=1\n") && stdout.ends_with("alive\n"),
        "dd of 32 MiB into a 16 MiB --writable-tmpfs: dd must fail and the container go on:\n{out:?}"
    );
    assert!(
        out.stderr_text().contains("No space left on device"),
        "dd's error is ENOSPC:\n{out:?}"
    );
    assert_only_the_entry_left(&t, "after the --writable-tmpfs runs");
}

/// The spare layers (`.runs/.spare-<key>`) of a cache, whatever they hold.
fn spares(cache: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(cache.join(".runs"))
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(".spare-"))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

/// Runs `script` in the container, as `bb -D`; its stdout and whether the run took the
/// spare layer.
fn run_seeing_spare(t: &Test, flags: &[&str], script: &str) -> (String, bool) {
    let mut args = vec!["-D"];
    args.extend_from_slice(flags);
    args.extend(["sh", "-c", script]);
    let out = bb(t, &args).run();
    out.assert_success();
    (
        out.stdout_text(),
        out.stderr_text().contains("layer: took the spare"),
    )
}

/// A run that leaves its layer as it found it hands it to the next run (no rmdir and
/// mkdir at every start); a run that changed anything in it (a file, a whiteout, the
/// root's mode) has its layer removed, and the next run starts from the image: nothing
/// of one run ever shows in the next. Both mappings.
#[test]
fn a_clean_layer_is_the_next_runs_and_nothing_of_a_run_leaks_into_the_next() {
    let t = Test::new("spare_layer");
    for flags in [&[][..], &["--userns", "single"][..]] {
        let what = format!("flags {flags:?}");
        let (_, took) = run_seeing_spare(&t, flags, "true");
        assert!(!took, "{what}: the first run found a spare");
        let spare = spares(&t.cache());
        assert_eq!(
            spare.len(),
            1 + usize::from(!flags.is_empty()),
            "{what}: {spare:?}"
        );
        // Made, then removed again: the upper is empty, the layer clean.
        let (_, took) = run_seeing_spare(&t, flags, "touch /made && rm /made");
        assert!(took, "{what}: the second run made a layer of its own");
        let (out, took) = run_seeing_spare(&t, flags, "ls /made 2>&1; echo x > /kept");
        assert!(took && out.contains("No such file"), "{what}: {out}");
        // /kept made the layer dirty: removed, no spare until a clean run.
        let (out, took) = run_seeing_spare(&t, flags, "cat /kept 2>&1; rm /bin/true");
        assert!(!took && out.contains("No such file"), "{what}: {out}");
        // A whiteout (rm of an image file) is not clean either.
        let (out, _) = run_seeing_spare(&t, flags, "ls /bin/true; chmod 700 /");
        assert!(
            out.contains("/bin/true"),
            "{what}: a whiteout leaked: {out}"
        );
        let (out, took) = run_seeing_spare(&t, flags, "stat -c %a /");
        assert!(!took, "{what}: the layer of a run that changed / was kept");
        assert_eq!(
            out.trim(),
            "755",
            "{what}: the root's mode leaked from a run"
        );
        let (_, took) = run_seeing_spare(&t, flags, "true");
        assert!(took, "{what}: the clean run's layer was not kept");
        assert!(
            run_dirs(&t.cache()).is_empty(),
            "{what}: {:?}",
            run_dirs(&t.cache())
        );
    }
    // The overlay's work directories a clean run set aside are removed by a child that
    // outlives the stub: gone a moment later, never piling up.
    let trash = || -> Vec<String> {
        fs::read_dir(t.cache().join(".runs"))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with(".trash-"))
                    .collect()
            })
            .unwrap_or_default()
    };
    for _ in 0..5 {
        run_seeing_spare(&t, &[], "true");
    }
    assert!(
        wait_until(QUICK, || trash().is_empty()),
        "work directories set aside by clean runs are still there: {:?}",
        trash()
    );
    // --cache-rm all removes the spares too.
    bb(&t, &["--cache-rm", "all"]).run().assert_success();
    assert!(
        !t.cache().join(".runs").exists(),
        "--cache-rm all left .runs"
    );
}

// ---- b. a killed run's layer is removed by the next run ------------------------------------

/// Runs `script` (which ends in `exec sleep <n>`), kills the stub with SIGKILL, and checks
/// that the layer survives the kill, that a run starting while the first is alive leaves
/// its layer alone, and that the next run after the kill removes it.
fn killed_run_left_behind_then_removed(
    t: &Test,
    flags: &[&str],
    script: &str,
    sleep: &str,
    check_layer: impl Fn(&Path),
) {
    let mut args: Vec<&str> = flags.to_vec();
    args.extend(["sh", "-c", script]);
    let mut running = bb(t, &args).spawn();
    running.wait_for_descendant("sleep", Duration::from_secs(120));
    let layer = the_run_dir(t);
    check_layer(&layer);

    // A second run of the image while the first is alive leaves the live layer alone.
    let mut second: Vec<&str> = flags.to_vec();
    second.push("true");
    bb(t, &second).run().assert_success();
    assert!(
        layer.join("upper/x").exists(),
        "a run of the image removed the layer of a run still alive ({})",
        layer.display()
    );
    assert_eq!(
        run_dirs(&t.cache()),
        vec![layer.clone()],
        "the second run's own layer is gone"
    );

    let family: Vec<u32> = live_descendants(running.pid())
        .iter()
        .map(|p| p.pid)
        .collect();
    running.signal(libc::SIGKILL);
    let out = running.wait();
    assert_eq!(out.signal, Some(libc::SIGKILL), "{out:?}");
    assert!(
        wait_until(QUICK, || family.iter().all(|&pid| !is_live(pid))),
        "the container's processes {family:?} outlived the stub"
    );
    assert_no_process_left(t, &format!("sleep {sleep}"), "after kill -9 of the stub");
    assert!(
        layer.join("upper/x").exists(),
        "the killed run's layer {} should still be there (the test means to check the next run removes it)",
        layer.display()
    );

    // The next run of the image removes it, and leaves nothing of its own.
    bb(t, &second).run().assert_success();
    assert!(
        !layer.exists(),
        "the next run did not remove the killed run's layer {} (left: {:?})",
        layer.display(),
        run_dirs(&t.cache())
    );
    assert_only_the_entry_left(t, "after the run that followed the kill");
}

#[test]
fn a_killed_runs_layer_is_removed_by_the_next_run_subordinate_ids() {
    let t = Test::new("killed_layer_subid");
    bb(&t, &["true"]).run().assert_success();
    assert_subid_entry(&t.cache());
    let www = subuid_start(&t) + 32;
    // A directory of uid 33, 0700: only the namespace's root can remove it.
    let script = "mkdir /x && echo data > /x/f && chown -R 33:33 /x && chmod 700 /x && \
                  mkdir -p /usr/local/new && echo more > /usr/local/new/g && exec sleep 5115";
    killed_run_left_behind_then_removed(&t, &[], script, "5115", |layer| {
        let x = fs::symlink_metadata(layer.join("upper/x")).expect("upper/x in the layer");
        let f = fs::symlink_metadata(layer.join("upper/x/f")).expect("upper/x/f in the layer");
        assert_eq!(
            (x.uid(), x.gid(), x.mode() & 0o777, f.uid()),
            (www, www, 0o700, www),
            "the layer's /x belongs to container uid 33 = host uid {www} (mode 0700)"
        );
        assert!(layer.join("upper/usr/local/new/g").is_file());
    });
}

#[test]
fn a_killed_runs_layer_is_removed_by_the_next_run_single_mapping() {
    let t = Test::new("killed_layer_single");
    // Read-only directories: the removal must make them writable first.
    let script = "mkdir -p /x/y && echo data > /x/y/f && chmod 500 /x/y /x && \
                  mkdir -p /usr/local/new && echo more > /usr/local/new/g && exec sleep 5116";
    let uid = t.env.run_uid();
    killed_run_left_behind_then_removed(&t, &["--userns", "single"], script, "5116", |layer| {
        let x = fs::symlink_metadata(layer.join("upper/x")).expect("upper/x in the layer");
        assert_eq!((x.uid(), x.mode() & 0o777), (uid, 0o500));
        assert!(layer.join("upper/x/y/f").is_file());
    });
}

// ---- c. d_ino == st_ino ------------------------------------------------------------------------

/// Creates files and directories in `/`, in merged image directories and by copy-up, then
/// compares every entry's d_ino (os.scandir) with its st_ino (os.stat without following
/// links) in image and new directories; mount points (whose d_ino is the covered
/// directory's, on every Linux) are left out. Prints one JSON object.
const DINO_SCRIPT: &str = r#"
import json, os
mounts = set()
for line in open("/proc/self/mountinfo"):
    mounts.add(line.split()[4].encode().decode("unicode_escape"))
created = []
for d in ["/", "/etc", "/usr/lib/python3.11", "/var/lib/dpkg"]:
    p = os.path.join(d, "binctr-new-dir"); os.mkdir(p); created.append(p)
    p = os.path.join(d, "binctr-new-file"); open(p, "w").close(); created.append(p)
os.makedirs("/binctr-new-dir/sub/deeper"); open("/binctr-new-dir/sub/f", "w").close()
created += ["/binctr-new-dir/sub", "/binctr-new-dir/sub/f", "/binctr-new-dir/sub/deeper"]
with open("/etc/debian_version", "a") as f:  # copy-up of an image file
    f.write("")
os.chmod("/usr/bin", 0o755)  # copy-up of an image directory (metadata only)
os.link("/etc/binctr-new-file", "/etc/binctr-new-link"); created.append("/etc/binctr-new-link")
dirs = ["/", "/usr", "/usr/lib", "/usr/bin", "/etc", "/etc/apt", "/var/lib/dpkg",
        "/usr/lib/python3.11", "/root", "/tmp", "/binctr-new-dir", "/binctr-new-dir/sub",
        "/etc/binctr-new-dir"]
root_dev = os.stat("/").st_dev
checked, mismatched, other_dev, skipped, seen = 0, [], [], [], set()
for d in dirs:
    with os.scandir(d) as it:
        for e in it:
            if e.path in mounts:
                skipped.append(e.path)
                continue
            st = os.stat(e.path, follow_symlinks=False)
            checked += 1
            seen.add(e.path)
            if e.inode() != st.st_ino:
                mismatched.append([e.path, e.inode(), st.st_ino])
            if st.st_dev != root_dev:
                other_dev.append([e.path, st.st_dev, root_dev])
print(json.dumps({"checked": checked, "mismatched": mismatched, "other_dev": other_dev,
                  "skipped_mounts": skipped,
                  "not_seen": [p for p in created if p not in seen]}))
"#;

fn check_d_ino(t: &Test, label: &str, flags: &[&str]) {
    let mut args: Vec<&str> = flags.to_vec();
    args.extend(["python3", "-c", DINO_SCRIPT]);
    let out = py(t, &args).run();
    out.assert_success();
    let v: serde_json::Value = serde_json::from_str(out.stdout_text().trim())
        .unwrap_or_else(|e| panic!("{label}: the script's output is not JSON ({e}):\n{out:?}"));
    log(&format!("d_ino == st_ino, {label}: {v}"));
    let checked = v["checked"].as_u64().unwrap_or(0);
    assert!(
        checked > 500,
        "{label}: only {checked} entries checked:\n{out:?}"
    );
    assert_eq!(
        v["not_seen"],
        serde_json::json!([]),
        "{label}: new entries missing from readdir"
    );
    assert_eq!(
        v["mismatched"],
        serde_json::json!([]),
        "{label}: readdir's d_ino differs from stat's st_ino ([path, d_ino, st_ino])"
    );
    assert_eq!(
        v["other_dev"],
        serde_json::json!([]),
        "{label}: entries whose st_dev is not the root's ([path, st_dev, root st_dev])"
    );
}

#[test]
fn scandir_inode_equals_stat_inode_in_every_writable_layer() {
    let t = Test::new("d_ino");
    check_d_ino(&t, "disk layer, subordinate ids", &[]);
    assert_subid_entry(&python().cache);
    check_d_ino(&t, "disk layer, single mapping", &["--userns", "single"]);
    check_d_ino(&t, "--writable-tmpfs", &["--writable-tmpfs"]);
    check_d_ino(
        &t,
        "--writable-tmpfs, single mapping",
        &["--writable-tmpfs", "--userns", "single"],
    );
    let kept = s(&t.dir.join("kept-layer"));
    check_d_ino(
        &t,
        "--overlay DIR on the cache's filesystem",
        &["--overlay", &kept],
    );

    // A kept layer on another filesystem (a tmpfs) than the image: inode numbers stay
    // consistent only with xino.
    let shm = Path::new("/dev/shm");
    let here = fs::metadata(&t.dir).unwrap().dev();
    let there = fs::metadata(shm)
        .unwrap_or_else(|e| {
            panic!("/dev/shm (a tmpfs for a kept layer on another filesystem): {e}")
        })
        .dev();
    assert_ne!(
        here,
        there,
        "/dev/shm is on the same filesystem as {}",
        t.dir.display()
    );
    let elsewhere = shm.join(format!("binctr-test-{}-{}", std::process::id(), t.name));
    fs::create_dir(&elsewhere).unwrap_or_else(|e| panic!("mkdir {}: {e}", elsewhere.display()));
    t.env.give_to_user(&elsewhere);
    fs::set_permissions(&elsewhere, fs::Permissions::from_mode(0o700)).unwrap();
    struct Remove(PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            binctr_tests::remove_tree(&self.0);
        }
    }
    let _remove = Remove(elsewhere.clone());
    check_d_ino(
        &t,
        "--overlay DIR on a tmpfs",
        &["--overlay", &s(&elsewhere)],
    );
}

// ---- d. CPython's regression suite ----------------------------------------------------------

/// The modules issue 11 names.
const ISSUE_MODULES: &[&str] = &[
    "test_os",
    "test_posix",
    "test_subprocess",
    "test_signal",
    "test_pty",
    "test_socket",
    "test_tempfile",
    "test_shutil",
    "test_select",
    "test_fcntl",
    "test_mmap",
    "test_threading",
    "test_pathlib",
    "test_tarfile",
    "test_venv",
    "test_concurrent_futures",
    "test_logging",
];

/// More that touch the OS: files, descriptors, processes, signals, users, time.
const MORE_MODULES: &[&str] = &[
    "test_stat",
    "test_io",
    "test_glob",
    "test_fileio",
    "test_file",
    "test_file_eintr",
    "test_selectors",
    "test_epoll",
    "test_poll",
    "test_eintr",
    "test_resource",
    "test_pwd",
    "test_grp",
    "test_getpass",
    "test_posixpath",
    "test_genericpath",
    "test_fork1",
    "test_wait3",
    "test_wait4",
    "test_openpty",
    "test_threadsignals",
    "test_faulthandler",
    "test_time",
    "test_syslog",
    "test_popen",
    "test_filecmp",
    "test_fileinput",
    "test_threadedtempfile",
    "test_mailbox",
    "test_dbm_dumb",
    "test_py_compile",
    "test_unicode_file_functions",
];

/// Failures that any user namespace causes, by test id, with the reason.
const ALLOWED_FAILURES: &[(&str, &str)] = &[
    (
        "test.test_posix.PosixTester.test_chown",
        "as root it chowns a file to uid/gid 2**31, which no user namespace maps: EINVAL",
    ),
    (
        "test.test_posix.PosixTester.test_fchown",
        "as root it fchowns a file to uid/gid 2**31, which no user namespace maps: EINVAL",
    ),
    (
        "test.test_posix.PosixTester.test_lchown",
        "as root it lchowns a file to uid/gid 2**31, which no user namespace maps: EINVAL",
    ),
];

/// Runs regrtest once per module (`python3 -m test -j1 --junit-xml`), and prints one JSON
/// line per module on stdout: its exit code, duration, regrtest's verdict line, and the
/// failing test cases from the JUnit file. Regrtest's own output goes to stderr.
const SUITE_DRIVER: &str = r#"
import json, os, re, subprocess, sys, time
import xml.etree.ElementTree as ET
timeout = sys.argv[1]
for mod in sys.argv[2:]:
    junit = "/tmp/binctr-junit-%s.xml" % mod
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "test", "-j1", "--timeout", timeout, "--junit-xml", junit, mod],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    secs = time.monotonic() - start
    text = proc.stdout.decode("utf-8", "replace")
    sys.stderr.write(text)
    sys.stderr.flush()
    verdict = ""
    for line in text.splitlines():
        m = re.search(r"\] (?:\S+ -- )?" + re.escape(mod) + r" (.*)$", line)
        if m:
            verdict = m.group(1).strip()
    cases, skipped, bad, junit_error = 0, 0, [], None
    try:
        for case in ET.parse(junit).getroot().iter("testcase"):
            cases += 1
            for child in case:
                if child.tag in ("error", "failure"):
                    bad.append({"id": case.get("name"), "kind": child.tag,
                                "message": (child.get("message") or "").strip()[:400],
                                "trace": (child.text or "")[-3000:]})
                elif child.tag == "skipped":
                    skipped += 1
    except Exception as e:
        junit_error = repr(e)
    print(json.dumps({"module": mod, "rc": proc.returncode, "secs": round(secs, 1),
                      "verdict": verdict, "cases": cases, "skipped": skipped, "bad": bad,
                      "junit_error": junit_error, "tail": text[-3000:]}), flush=True)
"#;

/// The modules to run: BINCTR_CPYTHON_MODULES (space-separated) if set, else the issue's
/// list, the others above and BINCTR_CPYTHON_EXTRA_MODULES (scripts/cpython-suite.sh, the
/// slow tier, sets one or the other).
fn cpython_modules() -> Vec<String> {
    let var = |name| std::env::var(name).unwrap_or_default();
    let only = var("BINCTR_CPYTHON_MODULES");
    if !only.trim().is_empty() {
        return only.split_whitespace().map(String::from).collect();
    }
    let extra = var("BINCTR_CPYTHON_EXTRA_MODULES");
    ISSUE_MODULES
        .iter()
        .chain(MORE_MODULES)
        .map(|m| m.to_string())
        .chain(extra.split_whitespace().map(String::from))
        .collect()
}

#[test]
fn cpython_regression_suite_passes_under_subordinate_ids() {
    let t = Test::new("cpython");
    let _heavy = heavy_lock();
    let modules = cpython_modules();
    let started = Instant::now();
    let mut args = vec!["python3", "-c", SUITE_DRIVER, "900"];
    args.extend(modules.iter().map(String::as_str));
    let out = py(&t, &args).timeout(Duration::from_secs(3600)).run();
    let total = started.elapsed();
    assert_subid_entry(&python().cache);

    let mut seen = BTreeSet::new();
    let mut failed = Vec::new();
    let mut allowed_seen = BTreeSet::new();
    let mut table = String::from(
        "CPython regression suite in the packed Debian image (subordinate ids, root inside):\n",
    );
    for line in out.stdout_text().lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let module = v["module"].as_str().unwrap_or("?").to_string();
        seen.insert(module.clone());
        let rc = v["rc"].as_i64().unwrap_or(-1);
        let bad = v["bad"].as_array().cloned().unwrap_or_default();
        let mut unexplained = Vec::new();
        let mut explained = Vec::new();
        for case in &bad {
            let id = case["id"].as_str().unwrap_or("?");
            match ALLOWED_FAILURES.iter().find(|(allowed, _)| *allowed == id) {
                Some((_, why)) => {
                    allowed_seen.insert(id.to_string());
                    explained.push(format!("{id} ({why})"));
                }
                None => unexplained.push(case.clone()),
            }
        }
        let ok = match rc {
            0 => bad.is_empty(),
            // Failures, all of them explained (a crash or a timeout lists no case).
            2 => !bad.is_empty() && unexplained.is_empty(),
            _ => false,
        };
        let status = match (ok, explained.is_empty()) {
            (true, true) => "pass",
            (true, false) => "pass*",
            (false, _) => "FAIL",
        };
        table.push_str(&format!(
            "  {status:5} {module:30} {:>6.1} s  {} cases, {} skipped; regrtest: {}\n",
            v["secs"].as_f64().unwrap_or(0.0),
            v["cases"],
            v["skipped"],
            v["verdict"].as_str().unwrap_or("?")
        ));
        for e in &explained {
            table.push_str(&format!("          allowed: {e}\n"));
        }
        if !ok {
            let mut why = format!(
                "{module}: regrtest exit code {rc}, verdict {:?}",
                v["verdict"]
            );
            for case in &unexplained {
                why.push_str(&format!(
                    "\n    {} {}: {}\n{}",
                    case["kind"].as_str().unwrap_or("?"),
                    case["id"].as_str().unwrap_or("?"),
                    case["message"].as_str().unwrap_or(""),
                    case["trace"].as_str().unwrap_or("")
                ));
            }
            if unexplained.is_empty() {
                why.push_str(&format!(
                    "\n    no failing case in the JUnit file (junit error: {}); regrtest's output ends with:\n{}",
                    v["junit_error"],
                    v["tail"].as_str().unwrap_or("")
                ));
            }
            failed.push(why);
        }
    }
    table.push_str(&format!(
        "  {} modules in {:.0} s\n",
        seen.len(),
        total.as_secs_f64()
    ));
    let unused: Vec<&str> = ALLOWED_FAILURES
        .iter()
        .map(|(id, _)| *id)
        .filter(|id| !allowed_seen.contains(*id))
        .filter(|id| {
            modules
                .iter()
                .any(|m| id.starts_with(&format!("test.{m}.")))
        })
        .collect();
    if !unused.is_empty() {
        table.push_str(&format!("  allow-listed but passed now: {unused:?}\n"));
    }
    log(&table);
    let missing: Vec<&String> = modules.iter().filter(|m| !seen.contains(*m)).collect();
    assert!(
        missing.is_empty() && out.code == Some(0),
        "the suite did not run to the end; modules without a result: {missing:?}\n{out:?}"
    );
    assert!(
        failed.is_empty(),
        "{table}\nfailures:\n{}",
        failed.join("\n\n")
    );
}

// ---- e. file capabilities -------------------------------------------------------------------

#[test]
fn ping_keeps_its_file_capability_under_subordinate_ids_only() {
    let t = Test::new("file_caps");
    // A cache of this test's own: the first run's -D summary counts refused xattrs.
    let own = |args: &[&str]| {
        t.cmd(&python().packed)
            .args(args.iter().copied())
            .timeout(RUN_TIMEOUT)
            .run()
    };
    let out = own(&["-D", "getcap", "/usr/bin/ping"]);
    out.assert_success();
    assert_subid_entry(&t.cache());
    assert_eq!(
        out.stdout_text().trim(),
        "/usr/bin/ping cap_net_raw=ep",
        "getcap inside (subordinate ids: extracted inside the user namespace, which may set \
         security.capability):\n{out:?}"
    );
    assert!(
        out.stderr_text().contains(" 0 xattrs refused"),
        "no xattr refused under subordinate ids:\n{out:?}"
    );
    // A single mapping extracts as the plain user outside any user namespace, where
    // setting security.capability needs CAP_SETFCAP: the kernel refuses it, the
    // extraction counts it, and ping has no capability inside.
    let out = own(&["--userns", "single", "-D", "getcap", "-v", "/usr/bin/ping"]);
    out.assert_success();
    assert_eq!(
        out.stdout_text().trim(),
        "/usr/bin/ping",
        "getcap -v inside with a single mapping: no capability:\n{out:?}"
    );
    assert!(
        out.stderr_text().contains(" 1 xattrs refused"),
        "the single mapping's extraction refuses exactly ping's security.capability:\n{out:?}"
    );
}
