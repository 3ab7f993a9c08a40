"""NPU telemetry of a running job (pure): each card's samples kept compact, its summary, and
the story rules that say when a card needs a person's eyes.

A node's follower sends its ``npu-smi info`` table every few seconds
(``launcher/remote/follow.py``'s ``T`` message); :mod:`launcher.ops.telemetry` parses it and
hands each of the job's cards here as a :class:`CardSample`.

Storage (:class:`CardSeries`): every sample updates the card's last value and its min/max; the
chart series keeps at most :data:`MAX_POINTS` points. When it is full, neighbouring points are
merged in pairs (their mean; the resolution halves) and new samples are averaged into
buckets of the new width. So a card costs the same whatever the job's length: 120 points of
``[t, aicore, hbm MB, power W, temp C]`` are ~4 KB of JSON (measured in
tests/test_telemetry.py), a 5 s raw series for the first 10 minutes, 30 s buckets after an
hour, 5 min after ten: what a chart of AI Core %, HBM and power per card needs. Raw samples
are not kept: an hour at 5 s is 720 samples a card, ~23 KB.

The story (:class:`TelemetryWatch`): HBM above 95 % of the card, health not OK (npu-smi's own
verdict: Warning, Alarm, Critical, UNKNOWN), the temperature at or above
:data:`TEMP_ALARM_C`, and a card at 0 % AI Core for :data:`IDLE_AFTER_S` while its rank is
mid-step (it has logged a step and not its last: past the graph compile, which keeps AI Core
at 0 for minutes on a real NPU). Each is said once when it starts and again only after it
cleared (hysteresis), so a card that hovers at the limit does not repeat itself every sample.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MAX_POINTS = 120  # chart points kept per card (see the module docstring for the size)
HBM_ALARM = 0.95  # share of the card's HBM in use that is said (an OOM is near)
HBM_CLEAR = 0.90  # ... and said again only after it fell below this
# No real fixture shows an alarm temperature (loaded 910B cards read 40-70 C in them); npu-smi
# raises its Health to Warning/Alarm at the board's own limit, which the health rule reports.
# This is an early word below that: an assumption, not a measured threshold.
TEMP_ALARM_C = 90
TEMP_CLEAR_C = 85
IDLE_AFTER_S = 60.0  # a card idle this long while its rank is mid-step is said
METRICS = ("aicore_pct", "hbm_used_mb", "power_w", "temp_c")


@dataclass(frozen=True)
class CardSample:
    """One card in one ``npu-smi info`` table; ``t`` is when it arrived (epoch seconds)."""

    t: float
    aicore_pct: int | None
    hbm_used_mb: int | None
    hbm_total_mb: int | None
    power_w: float | None
    temp_c: int | None
    health: str

    def value(self, metric: str) -> float | None:
        v = getattr(self, metric)
        return None if v is None else float(v)

    @property
    def hbm_share(self) -> float | None:
        if self.hbm_used_mb is None or not self.hbm_total_mb:
            return None
        return self.hbm_used_mb / self.hbm_total_mb


def _mean(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return round(sum(known) / len(known), 1) if known else None


def _merge(points: list[list[float | None]]) -> list[float | None]:
    """Points -> one: the first's time, each metric's mean."""
    return [points[0][0], *(_mean([p[i] for p in points]) for i in range(1, 1 + len(METRICS)))]


@dataclass
class CardSeries:
    """One card of one host: last sample, min/max of each metric, the bounded chart series."""

    last: CardSample | None = None
    lo: dict[str, float] = field(default_factory=dict)
    hi: dict[str, float] = field(default_factory=dict)
    points: list[list[float | None]] = field(default_factory=list)  # [t, aicore, hbm, power, temp]
    span: int = 1  # samples per point
    pending: list[list[float | None]] = field(default_factory=list)  # samples of the next point
    samples: int = 0

    def add(self, s: CardSample) -> None:
        self.last, self.samples = s, self.samples + 1
        for m in METRICS:
            v = s.value(m)
            if v is not None:
                self.lo[m] = min(self.lo.get(m, v), v)
                self.hi[m] = max(self.hi.get(m, v), v)
        self.pending.append([round(s.t, 1), *(s.value(m) for m in METRICS)])
        if len(self.pending) >= self.span:
            self.points.append(_merge(self.pending))
            self.pending = []
        if len(self.points) > MAX_POINTS:
            self.points = [_merge(self.points[i:i + 2]) for i in range(0, len(self.points), 2)]
            self.span *= 2

    def to_json(self) -> dict[str, Any]:
        last = self.last
        return {"last": None if last is None else {**{m: getattr(last, m) for m in METRICS}, "t": last.t,
                                                   "health": last.health, "hbm_total_mb": last.hbm_total_mb},
                "min": dict(self.lo), "max": dict(self.hi), "samples": self.samples, "span": self.span,
                "points": self.points + ([_merge(self.pending)] if self.pending else [])}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CardSeries:
        last = data.get("last")
        return cls(last=None if not last else CardSample(
                       float(last["t"]), last.get("aicore_pct"), last.get("hbm_used_mb"), last.get("hbm_total_mb"),
                       last.get("power_w"), last.get("temp_c"), str(last.get("health", ""))),
                   lo=dict(data.get("min") or {}), hi=dict(data.get("max") or {}),
                   points=[list(p) for p in data.get("points") or []], span=int(data.get("span") or 1),
                   samples=int(data.get("samples") or 0))


@dataclass
class JobTelemetry:
    """Every card of a job: host -> card id -> series; ``every`` the sampling period (s)."""

    every: float = 0.0
    cards: dict[str, dict[int, CardSeries]] = field(default_factory=dict)

    def add(self, host: str, card: int, sample: CardSample) -> None:
        self.cards.setdefault(host, {}).setdefault(card, CardSeries()).add(sample)

    def to_json(self) -> dict[str, Any]:
        return {"every": self.every,
                "hosts": {h: {str(c): s.to_json() for c, s in sorted(cards.items())}
                          for h, cards in self.cards.items()}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JobTelemetry:
        return cls(float(data.get("every") or 0.0),
                   {h: {int(c): CardSeries.from_json(s) for c, s in cards.items()}
                    for h, cards in (data.get("hosts") or {}).items()})


# ---------------------------------------------------------------- the story
@dataclass
class _CardWatch:
    hbm: bool = False
    hot: bool = False
    health: str = "OK"
    idle_since: float | None = None
    idle_said: bool = False


@dataclass
class TelemetryWatch:
    """The story rules over a job's samples, one card at a time; each rule says once per episode."""

    cards: dict[tuple[str, int], _CardWatch] = field(default_factory=dict)

    def update(self, host: str, card: int, s: CardSample, rank: int | None = None,
               mid_step: bool = False) -> list[str]:
        """What to tell a person about this sample of ``card`` on ``host`` (``rank`` its worker,
        ``mid_step`` whether that rank has logged a step and not its last)."""
        w = self.cards.setdefault((host, card), _CardWatch())
        who = f"{host} card {card}" + (f" (rank {rank})" if rank is not None else "")
        said: list[str] = []
        share = s.hbm_share
        if share is not None and share > HBM_ALARM and not w.hbm:
            said.append(f"{who}: HBM {share:.0%} in use ({s.hbm_used_mb}/{s.hbm_total_mb} MB): "
                        "an out-of-memory is near")
        w.hbm = share is not None and (share > HBM_CLEAR if w.hbm else share > HBM_ALARM)
        if s.health != w.health and s.health:
            said.append(f"{who}: npu-smi health {s.health}" + (" (was " + w.health + ")" if s.health == "OK" else ""))
            w.health = s.health
        if s.temp_c is not None and s.temp_c >= TEMP_ALARM_C and not w.hot:
            said.append(f"{who}: temperature {s.temp_c} C (alarm at {TEMP_ALARM_C} C)")
        w.hot = s.temp_c is not None and s.temp_c >= (TEMP_CLEAR_C if w.hot else TEMP_ALARM_C)
        said += self._idle(w, who, s, mid_step)
        return said

    @staticmethod
    def _idle(w: _CardWatch, who: str, s: CardSample, mid_step: bool) -> list[str]:
        if s.aicore_pct != 0 or not mid_step:
            w.idle_since, w.idle_said = None, False
            return []
        if w.idle_since is None:
            w.idle_since = s.t
        if w.idle_said or s.t - w.idle_since < IDLE_AFTER_S:
            return []
        w.idle_said = True
        return [f"{who}: AI Core at 0 % for {s.t - w.idle_since:.0f} s while its rank is mid-step "
                "(waiting on a collective, the host, or the data?)"]


def summary_rows(data: JobTelemetry) -> list[dict[str, Any]]:
    """One row per card (host, card, health, last and min/max of each metric): what ``status``
    prints and ``--json`` carries."""
    rows = []
    for host, cards in data.cards.items():
        for card, series in sorted(cards.items()):
            last = series.last
            rows.append({"host": host, "card": card, "health": last.health if last else "",
                         "hbm_total_mb": last.hbm_total_mb if last else None, "samples": series.samples,
                         "at": last.t if last else None,
                         **{m: {"last": last.value(m) if last else None, "min": series.lo.get(m),
                                "max": series.hi.get(m)} for m in METRICS}})
    return rows


def chart_json(data: JobTelemetry) -> dict[str, Any]:
    """The dashboard's field: the sampling period and, per card, its summary row and chart points
    (``[t, aicore %, HBM MB, power W, temp C]``, oldest first)."""
    points = {(h, c): s.to_json()["points"] for h, cards in data.cards.items() for c, s in cards.items()}
    return {"every": data.every, "fields": ["t", *METRICS],
            "cards": [{**row, "points": points[(row["host"], row["card"])]} for row in summary_rows(data)]}
