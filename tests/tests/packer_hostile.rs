//! Issue 17, end to end: the packer against images made by someone else. The image's
//! author is the neighbour (BINCTR_NEIGHBOUR_USER owns the hostile inputs when it is
//! set), the packing user is the victim: a 0600 secret of the victim must never reach a
//! packed file, a small input must not cost gigabytes (peak RSS under 64 MiB), nothing
//! may abort or outlive its timeout, nothing from the image may put an ESC byte on the
//! terminal, outputs honour the umask, and every integrity gap is refused with one line
//! and no output file.
//!
//! The hostile inputs are made here, with python3's json, hashlib, gzip and tarfile
//! ([`PRELUDE`]) and raw tar headers where the tools would refuse.
use binctr_tests::{Output, Test};
use std::fs;
use std::os::unix::fs::{lchown, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Anything the packer does here takes a second or two; a hang is caught long before
/// the harness's own minute.
const QUICK: Duration = Duration::from_secs(30);

/// Peak RSS allowed to a packer fed a memory bomb.
const MAX_RSS_KIB: u64 = 64 * 1024;

/// The victim's secret, as it would be in `~/.ssh/id_rsa`.
const SECRET: &[u8] = b"-----BEGIN OPENSSH PRIVATE KEY----- victim-secret-7f3a9c";

/// Helpers for the python scripts that make the inputs.
const PRELUDE: &str = r#"
import sys, os, json, hashlib, gzip, tarfile

def sha(b):
    return 'sha256:' + hashlib.sha256(b).hexdigest()

def num(n, width):
    if n < 8 ** (width - 1):
        return b'%0*o\0' % (width - 1, n)
    return bytes([0x80]) + n.to_bytes(width - 1, 'big')

def hdr(name, typ=b'0', size=0, link=b''):
    h = bytearray(512)
    h[0:len(name)] = name
    h[100:108] = num(0o644, 8)
    h[108:116] = num(0, 8)
    h[116:124] = num(0, 8)
    h[124:136] = num(size, 12)
    h[136:148] = num(1700000000, 12)
    h[156:157] = typ
    h[157:157 + len(link)] = link
    h[257:265] = b'ustar  \0'
    return h

def seal(h):
    h[148:156] = b'        '
    h[148:156] = b'%06o\0 ' % sum(h)
    return bytes(h)

def pad(b):
    return b + b'\0' * (-len(b) % 512)

def entry(name, data=b'', typ=b'0', link=b''):
    return seal(hdr(name, typ, len(data), link)) + pad(data)

END = b'\0' * 1024

def put(root, data):
    os.makedirs(os.path.join(root, 'blobs', 'sha256'), exist_ok=True)
    d = sha(data)
    with open(os.path.join(root, 'blobs', 'sha256', d[7:]), 'wb') as f:
        f.write(data)
    return d

def index(root, manifests):
    with open(os.path.join(root, 'index.json'), 'w') as f:
        json.dump({'schemaVersion': 2, 'manifests': manifests}, f)

def oci(root, layers, diff_ids=None, media='application/vnd.oci.image.layer.v1.tar',
        config=None, lie=0, name='img', arch='amd64', write_index=True):
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, 'oci-layout'), 'w') as f:
        f.write('{"imageLayoutVersion":"1.0.0"}')
    if diff_ids is None:
        diff_ids = [sha(l) for l in layers]
    cfg = {'architecture': arch, 'os': 'linux', 'config': config or {},
           'rootfs': {'type': 'layers', 'diff_ids': diff_ids}}
    cb = json.dumps(cfg).encode()
    ls = [{'mediaType': media, 'digest': put(root, l), 'size': len(l) + lie} for l in layers]
    mb = json.dumps({'schemaVersion': 2,
                     'mediaType': 'application/vnd.oci.image.manifest.v1+json',
                     'config': {'mediaType': 'application/vnd.oci.image.config.v1+json',
                                'digest': put(root, cb), 'size': len(cb)},
                     'layers': ls}).encode()
    m = {'mediaType': 'application/vnd.oci.image.manifest.v1+json',
         'digest': put(root, mb), 'size': len(mb),
         'annotations': {'org.opencontainers.image.ref.name': name},
         'platform': {'architecture': arch, 'os': 'linux'}}
    if write_index:
        index(root, [m])
    return m

