"""fetch: pure planning, and the whole path on this machine (a `localhost` node, real files)."""

from __future__ import annotations

import hashlib
import json
import marshal
import os
import sys
from pathlib import Path

import pytest

from launcher.cli.environment import Environment
from launcher.core.spec import OutputsSpec
from launcher.errors import InputError, RemoteError
from launcher.ops import collect
from launcher.ops.collect import (
    FETCH,
    RESUME,
    SKIP,
    FetchError,
    Listing,
    LocalState,
    RemoteFile,
    fetch_job,
    globs_for,
    host_dirs,
    parse_what,
    plan_node,
    safe_relpath,
)
from launcher.ops.collect_stream import Entry, Receiver
from launcher.ops.registry import NodeRecord, Registry
from launcher.remote._prelude import check_hex, check_trailer, fetch_checks, new_check

CONFIG = ("model:\n  model_config:\n    pet_config: {pet_type: lora, lora_rank: 8, lora_alpha: 16,"
          " target_modules: '.*wq|.*wv'}\n")
SPEC = ("name: t\nkind: finetune\ntemplate: llama2_7b/finetune_lora.yaml\n"
        "outputs:\n  checkpoints: ['output/checkpoint/**/*.ckpt']\n  predictions: ['output/*.txt']\n")


CHECKS = ["xxh3_128", "crc32x1m"]  # the fetch checks: with xxhash (a MindFormers Python has it), stdlib


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def checked(check: str, data: bytes):
    h = new_check(check)
    h.update(data)
    return h


def trailer(check: str, data: bytes) -> bytes:
    return check_trailer(checked(check, data))


def digest(check: str, data: bytes) -> str:
    return check_hex(check, checked(check, data))


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


@pytest.mark.parametrize("check", CHECKS)
def test_receiver_splits_verifies_and_renames(tmp_path, check):
    a, b = os.urandom(3000), os.urandom(5000)
    ea = Entry("a", "/r/a", len(a), None, 0, tmp_path / "x" / "a")  # sender-checked: the trailer
    eb = Entry("b", "/r/b", len(b), digest(check, b), 0, tmp_path / "b")  # listed digest
    ec = Entry("c", "/r/c", 10, None, 0, tmp_path / "c")  # vanished on the host: padded, 0xff trailer
    wire = a + trailer(check, a) + b + b"\0" * 32 + b"\0" * 10 + b"\xff" * 32
    seen = []
    rx = Receiver([ea, eb, ec], seen.append, "h", check)
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


@pytest.mark.parametrize("check", CHECKS)
@pytest.mark.parametrize("at", [5, (2 << 20) + 5, (3 << 20) - 1], ids=["first-block", "mid", "last-byte"])
def test_receiver_refuses_one_corrupted_byte(tmp_path, check, at):
    """One byte changed in the stream (the host's trailer says otherwise) and the file is not
    renamed, wherever the byte is; the next file is kept."""
    good, other = os.urandom(3 << 20), os.urandom(1000)
    ea = Entry("a", "/r/a", len(good), None, 0, tmp_path / "a")
    eb = Entry("b", "/r/b", len(other), None, 0, tmp_path / "b")
    stream = bytearray(good + trailer(check, good) + other + trailer(check, other))
    stream[at] ^= 0x40
    rx = Receiver([ea, eb], lambda n: None, "h", check)
    for i in range(0, len(stream), 1 << 20):
        rx.write(bytes(stream[i:i + (1 << 20)]))
    rx.close()
    assert [e.path for e in rx.mismatched] == ["a"] and [e.path for e, _ in rx.verified] == ["b"]
    assert not ea.final.exists() and ea.part.stat().st_size == len(good) and eb.final.read_bytes() == other


def test_receiver_keeps_draining_when_its_check_fails(tmp_path):
    """A check that fails must not stop the writer (the pump would die, and with it ssh and
    the host would block on a full pipe): the failure is kept, every later chunk taken."""

    class Broken:
        def update(self, data):
            raise RuntimeError("check broke")

    e = Entry("f", "/r/f", 24 << 20, None, 0, tmp_path / "f")
    rx = Receiver([e], lambda n: None, "h")
    rx.check = Broken()
    chunk = bytes(1 << 20)
    assert [rx.write(chunk) for _ in range(24)] == [1 << 20] * 24
    rx.close()
    assert isinstance(rx.error, RuntimeError) and not e.final.exists()


