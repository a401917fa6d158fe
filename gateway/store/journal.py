"""A session's state and sent messages kept in Redis as it goes, so that any gateway can take it
over when its connection breaks (docs/clients/resuming.md).

`stt:session:{id}` (a hash) holds what a gateway needs to go on: the resume token's hash, the
owner and its epoch, a lease the owner renews while its client is connected, the options, the
core of the session (utterance numbering, the open utterance, the context, the recent text),
one field per pending final, `seq`, and `pos` (how much of the client's audio the gateway
holds). `stt:session:{id}:log` is the list of messages sent (capped), each written *before* it
is sent, so a client that missed it gets it again with its original `seq`.

Every write is fenced: a Lua script checks that the writer's epoch is still the session's
(a takeover increments it), so a gateway that lost its session (to a resume elsewhere) learns
so at its next write and stops; it never delivers or records anything after that.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any, Protocol

from common import keys
from common.clock import now_ms
from gateway.errors import ResumeRefused
from gateway.store.jobqueue import WriteBatcher

LOG_CAP = 500  # messages kept for replay
LEASE_MS = 3000  # a connected owner renews its lease well within this
RESUMES_PER_MINUTE = 6

# KEYS[1] state; ARGV: epoch, ttl, then field/value pairs (a value of "" deletes the field).
_UPDATE = """
if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[1] then return 0 end
for i = 3, #ARGV, 2 do
  if ARGV[i + 1] == '' then redis.call('HDEL', KEYS[1], ARGV[i])
  else redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""
# KEYS[1] state, KEYS[2] log; ARGV: epoch, ttl, message, seq, cap.
_LOG = """
if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[1] then return 0 end
redis.call('RPUSH', KEYS[2], ARGV[3])
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[5]), -1)
redis.call('HSET', KEYS[1], 'seq', ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""
# KEYS[1] state, KEYS[2] resume counter; ARGV: token hash, gateway, now ms, lease ms, ttl,
# resumes allowed a minute. Returns {status, epoch}: status 1 taken over, 0 unknown, -1 wrong
# token, -2 still connected elsewhere (its lease is fresh), -3 resumed too often (counting the
# takeovers: a client waiting for a dead gateway's lease to run out is not flooding).
_TAKE_OVER = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, 0} end
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then return {-1, 0} end
local lease = tonumber(redis.call('HGET', KEYS[1], 'lease') or '0')
if redis.call('HGET', KEYS[1], 'connected') == '1' and lease > tonumber(ARGV[3]) then return {-2, 0} end
local count = redis.call('INCR', KEYS[2])
if count == 1 then redis.call('EXPIRE', KEYS[2], 60) end
if count > tonumber(ARGV[6]) then return {-3, 0} end
local epoch = redis.call('HINCRBY', KEYS[1], 'epoch', 1)
redis.call('HSET', KEYS[1], 'owner', ARGV[2], 'connected', '1', 'lease', tonumber(ARGV[3]) + tonumber(ARGV[4]))
redis.call('EXPIRE', KEYS[1], ARGV[5])
return {1, epoch}
"""


class Fenced(Exception):
    """The session was taken over by another gateway: this one must stop speaking for it."""


def new_token() -> str:
    return secrets.token_urlsafe(24)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Journal(Protocol):
    """Where a session records what a gateway taking it over would need."""

    async def update(self, fields: dict[str, str]) -> None:
        """Set fields of the session's state ("" deletes one); Fenced when it is not ours."""
        ...

    async def log(self, msg: dict[str, Any]) -> None:
        """Record a message about to be sent (with its seq); Fenced when it is not ours."""
        ...


class NullJournal:
    """For sessions that cannot be resumed (other protocols, tests of the session alone)."""

    async def update(self, fields: dict[str, str]) -> None:
        return None

    async def log(self, msg: dict[str, Any]) -> None:
        return None


@dataclass
class RedisJournal:
    writes: WriteBatcher
    session: str
    epoch: int
    ttl_s: int

    async def update(self, fields: dict[str, str]) -> None:
        args: list[Any] = [self.epoch, self.ttl_s]
        for name, value in fields.items():
            args += [name, value]
        [ok] = await self.writes.pipelined(("eval", _UPDATE, 1, keys.session_key(self.session), *args))
        if not ok:
            raise Fenced(self.session)

    async def log(self, msg: dict[str, Any]) -> None:
        [ok] = await self.writes.pipelined(
            (
                "eval",
                _LOG,
                2,
                keys.session_key(self.session),
                keys.session_log(self.session),
                self.epoch,
                self.ttl_s,
                json.dumps(msg, separators=(",", ":")),
                msg.get("seq", 0),
                LOG_CAP,
            )
        )
        if not ok:
            raise Fenced(self.session)

    async def renew(self) -> None:
        """The client is still connected: keep the lease (a resume elsewhere waits for it)."""
        await self.update({"connected": "1", "lease": str(now_ms() + LEASE_MS)})

    async def detach(self) -> None:
        """The connection is gone: the session may be resumed at once, anywhere."""
        await self.update({"connected": "0", "lease": "0"})


async def create(
    writes: WriteBatcher, session: str, token: str, gateway: str, fields: dict[str, str], ttl_s: int
) -> RedisJournal:
    """The state of a new session, owned by `gateway` at epoch 1."""
    state = {
        "token": token_hash(token),
        "owner": gateway,
        "epoch": "1",
        "connected": "1",
        "lease": str(now_ms() + LEASE_MS),
        "seq": "-1",
        **fields,
    }
    key = keys.session_key(session)
    await writes.pipelined(("hset", key, None, None, state), ("expire", key, ttl_s))
    return RedisJournal(writes, session, 1, ttl_s)


@dataclass
class Resumed:
    journal: RedisJournal
    state: dict[str, str]
    log: list[dict[str, Any]]  # every message still kept, in order


async def take_over(writes: WriteBatcher, session: str, token: str, gateway: str, ttl_s: int) -> Resumed:
    """Make `gateway` the session's owner (the old one is fenced), and read what it needs."""
    key = keys.session_key(session)
    [(status, epoch)] = await writes.pipelined(
        (
            "eval",
            _TAKE_OVER,
            2,
            key,
            keys.session_resumes(session),
            token_hash(token),
            gateway,
            int(time.time() * 1000),
            LEASE_MS,
            ttl_s,
            RESUMES_PER_MINUTE,
        )
    )
    if status == 0:
        raise ResumeRefused("unknown_session", "no session %s to resume (it ended, or expired)" % session[:32])
    if status == -1:
        raise ResumeRefused("bad_token", "the resume token is not this session's")
    if status == -2:
        raise ResumeRefused("session_in_use", "the session is still connected elsewhere; try again shortly")
    if status == -3:
        raise ResumeRefused(
            "resume_flood", "the session was resumed more than %d times in a minute" % RESUMES_PER_MINUTE
        )
    state, log = await writes.pipelined(("hgetall", key), ("lrange", keys.session_log(session), 0, -1))
    decoded = {k.decode(): v.decode() for k, v in state.items()}
    messages = [json.loads(m) for m in log]
    return Resumed(RedisJournal(writes, session, int(epoch), ttl_s), decoded, messages)
