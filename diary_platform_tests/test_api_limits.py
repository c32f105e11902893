"""The API's rate limits on both backends: in this process, and in Redis as every replica shares them.

Time comes from a fake clock the tests move forward (Redis receives it as a script argument), so no test
sleeps. The Redis cases use the local server's db 15, emptied before each test (see `redis_server`).
"""

import logging
import random
import socket
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import pytest
import redis

from diary_platform.api.limits import (
    SKIP_REDIS_AFTER_FAILURE_SECONDS,
    Decision,
    Limits,
    MemoryRateLimiter,
    RedisRateLimiter,
    rate_limiter,
)
from diary_platform_tests.conftest import unavailable

REDIS_URL = "redis://127.0.0.1:6379/15"
UNREACHABLE_URL = "redis://127.0.0.1:1/0"
ALICE_AT_A = ["key:alice", "ip:10.0.0.1"]


class FakeClock:
    def __init__(self):
        self.now = 1_700_000_000.25

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def redis_server() -> redis.Redis:
    """The local Redis's db 15, emptied."""
    server = redis.Redis.from_url(REDIS_URL, socket_timeout=1, socket_connect_timeout=1)
    try:
        server.flushdb()
    except redis.RedisError as error:
        unavailable(f"Redis does not answer at {REDIS_URL} ({error}); the Redis rate-limit cases need it")
    yield server
    server.close()


@pytest.fixture(params=["memory", "redis"])
def new_limiter(request, clock):
    """Makes limiters of one backend on the fake clock."""
    if request.param == "memory":
        return lambda limits: MemoryRateLimiter(limits, clock)
    request.getfixturevalue("redis_server")
    return lambda limits: RedisRateLimiter(limits, REDIS_URL, clock)


