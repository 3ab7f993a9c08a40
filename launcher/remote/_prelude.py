"""Helpers every host script shares (stdlib only, never ``launcher``: this runs on the host).

Shipped in front of each script (:func:`launcher.remote.wire.program` strips the script's
``from _prelude import ...`` line), and imported for real when a script runs directly
(``python launcher/remote/stage.py``: the script's directory is on ``sys.path``).

The request: one marshal frame (format version 4, read by every CPython >= 3.4; the test
round-trips it from this machine's laptop Python to 3.6 ... 3.13), an 8-byte big-endian
length then ``marshal.dumps(obj, 4)``. It comes on stdin (the frame first; whatever follows,
e.g. RECEIVE's tar stream, is the script's to read from :func:`stdin`), or, only for the
follower (a runner's ``stream`` gives it no stdin), as the hex of the frame in ``argv[1]``.
Why marshal and not JSON: ``import json`` pulls ``re``, ``enum`` and ``functools`` into
every ``python -S`` on the host; benchmarks/bench_transport.py measured a host script's
round trip at 42.6 ms with a json request and 26.8 ms with marshal. Why a length prefix and
not ``marshal.load(stdin)``: ``marshal.load`` on a stream calls ``readinto`` once per object,
16.5 ms for a 5,000-file LINK manifest against 0.8 ms for ``marshal.loads`` of its bytes.

Answers are framed: :func:`answer` writes one line, :data:`MARK` then the JSON, so whatever
a login shell prints first (a ``.bashrc`` that echoes, a banner, a CANN ``set_env.sh`` that
talks) is skipped by the laptop (``launcher.remote.wire.answer``: the last marked line wins);
byte streams (collect's SEND) start with the same mark and a newline (:func:`begin_stream`).
The JSON is written by :func:`dumps` with the C string escaper of ``_json`` (what
``json.dumps`` uses, so a file name that is not UTF-8 comes back as the same
surrogate-escaped text): the laptop never unmarshals bytes a host produced.
"""

import marshal
import os
import sys

try:
    from _json import encode_basestring_ascii as _q
except ImportError:
    from json.encoder import py_encode_basestring_ascii as _q

_STDIN = []  # type: list
MARK = "\x1eALAUNCH-ANSWER\x1e"  # starts the one line a laptop parses (wire.ANSWER_MARK)
CARDS_DIR = "/var/tmp/alaunch-cards"  # the host-wide card claims of every user (stage.py CLAIM)


def stdin():
    """The host's stdin, 1 MiB buffered (the same reader the request came from)."""
    if not _STDIN:
        _STDIN.append(open(0, "rb", buffering=1 << 20, closefd=False))
    return _STDIN[0]


def read_request():
    # type: () -> dict
    """The request (see the module docstring): hex frame in argv[1], else the frame on stdin."""
    if len(sys.argv) > 1:
        frame = bytes.fromhex(sys.argv[1])
        head, body = frame[:8], frame[8:]
    else:
        head = stdin().read(8)
        body = stdin().read(int.from_bytes(head, "big")) if len(head) == 8 else b""
    if len(head) != 8 or len(body) != int.from_bytes(head, "big"):
        sys.exit("request cut short: %d bytes" % (len(head) + len(body)))
    return marshal.loads(body)


def widen_pipe(fd):
    # type: (int) -> None
    """1 MiB pipe (F_SETPIPE_SZ, Linux): bulk bytes in 1 MiB reads/writes. Best effort."""
    try:
        import fcntl
        fcntl.fcntl(fd, 1031, 1 << 20)
    except (ImportError, OSError):
        return


def load_cache(path):
    # type: (str) -> dict
    """A host-side cache file (marshal); missing or damaged is empty: it is only a hint."""
    try:
        with open(path, "rb") as fh:
            data = marshal.load(fh)
    except (OSError, ValueError, EOFError, TypeError):
        return {}
    return data if isinstance(data, dict) else {}


def save_cache(path, data):
    # type: (str, dict) -> None
    """Write a host-side cache atomically; a read-only job dir just keeps no cache."""
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = path + ".tmp.%d" % os.getpid()
        with open(tmp, "wb") as fh:
            marshal.dump(data, fh, 4)
        os.replace(tmp, path)
    except OSError:
        return


def cards_dir(req):
    # type: (dict) -> str
    """The host-wide claims dir: the hostfile's ``claims=`` (``req["claims_dir"]``), else
    ``$ALAUNCH_CARDS_DIR`` on the host, else :data:`CARDS_DIR`. In the prelude because CLAIM
    (stage.py), DETACH (launch.py, which notes the job's pid in its claim) and PRUNE read it."""
    return os.path.abspath(os.path.expanduser(req.get("claims_dir") or os.environ.get("ALAUNCH_CARDS_DIR")
                                              or CARDS_DIR))


