"""The host script ``fetch`` runs (stdlib only; ``python3 -S -c PROGRAM``, request on stdin).

Its request is the marshal frame of :func:`launcher.remote.wire.request` (``_prelude.py``) on
stdin, never shell text, so no glob or path becomes part of a command line; ``op`` picks the
operation. Answers are JSON (LIST) or the raw stream (SEND); the host's hash cache is a marshal
file (``state/fetch-digest.marshal``), read and written only by this script.

LIST: ``{"op": "list", "root": "<job dir>", "globs": {"logs": [...], ...}, "cache": "state/fetch-digest.marshal",
"local": {path: size of the file already fetched}, "checks": [the laptop's fetch checks, best first]}``
-> ``{"root": "<real job dir>", "check": "<the one both can do>", "files": [{"group", "path", "src", "size",
"mtime_ns", "digest"}], "refused": [{"group", "glob", "path", "why"}]}``. ``path`` is relative to
the job dir; ``src`` is the real absolute file to read. A glob that is absolute or has ``..``,
or a match whose real path (symlinks resolved) is outside the job dir, is *refused*, not
listed: the caller stops.

A file's ``digest`` is ``<check>:<hex>``, its fetch check (``new_check`` of the prelude:
``xxh3_128`` where this Python can import xxhash, else ``crc32x1m``) over exactly ``size``
bytes (a log still being appended to covers the prefix that will be sent). Digests are cached
in the job dir by (size, mtime_ns, inode), so listing a 16 GB checkpoint a second time does
not read it again (an entry of another check counts as none); a read-only job dir just skips
the cache. A file is read at listing time only when the cache has no digest and a same-size
copy is already here (so it may be skipped); otherwise ``digest`` is null and SEND computes it
while sending, beside the transfer instead of a whole read before it.

SEND: ``{"op": "send", "check": "<from LIST>", "files": [{"src", "offset", "length", "hash"}],
"cache": "<abs path>", "zero_copy_min"?}`` -> for each entry, in order, exactly ``length``
bytes of ``src`` from ``offset``, then a 32-byte trailer: the digest (zero-padded) of the
whole ``[0, offset+length)`` when ``hash`` (the prefix is read and checked, not sent), else 32
zero bytes. All files of a node come back in ONE stream; the receiver knows every length, so
the framing needs no headers. A file that vanished or shrank is padded with zeros and gets a
trailer of 32 0xff bytes: the receiver's check fails and nothing wrong is renamed into place.
Whole files it checked go into the host's digest cache, so the next listing need not read them.

LISTSEND: LIST's request (no ``lora``) -> LIST's answer line, then (unless something was
refused) SEND's stream of every file listed, whole and checked: a first fetch, with nothing
here yet to skip or resume, in one round trip and one host process instead of two.

LORA (part of LIST: ``"lora": {"globs": [...], "names": {name: element count}, "dir": "lora"}``):
every checkpoint the globs match (MindSpore ``.ckpt`` or ``.safetensors``) is read tensor by
tensor and only the tensors named are copied, byte for byte, into ``<dir>/<its path>`` (a
small checkpoint of the same format), which is then listed like any file (group ``lora``,
its sha256 and digest computed while writing it) with ``{"source", "source_size", "found": {name: element
count}}``; the laptop checks ``found`` against the rendered config's trainable parameters.
A ``.ckpt`` is the protobuf ``Checkpoint`` of MindSpore's ``checkpoint.proto`` (read from
mindspore 2.9's ``checkpoint_pb2``): ``repeated Value value = 1``, ``Value {string tag = 1;
TensorProto tensor = 2 | MapTensorProto maptensor = 3}``, ``TensorProto {repeated int64 dims = 1;
string tensor_type = 2; bytes tensor_content = 3}``, each Value written as its own top-level
record (a tensor over 512 MiB as several records with the same tag), an optional 17-byte
``crc_num`` trailer. Only the record headers are read: a frozen tensor is skipped by a seek,
never loaded, so memory is one 1 MiB copy buffer whatever the checkpoint's size. A kept record
is copied whole, so the small file is a valid checkpoint whose tensors are the original bytes.
A safetensors file: its JSON header is read, the kept tensors are copied after a new header
with the same metadata and re-based offsets.

APPLY: ``{"op": "apply", "base": "<.ckpt>", "delta": "<.ckpt>", "out": "<.ckpt>"}`` ->
``{"out", "size", "sha256", "kept", "replaced", "added"}``: one checkpoint holding every
record of ``base`` whose tag the delta does not have, then every record of the delta, copied
whole (a pipeline step that takes a training's LoRA delta plus a base checkpoint on its own
host: only the delta travelled). Streaming, like LORA: one 1 MiB buffer, records skipped by
seeks; written to a temporary name and renamed; a crc32 trailer when the base had one. The
written file is read back: its tags must be the base's and the delta's.
"""

