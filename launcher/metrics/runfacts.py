"""What one fetched run directory says about itself (``alaunch results`` and the dashboard's
compare): job, LoRA settings, trainable parameters, steps, duration, final loss, loss curve,
EM/F1 and math accuracy. Reads files only. Where each fact comes from:

* job, template: job.json (``id``/``name``, ``template``), else the directory name;
* LoRA rank / alpha / targets: job.json ``lora`` {rank, alpha, targets}, else the
  ``model.model_config.pet_config`` of the first MindFormers YAML in the run;
* trainable parameters: the run's "Network Parameters" log line (exact in MindFormers 1.1,
  whole millions in 1.9), else counted from the config (launcher.core.lora);
* steps, duration: the lowest rank's training log; final loss, loss curve: rank 0's TensorBoard
  event files when the job wrote them (metrics.tbevents), else the lowest rank's training log;
* EM, F1, math accuracy: scores.json.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from launcher.core.units import millions
from launcher.errors import InputError
from launcher.metrics import scorefile
from launcher.metrics.logfiles import discover, parse_files
from launcher.metrics.logparse import LogState

JOB_META = "job.json"


@dataclass
class RunFacts:
    """What one run directory says about itself (None: not known)."""

    path: str
    job: str
    template: str | None = None
    lora_rank: int | None = None
    lora_alpha: float | None = None
    lora_targets: str | None = None
    trainable_params: int | None = None
    trainable_params_approx: bool = False
    steps: int | None = None
    duration_s: float | None = None
    final_loss: float | None = None
    em: float | None = None
    f1: float | None = None
    math_correct: int | None = None
    math_total: int | None = None
    loss_curve: list[tuple[int, float]] = field(default_factory=list)
    loss_source: str | None = None  # "tensorboard" (rank 0's event files) or "log"

    @property
    def math_accuracy(self) -> float | None:
        if self.math_total:
            return (self.math_correct or 0) / self.math_total
        return None


def find_model_config(run_dir: Path) -> dict[str, Any] | None:
    """``model.model_config`` of the first YAML in the run that has a pet_config (else any)."""
    fallback = None
    for path in sorted(run_dir.rglob("*.yaml")):
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, OSError, UnicodeDecodeError):
            continue
        mc = data.get("model", {}).get("model_config") if isinstance(data, dict) and \
            isinstance(data.get("model"), dict) else None
        if isinstance(mc, dict):
            if isinstance(mc.get("pet_config"), dict):
                return mc
            fallback = fallback or mc
    return fallback


def _count_from_config(model_config: dict[str, Any]) -> int | None:
    try:
        from launcher.core import lora
    except ImportError:  # pragma: no cover - lora.py ships with the package
        return None
    try:
        return lora.count(model_config).trainable
    except (ValueError, KeyError, TypeError):
        return None


def _training_state(run_dir: Path) -> LogState | None:
    try:
        files = discover(run_dir)
    except InputError:
        return None
    job = parse_files(files)
    trained = [s for s in job.states.values() if s.losses]
    pool = trained or list(job.states.values())
    if not pool:
        return None
    return min(pool, key=lambda s: (s.rank is None, s.rank or 0, s.host or ""))


def collect(run_dir: Path) -> RunFacts:
    """Gather the facts of one run directory (reads files; no network)."""
    meta = scorefile.load_json_object(run_dir / JOB_META) if (run_dir / JOB_META).is_file() else {}
    facts = RunFacts(path=str(run_dir), job=str(meta.get("id") or meta.get("job_id") or
                                                  meta.get("name") or run_dir.name))
    facts.template = meta.get("template")
    lora_meta: dict[str, Any] = meta["lora"] if isinstance(meta.get("lora"), dict) else {}
    model_config = find_model_config(run_dir)
    pet = (model_config or {}).get("pet_config") or {}
    facts.lora_rank = lora_meta.get("rank", pet.get("lora_rank"))
    facts.lora_alpha = lora_meta.get("alpha", pet.get("lora_alpha"))
    targets = lora_meta.get("targets", pet.get("target_modules"))
    facts.lora_targets = None if targets is None else str(targets)

    state = _training_state(run_dir)
    if state is not None:
        if state.network_params is not None:
            facts.trainable_params = state.network_params * (10**6 if state.network_params_millions else 1)
            facts.trainable_params_approx = state.network_params_millions
        progress = state.progress()
        if progress is not None and state.losses:  # eval/predict "steps" are examples
            facts.steps = progress[0]
        if state.first_time and state.last_time:
            facts.duration_s = (state.last_time - state.first_time).total_seconds()
        if state.losses:
            facts.final_loss = state.losses[-1].loss
            facts.loss_curve = [(p.global_step, p.loss) for p in state.losses]
            facts.loss_source = "log"
    from launcher.metrics.tbevents import losses_by_rank
    tb = losses_by_rank(run_dir)  # the event files, where the job wrote them, win over the log
    if tb:
        facts.loss_curve = tb[min(tb)]
        facts.final_loss = facts.loss_curve[-1][1]
        facts.loss_source = "tensorboard"
    if (facts.trainable_params is None or facts.trainable_params_approx) and model_config:
        counted = _count_from_config(model_config)
        if counted is not None:
            facts.trainable_params, facts.trainable_params_approx = counted, False

    scores = scorefile.load(run_dir)
    squad = scores.get("squad") or {}
    facts.em, facts.f1 = squad.get("Em"), squad.get("F1")
    math = scores.get("math") or {}
    facts.math_correct, facts.math_total = math.get("correct"), math.get("total")
    return facts


def _cell(value: Any, spec: str = "") -> str:
    return "-" if value is None else format(value, spec)


def _hms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def cells(f: RunFacts) -> dict[str, str]:
    """The run's facts as the text ``alaunch results`` prints (one row each; ``-``: not known),
    so the dashboard's compare shows exactly the same cells."""
    lora = "-" if f.lora_rank is None and f.lora_targets is None else \
        f"r={_cell(f.lora_rank)} α={_cell(f.lora_alpha, 'g')} {f.lora_targets or ''}".strip()
    params = _cell(f.trainable_params, ",")
    if f.trainable_params_approx and f.trainable_params is not None:
        params = millions(f.trainable_params // 10**6)
    math = "-" if f.math_accuracy is None else \
        f"{100 * f.math_accuracy:.1f}% ({f.math_correct}/{f.math_total})"
    return {
        "template": f.template or "-", "LoRA": lora, "trainable params": params,
        "steps": _cell(f.steps), "duration": _hms(f.duration_s),
        "final loss": _cell(f.final_loss, ".4g"), "EM": _cell(f.em, ".2f"),
        "F1": _cell(f.f1, ".2f"), "math accuracy": math,
    }
