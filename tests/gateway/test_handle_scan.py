"""The gateway's reading of minted handles (issue #11): what a response lists, found however
the upstream's bytes are split into chunks, within bounds; and which values of a request are
looked up. Pure functions, so every split point is tried."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from mcp_sessions.core.names import META_MINTED_HANDLES
from mcp_sessions.gateway.handles import (
    MAX_HANDLES,
    MAX_SCAN_BYTES,
    ResponseScanner,
    minted_in,
    minted_in_json,
    request_handles,
)

VM = "vm-" + "a" * 32
SESSION = "session-" + "b" * 32


def result(*handles: object, key: str = META_MINTED_HANDLES) -> dict[str, object]:
    return {
        "jsonrpc": "2.0",
        "id": 1,
        "result": {"content": [], "_meta": {key: [{"handle": h, "kind": "x"} for h in handles]}},
    }


def sse(*messages: object, event: str | None = None, newline: str = "\n") -> bytes:
    out = ""
    for message in messages:
        if event is not None:
            out += f"event: {event}{newline}"
        out += f"data: {json.dumps(message)}{newline}{newline}"
    return out.encode()


def scan(chunks: list[bytes], *, event_stream: bool) -> list[str]:
    scanner = ResponseScanner(event_stream)
    found: list[str] = []
    for chunk in chunks:
        found += scanner.feed(chunk)
    return found + scanner.finish()


def test_minted_in_reads_results_only() -> None:
    assert minted_in(result(VM, SESSION)) == [VM, SESSION]
    assert minted_in([result(VM), result(SESSION)]) == [VM, SESSION]  # a batch
    # Errors, requests, other keys, malformed entries and values: nothing.
    assert minted_in({"jsonrpc": "2.0", "id": 1, "error": {"code": 1, "message": VM}}) == []
    forged_request = {"method": "tools/call", "params": {"_meta": result(VM)["result"]}}
    assert minted_in(forged_request) == []
    assert minted_in(result(VM, key="dev.mcpsessions/other")) == []
    assert minted_in(result("vm-short", 7, None, "x" * 300, "has space-" + "a" * 32)) == []
    assert minted_in({"result": {"_meta": {META_MINTED_HANDLES: "vm-" + "a" * 32}}}) == []
    many = [f"vm-{i:032x}" for i in range(MAX_HANDLES + 5)]
    assert minted_in(result(*many)) == many[:MAX_HANDLES]


def test_minted_in_json_is_bounded_and_tolerant() -> None:
    assert minted_in_json(json.dumps(result(VM)).encode()) == [VM]
    assert minted_in_json(b'{"not json ' + META_MINTED_HANDLES.encode()) == []
    padded = result(VM)
    padded["result"]["content"] = [{"type": "text", "text": "x" * MAX_SCAN_BYTES}]  # type: ignore[index]
    assert minted_in_json(json.dumps(padded).encode()) == []


@given(st.data())
def test_event_streams_are_read_across_any_chunking(data: st.DataObject) -> None:
    progress = {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progress": 1}}
    newline = data.draw(st.sampled_from(["\n", "\r\n"]))
    body = sse(progress, newline=newline) + sse(result(VM), newline=newline)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(body)), max_size=6)))
    chunks = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    assert scan(chunks, event_stream=True) == [VM]


def test_an_event_is_reported_by_the_chunk_that_completes_it() -> None:
    """So the gateway can pin before it forwards that chunk."""
    body = sse(result(VM))
    scanner = ResponseScanner(event_stream=True)
    assert scanner.feed(body[:-1]) == []
    assert scanner.feed(body[-1:]) == [VM]


def test_only_message_events_count() -> None:
    assert scan([sse(result(VM), event="other")], event_stream=True) == []
    assert scan([sse(result(VM), event="message")], event_stream=True) == [VM]


def test_an_oversized_event_is_skipped_and_scanning_resumes_after_it() -> None:
    one_event = sse({"params": {"data": "z" * (MAX_SCAN_BYTES + 10)}})
    # Fed in pieces: the scanner stops keeping it past the bound, and picks up after it.
    chunks = [one_event[i : i + 8192] for i in range(0, len(one_event), 8192)]
    assert scan([*chunks, sse(result(VM))], event_stream=True) == [VM]
    # Its end and the next event in one chunk.
    assert scan([*chunks[:-1], chunks[-1] + sse(result(VM))], event_stream=True) == [VM]
    # A minted-handles result over the bound is itself skipped, not parsed.
    padded = result(VM)
    padded["pad"] = "p" * MAX_SCAN_BYTES
    big = sse(padded)
    assert scan([big[i : i + 65536] for i in range(0, len(big), 65536)], event_stream=True) == []


def test_a_streamed_json_body_is_read_at_its_end_within_the_bound() -> None:
    body = json.dumps(result(VM)).encode()
    assert scan([body[:10], body[10:]], event_stream=False) == [VM]
    big = json.dumps({**result(VM), "pad": "p" * MAX_SCAN_BYTES}).encode()
    assert scan([big[:1000], big[1000:]], event_stream=False) == []


def test_request_handles_are_tool_arguments_and_param_headers() -> None:
    rpc = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "t", "arguments": {"vm": VM, "gb": 4, "note": "plain text"}},
    }
    headers = [(b"mcp-param-session", SESSION.encode()), (b"mcp-param-vm", VM.encode())]
    assert request_handles(rpc, headers) == [VM, SESSION]
    # Only tools/call arguments; never _meta (a forged minted-handles key included).
    other = {"method": "resources/read", "params": {"arguments": {"vm": VM}}}
    assert request_handles(other, []) == []
    forged = {"method": "tools/call", "params": {"arguments": {}, "_meta": result(VM)["result"]}}
    assert request_handles(forged, [(b"mcp-client-session-id", VM.encode())]) == []
