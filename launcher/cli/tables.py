"""Tables that degrade by priority at any width (``jobs``, ``status``, ``hosts check``, pipelines).

Measured reason (issue #33): rich fits a table to the terminal by wrapping every column, so
``alaunch jobs`` at 80 columns took 255 lines for four jobs (nodes and reason one character
per line), a queue reason made one cell 28 lines tall at 120 columns, and ``hosts check``
split ``10.213.0.10`` into ``10.213.0.1`` / ``0`` (read as another host).

Here every cell is one line and the width is spent by priority, in this order until the
table fits: KEEP columns (state, nodes, age, host) never lose a character (a column may offer
a shorter whole form, e.g. ``h1 +3`` for a node list); TEXT columns of a lower priority than
an ID column go before the ID shrinks to the shortest prefix that is unique in the registry
(``Registry.get`` takes a unique prefix everywhere a job is named); TEXT columns (reason,
detail, verdict) that cannot keep their minimum are dropped, lowest priority first, the
others cut at the end with "…", lowest priority first; an ID is ellipsised in the middle only
when nothing else is left to give. ``wide`` prints everything whole. The full text stays in
``status`` (a cut detail or a failed host's verdict is printed under the table) and ``--json``.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: rich is imported when a table is made
    from rich.console import Console
    from rich.table import Table

KEEP, ID, TEXT = "keep", "id", "text"
WHOLE = 10**6  # a TEXT column's min_width for "whole or dropped" (a job kind cut to "finetu…" says nothing)
ELLIPSIS = "…"


@dataclass(frozen=True)
class Column:
    header: str
    kind: str = TEXT  # KEEP, ID or TEXT (see the module docstring)
    priority: int = 0  # TEXT: the lowest is dropped first, and cut first; ID/KEEP with ``short``:
    # text columns below it are dropped before it takes its shorter form
    min_width: int = 8  # TEXT and ID: not narrower than this (the header is never cut)
    short: Callable[[str], str] | None = None  # KEEP and ID: a shorter form of a cell, used when needed
    style: str | None = None


def one_line(text: str) -> str:
    """A cell on one line: newlines and runs of blanks become one space."""
    return " ".join(text.split())


def cut_end(text: str, width: int) -> str:
    return text if len(text) <= width else text[:max(0, width - 1)] + ELLIPSIS


def cut_middle(text: str, width: int) -> str:
    """``llama3-8b-lo…010321-ab12``: both ends kept (the name and the token)."""
    if len(text) <= width:
        return text
    tail = (width - 1) // 2
    head = width - 1 - tail
    return text[:head] + ELLIPSIS + (text[-tail:] if tail else "")


def unique_prefixes(ids: Iterable[str], universe: Iterable[str], names: Iterable[str] = (),
                    minimum: int = 8) -> dict[str, str]:
    """For each id, its shortest prefix (at least ``minimum`` characters) that no other id of
    ``universe`` starts with and that is no job name (a name would win over the prefix in
    ``Registry.get``). In sorted order the ids sharing the longest prefix with one are its
    neighbours, so a 10,000-job registry costs two comparisons per id."""
    import bisect

    others = sorted(set(universe))
    taken = set(names)
    out = {}
    for ident in ids:
        at = bisect.bisect_left(others, ident)
        near = [others[j] for j in (at - 1, at, at + 1) if 0 <= j < len(others) and others[j] != ident]
        n = max([min(minimum, len(ident))] + [_common(ident, o) + 1 for o in near])
        while n < len(ident) and ident[:n] in taken:
            n += 1
        out[ident] = ident[:min(n, len(ident))]
    return out


def _common(a: str, b: str) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def _overhead(n: int) -> int:
    """Columns' padding and rules of rich's default box (edges shown, padding 1 each side)."""
    return 3 * n + 1


def fit(columns: Sequence[Column], rows: Sequence[Sequence[str]], width: int, *,
        wide: bool = False) -> tuple[list[Column], list[int], list[list[str]]]:
    """The pure part: which columns stay, their widths, and the cells as printed."""
    cells = [[one_line(v) for v in row] for row in rows]
    cols = list(range(len(columns)))

    def natural(i: int) -> int:
        return max([len(columns[i].header)] + [len(r[i]) for r in cells])

    widths = {i: natural(i) for i in cols}

    def total() -> int:
        return sum(widths[i] for i in cols) + _overhead(len(cols))

    if not wide:
        floor = {i: max(columns[i].min_width, len(columns[i].header)) for i in cols}

        def least() -> int:  # the width with every text column at its minimum
            return sum(min(widths[i], floor[i]) if columns[i].kind == TEXT else widths[i]
                       for i in cols) + _overhead(len(cols))

        # 1. shorter whole forms (unique id prefixes, "h1 +3"), widest first, while the text
        #    columns would not fit at their minimum; text columns of a lower priority than the
        #    column about to shrink are dropped first (a job's name and kind before its full id)
        for i in sorted((i for i in cols if columns[i].short), key=lambda i: -widths[i]):
            for j in sorted((j for j in cols if columns[j].kind == TEXT and columns[j].priority < columns[i].priority),
                            key=lambda j: columns[j].priority):
                if least() <= width:
                    break
                cols.remove(j)
            if least() <= width:
                break
            short = columns[i].short
            assert short is not None
            for r in cells:
                r[i] = short(r[i])
            widths[i] = natural(i)
        texts = [i for i in cols if columns[i].kind == TEXT]

        def budget() -> int:  # what the text columns may take
            return width - _overhead(len(cols)) - sum(widths[i] for i in cols if columns[i].kind != TEXT)

        # 2. drop text columns, lowest priority first, until the rest fit at their minimum
        for i in sorted(texts, key=lambda i: columns[i].priority):
            if sum(min(widths[j], floor[j]) for j in texts) <= budget():
                break
            texts.remove(i)
            cols.remove(i)
        # 3. cut text columns at the end, lowest priority first, each down to its minimum
        for i in sorted(texts, key=lambda i: columns[i].priority):
            excess = sum(widths[j] for j in texts) - max(0, budget())
            if excess <= 0:
                break
            widths[i] = max(min(widths[i], floor[i]), widths[i] - excess)
        # 4. still too wide (no text left): ids in the middle
        for i in (i for i in cols if columns[i].kind == ID):
            excess = total() - width
            if excess > 0 and widths[i] > floor[i]:
                widths[i] = max(floor[i], widths[i] - excess)
    shown = [list(r) for r in cells]
    for r in shown:
        for i in cols:
            r[i] = (cut_middle if columns[i].kind == ID else cut_end)(r[i], widths[i])
    return ([columns[i] for i in cols], [widths[i] for i in cols],
            [[r[i] for i in cols] for r in shown])


def table(columns: Sequence[Column], rows: Sequence[Sequence[str]], width: int, *, wide: bool = False,
          title: str | None = None, row_styles: Sequence[str | None] | None = None) -> Table:
    """A rich Table of ``rows`` fitted to ``width`` (every row one line; see :func:`fit`)."""
    from rich.table import Table

    kept, widths, cells = fit(columns, rows, width, wide=wide)
    out = Table(title=title)
    for col, w in zip(kept, widths, strict=False):
        out.add_column(col.header, no_wrap=True, overflow="ellipsis", width=w, min_width=w, style=col.style)
    for n, r in enumerate(cells):
        out.add_row(*r, style=row_styles[n] if row_styles else None)
    return out


def cut_rows(tab: Table, header: str, values: Sequence[str]) -> list[int]:
    """The rows whose ``header`` cell the table could not show whole (cut, or the column
    dropped): the caller prints their full text under the table."""
    shown = next((list(c.cells) for c in tab.columns if c.header == header), None)
    return [n for n, v in enumerate(values) if v and (shown is None or shown[n] != one_line(v))]


def print_table(console: Console, tab: Table, *, wide: bool = False) -> None:
    """Print; ``wide`` on a console narrower than the table prints it whole (the terminal wraps
    its lines) instead of letting rich squeeze it again. A title wider than the table is a line
    of its own (rich wrapped ``status``'s "ID (name): state" over the table's width)."""
    need = sum(c.width or 0 for c in tab.columns) + _overhead(len(tab.columns))
    if isinstance(tab.title, str) and len(tab.title) > need:
        console.print(tab.title, markup=False, highlight=False, soft_wrap=True)
        tab.title = None
    if wide:
        from rich.console import Console

        if need > console.width:
            console = Console(file=console.file, width=need, no_color=console.no_color, highlight=False,
                              force_terminal=console.is_terminal)
    console.print(tab)


def wrap_words(console, text: str, indent: int = 0) -> str:
    """On a terminal narrower than ``text``, wrapped at word boundaries (a word is split only
    when it is wider than the line), continuation lines indented by ``indent``: the terminal
    cut words in half ("(stop it" / ": alaunch cancel ..."). In a pipe the line stays whole."""
    if console.is_terminal and len(text) > console.width:
        return textwrap.fill(text, width=max(20, console.width), subsequent_indent=" " * indent,
                             break_on_hyphens=False)
    return text
