//! Issue 5, end to end: images with many users, run by a non-root user. Subordinate-id
//! mapping keeps the image's owners and lets the container switch users; without a
//! subordinate range (`--userns single`, or /etc/subuid hiding the user) the fake-root
//! filter makes chown and setuid succeed; `-u` and the image's User; the cache listing
//! and removal of subid-owned files; `--check`; and binctr's headline, a Debian nginx
//! image (scripts/make-nginx-image.sh) run detached and answering HTTP.
//!
//! These tests need root (scripts/test.sh as root): they hide /etc/subuid in a private
//! mount namespace, set `user.max_user_namespaces` in a user namespace of their own, and
//! look at files the test user cannot read. Nothing they do changes the machine for other
//! processes, so they need no serialisation beyond the nginx port.

use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{chown, MetadataExt, PermissionsExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use binctr_tests::{
    assert_fails_with_one_line, cache_entries, find_sha256, is_cache_entry, is_live,
    live_descendants, s, send_signal, wait_until, Cmd, Detached, Output, Proc, Test, User, QUICK,
};

/// The loopback port the nginx image listens on (scripts/make-nginx-image.sh).
const NGINX_PORT: u16 = 18080;

/// The line of the nginx image's index.html (scripts/make-nginx-image.sh).
const NGINX_MARKER: &str = "binctr-nginx-test-page-5f3c1e";

/// www-data in Debian.
const WWW_DATA: u32 = 33;

/// The `USER app` image's user and its supplementary group (see `app_image`).
const APP_UID: u32 = 1000;
const STAFF_GID: u32 = 50;

/// Timeout of one packed-binary run: a first run extracts the 180 MB nginx rootfs.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

const NEEDS_ROOT: &str = "these tests run as root and switch to the test user: run them \
                          through scripts/test.sh as root";

// ---- serialisation ----------------------------------------------------------------------

/// The nginx runs share one port.
static PORT: Mutex<()> = Mutex::new(());

fn port_lock() -> MutexGuard<'static, ()> {
    PORT.lock().unwrap_or_else(|e| e.into_inner())
}

// ---- helpers ----------------------------------------------------------------------------

/// The test user; fails the test when the tests do not run as root.
#[track_caller]
fn test_user(t: &Test) -> &'static User {
    t.env.test_user.as_ref().expect(NEEDS_ROOT)
}

/// A subordinate range: container id N >= 1 is host id `start + N - 1`.
#[derive(Debug, Clone, Copy)]
struct Range {
    start: u32,
    count: u32,
}

impl Range {
    /// The host id of container id `id` (>= 1).
    fn host(&self, id: u32) -> u32 {
        assert!(id >= 1 && id <= self.count, "id {id} outside {self:?}");
        self.start + id - 1
    }
}

/// The test user's range in /etc/subuid or /etc/subgid: the first line naming the user
/// or its uid, as newuidmap reads it.
#[track_caller]
fn subordinate_range(file: &str, user: &User) -> Range {
    let text = fs::read_to_string(file).unwrap_or_else(|e| panic!("read {file}: {e}"));
    text.lines()
        .find_map(|line| {
            let mut parts = line.trim().split(':');
            let who = parts.next()?;
            let start = parts.next()?.parse().ok()?;
            let count = parts.next()?.parse().ok()?;
            (who == user.name || who == user.uid.to_string()).then_some(Range { start, count })
        })
        .unwrap_or_else(|| {
            panic!(
                "{file} grants {} no range (scripts/ensure-test-user.sh adds one)",
                user.name
            )
        })
}

fn subuids(t: &Test) -> Range {
    subordinate_range("/etc/subuid", test_user(t))
}

fn subgids(t: &Test) -> Range {
    subordinate_range("/etc/subgid", test_user(t))
}

/// The nginx image packed once per test binary, readable and runnable by the test user.
fn nginx(t: &Test) -> &'static Path {
    static PACKED: OnceLock<PathBuf> = OnceLock::new();
    PACKED.get_or_init(|| {
        let dir = t.env.base.join("users-shared");
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let out = dir.join("nginx");
        // Format 1: these tests look at its cache entries (tests/layers_run.rs: format 2).
        t.packer()
            .arg(t.env.fixture("nginx.tar"))
            .arg("--flatten")
            .arg("-o")
            .arg(&out)
            .timeout(RUN_TIMEOUT)
            .run()
            .assert_success();
        t.env.give_to_user(&out);
        fs::set_permissions(&out, fs::Permissions::from_mode(0o755)).unwrap();
        out
    })
}

/// The packed nginx image with ARGS, as the test user.
fn nginx_cmd(t: &Test, args: &[&str]) -> Cmd {
    t.cmd(nginx(t))
        .args(args.iter().copied())
        .timeout(RUN_TIMEOUT)
}

/// The packed busybox with ARGS, as the test user.
fn bb(t: &Test, args: &[&str]) -> Cmd {
    t.busybox_cmd(args.iter().copied()).timeout(RUN_TIMEOUT)
}

/// PROGRAM ARGS as the test user in a private mount namespace whose /etc/subuid and
/// /etc/subgid are empty: a machine that grants the user no subordinate range, without
/// touching the real files other processes read.
fn without_subids(t: &Test, program: &Path, args: &[&str]) -> Cmd {
    let user = test_user(t);
    let script = r#"mount --bind /dev/null /etc/subuid && mount --bind /dev/null /etc/subgid &&
        u=$1 g=$2 && shift 2 && exec /usr/bin/setpriv --reuid="$u" --regid="$g" --init-groups -- "$@""#;
    // A machine where the helpers never worked has no held user namespace either
    // (one made earlier by working helpers would spare them): a runtime dir of its own.
    let runtime = t.dir.join("runtime");
    fs::create_dir_all(&runtime).unwrap();
    t.env.give_to_user(&runtime);
    t.cmd(Path::new("/usr/bin/unshare"))
        .as_current_user()
        .env("XDG_RUNTIME_DIR", &runtime)
        .args(["--mount", "--propagation", "private", "--", "/bin/sh", "-c"])
        .args([script, "sh"])
        .arg(user.uid.to_string())
        .arg(user.gid.to_string())
        .arg(program)
        .args(args.iter().copied())
        .timeout(RUN_TIMEOUT)
}

