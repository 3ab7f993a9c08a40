"""The laptop's side of the host scripts: the program text to run and the request to send.

The scripts are real files in this package (``stage.py``, ``collect.py``, ``launch.py``,
``follow.py``, their shared helpers in ``_prelude.py``), shipped as package data and read
with :mod:`importlib.resources`. :func:`program` is what runs on the host as
``python -S -c <program>``: the prelude followed by the part of the script one op needs, the
script's ``from _prelude import ...`` line removed (the names are already defined above it).
The same file runs directly in tests (``python launcher/remote/stage.py``), where that import
is real and its ``__main__`` block picks the op from the request.

:func:`request` is the one request encoding of every script (see ``_prelude.py``): an 8-byte
big-endian length then ``marshal.dumps(obj, 4)``, sent first on stdin; :func:`request_arg`
is the same frame as hex for the one script whose runner call has no stdin (the follower).
Marshal format 4 is read by CPython 3.4 and later (tests/test_remote_scripts.py round-trips
a request from this Python to every interpreter on the machine: 3.6 to 3.13).

Answers are framed (``_prelude.answer``): one line, :data:`ANSWER_MARK` then JSON, found by
:func:`answer` — the ONE parse of every host answer on the laptop — so a login shell that
prints (``.bashrc`` echoes, banners, a chatty ``set_env.sh``) cannot break a round trip;
binary answers start after the mark's line (:class:`AfterMark`). Stdlib only, imports
nothing from ``launcher``.
"""

from __future__ import annotations

import ast
import json
import marshal
import threading
from functools import lru_cache
from importlib import resources
from typing import Any

MARSHAL_VERSION = 4  # pinned: CPython >= 3.4 reads it; never the interpreter's default
SCRIPTS = ("stage", "collect", "launch", "follow", "probe", "prune", "attempt", "files", "slurm")
JOB_MARKER = "ALAUNCH_JOB_ID"  # env var on every process of a job (launch.py's MARKER)
ANSWER_MARK = "\x1eALAUNCH-ANSWER\x1e"  # _prelude.MARK: starts the answer line


class NoAnswer(ValueError):
    """A host printed no framed answer; ``output`` is (the tail of) what it did print."""

    def __init__(self, output: str):
        self.output = output[-300:]
        super().__init__(f"no answer in the host's output: {self.output!r}")


def answer(output: str | bytes) -> Any:
    """The JSON object of the last :data:`ANSWER_MARK` line in a host script's stdout;
    everything else (a shell's chatter, before or after) is ignored."""
    text = output.decode("utf-8", "replace") if isinstance(output, (bytes, bytearray)) else output
    at = text.rfind(ANSWER_MARK)
    if at < 0:
        raise NoAnswer(text)
    line = text[at + len(ANSWER_MARK):].split("\n", 1)[0]
    try:
        return json.loads(line)
    except ValueError:
        raise NoAnswer(text) from None


class AfterMark:
    """A write-only file object that drops what comes before the mark's line, then passes
    every byte to ``sink`` (a binary answer after a login shell's chatter)."""

    def __init__(self, sink: Any, limit: int = 1 << 20):
        self.sink, self.limit, self.head, self.open = sink, limit, b"", False

    def write(self, data: bytes) -> int:
        if self.open:
            return self.sink.write(data) or len(data)
        self.head += bytes(data)
        mark = ANSWER_MARK.encode() + b"\n"
        at = self.head.find(mark)
        if at < 0:
            self.head = self.head[-self.limit:]  # no mark yet: keep only a bounded tail
            return len(data)
        rest, self.head, self.open = self.head[at + len(mark):], b"", True
        if rest:
            self.sink.write(rest)
        return len(data)

    def flush(self) -> None:
        if hasattr(self.sink, "flush"):
            self.sink.flush()


def source(name: str) -> str:
    """The text of ``launcher/remote/<name>.py`` (package data)."""
    return resources.files(__package__).joinpath(f"{name}.py").read_text(encoding="utf-8")


_PARSING = threading.Lock()


@lru_cache(maxsize=None)
def program(name: str, op: str) -> str:
    """:func:`_program`, one thread at a time: two preflight threads building programs at once
    raised ``SystemError: AST constructor recursion depth mismatch`` from ``ast.parse`` (CPython
    3.11.7, seen in a cluster test's submit to 2 hosts)."""
    with _PARSING:
        return _program(name, op)


