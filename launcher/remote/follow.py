"""The host script the follower runs on a node (stdlib only; ``python3 -c PROGRAM REQUEST``).

Why a script and not ``tail -F``: ``tail -F`` follows the files it was given, but
``worker_N.log``, ``scheduler.log`` and ``output/log/rank_N/info.log`` appear one by one
after the job starts, and the follower must also learn when the node's msrun ended (the
supervisor's ``state/exit_code``) without a second connection. One process per node does
all three over the one SSH channel: it rescans the job directory, follows every log from
its start (re-opening a file when it is rotated or truncated, as ``tail -F`` does), and
says when the node ended. The request (:func:`launcher.remote.wire.request_arg`: the follower's
runner call has no stdin) travels as one quoted argv element, never as shell text.

FOLLOW (``{"op": "follow", "root", "follow"?, "interval"?, "offsets"?}``) output protocol, one
message per line (tab separated, the text is the rest):

* ``F <fid> <inode> <path>`` a file is now read (``fid`` a small number the lines refer to).
* ``L <rank> <role> <fid>:<end> <text>`` a log line; ``rank`` empty for the scheduler, ``role``
  is ``worker`` / ``scheduler`` / ``info`` / ``error`` / ``msrun``; ``end`` is the byte offset just
  after this line in file ``fid``: the follower keeps it per file, and a reconnect (or a later
  ``logs -f``) passes ``{"offsets": {path: [inode, end]}}`` so each file resumes exactly there —
  nothing lost, nothing doubled.
  A line longer than ``_prelude.LINE_CAP`` (64 KiB: a ``\r`` progress bar, a dump without a
  newline) is sent as its first 64 KiB and `` [line cut: N more bytes]``; ``end`` counts every byte.
* ``P <pid> <rank>`` a worker process of this node and its rank (found by its stdout, which
  msrun points at ``worker_<rank>.log``): msrun names a dead worker only by its pid.
* ``T <json string>`` one ``npu-smi info`` table of this host (only with ``"smi_every": N`` > 0 in
  the request: every N s while the node runs, from one ``npu-smi`` child at a time, read without
  blocking the log loop; no ``npu-smi`` on the host: nothing is sampled). The laptop parses it
  (``launcher.ops.npusmi``) and keeps the job's cards (``launcher.ops.telemetry``). An
  ``npu-smi`` that fails sends ``T "!exit <code>: <its last line>"`` once (a non-root user gets
  ``dcmi module initialize failed, ret is -8005``, exit 187) and, after
  :data:`SMI_FAILURES` failures in a row, is not run again.
* With ``"smi_files": true`` (a Slurm job, followed through the login host, whose cards are not
  the job's): no sampling here; each node's SAMPLE file ``state/telemetry/<node>.smi`` is followed
  like a log, its lines sent as ``L`` with role ``smi`` (a JSON object: ``node``, ``node_rank``,
  ``devices``, ``t``, ``table``), so offsets and a reconnect treat them as any line.
* ``H`` heartbeat once a second: a write to a closed channel ends the script, so a
  killed ``alaunch`` leaves nothing behind on the hosts.
* ``X <exit code>`` the node ended (all logs were read first); ``X ?`` ended without an
  exit code (supervisor gone), ``X -`` a snapshot (``follow`` false) is complete,
  ``X !<reason>`` there is no such job directory.

Which files: every ``worker_N.log`` and ``scheduler.log``; msrun's own output
(``state/node-<rank>/launcher.log``, role ``msrun``: the only place a worker killed without a word, e.g.
by SIGKILL, is reported; with ``--join=True`` msrun also copies every worker's output into it
through ``tail -f``, so only msrun's own lines are sent from it — those logged from
``mindspore/parallel/cluster/``, its ``Start ... process`` prints, and everything after it
reported the workers' end, when it has killed its tails), read before the worker logs of the
same pass but sent after them, so a worker's last words always precede msrun's report of its
death; ``rank_N/info.log`` and ``error.log`` only for ranks without a ``worker_N.log`` (the same MindFormers lines reach
both, and one rank must be read from one file or its losses would count twice).

SAMPLE: ``{"op": "sample", "dir", "every", "stop"?, "node"?}`` (run by a Slurm job's per-node
wrapper beside msrun, ``python3 -S <program> <hex request>``): the ``T`` sampler above, each table
appended to ``<dir>/<node>.smi`` as one JSON line, the node's name (``SLURMD_NODENAME``), its
``SLURM_NODEID`` and the cards Slurm gave the job (``ASCEND_RT_VISIBLE_DEVICES``) with it; the
file moves to ``.1`` past :data:`SAMPLE_CAP`. Why through a file: the Slurm follower reads the
shared job dir through the login host, one channel for every node (see :func:`sample_op`).

TAIL: ``{"op": "tail", "root"}`` -> JSON ``{rank: [last lines]}`` of each rank's log (its last 64 KiB),
what ``alaunch status`` reads the current step and loss from.

GREP: ``{"op": "grep", "root", "pattern", "limit"?, "rank"?, "state"?, "scheduler"?, "ranks"?,
"timeout"?}`` -> JSON ``{"files": [{"rank", "role", "path", "matched", "lines": [[line number,
text], ...]}], "scanned"}``: the lines of the files FOLLOW reads (msrun's own log left out: it
copies the workers' lines) that the regular expression matches, the last ``limit`` of each file,
each cut at 16 KiB, at most 4 MiB in all. Why on the host: the dashboard holds the last 20,000
lines of a job, and grepped only those. ``timeout`` (s, default 20): SIGALRM ends the script,
whatever the pattern does (a backtracking one included).
"""

