"""The demo's pieces that both frameworks' demos need: bearer tokens from a file
(:class:`StaticTokens`, principal binding for trying it out) and the tool decorator type.
A module of their own so that ``demo`` and ``demo_fastmcp`` import them without importing
each other."""

import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mcp.server.auth.provider import AccessToken


class StaticTokens:
    """A token verifier for trying principal binding: bearer token → subject, from a file."""

    def __init__(self, tokens: dict[str, str]) -> None:
        self._tokens = tokens

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> "StaticTokens":
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ValueError(
                f"cannot read auth tokens file {os.fspath(path)!r}: {exc.strerror}"
            ) from None
        except ValueError as exc:
            raise ValueError(f"auth tokens file {os.fspath(path)!r} is not JSON: {exc}") from None
        if not isinstance(data, dict) or not all(
            isinstance(k, str) and k and isinstance(v, str) and v for k, v in data.items()
        ):
            raise ValueError(
                f"auth tokens file {os.fspath(path)!r} must be a JSON object mapping bearer "
                'tokens to subjects, e.g. {"alice-token": "alice"}'
            )
        return cls(data)

    async def verify_token(self, token: str) -> AccessToken | None:
        subject = next(
            (
                s
                for t, s in self._tokens.items()
                if secrets.compare_digest(t.encode(), token.encode())
            ),
            None,
        )
        if subject is None:
            return None
        return AccessToken(token=token, client_id="demo", scopes=[], subject=subject)


#: A framework's tool decorator: ``MCPServer.tool()``, or FastMCP's via ``portable_tool``.
ToolDecorator = Callable[[Callable[..., Any]], Callable[..., Any]]
