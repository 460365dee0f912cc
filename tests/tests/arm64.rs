//! The aarch64 stub (issue 15). On this x86_64 machine: an arm64 image packed without a
//! flag gets the aarch64 stub, an x86_64 stub forced onto it is refused in one line. On a
//! real arm64 kernel (scripts/arm64-vm.sh: Debian's arm64 cloud kernel under
//! qemu-system-aarch64, TCG): arm64 busybox and Debian images packed here start, extract
//! once, run as the user in both mappings, keep exit codes, honour --read-only and
//! volumes, and the seccomp filter refuses what it denies.
//!
//! The VM runs once per test binary; each check below reads its own line of the serial
//! console. Nothing is skipped: without qemu, the kernel package or the arm64 packages,
//! every VM test fails with the reason.
use binctr_tests::Env;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The arm64 fixtures (build/arm64/, made by scripts/arm64-vm.sh build, which test.sh runs).
fn arm64_fixture(name: &str) -> PathBuf {
    let path = Env::get().fixtures.join("arm64").join(name);
    assert!(
        path.is_file(),
        "{} is missing: run scripts/arm64-vm.sh build (scripts/test.sh does)",
        path.display()
    );
    path
}

fn packer() -> Command {
    Command::new(Env::get().packer())
}

/// A scratch directory of this test binary.
fn scratch(name: &str) -> PathBuf {
    let dir = Env::get().base.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn stub_line(packed: &Path) -> String {
    let out = packer().arg("inspect").arg(packed).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with("stub"))
        .unwrap_or_default()
        .to_string()
}

#[test]
fn an_arm64_image_packed_here_gets_the_aarch64_stub_without_flags() {
    let dir = scratch("arm64-pack");
    for image in ["busybox-arm64.tar", "debian-arm64.tar"] {
        let out = dir.join(image.replace(".tar", ""));
        let status = packer()
            .arg(arm64_fixture(image))
            .arg("-o")
            .arg(&out)
            .status()
            .unwrap();
        assert!(status.success(), "packing {image}");
        let line = stub_line(&out);
        assert!(
            line.contains("aarch64 (runs linux/arm64 images)"),
            "{image}: {line}"
        );
        let stub_len = std::fs::metadata(Env::get().dist.join("binctr-stub-aarch64"))
            .unwrap()
            .len();
        assert!(line.contains(&format!("{stub_len} bytes")), "{line}");
    }
    // The stub chosen after the payload is written (the rootfs's programs tell) gives
    // the same bytes as the same stub given by hand.
    let by_hand = dir.join("by-hand");
    let status = packer()
        .arg(arm64_fixture("busybox-arm64.tar"))
        .arg("--stub")
        .arg(Env::get().dist.join("binctr-stub-aarch64"))
        .arg("-o")
        .arg(&by_hand)
        .status()
        .unwrap();
    assert!(status.success());
    assert!(
        std::fs::read(&by_hand).unwrap() == std::fs::read(dir.join("busybox-arm64")).unwrap(),
        "packing with and without --stub differs"
    );
    // The x86_64 example image still gets the x86_64 stub.
    let out = dir.join("busybox-x86_64");
    let status = packer()
        .arg(Env::get().fixture("busybox.tar"))
        .arg("-o")
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    assert!(stub_line(&out).contains("x86_64 (runs linux/amd64 images)"));
    // --platform overrides what the programs say.
    let out = dir.join("forced");
    let status = packer()
        .arg(arm64_fixture("busybox-arm64.tar"))
        .args(["--platform", "linux/amd64", "-o"])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    assert!(stub_line(&out).contains("x86_64"));
}

