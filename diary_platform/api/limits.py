"""Rate limits of the API: requests per minute and uploaded bytes per hour, per API key and per client IP.

Algorithm: GCRA, kept in its leaky-bucket form. Each limit of each subject is a bucket as big as the limit
that drains steadily (the limit per period); a hit pours its cost in and is allowed while no bucket
overflows. Chosen over windows because there are no window edges (a fixed window lets twice the limit
through around an edge, then locks the client out until the next one), the state is two numbers per
bucket (one Lua script checks and fills every bucket of a hit atomically), and `retry_after` is exact:
the time the fullest bucket needs to drain enough. A quiet client may burst up to the whole limit, then
gets the sustained rate. Buckets hold their level in requests or bytes, not GCRA's theoretical arrival
time, so whole costs add up exactly in floating point (a limit of 100 lets exactly 100 hits through).

Both backends run the same arithmetic, in the same order (Python here, Lua in Redis), on the time of the
injected clock; Redis receives it as a script argument, so tests can move time and replicas agree as far
as their clocks do. A bucket is forgotten one period after its last hit: by then it has drained.

Redis unreachable: fail open. The limits protect capacity, they are not access control (the API key is),
so an outage of the shared counters should not stop uploads. `ready()` reports it, a warning is logged at
most once a minute, and for a few seconds after a failure hits do not try Redis, so a server that does not
answer costs one timeout, not one per uploaded chunk.
"""

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import redis

log = logging.getLogger(__name__)

KEY_PREFIX = "diary:ratelimit:"
SKIP_REDIS_AFTER_FAILURE_SECONDS = 5.0
WARNING_INTERVAL_SECONDS = 60.0


@dataclass(frozen=True)
class Limits:
    """Per key and, separately, per client IP; 0 disables that limit."""

    requests_per_minute: int = 120
    bytes_per_hour: int = 2 * 1024**3

    def __post_init__(self):
        if self.requests_per_minute < 0 or self.bytes_per_hour < 0:
            raise ValueError(f"rate limits cannot be negative: {self}")


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after: int  # whole seconds (>= 1) until the same hit would be allowed; 0 when allowed
    limit: str | None  # "requests_per_minute" or "bytes_per_hour" when refused


ALLOWED = Decision(True, 0, None)


class RateLimiter(Protocol):
    def hit(self, subjects: list[str], requests: int = 1, nbytes: int = 0) -> Decision:
        """Count `requests` and `nbytes` against every subject ("key:alice", "ip:10.0.0.7"), or, when any
        subject would go over a limit, refuse and count nothing for any of them. A single hit bigger than a
        limit itself can never pass: keep upload chunks far below `bytes_per_hour`."""

    def ready(self) -> bool:
        """Whether the store of the counters answers."""


@dataclass(frozen=True)
class _Charge:
    """What one hit pours into the bucket of one limit of one subject."""

    limit: str
    subject: str
    capacity: int
    period: int  # seconds in which a full bucket drains
    cost: int

    @property
    def key(self) -> str:
        return f"{KEY_PREFIX}{self.limit}:{self.subject}"


def _charges(limits: Limits, subjects: list[str], requests: int, nbytes: int) -> list[_Charge]:
    """The buckets a hit fills, in a fixed order (a tie between refusing buckets names the first); disabled
    limits and zero costs fill none, so such hits need no state at all."""
    if requests < 0 or nbytes < 0:
        raise ValueError(f"a hit cannot give back: requests={requests}, nbytes={nbytes}")
    rules = [("requests_per_minute", limits.requests_per_minute, 60, requests), ("bytes_per_hour", limits.bytes_per_hour, 3600, nbytes)]
    return [
        _Charge(limit, subject, capacity, period, cost)
        for limit, capacity, period, cost in rules
        if capacity and cost
        for subject in dict.fromkeys(subjects)
    ]


def _refused(wait: float, limit: str) -> Decision:
    """Refused for `wait` seconds, rounded up to whole ones. The wait is first rounded to the nanosecond, far
    coarser than the floating-point noise of the levels, so that a wait of exactly 1 s computed as
    1.0000000000002 s is not told as 2 s."""
    return Decision(False, max(1, math.ceil(round(wait, 9))), limit)


