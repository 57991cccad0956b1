"""Playback sessions, rate-limit buckets and the decision cache on Redis, shared by every worker.

The rules are those of the sans-IO cores (``SessionRegistry``, ``TokenBucket``,
``DecisionCache``); what must be atomic across workers -- taking the last stream slot, spending
a token, reading a decision with its account generation -- runs server-side in one Lua script or
one command. Times are the callers' epoch seconds, stored as values and compared in the script;
Redis key expiry only collects garbage (generously after the value stops mattering).

Keys (``prefix`` default ``me:``): ``s:<sid>`` hash of a session, ``a:<account>`` sorted set of
its session ids by expiry, ``rl:<name>:<key>`` a bucket, ``d:<account>:<event>`` a decision,
``g:<account>`` an account's generation, ``kg:<account>:<event>`` a known-good time.

Every Redis error or timeout is translated into :class:`SharedStateUnavailable` at this boundary;
the playback service decides per operation whether that fails open or closed.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from mainevent.common.ratelimit import RateLimitStore, take_in_turn
from mainevent.common.shared import SharedStateUnavailable
from mainevent.control.decisions import CachedDecision
from mainevent.control.entitlement import Denial
from mainevent.control.sessions import PlaybackSession

__all__ = ["RedisDecisionStore", "RedisRateLimitStore", "RedisSessionStore", "connect"]

T = TypeVar("T")
_GC_MARGIN_MS = 600_000  # keys outlive their meaning by 10 minutes: expiry is only a collector


def connect(url: str, *, timeout_s: float, max_connections: int = 256) -> aioredis.Redis:
    """A pooled asyncio client; a stale connection (Redis restarted) is retried once at once.

    The pool is bounded and blocking: a request finding every connection busy waits for one up to
    ``timeout_s`` (then: unavailable) rather than opening connections without limit.
    """
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout_s,
        decode_responses=True,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 1),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )
    return aioredis.Redis.from_pool(pool)


async def _call(op: Callable[[], Awaitable[T]]) -> T:
    try:
        return await op()
    except (RedisError, OSError) as exc:
        raise SharedStateUnavailable(f"redis: {type(exc).__name__}: {exc}") from exc


def _f(x: float) -> str:
    return repr(float(x))


# -- sessions -------------------------------------------------------------------------------------

# KEYS[1] account set; ARGV: prefix, sid, account, event, device, now, limit, expires, gc_ms
_START = """
local acct = KEYS[1]
local now = tonumber(ARGV[6])
redis.call('ZREMRANGEBYSCORE', acct, '-inf', now)
local ids = redis.call('ZRANGE', acct, 0, -1)
local same = {}
local others = 0
for _, id in ipairs(ids) do
  local dev = redis.call('HGET', ARGV[1] .. 's:' .. id, 'device')
  if not dev then
    redis.call('ZREM', acct, id)
  elseif dev == ARGV[5] then
    table.insert(same, id)
  else
    others = others + 1
  end
end
if others >= tonumber(ARGV[7]) then return 0 end
for _, id in ipairs(same) do
  redis.call('ZREM', acct, id)
  redis.call('DEL', ARGV[1] .. 's:' .. id)
