"""The ``--spawn`` backend: Streamable HTTP to clients, one stdio process per session.

HTTP-to-stdio gateways lost their routing key in 2026-07-28 (spec-digest §4.11: "HTTP-to-stdio
gateways with one process per session"); a client-generated id gives it back from the first
request. Per request:

* a POSTed request is relayed to its session's process (:mod:`.child`); its response comes
  back as ``application/json`` — or, as soon as the child sends something for that request
  first (a progress notification, a log message, a server-to-client request), as an SSE
  stream that carries each message the moment the child writes it;
* a POSTed notification or response is written through and answered 202;
* ``DELETE`` stops the session's process; ``GET`` (a standalone stream) is not offered (405).

Legacy clients: ``initialize`` gets a new process and an ``Mcp-Session-Id`` minted by the
gateway (128 random bits) on its response; later requests follow that id. Which process
serves which session, and when processes start and stop, is :mod:`.pool`'s.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ...asgi import (
    CONTENT_TYPE,
    EVENT_STREAM_MEDIA_TYPE,
    LEGACY_SESSION_FIELD,
    LEGACY_SESSION_FIELD_BYTES,
    Send,
    end_stream,
    send_bytes,
    send_empty,
    send_error,
    send_json,
    sse_event,
    wait_disconnect,
)
from ...core.errors import (
    InvalidRequest,
    LimitExceeded,
    MissingLegacySessionId,
    SessionError,
    SessionNotFound,
)
from ...core.ids import new_session_id
from ...core.names import META_SHARED_CONNECTION, MODERN_PROTOCOL_VERSIONS
from ..asgi import Incoming, read_body_or_refuse
from ..config import GatewayConfig
from ..errors import GatewayAtCapacity, ParseError, UpstreamFailed, session_lost
from ..metrics import GatewayMetrics
from ..routing import route_for, route_from_headers
from ..trust import TrustPolicy, refuse
from .child import ChildProcess, ProcessExited, SessionKey, with_meta
from .pool import ProcessPool, Tombstone

#: The session key of 2026-07-28 requests that carry none: one process per principal.
_KEYLESS = "keyless"


class SpawnBackend:
    """Serves clients from per-session processes (module docstring)."""

    def __init__(self, config: GatewayConfig, metrics: GatewayMetrics) -> None:
        assert config.spawn is not None
        self.config = config
        self.settings = config.spawn
        self.metrics = metrics
        self.pool = ProcessPool(config.spawn, metrics)
        # The gateway is a stdio process's only guard: principals are verified or digests of
        # the whole credential, never unverified claims (see .trust, issue #12).
        self.trust = TrustPolicy(config.auth, trust_forwarded=config.trust_forwarded)
        metrics.on_scrape(self._refresh_gauges)

    async def start(self) -> None:
        self.pool.start()

    async def stop(self) -> None:
        await self.pool.stop()

    def health(self) -> tuple[bool, dict[str, Any]]:
        counts = self.pool.counts()
        return True, {
            "mode": "spawn",
            "processes": {**counts, "max": self.settings.max_processes},
            "atCapacity": self.pool.total >= self.settings.max_processes and counts["warm"] == 0,
        }

    def _refresh_gauges(self) -> None:
        counts = self.pool.counts()
        for state, value in counts.items():
            self.metrics.processes.labels(state).set(value)
        self.metrics.set_per_upstream(self.metrics.sessions, [("spawn", float(counts["bound"]))])

    # -- requests ------------------------------------------------------------------------------

    async def handle(self, request: Incoming, send: Send) -> int:
        if request.method == "DELETE":
            return await self._delete(request, send)
        if request.method != "POST":
            await send_bytes(
                send,
                405,
                b'{"error": "the gateway offers no standalone GET stream in --spawn mode"}',
                extra_headers=[(b"allow", b"POST, DELETE")],
            )
            return 405
        refused = await read_body_or_refuse(request, send, self.config.max_body_bytes)
        if refused is not None:
            return refused
        message = request.parse()
        if request.unparsable:
            return await send_error(send, ParseError())
        if not isinstance(message, dict):
            refusal = InvalidRequest("Invalid request: send one JSON-RPC message per POST")
            return await send_error(send, refusal)
        principal = await self.trust.principal(request)
        if not isinstance(principal, str):
            return await refuse(send, principal, request.rpc_id)
        quota = self.trust.quota_key(principal, request)
        method = request.rpc_method
        modern = request.protocol_version in MODERN_PROTOCOL_VERSIONS
        minted: str | None = None
        try:
            if method == "initialize" and not modern:
                minted = new_session_id()
                key: SessionKey = (principal, "legacy:" + minted)
                self.metrics.routing.labels("legacy").inc()
                child = await self.pool.bind(key, "legacy", quota)
            else:
                found = await self._session_process(request, principal, quota, modern)
                if isinstance(found, int):
                    if found:
                        return found
                    return await send_error(send, MissingLegacySessionId(), request.rpc_id)
                child, key = found
        except GatewayAtCapacity as error:
            return await send_error(send, error, request.rpc_id, retry_after=1)
        except LimitExceeded as error:
            retry = error.retry_after or 1
            return await send_error(send, error, request.rpc_id, retry_after=retry)
        except SessionError as error:
            return await send_error(send, error, request.rpc_id)
        except (ProcessExited, OSError) as exc:
            failure = UpstreamFailed(f"No server process could be started: {exc}")
            return await send_error(send, failure, request.rpc_id)
        if "method" in message and "id" in message:
            shared = key[1] == _KEYLESS
            return await self._relay_request(child, request, send, minted, shared=shared)
        try:
            await child.write(message)
        except ProcessExited as exc:
            return await send_error(send, UpstreamFailed(exc.description), request.rpc_id)
        except ParseError as error:
            return await send_error(send, error, request.rpc_id)
        await send_empty(send, 202)
        return 202

    async def _session_process(
        self, request: Incoming, principal: str, quota: str, modern: bool
    ) -> tuple[ChildProcess, SessionKey] | int:
        """The process of the request's session (binding one for a new session), or ``0``
        when a legacy request carries no session id."""
        legacy_id = None if modern else request.headers.get(LEGACY_SESSION_FIELD)
        if legacy_id is not None:
            # The gateway minted it: its own table is the authority, before any other carrier.
            key: SessionKey = (principal, "legacy:" + legacy_id.strip())
            self.metrics.routing.labels("legacy").inc()
            found = self.pool.lookup(key)
            if isinstance(found, ChildProcess):
                return found, key
            if isinstance(found, Tombstone):
                raise session_lost(found.description)
            raise SessionNotFound()
        route = route_for(
            method=request.rpc_method or "POST",
            meta=request.meta,
            headers=request.headers,
            protocol_version=request.protocol_version,
            policy=self.config.routing,
        )
        if route.key is None and not modern:
            return 0  # a legacy request without Mcp-Session-Id
        self.metrics.routing.labels(route.decision).inc()
        # Keyless 2026-07-28 requests (lists, discovery) share one process per principal.
        session_key = route.key if route.key is not None else _KEYLESS
        key = (principal, session_key)
        found = self.pool.lookup(key)
        if isinstance(found, ChildProcess):
            return found, key
        if isinstance(found, Tombstone):
            raise session_lost(found.description)
        child = await self.pool.bind(key, "modern" if modern else "legacy", quota)
        return child, key

    async def _relay_request(
        self,
        child: ChildProcess,
        request: Incoming,
        send: Send,
        minted: str | None,
        *,
        shared: bool = False,
    ) -> int:
        message = request.rpc
        if shared:
            # Many callers' keyless requests share this process's one stdio connection, so the
            # connection is not one client: tell an mcp-sessions server not to make it a
            # session (carrier 5), or every keyless caller would share one state (issue #11).
            # Other servers ignore an unknown _meta key (spec §5.0 item 5).
            message = with_meta(message, {META_SHARED_CONNECTION: True})
        request_id = message.get("id")
        try:
            gateway_id, pending = await child.request(message)
        except ProcessExited as exc:
            return await send_error(send, UpstreamFailed(exc.description), request_id)
        except ParseError as error:
            return await send_error(send, error, request_id)
        session_header = [(LEGACY_SESSION_FIELD_BYTES, minted.encode())] if minted else []
        timeout = self.config.upstream_timeout
        stream_started = False
        sse = request.accepts_sse()
        watcher = asyncio.ensure_future(wait_disconnect(request.receive))
        try:
            while True:
                getter = asyncio.ensure_future(pending.queue.get())
                done, _ = await asyncio.wait(
                    {getter, watcher}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                if getter not in done:
                    getter.cancel()
                    reason = "client disconnected" if watcher in done else "gateway timeout"
                    await child.cancel(gateway_id, reason)
                    if watcher in done:
                        return 499  # nobody to answer: the client is gone
                    failure = UpstreamFailed(
                        f"The server process sent no response within {timeout:g} s "
                        "(--upstream-timeout); the request was cancelled."
                    )
                    if stream_started:
                        await end_stream(send, failure, request_id)
                        return 200
                    return await send_error(send, failure, request_id, status=504)
                item = getter.result()
                if isinstance(item, ProcessExited):
                    failure = UpstreamFailed(
                        f"{item.description}, while handling this request; the request may "
                        "or may not have been applied, and the session is lost."
                    )
                    if stream_started:
                        await end_stream(send, failure, request_id)
                        return 200
                    return await send_error(send, failure, request_id)
                final = "method" not in item
                if final and not stream_started:
                    await send_json(send, 200, item, extra_headers=session_header)
                    return 200
                if not final and not sse:
                    continue  # the client takes JSON only: it gets the response alone
                if not stream_started:
                    await send(
                        {
                            "type": "http.response.start",
                            "status": 200,
                            "headers": [
                                (CONTENT_TYPE, EVENT_STREAM_MEDIA_TYPE),
                                (b"cache-control", b"no-cache, no-transform"),
                                (b"x-accel-buffering", b"no"),
                                *session_header,
                            ],
                        }
                    )
                    stream_started = True
                event = sse_event(item)
                await send({"type": "http.response.body", "body": event, "more_body": True})
                if final:
                    await send({"type": "http.response.body", "body": b""})
                    return 200
        finally:
            watcher.cancel()
            child.forget(gateway_id)

    async def _delete(self, request: Incoming, send: Send) -> int:
        principal = await self.trust.principal(request)
        if not isinstance(principal, str):
            return await refuse(send, principal)
        legacy_id = request.headers.get(LEGACY_SESSION_FIELD)
        client_id = route_from_headers(request.headers)
        keys = []
        if legacy_id:
            keys.append((principal, "legacy:" + legacy_id.strip()))
        if client_id is not None and client_id.key is not None:
            keys.append((principal, client_id.key))
        for key in keys:
            if await self.pool.release(key, "ended by DELETE"):
                await send_empty(send, 204)
                return 204
            self.pool.tombstones.pop(key, None)
        return await send_error(send, SessionNotFound())
