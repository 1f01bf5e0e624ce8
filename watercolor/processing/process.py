"""The processing backend: a raw-TCP server that enlarges one image per connection.

Theory of operation
-------------------
An accept loop hands each connection to its own thread, up to a fixed number
of connections; beyond that a connection is answered BUSY without being read.
The handler reads one frame with :mod:`watercolor.transport` (every read has a
timeout, and the whole request a deadline):

* PING is answered with PONG at once, whatever the model is doing (ncnn
  releases the GIL, so a running inference never blocks this).
* REQUEST is admitted as soon as its 20-byte prefix has been checked, before
  the payload is buffered: a backend has ``WTC_SLOTS`` working slots and a wait
  queue of ``WTC_QUEUE``; a request beyond both is answered BUSY at once, so
  the API retries on a fresh connection, likely another pod. Admitted uploads
  are therefore bounded in number, and so is the memory they hold.

An admitted request waits for a slot, runs the :class:`Pipeline` (decode →
limits → prepare → upscale → finish → encode), streams PROGRESS frames if the
client asked for them, and ends with one RESULT or ERROR. A client that goes
away is noticed between tiles and the work stops. One structured log line is
written per request.

SIGTERM stops accepting, lets work in flight finish within
``WTC_GRACE_PERIOD``, answers requests still queued with BUSY
(``shutting_down``) so the API retries them elsewhere, and exits 0.
"""

from __future__ import annotations

import json
import logging
import select
import signal
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from watercolor import __version__, protocol
from watercolor.config import Settings
from watercolor.errors import (
    AuthenticationFailed,
    BackendBusy,
    Cancelled,
    ProtocolError,
    ShuttingDown,
    WatercolorError,
)
from watercolor.listen import listen
from watercolor.params import Params, parse_params
from watercolor.protocol import Frame, FrameDecoder, FrameType, ReplayGuard
from watercolor.transport import PeerClosed, StallTimeout, linger_close, send_frame

log = logging.getLogger("watercolor.process")

#: Connections served at once beyond the admitted requests (pings, uploads being sniffed).
EXTRA_CONNECTIONS = 32
#: Connections beyond the cap being answered BUSY at once; past this they are just closed.
MAX_REFUSALS = 64
#: A whole request must arrive within this many I/O timeouts (stops a trickling sender).
REQUEST_DEADLINE_FACTOR = 4
#: Least time between two PROGRESS frames.
PROGRESS_INTERVAL = 0.1
#: A request that asked for progress hears from the backend at least this often (in I/O
#: timeouts) while it waits in the queue or a long tile runs, so the client never mistakes
#: a busy backend for a stalled one.
HEARTBEAT_FRACTION = 1 / 3
ACCEPT_PAUSE = 0.05  # seconds to wait after a failed accept() before the next


class Admission:
    """Bounded working slots plus a bounded wait queue."""

    def __init__(self, slots: int, queue: int) -> None:
        self.slots = slots
        self.queue = queue
        self._cond = threading.Condition()
        self.admitted = 0  # running + waiting
        self.running = 0
        self.closing = False

    def try_admit(self) -> bool:
        with self._cond:
            if self.closing or self.admitted >= self.slots + self.queue:
                return False
            self.admitted += 1
            return True

    def acquire_slot(self) -> None:
        """Wait for a working slot; raises ShuttingDown if the server starts draining first."""
        with self._cond:
            while self.running >= self.slots:
                if self.closing:
                    raise ShuttingDown()
                self._cond.wait(0.5)
            if self.closing:
                raise ShuttingDown()
            self.running += 1

    def release_slot(self) -> None:
        with self._cond:
            self.running -= 1
            self._cond.notify_all()

    def leave(self) -> None:
        with self._cond:
            self.admitted -= 1
            self._cond.notify_all()

    def snapshot(self) -> dict[str, int]:
        with self._cond:
            return {"slots": self.slots, "queue": self.queue, "running": self.running,
                    "waiting": self.admitted - self.running}

    def close(self) -> None:
        with self._cond:
            self.closing = True
            self._cond.notify_all()


@dataclass
class _Record:
    """What the per-request log line says."""

    id: str = ""
    peer: str = ""
    op: str = ""
    model: str = ""
    scale: float | None = None
    in_size: str = ""
    out_size: str = ""
    in_bytes: int = 0
    out_bytes: int = 0
    outcome: str = ""
    code: str = ""
    admitted: bool = False  # holds a place in the backend's slots + queue

    def log(self, started: float) -> None:
        fields: dict[str, Any] = {k: v for k, v in self.__dict__.items()
                                  if k != "admitted" and v not in ("", None, 0)}
        fields["ms"] = round((time.monotonic() - started) * 1000, 1)
        log.info("request %s", json.dumps(fields, sort_keys=True))


