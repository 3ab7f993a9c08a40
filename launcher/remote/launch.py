"""The host script launch runs (stdlib only; ``python3 -S -c PROGRAM``, request on stdin).

Every request is the marshal frame of :func:`launcher.remote.wire.request` (``_prelude.py``)
on stdin, never shell text; ``op`` picks the operation; answers are JSON.

How a job's processes are found again: every process of a node carries the environment
marker ``ALAUNCH_JOB_ID=<job id>`` (:data:`MARKER`, the same as
``launcher.remote.wire.JOB_MARKER``; inherited by msrun, its scheduler and its workers —
which msrun starts with ``setsid``, so a process group alone would miss them). Cancel and
status look the marker up in ``/proc/<pid>/environ``: exact, per job, never a name pattern.

DETACH ``{"op": "detach", "argv", "env", "cwd", "state_dir"}``: make ``state_dir`` (the node's
own, ``state/node-<rank>``; it must not exist: ``mkdir`` is the exclusive claim, so two starts
of one node, or two nodes given one dir, cannot both run), then fork a supervisor (own
session, stdio to the log) that starts the argv in a new session, writes ``pid``
("<child pid> <supervisor pid> <child start> <supervisor start>", the starts being
``/proc/PID/stat`` field 22: after a reboot a reused pid is another process, and only the pair
pid + start time names ours) and, when it ends, ``exit_code`` (written to a temp name and
renamed). Prints ``{"pid", "supervisor"}`` once started.
STATUS ``{"op": "status", "state_dir", "job_id"}`` -> pid/exit code files, supervisor alive,
job processes.
CANCEL ``{"op": "cancel", "job_id", "msrun_pid", "grace"}`` -> SIGINT msrun, SIGTERM the
rest, SIGKILL after the grace, then verify none is left.
"""

import os
import sys
import time

from _prelude import answer, cards_dir, log_tails, open_own, run

MARKER = "ALAUNCH_JOB_ID"


def job_pids(job_id):
    # type: (str) -> list[int]
    want = (MARKER + "=" + job_id).encode()
    me = os.getpid()
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open("/proc/%s/environ" % name, "rb") as f:
                env = f.read().split(b"\0")
            with open("/proc/%s/stat" % name) as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if want in env and state not in ("Z", "X"):
            out.append(int(name))
    return out


