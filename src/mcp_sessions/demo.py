"""The example server behind ``mcp-sessions demo``: the four use cases of the Transports WG
decision (spec-digest §4.3) — a counter, a shopping cart, progressive discovery and
multi-step VM provisioning — served to every kind of client by one set of tool bodies.
"""

# No `from __future__ import annotations`: the tools below are defined inside build_demo,
# and the SDK evaluates their annotations (such as `Annotated[str, VM.arg]`) where VM is local.

from collections.abc import Callable
from typing import Annotated, Any

from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import AnyHttpUrl

from .core.limits import Limits
from .core.records import JSONObject
from .core.sealing import KeyRing

# The bearer tokens and the tool decorator type live in demo_tokens so that demo_fastmcp
# needs nothing from this module (no import circle); re-exported here for callers.
from .demo_tokens import StaticTokens as StaticTokens
from .demo_tokens import ToolDecorator as ToolDecorator
from .server import CurrentSession, Sessions
from .server.engine import Lifecycle, StateMode
from .server.handles import HandleError, HandleKind

SERVICES: dict[str, list[str]] = {
    "billing": ["list_invoices", "refund"],
    "crm": ["find_customer", "add_note"],
    "search": ["query"],
}

# The services' sample data (the demo has no real billing system behind it).
INVOICES: dict[str, dict[str, Any]] = {
    "inv-1001": {"customer": "Ada Lovelace", "amount": 120.0, "currency": "EUR"},
    "inv-1002": {"customer": "Alan Turing", "amount": 75.5, "currency": "EUR"},
    "inv-1003": {"customer": "Grace Hopper", "amount": 310.0, "currency": "USD"},
}
CUSTOMERS = ("Ada Lovelace", "Alan Turing", "Grace Hopper", "Edsger Dijkstra")
DOCUMENTS = {
    "refunds": "Refunds are issued to the original payment method within 5 days.",
    "invoices": "Invoices are sent on the first day of each month.",
    "notes": "Customer notes are visible to every agent of the account.",
}

INSTRUCTIONS = (
    "A demo of mcp-sessions. count() keeps a per-session counter; add_item/checkout a "
    "cart; connect/actions show progressive discovery; init_vm returns a vm handle for "
    "set_ram, set_cpu and deploy_vm."
)


def static_token_auth(base_url: str) -> AuthSettings:
    """The SDK's auth settings for a server whose tokens are :class:`StaticTokens`."""
    return AuthSettings(
        issuer_url=AnyHttpUrl(base_url),
        resource_server_url=AnyHttpUrl(f"{base_url}/mcp"),
        # Static tokens name no resource (RFC 8707): the tokens file is the whole check.
        # Unset, the SDK warns on every start, and 3.0 would refuse every such token.
        validate_token_resource=False,
    )


def mcpserver_with_sessions(
    name: str,
    options: dict[str, Any],
    auth_tokens: StaticTokens | None,
    base_url: str,
    **server_options: Any,
) -> tuple[MCPServer, Sessions, ToolDecorator]:
    """An ``MCPServer`` named ``name`` with :class:`Sessions` (of ``options``) installed, the
    bearer tokens of ``auth_tokens`` if any, and its tool decorator (the demo's and the tests'
    servers are built so; ``demo_fastmcp.fastmcp_with_sessions`` is the FastMCP twin)."""
    sessions = Sessions(**options)
    mcp = MCPServer(
        name,
        extensions=[sessions],
        middleware=[sessions.middleware],
        token_verifier=auth_tokens,
        auth=None if auth_tokens is None else static_token_auth(base_url),
        **server_options,
    )
    return mcp, sessions, mcp.tool()


def build_demo(
    *,
    store: str | None = "memory://",
    state: StateMode = "server",
    lifecycle: Lifecycle = "implicit",
    keys: KeyRing | None = None,
    auth_tokens: StaticTokens | None = None,
    handle_fallback: bool = True,
    base_url: str = "http://127.0.0.1:8000",
    limits: Limits | None = None,
    framework: str = "mcp",
) -> tuple[Any, Any]:
    """The demo server and its ``Sessions``: an ``MCPServer`` and :class:`Sessions`, or with
    ``framework="fastmcp"`` a ``FastMCP`` server and ``mcp_sessions.fastmcp.Sessions`` (the
    ``fastmcp`` extra; ImportError without it). The same tools on both."""
    options: dict[str, Any] = dict(
        store=store,
        state=state,
        lifecycle=lifecycle,
        keys=keys,
        handle_fallback=handle_fallback,
        audience="mcp-sessions-demo",
        limits=limits,
    )
    build: Callable[..., tuple[Any, Any, ToolDecorator]] = mcpserver_with_sessions
    if framework == "fastmcp":
        from .demo_fastmcp import fastmcp_with_sessions as build
    mcp, sessions, tool = build(
        "mcp-sessions-demo", options, auth_tokens, base_url, instructions=INSTRUCTIONS
    )
    VM = sessions.handle_kind("vm", ttl=3600, header="Vm", created_by="init_vm")
    declare_demo_toolsets(sessions)
    add_demo_tools(tool, VM)
    return mcp, sessions


def declare_demo_toolsets(sessions: Any) -> None:
    """Each service of ``connect`` is a toolset its session enables (issue #18); ``sessions``
    is either framework's ``Sessions``."""
    for service_name, tool_names in SERVICES.items():
        sessions.toolset(
            service_name,
            tools=tool_names,
            enabled_by=f"call connect(service={service_name!r})",
            description=f"The {service_name} service's tools.",
        )