/// PROGRAM ARGS as the test user in a private mount namespace where newuidmap and
/// newgidmap have lost their setuid bit: a range is granted but the helpers fail.
fn with_broken_map_helpers(t: &Test, program: &Path, args: &[&str]) -> Cmd {
    let user = test_user(t);
    let copies = t.dir.join("helpers");
    fs::create_dir_all(&copies).unwrap();
    let script = r#"d=$1 && shift &&
        for h in newuidmap newgidmap; do
            cp /usr/bin/$h "$d/$h" && chmod 0755 "$d/$h" && mount --bind "$d/$h" /usr/bin/$h || exit 1
        done &&
        u=$1 g=$2 && shift 2 && exec /usr/bin/setpriv --reuid="$u" --regid="$g" --init-groups -- "$@""#;
    // A machine where the helpers never worked has no held user namespace either
    // (one made earlier by working helpers would spare them): a runtime dir of its own.
    let runtime = t.dir.join("runtime");
    fs::create_dir_all(&runtime).unwrap();
    t.env.give_to_user(&runtime);
    t.cmd(Path::new("/usr/bin/unshare"))
        .as_current_user()
        .env("XDG_RUNTIME_DIR", &runtime)
        .args(["--mount", "--propagation", "private", "--", "/bin/sh", "-c"])
        .args([script, "sh"])
        .arg(&copies)
        .arg(user.uid.to_string())
        .arg(user.gid.to_string())
        .arg(program)
        .args(args.iter().copied())
        .timeout(RUN_TIMEOUT)
}

/// `ls -ln` lines as (mode, owner, group, name) for the names given.
fn ls_owners(out: &Output) -> Vec<(String, u32, u32, String)> {
    out.stdout_text()
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 9 {
                return None;
            }
            Some((
                f[0].to_string(),
                f[2].parse().ok()?,
                f[3].parse().ok()?,
                f[8..].join(" "),
            ))
        })
        .collect()
}

/// The owner (uid, gid) `ls -ln` shows for `name`; fails the test when it is not listed.
#[track_caller]
fn owner_in(out: &Output, name: &str) -> (u32, u32) {
    ls_owners(out)
        .into_iter()
        .find(|(_, _, _, n)| n == name)
        .map(|(_, u, g, _)| (u, g))
        .unwrap_or_else(|| panic!("'{name}' is not in the listing:\n{out:?}"))
}

/// The extracted rootfs entries (`<sha256>[-<mapping>]`) of the test's cache.
fn rootfs_entries(t: &Test) -> Vec<(String, PathBuf)> {
    cache_entries(&t.cache())
        .into_iter()
        .filter(|(name, path)| is_cache_entry(name) && path.is_dir())
        .collect()
}

/// The one entry of the test's cache for `digest` with a subid (`true`) or single
/// mapping; fails the test unless there is exactly one.
#[track_caller]
fn entry_for(t: &Test, digest: &str, subid: bool) -> PathBuf {
    let found: Vec<PathBuf> = rootfs_entries(t)
        .into_iter()
        .filter(|(name, _)| name.starts_with(digest) && name.contains("-subid-") == subid)
        .map(|(_, path)| path)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one {} entry for {digest} in {}, found {found:?} (all: {:?})",
        if subid { "subid" } else { "single" },
        t.cache().display(),
        cache_entries(&t.cache())
    );
    found.into_iter().next().unwrap()
}

/// The payload digest of a packed file, from its --help.
#[track_caller]
fn digest_of(t: &Test, packed: &Path) -> String {
    let out = t.cmd(packed).arg("--help").run();
    out.assert_success();
    find_sha256(&out.stdout_text())
        .unwrap_or_else(|| panic!("no sha256:<digest> in --help:\n{out:?}"))
        .to_string()
}

/// Bytes on disk below `path` (as root: every file is readable), hard links once.
fn disk_usage(path: &Path) -> u64 {
    let mut seen = std::collections::HashSet::new();
    let mut total = 0;
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(meta) = fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.nlink() > 1 && !meta.is_dir() && !seen.insert((meta.dev(), meta.ino())) {
            continue;
        }
        total += meta.blocks() * 512;
        if meta.is_dir() {
            if let Ok(dir) = fs::read_dir(&p) {
                stack.extend(dir.flatten().map(|e| e.path()));
            }
        }
    }
    total
}

const MIB: u64 = 1024 * 1024;

