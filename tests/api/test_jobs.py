"""Jobs with real backends: progress, results, cancelling, expiry, store bounds, restarts."""

from __future__ import annotations

import io
import json
import os
import tempfile
import time
import zipfile

import numpy as np
import pytest
from apitools import FAST_MODEL, Backend, image_bytes, metric, psnr, settings_for
from PIL import Image

from watercolor import protocol, transport
from watercolor.api import create_app
from watercolor.api.jobs.store import reservation
from watercolor.params import Params

FINISHED = {"done", "failed", "cancelled"}
#: Small tiles make a small image report many progress steps.
TILED = f"model={FAST_MODEL}&scale=2&tile_size=32"


def _photo(name: str) -> Image.Image:
    import skimage.data

    return Image.fromarray(getattr(skimage.data, name)()).convert("RGB")


@pytest.fixture(scope="module")
def tiled_photos() -> list[Image.Image]:
    """Three real photos of 96-128 px: a few dozen 32 px tiles each."""
    return [_photo("astronaut").crop((150, 20, 278, 148)), _photo("coffee").crop((180, 80, 292, 192)),
            _photo("chelsea").crop((90, 30, 186, 126))]


@pytest.fixture(scope="module")
def long_photo() -> Image.Image:
    """The whole astronaut (512 px): 256 tiles of 32 px, seconds of work to cancel or interrupt."""
    return _photo("astronaut")


@pytest.fixture
def make_app(backends, tmp_path):
    apps = []

    def make(backend_list=None, folder="data", **overrides):
        app = create_app(settings_for(backend_list or backends, data_dir=str(tmp_path / folder),
                                      **overrides))
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.extensions["watercolor"].jobs.close()


def multipart(images: list[Image.Image], names: list[str] | None = None, **fields) -> dict:
    names = names or [f"photo{i}.png" for i in range(len(images))]
    files = [(io.BytesIO(image_bytes(img)), name) for img, name in zip(images, names, strict=True)]
    return {"image": files, **fields}


def wait_for(client, url: str, until=lambda job: job["state"] in FINISHED, timeout: float = 120,
             seen: list | None = None) -> dict:
    """Poll a job until ``until(job)``; every view is appended to ``seen``."""
    end = time.monotonic() + timeout
    while True:
        job = client.get(url).get_json()
        if seen is not None:
            seen.append(job)
        if until(job):
            return job
        assert time.monotonic() < end, f"job did not get there in {timeout} s: {job}"
        time.sleep(0.02)


def started(job: dict) -> bool:
    return any(image["tiles"]["done"] > 0 for image in job["images"]) or job["state"] in FINISHED


