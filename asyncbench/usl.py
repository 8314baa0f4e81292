"""The Universal Scalability Law, fitted to a sweep: X(N) = λN / (1 + σ(N−1) + κN(N−1)).

σ is contention (the share of the work that serializes), κ coherency (the cost of the parts
keeping each other in step, which makes throughput fall past a peak), λ the throughput of one.
Fitted by linear least squares on its quadratic form, N/X = (1−σ)/λ + ((σ−κ)/λ)N + (κ/λ)N²
(numpy.polyfit, weighted), as Gunther does it — no hand-written optimizer; a coefficient that
comes out negative is held at 0 and the rest fitted again.

A fit says only what it knows (`judge`): it is fitted over the levels that met the success floor
(shedding is not what the law models), and marked not reliable — with the reason, and no curve
drawn — when fewer than five levels remain for three parameters, when R² is poor, or when it
predicts a peak well above the best measured at a concurrency the sweep went beyond.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

MIN_LEVELS = 4  # three parameters need at least this many points to be fitted at all
RELIABLE_LEVELS = 5  # ... and this many to be believed
POOR_R2 = 0.9
PEAK_MARGIN = 0.10  # a predicted peak this far above the best measured, where the sweep looked, is contradicted


@dataclass
class UslFit:
    lambda_rps: float
    sigma: float
    kappa: float
    r2: float
    peak_level: float | None  # √((1−σ)/κ); None when κ ≈ 0: no peak within reach of the model
    peak_rps: float | None
    max_level: float  # the highest level measured
    reliable: bool = True
    reason: str = ""  # why it is not reliable
    levels_used: int = 0  # levels the fit was made over (those that met the success floor)
    concurrency: str = "level"  # what N is: the level, or the concurrency measured (L = λW)

    def predict(self, n: Any) -> Any:
        n = np.asarray(n, dtype=float)
        return self.lambda_rps * n / (1 + self.sigma * (n - 1) + self.kappa * n * (n - 1))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> UslFit | None:
        """A fit read back from a sidecar; None when it is not one."""
        if not isinstance(data, dict):
            return None
        try:
            numbers = {k: float(data[k]) for k in ("lambda_rps", "sigma", "kappa", "r2", "max_level")}
            peak = {k: None if data.get(k) is None else float(data[k]) for k in ("peak_level", "peak_rps")}
        except (KeyError, TypeError, ValueError):
            return None
        if not all(math.isfinite(v) for v in numbers.values()):
            return None
        return cls(**numbers, **peak, reliable=data.get("reliable") is not False, reason=str(data.get("reason") or ""),
                   levels_used=int(data.get("levels_used") or 0), concurrency=str(data.get("concurrency") or "level"))

    def describe(self) -> str:
        """One line for under the table, saying plainly when the model does not explain much."""
        line = (f"USL fit: σ {self.sigma:.3g}, κ {self.kappa:.3g}, λ {self.lambda_rps:,.3g} req/s, "
                f"R² {self.r2:.2f}")
        if self.concurrency != "level":
            line += f", N = {self.concurrency}"
        if not self.reliable:
            return line + f" — not reliable: {self.reason}; no curve drawn"
        if self.peak_level is not None and self.peak_rps is not None:
            line += f" — predicted peak {self.peak_level:,.0f} at {self.peak_rps:,.0f} req/s"
        if self.r2 < POOR_R2:
            line += f" (a poor fit, R² below {POOR_R2}: the model does not explain this sweep)"
        elif self.peak_level is None:
            line += " (no peak in sight: throughput was still climbing, or the sweep never got near it)"
        elif self.max_level < self.peak_level / 2:
            line += " (the sweep never got near the peak: it is an extrapolation)"
        return line


def fit(levels: Sequence[float], goodputs: Sequence[float]) -> UslFit | None:
    """The USL fitted to goodput by level; None with fewer than MIN_LEVELS usable levels."""
    n = np.asarray(levels, dtype=float)
    x = np.asarray(goodputs, dtype=float)
    keep = (n > 0) & (x > 0) & np.isfinite(x)
    n, x = n[keep], x[keep]
    if len(np.unique(n)) < MIN_LEVELS:
        return None
    y = n / x
    # Weights turn the fit's error in N/X back into an error in X (σ_y = N σ_X / X²), so the
    # fit minimizes what the chart shows.
    w = x * x / n
    c2, c1, c0 = np.polyfit(n, y, 2, w=w)
    if c0 + c1 + c2 <= 0:
        return None
    lam = 1.0 / (c0 + c1 + c2)
    kappa = c2 * lam
    sigma = c1 * lam + kappa
    if sigma < 0:  # contention cannot be negative: fit again with σ = 0, N/X = 1/λ + (κ/λ)N(N−1)
        b, a = np.polyfit(n * (n - 1), y, 1, w=w)
        if a <= 0:
            return None
        lam, kappa, sigma = 1.0 / a, b / a, 0.0
    if kappa < 0:  # nor coherency: fit again with κ = 0, N/X = (1−σ)/λ + (σ/λ)N
        b, a = np.polyfit(n, y, 1, w=w)
        if a + b <= 0:
            return None
        lam, kappa = 1.0 / (a + b), 0.0
        sigma = b * lam
    sigma = min(1.0, max(0.0, sigma))
    kappa = max(0.0, kappa)
    model = UslFit(float(lam), float(sigma), float(kappa), r2=0.0, peak_level=None, peak_rps=None,
                   max_level=float(n.max()))
    predicted = model.predict(n)
    ss_tot = float(((x - x.mean()) ** 2).sum())
    model.r2 = float(1.0 - float(((x - predicted) ** 2).sum()) / ss_tot) if ss_tot > 0 else 0.0
    if kappa > 1e-12:
        model.peak_level = math.sqrt((1 - sigma) / kappa)
        model.peak_rps = float(model.predict(model.peak_level))
    return model


def unfitted(reason: str) -> dict[str, Any]:
    """The sidecar's `usl` for a sweep whose fit could not be made: no figures, and why."""
    return {"lambda_rps": None, "sigma": None, "kappa": None, "r2": None, "peak_level": None, "peak_rps": None,
            "max_level": None, "reliable": False, "reason": reason, "levels_used": 0}


def judge(model: UslFit, used: int, best_rps: float, highest_measured: float) -> UslFit:
    """Mark `model` not reliable, with the reason, when it cannot be believed: fewer than
    RELIABLE_LEVELS levels for its three parameters, a poor R², or a peak above the best
    measured by more than PEAK_MARGIN at a concurrency the sweep measured beyond."""
    model.levels_used = used
    reasons = []
    if used < RELIABLE_LEVELS:
        reasons.append(f"{used} levels for 3 parameters (it needs {RELIABLE_LEVELS})")
    if model.r2 < POOR_R2:
        reasons.append(f"R² {model.r2:.2f} is below {POOR_R2}")
    if (model.peak_level is not None and model.peak_rps is not None and model.peak_level < highest_measured
            and model.peak_rps > best_rps * (1 + PEAK_MARGIN)):
        reasons.append(f"it predicts {model.peak_rps:,.0f} req/s at {model.peak_level:,.0f}, but the sweep measured "
                       f"beyond that and saw at most {best_rps:,.0f}")
    if reasons:
        model.reliable, model.reason = False, "; ".join(reasons)
    return model
