"""The prepare report: one dict (saved as report.json) and its rich table rendering.

Built from the reader's and the pipeline's numbers only, so the JSON and the table can
never disagree; the table is just a view of the dict.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

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


def render(report: dict[str, Any], console: Console) -> None:
    """Print the report as tables (plain text when the console is not a terminal)."""
    rows = report["rows"]
    summary = Table(title=f"data prepare: {report['recipe']} (seed {report['seed']})")
    summary.add_column("rows")
    summary.add_column("count", justify="right")
    for key in ("raw", "duplicates_removed", "unique", "classified", "unclassified",
                "bad_skipped", "sampled", "written", "test"):
        summary.add_row(key.replace("_", " "), f"{rows[key]:,}")
    console.print(summary)

    buckets = Table(title="per bucket")
    for col in ("bucket", "family", "available", "quota", "sampled", "note"):
        buckets.add_column(col, justify="right" if col in ("available", "quota", "sampled") else "left")
    for b in report["buckets"]:
        quota = "all" if b["quota"] is None else f"{b['quota']:,}"
        note = f"short by {b['shortfall']:,}: took all" if b["shortfall"] else ""
        buckets.add_row(b["bucket"], b["family"], f"{b['available']:,}", quota, f"{b['sampled']:,}", note)
    console.print(buckets)

    top = Table(title="most repeated prompts")
    top.add_column("count", justify="right")
    top.add_column("problem")
    for item in report["top_repeated_prompts"]:
        top.add_row(f"{item['count']:,}", item["problem"])
    console.print(top)

    unc = report["unclassified"]
    if unc["count"]:
        console.print(f"unclassified rows: {unc['count']:,} ({unc['policy']}); e.g. "
                      + "; ".join(repr(p) for p in unc["sample"][:3]), markup=False)
    tokens = report.get("tokens")
    if tokens:
        console.print(f"tokens: seq_length {tokens['seq_length']}, longest {tokens['longest']}, "
                      f"truncated rows {tokens['truncated_rows']:,}", markup=False)
    for note in report["notes"]:
        console.print(f"note: {note}", markup=False)
