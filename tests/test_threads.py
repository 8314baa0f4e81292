"""`asyncbench threads`: one thread, concurrent not parallel — as ratios, robust to machine speed."""

from __future__ import annotations

import json
import math

import pytest
from conftest import read_csv, run_cli


@pytest.fixture(scope="module")
def threads_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("threads")
    out = run_cli("threads", "--tasks", "6", "--sleep", "0.1", "--results-dir", str(folder / "r"),
                  "--plots-dir", str(folder / "p"))
    assert out.returncode == 0, out.stderr
    [csv_path] = list((folder / "r").glob("threads-*.csv"))
    meta = json.loads(csv_path.with_suffix(".json").read_text())
    return out, read_csv(csv_path), {s["phase"]: s for s in meta["summary"]}, folder


def test_csv_has_one_row_per_task_and_phase(threads_run):
    _, rows, _, _ = threads_run
    for column in ("phase", "task_id", "thread_name", "start_s", "end_s"):
        assert column in rows[0]
    assert [(r["phase"], r["task_id"]) for r in rows] == [
        (phase, str(i)) for phase in ("concurrent", "blocking", "nonblocking", "to_thread") for i in range(6)
    ]
    assert all(r["ok"] == "true" for r in rows)


def test_every_coroutine_runs_on_main_thread_and_to_thread_elsewhere(threads_run):
    _, rows, summary, _ = threads_run
    assert {r["coroutine_thread"] for r in rows} == {"MainThread"}
    for r in rows:
        if r["phase"] == "to_thread":
            assert r["thread_name"] != "MainThread"
        else:
            assert r["thread_name"] == "MainThread"
    assert len(summary["to_thread"]["threads"]) > 1


def test_blocking_serializes_and_awaiting_overlaps(threads_run):
    _, _, summary, _ = threads_run
    blocking, nonblocking, to_thread = summary["blocking"], summary["nonblocking"], summary["to_thread"]
    assert blocking["wall_over_sum"] >= 0.9  # wall ≈ sum: one at a time
    assert blocking["wall_over_max"] >= 5  # six tasks: far longer than any one
    assert nonblocking["wall_over_max"] < 1.5  # wall ≈ max: all at once
    assert to_thread["wall_over_max"] < 2.0
    assert (blocking["pattern"], nonblocking["pattern"]) == ("serialized", "overlapped")


def test_the_loop_lags_at_least_the_sleep_when_blocked(threads_run):
    _, _, summary, _ = threads_run
    assert summary["blocking"]["loop_lag_max_s"] >= 0.1
    assert summary["nonblocking"]["loop_lag_max_s"] < summary["blocking"]["loop_lag_max_s"]


def test_output_has_the_tables_the_verdict_and_the_chart(threads_run):
    out, _, _, folder = threads_run
    for phase in ("concurrent", "blocking", "nonblocking", "to_thread"):
        assert f"phase: {phase}" in out.stdout
    assert "asyncio is single-threaded: every coroutine ran on MainThread" in out.stdout
    [chart] = list((folder / "p").glob("threads-*-timeline.png"))
    assert chart.read_bytes()[:4] == b"\x89PNG"
    replot = run_cli("plot", str(folder / "r"), "--out", str(folder / "again"))
    assert replot.returncode == 0, replot.stderr
    assert list((folder / "again").glob("threads-*-timeline.png"))


@pytest.mark.parametrize(("args", "named"), [(["--tasks", "0"], "--tasks 0"), (["--sleep", "-1"], "--sleep -1")])
def test_bad_input_exits_2(tmp_path, args, named):
    out = run_cli("threads", *args, "--results-dir", str(tmp_path))
    assert out.returncode == 2 and named in out.stderr and "Traceback" not in out.stderr


@pytest.fixture(scope="module")
def impact_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("impact")
    out = run_cli("threads", "--tasks", "2", "--sleep", "0.01", "--impact", "60", "--server-latency", "0.5",
                  "--results-dir", str(folder / "r"), "--plots-dir", str(folder / "p"))
    assert out.returncode == 0, out.stderr
    [csv_path] = list((folder / "r").glob("threads-*.csv"))
    return out, json.loads(csv_path.with_suffix(".json").read_text()), folder


def test_impact_asyncio_runs_every_request_on_one_thread_and_threads_need_one_each(impact_run):
    _, meta, _ = impact_run
    ways = {w["way"]: w for w in meta["impact"]}
    assert list(ways) == ["asyncio", "thread-per-request", "default-pool"]
    assert all(w["requests"] == w["successes"] == 60 for w in ways.values())
    assert ways["asyncio"]["threads_peak"] <= 2  # the event loop's thread (and at most one helper)
    # The server holds each request 0.5 s, far longer than starting 60 threads takes: the pool
    # grows to a thread for (nearly) every request.
    assert ways["thread-per-request"]["threads_peak"] >= 45
    pool = ways["default-pool"]
    assert pool["threads_peak"] <= pool["workers"] + 2
    waves = math.ceil(60 / pool["workers"])  # asyncio's default pool: min(32, CPUs + 4) at a time
    assert pool["wall_s"] >= waves * 0.5 * 0.9
    if waves >= 3:
        assert pool["wall_s"] > ways["asyncio"]["wall_s"]
    assert all(w["peak_rss_mb"] > 0 for w in ways.values())


def test_impact_is_shown_said_and_charted(impact_run):
    out, meta, folder = impact_run
    assert "60 concurrent GETs, three ways" in out.stdout
    assert meta["impact_verdict"].startswith("60 concurrent requests on asyncio ran on one event loop")
    assert "thread-per-request needed" in meta["impact_verdict"] and "in waves" in meta["impact_verdict"]
    assert "impact thread-per-request: 60 GETs" in out.stderr  # each way said as it finished
    assert list((folder / "p").glob("threads-*-impact.png"))


def test_impact_says_when_the_target_refused_some(start_server, tmp_path):
    url = start_server(latency=0.2, capacity=20, queue=20)  # room for 40 of the 60
    out = run_cli("threads", url, "--tasks", "2", "--sleep", "0.01", "--impact", "60", "--no-plot",
                  "--results-dir", str(tmp_path / "r"))
    assert out.returncode == 0, out.stderr
    assert "the target refused or failed some" in out.stdout and "HTTP 503" in out.stdout
    assert "room for 60 requests at once" in out.stdout
