"""Real targets, tested without leaving the machine: TLS verified by default (each failure named),
client certificates, session resumption, where the time goes, --resolve and --connect-to on
loopback; and inside a private network namespace — where documentation addresses sit on its own
`lo` and nothing can leave — the remote opt-in, DNS through its /etc/hosts, round-robin over two
addresses and a TLS server named api.example.test."""

from __future__ import annotations

import csv
import datetime
import io
import json
import os
import shutil
import ssl
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import trustme
from conftest import http_response, read_csv, result_files, run_cli, server_stats

# --- TLS on loopback -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def _tls_server(raw_server, ca: trustme.CA, *identities: str, client_ca: trustme.CA | None = None,
                delay: float = 0.0, **issue):
    """A raw HTTP server over TLS with a certificate for `identities` (asking for a client
    certificate signed by `client_ca`, when given; doing its handshake `delay` s late)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert(*identities, **issue).configure_cert(context)
    if client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        client_ca.configure_trust(context)

    class Late:
        def wrap_socket(self, sock, server_side):
            time.sleep(delay)
            return context.wrap_socket(sock, server_side=server_side)

    return raw_server(lambda n, head, sock: sock.sendall(http_response(200)) or True,
                      tls=Late() if delay else context)


def _ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.mark.parametrize(("issue", "trusted", "named"), [
    ({}, False, "signed by an unknown authority"),
    ({"identities": ("other.example",)}, True, "not valid for '127.0.0.1'"),
    ({"not_after": datetime.datetime(2001, 1, 1, tzinfo=datetime.UTC),
      "not_before": datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC)}, True, "has expired"),
])
def test_tls_is_verified_by_default_and_a_failure_says_which(issue, trusted, named, ca, raw_server, tmp_path):
    identities = issue.pop("identities", ("127.0.0.1",))
    server = _tls_server(raw_server, ca, *identities, **issue)
    args = ["--cacert", _ca_file(ca, tmp_path)] if trusted else []
    out = run_cli("semaphore", server.url, "--limits", "2", "--requests", "4", "--no-plot", *args,
                  "--results-dir", str(tmp_path / "r"))
    assert out.returncode == 1, out.stderr
    [line] = [line for line in out.stderr.splitlines() if "error:" in line]
    assert "TLS handshake with 127.0.0.1 failed" in line and named in line and "Traceback" not in out.stderr
    assert server.requests == 0


def test_a_private_ca_is_trusted_with_cacert_on_both_engines(ca, raw_server, tmp_path):
    server = _tls_server(raw_server, ca, "127.0.0.1")
    for engine in ("fast", "aiohttp"):
        out = run_cli("semaphore", server.url, "--engine", engine, "--limits", "2", "--requests", "20", "--no-plot",
                      "--cacert", _ca_file(ca, tmp_path), "--cooldown", "0", "--results-dir", str(tmp_path / engine))
        assert out.returncode == 0, out.stderr
        [row] = read_csv(result_files(tmp_path / engine, "semaphore")[0])
        assert row["successes"] == "20"


def test_a_client_certificate_is_presented_when_asked_for(ca, raw_server, tmp_path):
    clients = trustme.CA()
    server = _tls_server(raw_server, ca, "127.0.0.1", client_ca=clients)
    cert = clients.issue_cert("asyncbench-client")
    cert_file, key_file = tmp_path / "client.pem", tmp_path / "client.key"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    common = ["--limits", "1", "--requests", "5", "--no-plot", "--cacert", _ca_file(ca, tmp_path)]
    refused = run_cli("semaphore", server.url, *common, "--results-dir", str(tmp_path / "a"))
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    out = run_cli("semaphore", server.url, *common, "--cert", str(cert_file), "--key", str(key_file),
                  "--results-dir", str(tmp_path / "b"))
    assert out.returncode == 0, out.stderr
    assert read_csv(result_files(tmp_path / "b", "semaphore")[0])[0]["successes"] == "5"


def test_new_connections_resume_the_session_unless_told_not_to(tmp_path):
    # The trap opens a connection per request: over TLS, one full handshake, then resumed ones.
    for flag, folder in (([], "resumed"), (["--no-tls-resume"], "full")):
        out = run_cli("trap", "--server-tls", "--levels", "1,20", "--cooldown", "0", "--no-plot", *flag,
                      "--results-dir", str(tmp_path / folder))
        assert out.returncode == 0, out.stderr
    resumed = json.loads(result_files(tmp_path / "resumed", "trap")[1].read_text())["tls"]
    full = json.loads(result_files(tmp_path / "full", "trap")[1].read_text())["tls"]
    assert resumed["version"].startswith("TLSv1") and resumed["alpn"] == "http/1.1"
    assert resumed["handshakes_full"] + resumed["handshakes_resumed"] == 21 and resumed["handshakes_resumed"] >= 19
    assert full["handshakes_full"] == 21 and full["handshakes_resumed"] == 0


def test_a_slow_handshake_shows_in_tls_time_not_in_the_time_to_first_byte(ca, raw_server, tmp_path):
    server = _tls_server(raw_server, ca, "127.0.0.1", delay=0.3)
    out = run_cli("trap", server.url, "--levels", "4", "--no-plot", "--no-tls-resume", "--cacert",
                  _ca_file(ca, tmp_path), "--results-dir", str(tmp_path / "r"))
    assert out.returncode == 0, out.stderr
    [row] = read_csv(result_files(tmp_path / "r", "trap")[0])
    assert int(row["connections_opened"]) == 4
    assert float(row["tls_mean_s"]) >= 0.25  # the server waited 0.3 s before its handshake
    assert float(row["connect_mean_s"]) < 0.25  # the TCP connect was made at once (by the kernel)
    assert float(row["ttfb_p99_s"]) < 0.25  # and it answered each request at once
    assert "set-up" in out.stdout  # the table shows it: it is most of the latency


# --- --resolve, --connect-to, on loopback ----------------------------------------------------------


def test_resolve_connects_elsewhere_and_keeps_the_host_and_server_name(ca, raw_server, tmp_path):
    server = _tls_server(raw_server, ca, "api.example.test")
    port = server.url.rsplit(":", 1)[1].strip("/")
    for engine in ("fast", "aiohttp"):
        out = run_cli("semaphore", f"https://api.example.test:{port}/", "--engine", engine, "--resolve",
                      f"api.example.test:{port}:127.0.0.1", "--cacert", _ca_file(ca, tmp_path), "--limits", "2",
                      "--requests", "6", "--cooldown", "0", "--no-plot", "--results-dir", str(tmp_path / engine))
        assert out.returncode == 0, out.stderr
        meta = json.loads(result_files(tmp_path / engine, "semaphore")[1].read_text())
        assert meta["route"]["addresses"] == ["127.0.0.1"] and meta["addresses"] == {"127.0.0.1": 6}
    assert all(f"Host: api.example.test:{port}".encode() in head for head in server.heads)


def test_connect_to_goes_to_another_host_and_port(start_server, tmp_path):
    url = start_server(latency=0.0)
    real_port = url.rsplit(":", 1)[1]
    out = run_cli("semaphore", "http://api.example.test:1234/", "--connect-to",
                  f"api.example.test:1234:127.0.0.1:{real_port}", "--limits", "2", "--requests", "10",
                  "--cooldown", "0", "--no-plot", "--results-dir", str(tmp_path / "r"))
    assert out.returncode == 0, out.stderr
    assert server_stats(url)["received"] == 10 + 1
    route = json.loads(result_files(tmp_path / "r", "semaphore")[1].read_text())["route"]
    assert (route["host"], route["port"], route["connect_port"]) == ("api.example.test", 1234, int(real_port))


@pytest.mark.parametrize(("args", "named"), [
    (["--resolve", "api.example.test:443"], "invalid --resolve 'api.example.test:443'"),
    (["--resolve", "api.example.test:443:not-an-ip"], "'not-an-ip' is not an IP address"),
    (["--connect-to", "nothing"], "invalid --connect-to 'nothing'"),
    (["--cacert", "/etc/hostname"], "invalid --cacert '/etc/hostname': not a PEM file"),
    (["--cacert", "/nonexistent.pem"], "cannot read --cacert '/nonexistent.pem'"),
    (["--cert", "{pem}"], "give both --cert, the certificate, and --key, its private key"),
    (["--max-requests", "0"], "invalid --max-requests 0"),
    (["--max-duration", "0"], "invalid --max-duration 0"),
])
def test_bad_connection_options_exit_2_naming_them(args, named, ca, tmp_path):
    pem = _ca_file(ca, tmp_path)
    out = run_cli("trap", *[a.replace("{pem}", pem) for a in args], "--results-dir", str(tmp_path / "r"))
    assert out.returncode == 2 and named in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert not (tmp_path / "r").exists()


# --- bounds of the whole run ----------------------------------------------------------------------


def test_max_requests_bounds_every_level_and_stops_the_run(start_server, tmp_path):
    url = start_server(latency=0.0, capacity=100, queue=100)
    out = run_cli("semaphore", url, "--limits", "5,10,20", "--requests", "100", "--max-requests", "150",
                  "--cooldown", "0", "--no-plot", "--results-dir", str(tmp_path / "r"))
    assert out.returncode == 0, out.stderr
    assert server_stats(url)["received"] == 150 + 1  # the bound, and the pre-flight
    rows = read_csv(result_files(tmp_path / "r", "semaphore")[0])
    assert [(r["level"], r["requests"]) for r in rows] == [("5", "100"), ("10", "50")]
    meta = json.loads(result_files(tmp_path / "r", "semaphore")[1].read_text())
    assert meta["status"] == "stopped" and meta["partial"] == 10
    assert "--max-requests 150 reached" in meta["reason"] and meta["sweet_spot"]["level"] == 5
    assert "stopped: --max-requests 150 reached" in " ".join(out.stdout.split())


def test_max_requests_counts_the_retries(start_server, tmp_path):
    url = start_server(latency=0.0, error_rate=1.0)  # every request fails, and is retried
    out = run_cli("semaphore", url, "--limits", "2", "--requests", "50", "--retries", "4", "--max-requests", "30",
                  "--cooldown", "0", "--no-plot", "--results-dir", str(tmp_path / "r"))
    assert out.returncode == 0, out.stderr
    assert server_stats(url)["received"] <= 30 + 1


def test_max_duration_sends_nothing_new_after_it(start_server, tmp_path):
    url = start_server(latency=0.2, capacity=100)
    out = run_cli("semaphore", url, "--limits", "2,4", "--requests", "1000", "--max-duration", "1",
                  "--cooldown", "0", "--no-plot", "--results-dir", str(tmp_path / "r"))
    assert out.returncode == 0, out.stderr
    # 2 at a time for 0.2 s each: about 10 in the second allowed (and the one in flight), not 1,000.
    assert server_stats(url)["received"] <= 1 + 2 * (1 / 0.2 + 1)
    meta = json.loads(result_files(tmp_path / "r", "semaphore")[1].read_text())
    assert meta["status"] == "stopped" and "--max-duration 1 s reached" in meta["reason"]


# --- a private network namespace: remote addresses that exist only inside it ----------------------

NETNS_SETUP = """
set -e
ip link set lo up
ip addr add 192.0.2.10/32 dev lo
ip -6 addr add 2001:db8::10/128 dev lo nodad
printf '127.0.0.1 localhost\\n192.0.2.10 api.example.test\\n2001:db8::10 api.example.test\\n192.0.2.99 partly.example.test\\n192.0.2.10 partly.example.test\\n' > "$WORK/hosts"
mount --bind "$WORK/hosts" /etc/hosts
exec "$PYTHON" "$WORK/scenario.py"
"""


def _netns_available() -> str | None:
    """Why the namespace tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "a private network namespace needs root (CI runs as root)"
    for tool in ("unshare", "ip", "mount"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian packages util-linux, iproute2)"
    probe = subprocess.run(["unshare", "--net", "--mount", "true"], capture_output=True)
    if probe.returncode:
        return f"cannot make a network namespace here: {probe.stderr.decode().strip()}"
    return None


