"""Hostile input corpus: each case is refused with one line naming the file/line/key, or kept literal.

The fast cases run the real parsers (hostfile, job file, YAML, plan, staging collector). The
``cluster`` case at the bottom sends the values that are legal (env values full of shell
metacharacters, file names with spaces, quotes, ``$(...)``, a leading ``-``) through a real
submit to a real sshd host and proves with canary files that no command ran and the values
arrived byte for byte.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml

from launcher.core import yamlio
from launcher.core.hostfile import Host, parse_hostfile, read_hostfile
from launcher.core.plan import StageItem, build_plan
from launcher.core.spec import load_job
from launcher.errors import AlaunchError, InputError
from launcher.ops.stage import HashCache, collect

HOSTILE = Path(__file__).parent / "fixtures" / "hostile"
BASE_JOB = {"name": "hostile", "kind": "finetune", "template": "tiny_llama_cpu/finetune.yaml",
            "entry": {"script": "alaunch:run_cpu"}}

# ------------------------------------------------------------------ hostfiles: refused, naming file:line

HOSTFILE_REFUSED = {
    "host-semicolon": ("a;touch /tmp/canary slots=1", "invalid"),
    "host-and-and": ("a&&touch slots=1", "invalid"),
    "host-cmdsubst": ("$(touch${IFS}/tmp/canary) slots=1", "invalid"),
    "host-backtick": ("`touch /tmp/canary` slots=1", "invalid"),
    "host-leading-dash": ("-oProxyCommand=touch slots=1", "expected"),
    "host-quoted-space": ('"my host" slots=1', "invalid"),
    "host-dotdot": ("../../etc slots=1", "invalid"),
    "user-semicolon": ("h1 slots=1 user=root;id", "invalid user"),
    "user-cmdsubst": ("h1 slots=1 user=$(id)", "invalid user"),
    "identity-leading-dash": ("h1 slots=1 identity=-oProxyCommand=x", "must not start with '-'"),
    "workdir-traversal": ("h1 slots=1 workdir=/srv/../../etc", "'..'"),
    "workdir-relative": ("h1 slots=1 workdir=srv/jobs", "absolute"),
    "port-out-of-range": ("h1 slots=1 port=99999", "port"),
    "slots-huge": ("h1 slots=1000000000000", "slots"),
    "slots-negative": ("h1 slots=-1", "slots"),
    "unknown-key-typo": ("h1 slots=1 wokdir=/srv", "wokdir"),
}


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text.strip(), f"error is not one line: {text!r}"
    return text


@pytest.mark.parametrize("case", sorted(HOSTFILE_REFUSED))
def test_hostile_hostfile_line_refused(case, tmp_path):
    line, needle = HOSTFILE_REFUSED[case]
    path = tmp_path / "hosts"
    path.write_text(f"# a comment\nok-host slots=1\n{line}\n", encoding="utf-8")
    with pytest.raises(InputError) as err:
        read_hostfile(path)
    text = _one_line(err.value)
    assert f"{path}:3" in text, text  # file and line of the bad host
    assert needle.lower() in text.lower(), text


def test_hostile_hostfile_newline_in_quoted_value(tmp_path):
    """A quoted value cannot smuggle a newline: the line splits and the rest is a bad host line."""
    path = tmp_path / "hosts"
    path.write_text('h1 slots=1 workdir="/srv/a\n$(touch /tmp/canary)"\n', encoding="utf-8")
    with pytest.raises(InputError) as err:
        read_hostfile(path)
    assert str(path) in _one_line(err.value)


def test_hostile_hostfile_legal_odd_workdir_is_literal():
    """Spaces, quotes and '$' are legal in a workdir: kept byte for byte, quoted when used."""
    (host,) = parse_hostfile("h1 slots=1 workdir=\"/srv/my jobs/$(x) 'q'\"\n", source="hf")
    assert host.workdir == "/srv/my jobs/$(x) 'q'"


def test_hostile_hostfile_not_utf8():
    with pytest.raises(InputError) as err:
        read_hostfile(HOSTILE / "latin1_hostfile")
    assert "latin1_hostfile:1" in _one_line(err.value) and "UTF-8" in str(err.value)


def test_hostile_hostfile_huge(tmp_path):
    path = tmp_path / "huge"
    with open(path, "wb") as f:
        f.truncate(64 << 20)  # sparse: 64 MiB of NULs without writing them
    with pytest.raises(InputError) as err:
        read_hostfile(path)
    assert str(path) in _one_line(err.value) and "bytes" in str(err.value)


# ------------------------------------------------------------------ job files: refused, naming key

def _job(tmp_path: Path, **over) -> Path:
    data = {**BASE_JOB, **over}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


JOB_REFUSED = {
    "name-semicolon": ({"name": "x;touch /tmp/canary"}, "name"),
    "name-cmdsubst": ({"name": "$(touch /tmp/canary)"}, "name"),
    "name-backtick": ({"name": "`id`"}, "name"),
    "name-leading-dash": ({"name": "-rf"}, "name"),
    "name-traversal": ({"name": "../../etc"}, "name"),
    "name-newline": ({"name": "a\nb"}, "name"),
    "env-name-semicolon": ({"env": {"A;id": "1"}}, "env"),
    "env-name-space": ({"env": {"A B": "1"}}, "env"),
    "input-name-slash": ({"inputs": {"../x": {"remote": "/data"}}}, "inputs"),
    "outputs-glob-traversal": ({"outputs": {"logs": ["../../etc/*"]}}, "outputs.logs"),
    "outputs-glob-absolute": ({"outputs": {"predictions": ["/etc/passwd"]}}, "outputs.predictions"),
    "outputs-glob-inner-traversal": ({"outputs": {"checkpoints": ["output/../../../root/.ssh/*"]}},
                                     "outputs.checkpoints"),
    "override-key-cmdsubst": ({"overrides": {"$(id)": 1}}, "overrides"),
    "override-key-space": ({"overrides": {"runner_config. epochs": 1}}, "overrides"),
    "override-key-traversal": ({"overrides": {"../x": 1}}, "overrides"),
    "entry-not-python": ({"entry": {"script": "/bin/sh"}}, "entry.script"),
    "entry-unknown-builtin": ({"entry": {"script": "alaunch:$(id)"}}, "entry.script"),
    "nodes-negative": ({"nodes": -1}, "nodes"),
    "nodes-string": ({"nodes": "1; id"}, "nodes"),
    "env-both-value-and-from-local": ({"env": {"A": {"value": "x", "from_local": "HOME"}}}, "env.A"),
    "env-from-local-bad-name": ({"env": {"A": {"from_local": "$(id)"}}}, "env.A"),
}


@pytest.mark.parametrize("case", sorted(JOB_REFUSED))
def test_hostile_job_refused_naming_key(case, tmp_path):
    over, key = JOB_REFUSED[case]
    path = _job(tmp_path, **over)
    with pytest.raises(InputError) as err:
        load_job(path)
    text = _one_line(err.value)
    assert str(path) in text, text
    assert key in text, text


@pytest.mark.parametrize("case", ["job-alias-bomb", "template-alias-bomb"])
def test_hostile_yaml_alias_bomb_refused_fast(case):
    """Neither a job file nor a template may expand a billion-laughs document."""
    if case == "job-alias-bomb":
        with pytest.raises(InputError) as err:
            load_job(HOSTILE / "alias_bomb_job.yaml")
        assert "alias_bomb_job.yaml:" in _one_line(err.value) and "anchor" in str(err.value)
    else:
        text = (HOSTILE / "alias_bomb_template.yaml").read_text()
        with pytest.raises(InputError) as err:
            yamlio.loads(text, "tpl.yaml", allow_aliases=True)
        assert "tpl.yaml:" in _one_line(err.value) and "alias" in str(err.value)


@pytest.mark.parametrize("case", ["latin1", "binary"])
def test_hostile_job_not_utf8_is_one_line(case):
    """A job file that is not UTF-8 text: one line naming the file, not a UnicodeDecodeError."""
    path = HOSTILE / f"{case}_job.yaml"
    with pytest.raises(InputError) as err:
        load_job(path)
    text = _one_line(err.value)
    assert path.name in text and "UTF-8" in text, text


def test_hostile_job_huge_file_refused(tmp_path):
    path = tmp_path / "huge.yaml"
    """Refused by size before YAML parsing (a 32 MiB document would take the parser seconds)."""
    path = _job(tmp_path)
    with open(path, "a") as f:
        f.write(("# padding\n" * 4096) * 800)
    with pytest.raises(InputError) as err:
        load_job(path)
    assert str(path) in _one_line(err.value) and "bytes" in str(err.value)


ODD_OVERRIDES = {
    "epochs-string": {"runner_config.epochs": "three"},
    "epochs-list": {"runner_config.epochs": [1, 2]},
    "batch-dict": {"runner_config.batch_size": {"a": 1}},
    "lr-inf": {"lr_schedule.learning_rate": float("inf")},
    "rank-bool": {"model.model_config.pet_config.lora_rank": True},
    "seq-negative": {"model.model_config.seq_length": -5},
}


@pytest.mark.ms
@pytest.mark.parametrize("case", sorted(ODD_OVERRIDES))
def test_hostile_override_odd_types(case, tmp_path, monkeypatch):
    """Overrides of the wrong type are refused at render/validate time naming the key, not on the hosts."""
    monkeypatch.chdir(tmp_path)
    from launcher.ops.service import SubmitOptions, prepare
    over = ODD_OVERRIDES[case]
    spec = load_job(_job(tmp_path, overrides=over))
    hosts = [Host("localhost", 1, workdir=str(tmp_path / "wd"))]
    with pytest.raises(AlaunchError) as err:
        prepare(spec, hosts, "hostile-1", 29500, SubmitOptions(bin_dir="/x"))
    text = _one_line(err.value)
    assert next(iter(over)) in text and "job.yaml" in text, text


# ------------------------------------------------------------------ literal handling in the plan

META_VALUES = {
    "semicolon": "a; touch /tmp/canary-semicolon",
    "and-and": "a && touch /tmp/canary-andand",
    "cmdsubst": "$(touch /tmp/canary-cmdsubst)",
    "backtick": "`touch /tmp/canary-backtick`",
    "quotes": "it's \"quoted\" 'twice'",
    "newline": "line1\nline2; touch /tmp/canary-newline",
    "leading-dash": "-rf --no-preserve-root",
    "spaces-glob": "  lead * trail  ",
}


@pytest.mark.parametrize("case", sorted(META_VALUES))
def test_hostile_env_value_is_literal_in_plan(case, tmp_path):
    """The printed plan round-trips through a shell parser to the exact value (never re-interpreted)."""
    value = META_VALUES[case]
    path = _job(tmp_path, env={"HOSTILE": value},
                entry={"script": "/opt/my dir/$(id).py", "args": ["--x", value]})
    spec = load_job(path)
    plan = build_plan(spec, "a: 1\n", [Host("h1", 1)], "job-1", 29500, bin_dir="/b")
    node = plan.nodes[0]
    assert node.env_values()["HOSTILE"] == value
    assert node.argv[-1] == value and "/opt/my dir/$(id).py" in node.argv
    words = shlex.split(plan.render_shell().replace("\\\n", " "), comments=False)
    assert f"HOSTILE={value}" in words and value in words and "/opt/my dir/$(id).py" in words


# ------------------------------------------------------------------ staged trees

def test_hostile_symlink_outside_tree_is_not_silently_staged(tmp_path):
    """A code tree with a symlink to a secret outside it: refused or at least warned about."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "run.py").write_text("print(1)\n")
    secret = tmp_path / "outside" / "id_ed25519"
    secret.parent.mkdir()
    secret.write_text("PRIVATE KEY\n")
    (code / "key").symlink_to(secret)
    (code / "inside").symlink_to(code / "run.py")  # a link inside the tree is fine
    try:
        local = collect([StageItem("code", local=str(code))], HashCache(None))
    except InputError as exc:
        assert "key" in _one_line(exc)
        return
    staged = {f.dest for f in local.files}
    assert "code/key" not in staged or any("key" in w for w in local.warnings), staged


