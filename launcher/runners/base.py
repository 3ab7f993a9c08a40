"""The one transport interface (SkyPilot's CommandRunner): exec, the host call, the follower's process.

Every way of reaching a node (local subprocess, OpenSSH client, paramiko) is one
:class:`CommandRunner` subclass with the same primitives, so everything above (hosts check,
stage, launch, follow, collect) is written once:

- :meth:`CommandRunner.exec`: argv with stdin streamed in as byte chunks and stdout returned
  or written to a file object as it arrives; the exit code is data. Staging, launch and
  fetch run their fixed host scripts (launcher/remote/) this way, so user values never
  become shell text.
- :meth:`CommandRunner.call`: the one host call (a host program of launcher/remote/ with the
  runner's interpreter, its answer decoded), built on exec.
- :meth:`~CommandRunner.process_argv`: the follower's process for a node (an ``ssh`` client,
  or the program itself here); paramiko's runner has none and :meth:`~CommandRunner.stream`s.
- Lifecycle: :meth:`~CommandRunner.ping` (abstract), ``connect``, ``warm``, ``single_use``,
  ``close``. :meth:`~CommandRunner.download` / :meth:`~CommandRunner.upload_stream` are built
  on exec (fetch's fallback, a pipeline's relay).

Abstract: ``exec`` and ``ping`` — what every production path needs. (``put``/``get``/
``put_tar`` are gone: production never called them; ``run`` is a convenience of the runners
that have one (each implements its own), for tools and tests.)

Results are typed; failures are :class:`RemoteError` subclasses that name the host and say
what happened.
"""

from __future__ import annotations

import itertools
import subprocess
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any, BinaryIO, Protocol, cast, runtime_checkable

from launcher.core.hostfile import Host
from launcher.errors import RemoteError
from launcher.remote import wire
from launcher.runners import shell

REMOTE_PYTHON = "python3"  # a remote host's interpreter unless the job was given or found another

LineCallback = Callable[[str], "bool | None"]  # return False to stop streaming


@dataclass(frozen=True)
class CommandResult:
    host: str
    argv: tuple[str, ...]
    exit_code: int | None  # None: stopped (stream) before the command ended
    stdout: str
    stderr: str
    duration: float  # seconds

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


@dataclass(frozen=True)
class ExecResult:
    """What :meth:`CommandRunner.exec` returns: bytes, and the exit code as data."""

    host: str
    exit_code: int
    stdout: bytes
    stderr: bytes
    duration: float

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def text(self) -> str:
        return self.stdout.decode("utf-8", "replace")

    def error_line(self) -> str:
        lines = self.stderr.decode("utf-8", "replace").strip().splitlines()
        return lines[-1] if lines else f"exit code {self.exit_code}"


class CommandFailed(RemoteError):
    """A command ran and exited non-zero (``check=True``)."""

    def __init__(self, result: CommandResult):
        tail = (result.stderr.strip() or result.stdout.strip()).splitlines()[-3:]
        cmd = shell.join_argv(result.argv)
        if len(cmd) > 120:
            cmd = cmd[:117] + "..."
        msg = f"`{cmd}` exited {result.exit_code}"
        if tail:
            msg += ": " + " | ".join(tail)
        super().__init__(result.host, msg)
        self.result = result


class ConnectError(RemoteError):
    """The host could not be reached or would not let us in; ``reason`` is a short phrase."""

    def __init__(self, host: str, reason: str, hint: str = ""):
        super().__init__(host, reason + (f" ({hint})" if hint else ""))
        self.reason = reason
        self.hint = hint


class HostKeyError(ConnectError):
    """Unknown or changed host key: never accepted silently."""


class CommandTimeout(RemoteError):
    pass


