//! Issue 12, end to end: the stub's flags spelled as `docker run` users type them, run
//! through the packed busybox as the unprivileged test user, each checked by its effect
//! inside the container (/proc/self/mountinfo, /proc/self/limits, /etc/hosts, the
//! capability sets, groups, ids, the terminal) or, for the flags that cannot work
//! rootless, by its one-line refusal and exit code 125.

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use binctr_tests::{
    is_live, read_pid_file, s, send_signal, wait_until, Cmd, Detached, Output, PtyRun, Test, QUICK,
};

/// Timeout of one packed-binary run in these tests.
const RUN_TIMEOUT: Duration = Duration::from_secs(30);

// ---- helpers ----------------------------------------------------------------------------

/// The packed busybox with ARGS, as the test user, with this file's timeout.
fn bb<I, S>(t: &Test, args: I) -> Cmd
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    t.busybox_cmd(args).timeout(RUN_TIMEOUT)
}

/// Runs the packed busybox with ARGS; fails the test unless it exits 0; its stdout.
#[track_caller]
fn stdout_of(t: &Test, args: &[&str]) -> String {
    let out = bb(t, args.iter().copied()).run();
    out.assert_success();
    out.stdout_text()
}

/// A directory under the test's scratch space, owned by the test user, holding `f`.
fn user_dir_with_file(t: &Test, name: &str) -> PathBuf {
    let dir = t.dir.join(name);
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(dir.join("f"), "from the host\n").unwrap();
    t.env.give_to_user(&dir);
    t.env.give_to_user(&dir.join("f"));
    dir
}

/// One line of /proc/self/mountinfo: where, the per-mount options, the filesystem type
/// and its super-block options.
#[derive(Debug)]
struct MountLine {
    point: String,
    options: String,
    fstype: String,
    super_options: String,
}

impl MountLine {
    fn has_option(&self, option: &str) -> bool {
        self.options.split(',').any(|o| o == option)
    }
}

fn parse_mountinfo(text: &str) -> Vec<MountLine> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let left: Vec<&str> = left.split(' ').collect();
            let right: Vec<&str> = right.split(' ').collect();
            Some(MountLine {
                point: left.get(4)?.to_string(),
                options: left.get(5)?.to_string(),
                fstype: right.first()?.to_string(),
                super_options: right.get(2).unwrap_or(&"").to_string(),
            })
        })
        .collect()
}

/// The container's mount table after FLAGS, as /proc/self/mountinfo shows it.
fn mounts_with(t: &Test, flags: &[&str]) -> Vec<MountLine> {
    let mut args = flags.to_vec();
    args.extend(["cat", "/proc/self/mountinfo"]);
    parse_mountinfo(&stdout_of(t, &args))
}

/// The mount that is visible at `point` (the last one mounted there).
#[track_caller]
fn mount_at<'a>(mounts: &'a [MountLine], point: &str) -> &'a MountLine {
    mounts
        .iter()
        .rev()
        .find(|m| m.point == point)
        .unwrap_or_else(|| panic!("nothing is mounted on {point}: {mounts:#?}"))
}

/// The value of `Key:` in the container's /proc/self/status after FLAGS.
fn status_field(t: &Test, flags: &[&str], key: &str) -> String {
    let mut args = flags.to_vec();
    args.extend(["cat", "/proc/self/status"]);
    let status = stdout_of(t, &args);
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no {key}: in /proc/self/status:\n{status}"))
}

/// (soft, hard) of a line of /proc/self/limits, e.g. "Max open files".
#[track_caller]
fn limit(limits: &str, name: &str) -> (String, String) {
    let line = limits
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("no '{name}' in /proc/self/limits:\n{limits}"));
    let fields: Vec<&str> = line[name.len()..].split_whitespace().collect();
    (fields[0].to_string(), fields[1].to_string())
}

/// Exit 125, one line `binctr: ...` naming every one of `mentions`, and the command
/// (`echo ran-anyway`) never ran.
#[track_caller]
fn assert_refused(out: &Output, mentions: &[&str]) {
    out.assert_code(125).assert_one_error_line("binctr: ");
    for m in mentions {
        assert!(
            out.stderr_text().contains(m),
            "the refusal mentions '{m}':\n{out:?}"
        );
    }
    assert!(out.stdout.is_empty(), "the command ran anyway:\n{out:?}");
}

