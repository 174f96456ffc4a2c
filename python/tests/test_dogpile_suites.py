"""dogpile.cache's own backend, mutex and serializer suites, run against the
slotcache backend (time-intensive tests included)."""

from dogpile.testing.fixtures import (
    _GenericBackendTestSuite,
    _GenericMutexTestSuite,
    _GenericSerializerTestSuite,
)

from conftest import fresh_path

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
