"""``mcp-sessions gateway``: the command. Imports nothing heavy until it runs."""

from __future__ import annotations

import importlib.util
import shlex
import sys
from typing import Any

import click

from ..core.names import HEADER_LEGACY_SESSION_ID, HEADER_PARAM_PREFIX

_CARRIERS = ("sep2822", "openai", "bedrock", "legacy", "principal")


@click.command(context_settings={"show_default": True})
@click.option(
    "--upstream",
    "upstreams",
    multiple=True,
    metavar="URL",
    help="An HTTP MCP server, e.g. http://10.0.0.11:8000/mcp (repeat for each replica).",
)
@click.option(
    "--spawn",
    metavar="CMD",
    help="Instead of upstreams: run one stdio MCP server process per session, "
    "e.g. --spawn 'mcp-sessions demo --stdio --store memory://'.",
)
@click.option("--host", default="127.0.0.1", help="Address to listen on.")
@click.option("--port", default=8080, type=click.IntRange(0, 65535), help="Port to listen on.")
@click.option("--path", default="/mcp", help="The gateway's MCP endpoint.")
@click.option(
    "--store",
    "store_url",
    default="memory://",
    metavar="URL",
    help="Where session pins live: memory:// for one gateway, redis://HOST:PORT/DB shared "
    "by several gateway replicas.",
)
@click.option(
    "--route-param",
    "route_params",
    multiple=True,
    metavar="NAME",
    help=f"Also route on the {HEADER_PARAM_PREFIX}NAME header (a handle argument mirrored "
    "with x-mcp-header), after the session carriers.",
)
@click.option(
    "--no-carrier",
    "disabled",
    multiple=True,
    type=click.Choice(_CARRIERS),
    help=(
        f"Do not route on this carrier (input aliases, legacy {HEADER_LEGACY_SESSION_ID}, "
        "or the principal)."
    ),
)
@click.option(
    "--failover",
    type=click.Choice(["error", "move"]),
    default="error",
    help="When a session's upstream fails: tell the session it is lost (error), or re-pin "
    "it to the next upstream (move: for upstreams that share one session store).",
)
@click.option(
    "--session-idle",
    default=3600.0,
    type=click.FloatRange(min=1),
    metavar="SECONDS",
    help="How long an idle session keeps its pin.",
)
@click.option("--health-interval", default=2.0, type=click.FloatRange(min=0.05), metavar="S")
@click.option("--health-timeout", default=1.0, type=click.FloatRange(min=0.05), metavar="S")
@click.option(
    "--health-fall",
    default=2,
    type=click.IntRange(min=1),
    metavar="N",
    help="Failed checks that take an upstream out.",
)
@click.option(
    "--health-rise",
    default=2,
    type=click.IntRange(min=1),
    metavar="N",
    help="Passed checks that bring it back.",
)
@click.option(
    "--health-path",
    default="/",
    metavar="PATH",
    help="Path probed with GET; any answer below 500 is healthy.",
)
@click.option("--connect-timeout", default=3.0, type=click.FloatRange(min=0.01), metavar="S")
@click.option(
    "--upstream-timeout",
    default=300.0,
    type=click.FloatRange(min=0.01),
    metavar="S",
    help="Longest wait for a response to start, and between two chunks of a stream.",
)
@click.option(
    "--max-body-bytes",
    default=4 * 1024 * 1024,
    type=click.IntRange(min=1),
    help="Larger request bodies get 413.",
)
@click.option(
    "--max-header-bytes",
    default=16 * 1024,
    type=click.IntRange(min=1024),
    help="Larger header sections get 431.",
)
@click.option(
    "--warm",
    default=2,
    type=click.IntRange(min=0),
    help="--spawn: pre-started processes waiting for new sessions.",
)
@click.option(
    "--warm-legacy",
    default=1,
    type=click.IntRange(min=0),
    help="--spawn: pre-started processes for legacy (initialize) clients.",
)
@click.option(
    "--max-processes",
    default=32,
    type=click.IntRange(min=1),
    help="--spawn: most processes alive at once; then new sessions get 503.",
)
@click.option(
    "--max-processes-per-principal",
    default=None,
    type=click.IntRange(min=1),
    metavar="N",
    help="--spawn: most session processes one caller may hold (a verified principal; "
    "without --jwks/--jwt-secret-file, a client address); beyond it the caller gets 429, "
    "others are still served. "
    "[default: half of --max-processes]",
)
@click.option(
    "--idle-timeout",
    default=600.0,
    type=click.FloatRange(min=0.05),
    metavar="S",
    help="--spawn: stop a session's process after this long without a request.",
)
@click.option(
    "--startup-timeout",
    default=30.0,
    type=click.FloatRange(min=0.1),
    metavar="S",
    help="--spawn: how long a process may take to start.",
)
@click.option(
    "--spawn-probe",
    type=click.Choice(["discover", "none"]),
    default="discover",
    help="--spawn: a warm process is ready once it answers server/discover (discover), or "
    "as soon as it runs (none: for servers without 2026-07-28 support).",
)
@click.option(
    "--spawn-warmup",
    "spawn_warmup",
    multiple=True,
    metavar="JSON",
    help="--spawn: a request each warm process gets after the probe, to run its tool path "
    'once before a session\'s first call, e.g. \'{"method": "tools/call", "params": '
    '{"name": "ping", "arguments": {}}}\'. Pick one without side effects; {random} '
    "becomes a fresh id per process.",
)
@click.option(
    "--jwks",
    metavar="FILE|URL",
    help="Verify bearer JWTs against this JWK set (asymmetric algorithms; a URL is https, or "
    "http on loopback); the verified iss/sub/client id is the principal. Requests without a "
    "valid token get 401.",
)
@click.option(
    "--jwt-secret-file",
    metavar="FILE",
    help="Verify bearer JWTs (HS256/384/512) with the shared secret in FILE (32+ bytes). "
    "Without --jwks or this, --spawn keys processes by a digest of the whole "
    "Authorization value (HTTP mode routes on its unverified claims).",
)
@click.option("--jwt-issuer", metavar="ISS", help="With --jwks/--jwt-secret-file: required iss.")
@click.option("--jwt-audience", metavar="AUD", help="With --jwks/--jwt-secret-file: required aud.")
@click.option(
    "--trust-forwarded",
    is_flag=True,
    help="Keep the client's X-Forwarded-For/-Host/-Proto (and Forwarded, X-Real-IP): only "
    "behind a proxy that sets them. Otherwise they are replaced by the gateway's own view.",
)
@click.option(
    "--emit-config",
    type=click.Choice(["nginx", "haproxy", "envoy"]),
    help="Print an equivalent header-hash configuration for this proxy and exit.",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="warning",
)
def gateway(**options: Any) -> None:
    """Route MCP traffic to replicas by session, or spawn a process per session.

    \b
    One HTTP front (Streamable HTTP, 2025-11-25 and 2026-07-28 clients) for either
      --upstream URL ...   HTTP MCP servers; each session sticks to one of them
      --spawn CMD          a stdio MCP server process per session
    Requests are routed by session key (Mcp-Client-Session-Id and the _meta carriers,
    the SEP-2822 and vendor ids, legacy Mcp-Session-Id, --route-param headers), then by
    principal, then to the least-loaded upstream, with rendezvous hashing: gateway
    replicas agree without talking to each other. /healthz and /metrics are served too.

    \b
    Examples:
      mcp-sessions gateway --upstream http://10.0.0.11:8000/mcp \\
                           --upstream http://10.0.0.12:8000/mcp --port 8080
      mcp-sessions gateway --spawn 'mcp-sessions demo --stdio --store memory://'
      mcp-sessions gateway --upstream ... --emit-config nginx > mcp.conf
    """
    if options["emit_config"]:
        _emit(options)
        return
    if importlib.util.find_spec("prometheus_client") is None:
        raise click.ClickException(
            "the gateway needs prometheus-client for /metrics: pip install 'mcp-sessions[gateway]'"
        )
    if importlib.util.find_spec("httptools") is None:
        # The upstream hop frames HTTP/1.1 with httptools' llhttp (gateway/http1.py), and the
        # configuration imports it.
        raise click.ClickException(
            "the gateway needs httptools to read its upstreams' responses: "
            "pip install 'mcp-sessions[gateway]'"
        )
    config = _config(options)
    serve(config, host=options["host"], port=options["port"], log_level=options["log_level"])