def open_own(dfd, name, flags):
    # type: (int, str, int) -> int | None
    """``name`` in the directory ``dfd``, never through a symlink, only a regular file we own
    (a world-writable dir: another user may have put anything there) -> fd, or None."""
    try:
        fd = os.open(name, flags | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dfd)
    except OSError:
        return None
    st = os.fstat(fd)
    if (st.st_mode & 0o170000) != 0o100000 or st.st_uid != os.getuid():
        os.close(fd)
        return None
    return fd


def log_tails(root, keep=65536):
    # type: (str, int) -> dict[str, list[str]]
    """rank -> the last lines (at most ``keep`` bytes) of its worker log under ``root``
    (msrun's ``msrun_log/worker_N.log``, else MindFormers' ``output/log/rank_N/info.log``).

    In the prelude because two ops read it: the follower's TAIL and launch's STATUS of a
    running node (``status`` shows each node's step and loss from one round trip per host
    instead of two). No ``re``: importing it costs a ``python -S`` on the host ~5 ms."""
    picked = {}  # type: dict[str, tuple[str, int]]  # rank -> (log path, priority: 0 is msrun's)

    def add(rank, path, prio):
        # type: (str, str, int) -> None
        if os.path.isfile(path) and (rank not in picked or picked[rank][1] > prio):
            picked[rank] = (path, prio)
    msrun_log = os.path.join(root, "msrun_log")
    for name in (os.listdir(msrun_log) if os.path.isdir(msrun_log) else []):
        rank = name[len("worker_"):-len(".log")]
        if name.startswith("worker_") and name.endswith(".log") and rank and not rank.strip("0123456789"):
            add(rank, os.path.join(msrun_log, name), 0)
    logs = os.path.join(root, "output", "log")
    for d in (os.listdir(logs) if os.path.isdir(logs) else []):
        rank = d[len("rank_"):]
        if d.startswith("rank_") and rank and not rank.strip("0123456789"):
            add(rank, os.path.join(logs, d, "info.log"), 1)
    result = {}
    for rank, (path, _) in picked.items():
        try:
            with open(path, "rb") as fh:
                fh.seek(0, 2)
                size = fh.tell()
                fh.seek(max(0, size - keep))
                lines = fh.read().decode("utf-8", "replace").splitlines()
        except OSError:  # rotated away between the listing and the open
            continue
        result[rank] = lines[1:] if size > keep else lines
    return result


LINE_CAP = 1 << 16  # bytes of one log line kept; the rest is counted


class Lines:
    """Bytes as they arrive -> complete lines, each kept up to ``cap`` bytes and the rest
    counted (said once, at the end of the kept text). Every byte is looked at once: the
    newline is searched in the new bytes only and the unfinished line is never re-joined.

    Why: the follower split ``(pending + data).split(b"\n")`` on each read, so a line without a
    newline cost the square of its size on both sides: 16 MiB took 1.7 s, 32 MiB 6.7 s, and
    past 10 s every node was marked unreachable, cut and reconnected from the same offset,
    forever (benchmarks/bench_follow_lines.py measures it linear now). In the prelude because
    both sides use it: the follow script on the host, and the follower's pipe reader on the
    laptop (which imports this file)."""

    def __init__(self, cap=LINE_CAP):
        # type: (int) -> None
        self.cap, self.part, self.cut = cap, bytearray(), 0

    def _add(self, data, start, stop):
        # type: (bytes, int, int) -> None
        room = self.cap - len(self.part)
        if room > 0:
            self.part += data[start:min(stop, start + room)]
        self.cut += max(0, stop - start - max(room, 0))

    def _take(self):
        # type: () -> tuple[bytes, int]
        text, size = bytes(self.part), len(self.part) + self.cut
        if self.cut:
            text += (" [line cut: %d more bytes]" % self.cut).encode()
        self.part, self.cut = bytearray(), 0
        return text, size

    def feed(self, data):
        # type: (bytes) -> list[tuple[bytes, int]]
        """The lines ``data`` completes: [(text, size in bytes without the newline)]."""
        out, start, find = [], 0, data.find
        while True:
            end = find(b"\n", start)
            if end < 0:
                break
            if not self.part and not self.cut and end - start <= self.cap:
                out.append((data[start:end], end - start))
            else:
                self._add(data, start, end)
                out.append(self._take())
            start = end + 1
        if start < len(data):
            self._add(data, start, len(data))
        return out

    def rest(self):
        # type: () -> tuple[bytes, int]
        """The unfinished line as (text, size), and forget it; size 0: there is none."""
        return self._take()

    def __len__(self):
        # type: () -> int
        """Bytes of the unfinished line, kept and counted."""
        return len(self.part) + self.cut