import os
import sys

from _prelude import (
    STDLIB_CHECK,
    answer,
    begin_stream,
    check_hex,
    check_trailer,
    fetch_checks,
    load_cache,
    new_check,
    run,
    save_cache,
    widen_pipe,
)

BAD = b"\xff" * 32
ZERO_COPY_MIN = 64 << 20  # the request's "zero_copy_min" overrides it
out = sys.stdout.buffer
buf = bytearray()
view = memoryview(buf)


def list_op(req):
    answer(listing(req))


def listing(req):
    """LIST's answer (see the module docstring)."""
    import glob
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
    prefs = req.get("checks") or [STDLIB_CHECK]

    def cached(f):
        hit = cache.get(f["src"])
        return hit and hit[:3] == [f["size"], f["mtime_ns"], f["ino"]] and str(hit[3]).startswith(prefs[0] + ":")

    if files and not req.get("lora") and all(cached(f) and here.get(f["path"]) == f["size"] for f in files):
        check = prefs[0]  # all known and all there: a refetch of nothing needs no import of xxhash
    else:
        can = fetch_checks()
        check = next((c for c in prefs if c in can), can[-1])
    for f in files:
        key = [f["size"], f["mtime_ns"], f.pop("ino")]
        hit = cache.get(f["src"])
        if hit and hit[:3] == key and str(hit[3]).startswith(check + ":"):
            f["digest"] = hit[3]
            continue
        if here.get(f["path"]) != f["size"]:
            f["digest"] = None  # nothing here to compare with: SEND checks it while sending
            continue
        h, left = new_check(check), f["size"]
        with open(f["src"], "rb") as fh:
            while left > 0:
                block = fh.read(min(1 << 20, left))
                if not block:
                    break
                h.update(block)
                left -= len(block)
        f["digest"] = check_hex(check, h)
        cache[f["src"]] = key + [f["digest"]]
        changed = True
    if changed and cache_path:
        save_cache(cache_path, cache)
    if req.get("lora"):
        files += lora_op(req["lora"], root, real_root, inside, refused, check)
    return {"root": real_root, "files": files, "refused": refused, "check": check}


def listsend_op(req):
    """LISTSEND (see the module docstring): LIST's answer line, then SEND of every file listed."""
    found = listing(req)
    answer(found)
    if found["refused"]:
        return
    send_op({"check": found["check"], "cache": os.path.join(found["root"], req["cache"]) if req.get("cache") else None,
             "zero_copy_min": req.get("zero_copy_min", ZERO_COPY_MIN),
             "files": [{"src": f["src"], "offset": 0, "length": f["size"], "hash": True} for f in found["files"]]})


def _varint(fh):
    shift = result = 0
    while True:
        b = fh.read(1)
        if not b:
            raise ValueError("cut short inside a varint")
        result |= (b[0] & 0x7F) << shift
        if b[0] < 0x80:
            return result
        shift += 7


