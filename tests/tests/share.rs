//! Issue 14 on one machine, with a launcher's environment set by hand (the real Slurm
//! cluster is tests/tests/slurm.rs): which host variables a rank gets, PMI's descriptor,
//! the PMIx server's directories, runs sharing one container (`--share KEY`, and by
//! default under srun: per job, step and node), the group's end when its last member
//! exits or is killed, signals to a member, and SIGCONT.
//!
//! Every test has an XDG_RUNTIME_DIR of its own, so the state root (`$XDG_RUNTIME_DIR/
//! binctr`) and the held user namespace are its own: each test checks that the state root
//! is empty at its end, and kills what it made (containers left by a failure, holders).
//! Runs that must overlap (to compare namespaces: a namespace's inode number is reused
//! once it is gone) are started by one shell script of the test user, and meet at a
//! barrier of files before any of them exits.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use binctr_tests::{
    assert_fails_with_one_line, assert_no_process_left, find_descendant, is_live, rawtar, s,
    send_signal, wait_until, Cmd, Output, Proc, Test, QUICK,
};

/// Timeout of one packed-binary run (or of one script of runs) in these tests.
const RUN_TIMEOUT: Duration = Duration::from_secs(45);

/// How long a group's container may outlive its last member killed with SIGKILL (the
/// monitor checks once a second).
const GROUP_GONE_WITHIN: Duration = Duration::from_secs(4);

/// The prefixes of the variables a rank gets from the host, one example each.
const LAUNCHER_VARS: [(&str, &str); 12] = [
    ("SLURM_PROCID", "3"),
    ("SLURMD_NODENAME", "nodeA"),
    ("SRUN_DEBUG", "3"),
    ("PMIX_NAMESPACE", "slurm.pmix.4242.0"),
    ("PMI_SIZE", "4"),
    ("OMPI_MCA_btl", "self,vader"),
    ("PRTE_MCA_verbose", "1"),
    ("PRRTE_MCA_plm", "slurm"),
    ("MPIR_CVAR_CH4_NETMOD", "ofi"),
    ("MPICH_ASYNC_PROGRESS", "1"),
    ("HYDRA_DEBUG", "0"),
    ("I_MPI_FABRICS", "shm:ofi"),
];

/// Host variables no launcher prefix covers (near misses included).
const OTHER_VARS: [(&str, &str); 6] = [
    ("FOO", "host"),
    ("MY_TOKEN", "secret"),
    ("SLURMX", "host"),
    ("XSLURM_Y", "host"),
    ("slurm_procid", "host"),
    ("PMIXY", "host"),
];

/// Variables that say a launcher started the run.
const MARKERS: [(&str, &str); 7] = [
    ("SLURM_JOB_ID", "4242"),
    ("SLURM_STEP_ID", "0"),
    ("SLURM_STEPID", "0"),
    ("PMIX_RANK", "0"),
    ("PMI_RANK", "0"),
    ("PMI_FD", "9"),
    ("OMPI_COMM_WORLD_RANK", "0"),
];

// ---- helpers ----------------------------------------------------------------------------

/// The test's own XDG_RUNTIME_DIR (0700, the test user's). At the end (or when the test
/// fails) it kills the containers left in its state root and the holders it made.
struct Runtime {
    dir: PathBuf,
    uid: u32,
}

fn runtime(t: &Test) -> Runtime {
    let dir = t.dir.join("runtime");
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
    t.env.give_to_user(&dir);
    Runtime {
        dir,
        uid: t.env.run_uid(),
    }
}

impl Runtime {
    /// The default state root of the containers started with this runtime dir.
    fn state_root(&self) -> PathBuf {
        self.dir.join("binctr")
    }

    /// The names in the state root, sorted (none when it does not exist).
    fn state_entries(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.state_root())
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// The pid (PID 1 on the host) state.json records for container `id`.
    fn container_pid(&self, id: &str) -> Option<u32> {
        let text = fs::read_to_string(self.state_root().join(id).join("state.json")).ok()?;
        let value: serde_json::Value = serde_json::from_str(&text).ok()?;
        value["pid"].as_u64().and_then(|p| u32::try_from(p).ok())
    }

    /// The monitor exec.json names for container `id`.
    fn monitor_pid(&self, id: &str) -> Option<u32> {
        let text = fs::read_to_string(self.state_root().join(id).join("exec.json")).ok()?;
        let value: serde_json::Value = serde_json::from_str(&text).ok()?;
        value["monitor"]
            .as_u64()
            .and_then(|p| u32::try_from(p).ok())
    }

    /// A live process of the test user, by pid.
    fn ours(&self, pid: u32) -> bool {
        Proc::read(pid).is_some_and(|p| p.is_live() && p.uid() == Some(self.uid))
    }

    /// SIGKILLs the PID 1 of every container left in the state root (their monitors then
    /// remove the state), and every holder of the test's user namespaces.
    fn kill_everything(&self) {
        for name in self.state_entries() {
            if let Some(pid) = self.container_pid(&name).filter(|&p| self.ours(p)) {
                let _ = send_signal(pid, libc::SIGKILL);
                wait_until(QUICK, || !is_live(pid));
            }
        }
        wait_until(QUICK, || {
            self.state_entries()
                .iter()
                .all(|n| n.starts_with(".share-"))
        });
        for pid in self.holders() {
            let holder = Proc::read(pid).is_some_and(|p| {
                p.is_live() && p.comm == "binctr-userns" && p.uid() == Some(self.uid)
            });
            if holder {
                let _ = send_signal(pid, libc::SIGKILL);
                wait_until(QUICK, || {
                    Proc::read(pid).is_none_or(|p| p.comm != "binctr-userns")
                });
            }
        }
    }

