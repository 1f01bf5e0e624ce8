"""Jobs on disk: one folder per job, its state in ``job.json`` beside its files.

Theory of operation
-------------------
Layout under ``WTC_DATA_DIR``::

    jobs.lock                     held (flock) by the one API process using the store
    jobs/<id>/job.json            the job's state, replaced atomically on every change
    jobs/<id>/input-<n>           upload n, kept until the job finishes (a restart resumes from it)
    jobs/<id>/result-<n>.<ext>    image n's result

Every file is written to a temporary name, flushed to disk and renamed over
its final name, so a crash leaves either the old or the new version, never
half of one; a folder without a readable ``job.json`` is a job whose creation
never completed (its 202 was never sent) and is removed when the store opens.

Progress (tiles done of total) lives in memory only: it changes many times a
second and means nothing after a restart, when an unfinished image starts over.

Bounds: at most ``WTC_MAX_JOBS`` jobs of any state are kept, and at most
``WTC_MAX_STORE_BYTES`` bytes: inputs, results, and for every image still to
come an estimate of its result (from its output size and format), reserved
when the job is admitted so that running work cannot overfill the disk.
Finished jobs expire ``WTC_JOB_TTL`` seconds after they finish. Nothing here
starts threads or talks to backends: that is :mod:`watercolor.api.jobs.runner`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from watercolor.config import Settings
from watercolor.errors import (
    NotFound,
    PayloadTooLarge,
    StoreFull,
    StoreUnavailable,
    TooManyJobs,
    WatercolorError,
)
from watercolor.params import Params

log = logging.getLogger("watercolor.api.jobs")

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
FINISHED = frozenset({DONE, FAILED, CANCELLED})
#: A job interrupted by this many API restarts is not resumed again (it may be what kills the API).
MAX_RESUMES = 3
#: Estimated result bytes per output pixel, by output format, for the space reserved at admission.
RESULT_BYTES_PER_PIXEL = {"jpeg": 1.0, "webp": 1.0}
DEFAULT_RESULT_BYTES_PER_PIXEL = 4.0
#: Least seconds between two sweeps for expired jobs.
SWEEP_INTERVAL = 1.0
#: What a user sets to give an API a store of its own (named in errors: never the folder itself).
FOLDER_SETTING = "WTC_DATA_DIR"

_JOB_ID = re.compile(r"^[0-9a-f]{32}$")


def default_data_dir(api_port: int) -> Path:
    """``watercolor-UID-PORT`` in the system's temporary folder: it survives API restarts, not reboots.

    The port is in the name because a store belongs to one API process: a second API on the same
    machine (another port) gets a folder of its own instead of finding this one locked.
    """
    return Path(tempfile.gettempdir()) / f"watercolor-{os.getuid()}-{api_port}"


def timestamp(seconds: float | None) -> str | None:
    """An epoch time as ISO 8601 UTC (``2024-05-01T12:00:00.000Z``)."""
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Image:
    """One input of a job and what became of it."""

    index: int
    name: str | None
    input_bytes: int
    pixels: int | None = None  # input width x height, when the header told
    state: str = QUEUED
    tiles_done: int = 0
    tiles_total: int = 0
    error: dict[str, str] | None = None
    result: str | None = None  # file name in the job's folder
    result_bytes: int = 0
    mime: str | None = None
    width: int | None = None
    height: int | None = None
    reserved: int = 0  # bytes held for the result until it arrives
    started: float | None = None
    finished: float | None = None

    @property
    def fraction(self) -> float:
        if self.state in FINISHED:
            return 1.0
        if self.state == RUNNING and self.tiles_total > 0:
            return min(1.0, self.tiles_done / self.tiles_total)
        return 0.0

    def end(self, state: str, now: float, error: WatercolorError | dict[str, str] | None = None) -> None:
        self.state, self.finished, self.reserved = state, now, 0
        if error is not None:
            self.error = error.to_dict() if isinstance(error, WatercolorError) else dict(error)


@dataclass
class Job:
    id: str
    params: Params
    images: list[Image]
    created: float
    state: str = QUEUED
    started: float | None = None
    finished: float | None = None
    expires: float | None = None
    error: dict[str, str] | None = None  # why the job as a whole ended badly (a restart)
    resumes: int = 0
    inputs_kept: bool = True
    folder: Path = field(default=Path(), compare=False)

    @property
    def is_finished(self) -> bool:
        return self.state in FINISHED

    def disk_bytes(self) -> int:
        """What the job holds or has reserved on disk."""
        held = sum(i.result_bytes + i.reserved for i in self.images)
        if self.inputs_kept:
            held += sum(i.input_bytes for i in self.images)
        return held

    def to_json(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "folder"}
        data["params"] = dataclasses.asdict(self.params)
        data["images"] = [dataclasses.asdict(i) for i in self.images]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any], folder: Path) -> Job:
        fields = {f.name for f in dataclasses.fields(cls)} - {"folder", "params", "images"}
        job = cls(params=Params(**data["params"]), images=[Image(**i) for i in data["images"]],
                  folder=folder, **{k: v for k, v in data.items() if k in fields})
        if job.id != folder.name or job.state not in FINISHED | {QUEUED, RUNNING}:
            raise ValueError("not a job")
        return job

    def progress(self) -> float:
        """The finished share of the job's work, each image weighted by its pixels."""
        known = [i.pixels for i in self.images if i.pixels]
        fallback = sum(known) / len(known) if known else 1.0
        weights = [float(i.pixels or fallback) for i in self.images]
        total = sum(weights)
        return sum(w * i.fraction for w, i in zip(weights, self.images, strict=True)) / total

    def eta(self, now: float) -> float | None:
        """Seconds left at the pace so far; None until there is a pace to go by."""
        if self.state != RUNNING or self.started is None:
            return None
        done = self.progress()
        if not 0 < done < 1:
            return None
        return max(0.0, (now - self.started) * (1 - done) / done)

    def view(self, base_url: str, now: float) -> dict[str, Any]:
        """The job as the API shows it; ``base_url`` is the job's own URL."""
        counts = {state: 0 for state in (QUEUED, RUNNING, DONE, FAILED, CANCELLED)}
        images = []
        for image in self.images:
            counts[image.state] += 1
            result = None
            if image.state == DONE:
                result = {"url": f"{base_url}/results/{image.index}", "mime": image.mime,
                          "width": image.width, "height": image.height, "bytes": image.result_bytes}
            images.append({
                "index": image.index, "name": image.name, "state": image.state,
                "progress": round(image.fraction, 4),
                "tiles": {"done": image.tiles_done, "total": image.tiles_total},
                "error": image.error, "result": result,
                "seconds": None if image.started is None or image.finished is None or image.state != DONE
                else round(image.finished - image.started, 2),
            })
        eta = self.eta(now)
        return {
            "id": self.id,
            "state": self.state,
            "created": timestamp(self.created),
            "started": timestamp(self.started),
            "finished": timestamp(self.finished),
            "expires": timestamp(self.expires),
            "params": dataclasses.asdict(self.params),
            "progress": round(self.progress(), 4),
            "eta_seconds": None if eta is None else round(eta, 1),
            "counts": {"images": len(self.images), **counts},
            "images": images,
            "results_zip": f"{base_url}/results.zip" if self.is_finished and counts[DONE] else None,
            "error": self.error,
        }


