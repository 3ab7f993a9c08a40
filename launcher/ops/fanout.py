"""Run one callable on many hosts at once (threads), keeping every host's result or error.

As fabric's ``GroupResult``: a mapping host -> result or exception, with ``.succeeded`` and
``.failed``; :class:`GroupError` carries the whole map so no host's failure is lost.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Generic, Iterable, TypeVar

from launcher.errors import AlaunchError

K = TypeVar("K")
R = TypeVar("R")


class GroupError(AlaunchError):
    """Some hosts failed; ``failures`` maps each to its exception, message lists them all."""

    def __init__(self, failures: dict):
        lines = [f"{len(failures)} host(s) failed:"]
        for key, exc in failures.items():
            text = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
            name = getattr(key, "name", key)
            lines.append(f"  {text}" if str(text).startswith(f"{name}:") else f"  {name}: {text}")
        super().__init__("\n".join(lines))
        self.failures = failures


class GroupResult(dict, Generic[K, R]):
    """host -> result, or host -> the exception it raised."""

    @property
    def succeeded(self) -> dict:
        return {k: v for k, v in self.items() if not isinstance(v, BaseException)}

    @property
    def failed(self) -> dict:
        return {k: v for k, v in self.items() if isinstance(v, BaseException)}

    def raise_on_failure(self) -> "GroupResult":
        if self.failed:
            raise GroupError(self.failed)
        return self


def run_parallel(items: Iterable[K], fn: Callable[[K], R], *, max_workers: int = 32) -> GroupResult:
    """``fn(item)`` for every item at once; results keep the input order."""
    items = list(items)
    result: GroupResult = GroupResult()
    if not items:
        return result
    with ThreadPoolExecutor(max_workers=min(max_workers, len(items))) as pool:
        futures = [(item, pool.submit(fn, item)) for item in items]
        for item, fut in futures:
            try:
                result[item] = fut.result()
            except Exception as exc:  # kept per host, never lost
                result[item] = exc
    return result
