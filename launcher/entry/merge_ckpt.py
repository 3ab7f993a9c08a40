"""Merge a multi-card training job's per-rank checkpoints into one complete checkpoint (on the host).

Usage: ``python merge_ckpt.py '<json request>'`` with ``{"job_dir": DIR, "out": FILE}``; prints
one JSON line ``{"out", "mode", "ranks", "step", "params"}``. Imports nothing of ``launcher``
(it runs on the host, with the host's mindspore), like ``run_cpu.py``.

Two cases, decided from the files the job wrote:

* **sharded** (model/pipeline parallel: strategy files under ``<job_dir>`` describe how each
  parameter was split): MindSpore's own ``mindspore.parallel.transform_checkpoints`` with the
  merged strategy as source and no destination strategy, which writes the complete checkpoint.
  MindFormers needs the *full* strategy for that, so LoRA jobs must train with
  ``parallel.strategy_ckpt_config.only_trainable_params: False`` (checked before training).
* **data parallel** (no strategy file; what the CPU backend can run: semi-auto parallel fails
  under msrun with "Invalid backend: CPU"): every rank holds the complete model. Each rank's
  newest checkpoint of the newest step all ranks have is loaded and compared tensor by tensor;
  equal, rank 0's becomes the merged file. Unequal ranks without a strategy are refused.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import sys

_STEP = re.compile(r"-(\d+)_(\d+)\.ckpt$")


def _step(path: str) -> tuple:
    m = _STEP.search(path)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def rank_checkpoints(job_dir: str) -> tuple:
    """rank -> its checkpoint of the newest (epoch, step) that every rank has."""
    by_rank: dict = {}
    for path in glob.glob(os.path.join(job_dir, "output", "checkpoint", "rank_*", "*.ckpt")):
        rank = int(os.path.basename(os.path.dirname(path)).split("_")[1])
        by_rank.setdefault(rank, {})[_step(path)] = path
    if not by_rank:
        raise SystemExit(f"no checkpoints under {job_dir}/output/checkpoint/rank_*/")
    common = set.intersection(*(set(steps) for steps in by_rank.values()))
    if not common:
        raise SystemExit("the ranks have no checkpoint step in common; nothing complete to merge")
    step = max(common)
    return {rank: steps[step] for rank, steps in sorted(by_rank.items())}, step


def strategy_files(job_dir: str) -> list:
    found = []
    for pattern in ("ckpt_strategy*.ckpt", "output/strategy/*.ckpt", "strategy/*.ckpt"):
        found += glob.glob(os.path.join(job_dir, pattern))
    return sorted(found)


def merge(job_dir: str, out: str) -> dict:
    import mindspore as ms

    ckpts, step = rank_checkpoints(job_dir)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    strategies = strategy_files(job_dir)
    if len(ckpts) == 1:
        shutil.copyfile(ckpts[0] if 0 in ckpts else next(iter(ckpts.values())), out + ".part")
        os.replace(out + ".part", out)
        return {"out": out, "mode": "single-rank", "ranks": 1, "step": list(step), "params": None}
    loaded = {rank: ms.load_checkpoint(path) for rank, path in ckpts.items()}
    names = {rank: sorted(params) for rank, params in loaded.items()}
    base = loaded[min(loaded)]
    equal = all(names[r] == names[min(loaded)] for r in loaded) and all(
        (params[name].asnumpy() == base[name].asnumpy()).all()
        for params in loaded.values() for name in params)
    if equal:
        shutil.copyfile(ckpts[min(ckpts)], out + ".part")
        os.replace(out + ".part", out)
        return {"out": out, "mode": "data-parallel", "ranks": len(ckpts), "step": list(step), "params": len(base)}
    if not strategies:
        raise SystemExit(f"the {len(ckpts)} ranks' checkpoints differ and there is no strategy file to merge "
                         "them with (train with parallel.strategy_ckpt_config.save_file set)")
    src = os.path.join(os.path.dirname(out), "src")
    for rank, path in ckpts.items():
        os.makedirs(os.path.join(src, f"rank_{rank}"), exist_ok=True)
        dst = os.path.join(src, f"rank_{rank}", os.path.basename(path))
        if not os.path.exists(dst):
            os.link(path, dst)
    strategy = strategies[0]
    if len(strategies) > 1:
        strategy = os.path.join(os.path.dirname(out), "merged_strategy.ckpt")
        ms.merge_pipeline_strategys(os.path.dirname(strategies[0]), strategy)
    dst_dir = os.path.join(os.path.dirname(out), "transformed")
    ms.parallel.transform_checkpoints(src, dst_dir, "merged", strategy, None)
    produced = sorted(glob.glob(os.path.join(dst_dir, "rank_0", "*.ckpt")))
    os.replace(produced[-1], out)
    return {"out": out, "mode": "transform_checkpoints", "ranks": len(ckpts), "step": list(step),
            "params": len(ms.load_checkpoint(out))}


def main(argv: list) -> int:
    request = json.loads(argv[1])
    result = merge(request["job_dir"], request["out"])
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