import collections
import itertools
import os
import re
import signal
import sys
import time

from _prelude import Lines, _q, answer, log_tails, run

root = msrun_dir = mf_dir = state_dir = ""  # set by follow_op from the request
ranks = None  # the worker ranks this node runs (None: every log found), scheduler: node 0's
scheduler = True
smi_files = False  # also follow the Slurm nodes' samples (state/telemetry/<node>.smi, see SAMPLE)
follow, interval = True, 0.05
resume = {}  # type: dict  # path -> [inode, byte offset]: where a previous follower had got to
out = sys.stdout.buffer
WORKER = re.compile(r"^worker_(\d+)\.log$")
RANK = re.compile(r"^rank_(\d+)$")
files = {}  # type: dict
fids = itertools.count()
mapped = set()  # type: set  # ranks whose worker process was found
MSRUN_OWN = (b"parallel/cluster/", b"Start worker process", b"Start scheduler process", b"cannot start ")
MSRUN_END = (b"exit with exception", b"All workers successfully exit")
SMI_TIMEOUT = 30.0  # s: an npu-smi that hangs this long (a wedged driver) is killed, the sample skipped
SMI_FAILURES = 3  # failed runs in a row after which npu-smi is not run again (-8005 does not heal)
SMI_CAP = 1 << 16  # bytes of one table sent: a 16-chip A3 table with processes is ~10 KB
SAMPLES = "telemetry"  # SAMPLE's directory under the job's state/
SAMPLE_CAP = 1 << 20  # bytes of a node's sample file before it moves to <file>.1 (~210 8-card tables of ~5 KB)
smi = {"every": 0.0, "exe": None, "proc": None, "buf": b"", "next": 0.0, "started": 0.0, "timeout": SMI_TIMEOUT,
       "failed": 0}  # type: dict  # values of several types: the npu-smi sampler's state

def listdir(path):
    try:
        return os.listdir(path)
    except OSError:
        return []

def wanted():
    want, workers = {}, set()
    for name in listdir(msrun_dir):
        m = WORKER.match(name)
        if m and (ranks is None or m.group(1) in ranks):
            want[os.path.join(msrun_dir, name)] = (m.group(1), "worker")
            workers.add(m.group(1))
        elif name == "scheduler.log" and scheduler:
            want[os.path.join(msrun_dir, name)] = ("", "scheduler")
    if os.path.isfile(os.path.join(state_dir, "launcher.log")):
        want[os.path.join(state_dir, "launcher.log")] = ("", "msrun")
    if smi_files:
        for name in listdir(os.path.join(state_dir, SAMPLES)):
            if name.endswith(".smi"):
                want[os.path.join(state_dir, SAMPLES, name)] = ("", "smi")
    for d in listdir(mf_dir):
        m = RANK.match(d)
        if m and m.group(1) not in workers and (ranks is None or m.group(1) in ranks):
            for role in ("info", "error"):
                path = os.path.join(mf_dir, d, role + ".log")
                if os.path.isfile(path):
                    want[path] = (m.group(1), role)
    return want

