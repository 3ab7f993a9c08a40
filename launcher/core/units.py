"""Numbers and units as the CLI and the dashboard print them (pure).

Counts are exact (``81,920``: a LoRA's trainable parameters printed as "0 M" and "0.00e9 base"
said nothing, issue #33) up to a billion, then ``8.03 B``; sizes are binary
(MiB, GiB) everywhere, as npu-smi's and the disk's figures are.
"""

from __future__ import annotations


def count(n: int) -> str:
    """``81,920``; ``13,631,488``; ``8.03 B`` (a base model's size, where the digits past the
    third say nothing)."""
    return f"{n:,}" if n < 10**9 else f"{n / 10**9:.2f} B"


def millions(m: int) -> str:
    """A count a log gave in whole millions (MindFormers 1.9's ``Network Parameters: 0 M``)."""
    return "< 1 M" if m == 0 else f"≈{m} M"
