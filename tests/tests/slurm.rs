//! Issue 14, end to end on a real Slurm cluster: packed files started by `srun` and
//! `sbatch` as an ordinary user with a subordinate id range, MPI ranks over PMIx (across
//! nodes, and over shared memory on one node), the PMI2 socket, ranks of one step sharing
//! one container per node, and SIGTERM reaching the command on `scancel` and time limits.
//!
//! The cluster is `scripts/slurm-cluster.sh start` (scripts/test.sh starts it before the
//! tests and stops it after): three slurmd nodes n1..n3 on this machine, each with its own
//! /tmp (the host sees node nK's at STATE/nodes/nK/tmp), proctrack/cgroup, KillWait=5.
//! Every test fails, saying how to start it, when it does not run: nothing is skipped.
//!
//! Each test has a directory in STATE/shared (seen by every node at the same path) for its
//! job scripts, HOME and volumes, and a cache and an XDG_RUNTIME_DIR of its own in every
//! node's /tmp (BINCTR_CACHE=/tmp/binctr-slurm-PID-NAME-N, XDG_RUNTIME_DIR=that-run):
//! node-local, so an extraction per node can be counted, and what a container leaves
//! behind (a writable layer, a shared container's state) is the test's to see. The packed files (busybox, and build/mpi.tar from
//! scripts/make-mpi-image.sh) are packed once per test process into STATE/shared.
//! Every srun runs under timeout(1): a drained node makes srun wait forever.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use binctr_tests::{
    cache_entries, extracted_images, remove_tree, run_layers, s, temp_entries, wait_until, Cmd,
    Env, Output, Test,
};

// Keep in step with scripts/slurm-cluster.sh.
const STATE: &str = "/var/lib/binctr-slurm";
const NODES: [&str; 3] = ["n1", "n2", "n3"];
/// slurm.conf's KillWait: seconds from SIGTERM to SIGKILL.
const KILL_WAIT: u64 = 5;

/// What timeout(1) gives one srun, in seconds.
const SRUN_LIMIT: u64 = 90;

const START_IT: &str = "start it with `bash scripts/slurm-cluster.sh start` as root \
                        (scripts/test.sh does, before cargo test)";

fn slurm_conf() -> String {
    format!("{STATE}/etc/slurm.conf")
}

// ---- the cluster ------------------------------------------------------------------------

/// Checks once per test process that the cluster runs with all three nodes usable; every
/// test fails with the reason when it does not.
fn cluster() {
    static CHECK: OnceLock<Result<(), String>> = OnceLock::new();
    if let Err(why) = CHECK.get_or_init(check_cluster) {
        panic!("the Slurm test cluster is not usable: {why}; {START_IT}");
    }
}

/// A Slurm client command as whoever runs the tests (root), for the checks.
fn admin(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new("/usr/bin/timeout")
        .arg("20")
        .arg(program)
        .args(args)
        .env("SLURM_CONF", slurm_conf())
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn check_cluster() -> Result<(), String> {
    for tool in ["srun", "sbatch", "scancel", "squeue", "sinfo", "scontrol"] {
        if !Path::new("/usr/bin").join(tool).exists() {
            return Err(format!("/usr/bin/{tool} is missing (Debian: slurm-client)"));
        }
    }
    if !Path::new(&slurm_conf()).is_file() {
        return Err(format!("{} does not exist", slurm_conf()));
    }
    let ping = admin("scontrol", &["ping"])?;
    if !ping.contains("is UP") {
        return Err(format!("slurmctld is not up: {}", ping.trim()));
    }
    let nodes = admin("sinfo", &["-h", "-N", "-o", "%N %t %E"])?;
    for node in NODES {
        let line = nodes
            .lines()
            .find(|l| l.split_whitespace().next() == Some(node))
            .ok_or_else(|| format!("sinfo does not list node {node}: {nodes:?}"))?;
        let state = line.split_whitespace().nth(1).unwrap_or("?");
        if !["idle", "mix", "alloc"].contains(&state) {
            return Err(format!("node {node} is {state}, not usable: {line:?}"));
        }
        let tmp = node_tmp(node);
        if !tmp.is_dir() {
            return Err(format!("node {node}'s /tmp ({}) is missing", tmp.display()));
        }
    }
    Ok(())
}

/// Node `node`'s /tmp, as the host sees it.
fn node_tmp(node: &str) -> PathBuf {
    PathBuf::from(format!("{STATE}/nodes/{node}/tmp"))
}

/// This test process's directory in the shared area (`STATE/shared/binctr-tests-PID`),
/// traversable by the test user; leftovers of test processes that are gone are removed.
fn shared_root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let shared = PathBuf::from(format!("{STATE}/shared"));
        for (name, path) in cache_entries(&shared) {
            let pid = name
                .strip_prefix("binctr-tests-")
                .and_then(|p| p.parse::<u32>().ok());
            if pid.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()) {
                remove_tree(&path);
            }
        }
        let root = shared.join(format!("binctr-tests-{}", std::process::id()));
        remove_tree(&root);
        make_dir(&root, 0o755);
        root
    })
}