def reservation(pixels_out: int | None, input_bytes: int, params: Params) -> int:
    """Bytes to hold for a result not yet made."""
    per_pixel = RESULT_BYTES_PER_PIXEL.get(params.format, DEFAULT_RESULT_BYTES_PER_PIXEL)
    if pixels_out is None:
        return int(input_bytes * params.scale**2)
    return int(pixels_out * per_pixel) + 4096


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves the old file or the new one, whole."""
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(temporary, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class JobStore:
    """The jobs of one API process, in memory and on disk. Every method is thread-safe."""

    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.time) -> None:
        self.explicit_dir = bool(settings.data_dir)
        self.data_dir = Path(settings.data_dir) if settings.data_dir else default_data_dir(settings.api_port)
        self.root = self.data_dir / "jobs"
        self.ttl = settings.job_ttl
        self.max_jobs = settings.max_jobs
        self.max_bytes = settings.max_store_bytes
        self.clock = clock
        self.lock = threading.RLock()
        self.jobs: dict[str, Job] = {}
        self._lock_file: int | None = None
        self._swept = 0.0

    # --- opening ---------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._lock_file is not None

    def has_unfinished_work(self) -> bool:
        """Whether a job on disk awaits resuming (a read-only look, no lock needed)."""
        if not self.root.is_dir():
            return False
        for path in self.root.glob("*/job.json"):
            try:
                if json.loads(path.read_bytes()).get("state") in (QUEUED, RUNNING):
                    return True
            except (OSError, ValueError):
                continue
        return False

    def open(self) -> list[Job]:
        """Take the store for this process and load it; returns the unfinished jobs, recovered
        (none when the store was open already).

        Raises :class:`StoreUnavailable` when the folder cannot be used or another
        API process holds it.
        """
        with self.lock:
            if self.is_open:
                return []
            try:
                self._prepare_folder()
                fd = os.open(self.data_dir / "jobs.lock", os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as exc:
                log.error("job store %s cannot be used: %s", self.data_dir, exc)
                raise StoreUnavailable("the job store's folder cannot be used (see the API's log); set "
                                       f"{FOLDER_SETTING} to a folder this API may write") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                log.error("job store %s is in use by another API process; give each API its own %s",
                          self.data_dir, FOLDER_SETTING)
                raise StoreUnavailable("the job store is in use by another API process; set "
                                       f"{FOLDER_SETTING} to a folder of this API's own") from None
            self._lock_file = fd
            unfinished = self._load()
            log.info("job store %s: %d job(s), %d to resume, %d bytes", self.data_dir, len(self.jobs),
                     sum(1 for j in unfinished if not j.is_finished), self.used_bytes())
            return [j for j in unfinished if not j.is_finished]

    def close(self) -> None:
        """Let go of the store (another process may take it); in-memory state is dropped."""
        with self.lock:
            if self._lock_file is not None:
                os.close(self._lock_file)  # releases the flock
                self._lock_file = None
            self.jobs.clear()

    def _prepare_folder(self) -> None:
        if self.explicit_dir:
            self.root.mkdir(parents=True, exist_ok=True)
            return
        # The default folder is in a shared temporary directory: it must be ours, not a planted one.
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        info = self.data_dir.lstat()
        if not self.data_dir.is_dir() or self.data_dir.is_symlink() or info.st_uid != os.getuid():
            raise OSError(f"{self.data_dir} is not a folder owned by this user; set WTC_DATA_DIR")
        self.root.mkdir(exist_ok=True)

    def _load(self) -> list[Job]:
        unfinished = []
        now = self.clock()
        for folder in sorted(self.root.iterdir()):
            if not folder.is_dir() or not _JOB_ID.match(folder.name):
                continue
            try:
                job = Job.from_json(json.loads((folder / "job.json").read_bytes()), folder)
            except (OSError, ValueError, TypeError, KeyError) as exc:
                log.warning("removing job folder %s: no readable job.json (%s)", folder.name, exc)
                shutil.rmtree(folder, ignore_errors=True)
                continue
            if job.is_finished and job.expires is not None and job.expires <= now:
                shutil.rmtree(folder, ignore_errors=True)
                continue
            self.jobs[job.id] = job
            if not job.is_finished:
                self._recover(job, now)
                unfinished.append(job)
        return unfinished

    def _recover(self, job: Job, now: float) -> None:
        """An unfinished job after a restart: resume what can be resumed, fail the rest with a reason."""
        job.resumes += 1
        for image in job.images:
            if image.state not in (QUEUED, RUNNING):
                continue
            image.tiles_done = image.tiles_total = 0
            image.started = None
            if job.resumes > MAX_RESUMES:
                image.end(FAILED, now, {"code": "job_interrupted", "message":
                                        f"the API restarted {job.resumes} times while this job ran; "
                                        "it is not resumed again"})
            elif not self._input_intact(job, image):
                image.end(FAILED, now, {"code": "job_interrupted", "message":
                                        "the API restarted and this image's upload was not kept"})
            else:
                image.state = QUEUED
        job.started = None  # the ETA goes by the pace since the restart
        if all(i.state in FINISHED for i in job.images):
            reason = "the API restarted while the job ran" + \
                (" too many times" if job.resumes > MAX_RESUMES else "; its uploads were not kept")
            job.error = {"code": "job_interrupted", "message": reason}
            self.finish(job, DONE if any(i.state == DONE for i in job.images) else FAILED)
        else:
            job.state = QUEUED if not any(i.state in FINISHED for i in job.images) else RUNNING
            self.save(job)
        log.info("job %s after a restart: %s", job.id, job.state)

    def _input_intact(self, job: Job, image: Image) -> bool:
        try:
            return (job.folder / f"input-{image.index}").stat().st_size == image.input_bytes
        except OSError:
            return False

    # --- jobs ------------------------------------------------------------------------------

    def create(self, uploads: list[tuple[str | None, bytes | WatercolorError, int | None]],
               params: Params) -> Job:
        """Admit a job of ``(filename, image or its error, input pixels)`` and write it to disk.

        Raises :class:`TooManyJobs` (429) or :class:`StoreFull` (503) when the
        store is at its bounds, and a 413 when the job alone could never fit.
        """
        now = self.clock()
        images = []
        for index, (name, data, pixels) in enumerate(uploads):
            if isinstance(data, WatercolorError):
                image = Image(index, name, 0)
                image.end(FAILED, now, data)
            else:
                out = None if pixels is None else round(pixels * params.scale**2)
                image = Image(index, name, len(data), pixels,
                              reserved=reservation(out, len(data), params))
            images.append(image)
        job_id = uuid.uuid4().hex
        job = Job(job_id, params, images, created=now, folder=self.root / job_id)
        needed = job.disk_bytes()
        with self.lock:
            self.sweep(force=True)
            if len(self.jobs) >= self.max_jobs:
                error = TooManyJobs(f"the store keeps at most {self.max_jobs} jobs; wait for some to "
                                    "expire or delete finished ones")
                error.retry_after = self._next_expiry(now)  # type: ignore[attr-defined]
                raise error
            if needed > self.max_bytes:
                raise PayloadTooLarge(f"the job needs about {needed} bytes of storage; the store holds "
                                      f"at most {self.max_bytes}", code="job_too_large")
            used = self.used_bytes()
            if used + needed > self.max_bytes:
                raise StoreFull(f"the job store is full ({used} of {self.max_bytes} bytes in use or "
                                f"reserved; this job needs about {needed})")
            self.jobs[job_id] = job  # holds its place while its files are written
        try:
            job.folder.mkdir()
            for image, (_, data, _) in zip(images, uploads, strict=True):
                if isinstance(data, bytes | bytearray):
                    write_atomic(job.folder / f"input-{image.index}", bytes(data))
            self.save(job, strict=True)
        except OSError as exc:
            log.error("cannot write job %s: %s", job_id, exc)
            with self.lock:
                self.jobs.pop(job_id, None)
            shutil.rmtree(job.folder, ignore_errors=True)
            raise StoreUnavailable("the job could not be stored (see the API's log)") from None
        if all(i.state in FINISHED for i in images):
            with self.lock:
                self.finish(job, FAILED)
        return job

    def _next_expiry(self, now: float) -> float:
        expiries = [j.expires for j in self.jobs.values() if j.expires is not None]
        return max(1.0, min(expiries) - now) if expiries else 30.0

    def get(self, job_id: str) -> Job:
        """The job, or :class:`NotFound` (an unknown id, or one that expired)."""
        if _JOB_ID.match(job_id):
            with self.lock:
                self.sweep()
                job = self.jobs.get(job_id)
                if job is not None:
                    return job
        raise NotFound("no such job (finished jobs expire after a while)", code="job_not_found")

    def save(self, job: Job, *, strict: bool = False) -> None:
        """Write the job's state. Once a job is admitted a failure (a full disk) is logged and the
        job goes on in memory, so no image is left running for ever; ``strict`` raises instead."""
        try:
            write_atomic(job.folder / "job.json", json.dumps(job.to_json(), indent=1).encode())
        except OSError as exc:
            if strict:
                raise
            log.error("cannot save job %s: %s", job.id, exc)

    def finish(self, job: Job, state: str) -> None:
        """End the job: its state, when it expires; its uploads are deleted, no longer needed."""
        now = self.clock()
        with self.lock:
            job.state, job.finished, job.expires = state, now, now + self.ttl
            job.inputs_kept = False
            self.save(job)
        for path in job.folder.glob("input-*"):
            with contextlib.suppress(OSError):
                path.unlink()

    def delete(self, job: Job) -> None:
        with self.lock:
            self.jobs.pop(job.id, None)
        shutil.rmtree(job.folder, ignore_errors=True)

    def read_input(self, job: Job, index: int) -> bytes:
        return (job.folder / f"input-{index}").read_bytes()

    def write_result(self, job: Job, index: int, data: bytes, extension: str) -> str:
        name = f"result-{index}.{extension}"
        write_atomic(job.folder / name, data)
        return name

    def result_path(self, job: Job, image: Image) -> Path:
        assert image.result is not None
        return job.folder / image.result

    def used_bytes(self) -> int:
        with self.lock:
            return sum(job.disk_bytes() for job in self.jobs.values())

    def sweep(self, force: bool = False) -> None:
        """Delete finished jobs past their expiry (at most once a second unless forced)."""
        now = self.clock()
        with self.lock:
            if not self.is_open or (not force and now - self._swept < SWEEP_INTERVAL):
                return
            self._swept = now
            expired = [j for j in self.jobs.values() if j.expires is not None and j.expires <= now]
            for job in expired:
                self.jobs.pop(job.id, None)
        for job in expired:
            shutil.rmtree(job.folder, ignore_errors=True)
            log.info("job %s expired", job.id)

    def counts(self) -> Iterator[tuple[str, int]]:
        with self.lock:
            states = [j.state for j in self.jobs.values()]
        for state in (QUEUED, RUNNING, DONE, FAILED, CANCELLED):
            yield state, states.count(state)
