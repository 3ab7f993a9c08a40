"""The host script staging runs (stdlib only; ``python3 -S -c PROGRAM``, request on stdin).

Every request is the marshal frame of :func:`launcher.remote.wire.request` (``_prelude.py``),
first on stdin, never shell text; ``op`` picks the operation. Answers are JSON.

INVENTORY ``{"op": "inventory", "base": "<workdir>/alaunch", "objects": [sha256...]}`` ->
``{"home", "base", "fsid", "free", "have": [...], "empty"}`` (``empty``: the store holds no
object, so a first staging may send files unnamed; then also ``"checks"``, the transfer
checks this Python can compute, best first: ``_prelude.fetch_checks``). ``fsid`` is a random id created once
per filesystem with an atomic link: hosts reporting the same fsid for the same base share
storage and are staged once. With ``"cards": true`` (submit's preflight) it also answers
``"claims"`` (the live card claims of alaunch jobs on this host) and ``"npu_smi"`` (the
output of ``npu-smi info``, or null on a CPU host): what card allocation needs, in the same
round trip.

CLAIM / RELEASE: the card claims, one marshal file per job under ``<base>/cards/<hostname>/``,
taken and dropped under an ``flock`` (see :func:`claim`).

RECEIVE ``{"op": "receive", "cas": "<base>/cas", "check"?}``, then on stdin after the request a tar
stream, parsed here by hand (ustar headers and pax ``path``/``size`` records, not
``tarfile``: no per-member Python objects, 1 MiB reads): ``objects/<sha256>`` members (each
written to a temp name, its sha256 checked, then renamed into the store), ``new/<i>`` members
(into an empty store: files the laptop did not hash; each is named here by the sha256 of what
arrived and stored when the ``sum/<i>`` member after it, the size and the transfer check the
laptop took on the read it sent, matches; the manifest's ``"new"`` repeats the sums; the
check is the request's ``"check"``, one of the fetch checks, xxh3-128 or a CRC-32 per MiB;
the manifest refers to the file as ``"#<i>"``)
and a final
``manifest.json`` member ``{"root", "links": {dest: [sha, mode]}, "texts": {dest: text},
"dirs": [...]}`` that materialises the job directory with hard links (a copy across
filesystems); big top-level directories come as ``"trees": {top: {"id", "links"}}``, built
once under ``cas/trees/<id>`` and symlinked into the job dir (a tree holding a ``new/<i>``
file comes without an id: computed here from the names, as the laptop does).
-> ``{"objects", "bytes", "linked", "copied", "root", "names": [sha256 of new/<i>, by i]}``.

RELAY ``{"op": "relay", "cas", "name", "program", "children": [{"name", "ssh": [argv], "python",
"request": {the child's RELAY request}}]}``, then a tar stream of ``objects/<sha256>`` members
(no manifest): each object is stored and verified as RECEIVE does, while the same bytes go on
to each child over this host's own ``ssh`` (the route is planned on the laptop,
``launcher/core/route.py``); the answer nests the children's answers (or their errors).

LINK ``{"op": "link", "cas", "fsid", "manifest"}`` -> materialise only if the store is the
expected one and holds every object and every tree (the no-op re-stage: one round trip,
nothing sent), else ``{"ok": false}`` and nothing changed (the client then surveys). Its
manifest names trees by id and file count only (``{"id", "count"}``): a tree on the host is
complete by construction (built under a temp name, renamed), so 2,000 entries need not
travel or be checked again.
"""

import os
import sys

from _prelude import (
    MARK,
    STDLIB_CHECK,
    answer,
    cards_dir,
    check_hex,
    fetch_checks,
    load_cache,
    log_tails,
    new_check,
    open_own,
    run,
    stdin,
    versions,
    widen_pipe,
)

CLAIM_TTL = 300  # seconds a claim whose job has not started yet (no pid file) still holds its cards


def inventory(req):
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
    facts = {"home": os.path.expanduser("~"), "base": base, "fsid": fsid,
              "free": vfs.f_bavail * vfs.f_frsize, "have": have, "empty": store_empty(cas)}
    if facts["empty"]:  # a first staging: what the laptop may check its unnamed files with
        facts["checks"] = fetch_checks()
    if "port" in req:  # node 0 of a submit: msrun's master port, in the same round trip
        facts["port"] = free_port(req["port"], req.get("pinned", False), req.get("port_range"))
    if req.get("versions"):
        facts["versions"] = versions()
    if req.get("msrun_flags"):
        facts["msrun_flags"] = msrun_flags()
    if req.get("wrapper"):  # source the env scripts as the launch will: a broken one fails now
        facts["env_error"] = env_error(req["wrapper"], req.get("env") or {})
    if req.get("cards"):  # submit: who holds which card here, in the same round trip
        try:
            dfd = open_cards_dir(cards_dir(req))
        except ValueError as exc:
            sys.exit(str(exc))
        facts["claims"] = live_claims(dfd, base, job_markers())[0]
        facts["npu_smi"] = npu_smi()
    answer(facts)


