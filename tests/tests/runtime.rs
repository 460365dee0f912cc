//! Issue 4, end to end: the packed busybox run as a container runtime by a non-root user:
//! detach and pid files, ids and the state root, hooks, a real terminal, volumes, tmpfs,
//! hostname and network, the init, --overlay, and systemd's NOTIFY_SOCKET / LISTEN_FDS.

use std::ffi::OsString;
use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use binctr_tests::{
    assert_fails_with_one_line, assert_no_process_left, cache_entries, find_bytes, is_live,
    live_descendants_with_argv, live_with_argv, read_pid_file, s, send_signal, signal_group,
    temp_entries, wait_until, Cmd, Detached, Proc, PtyRun, Test, QUICK,
};

/// Timeout of one packed-binary run in these tests.
const RUN_TIMEOUT: Duration = Duration::from_secs(30);

// ---- helpers ----------------------------------------------------------------------------

/// A directory under the test's scratch space, owned by the test user.
fn user_dir(t: &Test, name: &str) -> PathBuf {
    let dir = t.dir.join(name);
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    t.env.give_to_user(&dir);
    dir
}

/// A file under the test's scratch space, owned by the test user.
fn user_file(t: &Test, name: &str, content: &str) -> PathBuf {
    let path = t.dir.join(name);
    fs::write(&path, content).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    t.env.give_to_user(&path);
    path
}

/// `/bin/sh -c SCRIPT sh ARGS...` on the host, as the test user.
fn host_sh(t: &Test, script: &str, args: &[&str]) -> Cmd {
    t.cmd(Path::new("/bin/sh"))
        .args(["-c", script, "sh"])
        .args(args.iter().copied())
        .timeout(RUN_TIMEOUT)
}

/// The packed busybox with ARGS, as the test user, with this file's timeout.
fn bb<I, S>(t: &Test, args: I) -> Cmd
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    t.busybox_cmd(args).timeout(RUN_TIMEOUT)
}

/// Extracts the rootfs once, so timings that follow measure a warm start only.
fn warm_up(t: &Test) {
    bb(t, ["true"]).run().assert_success();
}

/// Entries of a directory (names), sorted; empty if it does not exist.
fn dir_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match fs::read_dir(dir) {
        Ok(rd) => rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(e) if e.kind() == ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("read_dir {}: {e}", dir.display()),
    };
    names.sort();
    names
}

/// Every path under `dir` (recursively) whose file name is `name`.
fn find_named(dir: &Path, name: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_name() == name {
            found.push(path.clone());
        }
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            found.extend(find_named(&path, name));
        }
    }
    found
}

/// The extracted rootfs entries of the test's cache (`<sha256>[-<mapping>]/`); fails the
/// test when there is none.
#[track_caller]
fn cache_rootfs_entries(t: &Test) -> Vec<PathBuf> {
    let entries = t.cache_digest_dirs();
    assert!(
        !entries.is_empty(),
        "no extracted rootfs in {}: {:?}",
        t.cache().display(),
        cache_entries(&t.cache())
    );
    entries
}

