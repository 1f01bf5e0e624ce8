"""Fixtures of the hostile suites: one processing backend subprocess and an API in front of it.

Both run with the corpus limits (:data:`hostile_corpus.LIMITS`) and a short
I/O timeout; their logs go to a session directory so a test can search them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hostile_corpus import LIMITS
from hostile_stack import ApiService, BackendService


@pytest.fixture(scope="session")
def hostile_logs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("hostile-logs")


@pytest.fixture(scope="session")
def hostile_backend(hostile_logs) -> Iterator[BackendService]:
    """A real ``watercolor process`` subprocess: two slots, a queue of eight."""
    backend = BackendService(hostile_logs, slots=2, queue=8, io_timeout=5, **LIMITS)
    backend.start()
    yield backend
    backend.stop()


@pytest.fixture(scope="session")
def hostile_api(hostile_backend, hostile_logs) -> Iterator[ApiService]:
    """A real ``watercolor api`` (gunicorn) subprocess in front of ``hostile_backend``."""
    api = ApiService(hostile_logs, [hostile_backend.label], api_workers=4, api_deadline=120,
                     io_timeout=20, **LIMITS)
    api.start()
    yield api
    api.stop()