/// The busybox image plus a user `app` (uid 1000, in group staff) whose home is private to
/// it, packed with the pack-time override `--user app`: an image whose config says
/// `USER app`, with a directory the test user cannot remove outside the namespace.
fn app_image(t: &Test) -> PathBuf {
    let rootfs = t.dir.join("app-rootfs");
    fs::create_dir(&rootfs).unwrap_or_else(|e| panic!("mkdir {}: {e}", rootfs.display()));
    let status = Command::new("tar")
        .arg("-xf")
        .arg(t.env.fixture("busybox.tar"))
        .arg("-C")
        .arg(&rootfs)
        .status()
        .expect("run tar");
    assert!(status.success(), "tar -xf busybox.tar failed: {status}");
    let append = |file: &str, text: &str| {
        let path = rootfs.join(file);
        let mut old = fs::read_to_string(&path).unwrap_or_default();
        if !old.is_empty() && !old.ends_with('\n') {
            old.push('\n');
        }
        fs::write(&path, old + text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    };
    append(
        "etc/passwd",
        &format!("app:x:{APP_UID}:{APP_UID}:app:/home/app:/bin/sh\n"),
    );
    append(
        "etc/group",
        &format!("app:x:{APP_UID}:\nstaff:x:{STAFF_GID}:app\n"),
    );
    let home = rootfs.join("home/app");
    fs::create_dir_all(&home).unwrap();
    fs::write(home.join(".profile"), "echo hello app\n").unwrap();
    for path in [home.join(".profile"), home.clone()] {
        chown(&path, Some(APP_UID), Some(APP_UID)).unwrap();
    }
    fs::set_permissions(&home, fs::Permissions::from_mode(0o700)).unwrap();

    let out = t.dir.join("app");
    t.packer()
        .args(["--user", "app", "--name", "app", "--flatten"])
        .arg(&rootfs)
        .arg("-o")
        .arg(&out)
        .run()
        .assert_success();
    t.env.give_to_user(&out);
    fs::set_permissions(&out, fs::Permissions::from_mode(0o755)).unwrap();
    out
}

// ---- host processes ---------------------------------------------------------------------

/// The id inside the user namespace of `pid` of a host id, through its uid_map/gid_map.
fn id_inside(pid: u32, map: &str, host: u32) -> Option<u32> {
    let text = fs::read_to_string(format!("/proc/{pid}/{map}")).ok()?;
    text.lines().find_map(|line| {
        let f: Vec<u64> = line
            .split_whitespace()
            .filter_map(|n| n.parse().ok())
            .collect();
        let (inside, outside, count) = (*f.first()?, *f.get(1)?, *f.get(2)?);
        let host = u64::from(host);
        (host >= outside && host < outside + count).then(|| (inside + host - outside) as u32)
    })
}

// ---- HTTP -------------------------------------------------------------------------------

fn nginx_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], NGINX_PORT))
}

/// Fails the test unless nothing listens on the nginx port (a leftover nginx, or another
/// program: the test cannot tell its nginx from theirs).
#[track_caller]
fn assert_port_free() {
    if let Err(e) = TcpListener::bind(nginx_addr()) {
        panic!(
            "127.0.0.1:{NGINX_PORT} is busy ({e}): the nginx image listens there; stop what \
             holds it (ss -ltnp 'sport = :{NGINX_PORT}') and run again"
        );
    }
}

/// One HTTP/1.0 GET of `/`: the whole response.
fn http_get() -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&nginx_addr(), Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    stream.write_all(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    Ok(String::from_utf8_lossy(&response).into_owned())
}

fn port_refuses() -> bool {
    matches!(
        TcpStream::connect_timeout(&nginx_addr(), Duration::from_millis(500)),
        Err(e) if e.kind() == ErrorKind::ConnectionRefused
    )
}

/// The host ids nginx's workers should run as.
struct Expected {
    master_uid: u32,
    worker_uid: u32,
    worker_gid: u32,
    /// The id inside the container the workers' uid stands for (33 with subordinate ids;
    /// a single mapping maps only the caller).
    worker_uid_inside: u32,
}

/// `start` runs `./nginx -d --pid-file P --log L nginx -g 'daemon off;'` (as the test
/// user); then: HTTP on the port with the page, workers with the expected ids, SIGTERM
/// to the pid file's pid closes the port and ends every process within a few seconds.
fn nginx_lifecycle(label: &str, start: Cmd, pid_file: &Path, log: &Path, ex: Expected) {
    let log_text = || fs::read_to_string(log).unwrap_or_else(|e| format!("({e})"));
    assert_port_free();
    let out = start.run();
    assert!(
        out.code == Some(0),
        "{label}: the detached start failed:\n{out:?}\nlog: {}",
        log_text()
    );
    let text = fs::read_to_string(pid_file)
        .unwrap_or_else(|e| panic!("{label}: read {}: {e}\n{out:?}", pid_file.display()));
    let pid: u32 = text
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{label}: the pid file holds {text:?}"));
    let _guard = Detached { pid };
    let container = Proc::read(pid).unwrap_or_else(|| {
        panic!(
            "{label}: the pid file's pid {pid} does not run\nlog: {}",
            log_text()
        )
    });
    let monitor = container.ppid;

    // HTTP with the page from the image.
    let mut last = Err(std::io::Error::other("no attempt"));
    let answered = wait_until(Duration::from_secs(15), || {
        last = http_get();
        matches!(&last, Ok(r) if r.contains(NGINX_MARKER))
    });
    assert!(
        answered,
        "{label}: no page with {NGINX_MARKER:?} on 127.0.0.1:{NGINX_PORT}: last answer {last:?}\n\
         processes: {:?}\nlog: {}",
        live_descendants(pid),
        log_text()
    );
    let response = last.unwrap();
    assert!(
        response.starts_with("HTTP/1.1 200 OK") && response.contains("Server: nginx"),
        "{label}: not nginx's 200 answer:\n{response}"
    );

    // The master as the caller (container root), the workers as www-data.
    let mut procs = Vec::new();
    let found = wait_until(QUICK, || {
        procs = live_descendants(pid);
        procs.iter().any(|p| p.argv.starts_with("nginx: worker"))
    });
    assert!(found, "{label}: no nginx worker under {pid}: {procs:?}");
    let master: Vec<&Proc> = procs
        .iter()
        .filter(|p| p.argv.starts_with("nginx: master"))
        .collect();
    let workers: Vec<&Proc> = procs
        .iter()
        .filter(|p| p.argv.starts_with("nginx: worker"))
        .collect();
    assert_eq!(master.len(), 1, "{label}: one nginx master: {procs:?}");
    assert_eq!(
        master[0].uids,
        vec![ex.master_uid; 4],
        "{label}: the master's host uids: {:?}",
        master[0]
    );
    for w in &workers {
        assert_eq!(
            w.ppid, master[0].pid,
            "{label}: a worker not under the master: {w:?}"
        );
        assert_eq!(
            w.uids,
            vec![ex.worker_uid; 4],
            "{label}: the worker's host uids (real, effective, saved, fs): {w:?}"
        );
        assert_eq!(
            w.gids,
            vec![ex.worker_gid; 4],
            "{label}: the worker's host gids: {w:?}"
        );
        assert_eq!(
            id_inside(w.pid, "uid_map", ex.worker_uid),
            Some(ex.worker_uid_inside),
            "{label}: the worker's uid inside the container (uid_map {:?}): {w:?}",
            fs::read_to_string(format!("/proc/{}/uid_map", w.pid))
        );
    }

    // SIGTERM to the pid file's pid: the port closes, everything ends.
    send_signal(pid, libc::SIGTERM).unwrap_or_else(|e| panic!("{label}: kill -TERM {pid}: {e}"));
    let all: Vec<u32> = procs.iter().map(|p| p.pid).chain([pid, monitor]).collect();
    let mut left = Vec::new();
    let ended = wait_until(QUICK, || {
        left = all.iter().copied().filter(|&p| is_live(p)).collect();
        left.is_empty() && port_refuses()
    });
    assert!(
        ended,
        "{label}: {QUICK:?} after SIGTERM to {pid}: still running {:?}, port refuses \
         connections: {}\nlog: {}",
        left.iter()
            .filter_map(|&p| Proc::read(p))
            .collect::<Vec<_>>(),
        port_refuses(),
        log_text()
    );
}

