import os
import shutil
import tempfile

import pytest

# One directory for the whole run: dogpile's suites configure their backend
# from class attributes, before any fixture runs.
RUN_DIR = tempfile.mkdtemp(prefix="slotcache-pytest-")


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(RUN_DIR, ignore_errors=True)


def fresh_path(name):
    d = tempfile.mkdtemp(dir=RUN_DIR)
    return os.path.join(d, name)


@pytest.fixture
def path():
    return fresh_path("test.slotcache")