fn make_dir(path: &Path, mode: u32) {
    fs::create_dir_all(path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

/// Packs a fixture once per test process into the shared area, for every node to run.
fn packed(fixture: &str, name: &str, cell: &'static OnceLock<PathBuf>) -> &'static Path {
    cell.get_or_init(|| {
        let env = Env::get();
        let dir = shared_root().join("packed");
        make_dir(&dir, 0o755);
        let out = dir.join(name);
        let t = Test::new("slurm-pack");
        let started = Instant::now();
        let result = t
            .packer()
            .arg(env.fixture(fixture))
            .arg("-o")
            .arg(&out)
            .timeout(Duration::from_secs(300))
            .run();
        assert!(
            result.code == Some(0) && out.is_file(),
            "packing {fixture} failed:\n{result:?}"
        );
        env.give_to_user(&out);
        fs::set_permissions(&out, fs::Permissions::from_mode(0o755)).unwrap();
        eprintln!(
            "packed {fixture} into {} in {:.1} s",
            out.display(),
            started.elapsed().as_secs_f64()
        );
        out
    })
}

/// The packed busybox image.
fn app() -> String {
    static APP: OnceLock<PathBuf> = OnceLock::new();
    s(packed("busybox.tar", "app", &APP))
}

/// The packed MPI image (build/mpi.tar: Debian bookworm, Open MPI, /ring).
fn mpi() -> String {
    static MPI: OnceLock<PathBuf> = OnceLock::new();
    s(packed("mpi.tar", "mpi", &MPI))
}

// ---- one test ---------------------------------------------------------------------------

/// One test's places: a directory in the shared area (HOME, job scripts, volumes) owned
/// by the test user, and a cache of its own in each node's /tmp. Removed when the test
/// passes, kept (and printed) when it fails; its jobs are cancelled either way.
struct SlurmTest {
    t: Test,
    dir: PathBuf,
    cache_name: String,
    jobs: RefCell<Vec<u32>>,
}

/// The container state the stub keeps under XDG_RUNTIME_DIR (`binctr/<id>/`).
const STATE_SUBDIR: &str = "binctr";

impl SlurmTest {
    fn new(name: &str) -> SlurmTest {
        cluster();
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let t = Test::new(name);
        let dir = shared_root().join(format!("{name}-{n}"));
        make_dir(&dir, 0o755);
        t.env.give_to_user(&dir);
        let home = dir.join("home");
        make_dir(&home, 0o700);
        t.env.give_to_user(&home);
        let cache_name = format!("binctr-slurm-{}-{name}-{n}", std::process::id());
        for node in NODES {
            let runtime = node_tmp(node).join(format!("{cache_name}-run"));
            make_dir(&runtime, 0o700);
            t.env.give_to_user(&runtime);
        }
        SlurmTest {
            t,
            dir,
            cache_name,
            jobs: RefCell::new(Vec::new()),
        }
    }

    /// BINCTR_CACHE as the nodes see it: in each node's own /tmp.
    fn cache(&self) -> String {
        format!("/tmp/{}", self.cache_name)
    }

    /// This test's cache on node `node`, as the host sees it.
    fn node_cache(&self, node: &str) -> PathBuf {
        node_tmp(node).join(&self.cache_name)
    }

    /// This test's XDG_RUNTIME_DIR on node `node`, as the host sees it.
    fn node_runtime(&self, node: &str) -> PathBuf {
        node_tmp(node).join(format!("{}-run", self.cache_name))
    }

    /// A directory in the shared area owned by the test user (a volume, an output dir).
    fn shared_dir(&self, name: &str) -> PathBuf {
        let dir = self.dir.join(name);
        make_dir(&dir, 0o755);
        self.t.env.give_to_user(&dir);
        dir
    }

    /// PROGRAM as the test user with a clean environment: PATH, USER, LOGNAME, HOME (in
    /// the shared area), BINCTR_CACHE and XDG_RUNTIME_DIR (node-local) and SLURM_CONF.
    fn cmd(&self, program: &str) -> Cmd {
        self.t
            .cmd(Path::new(program))
            .env("HOME", self.dir.join("home"))
            .env("BINCTR_CACHE", self.cache())
            .env("XDG_RUNTIME_DIR", format!("/tmp/{}-run", self.cache_name))
            .env("SLURM_CONF", slurm_conf())
    }

    /// `srun --chdir=DIR ARGS...` as the test user, under timeout(1).
    fn srun(&self, args: &[&str]) -> Output {
        self.srun_with(&[], args)
    }

    /// As [`SlurmTest::srun`], with extra variables in srun's environment (which srun
    /// passes on to the tasks).
    fn srun_with(&self, vars: &[(&str, &str)], args: &[&str]) -> Output {
        let mut cmd = self.cmd("/usr/bin/timeout");
        for (key, value) in vars {
            cmd = cmd.env(key, value);
        }
        let started = Instant::now();
        let out = cmd
            .args(["--kill-after=5", &SRUN_LIMIT.to_string(), "/usr/bin/srun"])
            .arg(format!("--chdir={}", s(&self.dir)))
            .arg(format!("--job-name={}", self.t.name))
            .args(args.iter().copied())
            .timeout(Duration::from_secs(SRUN_LIMIT + 30))
            .run();
        eprintln!(
            "srun {} took {:.1} s (exit {:?})",
            args.join(" "),
            started.elapsed().as_secs_f64(),
            out.code
        );
        assert!(
            out.code != Some(124) && out.code != Some(137),
            "srun did not finish in {SRUN_LIMIT} s (a drained node? a hung rank?):\n{out:?}"
        );
        out
    }

    /// Writes a job script into the test's directory and submits it with sbatch as the
    /// test user; returns the job id. Every job gets a time limit (a safety net) unless
    /// ARGS sets one.
    fn sbatch(&self, script: &str, args: &[&str]) -> u32 {
        let path = self.dir.join("job.sh");
        fs::write(&path, script).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        self.t.env.give_to_user(&path);
        let mut cmd = self
            .cmd("/usr/bin/timeout")
            .args(["30", "/usr/bin/sbatch", "--parsable"])
            .arg(format!("--chdir={}", s(&self.dir)))
            .arg(format!("--output={}/slurm-%j.out", s(&self.dir)))
            .arg(format!("--job-name={}", self.t.name));
        if !args.iter().any(|a| a.starts_with("--time")) {
            cmd = cmd.arg("--time=3");
        }
        let out = cmd.args(args.iter().copied()).arg(&path).run();
        out.assert_success();
        let id: u32 = out
            .stdout_text()
            .trim()
            .split(';')
            .next()
            .and_then(|id| id.parse().ok())
            .unwrap_or_else(|| panic!("sbatch printed no job id:\n{out:?}"));
        self.jobs.borrow_mut().push(id);
        id
    }

    /// The job's state as slurmctld has it (RUNNING, COMPLETING, CANCELLED, TIMEOUT...).
    fn job_state(&self, id: u32) -> String {
        let out = self
            .cmd("/usr/bin/timeout")
            .args(["20", "/usr/bin/squeue", "-h", "-t", "all", "-o", "%T"])
            .arg(format!("--jobs={id}"))
            .run();
        out.assert_success();
        out.stdout_text().trim().to_string()
    }

    /// Waits until the job has ended (no longer pending, running or completing);
    /// returns its final state. Fails the test after `timeout`.
    fn wait_job_end(&self, id: u32, timeout: Duration) -> String {
        let until = Instant::now() + timeout;
        loop {
            let state = self.job_state(id);
            if ![
                "PENDING",
                "CONFIGURING",
                "RUNNING",
                "COMPLETING",
                "SUSPENDED",
                "",
            ]
            .contains(&state.as_str())
            {
                return state;
            }
            assert!(
                Instant::now() < until,
                "job {id} has not ended after {timeout:?} (state {state}); output: {}",
                self.job_output(id)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn job_output(&self, id: u32) -> String {
        fs::read_to_string(self.dir.join(format!("slurm-{id}.out")))
            .unwrap_or_else(|e| format!("(no slurm-{id}.out: {e})"))
    }

    /// `scancel ARGS JOB` as the test user.
    fn scancel(&self, id: u32, args: &[&str]) {
        self.cmd("/usr/bin/timeout")
            .args(["20", "/usr/bin/scancel"])
            .args(args.iter().copied())
            .arg(id.to_string())
            .run()
            .assert_success();
    }

    /// Per node: the cache entries (extracted root filesystems) in this test's cache.
    fn entries_per_node(&self) -> Vec<(&'static str, Vec<String>)> {
        NODES
            .iter()
            .map(|node| (*node, extracted_images(&self.node_cache(node))))
            .collect()
    }

    /// Fails the test if, once the step is over, any node holds something of its
    /// containers: an extraction in progress, a writable layer, a container's state (a
    /// shared container killed before its last rank could end it leaves its state and
    /// its layer). Allows 3 s for a teardown still under way.
    fn assert_nothing_left(&self) {
        let leftovers = || -> Vec<String> {
            let mut found = Vec::new();
            for node in NODES {
                let cache = self.node_cache(node);
                for name in temp_entries(&cache) {
                    found.push(format!("{node}: extraction {}/{name}", cache.display()));
                }
                for (name, _) in run_layers(&cache.join(".runs")) {
                    found.push(format!(
                        "{node}: writable layer {}/.runs/{name}",
                        cache.display()
                    ));
                }
                let state = self.node_runtime(node).join(STATE_SUBDIR);
                for (name, path) in cache_entries(&state) {
                    let files: Vec<String> =
                        cache_entries(&path).into_iter().map(|(n, _)| n).collect();
                    found.push(format!(
                        "{node}: container state {}/{name} {files:?}",
                        state.display()
                    ));
                }
            }
            found
        };
        if wait_until(Duration::from_secs(3), || leftovers().is_empty()) {
            return;
        }
        panic!(
            "once the step has ended, nothing of its containers is left on the nodes; found:\n  {}",
            leftovers().join("\n  ")
        );
    }
}

impl Drop for SlurmTest {
    fn drop(&mut self) {
        for id in self.jobs.borrow().iter() {
            let _ = Command::new("/usr/bin/timeout")
                .args(["20", "/usr/bin/scancel", &id.to_string()])
                .env("SLURM_CONF", slurm_conf())
                .output();
        }
        if std::thread::panicking() {
            eprintln!(
                "test {} failed; its files are kept in {} and {STATE}/nodes/*/tmp/{}[-run] (logs in {STATE}/log)",
                self.t.name,
                self.dir.display(),
                self.cache_name
            );
        } else {
            remove_tree(&self.dir);
            for node in NODES {
                remove_tree(&self.node_cache(node));
                remove_tree(&self.node_runtime(node));
            }
        }
    }
}

/// The lines of stdout, sorted (ranks print in any order).
fn sorted_lines(out: &Output) -> Vec<String> {
    let mut lines: Vec<String> = out.stdout_text().lines().map(str::to_string).collect();
    lines.sort();
    lines
}

/// The number of `-D` lines that say the rootfs was extracted.
fn extractions(out: &Output) -> usize {
    out.stderr_text()
        .lines()
        // Format 1 extracts the rootfs, format 2 each layer the node lacks (one here).
        .filter(|l| l.contains("rootfs: extracting into") || l.contains("rootfs: extracting layer"))
        .count()
}

/// Fails the test unless the ring passed with `ranks` ranks: one "rank R of N ...: ok"
/// line per rank, and rank 0's "ring ok N ranks" once.
#[track_caller]
fn assert_ring(out: &Output, ranks: usize) {
    out.assert_success();
    let text = out.stdout_text();
    let oks: Vec<&str> = text.lines().filter(|l| l.starts_with("ring ok")).collect();
    assert_eq!(
        oks,
        [format!("ring ok {ranks} ranks")],
        "rank 0 says the ring passed with {ranks} ranks, once (\"ring ok 1 ranks\" from each \
         rank: every rank ran as a singleton, without the launcher's PMIx variables):\n{out:?}"
    );
    let mut seen = BTreeSet::new();
    for line in text.lines().filter(|l| l.starts_with("rank ")) {
        let words: Vec<&str> = line.split_whitespace().collect();
        assert!(
            words.len() >= 4 && words[2] == "of" && words[3] == ranks.to_string(),
            "a rank line names {ranks} ranks: {line:?}\n{out:?}"
        );
        assert!(
            line.ends_with(": ok"),
            "rank line says ok: {line:?}\n{out:?}"
        );
        seen.insert(words[1].parse::<usize>().expect("rank number"));
    }
    assert_eq!(
        seen,
        (0..ranks).collect::<BTreeSet<_>>(),
        "one line per rank:\n{out:?}"
    );
}

// ---- srun: ranks, caches, environment, exit codes ---------------------------------------

#[test]
fn srun_of_twelve_ranks_on_three_nodes_extracts_once_per_node_and_leaves_no_temp() {
    let t = SlurmTest::new("slurm-cold");
    let app = app();
    let out = t.srun(&["-N3", "-n12", &app, "-D", "true"]);
    out.assert_success();
    let per_node = t.entries_per_node();
    for (node, names) in &per_node {
        assert_eq!(
            names.len(),
            1,
            "node {node}'s node-local cache holds exactly one extracted rootfs \
             (all nodes: {per_node:?}):\n{out:?}"
        );
    }
    assert_eq!(
        extractions(&out),
        NODES.len(),
        "one 'rootfs: extracting into' line per node in the -D output:\n{out:?}"
    );
    t.assert_nothing_left();
}

#[test]
fn sixty_four_ranks_starting_at_once_on_one_node_extract_once() {
    let t = SlurmTest::new("slurm-64");
    let app = app();
    // 64 tasks on a node of 8 CPUs: --overcommit.
    let out = t.srun(&[
        "-N1",
        "-n64",
        "--overcommit",
        "--nodelist=n2",
        &app,
        "-D",
        "true",
    ]);
    out.assert_success();
    let per_node = t.entries_per_node();
    assert_eq!(
        per_node[1].1.len(),
        1,
        "node n2's cache holds exactly one extracted rootfs: {per_node:?}"
    );
    assert_eq!(
        extractions(&out),
        1,
        "one 'rootfs: extracting into' line among the 64 ranks:\n{out:?}"
    );
    t.assert_nothing_left();
}

#[test]
fn slurm_procid_reaches_each_rank() {
    let t = SlurmTest::new("slurm-procid");
    let app = app();
    let out = t.srun(&["-n2", &app, "sh", "-c", "echo $SLURM_PROCID"]);
    out.assert_success();
    assert_eq!(
        sorted_lines(&out),
        ["0", "1"],
        "each rank prints its SLURM_PROCID (empty lines: the stub dropped the launcher's \
         variables):\n{out:?}"
    );
    t.assert_nothing_left();
}

#[test]
fn exit_codes_pass_through_srun() {
    let t = SlurmTest::new("slurm-exit");
    let app = app();
    let out = t.srun(&["-n1", &app, "sh", "-c", "exit 7"]);
    out.assert_code(7);
    let out = t.srun(&["-n1", &app, "sh", "-c", "kill -TERM $$"]);
    assert!(
        out.code.is_some_and(|c| c != 0),
        "a rank killed by SIGTERM fails the step:\n{out:?}"
    );
    t.assert_nothing_left();
}

#[test]
fn the_launchers_variables_reach_the_command_and_others_do_not() {
    let t = SlurmTest::new("slurm-env");
    let app = app();
    let script = "echo \"procid=$SLURM_PROCID ntasks=$SLURM_NTASKS job=${SLURM_JOB_ID:+set} \
                  step=${SLURM_STEP_ID:+set} ompi=$OMPI_MCA_binctr_test \
                  unrelated=${BINCTR_TEST_UNRELATED:-unset}\"";
    let out = t.srun_with(
        &[
            ("OMPI_MCA_binctr_test", "from-user"),
            ("BINCTR_TEST_UNRELATED", "host-only"),
        ],
        &["-n2", &app, "sh", "-c", script],
    );
    out.assert_success();
    assert_eq!(
        sorted_lines(&out),
        [
            "procid=0 ntasks=2 job=set step=set ompi=from-user unrelated=unset",
            "procid=1 ntasks=2 job=set step=set ompi=from-user unrelated=unset",
        ],
        "SLURM_* and a user's OMPI_* pass; a variable of no launcher or MPI does not \
         (--env-host passes everything):\n{out:?}"
    );
    let out = t.srun_with(
        &[("BINCTR_TEST_UNRELATED", "host-only")],
        &[
            "-n1",
            &app,
            "--env-host",
            "sh",
            "-c",
            "echo $BINCTR_TEST_UNRELATED",
        ],
    );
    out.assert_success().assert_stdout("host-only\n");
    t.assert_nothing_left();
}

// ---- PMIx, PMI2 and MPI -----------------------------------------------------------------

#[test]
fn pmix_server_tmpdir_is_bound_at_the_same_path() {
    let t = SlurmTest::new("slurm-pmix-tmpdir");
    let app = app();
    let script = "test -n \"$PMIX_SERVER_TMPDIR\" || { echo \"$PMIX_RANK: no PMIX_SERVER_TMPDIR\"; exit 1; }; \
                  test -d \"$PMIX_SERVER_TMPDIR\" || { echo \"$PMIX_RANK: $PMIX_SERVER_TMPDIR is not a directory\"; exit 1; }; \
                  echo \"$PMIX_RANK: bound\"";
    let out = t.srun(&["--mpi=pmix", "-N2", "-n2", &app, "sh", "-c", script]);
    assert_eq!(
        sorted_lines(&out),
        ["0: bound", "1: bound"],
        "each rank sees PMIX_RANK and the directory named by PMIX_SERVER_TMPDIR:\n{out:?}"
    );
    out.assert_success();
    t.assert_nothing_left();
}

#[test]
fn mpi_ring_over_pmix_passes_across_three_nodes() {
    let t = SlurmTest::new("slurm-ring-nodes");
    let mpi = mpi();
    let out = t.srun(&["--mpi=pmix", "-N3", "-n6", &mpi, "/ring"]);
    assert_ring(&out, 6);
    let hosts: BTreeSet<String> = out
        .stdout_text()
        .lines()
        .filter(|l| l.starts_with("rank "))
        .filter_map(|l| l.split_whitespace().nth(5).map(str::to_string))
        .collect();
    eprintln!("ring hosts (container hostnames): {hosts:?}");
    t.assert_nothing_left();
}

#[test]
fn mpi_ring_over_shared_memory_on_one_node_passes() {
    let t = SlurmTest::new("slurm-ring-vader");
    let mpi = mpi();
    let out = t.srun(&[
        "--mpi=pmix",
        "-N1",
        "-n4",
        &mpi,
        "-e",
        "OMPI_MCA_btl=self,vader",
        "/ring",
    ]);
    assert_ring(&out, 4);
    t.assert_nothing_left();
}

#[test]
fn mpi_ring_over_shared_memory_with_cma_single_copy_passes() {
    let t = SlurmTest::new("slurm-ring-cma");
    let mpi = mpi();
    let out = t.srun(&[
        "--mpi=pmix",
        "-N1",
        "-n4",
        &mpi,
        "-e",
        "OMPI_MCA_btl=self,vader",
        "-e",
        "OMPI_MCA_btl_vader_single_copy_mechanism=cma",
        "-e",
        "RING_CMA=1",
        "/ring",
    ]);
    assert_ring(&out, 4);
    // Open MPI quietly copies through shared memory when CMA fails: the ring itself
    // reads each neighbour's memory with process_vm_readv to show that CMA works.
    let text = out.stdout_text();
    let cma: Vec<&str> = text.lines().filter(|l| l.starts_with("cma ok: ")).collect();
    assert_eq!(cma.len(), 4, "process_vm_readv between the ranks:\n{out:?}");
    t.assert_nothing_left();
}

/// Debian's Open MPI has no PMI-1/PMI-2 client (no s1/s2 components: under `srun
/// --mpi=pmi2` it stops with "OMPI was not built with SLURM's PMI support"), so the
/// PMI_FD path is shown with the PMI wire protocol itself, spoken by busybox's sh over the
/// inherited socket: init, put, a barrier across nodes, get a neighbour's value, finalize.
/// That is what MPICH's and Intel MPI's simple PMI clients do on that socket.
#[test]
fn pmi2_socket_named_by_pmi_fd_works_inside_the_container() {
    let t = SlurmTest::new("slurm-pmi2");
    let app = app();
    let script = r#"
        test -n "$PMI_FD" || { echo "$SLURM_PROCID: no PMI_FD"; exit 1; }
        pmi() {
            printf '%s\n' "$1" >&"$PMI_FD" || { echo "$PMI_RANK: cannot write to fd $PMI_FD"; exit 1; }
            read -r reply <&"$PMI_FD" || { echo "$PMI_RANK: no reply on fd $PMI_FD"; exit 1; }
            case $reply in *rc=0*) ;; *) echo "$PMI_RANK: '$1' answered '$reply'"; exit 1 ;; esac
        }
        pmi "cmd=init pmi_version=1 pmi_subversion=1"
        pmi "cmd=get_my_kvsname"
        kvs=${reply##*kvsname=}; kvs=${kvs%% *}
        pmi "cmd=put kvsname=$kvs key=k$PMI_RANK value=v$PMI_RANK"
        pmi "cmd=barrier_in"
        next=$(( (PMI_RANK + 1) % PMI_SIZE ))
        pmi "cmd=get kvsname=$kvs key=k$next"
        value=${reply##*value=}; value=${value%% *}
        pmi "cmd=finalize"
        echo "$PMI_RANK got $value"
    "#;
    let out = t.srun(&["--mpi=pmi2", "-N2", "-n3", &app, "sh", "-c", script]);
    assert_eq!(
        sorted_lines(&out),
        ["0 got v1", "1 got v2", "2 got v0"],
        "every rank talks PMI over the fd named by PMI_FD and gets its neighbour's value \
         across nodes:\n{out:?}"
    );
    out.assert_success();
    t.assert_nothing_left();
}

// ---- one container per step and node ---------------------------------------------------

/// What a rank prints about where it runs: its namespaces and what /dev/shm and /tmp hold
/// once every rank of the node has written its file there.
const WHERE: &str = r#"
    touch /dev/shm/rank-$SLURM_PROCID /tmp/rank-$SLURM_PROCID
    i=0; while [ "$(ls /dev/shm | grep -c '^rank-')" -lt "$1" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
    echo "pid=$(readlink /proc/self/ns/pid) mnt=$(readlink /proc/self/ns/mnt) ipc=$(readlink /proc/self/ns/ipc) uts=$(readlink /proc/self/ns/uts) user=$(readlink /proc/self/ns/user) shm=$(ls /dev/shm | grep -c '^rank-') tmp=$(ls /tmp | grep -c '^rank-')"
"#;

#[test]
fn ranks_of_one_step_on_one_node_share_one_container() {
    let t = SlurmTest::new("slurm-share");
    let app = app();
    let out = t.srun(&["-N1", "-n4", &app, "sh", "-c", WHERE, "sh", "4"]);
    out.assert_success();
    let lines: BTreeSet<String> = out.stdout_text().lines().map(str::to_string).collect();
    assert_eq!(
        lines.len(),
        1,
        "the 4 ranks run in one container: the same pid, mount, ipc, uts and user \
         namespaces, one /dev/shm and one /tmp holding all 4 files:\n{out:?}"
    );
    let line = lines.iter().next().unwrap();
    assert!(
        line.ends_with("shm=4 tmp=4"),
        "all 4 ranks' files are in the one /dev/shm and /tmp: {line}\n{out:?}"
    );
    t.assert_nothing_left();
}

#[test]
fn no_share_gives_each_rank_its_own_container() {
    let t = SlurmTest::new("slurm-no-share");
    let app = app();
    let out = t.srun(&[
        "-N1",
        "-n4",
        &app,
        "--no-share",
        "sh",
        "-c",
        "readlink /proc/self/ns/pid",
    ]);
    out.assert_success();
    let lines: BTreeSet<String> = out.stdout_text().lines().map(str::to_string).collect();
    assert_eq!(
        lines.len(),
        4,
        "with --no-share each of the 4 ranks has its own pid namespace:\n{out:?}"
    );
    t.assert_nothing_left();
}

#[test]
fn two_steps_of_one_job_do_not_share_a_container() {
    let t = SlurmTest::new("slurm-two-steps");
    let app = app();
    let outdir = t.shared_dir("out");
    // Two steps at once on the one node of the job: one container each.
    let script = format!(
        "#!/bin/sh\n\
         srun -n2 --overlap {app} sh -c 'readlink /proc/self/ns/pid; sleep 1' > {out}/a &\n\
         srun -n2 --overlap {app} sh -c 'readlink /proc/self/ns/pid; sleep 1' > {out}/b &\n\
         wait\n",
        out = s(&outdir)
    );
    let id = t.sbatch(&script, &["-N1", "-n2"]);
    let state = t.wait_job_end(id, Duration::from_secs(60));
    assert_eq!(state, "COMPLETED", "the job ran: {}", t.job_output(id));
    let read = |name: &str| -> BTreeSet<String> {
        fs::read_to_string(outdir.join(name))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    };
    let (a, b) = (read("a"), read("b"));
    assert!(
        a.len() == 1 && b.len() == 1 && a != b,
        "each step's 2 ranks share a container, and the two steps have different ones: \
         step a {a:?}, step b {b:?}; job output: {}",
        t.job_output(id)
    );
    t.assert_nothing_left();
}

// ---- signals: scancel and time limits ---------------------------------------------------

/// The command of the signal tests: traps SIGTERM, and in the trap takes 2 s (less than
/// KillWait) before it writes /out/term; the stub must keep running until it is done.
const TRAPPER: &str = "trap 'sleep 2; echo trapped > /out/term; exit 0' TERM; \
                       echo running > /out/started; while :; do sleep 0.1; done";

/// Submits a batch job whose app traps SIGTERM (LAUNCH: `srun` or `exec`), and waits
/// until the app runs; returns the job id and the volume.
fn start_trapper(t: &SlurmTest, launch: &str, sbatch_args: &[&str]) -> (u32, PathBuf) {
    let outdir = t.shared_dir("out");
    let script = format!(
        "#!/bin/sh\n{launch} {app} -v {out}:/out sh -c \"{TRAPPER}\"\n",
        app = app(),
        out = s(&outdir)
    );
    let id = t.sbatch(&script, sbatch_args);
    let started = outdir.join("started");
    assert!(
        wait_until(Duration::from_secs(60), || started.exists()),
        "the job's app did not start in 60 s (state {}): {}",
        t.job_state(id),
        t.job_output(id)
    );
    (id, outdir)
}

#[track_caller]
fn assert_trapped(t: &SlurmTest, id: u32, outdir: &Path, how: &str) {
    let term = fs::read_to_string(outdir.join("term")).unwrap_or_default();
    assert_eq!(
        term,
        "trapped\n",
        "{how}: the command got SIGTERM and its trap ran to the end (2 s) before the job \
         ended; job output: {}",
        t.job_output(id)
    );
    t.assert_nothing_left();
}

#[test]
fn scancel_lets_the_trap_run_under_srun_in_a_batch_job() {
    let t = SlurmTest::new("slurm-scancel-srun");
    let (id, outdir) = start_trapper(&t, "srun", &[]);
    let cancelled = Instant::now();
    t.scancel(id, &[]);
    let state = t.wait_job_end(id, Duration::from_secs(KILL_WAIT + 30));
    eprintln!(
        "job {id} ended as {state} {:.1} s after scancel",
        cancelled.elapsed().as_secs_f64()
    );
    assert_eq!(state, "CANCELLED", "{}", t.job_output(id));
    assert_trapped(
        &t,
        id,
        &outdir,
        "plain scancel of a job running `srun ./app`",
    );
}

#[test]
fn scancel_lets_the_trap_run_when_the_batch_script_execs_the_app() {
    let t = SlurmTest::new("slurm-scancel-exec");
    let (id, outdir) = start_trapper(&t, "exec", &[]);
    t.scancel(id, &[]);
    let state = t.wait_job_end(id, Duration::from_secs(KILL_WAIT + 30));
    assert_eq!(state, "CANCELLED", "{}", t.job_output(id));
    assert_trapped(&t, id, &outdir, "plain scancel of a job that execs ./app");
}

#[test]
fn scancel_signal_term_reaches_the_command_and_the_job_then_ends() {
    let t = SlurmTest::new("slurm-scancel-term");
    let (id, outdir) = start_trapper(&t, "srun", &[]);
    // Only SIGTERM, no SIGKILL to follow: the job ends because the command exits.
    t.scancel(id, &["--signal=TERM"]);
    let state = t.wait_job_end(id, Duration::from_secs(30));
    assert_trapped(&t, id, &outdir, "scancel --signal=TERM");
    assert_eq!(
        state,
        "COMPLETED",
        "the trap's exit 0 ended the step and the script: {}",
        t.job_output(id)
    );
}

/// A real time limit: `--time=1` (Slurm's least, a minute; slurmctld checks limits
/// every 30 s, so it takes 60 to 90 s), then SIGTERM and KillWait before SIGKILL, as
/// scancel does.
#[test]
fn time_limit_lets_the_trap_run() {
    let t = SlurmTest::new("slurm-time-limit");
    let (id, outdir) = start_trapper(&t, "srun", &["--time=1"]);
    let state = t.wait_job_end(id, Duration::from_secs(150));
    assert_eq!(state, "TIMEOUT", "{}", t.job_output(id));
    assert_trapped(&t, id, &outdir, "the job's time limit");
}
