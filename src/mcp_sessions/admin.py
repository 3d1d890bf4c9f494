"""``mcp-sessions sessions``: look into a store, and delete from it when asked (issue #13).

``list``, ``show`` and ``stats`` only read: they call :meth:`Store.scan
<mcp_sessions.stores.base.Store.scan>`, which neither sweeps nor touches, and open an SQLite
file read-only (a missing file is an error, never a new store). ``delete`` writes only with
``--yes``. Bad input (a malformed URL, an unreachable store, a malformed ``--kind``) is one
line on standard error and exit code 2; a refused or failed deletion, or no such record, is
exit code 1.

What is printed comes from the store, and a principal or an id may hold anything a caller
sent: the table shows control characters escaped, and JSON escapes them too.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime
from typing import Any, NoReturn, TypeVar

import click

from .core.records import Record
from .core.sealing import read_token_header
from .core.timestamps import rfc3339
from .stores import Store, StoreError, default_store_url, open_store
from .stores._common import OPAQUE_KEY, encode_json

T = TypeVar("T")

#: Record kinds: ``session``, handle kinds (``vm``), ``pin`` (gateway), ``quota.sessions``.
_KIND_RE = re.compile(r"[a-z][a-z0-9._-]{0,63}")

#: Kinds of bookkeeping records left out unless asked for by ``--kind``: the quota ledger of
#: ``server/quotas.py`` (``LEDGER_KIND``; not imported, which would load the SDK for a listing;
#: tests/cli/test_cli_sessions.py checks the two agree).
BOOKKEEPING_PREFIX = "quota."

#: Characters a terminal could act on: C0 and C1 controls, DEL, bidirectional overrides.
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")

_SEALED_HINT = (
    "a server run with --state sealed keeps no session state in its store: it travels with "
    "the client in dev.mcpsessions/state (read one with `mcp-sessions token inspect`)"
)


class BadInput(click.ClickException):
    """Input the command cannot use (URL, store, option): exit code 2, one line."""

    exit_code = 2


def _fail(message: str) -> NoReturn:
    """A refusal or a missing record: exit code 1, one line."""
    raise click.ClickException(message)


# -- reading -----------------------------------------------------------------------------------


def open_for(url: str, *, write: bool = False) -> Store:
    """The store at ``url``; an SQLite file read-only unless ``write``."""
    try:
        if url.lower().startswith("sqlite:") and not write:
            return open_store(url, read_only=True)
        return open_store(url)
    except StoreError as exc:
        raise BadInput(str(exc)) from None


def _run(url: str, work: Callable[[Store], Coroutine[Any, Any, T]], *, write: bool = False) -> T:
    """Run ``work`` on the store at ``url`` and close it; store errors become :class:`BadInput`."""

    async def main() -> T:
        store = open_for(url, write=write)
        try:
            return await work(store)
        finally:
            await store.close()

    try:
        return asyncio.run(main())
    except StoreError as exc:
        raise BadInput(str(exc)) from None


def check_kind(kind: str | None) -> str | None:
    if kind is not None and _KIND_RE.fullmatch(kind) is None:
        raise BadInput(
            f"--kind {json.dumps(kind)} is not a record kind: a lowercase letter, then letters, "
            "digits, '.', '_' or '-' (e.g. session, vm, pin, quota.sessions)"
        )
    return kind


def check_principal(principal: str | None) -> str | None:
    if principal is not None and not principal:
        raise BadInput("--principal is empty: give a principal key, e.g. sub:alice")
    return principal


# -- shaping -----------------------------------------------------------------------------------


def is_opaque(record: Record) -> bool:
    return record.state.get(OPAQUE_KEY) is True


def state_bytes(record: Record) -> int:
    """The size of the stored state: UTF-8 bytes of its JSON."""
    if is_opaque(record):
        return int(record.state.get("bytes", 0))
    return len(encode_json(record.state, "state").encode())


def sealed_values(record: Record) -> list[str]:
    """Top-level state keys whose value is a sealed state token (shown as such, not opened)."""
    found = []
    for key, value in record.state.items():
        if isinstance(value, str) and len(value) > 40:
            try:
                read_token_header(value)
            except Exception:
                continue
            found.append(key)
    return found


def summary(record: Record) -> dict[str, Any]:
    """A record as the JSON of ``list``: everything but the state and attributes."""
    return {
        "id": record.id,
        "kind": record.kind,
        "principal": record.principal,
        "origin": record.origin,
        "createdAt": rfc3339(record.created_at),
        "lastSeen": rfc3339(record.last_seen),
        "expiresAt": rfc3339(record.expires_at),
        "version": record.version,
        "stateBytes": state_bytes(record),
    }


def detail(record: Record) -> dict[str, Any]:
    """A record as the JSON of ``show``: the summary, attributes and state (or why not)."""
    shown = summary(record)
    shown["idleTtl"] = record.idle_ttl
    shown["attributes"] = record.attributes
    if is_opaque(record):
        shown["state"] = None
        shown["stateNote"] = (
            f"opaque: the stored state is {state_bytes(record)} bytes that are not a JSON "
            "object, so it is not shown"
        )
    else:
        shown["state"] = record.state
        sealed = sealed_values(record)
        if sealed:
            shown["stateNote"] = (
                f"sealed: {', '.join(sealed)} hold sealed state tokens (not opened here; "
                "`mcp-sessions token inspect --key-file KEYS TOKEN` opens one)"
            )
    return shown


def stats(
    records: Sequence[Record], *, now: float, soon: float = 300.0, top: int = 10
) -> dict[str, Any]:
    """Counts by kind and principal, what expires within ``soon`` seconds, the largest states."""
    by_kind = Counter(r.kind for r in records)
    by_principal = Counter(r.principal for r in records)
    expiring = sorted(
        (r for r in records if r.expires_at - now <= soon), key=lambda r: r.expires_at
    )
    sizes = sorted(((state_bytes(r), r) for r in records), key=lambda pair: -pair[0])
    return {
        "records": len(records),
        "stateBytes": sum(size for size, _ in sizes),
        "byKind": dict(by_kind.most_common()),
        "principals": len(by_principal),
        "byPrincipal": dict(by_principal.most_common(top)),
        "expiringWithinSeconds": soon,
        "expiringSoon": len(expiring),
        "soonest": [{**_ref(r), "expiresAt": rfc3339(r.expires_at)} for r in expiring[:top]],
        "largest": [{**_ref(r), "stateBytes": size} for size, r in sizes[:top]],
    }


def _ref(record: Record) -> dict[str, str]:
    return {"id": record.id, "kind": record.kind, "principal": record.principal}


# -- printing ----------------------------------------------------------------------------------


def safe(text: str) -> str:
    """``text`` with every character a terminal could act on escaped."""
    return _UNSAFE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def dump_json(value: Any) -> str:
    # ensure_ascii=False keeps text readable; C1 controls (and DEL) pass through json.dumps
    # unescaped, so they are escaped after: they can only occur inside strings.
    text = json.dumps(value, indent=2, ensure_ascii=False)
    return re.sub(r"[\x7f-\x9f]", lambda m: f"\\u{ord(m.group()):04x}", text)


def _when(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _in(seconds: float) -> str:
    if seconds >= 86400:
        return f"in {seconds / 86400:.1f}d"
    if seconds >= 3600:
        return f"in {int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"
    if seconds >= 60:
        return f"in {int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"in {max(0, int(seconds))}s"


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _size(n: int) -> str:
    return f"{n} B" if n < 1024 else f"{n / 1024:.1f} KiB"


def table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    cells = [[safe(cell) for cell in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    for row in cells:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def list_table(records: Sequence[Record], now: float) -> str:
    rows = [
        (
            r.id,
            r.kind,
            r.principal,
            _when(r.created_at),
            _when(r.last_seen),
            _in(r.expires_at - now),
            "opaque " + _size(state_bytes(r)) if is_opaque(r) else _size(state_bytes(r)),
        )
        for r in records
    ]
    header = ("ID", "KIND", "PRINCIPAL", "CREATED (UTC)", "LAST SEEN (UTC)", "EXPIRES", "STATE")
    return table(rows, header)


def stats_text(report: dict[str, Any]) -> str:
    lines = [
        f"{_n(report['records'], 'live record')}, {_size(report['stateBytes'])} of state, "
        f"{_n(report['principals'], 'principal')}",
        "",
        table([(k, str(n)) for k, n in report["byKind"].items()], ("KIND", "RECORDS")),
        "",
        table([(p, str(n)) for p, n in report["byPrincipal"].items()], ("PRINCIPAL", "RECORDS")),
        "",
        f"expiring within {report['expiringWithinSeconds']:g}s: {report['expiringSoon']}",
    ]
    if report["soonest"]:
        rows = [(e["id"], e["kind"], e["principal"], e["expiresAt"]) for e in report["soonest"]]
        lines.append(table(rows, ("ID", "KIND", "PRINCIPAL", "EXPIRES AT")))
    lines += ["", "largest states:"]
    rows = [(e["id"], e["kind"], e["principal"], _size(e["stateBytes"])) for e in report["largest"]]
    lines.append(table(rows, ("ID", "KIND", "PRINCIPAL", "STATE")))
    return "\n".join(lines)


# -- the commands ------------------------------------------------------------------------------


def _store_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--store",
        "store_url",
        metavar="URL",
        help="memory://, sqlite:///PATH or redis://HOST:PORT/DB [default: the demo's SQLite "
        "file in the user's state directory].",
    )(fn)


def _filters(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--kind", help="Only records of this kind (session, a handle kind, pin).")(fn)
    return click.option("--principal", help="Only records of this principal key.")(fn)


def _url(store_url: str | None) -> str:
    url = store_url or default_store_url()
    if url.lower().startswith("memory:"):
        click.echo(
            "note: memory:// holds only what its own process stored, so a new one is empty",
            err=True,
        )
    return url


def _scan(url: str, principal: str | None, kind: str | None, id: str | None = None) -> list[Record]:
    """The live records answering the filters; without ``kind``, no bookkeeping records."""
    records = _run(url, lambda store: store.scan(principal=principal, kind=kind, id=id))
    if kind is None:
        records = [r for r in records if not r.kind.startswith(BOOKKEEPING_PREFIX)]
    return records


def _the_one(records: list[Record], id: str, kind: str | None) -> Record:
    if not records:
        hint = f"; {_SEALED_HINT}" if kind in (None, "session") else ""
        _fail(f"no live record with id {json.dumps(id)}{hint}")
    if len(records) > 1:
        which = ", ".join(f"{r.kind} of {json.dumps(r.principal)}" for r in records[:10])
        raise BadInput(
            f"{len(records)} live records have id {json.dumps(id)} ({safe(which)}); "
            "pick one with --kind and --principal"
        )
    return records[0]


@click.group("sessions")
def sessions() -> None:
    """Look into a session store: list, show, count, delete (writes only with --yes).

    \b
    mcp-sessions sessions list --store sqlite:////var/lib/mcp/sessions.sqlite3
    mcp-sessions sessions show ID --store redis://127.0.0.1:6379/0
    mcp-sessions sessions stats --store URL --json
    mcp-sessions sessions delete ID --store URL --yes
    """


@sessions.command("list")
@_store_option
@_filters
@click.option("--json", "as_json", is_flag=True, help="One JSON array instead of a table.")
def list_command(
    store_url: str | None, principal: str | None, kind: str | None, as_json: bool
) -> None:
    """List the live records, oldest first.

    Every kind but the quota ledger's (quota.*) unless --kind names one."""
    check_principal(principal)
    check_kind(kind)
    url = _url(store_url)
    records = _scan(url, principal, kind)
    if as_json:
        click.echo(dump_json([summary(r) for r in records]))
    elif records:
        click.echo(list_table(records, time.time()))
    else:
        click.echo("no live records", err=True)


