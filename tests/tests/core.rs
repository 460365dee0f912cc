//! Issue 2, end to end: the example busybox image packed with dist/binctr-pack and run by
//! a non-root user.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use binctr_tests::{
    cache_entries, extracted_images, find_sha256, host_file, identity, is_cache_entry,
    random_bytes, Test, CONTAINER_PATH, VERSION,
};

// ---- running commands -------------------------------------------------------------------

#[test]
fn echo_prints_hello_and_exits_0() {
    let t = Test::new("echo_hello");
    t.run(["echo", "hello"])
        .assert_success()
        .assert_stdout("hello\n");
}

#[test]
fn exit_code_of_the_command_is_the_exit_code() {
    let t = Test::new("exit_42");
    t.run(["sh", "-c", "exit 42"]).assert_code(42);
    t.run(["false"]).assert_code(1);
}

#[test]
fn unknown_command_exits_127_with_an_error_line() {
    let t = Test::new("unknown_command");
    let out = t.run(["no-such-command-xyz"]);
    out.assert_code(127);
    assert!(
        out.stderr_text().contains("no-such-command-xyz"),
        "the error names the command:\n{out:?}"
    );
    assert!(out.stdout.is_empty(), "nothing on stdout:\n{out:?}");
}

#[test]
fn command_that_is_not_executable_exits_126() {
    let t = Test::new("not_executable");
    let out = t.run(["/etc/passwd"]);
    out.assert_code(126);
    assert!(!out.stderr.is_empty(), "an error line on stderr:\n{out:?}");
}

#[test]
fn bad_flag_exits_125_with_one_error_line() {
    let t = Test::new("bad_flag");
    let out = t.run(["--no-such-flag", "true"]);
    out.assert_code(125);
    let err = out.stderr_text();
    assert!(!err.trim().is_empty(), "an error on stderr:\n{out:?}");
    assert!(out.stdout.is_empty(), "nothing on stdout:\n{out:?}");
}

#[test]
fn no_command_runs_the_default_shell() {
    let t = Test::new("default_shell");
    t.cmd(t.busybox())
        .stdin("echo from-the-default-shell; exit 7\n")
        .run()
        .assert_code(7)
        .assert_stdout("from-the-default-shell\n");
}

#[test]
fn container_user_is_root() {
    let t = Test::new("id_u");
    t.run(["id", "-u"]).assert_success().assert_stdout("0\n");
    t.run(["id", "-g"]).assert_success().assert_stdout("0\n");
}

#[test]
fn pid_1_is_a_container_process_not_the_host_init() {
    let t = Test::new("pid_1");
    let out = t.run(["cat", "/proc/1/cmdline"]);
    out.assert_success();
    let host_init = host_file("/proc/1/cmdline");
    assert!(
        !out.stdout.is_empty(),
        "/proc/1/cmdline is empty: /proc is not mounted?\n{out:?}"
    );
    assert_ne!(
        out.stdout, host_init,
        "the container sees the host's init as pid 1:\n{out:?}"
    );
    let text = out.stdout_text();
    assert!(
        !text.contains("systemd") && !text.starts_with("/sbin/init"),
        "pid 1 looks like an init system, not the container:\n{out:?}"
    );
    // Only the container's few processes are visible in its /proc.
    let out = t.run(["sh", "-c", "ls /proc | grep -c '^[0-9][0-9]*$'"]);
    out.assert_success();
    let count: u32 = out.stdout_text().trim().parse().expect("a count");
    assert!(
        count <= 5,
        "the container sees {count} processes: not a pid namespace of its own"
    );
}

#[test]
fn hostname_differs_from_the_host() {
    let t = Test::new("hostname");
    let out = t.run(["hostname"]);
    out.assert_success();
    let host = String::from_utf8(host_file("/proc/sys/kernel/hostname")).unwrap();
    let inside = out.stdout_text();
    assert!(!inside.trim().is_empty(), "empty hostname:\n{out:?}");
    assert_ne!(
        inside.trim(),
        host.trim(),
        "the container has the host's hostname"
    );
}

