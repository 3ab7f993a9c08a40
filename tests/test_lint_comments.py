"""scripts/lint-comments: two comments run together on one line are found; tool markers are not."""

import subprocess
import sys

from tests.conftest import ROOT

SCRIPT = ROOT / "scripts" / "lint-comments"


def _run(tmp_path, text):
    f = tmp_path / "m.py"
    f.write_text(text)
    return subprocess.run([sys.executable, str(SCRIPT), str(f)], capture_output=True, text=True)


def test_two_comments_on_one_line_are_found_with_file_and_line(tmp_path):
    got = _run(tmp_path, "A = 1\nB = 2  # about B  # about the line below\n")
    assert got.returncode == 1 and f"{tmp_path / 'm.py'}:2: two comments on one line" in got.stdout


def test_tool_markers_strings_and_single_comments_pass(tmp_path):
    text = ('import os  # the one we need  # noqa: F401\n'
            'x = "a  # b  # c"  # one comment\n'
            'y = 1  # type: ignore\n'
            'z = f()  # type: ignore[misc]  # why the marker is there\n'
            '# a whole-line comment  # with a hash in it is one comment too\n')
    got = _run(tmp_path, text)
    assert got.returncode == 0, got.stdout
