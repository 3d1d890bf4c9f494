"""A call that mints handles lists them in its result ``_meta`` (issue #11), so that a gateway
can pin each handle to the replica that holds it. Only minting calls carry the key."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from mcp_sessions.core.names import META_MINTED_HANDLES

from .helpers import BOTH_FRAMEWORKS, Target, sid, value

pytestmark = [pytest.mark.anyio, BOTH_FRAMEWORKS]

MakeTarget = Callable[..., Target]


def minted(result: Any) -> Any:
    return (result.meta or {}).get(META_MINTED_HANDLES)


@pytest.mark.parametrize("transport", ["inproc", "http"])
async def test_minting_calls_list_their_handles_in_result_meta(
    make_target: MakeTarget, transport: str
) -> None:
    target = make_target(transport)
    async with target.client("modern") as client:
        made = await client.call_tool("new_note", {"text": "draft"})
        note = value(made)
        assert minted(made) == [{"handle": note, "kind": "note"}]
        # Using a handle mints nothing.
        used = await client.call_tool("edit_note", {"note": note, "text": "final"})
        assert value(used)["text"] == "final"
        assert minted(used) is None

        # The session_start fallback's session handle counts too, with kind "session".
        started = await client.call_tool("session_start", {})
        handle = value(started)
        assert minted(started) == [{"handle": handle, "kind": "session"}]
        counted = await client.call_tool("count", {"session": handle})
        assert value(counted)["count"] == 1 and minted(counted) is None
        # A handle minted inside a session lists it beside the session's own _meta keys.
        in_session = await client.call_tool("new_note", {"text": "x"}, meta=sid(handle))
        assert minted(in_session) == [{"handle": value(in_session), "kind": "note"}]


async def test_a_request_meta_minted_handles_key_is_ignored(make_target: MakeTarget) -> None:
    """The key is a result key: in a request it is tolerated (not a typo error) and has no
    effect, so a client cannot make a call claim handles it did not mint."""
    target = make_target("http")
    forged = {META_MINTED_HANDLES: [{"handle": "note-" + "0" * 32, "kind": "note"}]}
    async with target.client("modern") as client:
        reply = await client.call_tool("count", {}, meta={**sid("forged-meta-0000001"), **forged})
        assert value(reply)["count"] == 1
        assert minted(reply) is None
