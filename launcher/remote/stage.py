"""The fixed, stdlib-only Python scripts staging runs on a host (request on stdin).

Kept as text because they run on the host with ``python3 -c``; they take everything from
stdin (JSON, or a tar stream), never from shell text.

INVENTORY and LINK take their request in marshal and answer JSON (:mod:`launcher.remote.wire`: no
``import json`` on the host's hot path); RECEIVE reads a tar stream.

INVENTORY: ``{"base": "<workdir>/alaunch", "objects": [sha256...]}`` ->
``{"home", "base", "fsid", "free", "have": [...]}``. ``fsid`` is a random id created once
per filesystem with an atomic link: hosts reporting the same fsid for the same base share
storage and are staged once.

RECEIVE: a tar stream of ``objects/<sha256>`` members (each written to a temp name, its
sha256 checked, then renamed into the store) and a final ``manifest.json`` member
``{"root", "links": {dest: [sha, mode]}, "texts": {dest: text}, "dirs": [...]}`` that
materialises the job directory with hard links (a copy across filesystems); big top-level
directories come as ``"trees": {top: {"id", "links"}}``, built once under ``cas/trees/<id>``
and symlinked into the job dir.

LINK: ``{"cas", "fsid", "manifest"}`` -> materialise only if the store is the expected one
and holds every object and every tree (the no-op re-stage: one round trip, nothing sent).
Its manifest names trees by id and file count only (``{"id", "count"}``): a tree on the host
is complete by construction (built under a temp name, renamed), so 2,000 entries need not
travel or be checked again.
"""

from launcher.remote.wire import PRELUDE

INVENTORY = PRELUDE + r'''
req = read_request()
base = os.path.abspath(os.path.expanduser(req["base"]))
cas = os.path.join(base, "cas")
os.makedirs(os.path.join(cas, "tmp"), exist_ok=True)
fsid_path = os.path.join(cas, ".fsid")
if not os.path.exists(fsid_path):
    tmp = os.path.join(cas, "tmp", ".fsid." + os.urandom(16).hex())
    with open(tmp, "w") as f:
        f.write(os.urandom(16).hex())
    try:
        os.link(tmp, fsid_path)
    except FileExistsError:
        pass
    os.unlink(tmp)
with open(fsid_path) as f:
    fsid = f.read().strip()
vfs = os.statvfs(cas)
have = [s for s in req["objects"] if os.path.isfile(os.path.join(cas, s[:2], s))]
print(dumps({"home": os.path.expanduser("~"), "base": base, "fsid": fsid,
             "free": vfs.f_bavail * vfs.f_frsize, "have": have}))
'''

_MATERIALISE = r"""
root = manifest["root"]
for d in manifest["dirs"]:
    os.makedirs(os.path.join(root, d), exist_ok=True)

def place(links, into):
    global linked, copied
    made = set()
    for dest, (sha, mode) in sorted(links.items()):
        obj = os.path.join(cas, sha[:2], sha)
        path = os.path.join(into, dest)
        parent = os.path.dirname(path)
        if parent not in made:
            os.makedirs(parent, exist_ok=True)
            made.add(parent)
        if mode & 0o111 and not os.stat(obj).st_mode & 0o111:
            os.chmod(obj, 0o755)
        try:
            try:
                os.link(obj, path)
            except FileExistsError:
                os.unlink(path)
                os.link(obj, path)
            linked += 1
        except OSError:
            import shutil
            shutil.copyfile(obj, path)
            os.chmod(path, mode & 0o777)
            copied += 1

for top, tree in sorted(manifest.get("trees", {}).items()):
    tdir = os.path.join(cas, "trees", tree["id"])
    if not os.path.isdir(tdir):
        import shutil
        tmp = os.path.join(cas, "tmp", "tree.%s.%d" % (tree["id"], os.getpid()))
        shutil.rmtree(tmp, ignore_errors=True)
        place(tree["links"], tmp)
        os.makedirs(os.path.dirname(tdir), exist_ok=True)
        try:
            os.rename(tmp, tdir)
        except OSError:  # built meanwhile by another run: same id, same content
            shutil.rmtree(tmp, ignore_errors=True)
    else:
        linked += tree["count"]
    path = os.path.join(root, top)
    if os.path.islink(path) or os.path.isfile(path):
        os.unlink(path)
    elif os.path.isdir(path):
        import shutil
        shutil.rmtree(path)
    os.symlink(tdir, path)
place(manifest["links"], root)
for dest, text in manifest["texts"].items():
    path = os.path.join(root, dest)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(path + ".tmp", path)
"""