    /// The holders recorded in `binctr-userns/userns-*.json`.
    fn holders(&self) -> Vec<u32> {
        let Ok(listing) = fs::read_dir(self.dir.join("binctr-userns")) else {
            return Vec::new();
        };
        listing
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
            .filter_map(|e| fs::read_to_string(e.path()).ok())
            .filter_map(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
            .filter_map(|v| v["pid"].as_u64().and_then(|p| u32::try_from(p).ok()))
            .collect()
    }

    /// Fails the test unless the state root is empty (no container, no group file left),
    /// then kills the holders.
    #[track_caller]
    fn finish(&self) {
        let left = self.state_entries();
        assert!(
            left.is_empty(),
            "the state root {} is not empty at the end: {left:?}",
            self.state_root().display()
        );
        self.kill_everything();
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.kill_everything();
    }
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

/// A shell script run on the host as the test user, with the test's runtime dir.
fn user_script(t: &Test, rt: &Runtime, script: &str, args: &[&str]) -> Cmd {
    t.user_sh(script, args)
        .env("XDG_RUNTIME_DIR", &rt.dir)
        .timeout(RUN_TIMEOUT)
}

/// A directory of the test user's (0755) in the test's directory.
fn user_dir(t: &Test, name: &str) -> PathBuf {
    let dir = t.dir.join(name);
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    t.env.give_to_user(&dir);
    dir
}

/// A file anyone can read.
fn write_file(path: &Path, content: &str) {
    fs::write(path, content).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(0o644)).unwrap();
}

/// Single-quotes a word for sh.
fn quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', "'\\''"))
}

/// `KEY=VALUE` lines of an `env` output.
fn env_map(out: &Output) -> BTreeMap<String, String> {
    out.stdout_text()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The `launcher: ...` line of a `-D` run's stderr (without the debug prefix).
fn launcher_line(out: &Output) -> Option<String> {
    out.stderr_text()
        .lines()
        .find_map(|l| l.find("launcher: ").map(|i| l[i..].to_string()))
}

/// `readlink /proc/PID/ns/KIND` on the host (root reads anyone's).
fn ns_link(pid: u32, kind: &str) -> String {
    let path = format!("/proc/{pid}/ns/{kind}");
    fs::read_link(&path)
        .unwrap_or_else(|e| panic!("readlink {path}: {e}"))
        .to_string_lossy()
        .into_owned()
}

/// The descriptors a process has open, with what they point to.
fn open_fds(pid: u32) -> BTreeMap<u32, PathBuf> {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/fd: {e}"))
        .flatten()
        .filter_map(|e| {
            let fd = e.file_name().to_string_lossy().parse().ok()?;
            Some((fd, fs::read_link(e.path()).ok()?))
        })
        .collect()
}

/// The live processes (any user's) that have `path` open.
fn processes_holding(path: &Path) -> BTreeSet<u32> {
    binctr_tests::all_processes()
        .into_iter()
        .filter(|p| p.is_live())
        .filter(|p| {
            fs::read_dir(format!("/proc/{}/fd", p.pid)).is_ok_and(|rd| {
                rd.flatten()
                    .any(|e| fs::read_link(e.path()).is_ok_and(|l| l == path))
            })
        })
        .map(|p| p.pid)
        .collect()
}

/// Waits (at most `timeout`) until a file exists; fails the test otherwise.
#[track_caller]
fn await_file(path: &Path, timeout: Duration, what: &str) {
    assert!(
        wait_until(timeout, || path.exists()),
        "{} did not appear within {timeout:?}: {what}",
        path.display()
    );
}

/// The (one) group container in the state root and its two files: fails the test unless
/// the state root holds exactly `share-<key>-<16 hex>`, `.share-<id>.lock` and
/// `.share-<id>.members`. Returns the id.
#[track_caller]
fn group_id(rt: &Runtime, key: &str) -> String {
    let entries = rt.state_entries();
    let prefix = format!("share-{key}-");
    let ids: Vec<&String> = entries.iter().filter(|n| !n.starts_with('.')).collect();
    assert_eq!(ids.len(), 1, "one container in the state root: {entries:?}");
    let id = ids[0].clone();
    let hash = id
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("the group's container is named {prefix}<hash>: {entries:?}"));
    assert!(
        hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
        "the group's container is named {prefix}<16 hex>: {id}"
    );
    let mut expected = vec![
        id.clone(),
        format!(".share-{id}.lock"),
        format!(".share-{id}.members"),
    ];
    expected.sort();
    assert_eq!(entries, expected, "the state root while the group runs");
    id
}

/// One run of a group started by [`run_together`].
struct Member<'a> {
    name: &'a str,
    app: &'a Path,
    /// Host variables of this run (over the clean environment).
    env: Vec<(&'a str, String)>,
    /// The stub's options, before `sh -c BODY sh NAME`.
    args: Vec<String>,
}

/// What one member printed and how it ended.
#[derive(Debug)]
struct Ended {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Starts every member at once (background jobs of one shell script of the test user),
/// each running `sh -c BODY sh NAME` in its container, and waits for all of them. Returns
/// what each printed and its exit code, and the script's output.
fn run_together(
    t: &Test,
    rt: &Runtime,
    members: &[Member],
    body: &str,
) -> (BTreeMap<String, Ended>, Output) {
    let out = user_dir(t, "group-out");
    let mut script = String::new();
    for m in members {
        let mut words: Vec<String> = vec!["env".into()];
        words.extend(m.env.iter().map(|(k, v)| quote(&format!("{k}={v}"))));
        words.push(quote(&s(m.app)));
        words.extend(m.args.iter().map(|a| quote(a)));
        words.extend([
            "sh".into(),
            "-c".into(),
            quote(body),
            "sh".into(),
            quote(m.name),
        ]);
        let file = |ext: &str| quote(&s(&out.join(format!("{}.{ext}", m.name))));
        script.push_str(&format!(
            "( {} > {} 2> {}; echo $? > {} ) &\n",
            words.join(" "),
            file("out"),
            file("err"),
            file("rc")
        ));
    }
    script.push_str("wait\n");
    let started = Instant::now();
    let all = user_script(t, rt, &script, &[]).run();
    all.assert_success();
    eprintln!(
        "{} runs together took {:?}",
        members.len(),
        started.elapsed()
    );
    let mut ended = BTreeMap::new();
    for m in members {
        let read = |ext: &str| {
            let path = out.join(format!("{}.{ext}", m.name));
            fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        };
        let rc = read("rc");
        ended.insert(
            m.name.to_string(),
            Ended {
                code: rc
                    .trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("member {}: exit code {rc:?}", m.name)),
                stdout: read("out"),
                stderr: read("err"),
            },
        );
    }
    (ended, all)
}