def test_receiver_cut_mid_file_keeps_the_part(tmp_path):
    data = os.urandom(4096)
    e = Entry("f", "/r/f", len(data), digest("crc32x1m", data), 0, tmp_path / "f")
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
                      "output/text_generation_result.txt": b"[{'text_generation_text': ['x']}]",
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

    learned = marshal.loads((root / "state" / "fetch-digest.marshal").read_bytes())  # checked while sent
    ckpt = root / "output/checkpoint/rank_0/llama_rank_0-1_2.ckpt"
    assert learned[str(ckpt.resolve())][3] == digest(fetch_checks()[0], ckpt.read_bytes())
    again = fetch_job(registry, record.id, "all", tmp_path / "runs", env.state_dir)
    assert again.bytes_transferred == 0 and again.nodes[0].skipped == 4

    (root / "msrun_log" / "worker_0.log").write_bytes(b"step 2 loss 1.0\n" * 100)  # same size, new bytes
    third = fetch_job(registry, record.id, "logs", tmp_path / "runs", env.state_dir)
    assert third.nodes[0].fetched == 1 and third.bytes_transferred == 1600
    assert sha(here / "msrun_log/worker_0.log") == sha(root / "msrun_log/worker_0.log")


def test_a_first_fetch_is_one_host_process_and_a_refetch_sends_nothing(local_job, tmp_path):
    """Nothing here yet: LISTSEND lists and sends in one round trip; everything here: one
    LIST and no SEND. A job dir gone from the host is said as a LIST says it."""
    from launcher.runners import LocalRunner
    registry, record, root = local_job
    ops: list[str] = []

    class Counting(LocalRunner):
        def program_argv(self, script, op, site=False):
            ops.append(op)
            return super().program_argv(script, op, site=site)

    factory = lambda h: Counting(h)  # noqa: E731
    first = fetch_job(registry, record.id, "all", tmp_path / "runs", tmp_path / "state", runner_factory=factory)
    assert ops == ["listsend"] and first.nodes[0].fetched == 4 and first.bytes_transferred > 3 << 20
    ops.clear()
    again = fetch_job(registry, record.id, "all", tmp_path / "runs", tmp_path / "state", runner_factory=factory)
    assert ops == ["list"] and again.nodes[0].skipped == 4 and again.bytes_transferred == 0
    import shutil
    shutil.rmtree(root)
    with pytest.raises(FetchError, match=r"localhost: listing .*job failed: job directory .*job does not exist "
                                         r"on this host"):
        fetch_job(registry, record.id, "all", tmp_path / "other-runs", tmp_path / "state", runner_factory=factory)


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
    assert "logs: 1 file(s), 1.6 KiB moved of 1.6 KiB on the host" in err  # per group: moved vs on the host
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


@pytest.mark.parametrize("check", CHECKS)
@pytest.mark.parametrize("zero_copy_min", [1, None], ids=["sendfile+mmap", "read-write"])
def test_send_streams_checks_and_resumes_through_both_byte_paths(tmp_path, zero_copy_min, check):
    """The real SEND script, run locally: a fresh file (sender-checked), a resumed one (the
    prefix is checked, not sent; it ends mid-block) and one that shrank after the listing
    (padded, refused)."""
    from launcher.core.hostfile import Host
    from launcher.ops.collect_stream import stream
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
    rx = Receiver(entries, lambda n: None, "h", check)
    stream(LocalRunner(Host("localhost", 1)), entries, rx, str(tmp_path / "cache.marshal"),
           zero_copy_min)
    assert [e.path for e, _ in rx.verified] == ["fresh", "resumed"]
    assert (here / "fresh").read_bytes() == fresh and (here / "resumed").read_bytes() == resumed
    assert [e.path for e in rx.mismatched] == ["shrunk"] and not (here / "shrunk").exists()
    assert rx.payload == len(fresh) + len(resumed) - ((1 << 20) + 3) + 9000
    learned = marshal.loads((tmp_path / "cache.marshal").read_bytes())
    assert learned[str(src / "fresh")][3] == digest(check, fresh)
    assert learned[str(src / "resumed")][3] == digest(check, resumed)