RECEIVE = PRELUDE + r"""
import hashlib, json, shutil
cas = os.path.abspath(os.path.expanduser(sys.argv[1]))
tmpdir = os.path.join(cas, "tmp")
os.makedirs(tmpdir, exist_ok=True)
widen_pipe(0)
inp = open(0, "rb", buffering=1 << 20, closefd=False)
buf = bytearray(1 << 20)
view = memoryview(buf)
ZERO = bytes(512)
made = set()

def exact(n):
    data = inp.read(n)
    if len(data) != n:
        sys.exit("stream ended early (connection lost?)")
    return data

def number(field):
    if field[0] & 0x80:
        return int.from_bytes(field[1:], "big")
    return int(field.strip(b"\0 ") or b"0", 8)

def pax(data):
    out = {}
    while data:
        length = int(data.split(b" ", 1)[0])
        key, _, value = data[:length].split(b" ", 1)[1][:-1].partition(b"=")
        out[key.decode()] = value.decode()
        data = data[length:]
    return out

got = nbytes = linked = copied = 0
manifest = None
override = {}
while True:
    hdr = exact(512)
    if hdr == ZERO:
        break
    name = override.get("path") or hdr[:100].split(b"\0", 1)[0].decode()
    size = int(override["size"]) if "size" in override else number(hdr[124:136])
    kind = hdr[156:157]
    override = {}
    pad = -size % 512
    if kind in (b"x", b"g"):
        override = pax(exact(size)) if kind == b"x" else {}
        exact(pad)
        continue
    if name == "manifest.json":
        manifest = json.loads(exact(size).decode())
        exact(pad)
        continue
    sha = name.rsplit("/", 1)[-1]
    if not name.startswith("objects/") or len(sha) != 64:
        sys.exit("unexpected member %r" % name)
    part = os.path.join(tmpdir, "%s.%d.part" % (sha, os.getpid()))
    h = hashlib.sha256()
    left = size
    with open(part, "wb", buffering=0) as out:
        while left:
            n = inp.readinto(view[:min(left, len(buf))])
            if not n:
                sys.exit("stream ended early (connection lost?)")
            h.update(view[:n])
            out.write(view[:n])
            left -= n
    exact(pad)
    if h.hexdigest() != sha:
        os.unlink(part)
        sys.exit("sha256 mismatch for %s (got %s): transfer corrupted" % (sha, h.hexdigest()))
    d = os.path.join(cas, sha[:2])
    if d not in made:
        os.makedirs(d, exist_ok=True)
        made.add(d)
    os.chmod(part, 0o644)
    os.replace(part, os.path.join(d, sha))
    got += 1
    nbytes += size
if manifest is None:
    sys.exit("no manifest in the stream")
""" + _MATERIALISE + r"""
print(json.dumps({"objects": got, "bytes": nbytes, "linked": linked, "copied": copied, "root": root}))
"""

# LINK: the no-op re-stage in ONE round trip. The client's cached inventory says the host
# has every object; this checks that (store id and each object), and only then makes the
# job dir. Otherwise it changes nothing and answers {"ok": false} (the client then surveys).
LINK = PRELUDE + r"""
req = read_request()
cas = os.path.abspath(os.path.expanduser(req["cas"]))
manifest = req["manifest"]
try:
    with open(os.path.join(cas, ".fsid")) as f:
        fsid = f.read().strip()
except OSError:
    fsid = None
shas = {sha for sha, _ in manifest["links"].values()}
trees_ok = all(os.path.isdir(os.path.join(cas, "trees", t["id"])) for t in manifest.get("trees", {}).values())
if fsid != req["fsid"] or not trees_ok or not all(os.path.isfile(os.path.join(cas, s[:2], s)) for s in shas):
    print(dumps({"ok": False}))
    sys.exit(0)
linked = copied = 0
""" + _MATERIALISE + r"""
print(dumps({"ok": True, "objects": 0, "bytes": 0, "linked": linked, "copied": copied, "root": root}))
"""
