"""fetch: pure planning, and the whole path on this machine (a `localhost` node, real files)."""

from __future__ import annotations

import hashlib
import json
import marshal
import os
import sys
from pathlib import Path

import pytest

from launcher.ops import collect
from launcher.ops.collect import (FETCH, RESUME, SKIP, Listing, LocalState, RemoteFile, FetchError, fetch_job,
                              globs_for, host_dirs, parse_what, plan_node, safe_relpath)
from launcher.ops.collect_stream import Entry, Receiver
from launcher.cli.environment import Environment
from launcher.errors import InputError, RemoteError
from launcher.ops.registry import NodeRecord, Registry
from launcher.core.spec import OutputsSpec

CONFIG = ("model:\n  model_config:\n    pet_config: {pet_type: lora, lora_rank: 8, lora_alpha: 16,"
          " target_modules: '.*wq|.*wv'}\n")
SPEC = ("name: t\nkind: finetune\ntemplate: llama2_7b/finetune_lora.yaml\n"
        "outputs:\n  checkpoints: ['output/checkpoint/**/*.ckpt']\n  predictions: ['output/*.txt']\n")


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ----------------------------------------------------------------------------- pure

def test_parse_what():
    assert parse_what("all") == ("logs", "checkpoints", "predictions", "tensorboard")
    assert parse_what("predictions,logs") == ("logs", "predictions")
    with pytest.raises(InputError, match=r"--what: unknown output group 'ckpt'; valid: logs, checkpoints"):
        parse_what("logs,ckpt")


def test_globs_refuse_leaving_the_job_dir():
    out = OutputsSpec.model_construct(logs=("msrun_log/*.log",), checkpoints=("../other/*.ckpt",), predictions=())
    with pytest.raises(InputError, match=r"outputs.checkpoints: glob '\.\./other/\*\.ckpt' leaves the job"):
        globs_for(out, ("logs", "checkpoints"))
    out = OutputsSpec.model_construct(logs=("/etc/*",), checkpoints=(), predictions=())
    with pytest.raises(InputError, match="outputs.logs"):
        globs_for(out, ("logs",))
    ok = globs_for(OutputsSpec(), ("logs",))
    assert ok == {"logs": ("msrun_log/*.log", "output/log/**/*.log"), "config": ("config/job.yaml",)}


def test_host_dirs_unique_and_safe():
    nodes = [NodeRecord(0, "ascend-0"), NodeRecord(1, "u@h/x"), NodeRecord(2, "same"), NodeRecord(3, "same")]
    assert host_dirs(nodes) == {0: "ascend-0", 1: "u@h_x", 2: "same-node2", 3: "same-node3"}


@pytest.mark.parametrize("bad", ["../x", "/etc/passwd", "a/../../x", ""])
def test_listed_paths_must_stay_inside(bad):
    with pytest.raises(RemoteError, match="not inside the job directory"):
        safe_relpath(bad, "h")
    assert safe_relpath("output/a.ckpt", "h") == "output/a.ckpt"


def test_plan_skip_resume_fetch():
    files = tuple(RemoteFile("logs", p, "/r/" + p, size, s) for p, size, s in
                  [("same", 10, "aa"), ("part", 10, "bb"), ("changed", 10, "cc"), ("new", 10, "dd"),
                   ("bigpart", 10, "ee")])
    local = {"same": LocalState("aa"), "part": LocalState(None, 4), "changed": LocalState("zz"),
             "bigpart": LocalState(None, 11)}
    acts = {a.file.path: (a.kind, a.offset) for a in plan_node(Listing("/r", files), local)}
    assert acts == {"same": (SKIP, 0), "part": (RESUME, 4), "changed": (FETCH, 0), "new": (FETCH, 0),
                    "bigpart": (FETCH, 0)}


def test_receiver_splits_verifies_and_renames(tmp_path):
    a, b = os.urandom(3000), os.urandom(5000)
    ea = Entry("a", "/r/a", len(a), None, 0, tmp_path / "x" / "a")  # sender-hashed: trailer = sha256
    eb = Entry("b", "/r/b", len(b), hashlib.sha256(b).hexdigest(), 0, tmp_path / "b")  # listed sha256
    ec = Entry("c", "/r/c", 10, None, 0, tmp_path / "c")  # vanished on the host: padded, 0xff trailer
    wire = a + hashlib.sha256(a).digest() + b + b"\0" * 32 + b"\0" * 10 + b"\xff" * 32
    seen = []
    rx = Receiver([ea, eb, ec], seen.append, "h")
    for i in range(0, len(wire), 777):  # chunk borders fall inside payloads and trailers
        rx.write(wire[i:i + 777])
    rx.close()
    assert rx.complete and rx.payload == len(a) + len(b) + 10 == sum(seen)
    assert [e.path for e, _ in rx.verified] == ["a", "b"] and [e.path for e in rx.mismatched] == ["c"]
    assert ea.final.read_bytes() == a and eb.final.read_bytes() == b
    assert not ec.final.exists() and ec.part.exists()
    extra = Receiver([eb], seen.append, "h")
    assert extra.write(b + b"\0" * 33) == len(b) + 33  # keeps draining; the error is kept
    assert isinstance(extra.error, RemoteError) and "h: sent more bytes than requested" in extra.error.message


