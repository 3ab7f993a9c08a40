"""The Slurm engine's host script, run on the login node (stdlib only; ``python3 -S -c PROGRAM``,
the request frame of :func:`launcher.remote.wire.request` on stdin, the answer framed by
``_prelude.answer``, read on the laptop by ``wire.answer``).

SUBMIT ``{"op": "submit", "script_path", "script", "env", "argv", "files"?}`` -> ``{"code", "out",
"err"}``: write ``files`` (path -> text: a task's program, e.g. the merge) and the batch script
(atomically, mode 0700), then run ``argv`` (``sbatch --parsable SCRIPT``) with the job's
environment added to the login shell's: a secret reaches neither an argv nor the script file,
only sbatch's environment (``--export`` defaults to ALL).

MARK_END ``{"op": "mark_end", "path", "code"}`` -> ``{"written": bool}``: write ``state/exit_code``
unless the batch script did (a hard link from a temp file: atomic, never overwrites), so a
follower of the shared job dir learns the end of a job Slurm killed before its trap ran.

READ ``{"op": "read", "paths": [...], "bytes"?}`` -> ``{path: its last ``bytes`` (8 KiB) as text, or
None}``.

TOP ``{"op": "top", "paths", "roots", "bytes"?}`` -> ``{"samples": {path: its last ``bytes`` or None},
"tails": {root: {rank: last lines}}}``: one refresh of ``alaunch top`` on Slurm (the running
alaunch jobs' newest NPU samples and their progress), one round trip.

TAILS ``{"op": "tails", "root"}`` -> ``{rank: its log's last lines}`` (``_prelude.log_tails``, what a
hostfile node's STATUS reads): a running job's progress and stragglers for ``status``, every
rank's log being in the one shared job dir.

VERSIONS ``{"op": "versions"}`` -> ``{"node", "versions"}``: this node's MindSpore, MindFormers,
CANN and driver (``_prelude.versions``, what a hostfile submit's preflight reads); the batch
script runs it on every node (one srun task per node, each answer in ``state/versions/``).

SKEW ``{"op": "skew", "dir", "keys"}`` -> ``{"problems": [...]}``, exit 1 when there are any,
with the one line ``alaunch: the nodes run different software; ...`` on stderr (the batch
script's output, which the laptop reads back as the job's reason): the VERSIONS answers in
``dir`` compared, one problem per key whose versions differ, naming the nodes on each side —
the same lines as ``launcher.ops.service.version_skew`` (tests/test_slurm_ops.py checks both
on one input). A job never starts msrun on mixed software.
"""

import os
import sys

from _prelude import MARK, answer, log_tails, run, versions


def _write(path, text, mode):
    d = os.path.dirname(path)
    if not os.path.isdir(d):
        os.makedirs(d)
    with open(path + ".tmp", "w") as fh:
        fh.write(text)
    os.chmod(path + ".tmp", mode)
    os.replace(path + ".tmp", path)


def submit(r):
    for path, text in sorted((r.get("files") or {}).items()):
        _write(path, text, 0o600)
    _write(r["script_path"], r["script"], 0o700)
    import subprocess
    env = dict(os.environ)
    env.update(r["env"])
    try:
        p = subprocess.run(r["argv"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # noqa: UP022 (3.6)
    except OSError as exc:
        answer({"code": 127, "out": "", "err": "%s: %s" % (r["argv"][0], exc.strerror)})
        return
    answer({"code": p.returncode, "out": p.stdout.decode("utf-8", "replace"),
            "err": p.stderr.decode("utf-8", "replace")})


def mark_end(r):
    path = r["path"]
    written = False
    if not os.path.exists(path):
        tmp = path + ".alaunch"
        with open(tmp, "w") as fh:
            fh.write(r["code"] + "\n")
        try:
            os.link(tmp, path)
            written = True
        except FileExistsError:
            pass
        os.unlink(tmp)
    answer({"written": written})


def tail_of(path, size):
    """The last ``size`` bytes of ``path`` as text, or None when it cannot be read."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            fh.seek(max(0, fh.tell() - size))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return None


def read(r):
    answer({p: tail_of(p, r.get("bytes", 8192)) for p in r["paths"]})  # path -> its last 8 KiB, or None


def tails(r):
    answer(log_tails(r["root"]))


def top(r):
    """One refresh of ``top`` on Slurm: the tails of each sample file and each job's logs."""
    samples = {p: tail_of(p, r.get("bytes", 32768)) for p in r["paths"]}
    logs = {}
    for root in r["roots"]:
        try:
            logs[root] = log_tails(root)
        except OSError:
            logs[root] = {}
    answer({"samples": samples, "tails": logs})


def node_versions(r):
    import socket
    answer({"node": socket.gethostname(), "versions": versions()})


def skew(r):
    import json
    found = {}
    for name in sorted(os.listdir(r["dir"])):
        with open(os.path.join(r["dir"], name), encoding="utf-8", errors="replace") as fh:
            text = fh.read()
        at = text.rfind(MARK)
        if at >= 0:
            got = json.loads(text[at + len(MARK):].split("\n", 1)[0])
            found[got["node"]] = got["versions"]
    problems = []
    for key in r["keys"]:
        seen = {}  # type: dict[str, list[str]]  # version -> the nodes that have it
        for node, v in found.items():
            seen.setdefault(str((v or {}).get(key) or "none"), []).append(node)
        if len(seen) > 1:
            problems.append("%s differs between nodes: %s" % (key, "; ".join(
                "%s on %s" % (ver, ", ".join(nodes)) for ver, nodes in seen.items())))
    answer({"problems": problems, "nodes": sorted(found)})
    if problems:
        sys.stderr.write("alaunch: the nodes run different software; a job needs the same everywhere: %s\n"
                         % " | ".join(problems))
        sys.exit(1)


if __name__ == "__main__":
    run({"submit": submit, "mark_end": mark_end, "read": read, "tails": tails, "top": top, "versions": node_versions,
         "skew": skew})