def _program(name: str, op: str) -> str:
    """What ``python -S -c`` runs on the host for ``op`` of script ``name``: the prelude, then
    the script's top-level statements without its module docstring, its prelude import, imports
    the prelude made already, its ``__main__`` block and every function ``op`` does not reach,
    then ``run({op: entry})``.

    Why not the whole file: compiling it is most of the cost we add to a host round trip
    (the 13 KB stage program 3.4 ms, the old INVENTORY text 0.5 ms, on this 2-core machine);
    an INVENTORY round trip measured 38.1 ms with the whole stage.py shipped, 34.6 ms with
    only its op, 34.3 ms before the scripts became files (median of 60, python -S locally).
    """
    entry = ops(name).get(op)
    if entry is None:
        raise ValueError(f"launcher/remote/{name}.py has no op {op!r} (valid: {', '.join(sorted(ops(name)))})")
    src = source(name)
    tree = ast.parse(src)
    lines = src.splitlines(keepends=True)
    funcs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    need, todo = {entry}, [entry]
    while todo:
        for node in ast.walk(funcs[todo.pop()]):
            if isinstance(node, ast.Name) and node.id in funcs and node.id not in need:
                need.add(node.id)
                todo.append(node.id)
    have = {a.asname or a.name for n in ast.parse(source("_prelude")).body if isinstance(n, ast.Import)
            for a in n.names}  # modules the prelude imported already
    kept = []
    for i, stmt in enumerate(tree.body):
        if (i == 0 and isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)) \
                or (isinstance(stmt, ast.ImportFrom) and stmt.module == "_prelude") or _is_main(stmt) \
                or (isinstance(stmt, ast.Import) and all((a.asname or a.name) in have for a in stmt.names)) \
                or (isinstance(stmt, ast.FunctionDef) and stmt.name not in need):
            continue
        start = min([stmt.lineno] + [d.lineno for d in getattr(stmt, "decorator_list", [])])
        kept.append("".join(lines[start - 1:stmt.end_lineno]))
    return source("_prelude") + "\n" + "\n\n".join(kept) + f"\n\nrun({{{op!r}: {entry}}})\n"


@lru_cache(maxsize=None)
def ops(name: str) -> dict[str, str]:
    """The ops of script ``name`` and their entry functions, from its
    ``if __name__ == "__main__": run({"op": function, ...})`` block."""
    if name not in SCRIPTS:
        raise ValueError(f"no host script {name!r} (valid: {', '.join(SCRIPTS)})")
    tree = ast.parse(source(name))
    imports = [n for n in tree.body if isinstance(n, ast.ImportFrom) and n.module == "_prelude"]
    mains = [n for n in tree.body if _is_main(n)]
    if len(imports) != 1 or len(mains) != 1:
        raise ValueError(f"launcher/remote/{name}.py must import the prelude once (from _prelude import ...) "
                         f"and end with one `if __name__ == \"__main__\": run({{...}})` block")
    call = mains[0].body[0].value  # type: ignore[attr-defined]  # _is_main checked: if ...: run({...})
    return {k.value: v.id for k, v in zip(call.args[0].keys, call.args[0].values)}


def _is_main(stmt: ast.stmt) -> bool:
    return isinstance(stmt, ast.If) and ast.unparse(stmt.test) in ("__name__ == '__main__'",)


def request(obj: Any) -> bytes:
    """The request frame for a host script (str, int, bool, None, float, lists, dicts)."""
    body = marshal.dumps(obj, MARSHAL_VERSION)
    return len(body).to_bytes(8, "big") + body


def request_arg(obj: Any) -> str:
    """The same frame as one argv element (hex), for a script run without stdin."""
    return request(obj).hex()


def decode(frame: bytes | str) -> Any:
    """The object in a request frame (bytes, or its hex): for tests and logs."""
    data = bytes.fromhex(frame) if isinstance(frame, str) else bytes(frame)
    size = int.from_bytes(data[:8], "big")
    if len(data) < 8 + size:
        raise ValueError(f"request frame cut short: {len(data)} bytes, header says {8 + size}")
    return marshal.loads(data[8:8 + size])
