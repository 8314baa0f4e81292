"""`trap` and `semaphore` end to end: files, columns, units, counts, limits, interrupts, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from conftest import free_port, read_csv, result_files, run_cli, server_stats, wait_for_line

from asyncbench.metrics import LevelStats

DESIGN_COLUMNS = [
    "experiment", "level", "requests", "successes", "failures",
    "errors_timeout", "errors_connect", "errors_http_4xx", "errors_http_5xx", "errors_other",
    "success_rate", "elapsed_s", "throughput_rps", "goodput_rps",
    "latency_mean_s", "latency_p50_s", "latency_p90_s", "latency_p99_s", "latency_max_s",
    "littles_l", "queue_wait_mean_s", "peak_rss_mb",
]


def test_trap_writes_the_designed_files_columns_and_units(tmp_path):
    out = run_cli("trap", "--levels", "1,5,20", "--cooldown", "0", "--results-dir", str(tmp_path))
    assert out.returncode == 0, out.stderr
    csv_path, json_path, latency_path = result_files(tmp_path, "trap")
    rows = read_csv(csv_path)
    header = list(rows[0].keys())
    assert [c for c in header if c in DESIGN_COLUMNS] == DESIGN_COLUMNS
    assert header == LevelStats.columns()
    assert [int(r["level"]) for r in rows] == [1, 5, 20]
    for r in rows:
        assert r["experiment"] == "trap"
        assert int(r["requests"]) == int(r["level"])  # default: one burst of `level` requests
        assert float(r["success_rate"]) == 1.0  # a fraction, not a percentage
        # Seconds, not milliseconds: the server's service time is 0.05 s.
        assert 0.05 <= float(r["latency_p50_s"]) < 2.0
        assert float(r["queue_wait_mean_s"]) == 0.0  # no semaphore in the trap
        assert float(r["peak_rss_mb"]) > 1
        tp, mean, ll = float(r["throughput_rps"]), float(r["latency_mean_s"]), float(r["littles_l"])
        assert ll == pytest.approx(tp * mean, rel=1e-3)
        assert float(r["goodput_rps"]) == pytest.approx(int(r["successes"]) / float(r["elapsed_s"]), rel=1e-3)
    meta = json.loads(json_path.read_text())
    assert meta["status"] == "complete"
    assert meta["levels_completed"] == 3
    assert meta["target_kind"] == "embedded"
    assert meta["server"]["capacity"] == 100
    assert meta["sweet_spot"]["level"] in (1, 5, 20)
    assert meta["command"][:2] == ["asyncbench", "trap"]
    quantiles = read_csv(latency_path)
    assert list(quantiles[0].keys()) == ["level", "quantile", "latency_s"]
    for level in ("1", "5", "20"):
        curve = [float(q["latency_s"]) for q in quantiles if q["level"] == level]
        assert curve == sorted(curve) and len(curve) > 50
    assert "sweet spot:" in out.stdout


def test_trap_success_rate_follows_capacity_and_queue(start_server, tmp_path):
    # A service time longer than the burst takes to arrive: admission is capacity + queue = 20.
    url = start_server(capacity=10, queue=10, latency=1.0)
    out = run_cli("trap", url, "--levels", "20,50", "--cooldown", "0", "--results-dir", str(tmp_path))
    assert out.returncode == 0, out.stderr
    rows = {int(r["level"]): r for r in read_csv(result_files(tmp_path, "trap")[0])}
    assert float(rows[20]["success_rate"]) == 1.0
    assert int(rows[50]["successes"]) == 20
    assert int(rows[50]["errors_http_5xx"]) == 30
    assert float(rows[50]["success_rate"]) == pytest.approx(0.4)
    stats = server_stats(url)
    assert stats["received"] == 20 + 50 + 1  # + the pre-flight request
    assert stats["shed"] == 30
    assert "above it the trap springs" in out.stdout


def test_semaphore_never_exceeds_its_limit_and_counts_every_request_once(start_server, tmp_path):
    url = start_server(capacity=1000, queue=0, latency=0.02)
    out = run_cli("semaphore", url, "--limits", "7", "--requests", "300", "--cooldown", "0",
                  "--results-dir", str(tmp_path))
    assert out.returncode == 0, out.stderr
    [row] = read_csv(result_files(tmp_path, "semaphore")[0])
    stats = server_stats(url)
    assert stats["peak_in_flight"] <= 7
    assert stats["received"] == int(row["requests"]) + 1 == 301
    assert stats["served"] == int(row["successes"]) + 1
    # 300 requests through 7 slots: most of them waited in the client, not in the server.
    assert float(row["queue_wait_mean_s"]) > 5 * float(row["latency_mean_s"])


def test_littles_law_holds_when_the_server_is_not_the_bottleneck(start_server, tmp_path):
    url = start_server(capacity=1000, queue=0, latency=0.05)
    out = run_cli("semaphore", url, "--limits", "20", "--requests", "600", "--cooldown", "0",
                  "--results-dir", str(tmp_path))
    assert out.returncode == 0, out.stderr
    [row] = read_csv(result_files(tmp_path, "semaphore")[0])
    # L = λW: the mean number in flight is close to the limit (ramp-up and tail cost a little).
    assert 0.8 * 20 <= float(row["littles_l"]) <= 20 * 1.001
    assert float(row["efficiency"]) == pytest.approx(float(row["littles_l"]) / 20, rel=1e-3)


def test_injected_faults_show_as_5xx(start_server, tmp_path):
    url = start_server(capacity=1000, queue=0, latency=0.0, error_rate=0.5)
    out = run_cli("semaphore", url, "--limits", "50", "--requests", "1000", "--cooldown", "0",
                  "--results-dir", str(tmp_path))
    assert out.returncode == 0, out.stderr
    [row] = read_csv(result_files(tmp_path, "semaphore")[0])
    assert int(row["errors_http_5xx"]) == int(row["failures"])
    assert 0.4 < float(row["success_rate"]) < 0.6  # 6 standard deviations either side
    stats = server_stats(url)
    assert stats["errors"] + stats["served"] == int(row["requests"]) + 1  # + the pre-flight
    assert "no sweet spot" in out.stdout


def test_retries_recover_injected_faults(start_server, tmp_path):
    url = start_server(capacity=1000, queue=0, latency=0.0, error_rate=0.2, seed=5)
    out = run_cli("semaphore", url, "--limits", "1", "--requests", "200", "--retries", "8",
                  "--cooldown", "0", "--results-dir", str(tmp_path))
    assert out.returncode == 0, out.stderr
    [row] = read_csv(result_files(tmp_path, "semaphore")[0])
    assert float(row["success_rate"]) == 1.0
    assert int(row["attempts"]) > 200
    assert server_stats(url)["received"] == int(row["attempts"]) + 1


def test_interrupted_run_keeps_its_finished_levels(start_server, tmp_path):
    url = start_server(capacity=1000, queue=0, latency=0.2)
    proc = subprocess.Popen(
        [sys.executable, "-m", "asyncbench", "trap", url, "--levels", "1,2,3",
         "--requests-per-level", "20", "--cooldown", "0", "--results-dir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        # Level 1 takes 20 × 0.2 s; wait for its line on stderr, then interrupt level 2.
        wait_for_line(proc.stderr, "level 1 done", proc)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    assert "Traceback" not in err
    assert "interrupted" in err
    csv_path, json_path, _ = result_files(tmp_path, "trap")
    rows = read_csv(csv_path)
    assert [r["level"] for r in rows] == ["1"]
    assert int(rows[0]["requests"]) == 20
    meta = json.loads(json_path.read_text())
    assert meta["status"] == "interrupted" and meta["levels_completed"] == 1


def test_secrets_never_reach_the_results(start_server, tmp_path):
    url = start_server(latency=0.0)
    results = tmp_path / "r"
    out = run_cli("trap", url + "?api_key=SECRET-QUERY", "--levels", "1", "--cooldown", "0",
                  "-H", "Authorization: Bearer SECRET-TOKEN", "-H", "X-Api-Key: SECRET-KEY",
                  "-H", "X-Pass: SECRET-PASS", "-d", "user=bob&password=SECRET-BODY",
                  "-H", "X-Trace: visible", "--results-dir", str(results), "--no-plot")
    assert out.returncode == 0, out.stderr
    for path in results.iterdir():
        text = path.read_text()
        assert "SECRET" not in text, path.name
    meta = json.loads(result_files(results, "trap")[1].read_text())
    assert "X-Trace: visible" in meta["config"]["headers"]
    assert "Authorization: <redacted>" in meta["config"]["headers"]
    assert "user=bob&password=<redacted>" in meta["command"]
    assert "SECRET" not in out.stdout + out.stderr


@pytest.mark.parametrize("args", [
    ["trap", "http://alice:SECRET-PW@127.0.0.1:1/", "--levels", "1"],  # unreachable: exit 1
    ["trap", "-H", "Authorization Bearer SECRET-TOKEN"],  # no colon: bad header, exit 2
    ["trap", "http://127.0.0.1:1/?token=SECRET-Q", "--levels", "1"],
])
def test_error_messages_redact_secrets(args, tmp_path):
    out = run_cli(*args, "--results-dir", str(tmp_path / "r"), "--no-plot")
    assert out.returncode in (1, 2), out.stderr
    assert "asyncbench: error:" in out.stderr
    assert "SECRET" not in out.stdout + out.stderr, out.stderr


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["trap", "--levels", "0"], "--levels value 0"),
        (["trap", "--levels", "1,x"], "'x'"),
        (["semaphore", "--limits", "-5"], "-5"),
        (["semaphore", "--requests", "0"], "--requests 0"),
        (["trap", "--timeout", "0"], "--timeout 0"),
        (["trap", "--timeout", "nan"], "--timeout nan"),
        (["trap", "-H", "NoColonHere"], "'NoColonHere'"),
        (["trap", "ftp://127.0.0.1/"], "ftp://127.0.0.1/"),
        (["trap", "http://10.1.2.3/"], "refusing to load 10.1.2.3 (10.1.2.3): it is not this machine"),
        (["trap", "--min-success", "1.5"], "--min-success 1.5"),
        (["trap", "--server-capacity", "0"], "--server-capacity 0"),
        (["trap", "--data", "@/no/such/file"], "/no/such/file"),
        (["trap", "--levels", "10,1000", "--requests-per-level", "100"], "--requests-per-level 100"),
    ],
)
def test_bad_input_exits_2_naming_the_value(args, named, tmp_path):
    out = run_cli(*args, "--results-dir", str(tmp_path / "r"))
    assert out.returncode == 2, out.stdout + out.stderr
    assert named in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "r").exists()  # nothing was run, nothing was written


def test_unreachable_target_exits_1(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/"
    out = run_cli("trap", url, "--levels", "1", "--results-dir", str(tmp_path))
    assert out.returncode == 1
    assert "unreachable" in out.stderr and url in out.stderr
    assert "Traceback" not in out.stderr


def test_unwritable_results_dir_exits_1(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    out = run_cli("trap", "--levels", "1", "--results-dir", str(blocker / "sub"))
    assert out.returncode == 1
    assert str(blocker / "sub") in out.stderr
    assert "Traceback" not in out.stderr


def test_table_fits_80_columns_when_piped(tmp_path):
    env = {**os.environ, "COLUMNS": "80"}
    out = subprocess.run(
        [sys.executable, "-m", "asyncbench", "semaphore", "--limits", "10,500", "--requests", "500",
         "--cooldown", "0", "--results-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    # Everything but the file paths (which are not wrapped, so they can be copied) fits.
    assert all(len(line.rstrip()) <= 80 for line in lines if str(tmp_path) not in line)
    # The headers, in the first table or (when a column such as set-up is added and the table is
    # split to fit) in the stacked one after it.
    tables = out.stdout.split("results:")[0]
    for name in ("limit", "req/s", "goodput", "L=λW", "wait", "p50", "p99", "ms", "errors"):
        assert name in tables, name
    assert "…" not in out.stdout


@pytest.mark.parametrize("columns", [60, 80])
def test_no_value_is_cut_and_no_line_has_trailing_spaces_when_narrow(columns, start_server, tmp_path):
    url = start_server(capacity=2, queue=0, latency=0.5)
    env = {**os.environ, "COLUMNS": str(columns), "NO_COLOR": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "asyncbench", "trap", url, "--levels", "1,1000", "--cooldown", "0", "--no-plot",
         "--results-dir", str(tmp_path / "r")],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stdout.splitlines() if str(tmp_path) not in line]
    assert all(len(line) <= columns for line in lines), "\n".join(lines)
    assert all(line == line.rstrip() for line in out.stdout.splitlines())
    assert "…" not in out.stdout
    [_, row] = read_csv(result_files(tmp_path / "r", "trap")[0])
    # Every figure of the table is there whole, the errors column included.
    assert f"{int(row['errors_http_5xx']):,} × 503" in out.stdout
    assert "errors" in out.stdout and "p99" in out.stdout and "1,000" in out.stdout


def test_trap_and_semaphore_against_nginx(nginx, tmp_path):
    log = nginx["access_log"]
    before = len(log.read_text().splitlines()) if log.exists() else 0
    trap = run_cli("trap", nginx["url"] + "/", "--levels", "1,10,100", "--cooldown", "0",
                   "--results-dir", str(tmp_path))
    assert trap.returncode == 0, trap.stderr
    sem = run_cli("semaphore", nginx["url"] + "/", "--limits", "5,50", "--requests", "500",
                  "--cooldown", "0", "--results-dir", str(tmp_path))
    assert sem.returncode == 0, sem.stderr
    trap_rows = read_csv(result_files(tmp_path, "trap")[0])
    sem_rows = read_csv(result_files(tmp_path, "semaphore")[0])
    assert all(float(r["success_rate"]) == 1.0 for r in trap_rows + sem_rows)
    sent = sum(int(r["requests"]) for r in trap_rows + sem_rows)
    assert sent == 1 + 10 + 100 + 500 + 500
    # nginx logged every request exactly once, pre-flights included.
    after = len(log.read_text().splitlines())
    assert after - before == sent + 2


def test_http_errors_from_nginx_are_4xx(nginx, tmp_path):
    out = run_cli("trap", nginx["url"] + "/missing", "--levels", "10", "--cooldown", "0",
                  "--results-dir", str(tmp_path))
    assert out.returncode == 0, out.stderr
    [row] = read_csv(result_files(tmp_path, "trap")[0])
    assert int(row["errors_http_4xx"]) == 10 and float(row["success_rate"]) == 0.0


def test_client_saturation_is_not_passed_off_as_server_overload(start_server, tmp_path):
    # A server with no service time and room for everything, and a burst of 3000 connections:
    # the server answers at once, so whatever latency is measured is the client's own event loop
    # working through the storm. The run must say so, not blame the server.
    url = start_server(latency=0.0, capacity=10_000, queue=0)
    out = run_cli("trap", url, "--levels", "3000", "--cooldown", "0", "--results-dir", str(tmp_path))
    assert out.returncode == 0, out.stderr
    [row] = read_csv(result_files(tmp_path, "trap")[0])
    assert float(row["success_rate"]) == 1.0  # the server shed nothing
    assert row["client_limited"] == "true"
    assert "the client was the limit" in out.stdout
    assert "! 3,000" in out.stdout or "! ★ 3,000" in out.stdout
    meta = json.loads(result_files(tmp_path, "trap")[1].read_text())
    assert meta["client_limited_levels"] == [3000]
    assert meta["sweet_spot"]["reliable"] is False
    assert "unreliable" in out.stdout


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_both_event_loops_measure_the_same_thing(start_server, tmp_path, loop):
    pytest.importorskip(loop)
    url = start_server(latency=0.05, capacity=100, queue=0)
    out = run_cli("semaphore", url, "--limits", "10", "--requests", "100", "--loop", loop,
                  "--cooldown", "0", "--results-dir", str(tmp_path))
    assert out.returncode == 0, out.stderr
    [row] = read_csv(result_files(tmp_path, "semaphore")[0])
    assert float(row["success_rate"]) == 1.0
    assert 0.05 <= float(row["latency_p50_s"]) < 1.0
    assert server_stats(url)["received"] == 101


def test_rounds_repeat_each_level_and_pool_the_counts(start_server, tmp_path):
    url = start_server(latency=0.01, capacity=100, queue=0)
    out = run_cli("trap", url, "--levels", "5,10", "--rounds", "3", "--cooldown", "0", "--results-dir", str(tmp_path))
    assert out.returncode == 0, out.stderr
    rows = {int(r["level"]): r for r in read_csv(result_files(tmp_path, "trap")[0])}
    assert (int(rows[5]["requests"]), int(rows[10]["requests"])) == (15, 30)
    assert rows[5]["rounds"] == rows[10]["rounds"] == "3"
    for r in rows.values():
        assert float(r["goodput_min_rps"]) <= float(r["goodput_rps"]) <= float(r["goodput_max_rps"])
    assert server_stats(url)["received"] == 15 + 30 + 1


def test_method_headers_and_body_reach_the_target(start_server, tmp_path):
    # /embed answers 400 unless it gets a POST with a JSON body carrying id and text.
    url = start_server(latency=0.0)
    body = tmp_path / "body.json"
    body.write_text('{"id": 7, "text": "hello"}')
    out = run_cli("semaphore", url + "/embed", "--limits", "4", "--requests", "20", "-X", "post",
                  "-H", "Content-Type: application/json", "--data", f"@{body}", "--cooldown", "0",
                  "--results-dir", str(tmp_path / "r"))
    assert out.returncode == 0, out.stderr
    [row] = read_csv(result_files(tmp_path / "r", "semaphore")[0])
    assert float(row["success_rate"]) == 1.0
    stats = server_stats(url)
    assert stats["served"] == 21 and stats["bad_requests"] == 0  # 20 + the pre-flight