class MemoryRateLimiter(RateLimiter):
    """Buckets in a dict under one lock: the counts of this process only."""

    def __init__(self, limits: Limits, clock: Callable[[], float] = time.time):
        self._limits = limits
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float, float]] = {}  # key: level, time of the last hit, when to forget it
        self._next_sweep = -math.inf

    def hit(self, subjects: list[str], requests: int = 1, nbytes: int = 0) -> Decision:
        charges = _charges(self._limits, subjects, requests, nbytes)
        if not charges:
            return ALLOWED
        with self._lock:
            now = self._clock()
            self._forget_drained(now)
            filled = []
            worst_wait, worst = 0.0, None
            for charge in charges:
                drained = 0.0
                if charge.key in self._buckets:
                    level, at, _ = self._buckets[charge.key]
                    drained = max(0.0, level - max(0.0, now - at) * charge.capacity / charge.period)
                filled.append(drained + charge.cost)
                wait = (filled[-1] - charge.capacity) * charge.period / charge.capacity
                if wait > worst_wait:
                    worst_wait, worst = wait, charge
            if worst is not None:
                return _refused(worst_wait, worst.limit)
            for charge, level in zip(charges, filled):
                self._buckets[charge.key] = (level, now, now + charge.period)
        return ALLOWED

    def ready(self) -> bool:
        return True

    def _forget_drained(self, now: float) -> None:
        """Once a minute, drop the buckets not hit for a period, so that one client IP after another does not
        grow the dict forever."""
        if now < self._next_sweep:
            return
        self._buckets = {key: bucket for key, bucket in self._buckets.items() if bucket[2] > now}
        self._next_sweep = now + 60


# KEYS[i]: the bucket of charge i (a hash: level, at). ARGV[1]: now, in seconds, from the caller's clock;
# ARGV[3i-1], ARGV[3i], ARGV[3i+1]: capacity, period (seconds) and cost of charge i.
# Same arithmetic, in the same order, as MemoryRateLimiter.hit; levels kept with 17 digits so that they read
# back as the same doubles. Replies {1} when allowed, else {0, wait in seconds (a string), index of the charge}.
_FILL_SCRIPT = """
local now = tonumber(ARGV[1])
local filled = {}
local worst_wait, worst = 0, 0
for i, key in ipairs(KEYS) do
  local capacity, period, cost = tonumber(ARGV[3 * i - 1]), tonumber(ARGV[3 * i]), tonumber(ARGV[3 * i + 1])
  local bucket = redis.call('HMGET', key, 'level', 'at')
  local drained = 0
  if bucket[1] then
    drained = math.max(0, tonumber(bucket[1]) - math.max(0, now - tonumber(bucket[2])) * capacity / period)
  end
  filled[i] = drained + cost
  local wait = (filled[i] - capacity) * period / capacity
  if wait > worst_wait then
    worst_wait, worst = wait, i
  end
end
if worst > 0 then
  return {0, string.format('%.17g', worst_wait), worst}
end
for i, key in ipairs(KEYS) do
  redis.call('HSET', key, 'level', string.format('%.17g', filled[i]), 'at', ARGV[1])
  redis.call('EXPIRE', key, ARGV[3 * i])
end
return {1}
"""


class RedisRateLimiter(RateLimiter):
    """Buckets in Redis, checked and filled by one Lua script per hit: one round trip, atomic across replicas."""

    def __init__(self, limits: Limits, redis_url: str, clock: Callable[[], float] = time.time):
        self._limits = limits
        self._clock = clock
        self._redis = redis.Redis.from_url(redis_url, socket_timeout=1, socket_connect_timeout=1)
        self._fill = self._redis.register_script(_FILL_SCRIPT)
        self._failure_lock = threading.Lock()
        self._skip_redis_until = -math.inf
        self._next_warning = -math.inf

    def hit(self, subjects: list[str], requests: int = 1, nbytes: int = 0) -> Decision:
        charges = _charges(self._limits, subjects, requests, nbytes)
        now = self._clock()
        if not charges or now < self._skip_redis_until:
            return ALLOWED
        arguments = [now]
        for charge in charges:
            arguments += [charge.capacity, charge.period, charge.cost]
        try:
            reply = self._fill(keys=[charge.key for charge in charges], args=arguments)
        except redis.RedisError as error:
            self._failed(now, error)
            return ALLOWED
        if reply[0] == 1:
            return ALLOWED
        _, wait, index = reply
        return _refused(float(wait), charges[index - 1].limit)

    def ready(self) -> bool:
        try:
            return bool(self._redis.ping())
        except redis.RedisError:
            return False

    def _failed(self, now: float, error: redis.RedisError) -> None:
        with self._failure_lock:
            self._skip_redis_until = now + SKIP_REDIS_AFTER_FAILURE_SECONDS
            if now < self._next_warning:
                return
            self._next_warning = now + WARNING_INTERVAL_SECONDS
        log.warning("Rate limits not enforced: Redis does not answer (%s); requests are allowed until it does", error)


def rate_limiter(limits: Limits, redis_url: str | None, clock: Callable[[], float] = time.time) -> RateLimiter:
    """Counters shared by every replica in Redis at `redis_url`, else in this process."""
    if redis_url:
        return RedisRateLimiter(limits, redis_url, clock)
    return MemoryRateLimiter(limits, clock)