// ---- -i, -t and combined short flags ----------------------------------------------------

#[test]
fn dash_it_and_dash_ti_give_a_pty_even_when_stdin_is_a_pipe() {
    let t = Test::new("dash_it");
    for flags in [&["-it"][..], &["-ti"], &["-i", "-t"], &["--tty=true"]] {
        let mut args = flags.to_vec();
        args.extend(["sh", "-c", "tty"]);
        let out = bb(&t, args).run();
        out.assert_success();
        assert!(
            out.stdout_text().starts_with("/dev/pts/"),
            "{flags:?}: tty does not print a /dev/pts path:\n{out:?}"
        );
    }
    // The same pipes without -t: no terminal.
    bb(&t, ["-i", "tty"])
        .run()
        .assert_code(1)
        .assert_stdout("not a tty\n");
}

#[test]
fn dash_i_alone_on_a_terminal_passes_stdin_but_gives_no_pty() {
    let t = Test::new("dash_i_terminal");
    // On a real terminal the stub would give a pty by default; docker's -i alone does not.
    let mut term = PtyRun::start(&t, &["-i", "sh", "-c", "tty; echo done-$((40+2))"], 24, 80);
    let status = term.wait_exit(RUN_TIMEOUT);
    assert_eq!(status.code(), Some(0), "{}", term.transcript());
    term.wait_for("not a tty", 0, QUICK);
    term.wait_for("done-42", 0, QUICK);
    // The same terminal without -i: a pty of the container's devpts.
    let mut term = PtyRun::start(&t, &["sh", "-c", "tty; echo done-$((40+2))"], 24, 80);
    term.wait_exit(RUN_TIMEOUT);
    term.wait_for("/dev/pts/", 0, QUICK);
    // And stdin reaches the command.
    bb(&t, ["-i", "cat"])
        .stdin("typed\n")
        .run()
        .assert_success()
        .assert_stdout("typed\n");
}

#[test]
fn dash_dit_detaches_and_name_is_the_id_no_second_run_may_take() {
    let t = Test::new("dit_name");
    let root = t.dir.join("state");
    let pid_file = t.dir.join("pid");
    let started = Instant::now();
    let out = bb(
        &t,
        [
            "-dit",
            "--name",
            "web",
            "--root",
            &s(&root),
            "--pid-file",
            &s(&pid_file),
            "sleep",
            "4912",
        ],
    )
    .run();
    out.assert_success();
    assert!(
        started.elapsed() < QUICK,
        "-dit did not return at once ({:?}):\n{out:?}",
        started.elapsed()
    );
    let pid = read_pid_file(&pid_file);
    let guard = Detached { pid };
    assert!(is_live(pid), "the detached container is not running");
    // --name is the container's id: its state is under that name.
    let state: serde_json::Value = serde_json::from_slice(
        &fs::read(root.join("web").join("state.json")).expect("state.json of container 'web'"),
    )
    .expect("state.json is JSON");
    assert_eq!(state["id"], "web", "state.json: {state}");
    assert_eq!(state["pid"], pid, "state.json: {state}");

    // A second container may not take the name while the first runs, in either spelling.
    for name in [&["--name", "web"][..], &["--name=web"], &["--id", "web"]] {
        let mut args = vec!["--root", root.to_str().unwrap()];
        args.extend(name);
        args.extend(["echo", "ran-anyway"]);
        let out = bb(&t, args).run();
        assert_refused(&out, &["'web'", "already running"]);
    }

    // Once it is gone (its monitor has removed its state), the name is free again.
    send_signal(pid, libc::SIGKILL).unwrap();
    assert!(
        wait_until(QUICK, || !is_live(pid)),
        "the container lives on"
    );
    assert!(
        wait_until(QUICK, || !root.join("web").exists()),
        "the state of 'web' outlived the container"
    );
    drop(guard);
    bb(&t, ["--root", &s(&root), "--name", "web", "echo", "second"])
        .run()
        .assert_success()
        .assert_stdout("second\n");
}

