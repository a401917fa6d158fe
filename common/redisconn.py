"""Redis clients from REDIS_URL: a plain server, or a primary that Redis Sentinel manages.

A Sentinel URL names the Sentinels and the primary's name; the password (if any) is the
primary's and its replicas':

    redis+sentinel://[:password@]host1:26379[,host2:26379,...]/service_name[/db][?sentinel_password=...]

Such a client asks the Sentinels for the primary's address whenever it opens a connection, and
a connection to a server that is no longer the primary (it is gone, or came back as a replica and
refuses writes) fails and is replaced. Every process that uses these clients follows a failover
by itself: what was in flight fails with a RedisError, which the callers retry anyway (Redis may
be away for a while in any deployment).
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio as aioredis
import redis.asyncio.sentinel as asentinel
import redis.sentinel as ssentinel

SCHEMES = ("redis://", "rediss://", "unix://", "redis+sentinel://")
SENTINEL_PORT = 26379


class BadRedisUrl(ValueError):
    """REDIS_URL cannot be used (the message says why)."""


@dataclass(frozen=True)
class SentinelTarget:
    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int
    password: str | None
    sentinel_password: str | None


def parse_sentinel_url(url: str) -> SentinelTarget:
    """The parts of a redis+sentinel:// URL (BadRedisUrl when one is missing or malformed)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "redis+sentinel":
        raise BadRedisUrl("not a redis+sentinel:// URL")
    netloc = parts.netloc
    password: str | None = None
    if "@" in netloc:
        auth, netloc = netloc.rsplit("@", 1)
        password = urllib.parse.unquote(auth.split(":", 1)[1] if ":" in auth else auth) or None
    sentinels = []
    for hostport in filter(None, netloc.split(",")):
        host, _, port = hostport.rpartition(":") if hostport.count(":") == 1 else (hostport, "", "")
        host = host or hostport
        try:
            sentinels.append((host, int(port) if port else SENTINEL_PORT))
        except ValueError:
            raise BadRedisUrl("bad Sentinel address %r" % hostport) from None
    if not sentinels:
        raise BadRedisUrl("names no Sentinel (redis+sentinel://host:26379,.../service_name)")
    path = [p for p in parts.path.split("/") if p]
    if not path or len(path) > 2:
        raise BadRedisUrl("needs the primary's service name as its path (.../mymaster or .../mymaster/0)")
    try:
        db = int(path[1]) if len(path) == 2 else 0
    except ValueError:
        raise BadRedisUrl("database %r is not a number" % path[1]) from None
    query = urllib.parse.parse_qs(parts.query)
    unknown = set(query) - {"sentinel_password"}
    if unknown:
        raise BadRedisUrl("unknown option %s" % ", ".join(sorted(unknown)))
    sentinel_password = query.get("sentinel_password", [None])[0] or None
    return SentinelTarget(tuple(sentinels), path[0], db, password, sentinel_password)


def check_url(url: str) -> None:
    """BadRedisUrl when `url` cannot be used."""
    if not url.startswith(SCHEMES):
        raise BadRedisUrl("must start with %s" % ", ".join(SCHEMES))
    if url.startswith("redis+sentinel://"):
        parse_sentinel_url(url)


def _sentinel_kwargs(target: SentinelTarget, kwargs: dict[str, Any]) -> dict[str, Any]:
    timeouts: dict[str, Any] = {k: kwargs[k] for k in ("socket_timeout", "socket_connect_timeout") if k in kwargs}
    if target.sentinel_password:
        timeouts["password"] = target.sentinel_password
    return timeouts


def _primary(sentinel_class: Any, url: str, kwargs: dict[str, Any]) -> Any:
    """A client of the primary a redis+sentinel:// URL names, from redis-py's asyncio or
    blocking Sentinel class."""
    target = parse_sentinel_url(url)
    sentinel = sentinel_class(
        list(target.sentinels), sentinel_kwargs=_sentinel_kwargs(target, kwargs), password=target.password, **kwargs
    )
    return sentinel.master_for(target.service, db=target.db)


def async_client(url: str, **kwargs: Any) -> aioredis.Redis:
    """An asyncio client for REDIS_URL (kwargs: redis-py connection options)."""
    if not url.startswith("redis+sentinel://"):
        return aioredis.Redis.from_url(url, **kwargs)
    client: aioredis.Redis = _primary(asentinel.Sentinel, url, kwargs)
    return client


def sync_client(url: str, **kwargs: Any) -> redis.Redis:
    """A blocking client for REDIS_URL (kwargs: redis-py connection options)."""
    if not url.startswith("redis+sentinel://"):
        return redis.Redis.from_url(url, **kwargs)
    client: redis.Redis = _primary(ssentinel.Sentinel, url, kwargs)
    return client


async def aclose(client: aioredis.Redis) -> None:
    """Close an async_client's connections, the Sentinels' included."""
    await client.aclose()
    for sentinel in getattr(getattr(client.connection_pool, "sentinel_manager", None), "sentinels", ()):
        await sentinel.aclose()


async def close_pubsub(pubsub: Any) -> None:
    """Close a PubSub's connection. Typed `Any`: redis-py 8.1 leaves `PubSub.aclose`
    unannotated and 8.2 annotates it, and a fresh install may get either."""
    await pubsub.aclose()


def close(client: redis.Redis) -> None:
    """Close a sync_client's connections, the Sentinels' included."""
    client.close()
    for sentinel in getattr(getattr(client.connection_pool, "sentinel_manager", None), "sentinels", ()):
        sentinel.close()
