"""The host script ``fetch`` runs (stdlib only; ``python3 -S -c PROGRAM``, request on stdin).

Its request is the marshal frame of :func:`launcher.remote.wire.request` (``_prelude.py``) on
stdin, never shell text, so no glob or path becomes part of a command line; ``op`` picks the
operation. Answers are JSON (LIST) or the raw stream (SEND); the host's hash cache is a marshal
file (``state/fetch-sha256.marshal``), read and written only by this script.

LIST: ``{"op": "list", "root": "<job dir>", "globs": {"logs": [...], ...}, "cache": "state/fetch-sha256.marshal",
"local": {path: size of the file already fetched}}``
-> ``{"root": "<real job dir>", "files": [{"group", "path", "src", "size", "mtime_ns", "sha256"}],
"refused": [{"group", "glob", "path", "why"}]}``. ``path`` is relative to the job dir; ``src`` is
the real absolute file to read. A glob that is absolute or has ``..``, or a match whose real
path (symlinks resolved) is outside the job dir, is *refused*, not listed: the caller stops.

Each sha256 covers exactly ``size`` bytes (a log still being appended to hashes the prefix
that will be sent). Hashes are cached in the job dir by (size, mtime_ns, inode), so listing a
16 GB checkpoint a second time does not read it again; a read-only job dir just skips the cache.
A file is hashed at listing time only when the cache has no hash and a same-size copy is
already here (so it may be skipped); otherwise ``sha256`` is null and SEND hashes it while
sending it, in parallel with the transfer instead of a whole read before it.

SEND: ``{"op": "send", "files": [{"src", "offset", "length", "hash"}], "cache": "<abs path>",
"zero_copy_min"?}`` -> for each entry, in order, exactly
``length`` bytes of ``src`` from ``offset``, then a 32-byte trailer: the sha256 of the whole
``[0, offset+length)`` when ``hash`` (the prefix is read and hashed, not sent), else 32 zero
bytes. All files of a node come back in ONE stream; the receiver knows every length, so the
framing needs no headers. A file that vanished or shrank is padded with zeros and gets a
trailer of 32 0xff bytes: the receiver's check fails and nothing wrong is renamed into place.
Whole files it hashed go into the host's hash cache, so the next listing need not read them.
"""

import os
import sys

from _prelude import answer, begin_stream, load_cache, run, save_cache, widen_pipe

BAD = b"\xff" * 32
ZERO_COPY_MIN = 64 << 20  # the request's "zero_copy_min" overrides it
out = sys.stdout.buffer
buf = bytearray()
view = memoryview(buf)


def list_op(req):
    import glob
    import hashlib
    root = os.path.abspath(os.path.expanduser(req["root"]))
    if not os.path.isdir(root):
        sys.stderr.write("job directory %s does not exist on this host\n" % root)
        sys.exit(3)
    real_root = os.path.realpath(root)
    cache_path = os.path.join(real_root, req["cache"]) if req.get("cache") else None
    cache = load_cache(cache_path) if cache_path else {}
    files, refused, seen = [], [], set()

    def inside(real):
        return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)

    for group, patterns in req["globs"].items():
        for pattern in patterns:
            if pattern.startswith("/") or ".." in pattern.split("/"):
                refused.append({"group": group, "glob": pattern, "path": pattern,
                                "why": "the glob is absolute or contains '..'"})
                continue
            for match in sorted(glob.glob(os.path.join(glob.escape(root), pattern), recursive=True)):
                rel = os.path.relpath(match, root)
                real = os.path.realpath(match)
                if not inside(real):
                    refused.append({"group": group, "glob": pattern, "path": rel,
                                    "why": "it resolves to %s, outside the job directory" % real})
                    continue
                if rel in seen or not os.path.isfile(real):
                    continue
                seen.add(rel)
                st = os.stat(real)
                files.append({"group": group, "path": rel, "src": real, "size": st.st_size,
                              "mtime_ns": st.st_mtime_ns, "ino": st.st_ino})
    changed = False
    here = req.get("local") or {}
    for f in files:
        key = [f["size"], f["mtime_ns"], f.pop("ino")]
        hit = cache.get(f["src"])
        if hit and hit[:3] == key:
            f["sha256"] = hit[3]
            continue
        if here.get(f["path"]) != f["size"]:
            f["sha256"] = None  # nothing here to compare with: SEND hashes it while sending
            continue
        h, left = hashlib.sha256(), f["size"]
        with open(f["src"], "rb") as fh:
            while left > 0:
                block = fh.read(min(1 << 20, left))
                if not block:
                    break
                h.update(block)
                left -= len(block)
        f["sha256"] = h.hexdigest()
        cache[f["src"]] = key + [f["sha256"]]
        changed = True
    if changed and cache_path:
        save_cache(cache_path, cache)
    answer({"root": real_root, "files": files, "refused": refused})


