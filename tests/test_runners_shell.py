"""Command building is pure: these run no process and open no connection."""

import shlex

import pytest

from launcher.errors import InputError
from launcher.runners import shell

HOSTILE = "a b'c\"d;e$(touch /tmp/pwned)`id`|&>x"


def test_every_argv_word_is_one_shell_word():
    line = shell.command_line(["echo", HOSTILE, "--flag=$HOME"])
    assert shlex.split(line) == ["exec", "echo", HOSTILE, "--flag=$HOME"]


def test_env_goes_through_env_argv_quoted():
    line = shell.command_line(["prog"], env={"A": HOSTILE, "B_2": "x y"})
    assert shlex.split(line) == ["exec", "env", f"A={HOSTILE}", "B_2=x y", "prog"]


@pytest.mark.parametrize("bad", ["1A", "A-B", "A B", "A;B", ""])
def test_bad_env_names_are_refused_with_the_rule(bad):
    with pytest.raises(InputError, match="invalid environment variable name"):
        shell.env_argv({bad: "v"})


def test_cwd_with_tilde_stays_expandable_but_rest_is_quoted():
    line = shell.command_line(["ls"], cwd="~/my dir;$(x)")
    assert line.startswith('cd "$HOME"/\'my dir;$(x)\' && exec ls')
    assert shell.quote_path("/abs/p q") == "'/abs/p q'"
    assert shell.quote_path("~") == '"$HOME"'


def test_sftp_paths_are_relative_to_home_not_shell_expanded():
    assert shell.sftp_path("~/a b") == "a b"
    assert shell.sftp_path("/x/$(y)") == "/x/$(y)"
