"""The processing backend as a live server on a loopback port, with real models."""

from __future__ import annotations

import io
import json
import socket
import struct
import threading
import time

import pytest
from PIL import Image

from watercolor import protocol, transport
from watercolor.config import load_settings
from watercolor.errors import BackendUnavailable
from watercolor.params import output_size
from watercolor.processing.process import ProcessServer
from watercolor.protocol import FrameType

SECRET = "test-secret"


def png_bytes(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


class LiveServer:
    def __init__(self, **overrides):
        settings = load_settings({}, process_host="127.0.0.1", process_port=0, threads=1,
                                 **overrides)
        self.settings = settings
        self.server = ProcessServer(settings)
        self.address = self.server.address
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.secret = settings.shared_secret.encode() if settings.shared_secret else None

    def call(self, image: bytes, *, model="lanczos", scale=2, progress=None, **kw):
        frame = protocol.request("t", image, model=model, scale=scale, progress=progress is not None,
                                 **kw)
        return transport.exchange(self.address, frame, secret=self.secret, io_timeout=30,
                                  on_progress=progress)

    def ping(self):
        return transport.exchange(self.address, protocol.ping("p"), secret=self.secret, io_timeout=5)

    def raw(self, data: bytes, *, shut: bool = True, timeout: float = 10) -> protocol.Frame:
        """Send raw bytes and read the reply frame."""
        with socket.create_connection(self.address, timeout=timeout) as sock:
            sock.sendall(data)
            if shut:
                try:
                    sock.shutdown(socket.SHUT_WR)
                except OSError:  # the backend may already have answered and closed
                    pass
            decoder = protocol.FrameDecoder(max_payload=1 << 30, peer="backend", secret=self.secret)
            return transport.recv_frame(sock, decoder, io_timeout=timeout)

    def stop(self):
        self.server.shutdown(grace=5)


@pytest.fixture(scope="module")
def server():
    live = LiveServer(io_timeout=1.0, max_input_pixels=4_000_000, max_output_pixels=20_000_000,
                      slots=1, queue=4)
    yield live
    live.stop()


@pytest.fixture(scope="module")
def photo(request) -> Image.Image:
    import skimage.data

    return Image.fromarray(skimage.data.astronaut()).crop((180, 40, 244, 88))  # 64x48 face


def assert_serves(server, photo):
    reply = server.call(png_bytes(photo), model="lanczos", scale=2)
    assert reply.type is FrameType.RESULT, reply.header
    assert Image.open(io.BytesIO(reply.payload)).size == (128, 96)


def truncated_jpeg(photo) -> bytes:
    data = png_bytes(photo.resize((256, 192)), "JPEG")
    return data[: int(len(data) * 0.7)]


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height (a decompression bomb's shape)."""
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (1 + 3 * 64) * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("make", "kw", "code"),
    [
        (lambda p: b"", {}, "empty_image"),
        (lambda p: b"hello, I am a text file named photo.jpg\n" * 20, {}, "unsupported_format"),
        (truncated_jpeg, {}, "corrupt_image"),
        (lambda p: png_declaring(13500, 13500), {}, "image_too_large"),
        (lambda p: png_bytes(p), {"scale": 8, "model": "lanczos", "tile_size": None}, None),
        (lambda p: png_bytes(p.resize((1024, 1024))), {"scale": 8}, "output_too_large"),
        (lambda p: png_bytes(p), {"model": "no-such-model"}, "unknown_model"),
        (lambda p: png_bytes(p), {"scale": 0}, "invalid_parameter"),
        (lambda p: png_bytes(p), {"scale": -2}, "invalid_parameter"),
        (lambda p: png_bytes(p), {"scale": 100}, "invalid_parameter"),
        (lambda p: png_bytes(p), {"scale": "big"}, "invalid_parameter"),
        (lambda p: png_bytes(p), {"options": {"denoise": 9}, "model": "waifu2x-photo"},
         "invalid_parameter"),
    ],
    ids=["zero-bytes", "text-named-jpg", "jpeg-cut-70pct", "png-13500x13500", "scale-8-ok",
         "over-output-cap", "unknown-model", "scale-0", "scale-negative", "scale-100", "scale-text",
         "bad-option"],
)
def test_bad_input_gets_a_specific_code_and_the_server_keeps_serving(server, photo, make, kw, code):
    kw = {k: v for k, v in kw.items() if v is not None}
    reply = server.call(make(photo), **kw)
    if code is None:
        assert reply.type is FrameType.RESULT
    else:
        assert reply.type is FrameType.ERROR, reply.header
        assert reply.header["code"] == code, reply.header
        assert reply.header["message"]
    assert_serves(server, photo)


def _raw_request(header: bytes, payload: bytes = b"", plen: int | None = None) -> bytes:
    plen = len(payload) if plen is None else plen
    return struct.pack(">3sBBBHIQ", b"WTC", 1, 1, 0, 0, len(header), plen) + header + payload


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (_raw_request(b"{}", plen=2**63), "payload_too_large"),
        (_raw_request(b"{not json"), "protocol_error"),
        (_raw_request(b'{"model":"lanczos","scale":NaN}', b"x"), "invalid_parameter"),
        (_raw_request(b'{"model":"lanczos","scale":Infinity}', b"x"), "invalid_parameter"),
        (_raw_request(b'{"op":"delete-everything"}', b"x"), "protocol_error"),
        (b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n", "protocol_error"),
        (struct.pack(">3sBBBHIQ", b"WTC", 7, 1, 0, 0, 2, 0) + b"{}", "unsupported_version"),
        (protocol.encode_frame(protocol.result("x", b"img")), "protocol_error"),
        # Only a REQUEST carries a payload: a PING declaring 50 MB is refused at its prefix.
        (struct.pack(">3sBBBHIQ", b"WTC", 1, 2, 0, 0, 2, 50 << 20) + b"{}", "protocol_error"),
    ],
    ids=["length-2^63", "header-not-json", "scale-nan", "scale-inf", "unknown-op", "http-at-tcp-port",
         "wrong-version", "reply-frame-sent-as-request", "ping-with-a-payload"],
)
def test_malformed_frames(server, photo, data, code):
    reply = server.raw(data)
    assert reply.type is FrameType.ERROR
    assert reply.header["code"] == code, reply.header
    assert_serves(server, photo)


