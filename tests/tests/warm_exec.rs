//! Issue 13, end to end: the held user namespace under subordinate ids (warm starts run
//! no helper; a killed or stale holder is replaced, never trusted; containers sharing it
//! stay apart) and `--exec ID` into a running container.
//!
//! Every test has an XDG_RUNTIME_DIR of its own, so the holder it makes (and the state
//! of the containers it starts) is its own, and kills that holder at the end.

use std::cell::RefCell;
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use binctr_tests::{
    assert_fails_with_one_line, find_descendant, is_live, read_pid_file, s, send_signal,
    wait_until, Cmd, Detached, Output, Proc, PtyRun, Test, QUICK,
};

/// Timeout of one packed-binary run in these tests.
const RUN_TIMEOUT: Duration = Duration::from_secs(30);

// ---- helpers ----------------------------------------------------------------------------

/// The test's own XDG_RUNTIME_DIR (0700, the test user's): where the holder's record and
/// the containers' state go. Remembers every holder it saw, and kills them at the end.
struct Runtime {
    dir: PathBuf,
    uid: u32,
    holders: RefCell<Vec<u32>>,
}

/// One holder record: `binctr-userns/userns-<mapping>.json`.
#[derive(Debug, Clone)]
struct Record {
    path: PathBuf,
    pid: u32,
    dev: u64,
    ino: u64,
}

impl Record {
    /// What `readlink /proc/self/ns/user` prints in the recorded namespace.
    fn ns_link(&self) -> String {
        format!("user:[{}]", self.ino)
    }
}

fn runtime(t: &Test) -> Runtime {
    let dir = t.dir.join("runtime");
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
    t.env.give_to_user(&dir);
    Runtime {
        dir,
        uid: t.env.run_uid(),
        holders: RefCell::new(Vec::new()),
    }
}

impl Runtime {
    fn records_dir(&self) -> PathBuf {
        self.dir.join("binctr-userns")
    }

    /// The default state root of the containers started with this runtime dir.
    fn state_root(&self) -> PathBuf {
        self.dir.join("binctr")
    }

    fn records(&self) -> Vec<Record> {
        let Ok(listing) = fs::read_dir(self.records_dir()) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for entry in listing.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !(name.starts_with("userns-") && name.ends_with(".json")) {
                continue;
            }
            let path = entry.path();
            let text = fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            let value: serde_json::Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{} is not JSON ({e}): {text:?}", path.display()));
            let field = |k: &str| {
                value[k]
                    .as_u64()
                    .unwrap_or_else(|| panic!("{}: no number '{k}' in {text:?}", path.display()))
            };
            let record = Record {
                path: path.clone(),
                pid: u32::try_from(field("pid")).expect("a pid"),
                dev: field("ns_dev"),
                ino: field("ns_ino"),
            };
            self.holders.borrow_mut().push(record.pid);
            out.push(record);
        }
        out
    }

    /// The one record, naming a live holder of the test user (`binctr-userns`, parent 1)
    /// whose user namespace is the recorded one.
    #[track_caller]
    fn holder(&self) -> Record {
        let records = self.records();
        assert_eq!(
            records.len(),
            1,
            "expected one holder record in {}: {records:?}",
            self.records_dir().display()
        );
        let record = records[0].clone();
        let proc = Proc::read(record.pid)
            .unwrap_or_else(|| panic!("the recorded holder {record:?} does not exist"));
        assert!(proc.is_live(), "the holder is not alive: {proc:?}");
        assert_eq!(proc.comm, "binctr-userns", "the recorded pid: {proc:?}");
        assert_eq!(proc.uid(), Some(self.uid), "the holder's owner: {proc:?}");
        assert_eq!(
            ns_link(record.pid, "user"),
            record.ns_link(),
            "the holder's namespace is the recorded one: {record:?}"
        );
        record
    }

    /// SIGKILLs a holder of ours (never another process) and waits until it is gone.
    fn kill_holder(&self, pid: u32) -> bool {
        let ours = Proc::read(pid)
            .is_some_and(|p| p.is_live() && p.comm == "binctr-userns" && p.uid() == Some(self.uid));
        if ours {
            let _ = send_signal(pid, libc::SIGKILL);
        }
        // Gone means reaped: a zombie holder's namespace is still reachable through it.
        wait_until(QUICK, || {
            Proc::read(pid).is_none_or(|p| p.comm != "binctr-userns")
        })
    }

    /// Kills every holder this test saw; fails the test if one survives.
    #[track_caller]
    fn finish(&self) {
        self.records();
        let pids = self.holders.borrow().clone();
        for pid in pids {
            assert!(self.kill_holder(pid), "the holder {pid} survived SIGKILL");
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        // Best effort when the test failed before finish().
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.records()));
        let pids = self.holders.borrow().clone();
        for pid in pids {
            self.kill_holder(pid);
        }
    }
}

/// `readlink /proc/PID/ns/KIND` on the host (root reads anyone's).
fn ns_link(pid: u32, kind: &str) -> String {
    let path = format!("/proc/{pid}/ns/{kind}");
    fs::read_link(&path)
        .unwrap_or_else(|e| panic!("readlink {path}: {e}"))
        .to_string_lossy()
        .into_owned()
}

