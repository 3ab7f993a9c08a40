"""``npu-smi info``: parse its table into cards, summarise them, and render the same table.

``hosts check`` runs ``npu-smi info`` on every host and needs to know how many cards there
are, whether they are healthy and whether another job already holds them. The table is
meant for eyes, not programs, so parsing goes by cells (split on ``|``) and patterns, not
fixed columns: real versions differ in widths, and rows we do not know are skipped.

:func:`render_npu_smi_table` writes the exact layout of npu-smi 23.0.7 (the real output in
``tests/fixtures/npu-smi/``) so that the test cluster's ``npu-smi`` emulator prints what a
real 910B host prints; ``parse_npu_smi(render_npu_smi_table(cards)) == cards``.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import overload

from launcher.errors import AlaunchError

HEALTH_OK = "OK"
DEFAULT_BUSY_HBM_MB = 8192  # an idle 910B shows ~3.3 GB HBM in use; a loaded one far more
DEFAULT_VERSION = "23.0.7"

# Bus ids of the eight cards of an Atlas 800T A2, in npu-smi's order (from the real fixture).
ATLAS_800T_A2_BUS_IDS = ("0000:C1:00.0", "0000:01:00.0", "0000:C2:00.0", "0000:02:00.0",
                         "0000:81:00.0", "0000:41:00.0", "0000:82:00.0", "0000:42:00.0")


class NpuSmiParseError(AlaunchError):
    """The text is not an ``npu-smi info`` table (or a row in it cannot be read)."""


@dataclass(frozen=True)
class NpuProcess:
    """One row of the process table: who holds HBM on which card."""

    npu_id: int
    chip_id: int
    pid: int
    name: str
    memory_mb: int


@dataclass(frozen=True)
class NpuCard:
    """One NPU as ``npu-smi info`` shows it (two table rows: the card and its chip)."""

    npu_id: int
    name: str  # e.g. 910B2, 310B4
    health: str  # OK, Warning, Alarm, Critical, ...
    power_w: float | None
    temp_c: int | None
    hugepages_used: int | None
    hugepages_total: int | None
    chip_id: int
    bus_id: str  # e.g. 0000:C1:00.0, or NA (310B)
    aicore_pct: int | None
    memory_used_mb: int | None
    memory_total_mb: int | None
    hbm_used_mb: int | None  # None where the board has no HBM (310B)
    hbm_total_mb: int | None
    processes: tuple[NpuProcess, ...] = field(default=())

    @property
    def healthy(self) -> bool:
        return self.health == HEALTH_OK

    def busy(self, hbm_threshold_mb: int = DEFAULT_BUSY_HBM_MB) -> bool:
        """Another job holds this card: a process is listed, or HBM use is above the threshold."""
        return bool(self.processes) or (self.hbm_used_mb is not None
                                         and self.hbm_used_mb > hbm_threshold_mb)


# --------------------------------------------------------------------------- parsing

_VERSION_RE = re.compile(r"npu-smi\s+(\S+)\s+Version:\s*(\S+)")
_CARD_CELL_RE = re.compile(r"(\d+)\s+(\S+)")
_CHIP_CELL_RE = re.compile(r"(\d+)(?:\s+\S+)?")
_CARD_METRICS_RE = re.compile(r"(\S+)\s+(\S+)(?:\s+(\d+)\s*/\s*(\d+))?")
_CHIP_METRICS_RE = re.compile(r"(\S+)\s+(\d+)\s*/\s*(\d+)(?:\s+(\d+)\s*/\s*(\d+))?")
_NO_PROCESS_RE = re.compile(r"No running processes found in NPU\s+(\d+)")
_PROC_CELL_RE = re.compile(r"(\d+)\s+(\d+)")


@overload
def _num(text: str | None) -> int | None: ...
@overload
def _num(text: str | None, kind: type[float]) -> float | None: ...
def _num(text: str | None, kind: type[int] | type[float] = int) -> int | float | None:
    if text is None:
        return None
    try:
        return kind(text)
    except ValueError:
        return None  # npu-smi prints NA / - for values a board does not report


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


@dataclass
class _Table:
    version: str | None = None
    cards: list[NpuCard] = field(default_factory=list)
    processes: list[NpuProcess] = field(default_factory=list)


class _Parser:
    """Walks the lines once; knows which section it is in (cards or processes)."""

    def __init__(self, text: str):
        self.lines = text.splitlines()
        self.table = _Table()
        self.pending: tuple[int, list[str]] | None = None  # card row waiting for its chip row

    def error(self, lineno: int, message: str) -> NpuSmiParseError:
        return NpuSmiParseError(f"npu-smi output line {lineno}: {message}: "
                                f"{self.lines[lineno - 1].strip()[:100]!r}")

    def parse(self) -> _Table:
        header_seen = False
        section = None
        for lineno, line in enumerate(self.lines, start=1):
            stripped = line.strip()
            if not stripped.startswith("|"):
                if stripped.startswith("+") and self.pending is not None:
                    raise self.error(self.pending[0], "card row without its chip/bus-id row")
                continue
            cells = _cells(stripped)
            first = cells[0]
            m = _VERSION_RE.search(stripped)
            if m and self.table.version is None:
                self.table.version = m.group(2)
                continue
            if first.startswith("NPU") and len(cells) >= 3 and "Health" in cells[1]:
                header_seen, section = True, "cards"
                continue
            if first.startswith("NPU") and any("Process id" in c for c in cells):
                section = "processes"
                continue
            if section == "cards":
                self._card_line(lineno, cells)
            elif section == "processes":
                self._process_line(lineno, cells)
        if self.table.version is None or not header_seen:
            head = next((ln.strip() for ln in self.lines if ln.strip()), "")
            raise NpuSmiParseError(
                "not an npu-smi table: expected the 'npu-smi <ver> Version: <ver>' line and the "
                f"'NPU Name | Health | Power(W) ...' header; got {head[:80]!r}")
        return self.table

    def _card_line(self, lineno: int, cells: list[str]) -> None:
        if len(cells) < 3:
            return  # a row we do not know: tolerated
        if self.pending is None:
            if _CARD_CELL_RE.fullmatch(cells[0]):
                self.pending = (lineno, cells)
            return
        card_lineno, card_cells = self.pending
        self.pending = None
        if not _CHIP_CELL_RE.fullmatch(cells[0]):
            raise self.error(lineno, "expected the chip row (chip id, bus id, AICore, memory)")
        self.table.cards.append(self._card(card_lineno, card_cells, lineno, cells))

    def _card(self, l1: int, c1: list[str], l2: int, c2: list[str]) -> NpuCard:
        npu = _CARD_CELL_RE.fullmatch(c1[0])
        m1 = _CARD_METRICS_RE.fullmatch(c1[2])
        if not npu or not m1:
            raise self.error(l1, "cannot read power / temperature / hugepages")
        m2 = _CHIP_METRICS_RE.fullmatch(c2[2])
        if not m2:
            raise self.error(l2, "cannot read AICore / memory / HBM usage")
        return NpuCard(
            npu_id=int(npu.group(1)), name=npu.group(2), health=c1[1],
            power_w=_num(m1.group(1), float), temp_c=_num(m1.group(2)),
            hugepages_used=_num(m1.group(3)), hugepages_total=_num(m1.group(4)),
            chip_id=int(c2[0].split()[0]), bus_id=c2[1],
            aicore_pct=_num(m2.group(1)),
            memory_used_mb=_num(m2.group(2)), memory_total_mb=_num(m2.group(3)),
            hbm_used_mb=_num(m2.group(4)), hbm_total_mb=_num(m2.group(5)),
        )

    def _process_line(self, lineno: int, cells: list[str]) -> None:
        if len(cells) == 1 and _NO_PROCESS_RE.fullmatch(cells[0]):
            return
        if len(cells) < 4 or not _PROC_CELL_RE.fullmatch(cells[0]):
            return  # unknown row: tolerated
        pid, memory = _num(cells[1]), _num(cells[3])
        if pid is None or memory is None:
            raise self.error(lineno, "cannot read process id / memory")
        npu, chip = (int(x) for x in cells[0].split())
        self.table.processes.append(NpuProcess(npu, chip, pid, cells[2], memory))


def parse_npu_smi(text: str) -> list[NpuCard]:
    """Cards of an ``npu-smi info`` output, each with the processes that hold it."""
    table = _Parser(text).parse()
    by_npu: dict[int, list[NpuProcess]] = {}
    for proc in table.processes:
        by_npu.setdefault(proc.npu_id, []).append(proc)
    return [NpuCard(**{**card.__dict__, "processes": tuple(by_npu.get(card.npu_id, ()))})
            for card in table.cards]


def parse_npu_smi_version(text: str) -> str | None:
    """The driver tool's version from the first line (``23.0.7``), or None."""
    m = _VERSION_RE.search(text)
    return m.group(2) if m else None


