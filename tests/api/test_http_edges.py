"""What gunicorn itself meets before the app: stalled clients, and requests that are not valid HTTP.

Every answer is the API's JSON error, never gunicorn's HTML page; a client that
stalls mid-request loses its connection after ``WTC_IO_TIMEOUT`` instead of
holding one of the API's few threads for ever.
"""

from __future__ import annotations

import json
import socket
import time

import pytest
import requests
from apitools import ApiServer, free_port

IO_TIMEOUT = 1.0
WORKERS = 2


@pytest.fixture(scope="module")
def small_api(tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("edges")
    server = ApiServer(log_dir, api_workers=WORKERS, io_timeout=IO_TIMEOUT,
                       process_backends=f"127.0.0.1:{free_port()}", data_dir=log_dir / "data")
    yield server
    server.stop()


def _raw(api: ApiServer, data: bytes) -> tuple[int, dict[str, str], bytes]:
    with socket.create_connection(("127.0.0.1", api.port), timeout=10) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


@pytest.mark.parametrize("data, status, code", [
    (b"GET /v1/models?x=" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "uri_too_long"),
    (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", 431,
     "request_header_fields_too_large"),
    (b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400,
     "bad_request"),
    (b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400, "bad_request"),
    (b"\x16\x03\x01 garbage\r\n\r\n", 400, "bad_request"),
    (b"POST /v1/upscale HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Type: image/png\r\n"
     b"Connection: close\r\n\r\nZZ\r\n", 400, "bad_request"),  # found only as the app reads the body
], ids=["url-too-long", "header-too-long", "two-content-lengths", "negative-length", "garbage",
        "bad-chunk-size"])
def test_what_is_not_valid_http_is_a_json_error(small_api, data, status, code):
    got, headers, body = _raw(small_api, data)
    assert got == status, body[:300]
    assert headers["content-type"] == "application/json"
    error = json.loads(body)["error"]
    assert error["code"] == code
    assert "gunicorn" not in error["message"].lower() and "'" not in error["message"]
    assert requests.get(small_api.url + "/healthz", timeout=10).status_code == 200


def test_stalled_clients_are_dropped_and_cannot_starve_the_api(small_api):
    # More stalled clients than the API has threads: one byte of a request line, a request
    # whose body never comes, and one that sends nothing.
    stalled = [socket.create_connection(("127.0.0.1", small_api.port), timeout=30)
               for _ in range(WORKERS + 2)]
    stalled[0].sendall(b"G")
    stalled[1].sendall(b"POST /v1/upscale HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                       b"Content-Length: 1000\r\n\r\n" + b"x" * 10)
    stalled[2].sendall(b"GET /heal")
    try:
        time.sleep(0.5)
        assert requests.get(small_api.url + "/healthz", timeout=20).status_code == 200
        for sock in stalled[:3]:  # closed by the API once a read stalled past WTC_IO_TIMEOUT
            rest = b""
            while chunk := sock.recv(65536):
                rest += chunk
            assert b"500" not in rest.split(b"\r\n", 1)[0]
    finally:
        for sock in stalled:
            sock.close()
    log = small_api.log()
    assert "stalled past WTC_IO_TIMEOUT" in log
    assert "BlockingIOError" not in log and "unexpected error" not in log
