"""The API's side of an exchange: replies answer this request, are fresh when signed, and are well formed."""

from __future__ import annotations

import time

import pytest
from peers import ReplyingPeer

from watercolor import protocol, transport
from watercolor.errors import AuthenticationFailed, ProtocolError
from watercolor.protocol import FrameType

SECRET = b"transport-test-secret"


@pytest.fixture
def backend():
    peer = ReplyingPeer()
    yield peer
    peer.close()


def _exchange(backend: ReplyingPeer, reply: bytes, *, secret: bytes | None = None, seen=None):
    backend.reply = reply
    return transport.exchange(backend.address, protocol.request("req-1", b"img", model="lanczos", scale=2),
                              secret=secret, io_timeout=5,
                              on_progress=None if seen is None else lambda d, t: seen.append((d, t)))


def _frame(frame: protocol.Frame, **kw) -> bytes:
    return protocol.encode_frame(frame, **kw)


@pytest.mark.parametrize("reply", [
    _frame(protocol.result("req-1", b"big")),
    _frame(protocol.error("req-1", "corrupt_image", "bad")),
    _frame(protocol.error("", "protocol_error", "before the header was read")),
    _frame(protocol.busy("", 1.0)),
    _frame(protocol.busy("someone-else", 1.0)),  # carries nothing a stale copy could pass off
], ids=["result", "error", "error-without-id", "busy", "busy-other-id"])
def test_replies_about_this_request_are_taken(backend, reply):
    assert _exchange(backend, reply).type in protocol.FINAL_REPLIES


@pytest.mark.parametrize("reply", [
    _frame(protocol.result("req-0", b"someone else's image")),
    _frame(protocol.result("", b"an image for nobody")),
    _frame(protocol.error("req-2", "corrupt_image", "not yours")),
    _frame(protocol.progress("req-9", 1, 2)) + _frame(protocol.result("req-1", b"big")),
], ids=["result-other-id", "result-no-id", "error-other-id", "progress-other-id"])
def test_replies_about_another_request_are_a_protocol_error(backend, reply):
    with pytest.raises(ProtocolError, match="another request"):
        _exchange(backend, reply)


@pytest.mark.parametrize("header", [
    b'{"id":"req-1","done":"1","total":2}', b'{"id":"req-1","done":1,"total":null}',
    b'{"id":"req-1","done":-1,"total":2}', b'{"id":"req-1","done":true,"total":2}',
    b'{"id":"req-1","done":1.5,"total":2}', b'{"id":"req-1","done":1,"total":1e300}',
])
def test_malformed_progress_counts_are_a_protocol_error_not_a_crash(backend, header):
    prefix = protocol.PREFIX.pack(protocol.MAGIC, protocol.VERSION, int(FrameType.PROGRESS), 0, 0,
                                  len(header), 0)
    with pytest.raises(ProtocolError, match="PROGRESS"):
        _exchange(backend, prefix + header, seen=[])


def test_progress_is_handed_on(backend):
    seen: list[tuple[int, int]] = []
    reply = b"".join(_frame(protocol.progress("req-1", i, 3)) for i in range(4)) + \
        _frame(protocol.result("req-1", b"big"))
    assert _exchange(backend, reply, seen=seen).type is FrameType.RESULT
    assert seen == [(0, 3), (1, 3), (2, 3), (3, 3)]


def test_a_signed_reply_must_be_fresh(backend):
    fresh = _frame(protocol.result("req-1", b"big"), secret=SECRET)
    assert _exchange(backend, fresh, secret=SECRET).type is FrameType.RESULT
    stale = _frame(protocol.result("req-1", b"big"), secret=SECRET, now=time.time() - 3600)
    with pytest.raises(AuthenticationFailed):
        _exchange(backend, stale, secret=SECRET)


def test_a_nonce_seen_twice_on_one_connection_is_refused(backend):
    progress = _frame(protocol.progress("req-1", 1, 2), secret=SECRET)
    with pytest.raises(AuthenticationFailed, match="replayed"):
        _exchange(backend, progress + progress + _frame(protocol.result("req-1", b"big"), secret=SECRET),
                  secret=SECRET, seen=[])
