"""``GET /status``: the gateway's state for a person, as HTML, or as JSON (issue #13).

What it shows: the upstreams with their health, requests in flight, last error and how many
sessions this replica has pinned to each (counts only: a session id or a handle is a bearer
capability, so none is ever shown); or, with ``--spawn``, the process pool (warm, starting,
busy, cap); and the most recent warnings and errors the gateway logged (a ring buffer of
:data:`RECENT_ERRORS`), each with its time, upstream and message. Messages are the gateway's
own log lines, which never carry a request body; anything in them shaped like an id, a handle,
a bearer token or a JWT is masked all the same.

The page is one self-contained document: inline CSS, no script, no external asset, refreshed
by ``<meta http-equiv="refresh">``; its Content-Security-Policy allows nothing else. Every
value is HTML-escaped, since upstream names and error messages can hold anything. It is served
like ``/metrics`` and ``/healthz``: on the gateway's port, without authentication (see
docs/gateway.md on exposure).
"""

from __future__ import annotations

import html
import json
import logging
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import __version__
from ..asgi import Send, send_bytes
from ..core.timestamps import rfc3339
from .asgi import Incoming

#: Log records kept for the page (the oldest fall out).
RECENT_ERRORS = 50

#: Seconds between the page's own refreshes.
REFRESH_SECONDS = 5

#: Seconds one snapshot is served for: a caller polling /status costs at most one walk of
#: the pin cache (up to its 100 000 entries) a second, however fast it asks.
SNAPSHOT_SECONDS = 1.0

#: Characters of one error message kept.
MAX_MESSAGE = 300

_HTML_TYPE = b"text/html; charset=utf-8"
_HEADERS = [
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
]
_HTML_HEADERS = [
    *_HEADERS,
    (
        b"content-security-policy",
        b"default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
    ),
    (b"referrer-policy", b"no-referrer"),
]

