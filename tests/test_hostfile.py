"""Hostfiles: DeepSpeed's format, our extra keys, filters, and one precise line per mistake."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from launcher.core.hostfile import (
    Host,
    apply_filters,
    format_hostfile,
    local_hosts,
    parse_hostfile,
    read_hostfile,
)
from launcher.errors import ExitCode, InputError

ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- valid files

def test_comments_blank_lines_and_trailing_comments():
    text = "# cluster\n\nworker-0 slots=8   # first node\n   \n\tworker-1 slots=4 # it's the second\n"
    hosts = parse_hostfile(text, source="hf")
    assert [(h.name, h.slots, h.line) for h in hosts] == [("worker-0", 8, 3), ("worker-1", 4, 5)]
    assert hosts[0].slot_ids == tuple(range(8))
    assert hosts[0].source == "hf"


def test_all_keys_and_quoting():
    hosts = parse_hostfile(
        'gpu-a slots=2 user=ma port=2222 identity=~/.ssh/id_ed25519 workdir="/srv/my jobs"\n'
        "gpu-b slots=1 workdir=/srv/a#b\n", source="hf")
    a, b = hosts
    assert (a.user, a.port, a.identity, a.workdir) == ("ma", 2222, "~/.ssh/id_ed25519", "/srv/my jobs")
    assert a.remote_workdir == "/srv/my jobs"
    assert b.workdir == "/srv/a#b"  # '#' inside a word is literal
    assert b.remote_workdir == "/srv/a#b"
    assert parse_hostfile("x slots=1\n")[0].remote_workdir == "~"


def test_aliases_ipv4_ipv6_and_local():
    hosts = parse_hostfile("my_alias.prod slots=1\n10.0.0.2 slots=2\nfe80::1 slots=3\n::1 slots=1\n"
                           "localhost slots=2\n")
    assert [h.name for h in hosts] == ["my_alias.prod", "10.0.0.2", "fe80::1", "::1", "localhost"]
    assert [h.is_local for h in hosts] == [False, False, False, True, True]
    assert not parse_hostfile("localhost slots=1 port=2222")[0].is_local


def test_example_hostfiles_parse():
    expect = {"one-card": [1], "one-node-8": [8], "two-nodes-8": [8, 8], "localhost": [2]}
    for name, slots in expect.items():
        hosts = read_hostfile(ROOT / "hostfiles" / name)
        assert [h.slots for h in hosts] == slots, name
    two = read_hostfile(ROOT / "hostfiles" / "two-nodes-8")
    assert {h.user for h in two} == {"ma"} and all(h.workdir for h in two)
    assert read_hostfile(ROOT / "hostfiles" / "localhost")[0].is_local


def test_local_hosts():
    (h,) = local_hosts(2)
    assert (h.name, h.slots, h.slot_ids, h.is_local) == ("localhost", 2, (0, 1), True)
    with pytest.raises(InputError, match=r"--local: slots must be an integer >= 1, got 0"):
        local_hosts(0)


def test_format_round_trip():
    hosts = parse_hostfile('a slots=2 user=u port=22 identity=/k workdir="/s p"\nb slots=1\n')
    again = parse_hostfile(format_hostfile(hosts))
    strip = [(h.name, h.slots, h.user, h.port, h.identity, h.workdir) for h in hosts]
    assert strip == [(h.name, h.slots, h.user, h.port, h.identity, h.workdir) for h in again]
    filtered = apply_filters(hosts, include="a:1")
    assert "# uses slots 1" in format_hostfile(filtered)


# --------------------------------------------------------------------------- filters

HOSTS = parse_hostfile("worker-0 slots=4\nworker-1 slots=4\nfe80::1 slots=2\n", source="hf")


def _view(hosts: list[Host]) -> list[tuple[str, tuple[int, ...]]]:
    return [(h.name, h.slot_ids) for h in hosts]


def test_filter_none_is_identity():
    assert apply_filters(HOSTS) == list(HOSTS)
    assert apply_filters(HOSTS, include="", exclude="") == list(HOSTS)


def test_include_deepspeed_example():
    # DeepSpeed: -i "worker-0@worker-1:0,2" uses all slots on worker-0 and [0, 2] on worker-1.
    got = apply_filters(HOSTS, include="worker-0@worker-1:0,2")
    assert _view(got) == [("worker-0", (0, 1, 2, 3)), ("worker-1", (0, 2))]
    assert [h.workers for h in got] == [4, 2]
    assert got[1].slots == 4  # capacity unchanged; workers follow slot_ids


def test_include_keeps_hostfile_order_and_dedups():
    got = apply_filters(HOSTS, include="worker-1:2,2,0@worker-0:1")
    assert _view(got) == [("worker-0", (1,)), ("worker-1", (2, 0))]
    merged = apply_filters(HOSTS, include="worker-0:0@worker-0:3")
    assert _view(merged) == [("worker-0", (0, 3))]


def test_exclude_deepspeed_example_and_whole_host():
    # DeepSpeed: -e "worker-1:0" uses everything except slot 0 on worker-1.
    got = apply_filters(HOSTS, exclude="worker-1:0")
    assert _view(got) == [("worker-0", (0, 1, 2, 3)), ("worker-1", (1, 2, 3)), ("fe80::1", (0, 1))]
    got = apply_filters(HOSTS, exclude="worker-0@fe80::1")
    assert _view(got) == [("worker-1", (0, 1, 2, 3))]


def test_exclude_all_slots_drops_host():
    got = apply_filters(HOSTS, exclude="worker-1:0,1,2,3")
    assert [h.name for h in got] == ["worker-0", "fe80::1"]


def test_ipv6_filters():
    assert _view(apply_filters(HOSTS, include="fe80::1:1")) == [("fe80::1", (1,))]
    assert _view(apply_filters(HOSTS, include="[fe80::1]:0")) == [("fe80::1", (0,))]
    assert _view(apply_filters(HOSTS, include="fe80::1")) == [("fe80::1", (0, 1))]


def test_filters_compose_on_already_filtered_hosts():
    first = apply_filters(HOSTS, include="worker-0:1,3")
    assert _view(apply_filters(first, exclude="worker-0:1")) == [("worker-0", (3,))]
    with pytest.raises(InputError, match=r"slot 0 is not on host 'worker-0' \(its slots: 1,3\)"):
        apply_filters(first, include="worker-0:0")


# --------------------------------------------------------------------------- malformed

BAD_HOSTFILES = [
    # (id, text, line, phrase)
    ("duplicate", "a slots=1\nb slots=1\na slots=2\n", 3, "duplicate host 'a' (first on line 1)"),
    ("slots-zero", "a slots=0\n", 1, "slots must be an integer >= 1, got 0"),
    ("slots-negative", "a slots=-2\n", 1, "slots must be an integer >= 1, got '-2'"),
    ("slots-float", "a slots=1.5\n", 1, "slots must be an integer >= 1, got '1.5'"),
    ("slots-word", "\n\na slots=eight\n", 3, "slots must be an integer >= 1, got 'eight'"),
    ("missing-slots", "a user=ma\n", 1, "missing slots=N for host 'a'"),
    ("bare-host", "# c\na\n", 2, "missing slots=N for host 'a'"),
    ("bare-number", "a 8\n", 1, "expected key=value after the host name, got '8' (e.g. 'slots=8')"),
    ("typo-slot", "a slot=8\n", 1, "unknown key 'slot' (did you mean 'slots'?)"),
    ("typo-prot", "a slots=1 prot=22\n", 1, "unknown key 'prot' (did you mean 'port'?)"),
    ("unknown-key", "a slots=1 gpus=8\n", 1, "unknown key 'gpus'; valid keys: slots, user, port, identity, workdir"),
    ("key-twice", "a slots=1 slots=2\n", 1, "key 'slots' given twice for host 'a'"),
    ("empty-value", "a slots=1 user=\n", 1, "empty value for 'user'"),
    ("port-word", "a slots=1 port=ssh\n", 1, "port must be an integer from 1 to 65535, got 'ssh'"),
    ("port-range", "a slots=1 port=70000\n", 1, "port must be an integer from 1 to 65535, got '70000'"),
    ("port-zero", "a slots=1 port=0\n", 1, "port must be an integer from 1 to 65535, got '0'"),
    ("host-semicolon", "a;rm slots=1\n", 1, "invalid host name 'a;rm'"),
    ("host-subshell", "$(touch /tmp/x) slots=1\n", 1, "invalid host name '$(touch'"),
    ("host-backtick", "`id` slots=1\n", 1, "invalid host name '`id`'"),
    ("host-dash", "-oProxyCommand=x slots=1\n", 1, "line starts with '-oProxyCommand=x'"),
    ("host-leading-dash", "-evil slots=1\n", 1, "invalid host name '-evil'"),
    ("host-quoted-space", '"a b" slots=1\n', 1, "invalid host name 'a b'"),
    ("key-first", "slots=1 a\n", 1, "line starts with 'slots=1'"),
    ("unbalanced-quote", 'a slots=1 workdir="/x\n', 1, "cannot split line (No closing quotation)"),
    ("user-meta", "a slots=1 user=ma;id\n", 1, "invalid user 'ma;id'"),
    ("workdir-relative", "a slots=1 workdir=jobs\n", 1, "workdir must be absolute or start with '~/'"),
    ("workdir-traversal", "a slots=1 workdir=/srv/../etc\n", 1, "workdir must not contain '..'"),
    ("identity-dash", "a slots=1 identity=-oX\n", 1, "identity must not start with '-'"),
    ("host-dotdot", "../etc slots=1\n", 1, "invalid host name '../etc'"),
    ("host-dots-only", ".. slots=1\n", 1, "invalid host name '..'"),
    ("host-inner-dotdot", "a..b slots=1\n", 1, "invalid host name 'a..b'"),
    ("slots-huge", "a slots=99999999999\n", 1, "slots must be at most 1024, got 99999999999"),
    ("control-char", "a slots=1\x1b[2J\n", 1, "control character in line"),
]


@pytest.mark.parametrize("text,line,phrase", [c[1:] for c in BAD_HOSTFILES],
                         ids=[c[0] for c in BAD_HOSTFILES])
def test_malformed_hostfile(text, line, phrase):
    with pytest.raises(InputError) as info:
        parse_hostfile(text, source="hosts.txt")
    msg = str(info.value)
    assert msg.startswith(f"hosts.txt:{line}: "), msg
    assert phrase in msg, msg
    assert "\n" not in msg
    assert info.value.exit_code == ExitCode.USAGE
    assert (info.value.source, info.value.line) == ("hosts.txt", line)


@pytest.mark.parametrize("text", ["", "\n\n", "# only comments\n   # more\n"])
def test_empty_hostfile(text):
    with pytest.raises(InputError, match=r"^hosts.txt: no hosts in hostfile; expected lines like "
                                         r"'worker-0 slots=8'$"):
        parse_hostfile(text, source="hosts.txt")


def test_non_utf8_file_names_line(tmp_path):
    p = tmp_path / "hf"
    p.write_bytes(b"a slots=1\n# caf\xe9\n")
    with pytest.raises(InputError, match=rf"^{p}:2: not UTF-8 text \(byte 0xe9\)"):
        read_hostfile(p)


def test_missing_directory_and_huge_file(tmp_path):
    with pytest.raises(InputError, match=r"nope: hostfile not found$"):
        read_hostfile(tmp_path / "nope")
    with pytest.raises(InputError, match=r"is a directory, not a hostfile"):
        read_hostfile(tmp_path)
    big = tmp_path / "big"
    big.write_bytes(b"# x\n" * 300_000)
    with pytest.raises(InputError, match=r"hostfile is 1200000 bytes; expected a short text file"):
        read_hostfile(big)


def test_read_hostfile_reports_path_and_line(tmp_path):
    p = tmp_path / "hf"
    p.write_text("a slots=1\nb slots=0\n")
    with pytest.raises(InputError, match=rf"^{p}:2: slots must be an integer >= 1, got 0$"):
        read_hostfile(p)


BAD_FILTERS = [
    # (id, include, exclude, phrase)
    ("both", "worker-0", "worker-1", "--include: --include and --exclude are mutually exclusive"),
    ("unknown-host", "wroker-1", None, "--include: host 'wroker-1' is not in the hostfile (did you mean 'worker-1'?); hosts: worker-0, worker-1, fe80::1"),
    ("unknown-host-exclude", None, "gpu:0", "--exclude: host 'gpu' is not in the hostfile"),
    ("unknown-slot", "worker-1:0,7", None, "--include: slot 7 is not on host 'worker-1' (its slots: 0,1,2,3)"),
    ("unknown-slot-exclude", None, "fe80::1:5", "--exclude: slot 5 is not on host 'fe80::1' (its slots: 0,1)"),
    ("empty-slot-list", "worker-0:", None, "--include: malformed slot list '' for host 'worker-0'"),
    ("bad-slot", "worker-0:a", None, "--include: malformed slot list 'a' for host 'worker-0'"),
    ("trailing-comma", "worker-0:0,", None, "--include: malformed slot list '0,'"),
    ("negative-slot", "worker-0:-1", None, "--include: malformed slot list '-1'"),
    ("stray-at", "worker-0@", None, "--include: empty host in 'worker-0@' (stray '@')"),
    ("blank", " ", None, "--include: empty filter"),
    ("bad-bracket", "[fe80::1", None, "--include: malformed '[fe80::1'"),
    ("excludes-everything", None, "worker-0@worker-1@fe80::1", "--exclude: 'worker-0@worker-1@fe80::1' leaves no hosts"),
]


@pytest.mark.parametrize("include,exclude,phrase", [c[1:] for c in BAD_FILTERS],
                         ids=[c[0] for c in BAD_FILTERS])
def test_malformed_filter(include, exclude, phrase):
    with pytest.raises(InputError) as info:
        apply_filters(HOSTS, include=include, exclude=exclude)
    assert phrase in str(info.value), str(info.value)
    assert info.value.exit_code == ExitCode.USAGE


def test_addr_and_env_scripts_parse_round_trip_and_refuse_bad_values():
    text = ("h0 slots=2 addr=192.168.10.3 env_scripts=/usr/local/Ascend/ascend-toolkit/set_env.sh,~/nnal.sh\n"
            "h1 slots=2 env_scripts=none\nh2 slots=1\n")
    h0, h1, h2 = parse_hostfile(text, "hf")
    assert h0.addr == "192.168.10.3" and h0.env_scripts == ("/usr/local/Ascend/ascend-toolkit/set_env.sh", "~/nnal.sh")
    assert h1.env_scripts == () and h2.env_scripts is None and h2.addr is None
    assert parse_hostfile(format_hostfile([h0, h1, h2]), "hf")[:3] == [replace(h, source="hf") for h in (h0, h1, h2)]
    with pytest.raises(InputError, match=r"hf:1: invalid addr '\$\(x\)'"):
        parse_hostfile("h slots=1 addr=$(x)\n", "hf")
    with pytest.raises(InputError, match=r"hf:1: env_scripts entry 'set_env.sh' must be an absolute path"):
        parse_hostfile("h slots=1 env_scripts=set_env.sh\n", "hf")
