"""What a user sees in a real terminal: every command run in a pseudo-terminal, live display on."""

from __future__ import annotations

import json
import re
import signal

import pytest
from conftest import run_in_pty

HIDE_CURSOR = "\x1b[?25l"  # rich's live display hides the cursor while it runs

COMMANDS = {
    "trap": ["trap", "--levels", "1,5", "--cooldown", "0"],
    "semaphore": ["semaphore", "--limits", "2,4", "--requests", "12", "--cooldown", "0"],
    "pipeline": ["pipeline", "--generate-mb", "0.02", "--concurrency", "5,10", "--cooldown", "0"],
    "threads": ["threads", "--tasks", "2", "--sleep", "0.01"],
    "rate": ["rate", "--rates", "20,40", "--duration", "0.5", "--cooldown", "0"],
    "find": ["find", "--slo-p99", "1", "--max", "4", "--probe-duration", "0.2", "--cooldown", "0"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_experiment_runs_in_a_terminal(command, tmp_path):
    code, screen = run_in_pty(*COMMANDS[command], "--results-dir", str(tmp_path / "r"),
                              "--plots-dir", str(tmp_path / "p"))
    assert code == 0, screen
    assert "internal error" not in screen and "Traceback" not in screen
    if command != "threads":  # threads prints each phase as it ends instead of a progress bar
        assert HIDE_CURSOR in screen, "the live progress display did not run"
    [sidecar] = (tmp_path / "r").glob(f"{command}-*[0-9].json")
    assert json.loads(sidecar.read_text())["status"] == "complete"
    assert list((tmp_path / "p").glob("*.png"))


@pytest.mark.parametrize("scale", [["--processes", "2"], ["--cluster", "local:2"]])
def test_a_sharded_run_shows_its_progress_in_a_terminal(scale, tmp_path):
    code, screen = run_in_pty("semaphore", "--limits", "2,4", "--requests", "40", "--cooldown", "0", *scale,
                              "--results-dir", str(tmp_path / "r"), "--no-plot")
    assert code == 0, screen
    assert HIDE_CURSOR in screen and "Traceback" not in screen and "distributed." not in screen
    [sidecar] = (tmp_path / "r").glob("semaphore-*[0-9].json")
    assert json.loads(sidecar.read_text())["scale"]["workers"] == 2


@pytest.mark.parametrize("scale", [["--processes", "2"], ["--cluster", "local:2"]])
def test_ctrl_c_in_a_terminal_reaches_every_process_and_ends_in_one_message(scale, tmp_path):
    # A terminal's Ctrl-C goes to the whole process group: the workers too.
    code, screen = run_in_pty("semaphore", "--limits", "5,10", "--requests", "100000", "--cooldown", "0", *scale,
                              "--results-dir", str(tmp_path / "r"), "--no-plot", send_signal=("limit 5", signal.SIGINT),
                              to_group=True)
    assert code == 130, screen
    assert "asyncbench: interrupted" in screen
    assert "Traceback" not in screen and "Error" not in screen and "distributed." not in screen


def test_finished_levels_appear_as_rows_while_the_sweep_goes_on(tmp_path):
    code, out = run_in_pty("semaphore", "--limits", "5,10,20", "--requests", "200", "--cooldown", "0", "--no-plot",
                           "--results-dir", str(tmp_path / "r"), columns=80)
    assert code == 0, out
    text = re.sub(r"\x1b\[[0-9;]*m", "", out)
    final = text.index("semaphore: embedded server")
    # Drawn under the live display while limit 10 runs: limit 5's row, above the bar.
    live = re.search(r"limit +requests[^\n]*\n[─ ]+\n +5 +200 +100\.0 [^\n]*\n[^\n]*limit 10 ", text.replace("\r", ""))
    assert live is not None and live.start() < final, text[:3000]


def test_plot_runs_in_a_terminal(tmp_path):
    code, screen = run_in_pty(*COMMANDS["trap"], "--results-dir", str(tmp_path / "r"), "--no-plot")
    assert code == 0, screen
    code, screen = run_in_pty("plot", str(tmp_path / "r"), "--out", str(tmp_path / "p"))
    assert code == 0, screen
    assert "wrote" in screen and list((tmp_path / "p").glob("trap-*-throughput.png"))


@pytest.mark.parametrize("command", ["trap", "semaphore", "rate", "find", "pipeline", "threads", "plot", "report", "compare", "serve", None])
def test_help_shows_no_type_placeholders_and_unbroken_sentences(command):
    import os
    import subprocess
    import sys

    args = [command, "--help"] if command else ["--help"]
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    out = subprocess.run([sys.executable, "-m", "asyncbench", *args], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    for placeholder in ("<bool>", "<list", "{results_dir}", "{url}"):
        assert placeholder not in out.stdout, placeholder
    # At 200 columns every paragraph of a description fits on one line: no break from the source.
    lines = [line.strip(" │") for line in out.stdout.splitlines()]
    if command == "trap":
        assert "Throughput climbs with the level until the server is full; then it sheds requests and the " \
               "success rate collapses." in lines
    if command == "pipeline":
        assert "between levels" not in out.stdout