fn count_lines(path: &Path) -> usize {
    fs::read_to_string(path)
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

// ---- -d, --pid-file, --log --------------------------------------------------------------

#[test]
fn detached_container_runs_until_killed_then_leaves_nothing() {
    let t = Test::new("detach");
    warm_up(&t);
    let vol = user_dir(&t, "vol");
    let root = t.dir.join("state");
    let pid_file = t.dir.join("container.pid");
    let log = t.dir.join("container.log");
    let script = "echo to-the-log; echo err-to-the-log >&2; \
                  echo layer > /written-in-the-container; \
                  while :; do echo tick >> /data/ticks; sleep 0.05; done";
    let started = Instant::now();
    let out = bb(
        &t,
        [
            "-d",
            "--pid-file",
            &s(&pid_file),
            "--log",
            &s(&log),
            "--root",
            &s(&root),
            "--id",
            "detached-1",
            "--volume",
            &format!("{}:/data", s(&vol)),
            "sh",
            "-c",
            script,
        ],
    )
    .run();
    let took = started.elapsed();
    out.assert_success();
    assert!(
        took < QUICK,
        "-d took {took:?} to return (its stdio must be released at once):\n{out:?}"
    );
    assert!(
        out.stdout.is_empty(),
        "the command's output went to the terminal, not the log:\n{out:?}"
    );
    let pid = read_pid_file(&pid_file);
    let _guard = Detached { pid };

    // The pid is the container's, alive, and the user can signal it.
    host_sh(&t, r#"kill -0 "$(cat "$1")""#, &[&s(&pid_file)])
        .run()
        .assert_success();
    let state_dir = root.join("detached-1");
    let state: serde_json::Value = serde_json::from_slice(
        &fs::read(state_dir.join("state.json")).expect("state.json of the running container"),
    )
    .expect("state.json is JSON");
    assert_eq!(state["pid"], pid, "state.json: {state}");
    assert_eq!(state["status"], "running", "state.json: {state}");
    assert_eq!(state["id"], "detached-1", "state.json: {state}");
    // The supervising process survives the stub that started it.
    let monitor = Proc::read(pid).expect("the container's pid 1").ppid;
    assert!(is_live(monitor), "the container's parent {monitor} is gone");

    // It keeps writing into the volume.
    let ticks = vol.join("ticks");
    assert!(
        wait_until(QUICK, || count_lines(&ticks) > 0),
        "nothing was written to the volume"
    );
    let before = count_lines(&ticks);
    thread::sleep(Duration::from_secs(1));
    let after = count_lines(&ticks);
    assert!(
        after > before,
        "the detached container stopped writing: {before} lines, then {after} 1 s later"
    );

    // --log gets its stdout and stderr.
    assert!(
        wait_until(QUICK, || {
            let text = fs::read_to_string(&log).unwrap_or_default();
            text.contains("to-the-log") && text.contains("err-to-the-log")
        }),
        "--log {} lacks the command's output: {:?}",
        log.display(),
        fs::read_to_string(&log)
    );

    // SIGTERM from the user ends it and everything it had.
    host_sh(&t, r#"kill "$(cat "$1")""#, &[&s(&pid_file)])
        .run()
        .assert_success();
    assert!(
        wait_until(QUICK, || !is_live(pid)),
        "the container (pid {pid}) still runs {QUICK:?} after SIGTERM"
    );
    assert!(
        wait_until(QUICK, || !is_live(monitor)),
        "the container's supervising process {monitor} outlived it"
    );
    assert!(
        wait_until(QUICK, || !state_dir.exists()),
        "the state dir {} is still there after the container exited: {:?}",
        state_dir.display(),
        dir_names(&state_dir)
    );
    assert_eq!(dir_names(&root), Vec::<String>::new(), "left in --root");
    let stopped_at = count_lines(&ticks);
    thread::sleep(Duration::from_millis(300));
    assert_eq!(
        count_lines(&ticks),
        stopped_at,
        "something still writes to the volume"
    );
    // The writable layer is gone: nothing of it on disk, no mount of the cache left.
    let leftovers = [
        find_named(&t.cache(), "written-in-the-container"),
        find_named(&root, "written-in-the-container"),
    ]
    .concat();
    assert!(
        leftovers.is_empty(),
        "the container's writable layer is on disk: {leftovers:?}"
    );
    for entry in cache_rootfs_entries(&t) {
        let mnt = entry.join("mnt");
        assert_eq!(
            dir_names(&mnt),
            Vec::<String>::new(),
            "{} is not empty",
            mnt.display()
        );
    }
}

#[test]
fn detached_container_ends_on_sigint_to_its_pid_too() {
    let t = Test::new("detach_sigint");
    let root = t.dir.join("state");
    let pid_file = t.dir.join("pid");
    bb(
        &t,
        [
            "-d",
            "--pid-file",
            &s(&pid_file),
            "--root",
            &s(&root),
            "sleep",
            "4101",
        ],
    )
    .run()
    .assert_success();
    let pid = read_pid_file(&pid_file);
    let _guard = Detached { pid };
    assert_eq!(live_with_argv(&t, "sleep 4101").len(), 1, "the sleep runs");
    assert_eq!(
        dir_names(&root).len(),
        1,
        "one state dir: {:?}",
        dir_names(&root)
    );
    host_sh(&t, r#"kill -INT "$(cat "$1")""#, &[&s(&pid_file)])
        .run()
        .assert_success();
    assert!(
        wait_until(QUICK, || !is_live(pid)),
        "the container still runs after SIGINT"
    );
    assert_no_process_left(&t, "sleep 4101", "after SIGINT to the detached container");
    assert!(
        wait_until(QUICK, || dir_names(&root).is_empty()),
        "state left: {:?}",
        dir_names(&root)
    );
}

#[test]
fn detached_container_outlives_the_terminal_it_was_started_from() {
    let t = Test::new("detach_from_terminal");
    warm_up(&t);
    let vol = user_dir(&t, "vol");
    let pid_file = t.dir.join("pid");
    let mut term = PtyRun::open(&t, 24, 80);
    let before = term.host_settings();
    term.spawn(
        &t,
        &[
            "-d",
            "--pid-file",
            &s(&pid_file),
            "--volume",
            &format!("{}:/data", s(&vol)),
            "sh",
            "-c",
            "while :; do echo tick >> /data/ticks; sleep 0.05; done",
        ],
    );
    let status = term.wait_exit(QUICK);
    assert_eq!(status.code(), Some(0), "{}", term.transcript());
    let pid = read_pid_file(&pid_file);
    let _guard = Detached { pid };
    assert_eq!(
        term.host_settings(),
        before,
        "-d changed the terminal's settings"
    );
    // The terminal goes away; the container does not notice.
    term.hang_up();
    thread::sleep(Duration::from_millis(500));
    assert!(
        is_live(pid),
        "the detached container died with its terminal"
    );
    let ticks = vol.join("ticks");
    let lines = count_lines(&ticks);
    thread::sleep(Duration::from_millis(500));
    assert!(
        count_lines(&ticks) > lines,
        "the detached container stopped writing when its terminal went away"
    );
    send_signal(pid, libc::SIGTERM).unwrap();
    assert!(
        wait_until(QUICK, || !is_live(pid)),
        "SIGTERM did not end it"
    );
}

#[test]
fn log_without_detach_is_refused() {
    let t = Test::new("log_without_d");
    let log = t.dir.join("log");
    let out = bb(&t, ["--log", &s(&log), "echo", "ran"]).run();
    assert_fails_with_one_line(&out, 125, "--log");
    assert!(out.stdout.is_empty(), "the command ran:\n{out:?}");
}

// ---- --id, --root -----------------------------------------------------------------------

#[test]
fn an_id_in_use_is_refused_and_free_again_after_exit() {
    let t = Test::new("id_in_use");
    let root = t.dir.join("state");
    let pid_file = t.dir.join("pid");
    let first = bb(
        &t,
        [
            "-d",
            "--id",
            "web",
            "--root",
            &s(&root),
            "--pid-file",
            &s(&pid_file),
            "sleep",
            "4202",
        ],
    )
    .run();
    first.assert_success();
    let pid = read_pid_file(&pid_file);
    let _guard = Detached { pid };

    let second = bb(
        &t,
        ["--id", "web", "--root", &s(&root), "echo", "second-ran"],
    )
    .run();
    assert_fails_with_one_line(&second, 125, "'web'");
    assert!(
        second.stderr_text().contains("already running"),
        "the refusal says why:\n{second:?}"
    );
    assert!(
        second.stdout.is_empty(),
        "the second command ran:\n{second:?}"
    );
    // The refusal took nothing from the first: it still runs, its state is intact.
    assert!(is_live(pid), "the first container died");
    assert!(
        root.join("web/state.json").is_file(),
        "the first container's state.json is gone: {:?}",
        dir_names(&root.join("web"))
    );

    send_signal(pid, libc::SIGTERM).unwrap();
    assert!(
        wait_until(QUICK, || !is_live(pid)),
        "SIGTERM did not end it"
    );
    assert!(
        wait_until(QUICK, || !root.join("web").exists()),
        "the state of 'web' stays after it exited"
    );
    bb(
        &t,
        ["--id", "web", "--root", &s(&root), "echo", "third-ran"],
    )
    .run()
    .assert_success()
    .assert_stdout("third-ran\n");
}

#[test]
fn two_runs_without_an_id_do_not_collide() {
    let t = Test::new("default_ids");
    warm_up(&t);
    let root = t.dir.join("state");
    let mut pids = Vec::new();
    let mut guards = Vec::new();
    for i in 0..2 {
        let pid_file = t.dir.join(format!("pid-{i}"));
        bb(
            &t,
            [
                "-d",
                "--root",
                &s(&root),
                "--pid-file",
                &s(&pid_file),
                "sleep",
                "4303",
            ],
        )
        .run()
        .assert_success();
        let pid = read_pid_file(&pid_file);
        pids.push(pid);
        guards.push(Detached { pid });
    }
    let ids = dir_names(&root);
    assert_eq!(ids.len(), 2, "two containers, two state dirs: {ids:?}");
    for id in &ids {
        assert!(
            id.starts_with("busybox"),
            "the default id starts with the image name: {id}"
        );
    }
    for pid in pids {
        send_signal(pid, libc::SIGKILL).unwrap();
    }
    assert!(
        wait_until(QUICK, || dir_names(&root).is_empty()),
        "state left after SIGKILL of the containers: {:?}",
        dir_names(&root)
    );
}

// ---- hooks ------------------------------------------------------------------------------

fn read_json(path: &Path) -> serde_json::Value {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "{} is not JSON ({e}): {:?}",
            path.display(),
            String::from_utf8_lossy(&bytes)
        )
    })
}

#[test]
fn hooks_get_the_oci_state_at_each_stage() {
    let t = Test::new("hooks");
    let vol = user_dir(&t, "vol");
    let v = s(&vol);
    let pid_file = t.dir.join("pid");
    let root = t.dir.join("state");
    // The prestart hook also records the pid namespace of the pid it was given.
    let prestart = format!(
        "prestart:/bin/sh -c 'cat > {v}/prestart.json; \
         pid=$(sed -n \"s/.*\\\"pid\\\":\\([0-9]*\\).*/\\1/p\" {v}/prestart.json); \
         readlink /proc/$pid/ns/pid > {v}/prestart.pidns'"
    );
    let out = bb(
        &t,
        [
            "--id",
            "hooked",
            "--root",
            &s(&root),
            "--pid-file",
            &s(&pid_file),
            "--volume",
            &format!("{v}:/data"),
            "--hook",
            &prestart,
            "--hook",
            &format!("poststart:/bin/sh -c 'cat > {v}/poststart.json'"),
            "--hook",
            &format!("poststop:/bin/sh -c 'cat > {v}/poststop.json'"),
            "sh",
            "-c",
            "cat /data/prestart.json > /dev/null && echo saw-prestart; \
             test -e /data/poststop.json || echo no-poststop-yet",
        ],
    )
    .run();
    out.assert_success()
        .assert_stdout("saw-prestart\nno-poststop-yet\n");
    let pid = read_pid_file(&pid_file);

    let pre = read_json(&vol.join("prestart.json"));
    assert!(
        pre["ociVersion"].as_str().is_some_and(|v| !v.is_empty()),
        "prestart: no ociVersion: {pre}"
    );
    assert_eq!(pre["id"], "hooked", "prestart: {pre}");
    assert_eq!(pre["status"], "created", "prestart: {pre}");
    assert!(
        pre["pid"].as_u64().is_some_and(|p| p > 0),
        "prestart: no pid: {pre}"
    );
    assert_eq!(
        pre["pid"], pid,
        "prestart: the pid is not the pid file's: {pre}"
    );
    // The pid was the container's, in a pid namespace other than the host's.
    let ns = fs::read_to_string(vol.join("prestart.pidns")).unwrap_or_default();
    let host_ns = fs::read_link("/proc/self/ns/pid").unwrap();
    assert!(
        ns.starts_with("pid:["),
        "the prestart hook could not see its pid's namespace: {ns:?}"
    );
    assert_ne!(
        ns.trim(),
        s(&host_ns),
        "the prestart pid is in the host's pid namespace"
    );

    let poststart = read_json(&vol.join("poststart.json"));
    assert_eq!(poststart["status"], "running", "poststart: {poststart}");
    assert_eq!(poststart["pid"], pid, "poststart: {poststart}");
    assert_eq!(poststart["id"], "hooked", "poststart: {poststart}");

    let poststop = read_json(&vol.join("poststop.json"));
    assert_eq!(poststop["status"], "stopped", "poststop: {poststop}");
    assert_eq!(poststop["pid"], pid, "poststop: {poststop}");
    assert_eq!(poststop["id"], "hooked", "poststop: {poststop}");
    assert!(!root.join("hooked").exists(), "state left after exit");
}

#[test]
fn hooks_get_their_arguments_as_given() {
    let t = Test::new("hook_args");
    let vol = user_dir(&t, "vol");
    let out_file = vol.join("args");
    let hook = format!(
        "prestart:/bin/sh -c 'printf \"[%s]\" \"$@\" > {}' hook 'two words' \"double q\" plain",
        s(&out_file)
    );
    bb(&t, ["--hook", &hook, "true"]).run().assert_success();
    assert_eq!(
        fs::read_to_string(&out_file).unwrap_or_default(),
        "[two words][double q][plain]"
    );
}

#[test]
fn a_failing_prestart_hook_stops_the_start() {
    let t = Test::new("hook_fails");
    let vol = user_dir(&t, "vol");
    let root = t.dir.join("state");
    let hook = "prestart:/bin/sh -c 'echo hook-says-no >&2; exit 7'";
    for detach in [false, true] {
        let mut args = vec![];
        if detach {
            args.push("-d".to_string());
        }
        args.extend(
            [
                "--root",
                &s(&root),
                "--volume",
                &format!("{}:/data", s(&vol)),
                "--hook",
                hook,
                "sh",
                "-c",
                "touch /data/command-ran; sleep 4404",
            ]
            .map(String::from),
        );
        let out = bb(&t, &args).run();
        out.assert_code(125);
        let err = out.stderr_text();
        assert!(
            err.contains("hook-says-no"),
            "the hook's stderr is shown (detach: {detach}):\n{out:?}"
        );
        assert!(
            err.contains("binctr: prestart hook") && err.contains("exit code 7"),
            "the error names the prestart hook and its exit code (detach: {detach}):\n{out:?}"
        );
        thread::sleep(Duration::from_millis(300));
        assert!(
            !vol.join("command-ran").exists(),
            "the command ran although the prestart hook failed (detach: {detach})"
        );
        assert_no_process_left(&t, "sleep 4404", "after a failed prestart hook");
        assert!(
            wait_until(QUICK, || dir_names(&root).is_empty()),
            "state left after a failed start (detach: {detach}): {:?}",
            dir_names(&root)
        );
    }
}

#[test]
fn a_hook_that_cannot_be_run_is_an_error() {
    let t = Test::new("hook_missing");
    let out = bb(
        &t,
        ["--hook", "prestart:/no/such/hook-program", "echo", "ran"],
    )
    .run();
    assert_fails_with_one_line(&out, 125, "/no/such/hook-program");
    assert!(out.stdout.is_empty(), "the command ran:\n{out:?}");
}

// ---- the terminal -----------------------------------------------------------------------

#[test]
fn terminal_shell_has_a_pts_tty_and_follows_resizes() {
    let t = Test::new("pty_tty_size");
    warm_up(&t);
    let mut term = PtyRun::start(&t, &["sh"], 30, 100);
    let tty = term.shell("t1", "tty");
    let rest = tty.strip_prefix("/dev/pts/").unwrap_or_else(|| {
        panic!(
            "tty printed {tty:?}, not a /dev/pts path\n{}",
            term.transcript()
        )
    });
    assert!(
        !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()),
        "tty printed {tty:?}\n{}",
        term.transcript()
    );
    let size = term.shell("s1", "stty size");
    assert_eq!(size, "30 100", "the initial size\n{}", term.transcript());
    term.resize(42, 121);
    // The resize travels by signal: give it the time a person takes to type.
    term.pump(Duration::from_millis(200));
    let size = term.shell("s2", "stty size");
    assert_eq!(
        size,
        "42 121",
        "the size after a resize\n{}",
        term.transcript()
    );
    term.send(b"exit\r");
    let status = term.wait_exit(QUICK * 2);
    assert_eq!(status.code(), Some(0), "{}", term.transcript());
}

