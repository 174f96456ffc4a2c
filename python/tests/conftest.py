import os
import shutil
import tempfile

import pytest

# One directory for the whole run: dogpile's suites configure their backend
# from class attributes, before any fixture runs.
RUN_DIR = tempfile.mkdtemp(prefix="slotcache-pytest-")


_REDIS = []


def start_redis():
    """A redis-server of this run on a free loopback port (no persistence),
    started once and stopped at the end of the session; its URL, or None
    when redis-server is not on PATH."""
    import socket
    import subprocess
    import time

    exe = shutil.which("redis-server")
    if exe is None:
        return None
    if not _REDIS:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        p = subprocess.Popen(
            [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _REDIS.append((p, f"redis://127.0.0.1:{port}/0"))
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2) as c:
                    c.sendall(b"PING\r\n")
                    if c.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "redis-server did not answer PING within 10 s"
            time.sleep(0.02)
    return _REDIS[0][1]


def pytest_sessionfinish(session, exitstatus):
    for p, _ in _REDIS:
        p.terminate()
        p.wait(10)
    shutil.rmtree(RUN_DIR, ignore_errors=True)


def fresh_path(name):
    d = tempfile.mkdtemp(dir=RUN_DIR)
    return os.path.join(d, name)


@pytest.fixture
def path():
    return fresh_path("test.slotcache")
