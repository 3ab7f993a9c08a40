"""The recipe applied to a deduplicated raw set: classify, sample per quota, rewrite answers.

Pure logic (no files): :func:`run` takes the :class:`RawSet` and the :class:`Recipe` and
returns the examples and the report's numbers, so every property of the recipe is
testable on in-memory data. Sampling order is fixed (recipe's quota order, then the
remaining buckets by name) and drives one ``random.Random(seed)``: same seed, same
sample; the chosen rows keep their first-occurrence order.
"""

from __future__ import annotations

import heapq
import random
from collections import Counter
from dataclasses import dataclass, field

from launcher.data import families as F
from launcher.data import templates as T
from launcher.data.bulk import gc_paused
from launcher.data.rawio import RawSet
from launcher.data.recipe import UNCLASSIFIED, Recipe

TOP_REPEATED = 10
UNCLASSIFIED_SAMPLE = 10


@dataclass(frozen=True)
class Example:
    """One output row: the raw question, its prompt and the (rewritten) answer."""

    index: int  # position among the unique raw rows
    bucket: str
    problem: str
    prompt: str
    answer: str


@dataclass
class BucketStats:
    bucket: str
    family: str
    available: int
    quota: int | None  # None: take all (unclassified kept without a quota)
    sampled: int = 0

    @property
    def shortfall(self) -> int:
        return 0 if self.quota is None else max(0, self.quota - self.available)


@dataclass
class Outcome:
    train: list[Example]
    test: list[Example]
    buckets: list[BucketStats]
    family_counts: dict[str, int]
    unclassified: int
    unclassified_sample: list[str]
    top_repeated: list[tuple[str, int]]
    answers_without_number: int
    notes: list[str] = field(default_factory=list)


def _family_of_bucket(bucket: str) -> str:
    if bucket in F.OPERATION_BUCKETS.values():
        return F.ARITHMETIC
    if bucket.startswith("power_"):
        return F.POWER
    return bucket


def group_by_bucket(rows: list[tuple[str, str]]) -> tuple[dict[str, list[int]], list[int]]:
    """Row indices per bucket (in first-occurrence order) and the unclassified indices."""
    return F.group_buckets([problem for problem, _ in rows])


def sampling_order(recipe: Recipe, buckets: list[str]) -> list[str]:
    listed = [b for b in recipe.quotas if b in buckets]
    return listed + sorted(b for b in buckets if b not in recipe.quotas)


def _largest_remainder(total: int, weights: dict[str, int]) -> dict[str, int]:
    """Split ``total`` in proportion to ``weights`` (ties broken by name: deterministic)."""
    wsum = sum(weights.values())
    if not wsum or total <= 0:
        return {k: 0 for k in weights}
    exact = {k: total * w / wsum for k, w in weights.items()}
    share = {k: int(v) for k, v in exact.items()}
    rest = total - sum(share.values())
    for k in sorted(weights, key=lambda k: (-(exact[k] - share[k]), k))[:rest]:
        share[k] += 1
    return share


def top_repeated(raw: RawSet, n: int = TOP_REPEATED) -> list[tuple[str, int]]:
    """The (problem, solution) rows repeated most often in the raw set, as (problem, count)."""
    counts = raw.counts
    top = heapq.nlargest(n, range(len(counts)), key=counts.__getitem__)
    return [(raw.rows[i][0], counts[i]) for i in top if counts[i] > 1]


def run(raw: RawSet, recipe: Recipe, *, seed: int | None = None, test_rows: int = 0) -> Outcome:
    """Apply ``recipe`` to ``raw``: the train sample, an optional held-out test split, stats."""
    with gc_paused():
        return _run(raw, recipe, seed=seed, test_rows=test_rows)


