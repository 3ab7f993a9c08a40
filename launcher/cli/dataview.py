"""The data-prepare report on the terminal: tables of rows, buckets and repeated prompts."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


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
