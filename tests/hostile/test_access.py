"""Access: API keys on every route, the backends' shared secret, no secret in logs, no internals.

* With ``WTC_API_KEYS`` set, every route of the app - found in its URL map,
  so a route added later is covered without touching this file - answers 401
  without a key, with a wrong key, with a key in the wrong place or scheme;
  except the open ones (:data:`OPEN`): the liveness and readiness probes, the
  web page's static shell and the OpenAPI document. Readiness without a key
  says only ready or not: the backends' addresses are for key holders.
* The backends' shared secret, beyond tests/processing/test_process.py
  (wrong, missing and replayed signatures on raw frames): stale and future
  timestamps, a missing nonce, an API with the wrong secret or none, and a
  "backend" whose replies are unsigned - the API takes no image from it.
* A whole stack run with a secret and keys set, at DEBUG, with good and bad
  requests: no log line of any process contains the secret or a key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import io
import json
import re
import secrets
import socket
import time
from collections.abc import Iterator

import pytest
from hostile_stack import ApiService, BackendService, assert_public_error, free_port, internals_in
from peers import ReplyingPeer
from PIL import Image

from watercolor import protocol, transport
from watercolor.api import create_app
from watercolor.config import load_settings
from watercolor.protocol import FrameType

KEYS = ("first-key-3f9a", "second-key-77c1")
#: (method, rule) of the routes open without a key when WTC_API_KEYS is set.
OPEN = {("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/"), ("GET", "/static/<path:filename>"),
        ("GET", "/openapi.json")}
SAMPLE_VALUES = {"job_id": "0123456789abcdef", "index": "0", "filename": "app.js"}


def _png() -> bytes:
    import skimage.data

    buffer = io.BytesIO()
    Image.fromarray(skimage.data.astronaut()[40:88, 180:244]).save(buffer, "PNG")
    return buffer.getvalue()


PNG = _png()


@pytest.fixture(scope="module")
def keyed_app():
    settings = load_settings({}, process_backends=f"127.0.0.1:{free_port()}", api_retries=0,
                             api_keys=",".join(KEYS))
    return create_app(settings)


def _routes(app) -> list[tuple[str, str, str]]:
    """(method, rule, a concrete path) for every route and method of the app."""
    out = []
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", lambda m: SAMPLE_VALUES.get(m.group(1), "x"), rule.rule)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            out.append((method, rule.rule, path))
    return out


BAD_CREDENTIALS = {
    "none": {},
    "wrong-bearer": {"Authorization": "Bearer not-a-key"},
    "empty-bearer": {"Authorization": "Bearer "},
    "basic-scheme": {"Authorization": "Basic " + base64.b64encode(f"user:{KEYS[0]}".encode()).decode()},
    "key-as-scheme": {"Authorization": KEYS[0]},
    "prefix-of-key": {"X-API-Key": KEYS[0][:-1]},
    "key-plus-one": {"X-API-Key": KEYS[0] + "x"},
    "both-keys-joined": {"X-API-Key": ",".join(KEYS)},
    "wrong-x-api-key-beats-right-bearer": {"X-API-Key": "nope", "Authorization": f"Bearer {KEYS[0]}"},
    "key-in-cookie": {"Cookie": f"api_key={KEYS[0]}"},
}


@pytest.mark.parametrize("credentials", list(BAD_CREDENTIALS), ids=list(BAD_CREDENTIALS))
def test_every_protected_route_refuses_bad_credentials(keyed_app, credentials):
    client = keyed_app.test_client()
    checked = 0
    for method, rule, path in _routes(keyed_app):
        if (method, rule) in OPEN:
            continue
        response = client.open(path + f"?api_key={KEYS[0]}", method=method,
                               headers=BAD_CREDENTIALS[credentials], data=PNG, content_type="image/png")
        assert response.status_code == 401, (method, path, response.status_code, response.data[:200])
        body = assert_public_error(401, response.data, response.content_type)
        assert body["error"]["code"] == "unauthorized"
        checked += 1
    assert checked >= 10  # the upload, batch, models, metrics and job routes


@pytest.mark.parametrize("header", ["bearer", "x-api-key"])
def test_every_protected_route_lets_a_valid_key_through(keyed_app, header):
    client = keyed_app.test_client()
    for n, (method, _rule, path) in enumerate(_routes(keyed_app)):
        key = KEYS[n % 2]
        headers = {"Authorization": f"Bearer {key}"} if header == "bearer" else {"X-API-Key": key}
        response = client.open(path, method=method, headers=headers, data=PNG, content_type="image/png")
        assert response.status_code != 401, (method, path, response.data[:200])


def test_open_routes_need_no_key_and_readiness_tells_strangers_nothing(keyed_app):
    client = keyed_app.test_client()
    for method, rule, path in _routes(keyed_app):
        if (method, rule) in OPEN:
            response = client.open(path, method=method)
            assert response.status_code in (200, 503), (path, response.status_code)
    stranger = client.get("/readyz")
    assert stranger.status_code == 503  # honest: this app's only backend address is closed
    assert set(stranger.get_json()) <= {"status", "error"}, stranger.get_json()
    assert "127.0.0.1" not in stranger.get_data(as_text=True)
    insider = client.get("/readyz", headers={"X-API-Key": KEYS[1]})
    assert insider.get_json()["backends"][0]["ok"] is False


def test_the_openapi_document_says_which_routes_need_a_key(keyed_app):
    document = keyed_app.test_client().get("/openapi.json").get_json()
    for method, rule, _ in _routes(keyed_app):
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule)
        operation = document["paths"].get(path, {}).get(method.lower())
        if operation is None:
            continue  # static files are not API operations
        secured = bool(operation.get("security"))
        assert secured == ((method, rule) not in OPEN), (method, rule)
        assert ("401" in operation["responses"]) == secured, (method, rule)


# --- the backends' shared secret ------------------------------------------------------------------

SECRET = "backend-secret-" + secrets.token_hex(8)


@pytest.fixture(scope="module")
def secret_backend(hostile_logs) -> Iterator[BackendService]:
    backend = BackendService(hostile_logs, shared_secret=SECRET, log_level="DEBUG", io_timeout=5)
    backend.start()
    yield backend
    backend.stop()


def _signed(frame: protocol.Frame, *, ts: object = None, nonce: str | None = "fresh",
            secret: bytes = SECRET.encode()) -> bytes:
    """``frame`` signed by hand, with a chosen timestamp (None: now) and nonce (None: no nonce)."""
    header = dict(frame.header, ts=time.time() if ts is None else ts)
    if nonce is not None:
        header["nonce"] = secrets.token_hex(12) if nonce == "fresh" else nonce
    raw = json.dumps(header).encode()
    body = protocol.PREFIX.pack(protocol.MAGIC, 1, int(frame.type), protocol.FLAG_MAC, 0, len(raw),
                                len(frame.payload)) + raw + frame.payload
    return body + hmac.new(secret, body, hashlib.sha256).digest()


def _raw(address, data: bytes) -> protocol.Frame | None:
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(data)
        decoder = protocol.FrameDecoder(max_payload=1 << 24, peer="backend", secret=SECRET.encode())
        try:
            return transport.recv_frame(sock, decoder, io_timeout=10)
        except transport.PeerClosed:
            return None


REQUEST = protocol.request("s", PNG, model="lanczos", scale=2)


@pytest.mark.parametrize(("name", "data", "answer"), [
    ("good", lambda: _signed(REQUEST), FrameType.RESULT),
    ("two-minutes-old", lambda: _signed(REQUEST, ts=time.time() - 120), "auth_failed"),
    ("two-minutes-ahead", lambda: _signed(REQUEST, ts=time.time() + 120), "auth_failed"),
    ("no-nonce", lambda: _signed(REQUEST, nonce=None), "auth_failed"),
    ("empty-nonce", lambda: _signed(REQUEST, nonce=""), "auth_failed"),
    ("ts-as-text", lambda: _signed(REQUEST, ts="now"), "auth_failed"),
    ("other-secret", lambda: _signed(REQUEST, secret=b"another-secret"), "auth_failed"),
    ("tag-cut-short", lambda: _signed(REQUEST)[:-1], None),
    ("payload-swapped-after-signing", lambda: _signed(REQUEST)[:-40] + bytes(8) + _signed(REQUEST)[-32:],
     "auth_failed"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_the_backend_takes_only_fresh_valid_signatures(secret_backend, name, data, answer):
    reply = _raw(secret_backend.address, data())
    if answer is None:
        assert reply is None or reply.header.get("code") == "auth_failed"
    elif answer is FrameType.RESULT:
        assert reply is not None and reply.type is FrameType.RESULT, reply
    else:
        assert reply is not None and reply.type is FrameType.ERROR and reply.header["code"] == answer, reply
    assert secret_backend.ping().type is FrameType.PONG


@pytest.mark.parametrize(("api_secret", "status", "code"), [
    (SECRET, 200, None),
    # The API cannot verify the backend's reply: a broken link, tried elsewhere, then 503.
    ("not-the-secret", 503, "backend_unavailable"),
    # The API reads the backend's signed refusal: a misconfigured link, at once 500.
    ("", 500, "backend_error"),
], ids=["same-secret", "wrong-secret", "no-secret"])
def test_the_api_needs_the_backends_secret(secret_backend, hostile_logs, api_secret, status, code):
    api = ApiService(hostile_logs, [secret_backend.label], shared_secret=api_secret, api_retries=0,
                     log_level="DEBUG")
    api.start()
    try:
        connection = http.client.HTTPConnection("127.0.0.1", api.port, timeout=60)
        connection.request("POST", "/v1/upscale?model=lanczos&scale=2", body=PNG,
                           headers={"Content-Type": "image/png"})
        response = connection.getresponse()
        body = response.read()
        assert response.status == status, body[:300]
        if code:
            document = assert_public_error(response.status, body, response.getheader("Content-Type"))
            assert document["error"]["code"] == code
        ready = json.loads(api.get("/readyz")[1])
        assert ready["status"] == ("ready" if status == 200 else "not ready")
    finally:
        api.stop()
    assert SECRET not in api.log()


def test_the_api_takes_no_image_from_a_backend_that_cannot_sign():
    # A stranger posing as a backend: every connection gets an unsigned RESULT.
    stranger = ReplyingPeer(protocol.encode_frame(protocol.result("x", PNG, width=64, height=48, format="png",
                                                                  mime="image/png")))
    settings = load_settings({}, process_backends=f"127.0.0.1:{stranger.address[1]}", shared_secret=SECRET,
                             api_retries=1, api_deadline=10)
    response = create_app(settings).test_client().post("/v1/upscale?model=lanczos&scale=2", data=PNG,
                                                       content_type="image/png")
    assert stranger.answered >= 1
    assert response.status_code == 503, response.data[:200]
    assert_public_error(503, response.data, response.content_type)
    stranger.sock.close()


# --- no secret in any log line -------------------------------------------------------------------------


def test_no_secret_or_key_in_any_log_line(tmp_path):
    secret = "wtc-secret-" + secrets.token_hex(16)
    keys = ["wtc-key-" + secrets.token_hex(12) for _ in range(2)]
    backend = BackendService(tmp_path, shared_secret=secret, log_level="DEBUG", io_timeout=2)
    backend.start()
    api = ApiService(tmp_path, [backend.label], shared_secret=secret, api_keys=",".join(keys),
                     log_level="DEBUG", api_retries=0)
    wrong = ApiService(tmp_path, [backend.label], shared_secret=secret[::-1], api_keys=keys[0],
                       log_level="DEBUG", api_retries=0)
    try:
        api.start()
        wrong.start()
        for service, key in ((api, keys[0]), (api, keys[1]), (api, "a-wrong-key"), (api, None),
                             (wrong, keys[0])):
            headers = {"Content-Type": "image/png"}
            if key:
                headers["Authorization"] = f"Bearer {key}"
            for path, body in (("/v1/upscale?model=lanczos&scale=2", PNG), ("/v1/upscale", b"junk"),
                               ("/", b"{not json")):
                connection = http.client.HTTPConnection("127.0.0.1", service.port, timeout=60)
                connection.request("POST", path, body=body, headers=headers)
                connection.getresponse().read()
                connection.close()
            service.get("/readyz")
            service.get("/metrics", headers={"X-API-Key": key or ""})
        # Raw frames at the backend: unsigned, wrongly signed, replayed.
        good = protocol.encode_frame(REQUEST, secret.encode())
        for data in (protocol.encode_frame(REQUEST), protocol.encode_frame(REQUEST, b"guess"), good, good):
            with socket.create_connection(backend.address, timeout=10) as sock:
                sock.sendall(data)
                sock.recv(1 << 16)
    finally:
        for service in (api, wrong, backend):
            service.stop()
    logs = {path.name: path.read_text(errors="replace") for path in tmp_path.glob("*.log")}
    assert len(logs) == 3 and all(logs.values())
    assert any("auth_failed" in text for text in logs.values())  # the bad attempts were logged...
    for name, text in logs.items():
        for value in (secret, *keys, secret[::-1]):
            for form in (value, value[:12] + value[12:][:8]):  # ...but never a secret, not even part of one
                assert form not in text, f"{name} carries a secret"
            assert base64.b64encode(value.encode()).decode()[:16] not in text
        assert not internals_in_lines(text)


def internals_in_lines(text: str) -> list[str]:
    """Log lines may name exceptions, but never quote an Authorization header."""
    return [line for line in text.splitlines() if "Authorization:" in line or "X-API-Key:" in line]


def test_internals_helper_flags_what_it_should():
    """The checker the suites rely on: it must catch tracebacks, paths and exception class names."""
    assert internals_in('Traceback (most recent call last):\n  File "/srv/app/x.py", line 3')
    assert internals_in("ValueError: bad")
    assert internals_in("see /usr/lib/python3/dist-packages")
    assert internals_in("<watercolor.thing object at 0x7f3a2b1c0d90>")
    assert not internals_in('{"error": {"code": "corrupt_image", "message": "the image data is corrupt"}}')


def test_frame_tags_are_compared_in_constant_time(monkeypatch):
    """The backend checks a frame's HMAC tag with hmac.compare_digest, on equal-length digests."""
    calls = []
    original = hmac.compare_digest

    def counting(a, b):
        calls.append((len(a), len(b)))
        return original(a, b)

    monkeypatch.setattr(protocol.hmac, "compare_digest", counting)
    for data in (_signed(REQUEST), _signed(REQUEST, secret=b"guess"), _signed(REQUEST)[:-32] + bytes(32)):
        decoder = protocol.FrameDecoder(max_payload=1 << 24, peer="client", secret=SECRET.encode())
        try:
            list(decoder.feed(data))
        except Exception:  # noqa: BLE001 - refusals are expected; the comparison is what is checked
            pass
    assert calls == [(32, 32)] * 3
