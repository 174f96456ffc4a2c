"""The dogpile backend's mutexes and invalidation beyond dogpile's suites."""

import gc
import threading
import time
import weakref

import pytest
from dogpile.cache import make_region
from dogpile.cache.api import NO_VALUE

import slotcache
from slotcache.dogpile import FileInvalidation, SlotcacheBackend


def backend(path, **extra):
    return SlotcacheBackend({"filename": path, "capacity": "16MiB", **extra})


def test_mutex_semantics(path):
    b = backend(path)
    m = b.get_mutex("k")
    assert weakref.ref(m)() is m
    assert not m.locked()
    assert m.acquire(False)
    assert not m.acquire(False), "a second try from the same thread fails"
    other = b.get_mutex("k")
    assert other.locked(), "another mutex object sees it held"
    assert not other.acquire(False)
    m.release()
    assert not m.locked() and not other.locked()
    with pytest.raises(RuntimeError):
        m.release()
    # Keys sharing a regeneration stripe never block each other.
    small = backend(path + "2", regen_stripes=1)
    a, c = small.get_mutex("a"), small.get_mutex("c")
    assert a.regen_stripe == c.regen_stripe
    assert a.acquire(False) and c.acquire(False)
    a.release()
    c.release()


def test_release_from_another_thread(path):
    b = backend(path)
    m = b.get_mutex("k")
    assert m.acquire()
    t = threading.Thread(target=m.release)
    t.start()
    t.join(10)
    assert not m.locked()
    # A waiter blocked in acquire() is woken by a release on another thread.
    assert m.acquire()
    got = []
    waiter = threading.Thread(target=lambda: got.append(b.get_mutex("k").acquire()))
    waiter.start()
    threading.Timer(0.1, m.release).start()
    waiter.join(10)
    assert got == [True]


def test_async_creation_runner_releases_on_its_thread(path):
    """dogpile's documented async_creation_runner pattern: the mutex is
    released by the runner's thread."""
    threads = []

    def runner(cache, somekey, creator, mutex):
        def go():
            try:
                cache.set(somekey, creator())
            finally:
                mutex.release()

        t = threading.Thread(target=go)
        threads.append(t)
        t.start()

    region = make_region(async_creation_runner=runner).configure(
        "slotcache", expiration_time=0.05, arguments={"filename": path}
    )
    n = iter(range(100))
    assert region.get_or_create("k", lambda: next(n)) == 0
    time.sleep(0.1)
    assert region.get_or_create("k", lambda: next(n)) == 0, "stale value served"
    for t in threads:
        t.join(10)
    assert region.get("k") == 1
    assert not region.backend.get_mutex("k").locked()


def test_lock_timeout(path):
    b = backend(path, lock_timeout=0.2)
    assert b.has_lock_timeout()
    held = b.get_mutex("k")
    held.acquire()
    err = []

    def wait():
        try:
            b.get_mutex("k").acquire()
        except slotcache.LockTimeout as e:
            err.append(e)

    t = threading.Thread(target=wait)
    t.start()
    t.join(10)
    assert err and "lock_timeout" in str(err[0])
    held.release()


def test_dropped_mutex_releases(path):
    b = backend(path)
    m = b.get_mutex("k")
    m.acquire()
    del m
    gc.collect()
    assert b.get_mutex("k").acquire(False)


def test_file_invalidation_reaches_other_regions(path):
    def region():
        r = make_region()
        r.configure(
            "slotcache",
            expiration_time=60,
            arguments={"filename": path},
            region_invalidator=FileInvalidation(r),
        )
        return r

    r1, r2 = region(), region()
    r1.set("k", "v")
    time.sleep(0.01)
    r2.invalidate(hard=False)
    assert r1.get("k") is NO_VALUE, "soft: a plain get misses"
    assert r1.get_or_create("k", lambda: "new") == "new"
    time.sleep(0.01)
    r1.invalidate(hard=True)
    assert r2.get("k") is NO_VALUE
    assert r2.region_invalidator.was_hard_invalidated()


def test_arguments(path):
    args = {"filename": path, "capacity": 8 << 20, "expiration": 3600, "whatever": object()}
    copy = dict(args)
    r = make_region().configure("slotcache", arguments=args)
    assert args == copy
    r.set("k", b"raw bytes")
    assert r.get("k") == b"raw bytes"
    r.set("o", {"nested": [1, 2]})
    assert r.get("o") == {"nested": [1, 2]}
    with pytest.raises(ValueError, match="filename"):
        SlotcacheBackend({})
    with pytest.raises(TypeError):
        SlotcacheBackend({"filename": path, "capacity": [1]})