def send_range(f, pos, left, size, h):
    """Big ranges: kernel copies (sendfile: page cache -> pipe) and a hash over the mapped
    file, so the bytes never pass through a Python buffer. Only for ranges of at least
    ZERO_COPY_MIN bytes (checkpoints): a mapped file truncated under us raises SIGBUS, which
    a log rotated by truncation could do; small files and the rest use read/write."""
    end = min(pos + left, size)
    if end - pos >= ZERO_COPY_MIN and hasattr(os, "sendfile"):
        try:
            import mmap
            mm = mmap.mmap(f.fileno(), end, prot=mmap.PROT_READ)
        except (OSError, ValueError, ImportError):
            mm = None
        if mm is not None:
            if hasattr(mm, "madvise"):
                mm.madvise(mmap.MADV_SEQUENTIAL)  # read-ahead for the hash
            mv = memoryview(mm)
            out.flush()
            try:
                while pos < end:
                    try:
                        n = os.sendfile(1, f.fileno(), pos, min(1 << 20, end - pos))
                    except OSError:  # sendfile refused here: read/write below sends the rest
                        break
                    if not n:
                        break
                    if h is not None:
                        h.update(mv[pos:pos + n])
                    pos += n
                    left -= n
            finally:
                mv.release()
                mm.close()
    f.seek(pos)
    while left > 0:
        n = f.readinto(view[:min(len(buf), left)])
        if not n:
            break
        if h is not None:
            h.update(view[:n])
        out.write(view[:n])
        left -= n
    return left


def send_op(req):
    import hashlib
    global ZERO_COPY_MIN, buf, view
    widen_pipe(1)
    buf = bytearray(1 << 20)  # one buffer, reused: no 1 MiB allocation per read
    view = memoryview(buf)
    learned = {}
    ZERO_COPY_MIN = req.get("zero_copy_min", ZERO_COPY_MIN)
    begin_stream()
    for e in req["files"]:
        h = hashlib.sha256() if e["hash"] else None
        left, bad = e["length"], False
        try:
            f = open(e["src"], "rb")
        except OSError as exc:
            sys.stderr.write("%s: %s\n" % (e["src"], exc.strerror))
            f, bad = None, True
        if f is not None:
            with f:
                st = os.fstat(f.fileno())
                if h is not None and e["offset"]:
                    pre = e["offset"]
                    while pre > 0:
                        b = f.read(min(1 << 20, pre))
                        if not b:
                            bad = True
                            break
                        h.update(b)
                        pre -= len(b)
                left = send_range(f, e["offset"], left, st.st_size, h)
        if left > 0:
            bad = True
            zeros = b"\0" * min(left, 1 << 20)
            while left > 0:
                out.write(zeros[:left])
                left -= min(left, len(zeros))
        if bad:
            out.write(BAD)
        elif h is not None:
            out.write(h.digest())
            if e["offset"] + e["length"] == st.st_size:
                learned[e["src"]] = [st.st_size, st.st_mtime_ns, st.st_ino, h.hexdigest()]
        else:
            out.write(b"\0" * 32)
    out.flush()
    if learned and req.get("cache"):
        cache = load_cache(req["cache"])
        cache.update(learned)
        save_cache(req["cache"], cache)


if __name__ == "__main__":
    run({"list": list_op, "send": send_op})
