"""Scale out: a level split into shards on local processes (`--processes`) or Dask workers
(`--cluster`), started together and merged exactly."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import free_port, read_csv, result_files, run_cli, server_stats, wait_for_line

from asyncbench.load.driver import remote_hosts, split_closed, split_open
from asyncbench.load.spec import RequestSpec
from asyncbench.metrics import LatencyHistogram
from asyncbench.rates import RateRecorder

QUANTILES = (0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999, 1.0)


def _roundtrip(hist: LatencyHistogram) -> LatencyHistogram:
    return LatencyHistogram.from_dict(json.loads(json.dumps(hist.to_dict())))


def test_percentiles_of_merged_histograms_equal_those_of_one_fed_every_sample():
    rng = random.Random(3)
    whole = LatencyHistogram()
    shards = [LatencyHistogram() for _ in range(4)]
    for i in range(20_000):  # more than a batch per shard, so buffered and bucketed values both merge
        value = rng.lognormvariate(-3, 1.2) if i % 100 else rng.uniform(1, 5)  # a slow tail
        whole.record(value)
        shards[rng.randrange(4)].record(value)
    merged = LatencyHistogram()
    for shard in shards:
        merged.merge(_roundtrip(shard))
    assert merged.count == whole.count
    assert (merged.min, merged.max) == (whole.min, whole.max)
    assert merged.total == pytest.approx(whole.total, rel=1e-12)
    assert [merged.quantile(q) for q in QUANTILES] == [whole.quantile(q) for q in QUANTILES]


def test_rate_shards_merge_their_schedules_drops_and_service_times():
    whole, shards = RateRecorder(origin=10.0), [RateRecorder(origin=500.0 * k) for k in range(2)]
    rng = random.Random(5)
    for i in range(5000):
        due = i * 0.001
        lag = rng.uniform(0, 0.002)
        service = rng.lognormvariate(-4, 0.5)
        whole.scheduled(10.0 + due, 10.0 + due + lag, 10.0 + due + lag + service, 10)
        shard = shards[i % 2]
        shard.scheduled(shard.origin + due, shard.origin + due + lag, shard.origin + due + lag + service, 10)
    shards[0].dropped, shards[1].dropped = 3, 4
    merged = RateRecorder()
    for shard in shards:
        merged.merge(RateRecorder.from_dict(json.loads(json.dumps(shard.to_dict()))))
    assert (merged.count, merged.successes, merged.dropped) == (5000, 5000, 7)
    for name in ("latency", "service", "send_lag"):
        # Equal to the last bit but for the max, whose subtraction ran on other clocks' floats.
        assert [getattr(merged, name).quantile(q) for q in QUANTILES] == \
               pytest.approx([getattr(whole, name).quantile(q) for q in QUANTILES], rel=1e-12), name
    assert (merged.first_intended, merged.last_sent) == pytest.approx((whole.first_intended, whole.last_sent))


def test_a_level_splits_into_shards_that_add_up():
    spec = RequestSpec(url="http://127.0.0.1:1/")
    burst = split_closed(spec, "asyncio", 1001, 1001, False, 2)
    assert [(j.concurrency, j.requests) for j in burst] == [(501, 501), (500, 500)]  # a burst stays a burst
    queued = split_closed(spec, "asyncio", 3, 1000, True, 2)
    assert [(j.concurrency, j.requests) for j in queued] == [(2, 667), (1, 333)]
    assert len(split_closed(spec, "asyncio", 1, 1, False, 4)) == 1  # one connection is one shard
    # Constant arrivals: the shards' sends interleave into the one schedule's spacing.
    jobs = split_open(spec, "asyncio", 1000, 10, "constant", 100, None, 3)
    sends = sorted(j.phase_s + k / j.rate for j in jobs for k in range(j.total))
    assert sends == pytest.approx([i / 1000 for i in range(10)])
    assert sum(j.max_in_flight for j in jobs) == 100


def test_workers_on_other_machines_are_told_apart_from_this_ones():
    addresses = ["tcp://10.0.0.7:40123", "tcp://127.0.0.1:36039", "pid 4711", "tls://[::1]:8786",
                 "tcp://[fe80::1]:9000", "tcp://10.0.0.7:40124"]
    assert remote_hosts(addresses) == ["10.0.0.7", "fe80::1"]


def _shards(sidecar: dict) -> list[dict]:
    return [shard for step in sidecar["shards"] for shard in step["shards"]]


def test_processes_split_a_sweep_and_every_request_is_counted_once(start_server, tmp_path):
    url = start_server(latency=0.01, capacity=200, queue=200)
    proc = run_cli("trap", url, "--levels", "7,60", "--processes", "2", "--cooldown", "0",
                   "--results-dir", str(tmp_path / "r"), "--no-plot")
    assert proc.returncode == 0, proc.stderr
    csv_path, json_path, _ = result_files(tmp_path / "r", "trap")
    rows = read_csv(csv_path)
    assert [int(r["requests"]) for r in rows] == [7, 60]
    assert server_stats(url)["received"] == 1 + 67  # the pre-flight, then the levels
    sidecar = json.loads(json_path.read_text())
    assert sidecar["scale"] == {"processes": 2, "cluster": None, "workers": 2}
    [level7, level60] = sidecar["shards"]
    assert [s["connections"] for s in level7["shards"]] == [4, 3]
    assert sum(s["requests"] for s in level60["shards"]) == 60
    assert len({s["worker"] for s in _shards(sidecar)}) == 2
    assert all(s["status"] == "ok" and s["worker"].startswith("pid ") for s in _shards(sidecar))


def _one_step(experiment: str, url: str, tmp_path: Path, *args: str) -> tuple[dict, dict]:
    """Run a one-step experiment; its one row and its sidecar."""
    proc = run_cli(experiment, url, *args, "--results-dir", str(tmp_path / "r"), "--no-plot")
    assert proc.returncode == 0, proc.stderr
    csv_path, json_path, _ = result_files(tmp_path / "r", experiment)
    [row] = read_csv(csv_path)
    return row, json.loads(json_path.read_text())


def test_rate_on_processes_sends_the_whole_schedule(start_server, tmp_path):
    url = start_server(latency=0.002, capacity=200, queue=200)
    row, sidecar = _one_step("rate", url, tmp_path, "--rates", "400", "--duration", "1", "--processes", "2")
    assert int(row["requests"]) == 400 and int(row["dropped"]) == 0
    assert server_stats(url)["received"] == 1 + 400
    shards = _shards(sidecar)
    assert [s["offered_rps"] for s in shards] == [200, 200]


def _workers_of(pid: int) -> list[int]:
    """The worker processes a coordinator spawned (multiprocessing's spawn_main children)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(c) for c in children if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def _wait_for(condition, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen in {timeout} s")
        time.sleep(0.02)


def _start_semaphore(url: str, tmp_path: Path, limits: str, requests: int) -> tuple[subprocess.Popen, list[int]]:
    """`semaphore --processes 2` started in the background: once both workers are up, the
    process and its workers' pids."""
    proc = subprocess.Popen([sys.executable, "-m", "asyncbench", "semaphore", url, "--limits", limits,
                             "--requests", str(requests), "--processes", "2", "--cooldown", "0",
                             "--results-dir", str(tmp_path / "r"), "--no-plot"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: len(_workers_of(proc.pid)) == 2, "two workers")
    return proc, _workers_of(proc.pid)


def test_a_worker_that_dies_is_named_its_level_kept_and_the_next_level_runs(start_server, tmp_path):
    url = start_server(latency=0.01, capacity=100, queue=100)
    proc, workers = _start_semaphore(url, tmp_path, "2,4", 400)
    _wait_for(lambda: server_stats(url)["received"] > 50, "the first limit's requests")
    victim = workers[0]
    os.kill(victim, signal.SIGKILL)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    assert f"(pid {victim}) died: its process was killed by SIGKILL" in err
    # What it reported answered is said as such, and what it sent as unknown (the server saw more).
    said = " ".join(err.split())
    assert "requests answered, and how many more it sent is not known" in said and "after about" not in said
    assert "1 shard(s) failed" in err
    csv_path, json_path, _ = result_files(tmp_path / "r", "semaphore")
    first, second = read_csv(csv_path)
    assert 200 <= int(first["requests"]) < 400  # the other shard's 200, and the dead one's share is said
    assert int(second["requests"]) == 400  # a fresh worker took the dead one's place
    sidecar = json.loads(json_path.read_text())
    dead = [s for s in _shards(sidecar) if s["status"] == "died"]
    assert [(d["worker"], d["requests_planned"], d["requests"]) for d in dead] == [(f"pid {victim}", 200, None)]
    assert 0 <= dead[0]["requests_reported_answered"] <= 200
    assert any(f"pid {victim}" in w for w in sidecar["warnings"])


def test_a_find_probe_whose_shard_died_is_not_met(start_server, tmp_path):
    url = start_server(latency=0.01, capacity=100, queue=100)
    proc = subprocess.Popen([sys.executable, "-m", "asyncbench", "find", url, "--slo-p99", "1", "--max", "8",
                             "--probe-duration", "1", "--cooldown", "0", "--processes", "2",
                             "--results-dir", str(tmp_path / "r"), "--no-plot"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: len(_workers_of(proc.pid)) == 2, "two workers")
    victim = _workers_of(proc.pid)[0]
    # In the fourth probe (level 8): the three before sent 1×, 2× and 4× 100 requests a second.
    _wait_for(lambda: server_stats(url)["received"] > 1 + 100 + 200 + 400 + 50, "the probe of level 8")
    os.kill(victim, signal.SIGKILL)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err  # part of the load could not be made
    probes = {int(p["level"]): p for p in read_csv(result_files(tmp_path / "r", "find")[0])}
    assert probes[8]["passed"] == "false" and "shard(s) died" in probes[8]["reason"]
    meta = json.loads(result_files(tmp_path / "r", "find")[1].read_text())
    assert meta["result"]["level"] < 8


def test_ctrl_c_stops_every_worker_and_keeps_the_finished_levels(start_server, tmp_path):
    # The server freezes for a minute 10 requests into the second limit: interrupted in it.
    url = start_server(latency=0.01, capacity=100, queue=100, stall_after=1 + 400 + 10, stall=60)
    proc, workers = _start_semaphore(url, tmp_path, "4,8", 400)
    wait_for_line(proc.stderr, "limit 4 done", proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert not [w for w in workers if _alive(w)]
    csv_path, _, _ = result_files(tmp_path / "r", "semaphore")
    assert [(r["level"], r["requests"]) for r in read_csv(csv_path)] == [("4", "400")]


def test_a_local_dask_cluster_runs_the_shards_and_counts_every_request(start_server, tmp_path):
    url = start_server(latency=0.01, capacity=200, queue=200)
    row, sidecar = _one_step("semaphore", url, tmp_path, "--limits", "10", "--requests", "300", "--cluster", "local:2")
    assert int(row["requests"]) == int(row["successes"]) == 300
    assert server_stats(url)["received"] == 1 + 300
    assert sidecar["scale"] == {"processes": None, "cluster": "local:2", "workers": 2}
    shards = _shards(sidecar)
    assert len({s["worker"] for s in shards}) == 2 and all(s["worker"].startswith("tcp://127.0.0.1:") for s in shards)
    assert [s["requests"] for s in shards] == [150, 150]


def test_a_scheduler_and_workers_started_as_users_start_them(start_server, tmp_path):
    dask = shutil.which("dask", path=os.path.dirname(sys.executable)) or shutil.which("dask")
    if dask is None:
        pytest.skip("the dask command (pip install 'asyncbench[cluster]') is not installed")
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    procs = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        for _ in range(2):
            procs.append(subprocess.Popen([dask, "worker", address, "--nthreads", "1", "--host", "127.0.0.1",
                                           "--no-dashboard"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        from distributed import Client

        with Client(address, timeout=30) as client:
            client.wait_for_workers(2, timeout=60)
        url = start_server(latency=0.005, capacity=200, queue=200)
        row, sidecar = _one_step("rate", url, tmp_path, "--rates", "200", "--duration", "1", "--cluster", address)
        assert int(row["requests"]) == 200
        assert server_stats(url)["received"] == 1 + 200
        shards = _shards(sidecar)
        assert len({s["worker"] for s in shards}) == 2 and sum(s["requests"] for s in shards) == 200
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


@pytest.mark.parametrize("args, message", [
    (["--processes", "0"], "--processes"),
    (["--cluster", "localhost"], "invalid --cluster 'localhost'"),
    (["--cluster", "local:x"], "invalid --cluster 'local:x'"),
    (["--processes", "2", "--cluster", "local:2"], "do not go together"),
])
def test_bad_scale_options_are_named_with_exit_2(args, message, tmp_path):
    proc = run_cli("trap", "--levels", "1", *args, "--results-dir", str(tmp_path / "r"), "--no-plot")
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_a_scheduler_that_cannot_be_reached_is_exit_1_with_its_address(tmp_path):
    address = f"tcp://127.0.0.1:{free_port()}"
    proc = run_cli("trap", "--levels", "1", "--cluster", address, "--results-dir", str(tmp_path / "r"), "--no-plot")
    assert proc.returncode == 1, proc.stderr
    assert f"cannot reach the Dask scheduler at {address}" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "r").exists() or not list((tmp_path / "r").glob("*.csv"))


def test_without_dask_cluster_says_how_to_install_it(tmp_path):
    code = ("import sys; sys.modules['distributed'] = None; sys.argv = ['asyncbench'] + sys.argv[1:]; "
            "from asyncbench.cli import main; main()")
    proc = subprocess.run([sys.executable, "-c", code, "trap", "--cluster", "local:2", "--no-plot",
                           "--results-dir", str(tmp_path / "r")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "pip install 'asyncbench[cluster]'" in proc.stderr
