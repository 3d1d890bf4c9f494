"""The commands' side of telemetry: set the SDK up at start, serve ``/metrics`` (issue #13)."""

from __future__ import annotations

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
    return configured


def add_metrics_route(mcp: MCPServer) -> None:
    """``GET /metrics`` on the server: the Prometheus text of its OpenTelemetry metrics."""
    from starlette.responses import Response

    async def metrics(_request: Request) -> Response:
        body, content_type = prometheus_text()
        return Response(body, media_type=content_type)

    mcp.custom_route(METRICS_PATH, methods=["GET"])(metrics)
