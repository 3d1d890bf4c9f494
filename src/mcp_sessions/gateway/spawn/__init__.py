"""The ``--spawn CMD`` backend: one stdio MCP server process per session (issue #7).

* :mod:`.child` — one process and the JSON-RPC traffic in flight with it;
* :mod:`.pool` — warm, starting and bound processes under one cap, idle reaping, crashes;
* :mod:`.backend` — the HTTP side: a client's request to its session's process and back.
"""

from .backend import SpawnBackend
from .child import ChildProcess, ProcessExited
from .pool import ProcessPool

__all__ = ["ChildProcess", "ProcessExited", "ProcessPool", "SpawnBackend"]