def _emit(options: dict[str, Any]) -> None:
    from .emit import EmitSettings, emit

    if not options["upstreams"]:
        raise click.ClickException("--emit-config needs the --upstream URLs to put in it")
    try:
        text = emit(
            options["emit_config"],
            EmitSettings(
                upstreams=tuple(options["upstreams"]),
                listen_host=options["host"],
                listen_port=options["port"],
                path=options["path"],
                carriers=frozenset(c for c in _CARRIERS if c not in options["disabled"]),
                route_params=tuple(options["route_params"]),
                session_idle=options["session_idle"],
                max_body_bytes=options["max_body_bytes"],
                upstream_timeout=options["upstream_timeout"],
            ),
        )
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(text, nl=False)


def _config(options: dict[str, Any]) -> Any:
    from ..core.carriers import CarrierPolicy
    from .config import GatewayConfig, SpawnSettings
    from .routing import RoutingPolicy
    from .trust import AuthSettings
    from .upstreams import HealthSettings

    auth = None
    if options["jwks"] or options["jwt_secret_file"]:
        try:
            auth = AuthSettings(
                jwks=options["jwks"],
                secret_file=options["jwt_secret_file"],
                issuer=options["jwt_issuer"],
                audience=options["jwt_audience"],
            )
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
    elif options["jwt_issuer"] or options["jwt_audience"]:
        raise click.ClickException("--jwt-issuer/--jwt-audience need --jwks or --jwt-secret-file")
    disabled = set(options["disabled"])
    spawn = None
    if options["spawn"]:
        if options["upstreams"]:
            raise click.ClickException("give either --upstream or --spawn, not both")
        try:
            command = tuple(shlex.split(options["spawn"]))
        except ValueError as exc:
            raise click.ClickException(f"--spawn: {exc}") from None
        try:
            spawn = SpawnSettings(
                command=command,
                warm=options["warm"],
                warm_legacy=options["warm_legacy"],
                max_processes=options["max_processes"],
                max_processes_per_principal=options["max_processes_per_principal"],
                idle_timeout=options["idle_timeout"],
                startup_timeout=options["startup_timeout"],
                probe=options["spawn_probe"],
                warmup=tuple(options["spawn_warmup"]),
            )
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
    try:
        return GatewayConfig(
            upstreams=tuple(options["upstreams"]),
            spawn=spawn,
            store_url=options["store_url"],
            path=options["path"],
            routing=RoutingPolicy(
                carriers=CarrierPolicy(
                    sep2822="sep2822" not in disabled,
                    openai="openai" not in disabled,
                    bedrock="bedrock" not in disabled,
                    legacy="legacy" not in disabled,
                ),
                param_names=tuple(options["route_params"]),
                principal="principal" not in disabled,
            ),
            failover=options["failover"],
            session_idle=options["session_idle"],
            max_body_bytes=options["max_body_bytes"],
            max_header_bytes=options["max_header_bytes"],
            connect_timeout=options["connect_timeout"],
            upstream_timeout=options["upstream_timeout"],
            health=HealthSettings(
                interval=options["health_interval"],
                timeout=options["health_timeout"],
                fall=options["health_fall"],
                rise=options["health_rise"],
                path=options["health_path"],
            ),
            auth=auth,
            trust_forwarded=options["trust_forwarded"],
        )
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None


