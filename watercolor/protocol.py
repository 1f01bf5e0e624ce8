"""The wire protocol between the API and the processing backends (TCP 32017).

Theory of operation
-------------------
Every message is one *frame*: a fixed 20-byte prefix, a small JSON header and
raw payload bytes (the image, never base64), optionally followed by a 32-byte
HMAC-SHA256 tag. The prefix says how long the header and payload are, so a
receiver checks both lengths against its limits *before* it buffers a byte of
them. ``docs/protocol.md`` documents the bytes.

This module does no I/O, in the manner of h11: :func:`encode_frame` turns a
frame into bytes and :class:`FrameDecoder` turns bytes fed to it into frames,
handing one out only once it is complete. The socket adapters live in
:mod:`watercolor.transport`. Errors say which side broke the protocol.

A connection carries one exchange: the client sends a REQUEST (or a PING); the
backend answers with zero or more PROGRESS frames and then exactly one final
frame (RESULT, ERROR, BUSY or PONG), and the connection closes. One image per
connection is what lets a Kubernetes Service, which balances per connection,
spread a batch across pods.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
import os
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from watercolor.errors import AuthenticationFailed, ProtocolError

MAGIC = b"WTC"
VERSION = 1
PREFIX = struct.Struct(">3sBBBHIQ")  # magic, version, type, flags, reserved, header_len, payload_len
PREFIX_SIZE = PREFIX.size  # 20
MAC_SIZE = 32
FLAG_MAC = 0x01
KNOWN_FLAGS = FLAG_MAC

MAX_HEADER_BYTES = 64 * 1024
#: How far a signed frame's timestamp may be from the receiver's clock.
MAX_CLOCK_SKEW = 60.0
MAX_ID_CHARS = 64  # a backend echoes at most this much of a request id in its replies


class FrameType(enum.IntEnum):
    # client -> backend
    REQUEST = 0x01
    PING = 0x02
    # backend -> client
    RESULT = 0x81
    ERROR = 0x82
    BUSY = 0x83
    PROGRESS = 0x84
    PONG = 0x85


FINAL_REPLIES = frozenset({FrameType.RESULT, FrameType.ERROR, FrameType.BUSY, FrameType.PONG})


@dataclass
class Frame:
    type: FrameType
    header: dict[str, Any] = field(default_factory=dict)
    payload: bytes = b""


def encode_frame(frame: Frame, secret: bytes | None = None, *, now: float | None = None) -> bytes:
    """Serialise a frame; with a ``secret`` it is signed (timestamp, nonce and HMAC tag)."""
    header = dict(frame.header)
    flags = 0
    if secret:
        flags |= FLAG_MAC
        header["ts"] = time.time() if now is None else now
        header["nonce"] = os.urandom(12).hex()
    header_bytes = json.dumps(header, separators=(",", ":"), allow_nan=False).encode()
    if len(header_bytes) > MAX_HEADER_BYTES:
        raise ProtocolError(f"local: header of {len(header_bytes)} bytes is over the limit")
    prefix = PREFIX.pack(MAGIC, VERSION, int(frame.type), flags, 0, len(header_bytes),
                         len(frame.payload))
    parts = [prefix, header_bytes, bytes(frame.payload)]
    if secret:
        mac = hmac.new(secret, digestmod=hashlib.sha256)
        for part in parts:
            mac.update(part)
        parts.append(mac.digest())
    return b"".join(parts)


class ReplayGuard:
    """Remembers nonces of signed frames for the clock-skew window, refusing a second use."""

    def __init__(self, window: float = MAX_CLOCK_SKEW, max_entries: int = 100_000) -> None:
        self.window = window
        self.max_entries = max_entries
        self._seen: dict[str, float] = {}

    def check(self, header: dict[str, Any], now: float | None = None) -> None:
        now = time.time() if now is None else now
        ts, nonce = header.get("ts"), header.get("nonce")
        if not isinstance(ts, int | float) or not isinstance(nonce, str) or not nonce:
            raise AuthenticationFailed("signed frame lacks a timestamp or nonce")
        if abs(now - ts) > self.window:
            raise AuthenticationFailed("signed frame is too old or from the future")
        if len(self._seen) >= self.max_entries or (self._seen and len(self._seen) % 1024 == 0):
            self._seen = {n: t for n, t in self._seen.items() if now - t <= self.window}
            if len(self._seen) >= self.max_entries:
                raise AuthenticationFailed("too many signed frames in the replay window")
        if nonce in self._seen:
            raise AuthenticationFailed("replayed frame")
        self._seen[nonce] = now


class FrameDecoder:
    """Incremental decoder: feed bytes, take complete frames.

    ``peer`` names the other side in error messages ("client" or "backend").
    With a ``secret``, frames without a valid tag are refused; without one,
    signed frames are accepted and their tag ignored.
    """

    def __init__(self, *, max_payload: int, peer: str = "peer", secret: bytes | None = None,
                 max_header: int = MAX_HEADER_BYTES, replay_guard: ReplayGuard | None = None):
        self.max_payload = max_payload
        self.max_header = max_header
        self.peer = peer
        self.secret = secret or None
        self.replay_guard = replay_guard
        self._buf = bytearray()
        self._prefix: tuple[int, int, int, int] | None = None  # type, flags, header_len, payload_len

    def _fail(self, what: str) -> ProtocolError:
        return ProtocolError(f"{self.peer} broke the protocol: {what}")

    @property
    def buffered(self) -> int:
        return len(self._buf)

    @property
    def incoming(self) -> tuple[FrameType, int] | None:
        """Type and payload length of the frame being received, once its prefix is checked.

        Lets a server decide admission (or refuse) before it buffers a large payload.
        """
        if self._prefix is None:
            return None
        return FrameType(self._prefix[0]), self._prefix[3]

    @property
    def pending_bytes(self) -> int:
        """How many more bytes the frame in progress needs (at least 1 while idle)."""
        if self._prefix is None:
            return max(1, PREFIX_SIZE - len(self._buf))
        _, flags, hlen, plen = self._prefix
        total = PREFIX_SIZE + hlen + plen + (MAC_SIZE if flags & FLAG_MAC else 0)
        return max(1, total - len(self._buf))

    def feed(self, data: bytes) -> Iterator[Frame]:
        """Add bytes; yield every frame they complete. Raises on the first protocol violation."""
        self._buf += data
        while True:
            frame = self._next()
            if frame is None:
                return
            yield frame

    def _parse_prefix(self) -> None:
        magic, version, ftype, flags, _reserved, hlen, plen = PREFIX.unpack_from(self._buf)
        if magic != MAGIC:
            raise self._fail("bad magic (not a Watercolor frame)")
        if version != VERSION:
            raise ProtocolError(
                f"{self.peer} speaks protocol version {version}; this side speaks {VERSION}",
                code="unsupported_version",
            )
        try:
            FrameType(ftype)
        except ValueError:
            raise self._fail(f"unknown frame type 0x{ftype:02x}") from None
        if flags & ~KNOWN_FLAGS:
            raise self._fail(f"unknown flags 0x{flags:02x}")
        if hlen > self.max_header:
            raise self._fail(f"header length {hlen} is over the limit of {self.max_header}")
        if plen > self.max_payload:
            raise ProtocolError(
                f"payload length {plen} is over the limit of {self.max_payload} bytes",
                code="payload_too_large",
            )
        if self.secret and not flags & FLAG_MAC:
            raise AuthenticationFailed("frame is not signed and a shared secret is required")
        self._prefix = (ftype, flags, hlen, plen)

    def _next(self) -> Frame | None:
        if self._prefix is None:
            if len(self._buf) < PREFIX_SIZE:
                return None
            self._parse_prefix()
        assert self._prefix is not None
        ftype, flags, hlen, plen = self._prefix
        maclen = MAC_SIZE if flags & FLAG_MAC else 0
        total = PREFIX_SIZE + hlen + plen + maclen
        if len(self._buf) < total:
            return None
        raw = memoryview(self._buf)
        body_end = PREFIX_SIZE + hlen + plen
        if self.secret:
            expected = hmac.new(self.secret, raw[:body_end], hashlib.sha256).digest()
            if not hmac.compare_digest(expected, bytes(raw[body_end:total])):
                raw.release()
                raise AuthenticationFailed("frame signature does not match")
        header_bytes = bytes(raw[PREFIX_SIZE:PREFIX_SIZE + hlen])
        payload = bytes(raw[PREFIX_SIZE + hlen:body_end])
        raw.release()
        del self._buf[:total]
        self._prefix = None
        try:
            header = json.loads(header_bytes) if header_bytes else {}
        except (ValueError, RecursionError):
            # JSONDecodeError and UnicodeDecodeError are ValueErrors, and so is an integer of more
            # digits than Python converts; nesting deeper than the parser recurses is a RecursionError.
            raise self._fail("header is not valid JSON") from None
        if not isinstance(header, dict):
            raise self._fail("header is not a JSON object")
        if self.secret and self.replay_guard is not None:
            self.replay_guard.check(header)
        return Frame(FrameType(ftype), header, payload)


# --- the messages ------------------------------------------------------------------------


def request(request_id: str, image: bytes, *, model: str, scale: float, fmt: str | None = None,
            quality: int | None = None, options: dict[str, Any] | None = None,
            tile_size: int | None = None, progress: bool = False) -> Frame:
    header: dict[str, Any] = {"op": "upscale", "id": request_id, "model": model, "scale": scale,
                              "progress": progress}
    if fmt:
        header["format"] = fmt
    if quality is not None:
        header["quality"] = quality
    if options:
        header["options"] = options
    if tile_size:
        header["tile_size"] = tile_size
    return Frame(FrameType.REQUEST, header, image)


def ping(request_id: str = "") -> Frame:
    return Frame(FrameType.PING, {"id": request_id})


def pong(**info: Any) -> Frame:
    return Frame(FrameType.PONG, info)


def result(request_id: str, image: bytes, **info: Any) -> Frame:
    return Frame(FrameType.RESULT, {"id": request_id, **info}, image)


def error(request_id: str, code: str, message: str) -> Frame:
    return Frame(FrameType.ERROR, {"id": request_id, "code": code, "message": message})


def busy(request_id: str, retry_after: float, reason: str = "busy") -> Frame:
    return Frame(FrameType.BUSY, {"id": request_id, "retry_after": retry_after, "reason": reason})


def progress(request_id: str, done: int, total: int) -> Frame:
    return Frame(FrameType.PROGRESS, {"id": request_id, "done": done, "total": total})
