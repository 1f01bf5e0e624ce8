"""Sending images to the processing backends: the API's fan-out client.

Theory of operation
-------------------
Every image travels over a connection of its own (one image per connection
is what lets a Kubernetes Service, which balances per TCP connection, spread
a batch over its pods). The images of one request are sent at most
``WTC_API_PARALLEL`` at a time by a thread pool made for that request: a
process-wide pool would let one big batch hold every thread while small
requests queue behind it, whereas a per-request pool bounds the threads at
``WTC_API_WORKERS`` x ``WTC_API_PARALLEL`` and leaves global backpressure to
the backends, which answer BUSY when they are full.

Where to send: with ``WTC_PROCESS_BACKENDS`` the API balances over the listed
addresses itself, round robin from a random starting point, a retry preferring
another address than the one that just failed; otherwise every image goes to
the one Service address and Kubernetes spreads the connections.

An image is attempted until one of these happens:

* RESULT: done. ERROR: done, with the backend's error (a corrupt image stays
  corrupt wherever it is sent; only "shutting down" is treated as busy).
* BUSY: sent again on a fresh connection after a jittered, exponentially
  growing pause, for as long as the deadline leaves time; a batch that stays
  saturated until then fails with ``backend_busy`` (503, Retry-After).
* Refused connection, backend lost mid-image, stalled I/O or a reply that
  breaks the protocol: sent again, at most ``WTC_API_RETRIES`` times, then
  ``backend_unavailable`` (503).
* The request's deadline (``WTC_API_DEADLINE``) passes: ``deadline_exceeded`` (504).
* Its :class:`~watercolor.transport.Cancel` switch is flipped (a job was
  cancelled): the connection is shut, so the backend stops between tiles, and
  the image ends with ``cancelled``; a pause between attempts ends at once.

Every input gets exactly one :class:`Outcome`, in input order.
"""

from __future__ import annotations

import itertools
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from watercolor import protocol, transport
from watercolor.api.common.metrics import Metrics
from watercolor.config import Settings
from watercolor.errors import (
    AuthenticationFailed,
    BackendBusy,
    BackendUnavailable,
    Cancelled,
    DeadlineExceeded,
    InternalError,
    ProtocolError,
    WatercolorError,
    from_code,
)
from watercolor.params import Params
from watercolor.protocol import FrameType

log = logging.getLogger("watercolor.api.backends")

#: First pause after a busy answer, and the longest; each busy answer doubles it (with jitter).
BUSY_BACKOFF = (0.1, 2.0)
#: The same for failed attempts (refused or lost connections).
FAILURE_BACKOFF = (0.05, 1.0)
#: Longest "retry after" a backend's busy answer is believed (seconds).
MAX_RETRY_AFTER = 3600
#: Seconds a readiness ping may take.
PING_TIMEOUT = 2.0
#: Bytes per output pixel a reply may carry at most (16-bit RGBA, uncompressed), plus slack.
MAX_REPLY_BYTES_PER_PIXEL = 8
#: Error codes from a backend that mean the API-backend link is misconfigured, not the image.
LINK_ERRORS = {"auth_failed", "protocol_error", "unsupported_version"}

ProgressCallback = Callable[[int, int, int], None]  # (image index, done, total)