def docker(root, layers, diff_ids, tags, config=None, created=None, entries=1):
    os.makedirs(root, exist_ok=True)
    cfg = {'architecture': 'amd64', 'os': 'linux', 'config': config or {}}
    if created is not None:
        cfg['created'] = created
    if diff_ids is not None:
        cfg['rootfs'] = {'type': 'layers', 'diff_ids': diff_ids}
    cb = json.dumps(cfg).encode()
    cname = hashlib.sha256(cb).hexdigest() + '.json'
    with open(os.path.join(root, cname), 'wb') as f:
        f.write(cb)
    for name, data in layers:
        if data is not None:
            p = os.path.join(root, name)
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, 'wb') as f:
                f.write(data)
    manifest = [{'Config': cname, 'RepoTags': [t], 'Layers': [n for n, _ in layers]}
                for t in tags[:entries]]
    with open(os.path.join(root, 'manifest.json'), 'w') as f:
        json.dump(manifest, f)

def layer_name(data):
    return hashlib.sha256(data).hexdigest() + '/layer.tar'

def archive(root, out):
    with tarfile.open(out, 'w', format=tarfile.GNU_FORMAT) as t:
        for name in sorted(os.listdir(root)):
            t.add(os.path.join(root, name), arcname=name)

A = sys.argv[1:]
"#;

/// Runs a python script (after [`PRELUDE`]) with `args` as `A`.
fn py(script: &str, args: &[&Path]) {
    let out = Command::new("python3")
        .arg("-c")
        .arg(format!("{PRELUDE}\n{script}"))
        .args(args)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "python3 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The neighbour's uid and gid, when BINCTR_NEIGHBOUR_USER names one.
fn neighbour() -> Option<(u32, u32)> {
    let name = std::env::var("BINCTR_NEIGHBOUR_USER").ok()?;
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() > 3 && f[0] == name).then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
    })
}

/// Hands a tree to the neighbour, its author (when there is one; root made it else).
fn authored_by_neighbour(path: &Path) {
    let Some((uid, gid)) = neighbour() else {
        return;
    };
    lchown(path, Some(uid), Some(gid)).unwrap();
    if fs::symlink_metadata(path).unwrap().is_dir() {
        for entry in fs::read_dir(path).unwrap() {
            authored_by_neighbour(&entry.unwrap().path());
        }
    }
}

/// The victim's private directory (0700) with its secret (0600), and a tar of it.
fn victim(t: &Test) -> (PathBuf, PathBuf) {
    let dir = t.dir.join("victim");
    fs::create_dir(&dir).unwrap();
    let secret = dir.join("id_rsa");
    fs::write(&secret, SECRET).unwrap();
    let tar = dir.join("private.tar");
    py(
        "open(A[1], 'wb').write(entry(b'id_rsa', open(A[0], 'rb').read()) + END)",
        &[&secret, &tar],
    );
    for (path, mode) in [(&secret, 0o600), (&tar, 0o600), (&dir, 0o700)] {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }
    (secret, tar)
}

fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success(), "mkfifo {}", path.display());
}

fn packer(t: &Test) -> binctr_tests::Cmd {
    t.packer().timeout(QUICK)
}

fn pack(t: &Test, input: &Path, out: &Path, flags: &[&str]) -> Output {
    packer(t).arg(input).arg("-o").arg(out).args(flags).run()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    // Quick on a tar of mostly zeros: only where the first byte matches is compared.
    let mut from = 0;
    while let Some(at) = haystack[from..].iter().position(|&b| b == needle[0]) {
        if haystack[from + at..].starts_with(needle) {
            return true;
        }
        from += at + 1;
    }
    false
}

/// Nothing a terminal would act on: no ESC, BEL or C1 control (U+0080..U+009F).
#[track_caller]
fn assert_no_escapes(out: &Output) {
    for (name, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        assert!(!bytes.contains(&0x1b), "an ESC byte on {name}:\n{out:?}");
        assert!(!bytes.contains(&0x07), "a BEL byte on {name}:\n{out:?}");
        let text = String::from_utf8_lossy(bytes);
        assert!(
            !text.chars().any(|c| ('\u{80}'..='\u{9f}').contains(&c)),
            "a C1 control on {name}:\n{out:?}"
        );
    }
}