class ProcessServer:
    def __init__(self, settings: Settings, pipeline: Any | None = None) -> None:
        self.settings = settings
        if pipeline is None:
            from watercolor.processing.engine import Engine
            from watercolor.processing.pipeline import Pipeline

            engine = Engine.from_settings(settings)
            if settings.preload:
                engine.preload([n.strip() for n in settings.preload.split(",") if n.strip()])
            pipeline = Pipeline(settings, engine)
        self.pipeline = pipeline
        self.secret = settings.shared_secret.encode() if settings.shared_secret else None
        self.replay_guard = ReplayGuard()
        self._guard_lock = threading.Lock()
        self.admission = Admission(settings.slots, settings.queue)
        self.max_connections = settings.slots + settings.queue + EXTRA_CONNECTIONS
        self._connections = threading.BoundedSemaphore(self.max_connections)
        self._handlers: set[threading.Thread] = set()
        self._handlers_lock = threading.Lock()
        self._refusals = threading.BoundedSemaphore(MAX_REFUSALS)
        self._stop = threading.Event()
        self._finished = threading.Event()  # set once shutdown is over: heartbeats run until then
        self.sock = listen(settings.process_host, settings.process_port, host_setting="WTC_PROCESS_HOST",
                           port_setting="WTC_PROCESS_PORT")
        self.address = self.sock.getsockname()[:2]
        self.started = time.time()
        self.served = 0
        self._reporters: set[_Reporter] = set()
        self._reporters_lock = threading.Lock()
        threading.Thread(target=self._heartbeat, name="wtc-heartbeat", daemon=True).start()

    # --- lifecycle -----------------------------------------------------------------------

    def serve_forever(self) -> None:
        log.info("listening on %s:%d (slots=%d queue=%d, auth=%s)", *self.address,
                 self.settings.slots, self.settings.queue, "on" if self.secret else "off")
        self.sock.settimeout(0.5)
        while not self._stop.is_set():
            try:
                conn, peer = self.sock.accept()
            except TimeoutError:
                continue
            except OSError as exc:
                if self._stop.is_set():
                    break
                # Out of descriptors or buffers, or a connection reset before it was taken:
                # the listener is fine, so wait a moment instead of taking the backend down.
                log.warning("accept failed: %s", exc)
                self._stop.wait(ACCEPT_PAUSE)
                continue
            if self._connections.acquire(blocking=False):
                self._start_handler(conn, peer)
            elif self._refusals.acquire(blocking=False):
                refusal = threading.Thread(target=self._refuse, args=(conn,), daemon=True)
                self._start(refusal, conn, self._refusals)
            else:
                _close(conn)

    def _start_handler(self, conn: socket.socket, peer: tuple) -> None:
        thread = threading.Thread(target=self._handle, args=(conn, peer), daemon=True)
        with self._handlers_lock:
            self._handlers.add(thread)  # before start: a quick handler removes itself when done
        if not self._start(thread, conn, self._connections):
            with self._handlers_lock:
                self._handlers.discard(thread)

    @staticmethod
    def _start(thread: threading.Thread, conn: socket.socket, release: threading.BoundedSemaphore) -> bool:
        """Start a connection's thread; if none can start, close the connection and free its place."""
        try:
            thread.start()
        except RuntimeError as exc:  # the process or pod is out of threads
            log.warning("cannot start a thread for a connection: %s", exc)
            _close(conn)
            release.release()
            return False
        return True

    def shutdown(self, grace: float | None = None) -> bool:
        """Stop accepting, let work in flight finish; True if everything finished in time."""
        grace = self.settings.grace_period if grace is None else grace
        try:
            return self._drain(grace)
        finally:
            self._finished.set()

    def _drain(self, grace: float) -> bool:
        if not self._stop.is_set():
            log.info("draining: no new connections, %s", json.dumps(self.admission.snapshot()))
        self._stop.set()
        self.admission.close()
        try:
            self.sock.close()
        except OSError:
            pass
        end = time.monotonic() + grace
        while True:
            with self._handlers_lock:
                alive = [t for t in self._handlers if t.is_alive()]
            if not alive:
                return True
            if time.monotonic() >= end:
                log.warning("grace period over with %d connection(s) still open", len(alive))
                return False
            alive[0].join(min(0.2, max(0.0, end - time.monotonic())))

    # --- one connection ------------------------------------------------------------------

    def _send(self, conn: socket.socket, frame: Frame) -> None:
        send_frame(conn, frame, secret=self.secret, io_timeout=self.settings.io_timeout)

    def _refuse(self, conn: socket.socket) -> None:
        try:
            with conn:
                self._send(conn, protocol.busy("", self._retry_after(), "too many connections"))
                linger_close(conn)
        except OSError:
            pass
        finally:
            self._refusals.release()

    def _retry_after(self) -> float:
        return 1.0

    def _handle(self, conn: socket.socket, peer: tuple) -> None:
        started = time.monotonic()
        record = _Record(peer=f"{peer[0]}:{peer[1]}")
        try:
            with conn:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                try:
                    frame = self._read_request(conn, record)
                    if frame is None:
                        return
                    self._dispatch(conn, frame, record)
                except BackendBusy as exc:
                    record.outcome, record.code = "busy", exc.code
                    self._try_send(conn, protocol.busy(record.id, self._retry_after(), exc.code))
                except WatercolorError as exc:
                    record.outcome, record.code = "error", exc.code
                    self._try_send(conn, protocol.error(record.id, exc.code, exc.message))
                    linger_close(conn)  # the client may still be sending: don't reset our reply
                except (PeerClosed, StallTimeout, ConnectionError, TimeoutError) as exc:
                    record.outcome = "disconnected" if not isinstance(exc, TimeoutError) else "timeout"
                except Exception:
                    log.exception("unexpected error serving %s", record.peer)
                    record.outcome, record.code = "error", "internal_error"
                    self._try_send(conn, protocol.error(record.id, "internal_error", "internal error"))
        finally:
            if record.admitted:
                self.admission.leave()
            self._connections.release()
            with self._handlers_lock:
                self._handlers.discard(threading.current_thread())
            if record.op or record.outcome:
                record.log(started)

    def _try_send(self, conn: socket.socket, frame: Frame) -> None:
        try:
            self._send(conn, frame)
        except OSError:
            pass

    def _read_request(self, conn: socket.socket, record: _Record) -> Frame | None:
        """Read one frame, admitting a REQUEST as soon as its prefix is known."""
        io_timeout = self.settings.io_timeout
        deadline = time.monotonic() + io_timeout * REQUEST_DEADLINE_FACTOR
        decoder = FrameDecoder(max_payload=self.settings.max_image_bytes, peer="client",
                               secret=self.secret)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise StallTimeout("request did not arrive in time")
            conn.settimeout(min(io_timeout, remaining))
            try:
                chunk = conn.recv(min(1 << 20, decoder.pending_bytes))
            except TimeoutError:
                if decoder.buffered == 0 and not record.admitted:
                    record.outcome = "idle_timeout"
                raise StallTimeout("read stalled") from None
            if not chunk:
                if decoder.buffered == 0 and decoder.incoming is None:
                    return None  # connected and left: a TCP health probe
                raise PeerClosed("client closed the connection mid-frame")
            try:
                frames = list(decoder.feed(chunk))
            except (ProtocolError, AuthenticationFailed):
                raise
            incoming = decoder.incoming
            if incoming and incoming[0] is not FrameType.REQUEST and incoming[1] > 0:
                raise ProtocolError(
                    f"client broke the protocol: a {incoming[0].name} frame carries no payload")
            if not record.admitted and not frames and incoming and incoming[0] is FrameType.REQUEST:
                if not self.admission.try_admit():
                    self._answer_busy(conn, record)
                    return None
                record.admitted = True
            if frames:
                frame = frames[0]
                if frame.type is FrameType.REQUEST and not record.admitted:
                    if not self.admission.try_admit():
                        self._answer_busy(conn, record)
                        return None
                    record.admitted = True
                if self.secret:
                    with self._guard_lock:
                        self.replay_guard.check(frame.header)
                return frame

    def _answer_busy(self, conn: socket.socket, record: _Record) -> None:
        closing = self.admission.closing
        record.op, record.outcome = "upscale", "busy"
        reason = "shutting_down" if closing else "busy"
        self._try_send(conn, protocol.busy("", self._retry_after(), reason))
        linger_close(conn)

    def _dispatch(self, conn: socket.socket, frame: Frame, record: _Record) -> None:
        header = frame.header
        record.id = str(header.get("id") or "")[:protocol.MAX_ID_CHARS] or uuid.uuid4().hex[:12]
        if frame.type is FrameType.PING:
            record.op = "ping"
            self._send(conn, protocol.pong(id=record.id, version=__version__, protocol=protocol.VERSION,
                                           draining=self._stop.is_set(), **self.admission.snapshot()))
            record.outcome = "ok"
            return
        if frame.type is not FrameType.REQUEST:
            raise ProtocolError(f"client broke the protocol: a {frame.type.name} frame is a reply")
        record.op = "upscale"
        record.in_bytes = len(frame.payload)
        if header.get("op", "upscale") != "upscale":
            raise ProtocolError(f"client broke the protocol: unknown operation {header.get('op')!r}")
        params = self._params(header)
        record.model, record.scale = params.model, params.scale
        reporter = _Reporter(self, conn, record.id, bool(header.get("progress")))
        with self._reporters_lock:
            self._reporters.add(reporter)
        try:
            self.admission.acquire_slot()
            try:
                output = self.pipeline.run(frame.payload, params, progress=reporter)
            finally:
                self.admission.release_slot()
        finally:
            with self._reporters_lock:
                self._reporters.discard(reporter)
            reporter.close()
        record.in_size = f"{output.input_width}x{output.input_height}"
        record.out_size = f"{output.width}x{output.height}"
        record.out_bytes = len(output.data)
        self._send(conn, protocol.result(record.id, output.data, width=output.width,
                                         height=output.height, format=output.format, mime=output.mime,
                                         model=params.model, scale=params.scale))
        record.outcome = "ok"
        self.served += 1

    def _params(self, header: dict[str, Any]) -> Params:
        options = header.get("options") or {}
        if not isinstance(options, dict):
            raise ProtocolError("client broke the protocol: options is not an object")
        fields = {k: header.get(k) for k in ("model", "scale", "format", "quality", "tile_size")
                  if header.get(k) is not None}
        return parse_params(fields, default_model=self.settings.default_model,
                            max_scale=self.settings.max_scale, options=options)

    def _heartbeat(self) -> None:
        interval = self.settings.io_timeout * HEARTBEAT_FRACTION
        # Heartbeats go on through a drain: the images being finished still need them.
        while not self._finished.wait(min(1.0, interval / 2)):
            with self._reporters_lock:
                reporters = list(self._reporters)
            for reporter in reporters:
                reporter.heartbeat(interval)


