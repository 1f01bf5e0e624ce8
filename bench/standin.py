"""A stand-in processing backend: the real wire protocol, a fixed time per image, no model.

It behaves like ``watercolor process`` as the API sees it: a REQUEST is
admitted once its prefix is read (``slots`` working plus ``queue`` waiting,
BUSY at once beyond that, then a lingering close so the reply is not lost to
a reset), waits for a slot, "works" for ``delay`` seconds and answers RESULT
with the image it was sent; PING answers PONG. Because the work is a sleep,
many stand-ins fit on a 2-core machine and measure only the API's fan-out.
"""

from __future__ import annotations

import socket
import threading
import time

from watercolor import protocol
from watercolor.protocol import FrameDecoder, FrameType
from watercolor.transport import PeerClosed, StallTimeout, linger_close, recv_frame, send_frame

IO_TIMEOUT = 30.0
MAX_PAYLOAD = 64 * 1024 * 1024


class StandIn:
    """One stand-in backend on a loopback port, served by threads of this process."""

    def __init__(self, delay: float, *, slots: int = 1, queue: int = 4) -> None:
        self.delay = delay
        self.slots = slots
        self.queue = queue
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=256)
        self.address = self.sock.getsockname()[:2]
        self.label = f"{self.address[0]}:{self.address[1]}"
        self._cond = threading.Condition()
        self._admitted = 0
        self._running = 0
        self.served = 0
        self.busy_answers = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        self._thread.join(2)

    # --- admission, as in the real backend ----------------------------------------------------

    def _try_admit(self) -> bool:
        with self._cond:
            if self._admitted >= self.slots + self.queue:
                self.busy_answers += 1
                return False
            self._admitted += 1
            return True

    def _work(self) -> None:
        with self._cond:
            while self._running >= self.slots:
                self._cond.wait()
            self._running += 1
        try:
            time.sleep(self.delay)
        finally:
            with self._cond:
                self._running -= 1
                self.served += 1
                self._cond.notify_all()

    def _leave(self) -> None:
        with self._cond:
            self._admitted -= 1
            self._cond.notify_all()

    # --- connections ---------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        admitted = False
        with conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            decoder = FrameDecoder(max_payload=MAX_PAYLOAD, peer="client")
            try:
                frame = self._read_prefix(conn, decoder)
                kind = frame.type if frame is not None else decoder.incoming[0]
                if kind is FrameType.REQUEST:
                    admitted = self._try_admit()
                    if not admitted:
                        send_frame(conn, protocol.busy("", 1.0), secret=None, io_timeout=IO_TIMEOUT)
                        linger_close(conn)
                        return
                if frame is None:
                    frame = recv_frame(conn, decoder, io_timeout=IO_TIMEOUT)
                if frame.type is FrameType.PING:
                    reply = protocol.pong(id=frame.header.get("id", ""), slots=self.slots)
                else:
                    self._work()
                    reply = protocol.result(str(frame.header.get("id", "")), frame.payload,
                                            mime="image/png", format="png")
                send_frame(conn, reply, secret=None, io_timeout=IO_TIMEOUT)
            except (PeerClosed, StallTimeout, OSError):
                pass
            finally:
                if admitted:
                    self._leave()

    def _read_prefix(self, conn: socket.socket, decoder: FrameDecoder) -> protocol.Frame | None:
        """Read until the frame's type is known (the frame itself, if that already completed it)."""
        while decoder.incoming is None:
            conn.settimeout(IO_TIMEOUT)
            chunk = conn.recv(decoder.pending_bytes)
            if not chunk:
                raise PeerClosed("client left")
            for frame in decoder.feed(chunk):
                return frame
        return None