/// Exit 1, one short line "binctr-pack: ..." naming `needle`, no ESC, no output file
/// and no temporary file left beside it.
#[track_caller]
fn assert_refused(out: &Output, dest: &Path, needle: &str) {
    assert_eq!(out.code, Some(1), "exit 1 expected:\n{out:?}");
    out.assert_one_error_line("binctr-pack: ");
    assert!(out.stderr.len() < 1000, "the error line is short:\n{out:?}");
    assert!(
        out.stderr_text().contains(needle),
        "expected {needle:?}:\n{out:?}"
    );
    assert_no_escapes(out);
    assert!(!dest.exists(), "{} was written:\n{out:?}", dest.display());
    let dir = dest.parent().unwrap();
    let name = dest.file_name().unwrap().to_string_lossy().into_owned();
    let leftovers: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!(".{name}.tmp-")))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

/// The payload tar of a packed file.
fn extract(t: &Test, packed: &Path) -> Vec<u8> {
    let out = packer(t).arg("extract").arg(packed).args(["-o", "-"]).run();
    out.assert_success();
    out.stdout
}

/// Packs under a python wrapper that reports the packer's peak RSS in KiB.
fn pack_measured(t: &Test, input: &Path, dest: &Path) -> (Output, u64) {
    let rss = t.dir.join("rss");
    let wrapper = "import resource, subprocess, sys\n\
                   code = subprocess.call(sys.argv[2:])\n\
                   open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))\n\
                   sys.exit(code)";
    let out = t
        .cmd(Path::new("/usr/bin/python3"))
        .as_current_user()
        .timeout(Duration::from_secs(120))
        .arg("-c")
        .arg(wrapper)
        .arg(&rss)
        .arg(t.env.packer())
        .arg(input)
        .arg("-o")
        .arg(dest)
        .run();
    let kib = fs::read_to_string(&rss)
        .unwrap_or_else(|e| panic!("no peak RSS from the wrapper ({e}):\n{out:?}"))
        .trim()
        .parse()
        .unwrap();
    (out, kib)
}

// ---- 1. a directory input is read by handle --------------------------------------------

#[test]
fn a_rootfs_directory_never_follows_symlinks_nor_opens_fifos() {
    let t = Test::new("ph-dir");
    let (secret, _) = victim(&t);
    let root = t.dir.join("rootfs");
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::write(root.join("etc/hostname"), b"neighbour\n").unwrap();
    // Where a subdirectory was, a symlink to the victim's home; a link to the key.
    std::os::unix::fs::symlink(secret.parent().unwrap(), root.join("home")).unwrap();
    std::os::unix::fs::symlink(&secret, root.join("etc/key")).unwrap();
    mkfifo(&root.join("pipe"));
    authored_by_neighbour(&root);
    let dest = t.dir.join("packed");
    pack(&t, &root, &dest, &[]).assert_success();
    let tar = extract(&t, &dest);
    assert!(!contains(&tar, SECRET), "the victim's secret was packed");
    assert!(contains(&tar, b"neighbour\n"));
    assert!(contains(&tar, b"pipe"), "the FIFO is an entry");
    // A path without a last name gives its directory's name, not where it lies.
    let odd = root.join("etc/..");
    let dest = t.dir.join("odd");
    pack(&t, &odd, &dest, &[]).assert_success();
    let json = packer(&t).args(["inspect", "--json"]).arg(&dest).run();
    json.assert_success();
    let config: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(config["config"]["reference"], "rootfs", "{json:?}");
}

/// The neighbour's attack on a directory being packed: when the packer opens `big`, the
/// directory holding it is renamed away and a symlink to the victim's directory takes
/// its place, so that the next name of that directory (`id_rsa`), looked up again by
/// path, would be the victim's.
const SWAP_ON_OPEN: &str = r#"
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.inotify_init1(0)
IN_OPEN = 0x20
if fd < 0 or libc.inotify_add_watch(fd, sys.argv[1].encode(), IN_OPEN) < 0:
    sys.exit('inotify: errno %d' % ctypes.get_errno())
print('ready', flush=True)
os.read(fd, 4096)
os.rename(sys.argv[2], sys.argv[2] + '.away')
os.symlink(sys.argv[3], sys.argv[2])
print('swapped', flush=True)
"#;