@pytest.mark.parametrize("check", CHECKS)
@pytest.mark.parametrize("zero_copy_min", [1, None], ids=["sendfile+checking-thread", "read-write"])
def test_a_byte_changed_between_send_and_receive_is_refused(tmp_path, zero_copy_min, check):
    """The real SEND (its check taken by a second thread beside sendfile, or inline), one
    byte of its stream flipped before the receiver: the file is refused, the next one kept."""
    from launcher.core.hostfile import Host
    from launcher.ops.collect_stream import stream
    from launcher.runners import LocalRunner
    big, small = os.urandom((3 << 20) + 11), os.urandom(777)
    (tmp_path / "big").write_bytes(big)
    (tmp_path / "small").write_bytes(small)
    here = tmp_path / "here"
    entries = [Entry("big", str(tmp_path / "big"), len(big), None, 0, here / "big"),
               Entry("small", str(tmp_path / "small"), len(small), None, 0, here / "small")]
    rx = Receiver(entries, lambda n: None, "h", check)

    class Flip:
        """Passes the stream on with its byte number (2 MiB + 5) of the payload flipped."""
        at = (2 << 20) + 5

        def write(self, data):
            if 0 <= self.at < len(data):
                data = bytearray(data)
                data[self.at] ^= 0x10
            self.at -= len(data)
            return rx.write(bytes(data))

        def close(self):
            rx.close()

        def __getattr__(self, name):
            return getattr(rx, name)

    stream(LocalRunner(Host("localhost", 1)), entries, Flip(), None, zero_copy_min)
    assert [e.path for e in rx.mismatched] == ["big"] and [e.path for e, _ in rx.verified] == ["small"]
    assert not (here / "big").exists() and (here / "small").read_bytes() == small


# ----------------------------------------------------------------------------- --what lora

LORA_CONFIG = """\
model:
  arch: {type: LlamaForCausalLM}
  model_config:
    type: LlamaConfig
    hidden_size: 64
    num_layers: 2
    num_heads: 4
    vocab_size: 1024
    intermediate_size: 128
    pet_config: {pet_type: lora, lora_rank: 16, lora_alpha: 32, target_modules: '.*wq', freeze_exclude: ['*norm_out*']}
"""
LORA_NAMES = {f"model.layers.{i}.attention.wq.mindpet_delta_lora_{ab}": 1024 for i in (0, 1) for ab in "ab"}
LORA_NAMES["model.norm_out.weight"] = 64


def _varint(n: int) -> bytes:
    out = b""
    while True:
        out += bytes([(n & 0x7F) | (0x80 if n > 0x7F else 0)])
        n >>= 7
        if not n:
            return out


def _record(tag: str, dims, content: bytes, packed: bool = False, dtype: bytes = b"Float32") -> bytes:
    """One top-level Checkpoint.value record, as MindSpore's protobuf writes it."""
    if packed:
        raw = b"".join(_varint(d) for d in dims)
        tensor = b"\x0a" + _varint(len(raw)) + raw
    else:
        tensor = b"".join(b"\x08" + _varint(d) for d in dims)
    tensor += b"\x12" + _varint(len(dtype)) + dtype + b"\x1a" + _varint(len(content)) + content
    value = b"\x0a" + _varint(len(tag.encode())) + tag.encode() + b"\x12" + _varint(len(tensor)) + tensor
    return b"\x0a" + _varint(len(value)) + value


def _lora_job(tmp_path, files: dict[str, bytes], config: str = LORA_CONFIG):
    root = tmp_path / "host" / "job"
    for rel, data in {**files, "config/job.yaml": config.encode()}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    registry = Registry(tmp_path / "state" / "registry.sqlite3")
    record = registry.create_job("t", "finetune", spec_text="name: t\nkind: finetune\n", config_text=config,
                                 hostfile_text="localhost slots=1\n", nodes=[("localhost", str(root))],
                                 meta={"pythons": {"localhost": sys.executable}}, state="succeeded")
    return registry, record, root


def test_lora_names_sum_to_the_trainable_count():
    import yaml

    from launcher.core import lora
    config = yaml.safe_load(LORA_CONFIG)
    mc = config["model"]["model_config"]
    assert lora.trainable_parameters(mc, mc["pet_config"], lora.family_for(config)) == LORA_NAMES
    assert sum(LORA_NAMES.values()) == lora.count(mc).trainable


