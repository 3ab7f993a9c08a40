"""Numbers and units as the CLI and the dashboard print them (pure).

Counts are exact below a million (``81,920``: a LoRA's trainable parameters printed as "0 M"
and "0.00e9 base" said nothing, issue #33), then ``13.6 M`` / ``8.03 B``; sizes are binary
(MiB, GiB) everywhere, as npu-smi's and the disk's figures are.
"""

from __future__ import annotations


def count(n: int) -> str:
    """``81,920``; ``13.6 M``; ``8.03 B``."""
    if n < 10**6:
        return f"{n:,}"
    if n < 10**9:
        return f"{n / 10**6:.1f} M"
    return f"{n / 10**9:.2f} B"


def millions(m: int) -> str:
    """A count a log gave in whole millions (MindFormers 1.9's ``Network Parameters: 0 M``)."""
    return "< 1 M" if m == 0 else f"≈{m} M"