def add_demo_tools(tool: ToolDecorator, VM: HandleKind) -> None:
    """Register the demo's tools with ``tool``: one definition for every framework."""

    # -- 1. a counter -------------------------------------------------------------------------
    @tool
    async def count(session: CurrentSession) -> int:
        """Increment this session's counter and return it (1 on the first call)."""

        def bump(state: JSONObject) -> int:
            value = int(state.get("count", 0)) + 1
            state["count"] = value
            return value

        return await session.update(bump)

    # -- 2. a shopping cart -------------------------------------------------------------------
    @tool
    async def add_item(item: str, session: CurrentSession) -> list[str]:
        """Add an item to this session's cart; returns the cart."""

        def add(state: JSONObject) -> list[str]:
            cart: list[str] = state.setdefault("cart", [])
            cart.append(item)
            return list(cart)

        return await session.update(add)

    @tool
    async def checkout(session: CurrentSession) -> dict[str, Any]:
        """Check out the cart: returns the order and empties the cart."""

        def take(state: JSONObject) -> list[str]:
            cart = list(state.get("cart", []))
            state["cart"] = []
            state["orders"] = int(state.get("orders", 0)) + 1
            return cart

        items = await session.update(take)
        return {"items": items, "count": len(items), "status": "ordered" if items else "empty"}

    # -- 3. progressive discovery: each service is a toolset its session enables (issue #18) --
    @tool
    async def connect(service: str, session: CurrentSession) -> list[str]:
        """Connect this session to a service (billing, crm, search); returns the tools it
        enables for this session."""
        if service not in SERVICES:
            raise ToolError(f"unknown service {service!r}; choose one of {sorted(SERVICES)}")
        await session.enable(service)
        return SERVICES[service]

    @tool
    async def disconnect(service: str, session: CurrentSession) -> dict[str, list[str]]:
        """Disconnect this session from a service; returns the session's remaining tools."""
        if service not in SERVICES:
            raise ToolError(f"unknown service {service!r}; choose one of {sorted(SERVICES)}")
        return (await session.disable(service)).tools()

    @tool
    async def actions(session: CurrentSession) -> dict[str, list[str]]:
        """The tools this session can use now, by connected service (its surface)."""
        return session.surface.tools()

    @tool
    async def list_invoices() -> list[dict[str, Any]]:
        """Billing: every invoice of the account."""
        return [{"invoice": key, **invoice} for key, invoice in INVOICES.items()]

    @tool
    async def refund(invoice: str, session: CurrentSession) -> dict[str, Any]:
        """Billing: refund an invoice (once)."""
        if invoice not in INVOICES:
            raise ToolError(f"unknown invoice {invoice!r}; list_invoices shows them")

        def take(state: JSONObject) -> bool:
            refunded: list[str] = state.setdefault("refunded", [])
            if invoice in refunded:
                return False
            refunded.append(invoice)
            return True

        done = await session.update(take)
        return {"invoice": invoice, "status": "refunded" if done else "already refunded"}

    @tool
    async def find_customer(name: str) -> list[str]:
        """CRM: customers whose name contains ``name`` (case-insensitive)."""
        return [customer for customer in CUSTOMERS if name.lower() in customer.lower()]

    @tool
    async def add_note(customer: str, text: str, session: CurrentSession) -> list[str]:
        """CRM: add a note to a customer; returns the customer's notes in this session."""
        if customer not in CUSTOMERS:
            raise ToolError(f"unknown customer {customer!r}; find_customer finds them")

        def note(state: JSONObject) -> list[str]:
            notes: list[str] = state.setdefault("notes", {}).setdefault(customer, [])
            notes.append(text[:500])
            return list(notes)

        return await session.update(note)

    @tool
    async def query(text: str) -> dict[str, str]:
        """Search: the help articles whose title or text mentions ``text``."""
        needle = text.lower()
        return {
            title: body
            for title, body in DOCUMENTS.items()
            if needle in title or needle in body.lower()
        }

    # -- 4. multi-step VM provisioning with handles (SEP-2567) -------------------------------
    @tool
    async def init_vm(name: str) -> str:
        """Start configuring a VM; returns a vm handle for set_ram, set_cpu and deploy_vm."""
        return await VM.create({"name": name, "ram_gb": 2, "cpus": 1, "deployed": False})

    def _configure(field: str, value: int) -> Any:
        def edit(state: JSONObject) -> JSONObject:
            if state.get("deployed"):
                raise HandleError(f"VM {state['name']!r} is deployed; its {field} is fixed")
            state[field] = value
            return dict(state)

        return edit

    @tool
    async def set_ram(vm: Annotated[str, VM.arg], gb: int) -> dict[str, Any]:
        """Set the VM's memory in GB (1-512)."""
        if not 1 <= gb <= 512:
            raise ToolError("gb must be between 1 and 512")
        return await VM.update(vm, _configure("ram_gb", gb))

    @tool
    async def set_cpu(vm: Annotated[str, VM.arg], n: int) -> dict[str, Any]:
        """Set the VM's CPU count (1-64)."""
        if not 1 <= n <= 64:
            raise ToolError("n must be between 1 and 64")
        return await VM.update(vm, _configure("cpus", n))

    @tool
    async def deploy_vm(vm: Annotated[str, VM.arg]) -> dict[str, Any]:
        """Deploy the VM as configured; its configuration is fixed from then on."""

        def deploy(state: JSONObject) -> JSONObject:
            state["deployed"] = True
            return dict(state)

        return await VM.update(vm, deploy)
