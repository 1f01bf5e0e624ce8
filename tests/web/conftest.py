"""Fixtures for the web page: a real backend and API, and headless Chromium driven by Playwright.

The browser is Debian's ``chromium`` (never a downloaded build; ``CHROMIUM_PATH``
names another executable): when it or the
``playwright`` package is missing the browser tests are skipped with the
reason, except under CI (``CI=true``), where that is a failure.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "api"))

from apitools import REPO, ApiServer, Backend  # noqa: E402

ARTIFACTS = REPO / "test-artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _missing(what: str) -> None:
    message = f"{what}; the browser tests need it (Debian: apt-get install -y chromium)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and {message}", pytrace=False)
    pytest.skip(f"SKIPPED LOUDLY: {message}")


@pytest.fixture(scope="session")
def chromium() -> str:
    path = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).is_file():
        _missing("no chromium executable")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _missing("the playwright package is not installed")
    return path


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[ApiServer]:
    """One real backend (1 thread) and the real API (gunicorn) in front of it."""
    logs = tmp_path_factory.mktemp("web-logs")
    backend = Backend(logs, slots=1, queue=4)
    api = ApiServer(logs, process_backends=backend.label, data_dir=logs / "data")
    yield api
    api.stop()
    backend.stop()


@pytest.fixture(scope="module")
def browser(chromium, tmp_path_factory):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=chromium, headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1280, "height": 900}, accept_downloads=True)
        yield context
        context.close()


@pytest.fixture
def page(browser):
    page = browser.new_page()
    page.set_default_timeout(120_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    yield page
    page.close()
    assert not errors, f"the page logged errors: {errors}"


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
