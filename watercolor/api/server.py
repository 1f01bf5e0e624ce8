"""Serving the API in production: gunicorn, one process of ``WTC_API_WORKERS`` threads.

One process because metrics (and later jobs) live in its memory: a second
process would hold its own numbers. Threads suit the work, which is mostly
waiting on backends (sockets release the GIL). Gunicorn's worker timeout is
set past the request deadline so it never kills a request the API is still
allowed to finish.
"""

from __future__ import annotations

import logging
import socket
import struct
from typing import Any

from gunicorn import util
from gunicorn.app.base import BaseApplication
from gunicorn.workers.gthread import ThreadWorker

from watercolor.api.common.errors import http_error_body
from watercolor.config import Settings
from watercolor.listen import check_free

log = logging.getLogger("watercolor.api")

#: Seconds past WTC_API_DEADLINE before gunicorn considers a worker stuck.
TIMEOUT_MARGIN = 30


def gunicorn_options(settings: Settings) -> dict[str, Any]:
    host = settings.api_host
    bind = f"[{host}]:{settings.api_port}" if ":" in host else f"{host}:{settings.api_port}"
    return {
        "bind": [bind],
        "workers": 1,
        "worker_class": worker_class(settings.io_timeout),
        "threads": settings.api_workers,
        "timeout": int(settings.api_deadline) + TIMEOUT_MARGIN,
        "graceful_timeout": 30,
        "keepalive": 5,
        "loglevel": settings.log_level.lower(),
        "accesslog": "-",
        "errorlog": "-",
        "access_log_format": '%(h)s "%(r)s" %(s)s %(B)s %(M)sms',
        "proc_name": "watercolor-api",
        "limit_request_line": 8190,
        # No runtime-control socket (gunicorn 25.1+): it would need a writable home directory.
        "control_socket_disable": True,
    }


def worker_class(io_timeout: float) -> type[ThreadWorker]:
    """The worker, holding every client socket to ``io_timeout`` per read and write."""
    return type("WatercolorWorker", (StoppingThreadWorker,), {"io_timeout": io_timeout})


class StoppingThreadWorker(ThreadWorker):
    """gthread, except that a stopping worker closes its listening sockets at once.

    On SIGTERM the master closes its copies of the listening sockets and the
    worker stops accepting, but the worker's copies kept the port listening
    until it had finished its requests in flight (up to the graceful timeout):
    the kernel completed new connections that nobody would accept, and reset
    them when the worker exited. Here the worker first takes what the kernel
    has already queued (those requests are served like the ones in flight),
    then closes: from then on a new connection is refused at once, and a
    client or a load balancer retries elsewhere without waiting.
    """

    io_timeout: float = 30.0

    def init_process(self) -> None:
        # gunicorn answers what it cannot parse (a URL or headers too long, bad HTTP) itself,
        # before the app sees it, as an HTML page quoting its parser: JSON like every other error.
        util.write_error = _write_json_error
        logging.getLogger("gunicorn.error").addFilter(_quiet_stalls)
        super().init_process()

    def enqueue_req(self, conn: Any) -> None:
        # A thread reads a request once its first byte arrives; a client that then stalls
        # (a slow-loris) would hold that thread for ever. The kernel's per-socket timeouts bound
        # every blocking read and write, whatever gunicorn or the app does with the socket.
        seconds = int(self.io_timeout)
        micros = int((self.io_timeout - seconds) * 1_000_000)
        timeval = struct.pack("ll", seconds, micros)
        try:
            conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
            conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
        except OSError:
            pass
        super().enqueue_req(conn)

    def set_accept_enabled(self, enabled: bool) -> None:
        super().set_accept_enabled(enabled)
        if enabled or self.alive:
            return
        for listener in self.sockets:
            while True:  # the listener is non-blocking: accept() takes one or returns
                before = self.nr_conns
                self.accept(listener)
                if self.nr_conns == before:
                    break
            listener.close()


def _quiet_stalls(record: logging.LogRecord) -> bool:
    """gunicorn logs a client dropped for stalling (the socket timeouts above) with a traceback:
    one plain line says it."""
    exc = record.exc_info[1] if record.exc_info else None
    if isinstance(exc, BlockingIOError | TimeoutError):
        record.msg, record.args, record.exc_info, record.exc_text = (
            "closed a client connection that stalled past WTC_IO_TIMEOUT", (), None, None)
        record.levelno, record.levelname = logging.INFO, "INFO"
    return True


def _write_json_error(sock: socket.socket, status_int: int, reason: str, _message: str) -> None:
    body = http_error_body(status_int)
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    util.write_nonblock(sock, head.encode("latin-1") + body)


class _Gunicorn(BaseApplication):
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        super().__init__()

    def load_config(self) -> None:
        for key, value in gunicorn_options(self.settings).items():
            if key in self.cfg.settings:  # options newer than the installed gunicorn are skipped
                self.cfg.set(key, value)

    def load(self) -> Any:
        from watercolor.api.app import create_app

        return create_app(self.settings)


def serve(settings: Settings) -> int:
    """Run the API until SIGTERM/SIGINT (gunicorn handles the signals); returns the exit status.

    Raises :class:`~watercolor.listen.CannotListen` when the address is taken: checked here first,
    as gunicorn would retry for five seconds and then exit with lines of its own.
    """
    check_free(settings.api_host, settings.api_port, host_setting="WTC_API_HOST", port_setting="WTC_API_PORT")
    log.info("API on %s:%d, backends %s", settings.api_host, settings.api_port,
             ", ".join(f"{h}:{p}" for h, p in settings.backends))
    _Gunicorn(settings).run()
    return 0