def store_empty(cas):
    """Whether the store holds no object at all (a first staging: the laptop then need not
    name its files before sending them, RECEIVE's ``new/<i>`` members)."""
    for name in os.listdir(cas):
        if len(name) == 2 and os.path.isdir(os.path.join(cas, name)) and os.listdir(os.path.join(cas, name)):
            return False
    return True


def msrun_flags():
    """The flags this host's msrun takes, read from its argparse source (what ``msrun --help``
    lists, without the ~2 s of importing mindspore); None when msrun's source is not found."""
    import re
    lib = "python%d.%d" % sys.version_info[:2]
    venv = os.path.dirname(os.path.dirname(os.path.abspath(sys.executable)))
    for d in [p for p in sys.path if p.endswith("-packages")] + [os.path.join(venv, "lib", lib, "site-packages")]:
        path = os.path.join(d, "mindspore", "parallel", "cluster", "run.py")
        try:
            with open(path, encoding="utf-8") as f:
                return sorted(set(re.findall(r"add_argument\(\s*[\"'](--[a-z_]+)", f.read())))
        except OSError:
            continue
    return None


def env_error(wrapper, env):
    """Run the launch wrapper with ``true``: None when every env script sourced, else the
    wrapper's report (the script, its exit code and stderr)."""
    import subprocess
    full = dict(os.environ)
    full.update(env)
    try:
        p = subprocess.run(["sh", "-c", wrapper, "alaunch-node", "true"], env=full, stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return "sourcing the env scripts: %s" % exc
    if p.returncode == 0:
        return None
    lines = [ln for ln in p.stderr.decode("utf-8", "replace").splitlines() if ln.startswith("alaunch: ")]
    return (lines or p.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["exit %d" % p.returncode])[-1]


def free_port(port, pinned, port_range=None):
    """``port`` if it can be bound here, else (unless pinned) a free one from ``port_range``
    (``[lo, hi]``, tried in a random order: HCCL's 60000-60015+ and the kernel's ephemeral
    ports stay clear) or, with no range, one the kernel picks; None when a pinned port is
    taken or the range is full."""
    import random
    import socket

    def bindable(p):
        s = socket.socket()
        try:
            s.bind(("0.0.0.0", p))
            return s.getsockname()[1]
        except OSError:
            return None
        finally:
            s.close()
    found = bindable(port) if port else None
    if found is None and not pinned and port_range:
        lo, hi = port_range
        for p in random.sample(range(lo, hi + 1), min(hi - lo + 1, 200)):
            found = bindable(p)
            if found is not None:
                break
    elif found is None and not pinned:
        found = bindable(0)
    return found


def materialise(cas, manifest):
    """Make the job directory of ``manifest`` from the store; -> (root, linked, copied)."""
    counts = {"linked": 0, "copied": 0}
    root = manifest["root"]
    for d in manifest["dirs"]:
        os.makedirs(os.path.join(root, d), exist_ok=True)

    def place(links, into):
        made = set()
        for dest, (sha, mode) in sorted(links.items()):
            obj = os.path.join(cas, sha[:2], sha)
            path = os.path.join(into, dest)
            parent = os.path.dirname(path)
            if parent not in made:
                os.makedirs(parent, exist_ok=True)
                made.add(parent)
            if mode & 0o111 and not os.stat(obj).st_mode & 0o111:
                os.chmod(obj, 0o555)
            try:
                try:
                    os.link(obj, path)
                except FileExistsError:
                    os.unlink(path)
                    os.link(obj, path)
                counts["linked"] += 1
            except OSError:
                import shutil
                shutil.copyfile(obj, path)
                os.chmod(path, mode & 0o555)
                counts["copied"] += 1

    for top, tree in sorted(manifest.get("trees", {}).items()):
        tdir = os.path.join(cas, "trees", tree["id"])
        if not fresh(tdir):
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
            counts["linked"] += tree["count"]
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
    return root, counts["linked"], counts["copied"]


def fresh(tdir):
    """Whether the staged tree ``tdir`` is there to reuse; it is touched first, so that prune
    (which spares trees younger than its grace and looks again just before removing one) leaves
    a tree being reused alone. Without it a re-submit reusing a tree older than the grace could
    find its ``code`` link dangling."""
    try:
        os.utime(tdir)
    except OSError:
        return False
    return os.path.isdir(tdir)


def receive(req):
    cas = os.path.abspath(os.path.expanduser(req["cas"]))
    widen_pipe(0)
    inp = stdin()
    got, nbytes, manifest, names = unpack(cas, inp.read, inp.readinto, req.get("check") or STDLIB_CHECK)
    if manifest is None:
        sys.exit("no manifest in the stream")
    root, linked, copied = materialise(cas, manifest)
    answer({"objects": got, "bytes": nbytes, "linked": linked, "copied": copied, "root": root, "names": names})


HASH_THREAD_MIN = 8 << 20  # objects from this size are hashed by a second thread
WRITE_CHUNK = 128 << 10  # an object's bytes go to its file in writes of at most this


def write_out(out, view):
    """Write ``view`` to the file ``out`` in pieces of :data:`WRITE_CHUNK`. Measured on the
    test machine (a VM whose free memory goes back to the hypervisor): a 1 MiB write makes
    the page cache take a 1 MiB folio, carved from the high-order blocks handed back, and
    the first touch of those costs 2-5 ms per MiB; alternating writers of 256 MiB, the one
    writing 1 MiB at a time paid 0.57-1.53 s of system time, the one writing 128 KiB
    0.05-0.07 s. rsync writes in small pieces. On a host with its own memory both cost the same."""
    n = len(view)
    if n <= WRITE_CHUNK:
        out.write(view)
        return
    for at in range(0, n, WRITE_CHUNK):
        out.write(view[at:at + WRITE_CHUNK])


def store_hashing_beside(readinto, out, h, size):
    """Read ``size`` bytes into ``out`` while a second thread hashes them into ``h`` (done when
    this returns). The receiving script is the longest stage of staging's pipeline (tar
    stream -> ssh -> sshd -> here: read, sha256, write); hashlib releases the GIL for big
    buffers, so with a ring of 1 MiB buffers the sha256 overlaps the reads and writes. Small
    objects are hashed inline: one hand-off per object would cost more than it saves."""
    import queue
    import threading
    free = queue.Queue()  # type: queue.Queue[bytearray]
    work = queue.Queue()  # type: queue.Queue[tuple[bytearray, int] | None]  # None: no more
    failed = []  # type: list[Exception]
    for _ in range(4):
        free.put(bytearray(1 << 20))

    def hashing():
        item = work.get()
        while item is not None:
            try:
                if not failed:
                    h.update(memoryview(item[0])[:item[1]])
            except Exception as exc:  # kept: the reader must get its buffers back, never block
                failed.append(exc)
            free.put(item[0])
            item = work.get()

    worker = threading.Thread(target=hashing, daemon=True)
    worker.start()
    left = size
    while left:
        b = free.get()
        n = readinto(memoryview(b)[:min(left, len(b))])
        if not n:
            sys.exit("stream ended early (connection lost?)")
        write_out(out, memoryview(b)[:n])
        work.put((b, n))
        left -= n
    work.put(None)
    worker.join()
    if failed:
        sys.exit("cannot hash the object being stored: %s" % failed[0])


class Sums:
    """sha256 and a transfer check (``_prelude.new_check``) of the same bytes: a ``new/<i>``
    member is named by the first and checked against the laptop's (taken on the read it sent)
    by the second. xxh3-128 costs ~0.03 CPU-s per 562 MiB here, the CRC-32 ~0.08."""

    def __init__(self, check):
        import hashlib
        self.sha, self.name, self.check = hashlib.sha256(), check, new_check(check)

    def update(self, data):
        self.sha.update(data)
        self.check.update(data)  # a hasher of _prelude.new_check

    def check_hex(self):
        return check_hex(self.name, self.check)


def create_part(path):
    """A new temp file, read-only from birth (a job writing into a staged file must not change
    the store): no chmod per object afterwards. A stale one of a dead run is replaced."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    try:
        fd = os.open(path, flags, 0o444)
    except FileExistsError:
        os.unlink(path)
        fd = os.open(path, flags, 0o444)
    return os.fdopen(fd, "wb", buffering=0)


def unpack(cas, read, readinto, check=STDLIB_CHECK):
    """Store every object of the tar stream (temp name, sha256 checked, renamed into place,
    read-only); -> (objects, bytes, the manifest member or None, names of the new members).

    ``objects/<sha256>``: the laptop named it; stored only when the sha256 of what arrived is
    that name. ``new/<i>`` (a first staging into an empty store: the laptop did not hash its
    file before sending it): named here by the sha256 of what arrived, and stored when the
    ``sum/<i>`` member right after it, ``[size, "<check>:<hex>"]`` (the size and transfer check
    ``check`` the laptop took on the read it sent), matches: as the stream goes, so a stream
    cut later keeps it, and the stream's end is not followed by 2,000 renames (0.04-0.18 s of
    a 1.2 s first staging here). The manifest's ``"new"`` lists the same sums: every file must
    have been checked; its ``"#<i>"`` references become the names. Either way no object
    enters the store under a name that is not its sha256."""
    import hashlib
    import json
    tmpdir = os.path.join(cas, "tmp")
    os.makedirs(tmpdir, exist_ok=True)
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    ZERO = bytes(512)
    made = set()
    fresh = {}  # type: dict[int, tuple[str | None, str, str, int]]  # i -> (part or None once stored, sha256, check, size)

    def exact(n):
        data = read(n)
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

    def store(part, sha):
        d = os.path.join(cas, sha[:2])
        if d not in made:
            os.makedirs(d, exist_ok=True)
            made.add(d)
        os.replace(part, os.path.join(d, sha))

    got = nbytes = 0
    manifest = None
    override = {}  # type: dict[str, str]  # the pax header's keys for the next member
    part = None  # type: str | None
    try:
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
            if name.startswith("sum/") and name[4:].isdigit():
                i = int(name[4:])
                sent = json.loads(exact(size).decode())
                exact(pad)
                entry = fresh.get(i)
                if entry is None or entry[0] is None:
                    sys.exit("a transfer check for new file #%d, which %s" % (
                        i, "was not received" if entry is None else "was checked already"))
                mismatch = bad_new(i, entry, sent)
                if mismatch:
                    sys.exit(mismatch)
                store(entry[0], entry[1])
                fresh[i] = (None, entry[1], entry[2], entry[3])  # stored: nothing left to remove
                continue
            sha = name.rsplit("/", 1)[-1]
            h = None  # type: Sums | hashlib._Hash | None
            if name.startswith("new/") and sha.isdigit():
                h = Sums(check)
                part = os.path.join(tmpdir, "new.%s.%d.part" % (sha, os.getpid()))
            elif name.startswith("objects/") and len(sha) == 64:
                h = hashlib.sha256()
                part = os.path.join(tmpdir, "%s.%d.part" % (sha, os.getpid()))
            else:
                sys.exit("unexpected member %r" % name)
            with create_part(part) as out:
                if size >= HASH_THREAD_MIN:
                    store_hashing_beside(readinto, out, h, size)
                else:
                    left = size
                    while left:
                        n = readinto(view[:min(left, len(buf))])
                        if not n:
                            sys.exit("stream ended early (connection lost?)")
                        h.update(view[:n])
                        write_out(out, view[:n])
                        left -= n
            exact(pad)
            got += 1
            nbytes += size
            if isinstance(h, Sums):
                fresh[int(sha)] = (part, h.sha.hexdigest(), h.check_hex(), size)
                part = None  # kept until its sum/<i> (or removed with the others)
                continue
            if h.hexdigest() != sha:
                os.unlink(part)
                sys.exit("sha256 mismatch for %s (got %s): transfer corrupted" % (sha, h.hexdigest()))
            store(part, sha)
            part = None
    except SystemExit:  # the stream broke: the part being written and those not checked yet go
        for left in ([part] if part else []) + [f[0] for f in fresh.values() if f[0]]:
            try:
                os.unlink(left)
            except OSError:
                pass
        raise
    names = []  # type: list[str]
    if fresh or (manifest and manifest.get("new")):
        names = name_new(fresh, manifest)
    return got, nbytes, manifest, names


def bad_new(i, entry, sent):
    """Why the new file ``i`` as it arrived (``entry``: part, sha256, check, size) is not the
    one the laptop read (``sent``: its size and transfer check), or None."""
    size, digest = sent
    if entry[3] != size or entry[2] != digest:
        return "transfer check mismatch for new file #%d (%d bytes, %s): transfer corrupted" % (
            i, size, digest.split(":", 1)[0])
    return None


def name_new(fresh, manifest):
    """Check that every ``new/<i>`` member arrived and was checked (stored as its ``sum/<i>``
    came) against the manifest's ``"new"``, then put their names in the manifest (links and
    trees, whose ids are computed here as the laptop's ``manifest_for`` does). -> the names,
    by ``i``. Nothing unchecked is stored: a part still waiting is removed with the error."""
    import hashlib
    import json
    sent = (manifest or {}).get("new") or []
    bad = None
    if manifest is None:
        bad = "files without names and no manifest"
    elif sorted(fresh) != list(range(len(sent))):
        bad = "%d new file(s) announced, %d received" % (len(sent), len(fresh))
    else:
        for i in range(len(sent)):
            bad = bad_new(i, fresh[i], sent[i]) or (
                "new file #%d came without its transfer check" % i if fresh[i][0] is not None else None)
            if bad:
                break
    if bad:
        for part, _, _, _ in fresh.values():
            if part:
                os.unlink(part)
        sys.exit(bad)
    names = [fresh[i][1] for i in range(len(sent))]

    def named(links):
        for dest, entry in links.items():
            if entry[0].startswith("#"):
                links[dest] = [names[int(entry[0][1:])], entry[1]]
        return links
    named(manifest["links"])
    for tree in manifest.get("trees", {}).values():
        named(tree["links"])
        if not tree.get("id"):
            tree["id"] = hashlib.sha256(json.dumps(sorted(tree["links"].items())).encode()).hexdigest()
    return names


def relay(req):
    """RELAY: store the object stream here (each object sha256-checked, as RECEIVE) while
    forwarding the same bytes to this host's children on the route, each over this host's own
    ``ssh`` (BatchMode, the host's own keys and known_hosts: hosts must already trust each
    other). A child that cannot be reached or fails is dropped and reported; the others go on.
    -> ``{"host", "objects", "bytes", "children": [child answer | {"host", "error"}]}``."""
    import marshal
    import shlex
    import subprocess
    cas = os.path.abspath(os.path.expanduser(req["cas"]))
    program = req["program"]
    widen_pipe(0)
    inp = stdin()
    kids = []
    for child in req["children"]:
        creq = dict(child["request"], program=program)
        body = marshal.dumps(creq, 4)
        remote = " ".join(shlex.quote(a) for a in (child["python"], "-S", "-c", program))
        try:
            proc = subprocess.Popen(list(child["ssh"]) + [remote], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
        except OSError as exc:
            kids.append({"name": child["name"], "proc": None, "error": "cannot start ssh: %s" % exc})
            continue
        assert proc.stdin is not None  # stdin=PIPE
        widen_pipe(proc.stdin.fileno())
        kid = {"name": child["name"], "proc": proc, "error": None}
        kids.append(kid)
        forward(kid, len(body).to_bytes(8, "big") + body)

    def read(n):
        data = inp.read(n)
        for kid in kids:
            forward(kid, data)
        return data

    def readinto(view):
        n = inp.readinto(view)
        if n:
            for kid in kids:
                forward(kid, view[:n])
        return n

    try:
        got, nbytes, _, _ = unpack(cas, read, readinto)
    finally:  # also when this hop fails: its children end (stream cut) before it answers
        answers = [finish(kid) for kid in kids]
    answer({"host": req["name"], "objects": got, "bytes": nbytes, "children": answers})


def finish(kid):
    """Close a child's stdin, wait for it: its answer, or ``{"host", "error"}``."""
    import json
    proc = kid["proc"]
    if proc is None:
        return {"host": kid["name"], "error": kid["error"]}
    out, err = proc.communicate()
    text = out.decode("utf-8", "replace")
    if proc.returncode == 0 and MARK in text:
        return json.loads(text.rsplit(MARK, 1)[1].split("\n", 1)[0])  # the framed answer (_prelude.answer)
    lines = err.decode("utf-8", "replace").strip().splitlines()
    why = lines[-1] if lines else kid["error"] or "exit code %d" % proc.returncode
    return {"host": kid["name"], "error": why, "code": proc.returncode}


