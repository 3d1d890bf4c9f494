"""The routing core (pure): session keys in DESIGN §2 order, rendezvous hashing properties."""

from __future__ import annotations

import base64
import json
import uuid
from collections import Counter
from typing import Any

import pytest

from mcp_sessions.core.carriers import CarrierPolicy
from mcp_sessions.core.errors import HeaderMismatch, InvalidSessionId
from mcp_sessions.gateway import routing
from mcp_sessions.gateway.routing import RoutingPolicy, choose, rank, route_for

NODES = [f"http://10.0.0.{i}:8000/mcp" for i in range(1, 6)]
KEYS = [str(uuid.UUID(int=i * 7919 + 1)) for i in range(3000)]
SID = "0f8fad5b-d9cb-469f-a165-70867728950e"
OTHER = "7c9e6679-7425-40de-944b-e07fc1f90ae7"


def jwt(claims: dict[str, Any]) -> str:
    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none'})}.{part(claims)}.sig"


def decide(
    headers: dict[str, str] | None = None,
    meta: dict[str, Any] | None = None,
    version: str | None = "2026-07-28",
    policy: RoutingPolicy | None = None,
    method: str = "tools/call",
) -> routing.RouteKey:
    return route_for(
        method=method,
        meta=meta,
        headers=headers or {},
        protocol_version=version,
        policy=policy or RoutingPolicy(),
    )


# -- rendezvous hashing ---------------------------------------------------------------------


def test_choice_is_deterministic_and_the_first_of_the_ranking() -> None:
    for key in KEYS[:200]:
        assert choose(key, NODES) == choose(key, list(reversed(NODES))) == rank(key, NODES)[0]
    assert choose("any", []) is None


def test_keys_spread_evenly() -> None:
    counts = Counter(choose(key, NODES) for key in KEYS)
    assert set(counts) == set(NODES)
    for node in NODES:
        assert 0.15 < counts[node] / len(KEYS) < 0.25, counts


def test_removing_a_node_moves_only_its_keys_each_to_its_second_choice() -> None:
    before = {key: rank(key, NODES) for key in KEYS}
    gone = NODES[2]
    survivors = [n for n in NODES if n != gone]
    moved = 0
    for key, ranking in before.items():
        after = choose(key, survivors)
        if ranking[0] == gone:
            moved += 1
            assert after == ranking[1]
        else:
            assert after == ranking[0], "a key of a surviving node moved"
    assert moved > 0


def test_adding_a_node_takes_keys_only_onto_itself() -> None:
    added = "http://10.0.0.9:8000/mcp"
    moved = 0
    for key in KEYS:
        before, after = choose(key, NODES), choose(key, [*NODES, added])
        if before != after:
            moved += 1
            assert after == added
    assert 0.10 < moved / len(KEYS) < 0.25  # about 1/6


def test_the_separator_keeps_node_and_key_apart() -> None:
    assert routing.score("ab", "c") != routing.score("a", "bc")


def test_least_loaded_takes_the_fewest_and_rotates_among_equals() -> None:
    loads = [("a", 2), ("b", 0), ("c", 0)]
    assert {routing.least_loaded(loads, i) for i in range(4)} == {"b", "c"}
    assert routing.least_loaded([("a", 1), ("b", 3)], 7) == "a"
    assert routing.least_loaded([], 0) is None


# -- the key ---------------------------------------------------------------------------------


def test_client_header_decides_without_the_body() -> None:
    route = routing.route_from_headers({"mcp-client-session-id": SID})
    assert route == routing.RouteKey("client_header", SID, session=True)
    assert routing.route_from_headers({}) is None
    # Malformed: not routed on; the body (and the server) decide.
    assert routing.route_from_headers({"mcp-client-session-id": "short"}) is None


def test_every_session_carrier_routes_on_the_bare_id() -> None:
    """One session reaches one upstream whichever carrier brings its id on a request."""
    keys = {
        decide(meta={"dev.mcpsessions/sessionId": SID}).key,
        decide(meta={"clientSessionId": SID}).key,
        decide(meta={"openai/session": SID}).key,
        decide(headers={"x-amzn-bedrock-agentcore-runtime-session-id": SID}).key,
        decide(headers={"mcp-session-id": SID}, version="2025-11-25").key,
        routing.route_from_headers({"mcp-client-session-id": SID}).key,  # type: ignore[union-attr]
    }
    assert keys == {SID}