# Secrets that could sit in a log line: bearer credentials, a URL's user:password, JWTs,
# UUIDs (session ids), long hex or base64url runs (handles' random parts, minted ids, digests;
# 32 characters and more, so that host names stay readable).
_SECRETS = re.compile(
    r"(?i)bearer\s+\S+"
    r"|(?<=//)[^/\s:@]+:[^/\s@]+@"
    r"|eyJ[\w-]+\.[\w-]+\.[\w-]*"
    r"|\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b"
    r"|\b[0-9a-f]{16,}\b"
    r"|\b(?=[\w-]*\d)(?=[\w-]*[A-Za-z])[\w-]{32,}\b"
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def scrub(message: str) -> str:
    """``message`` cut to :data:`MAX_MESSAGE` characters, secrets masked, controls dropped."""
    text = _SECRETS.sub("[redacted]", message)
    text = _CONTROL.sub(" ", text)
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"


@dataclass(frozen=True, slots=True)
class ErrorEntry:
    at: float
    upstream: str
    level: str
    message: str

    def to_json(self) -> dict[str, Any]:
        return {
            "time": rfc3339(self.at),
            "upstream": self.upstream,
            "level": self.level,
            "error": self.message,
        }


class RecentErrors(logging.Handler):
    """The last warnings and errors of the gateway's logger, kept for ``/status``.

    A log handler rather than calls at every error site: whatever the gateway logs at warning
    or above arrives here (failed hops, upstreams going down, spawned processes failing). Only
    the formatted message is kept (no traceback, no arguments); the upstream is the first
    argument of the record that names one of ``upstreams()``.
    """

    def __init__(self, upstreams: Callable[[], list[str]], size: int = RECENT_ERRORS) -> None:
        super().__init__(logging.WARNING)
        self._upstreams = upstreams
        self.entries: deque[ErrorEntry] = deque(maxlen=size)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            names = set(self._upstreams())
            args = record.args if isinstance(record.args, tuple) else ()
            upstream = next((str(a) for a in args if str(a) in names), "")
            self.entries.append(
                ErrorEntry(record.created, upstream, record.levelname.lower(), scrub(message))
            )
        except Exception:  # a log handler must never break the code that logs
            self.handleError(record)

    def attach(self, logger: logging.Logger) -> None:
        if self not in logger.handlers:
            logger.addHandler(self)

    def detach(self, logger: logging.Logger) -> None:
        logger.removeHandler(self)


class StatusPage:
    """``/status`` of one gateway: ``snapshot()`` gathers, ``serve()`` answers."""

    def __init__(self, gateway: Any, *, clock: Callable[[], float] = time.monotonic) -> None:
        # The Gateway (app.py imports this module, so it is not imported back here).
        self.gateway = gateway
        self.started = time.time()
        self.errors = RecentErrors(self._upstream_names)
        self._clock = clock
        self._cached: tuple[float, dict[str, Any]] | None = None

    def _upstream_names(self) -> list[str]:
        upstreams = getattr(self.gateway.backend, "upstreams", None)
        return [u.name for u in upstreams.upstreams] if upstreams is not None else []

    def snapshot(self) -> dict[str, Any]:
        """Everything the page shows, as JSON-ready data; the same one for
        :data:`SNAPSHOT_SECONDS`."""
        now = self._clock()
        if self._cached is not None and now - self._cached[0] < SNAPSHOT_SECONDS:
            return self._cached[1]
        snapshot = self._gather()
        self._cached = (now, snapshot)
        return snapshot

    def _gather(self) -> dict[str, Any]:
        gateway = self.gateway
        backend = gateway.backend
        ok, health = backend.health()
        now = time.time()
        status: dict[str, Any] = {
            "status": "ok" if ok else "unavailable",
            "version": __version__,
            "time": rfc3339(now),
            "startedAt": rfc3339(self.started),
            "mode": health.get("mode", "upstream"),
            "pinStore": gateway.store.url,
        }
        if "upstreams" in health:
            pins = getattr(backend, "pins", None)
            idle = gateway.config.session_idle
            live = pins.live_by_upstream(idle) if pins is not None else {}
            status["sessionIdleSeconds"] = idle
            status["upstreams"] = [
                {**entry, "pinnedSessions": int(live.get(entry["url"], 0))}
                for entry in health["upstreams"]
            ]
        if "processes" in health:
            processes = health["processes"]
            status["pool"] = {
                "warm": processes.get("warm", 0),
                "starting": processes.get("starting", 0),
                "busy": processes.get("bound", 0),
                "cap": processes.get("max", 0),
                "atCapacity": bool(health.get("atCapacity", False)),
            }
        status["recentErrors"] = [e.to_json() for e in reversed(self.errors.entries)]
        return status

    async def serve(self, request: Incoming, send: Send) -> None:
        snapshot = self.snapshot()
        if wants_json(request.headers.get("accept") or ""):
            body = json.dumps(snapshot).encode()
            await send_bytes(send, 200, body, extra_headers=_HEADERS)
            return
        await send_bytes(send, 200, render(snapshot).encode(), _HTML_TYPE, _HTML_HEADERS)


def wants_json(accept: str) -> bool:
    """JSON when ``Accept`` names ``application/json`` before (or without) ``text/html``."""
    accept = accept.lower()
    json_at = accept.find("application/json")
    html_at = accept.find("text/html")
    return json_at >= 0 and (html_at < 0 or json_at < html_at)


# -- HTML ------------------------------------------------------------------------------------

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5rem;color:#1b1f24;background:#f6f8fa}
h1{font-size:1.3rem;margin:0 0 .3rem}h2{font-size:1.05rem;margin:1.4rem 0 .4rem}
table{border-collapse:collapse;background:#fff;min-width:40%}
th,td{border:1px solid #d0d7de;padding:.3rem .6rem;text-align:left;vertical-align:top}
th{background:#eaeef2}td.n{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#116329;font-weight:600}.down{color:#a40e26;font-weight:600}
.meta{color:#57606a}.t{white-space:nowrap}
.err{font-family:ui-monospace,monospace;font-size:12px;overflow-wrap:anywhere}
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _state(ok: bool, up: str = "up", down: str = "down") -> str:
    return f'<span class="ok">{up}</span>' if ok else f'<span class="down">{down}</span>'


def _table(header: list[str], rows: list[list[str]], empty: str) -> str:
    if not rows:
        return f'<p class="meta">{_e(empty)}</p>'
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _td(value: object, numeric: bool = False) -> str:
    return f'<td class="n">{_e(value)}</td>' if numeric else f"<td>{_e(value)}</td>"


def _td_time(value: object) -> str:
    return f'<td class="t">{_e(value)}</td>'


def _td_error(message: object) -> str:
    return f'<td class="err">{_e(message)}</td>'


def render(status: dict[str, Any]) -> str:
    """The HTML page of a :meth:`StatusPage.snapshot`; every value escaped."""
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>mcp-sessions gateway status</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>mcp-sessions gateway</h1>",
        f"<p>{_state(status['status'] == 'ok', 'serving', 'unavailable')} "
        f'<span class="meta">mode {_e(status["mode"])} · version {_e(status["version"])} · '
        f"pins in {_e(status['pinStore'])} · started {_e(status['startedAt'])} · "
        f"as of {_e(status['time'])} · refreshes every {REFRESH_SECONDS} s</span></p>",
    ]
    if "upstreams" in status:
        rows = [
            [
                _td(u["url"]),
                f"<td>{_state(bool(u['healthy']))}</td>",
                _td(u["inFlight"], numeric=True),
                _td(u["pinnedSessions"], numeric=True),
                _td_error(u.get("error", "")),
            ]
            for u in status["upstreams"]
        ]
        idle = status["sessionIdleSeconds"]
        parts += [
            "<h2>Upstreams</h2>",
            _table(
                ["upstream", "health", "in flight", "sessions pinned", "last error"],
                rows,
                "no upstreams",
            ),
            f'<p class="meta">Sessions pinned: sessions this replica routed within the idle '
            f"timeout ({_e(f'{idle:g}')} s); counts only, never ids.</p>",
        ]
    if "pool" in status:
        pool = status["pool"]
        rows = [[_td(pool[k], numeric=True) for k in ("warm", "starting", "busy", "cap")]]
        parts += [
            "<h2>Process pool</h2>",
            _table(["warm", "starting", "busy", "cap"], rows, ""),
            f"<p>{_state(not pool['atCapacity'], 'room for new sessions', 'at capacity')}</p>",
        ]
    errors = [
        [_td_time(e["time"]), _td(e["level"]), _td(e["upstream"]), _td_error(e["error"])]
        for e in status["recentErrors"]
    ]
    parts += [
        f"<h2>Recent errors (last {RECENT_ERRORS}, newest first)</h2>",
        _table(["time (UTC)", "level", "upstream", "error"], errors, "none since start"),
        '<p class="meta">The same as JSON: <code>Accept: application/json</code>.</p>',
        "</body></html>",
    ]
    return "\n".join(parts)
