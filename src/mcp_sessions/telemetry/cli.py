"""The commands' side of telemetry: set the SDK up at start, serve ``/metrics`` (issue #13)."""

from __future__ import annotations

import contextlib
import signal
from typing import TYPE_CHECKING

import click

from .setup import Telemetry, TelemetryConfigError, configure_from_env, prometheus_text

if TYPE_CHECKING:
    from mcp.server.mcpserver import MCPServer
    from starlette.requests import Request
    from starlette.responses import Response

#: The path of the demo's Prometheus text.
METRICS_PATH = "/metrics"


def start_telemetry(service_name: str, *, prometheus: bool = False) -> Telemetry | None:
    """:func:`configure_from_env` for a command: a bad setting ends it with the reason."""
    try:
        configured = configure_from_env(service_name=service_name, prometheus=prometheus)
    except TelemetryConfigError as error:
        raise click.ClickException(str(error)) from None
    if configured is not None:
        click.echo(f"OpenTelemetry: {', '.join(configured.exporters)}", err=True)
        _flush_on_sigterm(configured)
    return configured


def _flush_on_sigterm(configured: Telemetry) -> None:
    """Export what is buffered when the command is stopped with SIGTERM.

    uvicorn shuts down gracefully on SIGTERM and then raises the signal again under the
    handler it found; the default one ends the process at once, skipping the ``atexit`` flush
    of the SDK's batch processors (the last spans would be lost). This one flushes, then
    exits with the status the signal would have given.
    """
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return  # someone else's handler: leave it

    def flush_and_exit(signum: int, _frame: object) -> None:
        configured.shutdown()
        raise SystemExit(128 + signum)

    with contextlib.suppress(ValueError):  # not the main thread: nothing to install
        signal.signal(signal.SIGTERM, flush_and_exit)


def add_metrics_route(mcp: MCPServer) -> None:
    """``GET /metrics`` on the server: the Prometheus text of its OpenTelemetry metrics."""
    from starlette.responses import Response

    async def metrics(_request: Request) -> Response:
        body, content_type = prometheus_text()
        return Response(body, media_type=content_type)

    mcp.custom_route(METRICS_PATH, methods=["GET"])(metrics)
