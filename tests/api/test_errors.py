"""Errors as clients see them: JSON bodies, the right status, Retry-After, no tracebacks.

None of these needs a running backend: every request is refused before it
would reach one, or the only backend address is a closed port.
"""

from __future__ import annotations

import base64
import hmac

import pytest
from apitools import free_port, image_bytes

from watercolor.api import create_app
from watercolor.api.common import auth
from watercolor.config import load_settings


def _settings(**overrides):
    values = {"process_backends": f"127.0.0.1:{free_port()}", "api_retries": 0, **overrides}
    return load_settings({}, **values)


@pytest.fixture
def offline():
    """An API whose only backend address refuses connections."""
    return create_app(_settings()).test_client()


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.data[:500]
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert "Traceback" not in response.get_data(as_text=True)
    return body


PNG = base64.b64decode(  # a real 1x1 PNG
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")


@pytest.mark.parametrize(("method", "path", "kwargs", "status", "code"), [
    ("post", "/", {"data": b'{"id": 1, "images": [', "content_type": "application/json"},
     400, "bad_request"),
    ("post", "/", {"data": b"", "content_type": "application/json"}, 400, "bad_request"),
    ("post", "/", {"json": ["not", "an", "object"]}, 400, "bad_request"),
    ("post", "/", {"json": {"id": 1}}, 400, "bad_request"),
    ("post", "/", {"json": {"id": 1, "images": "abc"}}, 400, "bad_request"),
    ("post", "/", {"data": b"hello", "content_type": "text/plain"}, 415, "unsupported_media_type"),
    ("post", "/", {"json": {"images": [], "scale": 99}}, 422, "invalid_parameter"),
    ("post", "/", {"json": {"images": [], "model": "nope"}}, 422, "unknown_model"),
    ("post", "/", {"json": {"images": [], "format": "bmp"}}, 422, "invalid_parameter"),
    ("post", "/", {"json": {"images": [], "quality": 0}}, 422, "invalid_parameter"),
    ("post", "/", {"json": {"images": [], "model": "lanczos", "denoise": 1}}, 422, "invalid_parameter"),
    ("post", "/", {"json": {"images": [], "model": "waifu2x-photo", "denoise": 9}}, 422,
     "invalid_parameter"),
    ("post", "/", {"json": {"images": ["x"] * 65}}, 422, "too_many_images"),
    ("post", "/", {"json": {"images": [], "format": []}}, 422, "invalid_parameter"),
    ("post", "/", {"json": {"images": [], "model": 0}}, 422, "invalid_parameter"),
    ("post", "/", {"json": {"images": [], "tile_size": False}}, 422, "invalid_parameter"),
    ("post", "/v1/upscale?tile_size=", {"data": PNG, "content_type": "image/png"}, 422,
     "invalid_parameter"),
    ("post", "/v1/upscale?model=", {"data": PNG, "content_type": "image/png"}, 422, "invalid_parameter"),
    ("post", "/v1/upscale", {"data": b"hello", "content_type": "text/plain"}, 415,
     "unsupported_media_type"),
    ("post", "/v1/upscale", {"data": b"hello"}, 415, "unsupported_media_type"),
    ("post", "/v1/upscale", {"json": {"images": []}}, 415, "unsupported_media_type"),
    ("post", "/v1/upscale?scale=0.5", {"data": PNG, "content_type": "image/png"}, 422,
     "invalid_parameter"),
    ("post", "/v1/upscale?scale=abc", {"data": PNG, "content_type": "image/png"}, 422,
     "invalid_parameter"),
    ("post", "/v1/upscale?scale=nan", {"data": PNG, "content_type": "image/png"}, 422,
     "invalid_parameter"),
    ("post", "/v1/upscale?scale=2&scale=3", {"data": PNG, "content_type": "image/png"}, 400,
     "bad_request"),
    ("post", "/v1/upscale", {"data": b"", "content_type": "image/png"}, 400, "empty_image"),
    ("post", "/v1/upscale", {"data": {"other": "x"}, "content_type": "multipart/form-data"}, 400,
     "bad_request"),
    ("get", "/nowhere", {}, 404, "not_found"),
    ("put", "/v1/upscale", {}, 405, "method_not_allowed"),
    ("delete", "/", {}, 405, "method_not_allowed"),
], ids=["malformed-json", "empty-json", "json-array", "no-images", "images-not-list", "text-plain",
        "bad-scale", "unknown-model", "bad-format", "bad-quality", "option-for-optionless-model",
        "bad-option-value", "too-many-images", "format-not-string", "model-zero", "tile-size-false",
        "empty-tile-size", "empty-model", "upscale-text-plain", "upscale-no-type",
        "upscale-json", "scale-below-1", "scale-not-number", "scale-nan", "scale-twice", "empty-image",
        "multipart-without-image", "unknown-route", "wrong-method", "delete-root"])
def test_bad_requests_get_json_errors(offline, method, path, kwargs, status, code):
    assert_error(getattr(offline, method)(path, **kwargs), status, code)


def test_image_over_pixel_limits_is_refused_before_any_backend(offline):
    from PIL import Image

    small = create_app(_settings(max_input_pixels=100, max_output_pixels=5_000)).test_client()
    big = image_bytes(Image.new("RGB", (20, 20)))
    assert_error(small.post("/v1/upscale?model=lanczos&scale=2", data=big, content_type="image/png"),
                 422, "image_too_large")
    fits = image_bytes(Image.new("RGB", (10, 10)))
    assert_error(small.post("/v1/upscale?model=lanczos&scale=8", data=fits, content_type="image/png"),
                 422, "output_too_large")


def test_oversized_body_is_json_413():
    client = create_app(_settings(max_body_bytes=1000)).test_client()
    body = assert_error(client.post("/v1/upscale", data=b"\0" * 5000, content_type="image/png"),
                        413, "payload_too_large")
    assert "over the limit of 1000 bytes" in body["error"]["message"]
    assert_error(client.post("/", data=b"[" * 5000, content_type="application/json"),
                 413, "payload_too_large")


def test_no_backend_is_503_with_retry_after(offline):
    response = offline.post("/v1/upscale?model=lanczos&scale=2", data=PNG, content_type="image/png")
    assert_error(response, 503, "backend_unavailable")
    assert int(response.headers["Retry-After"]) >= 1

    batch = offline.post("/", json={"id": "b", "images": [base64.b64encode(PNG).decode()] * 2,
                                    "model": "lanczos"})
    body = assert_error(batch, 503, "backend_unavailable")
    assert int(batch.headers["Retry-After"]) >= 1
    assert body["id"] == "b" and body["images"] == [None, None]
    assert [e["index"] for e in body["errors"]] == [0, 1]

    ready = offline.get("/readyz")
    assert_error(ready, 503, "backend_unavailable")
    assert ready.headers["Retry-After"]
    assert ready.get_json()["backends"][0]["ok"] is False


def test_unexpected_errors_are_a_generic_500_with_the_traceback_only_in_the_log(caplog):
    app = create_app(_settings())

    @app.get("/boom")
    def boom():
        raise RuntimeError("secret detail /srv/path")

    response = app.test_client().get("/boom")
    body = assert_error(response, 500, "internal_error")
    assert "secret" not in response.get_data(as_text=True) and body["error"]["message"] == "internal error"
    assert any("secret detail" in (r.exc_text or "") or r.exc_info for r in caplog.records)


# --- API keys ------------------------------------------------------------------------------------


@pytest.fixture
def keyed():
    return create_app(_settings(api_keys="first-key, second-key")).test_client()


@pytest.mark.parametrize(("headers", "status"), [
    ({}, 401),
    ({"Authorization": "Bearer wrong"}, 401),
    ({"Authorization": "Basic second-key"}, 401),
    ({"X-API-Key": "first-ke"}, 401),
    ({"Authorization": "Bearer second-key"}, 200),
    ({"Authorization": "bearer first-key"}, 200),
    ({"X-API-Key": "first-key"}, 200),
], ids=["none", "wrong", "not-bearer", "prefix", "bearer-second", "bearer-lowercase", "x-api-key"])
def test_api_keys(keyed, headers, status):
    response = keyed.get("/v1/models", headers=headers)
    if status == 401:
        assert_error(response, 401, "unauthorized")
    else:
        assert response.status_code == 200


def test_api_keys_guard_uploads_but_not_probes_or_docs(keyed):
    assert_error(keyed.post("/v1/upscale", data=PNG, content_type="image/png"), 401, "unauthorized")
    assert_error(keyed.post("/", json={"images": []}), 401, "unauthorized")
    for path in ("/healthz", "/openapi.json", "/"):
        assert keyed.get(path).status_code == 200, path
    assert keyed.get("/readyz").status_code == 503  # open, and honest: no backend here
    assert_error(keyed.get("/metrics"), 401, "unauthorized")  # backend addresses and usage: key holders
    assert_error(keyed.get("/nowhere"), 404, "not_found")


def test_api_key_check_compares_every_key_in_constant_time(monkeypatch):
    calls = []
    original = hmac.compare_digest

    def counting(a, b):
        calls.append((len(a), len(b)))
        return original(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", counting)
    keys = auth.ApiKeys("alpha,beta,gamma")
    for key, expected in (("alpha", True), ("gamma", True), ("alp", False), ("x" * 1000, False)):
        calls.clear()
        assert keys.valid(key) is expected
        # every configured key is compared, whatever matched, always as equal-length digests
        assert calls == [(32, 32)] * 3
