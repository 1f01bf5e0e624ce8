"""Protocol fuzzing (hypothesis) against a live backend: no crash, no hang, no leaked slot.

The backend is a real :class:`ProcessServer` on a loopback port in this
process (so its admission counters can be read), with the ``lanczos`` model,
tiny images and a short I/O timeout. Hypothesis sends it random bytes,
frames with every prefix field chosen adversarially, JSON headers of any
shape, mutated valid frames, fragmented deliveries and early disconnects.
Every reply must be a frame with an expected type and never
``internal_error``; no exchange may outlive the timeouts; the server may log
no unexpected error. After each fuzz run the backend must still serve at
full capacity: ``WTC_SLOTS + WTC_QUEUE`` requests admitted at once, then all
answered, with ``running=0 waiting=0`` after.

A second part fuzzes the other direction: the API's client side
(:func:`transport.exchange` and the fan-out client) against a hostile
"backend" that answers garbage. WTC_TEST_LONG=1 runs ten times the examples.
"""

from __future__ import annotations

import io
import json
import logging
import socket
import struct
import threading
import time
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from peers import ReplyingPeer
from PIL import Image

from watercolor import errors, protocol, transport
from watercolor.config import load_settings
from watercolor.processing.process import REQUEST_DEADLINE_FACTOR, ProcessServer
from watercolor.protocol import MAGIC, PREFIX, FrameType

IO_TIMEOUT = 0.4
SLOTS, QUEUE = 2, 2
#: No exchange may take longer than a whole request's deadline plus this much slack.
HANG_SLACK = 3.0
HANG_LIMIT = IO_TIMEOUT * REQUEST_DEADLINE_FACTOR + HANG_SLACK
#: Codes a backend may answer a hostile frame with (never internal_error). "cancelled": the fuzzer
#: half-closes after sending, and a closed side is how a client cancels (docs/protocol.md).
FRAME_ERRORS = {"protocol_error", "unsupported_version", "payload_too_large", "auth_failed",
                "invalid_parameter", "unknown_model", "cancelled"}
IMAGE_ERRORS = {"corrupt_image", "unsupported_format", "empty_image", "image_too_large", "output_too_large"}
SECRET = b"fuzz-secret"


def _examples(long_run: bool, n: int) -> int:
    return n * 10 if long_run else n


def _tiny_png(size=(6, 4)) -> bytes:
    import skimage.data

    buffer = io.BytesIO()
    Image.fromarray(skimage.data.astronaut()[100:132, 200:248]).resize(size).save(buffer, "PNG")
    return buffer.getvalue()


PNG = _tiny_png()


