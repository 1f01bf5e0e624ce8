"""Fixtures for the API: real processing backends and real API servers on loopback ports.

Chain: backends (``watercolor process`` subprocesses) → settings → app →
Flask test client; ``api_server`` is a real ``watercolor api`` (gunicorn)
subprocess in front of the same backends.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from apitools import ApiServer, Backend, settings_for
from PIL import Image

from watercolor.api import create_app


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="session")
def backends(log_dir) -> Iterator[list[Backend]]:
    """Two backends shared by the session (one slot and a queue of 4 each)."""
    started = [Backend(log_dir, slots=1, queue=4) for _ in range(2)]
    yield started
    for backend in started:
        backend.stop()


@pytest.fixture
def api_settings(backends):
    return settings_for(backends)


@pytest.fixture
def app(api_settings):
    return create_app(api_settings)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture(scope="session")
def api_server(backends, log_dir) -> Iterator[ApiServer]:
    server = ApiServer(log_dir, process_backends=",".join(b.label for b in backends),
                       max_body_bytes=4 * 1024 * 1024, data_dir=log_dir / "api-data")
    yield server
    server.stop()


# --- real photos, small ------------------------------------------------------------------------


def _photo(name: str) -> Image.Image:
    import skimage.data

    return Image.fromarray(getattr(skimage.data, name)()).convert("RGB")


@pytest.fixture(scope="session")
def photos() -> list[Image.Image]:
    """Three small crops of real photos, each a different size so their order shows."""
    return [
        _photo("astronaut").crop((180, 40, 244, 88)),  # 64x48, a face
        _photo("coffee").crop((200, 100, 256, 156)),  # 56x56, the cup
        _photo("chelsea").crop((100, 50, 172, 90)),  # 72x40, the cat
    ]