def test_carriers_apply_in_design_order() -> None:
    both = decide(
        meta={"dev.mcpsessions/sessionId": SID, "openai/session": OTHER},
        headers={"mcp-session-id": OTHER},
        version="2025-11-25",
    )
    assert (both.decision, both.key) == ("meta", SID)
    openai = decide(
        meta={"openai/session": SID},
        headers={"x-amzn-bedrock-agentcore-runtime-session-id": OTHER},
    )
    assert (openai.decision, openai.key) == ("openai", SID)
    bedrock = decide(
        headers={"x-amzn-bedrock-agentcore-runtime-session-id": SID, "mcp-session-id": OTHER},
        version="2025-11-25",
    )
    assert (bedrock.decision, bedrock.key) == ("bedrock", SID)
    legacy = decide(headers={"mcp-session-id": SID}, version="2025-11-25")
    assert (legacy.decision, legacy.key, legacy.legacy) == ("legacy", SID, True)


def test_legacy_header_is_ignored_on_modern_requests() -> None:
    # spec §5.1 item 10: a 2026-07-28 request's Mcp-Session-Id is ignored, never looked up.
    assert decide(headers={"mcp-session-id": SID}).decision == "least_loaded"


def test_aliases_can_be_switched_off() -> None:
    policy = RoutingPolicy(carriers=CarrierPolicy(sep2822=False, openai=False, bedrock=False))
    assert decide(meta={"clientSessionId": SID}, policy=policy).decision == "least_loaded"
    assert decide(meta={"openai/session": SID}, policy=policy).decision == "least_loaded"
    no_legacy = RoutingPolicy(carriers=CarrierPolicy(legacy=False))
    route = decide(headers={"mcp-session-id": SID}, version="2025-11-25", policy=no_legacy)
    assert route.decision == "least_loaded"


def test_param_header_then_principal_then_least_loaded() -> None:
    policy = RoutingPolicy(param_names=("Vm",))
    handle = "vm-" + "a" * 32
    token = jwt({"iss": "https://idp", "sub": "alice", "exp": 1})
    route = decide(
        headers={"mcp-param-vm": handle, "authorization": f"Bearer {token}"}, policy=policy
    )
    assert (route.decision, route.session) == ("param_header", False)
    assert handle in str(route.key)
    principal = decide(headers={"authorization": f"Bearer {token}"}, policy=policy)
    assert principal.decision == "principal"
    assert decide(policy=policy).decision == "least_loaded"
    assert (
        decide(
            headers={"authorization": f"Bearer {token}"}, policy=RoutingPolicy(principal=False)
        ).decision
        == "least_loaded"
    )


def test_principal_survives_a_token_refresh_and_separates_users() -> None:
    alice1 = jwt({"iss": "https://idp", "sub": "alice", "exp": 1, "client_id": "app"})
    alice2 = jwt({"iss": "https://idp", "sub": "alice", "exp": 2, "client_id": "app"})
    bob = jwt({"iss": "https://idp", "sub": "bob", "exp": 1, "client_id": "app"})
    key = routing.principal_key
    assert key({"authorization": f"Bearer {alice1}"}) == key({"authorization": f"Bearer {alice2}"})
    assert key({"authorization": f"Bearer {alice1}"}) != key({"authorization": f"Bearer {bob}"})
    # Opaque credentials route by a digest of themselves, never by their value.
    opaque = key({"authorization": "Bearer secret-token-1"})
    assert "secret-token-1" not in opaque
    assert opaque != key({"authorization": "Bearer secret-token-2"})
    assert key({}) == "anonymous"


def test_refusals_are_the_servers() -> None:
    with pytest.raises(HeaderMismatch):
        decide(headers={"mcp-client-session-id": OTHER}, meta={"dev.mcpsessions/sessionId": SID})
    with pytest.raises(InvalidSessionId):
        decide(meta={"dev.mcpsessions/sessionId": "too-short"})
    with pytest.raises(InvalidSessionId):
        decide(meta={"dev.mcpsessions/sessionid": SID})  # a typo of our own key


@pytest.mark.parametrize(
    "method", ["tools/list", "prompts/list", "resources/list", "resources/templates/list"]
)
def test_a_list_carrying_a_session_is_routed_like_a_call(method: str) -> None:
    """A session's scoped list (issue #18) must reach the upstream that holds the session."""
    meta = {"dev.mcpsessions/sessionId": SID}
    assert decide(method=method, meta=meta) == decide(method="tools/call", meta=meta)
    assert decide(method=method, meta=meta).key == SID
    legacy = decide(method=method, headers={"mcp-session-id": SID}, version="2025-11-25")
    assert legacy.key == SID and legacy.legacy
