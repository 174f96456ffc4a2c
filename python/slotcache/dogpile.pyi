from collections.abc import Mapping
from typing import Any

from dogpile.cache.api import CacheBackend
from dogpile.cache.region import RegionInvalidationStrategy

from ._slotcache import Cache, RegenMutex, TieredStore

class SlotcacheBackend(CacheBackend):
    filename: str
    cache: Cache
    tier: TieredStore | None
    def __init__(self, arguments: Mapping[str, Any]) -> None: ...
    def get_mutex(self, key: str) -> RegenMutex: ...  # type: ignore[override]
    def has_lock_timeout(self) -> bool: ...
    def tier_stats(self) -> dict[str, int | bool] | None: ...

class FileInvalidation(RegionInvalidationStrategy):
    def __init__(self, region_or_backend: Any) -> None: ...