def test_fetch_lora_from_a_ckpt_skips_frozen_tensors_and_keeps_the_crc(tmp_path):
    """A sliced LoRA tensor (two records, one tag), packed and unpacked dims, frozen tensors
    (one 8 MiB), optimizer state of the same parameters, MindSpore's crc32 trailer."""
    import binascii
    a0 = os.urandom(4096)
    kept = [_record(n, [16, 64] if n.endswith("_a") else [64, 16], os.urandom(4096), packed=n.endswith("_b"))
            for n in LORA_NAMES if "lora" in n and n != "model.layers.0.attention.wq.mindpet_delta_lora_a"]
    kept = [_record("model.layers.0.attention.wq.mindpet_delta_lora_a", [16, 64], a0[:2048]),
            _record("model.layers.0.attention.wq.mindpet_delta_lora_a", [16, 64], a0[2048:])] + kept
    kept.append(_record("model.norm_out.weight", [64], os.urandom(256)))
    frozen = [_record("model.tok_embeddings.embedding_weight", [2048, 1024], os.urandom(8 << 20)),
              _record("adam_m.model.layers.0.attention.wq.mindpet_delta_lora_a", [16, 64], os.urandom(4096)),
              _record("global_step", [1], b"\1\0\0\0", dtype=b"Int32")]
    body = frozen[0] + kept[0] + frozen[1] + b"".join(kept[1:]) + frozen[2]
    ckpt = body + b"crc_num" + binascii.crc32(body).to_bytes(10, "big")
    registry, record, root = _lora_job(tmp_path, {"output/checkpoint/rank_0/m-1_1.ckpt": ckpt})
    with registry:
        report = fetch_job(registry, record.id, "lora", tmp_path / "runs", tmp_path / "state")
    delta = (tmp_path / "runs" / record.id / "localhost" / "lora/output/checkpoint/rank_0/m-1_1.ckpt").read_bytes()
    want = b"".join(kept)
    assert delta == want + b"crc_num" + binascii.crc32(want).to_bytes(10, "big")
    g = report.groups()
    assert g["lora"].moved == len(delta) and g["lora"].on_host == len(ckpt) and g["lora"].files == 1
    assert set(g) == {"lora", "config"}
    from launcher.cli.commands.fetch import saved_lines
    saved = saved_lines(report)[-1]
    assert saved.startswith("lora: 1 file(s), 16.7 KiB moved of 8.0 MiB on the host (the full checkpoints), "
                            "99.8% not moved"), saved


