"""``watercolor upscale`` with jobs: upload, watch the bars move, save each result as it is ready.

The files go up as jobs (``POST /v1/jobs``, multipart), at most
:data:`BATCH_FILES` files or :data:`BATCH_BYTES` bytes a job; each job is then
polled (``GET /v1/jobs/ID``) and every image's result is downloaded as soon as
it is done, so a long batch leaves finished files behind as it goes. Ctrl-C
cancels the jobs still running (``POST /v1/jobs/ID/cancel``) before leaving. Standard library
only (urllib), like the rest of the client.

An API that cannot take a job for reasons of its own (its job store in use by
another API, full, or holding as many jobs as it may; an API without jobs) is
not the images' fault: that batch and the ones after it are sent the direct
way instead, one waiting ``POST /v1/upscale`` per file, a few at once, and
the client says so.
"""

from __future__ import annotations

import json
import mimetypes
import queue
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from watercolor.client import Request, Result, output_path, upscale_file
from watercolor.params import scale_text
from watercolor.progress import FINISHED, ProgressBoard

BATCH_FILES = 32
BATCH_BYTES = 64 * 1024 * 1024
#: Error codes of a job refused for the job machinery's sake, not the images': the direct path may serve.
JOBS_REFUSED = frozenset({"store_unavailable", "store_full", "too_many_jobs", "job_too_large",
                          "not_found", "method_not_allowed"})