# --------------------------------------------------------------------------- summary

@dataclass(frozen=True)
class NpuSummary:
    count: int
    all_healthy: bool
    unhealthy: tuple[tuple[int, str], ...]  # (npu id, health)
    busy: tuple[int, ...]  # npu ids
    description: str


def _gb(mb: int) -> str:
    return f"{mb / 1024:.1f}".removesuffix(".0")


def summarize(cards: Sequence[NpuCard], busy_hbm_mb: int = DEFAULT_BUSY_HBM_MB) -> NpuSummary:
    """Count, health and busy cards, plus one line for a table cell.

    e.g. ``8x 910B2, all OK, 4 busy (HBM 29.3/64 GiB)`` -- npu-smi's MB are MiB (its 65536 MB
    card is 64 GiB); the figure is the busiest card's use.
    """
    if not cards:
        return NpuSummary(0, False, (), (), "no NPUs")
    names = Counter(c.name for c in cards)
    parts = [" + ".join(f"{n}x {name}" for name, n in names.items())]
    unhealthy = tuple((c.npu_id, c.health) for c in cards if not c.healthy)
    if not unhealthy:
        parts.append(f"all {HEALTH_OK}")
    else:
        by_health: dict[str, list[str]] = {}
        for npu, health in unhealthy:
            by_health.setdefault(health, []).append(str(npu))
        parts.append(", ".join(f"{health} on NPU {','.join(ids)}" for health, ids in by_health.items()))
    busy_cards = [c for c in cards if c.busy(busy_hbm_mb)]
    if busy_cards:
        with_hbm = [c for c in busy_cards if c.hbm_used_mb is not None and c.hbm_total_mb]
        detail = []
        if with_hbm:
            top = max(with_hbm, key=lambda c: c.hbm_used_mb or 0)
            detail.append(f"HBM {_gb(top.hbm_used_mb or 0)}/{_gb(top.hbm_total_mb or 0)} GiB")
        nproc = sum(len(c.processes) for c in busy_cards)
        if nproc:
            detail.append(f"{nproc} process{'es' if nproc > 1 else ''}")
        parts.append(f"{len(busy_cards)} busy ({', '.join(detail)})")
    else:
        parts.append("idle")
    return NpuSummary(len(cards), not unhealthy, unhealthy,
                      tuple(c.npu_id for c in busy_cards), ", ".join(parts))