def decode(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def looks_like(result: Image.Image, source: Image.Image, scale: int) -> None:
    assert result.size == (source.width * scale, source.height * scale)
    back = result.convert("RGB").resize(source.size, Image.Resampling.BICUBIC)
    assert psnr(np.asarray(back), np.asarray(source)) > 22


# --- a batch, watched to the end ----------------------------------------------------------------


def test_a_batch_of_three_photos_reports_rising_progress_and_finishes(make_app, tiled_photos):
    app = make_app()
    client = app.test_client()
    response = client.post(f"/v1/jobs?{TILED}", content_type="multipart/form-data",
                           data=multipart(tiled_photos))
    assert response.status_code == 202, response.data[:300]
    job = response.get_json()
    assert response.headers["Location"] == f"/v1/jobs/{job['id']}"
    assert job["state"] in ("queued", "running") and job["counts"]["images"] == 3
    assert [image["name"] for image in job["images"]] == ["photo0.png", "photo1.png", "photo2.png"]

    seen: list[dict] = []
    job = wait_for(client, response.headers["Location"], seen=seen)
    assert job["state"] == "done", job
    assert job["counts"] == {"images": 3, "queued": 0, "running": 0, "done": 3, "failed": 0, "cancelled": 0}
    assert job["progress"] == 1 and job["finished"] and job["expires"]

    overall = [view["progress"] for view in seen]
    assert overall == sorted(overall), "overall progress went backwards"
    assert any(0 < p < 1 for p in overall)
    for index in range(3):
        steps = [(v["images"][index]["tiles"]["done"], v["images"][index]["tiles"]["total"])
                 for v in seen if v["images"][index]["state"] == "running"]
        done = [d for d, total in steps if total]
        assert done == sorted(done), f"image {index}: tiles went backwards"
        assert any(0 < d < total for d, total in steps), f"image {index}: no progress seen midway"
    assert any(view["eta_seconds"] is not None and view["eta_seconds"] > 0 for view in seen)

    for index, photo in enumerate(tiled_photos):
        result = job["images"][index]["result"]
        assert result["width"] == photo.width * 2
        got = client.get(result["url"])
        assert got.status_code == 200 and got.mimetype == "image/png"
        assert f'filename=photo{index}_x2.png' in got.headers["Content-Disposition"]
        assert len(got.data) == result["bytes"]
        looks_like(decode(got.data), photo, 2)

    archive = client.get(job["results_zip"])
    assert archive.status_code == 200 and archive.mimetype == "application/zip"
    with zipfile.ZipFile(io.BytesIO(archive.data)) as zipped:
        assert zipped.testzip() is None
        assert zipped.namelist() == ["photo0_x2.png", "photo1_x2.png", "photo2_x2.png"]
        for index, photo in enumerate(tiled_photos):
            looks_like(decode(zipped.read(f"photo{index}_x2.png")), photo, 2)
    assert metric(app, "wtc_api_jobs", state="done") == 1


def test_a_raw_body_job_and_parameters_from_the_form(make_app, photos):
    client = make_app().test_client()
    response = client.post("/v1/jobs?model=lanczos&scale=1.5&format=jpeg", data=image_bytes(photos[1]),
                           content_type="image/png")
    assert response.status_code == 202
    job = wait_for(client, response.headers["Location"])
    assert job["params"]["format"] == "jpeg" and job["images"][0]["name"] is None
    got = client.get(job["images"][0]["result"]["url"])
    assert got.mimetype == "image/jpeg" and "image-1_x1.5.jpg" in got.headers["Content-Disposition"]
    assert decode(got.data).size == (84, 84)

    response = client.post("/v1/jobs", content_type="multipart/form-data",
                           data=multipart(photos[:1], model="lanczos", scale="3"))
    job = wait_for(client, response.headers["Location"])
    assert job["params"]["scale"] == 3 and job["images"][0]["result"]["width"] == photos[0].width * 3


def test_a_failed_image_has_its_own_error_and_the_others_their_results(make_app, photos):
    client = make_app().test_client()
    broken = image_bytes(photos[2])[:300]
    data = {"image": [(io.BytesIO(image_bytes(photos[0])), "good.png"), (io.BytesIO(broken), "bad.png"),
                      (io.BytesIO(b""), "empty.png")], "model": "lanczos", "scale": "2"}
    response = client.post("/v1/jobs", content_type="multipart/form-data", data=data)
    assert response.status_code == 202, response.data[:300]
    job = wait_for(client, response.headers["Location"])
    assert job["state"] == "done" and job["counts"]["done"] == 1 and job["counts"]["failed"] == 2
    assert [i["error"]["code"] if i["error"] else None for i in job["images"]] == \
        [None, "corrupt_image", "empty_image"]

    failed = client.get(f"{response.headers['Location']}/results/1")
    assert failed.status_code == 409 and failed.get_json()["error"]["code"] == "image_failed"
    assert failed.get_json()["errors"][0]["code"] == "corrupt_image"
    assert client.get(f"{response.headers['Location']}/results/3").status_code == 404

    with zipfile.ZipFile(io.BytesIO(client.get(job["results_zip"]).data)) as zipped:
        assert zipped.namelist() == ["good_x2.png", "bad.error.json", "empty.error.json"]
        assert json.loads(zipped.read("bad.error.json"))["error"]["code"] == "corrupt_image"


def test_a_job_whose_every_image_fails_the_checks_is_refused_at_once(make_app, photos):
    client = make_app().test_client()
    response = client.post("/v1/jobs?model=lanczos", data=b"", content_type="image/png")
    assert response.status_code == 400 and response.get_json()["error"]["code"] == "empty_image"
    response = client.post("/v1/jobs?model=nope", data=image_bytes(photos[0]), content_type="image/png")
    assert response.status_code == 422 and response.get_json()["error"]["code"] == "unknown_model"
    response = client.post("/v1/jobs", data=b"{}", content_type="application/json")
    assert response.status_code == 415


@pytest.mark.parametrize(("path", "status", "code"), [
    ("/v1/jobs/0123456789abcdef0123456789abcdef", 404, "job_not_found"),
    ("/v1/jobs/not-a-job", 404, "job_not_found"),
    ("/v1/jobs/../../etc/passwd", 404, "not_found"),
    ("/v1/jobs/0123456789abcdef0123456789abcdef/results/0", 404, "job_not_found"),
    ("/v1/jobs/0123456789abcdef0123456789abcdef/results.zip", 404, "job_not_found"),
], ids=["unknown", "malformed", "traversal", "unknown-result", "unknown-zip"])
def test_unknown_jobs_are_404(make_app, path, status, code):
    response = make_app().test_client().get(path)
    assert response.status_code == status and response.get_json()["error"]["code"] == code


# --- cancelling ---------------------------------------------------------------------------------


@pytest.mark.parametrize("stop", ["cancel", "delete"])
def test_stopping_a_running_job_stops_the_backend_and_the_queued_images_never_start(
        make_app, long_photo, log_dir, tmp_path, stop):
    backend = Backend(log_dir, slots=1, queue=4, log_level="INFO")
    try:
        app = make_app([backend], api_parallel=1)
        client = app.test_client()
        response = client.post(f"/v1/jobs?{TILED}", content_type="multipart/form-data",
                               data=multipart([long_photo, long_photo, long_photo]))
        url = response.headers["Location"]
        job = wait_for(client, url, until=started)
        assert job["state"] == "running" and job["images"][0]["tiles"]["done"] < 256

        if stop == "cancel":
            cancelled = client.post(f"{url}/cancel")
            assert cancelled.status_code == 200
            job = cancelled.get_json()
            assert job["state"] == "cancelled" and job["counts"]["cancelled"] == 3
            assert job["images"][1]["error"]["code"] == "cancelled" and job["results_zip"] is None
        else:
            assert client.delete(url).status_code == 204
            assert client.get(url).status_code == 404
            assert not (tmp_path / "data" / "jobs" / job["id"]).exists()

        # The backend notices the closed connection between two tiles, frees its slot and logs
        # the request (just after freeing the slot).
        end = time.monotonic() + 60
        while _ping(backend)["running"] or not _requests_logged(backend):
            assert time.monotonic() < end, "the backend kept working on a stopped job"
            time.sleep(0.05)
        backend_requests = _requests_logged(backend)
        assert [r["outcome"] for r in backend_requests] == ["error"], backend_requests
        assert backend_requests[0]["code"] == "cancelled"  # stopped midway, by the pipeline

        # Images 1 and 2 were still queued in the API: they never reach a backend.
        time.sleep(0.5)
        assert len(_requests_logged(backend)) == 1
        if stop == "cancel":
            after = client.get(url).get_json()
            assert after["state"] == "cancelled" and after["images"][2]["state"] == "cancelled"
            assert client.get(f"{url}/results.zip").get_json()["error"]["code"] == "no_results"
            assert client.post(f"{url}/cancel").get_json() == after  # a finished job stays as it is
            assert client.delete(url).status_code == 204
            assert client.get(url).status_code == 404
    finally:
        backend.stop()


def _ping(backend: Backend) -> dict:
    reply = transport.exchange(backend.address, protocol.ping("t"), io_timeout=5, connect_timeout=5)
    return reply.header


def _requests_logged(backend: Backend) -> list[dict]:
    lines = [line.split(" request ", 1)[1] for line in backend.log_path.read_text().splitlines()
             if "watercolor.process request " in line]
    return [r for r in map(json.loads, lines) if r.get("op") == "upscale"]


def test_results_are_not_there_before_they_are_ready(make_app, long_photo, backends):
    app = make_app([backends[0]], api_parallel=1)
    client = app.test_client()
    response = client.post(f"/v1/jobs?{TILED}", data=image_bytes(long_photo), content_type="image/png")
    url = response.headers["Location"]
    wait_for(client, url, until=started)
    early = client.get(f"{url}/results/0")
    assert early.status_code == 409 and early.get_json()["error"]["code"] == "not_ready"
    assert client.get(f"{url}/results.zip").get_json()["error"]["code"] == "not_ready"
    assert client.post(f"{url}/cancel").get_json()["state"] == "cancelled"


# --- expiry and bounds --------------------------------------------------------------------------


def test_finished_jobs_expire_with_their_files(make_app, photos, tmp_path):
    client = make_app(job_ttl=1).test_client()
    url = client.post("/v1/jobs?model=lanczos&scale=2", data=image_bytes(photos[0]),
                      content_type="image/png").headers["Location"]
    job = wait_for(client, url)
    folder = tmp_path / "data" / "jobs" / job["id"]
    assert (folder / "job.json").is_file() and (folder / "result-0.png").is_file()
    assert not list(folder.glob("input-*")), "uploads are deleted once the job has finished"

    end = time.monotonic() + 30
    while client.get(url).status_code != 404:
        assert time.monotonic() < end, "the job never expired"
        time.sleep(0.2)
    assert not folder.exists()


def test_the_store_keeps_at_most_max_jobs(make_app, photos):
    client = make_app(max_jobs=2).test_client()
    body = image_bytes(photos[0])
    urls = [client.post("/v1/jobs?model=lanczos", data=body, content_type="image/png").headers["Location"]
            for _ in range(2)]
    refused = client.post("/v1/jobs?model=lanczos", data=body, content_type="image/png")
    assert refused.status_code == 429
    assert refused.get_json()["error"]["code"] == "too_many_jobs"
    assert int(refused.headers["Retry-After"]) >= 1

    wait_for(client, urls[0])
    assert client.delete(urls[0]).status_code == 204  # deleting a finished job makes room
    assert client.post("/v1/jobs?model=lanczos", data=body, content_type="image/png").status_code == 202


def test_the_store_keeps_at_most_max_store_bytes(make_app, photos, backends):
    body = image_bytes(photos[0])
    query = "/v1/jobs?model=lanczos&scale=4"
    params = Params(model="lanczos", scale=4.0)
    needed = len(body) + reservation(photos[0].width * photos[0].height * 16, len(body), params)
    result_bytes = len(make_app().test_client().post("/v1/upscale?model=lanczos&scale=4", data=body,
                                                     content_type="image/png").data)
    assert 0 < result_bytes < needed

    # Room for one job, reserved or finished, never for two.
    client = make_app(max_store_bytes=needed + result_bytes - 1, folder="one").test_client()
    first = client.post(query, data=body, content_type="image/png")
    assert first.status_code == 202
    full = client.post(query, data=body, content_type="image/png")
    assert full.status_code == 503 and full.get_json()["error"]["code"] == "store_full"
    assert int(full.headers["Retry-After"]) >= 1
    wait_for(client, first.headers["Location"])
    assert client.post(query, data=body, content_type="image/png").status_code == 503

    small = make_app(max_store_bytes=needed - 1, folder="small").test_client()
    too_big = small.post(query, data=body, content_type="image/png")
    assert too_big.status_code == 413 and too_big.get_json()["error"]["code"] == "job_too_large"


# --- restarts -----------------------------------------------------------------------------------


def test_a_finished_job_survives_a_restart(make_app, photos):
    first = make_app()
    client = first.test_client()
    url = client.post("/v1/jobs?model=lanczos&scale=2", data=image_bytes(photos[2]),
                      content_type="image/png").headers["Location"]
    job = wait_for(client, url)
    result = client.get(job["images"][0]["result"]["url"]).data
    first.extensions["watercolor"].jobs.close()  # the process ends

    again = make_app().test_client()
    assert again.get(url).get_json() == job
    assert again.get(job["images"][0]["result"]["url"]).data == result


def test_an_unfinished_job_is_resumed_after_a_restart(make_app, tiled_photos, backends, tmp_path):
    first = make_app([backends[0]], api_parallel=1)
    client = first.test_client()
    response = client.post(f"/v1/jobs?{TILED}", content_type="multipart/form-data",
                           data=multipart(tiled_photos[:2]))
    url = response.headers["Location"]
    wait_for(client, url, until=started)
    first.extensions["watercolor"].jobs.close()  # dies mid-job: job.json still says running
    on_disk = json.loads((tmp_path / "data" / "jobs" / url.rsplit("/", 1)[1] / "job.json").read_text())
    assert on_disk["state"] == "running"

    again = make_app([backends[0]]).test_client()  # resumes at start-up, before any request
    job = wait_for(again, url)
    assert job["state"] == "done" and job["counts"]["done"] == 2
    for index, photo in enumerate(tiled_photos[:2]):
        looks_like(decode(again.get(job["images"][index]["result"]["url"]).data), photo, 2)


def test_an_unfinished_job_whose_upload_is_lost_fails_with_a_reason(make_app, tiled_photos, backends,
                                                                    tmp_path):
    first = make_app([backends[0]], api_parallel=1)
    client = first.test_client()
    url = client.post(f"/v1/jobs?{TILED}", content_type="multipart/form-data",
                      data=multipart(tiled_photos[:2])).headers["Location"]
    wait_for(client, url, until=started)
    first.extensions["watercolor"].jobs.close()
    (tmp_path / "data" / "jobs" / url.rsplit("/", 1)[1] / "input-1").unlink()

    again = make_app([backends[0]]).test_client()
    job = wait_for(again, url)
    assert job["state"] == "done"  # image 0 was resumed and succeeded
    assert job["images"][0]["state"] == "done"
    assert job["images"][1]["state"] == "failed"
    assert job["images"][1]["error"]["code"] == "job_interrupted"
    assert "restarted" in job["images"][1]["error"]["message"]


def test_a_second_api_process_cannot_take_a_store_in_use(make_app, photos, tmp_path):
    client = make_app().test_client()
    assert client.post("/v1/jobs?model=lanczos", data=image_bytes(photos[0]),
                       content_type="image/png").status_code == 202
    other = make_app().test_client()  # same WTC_DATA_DIR, while the first still holds it
    refused = other.post("/v1/jobs?model=lanczos", data=image_bytes(photos[0]), content_type="image/png")
    assert refused.status_code == 503 and refused.get_json()["error"]["code"] == "store_unavailable"
    # The message names the fix, and no folder of the server's.
    message = refused.get_json()["error"]["message"]
    assert "in use by another API process" in message and "set WTC_DATA_DIR" in message
    assert "/" not in refused.get_data(as_text=True) and str(tmp_path) not in message
    assert refused.headers["Retry-After"]
    # Readiness is about the backends: the API still serves /v1/upscale, so it stays ready.
    assert other.get("/readyz").status_code == 200
    assert other.post("/v1/upscale?model=lanczos", data=image_bytes(photos[0]),
                      content_type="image/png").status_code == 200


def test_apis_on_two_ports_get_default_stores_of_their_own(backends, photos, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the default lies in the temporary folder
    apps = [create_app(settings_for(backends, api_port=port)) for port in (5000, 5001)]
    try:
        for app in apps:
            response = app.test_client().post("/v1/jobs?model=lanczos", data=image_bytes(photos[0]),
                                              content_type="image/png")
            assert response.status_code == 202, response.get_json()
        assert sorted(p.name for p in tmp_path.iterdir()) == \
            [f"watercolor-{os.getuid()}-5000", f"watercolor-{os.getuid()}-5001"]
    finally:
        for app in apps:
            app.extensions["watercolor"].jobs.close()
