"""Charts (matplotlib, Agg backend): one function per chart, fed the frames read from the CSVs.

Every function writes `<out>/<stem>-<chart>.png` at 150 dpi and returns the path it wrote.
Colours are the Okabe-Ito palette (safe for colour-blind readers), and every series also
differs by marker or line style.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter  # noqa: E402

from asyncbench import signals  # noqa: E402
from asyncbench.errors import OutputError  # noqa: E402
from asyncbench.metrics import same_requests  # noqa: E402

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from asyncbench.results import Run

DPI = 150
BLUE, ORANGE, GREEN, VERMILLION, PURPLE, SKY, YELLOW, BLACK = (
    "#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000",
)
CYCLE = (BLUE, ORANGE, GREEN, VERMILLION, PURPLE, SKY, BLACK)
YELLOW_DARK = "#B8860B"  # the Okabe-Ito yellow is too faint for a line on white
LINESTYLES = ("-", "--", "-.", ":")
MARKERS = ("o", "s", "^", "D", "v", "P", "X")

plt.rcParams.update({
    "figure.figsize": (8, 5),
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "font.size": 10,
    "axes.titlesize": 11,
    "legend.frameon": False,
})


def target_label(meta: dict[str, Any]) -> str:
    """What was measured, for a chart's subtitle."""
    server = meta.get("server")
    if meta.get("target_kind") == "embedded" and server:
        return (f"embedded server (capacity {server['capacity']}, queue {server['queue']}, "
                f"{server['latency'] * 1000:g} ms service time)")
    return str(meta.get("target", "target"))


def _thousands(v: float, _: Any = None) -> str:
    """Axis labels as the tables write numbers: '1,200', '50', '0.5'."""
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:,.3g}"


def _log_ticks(lo: float, hi: float) -> list[float]:
    """Tick values for a log axis from lo to hi: 1-2-5 steps, or every digit when that gives
    fewer than three labels, or four evenly spaced round values over a narrow range."""
    lo, hi = max(lo, 1e-12), max(hi, 1e-12)
    decades = range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1)
    for subs in ((1, 2, 5), tuple(range(1, 10))):
        ticks = [m * 10.0**e for e in decades for m in subs if lo <= m * 10.0**e <= hi]
        if len(ticks) >= 3:
            return ticks
    return sorted({float(f"{v:.2g}") for v in np.geomspace(lo, hi, 4)})


def _set_log(axis: Any, lo: float, hi: float) -> None:
    axis.set_major_locator(FixedLocator(_log_ticks(lo, hi)))
    axis.set_major_formatter(FuncFormatter(_thousands))
    axis.set_minor_formatter(NullFormatter())


def level_axis(ax: Axes, levels: Sequence[float], label: str) -> None:
    ax.set_xscale("log")
    # A ramp's last stage may aim at 0: off a log axis, and not where its limits are drawn from.
    positive = [float(v) for v in levels if v > 0] or [1.0]
    lo, hi = min(positive), max(positive)
    ax.set_xlim(lo / 1.5, hi * 1.5)
    _set_log(ax.xaxis, lo, hi)
    ax.set_xlabel(label)


def log_y(ax: Axes) -> None:
    """A log y axis labelled in plain numbers, with at least three labels."""
    ax.set_yscale("log")
    lo, hi = ax.dataLim.intervaly
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= 0:
        return
    lo = lo if lo > 0 else hi / 10
    ax.set_ylim(lo / 1.15, hi * 1.15)
    _set_log(ax.yaxis, lo / 1.15, hi * 1.15)


def plain_y(ax: Axes) -> None:
    ax.yaxis.set_major_formatter(FuncFormatter(_thousands))


def mark_client_limited(ax: Axes, df: Any, y: Any) -> None:
    """Ring the levels where the client, not the server, was the limit, as '!' in the table."""
    if "client_limited" not in df:
        return
    limited = df["client_limited"].astype(str).str.lower() == "true"
    if limited.any():
        ax.scatter(df["level"][limited], y[limited], s=160, facecolors="none", edgecolors=VERMILLION,
                   linewidths=1.8, zorder=5, label="client-limited: these figures describe the client")


