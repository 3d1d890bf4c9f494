"""The interop matrix (issue #11, item 5): real third-party MCP clients, installed from their own
registries at pinned versions by scripts/install-test-tools, against `mcp-sessions demo` on
every path a deployment offers. Each client runs once per path (one driver process, every
scenario); each test asserts one scenario of one cell.

Scenarios, each asserting the behaviour a user of that client should get:
- connect: the demo's tools are listed, at the protocol version the client should negotiate;
- count: `count` three times in one session → 1, 2, 3;
- second_client: a new connection (a new session) → 1;
- parallel: 20 calls at once in one new session → 1..20, none lost, none repeated;
- handle_count: a client that can only pass arguments: `session_start`, then `count` with the
  handle as its `session` argument → 1, 2, 3 (a fresh session even on a connection that
  already has one: an explicit handle wins, issue #11 item 2);
- handle_vm: `init_vm`, then `set_ram` and `set_cpu` with the vm handle → one VM with both;
- no_carrier (2026-07-28 clients over HTTP, gateways included): a call with no session at
  all fails with an error that names `session_start`, the one thing such a client can do
  (issue #11 item 3), and never shares a state with other such clients (through --spawn they
  all reach one process: its stdio connection is no session for them).

A cell that cannot pass for a reason on the client's side is expected to fail (strict), with
the reason and the client's issue (matrix.CLIENT_SIDE_FAILURES). A full run rewrites the
table in docs/interop.md (tests/interop/table.py). Run just this matrix with
`.venv/bin/pytest tests/interop`.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from tests.interop.matrix import (
    CLIENT_KINDS,
    CLIENT_SIDE_FAILURES,
    CLIENTS_BY_ID,
    LEGACY,
    MATRIX_BUDGET,
    MODERN,
    PARALLEL,
    ROUTES,
    ROUTES_BY_ID,
    SCENARIOS,
    CellRun,
    applies,
    run_cell,
)
from tests.interop.table import RECORD, CellFacts

pytestmark = pytest.mark.slow

DEMO_TOOLS = {"count", "session_start", "init_vm", "set_ram", "set_cpu"}


def _cases() -> list[Any]:
    cases = []
    for route in ROUTES:
        for kind in CLIENT_KINDS:
            for scenario in SCENARIOS:
                if not applies(kind, route, scenario):
                    continue
                marks = []
                reason = CLIENT_SIDE_FAILURES.get((kind.id, route.id, scenario))
                if reason is not None:
                    marks.append(pytest.mark.xfail(strict=True, reason=reason))
                cases.append(
                    pytest.param(
                        route.id,
                        kind.id,
                        scenario,
                        marks=marks,
                        id=f"{route.id}-{kind.id}-{scenario}",
                    )
                )
    return cases


_RUNS: dict[tuple[str, str], CellRun | str] = {}
_SPENT = [0.0]  # seconds spent in driver runs so far


def cell(request: pytest.FixtureRequest, client: str, route: str) -> CellRun:
    """The cell's driver run, once per cell; a failed run fails each of its scenarios."""
    kind, path = CLIENTS_BY_ID[client], ROUTES_BY_ID[route]
    kind.require()
    if (client, route) not in _RUNS:
        target = request.getfixturevalue(f"{route.replace('-', '_')}_target")
        if _SPENT[0] > MATRIX_BUDGET:
            pytest.fail(f"the matrix's driver runs took over {MATRIX_BUDGET:g} s; not run")
        started = time.monotonic()
        try:
            run = run_cell(kind, path, target)
        except AssertionError as exc:
            _RUNS[client, route] = str(exc)
        else:
            _RUNS[client, route] = run
            RECORD.cells[client, route] = CellFacts(run.version, run.protocol)
        finally:
            _SPENT[0] += time.monotonic() - started
    run_or_error = _RUNS[client, route]
    if isinstance(run_or_error, str):
        pytest.fail(run_or_error)
    return run_or_error


def value_of(run: CellRun, scenario: str) -> Any:
    """The scenario's value; fails with the client's error when it had none."""
    outcome = run.result(scenario)
    key = (run.kind.id, run.path.id, scenario)
    if "error" in outcome:
        RECORD.notes[key] = outcome["error"]
        pytest.fail(f"{scenario} failed in the client: {outcome['error']}")
    RECORD.notes[key] = f"got {outcome['value']!r}"
    return outcome["value"]


@pytest.mark.parametrize(("route", "client", "scenario"), _cases())
def test_interop(request: pytest.FixtureRequest, route: str, client: str, scenario: str) -> None:
    run = cell(request, client, route)
    check = CHECKS[scenario]
    check(run)


def check_connect(run: CellRun) -> None:
    tools = set(value_of(run, "connect"))
    assert tools >= DEMO_TOOLS, f"the demo's tools are missing: {sorted(DEMO_TOOLS - tools)}"
    expected = LEGACY if run.kind.era == LEGACY else MODERN
    assert run.protocol == expected, f"negotiated {run.protocol}, expected {expected}"


def check_count(run: CellRun) -> None:
    assert value_of(run, "count") == [1, 2, 3]


def check_second_client(run: CellRun) -> None:
    assert value_of(run, "second_client") == [1]


def check_parallel(run: CellRun) -> None:
    value = value_of(run, "parallel")
    if run.kind.id == "inspector":
        # The Inspector's --load mode reports a summary, not values: all 20 calls succeeded,
        # and the next call in that session sees every one of them.
        assert value == {"ok": PARALLEL, "errors": [], "next": PARALLEL + 1}
    else:
        assert sorted(value) == list(range(1, PARALLEL + 1))


def check_handle_count(run: CellRun) -> None:
    assert value_of(run, "handle_count") == [1, 2, 3]


def check_handle_vm(run: CellRun) -> None:
    assert value_of(run, "handle_vm") == {"ram_gb": 8, "cpus": 4}


def check_no_carrier(run: CellRun) -> None:
    outcome = run.result("no_carrier")
    key = (run.kind.id, run.path.id, "no_carrier")
    RECORD.notes[key] = outcome.get("error") or f"got {outcome.get('value')!r}"
    assert "error" in outcome, f"a call with no session succeeded: {outcome}"
    assert "session_start" in outcome["error"], outcome["error"]


CHECKS = {
    "connect": check_connect,
    "count": check_count,
    "second_client": check_second_client,
    "parallel": check_parallel,
    "handle_count": check_handle_count,
    "handle_vm": check_handle_vm,
    "no_carrier": check_no_carrier,
}
assert set(CHECKS) == set(SCENARIOS)
