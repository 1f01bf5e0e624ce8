"""``/v1/jobs``: upscaling as a job that runs on after the request, to be watched and fetched.

* ``POST /v1/jobs`` takes what ``POST /v1/upscale`` takes (a raw image body, or
  multipart ``image`` fields; parameters in the query string or form fields)
  and answers 202 with the job and its URL in ``Location``. Request errors
  (parameters, media type, sizes) answer at once, as do images that every one
  failed the API's own checks; otherwise an image's failure is that image's
  error in the job.
* ``GET /v1/jobs/<id>``: state (queued, running, done, failed, cancelled),
  progress overall and per image (tiles done of total), an ETA, per-image
  errors and result URLs. A job is ``done`` when every image has ended and
  at least one succeeded, ``failed`` when none did.
* ``GET /v1/jobs/<id>/results/<n>``: image n's result; 409 while it is not
  ready or when it failed (its error is in the body).
* ``GET /v1/jobs/<id>/results.zip``: every result of a finished job, named
  like ``/v1/upscale``'s zip, a failure as ``NAME.error.json``; streamed.
* ``POST /v1/jobs/<id>/cancel``: stops an unfinished job (the backends stop
  between tiles, queued images never start) and keeps it: 200 with the job,
  now ``cancelled``, its finished images' results still there until it
  expires. A finished job is answered as it is.
* ``DELETE /v1/jobs/<id>``: stops the job the same way if it is unfinished,
  then deletes it and its files (204); the job is gone (404) from then on.
"""

from __future__ import annotations

import io
import json
import os
import time
import zipfile
from collections.abc import Iterator
from typing import BinaryIO

from flask import Blueprint, Response, jsonify, request, send_file, url_for

from watercolor.api.common import images as imaging
from watercolor.api.common.context import context
from watercolor.api.common.errors import error_response, retry_after
from watercolor.api.common.inputs import (
    form_params,
    is_image_body,
    media_type,
    params_from,
    query_params,
    uploaded_images,
)
from watercolor.api.jobs.store import DONE, Image, Job
from watercolor.errors import (
    BadRequest,
    Conflict,
    NotFound,
    TooManyJobs,
    UnsupportedMediaType,
    WatercolorError,
)
from watercolor.params import Params

bp = Blueprint("jobs", __name__, url_prefix="/v1")

ZIP_CHUNK = 1 << 20


@bp.post("/jobs")
def create() -> Response:
    uploads, params = _uploads_and_params()
    ctx = context()
    checked = imaging.checked([data for _, data in uploads], params, ctx.settings)
    if all(isinstance(item, WatercolorError) for item in checked):
        first = checked[0]
        assert isinstance(first, WatercolorError)
        errors = [{"index": i, **item.to_dict()} for i, item in enumerate(checked)
                  if isinstance(item, WatercolorError)]
        return error_response(first, errors=errors) if len(checked) > 1 else error_response(first)
    items = [(name, item, _pixels(item)) for (name, _), item in zip(uploads, checked, strict=True)]
    try:
        job = ctx.jobs.submit(items, params)
    except TooManyJobs as exc:
        response = error_response(exc)
        response.headers["Retry-After"] = str(retry_after(exc))
        return response
    response = _job_response(job)
    response.status_code = 202
    response.headers["Location"] = _job_url(job)
    return response


@bp.get("/jobs/<job_id>")
def show(job_id: str) -> Response:
    return _job_response(context().jobs.get(job_id))


@bp.post("/jobs/<job_id>/cancel")
def cancel(job_id: str) -> Response:
    jobs = context().jobs
    job = jobs.get(job_id)
    jobs.cancel(job)
    return _job_response(job)


@bp.delete("/jobs/<job_id>")
def delete(job_id: str) -> Response:
    jobs = context().jobs
    job = jobs.get(job_id)
    jobs.cancel(job)
    jobs.delete(job)
    return Response(status=204)


@bp.get("/jobs/<job_id>/results/<int:index>")
def result(job_id: str, index: int) -> Response:
    jobs = context().jobs
    job = jobs.get(job_id)
    if index >= len(job.images):
        raise NotFound(f"the job has {len(job.images)} image(s), numbered from 0", code="no_such_image")
    image = job.images[index]
    if image.state != DONE:
        return _not_ready(image)
    try:  # send_file opens the file before it returns: an expiry or DELETE after that cannot cut it
        response = send_file(jobs.store.result_path(job, image), mimetype=image.mime or "image/png",
                             conditional=True, download_name=_result_name(job, image), max_age=0)
    except FileNotFoundError:
        raise NotFound("the result is no longer stored", code="result_gone") from None
    for header, value in (("X-Watercolor-Width", image.width), ("X-Watercolor-Height", image.height)):
        if value is not None:
            response.headers[header] = str(value)
    return response


