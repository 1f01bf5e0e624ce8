"""``watercolor upscale``: send image files to a running Watercolor API and save the results.

Uses only the standard library (urllib), so the client works from a bare
install. By default the files go up as jobs and live progress bars show each
image and the whole batch (:mod:`watercolor.jobclient`); with ``--no-jobs``
each file is one ``POST /v1/upscale`` with the raw image as the body, a few
files in flight at once. Results are written next to their input (or into
``-o DIR``) as ``NAME_x4.png`` and the like. When the API cannot take jobs
(its job store is in use by another API, or full) the files go the direct way
instead, and the client says so.
"""

from __future__ import annotations

import json
import mimetypes
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

DEFAULT_URL = "http://localhost:5000"
EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "image/gif": "gif",
              "image/tiff": "tiff", "image/bmp": "bmp"}


@dataclass
class Result:
    source: Path
    output: Path | None = None
    width: int | None = None
    height: int | None = None
    seconds: float = 0.0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class Request:
    url: str
    scale: str | None = None
    model: str | None = None
    format: str | None = None
    quality: str | None = None
    api_key: str | None = None
    timeout: float = 3600.0
    tile_size: str | None = None
    options: tuple[tuple[str, str], ...] = ()  # model options, e.g. (("denoise", "1"),)

    def endpoint(self, path: str = "/v1/upscale") -> str:
        query = {k: v for k, v in (("scale", self.scale), ("model", self.model),
                                   ("format", self.format), ("quality", self.quality),
                                   ("tile_size", self.tile_size)) if v}
        query.update(self.options)
        base = self.url.rstrip("/") + path
        return f"{base}?{urllib.parse.urlencode(query)}" if query else base


class ProgressBar:
    """Files done out of the total, redrawn in place on a terminal; silent otherwise."""

    WIDTH = 30

    def __init__(self, total: int, stream: TextIO) -> None:
        self.total = total
        self.done = 0
        self.failed = 0
        self.stream = stream
        self.live = stream.isatty()
        self._lock = threading.Lock()

    def start(self) -> None:
        self._draw()

    def advance(self, ok: bool) -> None:
        with self._lock:
            self.done += 1
            self.failed += 0 if ok else 1
            self._draw()

    def _draw(self) -> None:
        if not self.live:
            return
        filled = self.WIDTH * self.done // max(1, self.total)
        failed = f", {self.failed} failed" if self.failed else ""
        self.stream.write(f"\r[{'#' * filled}{'.' * (self.WIDTH - filled)}] "
                          f"{self.done}/{self.total} files{failed}")
        self.stream.flush()

    def finish(self) -> None:
        if self.live:
            self.stream.write("\n")
            self.stream.flush()


def output_path(source: Path, out_dir: Path | None, scale: str, mime: str) -> Path:
    ext = EXTENSIONS.get(mime.split(";")[0].strip().lower(), "png")
    folder = out_dir if out_dir is not None else source.parent
    return folder / f"{source.stem}_x{scale}.{ext}"


def upscale_file(source: Path, request: Request, out_dir: Path | None) -> Result:
    started = time.monotonic()
    result = Result(source)
    try:
        data = source.read_bytes()
    except OSError as exc:
        result.error = f"cannot read the file: {exc.strerror or exc}"
        return result
    content_type = mimetypes.guess_type(source.name)[0] or "application/octet-stream"
    if not content_type.startswith("image/"):
        content_type = "application/octet-stream"
    headers = {"Content-Type": content_type, "Accept": "image/*, application/json"}
    if request.api_key:
        headers["Authorization"] = f"Bearer {request.api_key}"
    http_request = urllib.request.Request(request.endpoint(), data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(http_request, timeout=request.timeout) as response:
            body = response.read()
            mime = response.headers.get("Content-Type", "image/png")
            scale = response.headers.get("X-Watercolor-Scale") or request.scale or "up"
            width, height = response.headers.get("X-Watercolor-Width"), response.headers.get(
                "X-Watercolor-Height")
    except urllib.error.HTTPError as exc:
        result.error = _describe_http_error(exc)
        return result
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        result.error = f"cannot reach the API at {request.url}: {reason}"
        return result
    finally:
        result.seconds = time.monotonic() - started
    result.output = output_path(source, out_dir, scale, mime)
    try:
        result.output.write_bytes(body)
    except OSError as exc:
        result.error = f"cannot write {result.output}: {exc.strerror or exc}"
        return result
    result.width = int(width) if width and width.isdigit() else None
    result.height = int(height) if height and height.isdigit() else None
    return result


def _describe_http_error(exc: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(exc.read() or b"{}")
        error = body["error"]
        return f"{error['code']}: {error['message']} (HTTP {exc.code})"
    except (ValueError, KeyError, TypeError, OSError):
        return f"HTTP {exc.code} {exc.reason}"


def run(files: Sequence[str], request: Request, *, out_dir: str | None = None, jobs: int = 3,
        use_jobs: bool = True, poll: float = 0.5,
        stdout: TextIO = sys.stdout, stderr: TextIO = sys.stderr) -> int:
    """Upscale every file; print one line per file and a summary.

    Returns 0 if all succeeded, 1 if any failed, 130 when interrupted (jobs
    still running are cancelled first).
    """
    folder = Path(out_dir) if out_dir else None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    sources = [Path(f) for f in files]
    started = time.monotonic()
    if use_jobs:
        from watercolor.jobclient import run_jobs

        try:
            outcomes = run_jobs(sources, request, folder, poll=poll, stderr=stderr, parallel=jobs)
        except KeyboardInterrupt:
            print("interrupted: the unfinished work was cancelled", file=stderr)
            return 130
        return report(outcomes, time.monotonic() - started, stdout)
    return report(_run_direct(sources, request, folder, jobs, stderr), time.monotonic() - started, stdout)


def _run_direct(sources: list[Path], request: Request, folder: Path | None, jobs: int,
                stderr: TextIO) -> list[Result]:
    """One synchronous ``POST /v1/upscale`` per file, ``jobs`` at a time."""
    bar = ProgressBar(len(sources), stderr)
    results: dict[int, Result] = {}
    bar.start()
    with ThreadPoolExecutor(max_workers=max(1, min(jobs, len(sources)))) as pool:
        futures = {pool.submit(upscale_file, src, request, folder): i for i, src in enumerate(sources)}
        for future in as_completed(futures):
            result = future.result()
            results[futures[future]] = result
            bar.advance(result.ok)
    bar.finish()
    return [results[i] for i in range(len(sources))]


def report(results: list[Result], elapsed: float, stdout: TextIO) -> int:
    """One line per file and a summary; 0 if every file succeeded, else 1."""
    for r in results:
        if r.ok:
            size = f"{r.width}x{r.height}, " if r.width and r.height else ""
            print(f"ok      {r.source} -> {r.output} ({size}{r.seconds:.1f} s)", file=stdout)
        else:
            print(f"FAILED  {r.source}: {r.error}", file=stdout)
    failed = sum(1 for r in results if not r.ok)
    print(f"{len(results) - failed} of {len(results)} file(s) upscaled in {elapsed:.1f} s"
          + (f"; {failed} failed" if failed else ""), file=stdout)
    return 1 if failed else 0
