"""Facts about files a pipeline's steps hand on (stdlib only; ``python3 -S -c PROGRAM``).

FACTS (``{"op": "facts", "path"}``) -> ``{"kind": "file", "sha256", "size"}``, ``{"kind": "dir"}``
or ``{"kind": None}`` (absent): what ``ops/relay.py`` compares before and after it copies a
step's output from one host to another (``~`` is the host's home).

EXIST (``{"op": "exist", "paths"}``) -> ``{"exist": bool}``: are all of a finished step's
outputs still on its host (``ops/pipeline.py``: a step is reused only if they are).
"""

import hashlib
import os

from _prelude import answer, run


def facts_op(req):
    path = os.path.expanduser(req["path"])
    if not os.path.isfile(path):
        answer({"kind": "dir" if os.path.isdir(path) else None})
        return
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    answer({"kind": "file", "sha256": digest.hexdigest(), "size": os.path.getsize(path)})


def exist_op(req):
    answer({"exist": all(os.path.exists(p) for p in req["paths"])})


if __name__ == "__main__":
    run({"facts": facts_op, "exist": exist_op})