@bp.get("/jobs/<job_id>/results.zip")
def results_zip(job_id: str) -> Response:
    jobs = context().jobs
    job = jobs.get(job_id)
    if not job.is_finished:
        raise Conflict("the job has not finished; its zip is ready when it has", code="not_ready")
    if not any(image.state == DONE for image in job.images):
        raise Conflict("no image of this job succeeded; see each image's state and error", code="no_results")
    # Every result is opened before the answer starts, so an expiry or a DELETE while the zip
    # streams cannot cut it short: open files stay readable after they are removed.
    entries: list[tuple[str, BinaryIO | bytes]] = []
    used: set[str] = set()
    try:
        for image in job.images:
            if image.state == DONE:
                try:
                    source = open(jobs.store.result_path(job, image), "rb")  # noqa: SIM115
                except FileNotFoundError:
                    raise NotFound("the job's results are no longer stored", code="result_gone") from None
                entries.append((imaging.unique_name(_result_name(job, image), used), source))
            else:
                error = {"error": image.error or {"code": image.state, "message": f"image {image.state}"}}
                name = imaging.unique_name(f"{imaging.stem(image.name, image.index)}{imaging.ERROR_SUFFIX}",
                                           used)
                entries.append((name, (json.dumps(error, indent=2) + "\n").encode()))
    except BaseException:
        _close_all(entries)
        raise
    failed = sum(1 for image in job.images if image.state != DONE)
    response = Response(_zip_stream(entries), mimetype="application/zip")
    response.call_on_close(lambda: _close_all(entries))
    response.headers["Content-Disposition"] = f'attachment; filename="watercolor-{job.id[:8]}.zip"'
    response.headers["X-Watercolor-Images"] = str(len(job.images))
    response.headers["X-Watercolor-Failed"] = str(failed)
    return response


# --- helpers ------------------------------------------------------------------------------------


def _uploads_and_params() -> tuple[list[tuple[str | None, bytes]], Params]:
    """The images and parameters of an upload, read exactly as ``POST /v1/upscale`` reads them."""
    mimetype = media_type()
    if is_image_body(mimetype):
        return [(None, request.get_data(cache=False))], params_from(query_params())
    if mimetype == "multipart/form-data":
        query, form = query_params(), form_params()
        both = sorted(set(query) & set(form))
        if both:
            raise BadRequest(f"parameter(s) {', '.join(both)} given in both the query and the form")
        uploads = uploaded_images()
        return uploads, params_from({**query, **form})
    shown = mimetype or "no Content-Type"
    raise UnsupportedMediaType(
        f"send an image (Content-Type image/* or application/octet-stream) or "
        f"multipart/form-data with 'image' file fields, not {shown}")


def _pixels(item: bytes | WatercolorError) -> int | None:
    if isinstance(item, WatercolorError):
        return None
    size = imaging.peek_size(item)
    return None if size is None else size[0] * size[1]


def _job_url(job: Job) -> str:
    return url_for("jobs.show", job_id=job.id)


def _job_response(job: Job) -> Response:
    jobs = context().jobs
    with jobs.store.lock:
        body = job.view(_job_url(job), jobs.store.clock())
    response = jsonify(body)
    response.headers["Cache-Control"] = "no-store"
    return response


def _not_ready(image: Image) -> Response:
    if image.state in ("queued", "running"):
        error = Conflict(f"image {image.index} is {image.state}; its result is not ready yet",
                         code="not_ready")
        return error_response(error)
    detail = image.error or {"code": image.state, "message": f"the image was {image.state}"}
    error = Conflict(f"image {image.index} has no result: {detail['code']}: {detail['message']}",
                     code="image_failed")
    return error_response(error, errors=[{"index": image.index, **detail}])


def _result_name(job: Job, image: Image) -> str:
    return imaging.result_name(image.name, image.index, job.params.scale, {"mime": image.mime})


class _Sink(io.RawIOBase):
    """An unseekable file that hands out what was written to it (zipfile then streams)."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[override]
        self._chunks.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        out = b"".join(self._chunks)
        self._chunks.clear()
        return out


def _zip_stream(entries: list[tuple[str, BinaryIO | bytes]]) -> Iterator[bytes]:
    """A stored (uncompressed: images are compressed already) zip, produced as it is sent."""
    sink = _Sink()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, source in entries:
            if isinstance(source, bytes):
                archive.writestr(name, source)
            else:
                info = zipfile.ZipInfo(name, date_time=time.localtime()[:6])
                info.file_size = os.fstat(source.fileno()).st_size
                with source, archive.open(info, "w") as dst:
                    while chunk := source.read(ZIP_CHUNK):
                        dst.write(chunk)
                        yield sink.take()
            yield sink.take()
    yield sink.take()


def _close_all(entries: list[tuple[str, BinaryIO | bytes]]) -> None:
    for _, source in entries:
        if not isinstance(source, bytes):
            source.close()
