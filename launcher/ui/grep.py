"""The log viewer's grep, in a child process with a time limit.

A user's regular expression can backtrack for minutes (``(a+)+$`` on 30 characters), and
Python's ``re`` holds the GIL while it matches: in a worker thread it still froze every page
of the dashboard (measured: /api/jobs waited the grep's 1.5 s out). A child process has its
own interpreter; past ``TIMEOUT_S`` it is killed and the request refused in one line.
"""

from __future__ import annotations

import multiprocessing
import re
import threading
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

from launcher.errors import InputError

TIMEOUT_S = 5.0


def _matching(pattern: str, texts: Sequence[str]) -> list[int]:
    rx = re.compile(pattern)
    return [i for i, text in enumerate(texts) if rx.search(text)]


class Grep:
    """One worker process, started on first use and replaced after a pattern that ran too long."""

    def __init__(self, timeout: float = TIMEOUT_S):
        self.timeout = timeout
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
            return self._pool

    @staticmethod
    def check(pattern: str) -> None:
        """A pattern that does not compile is the user's error, said in one line."""
        try:
            re.compile(pattern)
        except re.error as exc:
            raise InputError(f"not a valid regular expression ({exc})", key="grep") from None

    def matching(self, pattern: str, texts: Sequence[str]) -> list[int]:
        """Indices of ``texts`` that ``pattern`` matches (``re.search``)."""
        self.check(pattern)
        pool = self._executor()
        future = pool.submit(_matching, pattern, list(texts))
        try:
            return future.result(timeout=self.timeout)
        except FutureTimeout:
            self._kill(pool)
            raise InputError(f"the pattern ran for more than {self.timeout:g} s (it backtracks); "
                             "simplify it, e.g. without nested repeats like (a+)+", key="grep") from None

    def _kill(self, pool: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._pool is pool:
                self._pool = None
        for process in list(getattr(pool, "_processes", {}).values()):
            process.kill()
        pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