def forward(kid, data):
    """Write ``data`` to a child's stdin; a child that went away is marked and skipped."""
    proc = kid["proc"]
    if proc is None or kid["error"] is not None:
        return
    try:
        view = memoryview(data)
        while view:
            n = proc.stdin.write(view)
            view = view[n:]
    except OSError as exc:
        kid["error"] = "forwarding stopped: %s" % exc


def link(req):
    """The no-op re-stage in ONE round trip: the client's cached inventory says the host has
    every object; check that (store id, each object, each tree), and only then make the job
    dir. Otherwise change nothing and answer {"ok": false}."""
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
        answer({"ok": False})
        return
    root, linked, copied = materialise(cas, manifest)
    answer({"ok": True, "objects": 0, "bytes": 0, "linked": linked, "copied": copied, "root": root})


def verify(req):
    """Re-hash every object of the store; a bad one (content != its name) is reported and,
    with ``remove``, deleted together with every tree holding a link to it (same inode), so
    the next staging sends it again. -> {"objects", "bytes", "bad": [sha], "trees_removed"}."""
    import hashlib
    import shutil
    cas = os.path.join(os.path.abspath(os.path.expanduser(req["base"])), "cas")
    count = nbytes = 0
    bad, inodes = [], set()
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    for d in sorted(os.listdir(cas)) if os.path.isdir(cas) else ():
        if len(d) != 2:
            continue
        for sha in sorted(os.listdir(os.path.join(cas, d))):
            path = os.path.join(cas, d, sha)
            h = hashlib.sha256()
            with open(path, "rb", buffering=0) as f:
                while True:
                    n = f.readinto(buf)
                    if not n:
                        break
                    h.update(view[:n])
                    nbytes += n
            count += 1
            if h.hexdigest() != sha:
                bad.append(sha)
                inodes.add(os.stat(path).st_ino)
                if req.get("remove"):
                    os.unlink(path)
    removed = []
    trees = os.path.join(cas, "trees")
    for tid in sorted(os.listdir(trees)) if inodes and os.path.isdir(trees) else ():
        hit = any(os.lstat(os.path.join(dp, fn)).st_ino in inodes
                  for dp, _, fns in os.walk(os.path.join(trees, tid)) for fn in fns)
        if hit:
            removed.append(tid)
            if req.get("remove"):
                shutil.rmtree(os.path.join(trees, tid), ignore_errors=True)
    answer({"objects": count, "bytes": nbytes, "bad": bad, "trees_removed": removed})


