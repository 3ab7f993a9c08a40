"""Merge a multi-card training job's per-rank checkpoints into one complete checkpoint (on the host).

Usage: ``python merge_ckpt.py '<json request>'``, one JSON line back. Imports nothing of
``launcher`` (it runs on the host, with the host's python), like ``run_cpu.py``. Two requests:

* ``{"op": "inspect", "paths": [...], "hash": [...]}`` -> ``{path: {"size", "mtime_ns",
  "step", "epoch", "attempt", "sha256"}}``: each checkpoint's *global* step read from the file's own
  metadata (MindFormers' ``step_num``, appended to every checkpoint it saves), with no
  mindspore import: the ``.ckpt`` protobuf is walked record by record, seeking over the
  tensors, so a 16 GB file costs a few hundred reads. Names are not used: a resumed
  MindSpore run names step 400 ``_1-4_50`` (its in-epoch count restarts at the resume) and
  two attempts can both write ``-2_50``. ``sha256`` only for ``hash`` (what consumers read).
* ``{"job_dir": DIR, "out": FILE, "ckpts": {rank: path}, "step": N}`` -> ``{"out", "mode",
  "ranks", "step", "params", "sha256"}``: merge exactly these per-rank files (the driver
  picks them with ``core.pipeline.common_last_step``; this script picks nothing).

Two cases, decided from the files the job wrote:

* **sharded** (model/pipeline parallel: strategy files under ``<job_dir>`` describe how each
  parameter was split): MindSpore's own ``mindspore.parallel.transform_checkpoints`` with the
  merged strategy as source and no destination strategy, which writes the complete checkpoint.
  MindFormers needs the *full* strategy for that, so LoRA jobs must train with
  ``parallel.strategy_ckpt_config.only_trainable_params: False`` (checked before training).
* **data parallel** (no strategy file; what the CPU backend can run: semi-auto parallel fails
  under msrun with "Invalid backend: CPU"): every rank holds the complete model. The ranks'
  files are loaded and compared tensor by tensor; equal, rank 0's becomes the merged file.
  Unequal ranks without a strategy are refused.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import struct
import sys

_META = ("step_num", "epoch_num")


def _varint(fh) -> int:
    shift = value = 0
    while True:
        b = fh.read(1)
        if not b:
            raise EOFError
        value |= (b[0] & 0x7F) << shift
        if b[0] < 0x80:
            return value
        shift += 7


def _varint_at(buf: bytes, pos: int) -> tuple:
    """(value, next position) of the protobuf varint at ``buf[pos]``."""
    value = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return value, pos


def _int_tensor(blob: bytes):
    """The first value of a small TensorProto (dims=1, tensor_type=2, tensor_content=3) as int."""
    pos, dtype, content = 0, "", b""
    while pos < len(blob):
        key = blob[pos]
        n, pos = _varint_at(blob, pos + 1)
        if key & 7 == 0:  # a varint field (dims): n was its value
            continue
        if key >> 3 == 2:
            dtype = blob[pos:pos + n].decode(errors="replace")
        elif key >> 3 == 3:
            content = blob[pos:pos + n]
        pos += n
    fmt = {"Int64": "<q", "Int32": "<i", "Float32": "<f", "Float64": "<d"}.get(dtype)
    if fmt is None or len(content) < struct.calcsize(fmt):
        return None
    return int(struct.unpack(fmt, content[:struct.calcsize(fmt)])[0])


def ckpt_meta(path: str) -> dict:
    """``{"step_num": N, "epoch_num": E}`` from a MindSpore ``.ckpt`` (protobuf ``Checkpoint``:
    repeated ``Value {tag=1, tensor=2}``), reading only the tags and the two small tensors."""
    found: dict = {}
    with open(path, "rb") as fh:
        while len(found) < len(_META):
            try:
                key = _varint(fh)
            except EOFError:
                break
            if key != 0x0A:  # not a Value record: not a file we can walk further
                break
            length = _varint(fh)
            end = fh.tell() + length
            head = fh.read(min(length, 64))
            tag = None
            if head[:1] == b"\x0a" and len(head) > 1 and head[1] < 0x80:
                tag = head[2:2 + head[1]].decode(errors="replace")
            if tag in _META:
                fh.seek(end - length)
                record = fh.read(length)
                body_at = 2 + record[1]
                if record[body_at:body_at + 1] == b"\x12":
                    n, pos = _varint_at(record, body_at + 1)
                    value = _int_tensor(record[pos:pos + n])
                    if value is not None:
                        found[tag] = value
            fh.seek(end)
    return found


def safetensors_meta(path: str) -> dict:
    """The same two values from a ``.safetensors`` file (its JSON header and their bytes)."""
    with open(path, "rb") as fh:
        size = struct.unpack("<Q", fh.read(8))[0]
        header = json.loads(fh.read(size))
        found = {}
        for tag in _META:
            entry = header.get(tag)
            fmt = {"I64": "<q", "I32": "<i", "F32": "<f"}.get((entry or {}).get("dtype"))
            if fmt:
                fh.seek(8 + size + entry["data_offsets"][0])
                found[tag] = int(struct.unpack(fmt, fh.read(struct.calcsize(fmt)))[0])
    return found


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _attempt_starts(path: str, cache: dict) -> list:
    """When each resume of the job that wrote ``path`` began: the mtimes of its job dir's
    ``attempts/<n>/`` (made by the rotation before attempt n+1 starts; same host, same clock)."""
    marker = os.sep + os.path.join("output", "checkpoint") + os.sep
    root = path.split(marker)[0] if marker in path else None
    if root not in cache:
        kept = glob.glob(os.path.join(root, "attempts", "*")) if root else []
        cache[root] = sorted(os.stat(k).st_mtime_ns for k in kept if os.path.basename(k).isdigit())
    return cache[root]


def inspect(paths: list, hash_paths: list) -> dict:
    """Each file's size, mtime, global step and epoch (its own metadata), the attempt that
    wrote it (1 + the resumes begun before it was written) and, for ``hash_paths``, sha256."""
    out, starts = {}, {}
    for path in paths:
        st = os.stat(path)
        meta = {}
        try:
            if path.endswith(".ckpt"):
                meta = ckpt_meta(path)
            elif path.endswith(".safetensors"):
                meta = safetensors_meta(path)
        except (OSError, ValueError, IndexError, struct.error):
            meta = {}
        attempt = 1 + sum(1 for t in _attempt_starts(path, starts) if t <= st.st_mtime_ns)
        out[path] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "step": meta.get("step_num"),
                     "epoch": meta.get("epoch_num"), "attempt": attempt,
                     "sha256": sha256(path) if path in hash_paths else None}
    return out


def strategy_files(job_dir: str) -> list:
    found = []
    for pattern in ("ckpt_strategy*.ckpt", "output/strategy/*.ckpt", "strategy/*.ckpt"):
        found += glob.glob(os.path.join(job_dir, pattern))
    return sorted(found)


def _done(result: dict) -> dict:
    return {**result, "sha256": sha256(result["out"])}


def merge(job_dir: str, out: str, ckpts: dict, step, world: int | None = None) -> dict:
    """``world``: the job's rank count. Fewer ranks' files here than that means the others
    were written on other nodes' filesystems (a multi-node job without a shared workdir): a
    sharded job cannot be merged from part of its ranks and is refused saying why; under data
    parallel (no strategy file) every rank holds the complete model, so the lowest rank's
    checkpoint is the model and the answer says it came from ``ranks`` of ``world`` (it read
    "single-rank: 1 rank(s)" for a 2-node training)."""
    ckpts = {int(rank): path for rank, path in ckpts.items()}
    if not ckpts:
        raise SystemExit(f"no checkpoints under {job_dir}/output/checkpoint/rank_*/ that every rank saved")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    strategies = strategy_files(job_dir)
    if world and len(ckpts) < world:
        here = ", ".join(map(str, sorted(ckpts)))
        if strategies:
            raise SystemExit(f"only rank(s) {here} of the job's {world} ranks have their checkpoints on this node's "
                             "filesystem, and the job is sharded (strategy files): merging needs every rank's; "
                             "train with a workdir shared by the nodes")
        shutil.copyfile(ckpts[min(ckpts)], out + ".part")
        os.replace(out + ".part", out)
        return _done({"out": out, "mode": f"data-parallel (rank {min(ckpts)}'s; ranks {here} of {world} on this "
                      "node, the others on other nodes: equal under data parallel)", "ranks": len(ckpts),
                      "world": world, "step": step, "params": None})
    if len(ckpts) == 1:
        shutil.copyfile(next(iter(ckpts.values())), out + ".part")
        os.replace(out + ".part", out)
        return _done({"out": out, "mode": "single-rank", "ranks": 1, "step": step, "params": None})
    import mindspore as ms

    loaded = {rank: ms.load_checkpoint(path) for rank, path in ckpts.items()}
    names = {rank: sorted(params) for rank, params in loaded.items()}
    base = loaded[min(loaded)]
    equal = all(names[r] == names[min(loaded)] for r in loaded) and all(
        (params[name].asnumpy() == base[name].asnumpy()).all()
        for params in loaded.values() for name in params)
    if equal:
        shutil.copyfile(ckpts[min(ckpts)], out + ".part")
        os.replace(out + ".part", out)
        return _done({"out": out, "mode": "data-parallel", "ranks": len(ckpts), "step": step, "params": len(base)})
    if not strategies:
        raise SystemExit(f"the {len(ckpts)} ranks' checkpoints of global step {step} differ and there is no "
                         "strategy file to merge them with (train with parallel.strategy_ckpt_config.save_file set)")
    src = os.path.join(os.path.dirname(out), "src")
    shutil.rmtree(src, ignore_errors=True)
    for rank, path in ckpts.items():
        os.makedirs(os.path.join(src, f"rank_{rank}"), exist_ok=True)
        os.link(path, os.path.join(src, f"rank_{rank}", os.path.basename(path)))
    strategy = strategies[0]
    if len(strategies) > 1:
        strategy = os.path.join(os.path.dirname(out), "merged_strategy.ckpt")
        ms.merge_pipeline_strategys(os.path.dirname(strategies[0]), strategy)
    dst_dir = os.path.join(os.path.dirname(out), "transformed")
    ms.parallel.transform_checkpoints(src, dst_dir, "merged", strategy, None)
    produced = sorted(glob.glob(os.path.join(dst_dir, "rank_0", "*.ckpt")))
    os.replace(produced[-1], out)
    return _done({"out": out, "mode": "transform_checkpoints", "ranks": len(ckpts), "step": step,
                  "params": len(ms.load_checkpoint(out))})


def main(argv: list) -> int:
    request = json.loads(argv[1])
    if request.get("op") == "inspect":
        result = inspect(request["paths"], request.get("hash") or [])
    else:
        result = merge(request["job_dir"], request["out"], request["ckpts"], request.get("step"),
                       request.get("world"))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
