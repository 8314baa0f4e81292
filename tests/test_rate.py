"""`asyncbench rate`, the open model: sends on a schedule whatever the server does, latency from
the schedule, drops counted — against the embedded server, with both engines."""

from __future__ import annotations

import json

import pytest
from conftest import read_csv, result_files, run_cli, server_stats

from asyncbench.engines import ENGINES

RATE_COLUMNS = ("offered_rps", "achieved_rps", "dropped", "send_lag_p99_s", "latency_p999_s", "service_p50_s",
                "service_p99_s", "in_flight_max")


@pytest.mark.parametrize("engine", ENGINES)
def test_every_scheduled_request_is_sent_and_counted_by_the_server(engine, start_server, tmp_path):
    url = start_server(latency=0.01, capacity=1000, queue=0)
    out = run_cli("rate", url, "--rates", "50,200", "--duration", "1", "--cooldown", "0", "--engine", engine,
                  "--results-dir", str(tmp_path / "r"), "--plots-dir", str(tmp_path / "p"))
    assert out.returncode == 0, out.stderr
    csv_path, json_path, latency_path = result_files(tmp_path / "r", "rate")
    rows = {int(r["level"]): r for r in read_csv(csv_path)}
    assert set(rows) == {50, 200}
    for rate, row in rows.items():
        assert all(c in row for c in RATE_COLUMNS)
        assert int(row["requests"]) == rate and int(row["successes"]) == rate  # rate × duration, each once
        assert int(row["dropped"]) == 0 and float(row["offered_rps"]) == rate
        # Latency runs from the schedule, service from the send: never shorter than the service.
        assert float(row["latency_p50_s"]) >= float(row["service_p50_s"]) >= 0.01
    assert server_stats(url)["received"] == 50 + 200 + 1  # + the pre-flight
    meta = json.loads(json_path.read_text())
    assert meta["experiment"] == "rate" and meta["engine"] == engine and meta["rates_completed"] == 2
    # The highest rate that met the floor with the client keeping the schedule: 200/s, unless a
    # shared machine stalled the client during its one second (the row says so; then 50/s).
    best = 50 if rows[200]["client_limited"] == "true" else 200
    assert meta["sweet_spot"]["level"] == best
    assert latency_path.exists()
    charts = {p.name.split("-")[-1] for p in (tmp_path / "p").glob("rate-*.png")}
    assert {"latency.png", "achieved.png", "distribution.png"} <= charts
    assert f"sweet spot: rate {best}/s" in " ".join(out.stdout.split())


def test_a_stall_shows_in_the_open_model_and_hides_in_a_closed_loop(start_server, tmp_path):
    # The server freezes for half a second after its 1,000th request, in the middle of each run.
    settings = {"latency": 0.001, "capacity": 1000, "queue": 0, "stall_after": 1000, "stall": 0.5}
    open_url = start_server(**settings)
    out = run_cli("rate", open_url, "--rates", "1000", "--duration", "3", "--no-plot",
                  "--results-dir", str(tmp_path / "open"))
    assert out.returncode == 0, out.stderr
    [opened] = read_csv(result_files(tmp_path / "open", "rate")[0])
    closed_url = start_server(**settings)
    out = run_cli("semaphore", closed_url, "--limits", "10", "--requests", "3000", "--no-plot",
                  "--results-dir", str(tmp_path / "closed"))
    assert out.returncode == 0, out.stderr
    [closed] = read_csv(result_files(tmp_path / "closed", "semaphore")[0])
    # Open: the ~500 requests due during the stall waited for it, the p99 among them.
    assert float(opened["latency_p99_s"]) > 0.25, opened
    assert int(opened["requests"]) == 3000 and int(opened["dropped"]) == 0
    # Closed: the 10 workers stopped sending during the stall: 10 slow samples in 3,000.
    assert float(closed["latency_p99_s"]) < 0.1, closed
    assert float(closed["latency_max_s"]) > 0.4  # the stall happened there too