# --------------------------------------------------------------------------- rendering

_WIDTH = 96  # between the outer '|'
_BORDER = "+" + "-" * _WIDTH + "+"
_CARD_SEP = "+" + "-" * 27 + "+" + "-" * 15 + "+" + "-" * 52 + "+"
_ROW_SEP = "+" + "=" * 27 + "+" + "=" * 15 + "+" + "=" * 52 + "+"
_HEAD_1 = "| NPU   Name                | Health        | Power(W)    Temp(C)           Hugepages-Usage(page)|"
_HEAD_2 = "| Chip                      | Bus-Id        | AICore(%)   Memory-Usage(MB)  HBM-Usage(MB)        |"
_PROC_HEAD = "| NPU     Chip              | Process id    | Process name             | Process memory(MB)      |"


def _s(value: object) -> str:
    if value is None:
        return "NA"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def _pair(used: int | None, total: int | None, width: int) -> str:
    if used is None and total is None:
        return " " * (5 + 2 + width)
    return f"{_s(used):<5}/ {_s(total):<{width}}"


def _card_rows(c: NpuCard) -> list[str]:
    row1 = (f"| {c.npu_id:<6}{c.name:<20}| {c.health:<14}| "
            f"{_s(c.power_w):<12}{_s(c.temp_c):<18}{_pair(c.hugepages_used, c.hugepages_total, 14)}|")
    row2 = (f"| {c.chip_id:<26}| {c.bus_id:<14}| {_s(c.aicore_pct):<12}"
            f"{_pair(c.memory_used_mb, c.memory_total_mb, 11)}"
            f"{_pair(c.hbm_used_mb, c.hbm_total_mb, 14)}|")
    return [row1, row2, _ROW_SEP]


