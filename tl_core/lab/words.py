"""Numbers into plain sentences, honest about how sure they are.

Every Lab conclusion is built from these few helpers so the experiments speak alike. The rule for
"is A better than B" is deliberately simple and conservative: two accuracies measured on the same
checking pictures are called different only when their 95% ranges (Wilson's interval, from
:func:`tl_core.results.stats.accuracy_interval`) do not overlap. With 30 checking pictures, 90% is
74-97% and 93% is 79-98%: the ranges overlap, so the sentence says "we cannot tell apart", which is
the truth a beginner needs (a sharper paired test would need every run's answer per picture, which
the Lab does not keep).
"""
from __future__ import annotations

import math
from typing import Sequence

from tl_core.results.stats import accuracy_interval

# A change smaller than this (in accuracy, 0-1) is "about the same" in a trend sentence.
FLAT = 0.05
# At or above this a category is "right almost always": more pictures have little left to add.
NEAR_TOP = 0.95
# Categories checked on fewer pictures than this get "a rough guide" added to their sentence.
FEW_CHECKING = 20


def pct(x: float | None) -> str:
    """``0.9`` -> ``"90%"``; ``"–"`` for a missing number."""
    return "–" if x is None or not math.isfinite(x) else f"{x:.0%}"


def points(diff: float) -> str:
    """A change in accuracy in percentage points: ``+12 points``."""
    value = round(diff * 100)
    return f"{value:+d} point{'' if abs(value) == 1 else 's'}"


def times(ratio: float) -> str:
    """``2.46`` -> ``"2.5 times"``, ``12.3`` -> ``"12 times"``."""
    return f"{ratio:.1f} times" if ratio < 10 else f"{ratio:.0f} times"


def range_text(ci: Sequence[float] | None) -> str:
    """``(0.74, 0.97)`` -> ``"74-97%"``."""
    if not ci:
        return "–"
    return f"{ci[0] * 100:.0f}-{ci[1] * 100:.0f}%"


def seconds_text(seconds: float | None) -> str:
    """``7.3`` -> ``"7 s"``, ``95`` -> ``"1 min 35 s"``."""
    if seconds is None or not math.isfinite(seconds):
        return "–"
    s = int(round(seconds))
    if s < 60:
        return f"{max(s, 1)} s" if seconds > 0 else "0 s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m} min {s} s" if s else f"{m} min"
    h, m = divmod(m, 60)
    return f"{h} h {m} min"


def wilson(accuracy: float, total: int) -> list[float]:
    """The 95% range of an accuracy measured on ``total`` pictures, as ``[low, high]``."""
    correct = int(round(accuracy * total))
    lo, hi = accuracy_interval(correct, total)
    return [round(lo, 4), round(hi, 4)]


def spread_interval(accuracies: Sequence[float], total: int) -> list[float]:
    """The 95% range for the mean of repeats on the same ``total`` pictures: Wilson's interval of the
    mean, widened to cover every repeat (repeats differ in which pictures were learned from, the
    interval covers which pictures were checked: both kinds of luck are in the range)."""
    mean = sum(accuracies) / len(accuracies)
    lo, hi = wilson(mean, total)
    return [round(min(lo, *accuracies), 4), round(max(hi, *accuracies), 4)]


def overlap(a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether two ``[low, high]`` ranges share any value."""
    return a[0] <= b[1] and b[0] <= a[1]


def tell_apart(name_a: str, acc_a: float, ci_a: Sequence[float], name_b: str, acc_b: float,
               ci_b: Sequence[float], total: int) -> tuple[bool, str]:
    """``(clearly different, one sentence)`` for two accuracies on the same ``total`` checking
    pictures. The sentence names the higher one first and says "cannot tell apart" whenever the
    ranges overlap."""
    (hi_name, hi_acc, hi_ci), (lo_name, lo_acc, lo_ci) = sorted(
        ((name_a, acc_a, ci_a), (name_b, acc_b, ci_b)), key=lambda t: -t[1])
    if not overlap(ci_a, ci_b):
        return True, (f"{_cap(hi_name)} is clearly better: {pct(hi_acc)} against {pct(lo_acc)}, and their 95% ranges "
                      f"({range_text(hi_ci)} and {range_text(lo_ci)}) do not overlap.")
    if abs(hi_acc - lo_acc) < 0.005:
        return False, (f"{_cap(hi_name)} and {lo_name} got the same accuracy ({pct(hi_acc)}) on the {total} checking "
                       "pictures.")
    return False, (f"{_cap(hi_name)} scored higher ({pct(hi_acc)} against {pct(lo_acc)}), but with only {total} pictures "
                   f"to check with we cannot tell apart the two: their 95% ranges ({range_text(hi_ci)} and "
                   f"{range_text(lo_ci)}) overlap.")


def next_best(name: str, acc: float, ci: Sequence[float], best_acc: float, best_ci: Sequence[float],
              total: int) -> tuple[bool, str]:
    """``(clearly different, one sentence)`` comparing the runner-up ``name`` with the best result just
    named in the sentence before (so it is not named again)."""
    ranges = f"their 95% ranges ({range_text(best_ci)} and {range_text(ci)})"
    if not overlap(best_ci, ci):
        return True, f"That is clearly better than the next best, {name} ({pct(acc)}): {ranges} do not overlap."
    if abs(best_acc - acc) < 0.005:
        return False, f"The next best, {name}, got the same {pct(acc)}: we cannot tell apart the two."
    return False, (f"With only {total} pictures to check with, we cannot tell apart this and the next best, {name} "
                   f"({pct(acc)}): {ranges} overlap.")


def category_trend(values: Sequence[float], checked: int | None) -> tuple[str, str]:
    """``(verdict, sentence)`` on whether more pictures of one category are likely to help, from its
    accuracy at each amount of pictures (smallest first). Verdicts: ``"likely to help"``,
    ``"levelling off"``, ``"near the top"``, ``"cannot tell"``."""
    rough = (f" (Checked on only {checked} pictures, so this is a rough guide.)"
             if checked is not None and checked < FEW_CHECKING else "")
    if not values:
        return "cannot tell", "No result for this category yet."
    last = values[-1]
    if len(values) < 2:
        return "cannot tell", f"Only one amount of pictures was tried ({pct(last)} right).{rough}"
    prev = values[-2]
    if last >= NEAR_TOP:
        return "near the top", (f"Already right on {pct(last)} of its checking pictures: more pictures of it have little "
                                f"left to add.{rough}")
    if last - prev >= FLAT:
        return "likely to help", (f"Still rising over the last step ({pct(prev)} to {pct(last)}): more pictures of it "
                                  f"are likely to help.{rough}")
    return "levelling off", (f"Not rising over the last step ({pct(prev)} to {pct(last)}): more pictures of the same "
                             "kind may help little; pictures that show it differently (other angles, light or "
                             f"backgrounds) might.{rough}")


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


__all__ = ["pct", "points", "times", "range_text", "seconds_text", "wilson", "spread_interval", "overlap", "tell_apart", "next_best",
           "category_trend", "FLAT", "NEAR_TOP"]
