"""The embedded server's OpenAI-compatible embeddings endpoint: its answers, its per-minute
limits enforced per second, its x-ratelimit-* headers in Go durations, its 429s."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from conftest import server_stats

from asyncbench.ratelimit import ApiLimits, ClientBudget, Quantized, format_go_duration, parse_go_duration, tokens_of


@pytest.mark.parametrize("seconds, text", [
    (0, "0s"), (0.012, "12ms"), (0.0015, "1.5ms"), (1, "1s"), (1.5, "1.5s"), (59.25, "59.25s"),
    (360, "6m0s"), (90.5, "1m30.5s"), (3600, "1h0m0s"), (3723.5, "1h2m3.5s"), (0.0000025, "2.5µs"),
    (0.000000001, "1ns"),
])
def test_go_durations_both_ways(seconds, text):
    assert format_go_duration(seconds) == text
    assert parse_go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "6m0", "abc", "1x", "s", "-1s", "1s2"])
def test_what_is_not_a_go_duration_is_refused(text):
    with pytest.raises(ValueError):
        parse_go_duration(text)


def test_the_token_rule():
    assert tokens_of("") == 1 and tokens_of("abcd") == 1 and tokens_of("abcde") == 2
    assert tokens_of("é" * 4) == 2  # UTF-8 bytes, not characters


def test_a_per_minute_limit_is_a_second_s_share_refilled_continuously():
    now = [0.0]
    bucket = Quantized(600, clock=lambda: now[0])  # 10 a second, at most 10 at once
    for _ in range(10):
        assert bucket.wait_for(1) == 0
        bucket.take(1)
    assert bucket.wait_for(1) == pytest.approx(0.1) and bucket.remaining() == 0
    now[0] = 0.35
    assert bucket.remaining() == 3 and bucket.reset_s() == pytest.approx(0.65)
    now[0] = 10.0
    assert bucket.remaining() == 10  # never more than one second's share
    bucket.take(25)  # a cost past the bucket goes through when it is full, into debt
    assert bucket.wait_for(1) == pytest.approx(1.6)


def test_both_limits_must_allow_a_request():
    now = [0.0]
    limits = ApiLimits(rpm=6000, tpm=600, clock=lambda: now[0])  # 100 requests, 10 tokens a second
    assert limits.admit(6) == 0
    assert limits.admit(6) == pytest.approx(0.2)  # 4 tokens left: 2 more come in 0.2 s
    headers = dict(limits.headers())
    assert headers["x-ratelimit-limit-requests"] == "6000" and headers["x-ratelimit-remaining-requests"] == "99"
    assert headers["x-ratelimit-remaining-tokens"] == "4" and headers["x-ratelimit-reset-tokens"] == "600ms"


def _post(url: str, payload: object) -> tuple[int, dict[str, str], dict]:
    request = urllib.request.Request(url + "/v1/embeddings", data=json.dumps(payload).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, json.loads(exc.read())


def test_the_limit_a_run_ran_at_is_the_budget_unless_the_server_s_is_lower():
    def budget(rpm: int, server_rpm: int | None) -> ClientBudget:
        b = ClientBudget(rpm=rpm, clock=lambda: 0.0)
        if server_rpm is not None:
            b.observe(200, {"x-ratelimit-limit-requests": str(server_rpm),
                            "x-ratelimit-remaining-requests": str(server_rpm // 60)})
        return b

    assert budget(3000, 3000).binding(2950, 0) == "budget"  # the same limit: the budget is the setting
    assert budget(3000, None).binding(2950, 0) == "budget"
    assert budget(3000, 1200).binding(1190, 0) == "server"
    assert budget(3000, 3000).binding(2000, 0) is None  # neither reached: something else held it back
    assert ClientBudget(tpm=60_000).binding(10, 59_000) == "budget"


def test_the_endpoint_answers_as_openai_does(start_server):
    url = start_server(latency=0.0, rpm=600, tpm=60_000)
    status, headers, body = _post(url, {"model": "text-embedding-3-small", "input": ["hello world", "abc"]})
    assert status == 200
    assert body["object"] == "list" and body["model"] == "text-embedding-3-small"
    assert [d["index"] for d in body["data"]] == [0, 1] and all(d["object"] == "embedding" for d in body["data"])
    assert len(body["data"][0]["embedding"]) == 16
    assert body["usage"] == {"prompt_tokens": 3 + 1, "total_tokens": 4}
    again = _post(url, {"model": "m", "input": "hello world"})[2]
    assert again["data"][0]["embedding"] == body["data"][0]["embedding"]  # the same text, the same vector
    assert headers["x-ratelimit-limit-requests"] == "600" and headers["x-ratelimit-limit-tokens"] == "60000"
    assert int(headers["x-ratelimit-remaining-requests"]) == 9 and int(headers["x-ratelimit-remaining-tokens"]) == 996
    assert parse_go_duration(headers["x-ratelimit-reset-requests"]) == pytest.approx(0.1, abs=0.02)
    assert server_stats(url)["embedded_inputs"] == 3 and server_stats(url)["tokens"] == 4 + 3


def test_past_a_limit_the_answer_is_429_with_retry_after(start_server):
    url = start_server(latency=0.0, rpm=120)  # 2 a second, at most 2 at once
    statuses = [_post(url, {"model": "m", "input": "x"})[0] for _ in range(2)]
    status, headers, body = _post(url, {"model": "m", "input": "x"})
    assert statuses == [200, 200] and status == 429
    assert body["error"]["code"] == "rate_limit_exceeded"
    assert headers["retry-after"] == "1" and 1 <= int(headers["retry-after-ms"]) <= 500
    assert headers["x-ratelimit-remaining-requests"] == "0"
    stats = server_stats(url)
    assert stats["rate_limited"] == 1 and stats["embedded_inputs"] == 2


@pytest.mark.parametrize("payload", [{"model": "m"}, {"model": "m", "input": []}, {"model": "m", "input": [1, 2]}])
def test_a_malformed_request_is_400_in_openai_s_shape(start_server, payload):
    url = start_server(latency=0.0)
    status, _, body = _post(url, payload)
    assert status == 400 and body["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("option", ["--rpm", "--tpm"])
def test_serve_refuses_a_negative_limit(option):
    from conftest import run_cli

    proc = run_cli("serve", "--port", "0", option, "-5", timeout=60)
    assert proc.returncode == 2 and f"invalid {option} -5" in proc.stderr and "Traceback" not in proc.stderr
