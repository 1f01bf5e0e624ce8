"""Helpers for the hostile suites: the local stack (from ``bench/load.py``), exchanges, checks.

The stack's process classes live in ``bench/load.py`` (the load run starts the
same stack) and are loaded from there, so there is one implementation.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
import time
from pathlib import Path

from watercolor import errors, protocol, transport
from watercolor.protocol import FrameType

REPO = Path(__file__).resolve().parents[2]


def _bench_load():
    name = "watercolor_bench_load"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / "bench" / "load.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


load = _bench_load()
BackendService = load.BackendService
ApiService = load.ApiService
LocalStack = load.LocalStack
memory = load.memory
free_port = load.free_port

MIB = 1024


def status_of(code: str) -> int:
    """The HTTP status the API answers for an error code."""
    return errors.from_code(code, "").status


def send(address: tuple[str, int], data: bytes, params: dict, *, secret: bytes | None = None,
         io_timeout: float = 60, busy_for: float = 120) -> protocol.Frame:
    """One REQUEST to a backend; BUSY answers are retried for up to ``busy_for`` seconds."""
    frame = protocol.request("hostile", data, model=params.get("model", "lanczos"),
                             scale=params.get("scale", 2), fmt=params.get("format"),
                             quality=params.get("quality"), options=params.get("options"),
                             tile_size=params.get("tile_size"))
    end = time.monotonic() + busy_for
    while True:
        reply = transport.exchange(address, frame, secret=secret, io_timeout=io_timeout,
                                   max_reply=1 << 31)
        if reply.type is not FrameType.BUSY or time.monotonic() > end:
            return reply
        time.sleep(0.05)


# --- what an error body may not say ------------------------------------------------------------------

_INTERNALS = re.compile(
    r"Traceback|File \"|\.py\b|site-packages|/(?:usr|home|work|tmp|opt|srv|root|proc|var)/"
    r"|\b\w*(?:Error|Exception|Warning)\b(?!\w)|\bErrno\b|0x[0-9a-f]{8,}|<\w+ object at"
)
#: Words that look like class names but are our own stable codes or public prose.
_ALLOWED = {"DecompressionBombError"}


def internals_in(text: str) -> list[str]:
    """Pieces of ``text`` that give away internals: tracebacks, paths, exception class names."""
    return [m.group(0) for m in _INTERNALS.finditer(text) if m.group(0) not in _ALLOWED]


def assert_public_error(status: int, body: bytes, content_type: str = "application/json") -> dict:
    """A 4xx/5xx body is ``{"error": {code, message}}`` JSON and says nothing internal."""
    assert content_type.startswith("application/json"), (status, content_type, body[:300])
    text = body.decode("utf-8", "replace")
    found = internals_in(text)
    assert not found, f"{status} body carries internals {found}: {text[:500]}"
    document = json.loads(text)
    error = document["error"]
    assert isinstance(error["code"], str) and error["code"], document
    assert isinstance(error["message"], str) and error["message"], document
    return document
