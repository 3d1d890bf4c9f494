"""The client: an ``mcp.Client`` whose requests carry a session (DESIGN §7).

:class:`SessionClient` is an ``mcp.Client`` (a subclass, same constructor plus a few keyword
arguments), so an application changes one import line. It works out the jar's scope (which
server, as whom) and the session to start with, wraps the SDK transport in a
:class:`~.transport.SessionTransport`, and raises the typed errors of :mod:`.errors` from the
SDK's verbs.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Concatenate, ParamSpec, Self, TypeVar

import httpx2
from mcp.client import Client, ClientExtension, advertise
from mcp.client.stdio import StdioServerParameters
from mcp.server import Server
from mcp.server.mcpserver import MCPServer
from mcp.shared.exceptions import MCPError

from ..core.ids import new_session_id
from ..core.names import EXTENSION_ID
from ..core.websocket import is_websocket_url
from .errors import translate_error
from .identity import (
    NO_CREDENTIALS,
    local_server_key,
    principal_for_authorization,
    server_key_for_command,
    server_key_for_url,
)
from .jar import DEFAULT_SLOT, JarScope, StateJar
from .policy import (
    AutoSession,
    CreateSession,
    NewSession,
    ResumeSession,
    SessionPolicy,
    normalize_policy,
)
from .sessions import ClientSessions
from .tracker import SessionTracker
from .transport import SessionTransport, inner_transport

P = ParamSpec("P")
R = TypeVar("R")


def _typed_errors(
    method: Callable[Concatenate[Client, P], Coroutine[Any, Any, R]],
) -> Callable[Concatenate[Client, P], Coroutine[Any, Any, R]]:
    """The SDK verb, raising the typed session exceptions instead of plain ``MCPError``."""

    async def verb(self: Client, /, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await method(self, *args, **kwargs)
        except MCPError as error:
            typed = translate_error(error)
            if typed is error:
                raise
            raise typed from error

    functools.update_wrapper(verb, method)  # name, docs, and the signature via __wrapped__
    verb.__qualname__ = f"SessionClient.{method.__name__}"
    return verb


@dataclass(kw_only=True, eq=False)
class SessionClient(Client):
    """An ``mcp.Client`` whose requests carry a session (DESIGN §7).

    Same constructor as ``mcp.Client`` plus the keyword arguments below; ``client.sessions``
    is the session helper. ::

        from mcp_sessions.client import Client    # was: from mcp import Client

        async with Client("http://127.0.0.1:8000/mcp", jar="sessions.json") as client:
            await client.call_tool("add_item", {"item": "apple"})
            print(client.sessions.id)
    """

    session_policy: SessionPolicy = "auto"
    """``"auto"`` (default), ``"new"``, ``"create"``, ``ResumeSession(id)``,
    ``CreateSession(ttl_seconds=…)``: see :mod:`mcp_sessions.client.policy`."""

    jar: StateJar | str | os.PathLike[str] | None = None
    """Where session ids and state tokens are kept: a :class:`StateJar`, a file path (0600,
    so that a restarted client resumes its session), or ``None`` for memory only."""

    principal: str | None = None
    """Who the client speaks as, for the jar's scope. Default: a digest of a static
    ``Authorization`` header of ``http_client``, else ``anonymous``. Required with an
    ``httpx2.Auth`` flow (OAuth), whose tokens change."""

    server_key: str | None = None
    """Overrides the server half of the jar's scope (endpoint URL or stdio command line)."""

    http_client: httpx2.AsyncClient | None = None
    """For a URL target: the ``httpx2.AsyncClient`` to use (headers, auth, TLS). The client
    adds two event hooks while connected and leaves the client open."""

    renew_legacy_sessions: bool = False
    """2025-11-25 HTTP: after a 404 for our ``Mcp-Session-Id``, re-initialize and resend the
    request (it never ran). Off: the id is dropped and :class:`LegacySessionLost` raised."""

    session_slot: str = DEFAULT_SLOT
    """Names the session in the jar, for clients that keep several per server."""

    sessions: ClientSessions = field(init=False, repr=False)
    target: Any = field(init=False, repr=False)
    """What was passed as ``server`` (``server`` itself becomes the session transport)."""

    def __post_init__(self) -> None:
        target = self.server
        if isinstance(target, SessionTransport):
            raise TypeError("pass the server itself, not a SessionTransport, to SessionClient")
        self.target = target
        jar = self.jar if isinstance(self.jar, StateJar) else StateJar(self.jar)
        self.jar = jar
        scope = JarScope(
            self.server_key or _server_key(target), self.principal or self._default_principal()
        )
        policy = normalize_policy(self.session_policy)
        session_id, resumed = _initial_session(policy, jar, scope, self.session_slot)
        tracker = SessionTracker(jar, scope, session_id, slot=self.session_slot)

        http_client = None
        owns = False
        if isinstance(target, str) and not is_websocket_url(target):
            http_client = self.http_client
            if http_client is None:
                # The SDK's own defaults for MCP over HTTP: 30 s, and 300 s to read a stream.
                http_client = httpx2.AsyncClient(timeout=httpx2.Timeout(30.0, read=300.0))
                owns = True
        elif self.http_client is not None:
            raise ValueError("http_client= applies to a URL target only")
        transport = SessionTransport(
            inner_transport(target, http_client, raise_exceptions=self.raise_exceptions),
            tracker,
            http_client=http_client,
            owns_http_client=owns,
            renew_legacy_sessions=self.renew_legacy_sessions,
        )
        self.server = transport
        self.extensions = _with_advertisement(self.extensions)
        if isinstance(target, str) and self.cache is not None and self.cache.target_id is None:
            # What the SDK derives from a URL target; it cannot see the URL through our
            # transport (spec-digest §5.0 item 7: cache per origin).
            self.cache = dataclasses.replace(self.cache, target_id=scope.server)
        super().__post_init__()
        self.sessions = ClientSessions(self, tracker, transport, policy, resumed=resumed)

    def _default_principal(self) -> str:
        client = self.http_client
        if client is None:
            websocket = _websocket_transport(self.server)
            if websocket is not None:  # its headers are fixed for its life
                authorization = {k.lower(): v for k, v in websocket.headers.items()}
                return principal_for_authorization(authorization.get("authorization"))
            return NO_CREDENTIALS
        if client.auth is not None:
            raise ValueError(
                "http_client has an auth flow whose credentials can change: pass principal= "
                "(e.g. the user's id) so that the state jar never mixes two users' sessions"
            )
        return principal_for_authorization(client.headers.get("authorization"))

    async def __aenter__(self) -> Self:
        self.sessions._tracker.switch(self.sessions._tracker.current)  # remember it in the jar
        try:
            await super().__aenter__()
        except MCPError as error:
            raise translate_error(error) from error
        try:
            await self.sessions._start()
        except BaseException as exc:
            await super().__aexit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    call_tool = _typed_errors(Client.call_tool)
    get_prompt = _typed_errors(Client.get_prompt)
    read_resource = _typed_errors(Client.read_resource)
    list_tools = _typed_errors(Client.list_tools)
    list_prompts = _typed_errors(Client.list_prompts)
    list_resources = _typed_errors(Client.list_resources)
    list_resource_templates = _typed_errors(Client.list_resource_templates)
    complete = _typed_errors(Client.complete)