#[test]
fn attached_short_values_and_long_flag_equals_value_are_read() {
    let t = Test::new("equals_values");
    let out = stdout_of(
        &t,
        &[
            "-eA=1",
            "--env=B=2=3",
            "--workdir=/tmp",
            "--rm=true",
            "--hostname=eq-host",
            "sh",
            "-c",
            "echo \"$A $B $(pwd) $(hostname)\"",
        ],
    );
    assert_eq!(out, "1 2=3 /tmp eq-host\n");
}

// ---- mounts -----------------------------------------------------------------------------

#[test]
fn dash_v_is_docker_volume_not_the_version() {
    let t = Test::new("dash_v_volume");
    let dir = user_dir_with_file(&t, "vol");
    let rw = format!("{}:/data", s(&dir));
    let ro = format!("{}:/data-ro:ro", s(&dir));
    let mounts = mounts_with(&t, &["-v", &rw, "-v", &ro]);
    assert!(mount_at(&mounts, "/data").has_option("rw"), "{mounts:#?}");
    assert!(
        mount_at(&mounts, "/data-ro").has_option("ro"),
        "{mounts:#?}"
    );
    let out = stdout_of(
        &t,
        &["-v", &rw, "sh", "-c", "cat /data/f; echo new > /data/g"],
    );
    assert_eq!(out, "from the host\n");
    assert_eq!(fs::read_to_string(dir.join("g")).unwrap(), "new\n");
}

#[test]
fn mount_type_bind_readonly_is_read_only_inside() {
    let t = Test::new("mount_bind");
    let dir = user_dir_with_file(&t, "src");
    let ro = format!("type=bind,src={},dst=/data,readonly", s(&dir));
    let rw = format!("type=bind,source={},target=/rw", s(&dir));
    let mounts = mounts_with(&t, &["--mount", &ro, "--mount", &rw]);
    let data = mount_at(&mounts, "/data");
    assert!(data.has_option("ro"), "--mount ... readonly: {data:?}");
    assert!(mount_at(&mounts, "/rw").has_option("rw"), "{mounts:#?}");
    let out = bb(
        &t,
        [
            "--mount",
            &ro,
            "sh",
            "-c",
            "cat /data/f && echo x > /data/written",
        ],
    )
    .run();
    assert_eq!(out.code, Some(1), "a write to the readonly bind:\n{out:?}");
    assert_eq!(out.stdout_text(), "from the host\n", "{out:?}");
    assert!(
        out.stderr_text().contains("Read-only file system"),
        "{out:?}"
    );
    assert!(!dir.join("written").exists(), "the write reached the host");
}

#[test]
fn mount_type_tmpfs_has_the_size_asked_for() {
    let t = Test::new("mount_tmpfs");
    let mounts = mounts_with(&t, &["--mount", "type=tmpfs,dst=/scratch,tmpfs-size=1m"]);
    let scratch = mount_at(&mounts, "/scratch");
    assert_eq!(scratch.fstype, "tmpfs", "{scratch:?}");
    assert!(
        scratch.super_options.split(',').any(|o| o == "size=1024k"),
        "tmpfs-size=1m: {scratch:?}"
    );
    let df = stdout_of(
        &t,
        &[
            "--mount",
            "type=tmpfs,destination=/scratch,tmpfs-size=1m",
            "df",
            "-k",
            "/scratch",
        ],
    );
    let blocks = df.lines().nth(1).and_then(|l| l.split_whitespace().nth(1));
    assert_eq!(blocks, Some("1024"), "df -k /scratch:\n{df}");
}

#[test]
fn shm_size_sets_the_size_of_dev_shm() {
    let t = Test::new("shm_size");
    let df = |flags: &[&str]| {
        let mut args = flags.to_vec();
        args.extend(["df", "-k", "/dev/shm"]);
        let out = stdout_of(&t, &args);
        out.lines()
            .nth(1)
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or_else(|| panic!("df -k /dev/shm:\n{out}"))
            .to_string()
    };
    assert_eq!(df(&["--shm-size", "8m"]), "8192");
    assert_eq!(df(&["--shm-size=16m"]), "16384");
    assert_eq!(df(&[]), "65536", "the default /dev/shm is docker's 64m");
    let out = bb(&t, ["--shm-size", "lots", "echo", "ran-anyway"]).run();
    assert_refused(&out, &["--shm-size"]);
}

