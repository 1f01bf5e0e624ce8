"""Thin socket adapters around the pure protocol in :mod:`watercolor.protocol`.

Every read and write has a timeout (``io_timeout`` per stalled operation) and,
where given, an overall ``deadline`` (a ``time.monotonic()`` value). A peer that
stalls, half-closes or sends garbage costs a bounded wait and nothing else.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext

from watercolor import protocol
from watercolor.errors import (
    BackendUnavailable,
    Cancelled,
    DeadlineExceeded,
    ProtocolError,
)
from watercolor.protocol import Frame, FrameDecoder, FrameType

RECV_CHUNK = 1024 * 1024


class PeerClosed(ConnectionError):
    """The peer closed the connection before a whole frame arrived."""


class StallTimeout(TimeoutError):
    """A single read or write made no progress within the I/O timeout."""


class Cancel:
    """A switch that aborts exchanges from another thread.

    :meth:`cancel` shuts the socket of every exchange in flight that was given
    this switch (the backend notices between tiles and stops), and any later
    exchange with it raises :class:`Cancelled` before connecting.
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def cancel(self) -> None:
        with self._lock:
            self._event.set()
            sockets = list(self._sockets)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; returns True, at once, when cancelled meanwhile."""
        return self._event.wait(seconds)

    @contextmanager
    def watching(self, sock: socket.socket) -> Iterator[None]:
        """Register ``sock`` for the duration; a failure after cancelling becomes :class:`Cancelled`."""
        with self._lock:
            if self._event.is_set():
                raise Cancelled()
            self._sockets.add(sock)
        try:
            yield
        except (OSError, ProtocolError):
            if self.cancelled:
                raise Cancelled() from None
            raise
        finally:
            with self._lock:
                self._sockets.discard(sock)


def _remaining(io_timeout: float, deadline: float | None) -> float:
    if deadline is None:
        return io_timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise DeadlineExceeded()
    return min(io_timeout, left)


def send_bytes(sock: socket.socket, data: bytes, *, io_timeout: float,
               deadline: float | None = None) -> None:
    view = memoryview(data)
    while view:
        sock.settimeout(_remaining(io_timeout, deadline))
        try:
            sent = sock.send(view[:RECV_CHUNK])
        except TimeoutError:
            if deadline is not None and time.monotonic() >= deadline:
                raise DeadlineExceeded() from None
            raise StallTimeout("write stalled") from None
        view = view[sent:]


def send_frame(sock: socket.socket, frame: Frame, *, secret: bytes | None, io_timeout: float,
               deadline: float | None = None) -> None:
    send_bytes(sock, protocol.encode_frame(frame, secret), io_timeout=io_timeout, deadline=deadline)


def recv_frame(sock: socket.socket, decoder: FrameDecoder, *, io_timeout: float,
               deadline: float | None = None) -> Frame:
    """Read until the decoder hands out one frame (extra bytes stay in the decoder)."""
    for frame in decoder.feed(b""):
        return frame
    while True:
        sock.settimeout(_remaining(io_timeout, deadline))
        try:
            chunk = sock.recv(min(RECV_CHUNK, decoder.pending_bytes))
        except TimeoutError:
            if deadline is not None and time.monotonic() >= deadline:
                raise DeadlineExceeded() from None
            raise StallTimeout("read stalled") from None
        if not chunk:
            raise PeerClosed(f"{decoder.peer} closed the connection "
                             f"({decoder.buffered} bytes of a frame received)")
        for frame in decoder.feed(chunk):
            return frame


def exchange(address: tuple[str, int], frame: Frame, *, secret: bytes | None = None,
             io_timeout: float = 30.0, connect_timeout: float = 5.0,
             deadline: float | None = None, max_reply: int = 1 << 31,
             on_progress: Callable[[int, int], None] | None = None,
             cancel: Cancel | None = None) -> Frame:
    """Send one frame on a fresh connection and return the backend's final reply.

    PROGRESS frames are handed to ``on_progress(done, total)``; if it raises,
    the connection is closed, which tells the backend to stop. Connection
    failures raise :class:`BackendUnavailable`; a reply that breaks the
    protocol raises :class:`ProtocolError`; a backend that vanishes mid-reply
    raises :class:`PeerClosed`. Flipping ``cancel`` shuts the connection and
    raises :class:`Cancelled`.
    """
    if cancel is not None and cancel.cancelled:
        raise Cancelled()
    try:
        sock = socket.create_connection(address, timeout=_remaining(connect_timeout, deadline))
    except DeadlineExceeded:
        raise
    except OSError as exc:
        raise BackendUnavailable(f"cannot connect to a processing backend: {exc.strerror or exc}") \
            from None
    with sock, (cancel.watching(sock) if cancel is not None else nullcontext()):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Signed replies are held to the same clock window and one-use nonces as requests,
        # and every reply must be about this request: a recorded reply cannot stand in.
        guard = protocol.ReplayGuard() if secret is not None else None
        decoder = FrameDecoder(max_payload=max_reply, peer="backend", secret=secret, replay_guard=guard)
        request_id = str(frame.header.get("id") or "")[:protocol.MAX_ID_CHARS]
        try:
            send_frame(sock, frame, secret=secret, io_timeout=io_timeout, deadline=deadline)
        except (BrokenPipeError, ConnectionResetError):
            # A backend that is full answers BUSY before reading the whole upload and
            # closes; its reply may still be waiting in our receive buffer.
            pass
        while True:
            reply = recv_frame(sock, decoder, io_timeout=io_timeout, deadline=deadline)
            _check_reply_id(reply, request_id)
            if reply.type is FrameType.PROGRESS:
                if on_progress is not None:
                    on_progress(*_progress_counts(reply.header))
                continue
            if reply.type not in protocol.FINAL_REPLIES:
                raise ProtocolError(f"backend broke the protocol: unexpected {reply.type.name} frame")
            return reply


def _check_reply_id(reply: Frame, request_id: str) -> None:
    """RESULT, PROGRESS and ERROR name the request they answer (an ERROR sent before the header
    was read names none); BUSY and PONG carry nothing a stale copy could pass off."""
    if not request_id or reply.type not in (FrameType.RESULT, FrameType.PROGRESS, FrameType.ERROR):
        return  # a request without an id gets one the backend makes up
    reply_id = reply.header.get("id") or ""
    if reply_id != request_id and not (reply_id == "" and reply.type is FrameType.ERROR):
        raise ProtocolError(f"backend broke the protocol: a {reply.type.name} reply for another request")


def _progress_counts(header: dict) -> tuple[int, int]:
    done, total = header.get("done", 0), header.get("total", 0)
    if not all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n < 1 << 53 for n in (done, total)):
        raise ProtocolError("backend broke the protocol: PROGRESS counts are not whole numbers")
    return done, total


def linger_close(conn: socket.socket) -> None:
    """Half-close, then drain briefly so unread upload bytes don't turn our reply into a reset."""
    try:
        conn.shutdown(socket.SHUT_WR)
        conn.settimeout(0.5)
        end = time.monotonic() + 2.0
        while time.monotonic() < end and conn.recv(1 << 16):
            pass
    except OSError:
        pass
