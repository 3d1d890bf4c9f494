"""The client of a legacy session, as its ``initialize`` described it, on any replica (issue
#15 item 3).

A replica that does not hold a legacy session's connection serves it through the SDK's
stateless manager, which builds a fresh connection per request knowing nothing of the
client: ``ctx.session.client_params`` is ``None`` and every ``check_client_capability`` is
false, so a tool that asks "can this client sample / elicit / list roots?" would get another
answer than on the replica that saw ``initialize``. The legacy gate's record keeps the
client's ``protocolVersion``, ``clientInfo`` and ``capabilities`` (bounded by
``Limits.max_initialize_bytes``), and :func:`restore_client` puts them on that connection
before the handler runs. What cannot be restored is the channel back to the client: a
server-to-client *request* still needs the replica that holds the connection (spec
2025-11-25: a request goes out on a stream of the session), so ``sampling/createMessage`` on
such a replica fails as it did before (``NoBackChannelError``), but the tool can now tell in
advance.
"""

from __future__ import annotations

import logging
from typing import Any

from mcp_types import InitializeRequestParams
from pydantic import ValidationError

from ..core.records import Record

logger = logging.getLogger("mcp_sessions.server")


def restore_client(ctx: Any, record: Record | None) -> None:
    """Give the request's connection the client described by ``record`` (a legacy session's),
    if that connection has none of its own (the stateless path).

    ``ctx.session`` exposes no public setter for it in ``mcp`` 2.3, hence the guarded private
    read of its connection (as in extension.py's carrier 5); absent, nothing changes.
    """
    if record is None:
        return
    connection = getattr(getattr(ctx, "session", None), "_connection", None)
    if connection is None or getattr(connection, "client_params", None) is not None:
        return
    attributes = record.attributes
    if not isinstance(attributes.get("clientInfo"), dict):
        return
    try:
        params = InitializeRequestParams.model_validate(
            {
                "protocolVersion": attributes.get("protocolVersion") or "",
                "clientInfo": attributes["clientInfo"],
                "capabilities": attributes.get("capabilities") or {},
            }
        )
    except ValidationError:
        # Stored as the client sent it, before the SDK answered; what the SDK would not take
        # is left out rather than guessed at.
        logger.debug("legacy session %s: stored initialize data not restorable", record.id)
        return
    connection.client_params = params
