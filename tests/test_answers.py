"""Answers for CI: `--fail-if` thresholds (exit 3 naming the row, the column, the value)."""

from __future__ import annotations

import json

import pytest
from conftest import read_csv, result_files, run_cli


def test_a_trap_that_collapses_fails_its_threshold_naming_the_level(start_server, tmp_path):
    # Capacity 10 and no queue: the burst of 40 is shed beyond 10, the burst of 5 is not.
    url = start_server(latency=0.2, capacity=10, queue=0)
    out = run_cli("trap", url, "--levels", "5,40", "--cooldown", "0", "--no-plot", "--fail-if", "success_rate<0.99",
                  "--fail-if", "latency_p50_s>30", "--results-dir", str(tmp_path / "r"))
    assert out.returncode == 3, out.stderr
    said = " ".join(out.stdout.split())
    assert "threshold failed: --fail-if success_rate<0.99: level 40 has success_rate = 0.25" in said
    assert "level 5 has" not in said
    assert "1 of 2 --fail-if thresholds failed: success_rate<0.99" in out.stderr
    csv_path, json_path, _ = result_files(tmp_path / "r", "trap")
    assert [r["level"] for r in read_csv(csv_path)] == ["5", "40"]  # results written as usual
    meta = json.loads(json_path.read_text())
    assert meta["status"] == "complete"
    assert meta["thresholds"] == [{"expr": "success_rate<0.99", "failed": ["level 40"]},
                                  {"expr": "latency_p50_s>30", "failed": []}]


def test_thresholds_that_hold_exit_0(fast_server, tmp_path):
    out = run_cli("semaphore", fast_server, "--limits", "2", "--requests", "20", "--no-plot",
                  "--fail-if", "success_rate<1", "--results-dir", str(tmp_path / "r"))
    assert out.returncode == 0, out.stderr
    meta = json.loads(result_files(tmp_path / "r", "semaphore")[1].read_text())
    assert meta["thresholds"] == [{"expr": "success_rate<1", "failed": []}]


def test_every_experiment_takes_thresholds_and_names_its_rows(tmp_path):
    out = run_cli("pipeline", "--generate-mb", "0.01", "--concurrency", "4", "--cooldown", "0", "--no-plot",
                  "--fail-if", "success_rate<=1", "--results-dir", str(tmp_path / "r"))
    assert out.returncode == 3, out.stderr
    meta = json.loads(result_files(tmp_path / "r", "pipeline")[1].read_text())
    assert meta["thresholds"][0]["failed"] == ["input_mb 0.01, batch_size 50, concurrency 4"]


@pytest.mark.parametrize(("expr", "named"), [
    ("success_rate", "'success_rate'"),
    ("succes_rate<0.99", "'succes_rate'"),
    ("error_statuses>1", "'error_statuses'"),  # a column, but not a number
    ("success_rate<high", "'high'"),
    ("success_rate<nan", "'nan'"),
])
def test_bad_thresholds_are_named_before_anything_runs(expr, named, tmp_path):
    out = run_cli("trap", "--fail-if", expr, "--results-dir", str(tmp_path / "r"))
    assert out.returncode == 2 and named in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "r").exists()


def test_the_usl_fit_recovers_a_known_curve_and_says_when_it_cannot():
    from asyncbench import usl

    levels = [1, 2, 4, 8, 16, 32, 64, 128]
    goodput = [100 * n / (1 + 0.05 * (n - 1) + 0.001 * n * (n - 1)) for n in levels]
    fit = usl.fit(levels, goodput)
    assert fit is not None
    assert fit.sigma == pytest.approx(0.05, rel=1e-6) and fit.kappa == pytest.approx(0.001, rel=1e-6)
    assert fit.lambda_rps == pytest.approx(100, rel=1e-6) and fit.r2 == pytest.approx(1.0)
    assert fit.peak_level == pytest.approx((0.95 / 0.001) ** 0.5)
    assert "predicted peak 31 at 904 req/s" in fit.describe()
    # Still climbing in a straight line: no peak to predict.
    linear = usl.fit([1, 2, 4, 8], [10, 20, 40, 80])
    assert linear is not None and linear.peak_level is None and "no peak in sight" in linear.describe()
    # A zigzag no scalability curve explains.
    poor = usl.fit([1, 2, 4, 8, 16], [100, 10, 100, 10, 100])
    assert poor is None or "a poor fit" in poor.describe()
    assert usl.fit([1, 2, 4], [1, 2, 4]) is None  # fewer than 4 levels: no fit


def test_a_sweep_of_four_levels_reports_its_usl(start_server, tmp_path):
    url = start_server(latency=0.02, capacity=40, queue=1000)
    out = run_cli("semaphore", url, "--limits", "5,10,20,40,80", "--requests", "400", "--cooldown", "0",
                  "--results-dir", str(tmp_path / "r"), "--plots-dir", str(tmp_path / "p"))
    assert out.returncode == 0, out.stderr
    meta = json.loads(result_files(tmp_path / "r", "semaphore")[1].read_text())
    assert set(meta["usl"]) >= {"lambda_rps", "sigma", "kappa", "r2", "peak_level", "peak_rps"}
    assert "USL fit: σ" in out.stdout
    assert list((tmp_path / "p").glob("semaphore-*-throughput.png"))