@sessions.command("show")
@_store_option
@_filters
@click.option("--json", "as_json", is_flag=True, help="Accepted for symmetry: show prints JSON.")
@click.argument("record_id", metavar="ID")
def show_command(
    store_url: str | None, principal: str | None, kind: str | None, as_json: bool, record_id: str
) -> None:
    """Show one record with its state, as JSON.

    A state that is not a JSON object is named as opaque, not shown."""
    check_principal(principal)
    check_kind(kind)
    record = _the_one(_scan(_url(store_url), principal, kind, record_id), record_id, kind)
    shown = detail(record)
    click.echo(dump_json(shown))
    if "stateNote" in shown:
        click.echo(f"note: {shown['stateNote']}", err=True)


@sessions.command("delete")
@_store_option
@_filters
@click.option("--yes", is_flag=True, help="Really delete (without it nothing is deleted).")
@click.option("--json", "as_json", is_flag=True, help="Report what was deleted as JSON.")
@click.argument("record_id", metavar="ID")
def delete_command(
    store_url: str | None,
    principal: str | None,
    kind: str | None,
    yes: bool,
    as_json: bool,
    record_id: str,
) -> None:
    """Delete one record (only with --yes).

    ID must name one record: narrow with --kind and --principal."""
    check_principal(principal)
    check_kind(kind)
    url = _url(store_url)
    record = _the_one(_scan(url, principal, kind, record_id), record_id, kind)
    what = f"{record.kind} {json.dumps(record.id)} of principal {json.dumps(record.principal)}"
    if not yes:
        _fail(f"not deleting {safe(what)} without --yes (nothing was changed)")
    deleted = _run(
        url, lambda store: store.delete(record.kind, record.id, record.principal), write=True
    )
    if not deleted:
        _fail(f"{safe(what)} was already gone (expired or deleted meanwhile)")
    if as_json:
        click.echo(dump_json({"deleted": summary(record)}))
    else:
        click.echo(f"deleted {safe(what)}")


@sessions.command("stats")
@_store_option
@_filters
@click.option(
    "--soon",
    default=300.0,
    show_default=True,
    type=click.FloatRange(min=0),
    metavar="S",
    help="Count records expiring within this many seconds.",
)
@click.option("--top", default=10, show_default=True, type=click.IntRange(min=1, max=1000))
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of text.")
def stats_command(
    store_url: str | None,
    principal: str | None,
    kind: str | None,
    soon: float,
    top: int,
    as_json: bool,
) -> None:
    """Count by kind and principal; what expires soon; the largest states."""
    check_principal(principal)
    check_kind(kind)
    url = _url(store_url)
    records = _scan(url, principal, kind)
    report = stats(records, now=time.time(), soon=soon, top=top)
    click.echo(dump_json(report) if as_json else stats_text(report))
