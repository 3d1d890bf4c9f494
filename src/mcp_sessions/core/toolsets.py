"""Toolsets: which tools, prompts and resources a session can see and call (issue #18).

A server declares named sets of tools (and prompts, resources); a session enables some of
them. Its *surface* is everything outside every set, plus the members of its enabled sets. A
member of several sets is on the surface when any of them is enabled. Pure rules, no I/O:
the SDK adapter is ``server/toolsets.py``.

Why lists may differ per session only for clients that ask: the 2026-07-28 list results are
global and cacheable with a key that leaves ``_meta`` out (spec-digest §2.2, §2.5), so a plain
client or a shared cache must keep getting the one global list. A client that declares
:data:`~mcp_sessions.core.names.CAPABILITY_SCOPED_LISTS` gets its session's surface, marked
private and stale at once (spec-digest §5.4 item 47). At 2025-11-25, lists may vary per session,
and ``notifications/tools/list_changed`` reports the change (FastMCP does the same per session).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from .names import (
    CAPABILITY_SCOPED_LISTS,
    EXTENSION_ID,
    LIST_METHOD_PROMPTS,
    LIST_METHOD_RESOURCES,
    LIST_METHOD_TOOLS,
    MAX_DECLARED_TOOLSETS,
    MAX_ENABLED_TOOLSETS,
    STATE_TOOLSETS,
    TOOLSET_NAME_MAX_LENGTH,
)

Kind = Literal["tools", "prompts", "resources"]
KINDS: tuple[Kind, ...] = ("tools", "prompts", "resources")

#: The list method of each kind, and the field that names an item in its result.
LIST_METHODS: Mapping[Kind, str] = {
    "tools": LIST_METHOD_TOOLS,
    "prompts": LIST_METHOD_PROMPTS,
    "resources": LIST_METHOD_RESOURCES,
}
KIND_OF_METHOD: Mapping[str, Kind] = {method: kind for kind, method in LIST_METHODS.items()}
_ITEM_KEY: Mapping[Kind, str] = {"tools": "name", "prompts": "name", "resources": "uri"}

_NAME = re.compile(rf"^[A-Za-z0-9][A-Za-z0-9_.-]{{0,{TOOLSET_NAME_MAX_LENGTH - 1}}}$")


class ToolsetRefused(ValueError):
    """A toolset change that cannot be made; the message says why and what to do instead."""


def validate_toolset_name(name: object) -> str:
    """A toolset name: 1-64 characters of letters, digits, ``_``, ``.``, ``-``."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ToolsetRefused(
            f"a toolset name is 1-{TOOLSET_NAME_MAX_LENGTH} letters, digits, '_', '.' or '-' "
            f"(starting with a letter or digit), not {_preview(name)}"
        )
    return name


@dataclass(frozen=True)
class Toolset:
    """One named set of tools, prompts (by name) and resources (by URI)."""

    name: str
    tools: frozenset[str] = frozenset()
    prompts: frozenset[str] = frozenset()
    resources: frozenset[str] = frozenset()
    #: What the model should do to enable it, for the gate's hint (e.g.
    #: ``"call connect(service='billing')"``).
    enabled_by: str | None = None
    description: str | None = None

    def members(self, kind: Kind) -> frozenset[str]:
        found: frozenset[str] = getattr(self, kind)
        return found