def claims_dir(base):
    # type: (str) -> str
    """``<base>/cards/<hostname>``: the per-workdir claims of the release before host-wide
    claims (one file per job, per host name). Still read (a job started by the old release
    holds its cards until it ends) and released, never written."""
    return os.path.join(base, "cards", os.uname()[1])


def job_markers():
    # type: () -> set[str]
    """The ALAUNCH_JOB_ID of every live process here whose environ we may read (our own
    user's; every user's as root; a zombie's environ reads empty)."""
    want = b"ALAUNCH_JOB_ID="
    out = set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/environ" % name, "rb") as f:
                env = f.read()
        except OSError:
            continue
        for var in env.split(b"\0"):
            if var.startswith(want):
                out.add(var[len(want):].decode("utf-8", "replace"))
    return out


def proc_start(pid):
    # type: (int | str) -> str | None
    """Field 22 of /proc/PID/stat (start time, clock ticks since boot) of a live process,
    else None (gone or a zombie). World-readable: how one user judges another's claim."""
    try:
        with open("/proc/%d/stat" % int(pid)) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, ValueError, IndexError):
        return None
    return None if fields[0] in ("Z", "X") else fields[19]


def host_ids():
    # type: () -> tuple[str, str]
    """(boot id, pid namespace): a claim from another boot is dead; one from another pid
    namespace (a container sharing the dir) cannot be judged by pid here, so it holds."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
    except OSError:
        boot = ""
    try:
        ns = os.readlink("/proc/self/ns/pid")
    except OSError:
        ns = ""
    return boot, ns


def open_cards_dir(path):
    # type: (str) -> int
    """The host-wide claims dir as an fd, made when missing (mode 1777, like /tmp: every user
    writes claims, the sticky bit stops one from removing another's). Refused in one line:
    a symlink or not a directory, world-writable without the sticky bit, owned by another user
    while not shared (not 1777), or not writable by us. Opened with O_NOFOLLOW; every file in
    it is reached through this fd (``dir_fd``), never a path a symlink could redirect."""
    import stat
    made = not os.path.lexists(path)
    if made:
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            made = False
        except OSError as exc:
            raise ValueError("cannot create the card claims dir %s: %s" % (path, exc.strerror)) from None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as exc:
        raise ValueError("card claims dir %s: %s (it must be a real directory, not a symlink)"
                         % (path, exc.strerror)) from None
    if made:
        os.fchmod(fd, 0o1777)
    st = os.fstat(fd)
    mode, me = stat.S_IMODE(st.st_mode), os.getuid()
    why = None
    if mode & 0o002 and not mode & 0o1000:
        why = "is world-writable without the sticky bit (anyone could remove other users' claims)"
    elif st.st_uid not in (0, me) and mode & 0o1777 != 0o1777:
        why = "belongs to uid %d and is not shared (mode %o, expected 1777)" % (st.st_uid, mode)
    elif not os.access(path, os.W_OK | os.X_OK):
        why = "is not writable by uid %d (mode %o)" % (me, mode)
    if why:
        os.close(fd)
        raise ValueError("card claims dir %s %s; make it with `install -d -m 1777 %s` as root, or name "
                         "another with claims= in the hostfile" % (path, why, path))
    return fd


def parse_claim(text):
    # type: (str) -> dict | None
    """A claim file's ``key=value`` lines (a later key wins: DETACH appends the pid)."""
    out = {}
    for line in text.splitlines():
        key, eq, value = line.partition("=")
        if eq:
            out[key.strip()] = value.strip()
    try:
        return {"job_id": out["job_id"], "cards": [int(c) for c in out.get("cards", "").split(",") if c],
                "pid": int(out["pid"]) if out.get("pid") else None, "start": out.get("start") or None,
                "time": float(out.get("time") or 0), "state_dir": out.get("state_dir", ""),
                "boot": out.get("boot", ""), "pidns": out.get("pidns", "")}
    except (KeyError, ValueError):
        return None


def read_claims(dfd):
    # type: (int) -> list[dict]
    """Every claim file ``<job id>.claim`` in the host-wide dir, each with its owner (the
    file's uid, never what the file says) -> [claim dict + "uid", "user", "name"]."""
    import pwd
    out = []
    for name in sorted(os.listdir(dfd)):
        if not name.endswith(".claim"):
            continue
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dfd)
        except OSError:
            continue
        try:
            st = os.fstat(fd)
            if (st.st_mode & 0o170000) != 0o100000 or st.st_size > 65536:
                continue
            claim = parse_claim(os.read(fd, 65536).decode("utf-8", "replace"))
        finally:
            os.close(fd)
        if claim is None:
            continue
        try:
            user = pwd.getpwuid(st.st_uid).pw_name
        except KeyError:
            user = "uid %d" % st.st_uid
        claim.update(uid=st.st_uid, user=user, name=name)
        out.append(claim)
    return out


