"""``GET /status`` (issue #13): the page a real gateway serves, rendered by headless Chromium
from Debian's packages, and the same data as JSON; escaping, masking and the ring buffer.

Chromium is installed by scripts/install-test-tools; without it these browser tests skip with
a hint, except in CI (``CI=true``), where they must run.
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from mcp_sessions.gateway import Gateway, GatewayConfig
from mcp_sessions.gateway.status import (
    RECENT_ERRORS,
    SNAPSHOT_SECONDS,
    RecentErrors,
    StatusPage,
    render,
    scrub,
    wants_json,
)

from .helpers import (
    UPSTREAM_SCRIPT,
    Proc,
    call,
    fast_health,
    kill,
    new_id,
    start_gateway,
    start_upstream,
    stop,
    upstream_args,
    wait_until,
)

CHROMIUM = "/usr/bin/chromium"
INSTALL_HINT = (
    "chromium is not installed: run scripts/install-test-tools as root, or "
    "`sudo apt-get install chromium` (Debian)"
)


def chromium() -> str:
    if os.path.exists(CHROMIUM):
        return CHROMIUM
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true but {INSTALL_HINT}")
    pytest.skip(INSTALL_HINT)


def run_chromium(url: str, profile: Path, *mode: str) -> subprocess.CompletedProcess[str]:
    """Headless Chromium on ``url``: no sandbox (root in containers), no network of its own."""
    argv = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        *mode,
        url,
    ]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


def status_json(gateway: Proc) -> dict[str, Any]:
    response = httpx2.get(
        f"{gateway.base}/status", headers={"accept": "application/json"}, timeout=10
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    result: dict[str, Any] = response.json()
    return result


@pytest.fixture(scope="module")
def http_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proc, Proc, Proc]]:
    """A gateway with two live upstreams, a third one killed (so an error is logged), and one
    session pinned through it."""
    logs = tmp_path_factory.mktemp("gateway-status")
    a, b, doomed = (start_upstream(logs, name) for name in ("a", "b", "doomed"))
    gateway = start_gateway(logs, "gw", *upstream_args(a, b, doomed), *fast_health())
    try:
        kill(doomed)
        wait_until(
            lambda: any(e["upstream"] == doomed.url for e in status_json(gateway)["recentErrors"]),
            what="the killed upstream in the recent errors",
        )
        with httpx2.Client(timeout=30) as client:
            assert call(client, gateway.url, "count", sid=new_id()).value == 1
        # A snapshot is served for a second: wait for one gathered after the call.
        wait_until(
            lambda: sum(u["pinnedSessions"] for u in status_json(gateway)["upstreams"]) == 1,
            what="the pinned session on the status page",
        )
        yield gateway, a, b
    finally:
        for proc in (gateway, a, b, doomed):
            stop(proc)


def test_chromium_renders_the_status_page_with_the_upstreams(
    http_gateway: tuple[Proc, Proc, Proc], tmp_path: Path
) -> None:
    gateway, a, b = http_gateway
    url = f"{gateway.base}/status"
    dumped = run_chromium(url, tmp_path / "profile", "--dump-dom")
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    dom = dumped.stdout
    assert a.url in dom and b.url in dom
    assert "<h2>Upstreams</h2>" in dom and "Recent errors" in dom
    assert 'http-equiv="refresh"' in dom
    shot = tmp_path / "status.png"
    shown = run_chromium(
        url, tmp_path / "profile2", f"--screenshot={shot}", "--window-size=1200,700"
    )
    assert shown.returncode == 0, shown.stderr[-2000:]
    png = shot.read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000  # not a blank page


def test_status_json_has_health_pins_and_recent_errors(
    http_gateway: tuple[Proc, Proc, Proc],
) -> None:
    gateway, a, b = http_gateway
    status = status_json(gateway)
    assert status["mode"] == "upstream" and status["status"] == "ok"
    upstreams = {u["url"]: u for u in status["upstreams"]}
    assert upstreams[a.url]["healthy"] and upstreams[b.url]["healthy"]
    assert not next(u for u in upstreams.values() if u["url"] not in (a.url, b.url))["healthy"]
    assert sum(u["pinnedSessions"] for u in upstreams.values()) == 1
    error = status["recentErrors"][0]
    assert set(error) == {"time", "upstream", "level", "error"}
    assert error["time"].endswith("Z")


def test_status_html_is_self_contained(http_gateway: tuple[Proc, Proc, Proc]) -> None:
    gateway, _, _ = http_gateway
    response = httpx2.get(f"{gateway.base}/status", headers={"accept": "text/html"}, timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert "default-src 'none'" in response.headers["content-security-policy"]
    page = response.text
    assert "<script" not in page and "src=" not in page and "href=" not in page


def test_spawn_gateway_status_shows_the_pool(tmp_path: Path) -> None:
    child = shlex.join([sys.executable, str(UPSTREAM_SCRIPT), "--stdio", "--name", "child"])
    gateway = start_gateway(
        tmp_path, "spawn", "--spawn", child, "--warm", "1", "--warm-legacy", "0",
        "--max-processes", "3",
    )  # fmt: skip
    try:
        wait_until(lambda: status_json(gateway)["pool"]["warm"] == 1, what="a warm process")
        pool = status_json(gateway)["pool"]
        assert pool == {"warm": 1, "starting": 0, "busy": 0, "cap": 3, "atCapacity": False}
        page = httpx2.get(f"{gateway.base}/status", timeout=10).text
        assert "Process pool" in page and "room for new sessions" in page
    finally:
        stop(gateway)


# -- the parts, with hostile input ---------------------------------------------------------


def test_everything_on_the_page_is_escaped() -> None:
    hostile = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'
    status = {
        "status": "ok",
        "version": "1",
        "time": "t",
        "startedAt": "t",
        "mode": hostile,
        "pinStore": hostile,
        "sessionIdleSeconds": 60.0,
        "upstreams": [
            {"url": hostile, "healthy": False, "inFlight": 0, "pinnedSessions": 0, "error": hostile}
        ],
        "recentErrors": [{"time": "t", "level": "warning", "upstream": hostile, "error": hostile}],
    }
    page = render(status)
    assert "<script>" not in page and "<img" not in page
    assert page.count("&lt;script&gt;alert(1)&lt;/script&gt;") == 6


def test_secrets_in_log_lines_are_masked() -> None:
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJl"
    line = (
        f"request failed: Authorization: Bearer abc.def token {jwt} session "
        "3f2c1b9e-8d7a-4c6b-9e5f-0a1b2c3d4e5f handle vm-0123456789abcdef0123456789abcdef"
    )
    masked = scrub(line)
    for secret in ("abc.def", jwt, "3f2c1b9e-8d7a", "0123456789abcdef0123456789abcdef"):
        assert secret not in masked
    assert masked.startswith("request failed:")
    assert scrub("upstream http://127.0.0.1:8001/mcp is down") == (
        "upstream http://127.0.0.1:8001/mcp is down"
    )
    assert scrub("fetching https://user:hunter2@idp.example/jwks failed") == (
        "fetching https://[redacted]idp.example/jwks failed"
    )
    host = "upstream http://mcp-server-eu-west-1-prod.internal:8000/mcp is down"
    assert scrub(host) == host  # a host name is not a secret
    assert len(scrub("x " * 1000)) <= 300
    assert "\x1b" not in scrub("a\x1b[2Jb")


def test_recent_errors_keep_the_last_fifty_with_their_upstream() -> None:
    logger = logging.getLogger("test.gateway.status")
    logger.propagate = False
    errors = RecentErrors(lambda: ["http://up-a/mcp"])
    errors.attach(logger)
    try:
        logger.info("not an error")
        for n in range(RECENT_ERRORS + 10):
            logger.warning("request to %s failed: attempt %d", "http://up-a/mcp", n)
        logger.error("no upstream named: %s", "elsewhere")
    finally:
        errors.detach(logger)
    entries = list(errors.entries)
    assert len(entries) == RECENT_ERRORS
    assert entries[-1].upstream == "" and entries[-1].level == "error"
    assert entries[-2].message.endswith(f"attempt {RECENT_ERRORS + 9}")
    assert entries[-2].upstream == "http://up-a/mcp"
    assert entries[0].message.endswith("attempt 11")  # the oldest fell out


def test_accept_header_chooses_json_or_html() -> None:
    assert wants_json("application/json")
    assert wants_json("application/json, text/html;q=0.5")
    assert not wants_json("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8")
    assert not wants_json("")
    assert not wants_json("*/*")


def test_a_fast_poller_gets_one_snapshot_a_second() -> None:
    gateway = Gateway(GatewayConfig(upstreams=("http://127.0.0.1:9/mcp",)))
    now = [100.0]
    page = StatusPage(gateway, clock=lambda: now[0])
    first = page.snapshot()
    now[0] += SNAPSHOT_SECONDS / 2
    assert page.snapshot() is first  # within the second: not gathered again
    now[0] += SNAPSHOT_SECONDS
    fresh = page.snapshot()
    assert fresh is not first
    assert fresh["upstreams"][0]["url"] == "http://127.0.0.1:9/mcp"