// ---- the root filesystem ----------------------------------------------------------------

#[test]
fn files_written_in_one_run_are_gone_in_the_next() {
    let t = Test::new("ephemeral_writes");
    t.run([
        "sh",
        "-c",
        "echo data > /x && echo more > /tmp/f && cat /x /tmp/f",
    ])
    .assert_success()
    .assert_stdout("data\nmore\n");
    let out = t.run(["sh", "-c", "ls /x /tmp/f"]);
    assert_ne!(out.code, Some(0), "/x or /tmp/f survived the run:\n{out:?}");
    assert!(
        out.stdout.is_empty(),
        "/x or /tmp/f survived the run:\n{out:?}"
    );
    // The cached image never changes.
    let rootfs = t.only_rootfs();
    assert!(
        rootfs.join("bin/busybox").exists(),
        "no bin/busybox in {}",
        rootfs.display()
    );
    assert!(
        !rootfs.join("x").exists(),
        "the write reached the cached rootfs"
    );
    assert!(
        !rootfs.join("tmp/f").exists(),
        "the write reached the cached rootfs"
    );
}

#[test]
fn read_only_root_refuses_writes() {
    let t = Test::new("read_only");
    t.run(["--read-only", "echo", "ok"])
        .assert_success()
        .assert_stdout("ok\n");
    let out = t.run(["--read-only", "touch", "/x"]);
    assert!(
        out.code.is_some_and(|c| c != 0),
        "touch /x succeeded with --read-only:\n{out:?}"
    );
    let out = t.run(["--read-only", "sh", "-c", "echo data > /etc/x"]);
    assert!(
        out.code.is_some_and(|c| c != 0),
        "a write to /etc succeeded with --read-only:\n{out:?}"
    );
    let rootfs = t.only_rootfs();
    assert!(
        !rootfs.join("x").exists() && !rootfs.join("etc/x").exists(),
        "a write reached the cache"
    );
}

#[test]
fn dev_has_the_usual_devices() {
    let t = Test::new("dev");
    let script = r#"
        for n in null zero full random urandom tty; do [ -c /dev/$n ] || echo "no /dev/$n"; done
        grep -q ' /dev/pts devpts ' /proc/mounts || echo "no devpts on /dev/pts"
        [ -d /dev/shm ] || echo "no /dev/shm"
        echo x > /dev/null || echo "cannot write /dev/null"
        head -c 5 /dev/urandom | wc -c
        head -c 3 /dev/zero | wc -c
        echo shm > /dev/shm/f && cat /dev/shm/f
    "#;
    t.run(["sh", "-c", script])
        .assert_success()
        .assert_stdout("5\n3\nshm\n");
}

#[test]
fn sys_is_mounted_read_only() {
    let t = Test::new("sys_ro");
    t.run([
        "sh",
        "-c",
        r#"awk '$2 == "/sys" { split($4, o, ","); print $3, o[1] }' /proc/mounts"#,
    ])
    .assert_success()
    .assert_stdout("sysfs ro\n");
}

#[test]
fn resolv_conf_and_hosts_come_from_the_host() {
    let t = Test::new("resolv_hosts");
    for file in ["/etc/resolv.conf", "/etc/hosts"] {
        let Ok(host) = fs::read(file) else {
            panic!("the host has no {file}: this test needs one");
        };
        let out = t.run(["cat", file]);
        out.assert_success();
        assert!(
            out.stdout == host,
            "{file} inside differs from the host's:\n{out:?}"
        );
    }
}

#[test]
fn host_files_are_not_reachable_from_the_container() {
    let t = Test::new("old_root_detached");
    let marker = format!("binctr-marker-{}", std::process::id());
    fs::write(t.dir.join(&marker), b"host").unwrap();
    // Were the old root still attached anywhere, find would reach the marker through it.
    // It must find /bin/busybox, or the search itself did not work.
    let script = format!(
        "find / -path /proc -prune -o -path /sys -prune -o \\( -name {marker} -o -name busybox \\) -print"
    );
    t.run(["sh", "-c", &script])
        .assert_success()
        .assert_stdout("/bin/busybox\n");
}

