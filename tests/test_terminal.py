"""What a user sees in a real terminal: every command run in a pseudo-terminal, live display on."""

from __future__ import annotations

import json

import pytest
from conftest import run_in_pty

HIDE_CURSOR = "\x1b[?25l"  # rich's live display hides the cursor while it runs

COMMANDS = {
    "trap": ["trap", "--levels", "1,5", "--cooldown", "0"],
    "semaphore": ["semaphore", "--limits", "2,4", "--requests", "12", "--cooldown", "0"],
    "pipeline": ["pipeline", "--generate-mb", "0.02", "--cooldown", "0"],
    "threads": ["threads", "--tasks", "2", "--sleep", "0.01"],
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


def test_plot_runs_in_a_terminal(tmp_path):
    code, screen = run_in_pty(*COMMANDS["trap"], "--results-dir", str(tmp_path / "r"), "--no-plot")
    assert code == 0, screen
    code, screen = run_in_pty("plot", str(tmp_path / "r"), "--out", str(tmp_path / "p"))
    assert code == 0, screen
    assert "wrote" in screen and list((tmp_path / "p").glob("trap-*-throughput.png"))