/// (st_dev, st_ino) of a process's user namespace.
fn ns_id(pid: u32) -> (u64, u64) {
    let meta = fs::metadata(format!("/proc/{pid}/ns/user")).expect("stat a user namespace");
    (meta.dev(), meta.ino())
}

/// The packed busybox with ARGS, as the test user, with the test's runtime dir.
fn bb<I, S>(t: &Test, rt: &Runtime, args: I) -> Cmd
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    t.busybox_cmd(args)
        .env("XDG_RUNTIME_DIR", &rt.dir)
        .timeout(RUN_TIMEOUT)
}

/// The first line of stdout, trimmed.
fn first_line(out: &Output) -> String {
    out.stdout_text()
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// newuidmap and newgidmap replaced (bind mounts in a private mount namespace, made as
/// root for one run) by wrappers that log each call, then exec a setuid-root copy of
/// the real helper.
struct CountingHelpers {
    dir: PathBuf,
    log: PathBuf,
}

fn counting_helpers(t: &Test) -> CountingHelpers {
    let dir = t.dir.join("helpers");
    fs::create_dir_all(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    let log = dir.join("calls.log");
    fs::write(&log, "").unwrap();
    fs::set_permissions(&log, fs::Permissions::from_mode(0o644)).unwrap();
    t.env.give_to_user(&log);
    for helper in ["newuidmap", "newgidmap"] {
        let real = dir.join(format!("real-{helper}"));
        fs::copy(format!("/usr/bin/{helper}"), &real)
            .unwrap_or_else(|e| panic!("copy /usr/bin/{helper}: {e}"));
        // Root made the copy: it stays root's, and setuid like the original.
        fs::set_permissions(&real, fs::Permissions::from_mode(0o4755)).unwrap();
        let wrapper = dir.join(helper);
        fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\necho \"{helper} $*\" >> '{}'\nexec '{}' \"$@\"\n",
                s(&log),
                s(&real)
            ),
        )
        .unwrap();
        fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).unwrap();
    }
    CountingHelpers { dir, log }
}

impl CountingHelpers {
    /// The packed busybox with ARGS as the test user, the helpers counted.
    fn bb(&self, t: &Test, rt: &Runtime, args: &[&str]) -> Cmd {
        let user = t
            .env
            .test_user
            .as_ref()
            .expect("these tests run as root with BINCTR_TEST_USER");
        let script = r#"d=$1 && shift &&
            for h in newuidmap newgidmap; do
                mount --bind "$d/$h" /usr/bin/$h || exit 1
            done &&
            u=$1 g=$2 && shift 2 && exec /usr/bin/setpriv --reuid="$u" --regid="$g" --init-groups -- "$@""#;
        t.cmd(Path::new("/usr/bin/unshare"))
            .as_current_user()
            .env("XDG_RUNTIME_DIR", &rt.dir)
            .args(["--mount", "--propagation", "private", "--", "/bin/sh", "-c"])
            .args([script, "sh"])
            .arg(&self.dir)
            .arg(user.uid.to_string())
            .arg(user.gid.to_string())
            .arg(t.busybox())
            .args(args.iter().copied())
            .timeout(RUN_TIMEOUT)
    }

    /// (newuidmap calls, newgidmap calls) so far.
    fn calls(&self) -> (usize, usize) {
        let text = fs::read_to_string(&self.log).unwrap();
        let count = |h: &str| text.lines().filter(|l| l.starts_with(h)).count();
        (count("newuidmap "), count("newgidmap "))
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap()
    }
}

/// Fields of /proc/PID/stat after the comm: state, ppid, pgrp, session, ...
fn stat_fields(pid: u32) -> Vec<String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    let after = stat.rsplit_once(") ").expect("stat format").1;
    after.split(' ').map(str::to_string).collect()
}

/// A detached container: `-d --name NAME --pid-file ... EXTRA... COMMAND...`; returns
/// the guard of its PID 1 and the host pid of its `sleep` once it runs.
fn start_detached(
    t: &Test,
    rt: &Runtime,
    name: &str,
    extra: &[&str],
    command: &[&str],
) -> (Detached, u32) {
    let pid_file = t.dir.join(format!("{name}.pid"));
    let mut args = vec!["-d", "--name", name, "--pid-file"];
    let pid_path = s(&pid_file);
    args.push(&pid_path);
    args.extend(extra);
    args.extend(command);
    bb(t, rt, args).run().assert_success();
    let pid = read_pid_file(&pid_file);
    let guard = Detached { pid };
    let mut sleep = None;
    let found = wait_until(QUICK * 2, || {
        sleep = find_descendant(pid, "sleep").filter(|&p| is_live(p));
        sleep.is_some()
    });
    assert!(found, "no sleep runs in container {name} (pid {pid})");
    (guard, sleep.unwrap())
}

/// A line `KEY:\tVALUE` of /proc/PID/status on the host.
fn host_status(pid: u32, key: &str) -> String {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
        .trim()
        .to_string()
}