def _sweep(url: str, folder) -> str:
    out = run_cli("semaphore", url, "--limits", "5,10", "--requests", "100", "--rounds", "3", "--cooldown", "0",
                  "--no-plot", "--results-dir", str(folder))
    assert out.returncode == 0, out.stderr
    return str(result_files(folder, "semaphore")[0])


def test_compare_tells_a_regression_from_noise(start_server, tmp_path):
    same = start_server(latency=0.03, capacity=100, queue=100)
    baseline = _sweep(same, tmp_path / "a")
    again = _sweep(same, tmp_path / "b")
    slower = _sweep(start_server(latency=0.06, capacity=100, queue=100), tmp_path / "c")
    meta = json.loads((tmp_path / "a" / (result_files(tmp_path / "a", "semaphore")[0].stem + ".json")).read_text())
    assert len(meta["rounds"]["5"]) == 3  # every round's figures are kept for this
    # A p99 of 100 samples moves by 10 % from run to run on a busy machine: a tolerance of 25 %
    # separates that noise from a server twice as slow.
    out = run_cli("compare", baseline, again, "--tolerance", "0.25", "--fail-on-regression",
                  "--out", str(tmp_path / "p"))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "no change: every difference is within the tolerance" in " ".join(out.stdout.split())
    assert list((tmp_path / "p").glob("compare-*.png"))
    out = run_cli("compare", baseline, slower, "--tolerance", "0.25", "--no-plot")
    assert out.returncode == 0 and "worse: the candidate regressed at limit 5, 10" in out.stdout
    out = run_cli("compare", baseline, slower, "--tolerance", "0.25", "--fail-on-regression", "--no-plot")
    assert out.returncode == 3 and "regression at limit 5, 10" in out.stderr


def test_compare_refuses_what_it_cannot_compare(tmp_path):
    missing = run_cli("compare", str(tmp_path / "none.csv"), str(tmp_path / "none2.csv"))
    assert missing.returncode == 2 and "none.csv" in missing.stderr
    threads = run_cli("threads", "--tasks", "2", "--sleep", "0.01", "--no-plot", "--results-dir", str(tmp_path / "t"))
    assert threads.returncode == 0
    [path] = [p for p in (tmp_path / "t").glob("threads-*.csv")]
    out = run_cli("compare", str(path), str(path))
    assert out.returncode == 2 and "compare takes sweeps" in out.stderr and "Traceback" not in out.stderr


def test_find_brackets_the_most_concurrency_within_the_objective(start_server, tmp_path):
    # 20 served at once for 50 ms each: past 20 in flight, requests queue and p99 doubles.
    url = start_server(latency=0.05, capacity=20, queue=1000)
    out = run_cli("find", url, "--slo-p99", "0.09", "--probe-duration", "0.5", "--cooldown", "0", "--max", "64",
                  "--results-dir", str(tmp_path / "r"), "--plots-dir", str(tmp_path / "p"))
    assert out.returncode == 0, out.stderr
    csv_path, json_path, _ = result_files(tmp_path / "r", "find")
    probes = read_csv(csv_path)
    meta = json.loads(json_path.read_text())
    found = meta["result"]["level"]
    assert 16 <= found <= 21, probes
    levels = [int(p["level"]) for p in probes]
    assert levels[:5] == [1, 2, 4, 8, 16]  # doubling, then bisection
    passed = {int(p["level"]): p["passed"] == "true" for p in probes}
    above = [lv for lv, ok in passed.items() if not ok]
    assert passed[found] and min(above) <= max(found * 1.1, found + 1)  # bracketed to 10 %
    assert all(p["reason"].startswith("p99") for p in probes if p["passed"] == "false")
    said = " ".join(out.stdout.split())
    knee = meta["recommended"]["level"]
    assert knee <= found and f"recommended: {knee} in flight" in said
    assert f"{found} in flight is the edge, with no headroom" in said
    assert list((tmp_path / "p").glob("find-*-probes.png"))


def test_find_exits_3_when_no_level_meets_the_objective(start_server, tmp_path):
    url = start_server(latency=0.05, capacity=20, queue=1000)
    out = run_cli("find", url, "--slo-p99", "0.01", "--probe-duration", "0.2", "--no-plot",
                  "--results-dir", str(tmp_path / "r"))
    assert out.returncode == 3, out.stderr
    assert "no level met the objective" in out.stderr
    [probe] = read_csv(result_files(tmp_path / "r", "find")[0])
    assert probe["level"] == "1" and probe["passed"] == "false"
    assert json.loads(result_files(tmp_path / "r", "find")[1].read_text())["result"] is None


def test_find_by_rate(start_server, tmp_path):
    # 5 served at once for 100 ms each: 50 req/s at most. Rates this low are an easy schedule for
    # the client on any machine; past 50/s the queue grows for the whole probe and so does p99.
    url = start_server(latency=0.1, capacity=5, queue=1000)
    out = run_cli("find", url, "--mode", "rate", "--slo-p99", "0.3", "--probe-duration", "1", "--cooldown", "0",
                  "--max", "256", "--no-plot", "--results-dir", str(tmp_path / "r"))
    assert out.returncode == 0, out.stderr
    meta = json.loads(result_files(tmp_path / "r", "find")[1].read_text())
    assert 32 <= meta["result"]["level"] <= 64
    assert "offered_rps" in read_csv(result_files(tmp_path / "r", "find")[0])[0]
