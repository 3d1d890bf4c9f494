"""A demo replica on a Redis Cluster whose master goes away and comes back (issue #15 item 2):
while the cluster is down every request answers -31006, never a traceback; after the master
is back the sessions go on from what was acknowledged (the masters fsync every write)."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from tests.fixtures.redis_topologies import require_redis_binaries, start_cluster, wait_until

from mcp_sessions.core.errors import STORE_UNAVAILABLE

from .helpers import PROTOCOL, TIMEOUT, new_id, sid, start_demo, value

pytestmark = [pytest.mark.anyio, pytest.mark.redis]


async def test_a_cluster_master_outage_is_31006_and_loses_nothing(tmp_path: Path) -> None:
    require_redis_binaries()
    cluster = start_cluster(tmp_path / "cluster", appendonly=True)
    (tmp_path / "demo").mkdir()
    try:
        url = cluster.url + "?op_timeout=1&timeout=0.5&connect_timeout=0.5"
        demo = start_demo(tmp_path / "demo", "--store", url)
        try:
            sessions = [new_id() for _ in range(6)]
            async with Client(demo.url, mode=PROTOCOL["modern"], read_timeout_seconds=TIMEOUT) as c:
                for session_id in sessions:
                    assert value(await c.call_tool("count", {}, meta=sid(session_id))) == 1
                victim = cluster.masters[1]
                await anyio.to_thread.run_sync(victim.stop)
                others = [n for n in cluster.masters if n is not victim]

                def cluster_down() -> bool:
                    with others[0].client(timeout=1) as client:
                        info = client.execute_command("CLUSTER", "INFO")
                    return "cluster_state:fail" in str(info)

                await anyio.to_thread.run_sync(wait_until, "cluster_state:fail", cluster_down)
                for session_id in sessions:
                    with pytest.raises(MCPError) as refused:
                        await c.call_tool("count", {}, meta=sid(session_id))
                    assert refused.value.error.code == STORE_UNAVAILABLE
                await anyio.to_thread.run_sync(victim.start)
                await anyio.to_thread.run_sync(cluster.wait_ok)
                for session_id in sessions:
                    # Bounded: the client may still hold a connection to the old process.
                    for _attempt in range(20):
                        try:
                            n = value(await c.call_tool("count", {}, meta=sid(session_id)))
                            break
                        except MCPError as error:
                            assert error.error.code == STORE_UNAVAILABLE
                            await anyio.sleep(0.2)
                    assert n == 2, session_id  # the first count survived the restart
        finally:
            demo.stop()
        log = demo.log.read_text(errors="replace")
        assert "session store unavailable, answering -31006" in log
        assert "Traceback" not in log, log[-3000:]
    finally:
        cluster.stop()
