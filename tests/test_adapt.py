"""`asyncbench adapt`, the library's adaptive limit, and a server whose capacity moves — against
real servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
from conftest import read_csv, result_files, run_cli, run_in_pty, server_stats, wait_for_line

from asyncbench import AIMD, AsyncHttpClient, Gradient

COLUMNS = ["experiment", "run", "t_s", "limit", "in_flight", "successes", "failures", "goodput_rps",
           "ok_latency_p50_s", "ok_latency_p99_s", "success_rate", "throttled", "timeouts", "capacity"]


# --- a server whose capacity moves ------------------------------------------------------------


async def _burst(url: str, n: int) -> list[int]:
    async with AsyncHttpClient(max_concurrency=None, timeout=10) as client:
        return [r.status or 0 for r in await client.fetch_batch([url] * n)]


def test_the_capacity_schedule_starts_with_the_first_request_and_delete_stats_starts_it_again(start_server):
    url = start_server(latency=0.2, capacity=5, queue=0, capacity_schedule=((0.0, 1), (600.0, 5)))
    assert server_stats(url)["capacity"] == 5  # no request yet: the schedule has not started
    statuses = asyncio.run(_burst(url + "/", 3))
    assert sorted(statuses) == [200, 503, 503]  # capacity 1 and no queue: one served, two shed at once
    assert server_stats(url)["capacity"] == 1
    request = urllib.request.Request(url + "/stats", method="DELETE")
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert json.loads(resp.read())["capacity"] == 5  # back to --capacity until the next request


def test_a_capacity_that_rises_serves_the_queue(start_server):
    url = start_server(latency=0.05, capacity=5, queue=10, capacity_schedule=((0.0, 1), (0.3, 4)))
    asyncio.run(_burst(url + "/", 1))  # starts the schedule's clock
    deadline = time.monotonic() + 20
    while server_stats(url)["capacity"] != 4:  # the change is the server's own timer
        assert time.monotonic() < deadline, "the capacity never rose"
    urllib.request.urlopen(urllib.request.Request(url + "/stats", method="DELETE"), timeout=10).close()
    # DELETE restarted the schedule: the first request starts it again at 1, then 4 after 0.3 s.
    asyncio.run(_burst(url + "/", 1))
    while server_stats(url)["capacity"] != 4:
        assert time.monotonic() < deadline, "the capacity never rose"
    statuses = asyncio.run(_burst(url + "/", 12))
    assert statuses.count(200) == 12 and server_stats(url)["peak_in_service"] == 4


@pytest.mark.parametrize("schedule, why", [
    ("0:100,10", "expected SECONDS:CAPACITY"),
    ("0:100,10:0", "the capacity must be at least 1"),
    ("5:100,5:50", "times must increase"),
    ("-1:100", "the time must be seconds >= 0"),
])
def test_serve_refuses_a_schedule_not_in_its_form(schedule, why):
    proc = run_cli("serve", "--port", "0", "--capacity-schedule", schedule, timeout=60)
    assert proc.returncode == 2 and why in proc.stderr and "Traceback" not in proc.stderr


# --- the library: AsyncHttpClient(limiter=...) -------------------------------------------------


@pytest.mark.parametrize("limiter", [AIMD(5, max_limit=200), Gradient(5, max_limit=200)], ids=["aimd", "gradient"])
def test_the_client_with_an_adaptive_limit_keeps_a_small_server_answering(start_server, limiter):
    """600 requests at once against a server that serves 10 and queues 5 more: unbounded, most
    are shed (503); through an adaptive limit few are (AIMD, probing upwards, meets a refusal
    about once a cycle: at a limit of 15 that is a few in a hundred), and the limit ends near
    what the server takes."""
    url = start_server(latency=0.02, capacity=10, queue=5)

    async def main(limit: object) -> list[bool]:
        async with AsyncHttpClient(limiter=limit, timeout=10) as client:  # type: ignore[arg-type]
            return [r.ok for r in await client.fetch_batch([url + "/"] * 600)]

    unbounded = asyncio.run(_burst(url + "/", 600))
    assert unbounded.count(503) > 300
    ok = asyncio.run(main(limiter))
    assert sum(ok) >= 0.85 * len(ok)
    assert 1 <= limiter.limit <= 30
    assert server_stats(url)["peak_in_flight"] <= 15


def test_a_number_as_the_limiter_is_a_fixed_limit(start_server):
    url = start_server(latency=0.02, capacity=100, queue=100)

    async def main() -> int:
        async with AsyncHttpClient(limiter=4, timeout=10) as client:
            return sum(r.ok for r in await client.fetch_batch([url + "/"] * 40))

    assert asyncio.run(main()) == 40
    assert server_stats(url)["peak_in_flight"] == 4


# --- the experiment ---------------------------------------------------------------------------


def _adapt(tmp_path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli("adapt", "--results-dir", str(tmp_path / "r"), "--plots-dir", str(tmp_path / "p"), *args)


def test_adapt_follows_a_capacity_that_moves_and_compares_fixed_limits(tmp_path):
    proc = _adapt(tmp_path, "--duration", "3", "--interval", "0.5", "--server-latency", "0.02",
                  "--server-queue", "5", "--server-capacity-schedule", "0:20,1.5:8", "--compare-static", "8,40",
                  "--cooldown", "0")
    assert proc.returncode == 0, proc.stderr
    csv_path, json_path, _ = result_files(tmp_path / "r", "adapt")
    rows = read_csv(csv_path)
    assert list(rows[0]) == COLUMNS
    meta = json.loads(json_path.read_text())
    assert meta["status"] == "complete" and meta["runs_completed"] == 3
    runs = {r["run"]: r for r in meta["runs"]}
    assert list(runs) == ["aimd", "static 8", "static 40"]
    for name, totals in runs.items():
        mine = [r for r in rows if r["run"] == name]
        # The intervals add up to the run's totals: nothing measured is left out of the timeline.
        assert sum(int(r["successes"]) for r in mine) == totals["successes"]
        assert sum(int(r["failures"]) for r in mine) == totals["failures"]
        assert [float(r["t_s"]) for r in mine][:6] == [0.5, 1.0, 1.5, 2.0, 2.5, 3.0]
        # The server's capacity as the schedule has it, restarted for every run.
        assert [r["capacity"] for r in mine][:6] == ["20", "20", "20", "8", "8", "8"]
    assert {int(r["limit"]) for r in rows if r["run"] == "static 40"} == {40}
    assert all(int(r["limit"]) <= 1000 for r in rows)
    # A fixed limit far above the capacity is the trap: most of its requests are shed.
    assert runs["static 40"]["success_rate"] < 0.7 and runs["static 40"]["throttled"] > 0
    assert runs["aimd"]["success_rate"] > runs["static 40"]["success_rate"]
    assert meta["goodput_rps"] == runs["aimd"]["goodput_rps"] and meta["success_rate"] == runs["aimd"]["success_rate"]
    assert [(p["start_s"], p["end_s"], p["capacity"]) for p in meta["phases"]] == [(0.0, 1.5, 20), (1.5, 3.0, 8)]
    assert all("settle_s" in p and "settle_capacity_s" in p for p in meta["phases"])
    assert [s["limit"] for s in meta["static"]] == [8, 40]
    assert "against fixed limits" in proc.stdout
    assert {p.name.rsplit("-", 1)[-1] for p in (tmp_path / "p").glob("*.png")} == {"adapt.png", "compare.png"}


def test_adapt_against_a_url_with_the_gradient(tmp_path, start_server):
    url = start_server(latency=0.02, capacity=30, queue=10)
    proc = _adapt(tmp_path, url + "/", "--algorithm", "gradient", "--duration", "2", "--interval", "0.5",
                  "--no-plot", "--fail-if", "success_rate<0")
    assert proc.returncode == 0, proc.stderr
    csv_path, json_path, _ = result_files(tmp_path / "r", "adapt")
    rows = read_csv(csv_path)
    assert {r["run"] for r in rows} == {"gradient"} and all(r["capacity"] == "" for r in rows)
    meta = json.loads(json_path.read_text())
    [phase] = meta["phases"]
    assert phase["capacity"] is None and "settle_capacity_s" not in phase
    assert sum(int(r["successes"]) for r in rows) == meta["runs"][0]["successes"] > 0
    assert server_stats(url)["received"] == meta["runs"][0]["requests"] + 1  # and the pre-flight


def test_fail_if_judges_every_interval(tmp_path):
    proc = _adapt(tmp_path, "--duration", "1", "--interval", "0.5", "--no-plot", "--fail-if", "successes>=0")
    assert proc.returncode == 3 and "threshold failed" in proc.stdout


@pytest.mark.parametrize("args, why", [
    (["--algorithm", "vegas"], "invalid --algorithm 'vegas'"),
    (["--initial", "50", "--max", "10"], "invalid --initial 50: above --max 10"),
    (["--server-capacity-schedule", "0:10,0:5"], "times must increase"),
    (["--server-capacity-schedule", "0:0"], "the capacity must be at least 1"),
    (["--server-capacity-schedule", "soon"], "expected SECONDS:CAPACITY"),
    (["--interval", "0"], "invalid --interval 0"),
    (["--duration", "1", "--interval", "2"], "longer than --duration"),
    (["--compare-static", "10,x"], "invalid --compare-static value 'x'"),
])
def test_bad_values_exit_2_naming_them(tmp_path, args, why):
    proc = _adapt(tmp_path, *args)
    assert proc.returncode == 2 and why in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "r").exists() or not list((tmp_path / "r").iterdir())


def test_max_requests_stops_the_run(tmp_path):
    proc = _adapt(tmp_path, "--duration", "20", "--max-requests", "300", "--no-plot", "--compare-static", "10")
    assert proc.returncode == 0, proc.stderr
    csv_path, json_path, _ = result_files(tmp_path / "r", "adapt")
    meta = json.loads(json_path.read_text())
    assert meta["status"] == "stopped" and "--max-requests 300 reached" in meta["reason"]
    assert meta["runs"][0]["requests"] <= 300 and meta["runs_completed"] == 1
    assert sum(int(r["successes"]) + int(r["failures"]) for r in read_csv(csv_path)) == meta["runs"][0]["requests"]


def test_ctrl_c_keeps_the_intervals_written_so_far(tmp_path):
    results = tmp_path / "r"
    proc = subprocess.Popen([sys.executable, "-m", "asyncbench", "adapt", "--duration", "60", "--interval", "0.2",
                             "--no-plot", "--results-dir", str(results)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_line(proc.stderr, "pre-flight", proc)
        deadline = time.monotonic() + 60
        while True:  # the CSV grows as the intervals end: the sync point is two of them written
            found = [p for p in results.glob("adapt-*.csv") if not p.stem.endswith("-timeline")]
            if found and len(read_csv(found[0])) >= 2:
                break
            assert time.monotonic() < deadline and proc.poll() is None, "no interval was written"
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    csv_path, json_path, _ = result_files(results, "adapt")
    assert len(read_csv(csv_path)) >= 2
    assert json.loads(json_path.read_text())["status"] == "interrupted"


def test_adapt_in_a_terminal_shows_its_progress_and_table(tmp_path):
    code, out = run_in_pty("adapt", "--duration", "1", "--interval", "0.5", "--no-plot", "--results-dir",
                           str(tmp_path / "r"), columns=80)
    assert code == 0, out
    assert "goodput" in out and "aimd" in out and "Traceback" not in out


def test_plot_and_report_read_an_adapt_run(tmp_path):
    proc = _adapt(tmp_path, "--duration", "1", "--interval", "0.5", "--no-plot", "--compare-static", "20")
    assert proc.returncode == 0, proc.stderr
    charts = run_cli("plot", str(tmp_path / "r"), "--out", str(tmp_path / "charts"))
    assert charts.returncode == 0, charts.stderr
    assert len(list((tmp_path / "charts").glob("adapt-*-adapt.png"))) == 1
    page = run_cli("report", str(tmp_path / "r"), "-o", str(tmp_path / "page.html"))
    assert page.returncode == 0, page.stderr
    html = (tmp_path / "page.html").read_text()
    assert "static 20" in html and "goodput" in html


def test_the_pipeline_takes_an_adaptive_concurrency(tmp_path):
    proc = run_cli("pipeline", "--generate-mb", "0.1", "--concurrency", "5,auto,auto:gradient", "--batch-sizes", "50",
                   "--server-capacity", "10", "--server-queue", "5", "--no-plot", "--results-dir", str(tmp_path / "r"))
    assert proc.returncode == 0, proc.stderr
    csv_path, _, _ = result_files(tmp_path / "r", "pipeline")
    rows = read_csv(csv_path)
    assert [r["limiter"] for r in rows] == ["fixed", "aimd", "gradient"]
    assert all(float(r["success_rate"]) == 1.0 for r in rows)
    assert {p.name.split("-c")[-1] for p in (tmp_path / "r").glob("*.jsonl")} == {"5.jsonl", "auto-aimd.jsonl",
                                                                                   "auto-gradient.jsonl"}
    bad = run_cli("pipeline", "--concurrency", "auto:vegas", "--results-dir", str(tmp_path / "r2"))
    assert bad.returncode == 2 and "invalid --concurrency value 'auto:vegas'" in bad.stderr