#[test]
fn a_directory_swapped_for_a_symlink_mid_walk_does_not_redirect_it() {
    use std::io::{BufRead, BufReader};
    let t = Test::new("ph-dir-swap");
    let (secret, _) = victim(&t);
    let root = t.dir.join("rootfs");
    let sub = root.join("d");
    fs::create_dir_all(&sub).unwrap();
    // Long to read (sparse: no disk), and a decoy named like the victim's key.
    fs::File::create(sub.join("big"))
        .unwrap()
        .set_len(128 << 20)
        .unwrap();
    fs::write(sub.join("id_rsa"), b"the neighbour's decoy\n").unwrap();
    authored_by_neighbour(&root);
    let mut attacker = match neighbour() {
        Some((uid, gid)) => {
            let mut c = Command::new("/usr/bin/setpriv");
            c.arg(format!("--reuid={uid}"))
                .arg(format!("--regid={gid}"))
                .args(["--clear-groups", "--", "/usr/bin/python3"]);
            c
        }
        None => Command::new("/usr/bin/python3"),
    };
    let mut attacker = attacker
        .arg("-c")
        .arg(SWAP_ON_OPEN)
        .arg(sub.join("big"))
        .arg(&sub)
        .arg(secret.parent().unwrap())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(attacker.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    let dest = t.dir.join("packed");
    let out = pack(&t, &root, &dest, &[]);
    let swapped = lines.next().map(|l| l.unwrap());
    let _ = attacker.kill();
    attacker.wait().unwrap();
    assert_eq!(
        swapped.as_deref(),
        Some("swapped"),
        "the attack ran:\n{out:?}"
    );
    assert_no_escapes(&out);
    if out.code == Some(0) {
        let tar = extract(&t, &dest);
        assert!(!contains(&tar, SECRET), "the victim's secret was packed");
        assert!(contains(&tar, b"the neighbour's decoy"), "{out:?}");
    } else {
        assert_refused(&out, &dest, "changed while it was packed");
    }
}

#[test]
fn image_directories_refuse_symlinked_and_special_blobs() {
    let t = Test::new("ph-blobs");
    let (_, private) = victim(&t);
    let private_bytes = fs::read(&private).unwrap();
    // docker-archive directory: the layer is a symlink to the victim's private tar,
    // and the config's diff_id even matches it.
    let docker = t.dir.join("docker");
    py(
        "data = open(A[1], 'rb').read()\n\
         docker(A[0], [(layer_name(data), None)], [sha(data)], ['x:latest'])\n\
         os.makedirs(os.path.join(A[0], layer_name(data).split('/')[0]))\n\
         os.symlink(A[1], os.path.join(A[0], layer_name(data)))",
        &[&docker, &private],
    );
    authored_by_neighbour(&docker);
    let dest = t.dir.join("packed");
    let out = pack(&t, &docker, &dest, &[]);
    assert_refused(
        &out,
        &dest,
        "is a symbolic link, not a regular file inside the image directory: refused",
    );
    // The layer's directory a symlink (to the victim's directory) instead.
    let via = t.dir.join("docker-via-dir");
    py(
        "data = open(A[1], 'rb').read()\n\
         name = layer_name(data)\n\
         docker(A[0], [(name, None)], [sha(data)], ['x:latest'])\n\
         d = os.path.join(A[2], name.split('/')[0])\n\
         os.makedirs(d)\n\
         os.link(A[1], os.path.join(d, 'layer.tar'))\n\
         os.symlink(d, os.path.join(A[0], name.split('/')[0]))",
        &[&via, &private, &t.dir.join("victim")],
    );
    let out = pack(&t, &via, &dest, &[]);
    assert_refused(&out, &dest, "is a symbolic link");
    // OCI layout directory: a blob that is a symlink, then one that is a FIFO.
    let oci = t.dir.join("oci");
    py(
        "data = open(A[1], 'rb').read()\n\
         oci(A[0], [data])\n\
         p = os.path.join(A[0], 'blobs', 'sha256', sha(data)[7:])\n\
         os.remove(p)\n\
         os.symlink(A[1], p)",
        &[&oci, &private],
    );
    let out = pack(&t, &oci, &dest, &[]);
    assert_refused(&out, &dest, "is a symbolic link");
    let blob = oci.join("blobs/sha256").join(sha256_hex(&private_bytes));
    fs::remove_file(&blob).unwrap();
    mkfifo(&blob);
    let out = pack(&t, &oci, &dest, &[]);
    assert_refused(
        &out,
        &dest,
        "is a FIFO, not a regular file inside the image directory",
    );
}

fn sha256_hex(bytes: &[u8]) -> String {
    let out = Command::new("python3")
        .args([
            "-c",
            "import hashlib,sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(bytes)?;
            child.wait_with_output()
        })
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

// ---- 3. memory bombs --------------------------------------------------------------------

#[test]
fn two_thousand_names_of_a_mebibyte_in_an_oci_archive_cost_no_memory() {
    let t = Test::new("ph-names-bomb");
    let input = t.dir.join("bomb.tar");
    // One gzip member for each 1 MiB long name and one for what differs: 2.2 MB that
    // decompress to 2 GiB of names.
    py(
        "N = 1 << 20\n\
         head = gzip.compress(seal(hdr(b'././@LongLink', b'L', N + 1)) + b'a' * (N - 8), 6)\n\
         layer = b''\n\
         for i in range(2000):\n\
         \x20   tail = b'%08d' % i + b'\\0' + b'\\0' * (-(N + 1) % 512) + entry(b'x')\n\
         \x20   layer += head + gzip.compress(tail)\n\
         layer += gzip.compress(END)\n\
         root = A[0] + '.d'\n\
         oci(root, [layer], diff_ids=['sha256:' + '0' * 64],\n\
         \x20   media='application/vnd.oci.image.layer.v1.tar+gzip')\n\
         archive(root, A[0])",
        &[&input],
    );
    let size = fs::metadata(&input).unwrap().len();
    assert!(size < 4 << 20, "the bomb is small: {size} bytes");
    let dest = t.dir.join("packed");
    let (out, kib) = pack_measured(&t, &input, &dest);
    assert_refused(
        &out,
        &dest,
        "long name of 1048577 bytes (more than the 16384 allowed)",
    );
    eprintln!("2000 names of 1 MiB: peak RSS {kib} KiB");
    assert!(kib < MAX_RSS_KIB, "peak RSS {kib} KiB:\n{out:?}");
}

#[test]
fn a_gibibyte_long_name_in_a_tar_gz_costs_no_memory() {
    let t = Test::new("ph-long-name");
    let input = t.dir.join("long.tar.gz");
    py(
        "N = 1 << 30\n\
         chunk = gzip.compress(b'a' * (1 << 20), 9)\n\
         with open(A[0], 'wb') as f:\n\
         \x20   f.write(gzip.compress(seal(hdr(b'././@LongLink', b'L', N + 1))))\n\
         \x20   for _ in range(1024):\n\
         \x20       f.write(chunk)\n\
         \x20   f.write(gzip.compress(b'\\0' * 511 + entry(b'x') + END))",
        &[&input],
    );
    let dest = t.dir.join("packed");
    let (out, kib) = pack_measured(&t, &input, &dest);
    assert_refused(
        &out,
        &dest,
        "a long name of 1073741825 bytes (more than the 16384 allowed)",
    );
    eprintln!("a 1 GiB long name: peak RSS {kib} KiB");
    assert!(kib < MAX_RSS_KIB, "peak RSS {kib} KiB:\n{out:?}");
}

// ---- 4. nothing from the image reaches the terminal raw ---------------------------------

/// A docker-archive whose tags and config are full of terminal escapes: a title change,
/// a screen clear, an OSC 52 clipboard write, colours, a C1 CSI.
fn escapes_archive(t: &Test, name: &str, entries: usize, missing_layer: bool) -> PathBuf {
    let input = t.dir.join(format!("{name}.tar"));
    let flags = format!("{entries} {}", u8::from(missing_layer));
    py(
        "entries, missing = map(int, A[1].split())\n\
         data = entry(b'hello', b'hi\\n') + END\n\
         config = {'Env': ['A=\\x1b]0;pwned\\x07'], 'User': '\\x1b[2J\\x1b[H',\n\
         \x20         'WorkingDir': '/w\\x1b[31m', 'Labels': {'l\\x1b[1m': 'v\\x1b]52;c;cHduZWQ=\\x07'},\n\
         \x20         'StopSignal': 'SIG\\x9b0m', 'ExposedPorts': {'80/tcp\\x1b[K': {}},\n\
         \x20         'Volumes': {'/v\\x1b[H': {}}, 'Entrypoint': ['/bin/echo', '\\x1b[31mred']}\n\
         tags = ['evil\\x1b]0;packed OK\\x07:latest', 'other\\x1b[2J:latest']\n\
         name = '\\x1b[2J' + layer_name(data) if missing else layer_name(data)\n\
         root = A[0] + '.d'\n\
         docker(root, [(name, None if missing else data)], [sha(data)], tags, config,\n\
         \x20      created='2024\\x1b[8m', entries=entries)\n\
         archive(root, A[0])",
        &[&input, Path::new(&flags)],
    );
    input
}

#[test]
fn image_strings_are_escaped_in_errors_and_inspect() {
    let t = Test::new("ph-escapes");
    let dest = t.dir.join("packed");
    // Pack errors: two images (their tags listed), an unknown one, a missing layer.
    let two = escapes_archive(&t, "two", 2, false);
    let out = pack(&t, &two, &dest, &[]);
    assert_refused(
        &out,
        &dest,
        "holds 2 images (evil\\u{1b}]0;packed OK\\u{7}:latest",
    );
    let out = pack(&t, &two, &dest, &["--image", "nope"]);
    assert_refused(&out, &dest, "has no image \"nope\"");
    let missing = escapes_archive(&t, "missing", 1, true);
    let out = pack(&t, &missing, &dest, &[]);
    assert_refused(&out, &dest, "blob \\u{1b}[2J");
    // inspect shows every config string escaped, --json exactly.
    let one = escapes_archive(&t, "one", 1, false);
    pack(&t, &one, &dest, &[]).assert_success();
    let text = packer(&t).arg("inspect").arg(&dest).run();
    text.assert_success();
    assert_no_escapes(&text);
    for shown in [
        "evil\\u{1b}]0;packed OK\\u{7}:latest",
        "\\u{1b}[2J\\u{1b}[H",
        "l\\u{1b}[1m=v\\u{1b}]52;c;cHduZWQ=\\u{7}",
        "SIG\\u{9b}0m",
        "[\"/bin/echo\",\"\\u{1b}[31mred\"]",
    ] {
        assert!(text.stdout_text().contains(shown), "{shown}:\n{text:?}");
    }
    let json = packer(&t).args(["inspect", "--json"]).arg(&dest).run();
    json.assert_success();
    assert!(!json.stdout.contains(&0x1b), "{json:?}");
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(value["config"]["user"], "\x1b[2J\x1b[H");
    assert_eq!(
        value["config"]["reference"],
        "evil\x1b]0;packed OK\x07:latest"
    );
}

// ---- 5. modes under the umask -----------------------------------------------------------

#[test]
fn outputs_honour_the_umask() {
    let t = Test::new("ph-umask");
    let busybox = t.env.fixture("busybox.tar");
    let under_077 = |args: &[&Path]| {
        t.cmd(Path::new("/bin/sh"))
            .as_current_user()
            .timeout(QUICK)
            .args(["-c", "umask 077; exec \"$@\"", "sh"])
            .arg(t.env.packer())
            .args(args)
            .run()
    };
    let mode = |p: &Path| fs::metadata(p).unwrap().mode() & 0o7777;
    let packed = t.dir.join("packed");
    under_077(&[&busybox, Path::new("-o"), &packed]).assert_success();
    assert_eq!(mode(&packed), 0o700, "pack");
    let restubbed = t.dir.join("restubbed");
    let stub = t.env.stub();
    under_077(&[
        Path::new("restub"),
        &packed,
        Path::new("--stub"),
        &stub,
        Path::new("-o"),
        &restubbed,
    ])
    .assert_success();
    assert_eq!(mode(&restubbed), 0o700, "restub");
    let rootfs = t.dir.join("rootfs.tar");
    under_077(&[Path::new("extract"), &packed, Path::new("-o"), &rootfs]).assert_success();
    assert_eq!(mode(&rootfs), 0o600, "extract");
    // And the usual 022.
    let open = t.dir.join("open");
    pack(&t, &busybox, &open, &[]).assert_success();
    assert_eq!(mode(&open), 0o755);
}

// ---- 6. integrity gaps ------------------------------------------------------------------

#[test]
fn integrity_gaps_are_refused_with_one_line() {
    let t = Test::new("ph-integrity");
    let dest = t.dir.join("packed");
    let case = |name: &str, script: &str| {
        let input = t.dir.join(format!("{name}.tar"));
        py(
            &format!(
                "base = entry(b'bin/app', b'v1') + END\n\
                 patch = entry(b'bin/app', b'v2 with the security fix') + END\n\
                 root = A[0] + '.d'\n{script}\narchive(root, A[0])"
            ),
            &[&input],
        );
        input
    };
    // A manifest that lists fewer layers than the config's diff_ids: the patch dropped.
    let dropped = case(
        "dropped",
        "docker(root, [(layer_name(base), base)], [sha(base), sha(patch)], ['x:latest'])",
    );
    let out = pack(&t, &dropped, &dest, &[]);
    assert_refused(
        &out,
        &dest,
        "the manifest lists 1 layers but the image config has 2 diff_ids",
    );
    // No diff_ids at all: a tampered layer would go unnoticed.
    let unverified = case(
        "unverified",
        "docker(root, [(layer_name(base), patch)], None, ['x:latest'])",
    );
    let out = pack(&t, &unverified, &dest, &[]);
    assert_refused(&out, &dest, "the image config has 0 diff_ids");
    // diff_ids there, the layer tampered.
    let tampered = case(
        "tampered",
        "docker(root, [(layer_name(base), patch)], [sha(base)], ['x:latest'])",
    );
    let out = pack(&t, &tampered, &dest, &[]);
    assert_refused(&out, &dest, "is damaged: its content hashes to sha256:");
    // An OCI descriptor whose size lies.
    let lies = case("lies", "oci(root, [base], lie=4096)");
    let out = pack(&t, &lies, &dest, &[]);
    assert_refused(&out, &dest, "its descriptor says");
    // Two different images for one platform: never a silent pick.
    let two = case(
        "two-for-amd64",
        "a = oci(root, [base], name='same', write_index=False)\n\
         b = oci(root, [patch], name='same', write_index=False)\n\
         index(root, [a, b])",
    );
    let out = pack(&t, &two, &dest, &[]);
    assert_refused(
        &out,
        &dest,
        "holds 2 different images for linux/amd64 (same for linux/amd64, same for linux/amd64)",
    );
}

// ---- 7. aborts and hangs ----------------------------------------------------------------

#[test]
fn ten_thousand_nested_indexes_do_not_abort() {
    let t = Test::new("ph-nested");
    let root = t.dir.join("nested");
    py(
        "d = oci(A[0], [entry(b'a', b'a') + END], write_index=False)\n\
         kind = 'application/vnd.oci.image.index.v1+json'\n\
         for i in range(10000):\n\
         \x20   b = json.dumps({'schemaVersion': 2, 'mediaType': kind, 'manifests': [d]}).encode()\n\
         \x20   d = {'mediaType': kind, 'digest': put(A[0], b), 'size': len(b)}\n\
         index(A[0], [d])",
        &[&root],
    );
    let dest = t.dir.join("packed");
    let out = pack(&t, &root, &dest, &[]);
    assert_eq!(out.signal, None, "{out:?}");
    assert_refused(&out, &dest, "its indexes are nested more than 8 deep");
    // JSON nested 100000 deep in index.json itself.
    fs::write(
        root.join("index.json"),
        format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)),
    )
    .unwrap();
    let out = pack(&t, &root, &dest, &[]);
    assert_eq!(out.signal, None, "{out:?}");
    assert_refused(&out, &dest, "index.json is not what it should be");
}

