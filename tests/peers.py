"""A stand-in backend for the API's side of the protocol: it answers whatever bytes a test gives it.

Tests of the API's client (``transport.exchange`` and the fan-out) point it at
a :class:`ReplyingPeer` to see what happens when a "backend" answers garbage,
a forged or stale frame, a reply for another request, or nothing in time.
"""

from __future__ import annotations

import socket
import threading
import time

from watercolor import protocol
from watercolor.errors import WatercolorError


class ReplyingPeer:
    """A loopback TCP server: on each connection it reads one frame, sends ``reply`` as it is,
    holds the connection ``stall`` seconds, then closes. ``answered`` counts the replies sent."""

    def __init__(self, reply: bytes = b"", *, stall: float = 0.0, read_timeout: float = 5.0) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.address = self.sock.getsockname()[:2]
        self.reply = reply
        self.stall = stall
        self.read_timeout = read_timeout
        self.answered = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # closed
                return
            with conn:
                try:
                    conn.settimeout(self.read_timeout)
                    _read_one_frame(conn)
                    conn.sendall(self.reply)
                    self.answered += 1
                    if self.stall:
                        time.sleep(self.stall)
                except (OSError, WatercolorError):
                    pass

    def close(self) -> None:
        self.sock.close()


def _read_one_frame(conn: socket.socket) -> None:
    """Read until one whole frame has arrived (or the client stops sending)."""
    decoder = protocol.FrameDecoder(max_payload=1 << 30, peer="client")
    while chunk := conn.recv(1 << 16):
        if next(decoder.feed(chunk), None) is not None:
            return