// ---- subordinate ids: the image's owners --------------------------------------------

#[test]
fn subid_mapping_keeps_the_images_owners() {
    let t = Test::new("subid_owners");
    let (uids, gids) = (subuids(&t), subgids(&t));

    let out = nginx_cmd(
        &t,
        &[
            "-D",
            "ls",
            "-ln",
            "/var/www/html",
            "/var/lib/nginx",
            "/var/log/nginx",
        ],
    )
    .run();
    out.assert_success();
    let err = out.stderr_text();
    assert!(
        err.contains("userns: subordinate ids"),
        "-D says the mapping is subordinate ids (auto, with a range in /etc/subuid):\n{out:?}"
    );
    // The image's /dev holds device nodes (mmdebstrap's): skipped, said once.
    assert_eq!(
        err.lines()
            .filter(|l| l.contains("device nodes skipped"))
            .count(),
        1,
        "-D says once how many device nodes the first run skipped:\n{out:?}"
    );
    assert_eq!(
        owner_in(&out, "owned-by-www-data"),
        (WWW_DATA, WWW_DATA),
        "{out:?}"
    );
    assert_eq!(owner_in(&out, "index.html"), (0, 0), "{out:?}");
    assert_eq!(owner_in(&out, "body"), (WWW_DATA, 0), "{out:?}");
    assert_eq!(owner_in(&out, "error.log"), (WWW_DATA, 4), "{out:?}");

    // On the host, the cached file belongs to the subordinate id that stands for 33.
    let digest = digest_of(&t, nginx(&t));
    let entry = entry_for(&t, &digest, true);
    let meta = fs::metadata(entry.join("rootfs/var/www/html/owned-by-www-data")).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid()),
        (uids.host(WWW_DATA), gids.host(WWW_DATA)),
        "the cached www-data file's host owner (subuid {uids:?}, subgid {gids:?})"
    );
    let meta = fs::metadata(entry.join("rootfs/var/www/html/index.html")).unwrap();
    assert_eq!(
        meta.uid(),
        test_user(&t).uid,
        "container root's file belongs to the caller on the host"
    );

    // Modes are kept, setuid and setgid bits included, and the groups with them.
    nginx_cmd(
        &t,
        &["stat", "-c", "%a %u %g %n", "/usr/bin/su", "/usr/bin/chage", "/etc/shadow", "/var/mail"],
    )
    .run()
    .assert_success()
    .assert_stdout("4755 0 0 /usr/bin/su\n2755 0 42 /usr/bin/chage\n640 0 42 /etc/shadow\n2775 0 8 /var/mail\n");

    // --userns subid asks for the same mapping (and the same cache entry).
    let out = nginx_cmd(
        &t,
        &[
            "--userns",
            "subid",
            "stat",
            "-c",
            "%u:%g",
            "/var/www/html/owned-by-www-data",
        ],
    )
    .run();
    out.assert_success().assert_stdout("33:33\n");
    assert_eq!(
        rootfs_entries(&t).len(),
        1,
        "{:?}",
        cache_entries(&t.cache())
    );
}

#[test]
fn subid_mapping_lets_su_and_setpriv_switch_to_www_data() {
    let t = Test::new("subid_su");
    nginx_cmd(&t, &["su", "-s", "/bin/sh", "-c", "id -u", "www-data"])
        .run()
        .assert_success()
        .assert_stdout("33\n");
    nginx_cmd(
        &t,
        &[
            "setpriv",
            "--reuid=33",
            "--regid=33",
            "--clear-groups",
            "sh",
            "-c",
            "id -u; id -g; cat /var/www/html/owned-by-www-data",
        ],
    )
    .run()
    .assert_success()
    .assert_stdout("33\n33\nowned by www-data\n");
    nginx_cmd(
        &t,
        &["-u", "www-data", "sh", "-c", "id -u; id -g; echo $HOME"],
    )
    .run()
    .assert_success()
    .assert_stdout("33\n33\n/var/www\n");
    // www-data cannot read root's private files, as on a real machine.
    let out = nginx_cmd(
        &t,
        &["su", "-s", "/bin/sh", "-c", "cat /etc/shadow", "www-data"],
    )
    .run();
    assert_ne!(out.code, Some(0), "www-data read /etc/shadow:\n{out:?}");
}

#[test]
fn a_file_written_by_uid_33_in_a_volume_belongs_to_the_mapped_subordinate_id() {
    let t = Test::new("subid_volume");
    let (uids, gids) = (subuids(&t), subgids(&t));
    let vol = t.dir.join("vol");
    fs::create_dir(&vol).unwrap();
    t.env.give_to_user(&vol);
    // Writable by www-data inside (which is not the directory's owner).
    fs::set_permissions(&vol, fs::Permissions::from_mode(0o777)).unwrap();

    let volume = format!("{}:/vol", s(&vol));
    nginx_cmd(
        &t,
        &[
            "--volume",
            &volume,
            "su",
            "-s",
            "/bin/sh",
            "-c",
            "echo written > /vol/by-33; id -u",
            "www-data",
        ],
    )
    .run()
    .assert_success()
    .assert_stdout("33\n");
    let meta = fs::metadata(vol.join("by-33")).expect("the file written inside");
    assert_eq!(
        (meta.uid(), meta.gid()),
        (uids.host(WWW_DATA), gids.host(WWW_DATA)),
        "uid 33's file on the host (subuid {uids:?}, subgid {gids:?})"
    );
    assert_eq!(fs::read_to_string(vol.join("by-33")).unwrap(), "written\n");

    // And container root writes as the caller.
    nginx_cmd(&t, &["--volume", &volume, "touch", "/vol/by-root"])
        .run()
        .assert_success();
    let meta = fs::metadata(vol.join("by-root")).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid()),
        (test_user(&t).uid, test_user(&t).gid),
        "container root's file on the host"
    );
}

