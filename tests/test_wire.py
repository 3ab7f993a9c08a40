"""The marshal-in / JSON-out protocol of the fixed remote scripts (launcher.remote.wire)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from launcher.remote import wire

TRICKY = [
    None, True, False, 0, -7, 2**70, "", "plain", 'quo"te\\back', "new\nline\ttab\x00nul", "中文 и émoji 🚀",
    "bad-\udcff-utf8",  # a file name that is not UTF-8, as os.fsdecode gives it
    [], {}, {"a": [1, {"b": None}], "ключ": ["x", True]}, ("t", 1), {"set": sorted({3, 1, 2})},
]


def _dumps():
    ns: dict = {}
    exec(wire.source("_prelude"), ns)  # noqa: S102 - our own fixed script text
    return ns["dumps"]


@pytest.mark.parametrize("obj", TRICKY, ids=range(len(TRICKY)))
def test_dumps_is_json_that_reads_back_equal(obj):
    text = _dumps()(obj)
    expected = list(obj) if isinstance(obj, tuple) else obj
    assert json.loads(text) == expected
    assert text.isascii()


def test_dumps_refuses_what_json_cannot_say():
    with pytest.raises(TypeError, match="cannot encode bytes"):
        _dumps()(b"raw")


def test_a_remote_script_reads_marshal_and_never_imports_json():
    script = wire.source("_prelude") + "req = read_request()\nprint(dumps({'echo': req, 'json': 'json' in sys.modules}))\n"
    req = {"root": "/srv/a b/$(x)", "globs": {"logs": ["**/*.log"]}, "n": 3, "local": {"p": 1}}
    out = subprocess.run([sys.executable, "-S", "-c", script], input=wire.request(req), capture_output=True,
                         check=True).stdout
    assert json.loads(out) == {"echo": req, "json": False}
