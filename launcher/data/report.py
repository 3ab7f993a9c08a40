"""The prepare report: one dict (saved as report.json) and its rich table rendering.

Built from the reader's and the pipeline's numbers only, so the JSON and the table can
never disagree; the table is just a view of the dict.
"""

from __future__ import annotations

from typing import Any

from launcher.data.pipeline import Outcome
from launcher.data.rawio import RawSet
from launcher.data.recipe import Recipe


def build(raw: RawSet, recipe: Recipe, outcome: Outcome, *, seed: int,
          tokens: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything a reader needs to trust the sample, as plain JSON-able data."""
    return {
        "source": raw.source,
        "recipe": recipe.name,
        "seed": seed,
        "rows": {
            "raw": raw.raw_rows,
            "unique": len(raw.rows),
            "duplicates_removed": raw.duplicates,
            "bad_skipped": raw.bad_rows,
            "blank_lines": raw.blank_lines,
            "classified": sum(outcome.family_counts.values()),
            "unclassified": outcome.unclassified,
            "sampled": len(outcome.train),
            "written": len(outcome.train),
            "test": len(outcome.test),
        },
        "families": dict(sorted(outcome.family_counts.items())),
        "buckets": [
            {"bucket": s.bucket, "family": s.family, "available": s.available,
             "quota": s.quota, "sampled": s.sampled, "shortfall": s.shortfall}
            for s in outcome.buckets
        ],
        "unclassified": {"count": outcome.unclassified, "policy": recipe.unclassified,
                         "sample": outcome.unclassified_sample},
        "bad_examples": raw.bad_examples,
        "top_repeated_prompts": [{"problem": p, "count": c} for p, c in outcome.top_repeated],
        "answers_without_number": outcome.answers_without_number,
        "notes": outcome.notes,
        "tokens": tokens,
    }