#[test]
fn a_stale_subid_extraction_is_removed_by_the_next_run_and_by_cache_rm() {
    let t = Test::new("subid_stale");
    let uids = subuids(&t);
    let user = test_user(&t);
    let app = app_image(&t);
    let run = |args: &[&str]| {
        t.cmd(&app)
            .args(args.iter().copied())
            .timeout(RUN_TIMEOUT)
            .run()
    };
    run(&["true"]).assert_success();
    let digest = digest_of(&t, &app);
    let key = entry_for(&t, &digest, true)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    run(&["--cache-rm", "this"]).assert_success();

    // What a run killed halfway through a subid extraction leaves: a temp dir of the
    // user's holding a directory of a subordinate id that the user cannot empty.
    let stale = |pid: u32| -> PathBuf {
        let tmp = t.cache().join(format!(".tmp-{key}.{pid}"));
        let home = tmp.join("rootfs/home/app");
        fs::create_dir_all(&home).unwrap();
        fs::write(home.join(".profile"), "half written").unwrap();
        for dir in [tmp.clone(), tmp.join("rootfs"), tmp.join("rootfs/home")] {
            chown(&dir, Some(user.uid), Some(user.gid)).unwrap();
        }
        for path in [home.join(".profile"), home.clone()] {
            chown(&path, Some(uids.host(APP_UID)), Some(uids.host(APP_UID))).unwrap();
        }
        fs::set_permissions(&home, fs::Permissions::from_mode(0o700)).unwrap();
        tmp
    };
    let tmp = stale(999_999);
    let out = t.cmd(Path::new("/bin/rm")).arg("-rf").arg(&tmp).run();
    assert!(
        out.code != Some(0) && tmp.join("rootfs/home/app").exists(),
        "the test user removed the stale temp dir itself: not a fair test\n{out:?}"
    );

    let out = run(&["-D", "id", "-u"]);
    out.assert_success().assert_stdout(&format!("{APP_UID}\n"));
    assert!(
        !tmp.exists(),
        "the next extraction left the stale {} behind:\n{out:?}",
        tmp.display()
    );

    // --cache-rm removes stale temps too.
    let tmp = stale(999_998);
    run(&["--cache-rm", "all"]).assert_success();
    assert_eq!(
        cache_entries(&t.cache()),
        Vec::<(String, PathBuf)>::new(),
        "--cache-rm all left a stale temp dir ({})",
        tmp.display()
    );
}

#[test]
fn userns_subid_without_a_range_and_bad_userns_values_are_refused() {
    let t = Test::new("userns_refused");
    let out = without_subids(&t, t.busybox(), &["--userns", "subid", "true"]).run();
    // One 'binctr:' line that names what is missing.
    assert_fails_with_one_line(&out, 125, "/etc/subuid");
    let out = bb(&t, &["--userns", "bogus", "true"]).run();
    out.assert_code(125);
    assert!(
        out.stderr_text().contains("bogus"),
        "the error names the value:\n{out:?}"
    );
}

#[test]
fn a_user_outside_the_subordinate_range_is_refused_with_a_hint() {
    let t = Test::new("user_outside_range");
    let uids = subuids(&t);
    let outside = (uids.count + 1).to_string();
    let out = bb(&t, &["-u", &outside, "id", "-u"]).run();
    out.assert_code(125);
    let err = out.stderr_text();
    assert!(
        err.starts_with("binctr: ") && err.contains(&outside) && err.contains("--userns single"),
        "one line naming the user and the way out:\n{out:?}"
    );
    // The way out works: keep-id maps the caller to that uid.
    bb(&t, &["--userns", "single", "-u", &outside, "id", "-u"])
        .run()
        .assert_success()
        .assert_stdout(&format!("{outside}\n"));
    // The range's last id still fits.
    let last = uids.count.to_string();
    bb(&t, &["-u", &last, "id", "-u"])
        .run()
        .assert_success()
        .assert_stdout(&format!("{last}\n"));
}

// ---- a single mapping: fake root ----------------------------------------------------

#[test]
fn single_mapping_fakes_chown_and_no_fake_root_lets_it_fail() {
    let t = Test::new("fake_root");
    let chown = "touch /tmp/x && chown 33:33 /tmp/x && echo chowned && stat -c %u:%g /tmp/x";

    let out = bb(&t, &["--userns", "single", "-D", "sh", "-c", chown]).run();
    out.assert_success().assert_stdout("chowned\n0:0\n");
    assert!(
        out.stderr_text().contains("userns: single mapping"),
        "-D says the mapping is single:\n{out:?}"
    );
    bb(
        &t,
        &["--userns", "single", "--fake-root", "sh", "-c", chown],
    )
    .run()
    .assert_success()
    .assert_stdout("chowned\n0:0\n");

    let out = bb(
        &t,
        &["--userns", "single", "--no-fake-root", "sh", "-c", chown],
    )
    .run();
    assert!(
        out.code.is_some_and(|c| c != 0) && out.stdout.is_empty(),
        "chown 33 must fail with a single mapping and --no-fake-root:\n{out:?}"
    );
    assert!(
        out.stderr_text().contains("Invalid argument"),
        "chown fails with EINVAL (33 is not mapped):\n{out:?}"
    );

    // A machine that grants no subordinate range: auto falls back to single, fake root on.
    let out = without_subids(&t, t.busybox(), &["-D", "sh", "-c", chown]).run();
    out.assert_success().assert_stdout("chowned\n0:0\n");
    let err = out.stderr_text();
    assert!(
        err.contains("no subordinate ids") && err.contains("userns: single mapping"),
        "-D says why there are no subordinate ids and that the mapping is single:\n{out:?}"
    );
}