def test_hostile_dangling_symlink_is_one_line(tmp_path):
    code = tmp_path / "code"
    code.mkdir()
    (code / "run.py").write_text("print(1)\n")
    (code / "gone").symlink_to(tmp_path / "nowhere")
    with pytest.raises(InputError) as err:
        collect([StageItem("code", local=str(code))], HashCache(None))
    assert "gone" in _one_line(err.value)


def test_hostile_file_names_collected_literally(tmp_path):
    """Odd but legal file names are staged under exactly their names."""
    code = tmp_path / "code"
    code.mkdir()
    names = HOSTILE_NAMES
    for n in names:
        (code / n).write_text(n)
    local = collect([StageItem("code", local=str(code))], HashCache(None))
    assert {f.dest for f in local.files} == {f"code/{n}" for n in names}


HOSTILE_NAMES = ["with space.txt", "it's.txt", 'dq".txt', "$(touch canary-name).txt", "`id`.txt",
                 "-rf", "semi;colon&&x.txt", "tab\there.txt", "ünïcødé.txt"]


# ------------------------------------------------------------------ on a real host, through a real submit

DUMP = r'''
import hashlib, json, os, pathlib, sys
out = pathlib.Path(os.environ["ALAUNCH_PYTHONPATH"]).parent / "output" / "hostile_env.json"
out.parent.mkdir(parents=True, exist_ok=True)
env = {k: v for k, v in os.environ.items() if k.startswith("HOSTILE_")}
secret = hashlib.sha256(os.environ.get("SECRET_TOK", "").encode()).hexdigest()
from_local = hashlib.sha256(os.environ.get("FROM_LOCAL_TOK", "").encode()).hexdigest()
out.write_text(json.dumps({"env": env, "argv": sys.argv[1:], "secret_sha": secret, "from_local_sha": from_local,
                           "names": sorted(os.listdir(pathlib.Path(__file__).parent / "names"))}))
'''
SECRET = "s3cr3t-VALUE-do-not-print-8d1f"
FROM_LOCAL = "tok-from-laptop-env-51c2"