/// A container-side body for [`run_together`]: writes its namespaces to
/// `/sync/NAME.ns`, then waits until `count` members have (a barrier on the shared host
/// directory mounted at /sync), so every member's container still runs while the others
/// read theirs. Exits 99 when the barrier times out.
fn ns_barrier_body(count: usize) -> String {
    format!(
        "n=$1; echo \"$(readlink /proc/self/ns/pid) $(readlink /proc/self/ns/mnt) \
         $(readlink /proc/self/ns/ipc) $(readlink /proc/self/ns/uts)\" > /sync/$n.ns; \
         touch /sync/$n.ready; i=0; \
         while [ $(ls /sync | grep -c '\\.ready$') -lt {count} ]; do \
           i=$((i+1)); [ $i -gt 400 ] && {{ echo barrier-timeout; exit 99; }}; sleep 0.05; \
         done; echo pid $$"
    )
}

/// The namespaces member NAME recorded in the sync dir.
fn recorded_ns(sync: &Path, name: &str) -> String {
    let path = sync.join(format!("{name}.ns"));
    fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .trim()
        .to_string()
}

/// The group container a `-D` member started or joined (`share: starting/joining the
/// group's container ID`), if any.
fn share_debug(stderr: &str) -> Option<(String, String)> {
    stderr.lines().find_map(|l| {
        let rest = l.split_once("share: ")?.1;
        let (how, id) = rest.split_once(" the group's container ")?;
        Some((how.to_string(), id.trim().to_string()))
    })
}

/// Packs the busybox image with `--env` settings of its own.
fn pack_with_env(t: &Test, name: &str, vars: &[&str]) -> PathBuf {
    let out = t.dir.join(name);
    let mut cmd = t.packer().arg(t.env.fixture("busybox.tar"));
    for var in vars {
        cmd = cmd.args(["--env", var]);
    }
    cmd.arg("-o").arg(&out).run().assert_success();
    fs::set_permissions(&out, fs::Permissions::from_mode(0o755)).unwrap();
    t.env.give_to_user(&out);
    out
}

// ---- the launcher's variables ------------------------------------------------------------

#[test]
fn under_a_launcher_its_variables_pass_over_the_image_env_and_e_still_wins() {
    let t = Test::new("share_vars");
    let rt = runtime(&t);
    let app = pack_with_env(
        &t,
        "app",
        &[
            "SLURM_PROCID=image",
            "OMPI_MCA_btl=image",
            "I_MPI_FABRICS=image",
            "FOO=image",
            "IMG_ONLY=1",
        ],
    );
    let with_host = |cmd: Cmd, marker: bool| {
        let mut cmd = cmd.env("XDG_RUNTIME_DIR", &rt.dir).timeout(RUN_TIMEOUT);
        for (k, v) in LAUNCHER_VARS.iter().chain(OTHER_VARS.iter()) {
            cmd = cmd.env(k, v);
        }
        // A job id alone: a launcher, but no job step (no sharing).
        if marker {
            cmd = cmd.env("SLURM_JOB_ID", "4242");
        }
        cmd
    };
    let args = ["-D", "-e", "I_MPI_FABRICS=flag", "env"];

    // No launcher: none of the host's variables; the image's and -e's.
    let plain = with_host(t.cmd(&app).args(args), false).run();
    plain.assert_success();
    let base = env_map(&plain);
    assert_eq!(
        base.get("SLURM_PROCID").map(String::as_str),
        Some("image"),
        "{plain:?}"
    );
    assert_eq!(
        base.get("OMPI_MCA_btl").map(String::as_str),
        Some("image"),
        "{plain:?}"
    );
    assert_eq!(
        base.get("I_MPI_FABRICS").map(String::as_str),
        Some("flag"),
        "{plain:?}"
    );
    for (k, _) in LAUNCHER_VARS.iter().chain(OTHER_VARS.iter()) {
        if !["SLURM_PROCID", "OMPI_MCA_btl", "I_MPI_FABRICS", "FOO"].contains(k) {
            assert!(
                !base.contains_key(*k),
                "{k} passed without a launcher:\n{plain:?}"
            );
        }
    }
    assert_eq!(
        launcher_line(&plain),
        None,
        "-D names a launcher when there is none:\n{plain:?}"
    );

    // A launcher: its variables, over the image's; -e still wins; nothing else of the host.
    let launched = with_host(t.cmd(&app).args(args), true).run();
    launched.assert_success();
    let env = env_map(&launched);
    let mut expected = base.clone();
    for (k, v) in LAUNCHER_VARS {
        expected.insert(k.to_string(), v.to_string());
    }
    expected.insert("SLURM_JOB_ID".into(), "4242".into());
    expected.insert("I_MPI_FABRICS".into(), "flag".into());
    // A rank runs as you (keep-id): busybox's /etc/passwd has no such user, so HOME is /.
    expected.insert("HOME".into(), "/".into());
    assert_eq!(
        env, expected,
        "the container's environment under a launcher (left) against the image's plus the \
         launcher's (right):\n{launched:?}"
    );
    assert_eq!(env["FOO"], "image", "the host's FOO passed:\n{launched:?}");
    assert_eq!(env["IMG_ONLY"], "1");
    let line = launcher_line(&launched)
        .unwrap_or_else(|| panic!("-D says nothing of the launcher:\n{launched:?}"));
    assert_eq!(
        line, "launcher: 13 variables passed, descriptors kept [], bound []",
        "{launched:?}"
    );

    // --env-host: everything of the host (its FOO over the image's), -e still wins.
    let all = with_host(t.cmd(&app).args(["--env-host"]).args(args), true).run();
    all.assert_success();
    let env = env_map(&all);
    for (k, v) in LAUNCHER_VARS.iter().chain(OTHER_VARS.iter()) {
        let want = if *k == "I_MPI_FABRICS" { "flag" } else { v };
        assert_eq!(
            env.get(*k).map(String::as_str),
            Some(want),
            "{k} with --env-host:\n{all:?}"
        );
    }
    assert_eq!(env.get("XDG_RUNTIME_DIR"), Some(&s(&rt.dir)), "{all:?}");

    // Under a launcher the rank is you (keep-id: PMIx accepts a client whose uid and gid
    // are the job's); without one, the image's root; -u or --userns still choose.
    let ids = |marker: bool, extra: &[&str]| {
        let out = with_host(t.cmd(&app).args(extra).args(["id"]), marker).run();
        out.assert_success();
        out.stdout_text().trim().to_string()
    };
    let me = t.env.run_uid();
    let launched = ids(true, &[]);
    assert!(
        launched.starts_with(&format!("uid={me}(")) || launched.starts_with(&format!("uid={me} ")),
        "a rank runs as the user ({me}): {launched}"
    );
    assert!(launched.contains(&format!("gid={me}")), "{launched}");
    assert!(
        ids(false, &[]).starts_with("uid=0(root)"),
        "without a launcher: root"
    );
    assert!(
        ids(true, &["-u", "0"]).starts_with("uid=0(root)"),
        "-u 0 under a launcher"
    );
    assert!(
        ids(true, &["--userns", "subid"]).starts_with("uid=0(root)"),
        "--userns subid under a launcher"
    );
    rt.finish();
}