#[test]
fn terminal_ctrl_c_interrupts_the_foreground_job_not_the_shell() {
    let t = Test::new("pty_ctrl_c");
    warm_up(&t);
    let mut term = PtyRun::start(&t, &["sh"], 24, 80);
    assert_eq!(
        term.shell("r", "echo ready"),
        "ready",
        "{}",
        term.transcript()
    );
    term.send(b"sleep 4505\r");
    let stub = term.pid();
    let mut sleeping = Vec::new();
    assert!(
        wait_until(QUICK, || {
            sleeping = live_descendants_with_argv(stub, "sleep 4505");
            !sleeping.is_empty()
        }),
        "sleep 4505 did not start\n{}",
        term.transcript()
    );
    term.send(b"\x03");
    let sleep_pid = sleeping[0].pid;
    assert!(
        wait_until(QUICK, || !is_live(sleep_pid)),
        "Ctrl-C did not stop sleep 4505\n{}",
        term.transcript()
    );
    // The shell survived it and takes the next command.
    let sum = term.shell("a", "echo alive-$((40+2))");
    assert_eq!(sum, "alive-42", "{}", term.transcript());
    // And Ctrl-C on an empty prompt leaves it alone too.
    term.send(b"\x03");
    assert_eq!(
        term.shell("b", "echo still-here"),
        "still-here",
        "{}",
        term.transcript()
    );
    term.send(b"exit 3\r");
    let status = term.wait_exit(QUICK * 2);
    assert_eq!(
        status.code(),
        Some(3),
        "the shell's exit code is the stub's\n{}",
        term.transcript()
    );
    assert_no_process_left(&t, "sleep 4505", "after the shell exited");
}

