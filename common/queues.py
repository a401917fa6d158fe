"""How the job streams are kept, and how deep they are.

A job's entry stays in its stream until it is done; then it is acknowledged and the stream is
trimmed (XTRIM MINID) up to the oldest entry still pending or not yet delivered. Entries are
never XDELeted: a deleted entry the group had read last makes Redis report the group's `lag`
(XINFO GROUPS) as null until the group reads past it, and `lag` is what an autoscaler (KEDA's
redis-streams trigger in lag mode) reads as the jobs waiting.

Depth, for admission, /status and /metrics, is what the group has not finished: its lag (not yet
delivered) plus its pending entries (delivered, not acknowledged).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

# KEYS[1]: the stream; ARGV[1]: the group; ARGV[2..]: entry ids done. Acknowledges them, then
# trims everything older than the first entry the group still needs.
ACK_AND_TRIM = """
local stream, group = KEYS[1], ARGV[1]
local acked = 0
if #ARGV > 1 then acked = redis.call('XACK', stream, group, unpack(ARGV, 2)) end
local pending = redis.call('XPENDING', stream, group)
local keep
if pending[1] > 0 then
  keep = pending[2]
else
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
    local name, last
    for i = 1, #g, 2 do
      if g[i] == 'name' then name = g[i + 1] elseif g[i] == 'last-delivered-id' then last = g[i + 1] end
    end
    if name == group then
      local ms, seq = string.match(last, '^(%d+)-(%d+)$')
      keep = ms .. '-' .. (tonumber(seq) + 1)
    end
  end
end
if keep then redis.call('XTRIM', stream, 'MINID', keep) end
return acked
"""


def _text(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


def group_depth(groups: Sequence[Mapping[Any, Any]], group: str) -> int | None:
    """Lag plus pending of `group`, from an XINFO GROUPS reply (redis-py's dicts); None when the
    group does not exist or Redis cannot tell its lag."""
    for g in groups:
        fields = {_text(k): v for k, v in g.items()}
        if _text(fields.get("name")) == group:
            lag = fields.get("lag")
            return None if lag is None else int(lag) + int(fields.get("pending", 0))
    return None


def depth(length: int, groups: Any, group: str) -> int:
    """A stream's depth from its XLEN and its XINFO GROUPS reply (an exception when the stream
    does not exist yet): before the group reads it, every entry waits."""
    if isinstance(groups, Exception):
        return length
    found = group_depth(groups, group)
    return length if found is None else found


async def depths(redis: Any, streams: Sequence[str], group: str) -> dict[str, int]:
    """{stream: depth} read now (one round trip; an asyncio client)."""
    pipe = redis.pipeline(transaction=False)
    for stream in streams:
        pipe.xlen(stream)
        pipe.xinfo_groups(stream)
    replies = await pipe.execute(raise_on_error=False)
    for reply in replies[0::2]:
        if isinstance(reply, Exception):
            raise reply
    return {s: depth(int(replies[2 * i]), replies[2 * i + 1], group) for i, s in enumerate(streams)}
