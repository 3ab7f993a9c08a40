"""How the laptop and the fixed remote scripts talk on the hot paths: marshal in, JSON out.

Why not JSON both ways: ``import json`` pulls ``re``, ``enum`` and ``functools`` into every
``python -S`` on the host; benchmarks/bench_transport.py measures a host script's round trip
at 42.6 ms with a json request and 26.8 ms with this prelude, and the no-op re-stage and the
fetch listing are one such process each.
``marshal`` is built into the interpreter (nothing to import) and reads what the laptop's
Python writes (format 4, Python >= 3.4); the prelude also has the 1 MiB pipe and the
host-side cache files the scripts share. Answers stay JSON, written by :data:`PRELUDE`'s
``dumps`` with the C string escaper from ``_json`` (the same escaping ``json.dumps`` uses,
so file names that are not UTF-8 come back as the same surrogate-escaped text), because
the laptop should never unmarshal bytes a host produced.

The request travels on stdin, never on the command line, like everything else remote.
"""

from __future__ import annotations

import marshal
from typing import Any

MARSHAL_VERSION = 4

PRELUDE = r'''
import marshal, os, sys
def read_request():
    return marshal.loads(sys.stdin.buffer.read())
try:
    from _json import encode_basestring_ascii as _q
except ImportError:
    from json.encoder import py_encode_basestring_ascii as _q
def widen_pipe(fd):
    """1 MiB pipe (F_SETPIPE_SZ, Linux): bulk bytes in 1 MiB reads/writes. Best effort."""
    try:
        import fcntl
        fcntl.fcntl(fd, 1031, 1 << 20)
    except (ImportError, OSError):
        return
def load_cache(path):
    """A host-side cache file (marshal); missing or damaged is empty: it is only a hint."""
    try:
        with open(path, "rb") as fh:
            data = marshal.load(fh)
    except (OSError, ValueError, EOFError, TypeError):
        return {}
    return data if isinstance(data, dict) else {}
def save_cache(path, data):
    """Write a host-side cache atomically; a read-only job dir just keeps no cache."""
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = path + ".tmp.%d" % os.getpid()
        with open(tmp, "wb") as fh:
            marshal.dump(data, fh)
        os.replace(tmp, path)
    except OSError:
        return
def dumps(o):
    if o is None:
        return "null"
    if o is True or o is False:
        return "true" if o else "false"
    if isinstance(o, int):
        return str(int(o))
    if isinstance(o, str):
        return _q(o)
    if isinstance(o, dict):
        return "{" + ",".join(_q(str(k)) + ":" + dumps(v) for k, v in o.items()) + "}"
    if isinstance(o, (list, tuple, set, frozenset)):
        return "[" + ",".join(dumps(v) for v in o) + "]"
    raise TypeError("cannot encode %s" % type(o).__name__)
'''


def request(obj: Any) -> bytes:
    """A request for a script built on :data:`PRELUDE` (str, int, bool, None, lists, dicts)."""
    return marshal.dumps(obj, MARSHAL_VERSION)