#[test]
fn terminal_job_control_ctrl_z_stops_the_job() {
    let t = Test::new("pty_ctrl_z");
    warm_up(&t);
    let mut term = PtyRun::start(&t, &["sh"], 24, 80);
    term.shell("r", "true");
    term.send(b"sleep 4606\r");
    let stub = term.pid();
    let mut sleeping = Vec::new();
    assert!(
        wait_until(QUICK, || {
            sleeping = live_descendants_with_argv(stub, "sleep 4606");
            !sleeping.is_empty()
        }),
        "sleep 4606 did not start\n{}",
        term.transcript()
    );
    let sleep_pid = sleeping[0].pid;
    term.send(b"\x1a");
    assert!(
        wait_until(QUICK, || Proc::read(sleep_pid)
            .is_some_and(|p| p.state == 'T')),
        "Ctrl-Z did not stop the job: {:?}\n{}",
        Proc::read(sleep_pid),
        term.transcript()
    );
    let jobs = term.shell("j", "jobs");
    assert!(
        jobs.contains("Stopped") && jobs.contains("sleep 4606"),
        "jobs shows {jobs:?}\n{}",
        term.transcript()
    );
    term.shell("k", "kill -9 %1");
    assert!(
        wait_until(QUICK, || !is_live(sleep_pid)),
        "kill %1 did not end the job\n{}",
        term.transcript()
    );
    // ash refuses the first exit while it knows of a stopped job.
    term.send(b"exit\r");
    term.pump(Duration::from_millis(200));
    term.send(b"exit\r");
    term.wait_exit(QUICK * 2);
}

