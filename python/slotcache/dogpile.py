"""A dogpile.cache backend over one slotcache file, shared by every process
that opens it.

::

    from dogpile.cache import make_region

    region = make_region().configure(
        "slotcache",
        expiration_time=600,
        arguments={"filename": "/var/cache/app.slotcache", "capacity": "1GiB"},
    )

Arguments (unknown ones are ignored; the dict is never modified):

``filename`` (required)
    The cache file; created (preallocated to ``capacity``) if missing.
``capacity``
    File size for a new file: an int or a size like ``"1GiB"`` (default 64 MiB).
``max_entries``, ``stripes``, ``regen_stripes``
    Geometry of a new file (see ``slotcache.Cache``).
``expiration``
    A physical TTL in seconds (or a ``timedelta``): entries older than this
    are gone for good and their space is reclaimed first. Make it longer
    than the region's ``expiration_time`` plus your slowest creator, or the
    stale value dogpile serves during a regeneration is gone too.
``lock_timeout``
    Longest wait, in seconds, for another caller's creator when there is no
    value to serve (``slotcache.LockTimeout`` after it). Default: none.
``nested_lock_timeout``
    Longest wait for a regeneration lock while the same thread holds another
    one ordered at or above it (``get_or_create_multi``, nested
    ``get_or_create``): such a wait could deadlock across processes, so it
    is bounded (default 5 s; format.md §5.9).

In front of Redis (every host's file as the near cache, Redis shared by
the fleet; names as in the Rust ``TieredOptions``):

``redis_url``
    Turns the tier on: ``"redis://host:port/db"``. Reads go to the file,
    then Redis; writes and deletes go through to both; every host applies
    the others' invalidations. An invalid URL raises ``slotcache.RedisError``.
``redis_prefix``
    Prepended to every key in Redis (and tracked for invalidations); give
    every application its own. Default ``"dogpile:"``.
``lease``
    The fleet lease of a creator, seconds (default 30): ``get_mutex`` is the
    host's regeneration lock, then a lease in Redis, so one process of the
    fleet creates a value; others wait for its fill (at most ``lease``) or
    serve the old value. A ``set`` or ``delete`` by anyone voids the lease,
    and the creator's late ``set`` is then dropped. Make it longer than
    your slowest creator (it is not extended).
``l1_ttl``, ``max_stale``, ``io_timeout``, ``retry_interval``, ``heartbeat``, ``stream_timeout``
    Seconds, as in ``TieredOptions`` (defaults 60, 30, 0.5, 0.25, 0.2, 1).
    ``l1_ttl`` is also the TTL of values in Redis: make it longer than the
    region's ``expiration_time``.

Redis unreachable: reads serve the file's copy (for ``max_stale``), the
mutex falls back to the host's lock and ``set`` keeps the value in the
file only, unverified (served while Redis stays down, never once it is
back): one creation per key per host; nothing raises but ``delete``. ``backend.tier_stats()`` gives the
tier's counters.

Values are dogpile's ``CachedValue``s: the metadata is a 10-byte binary
header and only the payload is pickled (``bytes`` payloads are stored as
they are). A region configured with its own ``serializer`` goes through
``get_serialized``/``set_serialized`` instead, which store its bytes as
given.

Cross-process invalidation: pass ``region_invalidator=FileInvalidation(region)``
to ``configure`` and ``region.invalidate()`` reaches every process using the
file (the timestamps live in the file's header).

This module imports cheaply and never raises at import: dogpile.cache
imports every plugin of its entry-point group and drops those that fail.
"""

try:
    from dogpile.cache.api import NO_VALUE, CacheBackend, CachedValue
    from dogpile.cache.region import RegionInvalidationStrategy
except Exception:  # pragma: no cover - dogpile.cache missing or broken

    class CacheBackend:  # type: ignore[no-redef]
        pass

    class RegionInvalidationStrategy:  # type: ignore[no-redef]
        pass

    NO_VALUE = CachedValue = None  # type: ignore[assignment]

import pickle
import threading
import time

__all__ = ["SlotcacheBackend", "FileInvalidation"]

# Tags of the values the tiered mode stores in Redis.
_TAG_CACHED = b"P"
_TAG_SERIALIZED = b"S"

_TIER_TIMES = (
    "l1_ttl",
    "max_stale",
    "io_timeout",
    "retry_interval",
    "heartbeat",
    "stream_timeout",
)