/// A GNU sparse file "holes" of 2^60 bytes holding 4: header, data, end.
const SPARSE_2_60: &str = "h = hdr(b'holes', b'S', 4)\n\
     h[386:398] = num(0, 12)\n\
     h[398:410] = num(2, 12)\n\
     h[410:422] = num(1 << 20, 12)\n\
     h[422:434] = num(2, 12)\n\
     h[483:495] = num(1 << 60, 12)\n\
     sparse = seal(h) + pad(b'abcd') + END\n";

#[test]
fn a_sparse_file_of_two_to_the_sixty_is_refused_not_expanded() {
    let t = Test::new("ph-sparse");
    let flat = t.dir.join("sparse.tar");
    py(
        &format!("{SPARSE_2_60}open(A[0], 'wb').write(sparse)"),
        &[&flat],
    );
    let dest = t.dir.join("packed");
    let out = pack(&t, &flat, &dest, &[]);
    assert_refused(
        &out,
        &dest,
        "(at 'holes', 1152921504606846976 bytes): more than the 64 GiB allowed",
    );
    let layered = t.dir.join("sparse-oci.tar");
    py(
        &format!("{SPARSE_2_60}oci(A[0] + '.d', [sparse])\narchive(A[0] + '.d', A[0])"),
        &[&layered],
    );
    let out = pack(&t, &layered, &dest, &[]);
    assert_refused(
        &out,
        &dest,
        "file 'holes' (1152921504606846976 bytes) of layer 1: more than the 64 GiB allowed",
    );
    // A limit raised, or lowered, by --max-size.
    let out = pack(&t, &layered, &dest, &["--max-size", "1M"]);
    assert_refused(&out, &dest, "more than the 1 MiB allowed");
    let out = pack(&t, &layered, &dest, &["--max-size", "lots"]);
    assert_eq!(
        out.code,
        Some(2),
        "a bad --max-size is a usage error:\n{out:?}"
    );
}

