"""``GET /`` answers browsers with the page and API clients with JSON; the page's files come
from the package and reach nothing outside the server."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from apitools import free_port

from watercolor.api import create_app
from watercolor.config import load_settings

STATIC = Path(__file__).resolve().parents[2] / "watercolor" / "api" / "static"
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8"


@pytest.fixture
def client():
    return create_app(load_settings({}, process_backends=f"127.0.0.1:{free_port()}")).test_client()


@pytest.mark.parametrize(("accept", "page"), [
    (BROWSER_ACCEPT, True),
    ("text/html", True),
    ("application/json", False),
    ("*/*", False),
    (None, False),
    ("application/json, text/html;q=0.5", False),
], ids=["browser", "html", "json", "curl", "no-accept", "json-preferred"])
def test_index_is_the_page_for_browsers_and_json_for_the_rest(client, accept, page):
    response = client.get("/", headers={"Accept": accept} if accept else {})
    assert response.status_code == 200
    assert "Accept" in response.headers["Vary"]
    if page:
        assert response.mimetype == "text/html"
        assert b"<title>Watercolor" in response.data
    else:
        assert response.get_json()["docs"] == "/openapi.json"


def test_post_to_index_keeps_the_original_json_behaviour(client):
    response = client.post("/", json={"images": []}, headers={"Accept": BROWSER_ACCEPT})
    assert response.mimetype == "application/json"


@pytest.mark.parametrize(("name", "mimetype"), [
    ("app.js", "text/javascript"), ("style.css", "text/css"), ("index.html", "text/html"),
])
def test_the_page_files_are_served_from_the_package(client, name, mimetype):
    response = client.get(f"/static/{name}")
    assert response.status_code == 200 and response.mimetype == mimetype
    assert response.data == (STATIC / name).read_bytes()


def test_the_page_loads_nothing_from_elsewhere():
    for path in STATIC.iterdir():
        text = path.read_text()
        assert not re.search(r"(https?:)?//[\w.-]+\.\w+/", text), f"{path.name} refers to another site"
    html = (STATIC / "index.html").read_text()
    assert set(re.findall(r'(?:src|href)="([^"]+)"', html)) == {
        "data:,", "static/style.css", "static/app.js", "openapi.json", "v1/models"}