def in_netns(tmp_path: Path, scenario: str) -> dict:
    """Run `scenario` (Python, after SCENARIO_HEAD) inside a private network namespace set up as
    NETNS_SETUP says: what it prints as JSON on its last line comes back."""
    why = _netns_available()
    if why:
        pytest.skip(why)
    work = tmp_path / "netns"
    work.mkdir()
    (work / "scenario.py").write_text(SCENARIO_HEAD + textwrap.dedent(scenario), encoding="utf-8")
    env = {**os.environ, "WORK": str(work), "PYTHON": sys.executable, "COLUMNS": "100", "NO_COLOR": "1",
           "PYTHONPATH": str(Path(__file__).parent) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(["unshare", "--net", "--mount", "sh", "-c", NETNS_SETUP], capture_output=True, text=True,
                          env=env, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


SCENARIO_HEAD = """
import atexit, json, os, subprocess, sys, urllib.request
from pathlib import Path
WORK = Path(os.environ["WORK"])

def serve(port, *args):
    # On every address of the namespace (0.0.0.0 and ::) on one port: what a remote host does.
    proc = subprocess.Popen([sys.executable, "-m", "asyncbench", "serve", "--host", "", "--port", str(port),
                             *args], stdout=subprocess.PIPE, text=True)
    atexit.register(proc.kill)  # a failed scenario leaves no server behind
    line = proc.stdout.readline()
    assert "listening on" in line, line
    return proc

def cli(*args, env=None):
    out = subprocess.run([sys.executable, "-m", "asyncbench", *args], capture_output=True, text=True,
                         env={**os.environ, **(env or {})}, timeout=120)
    return {"code": out.returncode, "out": out.stdout, "err": out.stderr}

def stats(url):
    with urllib.request.urlopen(url + "/stats", timeout=10) as resp:
        return json.loads(resp.read())

def sidecar(folder):
    [p] = [p for p in Path(folder).glob("*.json")]
    return json.loads(p.read_text())
"""


def test_a_remote_target_needs_the_opt_in_and_is_then_loaded_over_both_addresses(tmp_path):
    result = in_netns(tmp_path, """
    server = serve(8080, "--latency", "0.01", "--capacity", "100")
    port = 8080
    target = f"http://api.example.test:{port}/"
    refused = cli("semaphore", target, "--limits", "4", "--requests", "40", "--results-dir", str(WORK / "a"))
    before = stats(f"http://127.0.0.1:{port}")["received"]
    allowed = cli("semaphore", target, "--allow-remote", "--limits", "4", "--requests", "40", "--cooldown", "0",
                  "--no-plot", "--results-dir", str(WORK / "b"))
    by_env = cli("semaphore", target, "--limits", "2", "--requests", "10", "--cooldown", "0", "--no-plot",
                 "--results-dir", str(WORK / "c"), env={"ASYNCBENCH_ALLOW_REMOTE": "1"})
    missing = cli("semaphore", f"http://missing.example.test:{port}/", "--allow-remote", "--results-dir",
                  str(WORK / "d"))
    partly = {engine: cli("semaphore", f"http://partly.example.test:{port}/", "--allow-remote", "--engine", engine,
                          "--limits", "4", "--requests", "20", "--cooldown", "0", "--no-plot",
                          "--results-dir", str(WORK / engine)) for engine in ("fast", "aiohttp")}
    print(json.dumps({"refused": refused, "before": before, "allowed": allowed, "by_env": by_env,
                      "missing": missing, "partly": partly, "meta": sidecar(WORK / "b"),
                      "rows": (WORK / "b").joinpath(sidecar(WORK / "b")["files"]["csv"]).read_text(),
                      "partly_meta": {e: sidecar(WORK / e) for e in partly}}))
    server.terminate()
    server.wait(timeout=30)
    """)
    refused, allowed = result["refused"], result["allowed"]
    assert refused["code"] == 2 and "--allow-remote" in refused["err"] and "not this machine" in refused["err"]
    assert result["before"] == 0  # refused before a single request was sent
    assert allowed["code"] == 0, allowed["err"]
    bound = [line for line in allowed["err"].splitlines() if "not this machine" in line]
    assert bound and "api.example.test" in bound[0] and "192.0.2.10" in bound[0] and "2001:db8::10" in bound[0]
    assert "at most 4 requests at once, 40 in all" in bound[0]
    meta = result["meta"]
    assert sorted(meta["route"]["addresses"]) == ["192.0.2.10", "2001:db8::10"] and meta["route"]["remote"]
    # Round-robin: the 4 connections, 2 to each address, sharing the 40 requests.
    assert set(meta["addresses"]) == {"192.0.2.10", "2001:db8::10"} and sum(meta["addresses"].values()) == 40
    [row] = csv.DictReader(io.StringIO(result["rows"]))
    assert row["connections_opened"] == "4" and row["successes"] == "40"
    assert result["by_env"]["code"] == 0, result["by_env"]["err"]
    missing = result["missing"]
    assert missing["code"] == 1 and "cannot resolve host 'missing.example.test'" in missing["err"]
    # An address that cannot be reached hands its connections to the next: every request succeeds.
    for engine, run in result["partly"].items():
        assert run["code"] == 0, run["err"]
        assert result["partly_meta"][engine]["addresses"] == {"192.0.2.10": 20}, engine


def test_a_remote_tls_service_with_a_private_ca_works_as_a_real_one_would(tmp_path):
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    issued = ca.issue_cert("api.example.test")
    issued.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "cert.pem"))
    issued.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    result = in_netns(tmp_path, f"""
    server = serve(8443, "--latency", "0.01", "--capacity", "100", "--tls-cert", "{tmp_path / 'cert.pem'}",
                   "--tls-key", "{tmp_path / 'key.pem'}")
    port = 8443
    target = f"https://api.example.test:{{port}}/"
    run = cli("semaphore", target, "--allow-remote", "--cacert", "{tmp_path / 'ca.pem'}", "--limits", "2,4",
              "--requests", "40", "--cooldown", "0", "--no-plot", "--results-dir", str(WORK / "r"))
    untrusted = cli("semaphore", target, "--allow-remote", "--results-dir", str(WORK / "u"))
    print(json.dumps({{"run": run, "untrusted": untrusted, "meta": sidecar(WORK / "r")}}))
    server.terminate()
    server.wait(timeout=30)
    """)
    run = result["run"]
    assert run["code"] == 0, run["err"]
    meta = result["meta"]
    assert meta["tls"]["handshakes_full"] >= 1 and meta["tls"]["alpn"] == "http/1.1"
    assert set(meta["addresses"]) == {"192.0.2.10", "2001:db8::10"} and sum(meta["addresses"].values()) == 80
    untrusted = result["untrusted"]
    assert untrusted["code"] == 1 and "TLS handshake with api.example.test failed" in untrusted["err"]
