#!/usr/bin/env bash
# Compares binctr's flattening of an image with podman's (issue 12).
#
#   scripts/compare-podman.sh [--keep] IMAGE...
#
# IMAGE: a docker-archive or OCI archive tar (or an OCI image layout directory). For each:
#   binctr: dist/binctr-pack IMAGE -o PACKED, then binctr-pack extract PACKED -o binctr.tar
#   podman: podman load -i IMAGE (pull oci:DIR for a layout), podman create, podman export
#           -o podman.tar, in a private store (--root/--runroot/--tmpdir in a temp dir,
#           vfs driver) that is removed afterwards, so nothing of the host's podman is used
#           or left behind
# then the two flattened trees are compared entry by entry: names, types, permission bits
# (with setuid, setgid, sticky), numeric owners, sizes of regular files, symlink targets,
# hard-link groups, device numbers and the sha256 of every regular file. Both trees are
# read straight from the two tars as tar unpacks them (a later entry of a name wins, a
# parent directory the tar does not list is made 0755 and root's, as tar, binctr's stub
# and podman all make it), so the comparison needs no root and no disk space for the trees.
# Ignored, as podman's own additions: /etc/hostname, /etc/hosts, /etc/resolv.conf,
# /run/.containerenv, and the empty mount points /proc /sys /dev /etc /run /tmp (see
# PODMAN_ADDS and PODMAN_MOUNT_POINTS below). Modification times are not compared (podman
# gives a directory a whiteout changed the time of the change); how many differ is told.
#
# Prints one line per difference on stdout, a summary per image on stderr. Exit status: 0
# when every IMAGE's trees are equal, 1 when any differ, 2 when something could not be run
# (packing, podman, a missing tool).
#
# Environment: BINCTR_PACK (default dist/binctr-pack), PODMAN (default podman). Run as root
# it installs podman (Debian's package) when it is missing; podman works offline on local
# archives.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
packer=${BINCTR_PACK:-$root/dist/binctr-pack}
podman=${PODMAN:-podman}

say() { printf 'compare-podman.sh: %s\n' "$*" >&2; }
fail() { say "error: $*"; exit 2; }

keep=0
images=()
for arg in "$@"; do
    case $arg in
        --keep) keep=1 ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        -*) fail "unknown option $arg (usage: compare-podman.sh [--keep] IMAGE...)" ;;
        *) images+=("$arg") ;;
    esac
