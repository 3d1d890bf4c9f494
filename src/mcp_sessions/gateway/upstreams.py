"""HTTP upstreams: their addresses, connection pools, load and health.

Health is decided two ways (issue #7):

* **actively** — every ``interval`` seconds a ``GET`` of the health path on a fresh
  connection; any answer below 500 within ``timeout`` is a success (an MCP endpoint answers
  a bare ``GET`` with 4xx, which proves it is up). ``fall`` consecutive failures mark an
  upstream down, ``rise`` consecutive successes mark it up again;
* **passively** — a refused connection, or a connection that dies mid-request, marks the
  upstream down at once: waiting for ``fall`` probes would send more requests to a dead
  process.

Only healthy upstreams take part in rendezvous hashing (:mod:`.routing`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from urllib.parse import urlsplit

from .http1 import ConnectionPool, HopDeadlines, UpstreamError

logger = logging.getLogger("mcp_sessions.gateway")


@dataclass(frozen=True, slots=True)
class UpstreamAddress:
    """A parsed ``--upstream`` URL: ``http://host:port/path``."""

    url: str
    host: str
    port: int
    path: str

    @property
    def netloc(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @classmethod
    def parse(cls, url: str) -> UpstreamAddress:
        parts = urlsplit(url)
        if parts.scheme != "http":
            raise ValueError(
                f"upstream {url!r}: only http:// upstreams are supported (put TLS in front of "
                "the gateway, or keep the hop to the upstreams on a private network)"
            )
        if not parts.hostname:
            raise ValueError(f"upstream {url!r} has no host")
        try:
            port = parts.port or 80
        except ValueError:
            raise ValueError(f"upstream {url!r} has an invalid port") from None
        if parts.query or parts.fragment:
            raise ValueError(f"upstream {url!r}: no query or fragment, please")
        path = parts.path or "/"
        return cls(
            url=url.rstrip("/") if path != "/" else url, host=parts.hostname, port=port, path=path
        )


class Upstream:
    """One upstream server: its pool, requests in flight and health."""

    def __init__(
        self,
        address: UpstreamAddress,
        *,
        deadlines: HopDeadlines,
        max_idle: int = 64,
    ) -> None:
        self.address = address
        self.name = address.url
        self.pool = ConnectionPool(address.host, address.port, deadlines, max_idle=max_idle)
        self.in_flight = 0
        self.healthy = True
        self._successes = 0
        self._failures = 0
        #: Why it was last marked down, for /healthz and logs.
        self.last_error: str | None = None

    def __repr__(self) -> str:
        state = "up" if self.healthy else "down"
        return f"<Upstream {self.name} {state} in_flight={self.in_flight}>"

    def record_success(self, rise: int) -> bool:
        """A probe succeeded; returns ``True`` when this brings the upstream back up."""
        self._failures = 0
        self._successes += 1
        if self.healthy:
            self.last_error = None
        elif self._successes >= rise:
            self.healthy = True
            self.last_error = None
            return True
        return False

    def record_failure(self, error: str, fall: int, *, now: bool = False) -> bool:
        """A probe or request failed; returns ``True`` when this takes the upstream down."""
        self._successes = 0
        self._failures += 1
        self.last_error = error
        if self.healthy and (now or self._failures >= fall):
            self.healthy = False
            self.pool.close()
            return True
        return False


@dataclass(frozen=True, slots=True)
class HealthSettings:
    interval: float = 2.0
    timeout: float = 1.0
    fall: int = 2
    rise: int = 2
    #: Path probed with GET; ``None`` probes the upstream's root, ``/``.
    path: str | None = None


class UpstreamSet:
    """The upstreams of one gateway, with the active health checker."""

    def __init__(
        self,
        urls: list[str],
        *,
        health: HealthSettings,
        deadlines: HopDeadlines,
    ) -> None:
        if not urls:
            raise ValueError("give at least one --upstream URL (or use --spawn)")
        addresses = [UpstreamAddress.parse(url) for url in urls]
        names = [a.url for a in addresses]
        if len(set(names)) != len(names):
            raise ValueError("the same --upstream URL is given twice")
        self.health = health
        self.upstreams = [Upstream(a, deadlines=deadlines) for a in addresses]
        self.by_name = {u.name: u for u in self.upstreams}
        self._task: asyncio.Task[None] | None = None

    def healthy(self) -> list[Upstream]:
        return [u for u in self.upstreams if u.healthy]

    def mark_failed(self, upstream: Upstream, error: str) -> None:
        """Passive failure detection: take ``upstream`` down now."""
        if upstream.record_failure(error, self.health.fall, now=True):
            logger.warning("upstream %s is down: %s", upstream.name, error)

    async def probe(self, upstream: Upstream) -> None:
        """One active health check of ``upstream``."""
        settings = self.health
        path = settings.path or "/"
        try:
            connect = min(settings.timeout, upstream.pool.deadlines.connect)
            probe = HopDeadlines(read=settings.timeout, connect=connect)
            connection = await upstream.pool.connect(probe)
            try:
                request = (
                    f"GET {path} HTTP/1.1\r\nhost: {upstream.address.netloc}\r\n"
                    "accept: application/json\r\nuser-agent: mcp-sessions-gateway-health\r\n"
                    "connection: close\r\n\r\n"
                ).encode()
                await asyncio.wait_for(connection.send(request), settings.timeout)
                head = await connection.read_head()
            finally:
                connection.close()
        except (UpstreamError, OSError, TimeoutError) as exc:
            error = str(exc) or type(exc).__name__
            if upstream.record_failure(error, settings.fall):
                logger.warning("upstream %s is down: %s", upstream.name, error)
        else:
            if head.status >= 500:
                error = f"health check answered {head.status}"
                if upstream.record_failure(error, settings.fall):
                    logger.warning("upstream %s is down: %s", upstream.name, error)
            elif upstream.record_success(settings.rise):
                logger.warning("upstream %s is up again", upstream.name)

    async def _run(self) -> None:
        while True:
            await asyncio.gather(*(self.probe(u) for u in self.upstreams))
            for upstream in self.upstreams:
                upstream.pool.prune()
            await asyncio.sleep(self.health.interval)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for upstream in self.upstreams:
            upstream.pool.close()
