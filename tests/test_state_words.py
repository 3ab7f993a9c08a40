"""State-true words (issue #33): a reason describes the current state, advice fits its context,
a missing key file is named as missing."""

from __future__ import annotations

import pytest

from launcher.core import cards
from launcher.core.hostfile import Host
from launcher.errors import InputError
from launcher.ops import registry as reg


def test_the_queue_reason_ends_with_the_queue(tmp_path):
    """A job queued for busy cards kept "cards busy: ... --wait ..." as its reason once it ran
    and after it succeeded (a 28-line cell in `jobs`); the event history keeps it."""
    with reg.Registry(tmp_path / "r.sqlite3") as r:
        job = r.create_job("q", "finetune", nodes=["h1"])
        r.set_state(job.id, reg.QUEUED, "cards busy: h1: needs 1 free card(s)")
        assert r.set_state(job.id, reg.RUNNING).reason is None
        done = r.set_state(job.id, reg.SUCCEEDED)
        assert done.reason is None
        assert any("cards busy" in e.message for e in r.events(job.id))
        failed = r.create_job("f", "finetune", nodes=["h1"])
        r.set_state(failed.id, reg.RUNNING, "resuming from global step 20: attempt 2")
        assert r.set_state(failed.id, reg.FAILED, "node 0 exited with code 1").reason == "node 0 exited with code 1"


def test_busy_cards_advise_only_a_submit_that_refuses():
    hosts = [Host("h1", 2, slot_ids=(0, 1))]
    with pytest.raises(cards.CardsBusy) as caught:
        cards.allocate(hosts, 2, {"h1": {0: cards.Holder(0, job_id="other")}})
    assert caught.value.message.endswith("; wait for them with --wait, or pick others with --devices / --include")
    assert caught.value.bare.startswith("cards busy: h1: needs 2 free card(s)") and "--wait" not in caught.value.bare


def test_a_missing_identity_file_is_named_missing(tmp_path):
    """ssh said "authentication failed" for an identity= file that does not exist."""
    from launcher.ops.engines import read_target

    key = tmp_path / "id_missing"
    hf = tmp_path / "hosts"
    hf.write_text(f"h1 slots=1\nh2 slots=1 identity={key}\n")
    with pytest.raises(InputError) as caught:
        read_target(hf)
    assert str(caught.value) == f"no such file: {key} (hostfile {hf} line 2: identity= of h2)"
    assert [h.name for h in read_target(hf, include="h1").hosts] == ["h1"]  # not a chosen host: not asked
    assert [h.name for h in read_target(hf, keys=False).hosts] == ["h1", "h2"]  # render connects to nothing
    key.write_text("k")
    assert [h.name for h in read_target(hf).hosts] == ["h1", "h2"]


def test_counts_are_exact_below_a_million():
    """A LoRA of 81,920 parameters read "trainable params 0 M" and "(0.00e9 base + LoRA)"."""
    from launcher.core.units import count, millions

    assert [count(n) for n in (81_920, 999_999, 13_631_488, 8_030_261_248)] == \
        ["81,920", "999,999", "13,631,488", "8.03 B"]
    assert millions(0) == "< 1 M" and millions(13) == "≈13 M"