def claim_alive(claim, markers, ids, now):
    # type: (dict, set[str], tuple[str, str], float) -> bool
    """A claim holds while its job lives: a process with its marker (ours to read), else the
    supervisor DETACH noted (pid + start time: a reused pid is another process), else, before
    the job started (no pid yet), for CLAIM_TTL seconds unless its state dir says it ended."""
    if claim["job_id"] in markers:
        return True
    if claim["boot"] and ids[0] and claim["boot"] != ids[0]:
        return False
    if claim["pidns"] and ids[1] and claim["pidns"] != ids[1]:
        return True
    pid, start = claim["pid"], claim["start"]
    # our own job's state dir says it ended, or started before DETACH noted it; another user's
    # path is never opened (it could name a FIFO and hang us)
    state = claim["state_dir"] if claim.get("uid", os.getuid()) == os.getuid() else ""
    if state and os.path.exists(os.path.join(state, "exit_code")):
        return False
    if pid is None and state:
        try:
            with open(os.path.join(state, "pid")) as f:
                fields = f.read().split()
            pid, start = int(fields[1]), fields[3]
        except (ValueError, IndexError):
            return False  # started (a pid file) and no process carries its marker: ended
        except OSError:
            pass
    if pid is not None:
        now_start = proc_start(pid)
        return now_start is not None and (start is None or now_start == start)
    return now - claim["time"] < CLAIM_TTL