#[test]
fn single_mapping_fakes_setuid_for_su() {
    let t = Test::new("fake_setuid");
    // su's setgroups/setgid/setuid to www-data succeed without effect.
    nginx_cmd(
        &t,
        &[
            "--userns",
            "single",
            "su",
            "-s",
            "/bin/sh",
            "-c",
            "echo switched",
            "www-data",
        ],
    )
    .run()
    .assert_success()
    .assert_stdout("switched\n");
    let out = nginx_cmd(
        &t,
        &[
            "--userns",
            "single",
            "--no-fake-root",
            "su",
            "-s",
            "/bin/sh",
            "-c",
            "echo switched",
            "www-data",
        ],
    )
    .run();
    assert!(
        out.code.is_some_and(|c| c != 0) && out.stdout.is_empty(),
        "su to www-data must fail with a single mapping and --no-fake-root:\n{out:?}"
    );
}

// ---- -u and the image's User --------------------------------------------------------

#[test]
fn user_flag_1000_runs_as_1000_in_both_modes() {
    let t = Test::new("user_1000");
    for mode in ["auto", "single"] {
        let out = bb(
            &t,
            &[
                "--userns",
                mode,
                "-u",
                "1000",
                "sh",
                "-c",
                "id -u; touch /tmp/f; stat -c %u /tmp/f",
            ],
        )
        .run();
        out.assert_success();
        assert_eq!(
            out.stdout_text(),
            "1000\n1000\n",
            "--userns {mode}:\n{out:?}"
        );
    }
    // Under a single mapping the caller is 1000 inside (keep-id): the host sees the caller.
    let out = bb(&t, &["--userns", "single", "-u", "1000", "-D", "true"]).run();
    out.assert_success();
    assert!(
        out.stderr_text().contains("container 1000:0 is you"),
        "-D says the caller is mapped to 1000:\n{out:?}"
    );
}

#[test]
fn image_with_user_app_runs_as_app_in_both_modes() {
    let t = Test::new("user_app");
    let app = app_image(&t);
    let run = |args: &[&str]| {
        t.cmd(&app)
            .args(args.iter().copied())
            .timeout(RUN_TIMEOUT)
            .run()
    };

    let out = run(&[
        "sh",
        "-c",
        "id -u; id -g; id -G; echo $HOME; cat /home/app/.profile",
    ]);
    out.assert_success();
    assert_eq!(
        out.stdout_text(),
        format!("{APP_UID}\n{APP_UID}\n{APP_UID} {STAFF_GID}\n/home/app\necho hello app\n"),
        "USER app with subordinate ids: uid, gid, supplementary groups, home\n{out:?}"
    );
    let out = run(&[
        "--userns",
        "single",
        "sh",
        "-c",
        "id -u; id -g; echo $HOME; cat /home/app/.profile",
    ]);
    out.assert_success();
    assert_eq!(
        out.stdout_text(),
        format!("{APP_UID}\n{APP_UID}\n/home/app\necho hello app\n"),
        "USER app with a single mapping (keep-id)\n{out:?}"
    );
    // -u overrides the image's user.
    run(&["-u", "root", "id", "-u"])
        .assert_success()
        .assert_stdout("0\n");
    run(&["--userns", "single", "-u", "0", "id", "-u"])
        .assert_success()
        .assert_stdout("0\n");
}

// ---- the cache ----------------------------------------------------------------------

#[test]
fn cache_list_shows_the_images_and_cache_rm_frees_subid_owned_files() {
    let t = Test::new("cache_rm");
    let app = app_image(&t);
    let nginx = nginx(&t);
    let nginx_digest = digest_of(&t, nginx);
    let app_digest = digest_of(&t, &app);

    nginx_cmd(&t, &["true"]).run().assert_success();
    nginx_cmd(&t, &["--userns", "single", "true"])
        .run()
        .assert_success();
    t.cmd(&app).arg("true").run().assert_success();
    let nginx_subid = entry_for(&t, &nginx_digest, true);
    let nginx_single = entry_for(&t, &nginx_digest, false);
    let app_subid = entry_for(&t, &app_digest, true);

    let out = t.cmd(&app).arg("--cache-list").run();
    out.assert_success();
    let text = out.stdout_text();
    let rows: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert!(
        rows.first().is_some_and(|h| h.first() == Some(&"DIGEST")),
        "a header line first:\n{out:?}"
    );
    let row = |digest: &str, ids: &str| -> Vec<&str> {
        rows.iter()
            .find(|r| {
                r.first()
                    .is_some_and(|d| digest.starts_with(d) && d.len() >= 12)
                    && r.contains(&ids)
            })
            .unwrap_or_else(|| panic!("no {ids} row for {digest}:\n{out:?}"))
            .clone()
    };
    let nginx_row = row(&nginx_digest, "subid");
    row(&nginx_digest, "single");
    row(&app_digest, "subid");
    assert!(
        nginx_row.iter().any(|f| f.contains("nginx")),
        "the nginx row names the image: {nginx_row:?}"
    );
    let size: f64 = nginx_row[1].parse().unwrap_or(0.0);
    assert!(
        (nginx_row[2] == "MiB" && size > 100.0) || nginx_row[2] == "GiB",
        "the nginx rootfs is over 100 MiB: {nginx_row:?}"
    );

    // The test user cannot remove a subid entry itself: app's home belongs to 1000 inside.
    let out = t.cmd(Path::new("/bin/rm")).arg("-rf").arg(&app_subid).run();
    assert!(
        out.code.is_some_and(|c| c != 0) && app_subid.join("rootfs/home/app").exists(),
        "plain rm -rf by the test user removed a subid-owned entry:\n{out:?}"
    );

    // --cache-rm this: both mappings of this image, subid-owned files included.
    let before = disk_usage(&t.cache());
    let out = nginx_cmd(&t, &["--cache-rm", "this"]).run();
    out.assert_success();
    assert!(
        !nginx_subid.exists() && !nginx_single.exists(),
        "--cache-rm this left {:?}:\n{out:?}",
        cache_entries(&t.cache())
    );
    assert!(
        app_subid.exists(),
        "--cache-rm this removed another image:\n{out:?}"
    );
    let after = disk_usage(&t.cache());
    assert!(
        before - after > 2 * 150 * MIB,
        "--cache-rm this freed only {} MiB of {} MiB",
        (before - after) / MIB,
        before / MIB
    );

    // --cache-rm all: what rm -rf could not remove.
    let out = t.cmd(&app).args(["--cache-rm", "all"]).run();
    out.assert_success();
    assert_eq!(
        cache_entries(&t.cache()),
        Vec::<(String, PathBuf)>::new(),
        "the cache holds entries after --cache-rm all:\n{out:?}"
    );
    assert!(
        !t.cache().join(".runs").exists(),
        "--cache-rm all left .runs:\n{out:?}"
    );
    let out = t.cmd(&app).arg("--cache-list").run();
    out.assert_success();
    assert_eq!(
        out.stdout_text()
            .lines()
            .filter(|l| !l.starts_with("DIGEST") && !l.starts_with("cache:"))
            .count(),
        0,
        "--cache-list after --cache-rm all:\n{out:?}"
    );
}

