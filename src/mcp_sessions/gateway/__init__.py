"""The session-aware gateway (DESIGN §8): ``mcp-sessions gateway``.

Layout, one concept per module:

* :mod:`.routing` — the session key of a request and rendezvous hashing (pure);
* :mod:`.http1` — the HTTP/1.1 hop to upstreams (keep-alive pools, streamed bodies);
* :mod:`.upstreams` — upstream addresses, load and health checks;
* :mod:`.pins` — where each session and handle lives, in the shared store;
* :mod:`.handles` — which handles a result minted, and which a request carries;
* :mod:`.proxy` — the HTTP backend, and :mod:`.forward` — its request's way to an upstream;
* :mod:`.spawn` — the process-per-session backend (:mod:`.spawn.child`, :mod:`.spawn.pool`,
  :mod:`.spawn.backend`);
* :mod:`.asgi` — the incoming request both backends read (the answers, plain and streamed,
  are :mod:`mcp_sessions.asgi`'s, shared with the server);
* :mod:`.app` — the ASGI front; :mod:`.metrics`, :mod:`.status` (the ``/status`` page),
  :mod:`.emit` (nginx/HAProxy/Envoy configurations), :mod:`.cli`.

Importing this package is cheap: the command line loads the rest when it runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import Gateway
    from .config import GatewayConfig, SpawnSettings

__all__ = ["Gateway", "GatewayConfig", "SpawnSettings"]


def __getattr__(name: str) -> Any:
    if name == "Gateway":
        from .app import Gateway

        return Gateway
    if name in ("GatewayConfig", "SpawnSettings"):
        from . import config

        return getattr(config, name)
    raise AttributeError(name)
