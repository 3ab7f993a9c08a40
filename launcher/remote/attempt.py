"""The host script ``alaunch resume`` runs on each node of a stopped job (stdlib only).

ROTATE ``{"op": "rotate", "root", "attempt", "config"}``: the job dir's previous attempt is
kept, not overwritten: ``state/``, ``msrun_log/`` and ``output/log/`` move to
``attempts/<attempt>/``; checkpoints stay where they are (the next attempt resumes from
them); ``config/job.yaml`` is replaced (atomically) by ``config`` with ``resume_training`` on.
Answers ``{"moved": [...], "checkpoints": [paths relative to root]}``. Idempotent per attempt,
so the nodes of a job whose job dir is one shared directory may all run it.
"""

import os

from _prelude import answer, run


def rotate(req):
    root = req["root"]
    keep = os.path.join(root, "attempts", str(req["attempt"]))
    moved = []
    for rel in ("state", "msrun_log", os.path.join("output", "log")):
        src = os.path.join(root, rel)
        if os.path.exists(src):
            dst = os.path.join(keep, rel)
            if os.path.exists(dst):
                continue  # a shared job dir: another node of this job kept it already
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            try:
                os.rename(src, dst)
            except OSError:
                if os.path.exists(src):
                    raise
                continue  # the other node's rename won the race
            moved.append(rel)
    config = os.path.join(root, "config", "job.yaml")
    tmp = config + ".tmp"
    with open(tmp, "w") as fh:
        fh.write(req["config"])
    os.replace(tmp, config)
    ckpts = []
    base = os.path.join(root, "output", "checkpoint")
    for dirpath, _, files in os.walk(base):
        for name in files:
            if name.endswith(".ckpt"):
                ckpts.append(os.path.relpath(os.path.join(dirpath, name), root))
    answer({"moved": moved, "checkpoints": sorted(ckpts)})


if __name__ == "__main__":
    run({"rotate": rotate})