_NATIVE_METHODS = (
    "get",
    "get_multi",
    "set",
    "set_multi",
    "get_serialized",
    "get_serialized_multi",
    "set_serialized",
    "set_serialized_multi",
    "delete",
    "delete_multi",
)


class SlotcacheBackend(CacheBackend):
    """dogpile.cache backend over one slotcache file (see the module docs)."""

    # The CacheBackend path, as dogpile's memcached backends: dogpile hands
    # us CachedValue objects and the metadata is encoded in Rust.
    serializer = None
    deserializer = None

    def __init__(self, arguments):
        from . import _slotcache
        from ._slotcache import Cache, DogpileStore

        del _slotcache
        args = dict(arguments)
        filename = args.get("filename")
        if filename is None:
            raise ValueError(
                "the slotcache backend needs arguments={'filename': ...}: the path of the cache file"
            )
        cache_args = {}
        for name in ("capacity", "max_entries", "stripes", "regen_stripes"):
            if args.get(name) is not None:
                cache_args[name] = args[name]
        self.filename = filename
        self.cache = Cache(filename, **cache_args)
        self._lock_timeout = args.get("lock_timeout")
        store = DogpileStore(
            self.cache,
            CachedValue,
            NO_VALUE,
            expiration=args.get("expiration"),
            lock_timeout=self._lock_timeout,
            nested_lock_timeout=args.get("nested_lock_timeout"),
        )
        self._store = store
        # Bound native methods as instance attributes: dogpile's calls go
        # straight to Rust, with no Python frame in between.
        for name in _NATIVE_METHODS:
            setattr(self, name, getattr(store, name))
        self.get_mutex = store.mutex
        self.tier = None
        if args.get("redis_url") is not None:
            self._init_tier(args)

    def _init_tier(self, args):
        from . import _slotcache

        if not hasattr(_slotcache, "TieredStore"):  # pragma: no cover
            raise RuntimeError(
                "redis_url: this build of slotcache has no Redis tier (built without the redis feature)"
            )
        url = args["redis_url"]
        if not isinstance(url, str):
            raise TypeError(f"redis_url must be a str like 'redis://host:6379/0', found {type(url).__name__}")
        times = {n: args[n] for n in _TIER_TIMES if args.get(n) is not None}
        self._lease_s = float(args.get("lease", 30))
        self.tier = _slotcache.TieredStore(
            self.cache,
            url,
            args.get("redis_prefix", "dogpile:"),
            lease=self._lease_s,
            **times,
        )
        self._held = threading.local()
        for name in _NATIVE_METHODS:
            setattr(self, name, getattr(self, "_tier_" + name))
        self.get_mutex = self._tier_mutex

    # -- the tiered mode (redis_url) ---------------------------------------

    def tier_stats(self):
        """The Redis tier's counters of this process (a dict; ``None``
        without ``redis_url``)."""
        return None if self.tier is None else self.tier.stats()

    def _leases(self):
        d = getattr(self._held, "leases", None)
        if d is None:
            d = self._held.leases = {}
        return d

    def _tier_mutex(self, key):
        return _FleetMutex(self, key, self._store.mutex(key))

    def _tier_read(self, key, tag):
        b = self.tier.get(key)
        if b is None or b[:1] != tag:
            return None
        return b[1:]

    def _tier_get(self, key):
        b = self._tier_read(key, _TAG_CACHED)
        if b is None:
            return NO_VALUE
        payload, meta = pickle.loads(b)
        return CachedValue(payload, meta)

    def _tier_get_multi(self, keys):
        return [self._tier_get(k) for k in keys]

    def _tier_write(self, key, data):
        from ._errors import RedisError

        lease = self._leases().get(key)
        try:
            if lease is not None:
                self.tier.set_leased(lease, data)
            else:
                self.tier.set(key, data)
        except RedisError:
            # Redis down: kept in this host's file only, unverified.
            self.tier.keep_local(key, data)

    def _tier_set(self, key, value):
        payload, meta = value
        self._tier_write(key, _TAG_CACHED + pickle.dumps((payload, dict(meta)), -1))

    def _tier_set_multi(self, mapping):
        for k, v in mapping.items():
            self._tier_set(k, v)

    def _tier_get_serialized(self, key):
        b = self._tier_read(key, _TAG_SERIALIZED)
        return NO_VALUE if b is None else b

    def _tier_get_serialized_multi(self, keys):
        return [self._tier_get_serialized(k) for k in keys]

    def _tier_set_serialized(self, key, value):
        self._tier_write(key, _TAG_SERIALIZED + bytes(value))

    def _tier_set_serialized_multi(self, mapping):
        for k, v in mapping.items():
            self._tier_set_serialized(k, v)

    def _tier_delete(self, key):
        self.tier.delete(key)

    def _tier_delete_multi(self, keys):
        for k in keys:
            self.tier.delete(k)

    def get_mutex(self, key):  # replaced per instance by the native one
        return self._store.mutex(key)

    def has_lock_timeout(self):
        return self._lock_timeout is not None

    def get(self, key):  # pragma: no cover - replaced per instance
        return self._store.get(key)

    def get_multi(self, keys):  # pragma: no cover
        return self._store.get_multi(keys)

    def set(self, key, value):  # pragma: no cover
        self._store.set(key, value)

    def set_multi(self, mapping):  # pragma: no cover
        self._store.set_multi(mapping)

    def get_serialized(self, key):  # pragma: no cover
        return self._store.get_serialized(key)

    def get_serialized_multi(self, keys):  # pragma: no cover
        return self._store.get_serialized_multi(keys)

    def set_serialized(self, key, value):  # pragma: no cover
        self._store.set_serialized(key, value)

    def set_serialized_multi(self, mapping):  # pragma: no cover
        self._store.set_serialized_multi(mapping)

    def delete(self, key):  # pragma: no cover
        self._store.delete(key)

    def delete_multi(self, keys):  # pragma: no cover
        self._store.delete_multi(keys)


