"""Two runs of a sweep, level by level: is the candidate better, worse, or the same as the
baseline? A change counts only when it is beyond the tolerance *and* beyond the runs' own
spread (the range of their rounds), so noise is not called a regression.
"""

from __future__ import annotations

import math
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
    kept = rounds.get(str(level), []) if isinstance(rounds, Mapping) else []
    figures = [r.get(metric) for r in kept if isinstance(r, Mapping)] if isinstance(kept, list) else []
    values = [float(v) for v in figures if isinstance(v, (int, float)) and math.isfinite(v)]
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
        for name, _, higher_is_better in METRICS:
            metric = _successes(name, b, c)
            bv, cv = float(b[metric]), float(c[metric])
            spread = _spread(base_rounds, level, metric, b) + _spread(cand_rounds, level, metric, c)
            moved = abs(cv - bv) > max(tolerance * abs(bv), spread)
            improved = (cv > bv) == higher_is_better
            comparison.changes.append(Change(metric, bv, cv, spread,
                                             "no change" if not moved else ("better" if improved else "worse")))
        out.append(comparison)
    return out


def _successes(metric: str, *rows: Mapping[str, Any]) -> str:
    """A latency is compared over the successes when both runs kept it apart (a server that
    sheds fast would otherwise look faster), over every request otherwise."""
    ok = f"ok_{metric}"
    if metric.startswith("latency_") and all(_number(r.get(ok)) for r in rows):
        return ok
    return metric


def _number(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


# What makes two runs' figures comparable: the same target, served the same way, asked the same.
_SAME_REQUEST = ("method", "headers", "data_sha256")


def differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """How two runs' sidecars differ in what they loaded: the target (the URL, or the embedded
    server's settings: its port aside, which is new each run) and the request's shape. Empty
    when they loaded the same thing."""
    out: list[str] = []
    kind_a, kind_b = a.get("target_kind"), b.get("target_kind")
    if kind_a != kind_b:
        out.append(f"target: {kind_a or '?'} vs {kind_b or '?'}")
    elif kind_a == "embedded":
        sa = a.get("server") if isinstance(a.get("server"), Mapping) else {}
        sb = b.get("server") if isinstance(b.get("server"), Mapping) else {}
        for key in sorted((set(sa) | set(sb)) - {"host", "port"}):
            if sa.get(key) != sb.get(key):
                out.append(f"server {key}: {sa.get(key)} vs {sb.get(key)}")
    elif a.get("target") != b.get("target"):
        out.append(f"target: {a.get('target')} vs {b.get('target')}")
    ca = a.get("config") if isinstance(a.get("config"), Mapping) else {}
    cb = b.get("config") if isinstance(b.get("config"), Mapping) else {}
    for key in _SAME_REQUEST:
        if ca.get(key) != cb.get(key):
            out.append(f"{key}: {ca.get(key)} vs {cb.get(key)}")
    return out


def overall(levels: Sequence[LevelComparison]) -> str:
    """worse if any level is; better if some are and none is worse; else no change."""
    verdicts = {lv.verdict for lv in levels}
    if "worse" in verdicts:
        return "worse"
    return "better" if "better" in verdicts else "no change"