def test_fetch_lora_from_safetensors(tmp_path):
    import struct
    tensors = {"model.tok_embeddings.embedding_weight": ([1024, 64], os.urandom(1024 * 64 * 4))}
    tensors.update({n: ([n_ // 16, 16] if "lora" in n else [64], os.urandom(4 * n_)) for n, n_ in LORA_NAMES.items()})
    header, blob = {"__metadata__": {"format": "ms"}}, b""
    for name, (shape, data) in reversed(list(tensors.items())):  # data order differs from the header's
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [len(blob), len(blob) + len(data)]}
        blob += data
    text = json.dumps(header).encode()
    registry, record, root = _lora_job(tmp_path, {"output/checkpoint/rank_0/m.safetensors":
                                                  struct.pack("<Q", len(text)) + text + blob})
    with registry:
        fetch_job(registry, record.id, "lora", tmp_path / "runs", tmp_path / "state")
    out = (tmp_path / "runs" / record.id / "localhost" / "lora/output/checkpoint/rank_0/m.safetensors").read_bytes()
    n = struct.unpack("<Q", out[:8])[0]
    got = json.loads(out[8:8 + n])
    assert n % 8 == 0 and got.pop("__metadata__") == {"format": "ms"} and set(got) == set(LORA_NAMES)
    for name, info in got.items():
        b, e = info["data_offsets"]
        assert out[8 + n + b:8 + n + e] == tensors[name][1] and info["shape"] == tensors[name][0]


def test_fetch_lora_refuses_a_checkpoint_missing_a_trained_tensor(tmp_path):
    ckpt = b"".join(_record(n, [16, 64], os.urandom(4096)) for n in LORA_NAMES if "lora" in n)
    registry, record, root = _lora_job(tmp_path, {"output/checkpoint/rank_0/m.ckpt": ckpt})
    with registry, pytest.raises(FetchError, match=r"localhost: output/checkpoint/rank_0/m.ckpt holds 4 of the 5 "
                                                   r"LoRA parameters .*first missing: model.norm_out.weight"):
        fetch_job(registry, record.id, "lora", tmp_path / "runs", tmp_path / "state")
    registry, record, root = _lora_job(tmp_path / "b", {"output/checkpoint/rank_0/m.ckpt": b"\x0a\x05ab"})
    with registry, pytest.raises(FetchError, match=r"m.ckpt: cannot extract the LoRA tensors: the record at byte 0 "
                                                   r"runs past the end"):
        fetch_job(registry, record.id, "lora", tmp_path / "b" / "runs", tmp_path / "b" / "state")
    registry, record, root = _lora_job(tmp_path / "c", {}, config="model: {model_config: {}}\n")
    with registry, pytest.raises(InputError, match="--what: the job's rendered config has no LoRA"):
        fetch_job(registry, record.id, "lora", tmp_path / "c" / "runs", tmp_path / "c" / "state")


def test_check_delta_counts_and_sizes():
    from launcher.ops.collect import Delta, check_delta
    names = {"a": 4, "b": 2}
    ok = Delta("lora/x", "x", 100, {"a": [4, "Float32", 16], "b": [2, "BFloat16", 4]})
    assert check_delta(ok, names, whole=True) is None
    assert "holds 1 of the 2" in check_delta(Delta("l", "x", 1, {"a": [4, "Float32", 16]}), names, True)
    assert check_delta(Delta("l", "x", 1, {"a": [2, "Float32", 8]}), names, whole=False) is None  # a shard
    assert "a has 2 elements, the config says 4" in check_delta(Delta("l", "x", 1, {"a": [2, "Float32", 8],
                                                                                      "b": [2, "F16", 4]}), names, True)
    assert "holds 10 bytes" in check_delta(Delta("l", "x", 1, {"a": [4, "Float32", 10]}), names, False)


def test_lora_extraction_skips_a_frozen_tensor_without_reading_it(tmp_path):
    """A 3 GiB frozen tensor (a sparse hole) before the LoRA ones, and the host's python held to
    400 MB of address space (ulimit -v): the extraction seeks past it, memory stays bounded."""
    big = 3 << 30
    tensor_head = b"\x08" + _varint(big // 4) + b"\x12\x07Float32" + b"\x1a" + _varint(big)
    tag = b"model.tok_embeddings.embedding_weight"
    value_head = b"\x0a" + _varint(len(tag)) + tag + b"\x12" + _varint(len(tensor_head) + big) + tensor_head
    record_head = b"\x0a" + _varint(len(value_head) + big) + value_head
    kept = b"".join(_record(n, [16, 64] if "lora" in n else [64], os.urandom(4 * size))
                    for n, size in LORA_NAMES.items())
    registry, record, root = _lora_job(tmp_path, {})
    ckpt = root / "output/checkpoint/rank_0/m.ckpt"
    ckpt.parent.mkdir(parents=True)
    with open(ckpt, "wb") as f:
        f.write(record_head)
        f.truncate(len(record_head) + big)  # the frozen tensor's bytes: a hole, never written
        f.seek(0, 2)
        f.write(kept)
    wrapper = tmp_path / "python-400m"
    wrapper.write_text(f"#!/bin/sh\nulimit -v 400000\nexec {sys.executable} \"$@\"\n")
    wrapper.chmod(0o755)
    registry.close()
    with Registry(tmp_path / "state" / "registry.sqlite3") as registry:
        record = registry.create_job("t2", "finetune", spec_text="name: t2\nkind: finetune\n",
                                     config_text=LORA_CONFIG, hostfile_text="localhost slots=1\n",
                                     nodes=[("localhost", str(root))], meta={"pythons": {"localhost": str(wrapper)}},
                                     state="succeeded")
        report = fetch_job(registry, record.id, "lora", tmp_path / "runs", tmp_path / "state")
    delta = tmp_path / "runs" / record.id / "localhost" / "lora/output/checkpoint/rank_0/m.ckpt"
    assert delta.read_bytes() == kept and report.groups()["lora"].on_host == len(record_head) + big + len(kept)
