"""The host scripts of launcher/remote as what they are: real files, run directly as a
subprocess (``python launcher/remote/<name>.py``) on a temp dir with a request, linted, and
shipped to the host as the text :func:`launcher.remote.wire.program` builds."""

from __future__ import annotations

import ast
import glob
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launcher.core.plan import StageItem
from launcher.ops.stage import HashCache, collect, manifest_for, tar_stream
from launcher.remote import wire

PY = sys.executable
REMOTE = Path(wire.__file__).parent


def run_script(name: str, req: dict, *payload: bytes, argv_request: bool = False, timeout: float = 60,
               check: bool = True) -> subprocess.CompletedProcess:
    """Run launcher/remote/<name>.py directly: the request frame on stdin (then ``payload``),
    or as the hex argv element (the follower's way)."""
    if argv_request:
        argv, stdin = [PY, "-S", str(REMOTE / f"{name}.py"), wire.request_arg(req)], b""
    else:
        argv, stdin = [PY, "-S", str(REMOTE / f"{name}.py")], wire.request(req) + b"".join(payload)
    res = subprocess.run(argv, input=stdin, capture_output=True, timeout=timeout)
    if check:
        assert res.returncode == 0, res.stderr.decode()
    return res


def answer(name: str, req: dict, *payload: bytes) -> dict:
    return wire.answer(run_script(name, req, *payload).stdout)