def test_render_imports_mindformers_only_with_validate(tmp_path, tiny_job):
    """render imported MindFormers by default (3.1-3.5 s where plan took 0.4 s). A stand-in
    `mindformers` package first on PYTHONPATH marks a file when anything imports it, in this
    process or the validation child: a plain render must not; `--validate` does (so this test
    can fail)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    fake = tmp_path / "fake" / "mindformers"
    fake.mkdir(parents=True)
    marker = tmp_path / "imported"
    (fake / "__init__.py").write_text(f"open({str(marker)!r}, 'a').write('x')\nraise ImportError('stand-in')\n")
    env = {**os.environ, "PYTHONPATH": f"{fake.parent}{os.pathsep}{root}",
           "ALAUNCH_STATE_DIR": str(tmp_path / "state")}
    job = tiny_job
    for extra, imported in (((), False), (("--validate",), True)):
        marker.unlink(missing_ok=True)
        done = subprocess.run([sys.executable, "-m", "launcher", "render", str(job), "--local", *extra],
                              env=env, capture_output=True, text=True, timeout=120)
        assert marker.exists() is imported, (extra, done.returncode, done.stderr[-2000:])


def test_help_one_liners_are_whole_at_80_columns(run_cli, monkeypatch):
    """click cut long one-liners with "..." ("Restart a failed or cancelled training job from its...")."""
    from launcher.cli.app import short_help

    monkeypatch.setenv("COLUMNS", "80")
    for args in (("--help",), ("hosts", "--help"), ("data", "--help")):
        code, out, _ = run_cli(*args)
        listing = out.split("Commands:")[1]
        assert code == 0 and "..." not in listing, listing
    assert short_help("Print each node's commands (dry run: the hosts are only asked which cards are free).") == \
        "Print each node's commands"


def test_nothing_to_send_draws_no_bar_and_says_so():
    """A no-op re-submit drew "0 file(s) 1/1 bytes ?" and "sent 0 file(s), 0.0 MiB (0.0 MiB/s)"."""
    import io

    from rich.console import Console
    from rich.progress import Progress as RichBar

    from launcher.cli.progress import GroupProgress, RichProgress
    from launcher.ops.stage import HostReport

    said: list[str] = []
    bar = RichBar(console=Console(file=io.StringIO(), width=80))
    progress = RichProgress(bar, said.append)
    progress.start("h1", 0, 0)
    progress.advance("h1", 0)
    progress.done("h1", HostReport("h1", linked=6))
    group = GroupProgress(2, said.append, bar)
    group.start("h2", 0, 0)
    assert bar.tasks == [] and said == ["h1: nothing to send (all already there); linked 6"]
    progress.start("h3", 2048, 2)
    assert [t.description for t in bar.tasks] == ["h3: 2 file(s)"]


def test_the_transfer_bar_speaks_mib_and_leaves_only_the_hosts_lines():
    """A fetch at 80 columns left "4.4 MiB in 0.2 s (21.9 MiB/s)" and under it the finished bar
    "4.7/4.7 MB 236.0 MB/s": the same bytes in other units. The bar is MiB and transient."""
    import io
    import time

    from rich.console import Console

    from launcher.cli.progress import transfer_bar

    bar = transfer_bar(Console(file=io.StringIO(), width=80, force_terminal=True))
    task = bar.add_task("h1: 2 file(s)", total=5 << 20)
    bar.update(task, completed=1 << 20)
    time.sleep(0.01)  # a second sample, so the speed column has a rate to show
    bar.update(task, completed=5 << 20)
    cells = " ".join(str(column.render(bar.tasks[0])) for column in bar.columns[2:])
    assert "5.0/5.0 MiB" in cells and "MiB/s" in cells and " MB" not in cells, cells
    assert bar.live.transient


def test_a_pipeline_steps_submit_lines_are_its_own():
    """Inside a pipeline a step queued behind a sibling printed "queued (position 1): cards busy
    ...; wait for them with --wait, or pick others with --devices / --include" unindented: the
    advice is gone (CardsBusy.bare) and the line is the step's."""
    from types import SimpleNamespace

    from launcher.ops.pipeline import PipelineRunner

    said: list[str] = []

    class Engine:
        say = said.append

        def submit(self, spec, target, opts, meta=None):
            assert opts.wait  # concurrent steps wait for their siblings' cards
            self.say("queued (position 1): cards busy: h1: needs 1 free card(s) of 0, 0 free")
            return SimpleNamespace(id="j-1", meta={})

    registry = SimpleNamespace(set_step=lambda *a, **k: None)
    engine = Engine()
    runner = PipelineRunner(registry, engine, [Host("h1", 1)], say=said.append)  # type: ignore[arg-type]
    runner.submit("run-1", SimpleNamespace(name="eval"), SimpleNamespace())  # type: ignore[arg-type]
    assert said == ["  eval: queued (position 1): cards busy: h1: needs 1 free card(s) of 0, 0 free"]
    assert engine.say == said.append  # given back
