"""Two runs of a sweep, level by level: is the candidate better, worse, or the same as the
baseline? A change counts only when it is beyond the tolerance *and* beyond the runs' own
spread (the range of their rounds), so noise is not called a regression.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# The figures compared, and which way is better.
METRICS: tuple[tuple[str, str, bool], ...] = (
    ("goodput_rps", "goodput", True),
    ("latency_p50_s", "p50", False),
    ("latency_p99_s", "p99", False),
)


@dataclass
class Change:
    """One figure at one level in both runs."""

    metric: str
    base: float
    cand: float
    spread: float  # the two runs' own spread (their rounds' ranges, added)
    verdict: str  # "better", "worse", "no change"

    @property
    def relative(self) -> float:
        return (self.cand - self.base) / self.base if self.base else 0.0


@dataclass
class LevelComparison:
    level: int
    changes: list[Change] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        verdicts = {c.verdict for c in self.changes}
        if "worse" in verdicts:
            return "worse"
        return "better" if "better" in verdicts else "no change"


def _spread(rounds: Mapping[str, Any], level: int, metric: str, row: Mapping[str, Any]) -> float:
    """The range of a figure over a level's rounds (0 with one round, or none recorded)."""
    figures = [r.get(metric) for r in rounds.get(str(level), []) if isinstance(r, Mapping)]
    values = [float(v) for v in figures if isinstance(v, (int, float))]
    if len(values) >= 2:
        return max(values) - min(values)
    if metric == "goodput_rps" and "goodput_min_rps" in row and "goodput_max_rps" in row:
        return float(row["goodput_max_rps"]) - float(row["goodput_min_rps"])
    return 0.0


def compare(base_rows: Sequence[Mapping[str, Any]], cand_rows: Sequence[Mapping[str, Any]],
            base_rounds: Mapping[str, Any], cand_rounds: Mapping[str, Any], tolerance: float) -> list[LevelComparison]:
    """Every level both runs measured, each figure judged against the tolerance and the spread."""
    base_by = {int(r["level"]): r for r in base_rows}
    cand_by = {int(r["level"]): r for r in cand_rows}
    out: list[LevelComparison] = []
    for level in sorted(set(base_by) & set(cand_by)):
        b, c = base_by[level], cand_by[level]
        comparison = LevelComparison(level)
        for metric, _, higher_is_better in METRICS:
            bv, cv = float(b[metric]), float(c[metric])
            spread = _spread(base_rounds, level, metric, b) + _spread(cand_rounds, level, metric, c)
            moved = abs(cv - bv) > max(tolerance * abs(bv), spread)
            improved = (cv > bv) == higher_is_better
            comparison.changes.append(Change(metric, bv, cv, spread,
                                             "no change" if not moved else ("better" if improved else "worse")))
        out.append(comparison)
    return out


def overall(levels: Sequence[LevelComparison]) -> str:
    """worse if any level is; better if some are and none is worse; else no change."""
    verdicts = {lv.verdict for lv in levels}
    if "worse" in verdicts:
        return "worse"
    return "better" if "better" in verdicts else "no change"
