"""Python benchmarks of slotcache against dogpile.cache's dbm and memory
backends, diskcache, memcached (pymemcache) and Redis (redis-py) on loopback,
in one run; prints (or writes) the "Python" section of BENCHMARKS.md.

    nice python python/bench/bench.py [--write BENCHMARKS.md] [--seconds 0.25]

memcached and redis-server are installed with apt-get when missing (as
root), started on free loopback ports and stopped at the end; a peer that
cannot be had is SKIPPED loudly. Ratios compare numbers of this one run.
"""

import argparse
import multiprocessing as mp
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from dogpile.cache import make_region

import slotcache

CTX = mp.get_context("fork")
KEYS = 1000
SIZES = {"100B": 100, "10KiB": 10 * 1024}
SKIPPED = []


def loud_skip(what, why):
    bar = "!" * 72
    print(f"\n{bar}\n!!! SKIPPED: {what}\n!!! because: {why}\n{bar}\n", file=sys.stderr)
    SKIPPED.append(f"{what} ({why})")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def ensure_binary(binary, package):
    if shutil.which(binary):
        return True
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return False
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], env=env, check=False)
    r = subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", package],
        env=env,
        stdout=subprocess.DEVNULL,
        check=False,
    )
    return r.returncode == 0 and shutil.which(binary) is not None


