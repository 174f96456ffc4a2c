"""The dogpile backend with ``redis_url``: each cache file a host, in front
of a real ``redis-server`` started here (loopback, free port, no
persistence)."""

import os
import socket
import subprocess
import sys
import textwrap
import time
import warnings

import pytest
from dogpile.cache import make_region
from dogpile.cache.api import NO_VALUE, CachedValue

import slotcache
from conftest import fresh_path, start_redis

SKIP_REASON = "SKIPPED LOUDLY: redis-server is not on PATH (apt-get install redis-server); the redis_url tests did not run"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def redis_url():
    url = start_redis()
    if url is None:
        warnings.warn(SKIP_REASON)
        print("\n!!! " + SKIP_REASON, file=sys.stderr)
        pytest.skip(SKIP_REASON)
    return url


def backend_args(url, prefix, **more):
    return {"filename": fresh_path("host.slotcache"), "capacity": "8MiB",
            "redis_url": url, "redis_prefix": prefix, **more}


def host(url, prefix, **more):
    from slotcache.dogpile import SlotcacheBackend

    return SlotcacheBackend(backend_args(url, prefix, **more))


def until(pred, what, limit=10.0):
    deadline = time.monotonic() + limit
    while not pred():
        assert time.monotonic() < deadline, f"{what} did not happen within {limit} s"
        time.sleep(0.01)


def cv(x):
    return CachedValue(x, {"ct": time.time(), "v": 1})


def test_two_hosts_see_each_others_writes_and_invalidations(redis_url):
    a, b = host(redis_url, "t2h:"), host(redis_url, "t2h:")
    assert b.get("k") is NO_VALUE
    a.set("k", cv("one"))
    assert b.get("k").payload == "one"  # from Redis, now in b's file
    assert b.get("k").payload == "one"  # from b's file
    until(lambda: b.tier_stats()["l1_hits"] >= 1 or b.tier.stream_up(), "b's stream")
    a.set("k", cv("two"))
    until(lambda: b.get("k").payload == "two", "a's write reaching b")
    a.delete("k")
    until(lambda: b.get("k") is NO_VALUE, "a's delete reaching b")
    b.set_multi({"x": cv(1), "y": cv(b"raw")})
    assert [v.payload for v in a.get_multi(["x", "y"])] == [1, b"raw"]
    s = a.tier_stats()
    assert s["l2_hits"] >= 2 and s["l2_errors"] == 0


def test_a_writer_voids_the_lease_of_a_slow_creator(redis_url):
    a, b = host(redis_url, "fence:"), host(redis_url, "fence:")
    m = a.get_mutex("k")
    assert m.acquire(False)
    other = b.get_mutex("k")
    assert not other.acquire(False)  # the fleet lease is a's
    b.set("k", cv("newer"))  # a writer: voids a's lease
    a.set("k", cv("late"))  # a's fenced fill: dropped
    m.release()
    assert b.get("k").payload == "newer"
    until(lambda: a.get("k").payload == "newer", "b's write reaching a")
    assert a.tier_stats()["leases_voided"] == 1


def test_a_bad_redis_url_raises_a_clear_error():
    with pytest.raises(slotcache.RedisError, match="(?i)url|scheme|invalid"):
        host("http://nowhere", "bad:")
    with pytest.raises(TypeError, match="redis_url"):
        host(123, "bad:")


def test_redis_down_the_region_still_serves_and_creates():
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    calls = []
    region = make_region().configure(
        "slotcache", arguments=backend_args(url, "down:", io_timeout=0.2))

    def create():
        calls.append(1)
        return len(calls)

    assert region.get_or_create("k", create) == 1
    assert region.get_or_create("k", create) == 1  # kept in the file
    assert calls == [1]
    region.set("j", "v")  # does not raise
    assert region.backend.tier_stats()["l2_errors"] >= 1


FLEET_WORKER = textwrap.dedent("""
    import os, sys, time
    from dogpile.cache import make_region
    path, url, log, stop_at = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    region = make_region().configure(
        "slotcache", expiration_time=1,
        arguments={"filename": path, "capacity": "8MiB", "redis_url": url,
                   "redis_prefix": "fleet:", "lease": 10})
    def create():
        t0 = time.time()
        time.sleep(0.2)
        t1 = time.time()
        with open(log, "a") as f:
            f.write(f"{os.getpid()} {t0} {t1}\\n")
        return t0
    n = 0
    while time.time() < stop_at:
        region.get_or_create("hot", create)
        n += 1
        time.sleep(0.005)
    print(n)
""")


def test_fleet_dogpile_one_creator_at_a_time_across_hosts(redis_url):
    log = fresh_path("calls.log")
    hosts = [fresh_path("host.slotcache") for _ in range(2)]
    stop_at = time.time() + 4.5
    procs = [
        subprocess.Popen([sys.executable, "-c", FLEET_WORKER, h, redis_url, log, str(stop_at)],
                         stdout=subprocess.PIPE, text=True, cwd=os.path.dirname(log))
        for h in hosts for _ in range(3)
    ]
    for p in procs:
        out, _ = p.communicate(timeout=60)
        assert p.returncode == 0
        assert int(out) > 0
    calls = sorted(tuple(map(float, line.split()[1:])) for line in open(log))
    # Several expiries happened, and the creator never ran twice at once
    # anywhere in the fleet: each call ended before the next one began.
    assert len(calls) >= 2
    for (s0, e0), (s1, _) in zip(calls, calls[1:]):
        assert e0 <= s1, f"two creators ran at once: {calls}"