@dataclass
class Outcome:
    """One input's answer: the enlarged image and its description, or an error."""

    image: bytes | None = None
    info: dict[str, Any] = field(default_factory=dict)
    error: WatercolorError | None = None
    backend: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def address_label(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _Retry(Exception):
    """An attempt that should be repeated: ``busy`` or a failure with a ``reason``."""

    def __init__(self, reason: str, error: WatercolorError, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.error = error
        self.retry_after = retry_after


class Backends:
    """The processing backends as one API-side client."""

    def __init__(self, settings: Settings, metrics: Metrics, *, rng: random.Random | None = None) -> None:
        self.addresses = settings.backends
        self.secret = settings.shared_secret.encode() if settings.shared_secret else None
        self.parallel = settings.api_parallel
        self.retries = settings.api_retries
        self.io_timeout = settings.io_timeout
        self.max_reply = settings.max_output_pixels * MAX_REPLY_BYTES_PER_PIXEL + (1 << 20)
        self.metrics = metrics
        self._rng = rng or random.Random()
        self._turn = itertools.count(self._rng.randrange(len(self.addresses)))
        self._lock = threading.Lock()
        self._working = dict.fromkeys(self.addresses, 0)  # images this API has at each address now

    # --- choosing a backend ----------------------------------------------------------------

    def pick(self, avoid: tuple[str, int] | None = None) -> tuple[str, int]:
        """The address this API has the fewest images at, in turn among equals; never ``avoid``
        (just failed) when there is another.

        With one Service address (Kubernetes) that is always it and the Service spreads the
        connections; with a list (``./run.sh``) a backend busy with a long image is not handed
        more while another is idle.
        """
        n = len(self.addresses)
        with self._lock:
            turn = next(self._turn)
            order = [self.addresses[(turn + i) % n] for i in range(n)]
            if avoid in order and n > 1:
                order.remove(avoid)
            return min(order, key=self._working.__getitem__)  # min keeps the first of equals

    @contextmanager
    def _working_at(self, address: tuple[str, int]) -> Iterator[None]:
        with self._lock:
            self._working[address] += 1
        try:
            yield
        finally:
            with self._lock:
                self._working[address] -= 1

    # --- one image ---------------------------------------------------------------------------

    def upscale(self, image: bytes, params: Params, *, deadline: float, request_id: str,
                on_progress: Callable[[int, int], None] | None = None,
                cancel: transport.Cancel | None = None) -> Outcome:
        """Send one image until it has an answer; never raises for a per-image failure."""
        frame = protocol.request(request_id, image, model=params.model, scale=params.scale,
                                 fmt=params.format, quality=params.quality, options=params.options,
                                 tile_size=params.tile_size, progress=True)
        busy_answers = failures = 0
        avoid: tuple[str, int] | None = None
        self.metrics.images_in_flight.inc()
        try:
            while True:
                address = self.pick(avoid)
                try:
                    outcome = self._attempt(address, frame, deadline, on_progress, cancel)
                except DeadlineExceeded:
                    if busy_answers:  # time ran out while backends were saturated: say so (503)
                        error = BackendBusy(
                            f"all processing backends stayed busy ({busy_answers} busy answers)")
                        error.retry_after = BackendBusy.retry_after
                        raise error from None
                    raise
                except _Retry as retry:
                    if retry.reason == "busy":
                        busy_answers += 1
                        pause = _backoff(BUSY_BACKOFF, busy_answers, self._rng)
                        limit_error: WatercolorError = BackendBusy(
                            f"all processing backends stayed busy ({busy_answers} busy answers)")
                        limit_error.retry_after = retry.retry_after or BackendBusy.retry_after
                    else:
                        failures += 1
                        avoid = address
                        if failures > self.retries:
                            raise _exhausted(retry, failures) from None
                        pause = _backoff(FAILURE_BACKOFF, failures, self._rng)
                        limit_error = _exhausted(retry, failures)
                    if time.monotonic() + pause >= deadline:
                        raise limit_error from None
                    self.metrics.retries.labels(retry.reason).inc()
                    if cancel is None:
                        time.sleep(pause)
                    elif cancel.wait(pause):
                        raise Cancelled() from None
                    continue
                self._count(params, outcome)
                return outcome
        except WatercolorError as exc:
            outcome = Outcome(error=exc)
            self._count(params, outcome)
            return outcome
        finally:
            self.metrics.images_in_flight.dec()

    def _attempt(self, address: tuple[str, int], frame: protocol.Frame, deadline: float,
                 on_progress: Callable[[int, int], None] | None,
                 cancel: transport.Cancel | None = None) -> Outcome:
        label = address_label(address)
        try:
            with self._working_at(address):
                reply = transport.exchange(address, frame, secret=self.secret, io_timeout=self.io_timeout,
                                           deadline=deadline, max_reply=self.max_reply,
                                           on_progress=on_progress, cancel=cancel)
        except (DeadlineExceeded, Cancelled):
            raise
        except BackendUnavailable as exc:
            self._failed(label, "refused", exc)
            raise _Retry("refused", exc) from None
        except (transport.PeerClosed, ConnectionError) as exc:
            self._failed(label, "lost", exc)
            raise _Retry("lost", BackendUnavailable("a processing backend was lost mid-image")) from None
        except (transport.StallTimeout, TimeoutError) as exc:
            self._failed(label, "stalled", exc)
            raise _Retry("stalled", BackendUnavailable("a processing backend stopped answering")) from None
        except (ProtocolError, AuthenticationFailed, OSError) as exc:
            self._failed(label, "broken", exc)
            raise _Retry("broken", BackendUnavailable("a processing backend sent a broken reply")) from None

        if reply.type is FrameType.RESULT:
            self.metrics.backend_images.labels(label, "ok").inc()
            return Outcome(image=reply.payload, info=dict(reply.header), backend=label)
        if reply.type is FrameType.BUSY:
            self.metrics.busy.labels(label).inc()
            retry_after = reply.header.get("retry_after")
            # A number off the wire: JSON allows Infinity and NaN, and Retry-After needs whole seconds.
            if not isinstance(retry_after, int | float) or not 0 < retry_after <= MAX_RETRY_AFTER:
                retry_after = None
            raise _Retry("busy", BackendBusy(), retry_after)
        if reply.type is FrameType.ERROR:
            code = str(reply.header.get("code") or "internal_error")
            message = str(reply.header.get("message") or "")
            error = from_code(code, message)
            if isinstance(error, BackendBusy):  # shutting down: another pod will take it
                self.metrics.busy.labels(label).inc()
                raise _Retry("busy", error)
            if isinstance(error, Cancelled) and not (cancel is not None and cancel.cancelled):
                # The backend thought we had gone; we had not: the image is lost, not cancelled.
                self._failed(label, "lost", error)
                raise _Retry("lost", BackendUnavailable("a processing backend was lost mid-image"))
            self.metrics.backend_images.labels(label, "error").inc()
            if code in LINK_ERRORS:
                log.error("backend %s refused the API's request: %s: %s", label, code, message)
                error = InternalError("the processing backend refused the API's request",
                                      code="backend_error")
            return Outcome(error=error, backend=label)
        self._failed(label, "broken", ProtocolError(f"unexpected {reply.type.name} reply"))
        raise _Retry("broken", BackendUnavailable("a processing backend sent a broken reply"))

    def _failed(self, label: str, reason: str, exc: BaseException) -> None:
        self.metrics.failures.labels(label, reason).inc()
        log.warning("backend %s: %s (%s)", label, reason, exc)

    def _count(self, params: Params, outcome: Outcome) -> None:
        code = "ok" if outcome.error is None else outcome.error.code
        self.metrics.images.labels(params.model, code).inc()

    # --- a batch -----------------------------------------------------------------------------

    def upscale_all(self, inputs: Sequence[bytes | WatercolorError], params: Params, *,
                    deadline: float, request_id: str,
                    on_progress: ProgressCallback | None = None) -> list[Outcome]:
        """One :class:`Outcome` per input, in input order.

        An input that is already a :class:`WatercolorError` (it failed the API's
        own checks) is passed through as that image's error.
        """
        outcomes: list[Outcome | None] = [
            Outcome(error=item) if isinstance(item, WatercolorError) else None for item in inputs]
        todo = [i for i, item in enumerate(inputs) if not isinstance(item, WatercolorError)]

        def one(index: int) -> Outcome:
            image = inputs[index]
            assert isinstance(image, bytes | bytearray)
            progress = None
            if on_progress is not None:
                def progress(done: int, total: int, index: int = index) -> None:
                    on_progress(index, done, total)
            try:
                return self.upscale(bytes(image), params, deadline=deadline,
                                    request_id=f"{request_id}-{index}", on_progress=progress)
            except Exception:  # a bug must cost this image only, never the rest of the batch
                log.exception("image %d of request %s failed unexpectedly", index, request_id)
                return Outcome(error=InternalError())

        if len(todo) == 1:
            outcomes[todo[0]] = one(todo[0])
        elif todo:
            with ThreadPoolExecutor(max_workers=min(self.parallel, len(todo)),
                                    thread_name_prefix="wtc-fanout") as pool:
                for index, outcome in zip(todo, pool.map(one, todo), strict=True):
                    outcomes[index] = outcome
        assert all(o is not None for o in outcomes)
        return outcomes  # type: ignore[return-value]

    # --- health ------------------------------------------------------------------------------

    def ping(self, timeout: float = PING_TIMEOUT) -> list[dict[str, Any]]:
        """Ping every address at once; one entry per address, with ``ok`` and what it said."""

        def one(address: tuple[str, int]) -> dict[str, Any]:
            entry: dict[str, Any] = {"address": address_label(address), "ok": False}
            try:
                reply = transport.exchange(address, protocol.ping("readyz"), secret=self.secret,
                                           io_timeout=timeout, connect_timeout=timeout,
                                           deadline=time.monotonic() + timeout, max_reply=1 << 16)
            except (WatercolorError, OSError) as exc:
                entry["error"] = str(exc) or type(exc).__name__
                return entry
            if reply.type is FrameType.PONG:
                entry["ok"] = not reply.header.get("draining", False)
                for key in ("version", "protocol", "running", "waiting", "draining"):
                    if key in reply.header:
                        entry[key] = reply.header[key]
            else:
                entry["error"] = f"answered {reply.type.name}"
            return entry

        if len(self.addresses) == 1:
            return [one(self.addresses[0])]
        with ThreadPoolExecutor(max_workers=len(self.addresses), thread_name_prefix="wtc-ping") as pool:
            return list(pool.map(one, self.addresses))


def _backoff(bounds: tuple[float, float], attempt: int, rng: random.Random) -> float:
    first, longest = bounds
    return min(longest, first * 2 ** (attempt - 1)) * rng.uniform(0.5, 1.0)


def _exhausted(retry: _Retry, failures: int) -> WatercolorError:
    error = retry.error
    if not isinstance(error, BackendUnavailable):
        error = BackendUnavailable()
    plural = "s" if failures != 1 else ""
    return BackendUnavailable(f"{error.message} ({failures} failed attempt{plural})")