done
((${#images[@]})) || fail "usage: compare-podman.sh [--keep] IMAGE..."
[[ -x $packer ]] || fail "$packer is missing: build dist/ first (scripts/build.sh)"
command -v python3 >/dev/null || fail "python3 is missing (Debian: apt-get install python3)"
if ! command -v "$podman" >/dev/null; then
    [[ $(id -u) == 0 ]] || fail "podman is missing (as root: apt-get install podman)"
    say "installing podman"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q podman </dev/null >&2 || {
        apt-get update -q </dev/null >&2
        apt-get install -y -q podman </dev/null >&2
    }
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/binctr-compare-podman.XXXXXX")
store=$work/podman
# A private podman: its own image store, state and temp dir, the vfs driver (works on any
# filesystem, inside containers too), no network for the created container.
pm() {
    "$podman" --root "$store/root" --runroot "$store/run" --tmpdir "$store/tmp" \
        --storage-driver vfs --events-backend file --log-level error "$@"
}
cleanup() {
    if [[ -d $store/root ]]; then
        pm rm -a -f >/dev/null 2>&1 || true
        pm rmi -a -f >/dev/null 2>&1 || true
    fi
    if ((keep)); then
        say "kept $work"
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT

# The comparison of two flattened rootfs tars: prints each difference, exits 1 on any.
compare_py=$work/compare.py
cat >"$compare_py" <<'PY'
import hashlib, sys, tarfile

# What podman adds to a container by itself, never part of the image's layers (none of it
# is in `podman create` + `podman export` of podman 4 today; listed so a podman that adds
# them does not make every image differ):
PODMAN_ADDS = {
    "etc/hostname",       # written for the container at start (bind-mounted)
    "etc/hosts",          # idem
    "etc/resolv.conf",    # idem
    "run/.containerenv",  # podman's marker file for "inside a container"
}
# Mount points podman creates, empty, when the image lacks them: a directory of these
# names is ignored only when it is missing from binctr's tree and empty in podman's.
PODMAN_MOUNT_POINTS = {"proc", "sys", "dev", "dev/pts", "dev/shm", "dev/mqueue", "etc", "run", "tmp"}

def norm(name):
    """A member name as a relative path: no './' or '/' prefix, no trailing '/'."""
    while name.startswith("./"):
        name = name[2:]
    name = name.lstrip("/").rstrip("/")
    return "" if name == "." else name

def read_tree(path):
    """The tree a tar unpacks to: {name: entry}; later members replace earlier ones."""
    tree = {}
    with tarfile.open(path, "r:*") as tar:
        for m in tar:
            name = norm(m.name)
            if name == "":
                continue  # the root directory itself: its metadata is each tool's own
            e = {"mode": m.mode & 0o7777, "uid": m.uid, "gid": m.gid}
            if m.islnk():
                target = norm(m.linkname)
                t = tree.get(target)
                if t is None or t["type"] != "file":
                    e.update(type="hardlink-to-nothing", target=target)
                else:
                    # a hard link is the same inode: the target's metadata and content
                    e = dict(t)
                    e["link"] = t.get("link", target)
                    t.setdefault("link", target)
            elif m.isreg():
                h = hashlib.sha256()
                f = tar.extractfile(m)
                while True:
                    chunk = f.read(1 << 20)
                    if not chunk:
                        break
                    h.update(chunk)
                e.update(type="file", size=m.size, sha256=h.hexdigest())
            elif m.isdir():
                e.update(type="dir")
            elif m.issym():
                e.update(type="symlink", target=m.linkname)
            elif m.ischr() or m.isblk():
                e.update(type="char" if m.ischr() else "block", dev=(m.devmajor, m.devminor))
            elif m.isfifo():
                e.update(type="fifo")
            else:
                e.update(type="other(%r)" % m.type)
            e["mtime"] = int(m.mtime)
            tree[name] = e
    # A parent directory a tar does not list is made on extraction: 0755 and root's, by
    # tar, by binctr's stub and by podman (its layer code) alike. Such directories are
    # compared as made, and named on stderr.
    implicit = set()
    for name in list(tree):
        parts = name.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if parent not in tree:
                tree[parent] = {"type": "dir", "mode": 0o755, "uid": 0, "gid": 0, "mtime": None}
                implicit.add(parent)
    return tree, implicit

def links(tree):
    """name -> the sorted names of its hard-link group (only for groups of two or more)."""
    groups = {}
    for name, e in tree.items():
        if "link" in e:
            groups.setdefault(e["link"], set()).add(name)
    out = {}
    for members in groups.values():
        if len(members) > 1:
            for n in members:
                out[n] = sorted(members)
    return out

def show(e):
    parts = [e["type"], "%04o" % e["mode"], "%d:%d" % (e["uid"], e["gid"])]
    if e["type"] == "file":
        parts += ["%d bytes" % e["size"], "sha256:" + e["sha256"][:16]]
    if "target" in e:
        parts.append("-> " + e["target"])
    if "dev" in e:
        parts.append("dev %d:%d" % e["dev"])
    return " ".join(parts)

def main(label, binctr_tar, podman_tar):
    (b, b_implicit), (p, p_implicit) = read_tree(binctr_tar), read_tree(podman_tar)
    for side, implicit in (("binctr", b_implicit), ("podman", p_implicit)):
        if implicit:
            print("%s: note: %s's tar does not list %s: compared as made on extraction (0755, 0:0)"
                  % (label, side, ", ".join("/" + n for n in sorted(implicit))), file=sys.stderr)
    diffs = []
    for name in sorted(set(b) | set(p)):
        if name in PODMAN_ADDS and name not in b:
            continue
        if name not in p:
            diffs.append("only in binctr: /%s (%s)" % (name, show(b[name])))
            continue
        if name not in b:
            empty = not any(n.startswith(name + "/") for n in p)
            if name in PODMAN_MOUNT_POINTS and p[name]["type"] == "dir" and empty:
                continue
            diffs.append("only in podman: /%s (%s)" % (name, show(p[name])))
            continue
        eb, ep = b[name], p[name]
        fields = [k for k in ("type", "mode", "uid", "gid", "size", "sha256", "target", "dev")
                  if eb.get(k) != ep.get(k)]
        if fields:
            diffs.append("differs: /%s (%s): binctr %s, podman %s"
                         % (name, ", ".join(fields), show(eb), show(ep)))
    lb, lp = links(b), links(p)
    for name in sorted(set(lb) | set(lp)):
        if name in b and name in p and lb.get(name) != lp.get(name):
            diffs.append("hard links differ: /%s: binctr %s, podman %s"
                         % (name, lb.get(name, "none"), lp.get(name, "none")))
    for d in diffs:
        print("%s: %s" % (label, d))
    # Modification times are not part of the comparison (docker and podman do not agree
    # on them either for directories a whiteout changed); their count is told, for a look.
    mtimes = sum(1 for n in b if n in p and None not in (b[n]["mtime"], p[n]["mtime"])
                 and b[n]["mtime"] != p[n]["mtime"])
    print("%s: %d entries in binctr's tree, %d in podman's, %d difference(s)"
          " (modification times, not compared, differ on %d)"
          % (label, len(b), len(p), len(diffs), mtimes), file=sys.stderr)
    return 1 if diffs else 0

sys.exit(main(*sys.argv[1:4]))
PY

status=0
n=0
for image in "${images[@]}"; do
    n=$((n + 1))
    label=$(basename "$image")
    dir=$work/$n
    mkdir -p "$dir"
    [[ -e $image ]] || fail "$image: no such file"
    image=$(cd "$(dirname "$image")" && pwd)/$(basename "$image")

    # binctr: pack, then the packed file's flattened root filesystem as a tar.
    if ! "$packer" "$image" -o "$dir/packed" >"$dir/pack.log" 2>&1; then
        cat "$dir/pack.log" >&2
        fail "$label: binctr-pack could not pack it"
    fi
    "$packer" extract "$dir/packed" -o "$dir/binctr.tar" >"$dir/extract.log" 2>&1 ||
        { cat "$dir/extract.log" >&2; fail "$label: binctr-pack extract failed"; }

    # podman: load into the private store, create a container, export its filesystem.
    pm rm -a -f >/dev/null 2>&1 || true
    pm rmi -a -f >/dev/null 2>&1 || true
    if [[ -d $image ]]; then
        pm pull -q "oci:$image" >"$dir/load.log" 2>&1 ||
            { cat "$dir/load.log" >&2; fail "$label: podman pull oci: failed"; }
    else
        pm load -q -i "$image" >"$dir/load.log" 2>&1 ||
            { cat "$dir/load.log" >&2; fail "$label: podman load failed"; }
    fi
    mapfile -t ids < <(pm images -q --no-trunc | sort -u)
    ((${#ids[@]} == 1)) || fail "$label: podman loaded ${#ids[@]} images, expected one: ${ids[*]}"
    container=$(pm create -q --network none "${ids[0]}" /bin/true 2>"$dir/create.log") ||
        { cat "$dir/create.log" >&2; fail "$label: podman create failed"; }
    pm export -o "$dir/podman.tar" "$container" 2>"$dir/export.log" ||
        { cat "$dir/export.log" >&2; fail "$label: podman export failed"; }
    pm rm -f "$container" >/dev/null 2>&1 || true
    pm rmi -a -f >/dev/null 2>&1 || true

    rc=0
    python3 "$compare_py" "$label" "$dir/binctr.tar" "$dir/podman.tar" || rc=$?
    case $rc in
        0) ;;
        1) status=1 ;;
        *) fail "$label: the comparison itself failed" ;;
    esac
    ((keep)) || rm -f "$dir/packed" "$dir/binctr.tar" "$dir/podman.tar"
done
exit "$status"
