"""`hosts check`: one probe command per host, and a pure verdict on what it found.

The probe is the stdlib-only host script ``launcher/remote/probe.py``, one
``CommandRunner.call`` (``python3 -c PROGRAM``, with the host's site packages, the request on
stdin): it answers one JSON object with the host's facts. Versions come
from package metadata plus ``find_spec`` rather than importing: importing mindformers takes
~7 s of CPU and writes ``output/log`` into the current directory, which a check must not do.
The verdict (:func:`evaluate`) is pure, so every rule has a unit test without a host.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from launcher.core.hostfile import Host
from launcher.errors import RemoteError
from launcher.ops.npusmi import NpuSmiParseError, parse_npu_smi, summarize
from launcher.runners import CommandRunner, CommandTimeout, ConnectError

MIN_PYTHON = (3, 9)

@dataclass(frozen=True)
class CheckPolicy:
    require_npus: bool = False
    min_disk_gb: float = 5.0
    python: str | None = None  # None: the runner's (python3 on remote hosts, this interpreter locally)


@dataclass
class CheckRow:
    """One line of the table (and of ``--json``)."""

    host: str
    reachable: bool
    passed: bool
    reason: str
    rtt_ms: float | None = None
    hostname: str | None = None
    os: str | None = None
    arch: str | None = None
    python: str | None = None
    mindspore: str | None = None
    mindformers: str | None = None
    cann: str | None = None  # CANN toolkit version (its install info), None where absent
    driver: str | None = None  # NPU driver version (driver/version.info)
    msrun: str | None = None
    npus: int | None = None
    npu_summary: str | None = None
    disk_path: str | None = None
    disk_free_gb: float | None = None
    notes: list[str] = field(default_factory=list)
    store_bytes: int | None = None  # <workdir>/alaunch/cas
    jobs_bytes: int | None = None  # job dirs, not counting files that are links into the store

    def to_json(self) -> dict:
        return asdict(self)


def _gib(n: int | None) -> str:
    return f"{(n or 0) / 2**30:.2f} GiB"


def unreachable_row(host: Host, exc: BaseException) -> CheckRow:
    reason = getattr(exc, "detail", None) or str(exc) or type(exc).__name__
    return CheckRow(host=host.name, reachable=False, passed=False, reason=reason)


def evaluate(host: Host, facts: dict, rtt_ms: float | None, policy: CheckPolicy) -> CheckRow:
    """Facts from the probe -> a row with a verdict and every reason it fails (pure)."""
    row = CheckRow(host=host.name, reachable=True, passed=True, reason="", rtt_ms=rtt_ms,
                   hostname=facts.get("hostname"), os=facts.get("os"), arch=facts.get("arch"),
                   python=facts.get("python"), mindspore=facts.get("mindspore"),
                   mindformers=facts.get("mindformers"), msrun=facts.get("msrun"),
                   cann=facts.get("cann"), driver=facts.get("driver"))
    if row.cann or row.driver:
        row.notes.append(f"CANN {row.cann or '-'}, driver {row.driver or '-'}")
    problems: list[str] = []
    try:
        pyver = tuple(int(x) for x in (row.python or "0").split(".")[:2])
    except ValueError:
        pyver = (0, 0)
    if pyver < MIN_PYTHON:
        problems.append(f"python {row.python} < {'.'.join(map(str, MIN_PYTHON))}")
    for pkg in ("mindspore", "mindformers"):
        if not facts.get(pkg):
            problems.append(f"{pkg} not installed")
    if not row.msrun:
        problems.append("msrun not found (comes with the mindspore wheel)")
    problems += _npu_problems(host, facts.get("npu_smi"), row, policy)
    usage = facts.get("usage")
    if usage:  # what alaunch keeps on this host: the content store and the job dirs
        row.store_bytes, row.jobs_bytes = usage.get("store"), usage.get("jobs")
        row.notes.append(f"alaunch uses {_gib(row.store_bytes)} in its store, {_gib(row.jobs_bytes)} in "
                         f"{usage.get('job_dirs', 0)} job dir(s); `alaunch prune` frees finished ones")
    disk = facts.get("disk") or {}
    if disk:
        row.disk_path = disk.get("path")
        row.disk_free_gb = round(disk.get("free", 0) / 2**30, 1)
        if row.disk_free_gb < policy.min_disk_gb:
            problems.append(f"{row.disk_free_gb} GiB free at {row.disk_path} < {policy.min_disk_gb:g} GiB")
    row.passed = not problems
    row.reason = "; ".join(problems) if problems else "ok" + (f" ({'; '.join(row.notes)})" if row.notes else "")
    return row


def _npu_problems(host: Host, smi: dict | None, row: CheckRow, policy: CheckPolicy) -> list[str]:
    if smi is None:
        row.npus, row.npu_summary = 0, "no NPUs (CPU only)"
        if policy.require_npus:
            return ["no NPUs: npu-smi not found"]
        row.notes.append("CPU only: no npu-smi")
        return []
    if smi.get("code") != 0:
        row.npu_summary = "npu-smi failed"
        err = (smi.get("err") or smi.get("out") or "").strip().splitlines()[-1:] or [""]
        return [f"`npu-smi info` exited {smi.get('code')}: {err[0]}"]
    try:
        cards = parse_npu_smi(smi.get("out", ""))
    except NpuSmiParseError as exc:
        row.npu_summary = "unreadable"
        return [f"cannot read `npu-smi info`: {exc.message}"]
    summary = summarize(cards)
    row.npus, row.npu_summary = summary.count, summary.description
    problems = []
    ids = {c.npu_id: c for c in cards}
    missing = [i for i in host.slot_ids if i not in ids]
    if missing:
        problems.append(f"hostfile uses NPU {','.join(map(str, missing))} but npu-smi shows "
                        f"{len(cards)} card(s)")
    bad = [f"NPU {i} {ids[i].health}" for i in host.slot_ids if i in ids and not ids[i].healthy]
    if bad:
        problems.append("unhealthy: " + ", ".join(bad))
    busy = [str(i) for i in host.slot_ids if i in ids and i in summary.busy]
    if busy:
        from launcher.core.cards import holders_from_npu_smi
        who = {h.card: h.describe() for h in holders_from_npu_smi(cards)}
        problems.append("busy: " + ", ".join(f"NPU {i} ({who.get(int(i), 'another job')})" for i in busy))
    return problems


def check_host(runner: CommandRunner, policy: CheckPolicy, timeout: float) -> CheckRow:
    """Connect, time one round trip, run the probe once (with the runner's interpreter, or
    ``policy.python``); any failure becomes the row's reason."""
    host = runner.using(policy.python).host
    try:
        runner.connect()  # over ssh: the host's master connection, nothing run on the host yet
        rtt_ms = round(runner.ping() * 1000, 2)  # one round trip on the open connection
        facts = runner.call("probe", {"op": "probe", "workdir": host.remote_workdir}, timeout=timeout * 3,
                            site=True, what=f"probe with {runner.python}")
    except (ConnectError, CommandTimeout) as exc:
        return unreachable_row(host, exc)
    except RemoteError as exc:  # it answered: reachable, the probe itself failed (e.g. no such python)
        return CheckRow(host.name, True, False, exc.detail, rtt_ms=rtt_ms)
    except Exception as exc:  # a broken transport must still be a row, not a traceback
        return unreachable_row(host, RuntimeError(f"{type(exc).__name__}: {exc}"))
    return evaluate(host, facts, rtt_ms, policy)