#[test]
fn an_x86_64_stub_forced_onto_an_arm64_image_is_refused_in_one_line() {
    let dir = scratch("arm64-refused");
    let out = dir.join("refused");
    let image = arm64_fixture("busybox-arm64.tar");
    let stub = Env::get().stub();
    let result = packer()
        .arg(&image)
        .arg("--stub")
        .arg(&stub)
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(1), "{stderr}");
    assert_eq!(
        stderr,
        format!(
            "binctr-pack: --stub {} is an x86_64 stub, but {} is for linux/arm64 (/bin/sh): leave out --stub to pack onto the built-in stub for the image's CPU\n",
            stub.display(),
            image.display()
        )
    );
    assert!(!out.exists(), "nothing is left behind");
    // The aarch64 stub given by hand is accepted.
    let status = packer()
        .arg(&image)
        .arg("--stub")
        .arg(Env::get().dist.join("binctr-stub-aarch64"))
        .arg("-o")
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn both_stubs_are_under_one_mib() {
    for name in ["binctr-stub", "binctr-stub-aarch64"] {
        let len = std::fs::metadata(Env::get().dist.join(name)).unwrap().len();
        assert!(len <= 1 << 20, "{name} is {len} bytes");
    }
}

/// One line of the VM's serial console: `@@ NAME rc=CODE secs=S out=OUTPUT`.
#[derive(Debug, Clone)]
struct Check {
    rc: i32,
    out: String,
    line: String,
}

struct Vm {
    checks: HashMap<String, Check>,
    console: String,
}

/// Boots the VM once; Err with the reason (and the console) when it could not run.
fn vm() -> &'static Result<Vm, String> {
    static VM: OnceLock<Result<Vm, String>> = OnceLock::new();
    VM.get_or_init(|| {
        let env = Env::get();
        let start = Instant::now();
        let out = Command::new("bash")
            .arg(repo().join("scripts/arm64-vm.sh"))
            .arg("run")
            .env("BINCTR_DIST", &env.dist)
            .env("BINCTR_FIXTURES", &env.fixtures)
            .output()
            .map_err(|e| format!("cannot run scripts/arm64-vm.sh: {e}"))?;
        let console = String::from_utf8_lossy(&out.stdout).replace('\r', "");
        let stderr = String::from_utf8_lossy(&out.stderr);
        eprintln!(
            "arm64 VM: {:.0} s in all\n{stderr}",
            start.elapsed().as_secs_f64()
        );
        if !out.status.success() {
            return Err(format!(
                "scripts/arm64-vm.sh run failed ({}):\n{stderr}\n--- console ---\n{console}",
                out.status
            ));
        }
        let mut checks = HashMap::new();
        for line in console.lines() {
            let Some(rest) = line.trim().strip_prefix("@@ ") else {
                continue;
            };
            let (name, fields) = rest.split_once(' ').unwrap_or((rest, ""));
            let rc = fields
                .split_whitespace()
                .find_map(|f| f.strip_prefix("rc="))
                .and_then(|v| v.parse().ok())
                .unwrap_or(-1);
            let out = fields
                .split_once("out=")
                .map(|(_, o)| o.trim_end_matches('|').to_string())
                .unwrap_or_default();
            checks.insert(
                name.to_string(),
                Check {
                    rc,
                    out,
                    line: line.to_string(),
                },
            );
        }
        Ok(Vm { checks, console })
    })
}

/// The check NAME of the VM run; fails the test with why when it is not there.
#[track_caller]
fn check(name: &str) -> Check {
    let vm = match vm() {
        Ok(vm) => vm,
        Err(why) => panic!("the arm64 VM did not run: {why}"),
    };
    match vm.checks.get(name) {
        Some(c) => c.clone(),
        None => panic!("no line '@@ {name}' on the VM's console:\n{}", vm.console),
    }
}

#[track_caller]
fn ok(name: &str) -> String {
    let c = check(name);
    assert_eq!(c.rc, 0, "{}", c.line);
    c.out
}

#[test]
fn vm_boots_an_arm64_kernel_and_runs_to_the_end() {
    let boot = check("boot");
    assert!(boot.line.contains("machine=aarch64"), "{}", boot.line);
    eprintln!("{}", boot.line);
    assert_eq!(check("overlay").rc, 0, "insmod overlay.ko");
    check("done");
    let host = ok("id-host");
    assert!(
        host.starts_with("uid=1000(tester) gid=1000(tester)"),
        "{host}"
    );
}

#[test]
fn vm_busybox_starts_as_aarch64_in_both_mappings() {
    assert_eq!(ok("first-run-subid"), "aarch64");
    assert_eq!(ok("warm-run-subid"), "aarch64");
    assert_eq!(ok("uname-single"), "aarch64");
}

