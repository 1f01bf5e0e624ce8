"""Faults with real subprocesses: what clients see when a backend or the API goes away.

Each test starts its own local stack (two ``watercolor process`` backends and
one ``watercolor api``, as ``./run.sh`` does) and breaks it:

* ``kill -9`` of a backend in the middle of an image: the API retries the
  image on the other backend; every request answers 200 with every image.
* SIGTERM of a backend under load: it stops accepting, finishes what it is
  running, answers what is queued with "shutting down" (the API retries those
  elsewhere) and exits 0; the load run sees no failure at all.
* SIGTERM of the API, then a new API on the same port: requests in flight are
  finished (gunicorn's graceful stop); new connections are refused until the
  new API listens; then service as before. Nothing else is seen.
* ``kill -9`` of the API in the middle of an image: the backend notices the
  closed connection, stops the work and frees the slot.

These are what docs/robustness.md promises; the long run (WTC_TEST_LONG=1)
makes the load under SIGTERM longer.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import signal
import threading
import time
from collections.abc import Iterator

import pytest
from hostile_stack import ApiService, LocalStack, load
from PIL import Image

#: A model slow enough on these CPUs (about 12 kpx/s) that a kill lands mid-image.
SLOW_MODEL = "realesrgan-x4plus-anime"


def _photo(box: tuple[int, int, int, int]) -> Image.Image:
    import skimage.data

    return Image.fromarray(skimage.data.astronaut()).crop(box)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


PHOTOS = [_photo((180 + 8 * n, 40, 236 + 8 * n, 96)) for n in range(4)]  # 56x56 crops, all different


def post(port: int, path: str, body: bytes, content_type: str, timeout: float = 300) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("POST", path, body=body, headers={"Content-Type": content_type})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def metric(api: ApiService, name: str, **labels: str) -> float:
    text = api.get("/metrics")[1].decode()
    want = "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}" if labels else ""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + want + " ") or (not labels and line.startswith(name + "{")):
            total += float(line.rsplit(" ", 1)[1])
    return total


def wait_until_running(backend, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while backend.ping().header.get("running", 0) < 1:
        assert time.monotonic() < end, "the backend never started an image"
        time.sleep(0.01)


def assert_enlarged(data: bytes, source: Image.Image, scale: int) -> None:
    image = Image.open(io.BytesIO(data))
    image.load()
    assert image.size == (source.width * scale, source.height * scale)


@pytest.fixture
def stack(tmp_path) -> Iterator[LocalStack]:
    with LocalStack(tmp_path, 2, backend_settings={"slots": 1, "queue": 4, "grace_period": 60},
                    api_settings={"api_workers": 8, "api_deadline": 300}) as running:
        yield running


def test_kill_9_of_a_backend_mid_image_loses_no_image(stack):
    victim, survivor = stack.backends
    batch = json.dumps({"id": "kill", "model": SLOW_MODEL, "scale": 4,
                        "images": [base64.b64encode(_png(p)).decode() for p in PHOTOS]}).encode()
    answers: dict[str, tuple[int, bytes]] = {}

    def send(name: str, path: str, body: bytes, ctype: str) -> None:
        answers[name] = post(stack.api.port, path, body, ctype)

    senders = [threading.Thread(target=send, args=("batch", "/", batch, "application/json"))]
    senders += [threading.Thread(target=send, args=(f"single-{n}", f"/v1/upscale?model={SLOW_MODEL}&scale=4",
                                                    _png(PHOTOS[n]), "image/png")) for n in range(2)]
    for sender in senders:
        sender.start()
    wait_until_running(victim)
    victim.kill()  # SIGKILL: no drain, no goodbye
    for sender in senders:
        sender.join(300)

    status, body = answers["batch"]
    assert status == 200, body[:300]
    document = json.loads(body)
    assert "errors" not in document and len(document["images"]) == len(PHOTOS)
    for encoded, source in zip(document["images"], PHOTOS, strict=True):
        assert_enlarged(base64.b64decode(encoded), source, 4)
    for n in range(2):
        status, body = answers[f"single-{n}"]
        assert status == 200, body[:300]
        assert_enlarged(body, PHOTOS[n], 4)
    assert metric(stack.api, "wtc_api_backend_failures_total", backend=victim.label, reason="lost") >= 1
    assert survivor.ping().header["running"] == 0


def test_sigterm_of_a_backend_under_load_fails_no_request(stack, long_run):
    draining, other = stack.backends
    kinds = load.request_mix()
    signalled = []

    def during(elapsed: float) -> None:
        if elapsed > 2.0 and not signalled:
            signalled.append(elapsed)
            draining.signal(signal.SIGTERM)

    seconds = 20.0 if long_run else 7.0
    results = load.run_load(stack.url, kinds, clients=3, seconds=seconds, during=during)
    assert draining.wait(90) == 0, draining.log()[-2000:]
    summary = load.summarise(results, kinds, seconds, 3, {}, {})
    print(load.render(summary))
    assert summary["failures"] == 0, summary["failure_examples"]
    assert summary["backpressure_503"] == 0
    late = [s for s in results.samples if s.status == 200]
    assert len(late) >= 5, "the load run did not get far"
    log = draining.log()
    assert "draining" in log and "received SIGTERM" in log
    assert other.alive() and json.loads(stack.api.get("/readyz")[1])["status"] == "ready"
    # The drained backend's share went elsewhere: refused connections after it closed were retried.
    assert metric(stack.api, "wtc_api_backend_failures_total", backend=draining.label, reason="refused") >= 1


def _probe(port: int) -> str:
    """One fresh connection: "ok", "refused", or what else went wrong."""
    try:
        status, _ = post(port, "/v1/upscale?model=lanczos&scale=2", _png(PHOTOS[0]), "image/png", timeout=30)
    except ConnectionRefusedError:
        return "refused"
    except (OSError, http.client.HTTPException) as exc:
        return f"error {exc!r}"
    return "ok" if status == 200 else f"status {status}"


def test_api_restart_finishes_requests_in_flight_then_refuses_then_serves(stack, tmp_path):
    port = stack.api.port
    backend = stack.backends[0]
    in_flight: dict[str, tuple[int, bytes]] = {}
    slow = _png(PHOTOS[0].resize((96, 96)))
    sender = threading.Thread(target=lambda: in_flight.update(
        answer=post(port, f"/v1/upscale?model={SLOW_MODEL}&scale=4", slow, "image/png")))
    sender.start()
    end = time.monotonic() + 60
    while not any(b.ping().header.get("running") for b in stack.backends):
        assert time.monotonic() < end
        time.sleep(0.01)

    stack.api.signal(signal.SIGTERM)
    seen = set()
    while stack.api.alive():  # gunicorn stops listening at once and finishes the request in flight
        seen.add(_probe(port))
        time.sleep(0.05)
    sender.join(120)
    assert stack.api.wait(5) == 0
    status, body = in_flight["answer"]
    assert status == 200, body[:300]
    assert_enlarged(body, Image.open(io.BytesIO(slow)), 4)
    assert seen <= {"ok", "refused"}, seen  # served (arrived just before the stop) or refused: never reset

    assert _probe(port) == "refused"  # down: nothing listens
    restarted = ApiService(tmp_path, [b.label for b in stack.backends], port=port, api_workers=8)
    restarted.start()
    try:
        assert _probe(port) == "ok"
        assert json.loads(restarted.get("/readyz")[1])["status"] == "ready"
        assert backend.ping().header["running"] == 0
    finally:
        restarted.stop()


def test_kill_9_of_the_api_mid_image_frees_the_backend_slot(stack):
    slow = _png(PHOTOS[0].resize((128, 128)))
    threading.Thread(target=lambda: _swallow(lambda: post(stack.api.port, f"/v1/upscale?model={SLOW_MODEL}"
                                                          "&scale=4&tile_size=32", slow, "image/png")),
                     daemon=True).start()
    busy = None
    end = time.monotonic() + 60
    while busy is None:
        busy = next((b for b in stack.backends if b.ping().header.get("running")), None)
        assert time.monotonic() < end
        time.sleep(0.01)
    stack.api.kill()
    end = time.monotonic() + 30
    while (pong := busy.ping().header)["running"] or pong["waiting"]:
        assert time.monotonic() < end, f"the backend kept working for a client that is gone: {pong}"
        time.sleep(0.1)
    assert "cancelled" in busy.log() or "disconnected" in busy.log()


def _swallow(call) -> None:
    try:
        call()
    except OSError:
        pass