def _http_implementation() -> str:
    """uvicorn's HTTP parser: httptools when installed (several times faster than h11, which
    matters on a proxy's hot path: pip install 'mcp-sessions[gateway]'), else h11."""
    return "httptools" if importlib.util.find_spec("httptools") is not None else "h11"


def serve(config: Any, *, host: str, port: int, log_level: str = "warning") -> None:
    """Run the gateway on uvicorn until interrupted."""
    import logging

    import uvicorn

    from ..serving import HTTPLimits, uvicorn_config
    from ..stores import StoreError, open_store
    from .app import Gateway

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(message)s")
    from ..telemetry.cli import start_telemetry

    start_telemetry("mcp-sessions-gateway")  # the standard OTEL_* variables (issue #13)
    try:
        store = open_store(config.store_url)
        app = Gateway(config, store=store)
    except (ValueError, StoreError) as exc:
        raise click.ClickException(str(exc)) from None
    where = (
        f"{len(config.upstreams)} upstream(s)"
        if config.spawn is None
        else f"spawn {shlex.join(config.spawn.command)!r}"
    )
    click.echo(
        f"mcp-sessions gateway: http://{host}:{port}{config.path} -> {where} "
        f"(pins in {store.url}; /healthz, /metrics)",
        err=True,
    )
    server = uvicorn.Server(
        uvicorn_config(
            app,
            host=host,
            port=port,
            # Header timeout, field count and idle timeout as the served app (issue #12);
            # the byte limit is looser so that the gateway's own 431 says which limit it is.
            limits=HTTPLimits(max_header_bytes=4 * config.max_header_bytes + 8192),
            http=_http_implementation(),  # type: ignore[arg-type]
            log_level=log_level,
            access_log=False,
            lifespan="on",
            loop="asyncio",
            proxy_headers=False,  # the gateway forwards X-Forwarded-* itself
            server_header=False,
            date_header=False,
        )
    )
    server.run()
    if not server.started:
        sys.exit(1)
