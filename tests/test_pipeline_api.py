"""The pipeline against an OpenAI-style embeddings API: request lists, budgets, the server's
rate-limit headers steering the sends, answers of another shape, resume after SIGKILL,
--ordered."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import read_csv, result_files, run_cli, run_in_pty, server_stats


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _pipeline(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli("pipeline", "--api", "openai", "--no-plot", "--results-dir", str(tmp_path / "r"), *args)


def test_requests_carry_a_list_of_inputs_and_every_chunk_gets_its_embedding(tmp_path, start_server):
    url = start_server(latency=0.01)
    out = tmp_path / "out.jsonl"
    proc = _pipeline(tmp_path, url + "/v1/embeddings", "--generate-mb", "0.02", "--chunk-bytes", "256",
                     "--inputs-per-request", "8", "--batch-sizes", "64", "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    lines = _lines(out)
    assert sorted(line["id"] for line in lines) == list(range(len(lines))) and len(lines) > 50
    assert all(len(line["embedding"]) == 16 and line["tokens"] >= 1 for line in lines)
    [row] = read_csv(result_files(tmp_path / "r", "pipeline")[0])
    assert {"throttled", "waited_s", "tokens", "tokens_per_min", "limited_by"} <= set(row)
    stats = server_stats(url)
    assert stats["embedded_inputs"] == len(lines) + 1  # and the pre-flight's
    assert int(row["tokens"]) == stats["tokens"] - 6  # what the server counted (usage), less the pre-flight's
    assert int(row["attempts"]) == -(-len(lines) // 8)  # eight chunks a request


def test_the_client_budget_paces_the_sends_before_the_server_says_no(tmp_path, start_server):
    url = start_server(latency=0.0, tpm=600_000)
    proc = _pipeline(tmp_path, url + "/v1/embeddings", "--generate-mb", "0.01", "--chunk-bytes", "256",
                     "--tpm", "60000", "--concurrency", "10")
    assert proc.returncode == 0, proc.stderr
    [row] = read_csv(result_files(tmp_path / "r", "pipeline")[0])
    tokens = int(row["tokens"])
    # 1,000 tokens a second, one second's worth at once: the run cannot be quicker than the rest.
    assert float(row["elapsed_s"]) >= (tokens - 1000) / 1000 * 0.95
    assert row["limited_by"] == "budget" and row["throttled"] == "0" and float(row["waited_s"]) > 0
    assert "limited by the client's budget" in proc.stdout


def test_the_server_s_headers_steer_a_client_without_a_budget(tmp_path, start_server):
    url = start_server(latency=0.0, rpm=1200)  # 20 requests a second, 20 at once
    proc = _pipeline(tmp_path, url + "/v1/embeddings", "--generate-mb", "0.01", "--chunk-bytes", "128",
                     "--concurrency", "10")
    assert proc.returncode == 0, proc.stderr
    [row] = read_csv(result_files(tmp_path / "r", "pipeline")[0])
    stats = server_stats(url)
    assert float(row["success_rate"]) == 1.0
    # Every 429 the server sent was seen, and the remaining-requests header kept them few.
    assert int(row["throttled"]) == stats["rate_limited"] <= int(row["chunks"]) // 4
    assert float(row["elapsed_s"]) >= (int(row["chunks"]) - 20) / 20 * 0.95


def test_an_answer_of_another_shape_fails_its_chunks_with_the_reason(tmp_path, start_server):
    url = start_server(latency=0.0)
    out = tmp_path / "out.jsonl"
    proc = _pipeline(tmp_path, url + "/", "--generate-mb", "0.002", "--chunk-bytes", "256", "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    lines = _lines(out)
    assert lines and all(line["error"] == "other" and "not an embeddings list" in line["detail"] for line in lines)


def test_ordered_writes_the_results_in_input_order(tmp_path, start_server):
    url = start_server(latency=0.01, jitter=0.009, seed=3)
    out = tmp_path / "out.jsonl"
    proc = _pipeline(tmp_path, url + "/v1/embeddings", "--generate-mb", "0.02", "--chunk-bytes", "128",
                     "--concurrency", "20", "--batch-sizes", "40", "--ordered", "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    ids = [line["id"] for line in _lines(out)]
    assert ids == list(range(len(ids))) and len(ids) > 100


def test_resume_after_sigkill_sends_what_is_missing_and_nothing_done_again(tmp_path, start_server):
    url = start_server(latency=0.02)
    out = tmp_path / "out.jsonl"
    args = [sys.executable, "-m", "asyncbench", "pipeline", "--api", "openai", url + "/v1/embeddings",
            "--generate-mb", "0.1", "--chunk-bytes", "256", "--concurrency", "5", "--batch-sizes", "50",
            "--no-plot", "--results-dir", str(tmp_path / "r"), "--output", str(out)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not out.exists() or out.read_bytes().count(b"\n") < 150:  # the output grows: the sync point
            assert proc.poll() is None and time.monotonic() < deadline, "the run ended before the kill"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    with open(out, "ab") as f:
        f.write(b'{"id": 99999, "embed')  # a crash in the middle of a line
    resumed = run_cli(*args[3:], "--resume")
    assert resumed.returncode == 0, resumed.stderr
    ids = [line["id"] for line in _lines(out)]
    assert sorted(ids) == list(range(len(ids))) and len(ids) == len(set(ids)) > 150
    chunks = len(ids)
    # Only what was in flight at the kill (5 requests) can have reached the server twice; and the
    # two pre-flights.
    assert chunks + 2 <= server_stats(url)["embedded_inputs"] <= chunks + 5 + 2


def test_resume_is_refused_without_an_earlier_output_or_against_another_input(tmp_path, start_server):
    url = start_server(latency=0.0)
    out = tmp_path / "out.jsonl"
    none = _pipeline(tmp_path, url + "/v1/embeddings", "--generate-mb", "0.01", "--output", str(out), "--resume")
    assert none.returncode == 2 and "no earlier output" in none.stderr
    bare = _pipeline(tmp_path, url + "/v1/embeddings", "--generate-mb", "0.01", "--resume")
    assert bare.returncode == 2 and "--resume needs --output FILE" in bare.stderr
    first = _pipeline(tmp_path, url + "/v1/embeddings", "--generate-mb", "0.01", "--output", str(out))
    assert first.returncode == 0, first.stderr
    other = _pipeline(tmp_path, url + "/v1/embeddings", "--generate-mb", "0.02", "--output", str(out), "--resume")
    assert other.returncode == 2 and "made from another input" in other.stderr and "its size" in other.stderr
    chunks = _pipeline(tmp_path, url + "/v1/embeddings", "--generate-mb", "0.01", "--chunk-bytes", "512",
                       "--output", str(out), "--resume")
    assert chunks.returncode == 2 and "the chunk size (1024 then, 512 now)" in chunks.stderr
    same = _pipeline(tmp_path, url + "/v1/embeddings", "--generate-mb", "0.01", "--output", str(out), "--resume")
    assert same.returncode == 0 and "not sent again" in same.stdout


@pytest.mark.parametrize("args, why", [
    (["--api", "grpc"], "invalid --api 'grpc'"),
    (["--api", "embed", "--inputs-per-request", "4"], "needs --api openai"),
    (["--tpm", "-1"], "invalid --tpm -1"),
    (["--inputs-per-request", "5000"], "invalid --inputs-per-request 5000"),
])
def test_bad_values_exit_2_naming_them(tmp_path, args, why):
    proc = run_cli("pipeline", "--no-plot", "--results-dir", str(tmp_path / "r"), *args)
    assert proc.returncode == 2 and why in proc.stderr and "Traceback" not in proc.stderr


def test_a_terminal_shows_chunks_done_of_total_rate_eta_and_429s(tmp_path):
    # More requests at once than the server's one-second share: 429s before its headers arrive.
    code, out = run_in_pty("pipeline", "--api", "openai", "--generate-mb", "0.05", "--chunk-bytes", "512",
                           "--server-rpm", "3000", "--concurrency", "40", "--batch-sizes", "100", "--no-plot",
                           "--results-dir", str(tmp_path / "r"), columns=80)
    assert code == 0, out
    [row] = read_csv(result_files(tmp_path / "r", "pipeline")[0])
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-ln-z]", "\n", re.sub(r"\x1b\[[0-9;]*m", "", out))
    frames = [line for line in text.splitlines() if "chunk/s" in line]
    assert frames, out
    last = frames[-1]  # drawn once more as the display stops: the pair's final figures
    chunks, throttled = int(row["chunks"]), int(row["throttled"])
    assert f"{chunks}/{chunks}" in last and "ETA" in last, last
    assert (f"{throttled} × 429" in last) == (throttled > 0), last
    assert all(len(line) <= 80 for line in frames)
    assert "Traceback" not in out
