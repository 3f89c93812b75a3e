"""Limits that hold across gateway workers and processes, and every 429 the gateway answers: the
relay (gateway/relay.py) asks here whether a call may go on and sends the Refusal it gets back.

- Serverless endpoints: requests and tokens per minute over a sliding window of the last 60 seconds
  (one-second buckets), so no 60 seconds ever see more than the limit, bursts included. A request
  is charged its estimated tokens (prompt characters / 4 plus max_tokens) when admitted, and the
  difference to its real count when it ends, as the anchors count token limits.
- Online deployments: requests in flight (2 x max_concurrent_requests_per_instance x ready instances).

With REDIS_URL set both are one atomic Lua script call in Redis per check (one round trip), shared
by every worker; without it they are counted in this process only. If Redis cannot be reached the
worker falls back to its own counts rather than failing requests."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from endpoints_app.gateway.common import request_id

if TYPE_CHECKING:
    from endpoints_app.gateway.routes import DeploymentRoute, EndpointRoute

log = logging.getLogger("studio.gateway.limits")

WINDOW_S = 60
# One hash per endpoint: "r:<second>" requests and "t:<second>" tokens admitted in that second.
WINDOW_SCRIPT = """
local now = tonumber(ARGV[1])
local rpm, tpm, cost = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local oldest = now - 59
local h = redis.call('HGETALL', KEYS[1])
local r, t, first_r, first_t = 0, 0, now, now
local stale = {}
for i = 1, #h, 2 do
  local sec = tonumber(string.sub(h[i], 3))
  local v = tonumber(h[i + 1])
  if sec < oldest then
    stale[#stale + 1] = h[i]
  elseif string.sub(h[i], 1, 1) == 'r' then
    r = r + v
    if v > 0 and sec < first_r then first_r = sec end
  else
    t = t + v
    if v > 0 and sec < first_t then first_t = sec end
  end
end
if #stale > 0 then redis.call('HDEL', KEYS[1], unpack(stale)) end
local ok = 1
if r + 1 > rpm then ok = 0 elseif t + cost > tpm then ok = -1 end
if ok == 1 then
  redis.call('HINCRBY', KEYS[1], 'r:' .. now, 1)
  redis.call('HINCRBY', KEYS[1], 't:' .. now, cost)
  r = r + 1
  t = t + cost
end
redis.call('EXPIRE', KEYS[1], 120)
local wait = 0
if ok == 0 then wait = first_r + 60 - now elseif ok == -1 then wait = first_t + 60 - now end
return {ok, r, t, wait}
"""
SETTLE_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HINCRBY', KEYS[1], 't:' .. ARGV[2], ARGV[1]) end
return 1
"""
# In flight: a sorted set of request ids scored by start time; ids older than the horizon are
# dropped, so a worker that died mid-request cannot hold a slot forever.
INFLIGHT_SCRIPT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
"""
# Long streams are bounded by this, not by request_timeout_ms (which covers the first byte only).
INFLIGHT_HORIZON_MS = 600_000
KEY_PREFIX = "studio:gw:"
REDIS_CONNECTIONS = 32  # per gateway worker
REDIS_WAIT_S = 5.0


@dataclass(slots=True)
class Verdict:
    ok: bool
    retry_after: int = 0
    remaining_requests: int = 0
    remaining_tokens: int = 0
    which: str = ""  # "requests" or "tokens" when refused
    second: int = 0  # the window bucket a settle goes to


class Refusal(NamedTuple):
    """A 429 as the relay sends it (gateway/common.error)."""

    message: str
    headers: tuple
    status: int = 429
    code: str = "TooManyRequests"


def rate_headers(verdict: Verdict) -> tuple:
    """What a serverless call is told of its per-minute limits, on every answer."""
    return (
        (b"x-ratelimit-remaining-requests", str(verdict.remaining_requests).encode()),
        (b"x-ratelimit-remaining-tokens", str(verdict.remaining_tokens).encode()),
    )


def rate_refusal(endpoint: EndpointRoute, verdict: Verdict) -> Refusal:
    """The 429 of a serverless endpoint past its requests or tokens per minute."""
    limit = (f"{endpoint.requests_per_minute} requests" if verdict.which == "requests"
             else f"{endpoint.tokens_per_minute} tokens")
    return Refusal(f"Endpoint '{endpoint.name}' is limited to {limit} per minute; retry after "
                   f"{verdict.retry_after} s.", ((b"retry-after", str(verdict.retry_after).encode()),
                                                *rate_headers(verdict)))


def slots_refusal(deployment: DeploymentRoute, who: str, headers: tuple = ()) -> Refusal:
    """The 429 of a deployment (or serverless pool, `who` "The model") at its requests in flight."""
    return Refusal(
        f"{who} has {deployment.capacity} requests in flight, its limit (2 x max_concurrent_requests_per_instance "
        f"x {len(deployment.instances)} ready instances).", ((b"retry-after", b"1"), *headers))


def estimate_tokens(payload: dict, route: str) -> int:
    """What a request is charged on admission (settled with the real count when it ends)."""
    if route == "embeddings":
        value = payload.get("input")
        texts = [value] if isinstance(value, str) else [t for t in (value or []) if isinstance(t, str)]
        return max(1, sum(len(t) for t in texts) // 4)
    if route == "chat/completions":
        chars = 0
        for message in payload.get("messages") or ():
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, str):
                chars += len(content)
            elif isinstance(content, list):
                chars += sum(len(p.get("text") or "") for p in content if isinstance(p, dict))
    else:
        prompt = payload.get("prompt")
        chars = len(prompt[0] if isinstance(prompt, list) and prompt else prompt or "")
    wanted = payload.get("max_tokens") or payload.get("max_completion_tokens") or 0
    return max(1, chars // 4) + (wanted if isinstance(wanted, int) else 0)


def _verdict(ok: int, requests: int, tokens: int, wait: int, rpm: int, tpm: int, second: int) -> Verdict:
    return Verdict(ok == 1, max(1, int(wait)) if ok != 1 else 0, max(0, rpm - requests), max(0, tpm - tokens),
                   "" if ok == 1 else "requests" if ok == 0 else "tokens", second)


class Limiter:
    def __init__(self, redis_url: str | None = None) -> None:
        self.redis = None
        if redis_url:
            import redis.asyncio as aioredis

            # A bounded pool that waits for a free connection: a burst of requests queues here for a
            # moment instead of failing with "Too many connections" (and falling back to local counts).
            pool = aioredis.BlockingConnectionPool.from_url(redis_url, max_connections=REDIS_CONNECTIONS,
                                                           timeout=REDIS_WAIT_S)
            self.redis = aioredis.Redis(connection_pool=pool)
            self._window = self.redis.register_script(WINDOW_SCRIPT)
            self._settle = self.redis.register_script(SETTLE_SCRIPT)
            self._inflight = self.redis.register_script(INFLIGHT_SCRIPT)
        self._windows: dict[int, dict[int, list[int]]] = {}
        self._warned = 0.0

    @property
    def shared(self) -> bool:
        return self.redis is not None

    def _redis_failed(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._warned > 30:
            self._warned = now
            log.warning("Redis limits unavailable (%s); counting in this worker only", exc)

    # ------------------------------------------------------------------ rate limits

    async def admit(self, endpoint_id: int, rpm: int, tpm: int, cost: int) -> Verdict:
        now = int(time.time())
        if self.redis is not None:
            try:
                ok, r, t, wait = await self._window(keys=[f"{KEY_PREFIX}rate:{endpoint_id}"],
                                                    args=[now, rpm, tpm, cost])
                return _verdict(int(ok), int(r), int(t), int(wait), rpm, tpm, now)
            except Exception as exc:  # noqa: BLE001 - fall back to this worker's own counts
                self._redis_failed(exc)
        window = self._windows.setdefault(endpoint_id, {})
        for sec in [sec for sec in window if sec <= now - WINDOW_S]:
            del window[sec]
        r = sum(v[0] for v in window.values())
        t = sum(v[1] for v in window.values())
        ok = 0 if r + 1 > rpm else -1 if t + cost > tpm else 1
        wait = 0
        if ok == 1:
            bucket = window.setdefault(now, [0, 0])
            bucket[0] += 1
            bucket[1] += cost
            r, t = r + 1, t + cost
        else:
            index = 0 if ok == 0 else 1
            wait = min((sec for sec, v in window.items() if v[index] > 0), default=now) + WINDOW_S - now
        return _verdict(ok, r, t, wait, rpm, tpm, now)

    async def settle(self, endpoint_id: int, verdict: Verdict, charged: int, used: int) -> None:
        """Charge (or give back) the difference between the estimate and the real token count, in the
        second the request was admitted."""
        delta = used - charged
        if not delta:
            return
        if self.redis is not None:
            try:
                await self._settle(keys=[f"{KEY_PREFIX}rate:{endpoint_id}"], args=[delta, verdict.second])
                return
            except Exception as exc:  # noqa: BLE001
                self._redis_failed(exc)
        bucket = self._windows.get(endpoint_id, {}).get(verdict.second)
        if bucket is not None:
            bucket[1] += delta

    # ------------------------------------------------------------------ in flight (shared only)

    async def acquire(self, deployment_id: int, capacity: int, request_id: str) -> bool | None:
        """True/False across workers; None when there is no Redis (the caller counts locally)."""
        if self.redis is None:
            return None
        now_ms = int(time.time() * 1000)
        try:
            return bool(await self._inflight(
                keys=[f"{KEY_PREFIX}inflight:{deployment_id}"],
                args=[now_ms, now_ms - INFLIGHT_HORIZON_MS, capacity, request_id, INFLIGHT_HORIZON_MS],
            ))
        except Exception as exc:  # noqa: BLE001
            self._redis_failed(exc)
            return None

    async def take_slot(self, deployment: DeploymentRoute) -> str | bool | None:
        """A place among the deployment's requests in flight: across every worker through Redis when
        it is configured, else in this worker. None when the deployment is at its limit."""
        if self.redis is not None:
            slot = request_id()
            shared = await self.acquire(deployment.id, deployment.capacity, slot)
            if shared is not None:
                return slot if shared else None
        return None if deployment.inflight >= deployment.capacity else True

    async def give_slot(self, deployment: DeploymentRoute, slot: str | bool) -> None:
        if isinstance(slot, str):
            await self.release(deployment.id, slot)

    async def release(self, deployment_id: int, request_id: str) -> None:
        try:
            await self.redis.zrem(f"{KEY_PREFIX}inflight:{deployment_id}", request_id)
        except Exception as exc:  # noqa: BLE001
            self._redis_failed(exc)

    async def close(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()