#[test]
fn device_is_bound_where_asked_and_writable() {
    let t = Test::new("device");
    let out = stdout_of(
        &t,
        &[
            "--device",
            "/dev/null:/dev/mynull",
            "sh",
            "-c",
            "[ -c /dev/mynull ] && echo data > /dev/mynull && stat -c '%t:%T' /dev/mynull",
        ],
    );
    assert_eq!(out, "1:3\n", "/dev/mynull is the host's /dev/null (1:3)");
    let out = bb(&t, ["--device", "/dev/shm", "echo", "ran-anyway"]).run();
    assert_refused(&out, &["--device /dev/shm", "not a device"]);
    let out = bb(&t, ["--device", "/etc/passwd", "echo", "ran-anyway"]).run();
    assert_refused(&out, &["--device /etc/passwd", "/dev/NAME"]);
}

#[test]
fn device_the_user_may_not_open_is_refused() {
    let t = Test::new("device_denied");
    let user = t
        .env
        .test_user
        .as_ref()
        .expect("this test needs the test user (run as root through scripts/test.sh)");
    // A host device node neither the test user nor its group may read or write.
    let denied = fs::read_dir("/dev")
        .expect("read /dev")
        .flatten()
        .filter_map(|e| Some((e.path(), fs::symlink_metadata(e.path()).ok()?)))
        .find(|(_, m)| {
            let kind = m.file_type();
            let mode = m.mode();
            let as_owner = m.uid() == user.uid && mode & 0o600 != 0;
            let as_group = m.gid() == user.gid && mode & 0o060 != 0;
            let as_other = mode & 0o006 != 0;
            (kind.is_char_device() || kind.is_block_device()) && !(as_owner || as_group || as_other)
        })
        .map(|(p, _)| s(&p))
        .expect("no device in /dev is closed to the test user (e.g. a disk, brw-------)");
    let out = bb(&t, ["--device", &denied, "echo", "ran-anyway"]).run();
    assert_refused(&out, &["--device", &denied, "may not open"]);
}

// ---- limits, hosts, dns, network --------------------------------------------------------

#[test]
fn ulimit_nofile_sets_the_soft_and_hard_limits_inside() {
    let t = Test::new("ulimit");
    let limits = stdout_of(
        &t,
        &["--ulimit", "nofile=100:200", "cat", "/proc/self/limits"],
    );
    assert_eq!(
        limit(&limits, "Max open files"),
        ("100".into(), "200".into())
    );
    let limits = stdout_of(&t, &["--ulimit=nproc=50", "cat", "/proc/self/limits"]);
    assert_eq!(limit(&limits, "Max processes"), ("50".into(), "50".into()));
    // Above the hard limit the user has: refused, in one line, before the command runs.
    let inherited = stdout_of(&t, &["cat", "/proc/self/limits"]);
    let (_, hard) = limit(&inherited, "Max open files");
    let above = hard.parse::<u64>().expect("a numeric hard limit") + 1;
    let out = bb(
        &t,
        [
            "--ulimit",
            &format!("nofile=100:{above}"),
            "echo",
            "ran-anyway",
        ],
    )
    .run();
    assert_refused(
        &out,
        &["--ulimit nofile=100:", "hard limit", &format!("is {hard};")],
    );
}

#[test]
fn add_host_lines_are_appended_to_etc_hosts() {
    let t = Test::new("add_host");
    let before = fs::read("/etc/hosts").expect("the host's /etc/hosts");
    let hosts = stdout_of(
        &t,
        &[
            "--add-host",
            "db:10.0.0.5",
            "--add-host=cache.local:fd00::1",
            "cat",
            "/etc/hosts",
        ],
    );
    let lines: Vec<&str> = hosts.lines().collect();
    assert!(lines.contains(&"10.0.0.5\tdb"), "/etc/hosts:\n{hosts}");
    assert!(
        lines.contains(&"fd00::1\tcache.local"),
        "/etc/hosts:\n{hosts}"
    );
    assert!(
        hosts.as_bytes().starts_with(&before),
        "the host's entries come first:\n{hosts}"
    );
    assert_eq!(
        fs::read("/etc/hosts").unwrap(),
        before,
        "the host's /etc/hosts changed"
    );
    let out = bb(&t, ["--add-host", "no-address", "echo", "ran-anyway"]).run();
    assert_refused(&out, &["--add-host no-address"]);
}