@pytest.mark.cluster
@pytest.mark.slow
@pytest.mark.ms
def test_hostile_values_reach_a_real_host_literally_and_secrets_stay_secret(ssh_cluster, tmp_path, monkeypatch):
    """Env values with shell metacharacters, a workdir with spaces/quotes/$(...), and staged file
    names with metacharacters arrive byte for byte on a real sshd host; no canary command ran;
    secrets are *** in the plan, absent from alaunch's output, and every
    file of the job dir on the host; nothing staged is world-writable; registry is 0600."""
    import hashlib
    import os
    import stat
    import sys
    from dataclasses import replace
    from functools import partial

    from launcher.ops.registry import Registry
    from launcher.ops.service import JobService, SubmitOptions, prepare
    from launcher.runners import ConnectOptions
    from launcher.runners import make_runner as make_exec

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FROM_LOCAL_TOK", FROM_LOCAL)
    code = tmp_path / "code"
    (code / "names").mkdir(parents=True)
    (code / "dump_env.py").write_text(DUMP)
    for n in HOSTILE_NAMES:
        (code / "names" / n).write_text(n)
    env = {f"HOSTILE_{k.upper().replace('-', '_')}": v for k, v in META_VALUES.items()}
    env["SECRET_TOK"] = {"value": SECRET, "secret": True}
    env["FROM_LOCAL_TOK"] = {"from_local": "FROM_LOCAL_TOK"}
    args = ["--x", META_VALUES["cmdsubst"], META_VALUES["semicolon"]]
    job = _job(tmp_path, name="hostile-e2e", code={"local": str(code)},
               entry={"script": "dump_env.py", "args": args}, env=env)
    workdir = "/root/my jobs/it's $(touch /tmp/canary-workdir) `touch /tmp/canary-wd2`"
    (host,) = [replace(h, workdir=workdir) for h in ssh_cluster.hosts_as_launcher_hosts(slots=1)[:1]]
    bin_dir = str(Path(sys.executable).parent)

    # the plan as printed: secrets are ***
    printed = prepare(load_job(job), [host], "hostile-e2e-x", 29500, SubmitOptions(bin_dir=bin_dir)).plan.render_shell()
    assert "SECRET_TOK=***" in printed.replace("'", "") and SECRET not in printed and FROM_LOCAL not in printed

    registry_path = tmp_path / "state" / "r.sqlite3"
    lines: list[str] = []
    with Registry(registry_path) as registry:
        service = JobService(registry, tmp_path / "state", say=lines.append,
                             exec_factory=partial(make_exec, options=ConnectOptions(known_hosts=ssh_cluster.known_hosts)))
        record = service.submit(job, [host], SubmitOptions(bin_dir=bin_dir, cluster_time_out=60))
        record = service.wait(record.id, poll=1, timeout=120)
        assert record.state == "succeeded", record.reason
        root = record.nodes[0].job_dir
        events = repr(registry.events(record.id))  # every event text alaunch recorded
    assert root.startswith("/root/my jobs/it's $(touch /tmp/canary-workdir)")
    dumped = __import__("json").loads(ssh_cluster.hosts[0].path(f"{root}/output/hostile_env.json").read_text())
    assert dumped["env"] == env_literal(env)
    assert dumped["argv"][-3:] == args
    assert dumped["names"] == sorted(HOSTILE_NAMES)
    assert dumped["secret_sha"] == hashlib.sha256(SECRET.encode()).hexdigest()
    assert dumped["from_local_sha"] == hashlib.sha256(FROM_LOCAL.encode()).hexdigest()
    # no canary anywhere: not in the host's /tmp, not in the job dir, not in the home dir
    # (the workdir's own literal name contains 'canary': a canary is a file *named* canary-...)
    found = ssh_cluster.exec_on(0, ["sh", "-c", "find /tmp -name 'canary*'; find /tmp /root /srv -name canary-name"
                                                " -o -name 'canary-*' -type f"]).stdout.split("\n")
    assert [f for f in found if f.strip()] == []
    # secrets: not printed, not in the registry bytes, not in any file of the job dir on the host
    said = "\n".join(lines) + events
    assert SECRET not in said and FROM_LOCAL not in said
    # (a from_local value is never in the registry; a literal secret is masked: see below)
    assert FROM_LOCAL.encode() not in registry_path.read_bytes()
    leak = ssh_cluster.exec_on(0, ["grep", "-rlF", "-e", SECRET, "-e", FROM_LOCAL, root])
    assert leak.stdout == "" and leak.returncode == 1, leak.stdout
    # modes: nothing the job wrote on the host is world-writable; the registry is 0600
    ww = ssh_cluster.exec_on(0, ["find", root, "/root/my jobs", "-perm", "-0002", "!", "-type", "l"])
    assert ww.returncode == 0 and ww.stdout == "", ww.stdout
    listing = ssh_cluster.exec_on(0, ["find", "-L", root, "-type", "f"]).stdout
    n_files = listing.count("\n")
    assert n_files >= len(HOSTILE_NAMES) + 3, listing
    assert stat.S_IMODE(os.stat(registry_path).st_mode) == 0o600