def install_field(path, key):
    # type: (str, str) -> str | None
    """The value of ``key`` (case-insensitive, quotes stripped) in a ``key=value`` install
    file such as CANN's ``ascend_toolkit_install.info``; None when absent or unreadable."""
    try:
        with open(path) as fh:
            for line in fh:
                k, _, v = line.strip().partition("=")
                if k.strip().lower() == key:
                    return v.strip().strip('"') or None
    except OSError:
        return None
    return None


def ascend_versions(driver="/usr/local/Ascend/driver/version.info"):
    # type: (str) -> dict[str, str | None]
    """``{"cann", "driver"}`` read from their install files, None where absent: the toolkit's
    ``<sub>/ascend_toolkit_install.info`` (the first subdirectory by name that has one), else
    ``version.info`` at the toolkit root, under ``$ASCEND_TOOLKIT_HOME`` (default
    ``/usr/local/Ascend/ascend-toolkit/latest``). Shared by ``hosts check`` (probe.py) and the
    preflight's skew check (stage.py ``versions``), so both read the same answer."""
    home = os.environ.get("ASCEND_TOOLKIT_HOME") or "/usr/local/Ascend/ascend-toolkit/latest"
    cann = None
    for sub in sorted(os.listdir(home)) if os.path.isdir(home) else ():
        cann = cann or install_field(os.path.join(home, sub, "ascend_toolkit_install.info"), "version")
    cann = cann or install_field(os.path.join(home, "version.info"), "version")
    return {"cann": cann, "driver": install_field(driver, "version")}


def versions():
    # type: () -> dict[str, str | None]
    """MindSpore / MindFormers (their dist-info names in this python's site dirs: no import,
    ~1 ms), the CANN toolkit and the NPU driver (their install files) — None where absent: what
    must agree on every node of a job (the preflight, stage.py INVENTORY; a Slurm job's nodes, slurm.py VERSIONS)."""
    import sysconfig
    out = {"mindspore": None, "mindformers": None, "cann": None, "driver": None}  # type: dict[str, str | None]
    paths = sysconfig.get_paths()
    # under -S a venv's site-packages is on no path: find it from the interpreter's own prefix
    lib = "python%d.%d" % sys.version_info[:2]
    venv = os.path.dirname(os.path.dirname(os.path.abspath(sys.executable)))
    dirs = [paths.get("purelib"), paths.get("platlib")] + [p for p in sys.path if p.endswith("-packages")] + [
        os.path.join(venv, sub, lib, "site-packages") for sub in ("lib", "lib64")]
    for d in dict.fromkeys(dirs):
        for name in (os.listdir(d) if d and os.path.isdir(d) else ()):
            if name.endswith(".dist-info") and "-" in name:
                dist, ver = name[:-len(".dist-info")].split("-", 1)
                if dist.lower() in out and out[dist.lower()] is None:
                    out[dist.lower()] = ver
    out.update(ascend_versions())
    return out


class BlockCRC:
    """The stdlib fetch check (``crc32x1m``): the CRC-32 of each 1 MiB block (at absolute
    offsets from the file's start), summed up by the sha256 of that list. zlib's CRC-32 runs at
    7.3 GiB/s here against sha256's 2.1 (SHA-NI); used where a Python cannot import xxhash
    (see :func:`new_check`). A changed block escapes with probability 2**-32, each block on
    its own."""

    BLOCK = 1 << 20

    def __init__(self):
        self.crcs = []  # type: list  # of every whole block so far
        self.crc = 0  # of the block being filled
        self.fill = 0  # its bytes so far

    def update(self, data):
        # type: (object) -> None
        from zlib import crc32
        mv = memoryview(data)  # type: ignore[arg-type]  # any bytes-like object
        if mv.itemsize != 1 or mv.ndim != 1:
            mv = mv.cast("B")
        n, i = len(mv), 0
        while i < n:
            take = min(n - i, self.BLOCK - self.fill)
            self.crc = crc32(mv[i:i + take], self.crc)
            self.fill += take
            i += take
            if self.fill == self.BLOCK:
                self.crcs.append(self.crc)
                self.crc, self.fill = 0, 0

    def digest(self):
        # type: () -> bytes
        from hashlib import sha256
        tail = [self.crc] if self.fill else []
        return sha256(b"".join(c.to_bytes(4, "big") for c in self.crcs + tail)).digest()


