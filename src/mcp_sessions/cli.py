"""The ``mcp-sessions`` command line."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import click

from . import __version__
from .core.errors import InvalidState
from .core.limits import (
    DEFAULT_CREATIONS_PER_MINUTE,
    DEFAULT_MAX_HANDLES,
    DEFAULT_MAX_LEGACY_SESSIONS,
    DEFAULT_MAX_SESSIONS,
)
from .core.names import HEADER_LEGACY_SESSION_ID
from .core.sealing import SealingKey, StateCodec, read_token_header
from .core.timestamps import rfc3339
from .keyfiles import load_or_create_key_file, read_key_file, write_key_file


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mcp-sessions")
def main() -> None:
    """Sessions for the Model Context Protocol.

    \b
    Start here:
      mcp-sessions keys new --output keys.txt     make a sealing key
      mcp-sessions token inspect --key-file keys.txt TOKEN
    """


@main.group()
def keys() -> None:
    """Sealing keys for state tokens (AES-256-GCM)."""


@keys.command("new")
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the key to this file (created with mode 0600) instead of printing it.",
)
@click.option("--force", is_flag=True, help="Overwrite --output if it exists.")
def keys_new(output: Path | None, force: bool) -> None:
    """Make a new sealing key.

    A key file holds one key per line, newest first: the first key seals, every key unseals.
    To rotate, put a new key on top, and remove the old one once its tokens have expired.
    """
    key = SealingKey.generate()
    if output is None:
        click.echo(key.to_text())
        return
    try:
        write_key_file(output, key, replace=force)
    except FileExistsError:
        raise click.ClickException(
            f"{output} exists; use --force to replace it, or add the new key on top of the "
            "old one by hand to rotate"
        ) from None
    except OSError as exc:
        raise click.ClickException(f"cannot write {output}: {exc.strerror}") from None
    click.echo(f"wrote a new sealing key to {output} (mode 0600)", err=True)


@main.group()
def token() -> None:
    """State tokens (the dev.mcpsessions/state value)."""


@token.command("inspect")
@click.option(
    "--key-file",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The server's key file.",
)
@click.option("--audience", help="Also check the token was sealed for this server name.")
@click.option("--principal", help="Also check the token's principal key.")
@click.option("--session", "session_id", help="Also check the token's session id.")
@click.argument("value", metavar="TOKEN")
def token_inspect(
    key_file: Path,
    audience: str | None,
    principal: str | None,
    session_id: str | None,
    value: str,
) -> None:
    """Unseal TOKEN ('-' reads it from standard input) and print what it holds, or say
    precisely why it cannot be unsealed."""
    if value == "-":
        value = sys.stdin.read().strip()
    try:
        ring = read_key_file(key_file)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        header = read_token_header(value)
    except InvalidState as exc:
        raise click.ClickException(f"not a state token: {exc.reason}") from None
    try:
        opened = StateCodec(ring, audience=audience or "inspect").open_unverified(value)
    except InvalidState as exc:
        raise click.ClickException(
            f"cannot unseal (key id {header.kid}, seq {header.seq}): {exc.reason}"
        ) from None
    problems = []
    if audience is not None and opened.audience != audience:
        problems.append(f"sealed for server {opened.audience!r}, not {audience!r}")
    if principal is not None and opened.principal != principal:
        problems.append(f"sealed for principal {opened.principal!r}, not {principal!r}")
    if session_id is not None and opened.session_id != session_id:
        problems.append(f"sealed for session {opened.session_id!r}, not {session_id!r}")
    now = datetime.now(UTC).timestamp()
    expiry = rfc3339(opened.expires_at)
    if now >= opened.expires_at:
        problems.append(f"expired at {expiry}")
    report = {
        "valid": not problems,
        "problems": problems,
        "keyId": opened.kid,
        "seq": opened.seq,
        "expiresAt": expiry,
        "audience": opened.audience,
        "principal": opened.principal,
        "sessionId": opened.session_id,
        "state": opened.state,
        "bytes": len(value),
    }
    click.echo(json.dumps(report, indent=2, ensure_ascii=False))
    if problems:
        sys.exit(1)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--stdio", is_flag=True, help="Serve over standard input/output instead of HTTP.")
@click.option(
    "--store",
    "store_url",
    metavar="URL",
    help="Session store: memory://, sqlite:///PATH or redis://HOST:PORT/DB "
    "[default: a SQLite file in the user's state directory].",
)
@click.option(
    "--state",
    type=click.Choice(["server", "sealed"]),
    default="server",
    show_default=True,
    help="Keep session state in the store, or sealed in the client's dev.mcpsessions/state.",
)
@click.option(
    "--lifecycle",
    type=click.Choice(["implicit", "explicit"]),
    default="implicit",
    show_default=True,
    help="implicit: a new client id creates its session; explicit: session/create first.",
)
@click.option(
    "--auth-tokens",
    type=click.Path(dir_okay=False, path_type=Path),
    help='JSON file mapping bearer tokens to subjects, e.g. {"alice-token": "alice"}; '
    "requests without a known token then get 401.",
)
@click.option(
    "--key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Sealing keys (mcp-sessions keys new) [default: created beside the default store].",
)
@click.option(
    "--handle-fallback/--no-handle-fallback",
    default=True,
    show_default=True,
    help="Offer session_start and a 'session' argument to clients that carry no session.",
)
@click.option(
    "--header-timeout",
    default=10.0,
    show_default=True,
    type=click.FloatRange(min=0.05),
    metavar="S",
    help="Close a connection whose request head is not complete after this long (408).",
)
@click.option(
    "--keep-alive-timeout",
    default=5.0,
    show_default=True,
    type=click.FloatRange(min=0.05),
    metavar="S",
    help="Close a keep-alive connection idle for this long between requests.",
)
@click.option(
    "--max-header-bytes",
    default=32 * 1024,
    show_default=True,
    type=click.IntRange(min=1024),
    help="Larger request heads get 431.",
)
@click.option(
    "--max-headers",
    default=100,
    show_default=True,
    type=click.IntRange(min=1),
    help="Requests with more header fields get 431.",
)
@click.option(
    "--max-sessions-per-principal",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_SESSIONS,
    show_default=True,
    help="Live sessions one caller may hold (anonymous callers: per client address).",
)
@click.option(
    "--max-handles-per-principal",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_HANDLES,
    show_default=True,
    help="Live handles (all kinds) one caller may hold.",
)
@click.option(
    "--max-legacy-sessions-per-principal",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_LEGACY_SESSIONS,
    show_default=True,
    help=f"Live {HEADER_LEGACY_SESSION_ID} sessions one caller may hold.",
)
@click.option(
    "--max-creations-per-minute",
    type=click.IntRange(min=1),
    default=DEFAULT_CREATIONS_PER_MINUTE,
    show_default=True,
    help="Sessions and handles one caller may create per minute (bursts up to as many).",
)
@click.option(
    "--trusted-proxy-hops",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Reverse proxies in front that append to X-Forwarded-For; 0 uses the peer address.",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="warning",
    show_default=True,
)
@click.option(
    "--metrics",
    is_flag=True,
    help="Serve the OpenTelemetry metrics as Prometheus text at /metrics (needs the [otel] "
    "extra). Traces and other exporters: the standard OTEL_* variables (docs/observability.md).",
)
@click.option(
    "--framework",
    type=click.Choice(["mcp", "fastmcp"]),
    default="mcp",
    show_default=True,
    help="Serve the demo on the SDK's MCPServer or on FastMCP (the fastmcp extra).",
)
def demo(
    host: str,
    port: int,
    stdio: bool,
    store_url: str | None,
    state: str,
    lifecycle: str,
    auth_tokens: Path | None,
    key_file: Path | None,
    handle_fallback: bool,
    header_timeout: float,
    keep_alive_timeout: float,
    max_header_bytes: int,
    max_headers: int,
    max_sessions_per_principal: int,
    max_handles_per_principal: int,
    max_legacy_sessions_per_principal: int,
    max_creations_per_minute: int,
    trusted_proxy_hops: int,
    log_level: str,
    metrics: bool,
    framework: str,
) -> None:
    """Run the example server: a counter, a cart, progressive discovery and VM handles.

    Every kind of client reaches the same tools: 2026-07-28 clients with
    dev.mcpsessions/sessionId (or SEP-2822 / vendor ids), 2025-11-25 clients with
    Mcp-Session-Id, plain HTTP clients through session_start handles, and, with --stdio, any
    client through its connection's own session.
    """
    import logging

    from .core.limits import Limits
    from .demo import StaticTokens, build_demo
    from .server.engine import Lifecycle, StateMode
    from .stores import StoreError, default_store_url, state_dir

    logging.basicConfig(
        level=log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s [session %(mcp_session_id)s] %(message)s",
    )
    from .telemetry.cli import start_telemetry

    telemetry = start_telemetry("mcp-sessions-demo", prometheus=metrics and not stdio)
    if store_url is None:
        store_url = default_store_url()
    if store_url.startswith("sqlite:///"):
        from urllib.parse import unquote

        # Session ids are bearer capabilities: the directory is the owner's alone (issue #12).
        Path(unquote(store_url[len("sqlite:///") :])).parent.mkdir(
            mode=0o700, parents=True, exist_ok=True
        )
    try:
        keys = load_or_create_key_file(key_file or Path(state_dir()) / "demo-keys.txt")
        tokens = StaticTokens.from_file(auth_tokens) if auth_tokens else None
        base_url = f"http://{host if ':' not in host else f'[{host}]'}:{port}"
        mcp, sessions = build_demo(
            framework=framework,
            store=store_url,
            state=cast(StateMode, state),  # click.Choice: one of the two
            lifecycle=cast(Lifecycle, lifecycle),
            keys=keys,
            auth_tokens=tokens,
            handle_fallback=handle_fallback,
            base_url=base_url,
            limits=Limits(
                max_sessions_per_principal=max_sessions_per_principal,
                max_handles_per_principal=max_handles_per_principal,
                max_legacy_sessions_per_principal=max_legacy_sessions_per_principal,
                max_creations_per_minute=max_creations_per_minute,
                trusted_proxy_hops=trusted_proxy_hops,
            ),
        )
    except ImportError as exc:
        if framework != "fastmcp":
            raise
        raise click.ClickException(
            f"--framework fastmcp needs FastMCP: pip install 'mcp-sessions[fastmcp]' ({exc})"
        ) from None
    except (ValueError, StoreError) as exc:
        raise click.ClickException(str(exc)) from None
    if stdio:
        # Over stdio the connection is the session (carrier 5): any MCP client keeps state.
        click.echo(
            f"mcp-sessions demo on stdio (store {store_url}): each connection has its own "
            "session, so any MCP client keeps its state",
            err=True,
        )
        mcp.run("stdio", **({"show_banner": False} if framework == "fastmcp" else {}))
        return
    from .serving import HTTPLimits, serve

    if telemetry is not None and telemetry.prometheus_reader is not None:
        from .telemetry.cli import add_metrics_route

        add_metrics_route(mcp)
    app = sessions.streamable_http_app(mcp, host=host)
    url = f"{base_url}/mcp"
    # Over HTTP at 2026-07-28 a request stands alone: a plain mcp.Client carries no session
    # and gets -31002, so the banner names the client that does (issue #11).
    plain = (
        "a plain mcp.Client passes the handle from the session_start tool as 'session'"
        if handle_fallback
        else "a plain mcp.Client must send dev.mcpsessions/sessionId in _meta"
    )
    click.echo(
        f"mcp-sessions demo: {url}  (store {sessions.engine.store_url}, "
        f"state {state}, lifecycle {lifecycle}{', bearer auth' if tokens else ''})\n"
        f"  try: npx @modelcontextprotocol/inspector --cli {url} --method tools/list\n"
        f"  in Python: mcp_sessions.client.Client('{url}') keeps a session for you\n"
        f"  ({plain}; 2025-11-25 clients get {HEADER_LEGACY_SESSION_ID}) - see docs/server.md",
        err=True,
    )
    limits = HTTPLimits(
        header_timeout=header_timeout,
        keep_alive_timeout=keep_alive_timeout,
        max_header_bytes=max_header_bytes,
        max_headers=max_headers,
    )
    # proxy_headers=False: uvicorn would otherwise take the client address from
    # X-Forwarded-For of any local peer; --trusted-proxy-hops decides instead (issue #12).
    if not serve(
        app, host=host, port=port, limits=limits, log_level=log_level, proxy_headers=False
    ):
        sys.exit(1)


from .gateway.cli import gateway as _gateway  # noqa: E402  (light module: loads the rest on use)

main.add_command(_gateway)

from .admin import sessions as _sessions  # noqa: E402  (issue #13: look into a store)

main.add_command(_sessions)