def ckpt_records(fh, end):
    """(tag, start, stop, tensor offset, tensor length) of every top-level Value record in
    ``[0, end)``; only the headers are read, the tensors are skipped by seeking."""
    pos = 0
    while pos < end:
        fh.seek(pos)
        if _varint(fh) != 0x0A:  # field 1 (value), length-delimited
            raise ValueError("byte %d is not a Checkpoint.value record" % pos)
        n = _varint(fh)
        body = fh.tell()
        stop = body + n
        if stop > end:
            raise ValueError("the record at byte %d runs past the end of the file" % pos)
        tag, tensor = None, None
        while fh.tell() < stop:
            key = _varint(fh)
            if key & 7 != 2:
                raise ValueError("unexpected field %d in the record at byte %d" % (key >> 3, pos))
            ln = _varint(fh)
            at = fh.tell()
            if key >> 3 == 1:
                tag = fh.read(ln).decode("utf-8", "surrogateescape")
            elif key >> 3 == 2:
                tensor = (at, ln)
            fh.seek(at + ln)
        yield tag, pos, stop, tensor
        pos = stop


def ckpt_tensor_facts(fh, at, ln):
    """(dims, tensor_type, content length) of the TensorProto at ``at``, the content skipped."""
    dims, dtype, content, end = [], None, 0, at + ln
    fh.seek(at)
    while fh.tell() < end:
        key = _varint(fh)
        field, wt = key >> 3, key & 7
        if field == 1 and wt == 0:
            dims.append(_varint(fh))
            continue
        if wt != 2:
            raise ValueError("unexpected wire type %d in a tensor at byte %d" % (wt, at))
        n = _varint(fh)
        here = fh.tell()
        if field == 1:  # packed dims
            while fh.tell() < here + n:
                dims.append(_varint(fh))
        elif field == 2:
            dtype = fh.read(n).decode("ascii", "replace")
        elif field == 3:
            content = n
        fh.seek(here + n)
    return dims, dtype, content


def _numel(dims):
    n = 1
    for d in dims:
        n *= d
    return n


def _copy(fh, start, stop, out, h):
    fh.seek(start)
    left = stop - start
    while left > 0:
        n = fh.readinto(view[:min(len(buf), left)])
        if not n:
            raise ValueError("cut short at byte %d" % (stop - left))
        h.update(view[:n])
        out.write(view[:n])
        left -= n


def ckpt_end(fh, size):
    """Where a .ckpt's records end: before MindSpore's 17-byte ``crc_num`` trailer, if any."""
    fh.seek(max(0, size - 17))
    tail = fh.read(17)
    return size - 17 if tail[:7] == b"crc_num" else size


class _Crc:
    """Feeds ``h`` and keeps the crc32 of what it was fed (MindSpore's trailer)."""

    def __init__(self, h):
        self.h, self.crc = h, 0

    def update(self, data):
        import binascii
        self.h.update(data)
        self.crc = binascii.crc32(data, self.crc)

    def trailer(self, out):
        trailer = b"crc_num" + self.crc.to_bytes(10, "big")
        self.h.update(trailer)
        out.write(trailer)


def lora_ckpt(fh, size, names, out, h):
    """Copy the records whose tag is in ``names`` (a .ckpt); returns {tag: element count}."""
    end = ckpt_end(fh, size)
    found = {}  # type: dict[str, list]  # tag -> [element count, dtype, content bytes]
    crc = _Crc(h)
    for tag, start, stop, tensor in list(ckpt_records(fh, end)):
        if tag not in names:
            continue
        if tensor is None:
            raise ValueError("%s is not a plain tensor (a map parameter?)" % tag)
        dims, dtype, content = ckpt_tensor_facts(fh, tensor[0], tensor[1])
        found[tag] = [_numel(dims), dtype, found.get(tag, [0, 0, 0])[2] + content]
        _copy(fh, start, stop, out, crc)
    if end != size:  # the source carried MindSpore's crc32 trailer: so does the delta
        crc.trailer(out)
    return found