#[test]
fn dns_servers_replace_the_hosts_nameservers() {
    let t = Test::new("dns");
    let resolv = stdout_of(
        &t,
        &[
            "--dns",
            "192.0.2.53",
            "--dns=2001:db8::53",
            "cat",
            "/etc/resolv.conf",
        ],
    );
    let nameservers: Vec<&str> = resolv
        .lines()
        .filter_map(|l| l.strip_prefix("nameserver "))
        .map(str::trim)
        .collect();
    assert_eq!(nameservers, ["192.0.2.53", "2001:db8::53"], "{resolv}");
    let out = bb(&t, ["--dns", "not-an-ip", "echo", "ran-anyway"]).run();
    assert_refused(&out, &["--dns not-an-ip"]);
}

#[test]
fn network_none_leaves_only_loopback_and_network_host_is_the_hosts() {
    let t = Test::new("network_none");
    for flags in [
        &["--network", "none"][..],
        &["--network=none"],
        &["--net", "none"],
    ] {
        let mut args = flags.to_vec();
        args.extend(["ls", "/sys/class/net"]);
        assert_eq!(stdout_of(&t, &args), "lo\n", "{flags:?}");
    }
    let mut host: Vec<String> = fs::read_dir("/sys/class/net")
        .expect("the host's /sys/class/net")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    host.sort();
    let inside = stdout_of(&t, &["--network", "host", "ls", "/sys/class/net"]);
    assert_eq!(inside.lines().collect::<Vec<_>>(), host);
    let out = bb(&t, ["--network", "bridge", "echo", "ran-anyway"]).run();
    assert_refused(&out, &["bridge"]);
}

// ---- privileges, groups, ids ------------------------------------------------------------

#[test]
fn privileged_has_every_capability_no_seccomp_no_masked_paths_and_stays_rootless() {
    let t = Test::new("privileged");
    let last_cap: u32 = String::from_utf8(binctr_tests::host_file("/proc/sys/kernel/cap_last_cap"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let every = format!("{:016x}", (1u64 << (last_cap + 1)) - 1);
    assert_eq!(status_field(&t, &["--privileged"], "CapBnd"), every);
    assert_eq!(status_field(&t, &["--privileged"], "CapEff"), every);
    assert_eq!(status_field(&t, &["--privileged"], "Seccomp"), "0");
    // The default, for contrast: docker's 14 capabilities, the seccomp filter on.
    assert_eq!(status_field(&t, &[], "CapBnd"), "00000000a80425fb");
    assert_eq!(status_field(&t, &[], "Seccomp"), "2");

    // docker's masked paths: there by default, gone with --privileged.
    let masked = [
        "/proc/keys",
        "/proc/timer_list",
        "/sys/firmware",
        "/proc/acpi",
    ];
    let default = mounts_with(&t, &[]);
    for path in masked {
        assert!(
            default.iter().any(|m| m.point == path),
            "{path} is not masked by default: {default:#?}"
        );
    }
    let privileged = mounts_with(&t, &["--privileged"]);
    for path in masked {
        assert!(
            !privileged.iter().any(|m| m.point == path),
            "{path} is still masked with --privileged: {privileged:#?}"
        );
    }
    // Still rootless: the container's root is not the host's.
    let uid_map = stdout_of(&t, &["--privileged", "cat", "/proc/self/uid_map"]);
    let outside: Vec<u32> = uid_map
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1)?.parse().ok())
        .collect();
    assert!(
        !outside.is_empty() && !outside.contains(&0),
        "--privileged mapped the host's root: {uid_map}"
    );
}

#[test]
fn group_add_under_subordinate_ids_adds_the_groups() {
    let t = Test::new("group_add");
    let groups = status_field(
        &t,
        &[
            "--userns",
            "subid",
            "--group-add",
            "1234",
            "--group-add=nogroup",
        ],
        "Groups",
    );
    let groups: Vec<&str> = groups.split_whitespace().collect();
    assert!(
        groups.contains(&"1234") && groups.contains(&"65534"),
        "--group-add 1234 --group-add nogroup: Groups: {groups:?}"
    );
    let id = stdout_of(
        &t,
        &["--userns", "subid", "--group-add", "1234", "id", "-G"],
    );
    assert!(id.split_whitespace().any(|g| g == "1234"), "id -G: {id}");
    let out = bb(
        &t,
        [
            "--userns",
            "subid",
            "--group-add",
            "no-such-group",
            "echo",
            "ran-anyway",
        ],
    )
    .run();
    assert_refused(&out, &["no-such-group"]);
}