#[test]
fn each_launcher_marker_alone_makes_the_launcher_variables_pass() {
    let t = Test::new("share_markers");
    let rt = runtime(&t);
    // Extract once, so the runs below start together without racing to extract.
    bb(&t, &rt, ["true"]).run().assert_success();
    let probe = |cmd: Cmd| {
        cmd.env("SLURM_PROCID", "5")
            .env("OMPI_MCA_pml", "ob1")
            .args(["env"])
    };
    let mut runs = Vec::new();
    for (marker, value) in MARKERS {
        let cmd = probe(bb(&t, &rt, Vec::<String>::new()).env(marker, value));
        runs.push((Some((marker, value)), cmd.spawn()));
    }
    runs.push((None, probe(bb(&t, &rt, Vec::<String>::new())).spawn()));
    for (marker, run) in runs {
        let out = run.wait();
        out.assert_success();
        let env = env_map(&out);
        match marker {
            Some((marker, value)) => {
                for (k, v) in [
                    (marker, value),
                    ("SLURM_PROCID", "5"),
                    ("OMPI_MCA_pml", "ob1"),
                ] {
                    assert_eq!(
                        env.get(k).map(String::as_str),
                        Some(v),
                        "with only {marker} set, {k} does not pass:\n{out:?}"
                    );
                }
            }
            None => {
                for k in ["SLURM_PROCID", "OMPI_MCA_pml"] {
                    assert!(
                        !env.contains_key(k),
                        "{k} passes with no launcher marker:\n{out:?}"
                    );
                }
            }
        }
    }
    rt.finish();
}

// ---- PMI's descriptor, PMIx's directories ------------------------------------------------

/// Starts, as the test user, `APP ARGS... sh -c 'cat /proc/self/fd/5; exec sleep N'`
/// from a shell that opened FILE5 on 5 and FILE6 on 6 (PMI_FD=5 and `env` set).
fn run_with_pmi_fd(
    t: &Test,
    rt: &Runtime,
    files: (&Path, &Path),
    env: &[(&str, &str)],
    args: &[&str],
    sleep: &str,
) -> binctr_tests::Running {
    let mut cmd = user_script(
        t,
        rt,
        "exec 5<\"$1\" 6<\"$2\"; shift 2; exec \"$@\"",
        &[&s(files.0), &s(files.1), &s(t.busybox())],
    )
    .env("PMI_FD", "5");
    for (k, v) in env {
        cmd = cmd.env(k, v);
    }
    cmd.args(args.iter().copied())
        .args([
            "sh",
            "-c",
            &format!("cat /proc/self/fd/5; exec sleep {sleep}"),
        ])
        .spawn()
}

/// (case, host variables, the command's sleep, how many variables pass).
type PmiCase<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str, usize);

#[test]
fn the_pmi_fd_stays_open_at_its_number_in_the_command_and_nothing_else_does() {
    let t = Test::new("share_pmi_fd");
    let rt = runtime(&t);
    let five = t.dir.join("pmi-socket-stand-in");
    let six = t.dir.join("not-named");
    write_file(&five, "the process manager's end\n");
    write_file(&six, "another descriptor\n");

    // A rank of its own (PMI_RANK: a launcher, no sharing), and one of a step's shared
    // container (SLURM_JOB_ID and SLURM_STEP_ID).
    // With PMI_FD, 2 and 4 variables pass.
    let cases: [PmiCase; 2] = [
        ("own", &[("PMI_RANK", "0")], "3301", 2),
        (
            "shared",
            &[
                ("SLURM_JOB_ID", "77"),
                ("SLURM_STEP_ID", "0"),
                ("SLURMD_NODENAME", "n1"),
            ],
            "3302",
            4,
        ),
    ];
    for (case, env, sleep, passed) in cases {
        let mut run = run_with_pmi_fd(&t, &rt, (&five, &six), env, &["-D"], sleep);
        let stub = run.pid();
        let command = run.wait_for_descendant("sleep", QUICK * 3);
        let fds = open_fds(command);
        let numbers: Vec<u32> = fds.keys().copied().collect();
        assert_eq!(
            numbers,
            [0, 1, 2, 5],
            "{case}: the command's descriptors: {fds:?}"
        );
        assert_eq!(fds[&5], five, "{case}: the command's descriptor 5: {fds:?}");
        // Nobody else keeps it: not the container's PID 1, not a monitor.
        let holders = processes_holding(&five);
        assert_eq!(
            holders,
            BTreeSet::from([stub, command]),
            "{case}: the processes holding PMI_FD's file (stub {stub}, command {command}): {:?}",
            holders
                .iter()
                .map(|&p| Proc::read(p).map(|p| p.argv))
                .collect::<Vec<_>>()
        );
        if case == "shared" {
            let id = group_id(&rt, "slurm-77.0-n1");
            for pid in [rt.container_pid(&id), rt.monitor_pid(&id)]
                .into_iter()
                .flatten()
            {
                assert!(
                    !open_fds(pid).values().any(|l| *l == five),
                    "{case}: process {pid} of the container keeps PMI_FD's file open"
                );
            }
        }
        run.signal(libc::SIGTERM);
        let out = run.wait();
        out.assert_code(143);
        assert_eq!(
            out.stdout_text(),
            "the process manager's end\n",
            "{case}: /proc/self/fd/5 in the container:\n{out:?}"
        );
        assert_eq!(
            launcher_line(&out),
            Some(format!(
                "launcher: {passed} variables passed, descriptors kept [5], bound []"
            )),
            "{case}:\n{out:?}"
        );
        assert!(
            wait_until(QUICK, || rt.state_entries().is_empty()),
            "{case}: state left: {:?}",
            rt.state_entries()
        );
    }

    // PMI_FD naming stdio, or nothing open: nothing kept, and the run goes on.
    for (value, note) in [("2", "stderr"), ("7", "not open"), ("x", "not a number")] {
        let out = user_script(
            &t,
            &rt,
            "exec 5<\"$1\"; shift; exec \"$@\"",
            &[&s(&five), &s(t.busybox())],
        )
        .env("PMI_FD", value)
        .args(["-D", "sh", "-c", "ls /proc/$$/fd; exit 0"])
        .run();
        out.assert_success();
        assert_eq!(
            launcher_line(&out).as_deref(),
            Some("launcher: 1 variables passed, descriptors kept [], bound []"),
            "PMI_FD={value} ({note}):\n{out:?}"
        );
        assert_eq!(
            out.stdout_text(),
            "0\n1\n2\n",
            "PMI_FD={value} ({note}):\n{out:?}"
        );
    }
    rt.finish();
}