def _initial_session(
    policy: AutoSession | NewSession | ResumeSession | CreateSession,
    jar: StateJar,
    scope: JarScope,
    slot: str,
) -> tuple[str, bool]:
    """The id the client starts with (it exists before the first request), and whether it
    continues an existing session."""
    if isinstance(policy, ResumeSession):
        return policy.session_id, True
    if isinstance(policy, AutoSession):
        remembered = jar.current(scope, slot)
        if remembered is not None:
            found = jar.entry(scope, remembered)
            if found is None or not found.expired():
                return remembered, True
            jar.forget(scope, remembered)
    return new_session_id(), False


def _websocket_transport(target: Any) -> Any:
    """``target`` if it is this library's WebSocket transport (whose URL names the server),
    else ``None``; the module needs the optional ``websockets``, so it is imported only here."""
    try:
        from .websocket import WebSocketTransport
    except ImportError:
        return None
    return target if isinstance(target, WebSocketTransport) else None


def _server_key(target: Any) -> str:
    if isinstance(target, str):
        return server_key_for_url(target)
    websocket = _websocket_transport(target)
    if websocket is not None:
        return server_key_for_url(websocket.url)
    if isinstance(target, StdioServerParameters):
        return server_key_for_command(target.command, target.args, target.cwd)
    if isinstance(target, MCPServer | Server):
        return local_server_key("inprocess", target, getattr(target, "name", None))
    return local_server_key("transport", target, type(target).__qualname__)


def _with_advertisement(
    extensions: Any,
) -> list[ClientExtension]:
    """The caller's client extensions plus ours, so the client declares what it sends
    (spec-digest §5.3 item 29)."""
    current = list(extensions or [])
    if any(getattr(ext, "identifier", None) == EXTENSION_ID for ext in current):
        return current
    return [*current, advertise(EXTENSION_ID)]
