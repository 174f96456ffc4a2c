"""The native API: slotcache.Cache over str/bytes keys and bytes values."""

import datetime
import os
import threading

import pytest

import slotcache


def test_set_get_delete_contains_iter(path):
    with slotcache.Cache(path, capacity="16MiB") as c:
        c.set("a", b"1")
        c.set(b"b", bytearray(b"2"))
        c["c"] = memoryview(b"3")
        assert c.get("a") == b"1" and c[b"b"] == b"2" and c.get("c") == b"3"
        assert "a" in c and c.contains(b"b") and "zz" not in c
        assert c.get("zz") is None and c.get("zz", b"d") == b"d"
        assert sorted(c) == [b"a", b"b", b"c"] and len(c) == 3
        assert c.delete("a") is True and c.delete("a") is False
        with pytest.raises(KeyError):
            c["a"]
        assert c.get_many(["b", "nope", "c"]) == [b"2", None, b"3"]
        c.set_many({"x": b"10", "y": b"20"})
        c.set_many([("z", b"30")], ttl=datetime.timedelta(seconds=60))
        assert c.get_many(["x", "y", "z"]) == [b"10", b"20", b"30"]
        assert sorted(c.keys(prefix="x")) == [b"x"]
        st = c.stats()
        assert isinstance(st, slotcache.Stats) and st.entries == 5 and st.hits > 0
        assert c.info().max_value_len > 10_000
        assert c.verify().clean
        c.clear()
        assert len(c) == 0
    assert c.closed
    with pytest.raises(ValueError, match="closed"):
        c.get("b")


def test_ttl_and_invalidation(path):
    c = slotcache.Cache(path, capacity="16MiB")
    c.set("short", b"v", ttl=0.000001)
    c.set("long", b"v", ttl=60)
    assert c.get("short") is None and c.get("long") == b"v"
    assert c.invalidated_at() == (None, None)
    c.invalidate(hard=True)
    assert c.get("long") is None
    hard, soft = c.invalidated_at()
    assert hard is not None and soft is None


def test_get_view_is_zero_copy_and_read_only(path):
    c = slotcache.Cache(path, capacity="16MiB")
    value = os.urandom(10 * 1024)
    c.set("k", value)
    v = c.get_view("k")
    assert isinstance(v, memoryview) and v.readonly and v.nbytes == len(value)
    assert bytes(v) == value and v[:4].tobytes() == value[:4]
    with pytest.raises(TypeError):
        v[0] = 1
    # The view survives an overwrite (the old record stays pinned) and other
    # threads may read and drop it.
    c.set("k", b"new")
    out = []
    t = threading.Thread(target=lambda: out.append(bytes(v)))
    t.start()
    t.join(10)
    assert out == [value]
    del v
    assert c.get_view("missing") is None
    assert c.get("k") == b"new"


def test_get_or_create(path):
    c = slotcache.Cache(path, capacity="16MiB", ttl=60)
    calls = []

    def creator():
        calls.append(1)
        return b"made"

    assert c.get_or_create("k", creator) == b"made"
    assert c.get_or_create("k", creator) == b"made"
    assert len(calls) == 1

    def boom():
        raise LookupError("boom")

    with pytest.raises(LookupError, match="boom"):
        c.get_or_create("fails", boom)
    assert "fails" not in c, "a failing creator stores nothing"
    with pytest.raises(TypeError):
        c.get_or_create("bad", lambda: "not bytes")
    assert "bad" not in c
    # Re-entering a key from its own creator is an error, not a deadlock.
    with pytest.raises(slotcache.Reentrant):
        c.get_or_create("re", lambda: c.get_or_create("re", creator))


def test_capacity_and_durations_accept_human_forms(path):
    c = slotcache.Cache(path, capacity="8MiB", ttl=datetime.timedelta(minutes=1), lock_timeout=2.5)
    assert c.info().file_size <= 8 << 20
    for bad in ("lots", "12 parsecs", -1):
        with pytest.raises(ValueError):
            slotcache.Cache(path + bad.__class__.__name__ + str(bad), capacity=bad)
    for bad in ([1], True):
        with pytest.raises(TypeError):
            slotcache.Cache(path + "t", capacity=bad)
    with pytest.raises(TypeError):
        slotcache.Cache(path + "d", ttl="soon")
    with pytest.raises(ValueError):
        slotcache.Cache(path + "n", ttl=-1)


def test_bad_input_gives_documented_exceptions_and_loses_nothing(path, tmp_path):
    c = slotcache.Cache(path, capacity="8MiB")
    c.set("kept", b"value")
    with pytest.raises(slotcache.KeyTooLarge, match="1025 bytes"):
        c.set("k" * 1025, b"v")
    with pytest.raises(ValueError):
        c.get(b"k" * 2000)
    big = b"x" * (c.max_value_len() + 1)
    with pytest.raises(slotcache.ValueTooLarge, match="largest value"):
        c.set("big", big)
    with pytest.raises(TypeError, match="str or bytes"):
        c.set(42, b"v")
    with pytest.raises(TypeError, match="encode it first"):
        c.set("k", "text")
    with pytest.raises(TypeError):
        c.set("k", 12)
    assert c.get("kept") == b"value", "nothing already stored is lost"
    assert "big" not in c and "k" not in c

    foreign = tmp_path / "foreign.bin"
    foreign.write_bytes(b"definitely not a cache file" * 100)
    with pytest.raises(slotcache.NotACacheFile, match="not a slotcache file"):
        slotcache.Cache(str(foreign))
    assert foreign.read_bytes().startswith(b"definitely"), "a foreign file is never touched"
    with pytest.raises(IsADirectoryError):
        slotcache.Cache(str(tmp_path))
    with pytest.raises(FileNotFoundError):
        slotcache.Cache(str(tmp_path / "absent"), create=False)
    assert issubclass(slotcache.KeyTooLarge, slotcache.Error)
    assert issubclass(slotcache.LockTimeout, TimeoutError)
    assert issubclass(slotcache.ReadOnly, PermissionError)


def test_read_only(path):
    slotcache.Cache(path, capacity="8MiB").set("k", b"v")
    ro = slotcache.Cache(path, read_only=True)
    assert ro.get("k") == b"v" and ro.info().read_only
    with pytest.raises(slotcache.ReadOnly):
        ro.set("k", b"w")


def test_many_handles_on_one_file(path):
    a = slotcache.Cache(path, capacity="8MiB")
    b = slotcache.Cache(path)
    a.set("k", b"1")
    assert b.get("k") == b"1"
    a.close()
    assert b.get("k") == b"1"
