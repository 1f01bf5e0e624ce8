"""Running jobs: sender threads work through the images of every job, oldest job first.

Theory of operation
-------------------
A job's images are put on one FIFO queue when the job is admitted (or, after
a restart, when the store is opened and the job resumed). ``WTC_API_PARALLEL``
sender threads, shared by all jobs, take images off the queue and send each
with the API's fan-out client (:class:`~watercolor.api.common.backends.Backends`),
so a job's image gets the same retries, busy backoff and metrics as one sent
by ``/v1/upscale``, and its own deadline of ``WTC_API_DEADLINE`` from when it
starts. The backend's PROGRESS replies update the image's tiles in memory.

Cancelling a job marks its unfinished images cancelled at once and flips the
job's :class:`~watercolor.transport.Cancel` switch: the connections in flight
are shut, so the backends stop between tiles, and a queued image is skipped
when a sender reaches it (it never starts). A result that arrives for an image
that was cancelled meanwhile is thrown away.

The threads start with the first job (an app that never sees a job starts
none) and are daemons: a stopping API does not wait for them; the job is
resumed by the next process instead. While idle they sweep expired jobs.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any

from prometheus_client.core import GaugeMetricFamily

from watercolor.api.common import images as imaging
from watercolor.api.common.backends import Backends, Outcome
from watercolor.api.jobs.store import (
    CANCELLED,
    DONE,
    FAILED,
    FINISHED,
    QUEUED,
    RUNNING,
    Image,
    Job,
    JobStore,
)
from watercolor.config import Settings
from watercolor.errors import Cancelled, InternalError, StoreUnavailable, WatercolorError
from watercolor.params import Params
from watercolor.transport import Cancel

log = logging.getLogger("watercolor.api.jobs")

#: Seconds an idle sender waits for work before sweeping expired jobs.
IDLE_SWEEP = 30.0

Upload = tuple[str | None, bytes | WatercolorError, int | None]  # filename, image or error, pixels


class Jobs:
    """The jobs of one API app: admitting, running, cancelling and deleting them."""

    def __init__(self, settings: Settings, backends: Backends, registry: Any = None) -> None:
        self.settings = settings
        self.backends = backends
        self.store = JobStore(settings)
        self.senders = settings.api_parallel
        self._queue: queue.Queue[tuple[str, int] | None] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._switches: dict[str, Cancel] = {}
        self._closing = False
        self._start_lock = threading.Lock()
        if registry is not None:
            registry.register(_JobCollector(self.store))

    # --- life cycle ------------------------------------------------------------------------

    def start(self) -> None:
        """At start-up: resume the unfinished jobs an earlier API process left, if there are any.

        Without such jobs the store stays closed until the first job request, so
        an app that is never asked for a job takes no folder and no lock.
        """
        if not self.store.has_unfinished_work():
            return
        try:
            self._open()
        except StoreUnavailable:
            pass  # logged by the store; job requests will answer 503 until it can be used

    def _open(self) -> None:
        for job in self.store.open():
            self._enqueue(job)

    def close(self) -> None:
        """Stop as a dying process would: no state is written, connections in flight are shut.

        The store is let go, so another app (a restarted API) can open it and resume.
        """
        with self._start_lock:
            self._closing = True
            for _ in self._threads:
                self._queue.put(None)
        with self.store.lock:
            switches = list(self._switches.values())
            self._switches.clear()
        for switch in switches:
            switch.cancel()
        self.store.close()

    # --- requests --------------------------------------------------------------------------

    def submit(self, uploads: list[Upload], params: Params) -> Job:
        self._open()
        job = self.store.create(uploads, params)
        log.info("job %s: %d image(s), %s x%g", job.id, len(job.images), params.model, params.scale)
        self._enqueue(job)
        return job

    def get(self, job_id: str) -> Job:
        self._open()
        return self.store.get(job_id)

    def cancel(self, job: Job) -> bool:
        """Cancel an unfinished job; False when it had finished already."""
        now = self.store.clock()
        with self.store.lock:
            if job.is_finished:
                return False
            for image in job.images:
                if image.state in (QUEUED, RUNNING):
                    image.end(CANCELLED, now, Cancelled("the job was cancelled"))
            switch = self._switches.pop(job.id, None)
            self.store.finish(job, CANCELLED)
        if switch is not None:
            switch.cancel()
        log.info("job %s cancelled", job.id)
        return True

    def delete(self, job: Job) -> None:
        self.store.delete(job)

    # --- the senders -----------------------------------------------------------------------

    def _enqueue(self, job: Job) -> None:
        with self._start_lock:
            if self._closing:
                return
            if not self._threads:
                for n in range(self.senders):
                    thread = threading.Thread(target=self._work, name=f"wtc-job-{n}", daemon=True)
                    thread.start()
                    self._threads.append(thread)
            for image in job.images:
                if image.state == QUEUED:
                    self._queue.put((job.id, image.index))

    def _work(self) -> None:
        while True:
            try:
                task = self._queue.get(timeout=IDLE_SWEEP)
            except queue.Empty:
                self.store.sweep()
                continue
            if task is None:
                return
            try:
                self._run(*task)
            except Exception:  # noqa: BLE001 - a sender must outlive any one image
                log.exception("job %s image %d: unexpected error", *task)

    def _run(self, job_id: str, index: int) -> None:
        now = self.store.clock()
        with self.store.lock:
            job = self.store.jobs.get(job_id)
            if self._closing or job is None or job.is_finished or job.images[index].state != QUEUED:
                return  # cancelled, deleted, or already done by a sender before a restart
            image = job.images[index]
            image.state, image.started = RUNNING, now
            if job.state == QUEUED:
                job.state = RUNNING
            if job.started is None:
                job.started = now
            switch = self._switches.setdefault(job_id, Cancel())
            self.store.save(job)
        try:
            outcome = self._send(job, image, switch)
        except Exception:  # noqa: BLE001 - the image must end, whatever broke
            log.exception("job %s image %d failed unexpectedly", job_id, index)
            outcome = Outcome(error=InternalError())
        self._settle(job, image, outcome)

    def _send(self, job: Job, image: Image, switch: Cancel) -> Outcome:
        try:
            data = self.store.read_input(job, image.index)
        except OSError as exc:
            log.error("job %s image %d: upload unreadable: %s", job.id, image.index, exc)
            return Outcome(error=InternalError("the upload could not be read back",
                                               code="job_interrupted"))

        def progress(done: int, total: int) -> None:
            with self.store.lock:
                if image.state == RUNNING:
                    image.tiles_done, image.tiles_total = done, total

        return self.backends.upscale(data, job.params, deadline=time.monotonic() + self.settings.api_deadline,
                                     request_id=f"{job.id[:12]}-{image.index}", on_progress=progress,
                                     cancel=switch)

    def _settle(self, job: Job, image: Image, outcome: Outcome) -> None:
        name = None
        if outcome.ok and outcome.image is not None and image.state == RUNNING and not self._closing:
            try:
                name = self.store.write_result(job, image.index, outcome.image,
                                               imaging.extension(outcome.info))
            except OSError as exc:
                log.error("job %s image %d: cannot store the result: %s", job.id, image.index, exc)
                outcome = Outcome(error=StoreUnavailable("the result could not be stored"))
        with self.store.lock:
            if self._closing:
                return
            if image.state != RUNNING:  # cancelled meanwhile: the result is not wanted
                if name is not None:
                    (job.folder / name).unlink(missing_ok=True)
                return
            now = self.store.clock()
            if name is not None:
                assert outcome.image is not None
                info = outcome.info
                image.result, image.result_bytes = name, len(outcome.image)
                image.mime = str(info.get("mime") or "image/png")
                image.width, image.height = _int(info.get("width")), _int(info.get("height"))
                image.tiles_done = image.tiles_total = max(image.tiles_total, 1)
                image.end(DONE, now)
            else:
                image.end(FAILED, now, outcome.error or InternalError())
            if all(i.state in FINISHED for i in job.images):
                self._switches.pop(job.id, None)
                self.store.finish(job, DONE if any(i.state == DONE for i in job.images) else FAILED)
                log.info("job %s %s", job.id, job.state)
            else:
                self.store.save(job)


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class _JobCollector:
    """Prometheus numbers read from the store when scraped."""

    def __init__(self, store: JobStore) -> None:
        self.store = store

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Any:
        jobs = GaugeMetricFamily("wtc_api_jobs", "Jobs in the store, by state", labels=["state"])
        for state, count in self.store.counts():
            jobs.add_metric([state], count)
        yield jobs
        yield GaugeMetricFamily("wtc_api_job_store_bytes",
                                "Bytes the job store holds, or has reserved for results to come",
                                value=self.store.used_bytes())


