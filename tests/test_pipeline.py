"""`asyncbench pipeline`: the stages on hand-made input, and the command end to end."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import read_csv, run_cli, wait_for_line

from asyncbench.experiments.pipeline import batches, clean, generate_text, read_chunks
from asyncbench.server import embed

TEXT = "héllo wörld — 東京 データ 🚀 naïve café ✓ " * 40


@pytest.mark.parametrize("chunk_bytes", [4, 5, 6, 7, 13, 64, 1024])
def test_chunks_never_split_a_utf8_character(chunk_bytes):
    data = TEXT.encode("utf-8")
    parts = list(read_chunks(io.BytesIO(data), chunk_bytes))
    assert "".join(parts) == TEXT
    assert all(0 < len(p.encode("utf-8")) <= chunk_bytes for p in parts)
    assert "\ufffd" not in "".join(parts)


def test_invalid_bytes_are_replaced_not_fatal():
    data = bytes(range(256)) * 8 + "fin ✓".encode()
    parts = list(read_chunks(io.BytesIO(data), 16))
    joined = "".join(parts)
    assert "\ufffd" in joined and joined.endswith("fin ✓")


def test_cleaning_normalises_whitespace_and_drops_controls():
    assert list(clean(["  a\t\tb\x07\r\n c \x00 ", "\x1b[31mred\x1b[0m", "ok"])) == ["a b c", "[31mred[0m", "ok"]


def test_batches_are_taken_lazily_one_at_a_time():
    pulled = []

    def source():
        for i in range(7):
            pulled.append(i)
            yield f"t{i}"

    it = batches(source(), 3)
    first = next(it)
    assert first == [(0, "t0"), (1, "t1"), (2, "t2")]
    assert pulled == [0, 1, 2]  # nothing beyond the first batch was read
    assert [len(b) for b in it] == [3, 1]


def test_generated_text_has_the_asked_size_and_is_utf8(tmp_path):
    path = tmp_path / "g.txt"
    written = generate_text(path, 0.05)
    assert written == path.stat().st_size
    assert abs(written - 0.05 * 1024 * 1024) < 8
    path.read_bytes().decode("utf-8")  # valid UTF-8 throughout


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_chunk_is_answered_exactly_once_with_its_own_embedding(tmp_path):
    source = tmp_path / "in.txt"
    source.write_text(TEXT * 10, encoding="utf-8")
    out = run_cli("pipeline", "--input", str(source), "--chunk-bytes", "100", "--batch-sizes", "7",
                  "--concurrency", "3", "--results-dir", str(tmp_path / "r"), "--no-plot")
    assert out.returncode == 0, out.stderr
    with open(source, "rb") as f:
        expected = list(clean(read_chunks(f, 100)))
    [jsonl] = list((tmp_path / "r").glob("*-b7-c3.jsonl"))
    lines = _jsonl(jsonl)
    assert sorted(line["id"] for line in lines) == list(range(len(expected)))
    for line in lines:
        assert line["embedding"] == embed(expected[line["id"]])
    [row] = read_csv(next(p for p in (tmp_path / "r").glob("pipeline-*.csv")))
    assert int(row["chunks"]) == len(expected) and int(row["successes"]) == len(expected)
    assert int(row["batches"]) == -(-len(expected) // 7)
    for column in ("batch_size", "concurrency", "chunks", "successes", "failures", "elapsed_s",
                   "throughput_cps", "peak_traced_mb", "peak_rss_mb"):
        assert column in row


def test_injected_faults_are_retried_to_success(tmp_path):
    out = run_cli("pipeline", "--generate-mb", "0.05", "--server-error-rate", "0.3", "--server-latency", "0",
                  "--retries", "10", "--results-dir", str(tmp_path), "--no-plot")
    assert out.returncode == 0, out.stderr
    [row] = read_csv(next(tmp_path.glob("pipeline-*.csv")))
    assert float(row["success_rate"]) == 1.0
    assert int(row["attempts"]) > int(row["chunks"])
    [jsonl] = list(tmp_path.glob("*.jsonl"))
    assert all("embedding" in line for line in _jsonl(jsonl))


def test_memory_is_flat_across_input_sizes(tmp_path):
    out = run_cli("pipeline", "--generate-mb", "0.25,2", "--server-latency", "0", "--cooldown", "0",
                  "--results-dir", str(tmp_path), "--no-plot")
    assert out.returncode == 0, out.stderr
    rows = read_csv(next(tmp_path.glob("pipeline-*.csv")))
    small, large = sorted(rows, key=lambda r: float(r["input_mb"]))
    assert int(large["chunks"]) > 7 * int(small["chunks"])
    # 8× the input, yet the traced peak grows by less than half.
    assert float(large["peak_traced_mb"]) < 1.5 * float(small["peak_traced_mb"])
    assert "input 0.25 MB → 2 MB (×8, at batch size 50, concurrency 25)" in out.stdout
    assert len(list(tmp_path.glob("*-0.25mb-b50-c25.jsonl"))) == 1


def test_output_option_and_its_limits(tmp_path):
    target = tmp_path / "out.jsonl"
    ok = run_cli("pipeline", "--generate-mb", "0.01", "--server-latency", "0", "--output", str(target),
                 "--results-dir", str(tmp_path / "r"), "--no-plot")
    assert ok.returncode == 0, ok.stderr
    assert len(_jsonl(target)) > 0
    many = run_cli("pipeline", "--concurrency", "5,10", "--output", str(target), "--results-dir", str(tmp_path / "r"))
    assert many.returncode == 2 and "--output" in many.stderr


def test_empty_input_runs_and_reports_zero_chunks(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    out = run_cli("pipeline", "--input", str(empty), "--results-dir", str(tmp_path / "r"), "--no-plot")
    assert out.returncode == 0, out.stderr
    [row] = read_csv(next((tmp_path / "r").glob("pipeline-*.csv")))
    assert row["chunks"] == "0"


def test_binary_input_is_cleaned_not_crashed_on(tmp_path):
    blob = tmp_path / "blob.bin"
    blob.write_bytes(os.urandom(20_000))
    out = run_cli("pipeline", "--input", str(blob), "--server-latency", "0", "--results-dir", str(tmp_path / "r"),
                  "--no-plot")
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    [row] = read_csv(next((tmp_path / "r").glob("pipeline-*.csv")))
    assert float(row["success_rate"]) == 1.0 and int(row["chunks"]) >= 19


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--input", "/no/such/file.txt"], "/no/such/file.txt"),
        (["--batch-sizes", "0"], "--batch-sizes value 0"),
        (["--concurrency", "x"], "'x'"),
        (["--chunk-bytes", "2"], "--chunk-bytes 2"),
        (["--generate-mb", "-1"], "--generate-mb -1"),
        (["--input", "a.txt", "--generate-mb", "1"], "not both"),
    ],
)
def test_bad_input_exits_2(tmp_path, args, named):
    out = run_cli("pipeline", *args, "--results-dir", str(tmp_path))
    assert out.returncode == 2, out.stdout + out.stderr
    assert named in out.stderr and "Traceback" not in out.stderr


def test_interrupted_pipeline_leaves_valid_jsonl(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "asyncbench", "pipeline", "--generate-mb", "0.01,0.5", "--concurrency", "1",
         "--batch-sizes", "5", "--server-latency", "0.05", "--cooldown", "0", "--no-plot",
         "--results-dir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        # The small input goes first and is quick; interrupt the slow large one.
        wait_for_line(proc.stderr, "0.01 MB done", proc)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and "Traceback" not in err
    rows = read_csv(next(tmp_path.glob("pipeline-*.csv")))
    assert [r["input_mb"] for r in rows] == ["0.01"]
    first = _jsonl(next(tmp_path.glob("*-0.01mb-b5-c1.jsonl")))
    assert sorted(line["id"] for line in first) == list(range(int(rows[0]["chunks"])))
    partial = _jsonl(next(tmp_path.glob("*-0.5mb-b5-c1.jsonl")))  # every line parses
    ids = [line["id"] for line in partial]
    assert len(ids) == len(set(ids)) < 500  # whole lines only, none twice, the run cut short


def test_a_narrow_table_repeats_every_column_that_names_a_row(tmp_path):
    env = {**os.environ, "COLUMNS": "60", "NO_COLOR": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "asyncbench", "pipeline", "--generate-mb", "0.05", "--concurrency", "5,25",
         "--cooldown", "0", "--no-plot", "--results-dir", str(tmp_path / "r")],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert all(len(line) <= 60 for line in lines if str(tmp_path) not in line)
    # The part stacked below still says which input, batch and concurrency each row is.
    [rss_header] = [i for i, line in enumerate(lines) if line.rstrip().endswith("RSS")]
    assert lines[rss_header + 1].split() == ["MB", "batch", "conc.", "MB"]
    assert [line.split()[:3] for line in lines[rss_header + 3:rss_header + 5]] == [["0.05", "50", "5"], ["0.05", "50", "25"]]