/// A `KEY:` value in a status dump printed by a container command.
fn status_value(out: &Output, key: &str) -> String {
    out.stdout_text()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key} in the output:\n{out:?}"))
        .trim()
        .to_string()
}

// ---- the held user namespace --------------------------------------------------------

#[test]
fn a_second_start_under_subordinate_ids_runs_no_helper_and_shares_the_user_namespace() {
    let t = Test::new("warm_no_helper");
    let rt = runtime(&t);
    let helpers = counting_helpers(&t);
    let show = [
        "sh",
        "-c",
        "readlink /proc/self/ns/user; cat /proc/self/uid_map",
    ];

    let first = helpers.bb(&t, &rt, &show).run();
    first.assert_success();
    let after_first = helpers.calls();
    // The wrappers do count: the first start maps its namespace with the helpers, once
    // (making the holder is what proves `auto` may use subordinate ids: no trial run).
    assert!(
        after_first.0 >= 1 && after_first.1 >= 1,
        "the first start ran no helper (the wrappers count nothing?): {:?}\n{first:?}",
        helpers.log_text()
    );
    assert_eq!(
        after_first,
        (1, 1),
        "the first start ran the helpers more than once: {:?}\n{first:?}",
        helpers.log_text()
    );
    let maps: Vec<String> = first
        .stdout_text()
        .lines()
        .skip(1)
        .map(String::from)
        .collect();
    assert_eq!(
        maps.len(),
        2,
        "the default mapping is the subordinate one (two lines):\n{first:?}"
    );
    let holder = rt.holder();
    assert_eq!(
        first_line(&first),
        holder.ns_link(),
        "the first container runs in the held namespace:\n{first:?}"
    );

    let second = helpers.bb(&t, &rt, &show).run();
    second.assert_success();
    assert_eq!(
        helpers.calls(),
        after_first,
        "the second start ran a helper: {:?}\n{second:?}",
        helpers.log_text()
    );
    assert_eq!(
        first_line(&second),
        first_line(&first),
        "both containers are in one user namespace:\n{first:?}\n{second:?}"
    );
    assert_eq!(second.stdout_text(), first.stdout_text());
    assert_eq!(rt.holder().pid, holder.pid, "the same holder serves both");

    rt.finish();
}

#[test]
fn the_holder_is_a_bare_binctr_userns_process_that_keeps_nothing_of_the_start() {
    let t = Test::new("warm_holder_ps");
    let rt = runtime(&t);
    bb(&t, &rt, ["-e", "SECRET_TOKEN=hunter2", "true"])
        .run()
        .assert_success();
    let holder = rt.holder();
    // Its own session, parent 1, cwd /, no open files.
    let fields = stat_fields(holder.pid);
    assert_eq!(fields[1], "1", "the holder's parent is 1: {fields:?}");
    assert_eq!(
        fields[3],
        holder.pid.to_string(),
        "the holder leads its own session: {fields:?}"
    );
    assert_eq!(
        fs::read_link(format!("/proc/{}/cwd", holder.pid)).unwrap(),
        Path::new("/")
    );
    let fds: Vec<_> = fs::read_dir(format!("/proc/{}/fd", holder.pid))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(fds.is_empty(), "the holder keeps descriptors open: {fds:?}");
    // What `ps -ef` / `ps aux` show is its argv: not the command line of the start that
    // made it (which may carry secrets, and names a container long gone).
    let argv = Proc::read(holder.pid).map(|p| p.argv).unwrap_or_default();
    assert!(
        !argv.contains("hunter2") && !argv.contains("SECRET_TOKEN"),
        "the holder shows the first start's command line in ps: {argv:?}"
    );
    rt.finish();
}

#[test]
fn the_holder_keeps_no_hold_on_the_packed_file_or_its_filesystem() {
    // A packed file on a filesystem of its own (a USB stick, a scratch mount): once its
    // run is over, the filesystem can be unmounted, and deleting the file frees its
    // blocks, though the holder it made lives on (it runs a few bytes from a memfd).
    let t = Test::new("warm_holder_umount");
    let rt = runtime(&t);
    let stick = t.dir.join("stick");
    fs::create_dir(&stick).unwrap();
    let mount = std::process::Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=64m,mode=0755",
            "binctr-test-stick",
        ])
        .arg(&stick)
        .status()
        .expect("run mount");
    assert!(
        mount.success(),
        "cannot mount a tmpfs on {}",
        stick.display()
    );
    let umount = || {
        std::process::Command::new("umount")
            .arg(&stick)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let packed = stick.join("busybox");
    fs::copy(t.busybox(), &packed).unwrap();
    t.env.give_to_user(&packed);
    let ran = t
        .cmd(&packed)
        .env("XDG_RUNTIME_DIR", &rt.dir)
        .timeout(RUN_TIMEOUT)
        .arg("true")
        .run();
    // The run's own processes (the cleaner of its writable layer) end on their own.
    let unmounted = wait_until(Duration::from_secs(10), umount);
    if !unmounted {
        // Not left mounted: what kept it busy goes first.
        for record in rt.records() {
            rt.kill_holder(record.pid);
        }
        wait_until(Duration::from_secs(10), umount);
    }
    ran.assert_success();
    assert!(
        unmounted,
        "the packed file's filesystem stays busy after its run"
    );
    let holder = rt.holder();
    let exe = fs::read_link(format!("/proc/{}/exe", holder.pid)).unwrap();
    assert!(
        exe.to_string_lossy().starts_with("/memfd:binctr-userns"),
        "the holder runs {}",
        exe.display()
    );
    let maps = fs::read_to_string(format!("/proc/{}/maps", holder.pid)).unwrap();
    assert!(
        !maps.contains(t.dir.to_str().unwrap()),
        "the holder maps a file of the test:\n{maps}"
    );
    rt.finish();
}

