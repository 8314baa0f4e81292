"""`--fail-if COLUMN<OP>VALUE`: pass/fail thresholds on a run's rows, for CI (exit 3).

An expression fails when any row matches it: `success_rate<0.99` fails at every level whose
success rate is below 0.99. Parsed and checked against the experiment's numeric columns before
anything runs; evaluated on the rows as written to the CSV.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from asyncbench.errors import UsageError

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt,
}
SHOWN = 10  # failing rows named on the console per threshold
_EXPR = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(<=|>=|<|>)\s*(\S+)\s*$")


@dataclass
class Threshold:
    """One `--fail-if` expression, and the rows that failed it."""

    text: str
    column: str
    op: str
    bound: float
    failed: list[str] = field(default_factory=list)  # the rows that matched, by name

    def matches(self, value: float) -> bool:
        return _OPS[self.op](value, self.bound)


def numeric_columns(row_type: type) -> list[str]:
    """The columns of a row dataclass a threshold can test: its int and float fields."""
    return [f.name for f in fields(row_type) if str(f.type) in ("int", "float")]


def parse(expressions: Iterable[str], row_type: type) -> list[Threshold]:
    """Parse `--fail-if` expressions; UsageError naming the first bad one."""
    numeric = numeric_columns(row_type)
    out: list[Threshold] = []
    for text in expressions:
        m = _EXPR.match(text)
        if m is None:
            raise UsageError(f"invalid --fail-if {text!r}: expected COLUMN<OP>VALUE with OP one of "
                             "< <= > >=, e.g. 'success_rate<0.99' or 'latency_p99_s>0.25'")
        column, op, value = m.groups()
        if column not in numeric:
            raise UsageError(f"invalid --fail-if {text!r}: no numeric column {column!r} "
                             f"(columns: {', '.join(numeric)})")
        try:
            bound = float(value)
        except ValueError:
            bound = math.nan
        if not math.isfinite(bound):
            raise UsageError(f"invalid --fail-if {text!r}: {value!r} is not a number")
        out.append(Threshold(text.strip(), column, op, bound))
    return out


def evaluate(thresholds: Sequence[Threshold], rows: Iterable[Mapping[str, Any]],
             name: Callable[[Mapping[str, Any]], str]) -> list[str]:
    """Record in each threshold the rows that fail it; return the lines that say so (the first
    SHOWN failures of each threshold, then how many more)."""
    lines: list[str] = []
    for t in thresholds:
        for row in rows:
            value = row.get(t.column)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and t.matches(float(value)):
                t.failed.append(name(row))
                if len(t.failed) <= SHOWN:
                    lines.append(f"--fail-if {t.text}: {name(row)} has {t.column} = {value:g}")
        if len(t.failed) > SHOWN:
            lines.append(f"--fail-if {t.text}: and {len(t.failed) - SHOWN:,} more rows (all in the JSON's thresholds)")
    return lines


def summary(thresholds: Sequence[Threshold]) -> list[dict[str, Any]]:
    """The sidecar's `thresholds`: each expression with the rows that failed it."""
    return [{"expr": t.text, "failed": t.failed} for t in thresholds]