#[test]
fn terminal_settings_are_restored_after_exit() {
    let t = Test::new("pty_restore");
    warm_up(&t);
    let mut term = PtyRun::open(&t, 33, 101);
    let before = term.host_settings();
    term.spawn(&t, &["sh"]);
    assert_eq!(term.shell("r", "echo up"), "up", "{}", term.transcript());
    // While it runs, the host terminal is raw: the container's pty does the line
    // editing, echo and signals.
    let raw = Command::new("stty")
        .arg("-a")
        .stdin(Stdio::from(term.slave().try_clone().unwrap()))
        .output()
        .expect("stty -a");
    let raw = String::from_utf8_lossy(&raw.stdout).into_owned();
    for flag in ["-icanon", "-echo ", "-isig"] {
        assert!(
            raw.contains(flag),
            "the host terminal is not raw ({flag}) while the container runs: {raw}"
        );
    }
    term.send(b"exit 5\r");
    let status = term.wait_exit(QUICK * 2);
    assert_eq!(status.code(), Some(5), "{}", term.transcript());
    let after = term.host_settings();
    assert_eq!(
        after, before,
        "the host terminal's settings (stty -g, stty size) changed"
    );
}

#[test]
fn terminal_settings_are_restored_when_the_stub_is_killed_by_sigterm() {
    let t = Test::new("pty_restore_sigterm");
    warm_up(&t);
    let mut term = PtyRun::open(&t, 24, 80);
    let before = term.host_settings();
    term.spawn(&t, &["sleep", "4707"]);
    let stub = term.pid();
    assert!(
        wait_until(QUICK, || !live_descendants_with_argv(stub, "sleep 4707")
            .is_empty()),
        "sleep 4707 did not start\n{}",
        term.transcript()
    );
    send_signal(stub, libc::SIGTERM).unwrap();
    let status = term.wait_exit(QUICK);
    assert_eq!(status.code(), Some(143), "{}", term.transcript());
    assert_eq!(
        term.host_settings(),
        before,
        "the host terminal was not restored"
    );
}

#[test]
fn terminal_hangup_ends_the_container() {
    let t = Test::new("pty_hangup");
    warm_up(&t);
    let mut term = PtyRun::start(&t, &["sh"], 24, 80);
    term.shell("r", "true");
    term.send(b"sleep 4808\r");
    let stub = term.pid();
    assert!(
        wait_until(QUICK, || !live_descendants_with_argv(stub, "sleep 4808")
            .is_empty()),
        "sleep 4808 did not start\n{}",
        term.transcript()
    );
    // The terminal goes away (window closed, ssh connection lost): the kernel hangs up
    // the session of the stub. The container must not live on without its terminal.
    term.hang_up();
    let ended = wait_until(Duration::from_secs(10), || term.has_exited());
    assert!(
        ended,
        "the stub (pid {stub}) and its container still run 10 s after the terminal hung up"
    );
    assert_no_process_left(&t, "sleep 4808", "after the terminal hung up");
}

#[test]
fn dash_t_gives_a_pty_even_when_stdin_is_a_pipe() {
    let t = Test::new("dash_t");
    let out = bb(
        &t,
        ["-t", "sh", "-c", "tty; stty size >/dev/null && echo sized"],
    )
    .run();
    out.assert_success();
    let text = out.stdout_text();
    assert!(
        text.starts_with("/dev/pts/"),
        "-t: tty does not print a /dev/pts path:\n{out:?}"
    );
    // Without -t and without a terminal: plain pipes.
    let out = bb(&t, ["tty"]).run();
    out.assert_code(1).assert_stdout("not a tty\n");
}

#[test]
fn console_flag_puts_the_command_on_the_given_pty() {
    let t = Test::new("console");
    warm_up(&t);
    // A terminal the test holds: the stub runs with plain pipes and --console its slave.
    let mut term = PtyRun::open(&t, 20, 70);
    let slave = term.slave_path().to_string();
    let out = bb(
        &t,
        [
            "--console",
            &slave,
            "sh",
            "-c",
            "stty size; [ -t 0 ] && [ -t 1 ] && echo on-a-terminal; echo to-stderr >&2",
        ],
    )
    .run();
    out.assert_success();
    assert!(
        out.stdout.is_empty(),
        "the command's output went to the stub's stdout, not the console:\n{out:?}"
    );
    term.wait_for("20 70", 0, QUICK);
    term.wait_for("on-a-terminal", 0, QUICK);
    term.wait_for("to-stderr", 0, QUICK);
}

// ---- volumes, tmpfs, hostname, network --------------------------------------------------

