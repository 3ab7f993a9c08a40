"""The real-MindFormers layer of validation (``--validate``): the rendered YAML loaded by
``MindFormerConfig`` and, for a Llama model, ``LlamaConfig`` built from it (no weights).

It runs in a child process (``launcher/entry/mf_check.py``) in a temporary directory with
its output to a log there, started by the first check and kept for the next ones (the import
is paid once per process, as it was in-process: tests/test_validate_ms.py's 10 checks took
91 s with a child per check, about the old 7 s with one). Why: importing MindSpore/MindFormers
writes ``output/log`` into the current directory and its C++ loggers print on fds 1 and 2;
done in this process (as it was, in ``core/validate.py``) that meant ``os.chdir``, ``dup2``
of fds 1 and 2 and ``GLOG_v`` set in the environment while a pipeline's steps run in
threads of the same process — their cwd, output and environment changed under them.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from launcher.core.render import get_dotted
from launcher.errors import AlaunchError, InputError

CHILD = Path(__file__).resolve().parents[1] / "entry" / "mf_check.py"
TIMEOUT = 600.0  # seconds: the import alone is ~8 s on this 2-core machine


@dataclass(frozen=True)
class MindFormersCheck:
    skipped: bool
    detail: str


NOT_REQUESTED = MindFormersCheck(True, "MindFormers validation not requested (--validate adds it)")


def mindformers_available() -> bool:
    return importlib.util.find_spec("mindformers") is not None


class _Child:
    """The child process that checks (one per process, started by the first check): its own
    temporary directory as cwd, its stdout and stderr into ``import.log`` there, requests as
    lines on its stdin, answers as lines on a pipe of their own."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="alaunch-mf-"))
        self.count = 0
        env = {**os.environ, "GLOG_v": os.environ.get("GLOG_v", "3")}  # MindSpore's C++ log: errors only
        read, write = os.pipe()
        with open(self.dir / "import.log", "wb") as log:
            self.proc = subprocess.Popen([sys.executable, str(CHILD), str(write)], cwd=self.dir, env=env,
                                         stdin=subprocess.PIPE, stdout=log, stderr=log, pass_fds=(write,))
        os.close(write)
        self.answers = os.fdopen(read, "rb")

    def ask(self, text: str, model_type: str, timeout: float) -> dict:
        self.count += 1
        path = self.dir / f"rendered-{self.count}.yaml"
        path.write_text(text, encoding="utf-8")
        stdin = self.proc.stdin
        assert stdin is not None  # started with stdin=PIPE
        try:
            stdin.write((json.dumps({"path": str(path), "model_type": model_type}) + "\n").encode())
            stdin.flush()
        except OSError:
            raise self._gone() from None
        ready, _, _ = select.select([self.answers], [], [], timeout)
        if not ready:
            self.close()
            raise AlaunchError(f"--validate: the MindFormers check did not finish in {timeout:g} s")
        line = self.answers.readline()
        path.unlink(missing_ok=True)
        if not line:
            raise self._gone()
        return json.loads(line)

    def _gone(self) -> AlaunchError:
        log = (self.dir / "import.log").read_text(encoding="utf-8", errors="replace").strip().splitlines()[-1:]
        self.close()
        return AlaunchError(f"--validate: the MindFormers check ended without an answer (exit "
                            f"{self.proc.returncode}){': ' + log[0] if log else ''}")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.answers.close()
        shutil.rmtree(self.dir, ignore_errors=True)


_CHILD: list[_Child] = []
_LOCK = threading.Lock()  # one check at a time through the one child (pipeline steps are threads)


def _close_child() -> None:
    while _CHILD:
        _CHILD.pop().close()


atexit.register(_close_child)


def check_with_mindformers(text: str, config: dict, source: str | None = None,
                           timeout: float = TIMEOUT) -> MindFormersCheck:
    """Load ``text`` as MindFormers will (see the module docstring); a refusal is one
    :class:`InputError` naming the file (and ``model.model_config`` for LlamaConfig's). Without
    mindformers installed: ``skipped``, so callers can warn visibly instead of staying silent."""
    if not mindformers_available():
        return MindFormersCheck(True, "mindformers is not installed: the MindFormers validation layer was skipped "
                                      "(install the 'ms' extra to enable it)")
    model_type = str(get_dotted(config, "model.model_config.type", "") or "")
    with _LOCK:
        if not _CHILD or _CHILD[0].proc.poll() is not None:
            _close_child()
            _CHILD.append(_Child())
        child = _CHILD[0]
        try:
            answer = child.ask(text, model_type, timeout)
        except AlaunchError:
            _CHILD.clear()  # closed by ask: the next check starts a new one
            raise
    if "crashed" in answer:
        raise AlaunchError(f"--validate: the MindFormers check failed: {answer['crashed']}")
    if answer.get("refused") == "config":
        raise InputError(f"MindFormers refuses the rendered config: {answer['message']}", source=source)
    if answer.get("refused") == "model_config":
        raise InputError(f"MindFormers LlamaConfig refuses model_config: {answer['message']}", source=source,
                         key="model.model_config")
    return MindFormersCheck(False, answer["detail"])
