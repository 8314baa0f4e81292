"""Hard cases: hostile input, outputs that cannot be written, signals at awkward moments."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import free_port, http_response, read_csv, result_files, run_cli, server_stats, wait_for_line


def _popen(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "COLUMNS": "100", "NO_COLOR": "1"}
    return subprocess.Popen([sys.executable, "-m", "asyncbench", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def _sidecars(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in folder.glob("*.json")]


# --- inputs that are not regular files, or not text ------------------------------------------


@pytest.mark.parametrize("args", [
    ["pipeline", "--input", "{fifo}"],
    ["pipeline", "--input", "/dev/zero"],
    ["trap", "-d", "@/dev/zero"],
    ["trap", "-d", "@{fifo}"],
])
def test_inputs_that_are_not_regular_files_are_refused_without_reading_them(args, tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    args = [a.replace("{fifo}", str(fifo)) for a in args]
    out = run_cli(*args, "--results-dir", str(tmp_path / "r"), timeout=60)
    assert out.returncode == 2, out.stderr
    assert "not a regular file" in out.stderr
    assert not (tmp_path / "r").exists()  # refused before anything ran


def test_a_request_body_file_is_capped(tmp_path):
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        f.truncate(65 * 1024 * 1024)  # sparse: no disk used
    out = run_cli("trap", "-d", f"@{big}", "--results-dir", str(tmp_path / "r"))
    assert out.returncode == 2
    assert "65.0 MiB, more than the 64 MiB allowed" in out.stderr


@pytest.mark.parametrize("target", ["/dev/full", "/dev/null", "{fifo}"])
def test_a_report_onto_a_device_or_a_fifo_is_refused_and_leaves_it_as_it_was(target, tmp_path):
    results = tmp_path / "r"
    assert run_cli("trap", "--levels", "1", "--cooldown", "0", "--no-plot", "--results-dir", str(results)).returncode == 0
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    target = target.replace("{fifo}", str(fifo))
    before = os.stat(target)
    out = run_cli("report", str(results), "-o", target, timeout=60)
    assert out.returncode == 1 and "not a regular file" in out.stderr, out.stderr
    after = os.stat(target)
    assert (after.st_mode, after.st_rdev, after.st_ino) == (before.st_mode, before.st_rdev, before.st_ino)
    out = run_cli("pipeline", "--generate-mb", "0.01", "--output", target, "--results-dir", str(tmp_path / "p"),
                  timeout=60)
    assert out.returncode == 1 and "not a regular file" in out.stderr


def test_a_report_through_a_symlink_writes_the_file_it_names(tmp_path):
    results = tmp_path / "r"
    assert run_cli("trap", "--levels", "1", "--cooldown", "0", "--no-plot", "--results-dir", str(results)).returncode == 0
    real = tmp_path / "real.html"
    real.write_text("old")
    link = tmp_path / "link.html"
    link.symlink_to(real)
    out = run_cli("report", str(results), "-o", str(link))
    assert out.returncode == 0, out.stderr
    assert link.is_symlink() and "<!DOCTYPE html>" in real.read_text()


def test_a_run_in_which_every_request_failed_gets_its_report(start_server, tmp_path):
    url = start_server(latency=0.0)
    out = run_cli("trap", url + "/status/500", "--levels", "1,3", "--cooldown", "0", "--report", "--no-plot",
                  "--results-dir", str(tmp_path / "r"))
    assert out.returncode == 0, out.stderr
    [page] = (tmp_path / "r").glob("trap-*.html")
    assert "every request failed: 4 × HTTP 500" in page.read_text()
    out = run_cli("report", str(tmp_path / "r"), "-o", str(tmp_path / "again.html"))
    assert out.returncode == 0 and "internal error" not in out.stderr, out.stderr


def test_secrets_are_masked_wherever_they_would_show(raw_server, tmp_path):
    key = "k3y-7f9a-SECRET"

    def echo(n, head, sock) -> bool:  # a 401 that quotes the request's headers back
        sock.sendall(http_response(401, b"unauthorized: " + head))
        return True

    server = raw_server(echo)
    out = run_cli("trap", server.url, "--levels", "1", "--cooldown", "0", "-H", f"X-Api-Key: {key}",
                  "--results-dir", str(tmp_path / "r"), "--report", "--no-plot")
    assert out.returncode == 0, out.stderr
    assert "unauthorized" in out.stderr  # the warning quotes the body...
    assert key not in out.stdout + out.stderr  # ...without the key it echoed
    for path in (tmp_path / "r").iterdir():
        assert key not in path.read_text(errors="replace"), path
    for args in (["trap", "http://bob:S3CRET-pw@[::1:zz]/"], ["trap", "bob:S3CRET-pw@host:8080"],
                 ["trap", "http://bob:S3CRET-pw@[::1/"], ["trap", "--cluster", "tcp://bob:S3CRET-pw@127.0.0.1:1"]):
        out = run_cli(*args, "--results-dir", str(tmp_path / "x"))
        assert out.returncode == 2, out.stderr
        assert "S3CRET-pw" not in out.stdout + out.stderr and "internal error" not in out.stderr


def test_bad_values_are_echoed_as_typed(tmp_path):
    out = run_cli("trap", "--processes", "1000000")
    assert out.returncode == 2 and "invalid --processes 1000000: expected 1 to 256" in out.stderr
    out = run_cli("rate", "--duration", "0")
    assert out.returncode == 2 and "invalid --duration 0: expected more than 0, at most 3600" in out.stderr
    out = run_cli("trap", "localhost:8080")
    assert out.returncode == 2 and "did you mean 'http://localhost:8080'?" in out.stderr
    out = run_cli("trap", f"http://127.0.0.1:{free_port()}/", "--results-dir", str(tmp_path / "r"))
    assert out.returncode == 1 and "is unreachable" in out.stderr and "ssl:" not in out.stderr
    out = run_cli("trap", "--help")
    assert "asyncbench[cluster]" in " ".join(out.stdout.split())


def test_the_open_file_limit_fails_requests_not_the_run(tmp_path):
    # 256 files: the fast engine keeps 64 for asyncbench's own; level 1,000 is short of the rest.
    out = subprocess.run(["bash", "-c", f"ulimit -n 256 && {sys.executable} -m asyncbench trap --levels 10,1000 "
                          f"--cooldown 0 --results-dir {tmp_path / 'r'} --plots-dir {tmp_path / 'p'}"],
                         capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "100"})
    assert out.returncode == 0, out.stderr
    rows = {int(r["level"]): r for r in read_csv(result_files(tmp_path / "r", "trap")[0])}
    assert rows[10]["success_rate"] == "1"
    assert int(rows[1000]["out_of_files"]) > 0 and rows[1000]["client_limited"] == "true"
    flat = " ".join(out.stdout.split())
    assert "this process ran out of open files" in flat and "the trap springs" not in flat
    assert json.loads(result_files(tmp_path / "r", "trap")[1].read_text())["status"] == "complete"
    assert list((tmp_path / "p").glob("*.png"))
    out = subprocess.run(["bash", "-c", f"ulimit -n 256 && {sys.executable} -m asyncbench threads --tasks 2 --sleep 0.01 "
                          f"--impact 400 --no-plot --results-dir {tmp_path / 't'}"],
                         capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "100"})
    assert out.returncode == 0, out.stderr
    flat = " ".join(out.stdout.split())
    assert "this machine, not the target, failed some" in flat and "ulimit -n" in flat


def test_a_results_csv_that_links_to_a_device_is_skipped_not_read(tmp_path):
    results = tmp_path / "r"
    out = run_cli("trap", "--levels", "1", "--cooldown", "0", "--no-plot", "--results-dir", str(results))
    assert out.returncode == 0, out.stderr
    (results / "trap-20990101-000000.csv").symlink_to("/dev/zero")
    out = run_cli("plot", str(results), "--out", str(tmp_path / "p"), timeout=60)
    assert out.returncode == 0, out.stderr
    assert "trap-20990101-000000.csv: not a readable CSV (not a regular file" in out.stderr


def test_an_argument_that_is_not_utf8_is_bad_input(tmp_path):
    env = {**os.environ, "COLUMNS": "100"}
    out = subprocess.run([sys.executable, "-m", "asyncbench", "trap", "-d", b"\xff\xfe"],
                         capture_output=True, env=env, cwd=tmp_path)
    assert out.returncode == 2
    assert b"invalid argument '\\xff\\xfe': not valid UTF-8" in out.stderr
    assert b"internal error" not in out.stderr


@pytest.mark.parametrize(("host", "canonical"), [
    ("127.1", "127.0.0.1"), ("2130706433", "127.0.0.1"), ("0x7f.0.0.1", "127.0.0.1"),
])
def test_shorthand_ipv4_addresses_are_refused_naming_the_canonical_form(host, canonical, tmp_path):
    out = run_cli("trap", f"http://{host}:1/", "--levels", "1", "--results-dir", str(tmp_path / "r"))
    assert out.returncode == 2
    assert f"write it as {canonical}" in out.stderr


# --- outputs that cannot be written ------------------------------------------------------------


def test_pipeline_output_on_a_directory_exits_1_before_running(tmp_path):
    out = run_cli("pipeline", "--output", str(tmp_path), "--results-dir", str(tmp_path / "r"))
    assert out.returncode == 1
    assert "it is a directory" in out.stderr and "internal error" not in out.stderr
    assert not (tmp_path / "r").exists()


@pytest.fixture
def small_disk(tmp_path):
    """A folder on a filesystem of 160 KiB (a tmpfs mounted for the test): a disk that fills."""
    folder = tmp_path / "small"
    folder.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a small filesystem needs root to mount a tmpfs (CI runs as root)")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160k", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_full_disk_marks_the_sidecar_failed_and_leaves_no_half_line(small_disk):
    out = run_cli("pipeline", "--generate-mb", "1", "--no-plot", "--results-dir", str(small_disk))
    assert out.returncode == 1, out.stderr
    assert "No space left on device" in out.stderr and "internal error" not in out.stderr
    [meta] = _sidecars(small_disk)
    assert meta["status"] == "failed" and "No space left" in meta["reason"]
    [jsonl] = small_disk.glob("*.jsonl")
    text = jsonl.read_text()
    assert text.endswith("\n") and [json.loads(line) for line in text.splitlines()]  # every line whole
    assert not [p for p in small_disk.iterdir() if p.name.endswith((".tmp", ".reserve"))]


def test_results_on_a_full_disk_exit_1_and_leave_no_empty_files(tmp_path):
    results = tmp_path / "r"
    out = run_cli("trap", "--levels", "1", "--results-dir", str(results), max_file_bytes=100)
    assert out.returncode == 1, out.stderr
    assert "File too large" in out.stderr and "internal error" not in out.stderr
    assert list(results.iterdir()) == []


def test_a_run_that_fails_midway_says_failed_with_the_reason_and_keeps_its_levels(tmp_path):
    # The latency file (≈2 kB a level) outgrows the cap at level 2; the sidecar still fits.
    results = tmp_path / "r"
    out = run_cli("trap", "--levels", "1,2,3", "--cooldown", "0", "--no-plot", "--results-dir", str(results),
                  max_file_bytes=3000)
    assert out.returncode == 1, out.stderr
    assert "-latency.csv: File too large" in out.stderr
    csv_path, json_path, _ = result_files(results, "trap")
    meta = json.loads(json_path.read_text())
    assert meta["status"] == "failed"
    assert "File too large" in meta["reason"]
    assert meta["levels_completed"] == 1
    assert [r["level"] for r in read_csv(csv_path)][:1] == ["1"]
    assert not list(results.glob("*.tmp"))


def test_plot_names_a_run_that_failed_before_any_level(tmp_path):
    results = tmp_path / "r"
    results.mkdir()
    (results / "trap-20260101-000000.csv").write_text("experiment,level,requests\n")
    (results / "trap-20260101-000000.json").write_text(json.dumps(
        {"experiment": "trap", "status": "failed", "reason": "cannot write x: No space left on device"}))
    out = run_cli("plot", str(results), "--out", str(tmp_path / "p"))
    assert out.returncode == 1
    assert "the run failed before any level finished: cannot write x: No space left on device" in out.stderr


# --- signals ------------------------------------------------------------------------------------


@pytest.mark.parametrize("attempt", range(int(os.environ.get("ATTEMPTS", 3))))
def test_two_sigints_a_millisecond_apart_keep_the_sidecar_whole(attempt, start_server, tmp_path):
    url = start_server(latency=0.05, capacity=1000, queue=0)
    results = tmp_path / "r"
    proc = _popen("trap", url, "--levels", "1,2,3,4", "--requests-per-level", "40", "--cooldown", "0",
                  "--no-plot", "--results-dir", str(results))
    try:
        wait_for_line(proc.stderr, "level 1 done", proc)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.001)  # the scenario itself: a double Ctrl-C
        proc.send_signal(signal.SIGINT)
        err = proc.stderr.read()
        assert proc.wait(timeout=60) == 130
    finally:
        proc.kill()
        proc.wait()
    assert "interrupted" in err
    assert not list(results.glob("*.tmp"))
    [meta] = _sidecars(results)
    assert meta["status"] == "interrupted", err
    assert meta["levels_completed"] >= 1


class _SilentServer:
    """Accepts connections and never answers: a pre-flight request to it hangs, and the moment
    it is accepted is a sync point."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/"
        self.accepted = threading.Event()
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        self.conns.append(conn)
        self.accepted.set()

    def close(self) -> None:
        for c in self.conns:
            c.close()
        self.sock.close()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_before_the_measurement_starts_exits_130_with_a_message(signum, tmp_path):
    server = _SilentServer()
    try:
        proc = _popen("trap", server.url, "--levels", "1", "--timeout", "30", "--results-dir", str(tmp_path / "r"))
        assert server.accepted.wait(60), "asyncbench never sent its pre-flight request"
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
    finally:
        server.close()
    assert proc.returncode == 130
    assert "asyncbench: interrupted" in err


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.parametrize("report", [[], ["--report"]], ids=["charts", "charts-and-report"])
def test_a_signal_while_charts_render_exits_130_with_a_message(signum, report, tmp_path):
    proc = _popen("trap", "--levels", "1,2", "--cooldown", "0", "--results-dir", str(tmp_path / "r"),
                  "--plots-dir", str(tmp_path / "p"), *report)
    wait_for_line(proc.stdout, "results:", proc)  # printed just before the charts are drawn
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "asyncbench: interrupted" in err
    assert "Exception ignored" not in err and "Traceback" not in err
    [meta] = _sidecars(tmp_path / "r")
    assert meta["status"] == "complete"  # the measurement had finished: it stays complete


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_the_program_starts_exits_130_with_a_message(signum, tmp_path):
    # -X importtime says each module as it is imported: once click's appears, the command line's
    # modules are loading — the window in which a Ctrl-C used to print a traceback.
    env = {**os.environ, "COLUMNS": "100"}
    proc = subprocess.Popen([sys.executable, "-X", "importtime", "-m", "asyncbench", "trap", "--results-dir",
                             str(tmp_path / "r")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    wait_for_line(proc.stderr, "click", proc)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "asyncbench: interrupted" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_ctrl_c_interrupts_the_blocking_phase_of_threads_at_once(tmp_path):
    # 1,000 tasks × 10 s of time.sleep on the loop would block for hours.
    results = tmp_path / "r"
    proc = _popen("threads", "--tasks", "1000", "--sleep", "10", "--no-plot", "--results-dir", str(results))
    try:
        wait_for_line(proc.stdout, "phase: concurrent", proc)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 130
    assert "interrupted" in err
    assert "Traceback" not in err and "never retrieved" not in err
    [meta] = _sidecars(results)
    assert meta["status"] == "interrupted"


# --- targets that misbehave ----------------------------------------------------------------------

MB = 1024 * 1024


def _semaphore(url: str, tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict[str, str]]:
    """`semaphore URL ARGS` run to completion: its output and its one CSV row."""
    results = tmp_path / "r"
    out = run_cli("semaphore", url, *args, "--no-plot", "--results-dir", str(results))
    assert out.returncode == 0, out.stderr
    [row] = read_csv(result_files(results, "semaphore")[0])
    return out, row


def test_huge_bodies_are_counted_and_discarded_in_bounded_memory(raw_server, tmp_path):
    chunk = bytes(MB)

    def respond(n: int, head: bytes, sock) -> bool:
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (100 * MB))
        for _ in range(100):
            sock.sendall(chunk)
        return True

    _, row = _semaphore(raw_server(respond).url, tmp_path, "--limits", "8", "--requests", "16")
    assert float(row["success_rate"]) == 1.0
    assert int(row["body_bytes"]) == 16 * 100 * MB
    assert float(row["peak_rss_mb"]) < 250  # 8 bodies of 100 MB in flight at once


def test_a_compressed_body_is_not_inflated_by_the_load_engine(raw_server, tmp_path):
    import gzip

    bomb = gzip.compress(bytes(512 * MB), compresslevel=9)

    def respond(n: int, head: bytes, sock) -> bool:
        sock.sendall(http_response(200, bomb, {"Content-Encoding": "gzip"}))
        return True

    _, row = _semaphore(raw_server(respond).url, tmp_path, "--limits", "4", "--requests", "8")
    assert int(row["body_bytes"]) == 8 * len(bomb)  # counted as it came on the wire
    assert float(row["peak_rss_mb"]) < 250


def test_the_library_client_caps_the_bodies_it_keeps(raw_server):
    import asyncio

    from asyncbench.client import AsyncHttpClient

    server = raw_server(lambda n, head, sock: sock.sendall(http_response(200, bytes(3 * MB))) or True)

    async def fetch():
        async with AsyncHttpClient(max_body_bytes=MB) as client:
            return await client.fetch(server.url)

    capped = asyncio.run(fetch())
    assert not capped.ok and capped.error == "other"
    assert "larger than 1,048,576 bytes" in capped.detail


@pytest.mark.parametrize("retries", [0, 3])
def test_every_attempt_on_the_wire_is_counted_when_the_server_drops_connections(retries, raw_server, tmp_path):
    def respond(n: int, head: bytes, sock) -> bool:
        if n == 0:  # the pre-flight request is answered; then every request is dropped unanswered
            sock.sendall(http_response(200))
            return True
        return False

    server = raw_server(respond)
    _, row = _semaphore(server.url, tmp_path, "--limits", "5", "--requests", "100", "--retries", str(retries))
    assert int(row["successes"]) == 0
    assert int(row["attempts"]) == 100 * (1 + retries)
    assert server.requests == int(row["attempts"]) + 1  # + the pre-flight: nothing sent unseen


def test_a_retry_after_longer_than_the_timeout_is_not_waited_for(raw_server, tmp_path):
    server = raw_server(lambda n, head, sock: sock.sendall(
        http_response(503, b"busy\n", {"Retry-After": "99999"})) or True)
    out, row = _semaphore(server.url, tmp_path, "--limits", "5", "--requests", "20", "--timeout", "1",
                          "--retries", "1")
    assert float(row["latency_max_s"]) < 1.0  # the whole request stays within --timeout
    assert int(row["retry_after_refused"]) == 20
    assert int(row["attempts"]) == 20
    assert "asked to be retried after longer than the time left of --timeout" in " ".join(out.stdout.split())


def test_every_request_failing_is_explained_before_and_after_the_sweep(start_server, tmp_path):
    url = start_server(latency=0.0)
    out = run_cli("trap", url + "/embed", "-X", "POST", "-d", "not json", "--levels", "1,5", "--cooldown", "0",
                  "--no-plot", "--results-dir", str(tmp_path / "r"))
    assert out.returncode == 0, out.stderr
    assert "pre-flight POST" in out.stderr and "HTTP 400" in out.stderr
    assert "every request of the run will likely fail the same way" in " ".join(out.stderr.split())
    assert "malformed request" in out.stderr  # what the target said
    assert "every request failed: 6 × HTTP 400" in out.stdout
    row = read_csv(result_files(tmp_path / "r", "trap")[0])[-1]
    assert row["error_statuses"] == "400:5"


def test_a_target_that_dies_between_levels_fails_the_run_and_answers_nothing_from_it(tmp_path):
    from asyncbench.server import EmbeddedServer, ServerConfig

    server = EmbeddedServer(ServerConfig(latency=0.0, capacity=1000, queue=1000))
    url = server.start()
    results = tmp_path / "r"
    try:
        proc = _popen("trap", url, "--levels", "1,200,400", "--cooldown", "0.5", "--no-plot",
                      "--results-dir", str(results))
        wait_for_line(proc.stderr, "level 1 done", proc)
        server.stop()  # during the cooldown after level 1
        out, err = proc.communicate(timeout=120)
    finally:
        server.stop()
    assert proc.returncode == 1, err
    assert "error: the target went away during level 200" in err and "Traceback" not in err
    rows = {int(r["level"]): r for r in read_csv(result_files(results, "trap")[0])}
    assert sorted(rows) == [1, 200]  # no more load sent to nothing
    assert int(rows[200]["errors_connect"]) == 200 and rows[200]["client_limited"] == "false"
    flat = " ".join(out.split())
    assert "the target went away during level 200" in flat
    assert "the client was the limit" not in flat and "the trap springs" not in flat
    meta = json.loads(result_files(results, "trap")[1].read_text())
    assert meta["status"] == "failed" and meta["target_gone"] == {"step": "level 200", "level": 200}
    assert meta["sweet_spot"]["level"] == 1


def test_a_target_killed_mid_level_keeps_what_it_answered_and_exits_1(tmp_path):
    from asyncbench.server import EmbeddedServer, ServerConfig

    server = EmbeddedServer(ServerConfig(latency=0.05, capacity=1000, queue=1000))
    url = server.start()
    results = tmp_path / "r"
    try:
        proc = _popen("semaphore", url, "--limits", "10,20,50", "--requests", "300", "--cooldown", "0",
                      "--no-plot", "--results-dir", str(results))
        wait_for_line(proc.stderr, "limit 10 done", proc)
        deadline = time.monotonic() + 60
        while server_stats(url)["received"] < 1 + 300 + 60 and time.monotonic() < deadline:
            time.sleep(0.01)
        server.stop()  # in the middle of limit 20: 300 requests of 50 ms, 20 at a time, take 0.75 s
        out, err = proc.communicate(timeout=120)
    finally:
        server.stop()
    assert proc.returncode == 1, err
    rows = read_csv(result_files(results, "semaphore")[0])
    meta = json.loads(result_files(results, "semaphore")[1].read_text())
    gone = meta["target_gone"]["level"]
    assert int(rows[-1]["level"]) == gone and int(rows[-1]["errors_connect"]) > 0
    assert int(rows[0]["level"]) == 10 and rows[0]["success_rate"] == "1"  # what it answered is kept
    assert meta["sweet_spot"]["level"] != gone
    assert f"the target went away during limit {gone}" in " ".join(out.split())


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_after_the_work_is_done_still_exits_130_not_by_dying_of_it(signum):
    # The window between the last chart and the interpreter's exit: Python would die of SIGINT
    # there (exit -2) if the signal became a KeyboardInterrupt.
    code = ("import os, signal, time\nfrom asyncbench import signals\nsignals.install()\nsignals.command_done()\n"
            f"os.kill(os.getpid(), {int(signum)})\ntime.sleep(30)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 130
    assert proc.stderr == "asyncbench: interrupted\n"
