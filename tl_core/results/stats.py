"""How sure can we be about an accuracy, and is one run really better than another?

An accuracy measured on 30 pictures is one number with a wide margin: 90% could be 74-97%. A
beginner comparing two runs needs to hear "these cannot be told apart" when that is the truth. The
arithmetic is small and exact, so it lives here in plain Python (no SciPy at run time):

* :func:`accuracy_interval`: Wilson's 95% score interval for k right out of n, which behaves well
  for small n and for accuracies near 0% or 100% (unlike the textbook normal interval);
  :func:`range_words` says it under a number;
* :func:`mcnemar_p`: the exact McNemar test for two models checked on *the same* pictures (only the
  pictures where they disagree carry information);
* :func:`two_proportion_p`: a two-sided test for accuracies on *different* pictures.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

Z95 = 1.959963984540054
SIGNIFICANCE = 0.05


def accuracy_interval(correct: int, total: int, z: float = Z95) -> tuple[float, float]:
    """Wilson's score interval for ``correct`` out of ``total`` (95% by default); (0, 1) for no pictures."""
    n = int(total)
    if n <= 0:
        return 0.0, 1.0
    k = min(max(int(correct), 0), n)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low, high = max(0.0, centre - half), min(1.0, centre + half)
    return (0.0 if k == 0 else low), (1.0 if k == n else high)


def range_words(accuracy: float | None, total: int | None) -> str:
    """``"95% range: 80-97%"`` for an accuracy measured on ``total`` pictures, for a line under the
    number; "" when either is unknown (a run from before the count was recorded)."""
    if not isinstance(accuracy, (int, float)) or isinstance(accuracy, bool) or not 0 <= accuracy <= 1:
        return ""
    if not isinstance(total, int) or isinstance(total, bool) or total <= 0:
        return ""
    low, high = accuracy_interval(round(accuracy * total), total)
    return f"95% range: {low * 100:.0f}-{high * 100:.0f}%"


def mcnemar_p(only_a_right: int, only_b_right: int) -> float:
    """Exact two-sided McNemar p-value: of the pictures where exactly one model is right, is the
    split further from 50/50 than chance would make it?"""
    b, c = int(only_a_right), int(only_b_right)
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def two_proportion_p(k1: int, n1: int, k2: int, n2: int) -> float:
    """Two-sided p-value that two accuracies measured on different pictures differ (pooled z-test)."""
    if n1 <= 0 or n2 <= 0:
        return 1.0
    p1, p2 = k1 / n1, k2 / n2
    pooled = (k1 + k2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return 1.0 if p1 == p2 else 0.0
    z = abs(p1 - p2) / se
    return math.erfc(z / math.sqrt(2))


@dataclass
class Verdict:
    """Which of two accuracies is better, and whether the difference is real."""

    better: str | None          # the better one's name, None when they are equal
    p_value: float
    real: bool                  # p < SIGNIFICANCE
    paired: bool                # compared on the same pictures (McNemar) or not
    sentence: str


def compare_accuracies(name_a: str, correct_a: int, total_a: int, name_b: str, correct_b: int, total_b: int,
                       disagreements: tuple[int, int] | None = None) -> Verdict:
    """One plain sentence on which is better and whether the difference is real.

    ``disagreements`` = (pictures only A got right, pictures only B got right) when both were checked
    on the same pictures: then the exact McNemar test is used, which is much more sensitive.
    """
    acc_a = correct_a / total_a if total_a else 0.0
    acc_b = correct_b / total_b if total_b else 0.0
    if disagreements is not None:
        p, paired = mcnemar_p(*disagreements), True
    else:
        p, paired = two_proportion_p(correct_a, total_a, correct_b, total_b), False
    if acc_a == acc_b:
        return Verdict(None, 1.0, False, paired, f"{name_a} and {name_b} got the same accuracy ({acc_a:.0%}).")
    (hi, acc_hi), (lo, acc_lo) = sorted(((name_a, acc_a), (name_b, acc_b)), key=lambda x: -x[1])
    where = "on the same pictures" if paired else "on different pictures"
    if p < SIGNIFICANCE:
        sentence = (f"{hi} is better: {acc_hi:.0%} against {acc_lo:.0%} {where}, and a difference this large is "
                    f"unlikely to be luck (p = {p:.2g}).")
    else:
        sentence = (f"{hi} scored higher ({acc_hi:.0%} against {acc_lo:.0%} {where}), but the two cannot be told "
                    f"apart: a difference this size happens by luck with this few pictures (p = {p:.2g}). Check "
                    "with more pictures before choosing.")
    return Verdict(hi, p, p < SIGNIFICANCE, paired, sentence)


__all__ = ["accuracy_interval", "range_words", "mcnemar_p", "two_proportion_p", "compare_accuracies", "Verdict", "SIGNIFICANCE"]
