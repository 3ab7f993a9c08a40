"""The math-accuracy rule in words: shown by ``alaunch score math --help`` and in every report.

Its own module so the help text does not import :mod:`launcher.metrics.mathacc`, whose family
patterns (launcher/data/families.py) take ~10 ms to compile (benchmarks/bench_cli.py).
"""

RULE = (
    "Correct when the final answer is within 0.01 of the reference's: the response is the "
    "prediction with the echoed prompt removed, cut at the first '###' or blank line; its "
    "final answer is its last number (for 'simplify the fraction' problems its last a/b, "
    "correct when numerator and denominator are equal); the reference's is the last number "
    "of the reference solution."
)