class _Reporter:
    """Progress of one request: PROGRESS frames between tiles, heartbeats in between.

    It is the pipeline's progress callback. Every frame it sends goes under one
    lock, shared with the heartbeat thread; it is closed before the final reply.
    """

    def __init__(self, server: ProcessServer, conn: socket.socket, request_id: str, wanted: bool):
        self.server = server
        self.conn = conn
        self.request_id = request_id
        self.wanted = wanted
        self.done = self.total = 0
        self.gone = False
        self._closed = False
        self._lock = threading.Lock()
        self._last_sent = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        if self.gone or _peer_gone(self.conn):
            raise Cancelled("client went away")
        self.done, self.total = done, total
        if self.wanted and (done >= total or time.monotonic() - self._last_sent >= PROGRESS_INTERVAL):
            self._send()
            if self.gone:
                raise Cancelled("client went away")

    def heartbeat(self, interval: float) -> None:
        if self.wanted and time.monotonic() - self._last_sent >= interval:
            self._send()

    def _send(self) -> None:
        with self._lock:
            if self._closed or self.gone:
                return
            try:
                self.server._send(self.conn, protocol.progress(self.request_id, self.done, self.total))
                self._last_sent = time.monotonic()
            except OSError:
                self.gone = True

    def close(self) -> None:
        with self._lock:
            self._closed = True


def _peer_gone(conn: socket.socket) -> bool:
    """True if the client has closed its side (cheap, non-blocking; poll, as select fails past fd 1023)."""
    try:
        poller = select.poll()
        poller.register(conn, select.POLLIN)
        if not poller.poll(0):
            return False
        return conn.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def _close(conn: socket.socket) -> None:
    try:
        conn.close()
    except OSError:
        pass


def serve(settings: Settings) -> int:
    """Run a backend until SIGTERM/SIGINT; returns the exit status."""
    server = ProcessServer(settings)
    stopping = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("received %s", signal.Signals(signum).name)
        stopping.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.serve_forever()
    finished = server.shutdown()
    log.info("stopped (%d images served)%s", server.served, "" if finished else ", grace period exceeded")
    return 0