def emit(f, raw, put=None):
    if f["role"] == "msrun" and not f["own"]:
        if any(m in raw for m in MSRUN_END):
            f["own"] = True  # msrun killed its `tail -f` copies: what follows is its own
        elif not any(m in raw for m in MSRUN_OWN):
            return  # a worker's line copied by msrun's tail: it comes from worker_N.log
    (put or out.write)(b"L\t" + f["rank"].encode() + b"\t" + f["role"].encode() + b"\t" +
                       (f["fid"] + ":%d" % f["done"]).encode() + b"\t" + raw.rstrip(b"\r") + b"\n")

def pump(path, f, put=None):
    wrote = False
    while True:
        data = f["fh"].read(1 << 20)
        if not data:
            break
        for raw, size in f["lines"].feed(data):
            f["done"] += size + 1
            emit(f, raw, put)
            wrote = True
    try:
        st = os.stat(path)
    except OSError:
        return wrote
    pos = f["fh"].tell()
    if st.st_ino != f["ino"] or st.st_size < pos:  # rotated or truncated: start the new file
        flush(f, put)
        f["fh"].close()
        f["fh"] = open(path, "rb")
        f["ino"] = os.fstat(f["fh"].fileno()).st_ino
        f["done"] = 0
        declare(path, f)
        wrote = pump(path, f, put) or True
    return wrote

def flush(f, put=None):
    """Send the unfinished last line of a file that will not grow (rotated away, the node ended)."""
    raw, size = f["lines"].rest()
    if size:
        f["done"] += size
        emit(f, raw, put)
    return size > 0

def declare(path, f):
    out.write(b"F\t" + f["fid"].encode() + b"\t%d\t" % f["ino"] + path.encode() + b"\n")

def rescan():
    for path, (rank, role) in wanted().items():
        if path not in files:
            try:
                fh = open(path, "rb")
            except OSError:
                continue
            st = os.fstat(fh.fileno())
            done = 0
            seen = resume.get(path)
            if seen and int(seen[0]) == st.st_ino and 0 <= int(seen[1]) <= st.st_size:
                done = int(seen[1])  # resume where the follower had got to
                fh.seek(done)
            f = files[path] = {"fh": fh, "rank": rank, "role": role, "lines": Lines(), "ino": st.st_ino,
                               "fid": str(next(fids)), "done": done, "own": False}
            declare(path, f)
    workers = {f["rank"] for f in files.values() if f["role"] == "worker"}
    for path in [p for p, f in files.items() if f["role"] in ("info", "error") and f["rank"] in workers]:
        files.pop(path)["fh"].close()

def pump_all(final=False):
    # msrun's lines first into a buffer, out after every other file's: msrun reports a worker's
    # death only after the worker ended, so its last lines are in its log when that is read
    later = []  # type: list[bytes]
    wrote = False
    for path, f in sorted(files.items(), key=lambda item: item[1]["role"] != "msrun"):
        put = later.append if f["role"] == "msrun" else None
        wrote = pump(path, f, put) or wrote
        if final:
            wrote = flush(f, put) or wrote
    for raw in later:
        out.write(raw)
    return wrote

def find_workers():
    """Map each worker log not yet mapped to the processes whose stdout it is."""
    want = {os.path.realpath(p): f["rank"] for p, f in files.items()
            if f["role"] == "worker" and f["rank"] not in mapped}
    found = False
    if not want:
        return found
    for name in listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            rank = want.get(os.readlink("/proc/%s/fd/1" % name))
        except OSError:
            continue
        if rank is not None:
            mapped.add(rank)
            out.write(b"P\t" + name.encode() + b"\t" + rank.encode() + b"\n")
            found = True
    return found

def read(name):
    try:
        with open(os.path.join(state_dir, name)) as fh:
            return fh.read().strip()
    except OSError:
        return None

def alive(pid, start=None):
    """pid runs and (when its start time, /proc stat field 22, was recorded) is the same process."""
    try:
        with open("/proc/%d/stat" % pid) as fh:
            stat = fh.read().rsplit(")", 1)[1].split()
        return stat[0] not in ("Z", "X") and (start is None or stat[19] == start)
    except (OSError, IndexError):
        return False

