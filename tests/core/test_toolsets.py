"""The toolset rules (core/toolsets.py, issue #18): surfaces, collisions, caps, names, and
what counts as asking for scoped lists."""

from __future__ import annotations

from typing import Any

import pytest

from mcp_sessions.core.names import (
    EXTENSION_ID,
    MAX_DECLARED_TOOLSETS,
    MAX_ENABLED_TOOLSETS,
    STATE_TOOLSETS,
)
from mcp_sessions.core.toolsets import (
    Catalog,
    Toolset,
    ToolsetRefused,
    scoped_lists_requested,
)


def catalog() -> Catalog:
    found = Catalog()
    found.declare(Toolset("billing", tools=frozenset({"refund", "lookup"})))
    found.declare(
        Toolset(
            "crm",
            tools=frozenset({"add_note", "lookup"}),  # `lookup` is in both sets
            prompts=frozenset({"greet"}),
            resources=frozenset({"crm://customers"}),
            enabled_by="call connect(service='crm')",
        )
    )
    return found


def test_members_outside_every_set_are_always_visible() -> None:
    surface = catalog().surface(())
    assert surface.visible("tools", "count") and surface.visible("prompts", "other")
    assert not surface.visible("tools", "refund") and not surface.visible("tools", "lookup")
    assert not surface.visible("prompts", "greet")
    assert not surface.visible("resources", "crm://customers")


def test_a_member_of_two_sets_is_visible_when_either_is_enabled() -> None:
    rules = catalog()
    assert rules.surface(("billing",)).visible("tools", "lookup")
    assert rules.surface(("crm",)).visible("tools", "lookup")
    assert rules.refusal("lookup", ("crm",)) is None
    refused = rules.refusal("lookup", ())
    assert refused is not None and "'billing'" in refused and "'crm'" in refused
    assert "connect(service='crm')" in refused


def test_filter_keeps_what_the_session_sees_in_list_order() -> None:
    surface = catalog().surface(("billing",))
    items: list[Any] = [
        {"name": "add_note"},
        {"name": "refund"},
        {"name": "count"},
        {"title": "nameless"},
        "not an object",
    ]
    assert surface.filter("tools", items) == [
        {"name": "refund"},
        {"name": "count"},
        {"title": "nameless"},
        "not an object",
    ]
    resources = [{"uri": "crm://customers", "name": "customers"}, {"uri": "static://x"}]
    assert surface.filter("resources", resources) == [{"uri": "static://x"}]


def test_changed_lists_names_only_the_lists_that_differ() -> None:
    rules = catalog()
    assert rules.changed_lists((), ("billing",)) == ("tools/list",)
    assert rules.changed_lists((), ("crm",)) == ("tools/list", "prompts/list", "resources/list")
    # `lookup` stays visible through crm: disabling billing still changes `refund`.
    assert rules.changed_lists(("billing", "crm"), ("crm",)) == ("tools/list",)
    assert rules.changed_lists(("billing",), ("billing",)) == ()


def test_enabling_an_unknown_set_is_refused_and_names_the_declared_ones() -> None:
    with pytest.raises(ToolsetRefused, match=r"unknown toolset 'payroll'.*'billing', 'crm'"):
        catalog().changed((), ["billing", "payroll"], enable=True)


@pytest.mark.parametrize("name", ["", "a" * 65, "-x", "white space", "x/y", 7, None, "é"])
def test_a_malformed_set_name_is_refused(name: Any) -> None:
    with pytest.raises(ToolsetRefused, match="a toolset name is"):
        catalog().changed((), [name], enable=True)
    with pytest.raises(ToolsetRefused):
        Catalog().declare(Toolset(name))


def test_enabled_sets_are_capped() -> None:
    rules = Catalog(max_enabled=3)
    for index in range(5):
        rules.declare(Toolset(f"set{index}", tools=frozenset({f"tool{index}"})))
    enabled = rules.changed((), ["set0", "set1", "set2"], enable=True)
    assert enabled == ("set0", "set1", "set2")
    with pytest.raises(ToolsetRefused, match="at most 3 toolsets enabled"):
        rules.changed(enabled, ["set3"], enable=True)
    # Enabling what is already enabled adds nothing, so it is never over the cap.
    assert rules.changed(enabled, ["set1"], enable=True) == enabled
    assert rules.changed(enabled, ["set1", "set1"], enable=False) == ("set0", "set2")
    assert Catalog().max_enabled == MAX_ENABLED_TOOLSETS


def test_declarations_are_capped_and_unique() -> None:
    rules = Catalog()
    for index in range(MAX_DECLARED_TOOLSETS):
        rules.declare(Toolset(f"s{index}"))
    with pytest.raises(ToolsetRefused, match=f"at most {MAX_DECLARED_TOOLSETS}"):
        rules.declare(Toolset("one-more"))
    with pytest.raises(ToolsetRefused, match="declared twice"):
        rules.declare(Toolset("s0"))
    with pytest.raises(ToolsetRefused, match="non-empty strings"):
        Catalog().declare(Toolset("x", tools=frozenset({""})))


def test_the_state_key_counts_only_declared_sets_once() -> None:
    rules = catalog()
    assert rules.enabled_in({STATE_TOOLSETS: ["crm", "gone", "crm", 3, None]}) == ("crm",)
    for garbage in ("crm", {"crm": True}, 1, None):
        assert rules.enabled_in({STATE_TOOLSETS: garbage}) == ()
    assert rules.enabled_in({}) == ()


@pytest.mark.parametrize(
    ("capabilities", "asked"),
    [
        ({"extensions": {EXTENSION_ID: {"scopedLists": True}}}, True),
        ({"extensions": {EXTENSION_ID: {"scopedLists": False}}}, False),
        ({"extensions": {EXTENSION_ID: {"scopedLists": "true"}}}, False),
        ({"extensions": {EXTENSION_ID: {"scopedLists": 1}}}, False),
        ({"extensions": {EXTENSION_ID: {"scopedLists": {"x": True}}}}, False),
        ({"extensions": {EXTENSION_ID: {}}}, False),
        ({"extensions": {EXTENSION_ID: True}}, False),
        ({"extensions": {"other/ext": {"scopedLists": True}}}, False),
        ({"extensions": ["dev.mcpsessions/sessions"]}, False),
        ({}, False),
        (None, False),
        ("scopedLists", False),
    ],
)
def test_only_a_literal_true_asks_for_scoped_lists(capabilities: Any, asked: bool) -> None:
    assert scoped_lists_requested(capabilities) is asked