#[test]
fn a_killed_holder_is_replaced_by_the_next_start_and_cache_rm_all_stops_it() {
    let t = Test::new("warm_killed");
    let rt = runtime(&t);
    let helpers = counting_helpers(&t);
    let show = ["readlink", "/proc/self/ns/user"];

    helpers.bb(&t, &rt, &show).run().assert_success();
    let old = rt.holder();
    let before = helpers.calls();
    assert!(rt.kill_holder(old.pid), "the holder survived SIGKILL");

    let out = helpers.bb(&t, &rt, &show).run();
    out.assert_success();
    let new = rt.holder();
    assert_ne!(new.pid, old.pid, "the record still names the killed holder");
    assert_eq!(
        first_line(&out),
        new.ns_link(),
        "the container runs in the new holder's namespace:\n{out:?}"
    );
    assert_eq!(
        helpers.calls(),
        (before.0 + 1, before.1 + 1),
        "a new holder is mapped by each helper once: {:?}",
        helpers.log_text()
    );

    // And the new one is joined from then on.
    let again = helpers.bb(&t, &rt, &show).run();
    again.assert_success();
    assert_eq!(first_line(&again), new.ns_link(), "{again:?}");
    assert_eq!(helpers.calls(), (before.0 + 1, before.1 + 1));
    assert_eq!(rt.holder().pid, new.pid);

    // --cache-rm all stops it and removes its record.
    bb(&t, &rt, ["--cache-rm", "all"]).run().assert_success();
    assert!(
        wait_until(QUICK, || !is_live(new.pid)),
        "--cache-rm all left the holder {} running",
        new.pid
    );
    assert!(
        rt.records().iter().all(|r| r.pid != new.pid),
        "--cache-rm all left the record: {:?}",
        rt.records()
    );
    rt.finish();
}

#[test]
fn a_stale_record_naming_another_process_of_the_user_is_not_joined() {
    let t = Test::new("warm_stale");
    let rt = runtime(&t);
    let show = [
        "sh",
        "-c",
        "readlink /proc/self/ns/user; cat /proc/self/uid_map",
    ];
    bb(&t, &rt, show).run().assert_success();
    let old = rt.holder();
    assert!(rt.kill_holder(old.pid), "the holder survived SIGKILL");

    // Processes of the test user the record will name: one on the host's user
    // namespace, one in a user namespace of its own (owned by the user, mapped "0 UID 1").
    let plain = t.cmd(Path::new("/bin/sleep")).arg("4303").spawn();
    let own_ns = t
        .cmd(Path::new("/usr/bin/unshare"))
        .args(["--user", "--map-root-user", "/bin/sleep", "4304"])
        .spawn();
    let host_ns = ns_link(std::process::id(), "user");
    assert!(
        wait_until(QUICK, || Proc::read(plain.pid())
            .is_some_and(|p| p.comm == "sleep" && p.uid() == Some(rt.uid))),
        "sleep did not start as the test user"
    );
    assert!(
        wait_until(QUICK, || {
            Proc::read(own_ns.pid()).is_some_and(|p| p.comm == "sleep")
                && ns_link(own_ns.pid(), "user") != host_ns
        }),
        "unshare --user did not start its sleep"
    );

    let uid_of = |pid: u32| Proc::read(pid).and_then(|p| p.uid());
    for (what, pid, (dev, ino)) in [
        (
            "another process's pid with the old holder's namespace",
            plain.pid(),
            (old.dev, old.ino),
        ),
        (
            "a process on the host's user namespace, with its own",
            plain.pid(),
            ns_id(plain.pid()),
        ),
        (
            "a process in a user namespace of the user's, with its own",
            own_ns.pid(),
            ns_id(own_ns.pid()),
        ),
    ] {
        assert_eq!(
            uid_of(pid),
            Some(rt.uid),
            "{what}: the process is the test user's"
        );
        fs::write(
            &old.path,
            format!("{{\"pid\":{pid},\"ns_dev\":{dev},\"ns_ino\":{ino}}}\n"),
        )
        .unwrap();
        t.env.give_to_user(&old.path);
        let out = bb(&t, &rt, show).run();
        out.assert_success();
        let inside = first_line(&out);
        assert_ne!(
            inside,
            ns_link(pid, "user"),
            "{what}: the container joined that process's user namespace:\n{out:?}"
        );
        let new = rt.holder();
        assert_ne!(new.pid, pid, "{what}: the record still names the stranger");
        assert_eq!(
            inside,
            new.ns_link(),
            "{what}: the container runs in the new holder's namespace:\n{out:?}"
        );
        assert_eq!(
            out.stdout_text().lines().count(),
            3,
            "{what}: the subordinate mapping (two map lines):\n{out:?}"
        );
        assert!(
            is_live(pid),
            "{what}: the process named by the record was harmed"
        );
        assert!(rt.kill_holder(new.pid), "the holder survived SIGKILL");
    }
    drop((plain, own_ns));
    rt.finish();
}

