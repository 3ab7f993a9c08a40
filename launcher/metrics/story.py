"""The story of a job's log (pure): which lines a person reads in the default view.

:func:`story_kind` sorts one log line: a milestone (cluster built, compiling, checkpoint saved,
eval done), progress, a warning (keyed by where it comes from, so repeats are counted, not
repeated), an error or a traceback, or quiet. Measured reason: ``make demo`` printed 5,500
lines, 5,300 of them raw MindFormers output (config dumps, deprecation warnings, progress
bars). The terminal's :class:`launcher.cli.live.StorySink` and anything else that tells the
story (a diagnosis line) read it from here; a fatal signature of
:mod:`launcher.metrics.signatures` is an error even when the line does not say ERROR.
"""

from __future__ import annotations

import re

from launcher.metrics import signatures

#: Lines worth a line of their own in the default view: (pattern, what happened).
MILESTONES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"Cluster is successfully initialized|This log means the cluster is successfully created"),
     "cluster built"),
    (re.compile(r"Model Compiling, Please Wait|Start compiling|compile the network"), "compiling the graph"),
    (re.compile(r"\.{3,}Saving ckpt\.{3,}|checkpoint successfully saved at|saved checkpoint from step"),
     "checkpoint saved"),
    (re.compile(r"Training Over|Training completed"), "training over"),
    (re.compile(r"Evaluate Over"), "eval done"),
    (re.compile(r"Predict Over"), "predict done"),
)
_WARNING = re.compile(r"^\s*\[WARNING\]| - WARNING - |\b\w*Warning: ")
_ERROR = re.compile(r"^\s*\[(?:ERROR|CRITICAL|EXCEPTION)\]| - (?:ERROR|CRITICAL) - ")
_WHERE = re.compile(r"\[([\w./-]+\.(?:py|cc|cpp|h):\d+)\]|mindformers\[([^\]]+)\]|([\w./-]+\.py):\d+: \w*Warning")
_DIGITS = re.compile(r"\d+")


def warning_key(text: str) -> str:
    """Which warning this is, for counting repeats: its source location, else its words."""
    m = _WHERE.search(text)
    if m:
        return next(g for g in m.groups() if g)
    return _DIGITS.sub("#", text.strip())[:120]


_MS_PREFIX = re.compile(r"^\s*\[(?:WARNING|ERROR|INFO)\] \w+\([^)]*\):\S+ \[([^\]]+)\] (?:\w+\] )?")
_MF_PREFIX = re.compile(r"^.*?mindformers\S*?\[([^\]]+)\] - (?:WARNING|ERROR|INFO) - ")


def short_warning(text: str) -> str:
    """A warning without its timestamp/pid prefix: ``(file.py:84) the message`` (what a person reads)."""
    m = _MS_PREFIX.match(text) or _MF_PREFIX.match(text)
    if m:
        where = m.group(1).rsplit("/", 1)[-1]
        return f"({where}) {text[m.end():].strip()}"
    return text.strip()


def story_kind(text: str) -> tuple[str, str]:
    """How the default view treats one log line: ("milestone", what) | ("progress", "") |
    ("warning", key) | ("error", "") | ("traceback", "") | ("quiet", "")."""
    if "Epoch:[" in text or "Step[" in text or "samples/s/p" in text:
        return "progress", ""
    for rx, what in MILESTONES:
        if rx.search(text):
            return "milestone", what
    if text.startswith("Traceback (most recent call last)"):
        return "traceback", ""
    if _ERROR.search(text):
        return "error", ""
    found = signatures.match(text)
    if found is not None and found.severity == signatures.FATAL:
        return "error", ""
    if _WARNING.search(text):
        return "warning", warning_key(text)
    return "quiet", ""
