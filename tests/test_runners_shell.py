"""Command building is pure: these run no process and open no connection."""

import shlex
import signal

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


def test_detached_script_backgrounds_only_the_job_and_quotes_everything():
    s = shell.detached_script(["python", HOSTILE], env={"K": "v w"}, cwd="/w d",
                              log_path="/l d/log", pid_path="/l d/pid", exit_code_path="/l d/exit")
    first, start, wait = s.split("\n")
    assert first == "cd '/w d' && mkdir -p -- '/l d' && rm -f -- '/l d/pid' '/l d/exit' || exit 1"
    assert start.endswith(">'/l d/log' 2>&1 </dev/null &")
    assert shlex.quote(HOSTILE) in start and "env 'K=v w' python" in start
    assert start.startswith("setsid sh -c ")
    assert "cat '/l d/pid'" in wait


def test_signal_argv_targets_a_group_and_refuses_pid_0_and_1():
    kill = ["sh", "-c", 'kill -s "$1" -- "-$2"', "alaunch-kill"]
    assert shell.signal_argv(1234, signal.SIGTERM) == kill + ["TERM", "1234"]
    assert shell.signal_argv(59, "SIGKILL") == kill + ["KILL", "59"]
    for bad in (0, 1, -5):
        with pytest.raises(ValueError):
            shell.signal_argv(bad, "TERM")


def test_proc_stat_state_survives_spaces_and_parens_in_comm():
    assert shell.parse_proc_stat("42 (my (odd) prog) Z 1 42 42 0") == "Z"
    assert shell.parse_proc_stat("7 (sleep) S 1 7") == "S"
    assert shell.parse_proc_stat("garbage") is None