def _xxhash():
    # type: () -> object
    """The ``xxhash`` module, or None. Host scripts run under ``python -S`` (no site-packages on
    the path), so the interpreter's own site-packages (a venv's: next to its ``pyvenv.cfg``) are
    tried by hand. MindFormers requires ``datasets``, which requires ``xxhash``: the Python a
    job runs with has it."""
    try:
        import xxhash
        return xxhash
    except ImportError:
        pass
    tail = os.path.join("lib", "python%d.%d" % sys.version_info[:2], "site-packages")
    roots = [os.path.dirname(os.path.dirname(os.path.abspath(sys.executable))), sys.prefix]
    for root in roots:
        path = os.path.join(root, tail)
        if os.path.isdir(path) and path not in sys.path:
            sys.path.append(path)
            try:
                import xxhash
                return xxhash
            except ImportError:
                sys.path.remove(path)
    return None


STDLIB_CHECK = "crc32x1m"  # the check every Python can do (zlib); see BlockCRC


def fetch_checks():
    # type: () -> list
    """The fetch checks this Python can compute, best first: ``xxh3_128`` (xxhash, what rsync
    checks with: ~20x zlib's CRC-32 here) when it can import xxhash, then ``crc32x1m``."""
    return (["xxh3_128"] if _xxhash() is not None else []) + [STDLIB_CHECK]


def new_check(name):
    # type: (str) -> object
    """A new hasher (``update``, ``digest``) of the fetch check ``name`` (:func:`fetch_checks`).

    The fetch check is what both ends of a fetch compute, the host over what it sends and the
    laptop over what it writes; a file is renamed into place only when the two agree. Why not
    sha256: on a machine where the whole byte path (sshd's cipher, ssh's, both ends' copies)
    shares the cores, each sha256 pass was a third of alaunch's CPU beyond ssh's own (0.24 CPU-s
    per 512 MiB, twice), and rsync, the baseline, checks with xxh128. ssh's AES-GCM already
    authenticates every packet in between. The staging store stays named and checked by sha256
    (its names are trusted by every later job on the host)."""
    if name == "xxh3_128":
        mod = _xxhash()
        if mod is None:
            raise ValueError("this Python cannot import xxhash")
        return mod.xxh3_128()  # type: ignore[attr-defined]
    if name == STDLIB_CHECK:
        return BlockCRC()
    raise ValueError("unknown fetch check %r" % name)


def check_hex(name, h):
    # type: (str, object) -> str
    """A file's digest as the caches and listings keep it: the check's name, ``:``, the hex."""
    return name + ":" + h.digest().hex()  # type: ignore[attr-defined]


def check_trailer(h):
    # type: (object) -> bytes
    """The 32-byte trailer SEND writes after a file: the digest, zero-padded."""
    return h.digest().ljust(32, b"\0")  # type: ignore[attr-defined]


def dumps(o):
    # type: (object) -> str
    """JSON text of ``o`` (None, bool, int, str, dict, list/tuple/set), ASCII only."""
    if o is None:
        return "null"
    if o is True or o is False:
        return "true" if o else "false"
    if isinstance(o, int):
        return str(int(o))
    if isinstance(o, str):
        return _q(o)
    if isinstance(o, dict):
        return "{" + ",".join(_q(str(k)) + ":" + dumps(v) for k, v in o.items()) + "}"
    if isinstance(o, (list, tuple, set, frozenset)):
        return "[" + ",".join(dumps(v) for v in o) + "]"
    raise TypeError("cannot encode %s" % type(o).__name__)


def answer(o):
    # type: (object) -> None
    """Print the answer ``o`` framed: a newline (a banner may not end in one), the mark, JSON."""
    sys.stdout.write("\n" + MARK + dumps(o) + "\n")
    sys.stdout.flush()


def begin_stream():
    # type: () -> None
    """Mark where a binary answer starts on stdout (anything before it is a shell's chatter)."""
    sys.stdout.write("\n" + MARK + "\n")
    sys.stdout.flush()


def run(ops):
    # type: (dict) -> None  # op name -> the function given the request
    """Read the request and run ``ops[request["op"]](request)``."""
    req = read_request()
    op = ops.get(req.get("op"))
    if op is None:
        sys.exit("unknown op %r (valid: %s)" % (req.get("op"), ", ".join(sorted(ops))))
    op(req)