// ---- --check --------------------------------------------------------------------------

#[test]
fn check_says_ready_and_names_the_mapping() {
    let t = Test::new("check");
    let (uids, _) = (subuids(&t), subgids(&t));
    let out = bb(&t, &["--check"]).run();
    out.assert_success();
    let text = out.stdout_text();
    let line = |what: &str| -> String {
        text.lines()
            .find(|l| l.trim_start().starts_with(what))
            .unwrap_or_else(|| panic!("no '{what}' line:\n{out:?}"))
            .to_string()
    };
    for what in [
        "kernel",
        "user namespaces",
        "overlayfs",
        "subordinate ids",
        "cache",
        "openat2",
    ] {
        assert!(line(what).contains(" ok "), "'{what}' is ok here:\n{out:?}");
    }
    assert!(
        line("subordinate ids").contains(&uids.start.to_string())
            && line("subordinate ids").contains("newuidmap"),
        "names the range and the helpers:\n{out:?}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("ready: subordinate ids")),
        "says what it will use:\n{out:?}"
    );

    // With no subordinate range: still ready, with a single mapping.
    let out = without_subids(&t, t.busybox(), &["--check"]).run();
    out.assert_success();
    let text = out.stdout_text();
    assert!(
        text.lines().any(|l| l.contains("subordinate ids")
            && l.contains("NO")
            && l.contains("/etc/subuid")),
        "names the missing range:\n{out:?}"
    );
    assert!(
        text.lines().any(|l| l.starts_with("ready: single mapping")),
        "says it will use a single mapping:\n{out:?}"
    );
}

