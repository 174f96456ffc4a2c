"""Plain records returned by ``Cache.stats()``, ``Cache.info()`` and
``Cache.verify()``."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Stats:
    """Counters of every process using the file."""

    entries: int
    bytes_used: int
    capacity: int
    hits: int
    misses: int
    expired: int
    inserts: int
    evictions: int
    index_evictions: int
    reinserts: int
    deletes: int
    corrupt: int
    mismatched: int
    pin_waits: int
    stripe_repairs: int
    lock_owner_deaths: int
    creates: int
    stale_served: int
    waits: int
    lock_timeouts: int


@dataclass(frozen=True)
class Info:
    """Geometry of an open cache file."""

    path: str
    file_size: int
    stripes: int
    segments: int
    segment_size: int
    index_slots: int
    reader_slots: int
    read_only: bool
    created: float
    max_value_len: int


@dataclass(frozen=True)
class VerifyReport:
    """What ``Cache.verify()`` found (it writes nothing)."""

    clean: bool
    records_scanned: int
    bad_checksums: int
    unreachable_bad_checksums: int
    dangling_slots: int
    damaged_stripes: int
    live_entries: int
    entries_drift: int
    live_pins: int
