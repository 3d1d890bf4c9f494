"""Which Redis a store URL names, and the redis-py client for it (issue #15 item 2).

Three topologies, one data path (:mod:`mcp_sessions.stores.redis` sends the same commands to
each):

- ``redis://[user:password@]host[:port][/db]`` and ``rediss://`` (TLS): one server;
- ``redis+cluster://[user:password@]host:port[,host:port…]`` and ``rediss+cluster://``: a
  Redis Cluster, reached through any of the listed nodes (the client learns the rest and the
  slot map from them, and follows ``MOVED``/``ASK`` redirections by itself). A cluster has
  only database 0, so the path must be empty or ``/0``;
- ``redis+sentinel://[user:password@]host:port[,host:port…]/service[/db]`` (and
  ``rediss+sentinel://``): the master that the listed Sentinels name ``service``; after a
  failover the next connection goes to the new master. The credentials are the data
  nodes'; Sentinels that need their own take ``sentinel_username`` / ``sentinel_password``.

Every record key carries a hash tag (``{…}``) and every script touches one key, so nothing
here needs to know about slots (see docs/stores.md, "Redis Cluster").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, cast
from urllib.parse import unquote

import redis.asyncio as aioredis
import redis.exceptions as redis_errors
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialBackoff

from .base import StoreError

#: Scheme → (topology, TLS).
SCHEMES: Final[Mapping[str, tuple[str, bool]]] = {
    "redis": ("single", False),
    "rediss": ("single", True),
    "redis+cluster": ("cluster", False),
    "rediss+cluster": ("cluster", True),
    "redis+sentinel": ("sentinel", False),
    "rediss+sentinel": ("sentinel", True),
}

#: Driver errors that mean "a part of the deployment is not serving right now" and are worth
#: a retry: a cluster slot without a live master (``CLUSTERDOWN``, ``TRYAGAIN`` during a
#: migration of a multi-key command, a slot no node claims), a failover in progress. The
#: store answers them with StoreUnavailable (-31006), like a refused connection. Checked
#: before the generic ResponseError branch, of which most are subclasses; and
#: RedisClusterException is not a RedisError at all.
UNAVAILABLE_ERRORS: Final[tuple[type[Exception], ...]] = (
    redis_errors.ClusterDownError,
    redis_errors.TryAgainError,
    redis_errors.ClusterError,
    redis_errors.SlotNotCoveredError,
)

_FORMS = (
    "expected redis://host:port/db, redis+cluster://host:port[,host:port…] or "
    "redis+sentinel://host:port[,host:port…]/service[/db] (rediss… for TLS)"
)


class _ScriptPipeline(ClusterPipeline):
    """A cluster pipeline that takes EVALSHA. redis-py refuses it in cluster pipelines (its
    list of blocked commands), but routes it by its keys like any keyed command when sent
    through ``execute_command``; each script here touches one key, so one slot."""

    def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> ClusterPipeline:
        return self.execute_command("EVALSHA", sha, numkeys, *keys_and_args)

    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> Any:
        try:
            return await super().execute(raise_on_error, allow_redirections)
        except AttributeError as exc:  # see _Cluster
            raise redis_errors.ConnectionError(
                f"connection closed by a cluster topology refresh ({exc})"
            ) from None


class _Cluster(RedisCluster):
    """RedisCluster whose pipelines take EVALSHA (see :class:`_ScriptPipeline`), and whose
    commands cut off by the driver's own topology refresh fail as a lost connection.

    On CLUSTERDOWN or an uncovered slot (a master gone) the driver closes every connection
    to rebuild its slot table, including connections other tasks are sending on; they fail
    with AttributeError before their command is written (redis/redis-py#4322 is the MOVED
    case). Nothing was sent, so that is a ConnectionError: retryable, StoreUnavailable.
    """

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().execute_command(*args, **kwargs)
        except AttributeError as exc:
            raise redis_errors.ConnectionError(
                f"connection closed by a cluster topology refresh ({exc})"
            ) from None

    def pipeline(
        self, transaction: Any | None = None, shard_hint: Any | None = None
    ) -> ClusterPipeline:
        if shard_hint:
            return super().pipeline(transaction, shard_hint)  # refused there, with its message
        # mypy sees an abstract attribute redis-py's own ClusterPipeline leaves unset too.
        return _ScriptPipeline(self, transaction)  # type: ignore[abstract]


@dataclass(frozen=True)
class Topology:
    """A parsed Redis store URL: where to connect and how."""

    kind: str  # "single", "cluster" or "sentinel"
    nodes: tuple[tuple[str, int], ...]
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False
    service: str | None = None
    #: Options of the Sentinels themselves (``sentinel_username``, ``sentinel_password``).
    sentinel_options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def address(self) -> str:
        """The nodes, for messages: ``host:port,host:port`` (``[v6]:port``), plus the
        Sentinel service name."""
        shown = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in self.nodes)
        return f"{shown}/{self.service}" if self.service else shown

    def client(
        self,
        *,
        connect_timeout: float,
        timeout: float,
        retries: int,
        tls_options: Mapping[str, Any] | None = None,
    ) -> aioredis.Redis:
        """The redis-py asyncio client; connecting is lazy. Each attempt waits at most
        ``connect_timeout`` / ``timeout``; a failed command is retried ``retries`` times with
        a short backoff (issue #3). A cluster client is returned as ``Redis``: it takes the
        same commands (the store sends none that a cluster refuses)."""
        common: dict[str, Any] = {
            "username": self.username,
            "password": self.password,
            "socket_connect_timeout": connect_timeout,
            "socket_timeout": timeout,
            "retry": Retry(ExponentialBackoff(cap=0.5, base=0.05), retries),
            "decode_responses": True,
        }
        if self.tls:
            common["ssl"] = True
        common.update(tls_options or {})
        if self.kind == "cluster":
            cluster = _Cluster(
                startup_nodes=[ClusterNode(host, port) for host, port in self.nodes],
                # A slot without a master fails its own commands (-31006), not every command.
                require_full_coverage=False,
                # A MOVED reply (a slot migrated) patches the slot table. The driver's
                # default also rebuilds it every 5th MOVED by closing every connection,
                # including those other tasks are using at that moment: they fail with
                # AttributeError (redis/redis-py#4322).
                reinitialize_steps=0,
                **common,
            )
            return cast(aioredis.Redis, cluster)
        if self.kind == "sentinel":
            assert self.service is not None
            sentinel_kwargs: dict[str, Any] = {
                "socket_connect_timeout": connect_timeout,
                "socket_timeout": timeout,
                **self.sentinel_options,
            }
            if self.tls:
                sentinel_kwargs["ssl"] = True
                sentinel_kwargs.update(tls_options or {})
            sentinel = Sentinel(  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
                list(self.nodes), sentinel_kwargs=sentinel_kwargs
            )
            master: aioredis.Redis = sentinel.master_for(self.service, db=self.db, **common)
            return master
        host, port = self.nodes[0]
        return aioredis.Redis(host=host, port=port, db=self.db, **common)


async def config_values(client: aioredis.Redis, *names: str) -> list[Any]:
    """``CONFIG GET`` of each name: its reply (a dict), or the error that refused it (managed
    services often disable CONFIG). One command each, not a pipeline: a cluster client
    refuses CONFIG in a pipeline, and this runs once, at start-up."""
    replies: list[Any] = []
    for name in names:
        try:
            replies.append(await client.config_get(name))
        except redis_errors.ResponseError as exc:
            replies.append(exc)
    return replies


def _split_host(text: str, shown: str) -> tuple[str, int]:
    host, port_text = text, ""
    if text.startswith("["):  # [v6] or [v6]:port
        end = text.find("]")
        if end < 0:
            raise StoreError(f"store URL {shown!r}: unclosed '[' in host {text!r}")
        host, rest = text[1:end], text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise StoreError(f"store URL {shown!r}: bad host {text!r}")
        port_text = rest[1:]
    elif ":" in text:
        host, _, port_text = text.rpartition(":")
    if not host:
        raise StoreError(f"store URL {shown!r}: a node without a host; {_FORMS}")
    if not port_text:
        return host, 6379
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise StoreError(f"store URL {shown!r}: the port must be a number from 1 to 65535")
    return host, int(port_text)


def parse_url(url: str, shown: str, scheme: str, sentinel_options: Mapping[str, Any]) -> Topology:
    """The topology of a ``redis…://`` URL (its query string already taken apart by the
    caller); :class:`StoreError` naming ``shown`` (the URL, password hidden) if malformed."""
    kind, tls = SCHEMES[scheme]
    rest = url.split("://", 1)[1].split("?", 1)[0].split("#", 1)[0]
    netloc, _, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        if colon:
            username, password = unquote(user) or None, unquote(secret)
        elif kind == "sentinel":
            # redis+sentinel://password@host…: Sentinel deployments rarely have users.
            password = unquote(user)
        else:
            username = unquote(user)
    if not hosts:
        raise StoreError(f"store URL {shown!r}: no host; {_FORMS}")
    nodes = tuple(_split_host(node, shown) for node in hosts.split(","))
    if kind == "single" and len(nodes) > 1:
        raise StoreError(
            f"store URL {shown!r}: several hosts need redis+cluster:// or redis+sentinel://"
        )
    segments = [segment for segment in path.split("/") if segment]
    service = None
    if kind == "sentinel":
        if not segments:
            raise StoreError(
                f"store URL {shown!r}: no service name; expected "
                f"{scheme}://host:port[,host:port…]/service[/db]"
            )
        service = unquote(segments.pop(0))
    db_text = segments[0] if segments else ""
    if len(segments) > 1 or (db_text and not db_text.isdigit()):
        raise StoreError(
            f"store URL {shown!r}: the path must be a database number, got {path!r}; {_FORMS}"
        )
    db = int(db_text or 0)
    if kind == "cluster" and db != 0:
        raise StoreError(f"store URL {shown!r}: a Redis Cluster has only database 0")
    if kind != "sentinel" and sentinel_options:
        raise StoreError(f"store URL {shown!r}: sentinel_* options need redis+sentinel://")
    return Topology(
        kind,
        nodes,
        db,
        username,
        password,
        tls,
        service,
        {name: value for name, value in sentinel_options.items() if value is not None},
    )
