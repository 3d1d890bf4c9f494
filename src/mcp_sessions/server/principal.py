"""Who is calling: the request's principal, from the SDK's auth context (DESIGN §2).

Every server module that binds a record to its owner asks here, so the rule (python-sdk's
own ownership triple; no token means :data:`~mcp_sessions.core.principal.ANONYMOUS`) is
written once.
"""

from __future__ import annotations

from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import principal_components

from ..core.principal import ANONYMOUS, Principal


def current_principal() -> Principal:
    """The caller, from the SDK's auth context (python-sdk's own ownership triple)."""
    token = get_access_token()
    if token is None:
        return ANONYMOUS
    client_id, issuer, subject = principal_components(token)
    return Principal(issuer=issuer, subject=subject, client_id=client_id)