#[test]
fn a_layer_listed_twenty_times_is_refused_before_it_is_expanded() {
    let t = Test::new("ph-repeats");
    let input = t.dir.join("repeats.tar");
    // 64 MiB of tar in a small gzip, listed 20 times: 1.3 GiB of work per pass.
    py(
        "tar = entry(b'big', b'x' * (64 << 20)) + END\n\
         layer = gzip.compress(tar, 6)\n\
         oci(A[0] + '.d', [layer] * 20, diff_ids=[sha(tar)] * 20,\n\
         \x20   media='application/vnd.oci.image.layer.v1.tar+gzip')\n\
         archive(A[0] + '.d', A[0])",
        &[&input],
    );
    let dest = t.dir.join("packed");
    let started = std::time::Instant::now();
    let out = pack(&t, &input, &dest, &[]);
    assert_refused(&out, &dest, "is listed 20 times in the manifest");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "refused after {:?}",
        started.elapsed()
    );
}

#[test]
fn fifos_never_block_inspect_restub_or_stub() {
    let t = Test::new("ph-fifos");
    let fifo = t.dir.join("fifo");
    mkfifo(&fifo);
    let busybox = t.env.fixture("busybox.tar");
    let dest = t.dir.join("packed");
    let out = packer(&t).arg("inspect").arg(&fifo).run();
    assert_refused(&out, &dest, "is a FIFO, not a packed binctr file");
    let out = pack(&t, &busybox, &dest, &["--stub", fifo.to_str().unwrap()]);
    assert_refused(&out, &dest, "it is a FIFO, not a regular file");
    let packed = t.busybox();
    let out = packer(&t)
        .arg("restub")
        .arg(packed)
        .arg("--stub")
        .arg(&fifo)
        .arg("-o")
        .arg(&dest)
        .run();
    assert_refused(&out, &dest, "it is a FIFO, not a regular file");
    let out = packer(&t)
        .arg("restub")
        .arg(&fifo)
        .arg("--stub")
        .arg(t.env.stub())
        .arg("-o")
        .arg(&dest)
        .run();
    assert_refused(&out, &dest, "is a FIFO, not a packed binctr file");
}