#[test]
fn the_pmix_server_and_system_dirs_are_bound_at_their_paths_and_writable() {
    let t = Test::new("share_pmix_dirs");
    let rt = runtime(&t);
    let server = user_dir(&t, "pmix-server");
    let system = user_dir(&t, "pmix-system");
    write_file(&server.join("host-file"), "server\n");
    write_file(&system.join("host-file"), "system\n");
    let script = format!(
        "cat {0}/host-file {1}/host-file && echo from-container > {0}/out && \
         echo from-container > {1}/out && grep -c -e ' {0} ' -e ' {1} ' /proc/self/mountinfo",
        s(&server),
        s(&system)
    );
    let out = bb(&t, &rt, ["-D", "sh", "-c", &script])
        .env("PMIX_RANK", "0")
        .env("PMIX_SERVER_TMPDIR", &server)
        .env("PMIX_SYSTEM_TMPDIR", &system)
        .run();
    out.assert_success();
    assert_eq!(out.stdout_text(), "server\nsystem\n2\n", "{out:?}");
    for dir in [&server, &system] {
        let written = dir.join("out");
        assert_eq!(
            fs::read_to_string(&written).ok().as_deref(),
            Some("from-container\n"),
            "the container's write to {} is not on the host",
            written.display()
        );
        assert_eq!(
            fs::metadata(&written).unwrap().uid(),
            rt.uid,
            "the file the container wrote is the test user's"
        );
    }
    assert_eq!(
        launcher_line(&out),
        Some(format!(
            "launcher: 3 variables passed, descriptors kept [], bound [{:?}, {:?}]",
            s(&server),
            s(&system)
        )),
        "{out:?}"
    );

    // Not absolute or not there: not bound, and the run goes on.
    let out = bb(&t, &rt, ["-D", "true"])
        .env("PMIX_RANK", "0")
        .env("PMIX_SERVER_TMPDIR", "relative/dir")
        .env("PMIX_SYSTEM_TMPDIR", t.dir.join("no-such-dir"))
        .run();
    out.assert_success();
    assert_eq!(
        launcher_line(&out).as_deref(),
        Some("launcher: 3 variables passed, descriptors kept [], bound []"),
        "{out:?}"
    );
    // Without a launcher: PMIX_SERVER_TMPDIR alone binds nothing.
    let out = bb(
        &t,
        &rt,
        ["sh", "-c", &format!("test -e {}/host-file", s(&server))],
    )
    .env("PMIX_SERVER_TMPDIR", &server)
    .run();
    assert_eq!(
        out.code,
        Some(1),
        "the dir is bound with no launcher marker:\n{out:?}"
    );
    rt.finish();
}

// ---- one container for a group -------------------------------------------------------------

#[test]
fn four_runs_sharing_a_key_run_in_one_container_with_their_own_pids_and_exit_codes() {
    let t = Test::new("share_four");
    let rt = runtime(&t);
    // Each member writes /tmp/m-N and /dev/shm/s-N, waits until it sees all four of
    // both (a barrier: it holds only if they share /tmp and /dev/shm), lists them, and
    // exits its own way.
    let body = "n=$1; \
        for k in pid ipc uts mnt user; do echo \"ns $k $(readlink /proc/self/ns/$k)\"; done; \
        echo \"pid $$\"; echo $n > /tmp/m-$n; echo $n > /dev/shm/s-$n; i=0; \
        while [ $(ls /tmp | grep -c '^m-') -lt 4 ] || [ $(ls /dev/shm | grep -c '^s-') -lt 4 ]; do \
          i=$((i+1)); [ $i -gt 400 ] && { echo barrier-timeout; break; }; sleep 0.05; \
        done; \
        echo \"tmp $(ls /tmp | grep '^m-' | tr '\\n' ' ')\"; \
        echo \"shm $(ls /dev/shm | grep '^s-' | tr '\\n' ' ')\"; \
        case $n in 1) exit 0;; 2) exit 7;; 3) kill -TERM $$;; 4) kill -KILL $$;; esac";
    let members: Vec<Member> = ["1", "2", "3", "4"]
        .into_iter()
        .map(|name| Member {
            name,
            app: t.busybox(),
            env: Vec::new(),
            args: vec!["--share".into(), "four".into()],
        })
        .collect();
    let (ended, all) = run_together(&t, &rt, &members, body);
    // The last member waited until the container and the group's files were gone.
    let left = rt.state_entries();
    assert!(
        left.is_empty(),
        "state left when the last member exited: {left:?}\n{ended:#?}"
    );

    let field = |e: &Ended, key: &str| -> String {
        e.stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key} ")))
            .unwrap_or_else(|| panic!("no '{key}' in a member's output: {e:#?}"))
            .trim()
            .to_string()
    };
    let host_pid_ns = ns_link(std::process::id(), "pid");
    for kind in ["pid", "ipc", "uts", "mnt", "user"] {
        let seen: BTreeSet<String> = ended
            .values()
            .map(|e| field(e, &format!("ns {kind}")))
            .collect();
        assert_eq!(
            seen.len(),
            1,
            "the members' {kind} namespaces differ: {seen:?}\n{ended:#?}"
        );
        if kind == "pid" {
            assert!(
                !seen.contains(&host_pid_ns),
                "the members run in the host's pid namespace"
            );
        }
    }
    let pids: BTreeSet<String> = ended.values().map(|e| field(e, "pid")).collect();
    assert_eq!(
        pids.len(),
        4,
        "the members' pids are not distinct: {pids:?}\n{ended:#?}"
    );
    assert!(!pids.contains("1"), "a member is PID 1: {pids:?}");
    for (name, e) in &ended {
        assert_eq!(
            field(e, "tmp"),
            "m-1 m-2 m-3 m-4",
            "member {name}'s /tmp: {e:#?}"
        );
        assert_eq!(
            field(e, "shm"),
            "s-1 s-2 s-3 s-4",
            "member {name}'s /dev/shm: {e:#?}"
        );
        assert_eq!(e.stderr, "", "member {name}: {e:#?}");
    }
    let codes: Vec<i32> = ended.values().map(|e| e.code).collect();
    assert_eq!(
        codes,
        [0, 7, 143, 137],
        "each member exits with its own command's status:\n{ended:#?}\n{all:?}"
    );
    // Four runs, one extraction.
    t.only_digest_dir();
    rt.finish();
}