class _FleetMutex:
    """The mutex of the tiered mode: the host's regeneration lock, then the
    fleet lease in Redis (held by this thread until ``release``; the
    backend's ``set`` of the key under it is the fenced fill)."""

    def __init__(self, backend, key, host):
        self._backend = backend
        self._key = key
        self._host = host

    def acquire(self, wait=True):
        from ._errors import RedisError

        if not self._host.acquire(wait):
            return False
        b = self._backend
        deadline = time.monotonic() + b._lease_s + 1.0
        pause = 0.005
        while True:
            try:
                lease = b.tier.try_lease(self._key)
            except RedisError:
                return True  # Redis down: the host's lock only
            if lease is not None:
                b._leases()[self._key] = lease
                return True
            if not wait:
                self._host.release()
                return False
            if time.monotonic() >= deadline:
                return True  # the holder's lease has run out
            time.sleep(pause)
            pause = min(pause * 1.5, 0.1)

    def release(self):
        from ._errors import RedisError

        lease = self._backend._leases().pop(self._key, None)
        try:
            if lease is not None:
                self._backend.tier.release_lease(lease)
        except RedisError:
            pass
        finally:
            self._host.release()

    def locked(self):
        return self._host.locked()

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


class FileInvalidation(RegionInvalidationStrategy):
    """Hard and soft invalidation kept in the cache file, so that
    ``region.invalidate()`` reaches every process using it (dogpile.cache's
    default strategy only affects the calling process's region object)::

        region = make_region()
        region.configure("slotcache", expiration_time=600,
                         arguments={"filename": path},
                         region_invalidator=FileInvalidation(region))

    Hard: values created before are misses everywhere. Soft: they are stale,
    served while one caller regenerates (needs an ``expiration_time``).
    """

    def __init__(self, region_or_backend):
        self._target = region_or_backend

    def _cache(self):
        t = self._target
        backend = getattr(t, "actual_backend", t)
        return backend.cache

    def invalidate(self, hard=True):
        self._cache().invalidate(hard=bool(hard))

    def _times(self):
        return self._cache().invalidated_at()

    def is_hard_invalidated(self, timestamp):
        hard, _ = self._times()
        return hard is not None and timestamp < hard

    def is_soft_invalidated(self, timestamp):
        hard, soft = self._times()
        return soft is not None and timestamp < soft and not (hard is not None and timestamp < hard)

    def is_invalidated(self, timestamp):
        hard, soft = self._times()
        return (hard is not None and timestamp < hard) or (soft is not None and timestamp < soft)

    def was_hard_invalidated(self):
        hard, soft = self._times()
        return hard is not None and (soft is None or hard >= soft)

    def was_soft_invalidated(self):
        hard, soft = self._times()
        return soft is not None and (hard is None or soft > hard)
