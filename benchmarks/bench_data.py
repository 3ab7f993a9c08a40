"""Benchmark of the math data recipe (run on demand: `python benchmarks/bench_data.py`).

Goal (issue 4): synth + prepare (no tokenisation) of 809,993 rows in < 10 s with < 2 GB
peak memory on the 2-core CI machine; tokenisation + MindRecord of the 40,028-row sample
timed. Each phase is also printed as a ratio to a baseline measured in the same run: a
plain ``json.loads`` pass over the same raw file (the least any reader must do).
CPU seconds are printed next to wall seconds because the CI machine is shared: when
other jobs hold the cores, wall time can double while CPU time stays put.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from launcher.data import synth  # noqa: E402
from launcher.data.prepare import PrepareOptions, prepare  # noqa: E402
from launcher.data.recipe import load_recipe  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
ROWS = int(os.environ.get("BENCH_DATA_ROWS", synth.REAL_ROWS))


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    recipe = load_recipe(ROOT / "jobs" / "data" / "math_recipe.yaml")
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        os.chdir(tmp_path)  # mindformers/mindspore imports write logs into the cwd
        raw = tmp_path / "raw.jsonl"
        print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
        c0, t0 = time.process_time(), time.perf_counter()
        synth.synthesise(ROWS, raw, seed=0)
        t_synth = time.perf_counter() - t0
        c_synth = time.process_time() - c0

        t0 = time.perf_counter()
        with open(raw, "rb") as fh:
            for line in fh:
                json.loads(line)
        t_base = time.perf_counter() - t0

        c0, t0 = time.process_time(), time.perf_counter()
        report = prepare(PrepareOptions(raw=raw, recipe=recipe, out_dir=tmp_path / "out"))
        t_prep = time.perf_counter() - t0
        c_prep = time.process_time() - c0
        total = t_synth + t_prep
        mem = peak_mb()
        print(f"rows {ROWS:,}: unique {report['rows']['unique']:,}, written {report['rows']['written']:,}")
        print(f"baseline json.loads pass   {t_base:6.2f} s")
        print(f"synth                      {t_synth:6.2f} s  ({t_synth / t_base:.2f}x baseline) cpu {c_synth:.2f} s")
        print(f"prepare (no tokenisation)  {t_prep:6.2f} s  ({t_prep / t_base:.2f}x baseline) cpu {c_prep:.2f} s")
        print(f"synth + prepare            {total:6.2f} s  goal < 10 s: {'MET' if total < 10 else 'MISSED'}"
              f"  (cpu {c_synth + c_prep:.2f} s; load average now {os.getloadavg()[0]:.2f})")
        print(f"peak RSS                   {mem:6.0f} MB goal < 2048 MB: {'MET' if mem < 2048 else 'MISSED'}")

        try:
            import mindspore  # noqa: F401
            import sentencepiece  # noqa: F401
        except ImportError:
            print("tokenisation + MindRecord: skipped (needs the ms extra)")
            return
        from launcher.data.tokenizer import texts_of, train_sentencepiece

        t0 = time.perf_counter()
        model = train_sentencepiece(texts_of(tmp_path / "out" / "train.json"), tmp_path / "tok")
        t_tok = time.perf_counter() - t0
        t0 = time.perf_counter()
        rep = prepare(PrepareOptions(raw=raw, recipe=recipe, out_dir=tmp_path / "mr", tokenizer=model))
        t_mr = time.perf_counter() - t0 - t_prep  # the prepare part measured above
        print(f"tokenizer training (vocab 1024, {rep['rows']['written']:,} rows) {t_tok:6.2f} s")
        print(f"tokenise + MindRecord of {rep['rows']['written']:,} rows (incl. mindspore import) "
              f"~{t_mr:6.2f} s  ({t_mr / t_base:.2f}x baseline); longest {rep['tokens']['longest']} tokens")


if __name__ == "__main__":
    main()
