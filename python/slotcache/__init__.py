"""slotcache: a memory-mapped, single-file cache shared by many processes.

>>> import slotcache
>>> cache = slotcache.Cache("/tmp/app.slotcache", capacity="64MiB")  # doctest: +SKIP
>>> cache.set("greeting", b"hello", ttl=60)                         # doctest: +SKIP
>>> cache.get("greeting")                                            # doctest: +SKIP
b'hello'

The dogpile.cache backend is ``slotcache.dogpile`` (registered as
``"slotcache"``).
"""

import os as _os

from . import _errors
from ._errors import (
    Error,
    FileDamaged,
    InvalidOptions,
    KeyTooLarge,
    LockTimeout,
    NewerFormat,
    NotACacheFile,
    Pinned,
    ReadersFull,
    ReadOnly,
    Reentrant,
    RedisError,
    ValueTooLarge,
)
from ._types import Info, Stats, VerifyReport

try:
    from ._slotcache import FORMAT_VERSION, MAX_KEY_LEN, Cache, RegenMutex
    from ._slotcache import _after_fork_in_child

    _IMPORT_ERROR = None
except ImportError as _e:  # a broken build: fail on use, not on import
    _IMPORT_ERROR = _e
    FORMAT_VERSION = MAX_KEY_LEN = None  # type: ignore[assignment]

    class Cache:  # type: ignore[no-redef]
        def __init__(self, *args, **kwargs):
            raise ImportError(f"slotcache's native module failed to import: {_IMPORT_ERROR}")

    RegenMutex = None  # type: ignore[assignment,misc]
else:
    # A fork child does not own its parent's regeneration locks; the engine
    # handles its own state, this resets the package's.
    if hasattr(_os, "register_at_fork"):
        _os.register_at_fork(after_in_child=_after_fork_in_child)

__version__ = "0.1.0"

__all__ = [
    "Cache",
    "RegenMutex",
    "Stats",
    "Info",
    "VerifyReport",
    "MAX_KEY_LEN",
    "FORMAT_VERSION",
    *_errors.__all__,
]