def test_receiver_cut_mid_file_keeps_the_part(tmp_path):
    data = os.urandom(4096)
    e = Entry("f", "/r/f", len(data), hashlib.sha256(data).hexdigest(), 0, tmp_path / "f")
    rx = Receiver([e], lambda n: None)
    rx.write(data[:1000])
    rx.close()
    assert not rx.complete and rx.current() is e
    assert not e.final.exists() and e.part.read_bytes() == data[:1000]


def test_lora_meta():
    assert collect.lora_meta(CONFIG) == {"rank": 8, "alpha": 16, "targets": ".*wq|.*wv"}
    assert collect.lora_meta("model: {}\n") == {}


# ----------------------------------------------------------------------------- on this machine

@pytest.fixture
def local_job(tmp_path):
    """A finished job on `localhost` with known files, recorded in this test's registry."""
    root = tmp_path / "host" / "alaunch" / "job"
    for rel, data in {"msrun_log/worker_0.log": b"step 1 loss 2.0\n" * 100,
                      "output/checkpoint/rank_0/llama_rank_0-1_2.ckpt": os.urandom(3 << 20),
                      "output/text_generation_result.txt": "[{'text_generation_text': ['x']}]".encode(),
                      "config/job.yaml": CONFIG.encode()}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    registry = Registry(tmp_path / "state" / "registry.sqlite3")
    record = registry.create_job("t", "finetune", spec_text=SPEC, config_text=CONFIG,
                                 hostfile_text="localhost slots=1\n", nodes=[("localhost", str(root))],
                                 meta={"pythons": {"localhost": sys.executable}}, state="succeeded")
    yield registry, record, root
    registry.close()


def test_fetch_local_then_skip(local_job, tmp_path):
    registry, record, root = local_job
    env = Environment(state_dir=tmp_path / "state")
    report = fetch_job(registry, record.id, "all", tmp_path / "runs", env.state_dir)
    here = tmp_path / "runs" / record.id / "localhost"
    rels = ["msrun_log/worker_0.log", "output/checkpoint/rank_0/llama_rank_0-1_2.ckpt",
            "output/text_generation_result.txt", "config/job.yaml"]
    for rel in rels:
        assert sha(here / rel) == sha(root / rel), rel
    total = sum((root / r).stat().st_size for r in rels)
    assert report.bytes_transferred == total and report.nodes[0].fetched == 4
    meta = json.loads((tmp_path / "runs" / record.id / "job.json").read_text())
    assert meta["id"] == record.id and meta["template"] == "llama2_7b/finetune_lora.yaml"
    assert meta["lora"] == {"rank": 8, "alpha": 16, "targets": ".*wq|.*wv"}
    assert (tmp_path / "runs" / record.id / "job.yaml").read_text() == CONFIG
    assert not list(here.rglob("*.part"))

    learned = marshal.loads((root / "state" / "fetch-sha256.marshal").read_bytes())  # hashed while sent
    ckpt = root / "output/checkpoint/rank_0/llama_rank_0-1_2.ckpt"
    assert learned[str(ckpt.resolve())][3] == sha(ckpt)
    again = fetch_job(registry, record.id, "all", tmp_path / "runs", env.state_dir)
    assert again.bytes_transferred == 0 and again.nodes[0].skipped == 4

    (root / "msrun_log" / "worker_0.log").write_bytes(b"step 2 loss 1.0\n" * 100)  # same size, new bytes
    third = fetch_job(registry, record.id, "logs", tmp_path / "runs", env.state_dir)
    assert third.nodes[0].fetched == 1 and third.bytes_transferred == 1600
    assert sha(here / "msrun_log/worker_0.log") == sha(root / "msrun_log/worker_0.log")