COLUMNS = ("host", "reachable", "OS/arch", "python", "mindspore", "mindformers", "msrun", "NPUs", "free disk",
           "verdict")


def _short_os(name: str | None) -> str:
    """'Debian GNU/Linux 12 (bookworm)' -> 'Debian 12': the table is wide enough already."""
    import re
    return re.sub(r"\s*\(.*?\)|GNU/Linux\s*", "", name or "?").strip()


def table_cells(rows: list[CheckRow]) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    """The ``hosts check`` table's columns and one row of cells per host (pure)."""
    out: list[tuple[str, ...]] = []
    for r in rows:
        reach = "no" if not r.reachable else (f"yes {r.rtt_ms:.1f} ms" if r.rtt_ms is not None else "yes")
        osarch = f"{_short_os(r.os)} {r.arch or ''}".strip() if r.reachable else ""
        disk = f"{r.disk_free_gb:g} GiB ({r.disk_path})" if r.disk_free_gb is not None else ""
        verdict = ("PASS" if r.passed else "FAIL") + f": {r.reason}"
        out.append((r.host, reach, osarch, r.python or "", r.mindspore or ("-" if r.reachable else ""),
                    r.mindformers or ("-" if r.reachable else ""), ("yes" if r.msrun else "-") if r.reachable else "",
                    r.npu_summary or "", disk, verdict))
    return COLUMNS, out
