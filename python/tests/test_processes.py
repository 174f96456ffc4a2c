"""Several processes on one file: dogpile protection across processes, a
creator killed mid-way, crossed lock orders, fork. Every wait is bounded;
nothing asserts on durations."""

import json
import multiprocessing as mp
import os
import signal
import time

import pytest
from dogpile.cache import make_region

import slotcache
from slotcache.dogpile import SlotcacheBackend

CTX = mp.get_context("fork")


def region(path, expiration_time=None, **extra):
    return make_region().configure(
        "slotcache",
        expiration_time=expiration_time,
        arguments={"filename": path, "capacity": "16MiB", **extra},
    )


def append(log, record):
    with open(log, "a") as f:
        f.write(json.dumps(record) + "\n")


def read(log):
    if not os.path.exists(log):
        return []
    with open(log) as f:
        return [json.loads(line) for line in f if line.strip()]


def dogpile_worker(path, log, until):
    r = region(path, expiration_time=0.4)
    n = 0

    def creator():
        start = time.time()
        time.sleep(0.3)
        value = f"{os.getpid()}-{start}"
        append(log, {"creator": value, "start": start, "end": time.time()})
        return value

    while time.time() < until:
        t0 = time.time()
        v = r.get_or_create("hot", creator)
        append(log, {"call": v, "t0": t0, "t1": time.time()})
        n += 1
        time.sleep(0.02)


