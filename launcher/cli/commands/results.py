"""`alaunch results RUN_DIR...`: fetched runs side by side, and their loss curves.

A run directory is what fetch writes: ``runs/<job-id>/<host>/...`` (msrun and MindFormers
logs, the rendered config), plus, when present, ``runs/<job-id>/job.json`` (job metadata)
and ``scores.json`` (written by ``alaunch score ... --save RUN_DIR``). Every fact is taken
from the most direct source available and missing ones show as ``-``:

* job, template: job.json (``id``/``name``, ``template``), else the directory name;
* LoRA rank / alpha / targets: job.json ``lora`` {rank, alpha, targets}, else the
  ``model.model_config.pet_config`` of the first MindFormers YAML in the run;
* trainable parameters: the run's "Network Parameters" log line (exact in MindFormers 1.1,
  whole millions in 1.9), else counted from the config (launcher.core.lora);
* steps, duration, final loss, loss curve: the lowest rank's training log;
* EM, F1, math accuracy: scores.json.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

from launcher.cli import environment
from launcher.errors import AlaunchError, InputError

if TYPE_CHECKING:  # imported when the verb runs (cli/app.py)
    from rich.table import Table

    from launcher.metrics.logparse import LogState

ORDER = 85
JOB_META = "job.json"
DEFAULT_RUNS = Path("runs")


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

    @property
    def math_accuracy(self) -> float | None:
        if self.math_total:
            return (self.math_correct or 0) / self.math_total
        return None


def resolve_run_dir(arg: str) -> Path:
    """A run directory given as a path, or as a job id under ./runs."""
    path = Path(arg)
    if path.is_dir():
        return path
    candidate = DEFAULT_RUNS / arg
    if candidate.is_dir():
        return candidate
    raise InputError(f"no run directory {arg!r} (and no {candidate}); give a fetched run "
                     "directory or a job id fetched into ./runs", source=arg)


def find_model_config(run_dir: Path) -> dict[str, Any] | None:
    """``model.model_config`` of the first YAML in the run that has a pet_config (else any)."""
    import yaml

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
    from launcher.metrics.logfiles import discover, parse_files

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
    from launcher.metrics import scorefile

    meta = scorefile.load_json_object(run_dir / JOB_META) if (run_dir / JOB_META).is_file() else {}
    facts = RunFacts(path=str(run_dir), job=str(meta.get("id") or meta.get("job_id") or
                                                  meta.get("name") or run_dir.name))
    facts.template = meta.get("template")
    lora_meta = meta.get("lora") if isinstance(meta.get("lora"), dict) else {}
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


def results_rows(f: RunFacts) -> dict[str, str]:
    from launcher.cli.logview import fmt_duration

    lora = "-" if f.lora_rank is None and f.lora_targets is None else \
        f"r={_cell(f.lora_rank)} α={_cell(f.lora_alpha, 'g')} {f.lora_targets or ''}".strip()
    params = _cell(f.trainable_params, ",")
    if f.trainable_params_approx and f.trainable_params is not None:
        params = f"≈{f.trainable_params // 10**6} M"
    math = "-" if f.math_accuracy is None else \
        f"{100 * f.math_accuracy:.1f}% ({f.math_correct}/{f.math_total})"
    return {
        "template": f.template or "-", "LoRA": lora, "trainable params": params,
        "steps": _cell(f.steps), "duration": fmt_duration(f.duration_s),
        "final loss": _cell(f.final_loss, ".4g"), "EM": _cell(f.em, ".2f"),
        "F1": _cell(f.f1, ".2f"), "math accuracy": math,
    }


def results_table(runs: list[RunFacts]) -> Table:
    """Runs as columns, facts as rows: side by side, readable in 80 columns for a few runs."""
    from rich.table import Table

    table = Table(title="Runs")
    table.add_column("job")
    rows = [results_rows(f) for f in runs]
    for f in runs:
        table.add_column(f.job)
    for key in rows[0]:
        table.add_row(key, *(r[key] for r in rows))
    return table


def plot_losses(runs: list[RunFacts], out: Path) -> int:
    """Draw every run's loss curve into ``out`` (PNG, SVG or PDF by suffix); returns curves."""
    curves = [f for f in runs if f.loss_curve]
    if not curves:
        raise AlaunchError("no loss lines in these runs' logs: nothing to plot")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise AlaunchError("--plot needs matplotlib: pip install 'alaunch[plot]'") from exc
    fig, ax = plt.subplots(figsize=(8, 4.5))
    try:
        for f in curves:
            xs, ys = zip(*f.loss_curve)
            ax.plot(xs, ys, label=f.job, linewidth=1)
        ax.set_xlabel("global step")
        ax.set_ylabel("loss")
        ax.set_title("training loss")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        try:
            fig.savefig(out)
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot write the plot: {exc}", source=str(out), key="--plot") from exc
    finally:
        plt.close(fig)
    return len(curves)


def register(app: typer.Typer) -> None:
    @app.command("results")
    def results(
        runs: list[str] = typer.Argument(..., metavar="RUN_DIR|JOB...",
                                         help="Fetched run directories, or job ids under ./runs."),
        plot: Optional[Path] = typer.Option(None, "--plot", metavar="FILE",
                                            help="Also draw the loss curves into FILE (png/svg/pdf)."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON instead of the table."),
    ) -> None:
        """Compare runs side by side: LoRA, params, loss, EM/F1, math."""
        facts = [collect(resolve_run_dir(r)) for r in runs]
        env = environment.current()
        if as_json:
            env.stdout.file.write(json.dumps([asdict(f) | {"math_accuracy": f.math_accuracy}
                                              for f in facts], indent=2, ensure_ascii=False) + "\n")
        else:
            env.stdout.print(results_table(facts))
        if plot is not None:
            n = plot_losses(facts, plot)
            env.stderr.print(f"plotted {n} loss curve(s) to {plot}", markup=False, highlight=False)
