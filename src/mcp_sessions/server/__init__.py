"""The server side: sessions for an ``MCPServer`` (DESIGN §2-§5)."""

from __future__ import annotations

from ..core.limits import Limits
from ..core.websocket import WebSocketLimits
from ..serving import HTTPLimits, serve, uvicorn_config
from .engine import SessionEngine, SessionsConfig
from .extension import (
    CurrentSession,
    OptionalSession,
    Sessions,
    current_session,
    optional_session,
)
from .handles import HandleError, HandleKind
from .principal import current_principal
from .session import Session, ToolsetError

__all__ = [
    "CurrentSession",
    "HTTPLimits",
    "HandleError",
    "HandleKind",
    "Limits",
    "OptionalSession",
    "Session",
    "SessionEngine",
    "Sessions",
    "SessionsConfig",
    "ToolsetError",
    "WebSocketLimits",
    "current_principal",
    "current_session",
    "optional_session",
    "serve",
    "uvicorn_config",
]