// ---- stdin and stdout -------------------------------------------------------------------

#[test]
fn pipes_are_binary_safe() {
    let t = Test::new("binary_stdin");
    let out = t.busybox_cmd(["cat"]).stdin(&b"a\0b"[..]).run();
    out.assert_success();
    assert_eq!(out.stdout, b"a\0b", "cat changed the bytes:\n{out:?}");
}

#[test]
fn a_megabyte_of_random_bytes_round_trips_through_cat() {
    let t = Test::new("binary_1mb");
    let blob = random_bytes(1024 * 1024 + 7, 0x5eed);
    let out = t.busybox_cmd(["cat"]).stdin(blob.clone()).run();
    out.assert_success();
    assert!(
        out.stdout == blob,
        "got {} bytes back, not the {} sent (or different ones)",
        out.stdout.len(),
        blob.len()
    );
    // And stdin reaches the command in order: count the bytes inside.
    let out = t.busybox_cmd(["wc", "-c"]).stdin(blob.clone()).run();
    out.assert_success();
    assert_eq!(out.stdout_text().trim(), blob.len().to_string(), "{out:?}");
}

#[test]
fn stdout_and_stderr_stay_apart() {
    let t = Test::new("stdout_stderr");
    let out = t.run(["sh", "-c", "echo to-out; echo to-err >&2"]);
    out.assert_success().assert_stdout("to-out\n");
    assert!(out.stderr_text().contains("to-err"), "{out:?}");
    assert!(!out.stdout_text().contains("to-err"), "{out:?}");
}

// ---- the cache --------------------------------------------------------------------------

#[test]
fn second_run_reuses_the_extracted_rootfs() {
    let t = Test::new("cache_reuse");
    let first = t.run(["-D", "true"]);
    first.assert_success();
    assert!(
        first.stderr_text().contains("extracting"),
        "-D on a first run says extracting:\n{first:?}"
    );
    let digest_dir = t.only_digest_dir();
    let before = identity(&digest_dir);
    let rootfs_before = identity(&t.only_rootfs());

    let second = t.run(["-D", "true"]);
    second.assert_success();
    let err = second.stderr_text();
    assert!(
        err.contains("cached"),
        "-D on a second run says cached:\n{second:?}"
    );
    assert!(
        !err.contains("extracting"),
        "the second run extracted again:\n{second:?}"
    );
    assert_eq!(t.only_digest_dir(), digest_dir);
    // The entry itself (its mtime is the image's last use: format 2 touches it).
    assert_eq!(
        identity(&digest_dir).0,
        before.0,
        "the cached image's entry was replaced"
    );
    assert_eq!(
        identity(&t.only_rootfs()),
        rootfs_before,
        "the rootfs was replaced or changed"
    );
}

#[test]
fn removing_the_cache_makes_the_next_run_extract() {
    let t = Test::new("cache_removed");
    t.run(["true"]).assert_success();
    t.only_digest_dir();
    fs::remove_dir_all(t.cache()).expect("remove the cache");
    let out = t.run(["-D", "echo", "again"]);
    out.assert_success().assert_stdout("again\n");
    assert!(
        out.stderr_text().contains("extracting"),
        "-D says extracting after the cache was removed:\n{out:?}"
    );
    assert!(t.only_rootfs().join("bin/busybox").exists());
}

#[test]
fn cache_dir_is_named_after_the_payload_digest_and_left_clean() {
    let t = Test::new("cache_layout");
    let out = t.run(["-D", "true"]);
    out.assert_success();
    // -D names the payload: "payload: NAME (sha256:HEX), ..."
    let payload = find_sha256(&out.stderr_text())
        .unwrap_or_else(|| panic!("-D names no payload digest:\n{out:?}"))
        .to_string();
    let digest_dir = t.only_digest_dir();
    let name = digest_dir.file_name().unwrap().to_string_lossy();
    assert!(
        is_cache_entry(&name) && name.starts_with(&payload),
        "the image's entry {name} is not named after the payload digest {payload}"
    );
    t.assert_cache_clean();
}