#[test]
fn group_add_under_a_single_mapping_is_refused() {
    let t = Test::new("group_add_single");
    let out = bb(
        &t,
        [
            "--userns",
            "single",
            "--group-add",
            "1234",
            "echo",
            "ran-anyway",
        ],
    )
    .run();
    assert_refused(&out, &["--group-add", "subordinate ids"]);
}

#[test]
fn userns_keep_id_runs_as_your_own_uid_and_gid() {
    let t = Test::new("keep_id");
    let (uid, gid) = match &t.env.test_user {
        Some(user) => (user.uid, user.gid),
        // SAFETY: getuid and getgid have no preconditions and cannot fail.
        None => unsafe { (libc::getuid(), libc::getgid()) },
    };
    for flag in [&["--userns", "keep-id"][..], &["--userns=keep-id"]] {
        let mut args = flag.to_vec();
        args.extend(["sh", "-c", "id -u; id -g"]);
        assert_eq!(stdout_of(&t, &args), format!("{uid}\n{gid}\n"), "{flag:?}");
    }
    // Without it the image's user (root) runs.
    assert_eq!(stdout_of(&t, &["id", "-u"]), "0\n");
    let out = bb(&t, ["--userns", "keep-id", "-u", "0", "echo", "ran-anyway"]).run();
    assert_refused(&out, &["keep-id", "-u"]);
}

#[test]
fn userns_host_is_refused_and_auto_accepted() {
    let t = Test::new("userns_spellings");
    let out = bb(&t, ["--userns=host", "echo", "ran-anyway"]).run();
    assert_refused(&out, &["--userns host", "user namespace"]);
    assert_eq!(stdout_of(&t, &["--userns=auto", "id", "-u"]), "0\n");
}

// ---- init, stop timeout, environment ----------------------------------------------------

#[test]
fn init_flag_keeps_binctrs_init_as_pid_1() {
    let t = Test::new("init");
    let pid = stdout_of(&t, &["--init", "sh", "-c", "echo $$"]);
    assert_ne!(pid, "1\n", "with --init the command is not PID 1");
    assert_eq!(stdout_of(&t, &["--no-init", "sh", "-c", "echo $$"]), "1\n");
    let out = bb(&t, ["--init", "--no-init", "echo", "ran-anyway"]).run();
    assert_refused(&out, &["--init", "--no-init"]);
}

#[test]
fn stop_timeout_kills_a_command_that_ignores_sigterm_one_second_later() {
    let t = Test::new("stop_timeout");
    let mut running = bb(
        &t,
        ["--stop-timeout", "1", "sh", "-c", "trap '' TERM; sleep 60"],
    )
    .spawn();
    running.wait_for_descendant("sleep", Duration::from_secs(20));
    let sent = Instant::now();
    running.signal(libc::SIGTERM);
    let out = running.wait();
    let took = sent.elapsed();
    out.assert_code(137);
    assert!(
        took >= Duration::from_millis(900),
        "SIGKILL came {took:?} after SIGTERM, before the 1 s timeout:\n{out:?}"
    );
    assert!(
        took < Duration::from_secs(5),
        "took {took:?} to end after SIGTERM with --stop-timeout 1:\n{out:?}"
    );
}

#[test]
fn without_stop_timeout_a_command_that_ignores_sigterm_keeps_running() {
    let t = Test::new("no_stop_timeout");
    let mut running = bb(&t, ["sh", "-c", "trap '' TERM; sleep 60"]).spawn();
    let sleep = running.wait_for_descendant("sleep", Duration::from_secs(20));
    running.signal(libc::SIGTERM);
    thread::sleep(Duration::from_secs(2));
    assert!(
        is_live(sleep),
        "the command was stopped without --stop-timeout"
    );
    running.signal(libc::SIGKILL);
    let out = running.wait();
    assert_eq!(out.signal, Some(libc::SIGKILL), "{out:?}");
}