def env_literal(env: dict) -> dict:
    return {k: v for k, v in env.items() if k.startswith("HOSTILE_")}


def test_hostile_secret_value_never_in_registry_bytes(tmp_path, monkeypatch):
    """A job that fails at the first host contact (name does not resolve) is still recorded; its secret must not be."""
    from launcher.ops.registry import Registry
    from launcher.ops.service import JobService, SubmitOptions
    from launcher.runners import make_runner as make_exec

    monkeypatch.chdir(tmp_path)
    job = _job(tmp_path, env={"SECRET_TOK": {"value": SECRET, "secret": True}})
    path = tmp_path / "state" / "r.sqlite3"
    with Registry(path) as registry:
        service = JobService(registry, tmp_path / "state", exec_factory=make_exec)
        with pytest.raises(AlaunchError):
            service.submit(job, [Host("no-such-host.invalid", 1)], SubmitOptions(bin_dir="/no/bin"))
        assert registry.list()[0].state == "failed"
    blob = b"".join(p.read_bytes() for p in path.parent.glob("r.sqlite3*"))
    assert SECRET.encode() not in blob


def test_symlink_inside_tree_is_staged_as_its_target(tmp_path):
    code = tmp_path / "code"
    (code / "pkg").mkdir(parents=True)
    (code / "pkg" / "run.py").write_text("print(1)\n")
    (code / "alias.py").symlink_to(code / "pkg" / "run.py")
    local = collect([StageItem("code", local=str(code))], HashCache(None))
    by_dest = {f.dest: f for f in local.files}
    assert by_dest["code/alias.py"].sha256 == by_dest["code/pkg/run.py"].sha256