#[test]
fn vm_holder_sleeps_in_the_stubs_own_aarch64_program_not_in_the_packed_file() {
    // One holder, alive (its tiny program did not crash), named, and mapping nothing of
    // the packed file (which a user may then delete, or unmount its filesystem).
    let holder = ok("holder");
    assert_eq!(
        holder, "/memfd:binctr-userns (deleted)|binctr-userns|S (sleeping)",
        "{holder:?}"
    );
}

#[test]
fn vm_extracts_once() {
    // One image: a format 1 entry, or a format 2 image entry and its one layer.
    let first = ok("cache-after-first");
    let images = first
        .split('|')
        .filter(|e| !e.starts_with("layers/"))
        .count();
    assert_eq!(images, 1, "one cache entry: {first}");
    assert_eq!(
        ok("cache-after-warm"),
        first,
        "the same entry, not extracted again"
    );
}

#[test]
fn vm_id_as_mapped_under_subordinate_ids() {
    assert!(
        ok("id-subid").starts_with("uid=0(root) gid=0(root)"),
        "{}",
        check("id-subid").line
    );
    assert!(
        ok("id-subid-user").starts_with("uid=65534(nobody) gid=65534(nogroup)"),
        "{}",
        check("id-subid-user").line
    );
    let maps: Vec<Vec<String>> = ok("maps-subid")
        .split('|')
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect();
    assert_eq!(
        maps,
        [["0", "1000", "1"], ["1", "100000", "65536"]],
        "{}",
        check("maps-subid").line
    );
}

#[test]
fn vm_id_as_mapped_under_a_single_mapping() {
    assert!(ok("id-single").starts_with("uid=0(root) gid=0(root)"));
    let maps: Vec<String> = ok("maps-single")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert_eq!(maps, ["0", "1000", "1"]);
}

#[test]
fn vm_exit_codes_are_kept() {
    for (name, code) in [
        ("exit-3", 3),
        ("exit-3-single", 3),
        ("missing-command", 127),
        ("missing-command-single", 127),
        ("debian-exit", 3),
        ("debian-missing-command", 127),
    ] {
        let c = check(name);
        assert_eq!(c.rc, code, "{}", c.line);
    }
}

#[test]
fn vm_read_only_root() {
    for name in ["read-only", "read-only-single", "debian-read-only"] {
        let c = check(name);
        assert_ne!(c.rc, 0, "{}", c.line);
        assert!(c.out.contains("Read-only file system"), "{}", c.line);
    }
    assert_eq!(ok("writable"), "w");
}

#[test]
fn vm_volumes() {
    assert_eq!(ok("volume"), "from the host volume");
    assert_eq!(ok("debian-volume"), "from the host volume");
    ok("volume-write-single");
    assert_eq!(ok("volume-written"), "back");
}

#[test]
fn vm_seccomp_refuses_what_it_denies() {
    assert!(
        ok("seccomp-status").ends_with('2'),
        "{}",
        check("seccomp-status").line
    );
    assert!(
        ok("debian-seccomp").ends_with('2'),
        "{}",
        check("debian-seccomp").line
    );
    // unshare(CLONE_NEWUSER) needs no capability: only the filter refuses it, as the
    // run with the filter off shows.
    for name in ["seccomp-unshare", "seccomp-unshare-single"] {
        let c = check(name);
        assert_ne!(c.rc, 0, "{}", c.line);
        assert!(c.out.contains("Operation not permitted"), "{}", c.line);
    }
    ok("seccomp-unconfined");
}

#[test]
fn vm_debian_starts_in_both_mappings() {
    assert_eq!(ok("debian-first-run"), "aarch64");
    assert_eq!(
        ok("debian-id-subid"),
        "uid=0(root) gid=0(root) groups=0(root)"
    );
    assert_eq!(
        ok("debian-id-single"),
        "uid=0(root) gid=0(root) groups=0(root)"
    );
    assert!(
        ok("debian-os").starts_with("12."),
        "{}",
        check("debian-os").line
    );
}