#[test]
fn a_killed_holder_not_yet_reaped_is_not_joined() {
    // A killed holder stays a zombie until its parent reaps it (an init that reaps late,
    // or none): its user namespace is still reachable through /proc/PID/ns/user, but the
    // holder is gone and the next start must make a new one. A subreaper that never
    // reaps stands for that parent, so the zombie stays while the next start runs.
    use std::os::unix::process::CommandExt;
    let t = Test::new("warm_zombie");
    let rt = runtime(&t);
    let user = t.env.test_user.as_ref().expect("BINCTR_TEST_USER");
    let mut command = std::process::Command::new("/bin/sh");
    command
        .args(["-c", "\"$@\" && exec sleep 4305", "sh", "/usr/bin/setpriv"])
        .arg(format!("--reuid={}", user.uid))
        .arg(format!("--regid={}", user.gid))
        .args(["--init-groups", "--"])
        .arg(t.busybox())
        .arg("true")
        .env_clear()
        .envs(bb(&t, &rt, Vec::<String>::new()).vars())
        .current_dir(&t.dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY: prctl is async-signal-safe and touches nothing of the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut reaper = command.spawn().expect("start the subreaper");
    let reaper_pid = reaper.id();
    let started = wait_until(QUICK * 2, || {
        Proc::read(reaper_pid).is_some_and(|p| p.comm == "sleep")
    });
    if !started {
        let _ = reaper.kill();
        let _ = reaper.wait();
        panic!("the first start under the subreaper did not succeed");
    }
    let old = rt.holder();
    let parent = Proc::read(old.pid).map(|p| p.ppid);
    if parent != Some(reaper_pid) {
        let _ = reaper.kill();
        let _ = reaper.wait();
        panic!("the holder's parent is {parent:?}, not the subreaper {reaper_pid}");
    }
    send_signal(old.pid, libc::SIGKILL).unwrap();
    assert!(
        wait_until(QUICK, || Proc::read(old.pid)
            .is_some_and(|p| p.state == 'Z')),
        "the killed holder did not become a zombie"
    );

    let out = bb(&t, &rt, ["readlink", "/proc/self/ns/user"]).run();
    let still_zombie = Proc::read(old.pid).is_some_and(|p| p.state == 'Z');
    let records = rt.records();
    // Let the zombie go (to init, which reaps it) before judging.
    let _ = reaper.kill();
    let _ = reaper.wait();
    out.assert_success();
    assert!(
        still_zombie,
        "the zombie was reaped during the start: the case was not tested"
    );
    assert!(
        records.len() == 1 && records[0].pid != old.pid,
        "the record still names the dead (unreaped) holder {}: {records:?}\n{out:?}",
        old.pid
    );
    let new = rt.holder();
    assert_eq!(
        first_line(&out),
        new.ns_link(),
        "the container runs in the new holder's namespace:\n{out:?}"
    );
    rt.finish();
}

// ---- containers sharing the held namespace stay apart -------------------------------

/// What a container shows of itself, in sections: namespaces, processes (ps and
/// /proc), mounts, files.
const OBSERVE: &str = "echo '== ns'; for n in user pid mnt ipc uts; do echo \"$n $(readlink /proc/self/ns/$n)\"; done; \
    echo '== ps'; ps -o pid,args; \
    echo '== procs'; for c in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $c; echo; done; \
    echo '== mounts'; cat /proc/self/mountinfo; \
    echo '== root'; ls -a /; echo '== mnt'; ls -a /mnt; \
    echo '== shm'; ls -a /dev/shm; echo '== mqueue'; ls -a /dev/mqueue; echo '== end'";

/// The lines of section NAME of an OBSERVE output.
fn section(out: &Output, name: &str) -> Vec<String> {
    let text = out.stdout_text();
    let header = format!("== {name}");
    let mut lines = text.lines().skip_while(|l| *l != header);
    assert!(
        lines.next().is_some(),
        "no section {name} in the output:\n{out:?}"
    );
    lines
        .take_while(|l| !l.starts_with("== "))
        .map(|l| l.trim().to_string())
        .collect()
}

/// The `KIND` namespace an OBSERVE output shows.
fn observed_ns(out: &Output, kind: &str) -> String {
    section(out, "ns")
        .iter()
        .find_map(|l| l.strip_prefix(&format!("{kind} ")).map(String::from))
        .unwrap_or_else(|| panic!("no {kind} namespace in the output:\n{out:?}"))
}

/// Which traces of container X an OBSERVE output shows: its sleep (in ps, in /proc), the
/// tmpfs it mounted, the directory and file it made, its POSIX shm object and message
/// queue.
fn traces_seen(out: &Output, x: &str) -> Vec<(&'static str, bool)> {
    let has =
        |name: &str, wanted: &dyn Fn(&str) -> bool| section(out, name).iter().any(|l| wanted(l));
    let sleep = format!("sleep 44{x}");
    vec![
        (
            "ps",
            has("ps", &|l| {
                l.split_once(' ')
                    .is_some_and(|(_, args)| args.trim() == sleep)
            }),
        ),
        ("/proc", has("procs", &|l| l == sleep)),
        (
            "mountinfo",
            has("mounts", &|l| {
                l.split(' ').nth(4) == Some(&format!("/mnt/{x}mark"))
            }),
        ),
        ("/mnt", has("mnt", &|l| l == format!("{x}mark"))),
        ("/", has("root", &|l| l == format!("{x}-file"))),
        ("/dev/shm", has("shm", &|l| l == format!("{x}-shm"))),
        ("/dev/mqueue", has("mqueue", &|l| l == format!("{x}-queue"))),
    ]
}

#[test]
fn two_containers_of_one_user_share_the_held_namespace_but_see_nothing_of_each_other() {
    let t = Test::new("warm_apart");
    let rt = runtime(&t);
    let mut guards = Vec::new();
    for (name, x) in [("a", "01"), ("b", "02")] {
        let script = format!(
            "mkdir -p /mnt/{x}mark && mount -t tmpfs {x}mark /mnt/{x}mark && \
             echo {x} > /{x}-file && echo {x} > /dev/shm/{x}-shm && \
             touch /dev/mqueue/{x}-queue && exec sleep 44{x}"
        );
        // Mounting inside takes CAP_SYS_ADMIN and no seccomp filter.
        let (guard, sleep) = start_detached(
            &t,
            &rt,
            name,
            &[
                "--cap-add",
                "SYS_ADMIN",
                "--security-opt",
                "seccomp=unconfined",
            ],
            &["sh", "-c", &script],
        );
        assert_eq!(
            Proc::read(sleep).map(|p| p.argv),
            Some(format!("sleep 44{x}")),
            "container {name} did not get to its sleep (a setup step failed)"
        );
        guards.push((guard, sleep));
    }
    let holder = rt.holder();
    let seen_a = bb(&t, &rt, ["--exec", "a", "sh", "-c", OBSERVE]).run();
    seen_a.assert_success();
    let seen_b = bb(&t, &rt, ["--exec", "b", "sh", "-c", OBSERVE]).run();
    seen_b.assert_success();

    for (out, own, other) in [(&seen_a, "01", "02"), (&seen_b, "02", "01")] {
        for (where_, seen) in traces_seen(out, own) {
            assert!(
                seen,
                "the container does not see its own trace in {where_} (the check cannot fail?):\n{out:?}"
            );
        }
        for (where_, seen) in traces_seen(out, other) {
            assert!(
                !seen,
                "one container sees the other's trace in {where_}:\n{out:?}"
            );
        }
        // Nothing of the other's command line (its mount, file and object names) anywhere.
        for word in ["mark", "-file", "-shm", "-queue"] {
            let trace = format!("{other}{word}");
            assert!(
                !out.stdout_text().contains(&trace),
                "one container sees the other's '{trace}':\n{out:?}"
            );
        }
    }
    // Shared: the held user namespace. Their own: pid, mount, ipc and uts.
    assert_eq!(observed_ns(&seen_a, "user"), holder.ns_link(), "{seen_a:?}");
    assert_eq!(observed_ns(&seen_b, "user"), holder.ns_link(), "{seen_b:?}");
    for kind in ["pid", "mnt", "ipc", "uts"] {
        assert_ne!(
            observed_ns(&seen_a, kind),
            observed_ns(&seen_b, kind),
            "the two containers share a {kind} namespace"
        );
    }
    // The host agrees: each sleep is in its own container's namespaces.
    for ((_, sleep), out) in guards.iter().zip([&seen_a, &seen_b]) {
        for kind in ["user", "pid", "mnt", "ipc", "uts"] {
            assert_eq!(ns_link(*sleep, kind), observed_ns(out, kind), "{kind}");
        }
    }
    drop(guards);
    rt.finish();
}

// ---- --exec ------------------------------------------------------------------------------

/// `--exec ID ARGS...` as the test user, with the test's runtime dir (the state root).
fn exec_in(t: &Test, rt: &Runtime, id: &str, args: &[&str]) -> Output {
    let mut all = vec!["--exec", id];
    all.extend(args);
    bb(t, rt, all).run()
}

/// Whether a `ps -o pid,args` output lists a process whose args are exactly `args`.
fn ps_lists(out: &Output, args: &str) -> bool {
    out.stdout_text().lines().any(|l| {
        l.trim()
            .split_once(' ')
            .is_some_and(|(_, rest)| rest.trim() == args)
    })
}

#[test]
fn exec_runs_beside_the_command_with_its_namespaces_settings_and_exit_codes() {
    let t = Test::new("exec_main");
    let rt = runtime(&t);
    let (guard, sleep) = start_detached(
        &t,
        &rt,
        "web",
        &[
            "--hostname",
            "webhost",
            "-e",
            "FROM_RUN=yes",
            "-w",
            "/srv",
            "--cap-add",
            "SYS_ADMIN",
            "--cap-drop",
            "NET_RAW",
        ],
        &["sh", "-c", "echo hi > /tmp/m; exec sleep 4501"],
    );
    let holder = rt.holder();

    // The same pid namespace: ps shows the container's sleep.
    let out = exec_in(&t, &rt, "web", &["ps", "-o", "pid,args"]);
    out.assert_success();
    assert!(
        ps_lists(&out, "sleep 4501"),
        "exec does not see the sleep:\n{out:?}"
    );
    // Every namespace is the container's (the user one: the held namespace).
    let out = exec_in(
        &t,
        &rt,
        "web",
        &[
            "sh",
            "-c",
            "for n in user pid mnt ipc uts net; do readlink /proc/self/ns/$n; done",
        ],
    );
    out.assert_success();
    let links: Vec<String> = out.stdout_text().lines().map(String::from).collect();
    let kinds = ["user", "pid", "mnt", "ipc", "uts", "net"];
    assert_eq!(links.len(), kinds.len(), "{out:?}");
    for (kind, link) in kinds.iter().zip(&links) {
        assert_eq!(
            link,
            &ns_link(sleep, kind),
            "exec's {kind} namespace:\n{out:?}"
        );
    }
    assert_eq!(
        links[0],
        holder.ns_link(),
        "the container runs in the held namespace"
    );

    // The same files and hostname.
    exec_in(&t, &rt, "web", &["cat", "/tmp/m"])
        .assert_success()
        .assert_stdout("hi\n");
    exec_in(&t, &rt, "web", &["hostname"])
        .assert_success()
        .assert_stdout("webhost\n");
    // The container's environment, working dir and user; -e, -w and -u on top.
    exec_in(
        &t,
        &rt,
        "web",
        &["sh", "-c", "echo $FROM_RUN $PWD $(id -u)"],
    )
    .assert_success()
    .assert_stdout("yes /srv 0\n");
    exec_in(
        &t,
        &rt,
        "web",
        &[
            "-e",
            "X=1",
            "-w",
            "/tmp",
            "sh",
            "-c",
            "echo $X $FROM_RUN $PWD",
        ],
    )
    .assert_success()
    .assert_stdout("1 yes /tmp\n");
    exec_in(
        &t,
        &rt,
        "web",
        &["-u", "1234:1235", "sh", "-c", "echo $(id -u) $(id -g)"],
    )
    .assert_success()
    .assert_stdout("1234 1235\n");

    // Exit codes as for a normal run.
    exec_in(&t, &rt, "web", &["sh", "-c", "exit 7"]).assert_code(7);
    let killed = exec_in(&t, &rt, "web", &["sh", "-c", "kill -TERM $$"]);
    killed.assert_code(143);
    let normal = bb(&t, &rt, ["sh", "-c", "kill -TERM $$"]).run();
    assert_eq!(
        killed.code, normal.code,
        "exec and run differ:\n{killed:?}\n{normal:?}"
    );
    let missing = exec_in(&t, &rt, "web", &["nosuchcmd"]);
    assert_fails_with_one_line(&missing, 127, "nosuchcmd");

    // The container's capability set, no_new_privs and seccomp filter.
    let out = exec_in(
        &t,
        &rt,
        "web",
        &[
            "grep",
            "-E",
            "^(CapBnd|NoNewPrivs|Seccomp):",
            "/proc/self/status",
        ],
    );
    out.assert_success();
    let bnd = host_status(sleep, "CapBnd");
    assert_eq!(
        status_value(&out, "CapBnd"),
        bnd,
        "exec's bounding set:\n{out:?}"
    );
    let bits = u64::from_str_radix(&bnd, 16).expect("CapBnd in hex");
    assert!(
        bits & (1 << 21) != 0 && bits & (1 << 13) == 0,
        "the container's set has SYS_ADMIN added and NET_RAW dropped: {bnd}"
    );
    assert_eq!(status_value(&out, "NoNewPrivs"), "1", "{out:?}");
    assert_eq!(status_value(&out, "Seccomp"), "2", "{out:?}");
    assert_eq!(host_status(sleep, "NoNewPrivs"), "1");
    assert_eq!(host_status(sleep, "Seccomp"), "2");

    // -t: a pty of the container's even when stdio are pipes; without, no terminal.
    let out = exec_in(&t, &rt, "web", &["-t", "tty"]);
    out.assert_success();
    assert!(
        out.stdout_text().starts_with("/dev/pts/"),
        "exec -t:\n{out:?}"
    );
    let out = exec_in(&t, &rt, "web", &["tty"]);
    assert_eq!(
        out.code,
        Some(1),
        "exec without a terminal has none:\n{out:?}"
    );

    // SIGTERM to the exec'd stub reaches the command.
    let script = "trap 'echo got-term > /tmp/term; exit 3' TERM; while :; do sleep 0.1; done";
    let mut running = bb(&t, &rt, ["--exec", "web", "sh", "-c", script]).spawn();
    running.wait_for_descendant("sleep", QUICK);
    running.signal(libc::SIGTERM);
    let out = running.wait();
    out.assert_code(3);
    exec_in(&t, &rt, "web", &["cat", "/tmp/term"])
        .assert_success()
        .assert_stdout("got-term\n");
    // Nothing of the exec'd commands is left in the container.
    let out = exec_in(&t, &rt, "web", &["ps", "-o", "pid,args"]);
    assert!(
        !out.stdout_text().contains("sleep 0.1") && !out.stdout_text().contains("trap"),
        "an exec'd command outlived its stub:\n{out:?}"
    );

    // An unknown id, and the container once stopped: 125 and one line.
    assert_fails_with_one_line(&exec_in(&t, &rt, "nosuch", &["true"]), 125, "'nosuch'");
    send_signal(guard.pid, libc::SIGKILL).unwrap();
    assert!(
        wait_until(QUICK, || !is_live(guard.pid)),
        "the container lives on"
    );
    assert_fails_with_one_line(&exec_in(&t, &rt, "web", &["true"]), 125, "'web'");
    drop(guard);
    rt.finish();
}

#[test]
fn exec_on_a_terminal_gets_a_pty_of_the_container() {
    let t = Test::new("exec_pty");
    let rt = runtime(&t);
    let (guard, _sleep) = start_detached(&t, &rt, "web", &[], &["sleep", "4601"]);
    // The exec finds the container through --root (the pty driver sets no
    // XDG_RUNTIME_DIR; exec never looks at the holder).
    let root = s(&rt.state_root());
    let mut term = PtyRun::start(&t, &["--root", &root, "--exec", "web", "sh"], 24, 80);
    let tty = term.shell("t1", "tty");
    assert!(
        tty.starts_with("/dev/pts/"),
        "tty in exec: {tty:?}\n{}",
        term.transcript()
    );
    assert_eq!(
        term.shell("t2", "stty size"),
        "24 80",
        "{}",
        term.transcript()
    );
    let ps = term.shell("t3", "ps -o args");
    assert!(ps.contains("sleep 4601"), "{ps:?}\n{}", term.transcript());
    term.send(b"exit 5\r");
    let status = term.wait_exit(QUICK * 2);
    assert_eq!(status.code(), Some(5), "{}", term.transcript());
    drop(guard);
    rt.finish();
}

#[test]
fn exec_into_a_single_mapping_container_joins_its_own_user_namespace() {
    let t = Test::new("exec_single");
    let rt = runtime(&t);
    let (guard, sleep) = start_detached(
        &t,
        &rt,
        "solo",
        &["--userns", "single"],
        &["sh", "-c", "echo solo > /tmp/m; exec sleep 4701"],
    );
    assert!(
        rt.records().is_empty(),
        "a single mapping made a holder: {:?}",
        rt.records()
    );
    let out = exec_in(
        &t,
        &rt,
        "solo",
        &[
            "sh",
            "-c",
            "readlink /proc/self/ns/user; cat /tmp/m; cat /proc/self/uid_map; echo end-of-map; ps -o pid,args",
        ],
    );
    out.assert_success();
    let lines: Vec<String> = out.stdout_text().lines().map(String::from).collect();
    assert_eq!(
        lines[0],
        ns_link(sleep, "user"),
        "exec's user namespace:\n{out:?}"
    );
    assert_ne!(lines[0], ns_link(std::process::id(), "user"));
    assert_eq!(lines[1], "solo", "{out:?}");
    let map: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(
        map,
        ["0", &rt.uid.to_string(), "1"],
        "the single mapping:\n{out:?}"
    );
    assert_eq!(
        lines[3], "end-of-map",
        "the single mapping has one line:\n{out:?}"
    );
    assert!(ps_lists(&out, "sleep 4701"), "{out:?}");
    exec_in(&t, &rt, "solo", &["sh", "-c", "exit 9"]).assert_code(9);
    let out = exec_in(
        &t,
        &rt,
        "solo",
        &[
            "grep",
            "-E",
            "^(CapBnd|NoNewPrivs|Seccomp):",
            "/proc/self/status",
        ],
    );
    out.assert_success();
    assert_eq!(
        status_value(&out, "CapBnd"),
        host_status(sleep, "CapBnd"),
        "{out:?}"
    );
    assert_eq!(status_value(&out, "NoNewPrivs"), "1", "{out:?}");
    assert_eq!(status_value(&out, "Seccomp"), "2", "{out:?}");
    // One user only: -u another is refused with one line.
    let out = exec_in(&t, &rt, "solo", &["-u", "1234", "id"]);
    assert_fails_with_one_line(&out, 125, "-u");
    drop(guard);
    assert!(
        rt.records().is_empty(),
        "a holder appeared: {:?}",
        rt.records()
    );
    rt.finish();
}