#[test]
fn first_run_says_nothing_on_stderr_when_it_is_not_a_terminal() {
    let t = Test::new("quiet_first_run");
    let out = t.run(["echo", "quiet"]);
    out.assert_success().assert_stdout("quiet\n");
    assert!(
        out.stderr.is_empty(),
        "a first run without -D wrote to a non-terminal stderr:\n{out:?}"
    );
}

#[test]
fn default_cache_is_under_the_home_directory() {
    let t = Test::new("default_cache");
    t.busybox_cmd(["true"])
        .env_remove("BINCTR_CACHE")
        .run()
        .assert_success();
    let cache = t.home().join(".cache/binctr");
    let digests = extracted_images(&cache);
    assert_eq!(
        digests.len(),
        1,
        "expected one extracted rootfs in {}: {digests:?}",
        cache.display()
    );
    assert!(
        !t.cache().exists(),
        "BINCTR_CACHE was unset but {} was made",
        t.cache().display()
    );
}

#[test]
fn a_stale_temp_dir_from_a_crashed_run_does_not_break_the_next() {
    // Format 1's temp dirs (format 2's: layers_run.rs).
    let t = Test::new("stale_tmp");
    let flat = t.busybox_flat();
    t.cmd(flat).arg("true").run().assert_success();
    let digest_dir = t.only_digest_dir();
    fs::remove_dir_all(&digest_dir).unwrap();
    // What a run killed midway leaves: a half-filled temp dir.
    let stale = t.cache().join(".tmp-crashed");
    fs::create_dir_all(stale.join("rootfs/bin")).unwrap();
    fs::write(stale.join("rootfs/bin/busybox"), b"half").unwrap();
    for path in [
        &stale,
        &stale.join("rootfs"),
        &stale.join("rootfs/bin"),
        &stale.join("rootfs/bin/busybox"),
    ] {
        t.env.give_to_user(path);
    }
    t.cmd(flat)
        .args(["echo", "recovered"])
        .run()
        .assert_success()
        .assert_stdout("recovered\n");
    assert!(
        t.only_digest_dir()
            .join("rootfs/bin/busybox")
            .metadata()
            .unwrap()
            .len()
            > 4
    );
}

#[test]
fn eight_simultaneous_first_runs_all_succeed_and_extract_once() {
    let t = Test::new("concurrent_first_runs");
    let runs: Vec<_> = (0..8)
        .map(|i| t.busybox_cmd(["echo", &format!("run-{i}")]).spawn())
        .collect();
    for (i, run) in runs.into_iter().enumerate() {
        run.wait()
            .assert_success()
            .assert_stdout(&format!("run-{i}\n"));
    }
    // One image entry, its one layer extracted once, nothing else.
    t.only_digest_dir();
    t.only_rootfs();
    t.assert_cache_clean();
}

#[test]
fn corrupted_payload_is_refused_and_nothing_is_cached() {
    let t = Test::new("corrupt_payload");
    let packed = t.dir.join("corrupt");
    fs::copy(t.busybox(), &packed).unwrap();
    t.env.give_to_user(&packed);
    let stub_len = fs::metadata(t.env.stub()).unwrap().len();
    let mut bytes = fs::read(&packed).unwrap();
    // The payload starts after the stub and is most of the rest: its middle is payload.
    let middle = (stub_len as usize + bytes.len()) / 2;
    bytes[middle] ^= 0xff;
    fs::write(&packed, &bytes).unwrap();
    let out = t.cmd(&packed).arg("true").run();
    out.assert_code(125);
    assert!(!out.stderr.is_empty(), "an error line on stderr:\n{out:?}");
    assert!(
        t.cache_digest_dirs().is_empty(),
        "a corrupt payload was cached: {:?}",
        cache_entries(&t.cache())
    );
    for (name, _) in cache_entries(&t.cache()) {
        assert!(
            !name.starts_with(".tmp-"),
            "a temp dir was left in the cache: {name}"
        );
    }
}