#[test]
fn a_group_is_one_key_of_one_image_and_other_runs_stay_apart() {
    let t = Test::new("share_keys");
    let rt = runtime(&t);
    let sync = user_dir(&t, "sync");
    let other = rawtar::pack_tar(
        &t,
        &{
            let mut tar = rawtar::RawTar::on_busybox();
            tar.file(b"other-image", b"yes\n");
            tar.finish()
        },
        "other",
    );
    // The same rootfs, packed with other settings: another image to share with.
    let settings = t.dir.join("settings");
    t.packer()
        .arg(t.env.fixture("busybox.tar"))
        .args(["--env", "SETTING=other", "-o"])
        .arg(&settings)
        .run()
        .assert_success();
    t.env.give_to_user(&settings);
    let volume = format!("{}:/sync", s(&sync));
    let member = |name, app, extra: &[&str]| {
        let mut args = vec!["-v".to_string(), volume.clone(), "-D".to_string()];
        args.extend(extra.iter().map(|a| a.to_string()));
        Member {
            name,
            app,
            env: Vec::new(),
            args,
        }
    };
    let members = [
        member("a1", t.busybox(), &["--share", "k"]),
        member("a2", t.busybox(), &["--share", "k"]),
        member("a3", t.busybox(), &["--share", "k"]),
        member("image", &other, &["--share", "k"]),
        member("settings", &settings, &["--share", "k"]),
        member("key", t.busybox(), &["--share", "k2"]),
        member("none", t.busybox(), &[]),
    ];
    let (ended, _) = run_together(&t, &rt, &members, &ns_barrier_body(members.len()));
    for (name, e) in &ended {
        assert_eq!(e.code, 0, "member {name}: {e:#?}");
    }
    assert!(
        rt.state_entries().is_empty(),
        "state left: {:?}",
        rt.state_entries()
    );
    let ns = |name: &str| recorded_ns(&sync, name);
    assert_eq!(ns("a1"), ns("a2"), "{ended:#?}");
    assert_eq!(ns("a1"), ns("a3"), "{ended:#?}");
    let apart = ["a1", "image", "settings", "key", "none"];
    let distinct: BTreeSet<String> = apart.iter().map(|n| ns(n)).collect();
    assert_eq!(
        distinct.len(),
        apart.len(),
        "a group's container is shared beyond its key and image: {:?}",
        apart.iter().map(|n| (n, ns(n))).collect::<Vec<_>>()
    );
    // What -D says: the three of `k` on busybox in one container, started once.
    let debug: BTreeMap<&str, Option<(String, String)>> = ended
        .iter()
        .map(|(n, e)| (n.as_str(), share_debug(&e.stderr)))
        .collect();
    let ids: BTreeSet<&String> = ["a1", "a2", "a3"]
        .iter()
        .map(|n| {
            &debug[n]
                .as_ref()
                .unwrap_or_else(|| panic!("{n}: no share line: {ended:#?}"))
                .1
        })
        .collect();
    assert_eq!(ids.len(), 1, "{debug:?}");
    let starts = ["a1", "a2", "a3"]
        .iter()
        .filter(|n| debug[*n].as_ref().is_some_and(|(how, _)| how == "starting"))
        .count();
    assert_eq!(starts, 1, "one member starts the container: {debug:?}");
    assert!(debug["none"].is_none(), "{debug:?}");
    rt.finish();
}

