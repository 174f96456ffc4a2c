"""dogpile.cache's own backend, mutex and serializer suites, run against the
slotcache backend (time-intensive tests included)."""

from dogpile.testing.fixtures import (
    _GenericBackendTestSuite,
    _GenericMutexTestSuite,
    _GenericSerializerTestSuite,
)

import pytest

from conftest import fresh_path, start_redis

ARGS = {"filename": fresh_path("suite.slotcache"), "capacity": "32MiB"}


class SlotcacheSuiteConfig:
    backend = "slotcache"
    config_args = {"arguments": ARGS}


class TestSlotcacheBackend(SlotcacheSuiteConfig, _GenericBackendTestSuite):
    pass


class TestSlotcacheMutex(SlotcacheSuiteConfig, _GenericMutexTestSuite):
    pass


class TestSlotcacheSerializer(
    SlotcacheSuiteConfig, _GenericSerializerTestSuite, _GenericBackendTestSuite
):
    pass


# The same suites with redis_url: the file in front of a redis-server of
# this run (skipped, loudly, without redis-server).
REDIS_URL = start_redis()
needs_redis = pytest.mark.skipif(
    REDIS_URL is None,
    reason="SKIPPED LOUDLY: redis-server is not on PATH; the redis_url suites did not run",
)


def tiered_args(prefix):
    return {
        "filename": fresh_path("suite-tiered.slotcache"),
        "capacity": "32MiB",
        "redis_url": REDIS_URL or "redis://127.0.0.1:1/0",
        "redis_prefix": prefix,
    }


@needs_redis
class TestTieredBackend(_GenericBackendTestSuite):
    backend = "slotcache"
    config_args = {"arguments": tiered_args("suite-backend:")}


@needs_redis
class TestTieredMutex(_GenericMutexTestSuite):
    backend = "slotcache"
    config_args = {"arguments": tiered_args("suite-mutex:")}


@needs_redis
class TestTieredSerializer(_GenericSerializerTestSuite, _GenericBackendTestSuite):
    backend = "slotcache"
    config_args = {"arguments": tiered_args("suite-serializer:")}