def test_max_in_flight_drops_are_counted_never_silent(start_server, tmp_path):
    url = start_server(latency=0.5, capacity=1000, queue=0)
    out = run_cli("rate", url, "--rates", "100", "--duration", "1", "--max-in-flight", "10", "--no-plot",
                  "--results-dir", str(tmp_path / "r"))
    assert out.returncode == 0, out.stderr
    [row] = read_csv(result_files(tmp_path / "r", "rate")[0])
    sent, dropped = int(row["requests"]), int(row["dropped"])
    assert sent + dropped == 100 and dropped >= 50
    assert int(row["in_flight_max"]) == 10
    assert server_stats(url)["received"] == sent + 1
    said = " ".join(out.stdout.split())  # the console wraps at its width
    assert f"{dropped} requests were due while --max-in-flight requests were out, and were not sent" in said
    assert "no sweet spot" in said


def test_poisson_arrivals_send_the_same_count(start_server, tmp_path):
    url = start_server(latency=0.0, capacity=1000, queue=0)
    out = run_cli("rate", url, "--rates", "300", "--duration", "1", "--arrivals", "poisson", "--seed", "3",
                  "--no-plot", "--results-dir", str(tmp_path / "r"))
    assert out.returncode == 0, out.stderr
    [row] = read_csv(result_files(tmp_path / "r", "rate")[0])
    assert int(row["requests"]) == 300


@pytest.mark.parametrize(("args", "named"), [
    (["--arrivals", "uniform"], "'uniform'"),
    (["--rates", "0"], "0"),
    (["--duration", "-1"], "-1"),
    (["--max-in-flight", "0"], "0"),
    (["--slo-p99", "0"], "0"),
])
def test_bad_rate_input_is_named_with_exit_2(args, named, tmp_path):
    out = run_cli("rate", *args, "--results-dir", str(tmp_path / "r"))
    assert out.returncode == 2 and named in out.stderr and "Traceback" not in out.stderr


def test_a_rate_the_client_could_not_keep_is_never_the_answer_and_is_said_as_it_was():
    from asyncbench.metrics import LevelRecorder, RoundFacts
    from asyncbench.rates import RateRecorder, rate_sweet_spot, rate_warnings, summarize_rate

    def row(rate: float, late_s: float, sent_share: float = 1.0):
        rec = RateRecorder()
        n = int(rate * sent_share)
        for i in range(n):
            due = i / rate
            rec.scheduled(due, due + late_s, due + late_s + 0.01, 2)
        return summarize_rate(rate, 1.0, rec, RoundFacts(10.0, 90.0, 0.0))

    kept, clumped, short = row(100, 0.0), row(200, 0.015), row(400, 0.015, sent_share=0.5)
    assert not kept.client_limited and clumped.client_limited and short.client_limited
    assert rate_sweet_spot([kept, clumped, short], 0.99, None).level == 100  # never a rate it could not offer
    [said] = rate_warnings(clumped)
    assert "sent 198/s on average, but in clumps" in said and "lower than asked" not in said
    [said] = rate_warnings(short)
    assert "it sent 200/s, so the rate offered was lower than asked" in said
    assert LevelRecorder  # the closed loop's recorder is the base of the open one's


def test_a_short_probe_of_a_few_requests_is_not_judged_by_one_hiccup():
    from asyncbench.metrics import RoundFacts
    from asyncbench.rates import RateRecorder, summarize_rate

    rec = RateRecorder()
    for i in range(4):  # four sends, one of them 15 ms late: a shared machine's hiccup
        rec.scheduled(i * 0.25, i * 0.25 + (0.015 if i == 2 else 0.0), i * 0.25 + 0.03, 2)
    row = summarize_rate(4, 1.0, rec, RoundFacts(10.0, 5.0, 0.0))
    assert not row.client_limited
    assert row.goodput_rps == pytest.approx(4.0)  # over the schedule, not over one answer's time
