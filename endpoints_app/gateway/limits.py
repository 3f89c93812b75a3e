"""Limits that hold across gateway workers and processes.

- Serverless endpoints: requests and tokens per minute, as two token buckets per endpoint (capacity
  the per-minute limit, refilled continuously), so a burst gets at most the limit plus what refills
  while it lasts. A request is charged its estimated tokens (prompt characters / 4 plus max_tokens)
  when admitted and settled with the real count when it ends, as the anchors count token limits.
- Online deployments: requests in flight (2 x max_concurrent_requests_per_instance x ready instances).

With REDIS_URL set both are one atomic Lua script call in Redis per check (one round trip), shared
by every worker; without it they are counted in this process only. If Redis cannot be reached the
worker falls back to its own counts rather than failing requests."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

log = logging.getLogger("studio.gateway.limits")

# Token buckets: {r: requests left, t: tokens left, ts: last refill in ms}.
BUCKET_SCRIPT = """
local now = tonumber(ARGV[1])
local rpm, tpm, cost = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local s = redis.call('HMGET', KEYS[1], 'r', 't', 'ts')
local r = tonumber(s[1]) or rpm
local t = tonumber(s[2]) or tpm
local ts = tonumber(s[3]) or now
local minutes = math.max(0, now - ts) / 60000.0
r = math.min(rpm, r + minutes * rpm)
t = math.min(tpm, t + minutes * tpm)
local ok = 1
if r < 1 then ok = 0 elseif t < cost then ok = -1 end
if ok == 1 then r = r - 1; t = t - cost end
redis.call('HSET', KEYS[1], 'r', tostring(r), 't', tostring(t), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], 120000)
return {ok, tostring(r), tostring(t)}
"""
SETTLE_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HINCRBYFLOAT', KEYS[1], 't', ARGV[1]) end
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


@dataclass(slots=True)
class Verdict:
    ok: bool
    retry_after: int = 0
    remaining_requests: int = 0
    remaining_tokens: int = 0
    which: str = ""  # "requests" or "tokens" when refused


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


def _verdict(ok: int, requests_left: float, tokens_left: float, rpm: int, tpm: int, cost: int) -> Verdict:
    remaining_requests, remaining_tokens = max(0, int(requests_left)), max(0, int(tokens_left))
    if ok == 1:
        return Verdict(True, 0, remaining_requests, remaining_tokens)
    if ok == 0:
        wait = (1 - requests_left) / (rpm / 60.0)
        return Verdict(False, max(1, math.ceil(wait)), remaining_requests, remaining_tokens, "requests")
    wait = (cost - tokens_left) / (tpm / 60.0)
    return Verdict(False, max(1, math.ceil(wait)), remaining_requests, remaining_tokens, "tokens")


class Limiter:
    def __init__(self, redis_url: str | None = None) -> None:
        self.redis = None
        if redis_url:
            import redis.asyncio as aioredis

            self.redis = aioredis.from_url(redis_url)
            self._bucket = self.redis.register_script(BUCKET_SCRIPT)
            self._settle = self.redis.register_script(SETTLE_SCRIPT)
            self._inflight = self.redis.register_script(INFLIGHT_SCRIPT)
        self._buckets: dict[int, list[float]] = {}
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
        now_ms = int(time.time() * 1000)
        if self.redis is not None:
            try:
                ok, r, t = await self._bucket(keys=[f"{KEY_PREFIX}rate:{endpoint_id}"],
                                              args=[now_ms, rpm, tpm, cost])
                return _verdict(int(ok), float(r), float(t), rpm, tpm, cost)
            except Exception as exc:  # noqa: BLE001 - fall back to this worker's own counts
                self._redis_failed(exc)
        bucket = self._buckets.get(endpoint_id)
        if bucket is None:
            bucket = self._buckets[endpoint_id] = [float(rpm), float(tpm), now_ms]
        minutes = max(0, now_ms - bucket[2]) / 60000.0
        r, t = min(rpm, bucket[0] + minutes * rpm), min(tpm, bucket[1] + minutes * tpm)
        ok = 0 if r < 1 else -1 if t < cost else 1
        if ok == 1:
            r, t = r - 1, t - cost
        bucket[:] = [r, t, now_ms]
        return _verdict(ok, r, t, rpm, tpm, cost)

    async def settle(self, endpoint_id: int, charged: int, used: int) -> None:
        """Give back (or charge) the difference between the estimate and the real token count."""
        delta = charged - used
        if not delta:
            return
        if self.redis is not None:
            try:
                await self._settle(keys=[f"{KEY_PREFIX}rate:{endpoint_id}"], args=[delta])
                return
            except Exception as exc:  # noqa: BLE001
                self._redis_failed(exc)
        bucket = self._buckets.get(endpoint_id)
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

    async def release(self, deployment_id: int, request_id: str) -> None:
        try:
            await self.redis.zrem(f"{KEY_PREFIX}inflight:{deployment_id}", request_id)
        except Exception as exc:  # noqa: BLE001
            self._redis_failed(exc)

    async def close(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()
