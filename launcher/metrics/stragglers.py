"""Which rank is slow: every rank's step time from its own log, against the median of the others.

Pure: fed :class:`~launcher.metrics.logparse.LogState` objects (their ``step_marks``), no clocks.

A rank's step time is MindFormers' ``per_step_time`` when its loss line prints one, else the
time between two of its loss lines divided by the steps between them (the line's timestamp).
The first loss line of a rank is left out: it carries the graph compile (the real 4-card log:
step 1 took 383 s, the others ~1.4 s). Under pipeline parallel every stage prints the loss line
(the loss itself is only meaningful on the last), so step times come from every rank.

A straggler is a rank whose typical step time (the median of its last ``window`` samples) is more
than ``threshold`` (default 20 %) above the median of the other ranks' typical step times, and
whose last ``min_steps`` samples or more were all above that line. Why the median and a run of
samples: one slow step (a checkpoint save, a GC pause) is not a slow rank; the median of the
others is not moved by the straggler itself, so 2 ranks are enough to name one.

What a step time measures: in synchronous data parallel the collectives make every rank wait
for the slowest, so a rank slowed *inside* its step shows a longer step on every rank, and one
slowed *between* steps (outside MindFormers' timer) can make the others' timers look slow. The
straggler named is the rank whose own log shows the longer step; ``docs/diagnosis.md`` says so.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from launcher.metrics.logparse import JobLogs, LogState

THRESHOLD = 0.20
WINDOW = 40  # samples per rank considered
MIN_STEPS = 5  # samples in a row above the line before a rank is named


@dataclass(frozen=True)
class Straggler:
    """One slow rank: how much slower than the others' median, over how many steps."""

    host: str | None
    rank: int | None
    slower_pct: float  # 31.0 for 31 %
    steps: int  # steps (not samples: one sink-mode sample covers several) it has been slower for
    step_s: float  # its median step time over the window
    median_s: float  # the median of the other ranks' step times

    def text(self) -> str:
        """``rank 5 on node-2 is 31 % slower than the median for 40 steps``."""
        where = f"rank {self.rank}" if self.rank is not None else "a stream"
        if self.host and self.host != "local":
            where += f" on {self.host}"
        return (f"{where} is {self.slower_pct:.0f} % slower than the median for {self.steps} steps "
                f"({self.step_s:.3g} s/step vs {self.median_s:.3g})")


def step_times(state: LogState, last: int | None = None) -> list[tuple[int, float, int]]:
    """(global step, seconds per step, steps covered) of each loss line after the first; with
    ``last``, of the last ``last`` loss lines only (the live watch reads its window, not the
    whole run: a check over every mark grew with the log)."""
    out: list[tuple[int, float, int]] = []
    marks = state.step_marks if last is None else state.step_marks[-(last + 1):]
    for (s0, t0, _), (s1, t1, ms) in zip(marks, marks[1:], strict=False):
        span = s1 - s0
        if span <= 0:
            continue
        if ms:
            out.append((s1, ms / 1000.0, span))
        elif t0 is not None and t1 is not None and t1 > t0:
            out.append((s1, (t1 - t0).total_seconds() / span, span))
    return out


def find_stragglers(job: JobLogs | Iterable[LogState], threshold: float = THRESHOLD, window: int = WINDOW,
                    min_steps: int = MIN_STEPS) -> list[Straggler]:
    """The ranks slower than the median of the others by more than ``threshold``, slowest first."""
    states = list(job.states.values()) if isinstance(job, JobLogs) else list(job)
    series = {}
    for st in states:
        if st.rank is None:
            continue
        times = step_times(st, window)[-window:]
        if len(times) >= min_steps:
            series[(st.host, st.rank)] = times
    if len(series) < 2:
        return []
    typical = {key: statistics.median(t for _, t, _ in times) for key, times in series.items()}
    found = []
    for key, times in series.items():
        others = statistics.median(v for k, v in typical.items() if k != key)
        if others <= 0 or typical[key] <= others * (1 + threshold):
            continue
        line = others * (1 + threshold)
        run = 0
        steps = 0
        for _, t, span in reversed(times):
            if t <= line:
                break
            run += 1
            steps += span
        if run >= min_steps:
            found.append(Straggler(key[0], key[1], 100.0 * (typical[key] / others - 1), steps,
                                   typical[key], others))
    return sorted(found, key=lambda s: -s.slower_pct)


def from_tails(tails_by_host: dict[str, dict[str, list[str]]]) -> list[Straggler]:
    """Stragglers from ``status``'s read of each running host: {host: {rank: last log lines}}
    (``log_tails``: the last 64 KiB of each rank's log, some 200 loss lines)."""
    job = JobLogs()
    for host, tails in tails_by_host.items():
        for rank, lines in (tails or {}).items():
            st = job.state(host, int(rank))
            st.feed_lines(lines)
    return find_stragglers(job)


class StragglerWatch:
    """For a live follow (``logs -f``'s story, the dashboard): looks at most every ``every``
    seconds of the caller's clock and says what changed, once: a rank newly slow, a rank that
    keeps pace again. ``current`` is the last answer (a new list each time: readers on another
    thread get a whole one). Why 5 s: a check of 64 ranks x 40 samples is ~2 ms; per line at
    thousands of lines a second it would be the follower's main cost."""

    def __init__(self, every: float = 5.0, **kw: Any):
        self.every, self.kw = every, kw
        self.current: list[Straggler] = []
        self._named: set[tuple[str | None, int | None]] = set()
        self._last: float | None = None

    def update(self, job: JobLogs, now: float) -> list[str]:
        if self._last is not None and now - self._last < self.every:
            return []
        self._last = now
        found = find_stragglers(job, **self.kw)
        self.current = found
        keys = {(s.host, s.rank): s for s in found}
        notes = [f"straggler: {s.text()}" for k, s in keys.items() if k not in self._named]
        notes += [f"rank {r}{f' on {h}' if h and h != 'local' else ''} keeps pace again"
                  for h, r in sorted(self._named - set(keys), key=str)]
        self._named = set(keys)
        return notes