def started(pid):
    # type: (int) -> str
    """Field 22 of /proc/PID/stat: the process's start time (clock ticks since boot)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return "0"


def note_claim(req, pid, start):
    # type: (dict, int, str) -> None
    """Append the supervisor's pid and start time to the job's host-wide card claim (ours,
    ``<claims dir>/<job id>.claim``, stage.py's CLAIM): from now on every user judges the
    claim by that process (``/proc/PID/stat`` is world-readable, another user's environ is
    not), so a killed job's cards are free at once. No claim (a CPU host, an old submit):
    nothing to note."""
    job = req["env"].get(MARKER, "")
    try:
        dfd = os.open(cards_dir(req), os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return
    fd = open_own(dfd, job + ".claim", os.O_WRONLY | os.O_APPEND) if job and "/" not in job else None
    if fd is not None:
        os.write(fd, ("pid=%d\nstart=%s\n" % (pid, start)).encode())
        os.close(fd)
    os.close(dfd)


def detach(req):
    # type: (dict) -> None
    import subprocess
    state = req["state_dir"]
    os.makedirs(os.path.dirname(state), exist_ok=True)
    os.makedirs(req["cwd"], exist_ok=True)
    try:  # the node's own state dir, made exclusively (mkdir is atomic on NFS too): one start only
        os.mkdir(state)
    except FileExistsError:
        sys.exit("job already started here: %s exists" % state)
    pid_path, exit_path, log_path = (os.path.join(state, n) for n in ("pid", "exit_code", "launcher.log"))

    def atomic(path, text):
        # type: (str, str) -> None
        with open(path + ".tmp", "w") as f:
            f.write(text)
        os.replace(path + ".tmp", path)

    if os.fork() == 0:
        os.setsid()
        if os.fork() != 0:
            os._exit(0)
        null = os.open(os.devnull, os.O_RDWR)
        log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        env = dict(os.environ)
        env.update(req["env"])
        try:
            child = subprocess.Popen(req["argv"], cwd=req["cwd"], env=env, stdin=null, stdout=log, stderr=log,
                                     start_new_session=True)
        except OSError as exc:
            os.write(2, ("cannot start %s: %s\n" % (req["argv"][0], exc)).encode())
            atomic(exit_path, "127\n")
            os._exit(0)
        atomic(pid_path, "%d %d %s %s\n" % (child.pid, os.getpid(), started(child.pid), started(os.getpid())))
        code = child.wait()
        atomic(exit_path, "%d\n" % (code if code >= 0 else 128 - code))
        os._exit(0)
    deadline = time.time() + 20
    while time.time() < deadline:
        if os.path.exists(pid_path):
            fields = open(pid_path).read().split()
            pid, sup = int(fields[0]), int(fields[1])
            note_claim(req, sup, fields[3] if len(fields) > 3 else started(sup))
            answer({"pid": pid, "supervisor": sup})
            sys.exit(0)
        if os.path.exists(exit_path):
            sys.exit("did not start: " + open(log_path).read().strip().splitlines()[-1])
        time.sleep(0.02)
    sys.exit("did not start within 20 s")


def status(req):
    # type: (dict) -> None
    def read(name):
        # type: (str) -> str | None
        try:
            with open(os.path.join(req["state_dir"], name)) as f:
                return f.read().strip()
        except OSError:
            return None
    pid = read("pid")
    code = read("exit_code")
    sup_alive = False
    if pid:
        fields = pid.split()
        try:
            with open("/proc/%d/stat" % int(fields[1])) as f:
                stat = f.read().rsplit(")", 1)[1].split()
            # alive, and the same process: a pid reused after a reboot has another start time
            sup_alive = stat[0] not in ("Z", "X") and (len(fields) < 4 or stat[19] == fields[3])
        except (OSError, IndexError):
            pass
    out = {"pid": pid, "exit_code": None if code is None else int(code),
           "supervisor_alive": sup_alive, "processes": job_pids(req["job_id"])}
    if req.get("tail") and code is None and (sup_alive or out["processes"]):
        out["tails"] = log_tails(req["tail"])  # a running node's progress, in the same round trip
    answer(out)


def cancel(req):
    # type: (dict) -> None
    import signal
    pids = job_pids(req["job_id"])
    found = len(pids)

    def send(sig, pids):
        # type: (int, list[int]) -> None
        for p in pids:
            try:
                os.kill(p, sig)
            except OSError:
                pass
    if req.get("msrun_pid") in pids:
        send(signal.SIGINT, [req["msrun_pid"]])  # msrun stops its workers on SIGINT
        time.sleep(0.5)
    send(signal.SIGTERM, job_pids(req["job_id"]))
    deadline = time.time() + req["grace"]
    while time.time() < deadline and job_pids(req["job_id"]):
        time.sleep(0.1)
    left = job_pids(req["job_id"])
    killed = bool(left)
    send(signal.SIGKILL, left)
    deadline = time.time() + 10
    while time.time() < deadline and job_pids(req["job_id"]):
        time.sleep(0.1)
    answer({"found": found, "sigkill": killed, "left": job_pids(req["job_id"]),
            "exit_code": exit_code_of(req.get("state_dir"), 2.0 if found else 0.0)})


def exit_code_of(state, wait):
    # type: (str | None, float) -> int | None
    """The supervisor's record of msrun's exit code, waiting up to ``wait`` s for it (the
    supervisor writes it right after msrun ends); None without a state dir or a record."""
    if not state:
        return None
    path, deadline = os.path.join(state, "exit_code"), time.time() + wait
    while True:
        try:
            return int(open(path).read().strip())
        except (OSError, ValueError):
            if time.time() >= deadline:
                return None
            time.sleep(0.05)


def listen(req):
    # type: (dict) -> None
    """Node 0 before launch: listen on msrun's master port until ``expect`` peers connected
    (each read to EOF, so the peer closes first and the TIME_WAIT is on its side: msrun can
    bind the port right after) or ``timeout`` s passed. -> {"bound", "peers": [addresses]}."""
    import socket
    s = socket.socket()
    try:
        s.bind(("0.0.0.0", req["port"]))
    except OSError as exc:
        answer({"bound": False, "error": str(exc), "peers": []})
        return
    s.listen(64)
    peers = []  # type: list[str]  # the peers' addresses
    deadline = time.time() + req["timeout"]
    while len(peers) < req["expect"] and time.time() < deadline:
        s.settimeout(max(0.05, deadline - time.time()))
        try:
            conn, addr = s.accept()
        except OSError:
            break
        conn.settimeout(2)
        try:
            while conn.recv(64):
                pass
        except OSError:
            pass
        conn.close()
        peers.append(addr[0])
    s.close()
    answer({"bound": True, "peers": peers})


def reach(req):
    # type: (dict) -> None
    """Another node before launch: open a TCP connection to node 0's ``addr``:``port`` (retried
    while refused: node 0's listener may not be up yet) within ``timeout`` s; close it first.
    -> {"ok", "error", "ms"}."""
    import socket
    start = time.time()
    deadline = start + req["timeout"]
    error = "timed out"
    while time.time() < deadline:
        try:
            c = socket.create_connection((req["addr"], req["port"]), timeout=max(0.1, deadline - time.time()))
        except ConnectionRefusedError as exc:
            error = str(exc)
            time.sleep(0.1)
            continue
        except OSError as exc:
            error = str(exc) or type(exc).__name__
            break
        c.close()
        answer({"ok": True, "error": None, "ms": int((time.time() - start) * 1000)})
        return
    answer({"ok": False, "error": error, "ms": int((time.time() - start) * 1000)})


if __name__ == "__main__":
    run({"detach": detach, "status": status, "cancel": cancel, "listen": listen, "reach": reach})
