"""`asyncbench report`: one self-contained HTML page, checked as text and in a real headless
browser (Debian's chromium) with no network."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli

SECRET = "Bearer s3cr3t-t0ken"
BLANK_PNG = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8/5+hHgAHggJ/PchI7wAAAABJRU5ErkJggg==")


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    """A folder with a trap and a semaphore run (the lab's pair) and a threshold that failed."""
    folder = tmp_path_factory.mktemp("report") / "results"
    trap = run_cli("trap", "--levels", "1,5,10,20", "--cooldown", "0", "--no-plot", "--results-dir", str(folder),
                   "-H", f"Authorization: {SECRET}")
    assert trap.returncode == 0, trap.stderr
    sem = run_cli("semaphore", "--limits", "2,5,10,20", "--requests", "20", "--cooldown", "0", "--no-plot",
                  "--results-dir", str(folder), "--fail-if", "latency_p50_s<1", "-H", f"Authorization: {SECRET}")
    assert sem.returncode == 3, sem.stderr
    return folder


@pytest.fixture(scope="module")
def page(results, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("page") / "report.html"
    proc = run_cli("report", str(results), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert str(out) in proc.stdout
    return out


def test_the_page_holds_everything_itself_and_no_secret(page):
    text = page.read_text(encoding="utf-8")
    # Nothing to fetch: every src is a data URI, every href an anchor of the page; no script.
    assert re.findall(r"<img [^>]*src='data:image/png;base64,", text)
    assert not [s for s in re.findall(r"\b(?:src|href)=['\"]?([^'\" >]+)", text) if not s.startswith(("data:", "#"))]
    assert "<script" not in text and "<link" not in text and "@import" not in text
    assert SECRET not in text and "s3cr3t" not in text and "Authorization: &lt;redacted&gt;" in text


def _chromium() -> str:
    binary = shutil.which("chromium") or shutil.which("chromium-headless-shell")
    if binary is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return binary


def _browse(page: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # The unusable proxy makes every network request fail: the page must need none.
    return subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--proxy-server=127.0.0.1:9", "--no-first-run", *args, page.as_uri()],
                          capture_output=True, text=True, timeout=120)


def test_the_browser_shows_the_tables_and_the_verdicts(page):
    proc = _browse(page, "--dump-dom")
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = proc.stdout
    assert "The trap against the semaphore" in dom
    assert dom.count("<table>") >= 3  # the comparison, the trap's levels, the semaphore's limits
    assert re.search(r"<tr class=\"good\"><td[^>]*>★ \d+</td>", dom), "the sweet spot row is marked"
    assert "sweet spot: concurrency" in dom and "sweet spot: limit" in dom
    assert "--fail-if latency_p50_s&lt;1</code> failed" in dom


def _screenshot(page: Path, out: Path) -> np.ndarray:
    import matplotlib.image

    proc = _browse(page, "--window-size=1280,5000", f"--screenshot={out}")
    assert proc.returncode == 0 and out.exists(), proc.stderr[-2000:]
    return matplotlib.image.imread(out)[..., :3]


def test_the_screenshot_shows_the_charts(page, tmp_path):
    shown = _screenshot(page, tmp_path / "page.png")
    # The same page with every chart replaced by a blank image: what differs is the charts.
    blank = tmp_path / "blank.html"
    blank.write_text(re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", f"data:image/png;base64,{BLANK_PNG}",
                            page.read_text(encoding="utf-8")), encoding="utf-8")
    without = _screenshot(blank, tmp_path / "blank.png")
    ink = (shown < 0.9).any(axis=2)
    assert ink.mean() > 0.02, "the page looks blank"
    differs = (np.abs(shown - without) > 0.1).any(axis=2).mean()
    assert differs > 0.02, f"the charts are not drawn ({differs:.1%} of the page differs without them)"


def test_the_page_prints(page, tmp_path):
    pdf = tmp_path / "report.pdf"
    proc = _browse(page, "--no-pdf-header-footer", f"--print-to-pdf={pdf}")
    assert proc.returncode == 0 and pdf.exists(), proc.stderr[-2000:]
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF") and len(re.findall(rb"/Type\s*/Page\b", data)) >= 2


def test_an_experiment_writes_its_own_report_with_report(tmp_path):
    proc = run_cli("threads", "--tasks", "2", "--sleep", "0.01", "--no-plot", "--report",
                   "--results-dir", str(tmp_path / "r"))
    assert proc.returncode == 0, proc.stderr
    [html] = (tmp_path / "r").glob("threads-*.html")
    text = html.read_text(encoding="utf-8")
    assert "asyncbench report" in text and "blocking" in text and "data:image/png;base64," in text
    assert f"report:  {html}" in proc.stdout


def test_report_refuses_a_folder_without_results_and_an_unwritable_output(tmp_path):
    (tmp_path / "empty").mkdir()
    proc = run_cli("report", str(tmp_path / "empty"), "-o", str(tmp_path / "r.html"))
    assert proc.returncode == 1 and "no asyncbench results to report" in proc.stderr
    proc = run_cli("report", str(tmp_path / "empty"), "-o", str(tmp_path))
    assert proc.returncode == 1 and "it is a directory" in proc.stderr
    assert "Traceback" not in proc.stderr