#[test]
fn stub_without_payload_exits_125_with_one_line() {
    let t = Test::new("bare_stub");
    // A copy: the test user may not be able to reach dist/ (a checkout under /root).
    let stub = t.dir.join("binctr-stub");
    fs::copy(t.env.stub(), &stub).unwrap();
    t.env.give_to_user(&stub);
    t.cmd(&stub)
        .arg("true")
        .run()
        .assert_code(125)
        .assert_one_error_line("binctr:");
}

#[test]
fn truncated_packed_file_exits_125() {
    let t = Test::new("truncated");
    let packed = t.dir.join("truncated");
    let bytes = fs::read(t.busybox()).unwrap();
    fs::write(&packed, &bytes[..bytes.len() - 10]).unwrap();
    fs::set_permissions(&packed, fs::Permissions::from_mode(0o755)).unwrap();
    t.env.give_to_user(&packed);
    let out = t.cmd(&packed).arg("true").run();
    out.assert_code(125);
    assert!(out.stderr_text().starts_with("binctr:"), "{out:?}");
}

// ---- signals ----------------------------------------------------------------------------

/// Starts `sleep 100` in the container, waits until it runs, sends `signal` to the stub
/// and expects the container to end quickly with `expected`.
fn signal_ends_sleep(name: &str, signal: i32, expected: i32) {
    let t = Test::new(name);
    let mut running = t.busybox_cmd(["sleep", "100"]).spawn();
    running.wait_for_descendant("sleep", Duration::from_secs(20));
    let sent = Instant::now();
    running.signal(signal);
    let out = running.wait();
    out.assert_code(expected);
    assert!(
        sent.elapsed() < Duration::from_secs(5),
        "took {:?} to end after the signal",
        sent.elapsed()
    );
}

#[test]
fn sigterm_to_the_stub_ends_the_container_with_143() {
    signal_ends_sleep("sigterm", libc::SIGTERM, 143);
}

#[test]
fn sigint_to_the_stub_ends_the_container_with_130() {
    signal_ends_sleep("sigint", libc::SIGINT, 130);
}

#[test]
fn sighup_to_the_stub_ends_the_container_with_129() {
    signal_ends_sleep("sighup", libc::SIGHUP, 129);
}

/// Sends `signal` to the stub while a shell that traps it waits in the container.
fn signal_reaches_the_command(name: &str, signal: i32, trap_name: &str) {
    let t = Test::new(name);
    let script = format!("trap 'echo got-{trap_name}; exit 3' {trap_name}; sleep 100 & wait");
    let mut running = t.busybox_cmd(["sh", "-c", &script]).spawn();
    // The trap is set before sleep starts.
    running.wait_for_descendant("sleep", Duration::from_secs(20));
    running.signal(signal);
    let out = running.wait();
    out.assert_code(3)
        .assert_stdout(&format!("got-{trap_name}\n"));
}

#[test]
fn sigusr1_to_the_stub_reaches_the_command() {
    signal_reaches_the_command("sigusr1", libc::SIGUSR1, "USR1");
}

#[test]
fn sigusr2_to_the_stub_reaches_the_command() {
    signal_reaches_the_command("sigusr2", libc::SIGUSR2, "USR2");
}

#[test]
fn sigquit_to_the_stub_reaches_the_command() {
    signal_reaches_the_command("sigquit", libc::SIGQUIT, "QUIT");
}

#[test]
fn sigterm_reaches_a_shell_that_traps_it() {
    signal_reaches_the_command("sigterm_trap", libc::SIGTERM, "TERM");
}

// ---- flags and arguments ----------------------------------------------------------------