def test_resume_from_part_and_restart_on_bad_prefix(local_job, tmp_path):
    registry, record, root = local_job
    env = Environment(state_dir=tmp_path / "state")
    rel = "output/checkpoint/rank_0/llama_rank_0-1_2.ckpt"
    src = (root / rel).read_bytes()
    here = tmp_path / "runs" / record.id / "localhost"
    part = here / (rel + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(src[:1_000_000])
    report = fetch_job(registry, record.id, "checkpoints", tmp_path / "runs", env.state_dir)
    n = report.nodes[0]
    assert n.resumed == 1 and n.restarted == 0
    ckpt_bytes = report.bytes_transferred - (root / "config/job.yaml").stat().st_size
    assert ckpt_bytes == len(src) - 1_000_000
    assert (here / rel).read_bytes() == src and not part.exists()

    (here / rel).unlink()
    part.write_bytes(b"\0" * 1_000_000)  # a prefix that is not this file's
    report = fetch_job(registry, record.id, "checkpoints", tmp_path / "runs", env.state_dir)
    assert report.nodes[0].restarted == 1
    assert (here / rel).read_bytes() == src and not part.exists()


def test_symlink_out_of_the_job_dir_refused(local_job, tmp_path):
    registry, record, root = local_job
    secret = tmp_path / "secret.txt"
    secret.write_text("not yours")
    (root / "output" / "leak.txt").symlink_to(secret)
    with pytest.raises(FetchError, match=r"localhost: outputs.predictions glob 'output/\*.txt' matches "
                                         r"'output/leak.txt': it resolves to .*secret.txt, outside the job"):
        fetch_job(registry, record.id, "predictions", tmp_path / "runs",
                  tmp_path / "state")
    assert not (tmp_path / "runs" / record.id / "localhost" / "output").exists()


def test_cli_fetch(local_job, tmp_path, run_cli, monkeypatch):
    registry, record, root = local_job
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli("fetch", record.id, "--what", "logs")
    assert code == 0, err
    assert out.strip() == str(Path("runs") / record.id)
    assert (tmp_path / "runs" / record.id / "localhost" / "msrun_log" / "worker_0.log").is_file()
    assert not (tmp_path / "runs" / record.id / "localhost" / "output").exists()
    assert "localhost: 2 file(s), 2 fetched" in err
    code, out, err = run_cli("fetch", record.id, "--what", "all", "--json")
    data = json.loads(out)
    assert code == 0 and data["nodes"][0]["skipped"] == 2 and data["nodes"][0]["fetched"] == 2
    code, out, err = run_cli("fetch", record.id, "--what", "weights")
    assert code == 2 and "--what: unknown output group 'weights'" in err


def test_cli_glob_escape_in_job_file(tmp_path, run_cli):
    with Registry(tmp_path / "state" / "registry.sqlite3") as registry:
        record = registry.create_job("t", "finetune", spec_text="name: t\noutputs:\n  logs: ['../../*']\n",
                                     hostfile_text="localhost slots=1\n", nodes=[("localhost", str(tmp_path))])
    code, out, err = run_cli("fetch", record.id)
    assert code == 2 and "outputs.logs" in err and "'..'" in err


@pytest.mark.parametrize("zero_copy_min", [1, None], ids=["sendfile+mmap", "read-write"])
def test_send_streams_hashes_and_resumes_through_both_byte_paths(tmp_path, zero_copy_min):
    """The real SEND script, run locally: a fresh file (sender-hashed), a resumed one (the
    prefix is hashed, not sent) and one that shrank after the listing (padded, refused)."""
    from launcher.ops.collect_stream import stream
    from launcher.core.hostfile import Host
    from launcher.runners import LocalRunner
    src = tmp_path / "host"
    src.mkdir()
    fresh, resumed, shrunk = os.urandom((3 << 20) + 7), os.urandom(2 << 20), os.urandom(5000)
    for name, data in (("fresh", fresh), ("resumed", resumed), ("shrunk", shrunk)):
        (src / name).write_bytes(data)
    here = tmp_path / "here"
    here.mkdir()
    (here / "resumed.part").write_bytes(resumed[:(1 << 20) + 3])
    entries = [Entry("fresh", str(src / "fresh"), len(fresh), None, 0, here / "fresh"),
               Entry("resumed", str(src / "resumed"), len(resumed), None, (1 << 20) + 3, here / "resumed"),
               Entry("shrunk", str(src / "shrunk"), 9000, None, 0, here / "shrunk")]
    rx = Receiver(entries, lambda n: None, "h")
    stream(LocalRunner(Host("localhost", 1)), entries, rx, str(tmp_path / "cache.marshal"),
           zero_copy_min)
    assert [e.path for e, _ in rx.verified] == ["fresh", "resumed"]
    assert (here / "fresh").read_bytes() == fresh and (here / "resumed").read_bytes() == resumed
    assert [e.path for e in rx.mismatched] == ["shrunk"] and not (here / "shrunk").exists()
    assert rx.payload == len(fresh) + len(resumed) - ((1 << 20) + 3) + 9000
    learned = marshal.loads((tmp_path / "cache.marshal").read_bytes())
    assert learned[str(src / "fresh")][3] == hashlib.sha256(fresh).hexdigest()
