"""The one fan-out: run a callable on many hosts at once, keeping every host's result or error.

Every per-host operation goes through :func:`run_parallel` — staging (survey, link, send),
launch, status refresh, stop/cancel, fetch and hosts check — so concurrency, error wording
and "no host's failure is lost" are decided once.

As fabric's ``GroupResult``: a mapping item -> result or exception, with ``.succeeded`` and
``.failed``; :class:`GroupError` carries the whole map and its message lists every host.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

from launcher.errors import AlaunchError, RemoteError

K = TypeVar("K")
R = TypeVar("R")

# Threads only wait on ssh processes / sockets here (the crypto runs in the OpenSSH client,
# outside our GIL), so the bound is about file descriptors and the hosts' sshd, not CPU.
DEFAULT_MAX_WORKERS = int(os.environ.get("ALAUNCH_FANOUT", "64"))


def label(item: object) -> str:
    """How an item is named in errors: a Host/runner's ``name``, a node record's ``host``."""
    for attr in ("name", "host"):
        value = getattr(item, attr, None)
        if isinstance(value, str):
            return value
        if value is not None and isinstance(getattr(value, "name", None), str):
            return value.name
    return str(item)


def error_text(item: object, exc: BaseException) -> str:
    """``host: what happened`` for one failure (RemoteError messages already name the host)."""
    name = label(item)
    text = getattr(exc, "message", None) or (exc.strerror if isinstance(exc, OSError) and exc.strerror
                                             else f"{type(exc).__name__}: {exc}")
    return text if str(text).startswith(f"{name}:") else f"{name}: {text}"


class GroupError(AlaunchError):
    """Some hosts failed; ``failures`` maps each to its exception, the message lists them all."""

    def __init__(self, failures: dict):
        lines = [f"{len(failures)} host(s) failed:"] + [f"  {error_text(k, e)}" for k, e in failures.items()]
        super().__init__("\n".join(lines))
        self.failures = failures
        codes = {getattr(e, "exit_code", None) for e in failures.values()}
        if len(codes) == 1 and None not in codes:
            self.exit_code = codes.pop()  # type: ignore[assignment]  # an ExitCode, or a host's own code


class GroupResult(dict, Generic[K, R]):
    """item -> result, or item -> the exception it raised (input order kept)."""

    @property
    def succeeded(self) -> dict:
        return {k: v for k, v in self.items() if not isinstance(v, BaseException)}

    @property
    def failed(self) -> dict:
        return {k: v for k, v in self.items() if isinstance(v, BaseException)}

    def raise_on_failure(self) -> GroupResult:
        """One host failed: its own error (type and words kept). Several: a GroupError naming
        each. An exception that is not an AlaunchError/OSError is a bug: re-raised as is."""
        failed = self.failed
        for exc in failed.values():
            if not isinstance(exc, (AlaunchError, OSError)):
                raise exc
        if len(failed) == 1:
            item, exc = next(iter(failed.items()))
            if isinstance(exc, AlaunchError):
                raise exc
            raise RemoteError(label(item), exc.strerror or str(exc)) from exc
        if failed:
            raise GroupError(failed)
        return self


def run_parallel(items: Iterable[K], fn: Callable[[K], R], *, max_workers: int | None = None) -> GroupResult:
    """``fn(item)`` for every item at once (at most ``max_workers`` threads, default
    ``$ALAUNCH_FANOUT`` or 64); results keep the input order; nothing raised is lost."""
    items = list(items)
    result: GroupResult = GroupResult()
    if not items:
        return result
    workers = max(1, min(max_workers or DEFAULT_MAX_WORKERS, len(items)))
    if workers == 1:
        for item in items:
            try:
                result[item] = fn(item)
            except Exception as exc:  # kept per host, never lost
                result[item] = exc
        return result
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [(item, pool.submit(fn, item)) for item in items]
        for item, fut in futures:
            try:
                result[item] = fut.result()
            except Exception as exc:  # kept per host, never lost
                result[item] = exc
    return result
