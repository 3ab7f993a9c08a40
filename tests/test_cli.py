from launcher import __version__
from launcher.errors import ExitCode, InputError


def test_version(run_cli):
    code, out, _ = run_cli("--version")
    assert code == 0
    assert out.strip() == f"alaunch {__version__}"


def test_help_lists_verbs_with_one_line_help(run_cli):
    code, out, _ = run_cli("--help")
    assert code == 0
    assert "Usage: alaunch" in out
    assert "--state-dir" in out


def test_unknown_verb_is_a_usage_error(run_cli):
    code, out, err = run_cli("no-such-verb")
    assert code == ExitCode.USAGE
    assert "no-such-verb" in err


def test_input_error_names_file_line_and_key():
    err = InputError("slots must be >= 1, got 0", source="hostfiles/x", line=3)
    assert str(err) == "hostfiles/x:3: slots must be >= 1, got 0"
    assert err.exit_code == ExitCode.USAGE
    err = InputError("unknown key", source="jobs/a.yaml", key="overrides.model")
    assert str(err) == "jobs/a.yaml: overrides.model: unknown key"
