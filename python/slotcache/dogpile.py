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

__all__ = ["SlotcacheBackend", "FileInvalidation"]

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