def legacy_claims(cdir, markers):
    # type: (str, set[str]) -> tuple[list[dict], list[str]]
    """-> ([live claims], [paths of dead ones]) of the per-workdir dir (see :func:`claims_dir`)."""
    import time
    live = []  # type: list[dict]
    dead = []  # type: list[str]
    try:
        names = sorted(os.listdir(cdir))
    except OSError:
        return live, dead
    for name in names:
        if "." in name:  # temp files of save_cache
            continue
        path = os.path.join(cdir, name)
        claim = load_cache(path)
        job, state = claim.get("job_id", name), claim.get("state_dir") or ""
        if job in markers:
            alive = True
        elif state and (os.path.exists(os.path.join(state, "exit_code")) or os.path.exists(os.path.join(state, "pid"))):
            alive = False
        else:
            alive = time.time() - claim.get("time", 0) < CLAIM_TTL
        if alive:
            live.append({"job_id": job, "cards": list(claim.get("cards", [])), "user": my_name(), "pid": None,
                         "state_dir": state})
        else:
            dead.append(path)
    return live, dead


def my_name():
    # type: () -> str
    import pwd
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return "uid %d" % os.getuid()


def live_claims(dfd, base, markers):
    # type: (int | None, str, set[str]) -> tuple[list[dict], list[str]]
    """-> ([{"job_id", "cards", "user", "pid"}] holding cards here, [names of our own dead
    claim files in the dir]): the host-wide dir (every user's) plus our old per-workdir dir."""
    import time
    ids, now = host_ids(), time.time()
    live, dead = [], []
    for c in (read_claims(dfd) if dfd is not None else []):
        if claim_alive(c, markers, ids, now):
            live.append({"job_id": c["job_id"], "cards": c["cards"], "user": c["user"], "pid": c["pid"],
                         "state_dir": c["state_dir"] if c["uid"] == os.getuid() else ""})
        elif c["uid"] == os.getuid():
            dead.append(c["name"])
    old = legacy_claims(claims_dir(base), markers)[0] if base else []
    seen = set(c["job_id"] for c in live)
    return live + [c for c in old if c["job_id"] not in seen], dead