#[test]
fn under_slurm_the_ranks_of_a_step_on_a_node_share_by_default_and_no_share_opts_out() {
    let t = Test::new("share_slurm");
    let rt = runtime(&t);
    let sync = user_dir(&t, "sync");
    let volume = format!("{}:/sync", s(&sync));
    let step = |job: &str, step: &str, node: &str| {
        vec![
            ("SLURM_JOB_ID", job.to_string()),
            ("SLURM_STEP_ID", step.to_string()),
            ("SLURMD_NODENAME", node.to_string()),
        ]
    };
    let member = |name, env: Vec<(&'static str, String)>, extra: &[&str]| {
        let mut args = vec!["-v".to_string(), volume.clone(), "-D".to_string()];
        args.extend(extra.iter().map(|a| a.to_string()));
        Member {
            name,
            app: t.busybox(),
            env,
            args,
        }
    };
    let members = [
        member("r0", step("42", "0", "n1"), &[]),
        member("r1", step("42", "0", "n1"), &[]),
        // SLURM_STEPID: the older spelling of the same step.
        member(
            "r2",
            vec![
                ("SLURM_JOB_ID", "42".into()),
                ("SLURM_STEPID", "0".into()),
                ("SLURMD_NODENAME", "n1".into()),
            ],
            &[],
        ),
        member("step1", step("42", "1", "n1"), &[]),
        member("node2", step("42", "0", "n2"), &[]),
        member("job43", step("43", "0", "n1"), &[]),
        member("noshare", step("42", "0", "n1"), &["--no-share"]),
        // The batch script itself: a job, no step.
        member("batch", vec![("SLURM_JOB_ID", "42".into())], &[]),
    ];
    let (ended, _) = run_together(&t, &rt, &members, &ns_barrier_body(members.len()));
    for (name, e) in &ended {
        assert_eq!(e.code, 0, "member {name}: {e:#?}");
    }
    assert!(
        rt.state_entries().is_empty(),
        "state left: {:?}",
        rt.state_entries()
    );
    let ns = |name: &str| recorded_ns(&sync, name);
    assert_eq!(
        ns("r0"),
        ns("r1"),
        "the ranks of one step on one node: {ended:#?}"
    );
    assert_eq!(ns("r0"), ns("r2"), "SLURM_STEPID: {ended:#?}");
    let apart = ["r0", "step1", "node2", "job43", "noshare", "batch"];
    let distinct: BTreeSet<String> = apart.iter().map(|n| ns(n)).collect();
    assert_eq!(
        distinct.len(),
        apart.len(),
        "runs of other steps, nodes, jobs, --no-share or no step share a container: {:?}",
        apart.iter().map(|n| (n, ns(n))).collect::<Vec<_>>()
    );
    // The group's container is named after the job, the step and the node.
    for (name, prefix) in [
        ("r0", "share-slurm-42.0-n1-"),
        ("r1", "share-slurm-42.0-n1-"),
        ("r2", "share-slurm-42.0-n1-"),
        ("step1", "share-slurm-42.1-n1-"),
        ("node2", "share-slurm-42.0-n2-"),
        ("job43", "share-slurm-43.0-n1-"),
    ] {
        let (_, id) = share_debug(&ended[name].stderr)
            .unwrap_or_else(|| panic!("{name}: -D says nothing of sharing: {:#?}", ended[name]));
        assert!(
            id.starts_with(prefix),
            "{name}: the container {id}, not {prefix}<hash>"
        );
    }
    for name in ["noshare", "batch"] {
        assert_eq!(
            share_debug(&ended[name].stderr),
            None,
            "{name} joined a group: {:#?}",
            ended[name]
        );
    }
    rt.finish();
}

#[test]
fn a_killed_member_leaves_the_group_running_exec_joins_it_and_the_last_killed_ends_it() {
    let t = Test::new("share_killed");
    let rt = runtime(&t);
    let mut first = bb(
        &t,
        &rt,
        [
            "--share",
            "kk",
            "sh",
            "-c",
            "echo from-a > /tmp/a; exec sleep 3101",
        ],
    )
    .spawn();
    let a_sleep = first.wait_for_descendant("sleep", QUICK * 3);
    let id = group_id(&rt, "kk");
    let pid1 = rt
        .container_pid(&id)
        .unwrap_or_else(|| panic!("no pid in {id}'s state.json"));
    let monitor = rt
        .monitor_pid(&id)
        .unwrap_or_else(|| panic!("no monitor in {id}'s exec.json"));
    let mut second = bb(&t, &rt, ["--share", "kk", "sh", "-c", "exec sleep 3102"]).spawn();
    let b_sleep = second.wait_for_descendant("sleep", QUICK * 3);
    for kind in ["pid", "mnt", "ipc", "uts"] {
        assert_eq!(
            ns_link(a_sleep, kind),
            ns_link(b_sleep, kind),
            "the two members' {kind} namespaces"
        );
    }
    assert_eq!(
        group_id(&rt, "kk"),
        id,
        "the second run made another container"
    );

    // --exec ID: in the group's container, beside both members.
    let out = bb(
        &t,
        &rt,
        [
            "--exec",
            &id,
            "sh",
            "-c",
            "cat /tmp/a; readlink /proc/self/ns/pid; ps -o args",
        ],
    )
    .run();
    out.assert_success();
    let text = out.stdout_text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "from-a", "{out:?}");
    assert_eq!(lines[1], ns_link(a_sleep, "pid"), "{out:?}");
    for sleep in ["sleep 3101", "sleep 3102"] {
        assert!(
            lines.iter().any(|l| l.trim() == sleep),
            "exec does not see {sleep}:\n{out:?}"
        );
    }
    bb(&t, &rt, ["--exec", &id, "sh", "-c", "exit 6"])
        .run()
        .assert_code(6);

    // The first member (the one that started the container) killed outright: the other
    // still runs in it, after the monitor has had time to look.
    first.signal(libc::SIGKILL);
    let out = first.wait();
    assert_eq!(out.signal, Some(libc::SIGKILL), "{out:?}");
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        is_live(b_sleep),
        "the other member's command died with the first"
    );
    assert!(
        is_live(pid1),
        "the container ended while a member still ran"
    );
    assert_eq!(group_id(&rt, "kk"), id);
    bb(&t, &rt, ["--exec", &id, "cat", "/tmp/a"])
        .run()
        .assert_success()
        .assert_stdout("from-a\n");

    // The last member killed outright too: the monitor ends the container.
    second.signal(libc::SIGKILL);
    let out = second.wait();
    assert_eq!(out.signal, Some(libc::SIGKILL), "{out:?}");
    let killed = Instant::now();
    let gone = wait_until(GROUP_GONE_WITHIN, || {
        rt.state_entries().is_empty() && !is_live(pid1) && !is_live(monitor)
    });
    let took = killed.elapsed();
    assert!(
        gone,
        "{GROUP_GONE_WITHIN:?} after the last member was killed: state {:?}, PID 1 {pid1} \
         live: {}, monitor {monitor} live: {}",
        rt.state_entries(),
        is_live(pid1),
        is_live(monitor)
    );
    eprintln!("the group's container was gone {took:?} after its last member was killed");
    for sleep in ["sleep 3101", "sleep 3102"] {
        assert_no_process_left(&t, sleep, "the group's container ended");
    }
    let out = bb(&t, &rt, ["--exec", &id, "true"]).run();
    assert_fails_with_one_line(&out, 125, &id);
    rt.finish();
}