#[test]
fn flags_after_the_command_go_to_the_command() {
    let t = Test::new("pass_through");
    t.run(["echo", "-D", "--read-only"])
        .assert_success()
        .assert_stdout("-D --read-only\n");
    t.run(["echo", "-h", "--help", "-v", "--", "x"])
        .assert_success()
        .assert_stdout("-h --help -v -- x\n");
    t.run([
        "sh",
        "-c",
        "printf '[%s]' \"$@\"",
        "sh",
        "a b",
        "",
        "-c",
        "'q'",
    ])
    .assert_success()
    .assert_stdout("[a b][][-c]['q']");
}

#[test]
fn debug_flag_prints_setup_steps_on_stderr_only() {
    let t = Test::new("debug_flag");
    let out = t.run(["-D", "echo", "hi"]);
    out.assert_success().assert_stdout("hi\n");
    assert!(
        out.stderr_text().lines().count() >= 2,
        "-D prints the setup steps:\n{out:?}"
    );
}

#[test]
fn help_shows_image_name_digest_and_version() {
    let t = Test::new("help");
    for flag in ["-h", "--help"] {
        let out = t.run([flag]);
        out.assert_success();
        let text = out.stdout_text();
        assert!(text.contains("busybox"), "{flag} names the image:\n{out:?}");
        assert!(
            find_sha256(&text).is_some(),
            "{flag} shows sha256:<64 hex>:\n{out:?}"
        );
        assert!(
            text.contains(VERSION),
            "{flag} shows the version {VERSION}:\n{out:?}"
        );
    }
    // Help runs nothing: no extraction.
    assert!(t.cache_digest_dirs().is_empty(), "-h extracted the rootfs");
}

#[test]
fn version_flag_prints_the_version() {
    // -v is docker's --volume (issue 12); the version is --version only.
    let t = Test::new("version");
    let out = t.run(["--version"]);
    out.assert_success();
    assert!(
        out.stdout_text().contains(VERSION),
        "--version prints {VERSION}:\n{out:?}"
    );
    let out = t.run(["-v"]);
    out.assert_code(125);
    assert!(
        out.stderr_text().contains("-v needs a value"),
        "-v is --volume:\n{out:?}"
    );
}

// ---- environment ------------------------------------------------------------------------

#[test]
fn host_environment_does_not_leak_but_term_does() {
    let t = Test::new("environment");
    let cmd = t
        .busybox_cmd(["env"])
        .env("FOO", "bar")
        .env("TERM", "xterm-binctr-test");
    let host = cmd.vars();
    let out = cmd.run();
    out.assert_success();
    let text = out.stdout_text();
    let inside: Vec<(&str, &str)> = text.lines().filter_map(|l| l.split_once('=')).collect();
    assert!(
        !inside.iter().any(|(k, _)| *k == "FOO"),
        "FOO leaked into the container:\n{text}"
    );
    assert!(
        inside.contains(&("TERM", "xterm-binctr-test")),
        "TERM did not pass:\n{text}"
    );
    assert!(
        inside.contains(&("PATH", CONTAINER_PATH)),
        "PATH is not {CONTAINER_PATH}:\n{text}"
    );
    for (key, value) in &inside {
        if *key == "TERM" {
            continue;
        }
        let leaked = host
            .get(*key)
            .is_some_and(|v| v.to_string_lossy() == *value);
        assert!(!leaked, "{key}={value} leaked from the host:\n{text}");
    }
}

// ---- packing ----------------------------------------------------------------------------

#[test]
fn packing_the_same_tar_twice_gives_identical_files() {
    let t = Test::new("deterministic_pack");
    let fixture = t.env.fixture("busybox.tar");
    let a = t.pack(&fixture, "busybox-a");
    let b = t.pack(&fixture, "busybox-b");
    let (a_bytes, b_bytes) = (fs::read(&a).unwrap(), fs::read(&b).unwrap());
    assert!(
        a_bytes == b_bytes,
        "two packs of the same tar differ ({} and {} bytes)",
        a_bytes.len(),
        b_bytes.len()
    );
    let stub = fs::read(t.env.stub()).unwrap();
    assert!(
        a_bytes.len() > stub.len(),
        "the packed file is not larger than the stub"
    );
    assert!(
        a_bytes.starts_with(&stub),
        "the packed file does not start with dist/binctr-stub"
    );
}