def lock_cards(dfd, cards, timeout=30.0):
    # type: (int, list[int], float) -> list[int]
    """flock ``card-<N>.lock`` of each card, in ascending order (two claimers of overlapping
    cards cannot deadlock), blocking at most ``timeout`` s each. A lock file is opened, never
    created over an existing one (O_CREAT on another user's file in a sticky dir is refused
    by fs.protected_regular); the locks go when this process exits."""
    import fcntl
    import time
    fds = []
    for card in sorted(set(cards)):
        name = "card-%d.lock" % card
        fd = None
        while fd is None:
            try:
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dfd)
            except FileNotFoundError:
                try:
                    fd = os.open(name, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=dfd)
                except FileExistsError:
                    continue
            except OSError as exc:  # ELOOP: a symlink planted there
                sys.exit("card %d's lock %s is not a regular file (%s); remove it" % (card, name, exc.strerror))
        if (os.fstat(fd).st_mode & 0o170000) != 0o100000:
            sys.exit("card %d's lock %s is not a regular file; remove it" % (card, name))
        deadline = time.time() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.time() > deadline:
                    sys.exit("card %d's lock (%s) was held for %d s by another process" % (card, name, timeout))
                time.sleep(0.02)
        fds.append(fd)
    return fds


def write_claim(dfd, job_id, cards, state_dir):
    # type: (int, str, list[int], str) -> None
    """``<job id>.claim``, ours, written to a temp name and renamed over (never through a
    link: the rename replaces the name, and the temp is created O_EXCL)."""
    import time
    boot, ns = host_ids()
    text = "job_id=%s\ncards=%s\nstate_dir=%s\ntime=%f\nboot=%s\npidns=%s\n" % (
        job_id, ",".join(str(c) for c in cards), state_dir, time.time(), boot, ns)
    tmp = "%s.tmp.%d" % (job_id, os.getpid())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=dfd)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    try:
        os.rename(tmp, job_id + ".claim", src_dir_fd=dfd, dst_dir_fd=dfd)
    except OSError as exc:  # another user's file by that name (the sticky bit keeps it theirs)
        os.unlink(tmp, dir_fd=dfd)
        sys.exit("cannot write the claim %s.claim: %s" % (job_id, exc.strerror))