// ---- 8. a packed file's stub is checked -------------------------------------------------

#[test]
fn a_packed_file_whose_stub_is_a_script_is_not_a_packed_file() {
    let t = Test::new("ph-script-stub");
    let real = fs::read(t.busybox()).unwrap();
    let footer_at = real.len() - 112;
    let offset = u64::from_le_bytes(real[footer_at + 16..footer_at + 24].try_into().unwrap());
    let script = b"#!/bin/sh\necho 'packed OK'\nexit 0\n";
    let mut forged = script.to_vec();
    forged.extend_from_slice(&real[offset as usize..]);
    let at = forged.len() - 112 + 16;
    forged[at..at + 8].copy_from_slice(&(script.len() as u64).to_le_bytes());
    let file = t.dir.join("forged");
    fs::write(&file, &forged).unwrap();
    let dest = t.dir.join("out");
    let out = packer(&t).arg("inspect").arg(&file).run();
    let why = format!(
        "its first {} bytes, where the stub goes, are not a binctr stub (not an ELF file but a script: '#!/bin/sh')",
        script.len()
    );
    assert_refused(&out, &dest, &why);
    let out = packer(&t)
        .arg("restub")
        .arg(&file)
        .arg("--stub")
        .arg(t.env.stub())
        .arg("-o")
        .arg(&dest)
        .run();
    assert_refused(
        &out,
        &dest,
        "not a binctr stub (not an ELF file but a script",
    );
}