def test_silent_client_times_out_and_frees_its_place(server, photo):
    socks = [socket.create_connection(server.address) for _ in range(8)]
    try:
        time.sleep(server.settings.io_timeout * 1.5)
        assert_serves(server, photo)
    finally:
        for s in socks:
            s.close()


def test_client_vanishing_mid_upload_frees_the_slot(server, photo):
    data = protocol.encode_frame(protocol.request("gone", png_bytes(photo), model="lanczos", scale=2))
    for _ in range(8):  # more than slots + queue: a leaked place would show as busy
        with socket.create_connection(server.address) as sock:
            sock.sendall(data[: len(data) // 2])
    deadline = time.monotonic() + 10
    while server.server.admission.admitted and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.server.admission.admitted == 0, "a vanished client kept its place"
    assert_serves(server, photo)


@pytest.mark.parametrize(
    ("model", "scale"),
    [("realesr-animevideov3", 2), ("waifu2x-photo", 2), ("realcugan", 3), ("lanczos", 1.5)],
)
@pytest.mark.parametrize("size", [(1, 1), (2, 2), (33, 17), (1, 40)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_tiny_and_odd_images_get_exact_sizes(server, photo, model, scale, size):
    reply = server.call(png_bytes(photo.resize(size)), model=model, scale=scale)
    assert reply.type is FrameType.RESULT, reply.header
    out = Image.open(io.BytesIO(reply.payload))
    assert out.size == output_size(*size, scale)
    assert (reply.header["width"], reply.header["height"]) == out.size


def test_progress_frames_count_tiles_up_to_the_total(server, photo):
    seen = []
    reply = server.call(png_bytes(photo), model="realesr-animevideov3", scale=2, tile_size=16,
                        progress=lambda d, t: seen.append((d, t)))
    assert reply.type is FrameType.RESULT
    assert seen and seen[-1][0] == seen[-1][1] > 1
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_one_slot_no_queue_answers_busy_at_once_and_ping_during_inference(photo):
    live = LiveServer(slots=1, queue=0)
    try:
        slow = png_bytes(photo.resize((96, 96)))
        first: dict = {}
        worker = threading.Thread(target=lambda: first.update(
            reply=live.call(slow, model="realesrgan-x4plus", scale=4, tile_size=48,
                            progress=lambda done, total: None)))
        worker.start()
        deadline = time.monotonic() + 30
        while live.server.admission.snapshot()["running"] == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        second = live.call(png_bytes(photo), model="lanczos", scale=2)
        pong = live.ping()
        still_running = live.server.admission.snapshot()["running"] == 1
        worker.join(120)
        assert second.type is FrameType.BUSY and second.header["reason"] == "busy"
        assert pong.type is FrameType.PONG and pong.header["running"] == 1
        assert still_running, "the first request must still be running when busy and pong arrive"
        assert first["reply"].type is FrameType.RESULT
        assert Image.open(io.BytesIO(first["reply"].payload)).size == (384, 384)
    finally:
        live.stop()


def test_shared_secret_refuses_missing_wrong_and_replayed_signatures(photo):
    live = LiveServer(shared_secret=SECRET)
    try:
        good = protocol.encode_frame(protocol.request("a", png_bytes(photo), model="lanczos", scale=2),
                                     SECRET.encode())
        assert live.raw(good, shut=False).type is FrameType.RESULT
        replay = live.raw(good, shut=False)
        assert (replay.type, replay.header["code"]) == (FrameType.ERROR, "auth_failed")
        unsigned = protocol.encode_frame(protocol.ping("u"))
        assert live.raw(unsigned).header["code"] == "auth_failed"
        wrong = protocol.encode_frame(protocol.ping("w"), b"not-the-secret")
        assert live.raw(wrong).header["code"] == "auth_failed"
        assert live.ping().type is FrameType.PONG
    finally:
        live.stop()


def test_one_structured_log_line_per_request(server, photo, caplog):
    caplog.set_level("INFO", logger="watercolor.process")
    server.call(png_bytes(photo), model="lanczos", scale=2)
    server.call(b"", model="lanczos", scale=2)
    deadline = time.monotonic() + 5
    while True:  # the line is written just after the reply is sent
        lines = [json.loads(r.getMessage().split(" ", 1)[1]) for r in caplog.records
                 if r.getMessage().startswith("request ")]
        if len(lines) >= 2 and lines[-1].get("code") == "empty_image" or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    # Lines of earlier tests' lingering connections may interleave: pick ours by content.
    ok = [line for line in lines if line.get("outcome") == "ok" and line.get("model") == "lanczos"][-1]
    bad = [line for line in lines if line.get("code") == "empty_image"][-1]
    assert ok["outcome"] == "ok" and ok["model"] == "lanczos" and ok["in_size"] == "64x48"
    assert ok["out_size"] == "128x96" and ok["ms"] >= 0 and ok["id"] == "t"
    assert bad["outcome"] == "error" and bad["code"] == "empty_image"


def test_sigterm_drains_work_in_flight_and_exits_zero(photo, tmp_path):
    import os
    import signal
    import subprocess
    import sys

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "WTC_PROCESS_HOST": "127.0.0.1", "WTC_PROCESS_PORT": str(port),
           "WTC_THREADS": "1", "WTC_GRACE_PERIOD": "600"}
    proc = subprocess.Popen([sys.executable, "-m", "watercolor", "process"], env=env,
                            stderr=subprocess.PIPE, text=True)
    try:
        address = ("127.0.0.1", port)
        deadline = time.monotonic() + 30
        while True:
            try:
                transport.exchange(address, protocol.ping(), io_timeout=2)
                break
            except Exception:
                assert time.monotonic() < deadline and proc.poll() is None, "backend did not start"
                time.sleep(0.2)
        result: dict = {}
        seen = threading.Event()

        def call():
            frame = protocol.request("drain", png_bytes(photo), model="realesrgan-x4plus",
                                     scale=4, tile_size=32, progress=True)
            result["reply"] = transport.exchange(address, frame, io_timeout=60,
                                                 on_progress=lambda d, t: seen.set())

        worker = threading.Thread(target=call)
        worker.start()
        assert seen.wait(60), "no progress from the backend"
        proc.send_signal(signal.SIGTERM)
        worker.join(600)
        assert proc.wait(600) == 0
        assert result["reply"].type is FrameType.RESULT
        assert Image.open(io.BytesIO(result["reply"].payload)).size == (256, 192)
        with pytest.raises(BackendUnavailable):  # no longer accepting
            transport.exchange(address, protocol.ping(), io_timeout=2, connect_timeout=2)
    finally:
        if proc.poll() is None:
            proc.kill()
        log = proc.stderr.read()
    assert "draining" in log and "received SIGTERM" in log


def test_queued_request_hears_heartbeats_so_a_short_io_timeout_does_not_fire(photo):
    live = LiveServer(slots=1, queue=1, io_timeout=1.0)
    try:
        slow = png_bytes(photo.resize((96, 96)))
        replies: dict = {}

        def call(name, model, scale):
            frame = protocol.request(name, slow, model=model, scale=scale, progress=True, tile_size=48)
            replies[name] = transport.exchange(live.address, frame, io_timeout=1.0)

        first = threading.Thread(target=call, args=("first", "realesrgan-x4plus", 4))
        first.start()
        while live.server.admission.snapshot()["running"] == 0:
            time.sleep(0.02)
        second = threading.Thread(target=call, args=("second", "lanczos", 2))
        second.start()
        first.join(180)
        second.join(180)
        # Each waited far longer than the 1 s I/O timeout without the client calling it a stall.
        assert replies["first"].type is FrameType.RESULT
        assert replies["second"].type is FrameType.RESULT
    finally:
        live.stop()


def test_a_full_backend_is_alive_for_liveness_but_not_ready(capsys):
    """At its connection cap a backend answers BUSY: `ping --alive` (liveness) passes, plain ping fails."""
    from watercolor import cli

    live = LiveServer(io_timeout=5.0, slots=1, queue=0)
    held = [socket.create_connection(live.address, timeout=5) for _ in range(live.server.max_connections)]
    try:
        time.sleep(0.3)  # every held connection has its handler
        target = f"{live.address[0]}:{live.address[1]}"
        assert cli.main(["ping", "--timeout", "3", target]) == 1
        assert "too many connections" in capsys.readouterr().err
        assert cli.main(["ping", "--alive", "--timeout", "3", target]) == 0
        assert "is alive (busy" in capsys.readouterr().out
    finally:
        for sock in held:
            sock.close()
        live.stop()
