"""The default view's story (pure, real logs): the cluster forming as one milestone, warnings
whole and wrapped at word boundaries, a reattach that says where it resumes; and the
follower's replay of what an earlier follower showed (the real FOLLOW script on a local dir)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from launcher.cli import environment
from launcher.cli.live import StorySink
from launcher.cli.logview import LinePrinter, summary_rows
from launcher.metrics.logparse import JobLogs
from launcher.metrics.progress import ProgressView, build_view
from launcher.metrics.story import ClusterForming, story_kind

FIX = Path(__file__).parent / "fixtures"
TINY = (FIX / "real-cpu" / "tiny-2workers" / "worker_0.log").read_text(encoding="utf-8").splitlines()
FORMED_AT = next(i for i, line in enumerate(TINY) if "Cluster is successfully initialized" in line)
SCHEDULER = (FIX / "real-cpu" / "tiny-2workers" / "scheduler.log").read_text(encoding="utf-8").splitlines()
#: a long warning no routine rule knows, so the story shows it (the 4-card Ascend run's)
UNLISTED = next(ln for ln in (FIX / "real-ascend" / "train-run-4card" / "worker_0.log").read_text(
    encoding="utf-8").splitlines() if "op_parallel_config.py:244" in ln)
PEER_CLOSED = next(ln for ln in SCHEDULER if "connection.cc:79" in ln)


def _story(monkeypatch, lines, *, width=100, terminal=False, resumed=None) -> tuple[list[str], JobLogs]:
    out = io.StringIO()
    console = Console(file=out, width=width, color_system=None, no_color=True, force_terminal=terminal)
    monkeypatch.setattr(environment.current(), "stdout", console, raising=False)
    sink = StorySink(LinePrinter(tagged=True, raw=False), live=False, every=3600)
    job = JobLogs()
    if resumed is not None:
        for line in lines[:resumed]:
            job.feed("h0", 0, line)
        sink.resumed(build_view(job), resumed)
        lines = lines[resumed:]
    for line in lines:
        job.feed("h0", 0, line)
        sink.line("h0", 0, line)
        sink.progress(build_view(job))
    sink.finish()
    job.finish()
    return out.getvalue().splitlines(), job


def test_the_cluster_forming_of_a_real_run_is_one_milestone_not_warnings(monkeypatch):
    """The tiny CPU job's worker_0.log: 6 retries, 22 meta-server lines and 26 TCP notices
    before the cluster formed 9 s after the first meta-server line; the story says it once."""
    story, job = _story(monkeypatch, TINY)
    text = "\n".join(story)
    formed = [ln for ln in story if "cluster formed" in ln]
    assert len(formed) == 1 and formed[0].endswith("h0/0: cluster formed after 6 retries, 9 s"), text
    for noise in ("Topology build", "meta server", "Connect] Connection", "retry(", "not formed"):
        assert noise not in text, text
    assert "cluster build retries" not in summary_rows(job.states[("h0", 0)].summary())


def test_retries_that_never_form_a_cluster_explain_the_failure(monkeypatch):
    story, job = _story(monkeypatch, TINY[:FORMED_AT])
    text = "\n".join(story)
    assert "h0/0         | cluster not formed: 6 of 1200 retries, 9 s without every node joining" in text, text
    assert "cluster formed" not in text
    assert summary_rows(job.states[("h0", 0)].summary())["cluster build retries"] == "6, never formed"


def test_the_4card_ascend_run_forms_after_2_retries():
    forming = ClusterForming()
    for line in (FIX / "real-ascend" / "train-run-4card" / "worker_0.log").read_text(encoding="utf-8").splitlines():
        if story_kind(line)[0] == "forming" or story_kind(line) == ("milestone", "cluster formed"):
            forming.feed(line)
    assert forming.milestone() == "cluster formed after 2 retries, 6 s" and forming.failed_text() is None
    # msrun's scheduler says "the cluster is successfully created" when it finalizes, at the end
    assert story_kind("[WARNING] DISTRIBUTED(1,f,python):2025-03-10-09:40:20.507.092 [cluster_context.cc:153] "
                      "Finalize] This log means the cluster is successfully created. Retry to finalize the "
                      "node and exit cluster...")[0] == "warning"
    # the last word of a cluster that never formed stays an error
    assert story_kind("[ERROR] DISTRIBUTED(1,f,python):2025-03-10-09:40:20.507.092 [cluster_context.cc:1] "
                      "BuildCluster] Topology build timed out.")[0] == "error"


@pytest.mark.parametrize("width", [80, 120])
def test_a_long_warning_is_whole_and_wrapped_at_word_boundaries(monkeypatch, width):
    story, _ = _story(monkeypatch, [UNLISTED], width=width, terminal=True)
    block = [ln for ln in story if not ln.startswith("warnings:")]
    assert len(block) > 1 and max(map(len, block)) <= width, story
    assert all(ln.startswith(" " * 15) for ln in block[1:]), story
    said = " ".join(ln.strip() for ln in block)
    words = UNLISTED.split("op_parallel_config.py:244] ", 1)[1].split()
    assert said.endswith(" ".join(words)), said  # every word, none cut in two


def test_a_warning_in_a_pipe_stays_one_whole_line(monkeypatch):
    story, _ = _story(monkeypatch, [UNLISTED], width=80)
    assert story[0].endswith(UNLISTED.split("op_parallel_config.py:244] ", 1)[1].strip()), story


def test_a_reattach_says_where_it_resumes_and_not_first_step_done(monkeypatch):
    first_loss = next(i for i, ln in enumerate(TINY) if "step:[" in ln)
    story, _ = _story(monkeypatch, TINY, resumed=first_loss + 10)
    text = "\n".join(story)
    assert story[0] == f"alaunch: resuming at step 5/64, {first_loss + 10:,} lines skipped (shown before); " \
                       "--from-start for all", text
    assert "first step done" not in text and "cluster formed" not in text, text
    assert "training over" in text


def test_resumed_before_any_step_names_no_step(monkeypatch):
    from launcher.cli.live import resumed_text
    assert resumed_text(ProgressView("unknown"), 1234) == \
        "resuming 1,234 lines skipped (shown before); --from-start for all"


def test_a_later_follower_replays_what_was_shown_for_the_summary_and_prints_only_the_new(tmp_path):
    """A reattach summarised only what it read (first loss 1.962 where the run's was 6.933): the
    follower now reads every file again, hands the sink only the new lines, and JobLogs all."""
    import sys

    from launcher.core.hostfile import Host
    from launcher.core.layout import JobLayout
    from launcher.ops import registry as reg
    from launcher.ops.follow import Follower
    from launcher.runners import LocalRunner
    from tests.conftest import write_exit_code

    root = tmp_path / "job"
    (root / "msrun_log").mkdir(parents=True)
    state = Path(JobLayout(str(root)).node_state(0))
    state.mkdir(parents=True)
    write_exit_code(state, 0)  # the node has ended: each follower reads what is there and stops
    log = root / "msrun_log" / "worker_0.log"
    first_loss = next(i for i, ln in enumerate(TINY) if "step:[" in ln)
    cut = first_loss + 10
    log.write_text("\n".join(TINY[:cut]) + "\n", encoding="utf-8")
    record = reg.JobRecord("j1", "j", "train", "running", "", "", "", "", "", None, None, None,
                           meta={"pythons": {"n0": sys.executable}}, nodes=(reg.NodeRecord(0, "n0", str(root)),))

    class Sink:
        def __init__(self):
            self.lines, self.notes, self.resumes = [], [], []
        def line(self, host, rank, text): self.lines.append(text)  # noqa: E301,E704
        def progress(self, view): pass  # noqa: E301,E704
        def note(self, text): self.notes.append(text)  # noqa: E301,E704
        def msrun(self, host, text): pass  # noqa: E301,E704
        def nodes(self, views): pass  # noqa: E301,E704
        def resumed(self, view, skipped): self.resumes.append((view.done, skipped))  # noqa: E301,E704

    offsets = tmp_path / "offsets.json"
    hosts = {"n0": Host("n0", 1)}
    first = Sink()
    Follower(record, lambda h: LocalRunner(h), hosts, first, offsets_path=offsets).run()
    assert len(first.lines) == cut and first.resumes == []
    with log.open("a", encoding="utf-8") as fh:
        fh.write("\n".join(TINY[cut:]) + "\n")
    again = Sink()
    result = Follower(record, lambda h: LocalRunner(h), hosts, again, offsets_path=offsets).run()
    assert again.lines == TINY[cut:] and again.resumes == [(5, cut)]
    summary = result.job.states[("n0", 0)].summary()
    whole = JobLogs()
    for line in TINY:
        whole.feed("n0", 0, line)
    assert summary.first_loss == whole.states[("n0", 0)].summary().first_loss
    assert summary.loss_lines == 64 and summary.duration_s == whole.states[("n0", 0)].summary().duration_s
    # a third follower has nothing new: it says so, and the summary is still the whole run's
    third = Sink()
    result = Follower(record, lambda h: LocalRunner(h), hosts, third, offsets_path=offsets).run()
    assert third.lines == [] and third.resumes == [(64, len(TINY))]
    assert result.job.states[("n0", 0)].summary().loss_lines == 64


def test_logs_summary_of_a_fetched_job_reads_its_copy(run_cli, tmp_path, monkeypatch):
    """It said "fetch the job first (alaunch fetch JOB)", and still said it after the fetch."""
    from launcher.ops.registry import Registry
    monkeypatch.chdir(tmp_path)
    with Registry.in_state_dir() as registry:
        job = registry.create_job("tiny", "finetune", hostfile_text="gone-host slots=1\n",
                                  nodes=[("gone-host", "/w/tiny")], state="succeeded")
    copy = tmp_path / "runs" / job.id / "gone-host" / "msrun_log"
    copy.mkdir(parents=True)
    (copy / "worker_0.log").write_text("\n".join(TINY) + "\n", encoding="utf-8")
    code, out, err = run_cli("logs", job.id, "--summary")
    assert code == 0, err
    assert "64/64 steps" in out and "cluster build retries" not in out and "fetch the job first" not in err, out
    code, out, err = run_cli("logs", job.id, "--json")
    assert code == 0 and '"steps_done": 64' in out, err


def test_repeats_from_one_place_with_other_words_are_not_one_message_said_11_times(monkeypatch):
    # MindFormers' 11 deprecation lines are routine now (folded): the same lines in other words
    # (not a routine rule's) are what a warning repeated from one place with other words looks like
    lines = [ln.replace("is deprecated. Please use", "was renamed; see") for ln in TINY]
    story, _ = _story(monkeypatch, lines)
    line = next(ln for ln in story if ln.startswith("  x11 "))
    assert line.endswith("The config load_checkpoint was renamed; see config load_path in "
                         "`checkpoint_config` instead. (and 10 other message(s) from there)"), story


def test_the_schedulers_routine_is_quiet_and_its_retries_one_milestone(monkeypatch):
    """msrun's scheduler log of the same run: 14 retries, 2 registrations, 5 'Cluster currently
    has 2 alive nodes.' while the workers ran, 2 unregistrations: one line of story."""
    lines = (FIX / "real-cpu" / "tiny-2workers" / "scheduler.log").read_text(encoding="utf-8").splitlines()
    story, _ = _story(monkeypatch, lines)
    text = "\n".join(story)
    for routine in ("alive nodes", "has unregistered", "registered successfully", "Topology build"):
        assert routine not in text, text
    assert sum("cluster formed after 14 retries" in ln for ln in story) == 1, text


def test_a_healthy_runs_routine_warnings_are_one_line_unknown_ones_stay(monkeypatch):
    """The tiny CPU job's story printed 25 distinct routine warnings (41 lines in worker_0.log,
    11 in the scheduler's), 11 of them MindFormers' "The config X is deprecated" for keys the
    yaml does not set: now one line says how many; a warning no rule knows stays."""
    story, _ = _story(monkeypatch, SCHEDULER + TINY + [UNLISTED])  # one stream: the scheduler first
    text = "\n".join(story)
    warned = [ln for ln in story if "| warning " in ln]
    assert len(warned) == 1 and "op_parallel_config.py:244" in warned[0], text
    assert "51 routine MindSpore warnings (28 kinds; --verbose shows them)" in story, text
    for noise in ("is deprecated", "hyper_parallel", "moe_config", "full_batch", "Skip to bind", "remote peer"):
        assert noise not in text, text
    assert sum(1 for ln in story if "warning" in ln.lower()) <= 3, text


def test_a_peer_socket_closing_while_the_cluster_forms_is_part_of_the_forming(monkeypatch):
    """The scheduler's "please check remote peer address ... which worker disconnected" between
    its retries 1 and 2 (the story's first line on the tiny CPU job, at 80 columns six lines):
    forming, counted into the milestone; after the cluster formed, a worker did disconnect."""
    story, job = _story(monkeypatch, SCHEDULER)
    text = "\n".join(story)
    assert "remote peer" not in text and "cluster formed after 14 retries" in text, text
    assert summary_rows(job.states[("h0", 0)].summary())["kind"] == "-"  # it read "unknown"
    story, _ = _story(monkeypatch, SCHEDULER + [PEER_CLOSED])
    assert sum("remote peer" in ln for ln in story) == 1, story


def test_a_failure_signature_is_never_folded_into_the_routine_count():
    """A routine warning's words with a failure signature in them stay a warning (or an error):
    the fold hides only what the rules name, never what names a failure."""
    from launcher.metrics import signatures
    from launcher.metrics.story import routine_warning, warning_key
    routine = next(ln for ln in TINY if "The config load_checkpoint is deprecated" in ln)
    assert story_kind(routine)[0] == "routine"
    # a WARNING line that names a failure (capped at "error" on a WARNING line: not an error line)
    poisoned = routine + " socket establish timeout (EI0006)"
    assert signatures.match(poisoned) is not None, "the test needs a line a signature names"
    assert not routine_warning(poisoned, warning_key(poisoned)) and story_kind(poisoned)[0] == "warning"
    # an unknown warning from a routine file stays visible
    other = routine.replace("The config load_checkpoint is deprecated", "The config lr is invalid")
    assert story_kind(other)[0] == "warning"


def test_the_first_step_line_gives_no_rate_or_eta_measured_on_the_compile():
    """The tiny CPU job's first step took 7.1 s with the compile and read "7131 ms/step | ETA
    0:47:25" for a run that took 3 minutes: the compile's time is said as that."""
    from launcher.cli.live import first_step_text
    view = ProgressView("train", 1, 400, 1, 4, 6.933, "", 7.131, 1.1, 2845.0)
    assert first_step_text(view) == "first step done (graph compiled): epoch 1/4 step 1/400 | loss 6.933 | " \
                                    "7.1 s with the compile"


def test_a_log_read_file_by_file_compiles_once_and_ends_without_an_eta(monkeypatch):
    """An ended job read from the start goes file by file: rank 0's "compiling the graph" came
    after rank 1's whole file and read "at step 64/64"; the last line ended "ETA 0:00:00"."""
    out = io.StringIO()
    monkeypatch.setattr(environment.current(), "stdout", Console(file=out, width=200, color_system=None,
                                                                 no_color=True), raising=False)
    sink = StorySink(LinePrinter(tagged=True, raw=False), live=False, every=3600)
    job = JobLogs()
    for rank in (1, 0):
        for line in TINY:
            job.feed("h0", rank, line)
            sink.line("h0", rank, line)
            sink.progress(build_view(job))
    sink.finish()
    story = out.getvalue().splitlines()
    compiling = [ln for ln in story if "compiling the graph" in ln]
    assert len(compiling) == 1 and compiling[0].endswith("h0/1: compiling the graph"), story
    assert "step 64/64" in story[-2] and "ETA" not in story[-2], story


def test_a_note_on_a_terminal_wraps_between_words():
    """The Ctrl-C note at 80 columns read "(stop it" / ": alaunch cancel ...": cut by the terminal."""
    from launcher.cli.live import detached_text
    from launcher.cli.tables import wrap_words as fit
    text = "alaunch: " + detached_text("tiny-lora-cpu-20261206-021321-493d")
    lines = fit(Console(file=io.StringIO(), width=80, force_terminal=True), text).splitlines()
    assert len(lines) == 3 and all(len(ln) <= 80 for ln in lines), lines
    assert " ".join(lines) == text  # whole words only
    assert fit(Console(file=io.StringIO(), width=80), text) == text  # a pipe: one line