def _process_rows(c: NpuCard) -> list[str]:
    if not c.processes:
        return [f"| {'No running processes found in NPU ' + str(c.npu_id):<95}|", _ROW_SEP]
    rows = [f"| {p.npu_id:<8}{p.chip_id:<18}| {p.pid:<14}| {p.name:<25}| {p.memory_mb:<24}|"
            for p in c.processes]
    return rows + [_ROW_SEP]


def render_npu_smi_table(cards: Sequence[NpuCard], version: str = DEFAULT_VERSION) -> str:
    """``npu-smi info`` output for these cards, in npu-smi 23.0.7's exact layout."""
    lines = [_BORDER, f"| npu-smi {version:<25}Version: {version:<53}|", _CARD_SEP,
             _HEAD_1, _HEAD_2, _ROW_SEP]
    for card in cards:
        lines += _card_rows(card)
    lines += [_CARD_SEP, _PROC_HEAD, _ROW_SEP]
    for card in cards:
        lines += _process_rows(card)
    return "\n".join(lines) + "\n"


def make_910b_cards(count: int, *, name: str = "910B2", health: str | Sequence[str] = HEALTH_OK,
                    hbm_used_mb: int | Sequence[int] = 3347, hbm_total_mb: int = 65536,
                    processes: dict[int, Sequence[tuple[int, str, int]]] | None = None) -> list[NpuCard]:
    """``count`` plausible 910B cards for an emulator: health and HBM use per card or for all.

    ``processes`` maps an npu id to (pid, name, memory MB) rows. Power and temperature are
    fixed plausible figures; bus ids follow an Atlas 800T A2's.
    """
    def per_card(value, i):
        return value if isinstance(value, (str, int)) else value[i]

    cards = []
    for i in range(count):
        bus = ATLAS_800T_A2_BUS_IDS[i] if i < len(ATLAS_800T_A2_BUS_IDS) else f"0000:{0x10 + i:02X}:00.0"
        procs = tuple(NpuProcess(i, 0, pid, pname, mem) for pid, pname, mem in (processes or {}).get(i, ()))
        cards.append(NpuCard(
            npu_id=i, name=name, health=per_card(health, i), power_w=95.0 + (i % 4) / 2,
            temp_c=35 + i % 4, hugepages_used=0, hugepages_total=0, chip_id=0, bus_id=bus,
            aicore_pct=0, memory_used_mb=0, memory_total_mb=0,
            hbm_used_mb=per_card(hbm_used_mb, i), hbm_total_mb=hbm_total_mb, processes=procs))
    return cards