@runtime_checkable
class LineStreamer(Protocol):
    """A runner that reads a command's stdout line by line itself: what the follower needs of a
    runner with no local process to read (paramiko's :class:`~launcher.runners.SSHRunner`; the
    others give :meth:`CommandRunner.process_argv`). A capability, not part of the interface."""

    name: str

    def close(self) -> None:
        """Release the connection (idempotent)."""

    def stream(self, argv: Sequence[str], on_line: LineCallback, *,
               env: Mapping[str, str] | None = None, cwd: str | None = None,
               stop: threading.Event | None = None, timeout: float | None = None) -> CommandResult:
        """Run argv, calling ``on_line`` per stdout line as it arrives; stops when ``stop`` is
        set or ``on_line`` returns False (then ``exit_code`` is None)."""
        ...


class CommandRunner(ABC):
    """Run commands and move files on one host. Constructing one touches no network.

    ``python`` is the interpreter that runs the host programs (``launcher/remote/``) there: the
    runner's default (this interpreter on this machine, ``python3`` on a remote host) unless
    the job recorded another for that host (``--bin-dir``, a Slurm target's ``python:``), set
    once with :meth:`using`."""

    default_python = REMOTE_PYTHON
    local = False  # this machine, no connection (LocalRunner): nothing to relay to, no handshake

    def __init__(self, host: Host, python: str | None = None):
        self.host = host
        self.python = python or self.default_python

    @property
    def name(self) -> str:
        return self.host.name

    def using(self, python: str | None) -> CommandRunner:
        """Run host programs with ``python`` (None: keep the runner's default). Returns the runner."""
        if python:
            self.python = python
        return self

    # --- the one host call
    def program_argv(self, script: str, op: str, *, site: bool = False) -> list[str]:
        """The argv that runs ``op`` of host script ``script`` (``launcher/remote/<script>.py``)
        with this host's interpreter: ``python -S -c PROGRAM``, or without ``-S`` when the op
        needs the host's site packages (``site``: the probe looks for MindSpore)."""
        return [self.python, *(() if site else ("-S",)), "-c", wire.program(script, op)]

    def call(self, script: str, request: Mapping[str, Any], *, timeout: float | None = None,
             what: str | None = None, stdin: Iterable[bytes] = (), site: bool = False) -> Any:
        """Run ``request["op"]`` of host script ``script`` on the host and return its answer.

        The request goes first on stdin as one marshal frame (``wire.request``), then ``stdin``'s
        chunks (a tar stream); the answer is read by ``wire.answer`` (a login shell's chatter
        skipped). Every failure is one :class:`RemoteError` naming the host and ``what`` (default
        ``"<script> <op>"``): the connection's own (:class:`ConnectError`, :class:`CommandTimeout`),
        ``<what> failed: <its last stderr line>`` for a non-zero exit, ``<what> gave no answer: ...``
        when it printed none. Why one method: 15 call sites built this by hand through three
        private wrappers that differed only in timeouts and error wording."""
        what = what or f"{script} {request['op']}"
        result = self.exec(self.program_argv(script, request["op"], site=site),
                           itertools.chain([wire.request(dict(request))], stdin), timeout=timeout)
        if not result.ok:
            raise RemoteError(self.name, f"{what} failed: {result.error_line()}")
        try:
            return wire.answer(result.stdout)
        except wire.NoAnswer as exc:
            raise RemoteError(self.name, f"{what} gave no answer: {exc.output[-200:]!r}") from None

    # --- primitives each runner implements
    @abstractmethod
    def exec(self, argv: Sequence[str], stdin: Iterable[bytes] = (), *, stdout: BinaryIO | None = None,
             timeout: float | None = None) -> ExecResult:
        """Run ``argv`` (no shell on this side; quoted for the remote one), streaming ``stdin``
        chunks in; stdout goes to ``stdout`` (a binary file object, written as it arrives; the
        result's ``stdout`` is then empty) or into the result. The exit code is data;
        connection failures raise :class:`ConnectError`, a timeout :class:`CommandTimeout`."""

    @abstractmethod
    def ping(self) -> float:
        """One round trip on the open connection, in seconds (connects first if needed)."""

    def close(self) -> None:  # noqa: B027 (a default on purpose: nothing to release without a connection)
        """Release the connection (idempotent)."""

    def process_argv(self, argv: Sequence[str], fresh: bool = False) -> list[str] | None:
        """The argv of a process on THIS machine that runs ``argv`` on the host, the command's
        stdout its stdout (the follower reads every node's such pipe from one thread), or None
        when this runner has none (paramiko: :meth:`stream` is the way). ``fresh``: over a new
        connection of its own (a reconnect after a lost link)."""
        return None

    # --- built on exec()
    def check(self, argv: Sequence[str], stdin: Iterable[bytes] = (), timeout: float | None = None,
              what: str = "command") -> ExecResult:
        """:meth:`exec`, raising when the command exits non-zero (``what`` names it)."""
        result = self.exec(argv, stdin, timeout=timeout)
        if not result.ok:
            raise RemoteError(self.name, f"{what} failed: {result.error_line()}")
        return result

    def connect(self) -> None:
        """Connect now (``ping`` connects too, and times a round trip)."""
        self.ping()

    def single_use(self) -> CommandRunner:
        """Say this runner makes ONE round trip (``status``, ``cancel``): an SSH runner then
        opens no master connection of its own — it rides on one that is up, else connects
        plainly, as pdsh does. Returns the runner. Nothing to do where there is no connection."""
        return self

    def warm(self) -> None:  # noqa: B027 (a default on purpose: nothing to start without a connection)
        """Start connecting in the background (so the handshake overlaps local work); the next
        exec waits for it. Nothing to do where there is no connection."""

    def download(self, remote_path: str, fileobj: BinaryIO, offset: int = 0) -> int:
        """Write the remote file (from byte ``offset``) into ``fileobj``; returns bytes written.

        One ``tail -c +N`` (or ``cat``) through :meth:`exec`: streamed, never whole in memory,
        resumable by passing the size already fetched.
        """
        counter = _Counting(fileobj)
        remote = ["tail", "-c", f"+{offset + 1}", "--", remote_path] if offset else ["cat", "--", remote_path]
        result = self.exec(remote, stdout=cast(BinaryIO, counter))  # a writer that counts
        if not result.ok:
            raise CommandFailed(CommandResult(self.name, tuple(remote), result.exit_code, "",
                                              result.stderr.decode(errors="replace"), result.duration))
        return counter.count

    def upload_stream(self, chunks: Iterable[bytes], remote_path: str, mode: int = 0o644) -> int:
        """Write chunks to ``remote_path`` atomically (temp name, then rename); returns bytes sent."""
        sent = [0]

        def counted() -> Iterable[bytes]:
            for c in chunks:
                sent[0] += len(c)
                yield c

        script = ('set -e; d=$(dirname -- "$1"); mkdir -p -- "$d"; t="$1.part.$$"; '
                  'cat > "$t"; chmod "$2" "$t"; mv -f -- "$t" "$1"')
        remote = ["sh", "-c", script, "alaunch-upload", remote_path, f"{mode:o}"]
        result = self.exec(remote, counted())
        if not result.ok:
            raise CommandFailed(CommandResult(self.name, tuple(remote), result.exit_code, "",
                                              result.stderr.decode(errors="replace"), result.duration))
        return sent[0]

    def __enter__(self) -> CommandRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def feed_stdin(pipe: IO[bytes], chunks: Iterable[bytes]) -> None:
    """Write ``chunks`` to a subprocess's stdin ``pipe`` and close it.

    A remote side that ends early closes the pipe; that is not an error here: its exit code
    and stderr, read by the caller, say why.
    """
    import contextlib

    with contextlib.suppress(BrokenPipeError):
        for chunk in chunks:
            pipe.write(chunk)
    with contextlib.suppress(BrokenPipeError):
        pipe.close()