#[test]
fn rw_volume_writes_reach_the_host_owned_by_the_user() {
    let t = Test::new("volume_rw");
    let vol = user_dir(&t, "vol");
    user_file(&t, "vol/existing", "from-the-host\n");
    bb(
        &t,
        [
            "--volume",
            &format!("{}:/data", s(&vol)),
            "sh",
            "-c",
            "cat /data/existing && echo from-the-container > /data/new && mkdir /data/sub",
        ],
    )
    .run()
    .assert_success()
    .assert_stdout("from-the-host\n");
    assert_eq!(
        fs::read_to_string(vol.join("new")).unwrap_or_default(),
        "from-the-container\n"
    );
    for path in [vol.join("new"), vol.join("sub")] {
        let meta = fs::metadata(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(
            (meta.uid(), meta.gid()),
            (
                t.env.run_uid(),
                t.env.test_user.as_ref().map_or(meta.gid(), |u| u.gid)
            ),
            "{} is not owned by the invoking user",
            path.display()
        );
    }
}

#[test]
fn ro_volume_refuses_writes_but_reads() {
    let t = Test::new("volume_ro");
    let vol = user_dir(&t, "vol");
    user_file(&t, "vol/existing", "readable\n");
    let spec = format!("{}:/data:ro", s(&vol));
    bb(&t, ["--volume", &spec, "cat", "/data/existing"])
        .run()
        .assert_success()
        .assert_stdout("readable\n");
    for script in [
        "echo x > /data/new",
        "echo x >> /data/existing",
        "rm /data/existing",
        "mkdir /data/sub",
    ] {
        let out = bb(&t, ["--volume", &spec, "sh", "-c", script]).run();
        assert!(
            out.code.is_some_and(|c| c != 0),
            "'{script}' succeeded on a read-only volume:\n{out:?}"
        );
    }
    assert_eq!(dir_names(&vol), vec!["existing".to_string()]);
    assert_eq!(
        fs::read_to_string(vol.join("existing")).unwrap(),
        "readable\n"
    );
}

#[test]
fn file_volume_and_relative_host_paths() {
    let t = Test::new("volume_file_relative");
    user_dir(&t, "vol");
    user_file(&t, "vol/in-dir", "in-a-dir\n");
    let file = user_file(&t, "greeting.txt", "hello-file\n");
    // A file on a file, read and written through.
    bb(
        &t,
        [
            "--volume",
            &format!("{}:/etc/greeting", s(&file)),
            "sh",
            "-c",
            "cat /etc/greeting && echo appended >> /etc/greeting",
        ],
    )
    .run()
    .assert_success()
    .assert_stdout("hello-file\n");
    assert_eq!(fs::read_to_string(&file).unwrap(), "hello-file\nappended\n");
    // Relative HOST paths are taken from the current directory.
    host_sh(
        &t,
        r#"cd "$1" && shift && exec "$@""#,
        &[
            &s(&t.dir),
            &s(t.busybox()),
            "--volume",
            "vol:/a",
            "--volume",
            "./greeting.txt:/b:ro",
            "cat",
            "/a/in-dir",
            "/b",
        ],
    )
    .run()
    .assert_success()
    .assert_stdout("in-a-dir\nhello-file\nappended\n");
}

#[test]
fn missing_volume_source_is_an_error_naming_it() {
    let t = Test::new("volume_missing");
    let missing = t.dir.join("no-such-dir-xyz");
    let out = bb(
        &t,
        ["--volume", &format!("{}:/x", s(&missing)), "echo", "ran"],
    )
    .run();
    assert_fails_with_one_line(&out, 125, "no-such-dir-xyz");
    assert!(out.stdout.is_empty(), "the command ran:\n{out:?}");
    // Relative: named too.
    let out = bb(&t, ["--volume", "rel-missing-abc:/x", "echo", "ran"]).run();
    assert_fails_with_one_line(&out, 125, "rel-missing-abc");
}

#[test]
fn tmpfs_is_a_writable_tmpfs_with_its_size() {
    let t = Test::new("tmpfs");
    let out = bb(
        &t,
        [
            "--tmpfs",
            "/scratch:size=1m",
            "sh",
            "-c",
            r#"awk '$2 == "/scratch" { print $3, $4 }' /proc/mounts
               echo written > /scratch/f && cat /scratch/f
               head -c 2000000 /dev/zero > /scratch/big 2>/dev/null && echo over-the-size || echo full"#,
        ],
    )
    .run();
    out.assert_success();
    let text = out.stdout_text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{out:?}");
    assert!(
        lines[0].starts_with("tmpfs ") && lines[0].contains("size=1024k"),
        "/scratch is not a 1 MiB tmpfs:\n{out:?}"
    );
    assert!(
        lines[0].contains("rw"),
        "/scratch is not writable:\n{out:?}"
    );
    assert_eq!(&lines[1..], ["written", "full"], "{out:?}");
}

#[test]
fn hostname_flag_sets_the_hostname() {
    let t = Test::new("hostname_flag");
    bb(
        &t,
        [
            "--hostname",
            "web-1.example",
            "sh",
            "-c",
            "hostname; cat /etc/hostname; echo $HOSTNAME",
        ],
    )
    .run()
    .assert_success()
    .assert_stdout("web-1.example\nweb-1.example\nweb-1.example\n");
    let out = bb(&t, ["--hostname", "bad name!", "true"]).run();
    assert_fails_with_one_line(&out, 125, "bad name!");
}

#[test]
fn net_none_has_only_loopback_and_it_is_up() {
    let t = Test::new("net_none");
    let out = bb(
        &t,
        [
            "--net",
            "none",
            "sh",
            "-c",
            "ls /sys/class/net; ip -o -4 addr show lo; ip -o link show lo; \
             ping -c 1 -W 2 127.0.0.1 >/dev/null && echo ping-ok",
        ],
    )
    .run();
    out.assert_success();
    let text = out.stdout_text();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("lo"), "only lo:\n{out:?}");
    let addr = lines.next().unwrap_or_default();
    assert!(
        addr.contains("inet 127.0.0.1/8"),
        "lo has no 127.0.0.1:\n{out:?}"
    );
    let link = lines.next().unwrap_or_default();
    assert!(link.contains(",UP"), "lo is not up:\n{out:?}");
    assert_eq!(
        lines.next(),
        Some("ping-ok"),
        "127.0.0.1 unreachable:\n{out:?}"
    );
    // The default shares the host's network: the same interfaces as the host.
    let host = dir_names(Path::new("/sys/class/net"));
    let out = bb(&t, ["ls", "/sys/class/net"]).run();
    out.assert_success();
    let inside: Vec<String> = out.stdout_text().lines().map(String::from).collect();
    assert_eq!(inside, host, "--net host: not the host's interfaces");
    let out = bb(&t, ["--net", "bridge", "true"]).run();
    assert_fails_with_one_line(&out, 125, "bridge");
}

// ---- the init ---------------------------------------------------------------------------

#[test]
fn background_child_does_not_keep_the_container_alive() {
    let t = Test::new("init_orphan");
    warm_up(&t);
    let started = Instant::now();
    let out = bb(&t, ["sh", "-c", "sleep 4909 & exec sleep 1"]).run();
    let took = started.elapsed();
    out.assert_success();
    assert!(
        took < QUICK && took >= Duration::from_millis(900),
        "took {took:?} (expected about 1 s):\n{out:?}"
    );
    assert!(
        !out.what.contains("still open"),
        "something outlived the container:\n{out:?}"
    );
    assert_no_process_left(&t, "sleep 4909", "after the container exited");
}