#[test]
fn sigcont_to_a_plain_run_and_sigcont_and_sigterm_to_a_member_reach_the_command() {
    let t = Test::new("share_signals");
    let rt = runtime(&t);
    let sync = user_dir(&t, "sync");
    let volume = format!("{}:/sync", s(&sync));
    let wait_for = |name: &str| {
        format!(
            "i=0; while [ ! -e {name} ]; do i=$((i+1)); [ $i -gt 400 ] && exit 99; sleep 0.05; done"
        )
    };
    // A plain run (its own container): SIGCONT to the stub reaches the command.
    let c_script = "trap 'echo cont > /sync/c-cont' CONT; touch /sync/c-ready; \
                    while :; do sleep 0.1; done";
    let mut c = bb(&t, &rt, ["-v", &volume, "sh", "-c", c_script]).spawn();
    await_file(&sync.join("c-ready"), QUICK * 3, "the plain run runs");
    let c_sh = c.wait_for_descendant("sh", QUICK);
    stop_then_cont(&c, c_sh, &sync.join("c-cont"), "a plain run");
    c.signal(libc::SIGTERM);
    c.wait().assert_code(143);

    // A: traps CONT and TERM. B: waits for A's TERM trap to have written to the shared
    // /tmp, then shows what the traps wrote.
    let a_script = "trap 'echo cont > /sync/a-cont' CONT; \
                    trap 'echo term > /tmp/term; exit 3' TERM; \
                    touch /sync/a-ready; while :; do sleep 0.1; done";
    let b_script = format!(
        "touch /sync/b-ready; {}; cat /tmp/term /sync/a-cont",
        wait_for("/tmp/term")
    );
    let a = bb(
        &t,
        &rt,
        ["-v", &volume, "--share", "sig", "sh", "-c", a_script],
    )
    .spawn();
    await_file(&sync.join("a-ready"), QUICK * 3, "member A runs");
    let b = bb(
        &t,
        &rt,
        ["-v", &volume, "--share", "sig", "sh", "-c", &b_script],
    )
    .spawn();
    await_file(&sync.join("b-ready"), QUICK * 3, "member B runs");
    group_id(&rt, "sig");

    // SIGCONT: A's command stopped, then SIGCONT to A's stub: it runs on, and its trap.
    let a_sh = find_descendant(a.pid(), "sh")
        .unwrap_or_else(|| panic!("no sh under member A's stub {}", a.pid()));
    stop_then_cont(&a, a_sh, &sync.join("a-cont"), "a member");

    // SIGTERM to A's stub: its trap runs (B sees what it wrote), it exits 3.
    a.signal(libc::SIGTERM);
    let out = a.wait();
    out.assert_code(3);
    let out = b.wait();
    out.assert_success().assert_stdout("term\ncont\n");
    assert!(
        rt.state_entries().is_empty(),
        "state left when the last member exited: {:?}",
        rt.state_entries()
    );

    rt.finish();
}

/// Stops `command` (SIGSTOP from the host), then sends SIGCONT to the stub: fails the
/// test unless the command runs again and its CONT trap writes `trapped`.
#[track_caller]
fn stop_then_cont(stub: &binctr_tests::Running, command: u32, trapped: &Path, what: &str) {
    let state = || Proc::read(command).map(|p| p.state);
    send_signal(command, libc::SIGSTOP).unwrap();
    assert!(
        wait_until(QUICK, || state() == Some('T')),
        "{what}: the command {command} did not stop: {:?}",
        state()
    );
    // A stopped process keeps a pending SIGCONT's trap for later: nothing yet.
    assert!(
        !trapped.exists(),
        "{what}: the CONT trap ran before SIGCONT"
    );
    stub.signal(libc::SIGCONT);
    let resumed = wait_until(QUICK, || trapped.exists() && state() != Some('T'));
    assert!(
        resumed,
        "{what}: SIGCONT to the stub did not reach the command (state {:?}, {} {})",
        state(),
        trapped.display(),
        if trapped.exists() {
            "written"
        } else {
            "not written"
        }
    );
}

#[test]
fn share_with_its_own_container_flags_or_no_share_is_refused_with_one_line() {
    let t = Test::new("share_refused");
    let rt = runtime(&t);
    let overlay = user_dir(&t, "overlay");
    let overlay = s(&overlay);
    // Each refusal names what conflicts.
    let cases: [(&[&str], &str); 7] = [
        (&["--share", "k", "-d"], "-d"),
        (&["--share", "k", "--id", "x"], "--id"),
        (&["--share", "k", "--name", "x"], "--name"),
        (&["--share", "k", "--overlay", &overlay], "--overlay"),
        (&["--share", "k", "--no-share"], "--no-share"),
        (&["--no-share", "--share", "k"], "--no-share"),
        (&["--share", ""], "key"),
    ];
    for (args, names) in cases {
        let out = bb(
            &t,
            &rt,
            args.iter().copied().chain(["sh", "-c", "echo ran"]),
        )
        .run();
        assert_fails_with_one_line(&out, 125, "--share");
        assert!(
            out.stderr_text().contains(names),
            "{args:?}: the error does not name {names}:\n{out:?}"
        );
        assert_eq!(out.stdout_text(), "", "{args:?} ran the command:\n{out:?}");
        assert!(
            rt.state_entries().is_empty(),
            "{args:?} left state: {:?}",
            rt.state_entries()
        );
    }
    // The same under Slurm, where sharing is the default.
    let out = bb(&t, &rt, ["--share", "k", "-d", "true"])
        .env("SLURM_JOB_ID", "1")
        .env("SLURM_STEP_ID", "0")
        .run();
    assert_fails_with_one_line(&out, 125, "--share");
    // Alone, --share and --no-share run the command.
    for args in [&["--share", "k"][..], &["--no-share"]] {
        bb(
            &t,
            &rt,
            args.iter().copied().chain(["sh", "-c", "echo ran"]),
        )
        .run()
        .assert_success()
        .assert_stdout("ran\n");
    }
    rt.finish();
}