@dataclass
class Catalog:
    """The toolsets a server declares, and the rules of what a session sees."""

    max_enabled: int = MAX_ENABLED_TOOLSETS
    _sets: dict[str, Toolset] = field(default_factory=dict)
    #: (kind, member) -> the names of the sets holding it, in declaration order.
    _owners: dict[tuple[Kind, str], tuple[str, ...]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self._sets)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._sets)

    def get(self, name: str) -> Toolset | None:
        return self._sets.get(name)

    def declare(self, toolset: Toolset) -> Toolset:
        """Add ``toolset``; raises :class:`ToolsetRefused` on a bad or duplicate name."""
        validate_toolset_name(toolset.name)
        if toolset.name in self._sets:
            raise ToolsetRefused(f"toolset {toolset.name!r} is declared twice")
        if len(self._sets) >= MAX_DECLARED_TOOLSETS:
            raise ToolsetRefused(f"a server declares at most {MAX_DECLARED_TOOLSETS} toolsets")
        for kind in KINDS:
            for member in toolset.members(kind):
                if not isinstance(member, str) or not member:
                    raise ToolsetRefused(
                        f"toolset {toolset.name!r}: {kind} are named by non-empty strings, "
                        f"not {_preview(member)}"
                    )
        self._sets[toolset.name] = toolset
        for kind in KINDS:
            for member in sorted(toolset.members(kind)):
                self._owners[(kind, member)] = (*self._owners.get((kind, member), ()), toolset.name)
        return toolset

    def sets_of(self, kind: Kind, member: str) -> tuple[str, ...]:
        """The sets holding ``member`` (empty: always available)."""
        return self._owners.get((kind, member), ())

    # -- a session's enabled sets --------------------------------------------------------

    def enabled_in(self, state: Mapping[str, Any]) -> tuple[str, ...]:
        """The declared sets enabled in a session's ``state``.

        Whatever else the key holds (a tool body may write the state) is read as nothing
        enabled, and names this server no longer declares are skipped.
        """
        stored = state.get(STATE_TOOLSETS)
        if not isinstance(stored, list):
            return ()
        return tuple(dict.fromkeys(n for n in stored if isinstance(n, str) and n in self._sets))

    def changed(
        self, enabled: Sequence[str], names: Iterable[object], *, enable: bool
    ) -> tuple[str, ...]:
        """The enabled sets after enabling (or disabling) ``names``.

        Refused whole, nothing changed (:class:`ToolsetRefused`): a name this server does not
        declare, or more than :attr:`max_enabled` sets enabled at once.
        """
        wanted = [validate_toolset_name(name) for name in names]
        unknown = [name for name in wanted if name not in self._sets]
        if unknown:
            raise ToolsetRefused(
                f"unknown toolset {unknown[0]!r}; this server declares "
                f"{', '.join(repr(n) for n in self._sets) or 'none'}"
            )
        if not enable:
            return tuple(name for name in enabled if name not in wanted)
        result = tuple(dict.fromkeys((*enabled, *wanted)))
        if len(result) > self.max_enabled:
            raise ToolsetRefused(
                f"a session may have at most {self.max_enabled} toolsets enabled; it has "
                f"{len(enabled)}, and enabling {len(result) - len(enabled)} more would pass "
                "that. Disable some first."
            )
        return result

    def surface(self, enabled: Sequence[str]) -> Surface:
        return Surface(self, tuple(name for name in enabled if name in self._sets))

    def changed_lists(self, before: Sequence[str], after: Sequence[str]) -> tuple[str, ...]:
        """The list methods whose result differs between the two surfaces."""
        toggled = set(before) ^ set(after)
        old, new = self.surface(before), self.surface(after)
        methods = []
        for kind in KINDS:
            members = {m for name in toggled for m in self._sets[name].members(kind)}
            if any(old.visible(kind, m) != new.visible(kind, m) for m in members):
                methods.append(LIST_METHODS[kind])
        return tuple(methods)

    # -- the gate ------------------------------------------------------------------------

    def hint(self, tool: str) -> str:
        """Which sets hold ``tool`` and how to enable them, e.g. ``toolset 'billing' (call
        connect(service='billing') to enable it)``."""
        sets = self.sets_of("tools", tool)
        hows = [(name, self._sets[name].enabled_by) for name in sets]
        if len(hows) == 1:
            name, how = hows[0]
            how = f"{how} to enable it" if how else "a tool of this server enables it"
            return f"toolset {name!r} ({how})"
        ways = "; ".join(f"{how or 'a tool of this server'} enables {name!r}" for name, how in hows)
        return f"toolsets {', '.join(repr(n) for n, _ in hows)} (any one will do: {ways})"

    def refusal(self, tool: str, enabled: Sequence[str]) -> str | None:
        """Why the session with ``enabled`` sets may not call ``tool`` (``None``: it may)."""
        sets = self.sets_of("tools", tool)
        if not sets or any(name in enabled for name in sets):
            return None
        return f"The tool {tool!r} is not enabled in this session. It is in {self.hint(tool)}."


@dataclass(frozen=True)
class Surface:
    """What one session sees: its enabled sets, and every member outside all sets."""

    catalog: Catalog = field(repr=False, compare=False)
    enabled: tuple[str, ...]

    def visible(self, kind: Kind, member: str) -> bool:
        sets = self.catalog.sets_of(kind, member)
        return not sets or any(name in self.enabled for name in sets)

    @property
    def toolsets(self) -> dict[str, Toolset]:
        """The enabled sets, by name."""
        found = {name: self.catalog.get(name) for name in self.enabled}
        return {name: toolset for name, toolset in found.items() if toolset is not None}

    def tools(self) -> dict[str, list[str]]:
        """The tools each enabled set adds, by set (sorted)."""
        return {name: sorted(toolset.tools) for name, toolset in self.toolsets.items()}

    def filter(self, kind: Kind, items: Iterable[Any]) -> list[Any]:
        """The items of a ``kind`` list result this session sees (items without a name, or
        not JSON objects, are kept: they are not ours to judge)."""
        key = _ITEM_KEY[kind]
        kept = []
        for item in items:
            name = item.get(key) if isinstance(item, Mapping) else None
            if not isinstance(name, str) or self.visible(kind, name):
                kept.append(item)
        return kept


def scoped_lists_requested(capabilities: object) -> bool:
    """Whether client capabilities ask for scoped lists: exactly the JSON ``true`` at
    ``extensions[EXTENSION_ID].scopedLists``. Any other value (a string, a number, an
    object) is no request, so a buggy client gets the global list every client gets."""
    if not isinstance(capabilities, Mapping):
        return False
    extensions = capabilities.get("extensions")
    if not isinstance(extensions, Mapping):
        return False
    settings = extensions.get(EXTENSION_ID)
    if not isinstance(settings, Mapping):
        return False
    return settings.get(CAPABILITY_SCOPED_LISTS) is True


def _preview(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
