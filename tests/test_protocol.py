"""The wire protocol as plain function tests: bytes in, frames out."""

from __future__ import annotations

import struct

import pytest

from watercolor import protocol
from watercolor.errors import AuthenticationFailed, ProtocolError
from watercolor.protocol import Frame, FrameDecoder, FrameType, ReplayGuard

SECRET = b"s3cret"


def decode_all(data: bytes, **kw) -> list[Frame]:
    decoder = FrameDecoder(max_payload=kw.pop("max_payload", 1 << 20), **kw)
    return list(decoder.feed(data))


def test_round_trip_keeps_header_and_raw_payload():
    frame = protocol.request("r1", b"\x89PNG\x00\xff" * 100, model="lanczos", scale=1.5, fmt="webp",
                             quality=80, options={"denoise": 1}, progress=True)
    (back,) = decode_all(protocol.encode_frame(frame))
    assert back.type is FrameType.REQUEST
    assert back.payload == frame.payload
    assert back.header == {"op": "upscale", "id": "r1", "model": "lanczos", "scale": 1.5,
                           "format": "webp", "quality": 80, "options": {"denoise": 1}, "progress": True}


def test_prefix_layout_is_documented_one():
    data = protocol.encode_frame(protocol.ping("x"))
    magic, version, ftype, flags, reserved, hlen, plen = struct.unpack(">3sBBBHIQ", data[:20])
    assert (magic, version, ftype, flags, reserved, plen) == (b"WTC", 1, 0x02, 0, 0, 0)
    assert data[20:20 + hlen] == b'{"id":"x"}'


@pytest.mark.parametrize("step", [1, 2, 7, 19, 20, 21, 1000], ids=lambda s: f"chunks-of-{s}")
def test_fragmented_delivery_yields_each_frame_once_complete(step):
    frames = [protocol.progress("a", i, 3) for i in range(3)] + [protocol.result("a", b"x" * 500)]
    stream = b"".join(protocol.encode_frame(f) for f in frames)
    decoder = FrameDecoder(max_payload=1000)
    out = []
    for i in range(0, len(stream), step):
        out.extend(decoder.feed(stream[i:i + step]))
    assert [f.type for f in out] == [FrameType.PROGRESS] * 3 + [FrameType.RESULT]
    assert out[-1].payload == b"x" * 500
    assert decoder.buffered == 0


def _prefix(magic=b"WTC", version=1, ftype=1, flags=0, hlen=2, plen=0) -> bytes:
    return struct.pack(">3sBBBHIQ", magic, version, ftype, flags, 0, hlen, plen)


@pytest.mark.parametrize(
    ("data", "code", "words"),
    [
        (_prefix(magic=b"GET"), "protocol_error", "bad magic"),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "protocol_error", "bad magic"),
        (_prefix(version=9), "unsupported_version", "version 9"),
        (_prefix(ftype=0x42), "protocol_error", "unknown frame type"),
        (_prefix(flags=0x80), "protocol_error", "unknown flags"),
        (_prefix(hlen=1 << 20), "protocol_error", "header length"),
        (_prefix(plen=2**63), "payload_too_large", "over the limit"),
        (_prefix(plen=2**64 - 1), "payload_too_large", "over the limit"),
        (_prefix(hlen=3) + b"{x}", "protocol_error", "not valid JSON"),
        (_prefix(hlen=2) + b"[]", "protocol_error", "not a JSON object"),
        (_prefix(hlen=2) + b"\xff\xfe", "protocol_error", "not valid JSON"),
    ],
    ids=["bad-magic", "http-request", "wrong-version", "unknown-type", "unknown-flag", "huge-header",
         "length-2^63", "length-2^64-1", "garbage-header", "header-not-object", "header-not-utf8"],
)
def test_violations_are_refused_with_a_specific_code(data, code, words):
    with pytest.raises(ProtocolError) as info:
        decode_all(data, peer="client")
    assert info.value.code == code
    assert words in info.value.message


def test_oversized_payload_is_refused_from_the_prefix_alone():
    decoder = FrameDecoder(max_payload=10, peer="client")
    with pytest.raises(ProtocolError, match="payload length 11"):
        list(decoder.feed(_prefix(plen=11)))


def test_incoming_tells_type_and_size_before_the_payload_arrives():
    decoder = FrameDecoder(max_payload=1 << 20)
    data = protocol.encode_frame(protocol.request("a", b"z" * 5000, model="lanczos", scale=2))
    assert list(decoder.feed(data[:19])) == [] and decoder.incoming is None
    assert list(decoder.feed(data[19:100])) == []
    assert decoder.incoming == (FrameType.REQUEST, 5000)


def test_signed_frames_verify_and_tampering_is_caught():
    data = protocol.encode_frame(protocol.ping("p"), SECRET)
    (frame,) = decode_all(data, secret=SECRET)
    assert frame.header["id"] == "p" and "nonce" in frame.header
    tampered = bytearray(data)
    tampered[-40] ^= 1
    with pytest.raises(AuthenticationFailed, match="signature"):
        decode_all(bytes(tampered), secret=SECRET)
    with pytest.raises(AuthenticationFailed, match="signature"):
        decode_all(data, secret=b"wrong")


def test_unsigned_frame_refused_when_a_secret_is_required():
    with pytest.raises(AuthenticationFailed, match="not signed"):
        decode_all(protocol.encode_frame(protocol.ping("p")), secret=SECRET)


def test_replay_guard_refuses_a_second_use_and_stale_frames():
    guard = ReplayGuard(window=60)
    header = {"ts": 1000.0, "nonce": "abc"}
    guard.check(header, now=1001.0)
    with pytest.raises(AuthenticationFailed, match="replayed"):
        guard.check(header, now=1002.0)
    with pytest.raises(AuthenticationFailed, match="too old"):
        guard.check({"ts": 900.0, "nonce": "new"}, now=1001.0)
    with pytest.raises(AuthenticationFailed, match="lacks"):
        guard.check({"nonce": "n"}, now=1001.0)


def test_nan_cannot_be_encoded():
    with pytest.raises(ValueError):
        protocol.encode_frame(Frame(FrameType.REQUEST, {"scale": float("nan")}))