/// PROGRAM ARGS as the test user inside a user namespace of the test's own, which maps
/// every host id to itself (so the test user and its subordinate ids exist there) and
/// whose `user.max_user_namespaces` is `max` (unchanged when `None`). The sysctl is per
/// user namespace and limits the namespaces created below it: inside, the machine looks
/// exactly like one where an administrator set it, and nothing outside changes (no
/// other test, or other program, of this machine loses user namespaces meanwhile).
fn in_own_userns(t: &Test, max: Option<&str>, program: &Path, args: &[&str]) -> Output {
    let user = test_user(t);
    // The shell is exec'd before the parent writes the maps, so it may hold no
    // capabilities in its namespace (exec computes them from the mapped uid); after
    // "go" a second shell is exec'd, with the maps in place, to do the work.
    let wait_for_maps = r#"read -r go || exit 97; exec /bin/sh -c "$BINCTR_TEST_STEP" sh "$@""#;
    let script = r#"
        if [ -n "$1" ]; then echo "$1" > /proc/sys/user/max_user_namespaces || exit 98; fi
        echo "user.max_user_namespaces=$(cat /proc/sys/user/max_user_namespaces)" >&2
        u=$2 g=$3 && shift 3 && exec /usr/bin/setpriv --reuid="$u" --regid="$g" --init-groups -- "$@""#;
    let mut command = Command::new("/usr/bin/timeout");
    command
        .args([
            "30",
            "/bin/sh",
            "-c",
            wait_for_maps,
            "sh",
            max.unwrap_or(""),
        ])
        .arg(user.uid.to_string())
        .arg(user.gid.to_string())
        .arg(program)
        .args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", t.home())
        .env("BINCTR_CACHE", t.cache())
        .env("BINCTR_TEST_STEP", script)
        .current_dir(&t.dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: unshare(2) is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::unshare(libc::CLONE_NEWUSER) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let what = format!(
        "{} {} (as {}, in a user namespace with user.max_user_namespaces={})",
        program.display(),
        args.join(" "),
        user.name,
        max.unwrap_or("unchanged")
    );
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    // The identity mapping, written from outside (root may map any ids); setgroups stays
    // allowed, so setpriv --init-groups works inside.
    for map in ["uid_map", "gid_map"] {
        let path = format!("/proc/{}/{map}", child.id());
        if let Err(e) = fs::write(&path, "0 0 4294967295\n") {
            let _ = child.kill();
            let _ = child.wait();
            panic!("write {path}: {e}");
        }
    }
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin.write_all(b"go\n").expect("write go");
    drop(stdin);
    let out = child.wait_with_output().expect("wait");
    Output {
        what,
        code: out.status.code(),
        signal: out.status.signal(),
        stdout: out.stdout,
        stderr: out.stderr,
    }
}

#[test]
fn check_names_the_sysctl_when_user_namespaces_are_off() {
    let t = Test::new("check_off");
    // The same namespace with the sysctl untouched: --check is happy there.
    let out = in_own_userns(&t, None, t.busybox(), &["--check"]);
    out.assert_success();
    assert!(
        out.stdout_text()
            .lines()
            .any(|l| l.starts_with("ready: subordinate ids")),
        "--check in the test's user namespace, user namespaces on:\n{out:?}"
    );

    let out = in_own_userns(&t, Some("0"), t.busybox(), &["--check"]);
    assert!(
        out.stderr_text().contains("user.max_user_namespaces=0"),
        "the sysctl was not set in the test's namespace:\n{out:?}"
    );
    out.assert_code(125);
    let text = out.stdout_text();
    assert!(
        text.lines().any(|l| l.contains("user namespaces")
            && l.contains("NO")
            && l.contains("user.max_user_namespaces=0")),
        "--check names the sysctl:\n{out:?}"
    );
    assert!(
        text.lines().any(|l| l.starts_with("not ready")),
        "--check says a container cannot start:\n{out:?}"
    );

    // And a container run says why it cannot start, in one line, exit 125.
    let out = in_own_userns(&t, Some("0"), t.busybox(), &["true"]);
    out.assert_code(125);
    let err = out.stderr_text();
    let binctr: Vec<&str> = err.lines().filter(|l| l.starts_with("binctr: ")).collect();
    assert!(
        binctr.len() == 1 && binctr[0].contains("user.max_user_namespaces"),
        "one 'binctr:' line naming the sysctl:\n{out:?}"
    );
}

// ---- nginx, binctr's headline -------------------------------------------------------

#[test]
fn nginx_serves_its_page_with_subordinate_ids_and_stops_on_sigterm() {
    let _p = port_lock();
    let t = Test::new("nginx_subid");
    let user = test_user(&t);
    let (uids, gids) = (subuids(&t), subgids(&t));
    let (pid_file, log) = (t.dir.join("nginx.pid"), t.dir.join("nginx.log"));
    let start = nginx_cmd(
        &t,
        &[
            "-d",
            "--pid-file",
            &s(&pid_file),
            "--log",
            &s(&log),
            "nginx",
            "-g",
            "daemon off;",
        ],
    );
    nginx_lifecycle(
        "subordinate ids",
        start,
        &pid_file,
        &log,
        Expected {
            master_uid: user.uid,
            worker_uid: uids.host(WWW_DATA),
            worker_gid: gids.host(WWW_DATA),
            worker_uid_inside: WWW_DATA,
        },
    );
}

#[test]
fn nginx_serves_its_page_with_a_single_mapping_and_stops_on_sigterm() {
    let _p = port_lock();
    let t = Test::new("nginx_single");
    let user = test_user(&t);
    // Fake root: the workers' switch to www-data succeeds without effect, so they run as
    // the caller on the host (container root inside).
    let expected = || Expected {
        master_uid: user.uid,
        worker_uid: user.uid,
        worker_gid: user.gid,
        worker_uid_inside: 0,
    };
    let (pid_file, log) = (t.dir.join("nginx.pid"), t.dir.join("nginx.log"));
    let args = [
        "-d",
        "--pid-file",
        &s(&pid_file),
        "--log",
        &s(&log),
        "nginx",
        "-g",
        "daemon off;",
    ];

    let mut single = vec!["--userns", "single"];
    single.extend(args);
    nginx_lifecycle(
        "--userns single",
        nginx_cmd(&t, &single),
        &pid_file,
        &log,
        expected(),
    );

    // The same on a machine whose /etc/subuid grants the user nothing (auto).
    let _ = fs::remove_file(&pid_file);
    nginx_lifecycle(
        "no subordinate range",
        without_subids(&t, nginx(&t), &args),
        &pid_file,
        &log,
        expected(),
    );
}

#[test]
fn auto_falls_back_to_a_single_mapping_when_the_helpers_fail() {
    // A range is granted, but newuidmap/newgidmap cannot do their job (here: no setuid
    // bit). `auto` must still start the container, with a single mapping and a warning;
    // `--userns subid` must fail clearly.
    let t = Test::new("helpers_fail");
    let out = with_broken_map_helpers(&t, t.busybox(), &["cat", "/proc/self/uid_map"]).run();
    out.assert_success();
    let err = out.stderr_text();
    assert!(
        err.contains("warning: subordinate ids do not work here") && err.lines().count() == 1,
        "expected one warning line on stderr:\n{out:?}"
    );
    let stdout = out.stdout_text();
    let maps: Vec<&str> = stdout.lines().map(str::trim).collect();
    assert_eq!(maps.len(), 1, "a single mapping has one line:\n{out:?}");
    assert!(
        maps[0].starts_with("0 "),
        "root inside is the caller:\n{out:?}"
    );
    let out = with_broken_map_helpers(&t, t.busybox(), &["--userns", "subid", "true"]).run();
    assert_eq!(out.code, Some(125), "{out:?}");
    assert!(out.stderr_text().contains("newuidmap"), "{out:?}");
}

#[test]
fn apt_get_install_works_with_and_without_a_subordinate_range() {
    // The issue's promise for package managers: with subordinate ids apt really drops
    // to _apt; under a single mapping the fake-root filter makes that drop a no-op and
    // binctr tells apt to keep root. Needs the Debian mirror (the package registry the
    // machine reaches): a failure to reach it fails here with apt's own words.
    let t = Test::new("apt_install");
    let image = t.pack(&t.env.fixture("debian-rootfs.tar"), "debian");
    let script = "apt-get update -qq && apt-get install -y -qq --no-install-recommends sl \
                  >/dev/null && test -x /usr/games/sl && echo installed";
    for flags in [&[][..], &["--userns", "single"][..]] {
        let out = t
            .cmd(&image)
            .args(flags.iter().copied())
            .args(["sh", "-c", script])
            .timeout(Duration::from_secs(300))
            .run();
        assert!(
            out.code == Some(0) && out.stdout_text().contains("installed"),
            "apt-get install failed with {flags:?}:\n{out:?}"
        );
    }
}
