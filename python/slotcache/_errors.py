"""The exceptions slotcache raises. Messages say what was expected and what
was found. Operating-system failures are raised as the natural ``OSError``
subclass (``FileNotFoundError``, ``IsADirectoryError``, ``PermissionError``,
...), with the operation and the path in the message."""


class Error(Exception):
    """Base class of slotcache's own errors."""


class NotACacheFile(Error):
    """The file exists but is not a slotcache file (wrong magic bytes)."""


class NewerFormat(Error):
    """The file was written by a newer format version than this build reads."""


class FileDamaged(Error):
    """The file's header is damaged or inconsistent (truncated, extended,
    corrupt fields, foreign rkyv flags, or an older format version)."""


class InvalidOptions(Error, ValueError):
    """An option is out of range, or the options do not fit together."""


class KeyTooLarge(Error, ValueError):
    """The key is longer than 1024 bytes."""


class ValueTooLarge(Error, ValueError):
    """The value does not fit in one log segment (see ``Cache.max_value_len``)."""


class ReadOnly(Error, PermissionError):
    """The cache is open read-only."""


class LockTimeout(Error, TimeoutError):
    """Waiting for a regeneration lock took longer than allowed."""


class Pinned(Error):
    """A write needed space held by a live view for longer than ``pin_wait``."""


class Reentrant(Error, RuntimeError):
    """``get_or_create`` re-entered for a key from inside its own creator."""


class ReadersFull(Error):
    """Every reader slot of the file is taken by a live thread."""


class RedisError(Error):
    """Redis refused or failed a write of the tiered backend (``redis_url``),
    or its URL is invalid. Reads never raise it: they fall back to the file."""


__all__ = [
    "RedisError",
    "Error",
    "NotACacheFile",
    "NewerFormat",
    "FileDamaged",
    "InvalidOptions",
    "KeyTooLarge",
    "ValueTooLarge",
    "ReadOnly",
    "LockTimeout",
    "Pinned",
    "Reentrant",
    "ReadersFull",
]