def wait_port(port, proc, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


class Servers:
    def __init__(self):
        self.procs = []
        self.memcached = self.redis = None

    def _server(self, binary, package, peer, argv):
        """Starts `binary` (installing `package` when missing) with `argv`
        on a free loopback port; returns the port or None (skipped loudly)."""
        if not ensure_binary(binary, package):
            loud_skip(peer, f"{binary} is missing and apt-get could not install it")
            return None
        port = free_port()
        p = subprocess.Popen([binary, *argv(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(p)
        if wait_port(port, p):
            return port
        loud_skip(peer, f"{binary} did not start")
        return None

    def start(self):
        self.memcached = self._server(
            "memcached", "memcached", "memcached peer",
            lambda port: ["-l", "127.0.0.1", "-p", str(port), "-U", "0", "-m", "256", "-u", "root"],
        )
        self.redis = self._server(
            "redis-server", "redis-server", "Redis peer",
            lambda port: ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        )

    def stop(self):
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


def region_configs(tmp, servers):
    cfg = {
        "slotcache": ("slotcache", {"filename": os.path.join(tmp, "bench.slotcache"), "capacity": "256MiB"}),
        "dogpile.cache.memory": ("dogpile.cache.memory", {}),
        "dogpile.cache.dbm": ("dogpile.cache.dbm", {"filename": os.path.join(tmp, "bench.dbm")}),
    }
    if servers.memcached:
        try:
            import pymemcache  # noqa: F401

            cfg["memcached (pymemcache)"] = (
                "dogpile.cache.pymemcache",
                {"url": f"127.0.0.1:{servers.memcached}"},
            )
        except ImportError:
            loud_skip("memcached peer", "pymemcache is not installed")
    if servers.redis:
        try:
            import redis  # noqa: F401

            cfg["Redis (redis-py)"] = ("dogpile.cache.redis", {"host": "127.0.0.1", "port": servers.redis})
        except ImportError:
            loud_skip("Redis peer", "redis-py is not installed")
    return cfg


def make(cfg, expiration_time=600):
    backend, args = cfg
    return make_region().configure(backend, expiration_time=expiration_time, arguments=dict(args))


def timed_loop(op, seconds):
    """Runs op(i) for about `seconds`; returns ns per op."""
    n, batch = 0, 16
    t0 = time.perf_counter_ns()
    end = t0 + int(seconds * 1e9)
    while True:
        for _ in range(batch):
            op(n)
            n += 1
        now = time.perf_counter_ns()
        if now >= end:
            return (now - t0) / n
        batch = min(batch * 2, 4096)


def per_process(build, seconds, procs):
    """ns per op in each of `procs` processes running `build()`'s op at once
    (mean over processes)."""
    if procs == 1:
        return timed_loop(build(), seconds)
    r, w = CTX.Pipe(False)
    start = CTX.Event()

    def worker():
        op = build()
        op(0)
        start.wait(30)
        w.send(timed_loop(op, seconds))
        os._exit(0)

    ps = [CTX.Process(target=worker) for _ in range(procs)]
    for p in ps:
        p.start()
    time.sleep(0.2)
    start.set()
    out = [r.recv() for _ in ps]
    for p in ps:
        p.join(30)
    return sum(out) / len(out)


def fmt(ns):
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e4:
        return f"{ns / 1e3:.1f} µs"
    return f"{ns / 1e3:.2f} µs"


def bench_regions(cfgs, seconds, procs_list):
    rows = {}  # (op, size, procs) -> {name: ns}
    for name, cfg in cfgs.items():
        slow = name == "dogpile.cache.dbm"
        for size_name, size in SIZES.items():
            value = os.urandom(size)
            reg = make(cfg)
            keys = [f"k{size_name}-{i}" for i in range(KEYS)]
            n_keys = 50 if slow else KEYS
            for k in keys[:n_keys]:
                reg.set(k, value)
            for procs in procs_list:
                secs = min(seconds, 0.3) if slow else seconds

                def get_op(reg_cfg=cfg, ks=keys[:n_keys]):
                    r = make(reg_cfg)
                    return lambda i: r.get(ks[i % len(ks)])

                def set_op(reg_cfg=cfg, ks=keys[:n_keys]):
                    r = make(reg_cfg)
                    return lambda i: r.set(ks[i % len(ks)], value)

                def goc_op(reg_cfg=cfg, ks=keys[:n_keys]):
                    r = make(reg_cfg)
                    return lambda i: r.get_or_create(ks[i % len(ks)], lambda: value)

                for op, build in (("region.get (hit)", get_op), ("region.set", set_op), ("region.get_or_create (hit)", goc_op)):
                    ns = per_process(build, secs, procs)
                    rows.setdefault((op, size_name, procs), {})[name] = ns
                    print(f"  {op:28} {size_name:6} {procs}p {name:24} {fmt(ns)}", file=sys.stderr)
    return rows


def bench_direct(tmp, seconds, procs_list):
    import diskcache

    rows = {}
    for size_name, size in SIZES.items():
        value = os.urandom(size)
        keys = [f"d{size_name}-{i}" for i in range(KEYS)]
        dpath = os.path.join(tmp, f"diskcache-{size_name}")
        spath = os.path.join(tmp, f"native-{size_name}.slotcache")
        dc = diskcache.Cache(dpath)
        sc = slotcache.Cache(spath, capacity="256MiB")
        for k in keys:
            dc.set(k, value)
            sc.set(k, value)
        dc.close()
        for procs in procs_list:
            ops = {
                ("Cache.get", "diskcache"): lambda: (lambda c: lambda i: c.get(keys[i % KEYS]))(diskcache.Cache(dpath)),
                ("Cache.set", "diskcache"): lambda: (lambda c: lambda i: c.set(keys[i % KEYS], value))(diskcache.Cache(dpath)),
                ("Cache.get", "slotcache"): lambda: (lambda c: lambda i: c.get(keys[i % KEYS]))(slotcache.Cache(spath)),
                ("Cache.set", "slotcache"): lambda: (lambda c: lambda i: c.set(keys[i % KEYS], value))(slotcache.Cache(spath)),
                ("Cache.get_view", "slotcache"): lambda: (lambda c: lambda i: c.get_view(keys[i % KEYS]))(slotcache.Cache(spath)),
            }
            for (op, name), build in ops.items():
                ns = per_process(build, seconds, procs)
                rows.setdefault((op, size_name, procs), {})[name] = ns
                print(f"  {op:28} {size_name:6} {procs}p {name:24} {fmt(ns)}", file=sys.stderr)
    return rows


def slow_holder(cfg, entered):
    reg = make(cfg, expiration_time=0.01)

    def creator():
        open(entered, "w").close()
        time.sleep(30)
        return b"new"

    reg.get_or_create("stale-key", creator)


def percentile(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))]


def bench_stale(cfg, tmp, n=20000):
    """p99 of get_or_create on a hit vs on the stale path (value expired,
    its creator running in another process)."""
    value = os.urandom(100)
    hit = make(cfg)
    hit.set("hit-key", value)
    lat_hit = []
    for _ in range(n):
        t = time.perf_counter_ns()
        hit.get_or_create("hit-key", lambda: value)
        lat_hit.append(time.perf_counter_ns() - t)
    stale = make(cfg, expiration_time=0.01)
    stale.set("stale-key", value)
    time.sleep(0.05)
    entered = os.path.join(tmp, "entered")
    p = CTX.Process(target=slow_holder, args=(cfg, entered))
    p.start()
    deadline = time.time() + 30
    while not os.path.exists(entered) and time.time() < deadline:
        time.sleep(0.01)
    lat_stale, creators = [], []
    for _ in range(n):
        t = time.perf_counter_ns()
        v = stale.get_or_create("stale-key", lambda: creators.append(1) or b"mine")
        lat_stale.append(time.perf_counter_ns() - t)
        assert v == value, "the stale value is served"
    os.kill(p.pid, signal.SIGKILL)
    p.join(10)
    return percentile(lat_hit, 0.99), percentile(lat_stale, 0.99), percentile(lat_hit, 0.5), percentile(lat_stale, 0.5), len(creators)


def verdict(ok):
    return "**met**" if ok else "**missed**"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=0.25)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--write", help="replace the '## Python' section of this markdown file")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="slotcache-bench-")
    servers = Servers()
    t_start = time.time()
    try:
        servers.start()
        cfgs = region_configs(tmp, servers)
        procs_list = [1, a.procs]
        rows = bench_regions(cfgs, a.seconds, procs_list)
        rows.update(bench_direct(tmp, a.seconds, procs_list))
        hit99, stale99, hit50, stale50, creators = bench_stale(cfgs["slotcache"], tmp)
    finally:
        servers.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    elapsed = time.time() - t_start

    names = list(cfgs) + ["diskcache"]
    out = ["## Python", ""]
    out.append(
        f"`nice python python/bench/bench.py` in one run ({elapsed:.0f} s): Python {sys.version.split()[0]}, "
        f"dogpile.cache {__import__('dogpile').__version__}, {KEYS} keys per size (50 for dbm), bytes payloads, "
        f"{a.seconds} s per cell; \"{a.procs}p\" is ns per op in each of {a.procs} processes running at once on {os.cpu_count()} cores. "
        "Regions use `expiration_time=600` and dogpile's default serializers (pickle for the byte-oriented backends; "
        "slotcache stores `bytes` payloads unpickled, flagged in its binary header)."
    )
    if SKIPPED:
        out += ["", "**SKIPPED in this run:** " + "; ".join(SKIPPED)]
    out += ["", "| operation | size | procs | " + " | ".join(names) + " |", "|---" * (3 + len(names)) + "|"]
    for (op, size, procs), by in sorted(rows.items(), key=lambda kv: (kv[0][0].startswith("Cache"), kv[0])):
        if op.startswith("Cache"):
            continue
        out.append(f"| `{op}` | {size} | {procs} | " + " | ".join(fmt(by[n]) if n in by else "—" for n in names) + " |")
    out += ["", "| native call | size | procs | slotcache | diskcache |", "|---|---|---|---|---|"]
    for (op, size, procs), by in sorted(rows.items()):
        if not op.startswith("Cache"):
            continue
        out.append(f"| `{op}` | {size} | {procs} | {fmt(by['slotcache'])} | " + (fmt(by["diskcache"]) if "diskcache" in by else "—") + " |")

    def r(op, size, name, procs=1):
        return rows[(op, size, procs)][name]

    g = r("region.get (hit)", "100B", "slotcache")
    checks = [
        ("`region.get` hit ≤ 0.2 × diskcache `Cache.get` (100 B)", g / r("Cache.get", "100B", "diskcache"), 0.2),
        ("`region.get` hit ≤ 1.5 × `dogpile.cache.memory` `region.get` (100 B)", g / r("region.get (hit)", "100B", "dogpile.cache.memory"), 1.5),
        ("`region.set` ≤ 0.1 × diskcache `Cache.set` (100 B)", r("region.set", "100B", "slotcache") / r("Cache.set", "100B", "diskcache"), 0.1),
        ("`Cache.get` (bytes) ≤ 0.05 × diskcache `Cache.get` (100 B)", r("Cache.get", "100B", "slotcache") / r("Cache.get", "100B", "diskcache"), 0.05),
        ("`get_view` faster than `get` (10 KiB): ratio < 1", r("Cache.get_view", "10KiB", "slotcache") / r("Cache.get", "10KiB", "slotcache"), 1.0),
        ("stale-path `get_or_create` p99 ≤ 5 × a hit's p99 (creator in another process)", stale99 / hit99, 5.0),
    ]
    out += ["", "| target | ratio (this run) | limit | verdict |", "|---|---|---|---|"]
    for what, ratio, limit in checks:
        out.append(f"| {what} | {ratio:.3f} | {limit} | {verdict(ratio <= limit)} |")
    out += [
        "",
        f"Stale path: p50 {fmt(stale50)} / p99 {fmt(stale99)} against a hit's p50 {fmt(hit50)} / p99 {fmt(hit99)} "
        f"(20,000 calls each; {creators} creator calls in the measuring process while the other process's creator held the lock).",
        "",
    ]
    text = "\n".join(out)
    print(text)
    if a.write:
        with open(a.write) as f:
            md = f.read()
        start = md.find("\n## Python\n")
        if start >= 0:
            end = md.find("\n## ", start + 5)
            md = md[:start + 1] + text + ("\n" + md[end + 1:] if end >= 0 else "")
        else:
            md = md.rstrip("\n") + "\n\n" + text
        with open(a.write, "w") as f:
            f.write(md)


if __name__ == "__main__":
    main()