#[test]
fn packing_does_not_depend_on_where_the_tar_lives() {
    let t = Test::new("pack_path_independent");
    let fixture = t.env.fixture("busybox.tar");
    for dir in ["a", "b/c"] {
        fs::create_dir_all(t.dir.join(dir)).unwrap();
        fs::copy(&fixture, t.dir.join(dir).join("busybox.tar")).unwrap();
    }
    let a = t.pack(&t.dir.join("a/busybox.tar"), "busybox-a");
    let b = t.pack(&t.dir.join("b/c/busybox.tar"), "busybox-b");
    assert!(
        fs::read(&a).unwrap() == fs::read(&b).unwrap(),
        "the same tar packed from two directories gives different files: \
         the input's path must not end up in the packed file"
    );
}

#[test]
fn packed_file_has_mode_0755() {
    let t = Test::new("pack_mode");
    let out_path = t.dir.join("out");
    t.packer()
        .arg(t.env.fixture("busybox.tar"))
        .arg("-o")
        .arg(&out_path)
        .run()
        .assert_success();
    let mode = fs::metadata(&out_path).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o755, "the packed file has mode {mode:o}");
}

/// One clear line starting with "binctr-pack:", a non-zero exit, and nothing left in `dir`.
#[track_caller]
fn assert_pack_failed_cleanly(out: &binctr_tests::Output, dir: &Path) {
    assert!(
        out.code.is_some_and(|c| c != 0),
        "the packer succeeded:\n{out:?}"
    );
    out.assert_one_error_line("binctr-pack:");
    let left: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(
        left.is_empty(),
        "the failed pack left files in {}: {left:?}",
        dir.display()
    );
}

#[test]
fn packing_a_missing_input_fails_with_one_line() {
    let t = Test::new("pack_missing_input");
    let dir = t.dir.join("out");
    fs::create_dir(&dir).unwrap();
    let out = t
        .packer()
        .arg(t.dir.join("no-such-image.tar"))
        .arg("-o")
        .arg(dir.join("img"))
        .run();
    assert_pack_failed_cleanly(&out, &dir);
    assert!(
        out.stderr_text().contains("no-such-image.tar"),
        "the error names the input:\n{out:?}"
    );
}

#[test]
fn packing_a_file_that_is_not_a_tar_fails_with_one_line() {
    let t = Test::new("pack_not_a_tar");
    let dir = t.dir.join("out");
    fs::create_dir(&dir).unwrap();
    let junk = t.dir.join("junk.tar");
    fs::write(&junk, random_bytes(64 * 1024, 42)).unwrap();
    let out = t.packer().arg(&junk).arg("-o").arg(dir.join("img")).run();
    assert_pack_failed_cleanly(&out, &dir);

    let text = t.dir.join("text.tar");
    fs::write(&text, "this is not a tar archive\n".repeat(100)).unwrap();
    let out = t.packer().arg(&text).arg("-o").arg(dir.join("img")).run();
    assert_pack_failed_cleanly(&out, &dir);
}

#[test]
fn packing_into_an_unwritable_directory_fails_with_one_line() {
    let t = Test::new("pack_unwritable_out");
    let dir = t.dir.join("read-only-dir");
    fs::create_dir(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o555)).unwrap();
    // Root writes anywhere: the packer runs as the test user here, who cannot write there.
    // Copies, so the test user can surely read them.
    let packer = t.dir.join("binctr-pack");
    let image = t.dir.join("busybox.tar");
    fs::copy(t.env.packer(), &packer).unwrap();
    fs::copy(t.env.fixture("busybox.tar"), &image).unwrap();
    fs::set_permissions(&image, fs::Permissions::from_mode(0o644)).unwrap();
    let out = t
        .cmd(&packer)
        .arg(&image)
        .arg("-o")
        .arg(dir.join("img"))
        .run();
    assert_pack_failed_cleanly(&out, &dir);
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
}