def ended():
    code = read("exit_code")
    if code is not None:
        return code
    pid = read("pid")
    fields = pid.split() if pid else []
    # "<child pid> <supervisor pid> <child start> <supervisor start>": the node has ended when
    # neither runs. A supervisor killed while msrun lives (msrun is its own session leader and
    # outlives it) used to end this follow: the node's logs went unread while it trained on.
    if len(fields) >= 2 and not alive(int(fields[1]), fields[3] if len(fields) >= 4 else None) \
            and not alive(int(fields[0]), fields[2] if len(fields) >= 3 else None):
        code = read("exit_code")
        return code if code is not None else "?"
    return None

def which(name):
    for d in os.environ.get("PATH", "").split(os.pathsep):
        exe = os.path.join(d, name)
        if d and os.access(exe, os.X_OK):
            return exe
    return None

def smi_end(p):
    smi["proc"] = None
    p.stdout.close()
    p.wait()

def smi_tick(now):
    """Telemetry: start ``npu-smi info`` when a sample is due, read its table without blocking;
    when it has ended, its table (or, once, ``!exit <code>: <last line>``), else None. One child
    at a time, never a shell. FOLLOW sends what it returns (``T``), SAMPLE appends it to a file."""
    p = smi["proc"]
    if p is None:
        if smi["exe"] is None or now < smi["next"]:
            return None
        smi["next"] = now + smi["every"]
        import subprocess
        try:
            smi["proc"] = subprocess.Popen([smi["exe"], "info"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                           stderr=subprocess.STDOUT)
        except OSError:
            smi["exe"] = None  # cannot run it: no more samples, the logs go on
            return None
        os.set_blocking(smi["proc"].stdout.fileno(), False)
        smi["buf"], smi["started"] = b"", now
        return None
    try:
        while True:
            data = os.read(p.stdout.fileno(), 1 << 16)
            if not data:
                break
            smi["buf"] = (smi["buf"] + data)[:SMI_CAP]
    except BlockingIOError:
        if now - smi["started"] > smi["timeout"]:
            p.kill()
            smi_end(p)
        return None
    smi_end(p)
    text = smi["buf"].decode("utf-8", "replace")
    if p.returncode == 0 and text.strip():
        smi["failed"] = 0
        return text
    smi["failed"] += 1
    if smi["failed"] >= SMI_FAILURES:
        smi["exe"] = None
    if smi["failed"] > 1:
        return None
    last = ([ln.strip() for ln in text.splitlines() if ln.strip()] or ["no output"])[-1][:300]
    return "!exit %d: %s" % (p.returncode, last)

def main():
    if not os.path.isdir(root):
        out.write(b"X\t!no job directory " + root.encode() + b"\n")
        return
    beat = time.monotonic()
    last_scan = 0.0
    while True:
        code = ended() if follow else "-"
        now = time.monotonic()
        found = False
        if code is not None or now - last_scan > 0.5:
            rescan()
            found = code is None and follow and find_workers()
            last_scan = now
        wrote = pump_all(final=code is not None) or found
        if code is None and smi["every"] > 0:
            table = smi_tick(now)
            if table is not None:
                out.write(b"T\t" + _q(table).encode() + b"\n")
                wrote = True
        if code is not None:
            out.write(b"X\t" + code.encode() + b"\n")
            out.flush()
            return
        if wrote:
            out.flush()
        elif now - beat > 1.0:
            out.write(b"H\n")
            out.flush()
            beat = now
        if wrote:
            beat = now
        time.sleep(interval)


def follow_op(req):
    global root, follow, interval, msrun_dir, mf_dir, state_dir, ranks, scheduler, smi_files
    root = req["root"]
    ranks = set(req["ranks"]) if req.get("ranks") is not None else None
    scheduler = req.get("scheduler", True)
    follow = req.get("follow", True)
    resume.update(req.get("offsets") or {})
    interval = float(req.get("interval", 0.05))
    msrun_dir = os.path.join(root, "msrun_log")
    mf_dir = os.path.join(root, "output", "log")
    state_dir = req.get("state") or os.path.join(root, "state")
    smi["every"] = float(req.get("smi_every") or 0) if follow else 0.0
    smi["exe"] = which("npu-smi") if smi["every"] > 0 else None
    smi["timeout"] = float(req.get("smi_timeout") or SMI_TIMEOUT)
    smi_files = bool(req.get("smi_files"))
    try:
        main()
    except (BrokenPipeError, KeyboardInterrupt):
        os._exit(0)


def sample_append(path, line):
    """One sample line; a file past SAMPLE_CAP moves to ``<path>.1`` first (the follower reads
    the old file to its end before it sees the new inode, as with a rotated log)."""
    try:
        if os.path.getsize(path) + len(line) > SAMPLE_CAP:
            os.replace(path, path + ".1")
    except OSError:
        pass
    with open(path, "a") as fh:
        fh.write(line)


def sample_op(req):
    """SAMPLE: this node's ``npu-smi info`` every ``every`` s (:func:`smi_tick`: one child, a
    hung one killed, failures said once then no more runs; no ``npu-smi``: nothing at all),
    each table one JSON line appended to ``<dir>/<node>.smi``. Runs beside msrun on a Slurm
    node (the batch script's per-node wrapper) until its parent (msrun) or the batch script
    (``stop``, its ``state/exit_code``) has ended, or SIGTERM."""
    smi["every"] = float(req.get("every") or 0)
    smi["exe"] = which("npu-smi") if smi["every"] > 0 else None
    smi["timeout"] = float(req.get("smi_timeout") or SMI_TIMEOUT)
    if smi["exe"] is None:
        return
    env = os.environ
    node = req.get("node") or env.get("SLURMD_NODENAME") or os.uname()[1].split(".")[0]
    head = '{"node":%s,"node_rank":%s,"devices":%s' % (
        _q(node), _q(env.get("SLURM_NODEID", "")), _q(env.get("ASCEND_RT_VISIBLE_DEVICES", "")))
    path = os.path.join(req["dir"], node + ".smi")
    parent, stop = os.getppid(), req.get("stop")
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    try:
        if not os.path.isdir(req["dir"]):
            os.makedirs(req["dir"])
        while smi["exe"] is not None or smi["proc"] is not None:
            if os.getppid() != parent or (stop and os.path.exists(stop)):
                break
            table = smi_tick(time.monotonic())
            if table is not None:
                sample_append(path, head + ',"t":%.3f,"table":%s}\n' % (time.time(), _q(table)))
            time.sleep(0.1)
    except OSError:
        pass  # the shared dir cannot be written: no telemetry, the job is not touched
    finally:
        if smi["proc"] is not None:
            smi["proc"].kill()
            smi_end(smi["proc"])


def tail_op(req):
    answer(log_tails(req["root"]))


GREP_CUT, GREP_BUDGET = 16 << 10, 4 << 20


def grep_op(req):
    global root, msrun_dir, mf_dir, state_dir, ranks, scheduler
    signal.alarm(max(1, int(req.get("timeout", 20))))  # the default action ends the script
    root = req["root"]
    ranks = set(req["ranks"]) if req.get("ranks") is not None else None
    scheduler = req.get("scheduler", True)
    msrun_dir = os.path.join(root, "msrun_log")
    mf_dir = os.path.join(root, "output", "log")
    state_dir = req.get("state") or os.path.join(root, "state")
    rx = re.compile(req["pattern"])
    limit = max(1, int(req.get("limit", 2000)))
    only = req.get("rank")
    found, scanned, budget = [], 0, GREP_BUDGET
    for path, (rank, role) in sorted(wanted().items()):
        if role == "msrun" or (only is not None and rank != str(only)):
            continue
        last = collections.deque(maxlen=limit)  # type: collections.deque[list]  # [line number, text]
        matched = n = 0
        try:
            with open(path, "rb") as fh:
                for n, raw in enumerate(fh, 1):
                    text = raw.decode("utf-8", "replace").rstrip("\r\n")
                    if rx.search(text):
                        matched += 1
                        last.append([n, text[:GREP_CUT]])
        except OSError:
            pass
        scanned += n
        keep = []
        for item in reversed(last):
            budget -= len(item[1]) + 16
            if budget < 0:
                break
            keep.append(item)
        found.append({"rank": rank, "role": role, "path": path, "matched": matched, "lines": keep[::-1]})
    answer({"files": found, "scanned": scanned})


if __name__ == "__main__":
    run({"follow": follow_op, "tail": tail_op, "grep": grep_op, "sample": sample_op})