def widen_pipe(f: IO[bytes]) -> None:
    """Grow a pipe to 1 MiB (Linux ``F_SETPIPE_SZ``): a bulk stream then moves in 1 MiB reads
    instead of 64 KiB ones, 16x fewer wake-ups and Python loop turns per MiB. Best effort."""
    try:
        import fcntl
        fcntl.fcntl(f.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 20)
    except (ImportError, OSError, ValueError):
        return


SMALL_REQUEST = 1 << 20


def _run_small(argv: Sequence[str], data: bytes, timeout: float | None) -> tuple[int | None, bytes, bytes]:
    """A request in memory and the answer returned: ``communicate`` moves both through one
    ``selectors`` loop in this thread — no reader threads, two fewer thread starts per host
    and command (at 64 hosts, 128 threads less per fan-out)."""
    proc = subprocess.Popen(list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(data, timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return None, b"", b""
    return proc.returncode, out, err


def run_piped(argv: Sequence[str], stdin: Iterable[bytes] = (), stdout: BinaryIO | None = None,
              timeout: float | None = None) -> tuple[int | None, bytes, bytes]:
    """Run ``argv`` with ``stdin`` chunks streamed in, through 1 MiB pipes; stdout goes to
    ``stdout`` (a binary file object, written as it arrives) or is returned.

    Returns (exit code, stdout, stderr); the code is None when ``timeout`` passed (the
    process was killed). One implementation for every subprocess that moves bytes (the
    local node, the ssh client, the local fetch), so draining and stdin errors are alike.
    """
    if stdout is None and isinstance(stdin, (list, tuple)) and sum(map(len, stdin)) <= SMALL_REQUEST:
        return _run_small(argv, b"".join(stdin), timeout)
    proc = subprocess.Popen(list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out_pipe, err_pipe, in_pipe = proc.stdout, proc.stderr, proc.stdin
    assert out_pipe is not None and err_pipe is not None and in_pipe is not None  # all PIPE
    widen_pipe(out_pipe)
    widen_pipe(in_pipe)
    out, err = bytearray(), bytearray()

    def pump_out() -> None:
        if stdout is None:
            while block := out_pipe.read1(1 << 20):  # type: ignore[attr-defined]  # a BufferedReader's
                out.extend(block)
            return
        # One buffer, reused: the writer gets a view of it and must take the bytes before it
        # returns (a file, a hasher, BytesIO: they copy). A new 1 MiB object per read cost up
        # to 1 CPU-s of page faults per 512 MiB fetched (glibc gives a thread's freed 1 MiB
        # back to the kernel, so each read faults its pages in again: 25-41k faults per fetch).
        view = memoryview(bytearray(1 << 20))
        while n := out_pipe.readinto1(view):  # type: ignore[attr-defined]  # a BufferedReader's
            stdout.write(view[:n])

    readers = [threading.Thread(target=pump_out, daemon=True),
               threading.Thread(target=lambda: err.extend(err_pipe.read()), daemon=True)]
    for t in readers:
        t.start()
    feed_stdin(in_pipe, stdin)
    # Wait for the end of stdout first (a thread join: woken at once), then for the exit.
    # ``Popen.wait(timeout)`` polls with sleeps doubling from 0.5 ms: a host call that ended
    # at 20 ms was seen at 31.5 ms (measured: a no-op fetch's LIST 31 ms of waiting per call).
    deadline = None if timeout is None else time.monotonic() + timeout
    readers[0].join(None if deadline is None else max(0.0, deadline - time.monotonic()))
    try:
        code: int | None = proc.wait(timeout=None if deadline is None else max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        code = None
    for t in readers:
        t.join()
    return code, bytes(out), bytes(err)


class _Counting:
    """A binary file wrapper that counts what is written through it."""

    def __init__(self, f: BinaryIO):
        self.f, self.count = f, 0

    def write(self, data: bytes) -> int:
        n = self.f.write(data)
        self.count += len(data)
        return n if n is not None else len(data)

    def flush(self) -> None:
        self.f.flush()
