"""OpenTelemetry for mcp-sessions (issue #13): spans and metrics through the API, and the
SDK set up from the standard ``OTEL_*`` environment variables (docs/observability.md)."""

from __future__ import annotations

from .instruments import SessionTelemetry, provider_is_live
from .tracker import SessionTracker

__all__ = ["SessionTelemetry", "SessionTracker", "provider_is_live"]