# ---------------------------------------------------------------- staging: INVENTORY, RECEIVE, LINK
def _local_set(tmp_path: Path):
    src = tmp_path / "src"
    (src / "pkg").mkdir(parents=True)
    (src / "pkg" / "m.py").write_text("print('m')\n")
    (src / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (src / "run.sh").chmod(0o755)
    items = [StageItem("code/pkg/m.py", local=str(src / "pkg" / "m.py")),
             StageItem("code/run.sh", local=str(src / "run.sh"))]
    return collect(items, HashCache(None))


def test_stage_inventory_receive_link(tmp_path):
    local = _local_set(tmp_path)
    base = tmp_path / "wd" / "alaunch"
    inv = answer("stage", {"op": "inventory", "base": str(base), "objects": sorted(local.objects)})
    assert inv["base"] == str(base) and inv["have"] == [] and inv["free"] > 0 and len(inv["fsid"]) == 32

    root = tmp_path / "wd" / "j1"
    manifest = manifest_for(local, str(root), {"config/job.yaml": "a: 1\n"})
    stream = b"".join(tar_stream(list(local.objects.values()), manifest, lambda n: None))
    got = answer("stage", {"op": "receive", "cas": str(base / "cas")}, stream)
    assert got["objects"] == 2 and got["root"] == str(root) and got["copied"] == 0
    assert (root / "code/pkg/m.py").read_text() == "print('m')\n" and os.access(root / "code/run.sh", os.X_OK)
    assert (root / "config/job.yaml").read_text() == "a: 1\n"
    again = answer("stage", {"op": "inventory", "base": str(base), "objects": sorted(local.objects)})
    assert sorted(again["have"]) == sorted(local.objects) and again["fsid"] == inv["fsid"]

    root2 = tmp_path / "wd" / "j2"
    link_manifest = manifest_for(local, str(root2), {"config/job.yaml": "a: 2\n"}, tree_links=False)
    ok = answer("stage", {"op": "link", "cas": str(base / "cas"), "fsid": inv["fsid"], "manifest": link_manifest})
    assert ok["ok"] is True and ok["bytes"] == 0 and (root2 / "config/job.yaml").read_text() == "a: 2\n"
    assert (root2 / "code/pkg/m.py").read_text() == "print('m')\n"

    # another store (fsid) -> not ok, nothing made
    root3 = tmp_path / "wd" / "j3"
    link_manifest["root"] = str(root3)
    refused = answer("stage", {"op": "link", "cas": str(base / "cas"), "fsid": "0" * 32, "manifest": link_manifest})
    assert refused == {"ok": False} and not root3.exists()

    # staged files are read-only to the job (hard links of 0444/0555 objects); the config is its own copy
    assert (root / "code/pkg/m.py").stat().st_mode & 0o777 == 0o444
    assert (root / "code/run.sh").stat().st_mode & 0o777 == 0o555
    assert (root / "config/job.yaml").stat().st_nlink == 1
    # a job (root ignores the mode) writes into a staged file: VERIFY finds it, removes it, and
    # the next inventory no longer lists it, so the next staging sends it again
    (root / "code/pkg/m.py").write_text("print('changed by a job')\n")
    sha = next(s for s, f in local.objects.items() if f.path.endswith("m.py"))
    assert answer("stage", {"op": "verify", "base": str(base), "remove": False})["bad"] == [sha]
    fixed = answer("stage", {"op": "verify", "base": str(base), "remove": True})
    assert fixed["bad"] == [sha] and fixed["objects"] == 2
    assert answer("stage", {"op": "verify", "base": str(base), "remove": True})["bad"] == []
    assert sha not in answer("stage", {"op": "inventory", "base": str(base), "objects": sorted(local.objects)})["have"]


def test_inventory_versions_and_env_scripts_in_the_same_round_trip(tmp_path):
    from launcher.core.plan import WRAPPER
    (tmp_path / "bad.sh").write_text("echo 'no driver here' >&2; false\n")
    base = str(tmp_path / "b")
    inv = answer("stage", {"op": "inventory", "base": base, "objects": [], "versions": True, "wrapper": WRAPPER,
                           "env": {"ALAUNCH_ENV_SCRIPTS": str(tmp_path / "bad.sh")}})
    assert inv["env_error"] == f"alaunch: env script {tmp_path / 'bad.sh'} failed (exit 1): no driver here"
    import importlib.metadata as md
    assert inv["versions"]["mindspore"] == md.version("mindspore")
    assert inv["versions"]["mindformers"] == md.version("mindformers")
    ok = answer("stage", {"op": "inventory", "base": base, "objects": [], "wrapper": WRAPPER,
                          "env": {"ALAUNCH_ENV_SCRIPTS": "/nonexistent.sh", "ALAUNCH_ENV_OPTIONAL": "1"}})
    assert ok["env_error"] is None and "versions" not in ok


def test_version_skew_names_both_sides():
    from launcher.ops.service import version_skew
    same = {"mindspore": "2.9.0", "cann": "8.0.RC3", "driver": None}
    assert version_skew({"a": same, "b": dict(same)}) == []
    assert version_skew({"a": same, "b": dict(same, mindspore="2.8.0"), "c": same}) == [
        "mindspore differs between nodes: 2.9.0 on a, c; 2.8.0 on b"]


def test_stage_receive_refuses_a_stream_cut_short(tmp_path):
    local = _local_set(tmp_path)
    stream = b"".join(tar_stream(list(local.objects.values()), manifest_for(local, str(tmp_path / "j")),
                                 lambda n: None))
    res = run_script("stage", {"op": "receive", "cas": str(tmp_path / "cas")}, stream[:700], check=False)
    assert res.returncode != 0 and b"stream ended early" in res.stderr
    assert not (tmp_path / "j").exists()


def test_a_script_names_an_unknown_op_and_a_cut_request(tmp_path):
    res = run_script("stage", {"op": "nope"}, check=False)
    valid = ", ".join(sorted(wire.ops("stage"))).encode()
    assert res.returncode != 0 and b"unknown op 'nope' (valid: " + valid + b")" in res.stderr
    cut = subprocess.run([PY, "-S", str(REMOTE / "stage.py")], input=wire.request({"op": "link"})[:-3],
                         capture_output=True)
    assert cut.returncode != 0 and b"request cut short" in cut.stderr


# ---------------------------------------------------------------- fetch: LIST, SEND
@pytest.mark.parametrize("check", ["xxh3_128", "crc32x1m"])
def test_collect_list_and_send(tmp_path, check):
    from launcher.remote._prelude import check_hex, check_trailer, new_check

    def checked(data):
        h = new_check(check)
        h.update(data)
        return h

    job = tmp_path / "job"
    (job / "output").mkdir(parents=True)
    (job / "state").mkdir()
    a, b = os.urandom(3000), b"hello\n" * 100
    (job / "output" / "a.bin").write_bytes(a)
    (job / "output" / "b.log").write_bytes(b)
    (tmp_path / "secret").write_text("x")
    os.symlink(tmp_path / "secret", job / "output" / "leak")
    listing = answer("collect", {"op": "list", "root": str(job), "globs": {"out": ["output/*", "../x"]},
                                 "cache": "state/fetch-digest.marshal", "local": {"output/b.log": len(b)},
                                 "checks": ["no-such-check", check]})
    files = {f["path"]: f for f in listing["files"]}
    assert listing["check"] == check  # the first of the laptop's the host can do
    assert set(files) == {"output/a.bin", "output/b.log"}
    assert files["output/a.bin"]["digest"] is None  # nothing here to compare: SEND checks it
    assert files["output/b.log"]["digest"] == check_hex(check, checked(b))
    assert {r["path"] for r in listing["refused"]} == {"../x", "output/leak"}

    cache = str(job / "state" / "fetch-digest.marshal")
    req = {"op": "send", "cache": cache, "check": check, "files": [
        {"src": files["output/a.bin"]["src"], "offset": 0, "length": len(a), "hash": True},
        {"src": files["output/b.log"]["src"], "offset": 100, "length": len(b) - 100, "hash": False},
        {"src": str(job / "gone"), "offset": 0, "length": 5, "hash": True}]}
    out = run_script("collect", req).stdout
    mark = (wire.ANSWER_MARK + "\n").encode()
    assert out.startswith(b"\n" + mark)  # the stream starts after the mark's line
    kept = io.BytesIO()
    sink = wire.AfterMark(kept)
    for i in range(0, len(out), 7):  # chatter first, then the stream in small pieces
        sink.write(b"Welcome!\n" + out[:7] if i == 0 else out[i:i + 7])
    out = out[len(mark) + 1:]
    assert kept.getvalue() == out
    assert out == (a + check_trailer(checked(a)) + b[100:] + b"\0" * 32 + b"\0" * 5 + b"\xff" * 32)
    # what SEND checked is in the host's cache: the next listing has it without reading;
    # a laptop asking for the other check gets none from the cache (it is not that check's)
    again = answer("collect", {"op": "list", "root": str(job), "globs": {"out": ["output/a.bin"]},
                               "cache": "state/fetch-digest.marshal", "local": {}, "checks": [check]})
    assert again["files"][0]["digest"] == check_hex(check, checked(a))
    other = answer("collect", {"op": "list", "root": str(job), "globs": {"out": ["output/a.bin"]},
                               "cache": "state/fetch-digest.marshal", "local": {}, "checks": ["crc32x1m"]})
    assert other["check"] == "crc32x1m"
    assert (other["files"][0]["digest"] is None) == (check != "crc32x1m")


def test_a_host_python_without_xxhash_checks_with_crc32(tmp_path):
    """A host whose Python cannot import xxhash (not in sys.path, nor in its own site-packages
    under ``-S``) answers LIST with the stdlib check, whatever the laptop prefers."""
    script = wire.source("_prelude") + "\nimport sys\nsys.modules['xxhash'] = None\nprint(fetch_checks())\n"
    out = subprocess.run([sys.executable, "-S", "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['crc32x1m']"
    script = wire.source("_prelude") + "\nprint(fetch_checks())\n"  # the venv's, found by hand under -S
    out = subprocess.run([sys.executable, "-S", "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['xxh3_128', 'crc32x1m']"


def test_collect_list_of_a_missing_job_dir_exits_3(tmp_path):
    res = run_script("collect", {"op": "list", "root": str(tmp_path / "none"), "globs": {}}, check=False)
    assert res.returncode == 3 and b"does not exist on this host" in res.stderr


# ---------------------------------------------------------------- launch: DETACH, STATUS, CANCEL, PORT
def _wait(pred, timeout=15.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_launch_detach_status_cancel_port(tmp_path):
    state, job_id = tmp_path / "state", f"t-remote-scripts-{os.getpid()}"
    started = answer("launch", {"op": "detach", "argv": [PY, "-c", "import time; time.sleep(60)"],
                                "env": {wire.JOB_MARKER: job_id}, "cwd": str(tmp_path / "cwd"),
                                "state_dir": str(state)})
    assert started["pid"] != started["supervisor"]
    status = answer("launch", {"op": "status", "state_dir": str(state), "job_id": job_id})
    assert status["supervisor_alive"] and started["pid"] in status["processes"] and status["exit_code"] is None

    again = run_script("launch", {"op": "detach", "argv": ["true"], "env": {}, "cwd": str(tmp_path),
                                  "state_dir": str(state)}, check=False)
    assert again.returncode != 0 and b"job already started here" in again.stderr

    cancelled = answer("launch", {"op": "cancel", "job_id": job_id, "msrun_pid": started["pid"], "grace": 5})
    assert cancelled["found"] == 1 and cancelled["left"] == []  # the marked child (not its supervisor)
    assert _wait(lambda: (state / "exit_code").exists())
    status = answer("launch", {"op": "status", "state_dir": str(state), "job_id": job_id})
    assert status["exit_code"] is not None and status["exit_code"] != 0 and status["processes"] == []

    port = answer("stage", {"op": "inventory", "base": str(tmp_path / "store"), "objects": [],
                            "port": None, "pinned": False})["port"]
    assert isinstance(port, int) and port > 0


def test_the_launch_marker_is_the_one_the_laptop_sets():
    assert re.search(rf'^MARKER = "{wire.JOB_MARKER}"$', wire.source("launch"), re.M)


# ---------------------------------------------------------------- follow: FOLLOW (snapshot), TAIL
def test_follow_snapshot_and_tail_with_the_request_in_argv(tmp_path):
    root = tmp_path / "job"
    (root / "msrun_log").mkdir(parents=True)
    (root / "state").mkdir()
    (root / "msrun_log" / "worker_0.log").write_text("step 1 loss 2.0\nstep 2 loss 1.5\n")
    (root / "msrun_log" / "scheduler.log").write_text("sched up\n")
    out = run_script("follow", {"op": "follow", "root": str(root), "follow": False}, argv_request=True).stdout
    lines = out.decode().splitlines()
    # each line carries its file and the byte offset just after it (what a reconnect resumes at)
    assert any(re.fullmatch(r"L\t0\tworker\t\d+:32\tstep 2 loss 1\.5", ln) for ln in lines), lines
    assert any(re.fullmatch(r"L\t\tscheduler\t\d+:9\tsched up", ln) for ln in lines), lines
    assert lines[-1] == "X\t-"
    missing = run_script("follow", {"op": "follow", "root": str(tmp_path / "no")}, argv_request=True).stdout
    assert missing.decode().startswith("X\t!no job directory")
    tail = wire.answer(run_script("follow", {"op": "tail", "root": str(root)}, argv_request=True).stdout)
    assert tail == {"0": ["step 1 loss 2.0", "step 2 loss 1.5"]}


# ---------------------------------------------------------------- hosts check: PROBE
def test_probe_reports_this_host(tmp_path):
    res = subprocess.run([PY, str(REMOTE / "probe.py"), wire.request_arg({"op": "probe", "workdir": str(tmp_path / "no/wd")})],
                         capture_output=True, timeout=120)
    assert res.returncode == 0, res.stderr.decode()
    facts = wire.answer(res.stdout)
    assert facts["python"] == "{}.{}.{}".format(*sys.version_info[:3]) and facts["python_path"] == PY
    assert facts["disk"]["path"] == str(tmp_path) and facts["disk"]["workdir_exists"] is False


def _prelude_ns() -> dict:
    ns: dict = {}
    exec(wire.source("_prelude"), ns)  # noqa: S102 - our own fixed script text
    return ns


def test_ascend_versions_from_the_install_files(tmp_path, monkeypatch):
    read = _prelude_ns()["ascend_versions"]
    home, driver = tmp_path / "toolkit", tmp_path / "driver" / "version.info"
    monkeypatch.setenv("ASCEND_TOOLKIT_HOME", str(home))
    assert read(str(driver)) == {"cann": None, "driver": None}  # a CPU host: nothing installed
    home.mkdir()
    (home / "version.info").write_text("Version=7.0.0\n")
    assert read(str(driver)) == {"cann": "7.0.0", "driver": None}  # the toolkit root's file, last resort
    for sub, text in (("aarch64-linux", "package_name=Ascend-cann-toolkit\nversion=8.0.RC3\n"),
                      ("x86_64-linux", "version=9.9\n"), ("a-empty", "version=\n")):
        (home / sub).mkdir()
        (home / sub / "ascend_toolkit_install.info").write_text(text)
    driver.parent.mkdir()
    driver.write_text('Version="24.1.rc2"\n')
    assert read(str(driver)) == {"cann": "8.0.RC3", "driver": "24.1.rc2"}  # first by name with a value


def test_hosts_check_and_preflight_read_the_same_versions(tmp_path, monkeypatch):
    """probe.py (``hosts check``) and stage.py (the preflight's skew check) share one reader:
    a toolkit with only a root ``version.info`` is the same CANN to both."""
    home = tmp_path / "toolkit"
    home.mkdir()
    (home / "version.info").write_text("version=8.1.RC1\n")
    monkeypatch.setenv("ASCEND_TOOLKIT_HOME", str(home))
    res = subprocess.run([PY, str(REMOTE / "probe.py"), wire.request_arg({"op": "probe", "workdir": str(tmp_path)})],
                         capture_output=True, timeout=120)
    assert res.returncode == 0, res.stderr.decode()
    probe = wire.answer(res.stdout)
    inv = answer("stage", {"op": "inventory", "base": str(tmp_path / "b"), "objects": [], "versions": True})
    assert probe["cann"] == inv["versions"]["cann"] == "8.1.RC1"
    assert probe["driver"] == inv["versions"]["driver"]
    assert wire.program("probe", "probe").count("def ascend_versions(") == 1  # shipped once, with the prelude


# ---------------------------------------------------------------- what ships, lint, layering
def test_program_is_prelude_plus_what_the_op_needs_and_runs_like_the_file(tmp_path):
    text = wire.program("stage", "inventory")
    assert text.startswith(wire.source("_prelude")) and text.endswith("run({'inventory': inventory})\n")
    assert "from _prelude import" not in text.replace(wire.source("_prelude"), "")
    assert "def inventory(" in text and "def receive(" not in text and "def link(" not in text
    link = wire.program("stage", "link")
    assert "def materialise(" in link and "def receive(" not in link  # reached from link
    assert wire.program("stage", "inventory") is text  # built once
    with pytest.raises(ValueError, match="no host script 'nope'"):
        wire.program("nope", "x")
    with pytest.raises(ValueError, match=r"has no op 'x' \(valid: " + re.escape(", ".join(sorted(wire.ops("stage")))) + r"\)"):
        wire.program("stage", "x")
    req = {"op": "inventory", "base": str(tmp_path / "b"), "objects": []}
    shipped = subprocess.run([PY, "-S", "-c", text], input=wire.request(req), capture_output=True, check=True)
    direct = run_script("stage", req)
    one, other = wire.answer(shipped.stdout), wire.answer(direct.stdout)
    assert one.pop("free") > 0 and other.pop("free") > 0  # the disk's free bytes move meanwhile
    assert one == other and one["base"] == req["base"]


@pytest.mark.parametrize("name", wire.SCRIPTS)
def test_every_shipped_program_compiles_and_passes_pyflakes(name, tmp_path):
    for op in wire.ops(name):
        path = tmp_path / f"{name}-{op}.py"
        path.write_text(wire.program(name, op))
        res = subprocess.run([PY, "-m", "pyflakes", str(path)], capture_output=True, text=True)
        # an import only the pruned functions used stays (a module import, no cost that matters)
        problems = [line for line in (res.stdout + res.stderr).splitlines() if "imported but unused" not in line]
        assert problems == [], "\n".join(problems)


def test_remote_scripts_pass_pyflakes():
    res = subprocess.run([PY, "-m", "pyflakes", str(REMOTE)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_no_remote_file_imports_launcher():
    for path in sorted(REMOTE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n == "launcher" or n.startswith("launcher.") for n in names), \
                f"{path.name}:{node.lineno} imports {names}"


# ---------------------------------------------------------------- one marshal format across Pythons
def _interpreters() -> list[str]:
    found = {os.path.realpath(p): p for p in sorted(glob.glob("/root/.pyenv/versions/3.*/bin/python3"))
             + sorted(glob.glob("/usr/bin/python3.[0-9]*")) if re.search(r"python3(\.\d+)?$", p)}
    return sorted(found.values())


TRICKY = {"s": "a b/$(x)'\"\n中文\udcff", "n": [0, -7, 2**70, 1.5], "t": True, "f": False, "none": None,
          "d": {"k": ["x", {"y": []}]}, "long": "x" * 70000}


@pytest.mark.parametrize("python", _interpreters() or ["none"])
def test_a_request_reads_back_equal_on_every_python_here(python):
    """The laptop's marshal (format 4, this Python) read by every interpreter on the machine
    through the real prelude, and the JSON answer read back here."""
    if python == "none":
        pytest.skip("no other python3 on this machine")
    version = subprocess.run([python, "-S", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    assert tuple(map(int, version.split("."))) >= (3, 6)
    script = wire.source("_prelude") + (
        "req = read_request()\n"
        "req['n'][3] = int(req['n'][3] * 2)\n"  # dumps speaks no floats: check it arrived as 1.5
        "print(dumps(req))\n")
    res = subprocess.run([python, "-S", "-c", script], input=wire.request(TRICKY), capture_output=True, timeout=60)
    assert res.returncode == 0, f"{python} ({version}): {res.stderr.decode()}"
    expected = dict(TRICKY, n=[0, -7, 2**70, 3])
    assert json.loads(res.stdout) == expected


@pytest.mark.parametrize("python", _interpreters() or ["none"])
def test_the_probe_answers_on_every_python_here(python, tmp_path):
    """``hosts check``'s PROBE under each interpreter on the machine (a host's python3 may be
    3.6): it imported ``importlib.metadata`` (3.8+) and ran npu-smi with ``capture_output``/
    ``text`` (3.7+), so on 3.6 and 3.7 it died before answering."""
    if python == "none":
        pytest.skip("no other python3 on this machine")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "npu-smi"
    smi.write_text("#!/bin/sh\necho '| npu-smi 23.0.6 | Version: 23.0.6 |'\n")
    smi.chmod(0o755)
    res = subprocess.run([python, "-S", "-c", wire.program("probe", "probe")],
                         input=wire.request({"op": "probe", "workdir": str(tmp_path / "work")}),
                         capture_output=True, timeout=60, env={**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin"})
    assert res.returncode == 0, f"{python}: {res.stderr.decode()}"
    got = wire.answer(res.stdout)
    version = subprocess.run([python, "-S", "-c", "import platform; print(platform.python_version())"],
                             capture_output=True, text=True, check=True).stdout.strip()
    assert got["python"] == version and "mindspore" in got and "mindformers" in got
    assert got["npu_smi"] == {"path": str(smi), "code": 0, "out": "| npu-smi 23.0.6 | Version: 23.0.6 |\n", "err": ""}


def test_answer_is_the_last_marked_line_whatever_a_shell_prints_around_it():
    framed = ("Welcome to Ubuntu 22.04 LTS\n{\"not\": \"this\"}\nlast login: today"
              + "\n" + wire.ANSWER_MARK + json.dumps({"pid": 7}) + "\nbye from .bash_logout\n")
    assert wire.answer(framed) == {"pid": 7}
    assert wire.answer(framed.encode()) == {"pid": 7}
    with pytest.raises(wire.NoAnswer, match="Welcome"):
        wire.answer("Welcome\n{\"pid\": 7}\n")  # bare JSON is not an answer: never guess
    with pytest.raises(wire.NoAnswer):
        wire.answer(wire.ANSWER_MARK + "{cut")


def test_files_facts_and_exist(tmp_path):
    """files.py: what a pipeline's relay compares (sha256, size, kind) and whether a step's
    outputs are still there (once ops/relay.py's and ops/pipeline.py's string programs)."""
    (tmp_path / "f.ckpt").write_bytes(b"x" * 3)
    facts = wire.answer(run_script("files", {"op": "facts", "path": str(tmp_path / "f.ckpt")}).stdout)
    assert facts == {"kind": "file", "sha256": hashlib.sha256(b"xxx").hexdigest(), "size": 3}
    assert wire.answer(run_script("files", {"op": "facts", "path": str(tmp_path)}).stdout) == {"kind": "dir"}
    assert wire.answer(run_script("files", {"op": "facts", "path": str(tmp_path / "no")}).stdout) == {"kind": None}
    assert wire.answer(run_script("files", {"op": "exist", "paths": [str(tmp_path / "f.ckpt")]}).stdout)["exist"]
    assert not wire.answer(run_script("files", {"op": "exist", "paths": [str(tmp_path / "f.ckpt"),
                                                                          str(tmp_path / "no")]}).stdout)["exist"]