class ErrorLog(logging.Handler):
    """Collects ERROR records of the backend: an unexpected exception is logged there."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class Live:
    def __init__(self, **overrides) -> None:
        values = {"process_host": "127.0.0.1", "process_port": 0, "threads": 1, "io_timeout": IO_TIMEOUT,
                  "slots": SLOTS, "queue": QUEUE, "max_image_bytes": 1 << 20, "max_input_pixels": 1 << 16,
                  "max_output_pixels": 1 << 18, "default_model": "lanczos", **overrides}
        self.settings = load_settings({}, **values)
        self.server = ProcessServer(self.settings)
        self.address = self.server.address
        self.secret = self.settings.shared_secret.encode() or None
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown(grace=5)


@pytest.fixture(scope="module")
def errors_logged() -> Iterator[ErrorLog]:
    handler = ErrorLog()
    logger = logging.getLogger("watercolor.process")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


@pytest.fixture(scope="module")
def live(errors_logged) -> Iterator[Live]:
    server = Live()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def signed(errors_logged) -> Iterator[Live]:
    server = Live(shared_secret=SECRET.decode())
    yield server
    server.stop()


# --- talking to the backend ----------------------------------------------------------------------------


def talk(address, data: bytes, *, pieces: list[int] | None = None, pause: float = 0.0, shut: bool = True,
         secret: bytes | None = None) -> protocol.Frame | None:
    """Send ``data`` (in ``pieces`` with ``pause`` between), read the reply; None if closed without one.

    Fails if the backend neither answers nor closes within :data:`HANG_LIMIT`.
    """
    started = time.monotonic()
    with socket.create_connection(address, timeout=HANG_LIMIT) as sock:
        try:
            at = 0
            for size in pieces or [len(data)]:
                sock.sendall(data[at:at + size])
                at += size
                if pause:
                    time.sleep(pause)
            sock.sendall(data[at:])
            if shut:
                sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the backend may answer and close before it has read everything
        decoder = protocol.FrameDecoder(max_payload=1 << 24, peer="backend", secret=secret)
        reply = None
        try:
            while True:
                reply = transport.recv_frame(sock, decoder, io_timeout=HANG_LIMIT)
                if reply.type is not FrameType.PROGRESS:
                    break
        except (transport.PeerClosed, ConnectionResetError):
            reply = None
        except (transport.StallTimeout, TimeoutError):
            pytest.fail(f"the backend neither answered nor closed within {HANG_LIMIT:.1f} s")
        assert time.monotonic() - started < HANG_LIMIT + 1, "the exchange outlived the timeouts"
        return reply


def assert_acceptable(reply: protocol.Frame | None, *, image_errors: bool = True) -> None:
    if reply is None:
        return  # the input was not a whole frame: closing without a reply is right
    assert reply.type in (FrameType.ERROR, FrameType.RESULT, FrameType.PONG, FrameType.BUSY), reply
    if reply.type is FrameType.ERROR:
        allowed = FRAME_ERRORS | (IMAGE_ERRORS if image_errors else set())
        assert reply.header.get("code") in allowed, reply.header
        assert isinstance(reply.header.get("message"), str) and reply.header["message"]


def assert_full_capacity(live: Live, errors_logged: ErrorLog) -> None:
    """Every slot and queue place can be taken at once, the next is refused, and all then finish."""
    deadline = time.monotonic() + HANG_LIMIT
    while live.server.admission.snapshot() != {"slots": SLOTS, "queue": QUEUE, "running": 0, "waiting": 0}:
        assert time.monotonic() < deadline, f"leaked: {live.server.admission.snapshot()}"
        time.sleep(0.05)
    def fresh() -> bytes:  # signed frames are fresh each time: a repeated one is a replay
        return protocol.encode_frame(protocol.request("cap", PNG, model="lanczos", scale=2), live.secret)

    held = []
    try:
        for _ in range(SLOTS + QUEUE):  # a REQUEST is admitted on its prefix: send all but the tail
            sock = socket.create_connection(live.address, timeout=10)
            frame = fresh()
            sock.sendall(frame[:-1])
            held.append((sock, frame[-1:]))
        while live.server.admission.snapshot()["waiting"] + live.server.admission.snapshot()["running"] \
                < SLOTS + QUEUE:
            assert time.monotonic() < deadline + 5, live.server.admission.snapshot()
            time.sleep(0.01)
        one_more = talk(live.address, fresh(), secret=live.secret, shut=False)
        assert one_more is not None and one_more.type is FrameType.BUSY, one_more
        replies = []
        for sock, tail in held:
            sock.sendall(tail)
        for sock, _ in held:
            decoder = protocol.FrameDecoder(max_payload=1 << 24, peer="backend", secret=live.secret)
            replies.append(transport.recv_frame(sock, decoder, io_timeout=10))
        assert [r.type for r in replies] == [FrameType.RESULT] * (SLOTS + QUEUE)
        assert Image.open(io.BytesIO(replies[0].payload)).size == (12, 8)
    finally:
        for sock, _ in held:
            sock.close()
    deadline = time.monotonic() + 5
    while live.server.admission.snapshot()["waiting"] or live.server.admission.snapshot()["running"]:
        assert time.monotonic() < deadline, live.server.admission.snapshot()
        time.sleep(0.02)
    assert live.thread.is_alive(), "the accept loop died"
    crashes = [r.getMessage() + (f" {r.exc_info[1]!r}" if r.exc_info else "") for r in errors_logged.records]
    assert not crashes, crashes


# --- strategies ----------------------------------------------------------------------------------------

FIELD_EDGES = st.sampled_from([0, 1, 2, 19, 20, 21, 64, 65535, 65536, 65537, 2**31 - 1, 2**31, 2**32 - 1])
LENGTH_EDGES = st.sampled_from([0, 1, 100, 1 << 20, (1 << 20) + 1, 2**31, 2**32, 2**63 - 1, 2**63, 2**64 - 1])

json_scalars = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True)
                | st.text(max_size=20) | st.sampled_from(["lanczos", "png", "jpeg", "same", "upscale", ""]))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
HEADER_KEYS = ["op", "id", "model", "scale", "format", "quality", "options", "tile_size", "progress", "ts",
               "nonce"]
headers = st.dictionaries(st.sampled_from(HEADER_KEYS) | st.text(max_size=10), json_values, max_size=8)


@st.composite
def prefixes(draw) -> bytes:
    """A 20-byte prefix whose every field is drawn, leaning towards valid values and edges."""
    magic = draw(st.sampled_from([MAGIC, MAGIC, MAGIC, b"WTD", b"\0\0\0", b"GET"]))
    version = draw(st.sampled_from([1, 1, 1, 0, 2, 255]) | st.integers(0, 255))
    ftype = draw(st.sampled_from([int(t) for t in FrameType]) | st.integers(0, 255))
    flags = draw(st.sampled_from([0, 0, 1, 2, 0x80, 0xFF]))
    reserved = draw(st.sampled_from([0, 0, 1, 0xFFFF]))
    hlen = draw(FIELD_EDGES | st.integers(0, 300))
    plen = draw(LENGTH_EDGES | st.integers(0, 300))
    return PREFIX.pack(magic, version, ftype, flags, reserved, hlen, plen)


@st.composite
def frames_with_drawn_prefix(draw) -> bytes:
    prefix = draw(prefixes())
    body = draw(st.binary(max_size=300))
    return prefix + body


@st.composite
def requests_with_drawn_headers(draw) -> bytes:
    header = draw(headers)
    raw = json.dumps(header, allow_nan=True).encode()
    payload = draw(st.sampled_from([PNG, PNG, b"", b"not an image", PNG[:40]]))
    ftype = draw(st.sampled_from([FrameType.REQUEST, FrameType.REQUEST, FrameType.PING]))
    return PREFIX.pack(MAGIC, 1, int(ftype), 0, 0, len(raw), len(payload)) + raw + payload


HOSTILE_HEADER_TEXTS = [
    b"[" * 100_000 + b"]" * 100_000,  # deeper than the JSON parser recurses
    b'{"scale": ' + b"1" * 5000 + b"}",  # more digits than Python converts to int
    b'{"scale": 1e999, "quality": 1e999}',
    b'{"quality": Infinity}', b'{"tile_size": -Infinity}', b'{"quality": NaN}',
    b'{"id": "' + b"x" * 60000 + b'"}',
    ('{"model": "' + "\u2028" * 20000 + '"}').encode(),  # quoted in the error, it would outgrow a header
    b"\xff\xfe{}", b'{"a": "\\ud800"}', b"null", b"[]", b'"string"', b"1", b"",
]


@st.composite
def requests_with_raw_headers(draw) -> bytes:
    raw = draw(st.sampled_from(HOSTILE_HEADER_TEXTS) | st.binary(max_size=200)
               | st.text(max_size=200).map(str.encode))
    return PREFIX.pack(MAGIC, 1, int(FrameType.REQUEST), 0, 0, len(raw), len(PNG)) + raw + PNG


def _valid_frames(secret: bytes | None = None) -> list[bytes]:
    request = protocol.request("v", PNG, model="lanczos", scale=2, progress=True)
    return [protocol.encode_frame(request, secret), protocol.encode_frame(protocol.ping("p"), secret)]


#: Signed frames made once, so hypothesis sees the same lengths on every draw.
SIGNED_FRAMES = _valid_frames(SECRET)


@st.composite
def mutated_frames(draw, secret: bytes | None = None) -> bytes:
    data = bytearray(draw(st.sampled_from(SIGNED_FRAMES if secret else _valid_frames())))
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["flip", "flip", "cut", "insert", "delete", "append", "double"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if action == "flip" and data:
            data[at] ^= draw(st.integers(1, 255))
        elif action == "cut":
            del data[at:]
        elif action == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif action == "delete":
            del data[at:at + draw(st.integers(1, 16))]
        elif action == "append":
            data += draw(st.binary(min_size=1, max_size=64))
        elif action == "double":
            data.extend(bytes(data))
    return bytes(data)


def _fuzz_settings(long_run: bool, n: int) -> settings:
    return settings(max_examples=_examples(long_run, n), deadline=None, database=None, derandomize=False,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                           HealthCheck.data_too_large])


# --- the fuzz runs ---------------------------------------------------------------------------------------


def test_random_bytes(live, errors_logged, long_run):
    @_fuzz_settings(long_run, 150)
    @given(st.binary(max_size=400) | st.binary(max_size=40).map(lambda b: MAGIC + b))
    def run(data):
        assert_acceptable(talk(live.address, data))

    run()
    assert_full_capacity(live, errors_logged)


def test_every_prefix_field(live, errors_logged, long_run):
    """Wrong magic, versions, types, flags; header and payload lengths up to 2^64-1."""
    @_fuzz_settings(long_run, 200)
    @given(frames_with_drawn_prefix())
    def run(data):
        reply = talk(live.address, data)
        assert_acceptable(reply)
        magic, version, ftype, flags, _, hlen, plen = PREFIX.unpack_from(data)
        if magic == MAGIC and version != 1:
            assert reply is not None and reply.header["code"] == "unsupported_version", reply
        elif magic == MAGIC and ftype in {1, 2} and flags == 0 and hlen <= 65536 and plen > 1 << 20:
            assert reply is not None and reply.header["code"] == "payload_too_large", reply

    run()
    assert_full_capacity(live, errors_logged)


def test_json_headers_of_any_shape(live, errors_logged, long_run):
    @_fuzz_settings(long_run, 200)
    @given(requests_with_drawn_headers())
    def run(data):
        reply = talk(live.address, data)
        assert reply is not None, "a whole frame deserves an answer"
        assert_acceptable(reply)

    run()
    assert_full_capacity(live, errors_logged)


def test_hostile_header_texts(live, errors_logged, long_run):
    """Deep nesting, giant numbers, infinities, bad UTF-8 and non-objects as the JSON header."""
    for raw in HOSTILE_HEADER_TEXTS:
        data = PREFIX.pack(MAGIC, 1, int(FrameType.REQUEST), 0, 0, len(raw), len(PNG)) + raw + PNG
        reply = talk(live.address, data)
        assert reply is not None and reply.type in (FrameType.ERROR, FrameType.RESULT), (raw[:40], reply)
        assert_acceptable(reply, image_errors=False)

    @_fuzz_settings(long_run, 100)
    @given(requests_with_raw_headers())
    def run(data):
        assert_acceptable(talk(live.address, data), image_errors=False)

    run()
    assert_full_capacity(live, errors_logged)


def test_mutated_valid_frames(live, errors_logged, long_run):
    @_fuzz_settings(long_run, 200)
    @given(mutated_frames())
    def run(data):
        assert_acceptable(talk(live.address, data))

    run()
    assert_full_capacity(live, errors_logged)


def test_fragmented_delivery_gets_the_same_answer(live, errors_logged, long_run):
    frame = _valid_frames()[0]

    @_fuzz_settings(long_run, 40)
    @given(st.lists(st.integers(1, 64), min_size=1, max_size=12), st.sampled_from([0.0, 0.0, 0.002, 0.02]))
    def run(pieces, pause):
        reply = talk(live.address, frame, pieces=pieces, pause=pause, shut=False)
        assert reply is not None and reply.type is FrameType.RESULT, reply
        assert Image.open(io.BytesIO(reply.payload)).size == (12, 8)

    run()
    assert_full_capacity(live, errors_logged)


def test_early_disconnects_at_every_stage(live, errors_logged, long_run):
    """A client that leaves after n bytes - abruptly (RST) or politely (FIN) - costs nothing lasting."""
    frame = _valid_frames()[0]
    cuts = sorted({1, 19, 20, 21, 40, len(frame) // 2, len(frame) - 1} | set(range(0, len(frame), 97)))
    for cut in cuts:
        for abrupt in (False, True):
            sock = socket.create_connection(live.address, timeout=5)
            sock.sendall(frame[:cut])
            if abrupt:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
    # ... and one that sends a whole request and leaves before the answer.
    for _ in range(SLOTS + QUEUE + 2):
        with socket.create_connection(live.address, timeout=5) as sock:
            sock.sendall(frame)
    assert_full_capacity(live, errors_logged)


def test_slow_senders_are_cut_off_by_the_timeouts(live, errors_logged):
    """Silent after the prefix, trickling one byte per half timeout, or never sending a byte."""
    frame = _valid_frames()[0]
    started = time.monotonic()
    # Silent after part of the frame: the read stalls and the backend closes without an answer.
    assert talk(live.address, frame[:30], shut=False) is None
    # Trickling: every read makes progress, but the whole request has a deadline.
    with socket.create_connection(live.address, timeout=HANG_LIMIT) as sock:
        sock.sendall(frame[:20])
        end = time.monotonic() + HANG_LIMIT
        cut_off = False
        for byte in frame[20:]:
            if _peer_closed(sock):
                cut_off = True
                break
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                cut_off = True
                break
            assert time.monotonic() < end, "a trickling client kept its connection past the deadline"
            time.sleep(IO_TIMEOUT / 2)
        assert cut_off, "the trickling client was never cut off"
    # Connected, never sends: closed after one I/O timeout.
    assert talk(live.address, b"", shut=False) is None
    assert time.monotonic() - started < 3 * HANG_LIMIT
    assert_full_capacity(live, errors_logged)


def _peer_closed(sock: socket.socket) -> bool:
    import select

    if not select.select([sock], [], [], 0)[0]:
        return False
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except ConnectionResetError:
        return True


def test_more_connections_than_the_backend_serves(live, errors_logged):
    """Beyond slots + queue + 32 open connections, a new one is answered BUSY without being read."""
    idle = [socket.create_connection(live.address, timeout=5) for _ in range(live.server.max_connections)]
    try:
        time.sleep(0.1)
        reply = talk(live.address, _valid_frames()[1])
        assert reply is not None and reply.type is FrameType.BUSY, reply
        assert reply.header["reason"] == "too many connections"
    finally:
        for sock in idle:
            sock.close()
    time.sleep(IO_TIMEOUT)
    assert talk(live.address, _valid_frames()[1]).type is FrameType.PONG
    assert_full_capacity(live, errors_logged)


def test_signed_backend_refuses_everything_but_valid_fresh_signatures(signed, errors_logged, long_run):
    """With a shared secret: mutated, unsigned, wrongly signed and replayed frames get auth_failed."""
    good = _valid_frames(SECRET)[0]
    assert talk(signed.address, good, secret=SECRET, shut=False).type is FrameType.RESULT
    replay = talk(signed.address, good, secret=SECRET, shut=False)
    assert replay.type is FrameType.ERROR and replay.header["code"] == "auth_failed"

    @_fuzz_settings(long_run, 120)
    @given(mutated_frames(SECRET) | mutated_frames(None) | requests_with_drawn_headers())
    def run(data):
        reply = talk(signed.address, data, secret=SECRET)
        assert_acceptable(reply)
        if reply is not None and not any(data.startswith(f) for f in SIGNED_FRAMES):
            # Nothing but a valid signature gets past: a mutated frame never gets a result.
            assert reply.type in (FrameType.ERROR, FrameType.BUSY), reply
            if reply.type is FrameType.ERROR:
                assert reply.header["code"] in ("auth_failed", "protocol_error", "unsupported_version",
                                                "payload_too_large"), reply.header

    run()
    assert_full_capacity(signed, errors_logged)


# --- the other direction: the API's client against a hostile backend ---------------------------------


@pytest.fixture(scope="module")
def hostile_peer() -> Iterator[ReplyingPeer]:
    peer = ReplyingPeer(read_timeout=2)
    yield peer
    peer.close()


CLIENT_ERRORS = (errors.WatercolorError, transport.PeerClosed, transport.StallTimeout)


@st.composite
def replies(draw) -> bytes:
    result = protocol.result("x", PNG, width=6, height=4, format="png", mime="image/png")
    busy = protocol.encode_frame(protocol.progress("x", 1, 2)) + protocol.encode_frame(protocol.busy("x", 1))
    good = [protocol.encode_frame(result), busy,
            protocol.encode_frame(protocol.error("x", "corrupt_image", "bad"))]
    return draw(st.binary(max_size=200) | st.sampled_from(good).flatmap(
        lambda g: st.integers(0, len(g)).map(lambda cut: g[:cut])) | frames_with_drawn_prefix()
        | st.sampled_from(good).flatmap(lambda g: st.integers(0, len(g) - 1).flatmap(
            lambda at: st.integers(1, 255).map(lambda x: g[:at] + bytes([g[at] ^ x]) + g[at + 1:]))))


def test_the_api_client_survives_a_hostile_backend(hostile_peer, long_run):
    """exchange() raises only its documented errors; the fan-out client turns each into an image error."""
    from watercolor.api.common.backends import Backends
    from watercolor.api.common.metrics import Metrics
    from watercolor.params import Params

    settings = load_settings({}, process_backends=f"127.0.0.1:{hostile_peer.address[1]}", api_retries=0,
                             io_timeout=IO_TIMEOUT, max_output_pixels=1 << 16)
    client = Backends(settings, Metrics())
    params = Params("lanczos", 2.0)

    @_fuzz_settings(long_run, 50)
    @given(replies(), st.sampled_from([False, False, False, True]))
    def run(reply, stall):
        hostile_peer.reply, hostile_peer.stall = reply, IO_TIMEOUT * 3 if stall else 0
        started = time.monotonic()
        try:
            transport.exchange(hostile_peer.address, protocol.ping("x"), io_timeout=IO_TIMEOUT,
                               max_reply=1 << 16)
        except CLIENT_ERRORS:
            pass
        assert time.monotonic() - started < HANG_LIMIT
        # A busy answer is retried until the deadline: that bounds the fan-out client.
        deadline = time.monotonic() + 1.5
        outcome = client.upscale(PNG, params, deadline=deadline, request_id="fuzz")
        if not outcome.ok and outcome.error.status == 500:
            # Only a well-formed ERROR naming internal_error, an unknown code or a broken link is a 500.
            assert _first_frame_type(reply) is FrameType.ERROR, outcome.error
        assert time.monotonic() < deadline + HANG_LIMIT

    run()


def _first_frame_type(data: bytes) -> FrameType | None:
    decoder = protocol.FrameDecoder(max_payload=1 << 16, peer="backend")
    try:
        for frame in decoder.feed(data):
            if frame.type is not FrameType.PROGRESS:
                return frame.type
    except errors.WatercolorError:
        return None
    return None


@pytest.mark.parametrize("retry_after", [b"Infinity", b"-Infinity", b"NaN", b"1e308", b"-1", b"0", b'"soon"',
                                         b"2.5"])
def test_a_busy_answer_with_any_retry_after_is_a_clean_503(hostile_peer, retry_after):
    """Numbers off the wire are range-checked before they become a Retry-After header."""
    from watercolor.api import create_app

    header = b'{"id":"x","reason":"busy","retry_after":' + retry_after + b"}"
    hostile_peer.reply = PREFIX.pack(MAGIC, 1, int(FrameType.BUSY), 0, 0, len(header), 0) + header
    hostile_peer.stall = 0
    settings = load_settings({}, process_backends=f"127.0.0.1:{hostile_peer.address[1]}", api_deadline=1)
    response = create_app(settings).test_client().post("/v1/upscale?model=lanczos", data=PNG,
                                                       content_type="image/png")
    assert response.status_code == 503, response.data[:200]
    assert response.get_json()["error"]["code"] == "backend_busy"
    assert 1 <= int(response.headers["Retry-After"]) <= 3600