#[test]
fn the_init_reaps_orphaned_zombies() {
    let t = Test::new("init_reaps");
    // The inner shell exits at once; its sleep is orphaned to PID 1 and exits 0.2 s
    // later. An init that does not reap would leave it as a zombie.
    let out = bb(
        &t,
        [
            "sh",
            "-c",
            r#"sh -c 'sleep 0.2 & exit 0'; sleep 1.5
               for f in /proc/[0-9]*/stat; do cat "$f"; echo; done"#,
        ],
    )
    .run();
    out.assert_success();
    let text = out.stdout_text();
    let zombies: Vec<&str> = text
        .lines()
        .filter(|l| {
            l.rfind(')')
                .and_then(|i| l[i + 1..].split_whitespace().next())
                .is_some_and(|state| state == "Z")
        })
        .collect();
    assert!(
        text.lines().count() >= 2,
        "could not list the container's processes:\n{out:?}"
    );
    assert!(zombies.is_empty(), "zombies in the container: {zombies:?}");
}

#[test]
fn sigterm_and_sigint_to_the_stub_reach_a_plain_sleep() {
    for (signal, code, n) in [(libc::SIGTERM, 143, "5010"), (libc::SIGINT, 130, "5011")] {
        let t = Test::new(&format!("init_signal_{signal}"));
        let mut running = bb(&t, ["sleep", n]).spawn();
        running.wait_for_descendant("sleep", QUICK * 4);
        let sent = Instant::now();
        running.signal(signal);
        let out = running.wait();
        out.assert_code(code);
        assert!(sent.elapsed() < QUICK, "took {:?}", sent.elapsed());
        assert_no_process_left(&t, &format!("sleep {n}"), "after the signal");
    }
}

#[test]
fn no_init_makes_the_command_pid_1() {
    let t = Test::new("no_init");
    bb(&t, ["--no-init", "sh", "-c", "echo $$"])
        .run()
        .assert_success()
        .assert_stdout("1\n");
    let out = bb(&t, ["sh", "-c", "echo $$"]).run();
    out.assert_success();
    assert_ne!(
        out.stdout_text(),
        "1\n",
        "without --no-init the command must not be PID 1:\n{out:?}"
    );
    bb(&t, ["--no-init", "sh", "-c", "exit 6"])
        .run()
        .assert_code(6);
}

#[test]
fn sigkill_of_the_stub_kills_the_container() {
    let t = Test::new("stub_sigkill");
    let root = t.dir.join("state");
    let mut running = bb(&t, ["--root", &s(&root), "sleep", "5112"]).spawn();
    let sleep_pid = running.wait_for_descendant("sleep", QUICK * 4);
    running.signal(libc::SIGKILL);
    let out = running.wait();
    assert_eq!(out.signal, Some(libc::SIGKILL), "{out:?}");
    assert!(
        wait_until(QUICK, || !is_live(sleep_pid)),
        "the container's sleep (pid {sleep_pid}) outlived the stub"
    );
    assert_no_process_left(&t, "sleep 5112", "after kill -9 of the stub");
    assert!(
        !out.what.contains("still open"),
        "something outlived the stub:\n{out:?}"
    );
}

// ---- --overlay --------------------------------------------------------------------------

#[test]
fn overlay_dir_keeps_changes_for_the_next_run() {
    let t = Test::new("overlay");
    let ov = s(&t.dir.join("layer"));
    bb(
        &t,
        [
            "--overlay",
            &ov,
            "sh",
            "-c",
            "echo persisted > /root/kept && rm /bin/cal",
        ],
    )
    .run()
    .assert_success();
    bb(
        &t,
        [
            "--overlay",
            &ov,
            "sh",
            "-c",
            "cat /root/kept; test -e /bin/cal && echo cal-back || echo cal-gone",
        ],
    )
    .run()
    .assert_success()
    .assert_stdout("persisted\ncal-gone\n");
    // Without it: the image as packed.
    bb(
        &t,
        [
            "sh",
            "-c",
            "test -e /root/kept && echo kept || echo not-kept; test -e /bin/cal && echo cal",
        ],
    )
    .run()
    .assert_success()
    .assert_stdout("not-kept\ncal\n");
    let rootfs = t.only_rootfs();
    assert!(
        !rootfs.join("root/kept").exists() && rootfs.join("bin/cal").exists(),
        "the changes reached the cached rootfs {}",
        rootfs.display()
    );
    let out = bb(&t, ["--rm", "--overlay", &ov, "true"]).run();
    assert_fails_with_one_line(&out, 125, "--overlay");
}

// ---- systemd ----------------------------------------------------------------------------

#[test]
fn notify_socket_reaches_the_host() {
    let t = Test::new("notify_socket");
    let path = t.dir.join("notify.sock");
    let sock = UnixDatagram::bind(&path).expect("bind the notify socket");
    t.env.give_to_user(&path);
    sock.set_read_timeout(Some(QUICK * 2)).unwrap();
    // busybox has no sd_notify; logger sends one datagram to /dev/log, so point
    // /dev/log at the socket binctr passes in.
    let out = bb(
        &t,
        [
            "sh",
            "-c",
            r#"test -S "$NOTIFY_SOCKET" || { echo "NOTIFY_SOCKET=$NOTIFY_SOCKET is not a socket"; exit 9; }
               ln -s "$NOTIFY_SOCKET" /dev/log && logger -t x READY=1"#,
        ],
    )
    .env("NOTIFY_SOCKET", &path)
    .run();
    out.assert_success();
    let mut buf = [0u8; 512];
    let n = sock
        .recv(&mut buf)
        .unwrap_or_else(|e| panic!("nothing arrived on NOTIFY_SOCKET ({e}):\n{out:?}"));
    let msg = String::from_utf8_lossy(&buf[..n]);
    assert!(msg.contains("READY=1"), "got {msg:?}");
}

