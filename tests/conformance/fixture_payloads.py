"""What the conformance fixture's tools hand out and ask for, shared by both fixtures
(fixture_server.py on the SDK's MCPServer, fastmcp_fixture.py on FastMCP): the media built
here (a 1x1 PNG, a one-sample WAV), the schemas the elicitation and tools/list scenarios
inspect, and the builders of the input requests that SEP-2322 tools return. The names,
texts and values a scenario checks are the suite's own; no server is assembled here.
"""

from __future__ import annotations

import base64
import io
import struct
import wave
import zlib
from typing import Any

from mcp.server.mcpserver import Context, Elicit
from mcp.types import (
    CreateMessageRequest,
    CreateMessageRequestParams,
    ElicitRequest,
    ElicitRequestFormParams,
    ElicitResult,
    SamplingMessage,
    TextContent,
)
from pydantic import BaseModel, Field

# --------------------------------------------------------------------------------------
# Media built here rather than pasted: a 1x1 PNG and a 1-sample WAV.
# --------------------------------------------------------------------------------------


def _png_pixel(rgb: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    """A valid 1x1 truecolour PNG (PNG spec §5: signature, IHDR, IDAT, IEND chunks)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)  # 1x1, 8-bit, RGB
    scanline = b"\x00" + bytes(rgb)  # filter type 0, then one pixel
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(scanline))
        + chunk(b"IEND", b"")
    )


def _wav_blip() -> bytes:
    """A valid mono 8 kHz 16-bit WAV with one silent sample."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(b"\x00\x00")
    return buffer.getvalue()


PNG = _png_pixel()
WAV = _wav_blip()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# --------------------------------------------------------------------------------------
# Schemas the elicitation scenarios inspect.
# --------------------------------------------------------------------------------------


class Contact(BaseModel):
    """What `test_elicitation` asks for; the suite's client answers with these two fields."""

    username: str = Field(description="Your user name")
    email: str = Field(description="Your e-mail address")


class ProfileWithDefaults(BaseModel):
    """SEP-1034: a default on every primitive type (values fixed by the scenario)."""

    name: str = Field(default="John Doe", description="User name")
    age: int = Field(default=30, description="User age")
    score: float = Field(default=95.5, description="User score")
    status: str = Field(
        default="active",
        description="User status",
        json_schema_extra={"enum": ["active", "inactive", "pending"]},
    )
    verified: bool = Field(default=True, description="Verification status")


# SEP-1330: the five enum shapes, as a raw `requestedSchema` (field names fixed by the scenario).
ENUM_SHAPES_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "untitledSingle": {
            "type": "string",
            "description": "Single choice, plain enum",
            "enum": ["red", "green", "blue"],
        },
        "titledSingle": {
            "type": "string",
            "description": "Single choice with titles",
            "oneOf": [
                {"const": "s", "title": "Small"},
                {"const": "m", "title": "Medium"},
                {"const": "l", "title": "Large"},
            ],
        },
        "untitledMulti": {
            "type": "array",
            "description": "Several choices, plain enum",
            "items": {"type": "string", "enum": ["read", "write", "admin"]},
        },
        "titledMulti": {
            "type": "array",
            "description": "Several choices with titles",
            "items": {
                "anyOf": [
                    {"const": "mon", "title": "Monday"},
                    {"const": "wed", "title": "Wednesday"},
                    {"const": "fri", "title": "Friday"},
                ]
            },
        },
        "legacyEnum": {
            "type": "string",
            "description": "Deprecated titled enum",
            "enum": ["lo", "hi"],
            "enumNames": ["Low", "High"],
        },
    },
    "required": ["untitledSingle"],
}

# SEP-1613 / SEP-2106: 2020-12 keywords that must reach tools/list untouched.
JSON_SCHEMA_2020_12: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "$defs": {
        "address": {
            "$anchor": "addressDef",
            "type": "object",
            "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
        }
    },
    "properties": {
        "name": {"type": "string"},
        "address": {"$ref": "#/$defs/address"},
        "contactMethod": {"type": "string", "enum": ["phone", "email"]},
        "phone": {"type": "string"},
        "email": {"type": "string"},
    },
    "allOf": [{"anyOf": [{"required": ["phone"]}, {"required": ["email"]}]}],
    "if": {"properties": {"contactMethod": {"const": "phone"}}, "required": ["contactMethod"]},
    "then": {"required": ["phone"]},
    "else": {"required": ["email"]},
    "additionalProperties": False,
}


def _ask(message: str, field: str) -> ElicitRequest:
    """A form elicitation for one required string field."""
    schema = {"type": "object", "properties": {field: {"type": "string"}}, "required": [field]}
    return ElicitRequest(params=ElicitRequestFormParams(message=message, requested_schema=schema))


def _sample(text: str) -> CreateMessageRequest:
    message = SamplingMessage(role="user", content=TextContent(type="text", text=text))
    return CreateMessageRequest(
        params=CreateMessageRequestParams(messages=[message], max_tokens=64)
    )


def _accepted(responses: Any, key: str) -> dict[str, Any] | None:
    """The content of an accepted elicitation answer under `key`, if there is one."""
    answer = (responses or {}).get(key)
    if isinstance(answer, ElicitResult) and answer.action == "accept":
        return dict(answer.content or {})
    return None


async def stream_then_ask(ctx: Context) -> Elicit[Contact]:
    """Resolver of `test_streaming_elicitation`: streams, then asks. The SDK sends the
    question over the back-channel at 2025-11-25 and as an `input_required` result at
    2026-07-28."""
    await ctx.report_progress(1, 2, "streaming before the question")
    await ctx.info("about to ask the user")
    return Elicit("Who is streaming?", Contact)