#[test]
fn env_host_passes_the_host_environment_and_dash_e_still_wins() {
    let t = Test::new("env_host");
    let script = "echo \"${FROM_HOST:-unset} ${ALSO_HOST:-unset}\"";
    let run = |flags: &[&str]| {
        let mut args = flags.to_vec();
        args.extend(["sh", "-c", script]);
        let out = bb(&t, args)
            .env("FROM_HOST", "host-value")
            .env("ALSO_HOST", "also")
            .run();
        out.assert_success();
        out.stdout_text()
    };
    assert_eq!(run(&["--env-host"]), "host-value also\n");
    assert_eq!(run(&[]), "unset unset\n", "without --env-host");
    assert_eq!(
        run(&["--env-host", "-e", "FROM_HOST=flag"]),
        "flag also\n",
        "-e applies after the host's environment"
    );
}

// ---- refused and unknown flags ----------------------------------------------------------

#[test]
fn flags_that_cannot_work_rootless_are_refused_with_why_and_125() {
    let t = Test::new("refused");
    let cases: [(&[&str], &[&str]); 10] = [
        (
            &["-p", "8080:80"],
            &["-p is not available", "host's network"],
        ),
        (
            &["--publish", "8080:80"],
            &["--publish is not available", "host's network"],
        ),
        (
            &["--publish=8080:80"],
            &["--publish is not available", "host's network"],
        ),
        (&["-P"], &["-P is not available", "host's network"]),
        (
            &["--memory", "1g"],
            &["--memory is not available", "cgroup"],
        ),
        (&["-m", "1g"], &["-m is not available", "cgroup"]),
        (&["--cpus", "2"], &["--cpus is not available", "cgroup"]),
        (
            &["--restart", "always"],
            &["--restart is not available", "daemon"],
        ),
        (&["--pull", "always"], &["--pull is not available"]),
        (
            &["--platform", "linux/arm64"],
            &["--platform is not available"],
        ),
    ];
    for (flags, mentions) in cases {
        let mut args = flags.to_vec();
        args.extend(["echo", "ran-anyway"]);
        let out = bb(&t, args).run();
        assert_refused(&out, mentions);
    }
}

#[test]
fn unknown_flags_are_named_with_the_nearest_known_one() {
    let t = Test::new("unknown_flags");
    let cases = [
        (
            &["--netwrk", "none"][..],
            "unknown flag: --netwrk (did you mean --network?)",
        ),
        (
            &["--netwrk=none"],
            "unknown flag: --netwrk (did you mean --network?)",
        ),
        (
            &["--privilegd"],
            "unknown flag: --privilegd (did you mean --privileged?)",
        ),
        (
            &["--volumes", "/a:/b"],
            "unknown flag: --volumes (did you mean --volume?)",
        ),
    ];
    for (flags, expected) in cases {
        let mut args = flags.to_vec();
        args.extend(["echo", "ran-anyway"]);
        let out = bb(&t, args).run();
        assert_refused(&out, &[expected]);
    }
    let out = bb(&t, ["--completely-unheard-of", "echo", "ran-anyway"]).run();
    assert_refused(&out, &["unknown flag: --completely-unheard-of"]);
    assert!(!out.stderr_text().contains("did you mean"), "{out:?}");
    // A misspelling after the command is the command's own argument.
    assert_eq!(stdout_of(&t, &["echo", "--netwrk"]), "--netwrk\n");
}

/// `--cap-add SYS_ADMIN`, as in docker: the seccomp filter then lets mount, umount and
/// new namespaces through (the capability decides), so a tmpfs can be mounted inside;
/// without it the filter refuses mount, and keyrings stay refused either way.
#[test]
fn cap_add_sys_admin_lets_the_command_mount_as_docker_does() {
    let t = Test::new("cap_sys_admin");
    let script = "mkdir -p /m && if mount -t tmpfs t /m 2>/dev/null; then \
                  grep -q '^t /m tmpfs ' /proc/mounts && echo mounted; umount /m; \
                  else echo refused; fi; \
                  if unshare -m true 2>/dev/null; then echo unshared; else echo no-unshare; fi";
    let with = stdout_of(&t, &["--cap-add", "SYS_ADMIN", "sh", "-c", script]);
    assert_eq!(with, "mounted\nunshared\n", "with --cap-add SYS_ADMIN");
    let without = stdout_of(&t, &["sh", "-c", script]);
    assert_eq!(without, "refused\nno-unshare\n", "without it");
}