def test_one_creator_at_a_time_across_processes_and_stale_served(path, tmp_path):
    log = str(tmp_path / "log")
    region(path).set("warm", 1)  # create the file before the workers race
    until = time.time() + 3.0
    procs = [CTX.Process(target=dogpile_worker, args=(path, log, until)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    records = read(log)
    runs = sorted((r["start"], r["end"], r["creator"]) for r in records if "creator" in r)
    calls = [r for r in records if "call" in r]
    assert len(runs) >= 2 and len(calls) > len(runs)
    for (s1, e1, _), (s2, _, _) in zip(runs, runs[1:]):
        assert s2 >= e1, "two creators ran at once"
    # Stale values were served while a creator ran: calls that started and
    # ended inside another process's creator run returned an older value.
    created_at = {v: s for s, _, v in runs}
    stale_served = 0
    for c in calls:
        for s, e, v in runs:
            if s < c["t0"] and c["t1"] < e and created_at[c["call"]] < s:
                stale_served += 1
    assert stale_served > 0


def killed_creator(path, entered):
    r = region(path, expiration_time=60)

    def creator():
        open(entered, "w").close()
        time.sleep(600)

    r.get_or_create("k", creator)


def waiting_creator(path, out):
    r = region(path, expiration_time=60)
    v = r.get_or_create("k", lambda: "made by the waiter")
    append(out, {"value": v})


def test_killed_creator_releases_its_lock(path, tmp_path):
    entered, out = str(tmp_path / "entered"), str(tmp_path / "out")
    region(path).delete("k")
    a = CTX.Process(target=killed_creator, args=(path, entered))
    a.start()
    deadline = time.time() + 30
    while not os.path.exists(entered):
        assert time.time() < deadline, "the first creator never started"
        time.sleep(0.01)
    b = CTX.Process(target=waiting_creator, args=(path, out))
    b.start()
    time.sleep(0.2)  # let b block on the lock (correct either way)
    os.kill(a.pid, signal.SIGKILL)
    a.join(30)
    b.join(30)
    assert b.exitcode == 0, "the waiter was not released by the killed holder"
    assert read(out) == [{"value": "made by the waiter"}]


def crossed_worker(path, first, second, out):
    b = SlotcacheBackend({"filename": path, "regen_stripes": 4, "nested_lock_timeout": 0.5})
    deadline = time.time() + 30
    attempts = 0
    while time.time() < deadline:
        attempts += 1
        m1, m2 = b.get_mutex(first), b.get_mutex(second)
        m1.acquire()
        time.sleep(0.2)  # both processes hold their first lock now
        try:
            m2.acquire()
        except slotcache.LockTimeout:
            # The timeout released m1 already (back off and release);
            # releasing it again does nothing.
            m1.release()
            time.sleep(0.05 * attempts)
            continue
        m2.release()
        m1.release()
        append(out, {"done": os.getpid(), "attempts": attempts})
        return


def test_crossed_lock_orders_cannot_deadlock(path, tmp_path):
    b = SlotcacheBackend({"filename": path, "capacity": "16MiB", "regen_stripes": 4})
    keys = {}
    for i in range(1000):
        keys.setdefault(b.get_mutex(f"k{i}").regen_stripe, f"k{i}")
        if len(keys) >= 2:
            break
    k1, k2 = list(keys.values())[:2]
    out = str(tmp_path / "out")
    p1 = CTX.Process(target=crossed_worker, args=(path, k1, k2, out))
    p2 = CTX.Process(target=crossed_worker, args=(path, k2, k1, out))
    p1.start()
    p2.start()
    p1.join(60)
    p2.join(60)
    for p in (p1, p2):
        if p.is_alive():
            p.kill()
    assert p1.exitcode == 0 and p2.exitcode == 0
    assert len(read(out)) == 2, "both processes got both locks"


def multi_worker(path, keys, out):
    r = region(path, expiration_time=60, regen_stripes=4, nested_lock_timeout=0.5)
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            vals = r.get_or_create_multi(keys, lambda *ks: [time.sleep(0.3) or k for k in ks])
            append(out, {"values": vals})
            return
        except slotcache.LockTimeout:
            time.sleep(0.1)


def test_get_or_create_multi_with_keys_in_crossed_stripe_order(path, tmp_path):
    b = SlotcacheBackend({"filename": path, "capacity": "16MiB", "regen_stripes": 4})
    by_stripe = {}
    for i in range(1000):
        by_stripe.setdefault(b.get_mutex(f"k{i:03}").regen_stripe, []).append(f"k{i:03}")
    s1, s2 = sorted(by_stripe)[:2]
    # Key order a < b but stripes s1, s2; c < d but stripes s2, s1.
    a = min(by_stripe[s1])
    bb = [k for k in by_stripe[s2] if k > a][0]
    c = [k for k in by_stripe[s2] if k != bb][0]
    d = [k for k in by_stripe[s1] if k > c and k != a][0]
    out = str(tmp_path / "out")
    procs = [
        CTX.Process(target=multi_worker, args=(path, [a, bb], out)),
        CTX.Process(target=multi_worker, args=(path, [c, d], out)),
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        if p.is_alive():
            p.kill()
        assert p.exitcode == 0
    assert sorted(tuple(r["values"]) for r in read(out)) == sorted([(a, bb), (c, d)])


def test_fork_while_a_lock_is_held(path):
    b = SlotcacheBackend({"filename": path, "capacity": "16MiB"})
    m = b.get_mutex("k")
    assert m.acquire()
    pid = os.fork()
    if pid == 0:  # child: the parent's lock is not ours
        code = 1
        try:
            fresh = b.get_mutex("k")
            ok = fresh.locked() and not fresh.acquire(False)
            # The inherited mutex object holds nothing here: it reports the
            # parent's lock and cannot release it.
            ok = ok and m.locked()
            try:
                m.release()
                ok = False
            except RuntimeError:
                pass
            b.set("child", ("x", {"ct": time.time(), "v": 2}))
            code = 0 if ok else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert m.locked()
    m.release()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = 0 if b.get_mutex("k").acquire(False) else 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_fork_while_a_view_is_pinned(path):
    c = slotcache.Cache(path, capacity="16MiB")
    value = os.urandom(4096)
    c.set("k", value)
    v = c.get_view("k")
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            ok = bytes(v) == value
            for i in range(200):
                c.set(f"child{i}", b"x" * 1000)
            del v
            ok = ok and c.get("child0") == b"x" * 1000
            code = 0 if ok else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert bytes(v) == value, "the parent's view is intact"
    del v
    assert c.get("child0") == b"x" * 1000