end
local skey = ARGV[1] .. 's:' .. ARGV[2]
redis.call('HSET', skey, 'account', ARGV[3], 'event', ARGV[4], 'device', ARGV[5], 'expires', ARGV[8])
redis.call('PEXPIRE', skey, ARGV[9])
redis.call('ZADD', acct, ARGV[8], ARGV[2])
redis.call('PEXPIRE', acct, ARGV[9])
return 1
"""

# KEYS[1] session hash; ARGV: prefix, sid, now, ttl, gc_ms -> {account, event, device, expires}
_HEARTBEAT = """
local v = redis.call('HMGET', KEYS[1], 'account', 'event', 'device', 'expires')
if not v[1] then return false end
local now = tonumber(ARGV[3])
local exp = tonumber(v[4])
if exp <= now then return false end
local new = math.max(exp, now + tonumber(ARGV[4]))
local s = string.format('%.17g', new)
redis.call('HSET', KEYS[1], 'expires', s)
redis.call('PEXPIRE', KEYS[1], ARGV[5])
local acct = ARGV[1] .. 'a:' .. v[1]
redis.call('ZADD', acct, s, ARGV[2])
redis.call('PEXPIRE', acct, ARGV[5])
return {v[1], v[2], v[3], s}
"""

# KEYS[1] session hash; ARGV: prefix, sid
_END = """
local account = redis.call('HGET', KEYS[1], 'account')
if not account then return 0 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', ARGV[1] .. 'a:' .. account, ARGV[2])
return 1
"""


class RedisSessionStore:
    """:class:`~mainevent.control.sessions.SessionStore` on Redis (one primary)."""

    def __init__(self, client: aioredis.Redis, ttl: float, prefix: str = "me:") -> None:
        self.ttl = ttl
        self._r = client
        self._p = prefix
        self._gc_ms = str(int(ttl * 1000) + _GC_MARGIN_MS)
        self._start = client.register_script(_START)
        self._heartbeat = client.register_script(_HEARTBEAT)
        self._end = client.register_script(_END)

    async def per_event(self, now: float) -> dict[str, int] | None:
        """Not counted on Redis (it would take a scan of every session key): None."""
        return None

    def _gc(self, expires: float, now: float) -> str:
        return str(max(int((expires - now) * 1000), 0) + int(self._gc_ms))

    async def start(
        self,
        *,
        session_id: str,
        account_id: str,
        event_id: str,
        device_id: str,
        now: float,
        limit: int,
        until: float | None = None,
    ) -> PlaybackSession | None:
        """See :meth:`SessionRegistry.start`; one script, so the limit holds across workers."""
        expires = max(now + self.ttl, until or 0.0)
        args = [self._p, session_id, account_id, event_id, device_id, _f(now), str(limit)]
        args += [_f(expires), self._gc(expires, now)]
        ok = await _call(lambda: self._start(keys=[f"{self._p}a:{account_id}"], args=args))
        if not ok:
            return None
        return PlaybackSession(session_id, account_id, event_id, device_id, expires)

    async def get(self, session_id: str, now: float) -> PlaybackSession | None:
        """See :meth:`SessionRegistry.get`."""
        key = f"{self._p}s:{session_id}"
        v: list[Any] = await _call(
            lambda: self._r.hmget(key, ["account", "event", "device", "expires"])
        )
        if v[0] is None or float(v[3]) <= now:
            return None
        return PlaybackSession(session_id, v[0], v[1], v[2], float(v[3]))

    async def heartbeat(self, session_id: str, now: float) -> PlaybackSession | None:
        """See :meth:`SessionRegistry.heartbeat`."""
        key = f"{self._p}s:{session_id}"
        args = [self._p, session_id, _f(now), _f(self.ttl), self._gc_ms]
        v = await _call(lambda: self._heartbeat(keys=[key], args=args))
        if not v:
            return None
        return PlaybackSession(session_id, v[0], v[1], v[2], float(v[3]))

    async def restore(self, session: PlaybackSession, now: float) -> PlaybackSession:
        """See :meth:`SessionRegistry.restore` (not limit-checked: the token proves the slot)."""
        expires = max(session.expires_at, now + self.ttl)
        skey, akey = f"{self._p}s:{session.id}", f"{self._p}a:{session.account_id}"
        gc = self._gc(expires, now)

        async def run() -> None:
            async with self._r.pipeline(transaction=True) as pipe:
                pipe.hset(
                    skey,
                    mapping={
                        "account": session.account_id,
                        "event": session.event_id,
                        "device": session.device_id,
                        "expires": _f(expires),
                    },
                )
                pipe.pexpire(skey, int(gc))
                pipe.zadd(akey, {session.id: expires})
                pipe.pexpire(akey, int(gc))
                await pipe.execute()

        await _call(run)
        return PlaybackSession(
            session.id, session.account_id, session.event_id, session.device_id, expires
        )

    async def end(self, session_id: str) -> None:
        """See :meth:`SessionRegistry.end`."""
        key = f"{self._p}s:{session_id}"
        await _call(lambda: self._end(keys=[key], args=[self._p, session_id]))

    async def count(self) -> int | None:
        """Not counted: it would take a scan of the keyspace (see Redis's own metrics)."""
        return None


# -- rate limits ----------------------------------------------------------------------------------

# The arithmetic of TokenBucket.take. KEYS[1] bucket; ARGV: rate, burst, now, cost, gc_ms
_TAKE = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local cost = tonumber(ARGV[4])
local v = redis.call('HMGET', KEYS[1], 't', 'u')
local tokens = tonumber(v[1])
local updated = tonumber(v[2])
if tokens == nil then tokens = burst; updated = now end
if now > updated then
  tokens = math.min(burst, tokens + (now - updated) * rate)
  updated = now
end
local wait = 0
if tokens >= cost then tokens = tokens - cost else wait = (cost - tokens) / rate end
redis.call('HSET', KEYS[1], 't', string.format('%.17g', tokens), 'u', string.format('%.17g', updated))
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return string.format('%.17g', wait)
"""


# Two buckets in turn (_TAKE twice, the second only if the first allowed): one round trip.
# KEYS[1], KEYS[2] buckets; ARGV: rate, burst, gc_ms of each (1-3, 4-6), now (7).
_TAKE_IN_TURN = """
local function take(key, rate, burst, gc, now)
  local v = redis.call('HMGET', key, 't', 'u')
  local tokens = tonumber(v[1])
  local updated = tonumber(v[2])
  if tokens == nil then tokens = burst; updated = now end
  if now > updated then
    tokens = math.min(burst, tokens + (now - updated) * rate)
    updated = now
  end
  local wait = 0
  if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
  redis.call('HSET', key, 't', string.format('%.17g', tokens), 'u', string.format('%.17g', updated))
  redis.call('PEXPIRE', key, gc)
  return wait
end
local now = tonumber(ARGV[7])
local wait = take(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], now)
if wait > 0 then return {1, string.format('%.17g', wait)} end
wait = take(KEYS[2], tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6], now)
if wait > 0 then return {2, string.format('%.17g', wait)} end
return {0, '0'}
"""


class RedisRateLimitStore:
    """:class:`~mainevent.common.ratelimit.RateLimitStore` on Redis: one bucket per key for all."""

    def __init__(
        self, client: aioredis.Redis, name: str, rate: float, burst: float, prefix: str = "me:"
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.rate = rate
        self.burst = burst
        self._p = f"{prefix}rl:{name}:"
        # A bucket left alone refills in burst/rate seconds; after that it is as good as absent.
        self._gc_ms = str(math.ceil(burst / rate * 1000) + _GC_MARGIN_MS)
        self._client = client
        self._take = client.register_script(_TAKE)
        self._take_in_turn = client.register_script(_TAKE_IN_TURN)

    async def take(self, key: str, now: float, cost: float = 1.0) -> float:
        """See :meth:`KeyedRateLimiter.take`."""
        args = [_f(self.rate), _f(self.burst), _f(now), _f(cost), self._gc_ms]
        wait = await _call(lambda: self._take(keys=[self._p + key], args=args))
        return float(wait)

    async def take_in_turn(
        self, key: str, then: RateLimitStore, then_key: str, now: float
    ) -> tuple[RateLimitStore | None, float]:
        """See :meth:`RateLimitStore.take_in_turn`: one script when both buckets are on this
        Redis (a playback start's address and account buckets), else two takes."""
        if not isinstance(then, RedisRateLimitStore) or then._client is not self._client:
            return await take_in_turn(self, key, then, then_key, now)
        keys = [self._p + key, then._p + then_key]
        args = [_f(self.rate), _f(self.burst), self._gc_ms]
        args += [_f(then.rate), _f(then.burst), then._gc_ms, _f(now)]
        which, wait = await _call(lambda: self._take_in_turn(keys=keys, args=args))
        if int(which) == 0:
            return None, 0.0
        return (self if int(which) == 1 else then), float(wait)


# -- decisions ------------------------------------------------------------------------------------

# KEYS[1] decision, KEYS[2] generation, KEYS[3] known-good; ARGV: "denial|at", now, ttl_ms, kg_ms
_PUT = """
local gen = redis.call('GET', KEYS[2]) or '0'
redis.call('SET', KEYS[1], gen .. '|' .. ARGV[1], 'PX', ARGV[3])
if ARGV[4] ~= '' then redis.call('SET', KEYS[3], ARGV[2], 'PX', ARGV[4]) end
return 1
"""


class RedisDecisionStore:
    """:class:`~mainevent.control.decisions.DecisionStore` on Redis, shared by every worker."""

    def __init__(
        self, client: aioredis.Redis, ttl: float, known_good_ttl: float, prefix: str = "me:"
    ) -> None:
        self.ttl = ttl
        self.known_good_ttl = known_good_ttl
        self._r = client
        self._p = prefix
        self._ttl_ms = str(int(ttl * 1000) + _GC_MARGIN_MS)
        self._kg_ms = str(int(known_good_ttl * 1000) + _GC_MARGIN_MS)
        self._gen_ms = max(int(self._ttl_ms), int(self._kg_ms))
        self._put = client.register_script(_PUT)

    async def get(self, account_id: str, event_id: str, now: float) -> CachedDecision | None:
        """See :meth:`DecisionCache.get` (entry and generation read in one MGET)."""
        keys = [f"{self._p}d:{account_id}:{event_id}", f"{self._p}g:{account_id}"]
        values = await _call(lambda: self._r.mget(keys))
        entry, gen = (v.decode() if isinstance(v, bytes) else v for v in values)
        if entry is None:
            return None
        stored_gen, denial, at = entry.split("|")
        generation = int(gen or 0)
        if now - float(at) >= self.ttl or int(stored_gen) != generation:
            return None
        return CachedDecision(Denial(denial) if denial else None, float(at), generation)

    async def put(self, account_id: str, event_id: str, denial: Denial | None, now: float) -> None:
        """See :meth:`DecisionCache.put`; the generation is read in the same script."""
        keys = [
            f"{self._p}d:{account_id}:{event_id}",
            f"{self._p}g:{account_id}",
            f"{self._p}kg:{account_id}:{event_id}",
        ]
        args = [f"{denial.value if denial else ''}|{_f(now)}", _f(now), self._ttl_ms]
        args.append(self._kg_ms if denial is None else "")
        await _call(lambda: self._put(keys=keys, args=args))

    async def mark_known_good(self, account_id: str, event_id: str, now: float) -> None:
        """See :meth:`DecisionCache.mark_known_good`."""
        key = f"{self._p}kg:{account_id}:{event_id}"
        await _call(lambda: self._r.set(key, _f(now), px=int(self._kg_ms)))

    async def known_good(self, account_id: str, event_id: str, now: float) -> bool:
        """See :meth:`DecisionCache.known_good`."""
        key = f"{self._p}kg:{account_id}:{event_id}"
        at = await _call(lambda: self._r.get(key))
        return at is not None and now - float(at) < self.known_good_ttl

    async def invalidate_account(self, account_id: str) -> None:
        """See :meth:`DecisionCache.invalidate_account` (INCR: every worker sees it at once)."""
        key = f"{self._p}g:{account_id}"

        async def run() -> None:
            async with self._r.pipeline(transaction=True) as pipe:
                pipe.incr(key)
                pipe.pexpire(key, self._gen_ms)
                await pipe.execute()

        await _call(run)