#[test]
fn socket_activation_descriptors_pass_through() {
    let t = Test::new("listen_fds");
    let file = user_file(&t, "activated", "passed-descriptor\n");
    // As systemd starts a unit: LISTEN_PID is the started process's pid, fd 3 is open.
    let out = host_sh(
        &t,
        r#"f=$1; shift; LISTEN_PID=$$ LISTEN_FDS=1 exec "$@" 3<"$f""#,
        &[
            &s(&file),
            &s(t.busybox()),
            "sh",
            "-c",
            r#"echo "$LISTEN_FDS $([ "$LISTEN_PID" = $$ ] && echo pid-ok || echo "pid=$LISTEN_PID not $$")"; cat <&3"#,
        ],
    )
    .run();
    out.assert_success()
        .assert_stdout("1 pid-ok\npassed-descriptor\n");
    // Meant for another process: not passed on.
    let out = host_sh(
        &t,
        r#"f=$1; shift; LISTEN_PID=1 LISTEN_FDS=1 exec "$@" 3<"$f""#,
        &[
            &s(&file),
            &s(t.busybox()),
            "sh",
            "-c",
            r#"echo "[$LISTEN_FDS]"; cat <&3 2>/dev/null || echo closed"#,
        ],
    )
    .run();
    out.assert_success().assert_stdout("[]\nclosed\n");
}

#[test]
fn a_first_run_on_a_terminal_shows_progress_only_after_a_second() {
    // The stub draws a progress line on a terminal once extracting has taken a second
    // (by the monotonic clock, redrawn every 100 ms), clears it when done, and draws
    // nothing before (core.rs checks it is silent when stderr is not a terminal). How
    // long an extraction takes depends on the disk, so the test makes the first one slow:
    // it stops the stub for 1.5 s while it extracts the ~170 MB Debian rootfs, and the
    // first update after it goes on is past the delay.
    let t = Test::new("first_run_progress");
    let packed = t.pack(&t.env.fixture("debian-rootfs.tar"), "debian");
    let mut run = PtyRun::open(&t, 24, 100);
    let spawned = Instant::now();
    run.spawn_file(&t, &packed, &["--userns", "single", "/bin/true"]);
    // The extraction has begun once its temp dir's rootfs holds an entry (the progress
    // clock starts before the first entry is read). Before the temp dir shows, the
    // clock has not started: the last time it was not there bounds how long the
    // extraction had run when the stub is stopped.
    let mut not_begun = spawned;
    let mut exited = false;
    let extracting = wait_until(Duration::from_secs(60), || {
        let temps = temp_entries(&t.cache());
        if temps.is_empty() {
            not_begun = Instant::now();
        }
        exited = run.has_exited();
        exited
            || temps.iter().any(|tmp| {
                // Format 1's temp dir has rootfs/, a format 2 layer's root/.
                ["rootfs", "root"].iter().any(|tree| {
                    fs::read_dir(t.cache().join(tmp).join(tree))
                        .is_ok_and(|mut entries| entries.next().is_some())
                })
            })
    });
    assert!(
        extracting && !exited,
        "no extraction began in {} (the stub exited: {exited}): {:?}\n{}",
        t.cache().display(),
        cache_entries(&t.cache()),
        run.transcript()
    );
    // The stub leads the terminal's process group: stop all of it, whichever process
    // extracts.
    let stub = run.pid();
    signal_group(stub, libc::SIGSTOP).expect("SIGSTOP the stub");
    let stopped_after = not_begun.elapsed();
    assert!(
        !temp_entries(&t.cache()).is_empty(),
        "the extraction was over before the stub could be stopped: {:?}\n{}",
        cache_entries(&t.cache()),
        run.transcript()
    );
    // Stopped: what it drew so far is all there is to read.
    run.pump(Duration::from_millis(200));
    if stopped_after < Duration::from_millis(900) {
        assert!(
            find_bytes(run.seen(), b"binctr: extracting").is_none(),
            "a progress line within {stopped_after:?} of the extraction's start\n{}",
            run.transcript()
        );
    }
    thread::sleep(Duration::from_millis(1500));
    signal_group(stub, libc::SIGCONT).expect("SIGCONT the stub");
    let status = run.wait_exit(Duration::from_secs(240));
    let seen = run.seen().to_vec();
    let transcript = run.transcript();
    assert!(status.success(), "the first run failed:\n{transcript}");

    // Drawn: `\rbinctr: extracting <name> [###   ]  42% 70.0/170.0 MiB `.
    let drawn = find_bytes(&seen, b"\rbinctr: extracting ").unwrap_or_else(|| {
        panic!("no progress line during a first run stopped for 1.5 s:\n{transcript}")
    });
    let line_end = find_bytes(&seen[drawn + 1..], b"\r").map_or(seen.len(), |i| drawn + 1 + i);
    assert!(
        seen[drawn..line_end].contains(&b'%'),
        "the progress line shows no percentage:\n{transcript}"
    );
    // Cleared at the end: the line is erased and nothing follows.
    assert!(
        seen.ends_with(b"\r\x1b[2K"),
        "the progress line was not cleared at the end:\n{transcript}"
    );

    // A warm start is quick and draws nothing.
    let mut warm = PtyRun::open(&t, 24, 100);
    warm.spawn_file(&t, &packed, &["--userns", "single", "/bin/true"]);
    let status = warm.wait_exit(Duration::from_secs(60));
    assert!(
        status.success(),
        "the warm start failed:\n{}",
        warm.transcript()
    );
    assert!(
        find_bytes(warm.seen(), b"binctr: extracting").is_none()
            && find_bytes(warm.seen(), b"\x1b[2K").is_none(),
        "a warm start drew a progress line:\n{}",
        warm.transcript()
    );
}

#[test]
fn a_background_job_on_a_terminal_is_not_stopped() {
    // `./img cmd &` from an interactive shell: stdin and stdout are the terminal, but the
    // stub is not in its foreground, so it must not take the terminal (raw mode would
    // stop it with SIGTTOU); it runs with plain stdio and finishes.
    let t = Test::new("background_job");
    warm_up(&t);
    let mut run = PtyRun::open(&t, 24, 80);
    let script = format!(
        "{} sh -c 'sleep 1; echo bg-done' & wait $!; echo status=$?",
        t.busybox().display()
    );
    run.spawn_file(&t, Path::new("/bin/bash"), &["--norc", "-ic", &script]);
    let status = run.wait_exit(Duration::from_secs(30));
    let transcript = run.transcript();
    assert!(status.success(), "bash failed:\n{transcript}");
    assert!(
        transcript.contains("bg-done") && transcript.contains("status=0"),
        "the background container did not run to its end:\n{transcript}"
    );
}