def lora_safetensors(fh, size, names, out, h):
    """Copy the named tensors of a safetensors file after a new header; {name: element count}."""
    import json
    import struct
    n = struct.unpack("<Q", fh.read(8))[0]
    if n > size - 8 or n > 100 << 20:
        raise ValueError("header length %d does not fit the file" % n)
    header = json.loads(fh.read(n).decode("utf-8"))
    base = 8 + n
    kept = sorted(((k, v) for k, v in header.items() if k in names), key=lambda kv: kv[1]["data_offsets"][0])
    new, found, at = {}, {}, 0
    if "__metadata__" in header:
        new["__metadata__"] = header["__metadata__"]
    for k, v in kept:
        b, e = v["data_offsets"]
        new[k] = {"dtype": v["dtype"], "shape": v["shape"], "data_offsets": [at, at + e - b]}
        found[k] = [_numel(v["shape"]), v["dtype"], e - b]
        at += e - b
    text = json.dumps(new, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned, as safetensors writes it
    head = struct.pack("<Q", len(text)) + text
    h.update(head)
    out.write(head)
    for _name, v in kept:
        b, e = v["data_offsets"]
        _copy(fh, base + b, base + e, out, h)
    return found


def lora_op(spec, root, real_root, inside, refused, check):
    """LORA (see the module docstring): extract, write, list the small checkpoints."""
    import glob
    import hashlib
    global buf, view
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    names = spec["names"]
    dest_root = os.path.join(real_root, spec["dir"])
    files, seen = [], set()
    for pattern in spec["globs"]:
        if pattern.startswith("/") or ".." in pattern.split("/"):
            refused.append({"group": "lora", "glob": pattern, "path": pattern,
                            "why": "the glob is absolute or contains '..'"})
            continue
        for match in sorted(glob.glob(os.path.join(glob.escape(root), pattern), recursive=True)):
            rel = os.path.relpath(match, root)
            real = os.path.realpath(match)
            if rel in seen or rel.split(os.sep)[0] == spec["dir"] or not os.path.isfile(real):
                continue
            if not inside(real):
                refused.append({"group": "lora", "glob": pattern, "path": rel,
                                "why": "it resolves to %s, outside the job directory" % real})
                continue
            seen.add(rel)
            extract = lora_safetensors if rel.endswith(".safetensors") else lora_ckpt
            dest = os.path.join(dest_root, rel)
            tmp = dest + ".tmp.%d" % os.getpid()
            h = _Both(hashlib.sha256(), new_check(check))
            try:
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                with open(real, "rb", buffering=1 << 16) as fh, open(tmp, "wb") as out:
                    source_size = os.fstat(fh.fileno()).st_size
                    found = extract(fh, source_size, names, out, h)
                with open(tmp, "rb") as fh:  # verified: the written file reads back as the same tensors
                    again = extract(fh, os.fstat(fh.fileno()).st_size, names, _Null(), hashlib.sha256())
                if again != found:
                    raise ValueError("the written delta does not read back as the tensors copied")
                os.replace(tmp, dest)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                why = getattr(exc, "strerror", None) or exc
                sys.stderr.write("%s: cannot extract the LoRA tensors: %s\n" % (rel, why))
                sys.exit(3)
            files.append({"group": "lora", "path": os.path.join(spec["dir"], rel), "src": dest,
                          "size": os.path.getsize(dest), "sha256": h.a.hexdigest(),
                          "digest": check_hex(check, h.b), "source": rel,
                          "source_size": source_size, "found": found})
    return files


def apply_op(req):
    """APPLY (see the module docstring): base + delta -> one checkpoint, streamed."""
    import hashlib
    global buf, view
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    base, delta, dest = (os.path.expanduser(req[k]) for k in ("base", "delta", "out"))
    tmp = dest + ".tmp.%d" % os.getpid()
    h = hashlib.sha256()
    try:
        for path in (base, delta):
            if not path.endswith(".ckpt"):
                raise ValueError("%s: base + delta is written for MindSpore .ckpt files only" % path)
        with open(base, "rb", buffering=1 << 16) as bf, open(delta, "rb", buffering=1 << 16) as df:
            bsize, dsize = os.fstat(bf.fileno()).st_size, os.fstat(df.fileno()).st_size
            bend, dend = ckpt_end(bf, bsize), ckpt_end(df, dsize)
            drecs = list(ckpt_records(df, dend))
            dtags = {r[0] for r in drecs}
            brecs = list(ckpt_records(bf, bend))
            btags = {r[0] for r in brecs}
            os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
            crc = _Crc(h)
            with open(tmp, "wb") as out:
                for fh, recs in ((bf, [r for r in brecs if r[0] not in dtags]), (df, drecs)):
                    for _tag, start, stop, _tensor in recs:
                        _copy(fh, start, stop, out, crc)
                if bend != bsize:
                    crc.trailer(out)
        with open(tmp, "rb") as fh:
            wrote = {r[0] for r in ckpt_records(fh, ckpt_end(fh, os.fstat(fh.fileno()).st_size))}
        if wrote != btags | dtags:
            raise ValueError("the written checkpoint does not read back as the base's and the delta's tensors")
        os.replace(tmp, dest)
    except (OSError, ValueError) as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        why = "%s: %s" % (exc.filename, exc.strerror) if isinstance(exc, OSError) and exc.filename else exc
        sys.stderr.write("cannot write base + LoRA delta to %s: %s\n" % (dest, why))
        sys.exit(3)
    answer({"out": dest, "size": os.path.getsize(dest), "sha256": h.hexdigest(), "kept": len(btags - dtags),
            "replaced": len(btags & dtags), "added": len(dtags - btags)})


class _Both:
    """Feeds two hashers: a LoRA delta's sha256 (the pipeline relays it by that) and its
    fetch check."""

    def __init__(self, a, b):
        self.a, self.b = a, b

    def update(self, data):
        self.a.update(data)
        self.b.update(data)


class _Null:
    def write(self, data):
        return len(data)


class _Hashing:
    """A thread checking, in order, the ranges of the mapped file that ``sendfile`` has sent:
    the CRCs and the sends overlap (zlib releases the GIL on big buffers); ``join`` returns
    when every sent byte is in the digest, so the trailer covers exactly what left."""

    def __init__(self, h, mv):
        import queue
        import threading
        self.h, self.mv = h, mv
        self.work = queue.Queue()  # type: queue.Queue[tuple[int, int] | None]  # (offset, length); None: no more
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        item = self.work.get()
        while item is not None:
            self.h.update(self.mv[item[0]:item[0] + item[1]])
            item = self.work.get()

    def put(self, item):
        self.work.put(item)

    def join(self):
        self.work.put(None)
        self.thread.join()


def send_range(f, pos, left, size, h):
    """Big ranges: kernel copies (sendfile: page cache -> pipe) and a hash over the mapped
    file (by a second thread, :class:`_Hashing`), so the bytes never pass through a Python
    buffer. Only for ranges of at least ZERO_COPY_MIN bytes (checkpoints): a mapped file
    truncated under us raises SIGBUS, which a log rotated by truncation could do; small files
    and the rest use read/write."""
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
            sent = _Hashing(h, mv) if h is not None else None
            try:
                while pos < end:
                    try:
                        n = os.sendfile(1, f.fileno(), pos, min(1 << 20, end - pos))
                    except OSError:  # sendfile refused here: read/write below sends the rest
                        break
                    if not n:
                        break
                    if sent is not None:
                        sent.put((pos, n))
                    pos += n
                    left -= n
            finally:
                if sent is not None:
                    sent.join()
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
    global ZERO_COPY_MIN, buf, view
    widen_pipe(1)
    buf = bytearray(1 << 20)  # one buffer, reused: no 1 MiB allocation per read
    view = memoryview(buf)
    learned = {}
    check = req["check"]
    ZERO_COPY_MIN = req.get("zero_copy_min", ZERO_COPY_MIN)
    begin_stream()
    for e in req["files"]:
        h = new_check(check) if e["hash"] else None
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
            out.write(check_trailer(h))
            if e["offset"] + e["length"] == st.st_size:
                learned[e["src"]] = [st.st_size, st.st_mtime_ns, st.st_ino, check_hex(check, h)]
        else:
            out.write(b"\0" * 32)
    out.flush()
    if learned and req.get("cache"):
        cache = load_cache(req["cache"])
        cache.update(learned)
        save_cache(req["cache"], cache)


if __name__ == "__main__":
    run({"list": list_op, "send": send_op, "listsend": listsend_op, "apply": apply_op})