def npu_smi():
    # type: () -> dict | None
    """``npu-smi info`` here: {"code", "out", "err"}, or None when there is no npu-smi (CPU host)."""
    for d in os.environ.get("PATH", "").split(os.pathsep):
        exe = os.path.join(d, "npu-smi")
        if d and os.access(exe, os.X_OK):
            break
    else:
        return None
    import subprocess
    try:
        p = subprocess.run([exe, "info"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=20)  # noqa: UP022 (3.6)
    except (OSError, subprocess.SubprocessError) as exc:
        return {"code": -1, "out": "", "err": str(exc)}
    return {"code": p.returncode, "out": p.stdout.decode("utf-8", "replace"),
            "err": p.stderr.decode("utf-8", "replace")[-2000:]}


def claim(req):
    # type: (dict) -> None
    """CLAIM ``{"op": "claim", "base", "job_id", "cards", "state_dir", "smi", "claims_dir"}``:
    under the locks of the wanted cards (``card-<N>.lock`` in the host-wide dir, one per
    card), take them for the job unless a live claim of another job — any user's — holds one
    (``cards`` empty: only look). Our own dead claims are removed on the way; another user's
    dead claim is only ignored (the sticky dir keeps it theirs).
    -> ``{"ok", "claims": [other live claims], "npu_smi"}``. Two submits racing for a card
    serialise on its lock: the second sees the first's claim and is refused."""
    job = req["job_id"]
    if "/" in job or job.startswith("."):
        sys.exit("bad job id %r" % job)
    try:
        dfd = open_cards_dir(cards_dir(req))
    except ValueError as exc:
        sys.exit(str(exc))
    want = list(req.get("cards") or [])
    lock_cards(dfd, want)
    live, dead = live_claims(dfd, os.path.abspath(os.path.expanduser(req["base"])), job_markers())
    for name in dead:
        try:
            os.unlink(name, dir_fd=dfd)
        except OSError:
            pass
    others = [c for c in live if c["job_id"] != job]
    taken = set(c for o in others for c in o["cards"])
    ok = bool(want) and not taken.intersection(want)
    if ok:
        write_claim(dfd, job, want, req.get("state_dir") or "")
    out = {"ok": ok, "claims": others}
    if req.get("smi"):
        out["npu_smi"] = npu_smi()
    answer(out)


def release(req):
    # type: (dict) -> None
    """RELEASE ``{"op": "release", "base", "job_id", "claims_dir"}``: drop the job's claim
    here (ours only: in the sticky dir no one else's can go), and its old per-workdir one."""
    gone = False
    try:
        dfd = open_cards_dir(cards_dir(req))
    except ValueError:
        dfd = None
    if dfd is not None and open_own(dfd, req["job_id"] + ".claim", os.O_RDONLY) is not None:
        try:
            os.unlink(req["job_id"] + ".claim", dir_fd=dfd)
            gone = True
        except OSError:
            pass
    try:
        os.unlink(os.path.join(claims_dir(os.path.abspath(os.path.expanduser(req["base"]))), req["job_id"]))
        gone = True
    except OSError:
        pass
    answer({"released": gone})


def top(req):
    # type: (dict) -> None
    """TOP ``{"op": "top", "base", "claims_dir"}`` (``alaunch top``, one round trip per host
    per refresh): who holds which card (every user's live claims), ``npu-smi info``, and for
    each process npu-smi lists its owner, name and job marker when we may read it; for our
    own claimed jobs the tails of their rank logs (their progress)."""
    import pwd
    dfd, problem, path = None, None, cards_dir(req)
    if os.path.lexists(path):  # a look: no dir yet is no claim, not one to make
        try:
            dfd = open_cards_dir(path)
        except ValueError as exc:
            problem = str(exc)
    claims = live_claims(dfd, os.path.abspath(os.path.expanduser(req["base"])), job_markers())[0]
    smi = npu_smi()
    procs = {}
    for line in (smi or {}).get("out", "").splitlines():
        cells = line.split("|")
        if len(cells) >= 5 and cells[2].strip().isdigit():  # a process row: | npu chip | pid | name | MB |
            pid = cells[2].strip()
            info = {"user": None, "name": None, "job": None}  # type: dict[str, str | None]
            try:
                info["user"] = pwd.getpwuid(os.stat("/proc/" + pid).st_uid).pw_name
                with open("/proc/%s/comm" % pid) as f:
                    info["name"] = f.read().strip()
                with open("/proc/%s/environ" % pid, "rb") as f:
                    for var in f.read().split(b"\0"):
                        if var.startswith(b"ALAUNCH_JOB_ID="):
                            info["job"] = var[15:].decode("utf-8", "replace")
            except (OSError, KeyError):
                pass
            procs[pid] = info
    tails = {}
    for c in claims:
        state = c.get("state_dir") or ""
        root = os.path.dirname(os.path.dirname(state)) if state else ""
        if root and os.access(root, os.R_OK | os.X_OK):
            tails[c["job_id"]] = log_tails(root, 16384)
    answer({"host": os.uname()[1], "claims": claims, "npu_smi": smi, "procs": procs, "tails": tails,
            "problem": problem})


if __name__ == "__main__":
    run({"inventory": inventory, "receive": receive, "link": link, "verify": verify, "claim": claim,
         "release": release, "relay": relay, "top": top})