def title(fig: Figure, what: str, run: Run) -> None:
    fig.suptitle(f"{what} — {run.experiment}", fontsize=12, fontweight="bold", x=0.01, ha="left")
    fig.text(0.01, 0.925, f"{target_label(run.meta)} · {run.stem}", fontsize=8.5, color="#444444", ha="left")


def mark_sweet(ax: Axes, sweet: int | None, label: bool = True, reliable: bool = True) -> None:
    if sweet is None:
        return
    text = f"sweet spot ({sweet:,})" if reliable else f"sweet spot ({sweet:,}), unreliable: client-limited"
    ax.axvline(sweet, color=GREEN if reliable else YELLOW_DARK, linestyle=":", linewidth=1.5,
               label=text if label else None)


def save(fig: Figure, out_dir: Path, name: str) -> Path:
    """Write a chart as `<out_dir>/<name>.png` (150 dpi) and close it; OutputError when the file
    cannot be written. Every chart of every experiment ends here."""
    return _save(fig, out_dir, name)


def _save(fig: Figure, out_dir: Path, name: str) -> Path:
    path = out_dir / f"{name}.png"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=DPI, bbox_inches="tight")
    except OSError as exc:
        raise OutputError(f"cannot write chart {path}: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)
    signals.checkpoint()  # a Ctrl-C while the chart was drawn stops here, between charts
    return path


def sweet_level(run: Run) -> int | None:
    spot = run.meta.get("sweet_spot")
    return int(spot["level"]) if isinstance(spot, dict) and "level" in spot else None


def sweet_spot_line(ax: Axes, run: Run) -> None:
    """The sweet spot the sidecar names, drawn as a line (dashed yellow when unreliable)."""
    spot = run.meta.get("sweet_spot")
    reliable = not (isinstance(spot, dict) and spot.get("reliable") is False)
    mark_sweet(ax, sweet_level(run), reliable=reliable)


def usl_curve(ax: Axes, run: Run) -> None:
    """The Universal Scalability Law fitted to the goodput (the sidecar's `usl`), if any."""
    from asyncbench.usl import UslFit

    fit = UslFit.from_dict(run.meta.get("usl"))
    if fit is None or not fit.reliable or fit.concurrency != "level":
        return  # an unreliable fit draws no curve; one over measured concurrency has no place on a rate axis
    lam, sigma, kappa, r2 = fit.lambda_rps, fit.sigma, fit.kappa, fit.r2
    levels = run.frame["level"]
    n = np.geomspace(max(float(levels.min()), 1e-9), float(levels.max()), 200)
    ax.plot(n, lam * n / (1 + sigma * (n - 1) + kappa * n * (n - 1)), color=GREEN, linewidth=1.2, alpha=0.8,
            label=f"USL fit to goodput (R² {r2:.2f})")


def distribution_chart(run: Run, out_dir: Path, step: str = "level") -> Path | None:
    """Latency by percentile, one curve per level (from the -latency.csv); None without it."""
    lat = run.latency
    if lat is None or lat.empty:
        return None
    fig, ax = plt.subplots()
    levels = sorted(lat["level"].unique())
    for i, level in enumerate(levels):
        part = lat[(lat["level"] == level) & (lat["quantile"] < 1.0)].sort_values("quantile")
        if part.empty:
            continue
        # HdrHistogram-style x axis: 1/(1-q), so the tail (p99, p99.9) gets room.
        x = 1.0 / (1.0 - part["quantile"])
        # Distinct hues (Okabe-Ito), then line styles: neighbouring levels must be told apart.
        ax.plot(x, part["latency_s"] * 1000, color=CYCLE[i % len(CYCLE)],
                linestyle=LINESTYLES[(i // len(CYCLE)) % len(LINESTYLES)], marker=MARKERS[i % len(MARKERS)],
                markevery=max(1, len(part) // 6), markersize=4, label=f"{int(level):,}")
    ax.set_xscale("log")
    ticks = [(0.5, "p50"), (0.9, "p90"), (0.99, "p99"), (0.999, "p99.9")]
    ax.set_xticks([1 / (1 - q) for q, _ in ticks], [t for _, t in ticks])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlim(1.0, 1 / (1 - 0.999) * 1.2)
    ax.set_xlabel("percentile")
    ax.set_ylabel("latency (ms)")
    log_y(ax)
    ax.legend(title=step, loc="upper left",
              bbox_to_anchor=(1.01, 1.0), fontsize=8)
    title(fig, "Latency distribution by level", run)
    return _save(fig, out_dir, f"{run.stem}-distribution")


def timeline_chart(run: Run, out_dir: Path, step: str = "level") -> Path | None:
    """Throughput and goodput, and the successes' p99, over time (from the -timeline.csv), the
    levels one after another and marked; None without a timeline."""
    frame = run.timeline
    if frame is None or frame.empty:
        return None
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(9, 5.5), height_ratios=(3, 2))
    one_clock = bool(run.setting("stages", None))  # a ramp's stages are already on one clock
    offset = 0.0
    levels = list(dict.fromkeys(frame["level"].tolist()))  # in the order they ran
    for i, level in enumerate(levels):
        part = frame[frame["level"] == level]
        t = part["t_s"].to_numpy(dtype=float) + (0.0 if one_clock else offset)
        color = CYCLE[i % len(CYCLE)]
        top.plot(t, part["throughput_rps"], color=color, linewidth=1.2,
                 label="throughput" if i == 0 else None)
        top.plot(t, part["goodput_rps"], color=color, linewidth=1.2, linestyle="--",
                 label="goodput" if i == 0 else None)
        ok = part["successes"] > 0
        bottom.plot(t[ok.to_numpy()], part.loc[ok, "ok_latency_p99_s"] * 1000, color=color, marker=".",
                    linewidth=1.0)
        begin = offset  # where the last level (or stage) ended
        if i:
            for ax in (top, bottom):
                ax.axvline(begin, color="0.7", linewidth=0.8)
        top.annotate(f"{'→ ' if one_clock else step + ' '}{int(level):,}", (begin, 1.0), xycoords=("data", "axes fraction"),
                     xytext=(3, -3), textcoords="offset points", va="top", fontsize=7, color=color)
        offset = float(t[-1]) if len(t) else offset
    top.set_ylabel("requests/s")
    top.yaxis.set_major_formatter(FuncFormatter(_thousands))
    top.set_ylim(bottom=0)
    top.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    bottom.set_ylabel("ok p99 (ms)")
    bottom.set_xlabel("seconds (the ramp's clock)" if one_clock else f"seconds (the {step}s one after another)")
    if (frame["successes"] > 0).any():
        log_y(bottom)
    title(fig, "Over time", run)
    return _save(fig, out_dir, f"{run.stem}-timeline")


def comparison_chart(trap: Run, sem: Run, out_dir: Path, name: str) -> Path:
    """Lab 2.2 vs Lab 2.3: goodput, success rate and latency, unbounded vs semaphore."""
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.8))
    t, s = trap.frame, sem.frame
    panels = (
        ("goodput_rps", "goodput (req/s)", 1.0),
        ("success_rate", "success rate (%)", 100.0),
        ("latency_p99_s", "p99 latency (ms)", 1000.0),
    )
    same = same_requests(t, s)
    for ax, (col, label, scale) in zip(axes, panels, strict=True):
        ax.plot(t["level"], t[col] * scale, marker="o", color=VERMILLION, label="unbounded (trap)")
        ax.plot(s["level"], s[col] * scale, marker="s", color=BLUE, linestyle="--",
                label=f"semaphore ({int(s['requests'].iloc[0]):,} requests per limit)")
        if same is not None:  # the lab's point: the same requests, all at once
            n, row = same
            ax.axhline(getattr(row, col) * scale, color=VERMILLION, linestyle=":", linewidth=1.2,
                       label=f"the same {n:,} requests all at once (trap)")
        ax.set_xscale("log")
        # Narrow panels: decades only, so labels like 500 and 1,000 do not collide.
        ax.xaxis.set_major_locator(LogLocator(base=10))
        ax.xaxis.set_major_formatter(FuncFormatter(_thousands))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("concurrency level / semaphore limit")
        ax.set_ylabel(label)
        if col == "success_rate":
            ax.set_ylim(0, 105)
        elif col == "latency_p99_s":
            log_y(ax)
        else:
            ax.set_ylim(bottom=0)
            plain_y(ax)
    axes[0].legend(loc="upper left", fontsize=8.5)
    fig.suptitle("Unbounded concurrency vs a semaphore (Lab 2.2 vs Lab 2.3)", fontsize=12,
                 fontweight="bold", x=0.01, ha="left")
    fig.text(0.01, 0.925, f"{target_label(sem.meta)} · {trap.stem} vs {sem.stem}", fontsize=8.5,
             color="#444444", ha="left")
    fig.tight_layout(rect=(0, 0, 1, 0.9))
    return _save(fig, out_dir, f"{name}-comparison")


def _overlay_line(ax: Axes, x: Any, y: Any, measured: Sequence[float], color: str, marker: str,
                  label: str) -> None:
    """One run among several: solid between neighbouring levels, dotted where it skipped a
    level another run measured, so no line suggests a figure this run never took."""
    xs, ys = [float(v) for v in x], [float(v) for v in y]
    ax.plot(xs, ys, marker=marker, color=color, linestyle="none", label=label)
    for (x0, y0), (x1, y1) in zip(zip(xs, ys, strict=True), zip(xs[1:], ys[1:], strict=True), strict=False):
        skipped = any(x0 < m < x1 for m in measured)
        ax.plot([x0, x1], [y0, y1], color=color, linestyle=":" if skipped else "-",
                linewidth=1.0 if skipped else 1.5, alpha=0.6 if skipped else 1.0)


def overlay_charts(runs: Sequence[Run], out_dir: Path, axis_label: str) -> list[Path]:
    """With --all: every run of one experiment on the same axes (before/after a change)."""
    experiment = runs[0].experiment
    name = f"{experiment}-all"
    paths: list[Path] = []
    for col, label, scale, chart in (
        ("goodput_rps", "goodput (req/s)", 1.0, "goodput"),
        ("success_rate", "success rate (%)", 100.0, "success"),
        ("latency_p99_s", "p99 latency (ms)", 1000.0, "latency"),
    ):
        fig, ax = plt.subplots()
        measured = sorted({float(lv) for r in runs for lv in r.frame["level"]})
        for i, run in enumerate(runs):
            _overlay_line(ax, run.frame["level"], run.frame[col] * scale, measured, color=CYCLE[i % len(CYCLE)],
                          marker=MARKERS[i % len(MARKERS)], label=f"{run.stem} — {target_label(run.meta)}")
        level_axis(ax, [lv for r in runs for lv in r.frame["level"]], axis_label)
        ax.set_ylabel(label)
        if chart == "latency":
            log_y(ax)
        else:
            ax.set_ylim(bottom=0, top=105 if chart == "success" else None)
            plain_y(ax)
        ax.legend(loc="upper left", bbox_to_anchor=(0.0, -0.14), fontsize=7.5)  # below: never on the data
        what = {"goodput": "Goodput", "success": "Success rate", "latency": "p99 latency"}[chart]
        fig.suptitle(f"{what} across {len(runs)} runs — {experiment}",
                     fontsize=12, fontweight="bold", x=0.01, ha="left")
        paths.append(_save(fig, out_dir, f"{name}-{chart}"))
    return paths


def compare_chart(base: Run, cand: Run, out_dir: Path, name: str, axis_label: str) -> Path:
    """Baseline and candidate on the same axes: goodput, and p50/p99 latency, by level."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    for run, color, label, style in ((base, BLUE, "baseline", "-"), (cand, VERMILLION, "candidate", "--")):
        df = run.frame
        left.plot(df["level"], df["goodput_rps"], marker="o", color=color, linestyle=style, label=f"{label}: {run.stem}")
        right.plot(df["level"], df["latency_p50_s"] * 1000, marker="o", color=color, linestyle=style,
                   label=f"{label} p50")
        right.plot(df["level"], df["latency_p99_s"] * 1000, marker="^", color=color, linestyle=":",
                   label=f"{label} p99")
    levels = [*base.frame["level"], *cand.frame["level"]]
    for ax in (left, right):
        level_axis(ax, levels, axis_label)
    left.set_ylabel("goodput (req/s)")
    left.set_ylim(bottom=0)
    plain_y(left)
    right.set_ylabel("latency (ms)")
    log_y(right)
    left.legend(loc="upper left", bbox_to_anchor=(0.0, -0.14), fontsize=8)
    right.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    fig.suptitle("Baseline vs candidate", fontsize=12, fontweight="bold", x=0.01, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    return _save(fig, out_dir, name)


thousands = _thousands  # axis labels as the tables write numbers, for the experiments' own charts