class ApiError(Exception):
    """The API answered with an error (``status`` and ``code`` when it did), or could not be reached."""

    def __init__(self, message: str, per_image: dict[int, str] | None = None, *,
                 status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.per_image = per_image or {}
        self.status = status
        self.code = code

    @property
    def jobs_refused(self) -> bool:
        """Whether jobs cannot be had, though the same images might be served without one."""
        return self.code in JOBS_REFUSED or self.status == 503


@dataclass
class Watched:
    """One job being watched: its latest view and which of our files it holds."""

    url: str
    files: list[int]  # our file index for each of the job's images
    view: dict[str, Any]
    saved: set[int] = field(default_factory=set)

    @property
    def finished(self) -> bool:
        return self.view["state"] in FINISHED


class Direct:
    """Files sent the direct way (``POST /v1/upscale``), ``parallel`` at a time, on daemon threads
    (Ctrl-C need not wait for them)."""

    def __init__(self, request: Request, folder: Path | None, parallel: int) -> None:
        self.request, self.folder, self.parallel = request, folder, max(1, parallel)
        self._todo: queue.Queue[tuple[int, Path]] = queue.Queue()
        self._done: queue.Queue[tuple[int, Result]] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self.pending = 0

    def send(self, index: int, source: Path) -> None:
        self.pending += 1
        self._todo.put((index, source))
        if len(self._threads) < min(self.parallel, self.pending):
            thread = threading.Thread(target=self._work, name="wtc-direct", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _work(self) -> None:
        while True:
            index, source = self._todo.get()
            self._done.put((index, upscale_file(source, self.request, self.folder)))

    def finished(self) -> list[tuple[int, Result]]:
        """The files finished since the last call."""
        out = []
        while True:
            try:
                out.append(self._done.get_nowait())
            except queue.Empty:
                self.pending -= len(out)
                return out


def run_jobs(sources: list[Path], request: Request, folder: Path | None, *, poll: float,
             stderr: TextIO, parallel: int = 3) -> list[Result]:
    """Upscale ``sources`` through jobs; one :class:`Result` per source, in order.

    When the API refuses jobs as such (:attr:`ApiError.jobs_refused`) the files
    still to go are sent the direct way, ``parallel`` at a time. Raises
    KeyboardInterrupt after cancelling the unfinished jobs when interrupted.
    """
    results = [Result(source) for source in sources]
    board = ProgressBoard([source.name for source in sources], stderr)
    data: dict[int, bytes] = {}
    for index, source in enumerate(sources):
        try:
            data[index] = source.read_bytes()
        except OSError as exc:
            _fail(results, board, index, f"cannot read the file: {exc.strerror or exc}")
    started = time.monotonic()
    watched: list[Watched] = []
    direct: Direct | None = None
    try:
        for batch in _batches(sources, data):
            if direct is None:
                try:
                    url, view = _submit(request, [(sources[i].name, data[i]) for i in batch])
                except ApiError as exc:
                    if not exc.jobs_refused:
                        for position, index in enumerate(batch):
                            _fail(results, board, index, exc.per_image.get(position, exc.message))
                        continue
                    stderr.write(f"the API cannot take jobs now ({exc.message}); sending the files "
                                 "directly instead, one waiting request each (no progress until done)\n")
                    direct = Direct(request, folder, parallel)
                else:
                    watched.append(Watched(url, batch, view))
                    stderr.write(f"job {request.url.rstrip('/')}{url}: {len(batch)} image(s)\n")
                    continue
            for index in batch:
                direct.send(index, sources[index])
                board.update(index, "running", 0.0, note="sent directly")
        while True:
            for job in watched:
                _take_news(job, request, results, board, folder)
            if direct is not None:
                for index, result in direct.finished():
                    results[index] = result
                    note = f"-> {result.output}" if result.ok else (result.error or "").split(": ", 1)[0]
                    board.update(index, "done" if result.ok else "failed", 1.0, note=note)
            _overall(board, results, started)
            board.draw()
            if all(job.finished for job in watched) and (direct is None or not direct.pending):
                break
            time.sleep(poll)
            for job in watched:
                if not job.finished:
                    try:
                        job.view = _json(_call(request, "GET", job.url))
                    except ApiError as exc:
                        job.view = _lost(job.view, exc.message)
    except KeyboardInterrupt:
        for job in watched:
            if not job.finished:
                try:
                    _call(request, "POST", f"{job.url}/cancel")
                except ApiError:
                    pass
        board.finish()
        raise
    board.finish()
    for index, result in enumerate(results):
        if result.output is None and result.error is None:
            result.error = "no result"  # cannot happen: every finished image is saved or failed
            board.update(index, "failed", 1.0)
    return results


def _fail(results: list[Result], board: ProgressBoard, index: int, message: str) -> None:
    results[index].error = message
    board.update(index, "failed", 1.0, note=message.split(": ", 1)[0])


def _batches(sources: list[Path], data: dict[int, bytes]) -> list[list[int]]:
    batches: list[list[int]] = []
    size = 0
    for index in range(len(sources)):
        if index not in data:
            continue
        if not batches or len(batches[-1]) >= BATCH_FILES or size + len(data[index]) > BATCH_BYTES:
            batches.append([])
            size = 0
        batches[-1].append(index)
        size += len(data[index])
    return batches


def _take_news(job: Watched, request: Request, results: list[Result], board: ProgressBoard,
               folder: Path | None) -> None:
    """Show the job's latest view; save every result that became ready."""
    scale = scale_text(job.view["params"]["scale"])
    for image in job.view["images"]:
        index = job.files[image["index"]]
        if index in job.saved:
            continue
        tiles = (image["tiles"]["done"], image["tiles"]["total"])
        if image["state"] == "done":
            job.saved.add(index)
            _save(request, image, results[index], folder, scale)
            note = f"-> {results[index].output}" if results[index].ok else results[index].error or ""
            board.update(index, "done" if results[index].ok else "failed", 1.0, tiles, note)
        elif image["state"] in FINISHED:
            job.saved.add(index)
            error = image.get("error") or {"code": image["state"], "message": f"image {image['state']}"}
            results[index].error = f"{error['code']}: {error['message']}"
            board.update(index, image["state"], 1.0, tiles, error["code"])
        else:
            board.update(index, image["state"], image["progress"], tiles)


def _save(request: Request, image: dict[str, Any], result: Result, folder: Path | None,
          scale: str) -> None:
    info = image["result"]
    try:
        body = _call(request, "GET", info["url"])
    except ApiError as exc:
        result.error = f"cannot download the result: {exc.message}"
        return
    result.output = output_path(result.source, folder, scale, info.get("mime") or "image/png")
    try:
        result.output.write_bytes(body)
    except OSError as exc:
        result.error = f"cannot write {result.output}: {exc.strerror or exc}"
        result.output = None
        return
    result.width, result.height = info.get("width"), info.get("height")
    result.seconds = image.get("seconds") or 0.0


def _overall(board: ProgressBoard, results: list[Result], started: float) -> None:
    rows = board.rows
    fraction = sum(row.fraction for row in rows) / len(rows)
    elapsed = time.monotonic() - started
    eta = elapsed * (1 - fraction) / fraction if 0 < fraction < 1 else None
    board.set_overall(fraction, eta)


def _lost(view: dict[str, Any], message: str) -> dict[str, Any]:
    """A job the API no longer answers for: every unfinished image fails with why."""
    images = [image if image["state"] in FINISHED else
              {**image, "state": "failed", "error": {"code": "job_lost", "message": message}}
              for image in view["images"]]
    return {**view, "state": "failed", "images": images}


# --- HTTP -------------------------------------------------------------------------------------


def _submit(request: Request, files: list[tuple[str, bytes]]) -> tuple[str, dict[str, Any]]:
    body, content_type = _multipart(files)
    url = request.endpoint("/v1/jobs")
    view = _json(_call(request, "POST", url, body, {"Content-Type": content_type}))
    return f"/v1/jobs/{view['id']}", view


def _multipart(files: list[tuple[str, bytes]]) -> tuple[bytes, str]:
    boundary = f"watercolor-{uuid.uuid4().hex}"
    parts = []
    for name, data in files:
        content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        safe = name.replace("\\", "_").replace('"', "_").replace("\r", "_").replace("\n", "_")
        head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{safe}\"\r\n"
                f"Content-Type: {content_type}\r\n\r\n")
        parts += [head.encode("utf-8"), data, b"\r\n"]
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def _call(request: Request, method: str, url: str, body: bytes | None = None,
          headers: dict[str, str] | None = None) -> bytes:
    absolute = urllib.parse.urljoin(request.url.rstrip("/") + "/", url)
    all_headers = {"Accept": "application/json, image/*", **(headers or {})}
    if request.api_key:
        all_headers["Authorization"] = f"Bearer {request.api_key}"
    http_request = urllib.request.Request(absolute, data=body, headers=all_headers, method=method)
    try:
        with urllib.request.urlopen(http_request, timeout=request.timeout) as response:
            return response.read()
    except urllib.error.HTTPError as exc:
        raise _api_error(exc) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ApiError(f"cannot reach the API at {request.url}: {reason}") from None


def _api_error(exc: urllib.error.HTTPError) -> ApiError:
    try:
        body = json.loads(exc.read() or b"{}")
        error = body["error"]
        per_image = {int(e["index"]): f"{e['code']}: {e['message']}" for e in body.get("errors") or []}
        return ApiError(f"{error['code']}: {error['message']} (HTTP {exc.code})", per_image,
                        status=exc.code, code=str(error["code"]))
    except (ValueError, KeyError, TypeError, OSError):
        return ApiError(f"HTTP {exc.code} {exc.reason}", status=exc.code)


def _json(data: bytes) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except ValueError:
        raise ApiError("the API answered something that is not JSON") from None
    if not isinstance(value, dict):
        raise ApiError("the API answered something unexpected")
    return value