def _run(raw: RawSet, recipe: Recipe, *, seed: int | None, test_rows: int) -> Outcome:
    rng = random.Random(recipe.seed if seed is None else seed)
    groups, unclassified = group_by_bucket(raw.rows)
    if recipe.unclassified == "keep" and unclassified:
        groups[UNCLASSIFIED] = unclassified
    family_counts: Counter[str] = Counter()
    for bucket, idx in groups.items():
        if bucket != UNCLASSIFIED:
            family_counts[_family_of_bucket(bucket)] += len(idx)

    stats: list[BucketStats] = []
    chosen: list[int] = []
    for bucket in sampling_order(recipe, list(groups)):
        pool = groups[bucket]
        quota = recipe.quota(bucket)
        take = len(pool) if quota is None else min(quota, len(pool))
        picked = pool if take == len(pool) else rng.sample(pool, take)
        chosen.extend(picked)
        family = UNCLASSIFIED if bucket == UNCLASSIFIED else _family_of_bucket(bucket)
        stats.append(BucketStats(bucket, family, len(pool), quota, take))
    for bucket in recipe.quotas:  # listed buckets with nothing available still show up
        if bucket not in groups and bucket != UNCLASSIFIED:
            stats.append(BucketStats(bucket, _family_of_bucket(bucket), 0, recipe.quota(bucket)))
    chosen.sort()

    test_idx = _test_split(raw, groups, chosen, stats, test_rows, rng)
    templates = frozenset(recipe.templates)
    rounded = frozenset(recipe.round_one_decimal)
    missing = 0

    def build(i: int) -> Example:
        nonlocal missing
        problem, solution = raw.rows[i]
        parsed = F.parse(problem)
        if parsed is not None and T.NUMBER.search(solution) is None:
            missing += 1
        bucket = parsed.bucket if parsed else UNCLASSIFIED
        ans = T.answer(parsed, solution, templates=templates, rounded=rounded)
        return Example(i, bucket, problem, T.wrap(problem, recipe.prompt), ans)

    train = [build(i) for i in chosen]
    test = [build(i) for i in test_idx]
    notes = [f"{s.bucket}: quota {s.quota} but only {s.available} available; took all"
             for s in stats if s.shortfall]
    if len(test) < test_rows:
        notes.append(f"test split: asked for {test_rows}, only {len(test)} held-out rows left "
                     "in the sampled buckets")
    return Outcome(
        train=train, test=test, buckets=stats, family_counts=dict(family_counts),
        unclassified=len(unclassified),
        unclassified_sample=[raw.rows[i][0] for i in unclassified[:UNCLASSIFIED_SAMPLE]],
        top_repeated=top_repeated(raw), answers_without_number=missing, notes=notes)


def _test_split(raw: RawSet, groups: dict[str, list[int]], chosen: list[int],
                stats: list[BucketStats], test_rows: int, rng: random.Random) -> list[int]:
    """Held-out unique rows, spread over the sampled buckets like the train quotas.

    A test row is neither a train row nor shares a train row's problem text.
    """
    if test_rows <= 0:
        return []
    in_train = set(chosen)
    rows = raw.rows
    train_problems = {rows[i][0] for i in chosen}
    sampled = {s.bucket: s.sampled for s in stats if s.sampled and s.bucket != UNCLASSIFIED}
    share = _largest_remainder(test_rows, sampled)
    picked: list[int] = []

    def held_out(i: int) -> bool:
        return i not in in_train and rows[i][0] not in train_problems

    for bucket in sorted(share):
        pool, want = groups[bucket], share[bucket]
        if len(pool) >= 4 * (want + sampled[bucket]):
            # plenty left: draw at random and reject train rows, without a pass over the pool
            got: list[int] = []
            seen: set[int] = set()
            while len(got) < want and len(seen) < len(pool):
                i = pool[int(rng.random() * len(pool))]
                if i not in seen:
                    seen.add(i)
                    if held_out(i):
                        got.append(i)
        else:
            left = [i for i in pool if held_out(i)]
            got = rng.sample(left, min(want, len(left)))
        picked.extend(got)
    return sorted(picked)
