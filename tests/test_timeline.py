"""Every load run over time: the -timeline.csv (its sums are the level rows'), the HdrHistogram
log read back by the `hdrhistogram` package, the .hgrm distributions, the bad values."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import read_csv, result_files, run_cli

from asyncbench.timeline import COLUMNS


def _timeline(results: Path, experiment: str) -> tuple[list[dict[str, str]], list[dict[str, str]], dict]:
    csv_path, json_path, _ = result_files(results, experiment)
    meta = json.loads(json_path.read_text())
    rows = read_csv(csv_path)
    timeline = read_csv(results / meta["files"]["timeline"])
    return rows, timeline, meta


def _assert_sums_are_the_rows(rows: list[dict[str, str]], timeline: list[dict[str, str]]) -> None:
    for row in rows:
        mine = [t for t in timeline if t["level"] == row["level"]]
        assert mine, row["level"]
        assert sum(int(t["successes"]) for t in mine) == int(row["successes"])
        assert sum(int(t["failures"]) for t in mine) == int(row["failures"])
        assert sum(int(t["sent"]) for t in mine) == int(row["requests"])
        times = [float(t["t_s"]) for t in mine]
        assert times == sorted(times) and int(mine[-1]["in_flight"]) == 0


def test_a_closed_loop_s_timeline_adds_up_to_its_rows_failures_too(tmp_path):
    # A server of 5 slots and no queue refuses most of level 60: failures in the timeline too.
    proc = run_cli("trap", "--levels", "1,60", "--requests-per-level", "300", "--server-capacity", "5",
                   "--server-queue", "0", "--interval", "0.2", "--no-plot", "--results-dir", str(tmp_path / "r"))
    assert proc.returncode == 0, proc.stderr
    rows, timeline, _ = _timeline(tmp_path / "r", "trap")
    assert list(timeline[0]) == list(COLUMNS)
    assert int(rows[1]["failures"]) > 0
    _assert_sums_are_the_rows(rows, timeline)
    ok = [t for t in timeline if int(t["successes"])]
    assert all(0 < float(t["ok_latency_p50_s"]) <= float(t["ok_latency_p99_s"]) for t in ok)


def test_an_open_loop_s_timeline_has_an_interval_per_step_of_the_schedule(tmp_path):
    proc = run_cli("rate", "--rates", "100", "--duration", "2", "--interval", "0.5", "--no-plot",
                   "--results-dir", str(tmp_path / "r"))
    assert proc.returncode == 0, proc.stderr
    rows, timeline, _ = _timeline(tmp_path / "r", "rate")
    _assert_sums_are_the_rows(rows, timeline)
    # 2 s of sends at 100/s in 0.5 s intervals: 50 due in each of the first four.
    assert [int(t["sent"]) for t in timeline[:4]] == [50, 50, 50, 50]
    assert [float(t["t_s"]) for t in timeline[:4]] == [0.5, 1.0, 1.5, 2.0]


def test_shards_merge_interval_by_interval(tmp_path):
    proc = run_cli("semaphore", "--limits", "4,20", "--requests", "400", "--processes", "2", "--interval", "0.25",
                   "--no-plot", "--results-dir", str(tmp_path / "r"))
    assert proc.returncode == 0, proc.stderr
    rows, timeline, _ = _timeline(tmp_path / "r", "semaphore")
    _assert_sums_are_the_rows(rows, timeline)


def test_the_hdr_log_reads_back_with_the_hdrhistogram_package(tmp_path):
    from hdrh.histogram import HdrHistogram
    from hdrh.log import HistogramLogReader

    log = tmp_path / "run.hlog"
    proc = run_cli("trap", "--levels", "5,20", "--requests-per-level", "200", "--interval", "0.1", "--hdr-log",
                   str(log), "--no-plot", "--results-dir", str(tmp_path / "r"))
    assert proc.returncode == 0, proc.stderr
    rows, _, meta = _timeline(tmp_path / "r", "trap")
    reader = HistogramLogReader(str(log), HdrHistogram(1, 3_600_000_000, 3))
    merged: dict[str, HdrHistogram] = {}
    while (interval := reader.get_next_interval_histogram()) is not None:
        tag = interval.get_tag()
        merged.setdefault(tag, HdrHistogram(1, 3_600_000_000, 3)).add(interval)
    assert set(merged) == {"level-5", "level-20"}
    for row in rows:
        hist = merged[f"level-{row['level']}"]
        assert hist.get_total_count() == int(row["successes"])
        # Microseconds; three significant digits on both sides.
        assert hist.get_value_at_percentile(99) / 1e6 == pytest.approx(float(row["ok_latency_p99_s"]), rel=0.01)
        assert hist.get_value_at_percentile(50) / 1e6 == pytest.approx(float(row["ok_latency_p50_s"]), rel=0.01)
    # And each level's percentile distribution, as HdrHistogram prints it, named in the sidecar.
    for level, name in meta["hgrm"].items():
        text = (tmp_path / "r" / name).read_text()
        assert text.split()[:4] == ["Value", "Percentile", "TotalCount", "1/(1-Percentile)"]
        [row] = [r for r in rows if r["level"] == level]
        total = re.search(r"TotalCount\s*=\s*([0-9.]+)\]", text)
        assert total and float(total.group(1)) == int(row["successes"]), text[-200:]


@pytest.mark.parametrize(("args", "code", "named"), [
    (["--interval", "0"], 2, "--interval 0"),
    (["--interval", "abc"], 2, "--interval"),
    (["--hdr-log", "NOFOLDER/run.hlog"], 1, "NOFOLDER"),
])
def test_bad_values_are_named_and_nothing_is_sent(tmp_path, args, code, named):
    proc = run_cli("trap", "--levels", "1", *args, "--no-plot", "--results-dir", str(tmp_path / "r"))
    assert proc.returncode == code, proc.stderr
    assert named in proc.stderr and "Traceback" not in proc.stderr
    assert "pre-flight" not in proc.stderr
    assert not (tmp_path / "r").exists() or not list((tmp_path / "r").iterdir())


def test_the_timeline_chart_in_the_run_in_plot_and_in_the_report(tmp_path):
    proc = run_cli("rate", "--rates", "50,150", "--duration", "1", "--interval", "0.25", "--results-dir",
                   str(tmp_path / "r"), "--plots-dir", str(tmp_path / "p"))
    assert proc.returncode == 0, proc.stderr
    assert len(list((tmp_path / "p").glob("rate-*-timeline.png"))) == 1
    again = run_cli("plot", str(tmp_path / "r"), "--out", str(tmp_path / "again"))
    assert again.returncode == 0, again.stderr
    assert len(list((tmp_path / "again").glob("rate-*-timeline.png"))) == 1
    page = run_cli("report", str(tmp_path / "r"), "-o", str(tmp_path / "page.html"))
    assert page.returncode == 0, page.stderr
    assert "alt='timeline chart'" in (tmp_path / "page.html").read_text()
