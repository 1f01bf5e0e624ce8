"""Upscaling through the API with real backends: results, order, partial failures, fan-out, faults."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
import zipfile

import numpy as np
import pytest
from apitools import FAST_MODEL, Backend, image_bytes, metric, psnr, settings_for
from PIL import Image

from watercolor.api import create_app


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def decode(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def assert_enlarged(result: Image.Image, source: Image.Image, scale: int, floor: float = 22.0) -> None:
    """Right size, and shrunk back down it still looks like the source (a real upscale of *it*)."""
    assert result.size == (source.width * scale, source.height * scale)
    back = result.convert("RGB").resize(source.size, Image.Resampling.BICUBIC)
    assert psnr(np.asarray(back), np.asarray(source.convert("RGB"))) > floor


def truncated_png(img: Image.Image) -> bytes:
    data = image_bytes(img)
    return data[: len(data) // 2]


# --- single images -------------------------------------------------------------------------------


def test_raw_body_answers_the_enlarged_image(client, photos):
    data = image_bytes(photos[0], "JPEG")
    response = client.post(f"/v1/upscale?model={FAST_MODEL}&scale=4", data=data,
                           content_type="image/jpeg")
    assert response.status_code == 200, response.data[:300]
    assert response.mimetype == "image/png"
    result = decode(response.data)
    assert result.format == "PNG"
    assert_enlarged(result, photos[0], 4)
    assert response.headers["X-Watercolor-Width"] == str(photos[0].width * 4)
    assert response.headers["X-Watercolor-Model"] == FAST_MODEL


@pytest.mark.parametrize(("fmt", "mime", "pil"), [
    ("jpeg", "image/jpeg", "JPEG"), ("jpg", "image/jpeg", "JPEG"), ("webp", "image/webp", "WEBP"),
    ("same", "image/jpeg", "JPEG"),
], ids=["jpeg", "jpg-alias", "webp", "same-as-jpeg-input"])
def test_output_format_and_content_type(client, photos, fmt, mime, pil):
    response = client.post(f"/v1/upscale?model=lanczos&scale=1.5&format={fmt}&quality=80",
                           data=image_bytes(photos[1], "JPEG"), content_type="application/octet-stream")
    assert response.status_code == 200, response.data[:300]
    assert response.mimetype == mime
    result = decode(response.data)
    assert result.format == pil and result.size == (84, 84)


def test_output_sides_round_halves_up_alike_in_the_api_limits_and_the_result(api_settings, photos):
    source = photos[0].crop((0, 0, 35, 21))  # at 1.5x: 52.5 x 31.5 pixels
    data = image_bytes(source)
    exact = create_app(api_settings.replace(max_output_pixels=53 * 32)).test_client()
    response = exact.post("/v1/upscale?model=lanczos&scale=1.5", data=data, content_type="image/png")
    assert response.status_code == 200, response.data[:300]
    assert decode(response.data).size == (53, 32)
    assert (response.headers["X-Watercolor-Width"], response.headers["X-Watercolor-Height"]) == ("53", "32")
    short = create_app(api_settings.replace(max_output_pixels=53 * 32 - 1)).test_client()
    refused = short.post("/v1/upscale?model=lanczos&scale=1.5", data=data, content_type="image/png")
    assert refused.status_code == 422 and refused.get_json()["error"]["code"] == "output_too_large"
    assert "53x32" in refused.get_json()["error"]["message"]


def test_multipart_single_image_answers_the_image(client, photos):
    response = client.post("/v1/upscale", content_type="multipart/form-data", data={
        "image": (io.BytesIO(image_bytes(photos[2])), "cat.png"), "model": "lanczos", "scale": "2"})
    assert response.status_code == 200, response.data[:300]
    assert 'filename="cat_x2.png"' in response.headers["Content-Disposition"]
    assert_enlarged(decode(response.data), photos[2], 2)


def test_a_corrupt_single_image_gets_its_own_error_status(client, photos):
    response = client.post("/v1/upscale?model=lanczos&scale=2", data=truncated_png(photos[0]),
                           content_type="image/png")
    assert response.status_code == 422
    assert response.get_json()["error"]["code"] == "corrupt_image"


# --- batches ---------------------------------------------------------------------------------------


def test_legacy_batch_returns_same_id_and_images_in_order(client, photos, app):
    body = {"id": "batch-42", "images": [b64(image_bytes(p)) for p in photos], "model": FAST_MODEL,
            "scale": 2}
    response = client.post("/", json=body)
    assert response.status_code == 200, response.data[:300]
    answer = response.get_json()
    assert set(answer) == {"id", "images"}  # exactly the original shape
    assert answer["id"] == "batch-42" and len(answer["images"]) == 3
    for encoded, source in zip(answer["images"], photos, strict=True):
        assert_enlarged(decode(base64.b64decode(encoded)), source, 2)
    assert metric(app, "wtc_api_images_total", model=FAST_MODEL, outcome="ok") == 3


def test_legacy_batch_takes_data_urls_and_options(client, photos):
    body = {"id": 7, "images": ["data:image/png;base64," + b64(image_bytes(photos[0]))],
            "model": "waifu2x-photo", "options": {"denoise": 1}}
    response = client.post("/", json=body)
    assert response.status_code == 200, response.data[:300]
    assert response.get_json()["id"] == 7
    assert_enlarged(decode(base64.b64decode(response.get_json()["images"][0])), photos[0], 2)


def test_one_corrupt_image_costs_the_others_nothing(client, photos, app):
    images = [b64(image_bytes(photos[0])), b64(truncated_png(photos[1])), "***not base64***",
              b64(image_bytes(photos[2]))]
    response = client.post("/", json={"id": "mixed", "images": images, "model": "lanczos", "scale": 2})
    assert response.status_code == 200
    answer = response.get_json()
    assert answer["id"] == "mixed"
    assert answer["images"][1] is None and answer["images"][2] is None
    assert_enlarged(decode(base64.b64decode(answer["images"][0])), photos[0], 2)
    assert_enlarged(decode(base64.b64decode(answer["images"][3])), photos[2], 2)
    assert [(e["index"], e["code"]) for e in answer["errors"]] == [(1, "corrupt_image"),
                                                                  (2, "invalid_base64")]
    assert all(e["message"] for e in answer["errors"])
    assert metric(app, "wtc_api_images_total", model="lanczos", outcome="corrupt_image") == 1


def test_a_batch_where_every_image_failed_has_the_first_error_status(client, photos):
    images = [b64(truncated_png(photos[0])), b64(b"")]
    response = client.post("/", json={"id": "bad", "images": images, "model": "lanczos"})
    assert response.status_code == 422
    body = response.get_json()
    assert body["error"]["code"] == "corrupt_image" and body["id"] == "bad"
    assert body["images"] == [None, None]
    assert [e["code"] for e in body["errors"]] == ["corrupt_image", "empty_image"]


def test_multipart_batch_answers_a_zip_in_input_order(client, photos):
    files = [(io.BytesIO(image_bytes(p)), name) for p, name in zip(photos, ["a.png", "b.png", "a.png"],
                                                                    strict=True)]
    response = client.post("/v1/upscale?model=lanczos&scale=2", content_type="multipart/form-data",
                           data={"image": files})
    assert response.status_code == 200, response.data[:300]
    assert response.mimetype == "application/zip"
    assert response.headers["X-Watercolor-Failed"] == "0"
    with zipfile.ZipFile(io.BytesIO(response.data)) as archive:
        assert archive.namelist() == ["a_x2.png", "b_x2.png", "a_x2-2.png"]
        for name, source in zip(archive.namelist(), photos, strict=True):
            assert_enlarged(decode(archive.read(name)), source, 2)


def test_multipart_batch_with_a_failure_is_207_with_an_error_entry(client, photos):
    files = [(io.BytesIO(image_bytes(photos[0])), "good.png"),
             (io.BytesIO(truncated_png(photos[1])), "broken.png")]
    response = client.post("/v1/upscale", content_type="multipart/form-data",
                           data={"image": files, "model": "lanczos", "scale": "3"})
    assert response.status_code == 207
    assert response.headers["X-Watercolor-Failed"] == "1"
    with zipfile.ZipFile(io.BytesIO(response.data)) as archive:
        assert archive.namelist() == ["good_x3.png", "broken.error.json"]
        assert json.loads(archive.read("broken.error.json"))["error"]["code"] == "corrupt_image"
        assert_enlarged(decode(archive.read("good_x3.png")), photos[0], 3)


# --- fan-out over backends ------------------------------------------------------------------------


def test_a_batch_of_six_is_served_by_both_backends(client, app, backends, photos):
    images = [b64(image_bytes(photos[i % 3])) for i in range(6)]
    response = client.post("/", json={"id": "six", "images": images, "model": FAST_MODEL, "scale": 2})
    assert response.status_code == 200
    assert all(response.get_json()["images"])
    served = [metric(app, "wtc_api_backend_images_total", backend=b.label, outcome="ok") for b in backends]
    assert sum(served) == 6
    assert all(n >= 1 for n in served), served  # round robin: both took a share
    text = client.get("/metrics").get_data(as_text=True)
    for b in backends:
        assert f'wtc_api_backend_images_total{{backend="{b.label}",outcome="ok"}}' in text


def test_busy_backend_answers_are_retried_until_every_image_is_done(log_dir, photos):
    tight = Backend(log_dir, slots=1, queue=0)
    try:
        app = create_app(settings_for([tight], api_parallel=4))
        images = [b64(image_bytes(p)) for p in photos]
        response = app.test_client().post("/", json={"id": "busy", "images": images,
                                                     "model": FAST_MODEL, "scale": 2})
        assert response.status_code == 200, response.data[:300]
        assert all(response.get_json()["images"])
        assert metric(app, "wtc_api_backend_busy_total", backend=tight.label) >= 1
        assert metric(app, "wtc_api_backend_retries_total", reason="busy") >= 1
    finally:
        tight.stop()


def test_a_backend_killed_mid_batch_loses_no_image(log_dir, photos):
    victim, survivor = Backend(log_dir, slots=1, queue=8), Backend(log_dir, slots=1, queue=8)
    try:
        app = create_app(settings_for([victim, survivor], api_parallel=8))
        sources = [photos[i % 3] for i in range(8)]
        body = {"id": "kill", "images": [b64(image_bytes(p)) for p in sources],
                "model": "realesrgan-x4plus-anime", "scale": 4}
        answer: dict = {}

        def send() -> None:
            response = app.test_client().post("/", json=body)
            answer.update(status=response.status_code, body=response.get_json())

        sender = threading.Thread(target=send)
        sender.start()
        # Kill the victim as soon as it has finished its first image: the rest of its share
        # is then running or queued there, and must be retried on the survivor.
        end = time.monotonic() + 120
        while metric(app, "wtc_api_backend_images_total", backend=victim.label, outcome="ok") < 1:
            assert time.monotonic() < end and sender.is_alive(), "the victim never finished an image"
            time.sleep(0.02)
        victim.kill()
        sender.join(300)
        assert answer["status"] == 200, answer
        images = answer["body"]["images"]
        assert len(images) == 8 and "errors" not in answer["body"]
        for encoded, source in zip(images, sources, strict=True):
            assert_enlarged(decode(base64.b64decode(encoded)), source, 4)
        lost = sum(metric(app, "wtc_api_backend_failures_total", backend=victim.label, reason=r)
                   for r in ("lost", "refused", "stalled", "broken"))
        assert lost >= 1  # the kill really hit work in flight
        assert metric(app, "wtc_api_backend_images_total", backend=survivor.label, outcome="ok") >= 5
    finally:
        victim.kill()
        survivor.stop()


def test_the_deadline_bounds_the_whole_request(log_dir, photos):
    slow = Backend(log_dir, slots=1, queue=4)
    try:
        app = create_app(settings_for([slow], api_deadline=1.0))
        big = photos[0].resize((160, 120))
        response = app.test_client().post("/v1/upscale?model=realesrgan-x4plus", data=image_bytes(big),
                                          content_type="image/png")
        assert response.status_code == 504
        assert response.get_json()["error"]["code"] == "deadline_exceeded"
    finally:
        slow.stop()


def test_readiness_reports_each_backend(client, backends):
    response = client.get("/readyz")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "ready"
    assert [b["address"] for b in body["backends"]] == [b.label for b in backends]
    assert all(b["ok"] for b in body["backends"])