@pytest.fixture
def switch_threads_often():
    """Threads switch every microsecond instead of every 5 ms, so that an unlocked read-then-write races."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(interval)


def test_hits_under_the_limit_are_allowed(new_limiter):
    limiter = new_limiter(Limits(requests_per_minute=5))
    assert [limiter.hit(ALICE_AT_A) for _ in range(5)] == [Decision(True, 0, None)] * 5
    assert limiter.ready()


@pytest.mark.parametrize("per_minute, retry_after", [(3, 20), (7, 9), (120, 1)])
def test_the_request_over_the_limit_gets_a_retry_after_that_is_just_long_enough(new_limiter, clock, per_minute, retry_after):
    """One request drains in 60/limit seconds, rounded up to whole seconds."""
    limiter = new_limiter(Limits(requests_per_minute=per_minute))
    assert all(limiter.hit(ALICE_AT_A).allowed for _ in range(per_minute))
    assert limiter.hit(ALICE_AT_A) == Decision(False, retry_after, "requests_per_minute")
    if retry_after > 1:
        clock.advance(retry_after - 1)
        assert limiter.hit(ALICE_AT_A) == Decision(False, 1, "requests_per_minute")
        clock.advance(1)
    else:
        clock.advance(retry_after)
    assert limiter.hit(ALICE_AT_A).allowed


def test_a_refused_hit_counts_against_no_subject(new_limiter):
    limiter = new_limiter(Limits(requests_per_minute=3))
    assert all(limiter.hit(subjects).allowed for subjects in [ALICE_AT_A, ALICE_AT_A, ["key:alice", "ip:10.0.0.2"]])
    assert not any(limiter.hit(subjects).allowed for subjects in [ALICE_AT_A] * 5 + [["key:alice", "ip:10.0.0.3"]])
    # 10.0.0.1 holds alice's two allowed requests only, 10.0.0.3 none
    assert [limiter.hit(["key:bob", "ip:10.0.0.1"]).allowed for _ in range(2)] == [True, False]
    assert [limiter.hit(["key:carol", "ip:10.0.0.3"]).allowed for _ in range(4)] == [True, True, True, False]


def test_keys_and_ips_are_limited_separately(new_limiter):
    limiter = new_limiter(Limits(requests_per_minute=3))
    assert all(limiter.hit(subjects).allowed for subjects in [ALICE_AT_A, ALICE_AT_A, ["key:bob", "ip:10.0.0.1"]])
    assert limiter.hit(["key:bob", "ip:10.0.0.1"]).retry_after == 20  # bob has 1 of 3: the shared IP binds
    assert limiter.hit(["key:alice", "ip:10.0.0.2"]).allowed  # alice's third, from another IP
    assert limiter.hit(["key:bob", "ip:10.0.0.2"]).allowed
    assert limiter.hit(["key:carol", "ip:10.0.0.3"]).allowed


def test_uploaded_bytes_per_hour_counted_chunk_by_chunk(new_limiter, clock):
    limiter = new_limiter(Limits(requests_per_minute=0, bytes_per_hour=1000))
    assert limiter.hit(ALICE_AT_A, requests=0, nbytes=0).allowed
    assert all(limiter.hit(ALICE_AT_A, requests=0, nbytes=300).allowed for _ in range(3))
    assert limiter.hit(ALICE_AT_A, requests=0, nbytes=300) == Decision(False, 720, "bytes_per_hour")  # 200 over at 1000 an hour
    assert limiter.hit(["key:bob", "ip:10.0.0.1"], requests=0, nbytes=300) == Decision(False, 720, "bytes_per_hour")
    assert limiter.hit(ALICE_AT_A, requests=0, nbytes=100).allowed  # the refused chunk did not count: 100 still fit
    clock.advance(1079)
    assert limiter.hit(ALICE_AT_A, requests=0, nbytes=300) == Decision(False, 1, "bytes_per_hour")
    clock.advance(1)
    assert limiter.hit(ALICE_AT_A, requests=0, nbytes=300).allowed


def test_the_limit_that_needs_longer_to_drain_is_the_one_named(new_limiter):
    limiter = new_limiter(Limits(requests_per_minute=2, bytes_per_hour=1000))
    assert limiter.hit(ALICE_AT_A, requests=2, nbytes=1000).allowed
    assert limiter.hit(ALICE_AT_A, requests=1, nbytes=0) == Decision(False, 30, "requests_per_minute")
    assert limiter.hit(ALICE_AT_A, requests=1, nbytes=1) == Decision(False, 30, "requests_per_minute")  # 3.6 s for the byte
    assert limiter.hit(ALICE_AT_A, requests=1, nbytes=10) == Decision(False, 36, "bytes_per_hour")


def test_a_disabled_limit_never_refuses(new_limiter):
    unlimited = new_limiter(Limits(requests_per_minute=0, bytes_per_hour=0))
    assert all(unlimited.hit(ALICE_AT_A, nbytes=10**12).allowed for _ in range(500))
    bytes_only = new_limiter(Limits(requests_per_minute=0, bytes_per_hour=1000))
    assert all(bytes_only.hit(["key:bob"]).allowed for _ in range(500))
    assert bytes_only.hit(["key:bob"], nbytes=1001).limit == "bytes_per_hour"


def test_concurrent_hits_never_let_more_than_the_limit_through(new_limiter, switch_threads_often):
    """16 threads × 20 hits against a limit of 100, in ten rounds: a lost update shows in some round."""
    limiter = new_limiter(Limits(requests_per_minute=100))
    start = threading.Barrier(16)

    def client(subjects: list[str]) -> int:
        start.wait()
        return sum(limiter.hit(subjects).allowed for _ in range(20))

    with ThreadPoolExecutor(16) as pool:
        for turn in range(10):
            assert sum(pool.map(client, [[f"key:turn-{turn}"]] * 16)) == 100


@pytest.mark.parametrize("seed", range(3))
def test_both_backends_decide_alike_and_waiting_retry_after_gets_through(clock, redis_server, seed):
    """Random traffic (seeded) from three key and IP pairs, with fractional moves of the clock."""
    chance = random.Random(seed)
    limits = Limits(requests_per_minute=chance.choice([3, 7, 120]), bytes_per_hour=chance.choice([1000, 4096]))
    memory, shared = MemoryRateLimiter(limits, clock), RedisRateLimiter(limits, REDIS_URL, clock)
    pairs = [ALICE_AT_A, ["key:bob", "ip:10.0.0.1"], ["key:alice", "ip:10.0.0.2"]]
    for _ in range(200):
        subjects, requests, nbytes = chance.choice(pairs), chance.choice([0, 1, 1, 2]), chance.choice([0, 1, 100, 999])
        decision = memory.hit(subjects, requests, nbytes)
        assert shared.hit(subjects, requests, nbytes) == decision
        if not decision.allowed:
            clock.advance(decision.retry_after)
            assert memory.hit(subjects, requests, nbytes).allowed and shared.hit(subjects, requests, nbytes).allowed
        clock.advance(chance.choice([0, 0, 0.001, 0.37, 1, 5.5]))


def test_replicas_share_the_counters_in_expiring_keys(clock, redis_server):
    replicas = [RedisRateLimiter(Limits(requests_per_minute=4, bytes_per_hour=1000), REDIS_URL, clock) for _ in range(2)]
    assert [replicas[n % 2].hit(["key:alice"], nbytes=100).allowed for n in range(6)] == [True] * 4 + [False] * 2
    assert replicas[1].hit(["key:alice"]) == replicas[0].hit(["key:alice"]) == Decision(False, 15, "requests_per_minute")
    ttls = {key.decode(): redis_server.ttl(key) for key in redis_server.keys("*")}
    assert ttls.keys() == {"diary:ratelimit:requests_per_minute:key:alice", "diary:ratelimit:bytes_per_hour:key:alice"}
    assert 0 < ttls["diary:ratelimit:requests_per_minute:key:alice"] <= 60
    assert 60 < ttls["diary:ratelimit:bytes_per_hour:key:alice"] <= 3600


def test_unreachable_redis_allows_warns_once_a_minute_and_is_not_ready(clock, caplog):
    limiter = RedisRateLimiter(Limits(requests_per_minute=1), UNREACHABLE_URL, clock)
    with caplog.at_level(logging.WARNING, logger="diary_platform.api.limits"):
        for _ in range(6):
            assert limiter.hit(ALICE_AT_A).allowed
            clock.advance(10)
        assert len(caplog.records) == 1
        clock.advance(1)
        assert limiter.hit(ALICE_AT_A).allowed
    assert len(caplog.records) == 2 and "Redis does not answer" in caplog.records[0].getMessage()
    assert not limiter.ready()


@contextmanager
def hanging_up_server():
    """A port where every connection is accepted and closed at once, like a Redis that does not answer;
    yields the port and the list of connections made."""
    listener = socket.create_server(("127.0.0.1", 0))
    connections = []

    def serve() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            connections.append(connection)
            connection.close()

    server = threading.Thread(target=serve)
    server.start()
    try:
        yield listener.getsockname()[1], connections
    finally:
        listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        server.join()


def test_after_a_failure_hits_leave_redis_alone_for_a_few_seconds(clock):
    """So that a server that does not answer costs one timeout now and then, not one per uploaded chunk."""
    with hanging_up_server() as (port, connections):
        limiter = RedisRateLimiter(Limits(requests_per_minute=1), f"redis://127.0.0.1:{port}/0", clock)
        assert limiter.hit(ALICE_AT_A).allowed
        tried = len(connections)
        assert tried >= 1
        clock.advance(SKIP_REDIS_AFTER_FAILURE_SECONDS - 0.5)
        assert all(limiter.hit(ALICE_AT_A, nbytes=100).allowed for _ in range(50))
        assert len(connections) == tried
        clock.advance(0.5)
        assert limiter.hit(ALICE_AT_A).allowed
        assert len(connections) > tried


def test_rate_limiter_picks_redis_when_given_a_url():
    assert isinstance(rate_limiter(Limits(), None), MemoryRateLimiter)
    assert isinstance(rate_limiter(Limits(), UNREACHABLE_URL), RedisRateLimiter)  # connects only when used


def test_negative_limits_and_costs_are_errors(new_limiter):
    with pytest.raises(ValueError):
        Limits(requests_per_minute=-1)
    with pytest.raises(ValueError):
        new_limiter(Limits()).hit(ALICE_AT_A, requests=0, nbytes=-5)

