"""The Slurm engine's host script, run on the login node (stdlib only; ``python3 -S -c PROGRAM``,
the request frame of :func:`launcher.remote.wire.request` on stdin, the answer framed by
``_prelude.answer``, read on the laptop by ``wire.answer``).

SUBMIT ``{"op": "submit", "script_path", "script", "env", "argv"}`` -> ``{"code", "out", "err"}``:
write the batch script (atomically, mode 0700), then run ``argv`` (``sbatch --parsable
SCRIPT``) with the job's environment added to the login shell's: a secret reaches neither an
argv nor the script file, only sbatch's environment (``--export`` defaults to ALL).

MARK_END ``{"op": "mark_end", "path", "code"}`` -> ``{"written": bool}``: write ``state/exit_code``
unless the batch script did (a hard link from a temp file: atomic, never overwrites), so a
follower of the shared job dir learns the end of a job Slurm killed before its trap ran.

READ ``{"op": "read", "paths": [...]}`` -> ``{path: its last 8 KiB as text, or None}``.
"""

import os
import subprocess

from _prelude import answer, run


def submit(r):
    path = r["script_path"]
    d = os.path.dirname(path)
    if not os.path.isdir(d):
        os.makedirs(d)
    with open(path + ".tmp", "w") as fh:
        fh.write(r["script"])
    os.chmod(path + ".tmp", 0o700)
    os.replace(path + ".tmp", path)
    env = dict(os.environ)
    env.update(r["env"])
    try:
        p = subprocess.run(r["argv"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
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


def read(r):
    out = {}
    for p in r["paths"]:
        try:
            with open(p, "rb") as fh:
                fh.seek(0, 2)
                n = fh.tell()
                fh.seek(max(0, n - 8192))
                out[p] = fh.read().decode("utf-8", "replace")
        except OSError:
            out[p] = None
    answer(out)


if __name__ == "__main__":
    run({"submit": submit, "mark_end": mark_end, "read": read})
